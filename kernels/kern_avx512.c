/* AVX-512 kernels (F/BW/VL/DQ + VNNI + BF16).  Compiled with AVX-512
 * flags; only called after kern_init() found the CPU and OS support it.
 *
 * Integer weight types: 16 weight rows are processed together, one row
 * per 32-bit lane.  A block of those 16 rows is first "prepared": the
 * quants are transposed so that a zmm holds 4 consecutive quants of each
 * row (as unsigned bytes, with a per-type offset to subtract), together
 * with per-lane sub-block scales.  Then for every token vpdpbusd
 * multiplies them by 4 activation bytes broadcast to all lanes: the
 * prepared block is reused from L1 by all tokens of the batch, and the
 * sub-block scale costs one multiply per 16 rows instead of per row.
 * Decode uses the same code with one token, so results are bitwise the
 * same for any batch (see kern_impl.h).
 *
 * Lane order: the 16-row transpose (load_t16) leaves row 4*(p%4) + p/4 in
 * lane p; it is its own inverse, and outputs are put back in row order by
 * one permute when stored. */
#include <immintrin.h>
#include <string.h>

#include "kern_impl.h"

#define INLINE static inline __attribute__((always_inline))
#define TCHUNK 64 /* tokens whose accumulators live on the stack at once */

/* ------------------------------------------------------------------ */
/* 16-row transposition                                                */

