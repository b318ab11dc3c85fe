/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sansio-session: the protocol core, driven by hand.
 *
 * qmp_session performs no I/O.  This program owns the socket and the
 * poll() loop: it feeds the session what it reads, writes what the session
 * asks to be written, and reacts to the session's callbacks.  qmp_client
 * does the same work, with deadlines and an event queue; an application
 * with its own event loop can do it this way.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./sansio-session /tmp/qmp.sock            (a unix socket path)
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

struct app {
    int done;
    int failed;
};

/* Called once with the outcome of query-status.  The reply and its return
 * value are borrowed for the duration of the callback. */
static void on_reply(qmp_session *s, qmp_reply *reply, void *userdata)
{
    struct app *app = userdata;

    if (qmp_reply_status(reply) < 0) {
        fprintf(stderr, "query-status: %s\n", qmp_reply_error(reply)->message);
        app->failed = 1;
    } else {
        printf("query-status returned %s\n",
               json_object_to_json_string_ext(qmp_reply_return(reply), JSON_C_TO_STRING_PLAIN));
    }
    app->done = 1;
}

/* The session negotiates capabilities by itself; once READY, commands
 * may be sent, also from inside a callback like this one. */
static void on_state(qmp_session *s, qmp_session_state state, void *userdata)
{
    struct app *app = userdata;
    qmp_error err = QMP_ERROR_INIT;
    int major, minor, micro;

    switch (state) {
    case QMP_SESSION_NEGOTIATING:
        qmp_greeting_version(qmp_session_get_greeting(s), &major, &minor, &micro);
        printf("greeting from QEMU %d.%d.%d, negotiating\n", major, minor, micro);
        break;
    case QMP_SESSION_READY:
        printf("ready\n");
        if (qmp_session_send_command(s, "query-status", NULL, 0, NULL, 0, on_reply, app, NULL,
                                     &err) < 0) {
            fprintf(stderr, "send: %s\n", err.message);
            app->failed = app->done = 1;
        }
        break;
    case QMP_SESSION_FAILED:
        qmp_session_get_error(s, &err);
        fprintf(stderr, "session failed: %s\n", err.message);
        app->failed = app->done = 1;
        break;
    case QMP_SESSION_GREETING:
        break;
    }
}

static void on_event(qmp_session *s, qmp_event *ev, void *userdata)
{
    printf("event %s\n", qmp_event_name(ev));
}

static int connect_unix(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "%s: path too long\n", path);
        return -1;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* One round of I/O: write pending output, read what arrived.  Returns 0
 * to go on, -1 when the session cannot go on. */
static int pump(qmp_session *s, int fd)
{
    qmp_error err = QMP_ERROR_INIT;
    char buf[4096];
    size_t out_len;
    const void *out = qmp_session_get_output(s, &out_len, NULL, NULL);
    struct pollfd pfd = {.fd = fd, .events = POLLIN | (out_len > 0 ? POLLOUT : 0)};
    ssize_t n;

    /* The whole exchange takes milliseconds; 5 s without progress is a hang. */
    n = poll(&pfd, 1, 5000);
    if (n < 0 && errno == EINTR)
        return 0;
    if (n <= 0) {
        fprintf(stderr, "%s\n", n == 0 ? "no progress in 5 s" : strerror(errno));
        return -1;
    }

    if (pfd.revents & POLLOUT) {
        /* A short write is fine: consume what went out, the rest waits. */
        n = send(fd, out, out_len, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
            qmp_error why = {.code = -errno, .category = QMP_ERR_DISCONNECTED};

            snprintf(why.message, sizeof(why.message), "send: %s", strerror(errno));
            qmp_session_abort(s, &why); /* fails pending commands; FAILED state */
            return -1;
        }
        if (n > 0)
            qmp_session_consume_output(s, (size_t)n);
    }

    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
        n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0)
            return qmp_session_feed(s, buf, (size_t)n, &err) < 0 ? -1 : 0;
        if (n == 0) {
            qmp_session_feed_eof(s, &err); /* QEMU closed the connection */
            return -1;
        }
        if (errno != EINTR && errno != EAGAIN) {
            qmp_session_abort(s, NULL);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct app app = {0, 0};
    qmp_session *s = NULL;
    int fd;

    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    fd = connect_unix(argv[1]);
    if (fd < 0)
        return 1;
    if (qmp_session_new(&s) < 0) {
        close(fd);
        return 1;
    }
    qmp_session_set_state_callback(s, on_state, &app);
    qmp_session_set_event_callback(s, on_event, &app);

    /* Callbacks run inside qmp_session_feed(); they set app.done. */
    while (!app.done) {
        if (pump(s, fd) < 0)
            break;
    }

    qmp_session_unref(s);
    close(fd);
    return app.done && !app.failed ? 0 : 1;
}
