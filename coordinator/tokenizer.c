/* Byte-level BPE tokenizer from GGUF metadata.
 *
 * Load: token texts go into one arena with a hash map text -> id; every
 * merge "L R" becomes an entry (id(L), id(R)) -> rank of a second hash
 * map (and merge_result[rank] = id(LR)), so BPE works on ids and never
 * builds strings.  A merge whose result is not in the vocabulary gets a
 * "virtual" id past n_vocab (llama.cpp merges by text, so such a symbol
 * can still merge further); a virtual symbol left at the end is emitted
 * as llama.cpp does.  No per-token allocation: loading the 129k-token
 * DeepSeek-V3 vocabulary takes about 0.04 s.
 *
 * Encode: special-token split (llama.cpp's order: longest token text
 * first) -> each plain fragment re-encoded as llama.cpp reads it (bad
 * bytes -> U+FFFD) -> pre-tokenizer pieces -> bytes -> BPE: repeatedly
 * merge the adjacent pair of lowest rank, leftmost first on ties (a linear
 * scan for short pieces, a heap for long ones).  Most pairs BPE asks
 * about have no merge; a small Bloom filter answers those without
 * touching the merge map, which does not fit in the CPU cache. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pretok.h"
#include "tokenizer.h"
#include "unicode.h"

/* Merge-map slots are packed in 64 bits so the map (the BPE's hot, randomly
 * read data) is half as big: (left + 1) << 43 | (right + 1) << 22 | rank;
 * 0 is empty.  So symbol ids must stay below 2^21 - 1 and merge ranks below
 * 2^22; the merge's result is merge_result[rank]. */
#define SYM_BITS 21
#define RANK_BITS 22
#define MAX_SYMS ((1u << SYM_BITS) - 2)
#define MAX_MERGES (1u << RANK_BITS)
static inline uint64_t pair_key(int left, int right) {
    return ((uint64_t)(left + 1) << SYM_BITS | (uint64_t)(right + 1)) << RANK_BITS;
}

/* Special-token trie node; children are a sibling list (few per node). */
typedef struct trie_node {
    int32_t child;   /* first child node, -1 if none */
    int32_t sibling; /* next sibling node, -1 if none */
    int32_t token;   /* token ending here, -1 if none */
    uint8_t byte;    /* byte on the edge into this node */
} trie_node;

struct tokenizer {
    int n_vocab;         /* tokens in tokenizer.ggml.tokens */
    int n_sym;           /* n_vocab + virtual symbols (merge results not in the vocab) */
    char *text;          /* arena: byte-level text of every symbol, NUL after each */
    uint32_t *text_off;  /* [n_sym + 1] offset of symbol i's text in text */
    size_t text_cap;     /* bytes allocated for text */
    char *piece;         /* arena: decoded bytes of every token (tokenizer_piece, special) */
    uint32_t *piece_off; /* [n_vocab + 1] offset of token i's piece */
    uint8_t *type;       /* [n_vocab] enum tok_type */
    uint32_t *map;       /* text -> symbol id + 1 (0 = empty), open addressing */
    uint32_t map_mask;   /* slots - 1 (slots is a power of two) */
    uint64_t *merges;    /* packed (left, right, rank) slots, linear probing */
    uint64_t n_slots;    /* slots in merges (70% full: small enough to stay in cache) */
    int32_t *byte_pair_rank; /* [256 * 256] rank of merging two bytes' symbols, -1 if none */
    uint64_t *pair_filter;   /* [FILTER_BITS / 64] Bloom filter of the merge pairs: most
                              * pairs BPE asks about have no merge, and this small
                              * bitmap stays in cache where the merge map does not */
    uint32_t *merge_result; /* [n_merges] symbol id that merge rank r makes */
    int byte_sym[256];   /* symbol id of each byte's GPT-2 character */
    trie_node *trie;     /* node 0 = root; tokens split out of text */
    int n_trie;          /* nodes in trie */
    bool has_user_defined; /* some token is USER_DEFINED (split even without parse_special) */
    int *special_rank;   /* [n_vocab] order of the special split (longer text first), -1 if none */
    int pre;             /* enum pretok_kind */
    int bos, eos;        /* special ids, -1 if none */
    bool add_bos, add_eos;
    char *chat_template; /* NUL-terminated copy, or NULL */
};

/* ---- hashing ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static inline uint64_t hash_pair(uint64_t key) { /* MurmurHash3's fmix64 */
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    return key ^ (key >> 33);
}

