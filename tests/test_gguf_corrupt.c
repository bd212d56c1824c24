/* The GGUF reader on corrupt files.  A small valid file is built by hand
 * here (independently of the writer), recording where each field sits;
 * then every header prefix, a sample of data prefixes and one corrupted
 * field after another are opened.  Each must fail with a message naming
 * the file and the problem, never crash or read out of bounds (the suite
 * also runs under ASan/UBSan). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "gguf.h"
#include "quant.h"

static char tmpdir[64];

/* ---- a little byte builder ---- */

typedef struct buf {
    uint8_t *p; /* bytes */
    size_t n;   /* used */
    size_t cap; /* allocated */
} buf;

static void put(buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) { /* geometric growth: the deep-nesting case is 1 MB */
        b->cap = 2 * (b->n + n) + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put32(buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}
static void put64(buf *b, uint64_t v) {
    put32(b, (uint32_t)v);
    put32(b, (uint32_t)(v >> 32));
}
static void putstr(buf *b, const char *s) {
    put64(b, strlen(s));
    put(b, s, strlen(s));
}
static void set32(buf *b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) b->p[at + i] = (uint8_t)(v >> (8 * i));
}
static void set64(buf *b, size_t at, uint64_t v) {
    set32(b, at, (uint32_t)v);
    set32(b, at + 4, (uint32_t)(v >> 32));
}

/* Where the fields of the hand-built file are. */
enum { NKV = 4, NT = 3 };
typedef struct layout {
    size_t version, n_tensors, n_kv;  /* header fields */
    size_t key_len[NKV + 1];          /* each key's length field (+ general.alignment) */
    size_t val_type[NKV + 1];         /* each value's type id */
    size_t val[NKV + 1];              /* each value's encoding */
    size_t name_len[NT];              /* each tensor's name length */
    size_t n_dims[NT], ne[NT], type[NT], offset[NT];
    size_t data_start;                /* aligned start of the data section */
} layout;

static const uint64_t rel_offset[NT] = {0, 32, 96}; /* t.a F32 32 B, t.b Q8_0 34 B, t.c F16 32 B */

/* The base file: keys general.architecture (str), test.count (u32),
 * test.words (string array), test.nested (array of i16 arrays), optional
 * general.alignment (u32 `align`, if non-zero), then three tensors. */
static buf build(uint32_t version, uint32_t align, layout *L) {
    buf b = {0};
    memset(L, 0, sizeof *L);
    put(&b, "GGUF", 4);
    L->version = b.n;
    put32(&b, version);
    L->n_tensors = b.n;
    put64(&b, NT);
    L->n_kv = b.n;
    put64(&b, NKV + (align ? 1 : 0));

    L->key_len[0] = b.n;
    putstr(&b, "general.architecture");
    L->val_type[0] = b.n;
    put32(&b, GGUF_STRING);
    L->val[0] = b.n;
    putstr(&b, "deepseek2");

    L->key_len[1] = b.n;
    putstr(&b, "test.count");
    L->val_type[1] = b.n;
    put32(&b, GGUF_UINT32);
    L->val[1] = b.n;
    put32(&b, 7);

    L->key_len[2] = b.n;
    putstr(&b, "test.words");
    L->val_type[2] = b.n;
    put32(&b, GGUF_ARRAY);
    L->val[2] = b.n;
    put32(&b, GGUF_STRING);
    put64(&b, 2);
    putstr(&b, "alpha");
    putstr(&b, "beta");

    L->key_len[3] = b.n;
    putstr(&b, "test.nest1");
    L->val_type[3] = b.n;
    put32(&b, GGUF_ARRAY);
    L->val[3] = b.n;
    put32(&b, GGUF_ARRAY);
    put64(&b, 2);
    put32(&b, GGUF_INT16);
    put64(&b, 2);
    put32(&b, 0xfffe0001u); /* i16 1, -2 */
    put32(&b, GGUF_INT16);
    put64(&b, 1);
    uint8_t three[2] = {3, 0};
    put(&b, three, 2);

    if (align) {
        L->key_len[4] = b.n;
        putstr(&b, "general.alignment");
        L->val_type[4] = b.n;
        put32(&b, GGUF_UINT32);
        L->val[4] = b.n;
        put32(&b, align);
    }

    static const char *names[NT] = {"t.a", "t.b", "t.c"};
    static const uint32_t types[NT] = {QT_F32, QT_Q8_0, QT_F16};
    static const uint32_t ndims[NT] = {2, 1, 3};
    static const uint64_t ne[NT][3] = {{4, 2}, {32}, {4, 2, 2}};
    uint32_t a = align && !(align & (align - 1)) ? align : 32;
    for (int i = 0; i < NT; i++) {
        L->name_len[i] = b.n;
        putstr(&b, names[i]);
        L->n_dims[i] = b.n;
        put32(&b, ndims[i]);
        L->ne[i] = b.n;
        for (uint32_t d = 0; d < ndims[i]; d++) put64(&b, ne[i][d]);
        L->type[i] = b.n;
        put32(&b, types[i]);
        L->offset[i] = b.n;
        put64(&b, rel_offset[i] / 32 * a);
    }
    while (b.n % a) put(&b, "", 1);
    L->data_start = b.n;
    for (uint64_t i = 0; i < 3 * (uint64_t)a + 32; i++) {
        uint8_t x = (uint8_t)(i * 7 + 1);
        put(&b, &x, 1);
    }
    return b;
}

