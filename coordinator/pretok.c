/* Pre-tokenizers as exact hand-written matchers.
 *
 * A pre-tokenizer is a list of regexes applied in turn.  Each regex is run
 * over every piece made by the previous ones (never across two pieces),
 * with leftmost-first search semantics; the matches and the text between
 * them both become pieces.  Here each regex is a function that says how
 * long a match starting at code point i is (0: no match at i), written out
 * from the regex with its backtracking worked through by hand; split()
 * does the search and recursion.  Why not PCRE2: Debian's PCRE2 10.42
 * knows only Unicode 14, and llama.cpp (so the expected ids) uses Unicode
 * 15.1 categories; these matchers use our own 15.1 table and split as fast
 * as PCRE2 with JIT (100-230 MB/s here, against 15-20 MB/s for the BPE
 * after it).  tests/test_tok_pretok.c checks them against PCRE2 on random
 * text.
 *
 * deepseek-v3 (llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM):
 *   1. \p{N}{1,3}
 *   2. [一-龥぀-ゟ゠-ヿ]+          (U+4E00-9FA5, U+3040-309F, U+30A0-30FF)
 *   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+
 *      |[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*
 *      |\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * deepseek-llm (LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM), with the meaning that
 * llama.cpp's std::wregex gives these patterns:
 *   1. [\r\n]
 *   2. \s?[LETTERS]+   (the cased-letter ranges below)
 *   3. \s?[!-/:-~！-／：-～‘-‟　-。]+
 *   4. \s+$
 *   5. [一-龥ࠀ-一가-퟿]+
 *   6. \p{N}+
 *   Two quirks of llama.cpp are kept so the ids match it: its pattern 2
 *   spells U+10400-U+1044F as "\\U00010400-\\U0001044f", which std::regex
 *   reads as the characters U 0 0 0 1 0 4 0, the range 0-U and 0 0 0 1 0 4
 *   4 f; and it replaces every non-ASCII White_Space character by U+000B
 *   before matching, so such characters (U+3000 among them) match \s but
 *   never a literal range. */
#include <stdlib.h>
#include <string.h>

#include "pretok.h"
#include "unicode.h"

/* What a matcher sees: the code points of the text, their classes, and
 * the end of the piece being searched (matches never cross it). */
typedef struct span {
    const uint32_t *cp;
    const uint8_t *cls;
    size_t end;
} span;

/* A stage searches for its next match at or after i: returns its start
 * (s->end if none) and its length in *len.  Each is a loop around an
 * inlined matcher (SEARCH below), so no call is made per character. */
typedef size_t (*search_fn)(const span *s, size_t i, size_t *len);

#define SEARCH(name, match)                                  \
    static size_t name(const span *s, size_t i, size_t *len) { \
        for (; i < s->end; i++)                                \
            if ((*len = match(s, i))) return i;                \
        return s->end;                                         \
    }

static inline int cat(const span *s, size_t i) { return s->cls[i] & UCAT_MASK; }
static inline bool is_ws(const span *s, size_t i) { return s->cls[i] & UCAT_WS; }
static inline bool is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* ---- deepseek-v3 ---- */

static size_t v3_digits(const span *s, size_t i) {
    size_t j = i;
    while (j < s->end && j - i < 3 && cat(s, j) == UCAT_N) j++;
    return j - i;
}

static inline bool v3_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x3040 && c <= 0x30FF);
}

static size_t v3_cjk_run(const span *s, size_t i) {
    size_t j = i;
    while (j < s->end && v3_cjk(s->cp[j])) j++;
    return j - i;
}

