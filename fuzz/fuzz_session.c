/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the sans-I/O core: the input is what "QEMU" sends.
 *
 * All of the input is fed to a qmp_session, so real transcripts (and the
 * seed corpus) are valid inputs as they are.  The settings and the points
 * where the input is split into feeds are derived from a hash of its
 * first bytes and its length:
 *   - oob wanted or not; sometimes a small message size cap, sometimes a
 *     small nesting limit;
 *   - on READY the target sends a few commands (plain, with arguments,
 *     exec-oob when negotiated, raw with its own id and without id) and
 *     sometimes cancels one; replies trigger a few more commands;
 *   - output is consumed in pieces after every feed.
 *
 * Properties checked besides "no crash, no leak, no sanitizer report":
 *   - every accepted command gets exactly one reply callback, with its
 *     tag, by the time the session is gone;
 *   - a failed feed leaves the session FAILED with that sticky error,
 *     and later calls return it;
 *   - the outcome does not depend on how the input was split: the
 *     callbacks, traces (which include every request queued) and final
 *     error of the split run equal those of a run that feeds everything
 *     at once (output not yet taken when the session fails may be
 *     dropped, so the output itself is not compared);
 *   - an event kept with qmp_event_ref() outlives the session.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include <json-c/json.h>

#include "fuzz.h"
#include "qmp/qmp.h"

#define MAX_SENT 16

typedef struct run {
    fuzz_rng cfg; /* decisions taken in callbacks: same in both runs */
    bool whole;   /* feed everything at once */
    uint64_t tags[MAX_SENT];
    unsigned replies[MAX_SENT];
    unsigned n_sent;
    unsigned extra_budget; /* commands still allowed from reply callbacks */
    size_t out_len;        /* output consumed so far */
    qmp_event *kept;
    /* Fingerprint of everything observable, and a readable prefix of it. */
    uint64_t fp;
    char log[2048];
    size_t log_len;
} run;

static void note(run *r, const char *fmt, ...) QMP_PRINTF(2, 3);

static void note(run *r, const char *fmt, ...)
{
    char buf[256];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(buf))
        n = sizeof(buf) - 1;
    r->fp = fuzz_hash(r->fp, buf, (size_t)n + 1);
    if (r->log_len + (size_t)n + 2 < sizeof(r->log)) {
        memcpy(r->log + r->log_len, buf, (size_t)n);
        r->log_len += (size_t)n;
        r->log[r->log_len++] = '\n';
        r->log[r->log_len] = '\0';
    }
}

static void on_log(qmp_log_level level, const char *message, void *userdata)
{
    (void)userdata;
    FUZZ_CHECK(level >= QMP_LOG_ERROR && level <= QMP_LOG_DEBUG, "bad log level %d", level);
    FUZZ_CHECK(message != NULL && strlen(message) < 65536, "bad log message");
}

static void on_trace(qmp_trace_direction dir, const char *data, size_t len, void *userdata)
{
    run *r = userdata;
    note(r, "trace %d %zu %016llx", (int)dir, len,
         (unsigned long long)fuzz_hash(FUZZ_HASH_INIT, data, len));
}

static unsigned slot_of(run *r, uint64_t tag)
{
    for (unsigned i = 0; i < r->n_sent; i++) {
        if (r->tags[i] == tag)
            return i;
    }
    return MAX_SENT;
}

static void on_reply(qmp_session *s, qmp_reply *reply, void *userdata);

static void remember(run *r, int ret, uint64_t tag, const char *what)
{
    note(r, "send %s -> %d", what, ret);
    if (ret < 0)
        return;
    FUZZ_CHECK(slot_of(r, tag) == MAX_SENT, "tag %llu reused", (unsigned long long)tag);
    FUZZ_CHECK(r->n_sent < MAX_SENT, "too many commands");
    r->tags[r->n_sent] = tag;
    r->replies[r->n_sent] = 0;
    r->n_sent++;
}

