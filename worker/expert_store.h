/* Node-local copies of the routed experts a rank owns.
 *
 * Why copy instead of using the file mapping: pages of a file mapping live
 * in the page cache wherever the kernel first read them, and mbind() does
 * not move page-cache pages, so a worker reading its experts from the
 * mapping may read them across the socket.  Instead each worker reserves
 * address space for each expert tensor it touches (MAP_NORESERVE: nothing
 * is allocated yet), binds that range to its NUMA node with mbind, and
 * pread()s only its own expert slices into it: the first touch happens
 * under the binding, so every owned byte is node-local and no other
 * expert costs memory.  The file's page cache is dropped afterwards.
 *
 * The result is a view of the model (a shallow copy of moe_model whose
 * expert tensors point at the copies), so the unchanged moe_expert_ffn
 * computes from node-local memory. */
#ifndef MOE_EXPERT_STORE_H
#define MOE_EXPERT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "plan.h"

typedef struct expert_store {
    moe_model view;          /* the model with owned experts re-pointed; use for moe_expert_ffn */
    moe_layer *layers;       /* [n_layer] view.layers */
    gguf_tensor *tensors;    /* [n_layer * 3] gate/up/down copies (descriptors) */
    void **regions;          /* [n_layer * 3] reserved ranges (NULL: not owned) */
    size_t *region_bytes;    /* [n_layer * 3] their sizes */
    uint64_t bytes;          /* bytes actually copied (owned slices) */
    int numa_node;           /* node the copies are bound to, -1: not bound */
} expert_store;

/* Copies the experts rank owns in plan p.  numa_node < 0: no binding. */
bool expert_store_build(expert_store *s, const moe_model *m, const moe_plan *p, int rank, int numa_node,
                        char *err, size_t errlen);
void expert_store_free(expert_store *s);

#endif
