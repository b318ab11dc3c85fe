/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the non-blocking client against the scripted fake QEMU:
 * asynchronous connects and their outcomes, calls started with
 * qmp_client_execute_async() (many at once, replies out of order,
 * deadlines, cancellation at each stage, the in-flight limit, exec-oob,
 * descriptors), disconnects and closes with calls pending, subscriptions,
 * and what callbacks may and may not do.
 *
 * The tests drive the client with their own poll() loop over
 * qmp_client_get_fd(), qmp_client_get_events(), qmp_client_get_timeout_ms()
 * and qmp_client_process(), as an application's event loop would.  Every
 * wait has a deadline; nothing sleeps to synchronise.  Where a test needs
 * bytes to be waiting in the socket before the client reads them, it
 * waits for the fake's script to finish (or for the socket to turn
 * readable) without calling qmp_client_process().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "fake-qemu.h"
#include "harness.h"
#include "qmp/qmp.h"

/* Deadline of every wait in these tests, and the slack allowed past a
 * call's own deadline (valgrind is slow). */
#define WAIT_MS 15000
#define MARGIN_MS 3000

static char tmpdir[64];

/* Orders callbacks of all kinds against each other. */
static int seq_counter;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

static const char *jtext(json_object *v)
{
    return v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null";
}

static qmp_client *new_client(void)
{
    qmp_client *c = NULL;
    if (qmp_client_new(&c) != 0 || c == NULL) {
        printf("# qmp_client_new failed\n");
        abort();
    }
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, WAIT_MS), 0);
    CHECK_EQ_INT(qmp_client_set_timeout(c, WAIT_MS), 0);
    return c;
}

/* Number of descriptors open in this process. */
static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* ------------------------------------------------------------ the loop */

typedef bool (*until_fn)(void *arg);

/*
 * Drives n clients with one poll() loop until until(arg) holds or
 * timeout_ms passed.  rcs (may be NULL) receives each client's last
 * qmp_client_process() result.  Returns true when until() held.
 * until() is checked after every pass; when it depends on something
 * that does not wake poll() (the fake's thread), cap_ms > 0 bounds each
 * poll() so that it is checked again soon.
 */
static bool drive_loop(qmp_client **cs, int *rcs, int n, until_fn until, void *arg, int timeout_ms,
                       int cap_ms)
{
    long long deadline = now_ms() + timeout_ms;
    struct pollfd p[8];
    if (n > 8)
        abort();
    for (;;) {
        if (until(arg))
            return true;
        long long left = deadline - now_ms();
        if (left <= 0)
            return false;
        int tmo = cap_ms > 0 && cap_ms < left ? cap_ms : (int)left;
        for (int i = 0; i < n; i++) {
            p[i].fd = qmp_client_get_fd(cs[i]);
            p[i].events = (short)qmp_client_get_events(cs[i]);
            p[i].revents = 0;
            int t = qmp_client_get_timeout_ms(cs[i]);
            if (t >= 0 && t < tmo)
                tmo = t;
        }
        if (poll(p, (nfds_t)n, tmo) < 0 && errno != EINTR) {
            HARNESS_FAIL_("poll: %s", strerror(errno));
            return false;
        }
        for (int i = 0; i < n; i++) {
            int rc = qmp_client_process(cs[i], NULL);
            if (rcs != NULL)
                rcs[i] = rc;
        }
    }
}

static bool drive_many(qmp_client **cs, int *rcs, int n, until_fn until, void *arg, int timeout_ms)
{
    return drive_loop(cs, rcs, n, until, arg, timeout_ms, 0);
}

static bool drive(qmp_client *c, until_fn until, void *arg, int timeout_ms)
{
    return drive_loop(&c, NULL, 1, until, arg, timeout_ms, 0);
}

/* Drives c until a condition on the fake's side holds. */
static bool drive_ext(qmp_client *c, until_fn until, void *arg)
{
    return drive_loop(&c, NULL, 1, until, arg, WAIT_MS, 5);
}

typedef struct target {
    const int *counter;
    int want;
} target;

static bool reached(void *arg)
{
    const target *t = arg;
    return *t->counter >= t->want;
}

/* Drives c until *counter >= want; a timeout is recorded as a failure. */
#define DRIVE_UNTIL(c, counter, want)                                                              \
    do {                                                                                           \
        target t_ = {(counter), (want)};                                                           \
        if (!drive((c), reached, &t_, WAIT_MS))                                                    \
            HARNESS_FAIL_("timed out waiting for %s >= %d (it is %d)", #counter, (int)(want),      \
                          *(counter));                                                             \
    } while (0)

static bool never(void *arg)
{
    (void)arg;
    return false;
}

/* ------------------------------------------------------------ recorders */

/* One asynchronous call's outcome. */
typedef struct acall {
    int count;
    int status;
    qmp_error err;
    bool has_err;
    json_object *ret; /* reference taken in the callback */
    uint64_t tag;     /* qmp_reply_tag() */
    uint64_t sent_tag;
    long long at_ms;
    int seq;
    int *done; /* incremented when the callback runs, if set */
} acall;

static void acall_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    acall *a = userdata;
    (void)c;
    a->count++;
    a->status = qmp_reply_status(reply);
    a->tag = qmp_reply_tag(reply);
    const qmp_error *e = qmp_reply_error(reply);
    a->has_err = e != NULL;
    if (e != NULL)
        a->err = *e;
    json_object_put(a->ret);
    a->ret = json_object_get(qmp_reply_return(reply));
    a->at_ms = now_ms();
    a->seq = ++seq_counter;
    if (a->done != NULL)
        (*a->done)++;
}

static void acall_clear(acall *a, int n)
{
    for (int i = 0; i < n; i++) {
        json_object_put(a[i].ret);
        memset(&a[i], 0, sizeof(a[i]));
    }
}

/* Starts command with arguments args_json (or NULL); returns the result
 * of qmp_client_execute_async(). */
static int start_full(qmp_client *c, const char *command, const char *args_json, unsigned flags,
                      int timeout_ms, const int *fds, size_t n_fds, acall *a, qmp_error *err)
{
    json_object *args = args_json ? jparse(args_json) : NULL;
    uint64_t tag = 0;
    int rc = qmp_client_execute_async(c, command, args, flags, timeout_ms, fds, n_fds, acall_cb, a,
                                      &tag, err);
    json_object_put(args);
    if (rc == 0)
        a->sent_tag = tag;
    return rc;
}

/* Starts a command that must be accepted. */
static void start(qmp_client *c, const char *command, const char *args_json, int timeout_ms,
                  acall *a)
{
    qmp_error err = QMP_ERROR_INIT;
    int rc = start_full(c, command, args_json, 0, timeout_ms, NULL, 0, a, &err);
    if (rc != 0)
        HARNESS_FAIL_("execute_async(%s) failed: %d %s", command, rc, err.message);
}

typedef struct conn_rec {
    int count;
    int status;
    bool err_null;
    qmp_error err;
    int seq;
    long long at_ms;
    int connected; /* qmp_client_is_connected() inside the callback */
} conn_rec;

static void conn_cb(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    conn_rec *r = userdata;
    r->count++;
    r->status = status;
    r->err_null = err == NULL;
    if (err != NULL)
        r->err = *err;
    r->seq = ++seq_counter;
    r->at_ms = now_ms();
    r->connected = qmp_client_is_connected(c);
}

typedef struct disc_rec {
    int count;
    qmp_error err;
    int seq;
    int process_rc; /* qmp_client_process() inside the callback */
    int connected;  /* qmp_client_is_connected() inside the callback */
} disc_rec;

static void disc_cb(qmp_client *c, const qmp_error *err, void *userdata)
{
    disc_rec *r = userdata;
    r->count++;
    if (err != NULL)
        r->err = *err;
    else
        r->err.code = 1; /* marks a missing error */
    r->seq = ++seq_counter;
    r->process_rc = qmp_client_process(c, NULL);
    r->connected = qmp_client_is_connected(c);
}

/* ------------------------------------------------------------ connects */

/* Starts f and connects c to it asynchronously over the socketpair;
 * returns the connect callback's status (or the immediate error). */
static int connect_async_fake(qmp_client *c, fake_qemu *f, conn_rec *cr, disc_rec *dr)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_client_set_connect_callback(c, conn_cb, cr);
    if (dr != NULL)
        qmp_client_set_disconnect_callback(c, disc_cb, dr);
    if (fake_qemu_start(f) != 0) {
        HARNESS_FAIL_("fake QEMU did not start");
        return -1;
    }
    int rc = qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(f), &err);
    if (rc < 0) {
        HARNESS_FAIL_("connect_fd_async failed at once: %d %s", rc, err.message);
        return rc;
    }
    DRIVE_UNTIL(c, &cr->count, 1);
    return cr->count == 1 ? cr->status : -1;
}

/* Tears down: the fake must have seen exactly its script. */
static void finish(fake_qemu *f, qmp_client *c)
{
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    qmp_client_unref(c);
}

/* ================================================================ tests */

/* ------------------------------------------------------------ connecting */

typedef struct watch_rec {
    int count;
    int events; /* qmp_client_get_events() inside the last call */
    int fd;
} watch_rec;

static void watch_cb(qmp_client *c, void *userdata)
{
    watch_rec *w = userdata;
    w->count++;
    w->events = qmp_client_get_events(c);
    w->fd = qmp_client_get_fd(c);
}

TEST(connect_async_over_socketpair)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect_full(f, "query-status", NULL, FAKE_QEMU_ARGS_EXACT, 0);
    fake_qemu_reply(f, q, "{\"status\": \"running\", \"running\": true}");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    watch_rec w = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_client_set_connect_callback(c, conn_cb, &cr);
    qmp_client_set_watch_callback(c, watch_cb, &w);
    REQUIRE(fake_qemu_start(f) == 0);
    int fd = fake_qemu_take_client_fd(f);
    CHECK_EQ_INT(qmp_client_connect_fd_async(c, fd, &err), 0);
    /* Nothing has happened yet but the socket is watched. */
    CHECK_EQ_INT(cr.count, 0);
    CHECK(w.count >= 1);
    CHECK_EQ_INT(w.fd, fd);
    CHECK_EQ_INT(qmp_client_get_fd(c), fd);
    CHECK(qmp_client_get_events(c) & POLLIN);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    int tmo = qmp_client_get_timeout_ms(c);
    CHECK(tmo > 0 && tmo <= WAIT_MS);
    /* Calls must wait for the connect to complete. */
    acall early = {0};
    CHECK_EQ_INT(start_full(c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, &early, &err),
                 -ENOTCONN);

    DRIVE_UNTIL(c, &cr.count, 1);
    CHECK_EQ_INT(cr.count, 1);
    CHECK_EQ_INT(cr.status, 0);
    CHECK(cr.err_null);
    CHECK_EQ_INT(cr.connected, 1);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK(qmp_client_get_greeting(c) != NULL);
    /* No deadline is left once connected and idle. */
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c), -1);
    uint64_t usec = 0;
    CHECK_EQ_INT(qmp_client_get_timeout(c, &usec), 0);
    CHECK(usec == UINT64_MAX);

    acall a = {0};
    start(c, "query-status", NULL, QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(a.status, 0);
    CHECK(!a.has_err);
    CHECK(a.tag == a.sent_tag);
    json_object *st = NULL;
    CHECK(json_object_object_get_ex(a.ret, "status", &st));
    CHECK_EQ_STR(json_object_get_string(st), "running");
    /* Only once, whatever else runs. */
    drive(c, never, NULL, 50);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(cr.count, 1);
    CHECK_EQ_INT(early.count, 0);
    acall_clear(&a, 1);
    finish(f, c);
}

