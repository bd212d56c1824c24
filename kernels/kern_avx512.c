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
#include <stddef.h>
#include <string.h>

#include "kern_impl.h"
#include "kern_simd.h"

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
 * or a separate "min" term with its own scale dmin, accumulated apart and
 * subtracted at the end (llama.cpp's repacked Q4_K gemv); MODE_GEMM is
 * that, but in four steps per super-block, one per pair of sub-blocks
 * (llama.cpp's repacked Q4_K gemm; Q4_K slot order only). */
enum { MODE_OFFSET = 0, MODE_MIN = 1, MODE_GEMM = 2 };

/* Offsets of the 32-value sums and of d in an akq activation block
 * (defined with it below, checked there). */
enum { AKQ_SOFF = 288, AKQ_DOFF = 304 };

/* Activation layout of one block for the engine: float d at DOFF, NPAIR
 * int16 pairs of sub-block sums at SOFF, the int8 quants at QOFF. */
typedef struct int_desc {
    int nq;      /* quads (4 quants) per block: 8 or 64 */
    int nsub;    /* sub-blocks with their own scale: 1, 8 or 16 */
    int npair;   /* msum pairs */
    int mode;    /* MODE_OFFSET or MODE_MIN */
    int doff, soff, qoff, ablk; /* activation block: offsets of d, sums, quants; bytes */
    int wblk;    /* bytes of one weight block */
} int_desc;

/* Broadcast of the 4 activation bytes (or int16 pair) at p; p is 4-byte
 * aligned (activation blocks are), so the load folds into the multiply as
 * an embedded broadcast. */
INLINE __m512i bc32(const uint8_t *p) {
    return _mm512_set1_epi32(*(const int32_t *)(const void *)p);
}

/* One token tile of TT tokens against one prepared block; a[t] points at
 * token t's activation block, acc[t] is its accumulator. */
INLINE void int_tile(const int_desc *D, const wblk *w, const uint8_t *const *a, __m512 (*const *acc),
                     const int TT) {
    __m512i isum[8], msum[8];
    #pragma GCC unroll 16
    for (int t = 0; t < TT; t++) isum[t] = msum[t] = _mm512_setzero_si512();
    if (D->nsub == 1) {
        /* two chains per token when alone, so dpbusd latency is hidden;
         * integer sums are exact, so the split changes nothing */
        __m512i alt[8];
        #pragma GCC unroll 16
        for (int t = 0; t < TT; t++) alt[t] = _mm512_setzero_si512();
        #pragma GCC unroll 16
        for (int k = 0; k < D->nq; k += 2) {
            #pragma GCC unroll 16
            for (int t = 0; t < TT; t++) {
                isum[t] = _mm512_dpbusd_epi32(isum[t], w->q[k], bc32(a[t] + D->qoff + 4 * k));
                alt[t] = _mm512_dpbusd_epi32(alt[t], w->q[k + 1], bc32(a[t] + D->qoff + 4 * k + 4));
            }
        }
        #pragma GCC unroll 16
        for (int t = 0; t < TT; t++) isum[t] = _mm512_add_epi32(isum[t], alt[t]);
    } else {
        const int qps = D->nq / D->nsub;
        #pragma GCC unroll 16
        for (int s = 0; s < D->nsub; s++) {
            __m512i dot[8], alt[8];
            #pragma GCC unroll 16
            for (int t = 0; t < TT; t++) dot[t] = alt[t] = _mm512_setzero_si512();
            #pragma GCC unroll 16
            for (int kk = 0; kk < qps; kk += 2) {
                const int k = s * qps + kk;
                #pragma GCC unroll 16
                for (int t = 0; t < TT; t++) {
                    dot[t] = _mm512_dpbusd_epi32(dot[t], w->q[k], bc32(a[t] + D->qoff + 4 * k));
                    alt[t] = _mm512_dpbusd_epi32(alt[t], w->q[k + 1], bc32(a[t] + D->qoff + 4 * k + 4));
                }
            }
            #pragma GCC unroll 16
            for (int t = 0; t < TT; t++)
                isum[t] = _mm512_add_epi32(isum[t],
                                           _mm512_mullo_epi32(_mm512_add_epi32(dot[t], alt[t]), w->sc[s]));
        }
    }
    #pragma GCC unroll 16
    for (int p = 0; p < D->npair; p++)
        #pragma GCC unroll 16
        for (int t = 0; t < TT; t++)
            msum[t] = _mm512_dpwssd_epi32(msum[t], w->mn[p], bc32(a[t] + D->soff + 4 * p));
    #pragma GCC unroll 16
    for (int t = 0; t < TT; t++) {
        float da;
        memcpy(&da, a[t] + D->doff, 4);
        const __m512 vda = _mm512_set1_ps(da);
        if (D->mode == MODE_OFFSET) {
            __m512i v = _mm512_sub_epi32(isum[t], msum[t]);
            acc[t][0] = _mm512_fmadd_ps(_mm512_mul_ps(w->d, vda), _mm512_cvtepi32_ps(v), acc[t][0]);
        } else {
            /* llama.cpp's repacked gemv order: two accumulators, the min
             * one subtracted when the row is done (int_matmul) */
            acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(w->d, vda), acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum[t]), _mm512_mul_ps(w->dmin, vda), acc[t][1]);
        }
    }
}

/* Q4_K-layout blocks (8 sub-blocks of 32 with their own scale) in
 * MODE_MIN, TT tokens at once with one vpdpbusd chain per token, so that
 * dot, isum and a weight vector (2 TT + 1 zmm) stay in registers: each
 * weight vector is loaded once per TT tokens and every activation word is
 * an embedded broadcast.  Same integers and float steps as int_tile. */
INLINE void k8_tile(const int_desc *D, const wblk *w, const uint8_t *ab, size_t astride, __m512 (*acc)[2], const int TT) {
    __m512i isum[8], dot[8];
    #pragma GCC unroll 8
    for (int t = 0; t < TT; t++) isum[t] = _mm512_setzero_si512();
    #pragma GCC unroll 1
    for (int g = 0; g < 8; g++) {
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) dot[t] = _mm512_setzero_si512();
        #pragma GCC unroll 8
        for (int kk = 0; kk < 8; kk++) {
            const int k = 8 * g + kk;
            const __m512i wq = _mm512_load_si512(&w->q[k]);
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) dot[t] = _mm512_dpbusd_epi32(dot[t], wq, bc32(ab + (size_t)t * astride + D->qoff + 4 * k));
        }
        const __m512i sc = _mm512_load_si512(&w->sc[g]);
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(dot[t], sc));
    }
    #pragma GCC unroll 8
    for (int t = 0; t < TT; t++) {
        const uint8_t *a = ab + (size_t)t * astride;
        __m512i m = _mm512_setzero_si512();
        #pragma GCC unroll 4
        for (int p = 0; p < 4; p++) m = _mm512_dpwssd_epi32(m, w->mn[p], bc32(a + D->soff + 4 * p));
        float da;
        memcpy(&da, a + D->doff, 4);
        const __m512 vda = _mm512_set1_ps(da);
        acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(w->d, vda), acc[t][0]);
        acc[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(w->dmin, vda), acc[t][1]);
    }
}

