/* `moe bench`: figures for the kernels and the whole engine on this
 * machine.  Nothing here is a test: it prints measurements.
 *
 *   --mem     read bandwidth of a buffer far larger than the caches, with
 *             the pool's threads (the ceiling for decode);
 *   --matvec  GB/s of weights streamed by one-token products, per type,
 *             for expert- and attention-shaped matrices, 1 thread and all;
 *   --matmul  tokens/s of batches through one expert-shaped matrix;
 *   -m FILE   prefill and decode tokens/s of a model, bytes read per
 *             decoded token and the bandwidth that makes.
 * Matrices are cycled through a working set far larger than the last-level
 * cache, so weights come from memory as they do in a real MoE layer.
 * Products go through lo_matmul with the op the forward pass uses (its
 * SIMD kernels keep llama.cpp's float order): ggml_mul_mat with one row
 * for decode (--matvec), ggml_mul_mat_id for experts (--matmul). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "bench_dist.h"
#include "tokenizer.h"
#include "commands.h"
#include "cpu.h"
#include "forward.h"
#include "kernels.h"
#include "llama_order.h"
#include "model.h"
#include "model_stats.h"
#include "quant.h"
#include "threadpool.h"

typedef struct bench_opts {
    int mem, matvec, matmul; /* which parts run */
    const char *model;       /* -m: end-to-end part */
    int n_threads;           /* -t (0: default) */
    double mem_gb;           /* --mem buffer size */
    int ws_mb;               /* working set of --matvec / --matmul */
    const char *types;       /* comma list, NULL: all */
    int n_prompt, n_gen;     /* -m: prompt and generated tokens */
} bench_opts;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *alloc64(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64)) return NULL;
    return p;
}

/* ---- memory bandwidth ---- */

typedef struct mem_job {
    uint8_t *buf;
    size_t bytes;
    uint64_t sums[256]; /* per thread, so the reads are not optimised away */
    int fill;           /* 1: write (first touch), 0: read */
} mem_job;

static void mem_worker(void *arg, int ith, int nth) {
    mem_job *m = arg;
    size_t chunks = m->bytes / 4096;
    size_t c0 = chunks * (size_t)ith / (size_t)nth, c1 = chunks * (size_t)(ith + 1) / (size_t)nth;
    uint8_t *p = m->buf + c0 * 4096;
    size_t n = (c1 - c0) * 4096;
    if (m->fill) memset(p, ith + 1, n);
    else m->sums[ith & 255] += kern_read_sum(p, n);
}

/* Best GB/s of `passes` reads of the whole buffer. */
static double read_bw(tpool *tp, mem_job *m, int passes) {
    double best = 0;
    m->fill = 0;
    for (int i = 0; i < passes; i++) {
        double t = now_s();
        tpool_run(tp, mem_worker, m);
        t = now_s() - t;
        double gbs = (double)m->bytes / t / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}

/* Measures bandwidth with tp (all threads) and one thread; returns the
 * all-thread figure.  A failed allocation gives 0. */
static double bench_mem(tpool *tp, double gb) {
    mem_job m;
    memset(&m, 0, sizeof m);
    m.bytes = (size_t)(gb * 1e9) / 4096 * 4096;
    m.buf = alloc64(m.bytes);
    if (!m.buf) {
        fprintf(stderr, "moe bench: cannot allocate %.1f GB for the bandwidth test\n", gb);
        return 0;
    }
    m.fill = 1;
    tpool_run(tp, mem_worker, &m); /* first touch, by the threads that read */
    tpool *one = tpool_create(1);
    double bw1 = read_bw(one, &m, 3);
    double bwn = read_bw(tp, &m, 5);
    tpool_destroy(one);
    free(m.buf);
    printf("memory read bandwidth (%.1f GB buffer, best of 5): 1 thread %.1f GB/s, %d threads %.1f GB/s\n",
           (double)m.bytes / 1e9, bw1, tpool_size(tp), bwn);
    return bwn;
}

/* ---- random matrices ---- */

/* xorshift64*: the state is the caller's */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}
static float frand(uint64_t *s) { return (float)((rnd(s) >> 40) * 0x1p-24) * 2.0f - 1.0f; }

