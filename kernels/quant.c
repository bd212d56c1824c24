/* Type traits table and the half / bfloat16 conversions.
 *
 * The row functions themselves live in quant_legacy.c (F32, F16, BF16 and
 * the 32-value block types) and quant_kquants.c (the 256-value K-quants). */
#include "quant.h"

#include <string.h>

#include "quant_impl.h"

/* The block structs must be byte-exact with the GGUF encodings. */
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 size");
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 size");
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 size");
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 size");
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K size");
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K size");
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");

/* Activation-only types (Q8_1, Q8_K) have no vec_dot; their vec_dot_type
 * names themselves so a row size computed from it is still meaningful. */
static const qtype_info k_types[QT_COUNT] = {
    [QT_F32] = {"F32", 1, 4, QT_F32, qref_to_float_f32, qref_from_float_f32, qref_vec_dot_f32},
    [QT_F16] = {"F16", 1, 2, QT_F16, qref_to_float_f16, qref_from_float_f16, qref_vec_dot_f16},
    [QT_BF16] = {"BF16", 1, 2, QT_BF16, qref_to_float_bf16, qref_from_float_bf16, qref_vec_dot_bf16},
    [QT_Q4_0] = {"Q4_0", QK4_0, sizeof(block_q4_0), QT_Q8_0,
                 qref_to_float_q4_0, qref_from_float_q4_0, qref_vec_dot_q4_0_q8_0},
    [QT_Q4_1] = {"Q4_1", QK4_1, sizeof(block_q4_1), QT_Q8_1,
                 qref_to_float_q4_1, qref_from_float_q4_1, qref_vec_dot_q4_1_q8_1},
    [QT_Q5_0] = {"Q5_0", QK5_0, sizeof(block_q5_0), QT_Q8_0,
                 qref_to_float_q5_0, qref_from_float_q5_0, qref_vec_dot_q5_0_q8_0},
    [QT_Q5_1] = {"Q5_1", QK5_1, sizeof(block_q5_1), QT_Q8_1,
                 qref_to_float_q5_1, qref_from_float_q5_1, qref_vec_dot_q5_1_q8_1},
    [QT_Q8_0] = {"Q8_0", QK8_0, sizeof(block_q8_0), QT_Q8_0,
                 qref_to_float_q8_0, qref_from_float_q8_0, qref_vec_dot_q8_0_q8_0},
    [QT_Q8_1] = {"Q8_1", QK8_1, sizeof(block_q8_1), QT_Q8_1,
                 qref_to_float_q8_1, qref_from_float_q8_1, NULL},
    [QT_Q2_K] = {"Q2_K", QK_K, sizeof(block_q2_K), QT_Q8_K,
                 qref_to_float_q2_K, qref_from_float_q2_K, qref_vec_dot_q2_K_q8_K},
    [QT_Q3_K] = {"Q3_K", QK_K, sizeof(block_q3_K), QT_Q8_K,
                 qref_to_float_q3_K, qref_from_float_q3_K, qref_vec_dot_q3_K_q8_K},
    [QT_Q4_K] = {"Q4_K", QK_K, sizeof(block_q4_K), QT_Q8_K,
                 qref_to_float_q4_K, qref_from_float_q4_K, qref_vec_dot_q4_K_q8_K},
    [QT_Q5_K] = {"Q5_K", QK_K, sizeof(block_q5_K), QT_Q8_K,
                 qref_to_float_q5_K, qref_from_float_q5_K, qref_vec_dot_q5_K_q8_K},
    [QT_Q6_K] = {"Q6_K", QK_K, sizeof(block_q6_K), QT_Q8_K,
                 qref_to_float_q6_K, qref_from_float_q6_K, qref_vec_dot_q6_K_q8_K},
    [QT_Q8_K] = {"Q8_K", QK_K, sizeof(block_q8_K), QT_Q8_K,
                 qref_to_float_q8_K, qref_from_float_q8_K, NULL},
};

const qtype_info *qtype_get(int type) {
    if (type < 0 || type >= QT_COUNT || k_types[type].name == NULL)
        return NULL;
    return &k_types[type];
}

const char *qtype_name(int type) {
    const qtype_info *qi = qtype_get(type);
    return qi ? qi->name : "unknown";
}

size_t qtype_row_size(int type, int64_t n) {
    const qtype_info *qi = qtype_get(type);
    if (!qi || n < 0 || n % qi->blck != 0)
        return 0;
    return (size_t)(n / qi->blck) * (size_t)qi->type_size;
}

size_t qtype_quantize_weights(int type, const float *src, void *dst, int64_t n) {
    size_t bytes = qtype_row_size(type, n);
    if (bytes == 0) /* unknown type, bad length, or nothing to do */
        return 0;
    if (type == QT_Q8_0)
        qref_from_float_q8_0_ref(src, dst, n);
    else
        qtype_get(type)->from_float(src, dst, n);
    return bytes;
}

/* ---- half precision ----
 * Bit-level conversions so the result never depends on the compiler or the
 * FPU: round to nearest, ties to even, exactly as the F16C instructions
 * (VCVTPS2PH with imm 0) that llama.cpp uses on x86.  NaNs stay NaN with
 * the quiet bit set and the top payload bits kept, as F16C does. */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float fp16_to_f32(fp16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) /* inf, or NaN made quiet */
        return bits_f32(sign | 0x7F800000 | (mant << 13) | (mant ? 0x400000 : 0));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

fp16_t f32_to_fp16(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7FFFFFFF;
    if (a > 0x7F800000) /* NaN */
        return (fp16_t)(sign | 0x7E00 | ((a >> 13) & 0x3FF));
    if (a >= 0x477FF000) /* >= 65520 rounds to infinity (and inf stays inf) */
        return (fp16_t)(sign | 0x7C00);
    if (a >= 0x38800000) {
        /* normal half: drop 13 mantissa bits with RNE; a carry out of the
         * mantissa correctly bumps the exponent */
        uint32_t r = a + 0xFFF + ((a >> 13) & 1);
        return (fp16_t)(sign | ((r >> 13) - (112u << 10)));
    }
    if (a <= 0x33000000) /* <= 2^-25: rounds to zero (2^-25 is a tie to even 0) */
        return (fp16_t)sign;
    /* subnormal half: value / 2^-24 rounded to an integer, RNE */
    uint32_t e = a >> 23;                /* 102..112 */
    uint32_t m = (a & 0x7FFFFF) | 0x800000;
    uint32_t shift = 126 - e;            /* 14..24 */
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return (fp16_t)(sign | q);
}

/* ---- bfloat16 ----
 * ggml's conversion: round to nearest even on the top 16 bits, NaN forced
 * quiet; subnormals are kept (not flushed). */

float bf16_to_f32(bf16_t h) {
    return bits_f32((uint32_t)h << 16);
}

bf16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000)
        return (bf16_t)((u >> 16) | 64);
    return (bf16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
