/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The non-blocking client against a real qemu-system-x86_64: connects
 * over unix sockets and TCP with qmp_client_connect_async(), calls with
 * qmp_client_execute_async(), events through subscriptions, descriptors,
 * a large reply, exec-oob overtaking in-band commands held back by the
 * in-flight limit, and quit with its SHUTDOWN and the disconnect.
 *
 * Each test drives the client with its own poll() loop over
 * qmp_client_get_fd(), qmp_client_get_events(), qmp_client_get_timeout_ms()
 * and qmp_client_process(); every wait has a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"
#include "qemu-harness.h"

#define WAIT_MS QEMU_TEST_EVENT_TIMEOUT_MS

/* Orders callbacks of all kinds against each other. */
static int seq_counter;

/* ------------------------------------------------------------ the loop */

typedef bool (*until_fn)(void *arg);

/* Drives c until until(arg) holds or timeout_ms passed; returns whether
 * it held.  The last qmp_client_process() result goes to *ret_rc. */
static bool drive(qmp_client *c, until_fn until, void *arg, int timeout_ms, int *ret_rc)
{
    long long deadline = qemu_now_ms() + timeout_ms;

    for (;;) {
        struct pollfd p;
        long long left;
        int tmo, t, rc;

        if (until(arg))
            return true;
        left = deadline - qemu_now_ms();
        if (left <= 0)
            return false;
        tmo = (int)left;
        t = qmp_client_get_timeout_ms(c);
        if (t >= 0 && t < tmo)
            tmo = t;
        p.fd = qmp_client_get_fd(c);
        p.events = (short)qmp_client_get_events(c);
        p.revents = 0;
        if (poll(&p, 1, tmo) < 0 && errno != EINTR) {
            HARNESS_FAIL_("poll: %s", strerror(errno));
            return false;
        }
        rc = qmp_client_process(c, NULL);
        if (ret_rc != NULL)
            *ret_rc = rc;
    }
}

typedef struct goal {
    const int *counter;
    int want;
} goal;

static bool reached(void *arg)
{
    const goal *t = arg;

    return *t->counter >= t->want;
}

#define DRIVE_UNTIL(c, counter, want)                                                              \
    do {                                                                                           \
        goal t_ = {(counter), (want)};                                                             \
        if (!drive((c), reached, &t_, WAIT_MS, NULL))                                              \
            HARNESS_FAIL_("timed out waiting for %s >= %d (it is %d)", #counter, (int)(want),      \
                          *(counter));                                                             \
    } while (0)

/* ------------------------------------------------------------ recorders */

typedef struct acall {
    int count;
    int status;
    qmp_error err;
    json_object *ret;
    int seq;
    int *done;
} acall;

static void acall_cb(qmp_client *c, qmp_reply *reply, void *userdata)
{
    acall *a = userdata;
    const qmp_error *e = qmp_reply_error(reply);

    (void)c;
    a->count++;
    a->status = qmp_reply_status(reply);
    if (e != NULL)
        a->err = *e;
    json_object_put(a->ret);
    a->ret = json_object_get(qmp_reply_return(reply));
    a->seq = ++seq_counter;
    if (a->done != NULL)
        (*a->done)++;
}

static void acall_clear(acall *a)
{
    json_object_put(a->ret);
    memset(a, 0, sizeof(*a));
}

/* Starts command with arguments from the JSON template args (or none);
 * a refusal is recorded. */
static void start(qmp_client *c, const char *command, unsigned flags, const int *fds, size_t n_fds,
                  acall *a, const char *args, ...) QMP_PRINTF(7, 8);
static void start(qmp_client *c, const char *command, unsigned flags, const int *fds, size_t n_fds,
                  acall *a, const char *args, ...)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *j = NULL;
    va_list ap;
    int rc;

    if (args != NULL) {
        va_start(ap, args);
        rc = qmp_json_vbuild(&j, &err, args, ap);
        va_end(ap);
        if (rc < 0) {
            HARNESS_FAIL_("bad template %s: %s", args, err.message);
            return;
        }
    }
    rc = qmp_client_execute_async(c, command, j, flags, QMP_TIMEOUT_DEFAULT, fds, n_fds, acall_cb,
                                  a, NULL, &err);
    json_object_put(j);
    if (rc < 0) {
        qemu_print_error(command, rc, &err);
        HARNESS_FAIL_("execute_async(%s) refused", command);
    }
}

