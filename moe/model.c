/* Loading a deepseek2 model: hyperparameters from metadata, tensors bound
 * from the mapped GGUF and checked against those hyperparameters. */
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

#define ARCH "deepseek2"

static bool fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* Integer hyperparameter `deepseek2.<key>`; required ones fail when absent. */
static bool hp_int(const gguf_file *g, const char *key, int *out, bool required, int def,
                   char *err, size_t errlen) {
    char full[128];
    int64_t v;
    snprintf(full, sizeof full, ARCH ".%s", key);
    if (!gguf_get_int(g, full, &v)) {
        if (gguf_find_key(g, full) >= 0)
            return fail(err, errlen, "metadata key %s has a non-integer type", full);
        if (required) return fail(err, errlen, "missing metadata key %s", full);
        *out = def;
        return true;
    }
    if (v < 0 || v > (int64_t)1 << 30)
        return fail(err, errlen, "metadata key %s = %lld is out of range", full, (long long)v);
    *out = (int)v;
    return true;
}

static float hp_float(const gguf_file *g, const char *key, float def) {
    char full[128];
    double v;
    snprintf(full, sizeof full, ARCH ".%s", key);
    return gguf_get_float(g, full, &v) ? (float)v : def;
}

static bool has_tensor(const gguf_file *g, const char *name) { return gguf_find_tensor(g, name) != NULL; }

