#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that sees outside bytes (see fuzz/README.md).
#
#   scripts/fuzz.sh smoke [SECONDS]      every target for SECONDS (default 5) from the committed seeds
#   scripts/fuzz.sh run TARGET SECONDS   one target, growing fuzz/corpus-work/TARGET
#   scripts/fuzz.sh long                 the documented long runs (15 min for the transaction,
#                                        envelope and policy decoders, 3 min for the others)
#   scripts/fuzz.sh regressions          replays every kept finding under fuzz/regressions/
#
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 unlocks them on the stable toolchain. The
# instrumented build has its own target directory (fuzz/target), away from the workspace's.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

targets() { cargo fuzz list; }

build() { cargo fuzz build --release "$@" >&2; }

# Runs TARGET for SECONDS; new inputs go to the scratch corpus, the committed seeds are read only.
# Prints one summary line; a crash leaves its input in fuzz/artifacts/TARGET and fails.
run_one() {
    local target=$1 seconds=$2 work=$3
    mkdir -p "$work/$target"
    local log="$work/$target.log"
    if ! cargo fuzz run --release "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 \
        -max_len=262144 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "FUZZ FINDING in $target: see $log and fuzz/artifacts/$target" >&2
        return 1
    fi
    local execs cov ft corpus
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "$work/$target" -type f | wc -l)
    printf '%-14s %6ss  execs %-10s cov %-6s ft %-6s new inputs %-5s findings 0\n' \
        "$target" "$seconds" "$execs" "$cov" "$ft" "$corpus"
}

case "${1:-smoke}" in
    smoke)
        seconds=${2:-5}
        work=$(mktemp -d)
        build
        for target in $(targets); do run_one "$target" "$seconds" "$work"; done
        rm -rf "$work"
        ;;
    run)
        build
        run_one "$2" "$3" fuzz/corpus-work
        ;;
    long)
        build
        for target in $(targets); do
            case $target in
                tx_unsigned | tx_signed | envelope | policy) seconds=900 ;;
                *) seconds=180 ;;
            esac
            run_one "$target" "$seconds" fuzz/corpus-work
        done
        ;;
    regressions)
        build
        for target in $(targets); do
            dir=fuzz/regressions/$target
            [ -d "$dir" ] || continue
            cargo fuzz run --release "$target" "$dir"/* -- -runs=1 >/dev/null 2>&1 \
                || { echo "regression input of $target fails again" >&2; exit 1; }
            echo "$target: $(find "$dir" -type f | wc -l) kept findings pass"
        done
        ;;
    *)
        sed -n '2,11p' "$0" >&2
        exit 2
        ;;
esac
