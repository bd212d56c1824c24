/* GGUF reader and writer: a writer -> reader round trip of every value type
 * and several tensor types, writer misuse, every fixture model and the
 * tokenizer vocabulary, and a 3-part split model opened through different
 * parts.  Corrupt inputs are in test_gguf_corrupt.c. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf.h"
#include "quant.h"

static char tmpdir[64];

static const char *tmp(const char *name) {
    static char path[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", tmpdir, name);
    return path[k];
}

/* Deterministic bytes for tensor data: tensor `seed`, byte i. */
static uint8_t pattern(int seed, uint64_t i) {
    uint32_t x = (uint32_t)(i * 2654435761u) ^ (uint32_t)(seed * 40503u + 17);
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    return (uint8_t)(x ^ (x >> 15));
}

static uint8_t *pattern_buf(int seed, uint64_t n) {
    uint8_t *p = malloc(n ? n : 1);
    for (uint64_t i = 0; i < n; i++) p[i] = pattern(seed, i);
    return p;
}

static long file_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return n;
}

/* Bytes of a tensor from the GGML block layouts: values per block and
 * bytes per block, from the format (not from the code under test). */
typedef struct tdesc {
    const char *name;
    int type;
    int n_dims;
    int64_t ne[4];
    int blck, bsize; /* block: values, bytes */
} tdesc;

static uint64_t tdesc_bytes(const tdesc *d) {
    uint64_t n = 1;
    for (int i = 0; i < d->n_dims; i++) n *= (uint64_t)d->ne[i];
    return n / (uint64_t)d->blck * (uint64_t)d->bsize;
}

static const tdesc round_tensors[] = {
    {"token_embd.weight", QT_F32, 2, {5, 3}, 1, 4},
    {"blk.0.attn_norm.weight", QT_F16, 3, {8, 2, 2}, 1, 2},
    {"blk.0.bf16", QT_BF16, 1, {4}, 1, 2},
    {"blk.0.q8", QT_Q8_0, 2, {64, 3}, 32, 34},
    {"blk.0.q4k", QT_Q4_K, 2, {256, 2}, 256, 144},
    {"blk.0.ffn_down_exps.weight", QT_Q6_K, 4, {256, 1, 1, 2}, 256, 210},
    {"blk.0.q4_0", QT_Q4_0, 2, {32, 5}, 32, 18},
    {"blk.0.q5_0", QT_Q5_0, 1, {96}, 32, 22},
};
#define N_ROUND (int)(sizeof round_tensors / sizeof round_tensors[0])

static void declare(gguf_writer *w, const tdesc *t, int n) {
    for (int i = 0; i < n; i++) gguf_add_tensor(w, t[i].name, t[i].type, t[i].n_dims, t[i].ne);
}

/* Streams tensor data; tensor i is written in (i % 3) + 1 uneven chunks. */
static bool stream(gguf_writer *w, const tdesc *t, int n, int seed0, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        uint64_t nb = tdesc_bytes(&t[i]);
        uint8_t *p = pattern_buf(seed0 + i, nb);
        uint64_t done = 0;
        int chunks = i % 3 + 1;
        for (int c = 0; c < chunks; c++) {
            uint64_t k = c == chunks - 1 ? nb - done : (nb - done) / 3 + 1;
            if (!gguf_writer_write(w, p + done, (size_t)k, err, errlen)) {
                free(p);
                return false;
            }
            done += k;
        }
        free(p);
    }
    return true;
}

static bool data_matches(const gguf_tensor *t, int seed) {
    const uint8_t *d = t->data;
    for (uint64_t i = 0; i < t->nbytes; i++)
        if (d[i] != pattern(seed, i)) return false;
    return true;
}

static void kv_str_is(const gguf_file *f, const char *key, const char *want) {
    char buf[256];
    int i = gguf_find_key(f, key);
    CHECK(i >= 0, "key %s missing", key);
    if (i < 0) return;
    gguf_kv_to_string(f, i, buf, sizeof buf);
    CHECK(!strcmp(buf, want), "%s renders as [%s], want [%s]", key, buf, want);
}

