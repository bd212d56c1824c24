/* The forward pass of a deepseek2 model, one unit per function (see
 * forward.h).  The arithmetic follows llama.cpp's graph for this
 * architecture: RMSNorm with a double sum, adjacent-pair RoPE with YaRN,
 * absorbed multi-head latent attention over an F32 compressed cache, and
 * the routed + shared expert FFN.
 *
 * Every float operation is done in the order llama.cpp's CPU backend (an
 * AVX-512 build) does it, so the logits agree with it bit for bit: these
 * random test models have near-tied router scores, where one ulp picks a
 * different expert.  Matrix products go through lo_matmul (llama_order.h)
 * with the llama.cpp op they stand for; the element-wise ops use its
 * vectorised exp where it does. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "llama_order.h"
#include "quant.h"

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort(); /* out of memory in the middle of a step: nothing to recover */
    return p;
}

static float *fbuf(size_t n) { return xmalloc(n * sizeof(float)); }

/* ---- elementwise pieces ---- */

/* out = x / sqrt(mean(x^2) + eps) * w  (sum in double, as llama.cpp) */
static void rmsnorm(const float *x, const float *w, int n, float eps, float *out) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

static void rmsnorm_rows(const float *x, const gguf_tensor *w, int rows, int n, int stride_in, int stride_out,
                         float eps, float *out) {
    for (int r = 0; r < rows; r++)
        rmsnorm(x + (size_t)r * stride_in, w->data, n, eps, out + (size_t)r * stride_out);
}

/* ---- RoPE (ggml "normal" mode: rotate pairs (2i, 2i+1)) with YaRN ---- */

typedef struct {
    int n_dims;
    float base, freq_scale, ext_factor, attn_factor;
    float corr_low, corr_high;
} rope_params;

static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
    return n_dims * logf(n_ctx_orig / (n_rot * 2 * (float)M_PI)) / (2 * logf(base));
}

static rope_params rope_params_of(const moe_hparams *hp) {
    rope_params r = {.n_dims = hp->qk_rope, .base = hp->rope_base, .freq_scale = 1.0f,
                     .ext_factor = 0.0f, .attn_factor = 1.0f};
    if (hp->yarn) {
        r.freq_scale = 1.0f / hp->yarn_factor;
        r.ext_factor = 1.0f;
        /* llama.cpp pre-divides the attention factor so that the YaRN
         * magnitude correction applied inside RoPE cancels out. */
        r.attn_factor = 1.0f / (1.0f + 0.1f * logf(1.0f / r.freq_scale));
        float lo = floorf(yarn_corr_dim(r.n_dims, hp->yarn_orig_ctx, hp->yarn_beta_fast, r.base));
        float hi = ceilf(yarn_corr_dim(r.n_dims, hp->yarn_orig_ctx, hp->yarn_beta_slow, r.base));
        r.corr_low = lo > 0 ? lo : 0;
        r.corr_high = hi < r.n_dims - 1 ? hi : (float)(r.n_dims - 1);
    }
    return r;
}

/* cos/sin of each pair for position pos: cs[2*i], cs[2*i+1]. */
static void rope_cache(const rope_params *r, int pos, float *cs) {
    const float theta_scale = powf(r->base, -2.0f / r->n_dims);
    float theta_extrap = (float)pos;
    for (int i0 = 0; i0 < r->n_dims; i0 += 2) {
        const float theta_interp = r->freq_scale * theta_extrap;
        float theta = theta_interp, mscale = r->attn_factor;
        if (r->ext_factor != 0.0f) {
            const float y = (i0 / 2 - r->corr_low) / fmaxf(0.001f, r->corr_high - r->corr_low);
            const float ramp = (1 - fminf(1, fmaxf(0, y))) * r->ext_factor;
            /* llama.cpp's build contracts this mix into one FMA */
            theta = fmaf(theta_interp, 1 - ramp, theta_extrap * ramp);
            mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
        }
        cs[i0] = cosf(theta) * mscale;
        cs[i0 + 1] = sinf(theta) * mscale;
        theta_extrap *= theta_scale;
    }
}

