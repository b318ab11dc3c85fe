/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Differential fuzz target for libqmp's JSON decoder.
 *
 * The input is one JSON text.  It is decoded by qmp_json_parse() and by
 * json-c's json_tokener in its strictest mode, and the two must agree:
 * both accept with equal values, or both refuse, except where the
 * input shows one of the differences listed in struct quirks, each of
 * which is a deliberate choice of libqmp's decoder (it follows RFC 8259
 * and RFC 3629 where json_tokener is lenient).  Any other disagreement
 * is a bug in one of them.
 *
 * Also checked:
 *   - the validator (qmp__json_skip) accepts exactly what the decoder
 *     accepts, with the same error code;
 *   - a value that decodes at nesting depth N is refused at N - 1 with
 *     -EMSGSIZE;
 *   - round trips: the decoded value serialised by json-c and by
 *     libqmp's own writer decodes to an equal value.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "internal.h"

/* Generous, and json_tokener allocates its stack up front: keep it well
 * above anything a fuzzer input reaches but bounded. */
#define DEPTH QMP_JSON_DEFAULT_MAX_DEPTH

/*
 * Facts about the input, found by an independent scan, that explain the
 * known differences between json_tokener (as of json-c 0.16, flags
 * JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8) and libqmp.
 */
typedef struct quirks {
    /* A NUL byte: json_tokener stops reading at it, libqmp never
     * accepts one (it is neither whitespace nor allowed raw in a
     * string).  json_tokener is not consulted for such input. */
    bool nul_byte;
    /* "\u0000" in a string: json-c strings may hold NUL but json-c's
     * object keys and most callers treat strings as C strings, so libqmp
     * refuses it. */
    bool nul_escape;
    /* A \uD800-\uDFFF escape that is not part of a high-low pair:
     * json_tokener substitutes U+FFFD, libqmp refuses it. */
    bool lone_surrogate;
    /* A raw control byte (below 0x20) inside a string: RFC 8259 requires
     * it escaped; json_tokener accepts it even in strict mode. */
    bool ctrl_in_string;
    /* Bytes that are not UTF-8 as RFC 3629 defines it (overlong forms,
     * encoded surrogates, code points past U+10FFFF): json_tokener's
     * validation checks only the byte pattern. */
    bool bad_utf8;
    /* A number outside RFC 8259's grammar ("1.", "1.e5", "01", "-01",
     * "00"): json_tokener accepts these, libqmp does not. */
    bool loose_number;
    /* NaN, Infinity or -Infinity outside a string: json_tokener accepts
     * them even in strict mode; they are not JSON. */
    bool nonfinite_literal;
    /* A single quote outside a string: json_tokener reads single-quoted
     * object member names ({'a': 1}) even in strict mode. */
    bool single_quote;
    /* A surrogate pair escape for a code point whose low 16 bits are in
     * D800-DFFF (U+1D800-U+1DFFF, U+2D800-...): json_tokener 0.16
     * decodes it to U+FFFD instead of the code point; libqmp decodes it
     * correctly.  Both accept, and the values differ in those
     * characters only. */
    bool masked_pair;
    /* An integer literal outside [INT64_MIN, UINT64_MAX]: both accept
     * it, but json_tokener saturates it to INT64_MIN or UINT64_MAX while
     * libqmp keeps it as a double with its original text. */
    bool big_integer;
} quirks;

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The code unit of the \uXXXX escape at s (pointing at the backslash), or
 * -1 when s does not hold one. */
