/* The coordinator of the cluster: start-up (plan, broadcast, load, memory
 * report), the forward pass as seen from rank 0, stats and shutdown. */
#include "engine_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "control.pb-c.h"
#include "hw.h"
#include "kernels.h"
#include "plan.h"

#define INFO_MAX 512 /* bytes of one packed RankInfo */

/* A unit of the batch in flight: which rows of which request it carries. */
typedef struct unit_out {
    int req;                 /* request index in the batch */
    int row0;                /* its first row within the request */
    int n;                   /* rows */
    bool back;               /* its rows are back from the last stage */
} unit_out;

struct engine_mpi {
    cl_rank c;               /* this rank's runtime (rank 0) */
    char desc[160];
    int held[CL_MAX_SEQ];    /* positions each sequence's caches hold */
    bool stats;              /* print per-rank stats at close */
    struct stats_sum *sum;   /* --stats totals being gathered */
    /* The batch in flight. */
    const engine_req *reqs;  /* [n_req] its requests */
    int n_req;
    float **x;               /* [n_req] hidden rows [n][H] of each request */
    int *left;               /* [n_req] units of each request still out (-1: output head done) */
    unit_out *units;         /* [n_units] */
    int n_units;
    int outs;                /* units still out */
};

bool engine_mpi_wanted(void) {
    const char *keys[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = getenv(keys[i]);
        if (v && atoi(v) > 1) return true;
    }
    return false;
}

static void finalize_at_exit(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) MPI_Finalize();
}

/* Ranks other than 0 end here after an orderly stop. */
static void __attribute__((noreturn)) leave(cl_rank *c, int code) {
    cl_hb_stop(c);
    cl_rank_free(c);
    MPI_Finalize();
    exit(code);
}

/* Gathers every rank's hardware at rank 0 (hw[] on rank 0 only). */
static void gather_hw(cl_rank *c, const hw_info *me, plan_hw *hw, int *pids) {
    Moe__RankInfo m = MOE__RANK_INFO__INIT;
    m.host = (char *)me->hw.host;
    m.pid = (int32_t)getpid();
    m.numa_node = me->hw.numa_node;
    m.n_numa_nodes = (uint32_t)me->n_numa_nodes;
    m.n_cores = (uint32_t)me->hw.n_cores;
    m.mem_total = me->mem_total;
    m.mem_avail = me->hw.mem_capacity;
    uint8_t buf[INFO_MAX] = {0};
    size_t len = moe__rank_info__get_packed_size(&m);
    if (len <= INFO_MAX - 4) {
        uint32_t l32 = (uint32_t)len;
        memcpy(buf, &l32, 4);
        moe__rank_info__pack(&m, buf + 4);
    }
    uint8_t *all = c->rank == 0 ? malloc((size_t)INFO_MAX * c->size) : NULL;
    MPI_Gather(buf, INFO_MAX, MPI_BYTE, all, INFO_MAX, MPI_BYTE, 0, MPI_COMM_WORLD);
    if (c->rank != 0) return;
    for (int r = 0; r < c->size && all; r++) {
        uint32_t l32;
        memcpy(&l32, all + (size_t)r * INFO_MAX, 4);
        Moe__RankInfo *ri = l32 <= INFO_MAX - 4 ? moe__rank_info__unpack(NULL, l32, all + (size_t)r * INFO_MAX + 4) : NULL;
        hw[r] = (plan_hw){.numa_node = -1};
        if (ri) {
            snprintf(hw[r].host, sizeof hw[r].host, "%s", ri->host ? ri->host : "?");
            hw[r].numa_node = ri->numa_node;
            hw[r].n_cores = (int)ri->n_cores;
            hw[r].mem_capacity = ri->mem_avail;
            pids[r] = ri->pid;
            moe__rank_info__free_unpacked(ri, NULL);
        }
    }
    free(all);
}

