/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The blocking client: a socket plus a qmp_session, driven with poll()
 * until the caller's reply (or event, or the handshake) is there or the
 * call's deadline has passed.
 *
 * Every wait goes through client_run(), which loops: write what the
 * session has to send, poll for input (and for output while some is
 * pending), read and feed.  It keeps reading while writing, so a QEMU
 * that answers (or emits events) before taking all of a large request
 * cannot deadlock us, and it never lets a single read or write stretch
 * the deadline.
 *
 * When the session fails (EOF, a read or write error, a protocol error),
 * the client records the session's error once, prefixed with the
 * address, closes the socket at once (so QEMU's monitor is free for the
 * next client) and returns that sticky error from every later call until
 * the next connect.  Events queued before the failure remain takeable.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport.h"

/* Read buffer per connection: big enough that typical replies arrive in
 * one read, small enough to keep an idle client light. */
#define READ_BUF_SIZE (16 * 1024)

/* Reads per wakeup before going back to check the deadline and flush
 * output (1 MiB at most), so a peer that floods us cannot starve the
 * rest of the loop. */
#define READ_BURST_MAX 64

/* The session refuses smaller caps; checked here too so that a bad value
 * fails when it is set, not at the next connect. */
#define MIN_MAX_MESSAGE_SIZE 256

/* Initial event queue capacity; it grows by doubling up to the maximum. */
#define EVENT_QUEUE_INITIAL 16

/* What qmp_client_wait_event() is looking for while it reads. */
typedef struct event_waiter {
    const char *name;   /* NULL: any */
    json_object *match; /* NULL: any data */
    qmp_event *found;   /* new reference once matched */
} event_waiter;

struct qmp_client {
    unsigned n_ref;

    /* Settings, applied to each new session. */
    int timeout_ms;
    int connect_timeout_ms;
    size_t max_message_size; /* 0: the session's default */
    bool want_oob;
    qmp__logger log;
    qmp_trace_fn trace_fn;
    void *trace_userdata;

    /* The connection.  session is the current one, or the last one after
     * a close or failure (kept so that its greeting stays valid). */
    int fd; /* -1 when no socket is open */
    bool is_unix;
    char *rbuf;
    qmp_session *session;
    char *desc;  /* the peer's address, for messages */
    bool open;   /* connected and not closed by the caller */
    bool failed; /* the connection broke; fail holds the sticky error */
    qmp_error fail;
    pid_t pid; /* process that connected; 0 before the first connect */

    /* Duplicates of descriptors handed to the session for a command whose
     * bytes may not all be written yet (after a timeout); closed once the
     * output is empty, so a caller may close its own at once. */
    int *held_fds;
    size_t n_held_fds;
    size_t cap_held_fds;

    /* Event queue: a ring of new references, oldest at head. */
    qmp_event **evq;
    size_t evq_cap;
    size_t evq_head;
    size_t evq_len;
    size_t evq_max;
    uint64_t events_lost;
    event_waiter *waiter; /* set while qmp_client_wait_event() reads */
};

/* ------------------------------------------------------------ event queue */

static qmp_event **evq_at(qmp_client *c, size_t i)
{
    return &c->evq[(c->evq_head + i) % c->evq_cap];
}

/* Moves the queue into an array of new_cap slots (new_cap >= evq_len). */
static int evq_resize(qmp_client *c, size_t new_cap)
{
    if (new_cap > SIZE_MAX / sizeof(qmp_event *))
        return -ENOMEM;
    qmp_event **n = malloc(new_cap * sizeof(*n));
    if (n == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < c->evq_len; i++)
        n[i] = *evq_at(c, i);
    free(c->evq);
    c->evq = n;
    c->evq_cap = new_cap;
    c->evq_head = 0;
    return 0;
}

/* Removes and returns the i-th queued event (its reference passes to the
 * caller), keeping the others in order. */
static qmp_event *evq_take(qmp_client *c, size_t i)
{
    qmp_event *ev = *evq_at(c, i);

    if (i == 0) {
        c->evq_head = (c->evq_head + 1) % c->evq_cap;
    } else {
        for (size_t j = i; j + 1 < c->evq_len; j++)
            *evq_at(c, j) = *evq_at(c, j + 1);
    }
    c->evq_len--;
    return ev;
}