/* MODE_GEMM (llama.cpp's repacked Q4_K gemm: per pair of sub-blocks 2j,
 * 2j+1 = k4-order slots {0,2}, {1,3}, {4,6}, {5,7}, acc += isum * d*da
 * and acc_m += msum * dmin*da) for TT <= 4 tokens (more spills registers),
 * a pair at a time: the two sub-blocks' dot chains interleave (2 TT
 * independent chains), so the vpdpbusd stream never waits on one chain,
 * all unrolled so activation words are constant displacements into the
 * akq block (hot-cache Q4_K 256x7168 at 32 tokens, 1 thread: 63% of the
 * vpdpbusd peak, where one sub-block at a time for 8 tokens gave 54%). */
INLINE void k4_pair_tile(const wblk *w, const uint8_t *ab, size_t astride, __m512 (*acc)[2], const int TT) {
    static const int slots[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    __m512 dd[4], dm[4]; /* d * da and dmin * da, formed once per block */
    #pragma GCC unroll 8
    for (int t = 0; t < TT; t++) {
        float da;
        memcpy(&da, ab + (size_t)t * astride + AKQ_DOFF, 4);
        dd[t] = _mm512_mul_ps(w->d, _mm512_set1_ps(da));
        dm[t] = _mm512_mul_ps(w->dmin, _mm512_set1_ps(da));
    }
    #pragma GCC unroll 4
    for (int jp = 0; jp < 4; jp++) {
        const int g0 = slots[jp][0], g1 = slots[jp][1];
        const __m512i *q0 = &w->q[8 * g0], *q1 = &w->q[8 * g1];
        const int o0 = 32 * g0, o1 = 32 * g1;
        __m512i x[4], y[4];
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) x[t] = y[t] = _mm512_setzero_si512();
        #pragma GCC unroll 8
        for (int kk = 0; kk < 8; kk++) {
            const __m512i u = _mm512_load_si512(q0 + kk), v = _mm512_load_si512(q1 + kk);
            #pragma GCC unroll 8
            for (int t = 0; t < TT; t++) {
                const uint8_t *a = ab + (size_t)t * astride;
                x[t] = _mm512_dpbusd_epi32(x[t], u, bc32(a + o0 + 4 * kk));
                y[t] = _mm512_dpbusd_epi32(y[t], v, bc32(a + o1 + 4 * kk));
            }
        }
        const __m512i s0 = _mm512_load_si512(&w->sc[g0]), s1 = _mm512_load_si512(&w->sc[g1]);
        const __m512i mn = _mm512_load_si512(&w->mn[jp]);
        #pragma GCC unroll 8
        for (int t = 0; t < TT; t++) {
            const uint8_t *a = ab + (size_t)t * astride;
            const __m512i is = _mm512_add_epi32(_mm512_mullo_epi32(x[t], s0), _mm512_mullo_epi32(y[t], s1));
            const __m512i m = _mm512_dpwssd_epi32(_mm512_setzero_si512(), mn, bc32(a + AKQ_SOFF + 4 * jp));
            acc[t][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), dd[t], acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), dm[t], acc[t][1]);
        }
    }
}

/* All nt tokens of a chunk against one prepared Q4_K-layout block. */
static void k8_block(const int_desc *D, const wblk *w, const uint8_t *ab, size_t astride, __m512 (*acc)[2], int nt) {
    int t = 0;
    if (D->mode == MODE_GEMM) { /* only D_Q4_K_GEMM: akq activation blocks */
        for (; t + 4 <= nt; t += 4) k4_pair_tile(w, ab + (size_t)t * astride, astride, acc + t, 4);
        if (t + 2 <= nt) k4_pair_tile(w, ab + (size_t)t * astride, astride, acc + t, 2), t += 2;
        if (t < nt) k4_pair_tile(w, ab + (size_t)t * astride, astride, acc + t, 1);
        return;
    }
    for (; t + 8 <= nt; t += 8) k8_tile(D, w, ab + (size_t)t * astride, astride, acc + t, 8);
    if (t + 4 <= nt) k8_tile(D, w, ab + (size_t)t * astride, astride, acc + t, 4), t += 4;
    if (t + 2 <= nt) k8_tile(D, w, ab + (size_t)t * astride, astride, acc + t, 2), t += 2;
    if (t < nt) k8_tile(D, w, ab + (size_t)t * astride, astride, acc + t, 1);
}

typedef void (*prep_fn)(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w);
static void prep_q4_K(const uint8_t *const rp[16], __m512i gidx, size_t off, wblk *w);
static void prep_q4_K_full(const uint8_t *base, size_t stride, size_t off, wblk *w);

/* Rows [r0, r1) of an integer-type product: groups of 16 rows, blocks in
 * order, tokens in chunks of TCHUNK whose accumulators stay in L1. */