static void send_some(qmp_session *s, run *r)
{
    qmp_error err;
    uint64_t tag = 0;
    int ret;

    ret = qmp_session_send_command(s, "query-status", NULL, 0, NULL, 0, on_reply, r, &tag, &err);
    remember(r, ret, tag, "query-status");

    json_object *args = json_object_new_object();
    FUZZ_CHECK(args != NULL, "out of memory");
    json_object_object_add(args, "id", json_object_new_string("disk\"0\n"));
    ret = qmp_session_send_command(s, "device_del", args, 0, NULL, 0, on_reply, r, &tag, &err);
    json_object_put(args);
    remember(r, ret, tag, "device_del");

    ret = qmp_session_send_command(s, "migrate-pause", NULL, QMP_EXEC_OOB, NULL, 0, on_reply, r,
                                   &tag, &err);
    FUZZ_CHECK(ret == 0 || !qmp_session_oob_enabled(s), "exec-oob refused with oob: %d", ret);
    remember(r, ret, tag, "migrate-pause");

    /* Raw requests: one with the caller's own id, one without. */
    json_object *raw = json_object_new_object();
    FUZZ_CHECK(raw != NULL, "out of memory");
    json_object_object_add(raw, "execute", json_object_new_string("query-name"));
    json_object_object_add(raw, "id", json_object_new_int(7));
    ret = qmp_session_send_raw(s, raw, NULL, 0, on_reply, r, &tag, &err);
    remember(r, ret, tag, "raw id 7");
    /* The same id again while the first is pending is refused. */
    if (ret == 0) {
        int again = qmp_session_send_raw(s, raw, NULL, 0, on_reply, r, NULL, &err);
        FUZZ_CHECK(again == -EEXIST, "duplicate raw id accepted: %d", again);
    }
    json_object_put(raw);

    raw = json_object_new_object();
    FUZZ_CHECK(raw != NULL, "out of memory");
    json_object_object_add(raw, "execute", json_object_new_string("query-kvm"));
    ret = qmp_session_send_raw(s, raw, NULL, 0, on_reply, r, &tag, &err);
    json_object_put(raw);
    remember(r, ret, tag, "raw without id");

    /* Sometimes give up on one at once. */
    if (r->n_sent > 0 && fuzz_rng_below(&r->cfg, 4) == 0) {
        uint64_t victim = r->tags[fuzz_rng_below(&r->cfg, r->n_sent)];
        int c = qmp_session_cancel(s, victim, NULL);
        note(r, "cancel %llu -> %d", (unsigned long long)victim, c);
    }
}

