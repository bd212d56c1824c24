/* llama.cpp's float operation order, in scalar C (see llama_order.h).
 *
 * Notation in the comments: an "8-lane" kernel keeps a float[8]
 * accumulator where lane l collects, for every 32-value group of the row,
 * the integer products of values 4l..4l+3 of that group (how _mm256_maddubs
 * / dpbusd + madd spread a 32-byte product over eight int32 lanes); after
 * the last block the lanes are added with lo_hsum8.  fmaf stands for an FMA
 * instruction of llama.cpp's kernel, a*b+c written out for a multiply and
 * an add that it rounds separately.  This relies on the compiler not
 * contracting a*b+c itself, which -std=c11 guarantees (-ffp-contract=off). */
#include "llama_order.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "quant.h"

/* ---- horizontal sums ---- */

/* hsum_float_8: (hi128 + lo128), then lanes (0+2) + (1+3). */
float lo_hsum8(const float v[8]) {
    float r[4];
    for (int i = 0; i < 4; i++) r[i] = v[i + 4] + v[i];
    return (r[0] + r[2]) + (r[1] + r[3]);
}

/* _mm512_reduce_add_ps: halves 256, 128, 64 then the last pair. */
float lo_reduce16(const float v[16]) {
    float a[8];
    for (int i = 0; i < 8; i++) a[i] = v[i + 8] + v[i];
    return lo_hsum8(a);
}

/* GGML_F32x16_REDUCE of four 16-lane accumulators: (0+2) + (1+3) lane by
 * lane, then _mm512_reduce_add_ps. */
static float reduce4x16(float s[4][16]) {
    float r[16];
    for (int i = 0; i < 16; i++) r[i] = (s[0][i] + s[2][i]) + (s[1][i] + s[3][i]);
    return lo_reduce16(r);
}

/* ---- float dot products ---- */

/* ggml_vec_dot_f32: 4 accumulators of 16 lanes over 64-value steps, the
 * tail as float FMAs (the C loop `sumf += x*y` is contracted). */
float lo_dot_f32(int n, const float *x, const float *y) {
    float r; /* SIMD kernel with these exact bits (kernels.h), if the path has one */
    if (kern_dot_f32_llama(n, x, y, &r)) return r;
    float s[4][16] = {{0}};
    const int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) s[j][l] = fmaf(x[i + 16 * j + l], y[i + 16 * j + l], s[j][l]);
    float sum = reduce4x16(s);
    for (int i = np; i < n; i++) sum += x[i] * y[i];
    return sum;
}

/* ggml_vec_dot_f16: as f32 (products of halves are exact in float), but
 * the result and the tail are summed in double. */
static float dot_f16_vec(int n, const fp16_t *x, const fp16_t *y) {
    float s[4][16] = {{0}};
    const int np = n & ~63;
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++)
                s[j][l] = fmaf(fp16_to_f32(x[i + 16 * j + l]), fp16_to_f32(y[i + 16 * j + l]), s[j][l]);
    double sum = reduce4x16(s);
    for (int i = np; i < n; i++) sum += (double)(fp16_to_f32(x[i]) * fp16_to_f32(y[i]));
    return (float)sum;
}

/* Flush a denormal to (signed) zero: VDPBF16PS works with DAZ and FTZ. */
static float ftz(float v) { return fabsf(v) < 0x1p-126f ? copysignf(0.0f, v) : v; }

/* One VDPBF16PS lane: acc += x[1]*y[1], then += x[0]*y[0]; the bf16
 * products are exact in float. */
static float dpbf16(float acc, const bf16_t *x, const bf16_t *y) {
    acc = ftz(acc + ftz(bf16_to_f32(x[1])) * ftz(bf16_to_f32(y[1])));
    return ftz(acc + ftz(bf16_to_f32(x[0])) * ftz(bf16_to_f32(y[0])));
}

/* ggml_vec_dot_bf16 (AVX512_BF16): two 16-lane dpbf16 accumulators over
 * 64-value steps, each reduced and added in double, tail in double. */
static float dot_bf16_vec(int n, const bf16_t *x, const bf16_t *y) {
    float c[2][16] = {{0}};
    int i = 0;
    for (; i + 64 <= n; i += 64)
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 16; l++)
                c[h][l] = dpbf16(c[h][l], x + i + 32 * h + 2 * l, y + i + 32 * h + 2 * l);
    double sum = 0.0;
    sum += (double)lo_reduce16(c[0]);
    sum += (double)lo_reduce16(c[1]);
    for (; i < n; i++) sum += (double)(bf16_to_f32(x[i]) * bf16_to_f32(y[i]));
    return (float)sum;
}