/* Runs command (without arguments) to completion; it must succeed. */
static json_object *call_ok(qmp_client *c, const char *command)
{
    acall a = {0};
    json_object *ret;

    start(c, command, 0, NULL, 0, &a, NULL);
    DRIVE_UNTIL(c, &a.count, 1);
    if (a.count == 1 && a.status != 0)
        qemu_print_error(command, a.status, &a.err);
    CHECK_EQ_INT(a.status, 0);
    ret = json_object_get(a.ret);
    acall_clear(&a);
    return ret;
}

typedef struct ev_rec {
    int count;
    char names[16][32];
    int seqs[16];
    json_object *data[16];
} ev_rec;

static void ev_cb(qmp_client *c, qmp_event *ev, void *userdata)
{
    ev_rec *r = userdata;
    int i = r->count++;

    (void)c;
    if (i < 16) {
        snprintf(r->names[i], sizeof(r->names[i]), "%s", qmp_event_name(ev));
        r->seqs[i] = ++seq_counter;
        r->data[i] = json_object_get(qmp_event_data(ev));
    }
}

static void ev_clear(ev_rec *r)
{
    for (int i = 0; i < r->count && i < 16; i++)
        json_object_put(r->data[i]);
    memset(r, 0, sizeof(*r));
}

typedef struct conn_rec {
    int count;
    int status;
    qmp_error err;
} conn_rec;

static void conn_cb(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    conn_rec *r = userdata;

    (void)c;
    r->count++;
    r->status = status;
    if (err != NULL)
        r->err = *err;
}

typedef struct disc_rec {
    int count;
    qmp_error err;
    int seq;
} disc_rec;

static void disc_cb(qmp_client *c, const qmp_error *err, void *userdata)
{
    disc_rec *r = userdata;

    (void)c;
    r->count++;
    if (err != NULL)
        r->err = *err;
    r->seq = ++seq_counter;
}

/* A new client connected asynchronously to address; NULL (recorded) on
 * failure. */
static qmp_client *connect_async(const char *address, int want_oob, disc_rec *dr)
{
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;
    conn_rec cr = {0};
    int rc;

    if (qmp_client_new(&c) < 0) {
        HARNESS_FAIL_("qmp_client_new failed");
        return NULL;
    }
    qmp_client_set_want_oob(c, want_oob);
    qmp_client_set_connect_callback(c, conn_cb, &cr);
    if (dr != NULL)
        qmp_client_set_disconnect_callback(c, disc_cb, dr);
    rc = qmp_client_connect_async(c, address, &err);
    if (rc < 0) {
        qemu_print_error("qmp_client_connect_async", rc, &err);
        HARNESS_FAIL_("connect_async(%s) failed at once", address);
        return qmp_client_unref(c);
    }
    DRIVE_UNTIL(c, &cr.count, 1);
    qmp_client_set_connect_callback(c, NULL, NULL);
    if (cr.count != 1 || cr.status != 0) {
        qemu_print_error("connect callback", cr.status, &cr.err);
        HARNESS_FAIL_("asynchronous connect to %s failed", address);
        return qmp_client_unref(c);
    }
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    return c;
}

/* ================================================================ tests */

/* Two queries in flight at once, over the given monitor. */
static void two_queries(qemu_instance *q)
{
    qmp_client *c = connect_async(q->address, 0, NULL);
    acall st = {0}, ver = {0};
    int done = 0, major = 0, minor = 0, micro = 0;
    json_object *qemu;

    REQUIRE(c != NULL);
    st.done = ver.done = &done;
    start(c, "query-status", 0, NULL, 0, &st, NULL);
    start(c, "query-version", 0, NULL, 0, &ver, NULL);
    DRIVE_UNTIL(c, &done, 2);
    CHECK_EQ_INT(st.status, 0);
    CHECK_EQ_STR(qemu_json_str(st.ret, "status"), "running");
    CHECK_EQ_INT(ver.status, 0);
    CHECK(st.seq < ver.seq); /* in-band replies come in order */
    qemu = qemu_json_get(ver.ret, "qemu");
    qmp_greeting_version(qmp_client_get_greeting(c), &major, &minor, &micro);
    CHECK(major >= 7);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qemu, "major")), major);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qemu, "minor")), minor);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qemu, "micro")), micro);
    acall_clear(&st);
    acall_clear(&ver);
    qmp_client_unref(c);
}

