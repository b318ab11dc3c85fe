/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Ways of reaching a real qemu-system-x86_64: QEMU connecting to our
 * listener, TCP, a socketpair, "fd:N"; a second client refused while the
 * first is connected; QEMU dying under a connected client.
 */
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"
#include "qemu-harness.h"

#define exec_ok(c, command, args) qemu_exec((c), (command), (args), &harness_cur_failed)

/* query-status' "status" string, copied into buf ("" on failure). */
static const char *run_state(qmp_client *c, char *buf, size_t size)
{
    json_object *st = exec_ok(c, "query-status", NULL);
    const char *s = qemu_json_str(st, "status");

    snprintf(buf, size, "%s", s ? s : "");
    json_object_put(st);
    return buf;
}

/* QEMU connects to us: -chardev socket,path=...,server=off. */
static void accept_mode_body(qemu_instance *q, qmp_listener **lp, qmp_client **cp)
{
    qmp_error err = QMP_ERROR_INIT;
    char path[QEMU_PATH_MAX], addr[QEMU_PATH_MAX + 8], chardev[QEMU_PATH_MAX + 64];
    qemu_opts o = {.monitor = QEMU_MON_NONE};
    qmp_client *c2 = NULL;
    struct stat st;
    long long t0;
    int rc;

    REQUIRE(qemu_path(q, "accept.sock", path, sizeof(path)) == 0);
    snprintf(addr, sizeof(addr), "unix:%s", path);
    rc = qmp_listener_new(lp, addr, &err);
    if (rc < 0)
        qemu_print_error("qmp_listener_new", rc, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(qmp_listener_get_address(*lp), addr);
    CHECK(qmp_listener_get_fd(*lp) >= 0);

    /* The listener exists before QEMU starts: QEMU fails if it cannot
     * connect at once. */
    snprintf(chardev, sizeof(chardev), "socket,id=mon0,path=%s,server=off", path);
    o.extra_args[0] = "-chardev";
    o.extra_args[1] = chardev;
    o.extra_args[2] = "-mon";
    o.extra_args[3] = "chardev=mon0,mode=control";
    REQUIRE(qemu_launch(q, &o) == 0);

    REQUIRE(qmp_client_new(cp) == 0);
    rc = qmp_listener_accept(*lp, *cp, QEMU_TEST_EVENT_TIMEOUT_MS, &err);
    if (rc < 0)
        qemu_print_error("qmp_listener_accept", rc, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(qmp_client_is_connected(*cp), 1);
    CHECK(qmp_client_get_greeting(*cp) != NULL);
    {
        char state[64];

        CHECK_EQ_STR(run_state(*cp, state, sizeof(state)), "running");
    }

    /* Nobody else connects: the next accept times out, on time. */
    REQUIRE(qmp_client_new(&c2) == 0);
    t0 = qemu_now_ms();
    rc = qmp_listener_accept(*lp, c2, 300, &err);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(qemu_now_ms() - t0 >= 250);
    CHECK(qemu_now_ms() - t0 < 10000);
    CHECK_EQ_INT(qmp_client_is_connected(c2), 0);
    qmp_client_unref(c2);

    /* Freeing the listener removes its path but leaves the client. */
    qmp_listener_free(*lp);
    *lp = NULL;
    CHECK(stat(path, &st) < 0 && errno == ENOENT);
    {
        char state[64];

        CHECK_EQ_STR(run_state(*cp, state, sizeof(state)), "running");
    }
}

TEST(accept_mode)
{
    qemu_instance q;
    qmp_listener *l = NULL;
    qmp_client *c = NULL;

    if (qemu_prepare(&q) < 0)
        harness_cur_failed = 1;
    else
        accept_mode_body(&q, &l, &c);
    qmp_client_unref(c);
    qmp_listener_free(l);
    qemu_stop(&q, harness_cur_failed);
}

/* QEMU connects to our TCP listener on a port the kernel picked. */
static void accept_tcp_body(qemu_instance *q, qmp_listener **lp, qmp_client **cp)
{
    qmp_error err = QMP_ERROR_INIT;
    qemu_opts o = {.monitor = QEMU_MON_NONE};
    char chardev[128], state[64];
    const char *addr, *colon;
    int rc, port;

    rc = qmp_listener_new(lp, "127.0.0.1:0", &err);
    if (rc < 0)
        qemu_print_error("qmp_listener_new", rc, &err);
    REQUIRE(rc == 0);
    addr = qmp_listener_get_address(*lp);
    printf("# listening on %s\n", addr);
    REQUIRE(addr != NULL && strncmp(addr, "127.0.0.1:", 10) == 0);
    colon = strrchr(addr, ':');
    port = atoi(colon + 1);
    REQUIRE(port > 0 && port < 65536);

    snprintf(chardev, sizeof(chardev), "socket,id=mon0,host=127.0.0.1,port=%d,server=off", port);
    o.extra_args[0] = "-chardev";
    o.extra_args[1] = chardev;
    o.extra_args[2] = "-mon";
    o.extra_args[3] = "chardev=mon0,mode=control";
    REQUIRE(qemu_launch(q, &o) == 0);

    REQUIRE(qmp_client_new(cp) == 0);
    rc = qmp_listener_accept(*lp, *cp, QEMU_TEST_EVENT_TIMEOUT_MS, &err);
    if (rc < 0)
        qemu_print_error("qmp_listener_accept", rc, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(run_state(*cp, state, sizeof(state)), "running");
}

TEST(accept_mode_tcp)
{
    qemu_instance q;
    qmp_listener *l = NULL;
    qmp_client *c = NULL;

    if (qemu_prepare(&q) < 0)
        harness_cur_failed = 1;
    else
        accept_tcp_body(&q, &l, &c);
    qmp_client_unref(c);
    qmp_listener_free(l);
    qemu_stop(&q, harness_cur_failed);
}

static void tcp_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *args = NULL;
    char state[64], addr[QEMU_PATH_MAX];
    int fd, rc, i;

    CHECK(q->tcp_port > 0);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");

    /* Descriptors cannot travel over TCP; the call fails before sending
     * and the connection stays usable. */
    fd = dup(1);
    REQUIRE(fd >= 0);
    REQUIRE(qmp_json_build(&args, NULL, "{'fdset-id': 1}") == 0);
    rc = qmp_client_execute_full(c, "add-fd", args, 0, QMP_TIMEOUT_DEFAULT, &fd, 1, NULL, &err);
    json_object_put(args);
    close(fd);
    CHECK_EQ_INT(rc, -EOPNOTSUPP);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");

    /* The other spellings of a TCP address. */
    for (i = 0; i < 2; i++) {
        qmp_client_close(c);
        snprintf(addr, sizeof(addr), i == 0 ? "tcp:127.0.0.1:%d" : "localhost:%d", q->tcp_port);
        rc = qmp_client_connect(c, addr, &err);
        if (rc < 0)
            qemu_print_error(addr, rc, &err);
        CHECK_EQ_INT(rc, 0);
        if (rc == 0)
            CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
    }
}

TEST(tcp)
{
    qemu_opts o = {.monitor = QEMU_MON_TCP};

    qemu_run(&o, tcp_body, &harness_cur_failed);
}

/* A monitor serves one client: the second waits for a greeting that
 * never comes, and its connect times out with a hint. */
static void second_client_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_client *c2 = NULL;
    char state[64];
    long long t0, elapsed;
    int rc;

    REQUIRE(qmp_client_new(&c2) == 0);
    REQUIRE(qmp_client_set_connect_timeout(c2, 1000) == 0);
    t0 = qemu_now_ms();
    rc = qmp_client_connect(c2, q->address, &err);
    elapsed = qemu_now_ms() - t0;
    printf("# second connect: %d after %lld ms: %s\n", rc, elapsed, err.message);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK_EQ_INT(err.code, -ETIMEDOUT);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK_CONTAINS(err.message, "is another client connected?");
    CHECK(elapsed >= 900);
    CHECK(elapsed < 10000);
    CHECK_EQ_INT(qmp_client_is_connected(c2), 0);

    /* The first client is unaffected. */
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");

    /* Once it leaves, QEMU serves the next one. */
    qmp_client_close(c);
    REQUIRE(qmp_client_set_connect_timeout(c2, QEMU_TEST_EVENT_TIMEOUT_MS) == 0);
    rc = qmp_client_connect(c2, q->address, &err);
    if (rc < 0)
        qemu_print_error("connect after the first client left", rc, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0)
        CHECK_EQ_STR(run_state(c2, state, sizeof(state)), "running");
    qmp_client_unref(c2);
}

TEST(second_client_refused)
{
    qemu_run(NULL, second_client_body, &harness_cur_failed);
}

static void socketpair_body(qemu_instance *q, qmp_client *c)
{
    char state[64];

    (void)q;
    CHECK(qmp_client_get_greeting(c) != NULL);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
}

TEST(socketpair_connect_fd)
{
    qemu_opts o = {.monitor = QEMU_MON_SOCKETPAIR};

    qemu_run(&o, socketpair_body, &harness_cur_failed);
}

static void fd_address_body(qemu_instance *q, qmp_client *c0)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_client *c = NULL;
    char addr[32], state[64];
    int rc;

    (void)c0;
    snprintf(addr, sizeof(addr), "fd:%d", q->client_fd);
    REQUIRE(qmp_client_new(&c) == 0);
    rc = qmp_client_connect(c, addr, &err);
    /* The client owns the descriptor now. */
    q->client_fd = -1;
    if (rc < 0)
        qemu_print_error(addr, rc, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK_EQ_INT(qmp_client_get_fd(c) >= 0, 1);
        CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
    }
    qmp_client_unref(c);
}

