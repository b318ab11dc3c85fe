/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp adapter for libuv: drives a non-blocking qmp_client from a
 * uv_loop_t.  Header-only: libqmp itself does not link libuv; a program
 * that includes this header links libuv (pkg-config libuv).
 *
 *   qmp_uv *h;
 *   qmp_client_new(&c);
 *   qmp_uv_attach(c, uv_default_loop(), &h);
 *   qmp_client_connect_async(c, "/run/qemu/qmp.sock", &err);
 *   uv_run(uv_default_loop(), UV_RUN_DEFAULT);   (callbacks run from here)
 *   qmp_uv_detach(h);
 *
 * A uv_poll_t watches the client's socket for the events the client asks
 * for, and a uv_timer_t fires at the client's next deadline.  The
 * client's watch callback keeps both up to date when the client
 * connects, reconnects (a new descriptor: a new poll handle), closes (no
 * descriptor: no poll handle) or starts a call, and so does each
 * dispatch after qmp_client_process(), and a uv_prepare_t checks them
 * before each poll.  Handles are active (or, for the uv_prepare_t,
 * referenced) only while there is something to wait for, so
 * uv_run(UV_RUN_DEFAULT) returns once the client is closed and no other
 * handle is active.
 *
 * libuv refuses a second poll handle for a descriptor number that a
 * handle still watches; that happens for a moment when a callback
 * reconnects one client (or connects another) after a connection broke
 * and before its old handle was stopped.  The adapter then retries on the
 * next loop iteration.
 *
 * The loop must be run by the thread that uses the client.  <uv.h> needs
 * POSIX declarations: in a strict ISO C mode (-std=c99 rather than
 * gnu99) define _POSIX_C_SOURCE=200809L.
 */
#ifndef QMP_ADAPTERS_LIBUV_H
#define QMP_ADAPTERS_LIBUV_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include <qmp/client.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Delay between retries after a failure to watch the socket (the first
 * retry is on the next loop iteration). */
#define QMP_UV_RETRY_MS 10

/* The attachment; fields are private to this header. */
typedef struct qmp_uv {
    uv_loop_t *loop;
    qmp_client *client; /* a reference */
    uv_poll_t *poll;    /* NULL when no socket is watched; freed by its close callback */
    int poll_fd;
    int poll_events; /* UV_READABLE | UV_WRITABLE started, 0 when stopped */
    uv_timer_t *timer;
    uv_prepare_t *prepare; /* re-syncs before each poll; does not keep the loop alive */
    unsigned retries;
    unsigned depth; /* dispatches in progress */
    int detached;
} qmp_uv;

static inline void qmp_uv__free_handle(uv_handle_t *handle)
{
    free(handle);
}

static inline void qmp_uv__dispatch(qmp_uv *h);

static inline void qmp_uv__on_poll(uv_poll_t *poll, int status, int events)
{
    qmp_uv *h = (qmp_uv *)poll->data;

    (void)events;
    /* On an error libuv has stopped the handle (the client finds out
     * what happened in qmp_client_process()). */
    if (status < 0)
        h->poll_events = 0;
    qmp_uv__dispatch(h);
}

static inline void qmp_uv__on_timer(uv_timer_t *timer)
{
    qmp_uv__dispatch((qmp_uv *)timer->data);
}

/* Brings the poll handle and the timer up to date with the client.
 * force restarts an unchanged poll handle too: the client may have
 * closed and reopened its socket under the same number. */
static inline void qmp_uv__sync(qmp_uv *h, int force)
{
    int fd, ev, want = 0, failed = 0, ms;

    if (h->detached)
        return;
    fd = qmp_client_get_fd(h->client);
    ev = qmp_client_get_events(h->client);
    if (ev & POLLIN)
        want |= UV_READABLE;
    if (ev & POLLOUT)
        want |= UV_WRITABLE;
    if (fd < 0 || want == 0)
        fd = -1;

    if (h->poll != NULL && h->poll_fd != fd) {
        uv_close((uv_handle_t *)h->poll, qmp_uv__free_handle);
        h->poll = NULL;
    }
    if (fd >= 0 && h->poll == NULL) {
        uv_poll_t *p = (uv_poll_t *)malloc(sizeof(*p));
        if (p == NULL || uv_poll_init(h->loop, p, fd) < 0) {
            free(p);
            failed = 1;
        } else {
            p->data = h;
            h->poll = p;
            h->poll_fd = fd;
            h->poll_events = 0;
        }
    }
    if (h->poll != NULL && (force || want != h->poll_events)) {
        /* uv_poll_start() re-registers the descriptor with the kernel. */
        if (uv_poll_start(h->poll, want, qmp_uv__on_poll) < 0) {
            h->poll_events = 0;
            failed = 1;
        } else {
            h->poll_events = want;
        }
    }

    /* Milliseconds to the next deadline, rounded up; -1 for none. */
    ms = qmp_client_get_timeout_ms(h->client);
    if (failed) {
        int retry = h->retries++ > 0 ? QMP_UV_RETRY_MS : 0;
        if (ms < 0 || retry < ms)
            ms = retry;
    } else {
        h->retries = 0;
    }
    if (ms < 0) {
        uv_timer_stop(h->timer);
    } else {
        /* The timer counts from the loop's idea of now: refresh it. */
        uv_update_time(h->loop);
        uv_timer_start(h->timer, qmp_uv__on_timer, (uint64_t)ms, 0);
    }
}