static void unix_body(qemu_instance *q, qmp_client *unused)
{
    (void)unused;
    CHECK(strncmp(q->address, "unix:", 5) == 0);
    two_queries(q);
}

TEST(connect_async_unix)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, unix_body, &harness_cur_failed);
}

static void tcp_body(qemu_instance *q, qmp_client *unused)
{
    (void)unused;
    CHECK(q->tcp_port > 0);
    two_queries(q);
}

TEST(connect_async_tcp)
{
    qemu_opts o = {.no_connect = 1, .monitor = QEMU_MON_TCP};

    qemu_run(&o, tcp_body, &harness_cur_failed);
}

/* stop and cont sent back to back; STOP and RESUME come through
 * subscriptions, in order. */
static void stop_cont_body(qemu_instance *q, qmp_client *unused)
{
    qmp_client *c = connect_async(q->address, 0, NULL);
    ev_rec stop = {0}, resume = {0};
    acall a = {0}, b = {0};
    int done = 0;
    json_object *st;

    (void)unused;
    REQUIRE(c != NULL);
    CHECK_EQ_INT(qmp_client_subscribe(c, "STOP", ev_cb, &stop, NULL), 0);
    CHECK_EQ_INT(qmp_client_subscribe(c, "RESUME", ev_cb, &resume, NULL), 0);
    a.done = b.done = &done;
    start(c, "stop", 0, NULL, 0, &a, NULL);
    start(c, "cont", 0, NULL, 0, &b, NULL);
    DRIVE_UNTIL(c, &done, 2);
    DRIVE_UNTIL(c, &resume.count, 1);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(b.status, 0);
    CHECK_EQ_INT(stop.count, 1);
    CHECK_EQ_INT(resume.count, 1);
    CHECK(stop.seqs[0] < resume.seqs[0]);
    CHECK(a.seq < b.seq);
    /* STOP is emitted while stop runs, before its reply; RESUME likewise. */
    CHECK(stop.seqs[0] < a.seq);
    CHECK(resume.seqs[0] < b.seq);
    st = call_ok(c, "query-status");
    CHECK_EQ_STR(qemu_json_str(st, "status"), "running");
    json_object_put(st);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    acall_clear(&a);
    acall_clear(&b);
    ev_clear(&stop);
    ev_clear(&resume);
    qmp_client_unref(c);
}

TEST(stop_cont_subscriptions)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, stop_cont_body, &harness_cur_failed);
}

/* device_add and device_del of a USB tablet; DEVICE_DELETED through a
 * subscription made before device_del. */
static void usb_body(qemu_instance *q, qmp_client *unused)
{
    qmp_client *c = connect_async(q->address, 0, NULL);
    ev_rec del = {0};
    acall add = {0}, rm = {0}, again = {0};

    (void)unused;
    REQUIRE(c != NULL);
    start(c, "device_add", 0, NULL, 0, &add,
          "{'driver': 'usb-tablet', 'id': 'tab', 'bus': 'xhci.0'}");
    DRIVE_UNTIL(c, &add.count, 1);
    if (add.status != 0)
        qemu_print_error("device_add", add.status, &add.err);
    REQUIRE(add.status == 0);

    CHECK_EQ_INT(qmp_client_subscribe(c, "DEVICE_DELETED", ev_cb, &del, NULL), 0);
    start(c, "device_del", 0, NULL, 0, &rm, "{'id': 'tab'}");
    DRIVE_UNTIL(c, &rm.count, 1);
    CHECK_EQ_INT(rm.status, 0);
    DRIVE_UNTIL(c, &del.count, 1);
    REQUIRE(del.count >= 1);
    /* The tablet itself; its USB port may report too, without "device". */
    {
        int found = 0;

        for (int i = 0; i < del.count && i < 16; i++) {
            if (qemu_json_str(del.data[i], "device") != NULL) {
                CHECK_EQ_STR(qemu_json_str(del.data[i], "device"), "tab");
                CHECK_EQ_STR(qemu_json_str(del.data[i], "path"), "/machine/peripheral/tab");
                found++;
            }
        }
        CHECK_EQ_INT(found, 1);
    }
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);

    start(c, "device_del", 0, NULL, 0, &again, "{'id': 'tab'}");
    DRIVE_UNTIL(c, &again.count, 1);
    CHECK_EQ_INT(again.status, -EREMOTEIO);
    CHECK_EQ_INT(again.err.category, QMP_ERR_COMMAND);
    CHECK_EQ_INT(again.err.qmp_class, QMP_CLASS_DEVICE_NOT_FOUND);
    acall_clear(&add);
    acall_clear(&rm);
    acall_clear(&again);
    ev_clear(&del);
    qmp_client_unref(c);
}

