/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the sans-I/O core (qmp_session) fed with byte strings: framing
 * at every split point, routing by shape, negotiation, failures and their
 * stickiness, ids, cancellation, raw requests, descriptors, and the
 * accessors of greetings, events and replies.
 *
 * The core has no clocks and no randomness, so two fresh sessions driven
 * with the same bytes assign the same ids; the transcript tests rely on
 * that (and check it) to prepare replies before the requests exist.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "session-util.h"

/* ---------------------------------------------------------- transcript */

typedef struct transcript {
    char *text;
    size_t len;
    char *expected_log;
    char *output; /* what the session writes: caps request and command */
} transcript;

static const char *const EV_EARLY = "{\"event\": \"EARLY\", \"timestamp\": "
                                    "{\"seconds\": 1, \"microseconds\": 2}}";
static const char *const EV_MIDNEG = "{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, "
                                     "\"event\": \"MIDNEG\", \"data\": {\"s\": \"{\\\"}[\"}}";
static const char *const EV_STOP = "{\"timestamp\": {\"seconds\": 5, \"microseconds\": 6}, "
                                   "\"event\": \"STOP\"}";
static const char *const EV_RESUME = "{\"event\": \"RESUME\", \"data\": {\"n\": -1}, "
                                     "\"timestamp\": {\"seconds\": -1, \"microseconds\": -1}}";
static const char *const PRETTY_LINES[] = {
    "{",
    "    \"timestamp\": {",
    "        \"seconds\": 7,",
    "        \"microseconds\": 8",
    "    },",
    "    \"event\": \"PRETTY\",",
    "    \"data\": {",
    "        \"a\": [",
    "            1,",
    "            \"x\\\"}\\\\\"",
    "        ]",
    "    }",
    "}",
};
static const char *const CMD_RETURN = "{\"status\": \"running\", \"singlestep\": false, "
                                      "\"running\": true, \"s\": \"}{\\\"\\\\\"}";

static char *pretty_event(const char *eol)
{
    strbuf b = {0};
    for (size_t i = 0; i < sizeof(PRETTY_LINES) / sizeof(PRETTY_LINES[0]); i++)
        sb_add(&b, "%s%s", i ? eol : "", PRETTY_LINES[i]);
    return b.s;
}

static void expect_event(strbuf *log, const char *name, int sec, int usec, const char *data,
                         const char *text)
{
    json_object *d = data ? jparse(data) : NULL;
    sb_add(log, "event %s %d %d has_data=%d data=%s text=%s\n", name, sec, usec, data != NULL,
           jtext(d), text);
    json_object_put(d);
}

/* Learns the ids a fresh session assigns, then builds the transcript. */
static void make_transcript(transcript *t, const char *eol)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    strbuf pre = {0};
    char *pretty = pretty_event(eol);
    memset(t, 0, sizeof(*t));
    r.send_on_ready = "query-status";
    qmp_session *s = new_session(&r);

    sb_add(&pre, "%s%s%.*s%s", EV_EARLY, eol, (int)strlen(GREETING) - 2, GREETING, eol);
    CHECK_EQ_INT(qmp_session_feed(s, pre.s, pre.len, &err), 0);
    char *caps_out = drain_output(s);
    json_object *caps = jparse(caps_out);
    char *caps_reply = reply_to(caps, "\"return\": {}");
    caps_reply[strlen(caps_reply) - 2] = '\0';
    strbuf mid = {0};
    sb_add(&mid, "%s%s%s%s", EV_MIDNEG, eol, caps_reply, eol);
    CHECK_EQ_INT(qmp_session_feed(s, mid.s, mid.len, &err), 0);
    CHECK_EQ_INT(r.ready_rc, 0);
    char *cmd_out = drain_output(s);
    json_object *cmd = jparse(cmd_out);
    strbuf body = {0};
    sb_add(&body, "\"return\": %s", CMD_RETURN);
    char *cmd_reply = reply_to(cmd, body.s);
    cmd_reply[strlen(cmd_reply) - 2] = '\0';

    strbuf all = {0};
    sb_add(&all, "%s%s%s%s%s%s%s%s%s%s", pre.s, mid.s, EV_STOP, eol, pretty, eol, cmd_reply, eol,
           EV_RESUME, eol);
    t->text = all.s;
    t->len = all.len;
    strbuf out = {0};
    sb_add(&out, "%s%s", caps_out, cmd_out);
    t->output = out.s;

    strbuf log = {0};
    expect_event(&log, "EARLY", 1, 2, NULL, EV_EARLY);
    sb_add(&log, "state %d\n", QMP_SESSION_NEGOTIATING);
    expect_event(&log, "MIDNEG", 3, 4, "{\"s\": \"{\\\"}[\"}", EV_MIDNEG);
    sb_add(&log, "state %d\n", QMP_SESSION_READY);
    expect_event(&log, "STOP", 5, 6, NULL, EV_STOP);
    expect_event(&log, "PRETTY", 7, 8, "{\"a\": [1, \"x\\\"}\\\\\"]}", pretty);
    json_object *ret = jparse(CMD_RETURN);
    sb_add(&log, "reply status=0 ret=%s\n", jtext(ret));
    json_object_put(ret);
    expect_event(&log, "RESUME", -1, -1, "{\"n\": -1}", EV_RESUME);
    t->expected_log = log.s;

    free(caps_out);
    free(cmd_out);
    free(caps_reply);
    free(cmd_reply);
    free(pretty);
    json_object_put(caps);
    json_object_put(cmd);
    sb_free(&pre);
    sb_free(&mid);
    sb_free(&body);
    qmp_session_unref(s);
    rec_free(&r);
}

static void free_transcript(transcript *t)
{
    free(t->text);
    free(t->expected_log);
    free(t->output);
}

/* Feeds the transcript in pieces: split at cut (two pieces), or byte by
 * byte when cut is SIZE_MAX.  Returns 1 when callbacks and output were as
 * expected. */
static int run_transcript(const transcript *t, size_t cut)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    int ok = 1;
    r.send_on_ready = "query-status";
    qmp_session *s = new_session(&r);
    if (cut == SIZE_MAX) {
        for (size_t i = 0; i < t->len && ok; i++)
            ok = qmp_session_feed(s, t->text + i, 1, &err) == 0;
    } else {
        ok = qmp_session_feed(s, t->text, cut, &err) == 0 &&
             qmp_session_feed(s, t->text + cut, t->len - cut, &err) == 0;
    }
    char *out = drain_output(s);
    if (!ok) {
        HARNESS_FAIL_("cut %zu: feed failed: %s", cut, err.message);
    } else if (strcmp(sb_str(&r.log), t->expected_log) != 0) {
        HARNESS_FAIL_("cut %zu: callbacks differ", cut);
        tap_dump("got", sb_str(&r.log));
        tap_dump("want", t->expected_log);
        ok = 0;
    } else if (strcmp(out, t->output) != 0) {
        HARNESS_FAIL_("cut %zu: output differs (ids not deterministic?)", cut);
        tap_dump("got", out);
        tap_dump("want", t->output);
        ok = 0;
    } else if (r.ready_call.count != 1 || r.ready_call.tag != r.ready_tag) {
        HARNESS_FAIL_("cut %zu: reply callback count %d", cut, r.ready_call.count);
        ok = 0;
    }
    free(out);
    qmp_session_unref(s);
    rec_free(&r);
    return ok;
}

static void check_all_splits(const char *eol)
{
    transcript t;
    make_transcript(&t, eol);
    REQUIRE(run_transcript(&t, t.len));
    for (size_t cut = 0; cut <= t.len; cut++) {
        if (!run_transcript(&t, cut))
            break;
    }
    run_transcript(&t, SIZE_MAX);
    free_transcript(&t);
}

TEST(transcript_every_split_crlf)
{
    check_all_splits("\r\n");
}

TEST(transcript_every_split_lf)
{
    check_all_splits("\n");
}

TEST(transcript_every_split_no_separator)
{
    check_all_splits("");
}

