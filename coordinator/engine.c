/* The single-process engine: the whole model in this process, one KV cache
 * per sequence, the forward pass of moe/forward.c.  Under mpirun the same
 * calls go to the cluster (engine_mpi.c). */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "engine_mpi.h"
#include "kernels.h"

#define ENGINE_MAX_SEQ 256

struct engine {
    moe_model *model;
    tpool *tp;
    int n_ctx;                          /* positions per sequence cache */
    moe_kvcache *seq[ENGINE_MAX_SEQ];   /* created on first use */
    int held[ENGINE_MAX_SEQ];           /* positions each sequence's cache holds */
    char desc[128];
    engine_mpi *mpi;                    /* under mpirun: the cluster does the work (engine_mpi.c) */
};

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort(); /* out of memory mid-step: nothing sensible to recover */
    return p;
}

engine *engine_open(const engine_opts *o, char *err, size_t errlen) {
    engine *e = calloc(1, sizeof *e);
    if (e && engine_mpi_wanted()) {
        if (!(e->mpi = engine_mpi_open(o, err, errlen))) free(e), e = NULL;
        return e;
    }
    kern_init();
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->model = moe_model_load(o->model_path, err, errlen);
    if (!e->model) {
        free(e);
        return NULL;
    }
    int n_ctx = o->n_ctx > 0 ? o->n_ctx : 4096;
    if (n_ctx > e->model->hp.n_ctx_train && e->model->hp.n_ctx_train > 0) n_ctx = e->model->hp.n_ctx_train;
    e->n_ctx = n_ctx;
    e->tp = tpool_create(o->n_threads);
    snprintf(e->desc, sizeof e->desc, "1 process, %d threads, %s kernels", tpool_size(e->tp),
             kern_path_name(kern_get_path()));
    return e;
}

void engine_close(engine *e) {
    if (!e) return;
    if (e->mpi) engine_mpi_close(e->mpi);
    for (int i = 0; i < ENGINE_MAX_SEQ; i++) moe_kvcache_free(e->seq[i]);
    tpool_destroy(e->tp);
    moe_model_free(e->model);
    free(e);
}

const moe_model *engine_model(const engine *e) { return e->mpi ? engine_mpi_model(e->mpi) : e->model; }
const char *engine_desc(const engine *e) { return e->mpi ? engine_mpi_desc(e->mpi) : e->desc; }

void engine_reset(engine *e, int seq) {
    if (e->mpi) {
        engine_mpi_reset(e->mpi, seq);
        return;
    }
    if (seq < 0 || seq >= ENGINE_MAX_SEQ) return;
    moe_kvcache_free(e->seq[seq]);
    e->seq[seq] = NULL;
    e->held[seq] = 0;
}

/* The rules every batch obeys, in one process or in the cluster: known
 * sequence ids, each at most once, tokens inside the vocabulary, each
 * request continuing its sequence where its cache ends, room left. */
bool engine_check_reqs(int n_req, const engine_req *r, int max_seq, int n_vocab, int n_ctx, const int *held,
                       char *err, size_t errlen) {
    if (n_req <= 0) return snprintf(err, errlen, "empty batch"), false;
    for (int i = 0; i < n_req; i++) {
        const int s = r[i].seq;
        if (s < 0 || s >= max_seq)
            return snprintf(err, errlen, "sequence id %d out of range [0, %d)", s, max_seq), false;
        for (int j = 0; j < i; j++)
            if (r[j].seq == s) return snprintf(err, errlen, "sequence %d appears twice in one batch", s), false;
        if (r[i].n <= 0 || !r[i].tokens) return snprintf(err, errlen, "sequence %d: no tokens", s), false;
        for (int t = 0; t < r[i].n; t++)
            if (r[i].tokens[t] < 0 || r[i].tokens[t] >= n_vocab)
                return snprintf(err, errlen, "token id %d at index %d is outside the vocabulary [0, %d)",
                                r[i].tokens[t], t, n_vocab),
                       false;
        if (r[i].pos0 < 0 || r[i].pos0 > held[s])
            return snprintf(err, errlen, "sequence %d holds %d positions, cannot continue at %d", s, held[s],
                            r[i].pos0),
                   false;
        if (r[i].n > n_ctx - r[i].pos0)
            return snprintf(err, errlen, "context full: %d positions requested, the cache holds %d",
                            r[i].pos0 + r[i].n, n_ctx),
                   false;
    }
    return true;
}

/* Checks a batch and creates the caches of sequences seen first. */
static bool check_reqs(engine *e, int n_req, const engine_req *r, char *err, size_t errlen) {
    if (!engine_check_reqs(n_req, r, ENGINE_MAX_SEQ, e->model->hp.n_vocab, e->n_ctx, e->held, err, errlen))
        return false;
    for (int i = 0; i < n_req; i++) {
        const int s = r[i].seq;
        if (!e->seq[s] && !(e->seq[s] = moe_kvcache_new(&e->model->hp, 0, e->model->hp.n_layer, e->n_ctx)))
            return snprintf(err, errlen, "out of memory for the KV cache (%d positions)", e->n_ctx), false;
    }
    return true;
}

/* x[i] += MoE FFN of layer il for every request.  Router, shared expert
 * and combine run per request (their llama.cpp order depends on the row
 * count); each routed expert runs once over the rows of all requests that
 * chose it, which is the same per row (mul_mat_id order).  All experts of
 * the layer, routed and shared, go through one moe_experts_ffn call. */
