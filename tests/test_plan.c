/* Planner tests: sizes from a GGUF header (a fixture, and a synthetic
 * 671B-sized header on a sparse file), balance of stages and experts,
 * fits-memory rejection, the text and protobuf forms, hand-edit errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "gguf.h"
#include "plan.h"
#include "quant.h"

#define GiB ((uint64_t)1 << 30)

/* ---- a minimal GGUF v3 header writer (metadata + tensor infos only) ---- */

typedef struct { const char *name; int type; int nd; int64_t ne[3]; } tinfo;

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s) { w_u64(f, strlen(s)); fwrite(s, 1, strlen(s), f); }
static void kv_u32(FILE *f, const char *k, uint32_t v) { w_str(f, k); w_u32(f, GGUF_UINT32); w_u32(f, v); }
static void kv_str(FILE *f, const char *k, const char *v) { w_str(f, k); w_u32(f, GGUF_STRING); w_str(f, v); }

static uint64_t tbytes(const tinfo *t) {
    uint64_t rows = 1;
    for (int d = 1; d < t->nd; d++) rows *= (uint64_t)t->ne[d];
    return qtype_row_size(t->type, t->ne[0]) * rows;
}

/* Writes a DeepSeek-V3-shaped (671B) header for n tensors and extends the
 * file (sparsely) to where the data would end.  Returns the data bytes. */
static uint64_t write_v3_header(const char *path, tinfo *ts, int n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    const struct { const char *k; uint32_t v; } ints[] = {
        {"deepseek2.block_count", 61}, {"deepseek2.context_length", 163840}, {"deepseek2.embedding_length", 7168},
        {"deepseek2.feed_forward_length", 18432}, {"deepseek2.attention.head_count", 128},
        {"deepseek2.attention.head_count_kv", 1}, {"deepseek2.attention.q_lora_rank", 1536},
        {"deepseek2.attention.kv_lora_rank", 512}, {"deepseek2.attention.key_length", 576},
        {"deepseek2.attention.value_length", 512}, {"deepseek2.attention.key_length_mla", 192},
        {"deepseek2.attention.value_length_mla", 128}, {"deepseek2.rope.dimension_count", 64},
        {"deepseek2.leading_dense_block_count", 3}, {"deepseek2.expert_feed_forward_length", 2048},
        {"deepseek2.expert_count", 256}, {"deepseek2.expert_used_count", 8}, {"deepseek2.expert_shared_count", 1},
        {"deepseek2.expert_group_count", 8}, {"deepseek2.expert_group_used_count", 4},
        {"deepseek2.expert_gating_func", 2},
    };
    const int nints = (int)(sizeof ints / sizeof ints[0]);
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, (uint64_t)n);
    w_u64(f, (uint64_t)nints + 1);
    kv_str(f, "general.architecture", "deepseek2");
    for (int i = 0; i < nints; i++) kv_u32(f, ints[i].k, ints[i].v);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        w_str(f, ts[i].name);
        w_u32(f, (uint32_t)ts[i].nd);
        for (int d = 0; d < ts[i].nd; d++) w_u64(f, (uint64_t)ts[i].ne[d]);
        w_u32(f, (uint32_t)ts[i].type);
        w_u64(f, off);
        off += (tbytes(&ts[i]) + 31) / 32 * 32;
    }
    long pos = ftell(f);
    long data = (pos + 31) / 32 * 32;
    bool ok = fclose(f) == 0 && truncate(path, data + (long)off) == 0;
    return ok ? off : 0;
}

