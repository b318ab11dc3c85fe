/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The non-blocking client against a real qemu-system-x86_64, driven by
 * qmp_loop and by each header-only adapter (GLib, libuv, libevent):
 * an asynchronous connect, several calls in flight, STOP and RESUME
 * through subscriptions, a call timing out on schedule while QEMU is
 * frozen (and its late reply dropped), and QEMU killed with calls
 * pending (each fails once, then the disconnect callback runs once).
 */
#include <signal.h>
#include <sys/types.h>

#define ASYNC_DRIVER_GLIB 1
#define ASYNC_DRIVER_LIBUV 1
#define ASYNC_DRIVER_LIBEVENT 1
#include "async-drivers.h"

#include <json-c/json.h>

#include "harness.h"
#include "qemu-harness.h"

#define WAIT_MS QEMU_TEST_EVENT_TIMEOUT_MS
#define MARGIN_MS 5000

static const async_driver *drv;
static int seq;

typedef struct call_rec {
    int n;
    int status;
    qmp_error_category category;
    json_object *ret; /* a reference to the return value */
    long long t_ms;
    int seq;
} call_rec;

static void on_call(qmp_client *c, qmp_reply *reply, void *userdata)
{
    call_rec *rec = userdata;

    (void)c;
    rec->n++;
    rec->status = qmp_reply_status(reply);
    rec->t_ms = qemu_now_ms();
    rec->seq = ++seq;
    if (rec->status == 0) {
        json_object_put(rec->ret);
        rec->ret = json_object_get(qmp_reply_return(reply));
    } else {
        rec->category = qmp_reply_error(reply)->category;
    }
}

static void rec_clear(call_rec *rec, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        json_object_put(rec[i].ret);
        rec[i].ret = NULL;
    }
}

typedef struct ev_rec {
    int n;
    int seq;
} ev_rec;

static void on_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    ev_rec *rec = userdata;

    (void)c;
    (void)ev;
    rec->n++;
    rec->seq = ++seq;
}

typedef struct conn_state {
    int connect_n, connect_status;
    int disconnect_n;
    qmp_error_category disconnect_category;
    int calls_done_at_disconnect;
    call_rec *calls;
    int n_calls;
} conn_state;

static void on_connect(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    conn_state *st = userdata;

    (void)c;
    st->connect_n++;
    st->connect_status = status;
    if (status != 0)
        qemu_print_error("connect", status, err);
}

static void on_disconnect(qmp_client *c, const qmp_error *err, void *userdata)
{
    conn_state *st = userdata;

    (void)c;
    st->disconnect_n++;
    st->disconnect_category = err->category;
    for (int i = 0; i < st->n_calls; i++)
        st->calls_done_at_disconnect += st->calls[i].n;
}

static void start_call(qmp_client *c, const char *command, int timeout_ms, call_rec *rec)
{
    qmp_error err = QMP_ERROR_INIT;
    int rc = qmp_client_execute_async(c, command, NULL, 0, timeout_ms, NULL, 0, on_call, rec, NULL,
                                      &err);
    if (rc != 0) {
        qemu_print_error(command, rc, &err);
        harness_cur_failed = 1;
    }
}

/* Runs rounds until *counter >= target; fails the test on timeout. */
static int wait_for(void *loop, const int *counter, int target, const char *what)
{
    int rounds = async_run_until(drv, loop, counter, target, WAIT_MS);

    if (rounds < 0)
        HARNESS_FAIL_("%s: %s did not happen within %d ms", drv->name, what, WAIT_MS);
    return rounds;
}

/*
 * A fresh QEMU, a loop and a client attached to it and connected
 * asynchronously.  Returns 0 when connected.
 */
typedef struct fixture {
    qemu_instance q;
    void *loop;
    qmp_client *c;
    void *handle;
    conn_state st;
} fixture;

