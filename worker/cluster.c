/* The rank runtime: message plumbing, the serve loop, the stage (layers of
 * one micro-batch) and the expert worker. */
#include "cluster.h"

#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "control.pb-c.h"
#include "hw.h"
#include "kernels.h"

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort(); /* out of memory mid-step: nothing sensible to recover */
    return p;
}

double cl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cl_die(cl_rank *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "moe: rank %d: %s\n", c->rank, msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1); /* not reached */
}

/* ---- messages ---- */

void *cl_msg(const cl_hdr *h, size_t payload) {
    void *m = xmalloc(sizeof *h + payload);
    memcpy(m, h, sizeof *h);
    return m;
}

static void check_mpi(cl_rank *c, int rc, int peer, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, s, &len);
    cl_die(c, "%s rank %d failed: %s", what, peer, s);
}

void cl_post(cl_rank *c, int peer, int tag, void *buf, size_t len) {
    if (c->n_sends == c->cap_sends) {
        c->cap_sends = c->cap_sends ? 2 * c->cap_sends : 16;
        c->sends = realloc(c->sends, sizeof *c->sends * (size_t)c->cap_sends);
        if (!c->sends) abort();
    }
    cl_send *s = &c->sends[c->n_sends++];
    s->buf = buf;
    s->peer = peer;
    check_mpi(c, MPI_Isend(buf, (int)len, MPI_BYTE, peer, tag, c->comm, &s->req), peer, "sending to");
    c->st.bytes_sent += len;
}

/* Frees the buffers of completed sends. */
static void progress_sends(cl_rank *c) {
    for (int i = 0; i < c->n_sends;) {
        int done = 0;
        check_mpi(c, MPI_Test(&c->sends[i].req, &done, MPI_STATUS_IGNORE), c->sends[i].peer, "sending to");
        if (done) {
            free(c->sends[i].buf);
            c->sends[i] = c->sends[--c->n_sends];
        } else {
            i++;
        }
    }
}

/* Receives the probed message into a new buffer. */
static void *recv_probed(cl_rank *c, MPI_Status *st, int *len) {
    check_mpi(c, MPI_Get_count(st, MPI_BYTE, len), st->MPI_SOURCE, "receiving from");
    void *buf = xmalloc((size_t)*len);
    check_mpi(c, MPI_Recv(buf, *len, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, c->comm, MPI_STATUS_IGNORE),
              st->MPI_SOURCE, "receiving from");
    c->st.bytes_recv += (uint64_t)*len;
    return buf;
}

/* ---- experts ---- */

/* out[j] = expert pairs[j].e of layer il on row pairs[j].row of rows,
 * experts run once each over their rows (ascending expert id). */
static void run_experts(cl_rank *c, int il, const float *rows, const int32_t *pairs, int n_pairs, float *out) {
    const int H = c->model->hp.n_embd, E = c->model->hp.n_expert;
    float *xin = xmalloc(sizeof(float) * (size_t)H * (size_t)(n_pairs ? n_pairs : 1));
    float *yout = xmalloc(sizeof(float) * (size_t)H * (size_t)(n_pairs ? n_pairs : 1));
    int *sel = xmalloc(sizeof(int) * (size_t)(n_pairs ? n_pairs : 1));
    for (int e = 0; e < E; e++) {
        int cnt = 0;
        for (int j = 0; j < n_pairs; j++)
            if (pairs[2 * j + 1] == e) sel[cnt++] = j;
        if (!cnt) continue;
        for (int r = 0; r < cnt; r++)
            memcpy(xin + (size_t)r * H, rows + (size_t)pairs[2 * sel[r]] * H, sizeof(float) * (size_t)H);
        moe_expert_ffn(&c->store.view, il, e, xin, cnt, yout, c->tp);
        for (int r = 0; r < cnt; r++) memcpy(out + (size_t)sel[r] * H, yout + (size_t)r * H, sizeof(float) * (size_t)H);
        c->st.hits[(size_t)il * E + e] += (uint64_t)cnt;
        c->st.expert_rows += (uint64_t)cnt;
    }
    free(sel), free(yout), free(xin);
}

