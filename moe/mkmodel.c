/* Random-weight deepseek2 GGUF generator (see mkmodel.h). */
#include "mkmodel.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "mkvocab.h"
#include "quant.h"
#include "threadpool.h"

/* ---- presets ---- */

static const mkmodel_config presets[] = {
    /* The fixtures' tiny-v3 hyperparameters. */
    {.preset = "tiny", .n_vocab = 737, .n_embd = 256, .n_layer = 4, .n_dense_lead = 1, .n_head = 4,
     .q_lora_rank = 96, .kv_lora_rank = 64, .qk_nope = 32, .qk_rope = 16, .v_head = 32, .n_ff = 512,
     .n_ff_exp = 64, .n_expert = 16, .n_expert_used = 4, .n_expert_shared = 1, .n_group = 4,
     .n_group_used = 2, .gating = 2, .exp_bias = true, .expert_norm = true, .expert_scale = 2.5f,
     .yarn = true, .yarn_factor = 40.0f, .yarn_orig_ctx = 4096, .yarn_log_mul = 0.1f,
     .n_ctx_train = 163840, .rms_eps = 1e-6f, .rope_base = 10000.0f},
    /* ~2.1 B weights, ~1.3 GB at Q4_K_M: big enough to measure, small
     * enough to generate in seconds. */
    {.preset = "mini", .n_vocab = 3072, .n_embd = 2048, .n_layer = 6, .n_dense_lead = 1, .n_head = 16,
     .q_lora_rank = 512, .kv_lora_rank = 256, .qk_nope = 64, .qk_rope = 32, .v_head = 64, .n_ff = 5632,
     .n_ff_exp = 1024, .n_expert = 64, .n_expert_used = 6, .n_expert_shared = 1, .n_group = 8,
     .n_group_used = 3, .gating = 2, .exp_bias = true, .expert_norm = true, .expert_scale = 2.5f,
     .yarn = true, .yarn_factor = 40.0f, .yarn_orig_ctx = 4096, .yarn_log_mul = 0.1f,
     .n_ctx_train = 163840, .rms_eps = 1e-6f, .rope_base = 10000.0f},
    /* One dense and one MoE layer at DeepSeek-V3's true widths. */
    {.preset = "v3-layer", .n_vocab = 3072, .n_embd = 7168, .n_layer = 2, .n_dense_lead = 1,
     .n_head = 128, .q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64,
     .v_head = 128, .n_ff = 18432, .n_ff_exp = 2048, .n_expert = 256, .n_expert_used = 8,
     .n_expert_shared = 1, .n_group = 8, .n_group_used = 4, .gating = 2, .exp_bias = true,
     .expert_norm = true, .expert_scale = 2.5f, .yarn = true, .yarn_factor = 40.0f,
     .yarn_orig_ctx = 4096, .yarn_log_mul = 0.1f, .n_ctx_train = 163840, .rms_eps = 1e-6f,
     .rope_base = 10000.0f},
    /* V2-Lite style (widths of the fixtures' tiny-v2lite, 4 layers). */
    {.preset = "lite", .n_vocab = 737, .n_embd = 64, .n_layer = 4, .n_dense_lead = 1, .n_head = 4,
     .q_lora_rank = 0, .kv_lora_rank = 64, .qk_nope = 32, .qk_rope = 16, .v_head = 32, .n_ff = 128,
     .n_ff_exp = 32, .n_expert = 8, .n_expert_used = 2, .n_expert_shared = 2, .n_group = 1,
     .n_group_used = 1, .gating = 1, .exp_bias = false, .expert_norm = true, .expert_scale = 1.0f,
     .yarn = false, .n_ctx_train = 4096, .rms_eps = 1e-6f, .rope_base = 10000.0f},
};
#define N_PRESETS ((int)(sizeof presets / sizeof presets[0]))

const char *const *mkmodel_presets(void) {
    static const char *const names[] = {"tiny", "mini", "v3-layer", "lite", NULL};
    return names;
}

void mkmodel_opts_init(mkmodel_opts *o) {
    memset(o, 0, sizeof *o);
    o->preset = "tiny";
    o->ftype = MK_TYPE_Q4_K_M;
    o->seed = 1;
    o->expert_pool = 4;
}

