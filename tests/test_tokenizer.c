/* Tokenizer, streaming detokenizer and chat template against the fixtures
 * made with llama.cpp and transformers (../shared/fixtures/tokenizer/,
 * see its README): every case of cases.jsonl, decode.jsonl and chat.jsonl
 * exact, the tiny models' prompts from models/manifest.tsv, streaming
 * chunking, and clear errors for unsupported vocabularies. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "check.h"
#include "detok.h"
#include "gguf.h"
#include "tokenizer.h"
#include "unicode.h"

static char *path_in(const char *sub) {
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 1024, "%s/%s", fixtures_dir(), sub);
    return p;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 == cap) {
            char *p = realloc(b, cap *= 2);
            if (!p) free(b);
            b = p;
        }
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = n;
    return b;
}

/* Calls fn on every JSON object line of a .jsonl file; returns lines read. */
static int each_line(const char *path, void (*fn)(const cJSON *, void *), void *ctx) {
    size_t len;
    char *all = read_all(path, &len);
    CHECK(all != NULL, "cannot read %s", path);
    if (!all) return 0;
    int n = 0;
    for (char *line = all, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) nl = line + strlen(line) - 1;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)(nl - line + 1));
        CHECK(j != NULL, "%s line %d is not JSON", path, n + 1);
        if (j) fn(j, ctx);
        cJSON_Delete(j);
        n++;
        if (!nl[1]) break;
    }
    free(all);
    return n;
}

static int *json_ids(const cJSON *a, size_t *n) {
    *n = (size_t)cJSON_GetArraySize(a);
    int *v = malloc((*n + 1) * sizeof *v);
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) v[i++] = e->valueint;
    return v;
}

static bool same_ids(const int *a, size_t na, const int *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *what, const int *v, size_t n) {
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", v[i]);
    fprintf(stderr, "\n");
}

/* Hex string -> malloc'd bytes. */
static unsigned char *unhex(const char *h, size_t *n) {
    *n = strlen(h) / 2;
    unsigned char *b = malloc(*n + 1);
    for (size_t i = 0; i < *n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (unsigned char)v;
    }
    return b;
}

/* ---- cases.jsonl ---- */

typedef struct counts {
    const tokenizer *t;
    int lines, exact;
} counts;

static void check_case(const cJSON *j, void *ctx) {
    counts *c = ctx;
    const char *id = cJSON_GetObjectItem(j, "id")->valuestring;
    const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
    bool ps = cJSON_IsTrue(cJSON_GetObjectItem(j, "parse_special"));
    size_t n_no, n_with, n_a, n_b;
    int *want_no = json_ids(cJSON_GetObjectItem(j, "ids_no_bos"), &n_no);
    int *want_with = json_ids(cJSON_GetObjectItem(j, "ids_with_bos"), &n_with);
    int *a = tokenizer_encode(c->t, text, strlen(text), false, ps, &n_a);
    int *b = tokenizer_encode(c->t, text, strlen(text), true, ps, &n_b);
    bool ok_a = a && same_ids(a, n_a, want_no, n_no);
    bool ok_b = b && same_ids(b, n_b, want_with, n_with);
    CHECK(ok_a, "case %s (no BOS) differs", id);
    CHECK(ok_b, "case %s (with BOS) differs", id);
    if (!ok_a && a) {
        print_ids("want", want_no, n_no);
        print_ids("got ", a, n_a);
    }
    c->lines++;
    c->exact += ok_a && ok_b;
    free(want_no);
    free(want_with);
    free(a);
    free(b);
}

/* ---- decode.jsonl ---- */

/* Expected bytes of a decode line: field `text` or `bytes_hex` (+suffix). */
static unsigned char *want_bytes(const cJSON *j, const char *suffix, size_t *n) {
    char k1[64], k2[64];
    snprintf(k1, sizeof k1, "text%s", suffix);
    snprintf(k2, sizeof k2, "bytes_hex%s", suffix);
    const cJSON *t = cJSON_GetObjectItem(j, k1);
    if (t) {
        *n = strlen(t->valuestring);
        unsigned char *b = malloc(*n + 1);
        memcpy(b, t->valuestring, *n + 1);
        return b;
    }
    return unhex(cJSON_GetObjectItem(j, k2)->valuestring, n);
}

/* Length of the valid UTF-8 character at s[0..n), or 0 if none starts
 * there (a bad byte). */
