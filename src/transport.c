/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sockets for the blocking client: address parsing, deadlines, connect
 * with a deadline, adopting a caller's descriptor, non-blocking send and
 * receive (with SCM_RIGHTS), and the listener for QEMUs that connect to
 * us.  Nothing here knows QMP; client.c drives the session.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, GNU strerror_r */
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"

#define LISTEN_BACKLOG 16

/* ----------------------------------------------------------- deadlines */

int64_t qmp__now_ns(void)
{
    struct timespec ts;

    /* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t qmp__deadline_after(int timeout_ms)
{
    if (timeout_ms < 0)
        return QMP__NO_DEADLINE;
    /* INT_MAX ms is about 2^51 ns: no overflow for any realistic clock value. */
    return qmp__now_ns() + (int64_t)timeout_ms * 1000000;
}

int qmp__deadline_remaining_ms(int64_t deadline)
{
    if (deadline == QMP__NO_DEADLINE)
        return -1;
    int64_t left = deadline - qmp__now_ns();
    if (left <= 0)
        return 0;
    /* Round up: poll() sleeps at least the time asked, so after a poll
     * that timed out the deadline has really passed and we never spin. */
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ------------------------------------------------------------- helpers */

const char *qmp__strerror(int errnum, char *buf, size_t len)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(errnum, buf, len);
#else
    if (strerror_r(errnum, buf, len) != 0)
        snprintf(buf, len, "error %d", errnum);
    return buf;
#endif
}

char *qmp__strdup_printf(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Category for a failed socket-level call: ENOMEM is never a "connect" problem. */
static qmp_error_category errno_category(int e)
{
    return e == ENOMEM || e == ENOBUFS ? QMP_ERR_NOMEM : QMP_ERR_CONNECT;
}

static void set_nodelay(int fd)
{
    int one = 1;

    /* Without it, a small request waits for the previous one's ACK
     * (Nagle); failure only costs latency. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* "1.2.3.4:5" or "[::1]:5" for an IPv4 or IPv6 socket address; NULL for
 * other families or out of memory. */
static char *format_inet(const struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host)) == NULL)
            return NULL;
        return qmp__strdup_printf("%s:%u", host, (unsigned)ntohs(sin->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host)) == NULL)
            return NULL;
        return qmp__strdup_printf("[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    }
    return NULL;
}

/* ----------------------------------------------------------- addresses */

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
    }
    return true;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int parse_unix(qmp__address *a, const char *path, const char *text, qmp_error *err)
{
    struct sockaddr_un sun;
    size_t len = strlen(path);

    if (len == 0)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "empty unix socket path in '%s'",
                              text);
    /* Refuse rather than truncate: a truncated path names another socket. */
    if (len >= sizeof(sun.sun_path))
        return qmp__error_set(err, -ENAMETOOLONG, QMP_ERR_INVALID,
                              "unix socket path is %zu bytes, but at most %zu fit in a socket "
                              "address (use a shorter or relative path): %s",
                              len, sizeof(sun.sun_path) - 1, path);
    a->buf = strdup(path);
    a->desc = qmp__strdup_printf("unix:%s", path);
    if (a->buf == NULL || a->desc == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    a->kind = QMP__ADDR_UNIX;
    a->path = a->buf;
    return 0;
}

static int parse_tcp(qmp__address *a, const char *hostport, bool for_listen, const char *text,
                     qmp_error *err)
{
    char *host, *port;

    a->buf = strdup(hostport);
    if (a->buf == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    if (a->buf[0] == '[') {
        char *end = strchr(a->buf, ']');
        if (end == NULL || end == a->buf + 1)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                                  "invalid bracketed IPv6 address in '%s'", text);
        if (end[1] != ':')
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                                  "missing port in '%s' (expected [IPV6]:PORT)", text);
        *end = '\0';
        host = a->buf + 1;
        port = end + 2;
    } else {
        char *colon = strrchr(a->buf, ':');
        if (colon == NULL)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                                  "missing port in '%s' (expected HOST:PORT)", text);
        *colon = '\0';
        host = a->buf;
        port = colon + 1;
        if (strchr(host, ':') != NULL)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                                  "write IPv6 addresses in brackets, as [ADDRESS]:PORT: '%s'",
                                  text);
    }
    if (*host == '\0')
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "missing host in '%s'", text);
    if (!all_digits(port) || strlen(port) > 5 || atoi(port) > 65535)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "invalid port in '%s' (expected a number up to 65535)", text);
    if (atoi(port) == 0 && !for_listen)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "cannot connect to port 0 ('%s')",
                              text);
    a->kind = QMP__ADDR_TCP;
    a->host = host;
    a->port = port;
    a->desc = qmp__strdup_printf(strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    if (a->desc == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    return 0;
}

static int parse_fd(qmp__address *a, const char *num, bool for_listen, const char *text,
                    qmp_error *err)
{
    if (for_listen)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "cannot listen on a descriptor address ('%s')", text);
    if (!all_digits(num) || strlen(num) > 10 || strtoll(num, NULL, 10) > INT_MAX)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "invalid descriptor number in '%s' (expected fd:N)", text);
    a->kind = QMP__ADDR_FD;
    a->fd = (int)strtol(num, NULL, 10);
    a->desc = qmp__strdup_printf("fd:%d", a->fd);
    if (a->desc == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    return 0;
}

