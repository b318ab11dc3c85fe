/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for JSON templates (qmp_json_build / qmp_json_vbuild).
 *
 * A template's conversions read variadic arguments, so the template can
 * not be taken from the input as it is: a stray "%s" would read a pointer
 * that was never passed.  Instead:
 *
 *   byte 0            picks one argument type for this run (int, long,
 *                     size_t, double, string, ...);
 *   bytes 1..NUL      the template; every '%' in it is rewritten: "%%"
 *                     stays, '%' followed by another byte becomes one of
 *                     the spellings that read the chosen type ("%d",
 *                     "%hhi", "%" PRId64, "%zu", "%g", "%s", ...), picked
 *                     by that byte; at most MAX_ARGS of them;
 *   after the NUL     the argument values (NUL-separated strings, or
 *                     8 bytes per number).
 *
 * Every call passes MAX_ARGS arguments of the chosen type, so whatever
 * conversions the builder recognises, it reads arguments of the type it
 * expects, and never more than were passed.
 *
 * Properties checked:
 *   - each documented conversion inserts exactly its argument (numbers
 *     equal, doubles read back exactly, strings byte for byte, invalid
 *     UTF-8 refused, NULL gives null);
 *   - a template without '%' or single quotes builds exactly what
 *     qmp_json_parse() decodes from it (and fails where it fails, or
 *     where the value is null);
 *   - a built value round-trips through json-c's serialiser and
 *     libqmp's writer.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "internal.h"

#define MAX_ARGS 16
#define MAX_TEMPLATE 4096

typedef enum arg_type {
    T_INT,
    T_UINT,
    T_LONG,
    T_ULONG,
    T_LLONG,
    T_ULLONG,
    T_INT64,
    T_UINT64,
    T_SIZE,
    T_INTMAX,
    T_UINTMAX,
    T_PTRDIFF,
    T_DOUBLE,
    T_STRING,
    T_COUNT
} arg_type;

/*
 * Spellings that read each type.  The first ones are documented in
 * json.h and have their inserted value checked; the others (after NULL)
 * are accepted length modifiers whose value is not checked.
 */
typedef struct spelling_set {
    const char *checked[4];
    const char *unchecked[4];
} spelling_set;

static const spelling_set spellings[T_COUNT] = {
    [T_INT] = {{"%d", "%i", NULL}, {"%hd", "%hhi", NULL}},
    [T_UINT] = {{"%u", NULL}, {"%hu", "%hhu", NULL}},
    [T_LONG] = {{"%ld", "%li", NULL}, {NULL}},
    [T_ULONG] = {{"%lu", NULL}, {NULL}},
    [T_LLONG] = {{"%lld", "%lli", NULL}, {NULL}},
    [T_ULLONG] = {{"%llu", NULL}, {NULL}},
    [T_INT64] = {{"%" PRId64, "%" PRIi64, NULL}, {NULL}},
    [T_UINT64] = {{"%" PRIu64, NULL}, {NULL}},
    [T_SIZE] = {{"%zu", NULL}, {"%zd", NULL}},
    [T_INTMAX] = {{NULL}, {"%jd", "%ji", NULL}},
    [T_UINTMAX] = {{NULL}, {"%ju", NULL}},
    [T_PTRDIFF] = {{NULL}, {"%td", "%ti", NULL}},
    [T_DOUBLE] = {{"%f", "%g", "%e", NULL}, {NULL}},
    [T_STRING] = {{"%s", NULL}, {NULL}},
};

static size_t count(const char *const *list)
{
    size_t n = 0;
    while (n < 4 && list[n] != NULL)
        n++;
    return n;
}

static const char *pick_spelling(arg_type t, unsigned sel, bool *checked)
{
    size_t nc = count(spellings[t].checked), nu = count(spellings[t].unchecked);
    size_t i = sel % (nc + nu);
    *checked = i < nc;
    return i < nc ? spellings[t].checked[i] : spellings[t].unchecked[i - nc];
}

/* Arguments of every type; only those of the run's type are passed. */
typedef struct args {
    long long ll[MAX_ARGS];
    unsigned long long ull[MAX_ARGS];
    double d[MAX_ARGS];
    const char *s[MAX_ARGS];
    char strings[MAX_ARGS][64];
} args;

