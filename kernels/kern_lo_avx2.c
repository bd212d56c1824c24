/* AVX2 kernels in llama.cpp's float order: bitwise lo_matmul's results,
 * as kern_lo_avx512.c (see there for the orders), on any AVX2+FMA+F16C
 * CPU.  Without VNNI, vpmaddubsw + vpmaddwd form the integer lanes: a
 * lane (4 products of values 4l..4l+3 of a 32-value group) is
 * madd(maddubs(w, a), (1, 1)), and a scaled lane madd(maddubs(w, a),
 * (sc, sc)).  The unsigned operand stays below 64, so vpmaddubsw cannot
 * saturate (2 * 63 * 127 < 2^15); Q8_0 weights are signed and use
 * |w| * sign(a, w) instead (exact unless an activation is -128, which the
 * Q8_0 quantizer only produces for NaN inputs).  Integer lanes are exact
 * either way, so the float sequence, and the bits, are those of
 * llama.cpp's AVX-512 build.  BF16's VDPBF16PS is emulated as
 * llama_order.c does (flushes, separate multiply and add). */
#include <immintrin.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_simd.h"


INLINE float half2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

/* hsum_float_8: (hi128 + lo128), then (0+2) + (1+3). */
INLINE float hsum8(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    return _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
}

/* 16 float lanes held as two ymm (lo: lanes 0-7, hi: 8-15). */
typedef struct f16x {
    __m256 lo, hi;
} f16x;

/* _mm512_reduce_add_ps: (hi256 + lo256), then hsum8. */
INLINE float reduce16(f16x v) { return hsum8(_mm256_add_ps(v.hi, v.lo)); }

/* Lanes of 4 products (u8 w times s8 a), and the same times a scale pair. */
INLINE __m256i dot4(__m256i w, __m256i a) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
}
INLINE __m256i dot4s(__m256i w, __m256i a, __m256i scale_pairs) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), scale_pairs);
}

/* ------------------------------------------------------------------ */
/* Activations (the layouts of kern_lo_avx512.c)                       */

typedef struct alk {
    int8_t q[256];   /* quants, natural order */
    int16_t s16[16]; /* sums of each 16 values (the bsums) */
    int16_t s32[8];  /* sums of each 32 values */
    float d;         /* block scale */
    uint8_t pad[12];
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

typedef struct al0 {
    int8_t q[32];
    int32_t off[8]; /* -bias * (sum of the lane's 4 activations) */
    float d;
    uint8_t pad[28];
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
        __m256i s = dot4(ones, q);
        _mm256_storeu_si256((__m256i *)o[b].off, _mm256_mullo_epi32(s, _mm256_set1_epi32(-bias)));
        o[b].d = half2f((const uint8_t *)&x[b].d);
        memset(o[b].pad, 0, sizeof o[b].pad);
    }
}
static void al0_prep4(const void *xq, int cols, void *dst) { al0_prep(xq, cols, dst, 8); }
static void al0_prep5(const void *xq, int cols, void *dst) { al0_prep(xq, cols, dst, 16); }
static void al0_prep8(const void *xq, int cols, void *dst) { al0_prep(xq, cols, dst, 0); } /* Q8_0: no bias */

/* ------------------------------------------------------------------ */
/* 32-value block types, VEC order                                     */

enum { T_Q4_0, T_Q5_0, T_Q8_0 };

INLINE __m256i w0_unpack(int t, const uint8_t *x) {
    if (t == T_Q8_0) return _mm256_loadu_si256((const __m256i *)(x + 2)); /* signed */
    const __m128i m = _mm_set1_epi8(0x0F);
    const __m128i q = _mm_loadu_si128((const __m128i *)(x + (t == T_Q4_0 ? 2 : 6)));
    __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(q, m)),
                                        _mm_and_si128(_mm_srli_epi16(q, 4), m), 1);
    if (t == T_Q5_0) {
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

INLINE void vec0_tile(const kern_job *j, int t, int wblk, int r, int tk, const int R, const int T) {
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
            const __m256i wabs = t == T_Q8_0 ? _mm256_abs_epi8(w) : w;
            const __m256 dw = _mm256_set1_ps(half2f(x));
            #pragma GCC unroll 4
            for (int u = 0; u < T; u++) {
                const al0 *a = act[u] + b;
                __m256i av = _mm256_loadu_si256((const __m256i *)a->q);
                if (t == T_Q8_0) av = _mm256_sign_epi8(av, w);
                __m256i p = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)a->off), dot4(wabs, av));
                acc[i][u] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(a->d)), _mm256_cvtepi32_ps(p), acc[i][u]);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(tk + u) * j->ystride + r + i] = hsum8(acc[i][u]);
}

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

