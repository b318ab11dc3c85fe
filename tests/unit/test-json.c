/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the public JSON helpers: qmp_json_parse() against a table of
 * documents (and against json-c's strict tokener where both must agree),
 * qmp_json_build() templates, and qmp_json_match().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <json-c/json.h>

#include "harness.h"
#include "qmp/qmp.h"

/* A value no function may write: outputs are untouched on failure. */
static max_align_t sentinel_storage;
#define SENTINEL ((json_object *)(void *)&sentinel_storage)

/* ------------------------------------------------------------ json-c */

/* What json-c's strict tokener makes of text[0..len): 1 with *ret (new
 * reference, may be NULL for null) when it accepts the whole text, 0
 * when it refuses.  The terminating NUL is fed too, so that numbers and
 * literals at the end are complete. */
static int jsonc_parse(const char *text, size_t len, int depth, json_object **ret)
{
    char *copy = malloc(len + 1);
    memcpy(copy, text, len);
    copy[len] = '\0';
    json_tokener *tok = json_tokener_new_ex(depth);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, copy, (int)len + 1);
    int ok = json_tokener_get_error(tok) == json_tokener_success;
    if (ok) {
        /* Only whitespace may follow (and the NUL we added). */
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            if (strchr(" \t\r\n", copy[i]) == NULL || copy[i] == '\0')
                ok = 0;
        }
        /* An embedded NUL stops json-c early: the caller's text is longer. */
        if (memchr(copy, '\0', len) != NULL)
            ok = 0;
    }
    json_tokener_free(tok);
    free(copy);
    if (!ok) {
        json_object_put(o);
        return 0;
    }
    *ret = o;
    return 1;
}

/* --------------------------------------------------------- parse table */

/* How json-c relates to the expected verdict. */
enum {
    AGREE = 1,   /* json-c gives the same verdict and, if valid, value */
    VERDICT = 2, /* json-c gives the same verdict; values differ in type */
    DIFFERS = 0  /* json-c differs (it is laxer, or our decoder is stricter) */
};

typedef struct doc {
    const char *text;
    size_t len; /* 0: strlen(text) */
    bool valid;
    int jsonc;
} doc;

