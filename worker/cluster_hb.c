/* Heartbeats: every rank's thread sends "alive, doing X" to rank 0 every
 * 250 ms and rank 0's thread answers each one.  Whoever notices a peer
 * silent for MOE_DEAD_S seconds (default 4) prints which rank and what it
 * was last doing, then aborts the job, so a rank that crashes, is killed
 * or stops (SIGSTOP, a hung node) never leaves the others waiting.  Rank 0
 * also checks every beat that the processes of ranks on its own host still
 * exist, and reports and aborts at once when one is gone.  Its own
 * communicator keeps these messages away from the data path. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "control.pb-c.h"

#define HB_DOING 160

struct cl_hb {
    pthread_t thread;
    MPI_Comm comm;           /* heartbeat communicator (dup of COMM_WORLD) */
    int rank, size;
    double dead_s;           /* silence that counts as dead */
    pthread_mutex_t mu;      /* guards doing, stop */
    char doing[HB_DOING];    /* this rank's activity */
    int stop;
    double *last;            /* [size] when each peer was last heard (rank 0: all; others: [0]) */
    char (*peer_doing)[HB_DOING]; /* [size] what each peer last said */
    MPI_Request *sreq;       /* [size] heartbeat send in flight per peer */
    uint8_t (*sbuf)[HB_DOING + 16]; /* [size] its buffer */
    const moe_plan *plan;    /* for naming roles */
    int *pids;               /* rank 0: [size] process ids (same-host liveness checks) */
};

/* When a rank dies, mpirun ends the job: SIGTERM to every other process,
 * SIGKILL about 10 ms later.  Rank 0 catches the SIGTERM to say which rank
 * is gone and what everyone was doing.  10 ms is too short to count on a
 * thread being scheduled (on a loaded machine the report got lost), so the
 * heartbeat thread keeps the report written out, refreshed every beat, and
 * the handler itself writes it with write(2), checking with kill(pid, 0)
 * which ranks are gone (both async-signal-safe).  A handler can only reach
 * it through process-wide state: the two report buffers (the thread fills
 * one while the other is ready), flags, and a pipe that wakes the thread. */
typedef struct hb_line {
    char pre[320];              /* "moe: rank 0: rank R (role) on HOST " */
    char post[HB_DOING + 64];   /* "; last heartbeat X s ago, it was: ...\n" */
    int n_pre, n_post;
    pid_t pid;                  /* process to check; 0: not on this host */
} hb_line;

typedef struct hb_report {
    char head[HB_DOING + 96];   /* "moe: rank 0: the launcher is ending the job (...)\n" */
    int n_head;
    int n;                      /* lines: ranks 1..size-1 */
    hb_line *line;              /* [n] */
    char *out;                  /* [cap_out] the handler assembles the whole report here */
    int cap_out;
} hb_report;

static volatile sig_atomic_t g_term;            /* SIGTERM seen */
static volatile sig_atomic_t g_reported;        /* the handler wrote the report */
static volatile sig_atomic_t g_rep_ready = -1;  /* index of the complete report, -1: none */
static hb_report *g_rep[2];
static int g_wake[2] = {-1, -1};

/* Appends n bytes to out[at..cap) (a plain loop: async-signal-safe). */
static int put(char *out, int at, int cap, const char *s, int n) {
    for (int i = 0; i < n && at < cap; i++) out[at++] = s[i];
    return at;
}

/* Writes head, then one line per rank saying whether its process still
 * exists (async-signal-safe).  One write: the launcher forwards what it
 * has read when it tears the job down, so the report must not arrive in
 * pieces.  Returns whether a rank on this host is gone. */
static bool emit_report(hb_report *rep, const char *head, int n_head) {
    bool any_gone = false;
    int at = put(rep->out, 0, rep->cap_out, head, n_head);
        for (int i = 0; i < rep->n; i++) {
            const hb_line *l = &rep->line[i];
            static const char gone[] = "is GONE (its process no longer exists)", alive[] = "is alive",
                              remote[] = "(remote)";
            const char *st = !l->pid ? remote : kill(l->pid, 0) != 0 && errno == ESRCH ? gone : alive;
            any_gone |= st == gone;
            const int n_st = st == gone ? (int)sizeof gone - 1 : st == alive ? (int)sizeof alive - 1
                                                                             : (int)sizeof remote - 1;
            at = put(rep->out, at, rep->cap_out, l->pre, l->n_pre);
            at = put(rep->out, at, rep->cap_out, st, n_st);
            at = put(rep->out, at, rep->cap_out, l->post, l->n_post);
        }
    for (const char *o = rep->out; at > 0;) {
        ssize_t w = write(2, o, (size_t)at);
        if (w <= 0) break;
        o += w, at -= (int)w;
    }
    return any_gone;
}

