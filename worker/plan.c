/* The cluster planner: sizes from a GGUF header, stages balanced by bytes,
 * experts spread by bytes over memory, the text and protobuf forms. */
#include "plan.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "plan.pb-c.h"

static bool fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- sizes ---- */

bool plan_model_from_gguf(const gguf_file *g, plan_model *pm, char *err, size_t errlen) {
    memset(pm, 0, sizeof *pm);
    moe_hparams hp;
    if (!moe_hparams_read(g, &hp, err, errlen)) return false;
    pm->n_layer = hp.n_layer;
    pm->n_expert = hp.n_expert;
    pm->n_expert_used = hp.n_expert_used;
    pm->n_dense_lead = hp.n_dense_lead < hp.n_layer ? hp.n_dense_lead : hp.n_layer;
    pm->n_embd = hp.n_embd;
    pm->n_ctx_train = hp.n_ctx_train;
    pm->kv_bytes_pos = sizeof(float) * (uint64_t)(hp.kv_lora_rank + hp.qk_rope);
    pm->layer_bytes = calloc((size_t)hp.n_layer + 1, sizeof *pm->layer_bytes);
    pm->expert_bytes = calloc((size_t)hp.n_layer + 1, sizeof *pm->expert_bytes);
    if (!pm->layer_bytes || !pm->expert_bytes) {
        plan_model_free(pm);
        return fail(err, errlen, "out of memory");
    }
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        pm->total_bytes += t->nbytes;
        int il = -1, off = 0;
        if (sscanf(t->name, "blk.%d.%n", &il, &off) != 1 || off == 0) {
            pm->coord_bytes += t->nbytes; /* embedding, output head, anything global */
            continue;
        }
        if (il < 0 || il >= hp.n_layer) {
            plan_model_free(pm);
            return fail(err, errlen, "tensor %s names layer %d but the model has %d layers", t->name, il,
                        hp.n_layer);
        }
        if (strstr(t->name + off, "_exps.") && hp.n_expert > 0)
            pm->expert_bytes[il] += t->nbytes / (uint64_t)hp.n_expert;
        else
            pm->layer_bytes[il] += t->nbytes;
    }
    return true;
}

void plan_model_free(plan_model *pm) {
    free(pm->layer_bytes);
    free(pm->expert_bytes);
    pm->layer_bytes = pm->expert_bytes = NULL;
}

/* ---- plan struct ---- */

bool plan_alloc(moe_plan *p, int n_ranks, int n_stages, int n_layer, int n_expert) {
    memset(p, 0, sizeof *p);
    p->n_ranks = n_ranks;
    p->n_stages = n_stages;
    p->n_layer = n_layer;
    p->n_expert = n_expert;
    p->stage_rank = calloc((size_t)n_stages + 1, sizeof *p->stage_rank);
    p->stage_layer0 = calloc((size_t)n_stages + 1, sizeof *p->stage_layer0);
    p->owner = malloc(((size_t)n_layer * n_expert + 1) * sizeof *p->owner);
    p->ranks = calloc((size_t)n_ranks + 1, sizeof *p->ranks);
    if (!p->stage_rank || !p->stage_layer0 || !p->owner || !p->ranks) {
        plan_free(p);
        return false;
    }
    for (size_t i = 0; i < (size_t)n_layer * n_expert; i++) p->owner[i] = -1;
    for (int r = 0; r < n_ranks; r++) p->ranks[r].hw.numa_node = -1;
    return true;
}

void plan_free(moe_plan *p) {
    free(p->stage_rank);
    free(p->stage_layer0);
    free(p->owner);
    free(p->ranks);
    memset(p, 0, sizeof *p);
}

uint64_t plan_rank_total(const moe_plan *p, int r) {
    const plan_rank *k = &p->ranks[r];
    return k->mem_coord + k->mem_stage + k->mem_kv + k->mem_experts + PLAN_RANK_OVERHEAD;
}

int plan_stage_of_rank(const moe_plan *p, int r, int from) {
    for (int s = from < 0 ? 0 : from; s < p->n_stages; s++)
        if (p->stage_rank[s] == r) return s;
    return -1;
}

