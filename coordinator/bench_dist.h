/* `moe bench --dist` (coordinator/bench_dist.c): cluster decode speed at
 * 1..4 ranks; cmd_bench dispatches here on --dist. */
#ifndef MOE_BENCH_DIST_H
#define MOE_BENCH_DIST_H

int bench_dist(int argc, char **argv);

#endif
