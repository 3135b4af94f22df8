;; hostile: a counter whose agent_checkpoint tells the truth (8 bytes) for
;; its first 3 ticks, then claims 1,000,000 bytes of state in a 64 KiB
;; memory. Expected: the tick that completed before the lie is not
;; committed (its state cannot be taken); the history ends at tick 3 and
;; audits clean.
(module
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32)
    (select (i32.const 1000000) (i32.const 8) (i64.gt_u (i64.load (i32.const 0)) (i64.const 3))))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param $p i32) (param $n i32)
    (memory.copy (i32.const 0) (local.get $p) (select (local.get $n) (i32.const 8) (i32.lt_u (local.get $n) (i32.const 8)))))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
