#!/usr/bin/env bash
# Browser check of `igor-sim run --html` (issue 8, item 7): render the
# timeline of two A1 scenarios, load each page in headless Chromium, and
# check that it loads without console errors and that the rendered DOM has
# one lane per node, one arrow per migration package, and the violation
# marker where there is one. Not part of .ci/run (installing Chromium costs
# minutes of the CI budget); `cargo test -p igor-sim --test swarm` checks the
# same structure without a browser.
#
# Usage: scripts/check-html.sh            (installs Debian's chromium if absent)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (Debian package)..."
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends chromium
fi

cargo build -q -p igor-sim
sim=target/debug/igor-sim
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

fail=0
# scenario file, lanes, expected violation markers
for spec in "scenarios/a1/partition-during-transfer.ron 2 0" "scenarios/a1/unsafe-self-recover.ron 2 1"; do
    set -- $spec
    file=$1 lanes=$2 violations=$3
    name=$(basename "$file" .ron)
    "$sim" run "$file" --html "$out/$name.html" --trace "$out/$name.trace" >/dev/null || true
    arrows=$(grep -c ' package_sent ' "$out/$name.trace" || true)
    # --dump-dom prints the DOM after load; --enable-logging=stderr puts
    # console messages (CONSOLE lines) and load errors on stderr. The page
    # has no script, so any console message at all is a failure.
    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-default-apps --disable-extensions --disable-sync \
        --no-first-run --metrics-recording-only --enable-logging=stderr --v=0 \
        --user-data-dir="$out/profile" --virtual-time-budget=2000 --dump-dom "file://$out/$name.html" \
        >"$out/$name.dom" 2>"$out/$name.log" || { echo "$name: chromium failed"; cat "$out/$name.log"; fail=1; continue; }
    count() { { grep -o "class=\"$1\"" "$out/$name.dom" || true; } | wc -l; }
    got_lanes=$(count lane)
    got_arrows=$(( $(count arrow) + $(count 'arrow undelivered') ))
    got_violations=$(count violation)
    errors=$(grep -E ':CONSOLE|Uncaught|ERR_FILE|ERR_' "$out/$name.log" | grep -v -E 'dbus|gcm|GCM|Fontconfig|sandbox' || true)
    echo "$name: lanes $got_lanes/$lanes arrows $got_arrows/$arrows violations $got_violations/$violations"
    if [ "$got_lanes" != "$lanes" ] || [ "$got_arrows" != "$arrows" ] || [ "$got_violations" != "$violations" ]; then
        echo "$name: unexpected page structure"; fail=1
    fi
    if [ -n "$errors" ]; then
        echo "$name: console errors:"; echo "$errors"; fail=1
    fi
    if ! grep -q '<svg' "$out/$name.dom"; then
        echo "$name: the page did not render its SVG"; fail=1
    fi
done
[ "$fail" = 0 ] && echo "check-html: OK"
exit "$fail"
