/* Thread pool: threads created once, pinned to cores with hwloc, started
 * per run by bumping a generation counter.  Workers spin on the counter
 * for a short while after each run (decode calls kernels back to back, a
 * futex wake would cost more than the work of a small matrix) and then
 * sleep on a condition variable, so an idle process uses no CPU. */
#include "threadpool.h"

#include <errno.h>
#include <hwloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long an idle worker spins before sleeping, and how long a waiter
 * spins before it starts yielding the core (2 cores are often shared). */
#define SPIN_IDLE_NS 200000L
#define SPIN_YIELD_NS 50000L

struct tpool {
    int n;                    /* threads, the caller (thread 0) included */
    pthread_t *threads;       /* [n]; [0] unused: thread 0 is the caller */
    /* current run, written by tpool_run before gen is bumped */
    tpool_fn fn;
    void *arg;
    atomic_uint gen;          /* run counter; a change starts a run */
    atomic_int n_done;        /* workers that finished the current run */
    atomic_int n_sleeping;    /* workers blocked in pthread_cond_wait */
    atomic_int quit;          /* set by tpool_destroy */
    pthread_mutex_t mu;       /* guards the sleep/wake handshake */
    pthread_cond_t wake;
    /* barrier inside a run */
    atomic_int bar_count;     /* threads arrived at the current barrier */
    atomic_uint bar_gen;      /* barrier round; a change releases waiters */
    /* placement */
    hwloc_topology_t topo;    /* NULL if hwloc failed (then nothing pinned) */
    hwloc_bitmap_t *pin;      /* [n] cpuset of each thread, NULL: not pinned */
    hwloc_bitmap_t caller_old;/* caller's binding before create, restored */
    char desc[160];           /* tpool_describe text */
};

typedef struct {
    tpool *tp;
    int ith;
} worker_arg;

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* ---- the binding the process started with, and its cores ---- */

typedef struct {
    int n_cores;        /* physical cores with at least one PU in the binding */
    char list[96];      /* their first PU numbers, "0,1" */
} binding_info;

static binding_info g_bind;           /* written once under g_bind_once */
static hwloc_bitmap_t g_bind_set;     /* the process binding at first use */
static pthread_once_t g_bind_once = PTHREAD_ONCE_INIT;

/* Fills cores[] (up to max) with each bound core's PUs inside `set`. */
static int bound_cores(hwloc_topology_t topo, hwloc_const_bitmap_t set, hwloc_bitmap_t *cores,
                       int max) {
    int n = 0;
    int depth = hwloc_get_type_depth(topo, HWLOC_OBJ_CORE);
    if (depth < 0) depth = hwloc_get_type_depth(topo, HWLOC_OBJ_PU);
    int total = hwloc_get_nbobjs_by_depth(topo, depth);
    for (int i = 0; i < total; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_depth(topo, depth, i);
        if (!o->cpuset || !hwloc_bitmap_intersects(o->cpuset, set)) continue;
        if (cores && n < max) {
            cores[n] = hwloc_bitmap_alloc();
            hwloc_bitmap_and(cores[n], o->cpuset, set);
        }
        n++;
    }
    return n;
}

static void bind_init(void) {
    g_bind.n_cores = 1;
    snprintf(g_bind.list, sizeof g_bind.list, "?");
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) < 0) return;
    if (hwloc_topology_load(topo) < 0) {
        hwloc_topology_destroy(topo);
        return;
    }
    g_bind_set = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(topo, g_bind_set, HWLOC_CPUBIND_PROCESS) < 0 ||
        hwloc_bitmap_iszero(g_bind_set))
        hwloc_bitmap_copy(g_bind_set, hwloc_topology_get_allowed_cpuset(topo));
    int n = bound_cores(topo, g_bind_set, NULL, 0);
    g_bind.n_cores = n > 0 ? n : 1;
    hwloc_topology_destroy(topo);
}