int qmp__address_parse(const char *text, bool for_listen, qmp__address *ret, qmp_error *err)
{
    if (ret == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no address result given");
    memset(ret, 0, sizeof(*ret));
    ret->fd = -1;
    if (text == NULL || *text == '\0')
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "empty address");

    if (has_prefix(text, "unix:"))
        return parse_unix(ret, text + 5, text, err);
    if (has_prefix(text, "tcp:"))
        return parse_tcp(ret, text + 4, for_listen, text, err);
    if (has_prefix(text, "fd:"))
        return parse_fd(ret, text + 3, for_listen, text, err);
    if (text[0] == '[')
        return parse_tcp(ret, text, for_listen, text, err);
    /* A bare string is TCP only when it has no '/' and ends in ":digits";
     * anything else ("qmp.sock", "/run/x", "./a:1") is a unix path. */
    const char *colon = strrchr(text, ':');
    if (strchr(text, '/') == NULL && colon != NULL && all_digits(colon + 1))
        return parse_tcp(ret, text, for_listen, text, err);
    return parse_unix(ret, text, text, err);
}

void qmp__address_clear(qmp__address *a)
{
    if (a == NULL)
        return;
    free(a->buf);
    free(a->desc);
    memset(a, 0, sizeof(*a));
    a->fd = -1;
}

/* ------------------------------------------------------------- connect */

/*
 * Waits until a non-blocking connect() on fd completes.  Returns 0,
 * -ETIMEDOUT, or the negative errno of the connect or of poll().
 */
static int wait_connected(int fd, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int tmo = qmp__deadline_remaining_ms(deadline);
        int n = poll(&pfd, 1, tmo);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            if (qmp__deadline_remaining_ms(deadline) == 0)
                return -ETIMEDOUT;
            continue;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            return -errno;
        return -soerr;
    }
}

/* connect() on a non-blocking socket, then wait for completion. */
static int connect_with_deadline(int fd, const struct sockaddr *sa, socklen_t salen,
                                 int64_t deadline)
{
    if (connect(fd, sa, salen) == 0)
        return 0;
    /* After EINTR the connection attempt goes on asynchronously, as with
     * EINPROGRESS. */
    if (errno == EINPROGRESS || errno == EINTR)
        return deadline == QMP__DEADLINE_ASYNC ? -EINPROGRESS : wait_connected(fd, deadline);
    return -errno;
}

static int connect_unix(const qmp__address *a, int64_t deadline, int timeout_ms, int *ret_fd,
                        qmp_error *err)
{
    struct sockaddr_un sun;
    char eb[128];

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, a->path, strlen(a->path) + 1); /* length checked by the parser */

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return qmp__error_set(err, -errno, errno_category(errno),
                              "cannot create a socket for %s: %s", a->desc,
                              qmp__strerror(errno, eb, sizeof(eb)));
    int r = connect_with_deadline(fd, (const struct sockaddr *)&sun, sizeof(sun), deadline);
    if (r == 0 || r == -EINPROGRESS) {
        *ret_fd = fd;
        return r == 0 ? 0 : 1;
    }
    close(fd);
    if (r == -ETIMEDOUT)
        return qmp__error_set(err, r, QMP_ERR_TIMEOUT, "cannot connect to %s within %d ms", a->desc,
                              timeout_ms);
    /* A non-blocking connect to a unix socket whose backlog is full fails
     * at once with EAGAIN instead of waiting. */
    if (r == -EAGAIN)
        return qmp__error_set(err, r, QMP_ERR_CONNECT,
                              "cannot connect to %s: the server's queue of waiting connections is "
                              "full (is another client connected?)",
                              a->desc);
    return qmp__error_set(err, r, errno_category(-r), "cannot connect to %s: %s", a->desc,
                          qmp__strerror(-r, eb, sizeof(eb)));
}