static void test_roundtrip(void) {
    const char *path = tmp("round.gguf");
    char err[512];
    gguf_writer *w = gguf_writer_new();
    gguf_set_str(w, "general.name", "first");
    gguf_set_u8(w, "t.u8", 200);
    gguf_set_i8(w, "t.i8", -100);
    gguf_set_u16(w, "t.u16", 60000);
    gguf_set_i16(w, "t.i16", -30000);
    gguf_set_u32(w, "t.u32", 4000000000u);
    gguf_set_i32(w, "t.i32", -2000000000);
    gguf_set_u64(w, "t.u64", 0x8000000000000005ull);
    gguf_set_u64(w, "t.u64small", 12345);
    gguf_set_i64(w, "t.i64", INT64_MIN + 1);
    gguf_set_f32(w, "t.f32", 0.1f);
    gguf_set_f64(w, "t.f64", 3.141592653589793);
    gguf_set_bool(w, "t.true", true);
    gguf_set_bool(w, "t.false", false);
    gguf_set_str(w, "t.str", "h\xc3\xa9llo \"q\"\n");
    gguf_set_str(w, "t.empty", "");
    int32_t ai32[] = {1, -2, 3};
    gguf_set_arr(w, "t.arr_i32", GGUF_INT32, ai32, 3);
    float af32[] = {0.5f, -1.25f};
    gguf_set_arr(w, "t.arr_f32", GGUF_FLOAT32, af32, 2);
    gguf_set_arr(w, "t.arr_empty", GGUF_UINT8, NULL, 0);
    uint8_t abool[] = {1, 0, 1};
    gguf_set_arr(w, "t.arr_bool", GGUF_BOOL, abool, 3);
    double af64[] = {1e300, -2.5};
    gguf_set_arr(w, "t.arr_f64", GGUF_FLOAT64, af64, 2);
    uint64_t au64[12];
    for (int i = 0; i < 12; i++) au64[i] = (uint64_t)i * 1000000007ull;
    gguf_set_arr(w, "t.arr_u64", GGUF_UINT64, au64, 12);
    const char *words[] = {"alpha", "", "a much longer string that will be cut when shown", "d"};
    gguf_set_arr_str(w, "t.arr_str", words, 4);
    int16_t in0[] = {1, 2, 3}, in2[] = {-7};
    const void *inner[] = {in0, NULL, in2};
    uint64_t n_inner[] = {3, 0, 1};
    gguf_set_arr_arr(w, "t.nested", GGUF_INT16, inner, n_inner, 3);
    gguf_set_str(w, "general.name", "second"); /* replaces, keeps one key */
    declare(w, round_tensors, N_ROUND);

    bool ok = gguf_writer_begin(w, path, err, sizeof err);
    CHECK(ok, "begin: %s", err);
    ok = ok && stream(w, round_tensors, N_ROUND, 100, err, sizeof err);
    CHECK(ok, "write: %s", err);
    CHECK(!gguf_writer_write(w, "x", 1, err, sizeof err) && err[0], "a byte past the last tensor must fail");
    ok = gguf_writer_end(w, err, sizeof err);
    CHECK(ok, "end: %s", err);
    gguf_writer_free(w);

    long size = file_size(path);
    CHECK(size > 0 && size % 32 == 0, "file size %ld should be a multiple of 32", size);

    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "open: %s", err);
    if (!f) return;
    CHECK(gguf_version(f) == 3, "version %d", gguf_version(f));
    CHECK(gguf_n_parts(f) == 1, "parts %d", gguf_n_parts(f));
    CHECK(!strcmp(gguf_part_path(f, 0), path), "part path %s", gguf_part_path(f, 0));
    CHECK(gguf_part_size(f, 0) == (uint64_t)size, "part size");
    CHECK(gguf_part_path(f, 1) == NULL, "part 1 of a single file");
    CHECK(gguf_n_kv(f) == 24, "n_kv %d", gguf_n_kv(f));

    int64_t iv;
    double dv;
    bool bv;
    uint64_t len;
    CHECK(gguf_get_int(f, "t.u8", &iv) && iv == 200, "u8");
    CHECK(gguf_get_int(f, "t.i8", &iv) && iv == -100, "i8");
    CHECK(gguf_get_int(f, "t.u16", &iv) && iv == 60000, "u16");
    CHECK(gguf_get_int(f, "t.i16", &iv) && iv == -30000, "i16");
    CHECK(gguf_get_int(f, "t.u32", &iv) && iv == 4000000000ll, "u32");
    CHECK(gguf_get_int(f, "t.i32", &iv) && iv == -2000000000, "i32");
    CHECK(!gguf_get_int(f, "t.u64", &iv), "u64 above INT64_MAX must not convert");
    CHECK(gguf_get_float(f, "t.u64", &dv) && dv == 9223372036854775813.0, "u64 as double");
    CHECK(gguf_get_int(f, "t.u64small", &iv) && iv == 12345, "u64 small");
    CHECK(gguf_get_int(f, "t.i64", &iv) && iv == INT64_MIN + 1, "i64");
    CHECK(gguf_get_float(f, "t.f32", &dv) && dv == (double)0.1f, "f32 %g", dv);
    CHECK(gguf_get_float(f, "t.f64", &dv) && dv == 3.141592653589793, "f64");
    CHECK(gguf_get_float(f, "t.i32", &dv) && dv == -2e9, "int as double");
    CHECK(!gguf_get_int(f, "t.f32", &iv), "float must not convert to int");
    CHECK(gguf_get_bool(f, "t.true", &bv) && bv, "bool true");
    CHECK(gguf_get_bool(f, "t.false", &bv) && !bv, "bool false");
    CHECK(!gguf_get_bool(f, "t.u8", &bv), "u8 is not a bool");
    const char *s = gguf_get_str(f, "t.str", &len);
    CHECK(s && len == 11 && !memcmp(s, "h\xc3\xa9llo \"q\"\n", 11), "string");
    s = gguf_get_str(f, "t.empty", &len);
    CHECK(s && len == 0, "empty string");
    s = gguf_get_str(f, "general.name", &len);
    CHECK(s && len == 6 && !memcmp(s, "second", 6), "replaced key");
    CHECK(gguf_get_str(f, "t.u8", &len) == NULL, "u8 is not a string");
    CHECK(!gguf_get_int(f, "absent", &iv) && gguf_find_key(f, "absent") == -1, "absent key");

    enum gguf_vtype et;
    uint64_t n;
    CHECK(gguf_get_arr(f, "t.arr_i32", &et, &n) && et == GGUF_INT32 && n == 3, "i32 array");
    const uint8_t *raw = gguf_get_arr_data(f, "t.arr_i32");
    CHECK(raw && raw[0] == 1 && raw[4] == 0xfe && raw[7] == 0xff && raw[8] == 3, "i32 array data");
    const void *fa = gguf_get_arr_data(f, "t.arr_f32"); /* packed: may be unaligned */
    CHECK(fa && !memcmp(fa, af32, sizeof af32), "f32 array data");
    CHECK(gguf_get_arr(f, "t.arr_empty", &et, &n) && et == GGUF_UINT8 && n == 0, "empty array");
    raw = gguf_get_arr_data(f, "t.arr_bool");
    CHECK(gguf_get_arr(f, "t.arr_bool", &et, &n) && et == GGUF_BOOL && n == 3 && raw && !memcmp(raw, abool, 3), "bool array");
    raw = gguf_get_arr_data(f, "t.arr_f64");
    CHECK(raw && !memcmp(raw, af64, sizeof af64), "f64 array");
    raw = gguf_get_arr_data(f, "t.arr_u64");
    CHECK(raw && !memcmp(raw, au64, sizeof au64), "u64 array");
    CHECK(gguf_get_arr(f, "t.arr_str", &et, &n) && et == GGUF_STRING && n == 4, "string array");
    CHECK(gguf_get_arr_data(f, "t.arr_str") == NULL, "no raw data for strings");
    for (uint64_t i = 0; i < 4; i++) {
        s = gguf_get_arr_str(f, "t.arr_str", i, &len);
        CHECK(s && len == strlen(words[i]) && !memcmp(s, words[i], len), "string %d", (int)i);
    }
    CHECK(gguf_get_arr_str(f, "t.arr_str", 4, &len) == NULL, "string index past the end");
    CHECK(gguf_get_arr(f, "t.nested", &et, &n) && et == GGUF_ARRAY && n == 3, "nested array");
    const void *in = gguf_get_arr_arr(f, "t.nested", 0, &et, &n);
    int16_t i16;
    CHECK(in && et == GGUF_INT16 && n == 3 && !memcmp(in, in0, sizeof in0), "nested 0");
    in = gguf_get_arr_arr(f, "t.nested", 1, &et, &n);
    CHECK(in && et == GGUF_INT16 && n == 0, "nested 1 (empty)");
    in = gguf_get_arr_arr(f, "t.nested", 2, &et, &n);
    CHECK(in && n == 1 && (memcpy(&i16, in, 2), i16 == -7), "nested 2");
    CHECK(gguf_get_arr_arr(f, "t.nested", 3, &et, &n) == NULL, "nested index past the end");
    CHECK(gguf_get_arr_arr(f, "t.arr_i32", 0, &et, &n) == NULL, "not nested");
    CHECK(gguf_kv_type(f, gguf_find_key(f, "t.nested")) == GGUF_ARRAY, "kv type");
    CHECK(!strcmp(gguf_kv_key(f, gguf_find_key(f, "t.i8")), "t.i8"), "kv key");

    kv_str_is(f, "t.u8", "200");
    kv_str_is(f, "t.i8", "-100");
    kv_str_is(f, "t.u64", "9223372036854775813");
    kv_str_is(f, "t.i64", "-9223372036854775807");
    kv_str_is(f, "t.f32", "0.1");
    kv_str_is(f, "t.true", "true");
    kv_str_is(f, "t.str", "\"h\xc3\xa9llo \\\"q\\\"\\n\"");
    kv_str_is(f, "t.arr_i32", "[3 i32: 1, -2, 3]");
    kv_str_is(f, "t.arr_empty", "[0 u8]");
    kv_str_is(f, "t.arr_bool", "[3 bool: true, false, true]");
    kv_str_is(f, "t.arr_u64", "[12 u64: 0, 1000000007, 2000000014, 3000000021, 4000000028, 5000000035, "
                              "6000000042, 7000000049, ...]");
    kv_str_is(f, "t.arr_str", "[4 strings: \"alpha\", \"\", \"a much longe...\", ...]");
    kv_str_is(f, "t.nested", "[3 arrays: [3 i16: 1, 2, 3], [0 i16], ...]");
    char small[8];
    gguf_kv_to_string(f, gguf_find_key(f, "t.arr_str"), small, sizeof small);
    CHECK(strlen(small) == 7 && !memcmp(small, "[4 stri", 7), "truncated rendering [%s]", small);

    CHECK(gguf_n_tensors(f) == N_ROUND, "n_tensors %d", gguf_n_tensors(f));
    uint64_t expect_off = 0;
    for (int i = 0; i < N_ROUND && i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const tdesc *d = &round_tensors[i];
        CHECK(!strcmp(t->name, d->name), "tensor %d name %s", i, t->name);
        CHECK(t->type == d->type && t->n_dims == d->n_dims, "tensor %s type/n_dims", d->name);
        for (int k = 0; k < 4; k++)
            CHECK(t->ne[k] == (k < d->n_dims ? d->ne[k] : 1), "tensor %s ne[%d] = %lld", d->name, k, (long long)t->ne[k]);
        CHECK(t->nbytes == tdesc_bytes(d), "tensor %s nbytes %llu want %llu", d->name,
              (unsigned long long)t->nbytes, (unsigned long long)tdesc_bytes(d));
        CHECK(t->part == 0, "part");
        CHECK(t->offset % 32 == 0, "tensor %s offset %llu misaligned", d->name, (unsigned long long)t->offset);
        /* llama.cpp's layout: tensors back to back, each padded to 32. */
        if (i == 0) expect_off = t->offset;
        CHECK(t->offset == expect_off, "tensor %s offset %llu, want %llu", d->name,
              (unsigned long long)t->offset, (unsigned long long)expect_off);
        expect_off = (t->offset + t->nbytes + 31) / 32 * 32;
        CHECK(data_matches(t, 100 + i), "tensor %s data", d->name);
        CHECK(gguf_find_tensor(f, d->name) == t, "find %s", d->name);
    }
    CHECK(expect_off == (uint64_t)size, "file ends after the last padded tensor (%llu vs %ld)",
          (unsigned long long)expect_off, size);
    CHECK(gguf_find_tensor(f, "nope") == NULL && gguf_tensor_at(f, N_ROUND) == NULL, "absent tensor");
    gguf_close(f);
    remove(path);
}