/* Rank 0: the plan, or an error.  Reads only the GGUF header. */
static bool make_plan(const engine_opts *o, const plan_hw *hw, int size, int n_ctx, moe_plan *p, char *err,
                      size_t errlen) {
    char sub[400];
    gguf_file *g = gguf_open(o->model_path, sub, sizeof sub);
    if (!g) return snprintf(err, errlen, "%s", sub), false;
    plan_model pm;
    bool ok = plan_model_from_gguf(g, &pm, sub, sizeof sub);
    gguf_close(g);
    if (!ok) return snprintf(err, errlen, "%s: %s", o->model_path, sub), false;
    if (pm.n_ctx_train > 0 && n_ctx > pm.n_ctx_train) n_ctx = pm.n_ctx_train;
    if (o->plan_path) {
        ok = plan_read_text(o->plan_path, &pm, p, sub, sizeof sub);
        if (ok) {
            for (int r = 0; r < p->n_ranks && r < size; r++)
                if (!p->ranks[r].hw.mem_capacity) p->ranks[r].hw = hw[r];
                else snprintf(p->ranks[r].hw.host, sizeof p->ranks[r].hw.host, "%s", hw[r].host);
            p->n_ctx = n_ctx; /* KV is sized by the command's context */
            ok = plan_validate(p, &pm, size, sub, sizeof sub);
            if (!ok) plan_free(p);
        }
        if (!ok) snprintf(err, errlen, "plan %s: %s", o->plan_path, sub);
    } else {
        plan_opts po = {.n_ranks = size, .n_stages = o->n_stages, .n_ctx = n_ctx, .n_seq = 1};
        ok = plan_compute(&pm, hw, &po, p, sub, sizeof sub);
        if (!ok) snprintf(err, errlen, "cannot plan %d ranks: %s", size, sub);
    }
    plan_model_free(&pm);
    return ok;
}

