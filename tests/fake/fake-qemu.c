/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The scripted fake QEMU (see fake-qemu.h).  One thread per fake runs the
 * script over a non-blocking socket; every wait polls the socket together
 * with a wake-up pipe, so teardown interrupts any step at once, and every
 * wait has a deadline, so a client that never sends turns into a
 * recorded error instead of a hung test.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fake-qemu.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json_object_iterator.h>
#include <json-c/json_tokener.h>
#include <json-c/linkhash.h>
#include <json-c/json_util.h>

#define FAKE_MAX_FDS 64
#define FAKE_SAFETY_MS 30000
#define FAKE_JSON_DEPTH 10000

typedef enum step_kind {
    STEP_SEND,
    STEP_EXPECT,
    STEP_REPLY,
    STEP_REPLY_ERROR,
    STEP_CLOSE,
    STEP_SHUT_WR,
    STEP_HOLD,
    STEP_SERVE
} step_kind;

typedef struct step {
    step_kind kind;
    char *data; /* SEND: bytes; REPLY: return text; REPLY_ERROR: class */
    size_t len;
    char *desc; /* REPLY_ERROR */
    int req;    /* EXPECT, REPLY, REPLY_ERROR */
    int dribble_ms;
    bool cut;
    size_t cut_bytes;
    fake_qemu_serve_fn serve_fn; /* SERVE */
    void *serve_userdata;
} step;

typedef struct request {
    char *command; /* NULL for an unused slot */
    json_object *pattern;
    unsigned flags;
    int n_fds_expected;
    json_object *msg; /* the request received, or NULL */
    char *text;
    int fds[FAKE_MAX_FDS];
    size_t n_fds;
} request;

typedef enum fake_mode { MODE_PAIR, MODE_UNIX, MODE_TCP, MODE_CONNECT } fake_mode;

/* Results of a step beyond 0 (go on) and a negative errno (failed). */
#define STEP_ENDED 1       /* the connection was closed on purpose */
#define STEP_INTERRUPTED 2 /* teardown or the client's close cut it short */

struct fake_qemu {
    fake_mode mode;
    int sock;      /* the fake's end of the connection */
    int client_fd; /* the client end of the socketpair, until taken */
    int listen_fd; /* MODE_UNIX, MODE_TCP */
    char address[128];
    char *greeting;
    fake_qemu_negotiation negotiation;

    step *steps;
    size_t n_steps;
    request *reqs;
    size_t n_reqs;
    int64_t event_seconds;

    pthread_t thread;
    bool started;
    bool finished;
    int wake[2];

    /* Shared with the thread: protected by lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop;
    bool script_over;
    unsigned resumes;
    size_t steps_done; /* steps 0..steps_done-1 completed */
    long failed_step;  /* index of a step that recorded its own error, or -1 */
    long interrupted;  /* index of a step cut short harmlessly, or -1 */
    char **errors;
    size_t n_errors;
    size_t bytes_read;

    /* Thread-only state. */
    char *in;
    size_t in_len;
    size_t in_cap;
    size_t in_fed;
    json_tokener *tok;
    int pending_fds[FAKE_MAX_FDS];
    size_t n_pending_fds;
    char *out; /* what a serve function queued */
    size_t out_len;
    size_t out_cap;
};

/* ------------------------------------------------------------- helpers */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

