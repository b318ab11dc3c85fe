/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Minimal TAP test harness shared by libqmp's test programs.
 *
 *   TEST(name) { CHECK(x == 1); REQUIRE(p != NULL); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(name); ...; return harness_done(); }
 *
 * CHECK records a failure and continues; REQUIRE records it and returns
 * from the test function.  Output is TAP (meson's protocol: 'tap').  A
 * test may also be selected by name: ./prog NAME runs only that one.
 */
#ifndef QMP_TEST_HARNESS_H
#define QMP_TEST_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_count;
static int harness_failed_tests;
static int harness_cur_failed;
static const char *harness_cur_skip;
static const char *harness_only;

#define TEST(name) static void name(void)

#define HARNESS_FAIL_(...)                                                                         \
    do {                                                                                           \
        harness_cur_failed = 1;                                                                    \
        printf("# %s:%d: ", __FILE__, __LINE__);                                                   \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            HARNESS_FAIL_("check failed: %s", #cond);                                              \
    } while (0)

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            HARNESS_FAIL_("requirement failed: %s", #cond);                                        \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            HARNESS_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                               \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            HARNESS_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",                \
                          b_ ? b_ : "(null)");                                                     \
    } while (0)

/* Checks that substring needle occurs in haystack. */
#define CHECK_CONTAINS(haystack, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (haystack), *n_ = (needle);                                               \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                  \
            HARNESS_FAIL_("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);               \
    } while (0)

#define RUN(name)                                                                                  \
    do {                                                                                           \
        if (harness_only && strcmp(harness_only, #name) != 0)                                      \
            break;                                                                                 \
        harness_cur_failed = 0;                                                                    \
        harness_cur_skip = NULL;                                                                   \
        name();                                                                                    \
        harness_count++;                                                                           \
        printf("%s %d - %s%s%s\n", harness_cur_failed ? "not ok" : "ok", harness_count, #name,     \
               harness_cur_skip ? " # SKIP " : "", harness_cur_skip ? harness_cur_skip : "");      \
        fflush(stdout);                                                                            \
        if (harness_cur_failed)                                                                    \
            harness_failed_tests++;                                                                \
    } while (0)

/* Marks the running test as skipped, with a reason (a string literal). */
static inline void harness_skip(const char *reason)
{
    harness_cur_skip = reason;
}

static inline void harness_init(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        harness_only = argv[1];
}

static inline int harness_done(void)
{
    printf("1..%d\n", harness_count);
    return harness_failed_tests ? 1 : 0;
}

#endif /* QMP_TEST_HARNESS_H */
