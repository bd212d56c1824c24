/* Kernels: every SIMD path this CPU can run against the scalar reference
 * of quant.h, for every weight type, on random data and odd shapes:
 *   - activation quantization bit-exact with from_float (with ties, NaN,
 *     infinities and all-zero blocks);
 *   - products within kern_tolerance() of the reference vec_dot;
 *   - determinism: a (row, token) result is bitwise the same alone or at
 *     any place in a batch of 1..67, on 1, 2 or 3 threads, through
 *     kern_matmul, kern_matmul_q and kern_matmul_multi;
 * plus the thread pool (every thread runs once per run, barrier, wake-up
 * after sleeping, -t parsing) and argument checks.
 * `test_kernels --print-path` prints the path kern_init chose and
 * `--supported` the paths this CPU can run (for test_kernels_paths.sh). */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "cpu.h"
#include "kernels.h"
#include "llama_order.h"
#include "quant.h"
#include "threadpool.h"

/* ---- random data ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}
static float frand(void) { return (float)((rnd() >> 40) * 0x1p-24) * 2.0f - 1.0f; }
/* roughly normal, occasionally large, like activations */
static float arand(void) {
    float v = frand() + frand() + frand();
    return (rnd() % 50 == 0) ? v * 8 : v;
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Offsets of the fp16 scale fields of each block, so random bytes can be
 * made into valid (finite) blocks. */
static int scale_fields(int type, int off[2]) {
    switch (type) {
    case QT_Q4_0: case QT_Q5_0: case QT_Q8_0: off[0] = 0; return 1;
    case QT_Q4_1: case QT_Q5_1: off[0] = 0; off[1] = 2; return 2;
    case QT_Q4_K: case QT_Q5_K: off[0] = 0; off[1] = 2; return 2;
    case QT_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case QT_Q3_K: off[0] = 108; return 1;
    case QT_Q6_K: off[0] = 208; return 1;
    default: return -1;
    }
}

/* rows x cols weights: from the reference quantizer of random rows with
 * varied magnitudes, or (raw) random bits with finite scales, which
 * reaches every quant and scale pattern. */
static uint8_t *make_weights(int type, int rows, int cols, int raw, size_t *stride) {
    const qtype_info *qi = qtype_get(type);
    *stride = qtype_row_size(type, cols);
    uint8_t *w = malloc(*stride * (size_t)rows);
    float *x = malloc(sizeof(float) * (size_t)cols);
    int off[2];
    int nf = scale_fields(type, off);
    for (int r = 0; r < rows; r++) {
        uint8_t *row = w + (size_t)r * *stride;
        if (raw && nf > 0) {
            for (size_t i = 0; i < *stride; i++) row[i] = (uint8_t)rnd();
            for (int b = 0; b < cols / qi->blck; b++)
                for (int f = 0; f < nf; f++)
                    put16(row + (size_t)b * qi->type_size + off[f], f32_to_fp16(frand() * 0.02f));
        } else {
            float mag = (rnd() % 4 == 0) ? 10.0f : (rnd() % 3 == 0) ? 1e-3f : 1.0f;
            for (int k = 0; k < cols; k++) x[k] = frand() * mag;
            if (rnd() % 8 == 0) /* a zero stretch: all-zero blocks */
                for (int k = 0; k < cols / 2; k++) x[k] = 0;
            qtype_quantize_weights(type, x, row, cols);
        }
    }
    free(x);
    return w;
}

/* ---- activation quantization ---- */

static void test_quantize_exact(enum kern_path p) {
    static const int types[] = {QT_Q4_K, QT_Q4_0, QT_F16, QT_BF16, QT_F32};
    const int n = 1024;
    float *x = malloc(sizeof(float) * n);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const int wt = types[ti];
        const size_t bytes = kern_act_row_size(wt, n);
        uint8_t *a = malloc(bytes), *b = malloc(bytes);
        for (int trial = 0; trial < 40; trial++) {
            for (int k = 0; k < n; k++) x[k] = arand() * (trial % 5 == 0 ? 1e-20f : 1.0f);
            if (trial % 4 == 1) /* ties: 127/amax == 1, halves round to even */
                for (int k = 0; k < n; k++) x[k] = (float)((int)(rnd() % 254) - 127) + ((k % 3) ? 0.5f : 0.0f);
            if (trial % 4 == 1)
                for (int k = 0; k < n; k += 32) x[k] = 127.0f;
            if (trial % 7 == 2) { /* specials in some blocks */
                x[3] = NAN;
                x[300] = INFINITY;
                x[600] = -INFINITY;
                for (int k = 512; k < 768; k++) x[k] = 0.0f;
                x[900] = -0.0f;
                x[901] = 1e-45f; /* subnormal */
                x[902] = 65520.0f;
            }
            if (trial % 9 == 3) /* equal magnitudes of both signs: first wins */
                for (int k = 0; k < n; k++) x[k] = (k % 2) ? 0.25f : -0.25f;
            memset(a, 0xAB, bytes);
            memset(b, 0xCD, bytes);
            qtype_get(qtype_get(wt)->vec_dot_type)->from_float(x, a, n);
            kern_quantize_act_path(p, wt, x, b, n);
            CHECK(memcmp(a, b, bytes) == 0, "%s: %s activation quantization differs from the reference (trial %d)",
                  kern_path_name(p), qtype_name(qtype_get(wt)->vec_dot_type), trial);
        }
        free(a);
        free(b);
    }
    free(x);
}