static const char *case_path(const char *name) {
    static char path[256];
    snprintf(path, sizeof path, "%s/case-%s.gguf", tmpdir, name);
    return path;
}

static void write_file(const char *path, const uint8_t *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        CHECK(0, "cannot write %s", path);
        return;
    }
    if (n) fwrite(p, 1, n, fp);
    fclose(fp);
}

/* Opens the first n bytes of b as case `name`: must fail naming the file
 * and containing `what` (if non-NULL). */
static void expect_fail_n(const char *name, const buf *b, size_t n, const char *what) {
    const char *path = case_path(name);
    write_file(path, b->p, n);
    char err[512] = "";
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f == NULL, "case %s: corrupt file opened", name);
    CHECK(err[0] && strstr(err, path), "case %s: message [%s] should name the file", name, err);
    if (what) CHECK(strstr(err, what) != NULL, "case %s: message [%s] should mention '%s'", name, err, what);
    if (strncmp(name, "trunc", 5)) printf("%-20s %s\n", name, strrchr(err, '/') ? strrchr(err, '/') + 1 : err);
    gguf_close(f);
    remove(path);
}

static void expect_fail(const char *name, const buf *b, const char *what) { expect_fail_n(name, b, b->n, what); }

static gguf_file *expect_ok(const char *name, const buf *b) {
    const char *path = case_path(name);
    write_file(path, b->p, b->n);
    char err[512] = "";
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "case %s should open: %s", name, err);
    remove(path); /* the mapping stays valid */
    return f;
}

/* The hand-built file is valid: the corruptions below are the only fault. */
static void test_base(void) {
    for (uint32_t version = 2; version <= 3; version++) {
        layout L;
        buf b = build(version, 0, &L);
        gguf_file *f = expect_ok(version == 2 ? "base-v2" : "base-v3", &b);
        if (f) {
            CHECK(gguf_version(f) == (int)version, "version");
            int64_t v;
            uint64_t len, n;
            enum gguf_vtype et;
            CHECK(gguf_get_int(f, "test.count", &v) && v == 7, "test.count");
            const char *s = gguf_get_arr_str(f, "test.words", 1, &len);
            CHECK(s && len == 4 && !memcmp(s, "beta", 4), "test.words[1]");
            int16_t v16[2]; /* packed data may be unaligned: copy it out */
            const void *in = gguf_get_arr_arr(f, "test.nest1", 0, &et, &n);
            CHECK(in && et == GGUF_INT16 && n == 2 && (memcpy(v16, in, 4), v16[0] == 1 && v16[1] == -2), "nested [0]");
            in = gguf_get_arr_arr(f, "test.nest1", 1, &et, &n);
            CHECK(in && n == 1 && (memcpy(v16, in, 2), v16[0] == 3), "nested [1]");
            CHECK(gguf_n_tensors(f) == NT, "tensors");
            const gguf_tensor *t = gguf_find_tensor(f, "t.b");
            CHECK(t && t->type == QT_Q8_0 && t->nbytes == 34 && t->offset == L.data_start + 32 &&
                      ((const uint8_t *)t->data)[0] == (uint8_t)(32 * 7 + 1),
                  "t.b");
        }
        gguf_close(f);
        free(b.p);
    }
    layout L;
    buf b = build(3, 64, &L);
    gguf_file *f = expect_ok("align64", &b);
    const gguf_tensor *t = f ? gguf_find_tensor(f, "t.c") : NULL;
    CHECK(t && t->offset == L.data_start + 192, "alignment 64 offsets");
    gguf_close(f);
    free(b.p);
}

