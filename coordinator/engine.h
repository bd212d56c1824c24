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

/* One request of a batch: the next tokens of one sequence. */
typedef struct engine_req {
    int seq;           /* sequence id, at most once per batch */
    const int *tokens; /* [n] token ids */
    int n;             /* tokens, >= 1 */
    int pos0;          /* first position: the sequence's cache must hold exactly pos0 positions */
    float *logits;     /* out: [n][V] (all_rows) or [1][V] for the last token; may be NULL */
    bool all_rows;     /* logits of every row, or only of the last */
} engine_req;

/* Runs several sequences at once: a decode step of many concurrent
 * sequences, several prompts, or a mix.  Each request's logits are
 * bitwise what engine_forward gives for it alone: sequences never share
 * an operation whose float order depends on its row count (attention,
 * router, shared and dense FFN, output head run per request); only the
 * routed experts (llama.cpp's mul_mat_id, row-independent) see rows of
 * several sequences.  All requests are checked before any runs. */
bool engine_forward_batch(engine *e, int n_req, const engine_req *reqs, char *err, size_t errlen);

/* Forgets the cached positions of a sequence. */
void engine_reset(engine *e, int seq);

/* Validates a batch against a sequence limit, the vocabulary, the context
 * size and the positions each sequence's cache holds (held[max_seq]);
 * shared by the single-process and cluster engines. */
bool engine_check_reqs(int n_req, const engine_req *r, int max_seq, int n_vocab, int n_ctx, const int *held,
                       char *err, size_t errlen);

#endif
