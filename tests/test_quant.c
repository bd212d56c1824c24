/* Scalar reference code of every tensor type (kernels/quant.h).
 *
 * 1. Layout: sizeof(block_*) and the traits equal the GGUF type sizes;
 *    row sizes; vec_dot_type pairs as llama.cpp.
 * 2. fp16 / bf16 conversions: special values, ties, subnormals by hand;
 *    all 65536 halves round-trip; f32 -> fp16 agrees with the compiler's
 *    IEEE _Float16 conversion on ~4.3M float patterns, and each result is
 *    the nearest half (tie to even) checked from its neighbours.
 * 3. Hand-computed blocks: quantized bytes of chosen vectors (Q8_0 ties to
 *    even vs llama-quantize's away from zero, Q8_1, Q8_K, Q4_0, Q4_1,
 *    Q5_0, Q5_1) and dequantized values of hand-packed K-quant blocks.
 * 4. Round trip on seeded random rows (gaussian, uniform, gaussian with
 *    1% outliers x20, all zeros, constant), every length that is a
 *    multiple of the block size among 32..4096: all-zero rows come back
 *    exactly zero; otherwise rms(err)/rms(x) <= a per-type bound:
 *      The error of a uniform quantizer with step D is about D/sqrt(12).
 *      A gaussian block of 32 (256) values has amax ~ 2.5 (3) sigma, so
 *      for b bits over the signed range D ~ 2*amax/2^b and the expected
 *      relative rmse is ~ 1.44/2^b (1.73/2^b).  Types with a min use the
 *      range (~4.1 sigma over 32 values); K-quants scale groups of 16 or
 *      32 (amax ~1.8 sigma over 16).  Expected: Q8 ~0.006, Q6_K ~0.016,
 *      5-bit ~0.04-0.045, 4-bit ~0.08-0.09, Q3_K ~0.13, Q2_K ~0.34; the
 *      bounds are those with ~25% headroom (a single block of 32 varies
 *      more).  F16 and BF16 keep 11 and 8 significant bits (relative rms
 *      error ~2^-11/sqrt(3), 2^-8/sqrt(3)), F32 is exact.
 *      With outliers (1% of values x20) rms(x) grows to ~2.2 sigma, and a
 *      scale group holding an outlier gets a ~10x coarser step.  With a
 *      fraction p of the groups hit (p ~ 0.27 for 32 values, ~0.92 for
 *      256) the relative rmse is ~1.9x the gaussian one for 32-value
 *      blocks and ~3.9x for Q8_K's single scale per 256; the K-quants'
 *      16/32-value sub-scales keep it near ~1.5-2x.  Outlier bounds: 2.5x
 *      (32-blocks), 4x (Q8_K), 2x (other K-quants) the gaussian bound.
 * 5. vec_dot(w, a) against the double-precision dot product of the
 *    dequantized weight and dequantized activation row, within
 *    1e-5 * sum|w||a| (the only difference is float rounding).
 * 6. Fixtures (../shared/fixtures/models): every tensor of tiny-v3-Q8_0,
 *    -Q4_0, -Q4_K_M, -f16, -bf16 (and tiny-v2lite-Q4_K_M) against the same
 *    tensor in the F32 file: dequantized values within the type's rmse
 *    bound (real-data check of dequantization), and requantizing the F32
 *    rows with qtype_quantize_weights reproduces llama-quantize's bytes
 *    exactly.
 * MOE_QUANT_VERBOSE=1 prints the measured errors. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "quant.h"

static int verbose;

/* ---------------------------------------------------------------- utils */

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* splitmix64: small, seedable, good enough for test data */
typedef struct { uint64_t s; } rng_t;