/* Every prefix of the header, and a sample of prefixes inside the data. */
static void test_truncation(void) {
    layout L;
    buf b = build(3, 0, &L);
    char name[32];
    for (size_t n = 0; n < L.data_start; n++) {
        snprintf(name, sizeof name, "trunc%zu", n);
        expect_fail_n(name, &b, n, "truncated");
    }
    for (size_t n = L.data_start; n < b.n; n += 5) {
        snprintf(name, sizeof name, "trunc%zu", n);
        expect_fail_n(name, &b, n, "truncated");
    }
    expect_fail_n("trunc-last", &b, b.n - 1, "truncated");
    free(b.p);
}

/* One corruption of a fresh base file per case: the value v at the
 * position at() finds. */
static void corrupt32(const char *name, size_t (*at)(const layout *), uint32_t v, const char *what) {
    layout L;
    buf b = build(3, 0, &L);
    set32(&b, at(&L), v);
    expect_fail(name, &b, what);
    free(b.p);
}

static void corrupt64(const char *name, size_t (*at)(const layout *), uint64_t v, const char *what) {
    layout L;
    buf b = build(3, 0, &L);
    set64(&b, at(&L), v);
    expect_fail(name, &b, what);
    free(b.p);
}

static size_t at_magic(const layout *L) { (void)L; return 0; }
static size_t at_version(const layout *L) { return L->version; }
static size_t at_n_tensors(const layout *L) { return L->n_tensors; }
static size_t at_n_kv(const layout *L) { return L->n_kv; }
static size_t at_key0_len(const layout *L) { return L->key_len[0]; }
static size_t at_val0(const layout *L) { return L->val[0]; }
static size_t at_type1(const layout *L) { return L->val_type[1]; }
static size_t at_words_etype(const layout *L) { return L->val[2]; }
static size_t at_words_count(const layout *L) { return L->val[2] + 4; }
static size_t at_word0_len(const layout *L) { return L->val[2] + 12; }
static size_t at_nest_count(const layout *L) { return L->val[3] + 4; }
static size_t at_nest_inner_type(const layout *L) { return L->val[3] + 12; }
static size_t at_nest_inner_count(const layout *L) { return L->val[3] + 16; }
static size_t at_name0_len(const layout *L) { return L->name_len[0]; }
static size_t at_ndims0(const layout *L) { return L->n_dims[0]; }
static size_t at_ne0_0(const layout *L) { return L->ne[0]; }
static size_t at_ne0_1(const layout *L) { return L->ne[0] + 8; }
static size_t at_ne2_2(const layout *L) { return L->ne[2] + 16; }
static size_t at_type0(const layout *L) { return L->type[0]; }
static size_t at_type1t(const layout *L) { return L->type[1]; }
static size_t at_ne1_0(const layout *L) { return L->ne[1]; }
static size_t at_off0(const layout *L) { return L->offset[0]; }
static size_t at_off1(const layout *L) { return L->offset[1]; }
static size_t at_off2(const layout *L) { return L->offset[2]; }

