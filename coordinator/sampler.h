/* Token sampling from logits: greedy, or temperature with top-k, top-p and
 * min-p filters (applied in that order, as llama.cpp's default chain). */
#ifndef MOE_SAMPLER_H
#define MOE_SAMPLER_H

#include <stdint.h>

typedef struct sampler_params {
    float temp;   /* <= 0: greedy (argmax, lowest id on ties) */
    int top_k;    /* 0: off */
    float top_p;  /* 1: off */
    float min_p;  /* 0: off */
    uint64_t seed;
} sampler_params;

typedef struct sampler sampler;

sampler *sampler_new(const sampler_params *p, int n_vocab);
void sampler_free(sampler *s);
int sampler_sample(sampler *s, const float *logits);
int sampler_argmax(const float *logits, int n);

#endif
