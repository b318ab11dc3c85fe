/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Scenarios of the non-blocking client against the scripted fake QEMU,
 * run through one event loop driver (async-drivers.h): test-loop.c runs
 * them through qmp_loop, test-adapter-*.c through each adapter.
 *
 * The program sets async_drv, then RUN()s the scenarios it wants (or
 * calls async_run_scenarios()).  Every wait has a deadline; deadlines
 * are checked from both sides (a timeout must not fire early, nor much
 * later), and rounds are counted where the loop should be idle, so a
 * loop that spins instead of sleeping fails.  Nothing sleeps.
 */
#ifndef QMP_TEST_ASYNC_SCENARIOS_H
#define QMP_TEST_ASYNC_SCENARIOS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "async-drivers.h"
#include "fake-qemu.h"
#include "harness.h"

/* Bound on waits that should end at once, and slack after a deadline
 * (valgrind is slow). */
#define ASYNC_WAIT_MS 10000
#define ASYNC_MARGIN_MS 3000
/* At most this many rounds while waiting for a timer: a loop that spins
 * runs thousands. */
#define ASYNC_MAX_IDLE_ROUNDS 100

static const async_driver *async_drv;
static int async_seq; /* orders callbacks of all kinds */

/* ----------------------------------------------------------- recorders */

typedef struct call_rec {
    int n; /* times the callback ran */
    int status;
    qmp_error_category category;
    char ret[600]; /* the return value as JSON, or the error message */
    long long t_ms;
    int seq;
} call_rec;

static void on_call(qmp_client *c, qmp_reply *reply, void *userdata)
{
    call_rec *rec = (call_rec *)userdata;

    (void)c;
    rec->n++;
    rec->status = qmp_reply_status(reply);
    rec->t_ms = async_now_ms();
    rec->seq = ++async_seq;
    if (rec->status == 0) {
        json_object *v = qmp_reply_return(reply);
        snprintf(rec->ret, sizeof(rec->ret), "%s",
                 v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null");
    } else {
        const qmp_error *e = qmp_reply_error(reply);
        rec->category = e ? e->category : QMP_ERR_NONE;
        snprintf(rec->ret, sizeof(rec->ret), "%s", e ? e->message : "");
    }
}

#define EV_LOG_MAX 16

typedef struct ev_log {
    int n;
    char names[EV_LOG_MAX][32];
    int seq[EV_LOG_MAX];
} ev_log;

static void on_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    ev_log *log = (ev_log *)userdata;

    (void)c;
    if (log->n < EV_LOG_MAX) {
        snprintf(log->names[log->n], sizeof(log->names[0]), "%s", qmp_event_name(ev));
        log->seq[log->n] = ++async_seq;
    }
    log->n++;
}

/* Connect and disconnect outcomes; calls points at the calls whose
 * callbacks must all have run before the disconnect callback. */
typedef struct conn_state {
    int connect_n;
    int connect_status;
    long long connect_t_ms;
    int disconnect_n;
    int disconnect_code;
    qmp_error_category disconnect_category;
    int calls_done_at_disconnect;
    call_rec *calls;
    int n_calls;
} conn_state;

static void on_connect(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    conn_state *st = (conn_state *)userdata;

    (void)c;
    (void)err;
    st->connect_n++;
    st->connect_status = status;
    st->connect_t_ms = async_now_ms();
}

static void on_disconnect(qmp_client *c, const qmp_error *err, void *userdata)
{
    conn_state *st = (conn_state *)userdata;

    (void)c;
    st->disconnect_n++;
    st->disconnect_code = err ? err->code : 0;
    st->disconnect_category = err ? err->category : QMP_ERR_NONE;
    st->calls_done_at_disconnect = 0;
    for (int i = 0; i < st->n_calls; i++)
        st->calls_done_at_disconnect += st->calls[i].n;
}

/* ------------------------------------------------------------- helpers */

static qmp_client *async_new_client(conn_state *st)
{
    qmp_client *c = NULL;

    if (qmp_client_new(&c) != 0 || c == NULL) {
        printf("# qmp_client_new failed\n");
        abort();
    }
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, ASYNC_WAIT_MS), 0);
    CHECK_EQ_INT(qmp_client_set_timeout(c, ASYNC_WAIT_MS), 0);
    qmp_client_set_connect_callback(c, on_connect, st);
    qmp_client_set_disconnect_callback(c, on_disconnect, st);
    return c;
}