INLINE void int_matmul(const kern_job *j, int r0, int r1, const int_desc *D, prep_fn prep) {
    const int nb = j->cols / (D->nq * 4);
    static const int TT = 4;
    wblk w __attribute__((aligned(64)));
    __m512 acc[TCHUNK][2]; /* [1]: the min accumulator of MODE_MIN */
    const __m512i perm = _mm512_loadu_si512(k_perm16);
    for (int g = r0; g < r1; g += 16) {
        const uint8_t *rp[16];
        __m512i gidx;
        group_rows(j, g, rp, &gidx);
        const int nrow = r1 - g < 16 ? r1 - g : 16;
        const __mmask16 smask = (__mmask16)((1u << nrow) - 1);
        for (int t0 = 0; t0 < j->ntok; t0 += TCHUNK) {
            const int nt = j->ntok - t0 < TCHUNK ? j->ntok - t0 : TCHUNK;
            for (int t = 0; t < nt; t++) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
            pf_stream pf = pf_start(j, rp[0], (size_t)nrow * j->wstride, nb);
            for (int b = 0; b < nb; b++) {
                pf_step_l2(&pf);
                if (prep == prep_q4_K && nrow == 16 && g + 16 <= j->rows)
                    prep_q4_K_full(rp[0], j->wstride, (size_t)b * D->wblk, &w);
                else
                    prep(rp, gidx, (size_t)b * D->wblk, &w);
                const uint8_t *ab = j->A + (size_t)t0 * j->astride + (size_t)b * D->ablk;
                if (D->nsub == 8) { /* Q4_K / Q5_K layout: the register-friendly tiles */
                    k8_block(D, &w, ab, j->astride, acc, nt);
                    continue;
                }
                int t = 0;
                for (; t + TT <= nt; t += TT) {
                    const uint8_t *a[4];
                    __m512 *pa[4];
                    for (int u = 0; u < TT; u++) {
                        a[u] = ab + (size_t)(t + u) * j->astride;
                        pa[u] = acc[t + u];
                    }
                    int_tile(D, &w, a, pa, 4);
                }
                for (; t < nt; t++) {
                    const uint8_t *a[1] = {ab + (size_t)t * j->astride};
                    __m512 *pa[1] = {acc[t]};
                    int_tile(D, &w, a, pa, 1);
                }
            }
            for (int t = 0; t < nt; t++) {
                __m512 v = D->mode != MODE_OFFSET ? _mm512_sub_ps(acc[t][0], acc[t][1]) : acc[t][0];
                v = _mm512_permutexvar_ps(perm, v);
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

/* Q4_K/Q5_K: activations are stored in "kernel order": in each half of
 * 128 values, values 0..31, 64..95, 32..63, 96..127, so that the low
 * nibbles of 64 consecutive qs bytes meet 64 consecutive activation bytes
 * (see akq_prep).  Interleaved slot g (8 quads) holds sub-block k4_sb[g]. */
static const int k4_sb[8] = {0, 2, 1, 3, 4, 6, 5, 7};

/* Scales and mins of Q4_K/Q5_K from the 12 packed bytes (words S0..S2):
 * sub-block s < 4: 6 low bits of bytes s and s+4; s >= 4: a nibble of
 * byte s+4 plus the top 2 bits of bytes s-4 / s.  sc in slot order, mins
 * as natural-order int16 pairs (they meet the 32-value activation sums). */
INLINE void k4_scales(__m512i S0, __m512i S1, __m512i S2, wblk *w) {
    const __m512i m6 = SET(63), m4 = SET(15), m2 = SET(3);
    __m512i sc[8], mn[8];
    for (int s = 0; s < 4; s++) {
        sc[s] = _mm512_and_si512(_mm512_srli_epi32(S0, 8 * s), m6);
        mn[s] = _mm512_and_si512(_mm512_srli_epi32(S1, 8 * s), m6);
    }
    for (int i = 0; i < 4; i++) {
        sc[4 + i] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(S2, 8 * i), m4),
                                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(S0, 8 * i + 6), m2), 4));
        mn[4 + i] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(S2, 8 * i + 4), m4),
                                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(S1, 8 * i + 6), m2), 4));
    }
    for (int g = 0; g < 8; g++) w->sc[g] = sc[k4_sb[g]];
    for (int p = 0; p < 4; p++) w->mn[p] = _mm512_or_si512(mn[2 * p], _mm512_slli_epi32(mn[2 * p + 1], 16));
}

/* Kernel-order slot of the quad in the low (nib 0) or high nibble of qs
 * word q (value 64j + 4mm, +32 for the high nibble; j = q/8, mm = q%8). */
INLINE int k4_slot(int q, int nib) {
    const int j = q / 8, mm = q % 8;
    return 32 * (j / 2) + 16 * nib + 8 * (j % 2) + mm;
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
            const int q = 4 * c + m;
            w->q[k4_slot(q, 0)] = _mm512_and_si512(t[m], M0F);
            w->q[k4_slot(q, 1)] = _mm512_and_si512(_mm512_srli_epi32(t[m], 4), M0F);
        }
    }
}

/* load_t16 for 16 consecutive rows `stride` bytes apart (a full group),
 * written out so that the compiler keeps everything in registers: row
 * addresses are base + {0,1,2,3} * stride, the base moving 4 rows on. */
