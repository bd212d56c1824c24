/* AVX2 versions of llama_order.c's attention and element-wise steps,
 * bitwise equal to that scalar code (see kern_attn_avx512.c for the
 * value-sum layout; here 8 outputs per vector, 64 per pass).
 *
 * ggml_v_expf of the AVX-512 build ends with vscalef (j * 2^n, one
 * rounding); AVX2 has none, so j * 2^n is done as (j * 2^(n/2)) * 2^(n -
 * n/2): j is in [0.7, 1.5] and |n| <= 192, so the first product is a
 * normal number, exact, and only the second rounds, as vscalef does
 * (overflow, subnormal results and zero alike). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_simd.h"


/* 2^k for integer lanes k in [-126, 127], as floats */
INLINE __m256 pow2i(__m256i k) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

/* ggml_v_expf of the AVX-512 build (lo_v_expf), 8 lanes. */
INLINE __m256 v_expf(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b =
        _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    /* vscalef(j, n); lanes outside [-192, 192] (or NaN) are replaced below */
    const __m256 nc = _mm256_min_ps(_mm256_max_ps(n, _mm256_set1_ps(-192.0f)), _mm256_set1_ps(192.0f));
    const __m256i ni = _mm256_cvtps_epi32(nc), n1 = _mm256_srai_epi32(ni, 1);
    __m256 res = _mm256_mul_ps(_mm256_mul_ps(j, pow2i(n1)), pow2i(_mm256_sub_epi32(ni, n1)));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 big = _mm256_cmp_ps(absn, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 alt = _mm256_andnot_ps(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ), _mm256_set1_ps(INFINITY));
    res = _mm256_blendv_ps(res, alt, big);
    /* NaN in, NaN out: every intermediate is the quieted input */
    return _mm256_blendv_ps(res, n, _mm256_cmp_ps(n, n, _CMP_UNORD_Q));
}

/* hsum_float_8: (hi128 + lo128), then (0+2) + (1+3). */
INLINE float hsum8(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

void kern_avx2_softmax(float *x, int n) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(_mm256_loadu_ps(x + i), vm); /* NaN lanes keep vm */
    float m8[8], mx = -INFINITY;
    _mm256_storeu_ps(m8, vm);
    for (int l = 0; l < 8; l++) mx = m8[l] > mx ? m8[l] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    const __m256 vmx = _mm256_set1_ps(mx);
    double sum = 0.0;
    for (i = 0; i + 16 <= n; i += 16) { /* 16-value chunks, as the AVX-512 build */
        const __m256 lo = v_expf(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx));
        const __m256 hi = v_expf(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vmx));
        _mm256_storeu_ps(x + i, lo);
        _mm256_storeu_ps(x + i + 8, hi);
        sum += (double)hsum8(_mm256_add_ps(hi, lo));
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    for (; i < n; i++) x[i] *= inv;
}

