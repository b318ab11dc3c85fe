/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: the blocking client.
 *
 * A qmp_client owns a socket and drives a qmp_session over it with poll():
 * each call runs until its reply or its deadline.  Events that arrive
 * meanwhile are queued (bounded, drop-oldest, with a lost-event counter)
 * for qmp_client_next_event() and qmp_client_wait_event().
 *
 * Addresses (one syntax for the API and the qmp tool):
 *   /path, ./path, unix:PATH      unix socket (path must fit sun_path)
 *   HOST:PORT, tcp:HOST:PORT      TCP, IPv4 or IPv6 via getaddrinfo
 *   [IPV6]:PORT                   TCP, literal IPv6 address
 *   fd:N                          an already-connected socket descriptor
 *                                 (the client takes ownership of it)
 *
 * Timeouts: every call has a deadline (the client's default, set with
 * qmp_client_set_timeout(), or the per-call timeout).  The deadline
 * covers the whole call, so a peer that sends one byte at a time or stops
 * reading our request cannot stretch it.  After a timeout the connection
 * stays usable; the late reply is dropped, never handed to a later call.
 * A peer that closes the connection fails the pending call and every
 * later call at once with -ECONNRESET (QMP_ERR_DISCONNECTED), though
 * events queued before the close can still be taken.
 *
 * Sockets are close-on-exec, and writes use MSG_NOSIGNAL, so a closed
 * peer never raises SIGPIPE.
 *
 * Threading: a qmp_client may be used by one thread at a time; distinct
 * clients may be used in parallel.  libqmp has no global mutable state and
 * starts no threads.  A client used in a child after fork() fails its
 * calls with -ECHILD.  qmp_client_set_thread_safe() lets several threads
 * share one connection, each blocking call getting its own reply.
 */
#ifndef QMP_CLIENT_H
#define QMP_CLIENT_H

#include <stdint.h>
#include <json-c/json_object.h>

#include "common.h"
#include "message.h"
#include "session.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qmp_client qmp_client;

/* Defaults. */
#define QMP_CLIENT_DEFAULT_TIMEOUT_MS 30000         /* per call */
#define QMP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 10000 /* connect + greeting + negotiation */
#define QMP_CLIENT_DEFAULT_EVENT_QUEUE_MAX 1024     /* events kept */
#define QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT 8          /* commands sent, unanswered */

/*
 * Creates an unconnected client.  *ret is a new reference.
 * Returns 0, -EINVAL (ret NULL), -ENOMEM.
 */
QMP_EXPORT int qmp_client_new(qmp_client **ret);

/* Takes a reference; returns c. */
QMP_EXPORT qmp_client *qmp_client_ref(qmp_client *c);

/* Drops a reference; the last one closes the connection and frees
 * everything, including queued events.  Accepts NULL; returns NULL. */
QMP_EXPORT qmp_client *qmp_client_unref(qmp_client *c);

/* Default deadline of each call in ms (QMP_TIMEOUT_INFINITE allowed).
 * Returns 0 or -EINVAL (below -1). */
QMP_EXPORT int qmp_client_set_timeout(qmp_client *c, int timeout_ms);

/* Deadline for connect, greeting and negotiation together.
 * Returns 0 or -EINVAL (below -1). */
QMP_EXPORT int qmp_client_set_connect_timeout(qmp_client *c, int timeout_ms);

/* Maximum number of queued events (at least 1).  When full, the oldest
 * event is dropped and the lost counter grows.  Returns 0 or -EINVAL. */
QMP_EXPORT int qmp_client_set_event_queue_max(qmp_client *c, size_t max_events);

/* As qmp_session_set_max_message_size(); kept across reconnects.
 * Returns 0 or -EINVAL. */
QMP_EXPORT int qmp_client_set_max_message_size(qmp_client *c, size_t bytes);

/* Whether to enable "oob" when QEMU offers it (default no).  Takes effect
 * at the next connect.  Returns 0. */
QMP_EXPORT int qmp_client_set_want_oob(qmp_client *c, int want);

/* Log and trace callbacks, as for qmp_session (also used for the
 * client's own messages about sockets). */
QMP_EXPORT void qmp_client_set_log(qmp_client *c, qmp_log_fn fn, qmp_log_level max_level,
                                   void *userdata);
QMP_EXPORT void qmp_client_set_trace(qmp_client *c, qmp_trace_fn fn, void *userdata);

