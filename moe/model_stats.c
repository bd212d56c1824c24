/* Sizes derived from a loaded model: weights, bytes read per decoded token,
 * KV cache.  Used by `moe info`, the benches and the cluster planner. */
#include "model_stats.h"

static uint64_t nb(const gguf_tensor *t) { return t ? t->nbytes : 0; }

uint64_t moe_layer_attn_bytes(const moe_model *m, int il) {
    const moe_layer *l = &m->layers[il];
    /* legacy models read attn_kv_b (the derived k_b/v_b are copies of it) */
    uint64_t kvb = l->kv_b ? nb(l->kv_b) : nb(l->k_b) + nb(l->v_b);
    return nb(l->attn_norm) + nb(l->q_a) + nb(l->q_a_norm) + nb(l->q_b) + nb(l->q) + nb(l->kv_a_mqa) +
           nb(l->kv_a_norm) + kvb + nb(l->attn_out) + nb(l->ffn_norm);
}

uint64_t moe_layer_expert_bytes(const moe_model *m, int il) {
    const moe_layer *l = &m->layers[il];
    if (!l->is_moe) return 0;
    return moe_expert_bytes(l->gate_exps) + moe_expert_bytes(l->up_exps) + moe_expert_bytes(l->down_exps);
}

uint64_t moe_layer_dense_bytes(const moe_model *m, int il) {
    const moe_layer *l = &m->layers[il];
    return nb(l->ffn_gate) + nb(l->ffn_up) + nb(l->ffn_down) + nb(l->router) + nb(l->exp_bias) +
           nb(l->gate_shexp) + nb(l->up_shexp) + nb(l->down_shexp);
}

uint64_t moe_weight_bytes(const moe_model *m) {
    uint64_t s = nb(m->tok_embd) + nb(m->out_norm) + (m->output != m->tok_embd ? nb(m->output) : 0);
    for (int il = 0; il < m->hp.n_layer; il++) {
        s += moe_layer_attn_bytes(m, il) + moe_layer_dense_bytes(m, il);
        s += moe_layer_expert_bytes(m, il) * (uint64_t)m->hp.n_expert;
    }
    return s;
}

uint64_t moe_decode_bytes_per_token(const moe_model *m) {
    const moe_hparams *hp = &m->hp;
    uint64_t s = nb(m->tok_embd) / (uint64_t)hp->n_vocab + nb(m->out_norm) + nb(m->output);
    for (int il = 0; il < hp->n_layer; il++) {
        s += moe_layer_attn_bytes(m, il) + moe_layer_dense_bytes(m, il);
        s += moe_layer_expert_bytes(m, il) * (uint64_t)hp->n_expert_used;
    }
    return s;
}

uint64_t moe_kv_bytes_per_position(const moe_hparams *hp) {
    return (uint64_t)hp->n_layer * (uint64_t)(hp->kv_lora_rank + hp->qk_rope) * sizeof(float);
}