/* The rotation as llama.cpp's compiled rope computes it: the first product
 * of each sum fused with the rounded second one. */
static void rope_apply(const float *cs, int n_dims, float *x) {
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
        const float x0 = x[i0], x1 = x[i0 + 1];
        x[i0] = fmaf(x0, cs[i0], -(x1 * cs[i0 + 1]));
        x[i0 + 1] = fmaf(x0, cs[i0 + 1], x1 * cs[i0]);
    }
}

/* ---- matrices ---- */

static int rows_of(const gguf_tensor *t) { return (int)t->ne[1]; }
static int cols_of(const gguf_tensor *t) { return (int)t->ne[0]; }

/* y[n][rows] = W x for a 2-D tensor: a plain ggml_mul_mat over n rows. */
static void matmul(tpool *tp, const gguf_tensor *W, const float *x, int n, float *y) {
    lo_matmul(tp, lo_mul_mat_op(n), lo_repacked(W->type, rows_of(W), true), W->type, W->data, rows_of(W),
              cols_of(W), x, n, y);
}

/* Matrix k of a 3-D tensor {cols, rows, K}. */
static const void *slice3(const gguf_tensor *t, int k) { return moe_expert_slice(t, k); }

/* ---- KV cache ---- */

moe_kvcache *moe_kvcache_new(const moe_hparams *hp, int layer0, int n_layers, int n_ctx) {
    moe_kvcache *kv = calloc(1, sizeof *kv);
    if (!kv) return NULL;
    kv->layer0 = layer0;
    kv->n_layers = n_layers;
    kv->n_ctx = n_ctx;
    kv->layers = calloc((size_t)(n_layers > 0 ? n_layers : 1), sizeof *kv->layers);
    if (!kv->layers) {
        free(kv);
        return NULL;
    }
    const int width = hp->kv_lora_rank + hp->qk_rope;
    for (int i = 0; i < n_layers; i++) {
        kv->layers[i].n_ctx = n_ctx;
        kv->layers[i].width = width;
        /* calloc: pages are only made resident as positions are written */
        kv->layers[i].data = calloc((size_t)n_ctx * width, sizeof(float));
        if (!kv->layers[i].data) {
            moe_kvcache_free(kv);
            return NULL;
        }
    }
    return kv;
}

void moe_kvcache_free(moe_kvcache *kv) {
    if (!kv) return;
    for (int i = 0; i < kv->n_layers; i++) free(kv->layers[i].data);
    free(kv->layers);
    free(kv);
}

moe_kv_layer *moe_kvcache_layer(moe_kvcache *kv, int il) {
    if (!kv || il < kv->layer0 || il >= kv->layer0 + kv->n_layers) return NULL;
    return &kv->layers[il - kv->layer0];
}

/* ---- units ---- */

bool moe_embed(const moe_model *m, const int *tokens, int n, float *x) {
    const gguf_tensor *t = m->tok_embd;
    const qtype_info *qi = qtype_get(t->type);
    const int H = m->hp.n_embd;
    const size_t rs = qtype_row_size(t->type, H);
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= m->hp.n_vocab) return false;
        qi->to_float((const uint8_t *)t->data + rs * (size_t)tokens[i], x + (size_t)i * H, H);
    }
    return true;
}

/* Attention core of one head over the cache: for each of the n new tokens,
 * softmax-weighted latent o_lat[t] (kv_lora values).
 *
 * In llama.cpp's order: scores kq = ggml_vec_dot_f32(k_s, q) (the q view
 * is strided, so never tinyBLAS), then soft_max over the cache view, whose
 * length is padded (masked to -inf) to a multiple of 256 cells, then
 * o = V^T p as a mul_mat over that padded length: tinyBLAS when the batch
 * has >= 2 tokens, vec_dot_f32 for one.  Masked cells add exact zeros, so
 * only the causal positions are visited; what matters is that position s
 * always lands in lane s % 16 (and accumulator (s / 16) % 4 for vec_dot). */
