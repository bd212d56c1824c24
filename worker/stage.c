/* The stage side of a rank: units in flight and the steps that move them.
 *
 * A unit is one STAGE message (rows of one sequence) going through the
 * stage's layers.  Per layer it goes
 *   ATTN   attention (needs the earlier units of its sequence to have
 *          written their KV rows of this layer), then the dense FFN, or
 *          the router and the expert requests of a MoE layer;
 *   LOCAL  this rank's own experts and the shared expert;
 *   WAIT   the workers' answers, then the combine and the next layer;
 * and DONE at the end of the stage, when it is passed on (in position
 * order per sequence, so the next stage gets a sequence's units in order).
 *
 * cl_stage_step does one step of one unit, preferring (1) passing on
 * finished units, (2) combining units whose answers are in, (3) starting
 * attention of a unit (which gets its requests to the workers soon), (4)
 * the local experts of a unit whose requests are out.  So while the
 * workers compute unit A's experts of layer L, the stage runs unit B.
 * Every unit's arithmetic is that of one process on its own rows, in the
 * same order whatever the interleaving: the bits never depend on timing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

enum unit_phase { U_ATTN, U_LOCAL, U_WAIT, U_DONE };

struct cl_unit {
    void *msg;             /* the STAGE message: header, then x [n][H], updated in place and passed on */
    int len;               /* its bytes */
    cl_hdr h;              /* its header (h.n == 0: a reset of sequence h.seq) */
    int l1;                /* end of the stage's layers [l0, l1) */
    int layer;             /* layer being run */
    enum unit_phase phase;
    bool active;           /* started: counts against c->max_active */
    int slot;              /* reply slot while its expert requests are out, -1 otherwise */
    /* The MoE step of `layer` while it is in flight. */
    float *hn;             /* [n][H] FFN input (normalised x) */
    int *ids;              /* [n][K] chosen experts, selection order */
    float *w;              /* [n][K] their weights */
    int *own;              /* [n][K] rank owning the expert of each (token, slot) */
    float *y;              /* [n][K][H] expert outputs in (token, slot) order */
    float *sh;             /* [n][H] shared experts' output; NULL if the model has none */
    MPI_Request *reqs;     /* [R] answer expected from each rank (MPI_REQUEST_NULL: none) */
    void **res;            /* [R] the answers' buffers */
    int *npairs;           /* [R] (token, slot) pairs asked of each rank */
    int n_asked;           /* other ranks asked (0: every expert is this rank's own) */
    double t_post;         /* when the requests left (for the timeout) */
    double t_comm, t_comp; /* this step's seconds messaging and computing so far */
    uint64_t bytes;        /* this step's bytes sent and received */
};

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort(); /* out of memory mid-step: nothing sensible to recover */
    return p;
}

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) abort();
    return p;
}

static size_t seq_index(int stage, int seq) { return (size_t)stage * CL_MAX_SEQ + (size_t)seq; }

static bool same_seq(const cl_unit *a, const cl_unit *b) { return a->h.stage == b->h.stage && a->h.seq == b->h.seq; }

/* ---- queue ---- */

