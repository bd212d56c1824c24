/* `moe`: the command-line entry point.  Dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

/* One line per subcommand; add new ones here. */
static const moe_command commands[] = {
    {"info", cmd_info, "describe a GGUF model: hyperparameters, tensor types, memory"},
    {"logits", cmd_logits, "write the logits of every prompt position (float32)"},
    {"generate", cmd_generate, "generate text from a prompt"},
    {"mkmodel", cmd_mkmodel, "write a random-weight deepseek2 GGUF model (tiny, mini, v3-layer, lite)"},
    {"plan", cmd_plan, "print the cluster plan for N ranks (stages, experts, memory)"},
    {"bench", cmd_bench, "memory bandwidth, kernel throughput per type, model prefill/decode speed"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"detokenize", cmd_detokenize, "write the bytes of token ids"},
    {"chat-render", cmd_chat_render, "print the prompt the chat template makes of JSON messages"},
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: moe COMMAND [options]\n"
            "\n"
            "A CPU inference engine for DeepSeek-V3/R1-family (GGUF arch deepseek2) models.\n"
            "Run under mpirun to spread a model over several ranks.\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`moe COMMAND --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "moe: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
