/* AVX-512 kernels in llama.cpp's float order: bitwise the results of
 * lo_matmul (llama_order.c), which spells that order out in scalar C.
 *
 * Every order there is "exact integers, then a fixed float sequence":
 *   VEC  8-lane types (Q4_0/Q5_0/Q8_0, Q2_K..Q6_K not repacked): lane l
 *        of a row collects the integer products of values 4l..4l+3 of each
 *        32-value group; per block acc[l] = fma(d, lane, acc[l]); the lanes
 *        are summed at the end (hsum8).  A 256-bit vpdpbusd over one group
 *        produces exactly those lanes, so acc is one ymm.
 *   GEMV repacked Q4_K: exact isum and msum per super-block, two scalar
 *        accumulators, subtracted at the end: kern_avx512.c's Q4_K kernels
 *        accumulate exactly so and serve it.
 *   GEMM repacked Q4_K: the same per pair of 32-value sub-blocks (also
 *        served by kern_avx512.c's 16-row kernel).
 *   GEMV / GEMM repacked Q2_K: as Q4_K's, per super-block / per 128-value
 *        half, computed here (K_Q2 tiles, the float pair in an xmm).
 *   repacked Q4_0: exact isum per block, one accumulator (kern_avx512.c's
 *        16-row kernel already computes exactly that).
 *   F32/F16/BF16: ggml_vec_dot_* (4 x 16 lanes, or 2 x 16 dpbf16, over
 *        64-value steps) or tinyBLAS (one 16-lane accumulator).
 * Each (row, token) result depends only on that row and token. */
#include <immintrin.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_simd.h"


/* ---- small helpers ---- */

INLINE float half2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* hsum_float_8 / lo_hsum8: (hi128 + lo128), then (0+2) + (1+3). */
INLINE float hsum8(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

/* lo_reduce16 = _mm512_reduce_add_ps: 256-bit halves, then hsum8. */
INLINE float reduce16(__m512 v) {
    return hsum8(_mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_castps512_ps256(v)));
}

/* ------------------------------------------------------------------ */
/* Activations                                                         */

/* K-quants: a Q8_K block with its 16- and 32-value sums. */
typedef struct alk {
    int8_t q[256];   /* quants, natural order */
    int16_t s16[16]; /* sums of each 16 values (the bsums) */
    int16_t s32[8];  /* sums of each 32 values */
    float d;         /* block scale */
    uint8_t pad[12]; /* 5 cache lines */
} alk;
_Static_assert(sizeof(alk) == 320, "alk size");

static size_t alk_bytes(int cols) { return (size_t)(cols / 256) * sizeof(alk); }

static void alk_prep(const void *xq, int cols, void *dst) {
    for (int b = 0; b < cols / 256; b++) {
        const block_q8_K *x = (const block_q8_K *)xq + b;
        alk *o = (alk *)dst + b;
        memcpy(o->q, x->qs, 256);
        memcpy(o->s16, x->bsums, sizeof o->s16);
        for (int s = 0; s < 8; s++) o->s32[s] = (int16_t)(x->bsums[2 * s] + x->bsums[2 * s + 1]);
        o->d = x->d;
        memset(o->pad, 0, sizeof o->pad);
    }
}

/* 32-value blocks: quants, the offset term of each lane for the weight
 * type (weights are stored biased: Q4_0 by 8, Q5_0 by 16, Q8_0 by 128),
 * and the scale as a float. */
typedef struct al0 {
    int8_t q[32];
    int32_t off[8]; /* -bias * (sum of the lane's 4 activations) */
    float d;
    uint8_t pad[28]; /* 96 bytes */
} al0;
_Static_assert(sizeof(al0) == 96, "al0 size");

static size_t al0_bytes(int cols) { return (size_t)(cols / 32) * sizeof(al0); }

INLINE void al0_prep(const void *xq, int cols, void *dst, int bias) {
    const block_q8_0 *x = xq;
    al0 *o = dst;
    const __m256i ones = _mm256_set1_epi8(1);
    for (int b = 0; b < cols / 32; b++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        _mm256_storeu_si256((__m256i *)o[b].q, q);
        __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
        _mm256_storeu_si256((__m256i *)o[b].off, _mm256_mullo_epi32(s, _mm256_set1_epi32(-bias)));
        o[b].d = half2f((const uint8_t *)&x[b].d);
        memset(o[b].pad, 0, sizeof o[b].pad);
    }
}
static void al0_prep4(const void *xq, int cols, void *dst) { al0_prep(xq, cols, dst, 8); }
static void al0_prep5(const void *xq, int cols, void *dst) { al0_prep(xq, cols, dst, 16); }
static void al0_prep8(const void *xq, int cols, void *dst) { al0_prep(xq, cols, dst, 128); }

/* ------------------------------------------------------------------ */
/* 32-value block types, VEC order                                     */

