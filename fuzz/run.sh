#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on the
# nightly toolchain, one after the other, and prints executions per target.
#
#   fuzz/run.sh 30      # CI smoke run
#   fuzz/run.sh 600     # a long run (10 minutes per target)
#
# On a crash it prints the artifact's path and the command that reproduces it,
# and exits non-zero. New corpus entries stay in fuzz/corpus/<target>/ (only
# the seed-* files are committed).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
logs="$(mktemp -d)"
failed=()
summary=()

for target in $(cargo "+$toolchain" fuzz list); do
    mkdir -p "corpus/$target"
    echo "==> fuzzing $target for ${seconds}s"
    if cargo "+$toolchain" fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 \
        >"$logs/$target.log" 2>&1; then
        runs=$(grep -m1 'stat::number_of_executed_units' "$logs/$target.log" | awk '{print $2}')
        speed=$(grep -m1 'stat::average_exec_per_sec' "$logs/$target.log" | awk '{print $2}')
        summary+=("$(printf '%-18s %12s executions %8s exec/s' "$target" "${runs:-?}" "${speed:-?}")")
        echo "    ok: ${runs:-?} executions, ${speed:-?} exec/s"
    else
        failed+=("$target")
        tail -n 40 "$logs/$target.log"
        artifact=$(grep -oE 'artifacts/[^ ]+' "$logs/$target.log" | tail -n 1 || true)
        echo "!!! $target failed."
        if [ -n "$artifact" ]; then
            echo "!!! artifact: fuzz/$artifact"
            echo "!!! reproduce: (cd fuzz && cargo +$toolchain fuzz run $target $artifact)"
        fi
    fi
done

echo
echo "Summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "Failed targets: ${failed[*]} (full logs in $logs)"
    exit 1
fi
rm -rf "$logs"
