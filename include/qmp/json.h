/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: JSON helpers.  Values are json-c objects (json_object).
 *
 * libqmp decodes the wire with its own strict RFC 8259 decoder that
 * builds json-c objects directly; it is several times cheaper than
 * json_tokener on QMP traffic and is checked against json_tokener by a
 * differential fuzz target.  Integers in [INT64_MIN, INT64_MAX] become
 * int64 objects, larger ones up to UINT64_MAX (QEMU sends
 * 18446744073709551615) uint64 objects, anything else with a fraction,
 * exponent or beyond 64 bits a double that keeps its original text.
 */
#ifndef QMP_JSON_H
#define QMP_JSON_H

#include <stdarg.h>
#include <json-c/json_object.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default maximum nesting depth for decoding (arrays and objects). */
#define QMP_JSON_DEFAULT_MAX_DEPTH 1024

/*
 * Decodes exactly one JSON value from text[0..len) (surrounding
 * whitespace allowed, nothing else).  Strict: RFC 8259 grammar only,
 * UTF-8 validated (overlong forms, surrogates and code points past
 * U+10FFFF refused), "\u0000" refused (json-c strings are C strings),
 * nesting limited to max_depth (0 means QMP_JSON_DEFAULT_MAX_DEPTH).
 *
 * ret:    on success, a new reference the caller must json_object_put().
 *         A JSON null yields a NULL *ret with return value 0.
 * err:    optional; on failure says what was wrong and at which byte.
 *
 * Returns 0, -EINVAL (ret, text NULL), -EPROTO (not valid JSON, category
 * QMP_ERR_PROTOCOL), -EMSGSIZE (deeper than max_depth, QMP_ERR_LIMIT),
 * -ENOMEM.
 */
QMP_EXPORT int qmp_json_parse(const char *text, size_t len, unsigned max_depth, json_object **ret,
                              qmp_error *err);

/*
 * Builds a JSON value from a printf-like template.
 *
 * The template is JSON in which strings may also be written with single
 * quotes ('like this', with \' for a quote), so C callers need not escape
 * double quotes.  Conversions insert values:
 *   %s          a C string, inserted as a JSON string (escaped; must be
 *               UTF-8); a NULL pointer inserts null.
 *   %d %i %u with the length modifiers l, ll, z, j (intmax_t) and t
 *               (ptrdiff_t), so PRId64/PRIu64 work: integers, inserted
 *               as JSON numbers (h and hh are refused).
 *   %f %g %e    a double (must be finite), inserted as a JSON number.
 * Conversions are recognised outside strings only.  Inside a quoted
 * string, %% stands for a literal percent sign and any other % is an
 * error, because the inserted value would not be escaped.  Booleans and
 * null are written literally (true, false, null).
 *
 * Example: qmp_json_build(&args, &err, "{'id': %s, 'bus': 'usb.0'}", id)
 *
 * ret: new reference on success (never NULL: a template of just "null"
 *      is refused as it cannot be told from failure).
 * Returns 0, -EINVAL (bad template, bad conversion, invalid UTF-8 in a
 * %s value, non-finite double; category QMP_ERR_INVALID), -ENOMEM.
 */
QMP_EXPORT int qmp_json_build(json_object **ret, qmp_error *err, const char *template_, ...)
    QMP_PRINTF(3, 4);

/* va_list variant of qmp_json_build(). */
QMP_EXPORT int qmp_json_vbuild(json_object **ret, qmp_error *err, const char *template_, va_list ap)
    QMP_PRINTF(3, 0);

/*
 * Returns 1 when every member of pattern is present in value with an
 * equal value, recursively for nested objects (arrays and scalars are
 * compared whole with json_object_equal()); 0 otherwise.  A NULL pattern
 * matches anything; a non-object pattern is compared whole.  Both
 * arguments are borrowed.  Used to match event data.
 */
QMP_EXPORT int qmp_json_match(json_object *value, json_object *pattern);

#ifdef __cplusplus
}
#endif

#endif /* QMP_JSON_H */
