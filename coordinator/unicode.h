/* Unicode facts the tokenizer needs: the general category class and the
 * White_Space flag of every code point (Unicode 15.1, as llama.cpp has
 * them), and lenient UTF-8 decoding.
 *
 * The class table is generated (unicode_tables.c, by
 * gen_unicode_tables.py) as two stages: a 256-code-point block index,
 * then rows of one class byte per code point. */
#ifndef MOE_UNICODE_H
#define MOE_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* General category class, low 3 bits of a class byte.  UCAT_NONE covers
 * C* (controls, format, private use, surrogates), Z* and code points
 * unassigned in Unicode 15.1. */
enum ucat {
    UCAT_NONE = 0,
    UCAT_L = 1, /* letters */
    UCAT_M = 2, /* marks */
    UCAT_N = 3, /* numbers: Nd, Nl, No */
    UCAT_P = 4, /* punctuation */
    UCAT_S = 5, /* symbols */
};
#define UCAT_MASK 7
#define UCAT_WS 8 /* White_Space property (regex \s) */

#define UNICODE_MAX 0x110000

extern const uint8_t unicode_class_index[UNICODE_MAX / 256];
extern const uint8_t unicode_class_rows[][256];

/* Class byte (enum ucat | UCAT_WS) of code point cp; 0 beyond U+10FFFF. */
static inline uint8_t unicode_class(uint32_t cp) {
    if (cp >= UNICODE_MAX) return 0;
    return unicode_class_rows[unicode_class_index[cp >> 8]][cp & 255];
}

#define UNICODE_REPLACEMENT 0xFFFD

/* Decodes one code point from s[0..n) (n >= 1) the way llama.cpp does:
 * a lead byte with the right number of continuation bytes gives its code
 * point (overlong forms and surrogates are not rejected); anything else
 * (stray continuation byte, truncated sequence, bytes F8-FF, or a value
 * above U+10FFFF) gives U+FFFD and consumes one byte.  *used gets the
 * bytes consumed. */
uint32_t utf8_decode(const unsigned char *s, size_t n, size_t *used);

/* Writes cp (<= U+10FFFF) as UTF-8 into out[0..4); returns its length. */
size_t utf8_encode(uint32_t cp, unsigned char *out);

/* Length of the valid UTF-8 prefix of s[0..n) that ends on a character
 * boundary, strictly (no overlongs, surrogates or values > U+10FFFF).
 * Used by the streaming decoder to hold back an incomplete character. */
size_t utf8_valid_prefix(const unsigned char *s, size_t n);

/* Bytes of the incomplete-but-possibly-valid character at the end of
 * s[0..n): 0 if s ends on a complete character or with bytes that can
 * never become valid. */
size_t utf8_incomplete_tail(const unsigned char *s, size_t n);

#endif