static int connect_tcp(const qmp__address *a, int64_t deadline, int timeout_ms,
                       const qmp__logger *lg, int *ret_fd, qmp_error *err)
{
    struct addrinfo hints, *res = NULL;
    char eb[128];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    /* getaddrinfo() cannot be bounded by our deadline without a thread;
     * numeric addresses and /etc/hosts answer at once, DNS may not. */
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g != 0) {
        if (g == EAI_MEMORY)
            return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory resolving %s",
                                  a->desc);
        if (g == EAI_SYSTEM && errno != 0)
            return qmp__error_set(err, -errno, errno_category(errno), "cannot resolve %s: %s",
                                  a->desc, qmp__strerror(errno, eb, sizeof(eb)));
        return qmp__error_set(err, -EHOSTUNREACH, QMP_ERR_CONNECT, "cannot resolve %s: %s", a->desc,
                              gai_strerror(g));
    }

    int last = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last = -errno;
            continue;
        }
        int r = connect_with_deadline(fd, ai->ai_addr, ai->ai_addrlen, deadline);
        if (r == 0 || r == -EINPROGRESS) {
            /* In progress (asynchronous connects only): the caller checks
             * the outcome when the socket turns writable; later addresses
             * are not tried then. */
            freeaddrinfo(res);
            set_nodelay(fd);
            *ret_fd = fd;
            return r == 0 ? 0 : 1;
        }
        close(fd);
        if (r == -ETIMEDOUT) {
            freeaddrinfo(res);
            return qmp__error_set(err, r, QMP_ERR_TIMEOUT, "cannot connect to %s within %d ms",
                                  a->desc, timeout_ms);
        }
        if (qmp__log_enabled(lg, QMP_LOG_DEBUG)) {
            char host[NI_MAXHOST];
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), NULL, 0,
                            NI_NUMERICHOST) != 0)
                snprintf(host, sizeof(host), "?");
            qmp__log(lg, QMP_LOG_DEBUG, "connecting to %s via %s failed: %s", a->desc, host,
                     qmp__strerror(-r, eb, sizeof(eb)));
        }
        last = r;
    }
    freeaddrinfo(res);
    return qmp__error_set(err, last, errno_category(-last), "cannot connect to %s: %s", a->desc,
                          qmp__strerror(-last, eb, sizeof(eb)));
}

int qmp__socket_connect_result(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -errno;
    return -soerr;
}

int qmp__socket_adopt(int fd, const char *desc, bool *ret_is_unix, qmp_error *err)
{
    char eb[128];
    int type = 0;
    socklen_t len = sizeof(type);

    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return qmp__error_set(err, -EBADF, QMP_ERR_INVALID, "cannot use %s: it is not open", desc);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        int e = errno;
        close(fd);
        if (e == ENOTSOCK)
            return qmp__error_set(err, -ENOTSOCK, QMP_ERR_CONNECT,
                                  "cannot use %s: it is not a socket", desc);
        return qmp__error_set(err, -e, QMP_ERR_CONNECT, "cannot use %s: %s", desc,
                              qmp__strerror(e, eb, sizeof(eb)));
    }
    if (type != SOCK_STREAM) {
        close(fd);
        return qmp__error_set(err, -ENOTSOCK, QMP_ERR_CONNECT,
                              "cannot use %s: it is not a stream socket", desc);
    }

    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) < 0) {
        int e = errno;
        close(fd);
        return qmp__error_set(err, -e, QMP_ERR_CONNECT, "cannot use %s: %s", desc,
                              qmp__strerror(e, eb, sizeof(eb)));
    }
    /* A listening or unconnected socket would only fail later, at the
     * first read, with a less helpful message. */
    struct sockaddr_storage peer;
    socklen_t peerlen = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &peerlen) < 0) {
        int e = errno;
        close(fd);
        if (e == ENOTCONN)
            return qmp__error_set(err, -ENOTCONN, QMP_ERR_CONNECT,
                                  "cannot use %s: the socket is not connected", desc);
        return qmp__error_set(err, -e, QMP_ERR_CONNECT, "cannot use %s: %s", desc,
                              qmp__strerror(e, eb, sizeof(eb)));
    }

    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) {
        int e = errno;
        close(fd);
        return qmp__error_set(err, -e, QMP_ERR_SYSTEM, "cannot set up %s: %s", desc,
                              qmp__strerror(e, eb, sizeof(eb)));
    }
    if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
        set_nodelay(fd);
    *ret_is_unix = ss.ss_family == AF_UNIX;
    return 0;
}

