/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests of the fake QEMU itself, driven over plain sockets without
 * libqmp, so that a failing client test can be trusted to be about the
 * client.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "fake-qemu.h"
#include "harness.h"

#define DEADLINE_MS 10000

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A line-reading peer with a deadline on every read. */
typedef struct peer {
    int fd;
    char buf[65536];
    size_t len;
    bool eof;
} peer;

/* Reads more bytes within timeout_ms.  Returns bytes read, 0 at EOF,
 * -ETIMEDOUT. */
static long peer_fill(peer *p, int timeout_ms)
{
    struct pollfd pfd = {p->fd, POLLIN, 0};
    int r = poll(&pfd, 1, timeout_ms);
    if (r <= 0)
        return -ETIMEDOUT;
    ssize_t n = read(p->fd, p->buf + p->len, sizeof(p->buf) - 1 - p->len);
    if (n <= 0) {
        p->eof = true;
        return 0;
    }
    p->len += (size_t)n;
    p->buf[p->len] = '\0';
    return n;
}

/* Returns the next line (malloc'd, without CRLF) or NULL on EOF/timeout. */
static char *peer_line(peer *p)
{
    long long deadline = now_ms() + DEADLINE_MS;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - p->buf);
            char *line = malloc(n + 1);
            memcpy(line, p->buf, n);
            line[n] = '\0';
            if (n > 0 && line[n - 1] == '\r')
                line[n - 1] = '\0';
            memmove(p->buf, nl + 1, p->len - n - 1);
            p->len -= n + 1;
            p->buf[p->len] = '\0';
            return line;
        }
        long long left = deadline - now_ms();
        if (left <= 0 || peer_fill(p, (int)left) <= 0)
            return NULL;
    }
}

static json_object *peer_json(peer *p)
{
    char *line = peer_line(p);
    if (line == NULL)
        return NULL;
    json_object *o = json_tokener_parse(line);
    free(line);
    return o;
}

static void peer_send(peer *p, const char *s)
{
    size_t n = strlen(s);
    CHECK_EQ_INT(send(p->fd, s, n, MSG_NOSIGNAL), (long long)n);
}

static void peer_handshake(peer *p)
{
    char *g = peer_line(p);
    CHECK_EQ_STR(g, FAKE_QEMU_GREETING);
    free(g);
    peer_send(p, "{\"execute\": \"qmp_capabilities\", \"id\": \"cap\"}\n");
    g = peer_line(p);
    CHECK_EQ_STR(g, "{\"return\": {}, \"id\": \"cap\"}");
    free(g);
}

static fake_qemu *start_pair(fake_qemu *f, peer *p)
{
    memset(p, 0, sizeof(*p));
    p->fd = fake_qemu_take_client_fd(f);
    CHECK(fake_qemu_start(f) == 0);
    return f;
}

TEST(default_handshake)
{
    peer p;
    fake_qemu *f = start_pair(fake_qemu_new(), &p);
    peer_handshake(&p);
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    json_object *caps = fake_qemu_request(f, FAKE_QEMU_CAPS_REQ);
    CHECK(caps != NULL);
    CHECK_EQ_STR(fake_qemu_request_text(f, FAKE_QEMU_CAPS_REQ),
                 "{\"execute\": \"qmp_capabilities\", \"id\": \"cap\"}");
    fake_qemu_free(f);
    close(p.fd);
}

