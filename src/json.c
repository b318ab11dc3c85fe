/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Strict JSON decoding into json-c objects, validation without building,
 * compact serialisation, templates and matching.
 *
 * Why not json_tokener on the wire: it walks every byte through a general
 * state machine and costs about 14,000 instructions for a query-status
 * reply, more than libqmp's whole round-trip budget.  This decoder is a
 * small iterative recursive-descent parser (no C recursion, so a deep
 * message cannot exhaust the stack) that creates the json-c objects
 * directly; the same engine, with building switched off, validates
 * messages that are routed without being decoded (events).
 * fuzz/fuzz_json.c checks it against json_tokener.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "internal.h"

/* ------------------------------------------------------------------ UTF-8 */

/*
 * Length of the valid UTF-8 sequence at s (at most n bytes available), or
 * 0 if it is not valid: no overlong forms, no surrogates, nothing past
 * U+10FFFF.  s[0] must be >= 0x80.
 */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c >= 0xc2 && c <= 0xdf) {
        return (n >= 2 && (s[1] & 0xc0) == 0x80) ? 2 : 0;
    }
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0) /* overlong */
            return 0;
        if (c == 0xed && s[1] >= 0xa0) /* UTF-16 surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xf4 && s[1] >= 0x90) /* past U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

size_t qmp__utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(s + i, n - i);
        if (k == 0)
            break;
        i += k;
    }
    return i;
}

/* ---------------------------------------------------------------- parsing */

/* 1 for bytes that stand for themselves in a JSON string: ASCII from
 * space to DEL except '"' and '\\'.  Bytes from 0x80 take the UTF-8 path. */
static const unsigned char plain_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

typedef struct jframe {
    json_object *obj; /* container being filled (NULL when not building) */
    const char *key;  /* pending key literal (at its opening quote) */
    const char *key_end;
    bool key_escaped;
    bool is_object;
} jframe;

typedef struct jparser {
    const char *base;
    const char *end;
    unsigned max_depth;
    bool build;
    qmp_error *err;
    qmp__buf scratch; /* unescaped strings and keys too long for small */
    char small[128];  /* most keys and escaped strings fit here */
    jframe local[16];
    jframe *frames;
    size_t n_frames;
    size_t cap_frames;
} jparser;

static int jp_fail(jparser *jp, const char *at, const char *what)
{
    return qmp__error_set(jp->err, -EPROTO, QMP_ERR_PROTOCOL, "invalid JSON at byte %zu: %s",
                          (size_t)(at - jp->base), what);
}

static inline const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | h;
    }
    return v;
}

/*
 * Validates the string literal whose opening quote is at *pp.  On success
 * *pp points after the closing quote and *escaped tells whether it holds
 * escapes.
 */
static int scan_string(jparser *jp, const char **pp, bool *escaped)
{
    const unsigned char *p = (const unsigned char *)*pp + 1;
    const unsigned char *end = (const unsigned char *)jp->end;
    bool esc = false;

    for (;;) {
        /* Fast path: plain printable ASCII. */
        while (p + 4 <= end && plain_byte[p[0]] && plain_byte[p[1]] && plain_byte[p[2]] &&
               plain_byte[p[3]])
            p += 4;
        while (p < end && plain_byte[*p])
            p++;
        if (p >= end)
            return jp_fail(jp, (const char *)p, "unterminated string");
        unsigned char c = *p;
        if (c == '"') {
            *pp = (const char *)p + 1;
            *escaped = esc;
            return 0;
        }
        if (c == '\\') {
            esc = true;
            if (end - p < 2)
                return jp_fail(jp, (const char *)p, "unterminated string");
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                p += 2;
                continue;
            case 'u':
                break;
            default:
                return jp_fail(jp, (const char *)p, "invalid escape in string");
            }
            if (end - p < 6)
                return jp_fail(jp, (const char *)p, "truncated \\u escape");
            int u = hex4((const char *)p + 2);
            if (u < 0)
                return jp_fail(jp, (const char *)p, "invalid \\u escape");
            if (u == 0)
                return jp_fail(jp, (const char *)p, "\\u0000 is not supported in strings");
            if (u >= 0xdc00 && u <= 0xdfff)
                return jp_fail(jp, (const char *)p, "unpaired low surrogate escape");
            if (u >= 0xd800 && u <= 0xdbff) {
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u')
                    return jp_fail(jp, (const char *)p, "unpaired high surrogate escape");
                int lo = hex4((const char *)p + 8);
                if (lo < 0xdc00 || lo > 0xdfff)
                    return jp_fail(jp, (const char *)p, "unpaired high surrogate escape");
                p += 12;
            } else {
                p += 6;
            }
            continue;
        }
        if (c < 0x20)
            return jp_fail(jp, (const char *)p, "control character in string");
        size_t k = utf8_seq(p, (size_t)(end - p));
        if (k == 0)
            return jp_fail(jp, (const char *)p, "invalid UTF-8 in string");
        p += k;
    }
}