/* ---- products ---- */

typedef struct prob {
    int type, rows, cols, ntok;
    uint8_t *wbuf;   /* allocation; W may start a few bytes in */
    const uint8_t *W;
    size_t stride;
    float *X;        /* ntok x cols */
    uint8_t *Xq;     /* reference-quantized activations */
    size_t qstride;
    float *yref;     /* ntok x rows reference */
    double *tol;     /* ntok x rows */
} prob;

static void prob_init(prob *pb, int type, int rows, int cols, int ntok, int raw, int misalign) {
    memset(pb, 0, sizeof *pb);
    pb->type = type;
    pb->rows = rows;
    pb->cols = cols;
    pb->ntok = ntok;
    uint8_t *w = make_weights(type, rows, cols, raw, &pb->stride);
    /* misaligned: the least alignment a tensor can have (blocks hold
     * 16-bit fields and every block size is even; F32 rows hold floats),
     * as expert slices of a GGUF tensor are not 64-byte aligned */
    const size_t shift = misalign ? (type == QT_F32 ? 4 : 2) : 0;
    pb->wbuf = malloc(pb->stride * (size_t)rows + shift);
    memcpy(pb->wbuf + shift, w, pb->stride * (size_t)rows);
    free(w);
    pb->W = pb->wbuf + shift;
    pb->X = malloc(sizeof(float) * (size_t)ntok * cols);
    for (int i = 0; i < ntok * cols; i++) pb->X[i] = arand();
    const qtype_info *qi = qtype_get(type), *ai = qtype_get(qi->vec_dot_type);
    pb->qstride = kern_act_row_size(type, cols);
    pb->Xq = malloc(pb->qstride * (size_t)ntok);
    pb->yref = malloc(sizeof(float) * (size_t)ntok * rows);
    pb->tol = malloc(sizeof(double) * (size_t)ntok * rows);
    float *wd = malloc(sizeof(float) * (size_t)rows * cols), *ad = malloc(sizeof(float) * (size_t)cols);
    for (int r = 0; r < rows; r++) qi->to_float(pb->W + (size_t)r * pb->stride, wd + (size_t)r * cols, cols);
    for (int t = 0; t < ntok; t++) {
        uint8_t *q = pb->Xq + (size_t)t * pb->qstride;
        ai->from_float(pb->X + (size_t)t * cols, q, cols);
        ai->to_float(q, ad, cols);
        for (int r = 0; r < rows; r++) {
            qi->vec_dot(cols, &pb->yref[(size_t)t * rows + r], pb->W + (size_t)r * pb->stride, q);
            double s = 0;
            for (int k = 0; k < cols; k++) s += fabs((double)wd[(size_t)r * cols + k] * ad[k]);
            pb->tol[(size_t)t * rows + r] = kern_tolerance(cols, s);
        }
    }
    free(wd);
    free(ad);
}

static void prob_free(prob *pb) {
    free(pb->wbuf);
    free(pb->X);
    free(pb->Xq);
    free(pb->yref);
    free(pb->tol);
}

/* worst |y - y_ref| / tolerance seen per path and type, printed at the end */
static double g_worst[3][QT_COUNT];

