/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the fuzz targets.  Each target defines
 * LLVMFuzzerTestOneInput(); it is linked either with libFuzzer (clang,
 * -Dfuzz=true) or with replay.c, which runs it over a corpus as an
 * ordinary test.
 */
#ifndef QMP_FUZZ_H
#define QMP_FUZZ_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A violated property is a finding: say which one and abort, so that
 * libFuzzer saves the input and the replay test fails.
 */
#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property violated: %s\n  ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A small deterministic generator (xorshift32) for choices derived from
 * the input, so that a saved input always replays the same way. */
typedef struct fuzz_rng {
    uint32_t state;
} fuzz_rng;

static inline void fuzz_rng_seed(fuzz_rng *r, uint32_t seed)
{
    r->state = seed ? seed : 0x9e3779b9u;
}

static inline uint32_t fuzz_rng_next(fuzz_rng *r)
{
    uint32_t x = r->state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    r->state = x;
    return x;
}

/* A number in [0, n); n must be positive. */
static inline uint32_t fuzz_rng_below(fuzz_rng *r, uint32_t n)
{
    return fuzz_rng_next(r) % n;
}

/* FNV-1a, to fold bytes into a seed or a fingerprint. */
static inline uint64_t fuzz_hash(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#define FUZZ_HASH_INIT 0xcbf29ce484222325ull

/*
 * Length of the UTF-8 sequence at s (n bytes left) as RFC 3629 defines
 * it, or 0 when there is none: written independently of libqmp's own
 * validator so that the two can be compared.
 */
static inline size_t fuzz_utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf; /* bounds of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates above */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF above */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

/* 1 when s[0..n) is entirely RFC 3629 UTF-8. */
static inline int fuzz_utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = fuzz_utf8_len(s + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

/*
 * 1 when v holds an infinite double (from a literal such as 1e400, which
 * decodes but which libqmp's writer refuses to send).
 */
static inline int fuzz_has_nonfinite(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_double:
        return !isfinite(json_object_get_double(v));
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            if (fuzz_has_nonfinite(json_object_array_get_idx(v, i)))
                return 1;
        }
        return 0;
    case json_type_object: {
        json_object_object_foreach(v, key, val) {
            (void)key;
            if (fuzz_has_nonfinite(val))
                return 1;
        }
        return 0;
    }
    default:
        return 0;
    }
}

#endif /* QMP_FUZZ_H */