/* Starts a call that must be accepted. */
static void async_call(qmp_client *c, const char *command, int timeout_ms, call_rec *rec)
{
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_client_execute_async(c, command, NULL, 0, timeout_ms, NULL, 0, on_call, rec, NULL,
                                     &err);
    if (r != 0)
        HARNESS_FAIL_("execute_async(%s) = %d: %s", command, r, err.message);
}

/* Starts the fake and connects c to it asynchronously over its
 * socketpair; waits for the connect callback.  Returns 0 when connected. */
static int async_connect_fake(void *loop, qmp_client *c, conn_state *st, fake_qemu *f)
{
    qmp_error err = QMP_ERROR_INIT;
    int r;

    if (fake_qemu_start(f) != 0) {
        HARNESS_FAIL_("fake QEMU did not start");
        return -1;
    }
    r = qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(f), &err);
    if (r != 0) {
        HARNESS_FAIL_("connect_fd_async = %d: %s", r, err.message);
        return -1;
    }
    int target = st->connect_n + 1;
    if (async_run_until(async_drv, loop, &st->connect_n, target, ASYNC_WAIT_MS) < 0) {
        HARNESS_FAIL_("no connect callback within %d ms", ASYNC_WAIT_MS);
        return -1;
    }
    if (st->connect_status != 0) {
        HARNESS_FAIL_("connect callback status %d", st->connect_status);
        return -1;
    }
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    return 0;
}

static void *async_loop_new_checked(void)
{
    void *loop = NULL;

    if (async_drv->loop_new(&loop) != 0 || loop == NULL) {
        printf("# %s: cannot create a loop\n", async_drv->name);
        abort();
    }
    return loop;
}

static void *async_attach(void *loop, qmp_client *c)
{
    void *h = NULL;

    CHECK_EQ_INT(async_drv->attach(loop, c, &h), 0);
    return h;
}

/* Runs idle rounds for about ms and checks that the loop slept rather
 * than spun: returns the number of rounds. */
static int async_idle(void *loop, int ms)
{
    long long end = async_now_ms() + ms;
    int rounds = 0;

    while (async_now_ms() < end && rounds < 1000) {
        long long left = end - async_now_ms();
        if (left <= 0)
            break;
        CHECK_EQ_INT(async_drv->iterate(loop, (int)left), 0);
        rounds++;
    }
    CHECK(rounds < ASYNC_MAX_IDLE_ROUNDS);
    return rounds;
}

static void async_teardown(void *loop, fake_qemu *f, qmp_client *c, void *handle)
{
    if (f != NULL) {
        CHECK_EQ_INT(fake_qemu_finish(f), 0);
        fake_qemu_free(f);
    }
    if (handle != NULL)
        async_drv->detach(loop, handle);
    qmp_client_unref(c);
    CHECK_EQ_INT(async_drv->loop_free(loop), 0);
}

/* ----------------------------------------------------------- scenarios */

/* Three calls in flight, answered out of order with events in between;
 * subscriptions by name and for everything. */
static ev_log calls_events_stop, calls_events_all;
static call_rec calls_events_rec[3];

static void calls_events_on_connect(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    on_connect(c, status, err, userdata);
    if (status != 0)
        return;
    /* Started from inside a callback: the loop must notice the output. */
    async_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &calls_events_rec[0]);
    async_call(c, "query-version", QMP_TIMEOUT_DEFAULT, &calls_events_rec[1]);
    async_call(c, "query-name", QMP_TIMEOUT_DEFAULT, &calls_events_rec[2]);
}

