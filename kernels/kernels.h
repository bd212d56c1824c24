/* Matrix kernels used by the forward pass, with the SIMD path chosen once
 * at run time (AVX-512, AVX2 or scalar; env MOE_KERNEL=scalar|avx2|avx512
 * forces one).  Weights are rows of a quantized type (enum qtype); the
 * activations are quantized to the type's vec_dot_type first, exactly as
 * llama.cpp does, so results agree with it. */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"
#include "threadpool.h"

enum kern_path { KERN_SCALAR = 0, KERN_AVX2 = 1, KERN_AVX512 = 2 };

/* Picks the path (idempotent, thread-safe after the first call). */
void kern_init(void);
enum kern_path kern_get_path(void);
const char *kern_path_name(enum kern_path p);

/* Bytes of one activation row of n values quantized for weights of wtype. */
size_t kern_act_row_size(int wtype, int n);
/* Quantizes one activation row x[n] to the vec_dot_type of wtype. */
void kern_quantize_act(int wtype, const float *x, void *q, int n);

/* Y[t][r] = sum_k W[r][k] * X[t][k], r < rows, t < ntok.
 * W: rows x cols of wtype, row stride qtype_row_size(wtype, cols).
 * X: ntok x cols floats (row stride cols).  Y: ntok x rows (stride rows).
 * Work is split over the pool's threads by rows. */
void kern_matmul(tpool *tp, int wtype, const void *W, int rows, int cols,
                 const float *X, int ntok, float *Y);

/* Same, with X already quantized by kern_quantize_act (row stride
 * kern_act_row_size(wtype, cols)), for callers that reuse one quantized
 * activation against several matrices. */
void kern_matmul_q(tpool *tp, int wtype, const void *W, int rows, int cols,
                   const void *Xq, int ntok, float *Y);

#endif
