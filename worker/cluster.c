/* The rank runtime: message plumbing, the serve loop and the expert
 * worker (the stage's units are in stage.c). */
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

void cl_check_mpi(cl_rank *c, int rc, int peer, const char *what) {
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
    cl_check_mpi(c, MPI_Isend(buf, (int)len, MPI_BYTE, peer, tag, c->comm, &s->req), peer, "sending to");
    c->st.bytes_sent += len;
}

/* Frees the buffers of completed sends. */
static void progress_sends(cl_rank *c) {
    for (int i = 0; i < c->n_sends;) {
        int done = 0;
        cl_check_mpi(c, MPI_Test(&c->sends[i].req, &done, MPI_STATUS_IGNORE), c->sends[i].peer, "sending to");
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
    cl_check_mpi(c, MPI_Get_count(st, MPI_BYTE, len), st->MPI_SOURCE, "receiving from");
    void *buf = xmalloc((size_t)*len);
    cl_check_mpi(c, MPI_Recv(buf, *len, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, c->comm, MPI_STATUS_IGNORE),
              st->MPI_SOURCE, "receiving from");
    c->st.bytes_recv += (uint64_t)*len;
    return buf;
}

/* ---- experts ---- */

void cl_run_experts(cl_rank *c, int il, const float *rows, const int32_t *pairs, int n_pairs, float *out) {
    const int H = c->model->hp.n_embd, E = c->model->hp.n_expert;
    float *xin = xmalloc(sizeof(float) * (size_t)H * (size_t)(n_pairs ? n_pairs : 1));
    float *yout = xmalloc(sizeof(float) * (size_t)H * (size_t)(n_pairs ? n_pairs : 1));
    int *sel = xmalloc(sizeof(int) * (size_t)(n_pairs ? n_pairs : 1));
    moe_expert_job *jobs = calloc((size_t)E, sizeof *jobs);
    if (!jobs) abort();
    /* pairs grouped by expert, each expert's rows back to back; all of
     * them in one moe_experts_ffn run */
    int cnt = 0, n_jobs = 0;
    for (int e = 0; e < E; e++) {
        const int first = cnt;
        for (int j = 0; j < n_pairs; j++)
            if (pairs[2 * j + 1] == e) {
                memcpy(xin + (size_t)cnt * H, rows + (size_t)pairs[2 * j] * H, sizeof(float) * (size_t)H);
                sel[cnt++] = j;
            }
        if (cnt == first) continue;
        jobs[n_jobs++] = (moe_expert_job){.e = e, .h = xin + (size_t)first * H, .n = cnt - first,
                                          .out = yout + (size_t)first * H};
        c->st.hits[(size_t)il * E + e] += (uint64_t)(cnt - first);
        c->st.expert_rows += (uint64_t)(cnt - first);
    }
    moe_experts_ffn(&c->store.view, il, jobs, n_jobs, c->tp);
    for (int k = 0; k < cnt; k++) memcpy(out + (size_t)sel[k] * H, yout + (size_t)k * H, sizeof(float) * (size_t)H);
    free(jobs), free(sel), free(yout), free(xin);
}

/* Worker side of EXP_REQ: header, pairs [n_pairs][2] (row, expert), rows [n][H]. */
static void serve_expert_req(cl_rank *c, void *msg, int len, int src) {
    double t0 = cl_now();
    cl_hdr h;
    memcpy(&h, msg, sizeof h);
    const int H = c->model->hp.n_embd, E = c->model->hp.n_expert;
    size_t need = sizeof h + sizeof(int32_t) * 2 * (size_t)h.n_pairs + sizeof(float) * (size_t)H * (size_t)h.n;
    if (h.layer < 0 || h.layer >= c->model->hp.n_layer || h.n < 0 || h.n_pairs < 0 || (size_t)len != need ||
        h.reply < CL_TAG_EXP_RES || h.reply >= CL_TAG_EXP_RES + CL_MAX_SLOTS)
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
    cl_run_experts(c, h.layer, rows, pairs, h.n_pairs, cl_rows(res));
    double t1 = cl_now();
    cl_post(c, src, h.reply, res, sizeof rh + sizeof(float) * (size_t)H * (size_t)h.n_pairs);
    c->st.busy_s += t1 - t0;
    c->st.comm_s += cl_now() - t1;
}

void cl_idle(cl_rank *c, int *polls) {
    double t0 = cl_now();
    progress_sends(c);
    (*polls)++;
    if (!c->spin) {
        /* Back off: poll hot for a while (decode steps are short), then
         * sleep 20 us doubling to 1 ms, so an idle rank costs ~1% of a core. */
        if (*polls < 64) {
            sched_yield();
        } else {
            int k = *polls - 64 < 6 ? *polls - 64 : 6;
            struct timespec ts = {0, 20000L << k};
            if (ts.tv_nsec > 1000000L) ts.tv_nsec = 1000000L;
            nanosleep(&ts, NULL);
        }
    }
    if (cl_stage_waiting(c)) { /* nothing to do while a unit waits: time lost to the workers */
        if (*polls == 1) cl_doing(c, "stage: waiting for expert workers (%d units in flight)", c->n_units);
        double dt = cl_now() - t0;
        c->st.moe_wait_s += dt;
        c->st.wait_s += dt;
    }
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
    s.overlapped = c->st.overlapped;
    s.max_inflight = (uint32_t)c->st.max_inflight;
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
    cl_check_mpi(c, MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, c->comm, &flag, &st), -1, "probing");
    /* Messages first: other ranks' stages may be waiting for our experts. */
    if (!flag) return cl_stage_step(c);
    int len;
    void *msg = recv_probed(c, &st, &len);
    switch (st.MPI_TAG) {
    case CL_TAG_STAGE: cl_stage_accept(c, msg, len, st.MPI_SOURCE); return true; /* msg queued */
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
    c->slot_used = calloc(CL_MAX_SLOTS, 1);
    const char *fl = getenv("MOE_STAGE_INFLIGHT");
    c->max_active = fl && atoi(fl) > 0 ? atoi(fl) : 0;
    c->st.hits = calloc((size_t)hp->n_layer * (size_t)(hp->n_expert ? hp->n_expert : 1), sizeof *c->st.hits);
    if (!c->kv || !c->kv_pos || !c->st.hits || !c->slot_used) {
        snprintf(err, errlen, "out of memory");
        return false;
    }
    kern_init();
    c->tp = tpool_create(n_threads);
    return c->tp != NULL;
}

void cl_rank_free(cl_rank *c) {
    cl_stage_free(c);
    for (int i = 0; c->kv && i < c->plan.n_stages * CL_MAX_SEQ; i++) moe_kvcache_free(c->kv[i]);
    free(c->kv);
    free(c->kv_pos);
    free(c->slot_used);
    free(c->st.hits);
    for (int i = 0; i < c->n_sends; i++) free(c->sends[i].buf);
    free(c->sends);
    tpool_destroy(c->tp);
    if (c->model) expert_store_free(&c->store);
    moe_model_free(c->model);
    plan_free(&c->plan);
    c->model = NULL;
}
