/* AVX-512 versions of llama_order.c's attention and element-wise steps
 * (lo_attention, lo_softmax, lo_swiglu, lo_rope), bitwise equal to that
 * scalar code, which stays the reference (test_kernels compares them).
 *
 * The attention value sum o[i] = sum_s p[s] * c_s[i] is, in llama.cpp's
 * order, a separate 16-lane (tinyBLAS) or 4 x 16-lane (vec_dot_f32)
 * accumulation per output i, position s feeding lane s % 16 (and
 * accumulator (s / 16) % 4).  The scalar code walks the cache down a
 * column per output.  Here the roles are swapped: for each of those 64
 * (accumulator, lane) slots, the positions that feed it are walked in
 * increasing order, and the slot's value for 128 outputs at once is kept
 * in 8 zmm, fed from contiguous cache rows.  Every output still sees the
 * same fmas in the same order, then the same reduction tree, now done for
 * 16 outputs per vector. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_simd.h"


/* ggml_v_expf of the AVX-512 build (lo_v_expf is its scalar spelling). */
INLINE __m512 v_expf(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b =
        _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
                        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f)));
    const __m512 res = _mm512_scalef_ps(j, n);
    if (!d) return res;
    /* |n| > 192: 0 below, infinity above */
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ),
                                            _mm512_set1_ps(INFINITY), _mm512_setzero_ps());
    return _mm512_mask_blend_ps(d, res, alt);
}

/* lo_reduce16 / _mm512_reduce_add_ps: halves 256, 128, 64, then a pair. */
INLINE float reduce16(__m512 v) {
    const __m256 a = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v));
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(a, 1), _mm256_castps256_ps128(a));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

void kern_avx512_softmax(float *x, int n) {
    /* the max: maxps(v, m) keeps m when v is NaN, as the scalar compare */
    __m512 vm = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) vm = _mm512_max_ps(_mm512_loadu_ps(x + i), vm);
    float mx = _mm512_reduce_max_ps(vm);
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    const __m512 vmx = _mm512_set1_ps(mx);
    double sum = 0.0;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 e = v_expf(_mm512_sub_ps(_mm512_loadu_ps(x + i), vmx));
        _mm512_storeu_ps(x + i, e);
        sum += (double)reduce16(e);
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    const __m512 vinv = _mm512_set1_ps(inv);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
    for (; i < n; i++) x[i] *= inv;
}

void kern_avx512_swiglu(const float *g, const float *u, float *y, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 e = v_expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
        const __m512 silu = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(silu, _mm512_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* Pairs (x0, x1) rotated by (cos, sin): even lanes fma(x0, c, -(x1 * s)),
 * odd lanes fma(x0, s, x1 * c); 8 pairs per vector, a masked tail. */
void kern_avx512_rope(const float *cs, int n_dims, float *x) {
    for (int i = 0; i < n_dims; i += 16) {
        const int left = n_dims - i;
        const __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, x + i), t = _mm512_maskz_loadu_ps(m, cs + i);
        const __m512 sw = _mm512_permute_ps(v, 0xB1); /* (x1, x0) */
        const __m512 c = _mm512_moveldup_ps(t), s = _mm512_movehdup_ps(t);
        /* -(x1 * s) flips the sign bit (0 - y would turn -0 into +0) */
        const __m512 neg = _mm512_xor_ps(_mm512_mul_ps(sw, s), _mm512_set1_ps(-0.0f));
        const __m512 even = _mm512_fmadd_ps(v, c, neg);
        const __m512 odd = _mm512_fmadd_ps(sw, s, _mm512_mul_ps(v, c));
        _mm512_mask_storeu_ps(x + i, m, _mm512_mask_blend_ps((__mmask16)0xAAAA, even, odd));
    }
}

/* 16 x 16 transpose: r[i] lane j <-> r[j] lane i. */
INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2])));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3])));
    }
    /* r[4i + k], 128-bit lane j: column 4j + k of rows 4i..4i+3 */
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const __m512 a0 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44), a1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE);
        const __m512 b0 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44), b1 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
        t[k] = _mm512_shuffle_f32x4(a0, b0, 0x88);      /* column k */
        t[4 + k] = _mm512_shuffle_f32x4(a0, b0, 0xDD);  /* column 4 + k */
        t[8 + k] = _mm512_shuffle_f32x4(a1, b1, 0x88);  /* column 8 + k */
        t[12 + k] = _mm512_shuffle_f32x4(a1, b1, 0xDD); /* column 12 + k */
    }
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

#define NQMAX 4 /* queries sharing one pass over the cache rows */