static void on_reply(qmp_session *s, qmp_reply *reply, void *userdata)
{
    run *r = userdata;
    uint64_t tag = qmp_reply_tag(reply);
    int status = qmp_reply_status(reply);
    const qmp_error *e = qmp_reply_error(reply);
    unsigned i = slot_of(r, tag);

    FUZZ_CHECK(i < MAX_SENT, "reply for unknown tag %llu", (unsigned long long)tag);
    r->replies[i]++;
    FUZZ_CHECK(r->replies[i] == 1, "second reply for tag %llu", (unsigned long long)tag);
    FUZZ_CHECK(status <= 0, "positive status %d", status);
    if (status == 0) {
        FUZZ_CHECK(e == NULL, "error details on success");
    } else {
        FUZZ_CHECK(e != NULL && e->code == status, "error details do not match %d", status);
        FUZZ_CHECK(memchr(e->message, '\0', sizeof(e->message)) != NULL, "unterminated message");
    }
    note(r, "reply %llu %d %d %s", (unsigned long long)tag, status, e ? (int)e->category : 0,
         e ? e->class_name : "");

    size_t len = 0;
    const char *text = qmp_reply_text(reply, &len);
    if (text != NULL) {
        json_object *whole = qmp_reply_to_json(reply);
        FUZZ_CHECK(json_object_is_type(whole, json_type_object), "reply is not an object");
        json_object_put(whole);
    }
    if (status == 0) {
        json_object *v = NULL;
        json_object *borrowed = qmp_reply_return(reply);
        FUZZ_CHECK(qmp_reply_get_return(reply, &v) == 0, "get_return failed on success");
        FUZZ_CHECK(json_object_equal(v, borrowed), "get_return and return differ");
        note(r, "return %s",
             v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null");
        json_object_put(v);
    } else {
        json_object *v = NULL;
        FUZZ_CHECK(qmp_reply_return(reply) == NULL, "return value on failure");
        FUZZ_CHECK(qmp_reply_get_return(reply, &v) == status, "get_return on failure");
    }

    /* A callback may send more, as long as the session is READY. */
    if (r->extra_budget > 0 && qmp_session_get_state(s) == QMP_SESSION_READY &&
        fuzz_rng_below(&r->cfg, 2) == 0) {
        uint64_t t = 0;
        qmp_error err;
        r->extra_budget--;
        int ret =
            qmp_session_send_command(s, "query-version", NULL, 0, NULL, 0, on_reply, r, &t, &err);
        remember(r, ret, t, "query-version");
    }
}

static void on_event(qmp_session *s, qmp_event *ev, void *userdata)
{
    run *r = userdata;
    size_t len = 0;
    const char *text = qmp_event_text(ev, &len);

    (void)s;
    FUZZ_CHECK(text != NULL && text[len] == '\0', "event text not terminated");
    json_object *data = qmp_event_data(ev);
    json_object *whole = qmp_event_to_json(ev);
    FUZZ_CHECK(json_object_is_type(whole, json_type_object), "event is not an object");
    FUZZ_CHECK(qmp_event_has_data(ev) || data == NULL, "data without a data member");
    note(r, "event %s %lld %lld %d %s", qmp_event_name(ev), (long long)qmp_event_seconds(ev),
         (long long)qmp_event_microseconds(ev), qmp_event_has_data(ev),
         data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "-");
    json_object_put(whole);
    if (r->kept == NULL)
        r->kept = qmp_event_ref(ev);
}

static void on_state(qmp_session *s, qmp_session_state state, void *userdata)
{
    run *r = userdata;
    qmp_error err;

    note(r, "state %d", (int)state);
    switch (state) {
    case QMP_SESSION_NEGOTIATING: {
        const qmp_greeting *g = qmp_session_get_greeting(s);
        int major = -1, minor = -1, micro = -1;
        FUZZ_CHECK(g != NULL, "no greeting while negotiating");
        qmp_greeting_version(g, &major, &minor, &micro);
        json_object *j = qmp_greeting_json(g);
        note(r, "greeting %d.%d.%d %s oob=%d %s", major, minor, micro, qmp_greeting_package(g),
             qmp_greeting_has_capability(g, "oob"),
             j ? json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN) : "-");
        break;
    }
    case QMP_SESSION_READY:
        send_some(s, r);
        break;
    case QMP_SESSION_FAILED: {
        int code = qmp_session_get_error(s, &err);
        FUZZ_CHECK(code < 0 && err.code == code, "FAILED without an error");
        note(r, "failed %d %d %s", code, (int)err.category, err.message);
        break;
    }
    default:
        break;
    }
}

static void drain(qmp_session *s, run *r, fuzz_rng *split)
{
    size_t len;
    const void *out;

    while ((out = qmp_session_get_output(s, &len, NULL, NULL)) != NULL) {
        FUZZ_CHECK(len > 0, "empty output chunk");
        /* Consume a prefix, as a short write would. */
        size_t n = r->whole ? len : 1 + fuzz_rng_below(split, (uint32_t)(len < 4096 ? len : 4096));
        if (n > len)
            n = len;
        FUZZ_CHECK(((const char *)out)[0] == '{' || r->out_len > 0, "output starts mid-message");
        r->out_len += n;
        qmp_session_consume_output(s, n);
    }
}