static inline const char *sym_text(const tokenizer *t, int id, size_t *len) {
    *len = t->text_off[id + 1] - t->text_off[id] - 1; /* without the NUL */
    return t->text + t->text_off[id];
}

static int map_find(const tokenizer *t, const char *s, size_t n) {
    for (uint64_t h = hash_bytes(s, n);; h++) {
        uint32_t v = t->map[h & t->map_mask];
        if (!v) return -1;
        size_t len;
        const char *p = sym_text(t, (int)v - 1, &len);
        if (len == n && !memcmp(p, s, n)) return (int)v - 1;
    }
}

/* Inserts id unless its text is already there (llama.cpp keeps the last
 * of duplicate texts; real vocabularies have none).  Map never fills: it
 * is sized for every possible symbol. */
static void map_insert(tokenizer *t, int id) {
    size_t n;
    const char *s = sym_text(t, id, &n);
    for (uint64_t h = hash_bytes(s, n);; h++) {
        uint32_t *slot = &t->map[h & t->map_mask];
        if (!*slot) {
            *slot = (uint32_t)id + 1;
            return;
        }
        size_t len;
        const char *p = sym_text(t, (int)*slot - 1, &len);
        if (len == n && !memcmp(p, s, n)) {
            *slot = (uint32_t)id + 1;
            return;
        }
    }
}

#define FILTER_BITS (1u << 20) /* 128 KiB: ~11% false positives for 128k merges */

static inline bool filter_has(const uint64_t *f, uint64_t h) {
    uint32_t bit = (uint32_t)h & (FILTER_BITS - 1); /* low bits; the map uses high bits */
    return f[bit >> 6] >> (bit & 63) & 1;
}

/* First slot for hash h: h scaled to [0, n_slots) ("fastrange"). */
static inline uint64_t merge_slot0(const tokenizer *t, uint64_t h) {
    return (uint64_t)(((unsigned __int128)h * t->n_slots) >> 64);
}

/* Rank of the merge (left, right), or -1. */
static inline int64_t merge_rank(const tokenizer *t, int left, int right) {
    uint64_t key = pair_key(left, right), h = hash_pair(key);
    if (!filter_has(t->pair_filter, h)) return -1;
    for (uint64_t i = merge_slot0(t, h);; i = i + 1 == t->n_slots ? 0 : i + 1) {
        uint64_t v = t->merges[i];
        if ((v & ~(uint64_t)(MAX_MERGES - 1)) == key) return (int64_t)(v & (MAX_MERGES - 1));
        if (!v) return -1;
    }
}

/* ---- GPT-2 byte <-> unicode ---- */

/* The printable bytes stand for themselves; the other 68 are shifted to
 * U+0100.. in byte order, so that no token text holds a space or control. */
static uint32_t byte_to_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF))) n++;
    return 256 + (uint32_t)n;
}

/* ---- loading ---- */

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* Appends a NUL-terminated string to the text arena as symbol t->n_sym. */
static bool add_symbol(tokenizer *t, const char *s, size_t n) {
    size_t off = t->text_off[t->n_sym];
    if (off + n + 1 > t->text_cap) {
        size_t cap = (off + n + 1) * 2;
        char *p = realloc(t->text, cap);
        if (!p) return false;
        t->text = p;
        t->text_cap = cap;
    }
    memcpy(t->text + off, s, n);
    t->text[off + n] = 0;
    if (off + n + 1 > UINT32_MAX) return false;
    t->text_off[++t->n_sym] = (uint32_t)(off + n + 1);
    return true;
}

/* Symbol id of text s, adding a virtual symbol if it is not a token. */
static int intern(tokenizer *t, const char *s, size_t n) {
    int id = map_find(t, s, n);
    if (id >= 0) return id;
    if (!add_symbol(t, s, n)) return -1;
    map_insert(t, t->n_sym - 1);
    return t->n_sym - 1;
}

static bool load_special_ids(tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    static const char *const keys[2] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    int *out[2] = {&t->bos, &t->eos};
    for (int k = 0; k < 2; k++) {
        int64_t v;
        *out[k] = -1;
        if (!gguf_get_int(f, keys[k], &v)) continue;
        if (v < 0 || v >= t->n_vocab)
            return fail(err, errlen, "%s = %ld is not a token id", keys[k], (long)v);
        *out[k] = (int)v;
    }
    t->add_bos = t->add_eos = false;
    gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos);
    gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos);
    if (t->add_bos && t->bos < 0)
        return fail(err, errlen, "tokenizer.ggml.add_bos_token is true but there is no bos_token_id");
    if (t->add_eos && t->eos < 0)
        return fail(err, errlen, "tokenizer.ggml.add_eos_token is true but there is no eos_token_id");
    return true;
}