/* Byte offsets of the fp16 scales in a block (random bytes elsewhere are
 * valid quants); -1 for the float types. */
static int scale_offsets(int type, int off[2]) {
    switch (type) {
    case QT_Q4_0: case QT_Q5_0: case QT_Q8_0: off[0] = 0; return 1;
    case QT_Q4_1: case QT_Q5_1: case QT_Q4_K: case QT_Q5_K: off[0] = 0; off[1] = 2; return 2;
    case QT_Q2_K: off[0] = 80; off[1] = 82; return 2;
    case QT_Q3_K: off[0] = 108; return 1;
    case QT_Q6_K: off[0] = 208; return 1;
    default: return -1;
    }
}

/* One matrix of random values (quants, or floats of the type). */
static void fill_matrix(int type, uint8_t *w, size_t bytes) {
    uint64_t rng = 0x9E3779B97F4A7C15ull + (uint64_t)type;
    const qtype_info *qi = qtype_get(type);
    int off[2], nf = scale_offsets(type, off);
    if (nf > 0) {
        for (size_t i = 0; i + 8 <= bytes; i += 8) {
            uint64_t v = rnd(&rng);
            memcpy(w + i, &v, 8);
        }
        for (size_t b = 0; b + (size_t)qi->type_size <= bytes; b += (size_t)qi->type_size)
            for (int f = 0; f < nf; f++) {
                fp16_t h = f32_to_fp16(frand(&rng) * 0.01f);
                memcpy(w + b + off[f], &h, 2);
            }
        return;
    }
    for (size_t i = 0; i < bytes / (size_t)qi->type_size; i++) {
        float v = frand(&rng);
        if (type == QT_F32) memcpy(w + 4 * i, &v, 4);
        else {
            uint16_t h = type == QT_F16 ? f32_to_fp16(v) : f32_to_bf16(v);
            memcpy(w + 2 * i, &h, 2);
        }
    }
}

/* `copies` copies of one rows x cols matrix back to back (working set). */
typedef struct wset {
    uint8_t *buf;
    size_t mat_bytes; /* bytes of one matrix */
    int copies;
} wset;

static bool wset_make(wset *s, int type, int rows, int cols, size_t ws_bytes) {
    s->mat_bytes = qtype_row_size(type, cols) * (size_t)rows;
    s->copies = (int)((ws_bytes + s->mat_bytes - 1) / s->mat_bytes);
    if (s->copies < 2) s->copies = 2;
    s->buf = alloc64(s->mat_bytes * (size_t)s->copies);
    if (!s->buf) return false;
    fill_matrix(type, s->buf, s->mat_bytes);
    for (int c = 1; c < s->copies; c++) memcpy(s->buf + (size_t)c * s->mat_bytes, s->buf, s->mat_bytes);
    return true;
}

/* Seconds per call of a ntok-token product (op as in the forward pass),
 * best of `runs` runs of >= min_s (and >= 3 calls): on a shared machine
 * the best run is the one least disturbed.  Calls go through the copies
 * in turn, the
 * warm-up call's copy last, so no call finds its matrix in cache.
 * Includes quantizing the activations, as the engine. */
static double time_product(tpool *tp, enum lo_op op, int type, const wset *s, int rows, int cols, const float *x,
                           int ntok, float *y, double min_s, int runs) {
    double best = 1e30;
    int c = 1;
    const bool rep = lo_repacked(type, rows, true);
    lo_matmul(tp, op, rep, type, s->buf, rows, cols, x, ntok, y); /* warm-up, copy 0 */
    for (int r = 0; r < runs; r++) {
        int calls = 0;
        double t0 = now_s(), t;
        do {
            lo_matmul(tp, op, rep, type, s->buf + (size_t)c * s->mat_bytes, rows, cols, x, ntok, y);
            c = (c + 1) % s->copies;
            calls++;
            t = now_s() - t0;
        } while (calls < 3 || t < min_s);
        if (t / calls < best) best = t / calls;
    }
    return best;
}

