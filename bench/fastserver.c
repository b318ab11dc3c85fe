/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A fast fake QMP server for the benchmarks.
 *
 * It speaks just enough QMP to be measured against: a QEMU 7.2 greeting,
 * qmp_capabilities, and instant replies to a few commands.  It never
 * builds a JSON tree: requests are framed and picked apart with a tiny
 * byte scanner, and the request's "id" is copied into the reply verbatim,
 * so the server costs little next to the client being measured.
 *
 * Commands:
 *   qmp_capabilities         {"return": {}}
 *   query-status             {"return": {"status": "running", ...}}
 *   query-qmp-schema         the reply captured from QEMU 7.2 (--schema)
 *   x-bench-events           {"count": N}: N events, then {"return": {}}
 *   anything else            a CommandNotFound error
 *
 * Single-threaded and poll()-based; serves up to 64 connections at once
 * (with --epoll: any number, for the scale benchmark's thousand
 * connections).  Pipelined requests, partial reads and short writes are
 * handled; output is written with backpressure (POLLOUT), and while a
 * connection's unsent output is large its input is not read (as QEMU
 * does).
 *
 * Usage:
 *   fastserver [OPTIONS] --listen PATH     bind and listen on PATH; prints
 *                                          "ready" when it accepts
 *                                          connections
 *   fastserver [OPTIONS] --listen-fd N     serve an inherited listening
 *                                          socket
 *   fastserver [OPTIONS] --fd N            serve one inherited connected
 *                                          socket, then exit
 * Options:
 *   --schema FILE   the query-qmp-schema reply to send
 *   --epoll         wait with epoll, so that thousands of connections cost
 *                   no more per wake-up than one (not with --fd)
 *   --silent        greet and answer qmp_capabilities, then read every
 *                   request and never reply: a QEMU that hangs
 * It runs until SIGTERM or SIGINT (or, with --fd, until the peer leaves).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CONNS 64
#define READ_CHUNK (64 * 1024)
/* Stop reading requests (and generating events) while this much output
 * is unsent. */
#define OUT_HIGH (512 * 1024)
/* Events are generated in blocks of this many prebuilt lines. */
#define EVENT_BLOCK 512
#define MAX_ID_LEN 1024
#define MAX_REQUEST (1024 * 1024)

static const char greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n";

static const char status_head[] =
    "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}";
static const char empty_head[] = "{\"return\": {}";

static const char event_line[] =
    "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, "
    "\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"running\", \"id\": \"job0\"}}\r\n";

typedef struct buf {
    char *data;
    size_t start, len, cap;
} buf;

typedef struct conn {
    int fd;
    bool negotiated;
    bool closing; /* close once the output is written */
    buf in;
    size_t scan;  /* framing position in in.data */
    size_t depth; /* framing state of the request being scanned */
    bool in_string, escape;
    buf out;
    uint64_t events_left;
    char event_id[MAX_ID_LEN];
    size_t event_id_len; /* SIZE_MAX: the request had no id */
    uint32_t ep_events;  /* --epoll: the events registered */
} conn;

static char *schema;      /* captured reply, without its final "}" and line end */
static size_t schema_len; /* bytes of schema up to (excluding) the final "}" */
static char *event_block; /* EVENT_BLOCK copies of event_line */
static size_t event_block_len;
static bool silent; /* --silent: no replies after negotiation */

static void die(const char *what)
{
    fprintf(stderr, "fastserver: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (p == NULL) {
        fprintf(stderr, "fastserver: out of memory\n");
        exit(1);
    }
    return p;
}

/* ---------------------------------------------------------------- buffers */

static size_t buf_used(const buf *b)
{
    return b->len - b->start;
}

static char *buf_reserve(buf *b, size_t n)
{
    if (b->start > 0 && (b->start == b->len || b->cap - b->len < n)) {
        memmove(b->data, b->data + b->start, b->len - b->start);
        b->len -= b->start;
        b->start = 0;
    }
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    return b->data + b->len;
}