/*
 * A variadic wrapper that goes through the va_list entry point.  Its
 * templates come from the input, so they cannot be string literals: the
 * point of this target is that the rewriting above keeps them matched
 * with their arguments.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static int build(json_object **ret, qmp_error *err, const char *tmpl, ...)
{
    va_list ap;
    va_start(ap, tmpl);
    int r = qmp_json_vbuild(ret, err, tmpl, ap);
    va_end(ap);
    return r;
}
#pragma GCC diagnostic pop

#define A16(x)                                                                                     \
    x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], x[9], x[10], x[11], x[12], x[13], x[14], \
        x[15]

#define CAST16(T, x)                                                                               \
    (T) x[0], (T)x[1], (T)x[2], (T)x[3], (T)x[4], (T)x[5], (T)x[6], (T)x[7], (T)x[8], (T)x[9],     \
        (T)x[10], (T)x[11], (T)x[12], (T)x[13], (T)x[14], (T)x[15]

/* Calls the builder with MAX_ARGS arguments of type t. */
static int build_with(arg_type t, const args *a, json_object **ret, qmp_error *err,
                      const char *tmpl)
{
    switch (t) {
    case T_INT:
        return build(ret, err, tmpl, CAST16(int, a->ll));
    case T_UINT:
        return build(ret, err, tmpl, CAST16(unsigned int, a->ull));
    case T_LONG:
        return build(ret, err, tmpl, CAST16(long, a->ll));
    case T_ULONG:
        return build(ret, err, tmpl, CAST16(unsigned long, a->ull));
    case T_LLONG:
        return build(ret, err, tmpl, A16(a->ll));
    case T_ULLONG:
        return build(ret, err, tmpl, A16(a->ull));
    case T_INT64:
        return build(ret, err, tmpl, CAST16(int64_t, a->ll));
    case T_UINT64:
        return build(ret, err, tmpl, CAST16(uint64_t, a->ull));
    case T_SIZE:
        return build(ret, err, tmpl, CAST16(size_t, a->ull));
    case T_INTMAX:
        return build(ret, err, tmpl, CAST16(intmax_t, a->ll));
    case T_UINTMAX:
        return build(ret, err, tmpl, CAST16(uintmax_t, a->ull));
    case T_PTRDIFF:
        return build(ret, err, tmpl, CAST16(ptrdiff_t, a->ll));
    case T_DOUBLE:
        return build(ret, err, tmpl, A16(a->d));
    case T_STRING:
        return build(ret, err, tmpl, A16(a->s));
    default:
        abort();
    }
}

/* The value a documented conversion must insert for argument 0, or
 * NULL for JSON null; *ret_valid is false when the builder must refuse. */
static json_object *expected(arg_type t, const args *a, const char *spelling, bool *ret_valid)
{
    *ret_valid = true;
    switch (t) {
    case T_INT:
        return json_object_new_int64((int)a->ll[0]);
    case T_UINT:
        return json_object_new_uint64((unsigned int)a->ull[0]);
    case T_LONG:
        return json_object_new_int64((long)a->ll[0]);
    case T_ULONG:
        return json_object_new_uint64((unsigned long)a->ull[0]);
    case T_LLONG:
    case T_INT64:
        return json_object_new_int64(a->ll[0]);
    case T_ULLONG:
    case T_UINT64:
        return json_object_new_uint64(a->ull[0]);
    case T_SIZE:
        (void)spelling;
        return json_object_new_uint64((size_t)a->ull[0]);
    case T_DOUBLE:
        if (!isfinite(a->d[0])) {
            *ret_valid = false;
            return NULL;
        }
        return json_object_new_double(a->d[0]);
    case T_STRING:
        if (a->s[0] == NULL)
            return NULL;
        if (!fuzz_utf8_valid((const uint8_t *)a->s[0], strlen(a->s[0]))) {
            *ret_valid = false;
            return NULL;
        }
        return json_object_new_string(a->s[0]);
    default:
        abort();
    }
}

static void check_round_trips(json_object *v)
{
    json_object *again = NULL;
    qmp_error err;

    const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    int r = qmp_json_parse(text, strlen(text), 0, &again, &err);
    FUZZ_CHECK(r == 0, "json-c's serialisation %s refused: %s", text, err.message);
    FUZZ_CHECK(json_object_equal(v, again), "json-c round trip changed %s", text);
    json_object_put(again);
    again = NULL;

    qmp__buf b = {0};
    r = qmp__json_write(&b, v, &err);
    if (r == -EINVAL) {
        /* A literal such as 1e400 in the template gives infinity. */
        FUZZ_CHECK(fuzz_has_nonfinite(v), "qmp__json_write refused a built value %s: %s", text,
                   err.message);
    } else {
        FUZZ_CHECK(r == 0, "qmp__json_write failed: %s", err.message);
        r = qmp_json_parse(b.data, b.len, 0, &again, &err);
        FUZZ_CHECK(r == 0, "libqmp's serialisation %.*s refused: %s", (int)b.len, b.data,
                   err.message);
        FUZZ_CHECK(json_object_equal(v, again), "libqmp round trip changed %s into %.*s", text,
                   (int)b.len, b.data);
        json_object_put(again);
    }
    qmp__buf_free(&b);
}

