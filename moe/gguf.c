/* GGUF reader.
 *
 * Each file is mapped read-only (MAP_PRIVATE) and its header parsed through
 * a cursor that checks every read against the file size, so a corrupt or
 * hostile file gives an error message, never an out-of-bounds read.  Keys,
 * strings and arrays stay in the map; only key and tensor names are copied
 * (to NUL-terminate them) plus small indexes for lookup.  Tensor data is
 * never touched here: a 400 GB model opens in milliseconds and only the
 * pages that the engine later reads become resident.
 *
 * A split model (split.count > 1) is opened from any of its parts: the
 * other parts' names follow llama.cpp's PREFIX-%05d-of-%05d.gguf. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_internal.h"
#include "quant.h"

/* Arrays of arrays nested deeper than this are refused: bounds the
 * recursion of the parser on a hostile file. */
#define MAX_NESTING 8

/* Smallest possible encodings, used to reject absurd counts before any
 * allocation: a key/value pair is a length, a type and at least one byte;
 * a tensor info is a name length, n_dims, one dimension, type and offset. */
#define MIN_KV_BYTES 13
#define MIN_TENSOR_INFO_BYTES 32

/* One metadata key/value pair; everything but the key points into the map. */
typedef struct kv_entry {
    char *key;             /* NUL-terminated copy of the key */
    uint32_t type;         /* enum gguf_vtype of the value */
    uint32_t etype;        /* arrays: element type */
    uint64_t n;            /* strings: byte length; arrays: element count; scalars: 1 */
    const uint8_t *raw;    /* the value's encoding (after its type id) */
    const uint8_t *data;   /* scalar bytes, string bytes, or first array element */
    const uint8_t **elems; /* arrays of strings/arrays: start of each element; else NULL */
} kv_entry;

/* One mapped file of a (possibly split) model. */
typedef struct gguf_part {
    char *path;            /* file name as given or derived */
    const uint8_t *map;    /* the whole file, read-only; NULL if empty */
    uint64_t size;         /* file size in bytes */
    int version;           /* GGUF version, 2 or 3 */
    uint32_t alignment;    /* general.alignment, or 32 */
    uint64_t data_start;   /* absolute offset of the aligned data section */
    int n_kv;
    kv_entry *kv;          /* n_kv pairs, in file order */
    kv_entry **kv_sorted;  /* the same, sorted by key, for bsearch */
    int n_tensors;
    gguf_tensor *tensors;  /* this part's tensors until merged into gguf_file */
} gguf_part;

struct gguf_file {
    int n_parts;
    gguf_part *parts;              /* n_parts files; parts[0] holds the metadata */
    int n_tensors;
    gguf_tensor *tensors;          /* all parts' tensors, part by part, file order */
    const gguf_tensor **by_name;   /* the same, sorted by name, for bsearch */
};

/* ---- messages ---- */

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Copies a name from the file for a message: as much as fits in buf,
 * control bytes shown as '?', "..." if cut. */
static const char *printable(char *buf, size_t buflen, const uint8_t *s, uint64_t len) {
    size_t max = buflen - 4, o = 0;
    for (uint64_t i = 0; i < len && o < max; i++) buf[o++] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
    if (len > o) memcpy(buf + o, "...", 3), o += 3;
    buf[o] = 0;
    return buf;
}

/* ---- bounds-checked cursor over one file ---- */

typedef struct cursor {
    const uint8_t *base; /* file bytes */
    uint64_t size;       /* file size */
    uint64_t pos;        /* next byte to read; never above size */
    const char *path;    /* for messages */
    char what[128];      /* the item being parsed, for messages */
    char *err;           /* caller's message buffer */
    size_t errlen;
} cursor;

__attribute__((format(printf, 2, 3)))
static bool fail(cursor *c, const char *fmt, ...) {
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(c->err, c->errlen, "%s: %s: %s", c->path, c->what, msg);
    return false;
}

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static bool need(cursor *c, uint64_t n) {
    if (n <= left(c)) return true;
    return fail(c, "file truncated: %" PRIu64 " bytes needed at offset %" PRIu64 " but the file has %" PRIu64,
                n, c->pos, c->size);
}

static bool get_u32(cursor *c, uint32_t *v) {
    if (!need(c, 4)) return false;
    *v = gguf_rd32(c->base + c->pos);
    c->pos += 4;
    return true;
}

