/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers for driving a qmp_session by hand in unit tests: a recorder of
 * every callback as a line of text, output draining and parsing, and
 * reply building.  Header-only, for the unit test programs.
 */
#ifndef QMP_TEST_SESSION_UTIL_H
#define QMP_TEST_SESSION_UTIL_H

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "harness.h"
#include "qmp/qmp.h"

#define GREETING                                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "              \
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u6\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define GREETING_NO_OOB                                                                            \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 1, \"minor\": 0, \"major\": 8}, "              \
    "\"package\": \"\"}, \"capabilities\": []}}\r\n"

/* ----------------------------------------------------------- text log */

typedef struct strbuf {
    char *s;
    size_t len;
    size_t cap;
} strbuf;

static inline void sb_add(strbuf *b, const char *fmt, ...) QMP_PRINTF(2, 3);
static inline void sb_add(strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static inline void sb_add_bytes(strbuf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, data, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static inline const char *sb_str(const strbuf *b)
{
    return b->s ? b->s : "";
}

static inline void sb_free(strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof(*b));
}

/* A copy of s fit for one TAP comment line: control bytes become '.'. */
static inline const char *printable(const char *s, char *buf, size_t size)
{
    size_t i = 0;
    for (; s[i] && i + 1 < size; i++)
        buf[i] = (unsigned char)s[i] < 0x20 ? '.' : s[i];
    buf[i] = '\0';
    return buf;
}

/* Prints a multi-line text as TAP comments. */
static inline void tap_dump(const char *label, const char *s)
{
    printf("# %s:\n", label);
    while (*s) {
        const char *nl = strchr(s, '\n');
        int n = nl ? (int)(nl - s) : (int)strlen(s);
        printf("#   %.*s\n", n, s);
        s += n + (nl != NULL);
    }
}

/* JSON text of v, normalised the same way everywhere. */
static inline const char *jtext(json_object *v)
{
    return v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE)
             : "null";
}

/* Strictly parses test-written JSON; a test bug aborts. */
static inline json_object *jparse(const char *text)
{
    json_tokener *tok = json_tokener_new_ex(2000);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *v = json_tokener_parse_ex(tok, text, (int)strlen(text) + 1);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        printf("# bad JSON in test: %s\n", text);
        abort();
    }
    json_tokener_free(tok);
    return v;
}

/* ------------------------------------------------------------ recorder */

typedef struct rec rec;

/* One command's outcome, passed as the reply callback's userdata. */
typedef struct call {
    rec *r;
    int count;
    int status;
    uint64_t tag;      /* qmp_reply_tag() of the reply */
    uint64_t sent_tag; /* the tag returned when the command was sent */
    qmp_error err;
    bool has_err;
    json_object *ret; /* reference taken in the callback */
    char *text;       /* exact reply bytes, or NULL */
} call;

struct rec {
    strbuf log;
    int n_states;
    int n_events;
    int n_logs;
    qmp_session_state last_state;
    char last_log[512];
    /* Behaviour. */
    const char *send_on_ready; /* command sent from the READY callback */
    call ready_call;
    uint64_t ready_tag;
    int ready_rc;
    qmp_event *kept[16]; /* events kept with qmp_event_ref() */
    int n_kept;
    qmp_session **unref_in_event; /* unref *this in the event callback */
    qmp_session **unref_on_ready;
};

static inline void reply_cb(qmp_session *s, qmp_reply *reply, void *userdata)
{
    call *c = userdata;
    (void)s;
    c->count++;
    c->status = qmp_reply_status(reply);
    c->tag = qmp_reply_tag(reply);
    const qmp_error *e = qmp_reply_error(reply);
    c->has_err = e != NULL;
    if (e)
        c->err = *e;
    json_object_put(c->ret);
    c->ret = json_object_get(qmp_reply_return(reply));
    size_t n = 0;
    const char *t = qmp_reply_text(reply, &n);
    free(c->text);
    c->text = NULL;
    if (t) {
        c->text = malloc(n + 1);
        memcpy(c->text, t, n);
        c->text[n] = '\0';
    }
    if (c->r) {
        sb_add(&c->r->log, "reply status=%d", c->status);
        if (e)
            sb_add(&c->r->log, " class=%s desc=%s", e->class_name, e->message);
        if (c->status == 0)
            sb_add(&c->r->log, " ret=%s", jtext(c->ret));
        sb_add(&c->r->log, "\n");
    }
}