INLINE void load_t16s(const uint8_t *base, size_t stride, __m512i o[4]) {
    const size_t s3 = 3 * stride;
    __m512i z[4];
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const uint8_t *b = base + 4 * (size_t)k * stride;
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)b));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + stride)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + 2 * stride)), 2);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(b + s3)), 3);
        z[k] = v;
    }
    __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    o[0] = _mm512_unpacklo_epi64(t0, t2);
    o[1] = _mm512_unpackhi_epi64(t0, t2);
    o[2] = _mm512_unpacklo_epi64(t1, t3);
    o[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* prep_q4_K for a full group of 16 consecutive rows from `base`. */
static void prep_q4_K_full(const uint8_t *base, size_t stride, size_t off, wblk *w) {
    __m512i t[4];
    load_t16s(base + off, stride, t);
    w->d = half_lo(t[0]);
    w->dmin = half_lo(_mm512_srli_epi32(t[0], 16));
    k4_scales(t[1], t[2], t[3], w);
    const __m512i m = M0F;
    #pragma GCC unroll 8
    for (int c = 0; c < 8; c++) {
        load_t16s(base + off + 16 + 16 * c, stride, t);
        #pragma GCC unroll 4
        for (int mm = 0; mm < 4; mm++) {
            const int q = 4 * c + mm;
            _mm512_store_si512(&w->q[k4_slot(q, 0)], _mm512_and_si512(t[mm], m));
            _mm512_store_si512(&w->q[k4_slot(q, 1)], _mm512_and_si512(_mm512_srli_epi32(t[mm], 4), m));
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
            w->q[k4_slot(q, 0)] = _mm512_or_si512(_mm512_and_si512(t[m], M0F), bit_to_16(h[mm], 2 * jj));
            w->q[k4_slot(q, 1)] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(t[m], 4), M0F),
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
/* K-quant activations: a Q8_K block re-laid for the kernels. */
typedef struct akq {
    int8_t q[256];   /* quants; Q4_K/Q5_K: kernel order (see k4_sb), else natural */
    int16_t s16[16]; /* sums of each 16 values, natural order (the bsums) */
    int16_t s32[8];  /* sums of each 32 values, natural order */
    float d;         /* the block scale */
    uint8_t pad[12]; /* 320 bytes: every block starts a cache line */
} akq;
_Static_assert(sizeof(akq) == 320, "akq must be 5 cache lines");
_Static_assert(offsetof(akq, s32) == AKQ_SOFF && offsetof(akq, d) == AKQ_DOFF, "AKQ_SOFF / AKQ_DOFF");

static size_t akq_bytes(int cols) { return (size_t)(cols / 256) * sizeof(akq); }

INLINE void akq_fill(const block_q8_K *x, akq *o, int k4_order) {
    for (int h = 0; h < 2 && k4_order; h++) { /* 0..31, 64..95, 32..63, 96..127 */
        const int8_t *src = x->qs + 128 * h;
        memcpy(o->q + 128 * h, src, 32);
        memcpy(o->q + 128 * h + 32, src + 64, 32);
        memcpy(o->q + 128 * h + 64, src + 32, 32);
        memcpy(o->q + 128 * h + 96, src + 96, 32);
    }
    if (!k4_order) memcpy(o->q, x->qs, 256);
    memcpy(o->s16, x->bsums, sizeof o->s16);
    for (int s = 0; s < 8; s++) o->s32[s] = (int16_t)(x->bsums[2 * s] + x->bsums[2 * s + 1]);
    o->d = x->d;
    memset(o->pad, 0, sizeof o->pad);
}
static void akq_prep_k4(const void *xq, int cols, void *dst) {
    for (int b = 0; b < cols / 256; b++) akq_fill((const block_q8_K *)xq + b, (akq *)dst + b, 1);
}
static void akq_prep_nat(const void *xq, int cols, void *dst) {
    for (int b = 0; b < cols / 256; b++) akq_fill((const block_q8_K *)xq + b, (akq *)dst + b, 0);
}

/*                            nq nsub npair mode       doff soff qoff ablk wblk */
static const int_desc D_Q4_0 = {8, 1, 1, MODE_OFFSET, 0, 4, 8, A80_BLK, 18};
static const int_desc D_Q5_0 = {8, 1, 1, MODE_OFFSET, 0, 4, 8, A80_BLK, 22};
static const int_desc D_Q8_0 = {8, 1, 1, MODE_OFFSET, 0, 4, 8, A80_BLK, 34};
static const int_desc D_Q2_K = {64, 16, 8, MODE_MIN, 304, 256, 0, 320, 84};
static const int_desc D_Q3_K = {64, 16, 8, MODE_OFFSET, 304, 256, 0, 320, 110};
static const int_desc D_Q4_K = {64, 8, 4, MODE_MIN, 304, 288, 0, 320, 144};
static const int_desc D_Q5_K = {64, 8, 4, MODE_MIN, 304, 288, 0, 320, 176};
static const int_desc D_Q4_K_GEMM = {64, 8, 4, MODE_GEMM, AKQ_DOFF, AKQ_SOFF, 0, 320, 144};
static const int_desc D_Q6_K = {64, 16, 8, MODE_OFFSET, 304, 256, 0, 320, 210};

/* ------------------------------------------------------------------ */
/* Direct kernels for small batches (decode): each row in its own layout,
 * no transposition.  The 4 vpdpbusd of a 256-value block give per-lane
 * sums (4 products each) of one sub-block; lanes are multiplied by their
 * sub-block's scale, then the block's exact isum and msum are reduced to
 * scalars and applied with the same float operations, in the same order,
 * as int_tile: the results are bitwise those of the batched kernel. */

#define DIRECT_MAX 2 /* tokens up to which the direct kernels are used */

/* Block of one row, unpacked once and used for each token. */
typedef struct kblk {
    __m512i W[4];  /* u8 quants, 64 per vector, in the activation's order */
    __m512i S[4];  /* scale of each lane's sub-block, int16 pair (scale, 0) */
    __m256i mn;    /* 16 int16 to madd with the activation sums (s32 or s16) */
    __m128 dd;     /* lane 0: d, lane 1: dmin (MODE_MIN) */
} kblk;

/* Sums of the 4 lanes of i4 and of m4 (exact): lane 0 isum, lane 2 msum. */
INLINE __m128i reduce2(__m128i i4, __m128i m4) {
    __m128i t = _mm_add_epi32(_mm_unpacklo_epi64(i4, m4), _mm_unpackhi_epi64(i4, m4));
    return _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
}

/* The float update of int_tile for one (row, token) and block, on lane 0:
 * acc = fma(d*da, isum, acc) [then acc = -(dmin*da)*msum + acc]. t holds
 * isum in lane 0 and msum in lane 2; dd holds d, dmin. vcvtdq2ps rounds
 * as the vector conversion of int_tile does. */
INLINE __m128 block_update(__m128i t, __m128 dd, float da, int mode, __m128 acc) {
    const __m128 s = _mm_mul_ps(dd, _mm_set1_ps(da)); /* d*da, dmin*da */
    if (mode == MODE_OFFSET)
        return _mm_fmadd_ss(s, _mm_cvtepi32_ps(_mm_sub_epi32(t, _mm_srli_si128(t, 8))), acc);
    /* two accumulators (lane 0, lane 1) as llama.cpp's repacked gemv;
     * the row's result is lane 0 - lane 1 (see block_final) */
    return _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_shuffle_epi32(t, 0x08)), s, acc);
}

INLINE float block_final(__m128 acc, int mode) {
    return mode == MODE_MIN ? _mm_cvtss_f32(_mm_sub_ss(acc, _mm_movehdup_ps(acc))) : _mm_cvtss_f32(acc);
}

/* One token against an unpacked block: acc updated as int_tile does. */
INLINE __m128 kblk_dot(const kblk *k, const akq *a, int mode, int s16sums, __m128 acc) {
    __m512i I = _mm512_setzero_si512();
    #pragma GCC unroll 4
    for (int v = 0; v < 4; v++) {
        /* a lane is 4 products, |p| <= 4 * 63 * 127 < 2^15: as an int16
         * pair (p, sign) against (scale, 0), vpdpwssd adds p * scale */
        __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k->W[v], _mm512_loadu_si512(a->q + 64 * v));
        I = _mm512_dpwssd_epi32(I, p, k->S[v]);
    }
    /* s32 sums: 8 int16 (the upper half of mn is zero for them) */
    __m256i sums = s16sums ? _mm256_loadu_si256((const __m256i *)a->s16)
                           : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)a->s32));
    const __m256i M = _mm256_madd_epi16(k->mn, sums);
    const __m256i a8 = _mm256_add_epi32(_mm512_castsi512_si256(I), _mm512_extracti64x4_epi64(I, 1));
    const __m128i t = reduce2(_mm_add_epi32(_mm256_castsi256_si128(a8), _mm256_extracti128_si256(a8, 1)),
                              _mm_add_epi32(_mm256_castsi256_si128(M), _mm256_extracti128_si256(M, 1)));
    return block_update(t, k->dd, a->d, mode, acc);
}

/* Lane -> sub-block maps: Q4_K/Q5_K vector v covers two sub-blocks of 32
 * (k4 order), the others four of 16. */
static const int32_t k_idx32[4][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2}, {1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3},
    {4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6}, {5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7}};
