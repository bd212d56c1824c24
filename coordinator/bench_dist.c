/* `moe bench --dist`: decode speed of the cluster at 1..4 ranks on the
 * `mini` preset, with one sequence and with several decoding at once (one
 * engine_forward_batch per step), with the stages' overlap on and off;
 * where a MoE layer step's time goes (computing, messaging, waiting for
 * workers) and the bytes on the wire per token.
 *
 * The bench runs itself under mpirun once per configuration (the child
 * reads `--child`), so it is started like any command: `moe bench --dist`. */
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
            "usage: moe bench --dist [-m MODEL] [--ranks A-B] [--seqs S] [--stages K] [-n STEPS] [--prompt N]\n"
            "                       [-t THREADS] [-r REPEAT] [--dedicated]\n"
            "\n"
            "Decode tokens/s of the cluster at each rank count (mpirun -np N, oversubscribed\n"
            "here) with 1 sequence and with S sequences decoding at once (aggregate), the\n"
            "latter also with the stages' overlap off (MOE_STAGE_INFLIGHT=1); time per MoE\n"
            "layer step spent computing / messaging / waiting, and bytes on the wire per\n"
            "token per MoE layer.\n"
            "\n"
            "  -m MODEL      model (default: the mini preset, made once with `moe mkmodel`\n"
            "                into /tmp/moe-bench-mini.gguf)\n"
            "  --ranks A-B   rank counts (default 1-4)\n"
            "  --seqs S      concurrent sequences of the batched runs (default 4; 1: only\n"
            "                the one-sequence runs)\n"
            "  --stages K    layer stages, at most one per rank (default: automatic,\n"
            "                which is 1 for the mini preset)\n"
            "  -n STEPS      decode steps per run (default 16)\n"
            "  --prompt N    prompt tokens of each sequence before decoding (default 32)\n"
            "  -t THREADS    threads per rank (default: cores / ranks, at least 1)\n"
            "  -r REPEAT     runs per configuration, the best one counts (default 1; on a\n"
            "                shared machine more runs filter out other load)\n"
            "  --dedicated   expert workers on ranks 1..N-1 only, rank 0 runs the coordinator\n"
            "                and the stages (a `moe plan --workers` plan), as when stage and\n"
            "                expert hosts are separate machines\n");
}

/* One run inside mpirun: the prompts of n_seq sequences in one batch, then
 * n_tok greedy decode steps of all of them at once; rank 0 prints one
 * result line. */
static int child(const char *model, const char *plan, int n_tok, int n_prompt, int n_seq, int n_stages, int threads) {
    engine_opts o = {.model_path = model, .plan_path = plan, .n_threads = threads, .n_ctx = n_prompt + n_tok + 8,
                     .n_stages = n_stages};
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
    int *toks = malloc(sizeof(int) * (size_t)n_prompt * n_seq), *next = malloc(sizeof(int) * (size_t)n_seq);
    float *logits = malloc(sizeof(float) * (size_t)V * n_seq);
    engine_req *r = calloc((size_t)n_seq, sizeof *r);
    if (!toks || !next || !logits || !r) abort();
    for (int s = 0; s < n_seq; s++) {
        for (int i = 0; i < n_prompt; i++)
            toks[s * n_prompt + i] = (int)((7u * (unsigned)i + 3u + 101u * (unsigned)s) % (unsigned)V);
        r[s] = (engine_req){.seq = s, .tokens = toks + s * n_prompt, .n = n_prompt, .logits = logits + (size_t)s * V};
    }
#define FWD() (m ? engine_mpi_forward_batch(m, n_seq, r, err, sizeof err) : engine_forward_batch(e, n_seq, r, err, sizeof err))
    bool ok = FWD();
    engine_mpi_summary s0 = {0}, s1 = {0};
    if (ok && m) engine_mpi_summary_get(m, &s0);
    double t0 = cl_now();
    for (int i = 0; ok && i < n_tok; i++) {
        for (int s = 0; s < n_seq; s++) {
            const float *l = logits + (size_t)s * V;
            next[s] = 0;
            for (int v = 1; v < V; v++)
                if (l[v] > l[next[s]]) next[s] = v;
            r[s].tokens = &next[s], r[s].n = 1, r[s].pos0 = n_prompt + i;
        }
        ok = FWD();
    }
    double secs = cl_now() - t0;
#undef FWD
    if (ok && m) engine_mpi_summary_get(m, &s1);
    if (!ok) fprintf(stderr, "moe bench --dist: %s\n", err);
    else {
        double steps = (double)(s1.moe_steps - s0.moe_steps), rows = (double)(s1.rows - s0.rows);
        printf("bench-dist-result %.3f %.3f %.3f %.3f %.0f %.3f\n", (double)n_tok * n_seq / secs,
               steps ? 1e3 * (s1.compute_s - s0.compute_s) / steps : 0, steps ? 1e3 * (s1.comm_s - s0.comm_s) / steps : 0,
               steps ? 1e3 * (s1.wait_s - s0.wait_s) / steps : 0, rows ? (double)(s1.wire_bytes - s0.wire_bytes) / rows : 0,
               steps ? (double)(s1.overlapped - s0.overlapped) / steps : 0);
        fflush(stdout);
    }
    free(toks), free(next), free(logits), free(r);
    if (m) engine_mpi_close(m);
    else engine_close(e);
    return ok ? 0 : 1;
}