static void on_sigterm(int sig) {
    (void)sig;
    const int saved = errno;
    const int k = g_rep_ready;
    if (k >= 0 && !g_reported) {
        g_reported = 1;
        emit_report(g_rep[k], g_rep[k]->head, g_rep[k]->n_head);
    }
    g_term = 1;
    if (g_wake[1] >= 0) {
        ssize_t r = write(g_wake[1], "t", 1);
        (void)r;
    }
    errno = saved;
}

/* Length snprintf wrote into a buffer of size cap (it returns what it
 * would have written). */
static int clamp_len(int n, size_t cap) { return n < 0 ? 0 : n >= (int)cap ? (int)cap - 1 : n; }

void cl_doing(cl_rank *c, const char *fmt, ...) {
    if (!c->hb) return;
    char buf[HB_DOING];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->hb->mu);
    memcpy(c->hb->doing, buf, sizeof buf);
    pthread_mutex_unlock(&c->hb->mu);
}

static void hb_send(struct cl_hb *hb, int peer) {
    int done = 1;
    if (hb->sreq[peer] != MPI_REQUEST_NULL) MPI_Test(&hb->sreq[peer], &done, MPI_STATUS_IGNORE);
    if (!done) return; /* the last one has not left: the peer is slow or gone */
    Moe__Heartbeat m = MOE__HEARTBEAT__INIT;
    pthread_mutex_lock(&hb->mu);
    char doing[HB_DOING];
    memcpy(doing, hb->doing, sizeof doing);
    pthread_mutex_unlock(&hb->mu);
    m.doing = doing;
    size_t len = moe__heartbeat__get_packed_size(&m);
    if (len > sizeof hb->sbuf[peer]) return;
    moe__heartbeat__pack(&m, hb->sbuf[peer]);
    MPI_Isend(hb->sbuf[peer], (int)len, MPI_BYTE, peer, 0, hb->comm, &hb->sreq[peer]);
}

static void hb_recv(struct cl_hb *hb, double now) {
    for (;;) {
        int flag = 0, len = 0;
        MPI_Status st;
        if (MPI_Iprobe(MPI_ANY_SOURCE, 0, hb->comm, &flag, &st) != MPI_SUCCESS || !flag) return;
        uint8_t buf[HB_DOING + 16];
        MPI_Get_count(&st, MPI_BYTE, &len);
        if (len < 0 || len > (int)sizeof buf) len = (int)sizeof buf;
        MPI_Recv(buf, len, MPI_BYTE, st.MPI_SOURCE, 0, hb->comm, MPI_STATUS_IGNORE);
        hb->last[st.MPI_SOURCE] = now;
        Moe__Heartbeat *m = moe__heartbeat__unpack(NULL, (size_t)len, buf);
        if (m) {
            snprintf(hb->peer_doing[st.MPI_SOURCE], HB_DOING, "%s", m->doing ? m->doing : "");
            moe__heartbeat__free_unpacked(m, NULL);
        }
    }
}

/* Rank 0: the termination report as things stand now, into the buffer
 * that is not the ready one; then it becomes the ready one. */