enum { T_Q4_0, T_Q5_0, T_Q8_0 };

/* One block of one row: 32 biased unsigned quants, and d as a vector. */
INLINE __m256i w0_unpack(int t, const uint8_t *x) {
    if (t == T_Q8_0) return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x + 2)), _mm256_set1_epi8((char)0x80));
    const __m128i m = _mm_set1_epi8(0x0F);
    const __m128i q = _mm_loadu_si128((const __m128i *)(x + (t == T_Q4_0 ? 2 : 6)));
    __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(q, m)),
                                        _mm_and_si128(_mm_srli_epi16(q, 4), m), 1);
    if (t == T_Q5_0) { /* bit j of qh -> 16 on value j */
        uint32_t qh;
        memcpy(&qh, x + 2, 4);
        const __m256i shuf = _mm256_setr_epi64x(0, 0x0101010101010101ll, 0x0202020202020202ll, 0x0303030303030303ll);
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
        __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
        b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
        w = _mm256_or_si256(w, _mm256_and_si256(b, _mm256_set1_epi8(0x10)));
    }
    return w;
}

/* R rows x T tokens over all blocks. */
INLINE void vec0_tile(const kern_job *j, int t, int r, int tk, const int R, const int T, int wblk) {
    const int nb = j->cols / 32;
    __m256 acc[2][4];
    const uint8_t *row[2];
    const al0 *act[4];
    for (int i = 0; i < R; i++) {
        row[i] = j->W + (size_t)(r + i) * j->wstride;
        for (int u = 0; u < T; u++) acc[i][u] = _mm256_setzero_ps();
    }
    for (int u = 0; u < T; u++) act[u] = (const al0 *)(const void *)(j->A + (size_t)(tk + u) * j->astride);
    pf_stream pf = pf_start(j, row[0], (size_t)R * j->wstride, nb);
    for (int b = 0; b < nb; b++) {
        pf_step(&pf);
        #pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            const uint8_t *x = row[i] + (size_t)b * wblk;
            const __m256i w = w0_unpack(t, x);
            const __m256 dw = _mm256_set1_ps(half2f(x));
            #pragma GCC unroll 4
            for (int u = 0; u < T; u++) {
                const al0 *a = act[u] + b;
                __m256i p = _mm256_dpbusd_epi32(_mm256_loadu_si256((const __m256i *)a->off), w,
                                                _mm256_loadu_si256((const __m256i *)a->q));
                /* d = d_w * d_a, then acc = fma(d, lane, acc) */
                acc[i][u] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(p), acc[i][u]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(tk + u) * j->ystride + r + i] = hsum8(acc[i][u]);
}

/* Rows [r0, r1) of a job in 2-row x up-to-4-token tiles. */
#define TILE_DRIVER(NAME, TILE, ...)                                                       \
    static void NAME(const kern_job *j, int r0, int r1) {                                  \
        for (int tk = 0; tk < j->ntok; tk += 4) {                                          \
            const int nt = j->ntok - tk < 4 ? j->ntok - tk : 4;                           \
            int r = r0;                                                                    \
            for (; r + 2 <= r1; r += 2) {                                                  \
                if (nt == 4) TILE(j, __VA_ARGS__, r, tk, 2, 4);                            \
                else if (nt == 3) TILE(j, __VA_ARGS__, r, tk, 2, 3);                       \
                else if (nt == 2) TILE(j, __VA_ARGS__, r, tk, 2, 2);                       \
                else TILE(j, __VA_ARGS__, r, tk, 2, 1);                                    \
            }                                                                              \
            for (; r < r1; r++) {                                                          \
                if (nt == 4) TILE(j, __VA_ARGS__, r, tk, 1, 4);                            \
                else if (nt == 3) TILE(j, __VA_ARGS__, r, tk, 1, 3);                       \
                else if (nt == 2) TILE(j, __VA_ARGS__, r, tk, 1, 2);                       \
                else TILE(j, __VA_ARGS__, r, tk, 1, 1);                                    \
            }                                                                              \
        }                                                                                  \
    }

#define VEC0(j, t, wblk, r, tk, R, T) vec0_tile(j, t, r, tk, R, T, wblk)
TILE_DRIVER(mm_vec_q4_0, VEC0, T_Q4_0, 18)
TILE_DRIVER(mm_vec_q5_0, VEC0, T_Q5_0, 22)
TILE_DRIVER(mm_vec_q8_0, VEC0, T_Q8_0, 34)

/* ------------------------------------------------------------------ */
/* K-quants                                                            */

enum { O_VEC, O_GEMV, O_GEMM };

/* One Q3_K..Q6_K super-block of one row, unpacked once per tile. */
typedef struct kb {
    __m256i W[8];    /* u8 quants of 32-value group g, natural order (Q3_K: q + 4, 0..7) */
    __m256i S[8];    /* Q6_K/Q3_K/Q2_K: (scale, 0) int16 pair of each lane's 16 values */
    __m256i sc16;    /* Q6_K: the 16 scales; Q2_K: the 16 mins, int16 */
    int32_t sc[8];   /* Q4_K/Q5_K: (scale, 0) pair of group g */
    __m128i mn;      /* Q4_K/Q5_K: the 8 mins, int16 */
    float d, dmin;
} kb;


INLINE void unpack_q45(const uint8_t *x, kb *k, int q5) {
    uint32_t u0, u1, u2;
    memcpy(&u0, x + 4, 4);
    memcpy(&u1, x + 8, 4);
    memcpy(&u2, x + 12, 4);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    /* vector built in registers (a store + wider reload stalls) */
    __m128i b = _mm_cvtsi32_si128((int)(u0 & k1));
    b = _mm_insert_epi32(b, (int)((u2 & k2) | (((u0 >> 6) & k3) << 4)), 1);
    b = _mm_insert_epi32(b, (int)(u1 & k1), 2);
    b = _mm_insert_epi32(b, (int)(((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4)), 3);
    _mm256_storeu_si256((__m256i *)k->sc, _mm256_cvtepu8_epi32(b));
    k->mn = _mm_cvtepu8_epi16(_mm_srli_si128(b, 8));
    k->d = half2f(x);
    k->dmin = half2f(x + 2);
    const uint8_t *qs = x + (q5 ? 48 : 16);
    const __m256i m = _mm256_set1_epi8(0x0F);
    #pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
        k->W[2 * g] = _mm256_and_si256(q, m);
        k->W[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
    }
    if (q5) { /* bit g of qh[l] is the 5th bit of value 32g + l */
        const __m256i h = _mm256_loadu_si256((const __m256i *)(x + 16)), m10 = _mm256_set1_epi8(0x10);
        #pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m256i v = g <= 4 ? _mm256_slli_epi16(h, 4 - g) : _mm256_srli_epi16(h, g - 4);
            k->W[g] = _mm256_or_si256(k->W[g], _mm256_and_si256(v, m10));
        }
    }
}

static const int32_t k_pair_idx[4][8] = {
    {0, 0, 0, 0, 1, 1, 1, 1}, {2, 2, 2, 2, 3, 3, 3, 3}, {4, 4, 4, 4, 5, 5, 5, 5}, {6, 6, 6, 6, 7, 7, 7, 7}};

/* S[g] of the types with 16-value scales, from the 16 signed 8-bit
 * scales: lanes 0-3 of group g (values 0-15) get scale 2g, lanes 4-7
 * scale 2g + 1, each as the int16 pair (scale, 0) for vpdpwssd. */
INLINE void pair_scales(__m128i s8, __m256i S[8]) {
    const __m256i m16 = _mm256_set1_epi32(0xFFFF);
    const __m256i lo = _mm256_and_si256(_mm256_cvtepi8_epi32(s8), m16);
    const __m256i hi = _mm256_and_si256(_mm256_cvtepi8_epi32(_mm_srli_si128(s8, 8)), m16);
    #pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m256i idx = _mm256_loadu_si256((const __m256i *)k_pair_idx[g]);
        S[g] = _mm256_permutevar8x32_epi32(lo, idx);
        S[4 + g] = _mm256_permutevar8x32_epi32(hi, idx);
    }
}

