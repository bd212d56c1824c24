/* Tokenizer benchmark for `moe bench --tokenizer FILE`: vocabulary load
 * time and single-thread tokenization speed. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli.h"
#include "tokenizer.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
/* CPU time of this thread: on a shared machine, time spent waiting for a
 * core is not the tokenizer's. */
static double cpu(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); }

int bench_tokenizer(const char *model_path, const char *text_path) {
    static const char default_vocab[] = "../shared/fixtures/tokenizer/deepseek-v3-vocab.gguf";
    if (!model_path) model_path = default_vocab;
    size_t len;
    char *text = cli_read_file(text_path, &len);
    if (!text) {
        fprintf(stderr, "bench tokenizer: cannot read %s\n", text_path);
        return 1;
    }
    char err[512];
    double t0 = now(), c0 = cpu();
    tokenizer *t = tokenizer_load_file(model_path, err, sizeof err);
    double load = now() - t0, load_cpu = cpu() - c0;
    if (!t) {
        fprintf(stderr, "bench tokenizer: %s\n", err);
        free(text);
        return 1;
    }
    /* Best of a few runs, about a second in all: the machine is shared. */
    double best = 1e30, best_wall = 1e30, spent = 0;
    size_t n = 0;
    for (int rep = 0; rep < 10 && (rep < 2 || spent < 1.0); rep++) {
        double a = now(), ac = cpu();
        int *ids = tokenizer_encode(t, text, len, false, false, &n);
        double d = cpu() - ac, dw = now() - a;
        if (dw < best_wall) best_wall = dw;
        free(ids);
        if (!ids) {
            fprintf(stderr, "bench tokenizer: out of memory\n");
            break;
        }
        spent += d;
        if (d < best) best = d;
    }
    printf("tokenizer: %s (%d tokens, pre-tokenizer %s)\n", model_path, tokenizer_n_vocab(t),
           tokenizer_pre_name(t));
    printf("tokenizer load: %.3f s (%.3f s CPU)\n", load, load_cpu);
    printf("tokenize: %s, %zu bytes -> %zu tokens in %.3f s CPU: %.1f MB/s (1 thread; wall clock %.1f MB/s)\n",
           text_path, len, n, best, (double)len / 1e6 / best, (double)len / 1e6 / best_wall);
    tokenizer_free(t);
    free(text);
    return 0;
}