static int fixture_start(fixture *fx, const qemu_opts *opts)
{
    qmp_error err = QMP_ERROR_INIT;
    int rc;

    memset(fx, 0, sizeof(*fx));
    if (qemu_start(&fx->q, opts) != 0) {
        harness_cur_failed = 1;
        return -1;
    }
    if (drv->loop_new(&fx->loop) != 0 || qmp_client_new(&fx->c) != 0) {
        HARNESS_FAIL_("cannot create a loop or a client");
        return -1;
    }
    qmp_client_set_connect_timeout(fx->c, WAIT_MS);
    qmp_client_set_timeout(fx->c, WAIT_MS);
    qmp_client_set_connect_callback(fx->c, on_connect, &fx->st);
    qmp_client_set_disconnect_callback(fx->c, on_disconnect, &fx->st);
    if (drv->attach(fx->loop, fx->c, &fx->handle) != 0) {
        HARNESS_FAIL_("cannot attach the client to %s", drv->name);
        return -1;
    }
    rc = qmp_client_connect_async(fx->c, fx->q.address, &err);
    if (rc != 0) {
        qemu_print_error("connect_async", rc, &err);
        harness_cur_failed = 1;
        return -1;
    }
    if (wait_for(fx->loop, &fx->st.connect_n, 1, "the connect callback") < 0)
        return -1;
    if (fx->st.connect_status != 0) {
        harness_cur_failed = 1;
        return -1;
    }
    return 0;
}

static void fixture_stop(fixture *fx)
{
    if (fx->handle != NULL)
        drv->detach(fx->loop, fx->handle);
    qmp_client_unref(fx->c);
    if (fx->loop != NULL)
        CHECK_EQ_INT(drv->loop_free(fx->loop), 0);
    qemu_stop(&fx->q, harness_cur_failed);
}

/* ------------------------------------------------------------- bodies */

static void commands_and_events(void)
{
    fixture fx;
    call_rec rec[6];
    ev_rec stop_ev = {0}, resume_ev = {0};

    memset(rec, 0, sizeof(rec));
    if (fixture_start(&fx, NULL) == 0) {
        qmp_client *c = fx.c;
        const qmp_greeting *g = qmp_client_get_greeting(c);
        int major = -1;

        CHECK(g != NULL);
        if (g != NULL)
            qmp_greeting_version(g, &major, NULL, NULL);
        /* Subscribe before the commands whose events we wait for. */
        CHECK_EQ_INT(qmp_client_subscribe(c, "STOP", on_event, &stop_ev, NULL), 0);
        CHECK_EQ_INT(qmp_client_subscribe(c, "RESUME", on_event, &resume_ev, NULL), 0);
        start_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec[0]);
        start_call(c, "query-version", QMP_TIMEOUT_DEFAULT, &rec[1]);
        start_call(c, "query-name", QMP_TIMEOUT_DEFAULT, &rec[2]);
        start_call(c, "stop", QMP_TIMEOUT_DEFAULT, &rec[3]);
        wait_for(fx.loop, &rec[3].n, 1, "the reply to stop");
        wait_for(fx.loop, &stop_ev.n, 1, "STOP");
        for (int i = 0; i < 4; i++) {
            CHECK_EQ_INT(rec[i].n, 1);
            CHECK_EQ_INT(rec[i].status, 0);
        }
        /* Without oob QEMU answers in order. */
        CHECK(rec[0].seq < rec[1].seq && rec[1].seq < rec[2].seq && rec[2].seq < rec[3].seq);
        CHECK_EQ_STR(qemu_json_str(rec[0].ret, "status"), "running");
        CHECK_EQ_INT(json_object_get_int(qemu_json_get(qemu_json_get(rec[1].ret, "qemu"), "major")),
                     major);
        CHECK(json_object_is_type(rec[2].ret, json_type_object));
        start_call(c, "query-status", QMP_TIMEOUT_DEFAULT, &rec[4]);
        start_call(c, "cont", QMP_TIMEOUT_DEFAULT, &rec[5]);
        wait_for(fx.loop, &rec[5].n, 1, "the reply to cont");
        wait_for(fx.loop, &resume_ev.n, 1, "RESUME");
        CHECK_EQ_STR(qemu_json_str(rec[4].ret, "status"), "paused");
        CHECK_EQ_INT(rec[5].status, 0);
        CHECK_EQ_INT(stop_ev.n, 1);
        CHECK_EQ_INT(resume_ev.n, 1);
        CHECK(stop_ev.seq < resume_ev.seq);
        CHECK_EQ_INT(qmp_client_events_queued(c), 0);
        CHECK_EQ_INT(fx.st.disconnect_n, 0);
    }
    rec_clear(rec, 6);
    fixture_stop(&fx);
}

