/* AVX2 kernels (AVX2 + FMA + F16C: any x86-64 since Haswell / Zen 1).
 *
 * The same scheme as kern_avx512.c with 8 rows per group (one row per
 * 32-bit lane of a ymm) and no VNNI: vpmaddubsw multiplies the unsigned
 * quants by 4 broadcast activation bytes into int16 pairs, a few of which
 * are summed in int16 (as many as cannot overflow for the type), and
 * vpmaddwd by the (scale, scale) pair of the sub-block widens them to
 * int32, so the sub-block scale costs nothing extra.  Q8_0 weights are
 * signed: |w| times sign(a, w), as vpmaddubsw needs an unsigned operand.
 *
 * Lane order: the 8-row transpose leaves row 2*(p%4) + p/4 in lane p;
 * k_unperm8 puts outputs back in row order. */
#include <immintrin.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_simd.h"

#define TCHUNK 64

static const int32_t k_row8[8] = {0, 2, 4, 6, 1, 3, 5, 7};    /* lane -> row */
static const int32_t k_unperm8[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* row -> lane */

static void group_rows(const kern_job *j, int r0, const uint8_t *rp[8], __m256i *gidx) {
    int32_t idx[8];
    for (int p = 0; p < 8; p++) {
        int r = r0 + p < j->rows ? r0 + p : j->rows - 1;
        rp[p] = j->W + (size_t)r * j->wstride;
    }
    for (int p = 0; p < 8; p++) idx[p] = (int32_t)(rp[k_row8[p]] - rp[0]);
    *gidx = _mm256_loadu_si256((const __m256i *)idx);
}

/* o[m], lane p = 32-bit word m of the 16 bytes at rp[row(p)] + off. */
INLINE void load_t8(const uint8_t *const rp[8], size_t off, __m256i o[4]) {
    __m256i z[4];
    for (int k = 0; k < 4; k++)
        z[k] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(rp[2 * k] + off))),
                                       _mm_loadu_si128((const __m128i *)(rp[2 * k + 1] + off)), 1);
    __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
    __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
    o[0] = _mm256_unpacklo_epi64(t0, t2);
    o[1] = _mm256_unpackhi_epi64(t0, t2);
    o[2] = _mm256_unpacklo_epi64(t1, t3);
    o[3] = _mm256_unpackhi_epi64(t1, t3);
}

INLINE __m256i gather32(const uint8_t *const rp[8], __m256i gidx, size_t off) {
    return _mm256_i32gather_epi32((const int *)(const void *)(rp[0] + off), gidx, 1);
}

/* 8 halves (low 16 bits of each lane) to floats. */
INLINE __m256 half_lo(__m256i v) {
    __m256i w = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
    __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    return _mm256_cvtph_ps(h);
}

#define SET(x) _mm256_set1_epi32((int)(x))

/* ------------------------------------------------------------------ */

typedef struct wblk8 {
    __m256i q[64];  /* lane p: quants 4k..4k+3 of the lane's row, u8 (|w| for Q8_0) */
    __m256i qs[8];  /* Q8_0 only: the signed weights, source of the signs */
    __m256i sc[16]; /* int16 pair (scale, scale) of each sub-block */
    __m256i mn[8];  /* int16 pairs (m[2i], m[2i+1]) */
    __m256 d, dmin;
} wblk8;

enum { MODE_OFFSET = 0, MODE_MIN = 1 };

typedef struct int_desc {
    int nq, nsub, npair, mode;
    int depth;   /* vpmaddubsw results summed in int16 before widening */
    int sign;    /* 1: Q8_0 sign trick */
    int soff, qoff, ablk, wblk;
} int_desc;

/* Broadcast of the 4 activation bytes (or int16 pair) at p; p is 4-byte
 * aligned (activation blocks are), so the load folds into the multiply as
 * an embedded broadcast. */
INLINE __m256i bc32(const uint8_t *p) {
    return _mm256_set1_epi32(*(const int32_t *)(const void *)p);
}