static const int32_t k_perm16[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

/* Row pointers of the group starting at r0: rows past the end repeat the
 * last row, so every lane reads valid memory; their results are dropped. */
static void group_rows(const kern_job *j, int r0, const uint8_t *rp[16], __m512i *gidx) {
    int32_t idx[16];
    for (int p = 0; p < 16; p++) {
        int r = r0 + p < j->rows ? r0 + p : j->rows - 1;
        rp[p] = j->W + (size_t)r * j->wstride;
    }
    /* gather offsets from rp[0], in lane order */
    for (int p = 0; p < 16; p++) idx[p] = (int32_t)(rp[k_perm16[p]] - rp[0]);
    *gidx = _mm512_loadu_si512(idx);
}

/* o[m], lane p = 32-bit word m of the 16 bytes at rp[row(p)] + off. */
INLINE void load_t16(const uint8_t *const rp[16], size_t off, __m512i o[4]) {
    __m512i z[4];
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(rp[4 * k] + off)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[4 * k + 1] + off)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[4 * k + 2] + off)), 2);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(rp[4 * k + 3] + off)), 3);
        z[k] = v;
    }
    __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    o[0] = _mm512_unpacklo_epi64(t0, t2);
    o[1] = _mm512_unpackhi_epi64(t0, t2);
    o[2] = _mm512_unpacklo_epi64(t1, t3);
    o[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* The 32-bit word at rp[row(p)] + off for every lane (one gather). */
INLINE __m512i gather32(const uint8_t *const rp[16], __m512i gidx, size_t off) {
    return _mm512_i32gather_epi32(gidx, (const void *)(rp[0] + off), 1);
}

/* 16 halves (low 16 bits of each lane) to floats. */
INLINE __m512 half_lo(__m512i v) {
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
}

/* ------------------------------------------------------------------ */
/* Prepared weight block and the integer engine                        */

typedef struct wblk {
    __m512i q[64];  /* q[k] lane p: quants 4k..4k+3 of the lane's row, u8 */
    __m512i sc[16]; /* int32 scale of each sub-block (types with NSUB > 1) */
    __m512i mn[8];  /* int16 pairs (m[2i], m[2i+1]): msum = sum m[s] * asum[s] */
    __m512 d, dmin; /* per-lane block scale, and min scale (MODE_MIN) */
} wblk;

/* How msum enters: subtracted from isum (quants stored with an offset),
 * or a separate "min" term with its own scale dmin. */
enum { MODE_OFFSET = 0, MODE_MIN = 1 };

/* Activation layout of one block for the engine: float d at byte 0, NPAIR
 * int16 pairs of sub-block sums at SOFF, the int8 quants at QOFF. */
typedef struct int_desc {
    int nq;      /* quads (4 quants) per block: 8 or 64 */
    int nsub;    /* sub-blocks with their own scale: 1, 8 or 16 */
    int npair;   /* msum pairs */
    int mode;    /* MODE_OFFSET or MODE_MIN */
    int soff, qoff, ablk; /* activation block: sums offset, quants offset, bytes */
    int wblk;    /* bytes of one weight block */
} int_desc;

/* Broadcast of the 4 activation bytes (or int16 pair) at p. */
INLINE __m512i bc32(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* One token tile of TT tokens against one prepared block; a[t] points at
 * token t's activation block, acc[t] is its accumulator. */
INLINE void int_tile(const int_desc *D, const wblk *w, const uint8_t *const *a, __m512 *const *acc,
                     const int TT) {
    __m512i isum[8], msum[8];
    for (int t = 0; t < TT; t++) isum[t] = msum[t] = _mm512_setzero_si512();
    if (D->nsub == 1) {
        /* two chains per token when alone, so dpbusd latency is hidden;
         * integer sums are exact, so the split changes nothing */
        __m512i alt[8];
        for (int t = 0; t < TT; t++) alt[t] = _mm512_setzero_si512();
        for (int k = 0; k < D->nq; k += 2) {
            for (int t = 0; t < TT; t++) {
                isum[t] = _mm512_dpbusd_epi32(isum[t], w->q[k], bc32(a[t] + D->qoff + 4 * k));
                alt[t] = _mm512_dpbusd_epi32(alt[t], w->q[k + 1], bc32(a[t] + D->qoff + 4 * k + 4));
            }
        }
        for (int t = 0; t < TT; t++) isum[t] = _mm512_add_epi32(isum[t], alt[t]);
    } else {
        const int qps = D->nq / D->nsub;
        for (int s = 0; s < D->nsub; s++) {
            __m512i dot[8], alt[8];
            for (int t = 0; t < TT; t++) dot[t] = alt[t] = _mm512_setzero_si512();
            for (int kk = 0; kk < qps; kk += 2) {
                const int k = s * qps + kk;
                for (int t = 0; t < TT; t++) {
                    dot[t] = _mm512_dpbusd_epi32(dot[t], w->q[k], bc32(a[t] + D->qoff + 4 * k));
                    alt[t] = _mm512_dpbusd_epi32(alt[t], w->q[k + 1], bc32(a[t] + D->qoff + 4 * k + 4));
                }
            }
            for (int t = 0; t < TT; t++)
                isum[t] = _mm512_add_epi32(isum[t],
                                           _mm512_mullo_epi32(_mm512_add_epi32(dot[t], alt[t]), w->sc[s]));
        }
    }
    for (int p = 0; p < D->npair; p++)
        for (int t = 0; t < TT; t++)
            msum[t] = _mm512_dpwssd_epi32(msum[t], w->mn[p], bc32(a[t] + D->soff + 4 * p));
    for (int t = 0; t < TT; t++) {
        float da;
        memcpy(&da, a[t], 4);
        const __m512 vda = _mm512_set1_ps(da);
        if (D->mode == MODE_OFFSET) {
            __m512i v = _mm512_sub_epi32(isum[t], msum[t]);
            *acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(w->d, vda), _mm512_cvtepi32_ps(v), *acc[t]);
        } else {
            __m512 r = _mm512_fmadd_ps(_mm512_mul_ps(w->d, vda), _mm512_cvtepi32_ps(isum[t]), *acc[t]);
            *acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(w->dmin, vda), _mm512_cvtepi32_ps(msum[t]), r);
        }
    }
}

typedef void (*prep_fn)(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w);

/* Rows [r0, r1) of an integer-type product: groups of 16 rows, blocks in
 * order, tokens in chunks of TCHUNK whose accumulators stay in L1. */