static void evq_drop_oldest(qmp_client *c)
{
    qmp_event *ev = evq_take(c, 0);

    if (c->events_lost == 0)
        qmp__log(&c->log, QMP_LOG_WARNING, "event queue full (%zu events): dropping the oldest, %s",
                 c->evq_max, qmp_event_name(ev));
    else
        qmp__log(&c->log, QMP_LOG_DEBUG, "event queue full: dropping %s", qmp_event_name(ev));
    c->events_lost++;
    qmp_event_unref(ev);
}

static void evq_push(qmp_client *c, qmp_event *ev)
{
    while (c->evq_len > 0 && c->evq_len >= c->evq_max)
        evq_drop_oldest(c);
    if (c->evq_len == c->evq_cap) {
        size_t want = c->evq_cap == 0 ? EVENT_QUEUE_INITIAL : c->evq_cap * 2;
        if (want > c->evq_max || want < c->evq_cap)
            want = c->evq_max;
        if (want <= c->evq_cap || evq_resize(c, want) < 0) {
            /* Out of memory: losing the oldest event is the documented
             * overflow behaviour anyway. */
            if (c->evq_len == 0) {
                qmp__log(&c->log, QMP_LOG_WARNING, "out of memory: dropping event %s",
                         qmp_event_name(ev));
                c->events_lost++;
                return;
            }
            evq_drop_oldest(c);
        }
    }
    *evq_at(c, c->evq_len) = qmp_event_ref(ev);
    c->evq_len++;
}

static void evq_clear(qmp_client *c)
{
    while (c->evq_len > 0)
        qmp_event_unref(evq_take(c, 0));
    free(c->evq);
    c->evq = NULL;
    c->evq_cap = c->evq_head = 0;
}

static bool event_matches(qmp_event *ev, const char *name, json_object *match)
{
    if (name != NULL && strcmp(qmp_event_name(ev), name) != 0)
        return false;
    if (match == NULL)
        return true;
    json_object *data = qmp_event_data(ev);
    if (data == NULL && qmp_event_has_data(ev))
        return false; /* could not decode (out of memory): cannot match */
    return qmp_json_match(data, match) != 0;
}

/* The session's event callback.  While qmp_client_wait_event() waits,
 * its match is taken out here, before it could be pushed out of a full
 * queue by the events that follow it. */
static void client_on_event(qmp_session *s, qmp_event *ev, void *userdata)
{
    qmp_client *c = userdata;
    event_waiter *w = c->waiter;

    (void)s;
    if (w != NULL && w->found == NULL && event_matches(ev, w->name, w->match)) {
        w->found = qmp_event_ref(ev);
        return;
    }
    evq_push(c, ev);
}

/* ------------------------------------------------------------- lifecycle */

int qmp_client_new(qmp_client **ret)
{
    if (ret == NULL)
        return -EINVAL;
    qmp_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    c->n_ref = 1;
    c->fd = -1;
    c->timeout_ms = QMP_CLIENT_DEFAULT_TIMEOUT_MS;
    c->connect_timeout_ms = QMP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    c->evq_max = QMP_CLIENT_DEFAULT_EVENT_QUEUE_MAX;
    c->log.max_level = QMP_LOG_ERROR;
    *ret = c;
    return 0;
}

static void release_held_fds(qmp_client *c)
{
    for (size_t i = 0; i < c->n_held_fds; i++)
        close(c->held_fds[i]);
    c->n_held_fds = 0;
}

/* Closes the socket and frees the per-connection buffers; the session
 * stays (for its greeting and sticky error). */
static void close_transport(qmp_client *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->rbuf);
    c->rbuf = NULL;
    release_held_fds(c);
}

/* Forgets the connection entirely: socket, session, queued events. */
static void client_reset(qmp_client *c)
{
    qmp_client_close(c);
    c->session = qmp_session_unref(c->session);
    free(c->desc);
    c->desc = NULL;
    c->failed = false;
    evq_clear(c);
}

qmp_client *qmp_client_ref(qmp_client *c)
{
    if (c != NULL)
        c->n_ref++;
    return c;
}

qmp_client *qmp_client_unref(qmp_client *c)
{
    if (c == NULL || --c->n_ref > 0)
        return NULL;
    client_reset(c);
    free(c->held_fds);
    free(c);
    return NULL;
}

/* -------------------------------------------------------------- settings */

int qmp_client_set_timeout(qmp_client *c, int timeout_ms)
{
    if (c == NULL || timeout_ms < QMP_TIMEOUT_INFINITE)
        return -EINVAL;
    c->timeout_ms = timeout_ms;
    return 0;
}