INLINE void unpack_q6(const uint8_t *x, kb *k) {
    const __m256i m = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
    #pragma GCC unroll 2
    for (int n = 0; n < 2; n++) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(x + 64 * n));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(x + 64 * n + 32));
        const __m256i h = _mm256_loadu_si256((const __m256i *)(x + 128 + 32 * n));
        k->W[4 * n] = _mm256_or_si256(_mm256_and_si256(l0, m), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
        k->W[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(l1, m), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
        k->W[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m), _mm256_and_si256(h, m30));
        k->W[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m),
                                          _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
    }
    const __m128i s8 = _mm_loadu_si128((const __m128i *)(x + 192));
    pair_scales(s8, k->S);
    k->sc16 = _mm256_cvtepi8_epi16(s8);
    k->d = half2f(x + 208);
}

/* Q3_K: hmask[32] (bit g of byte l: high bit of value 32g + l), qs[64]
 * (byte l of half c: low 2 bits of values 128c + 32s + l at bits 2s),
 * scales[12] (16 6-bit values, minus 32), d.  W holds q + 4 = low bits |
 * high bit << 2 (0..7), the -4 comes back per lane in kblock. */
INLINE void unpack_q3(const uint8_t *x, kb *k) {
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)x);
    #pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 32 + 32 * c));
        #pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            const int g = 4 * c + s;
            /* bit g of each byte to bit 2 (16-bit shifts: bit 2 still comes from its own byte) */
            const __m256i h = g < 2 ? _mm256_slli_epi16(hm, 2 - g) : g == 2 ? hm : _mm256_srli_epi16(hm, g - 2);
            const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
            k->W[g] = _mm256_or_si256(lo, _mm256_and_si256(h, m4));
        }
    }
    /* scale j: low 4 bits from the nibbles of bytes 96-103, high 2 bits
     * from bytes 104-107 */
    uint32_t a0, a1, t;
    memcpy(&a0, x + 96, 4);
    memcpy(&a1, x + 100, 4);
    memcpy(&t, x + 104, 4);
    const uint32_t k2 = 0x0f0f0f0f, k3 = 0x03030303;
    __m128i sc = _mm_cvtsi32_si128((int)((a0 & k2) | ((t & k3) << 4)));
    sc = _mm_insert_epi32(sc, (int)((a1 & k2) | (((t >> 2) & k3) << 4)), 1);
    sc = _mm_insert_epi32(sc, (int)(((a0 >> 4) & k2) | (((t >> 4) & k3) << 4)), 2);
    sc = _mm_insert_epi32(sc, (int)(((a1 >> 4) & k2) | (((t >> 6) & k3) << 4)), 3);
    sc = _mm_sub_epi8(sc, _mm_set1_epi8(32));
    pair_scales(sc, k->S);
    k->d = half2f(x + 108);
}

