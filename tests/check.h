/* Minimal test helpers: each CHECK counts, a failed one prints where and
 * why; a test program ends with `return check_summary("name");`, which
 * prints its counts and returns non-zero if anything failed. */
#ifndef MOE_CHECK_H
#define MOE_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Runs this test program again (/proc/self/exe) as `name flag`, with
 * MOE_KERNEL=scalar so that lo_matmul and friends are the scalar code
 * its SIMD results are compared with; returns the child's exit status
 * (0: all its checks passed; 128 + signal if it died, -1 if it could
 * not run). */
static inline int check_rerun_scalar(const char *name, const char *flag) {
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setenv("MOE_KERNEL", "scalar", 1);
        char *args[] = {(char *)name, (char *)flag, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static inline int check_summary(const char *name) {
    printf("%s: %d checks passed, %d failed\n", name, check_n_pass, check_n_fail);
    return check_n_fail ? 1 : 0;
}

#endif