static int bits_equal(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* Against the reference, and the same bits on 1/2/3 threads, through
 * kern_matmul_q, token by token and for sub-batches. */
static void test_product(enum kern_path p, tpool *tp1, tpool *tp2, tpool *tp3, int type, int rows, int cols,
                         int ntok, int raw, int misalign) {
    prob pb;
    prob_init(&pb, type, rows, cols, ntok, raw, misalign);
    const char *pn = kern_path_name(p), *tn = qtype_name(type);
    const size_t ny = (size_t)ntok * rows;
    float *y = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);

    kern_matmul_path(p, tp2, type, pb.W, rows, cols, pb.X, ntok, y);
    int bad = 0;
    double worst = 0;
    for (size_t i = 0; i < ny; i++) {
        double e = fabs((double)y[i] - pb.yref[i]);
        if (!(e <= pb.tol[i])) bad++;
        if (pb.tol[i] > 0 && e / pb.tol[i] > worst) worst = e / pb.tol[i];
    }
    if (worst > g_worst[p][type]) g_worst[p][type] = worst;
    CHECK(bad == 0, "%s %s %dx%d ntok %d raw %d: %d of %zu results outside the tolerance (worst %.2f x tol)", pn,
          tn, rows, cols, ntok, raw, bad, ny, worst);

    kern_matmul_path(p, tp1, type, pb.W, rows, cols, pb.X, ntok, y2);
    CHECK(bits_equal(y, y2, ny), "%s %s %dx%d: 1 thread differs from 2 threads", pn, tn, rows, cols);
    kern_matmul_path(p, tp3, type, pb.W, rows, cols, pb.X, ntok, y2);
    CHECK(bits_equal(y, y2, ny), "%s %s %dx%d: 3 threads differ from 2 threads", pn, tn, rows, cols);
    kern_matmul_path(p, NULL, type, pb.W, rows, cols, pb.X, ntok, y2);
    CHECK(bits_equal(y, y2, ny), "%s %s %dx%d: no pool differs from 2 threads", pn, tn, rows, cols);
    kern_matmul_q_path(p, tp2, type, pb.W, rows, cols, pb.Xq, ntok, y2);
    CHECK(bits_equal(y, y2, ny), "%s %s %dx%d: kern_matmul_q differs from kern_matmul", pn, tn, rows, cols);

    int tok_bad = 0;
    for (int t = 0; t < ntok; t++) {
        kern_matmul_path(p, tp2, type, pb.W, rows, cols, pb.X + (size_t)t * cols, 1, y2);
        if (!bits_equal(y + (size_t)t * rows, y2, (size_t)rows)) tok_bad++;
    }
    CHECK(tok_bad == 0, "%s %s %dx%d: %d tokens differ alone (batch 1) vs in a batch of %d", pn, tn, rows, cols,
          tok_bad, ntok);
    if (ntok > 3) { /* a middle slice: tokens at other positions */
        int s = ntok / 3, b = ntok / 2;
        kern_matmul_path(p, tp1, type, pb.W, rows, cols, pb.X + (size_t)s * cols, b, y2);
        CHECK(bits_equal(y + (size_t)s * rows, y2, (size_t)b * rows), "%s %s %dx%d: tokens %d..%d differ in a sub-batch",
              pn, tn, rows, cols, s, s + b - 1);
    }
    free(y);
    free(y2);
    prob_free(&pb);
}

/* Batches 1..67 at every start offset class: each token's row equals its
 * result in the full batch. */
static void test_batches(enum kern_path p, tpool *tp, int type, int rows, int cols) {
    const int N = 67;
    prob pb;
    prob_init(&pb, type, rows, cols, N, 0, 0);
    float *full = malloc(sizeof(float) * (size_t)N * rows), *y = malloc(sizeof(float) * (size_t)N * rows);
    kern_matmul_path(p, tp, type, pb.W, rows, cols, pb.X, N, full);
    int bad = 0;
    for (int b = 1; b <= N; b++) {
        int s = (b * 7) % (N - b + 1);
        kern_matmul_path(p, tp, type, pb.W, rows, cols, pb.X + (size_t)s * cols, b, y);
        if (!bits_equal(full + (size_t)s * rows, y, (size_t)b * rows)) bad++;
    }
    CHECK(bad == 0, "%s %s: %d of 67 batch sizes change some result bits", kern_path_name(p), qtype_name(type), bad);
    free(full);
    free(y);
    prob_free(&pb);
}

/* kern_matmul_multi (current path): experts with their own tokens and
 * shapes in one run give the bits of separate kern_matmul calls. */