/* ---- types ---- */

static const struct {
    const char *name;
    int ftype;
    int file_type; /* general.file_type (llama_ftype) */
} type_names[] = {
    {"F32", QT_F32, 0},   {"F16", QT_F16, 1},   {"BF16", QT_BF16, 32},
    {"Q8_0", QT_Q8_0, 7}, {"Q4_0", QT_Q4_0, 2}, {"Q2_K", QT_Q2_K, 10},
    {"Q3_K", QT_Q3_K, 11}, /* as Q3_K_S */
    {"Q4_K", QT_Q4_K, 14}, /* as Q4_K_S */
    {"Q5_K", QT_Q5_K, 16}, /* as Q5_K_S */
    {"Q6_K", QT_Q6_K, 18}, {"Q4_K_M", MK_TYPE_Q4_K_M, 15},
};
#define N_TYPES ((int)(sizeof type_names / sizeof type_names[0]))

int mkmodel_parse_type(const char *name) {
    for (int i = 0; i < N_TYPES; i++)
        if (!strcasecmp(name, type_names[i].name)) return type_names[i].ftype;
    return -1;
}

const char *mkmodel_type_name(int ftype) {
    for (int i = 0; i < N_TYPES; i++)
        if (type_names[i].ftype == ftype) return type_names[i].name;
    return "unknown";
}

static int file_type_of(int ftype) {
    for (int i = 0; i < N_TYPES; i++)
        if (type_names[i].ftype == ftype) return type_names[i].file_type;
    return -1;
}

/* Values per block: a fact of each encoding, kept here so the type plan
 * does not depend on which quantizers a build has. */
static int block_size(int type) {
    switch (type) {
    case QT_Q4_0: case QT_Q4_1: case QT_Q5_0: case QT_Q5_1: case QT_Q8_0: return 32;
    case QT_Q2_K: case QT_Q3_K: case QT_Q4_K: case QT_Q5_K: case QT_Q6_K: return QK_K;
    default: return 1;
    }
}

/* llama.cpp's fallback for rows its block does not divide. */
static int fallback_type(int type, int64_t ncols) {
    if (ncols % block_size(type) == 0) return type;
    switch (type) {
    case QT_Q2_K: case QT_Q3_K: type = QT_Q4_0; break;
    case QT_Q4_K: type = QT_Q5_0; break;
    case QT_Q5_K: type = QT_Q5_1; break;
    case QT_Q6_K: type = QT_Q8_0; break;
    default: return QT_F16;
    }
    return ncols % block_size(type) == 0 ? type : QT_F16;
}