static const int32_t k_idx16[4][16] = {
    {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}, {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
    {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
    {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};

/* S[i]: the scale of each lane's sub-block as an int16 pair (scale, 0). */
INLINE void scales_to_lanes(kblk *k, __m512i v, const int32_t idx[4][16]) {
    v = _mm512_and_si512(v, _mm512_set1_epi32(0xFFFF));
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) k->S[i] = _mm512_permutexvar_epi32(_mm512_loadu_si512(idx[i]), v);
}

/* Per-16-bit-word variable shift counts: c0 in the low 256 bits, c1 in
 * the high (the two halves of a vector come from different bit planes). */
INLINE __m512i cnt2(int c0, int c1) {
    return _mm512_inserti64x4(_mm512_set1_epi16((short)c0), _mm256_set1_epi16((short)c1), 1);
}
INLINE __m512i bcast256(const uint8_t *p) {
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}
#define B8(x) _mm512_set1_epi8((char)(x))

/* The two fp16 at p (any alignment) in lanes 0 and 1. */
INLINE __m128 halves2(const uint8_t *p) {
    int32_t h;
    memcpy(&h, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(h));
}

/* The fp16 at p (any alignment) as a float; exact, like vcvtph2ps. */
INLINE float half2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

INLINE void unpack_q4_K(const uint8_t *x, kblk *k, int q5) {
    uint32_t u0, u1, u2;
    memcpy(&u0, x + 4, 4);
    memcpy(&u1, x + 8, 4);
    memcpy(&u2, x + 12, 4);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    /* built in registers: storing the words and reloading them as one
     * vector would stall store forwarding */
    __m128i b = _mm_cvtsi32_si128((int)(u0 & k1));                                         /* scales 0..3 */
    b = _mm_insert_epi32(b, (int)((u2 & k2) | (((u0 >> 6) & k3) << 4)), 1);                /* scales 4..7 */
    b = _mm_insert_epi32(b, (int)(u1 & k1), 2);                                            /* mins 0..3 */
    b = _mm_insert_epi32(b, (int)(((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4)), 3);        /* mins 4..7 */
    scales_to_lanes(k, _mm512_cvtepu8_epi32(b), k_idx32);
    k->mn = _mm256_cvtepu8_epi16(_mm_srli_si128(b, 8));
    k->dd = halves2(x);
    const uint8_t *qs = x + (q5 ? 48 : 16);
    const __m512i q0 = _mm512_loadu_si512(qs), q1 = _mm512_loadu_si512(qs + 64), m = B8(0x0F);
    k->W[0] = _mm512_and_si512(q0, m);
    k->W[1] = _mm512_and_si512(_mm512_srli_epi16(q0, 4), m);
    k->W[2] = _mm512_and_si512(q1, m);
    k->W[3] = _mm512_and_si512(_mm512_srli_epi16(q1, 4), m);
    if (q5) { /* 5th bits: qh bit b of byte l, b = 2j (+1 for the high nibble) */
        const __m512i h = bcast256(x + 16), m10 = B8(0x10);
        k->W[0] = _mm512_or_si512(k->W[0], _mm512_and_si512(_mm512_sllv_epi16(h, cnt2(4, 2)), m10));
        k->W[1] = _mm512_or_si512(k->W[1], _mm512_and_si512(_mm512_sllv_epi16(h, cnt2(3, 1)), m10));
        k->W[2] = _mm512_or_si512(k->W[2], _mm512_and_si512(_mm512_srlv_epi16(h, cnt2(0, 2)), m10));
        k->W[3] = _mm512_or_si512(k->W[3], _mm512_and_si512(_mm512_srlv_epi16(h, cnt2(1, 3)), m10));
    }
}

INLINE void unpack_q6_K(const uint8_t *x, kblk *k) {
    const __m512i m = B8(0x0F), m30 = B8(0x30);
    #pragma GCC unroll 4
    for (int n = 0; n < 2; n++) {
        const __m512i l = _mm512_loadu_si512(x + 64 * n), h = bcast256(x + 128 + 32 * n);
        k->W[2 * n] = _mm512_or_si512(_mm512_and_si512(l, m), _mm512_and_si512(_mm512_sllv_epi16(h, cnt2(4, 2)), m30));
        k->W[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m),
                                          _mm512_and_si512(_mm512_srlv_epi16(h, cnt2(0, 2)), m30));
    }
    const __m128i sc = _mm_loadu_si128((const __m128i *)(x + 192));
    scales_to_lanes(k, _mm512_cvtepi8_epi32(sc), k_idx16);
    k->mn = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc), 5); /* 32 * scale */
    k->dd = _mm_set_ss(half2f(x + 208));
}

INLINE void unpack_q3_K(const uint8_t *x, kblk *k) {
    const __m512i m3 = B8(0x03), m4 = B8(0x04), hm = bcast256(x);
    #pragma GCC unroll 4
    for (int n = 0; n < 2; n++) {
        const __m512i q = bcast256(x + 32 + 32 * n);
        __m512i lo0 = _mm512_and_si512(_mm512_srlv_epi16(q, cnt2(0, 2)), m3);
        __m512i lo1 = _mm512_and_si512(_mm512_srlv_epi16(q, cnt2(4, 6)), m3);
        /* high bit 4n + j of hmask[l] -> value 4 */
        __m512i h0 = n ? _mm512_srlv_epi16(hm, cnt2(2, 3)) : _mm512_sllv_epi16(hm, cnt2(2, 1));
        __m512i h1 = n ? _mm512_srlv_epi16(hm, cnt2(4, 5)) : _mm512_srlv_epi16(hm, cnt2(0, 1));
        k->W[2 * n] = _mm512_or_si512(lo0, _mm512_and_si512(h0, m4));
        k->W[2 * n + 1] = _mm512_or_si512(lo1, _mm512_and_si512(h1, m4));
    }
    uint32_t a0, a1, t;
    memcpy(&a0, x + 96, 4);
    memcpy(&a1, x + 100, 4);
    memcpy(&t, x + 104, 4);
    const uint32_t k1 = 0x03030303, k2 = 0x0f0f0f0f;
    __m128i sc = _mm_cvtsi32_si128((int)((a0 & k2) | ((t & k1) << 4)));
    sc = _mm_insert_epi32(sc, (int)((a1 & k2) | (((t >> 2) & k1) << 4)), 1);
    sc = _mm_insert_epi32(sc, (int)(((a0 >> 4) & k2) | (((t >> 4) & k1) << 4)), 2);
    sc = _mm_insert_epi32(sc, (int)(((a1 >> 4) & k2) | (((t >> 6) & k1) << 4)), 3);
    sc = _mm_sub_epi8(sc, _mm_set1_epi8(32));
    scales_to_lanes(k, _mm512_cvtepi8_epi32(sc), k_idx16);
    k->mn = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc), 2); /* 4 * scale */
    k->dd = _mm_set_ss(half2f(x + 108));
}

INLINE void unpack_q2_K(const uint8_t *x, kblk *k) {
    const __m512i m3 = B8(0x03);
    #pragma GCC unroll 4
    for (int n = 0; n < 2; n++) {
        const __m512i q = bcast256(x + 16 + 32 * n);
        k->W[2 * n] = _mm512_and_si512(_mm512_srlv_epi16(q, cnt2(0, 2)), m3);
        k->W[2 * n + 1] = _mm512_and_si512(_mm512_srlv_epi16(q, cnt2(4, 6)), m3);
    }
    const __m128i s = _mm_loadu_si128((const __m128i *)x);
    scales_to_lanes(k, _mm512_cvtepu8_epi32(_mm_and_si128(s, _mm_set1_epi8(0x0F))), k_idx16);
    k->mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(s, 4), _mm_set1_epi8(0x0F)));
    k->dd = halves2(x + 80);
}

