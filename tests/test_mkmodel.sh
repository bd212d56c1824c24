#!/usr/bin/env bash
# `moe mkmodel` from the command line: help, option errors (no file left
# behind), a generated model that is the same for any thread count and
# that `moe generate` runs.  Usage: tests/test_mkmodel.sh BUILD_DIR
set -u
build=${1:-build}
moe="$build/moe"
dir=$(mktemp -d /tmp/test_mkmodel_sh.XXXXXX)
trap 'rm -rf "$dir"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }

# expect_error "what" ARGS...: non-zero exit, a message naming the problem
# ($want), and no output file.
expect_error() {
    local want=$1; shift
    rm -f "$dir/x.gguf"
    if "$moe" mkmodel "$@" >"$dir/out" 2>"$dir/err"; then bad "mkmodel $* succeeded"; return; fi
    if grep -q -- "$want" "$dir/err"; then ok; else bad "mkmodel $*: message lacks '$want': $(cat "$dir/err")"; fi
    if [ -e "$dir/x.gguf" ]; then bad "mkmodel $* left a file"; else ok; fi
}

if "$moe" mkmodel --help | grep -q "v3-layer"; then ok; else bad "--help does not list the presets"; fi
if "$moe" --help | grep -q "mkmodel"; then ok; else bad "moe --help does not list mkmodel"; fi
expect_error "unknown preset 'huge'" --preset huge -o "$dir/x.gguf"
expect_error "unknown --type 'Q7_K'" --type Q7_K -o "$dir/x.gguf"
expect_error "no output file" --preset tiny
expect_error "--layers must be at least 1" --layers 0 -o "$dir/x.gguf"
expect_error "--experts 'many'" --experts many -o "$dir/x.gguf"
expect_error "--seed '-3'" --seed -3 -o "$dir/x.gguf"
expect_error "unknown option '--bogus'" --bogus -o "$dir/x.gguf"
expect_error "vocabulary size 100000 is too large" --vocab 100000 -o "$dir/x.gguf"
expect_error "--vocab 100: want at least 261" --vocab 100 -o "$dir/x.gguf"
expect_error "needs a value" -o
expect_error "-t '5000': want an integer 0..1024" -t 5000 -o "$dir/x.gguf"

# Same options, 1 and 2 threads: same bytes; the summary names the file.
"$moe" mkmodel --preset tiny --type Q4_K_M --seed 5 --threads 1 -o "$dir/a.gguf" >"$dir/sum" 2>"$dir/err" \
    && ok || bad "mkmodel tiny failed: $(cat "$dir/err")"
"$moe" mkmodel --preset tiny --type Q4_K_M --seed 5 --threads 2 -q -o "$dir/b.gguf" >"$dir/sum2" 2>&1 \
    && ok || bad "mkmodel tiny (2 threads) failed"
if cmp -s "$dir/a.gguf" "$dir/b.gguf"; then ok; else bad "1 and 2 threads give different files"; fi
if grep -q "wrote $dir/a.gguf: tiny Q4_K_M seed 5, .* MB, 3.74 M parameters" "$dir/sum"; then ok
else bad "summary line: $(cat "$dir/sum")"; fi
if [ ! -s "$dir/sum2" ]; then ok; else bad "-q printed: $(cat "$dir/sum2")"; fi

# The generated model runs: 8 greedy tokens after a prompt of ids.
if "$moe" generate -m "$dir/a.gguf" --tokens "0 300 400 500" -n 8 --temp 0 --print-ids -t 1 \
        >"$dir/gen" 2>"$dir/err" && grep -Eq "^ids:( [0-9]+){8}$" "$dir/gen"; then ok
else bad "generate on the model: $(cat "$dir/err" "$dir/gen")"; fi

echo "test_mkmodel.sh: $pass checks passed, $fail failed"
[ $fail -eq 0 ]