static uint64_t rng_next(rng_t *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_uniform(rng_t *r) { /* [0, 1) */
    return (double)(rng_next(r) >> 11) * 0x1p-53;
}

static double rng_gauss(rng_t *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

enum dist { D_GAUSS, D_UNIFORM, D_OUTLIERS, D_ZERO, D_CONST, D_COUNT };
static const char *dist_name[D_COUNT] = {"gauss", "uniform", "outliers", "zero", "const"};

static void fill(float *x, int n, enum dist d, rng_t *r) {
    for (int i = 0; i < n; i++) {
        switch (d) {
        case D_GAUSS: x[i] = (float)rng_gauss(r); break;
        case D_UNIFORM: x[i] = (float)(2.0 * rng_uniform(r) - 1.0); break;
        case D_OUTLIERS:
            x[i] = (float)rng_gauss(r);
            if (rng_uniform(r) < 0.01) x[i] *= 20.0f;
            break;
        case D_ZERO: x[i] = 0.0f; break;
        default: x[i] = 0.7f; break;
        }
    }
}

/* rms(a - b) / rms(a) */
static double rel_rmse(const float *a, const float *b, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        e += d * d;
        s += (double)a[i] * a[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* Per-type bound on the relative rms round-trip error of gaussian-like data,
 * and the factor allowed for the outlier distribution (see header). */
static double rmse_bound(int type) {
    switch (type) {
    case QT_F32: return 0.0;
    case QT_F16: return 1e-3;
    case QT_BF16: return 1e-2;
    case QT_Q8_0: case QT_Q8_1: case QT_Q8_K: return 0.01;
    case QT_Q6_K: return 0.025;
    case QT_Q5_0: case QT_Q5_1: return 0.06;
    case QT_Q5_K: return 0.05;
    case QT_Q4_0: case QT_Q4_1: return 0.12;
    case QT_Q4_K: return 0.11;
    case QT_Q3_K: return 0.2;
    case QT_Q2_K: return 0.42;
    default: return -1;
    }
}

static double outlier_factor(int type) {
    switch (type) {
    case QT_F32: case QT_F16: case QT_BF16: return 1.0; /* no shared scale */
    case QT_Q8_K: return 4.0;
    case QT_Q2_K: case QT_Q3_K: case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: return 2.0;
    default: return 2.5;
    }
}

static const int all_types[] = {QT_F32, QT_F16, QT_BF16, QT_Q4_0, QT_Q4_1, QT_Q5_0, QT_Q5_1,
                                QT_Q8_0, QT_Q8_1, QT_Q2_K, QT_Q3_K, QT_Q4_K, QT_Q5_K, QT_Q6_K,
                                QT_Q8_K};
#define N_TYPES ((int)(sizeof all_types / sizeof all_types[0]))

/* --------------------------------------------------------------- layout */

static void test_layout(void) {
    static const struct { int type; const char *name; int blck, size, vdt; size_t sz; } want[] = {
        {QT_F32, "F32", 1, 4, QT_F32, 4},
        {QT_F16, "F16", 1, 2, QT_F16, 2},
        {QT_BF16, "BF16", 1, 2, QT_BF16, 2},
        {QT_Q4_0, "Q4_0", 32, 18, QT_Q8_0, sizeof(block_q4_0)},
        {QT_Q4_1, "Q4_1", 32, 20, QT_Q8_1, sizeof(block_q4_1)},
        {QT_Q5_0, "Q5_0", 32, 22, QT_Q8_0, sizeof(block_q5_0)},
        {QT_Q5_1, "Q5_1", 32, 24, QT_Q8_1, sizeof(block_q5_1)},
        {QT_Q8_0, "Q8_0", 32, 34, QT_Q8_0, sizeof(block_q8_0)},
        {QT_Q8_1, "Q8_1", 32, 36, -1, sizeof(block_q8_1)},
        {QT_Q2_K, "Q2_K", 256, 84, QT_Q8_K, sizeof(block_q2_K)},
        {QT_Q3_K, "Q3_K", 256, 110, QT_Q8_K, sizeof(block_q3_K)},
        {QT_Q4_K, "Q4_K", 256, 144, QT_Q8_K, sizeof(block_q4_K)},
        {QT_Q5_K, "Q5_K", 256, 176, QT_Q8_K, sizeof(block_q5_K)},
        {QT_Q6_K, "Q6_K", 256, 210, QT_Q8_K, sizeof(block_q6_K)},
        {QT_Q8_K, "Q8_K", 256, 292, -1, sizeof(block_q8_K)},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const qtype_info *qi = qtype_get(want[i].type);
        CHECK(qi != NULL, "type %d missing", want[i].type);
        if (!qi) continue;
        CHECK(strcmp(qi->name, want[i].name) == 0, "name %s", qi->name);
        CHECK(strcmp(qtype_name(want[i].type), want[i].name) == 0, "qtype_name %s", want[i].name);
        CHECK(qi->blck == want[i].blck, "%s blck %d", want[i].name, qi->blck);
        CHECK(qi->type_size == want[i].size, "%s type_size %d", want[i].name, qi->type_size);
        CHECK(want[i].sz == (size_t)want[i].size, "sizeof block %s = %zu", want[i].name, want[i].sz);
        CHECK(qi->to_float && qi->from_float, "%s conversions", want[i].name);
        if (want[i].vdt < 0) {
            CHECK(qi->vec_dot == NULL, "%s is activation-only", want[i].name);
        } else {
            CHECK(qi->vec_dot != NULL, "%s vec_dot", want[i].name);
            CHECK(qi->vec_dot_type == want[i].vdt, "%s vec_dot_type %d", want[i].name, qi->vec_dot_type);
        }
        CHECK(qtype_row_size(want[i].type, 4096) == (size_t)(4096 / want[i].blck * want[i].size),
              "%s row size", want[i].name);
        if (want[i].blck > 1)
            CHECK(qtype_row_size(want[i].type, want[i].blck + 1) == 0, "%s partial block", want[i].name);
        CHECK(qtype_row_size(want[i].type, -want[i].blck) == 0, "%s negative n", want[i].name);
    }
    CHECK(qtype_get(4) == NULL && qtype_get(-1) == NULL && qtype_get(QT_COUNT) == NULL
          && qtype_get(1000) == NULL, "unknown ids");
    CHECK(strcmp(qtype_name(5), "unknown") == 0, "name of unknown id");
    CHECK(qtype_row_size(5, 32) == 0, "row size of unknown id");
    CHECK(qtype_quantize_weights(5, NULL, NULL, 32) == 0, "quantize unknown id");
    CHECK(qtype_quantize_weights(QT_Q4_K, NULL, NULL, 100) == 0, "quantize partial block");
}

/* ---------------------------------------------------------- fp16 / bf16 */

static void test_fp16(void) {
    static const struct { uint32_t f; fp16_t h; } cases[] = {
        {0x00000000, 0x0000}, /* +0 */
        {0x80000000, 0x8000}, /* -0 */
        {0x3F800000, 0x3C00}, /* 1 */
        {0xC0000000, 0xC000}, /* -2 */
        {0x7F800000, 0x7C00}, /* inf */
        {0xFF800000, 0xFC00}, /* -inf */
        {0x477FE000, 0x7BFF}, /* 65504, the largest half */
        {0x477FEFFF, 0x7BFF}, /* just below 65520 */
        {0x477FF000, 0x7C00}, /* 65520: tie, to even = inf */
        {0x7F7FFFFF, 0x7C00}, /* FLT_MAX */
        {0x38800000, 0x0400}, /* 2^-14, smallest normal */
        {0x387FC000, 0x03FF}, /* 1023 * 2^-24, largest subnormal */
        {0x33800000, 0x0001}, /* 2^-24, smallest subnormal */
        {0x33000000, 0x0000}, /* 2^-25: tie, to even = 0 */
        {0x33000001, 0x0001}, /* just above 2^-25 */
        {0x33400000, 0x0001}, /* 1.5 * 2^-25 */
        {0x33C00000, 0x0002}, /* 1.5 * 2^-24: tie between 1 and 2, to even 2 */
        {0x34200000, 0x0002}, /* 2.5 * 2^-24: tie, to even 2 */
        {0x00000001, 0x0000}, /* float subnormal */
        {0x3F801000, 0x3C00}, /* 1 + 2^-11: tie, to even 1 */
        {0x3F803000, 0x3C02}, /* 1 + 3*2^-11: tie, to even 1 + 2^-9 */
        {0x3F801001, 0x3C01}, /* just above the tie */
        {0x387FE000, 0x0400}, /* 1023.5 * 2^-24: tie, rounds up into the normals */
        {0xB3800000, 0x8001}, /* -2^-24 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fp16_t h = f32_to_fp16(bitsf(cases[i].f));
        CHECK(h == cases[i].h, "f32_to_fp16(0x%08x) = 0x%04x, want 0x%04x", cases[i].f, h, cases[i].h);
    }
    /* NaN stays NaN (quiet), either sign */
    fp16_t hn = f32_to_fp16(bitsf(0x7FC00000)), hs = f32_to_fp16(bitsf(0x7F800001));
    fp16_t hneg = f32_to_fp16(bitsf(0xFFC00000));
    CHECK((hn & 0x7C00) == 0x7C00 && (hn & 0x3FF) != 0, "qNaN -> 0x%04x", hn);
    CHECK((hs & 0x7C00) == 0x7C00 && (hs & 0x200) != 0, "sNaN -> 0x%04x (quiet)", hs);
    CHECK((hneg & 0xFC00) == 0xFC00 && (hneg & 0x3FF) != 0, "-NaN -> 0x%04x", hneg);

    /* half -> float by hand */
    CHECK(fp16_to_f32(0x3C00) == 1.0f && fp16_to_f32(0xC000) == -2.0f, "1, -2");
    CHECK(fp16_to_f32(0x7BFF) == 65504.0f, "65504");
    CHECK(fp16_to_f32(0x0001) == 0x1p-24f && fp16_to_f32(0x03FF) == 1023 * 0x1p-24f, "subnormals");
    CHECK(fbits(fp16_to_f32(0x8000)) == 0x80000000u, "-0 keeps its sign");
    CHECK(isinf(fp16_to_f32(0x7C00)) && fp16_to_f32(0xFC00) < 0, "inf");
    CHECK(isnan(fp16_to_f32(0x7E00)) && isnan(fp16_to_f32(0x7C01)), "nan");

    /* every half converts to float and back unchanged */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32((fp16_t)h);
        int is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
        if (is_nan ? !isnan(f) : f32_to_fp16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);

    /* against the compiler's IEEE conversion, on float patterns spread over
     * the whole range (stride coprime to 2^32 hits every exponent and many
     * mantissa tails), plus ties built on purpose */
    int mismatch = 0, not_nearest = 0;
    for (uint64_t k = 0; k < (1ull << 32); k += 997) {
        uint32_t u = (uint32_t)k;
        float f = bitsf(u);
        if (isnan(f)) continue;
        fp16_t h = f32_to_fp16(f);
        _Float16 c = (_Float16)f;
        uint16_t hc;
        memcpy(&hc, &c, sizeof hc);
        if (h != hc) mismatch++;
        /* nearest: no neighbour is closer; on a tie the mantissa is even */
        float v = fp16_to_f32(h);
        if (isfinite(v) && (h & 0x7FFF) < 0x7BFF && (h & 0x7FFF) > 0) {
            double e = fabs((double)f - v);
            double eu = fabs((double)f - fp16_to_f32((fp16_t)(h + 1)));
            double ed = fabs((double)f - fp16_to_f32((fp16_t)(h - 1)));
            if (e > eu || e > ed || ((e == eu || e == ed) && (h & 1))) not_nearest++;
        }
    }
    for (uint32_t h = 0; h < 0x7BFF; h++) { /* exact midpoints of consecutive halves */
        double mid = ((double)fp16_to_f32((fp16_t)h) + fp16_to_f32((fp16_t)(h + 1))) / 2;
        fp16_t want = (h & 1) ? (fp16_t)(h + 1) : (fp16_t)h;
        if (f32_to_fp16((float)mid) != want) mismatch++;
    }
    CHECK(mismatch == 0, "%d conversions differ from IEEE _Float16 / tie-to-even", mismatch);
    CHECK(not_nearest == 0, "%d conversions are not the nearest half", not_nearest);
}

static void test_bf16(void) {
    static const struct { uint32_t f; bf16_t h; } cases[] = {
        {0x00000000, 0x0000}, {0x80000000, 0x8000}, {0x3F800000, 0x3F80},
        {0x3F808000, 0x3F80}, /* tie, to even */
        {0x3F818000, 0x3F82}, /* tie, to even (up) */
        {0x3F808001, 0x3F81}, /* above the tie */
        {0x3F807FFF, 0x3F80}, /* below the tie */
        {0x7F800000, 0x7F80}, {0xFF800000, 0xFF80},
        {0x7F7FFFFF, 0x7F80}, /* FLT_MAX rounds to inf */
        {0x00000001, 0x0000}, /* float subnormals are kept and rounded */
        {0x00018000, 0x0002}, /* subnormal tie, to even */
        {0x00010000, 0x0001},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bf16_t h = f32_to_bf16(bitsf(cases[i].f));
        CHECK(h == cases[i].h, "f32_to_bf16(0x%08x) = 0x%04x, want 0x%04x", cases[i].f, h, cases[i].h);
    }
    CHECK(f32_to_bf16(bitsf(0x7F800001)) == 0x7FC0, "sNaN made quiet: 0x%04x", f32_to_bf16(bitsf(0x7F800001)));
    CHECK(f32_to_bf16(bitsf(0xFFC00001)) == 0xFFC0, "negative NaN");
    CHECK(bf16_to_f32(0x3F80) == 1.0f && bf16_to_f32(0xC040) == -3.0f, "bf16 -> f32");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((bf16_t)h);
        if (isnan(f) ? (f32_to_bf16(f) & 0x7FC0) != 0x7FC0 : f32_to_bf16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d bf16 values do not round-trip", bad);
}

/* ------------------------------------------------- hand-computed blocks */

static void test_hand_q8(void) {
    /* amax 127 makes d = 1 and the multiplier exactly 1 under both
     * formulas, so only the rounding of ties differs */
    float x[QK_K] = {127, 2.5f, -2.5f, 3.5f, 0.5f, -0.5f, 1.5f, -126.5f, 100.49f, -127};
    static const int8_t act[10] = {127, 2, -2, 4, 0, 0, 2, -126, 100, -127};     /* ties to even */
    static const int8_t wgt[10] = {127, 3, -3, 4, 1, -1, 2, -127, 100, -127};    /* ties away */
    block_q8_0 a[1], w[1];
    qtype_get(QT_Q8_0)->from_float(x, a, 32);
    CHECK(qtype_quantize_weights(QT_Q8_0, x, w, 32) == sizeof w, "bytes written");
    CHECK(a[0].d == 0x3C00 && w[0].d == 0x3C00, "d = 1: 0x%04x 0x%04x", a[0].d, w[0].d);
    for (int j = 0; j < 32; j++) {
        int wa = j < 10 ? act[j] : 0, ww = j < 10 ? wgt[j] : 0;
        CHECK(a[0].qs[j] == wa, "Q8_0 activation q[%d] = %d, want %d", j, a[0].qs[j], wa);
        CHECK(w[0].qs[j] == ww, "Q8_0 weight q[%d] = %d, want %d", j, w[0].qs[j], ww);
    }
    /* Q8_1: same quants, s = d * sum(q) = 1 * (127+2-2+4+2-126+100-127) = -20 */
    block_q8_1 b[1];
    qtype_get(QT_Q8_1)->from_float(x, b, 32);
    CHECK(b[0].d == 0x3C00 && b[0].s == 0xCD00, "Q8_1 d 0x%04x s 0x%04x (-20 = 0xCD00)", b[0].d, b[0].s);
    CHECK(memcmp(b[0].qs, a[0].qs, 32) == 0, "Q8_1 quants = Q8_0 activation quants");

    /* Q8_K: scale -127/max with max = +127 gives d = -1; quants are
     * nearest_int(-x), ties to even */
    block_q8_K k[1];
    qtype_get(QT_Q8_K)->from_float(x, k, QK_K);
    static const int8_t kq[10] = {-127, -2, 2, -4, 0, 0, -2, 126, -100, 127};
    CHECK(k[0].d == -1.0f, "Q8_K d = %g", k[0].d);
    int ok = 1;
    for (int j = 0; j < QK_K; j++) ok &= k[0].qs[j] == (j < 10 ? kq[j] : 0);
    CHECK(ok, "Q8_K quants");
    CHECK(k[0].bsums[0] == 20 && k[0].bsums[1] == 0, "bsums %d %d", k[0].bsums[0], k[0].bsums[1]);
    float y[QK_K];
    qtype_get(QT_Q8_K)->to_float(k, y, QK_K);
    CHECK(y[0] == 127 && y[1] == 2 && y[7] == -126, "Q8_K dequant");
}

static void test_hand_legacy(void) {
    float x[32], y[32];
    /* Q4_0 of j - 16: max |x| is x[0] = -16, d = -16 / -8 = 2, quant of
     * x[j] is min(15, trunc((j - 16) / 2 + 8.5)) */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    block_q4_0 q4[1];
    static const uint8_t q4qs[16] = {0x80, 0x91, 0x91, 0xA2, 0xA2, 0xB3, 0xB3, 0xC4,
                                     0xC4, 0xD5, 0xD5, 0xE6, 0xE6, 0xF7, 0xF7, 0xF8};
    qtype_get(QT_Q4_0)->from_float(x, q4, 32);
    CHECK(q4[0].d == 0x4000, "Q4_0 d 0x%04x", q4[0].d);
    CHECK(memcmp(q4[0].qs, q4qs, 16) == 0, "Q4_0 nibbles");
    qtype_get(QT_Q4_0)->to_float(q4, y, 32);
    CHECK(y[0] == -16 && y[1] == -14 && y[2] == -14 && y[31] == 14, "Q4_0 dequant %g %g %g", y[0], y[1], y[31]);

    /* Q4_1 of (j % 16) / 2 - 3: min -3, d = 7.5 / 15 = 0.5, quant j % 16 */
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 16) * 0.5f - 3;
    block_q4_1 q41[1];
    qtype_get(QT_Q4_1)->from_float(x, q41, 32);
    CHECK(q41[0].d == 0x3800 && q41[0].m == 0xC200, "Q4_1 d 0x%04x m 0x%04x", q41[0].d, q41[0].m);
    int ok = 1;
    for (int j = 0; j < 16; j++) ok &= q41[0].qs[j] == j * 0x11;
    CHECK(ok, "Q4_1 nibbles");
    qtype_get(QT_Q4_1)->to_float(q41, y, 32);
    CHECK(memcmp(x, y, sizeof x) == 0, "Q4_1 exact round trip");

    /* Q5_0 of j - 16: d = -16 / -16 = 1, quant j; 5th bits set for j >= 16 */
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    block_q5_0 q5[1];
    qtype_get(QT_Q5_0)->from_float(x, q5, 32);
    CHECK(q5[0].d == 0x3C00, "Q5_0 d");
    CHECK(q5[0].qh[0] == 0 && q5[0].qh[1] == 0 && q5[0].qh[2] == 0xFF && q5[0].qh[3] == 0xFF, "Q5_0 qh");
    ok = 1;
    for (int j = 0; j < 16; j++) ok &= q5[0].qs[j] == j * 0x11;
    CHECK(ok, "Q5_0 nibbles");
    qtype_get(QT_Q5_0)->to_float(q5, y, 32);
    CHECK(memcmp(x, y, sizeof x) == 0, "Q5_0 exact round trip");

    /* Q5_1 of j / 4: min 0, d = 7.75 / 31 = 0.25, quant j */
    for (int j = 0; j < 32; j++) x[j] = (float)j * 0.25f;
    block_q5_1 q51[1];
    qtype_get(QT_Q5_1)->from_float(x, q51, 32);
    CHECK(q51[0].d == 0x3400 && q51[0].m == 0, "Q5_1 d 0x%04x m 0x%04x", q51[0].d, q51[0].m);
    CHECK(q51[0].qh[0] == 0 && q51[0].qh[1] == 0 && q51[0].qh[2] == 0xFF && q51[0].qh[3] == 0xFF, "Q5_1 qh");
    qtype_get(QT_Q5_1)->to_float(q51, y, 32);
    CHECK(memcmp(x, y, sizeof x) == 0, "Q5_1 exact round trip");
}

/* The K-quant blocks are packed here by hand from the format description
 * and the expected values computed from the formula. */
static const int k4_sc[8] = {1, 2, 3, 4, 17, 33, 49, 63};
static const int k4_mn[8] = {0, 1, 2, 3, 16, 32, 48, 62};
/* The 12 scale bytes for k4_sc / k4_mn (see the layout in quant_kquants.c):
 * bytes 0-3 sc[0..3] | top bits of sc[4..7] << 6, bytes 4-7 mn[0..3] | top
 * bits of mn[4..7] << 6, bytes 8-11 sc[4..7] & 15 | (mn[4..7] & 15) << 4. */
static const uint8_t k4_bytes[12] = {0x41, 0x82, 0xC3, 0xC4, 0x40, 0x81, 0xC2, 0xC3,
                                     0x01, 0x01, 0x01, 0xEF};

static void test_hand_kquants(void) {
    float y[QK_K];

    /* Q4_K: d = 1, dmin = 0.5; low nibbles l % 16, high nibbles 15 - l % 16 */
    block_q4_K b4;
    b4.d = 0x3C00;
    b4.dmin = 0x3800;
    memcpy(b4.scales, k4_bytes, 12);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) b4.qs[32 * g + l] = (uint8_t)((l % 16) | (15 - l % 16) << 4);
    qtype_get(QT_Q4_K)->to_float(&b4, y, QK_K);
    int bad = 0;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            float lo = (float)(k4_sc[2 * g] * (l % 16)) - 0.5f * k4_mn[2 * g];
            float hi = (float)(k4_sc[2 * g + 1] * (15 - l % 16)) - 0.5f * k4_mn[2 * g + 1];
            bad += y[64 * g + l] != lo;
            bad += y[64 * g + 32 + l] != hi;
        }
    CHECK(bad == 0, "Q4_K hand block: %d wrong values", bad);

    /* Q5_K: same, plus qh = 0xAA: the upper 32 of each 64 get +16 */
    block_q5_K b5;
    b5.d = 0x3C00;
    b5.dmin = 0x3800;
    memcpy(b5.scales, k4_bytes, 12);
    memcpy(b5.qs, b4.qs, sizeof b5.qs);
    memset(b5.qh, 0xAA, sizeof b5.qh);
    qtype_get(QT_Q5_K)->to_float(&b5, y, QK_K);
    bad = 0;
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            float lo = (float)(k4_sc[2 * g] * (l % 16)) - 0.5f * k4_mn[2 * g];
            float hi = (float)(k4_sc[2 * g + 1] * (15 - l % 16 + 16)) - 0.5f * k4_mn[2 * g + 1];
            bad += y[64 * g + l] != lo;
            bad += y[64 * g + 32 + l] != hi;
        }
    CHECK(bad == 0, "Q5_K hand block: %d wrong values", bad);

    /* Q6_K: d = 0.5, scale of group j = j - 8, quant of value v = v % 64 */
    block_q6_K b6;
    memset(&b6, 0, sizeof b6);
    b6.d = 0x3800;
    for (int j = 0; j < 16; j++) b6.scales[j] = (int8_t)(j - 8);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            int v = 128 * h + l;
            int q0 = v % 64, q1 = (v + 32) % 64, q2 = (v + 64) % 64, q3 = (v + 96) % 64;
            b6.ql[64 * h + l] = (uint8_t)((q0 & 15) | (q2 & 15) << 4);
            b6.ql[64 * h + 32 + l] = (uint8_t)((q1 & 15) | (q3 & 15) << 4);
            b6.qh[32 * h + l] = (uint8_t)((q0 >> 4) | (q1 >> 4) << 2 | (q2 >> 4) << 4 | (q3 >> 4) << 6);
        }
    qtype_get(QT_Q6_K)->to_float(&b6, y, QK_K);
    bad = 0;
    for (int v = 0; v < QK_K; v++) bad += y[v] != 0.5f * (float)((v / 16 - 8) * (v % 64 - 32));
    CHECK(bad == 0, "Q6_K hand block: %d wrong values", bad);

    /* Q3_K: d = 0.25, stored scale u_j = 5j mod 64 (scale u_j - 32), quant
     * of value v = v % 8 (2 low bits in qs, high bit in hmask) */
    block_q3_K b3;
    memset(&b3, 0, sizeof b3);
    b3.d = 0x3400;
    int u[16];
    for (int j = 0; j < 16; j++) u[j] = (5 * j) % 64;
    for (int j = 0; j < 8; j++) b3.scales[j] = (uint8_t)((u[j] & 15) | (u[j + 8] & 15) << 4);
    for (int j = 0; j < 16; j++) b3.scales[8 + j % 4] |= (uint8_t)(((u[j] >> 4) & 3) << (2 * (j / 4)));
    for (int v = 0; v < QK_K; v++) {
        int q = v % 8, c = v / 128, r = v % 128;
        b3.qs[32 * c + r % 32] |= (uint8_t)((q & 3) << (2 * (r / 32)));
        if (q & 4) b3.hmask[v % 32] |= (uint8_t)(1 << (v / 32));
    }
    qtype_get(QT_Q3_K)->to_float(&b3, y, QK_K);
    bad = 0;
    for (int v = 0; v < QK_K; v++) bad += y[v] != 0.25f * (float)((u[v / 16] - 32) * (v % 8 - 4));
    CHECK(bad == 0, "Q3_K hand block: %d wrong values", bad);

    /* Q2_K: d = 0.5, dmin = 0.25, group j: scale j, min 15 - j; quant v % 4 */
    block_q2_K b2;
    memset(&b2, 0, sizeof b2);
    b2.d = 0x3800;
    b2.dmin = 0x3400;
    for (int j = 0; j < 16; j++) b2.scales[j] = (uint8_t)(j | (15 - j) << 4);
    for (int v = 0; v < QK_K; v++) {
        int c = v / 128, r = v % 128;
        b2.qs[32 * c + r % 32] |= (uint8_t)((v % 4) << (2 * (r / 32)));
    }
    qtype_get(QT_Q2_K)->to_float(&b2, y, QK_K);
    bad = 0;
    for (int v = 0; v < QK_K; v++) {
        int j = v / 16;
        bad += y[v] != 0.5f * (float)(j * (v % 4)) - 0.25f * (float)(15 - j);
    }
    CHECK(bad == 0, "Q2_K hand block: %d wrong values", bad);

    /* the hand blocks against a hand Q8_K row (d = 1, q = v % 7 - 3): the dot
     * product must equal the dot of the dequantized values exactly (all
     * terms are small multiples of 1/4, so every sum is exact in float) */
    block_q8_K a;
    memset(&a, 0, sizeof a);
    a.d = 1.0f;
    for (int v = 0; v < QK_K; v++) a.qs[v] = (int8_t)(v % 7 - 3);
    for (int j = 0; j < 16; j++)
        for (int l = 0; l < 16; l++) a.bsums[j] = (int16_t)(a.bsums[j] + a.qs[16 * j + l]);
    const void *blocks[5] = {&b2, &b3, &b4, &b5, &b6};
    const int types[5] = {QT_Q2_K, QT_Q3_K, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    for (int t = 0; t < 5; t++) {
        const qtype_info *qi = qtype_get(types[t]);
        qi->to_float(blocks[t], y, QK_K);
        double want = 0;
        for (int v = 0; v < QK_K; v++) want += (double)y[v] * a.qs[v];
        float got;
        qi->vec_dot(QK_K, &got, blocks[t], &a);
        CHECK(got == (float)want, "%s hand vec_dot %.9g, want %.9g", qi->name, got, want);
    }
}

/* ------------------------------------------------------------ round trip */

static void test_round_trip(void) {
    static const int lengths[] = {32, 64, 96, 256, 1024, 4096};
    rng_t r = {12345};
    float *x = malloc(4096 * sizeof(float)), *y = malloc(4096 * sizeof(float));
    void *q = malloc(qtype_row_size(QT_F32, 4096));
    for (int ti = 0; ti < N_TYPES; ti++) {
        const qtype_info *qi = qtype_get(all_types[ti]);
        for (int d = 0; d < D_COUNT; d++) {
            double bound = rmse_bound(all_types[ti]) * (d == D_OUTLIERS ? outlier_factor(all_types[ti]) : 1.0);
            double worst = 0;
            for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
                int n = lengths[li];
                if (n % qi->blck) continue;
                fill(x, n, (enum dist)d, &r);
                memset(y, 0xFF, (size_t)n * sizeof(float)); /* NaN: catches unwritten outputs */
                qi->from_float(x, q, n);
                qi->to_float(q, y, n);
                if (d == D_ZERO) { /* +0 or -0 (a scale of -0 is what llama.cpp stores too) */
                    int nz = 0;
                    for (int i = 0; i < n; i++) nz += y[i] != 0.0f;
                    CHECK(nz == 0, "%s zeros, n=%d: %d values not 0", qi->name, n, nz);
                    continue;
                }
                double e = rel_rmse(x, y, n);
                if (!(e <= worst)) worst = e;
                CHECK(e <= bound, "%s %s n=%d: relative rmse %.5f > %.5f", qi->name, dist_name[d], n, e, bound);
            }
            if (verbose && d != D_ZERO)
                printf("  round trip %-4s %-8s worst rel rmse %.5f (bound %.3f)\n", qi->name, dist_name[d], worst, bound);
        }
    }
    free(x);
    free(y);
    free(q);
}

/* ---------------------------------------------------------------- vec_dot */

static void test_vec_dot(void) {
    static const int lengths[] = {32, 64, 96, 256, 1024, 4096};
    rng_t r = {777};
    float *w = malloc(4096 * sizeof(float)), *a = malloc(4096 * sizeof(float));
    float *wd = malloc(4096 * sizeof(float)), *ad = malloc(4096 * sizeof(float));
    void *wq = malloc(4096 * sizeof(float)), *aq = malloc(4096 * sizeof(float));
    for (int ti = 0; ti < N_TYPES; ti++) {
        const qtype_info *qi = qtype_get(all_types[ti]);
        if (!qi->vec_dot) continue;
        const qtype_info *ai = qtype_get(qi->vec_dot_type);
        double worst = 0;
        for (int d = 0; d < D_COUNT; d++) {
            for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
                int n = lengths[li];
                if (n % qi->blck || n % ai->blck) continue;
                fill(w, n, (enum dist)d, &r);
                fill(a, n, d == D_CONST ? D_GAUSS : (enum dist)d, &r);
                qi->from_float(w, wq, n);
                ai->from_float(a, aq, n);
                qi->to_float(wq, wd, n);
                ai->to_float(aq, ad, n);
                double want = 0, mag = 0;
                for (int i = 0; i < n; i++) {
                    want += (double)wd[i] * ad[i];
                    mag += fabs((double)wd[i] * ad[i]);
                }
                if (qi->vec_dot_type == QT_Q8_1) {
                    /* the offset term m * sum(a) of a block is m * s, with s
                     * the half-rounded d * sum(q) stored in the Q8_1 block,
                     * not the sum of the dequantized activations */
                    const block_q8_1 *ab = aq;
                    for (int b = 0; b < n / QK8_1; b++) {
                        const fp16_t m = all_types[ti] == QT_Q4_1 ? ((const block_q4_1 *)wq)[b].m
                                                                   : ((const block_q5_1 *)wq)[b].m;
                        int qsum = 0;
                        for (int j = 0; j < QK8_1; j++) qsum += ab[b].qs[j];
                        want += (double)fp16_to_f32(m) *
                                ((double)fp16_to_f32(ab[b].s) - (double)fp16_to_f32(ab[b].d) * qsum);
                    }
                }
                float got = NAN;
                qi->vec_dot(n, &got, wq, aq);
                double err = fabs(got - want);
                CHECK(err <= 1e-5 * mag, "%s . %s %s n=%d: %.9g vs %.9g (sum|wa| %.3g)", qi->name, ai->name,
                      dist_name[d], n, got, want, mag);
                if (mag > 0 && err / mag > worst) worst = err / mag;
                /* sanity of the pairing: close to the unquantized dot too */
                double exact = 0, emag = 0;
                for (int i = 0; i < n; i++) {
                    exact += (double)w[i] * a[i];
                    emag += fabs((double)w[i] * a[i]);
                }
                CHECK(fabs(got - exact) <= 4 * (rmse_bound(all_types[ti]) + 0.01) * emag + 1e-30,
                      "%s dot %.6g far from unquantized %.6g", qi->name, got, exact);
            }
        }
        if (verbose) printf("  vec_dot %-4s x %-4s worst |err| / sum|w a| %.2e\n", qi->name, ai->name, worst);
    }
    free(w); free(a); free(wd); free(ad); free(wq); free(aq);
}