INLINE void int_tile(const int_desc *D, const wblk8 *w, const uint8_t *const *a, __m256 *const *acc,
                     const int TT) {
    __m256i isum[4], msum[4];
    #pragma GCC unroll 16
    for (int t = 0; t < TT; t++) isum[t] = msum[t] = _mm256_setzero_si256();
    const int qps = D->nq / D->nsub;
    const __m256i ones = _mm256_set1_epi16(1);
    #pragma GCC unroll 16
    for (int s = 0; s < D->nsub; s++) {
        const __m256i scale = D->nsub == 1 ? ones : w->sc[s];
        #pragma GCC unroll 16
        for (int k0 = 0; k0 < qps; k0 += D->depth) {
            __m256i p16[4];
            #pragma GCC unroll 16
            for (int kk = 0; kk < D->depth; kk++) {
                const int k = s * qps + k0 + kk;
                #pragma GCC unroll 16
                for (int t = 0; t < TT; t++) {
                    __m256i av = bc32(a[t] + D->qoff + 4 * k);
                    if (D->sign) av = _mm256_sign_epi8(av, w->qs[k]);
                    __m256i p = _mm256_maddubs_epi16(w->q[k], av);
                    p16[t] = kk ? _mm256_add_epi16(p16[t], p) : p;
                }
            }
            #pragma GCC unroll 16
            for (int t = 0; t < TT; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(p16[t], scale));
        }
    }
    #pragma GCC unroll 16
    for (int p = 0; p < D->npair; p++)
        #pragma GCC unroll 16
        for (int t = 0; t < TT; t++)
            msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(w->mn[p], bc32(a[t] + D->soff + 4 * p)));
    #pragma GCC unroll 16
    for (int t = 0; t < TT; t++) {
        float da;
        memcpy(&da, a[t], 4);
        const __m256 vda = _mm256_set1_ps(da);
        if (D->mode == MODE_OFFSET) {
            __m256i v = _mm256_sub_epi32(isum[t], msum[t]);
            *acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(w->d, vda), _mm256_cvtepi32_ps(v), *acc[t]);
        } else {
            __m256 r = _mm256_fmadd_ps(_mm256_mul_ps(w->d, vda), _mm256_cvtepi32_ps(isum[t]), *acc[t]);
            *acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(w->dmin, vda), _mm256_cvtepi32_ps(msum[t]), r);
        }
    }
}

typedef void (*prep_fn)(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w);