TEST(connect_async_unix_and_tcp)
{
    for (int tcp = 0; tcp < 2; tcp++) {
        char path[128];
        snprintf(path, sizeof(path), "%s/async.sock", tmpdir);
        fake_qemu *f = tcp ? fake_qemu_new_tcp() : fake_qemu_new_unix(path);
        REQUIRE(f != NULL);
        int q = fake_qemu_expect(f, "query-version", NULL);
        fake_qemu_reply(f, q, "{\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0}}");
        REQUIRE(fake_qemu_start(f) == 0);
        qmp_client *c = new_client();
        conn_rec cr = {0};
        qmp_error err = QMP_ERROR_INIT;
        qmp_client_set_connect_callback(c, conn_cb, &cr);
        int rc = qmp_client_connect_async(c, fake_qemu_address(f), &err);
        CHECK_EQ_INT(rc, 0);
        if (rc != 0)
            printf("# connect_async(%s): %s\n", fake_qemu_address(f), err.message);
        CHECK_EQ_INT(cr.count, 0);
        if (rc == 0)
            DRIVE_UNTIL(c, &cr.count, 1);
        CHECK_EQ_INT(cr.count, 1);
        CHECK_EQ_INT(cr.status, 0);
        CHECK_EQ_INT(qmp_client_is_connected(c), 1);
        acall a = {0};
        if (cr.status == 0) {
            start(c, "query-version", NULL, QMP_TIMEOUT_DEFAULT, &a);
            DRIVE_UNTIL(c, &a.count, 1);
        }
        CHECK_EQ_INT(a.count, 1);
        CHECK_EQ_INT(a.status, 0);
        /* Descriptors need a unix socket. */
        acall b = {0};
        int zero = 0;
        if (tcp && cr.status == 0) {
            CHECK_EQ_INT(start_full(c, "getfd", NULL, 0, QMP_TIMEOUT_DEFAULT, &zero, 1, &b, &err),
                         -EOPNOTSUPP);
            drive(c, never, NULL, 20);
            CHECK_EQ_INT(b.count, 0);
        }
        acall_clear(&a, 1);
        finish(f, c);
    }
}

TEST(connect_async_bad_greeting)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_greeting(f, "{\"QMP\": \"nope\"}");
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    CHECK_EQ_INT(connect_async_fake(c, f, &cr, &dr), -EPROTO);
    CHECK_EQ_INT(cr.count, 1);
    CHECK(!cr.err_null);
    CHECK_EQ_INT(cr.err.code, -EPROTO);
    CHECK_EQ_INT(cr.err.category, QMP_ERR_GREETING);
    CHECK_EQ_INT(cr.connected, 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    /* A connect that failed is not a disconnect. */
    drive(c, never, NULL, 20);
    CHECK_EQ_INT(dr.count, 0);
    CHECK_EQ_INT(cr.count, 1);
    acall a = {0};
    CHECK(start_full(c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, &a, NULL) < 0);
    CHECK_EQ_INT(a.count, 0);
    finish(f, c);
}

TEST(connect_async_negotiation_failure)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_FAIL);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    CHECK_EQ_INT(connect_async_fake(c, f, &cr, &dr), -EPROTO);
    CHECK_EQ_INT(cr.err.category, QMP_ERR_NEGOTIATION);
    CHECK_EQ_INT(cr.err.qmp_class, QMP_CLASS_GENERIC_ERROR);
    CHECK_EQ_STR(cr.err.class_name, "GenericError");
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    drive(c, never, NULL, 20);
    CHECK_EQ_INT(dr.count, 0);
    CHECK_EQ_INT(cr.count, 1);
    finish(f, c);
}

/* A monitor that never greets (busy with another client): the connect
 * ends on time, and says why it might be. */
TEST(connect_async_greeting_timeout)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_greeting(f, NULL);
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_hold(f);
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_connect_timeout(c, 300), 0);
    conn_rec cr = {0};
    disc_rec dr = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_client_set_connect_callback(c, conn_cb, &cr);
    qmp_client_set_disconnect_callback(c, disc_cb, &dr);
    REQUIRE(fake_qemu_start(f) == 0);
    long long t0 = now_ms();
    CHECK_EQ_INT(qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(f), &err), 0);
    int tmo = qmp_client_get_timeout_ms(c);
    CHECK(tmo > 0 && tmo <= 300);
    DRIVE_UNTIL(c, &cr.count, 1);
    long long dt = cr.at_ms - t0;
    CHECK_EQ_INT(cr.count, 1);
    CHECK_EQ_INT(cr.status, -ETIMEDOUT);
    CHECK_EQ_INT(cr.err.code, -ETIMEDOUT);
    CHECK_EQ_INT(cr.err.category, QMP_ERR_TIMEOUT);
    CHECK_CONTAINS(cr.err.message, "is another client connected?");
    CHECK(dt >= 290);
    CHECK(dt < 300 + MARGIN_MS);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c), -1);
    drive(c, never, NULL, 20);
    CHECK_EQ_INT(cr.count, 1);
    CHECK_EQ_INT(dr.count, 0);
    finish(f, c);
}

/* QEMU closes the socket before its greeting: the connect reports it. */
TEST(connect_async_closed_before_greeting)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_greeting(f, NULL);
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_close(f);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    CHECK_EQ_INT(connect_async_fake(c, f, &cr, &dr), -ECONNRESET);
    CHECK_EQ_INT(cr.err.category, QMP_ERR_DISCONNECTED);
    drive(c, never, NULL, 20);
    CHECK_EQ_INT(cr.count, 1);
    CHECK_EQ_INT(dr.count, 0);
    finish(f, c);
}

/* Failures found at once are returned, and the callback never runs. */
TEST(connect_async_immediate_failures)
{
    qmp_client *c = new_client();
    conn_rec cr = {0};
    qmp_error err = QMP_ERROR_INIT;
    char path[128];
    qmp_client_set_connect_callback(c, conn_cb, &cr);
    snprintf(path, sizeof(path), "%s/missing.sock", tmpdir);
    CHECK_EQ_INT(qmp_client_connect_async(c, path, &err), -ENOENT);
    CHECK_EQ_INT(err.category, QMP_ERR_CONNECT);
    CHECK_EQ_INT(qmp_client_connect_async(c, "tcp:", &err), -EINVAL);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    CHECK_EQ_INT(qmp_client_get_events(c), 0);
    CHECK_EQ_INT(qmp_client_process(c, &err), -ENOTCONN);
    int p[2];
    REQUIRE(pipe(p) == 0);
    close(p[1]);
    CHECK_EQ_INT(qmp_client_connect_fd_async(c, p[0], &err), -ENOTSOCK);
    CHECK(fcntl(p[0], F_GETFD) < 0); /* taken over and closed */
    CHECK_EQ_INT(cr.count, 0);
    qmp_client_unref(c);
    CHECK_EQ_INT(cr.count, 0);
}

/* A TCP connect refused: at once, or through the callback, never both. */
TEST(connect_async_tcp_refused)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(s >= 0);
    REQUIRE(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    REQUIRE(getsockname(s, (struct sockaddr *)&sa, &sl) == 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    /* Bound but not listening: connects are refused. */
    qmp_client *c = new_client();
    conn_rec cr = {0};
    qmp_error err = QMP_ERROR_INIT;
    qmp_client_set_connect_callback(c, conn_cb, &cr);
    int rc = qmp_client_connect_async(c, addr, &err);
    if (rc == 0) {
        DRIVE_UNTIL(c, &cr.count, 1);
        CHECK_EQ_INT(cr.status, -ECONNREFUSED);
        CHECK_EQ_INT(cr.err.category, QMP_ERR_CONNECT);
        CHECK_CONTAINS(cr.err.message, addr);
    } else {
        CHECK_EQ_INT(rc, -ECONNREFUSED);
        CHECK_EQ_INT(err.category, QMP_ERR_CONNECT);
        drive(c, never, NULL, 20);
        CHECK_EQ_INT(cr.count, 0);
    }
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    qmp_client_unref(c);
    close(s);
}

/* Subscriptions made before connecting see the events QEMU sends during
 * negotiation. */
typedef struct ev_rec {
    int count;
    char names[64][32];
    int seqs[64];
    long long data_seq[64]; /* "seq" member of the data, -1 without */
    /* Behaviour. */
    qmp_client *c;
    uint64_t unsubscribe_id; /* unsubscribe this from the callback */
    int unsubscribe_rc;
    bool subscribe_more; /* subscribe `extra` from the first callback */
    struct ev_rec *extra;
    uint64_t extra_id;
    int subscribe_rc;
    int blocking_rc;   /* a blocking call from the callback */
    int process_rc;    /* qmp_client_process() from the callback */
    int next_event_rc; /* qmp_client_next_event() from the callback */
    bool try_blocking;
    int *done;
} ev_rec;

static void ev_cb(qmp_client *c, qmp_event *ev, void *userdata)
{
    ev_rec *r = userdata;
    int i = r->count++;
    if (i < 64) {
        snprintf(r->names[i], sizeof(r->names[i]), "%s", qmp_event_name(ev));
        r->seqs[i] = ++seq_counter;
        json_object *d = qmp_event_data(ev), *s = NULL;
        r->data_seq[i] = json_object_object_get_ex(d, "seq", &s) ? json_object_get_int64(s) : -1;
    }
    if (r->unsubscribe_id != 0) {
        r->unsubscribe_rc = qmp_client_unsubscribe(c, r->unsubscribe_id);
        r->unsubscribe_id = 0;
    }
    if (r->subscribe_more) {
        r->subscribe_more = false;
        r->subscribe_rc = qmp_client_subscribe(c, NULL, ev_cb, r->extra, &r->extra_id);
    }
    if (r->try_blocking) {
        qmp_error err = QMP_ERROR_INIT;
        qmp_event *got = NULL;
        r->try_blocking = false;
        r->blocking_rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
        r->process_rc = qmp_client_process(c, NULL);
        r->next_event_rc = qmp_client_next_event(c, 1000, &got, NULL);
        qmp_event_unref(got);
    }
    if (r->done != NULL)
        (*r->done)++;
}

TEST(events_during_negotiation_reach_subscriptions)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_event(f, "EARLY", NULL);
    int caps = fake_qemu_expect(f, "qmp_capabilities", NULL);
    fake_qemu_event(f, "MIDNEG", NULL);
    fake_qemu_reply(f, caps, "{}");
    qmp_client *c = new_client();
    ev_rec all = {0};
    CHECK_EQ_INT(qmp_client_subscribe(c, NULL, ev_cb, &all, NULL), 0);
    conn_rec cr = {0};
    CHECK_EQ_INT(connect_async_fake(c, f, &cr, NULL), 0);
    CHECK_EQ_INT(all.count, 2);
    CHECK_EQ_STR(all.names[0], "EARLY");
    CHECK_EQ_STR(all.names[1], "MIDNEG");
    CHECK(all.seqs[1] < cr.seq);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    finish(f, c);
}