TEST(message_routed_at_closing_brace)
{
    /* A complete message is routed before its line end arrives. */
    rec r = {0};
    qmp_session *s = new_session(&r);
    CHECK_EQ_INT(qmp_session_feed(s, GREETING, strlen(GREETING) - 2, NULL), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_NEGOTIATING);
    CHECK(qmp_session_get_greeting(s) != NULL);
    CHECK_EQ_INT(qmp_session_feed(s, "\r\n", 2, NULL), 0);
    CHECK_EQ_INT(r.n_states, 1);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(many_messages_in_one_feed)
{
    rec r = {0};
    call c = {.r = &r};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "cont", &c);
    strbuf b = {0};
    for (int i = 0; i < 300; i++)
        sb_add(&b,
               "{\"event\": \"E\", \"data\": {\"seq\": %d}, \"timestamp\": {\"seconds\": %d, "
               "\"microseconds\": 0}}\r\n",
               i, i);
    char *rep = reply_to(req, "\"return\": {}");
    sb_add(&b, "%s", rep);
    for (int i = 300; i < 310; i++)
        sb_add(&b,
               "{\"event\": \"E\", \"data\": {\"seq\": %d}, \"timestamp\": {\"seconds\": %d, "
               "\"microseconds\": 0}}\n",
               i, i);
    r.log.len = 0;
    CHECK_EQ_INT(qmp_session_feed(s, b.s, b.len, NULL), 0);
    CHECK_EQ_INT(r.n_events, 310);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, 0);
    /* Order: events 0..299, the reply, events 300..309. */
    const char *p = sb_str(&r.log);
    int seq = 0, reply_seen = 0;
    for (const char *line = p; *line; line = strchr(line, '\n') + 1) {
        if (strncmp(line, "reply", 5) == 0) {
            CHECK_EQ_INT(seq, 300);
            reply_seen = 1;
        } else {
            char want[32];
            snprintf(want, sizeof(want), "{\"seq\":%d}", seq);
            const char *d = strstr(line, " data=");
            if (d == NULL || strncmp(d + 6, want, strlen(want)) != 0) {
                HARNESS_FAIL_("event %d out of order: %.60s", seq, line);
                break;
            }
            seq++;
        }
    }
    CHECK(reply_seen);
    free(rep);
    sb_free(&b);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(events_between_command_and_reply)
{
    rec r = {0};
    call c = {.r = &r};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "stop", &c);
    r.log.len = 0;
    CHECK_EQ_INT(feed_str(s,
                          "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, "
                          "\"microseconds\": 0}}\r\n",
                          NULL),
                 0);
    CHECK_EQ_INT(c.count, 0);
    CHECK_EQ_INT(r.n_events, 1);
    CHECK_EQ_INT(feed_reply(s, req, "\"return\": {}", NULL), 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, 0);
    CHECK(strncmp(sb_str(&r.log), "event STOP", 10) == 0);
    CHECK(strstr(sb_str(&r.log), "\nreply status=0") != NULL);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(out_of_order_replies)
{
    rec r = {0};
    call c[4] = {{0}};
    json_object *req[4];
    const char *names[4] = {"a", "b", "c", "d"};
    qmp_session *s = ready_session(&r);
    for (int i = 0; i < 4; i++) {
        req[i] = send_cmd(s, names[i], &c[i]);
        REQUIRE(req[i] != NULL);
        CHECK_EQ_STR(req_command(req[i]), names[i]);
    }
    CHECK_EQ_INT(qmp_session_pending_count(s), 4);
    /* Distinct ids and tags. */
    for (int i = 0; i < 4; i++) {
        for (int j = i + 1; j < 4; j++) {
            json_object *a = NULL, *b = NULL;
            json_object_object_get_ex(req[i], "id", &a);
            json_object_object_get_ex(req[j], "id", &b);
            CHECK(!json_object_equal(a, b));
            CHECK(c[i].sent_tag != c[j].sent_tag);
        }
    }
    const int order[4] = {2, 0, 3, 1};
    for (int k = 0; k < 4; k++) {
        int i = order[k];
        char body[64];
        snprintf(body, sizeof(body), "\"return\": {\"which\": \"%s\"}", names[i]);
        CHECK_EQ_INT(feed_reply(s, req[i], body, NULL), 0);
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(qmp_session_pending_count(s), 3 - k);
    }
    for (int i = 0; i < 4; i++) {
        json_object *w = NULL;
        CHECK_EQ_INT(c[i].count, 1);
        CHECK(c[i].tag == c[i].sent_tag);
        CHECK(json_object_object_get_ex(c[i].ret, "which", &w));
        CHECK_EQ_STR(json_object_get_string(w), names[i]);
        json_object_put(req[i]);
        call_clear(&c[i]);
    }
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(unknown_id_dropped_and_logged)
{
    rec r = {0};
    call c = {0};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "query-status", &c);
    int logs = r.n_logs;
    CHECK_EQ_INT(feed_str(s, "{\"return\": {\"late\": true}, \"id\": \"nobody-42\"}\r\n", NULL), 0);
    CHECK_EQ_INT(feed_str(s, "{\"return\": 1, \"id\": \"libqmp:999999\"}\r\n", NULL), 0);
    CHECK_EQ_INT(feed_str(s,
                          "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}, "
                          "\"id\": 17}\r\n",
                          NULL),
                 0);
    CHECK(r.n_logs >= logs + 3);
    CHECK_EQ_INT(c.count, 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(qmp_session_pending_count(s), 1);
    CHECK_EQ_INT(feed_reply(s, req, "\"return\": {\"mine\": 1}", NULL), 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, 0);
    CHECK_EQ_STR(jtext(c.ret), "{\"mine\":1}");
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Checks that s FAILED with code and category, stickily. */
static void check_failed(qmp_session *s, int code, qmp_error_category cat)
{
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_FAILED);
    CHECK_EQ_INT(qmp_session_get_error(s, &err), code);
    CHECK_EQ_INT(err.code, code);
    CHECK_EQ_INT(err.category, cat);
    CHECK(err.message[0] != '\0');
    /* Sticky: later calls fail at once with the same error. */
    call c = {0};
    qmp_error e2 = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_session_send_command(s, "x", NULL, 0, NULL, 0, reply_cb, &c, NULL, &e2), code);
    CHECK_EQ_INT(e2.category, cat);
    CHECK_EQ_INT(c.count, 0);
    e2 = (qmp_error)QMP_ERROR_INIT;
    CHECK_EQ_INT(feed_str(s, "{\"event\": \"LATE\"}\r\n", &e2), code);
    CHECK_EQ_INT(e2.code, code);
    CHECK_EQ_INT(feed_str(s, "", NULL), code);
    CHECK_EQ_INT(qmp_session_feed_eof(s, NULL), code);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_FAILED);
}

/* Feeds bad into a READY session with two commands pending and checks
 * the failure, and that each pending command heard about it once. */
static void check_protocol_failure(const char *bad, size_t len, int code, qmp_error_category cat,
                                   unsigned max_depth)
{
    rec r = {0};
    call c[2] = {{0}};
    qmp_session *s = ready_session(&r);
    if (max_depth)
        CHECK_EQ_INT(qmp_session_set_max_depth(s, max_depth), 0);
    json_object *a = send_cmd(s, "a", &c[0]);
    json_object *b = send_cmd(s, "b", &c[1]);
    int states = r.n_states;
    qmp_error err = QMP_ERROR_INIT;
    int rc = qmp_session_feed(s, bad, len, &err);
    char pb[100];
    if (rc != code)
        HARNESS_FAIL_("feeding <%s> gave %d, want %d (%s)", printable(bad, pb, sizeof(pb)), rc,
                      code, err.message);
    CHECK_EQ_INT(err.code, code);
    CHECK_EQ_INT(err.category, cat);
    CHECK(err.message[0] != '\0');
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(c[i].status, code);
        CHECK(c[i].has_err);
        CHECK_EQ_INT(c[i].err.category, cat);
        CHECK(c[i].text == NULL);
    }
    CHECK_EQ_INT(r.n_states, states + 1);
    CHECK_EQ_INT(r.last_state, QMP_SESSION_FAILED);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    check_failed(s, code, cat);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        call_clear(&c[i]);
    }
    json_object_put(a);
    json_object_put(b);
    qmp_session_unref(s);
    rec_free(&r);
}

#define PROTO_FAIL(str) check_protocol_failure(str, sizeof(str) - 1, -EPROTO, QMP_ERR_PROTOCOL, 0)

TEST(idless_error_is_protocol_error)
{
    PROTO_FAIL("{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, "
               "invalid keyword 'foo'\"}}\r\n");
}

TEST(reply_without_return_or_error)
{
    rec r = {0};
    call c = {0};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "a", &c);
    char *t = reply_to(req, "\"surprise\": \"raw-marker-123\"");
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(feed_str(s, t, &err), -EPROTO);
    CHECK_EQ_INT(err.category, QMP_ERR_PROTOCOL);
    CHECK_CONTAINS(err.message, "raw-marker-123");
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, -EPROTO);
    check_failed(s, -EPROTO, QMP_ERR_PROTOCOL);
    free(t);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(non_object_messages)
{
    PROTO_FAIL("[1, 2]\r\n");
    PROTO_FAIL("\"a string\"\r\n");
    PROTO_FAIL("42\r\n");
    PROTO_FAIL("null\r\n");
    PROTO_FAIL("hello\r\n");
    PROTO_FAIL("}\r\n");
}

TEST(malformed_json)
{
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": }}\r\n");
    PROTO_FAIL("{\"event\" \"X\"}\r\n");
    PROTO_FAIL("{'event': 'X'}\r\n");
    PROTO_FAIL("{\"event\": \"X\",}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": 01}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\\q\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\\u0000\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\\ud800\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"tab\there\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\"}}\r\n");
    PROTO_FAIL("{\"event\": 5}\r\n");
    PROTO_FAIL("{\"return\": {}, \"id\": \"libqmp:1\"] \r\n");
}