enum { KQ2, KQ3, KQ4, KQ5, KQ6 };

/* Q4_K/Q5_K in 256-bit vectors: one vector per sub-block of 32, whose
 * scale is a broadcast (scale, 0) pair for vpdpwssd; no cross-lane work,
 * which on cores that split 512-bit operations is what limits the zmm
 * form above. */
typedef struct kblk4 {
    __m256i W[8];    /* u8 quants of sub-block s, natural order */
    int32_t sc[8];   /* (scale, 0) int16 pair of sub-block s */
    __m128i mn;      /* 8 mins, int16 */
    __m128 dd;       /* d, dmin */
} kblk4;

/* Offset of natural sub-block s in the k4-ordered activation quants. */
static const int k4_pos[8] = {0, 2, 1, 3, 4, 6, 5, 7};

INLINE void unpack4(const uint8_t *x, kblk4 *k, int q5) {
    uint32_t u0, u1, u2;
    memcpy(&u0, x + 4, 4);
    memcpy(&u1, x + 8, 4);
    memcpy(&u2, x + 12, 4);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    __m128i b = _mm_cvtsi32_si128((int)(u0 & k1));
    b = _mm_insert_epi32(b, (int)((u2 & k2) | (((u0 >> 6) & k3) << 4)), 1);
    b = _mm_insert_epi32(b, (int)(u1 & k1), 2);
    b = _mm_insert_epi32(b, (int)(((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4)), 3);
    _mm256_storeu_si256((__m256i *)k->sc, _mm256_cvtepu8_epi32(b));
    k->mn = _mm_cvtepu8_epi16(_mm_srli_si128(b, 8));
    k->dd = halves2(x);
    const uint8_t *qs = x + (q5 ? 48 : 16);
    const __m256i m = _mm256_set1_epi8(0x0F);
    #pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
        k->W[2 * j] = _mm256_and_si256(q, m);
        k->W[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
    }
    if (q5) { /* bit s of qh[l] is the 5th bit of value 32s + l */
        const __m256i h = _mm256_loadu_si256((const __m256i *)(x + 16)), m10 = _mm256_set1_epi8(0x10);
        #pragma GCC unroll 8
        for (int s2 = 0; s2 < 8; s2++) {
            __m256i v = s2 <= 4 ? _mm256_slli_epi16(h, 4 - s2) : _mm256_srli_epi16(h, s2 - 4);
            k->W[s2] = _mm256_or_si256(k->W[s2], _mm256_and_si256(v, m10));
        }
    }
}

INLINE __m128 kblk4_dot(const kblk4 *k, const akq *a, __m128 acc) {
    __m256i I0 = _mm256_setzero_si256(), I1 = I0;
    #pragma GCC unroll 8
    for (int s2 = 0; s2 < 8; s2 += 2) {
        /* |lane| <= 4 * 31 * 127 < 2^15, see kblk_dot */
        __m256i p0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[s2],
                                         _mm256_loadu_si256((const __m256i *)(a->q + 32 * k4_pos[s2])));
        __m256i p1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), k->W[s2 + 1],
                                         _mm256_loadu_si256((const __m256i *)(a->q + 32 * k4_pos[s2 + 1])));
        I0 = _mm256_dpwssd_epi32(I0, p0, _mm256_set1_epi32(k->sc[s2]));
        I1 = _mm256_dpwssd_epi32(I1, p1, _mm256_set1_epi32(k->sc[s2 + 1]));
    }
    __m256i I = _mm256_add_epi32(I0, I1);
    __m128i i4 = _mm_add_epi32(_mm256_castsi256_si128(I), _mm256_extracti128_si256(I, 1));
    __m128i m4 = _mm_madd_epi16(k->mn, _mm_loadu_si128((const __m128i *)a->s32));
    return block_update(reduce2(i4, m4), k->dd, a->d, MODE_MIN, acc);
}

INLINE void unpack_k(int kind, const uint8_t *x, kblk *k) {
    if (kind == KQ4 || kind == KQ5) unpack_q4_K(x, k, kind == KQ5);
    else if (kind == KQ6) unpack_q6_K(x, k);
    else if (kind == KQ3) unpack_q3_K(x, k);
    else unpack_q2_K(x, k);
}

/* R rows (1 or 2, independent chains for the out-of-order core) x T
 * tokens (1 or 2), accumulators in registers. */
INLINE void direct_rows(const kern_job *j, int r, int kind, int wblk, const int R, const int T) {
    const int nb = j->cols / 256;
    const int mode = (kind == KQ3 || kind == KQ6) ? MODE_OFFSET : MODE_MIN;
    const int s16sums = !(kind == KQ4 || kind == KQ5);
    const uint8_t *row[2];
    const akq *act[2];
    __m128 acc[2][2] = {{_mm_setzero_ps(), _mm_setzero_ps()}, {_mm_setzero_ps(), _mm_setzero_ps()}};
    for (int i = 0; i < R; i++) row[i] = j->W + (size_t)(r + i) * j->wstride;
    for (int t = 0; t < T; t++) act[t] = (const akq *)(const void *)(j->A + (size_t)t * j->astride);
    pf_stream pf = pf_start(j, row[0], (size_t)R * j->wstride, nb);
    for (int b = 0; b < nb; b++) {
        pf_step(&pf);
        if (kind == KQ4 || kind == KQ5) {
            #pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                kblk4 k;
                unpack4(row[i] + (size_t)b * wblk, &k, kind == KQ5);
                #pragma GCC unroll 2
                for (int t = 0; t < T; t++) acc[i][t] = kblk4_dot(&k, act[t] + b, acc[i][t]);
            }
            continue;
        }
        #pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            kblk k;
            unpack_k(kind, row[i] + (size_t)b * wblk, &k);
            #pragma GCC unroll 2
            for (int t = 0; t < T; t++) acc[i][t] = kblk_dot(&k, act[t] + b, mode, s16sums, acc[i][t]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int t = 0; t < T; t++) j->Y[(size_t)t * j->ystride + r + i] = block_final(acc[i][t], mode);
}

INLINE void direct_k(const kern_job *j, int r0, int r1, int kind, int wblk) {
    int r = r0;
    if (j->ntok == 1) {
        for (; r + 2 <= r1; r += 2) direct_rows(j, r, kind, wblk, 2, 1);
        if (r < r1) direct_rows(j, r, kind, wblk, 1, 1);
    } else {
        for (; r + 2 <= r1; r += 2) direct_rows(j, r, kind, wblk, 2, 2);
        if (r < r1) direct_rows(j, r, kind, wblk, 1, 2);
    }
}