static size_t put_utf8(char *d, unsigned cp)
{
    if (cp < 0x80) {
        d[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (char)(0xc0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (char)(0xe0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    d[0] = (char)(0xf0 | (cp >> 18));
    d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    d[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

long qmp__json_unescape(const char *p, const char *end, char *dst, size_t cap)
{
    size_t o = 0;

    p++; /* opening quote */
    while (p < end && *p != '"') {
        char buf[4];
        size_t n;
        if (*p != '\\') {
            buf[0] = *p++;
            n = 1;
        } else {
            char e = p[1];
            p += 2;
            switch (e) {
            case 'b':
                buf[0] = '\b';
                n = 1;
                break;
            case 'f':
                buf[0] = '\f';
                n = 1;
                break;
            case 'n':
                buf[0] = '\n';
                n = 1;
                break;
            case 'r':
                buf[0] = '\r';
                n = 1;
                break;
            case 't':
                buf[0] = '\t';
                n = 1;
                break;
            case 'u': {
                unsigned cp = (unsigned)hex4(p);
                p += 4;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo = (unsigned)hex4(p + 2);
                    p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                n = put_utf8(buf, cp);
                break;
            }
            default:
                buf[0] = e;
                n = 1;
                break;
            }
        }
        if (o + n >= cap)
            return -1;
        memcpy(dst + o, buf, n);
        o += n;
    }
    if (o >= cap)
        return -1;
    dst[o] = '\0';
    return (long)o;
}

/* Returns the NUL-terminated, unescaped content of the literal [p, q). */
static const char *literal_text(jparser *jp, const char *p, const char *q, bool escaped,
                                size_t *ret_len)
{
    size_t raw = (size_t)(q - p) - 2;
    char *dst = jp->small;

    if (raw >= sizeof(jp->small)) {
        jp->scratch.start = jp->scratch.len = 0;
        if (qmp__buf_reserve(&jp->scratch, raw + 1) < 0)
            return NULL;
        dst = jp->scratch.data;
    }
    if (!escaped) {
        memcpy(dst, p + 1, raw);
        dst[raw] = '\0';
        *ret_len = raw;
    } else {
        /* Unescaping never makes a string longer. */
        long n = qmp__json_unescape(p, q, dst, raw + 1);
        if (n < 0)
            return NULL;
        *ret_len = (size_t)n;
    }
    return dst;
}

static int nomem(jparser *jp)
{
    return qmp__error_set(jp->err, -ENOMEM, QMP_ERR_NOMEM, "out of memory decoding JSON");
}

static json_object *make_double(const char *p, const char *q)
{
    char tmp[64];
    char *heap = NULL;
    char *s = tmp;
    size_t n = (size_t)(q - p);

    if (n >= sizeof(tmp)) {
        heap = malloc(n + 1);
        if (heap == NULL)
            return NULL;
        s = heap;
    }
    memcpy(s, p, n);
    s[n] = '\0';
    /* strtod follows LC_NUMERIC; JSON always uses '.', so parse in "C". */
    double d;
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (c_locale != (locale_t)0) {
        d = strtod_l(s, NULL, c_locale);
        freelocale(c_locale);
    } else {
        d = strtod(s, NULL);
    }
    json_object *o = json_object_new_double_s(d, s);
    free(heap);
    return o;
}

/*
 * Validates the number at *pp; when building, creates its object in *ret.
 * Integers that fit int64 become int64, up to UINT64_MAX uint64, anything
 * else a double keeping the original text.
 */
static int scan_number(jparser *jp, const char **pp, json_object **ret)
{
    const char *p = *pp, *end = jp->end, *start = p;
    bool neg = false, is_int = true, overflow = false;
    uint64_t v = 0;

    if (*p == '-') {
        neg = true;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9')
        return jp_fail(jp, p, "invalid number");
    if (*p == '0') {
        p++;
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned dgt = (unsigned)(*p - '0');
            if (v > (UINT64_MAX - dgt) / 10)
                overflow = true;
            else
                v = v * 10 + dgt;
            p++;
        }
    }
    if (p < end && *p == '.') {
        is_int = false;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return jp_fail(jp, p, "invalid number: digit expected after '.'");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = false;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return jp_fail(jp, p, "invalid number: digit expected in exponent");
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    *pp = p;
    if (!jp->build)
        return 0;

    json_object *o;
    if (is_int && !overflow && !neg && v <= (uint64_t)INT64_MAX)
        o = json_object_new_int64((int64_t)v);
    else if (is_int && !overflow && !neg)
        o = json_object_new_uint64(v);
    else if (is_int && !overflow && v <= (uint64_t)INT64_MAX + 1)
        o = json_object_new_int64(v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v);
    else
        o = make_double(start, p);
    if (o == NULL)
        return nomem(jp);
    *ret = o;
    return 0;
}

static int push_frame(jparser *jp, bool is_object, const char *at)
{
    if (jp->n_frames >= jp->max_depth)
        return qmp__error_set(jp->err, -EMSGSIZE, QMP_ERR_LIMIT,
                              "JSON nested deeper than %u levels at byte %zu", jp->max_depth,
                              (size_t)(at - jp->base));
    if (jp->n_frames == jp->cap_frames) {
        size_t cap = jp->cap_frames * 2;
        jframe *f;
        if (jp->frames == jp->local) {
            f = malloc(cap * sizeof(*f));
            if (f != NULL)
                memcpy(f, jp->local, sizeof(jp->local));
        } else {
            f = realloc(jp->frames, cap * sizeof(*f));
        }
        if (f == NULL)
            return nomem(jp);
        jp->frames = f;
        jp->cap_frames = cap;
    }
    jframe *fr = &jp->frames[jp->n_frames++];
    fr->is_object = is_object;
    fr->obj = NULL;
    if (jp->build) {
        fr->obj = is_object ? json_object_new_object() : json_object_new_array();
        if (fr->obj == NULL) {
            jp->n_frames--;
            return nomem(jp);
        }
    }
    return 0;
}

/* Adds v to the innermost container; steals v. */
static int add_to_frame(jparser *jp, jframe *fr, json_object *v)
{
    if (!jp->build)
        return 0;
    if (fr->is_object) {
        size_t klen;
        const char *k = literal_text(jp, fr->key, fr->key_end, fr->key_escaped, &klen);
        if (k == NULL || json_object_object_add(fr->obj, k, v) != 0) {
            json_object_put(v);
            return nomem(jp);
        }
    } else if (json_object_array_add(fr->obj, v) != 0) {
        json_object_put(v);
        return nomem(jp);
    }
    return 0;
}

/*
 * The engine: parses one value starting at p.  Returns 0 with *ret_end
 * after the value and, when building, *ret the value (new reference).
 */
static int jp_value(jparser *jp, const char *p, const char **ret_end, json_object **ret)
{
    const char *end = jp->end;
    json_object *v = NULL;
    int r;

value:
    p = skip_ws(p, end);
    if (p >= end) {
        r = jp_fail(jp, p, "unexpected end of input");
        goto fail;
    }
    switch (*p) {
    case '{':
        if ((r = push_frame(jp, true, p)) < 0)
            goto fail;
        p = skip_ws(p + 1, end);
        if (p < end && *p == '}') {
            p++;
            goto close_container;
        }
        goto key;
    case '[':
        if ((r = push_frame(jp, false, p)) < 0)
            goto fail;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']') {
            p++;
            goto close_container;
        }
        goto value;
    case '"': {
        const char *q = p;
        bool esc;
        if ((r = scan_string(jp, &q, &esc)) < 0)
            goto fail;
        if (jp->build) {
            if (!esc) {
                v = json_object_new_string_len(p + 1, (int)(q - p - 2));
            } else {
                size_t n;
                const char *s = literal_text(jp, p, q, true, &n);
                v = s ? json_object_new_string_len(s, (int)n) : NULL;
            }
            if (v == NULL) {
                r = nomem(jp);
                goto fail;
            }
        }
        p = q;
        goto have_value;
    }
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0) {
            r = jp_fail(jp, p, "invalid literal");
            goto fail;
        }
        p += 4;
        if (jp->build && (v = json_object_new_boolean(1)) == NULL) {
            r = nomem(jp);
            goto fail;
        }
        goto have_value;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0) {
            r = jp_fail(jp, p, "invalid literal");
            goto fail;
        }
        p += 5;
        if (jp->build && (v = json_object_new_boolean(0)) == NULL) {
            r = nomem(jp);
            goto fail;
        }
        goto have_value;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0) {
            r = jp_fail(jp, p, "invalid literal");
            goto fail;
        }
        p += 4;
        v = NULL;
        goto have_value;
    default:
        if (*p == '-' || (*p >= '0' && *p <= '9')) {
            if ((r = scan_number(jp, &p, &v)) < 0)
                goto fail;
            goto have_value;
        }
        r = jp_fail(jp, p, "unexpected character");
        goto fail;
    }

key : {
    jframe *fr = &jp->frames[jp->n_frames - 1];
    if (p >= end || *p != '"') {
        r = jp_fail(jp, p, p >= end ? "unexpected end of input" : "object key expected");
        goto fail;
    }
    const char *q = p;
    if ((r = scan_string(jp, &q, &fr->key_escaped)) < 0)
        goto fail;
    fr->key = p;
    fr->key_end = q;
    p = skip_ws(q, end);
    if (p >= end || *p != ':') {
        r = jp_fail(jp, p, p >= end ? "unexpected end of input" : "':' expected");
        goto fail;
    }
    p++;
    goto value;
}

close_container:
    v = jp->frames[--jp->n_frames].obj;
    /* fall through */

have_value:
    if (jp->n_frames == 0) {
        *ret_end = p;
        *ret = v;
        return 0;
    }
    {
        jframe *fr = &jp->frames[jp->n_frames - 1];
        r = add_to_frame(jp, fr, v);
        v = NULL;
        if (r < 0)
            goto fail;
        p = skip_ws(p, end);
        if (p >= end) {
            r = jp_fail(jp, p, "unexpected end of input");
            goto fail;
        }
        char c = *p++;
        if (c == ',') {
            if (fr->is_object) {
                p = skip_ws(p, end);
                goto key;
            }
            goto value;
        }
        if (c == (fr->is_object ? '}' : ']'))
            goto close_container;
        r = jp_fail(jp, p - 1, fr->is_object ? "',' or '}' expected" : "',' or ']' expected");
        goto fail;
    }

fail:
    json_object_put(v);
    while (jp->n_frames > 0)
        json_object_put(jp->frames[--jp->n_frames].obj);
    return r;
}

static void jp_init(jparser *jp, const char *base, const char *end, unsigned max_depth, bool build,
                    qmp_error *err)
{
    jp->base = base;
    jp->end = end;
    jp->max_depth = max_depth;
    jp->build = build;
    jp->err = err;
    memset(&jp->scratch, 0, sizeof(jp->scratch));
    jp->frames = jp->local;
    jp->n_frames = 0;
    jp->cap_frames = sizeof(jp->local) / sizeof(jp->local[0]);
}

static void jp_fini(jparser *jp)
{
    if (jp->frames != jp->local)
        free(jp->frames);
    qmp__buf_free(&jp->scratch);
}

int qmp__json_skip(const char *p, const char *end, unsigned max_depth, const char **ret_end,
                   const char *base, qmp_error *err)
{
    jparser jp;
    json_object *unused = NULL;

    jp_init(&jp, base ? base : p, end, max_depth, false, err);
    int r = jp_value(&jp, p, ret_end, &unused);
    jp_fini(&jp);
    return r;
}

int qmp__json_build(const char *p, const char *end, unsigned max_depth, json_object **ret,
                    qmp_error *err)
{
    jparser jp;
    json_object *v = NULL;
    const char *after;

    jp_init(&jp, p, end, max_depth, true, err);
    int r = jp_value(&jp, p, &after, &v);
    if (r == 0) {
        after = skip_ws(after, end);
        if (after != end) {
            json_object_put(v);
            v = NULL;
            r = jp_fail(&jp, after, "unexpected data after the value");
        }
    }
    jp_fini(&jp);
    if (r == 0)
        *ret = v;
    return r;
}

int qmp_json_parse(const char *text, size_t len, unsigned max_depth, json_object **ret,
                   qmp_error *err)
{
    if (text == NULL || ret == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "qmp_json_parse: NULL argument");
    return qmp__json_build(text, text + len, max_depth ? max_depth : QMP_JSON_DEFAULT_MAX_DEPTH,
                           ret, err);
}

int qmp__json_int64(const char *p, const char *end, int64_t *ret)
{
    bool neg = false;
    uint64_t v = 0;

    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= end)
        return -EINVAL;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        if (v > (UINT64_MAX - 9) / 10)
            return -ERANGE;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return -ERANGE;
        *ret = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return -ERANGE;
        *ret = (int64_t)v;
    }
    return 0;
}

/* ---------------------------------------------------------- serialisation */

#define WRITE_MAX_DEPTH 1024

int qmp__json_write_string(qmp__buf *b, const char *s, size_t n, qmp_error *err)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;

    if (qmp__utf8_valid_prefix(s, n) != n)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "string is not valid UTF-8 (at byte %zu)",
                              qmp__utf8_valid_prefix(s, n));
    /* Worst case every byte becomes \u00XX. */
    if (n > (SIZE_MAX - 2) / 6 || qmp__buf_reserve(b, n * 6 + 2) < 0)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    char *d = b->data + b->len;
    *d++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        if (plain_byte[c] || c >= 0x80) {
            *d++ = (char)c;
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '"':
            *d++ = '"';
            break;
        case '\\':
            *d++ = '\\';
            break;
        case '\n':
            *d++ = 'n';
            break;
        case '\r':
            *d++ = 'r';
            break;
        case '\t':
            *d++ = 't';
            break;
        case '\b':
            *d++ = 'b';
            break;
        case '\f':
            *d++ = 'f';
            break;
        default:
            *d++ = 'u';
            *d++ = '0';
            *d++ = '0';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 15];
        }
    }
    *d++ = '"';
    b->len = (size_t)(d - b->data);
    return 0;
}

