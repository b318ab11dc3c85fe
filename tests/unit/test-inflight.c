/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the session's in-flight limit (qmp_session_set_max_in_flight):
 * which commands reach the output and when, the order in which held-back
 * commands follow, exec-oob skipping the backlog, cancellation at every
 * stage of a command's life (held back, sent, answered but not yet fed),
 * failures with held-back, sent and cancelled commands, and descriptors
 * that travel with a held-back command.  Byte strings only, no sockets.
 *
 * Every command is named "c<N>" so that the output tells which commands
 * went out and in which order; wire_pull() collects them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "session-util.h"

#define MAX_CMDS 1100

/* ---------------------------------------------------------------- wire */

/* What the session wrote, command by command. */
typedef struct wire {
    json_object *req[MAX_CMDS]; /* request of command N (new reference), NULL until sent */
    int order[MAX_CMDS];        /* command numbers in output order */
    int n_order;
    int dup; /* commands that went out twice */
    strbuf all;
} wire;

static void wire_free(wire *w)
{
    for (int i = 0; i < MAX_CMDS; i++)
        json_object_put(w->req[i]);
    sb_free(&w->all);
    memset(w, 0, sizeof(*w));
}

/* Number N of a request for command "cN", or -1. */
static int cmd_number(json_object *req)
{
    const char *name = req_command(req);
    if (name == NULL || name[0] != 'c')
        return -1;
    char *end = NULL;
    long n = strtol(name + 1, &end, 10);
    if (*end != '\0' || n < 0 || n >= MAX_CMDS)
        return -1;
    return (int)n;
}

/* Drains the output into w; returns how many requests it held. */
static int wire_pull(qmp_session *s, wire *w)
{
    char *out = drain_output(s);
    int n = 0;
    sb_add(&w->all, "%s", out);
    for (char *p = out; *p;) {
        char *nl = strchr(p, '\n');
        if (nl == NULL) {
            HARNESS_FAIL_("output does not end in a newline: %s", p);
            break;
        }
        *nl = '\0';
        json_object *req = jparse(p);
        int k = cmd_number(req);
        if (k < 0) {
            HARNESS_FAIL_("unexpected request in the output: %s", p);
            json_object_put(req);
        } else if (w->req[k] != NULL) {
            w->dup++;
            json_object_put(req);
        } else {
            w->req[k] = req;
            w->order[w->n_order++] = k;
        }
        n++;
        p = nl + 1;
    }
    free(out);
    return n;
}

/* Whether command "cN" ever appeared in the output (as a whole word). */
static bool wire_saw(const wire *w, int k)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "\"c%d\"", k);
    return strstr(sb_str(&w->all), pat) != NULL;
}

/* Sends command "cN" with flags and descriptors; returns its tag (0 on
 * failure, recorded). */
static uint64_t send_n(qmp_session *s, int k, unsigned flags, const int *fds, size_t n_fds, call *c)
{
    char name[16];
    uint64_t tag = 0;
    qmp_error err = QMP_ERROR_INIT;
    snprintf(name, sizeof(name), "c%d", k);
    int r = qmp_session_send_command(s, name, NULL, flags, fds, n_fds, reply_cb, c, &tag, &err);
    if (r != 0) {
        HARNESS_FAIL_("send_command(%s) failed: %d %s", name, r, err.message);
        return 0;
    }
    c->sent_tag = tag;
    return tag;
}

/* Feeds the reply {"return": N} to command k, which must have been sent. */
static int reply_n(qmp_session *s, const wire *w, int k)
{
    char body[48];
    if (w->req[k] == NULL) {
        HARNESS_FAIL_("reply to c%d, which was never sent", k);
        return -1;
    }
    snprintf(body, sizeof(body), "\"return\": %d", k);
    return feed_reply(s, w->req[k], body, NULL);
}

/* The reply text for command k (malloc'd). */
static char *reply_text_n(const wire *w, int k)
{
    char body[48];
    snprintf(body, sizeof(body), "\"return\": %d", k);
    return reply_to(w->req[k], body);
}

/* A READY session with oob negotiated. */
static qmp_session *ready_oob_session(rec *r)
{
    qmp_session *s = new_session(r);
    CHECK_EQ_INT(qmp_session_set_want_oob(s, 1), 0);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = take_request(s);
    if (caps != NULL)
        CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", NULL), 0);
    json_object_put(caps);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(qmp_session_oob_enabled(s), 1);
    return s;
}

