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

/* ---- work memory ----
 * The buffers of a step come from a moe_scratch: one block handed out
 * front to back and taken back at once.  moe_forward_local keeps it with
 * the sequence's cache, so after the first call a step touches only pages
 * it already has; fresh ones (what malloc returns after glibc trimmed its
 * heap between layers) each cost a page fault and a zeroing, over a tenth
 * of a prefill.  The unit functions called alone use a scratch of their
 * own for the call. */
struct moe_scratch {
    unsigned char *mem;     /* the block */
    size_t cap, used;       /* its bytes; bytes handed out since the last reset */
    size_t want;            /* bytes asked for since the last reset, overflow included */
    void **extra;           /* blocks malloc'd while mem was full, freed at reset */
    int n_extra, cap_extra;
};

#define SCRATCH_KEEP ((size_t)256 << 20) /* a bigger block is not kept between calls */

static void *sget(moe_scratch *s, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    s->want += bytes;
    if (s->used + bytes <= s->cap) {
        void *p = s->mem + s->used;
        s->used += bytes;
        return p;
    }
    if (s->n_extra == s->cap_extra) {
        s->cap_extra = s->cap_extra ? 2 * s->cap_extra : 16;
        s->extra = realloc(s->extra, sizeof *s->extra * (size_t)s->cap_extra);
        if (!s->extra) abort();
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes)) abort(); /* out of memory mid-step: nothing to recover */
    return s->extra[s->n_extra++] = p;
}

static float *sf(moe_scratch *s, size_t n) { return sget(s, n * sizeof(float)); }

/* Takes every buffer back; the block grows to what the round needed. */
static void sreset(moe_scratch *s) {
    for (int i = 0; i < s->n_extra; i++) free(s->extra[i]);
    s->n_extra = 0;
    if (s->want > s->cap) {
        free(s->mem);
        s->mem = NULL;
        s->cap = 0;
        if (s->want <= SCRATCH_KEEP) {
            void *p = NULL;
            if (posix_memalign(&p, 64, s->want)) abort();
            s->mem = p;
            s->cap = s->want;
        }
    }
    s->used = s->want = 0;
}

static void sfree(moe_scratch *s) {
    if (!s) return;
    for (int i = 0; i < s->n_extra; i++) free(s->extra[i]);
    free(s->extra);
    free(s->mem);
}

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

/* The rotation as llama.cpp's compiled rope computes it (lo_rope: the
 * first product of each sum fused with the rounded second one). */
static void rope_apply(const float *cs, int n_dims, float *x) { lo_rope(cs, n_dims, x); }

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
    sfree(kv->scratch);
    free(kv->scratch);
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

/* The per-head part of attention, whole heads per thread, in one pool run:
 * for head h and the n new tokens,
 *   q_abs = k_b[h] q_nope                (absorbed query, kv_lora values)
 *   o_lat = attention over the cache     (lo_attention: kq via vec_dot_f32
 *           since the q view is strided, soft_max over the padded cache,
 *           kqv by tinyBLAS when the batch has >= 2 tokens, else vec_dot)
 *   o_h   = v_b[h] o_lat                 (value up-projection)
 * A head's two products are each one lo_matmul on the calling thread: the
 * same kernel calls as when they run over the pool, so the same bits. */
typedef struct {
    const moe_hparams *hp;
    const moe_layer *l;
    const moe_kv_layer *kv;
    int pos0, n;
    const float *q;   /* [n][nh][qk]: q_nope, then q_rope (not yet roped) */
    const float *cs;  /* [n][rope]: RoPE cos/sin of each new position */
    float *o;         /* [n][nh][v_head] */
    float *work;      /* per-thread buffers, thread i at work + i * work_n */
    size_t work_n;    /* floats per thread (attn_work_floats) */
} attn_heads_job;

#define HEAD_GROUP 4 /* heads of a thread whose attention reads the cache together */

