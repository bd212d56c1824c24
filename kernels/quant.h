/* Tensor element types and their block layouts (the GGML/GGUF encodings).
 *
 * A row of n values of a quantized type is n / blck blocks stored back to
 * back.  Every type has three scalar reference operations:
 *   to_float   - dequantize n values
 *   from_float - quantize n values (used by the model generator and to
 *                quantize activations)
 *   vec_dot    - dot product of one weight row with one activation row that
 *                was quantized to vec_dot_type, computed the way llama.cpp
 *                computes it so results agree with the reference engine.
 * SIMD kernels (kernels/kern_*.c) must agree with these references. */
#ifndef MOE_QUANT_H
#define MOE_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* Numeric ids are fixed by the GGUF format. */
enum qtype {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_BF16 = 30,
    QT_COUNT = 40 /* upper bound of ids, for tables */
};

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t fp16_t; /* IEEE half, stored bits */
typedef uint16_t bf16_t; /* bfloat16, stored bits */

/* Block layouts, byte-exact with GGUF files. */
typedef struct { fp16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;
typedef struct { fp16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;
typedef struct { fp16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0;
typedef struct { fp16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { fp16_t d; int8_t qs[QK8_0]; } block_q8_0;
typedef struct { fp16_t d, s; int8_t qs[QK8_1]; } block_q8_1; /* s = d * sum(qs) */
typedef struct {
    uint8_t scales[QK_K / 16]; /* 4-bit scale | 4-bit min, per 16 values */
    uint8_t qs[QK_K / 4];      /* 2-bit quants */
    fp16_t d, dmin;
} block_q2_K;
typedef struct {
    uint8_t hmask[QK_K / 8]; /* high bit of each quant */
    uint8_t qs[QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];      /* 16 6-bit scales */
    fp16_t d;
} block_q3_K;
typedef struct {
    fp16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE]; /* 8 6-bit scales and mins */
    uint8_t qs[QK_K / 2];
} block_q4_K;
typedef struct {
    fp16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    fp16_t d;
} block_q6_K;
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16]; /* sum of each group of 16 qs */
} block_q8_K;

/* 6-bit scale and min of sub-block j (0..7) of Q4_K / Q5_K: bytes 0-3 hold
 * scales 0-3, bytes 4-7 mins 0-3 (low 6 bits); scales/mins 4-7 keep their
 * low 4 bits in bytes 8-11 (scale low nibble, min high nibble) and their
 * top 2 bits in the top bits of bytes 0-3 / 4-7. */
static inline void q4k_scale_min(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Signed 6-bit scale j (0..15) of Q3_K (stored +32): low nibbles of scales
 * 0-7 in the low nibbles of bytes 0-7, of scales 8-15 in their high
 * nibbles; the top 2 bits of scale j at bits 2*(j/4) of byte 8 + j%4. */
static inline int q3k_scale(const uint8_t *s, int j) {
    const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

typedef void (*qt_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*qt_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(weight row w, activation row a), n values; a is in vec_dot_type. */
typedef void (*qt_vec_dot_fn)(int n, float *s, const void *w, const void *a);

typedef struct qtype_info {
    const char *name;     /* "Q4_K", ... */
    int blck;             /* values per block */
    int type_size;        /* bytes per block */
    int vec_dot_type;     /* enum qtype of activations for vec_dot */
    qt_to_float_fn to_float;
    qt_from_float_fn from_float;
    qt_vec_dot_fn vec_dot;
} qtype_info;

/* Scalar reference traits of a type; NULL if the type is not supported. */
const qtype_info *qtype_get(int type);
/* Name for messages ("Q4_K"), or "type<N>" for an unknown id (static buffer
 * is not used: unknown ids return "unknown"). */
const char *qtype_name(int type);
/* Bytes of a row of n values; 0 if n is not a multiple of the block size or
 * the type is unknown. */
size_t qtype_row_size(int type, int64_t n);

/* Quantizes n weights the way llama-quantize does (no importance matrix),
 * so generated files match downloaded ones byte for byte.  Same as
 * from_float except for Q8_0, whose from_float follows llama.cpp's x86
 * activation rounding (127/amax, ties to even) while llama-quantize uses
 * 1/(amax/127) and rounds ties away from zero.  Returns the bytes written,
 * 0 for an unknown type or n not a multiple of the block size. */
size_t qtype_quantize_weights(int type, const float *src, void *dst, int64_t n);

/* Half and bfloat16 conversions, exact IEEE round-to-nearest-even. */
float fp16_to_f32(fp16_t h);
fp16_t f32_to_fp16(float f);
float bf16_to_f32(bf16_t h);
bf16_t f32_to_bf16(float f);

#endif
