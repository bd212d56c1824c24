/* `moe tokenize`, `moe detokenize`, `moe chat-render`: the tokenizer and
 * chat template on the command line.  Output is exact (ids on one line;
 * raw bytes; the raw prompt) because external checks compare it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "cli.h"
#include "commands.h"
#include "tokenizer.h"

/* Value of option argv[*i] (advancing *i), or NULL after a usage message. */
static const char *opt_value(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "option %s needs a value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static tokenizer *load_vocab(const char *cmd, const char *model) {
    char err[512];
    tokenizer *t = tokenizer_load_file(model, err, sizeof err);
    if (!t) fprintf(stderr, "moe %s: %s\n", cmd, err);
    return t;
}

static const char tokenize_help[] =
    "usage: moe tokenize -m MODEL (-p TEXT | -f FILE) [--bos] [--parse-special]\n"
    "\n"
    "Prints the token ids of TEXT (or of FILE's exact bytes) on one line, separated by spaces.\n"
    "  -m, --model FILE     GGUF model or vocab-only GGUF\n"
    "  -p, --prompt TEXT    text to tokenize\n"
    "  -f, --file FILE      file whose bytes are the text\n"
    "      --bos            add BOS (and EOS) as the vocabulary asks (add_bos_token)\n"
    "      --parse-special  special-token texts such as <｜User｜> become those tokens\n";

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    bool bos = false, special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(tokenize_help, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = opt_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!(text = opt_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(file = opt_value("tokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--bos")) {
            bos = true;
        } else if (!strcmp(a, "--parse-special")) {
            special = true;
        } else {
            return cli_usage_error("tokenize", "unknown option '%s'", a);
        }
    }
    if (!model) return cli_usage_error("tokenize", "-m MODEL is required");
    if (!text == !file) return cli_usage_error("tokenize", "give exactly one of -p TEXT or -f FILE");
    size_t len = text ? strlen(text) : 0;
    char *buf = NULL;
    if (file && !(buf = cli_read_file(file, &len))) {
        fprintf(stderr, "moe tokenize: cannot read %s\n", file);
        return 1;
    }
    tokenizer *t = load_vocab("tokenize", model);
    if (!t) {
        free(buf);
        return 1;
    }
    size_t n;
    int *ids = tokenizer_encode(t, file ? buf : text, len, bos, special, &n);
    if (!ids) fprintf(stderr, "moe tokenize: out of memory\n");
    for (size_t i = 0; ids && i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    if (ids) printf("\n");
    free(ids);
    free(buf);
    tokenizer_free(t);
    return ids && !ferror(stdout) ? 0 : 1;
}

static const char detokenize_help[] =
    "usage: moe detokenize -m MODEL --ids \"ID ID ...\" [--no-special]\n"
    "\n"
    "Writes the exact bytes of the ids to stdout (no newline added).\n"
    "  -m, --model FILE  GGUF model or vocab-only GGUF\n"
    "      --ids LIST    token ids separated by spaces or commas\n"
    "      --no-special  hide CONTROL tokens (BOS, EOS, chat markers) instead of writing their text\n";

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *list = NULL;
    bool special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(detokenize_help, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = opt_value("detokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--ids")) {
            if (!(list = opt_value("detokenize", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--no-special")) {
            special = false;
        } else {
            return cli_usage_error("detokenize", "unknown option '%s'", a);
        }
    }
    if (!model) return cli_usage_error("detokenize", "-m MODEL is required");
    if (!list) return cli_usage_error("detokenize", "--ids LIST is required");
    char err[256];
    int n;
    int *ids = cli_ids(list, &n, err, sizeof err);
    if (!ids) return cli_usage_error("detokenize", "%s", err);
    tokenizer *t = load_vocab("detokenize", model);
    if (!t) {
        free(ids);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= tokenizer_n_vocab(t)) {
            fprintf(stderr, "moe detokenize: id %d is out of range (vocabulary of %d tokens)\n", ids[i],
                    tokenizer_n_vocab(t));
            rc = 1;
        }
    size_t len;
    char *out = rc ? NULL : tokenizer_decode(t, ids, (size_t)n, special, &len);
    if (!rc && !out) {
        fprintf(stderr, "moe detokenize: out of memory\n");
        rc = 1;
    }
    if (out && (fwrite(out, 1, len, stdout) != len || fflush(stdout))) rc = 1;
    free(out);
    free(ids);
    tokenizer_free(t);
    return rc;
}

static const char chat_help[] =
    "usage: moe chat-render -m MODEL -f MESSAGES.json [--add-generation-prompt] [--chat-template NAME]\n"
    "\n"
    "Prints the prompt that the model's chat template (tokenizer.chat_template) makes of an\n"
    "OpenAI-style JSON array of messages, exactly (no newline added).\n"
    "  -m, --model FILE            GGUF model or vocab-only GGUF\n"
    "  -f, --file FILE             JSON messages: [{\"role\": ..., \"content\": ...}, ...]\n"
    "      --add-generation-prompt end with the assistant's turn marker\n"
    "      --chat-template NAME    use this format instead of detecting the GGUF's template:\n"
    "                              deepseek3, deepseek-r1, deepseek-r1-orig, deepseek2\n";

int cmd_chat_render(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *tmpl_name = NULL;
    bool gen = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(chat_help, stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = opt_value("chat-render", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!(file = opt_value("chat-render", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--chat-template")) {
            if (!(tmpl_name = opt_value("chat-render", argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--add-generation-prompt")) {
            gen = true;
        } else {
            return cli_usage_error("chat-render", "unknown option '%s'", a);
        }
    }
    if (!model) return cli_usage_error("chat-render", "-m MODEL is required");
    if (!file) return cli_usage_error("chat-render", "-f MESSAGES.json is required");
    int family = -1;
    if (tmpl_name && (family = chat_family_from_name(tmpl_name)) < 0)
        return cli_usage_error("chat-render", "unknown --chat-template '%s' (deepseek3, deepseek-r1, deepseek-r1-orig, deepseek2)",
                               tmpl_name);
    size_t len;
    char *json = cli_read_file(file, &len);
    if (!json) {
        fprintf(stderr, "moe chat-render: cannot read %s\n", file);
        return 1;
    }
    char err[512];
    int rc = 1;
    char *out = NULL;
    chat_messages *m = chat_parse_messages(json, len, err, sizeof err);
    tokenizer *t = m ? load_vocab("chat-render", model) : NULL;
    if (!m) fprintf(stderr, "moe chat-render: %s: %s\n", file, err);
    if (t && family < 0 && (family = chat_detect(tokenizer_chat_template(t), err, sizeof err)) < 0)
        fprintf(stderr, "moe chat-render: %s\n", err);
    if (t && family >= 0) {
        size_t nb = 0, ne = 0;
        const char *bos = tokenizer_bos(t) >= 0 ? tokenizer_token_text(t, tokenizer_bos(t), &nb) : "";
        const char *eos = tokenizer_eos(t) >= 0 ? tokenizer_token_text(t, tokenizer_eos(t), &ne) : "";
        out = chat_render(family, m, gen, bos, eos, err, sizeof err);
        if (!out) fprintf(stderr, "moe chat-render: %s\n", err);
        else if (fputs(out, stdout) >= 0 && !fflush(stdout)) rc = 0;
    }
    free(out);
    tokenizer_free(t);
    chat_messages_free(m);
    free(json);
    return rc;
}