static void prepare_report(struct cl_hb *hb) {
    const int k = g_rep_ready == 0 ? 1 : 0;
    hb_report *rep = g_rep[k];
    const double now = cl_now();
    char host[64] = "";
    pthread_mutex_lock(&hb->mu);
    if (hb->plan) snprintf(host, sizeof host, "%s", hb->plan->ranks[0].hw.host);
    rep->n_head = clamp_len(snprintf(rep->head, sizeof rep->head,
                                     "moe: rank 0: the launcher is ending the job (rank 0 was: %s)\n", hb->doing),
                            sizeof rep->head);
    for (int r = 1; r < hb->size; r++) {
        hb_line *l = &rep->line[r - 1];
        char role[200] = "role not assigned yet";
        const char *rh = hb->plan ? hb->plan->ranks[r].hw.host : "";
        if (hb->plan) plan_describe_rank(hb->plan, r, role, sizeof role);
        bool local = hb->plan && hb->pids && !strcmp(rh, host);
        l->pid = local && hb->pids[r] > 0 ? (pid_t)hb->pids[r] : 0;
        l->n_pre = clamp_len(snprintf(l->pre, sizeof l->pre, "moe: rank 0: rank %d (%s) on %s ", r, role,
                                      rh[0] ? rh : "?"),
                             sizeof l->pre);
        l->n_post = clamp_len(snprintf(l->post, sizeof l->post, "; last heartbeat %.1f s ago, it was: %s\n",
                                       now - hb->last[r], hb->peer_doing[r][0] ? hb->peer_doing[r] : "starting up"),
                              sizeof l->post);
        l->post[l->n_post - 1] = '\n'; /* a cut line still ends */
    }
    pthread_mutex_unlock(&hb->mu);
    g_rep_ready = k;
}

/* Rank 0 after SIGTERM: the handler wrote the report (or, before the
 * first one was ready, we write it now); then we go, after a moment for
 * the launcher to read it (it kills us soon anyway). */
static void __attribute__((noreturn)) report_termination(struct cl_hb *hb) {
    if (!g_reported) {
        prepare_report(hb);
        on_sigterm(SIGTERM);
    }
    struct timespec ts = {0, 200000000L};
    nanosleep(&ts, NULL);
    _exit(1);
}

/* Rank 0, every beat: a rank on this host whose process no longer exists
 * (crashed, killed) ends the job now, with the report, without waiting for
 * the launcher: mpirun's SIGTERM comes a second later and its SIGKILL so
 * soon after that the handler may never run. */
static void check_gone(struct cl_hb *hb) {
    const hb_report *ready = g_rep[g_rep_ready];
    int dead = -1;
    for (int i = 0; i < ready->n && dead < 0; i++)
        if (ready->line[i].pid && kill(ready->line[i].pid, 0) != 0 && errno == ESRCH) dead = i + 1;
    if (dead < 0 || g_reported) return;
    g_reported = 1;
    char head[HB_DOING + 96];
    pthread_mutex_lock(&hb->mu);
    int n = clamp_len(snprintf(head, sizeof head, "moe: rank 0: the process of rank %d is gone (rank 0 was: %s). "
                                                  "Aborting the job.\n", dead, hb->doing),
                      sizeof head);
    pthread_mutex_unlock(&hb->mu);
    emit_report(g_rep[g_rep_ready], head, n);
    MPI_Abort(MPI_COMM_WORLD, 3);
}

