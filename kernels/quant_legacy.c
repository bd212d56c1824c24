/* Scalar reference code for F32, F16, BF16 and the 32-value block types
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1).
 *
 * Dequantization and the weight quantizers follow llama.cpp's
 * dequantize_row_* / quantize_row_*_ref operation for operation, so the
 * float results are bit-identical.  The activation quantizers (Q8_0, Q8_1,
 * F16, BF16) reproduce what llama.cpp's x86 CPU backend produces, because
 * the reference logits were computed there.  The dot products compute an
 * exact integer sum per block and then scale it, as ggml-cpu does; only the
 * order of the float additions across blocks may differ from its SIMD
 * kernels. */
#include <math.h>
#include <string.h>

#include "quant_impl.h"

/* ---- F32 ---- */

void qref_to_float_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void qref_from_float_f32(const float *src, void *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* ggml_vec_dot_f32: float products summed in double. */
void qref_vec_dot_f32(int n, float *s, const void *w, const void *a) {
    const float *x = w, *y = a;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * y[i]);
    *s = (float)sum;
}

/* ---- F16 ---- */

void qref_to_float_f16(const void *src, float *dst, int64_t n) {
    const fp16_t *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = fp16_to_f32(x[i]);
}

/* Activations meeting F16 weights are rounded to half (RNE, as F16C). */
void qref_from_float_f16(const float *src, void *dst, int64_t n) {
    fp16_t *y = dst;
    for (int64_t i = 0; i < n; i++)
        y[i] = f32_to_fp16(src[i]);
}

/* ggml_vec_dot_f16: each product is exact in float (11-bit mantissas), the
 * sum is kept in double (ggml_float) and rounded to float at the end. */
void qref_vec_dot_f16(int n, float *s, const void *w, const void *a) {
    const fp16_t *x = w, *y = a;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(fp16_to_f32(x[i]) * fp16_to_f32(y[i]));
    *s = (float)sum;
}

/* ---- BF16 ---- */

void qref_to_float_bf16(const void *src, float *dst, int64_t n) {
    const bf16_t *x = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(x[i]);
}

/* ggml_cpu_fp32_to_bf16 is a plain loop of the scalar RNE conversion. */
void qref_from_float_bf16(const float *src, void *dst, int64_t n) {
    bf16_t *y = dst;
    for (int64_t i = 0; i < n; i++)
        y[i] = f32_to_bf16(src[i]);
}

void qref_vec_dot_bf16(int n, float *s, const void *w, const void *a) {
    const bf16_t *x = w, *y = a;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += (double)(bf16_to_f32(x[i]) * bf16_to_f32(y[i]));
    *s = (float)sum;
}

/* ---- shared block helpers ---- */

/* Value with the largest magnitude (the first one on ties), as the
 * symmetric quantizers use it: its sign sets the sign of the scale. */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void minmax(const float *x, int n, float *mn, float *mx) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* The 5th bit of each of the 32 quants, bit j for value j. */
static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void store_qh(uint8_t qh[4], uint32_t v) {
    for (int k = 0; k < 4; k++)
        qh[k] = (uint8_t)(v >> (8 * k));
}

/* ---- Q4_0: x = d * (q - 8), q in 0..15; value j in the low nibble of
 * byte j, value j+16 in its high nibble ---- */

void qref_to_float_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *x = src;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            dst[i * QK4_0 + j] = x0 * d;
            dst[i * QK4_0 + j + QK4_0 / 2] = x1 * d;
        }
    }
}

/* The scale maps the largest-magnitude value to -8 exactly, which uses the
 * one extra negative level; then truncation of (v + 8.5) rounds. */
void qref_from_float_q4_0(const float *src, void *dst, int64_t n) {
    block_q4_0 *y = dst;
    for (int64_t i = 0; i < n / QK4_0; i++) {
        const float *x = src + i * QK4_0;
        const float d = signed_absmax(x, QK4_0) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            int q0 = low_i8(trunc_to_i32(x[j] * id + 8.5f));
            int q1 = low_i8(trunc_to_i32(x[j + QK4_0 / 2] * id + 8.5f));
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
        }
    }
}

void qref_vec_dot_q4_0_q8_0(int n, float *s, const void *w, const void *a) {
    const block_q4_0 *x = w;
    const block_q8_0 *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((x[i].qs[j] & 0x0F) - 8) * y[i].qs[j];
            isum += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
        }
        sum += (fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d)) * (float)isum;
    }
    *s = sum;
}

/* ---- Q4_1: x = d * q + m, q in 0..15, same nibble order as Q4_0 ---- */

