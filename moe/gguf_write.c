/* GGUF writer (version 3, the layout llama.cpp writes and loads).
 *
 * Metadata and tensor declarations are collected in memory; begin() writes
 * the header, every key/value pair and every tensor info, whose data
 * offsets follow from the declared sizes: tensors are laid out in
 * declaration order, each padded to the alignment (general.alignment if
 * set, else 32).  The data is then streamed in that order, in chunks of any
 * size, so a generator never holds the whole model.  end() checks that
 * every byte was written.
 *
 * The setters cannot fail visibly (they return void), so the first error
 * (bad tensor declaration, out of memory) is kept and reported by begin().
 * A file left incomplete (an error, or free() before end()) is removed. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_internal.h"
#include "quant.h"

/* llama.cpp refuses tensor names of GGML_MAX_NAME (64) bytes or more. */
#define MAX_TENSOR_NAME 63

/* A growable byte buffer; on allocation failure it sets oom and stops. */
typedef struct bytebuf {
    uint8_t *p;  /* bytes */
    size_t n;    /* used */
    size_t cap;  /* allocated */
    bool oom;    /* an allocation failed: contents are incomplete */
} bytebuf;

static void bb_put(bytebuf *b, const void *src, size_t n) {
    if (b->oom || n == 0) return;
    if (n > b->cap - b->n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->n < n) {
            if (cap > SIZE_MAX / 2) { b->oom = true; return; }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void bb_u32(bytebuf *b, uint32_t v) { uint8_t x[4]; gguf_wr32(x, v); bb_put(b, x, 4); }
static void bb_u64(bytebuf *b, uint64_t v) { uint8_t x[8]; gguf_wr64(x, v); bb_put(b, x, 8); }
static void bb_str(bytebuf *b, const char *s, size_t len) { bb_u64(b, len); bb_put(b, s, len); }

/* One key/value pair, already encoded. */
typedef struct wkv {
    char *key;     /* NUL-terminated */
    bytebuf val;   /* type id followed by the value's encoding */
} wkv;

/* One declared tensor. */
typedef struct wtensor {
    char *name;              /* NUL-terminated */
    int type;                /* enum qtype */
    int n_dims;              /* 1..4 */
    int64_t ne[GGUF_MAX_DIMS]; /* dims, unused ones 1 */
    uint64_t nbytes;         /* data size */
    uint64_t offset;         /* in the data section; set by begin() */
} wtensor;

struct gguf_writer {
    wkv *kv;                 /* n_kv pairs in the order first set */
    int n_kv, cap_kv;
    wtensor *t;              /* n_t tensors in declaration order */
    int n_t, cap_t;
    char first_err[256];     /* first error of a setter/declaration; "" if none */
    FILE *fp;                /* open between begin() and end() */
    char *path;              /* the file being written */
    uint32_t alignment;      /* data alignment in use */
    int cur;                 /* tensor whose data comes next */
    uint64_t cur_done;       /* bytes of it written so far */
    bool failed;             /* an I/O error happened after begin() */
};

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Keeps the first error of a void setter for begin() to report. */
__attribute__((format(printf, 2, 3)))
static void note_err(gguf_writer *w, const char *fmt, ...) {
    if (w->first_err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_err, sizeof w->first_err, fmt, ap);
    va_end(ap);
}

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->fp) { /* begun but not ended: the file is incomplete */
        fclose(w->fp);
        remove(w->path);
    }
    for (int i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    free(w->kv);
    for (int i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w->path);
    free(w);
}

/* The slot for key: the existing one (its value reset: setting a key again
 * replaces it, as in llama.cpp) or a new one.  NULL after noting an error. */
static bytebuf *kv_slot(gguf_writer *w, const char *key) {
    if (!w) return NULL;
    if (w->fp) return note_err(w, "key '%s' set after gguf_writer_begin", key ? key : "(null)"), NULL;
    if (!key || !key[0]) return note_err(w, "empty or missing key"), NULL;
    for (int i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            w->kv[i].val.n = 0;
            return &w->kv[i].val;
        }
    if (w->n_kv == w->cap_kv) {
        int cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *kv = realloc(w->kv, (size_t)cap * sizeof *kv);
        if (!kv) return note_err(w, "out of memory for key '%s'", key), NULL;
        w->kv = kv;
        w->cap_kv = cap;
    }
    wkv *kv = &w->kv[w->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = strdup(key))) return note_err(w, "out of memory for key '%s'", key), NULL;
    w->n_kv++;
    return &kv->val;
}