TEST(calls_and_events)
{
    fake_qemu *f = fake_qemu_new();
    int a = fake_qemu_expect(f, "query-status", NULL);
    int b = fake_qemu_expect(f, "query-version", NULL);
    int n = fake_qemu_expect(f, "query-name", NULL);
    fake_qemu_event(f, "STOP", NULL);
    fake_qemu_reply(f, n, "{\"name\": \"vm0\"}");
    fake_qemu_reply(f, a, "{\"status\": \"paused\", \"running\": false}");
    fake_qemu_event(f, "RESUME", NULL);
    fake_qemu_event(f, "DEVICE_DELETED", "{\"device\": \"d1\"}");
    fake_qemu_reply_error(f, b, "GenericError", "no version today");

    conn_state st = {0};
    memset(&calls_events_stop, 0, sizeof(calls_events_stop));
    memset(&calls_events_all, 0, sizeof(calls_events_all));
    memset(calls_events_rec, 0, sizeof(calls_events_rec));
    st.calls = calls_events_rec;
    st.n_calls = 3;
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    qmp_client_set_connect_callback(c, calls_events_on_connect, &st);
    CHECK_EQ_INT(qmp_client_subscribe(c, "STOP", on_event, &calls_events_stop, NULL), 0);
    CHECK_EQ_INT(qmp_client_subscribe(c, NULL, on_event, &calls_events_all, NULL), 0);
    /* Attached before connecting: watched from when it has a socket. */
    void *h = async_attach(loop, c);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);

    if (async_connect_fake(loop, c, &st, f) == 0) {
        int done = 0;
        long long t0 = async_now_ms();
        while (done < 3 && async_now_ms() - t0 < ASYNC_WAIT_MS) {
            CHECK_EQ_INT(async_drv->iterate(loop, ASYNC_WAIT_MS), 0);
            done = (calls_events_rec[0].n > 0) + (calls_events_rec[1].n > 0) +
                   (calls_events_rec[2].n > 0);
        }
        for (int i = 0; i < 3; i++)
            CHECK_EQ_INT(calls_events_rec[i].n, 1);
        CHECK_EQ_INT(calls_events_rec[0].status, 0);
        CHECK_CONTAINS(calls_events_rec[0].ret, "\"paused\"");
        CHECK_EQ_INT(calls_events_rec[1].status, -EREMOTEIO);
        CHECK_EQ_INT(calls_events_rec[1].category, QMP_ERR_COMMAND);
        CHECK_CONTAINS(calls_events_rec[1].ret, "no version today");
        CHECK_EQ_INT(calls_events_rec[2].status, 0);
        CHECK_EQ_STR(calls_events_rec[2].ret, "{\"name\":\"vm0\"}");
        /* Replies routed by id, in the order the fake sent them. */
        CHECK(calls_events_rec[2].seq < calls_events_rec[0].seq);
        CHECK(calls_events_rec[0].seq < calls_events_rec[1].seq);

        CHECK_EQ_INT(calls_events_stop.n, 1);
        CHECK_EQ_STR(calls_events_stop.names[0], "STOP");
        CHECK_EQ_INT(calls_events_all.n, 3);
        CHECK_EQ_STR(calls_events_all.names[0], "STOP");
        CHECK_EQ_STR(calls_events_all.names[1], "RESUME");
        CHECK_EQ_STR(calls_events_all.names[2], "DEVICE_DELETED");
        /* Subscriptions run in the order they were made. */
        CHECK(calls_events_stop.seq[0] < calls_events_all.seq[0]);
        CHECK(calls_events_all.seq[0] < calls_events_rec[2].seq);
        CHECK(calls_events_rec[0].seq < calls_events_all.seq[1]);
        CHECK(calls_events_all.seq[2] < calls_events_rec[1].seq);
        /* Taken by subscriptions, so not queued. */
        CHECK_EQ_INT(qmp_client_events_queued(c), 0);
        CHECK_EQ_INT(st.disconnect_n, 0);
        CHECK_EQ_INT(st.connect_n, 1);
    }
    async_teardown(loop, f, c, h);
}

/* Two calls that QEMU never answers time out on schedule, in order, and
 * the loop sleeps in between. */