static void test_multi(tpool *tp) {
    static const int types[] = {QT_Q4_K, QT_Q8_0, QT_Q6_K, QT_F32, QT_Q4_1};
    enum { NJ = 5 };
    prob pb[NJ];
    kern_mm mm[NJ];
    float *ys[NJ], *ym[NJ];
    for (int i = 0; i < NJ; i++) {
        int cols = types[i] == QT_F32 ? 72 : 512, rows = 9 + 13 * i, ntok = i == 2 ? 0 : 1 + 3 * i;
        prob_init(&pb[i], types[i], rows, cols, ntok > 0 ? ntok : 1, 0, 0);
        ys[i] = calloc((size_t)rows * (ntok > 0 ? ntok : 1), sizeof(float));
        ym[i] = calloc((size_t)rows * (ntok > 0 ? ntok : 1), sizeof(float));
        mm[i] = (kern_mm){types[i], pb[i].W, rows, cols, pb[i].X, ntok, ym[i]};
        kern_matmul(tp, types[i], pb[i].W, rows, cols, pb[i].X, ntok, ys[i]);
    }
    kern_matmul_multi(tp, mm, NJ);
    for (int i = 0; i < NJ; i++) {
        CHECK(bits_equal(ys[i], ym[i], (size_t)mm[i].rows * (mm[i].ntok > 0 ? mm[i].ntok : 1)),
              "kern_matmul_multi job %d (%s) differs from kern_matmul", i, qtype_name(types[i]));
        free(ys[i]);
        free(ym[i]);
        prob_free(&pb[i]);
    }
}

/* The llama.cpp-order kernels (kern_matmul_llama, called by lo_matmul)
 * must give lo_matmul's scalar bits for every op, layout and type they
 * cover, on odd shapes and any thread count.  Run in a process whose
 * global path is scalar (see main), so lo_matmul is the scalar code. */
static void test_llama_order(enum kern_path p, tpool *tp1, tpool *tp2) {
    static const int types[] = {QT_Q4_0, QT_Q5_0, QT_Q8_0, QT_Q4_K, QT_Q5_K, QT_Q6_K,
                                QT_Q2_K, QT_Q3_K, QT_F32,  QT_F16,  QT_BF16};
    static const int rows_list[] = {8, 9, 24};
    static const enum lo_kernel kernels[] = {LO_K_VEC, LO_K_TINY, LO_K_GEMM};
    int bad = 0, cases = 0, q2_rep[3] = {0}; /* Q2_K repacked cases per op */
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const int t = types[ti], blk = qtype_get(t)->blck;
        const int cols_list[3] = {blk == 1 ? 64 : blk * (blk == 256 ? 2 : 4), blk == 1 ? 200 : blk * (blk == 256 ? 3 : 7),
                                  blk == 1 ? 96 : blk};
        for (int ri = 0; ri < 3; ri++)
            for (int ci = 0; ci < 6; ci++) {
                /* ci >= 3: the same shapes with 9..45 tokens (whole 8-token
                 * tiles plus every kind of remainder) */
                const int rows = rows_list[ri], cols = cols_list[ci % 3];
                const int ntok = ci < 3 ? 1 + 2 * ci + ri : 9 + 11 * (ci - 3) + 4 * ri;
                prob pb;
                prob_init(&pb, t, rows, cols, ntok, ri == 1, ci % 3 == 2);
                float *ref = malloc(sizeof(float) * (size_t)rows * ntok), *y = malloc(sizeof(float) * (size_t)rows * ntok);
                for (int op = 0; op < 3; op++)
                    for (int rep = 0; rep < 2; rep++) {
                        if (rep && !lo_repacked(t, rows, true)) continue;
                        const int n = op == LO_MUL_MAT_1 ? 1 : ntok;
                        lo_matmul(tp2, (enum lo_op)op, rep, t, pb.W, rows, cols, pb.X, n, ref); /* scalar */
                        /* the kernel lo_matmul picks for this op: try each, only
                         * the one it uses must match, the others must decline
                         * or also match (VEC/TINY/GEMM agree where shared) */
                        const int kk = op != LO_MUL_MAT_N ? LO_K_VEC
                                       : rep                 ? LO_K_GEMM
                                       : ((t == QT_F32 || t == QT_F16) && cols % 16 == 0 && rows % 4 == 0) ||
                                                 (t == QT_BF16 && cols % 32 == 0 && rows % 4 == 0)
                                           ? LO_K_TINY
                                           : LO_K_VEC;
                        tpool *tp = (op + ri) % 2 ? tp1 : tp2;
                        memset(y, 0xFF, sizeof(float) * (size_t)rows * n);
                        if (!kern_matmul_llama_path(p, tp, kernels[kk], rep, t, pb.W, rows, cols, pb.Xq, pb.qstride, n, y))
                            continue;
                        cases++;
                        if (t == QT_Q2_K && rep) q2_rep[op]++;
                        if (!bits_equal(ref, y, (size_t)rows * n)) {
                            bad++;
                            size_t i = 0;
                            while (i < (size_t)rows * n && !memcmp(&ref[i], &y[i], 4)) i++;
                            fprintf(stderr, "  %s %s op %d repacked %d %dx%d ntok %d: first difference at %zu: %.9g vs %.9g\n",
                                    kern_path_name(p), qtype_name(t), op, rep, rows, cols, n, i, ref[i], y[i]);
                        }
                    }
                free(ref);
                free(y);
                prob_free(&pb);
            }
    }
    CHECK(cases > 0, "%s: no llama-order kernel ran", kern_path_name(p));
    /* repacked Q2_K (rows 8 and 24): gemv for 1-row and mul_mat_id ops, gemm for multi-row ones */
    CHECK(q2_rep[LO_MUL_MAT_1] > 0 && q2_rep[LO_MUL_MAT_N] > 0 && q2_rep[LO_MUL_MAT_ID] > 0,
          "%s: repacked Q2_K cases per op %d %d %d", kern_path_name(p), q2_rep[0], q2_rep[1], q2_rep[2]);
    { /* the attention dot product: lengths with and without a tail */
        int dbad = 0;
        float x[300], z[300];
        for (int i = 0; i < 300; i++) x[i] = arand(), z[i] = arand();
        for (int n = 1; n < 300; n += 7) {
            float r = lo_dot_f32(n, x, z), s = 0;
            if (!kern_dot_f32_llama_path(p, n, x, z, &s) || memcmp(&r, &s, 4)) dbad++;
        }
        CHECK(dbad == 0, "%d dot products differ from lo_dot_f32", dbad);
    }
    CHECK(bad == 0, "%s: %d of %d llama-order products differ from lo_matmul", kern_path_name(p), bad, cases);
    printf("path %s: %d llama-order cases bitwise equal to lo_matmul\n", kern_path_name(p), cases - bad);
}

