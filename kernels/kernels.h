/* Matrix kernels used by the forward pass, with the SIMD path chosen once
 * at run time (AVX-512, AVX2 or scalar; env MOE_KERNEL=scalar|avx2|avx512
 * forces one).  Weights are rows of a quantized type (enum qtype); the
 * activations are quantized to the type's vec_dot_type first, exactly as
 * llama.cpp does, so results agree with it.
 *
 * Results: activation quantization is bit-exact with the scalar reference
 * (quant.h from_float) on every path.  A dot product on a SIMD path
 * differs from the reference vec_dot only by float rounding (the order of
 * the additions): |y - y_ref| <= kern_tolerance(...) (see below).
 * Within one path, y for a (weight row, token) pair is bitwise the same
 * whatever the batch size, the token's position in it, the thread count
 * or the call (kern_matmul, kern_matmul_q, kern_matmul_multi).
 *
 * The forward pass calls lo_matmul (llama_order.h: llama.cpp's exact
 * float order); it hands its products to kern_matmul_llama (declared
 * there, defined in kernels.c), whose SIMD kernels give its scalar
 * code's bits on the AVX-512 and AVX2 paths. */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"
#include "threadpool.h"

enum kern_path { KERN_SCALAR = 0, KERN_AVX2 = 1, KERN_AVX512 = 2 };

/* Picks the path (idempotent, thread-safe after the first call). */
void kern_init(void);
enum kern_path kern_get_path(void);
const char *kern_path_name(enum kern_path p);
/* Whether this CPU and OS can run path p. */
bool kern_path_supported(enum kern_path p);
/* Whether path p has its own kernel for wtype (else it uses the scalar
 * reference for that type, e.g. Q4_1/Q5_1). */
bool kern_path_has_type(enum kern_path p, int wtype);

/* Checks that kern_matmul can take a rows x cols matrix of wtype; false
 * with a message naming the problem otherwise. */
bool kern_check(int wtype, int rows, int cols, char *err, size_t errlen);

/* Bytes of one activation row of n values quantized for weights of wtype. */
size_t kern_act_row_size(int wtype, int n);
/* Quantizes one activation row x[n] to the vec_dot_type of wtype. */
void kern_quantize_act(int wtype, const float *x, void *q, int n);

/* Y[t][r] = sum_k W[r][k] * X[t][k], r < rows, t < ntok.
 * W: rows x cols of wtype, row stride qtype_row_size(wtype, cols).
 * X: ntok x cols floats (row stride cols).  Y: ntok x rows (stride rows).
 * Work is split over the pool's threads by rows.  Invalid arguments (see
 * kern_check) print a message and abort: validate shapes at load. */
void kern_matmul(tpool *tp, int wtype, const void *W, int rows, int cols,
                 const float *X, int ntok, float *Y);

/* Same, with X already quantized by kern_quantize_act (row stride
 * kern_act_row_size(wtype, cols)), for callers that reuse one quantized
 * activation against several matrices. */
void kern_matmul_q(tpool *tp, int wtype, const void *W, int rows, int cols,
                   const void *Xq, int ntok, float *Y);

/* Several independent products in one parallel run, e.g. the routed
 * experts of a MoE layer (each with its own tokens) or gate and up: the
 * rows of all of them are split over the threads together, so small
 * matrices do not each pay a synchronisation. */
typedef struct kern_mm {
    int wtype;        /* weight type */
    const void *W;    /* rows x cols of wtype */
    int rows, cols;
    const float *X;   /* ntok x cols floats */
    int ntok;         /* may be 0 (nothing to do) */
    float *Y;         /* ntok x rows */
} kern_mm;
void kern_matmul_multi(tpool *tp, const kern_mm *mm, int n);

/* llama.cpp's exact float order: lo_matmul (llama_order.h) calls the hook
 * kern_matmul_llama, implemented here with SIMD kernels that give its
 * scalar code's bits.  This variant takes the path explicitly (tests,
 * bench); k is an enum lo_kernel.  False, computing nothing, when the path
 * has no kernel for the case (then lo_matmul's scalar code runs). */
bool kern_matmul_llama_path(enum kern_path p, tpool *tp, int k, bool repacked, int wtype, const void *W, int rows,
                            int cols, const void *Aq, size_t astride, int ntok, float *Y);

/* lo_dot_f32 (ggml_vec_dot_f32's order) with SIMD: *out gets its bits.
 * False when the current path has no such kernel. */
bool kern_dot_f32_llama(int n, const float *x, const float *y, float *out);
bool kern_dot_f32_llama_path(enum kern_path p, int n, const float *x, const float *y, float *out);

/* The element-wise and attention steps of llama_order.h (lo_softmax,
 * lo_swiglu, lo_attention, lo_rope) on path p: the same bits as the scalar
 * code there.  False, computing nothing, when the path has no kernel. */
bool kern_softmax_llama_path(enum kern_path p, float *x, int n);
bool kern_swiglu_llama_path(enum kern_path p, const float *g, const float *u, float *y, int n);
bool kern_attention_llama_path(enum kern_path p, bool tiny, int n_kv, int W, int L, const float *kv, size_t stride,
                               const float *q, float scale, float *pbuf, float *o);
bool kern_rope_llama_path(enum kern_path p, const float *cs, int n_dims, float *x);
bool kern_attention_multi_llama_path(enum kern_path p, bool tiny, int n_kv, int W, int L, const float *kv,
                                     size_t stride, int nq, const float *q, size_t qs, float scale, float *pbuf,
                                     size_t ps, float *o, size_t os);

/* Tolerance of a SIMD result against the scalar reference vec_dot, for a
 * dot product of n values whose terms have absolute sum `abs_sum`
 * (sum |w_i * a_i| over the dequantized values):
 *   |y - y_ref| <= (n / 16 + 32) * 2^-23 * abs_sum + 1e-30
 * i.e. a few float roundings per block or 16-value chunk, relative to the
 * sum of magnitudes (cancellation makes a plain relative bound useless). */
double kern_tolerance(int n, double abs_sum);

/* Explicit-path variants (tests, bench): as above on path p, which must
 * be supported. */
void kern_quantize_act_path(enum kern_path p, int wtype, const float *x, void *q, int n);
void kern_matmul_path(enum kern_path p, tpool *tp, int wtype, const void *W, int rows, int cols,
                      const float *X, int ntok, float *Y);
void kern_matmul_q_path(enum kern_path p, tpool *tp, int wtype, const void *W, int rows, int cols,
                        const void *Xq, int ntok, float *Y);

/* Reads n bytes (n a multiple of 256, p 64-byte aligned) with the widest
 * loads of the current path and returns a checksum: the bandwidth probe. */
uint64_t kern_read_sum(const void *p, size_t n);

/* The compute probe: `iters` rounds of independent chains of the current
 * path's int8 dot instruction (vpdpbusd; AVX2: vpmaddubsw + vpmaddwd),
 * kept in registers.  Returns the int8 multiply-accumulates done (0 on
 * the scalar path), so MACs / seconds is the path's peak on one thread. */
uint64_t kern_int8_peak(uint64_t iters);

#endif
