/* Subcommands of the `moe` binary.  Each takes argc/argv starting at the
 * subcommand name, handles its own --help, and returns the exit status. */
#ifndef MOE_COMMANDS_H
#define MOE_COMMANDS_H

typedef int (*moe_cmd_fn)(int argc, char **argv);

typedef struct moe_command {
    const char *name;
    moe_cmd_fn fn;
    const char *summary;
} moe_command;

int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_render(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);

#endif