static const doc docs[] = {
    /* Valid documents. */
    {"0", 0, true, AGREE},
    {"-0", 0, true, AGREE},
    {"123", 0, true, AGREE},
    {"-123", 0, true, AGREE},
    {"1.5", 0, true, AGREE},
    {"-1.5e-3", 0, true, AGREE},
    {"1E+5", 0, true, AGREE},
    {"1e5", 0, true, AGREE},
    {"0.0", 0, true, AGREE},
    {"true", 0, true, AGREE},
    {"false", 0, true, AGREE},
    {"null", 0, true, AGREE},
    {"\"\"", 0, true, AGREE},
    {"\"a\"", 0, true, AGREE},
    {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", 0, true, AGREE},
    {"\"\\u00e9\\u20AC\"", 0, true, AGREE},
    {"\"\\ud83d\\ude00\"", 0, true, AGREE},
    {"\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", 0, true, AGREE},
    {"\"\x7f\"", 0, true, AGREE},
    {"\"{[}]\\\"\"", 0, true, AGREE},
    {"[]", 0, true, AGREE},
    {"{}", 0, true, AGREE},
    {"[1,2,3]", 0, true, AGREE},
    {" [ 1 , \"a\" , null , true ] ", 0, true, AGREE},
    {"{\"a\":{\"b\":[{}, []]}}", 0, true, AGREE},
    {"\t\r\n{}\r\n", 0, true, AGREE},
    {"{\"a\":1,\"a\":2}", 0, true, AGREE},
    {"9223372036854775807", 0, true, AGREE},
    {"-9223372036854775808", 0, true, AGREE},
    {"18446744073709551615", 0, true, AGREE},
    {"[18446744073709551615, -9223372036854775808]", 0, true, AGREE},
    {"18446744073709551616", 0, true, VERDICT},
    {"-9223372036854775809", 0, true, VERDICT},
    {"{\"\xc3\xa9\": \"x\"}", 0, true, AGREE},
    /* Invalid documents on which json-c agrees. */
    {"", 0, false, AGREE},
    {"   ", 0, false, AGREE},
    {"[1,]", 0, false, AGREE},
    {"01", 0, false, AGREE},
    {".5", 0, false, AGREE},
    {"+1", 0, false, AGREE},
    {"0x10", 0, false, AGREE},
    {"-", 0, false, AGREE},
    {"1.5e", 0, false, AGREE},
    {"tru", 0, false, AGREE},
    {"True", 0, false, AGREE},
    {"nul", 0, false, AGREE},
    {"[1] x", 0, false, AGREE},
    {"[1 2]", 0, false, AGREE},
    {"{\"a\":1,}", 0, false, AGREE},
    {"{\"a\"}", 0, false, AGREE},
    {"{1:2}", 0, false, AGREE},
    {"'a'", 0, false, AGREE},
    {"\"\\x\"", 0, false, AGREE},
    {"\"abc", 0, false, AGREE},
    {"[", 0, false, AGREE},
    {"]", 0, false, AGREE},
    {"{", 0, false, AGREE},
    {"}", 0, false, AGREE},
    {"[1,2", 0, false, AGREE},
    {"\"\xe2\x82\"", 0, false, AGREE},
    {"{} {}", 0, false, AGREE},
    {"1 2", 0, false, AGREE},
    {"[1]\0", 4, false, AGREE},
    /* Invalid documents json-c accepts: our decoder is strict RFC 8259. */
    {"1.", 0, false, DIFFERS},
    {"NaN", 0, false, DIFFERS},
    {"Infinity", 0, false, DIFFERS},
    {"-Infinity", 0, false, DIFFERS},
    {"\"\t\"", 0, false, DIFFERS},
    {"\"\x01\"", 0, false, DIFFERS},
    {"\"a\0b\"", 5, false, DIFFERS},
    {"\"\\u0000\"", 0, false, DIFFERS},
    {"\"\\ud800\"", 0, false, DIFFERS},
    {"\"\\udc00\"", 0, false, DIFFERS},
    {"\"\\ud800\\u0041\"", 0, false, DIFFERS},
    {"\"\\ude00\\ud83d\"", 0, false, DIFFERS},
    /* Invalid UTF-8: overlong, surrogates, beyond U+10FFFF, stray bytes. */
    {"\"\xc0\xaf\"", 0, false, DIFFERS},
    {"\"\xc1\xbf\"", 0, false, DIFFERS},
    {"\"\xe0\x80\xaf\"", 0, false, DIFFERS},
    {"\"\xf0\x80\x80\xaf\"", 0, false, DIFFERS},
    {"\"\xed\xa0\x80\"", 0, false, DIFFERS},
    {"\"\xed\xbf\xbf\"", 0, false, DIFFERS},
    {"\"\xf4\x90\x80\x80\"", 0, false, DIFFERS},
    {"\"\xf8\x88\x80\x80\x80\"", 0, false, DIFFERS},
    {"\"\x80\"", 0, false, DIFFERS},
    {"\"\xff\"", 0, false, DIFFERS},
    {"\"\xc3\"", 0, false, DIFFERS},
    {"\"\xf0\x9f\x98\"", 0, false, DIFFERS},
    {"{\"\xc0\xaf\": 1}", 0, false, DIFFERS},
};

TEST(parse_table)
{
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        const doc *d = &docs[i];
        size_t len = d->len ? d->len : strlen(d->text);
        json_object *ours = SENTINEL;
        qmp_error err = QMP_ERROR_INIT;
        int r = qmp_json_parse(d->text, len, 0, &ours, &err);
        if (d->valid) {
            if (r != 0) {
                HARNESS_FAIL_("doc %zu <%s> refused: %d %s", i, d->text, r, err.message);
                continue;
            }
            CHECK(ours != SENTINEL);
        } else {
            if (r != -EPROTO) {
                HARNESS_FAIL_("doc %zu <%s> gave %d, want -EPROTO", i, d->text, r);
                if (r == 0)
                    json_object_put(ours);
                continue;
            }
            CHECK(ours == SENTINEL);
            CHECK_EQ_INT(err.code, -EPROTO);
            CHECK_EQ_INT(err.category, QMP_ERR_PROTOCOL);
            CHECK(err.message[0] != '\0');
        }
        if (d->jsonc != DIFFERS) {
            json_object *theirs = NULL;
            int ok = jsonc_parse(d->text, len, QMP_JSON_DEFAULT_MAX_DEPTH, &theirs);
            if (ok != (int)d->valid)
                HARNESS_FAIL_("doc %zu <%s>: json-c verdict %d, expected %d", i, d->text, ok,
                              d->valid);
            if (ok && d->valid && d->jsonc == AGREE && !json_object_equal(ours, theirs))
                HARNESS_FAIL_("doc %zu <%s>: ours %s, json-c %s", i, d->text,
                              json_object_to_json_string(ours), json_object_to_json_string(theirs));
            if (ok)
                json_object_put(theirs);
        }
        if (r == 0)
            json_object_put(ours);
    }
}