/* tinyBLAS F32 / F16 (AVX-512): one 16-lane FMA accumulator per output
 * over 16-value chunks, reduced once.  n is a multiple of 16 here. */
static float dot_f32_tiny(int n, const float *x, const float *y) {
    float c[16] = {0};
    for (int i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) c[l] = fmaf(x[i + l], y[i + l], c[l]);
    return lo_reduce16(c);
}

static float dot_f16_tiny(int n, const fp16_t *x, const fp16_t *y) {
    float c[16] = {0};
    for (int i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) c[l] = fmaf(fp16_to_f32(x[i + l]), fp16_to_f32(y[i + l]), c[l]);
    return lo_reduce16(c);
}

/* tinyBLAS BF16 with AVX512_BF16: 16 dpbf16 lanes over 32-value chunks. */
static float dot_bf16_tiny(int n, const bf16_t *x, const bf16_t *y) {
    float c[16] = {0};
    for (int i = 0; i < n; i += 32)
        for (int l = 0; l < 16; l++) c[l] = dpbf16(c[l], x + i + 2 * l, y + i + 2 * l);
    return lo_reduce16(c);
}

/* ---- 32-value block types: the 8-lane kernels ---- */

/* Signed values of one weight block, in row order. */
static void unpack_q4_0(const block_q4_0 *b, int v[32]) {
    for (int j = 0; j < 16; j++) {
        v[j] = (b->qs[j] & 0x0F) - 8;
        v[j + 16] = (b->qs[j] >> 4) - 8;
    }
}

static void unpack_q5_0(const block_q5_0 *b, int v[32]) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        v[j] = ((b->qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4) - 16;
        v[j + 16] = ((b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4) - 16;
    }
}

static void unpack_q4_1(const block_q4_1 *b, int v[32]) {
    for (int j = 0; j < 16; j++) {
        v[j] = b->qs[j] & 0x0F;
        v[j + 16] = b->qs[j] >> 4;
    }
}

static void unpack_q5_1(const block_q5_1 *b, int v[32]) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    for (int j = 0; j < 16; j++) {
        v[j] = (b->qs[j] & 0x0F) | (int)((qh >> j) & 1) << 4;
        v[j + 16] = (b->qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

/* lane l of one 32-block product: values 4l..4l+3 */
static void lanes32(const int v[32], const int8_t *a, int lane[8]) {
    for (int l = 0; l < 8; l++) {
        int s = 0;
        for (int k = 4 * l; k < 4 * l + 4; k++) s += v[k] * a[k];
        lane[l] = s;
    }
}

/* vec_dot / tinyBLAS for Q4_0, Q5_0, Q8_0 against Q8_0:
 * acc[l] = fma(d_w * d_a, lane, acc[l]) per block, then hsum_float_8. */
static float dot_q0(int wtype, int n, const void *w, const block_q8_0 *y) {
    float acc[8] = {0};
    int v[32], lane[8];
    for (int i = 0; i < n / 32; i++) {
        float dw;
        if (wtype == QT_Q4_0) {
            const block_q4_0 *b = (const block_q4_0 *)w + i;
            unpack_q4_0(b, v), dw = fp16_to_f32(b->d);
        } else if (wtype == QT_Q5_0) {
            const block_q5_0 *b = (const block_q5_0 *)w + i;
            unpack_q5_0(b, v), dw = fp16_to_f32(b->d);
        } else {
            const block_q8_0 *b = (const block_q8_0 *)w + i;
            for (int k = 0; k < 32; k++) v[k] = b->qs[k];
            dw = fp16_to_f32(b->d);
        }
        lanes32(v, y[i].qs, lane);
        const float d = dw * fp16_to_f32(y[i].d);
        for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
    }
    return lo_hsum8(acc);
}

/* Q4_1 / Q5_1 against Q8_1: acc[l] = fma(lane, d_w * d_a, acc[l]); the
 * offsets m * s are summed apart (a contracted scalar loop) and added to
 * the lane sum last. */
static float dot_q1(int wtype, int n, const void *w, const block_q8_1 *y) {
    float acc[8] = {0}, summs = 0.0f;
    int v[32], lane[8];
    for (int i = 0; i < n / 32; i++) {
        float dw, m;
        if (wtype == QT_Q4_1) {
            const block_q4_1 *b = (const block_q4_1 *)w + i;
            unpack_q4_1(b, v), dw = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
        } else {
            const block_q5_1 *b = (const block_q5_1 *)w + i;
            unpack_q5_1(b, v), dw = fp16_to_f32(b->d), m = fp16_to_f32(b->m);
        }
        summs = fmaf(m, fp16_to_f32(y[i].s), summs);
        lanes32(v, y[i].qs, lane);
        const float d = dw * fp16_to_f32(y[i].d);
        for (int l = 0; l < 8; l++) acc[l] = fmaf((float)lane[l], d, acc[l]);
    }
    return lo_hsum8(acc) + summs;
}

/* Repacked Q4_0 (q4_0_8x8 gemv/gemm): each output is one accumulator,
 * acc = fma(isum, d_w * d_a, acc) block after block. */
static float dot_q4_0_repacked(int n, const block_q4_0 *x, const block_q8_0 *y) {
    float acc = 0.0f;
    int v[32];
    for (int i = 0; i < n / 32; i++) {
        unpack_q4_0(&x[i], v);
        int isum = 0;
        for (int k = 0; k < 32; k++) isum += v[k] * y[i].qs[k];
        acc = fmaf((float)isum, fp16_to_f32(x[i].d) * fp16_to_f32(y[i].d), acc);
    }
    return acc;
}

/* ---- K-quants ---- */

/* Unsigned 4/5-bit values of a Q4_K/Q5_K super-block in row order. */
static void unpack_q4_K(const block_q4_K *b, int v[QK_K]) {
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            v[64 * j + l] = b->qs[32 * j + l] & 0x0F;
            v[64 * j + 32 + l] = b->qs[32 * j + l] >> 4;
        }
}

static void unpack_q5_K(const block_q5_K *b, int v[QK_K]) {
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++) {
            v[64 * j + l] = (b->qs[32 * j + l] & 0x0F) | ((b->qh[l] >> (2 * j)) & 1) << 4;
            v[64 * j + 32 + l] = (b->qs[32 * j + l] >> 4) | ((b->qh[l] >> (2 * j + 1)) & 1) << 4;
        }
}