static void calls_clear(call *c, int n)
{
    for (int i = 0; i < n; i++)
        call_clear(&c[i]);
}

/* ---------------------------------------------------------------- tests */

TEST(limit_holds_back_commands)
{
    rec r = {0};
    call c[6] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 3), 0);
    for (int i = 0; i < 6; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 3);
    CHECK_EQ_INT(w.order[0], 0);
    CHECK_EQ_INT(w.order[1], 1);
    CHECK_EQ_INT(w.order[2], 2);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 3);
    CHECK_EQ_INT(qmp_session_pending_count(s), 6);
    /* Nothing more goes out while the limit is reached. */
    CHECK_EQ_INT(wire_pull(s, &w), 0);

    /* Any reply, here the second, lets the oldest held-back command out. */
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(json_object_get_int(c[1].ret), 1);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(w.order[3], 3);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 3);
    CHECK_EQ_INT(qmp_session_pending_count(s), 5);

    /* An error reply frees a slot as well. */
    CHECK_EQ_INT(
        feed_reply(s, w.req[0], "\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}", NULL),
        0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[0].status, -EREMOTEIO);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(w.order[4], 4);

    /* Two replies in one feed: one more goes out (only one is left). */
    char *t2 = reply_text_n(&w, 2), *t3 = reply_text_n(&w, 3);
    strbuf both = {0};
    sb_add(&both, "%s%s", t2, t3);
    CHECK_EQ_INT(qmp_session_feed(s, both.s, both.len, NULL), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(w.order[5], 5);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 2);
    CHECK_EQ_INT(reply_n(s, &w, 5), 0);
    CHECK_EQ_INT(reply_n(s, &w, 4), 0);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK(c[i].tag == c[i].sent_tag);
        if (i != 0)
            CHECK_EQ_INT(json_object_get_int(c[i].ret), i);
    }
    CHECK_EQ_INT(w.dup, 0);
    free(t2);
    free(t3);
    sb_free(&both);
    calls_clear(c, 6);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* A thousand commands through a limit of 8, answered in a scrambled
 * order: at most 8 ever out, sent in the order they were made, and each
 * callback once with its own reply. */