int qmp_client_set_connect_timeout(qmp_client *c, int timeout_ms)
{
    if (c == NULL || timeout_ms < QMP_TIMEOUT_INFINITE)
        return -EINVAL;
    c->connect_timeout_ms = timeout_ms;
    return 0;
}

int qmp_client_set_event_queue_max(qmp_client *c, size_t max_events)
{
    if (c == NULL || max_events == 0)
        return -EINVAL;
    c->evq_max = max_events;
    while (c->evq_len > max_events)
        evq_drop_oldest(c);
    /* Give back memory when the limit shrinks; a failure only keeps the
     * larger array. */
    if (c->evq_cap > max_events)
        (void)evq_resize(c, max_events);
    return 0;
}

int qmp_client_set_max_message_size(qmp_client *c, size_t bytes)
{
    if (c == NULL || bytes < MIN_MAX_MESSAGE_SIZE)
        return -EINVAL;
    if (c->session != NULL) {
        int r = qmp_session_set_max_message_size(c->session, bytes);
        if (r < 0)
            return r;
    }
    c->max_message_size = bytes;
    return 0;
}

int qmp_client_set_want_oob(qmp_client *c, int want)
{
    if (c == NULL)
        return -EINVAL;
    c->want_oob = want != 0;
    return 0;
}

void qmp_client_set_log(qmp_client *c, qmp_log_fn fn, qmp_log_level max_level, void *userdata)
{
    if (c == NULL)
        return;
    c->log.fn = fn;
    c->log.max_level = max_level;
    c->log.userdata = userdata;
    if (c->session != NULL)
        qmp_session_set_log(c->session, fn, max_level, userdata);
}

void qmp_client_set_trace(qmp_client *c, qmp_trace_fn fn, void *userdata)
{
    if (c == NULL)
        return;
    c->trace_fn = fn;
    c->trace_userdata = userdata;
    if (c->session != NULL)
        qmp_session_set_trace(c->session, fn, userdata);
}

/* ---------------------------------------------------------------- checks */

static int check_fork(const qmp_client *c, qmp_error *err)
{
    /* The socket and the session's state are shared with the parent: a
     * child that used them would corrupt the parent's conversation. */
    if (c->pid != 0 && c->pid != getpid())
        return qmp__error_set(err, -ECHILD, QMP_ERR_INVALID,
                              "the client was connected by process %ld and cannot be used after "
                              "fork()",
                              (long)c->pid);
    return 0;
}

int qmp__client_check(const qmp_client *c, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    return check_fork(c, err);
}

int qmp__client_connect_timeout(const qmp_client *c)
{
    return c->connect_timeout_ms;
}

/* ------------------------------------------------------------------- I/O */

/* Records the session's failure once (the socket is useless from then
 * on) and closes the socket. */
static void sync_failure(qmp_client *c)
{
    if (c->failed || c->session == NULL || qmp_session_get_state(c->session) != QMP_SESSION_FAILED)
        return;
    qmp_error e = QMP_ERROR_INIT;
    int code = qmp_session_get_error(c->session, &e);
    if (code >= 0) {
        code = -EPROTO;
        e.category = QMP_ERR_PROTOCOL;
        snprintf(e.message, sizeof(e.message), "the session failed");
    }
    qmp__error_set(&c->fail, code, e.category, "%s: %s", c->desc, e.message);
    c->fail.qmp_class = e.qmp_class;
    memcpy(c->fail.class_name, e.class_name, sizeof(c->fail.class_name));
    c->failed = true;
    qmp__log(&c->log, c->open ? QMP_LOG_WARNING : QMP_LOG_DEBUG, "%s", c->fail.message);
    close_transport(c);
}

/* Checks that c can run a command now: 0, -ENOTCONN, -ECHILD, or the
 * sticky error of a broken connection. */
static int check_usable(qmp_client *c, qmp_error *err)
{
    int r = check_fork(c, err);
    if (r < 0)
        return r;
    sync_failure(c);
    if (!c->open || c->session == NULL)
        return qmp__error_set(err, -ENOTCONN, QMP_ERR_INVALID, "not connected");
    if (c->failed) {
        qmp__error_copy(err, &c->fail);
        return c->fail.code;
    }
    return 0;
}

/* Fails the session for a socket error (errno e) in operation what. */
static void abort_errno(qmp_client *c, const char *what, int e)
{
    qmp_error why = QMP_ERROR_INIT;
    char eb[128];

    qmp__error_set(&why, -e, e == ENOMEM || e == ENOBUFS ? QMP_ERR_NOMEM : QMP_ERR_DISCONNECTED,
                   "%s failed: %s", what, qmp__strerror(e, eb, sizeof(eb)));
    qmp_session_abort(c->session, &why);
}

