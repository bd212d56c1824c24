/* Chat prompts: renders a list of messages exactly as a DeepSeek chat
 * template stored in the GGUF (tokenizer.chat_template) renders it with
 * transformers' apply_chat_template.  Not a Jinja interpreter: the
 * DeepSeek families are recognised and rendered in C; any other template
 * is refused with a message naming --chat-template. */
#ifndef MOE_CHAT_H
#define MOE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

enum chat_family {
    CHAT_DEEPSEEK_V3 = 0, /* DeepSeek-V3: <｜User｜>/<｜Assistant｜>, reasoning kept */
    CHAT_DEEPSEEK_R1,     /* DeepSeek-R1 (updated template): as V3, but drops an
                           * assistant message's text up to its last </think>, and
                           * the generation prompt opens "<think>\n" */
    CHAT_DEEPSEEK_R1_ORIG,/* DeepSeek-R1 as first released: generation prompt
                           * without "<think>\n" */
    CHAT_DEEPSEEK_V2,     /* DeepSeek-V2 / LLM chat: "User: ...\n\nAssistant: ..." */
};

typedef struct chat_tool_call {
    char *type;      /* "function" */
    char *name;      /* function name */
    char *arguments; /* JSON text of the arguments, verbatim */
} chat_tool_call;

typedef struct chat_message {
    char *role;              /* "system", "user", "assistant" or "tool" */
    char *content;           /* NUL-terminated; NULL when JSON null or absent */
    chat_tool_call *calls;   /* [n_calls]; NULL if the message has no tool_calls key */
    int n_calls;
} chat_message;

typedef struct chat_messages {
    chat_message *v; /* [n] in conversation order */
    int n;
} chat_messages;

/* Parses an OpenAI-style JSON array of messages ({"role", "content" (string,
 * null, or an array of {"type":"text","text":...} parts, which are joined),
 * "tool_calls": [{"type", "function": {"name", "arguments"}}]}).  Also
 * accepts an object with a "messages" array.  NULL + message on error. */
chat_messages *chat_parse_messages(const char *json, size_t len, char *err, size_t errlen);
void chat_messages_free(chat_messages *m);

/* Family of a template text, or -1 with a message naming --chat-template
 * if it is not one of the DeepSeek templates (or tmpl is NULL). */
int chat_detect(const char *tmpl, char *err, size_t errlen);
/* Family by --chat-template name ("deepseek3", "deepseek-r1",
 * "deepseek-r1-orig", "deepseek2"), or -1. */
int chat_family_from_name(const char *name);
const char *chat_family_name(int family);

/* Renders the messages; bos/eos are the texts of the BOS and EOS tokens
 * (the templates' bos_token / eos_token).  Returns a malloc'd
 * NUL-terminated string, or NULL + message (e.g. a user message without
 * content, which the Jinja template would fail on too). */
char *chat_render(int family, const chat_messages *m, bool add_generation_prompt, const char *bos,
                  const char *eos, char *err, size_t errlen);

#endif