/* Sets key to a scalar of type t whose little-endian bytes are le[0..size). */
static void set_scalar(gguf_writer *w, const char *key, enum gguf_vtype t, const uint8_t *le, size_t size) {
    bytebuf *b = kv_slot(w, key);
    if (!b) return;
    bb_u32(b, t);
    bb_put(b, le, size);
}

void gguf_set_u8(gguf_writer *w, const char *key, uint8_t v) { set_scalar(w, key, GGUF_UINT8, &v, 1); }
void gguf_set_i8(gguf_writer *w, const char *key, int8_t v) {
    uint8_t u;
    memcpy(&u, &v, 1);
    set_scalar(w, key, GGUF_INT8, &u, 1);
}
void gguf_set_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t u = v ? 1 : 0;
    set_scalar(w, key, GGUF_BOOL, &u, 1);
}
void gguf_set_u16(gguf_writer *w, const char *key, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    set_scalar(w, key, GGUF_UINT16, x, 2);
}
void gguf_set_i16(gguf_writer *w, const char *key, int16_t v) {
    uint16_t u;
    memcpy(&u, &v, 2);
    uint8_t x[2] = {(uint8_t)u, (uint8_t)(u >> 8)};
    set_scalar(w, key, GGUF_INT16, x, 2);
}
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    uint8_t x[4];
    gguf_wr32(x, v);
    set_scalar(w, key, GGUF_UINT32, x, 4);
}
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t x[4];
    gguf_wr32(x, u);
    set_scalar(w, key, GGUF_INT32, x, 4);
}
void gguf_set_f32(gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    uint8_t x[4];
    gguf_wr32(x, u);
    set_scalar(w, key, GGUF_FLOAT32, x, 4);
}
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    uint8_t x[8];
    gguf_wr64(x, v);
    set_scalar(w, key, GGUF_UINT64, x, 8);
}
void gguf_set_i64(gguf_writer *w, const char *key, int64_t v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t x[8];
    gguf_wr64(x, u);
    set_scalar(w, key, GGUF_INT64, x, 8);
}
void gguf_set_f64(gguf_writer *w, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    uint8_t x[8];
    gguf_wr64(x, u);
    set_scalar(w, key, GGUF_FLOAT64, x, 8);
}

void gguf_set_str(gguf_writer *w, const char *key, const char *v) {
    if (w && !v) { note_err(w, "key '%s': NULL string", key ? key : "(null)"); return; }
    bytebuf *b = kv_slot(w, key);
    if (!b) return;
    bb_u32(b, GGUF_STRING);
    bb_str(b, v, strlen(v));
}

/* Appends the encoding of a numeric array (header and elements). */
static bool put_numeric_array(gguf_writer *w, bytebuf *b, const char *key, enum gguf_vtype etype, const void *data, uint64_t n) {
    uint64_t esz = gguf_scalar_size(etype);
    if (!esz) return note_err(w, "key '%s': array element type %d is not numeric", key, (int)etype), false;
    if (n && !data) return note_err(w, "key '%s': NULL array data", key), false;
    if (n > SIZE_MAX / esz) return note_err(w, "key '%s': array of %" PRIu64 " elements is too large", key, n), false;
    bb_u32(b, etype);
    bb_u64(b, n);
    bb_put(b, data, (size_t)(n * esz)); /* the caller's data is already little-endian */
    return true;
}

void gguf_set_arr(gguf_writer *w, const char *key, enum gguf_vtype etype, const void *data, uint64_t n) {
    bytebuf *b = kv_slot(w, key);
    if (!b) return;
    bb_u32(b, GGUF_ARRAY);
    put_numeric_array(w, b, key, etype, data, n);
}

void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    bytebuf *b = kv_slot(w, key);
    if (!b) return;
    if (n && !v) { note_err(w, "key '%s': NULL string array", key); return; }
    bb_u32(b, GGUF_ARRAY);
    bb_u32(b, GGUF_STRING);
    bb_u64(b, n);
    for (uint64_t i = 0; i < n; i++) {
        if (!v[i]) { note_err(w, "key '%s': string %" PRIu64 " is NULL", key, i); return; }
        bb_str(b, v[i], strlen(v[i]));
    }
}