/* ------------------------------------------------------------ fixtures */

typedef struct {
    int tensors, exact_bytes;   /* quantized tensors checked / reproduced byte for byte */
    double worst_rmse;          /* worst relative rmse of a dequantized tensor */
} type_stats;

static void check_fixture(const gguf_file *ref, const char *name, type_stats *stats) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/models/%s.gguf", fixtures_dir(), name);
    gguf_file *f = gguf_open(path, err, sizeof err);
    CHECK(f != NULL, "%s", err);
    if (!f) return;
    int n_quant = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const gguf_tensor *r = gguf_find_tensor(ref, t->name);
        CHECK(r != NULL && r->type == QT_F32, "%s: %s has no F32 counterpart", name, t->name);
        if (!r || r->type != QT_F32) continue;
        int64_t nel = 1;
        for (int k = 0; k < GGUF_MAX_DIMS; k++) nel *= t->ne[k];
        CHECK(memcmp(t->ne, r->ne, sizeof t->ne) == 0, "%s: %s shape differs", name, t->name);
        if (t->type == QT_F32) {
            CHECK(t->nbytes == r->nbytes && memcmp(t->data, r->data, t->nbytes) == 0,
                  "%s: F32 tensor %s differs from the F32 file", name, t->name);
            continue;
        }
        const qtype_info *qi = qtype_get(t->type);
        CHECK(qi != NULL, "%s: %s has unsupported type %d", name, t->name, t->type);
        if (!qi) continue;
        const int64_t ne0 = t->ne[0], nrows = nel / ne0;
        const size_t row = qtype_row_size(t->type, ne0);
        CHECK(row > 0 && row * (uint64_t)nrows == t->nbytes, "%s: %s size", name, t->name);
        if (row == 0 || row * (uint64_t)nrows != t->nbytes) continue;
        n_quant++;
        float *deq = malloc((size_t)nel * sizeof(float));
        uint8_t *requant = malloc(row);
        int64_t rows_differ = 0;
        for (int64_t j = 0; j < nrows; j++) {
            const uint8_t *src = (const uint8_t *)t->data + j * row;
            const float *f32 = (const float *)r->data + j * ne0;
            qi->to_float(src, deq + j * ne0, ne0);
            qtype_quantize_weights(t->type, f32, requant, ne0);
            rows_differ += memcmp(requant, src, row) != 0;
        }
        double e = rel_rmse((const float *)r->data, deq, nel);
        CHECK(e <= rmse_bound(t->type), "%s: %s (%s) dequantized rel rmse %.5f > %.5f", name, t->name, qi->name, e,
              rmse_bound(t->type));
        CHECK(rows_differ == 0, "%s: %s (%s): %lld of %lld rows not byte-identical when requantized", name, t->name,
              qi->name, (long long)rows_differ, (long long)nrows);
        type_stats *s = &stats[t->type];
        s->tensors++;
        s->exact_bytes += rows_differ == 0;
        if (e > s->worst_rmse) s->worst_rmse = e;
        free(deq);
        free(requant);
    }
    CHECK(n_quant > 0, "%s: no quantized tensor", name);
    gguf_close(f);
}