/* Q4_0 for 1-2 tokens (decode): full groups of 16 consecutive rows with
 * everything in registers, no prepared block in memory: per block, the
 * 16 rows' quants transposed straight into 8 vectors, the 16 scales in
 * one gather, then exactly int_tile's MODE_OFFSET integers and float
 * step (acc = fma(d_w * d_a, isum - 8 * asum, acc)), so the bits are the
 * batched kernel's.  Other rows (a last partial group) take int_matmul. */
INLINE void q40_rows(const kern_job *j, int g, const int T) {
    const int nb = j->cols / 32;
    const uint8_t *base = j->W + (size_t)g * j->wstride;
    int32_t idx[16];
    for (int p = 0; p < 16; p++) idx[p] = (int32_t)((size_t)k_perm16[p] * j->wstride);
    const __m512i gidx = _mm512_loadu_si512(idx), m0f = M0F, eight = SET(8);
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    pf_stream pf = pf_start(j, base, 16 * j->wstride, nb);
    for (int b = 0; b < nb; b++) {
        pf_step_l2(&pf);
        const uint8_t *blk = base + (size_t)b * 18;
        __m512i t[4], q[8];
        load_t16s(blk + 2, j->wstride, t);
        #pragma GCC unroll 4
        for (int m = 0; m < 4; m++) {
            q[m] = _mm512_and_si512(t[m], m0f);
            q[4 + m] = _mm512_and_si512(_mm512_srli_epi32(t[m], 4), m0f);
        }
        const __m512 d = half_lo(_mm512_i32gather_epi32(gidx, (const void *)blk, 1));
        #pragma GCC unroll 2
        for (int u = 0; u < T; u++) {
            const uint8_t *a = j->A + (size_t)u * j->astride + (size_t)b * A80_BLK;
            __m512i i0 = _mm512_setzero_si512(), i1 = i0;
            #pragma GCC unroll 4
            for (int k = 0; k < 8; k += 2) {
                i0 = _mm512_dpbusd_epi32(i0, q[k], bc32(a + 8 + 4 * k));
                i1 = _mm512_dpbusd_epi32(i1, q[k + 1], bc32(a + 8 + 4 * k + 4));
            }
            const __m512i ms = _mm512_dpwssd_epi32(_mm512_setzero_si512(), eight, bc32(a + 4));
            float da;
            memcpy(&da, a, 4);
            const __m512i v = _mm512_sub_epi32(_mm512_add_epi32(i0, i1), ms);
            acc[u] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(da)), _mm512_cvtepi32_ps(v), acc[u]);
        }
    }
    const __m512i perm = _mm512_loadu_si512(k_perm16);
    for (int u = 0; u < T; u++) _mm512_storeu_ps(j->Y + (size_t)u * j->ystride + g, _mm512_permutexvar_ps(perm, acc[u]));
}

static void mm_q4_0(const kern_job *j, int r0, int r1) {
    int g = r0;
    if (j->ntok <= 2)
        for (; g + 16 <= r1 && g + 16 <= j->rows; g += 16) {
            if (j->ntok == 1) q40_rows(j, g, 1);
            else q40_rows(j, g, 2);
        }
    if (g < r1) int_matmul(j, g, r1, &D_Q4_0, prep_q4_0);
}

#define INT_MM(name, desc, prep) \
    static void mm_##name(const kern_job *j, int r0, int r1) { int_matmul(j, r0, r1, &desc, prep); }
#define K_MM(name, desc, prep, kind)                                      \
    static void mm_##name(const kern_job *j, int r0, int r1) {            \
        if (j->ntok <= DIRECT_MAX) direct_k(j, r0, r1, kind, desc.wblk);  \
        else int_matmul(j, r0, r1, &desc, prep);                          \
    }
INT_MM(q5_0, D_Q5_0, prep_q5_0)
INT_MM(q8_0, D_Q8_0, prep_q8_0)
K_MM(q2_K, D_Q2_K, prep_q2_K, KQ2)
K_MM(q3_K, D_Q3_K, prep_q3_K, KQ3)
/* Q4_K for 1-2 tokens (decode), 8 consecutive rows at a time in 256-bit
 * vectors, one row per 32-bit lane: per super-block the 8 rows' bytes
 * are transposed in registers (128-bit loads, in-lane unpacks: cheap on
 * cores that split 512-bit shuffles), and the integers and float steps
 * are int_tile's MODE_MIN ones (isum = sum of scale * sub-block dot,
 * msum = sum of min * sub-block sum, both exact; acc = fma(isum, d * da,
 * acc), acc_m = fma(msum, dmin * da, acc_m); acc - acc_m at the end), so
 * the bits are those of every other Q4_K kernel here. */

