/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: the sans-I/O protocol core.
 *
 * A qmp_session knows QMP but no sockets, clocks or file descriptors of
 * its own: feed it the bytes read from QEMU with qmp_session_feed(), write
 * what qmp_session_get_output() returns and report it written with
 * qmp_session_consume_output().  Callbacks report the state, events and
 * replies.  Tests and fuzzers drive it with plain buffers; qmp_client
 * drives it over a socket.
 *
 * Framing is a streaming scanner that tracks strings, escapes and nesting,
 * so a message may be split anywhere, many may arrive in one buffer, and a
 * message may span lines (QEMU's pretty=on monitors).  Messages are routed
 * by shape: "QMP" greeting, "event", "return"/"error" reply.
 *
 * Lifecycle: GREETING (waiting for the greeting) -> NEGOTIATING
 * (qmp_capabilities sent automatically, with "oob" enabled when offered
 * and wanted) -> READY (commands allowed) -> FAILED (sticky; every pending
 * command got the error exactly once; later calls fail at once).
 *
 * Threading: a session may be used by one thread at a time.  Callbacks
 * run inside qmp_session_feed(), qmp_session_feed_eof(),
 * qmp_session_abort() and qmp_session_cancel(), on the caller's thread; a
 * callback may send commands, cancel, or drop its reference to the
 * session (the session stays alive until the dispatching call returns).
 */
#ifndef QMP_SESSION_H
#define QMP_SESSION_H

#include <stdint.h>
#include <json-c/json_object.h>

#include "common.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qmp_session qmp_session;

typedef enum qmp_session_state {
    QMP_SESSION_GREETING = 0, /* waiting for QEMU's greeting */
    QMP_SESSION_NEGOTIATING,  /* qmp_capabilities sent, waiting for its reply */
    QMP_SESSION_READY,        /* commands may be sent */
    QMP_SESSION_FAILED        /* broken for good; see qmp_session_get_error() */
} qmp_session_state;

/* Default cap on one received message: 10 MiB, as libvirt and qemu.qmp. */
#define QMP_DEFAULT_MAX_MESSAGE_SIZE (10u * 1024u * 1024u)

/* Flags for qmp_session_send_command(). */
#define QMP_EXEC_OOB 0x1u /* send as "exec-oob" (requires oob to be enabled) */

/* Called when the session changes state (after the greeting was parsed,
 * when negotiation completes, when it fails). */
typedef void (*qmp_state_fn)(qmp_session *s, qmp_session_state state, void *userdata);

/* Called for each event, in arrival order, interleaved with replies as
 * they arrive.  ev is borrowed; qmp_event_ref() it to keep it. */
typedef void (*qmp_event_fn)(qmp_session *s, qmp_event *ev, void *userdata);

/* Called exactly once per sent command with its outcome (see qmp_reply). */
typedef void (*qmp_reply_fn)(qmp_session *s, qmp_reply *reply, void *userdata);

/*
 * Creates a session in state GREETING.  *ret is a new reference.
 * Returns 0, -EINVAL (ret NULL), -ENOMEM.
 */
QMP_EXPORT int qmp_session_new(qmp_session **ret);

/* Takes a reference; returns s. */
QMP_EXPORT qmp_session *qmp_session_ref(qmp_session *s);

/* Drops a reference.  On the last one, pending commands are failed with
 * -ECANCELED (their callbacks run) and everything is freed.  Accepts NULL;
 * returns NULL. */
QMP_EXPORT qmp_session *qmp_session_unref(qmp_session *s);

/*
 * Caps the size of one received message (bytes, including whitespace
 * inside it).  A larger message fails the session with -EMSGSIZE
 * (QMP_ERR_LIMIT) instead of growing memory.  Default
 * QMP_DEFAULT_MAX_MESSAGE_SIZE.  Returns 0 or -EINVAL (below 256 bytes).
 */
QMP_EXPORT int qmp_session_set_max_message_size(qmp_session *s, size_t bytes);

/*
 * Limits the in-band commands sent and not yet answered to n (0: no limit,
 * the default).  Further commands wait, serialised, in the session and
 * go out as replies come in; exec-oob commands never wait.  QEMU queues
 * at most 8 in-band commands per monitor when oob is enabled, and stops
 * reading beyond that, which would hold up an exec-oob.  A command
 * cancelled after it was sent counts until QEMU answers it.  Returns 0 or
 * -EINVAL (above 65536).
 */
QMP_EXPORT int qmp_session_set_max_in_flight(qmp_session *s, unsigned n);

/* Caps JSON nesting depth of received messages (default
 * QMP_JSON_DEFAULT_MAX_DEPTH, 1024).  Returns 0 or -EINVAL (0 or above
 * 100000). */
QMP_EXPORT int qmp_session_set_max_depth(qmp_session *s, unsigned depth);

/* Whether to enable the "oob" capability when QEMU offers it (default:
 * no).  Takes effect only before the greeting arrives.  Returns 0 or
 * -EBUSY (greeting already received). */
QMP_EXPORT int qmp_session_set_want_oob(qmp_session *s, int want);

/* Sets the log callback and the most verbose level it receives.  fn NULL
 * turns logging off (the default). */
QMP_EXPORT void qmp_session_set_log(qmp_session *s, qmp_log_fn fn, qmp_log_level max_level,
                                    void *userdata);

/* Sets the traffic trace callback; NULL turns tracing off (default). */
QMP_EXPORT void qmp_session_set_trace(qmp_session *s, qmp_trace_fn fn, void *userdata);

/* Sets the callbacks; NULL removes one.  Events with no callback set are
 * dropped (and logged at debug level). */
QMP_EXPORT void qmp_session_set_state_callback(qmp_session *s, qmp_state_fn fn, void *userdata);
QMP_EXPORT void qmp_session_set_event_callback(qmp_session *s, qmp_event_fn fn, void *userdata);

/*
 * Feeds bytes received from QEMU.  Every complete message is routed
 * before the call returns (callbacks run); an incomplete tail is kept.
 * data is borrowed for the call only.
 *
 * Returns 0, or the session's sticky error once it has FAILED (also when
 * it failed earlier): -EPROTO (malformed message, greeting, negotiation),
 * -EMSGSIZE (message too large or too deep), -ENOMEM, or whatever
 * qmp_session_abort() recorded.  err, if given, receives the details.
 */
QMP_EXPORT int qmp_session_feed(qmp_session *s, const void *data, size_t len, qmp_error *err);

/*
 * Reports that QEMU closed the connection (end of file).  The session
 * FAILS with -ECONNRESET (QMP_ERR_DISCONNECTED), its message saying at
 * which stage (before the greeting, during negotiation, with N commands
 * pending, in the middle of a message).  Pending callbacks run.  Returns
 * the sticky error (never 0).
 */
QMP_EXPORT int qmp_session_feed_eof(qmp_session *s, qmp_error *err);

/*
 * Fails the session with the given error (a transport failure seen by
 * the caller, such as a write error).  why->code must be negative and is
 * recorded as the sticky error; why NULL means -ECONNRESET.  Pending
 * callbacks run.  No effect on a session that already FAILED.
 */
QMP_EXPORT void qmp_session_abort(qmp_session *s, const qmp_error *why);

/*
 * Bytes waiting to be written to QEMU.  Returns a pointer to *ret_len
 * bytes (NULL and 0 when nothing waits), borrowed until the next call
 * that changes the session.  When file descriptors must travel with these
 * bytes (SCM_RIGHTS), *ret_fds and *ret_n_fds name them and the returned
 * chunk stops before the next message that carries descriptors, so one
 * sendmsg() never mixes two messages' descriptors; otherwise *ret_n_fds is
 * 0.  ret_fds and ret_n_fds may be NULL when the caller never passes
 * descriptors.
 */
QMP_EXPORT const void *qmp_session_get_output(qmp_session *s, size_t *ret_len, const int **ret_fds,
                                              size_t *ret_n_fds);

/* Marks n bytes of the output as written (n at most the length last
 * returned).  Once any byte of a chunk is consumed its descriptors count
 * as sent. */
QMP_EXPORT void qmp_session_consume_output(qmp_session *s, size_t n);

/*
 * Queues a command.  Allowed only in state READY.
 *
 * command:   command name, e.g. "query-status" (borrowed).
 * arguments: JSON object or NULL (borrowed; serialised before return).
 * flags:     0 or QMP_EXEC_OOB.
 * fds/n_fds: descriptors sent with the command via SCM_RIGHTS (e.g. for
 *            "getfd" and "add-fd"); borrowed: they must stay open until
 *            the output carrying them has been consumed.  At most 16.
 * cb:        called exactly once with the outcome, unless this function
 *            fails (then never).  May be NULL to ignore the reply.
 * ret_tag:   optional; receives the command's tag (for cancel and for
 *            qmp_reply_tag()).  Tags are never reused by a session.
 *
 * The library assigns the "id" itself; its ids are strings beginning
 * "libqmp:" and cannot collide with ids given to qmp_session_send_raw().
 *
 * Returns 0; -EINVAL (bad argument: command not a non-empty UTF-8
 * string, arguments not an object, invalid UTF-8 in arguments, too many
 * fds, oob not enabled); -ENOTCONN (state GREETING or NEGOTIATING:
 * negotiation not complete); the sticky error when FAILED; -ENOMEM.
 */
QMP_EXPORT int qmp_session_send_command(qmp_session *s, const char *command, json_object *arguments,
                                        unsigned flags, const int *fds, size_t n_fds,
                                        qmp_reply_fn cb, void *userdata, uint64_t *ret_tag,
                                        qmp_error *err);

/*
 * Queues a raw request message with the caller's own "id" (any JSON
 * value, or none).  The message is sent as given (borrowed, serialised
 * before return); the reply whose id equals it is routed to cb.  A
 * message without "id" is allowed when no other id-less request is
 * pending; QEMU's id-less reply (or id-less error) then goes to it.
 *
 * Returns as qmp_session_send_command(), plus -EINVAL when message is
 * not an object, -EINVAL when its id is a string in libqmp's reserved
 * "libqmp:" namespace, and -EEXIST when a request with an equal id (or a
 * second id-less request) is pending.  Like commands, raw messages are
 * allowed only in state READY.
 */
QMP_EXPORT int qmp_session_send_raw(qmp_session *s, json_object *message, const int *fds,
                                    size_t n_fds, qmp_reply_fn cb, void *userdata,
                                    uint64_t *ret_tag, qmp_error *err);

/*
 * Ends a pending command now: its callback runs at once with why (code
 * must be negative; NULL means -ECANCELED, QMP_ERR_CANCELLED), and its
 * reply, if it ever arrives, is dropped.  A command still held back by
 * the in-flight limit is never sent; one already sent may still run in
 * QEMU.
 * Returns 0 or -ENOENT (no such pending tag).
 */
QMP_EXPORT int qmp_session_cancel(qmp_session *s, uint64_t tag, const qmp_error *why);

/* Current state. */
QMP_EXPORT qmp_session_state qmp_session_get_state(const qmp_session *s);

/* The sticky error: 0 unless FAILED; then its code, with details copied
 * into err if given. */
QMP_EXPORT int qmp_session_get_error(const qmp_session *s, qmp_error *err);

/* The greeting, or NULL before it arrived.  Borrowed, valid as long as the
 * session. */
QMP_EXPORT const qmp_greeting *qmp_session_get_greeting(const qmp_session *s);

/* 1 when out-of-band execution was negotiated, else 0. */
QMP_EXPORT int qmp_session_oob_enabled(const qmp_session *s);

/* Number of commands whose callback has not run yet: queued, sent and
 * unanswered (including qmp_capabilities while negotiating). */
QMP_EXPORT size_t qmp_session_pending_count(const qmp_session *s);

/* Number of in-band commands sent and not yet answered, including
 * cancelled ones QEMU has not answered (see
 * qmp_session_set_max_in_flight()). */
QMP_EXPORT size_t qmp_session_in_flight_count(const qmp_session *s);

#ifdef __cplusplus
}
#endif

#endif /* QMP_SESSION_H */