static size_t char_len(const unsigned char *s, size_t n) {
    size_t len = s[0] < 0x80 ? 1 : s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 0;
    return len && len <= n && utf8_valid_prefix(s, len) == len ? len : 0;
}

/* Streams ids through a detok one at a time and returns the concatenated
 * output; checks that no chunk boundary falls inside a valid character of
 * that output (bytes that never form a character may be passed on as they
 * come). */
static char *stream(const tokenizer *t, const int *ids, size_t n, bool special, size_t *len) {
    detok *d = detok_new(t, special);
    size_t cap = 64, m = 0, nb = 0;
    char *all = malloc(cap);
    size_t *cut = malloc((n + 1) * sizeof *cut); /* output length after each push */
    for (size_t i = 0; i <= n; i++) {
        size_t k;
        const char *chunk = i < n ? detok_push(d, ids[i], &k) : detok_flush(d, &k);
        CHECK(chunk != NULL, "detok returned NULL for id %d", i < n ? ids[i] : -1);
        if (!chunk) break;
        while (m + k + 1 > cap) all = realloc(all, cap *= 2);
        memcpy(all + m, chunk, k);
        m += k;
        cut[nb++] = m;
    }
    detok_free(d);
    all[m] = 0;
    /* Mark the inside of every valid character, then look at the cuts. */
    unsigned char *inside = calloc(m + 1, 1);
    for (size_t i = 0; i < m;) {
        size_t l = char_len((const unsigned char *)all + i, m - i);
        for (size_t j = 1; j < l; j++) inside[i + j] = 1;
        i += l ? l : 1;
    }
    for (size_t b = 0; b < nb; b++)
        CHECK(!inside[cut[b]], "a chunk ends inside a character (after id %d)", b < n ? ids[b] : -1);
    free(inside);
    free(cut);
    *len = m;
    return all;
}

static void check_decode(const cJSON *j, void *ctx) {
    counts *c = ctx;
    const char *name = cJSON_GetObjectItem(j, "id")->valuestring;
    size_t n, nw, nws;
    int *ids = json_ids(cJSON_GetObjectItem(j, "ids"), &n);
    unsigned char *want = want_bytes(j, "", &nw);
    unsigned char *want_skip = want_bytes(j, "_skip_special", &nws);
    size_t ng, ngs, nst, nsts;
    char *got = tokenizer_decode(c->t, ids, n, true, &ng);
    char *got_skip = tokenizer_decode(c->t, ids, n, false, &ngs);
    bool ok = got && ng == nw && !memcmp(got, want, nw);
    bool ok_skip = got_skip && ngs == nws && !memcmp(got_skip, want_skip, nws);
    CHECK(ok, "decode %s differs", name);
    CHECK(ok_skip, "decode %s (skip special) differs", name);

    /* Every piece, and streaming (one id at a time) == all at once. */
    const cJSON *pieces = cJSON_GetObjectItem(j, "pieces_hex");
    bool ok_pieces = (size_t)cJSON_GetArraySize(pieces) == n;
    for (size_t i = 0; ok_pieces && i < n; i++) {
        size_t pn, gn;
        unsigned char *p = unhex(cJSON_GetArrayItem(pieces, (int)i)->valuestring, &pn);
        const char *g = tokenizer_piece(c->t, ids[i], true, &gn);
        ok_pieces = g && gn == pn && !memcmp(g, p, pn);
        free(p);
    }
    CHECK(ok_pieces, "decode %s: pieces differ", name);
    char *st = stream(c->t, ids, n, true, &nst);
    char *sts = stream(c->t, ids, n, false, &nsts);
    bool ok_stream = nst == nw && !memcmp(st, want, nw) && nsts == nws && !memcmp(sts, want_skip, nws);
    CHECK(ok_stream, "decode %s: streamed bytes differ", name);
    c->lines++;
    c->exact += ok && ok_skip && ok_pieces && ok_stream;
    free(ids);
    free(want);
    free(want_skip);
    free(got);
    free(got_skip);
    free(st);
    free(sts);
}

/* ---- chat.jsonl ---- */

