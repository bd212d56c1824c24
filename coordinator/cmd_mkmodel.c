/* `moe mkmodel`: writes a random-weight deepseek2 GGUF model (moe/mkmodel.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "mkmodel.h"
#include "threadpool.h"

static void mkmodel_usage(FILE *out) {
    fprintf(out,
            "usage: moe mkmodel [--preset NAME] [--type TYPE] [--seed S] -o FILE [options]\n"
            "\n"
            "Writes a deepseek2 GGUF model with random weights, laid out as llama.cpp expects\n"
            "(metadata, tensor names, shapes, types), with a small English BPE vocabulary and\n"
            "the DeepSeek-V3 chat template.  The same options give the same bytes.\n"
            "\n"
            "presets:\n"
            "  tiny       hidden 256, 4 layers (1 dense), 16 experts, vocab 737 (the fixtures' tiny-v3)\n"
            "  mini       hidden 2048, 6 layers (1 dense), 64 experts of 1024, ~1.3 GB at Q4_K_M\n"
            "  v3-layer   one dense + one MoE layer at DeepSeek-V3 widths (hidden 7168, 256 experts)\n"
            "  lite       V2-Lite style: no q LoRA, softmax gating, 2 shared experts, hidden 64\n"
            "\n"
            "options:\n"
            "  --preset NAME      model preset (default tiny)\n"
            "  --type TYPE        F32 F16 BF16 Q8_0 Q4_0 Q2_K Q3_K Q4_K Q5_K Q6_K or Q4_K_M\n"
            "                     (default Q4_K_M: a llama.cpp-like mix of Q4_K and Q6_K)\n"
            "  --seed S           random seed (default 1)\n"
            "  --layers N         number of layers (the first stays dense)\n"
            "  --experts N        routed experts per MoE layer (groups adjusted to fit)\n"
            "  --vocab N          vocabulary size (261..3540)\n"
            "  --legacy-kvb       older layout: one attn_kv_b per layer instead of attn_k_b/attn_v_b\n"
            "  --expert-pool N    draw only N experts per expert tensor, copy random rows of those\n"
            "                     into the others (default 4; 0 draws every expert)\n"
            "  -t, --threads N    worker threads (default: one per core); output does not depend on it\n"
            "  -q, --quiet        no progress or summary\n"
            "  -o FILE            output file\n");
}

/* Strict non-negative integer option value. */
static bool parse_count(const char *opt, const char *s, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > max) {
        fprintf(stderr, "moe mkmodel: %s '%s': want an integer 0..%lld\n", opt, s, max);
        return false;
    }
    *out = v;
    return true;
}

int cmd_mkmodel(int argc, char **argv) {
    mkmodel_opts o;
    mkmodel_opts_init(&o);
    o.progress = true;
    const char *out = NULL;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            mkmodel_usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--legacy-kvb")) {
            o.legacy_kvb = true;
            continue;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = true;
            continue;
        }
        static const char *const with_value[] = {"--preset", "--type", "--seed", "--layers", "--experts",
                                                  "--vocab", "--expert-pool", "--threads", "-t", "-o", NULL};
        bool known = false;
        for (int k = 0; with_value[k]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) {
            fprintf(stderr, "moe mkmodel: unknown option '%s' (see moe mkmodel --help)\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "moe mkmodel: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        long long n = 0;
        if (!strcmp(a, "--preset")) {
            o.preset = v;
        } else if (!strcmp(a, "--type")) {
            o.ftype = mkmodel_parse_type(v);
            if (o.ftype < 0) {
                fprintf(stderr, "moe mkmodel: unknown --type '%s' (F32 F16 BF16 Q8_0 Q4_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q4_K_M)\n", v);
                return 2;
            }
        } else if (!strcmp(a, "-o")) {
            out = v;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "moe mkmodel: --seed '%s': want a non-negative integer\n", v);
                return 2;
            }
            o.seed = s;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) {
            if (!tpool_parse_threads(v, &o.n_threads)) {
                fprintf(stderr, "moe mkmodel: %s '%s': want an integer 0..1024 (0: one per core)\n", a, v);
                return 2;
            }
        } else {
            if (!parse_count(a, v, 1 << 20, &n)) return 2;
            if (!strcmp(a, "--layers")) o.n_layers = (int)n;
            else if (!strcmp(a, "--experts")) o.n_experts = (int)n;
            else if (!strcmp(a, "--vocab")) o.n_vocab = (int)n;
            else o.expert_pool = (int)n;
            if (n == 0 && strcmp(a, "--expert-pool")) {
                fprintf(stderr, "moe mkmodel: %s must be at least 1\n", a);
                return 2;
            }
        }
    }
    if (!out) {
        fprintf(stderr, "moe mkmodel: no output file (-o FILE)\n\n");
        mkmodel_usage(stderr);
        return 2;
    }
    o.progress = !quiet;
    mkmodel_stats st;
    char err[512];
    if (!mkmodel_write(&o, out, &st, err, sizeof err)) {
        fprintf(stderr, "moe mkmodel: %s\n", err);
        return 1;
    }
    if (!quiet)
        printf("mkmodel: wrote %s: %s %s seed %llu, %.2f MB, %.2f M parameters, %d tensors, %.2f s\n", out,
               o.preset, mkmodel_type_name(o.ftype), (unsigned long long)o.seed, (double)st.file_bytes / 1e6,
               (double)st.n_params / 1e6, st.n_tensors, st.seconds);
    return 0;
}
