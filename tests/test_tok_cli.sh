#!/usr/bin/env bash
# `moe tokenize`, `moe detokenize`, `moe chat-render` from the command line
# against the tokenizer fixtures (ids and texts read from the .jsonl
# files), plus their errors.  Usage: tests/test_tok_cli.sh BUILD_DIR
set -u
build=${1:-build}
moe=$build/moe
fx=${MOE_FIXTURES:-../shared/fixtures}/tokenizer
vocab=$fx/deepseek-v3-vocab.gguf
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
check() { if [ "$2" = "$3" ]; then ok; else bad "$1: want [$2] got [$3]"; fi; }

# A field of the line of FILE whose "id" is ID: "ids": [1,2] -> "1 2".
ids_of() { grep "\"id\":\"$2\"" "$1" | sed -e "s/.*\"$3\":\[\([0-9,]*\)\].*/\1/" -e 's/,/ /g'; }
# A string field without JSON escapes inside (the cases used here have none).
str_of() { grep "\"id\":\"$2\"" "$1" | sed -e "s/.*\"$3\":\"\([^\"]*\)\".*/\1/"; }

# tokenize: -p and -f, with and without --bos, --parse-special.
text=$(str_of "$fx/cases.jsonl" en_sentence text)
check "tokenize -p" "$(ids_of "$fx/cases.jsonl" en_sentence ids_no_bos)" "$("$moe" tokenize -m "$vocab" -p "$text")"
check "tokenize --bos" "$(ids_of "$fx/cases.jsonl" en_sentence ids_with_bos)" "$("$moe" tokenize -m "$vocab" -p "$text" --bos)"
printf '%s' "$text" > "$tmp/t.txt"
check "tokenize -f" "$(ids_of "$fx/cases.jsonl" en_sentence ids_no_bos)" "$("$moe" tokenize -m "$vocab" -f "$tmp/t.txt")"
text=$(str_of "$fx/cases.jsonl" special_chat_ps text)
check "tokenize --parse-special" "$(ids_of "$fx/cases.jsonl" special_chat_ps ids_with_bos)" \
    "$("$moe" tokenize -m "$vocab" -p "$text" --bos --parse-special)"
text=$(str_of "$fx/cases.jsonl" special_chat_nops text)
check "tokenize (no special)" "$(ids_of "$fx/cases.jsonl" special_chat_nops ids_no_bos)" \
    "$("$moe" tokenize -m "$vocab" -p "$text")"

# detokenize: exact bytes, special tokens shown or hidden.
ids=$(ids_of "$fx/decode.jsonl" dec_chat_tokens ids)
"$moe" detokenize -m "$vocab" --ids "$ids" > "$tmp/d.out"
printf '%s' "$(str_of "$fx/decode.jsonl" dec_chat_tokens text)" > "$tmp/d.want"
if cmp -s "$tmp/d.out" "$tmp/d.want"; then ok; else bad "detokenize bytes"; fi
"$moe" detokenize -m "$vocab" --ids "$ids" --no-special > "$tmp/d.out"
printf '%s' "$(str_of "$fx/decode.jsonl" dec_chat_tokens text_skip_special)" > "$tmp/d.want"
if cmp -s "$tmp/d.out" "$tmp/d.want"; then ok; else bad "detokenize --no-special"; fi
# Invalid UTF-8 comes out as the raw bytes: "\xf0\x9f" of a split emoji.
ids=$(ids_of "$fx/decode.jsonl" dec_emoji_first_token_only ids)
want=$(grep '"id":"dec_emoji_first_token_only"' "$fx/decode.jsonl" | sed 's/.*"bytes_hex":"\([0-9a-f]*\)".*/\1/')
check "detokenize raw bytes" "$want" "$("$moe" detokenize -m "$vocab" --ids "$ids" | od -An -tx1 | tr -d ' \n')"

# chat-render: the chat_system_user case.
cat > "$tmp/m.json" <<'JSON'
[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is 2+2?"}]
JSON
"$moe" chat-render -m "$vocab" -f "$tmp/m.json" --add-generation-prompt > "$tmp/c.out"
printf '%s' "$(str_of "$fx/chat.jsonl" chat_system_user rendered)" > "$tmp/c.want"
if cmp -s "$tmp/c.out" "$tmp/c.want"; then ok; else bad "chat-render"; fi

# Errors: clear messages, non-zero exit, never a crash.
expect_err() { # NAME NEEDLE CMD...
    local name=$1 needle=$2; shift 2
    if "$@" > "$tmp/e.out" 2> "$tmp/e.err"; then bad "$name: succeeded"; return; fi
    if grep -q -- "$needle" "$tmp/e.err"; then ok; else bad "$name: stderr lacks '$needle': $(cat "$tmp/e.err")"; fi
}
expect_err "no text" "exactly one of" "$moe" tokenize -m "$vocab"
expect_err "bad model" "nosuch.gguf" "$moe" tokenize -m "$tmp/nosuch.gguf" -p hi
expect_err "bad id" "out of range" "$moe" detokenize -m "$vocab" --ids "5 999999"
expect_err "bad ids" "bad token id" "$moe" detokenize -m "$vocab" --ids "5 x"
echo '[{"role":"user"' > "$tmp/bad.json"
expect_err "bad json" "not valid JSON" "$moe" chat-render -m "$vocab" -f "$tmp/bad.json"
echo '[{"role":"user","content":"hi"}]' > "$tmp/m1.json"
expect_err "other template" "--chat-template" "$moe" chat-render -m "${MOE_FIXTURES:-../shared/fixtures}/models/tiny-v3-f32.gguf" -f "$tmp/m1.json"
out=$("$moe" chat-render -m "${MOE_FIXTURES:-../shared/fixtures}/models/tiny-v3-f32.gguf" -f "$tmp/m1.json" \
      --chat-template deepseek3 --add-generation-prompt)
check "--chat-template deepseek3" "<｜begin▁of▁sentence｜><｜User｜>hi<｜Assistant｜>" "$out"

echo "test_tok_cli: $pass checks passed, $fail failed"
[ "$fail" -eq 0 ]