static void check_chat(const cJSON *j, void *ctx) {
    counts *c = ctx;
    const char *name = cJSON_GetObjectItem(j, "id")->valuestring;
    char *msgs_json = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "messages"));
    bool gen = cJSON_IsTrue(cJSON_GetObjectItem(j, "add_generation_prompt"));
    const char *want = cJSON_GetObjectItem(j, "rendered")->valuestring;
    size_t n_want, n_got = 0;
    int *want_ids = json_ids(cJSON_GetObjectItem(j, "ids"), &n_want);
    char err[256] = "";
    chat_messages *m = chat_parse_messages(msgs_json, strlen(msgs_json), err, sizeof err);
    CHECK(m != NULL, "chat %s: parse: %s", name, err);
    int family = chat_detect(tokenizer_chat_template(c->t), err, sizeof err);
    CHECK(family == CHAT_DEEPSEEK_V3, "chat %s: template family %d (%s)", name, family, err);
    char *got = m ? chat_render(family, m, gen, "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", err, sizeof err) : NULL;
    bool ok = got && !strcmp(got, want);
    CHECK(ok, "chat %s: rendered differs:\n  want %s\n  got  %s", name, want, got ? got : err);
    int *ids = got ? tokenizer_encode(c->t, got, strlen(got), false, true, &n_got) : NULL;
    bool ok_ids = ids && same_ids(ids, n_got, want_ids, n_want);
    CHECK(ok_ids, "chat %s: ids differ", name);
    c->lines++;
    c->exact += ok && ok_ids;
    free(ids);
    free(got);
    chat_messages_free(m);
    free(want_ids);
    free(msgs_json);
}

/* ---- the other template families (no fixture: expectations written
 * out by hand from the DeepSeek-R1 and DeepSeek-V2 Jinja templates) ---- */

static char *render_json(int family, const char *json, bool gen) {
    char err[256] = "";
    chat_messages *m = chat_parse_messages(json, strlen(json), err, sizeof err);
    CHECK(m != NULL, "parse %s: %s", json, err);
    char *out = m ? chat_render(family, m, gen, "<B>", "<E>", err, sizeof err) : NULL;
    CHECK(out != NULL, "render: %s", err);
    chat_messages_free(m);
    return out;
}

static void expect_render(int family, const char *json, bool gen, const char *want) {
    char *got = render_json(family, json, gen);
    CHECK(got && !strcmp(got, want), "%s render:\n  want %s\n  got  %s", chat_family_name(family), want,
          got ? got : "(null)");
    free(got);
}