TEST(call_timeout_on_schedule)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_expect(f, "query-name", NULL);
    fake_qemu_hold(f);

    conn_state st = {0};
    call_rec rec[2] = {{0}};
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    void *h = async_attach(loop, c);

    if (async_connect_fake(loop, c, &st, f) == 0) {
        long long t0 = async_now_ms();
        async_call(c, "query-status", 300, &rec[0]);
        async_call(c, "query-name", 600, &rec[1]);
        int done = 0;
        int rounds = 0;
        while (done < 2 && async_now_ms() - t0 < 600 + ASYNC_MARGIN_MS) {
            CHECK_EQ_INT(async_drv->iterate(loop, 600 + ASYNC_MARGIN_MS), 0);
            rounds++;
            done = (rec[0].n > 0) + (rec[1].n > 0);
        }
        printf("# %s: %d rounds, timeouts after %lld and %lld ms\n", async_drv->name, rounds,
               rec[0].t_ms - t0, rec[1].t_ms - t0);
        CHECK(rounds < ASYNC_MAX_IDLE_ROUNDS);
        for (int i = 0; i < 2; i++) {
            CHECK_EQ_INT(rec[i].n, 1);
            CHECK_EQ_INT(rec[i].status, -ETIMEDOUT);
            CHECK_EQ_INT(rec[i].category, QMP_ERR_TIMEOUT);
        }
        CHECK(rec[0].t_ms - t0 >= 300);
        CHECK(rec[0].t_ms - t0 < 300 + ASYNC_MARGIN_MS);
        CHECK(rec[1].t_ms - t0 >= 600);
        CHECK(rec[1].t_ms - t0 < 600 + ASYNC_MARGIN_MS);
        CHECK(rec[0].seq < rec[1].seq);
        /* A timeout leaves the connection usable. */
        CHECK_EQ_INT(qmp_client_is_connected(c), 1);
        CHECK_EQ_INT(st.disconnect_n, 0);
    }
    async_teardown(loop, f, c, h);
}

/* The connect deadline covers the greeting: a peer that never greets
 * fails the connect on schedule. */
TEST(connect_timeout_on_schedule)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_greeting(f, NULL);
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_hold(f);

    conn_state st = {0};
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, 400), 0);
    void *h = async_attach(loop, c);
    qmp_error err = QMP_ERROR_INIT;

    REQUIRE(fake_qemu_start(f) == 0);
    long long t0 = async_now_ms();
    int r = qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(f), &err);
    CHECK_EQ_INT(r, 0);
    if (r == 0) {
        int rounds = async_run_until(async_drv, loop, &st.connect_n, 1, 400 + ASYNC_MARGIN_MS);
        CHECK(rounds >= 0 && rounds < ASYNC_MAX_IDLE_ROUNDS);
        CHECK_EQ_INT(st.connect_n, 1);
        CHECK_EQ_INT(st.connect_status, -ETIMEDOUT);
        CHECK(st.connect_t_ms - t0 >= 400);
        CHECK(st.connect_t_ms - t0 < 400 + ASYNC_MARGIN_MS);
        CHECK_EQ_INT(qmp_client_is_connected(c), 0);
        /* Not an established connection: no disconnect callback. */
        CHECK_EQ_INT(st.disconnect_n, 0);
    }
    async_teardown(loop, f, c, h);
}

/* Connecting by address over TCP (a connect that may be in progress). */
TEST(connect_by_address)
{
    fake_qemu *f = fake_qemu_new_tcp();
    REQUIRE(f != NULL);
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q, "{\"status\": \"running\"}");

    conn_state st = {0};
    call_rec rec = {0};
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    void *h = async_attach(loop, c);
    qmp_error err = QMP_ERROR_INIT;

    REQUIRE(fake_qemu_start(f) == 0);
    CHECK_EQ_INT(qmp_client_connect_async(c, fake_qemu_address(f), &err), 0);
    CHECK(async_run_until(async_drv, loop, &st.connect_n, 1, ASYNC_WAIT_MS) >= 0);
    CHECK_EQ_INT(st.connect_status, 0);
    if (st.connect_status == 0 && st.connect_n == 1) {
        async_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec);
        CHECK(async_run_until(async_drv, loop, &rec.n, 1, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_INT(rec.status, 0);
        CHECK_EQ_STR(rec.ret, "{\"status\":\"running\"}");
    }
    async_teardown(loop, f, c, h);
}

/* The peer closes with calls pending: each fails once, then the
 * disconnect callback runs once; later calls fail at once, and the loop
 * goes idle. */