void cl_stage_accept(cl_rank *c, void *msg, int len, int src) {
    cl_hdr h;
    memcpy(&h, msg, sizeof h);
    const moe_plan *p = &c->plan;
    const int H = c->model->hp.n_embd;
    if (h.stage < 0 || h.stage >= p->n_stages || p->stage_rank[h.stage] != c->rank || h.seq < 0 ||
        h.seq >= CL_MAX_SEQ || h.n < 0 || (size_t)len != sizeof h + sizeof(float) * (size_t)H * (size_t)h.n)
        cl_die(c, "malformed stage message from rank %d", src);
    int *held = &c->kv_pos[seq_index(h.stage, h.seq)];
    bool in_flight = false;
    for (int i = 0; i < c->n_units; i++)
        in_flight |= c->units[i]->h.stage == h.stage && c->units[i]->h.seq == h.seq;
    if (h.n == 0) {
        *held = 0; /* a reset travels the pipeline like data, so it stays in order */
    } else {
        /* A unit continues its sequence; with earlier units still here it
         * must follow them exactly (it will read their KV rows). */
        if (h.pos0 < 0 || h.pos0 > *held || (in_flight && h.pos0 != *held) || h.n > c->n_ctx - h.pos0)
            cl_die(c, "stage %d: sequence %d holds %d positions, asked for %d..%d (context %d)", h.stage, h.seq,
                   *held, h.pos0, h.pos0 + h.n - 1, c->n_ctx);
        *held = h.pos0 + h.n;
    }
    cl_unit *u = xcalloc(1, sizeof *u);
    u->msg = msg;
    u->len = len;
    u->h = h;
    u->layer = p->stage_layer0[h.stage];
    u->l1 = p->stage_layer0[h.stage + 1];
    u->phase = h.n == 0 || u->layer == u->l1 ? U_DONE : U_ATTN;
    u->slot = -1;
    if (c->n_units == c->cap_units) {
        c->cap_units = c->cap_units ? 2 * c->cap_units : 16;
        c->units = realloc(c->units, sizeof *c->units * (size_t)c->cap_units);
        if (!c->units) abort();
    }
    c->units[c->n_units++] = u;
    if (c->n_units > c->st.max_inflight) c->st.max_inflight = c->n_units;
}

static void free_step(cl_unit *u, int R) {
    for (int r = 0; u->res && r < R; r++) free(u->res[r]);
    free(u->hn), free(u->ids), free(u->w), free(u->own), free(u->y), free(u->sh);
    free(u->reqs), free(u->res), free(u->npairs);
    u->hn = u->w = u->y = u->sh = NULL;
    u->ids = u->own = u->npairs = NULL;
    u->reqs = NULL;
    u->res = NULL;
}

static void remove_unit(cl_rank *c, int idx) {
    memmove(c->units + idx, c->units + idx + 1, sizeof *c->units * (size_t)(c->n_units - idx - 1));
    c->n_units--;
}

void cl_stage_free(cl_rank *c) {
    for (int i = 0; i < c->n_units; i++) {
        cl_unit *u = c->units[i];
        for (int r = 0; u->reqs && r < c->size; r++)
            if (u->reqs[r] != MPI_REQUEST_NULL) MPI_Cancel(&u->reqs[r]), MPI_Request_free(&u->reqs[r]);
        free_step(u, c->size);
        free(u->msg);
        free(u);
    }
    free(c->units);
    c->units = NULL;
    c->n_units = c->cap_units = 0;
}

bool cl_stage_waiting(const cl_rank *c) {
    for (int i = 0; i < c->n_units; i++) {
        const cl_unit *u = c->units[i];
        if ((u->phase == U_WAIT || u->phase == U_LOCAL) && u->n_asked > 0) return true;
    }
    return false;
}

/* ---- the steps ---- */

/* Whether unit v has written its KV rows of layer il (a reset in the
 * queue blocks its sequence until it has run). */
static bool wrote_layer(const cl_unit *v, int il) {
    return v->h.n > 0 && (v->phase == U_DONE || v->layer > il || (v->layer == il && v->phase != U_ATTN));
}

static int free_slot(const cl_rank *c) {
    for (int s = 0; s < CL_MAX_SLOTS; s++)
        if (!c->slot_used[s]) return s;
    return -1;
}

/* Whether units[idx] may run the attention of its current layer now. */
static bool attn_ready(const cl_rank *c, int idx) {
    const cl_unit *u = c->units[idx];
    if (u->phase != U_ATTN) return false;
    for (int k = 0; k < idx; k++)
        if (same_seq(c->units[k], u) && !wrote_layer(c->units[k], u->layer)) return false;
    if (!u->active && c->max_active > 0) {
        int active = 0;
        for (int k = 0; k < c->n_units; k++) active += c->units[k]->active && c->units[k]->phase != U_DONE;
        if (active >= c->max_active) return false;
    }
    if (c->model->layers[u->layer].is_moe && free_slot(c) < 0) return false;
    return true;
}

