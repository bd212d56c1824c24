/* Kernel dispatch: picks the SIMD path once (CPUID, env MOE_KERNEL),
 * prepares activations and splits the rows of a product over the pool.
 * Types a path has no kernel for (Q4_1, Q5_1) and the scalar path use the
 * reference vec_dot of quant.h, one (row, token) pair at a time. */
#include "kernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kern_impl.h"
#include "llama_order.h"

/* ---- path selection ---- */

static enum kern_path g_path = KERN_SCALAR; /* written once under g_once */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

bool kern_path_supported(enum kern_path p) {
    const cpu_features *c = cpu_get();
    switch (p) {
    case KERN_SCALAR: return true;
    case KERN_AVX2: return c->avx2;
    case KERN_AVX512: return c->avx512;
    }
    return false;
}

static void pick_path(void) {
    enum kern_path best = kern_path_supported(KERN_AVX512) ? KERN_AVX512
                          : kern_path_supported(KERN_AVX2) ? KERN_AVX2
                                                           : KERN_SCALAR;
    g_path = best;
    const char *env = getenv("MOE_KERNEL");
    if (!env || !*env || !strcmp(env, "auto")) return;
    enum kern_path want;
    if (!strcmp(env, "scalar")) want = KERN_SCALAR;
    else if (!strcmp(env, "avx2")) want = KERN_AVX2;
    else if (!strcmp(env, "avx512")) want = KERN_AVX512;
    else {
        fprintf(stderr, "moe: MOE_KERNEL='%s' is not one of scalar, avx2, avx512, auto; using %s\n", env,
                kern_path_name(best));
        return;
    }
    if (!kern_path_supported(want)) {
        fprintf(stderr, "moe: MOE_KERNEL=%s: this CPU/OS cannot run it; using %s\n", env, kern_path_name(best));
        return;
    }
    g_path = want;
}

void kern_init(void) { pthread_once(&g_once, pick_path); }

enum kern_path kern_get_path(void) {
    kern_init();
    return g_path;
}

const char *kern_path_name(enum kern_path p) {
    switch (p) {
    case KERN_AVX512: return "avx512";
    case KERN_AVX2: return "avx2";
    default: return "scalar";
    }
}

static const kern_wops *path_wops(enum kern_path p, int wtype) {
    switch (p) {
    case KERN_AVX512: return kern_avx512_wops(wtype);
    case KERN_AVX2: return kern_avx2_wops(wtype);
    default: return NULL;
    }
}

static kern_quant_fn path_quant(enum kern_path p, int act_type) {
    switch (p) {
    case KERN_AVX512: return kern_avx512_quant(act_type);
    case KERN_AVX2: return kern_avx2_quant(act_type);
    default: return NULL;
    }
}

bool kern_path_has_type(enum kern_path p, int wtype) { return path_wops(p, wtype) != NULL; }

/* The path to use for p: an unsupported request falls back to scalar
 * rather than executing instructions the CPU lacks. */
static enum kern_path usable(enum kern_path p) {
    if (kern_path_supported(p)) return p;
    fprintf(stderr, "moe: kernel path %s is not supported here; using scalar\n", kern_path_name(p));
    return KERN_SCALAR;
}

/* ---- checks ---- */

bool kern_check(int wtype, int rows, int cols, char *err, size_t errlen) {
    const qtype_info *qi = qtype_get(wtype);
    if (!qi || !qi->vec_dot) {
        snprintf(err, errlen, "weight type %s (%d) has no matrix product", qtype_name(wtype), wtype);
        return false;
    }
    if (rows <= 0 || cols <= 0) {
        snprintf(err, errlen, "empty %s matrix (%d x %d)", qi->name, rows, cols);
        return false;
    }
    if (cols % qi->blck) {
        snprintf(err, errlen, "%s row length %d is not a multiple of its block size %d", qi->name, cols, qi->blck);
        return false;
    }
    return true;
}