INLINE void int_matmul(const kern_job *j, int r0, int r1, const int_desc *D, prep_fn prep) {
    const int nb = j->cols / (D->nq * 4);
    static const int TT = 4;
    wblk8 w __attribute__((aligned(32)));
    __m256 acc[TCHUNK];
    const __m256i unperm = _mm256_loadu_si256((const __m256i *)k_unperm8);
    for (int g = r0; g < r1; g += 8) {
        const uint8_t *rp[8];
        __m256i gidx;
        group_rows(j, g, rp, &gidx);
        const int nrow = r1 - g < 8 ? r1 - g : 8;
        for (int t0 = 0; t0 < j->ntok; t0 += TCHUNK) {
            const int nt = j->ntok - t0 < TCHUNK ? j->ntok - t0 : TCHUNK;
            for (int t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                prep(rp, gidx, (size_t)b * D->wblk, &w);
                const uint8_t *ab = j->A + (size_t)t0 * j->astride + (size_t)b * D->ablk;
                int t = 0;
                for (; t + TT <= nt; t += TT) {
                    const uint8_t *a[4];
                    __m256 *pa[4];
                    for (int u = 0; u < TT; u++) {
                        a[u] = ab + (size_t)(t + u) * j->astride;
                        pa[u] = &acc[t + u];
                    }
                    int_tile(D, &w, a, pa, 4);
                }
                for (; t < nt; t++) {
                    const uint8_t *a[1] = {ab + (size_t)t * j->astride};
                    __m256 *pa[1] = {&acc[t]};
                    int_tile(D, &w, a, pa, 1);
                }
            }
            for (int t = 0; t < nt; t++) {
                float out[8];
                _mm256_storeu_ps(out, _mm256_permutevar8x32_ps(acc[t], unperm));
                memcpy(j->Y + (size_t)(t0 + t) * j->ystride + g, out, (size_t)nrow * sizeof(float));
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Weight preparation (see kern_avx512.c for the bit layouts)          */

#define M0F SET(0x0F0F0F0F)

/* (x, x) int16 pair from an int32 lane holding a small value. */
INLINE __m256i pair2(__m256i x) {
    return _mm256_or_si256(_mm256_and_si256(x, SET(0xFFFF)), _mm256_slli_epi32(x, 16));
}

static void prep_q4_0(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    __m256i t[4];
    load_t8(rp, off + 2, t);
    for (int m = 0; m < 4; m++) {
        w->q[m] = _mm256_and_si256(t[m], M0F);
        w->q[4 + m] = _mm256_and_si256(_mm256_srli_epi32(t[m], 4), M0F);
    }
    w->d = half_lo(gather32(rp, gidx, off));
    w->mn[0] = SET(8);
}

static void prep_q8_0(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    __m256i t[4];
    load_t8(rp, off + 2, t);
    for (int m = 0; m < 4; m++) w->qs[m] = t[m];
    load_t8(rp, off + 18, t);
    for (int m = 0; m < 4; m++) w->qs[4 + m] = t[m];
    for (int k = 0; k < 8; k++) w->q[k] = _mm256_abs_epi8(w->qs[k]);
    w->d = half_lo(gather32(rp, gidx, off));
}

static const int32_t k_bit4_lut[8] = {0x00000000, 0x00000010, 0x00001000, 0x00001010,
                                      0x00100000, 0x00100010, 0x00101000, 0x00101010};

/* 4 bits of x at bit b (per lane) -> 4 bytes of 0x10 where set. */
INLINE __m256i bits4(__m256i x, int b) {
    const __m256i lut = _mm256_loadu_si256((const __m256i *)k_bit4_lut);
    __m256i v = _mm256_srli_epi32(x, b);
    /* vpermd uses 3 index bits: spread bits 0..2, then add bit 3 */
    __m256i lo = _mm256_permutevar8x32_epi32(lut, v);
    __m256i b3 = _mm256_and_si256(_mm256_slli_epi32(v, 25), SET(0x10000000));
    return _mm256_or_si256(lo, b3);
}

static void prep_q5_0(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    __m256i t[4];
    load_t8(rp, off + 6, t);
    __m256i qh = gather32(rp, gidx, off + 2);
    for (int m = 0; m < 4; m++) {
        w->q[m] = _mm256_or_si256(_mm256_and_si256(t[m], M0F), bits4(qh, 4 * m));
        w->q[4 + m] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(t[m], 4), M0F), bits4(qh, 16 + 4 * m));
    }
    w->d = half_lo(gather32(rp, gidx, off));
    w->mn[0] = SET(16);
}

INLINE void k4_scales(__m256i S0, __m256i S1, __m256i S2, wblk8 *w) {
    const __m256i m6 = SET(63), m4 = SET(15), m2 = SET(3);
    for (int s = 0; s < 4; s++) {
        w->sc[s] = pair2(_mm256_and_si256(_mm256_srli_epi32(S0, 8 * s), m6));
        w->mn[s] = pair2(_mm256_and_si256(_mm256_srli_epi32(S1, 8 * s), m6));
    }
    for (int i = 0; i < 4; i++) {
        __m256i sc = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(S2, 8 * i), m4),
                                     _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(S0, 8 * i + 6), m2), 4));
        __m256i mn = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(S2, 8 * i + 4), m4),
                                     _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(S1, 8 * i + 6), m2), 4));
        w->sc[4 + i] = pair2(sc);
        w->mn[4 + i] = pair2(mn);
    }
}

static void prep_q4_K(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    (void)gidx;
    __m256i t[4];
    load_t8(rp, off, t);
    w->d = half_lo(t[0]);
    w->dmin = half_lo(_mm256_srli_epi32(t[0], 16));
    k4_scales(t[1], t[2], t[3], w);
    for (int c = 0; c < 8; c++) {
        load_t8(rp, off + 16 + 16 * c, t);
        for (int m = 0; m < 4; m++) {
            const int q = 4 * c + m, jj = q / 8, mm = q % 8;
            w->q[16 * jj + mm] = _mm256_and_si256(t[m], M0F);
            w->q[16 * jj + 8 + mm] = _mm256_and_si256(_mm256_srli_epi32(t[m], 4), M0F);
        }
    }
}

INLINE __m256i bit_to_16(__m256i x, int b) {
    __m256i v = b <= 4 ? _mm256_slli_epi32(x, 4 - b) : _mm256_srli_epi32(x, b - 4);
    return _mm256_and_si256(v, SET(0x10101010));
}