/* Signed values (q - 32) of a Q6_K super-block in row order. */
static void unpack_q6_K(const block_q6_K *b, int v[QK_K]) {
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *ql = b->ql + 64 * h, qh = b->qh[32 * h + l];
            v[128 * h + l] = ((ql[l] & 0x0F) | ((qh >> 0) & 3) << 4) - 32;
            v[128 * h + l + 32] = ((ql[l + 32] & 0x0F) | ((qh >> 2) & 3) << 4) - 32;
            v[128 * h + l + 64] = ((ql[l] >> 4) | ((qh >> 4) & 3) << 4) - 32;
            v[128 * h + l + 96] = ((ql[l + 32] >> 4) | ((qh >> 6) & 3) << 4) - 32;
        }
}

/* The 8 lanes of a super-block: lane l sums, over the eight 32-value
 * groups g, sc[value / per_scale] * v * a for values 32g + 4l .. +3. */
static void lanes_k(const int v[QK_K], const int *sc, int per_scale, const int8_t *a, int lane[8]) {
    for (int l = 0; l < 8; l++) {
        int s = 0;
        for (int g = 0; g < 8; g++)
            for (int k = 32 * g + 4 * l; k < 32 * g + 4 * l + 4; k++) s += sc[k / per_scale] * v[k] * a[k];
        lane[l] = s;
    }
}

/* Q4_K / Q5_K scales and the min term of a super-block.  mprod[i] is the
 * madd of mins with the 32-value sums of the activations, pairs (2i, 2i+1). */
static void k4_scales(const uint8_t *scales, const int16_t *bsums, int sc[8], int mprod[4]) {
    int mn[8], q8s[8];
    for (int j = 0; j < 8; j++) {
        q4k_scale_min(j, scales, &sc[j], &mn[j]);
        q8s[j] = bsums[2 * j] + bsums[2 * j + 1];
    }
    for (int i = 0; i < 4; i++) mprod[i] = mn[2 * i] * q8s[2 * i] + mn[2 * i + 1] * q8s[2 * i + 1];
}

/* vec_dot_q4_K (AVX2 code of the AVX-512 build): 8 lanes with
 * fma(d, lane, acc); the mins in 4 lanes fma(-dmin, mprod, acc_m), each
 * reduced, the two sums added last. */