#define VEC0(j, t, wblk, r, tk, R, T) vec0_tile(j, t, wblk, r, tk, R, T)
TILE_DRIVER(mm_vec_q4_0, VEC0, T_Q4_0, 18)
TILE_DRIVER(mm_vec_q5_0, VEC0, T_Q5_0, 22)
TILE_DRIVER(mm_vec_q8_0, VEC0, T_Q8_0, 34)

/* ------------------------------------------------------------------ */
/* K-quants                                                            */

enum { O_VEC, O_GEMV, O_GEMM };
enum { K_Q2, K_Q3, K_Q4, K_Q5, K_Q6 };

typedef struct kb {
    __m256i W[8];    /* u8 quants of 32-value group g, natural order */
    __m256i S[8];    /* Q6_K/Q3_K/Q2_K: (scale, scale) int16 pair of each lane's 16 values */
    __m256i sc16;    /* Q6_K: the 16 scales, Q2_K: the 16 mins, int16 (madd with the bsums) */
    int32_t sc[8];   /* Q4_K/Q5_K: (scale, scale) pair of group g */
    __m128i mn;      /* Q4_K/Q5_K: the 8 mins, int16 */
    float d, dmin;
} kb;

INLINE void unpack_q45(const uint8_t *x, kb *k, int q5) {
    uint32_t u0, u1, u2;
    memcpy(&u0, x + 4, 4);
    memcpy(&u1, x + 8, 4);
    memcpy(&u2, x + 12, 4);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    __m128i b = _mm_cvtsi32_si128((int)(u0 & k1));
    b = _mm_insert_epi32(b, (int)((u2 & k2) | (((u0 >> 6) & k3) << 4)), 1);
    b = _mm_insert_epi32(b, (int)(u1 & k1), 2);
    b = _mm_insert_epi32(b, (int)(((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4)), 3);
    const __m256i s32 = _mm256_cvtepu8_epi32(b);
    _mm256_storeu_si256((__m256i *)k->sc, _mm256_or_si256(s32, _mm256_slli_epi32(s32, 16)));
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
    if (q5) {
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

/* S[g] of the types with 16-value scales, from the 16 scales as int32
 * (lo: scales 0-7, hi: 8-15): lanes 0-3 of group g (values 0-15) get
 * scale 2g, lanes 4-7 scale 2g + 1, each as an int16 pair for vpmaddwd. */
INLINE void pair_scales(__m256i lo, __m256i hi, __m256i S[8]) {
    const __m256i plo = _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(lo, 16));
    const __m256i phi = _mm256_or_si256(_mm256_and_si256(hi, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(hi, 16));
    #pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m256i idx = _mm256_loadu_si256((const __m256i *)k_pair_idx[g]);
        S[g] = _mm256_permutevar8x32_epi32(plo, idx);
        S[4 + g] = _mm256_permutevar8x32_epi32(phi, idx);
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
    pair_scales(_mm256_cvtepi8_epi32(s8), _mm256_cvtepi8_epi32(_mm_srli_si128(s8, 8)), k->S);
    k->sc16 = _mm256_cvtepi8_epi16(s8);
    k->d = half2f(x + 208);
}

/* Q3_K: hmask[32] (bit g of byte l: high bit of value 32g + l), qs[64]
 * (byte l of half c: low 2 bits of values 128c + 32s + l at bits 2s),
 * scales[12] (16 6-bit values, minus 32), d.  W holds q + 4 = low bits |
 * high bit << 2 (0..7); the -4 comes back per lane in kblock. */
INLINE void unpack_q3(const uint8_t *x, kb *k) {
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)x); /* bit g of hmask[l]: value 32g + l */
    #pragma GCC unroll 2
    for (int c = 0; c < 2; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 32 + 32 * c));
        #pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            const int g = 4 * c + s;
            /* bit g of each byte to bit 2 (16-bit shifts: bit 2 still comes from its own byte) */
            const __m256i h = g < 2 ? _mm256_slli_epi16(hm, 2 - g) : g == 2 ? hm : _mm256_srli_epi16(hm, g - 2);
            const __m256i lo = s == 0 ? _mm256_and_si256(q, m3) : _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
            k->W[g] = _mm256_or_si256(lo, _mm256_and_si256(h, m4));
        }
    }
    /* 16 6-bit scales: low 4 bits from bytes 96..103 (nibbles), high 2
     * bits from bytes 104..107, minus 32 */
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
    pair_scales(_mm256_cvtepi8_epi32(sc), _mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)), k->S);
    k->d = half2f(x + 108);
}

