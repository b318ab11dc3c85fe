/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Runs a fuzz target over saved inputs, so that every build (gcc, clang,
 * sanitizers, valgrind) checks the corpus as an ordinary test.
 *
 * Usage: replay-TARGET PATH...
 * Each PATH is a file or a directory whose regular files (not recursing,
 * in name order, dot files skipped) are inputs.  Every input is copied
 * into a buffer of exactly its size, so a sanitizer sees any read past
 * the end.  A failed property aborts; the last "running" line names the
 * input.  Exits 1 when a path cannot be read or no input was found.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Optional, as in libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static unsigned long n_inputs;

static int read_file(const char *path, uint8_t **ret, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL)
        return -errno;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, ncap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return -ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return -EIO;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}

static int run_file(const char *path)
{
    uint8_t *all = NULL, *exact;
    size_t len = 0;
    int r = read_file(path, &all, &len);

    if (r < 0) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(-r));
        return -1;
    }
    /* Exactly len bytes (malloc(0) may return NULL: use one byte then,
     * but still pass a size of 0). */
    exact = malloc(len ? len : 1);
    if (exact == NULL) {
        free(all);
        fprintf(stderr, "replay: out of memory for %s\n", path);
        return -1;
    }
    if (len)
        memcpy(exact, all, len);
    free(all);
    printf("running %s (%zu bytes)\n", path, len);
    fflush(stdout);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    n_inputs++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *path)
{
    DIR *d = opendir(path);
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int r = 0;

    if (d == NULL) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nn = realloc(names, ncap * sizeof(*nn));
            if (nn == NULL) {
                r = -1;
                break;
            }
            names = nn;
            cap = ncap;
        }
        size_t l = strlen(path) + 1 + strlen(de->d_name) + 1;
        if ((names[n] = malloc(l)) == NULL) {
            r = -1;
            break;
        }
        snprintf(names[n], l, "%s/%s", path, de->d_name);
        n++;
    }
    closedir(d);
    if (r == 0 && n > 0)
        qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (r == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
            r = run_file(names[i]);
        free(names[i]);
    }
    free(names);
    if (r < 0)
        fprintf(stderr, "replay: failed in %s\n", path);
    return r;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE-OR-DIRECTORY...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if ((S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i])) < 0)
            return 1;
    }
    if (n_inputs == 0) {
        fprintf(stderr, "replay: no inputs found\n");
        return 1;
    }
    printf("replayed %lu inputs\n", n_inputs);
    return 0;
}
