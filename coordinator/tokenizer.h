/* Byte-level BPE tokenizer read from GGUF metadata (tokenizer.ggml.model
 * = "gpt2"), giving the same ids as llama.cpp for DeepSeek vocabularies.
 *
 * encode = special-token split (optional) -> pre-tokenizer (pretok.h) ->
 * GPT-2 byte-to-unicode mapping -> BPE merges by rank.  A loaded tokenizer
 * is read-only: any number of threads may encode/decode with it at once.
 *
 * The tokenizer copies what it needs, so the gguf_file may be closed after
 * tokenizer_load. */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
enum tok_type {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,      /* BOS, EOS, chat markers: matched only with parse_special */
    TOK_USER_DEFINED = 4, /* always matched in text */
    TOK_UNUSED = 5,       /* padding slots, e.g. [PAD129279]: never produced */
    TOK_BYTE = 6,
};

typedef struct tokenizer tokenizer;

/* Reads the tokenizer from GGUF metadata.  On failure returns NULL and
 * writes a message naming the problem (unsupported tokenizer.ggml.model
 * or tokenizer.ggml.pre, missing or malformed arrays, bad special ids). */
tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen);
/* gguf_open + tokenizer_load + gguf_close. */
tokenizer *tokenizer_load_file(const char *path, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);

int tokenizer_n_vocab(const tokenizer *t);
int tokenizer_bos(const tokenizer *t); /* -1 if none */
int tokenizer_eos(const tokenizer *t); /* -1 if none */
bool tokenizer_add_bos(const tokenizer *t); /* tokenizer.ggml.add_bos_token */
const char *tokenizer_pre_name(const tokenizer *t);
/* enum tok_type of id; TOK_UNDEFINED if id is out of range. */
int tokenizer_token_type(const tokenizer *t, int id);
/* True for the ids a chat/generation loop should stop at or hide:
 * CONTROL and UNKNOWN tokens. */
bool tokenizer_is_special(const tokenizer *t, int id);
/* The token's text as stored in the vocabulary (byte-level characters for
 * normal tokens, e.g. "Ġthe"); NULL if id is out of range. */
const char *tokenizer_token_text(const tokenizer *t, int id, size_t *len);
/* The bytes the token stands for, as llama_token_to_piece gives them:
 * NORMAL tokens mapped back through the byte table, CONTROL/UNKNOWN tokens
 * their text if special is true (else nothing), USER_DEFINED tokens their
 * text, UNUSED tokens nothing.  Not NUL-terminated; NULL for a bad id. */
const char *tokenizer_piece(const tokenizer *t, int id, bool special, size_t *len);
/* Id of a token by its exact vocabulary text, or -1. */
int tokenizer_find(const tokenizer *t, const char *text, size_t len);
/* tokenizer.chat_template, NUL-terminated, or NULL if absent. */
const char *tokenizer_chat_template(const tokenizer *t);

/* Encodes text[0..len) (any bytes; invalid UTF-8 is read as U+FFFD per
 * bad byte, as llama.cpp does).  add_special: add BOS (and EOS) as the
 * vocabulary asks (add_bos_token / add_eos_token), like llama_tokenize's
 * add_special.  parse_special: CONTROL token texts in the text become
 * those tokens (USER_DEFINED ones always do).  Returns a malloc'd array of
 * *n ids (free it), or NULL if out of memory. */
int *tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                      bool parse_special, size_t *n);

/* Concatenated pieces of ids[0..n) (tokenizer_piece with special) into a
 * malloc'd buffer of *len bytes plus a NUL; NULL for a bad id or OOM. */
char *tokenizer_decode(const tokenizer *t, const int *ids, size_t n, bool special, size_t *len);

/* `moe bench --tokenizer FILE`: loads the vocabulary of model_path (NULL:
 * ../shared/fixtures/tokenizer/deepseek-v3-vocab.gguf), times the load and
 * the tokenization of text_path on one thread, prints both figures.
 * Returns 0, or 1 with a message on stderr. */
int bench_tokenizer(const char *model_path, const char *text_path);

#endif