/* Q2_K: scales[16] (4-bit scale | 4-bit min << 4 per 16 values), qs[64]
 * (byte l of half c: values 128c + 32s + l at bits 2s), d, dmin.  W holds
 * the 2-bit values, S the (scale, 0) pairs, sc16 the 16 mins. */
INLINE void unpack_q2(const uint8_t *x, kb *k) {
    const __m256i m3 = _mm256_set1_epi8(3);
    #pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 16 + 32 * c));
        #pragma GCC unroll 4
        for (int s = 0; s < 4; s++) k->W[4 * c + s] = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
    }
    const __m128i b = _mm_loadu_si128((const __m128i *)x), m0f = _mm_set1_epi8(0x0F);
    pair_scales(_mm_and_si128(b, m0f), k->S);
    k->sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), m0f));
    k->d = half2f(x + 80);
    k->dmin = half2f(x + 82);
}

/* The totals of four vectors of 8 int32 lanes, one per lane (exact). */
INLINE __m128i hsum4x8(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
}

/* The 8 lanes of a Q4_K/Q5_K super-block (scaled, exact): lane l =
 * sum over groups g of sc[g] * (products of values 32g+4l..+3).  A lane of
 * one group is 4 products, |p| <= 4 * 31 * 127 < 2^15, so vpdpwssd with
 * the pair (scale, 0) adds p * scale. */
INLINE __m256i lanes45(const kb *k, const alk *a) {
    __m256i I0 = _mm256_setzero_si256(), I1 = I0;
    #pragma GCC unroll 8
    for (int g = 0; g < 8; g += 2) {
        __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g)));
        __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g + 1],
                                         _mm256_loadu_si256((const __m256i *)(a->q + 32 * g + 32)));
        I0 = _mm256_dpwssd_epi32(I0, p0, _mm256_set1_epi32(k->sc[g]));
        I1 = _mm256_dpwssd_epi32(I1, p1, _mm256_set1_epi32(k->sc[g + 1]));
    }
    return _mm256_add_epi32(I0, I1);
}

/* Per-token float state of a K-quant tile. */
typedef struct kacc {
    __m256 v;  /* VEC: the 8 lanes */
    __m128 m;  /* Q4_K: the 4 min lanes; Q5_K: lane 0 = summs;
                  Q2_K GEMV/GEMM: lane 0 = acc, lane 1 = acc_m */
} kacc;

enum { K_Q2, K_Q3, K_Q4, K_Q5, K_Q6 };

