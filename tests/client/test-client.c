/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the blocking client (qmp_client, qmp_listener) against the
 * scripted fake QEMU, over socketpairs, unix sockets and TCP on
 * 127.0.0.1.  Failures must be reported at once and deadlines must hold,
 * so several tests measure how long a call took: an upper bound catches
 * a hang or a deadline stretched by a slow peer, a lower bound a call
 * that gave up early.  Nothing here sleeps to synchronise.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "fake-qemu.h"
#include "harness.h"
#include "qmp/qmp.h"

/* Generous margin for a call to return after its deadline, and bound
 * for calls that must not wait at all (valgrind is slow). */
#define MARGIN_MS 3000
#define CALL_TIMEOUT_MS 10000

static char tmpdir[64];

/* Outputs must be left alone on failure: they start as this. */
static max_align_t sentinel_storage;
#define SENTINEL_JSON ((json_object *)(void *)&sentinel_storage)
#define SENTINEL_EVENT ((qmp_event *)(void *)&sentinel_storage)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static qmp_client *new_client(void)
{
    qmp_client *c = NULL;
    if (qmp_client_new(&c) != 0 || c == NULL) {
        printf("# qmp_client_new failed\n");
        abort();
    }
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, CALL_TIMEOUT_MS), 0);
    CHECK_EQ_INT(qmp_client_set_timeout(c, CALL_TIMEOUT_MS), 0);
    return c;
}

/* Starts f and connects c over the socketpair; returns connect's result. */
static int connect_fake(qmp_client *c, fake_qemu *f, qmp_error *err)
{
    if (fake_qemu_start(f) != 0) {
        HARNESS_FAIL_("fake QEMU did not start");
        return -1;
    }
    return qmp_client_connect_fd(c, fake_qemu_take_client_fd(f), err);
}

/* Tears down: the fake must have seen exactly its script. */
static void finish(fake_qemu *f, qmp_client *c)
{
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    qmp_client_unref(c);
}

/* Checks that a later call fails at once with the sticky error. */
static void check_sticky(qmp_client *c, int code)
{
    qmp_error err = QMP_ERROR_INIT;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), code);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
}

static json_object *jparse(const char *text)
{
    json_object *v = json_tokener_parse(text);
    if (v == NULL) {
        printf("# bad JSON in test: %s\n", text);
        abort();
    }
    return v;
}

static const char *member_str(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return NULL;
    return json_object_get_string(v);
}

static void sock_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

/* ------------------------------------------------------------- basics */

/* A subscription callback that closes the client while a blocking wait
 * reads: the wait must end at once with -ECANCELED, not spin until (or
 * past) its deadline. */
static void close_on_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    (void)ev;
    (*(int *)userdata)++;
    qmp_client_close(c);
}

TEST(close_inside_callback_ends_wait)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_hold(f);
    fake_qemu_event(f, "X", NULL);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    int closed = 0;
    CHECK_EQ_INT(qmp_client_subscribe(c, "X", close_on_event, &closed, NULL), 0);
    fake_qemu_resume(f); /* X is read inside the wait below */
    qmp_event *ev = NULL;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_wait_event(c, "NEVER", NULL, 10000, &ev, &err), -ECANCELED);
    CHECK(now_ms() - t0 < 5000);
    CHECK_EQ_INT(err.category, QMP_ERR_CANCELLED);
    CHECK_EQ_INT(closed, 1);
    CHECK(ev == NULL);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    finish(f, c);
}

TEST(execute_over_socketpair)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect_full(f, "query-status", NULL, FAKE_QEMU_ARGS_EXACT, 0);
    fake_qemu_reply(f, q, "{\"status\": \"running\", \"singlestep\": false, \"running\": true}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    int fd = qmp_client_get_fd(c);
    CHECK(fd >= 0);
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CHECK_EQ_INT(qmp_client_oob_enabled(c), 0);
    const qmp_greeting *g = qmp_client_get_greeting(c);
    REQUIRE(g != NULL);
    int maj = 0, min = 0, mic = -1;
    qmp_greeting_version(g, &maj, &min, &mic);
    CHECK(maj == 7 && min == 2 && mic == 0);
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "oob"), 1);

    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "status"), "running");
    json_object_put(ret);
    /* oob was offered but not wanted. */
    json_object *caps = fake_qemu_request(f, FAKE_QEMU_CAPS_REQ), *args = NULL, *en = NULL;
    REQUIRE(caps != NULL);
    if (json_object_object_get_ex(caps, "arguments", &args) &&
        json_object_object_get_ex(args, "enable", &en))
        CHECK_EQ_INT(json_object_array_length(en), 0);
    finish(f, c);
}

TEST(oob_when_wanted)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "migrate-pause", NULL);
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_want_oob(c, 1), 0);
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_oob_enabled(c), 1);
    json_object *caps = fake_qemu_request(f, FAKE_QEMU_CAPS_REQ), *want = NULL, *args = NULL;
    want = jparse("{\"enable\": [\"oob\"]}");
    CHECK(json_object_object_get_ex(caps, "arguments", &args));
    CHECK(json_object_equal(args, want));
    json_object_put(want);
    CHECK_EQ_INT(qmp_client_execute_full(c, "migrate-pause", NULL, QMP_EXEC_OOB,
                                         QMP_TIMEOUT_DEFAULT, NULL, 0, NULL, &err),
                 0);
    json_object *x = NULL;
    CHECK(json_object_object_get_ex(fake_qemu_request(f, q), "exec-oob", &x));
    finish(f, c);
}

TEST(not_connected)
{
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    CHECK(qmp_client_get_greeting(c) == NULL);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), -ENOTCONN);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, NULL), -ENOTCONN);
    CHECK(ev == NULL);
    CHECK_EQ_INT(qmp_client_set_timeout(c, -2), -EINVAL);
    CHECK_EQ_INT(qmp_client_set_timeout(c, QMP_TIMEOUT_INFINITE), 0);
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, -3), -EINVAL);
    CHECK_EQ_INT(qmp_client_set_event_queue_max(c, 0), -EINVAL);
    CHECK_EQ_INT(qmp_client_set_max_message_size(c, 10), -EINVAL);
    qmp_client_close(c);
    CHECK(qmp_client_ref(c) == c);
    CHECK(qmp_client_unref(c) == NULL);
    CHECK(qmp_client_unref(c) == NULL);
    CHECK(qmp_client_unref(NULL) == NULL);
}