/* MoE layer, first half: router, then one request per worker owning a
 * chosen expert: its tokens' rows once, (row, expert) pairs in (token,
 * slot) order; the answer comes back in the same order on the unit's tag. */
static void post_experts(cl_rank *c, cl_unit *u) {
    const moe_model *m = c->model;
    const int H = m->hp.n_embd, K = m->hp.n_expert_used, E = m->hp.n_expert, R = c->size;
    const int n = u->h.n, il = u->layer;
    double t0 = cl_now();
    u->hn = xmalloc(sizeof(float) * (size_t)n * H);
    u->ids = xmalloc(sizeof(int) * (size_t)n * K);
    u->w = xmalloc(sizeof(float) * (size_t)n * K);
    u->y = xmalloc(sizeof(float) * (size_t)n * K * H);
    u->own = xmalloc(sizeof(int) * (size_t)n * K);
    u->reqs = xmalloc(sizeof *u->reqs * (size_t)R);
    u->res = xcalloc((size_t)R, sizeof *u->res);
    u->npairs = xcalloc((size_t)R, sizeof *u->npairs);
    u->bytes = 0;
    u->n_asked = 0;
    moe_ffn_norm(m, il, cl_rows(u->msg), n, u->hn);
    moe_router(m, il, u->hn, n, u->ids, u->w, c->tp);
    double tc = cl_now();
    u->t_comp = tc - t0;

    u->slot = free_slot(c); /* attn_ready made sure there is one */
    c->slot_used[u->slot] = 1;
    const int tag = CL_TAG_EXP_RES + u->slot;
    int *ntok = xcalloc((size_t)R, sizeof *ntok), *last = xmalloc(sizeof(int) * (size_t)R);
    for (int r = 0; r < R; r++) last[r] = -1, u->reqs[r] = MPI_REQUEST_NULL;
    for (int t = 0; t < n; t++)
        for (int s = 0; s < K; s++) {
            int r = u->own[t * K + s] = c->plan.owner[(size_t)il * E + u->ids[t * K + s]];
            u->npairs[r]++;
            if (last[r] != t) ntok[r]++, last[r] = t;
        }
    for (int r = 0; r < R; r++) {
        if (!u->npairs[r] || r == c->rank) continue;
        cl_hdr q = {.layer = il, .n = ntok[r], .n_pairs = u->npairs[r], .reply = tag, .seq = u->h.seq};
        size_t plen = sizeof(int32_t) * 2 * (size_t)u->npairs[r], rlen = sizeof(float) * (size_t)H * (size_t)ntok[r];
        void *msg = cl_msg(&q, plen + rlen);
        int32_t *pairs = (int32_t *)((char *)msg + sizeof q);
        float *rows = (float *)((char *)pairs + plen);
        int j = 0, row = -1, prev = -1;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++) {
                if (u->own[t * K + s] != r) continue;
                if (prev != t) {
                    memcpy(rows + (size_t)(++row) * H, u->hn + (size_t)t * H, sizeof(float) * (size_t)H);
                    prev = t;
                }
                pairs[2 * j] = row, pairs[2 * j + 1] = u->ids[t * K + s], j++;
            }
        size_t res_len = sizeof(cl_hdr) + sizeof(float) * (size_t)H * (size_t)u->npairs[r];
        u->res[r] = xmalloc(res_len);
        /* the receive is posted before the request leaves, so the answer
         * always finds it (and never shows up in the serve loop's probe) */
        cl_check_mpi(c, MPI_Irecv(u->res[r], (int)res_len, MPI_BYTE, r, tag, c->comm, &u->reqs[r]), r,
                     "receiving from");
        c->st.bytes_recv += res_len;
        cl_post(c, r, CL_TAG_EXP_REQ, msg, sizeof q + plen + rlen);
        u->n_asked++;
        u->bytes += res_len + sizeof q + plen + rlen;
    }
    free(last), free(ntok);
    u->t_post = cl_now();
    u->t_comm = u->t_post - tc;
    u->phase = U_LOCAL;
}