static void prep_q5_K(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    (void)gidx;
    __m256i t[4], h[8];
    load_t8(rp, off, t);
    w->d = half_lo(t[0]);
    w->dmin = half_lo(_mm256_srli_epi32(t[0], 16));
    k4_scales(t[1], t[2], t[3], w);
    load_t8(rp, off + 16, h);
    load_t8(rp, off + 32, h + 4);
    for (int c = 0; c < 8; c++) {
        load_t8(rp, off + 48 + 16 * c, t);
        for (int m = 0; m < 4; m++) {
            const int q = 4 * c + m, jj = q / 8, mm = q % 8;
            w->q[16 * jj + mm] = _mm256_or_si256(_mm256_and_si256(t[m], M0F), bit_to_16(h[mm], 2 * jj));
            w->q[16 * jj + 8 + mm] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(t[m], 4), M0F),
                                                     bit_to_16(h[mm], 2 * jj + 1));
        }
    }
}

INLINE __m256i sbyte(__m256i x, int b) {
    return _mm256_srai_epi32(_mm256_slli_epi32(x, 24 - 8 * b), 24);
}

static void prep_q6_K(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    __m256i t[4], h[16], S[4];
    const __m256i m3 = SET(0x03030303);
    for (int c = 0; c < 4; c++) load_t8(rp, off + 128 + 16 * c, h + 4 * c);
    load_t8(rp, off + 192, S);
    w->d = half_lo(_mm256_srli_epi32(gather32(rp, gidx, off + 206), 16));
    for (int p = 0; p < 8; p++) {
        __m256i s0 = sbyte(S[(2 * p) / 4], (2 * p) % 4), s1 = sbyte(S[(2 * p + 1) / 4], (2 * p + 1) % 4);
        w->sc[2 * p] = pair2(s0);
        w->sc[2 * p + 1] = pair2(s1);
        __m256i lo = _mm256_and_si256(_mm256_slli_epi32(s0, 5), SET(0xFFFF));
        w->mn[p] = _mm256_or_si256(lo, _mm256_slli_epi32(s1, 21));
    }
    for (int c = 0; c < 8; c++) {
        load_t8(rp, off + 16 * c, t);
        for (int m = 0; m < 4; m++) {
            const int qd = 4 * c + m;
            const int n = qd / 16, i2 = (qd / 8) % 2, mm = qd % 8;
            const __m256i hw = h[8 * n + mm];
            for (int nib = 0; nib < 2; nib++) {
                const int i = 2 * nib + i2;
                __m256i lo = nib ? _mm256_srli_epi32(t[m], 4) : t[m];
                lo = _mm256_and_si256(lo, M0F);
                __m256i hi = _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hw, 2 * i), m3), 4);
                w->q[32 * n + 8 * i + mm] = _mm256_or_si256(lo, hi);
            }
        }
    }
}

static void prep_q3_K(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    (void)gidx;
    __m256i t[4], hm[8], qs[16];
    load_t8(rp, off + 94, t); /* qs[62..63], scales[0..11], d */
    const __m256i a0 = _mm256_or_si256(_mm256_srli_epi32(t[0], 16), _mm256_slli_epi32(t[1], 16));
    const __m256i a1 = _mm256_or_si256(_mm256_srli_epi32(t[1], 16), _mm256_slli_epi32(t[2], 16));
    const __m256i a2 = _mm256_or_si256(_mm256_srli_epi32(t[2], 16), _mm256_slli_epi32(t[3], 16));
    w->d = half_lo(_mm256_srli_epi32(t[3], 16));
    const __m256i k2 = SET(0x03030303);
    __m256i A[4];
    A[0] = _mm256_or_si256(_mm256_and_si256(a0, M0F), _mm256_slli_epi32(_mm256_and_si256(a2, k2), 4));
    A[1] = _mm256_or_si256(_mm256_and_si256(a1, M0F),
                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(a2, 2), k2), 4));
    A[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(a0, 4), M0F),
                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(a2, 4), k2), 4));
    A[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(a1, 4), M0F),
                           _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(a2, 6), k2), 4));
    for (int p = 0; p < 8; p++) {
        __m256i s[2];
        for (int h2 = 0; h2 < 2; h2++) {
            const int sidx = 2 * p + h2;
            s[h2] = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(A[sidx / 4], 8 * (sidx % 4)), SET(0xFF)),
                                     SET(32));
            w->sc[sidx] = pair2(s[h2]);
        }
        __m256i lo = _mm256_and_si256(_mm256_slli_epi32(s[0], 2), SET(0xFFFF));
        w->mn[p] = _mm256_or_si256(lo, _mm256_slli_epi32(s[1], 18));
    }
    load_t8(rp, off, hm);
    load_t8(rp, off + 16, hm + 4);
    for (int c = 0; c < 4; c++) load_t8(rp, off + 32 + 16 * c, qs + 4 * c);
    const __m256i k1 = SET(0x01010101);
    for (int n = 0; n < 2; n++)
        for (int jj = 0; jj < 4; jj++)
            for (int mm = 0; mm < 8; mm++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi32(qs[8 * n + mm], 2 * jj), k2);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi32(hm[mm], 4 * n + jj), k1);
                w->q[32 * n + 8 * jj + mm] = _mm256_or_si256(lo, _mm256_slli_epi32(hb, 2));
            }
}