int plan_stage_of_layer(const moe_plan *p, int layer) {
    for (int s = 0; s < p->n_stages; s++)
        if (layer >= p->stage_layer0[s] && layer < p->stage_layer0[s + 1]) return s;
    return -1;
}

int plan_experts_of_rank(const moe_plan *p, int r) {
    int n = 0;
    for (size_t i = 0; i < (size_t)p->n_layer * p->n_expert; i++) n += p->owner[i] == r;
    return n;
}

void plan_describe_rank(const moe_plan *p, int r, char *buf, size_t len) {
    size_t o = 0;
    buf[0] = 0;
#define PUT(...) o += (size_t)snprintf(buf + o, o < len ? len - o : 0, __VA_ARGS__)
    if (r == 0) PUT("coordinator");
    for (int s = plan_stage_of_rank(p, r, 0); s >= 0; s = plan_stage_of_rank(p, r, s + 1))
        PUT("%sstage %d (layers %d-%d)", o ? ", " : "", s, p->stage_layer0[s], p->stage_layer0[s + 1] - 1);
    int ne = plan_experts_of_rank(p, r);
    if (ne) PUT("%sexpert worker (%d experts)", o ? ", " : "", ne);
    if (!o) PUT("idle");
#undef PUT
}

/* Refills the per-rank estimates from the assignment. */
static void plan_estimate(moe_plan *p, const plan_model *pm) {
    for (int r = 0; r < p->n_ranks; r++) {
        plan_rank *k = &p->ranks[r];
        k->mem_coord = r == 0 ? pm->coord_bytes : 0;
        k->mem_stage = k->mem_kv = k->mem_experts = 0;
    }
    for (int s = 0; s < p->n_stages; s++) {
        plan_rank *k = &p->ranks[p->stage_rank[s]];
        for (int l = p->stage_layer0[s]; l < p->stage_layer0[s + 1]; l++) {
            k->mem_stage += pm->layer_bytes[l];
            k->mem_kv += pm->kv_bytes_pos * (uint64_t)p->n_ctx * (uint64_t)p->n_seq;
        }
    }
    for (int l = 0; l < p->n_layer; l++)
        for (int e = 0; e < p->n_expert; e++) {
            int r = p->owner[(size_t)l * p->n_expert + e];
            if (r >= 0) p->ranks[r].mem_experts += pm->expert_bytes[l];
        }
}

bool plan_validate(moe_plan *p, const plan_model *pm, int n_ranks, char *err, size_t errlen) {
    if (p->n_ranks != n_ranks)
        return fail(err, errlen, "the plan is for %d ranks but %d are running", p->n_ranks, n_ranks);
    if (p->n_layer != pm->n_layer || p->n_expert != pm->n_expert || p->n_dense_lead != pm->n_dense_lead)
        return fail(err, errlen,
                    "the plan is for a model with %d layers (%d dense), %d experts; this one has %d (%d), %d",
                    p->n_layer, p->n_dense_lead, p->n_expert, pm->n_layer, pm->n_dense_lead, pm->n_expert);
    if (p->n_ctx <= 0 || p->n_seq <= 0) return fail(err, errlen, "the plan has no ctx/seqs");
    if (p->n_stages <= 0) return fail(err, errlen, "the plan has no stages");
    if (p->stage_layer0[0] != 0) return fail(err, errlen, "stage 0 must start at layer 0");
    for (int s = 0; s < p->n_stages; s++) {
        if (p->stage_rank[s] < 0 || p->stage_rank[s] >= n_ranks)
            return fail(err, errlen, "stage %d is on rank %d, outside 0..%d", s, p->stage_rank[s], n_ranks - 1);
        if (p->stage_layer0[s + 1] <= p->stage_layer0[s])
            return fail(err, errlen, "stage %d has no layers (stages must follow in layer order)", s);
    }
    if (p->stage_layer0[p->n_stages] != p->n_layer)
        return fail(err, errlen, "the stages end at layer %d but the model has %d layers",
                    p->stage_layer0[p->n_stages] - 1, p->n_layer);
    for (int l = 0; l < p->n_layer; l++)
        for (int e = 0; e < p->n_expert; e++) {
            int r = p->owner[(size_t)l * p->n_expert + e];
            if (l < p->n_dense_lead) {
                if (r != -1) return fail(err, errlen, "layer %d is dense: it has no expert %d to place", l, e);
            } else if (r < 0) {
                return fail(err, errlen, "expert %d of layer %d has no owner", e, l);
            } else if (r >= n_ranks) {
                return fail(err, errlen, "expert %d of layer %d is on rank %d, outside 0..%d", e, l, r,
                            n_ranks - 1);
            }
        }
    plan_estimate(p, pm);
    for (int r = 0; r < n_ranks; r++) {
        uint64_t need = plan_rank_total(p, r), cap = p->ranks[r].hw.mem_capacity;
        if (need > cap) {
            char a[32], b[32], c[32], d[32], e[32], role[160];
            plan_describe_rank(p, r, role, sizeof role);
            return fail(err, errlen,
                        "the plan does not fit memory: rank %d (%s) needs %s (stage weights %s, KV %s, experts %s) "
                        "but can use %s",
                        r, role, plan_fmt_bytes(need, a, sizeof a), plan_fmt_bytes(p->ranks[r].mem_stage, b, sizeof b),
                        plan_fmt_bytes(p->ranks[r].mem_kv, c, sizeof c),
                        plan_fmt_bytes(p->ranks[r].mem_experts, d, sizeof d), plan_fmt_bytes(cap, e, sizeof e));
        }
    }
    return true;
}

