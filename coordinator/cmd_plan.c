/* `moe plan`: prints the cluster plan for a model and a number of ranks
 * without running anything.  Reads only the GGUF header, so it works for a
 * 671B model on any machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "gguf.h"
#include "hw.h"
#include "plan.h"

static void plan_usage(FILE *out) {
    fprintf(out,
            "usage: moe plan -m MODEL [--ranks N] [--stages K] [options]\n"
            "\n"
            "Prints the plan `mpirun -np N moe ...` would use: which rank runs which\n"
            "layers (stages) and which routed experts, and each rank's memory.  The\n"
            "output is the editable text form read by --plan FILE.\n"
            "\n"
            "  -m, --model FILE        GGUF model (first part of a split model)\n"
            "  --ranks N               number of ranks (default 1)\n"
            "  --stages K              layer stages (default: as few as fit memory)\n"
            "  --stage-ranks R,R,...   rank of each stage (default: stage s on rank s)\n"
            "  --workers A-B[,C]       ranks holding routed experts (default: all)\n"
            "  --nodes-memory S,S,...  memory each rank may use, e.g. 512G,512G (the\n"
            "                          last value repeats; default: this machine's free memory)\n"
            "  --ctx N                 KV positions per sequence (default 4096, capped at training)\n"
            "  --seqs N                sequences to hold KV caches for (default 1)\n"
            "  --plan FILE             check and print a hand-edited plan instead\n");
}

/* "1,3-5" -> flags[0..n). */
static bool parse_rank_set(const char *s, int n, bool *flags) {
    memset(flags, 0, sizeof *flags * (size_t)n);
    char *copy = strdup(s);
    bool ok = copy != NULL;
    for (char *t = ok ? strtok(copy, ",") : NULL; t && ok; t = strtok(NULL, ",")) {
        char *end;
        long a = strtol(t, &end, 10), b = a;
        if (end == t) ok = false;
        if (ok && *end == '-') b = strtol(end + 1, &end, 10);
        if (!ok || *end || a < 0 || b < a || b >= n) {
            ok = false;
            break;
        }
        for (long r = a; r <= b; r++) flags[r] = true;
    }
    free(copy);
    return ok;
}