TEST(usb_hotplug_subscription)
{
    qemu_opts o = {
        .machine = "q35", .no_connect = 1, .extra_args = {"-S", "-device", "qemu-xhci,id=xhci"}};

    qemu_run(&o, usb_body, &harness_cur_failed);
}

/* add-fd with a real descriptor, closed on our side at once. */
static void add_fd_body(qemu_instance *q, qmp_client *unused)
{
    qmp_client *c = connect_async(q->address, 0, NULL);
    char path[QEMU_PATH_MAX], link[64], target[PATH_MAX];
    acall a = {0};
    json_object *sets, *fds;
    long qfd;
    ssize_t n;
    int fd, matched = 0;

    (void)unused;
    REQUIRE(c != NULL);
    REQUIRE(qemu_path(q, "async-fd", path, sizeof(path)) == 0);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    start(c, "add-fd", 0, &fd, 1, &a, "{'fdset-id': 3, 'opaque': 'async'}");
    close(fd);
    DRIVE_UNTIL(c, &a.count, 1);
    if (a.status != 0)
        qemu_print_error("add-fd", a.status, &a.err);
    REQUIRE(a.status == 0);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(a.ret, "fdset-id")), 3);
    qfd = (long)json_object_get_int64(qemu_json_get(a.ret, "fd"));
    snprintf(link, sizeof(link), "/proc/%d/fd/%ld", (int)q->pid, qfd);
    n = readlink(link, target, sizeof(target) - 1);
    target[n > 0 ? (size_t)n : 0] = '\0';
    CHECK_EQ_STR(target, path);

    sets = call_ok(c, "query-fdsets");
    REQUIRE(json_object_is_type(sets, json_type_array));
    for (size_t i = 0; i < json_object_array_length(sets); i++) {
        json_object *set = json_object_array_get_idx(sets, i);

        if (json_object_get_int(qemu_json_get(set, "fdset-id")) != 3)
            continue;
        fds = qemu_json_get(set, "fds");
        CHECK(json_object_is_type(fds, json_type_array) && json_object_array_length(fds) == 1);
        CHECK_EQ_INT(json_object_get_int64(qemu_json_get(json_object_array_get_idx(fds, 0), "fd")),
                     qfd);
        CHECK_EQ_STR(qemu_json_str(json_object_array_get_idx(fds, 0), "opaque"), "async");
        matched++;
    }
    CHECK_EQ_INT(matched, 1);
    json_object_put(sets);
    acall_clear(&a);
    qmp_client_unref(c);
}

TEST(add_fd_async)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, add_fd_body, &harness_cur_failed);
}

/* The schema (some 200 KB) arrives whole; query-yank allows oob. */
static void schema_body(qemu_instance *q, qmp_client *unused)
{
    qmp_client *c = connect_async(q->address, 0, NULL);
    json_object *schema;
    size_t commands = 0;
    int yank_oob = -1;

    (void)unused;
    REQUIRE(c != NULL);
    schema = call_ok(c, "query-qmp-schema");
    REQUIRE(json_object_is_type(schema, json_type_array));
    CHECK(json_object_array_length(schema) > 500);
    for (size_t i = 0; i < json_object_array_length(schema); i++) {
        json_object *e = json_object_array_get_idx(schema, i);
        const char *mt = qemu_json_str(e, "meta-type");

        if (mt == NULL || strcmp(mt, "command") != 0)
            continue;
        commands++;
        if (strcmp(qemu_json_str(e, "name") ? qemu_json_str(e, "name") : "", "query-yank") == 0)
            yank_oob = json_object_get_boolean(qemu_json_get(e, "allow-oob"));
    }
    CHECK(commands > 100);
    CHECK_EQ_INT(yank_oob, 1);
    json_object_put(schema);
    qmp_client_unref(c);
}

TEST(query_qmp_schema_async)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, schema_body, &harness_cur_failed);
}

static bool output_written(void *arg)
{
    return (qmp_client_get_events(arg) & POLLOUT) == 0;
}

