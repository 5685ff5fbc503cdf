#!/usr/bin/env bash
# A short fuzz run of every target (default 20 s each), seeded from the real streams:
# what .ci/run does. Uses the nightly toolchain when installed, else stable with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs unstable compiler flags). Exits non-zero on the
# first crash, timeout or out-of-memory; the input is left in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-20}
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
./seed.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in load_stream decode device_load ram_load records schema_check xbzrle multifd_packet multifd_channel postcopy_incoming; do
    echo "--- $t (${secs} s)"
    rc=0
    "${fuzz[@]}" run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        -max_len=1048576 -dict=vmstate.dict -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log"
        echo "fuzz target $t failed (exit $rc)"
        exit 1
    fi
done