static void check_or_die(const char *who, int wtype, int rows, int cols, int ntok) {
    char err[160];
    if (ntok < 0) {
        fprintf(stderr, "moe: %s: negative token count %d\n", who, ntok);
        abort();
    }
    if (!kern_check(wtype, rows, cols, err, sizeof err)) {
        fprintf(stderr, "moe: %s: %s\n", who, err);
        abort();
    }
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "moe: out of memory (%zu bytes for kernel buffers)\n", n);
        abort();
    }
    return p;
}

/* Cache-line aligned, for the prepared activations the kernels stream. */
static void *xmalloc64(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64)) {
        fprintf(stderr, "moe: out of memory (%zu bytes for kernel buffers)\n", n);
        abort();
    }
    return p;
}

double kern_tolerance(int n, double abs_sum) { return ((double)n / 16 + 32) * 0x1p-23 * abs_sum + 1e-30; }

/* ---- activations ---- */

size_t kern_act_row_size(int wtype, int n) {
    const qtype_info *qi = qtype_get(wtype);
    return qi ? qtype_row_size(qi->vec_dot_type, n) : 0;
}

void kern_quantize_act_path(enum kern_path p, int wtype, const float *x, void *q, int n) {
    const qtype_info *qi = qtype_get(wtype);
    if (!qi) {
        fprintf(stderr, "moe: kern_quantize_act: unknown weight type %d\n", wtype);
        abort();
    }
    kern_quant_fn f = path_quant(usable(p), qi->vec_dot_type);
    if (f) f(x, q, n);
    else qtype_get(qi->vec_dot_type)->from_float(x, q, n);
}

void kern_quantize_act(int wtype, const float *x, void *q, int n) {
    kern_quantize_act_path(kern_get_path(), wtype, x, q, n);
}

/* ---- products ---- */

/* One product as the workers see it: either a SIMD job (ops != NULL) or
 * the scalar reference (vec_dot over reference-format activations). */
typedef struct mm_task {
    kern_job job;
    const kern_wops *ops;
    qt_vec_dot_fn vec_dot; /* scalar path */
    int group;             /* rows per work unit */
} mm_task;

static void task_rows(const mm_task *m, int r0, int r1) {
    const kern_job *j = &m->job;
    if (r0 >= r1 || j->ntok == 0) return;
    if (m->ops) {
        m->ops->matmul(j, r0, r1);
        return;
    }
    for (int t = 0; t < j->ntok; t++) {
        const uint8_t *a = j->A + (size_t)t * j->astride;
        float *y = j->Y + (size_t)t * j->ystride;
        for (int r = r0; r < r1; r++) m->vec_dot(j->cols, &y[r], j->W + (size_t)r * j->wstride, a);
    }
}

/* Prepared activations of one product: the reference-format quantized
 * rows Xq (given, or quantized from X into q), then the path's layout. */
static void task_init_ops(mm_task *m, const kern_wops *ops, enum kern_path p, int wtype, const void *W, int rows,
                          int cols, const float *X, const void *Xq, int ntok, float *Y, void **owned) {
    const qtype_info *qi = qtype_get(wtype);
    memset(m, 0, sizeof *m);
    m->ops = ops;
    m->vec_dot = qi->vec_dot;
    m->group = m->ops ? m->ops->group : 1;
    const size_t qstride = kern_act_row_size(wtype, cols);
    uint8_t *q = NULL;
    if (!Xq) {
        q = xmalloc(qstride * (size_t)ntok);
        for (int t = 0; t < ntok; t++)
            kern_quantize_act_path(p, wtype, X + (size_t)t * cols, q + (size_t)t * qstride, cols);
        Xq = q;
    }
    const uint8_t *A = Xq;
    size_t astride = qstride;
    if (m->ops && m->ops->act_prep) {
        astride = m->ops->act_bytes(cols);
        uint8_t *pa = xmalloc64(astride * (size_t)ntok);
        for (int t = 0; t < ntok; t++)
            m->ops->act_prep((const uint8_t *)Xq + (size_t)t * qstride, cols, pa + (size_t)t * astride);
        free(q);
        q = pa;
        A = pa;
    }
    *owned = q;
    m->job = (kern_job){.W = W, .wstride = qtype_row_size(wtype, cols), .rows = rows, .cols = cols,
                        .A = A, .astride = astride, .ntok = ntok, .Y = Y, .ystride = (size_t)rows};
}