INLINE void int_matmul(const kern_job *j, int r0, int r1, const int_desc *D, prep_fn prep) {
    const int nb = j->cols / (D->nq * 4);
    static const int TT = 4;
    wblk w __attribute__((aligned(64)));
    __m512 acc[TCHUNK];
    const __m512i perm = _mm512_loadu_si512(k_perm16);
    for (int g = r0; g < r1; g += 16) {
        const uint8_t *rp[16];
        __m512i gidx;
        group_rows(j, g, rp, &gidx);
        const int nrow = r1 - g < 16 ? r1 - g : 16;
        const __mmask16 smask = (__mmask16)((1u << nrow) - 1);
        for (int t0 = 0; t0 < j->ntok; t0 += TCHUNK) {
            const int nt = j->ntok - t0 < TCHUNK ? j->ntok - t0 : TCHUNK;
            for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
            for (int b = 0; b < nb; b++) {
                prep(rp, gidx, (size_t)b * D->wblk, &w);
                const uint8_t *ab = j->A + (size_t)t0 * j->astride + (size_t)b * D->ablk;
                int t = 0;
                for (; t + TT <= nt; t += TT) {
                    const uint8_t *a[4];
                    __m512 *pa[4];
                    for (int u = 0; u < TT; u++) {
                        a[u] = ab + (size_t)(t + u) * j->astride;
                        pa[u] = &acc[t + u];
                    }
                    int_tile(D, &w, a, pa, 4);
                }
                for (; t < nt; t++) {
                    const uint8_t *a[1] = {ab + (size_t)t * j->astride};
                    __m512 *pa[1] = {&acc[t]};
                    int_tile(D, &w, a, pa, 1);
                }
            }
            for (int t = 0; t < nt; t++) {
                __m512 v = _mm512_permutexvar_ps(perm, acc[t]);
                _mm512_mask_storeu_ps(j->Y + (size_t)(t0 + t) * j->ystride + g, smask, v);
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Weight preparation, one function per type                           */

static const __m512i *mask0f(void) {
    static const int32_t m[16] = {0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F,
                                  0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F,
                                  0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F, 0x0F0F0F0F};
    return (const __m512i *)(const void *)m;
}
#define M0F _mm512_loadu_si512(mask0f())
#define SET(x) _mm512_set1_epi32((int)(x))

/* Q4_0: d, qs[16]; quant j in the low nibble of byte j, j+16 in the high. */
static void prep_q4_0(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    __m512i t[4];
    load_t16(rp, off + 2, t);
    for (int m = 0; m < 4; m++) {
        w->q[m] = _mm512_and_si512(t[m], M0F);
        w->q[4 + m] = _mm512_and_si512(_mm512_srli_epi32(t[m], 4), M0F);
    }
    w->d = half_lo(gather32(rp, gidx, off));
    w->mn[0] = SET(8);
}

/* Q8_0: d, qs[32] signed; stored here as qs + 128 (unsigned for vpdpbusd). */
static void prep_q8_0(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    __m512i t[4];
    const __m512i x80 = SET(0x80808080u);
    load_t16(rp, off + 2, t);
    for (int m = 0; m < 4; m++) w->q[m] = _mm512_xor_si512(t[m], x80);
    load_t16(rp, off + 18, t);
    for (int m = 0; m < 4; m++) w->q[4 + m] = _mm512_xor_si512(t[m], x80);
    w->d = half_lo(gather32(rp, gidx, off));
    w->mn[0] = SET(128);
}

/* 4 bits -> 4 bytes of 0x10 where the bit is set: the 5th bit of 4 quants. */
static const int32_t k_bit4_lut[16] = {
    0x00000000, 0x00000010, 0x00001000, 0x00001010, 0x00100000, 0x00100010, 0x00101000, 0x00101010,
    0x10000000, 0x10000010, 0x10001000, 0x10001010, 0x10100000, 0x10100010, 0x10101000, 0x10101010};

/* Q5_0: d, qh (bit j: 5th bit of quant j), qs[16] as Q4_0. */
static void prep_q5_0(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    __m512i t[4];
    const __m512i lut = _mm512_loadu_si512(k_bit4_lut);
    load_t16(rp, off + 6, t);
    __m512i qh = gather32(rp, gidx, off + 2);
    for (int m = 0; m < 4; m++) {
        /* vpermd only looks at the low 4 bits of each index */
        __m512i hlo = _mm512_permutexvar_epi32(_mm512_srli_epi32(qh, 4 * m), lut);
        __m512i hhi = _mm512_permutexvar_epi32(_mm512_srli_epi32(qh, 16 + 4 * m), lut);
        w->q[m] = _mm512_or_si512(_mm512_and_si512(t[m], M0F), hlo);
        w->q[4 + m] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(t[m], 4), M0F), hhi);
    }
    w->d = half_lo(gather32(rp, gidx, off));
    w->mn[0] = SET(16);
}

/* Scales and mins of Q4_K/Q5_K from the 12 packed bytes (words S0..S2):
 * sub-block s < 4: 6 low bits of bytes s and s+4; s >= 4: a nibble of
 * byte s+4 plus the top 2 bits of bytes s-4 / s. */
INLINE void k4_scales(__m512i S0, __m512i S1, __m512i S2, wblk *w) {
    const __m512i m6 = SET(63), m4 = SET(15), m2 = SET(3);
    for (int s = 0; s < 4; s++) {
        __m512i sc = _mm512_and_si512(_mm512_srli_epi32(S0, 8 * s), m6);
        __m512i mn = _mm512_and_si512(_mm512_srli_epi32(S1, 8 * s), m6);
        w->sc[s] = sc;
        w->mn[s] = _mm512_or_si512(mn, _mm512_slli_epi32(mn, 16));
    }
    for (int i = 0; i < 4; i++) {
        __m512i sc = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(S2, 8 * i), m4),
                                     _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(S0, 8 * i + 6), m2), 4));
        __m512i mn = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(S2, 8 * i + 4), m4),
                                     _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(S1, 8 * i + 6), m2), 4));
        w->sc[4 + i] = sc;
        w->mn[4 + i] = _mm512_or_si512(mn, _mm512_slli_epi32(mn, 16));
    }
}

