/* A pool of worker threads created once per process.  tpool_run() runs a
 * function on every thread (the caller is thread 0) and returns when all
 * are done.  Work is split by the callee from (ith, nth).
 *
 * Threads are pinned with hwloc, one per physical core of the process's
 * binding (what `mpirun --bind-to` gave it), the caller on the first core.
 * Idle workers spin briefly and then sleep, so a pool costs nothing while
 * the process waits for input or for MPI.  tpool_run is not reentrant: one
 * caller at a time, and fn must not call tpool_run on the same pool. */
#ifndef MOE_THREADPOOL_H
#define MOE_THREADPOOL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tpool tpool;
typedef void (*tpool_fn)(void *arg, int ith, int nth);

/* n_threads <= 0: one thread per physical core of this process's binding.
 * Env MOE_PIN=0 turns pinning off.  Never returns NULL: if threads cannot
 * be created the pool is smaller (a warning says so). */
tpool *tpool_create(int n_threads);
void tpool_destroy(tpool *tp);
int tpool_size(const tpool *tp); /* 1 for tp == NULL */
/* tp == NULL runs fn(arg, 0, 1) on the caller. */
void tpool_run(tpool *tp, tpool_fn fn, void *arg);

/* Inside fn: waits until every thread of the run has reached it (a
 * spinning counter barrier; no-op for one thread or tp == NULL). */
void tpool_barrier(tpool *tp);

/* Physical cores in the binding this process started with (>= 1). */
int tpool_default_threads(void);
/* Parses the value of a `-t N` option: an integer 0..1024, 0 meaning the
 * default.  Returns false (and leaves *n alone) for anything else. */
bool tpool_parse_threads(const char *s, int *n);
/* "2 threads, pinned to cores 0,1" (or "not pinned"), for startup lines. */
void tpool_describe(const tpool *tp, char *buf, size_t len);

#endif