/* Decoded bytes of every token, as llama_token_to_piece(special=true). */
static bool build_pieces(tokenizer *t) {
    int inv[324]; /* code point -> byte for the byte-level characters */
    for (int c = 0; c < 324; c++) inv[c] = -1;
    for (int b = 0; b < 256; b++) inv[byte_to_cp(b)] = b;

    size_t cap = t->text_off[t->n_vocab] + 64, used = 0;
    t->piece = malloc(cap);
    t->piece_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->piece_off);
    if (!t->piece || !t->piece_off) return false;
    for (int id = 0; id < t->n_vocab; id++) {
        size_t n;
        const unsigned char *s = (const unsigned char *)sym_text(t, id, &n);
        /* A piece is at most the text's length, except for the
         * [UNK_BYTE_0x..] spelling of unknown characters (< 30x). */
        if (used + 30 * n + 1 > cap) {
            cap = (used + 30 * n + 1) * 2;
            char *p = realloc(t->piece, cap);
            if (!p) return false;
            t->piece = p;
        }
        t->piece_off[id] = (uint32_t)used;
        char *out = t->piece + used;
        size_t m = 0;
        switch (t->type[id]) {
        case TOK_NORMAL:
            for (size_t i = 0; i < n;) {
                size_t k;
                uint32_t c = utf8_decode(s + i, n - i, &k);
                if (c < 324 && inv[c] >= 0 && c != UNICODE_REPLACEMENT) {
                    out[m++] = (char)inv[c];
                } else { /* llama.cpp spells a character outside the table so */
                    m += (size_t)sprintf(out + m, "[UNK_BYTE_0x");
                    for (size_t j = 0; j < k; j++) m += (size_t)sprintf(out + m, "%02x", s[i + j]);
                    memcpy(out + m, s + i, k);
                    m += k;
                    out[m++] = ']';
                }
                i += k;
            }
            break;
        case TOK_CONTROL: case TOK_USER_DEFINED: case TOK_UNKNOWN:
            memcpy(out, s, n);
            m = n;
            break;
        case TOK_BYTE: { /* "<0xHH>" */
            unsigned v;
            if (n == 6 && sscanf((const char *)s, "<0x%2x>", &v) == 1) out[m++] = (char)v;
            break;
        }
        default: /* UNUSED, UNDEFINED: nothing */
            break;
        }
        used += m;
    }
    t->piece_off[t->n_vocab] = (uint32_t)used;
    return true;
}

static int trie_new(tokenizer *t, uint8_t byte, int *cap) {
    if (t->n_trie == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        trie_node *p = realloc(t->trie, (size_t)*cap * sizeof *p);
        if (!p) return -1;
        t->trie = p;
    }
    t->trie[t->n_trie] = (trie_node){-1, -1, -1, byte};
    return t->n_trie++;
}

/* Ranks of the special split: llama.cpp tries the longest texts first;
 * equal lengths keep id order. */
typedef struct rank_item { uint32_t len; int id; } rank_item;
static int cmp_rank(const void *a, const void *b) {
    const rank_item *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id - y->id;
}

static bool build_specials(tokenizer *t) {
    int cap = 0, n = 0;
    t->n_trie = 0;
    if (trie_new(t, 0, &cap) < 0) return false;
    rank_item *items = malloc((size_t)t->n_vocab * sizeof *items);
    t->special_rank = malloc((size_t)t->n_vocab * sizeof *t->special_rank);
    if (!items || !t->special_rank) {
        free(items);
        return false;
    }
    for (int id = 0; id < t->n_vocab; id++) {
        t->special_rank[id] = -1;
        int ty = t->type[id];
        size_t len;
        const char *s = sym_text(t, id, &len);
        if (len == 0 || (ty != TOK_CONTROL && ty != TOK_USER_DEFINED && ty != TOK_UNKNOWN)) continue;
        if (ty == TOK_USER_DEFINED) t->has_user_defined = true;
        items[n++] = (rank_item){(uint32_t)len, id};
        int node = 0;
        for (size_t i = 0; i < len; i++) {
            uint8_t b = (uint8_t)s[i];
            int c = t->trie[node].child;
            while (c >= 0 && t->trie[c].byte != b) c = t->trie[c].sibling;
            if (c < 0) {
                c = trie_new(t, b, &cap);
                if (c < 0) {
                    free(items);
                    return false;
                }
                t->trie[c].sibling = t->trie[node].child;
                t->trie[node].child = c;
            }
            node = c;
        }
        if (t->trie[node].token < 0) t->trie[node].token = id;
    }
    qsort(items, (size_t)n, sizeof *items, cmp_rank);
    for (int i = 0; i < n; i++) t->special_rank[items[i].id] = i;
    free(items);
    return true;
}

