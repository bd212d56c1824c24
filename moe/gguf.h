/* GGUF reader and writer.
 *
 * Reader: parses GGUF v2/v3 headers (all metadata value types, nested
 * arrays, tensor infos, general.alignment), maps tensor data with mmap and
 * presents the parts of a split model (X-00001-of-0000N.gguf) as one tensor
 * table.  Every length, count, offset and dimension read from a file is
 * checked before use: a corrupt file yields an error message naming the
 * file (and tensor or key), never an out-of-bounds read.
 *
 * Writer: writes metadata and tensor infos first, then tensor data streamed
 * in declaration order, so a generator never holds the whole model. */
#ifndef MOE_GGUF_H
#define MOE_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_vtype {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3,
    GGUF_UINT32 = 4, GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7,
    GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_UINT64 = 10, GGUF_INT64 = 11,
    GGUF_FLOAT64 = 12,
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_tensor {
    const char *name;       /* NUL-terminated */
    int type;               /* enum qtype */
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] contiguous; unused dims are 1 */
    uint64_t nbytes;        /* bytes of data */
    const void *data;       /* inside the mmap of its part */
    int part;               /* index of the split part holding it */
    uint64_t offset;        /* absolute byte offset of data in that part */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Opens a GGUF file.  If it is part of a split model (split.count > 1),
 * every part is opened (found by the -0000K-of-0000N naming) and their
 * tensors merged into one table.  On failure returns NULL and writes a
 * message naming the file and problem into err. */
gguf_file *gguf_open(const char *path, char *err, size_t errlen);
void gguf_close(gguf_file *f);

int gguf_version(const gguf_file *f);
int gguf_n_parts(const gguf_file *f);
const char *gguf_part_path(const gguf_file *f, int part);
uint64_t gguf_part_size(const gguf_file *f, int part);

/* Metadata of the first part (split keys included). */
int gguf_n_kv(const gguf_file *f);
const char *gguf_kv_key(const gguf_file *f, int i);
enum gguf_vtype gguf_kv_type(const gguf_file *f, int i);
int gguf_find_key(const gguf_file *f, const char *key); /* -1 if absent */

/* Typed getters by key.  Return false if the key is absent or its type
 * does not convert (integers convert to int64 when in range; floats and
 * integers convert to double). */
bool gguf_get_int(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_float(const gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
/* String value (not NUL-terminated in the file: use len). */
const char *gguf_get_str(const gguf_file *f, const char *key, uint64_t *len);

/* Arrays.  gguf_get_arr gives element type and count.  For numeric element
 * types gguf_get_arr_data returns the raw little-endian elements (packed,
 * as in the file, so possibly unaligned: copy elements out with memcpy).
 * For string arrays use gguf_get_arr_str. */
bool gguf_get_arr(const gguf_file *f, const char *key, enum gguf_vtype *etype, uint64_t *n);
const void *gguf_get_arr_data(const gguf_file *f, const char *key);
const char *gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, uint64_t *len);

/* Human-readable rendering of a value (truncated for long arrays), for
 * `moe info`.  Writes into buf, returns buf. */
char *gguf_kv_to_string(const gguf_file *f, int i, char *buf, size_t buflen);

/* Tensors of all parts. */
int gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* ---- writer ---- */
typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_set_f32(gguf_writer *w, const char *key, float v);
void gguf_set_bool(gguf_writer *w, const char *key, bool v);
void gguf_set_str(gguf_writer *w, const char *key, const char *v);
/* Array of n numeric elements of type etype (data packed little-endian). */
void gguf_set_arr(gguf_writer *w, const char *key, enum gguf_vtype etype, const void *data, uint64_t n);
void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
/* Declares a tensor; data is written later in declaration order. */
void gguf_add_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne);
/* Writes header, metadata and tensor infos.  false + err on I/O error. */
bool gguf_writer_begin(gguf_writer *w, const char *path, char *err, size_t errlen);
/* Streams the data of the next declared tensor; nbytes must equal its
 * size.  May be called several times per tensor with consecutive chunks
 * (the writer tracks how much of the current tensor is written). */
bool gguf_writer_write(gguf_writer *w, const void *data, size_t nbytes, char *err, size_t errlen);
/* Checks every tensor was written, pads, closes. */
bool gguf_writer_end(gguf_writer *w, char *err, size_t errlen);

/* ---- additions ---- */
/* The remaining scalar types.  llama.cpp's split files need u16
 * (split.no, split.count); the others complete the format. */
void gguf_set_u8(gguf_writer *w, const char *key, uint8_t v);
void gguf_set_i8(gguf_writer *w, const char *key, int8_t v);
void gguf_set_u16(gguf_writer *w, const char *key, uint16_t v);
void gguf_set_i16(gguf_writer *w, const char *key, int16_t v);
void gguf_set_i64(gguf_writer *w, const char *key, int64_t v);
void gguf_set_f64(gguf_writer *w, const char *key, double v);
/* Array of n arrays; inner array i holds n_inner[i] numeric elements of
 * type etype, packed little-endian at data[i].  The format allows nested
 * arrays but llama.cpp refuses them: do not use in model files. */
void gguf_set_arr_arr(gguf_writer *w, const char *key, enum gguf_vtype etype,
                      const void *const *data, const uint64_t *n_inner, uint64_t n);
/* Element i of an array of arrays: its element type and count, and its raw
 * packed elements if they are numeric (NULL for strings/arrays, or if the
 * key is absent or not an array of arrays). */
const void *gguf_get_arr_arr(const gguf_file *f, const char *key, uint64_t i,
                             enum gguf_vtype *etype, uint64_t *n);

#endif