/* A file with no tensors and no keys is valid too. */
static void test_empty_model(void) {
    const char *path = tmp("empty.gguf");
    char err[512];
    gguf_writer *w = gguf_writer_new();
    CHECK(gguf_writer_begin(w, path, err, sizeof err) && gguf_writer_end(w, err, sizeof err), "%s", err);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f && gguf_n_tensors(f) == 0 && gguf_n_kv(f) == 0, "empty model: %s", err);
    gguf_close(f);
    remove(path);
}

static void test_alignment(void) {
    const char *path = tmp("align64.gguf");
    char err[512];
    gguf_writer *w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 64);
    declare(w, round_tensors, 4);
    bool ok = gguf_writer_begin(w, path, err, sizeof err) && stream(w, round_tensors, 4, 7, err, sizeof err) &&
              gguf_writer_end(w, err, sizeof err);
    CHECK(ok, "alignment 64: %s", err);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "open align64: %s", err);
    for (int i = 0; f && i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        CHECK(t->offset % 64 == 0 && data_matches(t, 7 + i), "tensor %s with alignment 64", t->name);
    }
    CHECK(file_size(path) % 64 == 0, "padded to 64");
    gguf_close(f);
    remove(path);

    w = gguf_writer_new();
    gguf_set_u32(w, "general.alignment", 48);
    CHECK(!gguf_writer_begin(w, path, err, sizeof err) && strstr(err, "alignment"), "alignment 48 refused: %s", err);
    gguf_writer_free(w);
}

