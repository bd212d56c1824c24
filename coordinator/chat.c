/* DeepSeek chat templates rendered in C (see chat.h).
 *
 * Each render function follows its Jinja template statement by statement,
 * quirks included: the V3/R1 templates' flags is_first and
 * is_output_first are never reset, so later tool-call rounds render the
 * way the template renders them. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"

/* ---- growable string ---- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = (b->n + k + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, k + 1);
    b->n += k;
}

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- families ---- */

static const char *const names[] = {
    [CHAT_DEEPSEEK_V3] = "deepseek3",
    [CHAT_DEEPSEEK_R1] = "deepseek-r1",
    [CHAT_DEEPSEEK_R1_ORIG] = "deepseek-r1-orig",
    [CHAT_DEEPSEEK_V2] = "deepseek2",
};

int chat_family_from_name(const char *name) {
    for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++)
        if (!strcmp(names[k], name)) return k;
    return -1;
}

const char *chat_family_name(int family) {
    return family >= 0 && family < (int)(sizeof names / sizeof names[0]) ? names[family] : "?";
}

int chat_detect(const char *tmpl, char *err, size_t errlen) {
    static const char hint[] =
        "pass --chat-template NAME with NAME one of deepseek3, deepseek-r1, deepseek-r1-orig, deepseek2";
    if (!tmpl) {
        fail(err, errlen, "the model has no tokenizer.chat_template; %s", hint);
        return -1;
    }
    bool user = strstr(tmpl, "<｜User｜>") != NULL;
    bool assistant = strstr(tmpl, "<｜Assistant｜>") != NULL;
    bool eos = strstr(tmpl, "<｜end▁of▁sentence｜>") != NULL;
    if (user && assistant && eos && strstr(tmpl, "ns.system_prompt")) {
        /* R1 drops reasoning: "content.split('</think>')[-1]". */
        if (strstr(tmpl, "split('</think>')"))
            return strstr(tmpl, "'<｜Assistant｜><think>\\n'") ? CHAT_DEEPSEEK_R1 : CHAT_DEEPSEEK_R1_ORIG;
        if (strstr(tmpl, "message['content'] is none") && !strstr(tmpl, "<think>"))
            return CHAT_DEEPSEEK_V3;
    }
    if (strstr(tmpl, "'Assistant: ' + message['content'] + eos_token") && strstr(tmpl, "'User: '"))
        return CHAT_DEEPSEEK_V2;
    fail(err, errlen, "unsupported chat template (not a DeepSeek V3, R1 or V2 template); %s", hint);
    return -1;
}

/* ---- rendering ---- */

/* Content of message i that the template concatenates: NULL content is an
 * error there (None + str). */
static const char *need_content(const chat_messages *m, int i, char *err, size_t errlen) {
    if (m->v[i].content) return m->v[i].content;
    fail(err, errlen, "message %d (%s) has no content", i, m->v[i].role);
    return NULL;
}

static bool is_role(const chat_message *msg, const char *role) { return !strcmp(msg->role, role); }

static void put_call(sbuf *b, const chat_tool_call *c) {
    put(b, "<｜tool▁call▁begin｜>");
    put(b, c->type);
    put(b, "<｜tool▁sep｜>");
    put(b, c->name);
    put(b, "\n```json\n");
    put(b, c->arguments);
    put(b, "\n```<｜tool▁call▁end｜>");
}

/* The V3 and R1 templates share their system prompt and tool output
 * handling; they differ in tool calls, reasoning and the generation
 * prompt. */