void kern_avx2_swiglu(const float *g, const float *u, float *y, int n) {
    const int nv = n & ~15; /* whole 16-value chunks take v_expf, as the AVX-512 build */
    int i = 0;
    for (; i < nv; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
        const __m256 silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* Lane mask of the first `left` of 8 floats (maskload / maskstore). */
INLINE __m256i first_lanes(int left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void kern_avx2_rope(const float *cs, int n_dims, float *x) {
    for (int i = 0; i < n_dims; i += 8) {
        const __m256i m = first_lanes(n_dims - i);
        const __m256 v = _mm256_maskload_ps(x + i, m), t = _mm256_maskload_ps(cs + i, m);
        const __m256 sw = _mm256_permute_ps(v, 0xB1); /* (x1, x0) */
        const __m256 c = _mm256_moveldup_ps(t), s = _mm256_movehdup_ps(t);
        const __m256 neg = _mm256_xor_ps(_mm256_mul_ps(sw, s), _mm256_set1_ps(-0.0f));
        const __m256 even = _mm256_fmadd_ps(v, c, neg);
        const __m256 odd = _mm256_fmadd_ps(sw, s, _mm256_mul_ps(v, c));
        _mm256_maskstore_ps(x + i, m, _mm256_blend_ps(even, odd, 0xAA));
    }
}

#define VCH 64 /* outputs per pass: 8 ymm accumulators */

static void value_sum(int tiny, int n_kv, int L, const float *kv, size_t stride, const float *p, float *o) {
    float part[64][VCH] __attribute__((aligned(32)));
    const int na = tiny ? 1 : 4, step = 16 * na;
    for (int i0 = 0; i0 < L; i0 += VCH) {
        const int nc = L - i0 < VCH ? L - i0 : VCH, nv = (nc + 7) / 8;
        const __m256i last = first_lanes(nc % 8 ? nc % 8 : 8), all = _mm256_set1_epi32(-1);
        for (int slot = 0; slot < step; slot++) {
            __m256 acc[VCH / 8];
            #pragma GCC unroll 8
            for (int k = 0; k < VCH / 8; k++) acc[k] = _mm256_setzero_ps();
            for (int s = slot; s < n_kv; s += step) {
                const __m256 ps = _mm256_set1_ps(p[s]);
                const float *row = kv + (size_t)s * stride + i0;
                if (nc == VCH) {
                    #pragma GCC unroll 8
                    for (int k = 0; k < VCH / 8; k++) acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(row + 8 * k), ps, acc[k]);
                } else {
                    for (int k = 0; k < nv; k++)
                        acc[k] = _mm256_fmadd_ps(_mm256_maskload_ps(row + 8 * k, k == nv - 1 ? last : all), ps, acc[k]);
                }
            }
            #pragma GCC unroll 8
            for (int k = 0; k < VCH / 8; k++) _mm256_store_ps(part[slot] + 8 * k, acc[k]);
        }
        for (int k = 0; k < nv; k++) {
            __m256 r[16];
            for (int l = 0; l < 16; l++) {
                if (tiny) {
                    r[l] = _mm256_load_ps(part[l] + 8 * k);
                } else {
                    const __m256 a0 = _mm256_load_ps(part[l] + 8 * k), a1 = _mm256_load_ps(part[16 + l] + 8 * k);
                    const __m256 a2 = _mm256_load_ps(part[32 + l] + 8 * k), a3 = _mm256_load_ps(part[48 + l] + 8 * k);
                    r[l] = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
                }
            }
            for (int l = 0; l < 8; l++) r[l] = _mm256_add_ps(r[l + 8], r[l]);
            for (int l = 0; l < 4; l++) r[l] = _mm256_add_ps(r[l + 4], r[l]);
            const __m256 v = _mm256_add_ps(_mm256_add_ps(r[0], r[2]), _mm256_add_ps(r[1], r[3]));
            _mm256_maskstore_ps(o + i0 + 8 * k, k == nv - 1 ? last : all, v);
        }
    }
}

/* p[s] = lo_dot_f32(W, row_s, q) * scale for n (<= 8) positions from
 * row0, their serial tails side by side (see kern_attn_avx512.c). */
static void scores8(int n, int W, const float *row0, size_t stride, const float *q, float scale, float *p) {
    const int np = W & ~63;
    float r[8] __attribute__((aligned(32))) = {0};
    for (int u = 0; u < n; u++) {
        const float *x = row0 + (size_t)u * stride;
        __m256 s[8];
        for (int k = 0; k < 8; k++) s[k] = _mm256_setzero_ps();
        for (int i = 0; i < np; i += 64)
            for (int k = 0; k < 8; k++) /* accumulator k/2, its lanes 0-7 / 8-15 */
                s[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * k), _mm256_loadu_ps(q + i + 8 * k), s[k]);
        /* (0 + 2) + (1 + 3) per 16-lane half, then _mm512_reduce_add_ps */
        const __m256 lo = _mm256_add_ps(_mm256_add_ps(s[0], s[4]), _mm256_add_ps(s[2], s[6]));
        const __m256 hi = _mm256_add_ps(_mm256_add_ps(s[1], s[5]), _mm256_add_ps(s[3], s[7]));
        r[u] = hsum8(_mm256_add_ps(hi, lo));
    }
    const __m256i m = first_lanes(n);
    __m256 sum = _mm256_load_ps(r);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
    for (int i = np; i < W; i++) {
        const __m256 x = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), row0 + i, idx, _mm256_castsi256_ps(m), 4);
        sum = _mm256_add_ps(sum, _mm256_mul_ps(x, _mm256_set1_ps(q[i])));
    }
    _mm256_maskstore_ps(p, m, _mm256_mul_ps(sum, _mm256_set1_ps(scale)));
}

void kern_avx2_attention(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                         float scale, float *p, float *o) {
    const int n_pad = (n_kv + 15) & ~15;
    if ((size_t)n_kv * stride < (size_t)1 << 31) /* gather offsets are int32 */
        for (int s = 0; s < n_kv; s += 8)
            scores8(n_kv - s < 8 ? n_kv - s : 8, W, kv + (size_t)s * stride, stride, q, scale, p + s);
    else
        for (int s = 0; s < n_kv; s++) p[s] = kern_avx2_dot_f32_llama(W, kv + (size_t)s * stride, q) * scale;
    for (int s = n_kv; s < n_pad; s++) p[s] = -INFINITY;
    kern_avx2_softmax(p, n_pad);
    value_sum(tiny, n_kv, L, kv, stride, p, o);
}