static void test_fields(void) {
    corrupt32("magic", at_magic, 0x46554746u /* "FGUF" */, "magic");
    corrupt32("version1", at_version, 1, "version 1");
    corrupt32("version99", at_version, 99, "version 99");
    corrupt32("version0", at_version, 0, "version");
    corrupt32("bigendian", at_version, 0x03000000u, "big-endian");
    corrupt64("ntensors-huge", at_n_tensors, UINT64_C(1) << 40, "tensor count");
    corrupt64("ntensors-neg", at_n_tensors, UINT64_MAX, "tensor count");
    corrupt64("ntensors-more", at_n_tensors, 4, NULL);
    corrupt64("nkv-huge", at_n_kv, UINT64_C(1) << 60, "key count");
    corrupt64("nkv-more", at_n_kv, 5, NULL);
    corrupt64("keylen-huge", at_key0_len, UINT64_C(1) << 60, "string length");
    corrupt64("keylen-max", at_key0_len, UINT64_MAX, "string length");
    corrupt64("keylen-empty", at_key0_len, 0, NULL);
    corrupt64("strlen-huge", at_val0, UINT64_C(1) << 62, "string length");
    corrupt64("strlen-filesize", at_val0, 100000, "string length");
    corrupt32("valtype-unknown", at_type1, 13, "unknown value type");
    corrupt32("valtype-huge", at_type1, 0xffffffffu, "unknown value type");
    corrupt32("arr-etype", at_words_etype, 77, "element type");
    corrupt64("arr-count-huge", at_words_count, UINT64_C(1) << 61, "cannot fit");
    corrupt64("arr-count-more", at_words_count, 3, NULL);
    corrupt64("arr-strlen-huge", at_word0_len, UINT64_C(1) << 50, "string length");
    corrupt64("nest-count-huge", at_nest_count, UINT64_C(1) << 58, "cannot fit");
    corrupt32("nest-inner-type", at_nest_inner_type, 99, "element type");
    corrupt64("nest-inner-count", at_nest_inner_count, UINT64_C(1) << 62, "cannot fit");
    corrupt64("namelen-huge", at_name0_len, UINT64_C(1) << 63, "string length");
    corrupt32("ndims5", at_ndims0, 5, "n_dims 5");
    corrupt32("ndims0", at_ndims0, 0, "n_dims 0");
    corrupt32("ndims-huge", at_ndims0, 0x80000000u, "n_dims");
    corrupt64("dim-zero", at_ne0_0, 0, "dimension 0");
    corrupt64("dim-negative", at_ne0_1, (uint64_t)-5, "dimension 1");
    corrupt64("dim-huge", at_ne0_0, UINT64_C(1) << 40, "past the end");
    corrupt64("bytes-overflow", at_ne0_0, UINT64_C(1) << 61, "byte size");
    corrupt64("dim-overflow", at_ne0_1, UINT64_C(1) << 62, "overflow");
    corrupt64("dim-overflow3", at_ne2_2, INT64_MAX / 4, "overflows int64");
    corrupt32("type-unknown", at_type0, 99, "unknown tensor type");
    corrupt32("type-gap", at_type0, 4, "unknown tensor type"); /* Q4_2: removed from GGML */
    corrupt32("type-huge", at_type0, 0xffffffffu, "unknown tensor type");
    corrupt32("type-blocksize", at_type1t, QT_Q4_K, "block size");
    corrupt64("row-blocksize", at_ne1_0, 48, "block size");
    corrupt64("offset-misaligned", at_off1, 36, "alignment");
    corrupt64("offset-beyond", at_off2, 1024, "past the end");
    corrupt64("offset-huge", at_off2, UINT64_MAX - 31, "past the end");
    corrupt64("offset-overlap", at_off1, 0, "overlaps");
    corrupt64("offset-overlap2", at_off0, 32, "overlaps");
}

/* Corruptions that change lengths or names. */
static void test_structure(void) {
    layout L;
    buf b = build(3, 0, &L);
    /* Same-length names: t.a t.b t.c -> t.a t.a t.c. */
    b.p[L.name_len[1] + 8 + 2] = 'a';
    expect_fail("dup-tensor", &b, "duplicate tensor name");
    free(b.p);

    b = build(3, 0, &L);
    memcpy(b.p + L.key_len[3] + 8, "test.count", 10); /* test.nest1 -> test.count */
    expect_fail("dup-key", &b, "duplicate key");
    free(b.p);

    b = build(3, 0, &L);
    b.p[L.key_len[1] + 8 + 4] = 0; /* "test\0count" */
    expect_fail("key-nul", &b, "NUL");
    free(b.p);

    b = build(3, 0, &L);
    b.p[L.name_len[2] + 8 + 1] = 0;
    expect_fail("name-nul", &b, "NUL");
    free(b.p);

    static const struct { uint32_t align; const char *what; } aligns[] = {{0, "power of two"}, {3, "power of two"}, {48, "power of two"}};
    for (size_t i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "align%u", aligns[i].align);
        b = build(3, 1, &L);
        set32(&b, L.val[4], aligns[i].align);
        expect_fail(name, &b, aligns[i].what);
        free(b.p);
    }
    b = build(3, 64, &L);
    set32(&b, L.val_type[4], GGUF_UINT64);
    expect_fail("align-type", &b, "u32");
    free(b.p);
    /* Offsets that suit 32 but not the declared 64. */
    b = build(3, 64, &L);
    set64(&b, L.offset[1], 32);
    expect_fail("align64-misaligned", &b, "alignment 64");
    free(b.p);
}

