/* `moe generate`: prompt in, streamed tokens out. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "cli.h"
#include "commands.h"
#include "detok.h"
#include "engine.h"
#include "sampler.h"
#include "tokenizer.h"

static void help(void) {
    printf("usage: moe generate -m MODEL (-p TEXT | --tokens IDS) [-n N] [options]\n"
           "\n"
           "Generates N tokens after the prompt and streams them to stdout.  Prompt\n"
           "and decode speeds are printed on stderr.\n"
           "\n"
           "options:\n"
           "  -p, --prompt TEXT   prompt text (tokenized with the model's tokenizer;\n"
           "                      special-token texts such as <｜User｜> become those tokens)\n"
           "      --tokens IDS    prompt as token ids, separated by spaces or commas\n"
           "      --chat          treat TEXT as a user message and render it with the\n"
           "                      model's chat template (DeepSeek V3/R1/V2 families)\n"
           "      --system TEXT   with --chat: a system message before the user message\n"
           "      --chat-template NAME  with --chat: deepseek3, deepseek-r1,\n"
           "                      deepseek-r1-orig or deepseek2 instead of the GGUF's template\n"
           "      --show-special  print special tokens (e.g. end of sentence) as text\n"
           "  -n, --n-predict N   tokens to generate (default 64)\n"
           "      --temp T        temperature; 0 = greedy (default 0.8)\n"
           "      --top-k K       keep the K most likely tokens; 0 = off (default 40)\n"
           "      --top-p P       keep the smallest set with probability >= P (default 0.95)\n"
           "      --min-p M       drop tokens below M x the top probability (default 0.05)\n"
           "      --seed S        sampling seed (default 42)\n"
           "      --ignore-eos    keep generating after the end-of-sequence token\n"
           "      --print-ids     end with a line `ids: <generated ids>`\n" CLI_ENGINE_HELP
           "  -h, --help          this help\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The prompt of a one-turn chat, rendered with the model's template (or
 * the one named by --chat-template). */
static char *render_chat(const tokenizer *tok, const char *system_msg, const char *user, const char *tmpl_name,
                         char *err, size_t errlen) {
    int family = tmpl_name ? chat_family_from_name(tmpl_name) : chat_detect(tokenizer_chat_template(tok), err, errlen);
    if (family < 0) return NULL;
    chat_message msgs[2];
    int n = 0;
    if (system_msg) msgs[n++] = (chat_message){.role = "system", .content = (char *)system_msg};
    msgs[n++] = (chat_message){.role = "user", .content = (char *)user};
    chat_messages m = {.v = msgs, .n = n};
    size_t bl = 0, el = 0;
    const char *bos = tokenizer_bos(tok) >= 0 ? tokenizer_token_text(tok, tokenizer_bos(tok), &bl) : "";
    const char *eos = tokenizer_eos(tok) >= 0 ? tokenizer_token_text(tok, tokenizer_eos(tok), &el) : "";
    char *b = strndup(bos ? bos : "", bl), *e = strndup(eos ? eos : "", el);
    char *out = b && e ? chat_render(family, &m, true, b, e, err, errlen) : NULL;
    free(b);
    free(e);
    return out;
}

