/* The model generator (moe/mkmodel.h) and its vocabulary (moe/mkvocab.h):
 *   - generated files have the layout of llama.cpp's files: keys, key
 *     types and order, tensor names, order, shapes and types compared with
 *     the fixtures (tiny-v3 F32 / legacy / Q4_K_M, tiny-v2lite at 27
 *     layers), byte tokens and specials equal to the fixtures' vocabulary,
 *     the chat template equal to DeepSeek-V3's;
 *   - tiny at every --type and lite load with moe_model_load and give
 *     finite logits from moe_forward_local; F16/BF16/Q8_0 logits follow
 *     the F32 ones (same weights); legacy attn_kv_b computes what the split
 *     layout does;
 *   - same seed -> same bytes whatever the thread count; another seed ->
 *     other bytes; fewer layers / experts keep the remaining weights;
 *   - the Q4_K_M mix, the v3-layer widths and the --experts group fitting;
 *   - mini (shrunk) loads; bad options give errors, not files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "forward.h"
#include "gguf.h"
#include "mkmodel.h"
#include "mkvocab.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"

static char tmpdir[64];

static const char *tmp_path(const char *name) {
    static char buf[8][160];
    static int k;
    char *p = buf[k++ & 7];
    snprintf(p, 160, "%s/%s", tmpdir, name);
    return p;
}

static const char *fixture(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", fixtures_dir(), name);
    return p;
}

static bool gen(const char *preset, int ftype, uint64_t seed, const char *path, mkmodel_opts *extra) {
    mkmodel_opts o;
    if (extra)
        o = *extra;
    else
        mkmodel_opts_init(&o);
    o.preset = preset;
    o.ftype = ftype;
    o.seed = seed;
    char err[256];
    bool ok = mkmodel_write(&o, path, NULL, err, sizeof err);
    CHECK(ok, "mkmodel %s %s: %s", preset, mkmodel_type_name(ftype), err);
    return ok;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(len > 0 ? (size_t)len : 1);
    *n = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    return b;
}

static int same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    unsigned char *x = read_all(a, &na), *y = read_all(b, &nb);
    int same = x && y && na == nb && na > 0 && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* Logits of tokens[0..n) at positions 0.. (all rows); NULL on failure. */
static float *run_logits(const char *path, const int *tokens, int n, int *n_vocab) {
    char err[256];
    moe_model *m = moe_model_load(path, err, sizeof err);
    CHECK(m != NULL, "load %s: %s", path, err);
    if (!m) return NULL;
    int V = m->hp.n_vocab;
    *n_vocab = V;
    moe_kvcache *kv = moe_kvcache_new(&m->hp, 0, m->hp.n_layer, 32);
    float *logits = malloc((size_t)n * (size_t)V * sizeof(float));
    bool ok = kv && logits && moe_forward_local(m, kv, tokens, n, 0, logits, false, NULL);
    CHECK(ok, "forward %s", path);
    moe_kvcache_free(kv);
    moe_model_free(m);
    if (!ok) {
        free(logits);
        return NULL;
    }
    return logits;
}

static bool all_finite_and_varied(const float *x, size_t n) {
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) return false;
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
    }
    return hi - lo > 1e-3f;
}

static double correlation(const float *a, const float *b, size_t n) {
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; i++) ma += a[i], mb += b[i];
    ma /= (double)n;
    mb /= (double)n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / sqrt(saa * sbb + 1e-30);
}

/* ---- layout against a llama.cpp-made fixture ---- */

/* Same metadata keys in the same order with the same value types; the
 * deepseek2.* values equal.  Skips general.name and the chat template
 * (the fixtures carry a short one). */