/* Worker side of EXP_REQ: header, pairs [n_pairs][2] (row, expert), rows [n][H]. */
static void serve_expert_req(cl_rank *c, void *msg, int len, int src) {
    double t0 = cl_now();
    cl_hdr h;
    memcpy(&h, msg, sizeof h);
    const int H = c->model->hp.n_embd, E = c->model->hp.n_expert;
    size_t need = sizeof h + sizeof(int32_t) * 2 * (size_t)h.n_pairs + sizeof(float) * (size_t)H * (size_t)h.n;
    if (h.layer < 0 || h.layer >= c->model->hp.n_layer || h.n < 0 || h.n_pairs < 0 || (size_t)len != need)
        cl_die(c, "malformed expert request from rank %d (%d bytes)", src, len);
    const int32_t *pairs = (const int32_t *)((char *)msg + sizeof h);
    const float *rows = (const float *)(pairs + 2 * h.n_pairs);
    for (int j = 0; j < h.n_pairs; j++)
        if (pairs[2 * j] < 0 || pairs[2 * j] >= h.n || pairs[2 * j + 1] < 0 || pairs[2 * j + 1] >= E ||
            c->plan.owner[(size_t)h.layer * E + pairs[2 * j + 1]] != c->rank)
            cl_die(c, "rank %d asked for expert %d of layer %d, which this rank does not own", src, pairs[2 * j + 1],
                   h.layer);
    cl_doing(c, "expert worker: layer %d, %d rows for rank %d", h.layer, h.n_pairs, src);
    cl_hdr rh = h;
    rh.n = h.n_pairs;
    void *res = cl_msg(&rh, sizeof(float) * (size_t)H * (size_t)h.n_pairs);
    run_experts(c, h.layer, rows, pairs, h.n_pairs, cl_rows(res));
    double t1 = cl_now();
    cl_post(c, src, CL_TAG_EXP_RES, res, sizeof rh + sizeof(float) * (size_t)H * (size_t)h.n_pairs);
    c->st.busy_s += t1 - t0;
    c->st.comm_s += cl_now() - t1;
}

static bool serve_expert_reqs(cl_rank *c) {
    int flag = 0;
    MPI_Status st;
    check_mpi(c, MPI_Iprobe(MPI_ANY_SOURCE, CL_TAG_EXP_REQ, c->comm, &flag, &st), -1, "probing");
    if (!flag) return false;
    int len;
    void *msg = recv_probed(c, &st, &len);
    serve_expert_req(c, msg, len, st.MPI_SOURCE);
    free(msg);
    return true;
}

void cl_idle(cl_rank *c, int *polls) {
    progress_sends(c);
    if (serve_expert_reqs(c)) {
        *polls = 0;
        return;
    }
    (*polls)++;
    if (c->spin) return;
    /* Back off: poll hot for a while (decode steps are short), then sleep
     * 20 us doubling to 1 ms, so an idle rank costs ~1% of a core. */
    if (*polls < 64) {
        sched_yield();
        return;
    }
    int k = *polls - 64 < 6 ? *polls - 64 : 6;
    struct timespec ts = {0, 20000L << k};
    if (ts.tv_nsec > 1000000L) ts.tv_nsec = 1000000L;
    nanosleep(&ts, NULL);
}

/* Waits for reqs (peers[i] answers reqs[i]) while serving expert requests. */
static void wait_all(cl_rank *c, int n, MPI_Request *reqs, const int *peers, const char *what) {
    double t0 = cl_now();
    int polls = 0;
    for (;;) {
        int pending = -1;
        for (int i = 0; i < n; i++) {
            if (reqs[i] == MPI_REQUEST_NULL) continue;
            int done = 0;
            check_mpi(c, MPI_Test(&reqs[i], &done, MPI_STATUS_IGNORE), peers[i], "receiving from");
            if (!done && pending < 0) pending = i;
        }
        if (pending < 0) return;
        if (cl_now() - t0 > c->timeout_s)
            cl_die(c, "no answer from rank %d (%s) for %.0f s", peers[pending], what, c->timeout_s);
        cl_idle(c, &polls);
    }
}