static void prep_q2_K(const uint8_t *const rp[8], __m256i gidx, size_t off, wblk8 *w) {
    (void)gidx;
    __m256i t[4], S[4], qs[16];
    load_t8(rp, off, S);
    load_t8(rp, off + 68, t);
    w->d = half_lo(t[3]);
    w->dmin = half_lo(_mm256_srli_epi32(t[3], 16));
    const __m256i m4 = SET(15);
    for (int s = 0; s < 16; s++) w->sc[s] = pair2(_mm256_and_si256(_mm256_srli_epi32(S[s / 4], 8 * (s % 4)), m4));
    for (int p = 0; p < 8; p++) {
        const int s0 = 2 * p, s1 = 2 * p + 1;
        __m256i m0 = _mm256_and_si256(_mm256_srli_epi32(S[s0 / 4], 8 * (s0 % 4) + 4), m4);
        __m256i m1 = _mm256_and_si256(_mm256_srli_epi32(S[s1 / 4], 8 * (s1 % 4) + 4), m4);
        w->mn[p] = _mm256_or_si256(m0, _mm256_slli_epi32(m1, 16));
    }
    for (int c = 0; c < 4; c++) load_t8(rp, off + 16 + 16 * c, qs + 4 * c);
    const __m256i k3 = SET(0x03030303);
    for (int n = 0; n < 2; n++)
        for (int jj = 0; jj < 4; jj++)
            for (int mm = 0; mm < 8; mm++)
                w->q[32 * n + 8 * jj + mm] = _mm256_and_si256(_mm256_srli_epi32(qs[8 * n + mm], 2 * jj), k3);
}

/* ------------------------------------------------------------------ */
/* Activations of the integer types (same layouts as kern_avx512.c)     */

#define A80_BLK 40
static size_t a80_bytes(int cols) { return (size_t)(cols / 32) * A80_BLK; }
static void a80_prep(const void *xq, int cols, void *dst) {
    const block_q8_0 *x = xq;
    uint8_t *o = dst;
    for (int b = 0; b < cols / 32; b++, o += A80_BLK) {
        float d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x[b].d)));
        __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        int32_t sum = _mm_cvtsi128_si32(s) & 0xFFFF;
        memcpy(o, &d, 4);
        memcpy(o + 4, &sum, 4);
        memcpy(o + 8, x[b].qs, 32);
    }
}
static size_t a8k_bytes(int cols) { return (size_t)(cols / 256) * sizeof(block_q8_K); }

/*                            nq nsub npair mode      depth sign soff qoff ablk wblk */
static const int_desc D_Q4_0 = {8, 1, 1, MODE_OFFSET, 8, 0, 4, 8, A80_BLK, 18};
static const int_desc D_Q5_0 = {8, 1, 1, MODE_OFFSET, 4, 0, 4, 8, A80_BLK, 22};
static const int_desc D_Q8_0 = {8, 1, 0, MODE_OFFSET, 1, 1, 4, 8, A80_BLK, 34};
static const int_desc D_Q2_K = {64, 16, 8, MODE_MIN, 4, 0, 260, 4, 292, 84};
static const int_desc D_Q3_K = {64, 16, 8, MODE_OFFSET, 4, 0, 260, 4, 292, 110};
static const int_desc D_Q4_K = {64, 8, 8, MODE_MIN, 8, 0, 260, 4, 292, 144};
static const int_desc D_Q5_K = {64, 8, 8, MODE_MIN, 4, 0, 260, 4, 292, 176};
static const int_desc D_Q6_K = {64, 16, 8, MODE_OFFSET, 2, 0, 260, 4, 292, 210};