INLINE void kblock(int kind, int order, const kb *k, const alk *a, kacc *s) {
    if (kind == K_Q2) {
        /* lanes with 16-value scales per 128-value half: a lane of one
         * group is 4 products, |p| <= 4 * 3 * 128 < 2^15, so vpdpwssd with
         * (scale, 0) adds p * scale; the mins times the bsums by vpmaddwd:
         * lane l pairs bsums 2l and 2l + 1 (lanes 0-3: half 0) */
        __m256i I0 = _mm256_setzero_si256(), I1 = I0;
        #pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            const __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g],
                                                   _mm256_loadu_si256((const __m256i *)(a->q + 32 * g)));
            const __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g + 4],
                                                   _mm256_loadu_si256((const __m256i *)(a->q + 32 * g + 128)));
            I0 = _mm256_dpwssd_epi32(I0, p0, k->S[g]);
            I1 = _mm256_dpwssd_epi32(I1, p1, k->S[g + 4]);
        }
        const __m256i M = _mm256_madd_epi16(k->sc16, _mm256_loadu_si256((const __m256i *)a->s16));
        if (order == O_VEC) { /* vec_dot: fma(-dmin, mprod) then fma(d, lane), 8 lanes */
            const float d = a->d * k->d, dmin = -a->d * k->dmin;
            s->v = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(M), s->v);
            s->v = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_add_epi32(I0, I1)), s->v);
            return;
        }
        const __m128 dd = _mm_setr_ps(k->d * a->d, k->dmin * a->d, k->d * a->d, k->dmin * a->d);
        const __m256i z = _mm256_setzero_si256();
        if (order == O_GEMV) { /* (isum, msum) of the super-block in one step */
            const __m128i t = hsum4x8(_mm256_add_epi32(I0, I1), M, z, z);
            s->m = _mm_fmadd_ps(_mm_cvtepi32_ps(t), dd, s->m);
            return;
        }
        /* GEMM: (isum, msum) of half 0, then of half 1 */
        const __m128 t = _mm_cvtepi32_ps(hsum4x8(I0, _mm256_blend_epi32(M, z, 0xF0), I1, _mm256_blend_epi32(z, M, 0xF0)));
        s->m = _mm_fmadd_ps(t, dd, s->m);
        s->m = _mm_fmadd_ps(_mm_movehl_ps(t, t), dd, s->m);
        return;
    }
    if (kind == K_Q3) {
        /* a lane of one group: sum of (q + 4) * a minus 4 * (sum of the
         * lane's 4 activations), |p| <= 4 * 4 * 128 < 2^15, so vpdpwssd
         * with (scale, 0) adds p * scale; lanes 0-3 take scale 2g, 4-7
         * 2g + 1 (llama.cpp's madd of the 16-bit products with the scales) */
        const __m256i four = _mm256_set1_epi8(4);
        __m256i I = _mm256_setzero_si256(), J = I;
        #pragma GCC unroll 8
        for (int g = 0; g < 8; g += 2) {
            const __m256i q0 = _mm256_loadu_si256((const __m256i *)(a->q + 32 * g));
            const __m256i q1 = _mm256_loadu_si256((const __m256i *)(a->q + 32 * g + 32));
            const __m256i p0 = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g], q0),
                                                _mm256_dpbusd_epi32(_mm256_setzero_si256(), four, q0));
            const __m256i p1 = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g + 1], q1),
                                                _mm256_dpbusd_epi32(_mm256_setzero_si256(), four, q1));
            I = _mm256_dpwssd_epi32(I, p0, k->S[g]);
            J = _mm256_dpwssd_epi32(J, p1, k->S[g + 1]);
        }
        I = _mm256_add_epi32(I, J);
        const float d = a->d * k->d;
        s->v = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(I), s->v);
        return;
    }
    if (kind == K_Q6) {
        /* lanes over the unsigned 6-bit values (|p| <= 4 * 63 * 127 < 2^15),
         * then lane l -= 32 * (sc[2l] * bsum[2l] + sc[2l+1] * bsum[2l+1]) */
        /* two chains of vpdpwssd (exact integers: the split changes nothing) */
        __m256i I = _mm256_setzero_si256(), J = I;
        #pragma GCC unroll 8
        for (int g = 0; g < 8; g += 2) {
            __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g)));
            __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[g + 1],
                                             _mm256_loadu_si256((const __m256i *)(a->q + 32 * g + 32)));
            I = _mm256_dpwssd_epi32(I, p, k->S[g]);
            J = _mm256_dpwssd_epi32(J, p1, k->S[g + 1]);
        }
        I = _mm256_add_epi32(I, J);
        const __m256i off = _mm256_madd_epi16(k->sc16, _mm256_loadu_si256((const __m256i *)a->s16));
        I = _mm256_sub_epi32(I, _mm256_slli_epi32(off, 5));
        const float d = a->d * k->d;
        s->v = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(I), s->v);
        return;
    }
    const __m128i mprod = _mm_madd_epi16(k->mn, _mm_loadu_si128((const __m128i *)a->s32)); /* pairs (2i, 2i+1) */
    if (order == O_VEC) {
        const float d = a->d * k->d, dmin = -a->d * k->dmin;
        s->v = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes45(k, a)), s->v);
        if (kind == K_Q4) {
            s->m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mprod), s->m);
        } else { /* summs = fma(dmin, (float)(m0 + m1 + m2 + m3), summs) */
            __m128i t = _mm_add_epi32(mprod, _mm_srli_si128(mprod, 4));      /* m0+m1, .., m2+m3 */
            t = _mm_add_epi32(t, _mm_srli_si128(t, 8));                      /* (m0+m1)+(m2+m3) */
            s->m = _mm_fmadd_ss(_mm_set_ss(dmin), _mm_cvtepi32_ps(t), s->m);
        }
    }
}