typedef bool (*done_fn)(qmp_client *c, void *arg);

/*
 * Reads what the socket holds and feeds it to the session: until the
 * socket is empty (a short read says so without another syscall), done()
 * holds, READ_BURST_MAX reads, EOF or an error (which fail the session).
 */
static void client_read(qmp_client *c, done_fn done, void *arg)
{
    for (unsigned i = 0; i < READ_BURST_MAX; i++) {
        ssize_t n = qmp__socket_recv(c->fd, c->rbuf, READ_BUF_SIZE);
        if (n > 0) {
            qmp_error ferr = QMP_ERROR_INIT;
            if (qmp_session_feed(c->session, c->rbuf, (size_t)n, &ferr) < 0) {
                /* The session is FAILED by contract; make sure of it. */
                if (qmp_session_get_state(c->session) != QMP_SESSION_FAILED)
                    qmp_session_abort(c->session, &ferr);
                return;
            }
            if ((done != NULL && done(c, arg)) || n < READ_BUF_SIZE)
                return;
            continue;
        }
        if (n == 0) {
            qmp_session_feed_eof(c->session, NULL);
            return;
        }
        if (n != -EAGAIN)
            abort_errno(c, "read", (int)-n);
        return;
    }
}

/*
 * Writes as much of the session's output as the socket takes.  Returns
 * true while output remains (wait for POLLOUT).  Descriptors held for the
 * output are released once it is all written.
 */
static bool client_flush(qmp_client *c)
{
    for (;;) {
        size_t len = 0, n_fds = 0;
        const int *fds = NULL;
        const void *p = qmp_session_get_output(c->session, &len, &fds, &n_fds);
        if (p == NULL || len == 0) {
            release_held_fds(c);
            return false;
        }
        ssize_t n = qmp__socket_send(c->fd, p, len, fds, n_fds);
        if (n > 0) {
            qmp_session_consume_output(c->session, (size_t)n);
            continue;
        }
        if (n == 0 || n == -EAGAIN)
            return true;
        /* A peer that closed may have left its last words (an error, the
         * events before a shutdown) in our receive buffer: take them, and
         * its EOF, before reporting the write error. */
        client_read(c, NULL, NULL);
        if (qmp_session_get_state(c->session) != QMP_SESSION_FAILED)
            abort_errno(c, "write", (int)-n);
        return false;
    }
}

/*
 * Drives the connection until done(c, arg) holds or the deadline passes.
 * The socket is polled at least once, even with a deadline already past,
 * so a zero timeout still takes what has arrived.
 *
 * Returns 0 (done), -ETIMEDOUT (err untouched: the caller knows what was
 * awaited), the sticky error once the connection broke, or a poll()
 * failure.
 */
static int client_run(qmp_client *c, int64_t deadline, done_fn done, void *arg, qmp_error *err)
{
    char eb[128];
    bool first = true;

    for (;;) {
        sync_failure(c);
        if (done(c, arg))
            return 0;
        if (c->failed) {
            qmp__error_copy(err, &c->fail);
            return c->fail.code;
        }
        bool want_out = client_flush(c);
        if (qmp_session_get_state(c->session) == QMP_SESSION_FAILED)
            continue;

        int tmo = qmp__deadline_remaining_ms(deadline);
        if (tmo == 0 && !first)
            return -ETIMEDOUT;
        first = false;

        struct pollfd pfd = {.fd = c->fd, .events = POLLIN | (want_out ? POLLOUT : 0)};
        int n = poll(&pfd, 1, tmo);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return qmp__error_set(err, -errno, errno == ENOMEM ? QMP_ERR_NOMEM : QMP_ERR_SYSTEM,
                                  "cannot wait on %s: %s", c->desc,
                                  qmp__strerror(errno, eb, sizeof(eb)));
        }
        if (n == 0)
            continue;
        if (pfd.revents & POLLNVAL)
            abort_errno(c, "poll", EBADF);
        else if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            client_read(c, done, arg);
        /* POLLOUT alone: the next round writes. */
    }
}

/* ------------------------------------------------------------ connecting */

static bool handshake_done(qmp_client *c, void *arg)
{
    (void)arg;
    return qmp_session_get_state(c->session) == QMP_SESSION_READY;
}