TEST(unix_socket_path)
{
    char path[128];
    sock_path(path, sizeof(path), "qmp.sock");
    for (int form = 0; form < 2; form++) {
        fake_qemu *f = fake_qemu_new_unix(path);
        REQUIRE(f != NULL);
        int q = fake_qemu_expect(f, "query-name", NULL);
        fake_qemu_reply(f, q, "{\"name\": \"vm0\"}");
        REQUIRE(fake_qemu_start(f) == 0);
        qmp_client *c = new_client();
        qmp_error err = QMP_ERROR_INIT;
        char addr[160];
        snprintf(addr, sizeof(addr), "%s%s", form ? "unix:" : "", path);
        CHECK_EQ_INT(qmp_client_connect(c, addr, &err), 0);
        CHECK(fcntl(qmp_client_get_fd(c), F_GETFD) & FD_CLOEXEC);
        json_object *ret = NULL;
        CHECK_EQ_INT(qmp_client_execute(c, "query-name", NULL, &ret, &err), 0);
        CHECK_EQ_STR(member_str(ret, "name"), "vm0");
        json_object_put(ret);
        finish(f, c);
    }
}

TEST(fd_address)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "stop", NULL);
    fake_qemu_reply(f, q, "{}");
    REQUIRE(fake_qemu_start(f) == 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "fd:%d", fake_qemu_take_client_fd(f));
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_connect(c, addr, &err), 0);
    CHECK_EQ_INT(qmp_client_execute(c, "stop", NULL, NULL, &err), 0);
    finish(f, c);
}

TEST(reconnect_replaces_connection)
{
    fake_qemu *f1 = fake_qemu_new();
    fake_qemu *f2 = fake_qemu_new();
    fake_qemu_set_greeting(f2, "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 1, \"minor\": 0, "
                               "\"major\": 8}, \"package\": \"\"}, \"capabilities\": []}}");
    int q = fake_qemu_expect(f2, "query-status", NULL);
    fake_qemu_reply(f2, q, "{\"status\": \"paused\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f1, &err) == 0);
    qmp_client_close(c);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), -ENOTCONN);
    REQUIRE(connect_fake(c, f2, &err) == 0);
    int maj = 0;
    qmp_greeting_version(qmp_client_get_greeting(c), &maj, NULL, NULL);
    CHECK_EQ_INT(maj, 8);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "status"), "paused");
    json_object_put(ret);
    CHECK_EQ_INT(fake_qemu_finish(f1), 0);
    fake_qemu_free(f1);
    finish(f2, c);
}

/* ---------------------------------------------------- connect failures */

TEST(bad_greeting)
{
    static const char *bad[] = {"{\"QMP\": \"nope\"}", "{\"QMP\": []}", "[\"QMP\"]",
                                "this is not QMP"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fake_qemu *f = fake_qemu_new();
        fake_qemu_set_greeting(f, bad[i]);
        fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
        qmp_client *c = new_client();
        qmp_error err = QMP_ERROR_INIT;
        long long t0 = now_ms();
        int rc = connect_fake(c, f, &err);
        long long dt = now_ms() - t0;
        CHECK_EQ_INT(rc, -EPROTO);
        CHECK_EQ_INT(err.code, -EPROTO);
        if (i < 2)
            CHECK_EQ_INT(err.category, QMP_ERR_GREETING);
        else
            CHECK(err.category == QMP_ERR_GREETING || err.category == QMP_ERR_PROTOCOL);
        CHECK(dt < CALL_TIMEOUT_MS / 2);
        CHECK_EQ_INT(qmp_client_is_connected(c), 0);
        finish(f, c);
    }
}

TEST(negotiation_failure)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_FAIL);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(connect_fake(c, f, &err), -EPROTO);
    CHECK_EQ_INT(err.category, QMP_ERR_NEGOTIATION);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_GENERIC_ERROR);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), -ENOTCONN);
    finish(f, c);
}

TEST(no_greeting_times_out)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_greeting(f, NULL);
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_hold(f);
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, 300), 0);
    qmp_error err = QMP_ERROR_INIT;
    long long t0 = now_ms();
    CHECK_EQ_INT(connect_fake(c, f, &err), -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK_CONTAINS(err.message, "another client");
    CHECK(dt >= 250);
    CHECK(dt < 300 + MARGIN_MS);
    finish(f, c);
}

TEST(negotiation_times_out)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_expect(f, "qmp_capabilities", NULL);
    fake_qemu_hold(f);
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, 300), 0);
    qmp_error err = QMP_ERROR_INIT;
    long long t0 = now_ms();
    CHECK_EQ_INT(connect_fake(c, f, &err), -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(dt >= 250);
    CHECK(dt < 300 + MARGIN_MS);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    finish(f, c);
}

TEST(reply_then_close)
{
    /* The reply and the end of file may arrive together: the reply still
     * counts, the next call sees the disconnect. */
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "quit", NULL);
    fake_qemu_reply(f, q, "{}");
    fake_qemu_event(f, "SHUTDOWN", "{\"guest\": false, \"reason\": \"host-qmp-quit\"}");
    fake_qemu_close(f);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "quit", NULL, &ret, &err), 0);
    json_object_put(ret);
    REQUIRE(fake_qemu_wait_done(f, CALL_TIMEOUT_MS) == 0);
    qmp_event *ev = NULL;
    CHECK_EQ_INT(qmp_client_wait_event(c, "SHUTDOWN", NULL, CALL_TIMEOUT_MS, &ev, &err), 0);
    qmp_event_unref(ev);
    check_sticky(c, -ECONNRESET);
    finish(f, c);
}

