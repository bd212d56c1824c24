#!/usr/bin/env bash
# Runs every test program in BUILD/tests and every tests/test_*.sh script
# (given BUILD as $1), then prints "N passed, N failed".
set -u
build=${1:-build}
pass=0; fail=0; failed=()
export MOE_BUILD=$build
# Leak checking stays on for our own programs; MPI runtimes leak by design.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "$build"/tests/test_* tests/test_*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.o|*.d) continue;; esac
    name=$(basename "$t")
    start=$(date +%s)
    if [ "${t%.sh}" != "$t" ]; then bash "$t" "$build" > "$build/$name.log" 2>&1; rc=$?
    else "$t" > "$build/$name.log" 2>&1; rc=$?; fi
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "ok   $name (${secs}s): $(tail -n 1 "$build/$name.log")"
    else fail=$((fail+1)); failed+=("$name"); echo "FAIL $name (${secs}s, exit $rc); last lines of $build/$name.log:"; tail -n 30 "$build/$name.log" | sed 's/^/    /'; fi
done
echo
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
