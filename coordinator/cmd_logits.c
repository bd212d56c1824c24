/* `moe logits`: raw logits of every prompt position, all positions in one
 * batch, as little-endian float32 [n_tokens][n_vocab].  With --batch FILE,
 * several sequences per engine call (engine_forward_batch), one output
 * file per sequence. */
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
           "With --batch FILE instead of --tokens, runs several sequences at once:\n"
           "each line of FILE is one request `SEQ: IDS` (logits of every row) or\n"
           "`SEQ last: IDS` (logits of the last row only); a blank line ends a batch\n"
           "(one engine call), and a sequence continues where its previous request\n"
           "ended.  `#` starts a comment.  The logits of sequence SEQ, all its\n"
           "requests in order, go to OUT.SEQ.\n"
           "\n"
           "options:\n"
           "      --tokens IDS    token ids separated by spaces or commas\n"
           "      --batch FILE    several sequences per call (see above)\n"
           "  -o, --output FILE   output file (with --batch: prefix of the files)\n" CLI_ENGINE_HELP
           "  -h, --help          this help\n");
}

/* One line of a --batch file. */
typedef struct batch_req {
    int seq;   /* sequence id */
    bool last; /* logits of the last row only */
    int *ids;  /* [n] token ids */
    int n;
    int pos0;  /* where the sequence stands before this request */
    int step;  /* engine call it belongs to */
} batch_req;

typedef struct batch_file {
    batch_req *v; /* requests, in file order */
    int n, cap;
    int n_steps;  /* engine calls */
    int max_pos;  /* longest sequence, in positions */
} batch_file;

static void batch_free(batch_file *b) {
    for (int i = 0; i < b->n; i++) free(b->v[i].ids);
    free(b->v);
}

/* Parses a --batch file; false with "FILE:LINE: why" on bad input. */
static bool batch_read(const char *path, batch_file *b, char *err, size_t errlen) {
    memset(b, 0, sizeof *b);
    char *text = cli_read_file(path, NULL);
    if (!text) return snprintf(err, errlen, "cannot read %s", path), false;
    enum { MAXS = 1 << 16 };
    int *pos = calloc(MAXS, sizeof *pos); /* positions per sequence so far */
    bool ok = pos != NULL, open_step = false;
    if (!ok) snprintf(err, errlen, "out of memory");
    int ln = 0;
    for (char *line = text, *next; ok && line; line = next) {
        ln++;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (!*p) { /* blank: the batch so far is one engine call */
            if (open_step) b->n_steps++, open_step = false;
            continue;
        }
        /* "SEQ" or "SEQ last" before the colon */
        char *colon = strchr(p, ':');
        char head[64] = "", seq_s[64] = "", flag[64] = "", extra[8] = "";
        int nw = 0;
        if (colon && colon - p < (long)sizeof head) {
            memcpy(head, p, (size_t)(colon - p));
            nw = sscanf(head, "%63s %63s %7s", seq_s, flag, extra);
        }
        batch_req r = {.step = b->n_steps};
        if (nw < 1 || nw > 2 || !cli_int(seq_s, 0, MAXS - 1, &r.seq) || (nw == 2 && strcmp(flag, "last"))) {
            ok = false;
            snprintf(err, errlen, "%s:%d: expected `SEQ: IDS` or `SEQ last: IDS` (SEQ a number below %d)", path, ln,
                     MAXS);
            break;
        }
        r.last = nw == 2;
        for (int i = b->n - 1; i >= 0 && b->v[i].step == r.step; i--)
            if (b->v[i].seq == r.seq) {
                ok = false;
                snprintf(err, errlen,
                         "%s:%d: sequence %d already has a request in this batch (a blank line starts the next)", path,
                         ln, r.seq);
            }
        char sub[200];
        if (ok && !(r.ids = cli_ids(colon + 1, &r.n, sub, sizeof sub))) {
            ok = false;
            snprintf(err, errlen, "%s:%d: %s", path, ln, sub);
        }
        if (!ok) break;
        r.pos0 = pos[r.seq];
        pos[r.seq] += r.n;
        if (pos[r.seq] > b->max_pos) b->max_pos = pos[r.seq];
        if (b->n == b->cap) {
            b->cap = b->cap ? 2 * b->cap : 16;
            batch_req *nv = realloc(b->v, sizeof *nv * (size_t)b->cap);
            if (!nv) abort();
            b->v = nv;
        }
        b->v[b->n++] = r;
        open_step = true;
    }
    if (open_step) b->n_steps++;
    if (ok && !b->n) ok = false, snprintf(err, errlen, "%s: no requests", path);
    free(pos);
    free(text);
    if (!ok) batch_free(b);
    return ok;
}