TEST(disconnect_fails_pending)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_expect(f, "query-name", NULL);
    fake_qemu_expect(f, "query-version", NULL);
    fake_qemu_close(f);

    conn_state st = {0};
    call_rec rec[3] = {{0}};
    st.calls = rec;
    st.n_calls = 3;
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    void *h = async_attach(loop, c);

    if (async_connect_fake(loop, c, &st, f) == 0) {
        async_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec[0]);
        async_call(c, "query-name", QMP_TIMEOUT_DEFAULT, &rec[1]);
        async_call(c, "query-version", QMP_TIMEOUT_DEFAULT, &rec[2]);
        CHECK(async_run_until(async_drv, loop, &st.disconnect_n, 1, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_INT(st.disconnect_n, 1);
        CHECK_EQ_INT(st.disconnect_category, QMP_ERR_DISCONNECTED);
        CHECK(st.disconnect_code < 0);
        CHECK_EQ_INT(st.calls_done_at_disconnect, 3);
        for (int i = 0; i < 3; i++) {
            CHECK_EQ_INT(rec[i].n, 1);
            CHECK(rec[i].status < 0);
            CHECK_EQ_INT(rec[i].category, QMP_ERR_DISCONNECTED);
        }
        CHECK_EQ_INT(qmp_client_is_connected(c), 0);

        /* Sticky: a new call fails at once and its callback never runs. */
        call_rec late = {0};
        qmp_error err = QMP_ERROR_INIT;
        int r = qmp_client_execute_async(c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                         on_call, &late, NULL, &err);
        CHECK(r < 0);
        CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);

        /* Idle: about 3 rounds of 50 ms, not thousands; nothing more runs. */
        long long t0 = async_now_ms();
        int rounds = async_idle(loop, 150);
        CHECK(async_now_ms() - t0 >= 140);
        CHECK(rounds <= 10);
        CHECK_EQ_INT(late.n, 0);
        CHECK_EQ_INT(st.disconnect_n, 1);
        for (int i = 0; i < 3; i++)
            CHECK_EQ_INT(rec[i].n, 1);
    }
    async_teardown(loop, f, c, h);
}

/* Reconnecting after a disconnect: a new socket under the same number
 * (which epoll-based loops must register anew) or under another. */
