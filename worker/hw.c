/* Hardware probe with hwloc and libnuma. */
#include "hw.h"

#include <hwloc.h>
#include <numa.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* MemAvailable / MemTotal of /proc/meminfo in bytes. */
static uint64_t meminfo(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            sscanf(line + kl + 1, "%llu", &kb);
            break;
        }
    fclose(f);
    return (uint64_t)kb * 1024;
}

void hw_probe(hw_info *out) {
    memset(out, 0, sizeof *out);
    out->hw.numa_node = -1;
    if (gethostname(out->hw.host, sizeof out->hw.host - 1) != 0) strcpy(out->hw.host, "?");
    out->mem_total = meminfo("MemTotal");
    out->hw.mem_capacity = meminfo("MemAvailable");
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0) return;
    if (hwloc_topology_load(topo) == 0) {
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        if (set && hwloc_get_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) == 0) {
            out->hw.n_cores = hwloc_get_nbobjs_inside_cpuset_by_type(topo, set, HWLOC_OBJ_CORE);
            int nn = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
            out->n_numa_nodes = nn;
            /* The node whose CPUs contain the whole binding, if any. */
            for (int i = 0; i < nn; i++) {
                hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, i);
                if (node && node->cpuset && hwloc_bitmap_isincluded(set, node->cpuset)) {
                    out->hw.numa_node = (int)node->os_index;
                    break;
                }
            }
        }
        hwloc_bitmap_free(set);
    }
    hwloc_topology_destroy(topo);
    /* On a multi-node machine a bound rank can use its node's memory. */
    if (out->n_numa_nodes > 1 && out->hw.numa_node >= 0 && numa_available() >= 0) {
        long long fr = 0;
        long long sz = numa_node_size64(out->hw.numa_node, &fr);
        if (sz > 0) {
            out->mem_total = (uint64_t)sz;
            out->hw.mem_capacity = (uint64_t)fr;
        }
    }
}

uint64_t hw_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, res = 0;
    int n = fscanf(f, "%llu %llu", &size, &res);
    fclose(f);
    return n == 2 ? (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}
