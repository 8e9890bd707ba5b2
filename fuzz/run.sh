#!/usr/bin/env bash
# Runs every fuzz target of issue 7 for a bounded time on the nightly toolchain (CI calls
# this from `.ci/run`). First each target replays its committed crashers
# (fuzz/regressions/<target>/*) so they stay fixed, then fuzzes for FUZZ_SECONDS (default
# 30) from the seed corpus (fuzz/seeds/<target>, committed, read-only: the hand-made seeds of
# `python3 fuzz/seeds/make_seeds.py`, and for `stateful` a corpus minimized from long runs,
# see docs/TESTING.md) plus a scratch corpus (fuzz/work/<target>, ignored by git, kept
# between local runs; new inputs go there).
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 30)
#   FUZZ_TARGETS    space-separated subset of targets (default: all)
#   FUZZ_SANITIZER  passed to `cargo fuzz --sanitizer` (default: cargo-fuzz's, address)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-runs=1000000"
#   FUZZ_SEED       libFuzzer's -seed (default: libFuzzer picks one and prints it); CI sets it
#                   from the commit, so each commit explores from another start, reproducibly
#
# Exit status: non-zero when a committed crasher fails again or fuzzing finds a crash,
# a leak or a timeout; the crashing input is in fuzz/artifacts/<target>/. To keep it as a
# regression test: copy it to fuzz/regressions/<target>/ and commit it with the fix.
set -uo pipefail

cd "$(dirname "$0")"

SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}
ALL_TARGETS="webhook_jwt webhook_payload rest_request contacts_filter cursor stateful"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
SANITIZER_ARGS=()
if [ -n "${FUZZ_SANITIZER:-}" ]; then
    SANITIZER_ARGS=(--sanitizer "$FUZZ_SANITIZER")
fi
# shellcheck disable=SC2206
EXTRA_ARGS=(${FUZZ_ARGS:-})
if [ -n "${FUZZ_SEED:-}" ]; then
    EXTRA_ARGS+=("-seed=$FUZZ_SEED")
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || exit 2
fi

echo "== building fuzz targets"
cargo +nightly fuzz build "${SANITIZER_ARGS[@]}" || exit 2

failed=()
for t in $TARGETS; do
    mkdir -p "work/$t" "seeds/$t" "artifacts/$t"
    shopt -s nullglob
    regressions=("regressions/$t"/*)
    shopt -u nullglob
    if [ ${#regressions[@]} -gt 0 ]; then
        echo "== $t: replaying ${#regressions[@]} committed crasher(s)"
        if ! cargo +nightly fuzz run "${SANITIZER_ARGS[@]}" "$t" "${regressions[@]}" -- -runs=1; then
            echo "!! $t: a committed crasher fails again" >&2
            failed+=("$t (regression)")
            continue
        fi
    fi
    echo "== $t: fuzzing for ${SECONDS_PER_TARGET}s"
    if ! cargo +nightly fuzz run "${SANITIZER_ARGS[@]}" "$t" "work/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
        "${EXTRA_ARGS[@]}"; then
        echo "!! $t: crash found; input in fuzz/artifacts/$t/ (copy it to fuzz/regressions/$t/)" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: all targets ran clean"