int tpool_default_threads(void) {
    pthread_once(&g_bind_once, bind_init);
    return g_bind.n_cores;
}

bool tpool_parse_threads(const char *s, int *n) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 0 || v > 1024) return false;
    *n = (int)v;
    return true;
}

/* ---- workers ---- */

static void pin_self(tpool *tp, int ith) {
    if (tp->topo && tp->pin && tp->pin[ith])
        hwloc_set_cpubind(tp->topo, tp->pin[ith], HWLOC_CPUBIND_THREAD);
}

/* Waits for the generation to move past `seen`; returns the new one. */
static unsigned wait_for_run(tpool *tp, unsigned seen) {
    long t0 = now_ns();
    for (int i = 0;; i++) {
        unsigned g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        if (g != seen || atomic_load(&tp->quit)) return g;
        cpu_relax();
        if ((i & 63) == 63 && now_ns() - t0 > SPIN_IDLE_NS) break;
    }
    /* Sleep.  n_sleeping is raised before gen is read again, and tpool_run
     * bumps gen before reading n_sleeping (both seq_cst), so at least one
     * side sees the other: no lost wake-up. */
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->n_sleeping, 1);
    unsigned g;
    while ((g = atomic_load(&tp->gen)) == seen && !atomic_load(&tp->quit))
        pthread_cond_wait(&tp->wake, &tp->mu);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
    return g;
}

static void *worker_main(void *p) {
    worker_arg wa = *(worker_arg *)p;
    free(p);
    tpool *tp = wa.tp;
    pin_self(tp, wa.ith);
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_run(tp, seen);
        if (atomic_load(&tp->quit)) break;
        tp->fn(tp->arg, wa.ith, tp->n);
        atomic_fetch_add_explicit(&tp->n_done, 1, memory_order_release);
    }
    return NULL;
}

/* Spins until *v == want, yielding the core after a short while. */
static void spin_until_eq(atomic_int *v, int want) {
    long t0 = 0;
    for (int i = 0; atomic_load_explicit(v, memory_order_acquire) != want; i++) {
        cpu_relax();
        if ((i & 63) == 63) {
            if (!t0) t0 = now_ns();
            else if (now_ns() - t0 > SPIN_YIELD_NS) sched_yield();
        }
    }
}

static void spin_until_ne(atomic_uint *v, unsigned old) {
    long t0 = 0;
    for (int i = 0; atomic_load_explicit(v, memory_order_acquire) == old; i++) {
        cpu_relax();
        if ((i & 63) == 63) {
            if (!t0) t0 = now_ns();
            else if (now_ns() - t0 > SPIN_YIELD_NS) sched_yield();
        }
    }
}

/* ---- pool ---- */

static void setup_pinning(tpool *tp) {
    const char *env = getenv("MOE_PIN");
    bool want = !(env && !strcmp(env, "0"));
    int n_cores = tpool_default_threads();
    if (!want || !g_bind_set || tp->n > n_cores) {
        snprintf(tp->desc, sizeof tp->desc, "%d thread%s, not pinned%s", tp->n,
                 tp->n == 1 ? "" : "s",
                 !want ? " (MOE_PIN=0)" : tp->n > n_cores ? " (more threads than cores)" : "");
        return;
    }
    if (hwloc_topology_init(&tp->topo) < 0 || hwloc_topology_load(tp->topo) < 0) {
        if (tp->topo) hwloc_topology_destroy(tp->topo);
        tp->topo = NULL;
        snprintf(tp->desc, sizeof tp->desc, "%d threads, not pinned (hwloc failed)", tp->n);
        return;
    }
    hwloc_bitmap_t *cores = calloc((size_t)n_cores, sizeof *cores);
    tp->pin = calloc((size_t)tp->n, sizeof *tp->pin);
    if (!cores || !tp->pin) {
        free(cores);
        free(tp->pin);
        tp->pin = NULL;
        return;
    }
    int nc = bound_cores(tp->topo, g_bind_set, cores, n_cores);
    if (nc > n_cores) nc = n_cores;
    int len = snprintf(tp->desc, sizeof tp->desc, "%d thread%s, pinned to core%s", tp->n,
                       tp->n == 1 ? "" : "s", tp->n == 1 ? "" : "s");
    for (int i = 0; i < tp->n && i < nc; i++) {
        tp->pin[i] = hwloc_bitmap_dup(cores[i]);
        if (len > 0 && len < (int)sizeof tp->desc)
            len += snprintf(tp->desc + len, sizeof tp->desc - (size_t)len, "%s%d", i ? "," : " ",
                            hwloc_bitmap_first(cores[i]));
    }
    for (int i = 0; i < nc; i++) hwloc_bitmap_free(cores[i]);
    free(cores);
    /* The caller is thread 0: pin it too, and restore its binding later. */
    tp->caller_old = hwloc_bitmap_alloc();
    if (hwloc_get_cpubind(tp->topo, tp->caller_old, HWLOC_CPUBIND_THREAD) < 0) {
        hwloc_bitmap_free(tp->caller_old);
        tp->caller_old = NULL;
    }
    pin_self(tp, 0);
}