TEST(many_commands_scrambled_replies)
{
    enum { N = 1000, LIMIT = 8 };
    rec r = {0};
    static call c[N];
    wire w = {0};
    memset(c, 0, sizeof(c));
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, LIMIT), 0);
    for (int i = 0; i < N; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    wire_pull(s, &w);
    uint32_t seed = 12345;
    int answered = 0, max_seen = 0;
    bool replied[N] = {false};
    while (answered < N) {
        /* The commands out and unanswered, in output order. */
        int out[N], n_out = 0;
        for (int i = 0; i < w.n_order; i++) {
            if (!replied[w.order[i]])
                out[n_out++] = w.order[i];
        }
        if (n_out > max_seen)
            max_seen = n_out;
        if ((size_t)n_out != qmp_session_in_flight_count(s)) {
            HARNESS_FAIL_("%d commands out, in_flight_count %zu", n_out,
                          qmp_session_in_flight_count(s));
            break;
        }
        if (n_out == 0) {
            HARNESS_FAIL_("nothing in flight with %d commands unanswered", N - answered);
            break;
        }
        seed = seed * 1103515245u + 12345u;
        int k = out[(seed >> 16) % (unsigned)n_out];
        if (reply_n(s, &w, k) != 0)
            break;
        replied[k] = true;
        answered++;
        wire_pull(s, &w);
    }
    CHECK_EQ_INT(answered, N);
    CHECK_EQ_INT(max_seen, LIMIT);
    CHECK_EQ_INT(w.n_order, N);
    CHECK_EQ_INT(w.dup, 0);
    for (int i = 0; i < w.n_order; i++) {
        if (w.order[i] != i) {
            HARNESS_FAIL_("output position %d holds c%d", i, w.order[i]);
            break;
        }
    }
    for (int i = 0; i < N; i++) {
        if (c[i].count != 1 || c[i].status != 0 || json_object_get_int(c[i].ret) != i) {
            HARNESS_FAIL_("c%d: count %d status %d ret %s", i, c[i].count, c[i].status,
                          jtext(c[i].ret));
            break;
        }
    }
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    calls_clear(c, N);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(exec_oob_bypasses_full_backlog)
{
    rec r = {0};
    call c[6] = {{0}};
    wire w = {0};
    qmp_session *s = ready_oob_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 2), 0);
    for (int i = 0; i < 4; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 2);
    /* Limit reached and two commands held back: exec-oob still goes out
     * at once, and does not count. */
    send_n(s, 4, QMP_EXEC_OOB, NULL, 0, &c[4]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    REQUIRE(w.req[4] != NULL);
    json_object *x = NULL;
    CHECK(json_object_object_get_ex(w.req[4], "exec-oob", &x));
    CHECK_EQ_INT(w.order[2], 4);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 2);
    CHECK_EQ_INT(qmp_session_pending_count(s), 5);
    /* Its reply, overtaking the in-band ones, frees no in-band slot. */
    CHECK_EQ_INT(reply_n(s, &w, 4), 0);
    CHECK_EQ_INT(c[4].count, 1);
    CHECK_EQ_INT(json_object_get_int(c[4].ret), 4);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 2);
    /* A second exec-oob, still past the backlog. */
    send_n(s, 5, QMP_EXEC_OOB, NULL, 0, &c[5]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[5] != NULL);
    CHECK(w.req[2] == NULL && w.req[3] == NULL);
    /* In-band replies let the held-back ones out, in order. */
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[2] != NULL && w.req[3] == NULL);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[3] != NULL);
    for (int k = 2; k < 6; k++) {
        if (k != 4)
            CHECK_EQ_INT(reply_n(s, &w, k), 0);
    }
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(json_object_get_int(c[i].ret), i);
    }
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    CHECK_EQ_INT(w.dup, 0);
    calls_clear(c, 6);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(cancel_held_back_command)
{
    rec r = {0};
    call c[4] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    for (int i = 0; i < 4; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);

    /* Held back: the callback runs at once, the command is never sent. */
    CHECK_EQ_INT(qmp_session_cancel(s, c[1].sent_tag, NULL), 0);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(c[1].status, -ECANCELED);
    CHECK_EQ_INT(c[1].err.category, QMP_ERR_CANCELLED);
    CHECK(c[1].tag == c[1].sent_tag);
    CHECK(c[1].text == NULL);
    CHECK_EQ_INT(qmp_session_pending_count(s), 3);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 1);
    CHECK_EQ_INT(qmp_session_cancel(s, c[1].sent_tag, NULL), -ENOENT);

    /* With the caller's own reason, the last one. */
    qmp_error why = QMP_ERROR_INIT;
    why.code = -ETIMEDOUT;
    why.category = QMP_ERR_TIMEOUT;
    snprintf(why.message, sizeof(why.message), "held back too long");
    CHECK_EQ_INT(qmp_session_cancel(s, c[3].sent_tag, &why), 0);
    CHECK_EQ_INT(c[3].count, 1);
    CHECK_EQ_INT(c[3].status, -ETIMEDOUT);
    CHECK_EQ_STR(c[3].err.message, "held back too long");
    CHECK_EQ_INT(wire_pull(s, &w), 0);

    /* The next reply lets c2 out, not the cancelled c1. */
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[2] != NULL);
    CHECK_EQ_INT(reply_n(s, &w, 2), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK(!wire_saw(&w, 1));
    CHECK(!wire_saw(&w, 3));
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(c[2].count, 1);
    CHECK_EQ_INT(c[3].count, 1);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    calls_clear(c, 4);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Cancelled after it went out: it keeps its slot until QEMU answers; the
 * late reply is dropped without a callback and lets the next one out. */
TEST(cancel_sent_command_keeps_slot)
{
    rec r = {0};
    call c[3] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    for (int i = 0; i < 3; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(qmp_session_cancel(s, c[0].sent_tag, NULL), 0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[0].status, -ECANCELED);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 1);
    CHECK_EQ_INT(qmp_session_pending_count(s), 2);
    CHECK_EQ_INT(qmp_session_cancel(s, c[0].sent_tag, NULL), -ENOENT);
    /* QEMU still holds c0: nothing else may go out. */
    CHECK_EQ_INT(wire_pull(s, &w), 0);

    int logs = r.n_logs;
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK(r.n_logs > logs);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[1] != NULL);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 1);
    /* A second copy of the late reply is just an unknown id. */
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[1].count, 0);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 1);

    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(json_object_get_int(c[1].ret), 1);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(reply_n(s, &w, 2), 0);
    CHECK_EQ_INT(c[2].count, 1);
    CHECK_EQ_INT(json_object_get_int(c[2].ret), 2);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    calls_clear(c, 3);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* The late reply of a cancelled command may be an error reply: dropped
 * all the same. */
