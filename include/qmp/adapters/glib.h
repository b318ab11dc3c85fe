/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp adapter for GLib: drives a non-blocking qmp_client from a
 * GMainContext.  Header-only: libqmp itself does not link GLib; a program
 * that includes this header links glib-2.0 (pkg-config glib-2.0).
 *
 *   GSource *src;
 *   qmp_client_new(&c);
 *   qmp_glib_attach(c, NULL, &src);          (NULL: the default context)
 *   qmp_client_connect_async(c, "/run/qemu/qmp.sock", &err);
 *   g_main_loop_run(loop);                   (callbacks run from here)
 *   qmp_glib_detach(src);
 *
 * The client is one GSource: it polls the client's socket for the events
 * the client asks for and becomes ready at the client's next deadline
 * (g_source_set_ready_time(); GLib's monotonic clock is the
 * CLOCK_MONOTONIC that qmp_client_get_timeout() uses).  The client's
 * watch callback keeps both up to date when the client connects,
 * reconnects (a new descriptor), closes (no descriptor) or starts a call,
 * and so does each dispatch after qmp_client_process().
 *
 * The context must be iterated by the thread that uses the client.
 * Needs GLib 2.36 or later (g_source_add_unix_fd()).
 */
#ifndef QMP_ADAPTERS_GLIB_H
#define QMP_ADAPTERS_GLIB_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <glib.h>

#include <qmp/client.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The source; fields are private to this header. */
typedef struct qmp_glib_source {
    GSource source;
    qmp_client *client; /* a reference, dropped when the source is finalized */
    gpointer tag;       /* of g_source_add_unix_fd(), NULL when no descriptor is polled */
    int fd;
    GIOCondition cond;
    int watching; /* the client's watch callback is ours */
} qmp_glib_source;

static inline void qmp_glib__sync(qmp_glib_source *s)
{
    GSource *g = &s->source;
    int fd, ev;
    GIOCondition cond = (GIOCondition)0;
    uint64_t usec = UINT64_MAX;

    if (g_source_is_destroyed(g))
        return;
    fd = qmp_client_get_fd(s->client);
    ev = qmp_client_get_events(s->client);
    if (ev & POLLIN)
        cond = (GIOCondition)(cond | G_IO_IN);
    if (ev & POLLOUT)
        cond = (GIOCondition)(cond | G_IO_OUT);
    if (fd < 0 || cond == 0) {
        fd = -1;
        cond = (GIOCondition)0;
    }
    if (s->tag != NULL && fd != s->fd) {
        g_source_remove_unix_fd(g, s->tag);
        s->tag = NULL;
    }
    if (fd >= 0) {
        if (s->tag == NULL)
            s->tag = g_source_add_unix_fd(g, fd, cond);
        else if (cond != s->cond)
            g_source_modify_unix_fd(g, s->tag, cond);
    }
    s->fd = fd;
    s->cond = cond;

    if (qmp_client_get_timeout(s->client, &usec) < 0 || usec >= (uint64_t)G_MAXINT64)
        g_source_set_ready_time(g, -1);
    else
        g_source_set_ready_time(g, (gint64)usec);
}

static inline void qmp_glib__on_watch(qmp_client *c, void *userdata)
{
    (void)c;
    qmp_glib__sync((qmp_glib_source *)userdata);
}

static inline gboolean qmp_glib__dispatch(GSource *g, GSourceFunc cb, gpointer userdata)
{
    qmp_glib_source *s = (qmp_glib_source *)g;

    (void)cb;
    (void)userdata;
    /* GLib holds a reference to the source while it dispatches, and the
     * source holds the client, so a callback may detach. */
    qmp_client_process(s->client, NULL);
    qmp_glib__sync(s);
    return G_SOURCE_CONTINUE;
}

static inline void qmp_glib__finalize(GSource *g)
{
    qmp_glib_source *s = (qmp_glib_source *)g;

    if (s->watching)
        qmp_client_set_watch_callback(s->client, NULL, NULL);
    s->watching = 0;
    qmp_client_unref(s->client);
    s->client = NULL;
}

/*
 * Attaches c to ctx (NULL: the default main context).  c may be
 * unconnected, connecting or connected; it is polled whenever it has a
 * socket.  The source takes a reference to c and sets c's watch
 * callback, which must not be changed until qmp_glib_detach().  Attach a
 * client to one loop at a time.
 *
 * *ret_source receives a reference to the source, owned by the caller
 * and released by qmp_glib_detach(); the caller may use it for
 * g_source_set_priority() or g_source_set_name().
 *
 * Returns 0 or -EINVAL (c or ret_source NULL).  (GLib aborts on out of
 * memory.)
 */
static inline int qmp_glib_attach(qmp_client *c, GMainContext *ctx, GSource **ret_source)
{
    /* Never modified; GLib takes it as non-const. */
    static GSourceFuncs funcs = {NULL, NULL, qmp_glib__dispatch, qmp_glib__finalize, NULL, NULL};
    qmp_glib_source *s;

    if (c == NULL || ret_source == NULL)
        return -EINVAL;
    s = (qmp_glib_source *)g_source_new(&funcs, sizeof(qmp_glib_source));
    s->client = qmp_client_ref(c);
    s->tag = NULL;
    s->fd = -1;
    s->cond = (GIOCondition)0;
    s->watching = 1;
    g_source_set_name(&s->source, "libqmp client");
    qmp_client_set_watch_callback(c, qmp_glib__on_watch, s);
    qmp_glib__sync(s);
    g_source_attach(&s->source, ctx);
    *ret_source = &s->source;
    return 0;
}

/*
 * Detaches the client of a source made by qmp_glib_attach(): removes the
 * source from its context, clears the client's watch callback and drops
 * the caller's reference to the source.  The source's reference to the
 * client is dropped when GLib lets go of the source: at once, or after
 * the dispatch in progress when called from one of the client's
 * callbacks (which is allowed).  The connection stays as it is; close it
 * or unref the client as usual.  Accepts NULL.
 */
static inline void qmp_glib_detach(GSource *source)
{
    qmp_glib_source *s = (qmp_glib_source *)source;

    if (s == NULL)
        return;
    if (s->watching)
        qmp_client_set_watch_callback(s->client, NULL, NULL);
    s->watching = 0;
    g_source_destroy(source);
    g_source_unref(source);
}

#ifdef __cplusplus
}
#endif

#endif /* QMP_ADAPTERS_GLIB_H */