static void task_init(mm_task *m, enum kern_path p, int wtype, const void *W, int rows, int cols, const float *X,
                      const void *Xq, int ntok, float *Y, void **owned) {
    task_init_ops(m, path_wops(p, wtype), p, wtype, W, rows, cols, X, Xq, ntok, Y, owned);
}

/* Work split: every task's rows are cut into groups; a group's cost is
 * its weight volume (group x cols) times (ntok + 2): streaming and
 * preparing the weights is worth about two tokens of arithmetic.  The
 * groups of all tasks, in order, form one line of cost; threads take
 * pieces of it as they get free (guided: each piece a fraction of what is
 * left, so there are few of them and none is left for the end).  Which
 * thread computes a group changes nothing: a group is always computed
 * whole, by the same kernel call for its rows. */
typedef struct multi_run {
    const mm_task *tasks;
    int n;
    int64_t total;       /* sum of the tasks' costs */
    int64_t min_piece;   /* smallest piece a thread takes */
    atomic_llong next;   /* start of the part of the cost line not yet taken */
} multi_run;

static int64_t task_unit(const mm_task *m) {
    return m->job.ntok > 0 ? (int64_t)m->group * m->job.cols * (m->job.ntok + 2) : 0;
}

static int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

/* The groups whose start lies in [lo, hi) of the cost line. */
static void run_piece(const multi_run *mr, int64_t lo, int64_t hi) {
    int64_t base = 0;
    for (int i = 0; i < mr->n && base < hi; i++) {
        const mm_task *m = &mr->tasks[i];
        const int64_t G = (m->job.rows + m->group - 1) / m->group, unit = task_unit(m);
        if (unit == 0) continue;
        int64_t g0 = ceil_div(lo - base, unit), g1 = ceil_div(hi - base, unit);
        if (g1 > G) g1 = G;
        if (g0 < g1) {
            int64_t r1 = g1 * m->group;
            task_rows(m, (int)(g0 * m->group), (int)(r1 < m->job.rows ? r1 : m->job.rows));
        }
        base += unit * G;
    }
}

static void multi_worker(void *arg, int ith, int nth) {
    multi_run *mr = arg;
    (void)ith;
    long long cur = atomic_load_explicit(&mr->next, memory_order_relaxed);
    while (cur < mr->total) {
        int64_t take = (mr->total - cur) / (2 * nth);
        if (take < mr->min_piece) take = mr->min_piece;
        const int64_t end = cur + take < mr->total ? cur + take : mr->total;
        if (atomic_compare_exchange_weak_explicit(&mr->next, &cur, end, memory_order_relaxed, memory_order_relaxed)) {
            run_piece(mr, cur, end);
            cur = atomic_load_explicit(&mr->next, memory_order_relaxed);
        }
    }
}

static void run_tasks(tpool *tp, const mm_task *tasks, int n) {
    multi_run mr = {.tasks = tasks, .n = n};
    int64_t biggest = 0;
    for (int i = 0; i < n; i++) {
        const int64_t u = task_unit(&tasks[i]);
        mr.total += u * ((tasks[i].job.rows + tasks[i].group - 1) / tasks[i].group);
        if (u > biggest) biggest = u;
    }
    if (mr.total <= 0) return;
    /* pieces of at least ~64K weight-tokens, and at least one group */
    mr.min_piece = 3 * 65536 > biggest ? 3 * 65536 : biggest;
    atomic_init(&mr.next, 0);
    tpool_run(tp, multi_worker, &mr);
}