/* Q2_K: scales[16] (4-bit scale | 4-bit min << 4 per 16 values), qs[64]
 * (byte l of half c: values 128c + 32s + l at bits 2s), d, dmin.  W holds
 * the 2-bit values, S the scale pairs, sc16 the 16 mins. */
INLINE void unpack_q2(const uint8_t *x, kb *k) {
    const __m256i m3 = _mm256_set1_epi8(3), m0f = _mm256_set1_epi8(0x0F);
    #pragma GCC unroll 2
    for (int c = 0; c < 2; c++) { /* byte l of 32-byte half c: values 128c + 32s + l at bits 2s */
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x + 16 + 32 * c));
        k->W[4 * c] = _mm256_and_si256(q, m3);
        k->W[4 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
        k->W[4 * c + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
        k->W[4 * c + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
    }
    const __m128i s = _mm_loadu_si128((const __m128i *)x); /* scale | min << 4 */
    const __m128i sc = _mm_and_si128(s, _mm256_castsi256_si128(m0f));
    pair_scales(_mm256_cvtepu8_epi32(sc), _mm256_cvtepu8_epi32(_mm_srli_si128(sc, 8)), k->S);
    k->sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm256_castsi256_si128(m0f)));
    k->d = half2f(x + 80);
    k->dmin = half2f(x + 82);
}

/* The totals of four vectors of 8 int32 lanes, one per lane (exact). */
INLINE __m128i hsum4x8(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    const __m256i c = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
}

/* The 8 scaled lanes of a Q4_K/Q5_K super-block (exact). */
INLINE __m256i lanes45(const kb *k, const alk *a) {
    __m256i I0 = _mm256_setzero_si256(), I1 = I0;
    #pragma GCC unroll 8
    for (int g = 0; g < 8; g += 2) {
        I0 = _mm256_add_epi32(I0, dot4s(k->W[g], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g)),
                                        _mm256_set1_epi32(k->sc[g])));
        I1 = _mm256_add_epi32(I1, dot4s(k->W[g + 1], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g + 32)),
                                        _mm256_set1_epi32(k->sc[g + 1])));
    }
    return _mm256_add_epi32(I0, I1);
}

/* The 8 scaled lanes of a super-block with 16-value scales (exact). */
INLINE __m256i lanes16(const kb *k, const alk *a) {
    __m256i I = _mm256_setzero_si256();
    #pragma GCC unroll 8
    for (int g = 0; g < 8; g++)
        I = _mm256_add_epi32(I, dot4s(k->W[g], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g)), k->S[g]));
    return I;
}

typedef struct kacc {
    __m256 v; /* VEC: the 8 lanes */
    __m128 m; /* VEC Q4_K: the 4 min lanes; Q5_K: lane 0 = summs;
                 GEMV/GEMM: lane 0 = acc, lane 1 = acc_m */
} kacc;

