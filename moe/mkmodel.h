/* Random-weight deepseek2 models, written as GGUF files laid out the way
 * llama.cpp expects them (metadata keys, tensor names, shapes, types,
 * alignment), for tests, benchmarks and demos.
 *
 * Weights are drawn from a seeded generator, row by row, and quantized
 * with the reference quantizers of kernels/quant.h while the file is
 * streamed: memory stays at a few rows per thread (plus the expert pool,
 * below).  The values of a row depend only on (seed, tensor name, row), so
 *   - the file is the same byte for byte for a seed, whatever the thread
 *     count;
 *   - the same seed at another --type holds the same weights, only
 *     encoded differently; fewer --layers / --experts keep the weights of
 *     the layers / experts that remain;
 *   - --legacy-kvb holds the same function as the split layout (attn_k_b
 *     and attn_v_b are cut from the same attn_kv_b values).
 *
 * Expert pool: quantizing every routed expert of a big model would take
 * hours (v3-layer has 11 billion expert weights), so by default only the
 * first `expert_pool` experts of an expert tensor are drawn and quantized;
 * the rows of the others are copies of rows of those, picked at random.
 * Every expert is still a different function and every byte is still
 * read at inference; expert_pool = 0 draws every expert. */
#ifndef MOE_MKMODEL_H
#define MOE_MKMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --type Q4_K_M: a mix of types (see mkmodel_tensor_type), not one qtype. */
#define MK_TYPE_Q4_K_M 1000

/* Hyperparameters of a model to generate (a preset after overrides). */
typedef struct mkmodel_config {
    const char *preset;  /* preset name */
    int n_vocab;         /* tokens, incl. 3 control + 256 bytes + 2 chat */
    int n_embd;          /* hidden size H */
    int n_layer;
    int n_dense_lead;    /* layers [0, n_dense_lead) have a dense FFN */
    int n_head;
    int q_lora_rank;     /* 0: lite model, plain attn_q */
    int kv_lora_rank;
    int qk_nope, qk_rope, v_head; /* per-head dims */
    int n_ff;            /* dense FFN width */
    int n_ff_exp;        /* routed expert FFN width */
    int n_expert;        /* routed experts per MoE layer */
    int n_expert_used;
    int n_expert_shared; /* shared FFN width = n_ff_exp * n_expert_shared */
    int n_group, n_group_used; /* expert groups (1/1: no group routing) */
    int gating;          /* 1 softmax, 2 sigmoid (enum moe_gating) */
    bool exp_bias;       /* exp_probs_b.bias selection bias (sigmoid models) */
    bool expert_norm;    /* expert_weights_norm */
    float expert_scale;  /* expert_weights_scale */
    bool yarn;           /* YaRN rope scaling keys present */
    float yarn_factor;
    int yarn_orig_ctx;
    float yarn_log_mul;  /* 0.1 * mscale_all_dim */
    int n_ctx_train;     /* context_length */
    float rms_eps;
    float rope_base;
    bool legacy_kvb;     /* one attn_kv_b instead of attn_k_b + attn_v_b */
} mkmodel_config;

typedef struct mkmodel_opts {
    const char *preset;  /* "tiny", "mini", "v3-layer", "lite" */
    int ftype;           /* enum qtype (F32 F16 BF16 Q8_0 Q4_0 Q2_K..Q6_K) or MK_TYPE_Q4_K_M */
    uint64_t seed;
    int n_experts;       /* > 0: routed experts (groups adjusted to fit) */
    int n_layers;        /* > 0: layer count */
    int n_vocab;         /* > 0: vocabulary size */
    bool legacy_kvb;
    int expert_pool;     /* experts drawn per expert tensor (0: all) */
    int n_threads;       /* <= 0: one per core */
    bool progress;       /* percent of bytes written on stderr */
} mkmodel_opts;

typedef struct mkmodel_stats {
    uint64_t file_bytes;  /* size of the written file */
    uint64_t n_params;    /* weights (elements of every tensor) */
    int n_tensors;
    double seconds;       /* wall time of the whole generation */
} mkmodel_stats;

/* One tensor of the plan, in file order. */
typedef struct mkmodel_tensor {
    char name[48];       /* GGUF tensor name */
    int type;            /* enum qtype */
    int n_dims;
    int64_t ne[3];       /* ggml order, unused dims 1 */
} mkmodel_tensor;

/* Defaults: preset "tiny", Q4_K_M, seed 1, expert pool 4, all cores. */
void mkmodel_opts_init(mkmodel_opts *o);

/* Names of the presets, NULL-terminated. */
const char *const *mkmodel_presets(void);

/* "Q4_K" -> QT_Q4_K, "Q4_K_M" -> MK_TYPE_Q4_K_M (case-insensitive); -1 if
 * not a --type value.  mkmodel_type_name is the inverse. */
int mkmodel_parse_type(const char *name);
const char *mkmodel_type_name(int ftype);

/* The hyperparameters o asks for, validated.  false + message on an
 * unknown preset or an override that cannot make a valid model. */
bool mkmodel_config_from(const mkmodel_opts *o, mkmodel_config *c, char *err, size_t errlen);

/* Type of a weight tensor: base is its name without "blk.N." and
 * ".weight" (e.g. "ffn_down_exps"), layer its block (-1 for top-level),
 * ncols its row length ne[0].  Norms, ffn_gate_inp and exp_probs_b are
 * always F32.  A quantized type whose block does not divide ncols falls
 * back as llama.cpp does (Q2_K/Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1,
 * Q6_K -> Q8_0, then F16).  Q4_K_M: Q6_K for output and, in llama.cpp's
 * "more bits" layers (first and last eighth, every third between), for
 * ffn_down, ffn_down_exps, ffn_down_shexp and attn_v_b / attn_kv_b; Q4_K
 * for the other matrices. */
int mkmodel_tensor_type(const mkmodel_config *c, int ftype, const char *base, int layer, int64_t ncols);

/* The tensors of the model in file order; *out is malloc'ed (free it).
 * Returns the count. */
int mkmodel_plan(const mkmodel_config *c, int ftype, mkmodel_tensor **out);

/* Generates the model o describes into path.  st (may be NULL) gets the
 * figures.  false + message (naming the file or option) on error; a
 * partial file is removed. */
bool mkmodel_write(const mkmodel_opts *o, const char *path, mkmodel_stats *st, char *err, size_t errlen);

#endif