/* ---- planning ---- */

/* Splits layers into k contiguous stages minimising the largest stage's
 * bytes (weights + KV): the classic linear-partition DP, O(k L^2). */
static bool partition_layers(const plan_model *pm, uint64_t kv_layer, int k, int *l0) {
    const int L = pm->n_layer;
    uint64_t *pre = calloc((size_t)L + 1, sizeof *pre);
    uint64_t *best = malloc(sizeof *best * (size_t)(k + 1) * (L + 1)); /* best[j][i]: first i layers in j stages */
    int *cut = malloc(sizeof *cut * (size_t)(k + 1) * (L + 1));
    if (!pre || !best || !cut) {
        free(pre), free(best), free(cut);
        return false;
    }
    for (int i = 0; i < L; i++) pre[i + 1] = pre[i] + pm->layer_bytes[i] + kv_layer;
#define B(j, i) best[(size_t)(j) * (L + 1) + (i)]
#define C(j, i) cut[(size_t)(j) * (L + 1) + (i)]
    for (int i = 0; i <= L; i++) B(1, i) = pre[i], C(1, i) = 0;
    for (int j = 2; j <= k; j++)
        for (int i = j; i <= L; i++) {
            B(j, i) = UINT64_MAX;
            for (int c = j - 1; c < i; c++) { /* last stage is layers [c, i) */
                uint64_t last = pre[i] - pre[c], m = B(j - 1, c) > last ? B(j - 1, c) : last;
                if (m < B(j, i)) B(j, i) = m, C(j, i) = c;
            }
        }
    l0[k] = L;
    for (int j = k, i = L; j >= 1; j--) i = l0[j - 1] = C(j, i);
#undef B
#undef C
    free(pre), free(best), free(cut);
    return true;
}