static float dot_q4_K(int n, const block_q4_K *x, const block_q8_K *y) {
    float acc[8] = {0}, acc_m[4] = {0};
    int v[QK_K], sc[8], mprod[4], lane[8];
    for (int i = 0; i < n / QK_K; i++) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        const float dmin = -y[i].d * fp16_to_f32(x[i].dmin);
        k4_scales(x[i].scales, y[i].bsums, sc, mprod);
        for (int k = 0; k < 4; k++) acc_m[k] = fmaf(dmin, (float)mprod[k], acc_m[k]);
        unpack_q4_K(&x[i], v);
        lanes_k(v, sc, 32, y[i].qs, lane);
        for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
    }
    return lo_hsum8(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]));
}

/* vec_dot_q5_K: as Q4_K, but the mins go to one scalar through a
 * contracted summs += dmin * total. */
static float dot_q5_K(int n, const block_q5_K *x, const block_q8_K *y) {
    float acc[8] = {0}, summs = 0.0f;
    int v[QK_K], sc[8], mprod[4], lane[8];
    for (int i = 0; i < n / QK_K; i++) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        const float dmin = -y[i].d * fp16_to_f32(x[i].dmin);
        k4_scales(x[i].scales, y[i].bsums, sc, mprod);
        summs = fmaf(dmin, (float)(mprod[0] + mprod[1] + mprod[2] + mprod[3]), summs);
        unpack_q5_K(&x[i], v);
        lanes_k(v, sc, 32, y[i].qs, lane);
        for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
    }
    return lo_hsum8(acc) + summs;
}

/* vec_dot_q6_K: 8 lanes over the unsigned 6-bit values with 16-value
 * scales; the -32 offset is taken out per lane as 32 * (scale * bsum) of
 * the 16-value groups 2l and 2l+1 (not of the lane's own values), then
 * fma(d, lane, acc) and hsum_float_8. */
static float dot_q6_K(int n, const block_q6_K *x, const block_q8_K *y) {
    float acc[8] = {0};
    int v[QK_K], sc[16], lane[8];
    for (int i = 0; i < n / QK_K; i++) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        for (int j = 0; j < 16; j++) sc[j] = x[i].scales[j];
        unpack_q6_K(&x[i], v);
        for (int k = 0; k < QK_K; k++) v[k] += 32;
        lanes_k(v, sc, 16, y[i].qs, lane);
        for (int l = 0; l < 8; l++) {
            lane[l] -= 32 * (sc[2 * l] * y[i].bsums[2 * l] + sc[2 * l + 1] * y[i].bsums[2 * l + 1]);
            acc[l] = fmaf(d, (float)lane[l], acc[l]);
        }
    }
    return lo_hsum8(acc);
}

/* Signed 3-bit values of a Q3_K super-block in row order: value
 * 128c + 32s + l has its low 2 bits at bits 2s of qs[32c + l] and is
 * lowered by 4 unless bit 4c + s of hmask[l] is set. */
static void unpack_q3_K(const block_q3_K *b, int v[QK_K]) {
    for (int c = 0; c < 2; c++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++)
                v[128 * c + 32 * s + l] =
                    ((b->qs[32 * c + l] >> (2 * s)) & 3) - ((b->hmask[l] >> (4 * c + s)) & 1 ? 0 : 4);
}

/* vec_dot_q3_K (the AVX2 code of the AVX-512 build): 8 lanes over the
 * signed values with 16-value scales (lanes 0-3 of a 32-value group take
 * scale 2g, lanes 4-7 scale 2g+1), fma(d, lane, acc) per super-block with
 * d = d_a * d_w, then hsum_float_8. */
static float dot_q3_K(int n, const block_q3_K *x, const block_q8_K *y) {
    float acc[8] = {0};
    int v[QK_K], sc[16], lane[8];
    for (int i = 0; i < n / QK_K; i++) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        for (int j = 0; j < 16; j++) sc[j] = q3k_scale(x[i].scales, j);
        unpack_q3_K(&x[i], v);
        lanes_k(v, sc, 16, y[i].qs, lane);
        for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
    }
    return lo_hsum8(acc);
}

/* Q2_K: 16 groups of 16 values, each with a 4-bit scale (low nibble of
 * scales[j]) and a 4-bit min (high nibble); value 128c + 32s + l is bits
 * 2s of qs[32c + l] (0..3), so value k has scale and min k / 16. */
static void unpack_q2_K(const block_q2_K *b, int v[QK_K], int sc[16], int mn[16]) {
    for (int c = 0; c < 2; c++)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) v[128 * c + 32 * s + l] = (b->qs[32 * c + l] >> (2 * s)) & 3;
    for (int j = 0; j < 16; j++) {
        sc[j] = b->scales[j] & 0x0F;
        mn[j] = b->scales[j] >> 4;
    }
}