/* Writer misuse: errors, never a bad file. */
static void test_writer_errors(void) {
    char err[512];
    const char *path = tmp("bad.gguf");
    static const struct { const char *name; int type, n_dims; int64_t ne[5]; const char *msg; } bad[] = {
        {"five", QT_F32, 5, {1, 1, 1, 1, 1}, "n_dims"},
        {"zero", QT_F32, 2, {4, 0}, "dimension"},
        {"neg", QT_F32, 1, {-4}, "dimension"},
        {"unknown", 99, 1, {32}, "unknown type"},
        {"gap", 4, 1, {32}, "unknown type"},
        {"q4k_row", QT_Q4_K, 2, {100, 2}, "block size"},
        {"overflow", QT_F32, 3, {INT64_C(1) << 40, INT64_C(1) << 20, INT64_C(1) << 10}, "overflow"},
        {"a_name_that_is_much_too_long_for_llama_cpp_because_it_has_64_chars", QT_F32, 1, {4}, "name longer"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gguf_writer *w = gguf_writer_new();
        gguf_add_tensor(w, bad[i].name, bad[i].type, bad[i].n_dims, bad[i].ne);
        bool ok = gguf_writer_begin(w, path, err, sizeof err);
        CHECK(!ok && strstr(err, bad[i].msg) && strstr(err, path), "tensor %s must be refused (%s): %s",
              bad[i].name, bad[i].msg, err);
        CHECK(access(path, F_OK) != 0, "no file after a refused begin");
        gguf_writer_free(w);
    }

    gguf_writer *w = gguf_writer_new();
    int64_t ne[] = {8};
    gguf_add_tensor(w, "x", QT_F32, 1, ne);
    gguf_add_tensor(w, "x", QT_F32, 1, ne);
    CHECK(!gguf_writer_begin(w, path, err, sizeof err) && strstr(err, "twice"), "duplicate tensor: %s", err);
    gguf_writer_free(w);

    /* Chunks that overrun a tensor, and an incomplete file. */
    w = gguf_writer_new();
    gguf_add_tensor(w, "a", QT_F32, 1, ne);
    gguf_add_tensor(w, "b", QT_F32, 1, ne);
    uint8_t data[64] = {0};
    CHECK(gguf_writer_begin(w, path, err, sizeof err), "begin: %s", err);
    CHECK(!gguf_writer_write(w, data, 33, err, sizeof err) && strstr(err, "'a'"), "overrun: %s", err);
    CHECK(gguf_writer_write(w, data, 32, err, sizeof err), "exact: %s", err);
    CHECK(gguf_writer_write(w, data, 16, err, sizeof err), "half: %s", err);
    CHECK(!gguf_writer_end(w, err, sizeof err) && strstr(err, "'b'") && strstr(err, "16 of 32"), "incomplete: %s", err);
    CHECK(access(path, F_OK) != 0, "incomplete file removed");
    gguf_writer_free(w);

    /* Freed before end: the partial file goes away. */
    w = gguf_writer_new();
    gguf_add_tensor(w, "a", QT_F32, 1, ne);
    CHECK(gguf_writer_begin(w, path, err, sizeof err), "begin: %s", err);
    CHECK(access(path, F_OK) == 0, "file exists while writing");
    gguf_writer_free(w);
    CHECK(access(path, F_OK) != 0, "partial file removed by free");

    w = gguf_writer_new();
    CHECK(!gguf_writer_begin(w, "/nonexistent-dir/x.gguf", err, sizeof err) && strstr(err, "/nonexistent-dir/x.gguf"),
          "unwritable path: %s", err);
    gguf_writer_free(w);
}

/* ---- fixtures ---- */

static char *read_text(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, fp);
    fclose(fp);
    s[got] = 0;
    return s;
}