/* ------------------------------------------------------------ many calls */

/* A thousand calls through the default limit of 8: the fake takes each
 * group of 8 and answers it backwards. */
TEST(thousand_calls_default_limit)
{
    enum { N = 1000, GROUP = QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT };
    static acall a[N];
    memset(a, 0, sizeof(a));
    fake_qemu *f = fake_qemu_new();
    int q[N];
    char args[64], ret[64];
    for (int g = 0; g < N; g += GROUP) {
        int end = g + GROUP < N ? g + GROUP : N;
        for (int i = g; i < end; i++) {
            snprintf(args, sizeof(args), "{\"n\": %d}", i);
            q[i] = fake_qemu_expect_full(f, "echo", args, FAKE_QEMU_ARGS_EXACT, 0);
        }
        for (int i = end - 1; i >= g; i--) {
            snprintf(ret, sizeof(ret), "{\"n\": %d}", i);
            fake_qemu_reply(f, q[i], ret);
        }
    }
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    int done = 0;
    for (int i = 0; i < N; i++) {
        a[i].done = &done;
        snprintf(args, sizeof(args), "{\"n\": %d}", i);
        start(c, "echo", args, QMP_TIMEOUT_DEFAULT, &a[i]);
    }
    CHECK_EQ_INT(done, 0); /* never inside execute_async */
    DRIVE_UNTIL(c, &done, N);
    for (int i = 0; i < N; i++) {
        json_object *n = NULL;
        if (a[i].count != 1 || a[i].status != 0 || !json_object_object_get_ex(a[i].ret, "n", &n) ||
            json_object_get_int(n) != i || a[i].tag != a[i].sent_tag) {
            HARNESS_FAIL_("call %d: count %d status %d ret %s", i, a[i].count, a[i].status,
                          jtext(a[i].ret));
            break;
        }
    }
    /* Each group completes backwards, after the group before it. */
    CHECK(a[7].seq < a[0].seq);
    CHECK(a[0].seq < a[15].seq);
    CHECK_EQ_INT(dr.count, 0);
    acall_clear(a, N);
    finish(f, c);
}

/* A thousand calls with a window as large: all go out at once and come
 * back in a scrambled order. */
TEST(thousand_calls_scrambled)
{
    enum { N = 1000 };
    static acall a[N];
    static int perm[N];
    memset(a, 0, sizeof(a));
    fake_qemu *f = fake_qemu_new();
    int q[N];
    char args[64], ret[64];
    for (int i = 0; i < N; i++) {
        snprintf(args, sizeof(args), "{\"n\": %d}", i);
        q[i] = fake_qemu_expect_full(f, "echo", args, FAKE_QEMU_ARGS_EXACT, 0);
        perm[i] = i;
    }
    uint32_t seed = 4242;
    for (int i = N - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        int j = (int)((seed >> 8) % (uint32_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < N; i++) {
        snprintf(ret, sizeof(ret), "{\"n\": %d}", perm[i]);
        fake_qemu_reply(f, q[perm[i]], ret);
    }
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 0), -EINVAL);
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1025), -EINVAL);
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1024), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    int done = 0;
    for (int i = 0; i < N; i++) {
        a[i].done = &done;
        snprintf(args, sizeof(args), "{\"n\": %d}", i);
        start(c, "echo", args, QMP_TIMEOUT_DEFAULT, &a[i]);
    }
    DRIVE_UNTIL(c, &done, N);
    for (int i = 0; i < N; i++) {
        json_object *n = NULL;
        if (a[i].count != 1 || a[i].status != 0 || !json_object_object_get_ex(a[i].ret, "n", &n) ||
            json_object_get_int(n) != i) {
            HARNESS_FAIL_("call %d: count %d status %d ret %s", i, a[i].count, a[i].status,
                          jtext(a[i].ret));
            break;
        }
    }
    /* Callbacks ran in the order the replies came. */
    for (int i = 1; i < N; i++) {
        if (a[perm[i - 1]].seq > a[perm[i]].seq) {
            HARNESS_FAIL_("reply %d (call %d) handled before reply %d", i, perm[i], i - 1);
            break;
        }
    }
    acall_clear(a, N);
    finish(f, c);
}

/* ------------------------------------------------------------ deadlines */

/* One call times out on schedule while others complete; its late reply
 * is dropped and later calls get their own replies. */
TEST(call_timeout_on_schedule)
{
    fake_qemu *f = fake_qemu_new();
    int qs = fake_qemu_expect(f, "slow", NULL);
    int q1 = fake_qemu_expect(f, "fast1", NULL);
    fake_qemu_reply(f, q1, "1");
    int q2 = fake_qemu_expect(f, "fast2", NULL);
    fake_qemu_reply(f, q2, "2");
    fake_qemu_hold(f);
    fake_qemu_reply(f, qs, "\"late\"");
    int qa = fake_qemu_expect(f, "after", NULL);
    fake_qemu_reply(f, qa, "\"own\"");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);

    acall slow = {0}, f1 = {0}, f2 = {0}, after = {0};
    long long t0 = now_ms();
    start(c, "slow", NULL, 400, &slow);
    start(c, "fast1", NULL, QMP_TIMEOUT_DEFAULT, &f1);
    start(c, "fast2", NULL, QMP_TIMEOUT_DEFAULT, &f2);
    int tmo = qmp_client_get_timeout_ms(c);
    CHECK(tmo > 0 && tmo <= 400);
    uint64_t usec = 0;
    struct timespec ts;
    CHECK_EQ_INT(qmp_client_get_timeout(c, &usec), 0);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    CHECK(usec > now_us && usec <= now_us + 400000u);

    DRIVE_UNTIL(c, &slow.count, 1);
    long long dt = slow.at_ms - t0;
    CHECK_EQ_INT(slow.status, -ETIMEDOUT);
    CHECK_EQ_INT(slow.err.category, QMP_ERR_TIMEOUT);
    CHECK_CONTAINS(slow.err.message, "slow");
    CHECK(dt >= 400);
    CHECK(dt < 400 + MARGIN_MS);
    CHECK_EQ_INT(f1.count, 1);
    CHECK_EQ_INT(f2.count, 1);
    CHECK(f1.seq < slow.seq && f2.seq < slow.seq);
    CHECK_EQ_INT(json_object_get_int(f1.ret), 1);
    CHECK_EQ_INT(json_object_get_int(f2.ret), 2);
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c), -1);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);

    /* The fake now sends the late reply, then answers "after". */
    fake_qemu_resume(f);
    start(c, "after", NULL, QMP_TIMEOUT_DEFAULT, &after);
    DRIVE_UNTIL(c, &after.count, 1);
    CHECK_EQ_INT(after.status, 0);
    CHECK_EQ_STR(json_object_get_string(after.ret), "own");
    CHECK_EQ_INT(slow.count, 1);
    CHECK_EQ_INT(slow.status, -ETIMEDOUT);
    acall_clear(&slow, 1);
    acall_clear(&f1, 1);
    acall_clear(&f2, 1);
    acall_clear(&after, 1);
    finish(f, c);
}

/* Deadlines fire in deadline order, not start order; a cancelled call
 * leaves the others' deadlines alone. */
TEST(timeouts_fire_in_deadline_order)
{
    static const int tmo[5] = {500, 100, 300, 200, 400};
    fake_qemu *f = fake_qemu_new();
    int q[5];
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        q[i] = fake_qemu_expect(f, name, NULL);
    }
    fake_qemu_hold(f);
    for (int i = 0; i < 5; i++)
        fake_qemu_reply(f, q[i], "\"late\"");
    int qz = fake_qemu_expect(f, "z", NULL);
    fake_qemu_reply(f, qz, "\"z\"");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a[5] = {{0}}, z = {0};
    int done = 0;
    long long t0 = now_ms();
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        a[i].done = &done;
        start(c, name, NULL, tmo[i], &a[i]);
    }
    CHECK_EQ_INT(qmp_client_cancel(c, a[2].sent_tag), 0);
    CHECK_EQ_INT(a[2].count, 1);
    CHECK_EQ_INT(a[2].status, -ECANCELED);
    DRIVE_UNTIL(c, &done, 5);
    /* 100, 200, 400, 500 ms: calls 1, 3, 4, 0. */
    static const int want[4] = {1, 3, 4, 0};
    for (int k = 0; k < 4; k++) {
        int i = want[k];
        CHECK_EQ_INT(a[i].count, 1);
        CHECK_EQ_INT(a[i].status, -ETIMEDOUT);
        CHECK(a[i].at_ms - t0 >= tmo[i]);
        CHECK(a[i].at_ms - t0 < tmo[i] + MARGIN_MS);
        if (k > 0)
            CHECK(a[want[k - 1]].seq < a[i].seq);
    }
    fake_qemu_resume(f);
    start(c, "z", NULL, QMP_TIMEOUT_DEFAULT, &z);
    DRIVE_UNTIL(c, &z.count, 1);
    CHECK_EQ_STR(json_object_get_string(z.ret), "z");
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(a[i].count, 1);
    acall_clear(a, 5);
    acall_clear(&z, 1);
    finish(f, c);
}

/* Records the traffic as "> name" and "< id-or-event" lines. */
static void trace_cb(qmp_trace_direction dir, const char *data, size_t len, void *userdata)
{
    char *log = userdata;
    size_t used = strlen(log);
    char line[128];
    snprintf(line, sizeof(line), "%c %.*s\n", dir == QMP_TRACE_OUT ? '>' : '<',
             (int)(len > 100 ? 100 : len), data);
    if (used + strlen(line) < 8192)
        memcpy(log + used, line, strlen(line) + 1);
}