static void compare_layout(const char *ours, const char *theirs, bool same_order) {
    char err[256];
    gguf_file *a = gguf_open(ours, err, sizeof err);
    CHECK(a != NULL, "open %s: %s", ours, err);
    gguf_file *b = gguf_open(theirs, err, sizeof err);
    CHECK(b != NULL, "open fixture %s: %s", theirs, err);
    if (!a || !b) {
        gguf_close(a);
        gguf_close(b);
        return;
    }
    CHECK(gguf_n_kv(a) == gguf_n_kv(b), "%s: %d keys, fixture %d", ours, gguf_n_kv(a), gguf_n_kv(b));
    for (int i = 0; i < gguf_n_kv(b); i++) {
        const char *key = gguf_kv_key(b, i);
        int ia = same_order ? i : gguf_find_key(a, key);
        if (ia < 0 || ia >= gguf_n_kv(a) || strcmp(gguf_kv_key(a, ia), key)) {
            CHECK(0, "%s: key %s missing or out of order", ours, key);
            continue;
        }
        CHECK(gguf_kv_type(a, ia) == gguf_kv_type(b, i), "%s: key %s type %d, fixture %d", ours, key,
              gguf_kv_type(a, ia), gguf_kv_type(b, i));
        if (!strncmp(key, "deepseek2.", 10) || !strncmp(key, "tokenizer.ggml.", 15)) {
            enum gguf_vtype et;
            uint64_t na, nb;
            if (gguf_kv_type(b, i) == GGUF_ARRAY) {
                CHECK(gguf_get_arr(a, key, &et, &na) && gguf_get_arr(b, key, &et, &nb) && na == nb,
                      "%s: array %s length differs", ours, key);
            } else {
                char va[256], vb[256];
                gguf_kv_to_string(a, ia, va, sizeof va);
                gguf_kv_to_string(b, i, vb, sizeof vb);
                CHECK(!strcmp(va, vb), "%s: %s = %s, fixture %s", ours, key, va, vb);
            }
        }
    }
    /* Tensors: names, shapes (and, in F32 files, types) as the fixture. */
    CHECK(gguf_n_tensors(a) == gguf_n_tensors(b), "%s: %d tensors, fixture %d", ours, gguf_n_tensors(a),
          gguf_n_tensors(b));
    for (int i = 0; i < gguf_n_tensors(b); i++) {
        const gguf_tensor *tb = gguf_tensor_at(b, i);
        const gguf_tensor *ta = same_order ? (i < gguf_n_tensors(a) ? gguf_tensor_at(a, i) : NULL)
                                           : gguf_find_tensor(a, tb->name);
        if (!ta || strcmp(ta->name, tb->name)) {
            CHECK(0, "%s: tensor %s missing or out of order", ours, tb->name);
            continue;
        }
        CHECK(ta->n_dims == tb->n_dims && !memcmp(ta->ne, tb->ne, sizeof ta->ne), "%s: %s shape differs", ours,
              tb->name);
        CHECK(ta->type == tb->type || strstr(tb->name, "attn_v_b"), "%s: %s type %s, fixture %s", ours, tb->name,
              qtype_name(ta->type), qtype_name(tb->type));
    }
    gguf_close(a);
    gguf_close(b);
}

/* Vocabulary and chat template of a generated file. */
static void check_vocab_file(const char *path) {
    char err[256];
    gguf_file *a = gguf_open(path, err, sizeof err);
    gguf_file *ref = gguf_open(fixture("models/tiny-v3-f32.gguf"), err, sizeof err);
    gguf_file *v3 = gguf_open(fixture("tokenizer/deepseek-v3-vocab.gguf"), err, sizeof err);
    CHECK(a && ref && v3, "open vocab files: %s", err);
    if (a && ref && v3) {
        /* specials and the 256 byte tokens are the fixtures' */
        uint64_t la, lb;
        int ids[] = {0, 1, 2, 735, 736};
        for (int k = 0; k < 5; k++) {
            const char *sa = gguf_get_arr_str(a, "tokenizer.ggml.tokens", (uint64_t)ids[k], &la);
            const char *sb = gguf_get_arr_str(ref, "tokenizer.ggml.tokens", (uint64_t)ids[k], &lb);
            CHECK(sa && sb && la == lb && !memcmp(sa, sb, la), "special token %d differs", ids[k]);
        }
        int bad = 0;
        for (uint64_t id = 3; id < 259; id++) {
            const char *sa = gguf_get_arr_str(a, "tokenizer.ggml.tokens", id, &la);
            const char *sb = gguf_get_arr_str(ref, "tokenizer.ggml.tokens", id, &lb);
            bad += !(sa && sb && la == lb && !memcmp(sa, sb, la));
        }
        CHECK(bad == 0, "%d byte tokens differ from the fixture's", bad);
        const int32_t *ta = gguf_get_arr_data(a, "tokenizer.ggml.token_type");
        const int32_t *tb = gguf_get_arr_data(ref, "tokenizer.ggml.token_type");
        CHECK(ta && tb && !memcmp(ta, tb, 737 * sizeof(int32_t)), "token types differ from the fixture's");
        const char *ca = gguf_get_str(a, "tokenizer.chat_template", &la);
        const char *cb = gguf_get_str(v3, "tokenizer.chat_template", &lb);
        CHECK(ca && cb && la == lb && !memcmp(ca, cb, la), "chat template is not DeepSeek-V3's");
    }
    gguf_close(a);
    gguf_close(ref);
    gguf_close(v3);
}

