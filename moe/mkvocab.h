/* Vocabulary of the generated models: a small byte-level BPE tokenizer in
 * the layout of DeepSeek-V3's (tokenizer.ggml.model = gpt2, pre =
 * deepseek-v3), learned at generation time from an English text built
 * into the source, so generated models need no external files.
 *
 * Token ids:
 *   0, 1, 2              <｜begin▁of▁sentence｜> <｜end▁of▁sentence｜> <｜▁pad▁｜>  (CONTROL)
 *   3 .. 258             the 256 bytes in byte order, as GPT-2 byte-to-unicode text
 *   259 .. n-3           one token per learned merge, in merge order
 *   n-2, n-1             <｜User｜> <｜Assistant｜>  (USER_DEFINED)
 * Merges are learned inside the pieces the deepseek-v3 pre-tokenizer cuts
 * (words with their leading space, digit groups of at most three, ...), so
 * the tokenizer can always reproduce them. */
#ifndef MOE_MKVOCAB_H
#define MOE_MKVOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Token types of tokenizer.ggml.token_type (llama.cpp's enum values). */
enum mkvocab_ttype { MKV_NORMAL = 1, MKV_CONTROL = 3, MKV_USER_DEFINED = 4 };

#define MKVOCAB_MIN (3 + 256 + 2) /* specials + byte tokens, no merges */

typedef struct mkvocab {
    int n_tokens;     /* vocabulary size */
    char **tokens;    /* [n_tokens] NUL-terminated UTF-8 token texts */
    int32_t *types;   /* [n_tokens] enum mkvocab_ttype */
    int n_merges;     /* == n_tokens - MKVOCAB_MIN */
    char **merges;    /* [n_merges] "left right" token texts, by rank */
} mkvocab;

/* Builds a vocabulary of exactly n_tokens tokens (deterministic: the same
 * n gives the same vocabulary, and a smaller vocabulary is a prefix of a
 * larger one apart from the two final chat tokens).  Fails with a message
 * if n is below MKVOCAB_MIN or above what the built-in text can teach. */
bool mkvocab_build(int n_tokens, mkvocab *v, char *err, size_t errlen);
void mkvocab_free(mkvocab *v);

/* GPT-2's byte-to-unicode map: the code point that stands for byte b in
 * token texts (printable bytes stand for themselves, the others are
 * moved to U+0100 and up). */
int mkvocab_byte_cp(int b);

/* The built-in training text (ASCII English), for tests. */
const char *mkvocab_corpus(void);

/* The real DeepSeek-V3 chat template (tokenizer.chat_template), verbatim. */
const char *mkvocab_chat_template(void);

#endif