/* With a limit of 1, a call that timed out still holds the slot until
 * QEMU answers it: the next call goes out only after the late reply. */
TEST(timed_out_call_holds_its_slot)
{
    fake_qemu *f = fake_qemu_new();
    int qs = fake_qemu_expect(f, "slow", NULL);
    fake_qemu_hold(f);
    fake_qemu_reply(f, qs, "\"late\"");
    int qn = fake_qemu_expect(f, "next", NULL);
    fake_qemu_reply(f, qn, "\"own\"");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    static char log[8192];
    log[0] = '\0';
    qmp_client_set_trace(c, trace_cb, log);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall slow = {0}, next = {0};
    start(c, "slow", NULL, 200, &slow);
    DRIVE_UNTIL(c, &slow.count, 1);
    CHECK_EQ_INT(slow.status, -ETIMEDOUT);
    start(c, "next", NULL, QMP_TIMEOUT_DEFAULT, &next);
    CHECK(strstr(log, "\"next\"") == NULL);
    /* The fake is held: nothing can arrive, so nothing is let out. */
    qmp_client_process(c, NULL);
    CHECK(strstr(log, "\"next\"") == NULL);
    fake_qemu_resume(f);
    DRIVE_UNTIL(c, &next.count, 1);
    CHECK_EQ_STR(json_object_get_string(next.ret), "own");
    const char *late = strstr(log, "< {\"return\": \"late\"");
    const char *out = strstr(log, "\"next\"");
    CHECK(late != NULL && out != NULL && late < out);
    if (harness_cur_failed)
        printf("# trace:\n%s", log);
    CHECK_EQ_INT(slow.count, 1);
    qmp_client_set_trace(c, NULL, NULL);
    acall_clear(&slow, 1);
    acall_clear(&next, 1);
    finish(f, c);
}

/* ------------------------------------------------------------ cancelling */

/* Cancelled while held back by the limit: never sent. */
TEST(cancel_call_still_queued)
{
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    fake_qemu_reply(f, qa, "\"a\"");
    int qc = fake_qemu_expect(f, "c", NULL);
    fake_qemu_reply(f, qc, "\"c\"");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    watch_rec w = {0};
    qmp_client_set_watch_callback(c, watch_cb, &w);
    acall a = {0}, b = {0}, cc = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b);
    start(c, "c", NULL, QMP_TIMEOUT_DEFAULT, &cc);
    CHECK_EQ_INT(qmp_client_cancel(c, b.sent_tag), 0);
    CHECK_EQ_INT(b.count, 1);
    CHECK_EQ_INT(b.status, -ECANCELED);
    CHECK_EQ_INT(b.err.category, QMP_ERR_CANCELLED);
    CHECK(b.tag == b.sent_tag);
    CHECK_EQ_INT(qmp_client_cancel(c, b.sent_tag), -ENOENT);
    CHECK_EQ_INT(qmp_client_cancel(c, 987654321), -ENOENT);
    DRIVE_UNTIL(c, &cc.count, 1);
    CHECK_EQ_STR(json_object_get_string(a.ret), "a");
    CHECK_EQ_STR(json_object_get_string(cc.ret), "c");
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(b.count, 1);
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    acall_clear(&cc, 1);
    finish(f, c);
}

static bool request_arrived(void *arg)
{
    void **p = arg;
    return fake_qemu_request(p[0], *(int *)p[1]) != NULL;
}

/* Cancelled after QEMU received it: the late reply is dropped. */
TEST(cancel_call_already_sent)
{
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    int qb = fake_qemu_expect(f, "b", NULL);
    fake_qemu_reply(f, qb, "\"b\"");
    fake_qemu_reply(f, qa, "\"late\"");
    int qz = fake_qemu_expect(f, "z", NULL);
    fake_qemu_reply(f, qz, "\"z\"");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a = {0}, b = {0}, z = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    void *arg[2] = {f, &qa};
    CHECK(drive_ext(c, request_arrived, arg));
    CHECK_EQ_INT(qmp_client_cancel(c, a.sent_tag), 0);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b);
    DRIVE_UNTIL(c, &b.count, 1);
    CHECK_EQ_STR(json_object_get_string(b.ret), "b");
    /* "late" comes before z's reply. */
    start(c, "z", NULL, QMP_TIMEOUT_DEFAULT, &z);
    DRIVE_UNTIL(c, &z.count, 1);
    CHECK_EQ_STR(json_object_get_string(z.ret), "z");
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    acall_clear(&z, 1);
    finish(f, c);
}

/* Waits until fd is readable, without reading. */
static bool wait_readable(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};
    long long deadline = now_ms() + WAIT_MS;
    while (now_ms() < deadline) {
        int n = poll(&p, 1, (int)(deadline - now_ms()));
        if (n > 0)
            return true;
        if (n < 0 && errno != EINTR)
            return false;
    }
    return false;
}

/* Cancelled when its reply is already in the socket but not processed:
 * the callback runs once, with the cancellation. */
TEST(cancel_call_with_reply_unread)
{
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    fake_qemu_reply(f, qa, "\"a\"");
    int qz = fake_qemu_expect(f, "z", NULL);
    fake_qemu_reply(f, qz, "\"z\"");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a = {0}, z = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    /* One pass writes the request (it reads first, finding nothing). */
    CHECK(qmp_client_process(c, NULL) >= 0);
    CHECK_EQ_INT(a.count, 0);
    REQUIRE(wait_readable(qmp_client_get_fd(c)));
    CHECK_EQ_INT(a.count, 0);
    CHECK_EQ_INT(qmp_client_cancel(c, a.sent_tag), 0);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    CHECK_EQ_INT(qmp_client_process(c, NULL), 1);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    struct pollfd p = {qmp_client_get_fd(c), POLLIN, 0};
    CHECK_EQ_INT(poll(&p, 1, 0), 0); /* the reply was read and dropped */
    start(c, "z", NULL, QMP_TIMEOUT_DEFAULT, &z);
    DRIVE_UNTIL(c, &z.count, 1);
    CHECK_EQ_STR(json_object_get_string(z.ret), "z");
    acall_clear(&a, 1);
    acall_clear(&z, 1);
    finish(f, c);
}

/* ------------------------------------------------------------ failures */

/* QEMU goes away with calls sent and calls still queued: each callback
 * once with the disconnect, then the disconnect callback once, and the
 * error sticks. */
TEST(disconnect_fails_pending_calls)
{
    enum { N = 12 };
    fake_qemu *f = fake_qemu_new();
    char name[16];
    for (int i = 0; i < QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        fake_qemu_expect(f, name, NULL);
    }
    fake_qemu_close(f);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    acall a[N] = {{0}};
    int done = 0;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        a[i].done = &done;
        start(c, name, NULL, QMP_TIMEOUT_DEFAULT, &a[i]);
    }
    DRIVE_UNTIL(c, &dr.count, 1);
    CHECK_EQ_INT(done, N);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(a[i].count, 1);
        CHECK_EQ_INT(a[i].status, -ECONNRESET);
        CHECK_EQ_INT(a[i].err.category, QMP_ERR_DISCONNECTED);
        CHECK(a[i].seq < dr.seq);
    }
    CHECK_EQ_INT(dr.count, 1);
    CHECK_EQ_INT(dr.err.code, -ECONNRESET);
    CHECK_EQ_INT(dr.err.category, QMP_ERR_DISCONNECTED);
    CHECK(dr.err.message[0] != '\0');
    CHECK_EQ_INT(dr.process_rc, -EBUSY);
    CHECK_EQ_INT(dr.connected, 0);
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_process(c, &err), -ECONNRESET);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK_EQ_INT(qmp_client_process(c, &err), -ECONNRESET);
    CHECK_EQ_INT(dr.count, 1);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    CHECK_EQ_INT(qmp_client_get_events(c), 0);
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c), -1);
    acall late = {0};
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, &late, &err),
                 -ECONNRESET);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK_EQ_INT(qmp_client_execute(c, "x", NULL, NULL, &err), -ECONNRESET);
    drive(c, never, NULL, 20);
    CHECK_EQ_INT(late.count, 0);
    CHECK_EQ_INT(dr.count, 1);
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(a[i].count, 1);
    acall_clear(a, N);
    finish(f, c);
}

/* A protocol error fails the calls and the connection the same way. */
TEST(protocol_error_fails_pending_calls)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_expect(f, "a", NULL);
    fake_qemu_expect(f, "b", NULL);
    fake_qemu_send(f, "{\"return\": 1, \"id\": \r\n");
    fake_qemu_send(f, "]\r\n");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    acall a = {0}, b = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b);
    DRIVE_UNTIL(c, &dr.count, 1);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(b.count, 1);
    CHECK_EQ_INT(a.status, -EPROTO);
    CHECK_EQ_INT(b.status, -EPROTO);
    CHECK_EQ_INT(dr.err.code, -EPROTO);
    CHECK_EQ_INT(dr.err.category, QMP_ERR_PROTOCOL);
    CHECK(a.seq < dr.seq && b.seq < dr.seq);
    CHECK_EQ_INT(qmp_client_process(c, NULL), -EPROTO);
    CHECK_EQ_INT(dr.count, 1);
    finish(f, c);
}

/* A QEMU that never answers delays nobody else: two clients in one
 * loop, one of them talking to a silent peer. */
TEST(silent_peer_does_not_delay_others)
{
    enum { N = 50 };
    fake_qemu *silent = fake_qemu_new();
    fake_qemu_expect(silent, "stuck", NULL);
    fake_qemu_hold(silent);
    fake_qemu *busy = fake_qemu_new();
    char ret[32];
    for (int i = 0; i < N; i++) {
        int q = fake_qemu_expect(busy, "quick", NULL);
        snprintf(ret, sizeof(ret), "%d", i);
        fake_qemu_reply(busy, q, ret);
    }
    qmp_client *c1 = new_client(), *c2 = new_client();
    conn_rec cr1 = {0}, cr2 = {0};
    REQUIRE(connect_async_fake(c1, silent, &cr1, NULL) == 0);
    REQUIRE(connect_async_fake(c2, busy, &cr2, NULL) == 0);
    acall stuck = {0}, a[N] = {{0}};
    int done = 0;
    start(c1, "stuck", NULL, QMP_TIMEOUT_INFINITE, &stuck);
    /* Nothing to wait for on c1: no deadline. */
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c1), -1);
    long long t0 = now_ms();
    for (int i = 0; i < N; i++) {
        a[i].done = &done;
        start(c2, "quick", NULL, QMP_TIMEOUT_DEFAULT, &a[i]);
    }
    qmp_client *both[2] = {c1, c2};
    int rcs[2] = {0, 0};
    target t = {&done, N};
    CHECK(drive_many(both, rcs, 2, reached, &t, WAIT_MS));
    CHECK(now_ms() - t0 < MARGIN_MS);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(a[i].count, 1);
        CHECK_EQ_INT(json_object_get_int(a[i].ret), i);
    }
    CHECK_EQ_INT(stuck.count, 0);
    CHECK(rcs[0] >= 0 && rcs[1] >= 0);
    finish(busy, c2);
    /* Dropping the client ends the stuck call. */
    qmp_client_unref(c1);
    CHECK_EQ_INT(stuck.count, 1);
    CHECK_EQ_INT(stuck.status, -ECANCELED);
    CHECK_EQ_INT(fake_qemu_finish(silent), 0);
    fake_qemu_free(silent);
    acall_clear(a, N);
}

