/* Arithmetic in llama.cpp's exact float operation order.
 *
 * The reference logits come from llama.cpp's CPU backend built for
 * AVX-512 (F/BW/VL/VNNI/BF16).  Its results depend on the order of every
 * float addition and on which additions are fused (FMA).  Near-tied
 * router scores in MoE models turn a 1-ulp difference into a different
 * expert, so to agree with it beyond ~1e-6 an engine has to repeat that
 * order.  This file does, in plain C (fmaf() where llama.cpp uses an FMA
 * instruction; fmaf is exact in software too).
 *
 * What llama.cpp runs for y = W x (ggml_compute_forward_mul_mat) depends
 * on the weight type, on whether the tensor was "repacked" at load (the
 * CPU_REPACK buffer: Q4_0 and Q4_K matrices, also Q2_K, with a row count
 * divisible by 8, used as a plain 2-D mul_mat or as 3-D mul_mat_id
 * experts), and on the number of activation rows of the op:
 *   - F32/F16/BF16, >= 2 rows, rows % 4 == 0, cols % 16 (BF16: 32) == 0:
 *     tinyBLAS (one 16-lane accumulator per output, FMA, or VDPBF16PS for
 *     BF16, over column chunks, then _mm512_reduce_add_ps);
 *   - otherwise, and in mul_mat_id: ggml_vec_dot_f32/f16/bf16 (4 x 16
 *     lanes over 64-column steps, scalar tail; BF16: 2 x 16 dpbf16 lanes);
 *   - Q4_0/Q5_0/Q8_0/Q4_1/Q5_1 not repacked: 8 lanes, lane l holding
 *     values 4l..4l+3 of each 32-block, acc = fma(d_w*d_a, isum, acc),
 *     then hsum_float_8 (tinyBLAS_Q0 and vec_dot agree);
 *   - Q2_K/Q3_K/Q4_K/Q5_K/Q6_K not repacked: vec_dot's 8 lanes over each
 *     32-value group, the mins (Q6_K: the -32 offset) handled per bsum
 *     pair (Q3_K's -4 offset stays in its own lane; Q2_K's min lanes are
 *     FMA'd into the same 8 lanes first);
 *   - repacked Q4_0: one accumulator per output, block after block (gemv
 *     and gemm agree); repacked Q4_K: gemv per super-block, gemm per pair
 *     of 32-value sub-blocks; repacked Q2_K (only an AVX-512 build
 *     repacks it): the same two accumulators, gemv per super-block, gemm
 *     per 128-value half.
 * Checked bit for bit against llama.cpp (node-llama-cpp 3.21.1's build,
 * ggml 0.23.0) op by op.
 *
 * So for F32/F16/BF16 and repacked Q4_K/Q2_K, llama.cpp's own result depends on
 * whether the op had one row or several: lo_matmul takes the op as an
 * argument (the caller knows it) instead of looking at its own batch.  One
 * deviation keeps rows independent of how a batch is cut: llama.cpp's
 * repacked gemm leaves the last ntok % 4 rows to gemv, we use the gemm
 * order for all rows of a multi-row op. */
#ifndef MOE_LLAMA_ORDER_H
#define MOE_LLAMA_ORDER_H

#include <stdbool.h>
#include <stddef.h>

#include "threadpool.h"

/* Which llama.cpp operation a product stands for. */
enum lo_op {
    LO_MUL_MAT_1 = 0, /* ggml_mul_mat with one activation row (decode) */
    LO_MUL_MAT_N = 1, /* ggml_mul_mat with >= 2 activation rows (prefill) */
    LO_MUL_MAT_ID = 2 /* ggml_mul_mat_id: routed experts, any row count */
};

/* The ggml_mul_mat op for a product over n activation rows. */
static inline enum lo_op lo_mul_mat_op(int n) { return n >= 2 ? LO_MUL_MAT_N : LO_MUL_MAT_1; }

/* Whether llama.cpp's CPU backend repacks a weight matrix of this type
 * and row count (in_mul_mat: used as a 2-D ggml_mul_mat src0 or as 3-D
 * mul_mat_id experts; 3-D tensors in a broadcast mul_mat are not). */
bool lo_repacked(int wtype, int rows, bool in_mul_mat);

/* Y[t][r] = sum_k W[r][k] X[t][k] in llama.cpp's order for op and layout
 * (repacked from lo_repacked).  Activations are quantized to the weight's
 * vec_dot type first, as llama.cpp does.  Rows are split over the pool;
 * a (row, token) result depends only on op, repacked and its inputs. */
void lo_matmul(tpool *tp, enum lo_op op, bool repacked, int wtype, const void *W, int rows, int cols,
               const float *X, int ntok, float *Y);

/* One product of lo_matmul_multi: exactly what lo_matmul would compute
 * with these arguments. */
typedef struct lo_mm {
    enum lo_op op;   /* llama.cpp op the product stands for */
    bool repacked;   /* lo_repacked() of the weights */
    int wtype;       /* weight type (enum qtype) */
    const void *W;   /* rows x cols of wtype */
    int rows, cols;  /* outputs, inputs */
    const float *X;  /* [ntok][cols] activations */
    int ntok;        /* activation rows; 0: nothing to do */
    float *Y;        /* [ntok][rows] results */
    const int *xrows; /* NULL: X is [ntok][cols]; else activation row t is X + xrows[t] * cols */
} lo_mm;

/* Several independent products in one pool run: every result bitwise that
 * of lo_matmul on the same arguments (each row is computed by the same
 * kernel call pattern), but one synchronisation for all of them instead of
 * one each, which is what small decode products (attention heads, the
 * experts of a token) cost most.  Products reading the same rows (same X
 * and xrows) with the same activation type quantize them once. */