INLINE void kblock(int kind, int order, const kb *k, const alk *a, kacc *s) {
    if (kind == K_Q2) {
        /* lanes with 16-value scales (maddubs pairs |.| <= 2 * 3 * 128, no
         * saturation), per 128-value half; the mins times the bsums by
         * vpmaddwd: lane l pairs bsums 2l and 2l + 1 (lanes 0-3: half 0) */
        __m256i I0 = _mm256_setzero_si256(), I1 = I0;
        #pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            I0 = _mm256_add_epi32(I0, dot4s(k->W[g], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g)), k->S[g]));
            I1 = _mm256_add_epi32(I1, dot4s(k->W[g + 4], _mm256_loadu_si256((const __m256i *)(a->q + 32 * g + 128)),
                                            k->S[g + 4]));
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
        /* llama.cpp's own steps: 16-bit pair products of q + 4 minus those
         * of 4 (|.| <= 2 * 4 * 128, no saturation), then vpmaddwd with the
         * scale pairs: lane l = scale * its 4 signed products, exact */
        const __m256i four = _mm256_set1_epi8(4);
        __m256i I = _mm256_setzero_si256();
        #pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(a->q + 32 * g));
            const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(k->W[g], q), _mm256_maddubs_epi16(four, q));
            I = _mm256_add_epi32(I, _mm256_madd_epi16(p, k->S[g]));
        }
        s->v = _mm256_fmadd_ps(_mm256_set1_ps(a->d * k->d), _mm256_cvtepi32_ps(I), s->v);
        return;
    }
    if (kind == K_Q6) {
        __m256i I = lanes16(k, a);
        const __m256i off = _mm256_madd_epi16(k->sc16, _mm256_loadu_si256((const __m256i *)a->s16));
        I = _mm256_sub_epi32(I, _mm256_slli_epi32(off, 5));
        s->v = _mm256_fmadd_ps(_mm256_set1_ps(a->d * k->d), _mm256_cvtepi32_ps(I), s->v);
        return;
    }
    const __m128i mprod = _mm_madd_epi16(k->mn, _mm_loadu_si128((const __m128i *)a->s32));
    if (order == O_VEC) {
        const float d = a->d * k->d, dmin = -a->d * k->dmin;
        s->v = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(lanes45(k, a)), s->v);
        if (kind == K_Q4) {
            s->m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(mprod), s->m);
        } else {
            __m128i t = _mm_add_epi32(mprod, _mm_srli_si128(mprod, 4));
            t = _mm_add_epi32(t, _mm_srli_si128(t, 8));
            s->m = _mm_fmadd_ss(_mm_set_ss(dmin), _mm_cvtepi32_ps(t), s->m);
        }
        return;
    }
    const __m128 dd = _mm_setr_ps(k->d * a->d, k->dmin * a->d, k->d * a->d, k->dmin * a->d);
    if (order == O_GEMV) {
        __m256i I = lanes45(k, a);
        __m128i i4 = _mm_add_epi32(_mm256_castsi256_si128(I), _mm256_extracti128_si256(I, 1));
        __m128i t = _mm_add_epi32(_mm_unpacklo_epi64(i4, mprod), _mm_unpackhi_epi64(i4, mprod));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1)); /* isum, isum, msum, msum */
        s->m = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_shuffle_epi32(t, 0x08)), dd, s->m);
        return;
    }
    /* GEMM: sub-block pair sums, then four steps per accumulator */
    __m256i P[4];
    #pragma GCC unroll 4
    for (int jj = 0; jj < 4; jj++)
        P[jj] = _mm256_add_epi32(
            dot4s(k->W[2 * jj], _mm256_loadu_si256((const __m256i *)(a->q + 64 * jj)), _mm256_set1_epi32(k->sc[2 * jj])),
            dot4s(k->W[2 * jj + 1], _mm256_loadu_si256((const __m256i *)(a->q + 64 * jj + 32)),
                  _mm256_set1_epi32(k->sc[2 * jj + 1])));
    __m256i x01 = _mm256_add_epi32(_mm256_unpacklo_epi32(P[0], P[1]), _mm256_unpackhi_epi32(P[0], P[1]));
    __m256i x23 = _mm256_add_epi32(_mm256_unpacklo_epi32(P[2], P[3]), _mm256_unpackhi_epi32(P[2], P[3]));
    __m256i y = _mm256_add_epi32(_mm256_unpacklo_epi64(x01, x23), _mm256_unpackhi_epi64(x01, x23));
    __m128 pf = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1)));
    __m128 mf = _mm_cvtepi32_ps(mprod);
    __m128 u = _mm_unpacklo_ps(pf, mf), v = _mm_unpackhi_ps(pf, mf);
    __m128 acc = s->m;
    acc = _mm_fmadd_ps(u, dd, acc);
    acc = _mm_fmadd_ps(_mm_movehl_ps(u, u), dd, acc);
    acc = _mm_fmadd_ps(v, dd, acc);
    s->m = _mm_fmadd_ps(_mm_movehl_ps(v, v), dd, acc);
}