static inline bool ascii_punct(uint32_t c) {
    return (c >= '!' && c <= '/') || (c >= ':' && c <= '@') || (c >= '[' && c <= '`') ||
           (c >= '{' && c <= '~');
}
static inline bool ascii_letter(uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static inline bool is_lm(const span *s, size_t i) {
    int c = cat(s, i);
    return c == UCAT_L || c == UCAT_M;
}
static inline bool is_ps(const span *s, size_t i) {
    int c = cat(s, i);
    return c == UCAT_P || c == UCAT_S;
}

static size_t v3_main(const span *s, size_t i) {
    const uint32_t *cp = s->cp;
    size_t end = s->end, j;
    uint32_t c0 = cp[i];
    bool has1 = i + 1 < end;

    /* [ASCII punctuation][A-Za-z]+ */
    if (ascii_punct(c0) && has1 && ascii_letter(cp[i + 1])) {
        for (j = i + 1; j < end && ascii_letter(cp[j]); j++) {}
        return j - i;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : the optional prefix is tried
     * first; without it, c0 itself must start the letter run. */
    int c0cat = cat(s, i);
    if (!is_crlf(c0) && c0cat != UCAT_L && c0cat != UCAT_P && c0cat != UCAT_S && has1 &&
        is_lm(s, i + 1)) {
        for (j = i + 2; j < end && is_lm(s, j); j++) {}
        return j - i;
    }
    if (c0cat == UCAT_L || c0cat == UCAT_M) {
        for (j = i + 1; j < end && is_lm(s, j); j++) {}
        return j - i;
    }
    /*  ?[\p{P}\p{S}]+[\r\n]* */
    j = (c0 == ' ' && has1 && is_ps(s, i + 1)) ? i + 1 : i;
    if (is_ps(s, j)) {
        while (j < end && is_ps(s, j)) j++;
        while (j < end && is_crlf(cp[j])) j++;
        return j - i;
    }
    if (!is_ws(s, i)) return 0;
    /* The whitespace run [i, w) decides the three whitespace branches.
     * \s*[\r\n]+ : \s* backtracks to the last \r or \n of the run, and
     * [\r\n]+ then takes just that one (the next character is not \r\n). */
    size_t w = i, last_nl = 0;
    for (; w < end && is_ws(s, w); w++)
        if (is_crlf(cp[w])) last_nl = w + 1;
    if (last_nl) return last_nl - i;
    /* \s+(?!\S) : the whole run at the end of the piece, else all but its
     * last character (which stands before a non-space) if that leaves one. */
    if (w == end) return w - i;
    if (w - i >= 2) return w - 1 - i;
    /* \s+ */
    return w - i;
}

/* ---- deepseek-llm ---- */

static size_t llm_newline(const span *s, size_t i) { return is_crlf(s->cp[i]) ? 1 : 0; }

/* Pattern 2's letter set as llama.cpp's regex means it (see the top). */
static const uint32_t llm_letters[][2] = {
    {0x30, 0x55}, {0x61, 0x7A}, /* A-Z lies within 0-U plus V-Z below */
    {0x56, 0x5A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA}, {0x1BC, 0x1BF},
    {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377}, {0x37B, 0x37D},
    {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1},
    {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x10A0, 0x10C5},
    {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1D00, 0x1D2B},
    {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D}, {0x1F20, 0x1F45},
    {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D},
    {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4},
    {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4},
    {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115},
    {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D},
    {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E},
    {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3},
    {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787}, {0xA78B, 0xA78E},
    {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A},
    {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
};

static bool in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n) {
    for (size_t k = 0; k < n; k++)
        if (c >= r[k][0] && c <= r[k][1]) return true;
    return false;
}

static bool llm_letter(const span *s, size_t i) {
    uint32_t c = s->cp[i];
    if (c < 0x80) return (c >= 0x30 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A);
    return in_ranges(c, llm_letters, sizeof llm_letters / sizeof llm_letters[0]);
}

static bool llm_punct(const span *s, size_t i) {
    uint32_t c = s->cp[i];
    if (c < 0x80) return (c >= '!' && c <= '/') || (c >= ':' && c <= '~');
    return (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF5E) ||
           (c >= 0x2018 && c <= 0x201F) || (c >= 0x3001 && c <= 0x3002); /* U+3000 is \s */
}

/* \s?[set]+ */
static size_t ws_opt_run(const span *s, size_t i, bool (*in_set)(const span *, size_t)) {
    size_t j = i;
    if (is_ws(s, i) && i + 1 < s->end && in_set(s, i + 1)) j = i + 1;
    if (!in_set(s, j)) return 0;
    while (j < s->end && in_set(s, j)) j++;
    return j - i;
}

static size_t llm_words(const span *s, size_t i) { return ws_opt_run(s, i, llm_letter); }
static size_t llm_puncts(const span *s, size_t i) { return ws_opt_run(s, i, llm_punct); }

/* \s+$ searched from i: the whitespace run that ends the piece. */
static size_t llm_trailing_ws_search(const span *s, size_t i, size_t *len) {
    size_t j = s->end;
    while (j > i && is_ws(s, j - 1)) j--;
    *len = s->end - j;
    return *len ? j : s->end;
}

static bool llm_cjk_at(const span *s, size_t i) {
    uint32_t c = s->cp[i];
    if (is_ws(s, i)) return false;
    return (c >= 0x800 && c <= 0x9FA5) || (c >= 0xAC00 && c <= 0xD7FF);
}

static size_t llm_cjk(const span *s, size_t i) {
    size_t j = i;
    while (j < s->end && llm_cjk_at(s, j)) j++;
    return j - i;
}

static size_t llm_numbers(const span *s, size_t i) {
    size_t j = i;
    while (j < s->end && cat(s, j) == UCAT_N) j++;
    return j - i;
}

/* ---- driver ---- */

SEARCH(v3_digits_search, v3_digits)
SEARCH(v3_cjk_search, v3_cjk_run)
SEARCH(v3_main_search, v3_main)
SEARCH(llm_newline_search, llm_newline)
SEARCH(llm_words_search, llm_words)
SEARCH(llm_puncts_search, llm_puncts)
SEARCH(llm_cjk_search, llm_cjk)
SEARCH(llm_numbers_search, llm_numbers)

typedef struct pretok_def {
    const char *name;
    const search_fn *stages;
    int n_stages;
} pretok_def;

static const search_fn v3_stages[] = {v3_digits_search, v3_cjk_search, v3_main_search};
static const search_fn llm_stages[] = {llm_newline_search, llm_words_search, llm_puncts_search,
                                       llm_trailing_ws_search, llm_cjk_search, llm_numbers_search};
static const pretok_def defs[] = {
    [PRETOK_DEEPSEEK_V3] = {"deepseek-v3", v3_stages, 3},
    [PRETOK_DEEPSEEK_LLM] = {"deepseek-llm", llm_stages, 6},
};

int pretok_from_name(const char *name, size_t len) {
    for (int k = 0; k < (int)(sizeof defs / sizeof defs[0]); k++)
        if (strlen(defs[k].name) == len && !memcmp(defs[k].name, name, len)) return k;
    return -1;
}

const char *pretok_name(int kind) { return defs[kind].name; }

void pretok_free(pretok_scratch *s) {
    free(s->cp);
    free(s->cls);
    free(s->off);
    memset(s, 0, sizeof *s);
}

typedef struct splitter {
    const pretok_def *def;
    const char *text;
    const uint32_t *off;
    span sp;
    pretok_emit_fn emit;
    void *ctx;
} splitter;

/* Applies stage k (and the later ones) to code points [a, b). */
static bool split(splitter *st, int k, size_t a, size_t b) {
    if (a == b) return true;
    if (k == st->def->n_stages)
        return st->emit(st->ctx, st->text + st->off[a], st->off[b] - st->off[a]);
    search_fn search = st->def->stages[k];
    size_t gap = a, i = a, len;
    for (;;) {
        st->sp.end = b; /* the recursion changed it */
        if ((i = search(&st->sp, i, &len)) >= b) break;
        if (!split(st, k + 1, gap, i) || !split(st, k + 1, i, i + len)) return false;
        i += len;
        gap = i;
    }
    return split(st, k + 1, gap, b);
}

bool pretok_split(int kind, const char *text, size_t n, pretok_scratch *s, pretok_emit_fn emit,
                  void *ctx) {
    if (n == 0) return true;
    if (n > s->cap) { /* at most one code point per byte */
        size_t cap = n < 256 ? 256 : n;
        uint32_t *cp = realloc(s->cp, cap * sizeof *cp);
        if (cp) s->cp = cp;
        uint8_t *cls = realloc(s->cls, cap);
        if (cls) s->cls = cls;
        uint32_t *off = realloc(s->off, (cap + 1) * sizeof *off);
        if (off) s->off = off;
        if (!cp || !cls || !off) return false;
        s->cap = cap;
    }
    const unsigned char *u = (const unsigned char *)text;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t used;
        uint32_t c = u[i] < 0x80 ? (used = 1, u[i]) : utf8_decode(u + i, n - i, &used);
        s->cp[m] = c;
        s->cls[m] = unicode_class(c);
        s->off[m++] = (uint32_t)i;
        i += used;
    }
    s->off[m] = (uint32_t)n;
    splitter st = {&defs[kind], text, s->off, {s->cp, s->cls, m}, emit, ctx};
    return split(&st, 0, 0, m);
}