TEST(ids_copied)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    const char *ids[] = {"7", "\"a/b\\\"c\"", "{\"k\": [1, \"s\", null]}", "-1.5", NULL};
    int reqs[5];
    for (int i = 0; i < 5; i++) {
        reqs[i] = fake_qemu_expect(f, "x", NULL);
        fake_qemu_reply(f, reqs[i], "18446744073709551615");
    }
    start_pair(f, &p);
    peer_handshake(&p);
    for (int i = 0; i < 5; i++) {
        char msg[200];
        if (ids[i])
            snprintf(msg, sizeof(msg), "{\"execute\": \"x\", \"id\": %s}\n", ids[i]);
        else
            snprintf(msg, sizeof(msg), "{\"execute\": \"x\"}\n");
        peer_send(&p, msg);
        json_object *reply = peer_json(&p);
        REQUIRE(reply != NULL);
        json_object *id = NULL, *ret = NULL;
        int has_id = json_object_object_get_ex(reply, "id", &id);
        CHECK_EQ_INT(has_id, ids[i] != NULL);
        if (ids[i]) {
            json_object *want = json_tokener_parse(ids[i]);
            CHECK(json_object_equal(id, want));
            json_object_put(want);
        }
        CHECK(json_object_object_get_ex(reply, "return", &ret));
        CHECK(json_object_get_uint64(ret) == UINT64_MAX);
        json_object_put(reply);
    }
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(error_reply_and_events)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "device_del", "{\"id\": \"d0\"}");
    fake_qemu_event(f, "DEVICE_DELETED", "{\"device\": \"d0\"}");
    fake_qemu_reply_error(f, q, "DeviceNotFound", "Device 'd0' not \"found\"");
    fake_qemu_event_burst(f, "TICK", 3);
    start_pair(f, &p);
    peer_handshake(&p);
    peer_send(&p, "{\"execute\": \"device_del\", \"arguments\": {\"id\": \"d0\", \"x\": 1}, "
                  "\"id\": 1}\n");
    char *line = peer_line(&p);
    CHECK_EQ_STR(line, "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 0}, "
                       "\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d0\"}}");
    free(line);
    json_object *reply = peer_json(&p), *e = NULL, *v = NULL;
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "error", &e));
    CHECK(json_object_object_get_ex(e, "class", &v));
    CHECK_EQ_STR(json_object_get_string(v), "DeviceNotFound");
    CHECK(json_object_object_get_ex(e, "desc", &v));
    CHECK_EQ_STR(json_object_get_string(v), "Device 'd0' not \"found\"");
    CHECK(json_object_object_get_ex(reply, "id", &v));
    CHECK_EQ_INT(json_object_get_int(v), 1);
    json_object_put(reply);
    for (int i = 0; i < 3; i++) {
        json_object *ev = peer_json(&p), *data = NULL, *seq = NULL;
        REQUIRE(ev != NULL);
        CHECK(json_object_object_get_ex(ev, "data", &data));
        CHECK(json_object_object_get_ex(data, "seq", &seq));
        CHECK_EQ_INT(json_object_get_int(seq), i);
        json_object_put(ev);
    }
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
}

/* The fake's own failures must be reported: a fake that cannot fail
 * would make every client test pass. */