/* One try at a given stage count. */
static bool plan_try(const plan_model *pm, const plan_hw *hw, const plan_opts *o, int k, moe_plan *p,
                     char *err, size_t errlen) {
    const int R = o->n_ranks, L = pm->n_layer, E = pm->n_expert;
    if (!plan_alloc(p, R, k, L, E)) return fail(err, errlen, "out of memory");
    p->n_dense_lead = pm->n_dense_lead;
    p->n_ctx = o->n_ctx;
    p->n_seq = o->n_seq;
    for (int r = 0; r < R; r++) p->ranks[r].hw = hw[r];
    for (int s = 0; s < k; s++) p->stage_rank[s] = o->stage_ranks ? o->stage_ranks[s] : s;
    if (!partition_layers(pm, pm->kv_bytes_pos * (uint64_t)o->n_ctx * (uint64_t)o->n_seq, k, p->stage_layer0)) {
        plan_free(p);
        return fail(err, errlen, "out of memory");
    }
    plan_estimate(p, pm); /* stage and coordinator bytes, no experts yet */
    /* Each worker's share of the expert bytes is the memory it has left
     * after its other roles, so equal nodes hold equal expert bytes and a
     * bigger node holds more.  Experts go one by one to the worker furthest
     * below its share (ties: lowest rank); within every layer that gives
     * each worker its share of that layer's experts, so per-layer compute
     * is balanced too.  Each layer's experts are then laid out as
     * contiguous blocks in rank order, so ownership reads as ranges. */
    int *count = calloc((size_t)R, sizeof *count);
    uint64_t *load = calloc((size_t)R, sizeof *load);
    double *share = calloc((size_t)R, sizeof *share);
    if (!count || !load || !share) {
        free(count), free(load), free(share), plan_free(p);
        return fail(err, errlen, "out of memory");
    }
    double share_sum = 0;
    for (int r = 0; r < R; r++) {
        uint64_t fixed = plan_rank_total(p, r);
        if ((!o->is_worker || o->is_worker[r]) && hw[r].mem_capacity > fixed)
            share_sum += share[r] = (double)(hw[r].mem_capacity - fixed);
    }
    if (share_sum <= 0 && pm->n_dense_lead < L) {
        free(count), free(load), free(share), plan_free(p);
        return fail(err, errlen, "the plan does not fit memory: no expert worker has memory left after its stages");
    }
    for (int l = pm->n_dense_lead; l < L; l++) {
        uint64_t eb = pm->expert_bytes[l];
        memset(count, 0, sizeof *count * (size_t)R);
        for (int e = 0; e < E; e++) {
            int best = -1;
            double best_f = 0;
            for (int r = 0; r < R; r++) {
                if (share[r] <= 0) continue;
                double f = (double)(load[r] + eb) / share[r];
                if (best < 0 || f < best_f) best = r, best_f = f;
            }
            count[best]++;
            load[best] += eb;
        }
        for (int r = 0, e = 0; r < R; r++)
            for (int c = 0; c < count[r]; c++, e++) p->owner[(size_t)l * E + e] = r;
    }
    free(share);
    free(count), free(load);
    if (!plan_validate(p, pm, R, err, errlen)) {
        plan_free(p);
        return false;
    }
    return true;
}

bool plan_compute(const plan_model *pm, const plan_hw *hw, const plan_opts *o, moe_plan *p, char *err,
                  size_t errlen) {
    memset(p, 0, sizeof *p);
    const int R = o->n_ranks;
    if (R < 1) return fail(err, errlen, "need at least 1 rank");
    if (pm->n_layer < 1) return fail(err, errlen, "the model has no layers");
    if (o->n_ctx < 1 || o->n_seq < 1) return fail(err, errlen, "ctx and seqs must be positive");
    int max_k = o->stage_ranks ? o->n_stages : (R < pm->n_layer ? R : pm->n_layer);
    if (o->n_stages > 0 && o->n_stages > pm->n_layer)
        return fail(err, errlen, "%d stages asked for but the model has only %d layers", o->n_stages, pm->n_layer);
    if (o->n_stages > 0 && !o->stage_ranks && o->n_stages > R)
        return fail(err, errlen, "%d stages need at least %d ranks (one per stage), have %d", o->n_stages,
                    o->n_stages, R);
    if (o->stage_ranks && o->n_stages <= 0) return fail(err, errlen, "stage ranks given without a stage count");
    if (o->stage_ranks)
        for (int s = 0; s < o->n_stages; s++)
            if (o->stage_ranks[s] < 0 || o->stage_ranks[s] >= R)
                return fail(err, errlen, "stage %d on rank %d: ranks are 0..%d", s, o->stage_ranks[s], R - 1);
    bool any_worker = !o->is_worker;
    for (int r = 0; o->is_worker && r < R; r++) any_worker |= o->is_worker[r];
    if (!any_worker && pm->n_dense_lead < pm->n_layer) return fail(err, errlen, "no rank is an expert worker");
    for (int r = 0; r < R; r++)
        if (!hw[r].mem_capacity) return fail(err, errlen, "rank %d has no memory capacity", r);
    if (o->n_stages > 0) return plan_try(pm, hw, o, o->n_stages, p, err, errlen);
    /* Automatic: the fewest stages that fit (fewer hops per token). */
    for (int k = 1; k <= max_k; k++)
        if (plan_try(pm, hw, o, k, p, err, errlen) || k == max_k) return p->n_stages > 0;
    return false;
}