static void load_args(args *a, const uint8_t *p, size_t n)
{
    static const char *const fixed[] = {
        "", "a\"b\\c\n", "\xc3\xa9t\xc3\xa9", "\xff", "\xed\xa0\x80", "%s", "'"};
    size_t k = 0, i = 0;

    memset(a, 0, sizeof(*a));
    /* Strings: the NUL-separated pieces, then some fixed ones; NULL for
     * a piece that starts with 0x01. */
    while (k < MAX_ARGS && i < n) {
        size_t j = i;
        while (j < n && p[j] != 0)
            j++;
        if (j - i >= 1 && p[i] == 0x01) {
            a->s[k] = NULL;
        } else {
            size_t len = j - i < sizeof(a->strings[k]) - 1 ? j - i : sizeof(a->strings[k]) - 1;
            memcpy(a->strings[k], p + i, len);
            a->strings[k][len] = '\0';
            a->s[k] = a->strings[k];
        }
        k++;
        i = j + 1;
    }
    for (size_t f = 0; k < MAX_ARGS; k++, f++)
        a->s[k] = fixed[f % (sizeof(fixed) / sizeof(fixed[0]))];

    /* Numbers: 8 bytes each, cycling over what there is. */
    for (k = 0; k < MAX_ARGS; k++) {
        uint64_t u = 0;
        for (size_t b = 0; b < 8 && n > 0; b++)
            u = (u << 8) | p[(k * 8 + b) % n];
        a->ull[k] = u;
        a->ll[k] = (long long)u;
        memcpy(&a->d[k], &u, sizeof(double));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char tmpl[MAX_TEMPLATE * 5 + 1];
    json_object *v = NULL;
    qmp_error err;
    args a;
    int r;

    if (size < 1)
        return 0;
    arg_type t = (arg_type)(data[0] % T_COUNT);
    const uint8_t *src = data + 1;
    size_t n = size - 1;
    const uint8_t *nul = memchr(src, 0, n);
    size_t tlen = nul ? (size_t)(nul - src) : n;
    if (tlen > MAX_TEMPLATE)
        return 0;
    load_args(&a, nul ? nul + 1 : src + n, nul ? n - tlen - 1 : 0);

    /* 1. Each documented conversion on its own inserts its argument. */
    for (unsigned sel = 0; sel < 4; sel++) {
        bool checked;
        const char *sp = pick_spelling(t, sel, &checked);
        if (!checked)
            continue;
        char one[32];
        bool valid;
        snprintf(one, sizeof(one), "[%s]", sp);
        json_object *want = expected(t, &a, sp, &valid);
        r = build_with(t, &a, &v, &err, one);
        if (!valid) {
            FUZZ_CHECK(r == -EINVAL && err.category == QMP_ERR_INVALID,
                       "%s accepted an invalid argument", sp);
        } else {
            FUZZ_CHECK(r == 0, "%s failed: %s", sp, err.message);
            json_object *got = json_object_array_get_idx(v, 0);
            FUZZ_CHECK(json_object_array_length(v) == 1 && json_object_equal(got, want),
                       "%s inserted %s, not %s", sp, json_object_to_json_string(got),
                       json_object_to_json_string(want));
            check_round_trips(v);
        }
        json_object_put(want);
        json_object_put(v);
        v = NULL;
    }

    /* 2. The fuzzed template, its '%' rewritten for type t. */
    size_t o = 0, conversions = 0;
    bool plain = true; /* no conversion and no single quote */
    for (size_t i = 0; i < tlen; i++) {
        uint8_t c = src[i];
        if (c == '\'')
            plain = false;
        if (c != '%') {
            tmpl[o++] = (char)c;
            continue;
        }
        plain = false;
        if (i + 1 >= tlen)
            break; /* a lone '%' at the end is dropped */
        uint8_t sel = src[++i];
        if (sel == '%' || conversions == MAX_ARGS) {
            memcpy(tmpl + o, "%%", 2);
            o += 2;
            continue;
        }
        bool checked;
        const char *sp = pick_spelling(t, sel, &checked);
        size_t l = strlen(sp);
        memcpy(tmpl + o, sp, l);
        o += l;
        conversions++;
    }
    tmpl[o] = '\0';

    r = build_with(t, &a, &v, &err, tmpl);
    FUZZ_CHECK(r == 0 || r == -EINVAL, "unexpected result %d for %s", r, tmpl);
    FUZZ_CHECK(r == 0 ? v != NULL : err.code == r, "bad outcome %d for %s", r, tmpl);
    if (r == 0)
        check_round_trips(v);

    /* 3. A template that is plain JSON builds what the decoder decodes. */
    if (plain) {
        json_object *p = NULL;
        int pr = qmp_json_parse(tmpl, o, 0, &p, NULL);
        if (pr == 0 && p != NULL) {
            FUZZ_CHECK(r == 0 && json_object_equal(v, p), "template %s built %s, decoder gives %s",
                       tmpl, r == 0 ? json_object_to_json_string(v) : "an error",
                       json_object_to_json_string(p));
        } else {
            FUZZ_CHECK(r == -EINVAL, "template %s built though the decoder says %d%s", tmpl, pr,
                       pr == 0 ? " (null)" : "");
        }
        json_object_put(p);
    }
    json_object_put(v);
    return 0;
}