TEST(cancel_sent_then_error_reply)
{
    rec r = {0};
    call c[2] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, NULL, 0, &c[1]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(qmp_session_cancel(s, c[0].sent_tag, NULL), 0);
    CHECK_EQ_INT(feed_reply(s, w.req[0],
                            "\"error\": {\"class\": \"GenericError\", \"desc\": \"late\"}", NULL),
                 0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[0].status, -ECANCELED);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(c[1].count, 1);
    calls_clear(c, 2);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* The reply has partly arrived (the session holds its first bytes) when
 * the command is cancelled: the rest completes a reply that is dropped. */
TEST(cancel_while_reply_half_fed)
{
    rec r = {0};
    call c[2] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, NULL, 0, &c[1]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    char *t = reply_text_n(&w, 0);
    size_t half = strlen(t) / 2;
    CHECK_EQ_INT(qmp_session_feed(s, t, half, NULL), 0);
    CHECK_EQ_INT(c[0].count, 0);
    CHECK_EQ_INT(qmp_session_cancel(s, c[0].sent_tag, NULL), 0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[0].status, -ECANCELED);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK_EQ_INT(qmp_session_feed(s, t + half, strlen(t) - half, NULL), 0);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(c[0].status, -ECANCELED);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(json_object_get_int(c[1].ret), 1);
    free(t);
    calls_clear(c, 2);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* A reply carrying the id of a command that was never sent (still held
 * back) cannot be its answer: dropped, the command stays queued. */
TEST(reply_to_held_back_id_dropped)
{
    rec r = {0};
    call c[2] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, NULL, 0, &c[1]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    /* c1's id, derived from c0's: the library numbers its ids by tag. */
    char id0[64], fake[96];
    snprintf(id0, sizeof(id0), "\"libqmp:%" PRIu64 "\"", c[0].sent_tag);
    json_object *idv = NULL;
    if (!json_object_object_get_ex(w.req[0], "id", &idv) || strcmp(jtext(idv), id0) != 0) {
        harness_skip("ids are not numbered by tag");
        calls_clear(c, 2);
        wire_free(&w);
        qmp_session_unref(s);
        rec_free(&r);
        return;
    }
    snprintf(fake, sizeof(fake), "{\"return\": 99, \"id\": \"libqmp:%" PRIu64 "\"}\r\n",
             c[1].sent_tag);
    int logs = r.n_logs;
    CHECK_EQ_INT(feed_str(s, fake, NULL), 0);
    CHECK_EQ_INT(c[1].count, 0);
    CHECK(r.n_logs > logs);
    CHECK_EQ_INT(qmp_session_pending_count(s), 2);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 1);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(json_object_get_int(c[1].ret), 1);
    calls_clear(c, 2);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* EOF with commands held back, sent, and cancelled after sending: every
 * live callback once with the disconnect, the cancelled ones not again. */
TEST(eof_with_held_back_sent_and_cancelled)
{
    rec r = {0};
    call c[6] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 3), 0);
    for (int i = 0; i < 6; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 3);
    CHECK_EQ_INT(qmp_session_cancel(s, c[0].sent_tag, NULL), 0); /* sent */
    CHECK_EQ_INT(qmp_session_cancel(s, c[4].sent_tag, NULL), 0); /* held back */
    CHECK_EQ_INT(qmp_session_pending_count(s), 4);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 3);
    size_t pending = qmp_session_pending_count(s);

    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_session_feed_eof(s, &err), -ECONNRESET);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    /* The message counts what was pending: c1, c2 (sent), c3, c5 (held). */
    char want[64];
    snprintf(want, sizeof(want), "with %zu commands pending", pending);
    CHECK_CONTAINS(err.message, want);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        if (i == 0 || i == 4) {
            CHECK_EQ_INT(c[i].status, -ECANCELED);
        } else {
            CHECK_EQ_INT(c[i].status, -ECONNRESET);
            CHECK_EQ_INT(c[i].err.category, QMP_ERR_DISCONNECTED);
            CHECK(c[i].tag == c[i].sent_tag);
        }
    }
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    /* Nothing more is written after the failure. */
    CHECK(qmp_session_get_output(s, NULL, NULL, NULL) == NULL);
    CHECK(!wire_saw(&w, 3) && !wire_saw(&w, 4) && !wire_saw(&w, 5));
    calls_clear(c, 6);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Only a cancelled command outstanding: nothing is pending any more. */
