#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cli_int(const char *s, long min, long max, int *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = (int)v;
    return true;
}

bool cli_u64(const char *s, unsigned long long *out) {
    if (!s || !*s || *s == '-') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

bool cli_float(const char *s, double min, double max, float *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || isnan(v) || v < min || v > max) return false;
    *out = (float)v;
    return true;
}

int *cli_ids(const char *s, int *n, char *err, size_t errlen) {
    size_t cap = 16;
    int *ids = malloc(cap * sizeof *ids);
    *n = 0;
    if (!ids) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 0x7fffffff || (*end && !strchr(" ,\t\n", *end))) {
            snprintf(err, errlen, "bad token id near '%.20s' (expected non-negative integers separated by spaces or commas)", p);
            free(ids);
            return NULL;
        }
        if ((size_t)*n == cap) {
            cap *= 2;
            int *nid = realloc(ids, cap * sizeof *ids);
            if (!nid) {
                free(ids);
                snprintf(err, errlen, "out of memory");
                return NULL;
            }
            ids = nid;
        }
        ids[(*n)++] = (int)v;
        p = end;
    }
    if (*n == 0) {
        snprintf(err, errlen, "no token ids given");
        free(ids);
        return NULL;
    }
    return ids;
}

char *cli_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n < cap - 1) break;
        cap *= 2;
        char *nb = realloc(buf, cap);
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "moe %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `moe %s --help`)\n", cmd);
    return 2;
}

int cli_engine_opt(engine_opts *o, const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    bool takes = !strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-t") || !strcmp(a, "--threads") ||
                 !strcmp(a, "--ctx") || !strcmp(a, "--plan") || !strcmp(a, "--stages");
    if (!strcmp(a, "--stats")) {
        o->stats = true;
        return 1;
    }
    if (!takes) return 0;
    if (!v) {
        cli_usage_error(cmd, "option %s needs a value", a);
        return -1;
    }
    (*i)++;
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        o->model_path = v;
    } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
        if (!cli_int(v, 1, 4096, &o->n_threads)) {
            cli_usage_error(cmd, "bad thread count '%s' (1..4096)", v);
            return -1;
        }
    } else if (!strcmp(a, "--ctx")) {
        if (!cli_int(v, 1, 1 << 24, &o->n_ctx)) {
            cli_usage_error(cmd, "bad context size '%s'", v);
            return -1;
        }
    } else if (!strcmp(a, "--plan")) {
        o->plan_path = v;
    } else if (!strcmp(a, "--stages")) {
        if (!cli_int(v, 1, 4096, &o->n_stages)) {
            cli_usage_error(cmd, "bad stage count '%s'", v);
            return -1;
        }
    }
    return 1;
}