void gguf_set_arr_arr(gguf_writer *w, const char *key, enum gguf_vtype etype, const void *const *data,
                      const uint64_t *n_inner, uint64_t n) {
    bytebuf *b = kv_slot(w, key);
    if (!b) return;
    if (n && (!data || !n_inner)) { note_err(w, "key '%s': NULL nested array", key); return; }
    bb_u32(b, GGUF_ARRAY);
    bb_u32(b, GGUF_ARRAY);
    bb_u64(b, n);
    for (uint64_t i = 0; i < n; i++)
        if (!put_numeric_array(w, b, key, etype, data[i], n_inner[i])) return;
}

void gguf_add_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne) {
    if (!w) return;
    if (w->fp) { note_err(w, "tensor '%s' declared after gguf_writer_begin", name ? name : "(null)"); return; }
    if (!name || !name[0]) { note_err(w, "tensor with an empty or missing name"); return; }
    if (strlen(name) > MAX_TENSOR_NAME) {
        note_err(w, "tensor '%s': name longer than %d bytes (llama.cpp limit)", name, MAX_TENSOR_NAME);
        return;
    }
    for (int i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) { note_err(w, "tensor '%s' declared twice", name); return; }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne) {
        note_err(w, "tensor '%s': n_dims %d is outside 1..%d", name, n_dims, GGUF_MAX_DIMS);
        return;
    }
    const qtype_info *qi = type >= 0 && type < QT_COUNT ? qtype_get(type) : NULL;
    if (!qi || qi->blck <= 0 || qi->type_size <= 0) { note_err(w, "tensor '%s': unknown type %d", name, type); return; }

    wtensor t = {.type = type, .n_dims = n_dims};
    int64_t nelem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] <= 0) { note_err(w, "tensor '%s': dimension %d is %" PRId64 ", must be > 0", name, d, t.ne[d]); return; }
        if (nelem > INT64_MAX / t.ne[d]) { note_err(w, "tensor '%s': element count overflows", name); return; }
        nelem *= t.ne[d];
    }
    if (t.ne[0] % qi->blck) {
        note_err(w, "tensor '%s': row length %" PRId64 " is not a multiple of the %s block size %d",
                 name, t.ne[0], qi->name, qi->blck);
        return;
    }
    uint64_t blocks = (uint64_t)(nelem / qi->blck);
    if (blocks > UINT64_MAX / 2 / (uint64_t)qi->type_size) { note_err(w, "tensor '%s': byte size overflows", name); return; }
    t.nbytes = blocks * (uint64_t)qi->type_size;

    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) { note_err(w, "out of memory for tensor '%s'", name); return; }
        w->t = nt;
        w->cap_t = cap;
    }
    if (!(t.name = strdup(name))) { note_err(w, "out of memory for tensor '%s'", name); return; }
    w->t[w->n_t++] = t;
}

/* Writes n bytes or records an I/O error. */
static bool put(gguf_writer *w, const void *p, size_t n, char *err, size_t errlen) {
    if (n && fwrite(p, 1, n, w->fp) != n) {
        set_err(err, errlen, "%s: write failed: %s", w->path, strerror(errno));
        w->failed = true;
        return false;
    }
    return true;
}

static bool pad(gguf_writer *w, uint64_t pos, char *err, size_t errlen) {
    static const uint8_t zeros[64];
    uint64_t n = (w->alignment - pos % w->alignment) % w->alignment;
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (!put(w, zeros, k, err, errlen)) return false;
        n -= k;
    }
    return true;
}