int qmp__socket_connect(const qmp__address *a, int64_t deadline, int timeout_ms,
                        const qmp__logger *lg, int *ret_fd, bool *ret_is_unix, qmp_error *err)
{
    switch (a->kind) {
    case QMP__ADDR_UNIX:
        *ret_is_unix = true;
        return connect_unix(a, deadline, timeout_ms, ret_fd, err);
    case QMP__ADDR_TCP:
        *ret_is_unix = false;
        return connect_tcp(a, deadline, timeout_ms, lg, ret_fd, err);
    case QMP__ADDR_FD: {
        int r = qmp__socket_adopt(a->fd, a->desc, ret_is_unix, err);
        if (r == 0)
            *ret_fd = a->fd;
        return r;
    }
    }
    return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "unknown address kind");
}

/* ------------------------------------------------------------------ I/O */

ssize_t qmp__socket_send(int fd, const void *data, size_t len, const int *fds, size_t n_fds)
{
    ssize_t n;

    if (n_fds == 0) {
        do
            n = send(fd, data, len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
    } else {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * QMP__MAX_FDS)];
        } u;
        struct iovec iov;
        struct msghdr msg;

        if (fds == NULL || n_fds > QMP__MAX_FDS)
            return -EINVAL;
        memset(&u, 0, sizeof(u));
        memset(&msg, 0, sizeof(msg));
        iov.iov_base = (void *)data;
        iov.iov_len = len;
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * n_fds);
        do
            n = sendmsg(fd, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
    }
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

ssize_t qmp__socket_recv(int fd, void *buf, size_t len)
{
    ssize_t n;

    do
        n = recv(fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

/* ------------------------------------------------------------- listener */

struct qmp_listener {
    int fd;
    bool is_unix;
    char *path; /* unix: the path we bound, removed on free */
    dev_t dev;  /* ... but only while it is still our socket */
    ino_t ino;
    char *address;
};

static int listen_unix(qmp_listener *l, const qmp__address *a, qmp_error *err)
{
    struct sockaddr_un sun;
    struct stat st;
    char eb[128];

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, a->path, strlen(a->path) + 1);

    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0)
        return qmp__error_set(err, -errno, errno_category(errno),
                              "cannot create a socket for %s: %s", a->desc,
                              qmp__strerror(errno, eb, sizeof(eb)));
    /* bind() refuses an existing path, so we never take over (or later
     * remove) a file that is not ours. */
    if (bind(l->fd, (const struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;
        if (e == EADDRINUSE)
            return qmp__error_set(err, -EADDRINUSE, QMP_ERR_CONNECT,
                                  "cannot listen on %s: the path already exists", a->desc);
        return qmp__error_set(err, -e, errno_category(e), "cannot listen on %s: %s", a->desc,
                              qmp__strerror(e, eb, sizeof(eb)));
    }
    if (stat(a->path, &st) == 0) {
        l->dev = st.st_dev;
        l->ino = st.st_ino;
    }
    l->path = strdup(a->path);
    if (l->path == NULL) {
        unlink(a->path);
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    }
    if (listen(l->fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        return qmp__error_set(err, -e, errno_category(e), "cannot listen on %s: %s", a->desc,
                              qmp__strerror(e, eb, sizeof(eb)));
    }
    l->is_unix = true;
    l->address = strdup(a->desc);
    if (l->address == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    return 0;
}

static int listen_tcp(qmp_listener *l, const qmp__address *a, qmp_error *err)
{
    struct addrinfo hints, *res = NULL;
    char eb[128];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    int g = getaddrinfo(a->host, a->port, &hints, &res);
    if (g != 0) {
        if (g == EAI_MEMORY)
            return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory resolving %s",
                                  a->desc);
        return qmp__error_set(err, -EADDRNOTAVAIL, QMP_ERR_CONNECT, "cannot resolve %s: %s",
                              a->desc, gai_strerror(g));
    }
    int last = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int one = 1;
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            last = -errno;
            continue;
        }
        /* Lets a test or a restarted program reuse a port in TIME_WAIT. */
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
            last = -errno;
            close(fd);
            continue;
        }
        l->fd = fd;
        break;
    }
    freeaddrinfo(res);
    if (l->fd < 0)
        return qmp__error_set(err, last, errno_category(-last), "cannot listen on %s: %s", a->desc,
                              qmp__strerror(-last, eb, sizeof(eb)));

    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0)
        return qmp__error_set(err, -errno, QMP_ERR_SYSTEM, "cannot get the address of %s: %s",
                              a->desc, qmp__strerror(errno, eb, sizeof(eb)));
    l->address = format_inet(&ss);
    if (l->address == NULL)
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    return 0;
}