/* Floats of a thread's buffers in attn_heads_worker. */
static size_t attn_work_floats(const moe_hparams *hp, int W, int pos0, int n) {
    const size_t np = (size_t)(pos0 + n) + 16;
    return (size_t)n * (hp->qk_nope + hp->kv_lora_rank + hp->v_head) +
           (size_t)HEAD_GROUP * ((size_t)n * (W + hp->kv_lora_rank) + np) + 64;
}

static void attn_heads_worker(void *arg, int ith, int nth) {
    const attn_heads_job *j = arg;
    const moe_hparams *hp = j->hp;
    const int nh = hp->n_head, L = hp->kv_lora_rank, nope = hp->qk_nope, rope = hp->qk_rope;
    const int qk = nope + rope, vh = hp->v_head, W = j->kv->width, n = j->n;
    if (ith >= nh) return;
    const bool tiny = n >= 2 && L % 4 == 0; /* tinyBLAS takes kqv */
    /* llama.cpp multiplies a permuted (strided) view of q by k_b: with
     * F32 weights that view goes to vec_dot as it is, otherwise it is
     * converted to the vec_dot type and can take the batched kernel */
    const enum lo_op op = lo_mul_mat_op(n), kop = j->l->k_b->type == QT_F32 ? LO_MUL_MAT_1 : op;
    const size_t np = (size_t)(j->pos0 + n) + 16; /* probabilities per query */
    float *qn = j->work + (size_t)ith * j->work_n, *qabs = qn + (size_t)n * nope, *oh = qabs + (size_t)n * L;
    float *qf = oh + (size_t)n * vh, *lat = qf + (size_t)HEAD_GROUP * n * W, *p = lat + (size_t)HEAD_GROUP * n * L;
    /* this thread's heads ith, ith + nth, ..., HEAD_GROUP at a time */
    for (int h0 = ith; h0 < nh; h0 += HEAD_GROUP * nth) {
        int heads[HEAD_GROUP], ng = 0;
        for (int h = h0; h < nh && ng < HEAD_GROUP; h += nth) heads[ng++] = h;
        for (int g = 0; g < ng; g++) { /* absorbed, roped queries [g][t][W] */
            const int h = heads[g];
            for (int t = 0; t < n; t++)
                memcpy(qn + (size_t)t * nope, j->q + ((size_t)t * nh + h) * qk, sizeof(float) * nope);
            lo_matmul(NULL, kop, false, j->l->k_b->type, slice3(j->l->k_b, h), L, nope, qn, n, qabs);
            for (int t = 0; t < n; t++) {
                float *dst = qf + ((size_t)g * n + t) * W;
                memcpy(dst, qabs + (size_t)t * L, sizeof(float) * L);
                memcpy(dst + L, j->q + ((size_t)t * nh + h) * qk + nope, sizeof(float) * rope);
                rope_apply(j->cs + (size_t)t * rope, rope, dst + L);
            }
        }
        for (int t = 0; t < n; t++) /* the group's queries of token t see the same cache rows */
            lo_attention_multi(tiny, j->pos0 + t + 1 /* causal */, W, L, j->kv->data, (size_t)W, ng,
                               qf + (size_t)t * W, (size_t)n * W, hp->kq_scale, p, np, lat + (size_t)t * L,
                               (size_t)n * L);
        for (int g = 0; g < ng; g++) {
            lo_matmul(NULL, op, false, j->l->v_b->type, slice3(j->l->v_b, heads[g]), vh, L, lat + (size_t)g * n * L, n,
                      oh);
            for (int t = 0; t < n; t++)
                memcpy(j->o + ((size_t)t * nh + heads[g]) * vh, oh + (size_t)t * vh, sizeof(float) * vh);
        }
    }
}