/*
 * Connects to address (see above), waits for the greeting and negotiates
 * capabilities, all within the connect timeout.  A client that is already
 * connected is first closed (its queued events are dropped).
 *
 * Returns 0 or: -EINVAL (bad address, QMP_ERR_INVALID); -ENAMETOOLONG
 * (unix path too long); a connect errno such as -ENOENT, -ECONNREFUSED,
 * -EHOSTUNREACH (QMP_ERR_CONNECT; -ENOTSOCK for fd:N that is not a
 * socket); -ETIMEDOUT (QMP_ERR_TIMEOUT: no greeting in time, the message
 * asks "is another client connected?"); -EPROTO (QMP_ERR_GREETING,
 * QMP_ERR_NEGOTIATION, QMP_ERR_PROTOCOL); -ECONNRESET (closed during
 * greeting or negotiation); -EMSGSIZE; -ENOMEM; -ECHILD (after fork).
 */
QMP_EXPORT int qmp_client_connect(qmp_client *c, const char *address, qmp_error *err);

/*
 * As qmp_client_connect() over an already-connected stream socket fd
 * (e.g. one end of a socketpair whose other end QEMU got).  The client
 * takes ownership of fd on success and on failure (so a descriptor that
 * turns out not to be a socket is closed too), and sets it non-blocking
 * and close-on-exec.
 */
QMP_EXPORT int qmp_client_connect_fd(qmp_client *c, int fd, qmp_error *err);

/*
 * Closes the connection (pending state is dropped; queued events stay
 * until the next connect or unref).  No-op when not connected.
 */
QMP_EXPORT void qmp_client_close(qmp_client *c);

/* 1 when connected and negotiated and not failed, else 0. */
QMP_EXPORT int qmp_client_is_connected(const qmp_client *c);

/* The socket descriptor (borrowed), or -1 when not connected. */
QMP_EXPORT int qmp_client_get_fd(const qmp_client *c);

/* The greeting of the current connection; NULL when never connected.
 * Borrowed, valid until the next connect or unref. */
QMP_EXPORT const qmp_greeting *qmp_client_get_greeting(const qmp_client *c);

/* 1 when oob was negotiated on the current connection. */
QMP_EXPORT int qmp_client_oob_enabled(const qmp_client *c);

/*
 * Executes a command and waits for its reply, within the default timeout.
 *
 * command:    the command name (borrowed).
 * arguments:  JSON object or NULL (borrowed).
 * ret_return: optional; on success the "return" value as a NEW reference
 *             (json_object_put() it; NULL when QEMU returned null).
 *
 * Returns 0 or: -EREMOTEIO (QMP_ERR_COMMAND: QEMU's error reply; err has
 * class and desc); -ETIMEDOUT (the connection stays usable);
 * -ECONNRESET/-EPIPE (disconnected; sticky); -EPROTO; -EMSGSIZE;
 * -EINVAL (bad arguments); -ENOTCONN (not connected); -ENOMEM; -ECHILD.
 */
QMP_EXPORT int qmp_client_execute(qmp_client *c, const char *command, json_object *arguments,
                                  json_object **ret_return, qmp_error *err);

/*
 * As qmp_client_execute(), with more control.
 *
 * flags:      0 or QMP_EXEC_OOB (exec-oob; oob must be enabled).
 * timeout_ms: deadline of this call, or QMP_TIMEOUT_DEFAULT /
 *             QMP_TIMEOUT_INFINITE.
 * fds/n_fds:  descriptors to pass with the command (unix sockets only,
 *             else -EOPNOTSUPP); borrowed, at most 16.
 */
QMP_EXPORT int qmp_client_execute_full(qmp_client *c, const char *command, json_object *arguments,
                                       unsigned flags, int timeout_ms, const int *fds, size_t n_fds,
                                       json_object **ret_return, qmp_error *err);

/*
 * Executes a command whose arguments are a JSON template (see
 * qmp_json_build(): single-quoted strings allowed, %s values escaped).
 * args_template may be NULL for no arguments.
 *
 * Example:
 *   qmp_client_command(c, NULL, &err, "device_del", "{'id': %s}", id);
 *
 * Returns as qmp_client_execute(); a bad template gives -EINVAL.
 */
QMP_EXPORT int qmp_client_command(qmp_client *c, json_object **ret_return, qmp_error *err,
                                  const char *command, const char *args_template, ...)
    QMP_PRINTF(5, 6);

/*
 * Sends a raw request message with the caller's own "id" and waits for
 * the reply with that id (or the id-less reply, for a message without
 * id).  message is borrowed.  ret_reply receives the WHOLE reply message
 * (a new reference), error replies included: an error reply is not a
 * failure here (the return value is 0).  timeout_ms as in
 * qmp_client_execute_full().
 *
 * Returns 0, -EEXIST/-EINVAL (id problems, see qmp_session_send_raw()),
 * and the transport errors of qmp_client_execute().
 */