static bool load(tokenizer *t, const gguf_file *f, char *err, size_t errlen) {
    uint64_t len;
    const char *model = gguf_get_str(f, "tokenizer.ggml.model", &len);
    if (!model) return fail(err, errlen, "no tokenizer in this GGUF (missing tokenizer.ggml.model)");
    if (len != 4 || memcmp(model, "gpt2", 4))
        return fail(err, errlen, "unsupported tokenizer.ggml.model '%.*s' (supported: gpt2, byte-level BPE)",
                    (int)(len > 64 ? 64 : len), model);
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre", &len);
    if (!pre) return fail(err, errlen, "missing tokenizer.ggml.pre (supported: deepseek-v3, deepseek-llm)");
    t->pre = pretok_from_name(pre, len);
    if (t->pre < 0)
        return fail(err, errlen, "unsupported tokenizer.ggml.pre '%.*s' (supported: deepseek-v3, deepseek-llm)",
                    (int)(len > 64 ? 64 : len), pre);

    enum gguf_vtype et;
    uint64_t n_tok, n_merge = 0, n_type = 0;
    if (!gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n_tok) || et != GGUF_STRING)
        return fail(err, errlen, "missing or malformed tokenizer.ggml.tokens (need an array of strings)");
    if (n_tok == 0) return fail(err, errlen, "tokenizer.ggml.tokens is empty");
    if (!gguf_get_arr(f, "tokenizer.ggml.merges", &et, &n_merge) || et != GGUF_STRING)
        return fail(err, errlen, "missing or malformed tokenizer.ggml.merges (need an array of strings)");
    if (n_merge >= MAX_MERGES || n_tok + n_merge + 256 > MAX_SYMS)
        return fail(err, errlen, "vocabulary too large (%ld tokens, %ld merges; at most %u symbols, %u merges)",
                    (long)n_tok, (long)n_merge, MAX_SYMS, MAX_MERGES);
    const void *types = NULL;
    if (gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &n_type)) {
        if (et != GGUF_INT32 || n_type != n_tok)
            return fail(err, errlen, "%s must be an int32 array with one entry per token (%ld tokens)",
                        "tokenizer.ggml.token_type", (long)n_tok);
        types = gguf_get_arr_data(f, "tokenizer.ggml.token_type");
    }
    t->n_vocab = (int)n_tok;

    /* Symbols: every token, plus at most one virtual symbol per merge
     * result and per byte. */
    size_t max_sym = (size_t)n_tok + (size_t)n_merge + 256;
    t->text_off = malloc((max_sym + 1) * sizeof *t->text_off);
    t->type = malloc((size_t)n_tok);
    size_t slots = 1;
    while (slots < 2 * max_sym) slots <<= 1;
    t->map = calloc(slots, sizeof *t->map);
    t->map_mask = (uint32_t)(slots - 1);
    t->text_cap = (size_t)n_tok * 12 + 4096;
    t->text = malloc(t->text_cap);
    if (!t->text_off || !t->type || !t->map || !t->text) goto oom;
    t->text_off[0] = 0;
    t->n_sym = 0;
    for (uint64_t i = 0; i < n_tok; i++) {
        uint64_t n;
        const char *s = gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &n);
        if (!s) return fail(err, errlen, "%s[%ld] is unreadable", "tokenizer.ggml.tokens", (long)i);
        if (!add_symbol(t, s, n)) goto oom;
        int32_t ty = TOK_NORMAL;
        if (types) memcpy(&ty, (const char *)types + 4 * i, 4); /* little-endian file, x86 host */
        t->type[i] = (uint8_t)(ty >= 0 && ty <= TOK_BYTE ? ty : TOK_UNDEFINED);
    }
    for (int id = 0; id < t->n_vocab; id++) map_insert(t, id);
    for (int b = 0; b < 256; b++) {
        unsigned char u[4];
        size_t n = utf8_encode(byte_to_cp(b), u);
        if ((t->byte_sym[b] = intern(t, (const char *)u, n)) < 0) goto oom;
    }

    /* Merges: results first (a merge may use a symbol that only a later
     * merge makes), then the pairs. */
    uint32_t *pair = t->merge_result = malloc((size_t)n_merge * sizeof *pair + 1);
    if (!pair) goto oom;
    for (uint64_t r = 0; r < n_merge; r++) {
        uint64_t n;
        const char *s = gguf_get_arr_str(f, "tokenizer.ggml.merges", r, &n);
        const char *sp = s && n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
        if (!sp) return fail(err, errlen, "tokenizer.ggml.merges[%ld] is not \"left right\"", (long)r);
        size_t nl = (size_t)(sp - s), nr = n - nl - 1;
        char buf[512], *cat = n < sizeof buf ? buf : malloc(n);
        if (!cat) goto oom;
        memcpy(cat, s, nl);
        memcpy(cat + nl, sp + 1, nr);
        int id = intern(t, cat, nl + nr);
        if (cat != buf) free(cat);
        if (id < 0) goto oom;
        pair[r] = (uint32_t)id;
    }
    t->n_slots = n_merge * 10 / 7 + 2;
    t->merges = calloc(t->n_slots, sizeof *t->merges);
    t->byte_pair_rank = malloc(256 * 256 * sizeof *t->byte_pair_rank);
    t->pair_filter = calloc(FILTER_BITS / 64, sizeof *t->pair_filter);
    if (!t->merges || !t->byte_pair_rank || !t->pair_filter) goto oom;
    for (uint64_t r = 0; r < n_merge; r++) {
        uint64_t n;
        const char *s = gguf_get_arr_str(f, "tokenizer.ggml.merges", r, &n);
        const char *sp = memchr(s + 1, ' ', n - 1);
        int l = map_find(t, s, (size_t)(sp - s));
        int rt = map_find(t, sp + 1, n - (size_t)(sp - s) - 1);
        if (l < 0 || rt < 0) continue; /* a symbol nothing makes: can never apply */
        uint64_t key = pair_key(l, rt), h = hash_pair(key) & (FILTER_BITS - 1);
        t->pair_filter[h >> 6] |= 1ull << (h & 63);
        for (uint64_t i = merge_slot0(t, hash_pair(key));; i = i + 1 == t->n_slots ? 0 : i + 1) {
            uint64_t *m = &t->merges[i];
            if ((*m & ~(uint64_t)(MAX_MERGES - 1)) == key) break; /* duplicate: lowest rank wins */
            if (!*m) {
                *m = key | r;
                break;
            }
        }
    }
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            t->byte_pair_rank[a << 8 | b] = (int32_t)merge_rank(t, t->byte_sym[a], t->byte_sym[b]);

    if (!load_special_ids(t, f, err, errlen)) return false;
    if (!build_pieces(t) || !build_specials(t)) goto oom;
    const char *tpl = gguf_get_str(f, "tokenizer.chat_template", &len);
    if (tpl) {
        if (!(t->chat_template = malloc(len + 1))) goto oom;
        memcpy(t->chat_template, tpl, len);
        t->chat_template[len] = 0;
    }
    return true;