TEST(parse_arguments)
{
    json_object *v = SENTINEL;
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_json_parse(NULL, 0, 0, &v, &err), -EINVAL);
    CHECK(v == SENTINEL);
    CHECK_EQ_INT(qmp_json_parse("1", 1, 0, NULL, NULL), -EINVAL);
    /* JSON null is success with a NULL value. */
    CHECK_EQ_INT(qmp_json_parse("null", 4, 0, &v, NULL), 0);
    CHECK(v == NULL);
    /* The length bounds the text: the rest is not looked at. */
    v = SENTINEL;
    CHECK_EQ_INT(qmp_json_parse("[1]garbage", 3, 0, &v, NULL), 0);
    REQUIRE(v != SENTINEL && v != NULL);
    CHECK_EQ_INT(json_object_array_length(v), 1);
    json_object_put(v);
}

TEST(parse_error_names_offset)
{
    const char *text = "{\"aaaa\": [1, 2, 3], \"b\": x}";
    char want[32];
    qmp_error err = QMP_ERROR_INIT;
    json_object *v = SENTINEL;
    CHECK_EQ_INT(qmp_json_parse(text, strlen(text), 0, &v, &err), -EPROTO);
    snprintf(want, sizeof(want), "%td", strchr(text, 'x') - text);
    CHECK_CONTAINS(err.message, want);
}

static char *nested(unsigned n, bool objects)
{
    char *s = malloc(n * 6 + 8);
    size_t k = 0;
    for (unsigned i = 0; i < n; i++) {
        if (objects) {
            memcpy(s + k, "{\"a\":", 5);
            k += 5;
        } else {
            s[k++] = '[';
        }
    }
    if (objects)
        s[k++] = '1';
    for (unsigned i = 0; i < n; i++)
        s[k++] = objects ? '}' : ']';
    s[k] = '\0';
    return s;
}

TEST(parse_depth_limit)
{
    const unsigned limits[] = {1, 2, 5, 32, 0};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
        unsigned lim = limits[i];
        unsigned eff = lim ? lim : QMP_JSON_DEFAULT_MAX_DEPTH;
        for (int objects = 0; objects < 2; objects++) {
            for (unsigned n = eff; n <= eff + 1; n++) {
                char *s = nested(n, objects);
                json_object *v = SENTINEL, *theirs = NULL;
                qmp_error err = QMP_ERROR_INIT;
                int r = qmp_json_parse(s, strlen(s), lim, &v, &err);
                /* json-c counts a scalar inside a container as one more
                 * level; our limit counts arrays and objects only. */
                int jc = jsonc_parse(s, strlen(s), (int)eff + objects, &theirs);
                if (n == eff) {
                    if (r != 0)
                        HARNESS_FAIL_("limit %u: depth %u refused: %s", lim, n, err.message);
                    CHECK_EQ_INT(jc, 1);
                    if (r == 0 && jc)
                        CHECK(json_object_equal(v, theirs));
                } else {
                    if (r != -EMSGSIZE)
                        HARNESS_FAIL_("limit %u: depth %u gave %d, want -EMSGSIZE", lim, n, r);
                    CHECK_EQ_INT(err.category, QMP_ERR_LIMIT);
                    CHECK(v == SENTINEL);
                    CHECK_EQ_INT(jc, 0);
                }
                if (r == 0)
                    json_object_put(v);
                if (jc)
                    json_object_put(theirs);
                free(s);
            }
        }
    }
}

static void check_number(const char *text, json_type type, const char *want_text)
{
    json_object *v = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_json_parse(text, strlen(text), 0, &v, &err);
    if (r != 0) {
        HARNESS_FAIL_("%s refused: %s", text, err.message);
        return;
    }
    if (json_object_get_type(v) != type)
        HARNESS_FAIL_("%s: type %s", text, json_type_to_name(json_object_get_type(v)));
    if (want_text)
        CHECK_EQ_STR(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), want_text);
    json_object_put(v);
}

