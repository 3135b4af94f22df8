#!/usr/bin/env bash
# Mutation testing of the protocol core (issue 16): cargo-mutants on
# src/authority.rs, src/lease.rs and src/migration.rs, one module at a time,
# against the fast test set that exercises them directly. Prints caught /
# missed / unviable / timeout per module and lists every missed mutant.
# Equivalent mutants are excluded, each with its reason, in
# .cargo/mutants.toml. Not part of .ci/run: on 2 shared cores authority +
# lease take about 20 min and migration about 30 min with a reduced test set
# (see the README's developer section); the full fast set takes longer.
#
# Usage: scripts/mutants.sh [authority|lease|migration]...   (default: all three)
# Env:   CARGO_TARGET_DIR   build dir (default: target/); reused between mutants
#        MUTANTS_OUT        where each module's mutants.out goes (default: $CARGO_TARGET_DIR/mutants-out)
#        MUTANTS_JOBS       parallel builds (default 1: each build already uses every core)
#        MUTANTS_TESTS      test targets instead of the fast set, e.g. "--lib --test=protocol_core"
#        MUTANTS_TIMEOUT    seconds a mutant's tests may take (default 300: cargo-mutants'
#                           automatic limit, ~5x an idle baseline, turned a loaded machine's
#                           slow run into a false timeout)
# Exit:  0 when no module has a missed or timed-out mutant, 1 otherwise.
#
# Needs cargo-mutants 27 (`cargo install cargo-mutants --locked`). It works
# on a copy of the tree (never --in-place), so the working tree is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
    exit 2
fi

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$target_dir"
out_root="${MUTANTS_OUT:-$target_dir/mutants-out}"
jobs="${MUTANTS_JOBS:-1}"
modules=("$@")
[ ${#modules[@]} -eq 0 ] && modules=(authority lease migration)

# The fast test set: unit tests, the per-outcome node tests, the protocol
# property test and the state-machine tests of tests/protocol_core.rs. Given
# as cargo args (not test args) so that the build of each mutant compiles
# only these targets, not every test binary of the crate.
# shellcheck disable=SC2206 # word splitting of MUTANTS_TESTS is intended
tests=(${MUTANTS_TESTS:---lib --test=node_outcomes --test=protocol_model --test=protocol_core})
cargo_args=()
for t in "${tests[@]}"; do cargo_args+=("--cargo-arg=$t"); done

status=0
summary=()
for m in "${modules[@]}"; do
    file="src/$m.rs"
    [ -f "$file" ] || { echo "no such module: $file" >&2; exit 2; }
    out="$out_root/$m"
    mkdir -p "$out"
    echo "== $file (output: $out/mutants.out)"
    start=$(date +%s)
    # Exit 2 = some mutants missed, 3 = timeouts: reported below, not fatal here.
    rc=0
    cargo mutants -p igor --file "$file" --jobs "$jobs" --timeout "${MUTANTS_TIMEOUT:-300}" --output "$out" "${cargo_args[@]}" || rc=$?
    secs=$(( $(date +%s) - start ))
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
        echo "cargo mutants failed on $file (exit $rc): see $out/mutants.out/debug.log" >&2
        exit "$rc"
    fi
    line=$(python3 - "$out/mutants.out/outcomes.json" "$m" "$secs" <<'EOF'
import json, sys
o = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<10} caught {o['caught']:>3}  missed {o['missed']:>3}  unviable {o['unviable']:>3}  "
      f"timeout {o['timeout']:>3}  total {o['total_mutants']:>3}  ({int(sys.argv[3]) // 60} min)")
EOF
)
    summary+=("$line")
    if [ -s "$out/mutants.out/missed.txt" ] || [ -s "$out/mutants.out/timeout.txt" ]; then
        status=1
        echo "missed or timed out in $file:"
        cat "$out/mutants.out/missed.txt" "$out/mutants.out/timeout.txt" 2>/dev/null | sed 's/^/  /'
    fi
done

echo
echo "protocol core mutants (cargo-mutants $(cargo mutants --version | awk '{print $2}'), tests: ${tests[*]}"
printf '%s\n' "${summary[@]}"
exit "$status"