TEST(eof_with_only_cancelled_command)
{
    rec r = {0};
    call c = {0};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 2), 0);
    send_n(s, 0, 0, NULL, 0, &c);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(qmp_session_cancel(s, c.sent_tag, NULL), 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_session_feed_eof(s, &err), -ECONNRESET);
    CHECK(strstr(err.message, "pending") == NULL);
    CHECK_EQ_INT(c.count, 1);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    call_clear(&c);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

TEST(abort_and_unref_with_held_back)
{
    for (int how = 0; how < 2; how++) {
        rec r = {0};
        call c[4] = {{0}};
        wire w = {0};
        qmp_session *s = ready_session(&r);
        CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
        for (int i = 0; i < 4; i++)
            send_n(s, i, 0, NULL, 0, &c[i]);
        CHECK_EQ_INT(wire_pull(s, &w), 1);
        CHECK_EQ_INT(qmp_session_cancel(s, c[0].sent_tag, NULL), 0);
        int want = how == 0 ? -EPIPE : -ECANCELED;
        if (how == 0) {
            qmp_error why = QMP_ERROR_INIT;
            why.code = -EPIPE;
            why.category = QMP_ERR_DISCONNECTED;
            snprintf(why.message, sizeof(why.message), "write failed");
            qmp_session_abort(s, &why);
            CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
            CHECK_EQ_INT(qmp_session_pending_count(s), 0);
            CHECK_EQ_INT(wire_pull(s, &w), 0);
            qmp_session_unref(s);
        } else {
            qmp_session_unref(s); /* the last reference */
        }
        CHECK_EQ_INT(c[0].count, 1);
        CHECK_EQ_INT(c[0].status, -ECANCELED);
        for (int i = 1; i < 4; i++) {
            CHECK_EQ_INT(c[i].count, 1);
            CHECK_EQ_INT(c[i].status, want);
        }
        calls_clear(c, 4);
        wire_free(&w);
        rec_free(&r);
    }
}

/* Descriptors given with a held-back command go out with that command
 * when it is let out: in the chunk that starts with it, and only there. */
TEST(fds_travel_with_held_back_command)
{
    rec r = {0};
    call c[5] = {{0}};
    int p[2];
    REQUIRE(pipe(p) == 0);
    int two[2] = {p[0], p[1]}, one[1] = {p[1]}, other[1] = {p[0]};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, two, 2, &c[1]);
    send_n(s, 2, 0, NULL, 0, &c[2]);
    send_n(s, 3, 0, other, 1, &c[3]); /* cancelled before it goes out */
    send_n(s, 4, 0, one, 1, &c[4]);
    CHECK_EQ_INT(qmp_session_cancel(s, c[3].sent_tag, NULL), 0);

    size_t len = 0, nf = 99;
    const int *fds = NULL;
    const char *out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 0);
    CHECK(memmem(out, len, "\"c0\"", 4) != NULL);
    CHECK(memmem(out, len, "\"c1\"", 4) == NULL);
    char *t0 = strndup(out, len);
    json_object *r0 = jparse(t0);
    qmp_session_consume_output(s, len);
    CHECK(qmp_session_get_output(s, &len, &fds, &nf) == NULL);

    /* c0's reply lets c1 out, with its two descriptors. */
    json_object *id = NULL;
    REQUIRE(json_object_object_get_ex(r0, "id", &id));
    char reply[128];
    snprintf(reply, sizeof(reply), "{\"return\": {}, \"id\": %s}\r\n", jtext(id));
    CHECK_EQ_INT(feed_str(s, reply, NULL), 0);
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 2);
    CHECK(fds != NULL && fds[0] == p[0] && fds[1] == p[1]);
    CHECK(memmem(out, len, "\"c1\"", 4) != NULL);
    char *t1 = strndup(out, len);
    qmp_session_consume_output(s, len);
    CHECK(qmp_session_get_output(s, &len, &fds, &nf) == NULL);

    /* c1's reply lets c2 out, without descriptors. */
    json_object *r1 = jparse(t1);
    CHECK_EQ_INT(feed_reply(s, r1, "\"return\": {}", NULL), 0);
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 0);
    CHECK(memmem(out, len, "\"c2\"", 4) != NULL);
    char *t2 = strndup(out, len);
    qmp_session_consume_output(s, len);

    /* c2's reply lets c4 out (c3 was cancelled) with its one descriptor. */
    json_object *r2 = jparse(t2);
    CHECK_EQ_INT(feed_reply(s, r2, "\"return\": {}", NULL), 0);
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 1);
    CHECK(fds != NULL && fds[0] == p[1]);
    CHECK(memmem(out, len, "\"c4\"", 4) != NULL);
    CHECK(memmem(out, len, "\"c3\"", 4) == NULL);
    qmp_session_consume_output(s, len);
    CHECK(qmp_session_get_output(s, &len, &fds, &nf) == NULL);
    CHECK_EQ_INT(c[3].count, 1);
    CHECK_EQ_INT(c[3].status, -ECANCELED);
    qmp_session_unref(s);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(c[i].count, 1);
    json_object_put(r0);
    json_object_put(r1);
    json_object_put(r2);
    free(t0);
    free(t1);
    free(t2);
    calls_clear(c, 5);
    rec_free(&r);
    close(p[0]);
    close(p[1]);
}