/* ---- the vocabulary builder ---- */

static void test_vocab(void) {
    mkvocab v, w;
    char err[256];
    CHECK(mkvocab_build(737, &v, err, sizeof err), "build 737: %s", err);
    CHECK(mkvocab_build(1500, &w, err, sizeof err), "build 1500: %s", err);
    CHECK(v.n_tokens == 737 && v.n_merges == 737 - MKVOCAB_MIN, "737: %d tokens %d merges", v.n_tokens,
          v.n_merges);
    /* every merge makes the token of its rank; no token twice; the
     * smaller vocabulary is a prefix of the larger one */
    int bad_merge = 0, dup = 0, not_prefix = 0, space_inside = 0;
    for (int m = 0; m < v.n_merges; m++) {
        char cat[256];
        const char *sp = strchr(v.merges[m], ' ');
        snprintf(cat, sizeof cat, "%.*s%s", (int)(sp - v.merges[m]), v.merges[m], sp + 1);
        bad_merge += strcmp(cat, v.tokens[259 + m]) != 0;
        not_prefix += strcmp(v.merges[m], w.merges[m]) != 0;
        /* "Ġ" (U+0120) only leads a token: merges never join across a
         * space+word boundary */
        const char *tok = v.tokens[259 + m];
        while (!strncmp(tok, "\xC4\xA0", 2)) tok += 2;
        space_inside += strstr(tok, "\xC4\xA0") != NULL;
    }
    for (int i = 0; i < v.n_tokens; i++)
        for (int k = i + 1; k < v.n_tokens; k++) dup += !strcmp(v.tokens[i], v.tokens[k]);
    CHECK(bad_merge == 0, "%d merges do not make their token", bad_merge);
    CHECK(dup == 0, "%d duplicate tokens", dup);
    CHECK(not_prefix == 0, "737-token merges are not a prefix of the 1500-token ones");
    CHECK(space_inside == 0, "%d tokens hold a space after their start", space_inside);
    CHECK(v.types[0] == MKV_CONTROL && v.types[3] == MKV_NORMAL && v.types[736] == MKV_USER_DEFINED,
          "token types");
    CHECK(mkvocab_byte_cp(' ') == 0x120 && mkvocab_byte_cp('a') == 'a' && mkvocab_byte_cp(0) == 0x100 &&
              mkvocab_byte_cp(0xAD) == 0x143,
          "byte-to-unicode map");
    /* common English pieces were learned */
    bool has_the = false;
    for (int i = 0; i < v.n_tokens; i++) has_the |= !strcmp(v.tokens[i], "\xC4\xA0the");
    CHECK(has_the, "no 'Ġthe' token in 737");
    mkvocab_free(&v);
    mkvocab_free(&w);

    CHECK(!mkvocab_build(100, &v, err, sizeof err) && strstr(err, "too small"), "100 tokens accepted");
    CHECK(!mkvocab_build(1000000, &v, err, sizeof err) && strstr(err, "too large"), "1e6 tokens accepted");
    CHECK(mkvocab_build(3072, &v, err, sizeof err), "build 3072 (mini's): %s", err);
    mkvocab_free(&v);
}

/* ---- configuration and the type plan ---- */

static int plan_type(const mkmodel_tensor *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return t[i].type;
    return -1;
}

