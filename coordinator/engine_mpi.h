/* The engine under mpirun (world size > 1): rank 0 is the coordinator,
 * the other ranks serve their stages and experts (worker/cluster.h).
 * engine.c dispatches here when engine_mpi_wanted(). */
#ifndef MOE_ENGINE_MPI_H
#define MOE_ENGINE_MPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct engine_mpi engine_mpi;

/* True when launched by mpirun (or another PMI launcher) with more than
 * one rank.  A plain `moe` never initializes MPI. */
bool engine_mpi_wanted(void);

/* Collective: MPI init, hardware gather, plan (computed or --plan FILE,
 * rejected before any weight is loaded if it does not fit), broadcast,
 * per-rank loading and the resident memory report.  Ranks other than 0
 * serve until shutdown and exit here. */
engine_mpi *engine_mpi_open(const engine_opts *o, char *err, size_t errlen);
void engine_mpi_close(engine_mpi *e);
const moe_model *engine_mpi_model(const engine_mpi *e);
const char *engine_mpi_desc(const engine_mpi *e);
bool engine_mpi_forward(engine_mpi *e, int seq, const int *tokens, int n, int pos0, float *logits, bool all_rows,
                        char *err, size_t errlen);
/* engine_forward_batch in the cluster: every unit (a decode token, or a
 * micro-batch of >= 2 rows of a prompt) goes to stage 0 at once and the
 * stages keep them all in flight (worker/stage.c). */
bool engine_mpi_forward_batch(engine_mpi *e, int n_req, const engine_req *reqs, char *err, size_t errlen);
void engine_mpi_reset(engine_mpi *e, int seq);

/* Cluster-wide MoE step counters since start-up (asks every rank). */
typedef struct engine_mpi_summary {
    uint64_t moe_steps;      /* MoE layer steps run by the stages */
    double compute_s;        /* their time computing (router, own/shared experts, combine) */
    double comm_s;           /* packing, posting and unpacking messages */
    double wait_s;           /* waiting for expert workers */
    uint64_t wire_bytes;     /* bytes those steps sent and received */
    uint64_t rows;           /* token rows through those steps */
    uint64_t overlapped;     /* stage attention steps run while another unit was at the workers */
    int max_inflight;        /* most units in flight on one rank's stages */
} engine_mpi_summary;
bool engine_mpi_summary_get(engine_mpi *e, engine_mpi_summary *s);

#endif