/* Arrays nested `depth` deep around one u8. */
static buf nested_file(int depth) {
    buf b = {0};
    put(&b, "GGUF", 4);
    put32(&b, 3);
    put64(&b, 0);
    put64(&b, 1);
    putstr(&b, "deep");
    put32(&b, GGUF_ARRAY);
    for (int i = 1; i < depth; i++) {
        put32(&b, GGUF_ARRAY);
        put64(&b, 1);
    }
    put32(&b, GGUF_UINT8);
    put64(&b, 1);
    put(&b, "\x2a", 1);
    return b;
}

static void test_nesting(void) {
    buf b = nested_file(8);
    gguf_file *f = expect_ok("nest8", &b);
    char s[160], want[160] = "";
    for (int i = 0; i < 7; i++) strcat(want, "[1 array: ");
    strcat(want, "[1 u8: 42]]]]]]]]");
    if (f) CHECK(!strcmp(gguf_kv_to_string(f, 0, s, sizeof s), want), "nested rendering %s", s);
    gguf_close(f);
    free(b.p);
    b = nested_file(9);
    expect_fail("nest9", &b, "nested");
    free(b.p);
    b = nested_file(100000);
    expect_fail("nest100000", &b, "nested");
    free(b.p);
}

static void test_files(void) {
    char err[512] = "";
    const char *path = case_path("missing");
    CHECK(gguf_open(path, err, sizeof err) == NULL && strstr(err, path) && strstr(err, "No such file"), "missing: %s", err);
    path = case_path("dir");
    mkdir(path, 0700);
    CHECK(gguf_open(path, err, sizeof err) == NULL && strstr(err, path) && strstr(err, "regular"), "directory: %s", err);
    rmdir(path);
    buf b = {0};
    expect_fail_n("empty", &b, 0, "truncated");
    put(&b, "GGUF", 4);
    expect_fail("magic-only", &b, "truncated");
    free(b.p);
    b = (buf){0};
    put(&b, "\x7f" "ELF\x02\x01\x01", 7);
    put64(&b, 0);
    put64(&b, 0);
    put64(&b, 0);
    expect_fail("elf", &b, "not a GGUF file");
    free(b.p);
    CHECK(gguf_open(NULL, err, sizeof err) == NULL && err[0], "NULL path");
    CHECK(gguf_open(case_path("x"), NULL, 0) == NULL, "no error buffer");
}

/* Single-byte changes anywhere in the header: whatever they do, the
 * reader must not crash or read out of bounds (ASan checks). */
static void test_byte_flips(void) {
    layout L;
    buf base = build(3, 0, &L);
    const char *path = case_path("flip");
    int opened = 0, failed = 0;
    for (size_t i = 0; i < L.data_start; i++) {
        static const uint8_t vals[] = {0x00, 0xff, 0x80, 0x01};
        for (size_t k = 0; k < sizeof vals; k++) {
            buf b = {malloc(base.n), base.n, base.n};
            memcpy(b.p, base.p, base.n);
            b.p[i] = vals[k];
            write_file(path, b.p, b.n);
            char err[512] = "";
            gguf_file *f = gguf_open(path, err, sizeof err);
            if (f) {
                opened++;
                for (int t = 0; t < gguf_n_tensors(f); t++) {
                    const gguf_tensor *tt = gguf_tensor_at(f, t);
                    volatile uint8_t x = ((const uint8_t *)tt->data)[tt->nbytes - 1]; /* must be mapped */
                    (void)x;
                }
                for (int kv = 0; kv < gguf_n_kv(f); kv++) {
                    char s[200];
                    gguf_kv_to_string(f, kv, s, sizeof s);
                }
            } else {
                failed++;
                if (!err[0] || !strstr(err, path)) CHECK(0, "flip at %zu to %02x: message [%s]", i, vals[k], err);
            }
            gguf_close(f);
            free(b.p);
        }
    }
    CHECK(failed > 0 && opened > 0, "byte flips: %d opened, %d refused", opened, failed);
    printf("byte flips in the header: %d files opened, %d refused\n", opened, failed);
    remove(path);
    free(base.p);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_gguf_corrupt.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_base();
    test_truncation();
    test_fields();
    test_structure();
    test_nesting();
    test_files();
    test_byte_flips();
    if (rmdir(tmpdir) != 0) CHECK(0, "temp dir %s not empty at the end", tmpdir);
    return check_summary("test_gguf_corrupt");
}
