/* UTF-8 helpers for the tokenizer and the streaming decoder. */
#include "unicode.h"

uint32_t utf8_decode(const unsigned char *s, size_t n, size_t *used) {
    unsigned c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        *used = 1;
        return c;
    }
    /* Lead byte: 110xxxxx, 1110xxxx, 11110xxx.  llama.cpp takes any of
     * these with enough continuation bytes, without checking overlongs or
     * surrogates; 10xxxxxx and 11111xxx are invalid. */
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else goto bad;
    if (len > n) goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    /* F5-F7 leads would give values past U+10FFFF, which llama.cpp cannot
     * re-encode; treat them as invalid bytes. */
    if (cp >= UNICODE_MAX) goto bad;
    *used = len;
    return cp;
bad:
    *used = 1;
    return UNICODE_REPLACEMENT;
}

size_t utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Strict UTF-8 (RFC 3629): sequence length for lead byte c (0 if c can
 * not start a character) and the allowed range of the second byte. */
static size_t strict_len(unsigned c, unsigned *lo, unsigned *hi) {
    *lo = 0x80, *hi = 0xBF;
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return 2;
    if (c < 0xF0) {
        if (c == 0xE0) *lo = 0xA0;
        if (c == 0xED) *hi = 0x9F;
        return 3;
    }
    if (c < 0xF5) {
        if (c == 0xF0) *lo = 0x90;
        if (c == 0xF4) *hi = 0x8F;
        return 4;
    }
    return 0;
}

/* Number of bytes of s[0..n) that form a valid (possibly incomplete)
 * prefix of one strict UTF-8 character starting at s[0]. */
static size_t strict_prefix(const unsigned char *s, size_t n, size_t *need) {
    unsigned lo, hi;
    size_t len = strict_len(s[0], &lo, &hi);
    *need = len;
    if (len == 0) return 0;
    size_t i = 1;
    for (; i < len && i < n; i++) {
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return 0;
    }
    return i;
}

size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t need, got = strict_prefix(s + i, n - i, &need);
        if (got == 0 || got < need) break;
        i += got;
    }
    return i;
}

size_t utf8_incomplete_tail(const unsigned char *s, size_t n) {
    /* A held-back tail is at most 3 bytes: a lead byte and up to two
     * continuation bytes of a 4-byte character. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        const unsigned char *p = s + n - k;
        if ((*p & 0xC0) == 0x80) continue; /* continuation: look further back */
        size_t need, got = strict_prefix(p, k, &need);
        return (got == k && need > k) ? k : 0;
    }
    return 0;
}
