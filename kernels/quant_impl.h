/* Internal to the scalar reference code (quant.c, quant_legacy.c,
 * quant_kquants.c): the per-type row functions that fill the traits table,
 * and small numeric helpers they share.  Other units should go through
 * qtype_get() instead. */
#ifndef MOE_QUANT_IMPL_H
#define MOE_QUANT_IMPL_H

#include <math.h>
#include <stdint.h>

#include "quant.h"

/* Below this absolute maximum a group is treated as all zeros (the value
 * llama.cpp uses for the K-quants). */
#define GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, as llama.cpp's nearest_int (which adds
 * 1.5 * 2^23 and reads the mantissa).  That trick is only defined for
 * |x| <= 4194303; beyond it (or for NaN) we clamp instead of producing
 * garbage, so a degenerate input cannot trigger undefined behaviour. */
static inline int nearest_int(float x) {
    if (!(fabsf(x) <= 4194303.f))
        return isnan(x) ? 0 : (x > 0 ? 4194303 : -4194303);
    return (int)rintf(x);
}

/* C's float -> int truncation, with the out-of-range result x86's cvttss2si
 * gives (INT32_MIN) instead of undefined behaviour. */
static inline int32_t trunc_to_i32(float x) {
    if (x > -2147483648.f && x < 2147483648.f)
        return (int32_t)x;
    return INT32_MIN;
}

/* Narrowing an int to 8 bits the way the C code in llama.cpp does
 * implicitly (keep the low byte), without implementation-defined casts. */
static inline int8_t low_i8(int32_t v) {
    uint8_t b = (uint8_t)((uint32_t)v & 0xFF);
    return b < 128 ? (int8_t)b : (int8_t)((int)b - 256);
}

/* ---- F32 / F16 / BF16 ---- */
void qref_to_float_f32(const void *src, float *dst, int64_t n);
void qref_from_float_f32(const float *src, void *dst, int64_t n);
void qref_vec_dot_f32(int n, float *s, const void *w, const void *a);
void qref_to_float_f16(const void *src, float *dst, int64_t n);
void qref_from_float_f16(const float *src, void *dst, int64_t n);
void qref_vec_dot_f16(int n, float *s, const void *w, const void *a);
void qref_to_float_bf16(const void *src, float *dst, int64_t n);
void qref_from_float_bf16(const float *src, void *dst, int64_t n);
void qref_vec_dot_bf16(int n, float *s, const void *w, const void *a);

/* ---- 32-value blocks ---- */
void qref_to_float_q4_0(const void *src, float *dst, int64_t n);
void qref_from_float_q4_0(const float *src, void *dst, int64_t n);
void qref_vec_dot_q4_0_q8_0(int n, float *s, const void *w, const void *a);
void qref_to_float_q4_1(const void *src, float *dst, int64_t n);
void qref_from_float_q4_1(const float *src, void *dst, int64_t n);
void qref_vec_dot_q4_1_q8_1(int n, float *s, const void *w, const void *a);
void qref_to_float_q5_0(const void *src, float *dst, int64_t n);
void qref_from_float_q5_0(const float *src, void *dst, int64_t n);
void qref_vec_dot_q5_0_q8_0(int n, float *s, const void *w, const void *a);
void qref_to_float_q5_1(const void *src, float *dst, int64_t n);
void qref_from_float_q5_1(const float *src, void *dst, int64_t n);
void qref_vec_dot_q5_1_q8_1(int n, float *s, const void *w, const void *a);
void qref_to_float_q8_0(const void *src, float *dst, int64_t n);
void qref_from_float_q8_0(const float *src, void *dst, int64_t n);     /* x86 activation rounding */
void qref_from_float_q8_0_ref(const float *src, void *dst, int64_t n); /* llama-quantize rounding */
void qref_vec_dot_q8_0_q8_0(int n, float *s, const void *w, const void *a);
void qref_to_float_q8_1(const void *src, float *dst, int64_t n);
void qref_from_float_q8_1(const float *src, void *dst, int64_t n);

/* ---- 256-value super-blocks ---- */
void qref_to_float_q2_K(const void *src, float *dst, int64_t n);
void qref_from_float_q2_K(const float *src, void *dst, int64_t n);
void qref_vec_dot_q2_K_q8_K(int n, float *s, const void *w, const void *a);
void qref_to_float_q3_K(const void *src, float *dst, int64_t n);
void qref_from_float_q3_K(const float *src, void *dst, int64_t n);
void qref_vec_dot_q3_K_q8_K(int n, float *s, const void *w, const void *a);
void qref_to_float_q4_K(const void *src, float *dst, int64_t n);
void qref_from_float_q4_K(const float *src, void *dst, int64_t n);
void qref_vec_dot_q4_K_q8_K(int n, float *s, const void *w, const void *a);
void qref_to_float_q5_K(const void *src, float *dst, int64_t n);
void qref_from_float_q5_K(const float *src, void *dst, int64_t n);
void qref_vec_dot_q5_K_q8_K(int n, float *s, const void *w, const void *a);
void qref_to_float_q6_K(const void *src, float *dst, int64_t n);
void qref_from_float_q6_K(const float *src, void *dst, int64_t n);
void qref_vec_dot_q6_K_q8_K(int n, float *s, const void *w, const void *a);
void qref_to_float_q8_K(const void *src, float *dst, int64_t n);
void qref_from_float_q8_K(const float *src, void *dst, int64_t n);

#endif