/* Two held-back commands with descriptors let out by the same reply:
 * each chunk carries its own command's descriptors only. */
TEST(fds_of_two_promoted_commands_stay_apart)
{
    rec r = {0};
    call c[3] = {{0}};
    wire w = {0};
    int p[2];
    REQUIRE(pipe(p) == 0);
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, &p[0], 1, &c[1]);
    send_n(s, 2, 0, &p[1], 1, &c[2]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    /* Raising the limit lets both out at once. */
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 3), 0);
    size_t len = 0, nf = 0;
    const int *fds = NULL;
    const char *out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 1);
    CHECK(fds != NULL && fds[0] == p[0]);
    CHECK(memmem(out, len, "\"c1\"", 4) != NULL);
    CHECK(memmem(out, len, "\"c2\"", 4) == NULL);
    qmp_session_consume_output(s, len);
    out = qmp_session_get_output(s, &len, &fds, &nf);
    REQUIRE(out != NULL);
    CHECK_EQ_INT(nf, 1);
    CHECK(fds != NULL && fds[0] == p[1]);
    CHECK(memmem(out, len, "\"c2\"", 4) != NULL);
    qmp_session_consume_output(s, len);
    CHECK(qmp_session_get_output(s, &len, &fds, &nf) == NULL);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 3);
    qmp_session_unref(s);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(c[i].count, 1);
    calls_clear(c, 3);
    wire_free(&w);
    rec_free(&r);
    close(p[0]);
    close(p[1]);
}

TEST(changing_the_limit)
{
    rec r = {0};
    call c[8] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 65537), -EINVAL);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 65536), 0);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    for (int i = 0; i < 6; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);

    /* Raised: the held-back commands go out at once, oldest first. */
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 3), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 2);
    CHECK_EQ_INT(w.order[1], 1);
    CHECK_EQ_INT(w.order[2], 2);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 3);

    /* Lowered below what is out: nothing is recalled, nothing new goes
     * out until enough replies came. */
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 0);
    CHECK_EQ_INT(reply_n(s, &w, 2), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(w.order[3], 3);

    /* 0 lifts the limit: everything goes, and new commands too. */
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 0), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 2);
    send_n(s, 6, 0, NULL, 0, &c[6]);
    send_n(s, 7, 0, NULL, 0, &c[7]);
    CHECK_EQ_INT(wire_pull(s, &w), 2);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 5);
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(w.order[i], i);
    for (int i = 3; i < 8; i++)
        CHECK_EQ_INT(reply_n(s, &w, i), 0);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(json_object_get_int(c[i].ret), i);
    }
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    calls_clear(c, 8);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Without a limit (the default) every command goes out at once. */
TEST(unlimited_by_default)
{
    enum { N = 200 };
    rec r = {0};
    static call c[N];
    wire w = {0};
    memset(c, 0, sizeof(c));
    qmp_session *s = ready_session(&r);
    for (int i = 0; i < N; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), N);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), N);
    for (int i = N - 1; i >= 0; i--)
        CHECK_EQ_INT(reply_n(s, &w, i), 0);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(w.order[i], i);
    }
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    calls_clear(c, N);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* The limit set before the greeting holds once READY, and negotiation
 * itself is not held back. */
