/* A deterministic byte-level BPE trainer over a built-in English text: the
 * vocabulary of the generated models (see mkvocab.h). */
#include "mkvocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The training text.  Plain ASCII prose, written for this project; its
 * only job is to give the merges realistic English word pieces. */
static const char corpus[] =
    "The quick brown fox jumps over the lazy dog. Hello, world! Once upon a time there was a "
    "little robot who liked to count: one, two, three, four, five, six, seven, eight, nine, ten. "
    "She said: \"Hello again, how are you today?\" The cat sat on the mat, and the dog sat on the "
    "log near the door.\n\n"
    "Every morning the town woke up slowly. The baker opened his shop before the sun was up, and "
    "the smell of fresh bread drifted along the narrow streets. Children walked to school in small "
    "groups, talking about games, homework and the weather. Their teachers waited at the gate with "
    "cups of coffee, counting heads and calling out names. By nine o'clock the market square was "
    "full of people buying fruit, vegetables, cheese and flowers. Nobody seemed to be in a hurry, "
    "and yet everything that had to be done was done before noon.\n\n"
    "A computer is a machine that follows instructions. It reads numbers from memory, changes "
    "them, and writes the results back. What makes it useful is speed: a modern processor can "
    "perform billions of simple operations every second. Programs are written in languages that "
    "people can read, and a compiler translates them into the instructions the machine "
    "understands. When a program has a mistake, the computer does exactly what it was told, which "
    "is not always what the programmer meant. Finding and fixing these mistakes is called "
    "debugging, and it often takes longer than writing the program in the first place.\n\n"
    "Language models predict the next word of a text. They are trained on large collections of "
    "books, articles and conversations, and they learn which words tend to follow which. A model "
    "does not read letters one at a time; it reads tokens, small pieces of text such as whole "
    "words, parts of words or single characters. The list of tokens is called the vocabulary. "
    "Common words usually get a token of their own, while rare words are split into several "
    "pieces. Numbers are often broken into groups of digits, so 2024 might become 202 and 4.\n\n"
    "In the mountains the weather changes quickly. A clear blue sky can turn grey within an hour, "
    "and a gentle breeze can become a strong wind that bends the trees. Experienced walkers carry "
    "warm clothes, water, a map and a compass, even on a sunny day. They check the forecast before "
    "they leave and tell somebody where they are going. If the path becomes dangerous, they turn "
    "back. The mountain will still be there next year, and there is no shame in waiting for a "
    "better day.\n\n"
    "My grandmother kept a garden behind her house. She grew tomatoes, beans, carrots, potatoes, "
    "onions and herbs, and every summer she made jars of jam from the berries that grew along the "
    "fence. She taught me how to plant seeds, how deep to dig and how much water each plant "
    "needed. \"Patience,\" she used to say, \"is the most important tool in any garden.\" I did not "
    "understand her then, but I think I do now.\n\n"
    "The history of science is full of surprising discoveries. People once believed that the sun "
    "moved around the earth, that illness was caused by bad air and that heavy objects fell faster "
    "than light ones. Careful observation and simple experiments showed otherwise. Scientists "
    "measure, compare and test their ideas, and they change their minds when the evidence demands "
    "it. This habit of questioning is perhaps the most valuable thing that science has given us.\n\n"
    "Cooking a good meal does not require expensive equipment. A sharp knife, a heavy pan and a "
    "wooden spoon are enough for most recipes. Start with fresh ingredients, taste as you go and "
    "add salt a little at a time. Onions should be cooked slowly until they are soft and golden; "
    "garlic burns easily, so add it later. Rice needs twice its volume of water, a lid and about "
    "twenty minutes. Above all, do not be afraid to make mistakes: every cook has burned something "
    "at least once.\n\n"
    "The ship left the harbour at dawn. Its captain, an old sailor with a white beard, stood on "
    "the bridge and watched the coast disappear behind the waves. The crew worked in silence, "
    "checking ropes, sails and engines. They were carrying wheat, machines and letters to an island "
    "far to the south, a journey of eleven days if the sea was kind. On the third night a storm "
    "arrived, and for many hours nobody slept. When the morning came, the sky was calm again and "
    "the ship was still on course.\n\n"
    "Music is found in every culture on earth. Some songs are sung to children at night, others "
    "are played at weddings, festivals or funerals. A melody is a sequence of notes, rhythm is the "
    "pattern of long and short sounds, and harmony appears when several notes are heard together. "
    "Learning an instrument takes years of practice, but even a beginner can feel the joy of "
    "playing a simple tune with friends.\n\n"
    "Trains connect cities, towns and villages across the country. The station clock shows the "
    "exact time, and passengers hurry along the platform with their bags and tickets. Inside, "
    "people read newspapers, look out of the window or fall asleep. A journey that once took "
    "several days now takes only a few hours. Yet many travellers still enjoy the slow trains "
    "that stop at every small station, where the conductor knows the names of the regular "
    "passengers.\n\n"
    "Water covers most of our planet. Rivers carry rain from the hills to the sea, lakes store it, "
    "and clouds bring it back over the land. Plants and animals depend on it, and so do people: "
    "we drink it, wash with it, grow food with it and use it to produce energy. Keeping water "
    "clean is one of the most important tasks of any society, because without it life becomes "
    "difficult very quickly.\n\n"
    "The library was quiet except for the sound of pages turning. Long wooden tables stood between "
    "tall shelves, and a lamp on each table threw a warm circle of light. Students wrote notes, "
    "an old man studied a map of the city, and a young girl searched for a book about dragons. "
    "The librarian, who had worked there for thirty years, could find almost anything without "
    "looking at the catalogue. \"Everything you need to know,\" she liked to say, \"is written "
    "down somewhere. You just have to look for it.\"\n\n"
    "Building a bridge is a question of balance. Engineers calculate the weight of the structure, "
    "the traffic it will carry and the force of wind and water. They choose materials such as "
    "steel, concrete or stone, and they test models before the real work begins. A well designed "
    "bridge can stand for centuries. Some of the oldest bridges in the world were built by hand, "
    "without machines, and they are still used every day.\n\n"
    "Friendship grows from small moments: a shared joke, a kind word, a hand offered when "
    "somebody falls. Good friends listen more than they talk, and they tell the truth even when it "
    "is not easy to hear. They remember birthdays, visit when you are ill and forgive your "
    "mistakes. Over the years they become part of your story, and you become part of theirs.\n\n"
    "On Monday, Tuesday and Wednesday the office was busy; on Thursday it was quieter, and on "
    "Friday almost everyone left early. In January and February the days are short and cold, but "
    "by April and May the evenings are long again. June, July and August bring holidays, "
    "September brings the new school year, and October, November and December pass quickly "
    "before the year ends.\n\n"
    "Questions are the beginning of learning. Why is the sky blue? How do birds find their way "
    "south? What happens inside a star? Where does the wind come from? Who wrote the first "
    "story? Which animals can see colours? Children ask such questions every day, and the best "
    "answers are often new questions. Curiosity, wonder and a little patience can take a person "
    "very far.\n";