/*
 * QEMU takes at most 8 in-band commands per monitor and then stops
 * reading.  With 20 in-band commands started, the client sends 8 and
 * holds 12; an exec-oob started after them goes out at once, right after
 * the 8, so QEMU reads and runs it before any command the client held:
 * its reply comes before the replies of the held commands.
 */
static void oob_body(qemu_instance *q, qmp_client *unused)
{
    enum { N = 20 };
    qmp_client *c = connect_async(q->address, 1, NULL);
    acall in[N], oob = {0};
    int done = 0, before_oob = 0;

    (void)unused;
    REQUIRE(c != NULL);
    REQUIRE(qmp_client_oob_enabled(c) == 1);
    memset(in, 0, sizeof(in));
    REQUIRE(qemu_pause(q) == 0);
    for (int i = 0; i < N; i++) {
        in[i].done = &done;
        start(c, "query-status", 0, NULL, 0, &in[i], NULL);
    }
    oob.done = &done;
    start(c, "query-yank", QMP_EXEC_OOB, NULL, 0, &oob, NULL);
    /* Everything the client may send is in the socket before QEMU runs. */
    if (!drive(c, output_written, c, WAIT_MS, NULL))
        HARNESS_FAIL_("output not written");
    CHECK_EQ_INT(done, 0);
    CHECK_EQ_INT(qemu_resume(q), 0);
    DRIVE_UNTIL(c, &done, N + 1);
    CHECK_EQ_INT(oob.status, 0);
    CHECK(json_object_is_type(oob.ret, json_type_array));
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(in[i].count, 1);
        CHECK_EQ_INT(in[i].status, 0);
        CHECK_EQ_STR(qemu_json_str(in[i].ret, "status"), "running");
        if (i > 0)
            CHECK(in[i - 1].seq < in[i].seq);
        if (in[i].seq < oob.seq)
            before_oob++;
    }
    printf("# %d in-band replies came before the exec-oob reply\n", before_oob);
    CHECK(before_oob <= QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT);
    for (int i = 0; i < N; i++)
        acall_clear(&in[i]);
    acall_clear(&oob);
    qmp_client_unref(c);
}

TEST(exec_oob_overtakes_held_commands)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, oob_body, &harness_cur_failed);
}

/* quit: its reply and SHUTDOWN, then the disconnect, each once. */
static void quit_body(qemu_instance *q, qmp_client *unused)
{
    disc_rec dr = {0};
    qmp_client *c = connect_async(q->address, 0, &dr);
    ev_rec down = {0};
    acall a = {0};
    qmp_error err = QMP_ERROR_INIT;
    int rc = 0;

    (void)unused;
    REQUIRE(c != NULL);
    CHECK_EQ_INT(qmp_client_subscribe(c, "SHUTDOWN", ev_cb, &down, NULL), 0);
    start(c, "quit", 0, NULL, 0, &a, NULL);
    DRIVE_UNTIL(c, &dr.count, 1);
    CHECK_EQ_INT(a.count, 1);
    CHECK_EQ_INT(a.status, 0);
    CHECK_EQ_INT(down.count, 1);
    CHECK_EQ_STR(qemu_json_str(down.data[0], "reason"), "host-qmp-quit");
    /* QEMU may send SHUTDOWN before or after the reply; both come before
     * it closes the connection. */
    CHECK(a.seq < dr.seq);
    CHECK(down.seqs[0] < dr.seq);
    CHECK_EQ_INT(dr.err.code, -ECONNRESET);
    CHECK_EQ_INT(dr.err.category, QMP_ERR_DISCONNECTED);
    rc = qmp_client_process(c, &err);
    CHECK_EQ_INT(rc, -ECONNRESET);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    CHECK_EQ_INT(dr.count, 1);
    rc = qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0)
        CHECK(WIFEXITED(q->status) && WEXITSTATUS(q->status) == 0);
    acall_clear(&a);
    ev_clear(&down);
    qmp_client_unref(c);
}

TEST(quit_shutdown_disconnect)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, quit_body, &harness_cur_failed);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(connect_async_unix);
    RUN(connect_async_tcp);
    RUN(stop_cont_subscriptions);
    RUN(usb_hotplug_subscription);
    RUN(add_fd_async);
    RUN(query_qmp_schema_async);
    RUN(exec_oob_overtakes_held_commands);
    RUN(quit_shutdown_disconnect);
    return harness_done();
}