TEST(reports_unexpected_command)
{
    peer p;
    fake_qemu *f = start_pair(fake_qemu_new(), &p);
    peer_handshake(&p);
    peer_send(&p, "{\"execute\": \"stop\", \"id\": 5}\n");
    json_object *reply = peer_json(&p), *v = NULL;
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "error", &v));
    json_object_put(reply);
    CHECK_EQ_INT(fake_qemu_finish(f), 1);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(reports_unexpected_at_teardown)
{
    /* A request sent just before teardown is still noticed. */
    peer p;
    fake_qemu *f = start_pair(fake_qemu_new(), &p);
    peer_handshake(&p);
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    peer_send(&p, "{\"execute\": \"quit\"}\n");
    CHECK_EQ_INT(fake_qemu_finish(f), 1);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(reports_leftover_and_mismatch)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    int a = fake_qemu_expect(f, "a", "{\"k\": {\"n\": 1}}");
    fake_qemu_reply(f, a, "{}");
    int b = fake_qemu_expect_full(f, "b", NULL, FAKE_QEMU_ARGS_EXACT, -1);
    fake_qemu_reply(f, b, "{}");
    int c = fake_qemu_expect(f, "c", NULL);
    fake_qemu_reply(f, c, "{}");
    start_pair(f, &p);
    peer_handshake(&p);
    /* Mismatched pattern: recorded, but the script goes on. */
    peer_send(&p, "{\"execute\": \"a\", \"arguments\": {\"k\": {\"n\": 2}}}\n");
    free(peer_line(&p));
    /* Arguments where none were expected. */
    peer_send(&p, "{\"execute\": \"b\", \"arguments\": {}}\n");
    free(peer_line(&p));
    /* "c" is never sent: two errors so far, one leftover expectation and
     * one leftover reply at teardown. */
    CHECK_EQ_INT(fake_qemu_error_count(f), 2);
    CHECK_EQ_INT(fake_qemu_finish(f), 4);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(reports_wrong_command_and_bad_json)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_expect(f, "a", NULL);
    start_pair(f, &p);
    peer_handshake(&p);
    peer_send(&p, "{\"execute\": \"b\"}\n");
    json_object *reply = peer_json(&p), *v = NULL;
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "error", &v));
    json_object_put(reply);
    CHECK_EQ_INT(fake_qemu_finish(f), 1);
    fake_qemu_free(f);
    close(p.fd);

    f = fake_qemu_new();
    fake_qemu_expect(f, "a", NULL);
    start_pair(f, &p);
    peer_handshake(&p);
    peer_send(&p, "{'execute': 'a'}\n");
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 1);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(receives_fds)
{
    peer p;
    int pfd[2];
    REQUIRE(pipe(pfd) == 0);
    fake_qemu *f = fake_qemu_new();
    int g = fake_qemu_expect_full(f, "getfd", "{\"fdname\": \"x\"}", 0, 1);
    fake_qemu_reply(f, g, "{}");
    start_pair(f, &p);
    peer_handshake(&p);
    const char *cmd = "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"x\"}}\n";
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct iovec iov = {(void *)cmd, strlen(cmd)};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pfd[1], sizeof(int));
    CHECK_EQ_INT(sendmsg(p.fd, &mh, MSG_NOSIGNAL), (long long)strlen(cmd));
    char *line = peer_line(&p);
    CHECK_EQ_STR(line, "{\"return\": {}}");
    free(line);
    CHECK_EQ_INT(fake_qemu_request_n_fds(f, g), 1);
    int got = fake_qemu_request_fd(f, g, 0);
    REQUIRE(got >= 0);
    struct stat a, b;
    CHECK(fstat(got, &a) == 0 && fstat(pfd[1], &b) == 0);
    CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
    CHECK_EQ_INT(write(got, "hi", 2), 2);
    char buf[3] = "";
    CHECK_EQ_INT(read(pfd[0], buf, 2), 2);
    CHECK_EQ_STR(buf, "hi");
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
    close(pfd[0]);
    close(pfd[1]);
}

TEST(dribble_and_cut)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_send(f, "{\"event\": \"A\"}\r\n");
    fake_qemu_dribble(f, 1);
    fake_qemu_send(f, "{\"event\": \"B\"}\r\n");
    fake_qemu_cut(f, 5);
    fake_qemu_event(f, "NEVER", NULL);
    start_pair(f, &p);
    peer_handshake(&p);
    char *line = peer_line(&p);
    CHECK_EQ_STR(line, "{\"event\": \"A\"}");
    free(line);
    while (!p.eof && peer_fill(&p, DEADLINE_MS) > 0)
        ;
    CHECK(p.eof);
    CHECK_EQ_STR(p.buf, "{\"eve");
    /* The event after the cut never ran. */
    CHECK_EQ_INT(fake_qemu_finish(f), 1);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(hold_resume_and_shutdown)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_hold(f);
    fake_qemu_event(f, "AFTER", NULL);
    fake_qemu_shutdown_write(f);
    int q = fake_qemu_expect(f, "quit", NULL);
    (void)q;
    start_pair(f, &p);
    peer_handshake(&p);
    /* Nothing may come while held. */
    CHECK_EQ_INT(peer_fill(&p, 100), -ETIMEDOUT);
    fake_qemu_resume(f);
    char *line = peer_line(&p);
    CHECK(line != NULL && strstr(line, "\"AFTER\"") != NULL);
    free(line);
    CHECK(peer_line(&p) == NULL);
    CHECK(p.eof);
    /* After shutdown(SHUT_WR) the fake still reads. */
    peer_send(&p, "{\"execute\": \"quit\"}\n");
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    CHECK(fake_qemu_request(f, q) != NULL);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(unheld_teardown_is_not_an_error)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_hold(f);
    start_pair(f, &p);
    peer_handshake(&p);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
}