/* What a run of the bench is given. */
typedef struct bench_cfg {
    const char *self, *model; /* this binary, the model */
    int n_tok, n_prompt;      /* decode steps, prompt tokens per sequence */
    int stages;               /* --stages (0: automatic) */
    int repeat;               /* runs per configuration (the best counts) */
    bool dedicated;           /* experts only on ranks 1..N-1 */
} bench_cfg;

/* One configuration under mpirun (best of cfg->repeat runs); prints its
 * table line.  Returns tok/s (< 0: failed). */
static double run_one(const bench_cfg *cfg, int n, int t, int n_seq, bool overlap) {
    char cmd[8192], plan[64] = "", plan_opt[96] = "";
    const int stages = cfg->stages < n ? cfg->stages : n;
    if (cfg->dedicated && n > 1) {
        /* the planner's own plan with workers 1..N-1, through a file */
        snprintf(plan, sizeof plan, "/tmp/moe-bench-dist-plan.XXXXXX");
        int fd = mkstemp(plan);
        if (fd < 0) return printf("%5d  cannot create a plan file\n", n), -1.0;
        close(fd);
        char st[32] = "";
        if (stages) snprintf(st, sizeof st, " --stages %d", stages);
        snprintf(cmd, sizeof cmd, "'%s' plan -m '%s' --ranks %d%s --workers 1-%d --ctx %d > '%s'", cfg->self,
                 cfg->model, n, st, n - 1, cfg->n_prompt + cfg->n_tok + 8, plan);
        if (system(cmd) != 0) return unlink(plan), printf("%5d  moe plan failed\n", n), -1.0;
        snprintf(plan_opt, sizeof plan_opt, " --plan '%s'", plan);
    }
    snprintf(cmd, sizeof cmd,
             "%smpirun %s--oversubscribe --bind-to none --mca mpi_yield_when_idle 1 -x MOE_STAGE_INFLIGHT -np %d '%s' "
             "bench --dist --child -m '%s'%s -n %d --prompt %d --seqs %d --stages %d -t %d 2>/dev/null",
             overlap ? "MOE_STAGE_INFLIGHT=0 " : "MOE_STAGE_INFLIGHT=1 ", geteuid() == 0 ? "--allow-run-as-root " : "", n,
             cfg->self, cfg->model, plan_opt, cfg->n_tok, cfg->n_prompt, n_seq, stages, t);
    double tps = -1, c = 0, mcomm = 0, w = 0, wire = 0, ov = 0;
    int st = 0;
    for (int k = 0; k < cfg->repeat && st == 0; k++) {
        FILE *p = popen(cmd, "r");
        char line[512];
        double r[6] = {-1, 0, 0, 0, 0, 0};
        while (p && fgets(line, sizeof line, p))
            sscanf(line, "bench-dist-result %lf %lf %lf %lf %lf %lf", &r[0], &r[1], &r[2], &r[3], &r[4], &r[5]);
        st = p ? pclose(p) : -1;
        if (st == 0 && r[0] < 0) st = -1;
        if (st == 0 && r[0] > tps) tps = r[0], c = r[1], mcomm = r[2], w = r[3], wire = r[4], ov = r[5];
    }
    if (plan[0]) unlink(plan);
    const char *ovs = n == 1 ? "-" : overlap ? "on" : "off";
    if (st != 0) {
        printf("%5d  %7d  %4d  %7s  failed (mpirun exit %d)\n", n, t, n_seq, ovs, st);
        return -1;
    }
    if (n == 1) printf("%5d  %7d  %4d  %7s  %10.2f  | one process: no messages\n", n, t, n_seq, ovs, tps);
    else
        printf("%5d  %7d  %4d  %7s  %10.2f  | %8.3f  %9.3f  %7.3f  %10.2f | %12.0f\n", n, t, n_seq, ovs, tps, c, mcomm, w,
               ov, wire);
    fflush(stdout);
    return tps;
}