/* ------------------------------------------------------------ events */

TEST(subscriptions_by_name_and_catch_all)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "go", NULL);
    fake_qemu_event(f, "STOP", NULL);
    fake_qemu_event(f, "RESUME", NULL);
    fake_qemu_reply(f, q, "{}");
    int q2 = fake_qemu_expect(f, "again", NULL);
    fake_qemu_event(f, "STOP", NULL);
    fake_qemu_event(f, "OTHER", "{\"x\": 1}");
    fake_qemu_reply(f, q2, "{}");
    qmp_client *c = new_client();
    ev_rec stop = {0}, all = {0};
    uint64_t stop_id = 0, all_id = 0;
    CHECK_EQ_INT(qmp_client_subscribe(c, "STOP", ev_cb, &stop, &stop_id), 0);
    CHECK_EQ_INT(qmp_client_subscribe(c, NULL, ev_cb, &all, &all_id), 0);
    CHECK(stop_id != 0 && all_id != 0 && stop_id != all_id);
    CHECK_EQ_INT(qmp_client_subscribe(c, "X", NULL, NULL, NULL), -EINVAL);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a = {0}, b = {0};
    start(c, "go", NULL, QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(stop.count, 1);
    CHECK_EQ_STR(stop.names[0], "STOP");
    CHECK_EQ_INT(all.count, 2);
    CHECK_EQ_STR(all.names[0], "STOP");
    CHECK_EQ_STR(all.names[1], "RESUME");
    /* In the order subscribed, events before the reply that followed them. */
    CHECK(stop.seqs[0] < all.seqs[0]);
    CHECK(all.seqs[1] < a.seq);
    /* Taken events are not queued. */
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);

    /* Without the catch-all, OTHER is queued, STOP still taken. */
    CHECK_EQ_INT(qmp_client_unsubscribe(c, all_id), 0);
    CHECK_EQ_INT(qmp_client_unsubscribe(c, all_id), -ENOENT);
    start(c, "again", NULL, QMP_TIMEOUT_DEFAULT, &b);
    DRIVE_UNTIL(c, &b.count, 1);
    CHECK_EQ_INT(stop.count, 2);
    CHECK_EQ_INT(all.count, 2);
    CHECK_EQ_INT(qmp_client_events_queued(c), 1);
    qmp_event *ev = NULL;
    CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, NULL), 0);
    CHECK_EQ_STR(ev ? qmp_event_name(ev) : NULL, "OTHER");
    qmp_event_unref(ev);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_events_lost(c), 0);
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    finish(f, c);
}

/* Subscribed before the command: the event that comes before the reply
 * is seen, before the reply. */
TEST(subscription_sees_event_before_reply)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "device_del", "{\"id\": \"tab\"}");
    fake_qemu_event(f, "DEVICE_DELETED", "{\"device\": \"tab\"}");
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    ev_rec del = {0};
    CHECK_EQ_INT(qmp_client_subscribe(c, "DEVICE_DELETED", ev_cb, &del, NULL), 0);
    acall a = {0};
    start(c, "device_del", "{\"id\": \"tab\"}", QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(del.count, 1);
    CHECK(del.seqs[0] < a.seq);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    acall_clear(&a, 1);
    finish(f, c);
}

/* A subscription that removes itself in its own callback sees one event;
 * one made in a callback sees the next event, not the current one. */
TEST(unsubscribe_and_subscribe_inside_callbacks)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "go", NULL);
    fake_qemu_event_burst(f, "TICK", 4);
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    ev_rec once = {0}, later = {0}, adder = {0};
    uint64_t once_id = 0;
    CHECK_EQ_INT(qmp_client_subscribe(c, "TICK", ev_cb, &once, &once_id), 0);
    once.unsubscribe_id = once_id;
    adder.subscribe_more = true;
    adder.extra = &later;
    CHECK_EQ_INT(qmp_client_subscribe(c, "NEVER", ev_cb, &adder, NULL), 0);
    acall a = {0};
    start(c, "go", NULL, QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(once.count, 1);
    CHECK_EQ_INT(once.unsubscribe_rc, 0);
    CHECK_EQ_INT(once.data_seq[0], 0);
    /* TICK 1..3 were taken by nobody: queued, in order. */
    CHECK_EQ_INT(qmp_client_events_queued(c), 3);
    for (int i = 1; i <= 3; i++) {
        qmp_event *ev = NULL;
        CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, NULL), 0);
        json_object *s = NULL;
        CHECK(ev != NULL && json_object_object_get_ex(qmp_event_data(ev), "seq", &s) &&
              json_object_get_int(s) == i);
        qmp_event_unref(ev);
    }
    CHECK_EQ_INT(adder.count, 0);
    CHECK_EQ_INT(later.count, 0);
    acall_clear(&a, 1);
    finish(f, c);

    /* Subscribing from a callback. */
    f = fake_qemu_new();
    q = fake_qemu_expect(f, "go", NULL);
    fake_qemu_event_burst(f, "TICK", 3);
    fake_qemu_reply(f, q, "{}");
    c = new_client();
    memset(&cr, 0, sizeof(cr));
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    memset(&adder, 0, sizeof(adder));
    memset(&later, 0, sizeof(later));
    adder.subscribe_more = true;
    adder.extra = &later;
    CHECK_EQ_INT(qmp_client_subscribe(c, "TICK", ev_cb, &adder, NULL), 0);
    memset(&a, 0, sizeof(a));
    start(c, "go", NULL, QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(adder.subscribe_rc, 0);
    CHECK_EQ_INT(adder.count, 3);
    CHECK_EQ_INT(later.count, 2);
    CHECK_EQ_INT(later.data_seq[0], 1);
    CHECK_EQ_INT(later.data_seq[1], 2);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_unsubscribe(c, adder.extra_id), 0);
    acall_clear(&a, 1);
    finish(f, c);
}

/* ------------------------------------------------------------ callbacks */

/* What a reply callback tries. */
typedef struct cb_probe {
    int count;
    int execute_rc;
    qmp_error execute_err;
    int process_rc;
    int next_event_rc;
    int wait_event_rc;
    int send_raw_rc;
    int connect_rc;
    int async_rc;
    acall chained;
} cb_probe;

static void probe_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    cb_probe *p = userdata;
    qmp_event *ev = NULL;
    json_object *raw = jparse("{\"execute\": \"raw\", \"id\": 7}");
    (void)reply;
    p->count++;
    p->execute_rc = qmp_client_execute(c, "query-status", NULL, NULL, &p->execute_err);
    p->process_rc = qmp_client_process(c, NULL);
    p->next_event_rc = qmp_client_next_event(c, 1000, &ev, NULL);
    qmp_event_unref(ev);
    ev = NULL;
    p->wait_event_rc = qmp_client_wait_event(c, "X", NULL, 1000, &ev, NULL);
    qmp_event_unref(ev);
    p->send_raw_rc = qmp_client_send_raw(c, raw, 1000, NULL, NULL);
    json_object_put(raw);
    p->connect_rc = qmp_client_connect(c, "/nonexistent/libqmp.sock", NULL);
    /* Starting a call is fine. */
    p->async_rc = qmp_client_execute_async(c, "chained", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                           acall_cb, &p->chained, NULL, NULL);
}

static void check_probe(const cb_probe *p)
{
    CHECK_EQ_INT(p->count, 1);
    CHECK_EQ_INT(p->execute_rc, -EBUSY);
    CHECK_EQ_INT(p->execute_err.category, QMP_ERR_INVALID);
    CHECK_EQ_INT(p->process_rc, -EBUSY);
    CHECK_EQ_INT(p->next_event_rc, -EBUSY);
    CHECK_EQ_INT(p->wait_event_rc, -EBUSY);
    CHECK_EQ_INT(p->send_raw_rc, -EBUSY);
    CHECK_EQ_INT(p->connect_rc, -EBUSY);
    CHECK_EQ_INT(p->async_rc, 0);
}

/* Blocking calls inside callbacks fail with -EBUSY (in reply,
 * subscription and connect callbacks); starting calls works. */
TEST(blocking_calls_inside_callbacks_fail)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "probe", NULL);
    fake_qemu_reply(f, q, "{}");
    int qc = fake_qemu_expect(f, "chained", NULL);
    fake_qemu_reply(f, qc, "\"chained\"");
    int qe = fake_qemu_expect(f, "emit", NULL);
    fake_qemu_event(f, "PING", NULL);
    fake_qemu_reply(f, qe, "{}");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    cb_probe p = {0};
    REQUIRE(qmp_client_execute_async(c, "probe", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, probe_cb,
                                     &p, NULL, NULL) == 0);
    DRIVE_UNTIL(c, &p.chained.count, 1);
    check_probe(&p);
    CHECK_EQ_INT(p.chained.status, 0);
    CHECK_EQ_STR(json_object_get_string(p.chained.ret), "chained");
    /* The client is unharmed. */
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);

    ev_rec ping = {0};
    ping.try_blocking = true;
    CHECK_EQ_INT(qmp_client_subscribe(c, "PING", ev_cb, &ping, NULL), 0);
    acall e = {0};
    start(c, "emit", NULL, QMP_TIMEOUT_DEFAULT, &e);
    DRIVE_UNTIL(c, &e.count, 1);
    CHECK_EQ_INT(ping.count, 1);
    CHECK_EQ_INT(ping.blocking_rc, -EBUSY);
    CHECK_EQ_INT(ping.process_rc, -EBUSY);
    CHECK_EQ_INT(ping.next_event_rc, -EBUSY);
    CHECK_EQ_INT(e.status, 0);
    acall_clear(&p.chained, 1);
    acall_clear(&e, 1);
    finish(f, c);
}

