/* One MPI rank of the cluster: its roles from the plan and the loop that
 * serves them.
 *
 * Data path of one unit (a micro-batch of a prompt or a decode token: rows
 * of one sequence):
 *   rank 0: embed  --STAGE-->  stage 0 rank: attention, router, shared FFN
 *     --EXP_REQ--> each worker owning a chosen expert (one message per
 *     worker per layer step: its tokens' rows once, plus (row, expert)
 *     pairs)  --EXP_RES--> the stage: combine in slot order, next layer ...
 *   --STAGE--> next stage ...  --OUT--> rank 0: output head.
 * Hidden states travel as f32, so every unit sees exactly the rows it
 * would see in one process and the logits are bitwise the same.
 *
 * Many units are in flight at once (several sequences of a batch, the
 * micro-batches of a prompt).  A stage keeps a small state machine per
 * unit (stage.c): while the workers compute unit A's experts of layer L,
 * it runs attention and router of unit B; a unit waits only for what it
 * needs (its own answers; for attention, the earlier units of its
 * sequence, whose KV rows it reads).  Each unit's arithmetic is the same
 * whatever the timing, so the bits do not depend on it.
 *
 * Messages are one MPI_BYTE buffer: a cl_hdr, then payload.  Nothing
 * blocks: the serve loop polls (MPI_Iprobe/Test) and sleeps between polls
 * unless MOE_WAIT=spin; every wait has a timeout and a heartbeat thread
 * catches ranks that die or stop answering (cluster_hb.c). */
#ifndef MOE_CLUSTER_H
#define MOE_CLUSTER_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#include "expert_store.h"
#include "forward.h"
#include "model.h"
#include "plan.h"
#include "threadpool.h"

#define CL_MAX_SEQ 256

/* Tags on the data communicator. */
enum cl_tag {
    CL_TAG_STAGE = 1,   /* hidden states (or a reset) into a stage */
    CL_TAG_OUT = 2,     /* last stage -> rank 0 */
    CL_TAG_EXP_REQ = 3, /* stage -> worker: rows and (row, expert) pairs */
    CL_TAG_CTRL = 5,    /* rank 0 -> all: protobuf Control */
    CL_TAG_STATS = 6,   /* all -> rank 0: protobuf RankStats */
    /* worker -> stage: one output row per pair, on the tag the request
     * names (CL_TAG_EXP_RES + slot of the waiting unit), so answers to
     * several units in flight can never be mixed up */
    CL_TAG_EXP_RES = 64,
};

/* Reply slots per rank: units of its stages waiting for experts at once
 * (a unit that finds none free waits for one; tags stay far below the
 * MPI minimum of 32767). */
#define CL_MAX_SLOTS 4096

/* Header of every data message (int32 fields, 48 bytes so the f32
 * payload after it stays 16-byte aligned in a malloc'd buffer). */
typedef struct cl_hdr {
    int32_t stage;   /* STAGE: stage to run */
    int32_t seq;     /* sequence */
    int32_t pos0;    /* first position of the rows */
    int32_t n;       /* rows (tokens); STAGE with n == 0: reset seq */
    int32_t mb;      /* unit index within the forward call (rank 0 places OUT rows by it) */
    int32_t layer;   /* EXP_*: layer */
    int32_t n_pairs; /* EXP_*: (row, expert) pairs */
    int32_t reply;   /* EXP_REQ: tag to answer on */
    int32_t pad[4];
} cl_hdr;

typedef struct cl_stats {
    uint64_t tokens;         /* rows its stages ran */
    uint64_t expert_rows;    /* rows its experts ran */
    uint64_t *hits;          /* [n_layer * n_expert] rows per owned expert */
    uint64_t bytes_sent, bytes_recv;
    double busy_s, comm_s, wait_s; /* computing, messaging, waiting */
    /* MoE layer steps run by its stages, split by where the time went. */
    uint64_t moe_steps;
    double moe_compute_s, moe_comm_s, moe_wait_s;
    uint64_t moe_wire_bytes; /* bytes sent + received by those steps */
    uint64_t moe_rows;       /* token rows through those steps */
    uint64_t overlapped;     /* attention steps run while another unit was out at the workers */
    int max_inflight;        /* most units in flight on its stages at once */
} cl_stats;

/* A send in flight (buffer freed when it completes). */
typedef struct cl_send {
    MPI_Request req;
    void *buf;
    int peer;
} cl_send;

