;; hostile: logs 2 GiB messages in a loop. Each is capped at 1 MiB, charged
;; per byte, and retention is capped per tick. Expected: OutOfFuel.
(module
  (import "igor" "log_emit" (func $log (param i32 i32)))
  (memory (export "memory") 32)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (loop $l (call $log (i32.const 0) (i32.const 0x7fffffff)) (br $l))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 8))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param i32 i32))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