static void timeout_while_frozen(void)
{
    fixture fx;
    call_rec rec[2];

    memset(rec, 0, sizeof(rec));
    if (fixture_start(&fx, NULL) == 0 && qemu_pause(&fx.q) == 0) {
        long long t0 = qemu_now_ms();
        start_call(fx.c, "query-status", 500, &rec[0]);
        int rounds = wait_for(fx.loop, &rec[0].n, 1, "the timeout");
        CHECK_EQ_INT(qemu_resume(&fx.q), 0);
        printf("# %s: timed out after %lld ms, %d rounds\n", drv->name, rec[0].t_ms - t0, rounds);
        CHECK(rounds >= 0 && rounds < 100);
        CHECK_EQ_INT(rec[0].status, -ETIMEDOUT);
        CHECK_EQ_INT(rec[0].category, QMP_ERR_TIMEOUT);
        CHECK(rec[0].t_ms - t0 >= 500);
        CHECK(rec[0].t_ms - t0 < 500 + MARGIN_MS);
        /* QEMU answers the late query-status first: it must be dropped. */
        start_call(fx.c, "query-version", QMP_TIMEOUT_DEFAULT, &rec[1]);
        wait_for(fx.loop, &rec[1].n, 1, "the reply to query-version");
        CHECK_EQ_INT(rec[1].status, 0);
        CHECK(qemu_json_get(rec[1].ret, "qemu") != NULL);
        CHECK_EQ_INT(rec[0].n, 1);
        CHECK_EQ_INT(qmp_client_is_connected(fx.c), 1);
    }
    rec_clear(rec, 2);
    fixture_stop(&fx);
}

static void killed_with_calls_pending(void)
{
    fixture fx;
    call_rec rec[3];

    memset(rec, 0, sizeof(rec));
    if (fixture_start(&fx, NULL) == 0 && qemu_pause(&fx.q) == 0) {
        fx.st.calls = rec;
        fx.st.n_calls = 3;
        start_call(fx.c, "query-status", QMP_TIMEOUT_DEFAULT, &rec[0]);
        start_call(fx.c, "query-name", QMP_TIMEOUT_DEFAULT, &rec[1]);
        start_call(fx.c, "query-version", QMP_TIMEOUT_DEFAULT, &rec[2]);
        /* Let the requests go out, then kill the frozen QEMU. */
        for (int i = 0; i < 3; i++)
            CHECK_EQ_INT(drv->iterate(fx.loop, 0), 0);
        CHECK_EQ_INT(kill(fx.q.pid, SIGKILL), 0);
        wait_for(fx.loop, &fx.st.disconnect_n, 1, "the disconnect callback");
        CHECK_EQ_INT(fx.st.disconnect_n, 1);
        CHECK_EQ_INT(fx.st.disconnect_category, QMP_ERR_DISCONNECTED);
        CHECK_EQ_INT(fx.st.calls_done_at_disconnect, 3);
        for (int i = 0; i < 3; i++) {
            CHECK_EQ_INT(rec[i].n, 1);
            CHECK_EQ_INT(rec[i].category, QMP_ERR_DISCONNECTED);
        }
        CHECK_EQ_INT(qmp_client_get_fd(fx.c), -1);
        CHECK_EQ_INT(qemu_wait_exit(&fx.q, QEMU_TEST_EXIT_TIMEOUT_MS), 0);
    }
    rec_clear(rec, 3);
    fixture_stop(&fx);
}

/* ------------------------------------------------------------ per loop */

#define LOOP_TESTS(name, driver)                                                                   \
    TEST(name##_commands_and_events)                                                               \
    {                                                                                              \
        drv = (driver);                                                                            \
        commands_and_events();                                                                     \
    }                                                                                              \
    TEST(name##_timeout_while_frozen)                                                              \
    {                                                                                              \
        drv = (driver);                                                                            \
        timeout_while_frozen();                                                                    \
    }                                                                                              \
    TEST(name##_killed_with_calls_pending)                                                         \
    {                                                                                              \
        drv = (driver);                                                                            \
        killed_with_calls_pending();                                                               \
    }

LOOP_TESTS(loop, &async_driver_loop)
LOOP_TESTS(glib, &async_driver_glib)
LOOP_TESTS(libuv, &async_driver_libuv)
LOOP_TESTS(libevent, &async_driver_libevent)

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(loop_commands_and_events);
    RUN(loop_timeout_while_frozen);
    RUN(loop_killed_with_calls_pending);
    RUN(glib_commands_and_events);
    RUN(glib_timeout_while_frozen);
    RUN(glib_killed_with_calls_pending);
    RUN(libuv_commands_and_events);
    RUN(libuv_timeout_while_frozen);
    RUN(libuv_killed_with_calls_pending);
    RUN(libevent_commands_and_events);
    RUN(libevent_timeout_while_frozen);
    RUN(libevent_killed_with_calls_pending);
    return harness_done();
}