/* --batch: one engine_forward_batch per batch of the file; the logits of
 * sequence S are appended to OUT.S. */
static int run_batch(engine_opts *eo, const char *path, const char *out_path) {
    char err[512];
    batch_file b;
    if (!batch_read(path, &b, err, sizeof err)) return cli_usage_error("logits", "%s", err);
    if (eo->n_ctx <= 0) eo->n_ctx = b.max_pos > 4096 ? b.max_pos : 4096;
    engine *e = engine_open(eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "moe logits: %s\n", err);
        batch_free(&b);
        return 1;
    }
    const int V = engine_model(e)->hp.n_vocab;
    int rc = 0;
    engine_req *reqs = calloc((size_t)b.n, sizeof *reqs);
    float **lg = calloc((size_t)b.n, sizeof *lg);
    if (!reqs || !lg) abort();
    for (int i = 0; i < b.n; i++) {
        reqs[i] = (engine_req){.seq = b.v[i].seq, .tokens = b.v[i].ids, .n = b.v[i].n, .pos0 = b.v[i].pos0,
                               .all_rows = !b.v[i].last};
        lg[i] = reqs[i].logits = malloc(sizeof(float) * (size_t)V * (size_t)(b.v[i].last ? 1 : b.v[i].n));
        if (!lg[i]) {
            fprintf(stderr, "moe logits: out of memory for %d x %d logits\n", b.v[i].n, V);
            rc = 1;
        }
    }
    for (int i0 = 0, i1; rc == 0 && i0 < b.n; i0 = i1) {
        for (i1 = i0; i1 < b.n && b.v[i1].step == b.v[i0].step;) i1++;
        if (!engine_forward_batch(e, i1 - i0, reqs + i0, err, sizeof err)) {
            fprintf(stderr, "moe logits: batch %d (%s): %s\n", b.v[i0].step + 1, path, err);
            rc = 1;
        }
    }
    /* Each sequence's file: its requests in file order. */
    for (int i = 0; rc == 0 && i < b.n; i++) {
        bool first = true;
        for (int k = 0; k < i && first; k++) first = b.v[k].seq != b.v[i].seq;
        if (!first) continue;
        char name[4200];
        snprintf(name, sizeof name, "%s.%d", out_path, b.v[i].seq);
        FILE *f = fopen(name, "wb");
        for (int k = i; f && k < b.n; k++) {
            size_t cnt = (size_t)V * (size_t)(b.v[k].last ? 1 : b.v[k].n);
            if (b.v[k].seq == b.v[i].seq && fwrite(lg[k], sizeof(float), cnt, f) != cnt) fclose(f), f = NULL;
        }
        if (!f || fclose(f)) {
            fprintf(stderr, "moe logits: cannot write %s\n", name);
            rc = 1;
        }
    }
    for (int i = 0; i < b.n; i++) free(lg[i]);
    free(lg), free(reqs);
    batch_free(&b);
    engine_close(e);
    return rc;
}

int cmd_logits(int argc, char **argv) {
    engine_opts eo = {0};
    const char *tokens_s = NULL, *out_path = NULL, *batch_path = NULL;
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
        } else if (!strcmp(a, "--batch") && i + 1 < argc) {
            batch_path = argv[++i];
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc) {
            out_path = argv[++i];
        } else {
            return cli_usage_error("logits", "unknown or incomplete option '%s'", a);
        }
    }
    if (!eo.model_path) return cli_usage_error("logits", "missing -m MODEL");
    if (batch_path) {
        if (tokens_s) return cli_usage_error("logits", "--tokens and --batch exclude each other");
        if (!out_path || !strcmp(out_path, "-"))
            return cli_usage_error("logits", "--batch needs -o PREFIX (a file name)");
        return run_batch(&eo, batch_path, out_path);
    }
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