static void test_fixtures(void) {
    type_stats stats[QT_COUNT];
    memset(stats, 0, sizeof stats);
    static const struct { const char *ref, *file; } pairs[] = {
        {"tiny-v3-f32", "tiny-v3-Q8_0"},       {"tiny-v3-f32", "tiny-v3-Q4_0"},
        {"tiny-v3-f32", "tiny-v3-Q4_K_M"},     {"tiny-v3-f32", "tiny-v3-f16"},
        {"tiny-v3-f32", "tiny-v3-bf16"},       {"tiny-v2lite-f32", "tiny-v2lite-Q4_K_M"},
    };
    gguf_file *ref = NULL;
    const char *ref_name = NULL;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (!ref_name || strcmp(ref_name, pairs[i].ref) != 0) {
            char path[512], err[512];
            if (ref) gguf_close(ref);
            snprintf(path, sizeof path, "%s/models/%s.gguf", fixtures_dir(), pairs[i].ref);
            ref = gguf_open(path, err, sizeof err);
            ref_name = pairs[i].ref;
            CHECK(ref != NULL, "%s", err);
        }
        if (ref) check_fixture(ref, pairs[i].file, stats);
    }
    if (ref) gguf_close(ref);
    /* every quantized type the fixtures use was seen */
    static const int seen[] = {QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q5_0, QT_Q5_1, QT_Q4_K, QT_Q6_K};
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++)
        CHECK(stats[seen[i]].tensors > 0, "no %s tensor found in the fixtures", qtype_name(seen[i]));
    for (int t = 0; t < QT_COUNT; t++)
        if (stats[t].tensors)
            printf("  fixtures %-4s: %3d tensors, %3d byte-identical when requantized, worst rel rmse %.5f\n",
                   qtype_name(t), stats[t].tensors, stats[t].exact_bytes, stats[t].worst_rmse);
}

int main(void) {
    verbose = getenv("MOE_QUANT_VERBOSE") != NULL;
    test_layout();
    test_fp16();
    test_bf16();
    test_hand_q8();
    test_hand_legacy();
    test_hand_kquants();
    test_round_trip();
    test_vec_dot();
    test_fixtures();
    return check_summary("test_quant");
}