/* Serve function of the tests below: answers every command with its
 * name, emits EV before answering "ev", records an error for "bad",
 * and ends serving at "done". */
static int serve_names(fake_qemu *f, json_object *request, void *userdata)
{
    int *calls = userdata;
    json_object *v = NULL;
    char ret[128];

    (*calls)++;
    json_object_object_get_ex(request, "execute", &v);
    const char *cmd = json_object_get_string(v);
    if (cmd == NULL)
        cmd = "";
    if (strcmp(cmd, "ev") == 0)
        fake_qemu_emit(f, "EV", "{\"n\": 1}");
    if (strcmp(cmd, "bad") == 0) {
        fake_qemu_record_error(f, "bad request %d", *calls);
        fake_qemu_answer_error(f, request, "GenericError", "bad");
        return FAKE_QEMU_SERVE_MORE;
    }
    snprintf(ret, sizeof(ret), "\"%s\"", cmd);
    fake_qemu_answer(f, request, ret);
    return strcmp(cmd, "done") == 0 ? FAKE_QEMU_SERVE_DONE : FAKE_QEMU_SERVE_MORE;
}

static void check_answer(peer *p, const char *name, int id)
{
    json_object *reply = peer_json(p), *v = NULL;
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "return", &v));
    CHECK_EQ_STR(json_object_get_string(v), name);
    CHECK(json_object_object_get_ex(reply, "id", &v));
    CHECK_EQ_INT(json_object_get_int(v), id);
    json_object_put(reply);
}

TEST(serve_in_arrival_order)
{
    peer p;
    int calls = 0;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve_names, &calls);
    int q = fake_qemu_expect(f, "after", NULL);
    fake_qemu_reply(f, q, "{}");
    start_pair(f, &p);
    peer_handshake(&p);
    /* Pipelined: answered one by one, in order. */
    peer_send(&p, "{\"execute\": \"a\", \"id\": 1}\n{\"execute\": \"ev\", \"id\": 2}\n"
                  "{\"execute\": \"b\", \"id\": 3}\n");
    check_answer(&p, "a", 1);
    char *line = peer_line(&p);
    CHECK(line != NULL && strstr(line, "\"event\": \"EV\", \"data\": {\"n\": 1}") != NULL);
    free(line);
    check_answer(&p, "ev", 2);
    check_answer(&p, "b", 3);
    /* done ends the step; the script goes on. */
    peer_send(&p, "{\"execute\": \"done\", \"id\": 4}\n{\"execute\": \"after\", \"id\": 5}\n");
    check_answer(&p, "done", 4);
    json_object *reply = peer_json(&p);
    CHECK(reply != NULL);
    json_object_put(reply);
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    CHECK_EQ_INT(calls, 4);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(serve_reports_errors)
{
    /* An error the serve function records, and a serve step unfinished
     * at teardown, are both reported. */
    peer p;
    int calls = 0;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve_names, &calls);
    start_pair(f, &p);
    peer_handshake(&p);
    peer_send(&p, "{\"execute\": \"bad\", \"id\": 1}\n");
    json_object *reply = peer_json(&p), *v = NULL;
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "error", &v));
    json_object_put(reply);
    CHECK_EQ_INT(fake_qemu_finish(f), 2);
    fake_qemu_free(f);
    close(p.fd);

    /* A client that closes while the fake serves. */
    f = fake_qemu_new();
    fake_qemu_serve(f, serve_names, &calls);
    start_pair(f, &p);
    peer_handshake(&p);
    close(p.fd);
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 1);
    fake_qemu_free(f);
}