TEST(parse_numbers)
{
    json_object *v = NULL;
    REQUIRE(qmp_json_parse("18446744073709551615", 20, 0, &v, NULL) == 0);
    CHECK(json_object_is_type(v, json_type_int));
    CHECK(json_object_get_uint64(v) == UINT64_MAX);
    json_object_put(v);
    REQUIRE(qmp_json_parse("9223372036854775808", 19, 0, &v, NULL) == 0);
    CHECK(json_object_get_uint64(v) == (uint64_t)INT64_MAX + 1);
    json_object_put(v);
    REQUIRE(qmp_json_parse("-9223372036854775808", 20, 0, &v, NULL) == 0);
    CHECK(json_object_is_type(v, json_type_int));
    CHECK(json_object_get_int64(v) == INT64_MIN);
    json_object_put(v);
    REQUIRE(qmp_json_parse("9223372036854775807", 19, 0, &v, NULL) == 0);
    CHECK(json_object_get_int64(v) == INT64_MAX);
    json_object_put(v);
    REQUIRE(qmp_json_parse("-0", 2, 0, &v, NULL) == 0);
    CHECK(json_object_is_type(v, json_type_int));
    CHECK_EQ_INT(json_object_get_int64(v), 0);
    json_object_put(v);
    REQUIRE(qmp_json_parse("1.5e3", 5, 0, &v, NULL) == 0);
    CHECK(json_object_is_type(v, json_type_double));
    CHECK(json_object_get_double(v) == 1500.0);
    json_object_put(v);

    /* Beyond 64 bits: a double that keeps the text it came from. */
    check_number("18446744073709551616", json_type_double, "18446744073709551616");
    check_number("-9223372036854775809", json_type_double, "-9223372036854775809");
    check_number("1.5e3", json_type_double, "1.5e3");
    check_number("0.1", json_type_double, "0.1");
    check_number("123", json_type_int, "123");
}

/* ------------------------------------------------------------- build */

static json_object *parse_or_die(const char *text)
{
    json_object *v = NULL;
    json_tokener *tok = json_tokener_new_ex(64);
    v = json_tokener_parse_ex(tok, text, (int)strlen(text) + 1);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        printf("# test bug: bad JSON %s\n", text);
        abort();
    }
    json_tokener_free(tok);
    return v;
}

/* Checks that a built value equals the JSON text want. */
static void check_built(int r, json_object *v, const qmp_error *err, const char *want)
{
    if (r != 0) {
        HARNESS_FAIL_("build failed (%d): %s; wanted %s", r, err->message, want);
        return;
    }
    json_object *w = parse_or_die(want);
    if (!json_object_equal(v, w))
        HARNESS_FAIL_("built %s, want %s", json_object_to_json_string(v), want);
    json_object_put(w);
    json_object_put(v);
}

TEST(build_quotes_and_strings)
{
    json_object *v = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int r;

    r = qmp_json_build(&v, &err, "{'execute': 'device_del', 'arguments': {'id': 'x'}}");
    check_built(r, v, &err, "{\"execute\": \"device_del\", \"arguments\": {\"id\": \"x\"}}");
    r = qmp_json_build(&v, &err, "{\"a\": \"b\", 'c': [true, false, null, -1.5]}");
    check_built(r, v, &err, "{\"a\": \"b\", \"c\": [true, false, null, -1.5]}");
    r = qmp_json_build(&v, &err, "{'it\\'s': 'say \"hi\"'}");
    check_built(r, v, &err, "{\"it's\": \"say \\\"hi\\\"\"}");
    r = qmp_json_build(&v, &err, "['\\u00e9\\t\\n', \"\\\"\"]");
    check_built(r, v, &err, "[\"\\u00e9\\t\\n\", \"\\\"\"]");
    r = qmp_json_build(&v, &err, "  {  }  ");
    check_built(r, v, &err, "{}");
    r = qmp_json_build(&v, &err, "{'a': '100%%', \"b\": \"%%d\"}");
    check_built(r, v, &err, "{\"a\": \"100%\", \"b\": \"%d\"}");
}

