/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp adapter for libevent 2: drives a non-blocking qmp_client from a
 * struct event_base.  Header-only: libqmp itself does not link libevent;
 * a program that includes this header links libevent (pkg-config
 * libevent).
 *
 *   qmp_libevent *h;
 *   qmp_client_new(&c);
 *   qmp_libevent_attach(c, base, &h);
 *   qmp_client_connect_async(c, "/run/qemu/qmp.sock", &err);
 *   event_base_dispatch(base);               (callbacks run from here)
 *   qmp_libevent_detach(h);
 *
 * A persistent event watches the client's socket for the events the
 * client asks for, and a timer event fires at the client's next
 * deadline.  The client's watch callback keeps
 * them up to date when the client connects, reconnects (a new
 * descriptor), closes (no descriptor) or starts a call, and so does each
 * dispatch after qmp_client_process().  Events are pending only while
 * there is something to wait for, so event_base_dispatch() returns once
 * the client is closed and nothing else is pending.
 *
 * The base must be run by the thread that uses the client.  Needs
 * libevent 2.1 or later (a callback may free its own event).  Not for a
 * base made with EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST: that mode merges
 * the delete and add that re-register a socket reopened under the same
 * descriptor number.
 */
#ifndef QMP_ADAPTERS_LIBEVENT_H
#define QMP_ADAPTERS_LIBEVENT_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <event2/event.h>

#include <qmp/client.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Delay between retries after a failure to watch the socket (the first
 * retry is on the next loop iteration). */
#define QMP_LIBEVENT_RETRY_MS 10

/* The attachment; fields are private to this header. */
typedef struct qmp_libevent {
    struct event_base *base;
    qmp_client *client; /* a reference */
    struct event *io;   /* EV_PERSIST and EV_READ and/or EV_WRITE on fd */
    struct event *timer;
    int fd; /* descriptor io is set up for, -1 when none */
    int io_on;
    short io_events;
    unsigned retries;
    int recheck;    /* re-add the events at the next dispatch */
    unsigned depth; /* dispatches in progress */
    int detached;
} qmp_libevent;

static inline void qmp_libevent__on_event(evutil_socket_t fd, short what, void *arg);

/*
 * Brings the events and the timer up to date with the client.  force
 * re-adds unchanged events too: the client may have closed and reopened
 * its socket under the same number, which libevent cannot notice.
 *
 * libevent counts the events of each descriptor number and tells the
 * kernel only about the first one added and the last one deleted.  When
 * another client's socket closed inside a dispatch and this client got
 * the number before the other's events were deleted (a socket opened in
 * a callback), the first add here changes nothing in the kernel, which
 * dropped the old registration with the old socket.  So events on a new
 * number are added again at the next dispatch, which comes soon (the
 * timer is due at once) and after the other client's clean-up.
 */
static inline void qmp_libevent__sync(qmp_libevent *h, int force)
{
    int fd, ev, failed = 0, ms;
    short want = 0;

    if (h->detached)
        return;
    fd = qmp_client_get_fd(h->client);
    ev = qmp_client_get_events(h->client);
    if (ev & POLLIN)
        want |= EV_READ;
    if (ev & POLLOUT)
        want |= EV_WRITE;
    if (fd < 0 || want == 0) {
        fd = -1;
        want = 0;
    }

    /* One event for both directions: deleting it removes the descriptor
     * from the kernel's set outright, which libevent does quietly even
     * when the client closed it already (changing it to fewer events
     * would be a modification, which libevent reports on stderr). */
    if (h->io_on && (force || fd != h->fd || want != h->io_events)) {
        event_del(h->io);
        h->io_on = 0;
    }
    if (fd >= 0 && fd != h->fd)
        h->recheck = 1;
    h->fd = fd;
    if (fd >= 0 && !h->io_on) {
        /* Not pending, so it may be re-targeted. */
        event_assign(h->io, h->base, fd, (short)(want | EV_PERSIST), qmp_libevent__on_event, h);
        if (event_add(h->io, NULL) == 0) {
            h->io_on = 1;
            h->io_events = want;
        } else {
            failed = 1;
        }
    }

    /* Milliseconds to the next deadline, rounded up; -1 for none. */
    ms = qmp_client_get_timeout_ms(h->client);
    if (failed) {
        int retry = h->retries++ > 0 ? QMP_LIBEVENT_RETRY_MS : 0;
        if (ms < 0 || retry < ms)
            ms = retry;
    } else {
        h->retries = 0;
    }
    if (h->recheck)
        ms = 0;
    if (ms < 0) {
        event_del(h->timer);
    } else {
        struct timeval tv;
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000;
        /* Re-adding a pending timer reschedules it; if even that fails,
         * run the timer's callback on the next round. */
        if (event_add(h->timer, &tv) < 0)
            event_active(h->timer, EV_TIMEOUT, 0);
    }
}