static const int k_all_types[] = {QT_Q4_0, QT_Q4_K, QT_Q5_K, QT_Q6_K, QT_Q8_0, QT_Q2_K,
                                  QT_Q3_K, QT_Q5_0, QT_F16,  QT_BF16, QT_F32};
#define N_ALL_TYPES ((int)(sizeof k_all_types / sizeof k_all_types[0]))

static bool type_wanted(const bench_opts *o, int type) {
    if (!o->types) return true;
    const char *name = qtype_name(type);
    size_t n = strlen(name);
    for (const char *p = o->types; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncasecmp(p, name, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

/* ntok x cols random activations. */
static float *make_acts(int cols, int ntok) {
    uint64_t rng = 0x1234567ull + (uint64_t)cols;
    float *x = malloc(sizeof(float) * (size_t)cols * (size_t)ntok);
    if (x)
        for (size_t i = 0; i < (size_t)cols * (size_t)ntok; i++) x[i] = frand(&rng);
    return x;
}

/* ---- --matvec ---- */

typedef struct shape {
    const char *name; /* what it stands for in DeepSeek-V3 */
    int cols, rows;   /* input x output, printed as cols x rows (ggml order) */
} shape;

static const shape k_shapes[] = {
    {"expert gate/up", 7168, 2048},
    {"expert down", 2048, 7168},
    {"attn q_b", 1536, 24576},
    {"attn output", 16384, 7168},
};
#define N_SHAPES ((int)(sizeof k_shapes / sizeof k_shapes[0]))

/* Results kept for the targets summary: [type][shape] all-thread GB/s. */
typedef struct results {
    double matvec[QT_COUNT][N_SHAPES]; /* all-thread GB/s over the paired probe */
    double tok_s[QT_COUNT][4]; /* batches 1, 8, 32, 128 */
    double prefill, decode, decode_bytes;
    double peak_macs; /* int8 multiply-adds per second of the pool (compute ceiling) */
} results;

/* A matvec figure against the bandwidth of the same moment.  This host's
 * read bandwidth swings with other tenants' load (30 to 52 GB/s within a
 * minute on 2 threads), so a probe taken once at the start can flatter or
 * shame a kernel timed later.  Each of PAIR_ROUNDS rounds reads the whole
 * working set once with the same threads (the probe), then times the
 * product on it; gbs is the best round, ratio the median of the rounds'
 * kernel / probe ratios. */
#define PAIR_ROUNDS 5
typedef struct paired {
    double gbs;   /* best GB/s of weights streamed by the product */
    double ratio; /* median over rounds of product GB/s / probe GB/s */
} paired;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static paired matvec_paired(tpool *tp, int type, const wset *s, int rows, int cols, const float *x, float *y) {
    mem_job m;
    memset(&m, 0, sizeof m);
    m.buf = s->buf;
    m.bytes = s->mat_bytes * (size_t)s->copies / 4096 * 4096;
    double ratio[PAIR_ROUNDS];
    paired p = {0, 0};
    for (int r = 0; r < PAIR_ROUNDS; r++) {
        double t = now_s();
        tpool_run(tp, mem_worker, &m);
        const double probe = (double)m.bytes / (now_s() - t) / 1e9;
        const double g = (double)s->mat_bytes / time_product(tp, LO_MUL_MAT_1, type, s, rows, cols, x, 1, y, 0.08, 1) / 1e9;
        ratio[r] = g / probe;
        if (g > p.gbs) p.gbs = g;
    }
    qsort(ratio, PAIR_ROUNDS, sizeof ratio[0], cmp_double);
    p.ratio = ratio[PAIR_ROUNDS / 2];
    return p;
}

static void bench_matvec(const bench_opts *o, tpool *tp, results *res) {
    tpool *one = tpool_create(1);
    printf("\nmatvec: GB/s of weights read by 1-token products (ggml_mul_mat order; working set\n"
           "        %d MB, cycled), best of %d rounds; %% of the read bandwidth probed just before\n"
           "        on the same memory with the same threads, median of the rounds' ratios\n",
           o->ws_mb, PAIR_ROUNDS);
    printf("%-6s %-16s %-12s %16s %16s\n", "type", "matrix", "cols x rows", "1 thread", "all threads");
    for (int ti = 0; ti < N_ALL_TYPES; ti++) {
        const int type = k_all_types[ti];
        if (!type_wanted(o, type)) continue;
        for (int si = 0; si < N_SHAPES; si++) {
            const shape *sh = &k_shapes[si];
            wset s;
            if (!wset_make(&s, type, sh->rows, sh->cols, (size_t)o->ws_mb << 20)) {
                fprintf(stderr, "moe bench: out of memory for %s %dx%d\n", qtype_name(type), sh->cols, sh->rows);
                continue;
            }
            float *xq = make_acts(sh->cols, 1);
            float *y = malloc(sizeof(float) * (size_t)sh->rows);
            if (!xq || !y) {
                free(xq);
                free(y);
                free(s.buf);
                continue;
            }
            const paired p1 = matvec_paired(one, type, &s, sh->rows, sh->cols, xq, y);
            const paired pn = matvec_paired(tp, type, &s, sh->rows, sh->cols, xq, y);
            res->matvec[type][si] = pn.ratio;
            char dims[32];
            snprintf(dims, sizeof dims, "%dx%d", sh->cols, sh->rows);
            printf("%-6s %-16s %-12s %7.1f (%3.0f%%)   %7.1f (%3.0f%%)\n", qtype_name(type), sh->name, dims, p1.gbs,
                   100 * p1.ratio, pn.gbs, 100 * pn.ratio);
            fflush(stdout);
            free(xq);
            free(y);
            free(s.buf);
        }
    }
    tpool_destroy(one);
}

/* ---- --matmul ---- */

static const int k_batches[4] = {1, 8, 32, 128};

/* Peak int8 multiply-accumulates per second of the pool's threads (the
 * path's dot instruction in independent register chains): what no kernel
 * can exceed, the compute ceiling of a batched product. */
typedef struct peak_job {
    uint64_t iters;        /* rounds per thread */
    uint64_t macs[256];    /* per thread */
} peak_job;

static void peak_worker(void *arg, int ith, int nth) {
    peak_job *p = arg;
    (void)nth;
    p->macs[ith & 255] = kern_int8_peak(p->iters);
}

static double int8_peak(tpool *tp) {
    peak_job p = {.iters = 1000};
    double best = 0;
    for (int rep = 0; rep < 8; rep++) { /* grow to >= 50 ms, keep the best rate */
        memset(p.macs, 0, sizeof p.macs);
        double t = now_s();
        tpool_run(tp, peak_worker, &p);
        t = now_s() - t;
        uint64_t macs = 0;
        for (int i = 0; i < 256; i++) macs += p.macs[i];
        if (macs == 0) return 0;
        if ((double)macs / t > best) best = (double)macs / t;
        if (t < 0.05) p.iters *= 4;
    }
    return best;
}

static void bench_matmul(const bench_opts *o, tpool *tp, results *res) {
    const shape *sh = &k_shapes[0];
    printf("\nmatmul: tokens/s through one %dx%d (%s) matrix as ggml_mul_mat_id, %d threads,\n"
           "        weights cold (working set %d MB)\n",
           sh->cols, sh->rows, sh->name, tpool_size(tp), o->ws_mb);
    printf("%-6s %10s %10s %10s %10s %9s %9s\n", "type", "b=1", "b=8", "b=32", "b=128", "b32/b1", "b128/b1");
    for (int ti = 0; ti < N_ALL_TYPES; ti++) {
        const int type = k_all_types[ti];
        if (!type_wanted(o, type)) continue;
        wset s;
        if (!wset_make(&s, type, sh->rows, sh->cols, (size_t)o->ws_mb << 20)) {
            fprintf(stderr, "moe bench: out of memory for %s\n", qtype_name(type));
            continue;
        }
        float *xq = make_acts(sh->cols, 128);
        float *y = malloc(sizeof(float) * (size_t)sh->rows * 128);
        if (!xq || !y) {
            free(xq);
            free(y);
            free(s.buf);
            continue;
        }
        printf("%-6s", qtype_name(type));
        for (int bi = 0; bi < 4; bi++) {
            double t = time_product(tp, LO_MUL_MAT_ID, type, &s, sh->rows, sh->cols, xq, k_batches[bi], y, 0.08, 5);
            res->tok_s[type][bi] = k_batches[bi] / t;
            printf(" %10.0f", res->tok_s[type][bi]);
            fflush(stdout);
        }
        printf(" %8.1fx %8.1fx\n", res->tok_s[type][2] / res->tok_s[type][0],
               res->tok_s[type][3] / res->tok_s[type][0]);
        free(xq);
        free(y);
        free(s.buf);
    }
    res->peak_macs = int8_peak(tp);
    if (res->peak_macs > 0)
        printf("compute ceiling: %.0f G int8 multiply-adds/s on %d threads (%s dot instruction, registers only) =\n"
               "        %.0f tokens/s through this matrix at best, whatever the batch\n",
               res->peak_macs / 1e9, tpool_size(tp), kern_path_name(kern_get_path()),
               res->peak_macs / ((double)sh->rows * sh->cols));
}

/* ---- -m MODEL ---- */

static int bench_model(const bench_opts *o, tpool *tp, double bw, results *res) {
    char err[256];
    double t = now_s();
    moe_model *m = moe_model_load(o->model, err, sizeof err);
    if (!m) {
        fprintf(stderr, "moe bench: %s\n", err);
        return 1;
    }
    const moe_hparams *hp = &m->hp;
    const double load_s = now_s() - t;
    const uint64_t bpt = moe_decode_bytes_per_token(m);
    printf("\nmodel %s: %d layers, hidden %d, %d experts (%d used), %.2f GB of weights, loaded in %.2f s\n",
           o->model, hp->n_layer, hp->n_embd, hp->n_expert, hp->n_expert_used, (double)moe_weight_bytes(m) / 1e9,
           load_s);
    const int n_ctx = o->n_prompt + o->n_gen + 8;
    int *toks = malloc(sizeof(int) * (size_t)(o->n_prompt + o->n_gen));
    float *logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
    if (!toks || !logits) {
        fprintf(stderr, "moe bench: out of memory\n");
        free(toks);
        free(logits);
        moe_model_free(m);
        return 1;
    }
    uint64_t rng = 42;
    for (int i = 0; i < o->n_prompt + o->n_gen; i++) toks[i] = (int)(rnd(&rng) % (uint64_t)hp->n_vocab);
    if (hp->bos_id >= 0) toks[0] = hp->bos_id;

    /* warm-up pass: pages of the mapped file in, then measured passes */
    double best_pf = 1e30, best_dec = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        moe_kvcache *kv = moe_kvcache_new(hp, 0, hp->n_layer, n_ctx);
        if (!kv) {
            fprintf(stderr, "moe bench: cannot allocate the KV cache\n");
            break;
        }
        t = now_s();
        bool ok = moe_forward_local(m, kv, toks, o->n_prompt, 0, logits, true, tp);
        double pf = now_s() - t;
        t = now_s();
        for (int i = 0; ok && i < o->n_gen; i++)
            ok = moe_forward_local(m, kv, &toks[o->n_prompt + i], 1, o->n_prompt + i, logits, true, tp);
        double dec = now_s() - t;
        moe_kvcache_free(kv);
        if (!ok) {
            fprintf(stderr, "moe bench: the forward pass failed\n");
            break;
        }
        if (rep == 0) continue; /* warm-up */
        if (pf < best_pf) best_pf = pf;
        if (dec < best_dec) best_dec = dec;
    }
    free(toks);
    free(logits);
    int rc = 0;
    if (best_dec < 1e30) {
        res->prefill = o->n_prompt / best_pf;
        res->decode = o->n_gen / best_dec;
        res->decode_bytes = (double)bpt;
        printf("prefill: %d-token prompt in %.3f s = %.1f tokens/s\n", o->n_prompt, best_pf, res->prefill);
        printf("decode:  %d tokens in %.3f s = %.2f tokens/s; %.1f MB read per token = %.1f GB/s", o->n_gen,
               best_dec, res->decode, (double)bpt / 1e6, res->decode * (double)bpt / 1e9);
        if (bw > 0)
            printf(" (%.0f%% of %.1f GB/s; ceiling %.2f tokens/s)", 100 * res->decode * (double)bpt / 1e9 / bw, bw,
                   bw * 1e9 / (double)bpt);
        printf("\n");
    } else {
        rc = 1;
    }
    moe_model_free(m);
    return rc;
}

/* ---- targets ---- */

static void print_targets(const bench_opts *o, double bw, const results *r) {
    printf("\ntargets (issue 4, %d threads):\n", o->n_threads > 0 ? o->n_threads : tpool_default_threads());
    if (o->matvec) { /* ratios to its own paired probes */
        static const int t[2] = {QT_Q4_K, QT_Q4_0};
        for (int i = 0; i < 2; i++) {
            if (!type_wanted(o, t[i])) continue;
            double lo = 1e30;
            for (int s = 0; s < 2; s++) /* the two expert shapes */
                if (r->matvec[t[i]][s] < lo) lo = r->matvec[t[i]][s];
            printf("  %s matvec >= 85%% of read bandwidth (expert shapes, worse one): %.0f%%  %s\n", qtype_name(t[i]),
                   100 * lo, lo >= 0.85 ? "met" : "NOT met");
        }
    }
    if (o->matmul && type_wanted(o, QT_Q4_K)) {
        double x = r->tok_s[QT_Q4_K][2] / r->tok_s[QT_Q4_K][0];
        printf("  Q4_K matmul batch 32 >= 8x batch 1 tokens/s: %.1fx  %s", x, x >= 8 ? "met" : "NOT met");
        if (r->peak_macs > 0) /* the most any batch could do, over what batch 1 does */
            printf(" (compute ceiling %.1fx batch 1)",
                   r->peak_macs / ((double)k_shapes[0].rows * k_shapes[0].cols) / r->tok_s[QT_Q4_K][0]);
        printf("\n");
    }
    if (o->model && r->decode > 0 && bw > 0) {
        double f = r->decode * r->decode_bytes / 1e9 / bw;
        printf("  decode >= 75%% of bandwidth / bytes per token: %.0f%%  %s\n", 100 * f, f >= 0.75 ? "met" : "NOT met");
    }
}

/* ---- command ---- */

static void usage(FILE *out) {
    fprintf(out,
            "usage: moe bench [--mem] [--matvec] [--matmul] [-m MODEL] [options]\n"
            "\n"
            "Prints throughput figures (no mode: --mem --matvec --matmul).\n"
            "  --mem             memory read bandwidth with the pool's threads\n"
            "  --matvec          GB/s of weights per type, expert and attention shapes\n"
            "  --matmul          tokens/s for batches of 1, 8, 32, 128 tokens\n"
            "  -m, --model FILE  prefill and decode tokens/s of a model, bytes per token\n"
            "options:\n"
            "  -t, --threads N   threads (default: physical cores of the binding)\n"
            "  --types LIST      comma-separated types for --matvec/--matmul (default all)\n"
            "  --mem-gb G        buffer of the bandwidth test in GB (default 4 with --mem,\n"
            "                    else 1)\n"
            "  --ws-mb M         working set of --matvec/--matmul in MB (default 1024)\n"
            "  --prompt N        prompt tokens for -m (default 128)\n"
            "  --gen N           generated tokens for -m (default 64)\n"
            "  --tokenizer FILE  vocabulary load time and tokenization MB/s over FILE\n"
            "                    (vocabulary of -m MODEL, default the fixture DeepSeek-V3 vocab)\n"
            "env MOE_KERNEL=scalar|avx2|avx512 forces a kernel path.\n");
}

static bool parse_int(const char *s, int lo, int hi, int *out) {
    char *e;
    long v = s ? strtol(s, &e, 10) : 0;
    if (!s || !*s || *e || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

int cmd_bench(int argc, char **argv) {
    for (int i = 1; i < argc; i++) /* the cluster bench lives in coordinator/bench_dist.c */
        if (!strcmp(argv[i], "--dist")) return bench_dist(argc, argv);
    for (int i = 1; i < argc; i++) /* tokenizer bench: coordinator/bench_tokenizer.c */
        if (!strcmp(argv[i], "--tokenizer")) {
            const char *model = NULL;
            for (int j = 1; j + 1 < argc; j++)
                if (!strcmp(argv[j], "-m") || !strcmp(argv[j], "--model")) model = argv[j + 1];
            if (i + 1 >= argc) {
                fprintf(stderr, "moe bench: --tokenizer needs a text FILE\n");
                return 2;
            }
            return bench_tokenizer(model, argv[i + 1]);
        }
    bench_opts o = {.mem_gb = 0, .ws_mb = 1024, .n_prompt = 128, .n_gen = 64};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--mem")) o.mem = 1;
        else if (!strcmp(a, "--matvec")) o.matvec = 1;
        else if (!strcmp(a, "--matmul")) o.matmul = 1;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) goto missing;
            o.model = v;
            i++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!tpool_parse_threads(v, &o.n_threads)) {
                fprintf(stderr, "moe bench: bad thread count '%s' (0..1024, 0 = default)\n", v ? v : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--types")) {
            if (!v) goto missing;
            o.types = v;
            i++;
        } else if (!strcmp(a, "--mem-gb")) {
            char *e;
            o.mem_gb = v ? strtod(v, &e) : 0;
            if (!v || *e || !(o.mem_gb >= 0.1 && o.mem_gb <= 1024)) {
                fprintf(stderr, "moe bench: bad --mem-gb '%s' (0.1..1024)\n", v ? v : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--ws-mb")) {
            if (!parse_int(v, 64, 1 << 20, &o.ws_mb)) {
                fprintf(stderr, "moe bench: bad --ws-mb '%s' (64..1048576)\n", v ? v : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--prompt")) {
            if (!parse_int(v, 1, 65536, &o.n_prompt)) {
                fprintf(stderr, "moe bench: bad --prompt '%s' (1..65536)\n", v ? v : "");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--gen")) {
            if (!parse_int(v, 1, 65536, &o.n_gen)) {
                fprintf(stderr, "moe bench: bad --gen '%s' (1..65536)\n", v ? v : "");
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "moe bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        continue;
    missing:
        fprintf(stderr, "moe bench: %s needs a value\n", a);
        return 2;
    }
    if (o.types) {
        int any = 0;
        for (int ti = 0; ti < N_ALL_TYPES; ti++) any |= type_wanted(&o, k_all_types[ti]);
        if (!any) {
            fprintf(stderr, "moe bench: --types '%s' names no benchmarked type\n", o.types);
            return 2;
        }
    }
    if (!o.mem && !o.matvec && !o.matmul && !o.model) o.mem = o.matvec = o.matmul = 1;

    kern_init();
    tpool *tp = tpool_create(o.n_threads);
    char cpu[256], pool[160];
    cpu_describe(cpu_get(), cpu, sizeof cpu);
    tpool_describe(tp, pool, sizeof pool);
    fprintf(stderr, "moe bench: kernels %s; %s; cpu %s\n", kern_path_name(kern_get_path()), pool, cpu);
    printf("kernels: %s, %s\n", kern_path_name(kern_get_path()), pool);

    results *res = calloc(1, sizeof *res);
    if (!res) {
        tpool_destroy(tp);
        return 1;
    }
    /* The reference of -m's decode figure (--matvec probes its own, paired
     * with each product).  --mem alone: 4 GB; otherwise 1 GB (>> the
     * caches) is enough and quicker; --mem-gb sets it in both cases. */
    double bw = bench_mem(tp, o.mem_gb > 0 ? o.mem_gb : o.mem ? 4.0 : 1.0);
    int rc = 0;
    if (o.matvec) bench_matvec(&o, tp, res);
    if (o.matmul) bench_matmul(&o, tp, res);
    if (o.model) rc = bench_model(&o, tp, bw, res);
    print_targets(&o, bw, res);
    free(res);
    tpool_destroy(tp);
    return rc;
}
