#!/bin/sh
# Runs every fuzz target for SECONDS (default 600) each, one after the other,
# or only the targets named after it:  fuzz/run.sh 600 [redirect] [config]
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# The committed seeds in corpus/<target> are read; what a run discovers goes
# to work/<target> (not committed), crashes to artifacts/<target>. Set
# FUZZ_JOBS=N to run N libFuzzer processes per target.
set -eu
cd "$(dirname "$0")"
seconds=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-redirect config}
for target in $targets; do
    mkdir -p "work/$target"
    echo "== $target: ${seconds}s"
    cargo +nightly fuzz run -O "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        ${FUZZ_JOBS:+-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS}
done