typedef struct {
    const moe_hparams *hp;
    const moe_kv_layer *kv;
    int pos0, n;
    const float *q;  /* [n][nh][width]: absorbed q_nope then roped q_rope */
    float *o_lat;    /* [n][nh][kv_lora] */
} attn_core_job;

static void attn_core_worker(void *arg, int ith, int nth) {
    const attn_core_job *j = arg;
    const int nh = j->hp->n_head, L = j->hp->kv_lora_rank, W = j->kv->width;
    const int n_ctx_max = j->pos0 + j->n;
    const bool tiny = j->n >= 2 && L % 4 == 0; /* tinyBLAS takes kqv */
    float *p = fbuf((size_t)n_ctx_max + 16);
    float (*acc)[16] = xmalloc(sizeof(float[16]) * 4);
    /* (token, head) pairs are split over threads; each pair is computed
     * the same way whatever the split. */
    const int total = j->n * nh;
    for (int idx = ith; idx < total; idx += nth) {
        const int t = idx / nh, h = idx % nh;
        const float *q = j->q + ((size_t)t * nh + h) * W;
        const int n_kv = j->pos0 + t + 1; /* causal */
        const int n_pad = (n_kv + 15) & ~15;
        for (int s = 0; s < n_kv; s++) p[s] = lo_dot_f32(W, j->kv->data + (size_t)s * W, q) * j->hp->kq_scale;
        for (int s = n_kv; s < n_pad; s++) p[s] = -INFINITY;
        lo_softmax(p, n_pad);
        float *o = j->o_lat + ((size_t)t * nh + h) * L;
        for (int i = 0; i < L; i++) {
            memset(acc, 0, sizeof(float[16]) * 4);
            for (int s = 0; s < n_kv; s++) {
                float *a = &acc[tiny ? 0 : (s / 16) % 4][s % 16];
                *a = fmaf(j->kv->data[(size_t)s * W + i], p[s], *a);
            }
            if (tiny) {
                o[i] = lo_reduce16(acc[0]);
            } else {
                float r[16];
                for (int l = 0; l < 16; l++) r[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
                o[i] = lo_reduce16(r);
            }
        }
    }
    free(acc);
    free(p);
}

void moe_attention(const moe_model *m, int il, moe_kv_layer *kv, int pos0, int n, float *x, tpool *tp) {
    const moe_hparams *hp = &m->hp;
    const moe_layer *l = &m->layers[il];
    const int H = hp->n_embd, nh = hp->n_head, L = hp->kv_lora_rank;
    const int nope = hp->qk_nope, rope = hp->qk_rope, qk = nope + rope, vh = hp->v_head;
    const int W = L + rope;
    const rope_params rp = rope_params_of(hp);

    float *hn = fbuf((size_t)n * H);
    rmsnorm_rows(x, l->attn_norm, n, H, H, H, hp->rms_eps, hn);

    /* q for all heads: [n][nh*qk] */
    float *q = fbuf((size_t)n * nh * qk);
    if (l->q) {
        matmul(tp, l->q, hn, n, q);
    } else {
        const int R = hp->q_lora_rank;
        float *qa = fbuf((size_t)n * R);
        matmul(tp, l->q_a, hn, n, qa);
        rmsnorm_rows(qa, l->q_a_norm, n, R, R, R, hp->rms_eps, qa);
        matmul(tp, l->q_b, qa, n, q);
        free(qa);
    }

    /* compressed kv: [n][L + rope] -> cache rows pos0.. */
    float *kva = fbuf((size_t)n * W);
    matmul(tp, l->kv_a_mqa, hn, n, kva);
    float *cs = fbuf((size_t)n * rope);
    for (int t = 0; t < n; t++) {
        float *row = kv->data + (size_t)(pos0 + t) * W;
        rope_cache(&rp, pos0 + t, cs + (size_t)t * rope);
        rmsnorm(kva + (size_t)t * W, l->kv_a_norm->data, L, hp->rms_eps, row);
        memcpy(row + L, kva + (size_t)t * W + L, sizeof(float) * rope);
        rope_apply(cs + (size_t)t * rope, rope, row + L);
    }

    /* absorbed queries: [n][nh][L | rope] */
    float *qf = fbuf((size_t)n * nh * W);
    float *qn = fbuf((size_t)n * nope);
    float *qabs = fbuf((size_t)n * L);
    for (int h = 0; h < nh; h++) {
        for (int t = 0; t < n; t++)
            memcpy(qn + (size_t)t * nope, q + (size_t)t * nh * qk + (size_t)h * qk, sizeof(float) * nope);
        /* llama.cpp multiplies a permuted (strided) view of q here: with
         * F32 weights that view goes to vec_dot as it is, otherwise it is
         * converted to the vec_dot type and can take the batched kernel */
        const enum lo_op op = l->k_b->type == QT_F32 ? LO_MUL_MAT_1 : lo_mul_mat_op(n);
        lo_matmul(tp, op, false, l->k_b->type, slice3(l->k_b, h), L, nope, qn, n, qabs);
        for (int t = 0; t < n; t++) {
            float *dst = qf + ((size_t)t * nh + h) * W;
            memcpy(dst, qabs + (size_t)t * L, sizeof(float) * L);
            memcpy(dst + L, q + (size_t)t * nh * qk + (size_t)h * qk + nope, sizeof(float) * rope);
            rope_apply(cs + (size_t)t * rope, rope, dst + L);
        }
    }
    free(qabs);
    free(qn);

    float *o_lat = fbuf((size_t)n * nh * L);
    attn_core_job job = {.hp = hp, .kv = kv, .pos0 = pos0, .n = n, .q = qf, .o_lat = o_lat};
    tpool_run(tp, attn_core_worker, &job);

    /* per head value up-projection: o[n][nh*v] */
    float *o = fbuf((size_t)n * nh * vh);
    float *lat = fbuf((size_t)n * L);
    float *oh = fbuf((size_t)n * vh);
    for (int h = 0; h < nh; h++) {
        for (int t = 0; t < n; t++)
            memcpy(lat + (size_t)t * L, o_lat + ((size_t)t * nh + h) * L, sizeof(float) * L);
        lo_matmul(tp, lo_mul_mat_op(n), false, l->v_b->type, slice3(l->v_b, h), vh, L, lat, n, oh);
        for (int t = 0; t < n; t++)
            memcpy(o + (size_t)t * nh * vh + (size_t)h * vh, oh + (size_t)t * vh, sizeof(float) * vh);
    }
    float *out = fbuf((size_t)n * H);
    matmul(tp, l->attn_out, o, n, out);
    for (size_t i = 0; i < (size_t)n * H; i++) x[i] = out[i] + x[i];

    free(out), free(oh), free(lat), free(o), free(o_lat), free(qf), free(cs), free(kva), free(q), free(hn);
}

void moe_ffn_norm(const moe_model *m, int il, const float *x, int n, float *h) {
    const int H = m->hp.n_embd;
    rmsnorm_rows(x, m->layers[il].ffn_norm, n, H, H, H, m->hp.rms_eps, h);
}

/* out[n][H] = down(silu(gate h) * up h) with raw matrix views; op is the
 * llama.cpp op of the three products (mul_mat, or mul_mat_id for routed
 * experts), which all may use repacked weights. */
static void swiglu_ffn(tpool *tp, enum lo_op op, int gt, const void *G, int ut, const void *U, int dt,
                       const void *D, int H, int F, const float *h, int n, float *out) {
    float *g = fbuf((size_t)n * F), *u = fbuf((size_t)n * F);
    lo_matmul(tp, op, lo_repacked(gt, F, true), gt, G, F, H, h, n, g);
    lo_matmul(tp, op, lo_repacked(ut, F, true), ut, U, F, H, h, n, u);
    for (int t = 0; t < n; t++) lo_swiglu(g + (size_t)t * F, u + (size_t)t * F, g + (size_t)t * F, F);
    lo_matmul(tp, op, lo_repacked(dt, H, true), dt, D, H, F, g, n, out);
    free(g), free(u);
}

void moe_dense_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp) {
    const moe_layer *l = &m->layers[il];
    swiglu_ffn(tp, lo_mul_mat_op(n), l->ffn_gate->type, l->ffn_gate->data, l->ffn_up->type, l->ffn_up->data,
               l->ffn_down->type, l->ffn_down->data, m->hp.n_embd, m->hp.n_ff, h, n, out);
}