struct cl_hb;
typedef struct cl_unit cl_unit; /* a unit in flight on a stage (stage.c) */

typedef struct cl_rank {
    int rank, size;
    MPI_Comm comm;           /* data path (a dup of COMM_WORLD) */
    moe_plan plan;
    moe_model *model;        /* tensors bound from the mapping; only owned ones are touched */
    expert_store store;      /* owned experts, node-local */
    tpool *tp;
    int n_ctx;               /* KV positions per sequence */
    moe_kvcache **kv;        /* [n_stages * CL_MAX_SEQ], created on first use (own stages only) */
    int *kv_pos;             /* [n_stages * CL_MAX_SEQ] positions held once the accepted units are done */
    cl_unit **units;         /* units in flight on its stages, in arrival order */
    int n_units, cap_units;
    int max_active;          /* units a stage works on at once (MOE_STAGE_INFLIGHT; 0: no limit) */
    unsigned char *slot_used;/* [CL_MAX_SLOTS] reply slots held by units waiting for experts */
    bool spin;               /* wait policy: poll without sleeping */
    double timeout_s;        /* longest wait for one answer */
    cl_send *sends;          /* sends in flight */
    int n_sends, cap_sends;
    cl_stats st;
    struct cl_hb *hb;        /* heartbeat thread */
    bool quit;               /* SHUTDOWN received */
    /* Rank 0: where OUT and STATS messages go (they take the buffer). */
    void (*on_out)(void *ctx, void *msg);
    void (*on_stats)(void *ctx, void *msg, int len);
    void *out_ctx;
} cl_rank;

/* Sets up rank c from a broadcast plan: loads the model (mapping only),
 * copies owned experts node-locally, creates the thread pool. */
bool cl_rank_init(cl_rank *c, const char *model_path, int n_threads, int n_ctx, int numa_node, char *err,
                  size_t errlen);
void cl_rank_free(cl_rank *c);

/* Does one thing: handles one waiting message (any tag, in arrival order
 * per sender) or else moves one stage unit on.  False: nothing to do. */
bool cl_serve_one(cl_rank *c);
/* Serves until SHUTDOWN (ranks other than 0). */
void cl_serve(cl_rank *c);

/* Posts a message (header + payload) without waiting; takes buf. */
void cl_post(cl_rank *c, int peer, int tag, void *buf, size_t len);
/* Allocates a message buffer with room for payload bytes after the header. */
void *cl_msg(const cl_hdr *h, size_t payload);
static inline float *cl_rows(void *msg) { return (float *)((char *)msg + sizeof(cl_hdr)); }

/* After cl_serve_one found nothing: completes sends and sleeps a little
 * unless spinning (counted as waiting for workers if a unit is). */
void cl_idle(cl_rank *c, int *polls);
/* Fatal error: prints "moe: rank R: ..." and aborts the whole job. */
void cl_die(cl_rank *c, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
double cl_now(void);
/* Checks an MPI return code; on failure dies naming the peer. */
void cl_check_mpi(cl_rank *c, int rc, int peer, const char *what);

/* out[j] = expert pairs[j].e of layer il on row pairs[j].row of rows
 * (row, expert pairs as int32 [n_pairs][2]); each expert runs once over
 * its rows. */
void cl_run_experts(cl_rank *c, int il, const float *rows, const int32_t *pairs, int n_pairs, float *out);

/* Stage units (stage.c).  cl_stage_accept checks a STAGE message and
 * queues it (takes msg); cl_stage_step does one step of one unit (false:
 * none can move); cl_stage_waiting says whether a unit waits for experts. */
void cl_stage_accept(cl_rank *c, void *msg, int len, int src);
bool cl_stage_step(cl_rank *c);
bool cl_stage_waiting(const cl_rank *c);
void cl_stage_free(cl_rank *c);

/* What this rank is doing, for failure messages (thread-safe). */
void cl_doing(cl_rank *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Heartbeat thread (cluster_hb.c): every rank tells rank 0 it is alive
 * and what it is doing; rank 0 answers.  A rank silent for longer than
 * MOE_DEAD_S (default 4 s) makes the observer print who and what, and
 * abort the job. */
bool cl_hb_start(cl_rank *c, char *err, size_t errlen);
void cl_hb_stop(cl_rank *c);
/* After the plan arrives: roles (and on rank 0 the ranks' pids, taken) for failure messages. */
void cl_hb_set_plan(cl_rank *c, int *pids);

#endif