/* ---- stage ---- */

/* x += MoE FFN of layer il, the routed experts computed by their owners. */
static void moe_step(cl_rank *c, int il, float *x, int n) {
    const moe_model *m = c->model;
    const int H = m->hp.n_embd, K = m->hp.n_expert_used, E = m->hp.n_expert, R = c->size;
    double t0 = cl_now(), t_comm = 0, t_wait = 0;
    uint64_t bytes0 = c->st.bytes_sent + c->st.bytes_recv;
    float *h = xmalloc(sizeof(float) * (size_t)n * H);
    int *ids = xmalloc(sizeof(int) * (size_t)n * K);
    float *w = xmalloc(sizeof(float) * (size_t)n * K);
    float *y = xmalloc(sizeof(float) * (size_t)n * K * H);
    moe_ffn_norm(m, il, x, n, h);
    moe_router(m, il, h, n, ids, w, c->tp);

    /* One request per worker: its tokens' rows once, (row, expert) pairs in
     * (token, slot) order; the answer comes back in the same order. */
    double tc = cl_now();
    int *npairs = calloc((size_t)R, sizeof *npairs), *ntok = calloc((size_t)R, sizeof *ntok);
    int *last = xmalloc(sizeof(int) * (size_t)R);
    int *own = xmalloc(sizeof(int) * (size_t)n * K); /* rank owning the expert of each (token, slot) */
    for (int i = 0; i < n * K; i++) own[i] = c->plan.owner[(size_t)il * E + ids[i]];
    MPI_Request *reqs = xmalloc(sizeof *reqs * (size_t)R);
    int *peers = xmalloc(sizeof(int) * (size_t)R);
    void **res = calloc((size_t)R, sizeof *res);
    if (!npairs || !ntok || !res) abort();
    for (int r = 0; r < R; r++) last[r] = -1, reqs[r] = MPI_REQUEST_NULL, peers[r] = r;
    for (int t = 0; t < n; t++)
        for (int s = 0; s < K; s++) {
            int r = own[t * K + s];
            npairs[r]++;
            if (last[r] != t) ntok[r]++, last[r] = t;
        }
    for (int r = 0; r < R; r++) {
        if (!npairs[r] || r == c->rank) continue;
        cl_hdr q = {.layer = il, .n = ntok[r], .n_pairs = npairs[r]};
        size_t plen = sizeof(int32_t) * 2 * (size_t)npairs[r], rlen = sizeof(float) * (size_t)H * (size_t)ntok[r];
        void *msg = cl_msg(&q, plen + rlen);
        int32_t *pairs = (int32_t *)((char *)msg + sizeof q);
        float *rows = (float *)((char *)pairs + plen);
        int j = 0, row = -1, prev = -1;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++) {
                int e = ids[t * K + s];
                if (own[t * K + s] != r) continue;
                if (prev != t) {
                    memcpy(rows + (size_t)(++row) * H, h + (size_t)t * H, sizeof(float) * (size_t)H);
                    prev = t;
                }
                pairs[2 * j] = row, pairs[2 * j + 1] = e, j++;
            }
        size_t res_len = sizeof(cl_hdr) + sizeof(float) * (size_t)H * (size_t)npairs[r];
        res[r] = xmalloc(res_len);
        check_mpi(c, MPI_Irecv(res[r], (int)res_len, MPI_BYTE, r, CL_TAG_EXP_RES, c->comm, &reqs[r]), r,
                  "receiving from");
        c->st.bytes_recv += res_len;
        cl_post(c, r, CL_TAG_EXP_REQ, msg, sizeof q + plen + rlen);
    }
    t_comm += cl_now() - tc;

    /* Our own experts and the shared expert while the workers compute. */
    if (npairs[c->rank]) {
        int32_t *pairs = xmalloc(sizeof(int32_t) * 2 * (size_t)npairs[c->rank]);
        float *out = xmalloc(sizeof(float) * (size_t)H * (size_t)npairs[c->rank]);
        int j = 0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++)
                if (own[t * K + s] == c->rank) pairs[2 * j] = t, pairs[2 * j + 1] = ids[t * K + s], j++;
        run_experts(c, il, h, pairs, j, out);
        j = 0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++)
                if (own[t * K + s] == c->rank)
                    memcpy(y + ((size_t)t * K + s) * H, out + (size_t)(j++) * H, sizeof(float) * (size_t)H);
        free(out), free(pairs);
    }
    float *sh = NULL;
    if (m->hp.n_expert_shared > 0) {
        sh = xmalloc(sizeof(float) * (size_t)n * H);
        moe_shared_ffn(m, il, h, n, sh, c->tp);
    }

    double tw = cl_now();
    char what[64];
    snprintf(what, sizeof what, "experts of layer %d", il);
    cl_doing(c, "stage: layer %d, waiting for expert workers", il);
    wait_all(c, R, reqs, peers, what);
    t_wait += cl_now() - tw;

    tc = cl_now();
    for (int r = 0; r < R; r++) {
        if (!res[r]) continue;
        const float *rows = cl_rows(res[r]);
        int j = 0;
        for (int t = 0; t < n; t++)
            for (int s = 0; s < K; s++)
                if (own[t * K + s] == r)
                    memcpy(y + ((size_t)t * K + s) * H, rows + (size_t)(j++) * H, sizeof(float) * (size_t)H);
        free(res[r]);
    }
    t_comm += cl_now() - tc;

    /* The same combine and residual add as the single-process engine. */
    float *f = xmalloc(sizeof(float) * (size_t)n * H);
    moe_combine(n, K, H, w, y, sh, f);
    for (size_t i = 0; i < (size_t)n * H; i++) x[i] = f[i] + x[i];
    free(f), free(sh), free(res), free(peers), free(reqs), free(own), free(last), free(ntok), free(npairs);
    free(y), free(w), free(ids), free(h);

    double total = cl_now() - t0;
    c->st.moe_steps++;
    c->st.moe_rows += (uint64_t)n;
    c->st.moe_comm_s += t_comm;
    c->st.moe_wait_s += t_wait;
    c->st.moe_compute_s += total - t_comm - t_wait;
    c->st.moe_wire_bytes += c->st.bytes_sent + c->st.bytes_recv - bytes0;
}