static const mkmodel_tensor *plan_find(const mkmodel_tensor *t, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

static void test_config(void) {
    mkmodel_opts o;
    mkmodel_config c;
    char err[256];
    mkmodel_opts_init(&o);

    CHECK(mkmodel_parse_type("q4_k_m") == MK_TYPE_Q4_K_M && mkmodel_parse_type("BF16") == QT_BF16 &&
              mkmodel_parse_type("Q5_K") == QT_Q5_K && mkmodel_parse_type("Q4_1") < 0,
          "type names");

    /* mini: the widths; Q4_K_M mix over 6 layers: llama.cpp's
     * more-bits layers of 6 are 2 and 5 */
    o.preset = "mini";
    CHECK(mkmodel_config_from(&o, &c, err, sizeof err), "mini: %s", err);
    CHECK(c.n_embd == 2048 && c.n_layer == 6 && c.n_head == 16 && c.q_lora_rank == 512 && c.kv_lora_rank == 256 &&
              c.qk_nope == 64 && c.qk_rope == 32 && c.v_head == 64 && c.n_expert == 64 && c.n_ff_exp == 1024 &&
              c.n_expert_used == 6 && c.n_group == 8 && c.n_group_used == 3 && c.n_ff == 5632,
          "mini hyperparameters");
    mkmodel_tensor *t;
    int n = mkmodel_plan(&c, MK_TYPE_Q4_K_M, &t);
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += qtype_row_size(t[i].type, t[i].ne[0]) * (uint64_t)(t[i].ne[1] * t[i].ne[2]);
    CHECK(bytes > 1100000000ull && bytes < 1500000000ull, "mini Q4_K_M is %.2f GB, want about 1.3", bytes / 1e9);
    CHECK(plan_type(t, n, "output.weight") == QT_Q6_K && plan_type(t, n, "token_embd.weight") == QT_Q4_K,
          "mini output/embd types");
    for (int il = 1; il < 6; il++) {
        char nm[64];
        int want = (il == 2 || il == 5) ? QT_Q6_K : QT_Q4_K;
        snprintf(nm, sizeof nm, "blk.%d.ffn_down_exps.weight", il);
        CHECK(plan_type(t, n, nm) == want, "%s type %d", nm, plan_type(t, n, nm));
        snprintf(nm, sizeof nm, "blk.%d.ffn_down_shexp.weight", il);
        CHECK(plan_type(t, n, nm) == want, "%s type %d", nm, plan_type(t, n, nm));
        snprintf(nm, sizeof nm, "blk.%d.attn_v_b.weight", il);
        CHECK(plan_type(t, n, nm) == want, "%s type %d", nm, plan_type(t, n, nm));
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate_exps.weight", il);
        CHECK(plan_type(t, n, nm) == QT_Q4_K, "%s type", nm);
        snprintf(nm, sizeof nm, "blk.%d.attn_k_b.weight", il); /* rows of 64: Q4_K -> Q5_0 */
        CHECK(plan_type(t, n, nm) == QT_Q5_0, "%s type %d", nm, plan_type(t, n, nm));
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate_inp.weight", il);
        CHECK(plan_type(t, n, nm) == QT_F32, "%s type", nm);
        snprintf(nm, sizeof nm, "blk.%d.exp_probs_b.bias", il);
        CHECK(plan_type(t, n, nm) == QT_F32, "%s type", nm);
    }
    CHECK(plan_type(t, n, "blk.0.ffn_down.weight") == QT_Q4_K && plan_type(t, n, "blk.0.attn_norm.weight") == QT_F32,
          "mini layer 0 types");
    free(t);

    /* v3-layer: DeepSeek-V3's true widths */
    o.preset = "v3-layer";
    CHECK(mkmodel_config_from(&o, &c, err, sizeof err), "v3-layer: %s", err);
    n = mkmodel_plan(&c, MK_TYPE_Q4_K_M, &t);
    const mkmodel_tensor *x;
    CHECK(c.n_layer == 2 && c.n_dense_lead == 1 && c.n_expert == 256 && c.n_expert_used == 8, "v3-layer layers");
    CHECK((x = plan_find(t, n, "blk.0.attn_q_a.weight")) && x->ne[0] == 7168 && x->ne[1] == 1536, "attn_q_a");
    CHECK((x = plan_find(t, n, "blk.0.attn_q_b.weight")) && x->ne[0] == 1536 && x->ne[1] == 128 * 192, "attn_q_b");
    CHECK((x = plan_find(t, n, "blk.0.attn_kv_a_mqa.weight")) && x->ne[1] == 576, "attn_kv_a_mqa");
    CHECK((x = plan_find(t, n, "blk.0.attn_k_b.weight")) && x->ne[0] == 128 && x->ne[1] == 512 && x->ne[2] == 128,
          "attn_k_b");
    CHECK((x = plan_find(t, n, "blk.0.attn_v_b.weight")) && x->ne[0] == 512 && x->ne[1] == 128 && x->ne[2] == 128,
          "attn_v_b");
    CHECK((x = plan_find(t, n, "blk.0.attn_output.weight")) && x->ne[0] == 16384 && x->ne[1] == 7168, "attn_output");
    CHECK((x = plan_find(t, n, "blk.0.ffn_up.weight")) && x->ne[1] == 18432, "dense ffn");
    CHECK((x = plan_find(t, n, "blk.1.ffn_down_exps.weight")) && x->ne[0] == 2048 && x->ne[1] == 7168 &&
              x->ne[2] == 256 && x->type == QT_Q6_K,
          "ffn_down_exps");
    CHECK((x = plan_find(t, n, "blk.1.ffn_gate_shexp.weight")) && x->ne[1] == 2048, "shared expert");
    CHECK(plan_find(t, n, "blk.0.ffn_gate_inp.weight") == NULL && plan_find(t, n, "blk.1.ffn_gate.weight") == NULL,
          "dense/MoE tensors in the wrong layer");
    free(t);
    /* --experts: groups refitted (8 groups need >= 2 experts each) */
    o.n_experts = 12;
    CHECK(mkmodel_config_from(&o, &c, err, sizeof err), "v3-layer --experts 12: %s", err);
    CHECK(c.n_expert == 12 && c.n_group > 1 && 12 % c.n_group == 0 && 12 / c.n_group >= 2 &&
              c.n_group_used * (12 / c.n_group) >= c.n_expert_used,
          "--experts 12: %d groups, %d used", c.n_group, c.n_group_used);
    o.n_experts = 4;
    CHECK(mkmodel_config_from(&o, &c, err, sizeof err) && c.n_expert_used == 4, "--experts 4");
    o.n_experts = 0;

    /* lite: no q LoRA, softmax, no bias; --layers 27 as llama.cpp needs */
    o.preset = "lite";
    o.n_layers = 27;
    CHECK(mkmodel_config_from(&o, &c, err, sizeof err) && c.n_layer == 27 && c.q_lora_rank == 0 && c.gating == 1 &&
              !c.exp_bias && c.n_expert_shared == 2,
          "lite");
    o.n_layers = 0;

    /* errors */
    o.preset = "huge";
    CHECK(!mkmodel_config_from(&o, &c, err, sizeof err) && strstr(err, "huge"), "unknown preset accepted");
    o.preset = "tiny";
    o.ftype = 77;
    CHECK(!mkmodel_config_from(&o, &c, err, sizeof err), "type 77 accepted");
    o.ftype = QT_F32;
    o.n_vocab = 10;
    CHECK(!mkmodel_config_from(&o, &c, err, sizeof err), "--vocab 10 accepted");
    o.n_vocab = 0;
    o.n_vocab = 100000;
    CHECK(!mkmodel_write(&o, tmp_path("bad.gguf"), NULL, err, sizeof err) && strstr(err, "too large"),
          "--vocab 100000 accepted");
    CHECK(access(tmp_path("bad.gguf"), F_OK) != 0, "a failed run left a file");
    o.n_vocab = 0;
    CHECK(!mkmodel_write(&o, "/nonexistent-dir/x.gguf", NULL, err, sizeof err) && strstr(err, "nonexistent"),
          "unwritable path accepted (%s)", err);
}

/* ---- generated files ---- */

static const int prompt[] = {0, 300, 1, 259, 42, 600, 736};
#define N_PROMPT ((int)(sizeof prompt / sizeof prompt[0]))

static void test_tiny_types(void) {
    static const int types[] = {QT_F32, QT_F16, QT_BF16, QT_Q8_0, QT_Q4_0, QT_Q2_K,
                                QT_Q3_K, QT_Q4_K, QT_Q5_K, QT_Q6_K, MK_TYPE_Q4_K_M};
    float *ref = NULL;
    int V = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        char name[64];
        snprintf(name, sizeof name, "tiny-%s.gguf", mkmodel_type_name(types[k]));
        const char *path = tmp_path(name);
        if (!gen("tiny", types[k], 7, path, NULL)) continue;
        int nv = 0;
        float *lg = run_logits(path, prompt, N_PROMPT, &nv);
        if (!lg) continue;
        CHECK(nv == 737 && all_finite_and_varied(lg, (size_t)N_PROMPT * 737), "tiny %s: logits not finite/varied",
              name);
        if (types[k] == QT_F32) {
            ref = lg;
            V = nv;
            continue;
        }
        /* same weights, other encoding: the logits follow F32's (loosely:
         * near-tied routing may flip an expert at some position) */
        double r = correlation(ref, lg, (size_t)N_PROMPT * (size_t)V);
        double want = types[k] == QT_Q2_K ? 0.3 : types[k] == QT_Q3_K ? 0.5 : types[k] == QT_Q4_0 ? 0.7
                    : types[k] == QT_Q4_K || types[k] == MK_TYPE_Q4_K_M || types[k] == QT_Q5_K ? 0.75 : 0.95;
        CHECK(r > want, "tiny %s: correlation with F32 logits %.3f <= %.2f", name, r, want);
        printf("tiny %-6s: logits correlation with F32 %.4f\n", mkmodel_type_name(types[k]), r);
        if (types[k] == MK_TYPE_Q4_K_M) {
            compare_layout(path, fixture("models/tiny-v3-Q4_K_M.gguf"), false);
            /* attn_v_b: Q6_K (-> Q8_0 for rows of 64) in the more-bits layers */
            char err[256];
            gguf_file *g = gguf_open(path, err, sizeof err);
            if (g) {
                int want_vb[4] = {QT_Q5_0, QT_Q5_0, QT_Q8_0, QT_Q8_0};
                for (int il = 0; il < 4; il++) {
                    char nm[64];
                    snprintf(nm, sizeof nm, "blk.%d.attn_v_b.weight", il);
                    const gguf_tensor *t = gguf_find_tensor(g, nm);
                    CHECK(t && t->type == want_vb[il], "%s type %s", nm, t ? qtype_name(t->type) : "missing");
                }
                gguf_close(g);
            }
        }
        free(lg);
    }
    free(ref);
    compare_layout(tmp_path("tiny-F32.gguf"), fixture("models/tiny-v3-f32.gguf"), true);
    check_vocab_file(tmp_path("tiny-F32.gguf"));
}