#define INT_MM(name, desc, prep) \
    static void mm_##name(const kern_job *j, int r0, int r1) { int_matmul(j, r0, r1, &desc, prep); }
INT_MM(q4_0, D_Q4_0, prep_q4_0)
INT_MM(q5_0, D_Q5_0, prep_q5_0)
INT_MM(q8_0, D_Q8_0, prep_q8_0)
INT_MM(q2_K, D_Q2_K, prep_q2_K)
INT_MM(q3_K, D_Q3_K, prep_q3_K)
INT_MM(q4_K, D_Q4_K, prep_q4_K)
INT_MM(q5_K, D_Q5_K, prep_q5_K)
INT_MM(q6_K, D_Q6_K, prep_q6_K)

/* ------------------------------------------------------------------ */
/* Float weights: 8-lane accumulators over chunks of 8 columns; a partial
 * last chunk is copied to a zero-padded buffer. */

enum { FT_F32, FT_F16, FT_BF16 };

INLINE __m256 wconv(int ft, const uint8_t *p) {
    if (ft == FT_F32) return _mm256_loadu_ps((const float *)(const void *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (ft == FT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE __m256 wload(int ft, const uint8_t *row, int k, int left) {
    const int es = ft == FT_F32 ? 4 : 2;
    if (left >= 8) return wconv(ft, row + (size_t)k * es);
    uint8_t tmp[32] = {0};
    memcpy(tmp, row + (size_t)k * es, (size_t)left * es);
    return wconv(ft, tmp);
}

INLINE __m256 aload(const uint8_t *act, int k, int left) {
    const float *a = (const float *)(const void *)act;
    if (left >= 8) return _mm256_loadu_ps(a + k);
    float tmp[8] = {0};
    memcpy(tmp, a + k, (size_t)left * 4);
    return _mm256_loadu_ps(tmp);
}

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE void ftile(int ft, const kern_job *j, int r, int t, const int R, const int T) {
    __m256 acc[4][4];
    const uint8_t *w[4], *a[4];
    for (int i = 0; i < R; i++) w[i] = j->W + (size_t)(r + i) * j->wstride;
    for (int u = 0; u < T; u++) a[u] = j->A + (size_t)(t + u) * j->astride;
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) acc[i][u] = _mm256_setzero_ps();
    for (int k = 0; k < j->cols; k += 8) {
        const int left = j->cols - k;
        __m256 wv[4], av[4];
        for (int i = 0; i < R; i++) wv[i] = wload(ft, w[i], k, left);
        for (int u = 0; u < T; u++) av[u] = aload(a[u], k, left);
        for (int i = 0; i < R; i++)
            for (int u = 0; u < T; u++) acc[i][u] = _mm256_fmadd_ps(wv[i], av[u], acc[i][u]);
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) j->Y[(size_t)(t + u) * j->ystride + r + i] = hsum8(acc[i][u]);
}

INLINE void float_matmul(int ft, const kern_job *j, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        int t = 0;
        for (; t + 4 <= j->ntok; t += 4) ftile(ft, j, r, t, 4, 4);
        for (; t < j->ntok; t++) ftile(ft, j, r, t, 4, 1);
    }
    for (; r < r1; r++) {
        int t = 0;
        for (; t + 4 <= j->ntok; t += 4) ftile(ft, j, r, t, 1, 4);
        for (; t < j->ntok; t++) ftile(ft, j, r, t, 1, 1);
    }
}

static void mm_f32(const kern_job *j, int r0, int r1) { float_matmul(FT_F32, j, r0, r1); }
static void mm_f16(const kern_job *j, int r0, int r1) { float_matmul(FT_F16, j, r0, r1); }
static void mm_bf16(const kern_job *j, int r0, int r1) { float_matmul(FT_BF16, j, r0, r1); }

static size_t af32_bytes(int cols) { return (size_t)cols * 4; }
static void af16_prep(const void *xq, int cols, void *dst) {
    const uint16_t *x = xq;
    float *o = dst;
    int k = 0;
    for (; k + 8 <= cols; k += 8)
        _mm256_storeu_ps(o + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + k))));
    for (; k < cols; k++) o[k] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x[k])));
}
static void abf16_prep(const void *xq, int cols, void *dst) {
    const uint16_t *x = xq;
    uint32_t *o = dst;
    for (int k = 0; k < cols; k++) o[k] = (uint32_t)x[k] << 16;
}

