#!/usr/bin/env bash
# Runs or replays the libFuzzer targets built by Tests/fuzz/build.sh.
#   Tests/fuzz/fuzz.sh run [target...]     fuzz each target for FUZZ_SECONDS (default 60) or
#                                          FUZZ_RUNS inputs, whichever comes first, at nice 19
#   Tests/fuzz/fuzz.sh report [target...]  the figures of each target's last run, from its log
#   Tests/fuzz/fuzz.sh replay [target...]  run every committed input once (-runs=0): seeds and
#                                          the inputs of crashes found earlier (regressions)
# The committed corpus (Tests/fuzz/corpus/<target>/) is only read; inputs libFuzzer finds go to
# $FUZZ_SCRATCH/corpus/<target>/, crashes to $FUZZ_SCRATCH/crashes/. Each run prints one line:
# executions, seconds, coverage (edges, features), corpus size and crashes.
set -uo pipefail
# A fatalError is reported by libFuzzer (deadly signal) with the input saved; the Swift runtime's
# own backtracer would only add a spurious ASan report of its memory reader.
export SWIFT_BACKTRACE=enable=no
cd "$(dirname "$0")/../.."
SCRATCH=${FUZZ_SCRATCH:-.build-fuzz}
BIN=$SCRATCH/fuzz-bin
MODE=${1:?usage: fuzz.sh run|replay|report [target...]}
shift
TARGETS=${*:-json framing request apns fcm webpush wns}
DICT=Tests/fuzz/pushline.dict
status=0
mkdir -p "$SCRATCH/logs" "$SCRATCH/crashes"
for t in $TARGETS; do
    committed=Tests/fuzz/corpus/$t
    log=$SCRATCH/logs/$t-$MODE.log
    case $MODE in
    replay)
        if "$BIN/$t" -runs=0 "$committed" >"$log" 2>&1; then
            echo "fuzz replay $t: $(ls "$committed" | wc -l) inputs ok"
        else
            echo "fuzz replay $t: FAILED (log: $log)"; tail -30 "$log"; status=1
        fi
        ;;
    run)
        work=$SCRATCH/corpus/$t
        # Framing inputs are cut into many small reads: shorter inputs keep it fast and still span
        # several lines and limits (the limit is at most 47 bytes).
        maxlen=4096; [ "$t" = framing ] && maxlen=512
        mkdir -p "$work"
        before=$(ls "$SCRATCH/crashes" | grep -c "^$t-" || true)
        start=$(date +%s)
        nice -n 19 "$BIN/$t" -max_total_time="${FUZZ_SECONDS:-60}" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} \
            -max_len="${FUZZ_MAX_LEN:-$maxlen}" -timeout=10 -rss_limit_mb=2048 -dict="$DICT" \
            -artifact_prefix="$SCRATCH/crashes/$t-" -print_final_stats=1 "$work" "$committed" >"$log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - start ))
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cov=$(grep -oE '(DONE|pulse|NEW|REDUCE|INITED) +cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
        after=$(ls "$SCRATCH/crashes" | grep -c "^$t-" || true)
        echo "fuzz $t: ${execs:-?} inputs in ${secs}s, ${cov:-cov: ?}, corpus $(ls "$work" | wc -l) found + $(ls "$committed" | wc -l) committed, crashes $((after - before)) (exit $rc)"
        if [ "$rc" != 0 ]; then
            grep -m3 -E 'fuzz invariant|Fatal error|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY' "$log"
            echo "  log: $log; inputs: $(ls -t "$SCRATCH"/crashes/$t-* 2>/dev/null | head -3 | tr '\n' ' ')"
            status=1
        fi
        ;;
    report)
        # The figures of the last `run` of each target, from its log (e.g. for runs started by hand).
        log=$SCRATCH/logs/$t-run.log
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
        cov=$(grep -oE '(DONE|pulse|NEW|REDUCE|INITED) +cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
        crashes=$(grep -c 'Test unit written to' "$log")
        echo "fuzz $t: ${execs:-unfinished} inputs in $(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' || echo '?'), ${cov:-cov: ?}, crashes $crashes"
        ;;
    *) echo "unknown mode $MODE" >&2; exit 2 ;;
    esac
done
exit $status