/* Q4_K: d, dmin, scales[12], qs[128]: value 64j + l (l < 32) in the low
 * nibble of qs[32j + l], value 64j + 32 + l in its high nibble. */
static void prep_q4_K(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    (void)gidx;
    __m512i t[4];
    load_t16(rp, off, t);
    w->d = half_lo(t[0]);
    w->dmin = half_lo(_mm512_srli_epi32(t[0], 16));
    k4_scales(t[1], t[2], t[3], w);
    for (int c = 0; c < 8; c++) {
        load_t16(rp, off + 16 + 16 * c, t);
        for (int m = 0; m < 4; m++) {
            const int q = 4 * c + m, jj = q / 8, mm = q % 8;
            w->q[16 * jj + mm] = _mm512_and_si512(t[m], M0F);
            w->q[16 * jj + 8 + mm] = _mm512_and_si512(_mm512_srli_epi32(t[m], 4), M0F);
        }
    }
}

/* Byte-wise bit b of x moved to bit 4 (value 16), for the 5th quant bit. */
INLINE __m512i bit_to_16(__m512i x, int b) {
    const __m512i m10 = SET(0x10101010);
    __m512i v = b <= 4 ? _mm512_slli_epi32(x, 4 - b) : _mm512_srli_epi32(x, b - 4);
    return _mm512_and_si512(v, m10);
}

/* Q5_K: as Q4_K plus qh[32]: bit 2j of qh[l] is the 5th bit of value
 * 64j + l, bit 2j+1 that of value 64j + 32 + l. */
static void prep_q5_K(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    (void)gidx;
    __m512i t[4], h[8];
    load_t16(rp, off, t);
    w->d = half_lo(t[0]);
    w->dmin = half_lo(_mm512_srli_epi32(t[0], 16));
    k4_scales(t[1], t[2], t[3], w);
    load_t16(rp, off + 16, h);
    load_t16(rp, off + 32, h + 4);
    for (int c = 0; c < 8; c++) {
        load_t16(rp, off + 48 + 16 * c, t);
        for (int m = 0; m < 4; m++) {
            const int q = 4 * c + m, jj = q / 8, mm = q % 8;
            w->q[16 * jj + mm] = _mm512_or_si512(_mm512_and_si512(t[m], M0F), bit_to_16(h[mm], 2 * jj));
            w->q[16 * jj + 8 + mm] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(t[m], 4), M0F),
                                                     bit_to_16(h[mm], 2 * jj + 1));
        }
    }
}

/* Signed byte b of every lane of x, as int32. */
INLINE __m512i sbyte(__m512i x, int b) {
    return _mm512_srai_epi32(_mm512_slli_epi32(x, 24 - 8 * b), 24);
}

/* Q6_K: ql[128], qh[64], int8 scales[16], d.  In each half n of 128
 * values, value 128n + 32i + l (l < 32) has its low 4 bits in nibble i/2
 * of ql[64n + 32(i%2) + l] and its top 2 bits at bit 2i of qh[32n + l];
 * stored with +32, scale per 16 values. */
