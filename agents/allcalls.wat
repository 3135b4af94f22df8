;; allcalls: calls every hostcall of spec §2 each tick, in one fixed order
;; that never depends on a result (so a replay that is handed a different
;; answer still makes the same calls, and a missing log entry is always
;; found). Includes refused calls (payment to a recipient outside the
;; allow-list, http to a host outside it, a receipt index that does not
;; exist, an oversized rand request) and zero-length ones (rand_bytes and
;; log_emit of 0 bytes). Deterministic given its inputs and its log.
;; Pays 1 µ¢ to "alice" per tick. Calls per tick (18):
;;   clock_now, rand_bytes(16), rand_bytes(0), rand_bytes(70000) = -2,
;;   log_emit(13), log_emit(0), wallet_balance, wallet_receipt_count,
;;   wallet_receipt(0) = -1, node_price, wallet_pay(alice), wallet_pay(mallory) = -3,
;;   kv_get("n"), kv_put("n"), kv_get("missing") = -5, kv_delete("gone"),
;;   http GET http://api.example/data, http GET http://evil.example/steal = -3.
;; Everything it is answered lands in its state, so a different answer is a
;; different state. State (208 bytes at 0):
;;   0 count u64 | 8 clock i64 | 16 rand [16] | 32 rand(0) code i32
;;   36 receipt count i32 | 40 balance i64 | 48 price i64 | 56 wallet_receipt code
;;   60 pay(alice) result | 64 pay(mallory) code | 68 kv_get code | 72 kv counter u64
;;   80 kv_put code | 84 kv_get(missing) code | 88 kv_delete code | 92 http status
;;   96 first 32 response bytes | 128 http(evil) code | 132 rand(70000) code
;;   136 the last payment receipt [64] | 200 wallet_receipt(0) bytes [8]
(module
  (import "igor" "clock_now" (func $clock_now (result i64)))
  (import "igor" "rand_bytes" (func $rand_bytes (param i32 i32) (result i32)))
  (import "igor" "log_emit" (func $log_emit (param i32 i32)))
  (import "igor" "wallet_balance" (func $balance (result i64)))
  (import "igor" "wallet_receipt_count" (func $receipt_count (result i32)))
  (import "igor" "wallet_receipt" (func $receipt (param i32 i32 i32) (result i32)))
  (import "igor" "node_price" (func $price (result i64)))
  (import "igor" "wallet_pay" (func $pay (param i64 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "igor" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "igor" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "igor" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (import "igor" "http_request" (func $http (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "alice")
  (data (i32.const 1040) "mallory")
  (data (i32.const 1056) "tip")
  (data (i32.const 1072) "n")
  (data (i32.const 1080) "gone")
  (data (i32.const 1088) "missing")
  (data (i32.const 1104) "GET")
  (data (i32.const 1120) "http://api.example/data")
  (data (i32.const 1152) "http://evil.example/steal")
  (data (i32.const 1184) "allcalls tick")
  (func (export "agent_init"))
  (func (export "agent_tick") (result i32)
    (i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))
    (i64.store (i32.const 8) (call $clock_now))
    (drop (call $rand_bytes (i32.const 16) (i32.const 16)))
    (i32.store (i32.const 32) (call $rand_bytes (i32.const 3000) (i32.const 0)))
    (i32.store (i32.const 132) (call $rand_bytes (i32.const 3000) (i32.const 70000)))
    (call $log_emit (i32.const 1184) (i32.const 13))
    (call $log_emit (i32.const 1184) (i32.const 0))
    (i64.store (i32.const 40) (call $balance))
    (i32.store (i32.const 36) (call $receipt_count))
    (i32.store (i32.const 56) (call $receipt (i32.const 0) (i32.const 3072) (i32.const 256)))
    (i64.store (i32.const 200) (i64.load (i32.const 3072)))
    (i64.store (i32.const 48) (call $price))
    (i32.store (i32.const 60)
      (call $pay (i64.const 1) (i32.const 1024) (i32.const 5) (i32.const 1056) (i32.const 3) (i32.const 2048) (i32.const 256)))
    (i32.store (i32.const 64)
      (call $pay (i64.const 1) (i32.const 1040) (i32.const 7) (i32.const 1056) (i32.const 3) (i32.const 2048) (i32.const 256)))
    ;; kv counter "n": read (8 bytes at 2304, 0 when absent), add one, write back.
    (i32.store (i32.const 68) (call $kv_get (i32.const 1072) (i32.const 1) (i32.const 2304) (i32.const 8)))
    (if (i32.ne (i32.load (i32.const 68)) (i32.const 8)) (then (i64.store (i32.const 2304) (i64.const 0))))
    (i64.store (i32.const 2304) (i64.add (i64.load (i32.const 2304)) (i64.const 1)))
    (i64.store (i32.const 72) (i64.load (i32.const 2304)))
    (i32.store (i32.const 80) (call $kv_put (i32.const 1072) (i32.const 1) (i32.const 2304) (i32.const 8)))
    (i32.store (i32.const 84) (call $kv_get (i32.const 1088) (i32.const 7) (i32.const 2320) (i32.const 8)))
    (i32.store (i32.const 88) (call $kv_delete (i32.const 1080) (i32.const 4)))
    (memory.fill (i32.const 2560) (i32.const 0) (i32.const 256))
    (i32.store (i32.const 92)
      (call $http (i32.const 1104) (i32.const 3) (i32.const 1120) (i32.const 23)
                  (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2560) (i32.const 256)))
    (memory.copy (i32.const 96) (i32.const 2560) (i32.const 32))
    (i32.store (i32.const 128)
      (call $http (i32.const 1104) (i32.const 3) (i32.const 1152) (i32.const 25)
                  (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2560) (i32.const 256)))
    (memory.copy (i32.const 136) (i32.const 2048) (i32.const 64))
    (i32.const 0))
  (func (export "agent_checkpoint") (result i32) (i32.const 208))
  (func (export "agent_checkpoint_ptr") (result i32) (i32.const 0))
  (func (export "agent_resume") (param $p i32) (param $n i32)
    (memory.copy (i32.const 0) (local.get $p) (select (local.get $n) (i32.const 208) (i32.lt_u (local.get $n) (i32.const 208)))))
  (func (export "malloc") (param i32) (result i32) (i32.const 8192)))
