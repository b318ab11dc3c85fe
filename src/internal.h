/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp internal declarations shared between the library's sources.
 * Never installed; tools and tests outside src/ must not include it
 * (unit tests of internals are the one exception).
 */
#ifndef QMP_INTERNAL_H
#define QMP_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qmp/qmp.h"

#define QMP__STR_(x) #x
#define QMP__STR(x) QMP__STR_(x)
#define QMP_STRINGIFY_VERSION                                                                      \
    QMP__STR(QMP_VERSION_MAJOR) "." QMP__STR(QMP_VERSION_MINOR) "." QMP__STR(QMP_VERSION_MICRO)

#define QMP__UNUSED __attribute__((unused))
#define QMP__LIKELY(x) __builtin_expect(!!(x), 1)
#define QMP__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Fills err (if not NULL) and returns code (negative errno).  The message
 * is printf-formatted and truncated with "..." if it does not fit. */
int qmp__error_set(qmp_error *err, int code, qmp_error_category category, const char *fmt, ...)
    QMP_PRINTF(4, 5);
int qmp__error_setv(qmp_error *err, int code, qmp_error_category category, const char *fmt,
                    va_list ap) QMP_PRINTF(4, 0);

/* Copies src into dst if dst is not NULL and src is not dst. */
void qmp__error_copy(qmp_error *dst, const qmp_error *src);

/* ------------------------------------------------------------- logging */

typedef struct qmp__logger {
    qmp_log_fn fn;
    void *userdata;
    qmp_log_level max_level;
} qmp__logger;

void qmp__log(const qmp__logger *lg, qmp_log_level level, const char *fmt, ...) QMP_PRINTF(3, 4);

static inline bool qmp__log_enabled(const qmp__logger *lg, qmp_log_level level)
{
    return lg->fn != NULL && level <= lg->max_level;
}

/* ------------------------------------------------------------- buffers */

/* A growable byte buffer: data[start..len) holds the live bytes. */
typedef struct qmp__buf {
    char *data;
    size_t start;
    size_t len;
    size_t cap;
} qmp__buf;

/* Makes room for n more bytes at the end; returns 0 or -ENOMEM. */
int qmp__buf_reserve(qmp__buf *b, size_t n);
int qmp__buf_append(qmp__buf *b, const void *data, size_t n);
static inline size_t qmp__buf_used(const qmp__buf *b)
{
    return b->len - b->start;
}
/* Drops n bytes from the front. */
void qmp__buf_consume(qmp__buf *b, size_t n);
void qmp__buf_free(qmp__buf *b);

/* ---------------------------------------------------------------- JSON */

/*
 * Validates one JSON value starting at p (leading whitespace skipped),
 * without building anything.  On success returns 0 and sets *ret_end to
 * the first byte after the value.  On failure returns -EPROTO or
 * -EMSGSIZE (depth) and fills err, naming the offset relative to base.
 */
int qmp__json_skip(const char *p, const char *end, unsigned max_depth, const char **ret_end,
                   const char *base, qmp_error *err);

/*
 * Builds the json-c value of the (already validated or not) JSON text
 * [p, end) which must hold exactly one value plus optional whitespace.
 * Returns 0 (with *ret a new reference, NULL for JSON null), -EPROTO,
 * -EMSGSIZE, -ENOMEM.
 */
int qmp__json_build(const char *p, const char *end, unsigned max_depth, json_object **ret,
                    qmp_error *err);

/*
 * Appends the compact serialisation of v (NULL serialises as null) to b.
 * Strings must be valid UTF-8 (else -EINVAL with err filled); non-finite
 * doubles are refused (-EINVAL).  Returns 0, -EINVAL, -ENOMEM.
 */
int qmp__json_write(qmp__buf *b, json_object *v, qmp_error *err);

/* Appends s (length n) as a quoted, escaped JSON string; validates UTF-8. */
int qmp__json_write_string(qmp__buf *b, const char *s, size_t n, qmp_error *err);

/* Returns the length of the longest valid UTF-8 prefix of s[0..n). */
size_t qmp__utf8_valid_prefix(const char *s, size_t n);

/*
 * Decodes the JSON string literal starting at p (which points at the
 * opening quote; the literal must be valid) into a NUL-terminated UTF-8
 * string in dst of capacity cap.  Returns the decoded length, or -1 if
 * it does not fit.
 */
long qmp__json_unescape(const char *p, const char *end, char *dst, size_t cap);

/* Parses a JSON integer literal [p, end) into *ret; returns 0 or -ERANGE /
 * -EINVAL when it is not a plain integer that fits. */
int qmp__json_int64(const char *p, const char *end, int64_t *ret);

/* ------------------------------------------------------------ messages */

/* Creates an event from the exact message text; name_* and data_* point
 * into text.  Returns NULL on out of memory. */
qmp_event *qmp__event_new(const char *text, size_t len, const char *name, size_t name_len,
                          int64_t seconds, int64_t microseconds, size_t data_off, size_t data_len,
                          unsigned max_depth);

/* A private copy of ev (same bytes, data not yet decoded); NULL on out of
 * memory. */
qmp_event *qmp__event_dup(const qmp_event *ev);

/* Greeting lifecycle (owned by a session). */
int qmp__greeting_new(qmp_greeting **ret, const char *text, size_t len, unsigned max_depth,
                      qmp_error *err);
void qmp__greeting_free(qmp_greeting *g);

/* Commands held back by the session's in-flight limit (not yet output). */
size_t qmp__session_queued_count(const qmp_session *s);

/* The reply passed to callbacks lives on the dispatcher's stack. */
struct qmp_reply {
    uint64_t tag;
    int status;
    const qmp_error *error;
    const char *text; /* whole message, NULL for failures without one */
    size_t text_len;
    const char *value; /* the "return" value text */
    size_t value_len;
    unsigned max_depth;
    bool decoded;
    json_object *decoded_value; /* owned by the dispatcher, put after the callback */
};

#endif /* QMP_INTERNAL_H */
