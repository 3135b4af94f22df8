;; payer: pays 10 microcents to "alice" every tick and reads its balance.
;; State (32 bytes at 0): count u64, last wallet_pay result i32 (at 8),
;; total paid u64 (at 16), last balance i64 (at 24), last payment receipt
;; (256-byte buffer at 32).
(module
  (import "igor" "wallet_pay" (func $pay (param i64 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "igor" "wallet_balance" (func $balance (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "alice")
  (data (i32.const 1040) "tip")
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (local $r i32)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (local.set $r (call $pay (i64.const 10) (i32.const 1024) (i32.const 5) (i32.const 1040) (i32.const 3) (i32.const 32) (i32.const 256)))
    (i32.store (i32.const 8) (local.get $r))
    (if (i32.ge_s (local.get $r) (i32.const 0))
      (then (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.const 10)))))
    (i64.store (i32.const 24) (call $balance))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 288))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param $p i32) (param $n i32)
    (memory.copy (i32.const 0) (local.get $p) (select (local.get $n) (i32.const 288) (i32.lt_u (local.get $n) (i32.const 288)))))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