static bool render_v3_r1(int family, const chat_messages *m, bool add_gen, const char *bos,
                         sbuf *b, char *err, size_t errlen) {
    bool r1 = family != CHAT_DEEPSEEK_V3;
    bool is_first = false, is_tool = false, is_output_first = true, first_sp = true;
    put(b, bos);
    for (int i = 0; i < m->n; i++) { /* every system message, joined, straight after BOS */
        if (!is_role(&m->v[i], "system")) continue;
        const char *c = need_content(m, i, err, errlen);
        if (!c) return false;
        if (!first_sp) put(b, "\n\n");
        put(b, c);
        first_sp = false;
    }
    for (int i = 0; i < m->n; i++) {
        const chat_message *msg = &m->v[i];
        const char *c;
        if (is_role(msg, "user")) {
            if (!(c = need_content(m, i, err, errlen))) return false;
            is_tool = false;
            put(b, "<｜User｜>");
            put(b, c);
        }
        /* V3: a tool-calling message is one whose content is null; R1: one
         * that has a tool_calls key. */
        bool calls = r1 ? msg->calls != NULL : msg->content == NULL;
        if (is_role(msg, "assistant") && calls) {
            is_tool = false;
            for (int k = 0; k < msg->n_calls; k++) {
                if (!is_first) {
                    put(b, "<｜Assistant｜>");
                    if (r1 && msg->content) put(b, msg->content);
                    put(b, "<｜tool▁calls▁begin｜>");
                    put_call(b, &msg->calls[k]);
                    is_first = true;
                } else {
                    put(b, "\n");
                    put_call(b, &msg->calls[k]);
                    if (!r1) put(b, "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>");
                }
            }
            if (r1) put(b, "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>");
        }
        if (is_role(msg, "assistant") && !calls) {
            if (!(c = need_content(m, i, err, errlen))) return false;
            if (is_tool) {
                put(b, "<｜tool▁outputs▁end｜>");
                put(b, c);
                put(b, "<｜end▁of▁sentence｜>");
                is_tool = false;
            } else {
                if (r1) { /* content.split('</think>')[-1] */
                    const char *p;
                    while ((p = strstr(c, "</think>"))) c = p + strlen("</think>");
                }
                put(b, "<｜Assistant｜>");
                put(b, c);
                put(b, "<｜end▁of▁sentence｜>");
            }
        }
        if (is_role(msg, "tool")) {
            if (!(c = need_content(m, i, err, errlen))) return false;
            is_tool = true;
            /* V3 puts a newline before each later output, R1 does not. */
            put(b, is_output_first ? "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>"
                   : r1            ? "<｜tool▁output▁begin｜>"
                                   : "\n<｜tool▁output▁begin｜>");
            put(b, c);
            put(b, "<｜tool▁output▁end｜>");
            is_output_first = false;
        }
    }
    if (is_tool) put(b, "<｜tool▁outputs▁end｜>");
    if (add_gen && !is_tool) put(b, family == CHAT_DEEPSEEK_R1 ? "<｜Assistant｜><think>\n" : "<｜Assistant｜>");
    return true;
}

/* DeepSeek-V2 / LLM chat:
 *   bos, then per message: system "C\n\n", user "User: C\n\n",
 *   assistant "Assistant: C" + eos; generation prompt "Assistant:". */
static bool render_v2(const chat_messages *m, bool add_gen, const char *bos, const char *eos,
                      sbuf *b, char *err, size_t errlen) {
    put(b, bos);
    for (int i = 0; i < m->n; i++) {
        const chat_message *msg = &m->v[i];
        bool sys = is_role(msg, "system"), user = is_role(msg, "user"), as = is_role(msg, "assistant");
        if (!sys && !user && !as) continue;
        const char *c = need_content(m, i, err, errlen);
        if (!c) return false;
        put(b, user ? "User: " : as ? "Assistant: " : "");
        put(b, c);
        put(b, as ? eos : "\n\n");
    }
    if (add_gen) put(b, "Assistant:");
    return true;
}

char *chat_render(int family, const chat_messages *m, bool add_generation_prompt, const char *bos,
                  const char *eos, char *err, size_t errlen) {
    sbuf b = {0};
    bool ok;
    put(&b, "");
    switch (family) {
    case CHAT_DEEPSEEK_V3: case CHAT_DEEPSEEK_R1: case CHAT_DEEPSEEK_R1_ORIG:
        ok = render_v3_r1(family, m, add_generation_prompt, bos, &b, err, errlen);
        break;
    case CHAT_DEEPSEEK_V2:
        ok = render_v2(m, add_generation_prompt, bos, eos, &b, err, errlen);
        break;
    default:
        ok = fail(err, errlen, "unknown chat template family %d", family);
    }
    if (ok && b.oom) ok = fail(err, errlen, "out of memory rendering the chat");
    if (!ok) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- JSON messages ---- */

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* A string field, or an object/array serialised (arguments given as an
 * object).  NULL if absent or of another type. */
static char *field_text(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v)) return dup_str(v->valuestring);
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) return cJSON_PrintUnformatted(v);
    return NULL;
}

