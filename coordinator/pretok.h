/* Pre-tokenizers: split text into the pieces that BPE then encodes one by
 * one.  Each is a sequence of regex splits ("Isolated": matches and the
 * text between them both become pieces; each regex splits the pieces made
 * by the one before), implemented here as exact hand-written matchers
 * over the Unicode 15.1 class table (unicode.h).  See pretok.c for the
 * regexes. */
#ifndef MOE_PRETOK_H
#define MOE_PRETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pretok_kind {
    PRETOK_DEEPSEEK_V3 = 0, /* tokenizer.ggml.pre = "deepseek-v3" */
    PRETOK_DEEPSEEK_LLM,    /* "deepseek-llm" (DeepSeek LLM 7B/67B, V2) */
};

/* The kind for a tokenizer.ggml.pre value, or -1 if unsupported. */
int pretok_from_name(const char *name, size_t len);
const char *pretok_name(int kind);

/* Reusable buffers of one splitting call (decoded code points, their
 * classes and byte offsets).  Zero-initialise; free with pretok_free. */
typedef struct pretok_scratch {
    uint32_t *cp;   /* [cap] code points of the text */
    uint8_t *cls;   /* [cap] class byte of each (unicode_class) */
    uint32_t *off;  /* [cap + 1] byte offset of each code point in the text */
    size_t cap;     /* capacity in code points */
} pretok_scratch;

void pretok_free(pretok_scratch *s);

/* Called once per piece, in text order; piece is a byte range of the text.
 * Returns false to stop (out of memory). */
typedef bool (*pretok_emit_fn)(void *ctx, const char *piece, size_t len);

/* Splits text[0..n).  The text must decode with utf8_decode without any
 * replacement (the tokenizer re-encodes its input first).  Returns false if out of memory or if emit
 * returned false. */
bool pretok_split(int kind, const char *text, size_t n, pretok_scratch *s, pretok_emit_fn emit,
                  void *ctx);

#endif
