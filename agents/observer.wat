;; observer: reads the clock and 16 random bytes every tick and keeps them.
;; State (32 bytes at 0): count u64, last clock i64, last random bytes [16].
(module
  (import "igor" "clock_now" (func $clock_now (result i64)))
  (import "igor" "rand_bytes" (func $rand_bytes (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (i64.store (i32.const 8) (call $clock_now))
    (drop (call $rand_bytes (i32.const 16) (i32.const 16)))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 32))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param $p i32) (param $n i32)
    (memory.copy (i32.const 0) (local.get $p) (select (local.get $n) (i32.const 32) (i32.lt_u (local.get $n) (i32.const 32)))))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