static void test_determinism(void) {
    mkmodel_opts o;
    mkmodel_opts_init(&o);
    o.n_threads = 1;
    gen("tiny", MK_TYPE_Q4_K_M, 7, tmp_path("t1.gguf"), &o);
    o.n_threads = 2;
    gen("tiny", MK_TYPE_Q4_K_M, 7, tmp_path("t2.gguf"), &o);
    o.n_threads = 3;
    gen("tiny", MK_TYPE_Q4_K_M, 8, tmp_path("t3.gguf"), &o);
    CHECK(same_bytes(tmp_path("t1.gguf"), tmp_path("t2.gguf")), "same seed, 1 vs 2 threads: files differ");
    CHECK(same_bytes(tmp_path("t1.gguf"), tmp_path("tiny-Q4_K_M.gguf")), "same seed, default threads: files differ");
    CHECK(!same_bytes(tmp_path("t1.gguf"), tmp_path("t3.gguf")), "seeds 7 and 8 give the same file");

    /* fewer layers / experts keep the weights that remain (F32: exact) */
    mkmodel_opts_init(&o);
    o.n_layers = 2;
    o.n_experts = 8;
    gen("tiny", QT_F32, 7, tmp_path("small.gguf"), &o);
    char err[256];
    gguf_file *a = gguf_open(tmp_path("small.gguf"), err, sizeof err);
    gguf_file *b = gguf_open(tmp_path("tiny-F32.gguf"), err, sizeof err);
    CHECK(a && b, "open: %s", err);
    if (a && b) {
        const char *same[] = {"token_embd.weight", "blk.0.ffn_up.weight", "blk.1.attn_k_b.weight",
                              "blk.1.ffn_down_shexp.weight"};
        for (int i = 0; i < 4; i++) {
            const gguf_tensor *x = gguf_find_tensor(a, same[i]), *y = gguf_find_tensor(b, same[i]);
            CHECK(x && y && x->nbytes == y->nbytes && !memcmp(x->data, y->data, x->nbytes), "%s differs", same[i]);
        }
        const gguf_tensor *x = gguf_find_tensor(a, "blk.1.ffn_gate_exps.weight");
        const gguf_tensor *y = gguf_find_tensor(b, "blk.1.ffn_gate_exps.weight");
        CHECK(x && y && x->ne[2] == 8 && !memcmp(x->data, y->data, x->nbytes), "first 8 experts differ");
        CHECK(gguf_find_tensor(a, "blk.2.attn_norm.weight") == NULL, "--layers 2 wrote layer 2");
        /* the pool: experts past it copy rows of the first ones, so they
         * are not all-new data but are distinct experts */
        const gguf_tensor *z = gguf_find_tensor(b, "blk.1.ffn_up_exps.weight");
        uint64_t eb = z ? z->nbytes / 16 : 0;
        CHECK(z && memcmp((const char *)z->data + 8 * eb, (const char *)z->data + 9 * eb, eb) &&
                  memcmp((const char *)z->data, (const char *)z->data + 9 * eb, eb),
              "pooled experts are copies of whole experts");
    }
    gguf_close(a);
    gguf_close(b);
}

