;; hostile: ticks fine but agent_checkpoint claims 1,000,000 bytes of state
;; in a 64 KiB memory. Expected: snapshot refused with a lifecycle error.
(module
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32) (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 1000000))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param i32 i32))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