/* Sets up a fake that closes the connection at a given stage of
 * connecting. */
static fake_qemu *fake_closing_at(int stage)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    switch (stage) {
    case 0: /* before the greeting */
        fake_qemu_set_greeting(f, NULL);
        fake_qemu_close(f);
        break;
    case 1: /* in the middle of the greeting */
        fake_qemu_set_greeting(f, NULL);
        fake_qemu_send(f, FAKE_QEMU_GREETING "\r\n");
        fake_qemu_cut(f, 30);
        break;
    case 2: /* after the greeting */
        fake_qemu_close(f);
        break;
    case 3: /* after receiving qmp_capabilities */
        fake_qemu_expect(f, "qmp_capabilities", NULL);
        fake_qemu_close(f);
        break;
    default: /* in the middle of the capabilities reply */
        fake_qemu_reply(f, fake_qemu_expect(f, "qmp_capabilities", NULL), "{}");
        fake_qemu_cut(f, 8);
        break;
    }
    return f;
}

TEST(disconnect_while_connecting)
{
    for (int stage = 0; stage < 5; stage++) {
        fake_qemu *f = fake_closing_at(stage);
        qmp_client *c = new_client();
        qmp_error err = QMP_ERROR_INIT;
        long long t0 = now_ms();
        int rc = connect_fake(c, f, &err);
        long long dt = now_ms() - t0;
        if (rc != -ECONNRESET || err.category != QMP_ERR_DISCONNECTED)
            HARNESS_FAIL_("stage %d: %d %s: %s", stage, rc, qmp_error_category_name(err.category),
                          err.message);
        if (dt >= CALL_TIMEOUT_MS / 2)
            HARNESS_FAIL_("stage %d: took %lld ms: not reported at once", stage, dt);
        CHECK_EQ_INT(qmp_client_is_connected(c), 0);
        finish(f, c);
    }
}

TEST(disconnect_with_command_pending)
{
    for (int mid_message = 0; mid_message < 2; mid_message++) {
        fake_qemu *f = fake_qemu_new();
        int q = fake_qemu_expect(f, "query-status", NULL);
        if (mid_message) {
            fake_qemu_reply(f, q, "{\"status\": \"running\"}");
            fake_qemu_cut(f, 12);
        } else {
            fake_qemu_close(f);
        }
        qmp_client *c = new_client();
        qmp_error err = QMP_ERROR_INIT;
        REQUIRE(connect_fake(c, f, &err) == 0);
        json_object *ret = SENTINEL_JSON;
        long long t0 = now_ms();
        int rc = qmp_client_execute(c, "query-status", NULL, &ret, &err);
        long long dt = now_ms() - t0;
        CHECK_EQ_INT(rc, -ECONNRESET);
        CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
        CHECK(ret == SENTINEL_JSON);
        CHECK(dt < CALL_TIMEOUT_MS / 2);
        check_sticky(c, -ECONNRESET);
        finish(f, c);
    }
}

TEST(half_close)
{
    for (int pending = 0; pending < 2; pending++) {
        fake_qemu *f = fake_qemu_new();
        /* Without a command pending, shut down only once connected, so
         * that connecting cannot see the end of file. */
        if (pending)
            fake_qemu_expect(f, "query-status", NULL);
        else
            fake_qemu_hold(f);
        fake_qemu_shutdown_write(f);
        fake_qemu_hold(f);
        qmp_client *c = new_client();
        qmp_error err = QMP_ERROR_INIT;
        REQUIRE(connect_fake(c, f, &err) == 0);
        if (!pending)
            fake_qemu_resume(f);
        long long t0 = now_ms();
        CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), -ECONNRESET);
        CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
        CHECK(now_ms() - t0 < CALL_TIMEOUT_MS / 2);
        check_sticky(c, -ECONNRESET);
        finish(f, c);
    }
}

TEST(sigpipe_never_raised)
{
    /* The peer is gone before we write; SIGPIPE has its default action,
     * which would kill this process. */
    struct sigaction sa;
    CHECK(sigaction(SIGPIPE, NULL, &sa) == 0);
    CHECK(sa.sa_handler == SIG_DFL);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_close(f);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    REQUIRE(fake_qemu_wait_done(f, CALL_TIMEOUT_MS) == 0);
    json_object *args = json_object_new_object();
    char *pad = malloc(1 << 20);
    memset(pad, 'p', (1 << 20) - 1);
    pad[(1 << 20) - 1] = '\0';
    json_object_object_add(args, "pad", json_object_new_string(pad));
    int rc = qmp_client_execute(c, "human-monitor-command", args, NULL, &err);
    CHECK(rc == -ECONNRESET || rc == -EPIPE);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    rc = qmp_client_execute(c, "human-monitor-command", args, NULL, &err);
    CHECK(rc == -ECONNRESET || rc == -EPIPE);
    json_object_put(args);
    free(pad);
    finish(f, c);
}

/* ------------------------------------------------------------ deadlines */

TEST(timeout_then_late_reply)
{
    fake_qemu *f = fake_qemu_new();
    int a = fake_qemu_expect(f, "slow", NULL);
    int b = fake_qemu_expect(f, "fast", NULL);
    fake_qemu_reply(f, a, "{\"which\": \"slow\"}");
    fake_qemu_reply(f, b, "{\"which\": \"fast\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *ret = SENTINEL_JSON;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_execute_full(c, "slow", NULL, 0, 300, NULL, 0, &ret, &err), -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(ret == SENTINEL_JSON);
    ret = NULL;
    CHECK(dt >= 250);
    CHECK(dt < 300 + MARGIN_MS);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    /* The late reply to "slow" arrives first; "fast" must get its own. */
    CHECK_EQ_INT(qmp_client_execute(c, "fast", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "which"), "fast");
    json_object_put(ret);
    finish(f, c);
}

TEST(dribbling_server_cannot_stretch_deadline)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "query-status", NULL);
    char *pad = malloc(4096);
    snprintf(pad, 4096, "{\"pad\": \"%03000d\"}", 0);
    fake_qemu_reply(f, q, pad);
    fake_qemu_dribble(f, 10);
    free(pad);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_execute_full(c, "query-status", NULL, 0, 500, NULL, 0, NULL, &err),
                 -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(dt >= 450);
    if (dt >= 500 + MARGIN_MS)
        HARNESS_FAIL_("a 500 ms call took %lld ms", dt);
    finish(f, c);
}

