/* What this x86-64 CPU and its OS can run, read once from CPUID/XGETBV.
 *
 * A SIMD path needs both the instructions (CPUID) and the OS saving the
 * wider registers on context switch (XGETBV): a hypervisor may hide the
 * latter.  AMX is reported for information only: on some VMs CPUID lists
 * it but the tile instructions fault, so nothing here enables it. */
#ifndef MOE_CPU_H
#define MOE_CPU_H

#include <stdbool.h>

typedef struct cpu_features {
    bool avx2;        /* AVX2 + FMA + F16C, with OS support of YMM state */
    bool avx512;      /* AVX-512 F/BW/VL/DQ + VNNI + BF16, OS saves ZMM state */
    /* The individual bits the two flags above are made of: */
    bool os_ymm;      /* XCR0 has SSE and AVX state */
    bool os_zmm;      /* XCR0 also has opmask, ZMM_Hi256, Hi16_ZMM state */
    bool has_avx, has_avx2, has_fma, has_f16c;
    bool has_avx512f, has_avx512bw, has_avx512vl, has_avx512dq;
    bool has_avx512vnni, has_avx512bf16;
    bool has_amx;     /* AMX-TILE listed by CPUID (never used) */
    char vendor[13];  /* "GenuineIntel", "AuthenticAMD", ... */
} cpu_features;

/* Detected once (thread-safe); the same pointer every call. */
const cpu_features *cpu_get(void);
/* One line such as "avx2 fma f16c avx512f ... (amx listed, unused)". */
void cpu_describe(const cpu_features *c, char *buf, int len);

#endif