static void prep_q6_K(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    __m512i t[4], h[16], S[4];
    const __m512i m3 = SET(0x03030303);
    for (int c = 0; c < 4; c++) load_t16(rp, off + 128 + 16 * c, h + 4 * c);
    load_t16(rp, off + 192, S);
    w->d = half_lo(_mm512_srli_epi32(gather32(rp, gidx, off + 206), 16));
    for (int s = 0; s < 16; s++) w->sc[s] = sbyte(S[s / 4], s % 4);
    for (int p = 0; p < 8; p++) {
        __m512i lo = _mm512_and_si512(_mm512_slli_epi32(w->sc[2 * p], 5), SET(0xFFFF));
        w->mn[p] = _mm512_or_si512(lo, _mm512_slli_epi32(w->sc[2 * p + 1], 21));
    }
    for (int c = 0; c < 8; c++) {
        load_t16(rp, off + 16 * c, t);
        for (int m = 0; m < 4; m++) {
            const int qd = 4 * c + m;            /* ql word: 16n + 8(i%2) + mm */
            const int n = qd / 16, i2 = (qd / 8) % 2, mm = qd % 8;
            const __m512i hw = h[8 * n + mm];
            for (int nib = 0; nib < 2; nib++) {
                const int i = 2 * nib + i2;
                __m512i lo = nib ? _mm512_srli_epi32(t[m], 4) : t[m];
                lo = _mm512_and_si512(lo, M0F);
                __m512i hi = _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hw, 2 * i), m3), 4);
                w->q[32 * n + 8 * i + mm] = _mm512_or_si512(lo, hi);
            }
        }
    }
}

/* Q3_K: hmask[32], qs[64], scales[12] (16 6-bit values, minus 32), d.
 * Value 128n + 32j + l (l < 32): 2 bits at bit 2j of qs[32n + l], plus 4
 * if bit 4n + j of hmask[l] is set; the quant is that minus 4. */
static void prep_q3_K(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    (void)gidx;
    __m512i t[4], hm[8], qs[16];
    /* bytes 94..109: qs[62..63], scales[0..11], d (reading at 96 could run
     * past the end of the matrix) */
    load_t16(rp, off + 94, t);
    const __m512i a0 = _mm512_or_si512(_mm512_srli_epi32(t[0], 16), _mm512_slli_epi32(t[1], 16));
    const __m512i a1 = _mm512_or_si512(_mm512_srli_epi32(t[1], 16), _mm512_slli_epi32(t[2], 16));
    const __m512i a2 = _mm512_or_si512(_mm512_srli_epi32(t[2], 16), _mm512_slli_epi32(t[3], 16));
    w->d = half_lo(_mm512_srli_epi32(t[3], 16));
    const __m512i k2 = SET(0x03030303);
    __m512i A[4];
    A[0] = _mm512_or_si512(_mm512_and_si512(a0, M0F), _mm512_slli_epi32(_mm512_and_si512(a2, k2), 4));
    A[1] = _mm512_or_si512(_mm512_and_si512(a1, M0F),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(a2, 2), k2), 4));
    A[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(a0, 4), M0F),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(a2, 4), k2), 4));
    A[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(a1, 4), M0F),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(a2, 6), k2), 4));
    for (int s = 0; s < 16; s++)
        w->sc[s] = _mm512_sub_epi32(_mm512_and_si512(_mm512_srli_epi32(A[s / 4], 8 * (s % 4)), SET(0xFF)), SET(32));
    for (int p = 0; p < 8; p++) {
        __m512i lo = _mm512_and_si512(_mm512_slli_epi32(w->sc[2 * p], 2), SET(0xFFFF));
        w->mn[p] = _mm512_or_si512(lo, _mm512_slli_epi32(w->sc[2 * p + 1], 18));
    }
    load_t16(rp, off, hm);
    load_t16(rp, off + 16, hm + 4);
    for (int c = 0; c < 4; c++) load_t16(rp, off + 32 + 16 * c, qs + 4 * c);
    const __m512i k1 = SET(0x01010101);
    for (int n = 0; n < 2; n++)
        for (int jj = 0; jj < 4; jj++)
            for (int mm = 0; mm < 8; mm++) {
                __m512i lo = _mm512_and_si512(_mm512_srli_epi32(qs[8 * n + mm], 2 * jj), k2);
                __m512i hb = _mm512_and_si512(_mm512_srli_epi32(hm[mm], 4 * n + jj), k1);
                w->q[32 * n + 8 * jj + mm] = _mm512_or_si512(lo, _mm512_slli_epi32(hb, 2));
            }
}

