/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp internal: sockets, addresses and deadlines for the blocking
 * client (client.c) and the listener (transport.c).  Never installed.
 */
#ifndef QMP_TRANSPORT_H
#define QMP_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"

/* The most descriptors one message may carry (as qmp_session_send_command()). */
#define QMP__MAX_FDS 16

/* ----------------------------------------------------------- deadlines */

/*
 * A deadline is an absolute CLOCK_MONOTONIC time in nanoseconds, or
 * QMP__NO_DEADLINE for "wait forever".  Every blocking operation computes
 * its deadline once, at its start, and derives each poll() timeout from
 * the time remaining, so no sequence of partial reads or writes can
 * stretch the whole operation.
 */
#define QMP__NO_DEADLINE INT64_MAX

/* For qmp__socket_connect(): do not wait for a connect in progress. */
#define QMP__DEADLINE_ASYNC INT64_MIN

int64_t qmp__now_ns(void);

/* Deadline timeout_ms from now; QMP_TIMEOUT_INFINITE (or any negative
 * value) gives QMP__NO_DEADLINE. */
int64_t qmp__deadline_after(int timeout_ms);

/* Milliseconds left, rounded up so that a poll() of that length never
 * wakes before the deadline: -1 for QMP__NO_DEADLINE, 0 once passed. */
int qmp__deadline_remaining_ms(int64_t deadline);

/* ----------------------------------------------------------- addresses */

typedef enum qmp__addr_kind { QMP__ADDR_UNIX = 1, QMP__ADDR_TCP, QMP__ADDR_FD } qmp__addr_kind;

/*
 * A parsed address (syntax in client.h).  path/host/port point into buf,
 * which the address owns; desc is the canonical form used in messages:
 * "unix:PATH", "HOST:PORT", "[V6]:PORT" or "fd:N".
 */
typedef struct qmp__address {
    qmp__addr_kind kind;
    const char *path; /* UNIX */
    const char *host; /* TCP, without brackets */
    const char *port; /* TCP, decimal digits */
    int fd;           /* FD */
    char *buf;
    char *desc;
} qmp__address;

/*
 * Parses text into *ret (which the caller clears with
 * qmp__address_clear(), also after a failure).  for_listen allows port 0
 * and refuses fd:N.  Returns 0, -EINVAL (QMP_ERR_INVALID),
 * -ENAMETOOLONG (unix path does not fit sun_path, QMP_ERR_INVALID),
 * -ENOMEM.
 */
int qmp__address_parse(const char *text, bool for_listen, qmp__address *ret, qmp_error *err);
void qmp__address_clear(qmp__address *a);

/* ------------------------------------------------------------- sockets */

/*
 * Connects to a parsed address before deadline (timeout_ms is only for
 * messages).  On success *ret_fd is a connected, non-blocking,
 * close-on-exec stream socket and *ret_is_unix tells whether it can carry
 * descriptors.  For QMP__ADDR_FD the descriptor is adopted (see
 * qmp__socket_adopt()).  Errors name a->desc: QMP_ERR_CONNECT with the
 * errno of the failing call, -ETIMEDOUT (QMP_ERR_TIMEOUT), -ENOMEM.
 * With deadline QMP__DEADLINE_ASYNC it does not wait: it returns 1 with
 * *ret_fd set when the connect is still in progress (check it with
 * qmp__socket_connect_result() once the socket is writable).
 */
int qmp__socket_connect(const qmp__address *a, int64_t deadline, int timeout_ms,
                        const qmp__logger *lg, int *ret_fd, bool *ret_is_unix, qmp_error *err);

/* The outcome of a non-blocking connect on fd: 0 or a negative errno. */
int qmp__socket_connect_result(int fd);

/*
 * Checks that fd is a stream socket and makes it non-blocking and
 * close-on-exec.  Takes ownership: on failure fd is closed (unless it is
 * not open at all).  Returns 0, -EBADF, -ENOTSOCK (QMP_ERR_CONNECT), or
 * the errno of fcntl() (QMP_ERR_SYSTEM).
 */
int qmp__socket_adopt(int fd, const char *desc, bool *ret_is_unix, qmp_error *err);

/*
 * One non-blocking write of len bytes (with n_fds descriptors attached
 * via SCM_RIGHTS when n_fds > 0), never raising SIGPIPE.  Retries EINTR.
 * Returns the number of bytes written or a negative errno (-EAGAIN when
 * the socket is full).
 */
ssize_t qmp__socket_send(int fd, const void *data, size_t len, const int *fds, size_t n_fds);

/* One non-blocking read.  Retries EINTR.  Returns the number of bytes
 * read, 0 at end of file, or a negative errno (-EAGAIN when empty). */
ssize_t qmp__socket_recv(int fd, void *buf, size_t len);

/* Thread-safe strerror(). */
const char *qmp__strerror(int errnum, char *buf, size_t len);

/* malloc'ed printf; NULL when out of memory. */
char *qmp__strdup_printf(const char *fmt, ...) QMP_PRINTF(1, 2);

/* ------------------------------------------------- client.c for listener */

/* Validates c for a connect (not NULL, not used after fork()).  Returns 0,
 * -EINVAL or -ECHILD (QMP_ERR_INVALID). */
int qmp__client_check(const qmp_client *c, qmp_error *err);

/* The client's connect timeout (ms, or QMP_TIMEOUT_INFINITE). */
int qmp__client_connect_timeout(const qmp_client *c);

/*
 * Closes whatever c was connected to, then runs greeting and negotiation
 * over fd (connected, non-blocking, close-on-exec) before deadline.  Takes
 * ownership of fd.  desc names the peer in messages; timeout_ms is only
 * for messages.  Returns as qmp_client_connect().
 */
int qmp__client_attach(qmp_client *c, int fd, bool is_unix, const char *desc, int64_t deadline,
                       int timeout_ms, qmp_error *err);

#endif /* QMP_TRANSPORT_H */