/* ------------------------------------------------------------------ */

static const kern_wops W_Q4_0 = {8, QT_Q8_0, a80_bytes, a80_prep, mm_q4_0};
static const kern_wops W_Q5_0 = {8, QT_Q8_0, a80_bytes, a80_prep, mm_q5_0};
static const kern_wops W_Q8_0 = {8, QT_Q8_0, a80_bytes, a80_prep, mm_q8_0};
static const kern_wops W_Q2_K = {8, QT_Q8_K, a8k_bytes, NULL, mm_q2_K};
static const kern_wops W_Q3_K = {8, QT_Q8_K, a8k_bytes, NULL, mm_q3_K};
static const kern_wops W_Q4_K = {8, QT_Q8_K, a8k_bytes, NULL, mm_q4_K};
static const kern_wops W_Q5_K = {8, QT_Q8_K, a8k_bytes, NULL, mm_q5_K};
static const kern_wops W_Q6_K = {8, QT_Q8_K, a8k_bytes, NULL, mm_q6_K};
static const kern_wops W_F32 = {4, QT_F32, af32_bytes, NULL, mm_f32};
static const kern_wops W_F16 = {4, QT_F16, af32_bytes, af16_prep, mm_f16};
static const kern_wops W_BF16 = {4, QT_BF16, af32_bytes, abf16_prep, mm_bf16};

const kern_wops *kern_avx2_wops(int wtype) {
    switch (wtype) {
    case QT_Q4_0: return &W_Q4_0;
    case QT_Q5_0: return &W_Q5_0;
    case QT_Q8_0: return &W_Q8_0;
    case QT_Q2_K: return &W_Q2_K;
    case QT_Q3_K: return &W_Q3_K;
    case QT_Q4_K: return &W_Q4_K;
    case QT_Q5_K: return &W_Q5_K;
    case QT_Q6_K: return &W_Q6_K;
    case QT_F32: return &W_F32;
    case QT_F16: return &W_F16;
    case QT_BF16: return &W_BF16;
    default: return NULL;
    }
}

/* ------------------------------------------------------------------ */
/* Activation quantizers, bit-exact with the reference                 */

INLINE float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

INLINE int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* 4 x 8 int32 (already within 0..255 or saturated as wanted) -> 32 bytes in
 * order; sat: signed saturation (packs), else values are 0..255 (packus). */
INLINE __m256i pack32(__m256i v0, __m256i v1, __m256i v2, __m256i v3, int sat) {
    __m256i p01 = sat ? _mm256_packs_epi32(v0, v1) : _mm256_packus_epi32(v0, v1);
    __m256i p23 = sat ? _mm256_packs_epi32(v2, v3) : _mm256_packus_epi32(v2, v3);
    __m256i b = sat ? _mm256_packs_epi16(p01, p23) : _mm256_packus_epi16(p01, p23);
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static void quant_q8_K(const float *x, void *q, int n) {
    block_q8_K *y = q;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int k = 0; k < QK_K; k += 8)
            vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absmask), vmax);
        const float amax = hmax8(vmax);
        if (!(amax != 0.0f)) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0;
        for (int k = 0; k < QK_K; k++)
            if (x[k] == amax || x[k] == -amax) {
                max = x[k];
                break;
            }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i c127 = _mm256_set1_epi32(127), lowb = _mm256_set1_epi32(0xFF);
        for (int k = 0; k < QK_K; k += 32) {
            __m256i v[4];
            for (int u = 0; u < 4; u++) {
                v[u] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + k + 8 * u))), c127);
                /* the stored byte, sign-extended, for the sums */
                v[u] = _mm256_srai_epi32(_mm256_slli_epi32(v[u], 24), 24);
            }
            y[b].bsums[k / 16] = (int16_t)hsum8i(_mm256_add_epi32(v[0], v[1]));
            y[b].bsums[k / 16 + 1] = (int16_t)hsum8i(_mm256_add_epi32(v[2], v[3]));
            __m256i bytes = pack32(_mm256_and_si256(v[0], lowb), _mm256_and_si256(v[1], lowb),
                                   _mm256_and_si256(v[2], lowb), _mm256_and_si256(v[3], lowb), 0);
            _mm256_storeu_si256((__m256i *)(y[b].qs + k), bytes);
        }
        y[b].d = 1 / iscale;
    }
}

