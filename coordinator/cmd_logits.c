/* `moe logits`: raw logits of every prompt position, all positions in one
 * batch, as little-endian float32 [n_tokens][n_vocab]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "engine.h"

static void help(void) {
    printf("usage: moe logits -m MODEL --tokens \"0 284 620\" -o OUT [options]\n"
           "\n"
           "Runs the prompt through the model in one batch and writes the logits of\n"
           "every position to OUT: raw little-endian float32, [n_tokens][n_vocab],\n"
           "no header (use -o - for stdout).\n"
           "\n"
           "options:\n"
           "      --tokens IDS    token ids separated by spaces or commas\n"
           "  -o, --output FILE   output file\n" CLI_ENGINE_HELP
           "  -h, --help          this help\n");
}

int cmd_logits(int argc, char **argv) {
    engine_opts eo = {0};
    const char *tokens_s = NULL, *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        int r = cli_engine_opt(&eo, "logits", argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            return 0;
        } else if (!strcmp(a, "--tokens") && i + 1 < argc) {
            tokens_s = argv[++i];
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) {
            out_path = argv[++i];
        } else {
            return cli_usage_error("logits", "unknown or incomplete option '%s'", a);
        }
    }
    if (!eo.model_path) return cli_usage_error("logits", "missing -m MODEL");
    if (!tokens_s) return cli_usage_error("logits", "missing --tokens IDS");
    if (!out_path) return cli_usage_error("logits", "missing -o OUT");
    char err[512];
    int n;
    int *ids = cli_ids(tokens_s, &n, err, sizeof err);
    if (!ids) return cli_usage_error("logits", "%s", err);
    if (eo.n_ctx <= 0) eo.n_ctx = n > 4096 ? n : 4096;

    engine *e = engine_open(&eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "moe logits: %s\n", err);
        free(ids);
        return 1;
    }
    const int V = engine_model(e)->hp.n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    int rc = 0;
    if (!logits) {
        fprintf(stderr, "moe logits: out of memory for %d x %d logits\n", n, V);
        rc = 1;
    } else if (!engine_forward(e, 0, ids, n, 0, logits, true, err, sizeof err)) {
        fprintf(stderr, "moe logits: %s\n", err);
        rc = 1;
    } else {
        FILE *f = strcmp(out_path, "-") ? fopen(out_path, "wb") : stdout;
        if (!f || fwrite(logits, sizeof(float), (size_t)n * V, f) != (size_t)n * V || (f != stdout && fclose(f))) {
            fprintf(stderr, "moe logits: cannot write %s\n", out_path);
            rc = 1;
        }
    }
    free(logits);
    free(ids);
    engine_close(e);
    return rc;
}
