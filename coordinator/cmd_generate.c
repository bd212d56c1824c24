/* `moe generate`: prompt in, streamed tokens out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "commands.h"
#include "engine.h"
#include "sampler.h"

static void help(void) {
    printf("usage: moe generate -m MODEL (-p TEXT | --tokens IDS) [-n N] [options]\n"
           "\n"
           "Generates N tokens after the prompt and streams them to stdout.  Prompt\n"
           "and decode speeds are printed on stderr.\n"
           "\n"
           "options:\n"
           "  -p, --prompt TEXT   prompt text (tokenized with the model's tokenizer)\n"
           "      --tokens IDS    prompt as token ids, separated by spaces or commas\n"
           "  -n, --n-predict N   tokens to generate (default 64)\n"
           "      --temp T        temperature; 0 = greedy (default 0.8)\n"
           "      --top-k K       keep the K most likely tokens; 0 = off (default 40)\n"
           "      --top-p P       keep the smallest set with probability >= P (default 0.95)\n"
           "      --min-p M       drop tokens below M x the top probability (default 0.05)\n"
           "      --seed S        sampling seed (default 42)\n"
           "      --ignore-eos    keep generating after the end-of-sequence token\n"
           "      --print-ids     end with a line `ids: <generated ids>`\n" CLI_ENGINE_HELP
           "  -h, --help          this help\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cmd_generate(int argc, char **argv) {
    engine_opts eo = {0};
    const char *prompt = NULL, *tokens_s = NULL;
    int n_predict = 64;
    bool print_ids = false, ignore_eos = false;
    sampler_params sp = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 42};
    for (int i = 1; i < argc; i++) {
        int r = cli_engine_opt(&eo, "generate", argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            return 0;
        } else if (!strcmp(a, "--print-ids")) {
            print_ids = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
        } else if (!v) {
            return cli_usage_error("generate", "unknown or incomplete option '%s'", a);
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = argv[++i];
        } else if (!strcmp(a, "--tokens")) {
            tokens_s = argv[++i];
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            ok = cli_int(argv[++i], 0, 1 << 24, &n_predict);
        } else if (!strcmp(a, "--temp")) {
            ok = cli_float(argv[++i], 0, 100, &sp.temp);
        } else if (!strcmp(a, "--top-k")) {
            ok = cli_int(argv[++i], 0, 1 << 30, &sp.top_k);
        } else if (!strcmp(a, "--top-p")) {
            ok = cli_float(argv[++i], 0, 1, &sp.top_p);
        } else if (!strcmp(a, "--min-p")) {
            ok = cli_float(argv[++i], 0, 1, &sp.min_p);
        } else if (!strcmp(a, "--seed")) {
            unsigned long long s;
            ok = cli_u64(argv[++i], &s);
            sp.seed = s;
        } else {
            return cli_usage_error("generate", "unknown option '%s'", a);
        }
        if (!ok) return cli_usage_error("generate", "bad value '%s' for %s", argv[i], a);
    }
    if (!eo.model_path) return cli_usage_error("generate", "missing -m MODEL");
    if (!!prompt == !!tokens_s) return cli_usage_error("generate", "give exactly one of -p TEXT or --tokens IDS");
    if (prompt) return cli_usage_error("generate", "-p needs the tokenizer, which is not built in yet; use --tokens");

    char err[512];
    int n_prompt = 0;
    int *ids = cli_ids(tokens_s, &n_prompt, err, sizeof err);
    if (!ids) return cli_usage_error("generate", "%s", err);
    if (eo.n_ctx <= 0) eo.n_ctx = n_prompt + n_predict > 4096 ? n_prompt + n_predict : 4096;

    engine *e = engine_open(&eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "moe generate: %s\n", err);
        free(ids);
        return 1;
    }
    const moe_hparams *hp = &engine_model(e)->hp;
    const int V = hp->n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int *gen = malloc(sizeof(int) * (size_t)(n_predict > 0 ? n_predict : 1));
    sampler *s = sampler_new(&sp, V);
    int rc = 0, n_gen = 0;
    fprintf(stderr, "moe generate: %s\n", engine_desc(e));

    double t0 = now_s();
    if (!logits || !gen || !s || !engine_forward(e, 0, ids, n_prompt, 0, logits, false, err, sizeof err)) {
        fprintf(stderr, "moe generate: %s\n", logits && gen && s ? err : "out of memory");
        rc = 1;
        goto out;
    }
    double t1 = now_s();
    int pos = n_prompt;
    while (n_gen < n_predict) {
        int tok = sampler_sample(s, logits);
        gen[n_gen++] = tok;
        printf("%d ", tok);
        fflush(stdout);
        if (tok == hp->eos_id && !ignore_eos) break;
        if (n_gen == n_predict) break;
        if (!engine_forward(e, 0, &tok, 1, pos++, logits, false, err, sizeof err)) {
            fprintf(stderr, "\nmoe generate: %s\n", err);
            rc = 1;
            break;
        }
    }
    double t2 = now_s();
    printf("\n");
    if (print_ids) {
        printf("ids:");
        for (int i = 0; i < n_gen; i++) printf(" %d", gen[i]);
        printf("\n");
    }
    fprintf(stderr, "prompt: %d tokens in %.3f s (%.2f tok/s); decode: %d tokens in %.3f s (%.2f tok/s)\n",
            n_prompt, t1 - t0, n_prompt / (t1 - t0), n_gen, t2 - t1, n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0.0);
out:
    sampler_free(s);
    free(gen);
    free(logits);
    free(ids);
    engine_close(e);
    return rc;
}