static void moe_layer_batch(engine *e, int il, int nr, const engine_req *r, float **x) {
    const moe_model *m = e->model;
    const int H = m->hp.n_embd, K = m->hp.n_expert_used, E = m->hp.n_expert;
    int T = 0;
    for (int i = 0; i < nr; i++) T += r[i].n;
    float *h = xmalloc(sizeof(float) * (size_t)T * H);      /* [T][H] FFN inputs, requests back to back */
    int *ids = xmalloc(sizeof(int) * (size_t)T * K);        /* [T][K] chosen experts */
    float *w = xmalloc(sizeof(float) * (size_t)T * K);      /* [T][K] their weights */
    float *y = xmalloc(sizeof(float) * (size_t)T * K * H);  /* [T][K][H] expert outputs */
    float *sh = m->hp.n_expert_shared > 0 ? xmalloc(sizeof(float) * (size_t)T * H) : NULL;
    moe_expert_job *jobs = xmalloc(sizeof *jobs * (size_t)(E + nr));
    int n_jobs = 0;
    for (int i = 0, t0 = 0; i < nr; t0 += r[i].n, i++) {
        float *hi = h + (size_t)t0 * H;
        moe_ffn_norm(m, il, x[i], r[i].n, hi);
        moe_router(m, il, hi, r[i].n, ids + (size_t)t0 * K, w + (size_t)t0 * K, e->tp);
        if (sh) jobs[n_jobs++] = (moe_expert_job){.e = -1, .h = hi, .n = r[i].n, .out = sh + (size_t)t0 * H};
    }
    /* (token, slot) pairs grouped by expert: sel[] lists them expert after
     * expert, xin/yout hold each expert's rows back to back */
    float *xin = xmalloc(sizeof(float) * (size_t)T * K * H), *yout = xmalloc(sizeof(float) * (size_t)T * K * H);
    int *sel = xmalloc(sizeof(int) * (size_t)T * K);
    int cnt = 0;
    for (int ex = 0; ex < E; ex++) {
        const int first = cnt;
        for (int j = 0; j < T * K; j++)
            if (ids[j] == ex) {
                memcpy(xin + (size_t)cnt * H, h + (size_t)(j / K) * H, sizeof(float) * (size_t)H);
                sel[cnt++] = j;
            }
        if (cnt > first)
            jobs[n_jobs++] = (moe_expert_job){.e = ex, .h = xin + (size_t)first * H, .n = cnt - first,
                                              .out = yout + (size_t)first * H};
    }
    moe_experts_ffn(m, il, jobs, n_jobs, e->tp);
    for (int k = 0; k < cnt; k++) memcpy(y + (size_t)sel[k] * H, yout + (size_t)k * H, sizeof(float) * (size_t)H);
    float *f = xmalloc(sizeof(float) * (size_t)T * H);
    for (int i = 0, t0 = 0; i < nr; t0 += r[i].n, i++) {
        float *fi = f + (size_t)t0 * H;
        moe_combine(r[i].n, K, H, w + (size_t)t0 * K, y + (size_t)t0 * K * H, sh ? sh + (size_t)t0 * H : NULL, fi);
        for (size_t k = 0; k < (size_t)r[i].n * H; k++) x[i][k] = fi[k] + x[i][k];
    }
    free(f), free(sel), free(yout), free(xin), free(jobs), free(sh), free(y), free(w), free(ids), free(h);
}

/* Several requests layer by layer, in this process. */
static void forward_batch_local(engine *e, int nr, const engine_req *r) {
    const moe_model *m = e->model;
    const int H = m->hp.n_embd;
    float **x = xmalloc(sizeof *x * (size_t)nr);
    for (int i = 0; i < nr; i++) {
        x[i] = xmalloc(sizeof(float) * (size_t)r[i].n * H);
        moe_embed(m, r[i].tokens, r[i].n, x[i]);
    }
    for (int il = 0; il < m->hp.n_layer; il++) {
        for (int i = 0; i < nr; i++)
            moe_attention(m, il, moe_kvcache_layer(e->seq[r[i].seq], il), r[i].pos0, r[i].n, x[i], e->tp);
        if (m->layers[il].is_moe) moe_layer_batch(e, il, nr, r, x);
        else
            for (int i = 0; i < nr; i++) moe_ffn_block_local(m, il, x[i], r[i].n, e->tp);
    }
    for (int i = 0; i < nr; i++) {
        if (r[i].logits) {
            if (r[i].all_rows) moe_output(m, x[i], r[i].n, r[i].logits, e->tp);
            else moe_output(m, x[i] + (size_t)(r[i].n - 1) * H, 1, r[i].logits, e->tp);
        }
        free(x[i]);
    }
    free(x);
}

bool engine_forward_batch(engine *e, int n_req, const engine_req *reqs, char *err, size_t errlen) {
    if (e->mpi) return engine_mpi_forward_batch(e->mpi, n_req, reqs, err, errlen);
    if (!check_reqs(e, n_req, reqs, err, errlen)) return false;
    if (n_req == 1) {
        /* one request: the plain whole-model pass (the reference path) */
        const engine_req *r = reqs;
        if (!moe_forward_local(e->model, e->seq[r->seq], r->tokens, r->n, r->pos0, r->logits, !r->all_rows, e->tp))
            return snprintf(err, errlen, "forward pass failed"), false;
    } else {
        forward_batch_local(e, n_req, reqs);
    }
    for (int i = 0; i < n_req; i++) e->held[reqs[i].seq] = reqs[i].pos0 + reqs[i].n;
    return true;
}

bool engine_forward(engine *e, int seq, const int *tokens, int n, int pos0, float *logits, bool all_rows,
                    char *err, size_t errlen) {
    engine_req r = {.seq = seq, .tokens = tokens, .n = n, .pos0 = pos0, .logits = logits, .all_rows = all_rows};
    return engine_forward_batch(e, 1, &r, err, errlen);
}
