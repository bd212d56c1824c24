/* `moe info`: what a GGUF model is and what running it costs. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "kernels.h"
#include "model.h"
#include "model_stats.h"
#include "quant.h"

static void help(void) {
    printf("usage: moe info [options] MODEL\n"
           "\n"
           "Prints the architecture and hyperparameters of a deepseek2 GGUF model, a\n"
           "histogram of its tensor types, the bytes of weights read per decoded token,\n"
           "and the memory needed to run it.\n"
           "\n"
           "options:\n"
           "      --ctx N     context size for the KV cache estimate (default 4096)\n"
           "      --kv        also list every metadata key and value\n"
           "  -h, --help      this help\n");
}

static void print_bytes(const char *label, uint64_t b) {
    printf("  %-28s %14llu bytes (%.3f GiB)\n", label, (unsigned long long)b, b / 1073741824.0);
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int n_ctx = 4096;
    bool kv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            return 0;
        } else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) {
            if (!cli_int(argv[++i], 1, 1 << 24, &n_ctx)) return cli_usage_error("info", "bad --ctx '%s'", argv[i]);
        } else if (!strcmp(argv[i], "--kv")) {
            kv = true;
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            path = argv[++i];
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            return cli_usage_error("info", "unknown or incomplete option '%s'", argv[i]);
        }
    }
    if (!path) return cli_usage_error("info", "missing MODEL");
    char err[512];
    moe_model *m = moe_model_load(path, err, sizeof err);
    if (!m) {
        fprintf(stderr, "moe info: %s\n", err);
        return 1;
    }
    const moe_hparams *hp = &m->hp;
    const gguf_file *g = m->gguf;
    uint64_t len;
    const char *name = gguf_get_str(g, "general.name", &len);
    printf("model: %s\n", path);
    if (name) printf("  name: %.*s\n", (int)(len > 200 ? 200 : len), name);
    printf("  GGUF v%d, %d file part(s), %d tensors\n", gguf_version(g), gguf_n_parts(g), gguf_n_tensors(g));
    printf("architecture: deepseek2 (%s%s)\n", hp->q_lora_rank ? "q LoRA" : "lite: plain attn_q",
           hp->legacy_kvb ? ", legacy attn_kv_b" : ", split attn_k_b/attn_v_b");
    printf("  vocab %d, hidden %d, layers %d (%d dense), heads %d, context %d\n", hp->n_vocab, hp->n_embd,
           hp->n_layer, hp->n_dense_lead, hp->n_head, hp->n_ctx_train);
    printf("  q_lora %d, kv_lora %d, qk_nope %d, qk_rope %d, v_head %d\n", hp->q_lora_rank, hp->kv_lora_rank,
           hp->qk_nope, hp->qk_rope, hp->v_head);
    printf("  dense ffn %d; experts %d (ffn %d), %d used, %d shared; groups %d/%d\n", hp->n_ff, hp->n_expert,
           hp->n_ff_exp, hp->n_expert_used, hp->n_expert_shared, hp->n_group, hp->n_group_used);
    printf("  gating %s%s, weights norm %s, scale %g\n", hp->gating == MOE_GATING_SIGMOID ? "sigmoid" : "softmax",
           hp->has_exp_bias ? " + exp_probs_b bias" : "", hp->expert_norm ? "on" : "off", hp->expert_scale);
    printf("  rms eps %g, rope base %g, ", hp->rms_eps, hp->rope_base);
    if (hp->yarn)
        printf("YaRN factor %g over %d (log mul %g)", hp->yarn_factor, hp->yarn_orig_ctx, hp->yarn_log_mul);
    else
        printf("no rope scaling");
    printf(", kq_scale %.6f\n", hp->kq_scale);

    /* tensor type histogram */
    uint64_t cnt[QT_COUNT] = {0}, bytes[QT_COUNT] = {0};
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->type >= 0 && t->type < QT_COUNT) cnt[t->type]++, bytes[t->type] += t->nbytes;
    }
    printf("tensor types:\n");
    for (int t = 0; t < QT_COUNT; t++)
        if (cnt[t])
            printf("  %-6s %5llu tensors %14llu bytes\n", qtype_name(t), (unsigned long long)cnt[t],
                   (unsigned long long)bytes[t]);
    printf("cost:\n");
    print_bytes("weights", moe_weight_bytes(m));
    print_bytes("read per decoded token", moe_decode_bytes_per_token(m));
    char label[64];
    snprintf(label, sizeof label, "KV cache (%d positions)", n_ctx);
    print_bytes(label, moe_kv_bytes_per_position(hp) * (uint64_t)n_ctx);
    print_bytes("memory needed", moe_weight_bytes(m) + moe_kv_bytes_per_position(hp) * (uint64_t)n_ctx);
    kern_init();
    printf("kernels: %s\n", kern_path_name(kern_get_path()));
    if (kv) {
        printf("metadata:\n");
        char buf[512];
        for (int i = 0; i < gguf_n_kv(g); i++)
            printf("  %s = %s\n", gguf_kv_key(g, i), gguf_kv_to_string(g, i, buf, sizeof buf));
    }
    moe_model_free(m);
    return 0;
}