/* The tensors of DeepSeek-V3 (671B) at Q4_K_M-like types. */
static int v3_tensors(tinfo **out) {
    tinfo *t = calloc(61 * 20 + 8, sizeof *t);
    int n = 0;
    const int H = 7168, V = 129280, nh = 128;
#define T(nm, ty, d, a, b, c) t[n++] = (tinfo){strdup(nm), ty, d, {a, b, c}}
    char nm[96];
    T("token_embd.weight", QT_Q4_K, 2, H, V, 1);
    T("output_norm.weight", QT_F32, 1, H, 1, 1);
    T("output.weight", QT_Q6_K, 2, H, V, 1);
    for (int l = 0; l < 61; l++) {
#define L(what, ty, d, a, b, c) (snprintf(nm, sizeof nm, "blk.%d.%s", l, what), T(nm, ty, d, a, b, c))
        L("attn_norm.weight", QT_F32, 1, H, 1, 1);
        L("attn_q_a.weight", QT_Q4_K, 2, H, 1536, 1);
        L("attn_q_a_norm.weight", QT_F32, 1, 1536, 1, 1);
        L("attn_q_b.weight", QT_Q4_K, 2, 1536, nh * 192, 1);
        L("attn_kv_a_mqa.weight", QT_Q4_K, 2, H, 576, 1);
        L("attn_kv_a_norm.weight", QT_F32, 1, 512, 1, 1);
        L("attn_k_b.weight", QT_Q8_0, 3, 128, 512, nh);
        L("attn_v_b.weight", QT_Q4_K, 3, 512, 128, nh);
        L("attn_output.weight", QT_Q4_K, 2, nh * 128, H, 1);
        L("ffn_norm.weight", QT_F32, 1, H, 1, 1);
        if (l < 3) {
            L("ffn_gate.weight", QT_Q4_K, 2, H, 18432, 1);
            L("ffn_up.weight", QT_Q4_K, 2, H, 18432, 1);
            L("ffn_down.weight", QT_Q6_K, 2, 18432, H, 1);
        } else {
            L("ffn_gate_inp.weight", QT_F32, 2, H, 256, 1);
            L("exp_probs_b.bias", QT_F32, 1, 256, 1, 1);
            L("ffn_gate_exps.weight", QT_Q4_K, 3, H, 2048, 256);
            L("ffn_up_exps.weight", QT_Q4_K, 3, H, 2048, 256);
            /* like Q4_K_M: some layers keep a bigger down projection */
            L("ffn_down_exps.weight", l % 4 == 0 ? QT_Q6_K : QT_Q4_K, 3, 2048, H, 256);
            L("ffn_gate_shexp.weight", QT_Q4_K, 2, H, 2048, 1);
            L("ffn_up_shexp.weight", QT_Q4_K, 2, H, 2048, 1);
            L("ffn_down_shexp.weight", QT_Q6_K, 2, 2048, H, 1);
        }
#undef L
    }
#undef T
    *out = t;
    return n;
}

static void test_fixture(void) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/models/tiny-v3-Q4_K_M.gguf", fixtures_dir());
    gguf_file *g = gguf_open(path, err, sizeof err);
    CHECK(g != NULL, "open %s: %s", path, err);
    if (!g) return;
    plan_model pm;
    CHECK(plan_model_from_gguf(g, &pm, err, sizeof err), "%s", err);
    CHECK(pm.n_layer == 4 && pm.n_expert == 16 && pm.n_dense_lead == 1 && pm.n_embd == 256, "tiny-v3 shape");
    uint64_t sum = pm.coord_bytes;
    for (int l = 0; l < pm.n_layer; l++) sum += pm.layer_bytes[l] + pm.expert_bytes[l] * (uint64_t)pm.n_expert;
    CHECK(sum == pm.total_bytes, "pieces add up: %llu vs %llu", (unsigned long long)sum,
          (unsigned long long)pm.total_bytes);
    CHECK(pm.expert_bytes[0] == 0 && pm.expert_bytes[1] > 0, "dense layer has no experts");
    /* Q4_K_M: layer 1's down_exps is Q5_0, layers 2-3 Q8_0 -> bigger experts */
    CHECK(pm.expert_bytes[2] > pm.expert_bytes[1], "expert bytes follow the per-layer types");
    CHECK(pm.kv_bytes_pos == 4 * (64 + 16), "MLA cache row is kv_lora + rope floats");
    plan_model_free(&pm);
    gguf_close(g);
}

static plan_hw hw_of(uint64_t cap) { return (plan_hw){.numa_node = -1, .mem_capacity = cap}; }