/* ---- text form ---- */

const char *plan_fmt_bytes(uint64_t b, char *buf, size_t len) {
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) v /= 1024, u++;
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

bool plan_parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0) return false;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1024.0 * 1024; end++; break;
    case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return false;
    if (v * mul >= 18e18) return false;
    *out = (uint64_t)(v * mul);
    return true;
}

/* Runs of one owner: blocks (rank, [l0, l1), [e0, e1)), merged over
 * consecutive layers with the same split.  Returns the count. */
typedef struct { int rank, l0, l1, e0, e1; } plan_block;

static int plan_blocks(const moe_plan *p, plan_block **out) {
    size_t cap = 16, n = 0;
    plan_block *b = malloc(cap * sizeof *b);
    for (int l = 0; b && l < p->n_layer; l++) {
        for (int e = 0; e < p->n_expert;) {
            int r = p->owner[(size_t)l * p->n_expert + e], e1 = e + 1;
            while (e1 < p->n_expert && p->owner[(size_t)l * p->n_expert + e1] == r) e1++;
            if (r >= 0) {
                size_t i = 0;
                while (i < n && !(b[i].l1 == l && b[i].rank == r && b[i].e0 == e && b[i].e1 == e1)) i++;
                if (i < n) {
                    b[i].l1 = l + 1;
                } else {
                    if (n == cap) {
                        plan_block *nb = realloc(b, (cap *= 2) * sizeof *b);
                        if (!nb) {
                            free(b);
                            *out = NULL;
                            return -1;
                        }
                        b = nb;
                    }
                    b[n++] = (plan_block){r, l, l + 1, e, e1};
                }
            }
            e = e1;
        }
    }
    *out = b;
    return b ? (int)n : -1;
}

static void put_range(FILE *out, int a, int b1) {
    if (b1 - 1 == a) fprintf(out, "%d", a);
    else fprintf(out, "%d-%d", a, b1 - 1);
}

void plan_write_text(const moe_plan *p, const plan_model *pm, FILE *out) {
    char a[32], b[32], c[32], d[32], e[32], f[32];
    fprintf(out, "# moe cluster plan: edit and pass with --plan FILE (format: worker/plan.h)\n");
    if (pm)
        fprintf(out, "# model: %d layers (%d dense), %d routed experts (%d used), %s of weights\n", pm->n_layer,
                pm->n_dense_lead, pm->n_expert, pm->n_expert_used, plan_fmt_bytes(pm->total_bytes, a, sizeof a));
    fprintf(out, "ranks %d\nctx %d seqs %d\n", p->n_ranks, p->n_ctx, p->n_seq);
    for (int s = 0; s < p->n_stages; s++) {
        fprintf(out, "stage %d rank %d layers ", s, p->stage_rank[s]);
        put_range(out, p->stage_layer0[s], p->stage_layer0[s + 1]);
        fputc('\n', out);
    }
    plan_block *blk;
    int nb = plan_blocks(p, &blk);
    for (int i = 0; i < nb; i++) {
        fprintf(out, "experts rank %d layers ", blk[i].rank);
        put_range(out, blk[i].l0, blk[i].l1);
        fprintf(out, " ids ");
        put_range(out, blk[i].e0, blk[i].e1);
        fputc('\n', out);
    }
    free(blk);
    for (int r = 0; r < p->n_ranks; r++) {
        const plan_rank *k = &p->ranks[r];
        char role[200];
        plan_describe_rank(p, r, role, sizeof role);
        fprintf(out, "# rank %d%s%s: %s\n", r, k->hw.host[0] ? " on " : "", k->hw.host, role);
        fprintf(out, "#   memory %s of %s: head %s, stage weights %s, KV %s, experts %s\n",
                plan_fmt_bytes(plan_rank_total(p, r), a, sizeof a), plan_fmt_bytes(k->hw.mem_capacity, b, sizeof b),
                plan_fmt_bytes(k->mem_coord, c, sizeof c), plan_fmt_bytes(k->mem_stage, d, sizeof d),
                plan_fmt_bytes(k->mem_kv, e, sizeof e), plan_fmt_bytes(k->mem_experts, f, sizeof f));
    }
}