INLINE float kfinal(int kind, int order, const kacc *s) {
    if (kind == K_Q6 || kind == K_Q3 || (kind == K_Q2 && order == O_VEC)) return hsum8(s->v);
    if (order == O_VEC) {
        const float h = hsum8(s->v);
        if (kind == K_Q5) return h + _mm_cvtss_f32(s->m);
        __m128 m = _mm_add_ps(s->m, _mm_movehl_ps(s->m, s->m)); /* m0+m2, m1+m3 */
        return h + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
    }
    return _mm_cvtss_f32(_mm_sub_ss(s->m, _mm_movehdup_ps(s->m))); /* Q2_K GEMV/GEMM: acc - acc_m */
}

INLINE void k_tile(const kern_job *j, int kind, int order, int wblk, int r, int tk, const int R, const int T) {
    const int nb = j->cols / 256;
    kacc s[2][8];
    const uint8_t *row[2];
    const alk *act[8];
    for (int i = 0; i < R; i++) {
        row[i] = j->W + (size_t)(r + i) * j->wstride;
        for (int u = 0; u < T; u++) {
            s[i][u].v = _mm256_setzero_ps();
            s[i][u].m = _mm_setzero_ps();
        }
    }
    for (int u = 0; u < T; u++) act[u] = (const alk *)(const void *)(j->A + (size_t)(tk + u) * j->astride);
    pf_stream pf = pf_start(j, row[0], (size_t)R * j->wstride, nb);
    for (int b = 0; b < nb; b++) {
        pf_step(&pf);
        #pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            kb k;
            const uint8_t *x = row[i] + (size_t)b * wblk;
            if (kind == K_Q6) unpack_q6(x, &k);
            else if (kind == K_Q3) unpack_q3(x, &k);
            else if (kind == K_Q2) unpack_q2(x, &k);
            else unpack_q45(x, &k, kind == K_Q5);
            #pragma GCC unroll 8
            for (int u = 0; u < T; u++) kblock(kind, order, &k, act[u] + b, &s[i][u]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(tk + u) * j->ystride + r + i] = kfinal(kind, order, &s[i][u]);
}

/* K-quant rows: each pair of rows against every token, in tiles of up
 * to 8 tokens, so a row's blocks are unpacked once per 8 tokens and come
 * from L1 for the next tile (prefill experts see ~10-30 tokens). */
#define KT_ROWS(j, kind, order, wblk, r, R)                                            \
    do {                                                                               \
        int tk = 0;                                                                    \
        for (; tk + 8 <= (j)->ntok; tk += 8) k_tile(j, kind, order, wblk, r, tk, R, 8); \
        switch ((j)->ntok - tk) {                                                      \
        case 7: k_tile(j, kind, order, wblk, r, tk, R, 7); break;                      \
        case 6: k_tile(j, kind, order, wblk, r, tk, R, 6); break;                      \
        case 5: k_tile(j, kind, order, wblk, r, tk, R, 5); break;                      \
        case 4: k_tile(j, kind, order, wblk, r, tk, R, 4); break;                      \
        case 3: k_tile(j, kind, order, wblk, r, tk, R, 3); break;                      \
        case 2: k_tile(j, kind, order, wblk, r, tk, R, 2); break;                      \
        case 1: k_tile(j, kind, order, wblk, r, tk, R, 1); break;                      \
        default: break;                                                                \
        }                                                                              \
    } while (0)
#define K_DRIVER(NAME, kind, order, wblk)                                    \
    static void NAME(const kern_job *j, int r0, int r1) {                    \
        int r = r0;                                                          \
        for (; r + 2 <= r1; r += 2) KT_ROWS(j, kind, order, wblk, r, 2);     \
        if (r < r1) KT_ROWS(j, kind, order, wblk, r, 1);                     \
    }
K_DRIVER(mm_vec_q2_K, K_Q2, O_VEC, 84)
K_DRIVER(mm_gemv_q2_K, K_Q2, O_GEMV, 84)
K_DRIVER(mm_gemm_q2_K, K_Q2, O_GEMM, 84)
K_DRIVER(mm_vec_q3_K, K_Q3, O_VEC, 110)
K_DRIVER(mm_vec_q4_K, K_Q4, O_VEC, 144)
K_DRIVER(mm_vec_q5_K, K_Q5, O_VEC, 176)
K_DRIVER(mm_vec_q6_K, K_Q6, O_VEC, 210)

/* ------------------------------------------------------------------ */
/* Float types                                                         */

enum { F_F32, F_F16, F_BF16 };

INLINE __m512 f_load(int ft, const uint8_t *p) {
    if (ft == F_F32) return _mm512_loadu_ps(p);
    if (ft == F_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_loadu_si512(p)); /* 32 bf16 */
}

INLINE float f_scalar(int ft, const uint8_t *p, int i) {
    if (ft == F_F32) {
        float v;
        memcpy(&v, p + 4 * (size_t)i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * (size_t)i, 2);
    if (ft == F_F16) return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ggml_vec_dot_f32 / _f16: 4 x 16 lanes over 64-value steps; the lanes
 * (0+2)+(1+3), reduced; the tail: F32 in float (multiply, then add),
 * F16 in double.  BF16: 2 x 16 dpbf16 lanes over 64-value steps, each
 * reduced and added in double, tail in double. */
INLINE float fvec_dot(int ft, int n, const uint8_t *x, const uint8_t *y) {
    const int es = ft == F_F32 ? 4 : 2;
    const int np = n & ~63;
    if (ft == F_BF16) {
        __m512 c0 = _mm512_setzero_ps(), c1 = c0;
        for (int i = 0; i < np; i += 64) {
            c0 = _mm512_dpbf16_ps(c0, (__m512bh)f_load(ft, x + (size_t)i * 2), (__m512bh)f_load(ft, y + (size_t)i * 2));
            c1 = _mm512_dpbf16_ps(c1, (__m512bh)f_load(ft, x + (size_t)(i + 32) * 2),
                                  (__m512bh)f_load(ft, y + (size_t)(i + 32) * 2));
        }
        double sum = 0.0;
        sum += (double)reduce16(c0);
        sum += (double)reduce16(c1);
        for (int i = np; i < n; i++) sum += (double)(f_scalar(ft, x, i) * f_scalar(ft, y, i));
        return (float)sum;
    }
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int i = 0; i < np; i += 64) {
        const uint8_t *xa = x + (size_t)i * es, *ya = y + (size_t)i * es;
        s0 = _mm512_fmadd_ps(f_load(ft, xa), f_load(ft, ya), s0);
        s1 = _mm512_fmadd_ps(f_load(ft, xa + 16 * es), f_load(ft, ya + 16 * es), s1);
        s2 = _mm512_fmadd_ps(f_load(ft, xa + 32 * es), f_load(ft, ya + 32 * es), s2);
        s3 = _mm512_fmadd_ps(f_load(ft, xa + 48 * es), f_load(ft, ya + 48 * es), s3);
    }
    const float r = reduce16(_mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3)));
    if (ft == F_F32) {
        __m128 sum = _mm_set_ss(r);
        for (int i = np; i < n; i++)
            sum = _mm_add_ss(sum, _mm_mul_ss(_mm_set_ss(f_scalar(ft, x, i)), _mm_set_ss(f_scalar(ft, y, i))));
        return _mm_cvtss_f32(sum);
    }
    double sum = r;
    for (int i = np; i < n; i++) sum += (double)(f_scalar(ft, x, i) * f_scalar(ft, y, i));
    return (float)sum;
}