void qref_to_float_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *x = src;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        const float d = fp16_to_f32(x[i].d);
        const float m = fp16_to_f32(x[i].m);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const int x0 = x[i].qs[j] & 0x0F;
            const int x1 = x[i].qs[j] >> 4;
            dst[i * QK4_1 + j] = x0 * d + m;
            dst[i * QK4_1 + j + QK4_1 / 2] = x1 * d + m;
        }
    }
}

void qref_from_float_q4_1(const float *src, void *dst, int64_t n) {
    block_q4_1 *y = dst;
    for (int64_t i = 0; i < n / QK4_1; i++) {
        const float *x = src + i * QK4_1;
        float min, max;
        minmax(x, QK4_1, &min, &max);
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        y[i].m = f32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; j++) {
            int q0 = low_i8(trunc_to_i32((x[j] - min) * id + 0.5f));
            int q1 = low_i8(trunc_to_i32((x[j + QK4_1 / 2] - min) * id + 0.5f));
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
        }
    }
}

/* The Q8_1 block carries s = d * sum(qs), so the offset term m * sum(a)
 * costs one multiply per block. */
void qref_vec_dot_q4_1_q8_1(int n, float *s, const void *w, const void *a) {
    const block_q4_1 *x = w;
    const block_q8_1 *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n / QK8_1; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_1 / 2; j++) {
            isum += (x[i].qs[j] & 0x0F) * y[i].qs[j];
            isum += (x[i].qs[j] >> 4) * y[i].qs[j + QK4_1 / 2];
        }
        sum += (fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d)) * (float)isum
             + fp16_to_f32(x[i].m) * fp16_to_f32(y[i].s);
    }
    *s = sum;
}

/* ---- Q5_0: x = d * (q - 16), q in 0..31; low 4 bits as in Q4_0, bit 4
 * of value j is bit j of qh (little-endian u32) ---- */

void qref_to_float_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *x = src;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        const float d = fp16_to_f32(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            const int x0 = ((x[i].qs[j] & 0x0F) | h0 << 4) - 16;
            const int x1 = ((x[i].qs[j] >> 4) | h1 << 4) - 16;
            dst[i * QK5_0 + j] = x0 * d;
            dst[i * QK5_0 + j + QK5_0 / 2] = x1 * d;
        }
    }
}

void qref_from_float_q5_0(const float *src, void *dst, int64_t n) {
    block_q5_0 *y = dst;
    for (int64_t i = 0; i < n / QK5_0; i++) {
        const float *x = src + i * QK5_0;
        const float d = signed_absmax(x, QK5_0) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            int q0 = low_i8(trunc_to_i32(x[j] * id + 16.5f));
            int q1 = low_i8(trunc_to_i32(x[j + QK5_0 / 2] * id + 16.5f));
            q0 = q0 < 31 ? q0 : 31;
            q1 = q1 < 31 ? q1 : 31;
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + QK5_0 / 2);
        }
        store_qh(y[i].qh, qh);
    }
}

void qref_vec_dot_q5_0_q8_0(int n, float *s, const void *w, const void *a) {
    const block_q5_0 *x = w;
    const block_q8_0 *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n / QK8_0; i++) {
        const uint32_t qh = load_qh(x[i].qh);
        int isum = 0;
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int x0 = ((x[i].qs[j] & 0x0F) | ((qh >> j) & 1) << 4) - 16;
            const int x1 = ((x[i].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16;
            isum += x0 * y[i].qs[j] + x1 * y[i].qs[j + QK5_0 / 2];
        }
        sum += (fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d)) * (float)isum;
    }
    *s = sum;
}

/* ---- Q5_1: x = d * q + m, q in 0..31, bit layout as Q5_0 ---- */

void qref_to_float_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *x = src;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        const float d = fp16_to_f32(x[i].d);
        const float m = fp16_to_f32(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int x0 = (x[i].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            const int x1 = (x[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            dst[i * QK5_1 + j] = x0 * d + m;
            dst[i * QK5_1 + j + QK5_1 / 2] = x1 * d + m;
        }
    }
}

void qref_from_float_q5_1(const float *src, void *dst, int64_t n) {
    block_q5_1 *y = dst;
    for (int64_t i = 0; i < n / QK5_1; i++) {
        const float *x = src + i * QK5_1;
        float min, max;
        minmax(x, QK5_1, &min, &max);
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        y[i].m = f32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            /* llama.cpp converts straight to uint8_t here (no clamp): the
             * low byte of the truncated value is what it stores */
            const int q0 = low_i8(trunc_to_i32((x[j] - min) * id + 0.5f)) & 0xFF;
            const int q1 = low_i8(trunc_to_i32((x[j + QK5_1 / 2] - min) * id + 0.5f)) & 0xFF;
            y[i].qs[j] = (uint8_t)((q0 & 0x0F) | (q1 & 0x0F) << 4);
            qh |= (uint32_t)((q0 >> 4) & 1) << j;
            qh |= (uint32_t)((q1 >> 4) & 1) << (j + QK5_1 / 2);
        }
        store_qh(y[i].qh, qh);
    }
}