static void reconnect_case(int same_number)
{
    fake_qemu *f1 = fake_qemu_new(), *f2 = NULL;
    int q = fake_qemu_expect(f1, "query-status", NULL);
    fake_qemu_reply(f1, q, "{\"status\": \"running\"}");
    fake_qemu_close(f1);

    conn_state st = {0};
    call_rec rec1 = {0}, rec2 = {0};
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    void *h = async_attach(loop, c);

    if (async_connect_fake(loop, c, &st, f1) == 0) {
        int old_fd = qmp_client_get_fd(c);
        async_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec1);
        CHECK(async_run_until(async_drv, loop, &st.disconnect_n, 1, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_INT(rec1.n, 1);
        CHECK_EQ_INT(rec1.status, 0);
        CHECK_EQ_INT(qmp_client_get_fd(c), -1);

        /* Keep old_fd (free now: the client closed it) from the fake's
         * own end of its socketpair. */
        int placeholder = -1;
        if (same_number) {
            placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC);
            REQUIRE(placeholder >= 0);
            if (placeholder != old_fd) {
                REQUIRE(dup2(placeholder, old_fd) == old_fd);
                close(placeholder);
            }
        }
        f2 = fake_qemu_new();
        q = fake_qemu_expect(f2, "query-name", NULL);
        fake_qemu_reply(f2, q, "{\"name\": \"second\"}");
        REQUIRE(fake_qemu_start(f2) == 0);
        int fd = fake_qemu_take_client_fd(f2);
        if (same_number) {
            /* Replaces the placeholder. */
            REQUIRE(dup3(fd, old_fd, O_CLOEXEC) == old_fd);
            close(fd);
            fd = old_fd;
        } else if (fd == old_fd) {
            int other = fcntl(fd, F_DUPFD_CLOEXEC, old_fd + 1);
            REQUIRE(other >= 0);
            close(fd);
            fd = other;
        }
        qmp_error err = QMP_ERROR_INIT;
        CHECK_EQ_INT(qmp_client_connect_fd_async(c, fd, &err), 0);
        CHECK(async_run_until(async_drv, loop, &st.connect_n, 2, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_INT(st.connect_status, 0);
        CHECK_EQ_INT(qmp_client_get_fd(c) == old_fd, same_number);
        if (st.connect_n == 2 && st.connect_status == 0) {
            async_call(c, "query-name", QMP_TIMEOUT_DEFAULT, &rec2);
            CHECK(async_run_until(async_drv, loop, &rec2.n, 1, ASYNC_WAIT_MS) >= 0);
            CHECK_EQ_INT(rec2.status, 0);
            CHECK_EQ_STR(rec2.ret, "{\"name\":\"second\"}");
        }
        CHECK_EQ_INT(st.disconnect_n, 1);
    }
    if (f2 != NULL) {
        CHECK_EQ_INT(fake_qemu_finish(f2), 0);
        fake_qemu_free(f2);
    }
    async_teardown(loop, f1, c, h);
}

TEST(reconnect_same_fd_number)
{
    reconnect_case(1);
}

TEST(reconnect_other_fd_number)
{
    reconnect_case(0);
}

/* Connecting again while connected: the client closes its socket and
 * opens a new one within one call, usually under the same number, and
 * the loop must watch the new one. */
TEST(reconnect_while_connected)
{
    char dir[] = "/tmp/qmp-async-XXXXXX", p1[64], p2[64];
    REQUIRE(mkdtemp(dir) != NULL);
    snprintf(p1, sizeof(p1), "%s/one.sock", dir);
    snprintf(p2, sizeof(p2), "%s/two.sock", dir);
    fake_qemu *f1 = fake_qemu_new_unix(p1), *f2 = fake_qemu_new_unix(p2);
    REQUIRE(f1 != NULL && f2 != NULL);
    int q = fake_qemu_expect(f2, "query-name", NULL);
    fake_qemu_reply(f2, q, "{\"name\": \"two\"}");

    conn_state st = {0};
    call_rec rec = {0};
    qmp_error err = QMP_ERROR_INIT;
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    void *h = async_attach(loop, c);

    REQUIRE(fake_qemu_start(f1) == 0 && fake_qemu_start(f2) == 0);
    CHECK_EQ_INT(qmp_client_connect_async(c, p1, &err), 0);
    CHECK(async_run_until(async_drv, loop, &st.connect_n, 1, ASYNC_WAIT_MS) >= 0);
    CHECK_EQ_INT(st.connect_status, 0);
    int old_fd = qmp_client_get_fd(c);
    CHECK_EQ_INT(qmp_client_connect_async(c, p2, &err), 0);
    printf("# descriptor %d, then %d\n", old_fd, qmp_client_get_fd(c));
    CHECK(async_run_until(async_drv, loop, &st.connect_n, 2, ASYNC_WAIT_MS) >= 0);
    CHECK_EQ_INT(st.connect_status, 0);
    if (st.connect_n == 2 && st.connect_status == 0) {
        async_call(c, "query-name", QMP_TIMEOUT_DEFAULT, &rec);
        CHECK(async_run_until(async_drv, loop, &rec.n, 1, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_STR(rec.ret, "{\"name\":\"two\"}");
    }
    /* Closing is not a disconnect. */
    CHECK_EQ_INT(st.disconnect_n, 0);
    CHECK_EQ_INT(fake_qemu_finish(f1), 0);
    fake_qemu_free(f1);
    async_teardown(loop, f2, c, h);
    rmdir(dir);
}

/*
 * Client A's connection breaks while the loop dispatches it; A's
 * disconnect callback connects client B over a socket that gets A's old
 * descriptor number, and attaches B to the same loop, all before the loop
 * has looked at A again.  B must be watched all the same: A's stale watch
 * must neither take B's events nor remove B's registration.
 */
typedef struct reuse_ctx {
    void *loop;
    int old_fd;
    fake_qemu *fb;
    qmp_client *b;
    void *hb;
    conn_state sb;
    int added;
} reuse_ctx;

static void reuse_on_disconnect(qmp_client *c, const qmp_error *err, void *userdata)
{
    reuse_ctx *r = (reuse_ctx *)userdata;
    qmp_error e = QMP_ERROR_INIT;

    (void)c;
    (void)err;
    if (fake_qemu_start(r->fb) != 0)
        return;
    int fd = fake_qemu_take_client_fd(r->fb);
    if (fd != r->old_fd) {
        /* old_fd is free: A closed it. */
        if (dup3(fd, r->old_fd, O_CLOEXEC) != r->old_fd)
            return;
        close(fd);
    }
    r->b = async_new_client(&r->sb);
    if (async_drv->attach(r->loop, r->b, &r->hb) == 0 &&
        qmp_client_connect_fd_async(r->b, r->old_fd, &e) == 0)
        r->added = 1;
}

TEST(fd_number_reused_by_another_client)
{
    fake_qemu *fa = fake_qemu_new();
    int q = fake_qemu_expect(fa, "query-status", NULL);
    fake_qemu_reply(fa, q, "{}");
    fake_qemu_close(fa);
    reuse_ctx r;
    conn_state sa = {0};
    call_rec ra = {0}, rb = {0};

    memset(&r, 0, sizeof(r));
    r.fb = fake_qemu_new();
    q = fake_qemu_expect(r.fb, "query-name", NULL);
    fake_qemu_reply(r.fb, q, "{\"name\": \"b\"}");
    r.loop = async_loop_new_checked();
    qmp_client *a = async_new_client(&sa);
    qmp_client_set_disconnect_callback(a, reuse_on_disconnect, &r);
    void *ha = async_attach(r.loop, a);
    if (async_connect_fake(r.loop, a, &sa, fa) == 0) {
        r.old_fd = qmp_client_get_fd(a);
        async_call(a, "query-status", QMP_TIMEOUT_DEFAULT, &ra);
        CHECK(async_run_until(async_drv, r.loop, &r.added, 1, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_INT(ra.status, 0);
        if (r.added) {
            CHECK_EQ_INT(qmp_client_get_fd(r.b), r.old_fd);
            CHECK(async_run_until(async_drv, r.loop, &r.sb.connect_n, 1, ASYNC_WAIT_MS) >= 0);
            CHECK_EQ_INT(r.sb.connect_status, 0);
            async_call(r.b, "query-name", QMP_TIMEOUT_DEFAULT, &rb);
            CHECK(async_run_until(async_drv, r.loop, &rb.n, 1, ASYNC_WAIT_MS) >= 0);
            CHECK_EQ_INT(rb.status, 0);
            CHECK_EQ_STR(rb.ret, "{\"name\":\"b\"}");
        } else {
            HARNESS_FAIL_("client B was not connected and attached");
        }
    }
    CHECK_EQ_INT(fake_qemu_finish(r.fb), 0);
    fake_qemu_free(r.fb);
    if (r.hb != NULL)
        async_drv->detach(r.loop, r.hb);
    qmp_client_unref(r.b);
    async_teardown(r.loop, fa, a, ha);
}

/* A blocking call (allowed outside libqmp's callbacks) finds the
 * connection closed and closes the socket while the loop still watches
 * it, with a change of its events pending (a call was just started). */
TEST(blocking_call_breaks_connection)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_close(f);

    conn_state st = {0};
    call_rec rec = {0};
    qmp_error err = QMP_ERROR_INIT;
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    void *h = async_attach(loop, c);

    if (async_connect_fake(loop, c, &st, f) == 0) {
        CHECK_EQ_INT(fake_qemu_wait_done(f, ASYNC_WAIT_MS), 0);
        async_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec);
        int r = qmp_client_execute(c, "query-name", NULL, NULL, &err);
        CHECK(r < 0);
        CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
        CHECK_EQ_INT(rec.n, 1);
        CHECK_EQ_INT(rec.category, QMP_ERR_DISCONNECTED);
        /* The loop copes, and goes idle. */
        async_idle(loop, 150);
        CHECK_EQ_INT(rec.n, 1);
        CHECK(st.disconnect_n <= 1);
        CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    }
    async_teardown(loop, f, c, h);
}

/* A callback detaches its own client and drops the last outside
 * reference; the client goes away after its callback, its other pending
 * call fails once, and a second client on the same loop carries on. */
typedef struct detach_ctx {
    void *loop;
    void *handle;
    qmp_client *c;
    call_rec first, second;
} detach_ctx;

static void detach_on_first(qmp_client *c, qmp_reply *reply, void *userdata)
{
    detach_ctx *d = (detach_ctx *)userdata;

    on_call(c, reply, &d->first);
    async_drv->detach(d->loop, d->handle);
    d->handle = NULL;
    qmp_client_unref(d->c);
    d->c = NULL;
}

TEST(detach_in_callback)
{
    fake_qemu *fa = fake_qemu_new(), *fb = fake_qemu_new();
    int q = fake_qemu_expect(fa, "query-status", NULL);
    fake_qemu_expect(fa, "query-name", NULL);
    fake_qemu_reply(fa, q, "{}");
    fake_qemu_hold(fa);
    q = fake_qemu_expect(fb, "query-status", NULL);
    fake_qemu_hold(fb);
    fake_qemu_reply(fb, q, "{\"b\": 1}");

    conn_state sa = {0}, sb = {0};
    detach_ctx d;
    call_rec rb = {0};
    memset(&d, 0, sizeof(d));
    void *loop = async_loop_new_checked();
    d.loop = loop;
    d.c = async_new_client(&sa);
    qmp_client *b = async_new_client(&sb);
    d.handle = async_attach(loop, d.c);
    void *hb = async_attach(loop, b);

    if (async_connect_fake(loop, d.c, &sa, fa) == 0 && async_connect_fake(loop, b, &sb, fb) == 0) {
        qmp_error err = QMP_ERROR_INIT;
        CHECK_EQ_INT(qmp_client_execute_async(d.c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT,
                                              NULL, 0, detach_on_first, &d, NULL, &err),
                     0);
        async_call(d.c, "query-name", QMP_TIMEOUT_DEFAULT, &d.second);
        async_call(b, "query-status", QMP_TIMEOUT_DEFAULT, &rb);
        CHECK(async_run_until(async_drv, loop, &d.first.n, 1, ASYNC_WAIT_MS) >= 0);
        /* The client was freed once its callback returned: the pending
         * call ended then, exactly once. */
        CHECK(d.c == NULL);
        CHECK_EQ_INT(d.first.n, 1);
        CHECK_EQ_INT(d.first.status, 0);
        CHECK_EQ_INT(d.second.n, 1);
        CHECK(d.second.status < 0);
        /* The other client still works. */
        fake_qemu_resume(fb);
        CHECK(async_run_until(async_drv, loop, &rb.n, 1, ASYNC_WAIT_MS) >= 0);
        CHECK_EQ_INT(rb.status, 0);
        CHECK_EQ_STR(rb.ret, "{\"b\":1}");
        CHECK_EQ_INT(sa.disconnect_n, 0);
    }
    if (d.handle != NULL)
        async_drv->detach(loop, d.handle);
    qmp_client_unref(d.c);
    CHECK_EQ_INT(fake_qemu_finish(fa), 0);
    fake_qemu_free(fa);
    async_teardown(loop, fb, b, hb);
}

/* More calls than may be in flight: the client queues them, and every
 * reply comes back to its own call, in order. */
TEST(many_calls_queued)
{
    enum { N = 24 };
    fake_qemu *f = fake_qemu_new();
    for (int i = 0; i < N; i++) {
        char ret[32];
        int q = fake_qemu_expect(f, "query-status", NULL);
        snprintf(ret, sizeof(ret), "{\"n\": %d}", i);
        fake_qemu_reply(f, q, ret);
    }

    conn_state st = {0};
    call_rec rec[N];
    memset(rec, 0, sizeof(rec));
    void *loop = async_loop_new_checked();
    qmp_client *c = async_new_client(&st);
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 3), 0);
    void *h = async_attach(loop, c);

    if (async_connect_fake(loop, c, &st, f) == 0) {
        for (int i = 0; i < N; i++)
            async_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec[i]);
        CHECK(async_run_until(async_drv, loop, &rec[N - 1].n, 1, ASYNC_WAIT_MS) >= 0);
        for (int i = 0; i < N; i++) {
            char want[32];
            snprintf(want, sizeof(want), "{\"n\":%d}", i);
            CHECK_EQ_INT(rec[i].n, 1);
            CHECK_EQ_STR(rec[i].ret, want);
            if (i > 0)
                CHECK(rec[i - 1].seq < rec[i].seq);
        }
    }
    async_teardown(loop, f, c, h);
}

/* Every scenario above. */
static inline void async_run_scenarios(void)
{
    RUN(calls_and_events);
    RUN(call_timeout_on_schedule);
    RUN(connect_timeout_on_schedule);
    RUN(connect_by_address);
    RUN(disconnect_fails_pending);
    RUN(reconnect_same_fd_number);
    RUN(reconnect_other_fd_number);
    RUN(reconnect_while_connected);
    RUN(fd_number_reused_by_another_client);
    RUN(blocking_call_breaks_connection);
    RUN(detach_in_callback);
    RUN(many_calls_queued);
}

#endif /* QMP_TEST_ASYNC_SCENARIOS_H */