bool gguf_writer_begin(gguf_writer *w, const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!w || !path) return set_err(err, errlen, "gguf_writer_begin: no writer or no path"), false;
    if (w->fp || w->path) return set_err(err, errlen, "%s: gguf_writer_begin called twice", path), false;
    if (w->first_err[0]) return set_err(err, errlen, "%s: %s", path, w->first_err), false;
    for (int i = 0; i < w->n_kv; i++)
        if (w->kv[i].val.oom) return set_err(err, errlen, "%s: out of memory for key '%s'", path, w->kv[i].key), false;

    /* general.alignment, if set, must be a u32 power of two (as llama.cpp requires). */
    for (int i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment")) continue;
        const bytebuf *v = &w->kv[i].val;
        uint32_t a = v->n == 8 && gguf_rd32(v->p) == GGUF_UINT32 ? gguf_rd32(v->p + 4) : 0;
        if (a == 0 || (a & (a - 1)))
            return set_err(err, errlen, "%s: general.alignment must be a u32 power of two", path), false;
        w->alignment = a;
    }

    bytebuf h = {0};
    bb_put(&h, GGUF_MAGIC, 4);
    bb_u32(&h, GGUF_WRITE_VERSION);
    bb_u64(&h, (uint64_t)w->n_t);
    bb_u64(&h, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        bb_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        bb_put(&h, w->kv[i].val.p, w->kv[i].val.n);
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        t->offset = offset;
        bb_str(&h, t->name, strlen(t->name));
        bb_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) bb_u64(&h, (uint64_t)t->ne[d]);
        bb_u32(&h, (uint32_t)t->type);
        bb_u64(&h, t->offset);
        uint64_t padded = t->nbytes + (w->alignment - t->nbytes % w->alignment) % w->alignment;
        if (padded > UINT64_MAX / 2 - offset) {
            free(h.p);
            return set_err(err, errlen, "%s: tensor '%s': data offsets overflow", path, t->name), false;
        }
        offset += padded;
    }
    if (h.oom) {
        free(h.p);
        return set_err(err, errlen, "%s: out of memory building the header", path), false;
    }

    w->path = strdup(path);
    if (!w->path) {
        free(h.p);
        return set_err(err, errlen, "%s: out of memory", path), false;
    }
    w->fp = fopen(path, "wb");
    if (!w->fp) {
        set_err(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        free(h.p);
        return false;
    }
    bool ok = put(w, h.p, h.n, err, errlen) && pad(w, h.n, err, errlen);
    free(h.p);
    w->cur = 0;
    w->cur_done = 0;
    return ok;
}

bool gguf_writer_write(gguf_writer *w, const void *data, size_t nbytes, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!w || !w->fp) return set_err(err, errlen, "gguf_writer_write: writer not begun"), false;
    if (w->failed) return set_err(err, errlen, "%s: an earlier write failed", w->path), false;
    if (nbytes == 0) return true;
    if (w->cur >= w->n_t)
        return set_err(err, errlen, "%s: %zu bytes written after the data of all %d tensors", w->path, nbytes, w->n_t), false;
    wtensor *t = &w->t[w->cur];
    if (nbytes > t->nbytes - w->cur_done)
        return set_err(err, errlen, "%s: tensor '%s': chunk of %zu bytes overruns its size (%" PRIu64 " of %" PRIu64 " bytes left)",
                       w->path, t->name, nbytes, t->nbytes - w->cur_done, t->nbytes), false;
    if (!data) return set_err(err, errlen, "%s: tensor '%s': NULL data", w->path, t->name), false;
    if (!put(w, data, nbytes, err, errlen)) return false;
    w->cur_done += nbytes;
    if (w->cur_done == t->nbytes) {
        if (!pad(w, t->nbytes, err, errlen)) return false;
        w->cur++;
        w->cur_done = 0;
    }
    return true;
}

bool gguf_writer_end(gguf_writer *w, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!w || !w->fp) return set_err(err, errlen, "gguf_writer_end: writer not begun"), false;
    bool ok = !w->failed;
    if (!ok) set_err(err, errlen, "%s: an earlier write failed; file removed", w->path);
    else if (w->cur < w->n_t) {
        set_err(err, errlen, "%s: tensor '%s': only %" PRIu64 " of %" PRIu64 " bytes written (%d of %d tensors complete); file removed",
                w->path, w->t[w->cur].name, w->cur_done, w->t[w->cur].nbytes, w->cur, w->n_t);
        ok = false;
    }
    if (fclose(w->fp) != 0 && ok) {
        set_err(err, errlen, "%s: close failed: %s; file removed", w->path, strerror(errno));
        ok = false;
    }
    w->fp = NULL;
    if (!ok) remove(w->path);
    return ok;
}