/* Shortest "%.Ng" form of d that reads back exactly, always with a '.'
 * or an exponent so it stays a double; independent of the locale. */
static int format_double(char *out, size_t size, double d)
{
    locale_t c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    int n = 0;

    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, size, "%.*g", prec, d);
        if (n < 0 || (size_t)n >= size)
            break;
        /* Undo a locale's decimal comma before reading back. */
        for (char *c = out; *c; c++) {
            if (*c != '-' && *c != '+' && *c != 'e' && (*c < '0' || *c > '9'))
                *c = '.';
        }
        double back = c_locale != (locale_t)0 ? strtod_l(out, NULL, c_locale) : strtod(out, NULL);
        if (back == d)
            break;
    }
    if (c_locale != (locale_t)0)
        freelocale(c_locale);
    if (n < 0 || (size_t)n + 3 > size)
        return -1;
    if (strpbrk(out, ".e") == NULL) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    return n;
}

static int write_value(qmp__buf *b, json_object *v, unsigned depth, qmp_error *err)
{
    char num[64];
    int n;

    if (depth > WRITE_MAX_DEPTH)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "JSON value nested deeper than %u levels (a cycle?)",
                              WRITE_MAX_DEPTH);
    switch (json_object_get_type(v)) {
    case json_type_null:
        return qmp__buf_append(b, "null", 4) < 0 ? -ENOMEM : 0;
    case json_type_boolean:
        if (json_object_get_boolean(v))
            return qmp__buf_append(b, "true", 4) < 0 ? -ENOMEM : 0;
        return qmp__buf_append(b, "false", 5) < 0 ? -ENOMEM : 0;
    case json_type_int: {
        int64_t i = json_object_get_int64(v);
        if (i == INT64_MAX)
            n = snprintf(num, sizeof(num), "%llu", (unsigned long long)json_object_get_uint64(v));
        else
            n = snprintf(num, sizeof(num), "%lld", (long long)i);
        return qmp__buf_append(b, num, (size_t)n) < 0 ? -ENOMEM : 0;
    }
    case json_type_double: {
        double d = json_object_get_double(v);
        if (!isfinite(d))
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                                  "JSON cannot represent a non-finite number");
        n = format_double(num, sizeof(num), d);
        if (n < 0)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "cannot format number");
        return qmp__buf_append(b, num, (size_t)n) < 0 ? -ENOMEM : 0;
    }
    case json_type_string:
        return qmp__json_write_string(b, json_object_get_string(v),
                                      (size_t)json_object_get_string_len(v), err);
    case json_type_object: {
        bool first = true;
        if (qmp__buf_append(b, "{", 1) < 0)
            return -ENOMEM;
        json_object_object_foreach(v, key, val) {
            int r;
            if (!first && qmp__buf_append(b, ",", 1) < 0)
                return -ENOMEM;
            first = false;
            if ((r = qmp__json_write_string(b, key, strlen(key), err)) < 0)
                return r;
            if (qmp__buf_append(b, ":", 1) < 0)
                return -ENOMEM;
            if ((r = write_value(b, val, depth + 1, err)) < 0)
                return r;
        }
        return qmp__buf_append(b, "}", 1) < 0 ? -ENOMEM : 0;
    }
    case json_type_array: {
        size_t len = json_object_array_length(v);
        if (qmp__buf_append(b, "[", 1) < 0)
            return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
            int r;
            if (i > 0 && qmp__buf_append(b, ",", 1) < 0)
                return -ENOMEM;
            if ((r = write_value(b, json_object_array_get_idx(v, i), depth + 1, err)) < 0)
                return r;
        }
        return qmp__buf_append(b, "]", 1) < 0 ? -ENOMEM : 0;
    }
    }
    return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "unknown JSON type");
}

