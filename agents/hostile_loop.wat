;; hostile: agent_tick never returns. Expected outcome: OutOfFuel.
(module
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32) (loop $l (br $l)) (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 8))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param i32 i32))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