oom:
    snprintf(err, errlen, "out of memory loading the tokenizer");
    return false;
}

tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen) {
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!load(t, f, err, errlen)) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

tokenizer *tokenizer_load_file(const char *path, char *err, size_t errlen) {
    gguf_file *f = gguf_open(path, err, errlen);
    if (!f) return NULL;
    char msg[400];
    tokenizer *t = tokenizer_load(f, msg, sizeof msg);
    if (!t) snprintf(err, errlen, "%s: %s", path, msg);
    gguf_close(f);
    return t;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->text);
    free(t->text_off);
    free(t->piece);
    free(t->piece_off);
    free(t->type);
    free(t->map);
    free(t->merges);
    free(t->merge_result);
    free(t->byte_pair_rank);
    free(t->pair_filter);
    free(t->trie);
    free(t->special_rank);
    free(t->chat_template);
    free(t);
}

/* ---- queries ---- */

int tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int tokenizer_bos(const tokenizer *t) { return t->bos; }
int tokenizer_eos(const tokenizer *t) { return t->eos; }
bool tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
const char *tokenizer_pre_name(const tokenizer *t) { return pretok_name(t->pre); }
const char *tokenizer_chat_template(const tokenizer *t) { return t->chat_template; }

int tokenizer_token_type(const tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->type[id] : TOK_UNDEFINED;
}