static void test_legacy_and_lite(void) {
    mkmodel_opts o;
    mkmodel_opts_init(&o);
    o.legacy_kvb = true;
    if (gen("tiny", QT_F32, 7, tmp_path("tiny-legacy.gguf"), &o)) {
        compare_layout(tmp_path("tiny-legacy.gguf"), fixture("models/tiny-v3-f32-legacykvb.gguf"), true);
        int V1 = 0, V2 = 0;
        float *a = run_logits(tmp_path("tiny-legacy.gguf"), prompt, N_PROMPT, &V1);
        float *b = run_logits(tmp_path("tiny-F32.gguf"), prompt, N_PROMPT, &V2);
        if (a && b) {
            float md = 0;
            for (int i = 0; i < N_PROMPT * V1; i++) md = fmaxf(md, fabsf(a[i] - b[i]));
            CHECK(V1 == V2 && md < 1e-3f, "legacy vs split logits differ by %g", md);
        }
        free(a);
        free(b);
    }

    /* lite at 27 layers has the layout of the fixtures' tiny-v2lite */
    mkmodel_opts_init(&o);
    o.n_layers = 27;
    if (gen("lite", QT_F32, 99, tmp_path("lite27.gguf"), &o))
        compare_layout(tmp_path("lite27.gguf"), fixture("models/tiny-v2lite-f32.gguf"), true);
    static const int types[] = {QT_F32, MK_TYPE_Q4_K_M};
    for (int k = 0; k < 2; k++) {
        char name[64];
        snprintf(name, sizeof name, "lite-%s.gguf", mkmodel_type_name(types[k]));
        if (!gen("lite", types[k], 3, tmp_path(name), NULL)) continue;
        int V = 0;
        float *lg = run_logits(tmp_path(name), prompt, N_PROMPT, &V);
        CHECK(lg && all_finite_and_varied(lg, (size_t)N_PROMPT * (size_t)V), "lite %s logits", name);
        free(lg);
    }
}

