/* The hand-written pre-tokenizers (coordinator/pretok.c) against PCRE2
 * running the same regexes, and the generated Unicode table against
 * PCRE2's (Debian 12: Unicode 14).
 *
 * 1. Every code point: our class (L/M/N/P/S, White_Space) equals PCRE2's,
 *    except code points PCRE2 does not know (unassigned in Unicode 14,
 *    assigned by 15.0/15.1).
 * 2. Random strings (only code points both agree on): both splitters give
 *    the same pieces, for deepseek-v3 and deepseek-llm.
 * 3. decode(encode(text)) == text for random text with the real
 *    DeepSeek-V3 vocabulary (the BPE loses nothing, on both of its paths). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pretok.h"
#include "tokenizer.h"
#include "unicode.h"

static pcre2_code *compile(const char *pat) {
    int e;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &e, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(e, msg, sizeof msg);
        fprintf(stderr, "pcre2_compile: %s at %zu in %s\n", (char *)msg, (size_t)off, pat);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

/* ---- 1. the class table ---- */

static int pcre_class(pcre2_code *const cat[5], pcre2_code *ws, pcre2_match_data *md, uint32_t cp) {
    unsigned char u[4];
    size_t n = utf8_encode(cp, u);
    int c = 0;
    for (int k = 0; k < 5; k++)
        if (pcre2_match(cat[k], u, n, 0, 0, md, NULL) >= 0) c = k + 1; /* enum ucat order */
    if (pcre2_match(ws, u, n, 0, 0, md, NULL) >= 0) c |= UCAT_WS;
    return c;
}

/* usable[cp]: our class equals PCRE2's. */
static unsigned char *check_table(void) {
    static const char *const pats[5] = {"^\\p{L}$", "^\\p{M}$", "^\\p{N}$", "^\\p{P}$", "^\\p{S}$"};
    pcre2_code *cat[5], *ws = compile("^\\s$"), *cn = compile("^\\p{Cn}$");
    for (int k = 0; k < 5; k++) cat[k] = compile(pats[k]);
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    unsigned char *usable = calloc(UNICODE_MAX, 1);
    int differ = 0, differ_known = 0;
    for (uint32_t cp = 0; cp < UNICODE_MAX; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue; /* not encodable in UTF-8 */
        int p = pcre_class(cat, ws, md, cp);
        /* PCRE2's \s keeps U+180E, which left White_Space in Unicode 6.3
         * (llama.cpp and the fixtures: not a space). */
        if (cp == 0x180E) p &= ~UCAT_WS;
        if (p == unicode_class(cp)) {
            usable[cp] = 1;
            continue;
        }
        differ++;
        unsigned char u[4];
        size_t n = utf8_encode(cp, u);
        if (pcre2_match(cn, u, n, 0, 0, md, NULL) < 0) {
            if (differ_known++ < 10) fprintf(stderr, "  U+%04X: ours %d, PCRE2 %d\n", cp, unicode_class(cp), p);
        }
    }
    printf("class table: %d code points differ from PCRE2 (Unicode 14), %d of them known to PCRE2\n",
           differ, differ_known);
    /* Unicode 15.0 added 4,489 characters and 15.1 627: only those. */
    CHECK(differ_known == 0, "%d code points PCRE2 knows have another class here", differ_known);
    CHECK(differ > 0 && differ <= 4489 + 627, "%d code points differ", differ);
    CHECK(unicode_class(0x2EBF0) == UCAT_L && unicode_class(0x31EF) == UCAT_S, "Unicode 15.1 additions");
    CHECK(unicode_class(0x1FAE9) == UCAT_NONE, "U+1FAE9 (Unicode 16) must have no class");
    CHECK(unicode_class(0x85) == UCAT_WS && unicode_class(0xFEFF) == UCAT_NONE, "NEL / BOM");
    CHECK(unicode_class(0x180E) == UCAT_NONE && unicode_class(0x200B) == UCAT_NONE, "U+180E, U+200B are not spaces");
    for (int k = 0; k < 5; k++) pcre2_code_free(cat[k]);
    pcre2_code_free(ws);
    pcre2_code_free(cn);
    pcre2_match_data_free(md);
    return usable;
}