void qref_vec_dot_q5_1_q8_1(int n, float *s, const void *w, const void *a) {
    const block_q5_1 *x = w;
    const block_q8_1 *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n / QK8_1; i++) {
        const uint32_t qh = load_qh(x[i].qh);
        int isum = 0;
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int x0 = (x[i].qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
            const int x1 = (x[i].qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
            isum += x0 * y[i].qs[j] + x1 * y[i].qs[j + QK5_1 / 2];
        }
        sum += (fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d)) * (float)isum
             + fp16_to_f32(x[i].m) * fp16_to_f32(y[i].s);
    }
    *s = sum;
}

/* ---- Q8_0: x = d * q, q in -127..127 ---- */

void qref_to_float_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *x = src;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < QK8_0; j++)
            dst[i * QK8_0 + j] = x[i].qs[j] * d;
    }
}

/* Round-to-nearest-even of an already scaled value, then the saturating
 * int32 -> int8 packing of the SIMD code (a NaN converts to INT32_MIN and
 * saturates to -128, as _mm256_cvtps_epi32 + packs would). */
static int round_sat_i8(float v) {
    if (!(v > -2147483648.f && v < 2147483648.f))
        return -128;
    float r = rintf(v);
    return r > 127.f ? 127 : r < -128.f ? -128 : (int)r;
}

static float absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax)
            amax = fabsf(x[j]);
    return amax;
}

/* Activation quantizer, byte-exact with llama.cpp's x86 quantize_row_q8_0
 * (AVX/AVX2 path, also taken on AVX-512 machines).  It differs from the
 * generic quantize_row_q8_0_ref in two ways that change some bytes:
 *   - the multiplier is 127/amax, not 1/(amax/127) (different float
 *     rounding of the multiplier);
 *   - _mm256_round_ps(_MM_ROUND_NEAREST) rounds ties to even where roundf
 *     rounds them away from zero.
 * The stored scale is amax/127 in both. */
void qref_from_float_q8_0(const float *src, void *dst, int64_t n) {
    block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        const float amax = absmax(x, QK8_0);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++)
            y[i].qs[j] = (int8_t)round_sat_i8(x[j] * id);
    }
}

/* llama-quantize's Q8_0 (quantize_row_q8_0_ref): what Q8_0 weight files
 * hold.  Ties round away from zero (roundf). */
void qref_from_float_q8_0_ref(const float *src, void *dst, int64_t n) {
    block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const float *x = src + i * QK8_0;
        const float amax = absmax(x, QK8_0);
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = f32_to_fp16(d);
        for (int j = 0; j < QK8_0; j++) {
            /* |x * id| <= 127 up to rounding; the clamp only guards NaN/inf */
            const float r = roundf(x[j] * id);
            y[i].qs[j] = (int8_t)(isnan(r) ? 0 : r > 127.f ? 127 : r < -128.f ? -128 : (int)r);
        }
    }
}

void qref_vec_dot_q8_0_q8_0(int n, float *s, const void *w, const void *a) {
    const block_q8_0 *x = w;
    const block_q8_0 *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++)
            isum += x[i].qs[j] * y[i].qs[j];
        sum += (fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d)) * (float)isum;
    }
    *s = sum;
}

/* ---- Q8_1: Q8_0 plus s = d * sum(q); activations only ---- */

void qref_to_float_q8_1(const void *src, float *dst, int64_t n) {
    const block_q8_1 *x = src;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        const float d = fp16_to_f32(x[i].d);
        for (int j = 0; j < QK8_1; j++)
            dst[i * QK8_1 + j] = x[i].qs[j] * d;
    }
}

/* Byte-exact with the x86 quantize_row_q8_1: as qref_from_float_q8_0, and s is
 * the float (not half-rounded) d times the integer sum, rounded to half. */
void qref_from_float_q8_1(const float *src, void *dst, int64_t n) {
    block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / QK8_1; i++) {
        const float *x = src + i * QK8_1;
        const float amax = absmax(x, QK8_1);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = f32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < QK8_1; j++) {
            const int q = round_sat_i8(x[j] * id);
            y[i].qs[j] = (int8_t)q;
            sum += q;
        }
        y[i].s = f32_to_fp16(d * (float)sum);
    }
}