void lo_matmul_multi(tpool *tp, const lo_mm *mm, int n);

/* The kernel llama.cpp runs for one (weight row, activation row) pair. */
enum lo_kernel {
    LO_K_VEC,  /* ggml_vec_dot_* of the type, or the repacked gemv */
    LO_K_TINY, /* tinyBLAS (F32/F16/BF16 ops with >= 2 rows) */
    LO_K_GEMM  /* repacked gemm (ops with >= 2 rows) */
};

/* Hook for SIMD kernels (kernels.c) that reproduce kernel k's order bit for
 * bit: Y for all rows and tokens from activations Aq already quantized to
 * the weight's vec_dot type (row stride astride).  Returns false when no
 * such kernel exists; lo_matmul then computes in scalar C. */
bool kern_matmul_llama(tpool *tp, enum lo_kernel k, bool repacked, int wtype, const void *W, int rows, int cols,
                       const void *Aq, size_t astride, int ntok, float *Y);

/* Several products in one run through the SIMD kernels (kernels.c), with
 * activations already quantized; false, computing nothing, unless every
 * product has a kernel (then lo_matmul_multi computes them itself). */
typedef struct lo_mmq {
    enum lo_kernel k;  /* kernel llama.cpp runs for the product */
    bool repacked;     /* weights repacked at load */
    int wtype;         /* weight type */
    const void *W;     /* rows x cols of wtype */
    int rows, cols;    /* outputs, inputs */
    const void *Aq;    /* [ntok] activation rows quantized to the vec_dot type */
    size_t astride;    /* bytes between two rows of Aq */
    int ntok;          /* activation rows */
    float *Y;          /* [ntok][rows] results */
} lo_mmq;
bool kern_matmul_llama_multi(tpool *tp, const lo_mmq *mm, int n);

/* dot of two float vectors as ggml_vec_dot_f32 (AVX-512 build) */
float lo_dot_f32(int n, const float *x, const float *y);

/* ---- attention (MLA, absorbed, F32 cache) ---- */

/* One query of llama.cpp's attention over a cache of n_kv rows (row s at
 * kv + s * stride, W floats: the latent c_s (L floats), then k_rope):
 *   p[s] = lo_dot_f32(W, row_s, q) * scale        (kq, vec_dot: q is a view)
 *   soft_max over n_kv rounded up to 16, the padding masked to -inf
 *   o[i] = sum_s p[s] * c_s[i], i < L               (kqv)
 * The kqv sum is a mul_mat over the padded cache: tinyBLAS when the batch
 * has >= 2 tokens (tiny: one 16-lane accumulator, position s in lane
 * s % 16), else ggml_vec_dot_f32 (4 x 16 lanes: s in lane s % 16 of
 * accumulator (s / 16) % 4); masked cells add exact zeros, so only the
 * causal positions are visited.  p is scratch of n_kv + 16 floats; on
 * return it holds the probabilities. */
void lo_attention(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q, float scale,
                  float *p, float *o);
/* Its SIMD version (kernels.c; same bits), false if the path has none. */
bool kern_attention_llama(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, const float *q,
                          float scale, float *p, float *o);

/* lo_attention for nq queries over the same n_kv cache rows (the heads of
 * one token): query i at q + i * qs, its probabilities at p + i * ps (n_kv
 * + 16 floats of scratch), its output at o + i * os; each bitwise what
 * lo_attention gives it.  The SIMD version reads every cache row once for
 * several queries. */
void lo_attention_multi(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, int nq, const float *q,
                        size_t qs, float scale, float *p, size_t ps, float *o, size_t os);
bool kern_attention_multi_llama(bool tiny, int n_kv, int W, int L, const float *kv, size_t stride, int nq,
                                const float *q, size_t qs, float scale, float *p, size_t ps, float *o, size_t os);

/* RoPE rotation of n_dims values (adjacent pairs, ggml "normal" mode) with
 * cs[2i], cs[2i+1] the cos and sin of pair i, as llama.cpp's compiled rope
 * rounds it: x0' = fma(x0, cos, -(x1 * sin)), x1' = fma(x0, sin, x1 * cos). */
void lo_rope(const float *cs, int n_dims, float *x);
bool kern_rope_llama(const float *cs, int n_dims, float *x);

/* ---- element-wise ops of the AVX-512 build ---- */

/* ggml_v_expf: llama.cpp's vectorised expf (a polynomial, not libm's),
 * used on 16-value chunks; the tail of a row uses libm expf. */
float lo_v_expf(float x);
/* ggml_v_silu on one value: x / (1 + v_expf(-x)). */
float lo_v_silu(float x);

/* ggml_vec_soft_max_f32 + normalisation over a row of n values: x[i] -
 * max through v_expf in 16-value chunks (libm expf for the tail), sum in
 * double of the per-chunk _mm512_reduce_add_ps sums, then x *= 1/sum. */
void lo_softmax(float *x, int n);

/* y[i] = silu(g[i]) * u[i] as ggml_vec_swiglu_f32 over a row of n. */
void lo_swiglu(const float *g, const float *u, float *y, int n);

/* SIMD versions of the two (kernels.c; same bits), false if none. */
bool kern_softmax_llama(float *x, int n);
bool kern_swiglu_llama(const float *g, const float *u, float *y, int n);

/* The horizontal sums of the AVX-512 build, for kernels that mirror it:
 * hsum_float_8 of an 8-lane accumulator, _mm512_reduce_add_ps of 16. */
float lo_hsum8(const float v[8]);
float lo_reduce16(const float v[16]);

#endif
