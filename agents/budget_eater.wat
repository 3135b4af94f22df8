;; budget_eater: burns about 100 000 fuel per tick and always asks for more
;; work (fast-path cadence), so it exhausts a small budget within seconds
;; of simulated time: at 1 000 000 µ¢/s (1 µ¢ per 1 000 fuel) it spends
;; ~100 µ¢ per tick, ~10 000 µ¢ per simulated second at a 10 ms fast path.
;; No capabilities. State (16 bytes at 0): count u64, loop checksum u64.
(module
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (local $i i32)
    (local $acc i64)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (local.set $acc (i64.load (i32.const 8)))
    (loop $burn
      (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 31)) (i64.extend_i32_u (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $burn (i32.lt_u (local.get $i) (i32.const 10000))))
    (i64.store (i32.const 8) (local.get $acc))
    (i32.const 1))
  (func (export "agent_checkpoint") (result i32) (i32.const 16))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param $p i32) (param $n i32)
    (memory.copy (i32.const 0) (local.get $p) (select (local.get $n) (i32.const 16) (i32.lt_u (local.get $n) (i32.const 16)))))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