static bool get_u64(cursor *c, uint64_t *v) {
    if (!need(c, 8)) return false;
    *v = gguf_rd64(c->base + c->pos);
    c->pos += 8;
    return true;
}

/* A length-prefixed string; *s points into the file. */
static bool get_str(cursor *c, const uint8_t **s, uint64_t *len) {
    uint64_t n;
    if (!get_u64(c, &n)) return false;
    if (n > left(c))
        return fail(c, "string length %" PRIu64 " at offset %" PRIu64 " runs past the end of the file (%" PRIu64
                    " bytes): corrupt or truncated",
                    n, c->pos - 8, c->size);
    *s = c->base + c->pos;
    *len = n;
    c->pos += n;
    return true;
}

/* A key or tensor name: non-empty, no NUL byte; returns a malloc'd copy. */
static char *get_name(cursor *c, const char *kind) {
    const uint8_t *s;
    uint64_t len;
    if (!get_str(c, &s, &len)) return NULL;
    if (len == 0) return fail(c, "empty %s", kind), NULL;
    if (memchr(s, 0, len)) return fail(c, "%s contains a NUL byte", kind), NULL;
    char *copy = malloc(len + 1);
    if (!copy) return fail(c, "out of memory for a %s of %" PRIu64 " bytes", kind, len), NULL;
    memcpy(copy, s, len);
    copy[len] = 0;
    return copy;
}

/* Parses one value of type t; records it in kv if non-NULL (top level).
 * depth counts the enclosing arrays. */
static bool parse_value(cursor *c, uint32_t t, int depth, kv_entry *kv) {
    uint64_t sz = gguf_scalar_size(t);
    if (kv) kv->raw = c->base + c->pos;
    if (sz) {
        if (!need(c, sz)) return false;
        if (kv) kv->data = c->base + c->pos, kv->n = 1;
        c->pos += sz;
        return true;
    }
    if (t == GGUF_STRING) {
        const uint8_t *s;
        uint64_t len;
        if (!get_str(c, &s, &len)) return false;
        if (kv) kv->data = s, kv->n = len;
        return true;
    }
    if (t != GGUF_ARRAY) return fail(c, "unknown value type %" PRIu32, t);
    if (depth >= MAX_NESTING) return fail(c, "arrays nested more than %d deep", MAX_NESTING);

    uint32_t et;
    uint64_t n;
    if (!get_u32(c, &et) || !get_u64(c, &n)) return false;
    uint64_t esz = gguf_scalar_size(et);
    uint64_t min = esz ? esz : et == GGUF_STRING ? 8 : et == GGUF_ARRAY ? 12 : 0;
    if (!min) return fail(c, "array of unknown element type %" PRIu32, et);
    if (n > left(c) / min)
        return fail(c, "array of %" PRIu64 " %s elements at offset %" PRIu64 " cannot fit in the %" PRIu64
                    " bytes left in the file: corrupt or truncated", n, gguf_vtype_name(et), c->pos - 12, left(c));
    if (kv) kv->etype = et, kv->n = n, kv->data = c->base + c->pos;
    if (esz) {
        c->pos += n * esz;
        return true;
    }
    /* Strings and arrays vary in size: index them for random access. */
    const uint8_t **elems = NULL;
    if (kv && n) {
        elems = malloc(n * sizeof *elems);
        if (!elems) return fail(c, "out of memory indexing %" PRIu64 " array elements", n);
        kv->elems = elems;
    }
    for (uint64_t i = 0; i < n; i++) {
        if (elems) elems[i] = c->base + c->pos;
        if (!parse_value(c, et, depth + 1, NULL)) return false;
    }
    return true;
}

/* ---- one part ---- */

static int cmp_kv(const void *a, const void *b) {
    return strcmp((*(kv_entry *const *)a)->key, (*(kv_entry *const *)b)->key);
}

static const kv_entry *part_kv(const gguf_part *p, const char *key) {
    if (!p->kv_sorted || !key) return NULL;
    kv_entry probe = {.key = (char *)key}, *pp = &probe;
    kv_entry **hit = bsearch(&pp, p->kv_sorted, (size_t)p->n_kv, sizeof *p->kv_sorted, cmp_kv);
    return hit ? *hit : NULL;
}

/* Integer value of a scalar kv of any integer type; false if not an
 * integer or out of int64 range. */