/* "a-b" or "a" (inclusive) or "all" -> [lo, hi). */
static bool parse_range(const char *s, int limit, int *lo, int *hi) {
    if (!strcmp(s, "all")) {
        *lo = 0, *hi = limit;
        return true;
    }
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (end == s) return false;
    if (*end == '-') {
        const char *t = end + 1;
        b = strtol(t, &end, 10);
        if (end == t) return false;
    }
    if (*end || a < 0 || b < a || b >= limit) return false;
    *lo = (int)a, *hi = (int)b + 1;
    return true;
}

static bool parse_int(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > 1 << 30) return false;
    *out = (int)v;
    return true;
}

bool plan_read_text(const char *path, const plan_model *pm, moe_plan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    FILE *f = fopen(path, "r");
    if (!f) return fail(err, errlen, "%s: %s", path, strerror(errno));
    enum { MAXW = 12, MAXS = 4096 };
    int n_ranks = -1, n_ctx = 0, n_seq = 0, n_st = 0;
    int st_rank[MAXS], st_lo[MAXS], st_hi[MAXS];
    char line[1024];
    int ln = 0;
    bool ok = true;
    /* Two passes: the header (ranks, stages) sizes the plan, then experts
     * and memory lines fill it. */
    for (int pass = 0; pass < 2 && ok; pass++) {
        if (pass == 1) {
            if (n_ranks < 1) {
                ok = fail(err, errlen, "%s: missing 'ranks N' line", path);
                break;
            }
            if (n_st < 1) {
                ok = fail(err, errlen, "%s: no 'stage' lines", path);
                break;
            }
            if (!plan_alloc(p, n_ranks, n_st, pm->n_layer, pm->n_expert)) {
                ok = fail(err, errlen, "out of memory");
                break;
            }
            p->n_dense_lead = pm->n_dense_lead;
            p->n_ctx = n_ctx ? n_ctx : 4096;
            p->n_seq = n_seq ? n_seq : 1;
            for (int s = 0; s < n_st; s++) {
                p->stage_rank[s] = st_rank[s];
                p->stage_layer0[s] = st_lo[s];
                if (s > 0 && st_lo[s] != st_hi[s - 1]) {
                    ok = fail(err, errlen, "%s: stage %d starts at layer %d but stage %d ended at layer %d", path, s,
                              st_lo[s], s - 1, st_hi[s - 1] - 1);
                    break;
                }
            }
            p->stage_layer0[n_st] = st_hi[n_st - 1];
            rewind(f);
            ln = 0;
        }
        while (ok && fgets(line, sizeof line, f)) {
            ln++;
            char *hash = strchr(line, '#');
            if (hash) *hash = 0;
            char *w[MAXW];
            int nw = 0;
            for (char *t = strtok(line, " \t\r\n"); t && nw < MAXW; t = strtok(NULL, " \t\r\n")) w[nw++] = t;
            if (!nw) continue;
            int lo, hi, lo2, hi2, v;
            if (!strcmp(w[0], "ranks") && nw == 2) {
                if (pass == 0 && (!parse_int(w[1], &n_ranks) || n_ranks < 1))
                    ok = fail(err, errlen, "%s:%d: bad rank count '%s'", path, ln, w[1]);
            } else if (!strcmp(w[0], "ctx") && nw == 4 && !strcmp(w[2], "seqs")) {
                if (pass == 0 && (!parse_int(w[1], &n_ctx) || !parse_int(w[3], &n_seq) || n_ctx < 1 || n_seq < 1))
                    ok = fail(err, errlen, "%s:%d: bad ctx/seqs", path, ln);
            } else if (!strcmp(w[0], "stage") && nw == 6 && !strcmp(w[2], "rank") && !strcmp(w[4], "layers")) {
                if (pass == 1) continue;
                if (!parse_int(w[1], &v) || v != n_st || n_st >= MAXS)
                    ok = fail(err, errlen, "%s:%d: stages must be numbered 0, 1, ... in order", path, ln);
                else if (!parse_int(w[3], &st_rank[n_st]))
                    ok = fail(err, errlen, "%s:%d: bad rank '%s'", path, ln, w[3]);
                else if (!parse_range(w[5], pm->n_layer, &st_lo[n_st], &st_hi[n_st]))
                    ok = fail(err, errlen, "%s:%d: bad layer range '%s' (the model has layers 0-%d)", path, ln, w[5],
                              pm->n_layer - 1);
                else
                    n_st++;
            } else if (!strcmp(w[0], "experts") && nw == 7 && !strcmp(w[1], "rank") && !strcmp(w[3], "layers") &&
                       !strcmp(w[5], "ids")) {
                if (pass == 0) continue;
                if (!parse_int(w[2], &v))
                    ok = fail(err, errlen, "%s:%d: bad rank '%s'", path, ln, w[2]);
                else if (!parse_range(w[4], pm->n_layer, &lo, &hi))
                    ok = fail(err, errlen, "%s:%d: bad layer range '%s' (layers 0-%d)", path, ln, w[4], pm->n_layer - 1);
                else if (!parse_range(w[6], pm->n_expert, &lo2, &hi2))
                    ok = fail(err, errlen, "%s:%d: bad expert range '%s' (experts 0-%d)", path, ln, w[6],
                              pm->n_expert - 1);
                else /* dense layers inside the range have no experts to place */
                    for (int l = lo < pm->n_dense_lead ? pm->n_dense_lead : lo; l < hi && ok; l++)
                        for (int e = lo2; e < hi2 && ok; e++) {
                            int *o = &p->owner[(size_t)l * pm->n_expert + e];
                            if (*o >= 0)
                                ok = fail(err, errlen, "%s:%d: expert %d of layer %d already belongs to rank %d", path,
                                          ln, e, l, *o);
                            *o = v;
                        }
            } else if (!strcmp(w[0], "memory") && nw == 3) {
                if (pass == 0) continue;
                uint64_t b;
                if (!parse_int(w[1], &v) || v >= n_ranks)
                    ok = fail(err, errlen, "%s:%d: bad rank '%s'", path, ln, w[1]);
                else if (!plan_parse_size(w[2], &b))
                    ok = fail(err, errlen, "%s:%d: bad size '%s' (e.g. 512G)", path, ln, w[2]);
                else
                    p->ranks[v].hw.mem_capacity = b;
            } else {
                ok = fail(err, errlen, "%s:%d: cannot parse '%s' (see worker/plan.h for the format)", path, ln, w[0]);
            }
        }
    }
    fclose(f);
    if (!ok) plan_free(p);
    return ok;
}