TEST(build_string_conversion)
{
    /* Every byte that needs escaping, then multi-byte UTF-8. */
    const char *nasty = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80'";
    json_object *v = NULL, *x = NULL;
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(qmp_json_build(&v, &err, "{'id': %s, 'n': %s}", nasty, "") == 0);
    REQUIRE(json_object_object_get_ex(v, "id", &x));
    CHECK(json_object_is_type(x, json_type_string));
    CHECK_EQ_STR(json_object_get_string(x), nasty);
    CHECK_EQ_INT(json_object_get_string_len(x), strlen(nasty));
    REQUIRE(json_object_object_get_ex(v, "n", &x));
    CHECK_EQ_STR(json_object_get_string(x), "");
    json_object_put(v);

    /* NULL inserts null. */
    const char *volatile nothing = NULL;
    v = NULL;
    REQUIRE(qmp_json_build(&v, &err, "{'a': %s}", nothing) == 0);
    CHECK(json_object_object_get_ex(v, "a", &x));
    CHECK(x == NULL);
    json_object_put(v);

    /* A bare conversion is a whole document. */
    v = NULL;
    REQUIRE(qmp_json_build(&v, &err, "%s", "top") == 0);
    CHECK(json_object_is_type(v, json_type_string));
    CHECK_EQ_STR(json_object_get_string(v), "top");
    json_object_put(v);

    /* Invalid UTF-8 in a %s value is refused. */
    const char *bad[] = {"\xc0\xaf", "\xed\xa0\x80", "a\xe2\x82", "\xff", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = SENTINEL;
        err = (qmp_error)QMP_ERROR_INIT;
        CHECK_EQ_INT(qmp_json_build(&v, &err, "{'a': %s}", bad[i]), -EINVAL);
        CHECK(v == SENTINEL);
        CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    }
}

TEST(build_integers)
{
    json_object *v = NULL, *x = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_json_build(&v, &err,
                           "[%d, %i, %ld, %li, %lld, %lli, %zd, %u, %lu, %llu, %zu, %" PRId64
                           ", %" PRIu64 ", %d]",
                           INT_MIN, INT_MAX, LONG_MIN, LONG_MAX, LLONG_MIN, LLONG_MAX, (ssize_t)-5,
                           UINT_MAX, ULONG_MAX, ULLONG_MAX, SIZE_MAX, INT64_MIN, UINT64_MAX, 0);
    if (r != 0) {
        HARNESS_FAIL_("build failed: %s", err.message);
        return;
    }
    REQUIRE(json_object_array_length(v) == 14);
    const int64_t sv[] = {INT_MIN, INT_MAX, LONG_MIN, LONG_MAX, LLONG_MIN, LLONG_MAX, -5};
    for (size_t i = 0; i < 7; i++) {
        x = json_object_array_get_idx(v, i);
        CHECK(json_object_is_type(x, json_type_int));
        if (json_object_get_int64(x) != sv[i])
            HARNESS_FAIL_("element %zu: %s", i, json_object_to_json_string(x));
    }
    const uint64_t uv[] = {UINT_MAX, ULONG_MAX, ULLONG_MAX, SIZE_MAX};
    for (size_t i = 0; i < 4; i++) {
        x = json_object_array_get_idx(v, 7 + i);
        CHECK(json_object_is_type(x, json_type_int));
        if (json_object_get_uint64(x) != uv[i])
            HARNESS_FAIL_("element %zu: %s", 7 + i, json_object_to_json_string(x));
    }
    CHECK(json_object_get_int64(json_object_array_get_idx(v, 11)) == INT64_MIN);
    CHECK(json_object_get_uint64(json_object_array_get_idx(v, 12)) == UINT64_MAX);
    CHECK(json_object_get_int64(json_object_array_get_idx(v, 13)) == 0);
    json_object_put(v);
}