static int configure_session(qmp_client *c, qmp_session *s)
{
    int r = 0;

    if (c->max_message_size != 0)
        r = qmp_session_set_max_message_size(s, c->max_message_size);
    if (r == 0)
        r = qmp_session_set_want_oob(s, c->want_oob);
    qmp_session_set_log(s, c->log.fn, c->log.max_level, c->log.userdata);
    qmp_session_set_trace(s, c->trace_fn, c->trace_userdata);
    qmp_session_set_event_callback(s, client_on_event, c);
    return r;
}

int qmp__client_attach(qmp_client *c, int fd, bool is_unix, const char *desc, int64_t deadline,
                       int timeout_ms, qmp_error *err)
{
    qmp_error e = QMP_ERROR_INIT;

    client_reset(c);
    c->desc = strdup(desc);
    c->rbuf = malloc(READ_BUF_SIZE);
    int r = qmp_session_new(&c->session);
    if (r == 0)
        r = configure_session(c, c->session);
    if (c->desc == NULL || c->rbuf == NULL || r < 0) {
        close(fd);
        free(c->rbuf);
        c->rbuf = NULL;
        free(c->desc);
        c->desc = NULL;
        c->session = qmp_session_unref(c->session);
        if (r < 0 && r != -ENOMEM)
            return qmp__error_set(err, r, QMP_ERR_INVALID, "cannot set up the session for %s",
                                  desc);
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory connecting to %s", desc);
    }
    c->fd = fd;
    c->is_unix = is_unix;
    c->pid = getpid();
    qmp__log(&c->log, QMP_LOG_DEBUG, "connected to %s, waiting for the QMP greeting", desc);

    r = client_run(c, deadline, handshake_done, NULL, &e);
    if (r == 0) {
        c->open = true;
        if (qmp__log_enabled(&c->log, QMP_LOG_DEBUG)) {
            int major = 0, minor = 0, micro = 0;
            const qmp_greeting *g = qmp_session_get_greeting(c->session);
            if (g != NULL)
                qmp_greeting_version(g, &major, &minor, &micro);
            qmp__log(&c->log, QMP_LOG_DEBUG, "QMP ready on %s (QEMU %d.%d.%d%s)", desc, major,
                     minor, micro, qmp_session_oob_enabled(c->session) ? ", oob" : "");
        }
        return 0;
    }

    if (!c->failed) {
        if (r == -ETIMEDOUT && qmp_session_get_state(c->session) == QMP_SESSION_GREETING)
            /* QEMU serves one client per monitor; the kernel accepts a
             * second one that then waits, silent, for its turn. */
            qmp__error_set(&e, r, QMP_ERR_TIMEOUT,
                           "no QMP greeting from %s within %d ms (is another client connected?)",
                           desc, timeout_ms);
        else if (r == -ETIMEDOUT)
            qmp__error_set(&e, r, QMP_ERR_TIMEOUT,
                           "no reply to qmp_capabilities from %s within %d ms", desc, timeout_ms);
        /* Fail the session too, so it holds the reason; its greeting (if
         * any) stays readable until the next connect. */
        qmp_session_abort(c->session, &e);
        close_transport(c);
    }
    c->failed = false;
    qmp__log(&c->log, QMP_LOG_DEBUG, "%s", e.message);
    qmp__error_copy(err, &e);
    return r;
}

int qmp_client_connect(qmp_client *c, const char *address, qmp_error *err)
{
    qmp_error e = QMP_ERROR_INIT;
    qmp__address a;
    int fd = -1;
    bool is_unix = false;

    int r = qmp__client_check(c, err);
    if (r < 0)
        return r;
    /* The deadline starts now: name resolution and connect count too. */
    int64_t deadline = qmp__deadline_after(c->connect_timeout_ms);
    r = qmp__address_parse(address, false, &a, err);
    if (r < 0)
        goto out;
    if (a.kind == QMP__ADDR_FD && a.fd == c->fd && c->fd >= 0) {
        r = qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "%s is already this client's socket",
                           a.desc);
        goto out;
    }
    client_reset(c);
    qmp__log(&c->log, QMP_LOG_DEBUG, "connecting to %s", a.desc);
    r = qmp__socket_connect(&a, deadline, c->connect_timeout_ms, &c->log, &fd, &is_unix, &e);
    if (r < 0) {
        qmp__log(&c->log, QMP_LOG_DEBUG, "%s", e.message);
        qmp__error_copy(err, &e);
        goto out;
    }
    r = qmp__client_attach(c, fd, is_unix, a.desc, deadline, c->connect_timeout_ms, err);