/* vec_dot_q2_K (the AVX2 code of the AVX-512 build), one 8-lane
 * accumulator: per super-block first fma(-dmin, mprod_l, acc_l) with
 * mprod_l = mn[2l] * bsum[2l] + mn[2l+1] * bsum[2l+1] (vpmaddwd of the
 * mins with the bsums), then fma(d, lane_l, acc_l) over the lanes with
 * 16-value scales; hsum_float_8 at the end. */
static float dot_q2_K(int n, const block_q2_K *x, const block_q8_K *y) {
    float acc[8] = {0};
    int v[QK_K], sc[16], mn[16], lane[8];
    for (int i = 0; i < n / QK_K; i++) {
        const float d = y[i].d * fp16_to_f32(x[i].d);
        const float dmin = -y[i].d * fp16_to_f32(x[i].dmin);
        unpack_q2_K(&x[i], v, sc, mn);
        for (int l = 0; l < 8; l++) {
            const int mprod = mn[2 * l] * y[i].bsums[2 * l] + mn[2 * l + 1] * y[i].bsums[2 * l + 1];
            acc[l] = fmaf(dmin, (float)mprod, acc[l]);
        }
        lanes_k(v, sc, 16, y[i].qs, lane);
        for (int l = 0; l < 8; l++) acc[l] = fmaf(d, (float)lane[l], acc[l]);
    }
    return lo_hsum8(acc);
}

/* Repacked Q2_K (q2_K_8x8).  Two accumulators per output, the scaled
 * integer sum and the min sum (mins times bsums) each FMA'd into its own
 * with d_w * d_a and dmin_w * d_a; the min accumulator is subtracted last.
 * gemv (a lone activation row, AVX2 code) takes a whole super-block per
 * step; gemm (AVX-512 and AVX2 code alike) a 128-value half per step. */
static float dot_q2_K_repacked(bool gemm, int n, const block_q2_K *x, const block_q8_K *y) {
    float acc = 0.0f, acc_m = 0.0f;
    int v[QK_K], sc[16], mn[16];
    for (int i = 0; i < n / QK_K; i++) {
        unpack_q2_K(&x[i], v, sc, mn);
        int isum[2] = {0, 0}, msum[2] = {0, 0};
        for (int k = 0; k < QK_K; k++) isum[k / 128] += sc[k / 16] * v[k] * y[i].qs[k];
        for (int j = 0; j < 16; j++) msum[j / 8] += mn[j] * y[i].bsums[j];
        const float d = fp16_to_f32(x[i].d) * y[i].d, dmin = fp16_to_f32(x[i].dmin) * y[i].d;
        if (gemm) {
            for (int h = 0; h < 2; h++) {
                acc = fmaf((float)isum[h], d, acc);
                acc_m = fmaf((float)msum[h], dmin, acc_m);
            }
        } else {
            acc = fmaf((float)(isum[0] + isum[1]), d, acc);
            acc_m = fmaf((float)(msum[0] + msum[1]), dmin, acc_m);
        }
    }
    return acc - acc_m;
}

/* Repacked Q4_K (q4_K_8x8).  gemv (a lone activation row): per output
 * and super-block, the scaled integer sum and the min term are each FMA'd
 * into their own accumulator; the min accumulator is subtracted last.
 * gemm (activation rows in groups of 4) does the same per pair of 32-value
 * sub-blocks (2j, 2j+1) instead of per super-block. */
static float dot_q4_K_repacked(bool gemm, int n, const block_q4_K *x, const block_q8_K *y) {
    float acc = 0.0f, acc_m = 0.0f;
    int v[QK_K], sc[8], mprod[4];
    for (int i = 0; i < n / QK_K; i++) {
        k4_scales(x[i].scales, y[i].bsums, sc, mprod);
        unpack_q4_K(&x[i], v);
        int sub[8];
        for (int j = 0; j < 8; j++) {
            sub[j] = 0;
            for (int k = 32 * j; k < 32 * j + 32; k++) sub[j] += v[k] * y[i].qs[k];
            sub[j] *= sc[j];
        }
        const float d = fp16_to_f32(x[i].d) * y[i].d, dmin = fp16_to_f32(x[i].dmin) * y[i].d;
        if (gemm) {
            for (int j = 0; j < 4; j++) {
                acc = fmaf((float)(sub[2 * j] + sub[2 * j + 1]), d, acc);
                acc_m = fmaf((float)mprod[j], dmin, acc_m);
            }
        } else {
            const int isum = sub[0] + sub[1] + sub[2] + sub[3] + sub[4] + sub[5] + sub[6] + sub[7];
            acc = fmaf((float)isum, d, acc);
            acc_m = fmaf((float)(mprod[0] + mprod[1] + mprod[2] + mprod[3]), dmin, acc_m);
        }
    }
    return acc - acc_m;
}

