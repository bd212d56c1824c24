/* Node-local expert copies: reserve, bind, pread owned slices. */
#include "expert_store.h"

#include <errno.h>
#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static bool fail(char *err, size_t errlen, const char *msg, const char *name) {
    snprintf(err, errlen, "%s%s%s", msg, name ? ": " : "", name ? name : "");
    return false;
}

/* Reads len bytes at off of fd into dst (pread may return short counts). */
static bool read_full(int fd, void *dst, size_t len, uint64_t off) {
    uint8_t *d = dst;
    while (len) {
        ssize_t r = pread(fd, d, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        d += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return true;
}

bool expert_store_build(expert_store *s, const moe_model *m, const moe_plan *p, int rank, int numa_node,
                        char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    const int L = m->hp.n_layer, E = m->hp.n_expert;
    s->view = *m;
    s->numa_node = numa_node >= 0 && numa_available() >= 0 ? numa_node : -1;
    s->layers = malloc(sizeof *s->layers * (size_t)(L > 0 ? L : 1));
    s->tensors = calloc((size_t)L * 3 + 1, sizeof *s->tensors);
    s->regions = calloc((size_t)L * 3 + 1, sizeof *s->regions);
    s->region_bytes = calloc((size_t)L * 3 + 1, sizeof *s->region_bytes);
    if (!s->layers || !s->tensors || !s->regions || !s->region_bytes) {
        expert_store_free(s);
        return fail(err, errlen, "out of memory", NULL);
    }
    memcpy(s->layers, m->layers, sizeof *s->layers * (size_t)L);
    s->view.layers = s->layers;
    int *fds = calloc((size_t)gguf_n_parts(m->gguf) + 1, sizeof *fds);
    if (!fds) {
        expert_store_free(s);
        return fail(err, errlen, "out of memory", NULL);
    }
    for (int i = 0; i < gguf_n_parts(m->gguf); i++) fds[i] = -1;
    bool ok = true;
    for (int il = 0; il < L && ok; il++) {
        moe_layer *l = &s->layers[il];
        if (!l->is_moe) continue;
        bool owns = false;
        for (int e = 0; e < E; e++) owns |= p->owner[(size_t)il * E + e] == rank;
        if (!owns) continue;
        const gguf_tensor **slot[3] = {&l->gate_exps, &l->up_exps, &l->down_exps};
        for (int k = 0; k < 3 && ok; k++) {
            const gguf_tensor *t = *slot[k];
            size_t idx = (size_t)il * 3 + k;
            if (t->part < 0 || t->part >= gguf_n_parts(m->gguf)) {
                ok = fail(err, errlen, "expert tensor is not backed by the file", t->name);
                break;
            }
            size_t bytes = (size_t)t->nbytes;
            void *r = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (r == MAP_FAILED) {
                ok = fail(err, errlen, "cannot reserve address space for expert tensor", t->name);
                break;
            }
            s->regions[idx] = r;
            s->region_bytes[idx] = bytes;
            /* Bind before the first touch, so every page is allocated on the node. */
            if (s->numa_node >= 0) numa_tonode_memory(r, bytes, s->numa_node);
            if (fds[t->part] < 0) {
                fds[t->part] = open(gguf_part_path(m->gguf, t->part), O_RDONLY);
                if (fds[t->part] < 0) {
                    ok = fail(err, errlen, "cannot open model part", gguf_part_path(m->gguf, t->part));
                    break;
                }
            }
            uint64_t slice = moe_expert_bytes(t);
            for (int e = 0; e < E && ok; e++) {
                if (p->owner[(size_t)il * E + e] != rank) continue;
                if (!read_full(fds[t->part], (uint8_t *)r + slice * (uint64_t)e, (size_t)slice,
                               t->offset + slice * (uint64_t)e))
                    ok = fail(err, errlen, "cannot read expert slice of", t->name);
                s->bytes += slice;
            }
            s->tensors[idx] = *t;
            s->tensors[idx].data = r;
            *slot[k] = &s->tensors[idx];
        }
    }
    for (int i = 0; i < gguf_n_parts(m->gguf); i++)
        if (fds[i] >= 0) {
            /* The copies are what we compute from: let the kernel drop the file's cached pages. */
            posix_fadvise(fds[i], 0, 0, POSIX_FADV_DONTNEED);
            close(fds[i]);
        }
    free(fds);
    if (!ok) expert_store_free(s);
    return ok;
}

void expert_store_free(expert_store *s) {
    if (s->regions)
        for (int i = 0; i < s->view.hp.n_layer * 3; i++)
            if (s->regions[i]) munmap(s->regions[i], s->region_bytes[i]);
    free(s->regions);
    free(s->region_bytes);
    free(s->tensors);
    free(s->layers);
    memset(s, 0, sizeof *s);
}