/* ---- wire form ---- */

bool plan_pack(const moe_plan *p, uint8_t **buf, size_t *len) {
    Moe__Plan m = MOE__PLAN__INIT;
    m.version = 1;
    m.world_size = (uint32_t)p->n_ranks;
    m.n_layer = (uint32_t)p->n_layer;
    m.n_expert = (uint32_t)p->n_expert;
    m.n_dense_lead = (uint32_t)p->n_dense_lead;
    m.n_ctx = (uint32_t)p->n_ctx;
    m.n_seq = (uint32_t)p->n_seq;
    plan_block *blk;
    int nb = plan_blocks(p, &blk);
    Moe__PlanRank *rk = calloc((size_t)p->n_ranks, sizeof *rk);
    Moe__PlanRank **rkp = calloc((size_t)p->n_ranks, sizeof *rkp);
    Moe__PlanStage *st = calloc((size_t)p->n_stages, sizeof *st);
    Moe__PlanStage **stp = calloc((size_t)p->n_stages, sizeof *stp);
    Moe__PlanExperts *ex = calloc((size_t)(nb > 0 ? nb : 1), sizeof *ex);
    Moe__PlanExperts **exp_ = calloc((size_t)(nb > 0 ? nb : 1), sizeof *exp_);
    bool ok = nb >= 0 && rk && rkp && st && stp && ex && exp_;
    for (int r = 0; ok && r < p->n_ranks; r++) {
        const plan_rank *k = &p->ranks[r];
        moe__plan_rank__init(&rk[r]);
        rk[r].rank = (uint32_t)r;
        rk[r].host = (char *)k->hw.host;
        rk[r].numa_node = k->hw.numa_node;
        rk[r].n_cores = (uint32_t)k->hw.n_cores;
        rk[r].mem_capacity = k->hw.mem_capacity;
        rk[r].mem_coord = k->mem_coord;
        rk[r].mem_stage = k->mem_stage;
        rk[r].mem_kv = k->mem_kv;
        rk[r].mem_experts = k->mem_experts;
        rkp[r] = &rk[r];
    }
    for (int s = 0; ok && s < p->n_stages; s++) {
        moe__plan_stage__init(&st[s]);
        st[s].rank = (uint32_t)p->stage_rank[s];
        st[s].layer0 = (uint32_t)p->stage_layer0[s];
        st[s].n_layers = (uint32_t)(p->stage_layer0[s + 1] - p->stage_layer0[s]);
        stp[s] = &st[s];
    }
    for (int i = 0; ok && i < nb; i++) {
        moe__plan_experts__init(&ex[i]);
        ex[i].rank = (uint32_t)blk[i].rank;
        ex[i].layer0 = (uint32_t)blk[i].l0;
        ex[i].layer1 = (uint32_t)blk[i].l1;
        ex[i].expert0 = (uint32_t)blk[i].e0;
        ex[i].expert1 = (uint32_t)blk[i].e1;
        exp_[i] = &ex[i];
    }
    if (ok) {
        m.n_ranks = (size_t)p->n_ranks;
        m.ranks = rkp;
        m.n_stages = (size_t)p->n_stages;
        m.stages = stp;
        m.n_experts = (size_t)nb;
        m.experts = exp_;
        *len = moe__plan__get_packed_size(&m);
        *buf = malloc(*len ? *len : 1);
        ok = *buf != NULL;
        if (ok) moe__plan__pack(&m, *buf);
    }
    free(blk), free(rk), free(rkp), free(st), free(stp), free(ex), free(exp_);
    return ok;
}