static moe_kvcache **kv_slot(cl_rank *c, int stage, int seq) { return &c->kv[(size_t)stage * CL_MAX_SEQ + seq]; }

/* Runs stage s on a STAGE message and passes the buffer on. */
static void run_stage(cl_rank *c, void *msg, int len, int src) {
    cl_hdr h;
    memcpy(&h, msg, sizeof h);
    const moe_plan *p = &c->plan;
    const int H = c->model->hp.n_embd;
    if (h.stage < 0 || h.stage >= p->n_stages || p->stage_rank[h.stage] != c->rank || h.seq < 0 ||
        h.seq >= CL_MAX_SEQ || h.n < 0 || (size_t)len != sizeof h + sizeof(float) * (size_t)H * (size_t)h.n)
        cl_die(c, "malformed stage message from rank %d", src);
    const int l0 = p->stage_layer0[h.stage], l1 = p->stage_layer0[h.stage + 1];
    moe_kvcache **kv = kv_slot(c, h.stage, h.seq);
    int *held = &c->kv_pos[(size_t)h.stage * CL_MAX_SEQ + h.seq];
    if (h.n == 0) { /* reset travels the pipeline like data, so it stays in order */
        moe_kvcache_free(*kv);
        *kv = NULL;
        *held = 0;
    } else {
        if (h.pos0 < 0 || h.pos0 > *held || h.pos0 + h.n > c->n_ctx)
            cl_die(c, "stage %d: sequence %d holds %d positions, asked for %d..%d (context %d)", h.stage, h.seq,
                   *held, h.pos0, h.pos0 + h.n - 1, c->n_ctx);
        if (!*kv && !(*kv = moe_kvcache_new(&c->model->hp, l0, l1 - l0, c->n_ctx)))
            cl_die(c, "out of memory for the KV cache of stage %d", h.stage);
        float *x = cl_rows(msg);
        for (int il = l0; il < l1; il++) {
            double t0 = cl_now();
            cl_doing(c, "stage %d: layer %d, seq %d positions %d-%d", h.stage, il, h.seq, h.pos0, h.pos0 + h.n - 1);
            moe_attention(c->model, il, moe_kvcache_layer(*kv, il), h.pos0, h.n, x, c->tp);
            if (c->model->layers[il].is_moe) {
                c->st.busy_s += cl_now() - t0;
                double t1 = cl_now(), w0 = c->st.moe_wait_s;
                moe_step(c, il, x, h.n);
                double waited = c->st.moe_wait_s - w0;
                c->st.wait_s += waited;
                c->st.busy_s += cl_now() - t1 - waited;
            } else {
                moe_ffn_block_local(c->model, il, x, h.n, c->tp);
                c->st.busy_s += cl_now() - t0;
            }
        }
        *held = h.pos0 + h.n;
        c->st.tokens += (uint64_t)h.n;
    }
    cl_doing(c, "idle");
    /* On to the next stage, or back to the coordinator. */
    int last = h.stage + 1 == p->n_stages;
    if (h.n == 0 && last) {
        free(msg);
        return;
    }
    h.stage++;
    memcpy(msg, &h, sizeof h);
    cl_post(c, last ? 0 : p->stage_rank[h.stage], last ? CL_TAG_OUT : CL_TAG_STAGE, msg, (size_t)len);
}

