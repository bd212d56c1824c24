/* Small facts of the GGUF encoding shared by the reader (gguf.c) and the
 * writer (gguf_write.c).  Everything in a GGUF file is little-endian; these
 * helpers encode and decode bytes explicitly so the code never depends on
 * the host's byte order or on unaligned loads. */
#ifndef MOE_GGUF_INTERNAL_H
#define MOE_GGUF_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "gguf.h"

#define GGUF_MAGIC "GGUF"    /* first four bytes of every file */
#define GGUF_WRITE_VERSION 3 /* the version the writer produces */

/* Bytes of one scalar of type t; 0 for strings, arrays and unknown ids. */
static inline uint64_t gguf_scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Short name of a value type, as llama.cpp's tools print it. */
static inline const char *gguf_vtype_name(uint32_t t) {
    static const char *const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                        "bool", "str", "arr", "u64", "i64", "f64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "invalid";
}

static inline uint16_t gguf_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t gguf_rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t gguf_rd64(const uint8_t *p) {
    return (uint64_t)gguf_rd32(p) | (uint64_t)gguf_rd32(p + 4) << 32;
}
static inline void gguf_wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void gguf_wr64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

#endif