int qmp__json_write(qmp__buf *b, json_object *v, qmp_error *err)
{
    int r = write_value(b, v, 0, err);
    if (r == -ENOMEM)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory serialising JSON");
    return r;
}

/* --------------------------------------------------------------- templates */

static int tmpl_fail(qmp_error *err, const char *tmpl, const char *at, const char *what)
{
    return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "bad JSON template at offset %zu: %s",
                          (size_t)(at - tmpl), what);
}

/*
 * Parses a conversion at *pp (just after '%') and appends its value.
 * Supported length modifiers: l ll z j t; conversions d i u s f g e.  (h and
 * hh are refused: printf would truncate the value, JSON would not.)
 */
static int tmpl_conversion(qmp__buf *b, const char *tmpl, const char **pp, va_list *ap,
                           qmp_error *err)
{
    const char *p = *pp;
    int lmod = 0; /* 0 int, 1 long, 2 long long, 3 size_t, 4 intmax_t, 5 ptrdiff_t */
    char num[64];
    int n;

    if (p[0] == 'l') {
        lmod = p[1] == 'l' ? 2 : 1;
        p += lmod;
    } else if (p[0] == 'z') {
        lmod = 3;
        p++;
    } else if (p[0] == 'j') {
        lmod = 4;
        p++;
    } else if (p[0] == 't') {
        lmod = 5;
        p++;
    }
    char conv = *p;
    if (conv == '\0')
        return tmpl_fail(err, tmpl, *pp - 1, "incomplete conversion");
    p++;
    switch (conv) {
    case 'd':
    case 'i': {
        long long v;
        switch (lmod) {
        case 1:
            v = va_arg(*ap, long);
            break;
        case 2:
            v = va_arg(*ap, long long);
            break;
        case 3:
            v = (long long)va_arg(*ap, size_t);
            break; /* %zd */
        case 4:
            v = (long long)va_arg(*ap, intmax_t);
            break;
        case 5:
            v = (long long)va_arg(*ap, ptrdiff_t);
            break;
        default:
            v = va_arg(*ap, int);
            break;
        }
        n = snprintf(num, sizeof(num), "%lld", v);
        break;
    }
    case 'u': {
        unsigned long long v;
        switch (lmod) {
        case 1:
            v = va_arg(*ap, unsigned long);
            break;
        case 2:
            v = va_arg(*ap, unsigned long long);
            break;
        case 3:
            v = va_arg(*ap, size_t);
            break;
        case 4:
            v = (unsigned long long)va_arg(*ap, uintmax_t);
            break;
        case 5:
            v = (unsigned long long)va_arg(*ap, ptrdiff_t);
            break;
        default:
            v = va_arg(*ap, unsigned int);
            break;
        }
        n = snprintf(num, sizeof(num), "%llu", v);
        break;
    }
    case 'f':
    case 'g':
    case 'e': {
        double d = va_arg(*ap, double);
        if (!isfinite(d))
            return tmpl_fail(err, tmpl, *pp - 1, "non-finite number");
        n = format_double(num, sizeof(num), d);
        if (n < 0)
            return tmpl_fail(err, tmpl, *pp - 1, "cannot format number");
        break;
    }
    case 's': {
        if (lmod != 0)
            return tmpl_fail(err, tmpl, *pp - 1, "unsupported conversion");
        const char *s = va_arg(*ap, const char *);
        int r;
        *pp = p;
        if (s == NULL)
            return qmp__buf_append(b, "null", 4);
        r = qmp__json_write_string(b, s, strlen(s), err);
        if (r == -EINVAL)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                                  "bad JSON template value for the %%s at offset %zu: %s",
                                  (size_t)(*pp - 2 - tmpl), "not valid UTF-8");
        return r;
    }
    default:
        return tmpl_fail(err, tmpl, *pp - 1, "unsupported conversion");
    }
    *pp = p;
    return qmp__buf_append(b, num, (size_t)n);
}

