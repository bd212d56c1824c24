/* Streaming detokenizer: turns generated ids into bytes as they come,
 * holding back the bytes of a UTF-8 character that a later token may
 * still complete, so every chunk it returns ends on a character boundary
 * (bytes that can never become valid UTF-8 are passed through as they
 * are, exactly as a whole-sequence decode gives them). */
#ifndef MOE_DETOK_H
#define MOE_DETOK_H

#include <stdbool.h>
#include <stddef.h>

#include "tokenizer.h"

typedef struct detok detok;

/* special: render CONTROL tokens as their text (true) or hide them. */
detok *detok_new(const tokenizer *t, bool special);
void detok_free(detok *d);
/* Forgets anything held back (start of a new sequence). */
void detok_reset(detok *d);

/* Adds token id; returns the bytes that are now ready (*len of them, maybe
 * 0), valid until the next call on d.  NULL if id is not a token id (d is
 * unchanged) or out of memory. */
const char *detok_push(detok *d, int id, size_t *len);
/* End of the sequence: returns whatever was held back (an incomplete
 * character, emitted as its raw bytes). */
const char *detok_flush(detok *d, size_t *len);

#endif