static void check_chat_families(const tokenizer *t) {
    char err[256];
    /* Detection: the fixture's V3 template, R1 markers (original and with
     * the "<think>\n" generation prompt), V2, and anything else. */
    CHECK(chat_detect(tokenizer_chat_template(t), err, sizeof err) == CHAT_DEEPSEEK_V3, "V3 detected");
    const char *r1_tail = "{% set ns = namespace(system_prompt='') %}{{ bos_token }}{{ ns.system_prompt }}{{'<｜User｜>'}}{{'<｜Assistant｜>'}}"
                          "{{'<｜end▁of▁sentence｜>'}}{% set content = content.split('</think>')[-1] %}";
    char r1[512], r1think[600];
    snprintf(r1, sizeof r1, "%s{{'<｜Assistant｜>'}}", r1_tail);
    snprintf(r1think, sizeof r1think, "%s{{'<｜Assistant｜><think>\\n'}}", r1_tail);
    CHECK(chat_detect(r1, err, sizeof err) == CHAT_DEEPSEEK_R1_ORIG, "R1 (original) detected");
    CHECK(chat_detect(r1think, err, sizeof err) == CHAT_DEEPSEEK_R1, "R1 (think prompt) detected");
    CHECK(chat_detect("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                      "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
                      "{{ 'Assistant: ' + message['content'] + eos_token }}{% endif %}{% endfor %}",
                      err, sizeof err) == CHAT_DEEPSEEK_V2, "V2 detected");
    err[0] = 0;
    CHECK(chat_detect("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}", err, sizeof err) < 0 &&
          strstr(err, "--chat-template"), "other template refused: %s", err);
    err[0] = 0;
    CHECK(chat_detect(NULL, err, sizeof err) < 0 && strstr(err, "--chat-template"), "no template: %s", err);

    /* R1 drops the reasoning of earlier assistant turns (up to the last
     * </think>) and opens a think block for the reply. */
    const char *think = "[{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":\"Q\"},"
                        "{\"role\":\"assistant\",\"content\":\"<think>a</think>b</think>c\"},"
                        "{\"role\":\"user\",\"content\":\"R\"}]";
    expect_render(CHAT_DEEPSEEK_R1, think, true,
                  "<B>S<｜User｜>Q<｜Assistant｜>c<｜end▁of▁sentence｜><｜User｜>R<｜Assistant｜><think>\n");
    expect_render(CHAT_DEEPSEEK_R1_ORIG, think, true,
                  "<B>S<｜User｜>Q<｜Assistant｜>c<｜end▁of▁sentence｜><｜User｜>R<｜Assistant｜>");
    expect_render(CHAT_DEEPSEEK_V3, think, true,
                  "<B>S<｜User｜>Q<｜Assistant｜><think>a</think>b</think>c<｜end▁of▁sentence｜><｜User｜>R<｜Assistant｜>");
    /* R1 tool calls: content before the calls, calls end after the loop,
     * later tool outputs without a newline. */
    const char *tools = "[{\"role\":\"user\",\"content\":\"Q\"},{\"role\":\"assistant\",\"content\":\"x\","
                        "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
                        "{\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":{\"a\":1}}}]},"
                        "{\"role\":\"tool\",\"content\":\"1\"},{\"role\":\"tool\",\"content\":\"2\"},"
                        "{\"role\":\"assistant\",\"content\":\"done\"}]";
    expect_render(CHAT_DEEPSEEK_R1, tools, true,
                  "<B><｜User｜>Q<｜Assistant｜>x<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n"
                  "```json\n{}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>g\n```json\n"
                  "{\"a\":1}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
                  "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>1<｜tool▁output▁end｜>"
                  "<｜tool▁output▁begin｜>2<｜tool▁output▁end｜><｜tool▁outputs▁end｜>done<｜end▁of▁sentence｜>"
                  "<｜Assistant｜><think>\n");
    /* V2: plain "User: " / "Assistant: " turns. */
    expect_render(CHAT_DEEPSEEK_V2, think, true,
                  "<B>S\n\nUser: Q\n\nAssistant: <think>a</think>b</think>c<E>User: R\n\nAssistant:");
    /* Errors the template would raise too. */
    chat_messages *m = chat_parse_messages("[{\"role\":\"user\"}]", 19, err, sizeof err);
    char *out = m ? chat_render(CHAT_DEEPSEEK_V3, m, true, "", "", err, sizeof err) : NULL;
    CHECK(m && !out && strstr(err, "no content"), "user without content: %s", err);
    chat_messages_free(m);
    CHECK(!chat_parse_messages("[{\"role\":\"robot\",\"content\":\"x\"}]", 34, err, sizeof err) &&
          strstr(err, "unknown role"), "bad role: %s", err);
    CHECK(!chat_parse_messages("{\"x\":1}", 7, err, sizeof err) && strstr(err, "array"), "not an array: %s", err);
}

/* ---- streaming: random ids, one at a time == all at once ---- */

static void check_stream_random(const tokenizer *t) {
    uint64_t s = 12345;
    int ids[64], same = 0, total = 500;
    for (int it = 0; it < total; it++) {
        int n = 1 + it % 40;
        for (int i = 0; i < n; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            /* Mostly the 256 byte tokens and CJK-ish ids, so characters
             * are often split over several tokens; some specials. */
            uint32_t r = (uint32_t)(s >> 33);
            ids[i] = r % 5 == 0 ? (int)(128790 + r % 30) : r % 5 < 3 ? (int)(3 + r % 256) : (int)(r % 128000);
        }
        for (int sp = 0; sp < 2; sp++) {
            size_t nw, ns;
            char *whole = tokenizer_decode(t, ids, (size_t)n, sp, &nw);
            char *st = stream(t, ids, (size_t)n, sp, &ns);
            same += whole && ns == nw && !memcmp(st, whole, nw);
            free(whole);
            free(st);
        }
    }
    printf("streaming: %d/%d random id sequences give the whole decode\n", same, 2 * total);
    CHECK(same == 2 * total, "streamed != whole in %d cases", 2 * total - same);
}

/* ---- tiny models: prompts of models/manifest.tsv ---- */

static void check_tiny_models(void) {
    /* The prompt texts, from models/README.md; manifest.tsv has the ids. */
    static const char *const prompts[] = {
        "The quick brown fox jumps over the lazy dog. Hello, world! 12345",
        "Once upon a time there was a little robot who liked to count: one, two, three, four, "
        "five, six, seven, eight, nine, ten. She said: \"Hello again, how are you today?\" The "
        "cat sat on the mat, and the dog sat on the log near",
        "",
    };
    size_t len;
    char *tsv = read_all(path_in("models/manifest.tsv"), &len);
    CHECK(tsv != NULL, "cannot read manifest.tsv");
    if (!tsv) return;
    int rows = 0, exact = 0;
    char *save = NULL;
    strtok_r(tsv, "\n", &save); /* header */
    for (char *line; (line = strtok_r(NULL, "\n", &save));) {
        char *f[6], *s2 = NULL;
        int k = 0;
        for (char *p = strtok_r(line, "\t", &s2); p && k < 6; p = strtok_r(NULL, "\t", &s2)) f[k++] = p;
        if (k < 6) continue;
        char gg[512], err[256];
        snprintf(gg, sizeof gg, "models/%s.gguf", f[0]);
        tokenizer *t = tokenizer_load_file(path_in(gg), err, sizeof err);
        CHECK(t != NULL, "%s: %s", f[0], err);
        if (!t) continue;
        CHECK(tokenizer_n_vocab(t) == atoi(f[2]), "%s: n_vocab %d", f[0], tokenizer_n_vocab(t));
        int want[128];
        size_t nw = 0;
        for (char *p = f[3], *e; *p && nw < 128; p = e) {
            want[nw++] = (int)strtol(p, &e, 10);
            if (e == p) break;
        }
        int pi = f[1][1] - '1';
        size_t n;
        int *ids = tokenizer_encode(t, prompts[pi], strlen(prompts[pi]), true, false, &n);
        bool ok = ids && same_ids(ids, n, want, nw);
        CHECK(ok, "%s %s: prompt ids differ", f[0], f[1]);
        rows++;
        exact += ok;
        /* USER_DEFINED chat markers split out even without parse_special. */
        const char *chat = "<｜User｜>hi<｜Assistant｜>";
        int *c = tokenizer_encode(t, chat, strlen(chat), false, false, &n);
        CHECK(c && n >= 3 && c[0] == 735 && c[n - 1] == 736, "%s: USER_DEFINED markers not split", f[0]);
        free(c);
        free(ids);
        tokenizer_free(t);
    }
    printf("models/manifest.tsv: %d/%d prompts exact\n", exact, rows);
    free(tsv);
}

/* ---- bad vocabularies ---- */

/* Writes a small vocab GGUF with the given model/pre (NULL: key absent). */
static void write_vocab_with(const char *path, const char *model, const char *pre, const char *const *toks,
                             const int32_t *types, int n_tok, const char *const *merges, int n_merge) {
    gguf_writer *w = gguf_writer_new();
    if (model) gguf_set_str(w, "tokenizer.ggml.model", model);
    if (pre) gguf_set_str(w, "tokenizer.ggml.pre", pre);
    if (toks) {
        gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n_tok);
        gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, (uint64_t)n_tok);
    }
    gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merge);
    char err[256];
    bool ok = gguf_writer_begin(w, path, err, sizeof err) && gguf_writer_end(w, err, sizeof err);
    CHECK(ok, "writing %s: %s", path, err);
    gguf_writer_free(w);
}

