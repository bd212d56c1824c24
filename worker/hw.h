/* What a rank knows about its own hardware: host, NUMA node of its CPU
 * binding (hwloc), cores, free memory (libnuma / /proc/meminfo), and its
 * resident memory now.  Gathered by rank 0 at startup for planning. */
#ifndef MOE_HW_H
#define MOE_HW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

typedef struct hw_info {
    plan_hw hw;            /* host, numa_node, n_cores, mem_capacity (= mem_avail) */
    int n_numa_nodes;      /* NUMA nodes of the machine */
    uint64_t mem_total;    /* bytes of its node (or of the machine when unbound) */
} hw_info;

/* Probes this process.  Never fails: unknown values stay 0 / -1. */
void hw_probe(hw_info *out);

/* Resident set size of this process in bytes (0 if unknown). */
uint64_t hw_rss(void);

#endif