static bool kv_int(const kv_entry *kv, int64_t *out) {
    const uint8_t *p = kv->data;
    switch (kv->type) {
    case GGUF_UINT8: *out = p[0]; return true;
    case GGUF_INT8: { int8_t v; memcpy(&v, p, 1); *out = v; return true; }
    case GGUF_UINT16: *out = gguf_rd16(p); return true;
    case GGUF_INT16: { uint16_t u = gguf_rd16(p); int16_t v; memcpy(&v, &u, 2); *out = v; return true; }
    case GGUF_UINT32: *out = gguf_rd32(p); return true;
    case GGUF_INT32: { uint32_t u = gguf_rd32(p); int32_t v; memcpy(&v, &u, 4); *out = v; return true; }
    case GGUF_UINT64: {
        uint64_t u = gguf_rd64(p);
        if (u > INT64_MAX) return false;
        *out = (int64_t)u;
        return true;
    }
    case GGUF_INT64: { uint64_t u = gguf_rd64(p); int64_t v; memcpy(&v, &u, 8); *out = v; return true; }
    default: return false;
    }
}

static bool parse_kvs(cursor *c, gguf_part *p, uint64_t n_kv) {
    p->kv = calloc(n_kv ? n_kv : 1, sizeof *p->kv);
    p->kv_sorted = malloc((n_kv ? n_kv : 1) * sizeof *p->kv_sorted);
    if (!p->kv || !p->kv_sorted) return fail(c, "out of memory for %" PRIu64 " keys", n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        kv_entry *kv = &p->kv[i];
        snprintf(c->what, sizeof c->what, "key #%" PRIu64, i);
        if (!(kv->key = get_name(c, "key"))) return false;
        p->n_kv = (int)i + 1; /* from now on part_free frees this entry */
        char name[80];
        snprintf(c->what, sizeof c->what, "key '%s'", printable(name, sizeof name, (const uint8_t *)kv->key, strlen(kv->key)));
        if (!get_u32(c, &kv->type)) return false;
        if (!parse_value(c, kv->type, 0, kv)) return false;
        p->kv_sorted[i] = kv;
    }
    qsort(p->kv_sorted, n_kv, sizeof *p->kv_sorted, cmp_kv);
    for (uint64_t i = 1; i < n_kv; i++)
        if (!strcmp(p->kv_sorted[i - 1]->key, p->kv_sorted[i]->key)) {
            char name[80];
            const char *k = p->kv_sorted[i]->key;
            snprintf(c->what, sizeof c->what, "key '%s'", printable(name, sizeof name, (const uint8_t *)k, strlen(k)));
            return fail(c, "duplicate key");
        }

    p->alignment = GGUF_DEFAULT_ALIGNMENT;
    const kv_entry *al = part_kv(p, "general.alignment");
    if (al) {
        snprintf(c->what, sizeof c->what, "key 'general.alignment'");
        if (al->type != GGUF_UINT32) return fail(c, "type is %s, must be u32", gguf_vtype_name(al->type));
        uint32_t a = gguf_rd32(al->data);
        if (a == 0 || (a & (a - 1))) return fail(c, "alignment %" PRIu32 " is not a power of two", a);
        p->alignment = a;
    }
    return true;
}

static int cmp_offset(const void *a, const void *b) {
    uint64_t x = (*(const gguf_tensor *const *)a)->offset, y = (*(const gguf_tensor *const *)b)->offset;
    return x < y ? -1 : x > y;
}