TEST(invalid_utf8)
{
    /* Overlong "/", a UTF-16 surrogate, a truncated sequence, a stray
     * continuation byte, beyond U+10FFFF; in names, values and keys. */
    PROTO_FAIL("{\"event\": \"A\xc0\xaf\"}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\xe0\x80\xaf\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\xed\xa0\x80\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\xe2\x82\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"\xe2\x82\": 1}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\x80\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\xf4\x90\x80\x80\"}}\r\n");
    PROTO_FAIL("{\"event\": \"X\", \"data\": {\"a\": \"\xff\"}}\r\n");
}

static char *deep_event(unsigned depth)
{
    /* {"event": "D", "data": {"a": {"a": ... }}}: the top object is level
     * 1, data level 2. */
    strbuf b = {0};
    sb_add(&b, "{\"event\": \"D\", \"data\": ");
    for (unsigned i = 1; i < depth; i++)
        sb_add(&b, "{\"a\": ");
    sb_add(&b, "1");
    for (unsigned i = 1; i < depth; i++)
        sb_add(&b, "}");
    sb_add(&b, "}\r\n");
    return b.s;
}

TEST(nesting_limit)
{
    rec r = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_depth(s, 0), -EINVAL);
    CHECK_EQ_INT(qmp_session_set_max_depth(s, 100001), -EINVAL);
    CHECK_EQ_INT(qmp_session_set_max_depth(s, 100000), 0);
    CHECK_EQ_INT(qmp_session_set_max_depth(s, 8), 0);
    char *ok = deep_event(8);
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(feed_str(s, ok, &err), 0);
    CHECK_EQ_INT(r.n_events, 1);
    CHECK(r.n_kept == 1 && qmp_event_data(r.kept[0]) != NULL);
    free(ok);
    rec_free(&r);
    qmp_session_unref(s);

    /* One level more fails the session. */
    char *deep = deep_event(9);
    check_protocol_failure(deep, strlen(deep), -EMSGSIZE, QMP_ERR_LIMIT, 8);
    free(deep);
    /* Very deep input must not recurse without bound (default limit). */
    deep = deep_event(200000);
    check_protocol_failure(deep, strlen(deep), -EMSGSIZE, QMP_ERR_LIMIT, 0);
    free(deep);
}

/* {"event": "BIG", "data": {"s": "aaa..."}} of exactly size bytes. */
static char *sized_event(size_t size)
{
    const char *head = "{\"event\": \"BIG\", \"data\": {\"s\": \"";
    const char *tail = "\"}}";
    size_t h = strlen(head), t = strlen(tail);
    char *s = malloc(size + 3);
    memcpy(s, head, h);
    memset(s + h, 'a', size - h - t);
    memcpy(s + size - t, tail, t);
    memcpy(s + size, "\r\n", 3);
    return s;
}

static qmp_session *limited_session(rec *r, size_t limit)
{
    qmp_session *s = ready_session(r);
    CHECK_EQ_INT(qmp_session_set_max_message_size(s, 255), -EINVAL);
    CHECK_EQ_INT(qmp_session_set_max_message_size(s, 256), 0);
    CHECK_EQ_INT(qmp_session_set_max_message_size(s, limit), 0);
    return s;
}

TEST(message_size_limit)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = limited_session(&r, 1024);
    char *m = sized_event(1024);
    CHECK_EQ_INT(feed_str(s, m, &err), 0);
    CHECK_EQ_INT(r.n_events, 1);
    free(m);
    qmp_session_unref(s);
    rec_free(&r);

    /* One byte over. */
    s = limited_session(&r, 1024);
    call c = {0};
    json_object *req = send_cmd(s, "a", &c);
    m = sized_event(1025);
    CHECK_EQ_INT(feed_str(s, m, &err), -EMSGSIZE);
    CHECK_EQ_INT(err.category, QMP_ERR_LIMIT);
    CHECK_EQ_INT(r.n_events, 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, -EMSGSIZE);
    check_failed(s, -EMSGSIZE, QMP_ERR_LIMIT);
    free(m);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);

    /* An unfinished message fails as soon as it is too long, without
     * waiting for its end. */
    s = limited_session(&r, 1024);
    err = (qmp_error)QMP_ERROR_INIT;
    CHECK_EQ_INT(feed_str(s, "{\"event\": \"BIG\", \"data\": \"", NULL), 0);
    char chunk[512];
    memset(chunk, 'b', sizeof(chunk));
    int rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = qmp_session_feed(s, chunk, sizeof(chunk), &err);
    CHECK_EQ_INT(rc, -EMSGSIZE);
    CHECK_EQ_INT(err.category, QMP_ERR_LIMIT);
    qmp_session_unref(s);
    rec_free(&r);

    /* A line that is not JSON at all is bounded the same way. */
    s = limited_session(&r, 1024);
    err = (qmp_error)QMP_ERROR_INIT;
    memset(chunk, 'j', sizeof(chunk));
    rc = 0;
    for (int i = 0; i < 8 && rc == 0; i++)
        rc = qmp_session_feed(s, chunk, sizeof(chunk), &err);
    CHECK(rc == -EMSGSIZE || rc == -EPROTO);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_FAILED);
    qmp_session_unref(s);
    rec_free(&r);

    /* Also across the whole message in one feed, and for replies. */
    s = limited_session(&r, 300);
    req = send_cmd(s, "big", &c);
    strbuf body = {0};
    sb_add(&body, "\"return\": \"");
    for (int i = 0; i < 400; i++)
        sb_add(&body, "x");
    sb_add(&body, "\"");
    CHECK_EQ_INT(feed_reply(s, req, body.s, &err), -EMSGSIZE);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, -EMSGSIZE);
    sb_free(&body);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(large_reply_within_default_limit)
{
    rec r = {0};
    call c = {0};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "query-qmp-schema", &c);
    strbuf body = {0};
    sb_add(&body, "\"return\": [");
    for (int i = 0; i < 20000; i++)
        sb_add(&body, "%s{\"name\": \"type-%d\", \"meta-type\": \"object\"}", i ? ", " : "", i);
    sb_add(&body, "]");
    char *t = reply_to(req, body.s);
    size_t len = strlen(t);
    /* In odd-sized chunks. */
    for (size_t off = 0; off < len; off += 4093)
        CHECK_EQ_INT(qmp_session_feed(s, t + off, len - off < 4093 ? len - off : 4093, NULL), 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, 0);
    CHECK(json_object_is_type(c.ret, json_type_array));
    CHECK_EQ_INT(json_object_array_length(c.ret), 20000);
    free(t);
    sb_free(&body);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(integer_extremes_in_reply)
{
    rec r = {0};
    call c = {0};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "device-list-properties", &c);
    CHECK_EQ_INT(feed_reply(s, req,
                            "\"return\": {\"u\": 18446744073709551615, "
                            "\"i\": -9223372036854775808, \"m\": 9223372036854775807}",
                            NULL),
                 0);
    REQUIRE(c.count == 1 && c.ret != NULL);
    json_object *v = NULL;
    REQUIRE(json_object_object_get_ex(c.ret, "u", &v));
    CHECK(json_object_is_type(v, json_type_int));
    CHECK(json_object_get_uint64(v) == UINT64_MAX);
    REQUIRE(json_object_object_get_ex(c.ret, "i", &v));
    CHECK(json_object_is_type(v, json_type_int));
    CHECK(json_object_get_int64(v) == INT64_MIN);
    REQUIRE(json_object_object_get_ex(c.ret, "m", &v));
    CHECK(json_object_get_int64(v) == INT64_MAX);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(error_replies_and_classes)
{
    static const struct {
        const char *name;
        qmp_error_class klass;
    } classes[] = {
        {"GenericError", QMP_CLASS_GENERIC_ERROR},
        {"CommandNotFound", QMP_CLASS_COMMAND_NOT_FOUND},
        {"DeviceNotFound", QMP_CLASS_DEVICE_NOT_FOUND},
        {"DeviceNotActive", QMP_CLASS_DEVICE_NOT_ACTIVE},
        {"KVMMissingCap", QMP_CLASS_KVM_MISSING_CAP},
        {"SomethingNew", QMP_CLASS_OTHER},
    };
    rec r = {0};
    qmp_session *s = ready_session(&r);
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
        call c = {0};
        json_object *req = send_cmd(s, "device_del", &c);
        char body[256];
        snprintf(body, sizeof(body),
                 "\"error\": {\"class\": \"%s\", \"desc\": \"Device 'x%zu' \\\"not\\\" found\"}",
                 classes[i].name, i);
        char *t = reply_to(req, body);
        CHECK_EQ_INT(feed_str(s, t, NULL), 0);
        CHECK_EQ_INT(c.count, 1);
        CHECK_EQ_INT(c.status, -EREMOTEIO);
        CHECK(c.has_err);
        CHECK_EQ_INT(c.err.code, -EREMOTEIO);
        CHECK_EQ_INT(c.err.category, QMP_ERR_COMMAND);
        CHECK_EQ_INT(c.err.qmp_class, classes[i].klass);
        CHECK_EQ_STR(c.err.class_name, classes[i].name);
        char desc[64];
        snprintf(desc, sizeof(desc), "Device 'x%zu' \"not\" found", i);
        CHECK_EQ_STR(c.err.message, desc);
        CHECK(c.ret == NULL);
        /* The reply text is the exact message, without its line end. */
        t[strlen(t) - 2] = '\0';
        CHECK_EQ_STR(c.text, t);
        /* The enum helpers agree. */
        CHECK_EQ_INT(qmp_error_class_from_name(classes[i].name), classes[i].klass);
        if (classes[i].klass != QMP_CLASS_OTHER)
            CHECK_EQ_STR(qmp_error_class_name(classes[i].klass), classes[i].name);
        free(t);
        json_object_put(req);
        call_clear(&c);
    }
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK(qmp_error_class_from_name(NULL) == QMP_CLASS_NONE);
    CHECK(qmp_error_class_name(QMP_CLASS_NONE) == NULL);
    CHECK(qmp_error_class_name(QMP_CLASS_OTHER) == NULL);
    CHECK(qmp_error_class_name((qmp_error_class)99) == NULL);
    CHECK_EQ_STR(qmp_error_category_name((qmp_error_category)99), "unknown");
    for (int i = QMP_ERR_NONE; i <= QMP_ERR_SYSTEM; i++) {
        const char *n = qmp_error_category_name((qmp_error_category)i);
        CHECK(n != NULL && strcmp(n, "unknown") != 0);
        for (int j = QMP_ERR_NONE; j < i; j++)
            CHECK(strcmp(n, qmp_error_category_name((qmp_error_category)j)) != 0);
    }
    qmp_session_unref(s);
    rec_free(&r);
}