out:
    qmp__address_clear(&a);
    return r;
}

int qmp_client_connect_fd(qmp_client *c, int fd, qmp_error *err)
{
    char desc[32];
    bool is_unix = false;

    if (fd < 0)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid descriptor %d", fd);
    int r = qmp__client_check(c, err);
    if (r < 0) {
        /* Ownership passes to us on failure too. */
        close(fd);
        return r;
    }
    if (fd == c->fd)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "fd:%d is already this client's socket", fd);
    int64_t deadline = qmp__deadline_after(c->connect_timeout_ms);
    snprintf(desc, sizeof(desc), "fd:%d", fd);
    r = qmp__socket_adopt(fd, desc, &is_unix, err);
    if (r < 0)
        return r;
    return qmp__client_attach(c, fd, is_unix, desc, deadline, c->connect_timeout_ms, err);
}

void qmp_client_close(qmp_client *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        qmp__log(&c->log, QMP_LOG_DEBUG, "closing the connection to %s", c->desc);
    close_transport(c);
    c->open = false;
    c->failed = false;
}

int qmp_client_is_connected(const qmp_client *c)
{
    return c != NULL && c->open && !c->failed && c->fd >= 0 && c->session != NULL &&
           qmp_session_get_state(c->session) == QMP_SESSION_READY && check_fork(c, NULL) == 0;
}

int qmp_client_get_fd(const qmp_client *c)
{
    return c != NULL ? c->fd : -1;
}

const qmp_greeting *qmp_client_get_greeting(const qmp_client *c)
{
    return c != NULL && c->session != NULL ? qmp_session_get_greeting(c->session) : NULL;
}

int qmp_client_oob_enabled(const qmp_client *c)
{
    return c != NULL && c->open && c->session != NULL && qmp_session_oob_enabled(c->session);
}

/* -------------------------------------------------------------- commands */

/* Where a command's callback leaves its outcome: on the caller's stack,
 * which is safe because every path out of client_call() either saw the
 * callback run or cancels the command (which runs it). */
typedef struct call_slot {
    bool done;
    bool want_value; /* the caller wants the value (or the whole reply) */
    bool whole;      /* raw request: the whole reply message, errors included */
    int status;
    qmp_error error;
    json_object *value;
} call_slot;

static void call_on_reply(qmp_session *s, qmp_reply *r, void *userdata)
{
    call_slot *slot = userdata;
    size_t len = 0;

    (void)s;
    slot->done = true;
    if (slot->whole && qmp_reply_text(r, &len) != NULL) {
        slot->status = 0;
        if (slot->want_value) {
            slot->value = qmp_reply_to_json(r);
            if (slot->value == NULL)
                slot->status = qmp__error_set(&slot->error, -ENOMEM, QMP_ERR_NOMEM,
                                              "out of memory decoding the reply");
        }
        return;
    }
    slot->status = qmp_reply_status(r);
    if (slot->status == 0) {
        if (slot->want_value) {
            int q = qmp_reply_get_return(r, &slot->value);
            if (q < 0)
                slot->status = qmp__error_set(&slot->error, q, QMP_ERR_NOMEM,
                                              "out of memory decoding the reply");
        }
        return;
    }
    const qmp_error *e = qmp_reply_error(r);
    if (e != NULL)
        slot->error = *e;
    else
        qmp__error_set(&slot->error, slot->status, QMP_ERR_PROTOCOL, "the command failed");
}

static bool slot_done(qmp_client *c, void *arg)
{
    (void)c;
    return ((call_slot *)arg)->done;
}