static char *xmemdup(const void *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void record_error(fake_qemu *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void record_error(fake_qemu *f, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&f->lock);
    f->errors = xrealloc(f->errors, (f->n_errors + 1) * sizeof(*f->errors));
    f->errors[f->n_errors++] = xstrdup(buf);
    pthread_mutex_unlock(&f->lock);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A short excerpt of a message, control bytes replaced, for error texts. */
static const char *excerpt(const char *s, char *buf, size_t size)
{
    size_t n = strlen(s);
    if (n < size) {
        memcpy(buf, s, n + 1);
    } else {
        memcpy(buf, s, size - 4);
        memcpy(buf + size - 4, "...", 4);
    }
    for (char *p = buf; *p; p++) {
        if ((unsigned char)*p < 0x20)
            *p = '?';
    }
    return buf;
}

static const char *step_name(const fake_qemu *f, const step *st, char *buf, size_t size)
{
    switch (st->kind) {
    case STEP_SEND:
        snprintf(buf, size, "send of %zu bytes", st->len);
        break;
    case STEP_EXPECT:
        snprintf(buf, size, "expect '%s' (request %d)", f->reqs[st->req].command, st->req);
        break;
    case STEP_REPLY:
        snprintf(buf, size, "reply to request %d", st->req);
        break;
    case STEP_REPLY_ERROR:
        snprintf(buf, size, "error reply to request %d", st->req);
        break;
    case STEP_CLOSE:
        snprintf(buf, size, "close");
        break;
    case STEP_SHUT_WR:
        snprintf(buf, size, "shutdown(SHUT_WR)");
        break;
    case STEP_HOLD:
        snprintf(buf, size, "hold");
        break;
    case STEP_SERVE:
        snprintf(buf, size, "serve");
        break;
    }
    return buf;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

/* ------------------------------------------------------------ creation */

static fake_qemu *fake_alloc(fake_mode mode)
{
    fake_qemu *f = xmalloc(sizeof(*f));
    memset(f, 0, sizeof(*f));
    f->mode = mode;
    f->sock = -1;
    f->client_fd = -1;
    f->listen_fd = -1;
    f->wake[0] = f->wake[1] = -1;
    f->greeting = xstrdup(FAKE_QEMU_GREETING);
    f->negotiation = FAKE_QEMU_NEG_OK;
    f->event_seconds = 1700000000;
    f->failed_step = -1;
    f->interrupted = -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    if (pipe2(f->wake, O_CLOEXEC | O_NONBLOCK) < 0)
        abort();
    /* Request 0 is reserved for the automatic qmp_capabilities. */
    f->reqs = xmalloc(sizeof(*f->reqs));
    memset(f->reqs, 0, sizeof(*f->reqs));
    f->n_reqs = 1;
    f->tok = json_tokener_new_ex(FAKE_JSON_DEPTH);
    if (f->tok == NULL)
        abort();
    json_tokener_set_flags(f->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                       JSON_TOKENER_VALIDATE_UTF8);
    return f;
}

fake_qemu *fake_qemu_new(void)
{
    fake_qemu *f = fake_alloc(MODE_PAIR);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        fake_qemu_free(f);
        return NULL;
    }
    f->sock = sv[0];
    f->client_fd = sv[1];
    set_nonblock(f->sock);
    snprintf(f->address, sizeof(f->address), "fd:%d", f->client_fd);
    return f;
}

fake_qemu *fake_qemu_new_unix(const char *path)
{
    fake_qemu *f = fake_alloc(MODE_UNIX);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path) || strlen(path) >= sizeof(f->address)) {
        fake_qemu_free(f);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fake_qemu_free(f);
        return NULL;
    }
    snprintf(f->address, sizeof(f->address), "%s", path);
    if (listen(f->listen_fd, 4) < 0) {
        fake_qemu_free(f);
        return NULL;
    }
    return f;
}

fake_qemu *fake_qemu_new_tcp(void)
{
    fake_qemu *f = fake_alloc(MODE_TCP);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(f->listen_fd, 4) < 0 || getsockname(f->listen_fd, (struct sockaddr *)&sa, &sl) < 0) {
        fake_qemu_free(f);
        return NULL;
    }
    snprintf(f->address, sizeof(f->address), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    return f;
}