static void one_run(run *r, const uint8_t *data, size_t size, uint32_t seed)
{
    qmp_session *s = NULL;
    qmp_error err;
    fuzz_rng split;
    int ret;

    fuzz_rng_seed(&r->cfg, seed);
    fuzz_rng_seed(&split, seed ^ 0x5bd1e995u);
    r->fp = FUZZ_HASH_INIT;
    r->extra_budget = 4;

    FUZZ_CHECK(qmp_session_new(&s) == 0, "qmp_session_new failed");
    uint32_t opts = fuzz_rng_next(&r->cfg);
    if (opts & 1)
        FUZZ_CHECK(qmp_session_set_want_oob(s, 1) == 0, "set_want_oob failed");
    if ((opts & 6) == 0)
        FUZZ_CHECK(qmp_session_set_max_message_size(s, 256 + (opts >> 8) % 4096) == 0,
                   "set_max_message_size failed");
    if ((opts & 0x38) == 0)
        FUZZ_CHECK(qmp_session_set_max_depth(s, 1 + (opts >> 20) % 16) == 0,
                   "set_max_depth failed");
    qmp_session_set_log(s, on_log, QMP_LOG_DEBUG, r);
    qmp_session_set_trace(s, on_trace, r);
    qmp_session_set_state_callback(s, on_state, r);
    qmp_session_set_event_callback(s, on_event, r);

    size_t pos = 0;
    ret = 0;
    while (pos < size) {
        size_t n = size - pos;
        if (!r->whole) {
            /* Mostly small pieces, sometimes single bytes, sometimes the rest. */
            switch (fuzz_rng_below(&split, 4)) {
            case 0:
                n = 1;
                break;
            case 1:
                n = 1 + fuzz_rng_below(&split, 16);
                break;
            case 2:
                n = 1 + fuzz_rng_below(&split, 512);
                break;
            default:
                break;
            }
            if (n > size - pos)
                n = size - pos;
        }
        ret = qmp_session_feed(s, data + pos, n, &err);
        drain(s, r, &split);
        pos += n;
        if (ret < 0) {
            FUZZ_CHECK(err.code == ret, "feed returned %d, err.code %d", ret, err.code);
            FUZZ_CHECK(qmp_session_get_state(s) == QMP_SESSION_FAILED, "failed but not FAILED");
            FUZZ_CHECK(qmp_session_get_error(s, NULL) == ret, "error not sticky");
            break;
        }
    }
    if (ret < 0) {
        /* Sticky: more input changes nothing. */
        int again = qmp_session_feed(s, "{}", 2, NULL);
        FUZZ_CHECK(again == ret, "error changed from %d to %d", ret, again);
    }
    ret = qmp_session_feed_eof(s, &err);
    FUZZ_CHECK(ret < 0 && err.code == ret, "feed_eof returned %d", ret);
    FUZZ_CHECK(qmp_session_get_state(s) == QMP_SESSION_FAILED, "not FAILED after end of file");
    FUZZ_CHECK(qmp_session_pending_count(s) == 0, "commands pending after end of file");
    FUZZ_CHECK(qmp_session_send_command(s, "stop", NULL, 0, NULL, 0, NULL, NULL, NULL, NULL) < 0,
               "command accepted after end of file");
    note(r, "end %d %d", ret, (int)err.category);
    drain(s, r, &split);
    qmp_session_unref(s);

    for (unsigned i = 0; i < r->n_sent; i++)
        FUZZ_CHECK(r->replies[i] == 1, "tag %llu got %u replies", (unsigned long long)r->tags[i],
                   r->replies[i]);
    /* The kept event is still readable without its session. */
    if (r->kept != NULL) {
        size_t len;
        const char *t = qmp_event_text(r->kept, &len);
        FUZZ_CHECK(t != NULL && strlen(qmp_event_name(r->kept)) < len, "kept event damaged");
        r->kept = qmp_event_unref(r->kept);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static run split_run, whole_run;

    uint64_t h = fuzz_hash(FUZZ_HASH_INIT, data, size < 8 ? size : 8);
    h = fuzz_hash(h, &size, sizeof(size));
    uint32_t seed = (uint32_t)(h ^ (h >> 32));

    memset(&split_run, 0, sizeof(split_run));
    memset(&whole_run, 0, sizeof(whole_run));
    whole_run.whole = true;
    one_run(&split_run, data, size, seed);
    one_run(&whole_run, data, size, seed);
    FUZZ_CHECK(split_run.fp == whole_run.fp,
               "the outcome depends on how the input was split\n--- split:\n%s--- whole:\n%s",
               split_run.log, whole_run.log);
    return 0;
}