/* Duplicates the caller's descriptors for the session (see held_fds). */
static int hold_fds(qmp_client *c, const int *fds, size_t n_fds, int *dups, qmp_error *err)
{
    char eb[128];

    if (c->n_held_fds + n_fds > c->cap_held_fds) {
        size_t cap = c->n_held_fds + n_fds + QMP__MAX_FDS;
        int *p = realloc(c->held_fds, cap * sizeof(*p));
        if (p == NULL)
            return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
        c->held_fds = p;
        c->cap_held_fds = cap;
    }
    for (size_t i = 0; i < n_fds; i++) {
        dups[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
        if (dups[i] < 0) {
            int e = errno;
            for (size_t j = 0; j < i; j++)
                close(dups[j]);
            return qmp__error_set(err, -e, e == EBADF ? QMP_ERR_INVALID : QMP_ERR_SYSTEM,
                                  "cannot pass descriptor %d: %s", fds[i],
                                  qmp__strerror(e, eb, sizeof(eb)));
        }
    }
    return 0;
}

static int client_call(qmp_client *c, const char *what, json_object *raw, const char *command,
                       json_object *arguments, unsigned flags, int timeout_ms, const int *fds,
                       size_t n_fds, json_object **ret, qmp_error *err)
{
    int dups[QMP__MAX_FDS];
    uint64_t tag = 0;
    int r;

    if (timeout_ms == QMP_TIMEOUT_DEFAULT)
        timeout_ms = c->timeout_ms;
    int64_t deadline = qmp__deadline_after(timeout_ms);

    r = check_usable(c, err);
    if (r < 0)
        return r;
    if (n_fds > 0 && !c->is_unix)
        return qmp__error_set(err, -EOPNOTSUPP, QMP_ERR_INVALID,
                              "descriptors can be passed over unix sockets only, not to %s",
                              c->desc);
    if (n_fds > 0) {
        r = hold_fds(c, fds, n_fds, dups, err);
        if (r < 0)
            return r;
    }

    call_slot slot = {.want_value = ret != NULL, .whole = raw != NULL};
    if (raw != NULL)
        r = qmp_session_send_raw(c->session, raw, NULL, 0, call_on_reply, &slot, &tag, err);
    else
        r = qmp_session_send_command(c->session, command, arguments, flags, n_fds > 0 ? dups : NULL,
                                     n_fds, call_on_reply, &slot, &tag, err);
    if (r < 0) {
        for (size_t i = 0; i < n_fds; i++)
            close(dups[i]);
        return r;
    }
    for (size_t i = 0; i < n_fds; i++)
        c->held_fds[c->n_held_fds++] = dups[i];

    qmp_error run_err = QMP_ERROR_INIT;
    r = client_run(c, deadline, slot_done, &slot, &run_err);
    if (!slot.done) {
        qmp_error why = QMP_ERROR_INIT;
        if (r == -ETIMEDOUT)
            qmp__error_set(&why, r, QMP_ERR_TIMEOUT, "no reply to %s%s%s from %s within %d ms",
                           what ? "" : "'", what ? what : command, what ? "" : "'", c->desc,
                           timeout_ms);
        else
            why = run_err;
        /* The late reply, if any, is dropped by the session; the
         * connection stays usable. */
        qmp_session_cancel(c->session, tag, &why);
        if (!slot.done) {
            slot.status = why.code;
            slot.error = why;
        }
    }
    /* The slot's callback may have run before client_run() noticed the
     * failure it reports; sync so c->fail is current. */
    sync_failure(c);

    if (slot.status == 0) {
        if (ret != NULL)
            *ret = slot.value;
        else
            json_object_put(slot.value);
        return 0;
    }
    json_object_put(slot.value);
    if (slot.error.category != QMP_ERR_COMMAND && c->failed)
        qmp__error_copy(err, &c->fail); /* the same error, naming the address */
    else
        qmp__error_copy(err, &slot.error);
    return slot.status;
}

static int check_timeout_arg(int timeout_ms, qmp_error *err)
{
    if (timeout_ms < QMP_TIMEOUT_DEFAULT)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid timeout %d ms", timeout_ms);
    return 0;
}

int qmp_client_execute_full(qmp_client *c, const char *command, json_object *arguments,
                            unsigned flags, int timeout_ms, const int *fds, size_t n_fds,
                            json_object **ret_return, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    if (command == NULL || *command == '\0')
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no command name given");
    if ((flags & ~QMP_EXEC_OOB) != 0)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "unknown flags 0x%x", flags);
    int r = check_timeout_arg(timeout_ms, err);
    if (r < 0)
        return r;
    if (n_fds > QMP__MAX_FDS)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "too many descriptors (%zu, at most %d)", n_fds, QMP__MAX_FDS);
    if (n_fds > 0 && fds == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no descriptor array given");
    for (size_t i = 0; i < n_fds; i++) {
        if (fds[i] < 0)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid descriptor %d", fds[i]);
    }
    /* what NULL: the timeout message names the command. */
    return client_call(c, NULL, NULL, command, arguments, flags, timeout_ms, fds, n_fds, ret_return,
                       err);
}

int qmp_client_execute(qmp_client *c, const char *command, json_object *arguments,
                       json_object **ret_return, qmp_error *err)
{
    return qmp_client_execute_full(c, command, arguments, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                   ret_return, err);
}