bool moe_hparams_read(const gguf_file *g, moe_hparams *hp, char *err, size_t errlen) {
    memset(hp, 0, sizeof *hp);
    uint64_t len;
    const char *arch = gguf_get_str(g, "general.architecture", &len);
    if (!arch) return fail(err, errlen, "missing metadata key general.architecture");
    if (len != strlen(ARCH) || memcmp(arch, ARCH, len) != 0)
        return fail(err, errlen, "unsupported architecture '%.*s' (this engine runs '" ARCH "')",
                    (int)(len > 64 ? 64 : len), arch);

    int key_len = 0, val_len = 0, key_mla = 0, val_mla = 0, rope = 0;
    bool ok = hp_int(g, "block_count", &hp->n_layer, true, 0, err, errlen) &&
              hp_int(g, "context_length", &hp->n_ctx_train, false, 4096, err, errlen) &&
              hp_int(g, "embedding_length", &hp->n_embd, true, 0, err, errlen) &&
              hp_int(g, "feed_forward_length", &hp->n_ff, false, 0, err, errlen) &&
              hp_int(g, "attention.head_count", &hp->n_head, true, 0, err, errlen) &&
              hp_int(g, "attention.q_lora_rank", &hp->q_lora_rank, false, 0, err, errlen) &&
              hp_int(g, "attention.kv_lora_rank", &hp->kv_lora_rank, true, 0, err, errlen) &&
              hp_int(g, "attention.key_length", &key_len, false, 0, err, errlen) &&
              hp_int(g, "attention.value_length", &val_len, false, 0, err, errlen) &&
              hp_int(g, "attention.key_length_mla", &key_mla, false, 0, err, errlen) &&
              hp_int(g, "attention.value_length_mla", &val_mla, false, 0, err, errlen) &&
              hp_int(g, "rope.dimension_count", &rope, true, 0, err, errlen) &&
              hp_int(g, "leading_dense_block_count", &hp->n_dense_lead, false, 0, err, errlen) &&
              hp_int(g, "expert_feed_forward_length", &hp->n_ff_exp, false, 0, err, errlen) &&
              hp_int(g, "expert_count", &hp->n_expert, false, 0, err, errlen) &&
              hp_int(g, "expert_used_count", &hp->n_expert_used, false, 0, err, errlen) &&
              hp_int(g, "expert_shared_count", &hp->n_expert_shared, false, 0, err, errlen) &&
              hp_int(g, "expert_group_count", &hp->n_group, false, 1, err, errlen) &&
              hp_int(g, "expert_group_used_count", &hp->n_group_used, false, 1, err, errlen) &&
              hp_int(g, "expert_gating_func", &hp->gating, false, MOE_GATING_SOFTMAX, err, errlen);
    if (!ok) return false;

    /* Head dims: the *_mla keys exist in the split (MLA) layout; the legacy
     * layout stores the per-head dims in key_length / value_length. */
    hp->qk_rope = rope;
    hp->legacy_kvb = has_tensor(g, "blk.0.attn_kv_b.weight");
    int k_head = key_mla ? key_mla : key_len;
    hp->v_head = val_mla ? val_mla : val_len;
    if (hp->legacy_kvb && key_mla == 0 && key_len == hp->kv_lora_rank + rope && val_len == hp->kv_lora_rank)
        return fail(err, errlen, "legacy attn_kv_b model without per-head key/value lengths");
    if (k_head <= rope) return fail(err, errlen, "attention key length %d must exceed rope.dimension_count %d", k_head, rope);
    if (hp->v_head <= 0) return fail(err, errlen, "missing attention value length (" ARCH ".attention.value_length_mla)");
    if (rope % 2) return fail(err, errlen, "rope.dimension_count %d must be even", rope);
    hp->qk_nope = k_head - rope;

    if (has_tensor(g, "blk.0.attn_q.weight")) hp->q_lora_rank = 0; /* lite: plain attn_q */

    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) return fail(err, errlen, "missing tensor token_embd.weight");
    hp->n_vocab = (int)emb->ne[1];

    char full[128];
    snprintf(full, sizeof full, "blk.%d.exp_probs_b.bias", hp->n_dense_lead);
    hp->has_exp_bias = has_tensor(g, full); /* checked on the first MoE layer */
    bool norm = false;
    snprintf(full, sizeof full, ARCH ".expert_weights_norm");
    hp->expert_norm = gguf_get_bool(g, full, &norm) && norm;
    hp->expert_scale = hp_float(g, "expert_weights_scale", 1.0f);
    if (hp->expert_scale == 0.0f) hp->expert_scale = 1.0f; /* absent/0 means unscaled */
    hp->rms_eps = hp_float(g, "attention.layer_norm_rms_epsilon", 1e-6f);
    hp->rope_base = hp_float(g, "rope.freq_base", 10000.0f);

    snprintf(full, sizeof full, ARCH ".rope.scaling.type");
    const char *st = gguf_get_str(g, full, &len);
    hp->yarn = st && len == 4 && memcmp(st, "yarn", 4) == 0;
    if (st && !hp->yarn && !(len == 4 && memcmp(st, "none", 4) == 0))
        return fail(err, errlen, "unsupported rope scaling type '%.*s'", (int)(len > 32 ? 32 : len), st);
    hp->yarn_factor = hp_float(g, "rope.scaling.factor", 1.0f);
    if (hp->yarn && hp->yarn_factor <= 1.0f) hp->yarn = false; /* factor 1 is no scaling */
    int orig = 0;
    if (!hp_int(g, "rope.scaling.original_context_length", &orig, false, hp->n_ctx_train, err, errlen)) return false;
    hp->yarn_orig_ctx = orig;
    /* llama.cpp uses these fixed betas for deepseek2 whatever the file says. */
    hp->yarn_beta_fast = 32.0f;
    hp->yarn_beta_slow = 1.0f;
    hp->yarn_log_mul = hp_float(g, "rope.scaling.yarn_log_multiplier", 0.0f);
    float mscale = 1.0f;
    if (hp->yarn) mscale = 1.0f + hp->yarn_log_mul * logf(hp->yarn_factor);
    hp->kq_scale = mscale * mscale / sqrtf((float)k_head);

    int64_t id;
    hp->bos_id = gguf_get_int(g, "tokenizer.ggml.bos_token_id", &id) ? (int)id : -1;
    hp->eos_id = gguf_get_int(g, "tokenizer.ggml.eos_token_id", &id) ? (int)id : -1;

    /* Consistency of what was read. */
    if (hp->n_layer <= 0 || hp->n_embd <= 0 || hp->n_head <= 0 || hp->kv_lora_rank <= 0)
        return fail(err, errlen, "block_count, embedding_length, head_count and kv_lora_rank must be positive");
    if (hp->n_dense_lead > hp->n_layer)
        return fail(err, errlen, "leading_dense_block_count %d exceeds block_count %d", hp->n_dense_lead, hp->n_layer);
    if (hp->n_dense_lead < hp->n_layer) {
        if (hp->n_expert <= 0 || hp->n_expert_used <= 0 || hp->n_expert_used > hp->n_expert || hp->n_ff_exp <= 0)
            return fail(err, errlen, "MoE layers need expert_count >= expert_used_count > 0 and expert_feed_forward_length > 0 (got %d, %d, %d)",
                        hp->n_expert, hp->n_expert_used, hp->n_ff_exp);
        if (hp->gating != MOE_GATING_SOFTMAX && hp->gating != MOE_GATING_SIGMOID)
            return fail(err, errlen, "unsupported expert_gating_func %d (1 softmax, 2 sigmoid)", hp->gating);
        if (hp->n_group <= 0) hp->n_group = 1;
        if (hp->n_group > 1 && (hp->n_expert % hp->n_group || hp->n_group_used <= 0 || hp->n_group_used > hp->n_group ||
                                hp->n_expert / hp->n_group < 2 ||
                                hp->n_group_used * (hp->n_expert / hp->n_group) < hp->n_expert_used))
            return fail(err, errlen, "bad expert groups: %d experts, %d groups, %d used groups, %d used experts",
                        hp->n_expert, hp->n_group, hp->n_group_used, hp->n_expert_used);
    }
    if (hp->n_dense_lead > 0 && hp->n_ff <= 0)
        return fail(err, errlen, "dense layers need " ARCH ".feed_forward_length > 0");
    return true;
}