static inline void call_clear(call *c)
{
    json_object_put(c->ret);
    free(c->text);
    memset(c, 0, sizeof(*c));
}

static inline void state_cb(qmp_session *s, qmp_session_state state, void *userdata)
{
    rec *r = userdata;
    r->n_states++;
    r->last_state = state;
    sb_add(&r->log, "state %d\n", (int)state);
    if (state == QMP_SESSION_READY && r->send_on_ready) {
        r->ready_call.r = r;
        r->ready_rc = qmp_session_send_command(s, r->send_on_ready, NULL, 0, NULL, 0, reply_cb,
                                               &r->ready_call, &r->ready_tag, NULL);
    }
    if (state == QMP_SESSION_READY && r->unref_on_ready) {
        *r->unref_on_ready = qmp_session_unref(*r->unref_on_ready);
        r->unref_on_ready = NULL;
    }
}

static inline void event_cb(qmp_session *s, qmp_event *ev, void *userdata)
{
    rec *r = userdata;
    size_t n = 0;
    const char *text = qmp_event_text(ev, &n);
    (void)s;
    r->n_events++;
    sb_add(&r->log,
           "event %s %" PRId64 " %" PRId64 " has_data=%d data=%s text=", qmp_event_name(ev),
           qmp_event_seconds(ev), qmp_event_microseconds(ev), qmp_event_has_data(ev),
           jtext(qmp_event_data(ev)));
    sb_add_bytes(&r->log, text, n);
    sb_add(&r->log, "\n");
    if (r->n_kept < 16)
        r->kept[r->n_kept++] = qmp_event_ref(ev);
    if (r->unref_in_event) {
        *r->unref_in_event = qmp_session_unref(*r->unref_in_event);
        r->unref_in_event = NULL;
    }
}

static inline void log_cb(qmp_log_level level, const char *message, void *userdata)
{
    rec *r = userdata;
    (void)level;
    r->n_logs++;
    snprintf(r->last_log, sizeof(r->last_log), "%s", message);
}

static inline void rec_free(rec *r)
{
    for (int i = 0; i < r->n_kept; i++)
        qmp_event_unref(r->kept[i]);
    call_clear(&r->ready_call);
    sb_free(&r->log);
    memset(r, 0, sizeof(*r));
}

static inline qmp_session *new_session(rec *r)
{
    qmp_session *s = NULL;
    if (qmp_session_new(&s) != 0 || s == NULL) {
        printf("# qmp_session_new failed\n");
        abort();
    }
    qmp_session_set_state_callback(s, state_cb, r);
    qmp_session_set_event_callback(s, event_cb, r);
    qmp_session_set_log(s, log_cb, QMP_LOG_DEBUG, r);
    return s;
}

/* ------------------------------------------------------------ output */

/* Everything the session wants to write, consumed. */
static inline char *drain_output(qmp_session *s)
{
    strbuf b = {0};
    sb_add(&b, "%s", "");
    for (int i = 0; i < 1000; i++) {
        size_t len = 0;
        const void *p = qmp_session_get_output(s, &len, NULL, NULL);
        if (p == NULL || len == 0)
            break;
        sb_add_bytes(&b, p, len);
        qmp_session_consume_output(s, len);
    }
    return b.s;
}

/* Splits drained output into requests: each must be one strict JSON
 * object ending in a newline.  Returns the count; *ret holds new
 * references. */