static bool parse_tensors(cursor *c, gguf_part *p, uint64_t n_tensors) {
    p->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *p->tensors);
    if (!p->tensors) return fail(c, "out of memory for %" PRIu64 " tensors", n_tensors);
    uint64_t *rel = calloc(n_tensors ? n_tensors : 1, sizeof *rel); /* offsets as stored */
    if (!rel) return fail(c, "out of memory for %" PRIu64 " tensors", n_tensors);
    bool ok = false;
    char name[80];
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = &p->tensors[i];
        snprintf(c->what, sizeof c->what, "tensor #%" PRIu64, i);
        char *nm = get_name(c, "tensor name");
        if (!nm) goto out;
        t->name = nm;
        p->n_tensors = (int)i + 1;
        snprintf(c->what, sizeof c->what, "tensor '%s'", printable(name, sizeof name, (const uint8_t *)nm, strlen(nm)));

        uint32_t n_dims;
        if (!get_u32(c, &n_dims)) goto out;
        if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
            fail(c, "n_dims %" PRIu32 " is outside 1..%d", n_dims, GGUF_MAX_DIMS);
            goto out;
        }
        t->n_dims = (int)n_dims;
        int64_t nelem = 1;
        for (int d = 0; d < GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
            if (d >= t->n_dims) continue;
            uint64_t v;
            if (!get_u64(c, &v)) goto out;
            if (v == 0 || v > INT64_MAX) {
                fail(c, "dimension %d is %" PRId64 ", must be > 0", d, (int64_t)v);
                goto out;
            }
            t->ne[d] = (int64_t)v;
            if (nelem > INT64_MAX / t->ne[d]) {
                fail(c, "element count overflows int64 at dimension %d (%" PRId64 ")", d, t->ne[d]);
                goto out;
            }
            nelem *= t->ne[d];
        }

        uint32_t type;
        if (!get_u32(c, &type)) goto out;
        const qtype_info *qi = type < QT_COUNT ? qtype_get((int)type) : NULL;
        if (!qi || qi->blck <= 0 || qi->type_size <= 0) {
            fail(c, "unknown tensor type %" PRIu32, type);
            goto out;
        }
        t->type = (int)type;
        if (t->ne[0] % qi->blck) {
            fail(c, "row length %" PRId64 " is not a multiple of the %s block size %d", t->ne[0], qi->name, qi->blck);
            goto out;
        }
        uint64_t blocks = (uint64_t)(nelem / qi->blck);
        if (blocks > UINT64_MAX / (uint64_t)qi->type_size) {
            fail(c, "byte size of %" PRId64 " %s values overflows", nelem, qi->name);
            goto out;
        }
        t->nbytes = blocks * (uint64_t)qi->type_size;

        if (!get_u64(c, &rel[i])) goto out;
        if (rel[i] % p->alignment) {
            fail(c, "data offset %" PRIu64 " is not a multiple of the alignment %" PRIu32, rel[i], p->alignment);
            goto out;
        }
    }

    /* The data section starts at the next multiple of the alignment. */
    uint64_t rem = c->pos % p->alignment;
    p->data_start = rem ? c->pos + (p->alignment - rem) : c->pos;
    if (n_tensors && p->data_start > c->size) {
        snprintf(c->what, sizeof c->what, "data section");
        fail(c, "file truncated: data would start at offset %" PRIu64 " but the file has %" PRIu64 " bytes",
             p->data_start, c->size);
        goto out;
    }
    uint64_t room = n_tensors ? c->size - p->data_start : 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = &p->tensors[i];
        if (rel[i] > room || t->nbytes > room - rel[i]) {
            snprintf(c->what, sizeof c->what, "tensor '%s'", printable(name, sizeof name, (const uint8_t *)t->name, strlen(t->name)));
            fail(c, "data (%" PRIu64 " bytes at data offset %" PRIu64 ") extends past the end of the file "
                 "(data section is %" PRIu64 " bytes): corrupt or truncated", t->nbytes, rel[i], room);
            goto out;
        }
        t->offset = p->data_start + rel[i];
        t->data = c->base + t->offset;
    }

    /* Overlapping tensors mean a corrupt table. */
    if (n_tensors > 1) {
        const gguf_tensor **order = malloc(n_tensors * sizeof *order);
        if (!order) {
            fail(c, "out of memory for %" PRIu64 " tensors", n_tensors);
            goto out;
        }
        for (uint64_t i = 0; i < n_tensors; i++) order[i] = &p->tensors[i];
        qsort(order, n_tensors, sizeof *order, cmp_offset);
        for (uint64_t i = 1; i < n_tensors; i++)
            if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset) {
                char other[80];
                snprintf(c->what, sizeof c->what, "tensor '%s'", printable(name, sizeof name, (const uint8_t *)order[i]->name, strlen(order[i]->name)));
                fail(c, "data overlaps that of tensor '%s'", printable(other, sizeof other, (const uint8_t *)order[i - 1]->name, strlen(order[i - 1]->name)));
                free(order);
                goto out;
            }
        free(order);
    }
    ok = true;
out:
    free(rel);
    return ok;
}

static void part_free(gguf_part *p) {
    for (int i = 0; i < p->n_kv; i++) {
        free(p->kv[i].key);
        free(p->kv[i].elems);
    }
    free(p->kv);
    free(p->kv_sorted);
    if (p->tensors)
        for (int i = 0; i < p->n_tensors; i++) free((void *)p->tensors[i].name);
    free(p->tensors);
    if (p->map) munmap((void *)p->map, p->size);
    free(p->path);
    memset(p, 0, sizeof *p);
}