static void attention(const moe_model *m, int il, moe_kv_layer *kv, int pos0, int n, float *x, tpool *tp,
                      moe_scratch *ws) {
    const moe_hparams *hp = &m->hp;
    const moe_layer *l = &m->layers[il];
    const int H = hp->n_embd, nh = hp->n_head, L = hp->kv_lora_rank;
    const int nope = hp->qk_nope, rope = hp->qk_rope, qk = nope + rope, vh = hp->v_head;
    const int W = L + rope;
    const rope_params rp = rope_params_of(hp);
    const enum lo_op op = lo_mul_mat_op(n);

    float *hn = sf(ws, (size_t)n * H);
    rmsnorm_rows(x, l->attn_norm, n, H, H, H, hp->rms_eps, hn);

    /* q (or its LoRA half q_a) and the compressed kv [n][L + rope] both read
     * hn: one pool run, hn quantized once */
    float *q = sf(ws, (size_t)n * nh * qk), *kva = sf(ws, (size_t)n * W);
    const gguf_tensor *q0 = l->q ? l->q : l->q_a;
    const int R = l->q ? nh * qk : hp->q_lora_rank;
    float *qa = l->q ? q : sf(ws, (size_t)n * R);
    const lo_mm in[2] = {
        {op, lo_repacked(q0->type, rows_of(q0), true), q0->type, q0->data, rows_of(q0), cols_of(q0), hn, n, qa, NULL},
        {op, lo_repacked(l->kv_a_mqa->type, rows_of(l->kv_a_mqa), true), l->kv_a_mqa->type, l->kv_a_mqa->data,
         rows_of(l->kv_a_mqa), cols_of(l->kv_a_mqa), hn, n, kva, NULL}};
    lo_matmul_multi(tp, in, 2);
    if (!l->q) {
        rmsnorm_rows(qa, l->q_a_norm, n, R, R, R, hp->rms_eps, qa);
        matmul(tp, l->q_b, qa, n, q);
    }

    /* cache rows pos0.. */
    float *cs = sf(ws, (size_t)n * rope);
    for (int t = 0; t < n; t++) {
        float *row = kv->data + (size_t)(pos0 + t) * W;
        rope_cache(&rp, pos0 + t, cs + (size_t)t * rope);
        rmsnorm(kva + (size_t)t * W, l->kv_a_norm->data, L, hp->rms_eps, row);
        memcpy(row + L, kva + (size_t)t * W + L, sizeof(float) * rope);
        rope_apply(cs + (size_t)t * rope, rope, row + L);
    }

    /* per head: absorbed query, attention, value up-projection: o[n][nh*v] */
    float *o = sf(ws, (size_t)n * nh * vh);
    const size_t work_n = attn_work_floats(hp, W, pos0, n);
    attn_heads_job job = {.hp = hp, .l = l, .kv = kv, .pos0 = pos0, .n = n, .q = q, .cs = cs, .o = o,
                          .work = sf(ws, work_n * (size_t)tpool_size(tp)), .work_n = work_n};
    tpool_run(tp, attn_heads_worker, &job);
    float *out = sf(ws, (size_t)n * H);
    matmul(tp, l->attn_out, o, n, out);
    for (size_t i = 0; i < (size_t)n * H; i++) x[i] = out[i] + x[i];
}

void moe_attention(const moe_model *m, int il, moe_kv_layer *kv, int pos0, int n, float *x, tpool *tp) {
    moe_scratch ws = {0};
    attention(m, il, kv, pos0, n, x, tp, &ws);
    sfree(&ws);
}

void moe_ffn_norm(const moe_model *m, int il, const float *x, int n, float *h) {
    const int H = m->hp.n_embd;
    rmsnorm_rows(x, m->layers[il].ffn_norm, n, H, H, H, m->hp.rms_eps, h);
}

/* One SwiGLU FFN over its own rows: out[n][H] = down(silu(gate h) * up h)
 * with raw matrix views; op is the llama.cpp op of its three products
 * (mul_mat, or mul_mat_id for routed experts), which all may use repacked
 * weights. */