/* p_h[s] = lo_dot_f32(W, row_s, q_h) * scale for the n (<= 16) positions
 * from row0 and NQ queries.  Each row is loaded once for all queries.
 * ggml_vec_dot_f32 ends with a serial tail (W % 64 values, each product
 * rounded, then added in turn); a position's tail is a chain of dependent
 * adds, so the 16 positions' tails run side by side, one lane each: the
 * rows' tail values are transposed (16 at a time), multiplied by the
 * query value and added column after column, the same operations in the
 * same order per position. */
INLINE void scores16(const int NQ, int n, int W, const float *row0, size_t stride, const float *q, size_t qs,
                     float scale, float *p, size_t ps) {
    const int np = W & ~63;
    float r[NQMAX][16] __attribute__((aligned(64)));
    #pragma GCC unroll 4
    for (int h = 0; h < NQ; h++) _mm512_store_ps(r[h], _mm512_setzero_ps());
    for (int u = 0; u < n; u++) {
        const float *x = row0 + (size_t)u * stride;
        __m512 a[NQMAX][4];
        #pragma GCC unroll 4
        for (int h = 0; h < NQ; h++) a[h][0] = a[h][1] = a[h][2] = a[h][3] = _mm512_setzero_ps();
        for (int i = 0; i < np; i += 64) {
            #pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m512 xv = _mm512_loadu_ps(x + i + 16 * k);
                #pragma GCC unroll 4
                for (int h = 0; h < NQ; h++) a[h][k] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(q + h * qs + i + 16 * k), a[h][k]);
            }
        }
        #pragma GCC unroll 4
        for (int h = 0; h < NQ; h++)
            r[h][u] = reduce16(_mm512_add_ps(_mm512_add_ps(a[h][0], a[h][2]), _mm512_add_ps(a[h][1], a[h][3])));
    }
    __m512 sum[NQMAX];
    #pragma GCC unroll 4
    for (int h = 0; h < NQ; h++) sum[h] = _mm512_load_ps(r[h]);
    for (int c = np; c < W; c += 16) {
        const int nc = W - c < 16 ? W - c : 16;
        const __mmask16 m = (__mmask16)((1u << nc) - 1);
        __m512 t[16];
        #pragma GCC unroll 16
        for (int u = 0; u < 16; u++) t[u] = u < n ? _mm512_maskz_loadu_ps(m, row0 + (size_t)u * stride + c) : _mm512_setzero_ps();
        transpose16(t); /* t[i]: value c + i of the 16 rows */
        for (int i = 0; i < nc; i++) {
            #pragma GCC unroll 4
            for (int h = 0; h < NQ; h++) sum[h] = _mm512_add_ps(sum[h], _mm512_mul_ps(t[i], _mm512_set1_ps(q[h * qs + c + i])));
        }
    }
    const __mmask16 keep = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    #pragma GCC unroll 4
    for (int h = 0; h < NQ; h++) _mm512_mask_storeu_ps(p + h * ps, keep, _mm512_mul_ps(sum[h], _mm512_set1_ps(scale)));
}

#define VCH 64 /* outputs per pass of the value sum: 4 zmm per query */

/* One (accumulator, lane) slot over the positions that feed it, for the
 * VCH outputs of a pass and NQ queries; m[k] masks vector k. */
INLINE void slot_sum(const int NQ, int slot, int step, int n_kv, const float *kv, size_t stride, const float *p,
                     size_t ps, const __mmask16 m[4], float (*out)[64][VCH], const int full) {
    __m512 acc[NQMAX][VCH / 16];
    #pragma GCC unroll 4
    for (int h = 0; h < NQ; h++)
        #pragma GCC unroll 4
        for (int k = 0; k < VCH / 16; k++) acc[h][k] = _mm512_setzero_ps();
    for (int s = slot; s < n_kv; s += step) {
        const float *row = kv + (size_t)s * stride;
        __m512 x[VCH / 16];
        #pragma GCC unroll 4
        for (int k = 0; k < VCH / 16; k++) x[k] = full ? _mm512_loadu_ps(row + 16 * k) : _mm512_maskz_loadu_ps(m[k], row + 16 * k);
        #pragma GCC unroll 4
        for (int h = 0; h < NQ; h++) {
            const __m512 pv = _mm512_set1_ps(p[h * ps + s]);
            #pragma GCC unroll 4
            for (int k = 0; k < VCH / 16; k++) acc[h][k] = _mm512_fmadd_ps(x[k], pv, acc[h][k]);
        }
    }
    #pragma GCC unroll 4
    for (int h = 0; h < NQ; h++)
        #pragma GCC unroll 4
        for (int k = 0; k < VCH / 16; k++) _mm512_store_ps(out[h][slot] + 16 * k, acc[h][k]);
}

/* o_h[i] for i < L (see the file comment).  part[h][slot][j] holds slot
 * (accumulator a, lane l) = 16a + l of query h for the outputs of a pass. */
