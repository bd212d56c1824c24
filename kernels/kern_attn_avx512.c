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

#define INLINE static inline __attribute__((always_inline))

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

#define VCH 128 /* outputs per pass of the value sum: 8 zmm accumulators */

/* o[i] for i < L (see the file comment).  part[slot][j] holds slot
 * (accumulator a, lane l) = 16a + l for the VCH outputs of a pass. */
static void value_sum(int tiny, int n_kv, int L, const float *kv, size_t stride, const float *p, float *o) {
    float part[64][VCH] __attribute__((aligned(64)));
    const int na = tiny ? 1 : 4, step = 16 * na;
    for (int i0 = 0; i0 < L; i0 += VCH) {
        const int nc = L - i0 < VCH ? L - i0 : VCH, nv = (nc + 15) / 16;
        const __mmask16 last = nc % 16 ? (__mmask16)((1u << (nc % 16)) - 1) : (__mmask16)0xFFFF;
        for (int slot = 0; slot < step; slot++) {
            __m512 acc[VCH / 16];
            #pragma GCC unroll 8
            for (int k = 0; k < VCH / 16; k++) acc[k] = _mm512_setzero_ps();
            for (int s = slot; s < n_kv; s += step) {
                const __m512 ps = _mm512_set1_ps(p[s]);
                const float *row = kv + (size_t)s * stride + i0;
                if (nc == VCH) {
                    #pragma GCC unroll 8
                    for (int k = 0; k < VCH / 16; k++) acc[k] = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16 * k), ps, acc[k]);
                } else {
                    for (int k = 0; k < nv; k++)
                        acc[k] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k == nv - 1 ? last : (__mmask16)0xFFFF, row + 16 * k),
                                                 ps, acc[k]);
                }
            }
            #pragma GCC unroll 8
            for (int k = 0; k < VCH / 16; k++) _mm512_store_ps(part[slot] + 16 * k, acc[k]);
        }
        for (int k = 0; k < nv; k++) {
            __m512 r[16];
            for (int l = 0; l < 16; l++) {
                if (tiny) {
                    r[l] = _mm512_load_ps(part[l] + 16 * k);
                } else { /* (acc0 + acc2) + (acc1 + acc3) */
                    const __m512 a0 = _mm512_load_ps(part[l] + 16 * k), a1 = _mm512_load_ps(part[16 + l] + 16 * k);
                    const __m512 a2 = _mm512_load_ps(part[32 + l] + 16 * k), a3 = _mm512_load_ps(part[48 + l] + 16 * k);
                    r[l] = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3));
                }
            }
            /* lo_reduce16 per output: l + 8 onto l, then l + 4 onto l,
             * then (0 + 2) + (1 + 3) */
            for (int l = 0; l < 8; l++) r[l] = _mm512_add_ps(r[l + 8], r[l]);
            for (int l = 0; l < 4; l++) r[l] = _mm512_add_ps(r[l + 4], r[l]);
            const __m512 v = _mm512_add_ps(_mm512_add_ps(r[0], r[2]), _mm512_add_ps(r[1], r[3]));
            _mm512_mask_storeu_ps(o + i0 + 16 * k, k == nv - 1 ? last : (__mmask16)0xFFFF, v);
        }
    }
}

/* p[s] = lo_dot_f32(W, row_s, q) * scale for the n (<= 16) positions
 * from row0.  ggml_vec_dot_f32 ends with a serial tail (W % 64 values,
 * each product rounded, then added in turn); a position's tail is a chain
 * of dependent adds, so 16 positions' tails are run side by side, one
 * lane each: the same operations in the same order per position. */
static void scores16(int n, int W, const float *row0, size_t stride, const float *q, float scale, float *p) {
    const int np = W & ~63;
    float r[16] __attribute__((aligned(64)));
    for (int u = 0; u < n; u++) {
        const float *x = row0 + (size_t)u * stride;
        __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int i = 0; i < np; i += 64) {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(q + i), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(q + i + 16), s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(q + i + 32), s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(q + i + 48), s3);
        }
        r[u] = reduce16(_mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
    }
    const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    __m512 sum = _mm512_maskz_load_ps(m, r);
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)stride));
    for (int i = np; i < W; i++) {
        const __m512 x = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, row0 + i, 4);
        sum = _mm512_add_ps(sum, _mm512_mul_ps(x, _mm512_set1_ps(q[i])));
    }
    _mm512_mask_storeu_ps(p, m, _mm512_mul_ps(sum, _mm512_set1_ps(scale)));
}

void kern_avx512_attention(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                           float scale, float *p, float *o) {
    const int n_pad = (n_kv + 15) & ~15;
    if ((size_t)n_kv * stride < (size_t)1 << 31) /* gather offsets are int32 */
        for (int s = 0; s < n_kv; s += 16)
            scores16(n_kv - s < 16 ? n_kv - s : 16, W, kv + (size_t)s * stride, stride, q, scale, p + s);
    else
        for (int s = 0; s < n_kv; s++) p[s] = kern_avx512_dot_f32_llama(W, kv + (size_t)s * stride, q) * scale;
    for (int s = n_kv; s < n_pad; s++) p[s] = -INFINITY;
    kern_avx512_softmax(p, n_pad);
    value_sum(tiny, n_kv, L, kv, stride, p, o);
}