TEST(reply_one_byte_at_a_time)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q, "{\"status\": \"running\", \"s\": \"}{\\\"\"}");
    fake_qemu_dribble(f, 0);
    fake_qemu_event(f, "AFTER", "{\"n\": 1}");
    fake_qemu_dribble(f, 0);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "s"), "}{\"");
    json_object_put(ret);
    qmp_event *ev = NULL;
    CHECK_EQ_INT(qmp_client_next_event(c, CALL_TIMEOUT_MS, &ev, &err), 0);
    CHECK(ev != NULL && strcmp(qmp_event_name(ev), "AFTER") == 0);
    qmp_event_unref(ev);
    finish(f, c);
}

TEST(peer_stops_reading_large_command)
{
    const size_t big = 4u << 20;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_hold(f);
    int b = fake_qemu_expect(f, "big", NULL);
    fake_qemu_reply(f, b, "{\"late\": true}");
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q, "{\"status\": \"running\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    char *data = malloc(big + 1);
    memset(data, 'z', big);
    data[big] = '\0';
    json_object *args = json_object_new_object();
    json_object_object_add(args, "data", json_object_new_string(data));
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_execute_full(c, "big", args, 0, 500, NULL, 0, NULL, &err), -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(dt >= 450);
    if (dt >= 500 + MARGIN_MS)
        HARNESS_FAIL_("a 500 ms call took %lld ms", dt);
    /* The fake read nothing of it yet. */
    CHECK(fake_qemu_bytes_read(f) < 4096);
    /* The stream stays whole: once the peer reads again, the rest of the
     * large request goes out, then the next one, which gets its reply. */
    fake_qemu_resume(f);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "status"), "running");
    json_object_put(ret);
    json_object *got = fake_qemu_request(f, b), *ga = NULL;
    if (got && json_object_object_get_ex(got, "arguments", &ga))
        CHECK_EQ_INT(strlen(member_str(ga, "data")), big);
    else
        HARNESS_FAIL_("the large request never arrived whole");
    json_object_put(args);
    free(data);
    finish(f, c);
}

/* -------------------------------------------------------------- events */

static int event_seq(qmp_event *ev)
{
    json_object *s = NULL;
    if (!json_object_object_get_ex(qmp_event_data(ev), "seq", &s))
        return -1;
    return json_object_get_int(s);
}

TEST(event_queue_overflow_drops_oldest)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "cont", NULL);
    fake_qemu_event_burst(f, "TICK", 10);
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_event_queue_max(c, 4), 0);
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_execute(c, "cont", NULL, NULL, &err), 0);
    CHECK_EQ_INT(qmp_client_events_queued(c), 4);
    CHECK_EQ_INT(qmp_client_events_lost(c), 6);
    for (int i = 6; i < 10; i++) {
        qmp_event *ev = NULL;
        CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, &err), 0);
        REQUIRE(ev != NULL);
        CHECK_EQ_STR(qmp_event_name(ev), "TICK");
        CHECK_EQ_INT(event_seq(ev), i);
        qmp_event_unref(ev);
    }
    qmp_event *ev = SENTINEL_EVENT;
    CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, &err), -EAGAIN);
    CHECK(ev == SENTINEL_EVENT);
    CHECK_EQ_INT(qmp_client_reset_events_lost(c), 6);
    CHECK_EQ_INT(qmp_client_events_lost(c), 0);
    finish(f, c);
}

static void check_next(qmp_client *c, const char *name, const char *device)
{
    qmp_event *ev = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int rc = qmp_client_next_event(c, 0, &ev, &err);
    if (rc != 0) {
        HARNESS_FAIL_("no event %s queued: %d %s", name, rc, err.message);
        return;
    }
    CHECK_EQ_STR(qmp_event_name(ev), name);
    if (device)
        CHECK_EQ_STR(member_str(qmp_event_data(ev), "device"), device);
    qmp_event_unref(ev);
}

TEST(wait_event_with_match)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "device_del", NULL);
    fake_qemu_event(f, "A", "{\"device\": \"x\"}");
    fake_qemu_event(f, "DEVICE_DELETED", "{\"device\": \"y\", \"path\": \"/m/y\"}");
    fake_qemu_event(f, "B", NULL);
    fake_qemu_event(f, "DEVICE_DELETED", "{\"device\": \"x\", \"path\": \"/m/x\"}");
    fake_qemu_event(f, "C", "{\"device\": \"y\"}");
    fake_qemu_reply(f, q, "{}");
    fake_qemu_hold(f);
    fake_qemu_event(f, "LATE", "{\"device\": \"z\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_execute(c, "device_del", NULL, NULL, &err), 0);
    CHECK_EQ_INT(qmp_client_events_queued(c), 5);

    json_object *m = NULL;
    REQUIRE(qmp_json_build(&m, NULL, "{'device': 'x'}") == 0);
    qmp_event *ev = NULL;
    CHECK_EQ_INT(qmp_client_wait_event(c, "DEVICE_DELETED", m, 1000, &ev, &err), 0);
    REQUIRE(ev != NULL);
    CHECK_EQ_STR(qmp_event_name(ev), "DEVICE_DELETED");
    CHECK_EQ_STR(member_str(qmp_event_data(ev), "path"), "/m/x");
    qmp_event_unref(ev);
    json_object_put(m);
    CHECK_EQ_INT(qmp_client_events_queued(c), 4);

    /* Nothing matches: times out, and the queue is left as it was. */
    m = jparse("{\"device\": \"nope\"}");
    ev = SENTINEL_EVENT;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_wait_event(c, "DEVICE_DELETED", m, 200, &ev, &err), -ETIMEDOUT);
    CHECK(now_ms() - t0 < 200 + MARGIN_MS);
    CHECK(ev == SENTINEL_EVENT);
    json_object_put(m);
    CHECK_EQ_INT(qmp_client_events_queued(c), 4);

    /* Any name, matching data: the first "y" event. */
    m = jparse("{\"device\": \"y\"}");
    CHECK_EQ_INT(qmp_client_wait_event(c, NULL, m, 0, &ev, &err), 0);
    CHECK(ev != NULL && strcmp(qmp_event_name(ev), "DEVICE_DELETED") == 0);
    qmp_event_unref(ev);
    json_object_put(m);

    /* The rest, still in arrival order. */
    check_next(c, "A", "x");
    check_next(c, "B", NULL);
    check_next(c, "C", "y");
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);

    /* An event that has not arrived yet is read from the socket. */
    fake_qemu_resume(f);
    ev = NULL;
    CHECK_EQ_INT(qmp_client_wait_event(c, "LATE", NULL, CALL_TIMEOUT_MS, &ev, &err), 0);
    CHECK(ev != NULL && strcmp(member_str(qmp_event_data(ev), "device"), "z") == 0);
    qmp_event_unref(ev);
    finish(f, c);
}