static void buf_add(buf *b, const void *p, size_t n)
{
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

/* ---------------------------------------------------------------- scanner */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* Returns the end of the JSON value starting at p (which must be well
 * formed enough to have one), or NULL. */
static const char *skip_value(const char *p, const char *end)
{
    size_t depth = 0;
    bool str = false, esc = false;

    for (const char *q = p; q < end; q++) {
        char c = *q;
        if (str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"') {
                str = false;
                if (depth == 0)
                    return q + 1;
            }
            continue;
        }
        switch (c) {
        case '"':
            str = true;
            break;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (depth == 0)
                return q;
            if (--depth == 0)
                return q + 1;
            break;
        case ',':
        case ' ':
        case '\t':
        case '\r':
        case '\n':
            if (depth == 0)
                return q;
            break;
        default:
            break;
        }
    }
    return depth == 0 && !str ? end : NULL;
}

typedef struct span {
    const char *p;
    size_t n;
} span;

/* Picks "execute" (or "exec-oob"), "arguments" and "id" out of the
 * request object [p, end).  Returns false when it is not an object. */
static bool scan_request(const char *p, const char *end, span *exec, span *args, span *id)
{
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return false;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *k = p, *kend = skip_value(p, end);
        if (kend == NULL)
            return false;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return false;
        const char *v = skip_ws(p + 1, end), *vend = skip_value(v, end);
        if (vend == NULL || vend == v)
            return false;
        size_t klen = (size_t)(kend - k);
        span s = {v, (size_t)(vend - v)};
        if ((klen == 9 && memcmp(k, "\"execute\"", 9) == 0) ||
            (klen == 10 && memcmp(k, "\"exec-oob\"", 10) == 0))
            *exec = s;
        else if (klen == 11 && memcmp(k, "\"arguments\"", 11) == 0)
            *args = s;
        else if (klen == 4 && memcmp(k, "\"id\"", 4) == 0)
            *id = s;
        p = skip_ws(vend, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return true;
}

static bool span_is(span s, const char *quoted)
{
    size_t n = strlen(quoted);
    return s.n == n && memcmp(s.p, quoted, n) == 0;
}

/* Reads the integer member "count" of the arguments object. */
static uint64_t arg_count(span args)
{
    const char *end = args.p + args.n;
    const char *k = args.p;
    uint64_t v = 0;

    while ((k = memmem(k, (size_t)(end - k), "\"count\"", 7)) != NULL) {
        const char *p = skip_ws(k + 7, end);
        k += 7;
        if (p >= end || *p != ':')
            continue;
        p = skip_ws(p + 1, end);
        while (p < end && *p >= '0' && *p <= '9' && v < UINT64_MAX / 10)
            v = v * 10 + (uint64_t)(*p++ - '0');
        return v;
    }
    return 0;
}

/* ---------------------------------------------------------------- replies */

/* Appends the tail of a reply: the id (if any), "}" and the line end. */
static void reply_end(conn *c, const char *id, size_t id_len)
{
    if (id != NULL) {
        char *w = buf_reserve(&c->out, id_len + 12);
        memcpy(w, ", \"id\": ", 8);
        memcpy(w + 8, id, id_len);
        memcpy(w + 8 + id_len, "}\r\n", 3);
        c->out.len += id_len + 11;
    } else {
        buf_add(&c->out, "}\r\n", 3);
    }
}

/* An error reply whose desc is before, arg and after. */
static void reply_error(conn *c, span id, const char *klass, const char *before, span arg,
                        const char *after)
{
    char desc[512];
    char line[700];

    snprintf(desc, sizeof(desc), "%s%.*s%s", before, (int)arg.n, arg.p, after);
    /* desc holds no quotes or backslashes we did not put there: names
     * come from a JSON string literal and are copied with its escapes. */
    int n = snprintf(line, sizeof(line), "{\"error\": {\"class\": \"%s\", \"desc\": \"%s\"}", klass,
                     desc);
    buf_add(&c->out, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    reply_end(c, id.p, id.n);
}

static void handle_request(conn *c, const char *p, const char *end)
{
    span exec = {NULL, 0}, args = {NULL, 0}, id = {NULL, 0};
    span none = {"", 0};

    if (!scan_request(p, end, &exec, &args, &id)) {
        static const char bad[] = "{\"error\": {\"class\": \"GenericError\", "
                                  "\"desc\": \"QMP input must be a JSON object\"}}\r\n";
        buf_add(&c->out, bad, sizeof(bad) - 1);
        return;
    }
    if (exec.p == NULL || exec.n < 2 || exec.p[0] != '"') {
        reply_error(c, id, "GenericError", "QMP input lacks member 'execute'", none, "");
        return;
    }
    span name = {exec.p + 1, exec.n - 2};

    if (span_is(exec, "\"qmp_capabilities\"")) {
        if (c->negotiated) {
            reply_error(c, id, "CommandNotFound",
                        "Capabilities negotiation is already complete, command ignored", none, "");
            return;
        }
        c->negotiated = true;
        buf_add(&c->out, empty_head, sizeof(empty_head) - 1);
        reply_end(c, id.p, id.n);
        return;
    }
    if (!c->negotiated) {
        reply_error(c, id, "CommandNotFound",
                    "Expecting capabilities negotiation with 'qmp_capabilities'", none, "");
        return;
    }
    if (silent)
        return;
    if (span_is(exec, "\"query-status\"")) {
        buf_add(&c->out, status_head, sizeof(status_head) - 1);
        reply_end(c, id.p, id.n);
    } else if (span_is(exec, "\"query-qmp-schema\"") && schema != NULL) {
        buf_add(&c->out, schema, schema_len);
        reply_end(c, id.p, id.n);
    } else if (span_is(exec, "\"x-bench-events\"")) {
        if (id.n > MAX_ID_LEN) {
            reply_error(c, id, "GenericError", "id too long", none, "");
            return;
        }
        c->events_left = args.p ? arg_count(args) : 0;
        c->event_id_len = id.p ? id.n : SIZE_MAX;
        if (id.p)
            memcpy(c->event_id, id.p, id.n);
    } else {
        reply_error(c, id, "CommandNotFound", "The command ", name, " has not been found");
    }
}

/* Appends events while there is room, then the reply of x-bench-events. */
static void generate_events(conn *c)
{
    while (c->events_left > 0 && buf_used(&c->out) < OUT_HIGH) {
        uint64_t n = c->events_left < EVENT_BLOCK ? c->events_left : EVENT_BLOCK;
        buf_add(&c->out, event_block, (size_t)n * (sizeof(event_line) - 1));
        c->events_left -= n;
        if (c->events_left == 0) {
            buf_add(&c->out, empty_head, sizeof(empty_head) - 1);
            reply_end(c, c->event_id_len == SIZE_MAX ? NULL : c->event_id,
                      c->event_id_len == SIZE_MAX ? 0 : c->event_id_len);
        }
    }
}

/*
 * Frames and handles the complete requests in c->in, as long as the
 * output is not backed up and no events are being generated.  Framing
 * tracks strings, escapes and nesting, so requests may be split anywhere
 * and many may arrive in one read.
 */
static void process_input(conn *c)
{
    while (c->events_left == 0 && buf_used(&c->out) < OUT_HIGH && !c->closing) {
        char *base = c->in.data + c->in.start;
        size_t n = buf_used(&c->in), i = c->scan;
        bool complete = false;

        if (c->depth == 0) {
            /* Between requests: skip whitespace and stray bytes. */
            while (i < n && base[i] != '{')
                i++;
            c->in.start += i;
            base += i;
            n -= i;
            i = 0;
            if (n == 0)
                break;
            c->depth = 1;
            i = 1;
        }
        while (i < n) {
            char ch = base[i++];
            if (c->in_string) {
                if (c->escape)
                    c->escape = false;
                else if (ch == '\\')
                    c->escape = true;
                else if (ch == '"')
                    c->in_string = false;
            } else if (ch == '"') {
                c->in_string = true;
            } else if (ch == '{' || ch == '[') {
                c->depth++;
            } else if ((ch == '}' || ch == ']') && --c->depth == 0) {
                complete = true;
                break;
            }
        }
        if (!complete) {
            c->scan = i;
            if (n > MAX_REQUEST)
                c->closing = true;
            break;
        }
        handle_request(c, base, base + i);
        c->in.start += i;
        c->scan = 0;
        generate_events(c);
    }
    if (c->in.start == c->in.len)
        c->in.start = c->in.len = 0;
}

/* Writes what the socket takes; returns false when the connection died. */
static bool flush_output(conn *c)
{
    for (;;) {
        generate_events(c);
        size_t n = buf_used(&c->out);
        if (n == 0)
            return true;
        ssize_t w = send(c->fd, c->out.data + c->out.start, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        c->out.start += (size_t)w;
        if (c->out.start == c->out.len)
            c->out.start = c->out.len = 0;
        if ((size_t)w < n)
            return true;
    }
}

/* Reads once; returns false at end of file or on error. */
static bool read_input(conn *c)
{
    char *w = buf_reserve(&c->in, READ_CHUNK);
    ssize_t n = recv(c->fd, w, READ_CHUNK, 0);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK;
    if (n == 0)
        return false;
    c->in.len += (size_t)n;
    return true;
}

/* ------------------------------------------------------------------ main */

static void conn_free(conn *c)
{
    close(c->fd);
    free(c->in.data);
    free(c->out.data);
    free(c);
}

static conn *conn_new(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        close(fd);
        return NULL;
    }
    conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return NULL;
    }
    c->fd = fd;
    buf_add(&c->out, greeting, sizeof(greeting) - 1);
    return c;
}

static void load_schema(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die(path);
    size_t cap = 256 * 1024, len = 0;
    char *data = xrealloc(NULL, cap);
    for (;;) {
        if (len == cap)
            data = xrealloc(data, cap *= 2);
        size_t n = fread(data + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    /* Keep everything up to the final "}", so an id can be added. */
    while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n' || data[len - 1] == ' '))
        len--;
    if (len == 0 || data[len - 1] != '}') {
        fprintf(stderr, "fastserver: %s does not end in a JSON object\n", path);
        exit(1);
    }
    schema = data;
    schema_len = len - 1;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "fastserver: socket path too long: %s\n", path);
        exit(1);
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die(path);
    if (listen(fd, 16) < 0)
        die("listen");
    return fd;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: fastserver [--schema FILE] [--epoll] [--silent] "
                    "(--listen PATH | --listen-fd N | --fd N)\n");
    exit(2);
}

/* ------------------------------------------------------------ epoll loop */

/* What connection c waits for now (the same rules as the poll() loop). */
static uint32_t conn_wants(const conn *c)
{
    uint32_t ev = 0;

    if (c->events_left == 0 && buf_used(&c->out) < OUT_HIGH && !c->closing)
        ev |= EPOLLIN;
    if (buf_used(&c->out) > 0 || c->events_left > 0)
        ev |= EPOLLOUT;
    return ev;
}

/* Accepts every pending connection (many clients connect at once). */
static void accept_all(int ep, int listen_fd)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            die("accept");
        }
        conn *c = conn_new(fd);
        if (c == NULL)
            continue;
        if (!flush_output(c)) {
            conn_free(c);
            continue;
        }
        c->ep_events = conn_wants(c);
        struct epoll_event ev = {.events = c->ep_events, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }
}