/* MoE layer, local part: this rank's own experts and the shared expert. */
static void local_experts(cl_rank *c, cl_unit *u) {
    const moe_model *m = c->model;
    const int H = m->hp.n_embd, K = m->hp.n_expert_used, n = u->h.n, me = c->rank;
    double t0 = cl_now();
    cl_doing(c, "stage %d: layer %d, own experts of seq %d positions %d-%d", u->h.stage, u->layer, u->h.seq,
             u->h.pos0, u->h.pos0 + n - 1);
    if (u->npairs[me]) {
        int32_t *pairs = xmalloc(sizeof(int32_t) * 2 * (size_t)u->npairs[me]);
        float *out = xmalloc(sizeof(float) * (size_t)H * (size_t)u->npairs[me]);
        int j = 0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++)
                if (u->own[t * K + s] == me) pairs[2 * j] = t, pairs[2 * j + 1] = u->ids[t * K + s], j++;
        cl_run_experts(c, u->layer, u->hn, pairs, j, out);
        j = 0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++)
                if (u->own[t * K + s] == me)
                    memcpy(u->y + ((size_t)t * K + s) * H, out + (size_t)(j++) * H, sizeof(float) * (size_t)H);
        free(out), free(pairs);
    }
    if (m->hp.n_expert_shared > 0) {
        u->sh = xmalloc(sizeof(float) * (size_t)n * H);
        moe_shared_ffn(m, u->layer, u->hn, n, u->sh, c->tp);
    }
    double dt = cl_now() - t0;
    u->t_comp += dt;
    c->st.busy_s += dt;
    u->phase = U_WAIT;
}

/* True when every answer of u is in; dies when one is overdue. */
static bool answers_in(cl_rank *c, cl_unit *u) {
    int pending = -1;
    for (int r = 0; r < c->size; r++) {
        if (u->reqs[r] == MPI_REQUEST_NULL) continue;
        int done = 0;
        cl_check_mpi(c, MPI_Test(&u->reqs[r], &done, MPI_STATUS_IGNORE), r, "receiving from");
        if (!done && pending < 0) pending = r;
    }
    if (pending >= 0 && cl_now() - u->t_post > c->timeout_s)
        cl_die(c, "no answer from rank %d (experts of layer %d for sequence %d) for %.0f s", pending, u->layer,
               u->h.seq, c->timeout_s);
    return pending < 0;
}

/* MoE layer, last part: the answers into slot order, the same combine and
 * residual add as one process; then the next layer. */
static void combine(cl_rank *c, cl_unit *u) {
    const moe_model *m = c->model;
    const int H = m->hp.n_embd, K = m->hp.n_expert_used, n = u->h.n;
    double t0 = cl_now();
    for (int r = 0; r < c->size; r++) {
        if (!u->res[r]) continue;
        cl_hdr rh;
        memcpy(&rh, u->res[r], sizeof rh);
        if (rh.layer != u->layer || rh.n != u->npairs[r] || rh.reply != CL_TAG_EXP_RES + u->slot)
            cl_die(c, "rank %d answered the wrong expert request (layer %d, %d rows; wanted layer %d, %d rows)", r,
                   rh.layer, rh.n, u->layer, u->npairs[r]);
        const float *rows = cl_rows(u->res[r]);
        int j = 0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++)
                if (u->own[t * K + s] == r)
                    memcpy(u->y + ((size_t)t * K + s) * H, rows + (size_t)(j++) * H, sizeof(float) * (size_t)H);
    }
    double t1 = cl_now();
    float *x = cl_rows(u->msg), *f = xmalloc(sizeof(float) * (size_t)n * H);
    moe_combine(n, K, H, u->w, u->y, u->sh, f);
    for (size_t i = 0; i < (size_t)n * H; i++) x[i] = f[i] + x[i];
    free(f);
    double t2 = cl_now();
    c->slot_used[u->slot] = 0;
    u->slot = -1;
    free_step(u, c->size);
    c->st.moe_steps++;
    c->st.moe_rows += (uint64_t)n;
    c->st.moe_comm_s += u->t_comm + (t1 - t0);
    c->st.moe_compute_s += u->t_comp + (t2 - t1);
    c->st.moe_wire_bytes += u->bytes;
    c->st.comm_s += t1 - t0;
    c->st.busy_s += t2 - t1;
    u->layer++;
    u->phase = u->layer == u->l1 ? U_DONE : U_ATTN;
}

