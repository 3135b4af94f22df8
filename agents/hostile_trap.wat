;; hostile: agent_tick divides by zero on tick 3. Expected: Trapped
;; ("integer divide by zero") at tick 3, ticks 1-2 fine.
(module
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (if (i64.eq (i64.load (i32.const 0)) (i64.const 3))
      (then (drop (i32.div_u (i32.const 1) (i32.const 0)))))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 8))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param $p i32) (param $n i32)
    (memory.copy (i32.const 0) (local.get $p) (select (local.get $n) (i32.const 8) (i32.lt_u (local.get $n) (i32.const 8)))))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