int cmd_generate(int argc, char **argv) {
    engine_opts eo = {0};
    const char *prompt = NULL, *tokens_s = NULL;
    int n_predict = 64;
    bool print_ids = false, ignore_eos = false, chat = false, show_special = false;
    const char *system_msg = NULL, *chat_tmpl = NULL;
    sampler_params sp = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 42};
    for (int i = 1; i < argc; i++) {
        int r = cli_engine_opt(&eo, "generate", argc, argv, &i);
        if (r < 0) return 2;
        if (r) continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            return 0;
        } else if (!strcmp(a, "--print-ids")) {
            print_ids = true;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = true;
        } else if (!strcmp(a, "--chat")) {
            chat = true;
        } else if (!strcmp(a, "--show-special")) {
            show_special = true;
        } else if (!v) {
            return cli_usage_error("generate", "unknown or incomplete option '%s'", a);
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            prompt = argv[++i];
        } else if (!strcmp(a, "--tokens")) {
            tokens_s = argv[++i];
        } else if (!strcmp(a, "--system")) {
            system_msg = argv[++i];
        } else if (!strcmp(a, "--chat-template")) {
            chat_tmpl = argv[++i];
            if (chat_family_from_name(chat_tmpl) < 0)
                return cli_usage_error("generate", "unknown chat template '%s' (deepseek3, deepseek-r1, deepseek-r1-orig, deepseek2)", chat_tmpl);
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            ok = cli_int(argv[++i], 0, 1 << 24, &n_predict);
        } else if (!strcmp(a, "--temp")) {
            ok = cli_float(argv[++i], 0, 100, &sp.temp);
        } else if (!strcmp(a, "--top-k")) {
            ok = cli_int(argv[++i], 0, 1 << 30, &sp.top_k);
        } else if (!strcmp(a, "--top-p")) {
            ok = cli_float(argv[++i], 0, 1, &sp.top_p);
        } else if (!strcmp(a, "--min-p")) {
            ok = cli_float(argv[++i], 0, 1, &sp.min_p);
        } else if (!strcmp(a, "--seed")) {
            unsigned long long s;
            ok = cli_u64(argv[++i], &s);
            sp.seed = s;
        } else {
            return cli_usage_error("generate", "unknown option '%s'", a);
        }
        if (!ok) return cli_usage_error("generate", "bad value '%s' for %s", argv[i], a);
    }
    if (!eo.model_path) return cli_usage_error("generate", "missing -m MODEL");
    if (!!prompt == !!tokens_s) return cli_usage_error("generate", "give exactly one of -p TEXT or --tokens IDS");
    if (chat && !prompt) return cli_usage_error("generate", "--chat needs -p TEXT");

    char err[512];
    int rc = 1, n_prompt = 0;
    int *ids = NULL;
    if (tokens_s && !(ids = cli_ids(tokens_s, &n_prompt, err, sizeof err))) /* before any weight is loaded */
        return cli_usage_error("generate", "%s", err);
    engine *e = engine_open(&eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "moe generate: %s\n", err);
        free(ids);
        return 1;
    }
    tokenizer *tok = tokenizer_load(engine_model(e)->gguf, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "moe generate: %s\n", err);
        free(ids);
        engine_close(e);
        return 1;
    }
    if (!ids) {
        char *text = NULL;
        bool add_special = true;
        if (chat) {
            text = render_chat(tok, system_msg, prompt, chat_tmpl, err, sizeof err);
            if (!text) {
                fprintf(stderr, "moe generate: %s\n", err);
                goto early_out;
            }
            add_special = false; /* the rendered prompt starts with the BOS text */
        }
        size_t n = 0;
        const char *src = text ? text : prompt;
        ids = tokenizer_encode(tok, src, strlen(src), add_special, true, &n);
        free(text);
        n_prompt = (int)n;
        if (!ids || n == 0) {
            fprintf(stderr, "moe generate: the prompt gives no tokens\n");
            goto early_out;
        }
    }
    const moe_hparams *hp = &engine_model(e)->hp;
    const int V = hp->n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int *gen = malloc(sizeof(int) * (size_t)(n_predict > 0 ? n_predict : 1));
    sampler *s = sampler_new(&sp, V);
    int n_gen = 0;
    rc = 0;
    detok *dt = detok_new(tok, show_special);
    fprintf(stderr, "moe generate: %s; prompt %d tokens\n", engine_desc(e), n_prompt);
    if (prompt && !chat) {
        fputs(prompt, stdout);
        fflush(stdout);
    }

    double t0 = now_s();
    if (!logits || !gen || !s || !dt || !engine_forward(e, 0, ids, n_prompt, 0, logits, false, err, sizeof err)) {
        fprintf(stderr, "moe generate: %s\n", logits && gen && s && dt ? err : "out of memory");
        rc = 1;
        goto out;
    }
    double t1 = now_s();
    int pos = n_prompt;
    while (n_gen < n_predict) {
        int id = sampler_sample(s, logits);
        gen[n_gen++] = id;
        size_t len = 0;
        const char *bytes = detok_push(dt, id, &len);
        if (bytes && len) fwrite(bytes, 1, len, stdout);
        fflush(stdout);
        if (id == tokenizer_eos(tok) && !ignore_eos) break;
        if (n_gen == n_predict) break;
        if (!engine_forward(e, 0, &id, 1, pos++, logits, false, err, sizeof err)) {
            fprintf(stderr, "\nmoe generate: %s\n", err);
            rc = 1;
            break;
        }
    }
    double t2 = now_s();
    if (dt) {
        size_t len = 0;
        const char *rest = detok_flush(dt, &len);
        if (rest && len) fwrite(rest, 1, len, stdout);
    }
    printf("\n");
    if (print_ids) {
        printf("ids:");
        for (int i = 0; i < n_gen; i++) printf(" %d", gen[i]);
        printf("\n");
    }
    fprintf(stderr, "prompt: %d tokens in %.3f s (%.2f tok/s); decode: %d tokens in %.3f s (%.2f tok/s)\n",
            n_prompt, t1 - t0, n_prompt / (t1 - t0), n_gen, t2 - t1, n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0.0);
out:
    detok_free(dt);
    sampler_free(s);
    free(gen);
    free(logits);
early_out:
    free(ids);
    tokenizer_free(tok);
    engine_close(e);
    return rc;
}