/* ---- 2. splitting ---- */

typedef struct pieces {
    size_t off[4096]; /* start offset of each piece */
    size_t n;
    const char *base;
} pieces;

static bool collect(void *ctx, const char *p, size_t len) {
    pieces *ps = ctx;
    (void)len;
    if (ps->n < 4096) ps->off[ps->n++] = (size_t)(p - ps->base);
    return true;
}

/* Regex splitting with PCRE2, stage k over s[a..b). */
static void pcre_split(pcre2_code **re, int n_re, int k, const char *s, size_t a, size_t b,
                       pcre2_match_data *md, pieces *out) {
    if (a == b) return;
    if (k == n_re) {
        if (out->n < 4096) out->off[out->n++] = a;
        return;
    }
    size_t at = 0, gap = 0, len = b - a;
    const unsigned char *sub = (const unsigned char *)s + a;
    while (at < len) {
        int rc = pcre2_match(re[k], sub, len, at, 0, md, NULL);
        if (rc < 0) break;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t m0 = ov[0], m1 = ov[1]; /* md is reused by the recursion */
        if (m1 == m0) { /* cannot happen with these patterns */
            at = m1 + 1;
            continue;
        }
        pcre_split(re, n_re, k + 1, s, a + gap, a + m0, md, out);
        pcre_split(re, n_re, k + 1, s, a + m0, a + m1, md, out);
        at = gap = m1;
    }
    pcre_split(re, n_re, k + 1, s, a + gap, b, md, out);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

/* Code point ranges the random text draws from: the cases the regexes
 * care about (ASCII letters, digits, punctuation, \r \n and other spaces,
 * marks, CJK inside and outside the pre-tokenizer ranges, kana, Hangul,
 * other scripts and numerals, symbols, emoji, format characters). */
static const uint32_t pools[][2] = {
    {'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {'!', '/'}, {':', '@'}, {'[', '`'}, {'{', '~'},
    {' ', ' '}, {' ', ' '}, {'\n', '\n'}, {'\r', '\r'}, {'\t', '\t'}, {0x0B, 0x0C}, {0x1C, 0x1F},
    {0x85, 0x85}, {0xA0, 0xBF}, {0xC0, 0x24F}, {0x300, 0x36F}, {0x370, 0x3FF}, {0x400, 0x4FF},
    {0x5D0, 0x5EA}, {0x600, 0x6FF}, {0x900, 0x97F}, {0xE00, 0xE5B}, {0x1680, 0x1680},
    {0x2000, 0x200F}, {0x2010, 0x206F}, {0x2070, 0x209F}, {0x20A0, 0x20C0}, {0x2100, 0x218F},
    {0x2190, 0x23FF}, {0x2460, 0x24FF}, {0x3000, 0x303F}, {0x3040, 0x30FF}, {0x3100, 0x31FF},
    {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0x4E00, 0x9FA5}, {0x9FA0, 0x9FAF}, {0xAC00, 0xD7A3},
    {0xFB00, 0xFB4F}, {0xFE00, 0xFE0F}, {0xFEFF, 0xFEFF}, {0xFF00, 0xFFEF}, {0xFFF0, 0xFFFF},
    {0x10400, 0x1044F}, {0x1D400, 0x1D7FF}, {0x1F300, 0x1FAFF}, {0x1F1E6, 0x1F1FF},
    {0x20000, 0x2A6DF}, {0xE0000, 0xE007F}, {0xF0000, 0xF00FF},
};

static size_t random_text(char *buf, size_t cap, const unsigned char *usable) {
    size_t n = 0, want = 1 + rnd(60);
    for (size_t i = 0; i < want;) {
        const uint32_t *p = pools[rnd(sizeof pools / sizeof pools[0])];
        uint32_t cp = p[0] + rnd(p[1] - p[0] + 1);
        if (!usable[cp] || (cp >= 0xD800 && cp <= 0xDFFF) || n + 4 >= cap) continue;
        int run = rnd(4) == 0 ? 1 + (int)rnd(6) : 1; /* runs make digit groups, space runs */
        for (int r = 0; r < run && i < want && n + 4 < cap; r++, i++)
            n += utf8_encode(cp, (unsigned char *)buf + n);
    }
    buf[n] = 0;
    return n;
}

/* deepseek-llm's pattern 2 for PCRE2: its letter class written out from
 * llama.cpp's pattern as std::wregex reads it (see pretok.c: "0-U" and
 * "f" from the mis-escaped U+10400 range, so 0x30-0x5A).  The set was
 * compared with llama.cpp's pattern text when written; this test checks
 * the matching logic. */
static char *llm_letter_class(void) {
    static const uint32_t r[][2] = {
        {0x30, 0x5A}, {0x61, 0x7A}, {0xB5, 0xB5}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x1BA},
        {0x1BC, 0x1BF}, {0x1C4, 0x293}, {0x295, 0x2AF}, {0x370, 0x373}, {0x376, 0x377},
        {0x37B, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C},
        {0x38E, 0x3A1}, {0x3A3, 0x3F5}, {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556},
        {0x10A0, 0x10C5}, {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF},
        {0x1D00, 0x1D2B}, {0x1D6B, 0x1D77}, {0x1D79, 0x1D9A}, {0x1E00, 0x1F15}, {0x1F18, 0x1F1D},
        {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59}, {0x1F5B, 0x1F5B},
        {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC}, {0x1FBE, 0x1FBE},
        {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB}, {0x1FE0, 0x1FEC},
        {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113},
        {0x2115, 0x2115}, {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128},
        {0x212A, 0x212D}, {0x212F, 0x2134}, {0x2139, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149},
        {0x214E, 0x214E}, {0x2183, 0x2184}, {0x2C00, 0x2C7B}, {0x2C7E, 0x2CE4}, {0x2CEB, 0x2CEE},
        {0x2CF2, 0x2CF3}, {0xA640, 0xA66D}, {0xA680, 0xA69B}, {0xA722, 0xA76F}, {0xA771, 0xA787},
        {0xA78B, 0xA78E}, {0xAB70, 0xABBF}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17}, {0xFF21, 0xFF3A},
        {0xFF41, 0xFF5A}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2},
        {0x10CC0, 0x10CF2}, {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
    };
    size_t cap = 64 + 40 * (sizeof r / sizeof r[0]);
    char *s = malloc(cap);
    size_t n = (size_t)snprintf(s, cap, "\\s?[");
    for (size_t k = 0; k < sizeof r / sizeof r[0]; k++)
        n += (size_t)snprintf(s + n, cap - n, "\\x{%X}-\\x{%X}", r[k][0], r[k][1]);
    snprintf(s + n, cap - n, "]+");
    return s;
}

static void check_splitters(const unsigned char *usable) {
    char *llm2 = llm_letter_class();
    const char *v3[] = {
        "\\p{N}{1,3}",
        "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
        "| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    };
    /* deepseek-llm as llama.cpp runs it: non-ASCII spaces never match a
     * literal range (so U+3000 is left out of pattern 3, and pattern 5
     * excludes \s), and $ is the end of the piece. */
    const char *llm[] = {
        "[\\r\\n]",
        llm2,
        "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3001}-\\x{3002}]+",
        "\\s+\\z",
        "(?:(?!\\s)[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}])+",
        "\\p{N}+",
    };
    struct { int kind; const char **pats; int n; const char *name; } sets[] = {
        {PRETOK_DEEPSEEK_V3, v3, 3, "deepseek-v3"},
        {PRETOK_DEEPSEEK_LLM, llm, 6, "deepseek-llm"},
    };
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    for (int s = 0; s < 2; s++) {
        pcre2_code *re[6];
        bool ok = true;
        for (int k = 0; k < sets[s].n; k++) ok &= (re[k] = compile(sets[s].pats[k])) != NULL;
        CHECK(ok, "%s: PCRE2 patterns compile", sets[s].name);
        if (!ok) continue;
        pretok_scratch sc = {0};
        int same = 0, total = 3000, shown = 0;
        char text[512];
        for (int it = 0; it < total; it++) {
            size_t n = random_text(text, sizeof text, usable);
            pieces a = {.base = text}, b = {.base = text};
            pretok_split(sets[s].kind, text, n, &sc, collect, &a);
            pcre_split(re, sets[s].n, 0, text, 0, n, md, &b);
            bool eq = a.n == b.n && !memcmp(a.off, b.off, a.n * sizeof a.off[0]);
            same += eq;
            if (!eq && shown++ < 5) {
                fprintf(stderr, "  %s differs on \"", sets[s].name);
                for (size_t i = 0; i < n; i++) fprintf(stderr, "\\x%02x", (unsigned char)text[i]);
                fprintf(stderr, "\"\n    ours:");
                for (size_t i = 0; i < a.n; i++) fprintf(stderr, " %zu", a.off[i]);
                fprintf(stderr, "\n    pcre:");
                for (size_t i = 0; i < b.n; i++) fprintf(stderr, " %zu", b.off[i]);
                fprintf(stderr, "\n");
            }
        }
        printf("%s: %d/%d random texts split exactly as PCRE2 splits them\n", sets[s].name, same, total);
        CHECK(same == total, "%s: %d of %d differ", sets[s].name, total - same, total);
        pretok_free(&sc);
        for (int k = 0; k < sets[s].n; k++) pcre2_code_free(re[k]);
    }
    pcre2_match_data_free(md);
    free(llm2);
}

/* ---- 3. round trip ---- */

static void check_round_trip(const unsigned char *usable) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/tokenizer/deepseek-v3-vocab.gguf", fixtures_dir());
    tokenizer *t = tokenizer_load_file(path, err, sizeof err);
    CHECK(t != NULL, "%s", err);
    if (!t) return;
    int same = 0, total = 2000;
    char text[2048];
    for (int it = 0; it < total; it++) {
        size_t n = random_text(text, 512, usable);
        if (it % 10 == 0) /* some long pieces: the heap path of the BPE */
            for (int r = 0; r < 6; r++) n += random_text(text + n, 256, usable);
        size_t m, k;
        int *ids = tokenizer_encode(t, text, n, false, false, &m);
        char *back = ids ? tokenizer_decode(t, ids, m, true, &k) : NULL;
        bool eq = back && k == n && !memcmp(back, text, n);
        same += eq;
        CHECK(eq, "round trip %d differs", it);
        free(ids);
        free(back);
    }
    printf("decode(encode(text)) == text: %d/%d random texts\n", same, total);
    /* Invalid UTF-8 is read as U+FFFD per bad byte, as llama.cpp does. */
    size_t m, k;
    int *ids = tokenizer_encode(t, "a\xff" "b\xe4\xb8", 5, false, false, &m);
    char *back = ids ? tokenizer_decode(t, ids, m, true, &k) : NULL;
    CHECK(back && k == 11 && !memcmp(back, "a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd", 11),
          "invalid UTF-8 becomes U+FFFD");
    free(ids);
    free(back);
    tokenizer_free(t);
}

int main(void) {
    unsigned char *usable = check_table();
    check_splitters(usable);
    check_round_trip(usable);
    free(usable);
    return check_summary("test_tok_pretok");
}