/* Value of `key=` in a space-separated config field, or -1. */
static long long config_int(const char *config, const char *key) {
    char pat[64], padded[2048];
    snprintf(pat, sizeof pat, " %s=", key);
    snprintf(padded, sizeof padded, " %s", config);
    const char *p = strstr(padded, pat);
    return p ? atoll(p + strlen(pat)) : -1;
}

static bool same_bytes_in_file(const char *path, uint64_t offset, const void *mem, size_t n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    uint8_t *buf = malloc(n ? n : 1);
    bool ok = fseeko(fp, (off_t)offset, SEEK_SET) == 0 && fread(buf, 1, n, fp) == n && !memcmp(buf, mem, n);
    free(buf);
    fclose(fp);
    return ok;
}

static void check_fixture(const char *path, long long size, int n_tensors, const char *types, const char *config) {
    char err[512];
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "open fixture %s: %s", path, err);
    if (!f) return;
    CHECK(gguf_n_tensors(f) == n_tensors, "%s: %d tensors, models.tsv says %d", path, gguf_n_tensors(f), n_tensors);
    CHECK((long long)gguf_part_size(f, 0) == size, "%s: size", path);
    uint64_t len;
    const char *arch = gguf_get_str(f, "general.architecture", &len);
    CHECK(arch && len == 9 && !memcmp(arch, "deepseek2", 9), "%s: architecture", path);
    int64_t v;
    CHECK(gguf_get_int(f, "deepseek2.block_count", &v) && v == config_int(config, "layers"), "%s: block_count", path);
    CHECK(gguf_get_int(f, "deepseek2.embedding_length", &v) && v == config_int(config, "hidden"), "%s: hidden", path);
    CHECK(gguf_get_int(f, "deepseek2.expert_count", &v) && v == config_int(config, "experts"), "%s: experts", path);
    enum gguf_vtype et;
    uint64_t n;
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n) && et == GGUF_STRING && (long long)n == config_int(config, "vocab"),
          "%s: tokens", path);
    const char *tok = gguf_get_arr_str(f, "tokenizer.ggml.tokens", 0, &len);
    CHECK(tok && len == strlen("<\xef\xbd\x9c" "begin\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>") &&
              !memcmp(tok, "<\xef\xbd\x9c" "begin", 6), "%s: token 0", path);
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    CHECK(emb && emb->ne[0] == config_int(config, "hidden") && emb->ne[1] == config_int(config, "vocab"),
          "%s: token_embd shape", path);

    /* Tensor type counts, e.g. "F32:23 Q4_K:24 ...". */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", types);
    int total = 0;
    for (char *tokp = strtok(buf, " "); tokp; tokp = strtok(NULL, " ")) {
        char *colon = strchr(tokp, ':');
        if (!colon) continue;
        *colon = 0;
        int want = atoi(colon + 1), got = 0;
        for (int i = 0; i < gguf_n_tensors(f); i++)
            if (!strcmp(qtype_name(gguf_tensor_at(f, i)->type), tokp)) got++;
        CHECK(got == want, "%s: %d tensors of type %s, want %d", path, got, tokp, want);
        total += want;
    }
    CHECK(total == n_tensors, "%s: type counts add up", path);

    /* Sizes agree with llama.cpp's layout: back to back in offset order,
     * each padded to 32, the last one ending the file. */
    uint64_t end = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        CHECK(t->offset % 32 == 0, "%s: %s aligned", path, t->name);
        if (i > 0) CHECK(t->offset == end, "%s: %s at %llu, previous ends at %llu", path, t->name,
                         (unsigned long long)t->offset, (unsigned long long)end);
        end = (t->offset + t->nbytes + 31) / 32 * 32;
    }
    CHECK((long long)end == size, "%s: last tensor ends at %llu, file is %lld", path, (unsigned long long)end, size);
    /* The data pointers are where the offsets say. */
    for (int i = 0; i < gguf_n_tensors(f); i += gguf_n_tensors(f) / 5 + 1) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        size_t k = t->nbytes < 4096 ? (size_t)t->nbytes : 4096;
        CHECK(same_bytes_in_file(path, t->offset, t->data, k), "%s: %s data", path, t->name);
    }
    int ti = gguf_find_key(f, "tokenizer.ggml.tokens");
    gguf_kv_to_string(f, ti, buf, sizeof buf);
    CHECK(!strncmp(buf, "[737 strings: \"<\xef\xbd\x9c" "begin", 20), "%s: tokens render as %s", path, buf);
    gguf_close(f);
}