tpool *tpool_create(int n_threads) {
    if (n_threads <= 0) n_threads = tpool_default_threads();
    tpool *tp = calloc(1, sizeof *tp);
    if (!tp) {
        fprintf(stderr, "moe: out of memory creating the thread pool\n");
        exit(1);
    }
    tp->n = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    tp->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!tp->threads) tp->n = 1;
    setup_pinning(tp);
    for (int i = 1; i < tp->n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int rc = wa ? 0 : ENOMEM;
        if (wa) {
            wa->tp = tp;
            wa->ith = i;
            rc = pthread_create(&tp->threads[i], NULL, worker_main, wa);
            if (rc) free(wa);
        }
        if (rc) {
            fprintf(stderr, "moe: warning: could not start thread %d of %d (%s); using %d\n",
                    i + 1, tp->n, strerror(rc), i);
            tp->n = i;
            break;
        }
    }
    return tp;
}

void tpool_destroy(tpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->quit, 1);
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    if (tp->topo) {
        if (tp->caller_old) {
            hwloc_set_cpubind(tp->topo, tp->caller_old, HWLOC_CPUBIND_THREAD);
            hwloc_bitmap_free(tp->caller_old);
        }
        if (tp->pin)
            for (int i = 0; i < tp->n; i++)
                if (tp->pin[i]) hwloc_bitmap_free(tp->pin[i]);
        hwloc_topology_destroy(tp->topo);
    }
    free(tp->pin);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->wake);
    free(tp->threads);
    free(tp);
}

int tpool_size(const tpool *tp) { return tp ? tp->n : 1; }

void tpool_describe(const tpool *tp, char *buf, size_t len) {
    if (!tp) snprintf(buf, len, "1 thread (no pool)");
    else snprintf(buf, len, "%s", tp->desc);
}

void tpool_run(tpool *tp, tpool_fn fn, void *arg) {
    if (!tp || tp->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->arg = arg;
    atomic_store_explicit(&tp->n_done, 0, memory_order_relaxed);
    atomic_fetch_add(&tp->gen, 1); /* seq_cst: publishes fn/arg, pairs with n_sleeping */
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->wake);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(arg, 0, tp->n);
    spin_until_eq(&tp->n_done, tp->n - 1);
}

void tpool_barrier(tpool *tp) {
    if (!tp || tp->n == 1) return;
    unsigned g = atomic_load_explicit(&tp->bar_gen, memory_order_acquire);
    if (atomic_fetch_add(&tp->bar_count, 1) == tp->n - 1) {
        atomic_store(&tp->bar_count, 0);
        atomic_fetch_add(&tp->bar_gen, 1);
    } else {
        spin_until_ne(&tp->bar_gen, g);
    }
}