TEST(build_doubles)
{
    json_object *v = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_json_build(&v, &err, "{'f': %f, 'g': %g, 'e': %e, 'big': %g, 'tiny': %e, 'n': %f}",
                           1.5, 0.25, -2.0, -1e300, 5e-300, -0.5);
    if (r != 0) {
        HARNESS_FAIL_("build failed: %s", err.message);
        return;
    }
    const char *keys[] = {"f", "g", "e", "big", "tiny", "n"};
    const double want[] = {1.5, 0.25, -2.0, -1e300, 5e-300, -0.5};
    for (size_t i = 0; i < 6; i++) {
        json_object *x = NULL;
        CHECK(json_object_object_get_ex(v, keys[i], &x));
        CHECK(json_object_is_type(x, json_type_double) || json_object_is_type(x, json_type_int));
        if (json_object_get_double(x) != want[i])
            HARNESS_FAIL_("%s: %s, want %.17g", keys[i], json_object_to_json_string(x), want[i]);
    }
    /* The serialised result must be valid strict JSON. */
    const char *s = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
    json_object *back = NULL;
    CHECK_EQ_INT(qmp_json_parse(s, strlen(s), 0, &back, NULL), 0);
    json_object_put(back);
    json_object_put(v);

    const double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        v = SENTINEL;
        err = (qmp_error)QMP_ERROR_INIT;
        CHECK_EQ_INT(qmp_json_build(&v, &err, "[%g]", bad[i]), -EINVAL);
        CHECK(v == SENTINEL);
        CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
        v = SENTINEL;
        CHECK_EQ_INT(qmp_json_build(&v, &err, "[%f]", bad[i]), -EINVAL);
        CHECK(v == SENTINEL);
    }
}

static int vbuild(json_object **ret, qmp_error *err, const char *tmpl, ...) QMP_PRINTF(3, 4);
static int vbuild(json_object **ret, qmp_error *err, const char *tmpl, ...)
{
    va_list ap;
    va_start(ap, tmpl);
    int r = qmp_json_vbuild(ret, err, tmpl, ap);
    va_end(ap);
    return r;
}

TEST(build_vbuild)
{
    json_object *v = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int r = vbuild(&v, &err, "{'a': %s, 'b': %d}", "x", 7);
    check_built(r, v, &err, "{\"a\": \"x\", \"b\": 7}");
}

/* Templates without conversions, passed as data: the compiler cannot
 * check them, which is the point. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
static int build_plain(json_object **ret, qmp_error *err, const char *tmpl)
{
    return qmp_json_build(ret, err, tmpl);
}
#pragma GCC diagnostic pop

TEST(build_refuses_bad_templates)
{
    const char *bad[] = {
        "",
        "   ",
        "{",
        "}",
        "{'a': }",
        "{'a': 'x'",
        "{'a': 1,}",
        "{a: 1}",
        "{'a' 1}",
        "[1 2]",
        "'abc",
        "{} {}",
        "null",
        " null ",
        "{'a': tru}",
        "[01]",
        "{'a': NaN}",
        "{'a': 1} x",
        "[\"\xc0\xaf\"]",
        "['\xed\xa0\x80']",
        "%",
        "[%]",
        "[%%]",
        "{'a': '\\x'}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_object *v = SENTINEL;
        qmp_error err = QMP_ERROR_INIT;
        int r = build_plain(&v, &err, bad[i]);
        if (r != -EINVAL)
            HARNESS_FAIL_("template <%s> gave %d, want -EINVAL", bad[i], r);
        if (r == 0 && v != SENTINEL)
            json_object_put(v);
        CHECK(v == SENTINEL);
        if (r < 0) {
            CHECK_EQ_INT(err.code, r);
            CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
        }
    }
}

TEST(build_refuses_bad_conversions)
{
    json_object *v = SENTINEL;
    qmp_error err = QMP_ERROR_INIT;
    /* A conversion inside a quoted string would not be escaped. */
    CHECK_EQ_INT(qmp_json_build(&v, &err, "{'a': '%s'}", "x"), -EINVAL);
    CHECK(v == SENTINEL);
    CHECK_EQ_INT(qmp_json_build(&v, &err, "{\"a\": \"id-%d\"}", 5), -EINVAL);
    CHECK(v == SENTINEL);
    /* Conversions the template language does not have. */
    CHECK_EQ_INT(qmp_json_build(&v, &err, "{'a': %x}", 5u), -EINVAL);
    CHECK(v == SENTINEL);
    CHECK_EQ_INT(qmp_json_build(&v, &err, "{'a': %c}", 'c'), -EINVAL);
    CHECK(v == SENTINEL);
    CHECK_EQ_INT(qmp_json_build(&v, &err, "{'a': %p}", (void *)&v), -EINVAL);
    CHECK(v == SENTINEL);
    /* A conversion used as a key is not a string literal of the template
     * but a value where a key belongs. */
    CHECK_EQ_INT(qmp_json_build(&v, &err, "{%d: 1}", 5), -EINVAL);
    CHECK(v == SENTINEL);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    CHECK_EQ_INT(qmp_json_build(NULL, &err, "{}"), -EINVAL);
    CHECK_EQ_INT(build_plain(&v, &err, NULL), -EINVAL);
    CHECK(v == SENTINEL);
}