static void test_fixtures(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/models.tsv", fixtures_dir());
    char *tsv = read_text(path);
    CHECK(tsv != NULL, "cannot read %s", path);
    if (!tsv) return;
    int rows = 0;
    char *save = NULL;
    for (char *line = strtok_r(tsv, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "model\t", 6)) continue;
        char *col[9];
        int nc = 0;
        for (char *p = line; nc < 9; nc++) {
            col[nc] = p;
            char *tab = strchr(p, '\t');
            if (!tab) { nc++; break; }
            *tab = 0;
            p = tab + 1;
        }
        CHECK(nc == 9, "models.tsv row with %d columns", nc);
        if (nc != 9) continue;
        snprintf(path, sizeof path, "%s/models/%s", fixtures_dir(), col[1]);
        check_fixture(path, atoll(col[2]), atoi(col[6]), col[7], col[8]);
        rows++;
    }
    CHECK(rows == 9, "models.tsv has %d models, expected 9", rows);
    free(tsv);
}

static void test_vocab(void) {
    char path[512], err[512], buf[256];
    snprintf(path, sizeof path, "%s/tokenizer/deepseek-v3-vocab.gguf", fixtures_dir());
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "open vocab: %s", err);
    if (!f) return;
    CHECK(gguf_version(f) == 3 && gguf_n_tensors(f) == 0, "vocab: version %d, %d tensors", gguf_version(f), gguf_n_tensors(f));
    uint64_t len, n;
    enum gguf_vtype et;
    const char *s = gguf_get_str(f, "tokenizer.ggml.model", &len);
    CHECK(s && len == 4 && !memcmp(s, "gpt2", 4), "vocab: model");
    s = gguf_get_str(f, "tokenizer.ggml.pre", &len);
    CHECK(s && len == 11 && !memcmp(s, "deepseek-v3", 11), "vocab: pre");
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &et, &n) && et == GGUF_STRING && n == 129280, "vocab: tokens");
    CHECK(gguf_get_arr(f, "tokenizer.ggml.merges", &et, &n) && et == GGUF_STRING && n == 127741, "vocab: merges");
    s = gguf_get_arr_str(f, "tokenizer.ggml.tokens", 128815, &len);
    CHECK(s && len == 11 && !memcmp(s, "[PAD128815]", 11), "vocab: token 128815");
    s = gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, &len);
    CHECK(s && !memcmp(s, "<\xef\xbd\x9c" "end\xe2\x96\x81of", 12), "vocab: token 1");
    CHECK(gguf_get_arr(f, "tokenizer.ggml.token_type", &et, &n) && et == GGUF_INT32 && n == 129280, "vocab: token_type");
    const uint8_t *tt = gguf_get_arr_data(f, "tokenizer.ggml.token_type");
    int count[8] = {0};
    for (uint64_t i = 0; tt && i < n; i++) {
        int32_t v;
        memcpy(&v, tt + 4 * i, 4);
        if (v >= 0 && v < 8) count[v]++;
    }
    CHECK(count[1] == 127997 && count[3] == 818 && count[5] == 465, "vocab: token types %d %d %d", count[1], count[3], count[5]);
    int64_t v;
    CHECK(gguf_get_int(f, "tokenizer.ggml.bos_token_id", &v) && v == 0, "vocab: bos");
    CHECK(gguf_get_int(f, "tokenizer.ggml.eos_token_id", &v) && v == 1, "vocab: eos");
    gguf_kv_to_string(f, gguf_find_key(f, "tokenizer.ggml.tokens"), buf, sizeof buf);
    CHECK(!strncmp(buf, "[129280 strings: \"<", 19) && strstr(buf, ", ...]"), "vocab: tokens render as %s", buf);
    gguf_close(f);
}