INLINE float kfinal(int kind, int order, const kacc *s) {
    if (kind == K_Q6 || kind == K_Q3 || (kind == K_Q2 && order == O_VEC)) return hsum8(s->v);
    if (order == O_VEC) {
        const float h = hsum8(s->v);
        if (kind == K_Q5) return h + _mm_cvtss_f32(s->m);
        __m128 m = _mm_add_ps(s->m, _mm_movehl_ps(s->m, s->m));
        return h + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
    }
    return _mm_cvtss_f32(_mm_sub_ss(s->m, _mm_movehdup_ps(s->m))); /* acc - acc_m */
}

INLINE void k_tile(const kern_job *j, int kind, int order, int wblk, int r, int tk, const int R, const int T) {
    const int nb = j->cols / 256;
    kacc s[2][4];
    const uint8_t *row[2];
    const alk *act[4];
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
            #pragma GCC unroll 4
            for (int u = 0; u < T; u++) kblock(kind, order, &k, act[u] + b, &s[i][u]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(tk + u) * j->ystride + r + i] = kfinal(kind, order, &s[i][u]);
}

#define KT(j, kind, order, wblk, r, tk, R, T) k_tile(j, kind, order, wblk, r, tk, R, T)
TILE_DRIVER(mm_vec_q2_K, KT, K_Q2, O_VEC, 84)
TILE_DRIVER(mm_gemv_q2_K, KT, K_Q2, O_GEMV, 84)
TILE_DRIVER(mm_gemm_q2_K, KT, K_Q2, O_GEMM, 84)
TILE_DRIVER(mm_vec_q3_K, KT, K_Q3, O_VEC, 110)
TILE_DRIVER(mm_vec_q4_K, KT, K_Q4, O_VEC, 144)
TILE_DRIVER(mm_gemv_q4_K, KT, K_Q4, O_GEMV, 144)
TILE_DRIVER(mm_gemm_q4_K, KT, K_Q4, O_GEMM, 144)
TILE_DRIVER(mm_vec_q5_K, KT, K_Q5, O_VEC, 176)
TILE_DRIVER(mm_vec_q6_K, KT, K_Q6, O_VEC, 210)

/* ------------------------------------------------------------------ */
/* F32 / F16: 16-lane accumulators as two ymm                          */

enum { F_F32, F_F16 };

INLINE __m256 f_load8(int ft, const uint8_t *p) {
    if (ft == F_F32) return _mm256_loadu_ps((const float *)(const void *)p);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
INLINE f16x f_fma16(int ft, const uint8_t *x, const uint8_t *y, f16x acc) {
    const int es = ft == F_F32 ? 4 : 2;
    acc.lo = _mm256_fmadd_ps(f_load8(ft, x), f_load8(ft, y), acc.lo);
    acc.hi = _mm256_fmadd_ps(f_load8(ft, x + 8 * es), f_load8(ft, y + 8 * es), acc.hi);
    return acc;
}
INLINE float f_scalar(int ft, const uint8_t *p, int i) {
    if (ft == F_F32) {
        float v;
        memcpy(&v, p + 4 * (size_t)i, 4);
        return v;
    }
    return half2f(p + 2 * (size_t)i);
}

/* ggml_vec_dot_f32 / _f16 (see kern_lo_avx512.c). */
INLINE float fvec_dot(int ft, int n, const uint8_t *x, const uint8_t *y) {
    const int es = ft == F_F32 ? 4 : 2;
    const int np = n & ~63;
    const f16x z = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    f16x s0 = z, s1 = z, s2 = z, s3 = z;
    for (int i = 0; i < np; i += 64) {
        const uint8_t *xa = x + (size_t)i * es, *ya = y + (size_t)i * es;
        s0 = f_fma16(ft, xa, ya, s0);
        s1 = f_fma16(ft, xa + 16 * es, ya + 16 * es, s1);
        s2 = f_fma16(ft, xa + 32 * es, ya + 32 * es, s2);
        s3 = f_fma16(ft, xa + 48 * es, ya + 48 * es, s3);
    }
    f16x r;
    r.lo = _mm256_add_ps(_mm256_add_ps(s0.lo, s2.lo), _mm256_add_ps(s1.lo, s3.lo));
    r.hi = _mm256_add_ps(_mm256_add_ps(s0.hi, s2.hi), _mm256_add_ps(s1.hi, s3.hi));
    const float red = reduce16(r);
    if (ft == F_F32) {
        __m128 sum = _mm_set_ss(red);
        for (int i = np; i < n; i++)
            sum = _mm_add_ss(sum, _mm_mul_ss(_mm_set_ss(f_scalar(ft, x, i)), _mm_set_ss(f_scalar(ft, y, i))));
        return _mm_cvtss_f32(sum);
    }
    double sum = red;
    for (int i = np; i < n; i++) sum += (double)(f_scalar(ft, x, i) * f_scalar(ft, y, i));
    return (float)sum;
}

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

/* tinyBLAS: one 16-lane accumulator per output over 16-value chunks. */
INLINE void ftiny_tile(int ft, const kern_job *j, int r, int t, const int R, const int T) {
    const int es = ft == F_F32 ? 4 : 2;
    f16x acc[4][4];
    const uint8_t *w[4], *a[4];
    for (int i = 0; i < R; i++) w[i] = j->W + (size_t)(r + i) * j->wstride;
    for (int u = 0; u < T; u++) a[u] = j->A + (size_t)(t + u) * j->astride;
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) acc[i][u].lo = acc[i][u].hi = _mm256_setzero_ps();
    pf_stream pf = pf_start(j, w[0], (size_t)R * j->wstride, j->cols / 16);
    for (int k = 0; k < j->cols; k += 16) {
        pf_step(&pf);
        for (int i = 0; i < R; i++)
            for (int u = 0; u < T; u++) acc[i][u] = f_fma16(ft, w[i] + (size_t)k * es, a[u] + (size_t)k * es, acc[i][u]);
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(t + u) * j->ystride + r + i] = reduce16(acc[i][u]);
}