void moe_shared_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp) {
    const moe_layer *l = &m->layers[il];
    swiglu_ffn(tp, lo_mul_mat_op(n), l->gate_shexp->type, l->gate_shexp->data, l->up_shexp->type, l->up_shexp->data,
               l->down_shexp->type, l->down_shexp->data, m->hp.n_embd, m->hp.n_ff_exp * m->hp.n_expert_shared, h,
               n, out);
}

void moe_expert_ffn(const moe_model *m, int il, int e, const float *h, int n, float *out, tpool *tp) {
    const moe_layer *l = &m->layers[il];
    swiglu_ffn(tp, LO_MUL_MAT_ID, l->gate_exps->type, slice3(l->gate_exps, e), l->up_exps->type, slice3(l->up_exps, e),
               l->down_exps->type, slice3(l->down_exps, e), m->hp.n_embd, m->hp.n_ff_exp, h, n, out);
}

/* Index of the best of sel[0..n) not yet taken (ties: lowest index). */
static int argmax_free(const float *sel, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || sel[i] > sel[best])) best = i;
    return best;
}

void moe_router(const moe_model *m, int il, const float *h, int n, int *ids, float *w, tpool *tp) {
    const moe_hparams *hp = &m->hp;
    const moe_layer *l = &m->layers[il];
    const int E = hp->n_expert, K = hp->n_expert_used;
    float *logits = fbuf((size_t)n * E);
    matmul(tp, l->router, h, n, logits);
    float *probs = fbuf((size_t)E), *sel = fbuf((size_t)E);
    unsigned char *taken = xmalloc((size_t)E);
    for (int t = 0; t < n; t++) {
        const float *lg = logits + (size_t)t * E;
        if (hp->gating == MOE_GATING_SIGMOID) {
            for (int e = 0; e < E; e++) probs[e] = 1.0f / (1.0f + expf(-lg[e]));
        } else {
            memcpy(probs, lg, sizeof(float) * E);
            lo_softmax(probs, E);
        }
        for (int e = 0; e < E; e++) sel[e] = probs[e] + (l->exp_bias ? ((const float *)l->exp_bias->data)[e] : 0.0f);

        if (hp->n_group > 1) {
            /* keep the n_group_used groups with the best sum of their top 2 */
            const int G = hp->n_group, per = E / G;
            float *gscore = fbuf((size_t)G);
            unsigned char *gtaken = calloc((size_t)G, 1);
            if (!gtaken) abort();
            for (int g = 0; g < G; g++) {
                float a = -INFINITY, b = -INFINITY;
                for (int i = 0; i < per; i++) {
                    const float s = sel[g * per + i];
                    if (s > a) b = a, a = s;
                    else if (s > b) b = s;
                }
                gscore[g] = a + b;
            }
            for (int k = 0; k < hp->n_group_used; k++) gtaken[argmax_free(gscore, gtaken, G)] = 1;
            for (int g = 0; g < G; g++)
                if (!gtaken[g])
                    for (int i = 0; i < per; i++) sel[g * per + i] = -INFINITY;
            free(gtaken), free(gscore);
        }

        memset(taken, 0, (size_t)E);
        double dsum = 0.0; /* ggml_sum_rows sums in double */
        for (int k = 0; k < K; k++) {
            const int e = argmax_free(sel, taken, E);
            taken[e] = 1;
            ids[t * K + k] = e;
            w[t * K + k] = probs[e];
            dsum += probs[e];
        }
        if (hp->expert_norm) {
            float sum = (float)dsum;
            if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
            for (int k = 0; k < K; k++) w[t * K + k] /= sum;
        }
        if (hp->expert_scale != 1.0f)
            for (int k = 0; k < K; k++) w[t * K + k] *= hp->expert_scale;
    }
    free(taken), free(sel), free(probs), free(logits);
}

