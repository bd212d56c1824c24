/* The cluster plan: which rank does what.
 *
 *   rank 0          coordinator (tokens, embedding, output head, sampling)
 *   stage ranks     contiguous layer ranges: attention + KV cache, router,
 *                   shared expert, dense FFN
 *   expert workers  routed experts: any set of (layer, expert) pairs
 * A rank may hold several roles (with one rank it holds them all).
 *
 * The planner works from sizes alone (plan_model, read from a GGUF header
 * without touching tensor data), so it can plan a 671B model on a laptop.
 * Stages are contiguous layer ranges balanced by bytes; every routed expert
 * gets exactly one owner, spread so each worker's bytes over its memory
 * capacity come out about equal.
 *
 * Three forms of a plan: this struct; the protobuf Plan message (the wire
 * form rank 0 broadcasts, proto/plan.proto); and a line-oriented text file
 * for hand editing (`moe plan` prints it, `--plan FILE` reads it):
 *
 *   # comment
 *   ranks 4                      world size the plan is for
 *   ctx 4096 seqs 1              KV positions per sequence, sequences
 *   stage 0 rank 0 layers 0-1    stage 0 runs layers 0..1 on rank 0
 *   experts rank 2 layers 1-3 ids 0-7   experts 0..7 of layers 1..3
 *   memory 1 512G                optional: rank 1 may use 512 GiB
 *
 * Ranges are inclusive "a-b" or a single number; `layers all` and
 * `ids all` cover everything.  Stages must be listed in layer order and
 * cover every layer exactly once; experts lines must cover every
 * (MoE layer, expert) exactly once. */
#ifndef MOE_PLAN_H
#define MOE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gguf.h"

/* What the planner needs to know about a model: bytes per piece. */
typedef struct plan_model {
    int n_layer;
    int n_expert;            /* routed experts per MoE layer */
    int n_expert_used;       /* top-k */
    int n_dense_lead;        /* layers [0, n_dense_lead) are dense */
    int n_embd;              /* hidden size H (activation row = 4H bytes) */
    int n_ctx_train;
    uint64_t coord_bytes;    /* token_embd + output_norm + output */
    uint64_t *layer_bytes;   /* [n_layer] stage weights of each layer (all but routed experts) */
    uint64_t *expert_bytes;  /* [n_layer] bytes of one routed expert (gate+up+down); 0 if dense */
    uint64_t kv_bytes_pos;   /* KV cache bytes per layer per position per sequence */
    uint64_t total_bytes;    /* all tensor bytes */
} plan_model;

/* Hardware of one rank, as gathered at startup (or given offline). */
typedef struct plan_hw {
    char host[64];           /* host name, "" offline */
    int numa_node;           /* NUMA node of its binding, -1 if none/several */
    int n_cores;             /* physical cores in its binding */
    uint64_t mem_capacity;   /* bytes it may use */
} plan_hw;

/* Per-rank estimate of resident bytes, by role. */
typedef struct plan_rank {
    plan_hw hw;
    uint64_t mem_coord;      /* embedding and output head (rank 0) */
    uint64_t mem_stage;      /* stage weights */
    uint64_t mem_kv;         /* KV cache of its stages */
    uint64_t mem_experts;    /* routed experts it owns */
} plan_rank;

typedef struct moe_plan {
    int n_ranks;             /* world size */
    int n_layer, n_expert, n_dense_lead; /* model identity */
    int n_ctx;               /* KV positions per sequence */
    int n_seq;               /* sequences provided for */
    int n_stages;
    int *stage_rank;         /* [n_stages] rank running each stage */
    int *stage_layer0;       /* [n_stages + 1] stage s runs layers [l0[s], l0[s+1]) */
    int *owner;              /* [n_layer * n_expert] rank owning expert e of layer l; -1 on dense layers */
    plan_rank *ranks;        /* [n_ranks] */
} moe_plan;

/* Options of the planner. */
typedef struct plan_opts {
    int n_ranks;
    int n_stages;            /* <= 0: as few as fit memory */
    int n_ctx;               /* KV positions per sequence */
    int n_seq;               /* sequences (KV caches) per stage */
    const int *stage_ranks;  /* [n_stages] or NULL: stage s on rank s */
    const bool *is_worker;   /* [n_ranks] or NULL: every rank is a worker */
} plan_opts;

/* Runtime overhead reserved per rank on top of the weights (buffers). */
#define PLAN_RANK_OVERHEAD ((uint64_t)64 << 20)

/* Sizes from a GGUF header (tensor data is not read). */
bool plan_model_from_gguf(const gguf_file *g, plan_model *pm, char *err, size_t errlen);
void plan_model_free(plan_model *pm);

/* Computes a plan for hw[0..o->n_ranks).  Fails (with a message) if the
 * options are inconsistent or the model does not fit the ranks' memory. */
bool plan_compute(const plan_model *pm, const plan_hw *hw, const plan_opts *o, moe_plan *p,
                  char *err, size_t errlen);

/* Checks a plan (from a file or the wire) against a model and world size:
 * coverage, ranks in range, then refills the memory estimates and checks
 * every rank's total against its capacity. */
bool plan_validate(moe_plan *p, const plan_model *pm, int n_ranks, char *err, size_t errlen);

/* Estimated resident bytes of rank r (all roles plus overhead). */
uint64_t plan_rank_total(const moe_plan *p, int r);

/* Roles of rank r. */
int plan_stage_of_rank(const moe_plan *p, int r, int from); /* next stage >= from on r, -1 if none */
int plan_stage_of_layer(const moe_plan *p, int layer);
int plan_experts_of_rank(const moe_plan *p, int r);         /* (layer, expert) pairs owned */
/* "coordinator, stage 1 (layers 4-7), 12 experts" */
void plan_describe_rank(const moe_plan *p, int r, char *buf, size_t len);

bool plan_alloc(moe_plan *p, int n_ranks, int n_stages, int n_layer, int n_expert);
void plan_free(moe_plan *p);

/* Text form.  plan_write_text adds comment lines with per-rank memory. */
void plan_write_text(const moe_plan *p, const plan_model *pm, FILE *out);
bool plan_read_text(const char *path, const plan_model *pm, moe_plan *p, char *err, size_t errlen);

/* Wire form (protobuf Plan).  plan_pack mallocs *buf. */
bool plan_pack(const moe_plan *p, uint8_t **buf, size_t *len);
bool plan_unpack(const uint8_t *buf, size_t len, moe_plan *p, char *err, size_t errlen);

/* "512G", "1.5T", "300M", plain bytes -> bytes; false on junk. */
bool plan_parse_size(const char *s, uint64_t *out);
/* Bytes as "12.3 GiB". */
const char *plan_fmt_bytes(uint64_t b, char *buf, size_t len);

#endif