INLINE void ftiny_rows(int ft, const kern_job *j, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int t = 0;
        for (; t + 2 <= j->ntok; t += 2) ftiny_tile(ft, j, r, t, 4, 2);
        for (; t < j->ntok; t++) ftiny_tile(ft, j, r, t, 4, 1);
    }
    for (; r < r1; r++)
        for (int t = 0; t < j->ntok; t++) ftiny_tile(ft, j, r, t, 1, 1);
}
static void mm_tiny_f32(const kern_job *j, int r0, int r1) { ftiny_rows(F_F32, j, r0, r1); }
static void mm_tiny_f16(const kern_job *j, int r0, int r1) { ftiny_rows(F_F16, j, r0, r1); }

/* ------------------------------------------------------------------ */
/* BF16: VDPBF16PS as llama_order.c emulates it                        */
/* One dpbf16 lane l of a 32-value chunk takes values 2l and 2l + 1:
 *   acc = ftz(acc + ftz(x[2l+1]) * ftz(y[2l+1]))
 *   acc = ftz(acc + ftz(x[2l])   * ftz(y[2l]))
 * ftz: |v| < 2^-126 becomes a zero of v's sign (DAZ on the inputs, FTZ on
 * the sums); the products are rounded as IEEE floats (exact unless below
 * the normal range) and not flushed.  The same multiplies, adds and flushes
 * lane by lane give the same bits.  16 lanes are two ymm (lanes 0-7:
 * values 0-15, lanes 8-15: values 16-31).  vec_dot: two accumulators, over
 * the first and second 32 values of each 64-value step, each reduced and
 * added in double, the tail in double; tinyBLAS: one accumulator over
 * 32-value chunks.
 * Activations are prepared once per product: each chunk's odd-position
 * values (8 for lanes 0-7, 8 for lanes 8-15), then its even ones, widened
 * and flushed; values past the chunks (vec_dot's tail) as plain floats. */

/* ftz of 8 floats; NaN kept (it fails the scalar test |v| < 2^-126 too) */
INLINE __m256 ftz8(__m256 v) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 keep = _mm256_cmp_ps(_mm256_andnot_ps(sign, v), _mm256_set1_ps(0x1p-126f), _CMP_NLT_UQ);
    return _mm256_and_ps(v, _mm256_or_ps(keep, sign));
}

/* 8 bf16 pairs (lane l: values 2l, 2l+1) -> flushed floats of each half.
 * A bf16 is denormal exactly when its float is, so the 16 inputs are
 * flushed as bf16 (exponent bits zero: keep only the sign), at once. */
