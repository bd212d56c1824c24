#!/usr/bin/env bash
# Logits of generated models against llama.cpp's, stored in tests/ref (see
# its README): weight types the shared fixtures lack (Q2_K, Q3_K).  Each model is made
# again by `moe mkmodel` (deterministic) and must give llama.cpp's logits
# bit for bit on every kernel path this CPU has.
# Usage: tests/test_llama_ref.sh BUILD_DIR
set -u
build=${1:-build}
moe="$build/moe"
dir=$(mktemp -d /tmp/test_llama_ref.XXXXXX)
trap 'rm -rf "$dir"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

ids="0 284 620 45 99 7 300 12 500 33 81 2 250 600 14 9 77 123 456 70 1"
paths="scalar avx2 avx512"
grep -qw avx512_vnni /proc/cpuinfo || paths="scalar avx2" # (a forced path the CPU lacks would fall back)
grep -qw avx2 /proc/cpuinfo || paths="scalar"

# check REF MKMODEL_OPTIONS...
check() {
    local ref=tests/ref/$1; shift
    if ! "$moe" mkmodel "$@" -o "$dir/m.gguf" > "$dir/mk.log" 2>&1; then
        bad "mkmodel $*: $(tail -n 1 "$dir/mk.log")"; return
    fi
    for p in $paths; do
        if ! MOE_KERNEL=$p "$moe" logits -m "$dir/m.gguf" --tokens "$ids" -o "$dir/out.f32" > "$dir/run.log" 2>&1; then
            bad "$p: moe logits failed on mkmodel $*: $(tail -n 1 "$dir/run.log")"; continue
        fi
        if cmp -s "$dir/out.f32" "$ref"; then ok
        else bad "$p: logits of mkmodel $* differ from llama.cpp's ($ref): $(cmp "$dir/out.f32" "$ref" 2>&1 | head -n 1)"; fi
    done
}

check tiny-Q3_K-seed1.f32 --preset tiny --type Q3_K --seed 1
check tiny-Q3_K-seed2-l6-e32.f32 --preset tiny --type Q3_K --seed 2 --layers 6 --experts 32
check tiny-Q2_K-seed1.f32 --preset tiny --type Q2_K --seed 1
check tiny-Q2_K-seed2.f32 --preset tiny --type Q2_K --seed 2

echo "test_llama_ref: $pass checks passed, $fail failed"
[ $fail -eq 0 ]