fake_qemu *fake_qemu_new_connect(const char *path)
{
    fake_qemu *f = fake_alloc(MODE_CONNECT);
    if (strlen(path) >= sizeof(f->address) ||
        strlen(path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        fake_qemu_free(f);
        return NULL;
    }
    snprintf(f->address, sizeof(f->address), "%s", path);
    return f;
}

int fake_qemu_take_client_fd(fake_qemu *f)
{
    int fd = f->client_fd;
    f->client_fd = -1;
    return fd;
}

const char *fake_qemu_address(const fake_qemu *f)
{
    return f->address;
}

void fake_qemu_set_greeting(fake_qemu *f, const char *text)
{
    free(f->greeting);
    f->greeting = text ? xstrdup(text) : NULL;
}

void fake_qemu_set_negotiation(fake_qemu *f, fake_qemu_negotiation mode)
{
    f->negotiation = mode;
}

/* --------------------------------------------------------------- script */

static step *add_step(fake_qemu *f, step_kind kind)
{
    if (f->started) {
        record_error(f, "script step added after start");
        abort();
    }
    f->steps = xrealloc(f->steps, (f->n_steps + 1) * sizeof(*f->steps));
    step *st = &f->steps[f->n_steps++];
    memset(st, 0, sizeof(*st));
    st->kind = kind;
    st->req = -1;
    st->dribble_ms = -1;
    return st;
}

static json_object *parse_text(fake_qemu *f, const char *text)
{
    json_tokener *tok;
    json_object *o;
    if (text == NULL)
        return NULL;
    tok = json_tokener_new_ex(FAKE_JSON_DEPTH);
    o = json_tokener_parse_ex(tok, text, (int)strlen(text));
    if (json_tokener_get_error(tok) != json_tokener_success)
        record_error(f, "script: invalid JSON pattern: %s", text);
    json_tokener_free(tok);
    return o;
}

static int new_request(fake_qemu *f, const char *command, const char *args_pattern, unsigned flags,
                       int n_fds)
{
    f->reqs = xrealloc(f->reqs, (f->n_reqs + 1) * sizeof(*f->reqs));
    request *r = &f->reqs[f->n_reqs];
    memset(r, 0, sizeof(*r));
    r->command = xstrdup(command);
    r->pattern = parse_text(f, args_pattern);
    r->flags = flags;
    r->n_fds_expected = n_fds;
    return (int)f->n_reqs++;
}

int fake_qemu_expect_full(fake_qemu *f, const char *command, const char *args_pattern,
                          unsigned flags, int n_fds)
{
    int req = new_request(f, command, args_pattern, flags, n_fds);
    step *st = add_step(f, STEP_EXPECT);
    st->req = req;
    return req;
}

int fake_qemu_expect(fake_qemu *f, const char *command, const char *args_pattern)
{
    return fake_qemu_expect_full(f, command, args_pattern, 0, -1);
}

void fake_qemu_reply(fake_qemu *f, int req, const char *return_json)
{
    step *st = add_step(f, STEP_REPLY);
    st->req = req;
    st->data = xstrdup(return_json);
    st->len = strlen(return_json);
}

void fake_qemu_reply_error(fake_qemu *f, int req, const char *klass, const char *desc)
{
    step *st = add_step(f, STEP_REPLY_ERROR);
    st->req = req;
    st->data = xstrdup(klass);
    st->desc = xstrdup(desc);
}

void fake_qemu_send_bytes(fake_qemu *f, const void *data, size_t len)
{
    step *st = add_step(f, STEP_SEND);
    st->data = xmemdup(data, len);
    st->len = len;
}

void fake_qemu_send(fake_qemu *f, const char *text)
{
    fake_qemu_send_bytes(f, text, strlen(text));
}

static char *event_text(fake_qemu *f, const char *name, const char *data_json)
{
    char head[256];
    int64_t sec = f->event_seconds++;
    int n = snprintf(head, sizeof(head),
                     "{\"timestamp\": {\"seconds\": %" PRId64 ", \"microseconds\": %d}, "
                     "\"event\": \"%s\"",
                     sec, (int)(sec % 1000000), name);
    size_t dlen = data_json ? strlen(data_json) + 16 : 0;
    char *s = xmalloc((size_t)n + dlen + 4);
    memcpy(s, head, (size_t)n);
    if (data_json)
        n += sprintf(s + n, ", \"data\": %s", data_json);
    memcpy(s + n, "}\r\n", 4);
    return s;
}

void fake_qemu_event(fake_qemu *f, const char *name, const char *data_json)
{
    char *s = event_text(f, name, data_json);
    fake_qemu_send(f, s);
    free(s);
}

void fake_qemu_event_burst(fake_qemu *f, const char *name, unsigned n)
{
    char *all = NULL;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"seq\": %u}", i);
        char *s = event_text(f, name, data);
        size_t sl = strlen(s);
        all = xrealloc(all, len + sl + 1);
        memcpy(all + len, s, sl + 1);
        len += sl;
        free(s);
    }
    fake_qemu_send_bytes(f, all ? all : "", len);
    free(all);
}

static step *last_send_step(fake_qemu *f)
{
    if (f->n_steps == 0)
        abort();
    step *st = &f->steps[f->n_steps - 1];
    if (st->kind != STEP_SEND && st->kind != STEP_REPLY && st->kind != STEP_REPLY_ERROR)
        abort();
    return st;
}

void fake_qemu_dribble(fake_qemu *f, int interval_ms)
{
    last_send_step(f)->dribble_ms = interval_ms < 0 ? 0 : interval_ms;
}

void fake_qemu_cut(fake_qemu *f, size_t n_bytes)
{
    step *st = last_send_step(f);
    st->cut = true;
    st->cut_bytes = n_bytes;
}

void fake_qemu_close(fake_qemu *f)
{
    add_step(f, STEP_CLOSE);
}

void fake_qemu_shutdown_write(fake_qemu *f)
{
    add_step(f, STEP_SHUT_WR);
}

void fake_qemu_hold(fake_qemu *f)
{
    add_step(f, STEP_HOLD);
}

void fake_qemu_serve(fake_qemu *f, fake_qemu_serve_fn fn, void *userdata)
{
    step *st = add_step(f, STEP_SERVE);
    st->serve_fn = fn;
    st->serve_userdata = userdata;
}

void fake_qemu_record_error(fake_qemu *f, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    record_error(f, "%s", buf);
}

/* ------------------------------------------------------------------ I/O */

/*
 * Waits until sock is ready for events (or, with sock -1, only for the
 * wake-up pipe).  Returns 1 when ready, 0 on timeout, -ECANCELED when the
 * fake is being torn down.
 */
static int wait_fd(fake_qemu *f, int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p[2] = {{f->wake[0], POLLIN, 0}, {fd, events, 0}};
        int64_t left = deadline - now_ms();
        if (left < 0)
            left = 0;
        int r = poll(p, fd >= 0 ? 2 : 1, (int)left);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (p[0].revents)
            return -ECANCELED;
        if (r == 0)
            return 0;
        if (fd >= 0 && p[1].revents)
            return 1;
    }
}

