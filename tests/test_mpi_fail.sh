#!/usr/bin/env bash
# A rank that dies or stops answering ends the whole job within 10 s,
# non-zero, with a message naming the rank:
#   kill -9 of an expert worker mid-generation (mpirun ends the job; rank 0
#   says which rank is gone and what everyone was doing),
#   SIGSTOP of a worker (the heartbeats notice the silence), and
#   kill -9 of a worker while a 4-sequence batch has many units in flight.
# usage: tests/test_mpi_fail.sh BUILD_DIR
set -u
build=${1:-build}
moe=$(cd "$build" && pwd)/moe
fx=${MOE_FIXTURES:-../shared/fixtures}/models
tmp=$(mktemp -d /tmp/moe_test_fail.XXXXXX)
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
pass=0; fail=0
check() {
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1 ${3:-}"; fi
}
job=
cleanup() {
    # Only what this test started: the job's process group, then the files.
    [ -n "$job" ] && kill -9 -- -"$job" 2> /dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

# The pid of rank R of the job started by this test (its environment says so).
rank_pid() {
    for p in $(pgrep -f "$moe (generate|logits)"); do
        tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" || continue
        tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "MOE_TEST_TAG=$tmp" && echo "$p"
    done
}

# run_and_break SIGNAL RANK: starts a long generation on 3 ranks, waits
# until tokens flow, sends SIGNAL to rank RANK, and measures how long the
# job takes to end.  Sets rc and ms.
# (with a third argument "batch": 4 sequences decoding together through
# `moe logits --batch`, started once the ranks have loaded.)
run_and_break() {
    : > "$tmp/out"
    : > "$tmp/err"
    if [ "${3:-}" = batch ]; then
        awk 'BEGIN { for (s = 0; s < 4; s++) printf "%d: 0 %d %d\n", s, 10 + s, 20 + s
                     for (i = 0; i < 2000; i++) { printf "\n"; for (s = 0; s < 4; s++) printf "%d last: %d\n", s, 30 + (i + s) % 700 } }' \
            > "$tmp/batch"
        MOE_TEST_TAG=$tmp setsid timeout -s KILL 60 mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 \
            -x MOE_TEST_TAG -np 3 "$moe" logits -m "$fx/tiny-v3-Q4_K_M.gguf" --batch "$tmp/batch" -o "$tmp/lg" \
            > "$tmp/out" 2> "$tmp/err" &
        job=$!
        local t=0
        until grep -q "cluster: rank 2 " "$tmp/err" || [ $t -gt 300 ]; do sleep 0.1; t=$((t + 1)); done
        sleep 1
    else
        MOE_TEST_TAG=$tmp setsid timeout -s KILL 60 mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 \
            -x MOE_TEST_TAG -np 3 "$moe" generate -m "$fx/tiny-v3-Q4_K_M.gguf" --tokens "0 284 620" -n 100000 \
            --ctx 100000 --temp 0 --ignore-eos > "$tmp/out" 2> "$tmp/err" &
        job=$!
        local t=0
        until [ "$(wc -c < "$tmp/out")" -gt 20 ] || [ $t -gt 300 ]; do sleep 0.1; t=$((t + 1)); done
    fi
    local pid
    pid=$(rank_pid "$2")
    if [ -z "$pid" ]; then
        rc=0; ms=99999
        echo "could not find rank $2; stderr: $(tail -n 5 "$tmp/err")"
        return
    fi
    local start
    start=$(date +%s%N)
    kill "-$1" "$pid"
    wait "$job"
    rc=$?
    job=
    ms=$((($(date +%s%N) - start) / 1000000))
    # SIGSTOP leaves a stopped process only if mpirun did not kill it.
    kill -0 "$pid" 2> /dev/null && kill -9 "$pid" 2> /dev/null
}

run_and_break KILL 2
[ "$rc" -ne 0 ]
check "killed worker: job exits non-zero" $? "rc=$rc"
[ "$ms" -lt 10000 ]
check "killed worker: job ends within 10 s" $? "took $ms ms"
grep -q "rank 2 (expert worker.*) on .* is GONE" "$tmp/err"
check "killed worker: rank 0 names the dead rank and its role" $? "$(tail -n 8 "$tmp/err")"
grep -q "rank 0 was: " "$tmp/err"
check "killed worker: rank 0 says what it was doing" $?
echo "kill -9 of rank 2: job ended in $ms ms (rc $rc)"

run_and_break STOP 1
[ "$rc" -ne 0 ]
check "stopped worker: job exits non-zero" $? "rc=$rc"
[ "$ms" -lt 10000 ]
check "stopped worker: job ends within 10 s" $? "took $ms ms"
grep -q "rank 1 (expert worker.*) stopped answering" "$tmp/err"
check "stopped worker: the rank that stopped answering is named" $? "$(tail -n 8 "$tmp/err")"
echo "SIGSTOP of rank 1: job ended in $ms ms (rc $rc)"

run_and_break KILL 1 batch
[ "$rc" -ne 0 ]
check "killed worker during a batch: job exits non-zero" $? "rc=$rc"
[ "$ms" -lt 10000 ]
check "killed worker during a batch: job ends within 10 s" $? "took $ms ms"
grep -q "rank 1 (expert worker.*) on .* is GONE" "$tmp/err"
check "killed worker during a batch: rank 0 names the dead rank and its role" $? "$(tail -n 8 "$tmp/err")"
grep -q "rank 0 was: " "$tmp/err" && ! [ -e "$tmp/lg.0" ]
check "killed worker during a batch: rank 0 says what it was doing, no output written" $? "$(ls "$tmp")"
echo "kill -9 of rank 1 during a 4-sequence batch: job ended in $ms ms (rc $rc)"

# Only this test's processes count (others may run the suite at the same
# time); mpirun may return just before the last rank is gone.
mine() {
    local p n=0
    for p in $(pgrep -f "$moe (generate|logits)"); do
        tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | grep -qx "MOE_TEST_TAG=$tmp" && n=$((n + 1))
    done
    echo $n
}
t=0
while [ "$(mine)" -gt 0 ] && [ $t -lt 30 ]; do sleep 0.1; t=$((t + 1)); done
left=$(mine)
[ "$left" -eq 0 ]
check "no process left behind" $? "$left left"

echo "test_mpi_fail: $pass checks passed, $fail failed"
[ $fail -eq 0 ]
