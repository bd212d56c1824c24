#!/usr/bin/env bash
# Kernel paths, from outside the test programs:
#   - MOE_KERNEL=scalar|avx2|avx512 selects the path when the CPU has it,
#     falls back to the best one it has otherwise, and a bad value is
#     reported and ignored;
#   - no object outside *_avx2.c / *_avx512.c holds an AVX instruction (the
#     binary starts on any x86-64) and *_avx2.o holds no AVX-512 one (the
#     AVX2 path runs on an AVX2-only CPU);
#   - the fixtures' logits test (test_forward) and the llama.cpp-order test
#     (test_llama_order: bit-exact fixture logits, lo_matmul_multi) pass
#     on every path this CPU can run.
# Usage: tests/test_kernels_paths.sh BUILD_DIR
set -u
build=${1:-build}
pass=0; fail=0
ok()  { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

T=$build/tests/test_kernels
[ -x "$T" ] || { echo "FAIL: $T not built"; exit 1; }
supported=$("$T" --supported)
best=$(echo "$supported" | tail -n 1)
echo "paths this CPU runs: $(echo $supported)"

# --- MOE_KERNEL ---
for p in scalar avx2 avx512; do
    got=$(MOE_KERNEL=$p "$T" --print-path 2>/dev/null)
    if echo "$supported" | grep -qx "$p"; then
        [ "$got" = "$p" ] && ok || bad "MOE_KERNEL=$p chose '$got'"
    else
        [ "$got" = "$best" ] && ok || bad "MOE_KERNEL=$p (unsupported) chose '$got', expected fallback $best"
    fi
done
got=$(MOE_KERNEL=bogus "$T" --print-path 2>"$build/kpaths.err")
[ "$got" = "$best" ] && ok || bad "MOE_KERNEL=bogus chose '$got'"
grep -q "bogus" "$build/kpaths.err" && ok || bad "MOE_KERNEL=bogus gave no message naming the value"
got=$(env -u MOE_KERNEL "$T" --print-path 2>/dev/null)
[ "$got" = "$best" ] && ok || bad "default path '$got', expected $best"

# --- instruction sets per object ---
objs=$(find "$build" -name '*.o' | sort)
n=0
for o in $objs; do
    n=$((n + 1))
    base=$(basename "$o")
    dis=$(objdump -d --no-show-raw-insn "$o" 2>/dev/null)
    case "$base" in
    *_avx512.o) continue ;;
    *_avx2.o)
        if echo "$dis" | grep -Eq '%zmm|%k[0-7]|%[xy]mm(1[6-9]|2[0-9]|3[01])'; then
            bad "$o (AVX2 path) contains AVX-512 instructions"
        else ok; fi ;;
    *)
        if echo "$dis" | grep -Eq '%[yz]mm|\bv[a-z0-9]+ +.*%xmm'; then
            bad "$o is built without SIMD flags but contains AVX instructions: $(echo "$dis" | grep -Em1 '%[yz]mm|\bv[a-z0-9]+ +.*%xmm')"
        else ok; fi ;;
    esac
done
[ "$n" -gt 10 ] && ok || bad "found only $n objects under $build"

# --- fixture logits on every path ---
F=$build/tests/test_forward
if [ -x "$F" ]; then
    for p in $supported; do
        if MOE_KERNEL=$p "$F" > "$build/kpaths-forward-$p.log" 2>&1; then ok
        else bad "test_forward with MOE_KERNEL=$p (see $build/kpaths-forward-$p.log)"; tail -n 5 "$build/kpaths-forward-$p.log"; fi
    done
else
    bad "$F not built"
fi
O=$build/tests/test_llama_order
if [ -x "$O" ]; then
    for p in $supported; do
        if MOE_KERNEL=$p "$O" > "$build/kpaths-order-$p.log" 2>&1; then ok
        else bad "test_llama_order with MOE_KERNEL=$p (see $build/kpaths-order-$p.log)"; tail -n 5 "$build/kpaths-order-$p.log"; fi
    done
else
    bad "$O not built"
fi

echo "test_kernels_paths: $pass checks passed, $fail failed"
[ "$fail" -eq 0 ]