/*
 * The --epoll main loop: level-triggered, one registration per
 * connection, updated only when what it waits for changes.  A wake-up
 * costs the ready connections only, however many are connected.
 */
static int serve_epoll(int listen_fd, const sigset_t *orig)
{
    struct epoll_event evs[256];
    struct rlimit rl;

    /* Room for as many connections as the hard limit allows, and a
     * backlog for clients that all connect at once. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (listen(listen_fd, SOMAXCONN) < 0)
        die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &lev) < 0)
        die("epoll_ctl");

    while (!stop) {
        int n = epoll_pwait(ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), -1, orig);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c == NULL) {
                accept_all(ep, listen_fd);
                continue;
            }
            /* Each descriptor appears once per batch, so freeing c here
             * cannot leave a later entry of this batch dangling. */
            bool ok = true;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ok = read_input(c);
                if (ok)
                    process_input(c);
            }
            if (ok)
                ok = flush_output(c);
            if (ok && c->events_left == 0 && buf_used(&c->out) < OUT_HIGH) {
                process_input(c);
                ok = flush_output(c);
            }
            if (ok && c->closing && buf_used(&c->out) == 0)
                ok = false;
            if (!ok) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                conn_free(c);
                continue;
            }
            uint32_t want = conn_wants(c);
            if (want != c->ep_events) {
                struct epoll_event ev = {.events = want, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                    die("epoll_ctl");
                c->ep_events = want;
            }
        }
    }
    close(ep);
    return 0;
}