static void write_vocab(const char *path, const char *model, const char *pre, bool with_tokens) {
    static const char *const toks[] = {"<s>", "a", "b", "ab"};
    static const char *const merges[] = {"a b"};
    static const int32_t types[] = {3, 1, 1, 1};
    write_vocab_with(path, model, pre, with_tokens ? toks : NULL, types, 4, merges, 1);
}

static int *encode_str(const tokenizer *t, const char *s, size_t *n) {
    return tokenizer_encode(t, s, strlen(s), false, false, n);
}

static void expect_load_error(const char *path, const char *needle) {
    char err[512] = "";
    tokenizer *t = tokenizer_load_file(path, err, sizeof err);
    CHECK(t == NULL, "%s loaded but should fail", path);
    CHECK(strstr(err, needle) != NULL, "error '%s' does not mention '%s'", err, needle);
    tokenizer_free(t);
}

static void check_bad_vocabs(void) {
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    write_vocab(path, "gpt2", "llama-bpe", true);
    expect_load_error(path, "unsupported tokenizer.ggml.pre 'llama-bpe'");
    write_vocab(path, "gpt2", NULL, true);
    expect_load_error(path, "tokenizer.ggml.pre");
    write_vocab(path, "llama", "deepseek-v3", true);
    expect_load_error(path, "unsupported tokenizer.ggml.model 'llama'");
    write_vocab(path, "gpt2", "deepseek-v3", false);
    expect_load_error(path, "tokenizer.ggml.tokens");
    write_vocab(path, "gpt2", "deepseek-llm", true); /* supported: loads, merges a+b */
    char err[256];
    tokenizer *t = tokenizer_load_file(path, err, sizeof err);
    CHECK(t != NULL, "deepseek-llm vocab: %s", err);
    if (t) {
        size_t n;
        int *ids = tokenizer_encode(t, "ab", 2, false, false, &n);
        CHECK(ids && n == 1 && ids[0] == 3, "deepseek-llm toy vocab: 'ab' -> %zu ids", n);
        free(ids);
        tokenizer_free(t);
    }
    /* A merge whose result is not a token ("a b" -> "ab") still merges on
     * ("ab c" -> "abc"), as llama.cpp merges by text; left over, such a
     * symbol gives the tokens of its single bytes. */
    static const char *const toks[] = {"a", "b", "c", "abc", "x"};
    static const int32_t types[] = {1, 1, 1, 1, 1};
    static const char *const merges[] = {"a b", "ab c"};
    write_vocab_with(path, "gpt2", "deepseek-v3", toks, types, 5, merges, 2);
    t = tokenizer_load_file(path, err, sizeof err);
    CHECK(t != NULL, "toy vocab: %s", err);
    if (t) {
        size_t n1, n2;
        int *abc = encode_str(t, "abc", &n1), *ab = encode_str(t, "ab", &n2);
        CHECK(abc && n1 == 1 && abc[0] == 3, "'abc' via a merge result that is no token");
        CHECK(ab && n2 == 2 && ab[0] == 0 && ab[1] == 1, "leftover 'ab' -> a, b");
        CHECK(tokenizer_find(t, "ab", 2) == -1, "'ab' is not a token");
        free(abc);
        free(ab);
        tokenizer_free(t);
    }
    unlink(path);
}