TEST(negotiation_modes)
{
    peer p;
    fake_qemu *f = fake_qemu_new();
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_FAIL);
    start_pair(f, &p);
    free(peer_line(&p));
    peer_send(&p, "{\"execute\": \"qmp_capabilities\"}\n");
    json_object *reply = peer_json(&p), *v = NULL;
    REQUIRE(reply != NULL);
    CHECK(json_object_object_get_ex(reply, "error", &v));
    json_object_put(reply);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);

    f = fake_qemu_new();
    fake_qemu_set_greeting(f, NULL);
    fake_qemu_set_negotiation(f, FAKE_QEMU_NEG_NONE);
    fake_qemu_send(f, "{\"QMP\": {}}\r\n");
    start_pair(f, &p);
    char *line = peer_line(&p);
    CHECK_EQ_STR(line, "{\"QMP\": {}}");
    free(line);
    CHECK_EQ_INT(fake_qemu_wait_done(f, DEADLINE_MS), 0);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
}

TEST(unix_and_tcp_modes)
{
    char dir[] = "/tmp/libqmp-fake-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof(path), "%s/qmp.sock", dir);

    /* Listening fake. */
    fake_qemu *f = fake_qemu_new_unix(path);
    REQUIRE(f != NULL);
    CHECK_EQ_STR(fake_qemu_address(f), path);
    CHECK_EQ_INT(fake_qemu_take_client_fd(f), -1);
    CHECK_EQ_INT(fake_qemu_start(f), 0);
    peer p;
    memset(&p, 0, sizeof(p));
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    p.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(p.fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    peer_handshake(&p);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
    CHECK(access(path, F_OK) != 0);

    /* Connecting fake. */
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    REQUIRE(listen(lfd, 1) == 0);
    f = fake_qemu_new_connect(path);
    REQUIRE(f != NULL);
    CHECK_EQ_INT(fake_qemu_start(f), 0);
    struct pollfd pfd = {lfd, POLLIN, 0};
    CHECK_EQ_INT(poll(&pfd, 1, DEADLINE_MS), 1);
    memset(&p, 0, sizeof(p));
    p.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    REQUIRE(p.fd >= 0);
    peer_handshake(&p);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
    close(lfd);
    unlink(path);
    rmdir(dir);

    /* TCP. */
    f = fake_qemu_new_tcp();
    REQUIRE(f != NULL);
    const char *addr = fake_qemu_address(f);
    CHECK(strncmp(addr, "127.0.0.1:", 10) == 0);
    struct sockaddr_in si;
    memset(&si, 0, sizeof(si));
    si.sin_family = AF_INET;
    si.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    si.sin_port = htons((unsigned short)atoi(addr + 10));
    CHECK_EQ_INT(fake_qemu_start(f), 0);
    memset(&p, 0, sizeof(p));
    p.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(connect(p.fd, (struct sockaddr *)&si, sizeof(si)) == 0);
    peer_handshake(&p);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    close(p.fd);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(default_handshake);
    RUN(ids_copied);
    RUN(error_reply_and_events);
    RUN(reports_unexpected_command);
    RUN(reports_unexpected_at_teardown);
    RUN(reports_leftover_and_mismatch);
    RUN(reports_wrong_command_and_bad_json);
    RUN(receives_fds);
    RUN(dribble_and_cut);
    RUN(hold_resume_and_shutdown);
    RUN(unheld_teardown_is_not_an_error);
    RUN(serve_in_arrival_order);
    RUN(serve_reports_errors);
    RUN(negotiation_modes);
    RUN(unix_and_tcp_modes);
    return harness_done();
}