/* A callback that reads the reply through every accessor. */
typedef struct inspect {
    int count;
    int get_return_rc;
    json_object *got;   /* from qmp_reply_get_return (new reference) */
    json_object *whole; /* qmp_reply_to_json */
    json_object *borrowed_twice[2];
} inspect;

static void inspect_cb(qmp_session *s, qmp_reply *reply, void *userdata)
{
    inspect *in = userdata;
    (void)s;
    in->count++;
    in->borrowed_twice[0] = qmp_reply_return(reply);
    in->borrowed_twice[1] = qmp_reply_return(reply);
    in->got = (json_object *)&in->count; /* must be overwritten */
    in->get_return_rc = qmp_reply_get_return(reply, &in->got);
    in->whole = qmp_reply_to_json(reply);
}

TEST(reply_accessors)
{
    static const char *returns[] = {"{\"a\": [1, 2]}", "\"str\"", "[]", "42", "null", "true"};
    rec r = {0};
    qmp_session *s = ready_session(&r);
    for (size_t i = 0; i < sizeof(returns) / sizeof(returns[0]); i++) {
        inspect in = {0};
        uint64_t tag = 0;
        REQUIRE(qmp_session_send_command(s, "q", NULL, 0, NULL, 0, inspect_cb, &in, &tag, NULL) ==
                0);
        json_object *req = take_request(s);
        char body[64];
        snprintf(body, sizeof(body), "\"return\": %s", returns[i]);
        CHECK_EQ_INT(feed_reply(s, req, body, NULL), 0);
        CHECK_EQ_INT(in.count, 1);
        CHECK_EQ_INT(in.get_return_rc, 0);
        json_object *want = jparse(returns[i]);
        CHECK(json_object_equal(in.got, want));
        CHECK(in.borrowed_twice[0] == in.borrowed_twice[1]);
        if (want == NULL) {
            CHECK(in.got == NULL);
            CHECK(in.borrowed_twice[0] == NULL);
        }
        REQUIRE(in.whole != NULL);
        json_object *v = NULL;
        CHECK(json_object_object_get_ex(in.whole, "return", &v));
        CHECK(json_object_equal(v, want));
        json_object *id = NULL, *rid = NULL;
        CHECK(json_object_object_get_ex(in.whole, "id", &id));
        CHECK(json_object_object_get_ex(req, "id", &rid));
        CHECK(json_object_equal(id, rid));
        /* The value stays valid after the callback through our reference. */
        CHECK(json_object_equal(in.got, want));
        json_object_put(want);
        json_object_put(in.got);
        json_object_put(in.whole);
        json_object_put(req);
    }
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(commands_refused_before_negotiation)
{
    rec r = {0};
    call c = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = new_session(&r);
    uint64_t tag = 777;
    CHECK_EQ_INT(
        qmp_session_send_command(s, "query-status", NULL, 0, NULL, 0, reply_cb, &c, &tag, &err),
        -ENOTCONN);
    CHECK_EQ_INT(err.code, -ENOTCONN);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    CHECK(tag == 777);
    json_object *raw = jparse("{\"execute\": \"x\", \"id\": 1}");
    CHECK_EQ_INT(qmp_session_send_raw(s, raw, NULL, 0, reply_cb, &c, NULL, NULL), -ENOTCONN);
    size_t len = 99;
    CHECK(qmp_session_get_output(s, &len, NULL, NULL) == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);

    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_NEGOTIATING);
    CHECK_EQ_INT(qmp_session_pending_count(s), 1);
    CHECK_EQ_INT(
        qmp_session_send_command(s, "query-status", NULL, 0, NULL, 0, reply_cb, &c, NULL, &err),
        -ENOTCONN);
    CHECK_EQ_INT(qmp_session_send_raw(s, raw, NULL, 0, reply_cb, &c, NULL, NULL), -ENOTCONN);
    /* Only the capabilities request was written. */
    json_object *caps = take_request(s);
    CHECK_EQ_STR(req_command(caps), "qmp_capabilities");
    CHECK_EQ_INT(c.count, 0);
    /* The refusals did not break the session. */
    CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", NULL), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    json_object_put(caps);
    json_object_put(raw);
    qmp_session_unref(s);
    rec_free(&r);
}

static json_object *caps_arguments(json_object *caps)
{
    json_object *a = NULL;
    json_object_object_get_ex(caps, "arguments", &a);
    return a;
}

/* Whether the capabilities request enables oob. */
static int enables_oob(json_object *caps)
{
    json_object *en = NULL, *a = caps_arguments(caps);
    if (a == NULL || !json_object_object_get_ex(a, "enable", &en))
        return 0;
    for (size_t i = 0; i < json_object_array_length(en); i++) {
        if (strcmp(json_object_get_string(json_object_array_get_idx(en, i)), "oob") == 0)
            return 1;
    }
    return 0;
}

TEST(oob_negotiation)
{
    for (int want = 0; want < 2; want++) {
        for (int offered = 0; offered < 2; offered++) {
            rec r = {0};
            qmp_session *s = new_session(&r);
            CHECK_EQ_INT(qmp_session_set_want_oob(s, want), 0);
            CHECK_EQ_INT(feed_str(s, offered ? GREETING : GREETING_NO_OOB, NULL), 0);
            CHECK_EQ_INT(qmp_session_set_want_oob(s, !want), -EBUSY);
            json_object *caps = take_request(s);
            REQUIRE(caps != NULL);
            CHECK_EQ_STR(req_command(caps), "qmp_capabilities");
            json_object *id = NULL;
            CHECK(json_object_object_get_ex(caps, "id", &id));
            CHECK_EQ_INT(enables_oob(caps), want && offered);
            CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", NULL), 0);
            CHECK_EQ_INT(qmp_session_oob_enabled(s), want && offered);
            call c = {0};
            qmp_error err = QMP_ERROR_INIT;
            int rc = qmp_session_send_command(s, "migrate-pause", NULL, QMP_EXEC_OOB, NULL, 0,
                                              reply_cb, &c, NULL, &err);
            if (want && offered) {
                CHECK_EQ_INT(rc, 0);
                json_object *req = take_request(s), *x = NULL;
                CHECK(json_object_object_get_ex(req, "exec-oob", &x));
                CHECK(!json_object_object_get_ex(req, "execute", &x));
                CHECK_EQ_INT(feed_reply(s, req, "\"return\": {}", NULL), 0);
                CHECK_EQ_INT(c.count, 1);
                json_object_put(req);
            } else {
                CHECK_EQ_INT(rc, -EINVAL);
                CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
                CHECK_EQ_INT(c.count, 0);
                CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
            }
            call_clear(&c);
            json_object_put(caps);
            qmp_session_unref(s);
            rec_free(&r);
        }
    }
}

