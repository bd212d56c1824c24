#!/usr/bin/env bash
# The cluster gives bitwise the logits of one process: fixture models at
# N = 1, 2, 3, 4, 6 ranks with different stage / worker splits (computed
# plans and hand-edited plan files), greedy generation identical, and bad
# plans rejected before any weight is loaded.
# usage: tests/test_mpi.sh BUILD_DIR
set -u
build=${1:-build}
moe=$build/moe
fx=${MOE_FIXTURES:-../shared/fixtures}/models
tmp=$(mktemp -d /tmp/moe_test_mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
# MPI runtimes leak by design; Open MPI refuses root unless told.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# 2 cores shared by up to 6 ranks: oversubscribe, yield, sleep while waiting.
mpirun_() { timeout 120 mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np "$@"; }
pass=0; fail=0
check() { # check NAME COND-EXIT-STATUS [detail]
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1 ${3:-}"; fi
}
ids() { awk -F'\t' -v m="$1" -v p="$2" '$1 == m && $2 == p { print $4 }' "$fx/manifest.tsv"; }

for model in tiny-v3-Q4_K_M tiny-v2lite-f32; do
    toks=$(ids "$model" p2)
    gguf=$fx/$model.gguf
    "$moe" logits -m "$gguf" --tokens "$toks" -o "$tmp/ref.f32" 2> "$tmp/ref.err"
    check "$model: single-process logits" $? "$(tail -n 3 "$tmp/ref.err")"
    # ranks, stage count: the planner puts stage s on rank s and spreads the
    # experts over every rank.
    for cfg in "1 1" "2 1" "2 2" "3 2" "4 3" "6 2"; do
        set -- $cfg
        out=$tmp/n$1s$2.f32
        mpirun_ "$1" "$moe" logits -m "$gguf" --tokens "$toks" -o "$out" --stages "$2" 2> "$tmp/err"
        rc=$?
        check "$model N=$1 stages=$2 runs" $rc "$(tail -n 5 "$tmp/err")"
        cmp -s "$tmp/ref.f32" "$out"
        check "$model N=$1 stages=$2 logits bitwise equal to one process" $?
    done
done

# Hand-edited plans on tiny-v3 (4 layers, layer 0 dense, 16 experts):
# (a) rank 0 only coordinates, two stages on ranks 1 and 2, experts
#     interleaved over ranks 1-3 unevenly;
# (b) one stage on rank 3, experts split by layer (whole layers per rank).
gguf=$fx/tiny-v3-Q4_K_M.gguf
toks=$(ids tiny-v3-Q4_K_M p2)
"$moe" logits -m "$gguf" --tokens "$toks" -o "$tmp/ref.f32" 2> /dev/null
cat > "$tmp/a.plan" <<'EOF'
ranks 4
ctx 4096 seqs 1
stage 0 rank 1 layers 0-1
stage 1 rank 2 layers 2-3
experts rank 1 layers 1-3 ids 0-2
experts rank 2 layers 1-3 ids 3-4
experts rank 3 layers 1-3 ids 5-9
experts rank 1 layers 1-3 ids 10-15
EOF
cat > "$tmp/b.plan" <<'EOF'
ranks 4
ctx 4096 seqs 1
stage 0 rank 3 layers all
experts rank 0 layers 1 ids all
experts rank 1 layers 2 ids all
experts rank 2 layers 3 ids all
EOF
for p in a b; do
    mpirun_ 4 "$moe" logits -m "$gguf" --tokens "$toks" -o "$tmp/$p.f32" --plan "$tmp/$p.plan" 2> "$tmp/$p.err"
    check "plan $p runs" $? "$(tail -n 5 "$tmp/$p.err")"
    cmp -s "$tmp/ref.f32" "$tmp/$p.f32"
    check "plan $p logits bitwise equal to one process" $?
done
grep -q "cluster: rank 0 on .*: coordinator; resident" "$tmp/a.err" &&
    grep -q "cluster: rank 3 on .*: expert worker (15 experts); resident" "$tmp/a.err"
check "plan a: per-rank roles and resident memory reported" $? "$(head -n 4 "$tmp/a.err")"

# Greedy generation: the same ids as one process, with stats on.
toks=$(ids tiny-v3-Q4_K_M p1)
"$moe" generate -m "$gguf" --tokens "$toks" -n 16 --temp 0 --print-ids > "$tmp/g1" 2> /dev/null
mpirun_ 3 "$moe" generate -m "$gguf" --tokens "$toks" -n 16 --temp 0 --print-ids --stages 2 --stats > "$tmp/g3" 2> "$tmp/err"
check "generate N=3 runs" $? "$(tail -n 5 "$tmp/err")"
grep -q '^ids: ' "$tmp/g1" && [ "$(grep '^ids: ' "$tmp/g1")" = "$(grep '^ids: ' "$tmp/g3")" ]
check "greedy ids identical at N=3" $? "$(grep '^ids' "$tmp/g1" "$tmp/g3")"
want=$(awk -F'\t' '$1 == "tiny-v3-Q4_K_M" && $2 == "p1" { print $5 }' "$fx/manifest.tsv" | wc -w)
grep -q "stats: layer 1 expert hits:" "$tmp/err" && grep -q "bytes on the wire per token" "$tmp/err"
check "--stats prints expert hits and wire bytes" $? "$(grep stats: "$tmp/err" | head -n 3)"
[ "$want" -eq 16 ]
check "manifest has 16 greedy ids" $?

# Waiting ranks sleep: in a 4-rank decode the expert workers mostly wait;
# their CPU time (from --stats) stays well below the decode's wall time
# (spinning waits would burn it all).
mpirun_ 4 "$moe" generate -m "$gguf" --tokens "0 1 2" -n 1000 --temp 0 --ignore-eos -t 1 --stats > /dev/null 2> "$tmp/err"
decode=$(sed -n 's/.*decode: [0-9]* tokens in \([0-9.]*\) s.*/\1/p' "$tmp/err")
cpu=$(awk '$1 == "stats:" && $2 ~ /^[1-3]$/ { s += $8 } END { print s + 0 }' "$tmp/err")
[ -n "$decode" ] && awk -v c="$cpu" -v d="$decode" 'BEGIN { exit !(c < 0.5 * 3 * d) }'
check "waiting ranks do not spin (workers' cpu $cpu s during a $decode s decode)" $? "$(grep -E 'stats|decode' "$tmp/err" | head -n 6)"

# Bad plans are rejected before loading: wrong world size, not fitting memory.
mpirun_ 3 "$moe" logits -m "$gguf" --tokens "0 1" -o "$tmp/x.f32" --plan "$tmp/a.plan" 2> "$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q "the plan is for 4 ranks but 3 are running" "$tmp/err" && ! grep -q "cluster: rank" "$tmp/err"
check "plan for another world size rejected before loading" $? "rc=$rc $(tail -n 3 "$tmp/err")"
sed 's/^ctx .*/ctx 4096 seqs 1\nmemory 3 1M/' "$tmp/a.plan" > "$tmp/small.plan"
mpirun_ 4 "$moe" logits -m "$gguf" --tokens "0 1" -o "$tmp/x.f32" --plan "$tmp/small.plan" 2> "$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q "does not fit memory: rank 3" "$tmp/err" && ! grep -q "cluster: rank" "$tmp/err"
check "plan that does not fit memory rejected before loading" $? "rc=$rc $(tail -n 3 "$tmp/err")"

# moe plan: the printed plan is a valid --plan file for the same run.
"$moe" plan -m "$gguf" --ranks 3 --stages 2 > "$tmp/p3.plan" 2> "$tmp/err"
check "moe plan prints" $? "$(cat "$tmp/err")"
mpirun_ 3 "$moe" logits -m "$gguf" --tokens "$(ids tiny-v3-Q4_K_M p2)" -o "$tmp/p3.f32" --plan "$tmp/p3.plan" 2> "$tmp/err"
cmp -s "$tmp/ref.f32" "$tmp/p3.f32"
check "moe plan output used as --plan gives the same logits" $? "$(tail -n 3 "$tmp/err")"

echo "test_mpi: $pass checks passed, $fail failed"
[ $fail -eq 0 ]