/* Maps and parses one file.  On failure p holds what was built so far
 * (for part_free) and err the message. */
static bool part_open(gguf_part *p, const char *path, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    p->path = strdup(path);
    if (!p->path) return set_err(err, errlen, "%s: out of memory", path), false;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno)), false;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        return false;
    }
    p->size = (uint64_t)st.st_size;
    if (p->size > 0) {
        void *m = mmap(NULL, (size_t)p->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            set_err(err, errlen, "%s: cannot map %" PRIu64 " bytes: %s", path, p->size, strerror(errno));
            close(fd);
            return false;
        }
        p->map = m;
    }
    close(fd); /* the mapping stays valid */

    cursor c = {.base = p->map, .size = p->size, .path = p->path, .what = "header", .err = err, .errlen = errlen};
    if (!need(&c, 4)) return false;
    if (memcmp(p->map, GGUF_MAGIC, 4)) {
        char m[4];
        for (int i = 0; i < 4; i++) m[i] = (p->map[i] >= 0x20 && p->map[i] < 0x7f) ? (char)p->map[i] : '?';
        return fail(&c, "not a GGUF file: magic is '%c%c%c%c', expected 'GGUF'", m[0], m[1], m[2], m[3]);
    }
    c.pos = 4;
    uint32_t version;
    if (!get_u32(&c, &version)) return false;
    if (version == 1) return fail(&c, "GGUF version 1 is not supported (only 2 and 3): reconvert the model");
    if (version != 2 && version != 3) {
        if (version && (version & 0xffff) == 0)
            return fail(&c, "unsupported GGUF version 0x%08" PRIx32 " (a big-endian file?)", version);
        return fail(&c, "unsupported GGUF version %" PRIu32 " (only 2 and 3)", version);
    }
    p->version = (int)version;

    uint64_t n_tensors, n_kv;
    if (!get_u64(&c, &n_tensors) || !get_u64(&c, &n_kv)) return false;
    if (n_kv > INT_MAX || n_kv > left(&c) / MIN_KV_BYTES)
        return fail(&c, "key count %" PRIu64 " is absurd for a file of %" PRIu64 " bytes (corrupt or truncated)", n_kv, p->size);
    if (n_tensors > INT_MAX || n_tensors > left(&c) / MIN_TENSOR_INFO_BYTES)
        return fail(&c, "tensor count %" PRIu64 " is absurd for a file of %" PRIu64 " bytes (corrupt or truncated)",
                    n_tensors, p->size);

    return parse_kvs(&c, p, n_kv) && parse_tensors(&c, p, n_tensors);
}

/* ---- split models ---- */

/* Reads an integer split key of part p into *v; absent is fine when
 * required is false (then *v is untouched). */
static bool split_key(const gguf_part *p, const char *key, bool required, int64_t *v, char *err, size_t errlen) {
    const kv_entry *kv = part_kv(p, key);
    if (!kv) {
        if (required) set_err(err, errlen, "%s: split model lacks key '%s'", p->path, key);
        return !required;
    }
    if (!kv_int(kv, v)) return set_err(err, errlen, "%s: key '%s' is not an integer", p->path, key), false;
    return true;
}

/* Path of part k (0-based) of n, given the path of part `no`; NULL with
 * err set if that path does not follow the naming convention. */
static char *split_path(const char *path, int no, int k, int n, char *err, size_t errlen) {
    char suffix[48];
    snprintf(suffix, sizeof suffix, "-%05d-of-%05d.gguf", no + 1, n);
    size_t len = strlen(path), slen = strlen(suffix);
    if (len <= slen || strcmp(path + len - slen, suffix)) {
        set_err(err, errlen, "%s: split part %d of %d must be named PREFIX%s to find the other parts",
                path, no + 1, n, suffix);
        return NULL;
    }
    snprintf(suffix, sizeof suffix, "-%05d-of-%05d.gguf", k + 1, n);
    size_t plen = len - slen, need_len = plen + strlen(suffix) + 1;
    char *out = malloc(need_len);
    if (!out) return set_err(err, errlen, "%s: out of memory", path), NULL;
    memcpy(out, path, plen);
    strcpy(out + plen, suffix);
    return out;
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const gguf_tensor *const *)a)->name, (*(const gguf_tensor *const *)b)->name);
}

