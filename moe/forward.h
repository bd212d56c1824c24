/* The forward pass, cut into the units that MPI ranks own.
 *
 * Every unit is a function over plain float buffers with no global state:
 *   embedding            coordinator
 *   attention block      stage rank owning the layer (with its KV cache)
 *   router               stage rank
 *   one routed expert    expert-worker rank owning that expert
 *   shared expert/dense  stage rank
 *   output head          coordinator
 * Hidden states are row-major [n_tok][H] floats.  A batch is n_tok
 * consecutive positions of one sequence (prefill) or one token (decode).
 *
 * Determinism: each unit's result for a token row does not depend on the
 * other rows in the batch or on the thread count, so any split of the work
 * across ranks gives bitwise identical logits. */
#ifndef MOE_FORWARD_H
#define MOE_FORWARD_H

#include "model.h"
#include "threadpool.h"

/* Compressed MLA cache of one layer for one sequence:
 * [n_ctx][kv_lora + rope] floats: normalised latent c, then roped k_rope. */
typedef struct moe_kv_layer {
    int n_ctx;
    int width; /* kv_lora_rank + qk_rope */
    float *data;
} moe_kv_layer;

/* Work memory of the forward pass (forward.c). */
typedef struct moe_scratch moe_scratch;

/* Caches of layers [layer0, layer0 + n_layers) of one sequence. */
typedef struct moe_kvcache {
    int layer0, n_layers;
    int n_ctx;
    moe_kv_layer *layers;
    moe_scratch *scratch; /* moe_forward_local's buffers, kept between calls (NULL until the first) */
} moe_kvcache;

moe_kvcache *moe_kvcache_new(const moe_hparams *hp, int layer0, int n_layers, int n_ctx);
void moe_kvcache_free(moe_kvcache *kv);
moe_kv_layer *moe_kvcache_layer(moe_kvcache *kv, int il); /* NULL if not held */

/* x[n][H] = token embeddings.  Returns false for an id outside the vocab. */
bool moe_embed(const moe_model *m, const int *tokens, int n, float *x);

/* x += attention(rmsnorm(x)) for layer il at positions pos0..pos0+n-1,
 * appending those positions to the layer's cache (causal). */
void moe_attention(const moe_model *m, int il, moe_kv_layer *kv, int pos0, int n,
                   float *x, tpool *tp);

/* h[n][H] = rmsnorm(x) * ffn_norm of layer il (input of every FFN unit). */
void moe_ffn_norm(const moe_model *m, int il, const float *x, int n, float *h);

/* out[n][H] = dense FFN of layer il over h. */
void moe_dense_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp);

/* Routing of n tokens: ids[n][k] expert ids in selection order and
 * w[n][k] their weights (normalised and scaled), k = n_expert_used. */
void moe_router(const moe_model *m, int il, const float *h, int n, int *ids, float *w, tpool *tp);

/* out[n][H] = routed expert e of layer il over h[n][H] (unweighted).
 * Any subset of tokens may be passed: the batch is just rows. */
void moe_expert_ffn(const moe_model *m, int il, int e, const float *h, int n, float *out, tpool *tp);

/* Several experts of layer il at once, each over its own rows: the gate
 * and up products of all of them in one pool run, then the down products
 * in another (instead of three runs per expert).  Every output row is
 * bitwise what moe_expert_ffn / moe_shared_ffn give for it alone. */
typedef struct moe_expert_job {
    int e;           /* routed expert id, or -1: the shared experts */
    const float *h;  /* [n][H] inputs */
    int n;           /* rows (0: skipped) */
    float *out;      /* [n][H] outputs, unweighted */
} moe_expert_job;
void moe_experts_ffn(const moe_model *m, int il, const moe_expert_job *jobs, int n_jobs, tpool *tp);

/* out[n][H] = shared experts of layer il over h. */
void moe_shared_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp);

/* Combines per-slot expert outputs in a fixed order:
 * out[t] = ((w[t][0]*y[t][0] + w[t][1]*y[t][1]) + ...) + shared[t].
 * y is [n][k][H]; shared may be NULL. */
void moe_combine(int n, int k, int H, const float *w, const float *y, const float *shared, float *out);

/* Whole MoE FFN of layer il on one process: router, experts grouped by
 * expert over the batch and run with the shared experts through
 * moe_experts_ffn, combine. */
void moe_moe_ffn_local(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp);

/* x += FFN(x) for layer il (dense or MoE, all local). */
void moe_ffn_block_local(const moe_model *m, int il, float *x, int n, tpool *tp);

/* logits[n][V] = output(rmsnorm(x) * output_norm). */
void moe_output(const moe_model *m, const float *x, int n, float *logits, tpool *tp);

/* Whole model on one process: tokens at positions pos0.. -> logits of
 * every row (logits may be NULL to skip the head; last_only: one row). */
bool moe_forward_local(const moe_model *m, moe_kvcache *kv, const int *tokens, int n, int pos0,
                       float *logits, bool last_only, tpool *tp);

#endif
