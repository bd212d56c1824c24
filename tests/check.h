/* Minimal test helpers: each CHECK counts, a failed one prints where and
 * why; a test program ends with `return check_summary("name");`, which
 * prints its counts and returns non-zero if anything failed. */
#ifndef MOE_CHECK_H
#define MOE_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_n_pass, check_n_fail;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            check_n_pass++;                                                \
        } else {                                                           \
            check_n_fail++;                                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* Directory of the shared read-only fixtures (env MOE_FIXTURES overrides). */
static inline const char *fixtures_dir(void) {
    const char *d = getenv("MOE_FIXTURES");
    return d ? d : "../shared/fixtures";
}

static inline int check_summary(const char *name) {
    printf("%s: %d checks passed, %d failed\n", name, check_n_pass, check_n_fail);
    return check_n_fail ? 1 : 0;
}

#endif
