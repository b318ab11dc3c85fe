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
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
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

/* An asynchronous call (qmp_client_execute_async()) awaiting its outcome. */
typedef struct async_call {
    qmp_client *c;
    uint64_t tag;
    int64_t deadline; /* QMP__NO_DEADLINE: none */
    size_t heap_idx;  /* position in the deadline heap, SIZE_MAX: not there */
    int timeout_ms;
    qmp_call_fn cb;
    void *userdata;
    char command[48]; /* for the timeout message (truncated) */
} async_call;

typedef struct subscription {
    uint64_t id;
    char *name;             /* NULL: every event */
    qmp_client_event_fn cb; /* NULL: unsubscribed while callbacks ran */
    void *userdata;
} subscription;

/* What qmp_client_wait_event() is looking for while it reads. */
typedef struct event_waiter {
    const char *name;   /* NULL: any */
    json_object *match; /* NULL: any data */
    qmp_event *found;   /* new reference once matched */
    struct event_waiter *next;
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
    event_waiter *waiters; /* threads in qmp_client_wait_event() */

    /* Thread-safe mode (qmp_client_set_thread_safe()). */
    bool thread_safe;
    bool reader_busy;      /* a thread polls the socket for everyone */
    int wake_fd;           /* eventfd that makes the reader poll again */
    pthread_mutex_t mutex; /* recursive: callbacks call back in */
    pthread_cond_t cond;   /* broadcast after every read */

    /* Non-blocking use. */
    unsigned max_in_flight;
    unsigned in_callback; /* user callbacks running (blocking calls refused) */
    bool connecting;      /* asynchronous connect or handshake in progress */
    bool tcp_connecting;  /* its connect() has not completed yet */
    bool was_open;        /* reached READY since the last connect */
    bool disconnect_reported;
    bool closed_by_caller; /* qmp_client_close(): not a failure */
    bool in_read;          /* client_read() is feeding rbuf to the session */
    int64_t connect_deadline;
    qmp_client_connect_fn connect_fn;
    void *connect_userdata;
    qmp_client_disconnect_fn disconnect_fn;
    void *disconnect_userdata;
    qmp_client_watch_fn watch_fn;
    void *watch_userdata;
    uint64_t progress; /* bumped by every read, write and timer */
    async_call **heap; /* min-heap of calls by deadline */
    size_t heap_len;
    size_t heap_cap;
    subscription *subs;
    size_t n_subs;
    size_t cap_subs;
    unsigned subs_busy; /* subscription callbacks running */
    bool subs_dirty;    /* entries removed while busy */
    uint64_t next_sub_id;
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

static bool client_deliver_to_subscriptions(qmp_client *c, qmp_event *ev);

/* The session's event callback.  While qmp_client_wait_event() waits,
 * its match is taken out here, before it could be pushed out of a full
 * queue by the events that follow it; subscriptions see every event; the
 * queue gets what nobody took. */
static void client_on_event(qmp_session *s, qmp_event *ev, void *userdata)
{
    qmp_client *c = userdata;
    bool taken = false;

    (void)s;
    /* Every waiting thread whose match it fits gets the event. */
    for (event_waiter *w = c->waiters; w != NULL; w = w->next) {
        if (w->found == NULL && event_matches(ev, w->name, w->match)) {
            /* Threads get their own copy: they decode its data lazily. */
            w->found = c->thread_safe ? qmp__event_dup(ev) : qmp_event_ref(ev);
            taken = w->found != NULL || taken;
        }
    }
    if (client_deliver_to_subscriptions(c, ev))
        taken = true;
    if (!taken)
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
    c->wake_fd = -1;
    c->timeout_ms = QMP_CLIENT_DEFAULT_TIMEOUT_MS;
    c->connect_timeout_ms = QMP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    c->evq_max = QMP_CLIENT_DEFAULT_EVENT_QUEUE_MAX;
    c->max_in_flight = QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT;
    c->next_sub_id = 1;
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
    /* While client_read() feeds it, it frees it afterwards. */
    if (!c->in_read)
        free(c->rbuf);
    c->rbuf = NULL;
    release_held_fds(c);
}

static void notify_watch(qmp_client *c);
static void client_end_connecting(qmp_client *c);

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

/* Atomic, as the calls of a thread-safe client hold references too. */
qmp_client *qmp_client_ref(qmp_client *c)
{
    if (c != NULL)
        __atomic_add_fetch(&c->n_ref, 1, __ATOMIC_RELAXED);
    return c;
}

qmp_client *qmp_client_unref(qmp_client *c)
{
    if (c == NULL || __atomic_sub_fetch(&c->n_ref, 1, __ATOMIC_ACQ_REL) > 0)
        return NULL;
    c->n_ref = 1; /* callbacks of pending calls may still see it */
    client_reset(c);
    for (size_t i = 0; i < c->n_subs; i++)
        free(c->subs[i].name);
    free(c->subs);
    free(c->heap);
    free(c->held_fds);
    if (c->thread_safe) {
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->mutex);
        close(c->wake_fd);
    }
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
    if (c->in_callback > 0)
        return qmp__error_set(err, -EBUSY, QMP_ERR_INVALID,
                              "blocking connect from inside a libqmp callback (use "
                              "qmp_client_connect_async)");
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
    if (c->failed || c->closed_by_caller || c->session == NULL ||
        qmp_session_get_state(c->session) != QMP_SESSION_FAILED)
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
    bool had_fd = c->fd >= 0;
    close_transport(c);
    if (had_fd)
        notify_watch(c);
}

