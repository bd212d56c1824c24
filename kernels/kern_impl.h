/* Internal interface between the dispatcher (kernels.c) and the SIMD
 * kernel files (kern_avx2.c, kern_avx512.c, ...).  Not for other users.
 *
 * How a product is computed on a SIMD path:
 *  1. each activation row is quantized to the weight type's vec_dot_type
 *     in the reference format (bit-exact with quant.h's from_float), then
 *  2. "prepared" into the path's own layout (act_prep: e.g. sums of each
 *     sub-block added, f16 widened to f32), once per call, and
 *  3. matmul() computes rows [r0, r1) for every token.
 *
 * Determinism: the float result of a (weight row, token) pair is a fixed
 * sequence of operations that depends only on that row and that token's
 * prepared activation, never on the other rows or tokens processed with
 * it, the tile they fall into, or the thread.  Integer kernels compute
 * each block's integer dot product exactly and then apply, block after
 * block, acc = fma(d_w * d_a, (float)isum, acc) (types with mins keep a
 * second accumulator acc_m = fma((float)msum, dmin_w * d_a, acc_m) and
 * return acc - acc_m, llama.cpp's repacked Q4_K gemv order); float
 * kernels keep one vector accumulator per pair over fixed column chunks
 * and reduce it with a fixed tree.  So decode (1 token), prefill (many)
 * and any split of tokens over ranks give bitwise equal results.
 *
 * The engine itself goes through lo_matmul (llama_order.c), whose float
 * orders are llama.cpp's; kern_lo_*.c (and some kernels here) reproduce
 * those bit for bit behind its kern_matmul_llama hook. */
#ifndef MOE_KERN_IMPL_H
#define MOE_KERN_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

typedef struct kern_job {
    const uint8_t *W;  /* weight rows, row r at W + r * wstride */
    size_t wstride;    /* bytes per weight row (qtype_row_size) */
    int rows, cols;    /* matrix shape: rows outputs of cols inputs */
    const uint8_t *A;  /* prepared activations, token t at A + t * astride */
    size_t astride;    /* bytes per prepared activation row (act_bytes) */
    int ntok;          /* tokens */
    float *Y;          /* output, Y[t * ystride + r] */
    size_t ystride;    /* floats between two tokens' outputs (>= rows) */
} kern_job;

typedef struct kern_wops {
    int group;     /* rows computed together; r0/r1 passed to matmul are
                      multiples of it (r1 may also be rows) */
    int act_type;  /* reference type the activations are quantized to */
    /* bytes of one prepared activation row of cols values */
    size_t (*act_bytes)(int cols);
    /* prepares one activation row from its reference-format encoding */
    void (*act_prep)(const void *xq, int cols, void *dst);
    /* Y for rows [r0, r1) and every token of the job */
    void (*matmul)(const kern_job *j, int r0, int r1);
} kern_wops;

/* Quantizes n floats to act_type's reference format, bit-exact with the
 * type's from_float (n a multiple of the block size). */
typedef void (*kern_quant_fn)(const float *x, void *q, int n);

/* NULL when the path has no kernel for that type (the dispatcher then
 * uses the scalar reference). */
const kern_wops *kern_avx512_wops(int wtype);
const kern_wops *kern_avx2_wops(int wtype);
kern_quant_fn kern_avx512_quant(int act_type);
kern_quant_fn kern_avx2_quant(int act_type);

/* llama.cpp-order kernels (kern_lo_*.c), bitwise equal to lo_matmul of
 * llama_order.c: kernel is the one llama.cpp runs for the op (VEC:
 * ggml_vec_dot or the repacked gemv; TINY: tinyBLAS; GEMM: the repacked
 * gemm), repacked whether the weights were repacked.  NULL: not covered. */
enum { KERN_LO_VEC = 0, KERN_LO_TINY = 1, KERN_LO_GEMM = 2 };
const kern_wops *kern_avx512_lo(int wtype, int kernel, int repacked);
const kern_wops *kern_avx2_lo(int wtype, int kernel, int repacked);
/* ggml_vec_dot_f32's order (lo_dot_f32) */
float kern_avx512_dot_f32_llama(int n, const float *x, const float *y);
float kern_avx2_dot_f32_llama(int n, const float *x, const float *y);
/* llama_order.h's attention and element-wise steps (kern_attn_*.c) */
void kern_avx512_softmax(float *x, int n);
void kern_avx2_softmax(float *x, int n);
void kern_avx512_swiglu(const float *g, const float *u, float *y, int n);
void kern_avx2_swiglu(const float *g, const float *u, float *y, int n);
void kern_avx512_attention(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                           float scale, float *p, float *o);
void kern_avx2_attention(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                         float scale, float *p, float *o);
void kern_avx512_attention_multi(int tiny, int n_kv, int W, int L, const float *kv, size_t stride, int nq,
                                 const float *q, size_t qs, float scale, float *p, size_t ps, float *o, size_t os);
void kern_avx512_rope(const float *cs, int n_dims, float *x);
void kern_avx2_rope(const float *cs, int n_dims, float *x);
/* kern_avx512.c's 16-row Q4_K kernel in llama.cpp's repacked gemm order */
const kern_wops *kern_avx512_q4k_gemm(void);

/* Sum of n bytes read with wide loads (n a multiple of 256, p aligned to
 * 64): the memory-bandwidth probe of `moe bench --mem`. */
uint64_t kern_avx512_read(const void *p, size_t n);
uint64_t kern_avx2_read(const void *p, size_t n);
/* Peak probe: `iters` rounds of independent int8 dot chains; returns the
 * multiply-accumulates done (kern_int8_peak). */
uint64_t kern_avx512_int8_peak(uint64_t iters);
uint64_t kern_avx2_int8_peak(uint64_t iters);

#endif