static void test_mini(void) {
    /* mini shrunk to one dense + one MoE layer of 8 experts, Q8_0 (cheap to
     * quantize): loads, hyperparameters as generated, one forward step */
    mkmodel_opts o;
    mkmodel_opts_init(&o);
    o.n_layers = 2;
    o.n_experts = 8;
    o.expert_pool = 2;
    const char *path = tmp_path("mini.gguf");
    if (!gen("mini", QT_Q8_0, 1, path, &o)) return;
    char err[256];
    moe_model *m = moe_model_load(path, err, sizeof err);
    CHECK(m != NULL, "load mini: %s", err);
    if (!m) return;
    CHECK(m->hp.n_embd == 2048 && m->hp.n_layer == 2 && m->hp.n_expert == 8 && m->hp.n_vocab == 3072 &&
              m->hp.q_lora_rank == 512 && m->hp.kv_lora_rank == 256 && m->hp.n_group > 1 && m->hp.yarn,
          "mini hyperparameters as loaded");
    moe_kvcache *kv = moe_kvcache_new(&m->hp, 0, m->hp.n_layer, 4);
    float *lg = malloc((size_t)m->hp.n_vocab * sizeof(float));
    int tok[2] = {0, 1000};
    CHECK(kv && lg && moe_forward_local(m, kv, tok, 2, 0, lg, true, NULL) &&
              all_finite_and_varied(lg, (size_t)m->hp.n_vocab),
          "mini forward");
    free(lg);
    moe_kvcache_free(kv);
    moe_model_free(m);
}