/* Before libuv polls: catches a socket the client closed without telling
 * (libuv aborts when it registers a watcher on a closed descriptor). */
static inline void qmp_uv__on_prepare(uv_prepare_t *prepare)
{
    qmp_uv__sync((qmp_uv *)prepare->data, 0);
}

static inline void qmp_uv__on_watch(qmp_client *c, void *userdata)
{
    (void)c;
    qmp_uv__sync((qmp_uv *)userdata, 1);
}

static inline void qmp_uv__dispatch(qmp_uv *h)
{
    /* A callback may detach (and so drop the adapter's reference). */
    qmp_client *c = qmp_client_ref(h->client);

    h->depth++;
    qmp_client_process(c, NULL);
    h->depth--;
    if (!h->detached)
        qmp_uv__sync(h, 0);
    else if (h->depth == 0)
        free(h);
    qmp_client_unref(c);
}

/*
 * Attaches c to loop.  c may be unconnected, connecting or connected; it
 * is watched whenever it has a socket.  The adapter takes a reference to
 * c and sets c's watch callback, which must not be changed until
 * qmp_uv_detach().  Attach a client to one loop at a time.
 *
 * *ret_handle is owned by the caller and released by qmp_uv_detach().
 *
 * Returns 0, -EINVAL (an argument is NULL), -ENOMEM, or the error of
 * uv_prepare_init() as a negative errno.
 */
static inline int qmp_uv_attach(qmp_client *c, uv_loop_t *loop, qmp_uv **ret_handle)
{
    qmp_uv *h;
    int r;

    if (c == NULL || loop == NULL || ret_handle == NULL)
        return -EINVAL;
    h = (qmp_uv *)calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    h->timer = (uv_timer_t *)malloc(sizeof(*h->timer));
    h->prepare = (uv_prepare_t *)malloc(sizeof(*h->prepare));
    if (h->timer == NULL || h->prepare == NULL) {
        free(h->timer);
        free(h->prepare);
        free(h);
        return -ENOMEM;
    }
    r = uv_prepare_init(loop, h->prepare);
    if (r < 0) {
        free(h->timer);
        free(h->prepare);
        free(h);
        return r;
    }
    uv_timer_init(loop, h->timer); /* always succeeds */
    h->timer->data = h;
    h->prepare->data = h;
    uv_prepare_start(h->prepare, qmp_uv__on_prepare);
    uv_unref((uv_handle_t *)h->prepare);
    h->loop = loop;
    h->client = qmp_client_ref(c);
    h->poll_fd = -1;
    qmp_client_set_watch_callback(c, qmp_uv__on_watch, h);
    qmp_uv__sync(h, 1);
    *ret_handle = h;
    return 0;
}

/*
 * Detaches the client: clears its watch callback, closes the adapter's
 * libuv handles and drops the adapter's reference to the client.  The
 * connection stays as it is; close it or unref the client as usual.  May
 * be called from the client's callbacks.  The handles are freed by their
 * close callbacks, so run the loop (UV_RUN_NOWAIT is enough) before
 * uv_loop_close().  Accepts NULL.
 */
static inline void qmp_uv_detach(qmp_uv *h)
{
    qmp_client *c;

    if (h == NULL || h->detached)
        return;
    h->detached = 1;
    qmp_client_set_watch_callback(h->client, NULL, NULL);
    if (h->poll != NULL)
        uv_close((uv_handle_t *)h->poll, qmp_uv__free_handle);
    h->poll = NULL;
    uv_close((uv_handle_t *)h->timer, qmp_uv__free_handle);
    h->timer = NULL;
    uv_close((uv_handle_t *)h->prepare, qmp_uv__free_handle);
    h->prepare = NULL;
    c = h->client;
    h->client = NULL;
    if (h->depth == 0)
        free(h); /* else the dispatch in progress frees it */
    qmp_client_unref(c);
}

#ifdef __cplusplus
}
#endif

#endif /* QMP_ADAPTERS_LIBUV_H */