float kern_avx512_dot_f32_llama(int n, const float *x, const float *y) {
    return fvec_dot(F_F32, n, (const uint8_t *)x, (const uint8_t *)y);
}

/* Activations of the float kernels are in the weight's own format. */
static size_t af32_bytes(int cols) { return (size_t)cols * 4; }
static size_t af16_bytes(int cols) { return (size_t)cols * 2; }

INLINE void fvec_rows(int ft, const kern_job *j, int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        const uint8_t *w = j->W + (size_t)r * j->wstride;
        for (int t = 0; t < j->ntok; t++)
            j->Y[(size_t)t * j->ystride + r] = fvec_dot(ft, j->cols, w, j->A + (size_t)t * j->astride);
    }
}
static void mm_vec_f32(const kern_job *j, int r0, int r1) { fvec_rows(F_F32, j, r0, r1); }
static void mm_vec_f16(const kern_job *j, int r0, int r1) { fvec_rows(F_F16, j, r0, r1); }
static void mm_vec_bf16(const kern_job *j, int r0, int r1) { fvec_rows(F_BF16, j, r0, r1); }

/* tinyBLAS: one 16-lane accumulator per output over 16-value chunks
 * (BF16: 32 values per vdpbf16ps), reduced once; cols is a multiple of
 * the chunk. */
INLINE void ftiny_tile(int ft, const kern_job *j, int r, int t, const int R, const int T) {
    const int step = ft == F_BF16 ? 32 : 16, es = ft == F_F32 ? 4 : 2;
    __m512 acc[4][4];
    const uint8_t *w[4], *a[4];
    for (int i = 0; i < R; i++) w[i] = j->W + (size_t)(r + i) * j->wstride;
    for (int u = 0; u < T; u++) a[u] = j->A + (size_t)(t + u) * j->astride;
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) acc[i][u] = _mm512_setzero_ps();
    pf_stream pf = pf_start(j, w[0], (size_t)R * j->wstride, j->cols / step);
    for (int k = 0; k < j->cols; k += step) {
        pf_step(&pf);
        __m512 wv[4], av[4];
        for (int i = 0; i < R; i++) wv[i] = f_load(ft, w[i] + (size_t)k * es);
        for (int u = 0; u < T; u++) av[u] = f_load(ft, a[u] + (size_t)k * es);
        for (int i = 0; i < R; i++)
            for (int u = 0; u < T; u++)
                acc[i][u] = ft == F_BF16 ? _mm512_dpbf16_ps(acc[i][u], (__m512bh)wv[i], (__m512bh)av[u])
                                         : _mm512_fmadd_ps(wv[i], av[u], acc[i][u]);
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(t + u) * j->ystride + r + i] = reduce16(acc[i][u]);
}