/* Checks that c can run a command now: 0, -ENOTCONN, -ECHILD, or the
 * sticky error of a broken connection. */
static int check_usable(qmp_client *c, qmp_error *err)
{
    int r = check_fork(c, err);
    if (r < 0)
        return r;
    if (c->in_callback > 0)
        return qmp__error_set(err, -EBUSY, QMP_ERR_INVALID,
                              "blocking call from inside a libqmp callback");
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

static int run_shared(qmp_client *c, int64_t wake, bool want_out);
static void ts_lock(qmp_client *c);
static void ts_unlock(qmp_client *c);
static void ts_poke(qmp_client *c);
static int fire_timers(qmp_client *c);
static void report_disconnect(qmp_client *c);

/*
 * Reads what the socket holds and feeds it to the session: until the
 * socket is empty (a short read says so without another syscall), done()
 * holds, READ_BURST_MAX reads, EOF or an error (which fail the session).
 */
static void client_read(qmp_client *c, done_fn done, void *arg)
{
    for (unsigned i = 0; i < READ_BURST_MAX; i++) {
        char *buf = c->rbuf;
        qmp_session *session = c->session;
        ssize_t n = qmp__socket_recv(c->fd, buf, READ_BUF_SIZE);
        if (n >= 0)
            c->progress++;
        if (n > 0) {
            qmp_error ferr = QMP_ERROR_INIT;
            c->in_read = true;
            qmp_session_ref(session);
            int fr = qmp_session_feed(session, buf, (size_t)n, &ferr);
            c->in_read = false;
            if (c->rbuf != buf || c->session != session) {
                /* A callback closed (or reconnected) the client. */
                if (c->rbuf != buf)
                    free(buf);
                qmp_session_unref(session);
                return;
            }
            qmp_session_unref(session);
            if (fr < 0) {
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
            /* Commands held back by the in-flight limit may still carry
             * some of the descriptors. */
            if (qmp__session_queued_count(c->session) == 0)
                release_held_fds(c);
            return false;
        }
        ssize_t n = qmp__socket_send(c->fd, p, len, fds, n_fds);
        if (n > 0) {
            qmp_session_consume_output(c->session, (size_t)n);
            c->progress++;
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
        if (done(c, arg)) {
            /* The call's own outcome came first; a failure that came
             * with it is still reported to the loop's side. */
            report_disconnect(c);
            return 0;
        }
        if (c->closed_by_caller)
            /* A callback closed the client while this call waited. */
            return qmp__error_set(err, -ECANCELED, QMP_ERR_CANCELLED,
                                  "the connection was closed by the caller while waiting");
        if (c->failed) {
            qmp__error_copy(err, &c->fail);
            report_disconnect(c);
            return c->fail.code;
        }
        bool want_out = client_flush(c);
        if (qmp_session_get_state(c->session) == QMP_SESSION_FAILED)
            continue;
        /* Asynchronous calls time out during blocking ones too. */
        if (fire_timers(c) > 0)
            continue;

        if (qmp__deadline_remaining_ms(deadline) == 0 && !first)
            return -ETIMEDOUT;
        first = false;
        int64_t wake = deadline;
        if (c->heap_len > 0 && c->heap[0]->deadline < wake)
            wake = c->heap[0]->deadline;
        if (c->thread_safe) {
            int tr = run_shared(c, wake, want_out);
            if (tr < 0)
                return qmp__error_set(err, tr, tr == -ENOMEM ? QMP_ERR_NOMEM : QMP_ERR_SYSTEM,
                                      "cannot wait on %s: %s", c->desc,
                                      qmp__strerror(-tr, eb, sizeof(eb)));
            continue;
        }
        int tmo = qmp__deadline_remaining_ms(wake);

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

/* ------------------------------------------------------ thread-safe mode */

/*
 * In thread-safe mode every thread that waits does so through
 * run_shared(): one thread at a time (the reader) polls the socket with
 * the mutex released, then reads and routes what arrived for everyone
 * and wakes the others; the rest wait on the condition variable.  A
 * thread that queues output while the reader polls pokes wake_fd so the
 * reader polls for POLLOUT too.
 */
static void ts_lock(qmp_client *c)
{
    if (c->thread_safe)
        pthread_mutex_lock(&c->mutex);
}

static void ts_unlock(qmp_client *c)
{
    if (c->thread_safe)
        pthread_mutex_unlock(&c->mutex);
}

static void ts_poke(qmp_client *c)
{
    if (c->thread_safe && c->reader_busy) {
        uint64_t one = 1;
        ssize_t n = write(c->wake_fd, &one, sizeof(one));
        (void)n; /* a full counter wakes the reader just as well */
    }
}

/* Waits once (as reader or follower) until wake at most.  Returns 0 or a
 * negative errno from poll(). */
static int run_shared(qmp_client *c, int64_t wake, bool want_out)
{
    if (want_out)
        ts_poke(c);
    if (c->reader_busy) {
        if (wake == QMP__NO_DEADLINE) {
            pthread_cond_wait(&c->cond, &c->mutex);
        } else {
            struct timespec ts = {.tv_sec = wake / 1000000000, .tv_nsec = wake % 1000000000};
            pthread_cond_timedwait(&c->cond, &c->mutex, &ts);
        }
        return 0;
    }
    c->reader_busy = true;
    int fd = c->fd;
    struct pollfd pfd[2] = {
        {.fd = fd, .events = POLLIN | (want_out ? POLLOUT : 0)},
        {.fd = c->wake_fd, .events = POLLIN},
    };
    int tmo = qmp__deadline_remaining_ms(wake);
    pthread_mutex_unlock(&c->mutex);
    int n = poll(pfd, 2, tmo);
    int e = errno;
    pthread_mutex_lock(&c->mutex);
    c->reader_busy = false;
    if (n < 0 && e != EINTR) {
        pthread_cond_broadcast(&c->cond);
        return -e;
    }
    if (n > 0 && (pfd[1].revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(c->wake_fd, &v, sizeof(v));
        (void)r;
    }
    if (n > 0 && c->fd == fd && fd >= 0) {
        if (pfd[0].revents & POLLNVAL)
            abort_errno(c, "poll", EBADF);
        else if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
            client_read(c, NULL, NULL);
    }
    pthread_cond_broadcast(&c->cond);
    return 0;
}

int qmp_client_set_thread_safe(qmp_client *c, int enable)
{
    if (c == NULL || enable == 0)
        return c == NULL || !c->thread_safe ? (c == NULL ? -EINVAL : 0) : -EBUSY;
    if (c->thread_safe)
        return 0;
    if (c->fd >= 0 || c->connecting)
        return -EBUSY;
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0)
        return -errno;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    int r = pthread_mutex_init(&c->mutex, &ma);
    pthread_mutexattr_destroy(&ma);
    if (r != 0) {
        close(fd);
        return -r;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    r = pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (r != 0) {
        pthread_mutex_destroy(&c->mutex);
        close(fd);
        return -r;
    }
    c->wake_fd = fd;
    c->thread_safe = true;
    return 0;
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
    if (r == 0)
        r = qmp_session_set_max_in_flight(s, c->max_in_flight);
    return r;
}

/* Forgets the old connection and sets up a session over fd (taken over,
 * also on failure).  No I/O yet. */
static int attach_start(qmp_client *c, int fd, bool is_unix, const char *desc, qmp_error *err)
{
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
    c->disconnect_reported = false;
    c->closed_by_caller = false;
    qmp__log(&c->log, QMP_LOG_DEBUG, "connected to %s, waiting for the QMP greeting", desc);
    return 0;
}

static void handshake_succeeded(qmp_client *c)
{
    c->open = true;
    c->was_open = true;
    if (qmp__log_enabled(&c->log, QMP_LOG_DEBUG)) {
        int major = 0, minor = 0, micro = 0;
        const qmp_greeting *g = qmp_session_get_greeting(c->session);
        if (g != NULL)
            qmp_greeting_version(g, &major, &minor, &micro);
        qmp__log(&c->log, QMP_LOG_DEBUG, "QMP ready on %s (QEMU %d.%d.%d%s)", c->desc, major, minor,
                 micro, qmp_session_oob_enabled(c->session) ? ", oob" : "");
    }
}

/* Ends a failed handshake: e describes it (for r == -ETIMEDOUT it is
 * written here); the socket is closed, the session keeps the reason. */
static void handshake_failed(qmp_client *c, int r, qmp_error *e, int timeout_ms)
{
    if (!c->failed) {
        if (r == -ETIMEDOUT && qmp_session_get_state(c->session) == QMP_SESSION_GREETING)
            /* QEMU serves one client per monitor; the kernel accepts a
             * second one that then waits, silent, for its turn. */
            qmp__error_set(e, r, QMP_ERR_TIMEOUT,
                           "no QMP greeting from %s within %d ms (is another client connected?)",
                           c->desc, timeout_ms);
        else if (r == -ETIMEDOUT)
            qmp__error_set(e, r, QMP_ERR_TIMEOUT,
                           "no reply to qmp_capabilities from %s within %d ms", c->desc,
                           timeout_ms);
        /* Fail the session too, so it holds the reason; its greeting (if
         * any) stays readable until the next connect. */
        qmp_session_abort(c->session, e);
        bool had_fd = c->fd >= 0;
        close_transport(c);
        if (had_fd)
            notify_watch(c);
    }
    c->failed = false;
    qmp__log(&c->log, QMP_LOG_DEBUG, "%s", e->message);
}

int qmp__client_attach(qmp_client *c, int fd, bool is_unix, const char *desc, int64_t deadline,
                       int timeout_ms, qmp_error *err)
{
    qmp_error e = QMP_ERROR_INIT;

    int r = attach_start(c, fd, is_unix, desc, err);
    if (r < 0)
        return r;
    ts_lock(c); /* client_run() expects it in thread-safe mode */
    r = client_run(c, deadline, handshake_done, NULL, &e);
    ts_unlock(c);
    if (r == 0) {
        handshake_succeeded(c);
        notify_watch(c);
        return 0;
    }
    handshake_failed(c, r, &e, timeout_ms);
    qmp__error_copy(err, &e);
    return r;
}

static int connect_async_attach(qmp_client *c, int fd, bool is_unix, bool in_progress,
                                const char *desc, int64_t deadline, qmp_error *err);

/*
 * Both connects: parse, forget the old connection, open the socket, then
 * run the handshake to the end (blocking) or start it (async, where the
 * socket's connect may still be in progress).
 */
static int connect_address(qmp_client *c, const char *address, bool async, qmp_error *err)
{
    qmp_error e = QMP_ERROR_INIT;
    qmp__address a;
    int fd = -1;
    bool is_unix = false;

    /* The deadline starts now: name resolution and connect count too. */
    int64_t deadline = qmp__deadline_after(c->connect_timeout_ms);
    int r = qmp__address_parse(address, false, &a, err);
    if (r < 0)
        goto out;
    if (a.kind == QMP__ADDR_FD && a.fd == c->fd && c->fd >= 0) {
        r = qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "%s is already this client's socket",
                           a.desc);
        goto out;
    }
    client_reset(c);
    qmp__log(&c->log, QMP_LOG_DEBUG, "connecting to %s%s", a.desc,
             async ? " (asynchronously)" : "");
    r = qmp__socket_connect(&a, async ? QMP__DEADLINE_ASYNC : deadline, c->connect_timeout_ms,
                            &c->log, &fd, &is_unix, &e);
    if (r < 0) {
        qmp__log(&c->log, QMP_LOG_DEBUG, "%s", e.message);
        qmp__error_copy(err, &e);
        goto out;
    }
    if (async)
        r = connect_async_attach(c, fd, is_unix, r == 1, a.desc, deadline, err);
    else
        r = qmp__client_attach(c, fd, is_unix, a.desc, deadline, c->connect_timeout_ms, err);
out:
    qmp__address_clear(&a);
    return r;
}

int qmp_client_connect(qmp_client *c, const char *address, qmp_error *err)
{
    int r = qmp__client_check(c, err);
    if (r < 0)
        return r;
    return connect_address(c, address, false, err);
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
    bool had_fd = c->fd >= 0;
    if (had_fd)
        qmp__log(&c->log, QMP_LOG_DEBUG, "closing the connection to %s", c->desc);
    close_transport(c);
    /* Loops drop the old descriptor before a callback below could open a
     * new socket under the same number. */
    if (had_fd)
        notify_watch(c);
    c->open = false;
    c->was_open = false;
    c->failed = false;
    bool was_connecting = c->connecting;
    client_end_connecting(c);
    /* Calls still pending end now, with their callbacks, and nothing more
     * is routed (a callback may close while the rest of a read waits to
     * be parsed).  That is no failure of the connection. */
    c->closed_by_caller = c->session != NULL;
    if (c->session != NULL && qmp_session_get_state(c->session) != QMP_SESSION_FAILED) {
        qmp_error why;
        qmp__error_set(&why, -ECANCELED, QMP_ERR_CANCELLED,
                       "the connection to %s was closed by the caller", c->desc);
        c->in_callback++;
        qmp_session_abort(c->session, &why);
        c->in_callback--;
    }
    /* An asynchronous connect in progress ends too, and says so. */
    if (was_connecting && c->connect_fn != NULL) {
        qmp_error why;
        qmp__error_set(&why, -ECANCELED, QMP_ERR_CANCELLED,
                       "the connect to %s was cancelled by the caller", c->desc);
        c->in_callback++;
        c->connect_fn(c, why.code, &why, c->connect_userdata);
        c->in_callback--;
    }
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

static int client_call_locked(qmp_client *c, const char *what, json_object *raw,
                              const char *command, json_object *arguments, unsigned flags,
                              int timeout_ms, const int *fds, size_t n_fds, json_object **ret,
                              qmp_error *err)
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

static int client_call(qmp_client *c, const char *what, json_object *raw, const char *command,
                       json_object *arguments, unsigned flags, int timeout_ms, const int *fds,
                       size_t n_fds, json_object **ret, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    qmp_client_ref(c);
    ts_lock(c);
    int r = client_call_locked(c, what, raw, command, arguments, flags, timeout_ms, fds, n_fds, ret,
                               err);
    ts_unlock(c);
    qmp_client_unref(c);
    return r;
}

static int check_timeout_arg(int timeout_ms, qmp_error *err)
{
    if (timeout_ms < QMP_TIMEOUT_DEFAULT)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid timeout %d ms", timeout_ms);
    return 0;
}

static int check_call_args(const char *command, unsigned flags, int timeout_ms, const int *fds,
                           size_t n_fds, qmp_error *err);

int qmp_client_execute_full(qmp_client *c, const char *command, json_object *arguments,
                            unsigned flags, int timeout_ms, const int *fds, size_t n_fds,
                            json_object **ret_return, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    int r = check_call_args(command, flags, timeout_ms, fds, n_fds, err);
    if (r < 0)
        return r;
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

static int client_wait_event_locked(qmp_client *c, const char *name, json_object *match,
                                    int timeout_ms, qmp_event **ret_event, qmp_error *err)
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

    event_waiter w = {.name = name, .match = match, .found = NULL, .next = c->waiters};
    qmp_error run_err = QMP_ERROR_INIT;
    c->waiters = &w;
    r = client_run(c, deadline, waiter_done, &w, &run_err);
    for (event_waiter **pw = &c->waiters; *pw != NULL; pw = &(*pw)->next) {
        if (*pw == &w) {
            *pw = w.next;
            break;
        }
    }
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

static int client_wait_event(qmp_client *c, const char *name, json_object *match, int timeout_ms,
                             qmp_event **ret_event, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    qmp_client_ref(c);
    ts_lock(c);
    int r = client_wait_event_locked(c, name, match, timeout_ms, ret_event, err);
    ts_unlock(c);
    qmp_client_unref(c);
    return r;
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
    if (c == NULL)
        return 0;
    /* The lock is not part of the client's logical state. */
    qmp_client *m = (qmp_client *)c;
    ts_lock(m);
    size_t n = c->evq_len;
    ts_unlock(m);
    return n;
}

uint64_t qmp_client_events_lost(const qmp_client *c)
{
    if (c == NULL)
        return 0;
    qmp_client *m = (qmp_client *)c;
    ts_lock(m);
    uint64_t n = c->events_lost;
    ts_unlock(m);
    return n;
}

uint64_t qmp_client_reset_events_lost(qmp_client *c)
{
    if (c == NULL)
        return 0;
    ts_lock(c);
    uint64_t n = c->events_lost;
    c->events_lost = 0;
    ts_unlock(c);
    return n;
}

/* ------------------------------------------------------------ non-blocking */

static void notify_watch(qmp_client *c)
{
    if (c->watch_fn != NULL)
        c->watch_fn(c, c->watch_userdata);
}

void qmp_client_set_connect_callback(qmp_client *c, qmp_client_connect_fn fn, void *userdata)
{
    if (c == NULL)
        return;
    c->connect_fn = fn;
    c->connect_userdata = userdata;
}

void qmp_client_set_disconnect_callback(qmp_client *c, qmp_client_disconnect_fn fn, void *userdata)
{
    if (c == NULL)
        return;
    c->disconnect_fn = fn;
    c->disconnect_userdata = userdata;
}

void qmp_client_set_watch_callback(qmp_client *c, qmp_client_watch_fn fn, void *userdata)
{
    if (c == NULL)
        return;
    c->watch_fn = fn;
    c->watch_userdata = userdata;
}

int qmp_client_set_max_in_flight(qmp_client *c, unsigned n)
{
    if (c == NULL || n < 1 || n > 1024)
        return -EINVAL;
    c->max_in_flight = n;
    if (c->session != NULL)
        qmp_session_set_max_in_flight(c->session, n);
    notify_watch(c);
    return 0;
}

/* Reports a broken established connection once, after the calls' own
 * callbacks ran (the session did that when it failed). */
static void report_disconnect(qmp_client *c)
{
    if (!c->failed || !c->was_open || c->disconnect_reported)
        return;
    c->disconnect_reported = true;
    if (c->disconnect_fn != NULL) {
        qmp_error e = c->fail;
        c->in_callback++;
        c->disconnect_fn(c, &e, c->disconnect_userdata);
        c->in_callback--;
    }
}

/* ------------------------------------------------------- deadline heap */

static void heap_set(qmp_client *c, size_t i, async_call *call)
{
    c->heap[i] = call;
    call->heap_idx = i;
}

static void heap_up(qmp_client *c, size_t i)
{
    async_call *call = c->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (c->heap[parent]->deadline <= call->deadline)
            break;
        heap_set(c, i, c->heap[parent]);
        i = parent;
    }
    heap_set(c, i, call);
}

static void heap_down(qmp_client *c, size_t i)
{
    async_call *call = c->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = call->deadline;
        if (l < c->heap_len && c->heap[l]->deadline < best) {
            m = l;
            best = c->heap[l]->deadline;
        }
        if (l + 1 < c->heap_len && c->heap[l + 1]->deadline < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(c, i, c->heap[m]);
        i = m;
    }
    heap_set(c, i, call);
}

static int heap_push(qmp_client *c, async_call *call)
{
    if (c->heap_len == c->heap_cap) {
        size_t cap = c->heap_cap ? c->heap_cap * 2 : 16;
        async_call **h = realloc(c->heap, cap * sizeof(*h));
        if (h == NULL)
            return -ENOMEM;
        c->heap = h;
        c->heap_cap = cap;
    }
    c->heap[c->heap_len] = call;
    call->heap_idx = c->heap_len++;
    heap_up(c, call->heap_idx);
    return 0;
}

static void heap_remove(qmp_client *c, async_call *call)
{
    size_t i = call->heap_idx;
    if (i == SIZE_MAX)
        return;
    call->heap_idx = SIZE_MAX;
    async_call *last = c->heap[--c->heap_len];
    if (i == c->heap_len)
        return;
    heap_set(c, i, last);
    heap_up(c, i);
    heap_down(c, last->heap_idx);
}

/* ------------------------------------------------------- async calls */

static void async_on_reply(qmp_session *s, qmp_reply *reply, void *userdata)
{
    async_call *call = userdata;
    qmp_client *c = call->c;

    (void)s;
    heap_remove(c, call);
    if (call->cb != NULL) {
        c->in_callback++;
        call->cb(c, reply, call->userdata);
        c->in_callback--;
    }
    free(call);
}

/* Ends the calls whose deadline passed; returns how many. */
static int fire_timers(qmp_client *c)
{
    int n = 0;

    if (c->heap_len == 0)
        return 0;
    int64_t now = qmp__now_ns();
    while (c->heap_len > 0 && c->heap[0]->deadline <= now) {
        async_call *call = c->heap[0];
        qmp_error why;
        qmp__error_set(&why, -ETIMEDOUT, QMP_ERR_TIMEOUT, "no reply to '%s' from %s within %d ms",
                       call->command, c->desc ? c->desc : "QEMU", call->timeout_ms);
        if (c->session == NULL || qmp_session_cancel(c->session, call->tag, &why) < 0) {
            /* Not known to the session (cannot happen): end it here. */
            qmp_reply r = {.tag = call->tag, .status = why.code, .error = &why};
            async_on_reply(c->session, &r, call);
        }
        c->progress++;
        n++;
    }
    return n;
}

/* Validates what execute_full and execute_async take alike. */
static int check_call_args(const char *command, unsigned flags, int timeout_ms, const int *fds,
                           size_t n_fds, qmp_error *err)
{
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
    return 0;
}

static int execute_async_locked(qmp_client *c, const char *command, json_object *arguments,
                                unsigned flags, int timeout_ms, const int *fds, size_t n_fds,
                                qmp_call_fn cb, void *userdata, uint64_t *ret_tag, qmp_error *err)
{
    int dups[QMP__MAX_FDS];

    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    int r = check_call_args(command, flags, timeout_ms, fds, n_fds, err);
    if (r < 0)
        return r;
    r = check_fork(c, err);
    if (r < 0)
        return r;
    sync_failure(c);
    if (c->failed) {
        qmp__error_copy(err, &c->fail);
        return c->fail.code;
    }
    if (!c->open || c->session == NULL)
        return qmp__error_set(err, -ENOTCONN, QMP_ERR_INVALID, "not connected");
    if (n_fds > 0 && !c->is_unix)
        return qmp__error_set(err, -EOPNOTSUPP, QMP_ERR_INVALID,
                              "descriptors can be passed over unix sockets only, not to %s",
                              c->desc);
    if (timeout_ms == QMP_TIMEOUT_DEFAULT)
        timeout_ms = c->timeout_ms;

    async_call *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    call->c = c;
    call->deadline = qmp__deadline_after(timeout_ms);
    call->heap_idx = SIZE_MAX;
    call->timeout_ms = timeout_ms;
    call->cb = cb;
    call->userdata = userdata;
    /* Kept for the timeout message only; a plain bounded copy is cheap. */
    size_t cl = strnlen(command, sizeof(call->command) - 1);
    memcpy(call->command, command, cl);
    call->command[cl] = '\0';
    if (call->deadline != QMP__NO_DEADLINE && heap_push(c, call) < 0) {
        free(call);
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    }
    if (n_fds > 0 && (r = hold_fds(c, fds, n_fds, dups, err)) < 0) {
        heap_remove(c, call);
        free(call);
        return r;
    }
    r = qmp_session_send_command(c->session, command, arguments, flags, n_fds > 0 ? dups : NULL,
                                 n_fds, async_on_reply, call, &call->tag, err);
    if (r < 0) {
        for (size_t i = 0; i < n_fds; i++)
            close(dups[i]);
        heap_remove(c, call);
        free(call);
        return r;
    }
    for (size_t i = 0; i < n_fds; i++)
        c->held_fds[c->n_held_fds++] = dups[i];
    if (ret_tag != NULL)
        *ret_tag = call->tag;
    ts_poke(c); /* a thread polling for everyone must write this too */
    notify_watch(c);
    return 0;
}

static int cancel_locked(qmp_client *c, uint64_t tag)
{
    if (c == NULL || c->session == NULL)
        return -ENOENT;
    c->in_callback++;
    int r = qmp_session_cancel(c->session, tag, NULL);
    c->in_callback--;
    if (r == 0)
        notify_watch(c);
    return r;
}

/* ------------------------------------------------------- subscriptions */

static int subscribe_locked(qmp_client *c, const char *name, qmp_client_event_fn cb, void *userdata,
                            uint64_t *ret_id)
{
    if (c == NULL || cb == NULL)
        return -EINVAL;
    if (c->n_subs == c->cap_subs) {
        size_t cap = c->cap_subs ? c->cap_subs * 2 : 4;
        subscription *n = realloc(c->subs, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        c->subs = n;
        c->cap_subs = cap;
    }
    char *copy = NULL;
    if (name != NULL && (copy = strdup(name)) == NULL)
        return -ENOMEM;
    uint64_t id = c->next_sub_id++;
    c->subs[c->n_subs++] = (subscription){id, copy, cb, userdata};
    if (ret_id != NULL)
        *ret_id = id;
    return 0;
}

static void subs_compact(qmp_client *c)
{
    size_t j = 0;
    for (size_t i = 0; i < c->n_subs; i++) {
        if (c->subs[i].cb != NULL)
            c->subs[j++] = c->subs[i];
    }
    c->n_subs = j;
    c->subs_dirty = false;
}

static int unsubscribe_locked(qmp_client *c, uint64_t id)
{
    if (c == NULL)
        return -ENOENT;
    for (size_t i = 0; i < c->n_subs; i++) {
        if (c->subs[i].id != id || c->subs[i].cb == NULL)
            continue;
        free(c->subs[i].name);
        c->subs[i].name = NULL;
        c->subs[i].cb = NULL;
        c->subs_dirty = true;
        if (c->subs_busy == 0)
            subs_compact(c);
        return 0;
    }
    return -ENOENT;
}

/* Hands ev to every matching subscription; true when one took it.
 * Subscriptions made by these callbacks see the next event, not this
 * one. */
static bool client_deliver_to_subscriptions(qmp_client *c, qmp_event *ev)
{
    bool taken = false;
    size_t n = c->n_subs;
    const char *name = qmp_event_name(ev);

    if (n == 0)
        return false;
    c->subs_busy++;
    for (size_t i = 0; i < n; i++) {
        subscription *sub = &c->subs[i]; /* re-read: callbacks may grow the array */
        if (sub->cb == NULL || (sub->name != NULL && strcmp(sub->name, name) != 0))
            continue;
        qmp_client_event_fn fn = sub->cb;
        void *ud = sub->userdata;
        taken = true;
        c->in_callback++;
        fn(c, ev, ud);
        c->in_callback--;
    }
    if (--c->subs_busy == 0 && c->subs_dirty)
        subs_compact(c);
    return taken;
}

/* ---------------------------------------------------- async connecting */

static void client_end_connecting(qmp_client *c)
{
    c->connecting = false;
    c->tcp_connecting = false;
}

/* Finishes an asynchronous handshake that succeeded or failed (r). */
static void connect_done(qmp_client *c, int r, qmp_error *e)
{
    int timeout_ms = c->connect_timeout_ms;

    client_end_connecting(c);
    if (r == 0)
        handshake_succeeded(c);
    else
        handshake_failed(c, r, e, timeout_ms);
    notify_watch(c);
    if (c->connect_fn != NULL) {
        c->in_callback++;
        c->connect_fn(c, r, r == 0 ? NULL : e, c->connect_userdata);
        c->in_callback--;
    }
}

/* Advances an asynchronous connect; called from qmp_client_process(). */
static void connect_step(qmp_client *c)
{
    qmp_error e = QMP_ERROR_INIT;
    char eb[128];

    if (c->tcp_connecting) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        if (poll(&pfd, 1, 0) > 0) {
            int r = qmp__socket_connect_result(c->fd);
            c->tcp_connecting = false;
            c->progress++;
            if (r < 0) {
                qmp__error_set(&e, r, QMP_ERR_CONNECT, "cannot connect to %s: %s", c->desc,
                               qmp__strerror(-r, eb, sizeof(eb)));
                connect_done(c, r, &e);
                return;
            }
        }
    }
    if (!c->tcp_connecting) {
        client_read(c, NULL, NULL);
        client_flush(c);
        sync_failure(c);
        if (c->failed) {
            qmp__error_copy(&e, &c->fail);
            connect_done(c, e.code, &e);
            return;
        }
        if (qmp_session_get_state(c->session) == QMP_SESSION_READY) {
            connect_done(c, 0, NULL);
            return;
        }
    }
    if (qmp__deadline_remaining_ms(c->connect_deadline) == 0) {
        if (c->tcp_connecting) {
            qmp__error_set(&e, -ETIMEDOUT, QMP_ERR_TIMEOUT, "cannot connect to %s within %d ms",
                           c->desc, c->connect_timeout_ms);
            qmp_session_abort(c->session, &e);
            close_transport(c);
            client_end_connecting(c);
            notify_watch(c);
            if (c->connect_fn != NULL) {
                c->in_callback++;
                c->connect_fn(c, e.code, &e, c->connect_userdata);
                c->in_callback--;
            }
            return;
        }
        connect_done(c, -ETIMEDOUT, &e);
    }
}

static int connect_async_attach(qmp_client *c, int fd, bool is_unix, bool in_progress,
                                const char *desc, int64_t deadline, qmp_error *err)
{
    int r = attach_start(c, fd, is_unix, desc, err);
    if (r < 0)
        return r;
    c->connecting = true;
    c->tcp_connecting = in_progress;
    c->connect_deadline = deadline;
    notify_watch(c);
    return 0;
}

int qmp_client_connect_async(qmp_client *c, const char *address, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    /* Allowed inside callbacks (a reconnect from the disconnect callback). */
    int r = check_fork(c, err);
    if (r < 0)
        return r;
    return connect_address(c, address, true, err);
}

int qmp_client_connect_fd_async(qmp_client *c, int fd, qmp_error *err)
{
    char desc[32];
    bool is_unix = false;

    if (fd < 0)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid descriptor %d", fd);
    if (c == NULL) {
        close(fd);
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    }
    int r = check_fork(c, err);
    if (r < 0) {
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
    return connect_async_attach(c, fd, is_unix, false, desc, deadline, err);
}

/* ---------------------------------------------------------- the loop API */

int qmp_client_get_events(const qmp_client *c)
{
    if (c == NULL || c->fd < 0)
        return 0;
    if (c->tcp_connecting)
        return POLLOUT;
    size_t len = 0;
    if (c->session != NULL)
        qmp_session_get_output(c->session, &len, NULL, NULL);
    return POLLIN | (len > 0 ? POLLOUT : 0);
}

static int64_t next_deadline(const qmp_client *c)
{
    int64_t d = QMP__NO_DEADLINE;
    if (c->connecting)
        d = c->connect_deadline;
    if (c->heap_len > 0 && c->heap[0]->deadline < d)
        d = c->heap[0]->deadline;
    return d;
}

int qmp_client_get_timeout(const qmp_client *c, uint64_t *ret_usec)
{
    if (c == NULL || ret_usec == NULL)
        return -EINVAL;
    int64_t d = next_deadline(c);
    /* Rounded up, so a loop that wakes then finds the deadline passed. */
    *ret_usec = d == QMP__NO_DEADLINE ? UINT64_MAX : (uint64_t)(d < 0 ? 0 : (d + 999) / 1000);
    return 0;
}

int qmp_client_get_timeout_ms(const qmp_client *c)
{
    if (c == NULL)
        return -1;
    return qmp__deadline_remaining_ms(next_deadline(c));
}

static int process_locked(qmp_client *c, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    if (c->in_callback > 0)
        return qmp__error_set(err, -EBUSY, QMP_ERR_INVALID,
                              "qmp_client_process called from a libqmp callback");
    int r = check_fork(c, err);
    if (r < 0)
        return r;

    qmp_client_ref(c);
    uint64_t before = c->progress;
    if (c->connecting) {
        connect_step(c);
    } else if (c->fd >= 0 && c->session != NULL) {
        client_read(c, NULL, NULL);
        sync_failure(c);
        if (!c->failed) {
            client_flush(c);
            sync_failure(c);
        }
    }
    if (!c->failed && c->session != NULL)
        fire_timers(c);
    sync_failure(c);
    if (c->failed) {
        report_disconnect(c);
        qmp__error_copy(err, &c->fail);
        r = c->fail.code;
    } else if (c->fd < 0 && !c->connecting) {
        r = qmp__error_set(err, -ENOTCONN, QMP_ERR_INVALID, "not connected");
    } else {
        r = c->progress != before;
    }
    qmp_client_unref(c);
    return r;
}

int qmp_client_execute_async(qmp_client *c, const char *command, json_object *arguments,
                             unsigned flags, int timeout_ms, const int *fds, size_t n_fds,
                             qmp_call_fn cb, void *userdata, uint64_t *ret_tag, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    ts_lock(c);
    int r = execute_async_locked(c, command, arguments, flags, timeout_ms, fds, n_fds, cb, userdata,
                                 ret_tag, err);
    ts_unlock(c);
    return r;
}

int qmp_client_cancel(qmp_client *c, uint64_t tag)
{
    if (c == NULL)
        return -ENOENT;
    qmp_client_ref(c);
    ts_lock(c);
    int r = cancel_locked(c, tag);
    ts_unlock(c);
    qmp_client_unref(c);
    return r;
}

int qmp_client_subscribe(qmp_client *c, const char *name, qmp_client_event_fn cb, void *userdata,
                         uint64_t *ret_id)
{
    if (c == NULL)
        return -EINVAL;
    ts_lock(c);
    int r = subscribe_locked(c, name, cb, userdata, ret_id);
    ts_unlock(c);
    return r;
}

int qmp_client_unsubscribe(qmp_client *c, uint64_t id)
{
    if (c == NULL)
        return -ENOENT;
    ts_lock(c);
    int r = unsubscribe_locked(c, id);
    ts_unlock(c);
    return r;
}

int qmp_client_process(qmp_client *c, qmp_error *err)
{
    if (c == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no client given");
    /* A callback may drop the caller's reference: keep c alive. */
    qmp_client_ref(c);
    ts_lock(c);
    int r = process_locked(c, err);
    if (c->thread_safe) {
        /* Replies this read may belong to threads waiting for them. */
        pthread_cond_broadcast(&c->cond);
        ts_poke(c);
    }
    ts_unlock(c);
    qmp_client_unref(c);
    return r;
}
