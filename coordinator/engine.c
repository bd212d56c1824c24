/* The single-process engine: the whole model in this process, one KV cache
 * per sequence, the forward pass of moe/forward.c. */
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
    char desc[128];
    engine_mpi *mpi;                    /* under mpirun: the cluster does the work (engine_mpi.c) */
};

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
}

bool engine_forward(engine *e, int seq, const int *tokens, int n, int pos0, float *logits, bool all_rows,
                    char *err, size_t errlen) {
    if (e->mpi) return engine_mpi_forward(e->mpi, seq, tokens, n, pos0, logits, all_rows, err, errlen);
    const moe_hparams *hp = &e->model->hp;
    if (seq < 0 || seq >= ENGINE_MAX_SEQ) {
        snprintf(err, errlen, "sequence id %d out of range [0, %d)", seq, ENGINE_MAX_SEQ);
        return false;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab) {
            snprintf(err, errlen, "token id %d at index %d is outside the vocabulary [0, %d)", tokens[i], i,
                     hp->n_vocab);
            return false;
        }
    if (pos0 + n > e->n_ctx) {
        snprintf(err, errlen, "context full: %d positions requested, the cache holds %d", pos0 + n, e->n_ctx);
        return false;
    }
    if (!e->seq[seq]) {
        e->seq[seq] = moe_kvcache_new(hp, 0, hp->n_layer, e->n_ctx);
        if (!e->seq[seq]) {
            snprintf(err, errlen, "out of memory for the KV cache (%d positions)", e->n_ctx);
            return false;
        }
    }
    if (!moe_forward_local(e->model, e->seq[seq], tokens, n, pos0, logits, !all_rows, e->tp)) {
        snprintf(err, errlen, "forward pass failed");
        return false;
    }
    return true;
}