INLINE void bf_split(const uint8_t *p, __m256 *odd, __m256 *even) {
    __m256i v = _mm256_loadu_si256((const __m256i *)p);
    const __m256i den = _mm256_cmpeq_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x7F80)), _mm256_setzero_si256());
    v = _mm256_andnot_si256(_mm256_and_si256(den, _mm256_set1_epi16(0x7FFF)), v);
    *odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)));
    *even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

INLINE float bf_scalar(const uint8_t *p, int i) {
    uint16_t h;
    memcpy(&h, p + 2 * (size_t)i, 2);
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Values [0, nchunked) in 32-value chunks (odd 0-7, odd 8-15, even 0-7,
 * even 8-15), the rest as floats: cols floats in all. */
static size_t abf_bytes(int cols) { return (size_t)cols * 4; }
INLINE void abf_prep(const void *xq, int cols, void *dst, int nchunked) {
    const uint8_t *x = xq;
    float *o = dst;
    int k = 0;
    for (; k < nchunked; k += 32) {
        __m256 od, ev;
        #pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            bf_split(x + 2 * (size_t)(k + 16 * h), &od, &ev);
            _mm256_storeu_ps(o + k + 8 * h, od);
            _mm256_storeu_ps(o + k + 16 + 8 * h, ev);
        }
    }
    for (; k < cols; k++) o[k] = bf_scalar(x, k);
}
static void abf_prep_vec(const void *xq, int cols, void *dst) { abf_prep(xq, cols, dst, cols & ~63); }
static void abf_prep_tiny(const void *xq, int cols, void *dst) { abf_prep(xq, cols, dst, cols & ~31); }

/* One lane-half of a dpbf16 step: a points at the chunk's odd values of
 * these lanes; the even ones are 16 floats further. */
INLINE __m256 dp8(__m256 acc, __m256 wodd, __m256 weven, const float *a) {
    acc = ftz8(_mm256_add_ps(acc, _mm256_mul_ps(wodd, _mm256_loadu_ps(a))));
    return ftz8(_mm256_add_ps(acc, _mm256_mul_ps(weven, _mm256_loadu_ps(a + 16))));
}

/* R rows (1-2) x T tokens (1-2); NA accumulators per output: 2 for
 * vec_dot (first / second 32 values of each 64-value step), 1 for tinyBLAS. */
INLINE void bf_tile(const kern_job *j, int r, int t, const int NA, const int R, const int T) {
    const int nck = NA == 2 ? j->cols & ~63 : j->cols & ~31; /* values in chunks */
    __m256 acc[2][2][2][2]; /* [row][token][accumulator][lane half] */
    const uint8_t *w[2];
    const float *a[2];
    for (int i = 0; i < R; i++) w[i] = j->W + (size_t)(r + i) * j->wstride;
    for (int u = 0; u < T; u++) a[u] = (const float *)(const void *)(j->A + (size_t)(t + u) * j->astride);
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++)
            for (int c = 0; c < NA; c++) acc[i][u][c][0] = acc[i][u][c][1] = _mm256_setzero_ps();
    pf_stream pf = pf_start(j, w[0], (size_t)R * j->wstride, nck >= 32 ? nck / 32 : 1);
    for (int k = 0; k < nck; k += 32 * NA) {
        #pragma GCC unroll 2
        for (int c = 0; c < NA; c++) {
            pf_step(&pf);
            const int kc = k + 32 * c;
            #pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256 wo[2], we[2];
                #pragma GCC unroll 2
                for (int i = 0; i < R; i++) bf_split(w[i] + 2 * (size_t)(kc + 16 * h), &wo[i], &we[i]);
                #pragma GCC unroll 2
                for (int u = 0; u < T; u++)
                    #pragma GCC unroll 2
                    for (int i = 0; i < R; i++) acc[i][u][c][h] = dp8(acc[i][u][c][h], wo[i], we[i], a[u] + kc + 8 * h);
            }
        }
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) {
            float y;
            if (NA == 1) {
                y = reduce16((f16x){acc[i][u][0][0], acc[i][u][0][1]});
            } else {
                double sum = 0.0; /* 0.0 + -0.0 is +0.0, as in the scalar code */
                sum += (double)reduce16((f16x){acc[i][u][0][0], acc[i][u][0][1]});
                sum += (double)reduce16((f16x){acc[i][u][1][0], acc[i][u][1][1]});
                for (int k = nck; k < j->cols; k++) sum += (double)(bf_scalar(w[i], k) * a[u][k]);
                y = (float)sum;
            }
            j->Y[(size_t)(t + u) * j->ystride + r + i] = y;
        }
}