int bench_dist(int argc, char **argv) {
    const char *model = NULL;
    int r0 = 1, r1 = 4, n_tok = 16, n_prompt = 32, threads = 0, n_seq = 4, stages = 0, repeat = 1;
    bool is_child = false, dedicated = false;
    const char *plan = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--dist")) continue;
        if (!strcmp(a, "--child")) is_child = true;
        else if (!strcmp(a, "--dedicated")) dedicated = true;
        else if (!strcmp(a, "--plan") && has) plan = argv[++i];
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(stdout), 0;
        else if (!strcmp(a, "-m") && has) model = argv[++i];
        else if (!strcmp(a, "-n") && has) {
            if (!cli_int(argv[++i], 1, 100000, &n_tok)) return cli_usage_error("bench --dist", "bad -n '%s'", argv[i]);
        } else if (!strcmp(a, "--prompt") && has) {
            if (!cli_int(argv[++i], 1, 100000, &n_prompt)) return cli_usage_error("bench --dist", "bad --prompt '%s'", argv[i]);
        } else if (!strcmp(a, "--seqs") && has) {
            if (!cli_int(argv[++i], 1, CL_MAX_SEQ, &n_seq))
                return cli_usage_error("bench --dist", "bad --seqs '%s' (1 to %d)", argv[i], CL_MAX_SEQ);
        } else if (!strcmp(a, "--stages") && has) {
            if (!cli_int(argv[++i], 0, 64, &stages)) return cli_usage_error("bench --dist", "bad --stages '%s'", argv[i]);
        } else if (!strcmp(a, "-r") && has) {
            if (!cli_int(argv[++i], 1, 100, &repeat)) return cli_usage_error("bench --dist", "bad -r '%s'", argv[i]);
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
        return child(model, plan, n_tok, n_prompt, n_seq, stages, threads);
    }

    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) return fprintf(stderr, "moe bench --dist: cannot find my own binary\n"), 1;
    self[sl] = 0;
    if (!model) {
        model = "/tmp/moe-bench-mini.gguf";
        if (access(model, R_OK) != 0) {
            char cmd[8192];
            fprintf(stderr, "moe bench --dist: making the mini preset model %s (once)\n", model);
            snprintf(cmd, sizeof cmd, "'%s' mkmodel --preset mini -q -o '%s'", self, model);
            if (system(cmd) != 0) return fprintf(stderr, "moe bench --dist: mkmodel failed\n"), 1;
        }
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char st_s[48] = "automatic stages";
    if (stages) snprintf(st_s, sizeof st_s, "min(%d, N) stages", stages);
    printf("moe bench --dist: %s, %d-token prompts, %d decode steps, %s%s, best of %d, %ld cores\n", model,
           n_prompt, n_tok, st_s, dedicated ? ", experts on ranks 1..N-1 only" : "", repeat, cores);
    printf("tok/s counts every sequence's tokens; overlap: stages run other units while workers compute\n");
    printf("                                         | per MoE layer step (ms)                        | wire B per\n");
    printf("ranks  threads  seqs  overlap  dec tok/s  |  compute  messaging  waiting  overlapped/step | token/layer\n");
    int rc = 0;
    const bench_cfg cfg = {.self = self, .model = model, .n_tok = n_tok, .n_prompt = n_prompt, .stages = stages,
                           .repeat = repeat, .dedicated = dedicated};
    double one[65] = {0}, many[65] = {0}, many_off[65] = {0};
    for (int n = r0; n <= r1; n++) {
        int t = threads ? threads : (int)(cores / n > 0 ? cores / n : 1);
        if ((one[n] = run_one(&cfg, n, t, 1, true)) < 0) rc = 1;
        if (n_seq > 1 && (many[n] = run_one(&cfg, n, t, n_seq, true)) < 0) rc = 1;
        if (n_seq > 1 && n > 1 && (many_off[n] = run_one(&cfg, n, t, n_seq, false)) < 0) rc = 1;
    }
    if (n_seq > 1 && !rc) {
        printf("\n%d sequences at once vs one (aggregate tok/s):", n_seq);
        for (int n = r0; n <= r1; n++) printf("  N=%d x%.2f", n, many[n] / one[n]);
        printf("\nwhat the overlap buys (%d sequences, on vs off):", n_seq);
        for (int n = r0 > 2 ? r0 : 2; n <= r1; n++) printf("  N=%d x%.2f", n, many[n] / many_off[n]);
        printf("\n");
    }
    return rc;
}