typedef struct {
    enum lo_op op;
    int gt, ut, dt;            /* gate, up, down weight types */
    const void *G, *U, *D;     /* [F][H], [F][H], [H][F] */
    int F;                     /* hidden width */
    const float *h;            /* inputs: [n][H], or rows hrows[] of it */
    const int *hrows;          /* NULL, or input row t is h + hrows[t] * H */
    int n;                     /* rows */
    float *out;                /* [n][H] */
} ffn_job;

/* Several FFNs at once: the gate and up products of all of them in one
 * pool run, then all the down products in another.  Each product is the
 * lo_matmul it would be alone, so every row has the same bits as when its
 * FFN runs by itself. */
static void swiglu_ffns(tpool *tp, const ffn_job *f, int nf, int H, moe_scratch *ws) {
    size_t total = 0;
    for (int i = 0; i < nf; i++) total += (size_t)f[i].n * f[i].F;
    float *g = sf(ws, total), *u = sf(ws, total);
    lo_mm *mm = sget(ws, sizeof *mm * (size_t)(2 * nf));
    size_t off = 0;
    for (int i = 0; i < nf; i++) {
        mm[2 * i] = (lo_mm){f[i].op, lo_repacked(f[i].gt, f[i].F, true), f[i].gt, f[i].G, f[i].F, H, f[i].h, f[i].n,
                            g + off, f[i].hrows};
        mm[2 * i + 1] = (lo_mm){f[i].op, lo_repacked(f[i].ut, f[i].F, true), f[i].ut, f[i].U, f[i].F, H, f[i].h,
                                f[i].n, u + off, f[i].hrows};
        off += (size_t)f[i].n * f[i].F;
    }
    lo_matmul_multi(tp, mm, 2 * nf);
    off = 0;
    for (int i = 0; i < nf; i++) {
        for (int t = 0; t < f[i].n; t++, off += (size_t)f[i].F) lo_swiglu(g + off, u + off, g + off, f[i].F);
    }
    off = 0;
    for (int i = 0; i < nf; i++) {
        mm[i] = (lo_mm){f[i].op, lo_repacked(f[i].dt, H, true), f[i].dt, f[i].D, H, f[i].F, g + off, f[i].n, f[i].out,
                        NULL};
        off += (size_t)f[i].n * f[i].F;
    }
    lo_matmul_multi(tp, mm, nf);
}

static void dense_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp, moe_scratch *ws) {
    const moe_layer *l = &m->layers[il];
    const ffn_job f = {lo_mul_mat_op(n), l->ffn_gate->type, l->ffn_up->type, l->ffn_down->type, l->ffn_gate->data,
                       l->ffn_up->data, l->ffn_down->data, m->hp.n_ff, h, NULL, n, out};
    swiglu_ffns(tp, &f, 1, m->hp.n_embd, ws);
}

void moe_dense_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp) {
    moe_scratch ws = {0};
    dense_ffn(m, il, h, n, out, tp, &ws);
    sfree(&ws);
}

/* The FFN of expert e of layer il (e < 0: the shared experts). */
static ffn_job expert_job(const moe_model *m, int il, int e, const float *h, const int *hrows, int n, float *out) {
    const moe_layer *l = &m->layers[il];
    if (e < 0)
        return (ffn_job){lo_mul_mat_op(n), l->gate_shexp->type, l->up_shexp->type, l->down_shexp->type,
                         l->gate_shexp->data, l->up_shexp->data, l->down_shexp->data,
                         m->hp.n_ff_exp * m->hp.n_expert_shared, h, hrows, n, out};
    return (ffn_job){LO_MUL_MAT_ID, l->gate_exps->type, l->up_exps->type, l->down_exps->type,
                     slice3(l->gate_exps, e), slice3(l->up_exps, e), slice3(l->down_exps, e), m->hp.n_ff_exp, h,
                     hrows, n, out};
}