void kern_matmul_q_path(enum kern_path p, tpool *tp, int wtype, const void *W, int rows, int cols,
                        const void *Xq, int ntok, float *Y) {
    check_or_die("kern_matmul_q", wtype, rows, cols, ntok);
    if (ntok == 0) return;
    mm_task m;
    void *owned;
    task_init(&m, usable(p), wtype, W, rows, cols, NULL, Xq, ntok, Y, &owned);
    run_tasks(tp, &m, 1);
    free(owned);
}

void kern_matmul_path(enum kern_path p, tpool *tp, int wtype, const void *W, int rows, int cols,
                      const float *X, int ntok, float *Y) {
    check_or_die("kern_matmul", wtype, rows, cols, ntok);
    if (ntok == 0) return;
    mm_task m;
    void *owned;
    task_init(&m, usable(p), wtype, W, rows, cols, X, NULL, ntok, Y, &owned);
    run_tasks(tp, &m, 1);
    free(owned);
}

void kern_matmul_q(tpool *tp, int wtype, const void *W, int rows, int cols, const void *Xq, int ntok,
                   float *Y) {
    kern_matmul_q_path(kern_get_path(), tp, wtype, W, rows, cols, Xq, ntok, Y);
}

void kern_matmul(tpool *tp, int wtype, const void *W, int rows, int cols, const float *X, int ntok,
                 float *Y) {
    kern_matmul_path(kern_get_path(), tp, wtype, W, rows, cols, X, ntok, Y);
}

void kern_matmul_multi(tpool *tp, const kern_mm *mm, int n) {
    if (n <= 0) return;
    enum kern_path p = kern_get_path();
    mm_task *tasks = xmalloc(sizeof *tasks * (size_t)n);
    void **owned = xmalloc(sizeof *owned * (size_t)n);
    for (int i = 0; i < n; i++) {
        check_or_die("kern_matmul_multi", mm[i].wtype, mm[i].rows, mm[i].cols, mm[i].ntok);
        task_init(&tasks[i], p, mm[i].wtype, mm[i].W, mm[i].rows, mm[i].cols, mm[i].X, NULL, mm[i].ntok,
                  mm[i].Y, &owned[i]);
    }
    run_tasks(tp, tasks, n);
    for (int i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(tasks);
}

/* ---- bandwidth probe ---- */

uint64_t kern_read_sum(const void *p, size_t n) {
    switch (kern_get_path()) {
    case KERN_AVX512: return kern_avx512_read(p, n);
    case KERN_AVX2: return kern_avx2_read(p, n);
    default: {
        const uint64_t *q = p;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i < n / 8; i += 4) {
            s0 += q[i];
            s1 += q[i + 1];
            s2 += q[i + 2];
            s3 += q[i + 3];
        }
        return s0 + s1 + s2 + s3;
    }
    }
}

uint64_t kern_int8_peak(uint64_t iters) {
    switch (kern_get_path()) {
    case KERN_AVX512: return kern_avx512_int8_peak(iters);
    case KERN_AVX2: return kern_avx2_int8_peak(iters);
    default: return 0;
    }
}

/* ---- llama.cpp-order hook (llama_order.h) ----
 * lo_matmul asks here first: the SIMD kernels of kern_lo_*.c reproduce
 * its float orders bit for bit (test_kernels checks it case by case). */
_Static_assert((int)KERN_LO_VEC == (int)LO_K_VEC && (int)KERN_LO_TINY == (int)LO_K_TINY && (int)KERN_LO_GEMM == (int)LO_K_GEMM,
               "kernel ids of kern_impl.h and llama_order.h");

