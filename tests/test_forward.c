/* The forward pass against llama.cpp's logits for the fixture models
 * (../shared/fixtures/models, see its README):
 *   F32 models: max |logit - reference| <= 1e-3 on every row, and the 16
 *               greedy continuation ids identical;
 *   others:     top-1 identical on every row, mean |diff| <= 0.01, max
 *               |diff| <= 0.1, greedy ids identical for >= 90% of pairs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli.h"
#include "engine.h"

#define MAX_IDS 128

typedef struct {
    char model[128], prompt[8], logits_file[160];
    int n_vocab, n_prompt, prompt_ids[MAX_IDS], greedy[16];
} manifest_row;

static int parse_ids(char *s, int *out, int max) {
    int n = 0;
    for (char *tok = strtok(s, " "); tok && n < max; tok = strtok(NULL, " ")) out[n++] = atoi(tok);
    return n;
}

static int read_manifest(const char *path, manifest_row *rows, int max) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[8192];
    int n = 0;
    if (!fgets(line, sizeof line, f)) { fclose(f); return -1; } /* header */
    while (n < max && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *cols[6];
        int nc = 0;
        for (char *p = line; nc < 6; ) {
            cols[nc++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        if (nc != 6) continue;
        manifest_row *r = &rows[n];
        snprintf(r->model, sizeof r->model, "%s", cols[0]);
        snprintf(r->prompt, sizeof r->prompt, "%s", cols[1]);
        r->n_vocab = atoi(cols[2]);
        r->n_prompt = parse_ids(cols[3], r->prompt_ids, MAX_IDS);
        if (parse_ids(cols[4], r->greedy, 16) != 16) continue;
        snprintf(r->logits_file, sizeof r->logits_file, "%s", cols[5]);
        n++;
    }
    fclose(f);
    return n;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

int main(void) {
    char path[512], err[512];
    manifest_row rows[64];
    snprintf(path, sizeof path, "%s/models/manifest.tsv", fixtures_dir());
    int nrows = read_manifest(path, rows, 64);
    CHECK(nrows == 27, "manifest %s: %d rows read, expected 27", path, nrows);
    int quant_pairs = 0, quant_greedy_ok = 0;
    for (int r = 0; r < nrows; r++) {
        manifest_row *row = &rows[r];
        const bool f32 = strstr(row->model, "-f32") != NULL;
        if (snprintf(path, sizeof path, "%s/models/%s.gguf", fixtures_dir(), row->model) >= (int)sizeof path) continue;
        engine_opts eo = {.model_path = path, .n_threads = 2, .n_ctx = 256};
        engine *e = engine_open(&eo, err, sizeof err);
        CHECK(e != NULL, "%s: %s", row->model, err);
        if (!e) continue;
        const int V = engine_model(e)->hp.n_vocab, n = row->n_prompt;
        CHECK(V == row->n_vocab, "%s: n_vocab %d, manifest %d", row->model, V, row->n_vocab);

        /* reference logits */
        if (snprintf(path, sizeof path, "%s/models/%s", fixtures_dir(), row->logits_file) >= (int)sizeof path) continue;
        size_t len = 0;
        float *ref = (float *)cli_read_file(path, &len);
        CHECK(ref && len == sizeof(float) * (size_t)n * V, "%s: bad reference file (%zu bytes)", path, len);
        float *lg = malloc(sizeof(float) * (size_t)n * V);
        bool ok = ref && len == sizeof(float) * (size_t)n * V &&
                  engine_forward(e, 0, row->prompt_ids, n, 0, lg, true, err, sizeof err);
        CHECK(ok, "%s %s: forward failed: %s", row->model, row->prompt, err);
        if (ok) {
            double maxd = 0, sumd = 0;
            int top1_bad = 0;
            float row_max_worst = 0;
            for (int t = 0; t < n; t++) {
                float rmax = 0;
                for (int i = 0; i < V; i++) {
                    double d = fabs((double)lg[(size_t)t * V + i] - ref[(size_t)t * V + i]);
                    if (!(d <= 1e30)) d = 1e30; /* NaN counts as huge */
                    sumd += d;
                    if (d > maxd) maxd = d;
                    if (d > rmax) rmax = (float)d;
                }
                if (rmax > row_max_worst) row_max_worst = rmax;
                if (argmax(lg + (size_t)t * V, V) != argmax(ref + (size_t)t * V, V)) top1_bad++;
            }
            double meand = sumd / ((double)n * V);
            printf("%-24s %s: rows %2d  max|diff| %.3e  mean|diff| %.3e  top-1 mismatches %d\n", row->model,
                   row->prompt, n, maxd, meand, top1_bad);
            if (f32) {
                CHECK(maxd <= 1e-3, "%s %s: max |diff| %.3e > 1e-3", row->model, row->prompt, maxd);
            } else {
                CHECK(top1_bad == 0, "%s %s: %d rows with a different top-1", row->model, row->prompt, top1_bad);
                CHECK(meand <= 0.01, "%s %s: mean |diff| %.3e > 0.01", row->model, row->prompt, meand);
                CHECK(maxd <= 0.1, "%s %s: max |diff| %.3e > 0.1", row->model, row->prompt, maxd);
            }
        }

        /* greedy continuation: token 1 from the last prompt row, then one
         * token per decode step through the KV cache */
        int gen[16], pos = n;
        if (ok) {
            int next = argmax(lg + (size_t)(n - 1) * V, V);
            for (int k = 0; k < 16 && ok; k++) {
                gen[k] = next;
                ok = engine_forward(e, 0, &next, 1, pos++, lg, false, err, sizeof err);
                next = argmax(lg, V);
            }
            CHECK(ok, "%s %s: decode failed: %s", row->model, row->prompt, err);
        }
        int same = 0;
        for (int k = 0; ok && k < 16; k++) same += gen[k] == row->greedy[k];
        printf("%-24s %s: greedy %d/16 identical\n", row->model, row->prompt, same);
        if (f32) {
            CHECK(same == 16, "%s %s: greedy ids differ (%d/16 same)", row->model, row->prompt, same);
        } else {
            quant_pairs++;
            quant_greedy_ok += same == 16;
        }
        free(lg);
        free(ref);
        engine_close(e);
    }
    printf("quantized models: greedy identical for %d of %d pairs\n", quant_greedy_ok, quant_pairs);
    CHECK(quant_pairs > 0 && quant_greedy_ok * 10 >= quant_pairs * 9, "greedy identical for only %d of %d pairs",
          quant_greedy_ok, quant_pairs);
    return check_summary("test_forward");
}