static bool parse_content(const cJSON *c, chat_message *msg, int i, char *err, size_t errlen) {
    if (!c || cJSON_IsNull(c)) return true;
    if (cJSON_IsString(c)) return (msg->content = dup_str(c->valuestring)) != NULL;
    if (!cJSON_IsArray(c)) return fail(err, errlen, "message %d: content must be a string, null or an array of parts", i);
    sbuf b = {0};
    put(&b, "");
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *ty = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *tx = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "text") || !cJSON_IsString(tx)) {
            free(b.s);
            return fail(err, errlen, "message %d: only {\"type\": \"text\", \"text\": ...} content parts are supported", i);
        }
        put(&b, tx->valuestring);
    }
    msg->content = b.s;
    return !b.oom;
}

static bool parse_calls(const cJSON *a, chat_message *msg, int i, char *err, size_t errlen) {
    if (!a || cJSON_IsNull(a)) return true;
    if (!cJSON_IsArray(a)) return fail(err, errlen, "message %d: tool_calls must be an array", i);
    int n = cJSON_GetArraySize(a);
    msg->calls = calloc((size_t)n + 1, sizeof *msg->calls);
    if (!msg->calls) return fail(err, errlen, "out of memory");
    const cJSON *tc;
    cJSON_ArrayForEach(tc, a) {
        chat_tool_call *c = &msg->calls[msg->n_calls++];
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tc, "function");
        c->type = field_text(tc, "type");
        if (!c->type) c->type = dup_str("function");
        c->name = field_text(fn, "name");
        c->arguments = field_text(fn, "arguments");
        if (!c->name || !c->arguments)
            return fail(err, errlen, "message %d: tool call %d needs function.name and function.arguments",
                        i, msg->n_calls - 1);
    }
    return true;
}

chat_messages *chat_parse_messages(const char *json, size_t len, char *err, size_t errlen) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        fail(err, errlen, "messages are not valid JSON (near byte %ld)",
             cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - json) : 0L);
        return NULL;
    }
    const cJSON *arr = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "messages") : root;
    chat_messages *m = calloc(1, sizeof *m);
    bool ok = m != NULL;
    if (!ok) fail(err, errlen, "out of memory");
    if (ok && !cJSON_IsArray(arr)) ok = fail(err, errlen, "expected a JSON array of messages (or {\"messages\": [...]})");
    if (ok) {
        m->v = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *m->v);
        if (!m->v) ok = fail(err, errlen, "out of memory");
    }
    const cJSON *o;
    if (ok) cJSON_ArrayForEach(o, arr) {
        int i = m->n;
        chat_message *msg = &m->v[m->n++];
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(o, "role");
        if (!cJSON_IsString(role)) {
            ok = fail(err, errlen, "message %d has no \"role\" string", i);
            break;
        }
        const char *r = role->valuestring;
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
            ok = fail(err, errlen, "message %d: unknown role '%.40s' (system, user, assistant or tool)", i, r);
            break;
        }
        if (!(msg->role = dup_str(r)) ||
            !parse_content(cJSON_GetObjectItemCaseSensitive(o, "content"), msg, i, err, errlen) ||
            !parse_calls(cJSON_GetObjectItemCaseSensitive(o, "tool_calls"), msg, i, err, errlen)) {
            ok = false;
            break;
        }
    }
    cJSON_Delete(root);
    if (!ok) {
        chat_messages_free(m);
        return NULL;
    }
    return m;
}

void chat_messages_free(chat_messages *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) {
        chat_message *msg = &m->v[i];
        free(msg->role);
        free(msg->content);
        for (int k = 0; k < msg->n_calls; k++) {
            free(msg->calls[k].type);
            free(msg->calls[k].name);
            free(msg->calls[k].arguments);
        }
        free(msg->calls);
    }
    free(m->v);
    free(m);
}