bool tokenizer_is_special(const tokenizer *t, int id) {
    int ty = tokenizer_token_type(t, id);
    return ty == TOK_CONTROL || ty == TOK_UNKNOWN;
}

const char *tokenizer_token_text(const tokenizer *t, int id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    return sym_text(t, id, len);
}

const char *tokenizer_piece(const tokenizer *t, int id, bool special, size_t *len) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    if (!special && (t->type[id] == TOK_CONTROL || t->type[id] == TOK_UNKNOWN)) {
        *len = 0;
        return t->piece;
    }
    *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece + t->piece_off[id];
}

int tokenizer_find(const tokenizer *t, const char *text, size_t len) {
    int id = map_find(t, text, len);
    return id < t->n_vocab ? id : -1;
}

char *tokenizer_decode(const tokenizer *t, const int *ids, size_t n, bool special, size_t *len) {
    size_t total = 0, m;
    for (size_t i = 0; i < n; i++) {
        if (!tokenizer_piece(t, ids[i], special, &m)) return NULL;
        total += m;
    }
    char *out = malloc(total + 1);
    if (!out) return NULL;
    total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = tokenizer_piece(t, ids[i], special, &m);
        memcpy(out + total, p, m);
        total += m;
    }
    out[total] = 0;
    *len = total;
    return out;
}

/* ---- encoding ---- */

/* Growable id array. */
typedef struct ids {
    int *v;
    size_t n, cap;
} ids;

static bool push(ids *o, int id) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        int *p = realloc(o->v, cap * sizeof *p);
        if (!p) return false;
        o->v = p;
        o->cap = cap;
    }
    o->v[o->n++] = id;
    return true;
}

/* Heap entry of the BPE: a candidate merge of symbol `left` with the one
 * after it; stale entries are recognised by their ids. */
typedef struct cand {
    uint32_t rank; /* merge rank: lowest first */
    uint32_t left; /* position of the left symbol: leftmost first on ties */
    int32_t lid, rid; /* symbol ids the merge was found for */
} cand; /* the merged symbol is merge_result[rank] */

static inline bool cand_less(const cand *a, const cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

/* Per-call work buffers. */
typedef struct work {
    const tokenizer *t;
    ids *out;
    pretok_scratch pre;
    int32_t *sym;  /* [cap] symbol id at each position (merged-away: -1) */
    int32_t *next; /* [cap] next live position, -1 at the end */
    int32_t *prev; /* [cap] previous live position, -1 at the start */
    int32_t *rank; /* [cap] short pieces: rank of merging symbols i and i+1 (NO_MERGE: none) */
    cand *heap;    /* [cap] candidate merges */
    size_t cap;
    char *buf;     /* re-encoded fragment */
    size_t buf_cap;
} work;

static void heap_push(cand *h, size_t *n, cand c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n) {
    cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c])) c++;
        if (!cand_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static inline void try_pair(const tokenizer *t, work *w, size_t *nh, int32_t a) {
    if (a < 0 || w->next[a] < 0) return;
    int32_t b = w->next[a];
    int64_t r = merge_rank(t, w->sym[a], w->sym[b]);
    if (r >= 0) heap_push(w->heap, nh, (cand){(uint32_t)r, (uint32_t)a, w->sym[a], w->sym[b]});
}

/* Emits a final symbol: a token id, or for a virtual symbol what
 * llama.cpp emits: the tokens of its single bytes that are tokens. */
static bool emit_sym(const tokenizer *t, ids *out, int id) {
    if (id < t->n_vocab) return push(out, id);
    size_t n;
    const char *s = sym_text(t, id, &n);
    for (size_t i = 0; i < n; i++) {
        int b = map_find(t, s + i, 1);
        if (b >= 0 && b < t->n_vocab && !push(out, b)) return false;
    }
    return true;
}

#define NO_MERGE INT32_MAX
#define SCAN_MAX 32 /* longer pieces use the heap (the scan is quadratic) */

/* BPE of a short piece: the lowest-rank adjacent pair (leftmost on ties)
 * found by a linear scan, merged, and the array closed up.  The same
 * choices as the heap below, but far fewer instructions for the usual
 * piece of a few to a few hundred bytes. */
static bool bpe_scan(const tokenizer *t, work *w, const unsigned char *u, size_t n) {
    int32_t *sym = w->sym, *rank = w->rank;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_sym[u[i]];
    for (size_t i = 0; i + 1 < n; i++) { /* byte pairs: a small dense table */
        int32_t r = t->byte_pair_rank[u[i] << 8 | u[i + 1]];
        rank[i] = r >= 0 ? r : NO_MERGE;
    }
    size_t k = n; /* symbols left; rank[0..k-1) valid */
    while (k > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < k; i++)
            if (rank[i] < rank[best]) best = i;
        if (rank[best] == NO_MERGE) break;
        sym[best] = (int32_t)t->merge_result[rank[best]];
        /* Drop symbol best+1 and the pair (best+1, best+2); pairs
         * (best-1, best) and (best, best+1) are recomputed below. */
        memmove(sym + best + 1, sym + best + 2, (k - best - 2) * sizeof *sym);
        if (best + 3 < k) memmove(rank + best + 1, rank + best + 2, (k - best - 3) * sizeof *rank);
        k--;
        if (best > 0) {
            int64_t r = merge_rank(t, sym[best - 1], sym[best]);
            rank[best - 1] = r >= 0 ? (int32_t)r : NO_MERGE;
        }
        if (best + 1 < k) {
            int64_t r = merge_rank(t, sym[best], sym[best + 1]);
            rank[best] = r >= 0 ? (int32_t)r : NO_MERGE;
        }
    }
    for (size_t i = 0; i < k; i++)
        if (!emit_sym(t, w->out, sym[i])) return false;
    return true;
}