/* The attention and element-wise steps of llama_order.h against their
 * scalar code (this process runs with MOE_KERNEL=scalar, so lo_* is the
 * reference): softmax, swiglu, rope and a whole attention query, bitwise,
 * on lengths with and without tails, overflowing and subnormal exps, NaN
 * and infinities, signed zeros. */
static void test_llama_steps(enum kern_path p) {
    int bad = 0, cases = 0;
    float a[600], b[600], g[600], u[600];
    /* softmax: attention-like rows, -inf padding, spreads that underflow
     * (subnormal and zero results), a NaN row */
    for (int n = 1; n <= 300; n += (n < 40 ? 1 : 13)) {
        for (int kind = 0; kind < 4; kind++) {
            for (int i = 0; i < n; i++) {
                a[i] = kind == 0 ? arand() : kind == 1 ? -110.0f * (float)(rnd() % 1000) / 1000.0f : arand() * 60.0f;
                if (kind == 3 && i == n / 2) a[i] = NAN;
            }
            if (kind == 0)
                for (int i = n - n % 7; i < n; i++) a[i] = -INFINITY;
            memcpy(b, a, sizeof(float) * (size_t)n);
            lo_softmax(a, n);
            if (!kern_softmax_llama_path(p, b, n) || !bits_equal(a, b, (size_t)n)) bad++;
            cases++;
        }
    }
    CHECK(bad == 0, "%s: %d of %d softmax rows differ from lo_softmax", kern_path_name(p), bad, cases);
    /* swiglu: a sweep of g over exp's whole range and past it, then
     * random rows of every length class with inf and NaN */
    bad = cases = 0;
    for (float v0 = -200.0f; v0 < 200.0f; v0 += 0.37f * 512) {
        for (int i = 0; i < 512; i++) g[i] = v0 + 0.37f * (float)i, u[i] = 1.0f;
        lo_swiglu(g, u, a, 512);
        if (!kern_swiglu_llama_path(p, g, u, b, 512) || !bits_equal(a, b, 512)) bad++;
        cases++;
    }
    for (int n = 1; n <= 90; n++) {
        for (int i = 0; i < n; i++) g[i] = arand() * 8, u[i] = arand();
        if (n % 5 == 0) g[n / 2] = (n % 2) ? INFINITY : NAN, g[0] = -INFINITY;
        lo_swiglu(g, u, a, n);
        if (!kern_swiglu_llama_path(p, g, u, b, n) || !bits_equal(a, b, (size_t)n)) bad++;
        cases++;
    }
    CHECK(bad == 0, "%s: %d of %d swiglu rows differ from lo_swiglu", kern_path_name(p), bad, cases);
    /* rope: whole vectors and tails; zeros of both signs */
    bad = cases = 0;
    static const int dims[] = {2, 6, 16, 18, 32, 64};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (int rep = 0; rep < 20; rep++) {
            const int nd = dims[di];
            float cs[64];
            for (int i = 0; i < nd; i++) {
                cs[i] = rep == 0 ? 0.0f : frand();
                a[i] = rep == 1 ? (i % 2 ? -0.0f : 0.0f) : arand();
            }
            memcpy(b, a, sizeof(float) * (size_t)nd);
            lo_rope(cs, nd, a);
            if (!kern_rope_llama_path(p, cs, nd, b) || !bits_equal(a, b, (size_t)nd)) bad++;
            cases++;
        }
    CHECK(bad == 0, "%s: %d of %d rope rows differ from lo_rope", kern_path_name(p), bad, cases);
    /* attention: probabilities and outputs, both kqv orders, cache
     * lengths around the 16- and 64-position steps, latent widths with and
     * without a tail, padded row strides */
    bad = cases = 0;
    static const int nkv[] = {1, 5, 16, 17, 63, 64, 65, 130, 257};
    static const int lat[][2] = {{64, 16}, {200, 8}, {256, 32}, {136, 16}};
    const int max_stride = 256 + 32 + 3;
    float *kv = malloc(sizeof(float) * 257 * max_stride), *o1 = malloc(sizeof(float) * 256), *o2 = malloc(sizeof(float) * 256);
    float *p1 = malloc(sizeof(float) * (257 + 16)), *p2 = malloc(sizeof(float) * (257 + 16)), q[300];
    for (size_t li = 0; li < sizeof lat / sizeof lat[0]; li++)
        for (size_t ni = 0; ni < sizeof nkv / sizeof nkv[0]; ni++)
            for (int tiny = 0; tiny < 2; tiny++) {
                const int L = lat[li][0], W = L + lat[li][1], n = nkv[ni];
                const size_t stride = (size_t)W + (ni % 2 ? 3 : 0);
                for (size_t i = 0; i < (size_t)n * stride; i++) kv[i] = arand();
                for (int i = 0; i < W; i++) q[i] = arand() * (li == 1 ? 4 : 1);
                lo_attention(tiny, n, W, L, kv, stride, q, 0.19f, p1, o1);
                const bool ok = kern_attention_llama_path(p, tiny, n, W, L, kv, stride, q, 0.19f, p2, o2);
                if (!ok || !bits_equal(p1, p2, (size_t)((n + 15) & ~15)) || !bits_equal(o1, o2, (size_t)L)) {
                    bad++;
                    fprintf(stderr, "  %s attention L %d W %d n_kv %d tiny %d differs\n", kern_path_name(p), L, W, n,
                            tiny);
                }
                cases++;
            }
    CHECK(bad == 0, "%s: %d of %d attention queries differ from lo_attention", kern_path_name(p), bad, cases);
    /* several queries over the same rows (the heads of a token): each one
     * bitwise its own lo_attention */
    bad = cases = 0;
    enum { MQ = 7 };
    float *qm = malloc(sizeof(float) * MQ * 300), *pm = malloc(sizeof(float) * MQ * (257 + 16));
    float *om = malloc(sizeof(float) * MQ * 256);
    for (int nq = 1; nq <= MQ; nq++)
        for (size_t li = 0; li < sizeof lat / sizeof lat[0]; li += 2)
            for (int tiny = 0; tiny < 2; tiny++) {
                const int L = lat[li][0], W = L + lat[li][1], n = nkv[(nq + tiny + li) % 9];
                const size_t stride = (size_t)W + 1;
                for (size_t i = 0; i < (size_t)n * stride; i++) kv[i] = arand();
                for (int i = 0; i < MQ * 300; i++) qm[i] = arand();
                if (!kern_attention_multi_llama_path(p, tiny, n, W, L, kv, stride, nq, qm, 300, 0.13f, pm, 257 + 16, om,
                                                     256)) {
                    bad++;
                    continue;
                }
                for (int h = 0; h < nq; h++) {
                    lo_attention(tiny, n, W, L, kv, stride, qm + h * 300, 0.13f, p1, o1);
                    if (!bits_equal(p1, pm + h * (257 + 16), (size_t)((n + 15) & ~15)) || !bits_equal(o1, om + h * 256, (size_t)L))
                        bad++;
                    cases++;
                }
            }
    free(qm), free(pm), free(om);
    free(kv), free(o1), free(o2), free(p1), free(p2);
    CHECK(bad == 0, "%s: %d of %d multi-query attention queries differ from lo_attention", kern_path_name(p), bad,
          cases);
    printf("path %s: softmax, swiglu, rope and attention bitwise equal to llama_order's scalar code\n",
           kern_path_name(p));
}