static void quant_q8_0(const float *x, void *q, int n) {
    block_q8_0 *y = q;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int b = 0; b < n / QK8_0; b++, x += QK8_0) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int u = 0; u < 4; u++) {
            v[u] = _mm256_loadu_ps(x + 8 * u);
            m = _mm256_max_ps(_mm256_and_ps(v[u], absmask), m);
        }
        const float amax = hmax8(m);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[b].d = f32_to_fp16(d);
        const __m256 vid = _mm256_set1_ps(id);
        __m256i i[4];
        for (int u = 0; u < 4; u++) i[u] = _mm256_cvtps_epi32(_mm256_mul_ps(v[u], vid));
        _mm256_storeu_si256((__m256i *)y[b].qs, pack32(i[0], i[1], i[2], i[3], 1));
    }
}

static void quant_f16(const float *x, void *q, int n) {
    uint16_t *y = q;
    int k = 0;
    for (; k + 8 <= n; k += 8)
        _mm_storeu_si128((__m128i *)(y + k), _mm256_cvtps_ph(_mm256_loadu_ps(x + k), _MM_FROUND_TO_NEAREST_INT));
    for (; k < n; k++) y[k] = f32_to_fp16(x[k]);
}

static void quant_bf16(const float *x, void *q, int n) {
    uint16_t *y = q;
    int k = 0;
    const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
    for (; k + 16 <= n; k += 16) {
        __m256i r[2];
        for (int h = 0; h < 2; h++) {
            __m256i u = _mm256_loadu_si256((const __m256i *)(x + k + 8 * h));
            __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
            __m256i v = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF),
                                                             _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
            v = _mm256_srli_epi32(v, 16);
            __m256i qn = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(64));
            r[h] = _mm256_blendv_epi8(v, qn, nan);
        }
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r[0], r[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(y + k), p);
    }
    for (; k < n; k++) y[k] = f32_to_bf16(x[k]);
}

static void quant_f32(const float *x, void *q, int n) { memcpy(q, x, (size_t)n * sizeof(float)); }

kern_quant_fn kern_avx2_quant(int act_type) {
    switch (act_type) {
    case QT_Q8_K: return quant_q8_K;
    case QT_Q8_0: return quant_q8_0;
    case QT_F16: return quant_f16;
    case QT_BF16: return quant_bf16;
    case QT_F32: return quant_f32;
    default: return NULL;
    }
}

uint64_t kern_avx2_read(const void *p, size_t n) {
    const uint8_t *b = p;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 256) {
        s0 = _mm256_add_epi64(s0, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(b + i)),
                                                   _mm256_load_si256((const __m256i *)(b + i + 32))));
        s1 = _mm256_add_epi64(s1, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(b + i + 64)),
                                                   _mm256_load_si256((const __m256i *)(b + i + 96))));
        s2 = _mm256_add_epi64(s2, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(b + i + 128)),
                                                   _mm256_load_si256((const __m256i *)(b + i + 160))));
        s3 = _mm256_add_epi64(s3, _mm256_add_epi64(_mm256_load_si256((const __m256i *)(b + i + 192)),
                                                   _mm256_load_si256((const __m256i *)(b + i + 224))));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (uint64_t)_mm_cvtsi128_si64(h) + (uint64_t)_mm_extract_epi64(h, 1);
}

/* The peak probe of `moe bench --matmul` (see kern_avx512.c): without
 * VNNI an int8 dot is vpmaddubsw + vpmaddwd + vpaddd, 8 chains. */
uint64_t kern_avx2_int8_peak(uint64_t iters) {
    __m256i a0 = _mm256_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const __m256i w = _mm256_set1_epi8(1), x = _mm256_set1_epi8(2), one = _mm256_set1_epi16(1);
#define DOT4(a) a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), one))
    for (uint64_t i = 0; i < iters; i++) {
        DOT4(a0), DOT4(a1), DOT4(a2), DOT4(a3), DOT4(a4), DOT4(a5), DOT4(a6), DOT4(a7);
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), "+x"(a7));
    }
#undef DOT4
    int32_t v[8];
    _mm256_storeu_si256((__m256i *)v,
                        _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)),
                                         _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7))));
    volatile int32_t sink = v[0];
    (void)sink;
    return iters * 8 * 32;
}
