/* `moe bench --dist`: decode speed of the cluster at 1..4 ranks on the
 * `mini` preset, with where a MoE layer step's time goes (computing,
 * messaging, waiting for workers) and the bytes on the wire per token.
 *
 * The bench runs itself under mpirun once per rank count (the child reads
 * `--child`), so it is started like any command: `moe bench --dist`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_dist.h"
#include "cli.h"
#include "cluster.h"
#include "engine.h"
#include "engine_mpi.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: moe bench --dist [-m MODEL] [--ranks A-B] [-n TOKENS] [--prompt N] [-t THREADS]\n"
            "\n"
            "Decode tokens/s of the cluster at each rank count (mpirun -np N, oversubscribed\n"
            "here), time per MoE layer step spent computing / messaging / waiting, and bytes\n"
            "on the wire per token per MoE layer.\n"
            "\n"
            "  -m MODEL      model (default: the mini preset, made once with `moe mkmodel`\n"
            "                into /tmp/moe-bench-mini.gguf)\n"
            "  --ranks A-B   rank counts (default 1-4)\n"
            "  -n TOKENS     decode tokens per run (default 16)\n"
            "  --prompt N    prompt tokens before decoding (default 32)\n"
            "  -t THREADS    threads per rank (default: cores / ranks, at least 1)\n");
}

/* One run inside mpirun: prefill, decode, and (rank 0) one result line. */
static int child(const char *model, int n_tok, int n_prompt, int threads) {
    engine_opts o = {.model_path = model, .n_threads = threads, .n_ctx = n_prompt + n_tok + 8};
    char err[512];
    engine *e = NULL;
    engine_mpi *m = NULL;
    if (engine_mpi_wanted()) m = engine_mpi_open(&o, err, sizeof err); /* ranks != 0 never return */
    else e = engine_open(&o, err, sizeof err);
    if (!e && !m) {
        fprintf(stderr, "moe bench --dist: %s\n", err);
        return 1;
    }
    const moe_model *mm = m ? engine_mpi_model(m) : engine_model(e);
    const int V = mm->hp.n_vocab;
    int *toks = malloc(sizeof(int) * (size_t)n_prompt);
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!toks || !logits) abort();
    for (int i = 0; i < n_prompt; i++) toks[i] = (int)((7u * (unsigned)i + 3u) % (unsigned)V);
#define FWD(t, n, p) (m ? engine_mpi_forward(m, 0, t, n, p, logits, false, err, sizeof err) \
                        : engine_forward(e, 0, t, n, p, logits, false, err, sizeof err))
    bool ok = FWD(toks, n_prompt, 0);
    engine_mpi_summary s0 = {0}, s1 = {0};
    if (ok && m) engine_mpi_summary_get(m, &s0);
    double t0 = cl_now();
    for (int i = 0; ok && i < n_tok; i++) {
        int next = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[next]) next = v;
        ok = FWD(&next, 1, n_prompt + i);
    }
    double secs = cl_now() - t0;
#undef FWD
    if (ok && m) engine_mpi_summary_get(m, &s1);
    if (!ok) fprintf(stderr, "moe bench --dist: %s\n", err);
    else {
        double steps = (double)(s1.moe_steps - s0.moe_steps), rows = (double)(s1.rows - s0.rows);
        printf("bench-dist-result %.3f %.3f %.3f %.3f %.0f\n", n_tok / secs,
               steps ? 1e3 * (s1.compute_s - s0.compute_s) / steps : 0, steps ? 1e3 * (s1.comm_s - s0.comm_s) / steps : 0,
               steps ? 1e3 * (s1.wait_s - s0.wait_s) / steps : 0, rows ? (double)(s1.wire_bytes - s0.wire_bytes) / rows : 0);
        fflush(stdout);
    }
    free(toks), free(logits);
    if (m) engine_mpi_close(m);
    else engine_close(e);
    return ok ? 0 : 1;
}