static void test_671b(void) {
    char path[] = "/tmp/moe_test_plan_671b_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    tinfo *ts;
    int n = v3_tensors(&ts);
    uint64_t data = write_v3_header(path, ts, n);
    CHECK(data > 300 * GiB && data < 420 * GiB, "671B at ~4.8 bits is 300-420 GiB: %llu", (unsigned long long)data);
    char err[512];
    gguf_file *g = gguf_open(path, err, sizeof err);
    CHECK(g != NULL, "open synthetic 671B header: %s", err);
    plan_model pm = {0};
    bool have = g && plan_model_from_gguf(g, &pm, err, sizeof err);
    CHECK(have, "sizes of the 671B header: %s", err);
    if (g) gguf_close(g);
    unlink(path);
    for (int i = 0; i < n; i++) free((void *)ts[i].name);
    free(ts);
    if (!have) return;
    CHECK(pm.n_layer == 61 && pm.n_expert == 256 && pm.n_dense_lead == 3, "V3 shape");
    CHECK(pm.total_bytes <= data, "tensor bytes within the data section");

    /* One 256 GiB node cannot hold it: rejected with the reason. */
    moe_plan p;
    plan_hw one = hw_of(256 * GiB);
    plan_opts o1 = {.n_ranks = 1, .n_ctx = 4096, .n_seq = 1};
    CHECK(!plan_compute(&pm, &one, &o1, &p, err, sizeof err), "671B must not fit 256 GiB");
    CHECK(strstr(err, "does not fit") && strstr(err, "rank 0"), "message names the problem: %s", err);

    /* Four 128 GiB nodes hold it, with every rank within a few % of the others. */
    plan_hw four[4] = {hw_of(128 * GiB), hw_of(128 * GiB), hw_of(128 * GiB), hw_of(128 * GiB)};
    plan_opts o4 = {.n_ranks = 4, .n_ctx = 4096, .n_seq = 1};
    bool ok = plan_compute(&pm, four, &o4, &p, err, sizeof err);
    CHECK(ok, "671B on 4 x 128 GiB: %s", err);
    if (ok) {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int r = 0; r < 4; r++) {
            uint64_t t = plan_rank_total(&p, r);
            lo = t < lo ? t : lo;
            hi = t > hi ? t : hi;
            CHECK(t <= 128 * GiB, "rank %d fits", r);
        }
        CHECK((double)hi / (double)lo < 1.1, "memory balanced: %.3f", (double)hi / (double)lo);
        double e1 = (double)p.ranks[1].mem_experts, e3 = (double)p.ranks[3].mem_experts;
        CHECK(e1 / e3 > 0.99 && e1 / e3 < 1.01, "equal nodes hold equal expert bytes: %.3f", e1 / e3);
        CHECK(p.ranks[0].mem_experts < p.ranks[1].mem_experts, "rank 0 (coordinator + stage) holds fewer experts");
        CHECK(p.n_stages == 1, "automatic stages: one stage fits (%d)", p.n_stages);
        /* every (layer, expert) owned once, per-layer counts within 1 of each other */
        for (int l = 3; l < 61; l++) {
            int cnt[4] = {0};
            for (int e = 0; e < 256; e++) {
                int r = p.owner[l * 256 + e];
                CHECK(r >= 0 && r < 4, "owner of %d/%d", l, e);
                if (r >= 0 && r < 4) cnt[r]++;
            }
            for (int r = 1; r < 4; r++) CHECK(cnt[r] >= 60 && cnt[r] <= 70, "layer %d rank %d has %d experts", l, r, cnt[r]);
        }
        plan_free(&p);
    }

    /* Heterogeneous memory: a node with twice the memory takes about twice the experts. */
    plan_hw het[3] = {hw_of(160 * GiB), hw_of(160 * GiB), hw_of(320 * GiB)};
    plan_opts o3 = {.n_ranks = 3, .n_ctx = 4096, .n_seq = 1};
    ok = plan_compute(&pm, het, &o3, &p, err, sizeof err);
    CHECK(ok, "671B on 160+160+320 GiB: %s", err);
    if (ok) {
        double r1 = (double)p.ranks[1].mem_experts, r2 = (double)p.ranks[2].mem_experts;
        CHECK(r2 / r1 > 1.9 && r2 / r1 < 2.1, "experts follow capacity: %.2f", r2 / r1);
        plan_free(&p);
    }

    /* Stages: 61 layers over 4 stages, byte-balanced (dense layers are heavy). */
    plan_opts os = {.n_ranks = 4, .n_stages = 4, .n_ctx = 4096, .n_seq = 1};
    ok = plan_compute(&pm, four, &os, &p, err, sizeof err);
    CHECK(ok, "4 stages: %s", err);
    if (ok) {
        uint64_t mx = 0, sum = 0;
        for (int s = 0; s < 4; s++) {
            uint64_t b = p.ranks[p.stage_rank[s]].mem_stage + p.ranks[p.stage_rank[s]].mem_kv;
            mx = b > mx ? b : mx;
            sum += b;
        }
        CHECK(p.stage_layer0[0] == 0 && p.stage_layer0[4] == 61, "stages cover the layers");
        CHECK((double)mx < 1.1 * (double)sum / 4, "largest stage within 10%% of the mean");
        CHECK(p.stage_layer0[1] < 15, "the dense layers make stage 0 shorter (%d layers)", p.stage_layer0[1]);
        plan_free(&p);
    }
    plan_model_free(&pm);
}