int qmp_listener_new(qmp_listener **ret, const char *address, qmp_error *err)
{
    qmp__address a;

    if (ret == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no listener result given");
    int r = qmp__address_parse(address, true, &a, err);
    if (r < 0) {
        qmp__address_clear(&a);
        return r;
    }
    qmp_listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        qmp__address_clear(&a);
        return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
    }
    l->fd = -1;
    r = a.kind == QMP__ADDR_UNIX ? listen_unix(l, &a, err) : listen_tcp(l, &a, err);
    qmp__address_clear(&a);
    if (r < 0) {
        qmp_listener_free(l);
        return r;
    }
    *ret = l;
    return 0;
}

const char *qmp_listener_get_address(const qmp_listener *l)
{
    return l != NULL ? l->address : NULL;
}

int qmp_listener_get_fd(const qmp_listener *l)
{
    return l != NULL ? l->fd : -1;
}

int qmp_listener_accept(qmp_listener *l, qmp_client *c, int timeout_ms, qmp_error *err)
{
    char eb[128];

    if (l == NULL || l->fd < 0)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "no listener given");
    if (timeout_ms < QMP_TIMEOUT_DEFAULT)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid timeout %d ms", timeout_ms);
    int r = qmp__client_check(c, err);
    if (r < 0)
        return r;
    if (timeout_ms == QMP_TIMEOUT_DEFAULT)
        timeout_ms = qmp__client_connect_timeout(c);
    int64_t deadline = qmp__deadline_after(timeout_ms);

    struct sockaddr_storage ss;
    int fd;
    for (;;) {
        socklen_t len = sizeof(ss);
        memset(&ss, 0, sizeof(ss));
        fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0)
            break;
        /* A connection that was reset while queued is not our failure:
         * wait for the next one. */
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED &&
            errno != EPROTO)
            return qmp__error_set(err, -errno, errno_category(errno),
                                  "cannot accept a connection on %s: %s", l->address,
                                  qmp__strerror(errno, eb, sizeof(eb)));
        int tmo = qmp__deadline_remaining_ms(deadline);
        if (tmo == 0)
            return qmp__error_set(err, -ETIMEDOUT, QMP_ERR_TIMEOUT,
                                  "no connection to %s within %d ms", l->address, timeout_ms);
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        if (poll(&pfd, 1, tmo) < 0 && errno != EINTR)
            return qmp__error_set(err, -errno, QMP_ERR_SYSTEM, "cannot wait on %s: %s", l->address,
                                  qmp__strerror(errno, eb, sizeof(eb)));
    }

    char *peer = NULL;
    if (!l->is_unix) {
        set_nodelay(fd);
        peer = format_inet(&ss);
    }
    r = qmp__client_attach(c, fd, l->is_unix, peer != NULL ? peer : l->address, deadline,
                           timeout_ms, err);
    free(peer);
    return r;
}

void qmp_listener_free(qmp_listener *l)
{
    struct stat st;

    if (l == NULL)
        return;
    if (l->fd >= 0)
        close(l->fd);
    /* Remove the socket file only while it is still the one we created:
     * someone may have replaced it meanwhile. */
    if (l->path != NULL && lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == l->dev && st.st_ino == l->ino)
        unlink(l->path);
    free(l->path);
    free(l->address);
    free(l);
}