void moe_combine(int n, int k, int H, const float *w, const float *y, const float *shared, float *out) {
    for (int t = 0; t < n; t++) {
        float *o = out + (size_t)t * H;
        for (int i = 0; i < H; i++) {
            float acc = w[t * k] * y[((size_t)t * k) * H + i];
            for (int s = 1; s < k; s++) acc = acc + w[t * k + s] * y[((size_t)t * k + s) * H + i];
            o[i] = shared ? acc + shared[(size_t)t * H + i] : acc;
        }
    }
}

void moe_moe_ffn_local(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp) {
    const moe_hparams *hp = &m->hp;
    const int H = hp->n_embd, K = hp->n_expert_used, E = hp->n_expert;
    int *ids = xmalloc(sizeof(int) * (size_t)n * K);
    float *w = fbuf((size_t)n * K);
    moe_router(m, il, h, n, ids, w, tp);

    /* group the (token, slot) pairs by expert and run each expert once */
    float *y = fbuf((size_t)n * K * H);
    float *xin = fbuf((size_t)n * H), *yout = fbuf((size_t)n * H);
    int *rows = xmalloc(sizeof(int) * (size_t)n * K);
    for (int e = 0; e < E; e++) {
        int cnt = 0;
        for (int i = 0; i < n * K; i++)
            if (ids[i] == e) rows[cnt++] = i;
        if (!cnt) continue;
        for (int r = 0; r < cnt; r++) memcpy(xin + (size_t)r * H, h + (size_t)(rows[r] / K) * H, sizeof(float) * H);
        moe_expert_ffn(m, il, e, xin, cnt, yout, tp);
        for (int r = 0; r < cnt; r++) memcpy(y + (size_t)rows[r] * H, yout + (size_t)r * H, sizeof(float) * H);
    }
    float *sh = NULL;
    if (hp->n_expert_shared > 0) {
        sh = fbuf((size_t)n * H);
        moe_shared_ffn(m, il, h, n, sh, tp);
    }
    moe_combine(n, K, H, w, y, sh, out);
    free(sh), free(rows), free(yout), free(xin), free(y), free(w), free(ids);
}