void moe_experts_ffn(const moe_model *m, int il, const moe_expert_job *jobs, int n_jobs, tpool *tp) {
    moe_scratch ws = {0};
    ffn_job *f = sget(&ws, sizeof *f * (size_t)(n_jobs > 0 ? n_jobs : 1));
    int nf = 0;
    for (int i = 0; i < n_jobs; i++)
        if (jobs[i].n > 0) f[nf++] = expert_job(m, il, jobs[i].e, jobs[i].h, NULL, jobs[i].n, jobs[i].out);
    if (nf) swiglu_ffns(tp, f, nf, m->hp.n_embd, &ws);
    sfree(&ws);
}

void moe_shared_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp) {
    const moe_expert_job x = {-1, h, n, out};
    moe_experts_ffn(m, il, &x, 1, tp);
}

void moe_expert_ffn(const moe_model *m, int il, int e, const float *h, int n, float *out, tpool *tp) {
    const moe_expert_job x = {e, h, n, out};
    moe_experts_ffn(m, il, &x, 1, tp);
}

/* Index of the best of sel[0..n) not yet taken (ties: lowest index). */
static int argmax_free(const float *sel, const unsigned char *taken, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || sel[i] > sel[best])) best = i;
    return best;
}

static void router(const moe_model *m, int il, const float *h, int n, int *ids, float *w, tpool *tp,
                   moe_scratch *ws) {
    const moe_hparams *hp = &m->hp;
    const moe_layer *l = &m->layers[il];
    const int E = hp->n_expert, K = hp->n_expert_used;
    float *logits = sf(ws, (size_t)n * E);
    matmul(tp, l->router, h, n, logits);
    float *probs = sf(ws, (size_t)E), *sel = sf(ws, (size_t)E);
    unsigned char *taken = sget(ws, (size_t)E);
    const int G = hp->n_group > 1 ? hp->n_group : 1;
    float *gscore = sf(ws, (size_t)G);
    unsigned char *gtaken = sget(ws, (size_t)G);
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
            const int per = E / G;
            memset(gtaken, 0, (size_t)G);
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
}

void moe_router(const moe_model *m, int il, const float *h, int n, int *ids, float *w, tpool *tp) {
    moe_scratch ws = {0};
    router(m, il, h, n, ids, w, tp, &ws);
    sfree(&ws);
}