/* Q2_K: scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
 * Value 128n + 32j + l (l < 32) is bits 2j..2j+1 of qs[32n + l]. */
static void prep_q2_K(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w) {
    (void)gidx;
    __m512i t[4], S[4], qs[16];
    load_t16(rp, off, S);
    load_t16(rp, off + 68, t); /* qs[52..63], d, dmin */
    w->d = half_lo(t[3]);
    w->dmin = half_lo(_mm512_srli_epi32(t[3], 16));
    const __m512i m4 = SET(15);
    for (int s = 0; s < 16; s++) w->sc[s] = _mm512_and_si512(_mm512_srli_epi32(S[s / 4], 8 * (s % 4)), m4);
    for (int p = 0; p < 8; p++) {
        const int s0 = 2 * p, s1 = 2 * p + 1;
        __m512i m0 = _mm512_and_si512(_mm512_srli_epi32(S[s0 / 4], 8 * (s0 % 4) + 4), m4);
        __m512i m1 = _mm512_and_si512(_mm512_srli_epi32(S[s1 / 4], 8 * (s1 % 4) + 4), m4);
        w->mn[p] = _mm512_or_si512(m0, _mm512_slli_epi32(m1, 16));
    }
    for (int c = 0; c < 4; c++) load_t16(rp, off + 16 + 16 * c, qs + 4 * c);
    const __m512i k3 = SET(0x03030303);
    for (int n = 0; n < 2; n++)
        for (int jj = 0; jj < 4; jj++)
            for (int mm = 0; mm < 8; mm++)
                w->q[32 * n + 8 * jj + mm] = _mm512_and_si512(_mm512_srli_epi32(qs[8 * n + mm], 2 * jj), k3);
}

/* ------------------------------------------------------------------ */
/* Activations of the integer types                                    */

/* Q8_0 blocks prepared for the engine: float d, pair (sum, 0), qs[32]. */
#define A80_BLK 40
static size_t a80_bytes(int cols) { return (size_t)(cols / 32) * A80_BLK; }
static void a80_prep(const void *xq, int cols, void *dst) {
    const block_q8_0 *x = xq;
    uint8_t *o = dst;
    for (int b = 0; b < cols / 32; b++, o += A80_BLK) {
        float d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x[b].d)));
        __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        /* sum of 32 int8: widen to int16 pairs with vpmaddubsw(1, q) */
        __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
        int32_t sum = _mm_cvtsi128_si32(s) & 0xFFFF; /* pair (sum, 0) */
        memcpy(o, &d, 4);
        memcpy(o + 4, &sum, 4);
        memcpy(o + 8, x[b].qs, 32);
    }
}
/* Q8_K is used as stored: d at 0, qs at 4, bsums (16 int16) at 260. */
static size_t a8k_bytes(int cols) { return (size_t)(cols / 256) * sizeof(block_q8_K); }

static const int_desc D_Q4_0 = {8, 1, 1, MODE_OFFSET, 4, 8, A80_BLK, 18};
static const int_desc D_Q5_0 = {8, 1, 1, MODE_OFFSET, 4, 8, A80_BLK, 22};
static const int_desc D_Q8_0 = {8, 1, 1, MODE_OFFSET, 4, 8, A80_BLK, 34};
static const int_desc D_Q2_K = {64, 16, 8, MODE_MIN, 260, 4, 292, 84};
static const int_desc D_Q3_K = {64, 16, 8, MODE_OFFSET, 260, 4, 292, 110};
static const int_desc D_Q4_K = {64, 8, 8, MODE_MIN, 260, 4, 292, 144};
static const int_desc D_Q5_K = {64, 8, 8, MODE_MIN, 260, 4, 292, 176};
static const int_desc D_Q6_K = {64, 16, 8, MODE_OFFSET, 260, 4, 292, 210};

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
/* Float weights: F32, F16 (activations widened to f32), BF16 (vdpbf16ps)
 * One 16-lane accumulator per (row, token) over column chunks of 16 (32
 * for BF16); the last chunk is masked; then a fixed reduction. */