/* A small synthetic model for the text/wire forms and hand-edit errors. */
static void small_model(plan_model *pm) {
    memset(pm, 0, sizeof *pm);
    pm->n_layer = 6, pm->n_expert = 8, pm->n_expert_used = 2, pm->n_dense_lead = 1, pm->n_embd = 64;
    pm->coord_bytes = 1000;
    pm->layer_bytes = calloc(6, sizeof *pm->layer_bytes);
    pm->expert_bytes = calloc(6, sizeof *pm->expert_bytes);
    for (int l = 0; l < 6; l++) {
        pm->layer_bytes[l] = l == 0 ? 5000 : 2000;
        pm->expert_bytes[l] = l ? 300 + 10 * (uint64_t)l : 0;
        pm->total_bytes += pm->layer_bytes[l] + 8 * pm->expert_bytes[l];
    }
    pm->total_bytes += pm->coord_bytes;
    pm->kv_bytes_pos = 8;
}

static bool same_plan(const moe_plan *a, const moe_plan *b) {
    if (a->n_ranks != b->n_ranks || a->n_stages != b->n_stages || a->n_ctx != b->n_ctx || a->n_seq != b->n_seq)
        return false;
    for (int s = 0; s < a->n_stages; s++)
        if (a->stage_rank[s] != b->stage_rank[s] || a->stage_layer0[s + 1] != b->stage_layer0[s + 1]) return false;
    return !memcmp(a->owner, b->owner, sizeof(int) * (size_t)a->n_layer * a->n_expert);
}