static void *hb_main(void *arg) {
    struct cl_hb *hb = arg;
    for (;;) {
        pthread_mutex_lock(&hb->mu);
        int stop = hb->stop;
        pthread_mutex_unlock(&hb->mu);
        if (stop) break;
        double now = cl_now();
        hb_recv(hb, now);
        if (hb->rank == 0 && g_rep[0]) {
            prepare_report(hb);
            check_gone(hb);
        }
        if (hb->rank == 0)
            for (int r = 1; r < hb->size; r++) hb_send(hb, r);
        else
            hb_send(hb, 0);
        for (int r = 0; r < hb->size; r++) {
            if (r == hb->rank || (hb->rank != 0 && r != 0)) continue;
            double silent = now - hb->last[r];
            if (silent <= hb->dead_s) continue;
            char role[200] = "role not assigned yet", mine[HB_DOING];
            pthread_mutex_lock(&hb->mu);
            if (hb->plan && hb->plan->n_ranks == hb->size) plan_describe_rank(hb->plan, r, role, sizeof role);
            else if (r == 0) snprintf(role, sizeof role, "coordinator");
            memcpy(mine, hb->doing, sizeof mine);
            pthread_mutex_unlock(&hb->mu);
            fprintf(stderr,
                    "moe: rank %d: rank %d (%s) stopped answering: no heartbeat for %.1f s; it was last: %s; "
                    "rank %d was: %s. Aborting the job.\n",
                    hb->rank, r, role, silent, hb->peer_doing[r][0] ? hb->peer_doing[r] : "starting up", hb->rank,
                    mine);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        if (g_wake[0] >= 0) {
            struct pollfd pf = {.fd = g_wake[0], .events = POLLIN};
            poll(&pf, 1, 250);
        } else {
            struct timespec ts = {0, 250000000L};
            nanosleep(&ts, NULL);
        }
        if (g_term) report_termination(hb);
    }
    return NULL;
}

bool cl_hb_start(cl_rank *c, char *err, size_t errlen) {
    struct cl_hb *hb = calloc(1, sizeof *hb);
    if (!hb) return snprintf(err, errlen, "out of memory"), false;
    hb->rank = c->rank;
    hb->size = c->size;
    const char *d = getenv("MOE_DEAD_S");
    hb->dead_s = d && atof(d) > 0 ? atof(d) : 4.0;
    pthread_mutex_init(&hb->mu, NULL);
    snprintf(hb->doing, sizeof hb->doing, "starting up");
    hb->last = calloc((size_t)c->size, sizeof *hb->last);
    hb->peer_doing = calloc((size_t)c->size, sizeof *hb->peer_doing);
    hb->sreq = calloc((size_t)c->size, sizeof *hb->sreq);
    hb->sbuf = calloc((size_t)c->size, sizeof *hb->sbuf);
    if (!hb->last || !hb->peer_doing || !hb->sreq || !hb->sbuf ||
        MPI_Comm_dup(MPI_COMM_WORLD, &hb->comm) != MPI_SUCCESS) {
        snprintf(err, errlen, "cannot set up heartbeats");
        return false;
    }
    double now = cl_now();
    for (int r = 0; r < c->size; r++) hb->last[r] = now, hb->sreq[r] = MPI_REQUEST_NULL;
    c->hb = hb;
    if (c->rank == 0 && !g_rep[0]) {
        for (int k = 0; k < 2; k++) {
            g_rep[k] = calloc(1, sizeof *g_rep[k]);
            if (g_rep[k]) {
                g_rep[k]->line = calloc((size_t)(c->size > 1 ? c->size - 1 : 1), sizeof *g_rep[k]->line);
                g_rep[k]->cap_out = (int)(sizeof g_rep[k]->head + (size_t)c->size * (sizeof(hb_line) + 64));
                g_rep[k]->out = malloc((size_t)g_rep[k]->cap_out);
            }
            if (!g_rep[k] || !g_rep[k]->line || !g_rep[k]->out) {
                snprintf(err, errlen, "cannot set up heartbeats");
                return false;
            }
            g_rep[k]->n = c->size - 1;
        }
    }
    if (c->rank == 0 && g_wake[0] < 0 && pipe(g_wake) == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_sigterm;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
    }
    if (pthread_create(&hb->thread, NULL, hb_main, hb) != 0) {
        c->hb = NULL;
        snprintf(err, errlen, "cannot start the heartbeat thread");
        return false;
    }
    return true;
}

/* The plan names roles in failure messages once it is known. */
void cl_hb_set_plan(cl_rank *c, int *pids) {
    if (!c->hb) {
        free(pids);
        return;
    }
    pthread_mutex_lock(&c->hb->mu);
    c->hb->plan = &c->plan;
    c->hb->pids = pids;
    pthread_mutex_unlock(&c->hb->mu);
}

void cl_hb_stop(cl_rank *c) {
    struct cl_hb *hb = c->hb;
    if (!hb) return;
    pthread_mutex_lock(&hb->mu);
    hb->stop = 1;
    pthread_mutex_unlock(&hb->mu);
    pthread_join(hb->thread, NULL);
    c->hb = NULL;
    g_rep_ready = -1; /* no report from here on: nobody is watching any more */
    for (int k = 0; k < 2; k++) {
        if (g_rep[k]) free(g_rep[k]->line), free(g_rep[k]->out);
        free(g_rep[k]);
        g_rep[k] = NULL;
    }
    /* Heartbeats are small (sent eagerly): whatever is still unmatched is
     * dropped with the communicator at finalize. */
    free(hb->last), free(hb->peer_doing), free(hb->sreq), free(hb->sbuf), free(hb->pids);
    pthread_mutex_destroy(&hb->mu);
    free(hb);
}