/* ---- dispatch ---- */

bool lo_repacked(int wtype, int rows, bool in_mul_mat) {
    return in_mul_mat && (wtype == QT_Q4_0 || wtype == QT_Q4_K || wtype == QT_Q2_K) && rows % 8 == 0;
}

/* tinyBLAS takes a float product only when the column count is a multiple
 * of its vector width and the row count a multiple of 4 (else
 * llamafile_sgemm declines and ggml falls back to vec_dot). */
static bool tiny_takes(int wtype, int rows, int cols) {
    const int kn = wtype == QT_BF16 ? 32 : 16;
    return (wtype == QT_F32 || wtype == QT_F16 || wtype == QT_BF16) && cols % kn == 0 && rows % 4 == 0;
}

/* Kernel of an op.  llama.cpp's repacked gemm covers the first
 * ntok - ntok % 4 activation rows and leaves the rest to gemv; we take the
 * gemm order for every row of a multi-row op, so that a row's result never
 * depends on where a batch was cut (the cluster splits prompts into
 * micro-batches).  Only those tail rows of a prompt differ from llama.cpp
 * (Q4_K, Q2_K: by an ulp or so; Q4_0's gemv and gemm orders are the same). */
static enum lo_kernel kernel_of(enum lo_op op, bool repacked, int wtype, int rows, int cols) {
    if (op != LO_MUL_MAT_N) return LO_K_VEC;
    if (repacked) return LO_K_GEMM;
    return tiny_takes(wtype, rows, cols) ? LO_K_TINY : LO_K_VEC;
}

/* One output: weight row w (n values) against quantized activation a. */
static float lo_dot(enum lo_kernel k, bool repacked, int wtype, int n, const void *w, const void *a) {
    switch (wtype) {
    case QT_F32: return k == LO_K_TINY ? dot_f32_tiny(n, w, a) : lo_dot_f32(n, w, a);
    case QT_F16: return k == LO_K_TINY ? dot_f16_tiny(n, w, a) : dot_f16_vec(n, w, a);
    case QT_BF16: return k == LO_K_TINY ? dot_bf16_tiny(n, w, a) : dot_bf16_vec(n, w, a);
    case QT_Q4_0: return repacked ? dot_q4_0_repacked(n, w, a) : dot_q0(wtype, n, w, a);
    case QT_Q5_0:
    case QT_Q8_0: return dot_q0(wtype, n, w, a);
    case QT_Q4_1:
    case QT_Q5_1: return dot_q1(wtype, n, w, a);
    case QT_Q4_K: return repacked ? dot_q4_K_repacked(k == LO_K_GEMM, n, w, a) : dot_q4_K(n, w, a);
    case QT_Q5_K: return dot_q5_K(n, w, a);
    case QT_Q2_K: return repacked ? dot_q2_K_repacked(k == LO_K_GEMM, n, w, a) : dot_q2_K(n, w, a);
    case QT_Q3_K: return dot_q3_K(n, w, a);
    case QT_Q6_K: return dot_q6_K(n, w, a);
    default: {
        /* any other type: the scalar reference (not reached by the engine's types) */
        float s;
        qtype_get(wtype)->vec_dot(n, &s, w, a);
        return s;
    }
    }
}

typedef struct {
    enum lo_op op;
    bool repacked;
    int wtype, rows, cols, ntok;
    const uint8_t *W, *A; /* weights; quantized activations */
    size_t wstride, astride;
    float *Y;
} lo_job;

static void lo_worker(void *arg, int ith, int nth) {
    const lo_job *j = arg;
    const int r0 = (int)((int64_t)j->rows * ith / nth), r1 = (int)((int64_t)j->rows * (ith + 1) / nth);
    const enum lo_kernel k = kernel_of(j->op, j->repacked, j->wtype, j->rows, j->cols);
    for (int t = 0; t < j->ntok; t++) {
        for (int r = r0; r < r1; r++)
            j->Y[(size_t)t * j->rows + r] =
                lo_dot(k, j->repacked, j->wtype, j->cols, j->W + (size_t)r * j->wstride, j->A + (size_t)t * j->astride);
    }
}