enum { FT_F32, FT_F16, FT_BF16 };

INLINE __m512 fload_w(int ft, const uint8_t *row, int k, __mmask32 m) {
    if (ft == FT_F32) return _mm512_maskz_loadu_ps((__mmask16)m, row + 4 * (size_t)k);
    if (ft == FT_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((__mmask16)m, row + 2 * (size_t)k));
    return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(m, row + 2 * (size_t)k));
}

INLINE __m512 fload_a(int ft, const uint8_t *act, int k, __mmask32 m) {
    if (ft == FT_BF16) return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(m, act + 2 * (size_t)k));
    return _mm512_maskz_loadu_ps((__mmask16)m, act + 4 * (size_t)k);
}

INLINE __m512 fmac(int ft, __m512 acc, __m512 w, __m512 a) {
    if (ft == FT_BF16) return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)w);
    return _mm512_fmadd_ps(w, a, acc);
}

/* R rows x T tokens, all columns. */
INLINE void ftile(int ft, const kern_job *j, int r, int t, const int R, const int T) {
    const int step = ft == FT_BF16 ? 32 : 16;
    __m512 acc[4][4];
    const uint8_t *w[4], *a[4];
    for (int i = 0; i < R; i++) w[i] = j->W + (size_t)(r + i) * j->wstride;
    for (int u = 0; u < T; u++) a[u] = j->A + (size_t)(t + u) * j->astride;
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++) acc[i][u] = _mm512_setzero_ps();
    for (int k = 0; k < j->cols; k += step) {
        const int left = j->cols - k;
        const __mmask32 m = left >= step ? 0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
        __m512 wv[4], av[4];
        for (int i = 0; i < R; i++) wv[i] = fload_w(ft, w[i], k, m);
        for (int u = 0; u < T; u++) av[u] = fload_a(ft, a[u], k, m);
        for (int i = 0; i < R; i++)
            for (int u = 0; u < T; u++) acc[i][u] = fmac(ft, acc[i][u], wv[i], av[u]);
    }
    for (int i = 0; i < R; i++)
        for (int u = 0; u < T; u++)
            j->Y[(size_t)(t + u) * j->ystride + r + i] = _mm512_reduce_add_ps(acc[i][u]);
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
static size_t abf16_bytes(int cols) { return (size_t)cols * 2; }
/* F16 activations are widened once so the inner loop loads floats. */
static void af16_prep(const void *xq, int cols, void *dst) {
    const uint16_t *x = xq;
    float *o = dst;
    int k = 0;
    for (; k + 16 <= cols; k += 16)
        _mm512_storeu_ps(o + k, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + k))));
    if (k < cols) {
        __mmask16 m = (__mmask16)((1u << (cols - k)) - 1);
        _mm512_mask_storeu_ps(o + k, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + k)));
    }
}

/* ------------------------------------------------------------------ */
/* Tables                                                              */

static const kern_wops W_Q4_0 = {16, QT_Q8_0, a80_bytes, a80_prep, mm_q4_0};
static const kern_wops W_Q5_0 = {16, QT_Q8_0, a80_bytes, a80_prep, mm_q5_0};
static const kern_wops W_Q8_0 = {16, QT_Q8_0, a80_bytes, a80_prep, mm_q8_0};
static const kern_wops W_Q2_K = {16, QT_Q8_K, a8k_bytes, NULL, mm_q2_K};
static const kern_wops W_Q3_K = {16, QT_Q8_K, a8k_bytes, NULL, mm_q3_K};
static const kern_wops W_Q4_K = {16, QT_Q8_K, a8k_bytes, NULL, mm_q4_K};
static const kern_wops W_Q5_K = {16, QT_Q8_K, a8k_bytes, NULL, mm_q5_K};
static const kern_wops W_Q6_K = {16, QT_Q8_K, a8k_bytes, NULL, mm_q6_K};
static const kern_wops W_F32 = {4, QT_F32, af32_bytes, NULL, mm_f32};
static const kern_wops W_F16 = {4, QT_F16, af32_bytes, af16_prep, mm_f16};
static const kern_wops W_BF16 = {4, QT_BF16, abf16_bytes, NULL, mm_bf16};