static bool bpe_piece(void *ctx, const char *piece, size_t n) {
    work *w = ctx;
    const tokenizer *t = w->t;
    const unsigned char *u = (const unsigned char *)piece;
    if (n == 1) return emit_sym(t, w->out, t->byte_sym[u[0]]);
    if (n > w->cap) {
        size_t cap = n < 256 ? 256 : n;
        int32_t *a = realloc(w->sym, cap * sizeof *a);
        if (a) w->sym = a;
        int32_t *b = realloc(w->next, cap * sizeof *b);
        if (b) w->next = b;
        int32_t *c = realloc(w->prev, cap * sizeof *c);
        if (c) w->prev = c;
        cand *d = realloc(w->heap, 3 * cap * sizeof *d);
        if (d) w->heap = d;
        int32_t *e = realloc(w->rank, cap * sizeof *e);
        if (e) w->rank = e;
        if (!a || !b || !c || !d || !e) return false;
        w->cap = cap;
    }
    if (n <= SCAN_MAX) return bpe_scan(t, w, u, n);
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = t->byte_sym[u[i]];
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    /* Heap bound: n - 1 initial candidates, at most two more per merge,
     * and there are at most n - 1 merges: under 3n. */
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) { /* byte pairs: a small dense table */
        int32_t r = t->byte_pair_rank[u[i] << 8 | u[i + 1]];
        if (r >= 0) heap_push(w->heap, &nh, (cand){(uint32_t)r, (uint32_t)i, w->sym[i], w->sym[i + 1]});
    }
    while (nh) {
        cand c = heap_pop(w->heap, &nh);
        int32_t a = (int32_t)c.left, b = w->next[a];
        if (w->sym[a] != c.lid || b < 0 || w->sym[b] != c.rid) continue; /* stale */
        w->sym[a] = (int32_t)t->merge_result[c.rank];
        w->sym[b] = -1;
        w->next[a] = w->next[b];
        if (w->next[b] >= 0) w->prev[w->next[b]] = a;
        try_pair(t, w, &nh, w->prev[a]);
        try_pair(t, w, &nh, a);
    }
    for (int32_t i = 0; i >= 0; i = w->next[i])
        if (!emit_sym(t, w->out, w->sym[i])) return false;
    return true;
}

/* Encodes a fragment with no special tokens in it.  Text that llama.cpp
 * would read differently from its bytes (invalid UTF-8, overlong forms)
 * is first re-encoded the way llama.cpp decodes it. */
static bool encode_plain(work *w, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    bool clean = true;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t used;
        unsigned char enc[4];
        uint32_t c = utf8_decode(u + i, n - i, &used);
        if ((c == UNICODE_REPLACEMENT && used == 1) || utf8_encode(c, enc) != used) {
            clean = false;
            break;
        }
        i += used;
    }
    if (!clean) {
        if (n > (SIZE_MAX - 1) / 3) return false;
        if (3 * n > w->buf_cap) {
            char *p = realloc(w->buf, 3 * n);
            if (!p) return false;
            w->buf = p;
            w->buf_cap = 3 * n;
        }
        size_t m = 0;
        for (size_t i = 0; i < n;) {
            size_t used;
            uint32_t c = utf8_decode(u + i, n - i, &used);
            m += utf8_encode(c, (unsigned char *)w->buf + m);
            i += used;
        }
        s = w->buf;
        n = m;
    }
    if (n > UINT32_MAX) return false;
    return pretok_split(w->t->pre, s, n, &w->pre, bpe_piece, w);
}