/* ---- tensor binding ---- */

typedef struct {
    const gguf_file *g;
    char *err;
    size_t errlen;
    bool ok;
} binder;

/* Finds `name` and checks its shape {a, b, c} (0 = dimension absent).
 * Required tensors that are missing, and any tensor with a wrong shape or
 * an unsupported type, set the error. */
static const gguf_tensor *bind(binder *b, const char *name, bool required, int64_t a, int64_t b1, int64_t c) {
    if (!b->ok) return NULL;
    const gguf_tensor *t = gguf_find_tensor(b->g, name);
    if (!t) {
        if (required) b->ok = fail(b->err, b->errlen, "missing tensor %s", name);
        return NULL;
    }
    int64_t want[3] = {a, b1, c};
    int nd = c ? 3 : b1 ? 2 : 1;
    bool shape_ok = t->n_dims <= 3;
    for (int i = 0; i < 3 && shape_ok; i++) {
        int64_t w = i < nd ? want[i] : 1;
        if (t->ne[i] != w) shape_ok = false;
    }
    if (t->n_dims == 4 && t->ne[3] != 1) shape_ok = false;
    if (!shape_ok) {
        char got[96], exp[96];
        snprintf(got, sizeof got, "{%lld, %lld, %lld, %lld}", (long long)t->ne[0], (long long)t->ne[1],
                 (long long)t->ne[2], (long long)t->ne[3]);
        snprintf(exp, sizeof exp, "{%lld, %lld, %lld}", (long long)a, (long long)(b1 ? b1 : 1), (long long)(c ? c : 1));
        b->ok = fail(b->err, b->errlen, "tensor %s has shape %s, expected %s from the hyperparameters", name, got, exp);
        return NULL;
    }
    const qtype_info *qi = qtype_get(t->type);
    if (!qi || (nd > 1 && !qi->vec_dot) || (nd == 1 && t->type != QT_F32)) {
        b->ok = fail(b->err, b->errlen, "tensor %s has unsupported type %s%s", name, qtype_name(t->type),
                     nd == 1 ? " (1-D tensors must be F32)" : "");
        return NULL;
    }
    return t;
}

static const gguf_tensor *bindl(binder *b, int il, const char *what, bool required, int64_t a, int64_t b1, int64_t c) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", il, what);
    return bind(b, name, required, a, b1, c);
}