/* The connect callback may start calls but not block. */
typedef struct conn_starter {
    conn_rec cr;
    int execute_rc;
    int async_rc;
    acall first;
} conn_starter;

static void conn_start_cb(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    conn_starter *s = userdata;
    conn_cb(c, status, err, &s->cr);
    s->execute_rc = qmp_client_execute(c, "query-status", NULL, NULL, NULL);
    s->async_rc = qmp_client_execute_async(c, "first", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                           acall_cb, &s->first, NULL, NULL);
}

TEST(connect_callback_starts_calls)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "first", NULL);
    fake_qemu_reply(f, q, "1");
    qmp_client *c = new_client();
    conn_starter s = {0};
    qmp_client_set_connect_callback(c, conn_start_cb, &s);
    REQUIRE(fake_qemu_start(f) == 0);
    REQUIRE(qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(f), NULL) == 0);
    DRIVE_UNTIL(c, &s.first.count, 1);
    CHECK_EQ_INT(s.cr.count, 1);
    CHECK_EQ_INT(s.cr.status, 0);
    CHECK_EQ_INT(s.execute_rc, -EBUSY);
    CHECK_EQ_INT(s.async_rc, 0);
    CHECK_EQ_INT(s.first.status, 0);
    CHECK_EQ_INT(json_object_get_int(s.first.ret), 1);
    acall_clear(&s.first, 1);
    finish(f, c);
}

/* A chain of calls, each started by the previous one's callback. */
typedef struct chain {
    int count;
    int limit;
    int last_value;
    int failures;
} chain;

static void chain_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    chain *ch = userdata;
    ch->count++;
    if (qmp_reply_status(reply) != 0) {
        ch->failures++;
        return;
    }
    ch->last_value = json_object_get_int(qmp_reply_return(reply));
    if (ch->count < ch->limit && qmp_client_execute_async(c, "step", NULL, 0, QMP_TIMEOUT_DEFAULT,
                                                          NULL, 0, chain_cb, ch, NULL, NULL) != 0)
        ch->failures++;
}

TEST(calls_started_from_callbacks)
{
    enum { N = 20 };
    fake_qemu *f = fake_qemu_new();
    char ret[16];
    for (int i = 0; i < N; i++) {
        int q = fake_qemu_expect(f, "step", NULL);
        snprintf(ret, sizeof(ret), "%d", i);
        fake_qemu_reply(f, q, ret);
    }
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    chain ch = {.limit = N};
    REQUIRE(qmp_client_execute_async(c, "step", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, chain_cb,
                                     &ch, NULL, NULL) == 0);
    DRIVE_UNTIL(c, &ch.count, N);
    CHECK_EQ_INT(ch.failures, 0);
    CHECK_EQ_INT(ch.last_value, N - 1);
    finish(f, c);
}

/* ------------------------------------------------------------ descriptors */

TEST(fd_passing_async)
{
    int p[2], r[2];
    REQUIRE(pipe2(p, O_CLOEXEC) == 0);
    REQUIRE(pipe2(r, O_CLOEXEC) == 0);
    struct stat want_p, want_r;
    REQUIRE(fstat(p[1], &want_p) == 0);
    REQUIRE(fstat(r[1], &want_r) == 0);
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect_full(f, "block", NULL, 0, 0);
    fake_qemu_reply(f, qa, "{}");
    int qg = fake_qemu_expect_full(f, "getfd", "{\"fdname\": \"p\"}", 0, 1);
    fake_qemu_reply(f, qg, "{}");
    int qd = fake_qemu_expect_full(f, "add-fd", "{\"fdset-id\": 1}", 0, 1);
    fake_qemu_reply(f, qd, "{\"fdset-id\": 1, \"fd\": 9}");
    qmp_client *c = new_client();
    /* One at a time: getfd waits behind "block", and its descriptor with it. */
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    int before = count_open_fds();
    acall a = {0}, g = {0}, d = {0};
    qmp_error err = QMP_ERROR_INIT;
    start(c, "block", NULL, QMP_TIMEOUT_DEFAULT, &a);
    CHECK_EQ_INT(
        start_full(c, "getfd", "{\"fdname\": \"p\"}", 0, QMP_TIMEOUT_DEFAULT, &p[1], 1, &g, &err),
        0);
    /* Ours may be closed at once: the client keeps its own copy. */
    close(p[1]);
    CHECK_EQ_INT(
        start_full(c, "add-fd", "{\"fdset-id\": 1}", 0, QMP_TIMEOUT_DEFAULT, &r[1], 1, &d, &err),
        0);
    close(r[1]);
    DRIVE_UNTIL(c, &d.count, 1);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(g.status, 0);
    CHECK_EQ_INT(d.status, 0);
    REQUIRE(fake_qemu_request_n_fds(f, qg) == 1);
    REQUIRE(fake_qemu_request_n_fds(f, qd) == 1);
    struct stat got;
    int gfd = fake_qemu_request_fd(f, qg, 0);
    CHECK(fstat(gfd, &got) == 0 && got.st_ino == want_p.st_ino && got.st_dev == want_p.st_dev);
    CHECK(fstat(fake_qemu_request_fd(f, qd, 0), &got) == 0 && got.st_ino == want_r.st_ino);
    CHECK_EQ_INT(write(gfd, "hi", 2), 2);
    char buf[4] = "";
    CHECK_EQ_INT(read(p[0], buf, 2), 2);
    CHECK_EQ_STR(buf, "hi");
    /* We closed two, the fake holds two: the client's copies are gone. */
    CHECK_EQ_INT(count_open_fds(), before);
    acall_clear(&a, 1);
    acall_clear(&g, 1);
    acall_clear(&d, 1);
    finish(f, c);
    close(p[0]);
    close(r[0]);
}

/* Bad arguments fail at once and the callback never runs. */
TEST(execute_async_refusals)
{
    qmp_client *c = new_client();
    acall a = {0};
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, &a, &err), -ENOTCONN);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    fake_qemu *f = fake_qemu_new();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    int fd = 0, bad = -1;
    CHECK_EQ_INT(start_full(c, "", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, &a, &err), -EINVAL);
    CHECK_EQ_INT(start_full(c, "x", NULL, 0x10, QMP_TIMEOUT_DEFAULT, NULL, 0, &a, &err), -EINVAL);
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, -3, NULL, 0, &a, &err), -EINVAL);
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, &bad, 1, &a, &err), -EINVAL);
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 1, &a, &err), -EINVAL);
    int many[17];
    for (int i = 0; i < 17; i++)
        many[i] = fd;
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, many, 17, &a, &err), -EINVAL);
    /* oob was not negotiated. */
    CHECK_EQ_INT(start_full(c, "x", NULL, QMP_EXEC_OOB, QMP_TIMEOUT_DEFAULT, NULL, 0, &a, &err),
                 -EINVAL);
    json_object *notobj = json_object_new_int(1);
    CHECK_EQ_INT(qmp_client_execute_async(c, "x", notobj, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, acall_cb,
                                          &a, NULL, &err),
                 -EINVAL);
    json_object_put(notobj);
    drive(c, never, NULL, 20);
    CHECK_EQ_INT(a.count, 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    finish(f, c);
}

/* ------------------------------------------------------------ mixing */

/* A blocking call while asynchronous calls are pending: their callbacks
 * run during it, and it gets its own reply. */
TEST(blocking_call_with_async_pending)
{
    fake_qemu *f = fake_qemu_new();
    int q1 = fake_qemu_expect(f, "a1", NULL);
    int q2 = fake_qemu_expect(f, "a2", NULL);
    int qb = fake_qemu_expect(f, "blocking", NULL);
    fake_qemu_reply(f, q2, "2");
    fake_qemu_event(f, "MID", NULL);
    fake_qemu_reply(f, q1, "1");
    fake_qemu_reply(f, qb, "\"mine\"");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    ev_rec mid = {0};
    CHECK_EQ_INT(qmp_client_subscribe(c, "MID", ev_cb, &mid, NULL), 0);
    acall a1 = {0}, a2 = {0};
    start(c, "a1", NULL, QMP_TIMEOUT_DEFAULT, &a1);
    start(c, "a2", NULL, QMP_TIMEOUT_DEFAULT, &a2);
    json_object *ret = NULL;
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_execute(c, "blocking", NULL, &ret, &err), 0);
    CHECK_EQ_STR(json_object_get_string(ret), "mine");
    json_object_put(ret);
    CHECK_EQ_INT(a1.count, 1);
    CHECK_EQ_INT(a2.count, 1);
    CHECK_EQ_INT(json_object_get_int(a1.ret), 1);
    CHECK_EQ_INT(json_object_get_int(a2.ret), 2);
    CHECK(a2.seq < a1.seq);
    CHECK_EQ_INT(mid.count, 1);
    CHECK(a2.seq < mid.seqs[0] && mid.seqs[0] < a1.seq);
    acall_clear(&a1, 1);
    acall_clear(&a2, 1);
    finish(f, c);
}

/* An asynchronous call times out while a blocking call waits. */
TEST(async_timeout_during_blocking_call)
{
    fake_qemu *f = fake_qemu_new();
    int qs = fake_qemu_expect(f, "slow", NULL);
    int qb = fake_qemu_expect(f, "blocking", NULL);
    fake_qemu_hold(f);
    fake_qemu_reply(f, qb, "\"mine\"");
    fake_qemu_reply(f, qs, "\"late\"");
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall s = {0};
    long long t0 = now_ms();
    start(c, "slow", NULL, 200, &s);
    json_object *ret = NULL;
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_execute_full(c, "blocking", NULL, 0, 600, NULL, 0, &ret, &err),
                 -ETIMEDOUT);
    CHECK_EQ_INT(s.count, 1);
    CHECK_EQ_INT(s.status, -ETIMEDOUT);
    CHECK(s.at_ms - t0 >= 200 && s.at_ms - t0 < 200 + MARGIN_MS);
    /* Both late replies are dropped. */
    fake_qemu_resume(f);
    CHECK_EQ_INT(fake_qemu_wait_done(f, WAIT_MS), 0);
    drive(c, never, NULL, 50);
    CHECK_EQ_INT(s.count, 1);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    acall_clear(&s, 1);
    finish(f, c);
}

/* The disconnect callback runs also when a blocking call sees the
 * disconnect. */