const kern_wops *kern_avx512_wops(int wtype) {
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
/* Activation quantizers, bit-exact with the reference from_float       */

/* Q8_K (quant_row_q8_K): the signed value of largest magnitude (first on
 * ties) sets iscale = -127/max; quants are nearest-even of iscale*x,
 * capped at 127, stored as their low byte (a NaN gives 0 either way). */
static void quant_q8_K(const float *x, void *q, int n) {
    block_q8_K *y = q;
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        __m512 vmax = _mm512_setzero_ps();
        for (int k = 0; k < QK_K; k += 16) /* maxps keeps the 2nd operand on NaN */
            vmax = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + k), absmask), vmax);
        const float amax = _mm512_reduce_max_ps(vmax);
        if (!(amax != 0.0f)) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0;
        const __m512 va = _mm512_set1_ps(amax);
        for (int k = 0; k < QK_K; k += 16) {
            __mmask16 m = _mm512_cmp_ps_mask(_mm512_and_ps(_mm512_loadu_ps(x + k), absmask), va, _CMP_EQ_OQ);
            if (m) {
                max = x[k + __builtin_ctz(m)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m512 vs = _mm512_set1_ps(iscale);
        const __m512i c127 = _mm512_set1_epi32(127);
        for (int k = 0; k < QK_K; k += 16) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + k)));
            v = _mm512_min_epi32(v, c127);
            __m128i b8 = _mm512_cvtepi32_epi8(v); /* low byte */
            _mm_storeu_si128((__m128i *)(y[b].qs + k), b8);
            y[b].bsums[k / 16] = (int16_t)_mm512_reduce_add_epi32(_mm512_cvtepi8_epi32(b8));
        }
        y[b].d = 1 / iscale;
    }
}

/* Q8_0 (quant_row_q8_0, x86 activation rounding): d = amax/127, quants
 * nearest-even of x * (127/amax) with signed saturation (NaN -> -128). */
static void quant_q8_0(const float *x, void *q, int n) {
    block_q8_0 *y = q;
    const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    for (int b = 0; b < n / QK8_0; b++, x += QK8_0) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        __m512 m = _mm512_max_ps(_mm512_and_ps(v0, absmask), _mm512_setzero_ps());
        m = _mm512_max_ps(_mm512_and_ps(v1, absmask), m);
        const float amax = _mm512_reduce_max_ps(m);
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[b].d = f32_to_fp16(d);
        const __m512 vid = _mm512_set1_ps(id);
        __m128i q0 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)));
        __m128i q1 = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(v1, vid)));
        _mm_storeu_si128((__m128i *)y[b].qs, q0);
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), q1);
    }
}

/* F16: vcvtps2ph with round-to-nearest-even, as the reference. */
static void quant_f16(const float *x, void *q, int n) {
    uint16_t *y = q;
    int k = 0;
    for (; k + 16 <= n; k += 16)
        _mm256_storeu_si256((__m256i *)(y + k),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; k < n; k++) y[k] = f32_to_fp16(x[k]);
}

/* BF16: the reference's integer rounding (RNE, NaN made quiet), which
 * unlike vcvtneps2bf16 keeps subnormals. */
static void quant_bf16(const float *x, void *q, int n) {
    uint16_t *y = q;
    int k = 0;
    const __m512i abs = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    for (; k + 16 <= n; k += 16) {
        __m512i u = _mm512_loadu_si512(x + k);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF),
                                                          _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
        r = _mm512_srli_epi32(r, 16);
        r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(64)));
        _mm256_storeu_si256((__m256i *)(y + k), _mm512_cvtepi32_epi16(r));
    }
    for (; k < n; k++) y[k] = f32_to_bf16(x[k]);
}

static void quant_f32(const float *x, void *q, int n) { memcpy(q, x, (size_t)n * sizeof(float)); }

kern_quant_fn kern_avx512_quant(int act_type) {
    switch (act_type) {
    case QT_Q8_K: return quant_q8_K;
    case QT_Q8_0: return quant_q8_0;
    case QT_F16: return quant_f16;
    case QT_BF16: return quant_bf16;
    case QT_F32: return quant_f32;
    default: return NULL;
    }
}

/* ------------------------------------------------------------------ */

uint64_t kern_avx512_read(const void *p, size_t n) {
    const uint8_t *b = p;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 256) {
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(b + i));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(b + i + 64));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(b + i + 128));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(b + i + 192));
    }
    return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}