/* Legacy attn_kv_b {kv_lora, nh*(nope+v)} -> F32 k_b {nope, kv_lora, nh}
 * (transposed per head) and v_b {kv_lora, v, nh}, so the forward pass has
 * one (absorbed) form for both layouts. */
static bool derive_kvb(moe_model *m, int il, gguf_tensor *kb, gguf_tensor *vb, char *err, size_t errlen) {
    const moe_hparams *hp = &m->hp;
    const gguf_tensor *t = m->layers[il].kv_b;
    const int L = hp->kv_lora_rank, nope = hp->qk_nope, v = hp->v_head, nh = hp->n_head;
    const qtype_info *qi = qtype_get(t->type);
    size_t rs = qtype_row_size(t->type, L);
    float *row = malloc(sizeof(float) * (size_t)L);
    float *k = malloc(sizeof(float) * (size_t)nope * L * nh);
    float *vv = malloc(sizeof(float) * (size_t)L * v * nh);
    if (!row || !k || !vv) {
        free(row), free(k), free(vv);
        return fail(err, errlen, "out of memory deriving k_b/v_b of layer %d", il);
    }
    for (int h = 0; h < nh; h++) {
        for (int r = 0; r < nope + v; r++) {
            const uint8_t *src = (const uint8_t *)t->data + (size_t)(h * (nope + v) + r) * rs;
            qi->to_float(src, row, L);
            if (r < nope)
                for (int c = 0; c < L; c++) k[((size_t)h * L + c) * nope + r] = row[c];
            else
                memcpy(vv + ((size_t)h * v + (r - nope)) * L, row, sizeof(float) * (size_t)L);
        }
    }
    free(row);
    *kb = (gguf_tensor){.name = "attn_k_b(derived)", .type = QT_F32, .n_dims = 3, .ne = {nope, L, nh, 1},
                        .nbytes = sizeof(float) * (uint64_t)nope * L * nh, .data = k, .part = -1};
    *vb = (gguf_tensor){.name = "attn_v_b(derived)", .type = QT_F32, .n_dims = 3, .ne = {L, v, nh, 1},
                        .nbytes = sizeof(float) * (uint64_t)L * v * nh, .data = vv, .part = -1};
    return true;
}

