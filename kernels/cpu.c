/* CPUID / XGETBV feature detection (x86-64 only; other targets report no
 * SIMD and run the scalar path). */
#include "cpu.h"

#include <pthread.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long read_xcr0(void) {
    unsigned lo, hi;
    /* xgetbv as raw bytes would also work; the mnemonic is fine in gas. */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(cpu_features *c) {
    unsigned a, b, cx, d;
    memset(c, 0, sizeof *c);
    if (!__get_cpuid(0, &a, &b, &cx, &d)) return;
    unsigned max_leaf = a;
    memcpy(c->vendor + 0, &b, 4);
    memcpy(c->vendor + 4, &d, 4);
    memcpy(c->vendor + 8, &cx, 4);
    c->vendor[12] = 0;

    __get_cpuid(1, &a, &b, &cx, &d);
    bool osxsave = cx & (1u << 27);
    c->has_avx = cx & (1u << 28);
    c->has_fma = cx & (1u << 12);
    c->has_f16c = cx & (1u << 29);
    if (osxsave) {
        unsigned long long xcr0 = read_xcr0();
        c->os_ymm = (xcr0 & 0x6) == 0x6;
        c->os_zmm = c->os_ymm && (xcr0 & 0xe0) == 0xe0;
    }
    if (max_leaf >= 7) {
        __get_cpuid_count(7, 0, &a, &b, &cx, &d);
        unsigned max_sub = a;
        c->has_avx2 = b & (1u << 5);
        c->has_avx512f = b & (1u << 16);
        c->has_avx512dq = b & (1u << 17);
        c->has_avx512bw = b & (1u << 30);
        c->has_avx512vl = b & (1u << 31);
        c->has_avx512vnni = cx & (1u << 11);
        c->has_amx = d & (1u << 24);
        if (max_sub >= 1) {
            __get_cpuid_count(7, 1, &a, &b, &cx, &d);
            c->has_avx512bf16 = a & (1u << 5);
        }
    }
    c->avx2 = c->os_ymm && c->has_avx && c->has_avx2 && c->has_fma && c->has_f16c;
    c->avx512 = c->avx2 && c->os_zmm && c->has_avx512f && c->has_avx512bw &&
                c->has_avx512vl && c->has_avx512dq && c->has_avx512vnni && c->has_avx512bf16;
}
#else
static void detect(cpu_features *c) { memset(c, 0, sizeof *c); }
#endif

static cpu_features g_cpu;  /* written once under g_once, read-only after */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void detect_once(void) { detect(&g_cpu); }

const cpu_features *cpu_get(void) {
    pthread_once(&g_once, detect_once);
    return &g_cpu;
}

void cpu_describe(const cpu_features *c, char *buf, int len) {
    static const struct { size_t off; const char *name; } bits[] = {
        {offsetof(cpu_features, has_avx2), "avx2"},
        {offsetof(cpu_features, has_fma), "fma"},
        {offsetof(cpu_features, has_f16c), "f16c"},
        {offsetof(cpu_features, has_avx512f), "avx512f"},
        {offsetof(cpu_features, has_avx512bw), "avx512bw"},
        {offsetof(cpu_features, has_avx512vl), "avx512vl"},
        {offsetof(cpu_features, has_avx512dq), "avx512dq"},
        {offsetof(cpu_features, has_avx512vnni), "avx512vnni"},
        {offsetof(cpu_features, has_avx512bf16), "avx512bf16"},
    };
    int n = snprintf(buf, (size_t)len, "%s:", c->vendor[0] ? c->vendor : "unknown");
    for (size_t i = 0; i < sizeof bits / sizeof bits[0] && n > 0 && n < len; i++)
        if (*(const bool *)((const char *)c + bits[i].off))
            n += snprintf(buf + n, (size_t)(len - n), " %s", bits[i].name);
    if (n > 0 && n < len && c->has_avx512f && !c->os_zmm)
        n += snprintf(buf + n, (size_t)(len - n), " (OS does not save ZMM state)");
    if (n > 0 && n < len && c->has_amx)
        snprintf(buf + n, (size_t)(len - n), " (amx listed, unused)");
}