/* Reads what the socket holds now, without waiting.  Returns bytes read
 * (> 0), 0 at end of file, -EAGAIN, or another negative errno.
 * Descriptors that came along wait for the next request. */
static long read_some(fake_qemu *f)
{
    if (f->in_cap - f->in_len < 65536) {
        f->in_cap = f->in_len + 65536 * 2;
        f->in = xrealloc(f->in, f->in_cap);
    }
    union {
        char buf[CMSG_SPACE(sizeof(int) * FAKE_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {f->in + f->in_len, f->in_cap - f->in_len};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    ssize_t n;
    do {
        n = recvmsg(f->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (mh.msg_flags & MSG_CTRUNC)
        record_error(f, "ancillary data truncated (more than %d descriptors?)", FAKE_MAX_FDS);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (f->n_pending_fds < FAKE_MAX_FDS)
                f->pending_fds[f->n_pending_fds++] = fd;
            else
                close(fd);
        }
    }
    f->in_len += (size_t)n;
    pthread_mutex_lock(&f->lock);
    f->bytes_read += (size_t)n;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Waits for bytes and reads them.  Returns bytes read (> 0), 0 at end of
 * file, -ETIMEDOUT, -ECANCELED, or another negative errno. */
static long fill(fake_qemu *f, int64_t deadline)
{
    for (;;) {
        int r = wait_fd(f, f->sock, POLLIN, deadline);
        if (r == 0)
            return -ETIMEDOUT;
        if (r < 0)
            return r;
        long n = read_some(f);
        if (n != -EAGAIN)
            return n;
    }
}

/*
 * Takes one complete JSON value from the input buffer.  Returns 1 with
 * *ret_msg (new reference, may be NULL for JSON null) and *ret_text
 * (malloc'd, trimmed), 0 when more bytes are needed, -EPROTO for invalid
 * JSON (recorded).
 */
static int take_message(fake_qemu *f, json_object **ret_msg, char **ret_text)
{
    if (f->in_fed >= f->in_len)
        return 0;
    json_object *o = json_tokener_parse_ex(f->tok, f->in + f->in_fed, (int)(f->in_len - f->in_fed));
    enum json_tokener_error e = json_tokener_get_error(f->tok);
    if (e == json_tokener_continue) {
        f->in_fed = f->in_len;
        return 0;
    }
    if (e != json_tokener_success) {
        char buf[200];
        char *t = xmemdup(f->in, f->in_len);
        record_error(f, "client sent invalid JSON (%s): %s", json_tokener_error_desc(e),
                     excerpt(t, buf, sizeof(buf)));
        free(t);
        json_tokener_reset(f->tok);
        f->in_len = f->in_fed = 0;
        return -EPROTO;
    }
    size_t end = f->in_fed + json_tokener_get_parse_end(f->tok);
    size_t start = 0;
    size_t stop = end;
    while (start < stop && is_ws(f->in[start]))
        start++;
    while (stop > start && is_ws(f->in[stop - 1]))
        stop--;
    *ret_text = xmemdup(f->in + start, stop - start);
    *ret_msg = o;
    memmove(f->in, f->in + end, f->in_len - end);
    f->in_len -= end;
    f->in_fed = 0;
    json_tokener_reset(f->tok);
    return 1;
}

/* Reads the next message.  Returns 1, 0 at end of file, -ETIMEDOUT,
 * -ECANCELED, -EPROTO, or another negative errno. */
static long next_message(fake_qemu *f, int64_t deadline, json_object **ret_msg, char **ret_text)
{
    for (;;) {
        int r = take_message(f, ret_msg, ret_text);
        if (r != 0)
            return r;
        long n = fill(f, deadline);
        if (n <= 0)
            return n;
    }
}

/* Writes all of data.  Returns 0, STEP_INTERRUPTED (teardown, or the
 * client closed), or a negative errno (recorded by the caller). */
static int send_all(fake_qemu *f, const char *data, size_t len, int dribble_ms)
{
    size_t off = 0;
    int64_t deadline = now_ms() + FAKE_QEMU_DEADLINE_MS;
    while (off < len) {
        if (dribble_ms >= 0)
            deadline = now_ms() + FAKE_QEMU_DEADLINE_MS;
        int r = wait_fd(f, f->sock, POLLOUT, deadline);
        if (r == 0)
            return -ETIMEDOUT;
        if (r == -ECANCELED)
            return STEP_INTERRUPTED;
        if (r < 0)
            return r;
        size_t chunk = dribble_ms >= 0 ? 1 : len - off;
        ssize_t n = send(f->sock, data + off, chunk, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            if (errno == EPIPE || errno == ECONNRESET)
                return STEP_INTERRUPTED;
            return -errno;
        }
        off += (size_t)n;
        if (dribble_ms > 0 && off < len) {
            r = wait_fd(f, -1, 0, now_ms() + dribble_ms);
            if (r == -ECANCELED)
                return STEP_INTERRUPTED;
        }
    }
    return 0;
}

static void close_sock(fake_qemu *f)
{
    if (f->sock >= 0)
        close(f->sock);
    f->sock = -1;
}

/* Sends a step's bytes, honouring dribble and cut. */
static int send_step(fake_qemu *f, const step *st, const char *data, size_t len)
{
    size_t n = st->cut && st->cut_bytes < len ? st->cut_bytes : len;
    int r = send_all(f, data, n, st->dribble_ms);
    if (r != 0)
        return r;
    if (st->cut) {
        close_sock(f);
        return STEP_ENDED;
    }
    return 0;
}

/* Whether every member of pattern is in value with an equal value. */
static bool json_matches(json_object *value, json_object *pattern)
{
    if (pattern == NULL)
        return true;
    if (!json_object_is_type(pattern, json_type_object))
        return json_object_equal(value, pattern) != 0;
    if (!json_object_is_type(value, json_type_object))
        return false;
    json_object_object_foreach(pattern, key, pv) {
        json_object *vv = NULL;
        if (!json_object_object_get_ex(value, key, &vv))
            return false;
        if (pv == NULL ? vv != NULL : !json_matches(vv, pv))
            return false;
    }
    return true;
}

static const char *command_of(json_object *msg)
{
    json_object *c = NULL;
    if (!json_object_is_type(msg, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(msg, "execute", &c) &&
        !json_object_object_get_ex(msg, "exec-oob", &c))
        return NULL;
    return json_object_is_type(c, json_type_string) ? json_object_get_string(c) : NULL;
}

/* Builds the reply text to msg: {BODY, "id": ID}\r\n, where body_open
 * is the text before the id. */
static char *reply_text(json_object *msg, const char *body)
{
    json_object *id = NULL;
    const char *ids = NULL;
    if (json_object_object_get_ex(msg, "id", &id))
        ids = json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN |
                                                     JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t n = strlen(body) + (ids ? strlen(ids) : 0) + 16;
    char *s = xmalloc(n);
    if (ids)
        snprintf(s, n, "{%s, \"id\": %s}\r\n", body, ids);
    else
        snprintf(s, n, "{%s}\r\n", body);
    return s;
}

/* Answers a message nobody expected with an error, so the client does
 * not wait for its deadline. */
static void reject(fake_qemu *f, json_object *msg)
{
    if (!json_object_is_type(msg, json_type_object))
        return;
    char *s = reply_text(msg, "\"error\": {\"class\": \"CommandNotFound\", "
                              "\"desc\": \"fake QEMU: unexpected request\"}");
    send_all(f, s, strlen(s), -1);
    free(s);
}

static int run_expect(fake_qemu *f, const step *st)
{
    request *rq = &f->reqs[st->req];
    json_object *msg = NULL;
    char *text = NULL;
    char buf[300];
    long r = next_message(f, now_ms() + FAKE_QEMU_DEADLINE_MS, &msg, &text);
    if (r == -ECANCELED)
        return -ECANCELED;
    if (r == 0) {
        record_error(f, "client closed the connection while '%s' was expected", rq->command);
        return -EPIPE;
    }
    if (r == -ETIMEDOUT) {
        record_error(f, "no request within %d ms while '%s' was expected", FAKE_QEMU_DEADLINE_MS,
                     rq->command);
        return -ETIMEDOUT;
    }
    if (r < 0) {
        if (r != -EPROTO)
            record_error(f, "read failed while '%s' was expected: %s", rq->command,
                         strerror((int)-r));
        return (int)r;
    }
    const char *cmd = command_of(msg);
    if (cmd == NULL || strcmp(cmd, rq->command) != 0) {
        record_error(f, "expected '%s', got: %s", rq->command, excerpt(text, buf, sizeof(buf)));
        reject(f, msg);
        json_object_put(msg);
        free(text);
        return -EPROTO;
    }
    json_object *args = NULL;
    json_object_object_get_ex(msg, "arguments", &args);
    bool ok = (rq->flags & FAKE_QEMU_ARGS_EXACT) ? json_object_equal(args, rq->pattern) != 0
                                                 : json_matches(args, rq->pattern);
    if (!ok)
        record_error(f, "request '%s' does not match %s: %s", rq->command,
                     rq->pattern ? json_object_to_json_string(rq->pattern) : "no arguments",
                     excerpt(text, buf, sizeof(buf)));
    pthread_mutex_lock(&f->lock);
    rq->msg = msg;
    rq->text = text;
    memcpy(rq->fds, f->pending_fds, f->n_pending_fds * sizeof(int));
    rq->n_fds = f->n_pending_fds;
    f->n_pending_fds = 0;
    pthread_mutex_unlock(&f->lock);
    if (rq->n_fds_expected >= 0 && (size_t)rq->n_fds_expected != rq->n_fds)
        record_error(f, "request '%s' came with %zu descriptors, expected %d", rq->command,
                     rq->n_fds, rq->n_fds_expected);
    return 0;
}

/* The body of a reply, for reply_text(): "return": RETURN_JSON. */
static char *return_body(const char *return_json)
{
    size_t n = strlen(return_json) + 16;
    char *body = xmalloc(n);
    snprintf(body, n, "\"return\": %s", return_json);
    return body;
}

/* The body of an error reply: "error": {"class": ..., "desc": ...}. */
static char *error_body(const char *klass, const char *desc)
{
    json_object *e = json_object_new_object();
    json_object_object_add(e, "class", json_object_new_string(klass));
    json_object_object_add(e, "desc", json_object_new_string(desc));
    const char *es =
        json_object_to_json_string_ext(e, JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t n = strlen(es) + 16;
    char *body = xmalloc(n);
    snprintf(body, n, "\"error\": %s", es);
    json_object_put(e);
    return body;
}

static int run_reply(fake_qemu *f, const step *st)
{
    request *rq = &f->reqs[st->req];
    char *body;
    if (rq->msg == NULL) {
        record_error(f, "reply to request %d, which never arrived", st->req);
        return -EINVAL;
    }
    if (st->kind == STEP_REPLY)
        body = return_body(st->data);
    else
        body = error_body(st->data, st->desc);
    char *s = reply_text(rq->msg, body);
    free(body);
    int r = send_step(f, st, s, strlen(s));
    free(s);
    return r;
}

static int run_hold(fake_qemu *f)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += FAKE_SAFETY_MS / 1000;
    int r = 0;
    pthread_mutex_lock(&f->lock);
    while (f->resumes == 0 && !f->stop && r == 0)
        r = pthread_cond_timedwait(&f->cond, &f->lock, &ts);
    if (f->stop) {
        r = STEP_INTERRUPTED;
    } else if (f->resumes > 0) {
        f->resumes--;
        r = 0;
    } else {
        r = -ETIMEDOUT;
    }
    pthread_mutex_unlock(&f->lock);
    if (r == -ETIMEDOUT)
        record_error(f, "hold never resumed within %d ms", FAKE_SAFETY_MS);
    return r;
}

/* Appends text to what the running serve function queued. */
static void out_append(fake_qemu *f, const char *text)
{
    size_t n = strlen(text);
    if (f->out_cap - f->out_len < n + 1) {
        f->out_cap = (f->out_len + n + 1) * 2;
        f->out = xrealloc(f->out, f->out_cap);
    }
    memcpy(f->out + f->out_len, text, n + 1);
    f->out_len += n;
}

void fake_qemu_answer(fake_qemu *f, json_object *req_msg, const char *return_json)
{
    char *body = return_body(return_json);
    char *s = reply_text(req_msg, body);
    out_append(f, s);
    free(s);
    free(body);
}

void fake_qemu_answer_error(fake_qemu *f, json_object *req_msg, const char *klass, const char *desc)
{
    char *body = error_body(klass, desc);
    char *s = reply_text(req_msg, body);
    out_append(f, s);
    free(s);
    free(body);
}

void fake_qemu_emit(fake_qemu *f, const char *name, const char *data_json)
{
    char *s = event_text(f, name, data_json);
    out_append(f, s);
    free(s);
}

/* Hands requests to the step's serve function until it says done. */
static int run_serve(fake_qemu *f, const step *st)
{
    for (;;) {
        json_object *msg = NULL;
        char *text = NULL;
        long r = next_message(f, now_ms() + FAKE_QEMU_DEADLINE_MS, &msg, &text);
        if (r == -ECANCELED)
            return -ECANCELED;
        if (r == 0) {
            record_error(f, "client closed the connection while the fake was serving");
            return -EPIPE;
        }
        if (r == -ETIMEDOUT) {
            record_error(f, "no request within %d ms while the fake was serving",
                         FAKE_QEMU_DEADLINE_MS);
            return -ETIMEDOUT;
        }
        if (r < 0) {
            if (r != -EPROTO)
                record_error(f, "read failed while the fake was serving: %s", strerror((int)-r));
            return (int)r;
        }
        free(text);
        f->out_len = 0;
        int done = st->serve_fn(f, msg, st->serve_userdata);
        json_object_put(msg);
        if (f->out_len > 0) {
            int w = send_all(f, f->out, f->out_len, -1);
            f->out_len = 0;
            if (w != 0) {
                if (w < 0)
                    record_error(f, "write failed: %s", strerror(-w));
                return w;
            }
        }
        if (done == FAKE_QEMU_SERVE_DONE)
            return 0;
    }
}

static int run_step(fake_qemu *f, const step *st)
{
    int r;
    switch (st->kind) {
    case STEP_SEND:
        r = send_step(f, st, st->data, st->len);
        break;
    case STEP_EXPECT:
        return run_expect(f, st);
    case STEP_REPLY:
    case STEP_REPLY_ERROR:
        r = run_reply(f, st);
        break;
    case STEP_CLOSE:
        close_sock(f);
        return STEP_ENDED;
    case STEP_SHUT_WR:
        if (shutdown(f->sock, SHUT_WR) < 0) {
            record_error(f, "shutdown: %s", strerror(errno));
            return -errno;
        }
        return 0;
    case STEP_HOLD:
        return run_hold(f);
    case STEP_SERVE:
        return run_serve(f, st);
    default:
        abort();
    }
    if (r < 0 && r != -EINVAL)
        record_error(f, "write failed: %s", strerror(-r));
    return r;
}

/* After the script: any further request is unexpected. */
static void monitor(fake_qemu *f)
{
    int64_t deadline = now_ms() + FAKE_SAFETY_MS;
    for (;;) {
        json_object *msg = NULL;
        char *text = NULL;
        char buf[300];
        long r = next_message(f, deadline, &msg, &text);
        if (r == -ECANCELED) {
            /* Teardown: look once more at what already arrived. */
            while (read_some(f) > 0)
                ;
            while (take_message(f, &msg, &text) == 1) {
                record_error(f, "unexpected request: %s", excerpt(text, buf, sizeof(buf)));
                json_object_put(msg);
                free(text);
            }
            return;
        }
        if (r <= 0) {
            if (r == -ETIMEDOUT)
                record_error(f, "fake not torn down within %d ms", FAKE_SAFETY_MS);
            return;
        }
        record_error(f, "unexpected request: %s", excerpt(text, buf, sizeof(buf)));
        reject(f, msg);
        json_object_put(msg);
        free(text);
    }
}

static int open_connection(fake_qemu *f)
{
    if (f->mode == MODE_UNIX || f->mode == MODE_TCP) {
        int r = wait_fd(f, f->listen_fd, POLLIN, now_ms() + FAKE_QEMU_DEADLINE_MS);
        if (r == 0) {
            record_error(f, "nobody connected to %s within %d ms", f->address,
                         FAKE_QEMU_DEADLINE_MS);
            return -ETIMEDOUT;
        }
        if (r < 0)
            return r;
        f->sock = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (f->sock < 0) {
            record_error(f, "accept: %s", strerror(errno));
            return -errno;
        }
    } else if (f->mode == MODE_CONNECT) {
        struct sockaddr_un sa;
        memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, f->address, strlen(f->address) + 1);
        f->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (f->sock < 0 || connect(f->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            record_error(f, "connect to %s: %s", f->address, strerror(errno));
            return -errno;
        }
        set_nonblock(f->sock);
    }
    return 0;
}

static void *fake_thread(void *arg)
{
    fake_qemu *f = arg;
    size_t i = 0;
    int r = open_connection(f);
    if (r < 0) {
        pthread_mutex_lock(&f->lock);
        f->script_over = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        return NULL;
    }
    for (i = 0; i < f->n_steps; i++) {
        r = run_step(f, &f->steps[i]);
        pthread_mutex_lock(&f->lock);
        if (r == 0 || r == STEP_ENDED)
            f->steps_done = i + 1;
        else if (r == STEP_INTERRUPTED || r == -ECANCELED)
            f->interrupted =
                f->steps[i].kind == STEP_EXPECT || f->steps[i].kind == STEP_SERVE ? -1 : (long)i;
        else
            f->failed_step = (long)i;
        pthread_mutex_unlock(&f->lock);
        if (r != 0)
            break;
    }
    pthread_mutex_lock(&f->lock);
    f->script_over = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    /* Also at teardown: monitor() then looks at what already arrived. */
    if (r == 0 && f->sock >= 0)
        monitor(f);
    return NULL;
}

/* Puts the automatic greeting and negotiation in front of the script. */
static void prepend_handshake(fake_qemu *f)
{
    step *user = f->steps;
    size_t n_user = f->n_steps;
    f->steps = NULL;
    f->n_steps = 0;
    if (f->greeting) {
        size_t n = strlen(f->greeting);
        step *st = add_step(f, STEP_SEND);
        st->data = xmalloc(n + 3);
        memcpy(st->data, f->greeting, n);
        memcpy(st->data + n, "\r\n", 3);
        st->len = n + 2;
    }
    if (f->negotiation != FAKE_QEMU_NEG_NONE) {
        request *rq = &f->reqs[FAKE_QEMU_CAPS_REQ];
        rq->command = xstrdup("qmp_capabilities");
        rq->n_fds_expected = 0;
        add_step(f, STEP_EXPECT)->req = FAKE_QEMU_CAPS_REQ;
        if (f->negotiation == FAKE_QEMU_NEG_OK) {
            fake_qemu_reply(f, FAKE_QEMU_CAPS_REQ, "{}");
        } else {
            fake_qemu_reply_error(f, FAKE_QEMU_CAPS_REQ, "GenericError",
                                  "fake QEMU refuses capabilities negotiation");
        }
    }
    f->steps = xrealloc(f->steps, (f->n_steps + n_user) * sizeof(*f->steps));
    if (n_user)
        memcpy(f->steps + f->n_steps, user, n_user * sizeof(*user));
    f->n_steps += n_user;
    free(user);
}

int fake_qemu_start(fake_qemu *f)
{
    if (f->started)
        return -EALREADY;
    prepend_handshake(f);
    f->started = true;
    int r = pthread_create(&f->thread, NULL, fake_thread, f);
    if (r != 0) {
        f->started = false;
        return -r;
    }
    return 0;
}

void fake_qemu_resume(fake_qemu *f)
{
    pthread_mutex_lock(&f->lock);
    f->resumes++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

int fake_qemu_wait_done(fake_qemu *f, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    int r = 0;
    pthread_mutex_lock(&f->lock);
    while (f->started && !f->script_over && r == 0)
        r = pthread_cond_timedwait(&f->cond, &f->lock, &ts);
    bool over = f->script_over;
    pthread_mutex_unlock(&f->lock);
    return over ? 0 : -ETIMEDOUT;
}

int fake_qemu_error_count(fake_qemu *f)
{
    pthread_mutex_lock(&f->lock);
    int n = (int)f->n_errors;
    pthread_mutex_unlock(&f->lock);
    return n;
}

int fake_qemu_finish(fake_qemu *f)
{
    if (f->finished)
        return fake_qemu_error_count(f);
    f->finished = true;
    pthread_mutex_lock(&f->lock);
    f->stop = true;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    if (write(f->wake[1], "x", 1) < 0)
        abort();
    if (f->started)
        pthread_join(f->thread, NULL);
    for (size_t i = f->steps_done; i < f->n_steps; i++) {
        char buf[200];
        if ((long)i == f->failed_step || (long)i == f->interrupted)
            continue;
        record_error(f, "step %zu never ran: %s", i, step_name(f, &f->steps[i], buf, sizeof(buf)));
    }
    for (size_t i = 0; i < f->n_errors; i++)
        printf("# fake QEMU: %s\n", f->errors[i]);
    fflush(stdout);
    return (int)f->n_errors;
}

void fake_qemu_free(fake_qemu *f)
{
    if (f == NULL)
        return;
    fake_qemu_finish(f);
    close_sock(f);
    if (f->client_fd >= 0)
        close(f->client_fd);
    if (f->listen_fd >= 0) {
        close(f->listen_fd);
        if (f->mode == MODE_UNIX)
            unlink(f->address);
    }
    close(f->wake[0]);
    close(f->wake[1]);
    for (size_t i = 0; i < f->n_steps; i++) {
        free(f->steps[i].data);
        free(f->steps[i].desc);
    }
    free(f->steps);
    for (size_t i = 0; i < f->n_reqs; i++) {
        request *rq = &f->reqs[i];
        free(rq->command);
        json_object_put(rq->pattern);
        json_object_put(rq->msg);
        free(rq->text);
        for (size_t j = 0; j < rq->n_fds; j++)
            close(rq->fds[j]);
    }
    free(f->reqs);
    for (size_t i = 0; i < f->n_pending_fds; i++)
        close(f->pending_fds[i]);
    for (size_t i = 0; i < f->n_errors; i++)
        free(f->errors[i]);
    free(f->errors);
    free(f->greeting);
    free(f->in);
    free(f->out);
    json_tokener_free(f->tok);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
}

/* ----------------------------------------------------------- inspection */

static request *get_req(fake_qemu *f, int req)
{
    if (req < 0 || (size_t)req >= f->n_reqs)
        return NULL;
    return &f->reqs[req];
}

json_object *fake_qemu_request(fake_qemu *f, int req)
{
    pthread_mutex_lock(&f->lock);
    request *rq = get_req(f, req);
    json_object *m = rq ? rq->msg : NULL;
    pthread_mutex_unlock(&f->lock);
    return m;
}

const char *fake_qemu_request_text(fake_qemu *f, int req)
{
    pthread_mutex_lock(&f->lock);
    request *rq = get_req(f, req);
    const char *t = rq ? rq->text : NULL;
    pthread_mutex_unlock(&f->lock);
    return t;
}

size_t fake_qemu_request_n_fds(fake_qemu *f, int req)
{
    pthread_mutex_lock(&f->lock);
    request *rq = get_req(f, req);
    size_t n = rq && rq->msg ? rq->n_fds : 0;
    pthread_mutex_unlock(&f->lock);
    return n;
}

int fake_qemu_request_fd(fake_qemu *f, int req, size_t i)
{
    pthread_mutex_lock(&f->lock);
    request *rq = get_req(f, req);
    int fd = rq && rq->msg && i < rq->n_fds ? rq->fds[i] : -1;
    pthread_mutex_unlock(&f->lock);
    return fd;
}

size_t fake_qemu_bytes_read(fake_qemu *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->bytes_read;
    pthread_mutex_unlock(&f->lock);
    return n;
}