int cmd_plan(int argc, char **argv) {
    const char *model = NULL, *plan_file = NULL, *mem = NULL, *stage_ranks_s = NULL, *workers_s = NULL;
    int n_ranks = 1, n_stages = 0, n_ctx = 0, n_seq = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            plan_usage(stdout);
            return 0;
        }
        if (!has) {
            fprintf(stderr, "moe plan: option %s needs a value (or is unknown)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--plan")) plan_file = v;
        else if (!strcmp(a, "--nodes-memory")) mem = v;
        else if (!strcmp(a, "--stage-ranks")) stage_ranks_s = v;
        else if (!strcmp(a, "--workers")) workers_s = v;
        else if (!strcmp(a, "--ranks")) n_ranks = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--stages")) n_stages = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--ctx")) n_ctx = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seqs")) n_seq = (int)strtol(v, &end, 10);
        else {
            fprintf(stderr, "moe plan: unknown option %s\n", a);
            plan_usage(stderr);
            return 2;
        }
        if (end && (*end || end == v)) {
            fprintf(stderr, "moe plan: %s wants a number, got '%s'\n", a, v);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "moe plan: no model (-m FILE)\n");
        return 2;
    }
    if (n_ranks < 1 || n_ranks > 4096 || n_stages < 0 || n_ctx < 0 || n_seq < 1) {
        fprintf(stderr, "moe plan: --ranks must be 1..4096, --stages/--ctx >= 0, --seqs >= 1\n");
        return 2;
    }
    char err[512];
    gguf_file *g = gguf_open(model, err, sizeof err);
    if (!g) {
        fprintf(stderr, "moe plan: %s\n", err);
        return 1;
    }
    plan_model pm;
    if (!plan_model_from_gguf(g, &pm, err, sizeof err)) {
        fprintf(stderr, "moe plan: %s: %s\n", model, err);
        gguf_close(g);
        return 1;
    }
    gguf_close(g);
    if (n_ctx == 0) n_ctx = pm.n_ctx_train > 0 && pm.n_ctx_train < 4096 ? pm.n_ctx_train : 4096;

    /* Each rank's memory: the list, else this machine's free memory. */
    int rc = 1;
    plan_hw *hw = calloc((size_t)n_ranks, sizeof *hw);
    int *stage_ranks = calloc((size_t)n_ranks + 1, sizeof *stage_ranks);
    bool *workers = calloc((size_t)n_ranks, sizeof *workers);
    moe_plan p = {0};
    if (!hw || !stage_ranks || !workers) goto out;
    hw_info self;
    hw_probe(&self);
    for (int r = 0; r < n_ranks; r++) {
        hw[r].numa_node = -1;
        hw[r].mem_capacity = self.hw.mem_capacity;
    }
    if (mem) {
        const char *s = mem;
        for (int r = 0; r < n_ranks; r++) {
            char tok[64];
            size_t n = strcspn(s, ",");
            if (n == 0 || n >= sizeof tok) {
                fprintf(stderr, "moe plan: bad --nodes-memory '%s'\n", mem);
                goto out;
            }
            memcpy(tok, s, n);
            tok[n] = 0;
            if (!plan_parse_size(tok, &hw[r].mem_capacity) || !hw[r].mem_capacity) {
                fprintf(stderr, "moe plan: bad memory size '%s' in --nodes-memory (e.g. 512G)\n", tok);
                goto out;
            }
            if (s[n] == ',') s += n + 1; /* else the last value repeats */
        }
    }
    if (plan_file) {
        if (!plan_read_text(plan_file, &pm, &p, err, sizeof err)) {
            fprintf(stderr, "moe plan: %s\n", err);
            goto out;
        }
        for (int r = 0; r < p.n_ranks && r < n_ranks; r++)
            if (!p.ranks[r].hw.mem_capacity) p.ranks[r].hw = hw[r];
        if (!plan_validate(&p, &pm, n_ranks, err, sizeof err)) {
            fprintf(stderr, "moe plan: %s: %s\n", plan_file, err);
            goto out;
        }
    } else {
        plan_opts o = {.n_ranks = n_ranks, .n_stages = n_stages, .n_ctx = n_ctx, .n_seq = n_seq};
        if (stage_ranks_s) {
            int k = 0;
            for (const char *s = stage_ranks_s; *s && k <= n_ranks;) {
                char *end;
                long v = strtol(s, &end, 10);
                if (end == s || v < 0 || v >= n_ranks || (*end && *end != ',')) {
                    k = -1;
                    break;
                }
                stage_ranks[k++] = (int)v;
                s = *end ? end + 1 : end;
            }
            if (k < 1 || k > n_ranks || (n_stages && k != n_stages)) {
                fprintf(stderr, "moe plan: bad --stage-ranks '%s' (one rank 0..%d per stage)\n", stage_ranks_s,
                        n_ranks - 1);
                goto out;
            }
            o.stage_ranks = stage_ranks;
            o.n_stages = k;
        }
        if (workers_s) {
            if (!parse_rank_set(workers_s, n_ranks, workers)) {
                fprintf(stderr, "moe plan: bad --workers '%s' (ranks 0..%d, e.g. 1-3)\n", workers_s, n_ranks - 1);
                goto out;
            }
            o.is_worker = workers;
        }
        if (!plan_compute(&pm, hw, &o, &p, err, sizeof err)) {
            fprintf(stderr, "moe plan: %s\n", err);
            goto out;
        }
    }
    plan_write_text(&p, &pm, stdout);
    /* Wire traffic: a token's hidden state goes once to each worker that
     * owns one of its experts, and one row per expert comes back. */
    int n_workers = 0;
    for (int r = 0; r < p.n_ranks; r++) n_workers += plan_experts_of_rank(&p, r) > 0;
    int k = pm.n_expert_used, dest = k < n_workers ? k : n_workers;
    printf("# wire per token per MoE layer: at most %llu bytes (f32 rows of %d values to <= %d workers, %d back)\n",
           (unsigned long long)(4ull * pm.n_embd * (uint64_t)(dest + k)), pm.n_embd, dest, k);
    rc = 0;
out:
    plan_free(&p);
    plan_model_free(&pm);
    free(hw), free(stage_ranks), free(workers);
    return rc;
}
