/* The engine as the coordinator's commands see it: a model that turns token
 * ids at given positions into logits.  One implementation runs everything
 * in this process; under mpirun (more than one rank) the same calls drive
 * the layer stages and expert workers of the cluster.
 *
 * Collective open: every rank calls engine_open with the same options.
 * Rank 0 gets an engine and carries on with its command; every other rank
 * serves the coordinator inside engine_open until shutdown and then exits
 * the process (it never returns). */
#ifndef MOE_ENGINE_H
#define MOE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "model.h"
#include "threadpool.h"

typedef struct engine_opts {
    const char *model_path;
    int n_threads;        /* <= 0: physical cores of this rank's binding */
    int n_ctx;            /* KV cache positions per sequence (<= 0: 4096, capped at n_ctx_train) */
    const char *plan_path;/* cluster plan file (NULL: computed) */
    int n_stages;         /* cluster: layer stages wanted (<= 0: automatic) */
    bool stats;           /* print per-rank stats at close */
} engine_opts;

typedef struct engine engine;

engine *engine_open(const engine_opts *o, char *err, size_t errlen);
/* Releases everything; in a cluster, also tells every rank to shut down. */
void engine_close(engine *e);

/* Model metadata (hyperparameters, GGUF metadata for the tokenizer).  On
 * the coordinator of a cluster, tensors it does not own are not touched. */
const moe_model *engine_model(const engine *e);
const char *engine_desc(const engine *e); /* e.g. "1 process, 2 threads, avx512" */

/* Runs tokens[0..n) of sequence seq at positions pos0..pos0+n-1 (the
 * sequence's cache must hold exactly pos0 positions).  logits: n x V rows
 * (all_rows) or 1 x V for the last token; may be NULL.  Returns false and
 * an error message on failure (bad token id, context full, dead rank). */
bool engine_forward(engine *e, int seq, const int *tokens, int n, int pos0, float *logits,
                    bool all_rows, char *err, size_t errlen);
/* Forgets the cached positions of a sequence. */
void engine_reset(engine *e, int seq);

#endif