static inline int take_requests(qmp_session *s, json_object **ret, int max)
{
    char *out = drain_output(s);
    int n = 0;
    char *p = out;
    while (*p) {
        char *nl = strchr(p, '\n');
        if (nl == NULL) {
            HARNESS_FAIL_("output does not end in a newline: %s", p);
            break;
        }
        *nl = '\0';
        json_tokener *tok = json_tokener_new_ex(2000);
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        json_object *v = json_tokener_parse_ex(tok, p, (int)(nl - p) + 1);
        if (json_tokener_get_error(tok) != json_tokener_success ||
            !json_object_is_type(v, json_type_object)) {
            HARNESS_FAIL_("output is not one JSON object per line: %s", p);
            json_object_put(v);
        } else if (n < max) {
            ret[n++] = v;
        } else {
            HARNESS_FAIL_("more than %d requests in the output", max);
            json_object_put(v);
        }
        json_tokener_free(tok);
        p = nl + 1;
    }
    free(out);
    return n;
}

/* The one request in the output (new reference), or NULL (recorded as a
 * failure) when there is not exactly one. */
static inline json_object *take_request(qmp_session *s)
{
    json_object *reqs[8];
    int n = take_requests(s, reqs, 8);
    if (n != 1) {
        HARNESS_FAIL_("expected one request in the output, found %d", n);
        for (int i = 0; i < n; i++)
            json_object_put(reqs[i]);
        return NULL;
    }
    return reqs[0];
}

static inline const char *req_command(json_object *req)
{
    json_object *c = NULL;
    if (!json_object_object_get_ex(req, "execute", &c) &&
        !json_object_object_get_ex(req, "exec-oob", &c))
        return NULL;
    return json_object_get_string(c);
}

/* "{BODY, "id": ID}\r\n" for request req (malloc'd). */
static inline char *reply_to(json_object *req, const char *body)
{
    json_object *id = NULL;
    strbuf b = {0};
    if (req != NULL && json_object_object_get_ex(req, "id", &id))
        sb_add(&b, "{%s, \"id\": %s}\r\n", body, jtext(id));
    else
        sb_add(&b, "{%s}\r\n", body);
    return b.s;
}

static inline int feed_str(qmp_session *s, const char *text, qmp_error *err)
{
    return qmp_session_feed(s, text, strlen(text), err);
}

/* Feeds a reply to req and frees it. */
static inline int feed_reply(qmp_session *s, json_object *req, const char *body, qmp_error *err)
{
    char *t = reply_to(req, body);
    int r = feed_str(s, t, err);
    free(t);
    return r;
}

/* A session driven to READY (greeting with oob, default negotiation). */
static inline qmp_session *ready_session(rec *r)
{
    qmp_session *s = new_session(r);
    qmp_error err = QMP_ERROR_INIT;
    if (feed_str(s, GREETING, &err) != 0)
        HARNESS_FAIL_("greeting refused: %s", err.message);
    json_object *caps = take_request(s);
    if (caps == NULL || req_command(caps) == NULL ||
        strcmp(req_command(caps), "qmp_capabilities") != 0)
        HARNESS_FAIL_("no qmp_capabilities request after the greeting");
    if (feed_reply(s, caps, "\"return\": {}", &err) != 0)
        HARNESS_FAIL_("capabilities reply refused: %s", err.message);
    json_object_put(caps);
    if (qmp_session_get_state(s) != QMP_SESSION_READY)
        HARNESS_FAIL_("session not READY after negotiation");
    return s;
}

/* Sends a command with no arguments; returns its request (new reference). */
static inline json_object *send_cmd(qmp_session *s, const char *name, call *c)
{
    uint64_t tag = 0;
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_session_send_command(s, name, NULL, 0, NULL, 0, reply_cb, c, &tag, &err);
    if (r != 0) {
        HARNESS_FAIL_("send_command(%s) failed: %d %s", name, r, err.message);
        return NULL;
    }
    c->sent_tag = tag;
    return take_request(s);
}

#endif /* QMP_TEST_SESSION_UTIL_H */