TEST(next_event_waits_for_socket)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_hold(f);
    fake_qemu_event(f, "STOP", NULL);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    qmp_event *ev = NULL;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_next_event(c, 200, &ev, &err), -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK(dt >= 150 && dt < 200 + MARGIN_MS);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, &err), -EAGAIN);
    fake_qemu_resume(f);
    CHECK_EQ_INT(qmp_client_next_event(c, CALL_TIMEOUT_MS, &ev, &err), 0);
    CHECK(ev != NULL && strcmp(qmp_event_name(ev), "STOP") == 0);
    CHECK_EQ_INT(qmp_event_seconds(ev), 1700000000);
    qmp_event_unref(ev);
    finish(f, c);
}

TEST(events_survive_disconnect)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_expect(f, "system_powerdown", NULL);
    fake_qemu_event(f, "POWERDOWN", NULL);
    fake_qemu_event(f, "SHUTDOWN", "{\"guest\": true, \"reason\": \"guest-shutdown\"}");
    fake_qemu_event(f, "STOP", NULL);
    fake_qemu_close(f);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_execute(c, "system_powerdown", NULL, NULL, &err), -ECONNRESET);
    CHECK_EQ_INT(qmp_client_events_queued(c), 3);
    check_next(c, "POWERDOWN", NULL);
    check_next(c, "SHUTDOWN", NULL);
    check_next(c, "STOP", NULL);
    qmp_event *ev = NULL;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_next_event(c, CALL_TIMEOUT_MS, &ev, &err), -ECONNRESET);
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    finish(f, c);
}

TEST(next_event_zero_timeout_drains_socket)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_event(f, "RESUME", NULL);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    /* The event has been written into the socket; a zero timeout reads
     * what is there without waiting. */
    REQUIRE(fake_qemu_wait_done(f, CALL_TIMEOUT_MS) == 0);
    qmp_event *ev = NULL;
    CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, &err), 0);
    CHECK(ev != NULL && strcmp(qmp_event_name(ev), "RESUME") == 0);
    qmp_event_unref(ev);
    finish(f, c);
}

TEST(close_keeps_events_connect_drops_them)
{
    fake_qemu *f1 = fake_qemu_new();
    int q = fake_qemu_expect(f1, "cont", NULL);
    fake_qemu_event(f1, "RESUME", NULL);
    fake_qemu_event(f1, "RTC_CHANGE", "{\"offset\": 1}");
    fake_qemu_reply(f1, q, "{}");
    fake_qemu *f2 = fake_qemu_new();
    int q2 = fake_qemu_expect(f2, "query-status", NULL);
    fake_qemu_reply(f2, q2, "{\"status\": \"running\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f1, &err) == 0);
    CHECK_EQ_INT(qmp_client_execute(c, "cont", NULL, NULL, &err), 0);
    CHECK_EQ_INT(qmp_client_events_queued(c), 2);
    qmp_client_close(c);
    CHECK_EQ_INT(qmp_client_events_queued(c), 2);
    check_next(c, "RESUME", NULL);
    CHECK_EQ_INT(qmp_client_events_queued(c), 1);
    /* Connecting again (without closing first) starts afresh. */
    REQUIRE(connect_fake(c, f2, &err) == 0);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), 0);
    CHECK_EQ_INT(fake_qemu_finish(f1), 0);
    fake_qemu_free(f1);
    finish(f2, c);
}

TEST(connect_replaces_open_connection)
{
    fake_qemu *f1 = fake_qemu_new();
    fake_qemu *f2 = fake_qemu_new();
    int q = fake_qemu_expect(f2, "query-status", NULL);
    fake_qemu_reply(f2, q, "{\"status\": \"running\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f1, &err) == 0);
    REQUIRE(connect_fake(c, f2, &err) == 0);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), 0);
    /* The first fake got no request. */
    CHECK_EQ_INT(fake_qemu_finish(f1), 0);
    fake_qemu_free(f1);
    finish(f2, c);
}

/* --------------------------------------------------------- descriptors */