int main(void) {
    char err[512];
    tokenizer *t = tokenizer_load_file(path_in("tokenizer/deepseek-v3-vocab.gguf"), err, sizeof err);
    CHECK(t != NULL, "load: %s", err);
    if (!t) return check_summary("test_tokenizer");
    CHECK(tokenizer_n_vocab(t) == 129280, "n_vocab %d", tokenizer_n_vocab(t));
    CHECK(tokenizer_bos(t) == 0 && tokenizer_eos(t) == 1, "bos %d eos %d", tokenizer_bos(t), tokenizer_eos(t));
    CHECK(tokenizer_add_bos(t), "add_bos_token");
    CHECK(tokenizer_token_type(t, 128803) == TOK_CONTROL, "128803 type");
    CHECK(tokenizer_token_type(t, 129279) == TOK_UNUSED, "129279 type");
    CHECK(tokenizer_token_type(t, 500) == TOK_NORMAL, "500 type");
    CHECK(tokenizer_find(t, "<｜User｜>", strlen("<｜User｜>")) == 128803, "find <｜User｜>");
    size_t n;
    const char *txt = tokenizer_token_text(t, 163, &n);
    CHECK(txt && n == 2 && !memcmp(txt, "ä", 2), "token 163 text");

    counts c = {t, 0, 0};
    each_line(path_in("tokenizer/cases.jsonl"), check_case, &c);
    printf("cases.jsonl: %d/%d exact\n", c.exact, c.lines);
    CHECK(c.lines == 70, "cases.jsonl has %d lines", c.lines);

    counts d = {t, 0, 0};
    each_line(path_in("tokenizer/decode.jsonl"), check_decode, &d);
    printf("decode.jsonl: %d/%d exact (whole, skip-special, pieces, streamed)\n", d.exact, d.lines);
    CHECK(d.lines == 24, "decode.jsonl has %d lines", d.lines);

    counts ch = {t, 0, 0};
    each_line(path_in("tokenizer/chat.jsonl"), check_chat, &ch);
    printf("chat.jsonl: %d/%d exact (rendered and ids)\n", ch.exact, ch.lines);
    CHECK(ch.lines == 9, "chat.jsonl has %d lines", ch.lines);

    check_chat_families(t);
    check_stream_random(t);
    check_tiny_models();
    check_bad_vocabs();
    tokenizer_free(t);
    return check_summary("test_tokenizer");
}