bool kern_matmul_llama_path(enum kern_path p, tpool *tp, int k, bool repacked, int wtype, const void *W, int rows,
                            int cols, const void *Aq, size_t astride, int ntok, float *Y) {
    const kern_wops *ops = NULL;
    if (p == KERN_AVX512 && kern_path_supported(p)) ops = kern_avx512_lo(wtype, k, repacked);
    if (p == KERN_AVX2 && kern_path_supported(p)) ops = kern_avx2_lo(wtype, k, repacked);
    if (!ops) return false;
    check_or_die("kern_matmul_llama", wtype, rows, cols, ntok);
    if (ntok == 0) return true;
    if (astride != kern_act_row_size(wtype, cols)) {
        fprintf(stderr, "moe: kern_matmul_llama: activation stride %zu, expected %zu\n", astride,
                kern_act_row_size(wtype, cols));
        abort();
    }
    mm_task m;
    void *owned;
    task_init_ops(&m, ops, p, wtype, W, rows, cols, NULL, Aq, ntok, Y, &owned);
    run_tasks(tp, &m, 1);
    free(owned);
    return true;
}

/* lo_matmul_multi's products, all in one run: false unless every product
 * has a kernel on the current path.  Products sharing activations (same
 * Aq, same preparation) share the prepared copy too. */
bool kern_matmul_llama_multi(tpool *tp, const lo_mmq *mm, int n) {
    const enum kern_path p = kern_get_path();
    if (p == KERN_SCALAR || n <= 0) return n <= 0;
    const kern_wops **ops = xmalloc(sizeof *ops * (size_t)n);
    for (int i = 0; i < n; i++) {
        ops[i] = p == KERN_AVX512 ? kern_avx512_lo(mm[i].wtype, (int)mm[i].k, mm[i].repacked)
                                  : kern_avx2_lo(mm[i].wtype, (int)mm[i].k, mm[i].repacked);
        if (!ops[i]) {
            free(ops);
            return false;
        }
    }
    mm_task *tasks = xmalloc(sizeof *tasks * (size_t)n);
    void **owned = xmalloc(sizeof *owned * (size_t)n);
    for (int i = 0; i < n; i++) {
        owned[i] = NULL;
        check_or_die("kern_matmul_llama_multi", mm[i].wtype, mm[i].rows, mm[i].cols, mm[i].ntok);
        int same = -1;
        for (int j = 0; j < i && same < 0; j++)
            if (mm[j].Aq == mm[i].Aq && ops[j]->act_prep == ops[i]->act_prep && ops[j]->act_bytes == ops[i]->act_bytes &&
                mm[j].cols == mm[i].cols && mm[j].ntok >= mm[i].ntok)
                same = j;
        if (same >= 0 || mm[i].ntok == 0) {
            /* the prepared rows of product `same` (or none at all) */
            memset(&tasks[i], 0, sizeof tasks[i]);
            tasks[i].ops = ops[i];
            tasks[i].group = ops[i]->group;
            tasks[i].job = (kern_job){.W = mm[i].W, .wstride = qtype_row_size(mm[i].wtype, mm[i].cols),
                                      .rows = mm[i].rows, .cols = mm[i].cols,
                                      .A = same >= 0 ? tasks[same].job.A : NULL,
                                      .astride = same >= 0 ? tasks[same].job.astride : 0, .ntok = mm[i].ntok,
                                      .Y = mm[i].Y, .ystride = (size_t)mm[i].rows};
            continue;
        }
        if (mm[i].astride != kern_act_row_size(mm[i].wtype, mm[i].cols)) {
            fprintf(stderr, "moe: kern_matmul_llama_multi: activation stride %zu, expected %zu\n", mm[i].astride,
                    kern_act_row_size(mm[i].wtype, mm[i].cols));
            abort();
        }
        task_init_ops(&tasks[i], ops[i], p, mm[i].wtype, mm[i].W, mm[i].rows, mm[i].cols, NULL, mm[i].Aq,
                      mm[i].ntok, mm[i].Y, &owned[i]);
    }
    run_tasks(tp, tasks, n);
    for (int i = 0; i < n; i++) free(owned[i]);
    free(owned);
    free(tasks);
    free(ops);
    return true;
}

/* ---- attention and element-wise steps ---- */

bool kern_softmax_llama_path(enum kern_path p, float *x, int n) {
    if (p == KERN_SCALAR || !kern_path_supported(p)) return false;
    if (p == KERN_AVX512) kern_avx512_softmax(x, n);
    else kern_avx2_softmax(x, n);
    return true;
}