void moe_ffn_block_local(const moe_model *m, int il, float *x, int n, tpool *tp) {
    const int H = m->hp.n_embd;
    float *h = fbuf((size_t)n * H), *f = fbuf((size_t)n * H);
    moe_ffn_norm(m, il, x, n, h);
    if (m->layers[il].is_moe)
        moe_moe_ffn_local(m, il, h, n, f, tp);
    else
        moe_dense_ffn(m, il, h, n, f, tp);
    for (size_t i = 0; i < (size_t)n * H; i++) x[i] = f[i] + x[i];
    free(f), free(h);
}

void moe_output(const moe_model *m, const float *x, int n, float *logits, tpool *tp) {
    const int H = m->hp.n_embd;
    float *hn = fbuf((size_t)n * H);
    rmsnorm_rows(x, m->out_norm, n, H, H, H, m->hp.rms_eps, hn);
    matmul(tp, m->output, hn, n, logits);
    free(hn);
}

bool moe_forward_local(const moe_model *m, moe_kvcache *kv, const int *tokens, int n, int pos0, float *logits,
                       bool last_only, tpool *tp) {
    const int H = m->hp.n_embd;
    if (n <= 0 || pos0 < 0 || pos0 + n > kv->n_ctx) return false;
    float *x = fbuf((size_t)n * H);
    if (!moe_embed(m, tokens, n, x)) {
        free(x);
        return false;
    }
    for (int il = 0; il < m->hp.n_layer; il++) {
        moe_kv_layer *kl = moe_kvcache_layer(kv, il);
        if (!kl) {
            free(x);
            return false;
        }
        moe_attention(m, il, kl, pos0, n, x, tp);
        moe_ffn_block_local(m, il, x, n, tp);
    }
    if (logits) {
        if (last_only)
            moe_output(m, x + (size_t)(n - 1) * H, 1, logits, tp);
        else
            moe_output(m, x, n, logits, tp);
    }
    free(x);
    return true;
}
