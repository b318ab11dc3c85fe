/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Event loops that drive non-blocking clients in the tests, behind one
 * interface, so that the same scenarios run through qmp_loop and through
 * each header-only adapter.  Define ASYNC_DRIVER_GLIB, ASYNC_DRIVER_LIBUV
 * and/or ASYNC_DRIVER_LIBEVENT before including this header to get those
 * drivers (the program then links that library); the qmp_loop driver is
 * always there.
 *
 * iterate() runs one round of the loop, waiting at most timeout_ms for
 * something to happen (each driver adds a timer of its own for that), so
 * a test counts rounds to catch a loop that spins instead of waiting.
 */
#ifndef QMP_TEST_ASYNC_DRIVERS_H
#define QMP_TEST_ASYNC_DRIVERS_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <qmp/qmp.h>

#ifdef ASYNC_DRIVER_GLIB
#include <qmp/adapters/glib.h>
#endif
#ifdef ASYNC_DRIVER_LIBUV
#include <qmp/adapters/libuv.h>
#endif
#ifdef ASYNC_DRIVER_LIBEVENT
#include <qmp/adapters/libevent.h>
#endif

typedef struct async_driver {
    const char *name;
    /* Creates a loop; 0 or a negative errno. */
    int (*loop_new)(void **ret_loop);
    /* Frees a loop whose clients were all detached; 0, or -EBUSY when the
     * library reports something still attached. */
    int (*loop_free)(void *loop);
    /* Attaches c; *ret_handle is for detach(). */
    int (*attach)(void *loop, qmp_client *c, void **ret_handle);
    void (*detach)(void *loop, void *handle);
    /* One round, waiting at most timeout_ms (>= 0); 0 or a negative errno. */
    int (*iterate)(void *loop, int timeout_ms);
} async_driver;

