;; hostile: hands hostcalls pointers outside its memory and absurd lengths.
;; Expected: Completed; every call returns an error code, nothing traps.
;; State (24 bytes at 0): count u64, then the i32 results of
;; rand_bytes(oob) [-4], rand_bytes(len -1) [-2], kv_get(oob key) [-1],
;; kv_put(oob value) [-1].
(module
  (import "igor" "rand_bytes" (func $rand (param i32 i32) (result i32)))
  (import "igor" "log_emit" (func $log (param i32 i32)))
  (import "igor" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "igor" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (i32.store (i32.const 8) (call $rand (i32.const -16) (i32.const 64)))
    (i32.store (i32.const 12) (call $rand (i32.const 0) (i32.const -1)))
    (call $log (i32.const -16) (i32.const 100))
    (call $log (i32.const 0) (i32.const -1))
    (i32.store (i32.const 16) (call $kv_get (i32.const -1) (i32.const 10) (i32.const 0) (i32.const 8)))
    (i32.store (i32.const 20) (call $kv_put (i32.const 0) (i32.const 4) (i32.const -4) (i32.const 100)))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 24))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param i32 i32))
  (func (export "malloc") (param i32) (result i32) (i32.const 4096)))
