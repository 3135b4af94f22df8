;; hostile: grows memory 1 MiB at a time until memory.grow fails (-1 at the
;; cap, inside the guest), then traps. Expected: Trapped, memory <= cap.
(module
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (loop $l
      (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
      (br $l))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 8))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param i32 i32))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