/* Builds the one tensor table of all parts; checks names are unique. */
static bool merge_tensors(gguf_file *f, char *err, size_t errlen) {
    int64_t total = 0;
    for (int k = 0; k < f->n_parts; k++) total += f->parts[k].n_tensors;
    if (total > INT_MAX) return set_err(err, errlen, "%s: %" PRId64 " tensors in all parts: too many", f->parts[0].path, total), false;
    f->tensors = calloc(total ? (size_t)total : 1, sizeof *f->tensors);
    f->by_name = malloc((total ? (size_t)total : 1) * sizeof *f->by_name);
    if (!f->tensors || !f->by_name) return set_err(err, errlen, "%s: out of memory", f->parts[0].path), false;
    for (int k = 0; k < f->n_parts; k++) {
        gguf_part *p = &f->parts[k];
        for (int i = 0; i < p->n_tensors; i++) {
            f->tensors[f->n_tensors] = p->tensors[i];
            f->tensors[f->n_tensors].part = k;
            f->n_tensors++;
        }
        free(p->tensors); /* names now belong to f->tensors */
        p->tensors = NULL;
    }
    for (int i = 0; i < f->n_tensors; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_tensor_name);
    for (int i = 1; i < f->n_tensors; i++) {
        const gguf_tensor *a = f->by_name[i - 1], *b = f->by_name[i];
        if (strcmp(a->name, b->name)) continue;
        char name[80];
        printable(name, sizeof name, (const uint8_t *)a->name, strlen(a->name));
        if (a->part == b->part)
            set_err(err, errlen, "%s: tensor '%s': duplicate tensor name", f->parts[a->part].path, name);
        else
            set_err(err, errlen, "%s: tensor '%s': duplicate tensor name (also in %s)", f->parts[b->part].path, name,
                    f->parts[a->part].path);
        return false;
    }
    return true;
}

static bool open_split(gguf_file *f, gguf_part *given, char *err, size_t errlen) {
    int64_t count = 1, no = 0;
    if (!split_key(given, "split.count", false, &count, err, errlen)) return false;
    if (count < 1 || count > 65535) /* u16 in llama.cpp */
        return set_err(err, errlen, "%s: split.count %" PRId64 " is out of range 1..65535", given->path, count), false;
    if (count > 1 && !split_key(given, "split.no", true, &no, err, errlen)) return false;
    if (count > 1 && (no < 0 || no >= count))
        return set_err(err, errlen, "%s: split.no %" PRId64 " is outside 0..%" PRId64, given->path, no, count - 1), false;

    f->parts = calloc((size_t)count, sizeof *f->parts);
    if (!f->parts) return set_err(err, errlen, "%s: out of memory", given->path), false;
    f->n_parts = (int)count;
    f->parts[no] = *given;
    memset(given, 0, sizeof *given);

    for (int k = 0; k < f->n_parts; k++) {
        if (k == no) continue;
        char *path = split_path(f->parts[no].path, (int)no, k, f->n_parts, err, errlen);
        if (!path) return false;
        char msg[512];
        bool ok = part_open(&f->parts[k], path, msg, sizeof msg);
        if (!ok) {
            set_err(err, errlen, "%s (split part %d of %d of %s)", msg, k + 1, f->n_parts, f->parts[no].path);
            free(path);
            return false;
        }
        free(path);
        int64_t kno = -1, kcount = -1;
        if (!split_key(&f->parts[k], "split.no", true, &kno, err, errlen) ||
            !split_key(&f->parts[k], "split.count", true, &kcount, err, errlen))
            return false;
        if (kno != k || kcount != count)
            return set_err(err, errlen, "%s: split.no %" PRId64 " / split.count %" PRId64 " should be %d / %d (from its name)",
                           f->parts[k].path, kno, kcount, k, f->n_parts), false;
    }
    if (count > 1) {
        int64_t want;
        if (!split_key(&f->parts[0], "split.tensors.count", true, &want, err, errlen)) return false;
        int64_t total = 0;
        for (int k = 0; k < f->n_parts; k++) total += f->parts[k].n_tensors;
        if (total != want)
            return set_err(err, errlen, "%s: split.tensors.count is %" PRId64 " but the %d parts hold %" PRId64 " tensors",
                           f->parts[0].path, want, f->n_parts, total), false;
    }
    return true;
}