int qmp_json_vbuild(json_object **ret, qmp_error *err, const char *tmpl, va_list ap)
{
    qmp__buf b = {0};
    va_list aq;
    int r = 0;

    if (ret == NULL || tmpl == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "qmp_json_build: NULL argument");
    va_copy(aq, ap);
    for (const char *p = tmpl; *p && r >= 0;) {
        char c = *p;
        if (c == '\'' || c == '"') {
            /* Copy a quoted string, turning single quotes into JSON's. */
            const char *open = p++;
            r = qmp__buf_append(&b, "\"", 1);
            while (r >= 0) {
                if (*p == '\0') {
                    r = tmpl_fail(err, tmpl, open, "unterminated string");
                    break;
                }
                if (*p == c) {
                    p++;
                    r = qmp__buf_append(&b, "\"", 1);
                    break;
                }
                if (*p == '%') {
                    if (p[1] != '%') {
                        r = tmpl_fail(err, tmpl, p,
                                      "conversion inside a quoted string (use %s unquoted)");
                        break;
                    }
                    r = qmp__buf_append(&b, "%", 1);
                    p += 2;
                } else if (*p == '\\' && c == '\'' && p[1] == '\'') {
                    r = qmp__buf_append(&b, "'", 1);
                    p += 2;
                } else if (*p == '\\' && p[1] != '\0') {
                    r = qmp__buf_append(&b, p, 2);
                    p += 2;
                } else if (*p == '"') {
                    r = qmp__buf_append(&b, "\\\"", 2); /* only inside '...' */
                    p++;
                } else {
                    r = qmp__buf_append(&b, p, 1);
                    p++;
                }
            }
        } else if (c == '%') {
            if (p[1] == '%') {
                r = tmpl_fail(err, tmpl, p, "'%%' outside a string");
                break;
            }
            p++;
            r = tmpl_conversion(&b, tmpl, &p, &aq, err);
        } else {
            r = qmp__buf_append(&b, p, 1);
            p++;
        }
    }
    va_end(aq);
    if (r == -ENOMEM)
        r = qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory building JSON");
    if (r >= 0) {
        json_object *v = NULL;
        qmp_error perr;
        r = qmp__json_build(b.data ? b.data : "", b.data ? b.data + b.len : "",
                            QMP_JSON_DEFAULT_MAX_DEPTH, &v, &perr);
        if (r == -ENOMEM) {
            qmp__error_copy(err, &perr);
        } else if (r < 0) {
            r = qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "bad JSON template \"%.200s\": %s",
                               tmpl, perr.message);
        } else if (v == NULL) {
            r = qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                               "JSON template yields null, which cannot be returned");
        } else {
            *ret = v;
        }
    }
    qmp__buf_free(&b);
    return r;
}

int qmp_json_build(json_object **ret, qmp_error *err, const char *tmpl, ...)
{
    va_list ap;
    va_start(ap, tmpl);
    int r = qmp_json_vbuild(ret, err, tmpl, ap);
    va_end(ap);
    return r;
}

/* ---------------------------------------------------------------- matching */

int qmp_json_match(json_object *value, json_object *pattern)
{
    if (pattern == NULL)
        return 1;
    if (!json_object_is_type(pattern, json_type_object))
        return json_object_equal(value, pattern);
    if (!json_object_is_type(value, json_type_object))
        return 0;
    json_object_object_foreach(pattern, key, want) {
        json_object *have;
        if (!json_object_object_get_ex(value, key, &have))
            return 0;
        if (json_object_is_type(want, json_type_object)) {
            if (!qmp_json_match(have, want))
                return 0;
        } else if (!json_object_equal(have, want)) {
            return 0;
        }
    }
    return 1;
}