/* ------------------------------------------------------------- match */

typedef struct match_case {
    const char *value;   /* NULL: a NULL value */
    const char *pattern; /* NULL: a NULL pattern */
    int want;
} match_case;

static const match_case matches[] = {
    {"{\"a\": 1}", NULL, 1},
    {"null", NULL, 1},
    {"[1]", NULL, 1},
    {"{\"a\": 1}", "{}", 1},
    {"{\"a\": 1, \"b\": 2}", "{\"a\": 1}", 1},
    {"{\"a\": 1, \"b\": 2}", "{\"a\": 1, \"b\": 2}", 1},
    {"{\"a\": 1}", "{\"a\": 2}", 0},
    {"{\"a\": 1}", "{\"c\": 1}", 0},
    {"{\"a\": 1}", "{\"a\": 1, \"c\": 1}", 0},
    {"{\"a\": {\"b\": 1, \"c\": 2}, \"d\": 3}", "{\"a\": {\"b\": 1}}", 1},
    {"{\"a\": {\"b\": 1, \"c\": 2}}", "{\"a\": {\"b\": 2}}", 0},
    {"{\"a\": {\"b\": {\"c\": 1, \"x\": 0}}}", "{\"a\": {\"b\": {\"c\": 1}}}", 1},
    {"{\"a\": {\"b\": 1}}", "{\"a\": {}}", 1},
    {"{\"a\": 1}", "{\"a\": {}}", 0},
    {"{\"a\": [1, 2, 3]}", "{\"a\": [1, 2]}", 0},
    {"{\"a\": [1, 2]}", "{\"a\": [1, 2]}", 1},
    {"{\"a\": [2, 1]}", "{\"a\": [1, 2]}", 0},
    {"{\"a\": [{\"b\": 1, \"c\": 2}]}", "{\"a\": [{\"b\": 1}]}", 0},
    {"{\"a\": \"1\"}", "{\"a\": 1}", 0},
    {"{\"a\": true}", "{\"a\": 1}", 0},
    {"{\"a\": null}", "{\"a\": null}", 1},
    {"{\"a\": 1}", "{\"a\": null}", 0},
    {"{}", "{\"a\": null}", 0},
    {"{\"device\": \"x\", \"path\": \"/m/x\"}", "{\"device\": \"x\"}", 1},
    {"{\"device\": \"y\", \"path\": \"/m/x\"}", "{\"device\": \"x\"}", 0},
    {"5", "5", 1},
    {"5", "6", 0},
    {"\"x\"", "\"x\"", 1},
    {"[1]", "[1]", 1},
    {"[1]", "{}", 0},
    {"\"s\"", "{}", 0},
    {NULL, "{}", 0},
    {NULL, "{\"a\": 1}", 0},
    {"{\"a\": 1}", "[1]", 0},
    {NULL, NULL, 1},
};

TEST(match_table)
{
    for (size_t i = 0; i < sizeof(matches) / sizeof(matches[0]); i++) {
        const match_case *m = &matches[i];
        json_object *v = m->value ? parse_or_die(m->value) : NULL;
        json_object *p = m->pattern ? parse_or_die(m->pattern) : NULL;
        int got = qmp_json_match(v, p);
        if (got != m->want)
            HARNESS_FAIL_("match(%s, %s) = %d, want %d", m->value ? m->value : "NULL",
                          m->pattern ? m->pattern : "NULL", got, m->want);
        json_object_put(v);
        json_object_put(p);
    }
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(parse_table);
    RUN(parse_arguments);
    RUN(parse_error_names_offset);
    RUN(parse_depth_limit);
    RUN(parse_numbers);
    RUN(build_quotes_and_strings);
    RUN(build_string_conversion);
    RUN(build_integers);
    RUN(build_doubles);
    RUN(build_vbuild);
    RUN(build_refuses_bad_templates);
    RUN(build_refuses_bad_conversions);
    RUN(match_table);
    return harness_done();
}