/* decode (1 token): row pairs; batches: token pairs (fewer accumulators
 * for vec_dot's two per output) */
static void mm_vec_bf16(const kern_job *j, int r0, int r1) {
    if (j->ntok == 1) {
        int r = r0;
        for (; r + 2 <= r1; r += 2) bf_tile(j, r, 0, 2, 2, 1);
        if (r < r1) bf_tile(j, r, 0, 2, 1, 1);
        return;
    }
    for (int r = r0; r < r1; r++) {
        int t = 0;
        for (; t + 2 <= j->ntok; t += 2) bf_tile(j, r, t, 2, 1, 2);
        if (t < j->ntok) bf_tile(j, r, t, 2, 1, 1);
    }
}

static void mm_tiny_bf16(const kern_job *j, int r0, int r1) {
    int r = r0;
    for (; r + 2 <= r1; r += 2) {
        int t = 0;
        for (; t + 2 <= j->ntok; t += 2) bf_tile(j, r, t, 1, 2, 2);
        if (t < j->ntok) bf_tile(j, r, t, 1, 2, 1);
    }
    if (r < r1) {
        int t = 0;
        for (; t + 2 <= j->ntok; t += 2) bf_tile(j, r, t, 1, 1, 2);
        if (t < j->ntok) bf_tile(j, r, t, 1, 1, 1);
    }
}

/* ------------------------------------------------------------------ */

static const kern_wops L_VEC_Q4_0 = {2, QT_Q8_0, al0_bytes, al0_prep4, mm_vec_q4_0};
static const kern_wops L_VEC_Q5_0 = {2, QT_Q8_0, al0_bytes, al0_prep5, mm_vec_q5_0};
static const kern_wops L_VEC_Q8_0 = {2, QT_Q8_0, al0_bytes, al0_prep8, mm_vec_q8_0};
static const kern_wops L_VEC_Q2_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q2_K};
static const kern_wops L_GEMV_Q2_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_gemv_q2_K};
static const kern_wops L_GEMM_Q2_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_gemm_q2_K};
static const kern_wops L_VEC_Q3_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q3_K};
static const kern_wops L_VEC_Q4_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q4_K};
static const kern_wops L_GEMV_Q4_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_gemv_q4_K};
static const kern_wops L_GEMM_Q4_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_gemm_q4_K};
static const kern_wops L_VEC_Q5_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q5_K};
static const kern_wops L_VEC_Q6_K = {2, QT_Q8_K, alk_bytes, alk_prep, mm_vec_q6_K};
static const kern_wops L_VEC_F32 = {4, QT_F32, af32_bytes, NULL, mm_vec_f32};
static const kern_wops L_VEC_F16 = {4, QT_F16, af16_bytes, NULL, mm_vec_f16};
static const kern_wops L_TINY_F32 = {4, QT_F32, af32_bytes, NULL, mm_tiny_f32};
static const kern_wops L_TINY_F16 = {4, QT_F16, af16_bytes, NULL, mm_tiny_f16};
static const kern_wops L_VEC_BF16 = {2, QT_BF16, abf_bytes, abf_prep_vec, mm_vec_bf16};
static const kern_wops L_TINY_BF16 = {2, QT_BF16, abf_bytes, abf_prep_tiny, mm_tiny_bf16};

const kern_wops *kern_avx2_lo(int wtype, int kernel, int repacked) {
    if (kernel == KERN_LO_TINY) {
        switch (wtype) {
        case QT_F32: return &L_TINY_F32;
        case QT_F16: return &L_TINY_F16;
        case QT_BF16: return &L_TINY_BF16;
        default: return NULL;
        }
    }
    if (repacked) {
        if (wtype == QT_Q4_0) return kern_avx2_wops(QT_Q4_0); /* exact per-block isum: the same order */
        if (wtype == QT_Q4_K) return kernel == KERN_LO_GEMM ? &L_GEMM_Q4_K : &L_GEMV_Q4_K;
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

float kern_avx2_dot_f32_llama(int n, const float *x, const float *y) {
    return fvec_dot(F_F32, n, (const uint8_t *)x, (const uint8_t *)y);
}