/* Attention of the unit's layer, then the dense FFN or the expert requests. */
static void attention(cl_rank *c, cl_unit *u) {
    const moe_model *m = c->model;
    const int il = u->layer, n = u->h.n;
    moe_kvcache **kv = &c->kv[seq_index(u->h.stage, u->h.seq)];
    const int l0 = c->plan.stage_layer0[u->h.stage];
    if (!*kv && !(*kv = moe_kvcache_new(&m->hp, l0, u->l1 - l0, c->n_ctx)))
        cl_die(c, "out of memory for the KV cache of stage %d", u->h.stage);
    u->active = true;
    if (cl_stage_waiting(c)) c->st.overlapped++; /* the workers have another unit's experts meanwhile */
    cl_doing(c, "stage %d: layer %d, seq %d positions %d-%d", u->h.stage, il, u->h.seq, u->h.pos0, u->h.pos0 + n - 1);
    double t0 = cl_now();
    float *x = cl_rows(u->msg);
    moe_attention(m, il, moe_kvcache_layer(*kv, il), u->h.pos0, n, x, c->tp);
    if (!m->layers[il].is_moe) {
        moe_ffn_block_local(m, il, x, n, c->tp);
        u->layer++;
        u->phase = u->layer == u->l1 ? U_DONE : U_ATTN;
        c->st.busy_s += cl_now() - t0;
        return;
    }
    c->st.busy_s += cl_now() - t0;
    double t1 = cl_now();
    post_experts(c, u);
    c->st.busy_s += u->t_comp;
    c->st.comm_s += cl_now() - t1 - u->t_comp;
}

/* A finished unit (or a reset) leaves: on to the next stage, or back to
 * the coordinator. */
static void pass_on(cl_rank *c, cl_unit *u) {
    const moe_plan *p = &c->plan;
    cl_hdr h = u->h;
    if (h.n == 0) {
        moe_kvcache **kv = &c->kv[seq_index(h.stage, h.seq)];
        moe_kvcache_free(*kv);
        *kv = NULL;
    } else {
        c->st.tokens += (uint64_t)h.n;
    }
    bool last = h.stage + 1 == p->n_stages;
    if (h.n == 0 && last) {
        free(u->msg);
    } else {
        h.stage++;
        memcpy(u->msg, &h, sizeof h);
        cl_post(c, last ? 0 : p->stage_rank[h.stage], last ? CL_TAG_OUT : CL_TAG_STAGE, u->msg, (size_t)u->len);
    }
    free(u);
}

bool cl_stage_step(cl_rank *c) {
    /* 1. finished units leave, each after the earlier ones of its sequence */
    for (int i = 0; i < c->n_units; i++) {
        cl_unit *u = c->units[i];
        if (u->phase != U_DONE) continue;
        bool first = true;
        for (int k = 0; k < i && first; k++) first = !same_seq(c->units[k], u);
        if (!first) continue;
        remove_unit(c, i);
        pass_on(c, u);
        return true;
    }
    /* 2. answers in: combine and go on */
    for (int i = 0; i < c->n_units; i++) {
        cl_unit *u = c->units[i];
        if (u->phase == U_WAIT && answers_in(c, u)) {
            combine(c, u);
            return true;
        }
    }
    /* 3. attention of the first unit that may run it */
    for (int i = 0; i < c->n_units; i++)
        if (attn_ready(c, i)) {
            attention(c, c->units[i]);
            return true;
        }
    /* 4. local experts of a unit whose requests are out */
    for (int i = 0; i < c->n_units; i++)
        if (c->units[i]->phase == U_LOCAL) {
            local_experts(c, c->units[i]);
            return true;
        }
    return false;
}