TEST(disconnect_seen_by_blocking_call)
{
    fake_qemu *f = fake_qemu_new();
    fake_qemu_expect(f, "a", NULL);
    fake_qemu_expect(f, "blocking", NULL);
    fake_qemu_close(f);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    watch_rec w = {0};
    qmp_client_set_watch_callback(c, watch_cb, &w);
    acall a = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    qmp_error err = QMP_ERROR_INIT;
    int before = w.count;
    CHECK_EQ_INT(qmp_client_execute(c, "blocking", NULL, NULL, &err), -ECONNRESET);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECONNRESET);
    /* The loop must learn that the descriptor is gone, and the program
     * that the connection broke, without another pass of the loop: with
     * no descriptor and no deadline, the loop has nothing to wake it. */
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    CHECK(w.count > before);
    CHECK_EQ_INT(w.fd, -1);
    CHECK_EQ_INT(dr.count, 1);
    CHECK(a.seq < dr.seq);
    CHECK_EQ_INT(qmp_client_process(c, NULL), -ECONNRESET);
    CHECK_EQ_INT(dr.count, 1);
    acall_clear(&a, 1);
    finish(f, c);
}

/* exec-oob skips the client's queue, even when the limit is reached. */
TEST(exec_oob_skips_client_queue)
{
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    int qo = fake_qemu_expect(f, "migrate-pause", NULL);
    fake_qemu_reply(f, qo, "\"oob\"");
    fake_qemu_reply(f, qa, "\"a\"");
    int qb = fake_qemu_expect(f, "b", NULL);
    fake_qemu_reply(f, qb, "\"b\"");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_want_oob(c, 1), 0);
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    CHECK_EQ_INT(qmp_client_oob_enabled(c), 1);
    acall a = {0}, b = {0}, o = {0};
    qmp_error err = QMP_ERROR_INIT;
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b);
    CHECK_EQ_INT(
        start_full(c, "migrate-pause", NULL, QMP_EXEC_OOB, QMP_TIMEOUT_DEFAULT, NULL, 0, &o, &err),
        0);
    DRIVE_UNTIL(c, &b.count, 1);
    CHECK_EQ_STR(json_object_get_string(o.ret), "oob");
    CHECK_EQ_STR(json_object_get_string(a.ret), "a");
    CHECK_EQ_STR(json_object_get_string(b.ret), "b");
    CHECK(o.seq < a.seq && a.seq < b.seq);
    json_object *x = NULL;
    CHECK(json_object_object_get_ex(fake_qemu_request(f, qo), "exec-oob", &x));
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    acall_clear(&o, 1);
    finish(f, c);
}

/* ------------------------------------------------------------ the loop API */

TEST(watch_callback_and_loop_values)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "x", NULL);
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    watch_rec w = {0};
    qmp_client_set_watch_callback(c, watch_cb, &w);
    CHECK_EQ_INT(qmp_client_get_events(c), 0);
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c), -1);
    CHECK_EQ_INT(qmp_client_get_timeout(c, NULL), -EINVAL);
    CHECK_EQ_INT(qmp_client_process(c, NULL), -ENOTCONN);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    CHECK(w.count >= 1);
    /* Idle: nothing to do. */
    CHECK_EQ_INT(qmp_client_process(c, NULL), 0);
    CHECK_EQ_INT(qmp_client_get_events(c), POLLIN);
    int before = w.count;
    acall a = {0};
    start(c, "x", NULL, 5000, &a);
    CHECK_EQ_INT(w.count, before + 1);
    CHECK(w.events & POLLOUT);
    CHECK(w.events & POLLIN);
    CHECK_EQ_INT(w.fd, qmp_client_get_fd(c));
    int tmo = qmp_client_get_timeout_ms(c);
    CHECK(tmo > 4000 && tmo <= 5000);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(qmp_client_get_events(c), POLLIN);
    CHECK_EQ_INT(qmp_client_get_timeout_ms(c), -1);
    before = w.count;
    qmp_client_close(c);
    CHECK(w.count > before);
    CHECK_EQ_INT(w.fd, -1);
    CHECK_EQ_INT(w.events, 0);
    acall_clear(&a, 1);
    finish(f, c);
}

/* ------------------------------------------------------------ close, unref */

/* Closing with calls pending ends them with -ECANCELED, without a
 * disconnect callback; the client is then simply not connected. */
TEST(close_with_pending_calls)
{
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    fake_qemu_hold(f);
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    acall a = {0}, b = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b); /* held back */
    void *arg[2] = {f, &qa};
    CHECK(drive_ext(c, request_arrived, arg));
    qmp_client_close(c);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    CHECK_EQ_INT(a.err.category, QMP_ERR_CANCELLED);
    CHECK_EQ_INT(b.count, 1);
    CHECK_EQ_INT(b.status, -ECANCELED);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_process(c, &err), -ENOTCONN);
    acall later = {0};
    CHECK_EQ_INT(start_full(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, &later, &err),
                 -ENOTCONN);
    CHECK_EQ_INT(qmp_client_execute(c, "x", NULL, NULL, &err), -ENOTCONN);
    CHECK_EQ_INT(dr.count, 0);
    CHECK_EQ_INT(later.count, 0);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(b.count, 1);
    fake_qemu_resume(f);
    finish(f, c);
}

/* A reply callback that closes the client, with more messages in the
 * same read: they are not handled after the close. */
typedef struct closer {
    int count;
    qmp_client *c;
} closer;

static void close_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    closer *k = userdata;
    (void)reply;
    k->count++;
    qmp_client_close(c);
}

TEST(close_inside_reply_callback)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "bye", NULL);
    fake_qemu_reply(f, q, "{}");
    fake_qemu_event_burst(f, "AFTER", 50);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    ev_rec after = {0};
    CHECK_EQ_INT(qmp_client_subscribe(c, "AFTER", ev_cb, &after, NULL), 0);
    closer k = {0};
    REQUIRE(qmp_client_execute_async(c, "bye", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, close_cb, &k,
                                     NULL, NULL) == 0);
    /* Write the request, then let the reply and the events pile up in
     * the socket so that one read takes them all. */
    CHECK(qmp_client_process(c, NULL) >= 0);
    CHECK_EQ_INT(k.count, 0);
    CHECK_EQ_INT(fake_qemu_wait_done(f, WAIT_MS), 0);
    int rc = qmp_client_process(c, NULL);
    CHECK(rc == 1 || rc == -ENOTCONN);
    CHECK_EQ_INT(k.count, 1);
    CHECK_EQ_INT(after.count, 0);
    CHECK_EQ_INT(dr.count, 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_process(c, NULL), -ENOTCONN);
    finish(f, c);
}

/* Unref with calls pending: each callback once with -ECANCELED, and the
 * client is still usable (if closed) inside them. */
typedef struct unref_probe {
    int count;
    int status;
    int async_rc;
    int connected;
    acall more; /* must never run */
} unref_probe;

static void unref_probe_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    unref_probe *u = userdata;
    u->count++;
    u->status = qmp_reply_status(reply);
    u->connected = qmp_client_is_connected(c);
    u->async_rc = qmp_client_execute_async(c, "more", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                           acall_cb, &u->more, NULL, NULL);
}

TEST(unref_with_pending_calls)
{
    enum { N = 10 };
    fake_qemu *f = fake_qemu_new();
    int last = -1;
    for (int i = 0; i < QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT; i++)
        last = fake_qemu_expect(f, "p", NULL);
    fake_qemu_hold(f);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    unref_probe u[N] = {{0}};
    for (int i = 0; i < N; i++) {
        REQUIRE(qmp_client_execute_async(c, "p", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                         unref_probe_cb, &u[i], NULL, NULL) == 0);
    }
    void *arg[2] = {f, &last};
    CHECK(drive_ext(c, request_arrived, arg));
    qmp_client_unref(c);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(u[i].count, 1);
        CHECK_EQ_INT(u[i].status, -ECANCELED);
        CHECK_EQ_INT(u[i].connected, 0);
        CHECK(u[i].async_rc < 0);
        CHECK_EQ_INT(u[i].more.count, 0);
    }
    CHECK_EQ_INT(dr.count, 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
}

/* The application drops its reference from a reply callback run by
 * qmp_client_process(): the client lives until process() returns. */
typedef struct dropper {
    int count;
    qmp_client **owner;
} dropper;

static void drop_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    dropper *d = userdata;
    (void)reply;
    (void)c;
    d->count++;
    *d->owner = qmp_client_unref(*d->owner);
}

TEST(unref_inside_reply_callback)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "x", NULL);
    fake_qemu_reply(f, q, "{}");
    fake_qemu_expect(f, "y", NULL);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    qmp_client *owner = c;
    dropper d = {0, &owner};
    acall y = {0};
    REQUIRE(qmp_client_execute_async(c, "x", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, drop_cb, &d,
                                     NULL, NULL) == 0);
    start(c, "y", NULL, QMP_TIMEOUT_DEFAULT, &y);
    long long deadline = now_ms() + WAIT_MS;
    while (d.count == 0 && now_ms() < deadline) {
        struct pollfd p = {qmp_client_get_fd(c), (short)qmp_client_get_events(c), 0};
        poll(&p, 1, 100);
        qmp_client_process(c, NULL);
    }
    CHECK_EQ_INT(d.count, 1);
    CHECK(owner == NULL);
    /* The last reference went: y ended with it. */
    CHECK_EQ_INT(y.count, 1);
    CHECK_EQ_INT(y.status, -ECANCELED);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
}

/* A call held back by the limit times out there, and is never sent. */
TEST(queued_call_times_out_unsent)
{
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    fake_qemu_hold(f);
    fake_qemu_reply(f, qa, "\"a\"");
    int qc = fake_qemu_expect(f, "c", NULL);
    fake_qemu_reply(f, qc, "\"c\"");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a = {0}, b = {0}, cc = {0};
    long long t0 = now_ms();
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    start(c, "b", NULL, 200, &b);
    start(c, "c", NULL, QMP_TIMEOUT_DEFAULT, &cc);
    DRIVE_UNTIL(c, &b.count, 1);
    CHECK_EQ_INT(b.status, -ETIMEDOUT);
    CHECK(b.at_ms - t0 >= 200 && b.at_ms - t0 < 200 + MARGIN_MS);
    CHECK_EQ_INT(a.count, 0);
    fake_qemu_resume(f);
    DRIVE_UNTIL(c, &cc.count, 1);
    CHECK_EQ_STR(json_object_get_string(a.ret), "a");
    CHECK_EQ_STR(json_object_get_string(cc.ret), "c");
    CHECK_EQ_INT(b.count, 1);
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    acall_clear(&cc, 1);
    finish(f, c);
}

/* A program that only subscribes may keep the queue tiny: a flood of
 * events taken by a subscription loses nothing. */
TEST(subscribed_flood_not_queued)
{
    enum { N = 3000 };
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "go", NULL);
    fake_qemu_event_burst(f, "FLOOD", N);
    fake_qemu_reply(f, q, "{}");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_event_queue_max(c, 1), 0);
    ev_rec all = {0};
    CHECK_EQ_INT(qmp_client_subscribe(c, "FLOOD", ev_cb, &all, NULL), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a = {0};
    start(c, "go", NULL, QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &a.count, 1);
    CHECK_EQ_INT(all.count, N);
    CHECK_EQ_INT(all.data_seq[63], 63);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_events_lost(c), 0);
    acall_clear(&a, 1);
    finish(f, c);
}