/* ---- control ---- */

static void send_stats(cl_rank *c) {
    Moe__RankStats s = MOE__RANK_STATS__INIT;
    const size_t nh = (size_t)c->plan.n_layer * c->plan.n_expert;
    s.rank = (uint32_t)c->rank;
    s.tokens = c->st.tokens;
    s.expert_rows = c->st.expert_rows;
    s.n_expert_hits = nh;
    s.expert_hits = c->st.hits;
    s.busy_s = c->st.busy_s;
    s.comm_s = c->st.comm_s;
    s.wait_s = c->st.wait_s;
    s.bytes_sent = c->st.bytes_sent;
    s.bytes_recv = c->st.bytes_recv;
    s.rss = hw_rss();
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        s.cpu_s = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
                  1e-6 * (double)ru.ru_stime.tv_usec;
    s.n_expert = (uint32_t)c->plan.n_expert;
    s.n_layer = (uint32_t)c->plan.n_layer;
    s.moe_steps = c->st.moe_steps;
    s.moe_compute_s = c->st.moe_compute_s;
    s.moe_comm_s = c->st.moe_comm_s;
    s.moe_wait_s = c->st.moe_wait_s;
    s.moe_wire_bytes = c->st.moe_wire_bytes;
    s.moe_rows = c->st.moe_rows;
    size_t len = moe__rank_stats__get_packed_size(&s);
    uint8_t *buf = xmalloc(len);
    moe__rank_stats__pack(&s, buf);
    cl_post(c, 0, CL_TAG_STATS, buf, len);
}

static void handle_ctrl(cl_rank *c, void *msg, int len, int src) {
    Moe__Control *m = moe__control__unpack(NULL, (size_t)len, msg);
    if (!m || src != 0) cl_die(c, "malformed control message from rank %d", src);
    if (m->kind == MOE__CONTROL__KIND__STATS) send_stats(c);
    else if (m->kind == MOE__CONTROL__KIND__SHUTDOWN) c->quit = true;
    moe__control__free_unpacked(m, NULL);
}