TEST(limit_set_before_greeting)
{
    rec r = {0};
    call c[3] = {{0}};
    wire w = {0};
    qmp_session *s = new_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = take_request(s);
    REQUIRE(caps != NULL);
    CHECK_EQ_STR(req_command(caps), "qmp_capabilities");
    CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", NULL), 0);
    json_object_put(caps);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    for (int i = 0; i < 3; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(reply_n(s, &w, i), 0);
        wire_pull(s, &w);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(c[i].count, 1);
    calls_clear(c, 3);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* Callbacks that send and cancel while the limit is reached. */
typedef struct chained {
    qmp_session *s;
    int count;
    int status;
    call next; /* sent from the callback: "c9" */
    int send_rc;
    uint64_t cancel_tag;
    int cancel_rc;
} chained;

static void chained_cb(qmp_session *s, qmp_reply *reply, void *userdata)
{
    chained *ch = userdata;
    ch->count++;
    ch->status = qmp_reply_status(reply);
    if (ch->cancel_tag != 0)
        ch->cancel_rc = qmp_session_cancel(s, ch->cancel_tag, NULL);
    ch->send_rc = qmp_session_send_command(s, "c9", NULL, 0, NULL, 0, reply_cb, &ch->next,
                                           &ch->next.sent_tag, NULL);
}

TEST(callbacks_send_and_cancel_behind_limit)
{
    rec r = {0};
    call c[3] = {{0}};
    chained ch = {0};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    uint64_t t0 = 0;
    REQUIRE(qmp_session_send_command(s, "c0", NULL, 0, NULL, 0, chained_cb, &ch, &t0, NULL) == 0);
    send_n(s, 1, 0, NULL, 0, &c[1]);
    send_n(s, 2, 0, NULL, 0, &c[2]);
    ch.cancel_tag = c[2].sent_tag;
    CHECK_EQ_INT(wire_pull(s, &w), 1);

    /* c0's callback cancels the held-back c2 and sends c9, which waits
     * behind c1. */
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(ch.count, 1);
    CHECK_EQ_INT(ch.status, 0);
    CHECK_EQ_INT(ch.cancel_rc, 0);
    CHECK_EQ_INT(ch.send_rc, 0);
    CHECK_EQ_INT(c[2].count, 1);
    CHECK_EQ_INT(c[2].status, -ECANCELED);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[1] != NULL);
    CHECK(w.req[9] == NULL);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[9] != NULL);
    CHECK(!wire_saw(&w, 2));
    CHECK_EQ_INT(reply_n(s, &w, 9), 0);
    CHECK_EQ_INT(ch.next.count, 1);
    CHECK_EQ_INT(json_object_get_int(ch.next.ret), 9);
    CHECK_EQ_INT(c[1].count, 1);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    call_clear(&ch.next);
    calls_clear(c, 3);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* A failure inside a callback (here: the session is aborted from a
 * reply callback) fails the held-back commands too, once. */
typedef struct aborter {
    int count;
} aborter;

static void abort_cb(qmp_session *s, qmp_reply *reply, void *userdata)
{
    aborter *a = userdata;
    (void)reply;
    a->count++;
    qmp_session_abort(s, NULL);
}

TEST(abort_from_callback_with_held_back)
{
    rec r = {0};
    call c[3] = {{0}};
    aborter a = {0};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    REQUIRE(qmp_session_send_command(s, "c0", NULL, 0, NULL, 0, abort_cb, &a, NULL, NULL) == 0);
    for (int i = 1; i < 3; i++)
        send_n(s, i, 0, NULL, 0, &c[i]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(reply_n(s, &w, 0), -ECONNRESET);
    CHECK_EQ_INT(a.count, 1);
    for (int i = 1; i < 3; i++) {
        CHECK_EQ_INT(c[i].count, 1);
        CHECK_EQ_INT(c[i].status, -ECONNRESET);
    }
    /* c1 had been let out by c0's reply before the callback ran; it is
     * failed like the rest, and nothing is left to write. */
    CHECK(qmp_session_get_output(s, NULL, NULL, NULL) == NULL);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 0);
    CHECK_EQ_INT(qmp_session_pending_count(s), 0);
    calls_clear(c, 3);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* A raw request is an in-band command like any other: it waits behind
 * the limit and behind the commands held back before it (a raw
 * "exec-oob" does not wait). */
TEST(raw_requests_respect_limit)
{
    rec r = {0};
    call c[2] = {{0}}, raw = {0}, raw_oob = {0};
    wire w = {0};
    qmp_session *s = ready_oob_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, NULL, 0, &c[1]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    json_object *m = jparse("{\"execute\": \"c5\", \"id\": \"mine\"}");
    CHECK_EQ_INT(qmp_session_send_raw(s, m, NULL, 0, reply_cb, &raw, NULL, NULL), 0);
    json_object_put(m);
    m = jparse("{\"exec-oob\": \"c6\", \"id\": \"mine-oob\"}");
    CHECK_EQ_INT(qmp_session_send_raw(s, m, NULL, 0, reply_cb, &raw_oob, NULL, NULL), 0);
    json_object_put(m);
    /* Only the exec-oob goes out now. */
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[6] != NULL);
    CHECK(w.req[5] == NULL);
    CHECK_EQ_INT(qmp_session_in_flight_count(s), 1);
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[1] != NULL && w.req[5] == NULL);
    CHECK_EQ_INT(reply_n(s, &w, 1), 0);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK(w.req[5] != NULL);
    if (w.req[5] != NULL)
        CHECK_EQ_INT(feed_reply(s, w.req[5], "\"return\": 5", NULL), 0);
    CHECK_EQ_INT(feed_reply(s, w.req[6], "\"return\": 6", NULL), 0);
    CHECK_EQ_INT(raw.count, 1);
    CHECK_EQ_INT(raw_oob.count, 1);
    calls_clear(c, 2);
    call_clear(&raw);
    call_clear(&raw_oob);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

/* QEMU greets again when its monitor was reset: until the new
 * qmp_capabilities is answered it refuses every command, so that request
 * must go out at once, not behind the commands held back. */
TEST(renegotiation_not_held_back)
{
    rec r = {0};
    call c[2] = {{0}};
    wire w = {0};
    qmp_session *s = ready_session(&r);
    CHECK_EQ_INT(qmp_session_set_max_in_flight(s, 1), 0);
    send_n(s, 0, 0, NULL, 0, &c[0]);
    send_n(s, 1, 0, NULL, 0, &c[1]);
    CHECK_EQ_INT(wire_pull(s, &w), 1);
    CHECK_EQ_INT(feed_str(s, GREETING, NULL), 0);
    json_object *caps = NULL;
    char *out = drain_output(s);
    if (out[0] != '\0')
        caps = jparse(out);
    free(out);
    CHECK(caps != NULL);
    if (caps != NULL) {
        CHECK_EQ_STR(req_command(caps), "qmp_capabilities");
        CHECK_EQ_INT(feed_reply(s, caps, "\"return\": {}", NULL), 0);
    }
    CHECK_EQ_INT(reply_n(s, &w, 0), 0);
    /* Now c1 follows. */
    out = drain_output(s);
    CHECK(strstr(out, "\"c1\"") != NULL);
    CHECK(strstr(out, "qmp_capabilities") == NULL);
    free(out);
    CHECK_EQ_INT(c[0].count, 1);
    CHECK_EQ_INT(qmp_session_get_state(s), QMP_SESSION_READY);
    json_object_put(caps);
    calls_clear(c, 2);
    wire_free(&w);
    qmp_session_unref(s);
    rec_free(&r);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(limit_holds_back_commands);
    RUN(many_commands_scrambled_replies);
    RUN(exec_oob_bypasses_full_backlog);
    RUN(cancel_held_back_command);
    RUN(cancel_sent_command_keeps_slot);
    RUN(cancel_sent_then_error_reply);
    RUN(cancel_while_reply_half_fed);
    RUN(reply_to_held_back_id_dropped);
    RUN(eof_with_held_back_sent_and_cancelled);
    RUN(eof_with_only_cancelled_command);
    RUN(abort_and_unref_with_held_back);
    RUN(fds_travel_with_held_back_command);
    RUN(fds_of_two_promoted_commands_stay_apart);
    RUN(changing_the_limit);
    RUN(unlimited_by_default);
    RUN(limit_set_before_greeting);
    RUN(callbacks_send_and_cancel_behind_limit);
    RUN(abort_from_callback_with_held_back);
    RUN(raw_requests_respect_limit);
    RUN(renegotiation_not_held_back);
    return harness_done();
}