/* ---- thread pool ---- */

typedef struct pool_probe {
    atomic_int hits[8];
    atomic_int total;
    int nth_seen[8];
    atomic_int phase[8];
    atomic_int barrier_bad;
    tpool *tp;
} pool_probe;

static void probe_fn(void *arg, int ith, int nth) {
    pool_probe *pp = arg;
    atomic_fetch_add(&pp->hits[ith], 1);
    atomic_fetch_add(&pp->total, 1);
    pp->nth_seen[ith] = nth;
}

static void barrier_fn(void *arg, int ith, int nth) {
    pool_probe *pp = arg;
    for (int round = 1; round <= 50; round++) {
        atomic_store(&pp->phase[ith], round);
        tpool_barrier(pp->tp);
        for (int i = 0; i < nth; i++)
            if (atomic_load(&pp->phase[i]) < round) atomic_fetch_add(&pp->barrier_bad, 1);
        tpool_barrier(pp->tp);
    }
}

static void test_pool(void) {
    int n = tpool_default_threads();
    CHECK(n >= 1, "default threads %d", n);
    int sizes[] = {1, 2, 3};
    for (int si = 0; si < 3; si++) {
        tpool *tp = tpool_create(sizes[si]);
        CHECK(tpool_size(tp) == sizes[si], "pool of %d has size %d", sizes[si], tpool_size(tp));
        char desc[160];
        tpool_describe(tp, desc, sizeof desc);
        CHECK(strstr(desc, "thread") != NULL, "describe: '%s'", desc);
        pool_probe pp;
        memset(&pp, 0, sizeof pp);
        pp.tp = tp;
        const int runs = 3000;
        for (int r = 0; r < runs; r++) {
            tpool_run(tp, probe_fn, &pp);
            if (r == runs / 2) { /* let the workers fall asleep, then wake them */
                struct timespec ts = {0, 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        int ok = 1;
        for (int i = 0; i < sizes[si]; i++)
            if (atomic_load(&pp.hits[i]) != runs || pp.nth_seen[i] != sizes[si]) ok = 0;
        CHECK(ok && atomic_load(&pp.total) == runs * sizes[si], "pool of %d: each thread must run once per run",
              sizes[si]);
        tpool_run(tp, barrier_fn, &pp);
        CHECK(atomic_load(&pp.barrier_bad) == 0, "pool of %d: a thread passed the barrier early", sizes[si]);
        tpool_destroy(tp);
    }
    tpool *d = tpool_create(0);
    CHECK(tpool_size(d) == n, "tpool_create(0) gives %d threads, default is %d", tpool_size(d), n);
    tpool_destroy(d);
    /* a second pool after the first was destroyed still sees every core */
    CHECK(tpool_default_threads() == n, "default threads changed after a pool pinned the caller");
    pool_probe pp;
    memset(&pp, 0, sizeof pp);
    tpool_run(NULL, probe_fn, &pp);
    CHECK(atomic_load(&pp.hits[0]) == 1 && pp.nth_seen[0] == 1, "tpool_run(NULL) runs once on the caller");

    int v = -5;
    CHECK(tpool_parse_threads("4", &v) && v == 4, "parse '4'");
    CHECK(tpool_parse_threads("0", &v) && v == 0, "parse '0'");
    v = 7;
    CHECK(!tpool_parse_threads("-1", &v) && v == 7, "parse '-1' must fail");
    CHECK(!tpool_parse_threads("abc", &v), "parse 'abc' must fail");
    CHECK(!tpool_parse_threads("", &v), "parse '' must fail");
    CHECK(!tpool_parse_threads("3x", &v), "parse '3x' must fail");
    CHECK(!tpool_parse_threads("5000", &v), "parse '5000' must fail");
    CHECK(!tpool_parse_threads(NULL, &v), "parse NULL must fail");
}

static void test_checks(void) {
    char err[160];
    CHECK(kern_check(QT_Q4_K, 16, 512, err, sizeof err), "Q4_K 16x512 is valid");
    CHECK(!kern_check(QT_Q4_K, 16, 100, err, sizeof err) && strstr(err, "multiple"), "Q4_K cols 100: '%s'", err);
    CHECK(!kern_check(QT_Q8_K, 16, 256, err, sizeof err) && strstr(err, "Q8_K"), "Q8_K weights: '%s'", err);
    CHECK(!kern_check(99, 16, 256, err, sizeof err), "unknown type must be refused");
    CHECK(!kern_check(QT_F32, 0, 256, err, sizeof err) && strstr(err, "empty"), "0 rows: '%s'", err);
    CHECK(kern_act_row_size(QT_Q4_K, 512) == 2 * sizeof(block_q8_K), "Q4_K activation row size");
    CHECK(kern_act_row_size(QT_Q5_0, 64) == 2 * sizeof(block_q8_0), "Q5_0 activation row size");
    /* ntok == 0 writes nothing */
    float y = 1234.5f, x[256] = {0};
    uint8_t w[sizeof(block_q4_K)] = {0};
    kern_matmul(NULL, QT_Q4_K, w, 1, 256, x, 0, &y);
    CHECK(y == 1234.5f, "ntok 0 must not write");
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--print-path")) {
        printf("%s\n", kern_path_name(kern_get_path()));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--supported")) { /* paths this CPU can run */
        for (int p = KERN_SCALAR; p <= KERN_AVX512; p++)
            if (kern_path_supported((enum kern_path)p)) printf("%s\n", kern_path_name((enum kern_path)p));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--llama-order")) { /* child of check_rerun_scalar */
        CHECK(kern_get_path() == KERN_SCALAR, "--llama-order needs MOE_KERNEL=scalar (lo_matmul must be scalar)");
        tpool *a = tpool_create(1), *b = tpool_create(2);
        for (int p = KERN_AVX2; p <= KERN_AVX512; p++)
            if (kern_path_supported((enum kern_path)p)) {
                test_llama_order((enum kern_path)p, a, b);
                test_llama_steps((enum kern_path)p);
            }
        tpool_destroy(a);
        tpool_destroy(b);
        return check_summary("test_kernels --llama-order");
    }
    char cpu[256];
    cpu_describe(cpu_get(), cpu, sizeof cpu);
    printf("cpu: %s\nchosen path: %s\n", cpu, kern_path_name(kern_get_path()));

    test_pool();
    test_checks();

    tpool *tp1 = tpool_create(1), *tp2 = tpool_create(2), *tp3 = tpool_create(3);
    static const int types[] = {QT_Q4_0, QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_Q8_0, QT_Q2_K, QT_Q3_K,
                                QT_Q5_0, QT_F16,  QT_BF16, QT_F32,  QT_Q4_1, QT_Q5_1};
    const enum kern_path paths[] = {KERN_SCALAR, KERN_AVX2, KERN_AVX512};
    for (int pi = 0; pi < 3; pi++) {
        enum kern_path p = paths[pi];
        if (!kern_path_supported(p)) {
            printf("path %s: not supported by this CPU, not tested here\n", kern_path_name(p));
            continue;
        }
        test_quantize_exact(p);
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            const int t = types[ti];
            const int blk = qtype_get(t)->blck;
            /* odd row counts (not multiples of 8/16), several column sizes */
            const int cols_a = blk == 1 ? 77 : blk * (blk == 256 ? 2 : 5);
            const int cols_b = blk == 1 ? 256 + 5 : blk * (blk == 256 ? 3 : 9);
            test_product(p, tp1, tp2, tp3, t, 1, cols_a, 3, 0, 0);
            test_product(p, tp1, tp2, tp3, t, 17, cols_b, 9, 0, 1);
            test_product(p, tp1, tp2, tp3, t, 50, cols_a, 5, 1, 0);
            test_product(p, tp1, tp2, tp3, t, 7, blk == 1 ? 16 : blk, 2, 1, 1);
            if (p != KERN_SCALAR) test_batches(p, tp2, t, 19, blk == 1 ? 40 : blk);
        }
        printf("path %s: worst error / tolerance:", kern_path_name(p));
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
            printf(" %s %.3f", qtype_name(types[ti]), g_worst[p][types[ti]]);
        printf("\n");
    }
    test_multi(tp2);
    int rc = check_rerun_scalar("test_kernels", "--llama-order");
    CHECK(rc == 0, "llama-order comparison (child process) failed with status %d", rc);
    tpool_destroy(tp1);
    tpool_destroy(tp2);
    tpool_destroy(tp3);
    return check_summary("test_kernels");
}