/* Connecting again ends the calls of the old connection, without a
 * disconnect callback; the new connection works. */
TEST(reconnect_async_ends_old_calls)
{
    fake_qemu *f1 = fake_qemu_new();
    int qa = fake_qemu_expect(f1, "a", NULL);
    fake_qemu_hold(f1);
    fake_qemu *f2 = fake_qemu_new();
    int qb = fake_qemu_expect(f2, "b", NULL);
    fake_qemu_reply(f2, qb, "\"b\"");
    qmp_client *c = new_client();
    conn_rec cr1 = {0}, cr2 = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f1, &cr1, &dr) == 0);
    acall a = {0}, b = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    void *arg[2] = {f1, &qa};
    CHECK(drive_ext(c, request_arrived, arg));
    CHECK_EQ_INT(connect_async_fake(c, f2, &cr2, NULL), 0);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECANCELED);
    CHECK_EQ_INT(cr1.count, 1);
    CHECK_EQ_INT(dr.count, 0);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b);
    DRIVE_UNTIL(c, &b.count, 1);
    CHECK_EQ_STR(json_object_get_string(b.ret), "b");
    CHECK_EQ_INT(a.count, 1);
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    CHECK_EQ_INT(fake_qemu_finish(f1), 0);
    fake_qemu_free(f1);
    finish(f2, c);
}

/* A subscription callback that closes the client, with more events in
 * the same read: nothing is handled after the close. */
typedef struct ev_closer {
    int count;
} ev_closer;

static void ev_close_cb(qmp_client *c, qmp_event *ev, void *userdata)
{
    ev_closer *k = userdata;
    (void)ev;
    k->count++;
    qmp_client_close(c);
}

TEST(close_inside_event_callback)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "go", NULL);
    fake_qemu_reply(f, q, "{}");
    fake_qemu_event(f, "LAST", NULL);
    fake_qemu_event_burst(f, "AFTER", 50);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    disc_rec dr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, &dr) == 0);
    ev_closer k = {0};
    ev_rec after = {0};
    CHECK_EQ_INT(qmp_client_subscribe(c, "LAST", ev_close_cb, &k, NULL), 0);
    CHECK_EQ_INT(qmp_client_subscribe(c, "AFTER", ev_cb, &after, NULL), 0);
    acall a = {0};
    start(c, "go", NULL, QMP_TIMEOUT_DEFAULT, &a);
    CHECK(qmp_client_process(c, NULL) >= 0);
    CHECK_EQ_INT(fake_qemu_wait_done(f, WAIT_MS), 0);
    int rc = qmp_client_process(c, NULL);
    CHECK(rc == 1 || rc == -ENOTCONN);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(k.count, 1);
    CHECK_EQ_INT(after.count, 0);
    CHECK_EQ_INT(dr.count, 0);
    CHECK_EQ_INT(qmp_client_process(c, NULL), -ENOTCONN);
    acall_clear(&a, 1);
    finish(f, c);
}

/* Reconnecting from the disconnect callback, as a program that keeps its
 * connection up would. */
typedef struct reconnector {
    disc_rec dr;
    fake_qemu *next;
    int connect_rc;
} reconnector;

static void reconnect_cb(qmp_client *c, const qmp_error *err, void *userdata)
{
    reconnector *r = userdata;
    disc_cb(c, err, &r->dr);
    r->connect_rc = qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(r->next), NULL);
}

TEST(reconnect_from_disconnect_callback)
{
    fake_qemu *f1 = fake_qemu_new();
    fake_qemu_expect(f1, "a", NULL);
    fake_qemu_close(f1);
    fake_qemu *f2 = fake_qemu_new();
    int qb = fake_qemu_expect(f2, "b", NULL);
    fake_qemu_reply(f2, qb, "\"b\"");
    REQUIRE(fake_qemu_start(f2) == 0);
    qmp_client *c = new_client();
    conn_rec cr = {0};
    reconnector r = {.next = f2};
    REQUIRE(connect_async_fake(c, f1, &cr, NULL) == 0);
    qmp_client_set_disconnect_callback(c, reconnect_cb, &r);
    acall a = {0}, b = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    DRIVE_UNTIL(c, &r.dr.count, 1);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, -ECONNRESET);
    CHECK_EQ_INT(r.connect_rc, 0);
    DRIVE_UNTIL(c, &cr.count, 2);
    CHECK_EQ_INT(cr.status, 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    start(c, "b", NULL, QMP_TIMEOUT_DEFAULT, &b);
    DRIVE_UNTIL(c, &b.count, 1);
    CHECK_EQ_STR(json_object_get_string(b.ret), "b");
    CHECK_EQ_INT(r.dr.count, 1);
    acall_clear(&a, 1);
    acall_clear(&b, 1);
    CHECK_EQ_INT(fake_qemu_finish(f1), 0);
    fake_qemu_free(f1);
    finish(f2, c);
}

/* Raising the limit lets held-back calls out at once, and says so. */
TEST(raising_limit_lets_queued_calls_out)
{
    fake_qemu *f = fake_qemu_new();
    int q[3];
    char name[8];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        q[i] = fake_qemu_expect(f, name, NULL);
    }
    for (int i = 2; i >= 0; i--)
        fake_qemu_reply(f, q[i], "{}");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    acall a[3] = {{0}};
    int done = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        a[i].done = &done;
        start(c, name, NULL, QMP_TIMEOUT_DEFAULT, &a[i]);
    }
    /* Only c0 can go; the fake waits for all three before answering. */
    void *arg[2] = {f, &q[0]};
    CHECK(drive_ext(c, request_arrived, arg));
    watch_rec w = {0};
    qmp_client_set_watch_callback(c, watch_cb, &w);
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 3), 0);
    CHECK(w.count >= 1);
    CHECK(w.events & POLLOUT);
    DRIVE_UNTIL(c, &done, 3);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(a[i].status, 0);
    CHECK(a[2].seq < a[1].seq && a[1].seq < a[0].seq);
    acall_clear(a, 3);
    finish(f, c);
}

/* Descriptors of calls that never go out (cancelled or timed out while
 * held back) are not kept open. */
TEST(fds_of_unsent_calls_released)
{
    int p[2];
    REQUIRE(pipe2(p, O_CLOEXEC) == 0);
    fake_qemu *f = fake_qemu_new();
    int qa = fake_qemu_expect(f, "a", NULL);
    fake_qemu_hold(f);
    fake_qemu_reply(f, qa, "{}");
    int qz = fake_qemu_expect_full(f, "z", NULL, 0, 0);
    fake_qemu_reply(f, qz, "{}");
    qmp_client *c = new_client();
    CHECK_EQ_INT(qmp_client_set_max_in_flight(c, 1), 0);
    conn_rec cr = {0};
    REQUIRE(connect_async_fake(c, f, &cr, NULL) == 0);
    int before = count_open_fds();
    acall a = {0}, g1 = {0}, g2 = {0}, z = {0};
    start(c, "a", NULL, QMP_TIMEOUT_DEFAULT, &a);
    CHECK_EQ_INT(start_full(c, "getfd", NULL, 0, QMP_TIMEOUT_DEFAULT, &p[0], 1, &g1, NULL), 0);
    CHECK_EQ_INT(start_full(c, "getfd", NULL, 0, 100, &p[1], 1, &g2, NULL), 0);
    CHECK_EQ_INT(qmp_client_cancel(c, g1.sent_tag), 0);
    DRIVE_UNTIL(c, &g2.count, 1);
    CHECK_EQ_INT(g2.status, -ETIMEDOUT);
    fake_qemu_resume(f);
    DRIVE_UNTIL(c, &a.count, 1);
    start(c, "z", NULL, QMP_TIMEOUT_DEFAULT, &z);
    DRIVE_UNTIL(c, &z.count, 1);
    CHECK_EQ_INT(count_open_fds(), before);
    acall_clear(&a, 1);
    acall_clear(&g1, 1);
    acall_clear(&g2, 1);
    acall_clear(&z, 1);
    finish(f, c);
    close(p[0]);
    close(p[1]);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    signal(SIGPIPE, SIG_DFL);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/libqmp-async-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(connect_async_over_socketpair);
    RUN(connect_async_unix_and_tcp);
    RUN(connect_async_bad_greeting);
    RUN(connect_async_negotiation_failure);
    RUN(connect_async_greeting_timeout);
    RUN(connect_async_closed_before_greeting);
    RUN(connect_async_immediate_failures);
    RUN(connect_async_tcp_refused);
    RUN(events_during_negotiation_reach_subscriptions);
    RUN(thousand_calls_default_limit);
    RUN(thousand_calls_scrambled);
    RUN(call_timeout_on_schedule);
    RUN(timeouts_fire_in_deadline_order);
    RUN(timed_out_call_holds_its_slot);
    RUN(cancel_call_still_queued);
    RUN(cancel_call_already_sent);
    RUN(cancel_call_with_reply_unread);
    RUN(disconnect_fails_pending_calls);
    RUN(protocol_error_fails_pending_calls);
    RUN(silent_peer_does_not_delay_others);
    RUN(subscriptions_by_name_and_catch_all);
    RUN(subscription_sees_event_before_reply);
    RUN(unsubscribe_and_subscribe_inside_callbacks);
    RUN(blocking_calls_inside_callbacks_fail);
    RUN(connect_callback_starts_calls);
    RUN(calls_started_from_callbacks);
    RUN(fd_passing_async);
    RUN(execute_async_refusals);
    RUN(blocking_call_with_async_pending);
    RUN(async_timeout_during_blocking_call);
    RUN(disconnect_seen_by_blocking_call);
    RUN(exec_oob_skips_client_queue);
    RUN(watch_callback_and_loop_values);
    RUN(close_with_pending_calls);
    RUN(unref_with_pending_calls);
    RUN(queued_call_times_out_unsent);
    RUN(subscribed_flood_not_queued);
    RUN(reconnect_async_ends_old_calls);
    RUN(reconnect_from_disconnect_callback);
    RUN(raising_limit_lets_queued_calls_out);
    RUN(fds_of_unsent_calls_released);
    /* Last: when these fail, they may take the program down. */
    RUN(close_inside_reply_callback);
    RUN(close_inside_event_callback);
    RUN(unref_inside_reply_callback);
    if (rmdir(tmpdir) != 0)
        printf("# could not remove %s: something was left behind\n", tmpdir);
    return harness_done();
}