static bool bind_all(moe_model *m, char *err, size_t errlen) {
    const moe_hparams *hp = &m->hp;
    binder b = {m->gguf, err, errlen, true};
    const int H = hp->n_embd, V = hp->n_vocab, nh = hp->n_head;
    const int qk = hp->qk_nope + hp->qk_rope, L = hp->kv_lora_rank;
    m->tok_embd = bind(&b, "token_embd.weight", true, H, V, 0);
    m->out_norm = bind(&b, "output_norm.weight", true, H, 0, 0);
    m->output = bind(&b, "output.weight", false, H, V, 0);
    if (!m->output) m->output = m->tok_embd; /* tied embeddings */
    for (int il = 0; il < hp->n_layer && b.ok; il++) {
        moe_layer *l = &m->layers[il];
        l->attn_norm = bindl(&b, il, "attn_norm.weight", true, H, 0, 0);
        if (hp->q_lora_rank > 0) {
            l->q_a = bindl(&b, il, "attn_q_a.weight", true, H, hp->q_lora_rank, 0);
            l->q_a_norm = bindl(&b, il, "attn_q_a_norm.weight", true, hp->q_lora_rank, 0, 0);
            l->q_b = bindl(&b, il, "attn_q_b.weight", true, hp->q_lora_rank, nh * qk, 0);
        } else {
            l->q = bindl(&b, il, "attn_q.weight", true, H, nh * qk, 0);
        }
        l->kv_a_mqa = bindl(&b, il, "attn_kv_a_mqa.weight", true, H, L + hp->qk_rope, 0);
        l->kv_a_norm = bindl(&b, il, "attn_kv_a_norm.weight", true, L, 0, 0);
        if (hp->legacy_kvb) {
            l->kv_b = bindl(&b, il, "attn_kv_b.weight", true, L, nh * (hp->qk_nope + hp->v_head), 0);
        } else {
            l->k_b = bindl(&b, il, "attn_k_b.weight", true, hp->qk_nope, L, nh);
            l->v_b = bindl(&b, il, "attn_v_b.weight", true, L, hp->v_head, nh);
        }
        l->attn_out = bindl(&b, il, "attn_output.weight", true, nh * hp->v_head, H, 0);
        l->ffn_norm = bindl(&b, il, "ffn_norm.weight", true, H, 0, 0);
        l->is_moe = il >= hp->n_dense_lead;
        if (!l->is_moe) {
            l->ffn_gate = bindl(&b, il, "ffn_gate.weight", true, H, hp->n_ff, 0);
            l->ffn_up = bindl(&b, il, "ffn_up.weight", true, H, hp->n_ff, 0);
            l->ffn_down = bindl(&b, il, "ffn_down.weight", true, hp->n_ff, H, 0);
            continue;
        }
        const int E = hp->n_expert, Fe = hp->n_ff_exp;
        l->router = bindl(&b, il, "ffn_gate_inp.weight", true, H, E, 0);
        l->exp_bias = bindl(&b, il, "exp_probs_b.bias", false, E, 0, 0);
        l->gate_exps = bindl(&b, il, "ffn_gate_exps.weight", true, H, Fe, E);
        l->up_exps = bindl(&b, il, "ffn_up_exps.weight", true, H, Fe, E);
        l->down_exps = bindl(&b, il, "ffn_down_exps.weight", true, Fe, H, E);
        if (hp->n_expert_shared > 0) {
            const int Fs = Fe * hp->n_expert_shared;
            l->gate_shexp = bindl(&b, il, "ffn_gate_shexp.weight", true, H, Fs, 0);
            l->up_shexp = bindl(&b, il, "ffn_up_shexp.weight", true, H, Fs, 0);
            l->down_shexp = bindl(&b, il, "ffn_down_shexp.weight", true, Fs, H, 0);
        }
        if (b.ok && hp->gating == MOE_GATING_SIGMOID && hp->has_exp_bias && !l->exp_bias)
            b.ok = fail(err, errlen, "missing tensor blk.%d.exp_probs_b.bias", il);
    }
    return b.ok;
}

moe_model *moe_model_load(const char *path, char *err, size_t errlen) {
    moe_model *m = calloc(1, sizeof *m);
    if (!m) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    m->gguf = gguf_open(path, err, errlen);
    if (!m->gguf) {
        free(m);
        return NULL;
    }
    char sub[400];
    if (!moe_hparams_read(m->gguf, &m->hp, sub, sizeof sub)) goto bad;
    m->layers = calloc((size_t)m->hp.n_layer, sizeof *m->layers);
    if (!m->layers) {
        snprintf(sub, sizeof sub, "out of memory");
        goto bad;
    }
    if (!bind_all(m, sub, sizeof sub)) goto bad;
    if (m->hp.legacy_kvb) {
        m->derived = calloc((size_t)m->hp.n_layer * 2, sizeof *m->derived);
        if (!m->derived) {
            snprintf(sub, sizeof sub, "out of memory");
            goto bad;
        }
        for (int il = 0; il < m->hp.n_layer; il++) {
            if (!derive_kvb(m, il, &m->derived[2 * il], &m->derived[2 * il + 1], sub, sizeof sub)) goto bad;
            m->n_derived += 2;
            m->layers[il].k_b = &m->derived[2 * il];
            m->layers[il].v_b = &m->derived[2 * il + 1];
        }
    }
    return m;
bad:
    snprintf(err, errlen, "%s: %s", path, sub);
    moe_model_free(m);
    return NULL;
}

void moe_model_free(moe_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_derived; i++) free((void *)m->derived[i].data);
    free(m->derived);
    free(m->layers);
    gguf_close(m->gguf);
    free(m);
}

uint64_t moe_expert_bytes(const gguf_tensor *t) {
    return qtype_row_size(t->type, t->ne[0]) * (uint64_t)t->ne[1];
}

const void *moe_expert_slice(const gguf_tensor *t, int e) {
    return (const uint8_t *)t->data + moe_expert_bytes(t) * (uint64_t)e;
}