bool cl_serve_one(cl_rank *c) {
    progress_sends(c);
    int flag = 0;
    MPI_Status st;
    check_mpi(c, MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c->comm, &flag, &st), -1, "probing");
    if (!flag) return false;
    int len;
    void *msg = recv_probed(c, &st, &len);
    switch (st.MPI_TAG) {
    case CL_TAG_STAGE: run_stage(c, msg, len, st.MPI_SOURCE); return true; /* msg passed on */
    case CL_TAG_EXP_REQ: serve_expert_req(c, msg, len, st.MPI_SOURCE); break;
    case CL_TAG_CTRL: handle_ctrl(c, msg, len, st.MPI_SOURCE); break;
    case CL_TAG_OUT:
        if (c->rank == 0 && c->on_out && (size_t)len >= sizeof(cl_hdr)) {
            c->on_out(c->out_ctx, msg);
            return true;
        }
        cl_die(c, "unexpected output message from rank %d", st.MPI_SOURCE);
    case CL_TAG_STATS:
        if (c->rank == 0 && c->on_stats) {
            c->on_stats(c->out_ctx, msg, len);
            return true;
        }
        cl_die(c, "unexpected stats message from rank %d", st.MPI_SOURCE);
    default: cl_die(c, "unexpected message (tag %d) from rank %d", st.MPI_TAG, st.MPI_SOURCE);
    }
    free(msg);
    return true;
}

void cl_serve(cl_rank *c) {
    int polls = 0;
    cl_doing(c, "idle");
    while (!c->quit) {
        if (cl_serve_one(c)) {
            polls = 0;
            cl_doing(c, "idle");
        } else {
            cl_idle(c, &polls);
        }
    }
    /* Let the last answers leave before finalizing. */
    double t0 = cl_now();
    while (c->n_sends && cl_now() - t0 < c->timeout_s) {
        progress_sends(c);
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
}

/* ---- setup ---- */

bool cl_rank_init(cl_rank *c, const char *model_path, int n_threads, int n_ctx, int numa_node, char *err,
                  size_t errlen) {
    c->model = moe_model_load(model_path, err, errlen);
    if (!c->model) return false;
    const moe_hparams *hp = &c->model->hp;
    if (hp->n_layer != c->plan.n_layer || hp->n_expert != c->plan.n_expert) {
        snprintf(err, errlen, "%s does not match the plan (%d layers, %d experts)", model_path, c->plan.n_layer,
                 c->plan.n_expert);
        return false;
    }
    if (!expert_store_build(&c->store, c->model, &c->plan, c->rank, numa_node, err, errlen)) return false;
    c->n_ctx = n_ctx;
    c->kv = calloc((size_t)c->plan.n_stages * CL_MAX_SEQ, sizeof *c->kv);
    c->kv_pos = calloc((size_t)c->plan.n_stages * CL_MAX_SEQ, sizeof *c->kv_pos);
    c->st.hits = calloc((size_t)hp->n_layer * (size_t)(hp->n_expert ? hp->n_expert : 1), sizeof *c->st.hits);
    if (!c->kv || !c->kv_pos || !c->st.hits) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    kern_init();
    c->tp = tpool_create(n_threads);
    return c->tp != NULL;
}

void cl_rank_free(cl_rank *c) {
    for (int i = 0; c->kv && i < c->plan.n_stages * CL_MAX_SEQ; i++) moe_kvcache_free(c->kv[i]);
    free(c->kv);
    free(c->kv_pos);
    free(c->st.hits);
    for (int i = 0; i < c->n_sends; i++) free(c->sends[i].buf);
    free(c->sends);
    tpool_destroy(c->tp);
    if (c->model) expert_store_free(&c->store);
    moe_model_free(c->model);
    plan_free(&c->plan);
    c->model = NULL;
}