QMP_EXPORT int qmp_client_send_raw(qmp_client *c, json_object *message, int timeout_ms,
                                   json_object **ret_reply, qmp_error *err);

/*
 * Takes the next event, reading from the socket for up to timeout_ms if
 * the queue is empty (0: do not wait, only drain what the socket holds).
 * *ret_event is a new reference (qmp_event_unref() it).
 *
 * Returns 0; -EAGAIN (timeout_ms 0 and no event); -ETIMEDOUT (no event in
 * time); -ECONNRESET (disconnected and the queue is empty); -ENOTCONN;
 * -EPROTO; -ENOMEM; -ECHILD.
 */
QMP_EXPORT int qmp_client_next_event(qmp_client *c, int timeout_ms, qmp_event **ret_event,
                                     qmp_error *err);

/*
 * Waits for the first event named name (NULL: any name) whose data
 * matches match (see qmp_json_match(); NULL matches anything), looking
 * first at the queue and then at new traffic.  The matching event is
 * removed from the queue; other events stay queued in order.
 *
 * Example: wait for DEVICE_DELETED of device "x":
 *   json_object *m = NULL;
 *   qmp_json_build(&m, NULL, "{'device': 'x'}");
 *   qmp_client_wait_event(c, "DEVICE_DELETED", m, 5000, &ev, &err);
 *
 * Returns as qmp_client_next_event() (-ETIMEDOUT when nothing matched).
 */
QMP_EXPORT int qmp_client_wait_event(qmp_client *c, const char *name, json_object *match,
                                     int timeout_ms, qmp_event **ret_event, qmp_error *err);

/* Number of events queued now. */
QMP_EXPORT size_t qmp_client_events_queued(const qmp_client *c);

/* Number of events dropped because the queue was full, since the client
 * was created or the counter last reset. */
QMP_EXPORT uint64_t qmp_client_events_lost(const qmp_client *c);

/* Resets the lost counter; returns its previous value. */
QMP_EXPORT uint64_t qmp_client_reset_events_lost(qmp_client *c);

/*
 * Lets several threads use this client at the same time (call once,
 * before connecting; it cannot be turned off).  Then these may be called
 * concurrently from any thread: qmp_client_execute(),
 * qmp_client_execute_full(), qmp_client_command(), qmp_client_send_raw(),
 * qmp_client_next_event(), qmp_client_wait_event(),
 * qmp_client_events_queued(), qmp_client_events_lost(),
 * qmp_client_execute_async(), qmp_client_cancel(),
 * qmp_client_subscribe(), qmp_client_unsubscribe() and
 * qmp_client_process().  Each blocking call gets its own reply; one
 * waiting thread at a time reads the socket for all of them.  An event
 * goes to every thread waiting in qmp_client_wait_event() whose name and
 * match it fits (each gets its own reference), to every matching
 * subscription (callbacks run on the thread that read it), and to the
 * queue if none of them took it.  Connecting, closing, settings and unref
 * must not run concurrently with anything else.
 *
 * Returns 0; -EBUSY (already connected or connecting, or an attempt to
 * turn it off); -EINVAL; or the errno of eventfd() / pthread init.
 */
QMP_EXPORT int qmp_client_set_thread_safe(qmp_client *c, int enable);

/* ------------------------------------------------------------ non-blocking */

/*
 * The same client, driven by the caller's event loop (the way sd-bus is):
 *
 *   qmp_client_connect_async(c, address, &err);
 *   for (;;) {
 *       struct pollfd p = {qmp_client_get_fd(c), qmp_client_get_events(c)};
 *       poll(&p, 1, qmp_client_get_timeout_ms(c));
 *       qmp_client_process(c, &err);
 *   }
 *
 * Header-only adapters in <qmp/adapters/glib.h>, <qmp/adapters/libuv.h>
 * and <qmp/adapters/libevent.h> do this for GLib, libuv and libevent;
 * <qmp/loop.h> is a small loop for programs that have none.
 *
 * Commands run with qmp_client_execute_async(); any number may be
 * started.  The client sends at most qmp_client_set_max_in_flight() of
 * them at a time (default 8) and queues the rest itself: QEMU queues at
 * most 8 in-band commands per monitor and then stops reading, which would
 * leave an exec-oob stuck behind them.  Out-of-band commands skip the
 * client's queue.
 *
 * Each call's callback runs exactly once: with the reply, QEMU's error
 * reply (-EREMOTEIO), its timeout (-ETIMEDOUT), cancellation (-ECANCELED)
 * or the connection's failure.  Callbacks run inside qmp_client_process(),
 * inside blocking calls (which process the connection too),
 * qmp_client_cancel(), qmp_client_close() and the last
 * qmp_client_unref(); never inside qmp_client_execute_async() itself.  A
 * callback may start calls, cancel, subscribe, unsubscribe and close, but
 * must not make blocking calls (they fail with -EBUSY there).
 *
 * Events go to the subscriptions whose name matches (qmp_client_subscribe());
 * an event that no subscription took is queued for qmp_client_next_event()
 * and qmp_client_wait_event() as before.  Programs that only subscribe can
 * set the queue maximum low; the lost counter tells what was dropped.
 */

