#!/usr/bin/env bash
# Rebuild the Rust example agents for wasm32 and refresh the committed
# .wasm files beside their manifests. The test
# `cargo test -p igor-sim --test agents committed_wasm_matches_a_fresh_build`
# builds the same way and fails if the committed bytes differ.
# Needs: rustup target add wasm32-unknown-unknown
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --locked --profile agent --target wasm32-unknown-unknown \
    -p heartbeat -p kv-counter -p price-watcher -p sentinel
for pair in heartbeat:heartbeat kv-counter:kv_counter price-watcher:price_watcher sentinel:sentinel; do
    dir="${pair%%:*}" name="${pair##*:}"
    cp "$target/wasm32-unknown-unknown/agent/$name.wasm" "agents/rust/$dir/$name.wasm"
    echo "agents/rust/$dir/$name.wasm: $(wc -c < "agents/rust/$dir/$name.wasm") bytes"
done