static inline void qmp_libevent__on_event(evutil_socket_t fd, short what, void *arg)
{
    qmp_libevent *h = (qmp_libevent *)arg;
    /* A callback may detach (and so drop the adapter's reference). */
    qmp_client *c = qmp_client_ref(h->client);

    (void)fd;
    (void)what;
    h->depth++;
    qmp_client_process(c, NULL);
    h->depth--;
    if (!h->detached) {
        int recheck = h->recheck;
        h->recheck = 0;
        qmp_libevent__sync(h, recheck);
    } else if (h->depth == 0) {
        free(h);
    }
    qmp_client_unref(c);
}

static inline void qmp_libevent__on_watch(qmp_client *c, void *userdata)
{
    (void)c;
    qmp_libevent__sync((qmp_libevent *)userdata, 1);
}

static inline void qmp_libevent__free_events(qmp_libevent *h)
{
    /* event_free() deletes a pending event first. */
    if (h->io != NULL)
        event_free(h->io);
    if (h->timer != NULL)
        event_free(h->timer);
    h->io = h->timer = NULL;
}

/*
 * Attaches c to base.  c may be unconnected, connecting or connected; it
 * is watched whenever it has a socket.  The adapter takes a reference to
 * c and sets c's watch callback, which must not be changed until
 * qmp_libevent_detach().  Attach a client to one loop at a time.
 *
 * *ret_handle is owned by the caller and released by
 * qmp_libevent_detach().
 *
 * Returns 0, -EINVAL (an argument is NULL), -ENOMEM.
 */
static inline int qmp_libevent_attach(qmp_client *c, struct event_base *base,
                                      qmp_libevent **ret_handle)
{
    qmp_libevent *h;

    if (c == NULL || base == NULL || ret_handle == NULL)
        return -EINVAL;
    h = (qmp_libevent *)calloc(1, sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    h->base = base;
    h->fd = -1;
    h->io = event_new(base, -1, EV_READ | EV_PERSIST, qmp_libevent__on_event, h);
    h->timer = event_new(base, -1, 0, qmp_libevent__on_event, h);
    if (h->io == NULL || h->timer == NULL) {
        qmp_libevent__free_events(h);
        free(h);
        return -ENOMEM;
    }
    h->client = qmp_client_ref(c);
    qmp_client_set_watch_callback(c, qmp_libevent__on_watch, h);
    qmp_libevent__sync(h, 1);
    *ret_handle = h;
    return 0;
}

/*
 * Detaches the client: clears its watch callback, frees the adapter's
 * events and drops the adapter's reference to the client.  The
 * connection stays as it is; close it or unref the client as usual.  May
 * be called from the client's callbacks.  Accepts NULL.
 */
static inline void qmp_libevent_detach(qmp_libevent *h)
{
    qmp_client *c;

    if (h == NULL || h->detached)
        return;
    h->detached = 1;
    qmp_client_set_watch_callback(h->client, NULL, NULL);
    qmp_libevent__free_events(h);
    c = h->client;
    h->client = NULL;
    if (h->depth == 0)
        free(h); /* else the dispatch in progress frees it */
    qmp_client_unref(c);
}

#ifdef __cplusplus
}
#endif

#endif /* QMP_ADAPTERS_LIBEVENT_H */