TEST(fd_address)
{
    qemu_opts o = {.monitor = QEMU_MON_SOCKETPAIR, .no_connect = 1};

    qemu_run(&o, fd_address_body, &harness_cur_failed);
}

/* QEMU killed under a connected client. */
static void qemu_dies_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    long long t0;
    int rc;

    REQUIRE(kill(q->pid, SIGKILL) == 0);
    REQUIRE(qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS) == 0);
    t0 = qemu_now_ms();
    rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
    CHECK(rc == -ECONNRESET || rc == -EPIPE);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK(qemu_now_ms() - t0 < 5000);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    /* Sticky. */
    rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
    CHECK(rc == -ECONNRESET || rc == -EPIPE);

    /* The socket file remains, but nobody listens on it. */
    rc = qmp_client_connect(c, q->address, &err);
    CHECK_EQ_INT(rc, -ECONNREFUSED);
    CHECK_EQ_INT(err.category, QMP_ERR_CONNECT);
}

TEST(qemu_dies)
{
    qemu_run(NULL, qemu_dies_body, &harness_cur_failed);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(accept_mode);
    RUN(accept_mode_tcp);
    RUN(tcp);
    RUN(second_client_refused);
    RUN(socketpair_connect_fd);
    RUN(fd_address);
    RUN(qemu_dies);
    return harness_done();
}
