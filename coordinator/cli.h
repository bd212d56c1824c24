/* Small helpers shared by the subcommands: strict number parsing and
 * token id lists.  Every parser rejects trailing junk and out-of-range
 * values, so bad input is reported, never silently truncated. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

#include <stdbool.h>
#include <stddef.h>

bool cli_int(const char *s, long min, long max, int *out);
bool cli_u64(const char *s, unsigned long long *out);
bool cli_float(const char *s, double min, double max, float *out);
/* "0 284 620" or "0,284,620" -> malloc'd ids.  NULL + message on error. */
int *cli_ids(const char *s, int *n, char *err, size_t errlen);
/* Reads a whole file into a NUL-terminated malloc'd buffer; NULL on error. */
char *cli_read_file(const char *path, size_t *len);

/* Prints "moe CMD: message" on stderr and returns 2 (usage error). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

#include "engine.h"

/* Options every model-running command shares (model, threads, context,
 * cluster plan).  Consumes argv[*i] (and its value) if it is one of them:
 * returns 1 if consumed, 0 if not an engine option, -1 on a bad value
 * (message printed). */
int cli_engine_opt(engine_opts *o, const char *cmd, int argc, char **argv, int *i);
#define CLI_ENGINE_HELP                                                              \
    "  -m, --model FILE    GGUF model (first part of a split model is enough)\n"      \
    "  -t, --threads N     threads per rank (default: physical cores of the binding)\n" \
    "      --ctx N         KV cache positions per sequence (default 4096)\n"          \
    "      --plan FILE     cluster plan to use under mpirun (default: computed)\n"    \
    "      --stages K      layer stages under mpirun (default: automatic)\n"          \
    "      --stats         print per-rank statistics at the end\n"