int qmp_client_command(qmp_client *c, json_object **ret_return, qmp_error *err, const char *command,
                       const char *args_template, ...)
{
    json_object *args = NULL;

    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    if (command == NULL || *command == '\0')
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no command name given");
    if (args_template != NULL) {
        va_list ap;
        va_start(ap, args_template);
        int r = qmp_json_vbuild(&args, err, args_template, ap);
        va_end(ap);
        if (r < 0)
            return r;
    }
    int r = qmp_client_execute(c, command, args, ret_return, err);
    json_object_put(args);
    return r;
}

int qmp_client_send_raw(qmp_client *c, json_object *message, int timeout_ms,
                        json_object **ret_reply, qmp_error *err)
{
    char what[96];
    json_object *name = NULL;

    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    if (message == NULL || !json_object_is_type(message, json_type_object))
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "the message must be a JSON object");
    int r = check_timeout_arg(timeout_ms, err);
    if (r < 0)
        return r;
    if ((json_object_object_get_ex(message, "execute", &name) ||
         json_object_object_get_ex(message, "exec-oob", &name)) &&
        json_object_is_type(name, json_type_string))
        snprintf(what, sizeof(what), "'%s'", json_object_get_string(name));
    else
        snprintf(what, sizeof(what), "the request");
    return client_call(c, what, message, NULL, NULL, 0, timeout_ms, NULL, 0, ret_reply, err);
}

/* ---------------------------------------------------------------- events */

static bool waiter_done(qmp_client *c, void *arg)
{
    (void)c;
    return ((event_waiter *)arg)->found != NULL;
}

static int client_wait_event(qmp_client *c, const char *name, json_object *match, int timeout_ms,
                             qmp_event **ret_event, qmp_error *err)
{
    if (c == NULL || ret_event == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              c == NULL ? "no client given" : "no event result given");
    int r = check_timeout_arg(timeout_ms, err);
    if (r < 0)
        return r;
    r = check_fork(c, err);
    if (r < 0)
        return r;
    if (timeout_ms == QMP_TIMEOUT_DEFAULT)
        timeout_ms = c->timeout_ms;
    int64_t deadline = qmp__deadline_after(timeout_ms);

    /* Queued events first, even after a close or a failure: they arrived
     * before it. */
    for (size_t i = 0; i < c->evq_len; i++) {
        if (event_matches(*evq_at(c, i), name, match)) {
            *ret_event = evq_take(c, i);
            return 0;
        }
    }
    r = check_usable(c, err);
    if (r < 0)
        return r;

    event_waiter w = {.name = name, .match = match, .found = NULL};
    qmp_error run_err = QMP_ERROR_INIT;
    c->waiter = &w;
    r = client_run(c, deadline, waiter_done, &w, &run_err);
    c->waiter = NULL;
    if (w.found != NULL) {
        *ret_event = w.found;
        return 0;
    }
    if (r != -ETIMEDOUT) {
        qmp__error_copy(err, &run_err);
        return r;
    }
    const char *how = match != NULL ? " with matching data" : "";
    if (timeout_ms == 0)
        return qmp__error_set(err, -EAGAIN, QMP_ERR_TIMEOUT, "no %s%sevent%s from %s yet",
                              name != NULL ? name : "", name != NULL ? " " : "", how, c->desc);
    return qmp__error_set(err, -ETIMEDOUT, QMP_ERR_TIMEOUT, "no %s%sevent%s from %s within %d ms",
                          name != NULL ? name : "", name != NULL ? " " : "", how, c->desc,
                          timeout_ms);
}

int qmp_client_next_event(qmp_client *c, int timeout_ms, qmp_event **ret_event, qmp_error *err)
{
    return client_wait_event(c, NULL, NULL, timeout_ms, ret_event, err);
}

int qmp_client_wait_event(qmp_client *c, const char *name, json_object *match, int timeout_ms,
                          qmp_event **ret_event, qmp_error *err)
{
    return client_wait_event(c, name, match, timeout_ms, ret_event, err);
}

size_t qmp_client_events_queued(const qmp_client *c)
{
    return c != NULL ? c->evq_len : 0;
}

uint64_t qmp_client_events_lost(const qmp_client *c)
{
    return c != NULL ? c->events_lost : 0;
}

uint64_t qmp_client_reset_events_lost(qmp_client *c)
{
    if (c == NULL)
        return 0;
    uint64_t n = c->events_lost;
    c->events_lost = 0;
    return n;
}