/* ---- split models ---- */

static const tdesc split_tensors[] = {
    {"token_embd.weight", QT_F32, 2, {8, 6}, 1, 4},
    {"blk.0.attn_norm.weight", QT_F32, 1, {8}, 1, 4},
    {"blk.0.ffn_up_exps.weight", QT_Q8_0, 3, {32, 4, 2}, 32, 34},
    {"blk.1.attn_norm.weight", QT_F32, 1, {8}, 1, 4},
    {"blk.1.ffn_up_exps.weight", QT_Q4_K, 3, {256, 2, 2}, 256, 144},
    {"output_norm.weight", QT_F16, 1, {8}, 1, 2},
    {"output.weight", QT_Q6_K, 2, {256, 3}, 256, 210},
};
#define N_SPLIT 7
static const int split_first[] = {0, 3, 5, 7}; /* tensors of part k: [first[k], first[k+1]) */

/* Writes part k of 3 as llama.cpp's gguf-split does; tensors_count and
 * split_no let a test write a lying part. */
static bool write_split_part(const char *prefix, int k, int split_no, int tensors_count, const tdesc *extra) {
    char path[300], err[512];
    snprintf(path, sizeof path, "%s-%05d-of-%05d.gguf", prefix, k + 1, 3);
    gguf_writer *w = gguf_writer_new();
    gguf_set_u16(w, "split.no", (uint16_t)split_no);
    gguf_set_u16(w, "split.count", 3);
    gguf_set_i32(w, "split.tensors.count", tensors_count);
    if (k == 0) {
        gguf_set_str(w, "general.architecture", "deepseek2");
        gguf_set_u32(w, "deepseek2.block_count", 2);
        gguf_set_f32(w, "deepseek2.rope.freq_base", 10000.0f);
    }
    int a = split_first[k], b = split_first[k + 1];
    declare(w, split_tensors + a, b - a);
    if (extra) declare(w, extra, 1);
    bool ok = gguf_writer_begin(w, path, err, sizeof err) && stream(w, split_tensors + a, b - a, 500 + a, err, sizeof err) &&
              (!extra || stream(w, extra, 1, 900, err, sizeof err)) && gguf_writer_end(w, err, sizeof err);
    CHECK(ok, "write split part %d: %s", k + 1, err);
    gguf_writer_free(w);
    return ok;
}