const char *mkvocab_corpus(void) { return corpus; }

/* DeepSeek-V3's chat template, copied byte for byte from the
 * tokenizer.chat_template of the released model's tokenizer (a string of
 * data, kept here so generated models need no external file). */
static const char deepseek_v3_chat_template[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true"
    ", system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message"
    "['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_p"
    "rompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.sy"
    "stem_prompt = ns.system_prompt + '\n"
    "\n"
    "' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.syst"
    "em_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set "
    "ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message["
    "'role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -"
    "%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜"
    "tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['funct"
    "ion']['name'] + '\n"
    "' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n"
    "' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n"
    "' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name']"
    " + '\n"
    "' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n"
    "' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endi"
    "f %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['cont"
    "ent'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'"
    "] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant｜>"
    "' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if messa"
    "ge['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<"
    "｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁en"
    "d｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n"
    "<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%-"
    " endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if"
    " add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

const char *mkvocab_chat_template(void) { return deepseek_v3_chat_template; }

/* ---- GPT-2 byte-to-unicode ---- */

static int byte_is_printable(int b) {
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

int mkvocab_byte_cp(int b) {
    if (byte_is_printable(b)) return b;
    int n = 0; /* non-printable bytes before b */
    for (int i = 0; i < b; i++) n += !byte_is_printable(i);
    return 256 + n;
}

/* UTF-8 of code point cp (< 0x800 here) into out; returns bytes written. */
static int utf8_put(int cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

/* ---- pre-tokenizer (the deepseek-v3 splits, for ASCII text) ----
 * Bytes >= 0x80 count as letters: the built-in text has none, and treating
 * them as letters keeps multi-byte characters inside one piece. */

static int is_letter(int c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c >= 0x80; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_space(int c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static int is_crlf(int c) { return c == '\r' || c == '\n'; }
/* ASCII punctuation and symbols (\p{P} and \p{S}). */
static int is_punct(int c) { return c > ' ' && c < 0x7F && !is_letter(c) && !is_digit(c); }

/* Length of the piece starting at s[i] of a digit-free segment s[0..n). */
static size_t piece_len(const unsigned char *s, size_t i, size_t n) {
    size_t j;
    /* [!"#...~][A-Za-z]+  (ASCII letters only) */
    if (is_punct(s[i]) && i + 1 < n && s[i + 1] < 0x80 && is_letter(s[i + 1])) {
        for (j = i + 1; j < n && s[j] < 0x80 && is_letter(s[j]); j++) {}
        return j - i;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ */
    j = i;
    if (!is_crlf(s[j]) && !is_letter(s[j]) && !is_punct(s[j]) && j + 1 < n && is_letter(s[j + 1])) j++;
    if (is_letter(s[j])) {
        while (j < n && is_letter(s[j])) j++;
        return j - i;
    }
    /* ' ?[\p{P}\p{S}]+[\r\n]*' */
    j = i;
    if (s[j] == ' ' && j + 1 < n && is_punct(s[j + 1])) j++;
    if (is_punct(s[j])) {
        while (j < n && is_punct(s[j])) j++;
        while (j < n && is_crlf(s[j])) j++;
        return j - i;
    }
    if (is_space(s[i])) {
        size_t k = i, last_nl = 0;
        while (k < n && is_space(s[k])) {
            if (is_crlf(s[k])) last_nl = k + 1;
            k++;
        }
        if (last_nl) return last_nl - i;        /* \s*[\r\n]+ */
        if (k == n) return k - i;               /* \s+(?!\S) at the end */
        if (k - i >= 2) return k - i - 1;       /* \s+(?!\S): leave one for the word */
        return k - i;                           /* \s+ */
    }
    return 1; /* text no rule matches stays a piece of its own */
}

/* ---- distinct pieces ("words") with counts ---- */

typedef struct word {
    int *sym;  /* [len] current token ids */
    int len;
    int count; /* occurrences in the text */
} word;

typedef struct wordset {
    word *w;               /* [n] distinct pieces */
    int n, cap;            /* used / allocated entries of w, bytes, blen */
    int *slot;             /* [nslot] open-addressing table of indices into w, -1 empty */
    int nslot;             /* power of two, > 2 * n */
    unsigned char **bytes; /* [n] original bytes of each piece, for lookup */
    int *blen;             /* [n] their lengths */
} wordset;

static uint64_t hash_bytes(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "mkvocab: out of memory\n");
        abort();
    }
    return q;
}

static void wordset_add(wordset *ws, const unsigned char *p, int n, int count) {
    uint64_t h = hash_bytes(p, (size_t)n);
    int mask = ws->nslot - 1;
    int k = (int)(h & (uint64_t)mask);
    while (ws->slot[k] >= 0) {
        int wi = ws->slot[k];
        if (ws->blen[wi] == n && !memcmp(ws->bytes[wi], p, (size_t)n)) {
            ws->w[wi].count += count;
            return;
        }
        k = (k + 1) & mask;
    }
    if (ws->n == ws->cap) {
        ws->cap = ws->cap ? 2 * ws->cap : 256;
        ws->w = xrealloc(ws->w, (size_t)ws->cap * sizeof *ws->w);
        ws->bytes = xrealloc(ws->bytes, (size_t)ws->cap * sizeof *ws->bytes);
        ws->blen = xrealloc(ws->blen, (size_t)ws->cap * sizeof *ws->blen);
    }
    word *w = &ws->w[ws->n];
    w->sym = xrealloc(NULL, (size_t)n * sizeof *w->sym);
    for (int i = 0; i < n; i++) w->sym[i] = p[i];
    w->len = n;
    w->count = count;
    ws->bytes[ws->n] = xrealloc(NULL, (size_t)n);
    memcpy(ws->bytes[ws->n], p, (size_t)n);
    ws->blen[ws->n] = n;
    ws->slot[k] = ws->n++;
}

/* Cuts text into pre-tokenizer pieces and counts them: digit runs first
 * (groups of up to three from the left), then the other rules on the text
 * between digit runs. */
static void wordset_add_text(wordset *ws, const char *text, int weight) {
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text), i = 0;
    while (i < n) {
        size_t j = i;
        if (is_digit(s[i])) {
            while (j < n && is_digit(s[j]) && j - i < 3) j++;
            wordset_add(ws, s + i, (int)(j - i), weight);
            i = j;
            continue;
        }
        while (j < n && !is_digit(s[j])) j++; /* digit-free segment [i, j) */
        size_t k = i;
        while (k < j) {
            size_t len = piece_len(s + i, k - i, j - i);
            wordset_add(ws, s + k, (int)len, weight);
            k += len;
        }
        i = j;
    }
}

static void wordset_free(wordset *ws) {
    for (int i = 0; i < ws->n; i++) {
        free(ws->w[i].sym);
        free(ws->bytes[i]);
    }
    free(ws->w);
    free(ws->bytes);
    free(ws->blen);
    free(ws->slot);
}

/* ---- pair counting ---- */

typedef struct pairtab {
    uint64_t *key;  /* [nslot] (a << 32 | b) + 1 of a token pair; 0 = empty */
    int64_t *cnt;   /* [nslot] occurrences of that pair, weighted by piece counts */
    int *used;      /* [nused] slots in use, to clear them cheaply */
    int nused;
    int nslot;      /* power of two, kept at least twice nused */
} pairtab;

static void pair_add(pairtab *t, int a, int b, int64_t c) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    int mask = t->nslot - 1;
    int k = (int)(h >> 40) & mask;
    while (t->key[k] && t->key[k] != key) k = (k + 1) & mask;
    if (!t->key[k]) {
        t->key[k] = key;
        t->cnt[k] = 0;
        t->used[t->nused++] = k;
    }
    t->cnt[k] += c;
}

static int pair_find(const pairtab *t, int a, int b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    int mask = t->nslot - 1;
    int k = (int)(h >> 40) & mask;
    while (t->key[k] && t->key[k] != key) k = (k + 1) & mask;
    return t->key[k] ? k : -1;
}

static void pair_clear(pairtab *t) {
    for (int i = 0; i < t->nused; i++) t->key[t->used[i]] = 0;
    t->nused = 0;
}

/* ---- training ---- */

/* UTF-8 texts: fullwidth bars (U+FF5C) and lower one-eighth blocks (U+2581). */
static const char *const special_head[3] = {"<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"};
static const char *const special_tail[2] = {"<｜User｜>", "<｜Assistant｜>"};

/* Token text (byte-level mapped) of raw bytes p[0..n). */
static char *mapped_text(const unsigned char *p, int n) {
    char *s = xrealloc(NULL, (size_t)n * 2 + 1);
    int k = 0;
    for (int i = 0; i < n; i++) k += utf8_put(mkvocab_byte_cp(p[i]), s + k);
    s[k] = 0;
    return s;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xrealloc(NULL, n);
    memcpy(d, s, n);
    return d;
}

void mkvocab_free(mkvocab *v) {
    if (!v) return;
    for (int i = 0; i < v->n_tokens && v->tokens; i++) free(v->tokens[i]);
    for (int i = 0; i < v->n_merges && v->merges; i++) free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

bool mkvocab_build(int n_tokens, mkvocab *v, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    if (n_tokens < MKVOCAB_MIN) {
        snprintf(err, errlen, "vocabulary size %d is too small: at least %d (3 control, 256 byte and 2 chat tokens)",
                 n_tokens, MKVOCAB_MIN);
        return false;
    }
    int want = n_tokens - MKVOCAB_MIN; /* merges to learn */

    wordset ws = {0};
    ws.nslot = 1024; /* more slots than pieces: the text has fewer pieces than bytes */
    while (ws.nslot < 2 * (int)sizeof corpus) ws.nslot *= 2;
    ws.slot = xrealloc(NULL, (size_t)ws.nslot * sizeof *ws.slot);
    memset(ws.slot, -1, (size_t)ws.nslot * sizeof *ws.slot);
    wordset_add_text(&ws, corpus, 8);
    /* Rarer forms, counted once each (the text's pieces count 8 per
     * occurrence) so the text's own pieces mostly merge first:
     * every word capitalised (as at the start of a sentence) and every
     * number of two or three digits (the pre-tokenizer's digit groups). */
    int n_text = ws.n;
    for (int i = 0; i < n_text; i++) {
        unsigned char buf[64];
        int n = ws.blen[i], lead = n > 1 && ws.bytes[i][0] == ' ';
        if (n > (int)sizeof buf || ws.bytes[i][lead] < 'a' || ws.bytes[i][lead] > 'z') continue;
        memcpy(buf, ws.bytes[i], (size_t)n);
        buf[lead] = (unsigned char)(buf[lead] - 'a' + 'A');
        wordset_add(&ws, buf, n, 1);
    }
    for (int d = 0; d < 1100; d++) { /* "00".."99", then "000".."999" */
        char buf[4];
        int n = d < 100 ? snprintf(buf, sizeof buf, "%02d", d) : snprintf(buf, sizeof buf, "%03d", d - 100);
        wordset_add(&ws, (const unsigned char *)buf, n, 1);
    }

    /* Learned tokens (internal ids 256..): their raw bytes. */
    unsigned char **tb = xrealloc(NULL, (size_t)(256 + want) * sizeof *tb);
    int *tl = xrealloc(NULL, (size_t)(256 + want) * sizeof *tl);
    int *ma = xrealloc(NULL, (size_t)(want ? want : 1) * sizeof *ma);
    int *mb = xrealloc(NULL, (size_t)(want ? want : 1) * sizeof *mb);
    for (int b = 0; b < 256; b++) {
        tb[b] = xrealloc(NULL, 1);
        tb[b][0] = (unsigned char)b;
        tl[b] = 1;
    }
    int ntok = 256;

    int64_t total_sym = 0;
    for (int i = 0; i < ws.n; i++) total_sym += ws.w[i].len;
    pairtab pt = {0};
    pt.nslot = 1024;
    while (pt.nslot < 2 * total_sym) pt.nslot *= 2;
    pt.key = calloc((size_t)pt.nslot, sizeof *pt.key);
    pt.cnt = xrealloc(NULL, (size_t)pt.nslot * sizeof *pt.cnt);
    pt.used = xrealloc(NULL, (size_t)pt.nslot * sizeof *pt.used);
    if (!pt.key) abort();
    /* Pairs whose merged text already is a token (reached another way):
     * never merged, so every merge adds exactly one new token. */
    pairtab banned = {0};
    banned.nslot = 1024;
    banned.key = calloc((size_t)banned.nslot, sizeof *banned.key);
    banned.cnt = xrealloc(NULL, (size_t)banned.nslot * sizeof *banned.cnt);
    banned.used = xrealloc(NULL, (size_t)banned.nslot * sizeof *banned.used);
    if (!banned.key) abort();

    bool ok = true;
    int nm = 0;
    while (nm < want) {
        pair_clear(&pt);
        for (int i = 0; i < ws.n; i++) {
            const word *w = &ws.w[i];
            for (int j = 0; j + 1 < w->len; j++) pair_add(&pt, w->sym[j], w->sym[j + 1], w->count);
        }
        /* Most frequent pair; ties go to the smaller (a, b), so the result
         * does not depend on hash order. */
        int best = -1;
        uint64_t best_key = 0;
        for (int u = 0; u < pt.nused; u++) {
            int k = pt.used[u];
            uint64_t key = pt.key[k];
            if (pair_find(&banned, (int)((key - 1) >> 32), (int)((key - 1) & 0xFFFFFFFFu)) >= 0) continue;
            if (best < 0 || pt.cnt[k] > pt.cnt[best] || (pt.cnt[k] == pt.cnt[best] && key < best_key)) {
                best = k;
                best_key = key;
            }
        }
        if (best < 0) {
            snprintf(err, errlen, "vocabulary size %d is too large: the built-in text yields at most %d tokens",
                     n_tokens, MKVOCAB_MIN + nm);
            ok = false;
            break;
        }
        int a = (int)((best_key - 1) >> 32), b = (int)((best_key - 1) & 0xFFFFFFFFu);
        int len = tl[a] + tl[b];
        unsigned char *cat = xrealloc(NULL, (size_t)len);
        memcpy(cat, tb[a], (size_t)tl[a]);
        memcpy(cat + tl[a], tb[b], (size_t)tl[b]);
        bool dup = false;
        for (int t = 256; t < ntok && !dup; t++) dup = tl[t] == len && !memcmp(tb[t], cat, (size_t)len);
        if (dup) {
            free(cat);
            if (banned.nused * 2 >= banned.nslot) { /* tiny table: grow by rebuilding */
                pairtab nb = {0};
                nb.nslot = banned.nslot * 2;
                nb.key = calloc((size_t)nb.nslot, sizeof *nb.key);
                nb.cnt = xrealloc(NULL, (size_t)nb.nslot * sizeof *nb.cnt);
                nb.used = xrealloc(NULL, (size_t)nb.nslot * sizeof *nb.used);
                if (!nb.key) abort();
                for (int u = 0; u < banned.nused; u++) {
                    uint64_t key = banned.key[banned.used[u]];
                    pair_add(&nb, (int)((key - 1) >> 32), (int)((key - 1) & 0xFFFFFFFFu), 1);
                }
                free(banned.key);
                free(banned.cnt);
                free(banned.used);
                banned = nb;
            }
            pair_add(&banned, a, b, 1);
            continue;
        }
        int id = ntok++;
        tb[id] = cat;
        tl[id] = len;
        ma[nm] = a;
        mb[nm] = b;
        nm++;
        for (int i = 0; i < ws.n; i++) { /* apply left to right, non-overlapping */
            word *w = &ws.w[i];
            int o = 0;
            for (int j = 0; j < w->len; j++) {
                if (j + 1 < w->len && w->sym[j] == a && w->sym[j + 1] == b) {
                    w->sym[o++] = id;
                    j++;
                } else {
                    w->sym[o++] = w->sym[j];
                }
            }
            w->len = o;
        }
    }

    if (ok) {
        v->n_tokens = n_tokens;
        v->n_merges = want;
        v->tokens = xrealloc(NULL, (size_t)n_tokens * sizeof *v->tokens);
        v->types = xrealloc(NULL, (size_t)n_tokens * sizeof *v->types);
        v->merges = xrealloc(NULL, (size_t)(want ? want : 1) * sizeof *v->merges);
        int t = 0;
        for (int i = 0; i < 3; i++, t++) {
            v->tokens[t] = xstrdup(special_head[i]);
            v->types[t] = MKV_CONTROL;
        }
        for (int i = 0; i < ntok; i++, t++) {
            v->tokens[t] = mapped_text(tb[i], tl[i]);
            v->types[t] = MKV_NORMAL;
        }
        for (int i = 0; i < 2; i++, t++) {
            v->tokens[t] = xstrdup(special_tail[i]);
            v->types[t] = MKV_USER_DEFINED;
        }
        for (int m = 0; m < want; m++) {
            const char *l = v->tokens[3 + ma[m]], *r = v->tokens[3 + mb[m]];
            size_t ll = strlen(l), rl = strlen(r);
            char *s = xrealloc(NULL, ll + rl + 2);
            memcpy(s, l, ll);
            s[ll] = ' ';
            memcpy(s + ll + 1, r, rl + 1);
            v->merges[m] = s;
        }
    }

    for (int i = 0; i < ntok; i++) free(tb[i]);
    free(tb);
    free(tl);
    free(ma);
    free(mb);
    free(pt.key);
    free(pt.cnt);
    free(pt.used);
    free(banned.key);
    free(banned.cnt);
    free(banned.used);
    wordset_free(&ws);
    return ok;
}
