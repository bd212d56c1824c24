/* A deepseek2-architecture model: hyperparameters read from GGUF metadata
 * and weight tensors bound (not copied) from the mapped file.
 *
 * Shapes use ggml order: {ne0, ne1, ...} with ne0 contiguous.  A matrix
 * {cols, rows} is `rows` rows of `cols` values; it maps an input of
 * `cols` values to an output of `rows` values. */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"

enum moe_gating { MOE_GATING_SOFTMAX = 1, MOE_GATING_SIGMOID = 2 };

typedef struct moe_hparams {
    int n_vocab;         /* V */
    int n_embd;          /* H, hidden size */
    int n_layer;
    int n_ctx_train;
    int n_head;          /* nh */
    int q_lora_rank;     /* 0: "lite" model with a plain attn_q */
    int kv_lora_rank;    /* width of the compressed KV latent c */
    int qk_nope;         /* per-head q/k dims without RoPE */
    int qk_rope;         /* per-head q/k dims with RoPE (k part shared) */
    int v_head;          /* per-head value dims */
    bool legacy_kvb;     /* attn_kv_b instead of attn_k_b/attn_v_b */
    int n_ff;            /* dense FFN width */
    int n_ff_exp;        /* routed expert FFN width */
    int n_expert;        /* E routed experts per MoE layer */
    int n_expert_used;   /* top-k */
    int n_expert_shared; /* shared FFN width is n_ff_exp * n_expert_shared */
    int n_group;         /* expert groups (1 = no group routing) */
    int n_group_used;
    int n_dense_lead;    /* layers [0, n_dense_lead) use the dense FFN */
    int gating;          /* enum moe_gating */
    bool has_exp_bias;   /* exp_probs_b selection bias present */
    bool expert_norm;    /* normalise top-k weights to sum 1 */
    float expert_scale;  /* routed output scale (1 = none) */
    float rms_eps;
    float rope_base;
    /* YaRN RoPE scaling (yarn == false: plain RoPE) */
    bool yarn;
    float yarn_factor;       /* context extension factor (freq_scale = 1/f) */
    int yarn_orig_ctx;
    float yarn_beta_fast, yarn_beta_slow;
    float yarn_log_mul;      /* rope.scaling.yarn_log_multiplier */
    float kq_scale;          /* attention score scale */
    int bos_id, eos_id;      /* -1 if unknown */
} moe_hparams;

/* Weights of one layer; NULL where the layer kind has no such tensor. */
typedef struct moe_layer {
    const gguf_tensor *attn_norm;  /* {H} */
    const gguf_tensor *q_a;        /* {H, q_lora} */
    const gguf_tensor *q_a_norm;   /* {q_lora} */
    const gguf_tensor *q_b;        /* {q_lora, nh*(nope+rope)} */
    const gguf_tensor *q;          /* lite: {H, nh*(nope+rope)} */
    const gguf_tensor *kv_a_mqa;   /* {H, kv_lora+rope} -> [c | k_rope] */
    const gguf_tensor *kv_a_norm;  /* {kv_lora} */
    const gguf_tensor *k_b;        /* {nope, kv_lora, nh}: per head kv_lora rows of nope */
    const gguf_tensor *v_b;        /* {kv_lora, v, nh}: per head v rows of kv_lora */
    const gguf_tensor *kv_b;       /* legacy {kv_lora, nh*(nope+v)} (k_b/v_b derived) */
    const gguf_tensor *attn_out;   /* {nh*v, H} */
    const gguf_tensor *ffn_norm;   /* {H} */
    const gguf_tensor *ffn_gate, *ffn_up; /* dense {H, F} */
    const gguf_tensor *ffn_down;          /* dense {F, H} */
    const gguf_tensor *router;            /* {H, E}, F32 */
    const gguf_tensor *exp_bias;          /* {E}, F32, sigmoid models */
    const gguf_tensor *gate_exps, *up_exps; /* {H, Fe, E} */
    const gguf_tensor *down_exps;           /* {Fe, H, E} */
    const gguf_tensor *gate_shexp, *up_shexp; /* {H, Fe*n_shared} */
    const gguf_tensor *down_shexp;            /* {Fe*n_shared, H} */
    bool is_moe;
} moe_layer;

typedef struct moe_model {
    gguf_file *gguf;
    moe_hparams hp;
    const gguf_tensor *tok_embd;   /* {H, V} */
    const gguf_tensor *out_norm;   /* {H} */
    const gguf_tensor *output;     /* {H, V}; == tok_embd when tied */
    moe_layer *layers;             /* [n_layer] */
    gguf_tensor *derived;          /* legacy k_b/v_b built at load, owned */
    int n_derived;
} moe_model;

/* Reads hyperparameters from metadata and binds and validates every
 * tensor (presence, type, shape against the hyperparameters).  On error
 * returns false with a message naming the key or tensor. */
bool moe_hparams_read(const gguf_file *g, moe_hparams *hp, char *err, size_t errlen);
moe_model *moe_model_load(const char *path, char *err, size_t errlen);
void moe_model_free(moe_model *m);

/* Byte views of expert e of a 3-D expert tensor {cols, rows, E}. */
const void *moe_expert_slice(const gguf_tensor *t, int e);
uint64_t moe_expert_bytes(const gguf_tensor *t);

#endif
