/* Kernel dispatch.  Scalar path for now: activation quantization and
 * vec_dot come from the reference traits in quant.h. */
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

static enum kern_path g_path = KERN_SCALAR;

void kern_init(void) { g_path = KERN_SCALAR; }
enum kern_path kern_get_path(void) { return g_path; }

const char *kern_path_name(enum kern_path p) {
    switch (p) {
    case KERN_AVX512: return "avx512";
    case KERN_AVX2: return "avx2";
    default: return "scalar";
    }
}

size_t kern_act_row_size(int wtype, int n) {
    const qtype_info *qi = qtype_get(wtype);
    return qi ? qtype_row_size(qi->vec_dot_type, n) : 0;
}

void kern_quantize_act(int wtype, const float *x, void *q, int n) {
    const qtype_info *qi = qtype_get(wtype);
    const qtype_info *ai = qtype_get(qi->vec_dot_type);
    if (qi->vec_dot_type == QT_F32)
        memcpy(q, x, (size_t)n * sizeof(float));
    else
        ai->from_float(x, q, n);
}

typedef struct {
    const qtype_info *qi;
    const uint8_t *W;
    size_t wstride, astride;
    int rows, cols, ntok;
    const uint8_t *Xq;
    float *Y;
} matmul_job;

static void matmul_worker(void *arg, int ith, int nth) {
    const matmul_job *j = arg;
    int r0 = (int)((int64_t)j->rows * ith / nth);
    int r1 = (int)((int64_t)j->rows * (ith + 1) / nth);
    for (int t = 0; t < j->ntok; t++) {
        const uint8_t *a = j->Xq + (size_t)t * j->astride;
        float *y = j->Y + (size_t)t * j->rows;
        for (int r = r0; r < r1; r++)
            j->qi->vec_dot(j->cols, &y[r], j->W + (size_t)r * j->wstride, a);
    }
}

void kern_matmul_q(tpool *tp, int wtype, const void *W, int rows, int cols,
                   const void *Xq, int ntok, float *Y) {
    matmul_job j = {
        .qi = qtype_get(wtype), .W = W, .wstride = qtype_row_size(wtype, cols),
        .astride = kern_act_row_size(wtype, cols), .rows = rows, .cols = cols,
        .ntok = ntok, .Xq = Xq, .Y = Y,
    };
    tpool_run(tp, matmul_worker, &j);
}

void kern_matmul(tpool *tp, int wtype, const void *W, int rows, int cols,
                 const float *X, int ntok, float *Y) {
    size_t as = kern_act_row_size(wtype, cols);
    uint8_t *q = malloc(as * (size_t)(ntok > 0 ? ntok : 1));
    if (!q) abort();
    for (int t = 0; t < ntok; t++)
        kern_quantize_act(wtype, X + (size_t)t * cols, q + (size_t)t * as, cols);
    kern_matmul_q(tp, wtype, W, rows, cols, q, ntok, Y);
    free(q);
}