TEST(fd_passing)
{
    int p[2], q2[2];
    REQUIRE(pipe(p) == 0);
    REQUIRE(pipe(q2) == 0);
    fake_qemu *f = fake_qemu_new();
    int g = fake_qemu_expect_full(f, "getfd", "{\"fdname\": \"fd0\"}", 0, 1);
    fake_qemu_reply(f, g, "{}");
    int a = fake_qemu_expect_full(f, "add-fd", "{\"fdset-id\": 1}", 0, 2);
    fake_qemu_reply(f, a, "{\"fdset-id\": 1, \"fd\": 42}");
    int n = fake_qemu_expect_full(f, "query-fdsets", NULL, 0, 0);
    fake_qemu_reply(f, n, "[]");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);

    json_object *args = jparse("{\"fdname\": \"fd0\"}");
    CHECK_EQ_INT(
        qmp_client_execute_full(c, "getfd", args, 0, QMP_TIMEOUT_DEFAULT, &p[1], 1, NULL, &err), 0);
    json_object_put(args);
    args = jparse("{\"fdset-id\": 1}");
    int two[2] = {q2[1], p[1]};
    CHECK_EQ_INT(
        qmp_client_execute_full(c, "add-fd", args, 0, QMP_TIMEOUT_DEFAULT, two, 2, NULL, &err), 0);
    json_object_put(args);
    CHECK_EQ_INT(qmp_client_execute(c, "query-fdsets", NULL, NULL, &err), 0);

    /* Write through the descriptor QEMU received; read our pipe. */
    REQUIRE(fake_qemu_request_n_fds(f, g) == 1);
    int got = fake_qemu_request_fd(f, g, 0);
    struct stat s1, s2;
    CHECK(fstat(got, &s1) == 0 && fstat(p[1], &s2) == 0);
    CHECK(s1.st_ino == s2.st_ino && s1.st_dev == s2.st_dev);
    CHECK_EQ_INT(write(got, "hello", 5), 5);
    char buf[8] = "";
    CHECK_EQ_INT(read(p[0], buf, 5), 5);
    CHECK_EQ_STR(buf, "hello");
    REQUIRE(fake_qemu_request_n_fds(f, a) == 2);
    CHECK_EQ_INT(write(fake_qemu_request_fd(f, a, 0), "A", 1), 1);
    CHECK_EQ_INT(read(q2[0], buf, 1), 1);
    CHECK(buf[0] == 'A');
    /* Our own descriptors are still ours. */
    CHECK(fcntl(p[1], F_GETFD) >= 0 && fcntl(q2[1], F_GETFD) >= 0);
    finish(f, c);
    close(p[0]);
    close(p[1]);
    close(q2[0]);
    close(q2[1]);
}

TEST(fds_refused_over_tcp)
{
    fake_qemu *f = fake_qemu_new_tcp();
    REQUIRE(f != NULL);
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q, "{\"status\": \"running\"}");
    REQUIRE(fake_qemu_start(f) == 0);
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    char addr[80];
    snprintf(addr, sizeof(addr), "tcp:%s", fake_qemu_address(f));
    REQUIRE(qmp_client_connect(c, addr, &err) == 0);
    int p[2];
    REQUIRE(pipe(p) == 0);
    json_object *args = jparse("{\"fdname\": \"fd0\"}");
    CHECK_EQ_INT(
        qmp_client_execute_full(c, "getfd", args, 0, QMP_TIMEOUT_DEFAULT, &p[1], 1, NULL, &err),
        -EOPNOTSUPP);
    json_object_put(args);
    /* Nothing was sent, and the connection is fine. */
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), 0);
    finish(f, c);
    close(p[0]);
    close(p[1]);
}

/* ------------------------------------------------------------ commands */

TEST(error_reply_keeps_connection)
{
    fake_qemu *f = fake_qemu_new();
    int a = fake_qemu_expect(f, "device_del", "{\"id\": \"nic0\"}");
    fake_qemu_reply_error(f, a, "DeviceNotFound", "Device 'nic0' not found");
    int b = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, b, "{\"status\": \"running\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *args = jparse("{\"id\": \"nic0\"}"), *ret = SENTINEL_JSON;
    CHECK_EQ_INT(qmp_client_execute(c, "device_del", args, &ret, &err), -EREMOTEIO);
    CHECK(ret == SENTINEL_JSON);
    ret = NULL;
    CHECK_EQ_INT(err.code, -EREMOTEIO);
    CHECK_EQ_INT(err.category, QMP_ERR_COMMAND);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_DEVICE_NOT_FOUND);
    CHECK_EQ_STR(err.class_name, "DeviceNotFound");
    CHECK_EQ_STR(err.message, "Device 'nic0' not found");
    json_object_put(args);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    json_object_put(ret);
    finish(f, c);
}

TEST(command_template)
{
    fake_qemu *f = fake_qemu_new();
    int a = fake_qemu_expect_full(f, "device_del", "{\"id\": \"a\\\"b'c\\\\\"}",
                                  FAKE_QEMU_ARGS_EXACT, 0);
    fake_qemu_reply(f, a, "{}");
    int b = fake_qemu_expect_full(f, "set_link", "{\"name\": \"n\", \"up\": false, \"n\": -3}",
                                  FAKE_QEMU_ARGS_EXACT, 0);
    fake_qemu_reply(f, b, "{}");
    int q = fake_qemu_expect_full(f, "stop", NULL, FAKE_QEMU_ARGS_EXACT, 0);
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_command(c, &ret, &err, "device_del", "{'id': %s}", "a\"b'c\\"), 0);
    CHECK(json_object_is_type(ret, json_type_object) && json_object_object_length(ret) == 0);
    json_object_put(ret);
    CHECK_EQ_INT(qmp_client_command(c, NULL, &err, "set_link",
                                    "{'name': %s, 'up': false, "
                                    "'n': %d}",
                                    "n", -3),
                 0);
    /* A bad template is refused before anything is sent. */
    CHECK_EQ_INT(qmp_client_command(c, NULL, &err, "device_del", "{'id': '%s'}", "x"), -EINVAL);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    CHECK_EQ_INT(qmp_client_command(c, NULL, &err, "stop", NULL), 0);
    finish(f, c);
}