int bench_dist(int argc, char **argv) {
    const char *model = NULL;
    int r0 = 1, r1 = 4, n_tok = 16, n_prompt = 32, threads = 0;
    bool is_child = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--dist")) continue;
        if (!strcmp(a, "--child")) is_child = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout), 0;
        else if (!strcmp(a, "-m") && has) model = argv[++i];
        else if (!strcmp(a, "-n") && has) {
            if (!cli_int(argv[++i], 1, 100000, &n_tok)) return cli_usage_error("bench --dist", "bad -n '%s'", argv[i]);
        } else if (!strcmp(a, "--prompt") && has) {
            if (!cli_int(argv[++i], 1, 100000, &n_prompt)) return cli_usage_error("bench --dist", "bad --prompt '%s'", argv[i]);
        } else if (!strcmp(a, "-t") && has) {
            if (!cli_int(argv[++i], 1, 1024, &threads)) return cli_usage_error("bench --dist", "bad -t '%s'", argv[i]);
        } else if (!strcmp(a, "--ranks") && has) {
            const char *v = argv[++i];
            if (sscanf(v, "%d-%d", &r0, &r1) != 2 && (sscanf(v, "%d", &r0) != 1 || (r1 = r0, 0)))
                return cli_usage_error("bench --dist", "bad --ranks '%s' (e.g. 1-4)", v);
            if (r0 < 1 || r1 < r0 || r1 > 64) return cli_usage_error("bench --dist", "bad --ranks '%s' (e.g. 1-4)", v);
        } else {
            return cli_usage_error("bench --dist", "unknown or incomplete option '%s'", a);
        }
    }
    if (is_child) {
        if (!model) return cli_usage_error("bench --dist", "--child needs -m");
        return child(model, n_tok, n_prompt, threads);
    }

    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return fprintf(stderr, "moe bench --dist: cannot find my own binary\n"), 1;
    self[sl] = 0;
    char cmd[8192];
    if (!model) {
        model = "/tmp/moe-bench-mini.gguf";
        if (access(model, R_OK) != 0) {
            fprintf(stderr, "moe bench --dist: making the mini preset model %s (once)\n", model);
            snprintf(cmd, sizeof cmd, "'%s' mkmodel --preset mini -q -o '%s'", self, model);
            if (system(cmd) != 0) return fprintf(stderr, "moe bench --dist: mkmodel failed\n"), 1;
        }
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    printf("moe bench --dist: %s, %d-token prompt, %d decode tokens, %ld cores\n", model, n_prompt, n_tok, cores);
    printf("ranks  threads/rank  decode tok/s  | per MoE layer step (ms): compute  messaging  waiting | wire B/token/layer\n");
    int rc = 0;
    for (int n = r0; n <= r1; n++) {
        int t = threads ? threads : (int)(cores / n > 0 ? cores / n : 1);
        snprintf(cmd, sizeof cmd,
                 "mpirun %s--oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -np %d '%s' bench --dist --child "
                 "-m '%s' -n %d --prompt %d -t %d 2>/dev/null",
                 geteuid() == 0 ? "--allow-run-as-root " : "", n, self, model, n_tok, n_prompt, t);
        FILE *p = popen(cmd, "r");
        char line[512];
        double tps = -1, c = 0, mcomm = 0, w = 0, wire = 0;
        while (p && fgets(line, sizeof line, p))
            sscanf(line, "bench-dist-result %lf %lf %lf %lf %lf", &tps, &c, &mcomm, &w, &wire);
        int st = p ? pclose(p) : -1;
        if (st != 0 || tps < 0) {
            printf("%5d  %12d  failed (mpirun exit %d)\n", n, t, st);
            rc = 1;
            continue;
        }
        if (n == 1) printf("%5d  %12d  %12.2f  | one process: no messages\n", n, t, tps);
        else printf("%5d  %12d  %12.2f  | %24.3f  %9.3f  %7.3f | %18.0f\n", n, t, tps, c, mcomm, w, wire);
        fflush(stdout);
    }
    return rc;
}