static void check_split_table(const char *via, const char *prefix) {
    char err[512];
    gguf_file *f = gguf_open(via, err, sizeof err);
    CHECK(f != NULL, "open split via %s: %s", via, err);
    if (!f) return;
    CHECK(gguf_n_parts(f) == 3, "via %s: %d parts", via, gguf_n_parts(f));
    for (int k = 0; k < 3 && k < gguf_n_parts(f); k++) {
        char want[300];
        snprintf(want, sizeof want, "%s-%05d-of-00003.gguf", prefix, k + 1);
        CHECK(!strcmp(gguf_part_path(f, k), want), "via %s: part %d is %s", via, k, gguf_part_path(f, k));
        CHECK(gguf_part_size(f, k) == (uint64_t)file_size(want), "part %d size", k);
    }
    /* Metadata of the first part, whichever part was opened. */
    CHECK(gguf_n_kv(f) == 6, "via %s: %d keys", via, gguf_n_kv(f));
    int64_t v;
    CHECK(gguf_get_int(f, "deepseek2.block_count", &v) && v == 2, "via %s: block_count", via);
    CHECK(gguf_get_int(f, "split.no", &v) && v == 0, "via %s: split.no of part 1", via);
    CHECK(gguf_kv_type(f, gguf_find_key(f, "split.count")) == GGUF_UINT16, "split.count is u16");
    CHECK(gguf_n_tensors(f) == N_SPLIT, "via %s: %d tensors", via, gguf_n_tensors(f));
    for (int i = 0; i < N_SPLIT && i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const tdesc *d = &split_tensors[i];
        int part = i < 3 ? 0 : i < 5 ? 1 : 2;
        CHECK(!strcmp(t->name, d->name) && t->type == d->type && t->n_dims == d->n_dims && t->ne[0] == d->ne[0] &&
                  t->ne[1] == (d->n_dims > 1 ? d->ne[1] : 1) && t->nbytes == tdesc_bytes(d),
              "via %s: tensor %d is %s", via, i, t->name);
        CHECK(t->part == part, "via %s: %s in part %d, want %d", via, d->name, t->part, part);
        CHECK(data_matches(t, 500 + i), "via %s: %s data", via, d->name);
        CHECK(gguf_find_tensor(f, d->name) == t, "find %s", d->name);
        CHECK(same_bytes_in_file(gguf_part_path(f, t->part), t->offset, t->data, (size_t)t->nbytes),
              "via %s: %s offset in its part", via, d->name);
    }
    gguf_close(f);
}

static void expect_open_fails(const char *path, const char *name_in_msg, const char *what) {
    char err[512] = "";
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f == NULL, "%s: open of %s should fail", what, path);
    CHECK(err[0] && strstr(err, name_in_msg), "%s: message [%s] should name %s", what, err, name_in_msg);
    if (what[0] && !strstr(err, what)) CHECK(0, "message [%s] should mention '%s'", err, what);
    gguf_close(f);
}

static void test_split(void) {
    char prefix[200], p1[300], p2[300], p3[300];
    snprintf(prefix, sizeof prefix, "%s/DeepSeek-tiny", tmpdir);
    snprintf(p1, sizeof p1, "%s-00001-of-00003.gguf", prefix);
    snprintf(p2, sizeof p2, "%s-00002-of-00003.gguf", prefix);
    snprintf(p3, sizeof p3, "%s-00003-of-00003.gguf", prefix);
    for (int k = 0; k < 3; k++) write_split_part(prefix, k, k, N_SPLIT, NULL);
    check_split_table(p1, prefix);
    check_split_table(p2, prefix);
    check_split_table(p3, prefix);

    /* A part opened alone under another name cannot find its siblings. */
    const char *renamed = tmp("renamed.gguf");
    CHECK(link(p2, renamed) == 0, "link");
    expect_open_fails(renamed, "renamed.gguf", "named");
    remove(renamed);

    /* Lying parts. */
    write_split_part(prefix, 2, 1, N_SPLIT, NULL);
    expect_open_fails(p1, "00003-of-00003", "split.no");
    write_split_part(prefix, 2, 2, N_SPLIT, NULL);
    write_split_part(prefix, 0, 0, N_SPLIT + 1, NULL);
    expect_open_fails(p2, "00001-of-00003", "split.tensors.count");
    static const tdesc dup = {"blk.0.attn_norm.weight", QT_F32, 1, {8}, 1, 4};
    write_split_part(prefix, 2, 2, N_SPLIT + 1, &dup);
    expect_open_fails(p1, "blk.0.attn_norm.weight", "duplicate");
    write_split_part(prefix, 0, 0, N_SPLIT, NULL);
    write_split_part(prefix, 2, 2, N_SPLIT, NULL);
    check_split_table(p1, prefix); /* whole again */

    /* A missing part, reached from either side. */
    remove(p3);
    expect_open_fails(p1, "DeepSeek-tiny-00003-of-00003.gguf", "split part 3 of 3");
    expect_open_fails(p2, "DeepSeek-tiny-00003-of-00003.gguf", "No such file");
    remove(p1);
    remove(p2);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_gguf.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_empty_model();
    test_alignment();
    test_writer_errors();
    test_fixtures();
    test_vocab();
    test_split();
    if (rmdir(tmpdir) != 0) CHECK(0, "temp dir %s not empty at the end", tmpdir);
    return check_summary("test_gguf");
}
