#include "sampler.h"

#include <math.h>
#include <stdlib.h>

typedef struct { float logit; int id; } cand;

struct sampler {
    sampler_params p;
    int n_vocab;
    uint64_t rng;  /* splitmix64 state */
    cand *c;       /* [n_vocab] scratch */
};

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

sampler *sampler_new(const sampler_params *p, int n_vocab) {
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed;
    s->c = malloc(sizeof(cand) * (size_t)n_vocab);
    if (!s->c) {
        free(s);
        return NULL;
    }
    return s;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->c);
    free(s);
}

int sampler_argmax(const float *logits, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[b]) b = i;
    return b;
}

static int cand_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

int sampler_sample(sampler *s, const float *logits) {
    if (s->p.temp <= 0.0f) return sampler_argmax(logits, s->n_vocab);
    int n = s->n_vocab;
    for (int i = 0; i < n; i++) s->c[i] = (cand){logits[i], i};
    qsort(s->c, (size_t)n, sizeof(cand), cand_desc);
    if (s->p.top_k > 0 && s->p.top_k < n) n = s->p.top_k;

    /* probabilities at temperature 1 for the top-p / min-p filters */
    double sum = 0.0;
    const float mx = s->c[0].logit;
    for (int i = 0; i < n; i++) sum += exp((double)s->c[i].logit - mx);
    if (s->p.top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)s->c[i].logit - mx) / sum;
            if (cum >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0.0f) {
        /* p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p) */
        const double cut = mx + log((double)s->p.min_p);
        int keep = 1;
        while (keep < n && s->c[keep].logit >= cut) keep++;
        n = keep;
    }
    sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp(((double)s->c[i].logit - mx) / s->p.temp);
    const double r = (double)(splitmix64(&s->rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += exp(((double)s->c[i].logit - mx) / s->p.temp);
        if (r < acc) return s->c[i].id;
    }
    return s->c[n - 1].id;
}