/* Activation rows to quantize (kern_quantize_act: the from_float bytes,
 * vectorised; test_kernels): row t of A from X row xrows[t] (or t). */
typedef struct quant_rows {
    int wtype, cols;    /* weight type (its vec_dot_type), values per row */
    size_t as;          /* bytes of one quantized row */
    int n;              /* rows */
    const float *X;     /* activations, `cols` floats per row */
    const int *xrows;   /* NULL: row t is X row t */
    uint8_t *A;         /* n rows of `as` bytes */
} quant_rows;

static void quant_worker(void *arg, int ith, int nth) {
    const quant_rows *q = arg;
    const int t0 = (int)((int64_t)q->n * ith / nth), t1 = (int)((int64_t)q->n * (ith + 1) / nth);
    for (int t = t0; t < t1; t++) {
        const size_t row = q->xrows ? (size_t)q->xrows[t] : (size_t)t;
        kern_quantize_act(q->wtype, q->X + row * (size_t)q->cols, q->A + (size_t)t * q->as, q->cols);
    }
}

/* Each row is quantized on its own, so splitting the rows over the pool
 * gives the same bytes; small batches (decode) stay on this thread, where
 * a pool run would cost more than it saves. */
static void quantize_rows(tpool *tp, const quant_rows *q) {
    if (tp && tpool_size(tp) > 1 && (int64_t)q->n * q->cols >= 16384) tpool_run(tp, quant_worker, (void *)q);
    else quant_worker((void *)q, 0, 1);
}

void lo_matmul(tpool *tp, enum lo_op op, bool repacked, int wtype, const void *W, int rows, int cols,
               const float *X, int ntok, float *Y) {
    const qtype_info *wi = qtype_get(wtype);
    const int at = wi->vec_dot_type;
    const size_t as = qtype_row_size(at, cols);
    uint8_t *A = malloc(as * (size_t)(ntok > 0 ? ntok : 1));
    if (!A) abort(); /* out of memory mid-step: nothing to recover */
    quant_rows qr = {.wtype = wtype, .cols = cols, .as = as, .n = ntok, .X = X, .xrows = NULL, .A = A};
    quantize_rows(tp, &qr);
    const enum lo_kernel k = kernel_of(op, repacked, wtype, rows, cols);
    if (kern_matmul_llama(tp, k, repacked, wtype, W, rows, cols, A, as, ntok, Y)) {
        free(A);
        return;
    }
    lo_job j = {.op = op, .repacked = repacked, .wtype = wtype, .rows = rows, .cols = cols, .ntok = ntok,
                .W = W, .A = A, .wstride = qtype_row_size(wtype, cols), .astride = as, .Y = Y};
    tpool_run(tp, lo_worker, &j);
    free(A);
}

/* Quantized activations of the products of one lo_matmul_multi call: a
 * product reading the same rows as an earlier one, with the same
 * activation type, shares its buffer. */
static uint8_t **quantize_multi(tpool *tp, const lo_mm *mm, int n, lo_mmq *q) {
    uint8_t **owned = calloc((size_t)n, sizeof *owned);
    if (!owned) abort();
    for (int i = 0; i < n; i++) {
        const int at = qtype_get(mm[i].wtype)->vec_dot_type;
        const size_t as = qtype_row_size(at, mm[i].cols);
        q[i] = (lo_mmq){.k = kernel_of(mm[i].op, mm[i].repacked, mm[i].wtype, mm[i].rows, mm[i].cols),
                        .repacked = mm[i].repacked, .wtype = mm[i].wtype, .W = mm[i].W, .rows = mm[i].rows,
                        .cols = mm[i].cols, .astride = as, .ntok = mm[i].ntok, .Y = mm[i].Y};
        for (int j = 0; j < i && !q[i].Aq; j++)
            if (mm[j].X == mm[i].X && mm[j].xrows == mm[i].xrows && mm[j].cols == mm[i].cols &&
                mm[j].ntok >= mm[i].ntok && qtype_get(mm[j].wtype)->vec_dot_type == at)
                q[i].Aq = q[j].Aq;
        if (q[i].Aq || mm[i].ntok <= 0) continue;
        owned[i] = malloc(as * (size_t)mm[i].ntok);
        if (!owned[i]) abort(); /* out of memory mid-step: nothing to recover */
        quant_rows qr = {.wtype = mm[i].wtype, .cols = mm[i].cols, .as = as, .n = mm[i].ntok, .X = mm[i].X,
                         .xrows = mm[i].xrows, .A = owned[i]};
        quantize_rows(tp, &qr);
        q[i].Aq = owned[i];
    }
    return owned;
}