/* llama.cpp's choice of layers that get more bits in its _M mixes. */
static bool use_more_bits(int il, int n_layer) {
    return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

int mkmodel_tensor_type(const mkmodel_config *c, int ftype, const char *base, int layer, int64_t ncols) {
    if (ends_with(base, "norm") || !strcmp(base, "ffn_gate_inp") || !strcmp(base, "exp_probs_b")) return QT_F32;
    if (ftype == QT_F32 || ftype == QT_F16 || ftype == QT_BF16) return ftype;
    int t = ftype;
    if (ftype == MK_TYPE_Q4_K_M) {
        bool down_like = !strcmp(base, "ffn_down") || !strcmp(base, "ffn_down_exps") ||
                         !strcmp(base, "ffn_down_shexp") || !strcmp(base, "attn_v_b") ||
                         !strcmp(base, "attn_kv_b");
        if (!strcmp(base, "output"))
            t = QT_Q6_K;
        else if (down_like && layer >= 0 && use_more_bits(layer, c->n_layer))
            t = QT_Q6_K;
        else
            t = QT_Q4_K;
    }
    return fallback_type(t, ncols);
}

/* ---- configuration ---- */

bool mkmodel_config_from(const mkmodel_opts *o, mkmodel_config *c, char *err, size_t errlen) {
    const mkmodel_config *p = NULL;
    for (int i = 0; i < N_PRESETS; i++)
        if (o->preset && !strcmp(o->preset, presets[i].preset)) p = &presets[i];
    if (!p) {
        snprintf(err, errlen, "unknown preset '%s' (presets: tiny, mini, v3-layer, lite)",
                 o->preset ? o->preset : "(none)");
        return false;
    }
    if (file_type_of(o->ftype) < 0) {
        snprintf(err, errlen, "unknown model type id %d", o->ftype);
        return false;
    }
    *c = *p;
    c->legacy_kvb = o->legacy_kvb;
    if (o->n_layers < 0 || o->n_layers > 1024) {
        snprintf(err, errlen, "--layers %d: want 1..1024", o->n_layers);
        return false;
    }
    if (o->n_layers > 0) {
        c->n_layer = o->n_layers;
        if (c->n_dense_lead > c->n_layer) c->n_dense_lead = c->n_layer;
    }
    if (o->n_experts < 0 || o->n_experts > 4096) {
        snprintf(err, errlen, "--experts %d: want 1..4096", o->n_experts);
        return false;
    }
    if (o->n_experts > 0) {
        int E = o->n_experts;
        c->n_expert = E;
        if (c->n_expert_used > E) c->n_expert_used = E;
        if (c->n_group > 1) {
            /* Groups must split the experts evenly, at least two per group
             * (a group scores by its two best), and the kept groups must
             * hold at least the experts used. */
            int g = c->n_group;
            while (g > 1 && (E % g || E / g < 2)) g--;
            int gu = c->n_group_used < g ? c->n_group_used : g;
            while (gu < g && gu * (E / g) < c->n_expert_used) gu++;
            c->n_group = g;
            c->n_group_used = g > 1 ? gu : 1;
        }
    }
    if (o->n_vocab < 0 || (o->n_vocab > 0 && o->n_vocab < MKVOCAB_MIN)) {
        snprintf(err, errlen, "--vocab %d: want at least %d", o->n_vocab, MKVOCAB_MIN);
        return false;
    }
    if (o->n_vocab > 0) c->n_vocab = o->n_vocab;
    if (o->expert_pool < 0) {
        snprintf(err, errlen, "expert pool %d: want >= 0", o->expert_pool);
        return false;
    }
    return true;
}

/* ---- the tensor plan ---- */

enum gen_kind {
    GEN_ROWS, /* row g drawn from the stream (key, g) */
    GEN_KB,   /* attn_k_b: per head, the transposed k part of attn_kv_b */
    GEN_VB,   /* attn_v_b: per head, the v rows of attn_kv_b */
};

typedef struct tplan {
    mkmodel_tensor t;   /* name, type, shape */
    char key[48];       /* name of the tensor whose value stream is used */
    int gen;            /* enum gen_kind */
    float offset;       /* values are offset + scale * z, z ~ N(0, 1) approx. */
    float scale;
    bool expert;        /* routed-expert tensor {cols, rows, E}: pool applies */
} tplan;

typedef struct plan {
    tplan *t;    /* [n] tensors in file order */
    int n, cap;  /* used / allocated entries */
} plan;

static void plan_add(plan *P, const mkmodel_config *c, int ftype, int layer, const char *base,
                     const char *suffix, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2) {
    if (P->n == P->cap) {
        P->cap = P->cap ? 2 * P->cap : 64;
        tplan *nt = realloc(P->t, (size_t)P->cap * sizeof *nt);
        if (!nt) abort();
        P->t = nt;
    }
    tplan *p = &P->t[P->n++];
    memset(p, 0, sizeof *p);
    if (layer >= 0)
        snprintf(p->t.name, sizeof p->t.name, "blk.%d.%s.%s", layer, base, suffix);
    else
        snprintf(p->t.name, sizeof p->t.name, "%s.%s", base, suffix);
    memcpy(p->key, p->t.name, sizeof p->key);
    p->t.n_dims = n_dims;
    p->t.ne[0] = ne0;
    p->t.ne[1] = ne1;
    p->t.ne[2] = ne2;
    p->t.type = mkmodel_tensor_type(c, ftype, base, layer, ne0);
    p->gen = GEN_ROWS;
    /* Scales that keep activations near unit size through the layers:
     * embeddings ~1, matrices 1/sqrt(fan-in), norms ~1, a small bias. */
    if (ends_with(base, "norm")) {
        p->offset = 1.0f;
        p->scale = 0.05f;
    } else if (!strcmp(base, "exp_probs_b")) {
        p->scale = 0.05f;
    } else if (!strcmp(base, "token_embd")) {
        p->scale = 1.0f;
    } else {
        p->scale = 1.0f / sqrtf((float)ne0);
    }
    p->expert = n_dims == 3 && strstr(base, "_exps") != NULL;
}

static void build_plan(const mkmodel_config *c, int ftype, plan *P) {
    const int64_t H = c->n_embd, V = c->n_vocab, nh = c->n_head;
    const int64_t nope = c->qk_nope, rope = c->qk_rope, vh = c->v_head, kvl = c->kv_lora_rank;
    const int64_t Fe = c->n_ff_exp, E = c->n_expert;
    memset(P, 0, sizeof *P);
    plan_add(P, c, ftype, -1, "token_embd", "weight", 2, H, V, 1);
    plan_add(P, c, ftype, -1, "output_norm", "weight", 1, H, 1, 1);
    plan_add(P, c, ftype, -1, "output", "weight", 2, H, V, 1);
    for (int il = 0; il < c->n_layer; il++) {
        plan_add(P, c, ftype, il, "attn_norm", "weight", 1, H, 1, 1);
        if (c->q_lora_rank > 0) {
            plan_add(P, c, ftype, il, "attn_q_a", "weight", 2, H, c->q_lora_rank, 1);
            plan_add(P, c, ftype, il, "attn_q_a_norm", "weight", 1, c->q_lora_rank, 1, 1);
            plan_add(P, c, ftype, il, "attn_q_b", "weight", 2, c->q_lora_rank, nh * (nope + rope), 1);
        } else {
            plan_add(P, c, ftype, il, "attn_q", "weight", 2, H, nh * (nope + rope), 1);
        }
        plan_add(P, c, ftype, il, "attn_kv_a_mqa", "weight", 2, H, kvl + rope, 1);
        plan_add(P, c, ftype, il, "attn_kv_a_norm", "weight", 1, kvl, 1, 1);
        char kvb[48];
        snprintf(kvb, sizeof kvb, "blk.%d.attn_kv_b.weight", il);
        if (c->legacy_kvb) {
            plan_add(P, c, ftype, il, "attn_kv_b", "weight", 2, kvl, nh * (nope + vh), 1);
        } else {
            /* Both cut from the attn_kv_b stream (rows of kv_lora values,
             * per head nope k rows then v_head v rows), so the split and
             * legacy files compute the same function. */
            plan_add(P, c, ftype, il, "attn_k_b", "weight", 3, nope, kvl, nh);
            memcpy(P->t[P->n - 1].key, kvb, sizeof kvb);
            P->t[P->n - 1].gen = GEN_KB;
            P->t[P->n - 1].scale = 1.0f / sqrtf((float)kvl);
            plan_add(P, c, ftype, il, "attn_v_b", "weight", 3, kvl, vh, nh);
            memcpy(P->t[P->n - 1].key, kvb, sizeof kvb);
            P->t[P->n - 1].gen = GEN_VB;
        }
        plan_add(P, c, ftype, il, "attn_output", "weight", 2, nh * vh, H, 1);
        plan_add(P, c, ftype, il, "ffn_norm", "weight", 1, H, 1, 1);
        if (il < c->n_dense_lead) {
            plan_add(P, c, ftype, il, "ffn_gate", "weight", 2, H, c->n_ff, 1);
            plan_add(P, c, ftype, il, "ffn_up", "weight", 2, H, c->n_ff, 1);
            plan_add(P, c, ftype, il, "ffn_down", "weight", 2, c->n_ff, H, 1);
            continue;
        }
        plan_add(P, c, ftype, il, "ffn_gate_inp", "weight", 2, H, E, 1);
        if (c->exp_bias) plan_add(P, c, ftype, il, "exp_probs_b", "bias", 1, E, 1, 1);
        plan_add(P, c, ftype, il, "ffn_gate_exps", "weight", 3, H, Fe, E);
        plan_add(P, c, ftype, il, "ffn_up_exps", "weight", 3, H, Fe, E);
        plan_add(P, c, ftype, il, "ffn_down_exps", "weight", 3, Fe, H, E);
        if (c->n_expert_shared > 0) {
            int64_t Fs = Fe * c->n_expert_shared;
            plan_add(P, c, ftype, il, "ffn_gate_shexp", "weight", 2, H, Fs, 1);
            plan_add(P, c, ftype, il, "ffn_up_shexp", "weight", 2, H, Fs, 1);
            plan_add(P, c, ftype, il, "ffn_down_shexp", "weight", 2, Fs, H, 1);
        }
    }
}

int mkmodel_plan(const mkmodel_config *c, int ftype, mkmodel_tensor **out) {
    plan P;
    build_plan(c, ftype, &P);
    *out = malloc((size_t)(P.n ? P.n : 1) * sizeof **out);
    if (!*out) abort();
    for (int i = 0; i < P.n; i++) (*out)[i] = P.t[i].t;
    free(P.t);
    return P.n;
}

/* ---- random numbers ----
 * Every row has its own splitmix64 stream keyed by (seed, tensor, row), so
 * rows can be made in any order on any thread with the same result. */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t row_stream(uint64_t seed, uint64_t key, int64_t row) {
    return mix64(mix64(seed + 0x9E3779B97F4A7C15ull) ^ key) ^ mix64((uint64_t)row + 0xD1B54A32D192ED03ull);
}

static uint64_t next64(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ull;
    return mix64(*s);
}

/* Approximately N(0,1): the centred sum of four 16-bit uniforms (Irwin-Hall,
 * variance 4/12 before scaling), bounded by +-3.46.  Integer sums, so
 * exactly reproducible. */
static float next_normal(uint64_t *s) {
    uint64_t r = next64(s);
    int32_t sum = (int32_t)(r & 0xFFFF) + (int32_t)((r >> 16) & 0xFFFF) + (int32_t)((r >> 32) & 0xFFFF) +
                  (int32_t)(r >> 48);
    return (float)(sum - 131070) * (1.7320508f / 65536.0f);
}

static void draw_row(const tplan *p, uint64_t seed, uint64_t key, int64_t row, float *x, int64_t n) {
    uint64_t s = row_stream(seed, key, row);
    for (int64_t i = 0; i < n; i++) x[i] = p->offset + p->scale * next_normal(&s);
}

/* ---- encoding rows ---- */

static size_t row_bytes_of(int type, int64_t n) { return qtype_row_size(type, n); }

/* Quantizes as llama-quantize does (qtype_quantize_weights), F32/F16/BF16
 * included. */
static void encode_row(int type, const float *x, uint8_t *dst, int64_t n) {
    qtype_quantize_weights(type, x, dst, n);
}

/* ---- making rows in parallel ---- */

typedef struct gen_job {
    const tplan *p;
    const mkmodel_config *c;
    uint64_t seed, key;    /* stream of the rows */
    int64_t cols;          /* row length ne[0] */
    size_t row_bytes;
    int64_t r0, r1;        /* rows [r0, r1) of the tensor ... */
    int unit;              /* ... made in units of this many rows */
    uint8_t *dst;          /* where row r0 goes */
    float **scratch;       /* per thread: room for one unit of floats */
} gen_job;

/* Makes unit u of the job's tensor (rows u*unit ..) into out. */
static void make_unit(const gen_job *j, int64_t u, uint8_t *out, float *x) {
    const tplan *p = j->p;
    const int64_t cols = j->cols;
    if (p->gen == GEN_ROWS) {
        draw_row(p, j->seed, j->key, u, x, cols);
        encode_row(p->t.type, x, out, cols);
    } else if (p->gen == GEN_VB) {
        /* row (h, r) of v_b = attn_kv_b row h*(nope+v) + nope + r */
        int64_t h = u / p->t.ne[1], r = u % p->t.ne[1];
        int64_t src = h * (j->c->qk_nope + j->c->v_head) + j->c->qk_nope + r;
        draw_row(p, j->seed, j->key, src, x, cols);
        encode_row(p->t.type, x, out, cols);
    } else { /* GEN_KB: unit = head h; its kv_lora rows of nope values */
        const int64_t nope = p->t.ne[0], kvl = p->t.ne[1];
        float *blk = x + nope; /* nope kv_b rows of kvl values */
        for (int64_t n = 0; n < nope; n++)
            draw_row(p, j->seed, j->key, u * (j->c->qk_nope + j->c->v_head) + n, blk + n * kvl, kvl);
        for (int64_t r = 0; r < kvl; r++) {
            for (int64_t n = 0; n < nope; n++) x[n] = blk[n * kvl + r];
            encode_row(p->t.type, x, out + (size_t)r * j->row_bytes, nope);
        }
    }
}

static void gen_worker(void *arg, int ith, int nth) {
    const gen_job *j = arg;
    int64_t u0 = j->r0 / j->unit, u1 = j->r1 / j->unit;
    int64_t a = u0 + (u1 - u0) * ith / nth, b = u0 + (u1 - u0) * (ith + 1) / nth;
    for (int64_t u = a; u < b; u++)
        make_unit(j, u, j->dst + (size_t)((u - u0) * j->unit) * j->row_bytes, j->scratch[ith]);
}

/* ---- progress ---- */

typedef struct progress {
    bool on;        /* print at all */
    bool tty;       /* stderr is a terminal: one updating line */
    uint64_t total; /* tensor bytes to write */
    uint64_t done;
    int last;       /* last percent printed */
} progress;

static void progress_add(progress *pr, uint64_t n) {
    pr->done += n;
    if (!pr->on) return;
    int pct = pr->total ? (int)(pr->done * 100 / pr->total) : 100;
    if (pr->tty && pct != pr->last) {
        fprintf(stderr, "\rmkmodel: %3d%% of %.1f MB", pct, (double)pr->total / 1e6);
        if (pct == 100) fputc('\n', stderr);
        pr->last = pct;
    } else if (!pr->tty && pct / 10 != pr->last / 10) {
        fprintf(stderr, "mkmodel: %d%% of %.1f MB\n", pct / 10 * 10, (double)pr->total / 1e6);
        pr->last = pct;
    }
}

/* ---- writing ---- */

static void put_metadata(gguf_writer *w, const mkmodel_config *c, int ftype, uint64_t seed,
                         const mkvocab *v) {
    char name[96];
    snprintf(name, sizeof name, "mkmodel-%s-%s-seed%llu", c->preset, mkmodel_type_name(ftype),
             (unsigned long long)seed);
    gguf_set_str(w, "general.architecture", "deepseek2");
    gguf_set_str(w, "general.name", name);
    gguf_set_u32(w, "general.file_type", (uint32_t)file_type_of(ftype));
    gguf_set_u32(w, "deepseek2.block_count", (uint32_t)c->n_layer);
    gguf_set_u32(w, "deepseek2.context_length", (uint32_t)c->n_ctx_train);
    gguf_set_u32(w, "deepseek2.embedding_length", (uint32_t)c->n_embd);
    gguf_set_u32(w, "deepseek2.feed_forward_length", (uint32_t)c->n_ff);
    gguf_set_u32(w, "deepseek2.attention.head_count", (uint32_t)c->n_head);
    gguf_set_f32(w, "deepseek2.rope.freq_base", c->rope_base);
    gguf_set_f32(w, "deepseek2.attention.layer_norm_rms_epsilon", c->rms_eps);
    gguf_set_u32(w, "deepseek2.expert_count", (uint32_t)c->n_expert);
    gguf_set_u32(w, "deepseek2.expert_used_count", (uint32_t)c->n_expert_used);
    gguf_set_u32(w, "deepseek2.expert_group_count", (uint32_t)c->n_group);
    gguf_set_u32(w, "deepseek2.expert_group_used_count", (uint32_t)c->n_group_used);
    gguf_set_u32(w, "deepseek2.expert_gating_func", (uint32_t)c->gating);
    gguf_set_u32(w, "deepseek2.leading_dense_block_count", (uint32_t)c->n_dense_lead);
    gguf_set_u32(w, "deepseek2.vocab_size", (uint32_t)c->n_vocab);
    if (c->q_lora_rank > 0) gguf_set_u32(w, "deepseek2.attention.q_lora_rank", (uint32_t)c->q_lora_rank);
    gguf_set_u32(w, "deepseek2.attention.kv_lora_rank", (uint32_t)c->kv_lora_rank);
    if (c->legacy_kvb) { /* per-head K/V view, no *_mla keys */
        gguf_set_u32(w, "deepseek2.attention.head_count_kv", (uint32_t)c->n_head);
        gguf_set_u32(w, "deepseek2.attention.key_length", (uint32_t)(c->qk_nope + c->qk_rope));
        gguf_set_u32(w, "deepseek2.attention.value_length", (uint32_t)c->v_head);
    } else { /* MLA cache view: one latent "head" */
        gguf_set_u32(w, "deepseek2.attention.head_count_kv", 1);
        gguf_set_u32(w, "deepseek2.attention.key_length", (uint32_t)(c->kv_lora_rank + c->qk_rope));
        gguf_set_u32(w, "deepseek2.attention.value_length", (uint32_t)c->kv_lora_rank);
        gguf_set_u32(w, "deepseek2.attention.key_length_mla", (uint32_t)(c->qk_nope + c->qk_rope));
        gguf_set_u32(w, "deepseek2.attention.value_length_mla", (uint32_t)c->v_head);
    }
    gguf_set_u32(w, "deepseek2.expert_feed_forward_length", (uint32_t)c->n_ff_exp);
    gguf_set_u32(w, "deepseek2.expert_shared_count", (uint32_t)c->n_expert_shared);
    gguf_set_f32(w, "deepseek2.expert_weights_scale", c->expert_scale);
    gguf_set_bool(w, "deepseek2.expert_weights_norm", c->expert_norm);
    gguf_set_u32(w, "deepseek2.rope.dimension_count", (uint32_t)c->qk_rope);
    if (c->yarn) {
        gguf_set_str(w, "deepseek2.rope.scaling.type", "yarn");
        gguf_set_f32(w, "deepseek2.rope.scaling.factor", c->yarn_factor);
        gguf_set_u32(w, "deepseek2.rope.scaling.original_context_length", (uint32_t)c->yarn_orig_ctx);
        gguf_set_f32(w, "deepseek2.rope.scaling.yarn_beta_fast", 32.0f);
        gguf_set_f32(w, "deepseek2.rope.scaling.yarn_beta_slow", 1.0f);
        gguf_set_f32(w, "deepseek2.rope.scaling.yarn_log_multiplier", c->yarn_log_mul);
    }
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", "deepseek-v3");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, (uint64_t)v->n_tokens);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, v->types, (uint64_t)v->n_tokens);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges, (uint64_t)v->n_merges);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 0);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.padding_token_id", 2);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    gguf_set_str(w, "tokenizer.chat_template", mkvocab_chat_template());
    if (ftype != QT_F32 && ftype != QT_F16 && ftype != QT_BF16)
        gguf_set_u32(w, "general.quantization_version", 2);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CHUNK_BYTES (4u << 20) /* rows made per parallel run */

/* Streams the data of tensor p: draws (or, past the expert pool, copies)
 * rows chunk by chunk and hands them to the writer. */
static bool write_tensor(gguf_writer *w, const mkmodel_config *c, const mkmodel_opts *o, const tplan *p,
                         tpool *tp, float **scratch, progress *pr, char *err, size_t errlen) {
    gen_job j = {
        .p = p, .c = c, .seed = o->seed, .key = hash_name(p->key), .cols = p->t.ne[0],
        .row_bytes = row_bytes_of(p->t.type, p->t.ne[0]), .scratch = scratch,
        .unit = p->gen == GEN_KB ? (int)p->t.ne[1] : 1,
    };
    const int64_t rows = p->t.ne[1] * p->t.ne[2];
    int64_t n_draw = rows; /* rows drawn; the rest copy drawn rows */
    if (p->expert && o->expert_pool > 0 && p->t.ne[2] > o->expert_pool) n_draw = o->expert_pool * p->t.ne[1];

    int64_t chunk = (int64_t)(CHUNK_BYTES / j.row_bytes) / j.unit * j.unit;
    if (chunk < j.unit) chunk = j.unit;
    uint8_t *pool = n_draw < rows ? malloc((size_t)n_draw * j.row_bytes) : NULL;
    uint8_t *buf = malloc((size_t)chunk * j.row_bytes);
    if (!buf || (n_draw < rows && !pool)) {
        free(pool);
        free(buf);
        snprintf(err, errlen, "out of memory for tensor %s", p->t.name);
        return false;
    }
    bool ok = true;
    for (int64_t r0 = 0, r1; ok && r0 < rows; r0 = r1) {
        r1 = r0 + chunk < rows ? r0 + chunk : rows;
        uint8_t *out = buf;
        if (r0 < n_draw) {
            if (r1 > n_draw) r1 = n_draw;
            if (pool) out = pool + (size_t)r0 * j.row_bytes;
            j.r0 = r0;
            j.r1 = r1;
            j.dst = out;
            tpool_run(tp, gen_worker, &j);
        } else {
            for (int64_t g = r0; g < r1; g++) {
                uint64_t s = row_stream(o->seed, j.key ^ 0x706F6F6Cull /* "pool" */, g);
                int64_t pick = (int64_t)(next64(&s) % (uint64_t)n_draw);
                memcpy(buf + (size_t)(g - r0) * j.row_bytes, pool + (size_t)pick * j.row_bytes, j.row_bytes);
            }
        }
        size_t n = (size_t)(r1 - r0) * j.row_bytes;
        ok = gguf_writer_write(w, out, n, err, errlen);
        progress_add(pr, n);
    }
    free(pool);
    free(buf);
    return ok;
}

bool mkmodel_write(const mkmodel_opts *o, const char *path, mkmodel_stats *st, char *err, size_t errlen) {
    double t0 = now_seconds();
    mkmodel_config c;
    if (!mkmodel_config_from(o, &c, err, errlen)) return false;
    plan P;
    build_plan(&c, o->ftype, &P);

    /* Every type must have a quantizer here, before any byte is written. */
    for (int i = 0; i < P.n; i++) {
        const mkmodel_tensor *t = &P.t[i].t;
        if (row_bytes_of(t->type, t->ne[0]) == 0) {
            snprintf(err, errlen, "tensor %s: type %s has no reference quantizer in this build", t->name,
                     qtype_name(t->type));
            free(P.t);
            return false;
        }
    }
    mkvocab v;
    if (!mkvocab_build(c.n_vocab, &v, err, errlen)) {
        free(P.t);
        return false;
    }

    gguf_writer *w = gguf_writer_new();
    if (!w) {
        snprintf(err, errlen, "out of memory");
        mkvocab_free(&v);
        free(P.t);
        return false;
    }
    put_metadata(w, &c, o->ftype, o->seed, &v);
    progress pr = {.on = o->progress, .tty = isatty(2) != 0, .last = -1};
    uint64_t n_params = 0;
    size_t scratch_floats = 0;
    for (int i = 0; i < P.n; i++) {
        const mkmodel_tensor *t = &P.t[i].t;
        gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne);
        pr.total += (uint64_t)row_bytes_of(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2]);
        n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2]);
        size_t need = (size_t)t->ne[0];
        if (P.t[i].gen == GEN_KB) need = (size_t)(t->ne[0] + t->ne[0] * t->ne[1]);
        if (need > scratch_floats) scratch_floats = need;
    }
    pr.on = pr.on && pr.total >= (64u << 20); /* only long runs */

    tpool *tp = tpool_create(o->n_threads);
    int nth = tpool_size(tp);
    float **scratch = calloc((size_t)nth, sizeof *scratch);
    bool ok = tp && scratch;
    for (int i = 0; ok && i < nth; i++) ok = (scratch[i] = malloc(scratch_floats * sizeof(float))) != NULL;
    if (!ok) snprintf(err, errlen, "out of memory");

    if (ok) ok = gguf_writer_begin(w, path, err, errlen);
    for (int i = 0; ok && i < P.n; i++) ok = write_tensor(w, &c, o, &P.t[i], tp, scratch, &pr, err, errlen);
    if (ok) ok = gguf_writer_end(w, err, errlen);
    gguf_writer_free(w); /* removes the file if it was begun and not ended */

    for (int i = 0; scratch && i < nth; i++) free(scratch[i]);
    free(scratch);
    tpool_destroy(tp);
    mkvocab_free(&v);
    if (ok && st) {
        struct stat sb;
        st->file_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        st->n_params = n_params;
        st->n_tensors = P.n;
        st->seconds = now_seconds() - t0;
    }
    free(P.t);
    return ok;
}