gguf_file *gguf_open(const char *path, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!path) return set_err(err, errlen, "gguf_open: no file name given"), NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return set_err(err, errlen, "%s: out of memory", path), NULL;
    gguf_part given;
    if (!part_open(&given, path, err, errlen)) {
        part_free(&given);
        free(f);
        return NULL;
    }
    if (!open_split(f, &given, err, errlen) || !merge_tensors(f, err, errlen)) {
        part_free(&given);
        gguf_close(f);
        return NULL;
    }
    return f;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) free((void *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (int k = 0; k < f->n_parts; k++) part_free(&f->parts[k]);
    free(f->parts);
    free(f);
}

/* ---- queries ---- */

int gguf_version(const gguf_file *f) { return f->parts[0].version; }
int gguf_n_parts(const gguf_file *f) { return f->n_parts; }

const char *gguf_part_path(const gguf_file *f, int part) {
    return part >= 0 && part < f->n_parts ? f->parts[part].path : NULL;
}

uint64_t gguf_part_size(const gguf_file *f, int part) {
    return part >= 0 && part < f->n_parts ? f->parts[part].size : 0;
}

int gguf_n_kv(const gguf_file *f) { return f->parts[0].n_kv; }

const char *gguf_kv_key(const gguf_file *f, int i) {
    return i >= 0 && i < f->parts[0].n_kv ? f->parts[0].kv[i].key : NULL;
}

/* An out-of-range i gives an id that matches no type. */
enum gguf_vtype gguf_kv_type(const gguf_file *f, int i) {
    return i >= 0 && i < f->parts[0].n_kv ? (enum gguf_vtype)f->parts[0].kv[i].type : (enum gguf_vtype)-1;
}

int gguf_find_key(const gguf_file *f, const char *key) {
    const kv_entry *kv = part_kv(&f->parts[0], key);
    return kv ? (int)(kv - f->parts[0].kv) : -1;
}

static const kv_entry *find_kv(const gguf_file *f, const char *key) {
    return f ? part_kv(&f->parts[0], key) : NULL;
}

bool gguf_get_int(const gguf_file *f, const char *key, int64_t *out) {
    const kv_entry *kv = find_kv(f, key);
    int64_t v;
    if (!kv || !kv_int(kv, &v)) return false;
    *out = v;
    return true;
}

static double f32_at(const uint8_t *p) {
    uint32_t u = gguf_rd32(p);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

static double f64_at(const uint8_t *p) {
    uint64_t u = gguf_rd64(p);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

bool gguf_get_float(const gguf_file *f, const char *key, double *out) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv) return false;
    if (kv->type == GGUF_FLOAT32) return *out = f32_at(kv->data), true;
    if (kv->type == GGUF_FLOAT64) return *out = f64_at(kv->data), true;
    if (kv->type == GGUF_UINT64) return *out = (double)gguf_rd64(kv->data), true;
    int64_t v;
    if (!kv_int(kv, &v)) return false;
    *out = (double)v;
    return true;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_BOOL) return false;
    *out = kv->data[0] != 0;
    return true;
}

const char *gguf_get_str(const gguf_file *f, const char *key, uint64_t *len) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_STRING) return NULL;
    if (len) *len = kv->n;
    return (const char *)kv->data;
}

bool gguf_get_arr(const gguf_file *f, const char *key, enum gguf_vtype *etype, uint64_t *n) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_ARRAY) return false;
    if (etype) *etype = (enum gguf_vtype)kv->etype;
    if (n) *n = kv->n;
    return true;
}

const void *gguf_get_arr_data(const gguf_file *f, const char *key) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_ARRAY || !gguf_scalar_size(kv->etype)) return NULL;
    return kv->data;
}

const char *gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, uint64_t *len) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->etype != GGUF_STRING || i >= kv->n) return NULL;
    const uint8_t *p = kv->elems[i];
    if (len) *len = gguf_rd64(p);
    return (const char *)p + 8;
}

const void *gguf_get_arr_arr(const gguf_file *f, const char *key, uint64_t i, enum gguf_vtype *etype, uint64_t *n) {
    const kv_entry *kv = find_kv(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->etype != GGUF_ARRAY || i >= kv->n) return NULL;
    const uint8_t *p = kv->elems[i];
    uint32_t et = gguf_rd32(p);
    if (etype) *etype = (enum gguf_vtype)et;
    if (n) *n = gguf_rd64(p + 4);
    return gguf_scalar_size(et) ? p + 12 : NULL;
}

int gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f || !name || !f->n_tensors) return NULL;
    gguf_tensor probe = {.name = name};
    const gguf_tensor *pp = &probe;
    const gguf_tensor **hit = bsearch(&pp, f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_tensor_name);
    return hit ? *hit : NULL;
}

/* ---- rendering for `moe info` ---- */

/* Output buffer that silently stops when full (always NUL-terminated). */
typedef struct strbuf {
    char *buf;  /* caller's buffer */
    size_t cap; /* its size, > 0 */
    size_t len; /* bytes written, < cap */
} strbuf;

static void sb_put(strbuf *sb, const char *s, size_t n) {
    size_t room = sb->cap - 1 - sb->len;
    if (n > room) {
        n = room;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) n--; /* keep UTF-8 whole */
    }
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = 0;
}

__attribute__((format(printf, 2, 3)))
static void sb_printf(strbuf *sb, const char *fmt, ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(sb, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A quoted string, at most max bytes of it (cut on a UTF-8 boundary). */
static void sb_quote(strbuf *sb, const uint8_t *s, uint64_t len, uint64_t max) {
    uint64_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && (s[n] & 0xc0) == 0x80) n--;
    }
    sb_put(sb, "\"", 1);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\') sb_printf(sb, "\\%c", ch);
        else if (ch == '\n') sb_put(sb, "\\n", 2);
        else if (ch == '\t') sb_put(sb, "\\t", 2);
        else if (ch < 0x20 || ch == 0x7f) sb_printf(sb, "\\x%02x", ch);
        else sb_put(sb, (const char *)&s[i], 1);
    }
    sb_put(sb, n < len ? "...\"" : "\"", n < len ? 4 : 1);
}

/* Bytes of the (already validated) encoding of a value of type t at p. */
static uint64_t value_size(uint32_t t, const uint8_t *p) {
    uint64_t sz = gguf_scalar_size(t);
    if (sz) return sz;
    if (t == GGUF_STRING) return 8 + gguf_rd64(p);
    uint32_t et = gguf_rd32(p);
    uint64_t n = gguf_rd64(p + 4), total = 12, esz = gguf_scalar_size(et);
    if (esz) return total + n * esz;
    for (uint64_t i = 0; i < n; i++) total += value_size(et, p + total);
    return total;
}

static void render(strbuf *sb, uint32_t t, const uint8_t *p, int depth) {
    int64_t iv;
    kv_entry tmp = {.type = t, .data = p};
    switch (t) {
    case GGUF_FLOAT32: sb_printf(sb, "%g", f32_at(p)); return;
    case GGUF_FLOAT64: sb_printf(sb, "%g", f64_at(p)); return;
    case GGUF_BOOL: sb_printf(sb, "%s", p[0] ? "true" : "false"); return;
    case GGUF_UINT64: sb_printf(sb, "%" PRIu64, gguf_rd64(p)); return;
    case GGUF_STRING: sb_quote(sb, p + 8, gguf_rd64(p), depth ? 12 : 120); return;
    case GGUF_ARRAY: break;
    default:
        if (kv_int(&tmp, &iv)) sb_printf(sb, "%" PRId64, iv);
        return;
    }
    uint32_t et = gguf_rd32(p);
    uint64_t n = gguf_rd64(p + 4);
    uint64_t show = et == GGUF_STRING ? 3 : et == GGUF_ARRAY ? 2 : 8;
    sb_printf(sb, "[%" PRIu64 " %s%s", n,
              et == GGUF_STRING ? "string" : et == GGUF_ARRAY ? "array" : gguf_vtype_name(et),
              (et == GGUF_STRING || et == GGUF_ARRAY) && n != 1 ? "s" : "");
    const uint8_t *q = p + 12;
    for (uint64_t i = 0; i < n && i < show; i++) {
        sb_put(sb, i ? ", " : ": ", 2);
        render(sb, et, q, depth + 1);
        q += value_size(et, q);
    }
    if (n > show) sb_put(sb, ", ...", 5);
    sb_put(sb, "]", 1);
}

char *gguf_kv_to_string(const gguf_file *f, int i, char *buf, size_t buflen) {
    if (!buf || !buflen) return buf;
    buf[0] = 0;
    if (!f || i < 0 || i >= f->parts[0].n_kv) return buf;
    strbuf sb = {buf, buflen, 0};
    const kv_entry *kv = &f->parts[0].kv[i];
    render(&sb, kv->type, kv->raw, 0);
    return buf;
}