bool kern_swiglu_llama_path(enum kern_path p, const float *g, const float *u, float *y, int n) {
    if (p == KERN_SCALAR || !kern_path_supported(p)) return false;
    if (p == KERN_AVX512) kern_avx512_swiglu(g, u, y, n);
    else kern_avx2_swiglu(g, u, y, n);
    return true;
}

bool kern_attention_llama_path(enum kern_path p, bool tiny, int n_kv, int W, int L, const float *kv, size_t stride,
                               const float *q, float scale, float *pbuf, float *o) {
    if (p == KERN_SCALAR || !kern_path_supported(p)) return false;
    if (p == KERN_AVX512) kern_avx512_attention(tiny, n_kv, W, L, kv, stride, q, scale, pbuf, o);
    else kern_avx2_attention(tiny, n_kv, W, L, kv, stride, q, scale, pbuf, o);
    return true;
}

bool kern_attention_multi_llama_path(enum kern_path p, bool tiny, int n_kv, int W, int L, const float *kv,
                                     size_t stride, int nq, const float *q, size_t qs, float scale, float *pbuf,
                                     size_t ps, float *o, size_t os) {
    if (p == KERN_SCALAR || !kern_path_supported(p)) return false;
    if (p == KERN_AVX512) {
        kern_avx512_attention_multi(tiny, n_kv, W, L, kv, stride, nq, q, qs, scale, pbuf, ps, o, os);
    } else {
        for (int i = 0; i < nq; i++)
            kern_avx2_attention(tiny, n_kv, W, L, kv, stride, q + i * qs, scale, pbuf + i * ps, o + i * os);
    }
    return true;
}

bool kern_attention_multi_llama(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, int nq,
                                const float *q, size_t qs, float scale, float *p, size_t ps, float *o, size_t os) {
    return kern_attention_multi_llama_path(kern_get_path(), tiny, n_kv, W, L, kv, stride, nq, q, qs, scale, p, ps,
                                           o, os);
}

bool kern_rope_llama_path(enum kern_path p, const float *cs, int n_dims, float *x) {
    if (p == KERN_SCALAR || !kern_path_supported(p)) return false;
    if (p == KERN_AVX512) kern_avx512_rope(cs, n_dims, x);
    else kern_avx2_rope(cs, n_dims, x);
    return true;
}

bool kern_softmax_llama(float *x, int n) { return kern_softmax_llama_path(kern_get_path(), x, n); }
bool kern_swiglu_llama(const float *g, const float *u, float *y, int n) {
    return kern_swiglu_llama_path(kern_get_path(), g, u, y, n);
}
bool kern_attention_llama(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                          float scale, float *p, float *o) {
    return kern_attention_llama_path(kern_get_path(), tiny, n_kv, W, L, kv, stride, q, scale, p, o);
}
bool kern_rope_llama(const float *cs, int n_dims, float *x) { return kern_rope_llama_path(kern_get_path(), cs, n_dims, x); }

bool kern_dot_f32_llama_path(enum kern_path p, int n, const float *x, const float *y, float *out) {
    if (p == KERN_SCALAR || !kern_path_supported(p)) return false;
    *out = p == KERN_AVX512 ? kern_avx512_dot_f32_llama(n, x, y) : kern_avx2_dot_f32_llama(n, x, y);
    return true;
}

bool kern_dot_f32_llama(int n, const float *x, const float *y, float *out) {
    return kern_dot_f32_llama_path(kern_get_path(), n, x, y, out);
}

bool kern_matmul_llama(tpool *tp, enum lo_kernel k, bool repacked, int wtype, const void *W, int rows, int cols,
                       const void *Aq, size_t astride, int ntok, float *Y) {
    return kern_matmul_llama_path(kern_get_path(), tp, (int)k, repacked, wtype, W, rows, cols, Aq, astride, ntok, Y);
}