bool plan_unpack(const uint8_t *buf, size_t len, moe_plan *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    Moe__Plan *m = moe__plan__unpack(NULL, len, buf);
    if (!m) return fail(err, errlen, "the plan message does not decode");
    bool ok = true;
    const uint32_t lim = 1u << 24;
    if (m->version != 1 || m->world_size < 1 || m->world_size > lim || m->n_ranks != m->world_size ||
        m->n_stages < 1 || m->n_stages > lim || m->n_layer > lim || m->n_expert > lim ||
        (uint64_t)m->n_layer * m->n_expert > lim)
        ok = fail(err, errlen, "the plan message is malformed");
    else if (!plan_alloc(p, (int)m->world_size, (int)m->n_stages, (int)m->n_layer, (int)m->n_expert))
        ok = fail(err, errlen, "out of memory");
    if (ok) {
        p->n_dense_lead = (int)m->n_dense_lead;
        p->n_ctx = (int)m->n_ctx;
        p->n_seq = (int)m->n_seq;
        for (size_t r = 0; r < m->n_ranks; r++) {
            const Moe__PlanRank *k = m->ranks[r];
            plan_rank *d = &p->ranks[r];
            snprintf(d->hw.host, sizeof d->hw.host, "%s", k->host ? k->host : "");
            d->hw.numa_node = k->numa_node;
            d->hw.n_cores = (int)k->n_cores;
            d->hw.mem_capacity = k->mem_capacity;
            d->mem_coord = k->mem_coord;
            d->mem_stage = k->mem_stage;
            d->mem_kv = k->mem_kv;
            d->mem_experts = k->mem_experts;
        }
        for (size_t s = 0; s < m->n_stages; s++) {
            p->stage_rank[s] = (int)m->stages[s]->rank;
            p->stage_layer0[s] = (int)m->stages[s]->layer0;
            p->stage_layer0[s + 1] = (int)(m->stages[s]->layer0 + m->stages[s]->n_layers);
        }
        for (size_t i = 0; i < m->n_experts && ok; i++) {
            const Moe__PlanExperts *x = m->experts[i];
            if (x->layer1 > m->n_layer || x->expert1 > m->n_expert || x->layer0 > x->layer1 || x->expert0 > x->expert1)
                ok = fail(err, errlen, "the plan message has an expert block out of range");
            for (uint32_t l = x->layer0; ok && l < x->layer1; l++)
                for (uint32_t e = x->expert0; e < x->expert1; e++) p->owner[(size_t)l * m->n_expert + e] = (int)x->rank;
        }
    }
    moe__plan__free_unpacked(m, NULL);
    if (!ok) plan_free(p);
    return ok;
}