TEST(greeting_accessors)
{
    rec r = {0};
    qmp_session *s = new_session(&r);
    CHECK(qmp_session_get_greeting(s) == NULL);
    CHECK_EQ_INT(feed_str(s,
                          "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 3, \"minor\": 2, "
                          "\"major\": 7}, \"package\": \"v7.2.3-dirty\"}, \"capabilities\": "
                          "[\"x-future\", \"oob\"], \"x-extra\": 1}}\r\n",
                          NULL),
                 0);
    const qmp_greeting *g = qmp_session_get_greeting(s);
    REQUIRE(g != NULL);
    int maj = -1, min = -1, mic = -1;
    qmp_greeting_version(g, &maj, &min, &mic);
    CHECK_EQ_INT(maj, 7);
    CHECK_EQ_INT(min, 2);
    CHECK_EQ_INT(mic, 3);
    qmp_greeting_version(g, NULL, NULL, NULL);
    CHECK_EQ_STR(qmp_greeting_package(g), "v7.2.3-dirty");
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "oob"), 1);
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "x-future"), 1);
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "oo"), 0);
    json_object *j = qmp_greeting_json(g), *q = NULL;
    CHECK(json_object_object_get_ex(j, "QMP", &q));
    CHECK(qmp_greeting_json(g) == j);
    json_object_put(take_request(s));
    qmp_session_unref(s);
    rec_free(&r);

    /* A greeting without package. */
    s = new_session(&r);
    CHECK_EQ_INT(feed_str(s,
                          "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, "
                          "\"major\": 9}}, \"capabilities\": []}}\r\n",
                          NULL),
                 0);
    g = qmp_session_get_greeting(s);
    REQUIRE(g != NULL);
    CHECK_EQ_STR(qmp_greeting_package(g), "");
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "oob"), 0);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(negotiation_failure)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = new_session(&r);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = take_request(s);
    CHECK_EQ_INT(feed_reply(s, caps,
                            "\"error\": {\"class\": \"GenericError\", \"desc\": "
                            "\"Capability 'oob' unavailable\"}",
                            &err),
                 -EPROTO);
    CHECK_EQ_INT(err.category, QMP_ERR_NEGOTIATION);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_GENERIC_ERROR);
    CHECK_EQ_INT(r.last_state, QMP_SESSION_FAILED);
    CHECK_EQ_INT(r.n_states, 2);
    check_failed(s, -EPROTO, QMP_ERR_NEGOTIATION);
    json_object_put(caps);
    qmp_session_unref(s);
    rec_free(&r);
}

/*
 * QEMU greets twice when its monitor is opened twice (a client already
 * waiting as QEMU starts).  A repeated greeting while negotiating must
 * not fail the session: it negotiates again, and becomes READY only once
 * both qmp_capabilities are answered, whether the repeat succeeds (the
 * reset came after our first request) or is refused (it came before).
 */