INLINE void ftiny_rows(int ft, const kern_job *j, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int t = 0;
        for (; t + 4 <= j->ntok; t += 4) ftiny_tile(ft, j, r, t, 4, 4);
        for (; t < j->ntok; t++) ftiny_tile(ft, j, r, t, 4, 1);
    }
    for (; r < r1; r++) {
        int t = 0;
        for (; t + 4 <= j->ntok; t += 4) ftiny_tile(ft, j, r, t, 1, 4);
        for (; t < j->ntok; t++) ftiny_tile(ft, j, r, t, 1, 1);
    }
}
static void mm_tiny_f32(const kern_job *j, int r0, int r1) { ftiny_rows(F_F32, j, r0, r1); }
static void mm_tiny_f16(const kern_job *j, int r0, int r1) { ftiny_rows(F_F16, j, r0, r1); }
static void mm_tiny_bf16(const kern_job *j, int r0, int r1) { ftiny_rows(F_BF16, j, r0, r1); }

/* ------------------------------------------------------------------ */

static const kern_wops L_VEC_Q4_0 = {2, QT_Q8_0, al0_bytes, al0_prep4, mm_vec_q4_0};
static const kern_wops L_VEC_Q5_0 = {2, QT_Q8_0, al0_bytes, al0_prep5, mm_vec_q5_0};
static const kern_wops L_VEC_Q8_0 = {2, QT_Q8_0, al0_bytes, al0_prep8, mm_vec_q8_0};
static const kern_wops L_VEC_Q2_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q2_K};
static const kern_wops L_GEMV_Q2_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_gemv_q2_K};
static const kern_wops L_GEMM_Q2_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_gemm_q2_K};
static const kern_wops L_VEC_Q3_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q3_K};
static const kern_wops L_VEC_Q4_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q4_K};
static const kern_wops L_VEC_Q5_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q5_K};
static const kern_wops L_VEC_Q6_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q6_K};
static const kern_wops L_VEC_F32 = {4, QT_F32, af32_bytes, NULL, mm_vec_f32};
static const kern_wops L_VEC_F16 = {4, QT_F16, af16_bytes, NULL, mm_vec_f16};
static const kern_wops L_VEC_BF16 = {4, QT_BF16, af16_bytes, NULL, mm_vec_bf16};
static const kern_wops L_TINY_F32 = {4, QT_F32, af32_bytes, NULL, mm_tiny_f32};
static const kern_wops L_TINY_F16 = {4, QT_F16, af16_bytes, NULL, mm_tiny_f16};
static const kern_wops L_TINY_BF16 = {4, QT_BF16, af16_bytes, NULL, mm_tiny_bf16};

const kern_wops *kern_avx512_lo(int wtype, int kernel, int repacked) {
    if (kernel == KERN_LO_TINY) {
        switch (wtype) {
        case QT_F32: return &L_TINY_F32;
        case QT_F16: return &L_TINY_F16;
        case QT_BF16: return &L_TINY_BF16;
        default: return NULL;
        }
    }
    if (repacked) {
        if (wtype == QT_Q4_0) return kern_avx512_wops(QT_Q4_0); /* exact per-block isum: the same order */
        /* gemv: kern_avx512.c's Q4_K kernels (per-row for 1-2 tokens, 16
         * rows interleaved for batches) accumulate in exactly this order */
        if (wtype == QT_Q4_K) return kernel == KERN_LO_GEMM ? kern_avx512_q4k_gemm() : kern_avx512_wops(QT_Q4_K);
        if (wtype == QT_Q2_K) return kernel == KERN_LO_GEMM ? &L_GEMM_Q2_K : &L_GEMV_Q2_K;
        return NULL;
    }
    if (kernel != KERN_LO_VEC) return NULL;
    switch (wtype) {
    case QT_Q4_0: return &L_VEC_Q4_0;
    case QT_Q5_0: return &L_VEC_Q5_0;
    case QT_Q8_0: return &L_VEC_Q8_0;
    case QT_Q4_K: return &L_VEC_Q4_K;
    case QT_Q5_K: return &L_VEC_Q5_K;
    case QT_Q6_K: return &L_VEC_Q6_K;
    case QT_Q2_K: return &L_VEC_Q2_K;
    case QT_Q3_K: return &L_VEC_Q3_K;
    case QT_F32: return &L_VEC_F32;
    case QT_F16: return &L_VEC_F16;
    case QT_BF16: return &L_VEC_BF16;
    default: return NULL;
    }
}