static const char *write_tmp(const char *text) {
    static char path[64];
    strcpy(path, "/tmp/moe_test_plan_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? path : NULL;
}

static void expect_reject(const plan_model *pm, const char *text, const char *want) {
    char err[512] = "";
    moe_plan p;
    const char *path = write_tmp(text);
    bool ok = path && plan_read_text(path, pm, &p, err, sizeof err);
    if (ok) {
        for (int r = 0; r < p.n_ranks; r++)
            if (!p.ranks[r].hw.mem_capacity) p.ranks[r].hw.mem_capacity = 1 * GiB;
        ok = plan_validate(&p, pm, 3, err, sizeof err);
        plan_free(&p);
    }
    if (path) unlink(path);
    CHECK(!ok && strstr(err, want), "plan rejected with '%s', got: %s", want, ok ? "(accepted)" : err);
}

static void test_forms(void) {
    plan_model pm;
    small_model(&pm);
    plan_hw hw[3] = {hw_of(GiB), hw_of(GiB), hw_of(GiB)};
    bool wk[3] = {false, true, true};
    int sr[2] = {0, 1};
    plan_opts o = {.n_ranks = 3, .n_stages = 2, .n_ctx = 128, .n_seq = 2, .stage_ranks = sr, .is_worker = wk};
    moe_plan p, q;
    char err[512];
    bool ok = plan_compute(&pm, hw, &o, &p, err, sizeof err);
    CHECK(ok, "small plan: %s", err);
    if (!ok) return;
    CHECK(plan_experts_of_rank(&p, 0) == 0, "rank 0 is not a worker when told so");
    CHECK(plan_experts_of_rank(&p, 1) == 20 && plan_experts_of_rank(&p, 2) == 20, "experts split evenly");

    /* text round trip */
    char path[] = "/tmp/moe_test_plan_txt_XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(f != NULL, "temp file");
    if (f) {
        plan_write_text(&p, &pm, f);
        fclose(f);
        ok = plan_read_text(path, &pm, &q, err, sizeof err);
        CHECK(ok, "read back: %s", err);
        if (ok) {
            for (int r = 0; r < 3; r++) q.ranks[r].hw = hw[r];
            CHECK(plan_validate(&q, &pm, 3, err, sizeof err), "read-back plan valid: %s", err);
            CHECK(same_plan(&p, &q), "text round trip keeps the plan");
            plan_free(&q);
        }
        unlink(path);
    }
    /* wire round trip */
    uint8_t *buf;
    size_t len;
    CHECK(plan_pack(&p, &buf, &len), "pack");
    ok = plan_unpack(buf, len, &q, err, sizeof err);
    CHECK(ok, "unpack: %s", err);
    if (ok) {
        CHECK(same_plan(&p, &q), "wire round trip keeps the plan");
        CHECK(q.ranks[2].mem_experts == p.ranks[2].mem_experts && q.ranks[1].hw.mem_capacity == GiB,
              "wire keeps per-rank memory");
        plan_free(&q);
    }
    CHECK(!plan_unpack(buf, len / 2, &q, err, sizeof err), "truncated message rejected");
    free(buf);
    plan_free(&p);

    /* The fits check is per rank. */
    plan_hw tight[3] = {hw_of(GiB), hw_of(GiB), hw_of(PLAN_RANK_OVERHEAD + 100)};
    o.stage_ranks = NULL, o.n_stages = 3, o.is_worker = NULL; /* rank 2 holds stage 2 */
    CHECK(!plan_compute(&pm, tight, &o, &p, err, sizeof err) && strstr(err, "rank 2"), "tight rank 2: %s", err);

    /* Hand-edit mistakes, each with its message. */
    const char *head = "ranks 3\nctx 16 seqs 1\n";
    char t[1024];
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers 0-5\nexperts rank 1 layers all ids 0-3\nexperts rank 2 layers 1-5 ids 3-7\n", head);
    expect_reject(&pm, t, "already belongs to rank 1");
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers 0-5\nexperts rank 1 layers all ids 0-3\nexperts rank 2 layers 1-4 ids 4-7\n", head);
    expect_reject(&pm, t, "expert 4 of layer 5 has no owner");
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers 0-2\nstage 1 rank 1 layers 4-5\nexperts rank 1 layers all ids all\n", head);
    expect_reject(&pm, t, "stage 1 starts at layer 4");
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers 0-3\nexperts rank 1 layers all ids all\n", head);
    expect_reject(&pm, t, "stages end at layer 3");
    snprintf(t, sizeof t, "%sstage 0 rank 5 layers all\nexperts rank 1 layers all ids all\n", head);
    expect_reject(&pm, t, "stage 0 is on rank 5");
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers all\nexperts rank 1 layers all ids 0-9\n", head);
    expect_reject(&pm, t, "bad expert range '0-9'");
    snprintf(t, sizeof t, "ranks 2\nstage 0 rank 0 layers all\nexperts rank 1 layers all ids all\n");
    expect_reject(&pm, t, "the plan is for 2 ranks but 3 are running");
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers all\nexperts rank 1 layers all ids all\nmemory 1 100\n", head);
    expect_reject(&pm, t, "does not fit memory: rank 1");
    snprintf(t, sizeof t, "%sstage 0 rank 0 layers all\nexpert rank 1 layers all ids all\n", head);
    expect_reject(&pm, t, "cannot parse 'expert'");

    uint64_t b;
    CHECK(plan_parse_size("512G", &b) && b == 512 * GiB, "512G");
    CHECK(plan_parse_size("1.5TiB", &b) && b == 1536 * GiB, "1.5TiB");
    CHECK(!plan_parse_size("12X", &b) && !plan_parse_size("", &b), "junk sizes rejected");
    plan_model_free(&pm);
}

int main(void) {
    test_fixture();
    test_671b();
    test_forms();
    return check_summary("test_plan");
}