int main(int argc, char **argv)
{
    const char *listen_path = NULL;
    int listen_fd = -1, conn_fd = -1;
    bool use_epoll = false;
    conn *conns[MAX_CONNS];
    size_t n_conns = 0;
    sigset_t block, orig;
    int status = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--schema") == 0 && i + 1 < argc)
            load_schema(argv[++i]);
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_path = argv[++i];
        else if (strcmp(argv[i], "--listen-fd") == 0 && i + 1 < argc)
            listen_fd = atoi(argv[++i]);
        else if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc)
            conn_fd = atoi(argv[++i]);
        else if (strcmp(argv[i], "--epoll") == 0)
            use_epoll = true;
        else if (strcmp(argv[i], "--silent") == 0)
            silent = true;
        else
            usage();
    }
    if ((listen_path != NULL) + (listen_fd >= 0) + (conn_fd >= 0) != 1)
        usage();
    if (use_epoll && conn_fd >= 0)
        usage();

    event_block_len = EVENT_BLOCK * (sizeof(event_line) - 1);
    event_block = xrealloc(NULL, event_block_len);
    for (size_t i = 0; i < EVENT_BLOCK; i++)
        memcpy(event_block + i * (sizeof(event_line) - 1), event_line, sizeof(event_line) - 1);

    /* SIGTERM and SIGINT are taken only inside ppoll(), so they cannot be
     * lost between a check and the wait. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &orig);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (listen_path != NULL) {
        listen_fd = listen_unix(listen_path);
        printf("ready\n");
        fflush(stdout);
    }
    if (conn_fd >= 0) {
        conn *c = conn_new(conn_fd);
        if (c == NULL)
            die("fd");
        conns[n_conns++] = c;
    } else {
        int fl = fcntl(listen_fd, F_GETFL);
        if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0)
            die("listening socket");
    }
    if (use_epoll) {
        status = serve_epoll(listen_fd, &orig);
        if (listen_path != NULL)
            unlink(listen_path);
        return status;
    }

    struct pollfd pfds[MAX_CONNS + 1];
    for (;;) {
        size_t np = 0;
        for (size_t i = 0; i < n_conns; i++) {
            conn *c = conns[i];
            short ev = 0;
            if (c->events_left == 0 && buf_used(&c->out) < OUT_HIGH && !c->closing)
                ev |= POLLIN;
            if (buf_used(&c->out) > 0 || c->events_left > 0)
                ev |= POLLOUT;
            pfds[np++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        if (listen_fd >= 0 && n_conns < MAX_CONNS)
            pfds[np++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
        if (np == 0)
            break;
        if (ppoll(pfds, np, NULL, &orig) < 0) {
            if (errno == EINTR && stop)
                break;
            if (errno == EINTR)
                continue;
            die("poll");
        }
        size_t live = 0;
        for (size_t i = 0; i < n_conns; i++) {
            conn *c = conns[i];
            bool ok = true;
            if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ok = read_input(c);
                if (ok)
                    process_input(c);
            }
            if (ok)
                ok = flush_output(c);
            if (ok && c->events_left == 0 && buf_used(&c->out) < OUT_HIGH) {
                /* Requests held back while the output was full. */
                process_input(c);
                ok = flush_output(c);
            }
            if (ok && c->closing && buf_used(&c->out) == 0)
                ok = false;
            if (ok)
                conns[live++] = c;
            else
                conn_free(c);
        }
        n_conns = live;
        if (listen_fd >= 0 && np > 0 && pfds[np - 1].fd == listen_fd &&
            (pfds[np - 1].revents & POLLIN)) {
            int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                conn *c = conn_new(fd);
                if (c != NULL) {
                    conns[n_conns++] = c;
                    flush_output(c);
                }
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                status = 1;
                perror("fastserver: accept");
                break;
            }
        }
        if (conn_fd >= 0 && n_conns == 0)
            break;
    }
    if (listen_path != NULL)
        unlink(listen_path);
    return status;
}