INLINE void value_sum(const int NQ, int tiny, int n_kv, int L, const float *kv, size_t stride, const float *p,
                      size_t ps, float *o, size_t os) {
    float part[NQMAX][64][VCH] __attribute__((aligned(64)));
    const int na = tiny ? 1 : 4, step = 16 * na;
    for (int i0 = 0; i0 < L; i0 += VCH) {
        const int nc = L - i0 < VCH ? L - i0 : VCH, nv = (nc + 15) / 16;
        __mmask16 m[4];
        for (int k = 0; k < 4; k++) {
            const int left = nc - 16 * k;
            m[k] = left >= 16 ? (__mmask16)0xFFFF : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
        }
        for (int slot = 0; slot < step; slot++) {
            if (nc == VCH) slot_sum(NQ, slot, step, n_kv, kv + i0, stride, p, ps, m, part, 1);
            else slot_sum(NQ, slot, step, n_kv, kv + i0, stride, p, ps, m, part, 0);
        }
        for (int h = 0; h < NQ; h++)
            for (int k = 0; k < nv; k++) {
                __m512 r[16];
                for (int l = 0; l < 16; l++) {
                    if (tiny) {
                        r[l] = _mm512_load_ps(part[h][l] + 16 * k);
                    } else { /* (acc0 + acc2) + (acc1 + acc3) */
                        const __m512 a0 = _mm512_load_ps(part[h][l] + 16 * k), a1 = _mm512_load_ps(part[h][16 + l] + 16 * k);
                        const __m512 a2 = _mm512_load_ps(part[h][32 + l] + 16 * k), a3 = _mm512_load_ps(part[h][48 + l] + 16 * k);
                        r[l] = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
                    }
                }
                /* lo_reduce16 per output: l + 8 onto l, then l + 4 onto l,
                 * then (0 + 2) + (1 + 3) */
                for (int l = 0; l < 8; l++) r[l] = _mm512_add_ps(r[l + 8], r[l]);
                for (int l = 0; l < 4; l++) r[l] = _mm512_add_ps(r[l + 4], r[l]);
                const __m512 v = _mm512_add_ps(_mm512_add_ps(r[0], r[2]), _mm512_add_ps(r[1], r[3]));
                _mm512_mask_storeu_ps(o + h * os + i0 + 16 * k, m[k], v);
            }
    }
}

/* NQ queries, whole: scores, softmax, value sum. */
INLINE void attention_q(const int NQ, int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                        size_t qs, float scale, float *p, size_t ps, float *o, size_t os) {
    const int n_pad = (n_kv + 15) & ~15;
    for (int s = 0; s < n_kv; s += 16)
        scores16(NQ, n_kv - s < 16 ? n_kv - s : 16, W, kv + (size_t)s * stride, stride, q, qs, scale, p + s, ps);
    for (int h = 0; h < NQ; h++) {
        for (int s = n_kv; s < n_pad; s++) p[h * ps + s] = -INFINITY;
        kern_avx512_softmax(p + h * ps, n_pad);
    }
    value_sum(NQ, tiny, n_kv, L, kv, stride, p, ps, o, os);
}

static void attention_1(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q, size_t qs,
                        float scale, float *p, size_t ps, float *o, size_t os) {
    attention_q(1, tiny, n_kv, W, L, kv, stride, q, qs, scale, p, ps, o, os);
}
static void attention_2(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q, size_t qs,
                        float scale, float *p, size_t ps, float *o, size_t os) {
    attention_q(2, tiny, n_kv, W, L, kv, stride, q, qs, scale, p, ps, o, os);
}
static void attention_4(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q, size_t qs,
                        float scale, float *p, size_t ps, float *o, size_t os) {
    attention_q(4, tiny, n_kv, W, L, kv, stride, q, qs, scale, p, ps, o, os);
}

void kern_avx512_attention_multi(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, int nq,
                                 const float *q, size_t qs, float scale, float *p, size_t ps, float *o, size_t os) {
    int i = 0;
    for (; i + 4 <= nq; i += 4) attention_4(tiny, n_kv, W, L, kv, stride, q + i * qs, qs, scale, p + i * ps, ps, o + i * os, os);
    if (i + 2 <= nq) attention_2(tiny, n_kv, W, L, kv, stride, q + i * qs, qs, scale, p + i * ps, ps, o + i * os, os), i += 2;
    if (i < nq) attention_1(tiny, n_kv, W, L, kv, stride, q + i * qs, qs, scale, p + i * ps, ps, o + i * os, os);
}

void kern_avx512_attention(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                           float scale, float *p, float *o) {
    attention_1(tiny, n_kv, W, L, kv, stride, q, 0, scale, p, 0, o, 0);
}
