/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: a small event loop for programs that have none.
 *
 * It drives any number of non-blocking qmp_clients from one thread with
 * epoll: add clients, start their connects and calls, and run the loop.
 * Programs that already have a loop use the adapters in
 * <qmp/adapters/> instead.
 *
 * Threading: a loop and its clients are used by one thread at a time.
 */
#ifndef QMP_LOOP_H
#define QMP_LOOP_H

#include "common.h"
#include "client.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qmp_loop qmp_loop;

/* Creates a loop; *ret is owned by the caller (qmp_loop_free()).
 * Returns 0, -EINVAL, -ENOMEM, or the errno of epoll_create1(). */
QMP_EXPORT int qmp_loop_new(qmp_loop **ret);

/* Detaches every client (dropping the loop's references) and frees the
 * loop.  Accepts NULL. */
QMP_EXPORT void qmp_loop_free(qmp_loop *l);

/*
 * Attaches c (connected, connecting, or not yet connected: it is watched
 * from when it has a socket).  The loop takes a reference and sets the
 * client's watch callback, which the caller must not change while
 * attached.  Returns 0, -EINVAL, -EEXIST (already attached), -ENOMEM, or
 * the errno of epoll_ctl() (e.g. -ENOSPC).
 */
QMP_EXPORT int qmp_loop_add_client(qmp_loop *l, qmp_client *c);

/* Detaches c and drops the loop's reference (safe inside c's callbacks).
 * Returns 0 or -ENOENT. */
QMP_EXPORT int qmp_loop_remove_client(qmp_loop *l, qmp_client *c);

/*
 * Waits up to timeout_ms (QMP_TIMEOUT_INFINITE: no limit; 0: do not wait)
 * for a client's socket or deadline, then processes every client that is
 * ready (callbacks run).  A client whose connection breaks stays attached
 * (its disconnect callback ran); remove it or reconnect it.
 * Returns the number of clients processed, -EINVAL (QMP_ERR_INVALID; also
 * when called from inside a round, i.e. from a callback), or the errno of
 * epoll_wait() (QMP_ERR_SYSTEM).
 */
QMP_EXPORT int qmp_loop_run_once(qmp_loop *l, int timeout_ms, qmp_error *err);

/*
 * Runs until qmp_loop_quit() is called (typically from a callback), no
 * client is attached, or timeout_ms passes; a quit requested before the
 * call is forgotten when it starts.  Returns 0 (quit or no clients),
 * -ETIMEDOUT (QMP_ERR_TIMEOUT), or an error of qmp_loop_run_once().
 */
QMP_EXPORT int qmp_loop_run(qmp_loop *l, int timeout_ms, qmp_error *err);

/* Makes qmp_loop_run() return after the current round. */
QMP_EXPORT void qmp_loop_quit(qmp_loop *l);

/* Number of attached clients. */
QMP_EXPORT size_t qmp_loop_client_count(const qmp_loop *l);

#ifdef __cplusplus
}
#endif

#endif /* QMP_LOOP_H */