static inline long long async_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Runs rounds until *counter reaches target or timeout_ms passed.
 * Returns the number of rounds, or -ETIMEDOUT (or a round's error).
 */
static inline int async_run_until(const async_driver *d, void *loop, const int *counter, int target,
                                  int timeout_ms)
{
    long long deadline = async_now_ms() + timeout_ms;
    int rounds = 0;

    while (*counter < target) {
        long long left = deadline - async_now_ms();
        int r;

        if (left <= 0)
            return -ETIMEDOUT;
        r = d->iterate(loop, (int)left);
        if (r < 0)
            return r;
        rounds++;
    }
    return rounds;
}

/* --------------------------------------------------------------- qmp_loop */

static inline int async_loop_new(void **ret)
{
    qmp_loop *l = NULL;
    int r = qmp_loop_new(&l);

    *ret = l;
    return r;
}

static inline int async_loop_free(void *loop)
{
    int busy = qmp_loop_client_count((qmp_loop *)loop) != 0;

    qmp_loop_free((qmp_loop *)loop);
    return busy ? -EBUSY : 0;
}

static inline int async_loop_attach(void *loop, qmp_client *c, void **ret_handle)
{
    *ret_handle = c;
    return qmp_loop_add_client((qmp_loop *)loop, c);
}

static inline void async_loop_detach(void *loop, void *handle)
{
    if (qmp_loop_remove_client((qmp_loop *)loop, (qmp_client *)handle) != 0)
        printf("# qmp_loop_remove_client failed\n");
}

static inline int async_loop_iterate(void *loop, int timeout_ms)
{
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_loop_run_once((qmp_loop *)loop, timeout_ms, &err);

    if (r < 0)
        printf("# qmp_loop_run_once: %s\n", err.message);
    return r < 0 ? r : 0;
}

static const async_driver async_driver_loop = {
    "qmp_loop",        async_loop_new,    async_loop_free,
    async_loop_attach, async_loop_detach, async_loop_iterate,
};

/* ------------------------------------------------------------------- GLib */

#ifdef ASYNC_DRIVER_GLIB
static inline int async_glib_new(void **ret)
{
    *ret = g_main_context_new();
    return 0;
}

static inline int async_glib_free(void *loop)
{
    g_main_context_unref((GMainContext *)loop);
    return 0;
}

static inline int async_glib_attach(void *loop, qmp_client *c, void **ret_handle)
{
    GSource *s = NULL;
    int r = qmp_glib_attach(c, (GMainContext *)loop, &s);

    *ret_handle = s;
    return r;
}

static inline void async_glib_detach(void *loop, void *handle)
{
    (void)loop;
    qmp_glib_detach((GSource *)handle);
}

static inline gboolean async_glib_wake(gpointer data)
{
    (void)data;
    return G_SOURCE_REMOVE;
}

static inline int async_glib_iterate(void *loop, int timeout_ms)
{
    GMainContext *ctx = (GMainContext *)loop;
    GSource *t;

    if (timeout_ms == 0) {
        g_main_context_iteration(ctx, FALSE);
        return 0;
    }
    t = g_timeout_source_new((guint)timeout_ms);
    g_source_set_callback(t, async_glib_wake, NULL, NULL);
    g_source_attach(t, ctx);
    g_main_context_iteration(ctx, TRUE);
    g_source_destroy(t);
    g_source_unref(t);
    return 0;
}

static const async_driver async_driver_glib = {
    "glib",
    async_glib_new,
    async_glib_free,
    async_glib_attach,
    async_glib_detach,
    async_glib_iterate,
};
#endif

/* ------------------------------------------------------------------ libuv */

#ifdef ASYNC_DRIVER_LIBUV
typedef struct async_uv {
    uv_loop_t loop;
    uv_timer_t wake;
} async_uv;

static inline int async_uv_new(void **ret)
{
    async_uv *u = (async_uv *)calloc(1, sizeof(*u));
    int r;

    if (u == NULL)
        return -ENOMEM;
    r = uv_loop_init(&u->loop);
    if (r < 0) {
        free(u);
        return r;
    }
    uv_timer_init(&u->loop, &u->wake);
    *ret = u;
    return 0;
}

static inline int async_uv_free(void *loop)
{
    async_uv *u = (async_uv *)loop;
    int r;

    uv_close((uv_handle_t *)&u->wake, NULL);
    /* Runs the close callbacks of the wake timer and of detached clients. */
    uv_run(&u->loop, UV_RUN_NOWAIT);
    r = uv_loop_close(&u->loop);
    if (r < 0) {
        printf("# uv_loop_close: %s\n", uv_strerror(r));
        return -EBUSY; /* leaked on purpose: handles still point into it */
    }
    free(u);
    return 0;
}

static inline int async_uv_attach(void *loop, qmp_client *c, void **ret_handle)
{
    qmp_uv *h = NULL;
    int r = qmp_uv_attach(c, &((async_uv *)loop)->loop, &h);

    *ret_handle = h;
    return r;
}

static inline void async_uv_detach(void *loop, void *handle)
{
    (void)loop;
    qmp_uv_detach((qmp_uv *)handle);
}

static inline void async_uv_wake(uv_timer_t *t)
{
    (void)t;
}

static inline int async_uv_iterate(void *loop, int timeout_ms)
{
    async_uv *u = (async_uv *)loop;

    if (timeout_ms == 0) {
        uv_run(&u->loop, UV_RUN_NOWAIT);
        return 0;
    }
    uv_update_time(&u->loop);
    uv_timer_start(&u->wake, async_uv_wake, (uint64_t)timeout_ms, 0);
    uv_run(&u->loop, UV_RUN_ONCE);
    uv_timer_stop(&u->wake);
    return 0;
}

static const async_driver async_driver_libuv = {
    "libuv", async_uv_new, async_uv_free, async_uv_attach, async_uv_detach, async_uv_iterate,
};
#endif

/* --------------------------------------------------------------- libevent */

#ifdef ASYNC_DRIVER_LIBEVENT
typedef struct async_ev {
    struct event_base *base;
    struct event *wake;
} async_ev;

static inline void async_ev_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static inline int async_ev_new(void **ret)
{
    async_ev *e = (async_ev *)calloc(1, sizeof(*e));

    if (e == NULL)
        return -ENOMEM;
    e->base = event_base_new();
    if (e->base == NULL) {
        free(e);
        return -ENOMEM;
    }
    e->wake = evtimer_new(e->base, async_ev_wake, NULL);
    if (e->wake == NULL) {
        event_base_free(e->base);
        free(e);
        return -ENOMEM;
    }
    *ret = e;
    return 0;
}

static inline int async_ev_free(void *loop)
{
    async_ev *e = (async_ev *)loop;

    event_free(e->wake);
    event_base_free(e->base);
    free(e);
    return 0;
}

static inline int async_ev_attach(void *loop, qmp_client *c, void **ret_handle)
{
    qmp_libevent *h = NULL;
    int r = qmp_libevent_attach(c, ((async_ev *)loop)->base, &h);

    *ret_handle = h;
    return r;
}

static inline void async_ev_detach(void *loop, void *handle)
{
    (void)loop;
    qmp_libevent_detach((qmp_libevent *)handle);
}

static inline int async_ev_iterate(void *loop, int timeout_ms)
{
    async_ev *e = (async_ev *)loop;
    struct timeval tv;

    if (timeout_ms == 0)
        return event_base_loop(e->base, EVLOOP_NONBLOCK) < 0 ? -EIO : 0;
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(e->wake, &tv);
    int r = event_base_loop(e->base, EVLOOP_ONCE);
    evtimer_del(e->wake);
    return r < 0 ? -EIO : 0;
}

static const async_driver async_driver_libevent = {
    "libevent", async_ev_new, async_ev_free, async_ev_attach, async_ev_detach, async_ev_iterate,
};
#endif

#endif /* QMP_TEST_ASYNC_DRIVERS_H */