static void check_repeated_greeting(const char *second_reply)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = new_session(&r);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = take_request(s);
    CHECK_EQ_INT(feed_str(s, GREETING, &err), 0);
    json_object *caps2 = take_request(s);
    REQUIRE(caps != NULL && caps2 != NULL);
    json_object *name;
    CHECK(json_object_object_get_ex(caps2, "execute", &name) &&
          strcmp(json_object_get_string(name), "qmp_capabilities") == 0);
    CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", &err), 0);
    /* Still waiting for the repeat's reply. */
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_NEGOTIATING);
    CHECK_EQ_INT(
        qmp_session_send_command(s, "query-status", NULL, 0, NULL, 0, NULL, NULL, NULL, NULL),
        -ENOTCONN);
    CHECK_EQ_INT(feed_reply(s, caps2, second_reply, &err), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_CONTAINS(r.last_log, "capabilities negotiated");
    CHECK(qmp_session_get_greeting(s) != NULL);
    json_object_put(caps);
    json_object_put(caps2);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(repeated_greeting_while_negotiating)
{
    check_repeated_greeting("\"return\": {}");
    check_repeated_greeting("\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                            "\"Capabilities negotiation is already complete, command ignored\"}");
}

/* A greeting after READY (the monitor was reset): negotiate again without
 * leaving READY; the error reply of a needless repeat is harmless. */
TEST(repeated_greeting_when_ready)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = new_session(&r);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = take_request(s);
    CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", &err), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(feed_str(s, GREETING, &err), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    json_object *caps2 = take_request(s);
    REQUIRE(caps2 != NULL);
    CHECK_EQ_INT(qmp_session_pending_count(s), 1);
    CHECK_EQ_INT(feed_reply(s, caps2, "\"return\": {}", &err), 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    json_object_put(caps);
    json_object_put(caps2);
    qmp_session_unref(s);
    rec_free(&r);
}

static void check_bad_greeting(const char *text)
{
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = new_session(&r);
    int rc = feed_str(s, text, &err);
    if (rc != -EPROTO || err.category != QMP_ERR_GREETING) {
        char pb[200];
        HARNESS_FAIL_("greeting <%s> gave %d, %s (%s); want -EPROTO, greeting error",
                      printable(text, pb, sizeof(pb)), rc, qmp_error_category_name(err.category),
                      err.message);
    } else {
        CHECK_EQ_INT(r.last_state, QMP_SESSION_FAILED);
        size_t len = 0;
        CHECK(qmp_session_get_output(s, &len, NULL, NULL) == NULL || len == 0);
        check_failed(s, -EPROTO, QMP_ERR_GREETING);
    }
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(malformed_greeting)
{
    check_bad_greeting("{\"QMP\": \"hello\"}\r\n");
    check_bad_greeting("{\"QMP\": []}\r\n");
    check_bad_greeting("{\"QMP\": {\"capabilities\": []}}\r\n");
    check_bad_greeting("{\"QMP\": {\"version\": {\"qemu\": {\"major\": \"7\", \"minor\": 2, "
                       "\"micro\": 0}, \"package\": \"\"}, \"capabilities\": []}}\r\n");
    check_bad_greeting("{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, "
                       "\"micro\": 0}, \"package\": 5}, \"capabilities\": []}}\r\n");
    check_bad_greeting("{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, "
                       "\"micro\": 0}, \"package\": \"\"}}}\r\n");
    check_bad_greeting("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                       "\"major\": 7}, \"package\": \"\"}, \"capabilities\": \"oob\"}}\r\n");

    /* A reply where the greeting belongs. */
    rec r = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = new_session(&r);
    CHECK_EQ_INT(feed_str(s, "{\"return\": {}}\r\n", &err), -EPROTO);
    CHECK(err.category == QMP_ERR_GREETING || err.category == QMP_ERR_PROTOCOL);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_FAILED);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(greeting_capability_not_a_string)
{
    /* QEMU's capabilities are enum values, always strings. */
    check_bad_greeting("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                       "\"major\": 7}, \"package\": \"\"}, \"capabilities\": [1]}}\r\n");
}

TEST(eof_at_each_stage)
{
    for (int stage = 0; stage < 6; stage++) {
        rec r = {0};
        call c[3] = {{0}};
        json_object *req[3] = {NULL, NULL, NULL};
        qmp_session *s;
        int n_pending = 0;
        if (stage == 0) {
            s = new_session(&r); /* before the greeting */
        } else if (stage == 1) {
            s = new_session(&r); /* in the middle of the greeting */
            CHECK_EQ_INT(feed_str(s, "{\"QMP\": {\"version\"", NULL), 0);
        } else if (stage == 2) {
            s = new_session(&r); /* during negotiation */
            CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
        } else {
            s = ready_session(&r);
            n_pending = stage == 3 ? 0 : 3;
            for (int i = 0; i < n_pending; i++)
                req[i] = send_cmd(s, "x", &c[i]);
            if (stage == 5) /* mid-message */
                CHECK_EQ_INT(feed_str(s, "{\"return\": {\"a\": [1, ", NULL), 0);
        }
        int states = r.n_states;
        qmp_error err = QMP_ERROR_INIT;
        CHECK_EQ_INT(qmp_session_feed_eof(s, &err), -ECONNRESET);
        CHECK_EQ_INT(err.code, -ECONNRESET);
        CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
        CHECK(err.message[0] != '\0');
        CHECK_EQ_INT(r.n_states, states + 1);
        CHECK_EQ_INT(r.last_state, QMP_SESSION_FAILED);
        for (int i = 0; i < n_pending; i++) {
            CHECK_EQ_INT(c[i].count, 1);
            CHECK_EQ_INT(c[i].status, -ECONNRESET);
            CHECK_EQ_INT(c[i].err.category, QMP_ERR_DISCONNECTED);
        }
        CHECK_EQ_INT(qmp_session_pending_count(s), 0);
        check_failed(s, -ECONNRESET, QMP_ERR_DISCONNECTED);
        /* Still exactly once. */
        CHECK_EQ_INT(r.n_states, states + 1);
        for (int i = 0; i < n_pending; i++) {
            CHECK_EQ_INT(c[i].count, 1);
            call_clear(&c[i]);
            json_object_put(req[i]);
        }
        qmp_session_unref(s);
        rec_free(&r);
    }
}

TEST(abort_fails_pending)
{
    rec r = {0};
    call c[2] = {{0}};
    qmp_session *s = ready_session(&r);
    json_object *a = send_cmd(s, "a", &c[0]);
    json_object *b = send_cmd(s, "b", &c[1]);
    qmp_error why = QMP_ERROR_INIT;
    why.code = -EPIPE;
    why.category = QMP_ERR_DISCONNECTED;
    snprintf(why.message, sizeof(why.message), "write failed: broken pipe");
    qmp_session_abort(s, &why);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(c[i].status, -EPIPE);
    }
    check_failed(s, -EPIPE, QMP_ERR_DISCONNECTED);
    qmp_session_abort(s, NULL);
    CHECK_EQ_INT(qmp_session_get_error(s, NULL), -EPIPE);
    CHECK_EQ_INT(c[0].count, 1);
    json_object_put(a);
    json_object_put(b);
    call_clear(&c[0]);
    call_clear(&c[1]);
    qmp_session_unref(s);
    rec_free(&r);

    /* NULL means -ECONNRESET. */
    s = ready_session(&r);
    a = send_cmd(s, "a", &c[0]);
    qmp_session_abort(s, NULL);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[0].status, -ECONNRESET);
    CHECK_EQ_INT(qmp_session_get_error(s, NULL), -ECONNRESET);
    json_object_put(a);
    call_clear(&c[0]);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(cancel_then_late_reply)
{
    rec r = {0};
    call a = {0}, b = {0};
    qmp_session *s = ready_session(&r);
    json_object *ra = send_cmd(s, "slow", &a);
    CHECK_EQ_INT(qmp_session_cancel(s, a.sent_tag, NULL), 0);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    CHECK_EQ_INT(a.err.category, QMP_ERR_CANCELLED);
    CHECK(a.tag == a.sent_tag);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    CHECK_EQ_INT(qmp_session_cancel(s, a.sent_tag, NULL), -ENOENT);
    CHECK_EQ_INT(qmp_session_cancel(s, 0xdeadbeefull, NULL), -ENOENT);

    /* The next command must get its own reply, not the late one. */
    json_object *rb = send_cmd(s, "fast", &b);
    int logs = r.n_logs;
    CHECK_EQ_INT(feed_reply(s, ra, "\"return\": \"late\"", NULL), 0);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(b.count, 0);
    CHECK(r.n_logs > logs);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(feed_reply(s, rb, "\"return\": \"own\"", NULL), 0);
    CHECK_EQ_INT(b.count, 1);
    CHECK_EQ_STR(json_object_get_string(b.ret), "own");

    /* A cancel with a reason of the caller's. */
    call c = {0};
    json_object *rc = send_cmd(s, "x", &c);
    qmp_error why = QMP_ERROR_INIT;
    why.code = -ETIMEDOUT;
    why.category = QMP_ERR_TIMEOUT;
    snprintf(why.message, sizeof(why.message), "deadline passed");
    CHECK_EQ_INT(qmp_session_cancel(s, c.sent_tag, &why), 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, -ETIMEDOUT);
    CHECK_EQ_INT(c.err.category, QMP_ERR_TIMEOUT);
    CHECK_EQ_STR(c.err.message, "deadline passed");
    json_object_put(ra);
    json_object_put(rb);
    json_object_put(rc);
    call_clear(&a);
    call_clear(&b);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Sends a raw request; returns send_raw's result. */
static int raw(qmp_session *s, const char *msg, call *c)
{
    json_object *m = jparse(msg);
    uint64_t tag = 0;
    int rc = qmp_session_send_raw(s, m, NULL, 0, reply_cb, c, &tag, NULL);
    c->sent_tag = tag;
    json_object_put(m);
    return rc;
}

TEST(send_raw_ids)
{
    static const char *ids[] = {"42", "\"mine\"", "{\"a\": [1, \"b\"], \"c\": null}", "-7.25"};
    rec r = {0};
    qmp_session *s = ready_session(&r);
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        call c = {0}, dup = {0};
        char msg[128];
        snprintf(msg, sizeof(msg), "{\"execute\": \"x\", \"arguments\": {\"n\": %zu}, \"id\": %s}",
                 i, ids[i]);
        CHECK_EQ_INT(raw(s, msg, &c), 0);
        CHECK_EQ_INT(raw(s, msg, &dup), -EEXIST);
        /* The message went out as given. */
        json_object *req = take_request(s), *want = jparse(msg);
        CHECK(json_object_equal(req, want));
        json_object_put(want);
        char body[64];
        snprintf(body, sizeof(body), "\"return\": {\"n\": %zu}", i);
        CHECK_EQ_INT(feed_reply(s, req, body, NULL), 0);
        CHECK_EQ_INT(c.count, 1);
        CHECK(c.tag == c.sent_tag);
        json_object *n = NULL;
        CHECK(json_object_object_get_ex(c.ret, "n", &n));
        CHECK_EQ_INT(json_object_get_int(n), (int)i);
        CHECK_EQ_INT(dup.count, 0);
        /* Once answered, the id may be used again. */
        CHECK_EQ_INT(raw(s, msg, &dup), 0);
        json_object_put(take_request(s));
        CHECK_EQ_INT(feed_reply(s, req, "\"return\": {}", NULL), 0);
        CHECK_EQ_INT(dup.count, 1);
        json_object_put(req);
        call_clear(&c);
        call_clear(&dup);
    }
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(send_raw_refusals)
{
    rec r = {0};
    call c = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(raw(s, "{\"execute\": \"x\", \"id\": \"libqmp:1\"}", &c), -EINVAL);
    CHECK_EQ_INT(raw(s, "{\"execute\": \"x\", \"id\": \"libqmp:\"}", &c), -EINVAL);
    CHECK_EQ_INT(raw(s, "{\"execute\": \"x\", \"id\": \"libqmp:anything\"}", &c), -EINVAL);
    CHECK_EQ_INT(raw(s, "[1]", &c), -EINVAL);
    CHECK_EQ_INT(raw(s, "\"execute\"", &c), -EINVAL);
    CHECK_EQ_INT(qmp_session_send_raw(s, NULL, NULL, 0, reply_cb, &c, NULL, &err), -EINVAL);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    json_object *bad = jparse("{\"execute\": \"x\", \"id\": 9}");
    json_object_object_add(bad, "arguments", json_object_new_string("\xed\xa0\x80"));
    CHECK_EQ_INT(qmp_session_send_raw(s, bad, NULL, 0, reply_cb, &c, NULL, NULL), -EINVAL);
    json_object_put(bad);
    CHECK_EQ_INT(c.count, 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    size_t olen = 0;
    CHECK(qmp_session_get_output(s, &olen, NULL, NULL) == NULL);
    /* An id that merely looks similar is the caller's. */
    CHECK_EQ_INT(raw(s, "{\"execute\": \"x\", \"id\": \"libqmp\"}", &c), 0);
    json_object *req = take_request(s);
    CHECK_EQ_INT(feed_reply(s, req, "\"return\": {}", NULL), 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(send_raw_without_id)
{
    rec r = {0};
    call c = {0}, second = {0}, lib = {0};
    qmp_session *s = ready_session(&r);
    json_object *lreq = send_cmd(s, "query-status", &lib);
    CHECK_EQ_INT(raw(s, "{\"execute\": \"query-name\"}", &c), 0);
    CHECK_EQ_INT(raw(s, "{\"execute\": \"query-uuid\"}", &second), -EEXIST);
    json_object *req = take_request(s), *id = NULL;
    CHECK(!json_object_object_get_ex(req, "id", &id));
    CHECK_EQ_INT(feed_str(s, "{\"return\": {\"name\": \"vm\"}}\r\n", NULL), 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, 0);
    CHECK_EQ_INT(lib.count, 0);
    json_object *n = NULL;
    CHECK(json_object_object_get_ex(c.ret, "name", &n));
    CHECK_EQ_STR(json_object_get_string(n), "vm");
    CHECK_EQ_INT(second.count, 0);

    /* An id-less error goes to the one id-less request, too. */
    call_clear(&c);
    CHECK_EQ_INT(raw(s, "{\"execute\": \"bogus\"}", &c), 0);
    json_object_put(take_request(s));
    CHECK_EQ_INT(feed_str(s,
                          "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The "
                          "command bogus has not been found\"}}\r\n",
                          NULL),
                 0);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(c.status, -EREMOTEIO);
    CHECK_EQ_INT(c.err.qmp_class, QMP_CLASS_COMMAND_NOT_FOUND);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(feed_reply(s, lreq, "\"return\": {}", NULL), 0);
    CHECK_EQ_INT(lib.count, 1);
    json_object_put(req);
    json_object_put(lreq);
    call_clear(&c);
    call_clear(&second);
    call_clear(&lib);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(send_command_validation)
{
    rec r = {0};
    call c = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_session *s = ready_session(&r);
    int fds[17];
    for (int i = 0; i < 17; i++)
        fds[i] = 0;
    json_object *arr = jparse("[1]");
    json_object *bad = json_object_new_object();
    json_object_object_add(bad, "s", json_object_new_string("\xc0\xaf"));
    uint64_t tag = 12345;
    CHECK_EQ_INT(qmp_session_send_command(s, "", NULL, 0, NULL, 0, reply_cb, &c, &tag, &err),
                 -EINVAL);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    CHECK_EQ_INT(qmp_session_send_command(s, NULL, NULL, 0, NULL, 0, reply_cb, &c, &tag, NULL),
                 -EINVAL);
    CHECK_EQ_INT(qmp_session_send_command(s, "a\xff", NULL, 0, NULL, 0, reply_cb, &c, &tag, NULL),
                 -EINVAL);
    CHECK_EQ_INT(qmp_session_send_command(s, "x", arr, 0, NULL, 0, reply_cb, &c, &tag, NULL),
                 -EINVAL);
    CHECK_EQ_INT(qmp_session_send_command(s, "x", bad, 0, NULL, 0, reply_cb, &c, &tag, NULL),
                 -EINVAL);
    CHECK_EQ_INT(qmp_session_send_command(s, "x", NULL, 0, fds, 17, reply_cb, &c, &tag, NULL),
                 -EINVAL);
    CHECK(tag == 12345);
    CHECK_EQ_INT(c.count, 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    size_t len = 0;
    CHECK(qmp_session_get_output(s, &len, NULL, NULL) == NULL);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);

    /* A command with arguments and a NULL callback. */
    json_object *args = jparse("{\"id\": \"d\\u00e9v\", \"n\": 18446744073709551615}");
    CHECK_EQ_INT(
        qmp_session_send_command(s, "device_del", args, 0, NULL, 0, NULL, NULL, NULL, NULL), 0);
    json_object *req = take_request(s), *a = NULL, *id = NULL;
    CHECK_EQ_STR(req_command(req), "device_del");
    CHECK(json_object_object_get_ex(req, "arguments", &a));
    CHECK(json_object_equal(a, args));
    CHECK(json_object_object_get_ex(req, "id", &id));
    CHECK(json_object_is_type(id, json_type_string) &&
          strncmp(json_object_get_string(id), "libqmp:", 7) == 0);
    CHECK_EQ_INT(feed_reply(s, req, "\"return\": {}", NULL), 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    json_object_put(req);
    json_object_put(args);
    json_object_put(arr);
    json_object_put(bad);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Counts the requests in a chunk of output. */
static int count_lines(const char *p, size_t len)
{
    int n = 0;
    for (size_t i = 0; i < len; i++)
        n += p[i] == '\n';
    return n;
}

TEST(fds_travel_with_their_command)
{
    rec r = {0};
    call c[4] = {{0}};
    int p[2];
    REQUIRE(pipe(p) == 0);
    int two[2] = {p[0], p[1]}, one[1] = {p[1]};
    qmp_session *s = ready_session(&r);
    REQUIRE(qmp_session_send_command(s, "c1", NULL, 0, NULL, 0, reply_cb, &c[0], NULL, NULL) == 0);
    REQUIRE(qmp_session_send_command(s, "getfd", NULL, 0, two, 2, reply_cb, &c[1], NULL, NULL) ==
            0);
    REQUIRE(qmp_session_send_command(s, "c3", NULL, 0, NULL, 0, reply_cb, &c[2], NULL, NULL) == 0);
    REQUIRE(qmp_session_send_command(s, "add-fd", NULL, 0, one, 1, reply_cb, &c[3], NULL, NULL) ==
            0);

    size_t len = 0, nf = 99;
    const int *fds = NULL;
    /* First chunk: c1 alone, no descriptors. */
    const char *out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 0);
    CHECK_EQ_INT(count_lines(out, len), 1);
    CHECK(memmem(out, len, "\"c1\"", 4) != NULL);
    CHECK(len > 0 && out[len - 1] == '\n');
    qmp_session_consume_output(s, len);

    /* Second: starts with getfd and carries its two descriptors, and does
     * not reach add-fd. */
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 2);
    CHECK(fds != NULL && fds[0] == p[0] && fds[1] == p[1]);
    CHECK(strncmp(out, "{", 1) == 0 && memmem(out, len, "\"getfd\"", 7) != NULL);
    CHECK(memmem(out, len, "\"getfd\"", 7) < (void *)memchr(out, '\n', len));
    CHECK(memmem(out, len, "add-fd", 6) == NULL);
    /* Consuming part of it sends the descriptors: the rest carries none. */
    qmp_session_consume_output(s, 1);
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 0);
    CHECK(memmem(out, len, "add-fd", 6) == NULL);
    qmp_session_consume_output(s, len);
    /* Until c3 is out too. */
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    if (memmem(out, len, "\"c3\"", 4) != NULL) {
        CHECK_EQ_INT(nf, 0);
        CHECK(memmem(out, len, "add-fd", 6) == NULL);
        qmp_session_consume_output(s, len);
        out = qmp_session_get_output(s, &len, &fds, &nf);
        REQUIRE(out != NULL);
    }
    /* Last: add-fd with its one descriptor. */
    CHECK_EQ_INT(nf, 1);
    CHECK(fds != NULL && fds[0] == p[1]);
    CHECK(memmem(out, len, "\"add-fd\"", 8) != NULL);
    CHECK_EQ_INT(count_lines(out, len), 1);
    qmp_session_consume_output(s, len);
    out = qmp_session_get_output(s, &len, &fds, &nf);
    CHECK(out == NULL);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(nf, 0);
    qmp_session_unref(s);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(c[i].status, -ECANCELED);
        call_clear(&c[i]);
    }
    rec_free(&r);
    close(p[0]);
    close(p[1]);
}

typedef struct unref_ctx {
    qmp_session *s;
    int count;
    int status;
} unref_ctx;

/* Drops the session's last reference, then keeps using the reply. */
static void unref_reply_cb(qmp_session *s, qmp_reply *reply, void *userdata)
{
    unref_ctx *u = userdata;
    (void)s;
    u->count++;
    u->status = qmp_reply_status(reply);
    u->s = qmp_session_unref(u->s);
    json_object *v = qmp_reply_return(reply);
    if (u->status == 0 && !json_object_is_type(v, json_type_object))
        u->status = -999;
}

TEST(unref_inside_reply_callback)
{
    rec r = {0};
    call c2 = {0};
    unref_ctx u = {0};
    u.s = ready_session(&r);
    REQUIRE(qmp_session_send_command(u.s, "a", NULL, 0, NULL, 0, unref_reply_cb, &u, NULL, NULL) ==
            0);
    json_object *ra = take_request(u.s);
    json_object *rb = send_cmd(u.s, "b", &c2);
    char *t1 = reply_to(ra, "\"return\": {\"x\": 1}");
    char *t2 = reply_to(rb, "\"return\": {}");
    strbuf b = {0};
    sb_add(&b, "%s{\"event\": \"AFTER\"}\r\n%s", t1, t2);
    qmp_session *s = u.s;
    /* The session stays alive until this call returns; afterwards every
     * pending command has heard exactly once. */
    qmp_session_feed(s, b.s, b.len, NULL);
    CHECK(u.s == NULL);
    CHECK_EQ_INT(u.count, 1);
    CHECK_EQ_INT(u.status, 0);
    CHECK_EQ_INT(c2.count, 1);
    CHECK(c2.status == 0 || c2.status == -ECANCELED);
    free(t1);
    free(t2);
    sb_free(&b);
    json_object_put(ra);
    json_object_put(rb);
    call_clear(&c2);
    rec_free(&r);
}

TEST(unref_inside_event_and_state_callbacks)
{
    rec r = {0};
    call c = {0};
    qmp_session *s = ready_session(&r);
    json_object *req = send_cmd(s, "a", &c);
    char *t = reply_to(req, "\"return\": {}");
    strbuf b = {0};
    sb_add(&b, "{\"event\": \"E1\"}\r\n{\"event\": \"E2\"}\r\n%s", t);
    qmp_session *alias = s;
    r.unref_in_event = &alias;
    qmp_session_feed(s, b.s, b.len, NULL);
    CHECK(alias == NULL);
    CHECK(r.n_events >= 1);
    CHECK_EQ_INT(c.count, 1);
    free(t);
    sb_free(&b);
    json_object_put(req);
    call_clear(&c);
    rec_free(&r);

    /* Dropping the last reference when negotiation completes. */
    s = new_session(&r);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = take_request(s);
    t = reply_to(caps, "\"return\": {}");
    memset(&b, 0, sizeof(b));
    sb_add(&b, "%s{\"event\": \"E3\"}\r\n", t);
    alias = s;
    r.unref_on_ready = &alias;
    qmp_session_feed(s, b.s, b.len, NULL);
    CHECK(alias == NULL);
    CHECK_EQ_INT(r.last_state, QMP_SESSION_READY);
    free(t);
    sb_free(&b);
    json_object_put(caps);
    rec_free(&r);
}

TEST(last_unref_cancels_pending)
{
    rec r = {0};
    call c[3] = {{0}};
    qmp_session *s = ready_session(&r);
    json_object *req[3];
    for (int i = 0; i < 3; i++)
        req[i] = send_cmd(s, "x", &c[i]);
    CHECK(qmp_session_ref(s) == s);
    CHECK(qmp_session_unref(s) == NULL);
    CHECK_EQ_INT(c[0].count, 0);
    CHECK(qmp_session_unref(s) == NULL);
    CHECK(qmp_session_unref(NULL) == NULL);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(c[i].status, -ECANCELED);
        CHECK_EQ_INT(c[i].err.category, QMP_ERR_CANCELLED);
        call_clear(&c[i]);
        json_object_put(req[i]);
    }
    rec_free(&r);
}

TEST(event_accessors)
{
    static const char *full = "{\"event\": \"X-VENDOR_EV\", \"data\": {\"k\": [1, {\"z\": null}]}, "
                              "\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, "
                              "\"extra\": 1}";
    rec r = {0};
    qmp_session *s = ready_session(&r);
    strbuf b = {0};
    sb_add(&b,
           "  \t%s  \r\n{\"event\": \"BARE\"}\r\n"
           "{\"event\": \"CLOCKFAIL\", \"timestamp\": {\"seconds\": -1, \"microseconds\": -1}, "
           "\"data\": {}}\r\n",
           full);
    CHECK_EQ_INT(qmp_session_feed(s, b.s, b.len, NULL), 0);
    sb_free(&b);
    qmp_session_unref(s);
    REQUIRE(r.n_kept == 3);

    /* The events outlive the session through their references. */
    qmp_event *ev = r.kept[0];
    CHECK(qmp_event_ref(ev) == ev);
    CHECK(qmp_event_unref(ev) == NULL);
    CHECK_EQ_STR(qmp_event_name(ev), "X-VENDOR_EV");
    CHECK_EQ_INT(qmp_event_seconds(ev), 1700000000);
    CHECK_EQ_INT(qmp_event_microseconds(ev), 123456);
    CHECK_EQ_INT(qmp_event_has_data(ev), 1);
    json_object *d = qmp_event_data(ev), *want = jparse("{\"k\": [1, {\"z\": null}]}");
    CHECK(json_object_equal(d, want));
    CHECK(qmp_event_data(ev) == d);
    json_object_put(want);
    size_t len = 0;
    const char *text = qmp_event_text(ev, &len);
    CHECK_EQ_INT(len, strlen(full));
    CHECK_EQ_STR(text, full);
    CHECK(qmp_event_text(ev, NULL) == text);
    json_object *j1 = qmp_event_to_json(ev), *j2 = qmp_event_to_json(ev);
    want = jparse(full);
    CHECK(j1 != NULL && j1 != j2);
    CHECK(json_object_equal(j1, want));
    CHECK(json_object_equal(j2, want));
    json_object_put(j1);
    json_object_put(j2);
    json_object_put(want);

    ev = r.kept[1];
    CHECK_EQ_STR(qmp_event_name(ev), "BARE");
    CHECK_EQ_INT(qmp_event_has_data(ev), 0);
    CHECK(qmp_event_data(ev) == NULL);
    CHECK_EQ_INT(qmp_event_seconds(ev), -1);
    CHECK_EQ_INT(qmp_event_microseconds(ev), -1);

    ev = r.kept[2];
    CHECK_EQ_INT(qmp_event_has_data(ev), 1);
    d = qmp_event_data(ev);
    CHECK(d != NULL && json_object_is_type(d, json_type_object));
    CHECK_EQ_INT(qmp_event_seconds(ev), -1);
    CHECK_EQ_INT(qmp_event_microseconds(ev), -1);
    CHECK(qmp_event_unref(NULL) == NULL);
    rec_free(&r);
}

TEST(events_without_callback_dropped)
{
    rec r = {0};
    call c = {0};
    qmp_session *s = ready_session(&r);
    qmp_session_set_event_callback(s, NULL, NULL);
    json_object *req = send_cmd(s, "a", &c);
    int logs = r.n_logs;
    CHECK_EQ_INT(feed_str(s, "{\"event\": \"NOBODY\"}\r\n", NULL), 0);
    CHECK_EQ_INT(r.n_events, 0);
    CHECK(r.n_logs > logs);
    CHECK_EQ_INT(feed_reply(s, req, "\"return\": {}", NULL), 0);
    CHECK_EQ_INT(c.count, 1);
    json_object_put(req);
    call_clear(&c);
    qmp_session_unref(s);
    rec_free(&r);
}

typedef struct trace_log {
    int n;
    qmp_trace_direction dir[8];
    char *data[8];
} trace_log;

static void trace_cb(qmp_trace_direction direction, const char *data, size_t len, void *userdata)
{
    trace_log *t = userdata;
    if (t->n < 8) {
        t->dir[t->n] = direction;
        t->data[t->n] = malloc(len + 1);
        memcpy(t->data[t->n], data, len);
        t->data[t->n][len] = '\0';
    }
    t->n++;
}

TEST(trace_callback)
{
    rec r = {0};
    trace_log t = {0};
    qmp_session *s = new_session(&r);
    qmp_session_set_trace(s, trace_cb, &t);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    char *out = drain_output(s);
    REQUIRE(t.n == 2);
    CHECK_EQ_INT(t.dir[0], QMP_TRACE_IN);
    CHECK(strncmp(t.data[0], GREETING, strlen(GREETING) - 2) == 0);
    CHECK(strlen(t.data[0]) == strlen(GREETING) - 2);
    CHECK_EQ_INT(t.dir[1], QMP_TRACE_OUT);
    out[strlen(out) - 1] = '\0';
    CHECK_EQ_STR(t.data[1], out);
    /* Malformed input is traced before it fails the session. */
    CHECK_EQ_INT(feed_str(s, "[\"oops\"]\r\n", NULL), -EPROTO);
    REQUIRE(t.n == 3);
    CHECK_EQ_INT(t.dir[2], QMP_TRACE_IN);
    CHECK_EQ_STR(t.data[2], "[\"oops\"]");
    qmp_session_set_trace(s, NULL, NULL);
    for (int i = 0; i < t.n && i < 8; i++)
        free(t.data[i]);
    free(out);
    qmp_session_unref(s);
    rec_free(&r);
}

typedef struct chain {
    int count;
    call next;
    int send_rc;
    uint64_t cancel_tag;
    int cancel_rc;
} chain;

/* Sends another command and cancels a pending one from a reply callback. */
static void chain_cb(qmp_session *s, qmp_reply *reply, void *userdata)
{
    chain *ch = userdata;
    (void)reply;
    ch->count++;
    ch->send_rc = qmp_session_send_command(s, "next", NULL, 0, NULL, 0, reply_cb, &ch->next,
                                           &ch->next.sent_tag, NULL);
    ch->cancel_rc = qmp_session_cancel(s, ch->cancel_tag, NULL);
}

TEST(callback_may_send_and_cancel)
{
    rec r = {0};
    call b = {0};
    chain ch = {0};
    qmp_session *s = ready_session(&r);
    REQUIRE(qmp_session_send_command(s, "a", NULL, 0, NULL, 0, chain_cb, &ch, NULL, NULL) == 0);
    json_object *ra = take_request(s);
    json_object *rb = send_cmd(s, "b", &b);
    ch.cancel_tag = b.sent_tag;
    char *ta = reply_to(ra, "\"return\": {}");
    char *tb = reply_to(rb, "\"return\": \"dropped\"");
    strbuf all = {0};
    sb_add(&all, "%s%s", ta, tb);
    CHECK_EQ_INT(qmp_session_feed(s, all.s, all.len, NULL), 0);
    CHECK_EQ_INT(ch.count, 1);
    CHECK_EQ_INT(ch.send_rc, 0);
    CHECK_EQ_INT(ch.cancel_rc, 0);
    CHECK_EQ_INT(b.count, 1);
    CHECK_EQ_INT(b.status, -ECANCELED);
    json_object *rn = take_request(s);
    REQUIRE(rn != NULL);
    CHECK_EQ_STR(req_command(rn), "next");
    CHECK_EQ_INT(feed_reply(s, rn, "\"return\": 5", NULL), 0);
    CHECK_EQ_INT(ch.next.count, 1);
    CHECK_EQ_INT(json_object_get_int(ch.next.ret), 5);
    CHECK(ch.next.tag == ch.next.sent_tag);
    free(ta);
    free(tb);
    sb_free(&all);
    json_object_put(ra);
    json_object_put(rb);
    json_object_put(rn);
    call_clear(&b);
    call_clear(&ch.next);
    qmp_session_unref(s);
    rec_free(&r);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(transcript_every_split_crlf);
    RUN(transcript_every_split_lf);
    RUN(transcript_every_split_no_separator);
    RUN(message_routed_at_closing_brace);
    RUN(many_messages_in_one_feed);
    RUN(events_between_command_and_reply);
    RUN(out_of_order_replies);
    RUN(unknown_id_dropped_and_logged);
    RUN(idless_error_is_protocol_error);
    RUN(reply_without_return_or_error);
    RUN(non_object_messages);
    RUN(malformed_json);
    RUN(invalid_utf8);
    RUN(nesting_limit);
    RUN(message_size_limit);
    RUN(large_reply_within_default_limit);
    RUN(integer_extremes_in_reply);
    RUN(error_replies_and_classes);
    RUN(reply_accessors);
    RUN(commands_refused_before_negotiation);
    RUN(oob_negotiation);
    RUN(greeting_accessors);
    RUN(negotiation_failure);
    RUN(repeated_greeting_while_negotiating);
    RUN(repeated_greeting_when_ready);
    RUN(malformed_greeting);
    RUN(greeting_capability_not_a_string);
    RUN(eof_at_each_stage);
    RUN(abort_fails_pending);
    RUN(cancel_then_late_reply);
    RUN(send_raw_ids);
    RUN(send_raw_refusals);
    RUN(send_raw_without_id);
    RUN(send_command_validation);
    RUN(fds_travel_with_their_command);
    RUN(unref_inside_reply_callback);
    RUN(unref_inside_event_and_state_callbacks);
    RUN(last_unref_cancels_pending);
    RUN(event_accessors);
    RUN(events_without_callback_dropped);
    RUN(trace_callback);
    RUN(callback_may_send_and_cancel);
    return harness_done();
}
