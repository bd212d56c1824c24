/* A pool of worker threads created once per process.  tpool_run() runs a
 * function on every thread (the caller is thread 0) and returns when all
 * are done.  Work is split by the callee from (ith, nth). */
#ifndef MOE_THREADPOOL_H
#define MOE_THREADPOOL_H

typedef struct tpool tpool;
typedef void (*tpool_fn)(void *arg, int ith, int nth);

/* n_threads <= 0: one thread per physical core of this process's binding. */
tpool *tpool_create(int n_threads);
void tpool_destroy(tpool *tp);
int tpool_size(const tpool *tp); /* 1 for tp == NULL */
/* tp == NULL runs fn(arg, 0, 1) on the caller. */
void tpool_run(tpool *tp, tpool_fn fn, void *arg);

#endif