TEST(send_raw_returns_whole_reply)
{
    fake_qemu *f = fake_qemu_new();
    int a = fake_qemu_expect(f, "query-name", NULL);
    fake_qemu_reply(f, a, "{\"name\": \"vm\"}");
    int b = fake_qemu_expect(f, "bogus", NULL);
    fake_qemu_reply_error(f, b, "CommandNotFound", "The command bogus has not been found");
    int n = fake_qemu_expect(f, "query-uuid", NULL);
    fake_qemu_reply(f, n, "{\"UUID\": \"x\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);

    json_object *msg = jparse("{\"execute\": \"query-name\", \"id\": {\"a\": [1, \"x\"]}}");
    json_object *reply = NULL, *id = NULL, *ret = NULL;
    CHECK_EQ_INT(qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &reply, &err), 0);
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "return", &ret));
    CHECK_EQ_STR(member_str(ret, "name"), "vm");
    CHECK(json_object_object_get_ex(reply, "id", &id));
    json_object *want = jparse("{\"a\": [1, \"x\"]}");
    CHECK(json_object_equal(id, want));
    json_object_put(want);
    json_object_put(reply);
    json_object_put(msg);

    /* An error reply is a reply here, not a failure. */
    msg = jparse("{\"execute\": \"bogus\", \"id\": 5}");
    reply = NULL;
    CHECK_EQ_INT(qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &reply, &err), 0);
    json_object *e = NULL;
    CHECK(json_object_object_get_ex(reply, "error", &e));
    CHECK_EQ_STR(member_str(e, "class"), "CommandNotFound");
    json_object_put(reply);
    json_object_put(msg);

    /* Reserved ids are refused without sending. */
    msg = jparse("{\"execute\": \"query-uuid\", \"id\": \"libqmp:7\"}");
    reply = NULL;
    CHECK_EQ_INT(qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &reply, &err), -EINVAL);
    CHECK(reply == NULL);
    json_object_put(msg);

    /* Without id: the id-less reply. */
    msg = jparse("{\"execute\": \"query-uuid\"}");
    CHECK_EQ_INT(qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &reply, &err), 0);
    CHECK(json_object_object_get_ex(reply, "return", &ret));
    CHECK(!json_object_object_get_ex(reply, "id", &id));
    json_object_put(reply);
    json_object_put(msg);
    finish(f, c);
}

TEST(uint64_round_trip)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "qom-set",
                             "{\"value\": 18446744073709551615, "
                             "\"low\": -9223372036854775808}");
    fake_qemu_reply(f, q, "{\"max\": 18446744073709551615, \"min\": -9223372036854775808}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *args = json_object_new_object(), *ret = NULL, *v = NULL;
    json_object_object_add(args, "value", json_object_new_uint64(UINT64_MAX));
    json_object_object_add(args, "low", json_object_new_int64(INT64_MIN));
    CHECK_EQ_INT(qmp_client_execute(c, "qom-set", args, &ret, &err), 0);
    CHECK_CONTAINS(fake_qemu_request_text(f, q), "18446744073709551615");
    CHECK_CONTAINS(fake_qemu_request_text(f, q), "-9223372036854775808");
    REQUIRE(ret != NULL);
    CHECK(json_object_object_get_ex(ret, "max", &v));
    CHECK(json_object_get_uint64(v) == UINT64_MAX);
    CHECK(json_object_object_get_ex(ret, "min", &v));
    CHECK(json_object_get_int64(v) == INT64_MIN);
    json_object_put(ret);
    json_object_put(args);
    finish(f, c);
}

TEST(message_size_limit)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "query-qmp-schema", NULL);
    char *big = malloc(100000);
    memset(big, 'x', 99998);
    big[0] = '"';
    big[99998] = '"';
    big[99999] = '\0';
    fake_qemu_reply(f, q, big);
    free(big);
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_message_size(c, 4096), 0);
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_execute(c, "query-qmp-schema", NULL, NULL, &err), -EMSGSIZE);
    CHECK_EQ_INT(err.category, QMP_ERR_LIMIT);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    finish(f, c);
}

/* --------------------------------------------------- protocol breakage */

TEST(protocol_errors_fail_fast)
{
    static const char *const bad[] = {
        "\x01\x02 garbage\r\n",
        "{\"event\": \"BAD\", \"data\": {\"s\": \"\xc0\xaf\"}}\r\n",
        "[1, 2]\r\n",
        "{\"return\": {}, \"id\": }\r\n",
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fake_qemu *f = fake_qemu_new();
        fake_qemu_expect(f, "query-status", NULL);
        fake_qemu_send(f, bad[i]);
        fake_qemu_hold(f);
        qmp_client *c = new_client();
        qmp_error err = QMP_ERROR_INIT;
        REQUIRE(connect_fake(c, f, &err) == 0);
        long long t0 = now_ms();
        int rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
        long long dt = now_ms() - t0;
        if (rc != -EPROTO || err.category != QMP_ERR_PROTOCOL)
            HARNESS_FAIL_("case %zu: %d %s: %s", i, rc, qmp_error_category_name(err.category),
                          err.message);
        CHECK(dt < CALL_TIMEOUT_MS / 2);
        CHECK_EQ_INT(qmp_client_is_connected(c), 0);
        t0 = now_ms();
        CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, NULL, &err), -EPROTO);
        CHECK(now_ms() - t0 < 1000);
        finish(f, c);
    }
}

TEST(unknown_id_reply_dropped)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_send(f, "{\"return\": {\"status\": \"stranger\"}, \"id\": \"not-ours\"}\r\n");
    fake_qemu_send(f, "{\"return\": {\"status\": \"stranger\"}, \"id\": \"libqmp:424242\"}\r\n");
    fake_qemu_reply(f, q, "{\"status\": \"running\"}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "status"), "running");
    json_object_put(ret);
    finish(f, c);
}

TEST(events_around_negotiation_are_queued)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_greeting(f, NULL);
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_event(f, "EARLY", NULL);
    fake_qemu_send(f, FAKE_QEMU_GREETING "\r\n");
    int caps = fake_qemu_expect(f, "qmp_capabilities", NULL);
    fake_qemu_event(f, "MIDNEG", "{\"n\": 1}");
    fake_qemu_reply(f, caps, "{}");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    check_next(c, "EARLY", NULL);
    check_next(c, "MIDNEG", NULL);
    finish(f, c);
}