/* The built-in vocabulary through the project's tokenizer: text round
 * trips, specials are found, the corpus compresses, and a bigger
 * vocabulary compresses more. */
static void test_tokenizer(void) {
    static const char *const texts[] = {
        "Hello, world! 12345 and 2024.", "  two  spaces,\ttabs\n\nand new lines\r\n",
        "na\xC3\xAFve caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x99\x82 it's \"quoted\"",
        "<\xEF\xBD\x9CUser\xEF\xBD\x9C>hi<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>",
    };
    char err[256];
    size_t counts[2] = {0, 0};
    const char *files[2] = {tmp_path("tiny-F32.gguf"), tmp_path("mini.gguf")};
    for (int f = 0; f < 2; f++) {
        tokenizer *t = tokenizer_load_file(files[f], err, sizeof err);
        CHECK(t != NULL, "tokenizer of %s: %s", files[f], err);
        if (!t) continue;
        int V = tokenizer_n_vocab(t);
        for (int k = -1; k < (int)(sizeof texts / sizeof texts[0]); k++) {
            const char *s = k < 0 ? mkvocab_corpus() : texts[k];
            size_t n = 0, len = 0;
            int *ids = tokenizer_encode(t, s, strlen(s), false, true, &n);
            int out_of_range = 0;
            for (size_t i = 0; ids && i < n; i++) out_of_range += ids[i] < 0 || ids[i] >= V;
            char *back = ids ? tokenizer_decode(t, ids, n, true, &len) : NULL;
            CHECK(ids && !out_of_range && back && len == strlen(s) && !memcmp(back, s, len),
                  "%s: text %d does not round-trip", files[f], k);
            if (k < 0) counts[f] = n;
            if (k == 3) CHECK(n == 3 && ids[0] == V - 2 && ids[2] == V - 1, "chat tokens not found");
            free(ids);
            free(back);
        }
        size_t n = 0;
        int *ids = tokenizer_encode(t, " the", 4, false, false, &n);
        CHECK(ids && n == 1 && ids[0] == tokenizer_find(t, "\xC4\xA0the", 5), "' the' is not one token");
        free(ids);
        tokenizer_free(t);
    }
    size_t nbytes = strlen(mkvocab_corpus());
    printf("built-in text: %zu bytes -> %zu tokens (737 vocab), %zu tokens (3072 vocab)\n", nbytes, counts[0],
           counts[1]);
    CHECK(counts[0] > 0 && counts[0] * 5 < nbytes * 2, "737 vocab: %zu tokens for %zu bytes", counts[0], nbytes);
    CHECK(counts[1] > 0 && counts[1] < counts[0], "3072 vocab does not compress more (%zu vs %zu)", counts[1],
          counts[0]);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_mkmodel.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_vocab();
    test_config();
    test_tiny_types();
    test_determinism();
    test_legacy_and_lite();
    test_mini();
    test_tokenizer();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_summary("test_mkmodel");
}
