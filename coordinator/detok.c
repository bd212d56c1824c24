/* Streaming detokenizer (see detok.h). */
#include <stdlib.h>
#include <string.h>

#include "detok.h"
#include "unicode.h"

struct detok {
    const tokenizer *t;
    bool special;       /* render CONTROL tokens */
    unsigned char held[4]; /* incomplete character carried to the next push */
    size_t n_held;      /* bytes in held (at most 3) */
    char *out;          /* buffer of the chunk returned last */
    size_t cap;         /* bytes allocated for out */
};

detok *detok_new(const tokenizer *t, bool special) {
    detok *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->t = t;
    d->special = special;
    return d;
}

void detok_free(detok *d) {
    if (!d) return;
    free(d->out);
    free(d);
}

void detok_reset(detok *d) { d->n_held = 0; }

const char *detok_push(detok *d, int id, size_t *len) {
    size_t n;
    const char *piece = tokenizer_piece(d->t, id, d->special, &n);
    if (!piece) return NULL;
    size_t total = d->n_held + n;
    if (total + 1 > d->cap) {
        size_t cap = total + 64;
        char *p = realloc(d->out, cap);
        if (!p) return NULL;
        d->out = p;
        d->cap = cap;
    }
    memcpy(d->out, d->held, d->n_held);
    memcpy(d->out + d->n_held, piece, n);
    size_t keep = utf8_incomplete_tail((const unsigned char *)d->out, total);
    memcpy(d->held, d->out + total - keep, keep);
    d->n_held = keep;
    *len = total - keep;
    return d->out;
}

const char *detok_flush(detok *d, size_t *len) {
    if (d->cap < 4) {
        char *p = realloc(d->out, 64);
        if (!p) return NULL;
        d->out = p;
        d->cap = 64;
    }
    memcpy(d->out, d->held, d->n_held);
    *len = d->n_held;
    d->n_held = 0;
    return d->out;
}