/* An occurrence of a special token's text. */
typedef struct occ {
    size_t pos;  /* byte offset in the text */
    int rank;    /* special_rank of the token: lower is tried first */
    int id;
    uint32_t len;
} occ;

static int cmp_occ(const void *a, const void *b) {
    const occ *x = a, *y = b;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}
static int cmp_pos(const void *a, const void *b) {
    const occ *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* llama.cpp's special split: for each special token, longest text first,
 * every left-to-right non-overlapping occurrence inside text not yet
 * claimed becomes that token.  Found here in one pass with the trie, then
 * claimed in that order.  Returns the chosen occurrences in text order. */
static bool find_specials(const tokenizer *t, const char *s, size_t n, bool parse_special,
                          occ **out, size_t *n_occ) {
    occ *v = NULL;
    *out = NULL;
    size_t nv = 0, cap = 0;
    *n_occ = 0;
    const trie_node *tr = t->trie;
    for (size_t i = 0; i < n; i++) {
        int node = tr[0].child;
        for (size_t j = i; j < n && node >= 0; j++) {
            while (node >= 0 && tr[node].byte != (uint8_t)s[j]) node = tr[node].sibling;
            if (node < 0) break;
            int id = tr[node].token;
            if (id >= 0 && (parse_special || t->type[id] == TOK_USER_DEFINED)) {
                if (nv == cap) {
                    cap = cap ? 2 * cap : 16;
                    occ *p = realloc(v, cap * sizeof *p);
                    if (!p) {
                        free(v);
                        return false;
                    }
                    v = p;
                }
                v[nv++] = (occ){i, t->special_rank[id], id, (uint32_t)(j + 1 - i)};
            }
            node = tr[node].child;
        }
    }
    if (!nv) return true;
    qsort(v, nv, sizeof *v, cmp_occ);
    unsigned char *claimed = calloc(n, 1);
    if (!claimed) {
        free(v);
        return false;
    }
    size_t kept = 0, tok_end = 0;
    int cur = -1;
    for (size_t k = 0; k < nv; k++) {
        occ o = v[k];
        if (o.id != cur) cur = o.id, tok_end = 0; /* find() restarts per token */
        if (o.pos < tok_end) continue;
        bool free_span = true;
        for (size_t b = o.pos; b < o.pos + o.len; b++)
            if (claimed[b]) {
                free_span = false;
                break;
            }
        if (!free_span) continue;
        memset(claimed + o.pos, 1, o.len);
        tok_end = o.pos + o.len;
        v[kept++] = o;
    }
    free(claimed);
    qsort(v, kept, sizeof *v, cmp_pos);
    *out = v;
    *n_occ = kept;
    return true;
}

int *tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                      bool parse_special, size_t *n) {
    ids out = {0};
    work w = {.t = t, .out = &out};
    bool ok = true;
    size_t n_occ = 0;
    occ *sp = NULL;
    if (add_special && t->add_bos) ok = push(&out, t->bos);
    if (ok && t->n_trie > 1 && len > 0 && (parse_special || t->has_user_defined)) {
        ok = find_specials(t, text, len, parse_special, &sp, &n_occ);
    }
    size_t at = 0;
    for (size_t k = 0; ok && k < n_occ; k++) {
        ok = encode_plain(&w, text + at, sp[k].pos - at) && push(&out, sp[k].id);
        at = sp[k].pos + sp[k].len;
    }
    if (ok) ok = encode_plain(&w, text + at, len - at);
    if (ok && add_special && t->add_eos) ok = push(&out, t->eos);
    if (ok && !out.v) ok = (out.v = malloc(sizeof *out.v)) != NULL; /* empty, but not NULL */
    free(sp);
    pretok_free(&w.pre);
    free(w.sym);
    free(w.next);
    free(w.prev);
    free(w.heap);
    free(w.rank);
    free(w.buf);
    if (!ok) {
        free(out.v);
        return NULL;
    }
    *n = out.n;
    return out.v;
}
