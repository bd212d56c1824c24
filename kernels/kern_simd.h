/* Helpers shared by the SIMD kernel files (*_avx2.c, *_avx512.c) only:
 * the forced-inline marker and the software prefetch stream. */
#ifndef MOE_KERN_SIMD_H
#define MOE_KERN_SIMD_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kern_impl.h"

#define INLINE static inline __attribute__((always_inline))

/* Software prefetch.  A group of rows is one contiguous byte range; rows
 * are short (1-4 KB), so the hardware prefetchers keep restarting.  While
 * a group is computed, the bytes of a group PF_AHEAD bytes further are
 * requested, spread evenly over the group's blocks. */
#define PF_AHEAD 8192

/* Beyond this distance pf_step requests into L2 only: a whole group ahead
 * into a 32 KB L1 would evict the group being read (long rows, e.g. 16384
 * columns of Q6_K, ran at half speed so). */
#define PF_L1_MAX 12288

typedef struct pf_stream {
    const uint8_t *next; /* next byte to request */
    const uint8_t *end;  /* end of the matrix: nothing past it */
    size_t step;         /* bytes to request per step */
    int far;             /* ahead > PF_L1_MAX: request into L2 */
} pf_stream;

/* A stream for a group of `bytes` bytes at `start`, done in nsteps steps. */
INLINE pf_stream pf_start(const kern_job *j, const uint8_t *start, size_t bytes, int nsteps) {
    size_t ahead = bytes > PF_AHEAD ? bytes : PF_AHEAD;
    pf_stream p = {start + ahead, j->W + (size_t)j->rows * j->wstride, (bytes + (size_t)nsteps - 1) / (size_t)nsteps,
                   ahead > PF_L1_MAX};
    return p;
}

INLINE void pf_step(pf_stream *p) {
    const uint8_t *stop = p->next + p->step < p->end ? p->next + p->step : p->end;
    if (p->far)
        for (; p->next < stop; p->next += 64) _mm_prefetch((const char *)p->next, _MM_HINT_T1);
    else
        for (; p->next < stop; p->next += 64) _mm_prefetch((const char *)p->next, _MM_HINT_T0);
}

/* The same into L2 only: a 16-row group is read 16 lines at a time across
 * its rows, so prefetching a whole group ahead into L1 would evict lines
 * still in use; the L1 prefetchers bring them the last step. */
INLINE void pf_step_l2(pf_stream *p) {
    const uint8_t *stop = p->next + p->step < p->end ? p->next + p->step : p->end;
    for (; p->next < stop; p->next += 64) _mm_prefetch((const char *)p->next, _MM_HINT_T1);
}

#endif