void lo_matmul_multi(tpool *tp, const lo_mm *mm, int n) {
    if (n <= 0) return;
    lo_mmq *q = malloc(sizeof *q * (size_t)n);
    if (!q) abort();
    uint8_t **owned = quantize_multi(tp, mm, n, q);
    if (!kern_matmul_llama_multi(tp, q, n)) {
        /* some product has no SIMD kernel: one run each, as lo_matmul */
        for (int i = 0; i < n; i++) {
            if (mm[i].ntok <= 0) continue;
            if (kern_matmul_llama(tp, q[i].k, q[i].repacked, q[i].wtype, q[i].W, q[i].rows, q[i].cols, q[i].Aq,
                                  q[i].astride, q[i].ntok, q[i].Y))
                continue;
            lo_job j = {.op = mm[i].op, .repacked = mm[i].repacked, .wtype = mm[i].wtype, .rows = mm[i].rows,
                        .cols = mm[i].cols, .ntok = mm[i].ntok, .W = mm[i].W, .A = q[i].Aq,
                        .wstride = qtype_row_size(mm[i].wtype, mm[i].cols), .astride = q[i].astride, .Y = mm[i].Y};
            tpool_run(tp, lo_worker, &j);
        }
    }
    for (int i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(q);
}

/* ---- attention ---- */

void lo_attention(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q, float scale,
                  float *p, float *o) {
    if (kern_attention_llama(tiny, n_kv, W, L, kv, stride, q, scale, p, o)) return;
    const int n_pad = (n_kv + 15) & ~15;
    for (int s = 0; s < n_kv; s++) p[s] = lo_dot_f32(W, kv + (size_t)s * stride, q) * scale;
    for (int s = n_kv; s < n_pad; s++) p[s] = -INFINITY;
    lo_softmax(p, n_pad);
    for (int i = 0; i < L; i++) {
        float acc[4][16] = {{0}};
        for (int s = 0; s < n_kv; s++) {
            float *a = &acc[tiny ? 0 : (s / 16) % 4][s % 16];
            *a = fmaf(kv[(size_t)s * stride + i], p[s], *a);
        }
        o[i] = tiny ? lo_reduce16(acc[0]) : reduce4x16(acc);
    }
}

void lo_attention_multi(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, int nq, const float *q,
                        size_t qs, float scale, float *p, size_t ps, float *o, size_t os) {
    if (kern_attention_multi_llama(tiny, n_kv, W, L, kv, stride, nq, q, qs, scale, p, ps, o, os)) return;
    for (int i = 0; i < nq; i++) lo_attention(tiny, n_kv, W, L, kv, stride, q + i * qs, scale, p + i * ps, o + i * os);
}

/* ---- RoPE ---- */

void lo_rope(const float *cs, int n_dims, float *x) {
    if (kern_rope_llama(cs, n_dims, x)) return;
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
        const float x0 = x[i0], x1 = x[i0 + 1];
        x[i0] = fmaf(x0, cs[i0], -(x1 * cs[i0 + 1]));
        x[i0 + 1] = fmaf(x0, cs[i0 + 1], x1 * cs[i0]);
    }
}

/* ---- element-wise ---- */

/* x * 2^n for integral n, as _mm512_scalef_ps (n in [-192, 192]) */
static float scalef(float x, float n) { return ldexpf(x, (int)n); }

float lo_v_expf(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (isnan(n)) return n;        /* NaN in, NaN out */
    if (fabsf(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY; /* the blend of the large-|x| lanes */
    const float u = b * b;
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                         fmaf(0x1.ffffecp-1f, b, 1.0f));
    return scalef(j, n);
}

float lo_v_silu(float x) { return x / (1.0f + lo_v_expf(0.0f - x)); }

void lo_softmax(float *x, int n) {
    if (kern_softmax_llama(x, n)) return;
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    int i = 0;
    for (; i + 15 < n; i += 16) {
        for (int l = 0; l < 16; l++) x[i + l] = lo_v_expf(x[i + l] - mx);
        sum += (double)lo_reduce16(x + i);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++) x[i] *= inv;
}

void lo_swiglu(const float *g, const float *u, float *y, int n) {
    if (kern_swiglu_llama(g, u, y, n)) return;
    int i = 0;
    for (; i + 15 < n; i += 16)
        for (int l = 0; l < 16; l++) y[i + l] = lo_v_silu(g[i + l]) * u[i + l];
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