/* Called once per asynchronous call with its outcome; reply is borrowed
 * for the duration of the callback (see qmp_reply). */
typedef void (*qmp_call_fn)(qmp_client *c, qmp_reply *reply, void *userdata);

/* Called for each event a subscription takes; ev is borrowed
 * (qmp_event_ref() to keep it). */
typedef void (*qmp_client_event_fn)(qmp_client *c, qmp_event *ev, void *userdata);

/* Called once when an asynchronous connect ends: status 0 (connected and
 * negotiated) or a negative errno with err describing it (as
 * qmp_client_connect() would return). */
typedef void (*qmp_client_connect_fn)(qmp_client *c, int status, const qmp_error *err,
                                      void *userdata);

/* Called once when an established connection breaks (EOF, socket error,
 * protocol error), after every pending call's callback ran with err.
 * Not called for qmp_client_close() or unref. */
typedef void (*qmp_client_disconnect_fn)(qmp_client *c, const qmp_error *err, void *userdata);

/* Called when the descriptor, qmp_client_get_events() or the next timeout
 * may have changed (a call was started, the client connected or closed,
 * the connection broke), so a loop integration can update its watches.
 * It may also run inside qmp_client_process() and blocking calls, when
 * the socket closes there.  Must not call into the client except for
 * the get_* functions. */
typedef void (*qmp_client_watch_fn)(qmp_client *c, void *userdata);

/* Sets the callbacks; fn NULL removes one. */
QMP_EXPORT void qmp_client_set_connect_callback(qmp_client *c, qmp_client_connect_fn fn,
                                                void *userdata);
QMP_EXPORT void qmp_client_set_disconnect_callback(qmp_client *c, qmp_client_disconnect_fn fn,
                                                   void *userdata);
QMP_EXPORT void qmp_client_set_watch_callback(qmp_client *c, qmp_client_watch_fn fn,
                                              void *userdata);

/*
 * Starts connecting to address and returns without waiting; greeting and
 * negotiation then happen in qmp_client_process(), and the connect
 * callback reports the outcome, within the connect timeout.  A host name
 * (not a numeric address) is resolved with getaddrinfo(), which blocks.
 *
 * Returns 0 (the connect callback will run once: with the outcome, or
 * with -ECANCELED if the client is closed, reconnected or freed first),
 * or an error found at once (bad address, socket or connect failure, as
 * qmp_client_connect(); the callback will not run).
 */
QMP_EXPORT int qmp_client_connect_async(qmp_client *c, const char *address, qmp_error *err);

/* As qmp_client_connect_async() over an already-connected socket (taken
 * over as by qmp_client_connect_fd()). */
QMP_EXPORT int qmp_client_connect_fd_async(qmp_client *c, int fd, qmp_error *err);

/* Poll events the client waits for now: POLLIN while connected, plus
 * POLLOUT while output is pending or a connect is in progress; 0 when
 * there is no socket. */
QMP_EXPORT int qmp_client_get_events(const qmp_client *c);

/* The next deadline (a call's timeout or the connect timeout) as an
 * absolute CLOCK_MONOTONIC time in microseconds, UINT64_MAX when there is
 * none.  Returns 0, or -EINVAL (c or ret_usec NULL). */
QMP_EXPORT int qmp_client_get_timeout(const qmp_client *c, uint64_t *ret_usec);

/* The same as a poll() timeout: milliseconds until the next deadline
 * (rounded up), 0 when one has passed, -1 when there is none. */
QMP_EXPORT int qmp_client_get_timeout_ms(const qmp_client *c);

/*
 * Does whatever can be done without blocking: completes a connect in
 * progress, reads and routes what arrived (running callbacks), writes
 * pending output, and ends calls whose deadline passed.
 *
 * Returns 1 when it did something, 0 when there was nothing to do, or a
 * negative errno when the connection is (now or already) broken: the
 * disconnect callback has then run once; later calls return the same
 * error.  -ENOTCONN when not connected, -EBUSY from inside a callback.
 */