/* o[m], lane p = 32-bit word m of the 16 bytes at base + p * stride + off. */
INLINE void load_t8(const uint8_t *base, size_t stride, __m256i o[4]) {
    __m256i z[4];
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        z[k] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(base + (size_t)k * stride))),
                                       _mm_loadu_si128((const __m128i *)(base + (size_t)(k + 4) * stride)), 1);
    /* z[k] = rows k | k + 4; two in-lane unpack rounds give rows 0..7 */
    const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
    o[0] = _mm256_unpacklo_epi64(t0, t2);
    o[1] = _mm256_unpackhi_epi64(t0, t2);
    o[2] = _mm256_unpacklo_epi64(t1, t3);
    o[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* acc += w (u8) . the 4 signed bytes at a, broadcast: vpdpbusd with an
 * embedded-broadcast memory operand, which GCC does not form from
 * _mm256_set1_epi32 (it emits a separate vpbroadcastd per product). */
INLINE __m256i dpbusd_bc(__m256i acc, __m256i w, const uint8_t *a) {
    __asm__("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)(const void *)a));
    return acc;
}

INLINE void q4k_rows8(const kern_job *j, int r, const int T) {
    const int nb = j->cols / 256;
    const size_t ws = j->wstride;
    const uint8_t *base = j->W + (size_t)r * ws;
    const __m256i m0f = _mm256_set1_epi8(0x0F), m6 = _mm256_set1_epi32(63), m4 = _mm256_set1_epi32(15),
                  m2 = _mm256_set1_epi32(3);
    __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
    pf_stream pf = pf_start(j, base, 8 * ws, nb);
    for (int b = 0; b < nb; b++) {
        pf_step_l2(&pf);
        const uint8_t *blk = base + (size_t)b * 144;
        __m256i h[4];
        load_t8(blk, ws, h);
        /* scales and mins (natural sub-block order), as k4_scales */
        __m256i sc[8], mn[8];
        #pragma GCC unroll 4
        for (int s2 = 0; s2 < 4; s2++) {
            sc[s2] = _mm256_and_si256(_mm256_srli_epi32(h[1], 8 * s2), m6);
            mn[s2] = _mm256_and_si256(_mm256_srli_epi32(h[2], 8 * s2), m6);
            sc[4 + s2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(h[3], 8 * s2), m4),
                                         _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h[1], 8 * s2 + 6), m2), 4));
            mn[4 + s2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(h[3], 8 * s2 + 4), m4),
                                         _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h[2], 8 * s2 + 6), m2), 4));
        }
        const __m256 d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(h[0]));
        const __m256 dmin = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(h[0], 16)));
        __m256i isum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        #pragma GCC unroll 1
        for (int jj = 0; jj < 4; jj++) {
            /* qs bytes 32jj..32jj+31: low nibbles are sub-block 2jj, high 2jj + 1 */
            __m256i w[8];
            load_t8(blk + 16 + 32 * jj, ws, w);
            load_t8(blk + 32 + 32 * jj, ws, w + 4);
            #pragma GCC unroll 2
            for (int nib = 0; nib < 2; nib++) {
                const int sb = 2 * jj + nib;
                __m256i q[8];
                #pragma GCC unroll 8
                for (int qd = 0; qd < 8; qd++)
                    q[qd] = nib ? _mm256_and_si256(_mm256_srli_epi32(w[qd], 4), m0f) : _mm256_and_si256(w[qd], m0f);
                #pragma GCC unroll 2
                for (int u = 0; u < T; u++) {
                    const uint8_t *a = j->A + (size_t)u * j->astride + (size_t)b * sizeof(akq) + 32 * k4_pos[sb];
                    __m256i d0 = _mm256_setzero_si256(), d1 = d0;
                    #pragma GCC unroll 4
                    for (int qd = 0; qd < 8; qd += 2) {
                        d0 = dpbusd_bc(d0, q[qd], a + 4 * qd);
                        d1 = dpbusd_bc(d1, q[qd + 1], a + 4 * qd + 4);
                    }
                    isum[u] = _mm256_add_epi32(isum[u], _mm256_mullo_epi32(_mm256_add_epi32(d0, d1), sc[sb]));
                }
            }
        }
        #pragma GCC unroll 2
        for (int u = 0; u < T; u++) {
            const akq *a = (const akq *)(const void *)(j->A + (size_t)u * j->astride) + b;
            __m256i ms = _mm256_setzero_si256();
            #pragma GCC unroll 4
            for (int p2 = 0; p2 < 4; p2++) {
                const __m256i pair = _mm256_or_si256(mn[2 * p2], _mm256_slli_epi32(mn[2 * p2 + 1], 16));
                ms = _mm256_dpwssd_epi32(ms, pair, _mm256_set1_epi32(*(const int32_t *)(const void *)(a->s32 + 2 * p2)));
            }
            const __m256 vda = _mm256_set1_ps(a->d);
            acc[u][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[u]), _mm256_mul_ps(d, vda), acc[u][0]);
            acc[u][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_mul_ps(dmin, vda), acc[u][1]);
        }
    }
    for (int u = 0; u < T; u++) _mm256_storeu_ps(j->Y + (size_t)u * j->ystride + r, _mm256_sub_ps(acc[u][0], acc[u][1]));
}

static void mm_q4_K(const kern_job *j, int r0, int r1) {
    if (j->ntok > DIRECT_MAX) {
        int_matmul(j, r0, r1, &D_Q4_K, prep_q4_K);
        return;
    }
    int r = r0;
    for (; r + 8 <= r1 && r + 8 <= j->rows; r += 8) {
        if (j->ntok == 1) q4k_rows8(j, r, 1);
        else q4k_rows8(j, r, 2);
    }
    if (r < r1) direct_k(j, r, r1, KQ4, D_Q4_K.wblk);
}
K_MM(q5_K, D_Q5_K, prep_q5_K, KQ5)
K_MM(q6_K, D_Q6_K, prep_q6_K, KQ6)
INT_MM(q4_K_gemm, D_Q4_K_GEMM, prep_q4_K)

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
    pf_stream pf = pf_start(j, w[0], (size_t)R * j->wstride, (j->cols + step - 1) / step);
    for (int k = 0; k < j->cols; k += step) {
        pf_step(&pf);
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
static const kern_wops W_Q2_K = {16, QT_Q8_K, akq_bytes, akq_prep_nat, mm_q2_K};
static const kern_wops W_Q3_K = {16, QT_Q8_K, akq_bytes, akq_prep_nat, mm_q3_K};
static const kern_wops W_Q4_K = {16, QT_Q8_K, akq_bytes, akq_prep_k4, mm_q4_K};
static const kern_wops W_Q5_K = {16, QT_Q8_K, akq_bytes, akq_prep_k4, mm_q5_K};
static const kern_wops W_Q6_K = {16, QT_Q8_K, akq_bytes, akq_prep_nat, mm_q6_K};
static const kern_wops W_F32 = {4, QT_F32, af32_bytes, NULL, mm_f32};
static const kern_wops W_F16 = {4, QT_F16, af32_bytes, af16_prep, mm_f16};
static const kern_wops W_BF16 = {4, QT_BF16, abf16_bytes, NULL, mm_bf16};

static const kern_wops W_Q4_K_GEMM = {16, QT_Q8_K, akq_bytes, akq_prep_k4, mm_q4_K_gemm};
const kern_wops *kern_avx512_q4k_gemm(void) { return &W_Q4_K_GEMM; }


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

/* The peak probe of `moe bench --matmul`: 12 independent vpdpbusd chains
 * (enough to cover its latency), kept in registers.  Returns the int8
 * multiply-accumulates done. */
uint64_t kern_avx512_int8_peak(uint64_t iters) {
    __m512i a0 = _mm512_set1_epi32(1), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m512i a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    const __m512i w = _mm512_set1_epi32(0x01010101), x = _mm512_set1_epi32(0x02020202);
    for (uint64_t i = 0; i < iters; i++) {
        a0 = _mm512_dpbusd_epi32(a0, w, x), a1 = _mm512_dpbusd_epi32(a1, w, x), a2 = _mm512_dpbusd_epi32(a2, w, x);
        a3 = _mm512_dpbusd_epi32(a3, w, x), a4 = _mm512_dpbusd_epi32(a4, w, x), a5 = _mm512_dpbusd_epi32(a5, w, x);
        a6 = _mm512_dpbusd_epi32(a6, w, x), a7 = _mm512_dpbusd_epi32(a7, w, x), a8 = _mm512_dpbusd_epi32(a8, w, x);
        a9 = _mm512_dpbusd_epi32(a9, w, x), a10 = _mm512_dpbusd_epi32(a10, w, x), a11 = _mm512_dpbusd_epi32(a11, w, x);
        /* the chains stay in registers and are not folded away */
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7),
                         "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    volatile int sink = _mm512_reduce_add_epi32(
        _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                         _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)),
                                          _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)))));
    (void)sink;
    return iters * 12 * 64;
}
