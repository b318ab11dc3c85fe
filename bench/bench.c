/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp benchmarks.
 *
 * One run measures, against the fast fake server (bench/fastserver.c):
 *   (a) the raw-socket floor: write the query-status request, read until
 *       the reply's line end, no JSON at all;
 *   (b) a query-status round trip through qmp_client_execute(), return
 *       value decoded;
 *   (c) pipelined throughput: the raw floor and the sans-I/O qmp_session
 *       with many commands in flight (the blocking client is sequential);
 *   (d) the event rate: events routed into the client's queue, and routed
 *       then taken and decoded (plus the session's event callback alone);
 *   (e) the ~207 KB query-qmp-schema reply: CPU per call to receive and
 *       decode it, and the decode alone (libqmp and json-c's tokener);
 *   (f) the heap of an idle connected client and of a session alone;
 * and, unless told not to, the round trip and the schema against a real
 * qemu-system-x86_64.
 *
 * The machine is shared and noisy, so every figure is the median over
 * several repetitions, and the client-side ones are set against the raw
 * floor measured in the same run.  --only NAME runs one measurement with
 * N operations, which is what bench/run.sh runs under callgrind (two
 * sizes, so that start-up cancels out in the difference).
 *
 * Benchmarks are never tests: nothing here asserts a time.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "qmp/qmp.h"

#ifndef BENCH_SCHEMA_PATH
#define BENCH_SCHEMA_PATH "tests/data/query-qmp-schema.json"
#endif
#ifndef BENCH_BUILDTYPE
#define BENCH_BUILDTYPE "unknown"
#endif

#define MAX_REPS 99
#define MAX_DEPTH_PIPE 1024
#define RBUF_SIZE (64 * 1024)
#define IO_TIMEOUT_MS 30000

/* The request libqmp sends for query-status, byte for byte (same size). */
static const char status_request[] = "{\"execute\":\"query-status\",\"id\":\"libqmp:1\"}\n";
static const char caps_request[] = "{\"execute\":\"qmp_capabilities\"}\n";

/* What the fast server and QEMU 7.2 send. */
static const char status_reply[] =
    "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, "
    "\"id\": \"libqmp:1\"}";
static const char event_text[] =
    "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, "
    "\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"running\", \"id\": \"job0\"}}";

/* ------------------------------------------------------------ utilities */

static void die(const char *fmt, ...) QMP_PRINTF(1, 2);

static void cleanup_children(void);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cleanup_children();
    exit(1);
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* One timed stretch: wall clock and this process's CPU (user + system). */
typedef struct sample {
    double wall_ns;
    double cpu_ns;
} sample;

typedef struct mark {
    int64_t wall, cpu;
} mark;

static mark mark_now(void)
{
    mark m = {clock_ns(CLOCK_MONOTONIC), clock_ns(CLOCK_PROCESS_CPUTIME_ID)};
    return m;
}

/* Adds the time since m to *s. */
static void mark_add(mark m, sample *s)
{
    mark e = mark_now();
    s->wall_ns += (double)(e.wall - m.wall);
    s->cpu_ns += (double)(e.cpu - m.cpu);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static char *read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        die("cannot open %s: %s", path, strerror(errno));
    size_t cap = 256 * 1024, len = 0;
    char *data = malloc(cap + 1);
    for (;;) {
        if (data == NULL)
            die("out of memory");
        if (len == cap)
            data = realloc(data, (cap *= 2) + 1);
        if (data == NULL)
            die("out of memory");
        size_t n = fread(data + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    data[len] = '\0';
    *ret_len = len;
    return data;
}

/* ---------------------------------------------------------- options */

typedef struct options {
    const char *server;     /* connect to a running fast server here */
    const char *fastserver; /* or spawn this executable */
    const char *schema;
    const char *only;
    const char *qemu; /* qemu-system-x86_64 to measure, NULL: none */
    size_t n;         /* 0: each measurement's default */
    int reps;
    int warmup; /* -1: default */
    size_t depth;
    bool quiet;
} options;

static options opt = {
    .schema = BENCH_SCHEMA_PATH,
    .qemu = "qemu-system-x86_64",
    .reps = 7,
    .warmup = -1,
    .depth = 64,
};

/* --------------------------------------------------- child processes */

static pid_t server_pid = -1;
static pid_t qemu_pid = -1;
static char tmp_dir[64];
static char server_sock[128];
static char qemu_sock[128];
static char qemu_log[128];

static void kill_and_reap(pid_t *pid, int sig)
{
    if (*pid > 0) {
        kill(*pid, sig);
        waitpid(*pid, NULL, 0);
        *pid = -1;
    }
}

static void cleanup_children(void)
{
    kill_and_reap(&qemu_pid, SIGKILL);
    kill_and_reap(&server_pid, SIGTERM);
    if (server_sock[0])
        unlink(server_sock);
    if (qemu_sock[0])
        unlink(qemu_sock);
    if (qemu_log[0])
        unlink(qemu_log);
    if (tmp_dir[0])
        rmdir(tmp_dir);
    server_sock[0] = qemu_sock[0] = qemu_log[0] = tmp_dir[0] = '\0';
}

static void on_fatal_signal(int sig)
{
    /* Kill the children by pid; exit at once. */
    if (qemu_pid > 0)
        kill(qemu_pid, SIGKILL);
    if (server_pid > 0)
        kill(server_pid, SIGTERM);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void make_tmp_dir(void)
{
    if (tmp_dir[0])
        return;
    strcpy(tmp_dir, "/tmp/libqmp-bench-XXXXXX");
    if (mkdtemp(tmp_dir) == NULL) {
        tmp_dir[0] = '\0';
        die("mkdtemp: %s", strerror(errno));
    }
}

/* Binds and listens on a unix socket at path. */
static int listen_at(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0)
        die("cannot listen on %s: %s", path, strerror(errno));
    return fd;
}

/*
 * Starts argv[0] with listen_fd inherited (the listening socket exists
 * before the child runs, so connecting needs no waiting).  The child dies
 * with us.  Returns its pid; exec failures are reported through a pipe.
 */
static pid_t spawn(char **argv, int listen_fd, const char *log_path)
{
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0)
        die("pipe: %s", strerror(errno));
    int logfd = log_path ? open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        int e;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(126);
        if (devnull >= 0)
            dup2(devnull, 0);
        if (logfd >= 0) {
            dup2(logfd, 1);
            dup2(logfd, 2);
        }
        if (fcntl(listen_fd, F_SETFD, 0) < 0)
            _exit(126);
        execvp(argv[0], argv);
        e = errno;
        if (write(errpipe[1], &e, sizeof(e)) < 0)
            _exit(127);
        _exit(127);
    }
    close(errpipe[1]);
    if (logfd >= 0)
        close(logfd);
    if (devnull >= 0)
        close(devnull);
    int e = 0;
    ssize_t n;
    do
        n = read(errpipe[0], &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    close(errpipe[0]);
    if (n > 0) {
        waitpid(pid, NULL, 0);
        errno = e;
        return -1;
    }
    return pid;
}

static void start_fastserver(void)
{
    char exe[PATH_MAX], fdarg[16], schema_arg[PATH_MAX];
    const char *fs = opt.fastserver;

    if (fs == NULL) {
        /* The server is built next to us. */
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 16);
        if (n < 0)
            die("readlink /proc/self/exe: %s", strerror(errno));
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        strcpy(slash ? slash + 1 : exe, "fastserver");
        fs = exe;
    }
    make_tmp_dir();
    snprintf(server_sock, sizeof(server_sock), "%s/fast.sock", tmp_dir);
    int lfd = listen_at(server_sock);
    snprintf(fdarg, sizeof(fdarg), "%d", lfd);
    snprintf(schema_arg, sizeof(schema_arg), "%s", opt.schema);
    char *argv[] = {(char *)fs, "--schema", schema_arg, "--listen-fd", fdarg, NULL};
    server_pid = spawn(argv, lfd, NULL);
    if (server_pid < 0)
        die("cannot start %s: %s", fs, strerror(errno));
    close(lfd);
    opt.server = server_sock;
}

/* Starts QEMU with a monitor on a socket we listen on; returns false
 * (and says why) when it cannot run. */
static bool start_qemu(void)
{
    char fdarg[64];
    make_tmp_dir();
    snprintf(qemu_sock, sizeof(qemu_sock), "%s/qemu.sock", tmp_dir);
    snprintf(qemu_log, sizeof(qemu_log), "%s/qemu.log", tmp_dir);
    int lfd = listen_at(qemu_sock);
    snprintf(fdarg, sizeof(fdarg), "socket,id=mon0,fd=%d,server=on,wait=off", lfd);
    /* clang-format off */
    char *argv[] = {(char *)opt.qemu, "-M", "none", "-nodefaults", "-no-user-config",
                    "-display", "none", "-accel", "tcg", "-chardev", fdarg,
                    "-mon", "chardev=mon0,mode=control", NULL};
    /* clang-format on */
    qemu_pid = spawn(argv, lfd, qemu_log);
    int e = errno;
    close(lfd);
    if (qemu_pid < 0) {
        printf("real QEMU: skipped (cannot run %s: %s)\n", opt.qemu, strerror(e));
        return false;
    }
    return true;
}

/* ------------------------------------------------------- raw sockets */

static int connect_unix(const char *path, bool nonblock)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    /* A listening unix socket accepts into its backlog at once. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("cannot connect to %s: %s", path, strerror(errno));
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* A blocking raw connection that reads whole lines. */
typedef struct raw_conn {
    int fd;
    char buf[RBUF_SIZE];
    size_t start, len;
} raw_conn;

/* Reads one line ending in '\n' (waiting at most IO_TIMEOUT_MS overall). */
static size_t raw_line(raw_conn *rc, char **ret)
{
    for (;;) {
        char *nl = memchr(rc->buf + rc->start, '\n', rc->len - rc->start);
        if (nl != NULL) {
            *ret = rc->buf + rc->start;
            size_t n = (size_t)(nl + 1 - *ret);
            rc->start += n;
            return n;
        }
        if (rc->start > 0) {
            memmove(rc->buf, rc->buf + rc->start, rc->len - rc->start);
            rc->len -= rc->start;
            rc->start = 0;
        }
        if (rc->len == sizeof(rc->buf))
            die("line longer than %zu bytes", sizeof(rc->buf));
        struct pollfd p = {.fd = rc->fd, .events = POLLIN};
        if (poll(&p, 1, IO_TIMEOUT_MS) <= 0)
            die("no answer from the server");
        ssize_t n = read(rc->fd, rc->buf + rc->len, sizeof(rc->buf) - rc->len);
        if (n <= 0)
            die("read: %s", n == 0 ? "end of file" : strerror(errno));
        rc->len += (size_t)n;
    }
}

/* Connects, takes the greeting and negotiates, all as plain bytes. */
static raw_conn *raw_open(const char *path)
{
    raw_conn *rc = calloc(1, sizeof(*rc));
    char *line;
    if (rc == NULL)
        die("out of memory");
    rc->fd = connect_unix(path, false);
    raw_line(rc, &line);
    if (strncmp(line, "{\"QMP\"", 6) != 0)
        die("no greeting");
    write_all(rc->fd, caps_request, sizeof(caps_request) - 1);
    raw_line(rc, &line);
    if (strncmp(line, "{\"return\"", 9) != 0)
        die("qmp_capabilities failed");
    return rc;
}

static void raw_close(raw_conn *rc)
{
    close(rc->fd);
    free(rc);
}

/* ----------------------------------------------------- libqmp client */

static qmp_client *client_open(const char *path)
{
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;
    char addr[160];
    snprintf(addr, sizeof(addr), "unix:%s", path);
    if (qmp_client_new(&c) < 0 || qmp_client_connect(c, addr, &err) < 0)
        die("cannot connect to %s: %s", addr, err.message);
    return c;
}

static void client_query_status(qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    if (qmp_client_execute(c, "query-status", NULL, &ret, &err) < 0)
        die("query-status: %s", err.message);
    json_object_put(ret);
}

/* ------------------------------------------- libqmp session on a socket */

typedef struct sess_conn {
    int fd;
    qmp_session *s;
    uint64_t replies;
    uint64_t events;
    uint64_t decoded;
    bool decode_events;
    char buf[RBUF_SIZE];
} sess_conn;

static void sc_on_event(qmp_session *s, qmp_event *ev, void *userdata)
{
    sess_conn *sc = userdata;
    (void)s;
    sc->events++;
    if (sc->decode_events && qmp_event_data(ev) != NULL)
        sc->decoded++;
}

/* Writes what the session has, reads and feeds what arrived (waiting for
 * it when nothing else can be done). */
static void sc_pump(sess_conn *sc)
{
    qmp_error err = QMP_ERROR_INIT;
    size_t len;
    const void *out;
    bool want_out = false;

    while ((out = qmp_session_get_output(sc->s, &len, NULL, NULL)) != NULL) {
        ssize_t w = send(sc->fd, out, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            want_out = true;
            break;
        }
        if (w < 0)
            die("write: %s", strerror(errno));
        qmp_session_consume_output(sc->s, (size_t)w);
    }
    struct pollfd p = {.fd = sc->fd, .events = POLLIN | (want_out ? POLLOUT : 0)};
    if (poll(&p, 1, IO_TIMEOUT_MS) <= 0)
        die("no answer from the server");
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
        return;
    for (;;) {
        ssize_t n = recv(sc->fd, sc->buf, sizeof(sc->buf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            die("read: %s", n == 0 ? "end of file" : strerror(errno));
        if (qmp_session_feed(sc->s, sc->buf, (size_t)n, &err) < 0)
            die("session failed: %s", err.message);
        if ((size_t)n < sizeof(sc->buf))
            return;
    }
}

static sess_conn *sc_open(const char *path)
{
    sess_conn *sc = calloc(1, sizeof(*sc));
    if (sc == NULL || qmp_session_new(&sc->s) < 0)
        die("out of memory");
    qmp_session_set_event_callback(sc->s, sc_on_event, sc);
    sc->fd = connect_unix(path, true);
    while (qmp_session_get_state(sc->s) != QMP_SESSION_READY)
        sc_pump(sc);
    return sc;
}

static void sc_close(sess_conn *sc)
{
    close(sc->fd);
    qmp_session_unref(sc->s);
    free(sc);
}

static void sc_on_reply(qmp_session *s, qmp_reply *r, void *userdata)
{
    sess_conn *sc = userdata;
    (void)s;
    if (qmp_reply_status(r) != 0 || qmp_reply_return(r) == NULL)
        die("command failed in the session");
    sc->replies++;
}

static void sc_send(sess_conn *sc, const char *command, json_object *args)
{
    qmp_error err = QMP_ERROR_INIT;
    if (qmp_session_send_command(sc->s, command, args, 0, NULL, 0, sc_on_reply, sc, NULL, &err) < 0)
        die("%s: %s", command, err.message);
}

/* --------------------------------------------------- the measurements */

/* What a measurement reports per repetition. */
typedef enum unit {
    U_TIME_PER_OP, /* wall and CPU per operation; rate = ops/s */
    U_CPU_PER_OP,  /* CPU per call (decode work) */
    U_BYTES        /* a heap figure */
} unit;

typedef struct measurement measurement;
typedef void (*run_fn)(const measurement *m, void *state, size_t n, sample *s);
typedef void *(*setup_fn)(const measurement *m, size_t n);
typedef void (*teardown_fn)(void *state);

struct measurement {
    const char *name;
    const char *label;
    unit unit;
    size_t default_n;
    setup_fn setup;
    teardown_fn teardown;
    run_fn run;
    const char *floor; /* name of the measurement it is compared with */
    bool qemu;         /* runs against the real QEMU */
};

typedef struct result {
    bool done;
    size_t n;
    int reps;
    double wall_ns; /* medians per operation */
    double wall_min, wall_max;
    double cpu_ns;
    double bytes;
} result;

/* --- (a) raw floor round trip */

static void *setup_raw(const measurement *m, size_t n)
{
    (void)n;
    return raw_open(m->qemu ? qemu_sock : opt.server);
}

static void teardown_raw(void *st)
{
    raw_close(st);
}

static void run_rt_raw(const measurement *m, void *st, size_t n, sample *s)
{
    raw_conn *rc = st;
    (void)m;
    mark t = mark_now();
    for (size_t i = 0; i < n; i++) {
        write_all(rc->fd, status_request, sizeof(status_request) - 1);
        /* Read until the reply's line end. */
        for (;;) {
            ssize_t r = read(rc->fd, rc->buf, sizeof(rc->buf));
            if (r <= 0)
                die("read: %s", r == 0 ? "end of file" : strerror(errno));
            if (rc->buf[r - 1] == '\n')
                break;
        }
    }
    mark_add(t, s);
}

/* --- (c) raw floor pipelined: keep depth requests in flight */

static void run_pipe_raw(const measurement *m, void *st, size_t n, sample *s)
{
    raw_conn *rc = st;
    size_t len = sizeof(status_request) - 1, depth = opt.depth;
    static char *reqs;
    (void)m;
    if (reqs == NULL) {
        reqs = malloc(MAX_DEPTH_PIPE * len);
        if (reqs == NULL)
            die("out of memory");
        for (size_t i = 0; i < MAX_DEPTH_PIPE; i++)
            memcpy(reqs + i * len, status_request, len);
    }
    size_t sent = 0, got = 0;
    mark t = mark_now();
    while (got < n) {
        size_t k = depth - (sent - got);
        if (k > n - sent)
            k = n - sent;
        if (k > 0) {
            write_all(rc->fd, reqs, k * len);
            sent += k;
        }
        ssize_t r = read(rc->fd, rc->buf, sizeof(rc->buf));
        if (r <= 0)
            die("read: %s", r == 0 ? "end of file" : strerror(errno));
        for (const char *p = rc->buf, *e = rc->buf + r; (p = memchr(p, '\n', (size_t)(e - p))); p++)
            got++;
    }
    mark_add(t, s);
}

/* --- (b) libqmp round trip */

static void *setup_client(const measurement *m, size_t n)
{
    qmp_client *c = client_open(m->qemu ? qemu_sock : opt.server);
    /* Room for every event of the event measurements. */
    if (qmp_client_set_event_queue_max(c, n > 1024 ? n : 1024) < 0)
        die("cannot size the event queue");
    return c;
}

static void teardown_client(void *st)
{
    qmp_client_unref(st);
}

static void run_rt_client(const measurement *m, void *st, size_t n, sample *s)
{
    qmp_client *c = st;
    (void)m;
    mark t = mark_now();
    for (size_t i = 0; i < n; i++)
        client_query_status(c);
    mark_add(t, s);
}

/* --- (c) libqmp session pipelined */

static void *setup_session(const measurement *m, size_t n)
{
    (void)m;
    (void)n;
    return sc_open(opt.server);
}

static void teardown_session(void *st)
{
    sc_close(st);
}

static void run_pipe_session(const measurement *m, void *st, size_t n, sample *s)
{
    sess_conn *sc = st;
    uint64_t base = sc->replies, sent = 0;
    (void)m;
    mark t = mark_now();
    while (sc->replies - base < n) {
        while (sent < n && sent - (sc->replies - base) < opt.depth) {
            sc_send(sc, "query-status", NULL);
            sent++;
        }
        sc_pump(sc);
    }
    mark_add(t, s);
}

/* --- (d) events */

static json_object *events_args(size_t n)
{
    json_object *args = json_object_new_object();
    if (args == NULL ||
        json_object_object_add(args, "count", json_object_new_int64((int64_t)n)) < 0)
        die("out of memory");
    return args;
}

static void client_request_events(qmp_client *c, size_t n)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *args = events_args(n);
    if (qmp_client_execute(c, "x-bench-events", args, NULL, &err) < 0)
        die("x-bench-events: %s", err.message);
    json_object_put(args);
    if (qmp_client_events_queued(c) != n || qmp_client_events_lost(c) != 0)
        die("%zu events queued, %llu lost, %zu expected", qmp_client_events_queued(c),
            (unsigned long long)qmp_client_events_lost(c), n);
}

/* Takes every queued event, decoding its data if asked to. */
static void client_drain(qmp_client *c, bool decode)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev;
    while (qmp_client_events_queued(c) > 0) {
        if (qmp_client_next_event(c, 0, &ev, &err) < 0)
            die("next_event: %s", err.message);
        if (decode && qmp_event_data(ev) == NULL)
            die("event without data");
        qmp_event_unref(ev);
    }
}

/* Time until every event is routed into the queue (the reply that
 * follows the events ends the call); taking them is not timed. */
static void run_ev_client(const measurement *m, void *st, size_t n, sample *s)
{
    qmp_client *c = st;
    (void)m;
    mark t = mark_now();
    client_request_events(c, n);
    mark_add(t, s);
    client_drain(c, false);
}

/* Routed, then each one taken from the queue and its data decoded. */
static void run_ev_client_decode(const measurement *m, void *st, size_t n, sample *s)
{
    qmp_client *c = st;
    (void)m;
    mark t = mark_now();
    client_request_events(c, n);
    client_drain(c, true);
    mark_add(t, s);
}

/* The session alone: an event callback that only counts. */
static void run_ev_session(const measurement *m, void *st, size_t n, sample *s)
{
    sess_conn *sc = st;
    uint64_t base = sc->replies, ev0 = sc->events;
    json_object *args = events_args(n);
    (void)m;
    mark t = mark_now();
    sc_send(sc, "x-bench-events", args);
    while (sc->replies == base)
        sc_pump(sc);
    mark_add(t, s);
    json_object_put(args);
    if (sc->events - ev0 != n)
        die("%llu events seen, %zu expected", (unsigned long long)(sc->events - ev0), n);
}

/* --- (e) the schema */

static char *schema_text;
static size_t schema_len;

static void load_schema(void)
{
    if (schema_text == NULL)
        schema_text = read_file(opt.schema, &schema_len);
}

static void run_schema_client(const measurement *m, void *st, size_t n, sample *s)
{
    qmp_client *c = st;
    qmp_error err = QMP_ERROR_INIT;
    (void)m;
    for (size_t i = 0; i < n; i++) {
        json_object *ret = NULL;
        mark t = mark_now();
        if (qmp_client_execute(c, "query-qmp-schema", NULL, &ret, &err) < 0)
            die("query-qmp-schema: %s", err.message);
        mark_add(t, s);
        if (json_object_array_length(ret) < 100)
            die("query-qmp-schema: short reply");
        json_object_put(ret);
    }
}

static void *setup_none(const measurement *m, size_t n)
{
    (void)m;
    (void)n;
    load_schema();
    return NULL;
}

static void teardown_none(void *st)
{
    (void)st;
}

static void decode_libqmp(const char *text, size_t len, size_t n, sample *s, bool time_each)
{
    qmp_error err = QMP_ERROR_INIT;
    mark t = mark_now();
    for (size_t i = 0; i < n; i++) {
        json_object *v = NULL;
        if (time_each)
            t = mark_now();
        if (qmp_json_parse(text, len, 0, &v, &err) < 0)
            die("qmp_json_parse: %s", err.message);
        if (time_each)
            mark_add(t, s);
        json_object_put(v);
    }
    if (!time_each)
        mark_add(t, s);
}

/* json-c's tokener as a client would use it: one tokener, deep enough
 * for QMP (json_tokener_new_ex(1024)), strict and validating UTF-8 like
 * libqmp, reset and reused for every message. */
static void decode_tokener(const char *text, size_t len, size_t n, sample *s, bool time_each)
{
    json_tokener *tok = json_tokener_new_ex(1024);
    if (tok == NULL)
        die("out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    mark t = mark_now();
    for (size_t i = 0; i < n; i++) {
        if (time_each)
            t = mark_now();
        json_tokener_reset(tok);
        json_object *v = json_tokener_parse_ex(tok, text, (int)len);
        if (v == NULL || json_tokener_get_error(tok) != json_tokener_success)
            die("json_tokener: %s", json_tokener_error_desc(json_tokener_get_error(tok)));
        if (time_each)
            mark_add(t, s);
        json_object_put(v);
    }
    if (!time_each)
        mark_add(t, s);
    json_tokener_free(tok);
}

/* The schema text without its line end (both decoders take one value). */
static size_t schema_value_len(void)
{
    size_t n = schema_len;
    while (n > 0 && (schema_text[n - 1] == '\n' || schema_text[n - 1] == '\r'))
        n--;
    return n;
}

static void run_schema_parse(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    decode_libqmp(schema_text, schema_value_len(), n, s, true);
}

static void run_schema_tokener(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    decode_tokener(schema_text, schema_value_len(), n, s, true);
}

/* Small messages: the whole loop is timed, decode and put together. */
static void run_parse_status(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    decode_libqmp(status_reply, sizeof(status_reply) - 1, n, s, false);
}

static void run_parse_event(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    decode_libqmp(event_text, sizeof(event_text) - 1, n, s, false);
}

static void run_tok_status(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    decode_tokener(status_reply, sizeof(status_reply) - 1, n, s, false);
}

static void run_tok_event(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    decode_tokener(event_text, sizeof(event_text) - 1, n, s, false);
}

/* --- (f) heap */

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define HAVE_MALLINFO2 1
#else
#define HAVE_MALLINFO2 0
#endif

/* Bytes of heap in use (glibc's count of allocated chunks, headers
 * included). */
static size_t heap_in_use(void)
{
#if HAVE_MALLINFO2
    return mallinfo2().uordblks;
#else
    return 0;
#endif
}

/* Bytes held by a client connected to the server and idle. */
static void run_heap_client(const measurement *m, void *st, size_t n, sample *s)
{
    (void)m;
    (void)st;
    (void)n;
    /* One cycle first, so one-time allocations (stdio, libc caches) are
     * not counted. */
    qmp_client_unref(client_open(opt.server));
    size_t before = heap_in_use();
    qmp_client *c = client_open(opt.server);
    size_t after = heap_in_use();
    qmp_client_unref(c);
    s->wall_ns += (double)(after - before);
}

/* Bytes held by a session that took a greeting and negotiated (in
 * memory, no socket). */
static void run_heap_session(const measurement *m, void *st, size_t n, sample *s)
{
    static const char greeting[] =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
        "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}\r\n";
    (void)m;
    (void)st;
    (void)n;
    for (int round = 0; round < 2; round++) {
        size_t before = heap_in_use();
        qmp_session *ss = NULL;
        if (qmp_session_new(&ss) < 0 ||
            qmp_session_feed(ss, greeting, sizeof(greeting) - 1, NULL) < 0)
            die("session setup failed");
        size_t len;
        const char *out = qmp_session_get_output(ss, &len, NULL, NULL);
        const char *id = out ? memmem(out, len, "\"id\":", 5) : NULL;
        if (id == NULL)
            die("no qmp_capabilities request");
        const char *idend = memchr(id, '}', len - (size_t)(id - out));
        char reply[128];
        int rl =
            snprintf(reply, sizeof(reply), "{\"return\": {}, %.*s}\r\n", (int)(idend - id), id);
        qmp_session_consume_output(ss, len);
        if (qmp_session_feed(ss, reply, (size_t)rl, NULL) < 0 ||
            qmp_session_get_state(ss) != QMP_SESSION_READY)
            die("session negotiation failed");
        size_t after = heap_in_use();
        qmp_session_unref(ss);
        if (round == 1)
            s->wall_ns += (double)(after - before);
    }
}

/* ------------------------------------------------------------ the table */

/* Shorthands for the table. */
#define RAW setup_raw, teardown_raw
#define CLIENT setup_client, teardown_client
#define SESSION setup_session, teardown_session
#define NONE setup_none, teardown_none

/*
 * A measurement whose "floor" names the entry just before it is run
 * interleaved with that entry, repetition by repetition, so that the
 * machine's drift hits both alike and their ratio stays meaningful.
 */
static const measurement measurements[] = {
    {"rt-raw", "(a) raw floor: query-status round trip", U_TIME_PER_OP, 10000, RAW, run_rt_raw,
     NULL, false},
    {"rt-client", "(b) libqmp qmp_client_execute round trip", U_TIME_PER_OP, 10000, CLIENT,
     run_rt_client, "rt-raw", false},
    {"pipe-raw", "(c) raw floor pipelined", U_TIME_PER_OP, 100000, RAW, run_pipe_raw, NULL, false},
    {"pipe-session", "(c) libqmp qmp_session pipelined", U_TIME_PER_OP, 100000, SESSION,
     run_pipe_session, "pipe-raw", false},
    {"ev-client", "(d) events routed into the client queue", U_TIME_PER_OP, 200000, CLIENT,
     run_ev_client, NULL, false},
    {"ev-client-decode", "(d) events routed, taken, data decoded", U_TIME_PER_OP, 200000, CLIENT,
     run_ev_client_decode, NULL, false},
    {"ev-session", "(d) events via session callback (count)", U_TIME_PER_OP, 200000, SESSION,
     run_ev_session, NULL, false},
    {"schema-client", "(e) schema: receive+decode via client", U_CPU_PER_OP, 20, CLIENT,
     run_schema_client, NULL, false},
    {"schema-parse", "(e) schema: qmp_json_parse alone", U_CPU_PER_OP, 20, NONE, run_schema_parse,
     NULL, false},
    {"schema-tokener", "(e) schema: json_tokener alone", U_CPU_PER_OP, 20, NONE, run_schema_tokener,
     "schema-parse", false},
    {"parse-status", "    qmp_json_parse: query-status reply", U_CPU_PER_OP, 200000, NONE,
     run_parse_status, NULL, false},
    {"tok-status", "    json_tokener: query-status reply", U_CPU_PER_OP, 200000, NONE,
     run_tok_status, "parse-status", false},
    {"parse-event", "    qmp_json_parse: event", U_CPU_PER_OP, 200000, NONE, run_parse_event, NULL,
     false},
    {"tok-event", "    json_tokener: event", U_CPU_PER_OP, 200000, NONE, run_tok_event,
     "parse-event", false},
    {"heap-client", "(f) heap: idle connected client", U_BYTES, 1, NONE, run_heap_client, NULL,
     false},
    {"heap-session", "(f) heap: session alone (negotiated)", U_BYTES, 1, NONE, run_heap_session,
     NULL, false},
    {"qemu-rt-raw", "(a) raw floor: query-status round trip", U_TIME_PER_OP, 2000, RAW, run_rt_raw,
     NULL, true},
    {"qemu-rt-client", "(b) libqmp qmp_client_execute round trip", U_TIME_PER_OP, 2000, CLIENT,
     run_rt_client, "qemu-rt-raw", true},
    {"qemu-schema-client", "(e) schema: receive+decode via client", U_CPU_PER_OP, 10, CLIENT,
     run_schema_client, NULL, true},
};
#define N_MEASUREMENTS (sizeof(measurements) / sizeof(measurements[0]))

static result results[N_MEASUREMENTS];

static const measurement *find_measurement(const char *name, size_t *ret_index)
{
    for (size_t i = 0; i < N_MEASUREMENTS; i++) {
        if (strcmp(measurements[i].name, name) == 0) {
            if (ret_index)
                *ret_index = i;
            return &measurements[i];
        }
    }
    return NULL;
}

/* True when measurement i runs interleaved with measurement i - 1. */
static bool paired_with_previous(size_t i)
{
    return i > 0 && measurements[i].floor != NULL &&
           strcmp(measurements[i].floor, measurements[i - 1].name) == 0;
}

/*
 * Runs measurements first .. first+count-1 interleaved: a warm-up each,
 * then repetition r of each in turn.  A real QEMU serves one client at a
 * time, so there every repetition connects anew (connecting is never
 * timed); the fast server takes them all at once.
 */
static void run_group(size_t first, size_t count)
{
    enum { MAX_GROUP = 2 };
    void *st[MAX_GROUP] = {NULL};
    size_t n[MAX_GROUP];
    double wall[MAX_GROUP][MAX_REPS], cpu[MAX_GROUP][MAX_REPS];
    bool per_rep = measurements[first].qemu;
    int reps = measurements[first].unit == U_BYTES ? 1 : opt.reps;

    if (count > MAX_GROUP)
        die("internal error: group too large");
    if (measurements[first].unit == U_BYTES && !HAVE_MALLINFO2) {
        if (!opt.quiet)
            printf("%-44s (mallinfo2 not available)\n", measurements[first].label);
        return;
    }
    for (size_t g = 0; g < count; g++) {
        const measurement *m = &measurements[first + g];
        n[g] = m->unit == U_BYTES ? 1 : opt.n ? opt.n : m->default_n;
    }
    /* r == -1: one warm-up round (per repetition instead with per_rep). */
    for (int r = per_rep ? 0 : -1; r < reps; r++) {
        for (size_t g = 0; g < count; g++) {
            const measurement *m = &measurements[first + g];
            size_t warm = opt.warmup >= 0 ? (size_t)opt.warmup : (n[g] / 10 ? n[g] / 10 : 1);
            sample s = {0, 0};
            if (st[g] == NULL)
                st[g] = m->setup(m, n[g]);
            if (r < 0 || per_rep) {
                /* Warm up once per connection. */
                if (warm > 0 && m->unit != U_BYTES)
                    m->run(m, st[g], warm, &s);
                if (r < 0)
                    continue;
                s = (sample){0, 0};
            }
            m->run(m, st[g], n[g], &s);
            wall[g][r] = s.wall_ns / (double)n[g];
            cpu[g][r] = s.cpu_ns / (double)n[g];
            if (per_rep) {
                m->teardown(st[g]);
                st[g] = NULL;
            }
        }
    }
    for (size_t g = 0; g < count; g++) {
        const measurement *m = &measurements[first + g];
        result *res = &results[first + g];
        if (st[g] != NULL)
            m->teardown(st[g]);
        res->done = true;
        res->n = n[g];
        res->reps = reps;
        res->wall_ns = median(wall[g], reps); /* sorts */
        res->wall_min = wall[g][0];
        res->wall_max = wall[g][reps - 1];
        res->cpu_ns = median(cpu[g], reps);
        res->bytes = res->wall_ns;
    }
}

static void fmt_time(char *buf, size_t len, double ns)
{
    if (ns >= 1e6)
        snprintf(buf, len, "%.2f ms", ns / 1e6);
    else if (ns >= 1e3)
        snprintf(buf, len, "%.2f us", ns / 1e3);
    else
        snprintf(buf, len, "%.0f ns", ns);
}

static void fmt_rate(char *buf, size_t len, double per_op_ns)
{
    double r = per_op_ns > 0 ? 1e9 / per_op_ns : 0;
    if (r >= 1e6)
        snprintf(buf, len, "%.2f M/s", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, len, "%.1f k/s", r / 1e3);
    else
        snprintf(buf, len, "%.1f /s", r);
}

/* Columns: label, N, wall/op, cpu/op, rate, wall and cpu against the
 * floor, then a note. */
#define ROW_FMT "%-44s %7s %10s %10s %10s %6s %6s  %s\n"

static void print_header(void)
{
    printf(ROW_FMT, "measurement (medians)", "N", "wall/op", "cpu/op", "rate", "xfloor", "cpu x",
           "wall min..max");
}

static void print_result(size_t idx)
{
    const measurement *m = &measurements[idx];
    const result *r = &results[idx];
    char nb[32], w[32], c[32], rate[32], rw[16] = "", rc[16] = "", lo[32], hi[32], note[80];

    if (!r->done)
        return;
    if (m->unit == U_BYTES) {
        snprintf(note, sizeof(note), "%.0f bytes (%.1f KiB)", r->bytes, r->bytes / 1024);
        printf(ROW_FMT, m->label, "-", "-", "-", "-", "", "", note);
        return;
    }
    size_t fi;
    if (m->floor != NULL && find_measurement(m->floor, &fi) && results[fi].done) {
        snprintf(rw, sizeof(rw), "%.2f", r->wall_ns / results[fi].wall_ns);
        snprintf(rc, sizeof(rc), "%.2f", r->cpu_ns / results[fi].cpu_ns);
    } else if (strstr(m->name, "-raw") != NULL) {
        snprintf(rw, sizeof(rw), "1.00");
        snprintf(rc, sizeof(rc), "1.00");
    }
    snprintf(nb, sizeof(nb), "%zu", r->n);
    fmt_time(c, sizeof(c), r->cpu_ns);
    fmt_time(w, sizeof(w), r->wall_ns);
    /* Decode rows are rated by CPU, the others by wall time. */
    fmt_rate(rate, sizeof(rate), m->unit == U_CPU_PER_OP ? r->cpu_ns : r->wall_ns);
    fmt_time(lo, sizeof(lo), r->wall_min);
    fmt_time(hi, sizeof(hi), r->wall_max);
    snprintf(note, sizeof(note), "%s..%s", lo, hi);
    printf(ROW_FMT, m->label, nb, w, c, rate, rw, rc, note);
}

/* Rows derived from others, printed after the row named after. */
static void print_extra(const char *after)
{
    size_t a, b;
    char rate[32], rw[16];

    if (strcmp(after, "pipe-session") == 0 && find_measurement("rt-client", &a) &&
        results[a].done && find_measurement("pipe-raw", &b) && results[b].done) {
        /* The blocking client is sequential: its throughput is the round
         * trip's. */
        fmt_rate(rate, sizeof(rate), results[a].wall_ns);
        snprintf(rw, sizeof(rw), "%.2f", results[a].wall_ns / results[b].wall_ns);
        printf(ROW_FMT, "(c) libqmp blocking client (sequential)", "-", "-", "-", rate, rw, "",
               "= (b), against the pipelined floor");
    }
    if ((strcmp(after, "ev-client") == 0 || strcmp(after, "ev-client-decode") == 0) &&
        find_measurement(after, &a) && results[a].done) {
        fmt_rate(rate, sizeof(rate), results[a].cpu_ns);
        printf(ROW_FMT, "    the same per second of client CPU", "-", "-", "-", rate, "", "", "");
    }
}

static void usage(void)
{
    printf("usage: bench [options]\n"
           "  --server PATH      use the fast server listening on PATH\n"
           "  --fastserver EXE   start this fast server (default: the one beside bench)\n"
           "  --schema FILE      captured query-qmp-schema reply (default %s)\n"
           "  --only NAME        run one measurement (see --list)\n"
           "  -n N               operations per repetition\n"
           "  --reps R           repetitions (default %d, at most %d)\n"
           "  --warmup N         warm-up operations (default N/10)\n"
           "  --depth K          commands in flight when pipelining (default %zu, max %d)\n"
           "  --qemu BIN         QEMU to measure (default %s)\n"
           "  --no-qemu          skip the real-QEMU measurements\n"
           "  --quiet            print nothing but errors (for callgrind runs)\n"
           "  --list             list the measurements\n",
           BENCH_SCHEMA_PATH, opt.reps, MAX_REPS, opt.depth, MAX_DEPTH_PIPE, opt.qemu);
}

static size_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0 || v > (1ull << 40))
        die("bad number: %s", s);
    return (size_t)v;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--list") == 0) {
            for (size_t k = 0; k < N_MEASUREMENTS; k++)
                printf("%-20s %s%s\n", measurements[k].name, measurements[k].label,
                       measurements[k].qemu ? " [real QEMU]" : "");
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            return 0;
        } else if (strcmp(a, "--no-qemu") == 0) {
            opt.qemu = NULL;
        } else if (strcmp(a, "--quiet") == 0) {
            opt.quiet = true;
        } else if (v == NULL) {
            usage();
            return 2;
        } else if (strcmp(a, "--server") == 0) {
            opt.server = argv[++i];
        } else if (strcmp(a, "--fastserver") == 0) {
            opt.fastserver = argv[++i];
        } else if (strcmp(a, "--schema") == 0) {
            opt.schema = argv[++i];
        } else if (strcmp(a, "--only") == 0) {
            opt.only = argv[++i];
        } else if (strcmp(a, "-n") == 0) {
            opt.n = parse_size(argv[++i]);
        } else if (strcmp(a, "--reps") == 0) {
            opt.reps = (int)parse_size(argv[++i]);
        } else if (strcmp(a, "--warmup") == 0) {
            opt.warmup = strcmp(v, "0") == 0 ? 0 : (int)parse_size(v);
            i++;
        } else if (strcmp(a, "--depth") == 0) {
            opt.depth = parse_size(argv[++i]);
        } else if (strcmp(a, "--qemu") == 0) {
            opt.qemu = argv[++i];
        } else {
            usage();
            return 2;
        }
    }
    if (opt.reps > MAX_REPS || opt.depth > MAX_DEPTH_PIPE)
        die("--reps at most %d, --depth at most %d", MAX_REPS, MAX_DEPTH_PIPE);

    size_t only_idx = 0;
    const measurement *only = NULL;
    if (opt.only != NULL && (only = find_measurement(opt.only, &only_idx)) == NULL)
        die("unknown measurement %s (see --list)", opt.only);

    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    atexit(cleanup_children);

    bool need_server = only == NULL || !only->qemu;
    if (need_server && opt.server == NULL)
        start_fastserver();

    if (only != NULL) {
        if (only->qemu && (opt.qemu == NULL || !start_qemu()))
            die("no QEMU to measure");
        run_group(only_idx, 1);
        if (!opt.quiet) {
            print_header();
            print_result(only_idx);
        }
        return 0;
    }

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("libqmp %s benchmarks: build %s, %ld CPUs online, %d repetitions, medians\n",
           qmp_version_string(), BENCH_BUILDTYPE, cpus, opt.reps);
    printf("cpu/op: this process's CPU time (user + system).  rate: per wall second (per CPU\n"
           "second for decode rows).  xfloor / cpu x: wall / CPU time against the raw floor\n"
           "(json_tokener rows: against qmp_json_parse), measured interleaved with it.\n\n");
    printf("Against the fast server (bench/fastserver, pipeline depth %zu):\n", opt.depth);
    print_header();
    for (size_t i = 0; i < N_MEASUREMENTS; i++) {
        if (measurements[i].qemu || paired_with_previous(i))
            continue;
        size_t count = i + 1 < N_MEASUREMENTS && paired_with_previous(i + 1) ? 2 : 1;
        run_group(i, count);
        for (size_t k = i; k < i + count; k++) {
            print_result(k);
            print_extra(measurements[k].name);
        }
        fflush(stdout);
    }
    kill_and_reap(&server_pid, SIGTERM);

    if (opt.qemu != NULL) {
        printf("\nAgainst a real QEMU (%s -M none -accel tcg):\n", opt.qemu);
        if (start_qemu()) {
            print_header();
            for (size_t i = 0; i < N_MEASUREMENTS; i++) {
                if (!measurements[i].qemu || paired_with_previous(i))
                    continue;
                size_t count = i + 1 < N_MEASUREMENTS && paired_with_previous(i + 1) ? 2 : 1;
                run_group(i, count);
                for (size_t k = i; k < i + count; k++)
                    print_result(k);
                fflush(stdout);
            }
        }
    }
    cleanup_children();
    return 0;
}