QMP_EXPORT int qmp_client_process(qmp_client *c, qmp_error *err);

/*
 * Starts a command and returns at once.
 *
 * command, arguments, flags, fds/n_fds: as qmp_client_execute_full()
 * (arguments are serialised before return; fds are duplicated, so the
 * caller may close its own at once).  timeout_ms: this call's deadline,
 * QMP_TIMEOUT_DEFAULT (the client's default) or QMP_TIMEOUT_INFINITE.
 * cb: runs exactly once with the outcome, never before this function
 * returns; may be NULL.  ret_tag: optional, the call's tag for
 * qmp_client_cancel().
 *
 * Returns 0, or at once (cb will not run): -ENOTCONN (not connected or
 * not negotiated yet), the sticky error of a broken connection, -EINVAL,
 * -EOPNOTSUPP (fds over TCP), -ENOMEM, -ECHILD.
 */
QMP_EXPORT int qmp_client_execute_async(qmp_client *c, const char *command,
                                        json_object *arguments, unsigned flags, int timeout_ms,
                                        const int *fds, size_t n_fds, qmp_call_fn cb,
                                        void *userdata, uint64_t *ret_tag, qmp_error *err);

/*
 * Cancels an asynchronous call: its callback runs now with -ECANCELED
 * (QMP_ERR_CANCELLED).  A call still queued in the client is never sent;
 * one already sent may still run in QEMU, and its reply is dropped.
 * Returns 0 or -ENOENT (no such pending call).
 */
QMP_EXPORT int qmp_client_cancel(qmp_client *c, uint64_t tag);

/* At most n commands sent and not yet answered (1..1024, default 8;
 * exec-oob commands are not counted and never wait).  Returns 0 or
 * -EINVAL. */
QMP_EXPORT int qmp_client_set_max_in_flight(qmp_client *c, unsigned n);

/*
 * Subscribes cb to events named name (NULL: every event).  May be done at
 * any time, also before connecting, and should be done before starting
 * the command whose event is awaited.  Subscriptions are called in the
 * order they were made; an event taken by any subscription is not queued.
 * ret_id: optional, for qmp_client_unsubscribe().
 * Returns 0, -EINVAL, -ENOMEM.
 */
QMP_EXPORT int qmp_client_subscribe(qmp_client *c, const char *name, qmp_client_event_fn cb,
                                    void *userdata, uint64_t *ret_id);

/* Removes a subscription (safe inside its own callback).  Returns 0 or
 * -ENOENT. */
QMP_EXPORT int qmp_client_unsubscribe(qmp_client *c, uint64_t id);

/* ---------------------------------------------------------------- listener */

/*
 * Listen-and-accept mode, for a QEMU that connects to us
 * (-qmp unix:PATH,server=off or -chardev socket,...,server=off):
 * create the listener, start QEMU pointing at its address, then accept.
 */
typedef struct qmp_listener qmp_listener;

/*
 * Listens on address (unix path or TCP HOST:PORT; port 0 picks a free
 * port, see qmp_listener_get_address()).  A unix path that already exists
 * is an error (-EADDRINUSE); the listener removes the path it created
 * when freed.  *ret is owned by the caller (qmp_listener_free()).
 *
 * Returns 0, -EINVAL (bad address or fd:), -ENAMETOOLONG, -ENOMEM, or
 * the errno of socket/bind/listen (QMP_ERR_CONNECT).
 */
QMP_EXPORT int qmp_listener_new(qmp_listener **ret, const char *address, qmp_error *err);

/* The address actually listened on ("unix:/path" or "HOST:PORT", IPv6
 * in brackets), borrowed, valid as long as the listener. */
QMP_EXPORT const char *qmp_listener_get_address(const qmp_listener *l);

/* The listening descriptor (borrowed), for callers that poll it. */
QMP_EXPORT int qmp_listener_get_fd(const qmp_listener *l);

/*
 * Waits up to timeout_ms for one connection, then connects client c over
 * it (greeting and negotiation within the same deadline).  The listener
 * stays open for further accepts.
 *
 * Returns 0, -ETIMEDOUT (nobody connected in time, QMP_ERR_TIMEOUT), and
 * otherwise as qmp_client_connect().
 */
QMP_EXPORT int qmp_listener_accept(qmp_listener *l, qmp_client *c, int timeout_ms, qmp_error *err);

/* Closes the listener and removes its unix path.  Accepts NULL. */
QMP_EXPORT void qmp_listener_free(qmp_listener *l);

#ifdef __cplusplus
}
#endif

#endif /* QMP_CLIENT_H */
