#!/usr/bin/env bash
# Several sequences in one engine call (engine_forward_batch through
# `moe logits --batch`): 4 sequences (three prompts of different lengths,
# then decode steps of all four at once, one sequence extending its prompt
# mid-way, some requests asking only for the last row) give logits bitwise
# identical to each sequence run alone in one process, in one process and
# on clusters of N = 2, 3, 4 ranks with 1 to 3 stages, on both fixture
# models.  The stages really pipeline (units overlap the workers), and the
# overlap can be switched off without changing a bit.  Bad batch files are
# rejected with the line at fault.
# usage: tests/test_mpi_batch.sh BUILD_DIR
set -u
build=${1:-build}
moe=$build/moe
fx=${MOE_FIXTURES:-../shared/fixtures}/models
tmp=$(mktemp -d /tmp/moe_test_mpi_batch.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun_() { timeout 120 mpirun --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np "$@"; }
pass=0; fail=0
check() { # check NAME EXIT-STATUS [detail]
    if [ "$2" -eq 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1 ${3:-}"; fi
}
ids() { awk -F'\t' -v m="$1" -v p="$2" '$1 == m && $2 == p { print $4 }' "$fx/manifest.tsv"; }
seqs="0 1 2 7" # sequence numbers need not be dense

# same_as_alone NAME MODEL PREFIX: every sequence's file equals its lone run.
same_as_alone() {
    local s ok=0 bad=""
    for s in $seqs; do
        cmp -s "$tmp/alone-$2.$s" "$3.$s" || { ok=1; bad="$bad $s"; }
    done
    check "$1: logits bitwise equal to each sequence alone" $ok "(sequences that differ:$bad)"
}

for model in tiny-v3-Q4_K_M tiny-v2lite-f32; do
    gguf=$fx/$model.gguf
    cat > "$tmp/batch" <<EOF
# prompts of 21, 64, 1+4 and 3 tokens (odd lengths: no 1-row micro-batch)
0: $(ids "$model" p1)
1: $(ids "$model" p2)
2 last: $(ids "$model" p3) 5 6 7 8
7: 0 40 41

# decode: all four at once
0: 17
1: 300
2: 9
7: 42

# decode again; sequence 7 goes on with 5 prompt tokens, last row only
0 last: 18
1: 301
2 last: 10
7 last: 43 44 45 46 47

0: 19
1: 302
2: 11
7: 48
EOF
    # Each sequence alone: its requests one engine call each, one process.
    for s in $seqs; do
        awk -v s="$s" '/^#/ || NF == 0 { next } { split($0, a, /[ :]/); if (a[1] == s) { print; print "" } }' \
            "$tmp/batch" > "$tmp/alone$s.batch"
        "$moe" logits -m "$gguf" --batch "$tmp/alone$s.batch" -o "$tmp/alone-$model" 2> "$tmp/err"
        check "$model: sequence $s alone runs" $? "$(tail -n 3 "$tmp/err")"
    done
    # The batch CLI agrees with the single --tokens interface.
    "$moe" logits -m "$gguf" --tokens "$(ids "$model" p2)" -o "$tmp/p2.f32" 2> /dev/null
    cmp -s -n "$(stat -c %s "$tmp/p2.f32")" "$tmp/p2.f32" "$tmp/alone-$model.1"
    check "$model: --batch sequence alone equals --tokens" $?
    [ "$(stat -c %s "$tmp/alone-$model.0")" -eq $(((21 + 3) * 737 * 4)) ] &&
        [ "$(stat -c %s "$tmp/alone-$model.2")" -eq $((4 * 737 * 4)) ]
    check "$model: one row per requested position" $? "$(ls -l "$tmp"/alone-*)"

    "$moe" logits -m "$gguf" --batch "$tmp/batch" -o "$tmp/one" 2> "$tmp/err"
    check "$model: N=1 batch runs" $? "$(tail -n 3 "$tmp/err")"
    same_as_alone "$model N=1" "$model" "$tmp/one"
    # ranks, stages
    for cfg in "2 1" "2 2" "3 2" "4 3"; do
        set -- $cfg
        rm -f "$tmp/n".*
        mpirun_ "$1" "$moe" logits -m "$gguf" --batch "$tmp/batch" -o "$tmp/n" --stages "$2" --stats 2> "$tmp/err"
        check "$model N=$1 stages=$2: batch runs" $? "$(tail -n 5 "$tmp/err")"
        same_as_alone "$model N=$1 stages=$2" "$model" "$tmp/n"
        over=$(sed -n 's/^stats: pipelining: \([0-9]*\) stage attention steps.*at most \([0-9]*\) units.*/\1 \2/p' "$tmp/err")
        set -- $over
        [ -n "$over" ] && [ "$1" -gt 0 ] && [ "$2" -ge 4 ]
        check "$model N=$cfg: stages run attention while workers compute (overlapped, max in flight: $over)" $? \
            "$(grep '^stats: [a-z]' "$tmp/err")"
    done
done

# Overlap off (one unit at a time per stage) and odd micro-batch sizes:
# the same bits.
model=tiny-v3-Q4_K_M
rm -f "$tmp/n".*
MOE_STAGE_INFLIGHT=1 MOE_MICROBATCH=4 mpirun_ 3 -x MOE_STAGE_INFLIGHT -x MOE_MICROBATCH "$moe" logits \
    -m "$fx/$model.gguf" --batch "$tmp/batch" -o "$tmp/n" --stages 2 --stats 2> "$tmp/err"
check "no overlap, 4-row micro-batches: runs" $? "$(tail -n 5 "$tmp/err")"
same_as_alone "no overlap, 4-row micro-batches" "$model" "$tmp/n"
grep -q "^stats: pipelining: 0 stage attention steps" "$tmp/err"
check "MOE_STAGE_INFLIGHT=1 keeps one unit at a time" $? "$(grep '^stats: pipelining' "$tmp/err")"

# Bad batch files: the line at fault, before any weight is loaded.
bad() { # bad NAME EXPECTED-MESSAGE FILE-CONTENT
    printf '%b' "$3" > "$tmp/bad"
    "$moe" logits -m "$fx/$model.gguf" --batch "$tmp/bad" -o "$tmp/x" 2> "$tmp/err"
    local rc=$?
    [ $rc -eq 2 ] && grep -q -- "$2" "$tmp/err"
    check "bad batch: $1" $? "rc=$rc $(cat "$tmp/err")"
}
bad "no colon" "bad:2: expected .SEQ: IDS." '0: 1 2\n1 2 3\n'
bad "unknown flag" "bad:1: expected" '0 first: 1 2\n'
bad "bad id" "bad:3: bad token id" '0: 1\n\n0: 1 x\n'
bad "sequence twice in a batch" "bad:2: sequence 0 already has a request in this batch" '0: 1 2\n0: 3\n'
bad "empty" "no requests" '# nothing\n\n'
"$moe" logits -m "$fx/$model.gguf" --batch "$tmp/missing" -o "$tmp/x" 2> "$tmp/err"
[ $? -eq 2 ] && grep -q "cannot read" "$tmp/err"
check "missing batch file named" $? "$(cat "$tmp/err")"
printf '0: 1 2 737\n' > "$tmp/bad"
"$moe" logits -m "$fx/$model.gguf" --batch "$tmp/bad" -o "$tmp/x" 2> "$tmp/err"
[ $? -eq 1 ] && grep -q "token id 737 at index 2 is outside the vocabulary" "$tmp/err"
check "token outside the vocabulary rejected" $? "$(cat "$tmp/err")"
mpirun_ 2 "$moe" logits -m "$fx/$model.gguf" --batch "$tmp/bad" -o "$tmp/x" 2> "$tmp/err"
[ $? -ne 0 ] && grep -q "token id 737 at index 2 is outside the vocabulary" "$tmp/err"
check "token outside the vocabulary rejected by the cluster" $? "$(tail -n 3 "$tmp/err")"

echo "test_mpi_batch: $pass checks passed, $fail failed"
[ $fail -eq 0 ]