static long u_escape(const uint8_t *s, size_t n)
{
    long v = 0;

    if (n < 6 || s[0] != '\\' || s[1] != 'u')
        return -1;
    for (int i = 2; i < 6; i++) {
        int d = hex_digit(s[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Checks a number token against RFC 8259's grammar and its integer range. */
static void scan_number_token(const uint8_t *s, size_t n, quirks *q)
{
    size_t i = 0;
    bool is_int = true;

    if (i < n && s[i] == '-')
        i++;
    if (i >= n || s[i] < '0' || s[i] > '9') {
        q->loose_number = true;
        return;
    }
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < n && s[i] == '.') {
        is_int = false;
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9') {
            q->loose_number = true;
            return;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = false;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || s[i] < '0' || s[i] > '9') {
            q->loose_number = true;
            return;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i != n) {
        q->loose_number = true;
        return;
    }
    if (is_int) {
        /* Compare digit strings with the bounds' decimal forms. */
        bool neg = s[0] == '-';
        const char *bound = neg ? "9223372036854775808" : "18446744073709551615";
        size_t digits = n - (neg ? 1 : 0), blen = strlen(bound);
        const uint8_t *d = s + (neg ? 1 : 0);
        if (digits > blen || (digits == blen && memcmp(d, bound, blen) > 0))
            q->big_integer = true;
    }
}

static void scan_quirks(const uint8_t *s, size_t n, quirks *q)
{
    memset(q, 0, sizeof(*q));
    for (size_t i = 0; i < n;) {
        size_t k = fuzz_utf8_len(s + i, n - i);
        if (k == 0) {
            q->bad_utf8 = true;
            k = 1;
        }
        if (s[i] == 0)
            q->nul_byte = true;
        i += k;
    }

    bool in_string = false;
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (in_string) {
            if (c == '"') {
                in_string = false;
                i++;
            } else if (c == '\\') {
                long u = u_escape(s + i, n - i);
                if (u < 0) {
                    i += 2;
                    continue;
                }
                if (u == 0)
                    q->nul_escape = true;
                if (u >= 0xd800 && u <= 0xdbff) {
                    long lo = u_escape(s + i + 6, n - i - 6);
                    if (lo >= 0xdc00 && lo <= 0xdfff) {
                        long cp = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                        if ((cp & 0xffff) >= 0xd800 && (cp & 0xffff) <= 0xdfff)
                            q->masked_pair = true;
                        i += 12;
                        continue;
                    }
                    q->lone_surrogate = true;
                } else if (u >= 0xdc00 && u <= 0xdfff) {
                    q->lone_surrogate = true;
                }
                i += 6;
            } else {
                if (c < 0x20)
                    q->ctrl_in_string = true;
                i++;
            }
        } else if (c == '"') {
            in_string = true;
            i++;
        } else if (c == '\'') {
            /* What follows may be scanned out of step; this quirk alone
             * explains any refusal. */
            q->single_quote = true;
            i++;
        } else if (c == '-' || c == '.' || (c >= '0' && c <= '9')) {
            size_t j = i;
            while (j < n && (s[j] == '-' || s[j] == '+' || s[j] == '.' || s[j] == 'e' ||
                             s[j] == 'E' || (s[j] >= '0' && s[j] <= '9')))
                j++;
            scan_number_token(s + i, j - i, q);
            i = j;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            size_t j = i;
            while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')))
                j++;
            if ((j - i == 3 && memcmp(s + i, "NaN", 3) == 0) ||
                (j - i == 8 && memcmp(s + i, "Infinity", 8) == 0))
                q->nonfinite_literal = true;
            i = j;
        } else {
            i++;
        }
    }
}

static bool any_quirk_for_refusal(const quirks *q)
{
    return q->nul_escape || q->lone_surrogate || q->ctrl_in_string || q->bad_utf8 ||
           q->loose_number || q->nonfinite_literal || q->single_quote;
}

/* Maximum nesting of arrays and objects in a valid JSON text. */
static unsigned nesting(const uint8_t *s, size_t n)
{
    unsigned depth = 0, max = 0;
    bool in_string = false;

    for (size_t i = 0; i < n; i++) {
        if (in_string) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                in_string = false;
        } else if (s[i] == '"') {
            in_string = true;
        } else if (s[i] == '[' || s[i] == '{') {
            if (++depth > max)
                max = depth;
        } else if (s[i] == ']' || s[i] == '}') {
            depth--;
        }
    }
    return max;
}

/* Decodes with json_tokener; returns true when it accepts the whole input. */
static bool tokener_parse(const uint8_t *data, size_t size, json_object **ret)
{
    json_tokener *tok = json_tokener_new_ex(DEPTH + 1); /* it counts one level more */
    json_object *v;
    bool ok;

    FUZZ_CHECK(tok != NULL, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    v = json_tokener_parse_ex(tok, (const char *)data, (int)size);
    if (v == NULL && json_tokener_get_error(tok) == json_tokener_continue) {
        /* A bare number or literal ends only at the end of input: the
         * terminating NUL tells json_tokener so. */
        v = json_tokener_parse_ex(tok, "", 1);
        ok = json_tokener_get_error(tok) == json_tokener_success;
    } else {
        ok = json_tokener_get_error(tok) == json_tokener_success &&
             json_tokener_get_parse_end(tok) == size;
    }
    json_tokener_free(tok);
    if (!ok) {
        json_object_put(v);
        v = NULL;
    }
    *ret = v;
    return ok;
}

static bool is_integer_text(const char *t)
{
    return strpbrk(t, ".eE") == NULL;
}

/*
 * Copies the UTF-8 string s, replacing each code point whose low 16 bits
 * are in D800-DFFF by U+FFFD, as json_tokener decodes it (masked_pair).
 */
static char *mask_like_tokener(const char *s, size_t n, size_t *ret_len)
{
    char *out = malloc(n + 1); /* U+FFFD (3 bytes) replaces 4 bytes */
    size_t o = 0;

    FUZZ_CHECK(out != NULL, "out of memory");
    for (size_t i = 0; i < n;) {
        const uint8_t *u = (const uint8_t *)s + i;
        size_t k = fuzz_utf8_len(u, n - i);
        if (k == 4) {
            unsigned long cp = ((unsigned long)(u[0] & 0x07) << 18) |
                               ((unsigned long)(u[1] & 0x3f) << 12) |
                               ((unsigned long)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
            if ((cp & 0xffff) >= 0xd800 && (cp & 0xffff) <= 0xdfff) {
                memcpy(out + o, "\xef\xbf\xbd", 3);
                o += 3;
                i += 4;
                continue;
            }
        }
        if (k == 0)
            k = 1;
        memcpy(out + o, s + i, k);
        o += k;
        i += k;
    }
    out[o] = '\0';
    *ret_len = o;
    return out;
}

/* A deep copy of v with mask_like_tokener() applied to strings and keys. */
static json_object *masked_copy(json_object *v)
{
    size_t len;
    char *m;
    json_object *c;

    switch (json_object_get_type(v)) {
    case json_type_string:
        m = mask_like_tokener(json_object_get_string(v), (size_t)json_object_get_string_len(v),
                              &len);
        c = json_object_new_string_len(m, (int)len);
        free(m);
        return c;
    case json_type_array:
        c = json_object_new_array();
        for (size_t i = 0; i < json_object_array_length(v); i++)
            json_object_array_add(c, masked_copy(json_object_array_get_idx(v, i)));
        return c;
    case json_type_object:
        c = json_object_new_object();
        json_object_object_foreach(v, key, val) {
            m = mask_like_tokener(key, strlen(key), &len);
            json_object_object_add(c, m, masked_copy(val));
            free(m);
        }
        return c;
    default:
        return json_object_get(v);
    }
}

/*
 * Equality, allowing only the big_integer difference: json_tokener's
 * saturated integer against libqmp's double of the same literal.
 */
static bool equal_modulo_quirks(json_object *theirs, json_object *ours, const quirks *q)
{
    if (json_object_equal(theirs, ours))
        return true;
    json_type tt = json_object_get_type(theirs), ot = json_object_get_type(ours);
    if (tt == json_type_int && ot == json_type_double) {
        if (!q->big_integer || !is_integer_text(json_object_get_string(ours)))
            return false;
        int64_t i = json_object_get_int64(theirs);
        double d = json_object_get_double(ours);
        if (d < 0)
            return i == INT64_MIN;
        return i == INT64_MAX && json_object_get_uint64(theirs) == UINT64_MAX;
    }
    if (tt != ot)
        return false;
    if (tt == json_type_array) {
        size_t n = json_object_array_length(theirs);
        if (n != json_object_array_length(ours))
            return false;
        for (size_t i = 0; i < n; i++) {
            if (!equal_modulo_quirks(json_object_array_get_idx(theirs, i),
                                     json_object_array_get_idx(ours, i), q))
                return false;
        }
        return true;
    }
    if (tt == json_type_object) {
        if (json_object_object_length(theirs) != json_object_object_length(ours))
            return false;
        json_object_object_foreach(theirs, key, tv) {
            json_object *ov;
            if (!json_object_object_get_ex(ours, key, &ov) || !equal_modulo_quirks(tv, ov, q))
                return false;
        }
        return true;
    }
    return false;
}

static void check_round_trips(json_object *ours, const uint8_t *data, size_t size)
{
    json_object *again = NULL;
    qmp_error err;
    int r;

    /* Through json-c's serialiser. */
    const char *text = ours ? json_object_to_json_string_ext(ours, JSON_C_TO_STRING_PLAIN) : "null";
    r = qmp_json_parse(text, strlen(text), 0, &again, &err);
    FUZZ_CHECK(r == 0, "json-c's serialisation %s of input %.*s is refused: %s", text, (int)size,
               (const char *)data, err.message);
    FUZZ_CHECK(json_object_equal(ours, again), "json-c round trip changed %.*s into %s", (int)size,
               (const char *)data, text);
    json_object_put(again);
    again = NULL;

    /* Through libqmp's own writer (used for every request it sends). */
    qmp__buf b = {0};
    r = qmp__json_write(&b, ours, &err);
    if (r == -EINVAL) {
        FUZZ_CHECK(fuzz_has_nonfinite(ours), "qmp__json_write refused %.*s: %s", (int)size,
                   (const char *)data, err.message);
    } else {
        FUZZ_CHECK(r == 0, "qmp__json_write failed: %s", err.message);
        r = qmp_json_parse(b.data, b.len, 0, &again, &err);
        FUZZ_CHECK(r == 0, "libqmp's serialisation %.*s is refused: %s", (int)b.len, b.data,
                   err.message);
        FUZZ_CHECK(json_object_equal(ours, again), "libqmp round trip changed %.*s into %.*s",
                   (int)size, (const char *)data, (int)b.len, b.data);
        json_object_put(again);
    }
    qmp__buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *end = text + size;
    json_object *ours = NULL, *theirs = NULL;
    qmp_error err = QMP_ERROR_INIT;
    quirks q;

    /* json_tokener takes an int length. */
    if (size > (1u << 24))
        return 0;

    int r = qmp_json_parse(text, size, DEPTH, &ours, &err);
    FUZZ_CHECK(r == 0 || r == -EPROTO || r == -EMSGSIZE, "unexpected result %d", r);
    FUZZ_CHECK(r == 0 || err.code == r, "err.code %d for result %d", err.code, r);

    /* The validator agrees with the decoder. */
    const char *after = NULL;
    qmp_error serr;
    int rs = qmp__json_skip(text, end, DEPTH, &after, text, &serr);
    if (rs == 0) {
        while (after < end && (*after == ' ' || *after == '\t' || *after == '\n' || *after == '\r'))
            after++;
        FUZZ_CHECK((r == 0) == (after == end),
                   "validator and decoder disagree on %.*s: decoder %d (%s)", (int)size, text, r,
                   err.message);
    } else {
        FUZZ_CHECK(rs == r, "validator says %d (%s), decoder %d (%s)", rs, serr.message, r,
                   err.message);
    }

    scan_quirks(data, size, &q);
    if (q.nul_byte) {
        FUZZ_CHECK(r < 0, "input with a NUL byte accepted");
        return 0;
    }

    bool theirs_ok = tokener_parse(data, size, &theirs);
    if (r == 0 && theirs_ok) {
        json_object *cmp = q.masked_pair ? masked_copy(ours) : json_object_get(ours);
        FUZZ_CHECK(equal_modulo_quirks(theirs, cmp, &q),
                   "different values for %.*s: json-c %s, libqmp %s", (int)size, text,
                   json_object_to_json_string(theirs), json_object_to_json_string(ours));
        json_object_put(cmp);
    } else if (r == 0) {
        FUZZ_CHECK(false, "libqmp accepts what json_tokener refuses: %.*s", (int)size, text);
    } else if (theirs_ok) {
        FUZZ_CHECK(r == -EPROTO && any_quirk_for_refusal(&q),
                   "libqmp refuses (%s) what json_tokener accepts: %.*s", err.message, (int)size,
                   text);
    }
    json_object_put(theirs);

    if (r == 0) {
        /* The depth limit is exact. */
        unsigned depth = nesting(data, size);
        json_object *v = NULL;
        if (depth >= 1) {
            FUZZ_CHECK(qmp_json_parse(text, size, depth, &v, NULL) == 0,
                       "refused at its own depth %u", depth);
            json_object_put(v);
            v = NULL;
        }
        if (depth >= 2)
            FUZZ_CHECK(qmp_json_parse(text, size, depth - 1, &v, NULL) == -EMSGSIZE,
                       "accepted at depth %u though nested %u deep", depth - 1, depth);
        json_object_put(v);

        check_round_trips(ours, data, size);
    }
    json_object_put(ours);
    return 0;
}