/* moe_combine with slot s of token t read from y + map[t * k + s] * H. */
static void combine_map(int n, int k, int H, const float *w, const float *y, const int *map, const float *shared,
                        float *out) {
    for (int t = 0; t < n; t++) {
        float *o = out + (size_t)t * H;
        const float *y0 = y + (size_t)map[t * k] * H;
        for (int i = 0; i < H; i++) {
            float acc = w[t * k] * y0[i];
            for (int s = 1; s < k; s++) acc = acc + w[t * k + s] * y[(size_t)map[t * k + s] * H + i];
            o[i] = shared ? acc + shared[(size_t)t * H + i] : acc;
        }
    }
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

/* The MoE FFN: the (token, slot) pairs grouped by expert; every chosen
 * expert and the shared experts run together (swiglu_ffns), each expert
 * reading its tokens' rows of h through an index (quantized straight from
 * h) and writing its outputs back to back; the combine reads them through
 * a map. */
static void moe_ffn(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp, moe_scratch *ws) {
    const moe_hparams *hp = &m->hp;
    const int H = hp->n_embd, K = hp->n_expert_used, E = hp->n_expert;
    int *ids = sget(ws, sizeof(int) * (size_t)n * K);
    float *w = sf(ws, (size_t)n * K);
    router(m, il, h, n, ids, w, tp, ws);

    float *y = sf(ws, (size_t)n * K * H);                  /* expert outputs, expert after expert */
    int *tok = sget(ws, sizeof(int) * (size_t)n * K);       /* their tokens */
    int *map = sget(ws, sizeof(int) * (size_t)n * K);       /* (token, slot) -> row of y */
    ffn_job *jobs = sget(ws, sizeof *jobs * (size_t)(E + 1));
    int nj = 0, used = 0;
    for (int e = 0; e < E; e++) {
        int cnt = 0;
        for (int i = 0; i < n * K; i++)
            if (ids[i] == e) {
                tok[used + cnt] = i / K;
                map[i] = used + cnt++;
            }
        if (!cnt) continue;
        jobs[nj++] = expert_job(m, il, e, h, n > 1 ? tok + used : NULL, cnt, y + (size_t)used * H);
        used += cnt;
    }
    float *sh = NULL;
    if (hp->n_expert_shared > 0) {
        sh = sf(ws, (size_t)n * H);
        jobs[nj++] = expert_job(m, il, -1, h, NULL, n, sh);
    }
    swiglu_ffns(tp, jobs, nj, H, ws);
    combine_map(n, K, H, w, y, map, sh, out);
}

void moe_moe_ffn_local(const moe_model *m, int il, const float *h, int n, float *out, tpool *tp) {
    moe_scratch ws = {0};
    moe_ffn(m, il, h, n, out, tp, &ws);
    sfree(&ws);
}

static void ffn_block(const moe_model *m, int il, float *x, int n, tpool *tp, moe_scratch *ws) {
    const int H = m->hp.n_embd;
    float *h = sf(ws, (size_t)n * H), *f = sf(ws, (size_t)n * H);
    moe_ffn_norm(m, il, x, n, h);
    if (m->layers[il].is_moe) moe_ffn(m, il, h, n, f, tp, ws);
    else dense_ffn(m, il, h, n, f, tp, ws);
    for (size_t i = 0; i < (size_t)n * H; i++) x[i] = f[i] + x[i];
}

void moe_ffn_block_local(const moe_model *m, int il, float *x, int n, tpool *tp) {
    moe_scratch ws = {0};
    ffn_block(m, il, x, n, tp, &ws);
    sfree(&ws);
}

static void output(const moe_model *m, const float *x, int n, float *logits, tpool *tp, moe_scratch *ws) {
    const int H = m->hp.n_embd;
    float *hn = sf(ws, (size_t)n * H);
    rmsnorm_rows(x, m->out_norm, n, H, H, H, m->hp.rms_eps, hn);
    matmul(tp, m->output, hn, n, logits);
}

void moe_output(const moe_model *m, const float *x, int n, float *logits, tpool *tp) {
    moe_scratch ws = {0};
    output(m, x, n, logits, tp, &ws);
    sfree(&ws);
}

bool moe_forward_local(const moe_model *m, moe_kvcache *kv, const int *tokens, int n, int pos0, float *logits,
                       bool last_only, tpool *tp) {
    const int H = m->hp.n_embd;
    if (n <= 0 || pos0 < 0 || pos0 + n > kv->n_ctx) return false;
    for (int il = 0; il < m->hp.n_layer; il++)
        if (!moe_kvcache_layer(kv, il)) return false;
    if (!kv->scratch && !(kv->scratch = calloc(1, sizeof *kv->scratch))) abort();
    moe_scratch *ws = kv->scratch;
    float *x = fbuf((size_t)n * H);
    if (!moe_embed(m, tokens, n, x)) {
        free(x);
        return false;
    }
    for (int il = 0; il < m->hp.n_layer; il++) {
        attention(m, il, moe_kvcache_layer(kv, il), pos0, n, x, tp, ws);
        sreset(ws);
        ffn_block(m, il, x, n, tp, ws);
        sreset(ws);
    }
    if (logits) {
        if (last_only) output(m, x + (size_t)(n - 1) * H, 1, logits, tp, ws);
        else output(m, x, n, logits, tp, ws);
        sreset(ws);
    }
    free(x);
    return true;
}