TEST(client_after_fork)
{
    fake_qemu *f = fake_qemu_new();
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(connect_fake(c, f, &err) == 0);
    int p[2];
    REQUIRE(pipe(p) == 0);
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        qmp_error e = QMP_ERROR_INIT;
        int rc = qmp_client_execute(c, "query-status", NULL, NULL, &e);
        if (write(p[1], &rc, sizeof(rc)) != sizeof(rc))
            _exit(2);
        _exit(0);
    }
    close(p[1]);
    struct pollfd pfd = {p[0], POLLIN, 0};
    int rc = 0;
    CHECK_EQ_INT(poll(&pfd, 1, CALL_TIMEOUT_MS), 1);
    CHECK_EQ_INT(read(p[0], &rc, sizeof(rc)), (long long)sizeof(rc));
    CHECK_EQ_INT(rc, -ECHILD);
    close(p[0]);
    int status = 0;
    CHECK_EQ_INT(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    /* The parent's connection is untouched. */
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    finish(f, c);
}

/* ------------------------------------------------------------ listener */

TEST(listener_accepts_connecting_qemu)
{
    char path[128];
    sock_path(path, sizeof(path), "listen.sock");
    qmp_listener *l = NULL;
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(qmp_listener_new(&l, path, &err) == 0);
    CHECK_CONTAINS(qmp_listener_get_address(l), path);
    CHECK(qmp_listener_get_fd(l) >= 0);
    /* The path is taken now. */
    qmp_listener *l2 = NULL;
    CHECK_EQ_INT(qmp_listener_new(&l2, path, &err), -EADDRINUSE);
    CHECK(l2 == NULL);

    fake_qemu *f = fake_qemu_new_connect(path);
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q, "{\"status\": \"prelaunch\"}");
    REQUIRE(fake_qemu_start(f) == 0);
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_listener_accept(l, c, CALL_TIMEOUT_MS, &err), 0);
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "query-status", NULL, &ret, &err), 0);
    CHECK_EQ_STR(member_str(ret, "status"), "prelaunch");
    json_object_put(ret);
    finish(f, c);
    qmp_listener_free(l);
    CHECK(access(path, F_OK) != 0);
    qmp_listener_free(NULL);
}

TEST(listener_accept_timeout)
{
    char path[128];
    sock_path(path, sizeof(path), "lonely.sock");
    qmp_listener *l = NULL;
    qmp_error err = QMP_ERROR_INIT;
    REQUIRE(qmp_listener_new(&l, path, &err) == 0);
    qmp_client *c = new_client();
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_listener_accept(l, c, 300, &err), -ETIMEDOUT);
    long long dt = now_ms() - t0;
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(dt >= 250 && dt < 300 + MARGIN_MS);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    qmp_client_unref(c);
    qmp_listener_free(l);
}

TEST(connect_to_missing_path)
{
    char path[128];
    sock_path(path, sizeof(path), "missing.sock");
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_connect(c, path, &err), -ENOENT);
    CHECK(now_ms() - t0 < 1000);
    CHECK_EQ_INT(err.code, -ENOENT);
    CHECK_EQ_INT(err.category, QMP_ERR_CONNECT);
    CHECK_CONTAINS(err.message, path);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    qmp_client_unref(c);
}

TEST(unix_path_too_long)
{
    char path[300];
    memcpy(path, "/tmp/", 5);
    memset(path + 5, 'x', 200);
    path[205] = '\0';
    qmp_client *c = new_client();
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_connect(c, path, &err), -ENAMETOOLONG);
    CHECK_EQ_INT(err.code, -ENAMETOOLONG);
    char addr[310];
    snprintf(addr, sizeof(addr), "unix:%s", path);
    CHECK_EQ_INT(qmp_client_connect(c, addr, &err), -ENAMETOOLONG);
    qmp_listener *l = NULL;
    CHECK_EQ_INT(qmp_listener_new(&l, path, &err), -ENAMETOOLONG);
    CHECK(l == NULL);
    qmp_client_unref(c);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    /* SIGPIPE at its default action: a write to a closed peer that
     * raised it would kill the test. */
    signal(SIGPIPE, SIG_DFL);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/libqmp-client-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(execute_over_socketpair);
    RUN(close_inside_callback_ends_wait);
    RUN(oob_when_wanted);
    RUN(not_connected);
    RUN(unix_socket_path);
    RUN(fd_address);
    RUN(reconnect_replaces_connection);
    RUN(bad_greeting);
    RUN(negotiation_failure);
    RUN(no_greeting_times_out);
    RUN(negotiation_times_out);
    RUN(disconnect_while_connecting);
    RUN(disconnect_with_command_pending);
    RUN(half_close);
    RUN(reply_then_close);
    RUN(sigpipe_never_raised);
    RUN(timeout_then_late_reply);
    RUN(dribbling_server_cannot_stretch_deadline);
    RUN(reply_one_byte_at_a_time);
    RUN(peer_stops_reading_large_command);
    RUN(event_queue_overflow_drops_oldest);
    RUN(wait_event_with_match);
    RUN(next_event_waits_for_socket);
    RUN(events_survive_disconnect);
    RUN(next_event_zero_timeout_drains_socket);
    RUN(close_keeps_events_connect_drops_them);
    RUN(connect_replaces_open_connection);
    RUN(fd_passing);
    RUN(fds_refused_over_tcp);
    RUN(error_reply_keeps_connection);
    RUN(command_template);
    RUN(send_raw_returns_whole_reply);
    RUN(uint64_round_trip);
    RUN(message_size_limit);
    RUN(protocol_errors_fail_fast);
    RUN(unknown_id_reply_dropped);
    RUN(events_around_negotiation_are_queued);
    RUN(client_after_fork);
    RUN(listener_accepts_connecting_qemu);
    RUN(listener_accept_timeout);
    RUN(connect_to_missing_path);
    RUN(unix_path_too_long);
    if (rmdir(tmpdir) != 0)
        printf("# could not remove %s: something was left behind\n", tmpdir);
    return harness_done();
}