/* Every rank's resident memory, printed by rank 0 at start-up. */
static void report_memory(cl_rank *c) {
    uint64_t mine[2] = {hw_rss(), c->store.bytes}, *all = NULL;
    if (c->rank == 0) all = calloc((size_t)c->size * 2, sizeof *all);
    MPI_Gather(mine, 2, MPI_UINT64_T, all, 2, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (c->rank != 0 || !all) return;
    for (int r = 0; r < c->size; r++) {
        char role[200], a[32], b[32], d[32];
        plan_describe_rank(&c->plan, r, role, sizeof role);
        const plan_rank *k = &c->plan.ranks[r];
        fprintf(stderr, "cluster: rank %d on %s (numa %d): %s; resident %s, experts node-local %s, plan %s\n", r,
                k->hw.host, k->hw.numa_node, role, plan_fmt_bytes(all[2 * r], a, sizeof a),
                plan_fmt_bytes(all[2 * r + 1], b, sizeof b), plan_fmt_bytes(plan_rank_total(&c->plan, r), d, sizeof d));
    }
    free(all);
}

engine_mpi *engine_mpi_open(const engine_opts *o, char *err, size_t errlen) {
    int provided = 0, init = 0;
    MPI_Initialized(&init);
    if (!init && MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed");
        return NULL;
    }
    MPI_Query_thread(&provided); /* also right when MPI was initialized before us */
    atexit(finalize_at_exit);
    engine_mpi *e = calloc(1, sizeof *e);
    if (!e) abort();
    cl_rank *c = &e->c;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
    const char *w = getenv("MOE_WAIT"), *t = getenv("MOE_TIMEOUT");
    c->spin = w && !strcmp(w, "spin");
    c->timeout_s = t && atof(t) > 0 ? atof(t) : 120.0;
    /* Heartbeats from the start, so a rank lost while loading is noticed. */
    if (provided >= MPI_THREAD_MULTIPLE) {
        char sub[128];
        if (!cl_hb_start(c, sub, sizeof sub)) fprintf(stderr, "moe: rank %d: %s; no failure detection\n", c->rank, sub);
    } else if (c->rank == 0) {
        fprintf(stderr, "moe: MPI has no MPI_THREAD_MULTIPLE: no heartbeats, only wait timeouts\n");
    }

    hw_info me;
    hw_probe(&me);
    plan_hw *hw = calloc((size_t)c->size, sizeof *hw);
    int *pids = calloc((size_t)c->size, sizeof *pids);
    if (!hw || !pids) abort();
    gather_hw(c, &me, hw, pids);

    /* Plan on rank 0, then one broadcast: length (negative: failed) and the protobuf. */
    int n_ctx = o->n_ctx > 0 ? o->n_ctx : 4096;
    int32_t len = -1;
    uint8_t *buf = NULL;
    if (c->rank == 0) {
        moe_plan p;
        if (make_plan(o, hw, c->size, n_ctx, &p, err, errlen)) {
            size_t l;
            if (plan_pack(&p, &buf, &l)) len = (int32_t)l;
            plan_free(&p);
        }
        if (len < 0) cl_hb_stop(c); /* about to stop everyone: do not look dead first */
    }
    free(hw);
    MPI_Bcast(&len, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
    if (len < 0) {
        free(pids);
        if (c->rank != 0) leave(c, 1);
        free(e);
        return NULL; /* err says why; rank 0 prints it */
    }
    if (c->rank != 0) buf = malloc((size_t)len + 1);
    MPI_Bcast(buf, len, MPI_BYTE, 0, MPI_COMM_WORLD);
    char sub[512] = "";
    bool ok = plan_unpack(buf, (size_t)len, &c->plan, sub, sizeof sub);
    free(buf);
    if (ok) cl_hb_set_plan(c, c->rank == 0 ? pids : NULL);
    if (!ok || c->rank != 0) free(pids);
    /* The plan's KV positions are what each stage allocates. */
    if (ok) n_ctx = c->plan.n_ctx;
    ok = ok && cl_rank_init(c, o->model_path, o->n_threads, n_ctx, me.hw.numa_node, sub, sizeof sub);
    if (!ok) fprintf(stderr, "moe: rank %d: %s\n", c->rank, sub);
    int all_ok = ok;
    MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (!all_ok) {
        if (c->rank != 0) leave(c, 1);
        cl_hb_stop(c);
        snprintf(err, errlen, "%s", ok ? "another rank failed to load (see above)" : sub);
        cl_rank_free(c);
        free(e);
        return NULL;
    }
    report_memory(c);
    if (c->rank != 0) {
        cl_serve(c);
        leave(c, 0);
    }
    e->stats = o->stats;
    int workers = 0;
    for (int r = 0; r < c->size; r++) workers += plan_experts_of_rank(&c->plan, r) > 0;
    snprintf(e->desc, sizeof e->desc, "%d ranks (%d stages, %d expert workers), %d threads/rank, %s kernels", c->size,
             c->plan.n_stages, workers, tpool_size(c->tp), kern_path_name(kern_get_path()));
    return e;
}

const moe_model *engine_mpi_model(const engine_mpi *e) { return e->c.model; }
const char *engine_mpi_desc(const engine_mpi *e) { return e->desc; }

/* OUT message: the rows of one unit back from the last stage. */
static void on_out(void *ctx, void *msg) {
    engine_mpi *e = ctx;
    cl_hdr h;
    memcpy(&h, msg, sizeof h);
    const int H = e->c.model->hp.n_embd;
    unit_out *u = h.mb >= 0 && h.mb < e->n_units ? &e->units[h.mb] : NULL;
    if (!u || u->back || h.seq != e->reqs[u->req].seq || h.pos0 != e->reqs[u->req].pos0 + u->row0 || h.n != u->n)
        cl_die(&e->c, "unexpected output rows (unit %d, sequence %d, positions %d+%d)", h.mb, h.seq, h.pos0, h.n);
    memcpy(e->x[u->req] + (size_t)u->row0 * H, cl_rows(msg), sizeof(float) * (size_t)h.n * H);
    u->back = true;
    e->left[u->req]--;
    e->outs--;
    free(msg);
}

/* Rows per micro-batch of an n-token request.  A prompt is cut into at
 * least two micro-batches (one per stage if there are more stages), so
 * stages and workers work on different parts at once; never into 1-row
 * pieces: llama.cpp computes a 1-row product in another order (see
 * kernels/llama_order.h), so such a piece would change the bits.
 * MOE_MICROBATCH sets the rows (at least 2). */
static int microbatch_rows(int n, int n_stages) {
    const char *env = getenv("MOE_MICROBATCH");
    int per = env && atoi(env) > 0 ? atoi(env) : 0;
    if (!per) {
        int parts = n_stages > 2 ? n_stages : 2;
        per = (n + parts - 1) / parts;
    }
    return per < 2 ? 2 : per;
}

static bool check_reqs(engine_mpi *e, int n_req, const engine_req *r, char *err, size_t errlen) {
    return engine_check_reqs(n_req, r, CL_MAX_SEQ, e->c.model->hp.n_vocab, e->c.n_ctx, e->held, err, errlen);
}

/* Output head of request i, as one process computes it. */
static void output_head(engine_mpi *e, int i) {
    const engine_req *r = &e->reqs[i];
    const moe_model *m = e->c.model;
    cl_doing(&e->c, "coordinator: output head of sequence %d", r->seq);
    if (r->logits) {
        if (r->all_rows) moe_output(m, e->x[i], r->n, r->logits, e->c.tp);
        else moe_output(m, e->x[i] + (size_t)(r->n - 1) * m->hp.n_embd, 1, r->logits, e->c.tp);
    }
    e->left[i] = -1;
}

bool engine_mpi_forward_batch(engine_mpi *e, int n_req, const engine_req *reqs, char *err, size_t errlen) {
    cl_rank *c = &e->c;
    const moe_model *m = c->model;
    const int H = m->hp.n_embd;
    if (!check_reqs(e, n_req, reqs, err, errlen)) return false;
    e->reqs = reqs;
    e->n_req = n_req;
    e->x = calloc((size_t)n_req, sizeof *e->x);
    e->left = calloc((size_t)n_req, sizeof *e->left);
    int cap = 0;
    for (int i = 0; i < n_req; i++) cap += (reqs[i].n + 1) / 2;
    e->units = calloc((size_t)cap, sizeof *e->units);
    if (!e->x || !e->left || !e->units) abort();
    e->n_units = 0;
    for (int i = 0; i < n_req; i++) {
        e->x[i] = malloc(sizeof(float) * (size_t)reqs[i].n * H);
        if (!e->x[i]) abort();
        moe_embed(m, reqs[i].tokens, reqs[i].n, e->x[i]);
        const int per = microbatch_rows(reqs[i].n, c->plan.n_stages);
        for (int i0 = 0; i0 < reqs[i].n;) {
            int rows = reqs[i].n - i0 < per ? reqs[i].n - i0 : per;
            if (reqs[i].n - i0 - rows == 1) rows++; /* no 1-row tail */
            e->units[e->n_units++] = (unit_out){.req = i, .row0 = i0, .n = rows};
            e->left[i]++;
            i0 += rows;
        }
    }
    /* Every unit goes to stage 0 now, in request order; the stages keep
     * as many in flight as they can. */
    c->on_out = on_out;
    c->out_ctx = e;
    for (int k = 0; k < e->n_units; k++) {
        const unit_out *u = &e->units[k];
        const engine_req *r = &reqs[u->req];
        cl_hdr h = {.stage = 0, .seq = r->seq, .pos0 = r->pos0 + u->row0, .n = u->n, .mb = k};
        size_t bytes = sizeof(float) * (size_t)u->n * H;
        void *msg = cl_msg(&h, bytes);
        memcpy(cl_rows(msg), e->x[u->req] + (size_t)u->row0 * H, bytes);
        cl_post(c, c->plan.stage_rank[0], CL_TAG_STAGE, msg, sizeof h + bytes);
    }
    e->outs = e->n_units;
    cl_doing(c, "coordinator: waiting for %d units of %d sequences", e->outs, n_req);
    double last = cl_now();
    int polls = 0, outs = e->outs, heads = 0;
    while (heads < n_req) {
        if (cl_serve_one(c)) polls = 0;
        else cl_idle(c, &polls);
        if (e->outs != outs) {
            outs = e->outs, last = cl_now();
            /* a request whose rows are all back: its head now, while the
             * others are still in the pipeline */
            for (int i = 0; i < n_req; i++)
                if (!e->left[i]) output_head(e, i), heads++;
            cl_doing(c, "coordinator: waiting for %d units of %d sequences", e->outs, n_req);
        }
        if (cl_now() - last > c->timeout_s)
            cl_die(c, "no output from the last stage (rank %d) for %.0f s", c->plan.stage_rank[c->plan.n_stages - 1],
                   c->timeout_s);
    }
    for (int i = 0; i < n_req; i++) {
        e->held[reqs[i].seq] = reqs[i].pos0 + reqs[i].n;
        free(e->x[i]);
    }
    free(e->x), free(e->left), free(e->units);
    e->x = NULL, e->left = NULL, e->units = NULL, e->reqs = NULL;
    e->n_units = e->n_req = 0;
    cl_doing(c, "coordinator: idle");
    return true;
}

bool engine_mpi_forward(engine_mpi *e, int seq, const int *tokens, int n, int pos0, float *logits, bool all_rows,
                        char *err, size_t errlen) {
    engine_req r = {.seq = seq, .tokens = tokens, .n = n, .pos0 = pos0, .logits = logits, .all_rows = all_rows};
    return engine_mpi_forward_batch(e, 1, &r, err, errlen);
}

void engine_mpi_reset(engine_mpi *e, int seq) {
    if (seq < 0 || seq >= CL_MAX_SEQ) return;
    cl_hdr h = {.stage = 0, .seq = seq, .n = 0};
    cl_post(&e->c, e->c.plan.stage_rank[0], CL_TAG_STAGE, cl_msg(&h, 0), sizeof h);
    e->held[seq] = 0;
}

static void send_ctrl(cl_rank *c, int r, Moe__Control__Kind kind) {
    Moe__Control m = MOE__CONTROL__INIT;
    m.kind = kind;
    size_t len = moe__control__get_packed_size(&m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) abort();
    moe__control__pack(&m, buf);
    cl_post(c, r, CL_TAG_CTRL, buf, len);
}

/* --stats: every rank's counters, gathered over the control plane. */
typedef struct stats_sum {
    int got;                 /* ranks heard from */
    int L, E;
    uint64_t *hits;          /* [L * E] summed expert hits */
    uint64_t steps, wire, rows, overlapped;
    int max_inflight;
    double compute, comm, wait;
    bool print;              /* print each rank's line */
} stats_sum;

static void on_stats(void *ctx, void *msg, int len) {
    stats_sum *t = ((engine_mpi *)ctx)->sum;
    Moe__RankStats *s = moe__rank_stats__unpack(NULL, (size_t)len, msg);
    free(msg);
    t->got++;
    if (!s) return;
    if (t->print)
        fprintf(stderr, "stats: %4u  %6llu  %11llu  %6.2f  %6.2f  %6.2f  %5.2f  %8.2f  %8.2f  %7.1f\n", s->rank,
            (unsigned long long)s->tokens, (unsigned long long)s->expert_rows, s->busy_s, s->comm_s, s->wait_s,
            s->cpu_s, (double)s->bytes_sent / 1048576.0, (double)s->bytes_recv / 1048576.0, (double)s->rss / 1048576.0);
    for (size_t i = 0; i < s->n_expert_hits && i < (size_t)t->L * t->E; i++) t->hits[i] += s->expert_hits[i];
    t->steps += s->moe_steps, t->compute += s->moe_compute_s, t->comm += s->moe_comm_s, t->wait += s->moe_wait_s;
    t->wire += s->moe_wire_bytes, t->rows += s->moe_rows, t->overlapped += s->overlapped;
    if ((int)s->max_inflight > t->max_inflight) t->max_inflight = (int)s->max_inflight;
    moe__rank_stats__free_unpacked(s, NULL);
}

/* Asks every rank for its counters and sums them into t (rank lines are
 * printed when print is set). */
static void gather_stats(engine_mpi *e, stats_sum *t, bool print) {
    cl_rank *c = &e->c;
    memset(t, 0, sizeof *t);
    t->L = c->plan.n_layer, t->E = c->plan.n_expert;
    t->print = print;
    t->hits = calloc((size_t)t->L * t->E + 1, sizeof *t->hits);
    if (!t->hits) abort();
    e->sum = t;
    c->on_stats = on_stats;
    c->out_ctx = e;
    if (print) fprintf(stderr, "stats: rank  tokens  expert-rows  busy-s  comm-s  wait-s  cpu-s  sent-MiB  recv-MiB  rss-MiB\n");
    for (int r = 0; r < c->size; r++) send_ctrl(c, r, MOE__CONTROL__KIND__STATS);
    double t0 = cl_now();
    int polls = 0;
    while (t->got < c->size) {
        if (!cl_serve_one(c)) cl_idle(c, &polls);
        if (cl_now() - t0 > c->timeout_s) cl_die(c, "stats: only %d of %d ranks answered", t->got, c->size);
    }
    e->sum = NULL;
}

bool engine_mpi_summary_get(engine_mpi *e, engine_mpi_summary *s) {
    stats_sum t;
    gather_stats(e, &t, false);
    free(t.hits);
    *s = (engine_mpi_summary){.moe_steps = t.steps, .compute_s = t.compute, .comm_s = t.comm, .wait_s = t.wait,
                              .wire_bytes = t.wire, .rows = t.rows, .overlapped = t.overlapped,
                              .max_inflight = t.max_inflight};
    return true;
}

static void print_stats(engine_mpi *e) {
    stats_sum t;
    gather_stats(e, &t, true);
    if (t.steps)
        fprintf(stderr,
                "stats: %llu MoE layer steps: %.3f ms compute, %.3f ms messaging, %.3f ms waiting per step; "
                "%.0f bytes on the wire per token per MoE layer\n",
                (unsigned long long)t.steps, 1e3 * t.compute / (double)t.steps, 1e3 * t.comm / (double)t.steps,
                1e3 * t.wait / (double)t.steps, t.rows ? (double)t.wire / (double)t.rows : 0.0);
    if (t.steps)
        fprintf(stderr,
                "stats: pipelining: %llu stage attention steps overlapped another unit's experts; "
                "at most %d units in flight on a rank\n",
                (unsigned long long)t.overlapped, t.max_inflight);
    /* Expert hit counts per layer: the data for hot-expert replication. */
    for (int l = 0; l < t.L; l++) {
        uint64_t tot = 0;
        for (int x = 0; x < t.E; x++) tot += t.hits[(size_t)l * t.E + x];
        if (!tot) continue;
        fprintf(stderr, "stats: layer %d expert hits:", l);
        for (int x = 0; x < t.E; x++) fprintf(stderr, " %llu", (unsigned long long)t.hits[(size_t)l * t.E + x]);
        fprintf(stderr, "\n");
    }
    free(t.hits);
}

void engine_mpi_close(engine_mpi *e) {
    if (!e) return;
    cl_rank *c = &e->c;
    if (e->stats) print_stats(e);
    cl_hb_stop(c); /* before shutting the others down, so nobody looks dead */
    for (int r = 1; r < c->size; r++) send_ctrl(c, r, MOE__CONTROL__KIND__SHUTDOWN);
    double t0 = cl_now();
    int polls = 0;
    while (c->n_sends && cl_now() - t0 < c->timeout_s) cl_idle(c, &polls);
    cl_rank_free(c);
    free(e);
    MPI_Finalize();
}
