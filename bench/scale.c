/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp scale benchmarks: the non-blocking client under load.
 *
 * One run measures:
 *   (p) pipelined throughput of ONE client: qmp_client_execute_async()
 *       with every reply decoded (qmp_reply_return() in the callback), at
 *       max_in_flight 8 (the default) and 64, driven by qmp_loop and by a
 *       bare epoll loop over the public get_fd/get_events/get_timeout/
 *       process API, next to the raw-socket pipelined floor (no JSON) at
 *       the same depths;
 *   (m) one thread driving a thousand connections (one fast server
 *       process serves them all), each with a few calls in flight and
 *       event bursts: commands/s, events/s, call latency, RSS and the heap
 *       of an idle connected client (runs A with qmp_loop, C with the bare
 *       epoll loop);
 *   (s) the same with one more connection to a server that never replies
 *       (runs B, taking turns with A and C): its calls must time out on
 *       schedule while the others' latency stays what it was;
 *   (q) fifty real qemu-system-x86_64 processes driven from one thread:
 *       connect all, query-status on all at once, stop/cont with the STOP
 *       and RESUME events taken by subscriptions.
 *
 * The client (this process) is pinned to CPU 0 and the fake servers to
 * CPU 1 (the pipelined rows also run with both on CPU 0), and the CPU
 * time of both sides is reported, so that it is clear which side limits
 * a figure.  --only NAME -n N runs one measurement of N
 * operations, which bench/run.sh runs under callgrind at two sizes.
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
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "qmp/loop.h"
#include "qmp/qmp.h"

#ifndef BENCH_SCHEMA_PATH
#define BENCH_SCHEMA_PATH "tests/data/query-qmp-schema.json"
#endif
#ifndef BENCH_BUILDTYPE
#define BENCH_BUILDTYPE "unknown"
#endif

#define MAX_REPS 99
#define MAX_QEMUS 256
#define MAX_WINDOW 1024
#define RBUF_SIZE (64 * 1024)
#define IO_TIMEOUT_MS 30000
#define EVENT_BURST 4 /* events per x-bench-events call in the many-connection runs */

/* The request libqmp sends for query-status, byte for byte (same size). */
static const char status_request[] = "{\"execute\":\"query-status\",\"id\":\"libqmp:1\"}\n";
static const char caps_request[] = "{\"execute\":\"qmp_capabilities\"}\n";

/* ------------------------------------------------------------ utilities */

static void die(const char *fmt, ...) QMP_PRINTF(1, 2);
static void cleanup_children(void);

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("scale: ", stderr);
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

static int64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static int64_t cpu_ns(void)
{
    return clock_ns(CLOCK_PROCESS_CPUTIME_ID);
}

/* CPU time of another process (all its threads), from /proc; -1 when it
 * cannot be read.  A single-threaded process is read from schedstat (ns);
 * otherwise utime + stime from stat (clock ticks). */
static int64_t proc_cpu_ns(pid_t pid, bool single_thread)
{
    char path[64], buf[1024];
    FILE *f;

    if (single_thread) {
        unsigned long long run = 0;
        snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
        f = fopen(path, "r");
        if (f != NULL) {
            int ok = fscanf(f, "%llu", &run) == 1;
            fclose(f);
            if (ok)
                return (int64_t)run;
        }
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces): state is
     * field 3, utime 14, stime 15. */
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (int64_t)((ut + st) * (1000000000.0 / (double)sysconf(_SC_CLK_TCK)));
}

/* CPU time the whole machine spent busy (every CPU, user + system + irq
 * + steal), from /proc/stat; less the benchmark's own processes, it tells
 * how much other work shared the machine during a measurement. */
static int64_t machine_busy_ns(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return 0;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (int64_t)((double)busy * (1000000000.0 / (double)sysconf(_SC_CLK_TCK)));
}

/* VmRSS and VmHWM of this process in KiB. */
static void read_rss(long *ret_rss, long *ret_hwm)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");

    *ret_rss = *ret_hwm = -1;
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *ret_rss = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *ret_hwm = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

static size_t heap_in_use(void)
{
    return mallinfo2().uordblks;
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

/* Formats a duration in ns with a unit. */
static const char *fmt_ns(char *buf, size_t size, double ns)
{
    if (ns < 1e3)
        snprintf(buf, size, "%.0f ns", ns);
    else if (ns < 1e6)
        snprintf(buf, size, "%.1f us", ns / 1e3);
    else if (ns < 1e9)
        snprintf(buf, size, "%.2f ms", ns / 1e6);
    else
        snprintf(buf, size, "%.3f s", ns / 1e9);
    return buf;
}

/* Formats a rate per second. */
static const char *fmt_rate(char *buf, size_t size, double per_s)
{
    if (per_s >= 1e6)
        snprintf(buf, size, "%.2f M/s", per_s / 1e6);
    else if (per_s >= 1e3)
        snprintf(buf, size, "%.1f k/s", per_s / 1e3);
    else
        snprintf(buf, size, "%.0f /s", per_s);
    return buf;
}

/* Progress on stderr (after what stdout holds), unless --quiet. */
static void progress(const char *what);

/* -------------------------------------------------------------- histogram */

/*
 * Latencies go into a log-linear histogram (64 buckets per power of two,
 * under 1.6 % error), not a list, so that recording one costs nothing
 * and takes no memory that would show up in the RSS being measured.
 */
#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB * 60)

typedef struct hist {
    uint64_t count;
    int64_t min, max;
    uint64_t bucket[HIST_BUCKETS];
} hist;

static size_t hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - HIST_SUB_BITS;
    size_t i = (size_t)(shift + 1) * HIST_SUB + (size_t)((v >> shift) - HIST_SUB);
    return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

/* The middle of bucket i. */
static double hist_value(size_t i)
{
    if (i < 2 * HIST_SUB)
        return (double)i;
    unsigned shift = (unsigned)(i / HIST_SUB) - 1;
    uint64_t lo = (uint64_t)(i % HIST_SUB + HIST_SUB) << shift;
    return (double)lo + (double)((uint64_t)1 << shift) / 2;
}

static void hist_reset(hist *h)
{
    memset(h, 0, sizeof(*h));
}

static void hist_add(hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    h->count++;
    h->bucket[hist_index((uint64_t)v)]++;
}

/* The value below which a fraction q of the samples lie. */
static double hist_quantile(const hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count)
        rank = h->count - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen > rank) {
            double v = hist_value(i);
            return v < (double)h->min ? (double)h->min : v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

/* ---------------------------------------------------------------- options */

typedef struct options {
    const char *fastserver; /* NULL: the one built next to us */
    const char *schema;
    const char *only;
    const char *qemu; /* NULL: skip the real-QEMU part */
    size_t n;         /* 0: each measurement's default */
    int reps;
    unsigned conns;
    unsigned per_conn; /* calls in flight per connection */
    double secs;
    double warmup_secs;
    int call_timeout_ms;
    unsigned qemus;
    unsigned qemu_rounds;
    unsigned qemu_calls; /* per QEMU, pipelined */
    unsigned many_reps;  /* rounds of the many-connection runs A, B and C */
    unsigned stop_cont;  /* stop/cont cycles */
    bool pin;
    bool quiet;
} options;

static options opt = {
    .schema = BENCH_SCHEMA_PATH,
    .qemu = "qemu-system-x86_64",
    .reps = 5,
    .conns = 1000,
    .per_conn = 4,
    .secs = 3,
    .warmup_secs = 0.5,
    .many_reps = 3,
    .call_timeout_ms = 1000,
    .qemus = 50,
    .qemu_rounds = 100,
    .qemu_calls = 200,
    .stop_cont = 3,
    .pin = true,
};

static int client_cpu = -1; /* CPU this process is pinned to, -1: none */
static int server_cpu = -1; /* CPU the fake servers are pinned to */

/* -------------------------------------------------------- child processes */

/*
 * Every child is recorded here before anything can fail, so that it is
 * killed by its pid at exit, on die() and on fatal signals (the signal
 * handler uses only kill(), unlink() and rmdir(), which are safe there).
 * Children also die with us through PR_SET_PDEATHSIG.
 */
typedef struct child {
    pid_t pid;
    int sig;       /* how to stop it: SIGTERM (servers), SIGKILL (QEMU) */
    char dir[64];  /* private mkdtemp directory, "" when none */
    char sock[96]; /* its socket, removed at the end */
    char log[96];  /* its output, removed at the end */
} child;

static child children[MAX_QEMUS + 2];
static volatile sig_atomic_t n_children;

static void child_files_remove(child *ch)
{
    if (ch->sock[0])
        unlink(ch->sock);
    if (ch->log[0])
        unlink(ch->log);
    if (ch->dir[0])
        rmdir(ch->dir);
}

static void child_stop(child *ch)
{
    if (ch->pid > 0) {
        kill(ch->pid, ch->sig);
        waitpid(ch->pid, NULL, 0);
        ch->pid = -1;
    }
    child_files_remove(ch);
    ch->sock[0] = ch->log[0] = ch->dir[0] = '\0';
}

static void cleanup_children(void)
{
    for (int i = n_children; i-- > 0;)
        child_stop(&children[i]);
    n_children = 0;
}

static void on_fatal_signal(int sig)
{
    for (int i = 0; i < n_children; i++) {
        if (children[i].pid > 0)
            kill(children[i].pid, SIGKILL);
    }
    for (int i = 0; i < n_children; i++) {
        if (children[i].pid > 0)
            waitpid(children[i].pid, NULL, 0);
        child_files_remove(&children[i]);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static child *child_new(int sig)
{
    if (n_children >= (int)(sizeof(children) / sizeof(children[0])))
        die("too many child processes");
    child *ch = &children[n_children];
    memset(ch, 0, sizeof(*ch));
    ch->pid = -1;
    ch->sig = sig;
    strcpy(ch->dir, "/tmp/libqmp-scale-XXXXXX");
    if (mkdtemp(ch->dir) == NULL) {
        ch->dir[0] = '\0';
        die("mkdtemp: %s", strerror(errno));
    }
    n_children = n_children + 1;
    return ch;
}

static void pin_to(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

/* Binds and listens on a unix socket at path, with room for many
 * connections at once. */
static int listen_at(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        die("socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0)
        die("cannot listen on %s: %s", path, strerror(errno));
    return fd;
}

/*
 * Starts argv[0] in ch with listen_fd inherited (the socket listens before
 * the child runs, so connecting needs no waiting), on CPU cpu (-1: any).
 * Returns false, with errno, when it cannot be executed.
 */
static bool spawn(child *ch, char **argv, int listen_fd, int cpu)
{
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0)
        die("pipe: %s", strerror(errno));
    int logfd = ch->log[0] ? open(ch->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
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
        cpu_set_t set;
        CPU_ZERO(&set);
        if (cpu >= 0) {
            CPU_SET(cpu, &set);
        } else {
            for (int i = 0; i < CPU_SETSIZE; i++)
                CPU_SET(i, &set);
        }
        /* Undo our own pinning when the child may run anywhere. */
        (void)sched_setaffinity(0, sizeof(set), &set);
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
    ch->pid = pid;
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
        ch->pid = -1;
        errno = e;
        return false;
    }
    return true;
}

/* A fast server (bench/fastserver --epoll); silent ones never reply. */
static child *start_fastserver(bool silent)
{
    char exe[PATH_MAX], fdarg[16], schema_arg[PATH_MAX];
    const char *fs = opt.fastserver;

    if (fs == NULL) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 16);
        if (n < 0)
            die("readlink /proc/self/exe: %s", strerror(errno));
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        strcpy(slash ? slash + 1 : exe, "fastserver");
        fs = exe;
    }
    child *ch = child_new(SIGTERM);
    snprintf(ch->sock, sizeof(ch->sock), "%s/%s.sock", ch->dir, silent ? "silent" : "fast");
    int lfd = listen_at(ch->sock);
    snprintf(fdarg, sizeof(fdarg), "%d", lfd);
    snprintf(schema_arg, sizeof(schema_arg), "%s", opt.schema);
    char *argv[] = {(char *)fs,    "--epoll", "--schema", schema_arg,
                    "--listen-fd", fdarg,     NULL,       NULL};
    if (silent)
        argv[6] = "--silent";
    if (!spawn(ch, argv, lfd, server_cpu))
        die("cannot start %s: %s", fs, strerror(errno));
    close(lfd);
    return ch;
}

/* --------------------------------------------------------------- drivers */

/*
 * Two ways to drive non-blocking clients from one thread:
 *   DRV_LOOP  the library's qmp_loop;
 *   DRV_OWN   a bare epoll loop over the public get_fd/get_events/
 *             get_timeout/process API, as an application with its own
 *             loop would write it (the reference for qmp_loop's cost).
 */
typedef enum driver_kind { DRV_LOOP, DRV_OWN } driver_kind;

static const char *const driver_names[] = {"qmp_loop", "own epoll loop"};

/* One client in the own loop.  Entries live in the benchmark's own
 * arrays and are only removed between rounds, never by a callback, so the
 * pointers of an epoll batch stay valid for the whole batch. */
typedef struct own_entry {
    qmp_client *c;
    int fd;          /* registered descriptor, -1: none */
    uint32_t events; /* registered events */
    size_t index;    /* in own.entries */
    bool dirty;      /* listed in own.dirty: sync before the next wait */
    bool refresh;    /* the descriptor may have been closed and reopened */
    bool broken;     /* process() failed: unwatched until the watch callback */
} own_entry;

static struct {
    int ep;
    own_entry **entries;
    size_t n, cap;
    own_entry **dirty;
    size_t n_dirty;
    uint64_t next_deadline; /* lower bound of every client's deadline (usec) */
} own = {.ep = -1, .next_deadline = UINT64_MAX};

static qmp_loop *loop;

static uint64_t now_usec(void)
{
    return (uint64_t)now_ns() / 1000;
}

static void own_note_deadline(qmp_client *c)
{
    uint64_t d;
    if (qmp_client_get_timeout(c, &d) == 0 && d < own.next_deadline)
        own.next_deadline = d;
}

/* The watch callback: note the change, sync before the next wait.  Only
 * the get_* functions may be called here. */
static void own_watch(qmp_client *c, void *userdata)
{
    own_entry *e = userdata;

    if (qmp_client_get_fd(c) != e->fd)
        e->refresh = true;
    e->broken = false;
    if (!e->dirty) {
        e->dirty = true;
        own.dirty[own.n_dirty++] = e;
    }
    own_note_deadline(c);
}

/* Brings e's epoll registration up to date.  A descriptor that the client
 * closed has left epoll by itself and its number may belong to another
 * client now, so registrations are never deleted by number here. */
static void own_sync(own_entry *e)
{
    int fd = e->broken ? -1 : qmp_client_get_fd(e->c);
    int pev = qmp_client_get_events(e->c);
    uint32_t want = (pev & POLLIN ? EPOLLIN : 0u) | (pev & POLLOUT ? EPOLLOUT : 0u);
    struct epoll_event ev = {.events = want, .data.ptr = e};

    own_note_deadline(e->c);
    if (fd != e->fd || e->refresh) {
        e->refresh = false;
        e->fd = fd;
        e->events = want;
        if (fd < 0)
            return;
        if (epoll_ctl(own.ep, EPOLL_CTL_ADD, fd, &ev) < 0 &&
            (errno != EEXIST || epoll_ctl(own.ep, EPOLL_CTL_MOD, fd, &ev) < 0))
            die("epoll_ctl: %s", strerror(errno));
    } else if (fd >= 0 && want != e->events) {
        if (epoll_ctl(own.ep, EPOLL_CTL_MOD, fd, &ev) < 0)
            die("epoll_ctl: %s", strerror(errno));
        e->events = want;
    }
}

static void own_process(own_entry *e)
{
    if (qmp_client_process(e->c, NULL) < 0 && !e->broken) {
        /* Broken: stop watching it until it reconnects (its watch
         * callback runs then); its descriptor may still be open. */
        if (e->fd >= 0)
            (void)epoll_ctl(own.ep, EPOLL_CTL_DEL, e->fd, NULL);
        e->fd = -1;
        e->broken = true;
    }
    own_sync(e);
}

static void own_add(own_entry *e, qmp_client *c)
{
    if (own.ep < 0 && (own.ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    if (own.n == own.cap) {
        own.cap = own.cap ? own.cap * 2 : 64;
        own.entries = realloc(own.entries, own.cap * sizeof(*own.entries));
        own.dirty = realloc(own.dirty, own.cap * sizeof(*own.dirty));
        if (own.entries == NULL || own.dirty == NULL)
            die("out of memory");
    }
    *e = (own_entry){.c = c, .fd = -1, .index = own.n};
    own.entries[own.n++] = e;
    qmp_client_set_watch_callback(c, own_watch, e);
    own_sync(e);
}

static void own_remove(own_entry *e)
{
    qmp_client_set_watch_callback(e->c, NULL, NULL);
    /* The client's descriptor is still open here, and it is e's. */
    if (e->fd >= 0)
        (void)epoll_ctl(own.ep, EPOLL_CTL_DEL, e->fd, NULL);
    if (e->dirty) {
        for (size_t i = 0; i < own.n_dirty; i++) {
            if (own.dirty[i] == e) {
                own.dirty[i] = own.dirty[--own.n_dirty];
                break;
            }
        }
    }
    own.entries[e->index] = own.entries[--own.n];
    own.entries[e->index]->index = e->index;
    e->c = NULL;
}

/* Processes the clients whose deadline passed.  Deadlines are only
 * scanned when the earliest one known may have passed. */
static void own_expire(void)
{
    uint64_t now = now_usec();
    if (now < own.next_deadline)
        return;
    own.next_deadline = UINT64_MAX;
    for (size_t i = 0; i < own.n; i++) {
        uint64_t d;
        own_entry *e = own.entries[i];
        if (qmp_client_get_timeout(e->c, &d) == 0 && d <= now)
            own_process(e);
        else
            own_note_deadline(e->c);
    }
}

static int own_run_once(int timeout_ms)
{
    struct epoll_event evs[256];

    /* Only this clears the dirty flag, so that an entry is listed at most
     * once however often it is synced meanwhile. */
    for (size_t i = 0; i < own.n_dirty; i++) {
        own.dirty[i]->dirty = false;
        own_sync(own.dirty[i]);
    }
    own.n_dirty = 0;
    int wait = timeout_ms;
    if (own.next_deadline != UINT64_MAX) {
        uint64_t now = now_usec();
        uint64_t ms = own.next_deadline <= now ? 0 : (own.next_deadline - now + 999) / 1000;
        if (wait < 0 || ms < (uint64_t)wait)
            wait = ms > INT_MAX ? INT_MAX : (int)ms;
    }
    int n = epoll_wait(own.ep, evs, (int)(sizeof(evs) / sizeof(evs[0])), wait);
    if (n < 0) {
        if (errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        n = 0;
    }
    for (int i = 0; i < n; i++)
        own_process(evs[i].data.ptr);
    own_expire();
    return n;
}

static driver_kind drv = DRV_LOOP;

static void drv_add(qmp_client *c, own_entry *e)
{
    if (drv == DRV_OWN) {
        own_add(e, c);
        return;
    }
    if (loop == NULL && qmp_loop_new(&loop) < 0)
        die("cannot create the loop");
    int r = qmp_loop_add_client(loop, c);
    if (r < 0)
        die("qmp_loop_add_client: %s", strerror(-r));
}

static void drv_remove(qmp_client *c, own_entry *e)
{
    if (drv == DRV_OWN)
        own_remove(e);
    else
        qmp_loop_remove_client(loop, c);
}

/* Waits up to timeout_ms for something to do, and does it. */
static void drv_run_once(int timeout_ms)
{
    if (drv == DRV_OWN) {
        own_run_once(timeout_ms);
        return;
    }
    qmp_error err = QMP_ERROR_INIT;
    if (qmp_loop_run_once(loop, timeout_ms, &err) < 0)
        die("qmp_loop_run_once: %s", err.message);
}

/* ------------------------------------------------------------ raw floor */

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
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

/* Waits for data, reads once and returns how many line ends came. */
static size_t read_lines(int fd, char *buf, size_t size)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, IO_TIMEOUT_MS) <= 0)
        die("no answer from the server");
    ssize_t r = read(fd, buf, size);
    if (r <= 0)
        die("read: %s", r == 0 ? "end of file" : strerror(errno));
    size_t lines = 0;
    for (const char *q = buf, *e = buf + r; (q = memchr(q, '\n', (size_t)(e - q))); q++)
        lines++;
    return lines;
}

/* Connects, takes the greeting and negotiates, as plain bytes. */
static int raw_open(const char *path, char *buf)
{
    int fd = connect_unix(path);
    size_t got = 0;
    while (got < 1)
        got += read_lines(fd, buf, RBUF_SIZE);
    write_all(fd, caps_request, sizeof(caps_request) - 1);
    while (got < 2)
        got += read_lines(fd, buf, RBUF_SIZE);
    return fd;
}

/* Keeps depth requests in flight until n replies came. */
static void raw_pipeline(int fd, char *buf, const char *reqs, size_t depth, size_t n)
{
    size_t len = sizeof(status_request) - 1, sent = 0, got = 0;

    while (got < n) {
        size_t k = depth - (sent - got);
        if (k > n - sent)
            k = n - sent;
        if (k > 0) {
            write_all(fd, reqs, k * len);
            sent += k;
        }
        got += read_lines(fd, buf, RBUF_SIZE);
    }
}

/* ------------------------------------------------ one pipelined client */

typedef struct pipe_state {
    qmp_client *c;
    own_entry own;
    size_t n, started, done;
} pipe_state;

static void pipe_start(pipe_state *ps);

static void pipe_on_reply(qmp_client *c, qmp_reply *r, void *userdata)
{
    pipe_state *ps = userdata;
    (void)c;
    /* Decode every reply, as a caller that uses the result would. */
    if (qmp_reply_status(r) != 0 || qmp_reply_return(r) == NULL)
        die("query-status failed: %s",
            qmp_reply_error(r) ? qmp_reply_error(r)->message : "no return value");
    ps->done++;
    if (ps->started < ps->n)
        pipe_start(ps);
}

static void pipe_start(pipe_state *ps)
{
    qmp_error err = QMP_ERROR_INIT;
    if (qmp_client_execute_async(ps->c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                 pipe_on_reply, ps, NULL, &err) < 0)
        die("execute_async: %s", err.message);
    ps->started++;
}

/* Runs n pipelined calls; the application keeps twice the in-flight
 * limit started, so the client always has the next command queued. */
static void pipe_run(pipe_state *ps, unsigned max_in_flight, size_t n)
{
    size_t window = 2 * (size_t)max_in_flight;
    ps->n = n;
    ps->started = ps->done = 0;
    while (ps->started < n && ps->started < window)
        pipe_start(ps);
    while (ps->done < n) {
        size_t before = ps->done;
        int64_t t = now_ns();
        drv_run_once(IO_TIMEOUT_MS);
        if (ps->done == before && now_ns() - t >= (int64_t)IO_TIMEOUT_MS * 1000000)
            die("no reply from the server in %d ms", IO_TIMEOUT_MS);
    }
}

static void pipe_open(pipe_state *ps, const char *sock, unsigned max_in_flight)
{
    qmp_error err = QMP_ERROR_INIT;
    char addr[160];

    memset(ps, 0, sizeof(*ps));
    snprintf(addr, sizeof(addr), "unix:%s", sock);
    if (qmp_client_new(&ps->c) < 0 || qmp_client_set_max_in_flight(ps->c, max_in_flight) < 0)
        die("cannot create a client");
    if (qmp_client_connect(ps->c, addr, &err) < 0)
        die("cannot connect to %s: %s", addr, err.message);
    drv_add(ps->c, &ps->own);
}

static void pipe_close(pipe_state *ps)
{
    drv_remove(ps->c, &ps->own);
    qmp_client_unref(ps->c);
    ps->c = NULL;
}

/* ------------------------------------------- the pipelined measurements */

typedef enum pipe_kind { P_RAW, P_LOOP, P_OWN } pipe_kind;

typedef struct pipe_spec {
    const char *name;
    pipe_kind kind;
    unsigned depth; /* in flight: raw depth or max_in_flight */
    const char *label;
} pipe_spec;

static const pipe_spec pipe_specs[] = {
    {"raw8", P_RAW, 8, "raw floor, 8 in flight (no JSON)"},
    {"pipe8", P_LOOP, 8, "execute_async, max_in_flight 8, qmp_loop"},
    {"pipe8-own", P_OWN, 8, "execute_async, max_in_flight 8, own epoll"},
    {"raw64", P_RAW, 64, "raw floor, 64 in flight (no JSON)"},
    {"pipe64", P_LOOP, 64, "execute_async, max_in_flight 64, qmp_loop"},
    {"pipe64-own", P_OWN, 64, "execute_async, max_in_flight 64, own epoll"},
};
#define N_PIPE_SPECS (sizeof(pipe_specs) / sizeof(pipe_specs[0]))

typedef struct sample {
    double wall_ns, cpu_ns, server_ns;
} sample;

static child *fast_server;
static child *silent_server;

/* One repetition of spec: connect, warm up with n/10, time n. */
static sample pipe_measure(const pipe_spec *sp, size_t n, size_t warmup)
{
    static char buf[RBUF_SIZE];
    static char *reqs;
    size_t len = sizeof(status_request) - 1;
    sample s;
    int fd = -1;
    pipe_state ps;

    if (sp->kind == P_RAW) {
        if (reqs == NULL) {
            reqs = malloc(MAX_WINDOW * len);
            if (reqs == NULL)
                die("out of memory");
            for (size_t i = 0; i < MAX_WINDOW; i++)
                memcpy(reqs + i * len, status_request, len);
        }
        fd = raw_open(fast_server->sock, buf);
        if (warmup > 0)
            raw_pipeline(fd, buf, reqs, sp->depth, warmup);
    } else {
        drv = sp->kind == P_OWN ? DRV_OWN : DRV_LOOP;
        pipe_open(&ps, fast_server->sock, sp->depth);
        if (warmup > 0)
            pipe_run(&ps, sp->depth, warmup);
    }
    int64_t w0 = now_ns(), c0 = cpu_ns(), s0 = proc_cpu_ns(fast_server->pid, true);
    if (sp->kind == P_RAW)
        raw_pipeline(fd, buf, reqs, sp->depth, n);
    else
        pipe_run(&ps, sp->depth, n);
    s.wall_ns = (double)(now_ns() - w0);
    s.cpu_ns = (double)(cpu_ns() - c0);
    s.server_ns = (double)(proc_cpu_ns(fast_server->pid, true) - s0);
    if (sp->kind == P_RAW)
        close(fd);
    else
        pipe_close(&ps);
    return s;
}

/* Moves a running child to CPU cpu. */
static void pin_child(const child *ch, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(ch->pid, sizeof(set), &set) < 0)
        die("sched_setaffinity(%d, %d): %s", (int)ch->pid, cpu, strerror(errno));
}

static void run_pipe_placement(const char *title, size_t n)
{
    double wall[N_PIPE_SPECS][MAX_REPS], cpu[N_PIPE_SPECS][MAX_REPS], srv[N_PIPE_SPECS][MAX_REPS];
    char b1[32], b2[32], b3[32], b4[32];
    double ours = 0;

    int64_t t0 = now_ns(), m0 = machine_busy_ns();
    for (int r = 0; r < opt.reps; r++) {
        for (size_t i = 0; i < N_PIPE_SPECS; i++) {
            sample s = pipe_measure(&pipe_specs[i], n, n / 10);
            wall[i][r] = s.wall_ns / (double)n;
            cpu[i][r] = s.cpu_ns / (double)n;
            srv[i][r] = s.server_ns / s.wall_ns;
            ours += s.cpu_ns + s.server_ns;
        }
        progress(".");
    }
    double total = (double)(now_ns() - t0);
    double others = ((double)(machine_busy_ns() - m0) - ours) / total;
    progress("\n");
    printf("%s (other processes: %.0f%% of a CPU):\n", title, others < 0 ? 0 : 100 * others);
    printf("%-44s %11s %9s %9s %11s %7s %7s %7s\n", "measurement (medians)", "commands/s",
           "wall/cmd", "cpu/cmd", "per cpu-s", "client", "server", "xfloor");
    double floor_rate = 0;
    for (size_t i = 0; i < N_PIPE_SPECS; i++) {
        const pipe_spec *sp = &pipe_specs[i];
        double share[MAX_REPS];
        for (int r = 0; r < opt.reps; r++)
            share[r] = cpu[i][r] / wall[i][r];
        double wall_med = median(wall[i], opt.reps);
        double cpu_med = median(cpu[i], opt.reps);
        double rate = 1e9 / wall_med;
        if (sp->kind == P_RAW)
            floor_rate = rate;
        printf("%-44s %11s %9s %9s %11s %6.0f%% %6.0f%% %7.2f\n", sp->label,
               fmt_rate(b1, sizeof(b1), rate), fmt_ns(b2, sizeof(b2), wall_med),
               fmt_ns(b3, sizeof(b3), cpu_med), fmt_rate(b4, sizeof(b4), 1e9 / cpu_med),
               100 * median(share, opt.reps), 100 * median(srv[i], opt.reps), floor_rate / rate);
    }
}

static void run_pipe_section(void)
{
    size_t n = opt.n ? opt.n : 100000;

    printf("\n(p) One client, one connection, pipelined query-status, every reply decoded\n"
           "    (N = %zu per repetition, medians of %d; rows interleaved repetition by\n"
           "    repetition; the application keeps 2 x max_in_flight calls started)\n",
           n, opt.reps);
    if (client_cpu >= 0) {
        pin_child(fast_server, client_cpu);
        progress("(p) one core ");
        run_pipe_placement("one core: client and server share CPU 0", n);
        pin_child(fast_server, server_cpu);
        progress("(p) two cores ");
        run_pipe_placement("two cores: client on CPU 0, server on CPU 1", n);
    } else {
        progress("(p) ");
        run_pipe_placement("not pinned", n);
    }
    printf("    client, server: each process's CPU time / wall time; per cpu-s: commands per\n"
           "    second of client CPU; xfloor: the raw floor's rate / this rate; other\n"
           "    processes: CPU time the rest of the machine used meanwhile (noise)\n");
}

/* ------------------------------------------- many connections, one thread */

typedef struct app_conn app_conn;

/* One call in flight: which connection, when it started. */
typedef struct call_rec {
    app_conn *cn;
    int64_t start;
    bool events_call;
} call_rec;

struct app_conn {
    qmp_client *c;
    own_entry own;
    bool silent;
    bool events; /* mix x-bench-events into the calls */
    int state;   /* 0 connecting, 1 connected, -1 failed */
    unsigned window;
    unsigned inflight;
    uint64_t started;
    uint64_t limit; /* start no call past this many */
    call_rec *recs;
    unsigned *free_recs;
    unsigned n_free;
    int64_t cmd_start; /* stop/cont: when the command was sent */
    bool got_event, got_reply;
};

typedef enum phase { PH_IDLE, PH_WARMUP, PH_MEASURE, PH_DRAIN } phase;

/* Everything the callbacks count. */
static struct {
    phase phase;
    hist status_lat;   /* query-status, completed while measuring */
    hist events_lat;   /* x-bench-events (its reply comes after its events) */
    hist timeout_lat;  /* start to -ETIMEDOUT, every phase */
    uint64_t commands; /* completed successfully while measuring */
    uint64_t events;   /* received while measuring */
    uint64_t timeouts_silent, timeouts_other;
    uint64_t errors;
    char last_error[sizeof(((qmp_error *)0)->message)];
    uint64_t inflight;
    unsigned connected, connect_failed;
    unsigned stop_replies, stop_events;
} st;

static json_object *events_args;

static void conn_init(app_conn *cn, unsigned window)
{
    memset(cn, 0, sizeof(*cn));
    cn->window = window;
    cn->recs = calloc(window, sizeof(*cn->recs));
    cn->free_recs = calloc(window, sizeof(*cn->free_recs));
    if (cn->recs == NULL || cn->free_recs == NULL)
        die("out of memory");
    for (unsigned i = 0; i < window; i++) {
        cn->recs[i].cn = cn;
        cn->free_recs[i] = window - 1 - i;
    }
    cn->n_free = window;
}

static void conn_fini(app_conn *cn)
{
    free(cn->recs);
    free(cn->free_recs);
}

static void on_connected(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    app_conn *cn = userdata;
    (void)c;
    if (status == 0) {
        cn->state = 1;
        st.connected++;
    } else {
        cn->state = -1;
        st.connect_failed++;
        snprintf(st.last_error, sizeof(st.last_error), "%s", err ? err->message : "?");
    }
}

/* Runs only for an established connection that broke (not for close or
 * unref): nothing here should ever break one. */
static void on_disconnected(qmp_client *c, const qmp_error *err, void *userdata)
{
    (void)c;
    (void)userdata;
    die("a connection broke: %s", err ? err->message : "?");
}

static void on_bench_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    (void)c;
    (void)ev;
    (void)userdata;
    if (st.phase == PH_MEASURE)
        st.events++;
}

static void start_call(app_conn *cn);

static void on_call_reply(qmp_client *c, qmp_reply *r, void *userdata)
{
    call_rec *rec = userdata;
    app_conn *cn = rec->cn;
    int64_t now = now_ns();
    int status = qmp_reply_status(r);
    (void)c;

    if (status == 0) {
        if (qmp_reply_return(r) == NULL)
            die("a reply without a return value");
        if (st.phase == PH_MEASURE) {
            st.commands++;
            hist_add(rec->events_call ? &st.events_lat : &st.status_lat, now - rec->start);
        }
    } else if (status == -ETIMEDOUT) {
        hist_add(&st.timeout_lat, now - rec->start);
        if (cn->silent)
            st.timeouts_silent++;
        else
            st.timeouts_other++;
    } else if (st.phase != PH_IDLE) {
        st.errors++;
        snprintf(st.last_error, sizeof(st.last_error), "%s",
                 qmp_reply_error(r) ? qmp_reply_error(r)->message : "?");
    }
    cn->free_recs[cn->n_free++] = (unsigned)(rec - cn->recs);
    cn->inflight--;
    st.inflight--;
    if ((st.phase == PH_WARMUP || st.phase == PH_MEASURE) && cn->started < cn->limit)
        start_call(cn);
}

static void start_call(app_conn *cn)
{
    qmp_error err = QMP_ERROR_INIT;

    if (cn->n_free == 0)
        die("no call slot free");
    call_rec *rec = &cn->recs[cn->free_recs[--cn->n_free]];
    /* One call in four asks for a burst of events, which arrive before
     * its reply, between the other calls' replies. */
    rec->events_call = cn->events && cn->started % 4 == 3;
    rec->start = now_ns();
    if (qmp_client_execute_async(cn->c, rec->events_call ? "x-bench-events" : "query-status",
                                 rec->events_call ? events_args : NULL, 0, QMP_TIMEOUT_DEFAULT,
                                 NULL, 0, on_call_reply, rec, NULL, &err) < 0)
        die("execute_async: %s", err.message);
    cn->started++;
    cn->inflight++;
    st.inflight++;
}

/* Starts up to the window of calls on cn, at most limit in all. */
static void conn_fill(app_conn *cn)
{
    while (cn->inflight < cn->window && cn->started < cn->limit)
        start_call(cn);
}

static void conn_client_new(app_conn *cn, int timeout_ms, int connect_timeout_ms)
{
    if (qmp_client_new(&cn->c) < 0 || qmp_client_set_timeout(cn->c, timeout_ms) < 0 ||
        qmp_client_set_connect_timeout(cn->c, connect_timeout_ms) < 0)
        die("cannot create a client");
    qmp_client_set_connect_callback(cn->c, on_connected, cn);
    qmp_client_set_disconnect_callback(cn->c, on_disconnected, cn);
}

static void conn_connect(app_conn *cn, const char *sock)
{
    qmp_error err = QMP_ERROR_INIT;
    char addr[160];
    snprintf(addr, sizeof(addr), "unix:%s", sock);
    if (qmp_client_connect_async(cn->c, addr, &err) < 0)
        die("cannot connect to %s: %s", addr, err.message);
}

/* Runs the loop until *counter reaches want or deadline_ms passes. */
static bool run_until(const unsigned *counter, unsigned want, int deadline_ms)
{
    int64_t end = now_ns() + (int64_t)deadline_ms * 1000000;
    while (*counter < want) {
        int64_t left = end - now_ns();
        if (left <= 0)
            return false;
        drv_run_once((int)((left + 999999) / 1000000));
    }
    return true;
}

/* Runs the loop until no call is in flight. */
static bool run_drain(int deadline_ms)
{
    int64_t end = now_ns() + (int64_t)deadline_ms * 1000000;
    while (st.inflight > 0) {
        int64_t left = end - now_ns();
        if (left <= 0)
            return false;
        drv_run_once((int)((left + 999999) / 1000000));
    }
    return true;
}

/* Runs the loop until the wall clock reaches end. */
static void run_for(int64_t end)
{
    for (;;) {
        int64_t left = end - now_ns();
        if (left <= 0)
            return;
        drv_run_once((int)((left + 999999) / 1000000));
    }
}

static void stats_reset(void)
{
    hist_reset(&st.status_lat);
    hist_reset(&st.events_lat);
    hist_reset(&st.timeout_lat);
    st.commands = st.events = 0;
    st.timeouts_silent = st.timeouts_other = st.errors = 0;
    st.last_error[0] = '\0';
}

/* What one load run reports. */
typedef struct load_result {
    double secs;
    double commands_s, events_s;
    double p50, p99, p999, max;    /* query-status latency, ns */
    double ev_p99;                 /* x-bench-events latency */
    double client_cpu, server_cpu; /* shares of one CPU */
    double others;                 /* CPU used by other processes, shares of one CPU */
    uint64_t errors, timeouts_other, timeouts_silent;
    hist timeouts;
    long rss_kib, hwm_kib;
} load_result;

static app_conn *conns; /* opt.conns normal ones, then the silent one */

/* Keeps every connection busy for warm-up + secs and measures the secs. */
static void load_run(bool with_silent, load_result *res)
{
    unsigned n = opt.conns;
    char b[32];

    stats_reset();
    st.phase = PH_WARMUP;
    for (unsigned i = 0; i < n; i++) {
        conns[i].limit = UINT64_MAX;
        conn_fill(&conns[i]);
    }
    if (with_silent) {
        conns[n].limit = UINT64_MAX;
        conn_fill(&conns[n]);
    }
    run_for(now_ns() + (int64_t)(opt.warmup_secs * 1e9));

    st.phase = PH_MEASURE;
    int64_t w0 = now_ns(), c0 = cpu_ns(), s0 = proc_cpu_ns(fast_server->pid, true);
    int64_t m0 = machine_busy_ns();
    run_for(w0 + (int64_t)(opt.secs * 1e9));
    st.phase = PH_DRAIN;
    double wall = (double)(now_ns() - w0);
    double ccpu = (double)(cpu_ns() - c0),
           scpu = (double)(proc_cpu_ns(fast_server->pid, true) - s0);
    res->client_cpu = ccpu / wall;
    res->server_cpu = scpu / wall;
    res->others = ((double)(machine_busy_ns() - m0) - ccpu - scpu) / wall;
    if (res->others < 0)
        res->others = 0;
    read_rss(&res->rss_kib, &res->hwm_kib);

    if (!run_drain(2 * opt.call_timeout_ms + IO_TIMEOUT_MS))
        die("calls still in flight after the run (%s)", fmt_ns(b, sizeof(b), 0));
    st.phase = PH_IDLE;

    res->secs = wall / 1e9;
    res->commands_s = (double)st.commands / res->secs;
    res->events_s = (double)st.events / res->secs;
    res->p50 = hist_quantile(&st.status_lat, 0.50);
    res->p99 = hist_quantile(&st.status_lat, 0.99);
    res->p999 = hist_quantile(&st.status_lat, 0.999);
    res->max = (double)st.status_lat.max;
    res->ev_p99 = hist_quantile(&st.events_lat, 0.99);
    res->errors = st.errors;
    res->timeouts_other = st.timeouts_other;
    res->timeouts_silent = st.timeouts_silent;
    res->timeouts = st.timeout_lat;
    if (st.errors > 0)
        printf("    %llu calls failed; last: %s\n", (unsigned long long)st.errors, st.last_error);
}

static void print_load(const char *label, const load_result *r)
{
    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32], b7[32];
    printf("%-36s %10s %10s %9s %9s %9s %9s %9s %6.0f%% %6.0f%% %6.0f%% %7.1f\n", label,
           fmt_rate(b1, sizeof(b1), r->commands_s),
           fmt_rate(b2, sizeof(b2), r->commands_s / r->client_cpu), fmt_ns(b3, sizeof(b3), r->p50),
           fmt_ns(b4, sizeof(b4), r->p99), fmt_ns(b5, sizeof(b5), r->p999),
           fmt_ns(b6, sizeof(b6), r->max), fmt_ns(b7, sizeof(b7), r->ev_p99), 100 * r->client_cpu,
           100 * r->server_cpu, 100 * r->others, (double)r->hwm_kib / 1024);
}

/* Connects conns[from..to) to sock; returns the time it took. */
static double connect_range(unsigned from, unsigned to, const char *sock)
{
    unsigned want = st.connected + (to - from);
    int64_t t0 = now_ns();
    for (unsigned i = from; i < to; i++)
        conn_connect(&conns[i], sock);
    if (!run_until(&st.connected, want, 60000) || st.connect_failed > 0)
        die("%u of %u connections failed or timed out: %s", st.connect_failed, to - from,
            st.last_error);
    return (double)(now_ns() - t0);
}

/* Moves every connection to driver d (all idle). */
static void switch_driver(driver_kind d, unsigned total)
{
    if (d == drv)
        return;
    for (unsigned i = 0; i < total; i++)
        drv_remove(conns[i].c, &conns[i].own);
    drv = d;
    for (unsigned i = 0; i < total; i++)
        drv_add(conns[i].c, &conns[i].own);
}

static void run_many_section(void)
{
    unsigned n = opt.conns, total = n + 1;
    long rss0, hwm0, rss1, hwm1;
    char b1[32], b2[32], b3[32], b4[32], b5[32], b6[32];

    printf(
        "\n(m) %u connections to one fast server process, one thread, %u calls in flight\n"
        "    per connection (one in four is x-bench-events, a burst of %d events before\n"
        "    its reply; the rest query-status, reply decoded); %.1f s warm-up, %.1f s measured\n",
        n, opt.per_conn, EVENT_BURST, opt.warmup_secs, opt.secs);

    events_args = json_object_new_object();
    if (events_args == NULL ||
        json_object_object_add(events_args, "count", json_object_new_int(EVENT_BURST)) < 0)
        die("out of memory");
    conns = calloc(total, sizeof(*conns));
    if (conns == NULL)
        die("out of memory");
    for (unsigned i = 0; i < total; i++) {
        conn_init(&conns[i], opt.per_conn);
        conns[i].events = i < n;
        conns[i].silent = i == n;
    }
    drv = DRV_LOOP;
    if (loop == NULL && qmp_loop_new(&loop) < 0)
        die("cannot create the loop");

    /* Heap: the application's own arrays exist already; measure what the
     * clients, their loop entries and their connections add. */
    read_rss(&rss0, &hwm0);
    size_t h0 = heap_in_use();
    for (unsigned i = 0; i < n; i++) {
        conn_client_new(&conns[i], opt.call_timeout_ms, 60000);
        if (qmp_client_subscribe(conns[i].c, "JOB_STATUS_CHANGE", on_bench_event, &conns[i], NULL) <
            0)
            die("cannot subscribe");
    }
    size_t h1 = heap_in_use();
    for (unsigned i = 0; i < n; i++)
        drv_add(conns[i].c, &conns[i].own);
    size_t h2 = heap_in_use();
    double connect_ns = connect_range(0, n, fast_server->sock);
    size_t h3 = heap_in_use();
    read_rss(&rss1, &hwm1);

    printf("    connected %u clients (connect_async, greeting, negotiation) in %s\n", n,
           fmt_ns(b1, sizeof(b1), connect_ns));
    printf("    heap per idle connected client: %.1f KiB (target <= 32 KiB): client object\n"
           "    and subscription %.0f B, qmp_loop entry %.0f B, connection %.0f B\n",
           (double)(h3 - h0) / n / 1024, (double)(h1 - h0) / n, (double)(h2 - h1) / n,
           (double)(h3 - h2) / n);
    printf("    RSS: %.1f MiB before the clients, %.1f MiB with %u idle connected clients\n",
           (double)rss0 / 1024, (double)rss1 / 1024, n);

    /* The silent server's connection joins now, idle until run (s). */
    conn_client_new(&conns[n], opt.call_timeout_ms, 60000);
    drv_add(conns[n].c, &conns[n].own);
    connect_range(n, total, silent_server->sock);

    /* The machine is noisy: runs without (A) and with (B) the silent
     * connection, and A again with the own epoll loop (C), take turns,
     * and the medians of each kind are compared. */
    unsigned reps = opt.many_reps;
    /* Each result holds a histogram: too big for the stack by the dozen. */
    load_result *a = calloc(3 * (size_t)reps, sizeof(*a)), *b = a + reps, *c = b + reps;
    if (a == NULL)
        die("out of memory");
    progress("(m) runs ");
    for (unsigned k = 0; k < reps; k++) {
        load_run(false, &a[k]);
        load_run(true, &b[k]);
        switch_driver(DRV_OWN, total);
        load_run(false, &c[k]);
        switch_driver(DRV_LOOP, total);
        progress(".");
    }
    progress(" done\n");

    printf("%-36s %10s %10s %9s %9s %9s %9s %9s %7s %7s %7s %7s\n", "run (query-status latency)",
           "commands/s", "per cpu-s", "p50", "p99", "p99.9", "max", "ev p99", "client", "server",
           "others", "HWM MiB");
    uint64_t failures = 0, silent_timeouts = 0;
    hist t;
    hist_reset(&t);
    double ra[MAX_REPS], rb[MAX_REPS], rc[MAX_REPS], pa[MAX_REPS], pb[MAX_REPS], pc[MAX_REPS];
    double ea[MAX_REPS], ca[MAX_REPS], cc[MAX_REPS];
    for (unsigned k = 0; k < reps; k++) {
        char label[64];
        snprintf(label, sizeof(label), "A%u: %u conns, qmp_loop", k + 1, n);
        print_load(label, &a[k]);
        snprintf(label, sizeof(label), "B%u: %u conns + 1 silent, qmp_loop", k + 1, n);
        print_load(label, &b[k]);
        snprintf(label, sizeof(label), "C%u: %u conns, own epoll loop", k + 1, n);
        print_load(label, &c[k]);
        failures += a[k].errors + a[k].timeouts_other + b[k].errors + b[k].timeouts_other +
                    c[k].errors + c[k].timeouts_other;
        silent_timeouts += b[k].timeouts_silent;
        for (size_t i = 0; i < HIST_BUCKETS; i++)
            t.bucket[i] += b[k].timeouts.bucket[i];
        if (t.count == 0 || b[k].timeouts.min < t.min)
            t.min = b[k].timeouts.min;
        if (b[k].timeouts.max > t.max)
            t.max = b[k].timeouts.max;
        t.count += b[k].timeouts.count;
        ra[k] = a[k].commands_s;
        rb[k] = b[k].commands_s;
        rc[k] = c[k].commands_s;
        pa[k] = a[k].p99;
        pb[k] = b[k].p99;
        pc[k] = c[k].p99;
        ea[k] = a[k].events_s;
        ca[k] = a[k].commands_s / a[k].client_cpu;
        cc[k] = c[k].commands_s / c[k].client_cpu;
    }
    printf("    per cpu-s: commands per second of client CPU (less sensitive to noise);\n"
           "    client, server: CPU time / wall time; others: CPU the rest of the machine used\n"
           "    meanwhile (noise); ev p99: x-bench-events calls (their events come first);\n"
           "    HWM: the client's VmHWM (peak RSS so far)\n");
    printf("    medians of commands/s and query-status p99: A %s, %s; B %s, %s;\n"
           "    C %s, %s; calls that failed on normal connections: %llu\n",
           fmt_rate(b1, sizeof(b1), median(ra, (int)reps)),
           fmt_ns(b2, sizeof(b2), median(pa, (int)reps)),
           fmt_rate(b3, sizeof(b3), median(rb, (int)reps)),
           fmt_ns(b4, sizeof(b4), median(pb, (int)reps)),
           fmt_rate(b5, sizeof(b5), median(rc, (int)reps)),
           fmt_ns(b6, sizeof(b6), median(pc, (int)reps)), (unsigned long long)failures);
    printf("    events received in A: %s (one per call); commands per client CPU second:\n"
           "    A %s, C %s\n",
           fmt_rate(b1, sizeof(b1), median(ea, (int)reps)),
           fmt_rate(b2, sizeof(b2), median(ca, (int)reps)),
           fmt_rate(b3, sizeof(b3), median(cc, (int)reps)));

    printf("\n(s) The silent connection (B runs): %llu calls timed out, configured %d ms each\n"
           "    (%u in flight, restarted on each timeout); actual time from execute_async to\n"
           "    the timeout callback: min %s, median %s, max %s\n",
           (unsigned long long)silent_timeouts, opt.call_timeout_ms, opt.per_conn,
           fmt_ns(b1, sizeof(b1), (double)t.min), fmt_ns(b2, sizeof(b2), hist_quantile(&t, 0.5)),
           fmt_ns(b3, sizeof(b3), (double)t.max));
    printf("    the other connections' query-status p99: median %s without it, %s with it\n",
           fmt_ns(b1, sizeof(b1), median(pa, (int)reps)),
           fmt_ns(b2, sizeof(b2), median(pb, (int)reps)));
    free(a);

    for (unsigned i = 0; i < total; i++) {
        drv_remove(conns[i].c, &conns[i].own);
        qmp_client_unref(conns[i].c);
        conn_fini(&conns[i]);
    }
    free(conns);
    conns = NULL;
    json_object_put(events_args);
    events_args = NULL;
}

/*
 * --only many -n C: every one of the connections makes C calls (the same
 * mix), for callgrind's instruction count per call at this scale.
 */
static void run_many_count(size_t calls)
{
    unsigned n = opt.conns;

    events_args = json_object_new_object();
    if (events_args == NULL ||
        json_object_object_add(events_args, "count", json_object_new_int(EVENT_BURST)) < 0)
        die("out of memory");
    conns = calloc(n, sizeof(*conns));
    if (conns == NULL)
        die("out of memory");
    for (unsigned i = 0; i < n; i++) {
        conn_init(&conns[i], opt.per_conn);
        conns[i].events = true;
        conn_client_new(&conns[i], IO_TIMEOUT_MS, 60000);
        if (qmp_client_subscribe(conns[i].c, "JOB_STATUS_CHANGE", on_bench_event, &conns[i], NULL) <
            0)
            die("cannot subscribe");
        drv_add(conns[i].c, &conns[i].own);
    }
    connect_range(0, n, fast_server->sock);
    stats_reset();
    st.phase = PH_MEASURE;
    for (unsigned i = 0; i < n; i++) {
        conns[i].limit = calls;
        conn_fill(&conns[i]);
    }
    if (!run_drain(IO_TIMEOUT_MS * 4))
        die("calls still in flight");
    st.phase = PH_IDLE;
    if (st.errors > 0 || st.commands != (uint64_t)n * calls)
        die("%llu of %llu calls completed (%s)", (unsigned long long)st.commands,
            (unsigned long long)n * calls, st.last_error);
    for (unsigned i = 0; i < n; i++) {
        drv_remove(conns[i].c, &conns[i].own);
        qmp_client_unref(conns[i].c);
        conn_fini(&conns[i]);
    }
    free(conns);
    conns = NULL;
    json_object_put(events_args);
}

/* ----------------------------------------------------------- real QEMUs */

static hist cmd_lat;   /* stop/cont: request to reply */
static hist event_lat; /* stop/cont: request to the STOP/RESUME event */

static void on_qemu_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    app_conn *cn = userdata;
    (void)c;
    (void)ev;
    if (!cn->got_event) {
        cn->got_event = true;
        hist_add(&event_lat, now_ns() - cn->cmd_start);
        st.stop_events++;
    }
}

static void on_stop_reply(qmp_client *c, qmp_reply *r, void *userdata)
{
    app_conn *cn = userdata;
    (void)c;
    if (qmp_reply_status(r) != 0)
        die("stop/cont failed: %s", qmp_reply_error(r)->message);
    cn->got_reply = true;
    hist_add(&cmd_lat, now_ns() - cn->cmd_start);
    st.stop_replies++;
}

/* Sends command to every QEMU at once and waits for every reply and for
 * the event it causes (taken by the subscriptions).  Returns the time
 * until the last of them. */
static double stop_cont_phase(app_conn *qc, unsigned nq, const char *command)
{
    qmp_error err = QMP_ERROR_INIT;

    st.stop_replies = st.stop_events = 0;
    int64_t t0 = now_ns();
    for (unsigned i = 0; i < nq; i++) {
        qc[i].got_event = qc[i].got_reply = false;
        qc[i].cmd_start = now_ns();
        if (qmp_client_execute_async(qc[i].c, command, NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                     on_stop_reply, &qc[i], NULL, &err) < 0)
            die("%s: %s", command, err.message);
    }
    if (!run_until(&st.stop_replies, nq, IO_TIMEOUT_MS) ||
        !run_until(&st.stop_events, nq, IO_TIMEOUT_MS))
        die("%s: %u replies and %u events of %u", command, st.stop_replies, st.stop_events, nq);
    return (double)(now_ns() - t0);
}

/* CPU time of all the QEMUs together. */
static int64_t qemus_cpu_ns(child **qch, unsigned nq)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < nq; i++) {
        int64_t v = proc_cpu_ns(qch[i]->pid, false);
        if (v > 0)
            sum += v;
    }
    return sum;
}

static void print_qemu_row(const char *label, double calls, double wall, double ccpu, double qcpu,
                           const hist *h)
{
    char b1[32], b2[32], b3[32], b4[32];
    printf("%-40s %8.0f %10s %9s %9s %9s %7.0f%% %7.0f%%\n", label, calls,
           fmt_rate(b1, sizeof(b1), calls / (wall / 1e9)),
           fmt_ns(b2, sizeof(b2), hist_quantile(h, 0.5)),
           fmt_ns(b3, sizeof(b3), hist_quantile(h, 0.99)), fmt_ns(b4, sizeof(b4), (double)h->max),
           100 * ccpu / wall, 100 * qcpu / wall);
}

static void run_qemu_section(void)
{
    unsigned nq = opt.qemus;
    char b1[32], b2[32], b3[32], b4[32];
    child *qch[MAX_QEMUS];
    const char *bin = opt.qemu;

    printf("\n(q) %u real QEMUs (%s -M none -nodefaults -display none -accel tcg),\n"
           "    one thread, %s; each QEMU in a private mkdtemp directory, killed by pid\n",
           nq, bin, driver_names[DRV_LOOP]);
    drv = DRV_LOOP;
    progress("(q) starting and connecting the QEMUs\n");

    app_conn *qc = calloc(nq, sizeof(*qc));
    if (qc == NULL)
        die("out of memory");
    st.connected = st.connect_failed = 0;
    int64_t t0 = now_ns();
    for (unsigned i = 0; i < nq; i++) {
        char fdarg[64];
        qch[i] = child_new(SIGKILL);
        snprintf(qch[i]->sock, sizeof(qch[i]->sock), "%s/qmp.sock", qch[i]->dir);
        snprintf(qch[i]->log, sizeof(qch[i]->log), "%s/qemu.log", qch[i]->dir);
        int lfd = listen_at(qch[i]->sock);
        snprintf(fdarg, sizeof(fdarg), "socket,id=mon0,fd=%d,server=on,wait=off", lfd);
        /* clang-format off */
        char *argv[] = {(char *)bin, "-M", "none", "-nodefaults", "-no-user-config",
                        "-display", "none", "-accel", "tcg", "-chardev", fdarg,
                        "-mon", "chardev=mon0,mode=control", NULL};
        /* clang-format on */
        bool ok = spawn(qch[i], argv, lfd, -1);
        int e = errno;
        close(lfd);
        if (!ok) {
            printf("    skipped: cannot run %s: %s\n", bin, strerror(e));
            for (unsigned j = 0; j < i; j++) {
                drv_remove(qc[j].c, &qc[j].own);
                qmp_client_unref(qc[j].c);
                conn_fini(&qc[j]);
            }
            cleanup_children();
            free(qc);
            return;
        }
        /* The monitor socket listens already: the connect completes at
         * once, and the greeting comes when this QEMU is up. */
        conn_init(&qc[i], QMP_CLIENT_DEFAULT_MAX_IN_FLIGHT);
        conn_client_new(&qc[i], IO_TIMEOUT_MS, 60000);
        if (qmp_client_subscribe(qc[i].c, "STOP", on_qemu_event, &qc[i], NULL) < 0 ||
            qmp_client_subscribe(qc[i].c, "RESUME", on_qemu_event, &qc[i], NULL) < 0)
            die("cannot subscribe");
        drv_add(qc[i].c, &qc[i].own);
        conn_connect(&qc[i], qch[i]->sock);
    }
    double spawned = (double)(now_ns() - t0);
    if (!run_until(&st.connected, nq, 90000) || st.connect_failed > 0)
        die("%u of %u QEMUs did not connect: %s", nq - st.connected, nq, st.last_error);
    double connected = (double)(now_ns() - t0);
    printf("    %u QEMUs started in %s; all greeted and negotiated %s after the first start\n", nq,
           fmt_ns(b1, sizeof(b1), spawned), fmt_ns(b2, sizeof(b2), connected));

    printf("%-40s %8s %10s %9s %9s %9s %8s %8s\n", "query-status on every QEMU", "calls", "calls/s",
           "p50", "p99", "max", "client", "QEMUs");
    /* Rounds: one call on every QEMU at once, all answered, again. */
    stats_reset();
    st.phase = PH_MEASURE;
    int64_t w0 = now_ns(), c0 = cpu_ns(), q0 = qemus_cpu_ns(qch, nq);
    for (unsigned r = 0; r < opt.qemu_rounds; r++) {
        for (unsigned i = 0; i < nq; i++) {
            qc[i].limit = qc[i].started + 1;
            conn_fill(&qc[i]);
        }
        if (!run_drain(IO_TIMEOUT_MS))
            die("query-status round %u did not complete", r);
    }
    char label[80];
    snprintf(label, sizeof(label), "%u rounds, 1 call per QEMU per round", opt.qemu_rounds);
    print_qemu_row(label, (double)st.commands, (double)(now_ns() - w0), (double)(cpu_ns() - c0),
                   (double)(qemus_cpu_ns(qch, nq) - q0), &st.status_lat);
    if (st.errors > 0)
        die("query-status failed: %s", st.last_error);

    /* Sustained: every QEMU gets qemu_calls calls, 8 in flight each. */
    stats_reset();
    w0 = now_ns(), c0 = cpu_ns(), q0 = qemus_cpu_ns(qch, nq);
    for (unsigned i = 0; i < nq; i++) {
        qc[i].limit = qc[i].started + opt.qemu_calls;
        conn_fill(&qc[i]);
    }
    if (!run_drain(IO_TIMEOUT_MS * 4))
        die("pipelined query-status did not complete");
    snprintf(label, sizeof(label), "%u per QEMU, 8 in flight each", opt.qemu_calls);
    print_qemu_row(label, (double)st.commands, (double)(now_ns() - w0), (double)(cpu_ns() - c0),
                   (double)(qemus_cpu_ns(qch, nq) - q0), &st.status_lat);
    if (st.errors > 0)
        die("query-status failed: %s", st.last_error);
    st.phase = PH_IDLE;

    /* stop/cont on every QEMU at once; STOP and RESUME arrive through
     * the subscriptions made before connecting. */
    double stop_wall[MAX_REPS], cont_wall[MAX_REPS];
    hist stop_ev, cont_ev, stop_cmd, cont_cmd;
    hist_reset(&stop_ev);
    hist_reset(&cont_ev);
    hist_reset(&stop_cmd);
    hist_reset(&cont_cmd);
    unsigned cycles = opt.stop_cont > MAX_REPS ? MAX_REPS : opt.stop_cont;
    for (unsigned k = 0; k < cycles; k++) {
        hist_reset(&cmd_lat);
        hist_reset(&event_lat);
        stop_wall[k] = stop_cont_phase(qc, nq, "stop");
        for (size_t b = 0; b < HIST_BUCKETS; b++) {
            stop_ev.bucket[b] += event_lat.bucket[b];
            stop_cmd.bucket[b] += cmd_lat.bucket[b];
        }
        stop_ev.count += event_lat.count;
        stop_cmd.count += cmd_lat.count;
        stop_ev.max = event_lat.max > stop_ev.max ? event_lat.max : stop_ev.max;
        stop_cmd.max = cmd_lat.max > stop_cmd.max ? cmd_lat.max : stop_cmd.max;
        hist_reset(&cmd_lat);
        hist_reset(&event_lat);
        cont_wall[k] = stop_cont_phase(qc, nq, "cont");
        for (size_t b = 0; b < HIST_BUCKETS; b++) {
            cont_ev.bucket[b] += event_lat.bucket[b];
            cont_cmd.bucket[b] += cmd_lat.bucket[b];
        }
        cont_ev.count += event_lat.count;
        cont_cmd.count += cmd_lat.count;
        cont_ev.max = event_lat.max > cont_ev.max ? event_lat.max : cont_ev.max;
        cont_cmd.max = cmd_lat.max > cont_cmd.max ? cmd_lat.max : cont_cmd.max;
    }
    printf("%u stop/cont cycles on all %u at once (median of the cycles' wall time until\n"
           "the last reply and event; per-QEMU request-to-event and request-to-reply p50/max):\n",
           cycles, nq);
    printf("    stop: all %u STOP events in %s; event p50 %s, max %s; reply p50 %s\n", nq,
           fmt_ns(b1, sizeof(b1), median(stop_wall, (int)cycles)),
           fmt_ns(b2, sizeof(b2), hist_quantile(&stop_ev, 0.5)),
           fmt_ns(b3, sizeof(b3), (double)stop_ev.max),
           fmt_ns(b4, sizeof(b4), hist_quantile(&stop_cmd, 0.5)));
    printf("    cont: all %u RESUME events in %s; event p50 %s, max %s; reply p50 %s\n", nq,
           fmt_ns(b1, sizeof(b1), median(cont_wall, (int)cycles)),
           fmt_ns(b2, sizeof(b2), hist_quantile(&cont_ev, 0.5)),
           fmt_ns(b3, sizeof(b3), (double)cont_ev.max),
           fmt_ns(b4, sizeof(b4), hist_quantile(&cont_cmd, 0.5)));
    printf("    client: CPU time / wall time; QEMUs: their CPU time together / wall time "
           "(2 CPUs = 200%%)\n");

    for (unsigned i = 0; i < nq; i++) {
        drv_remove(qc[i].c, &qc[i].own);
        qmp_client_unref(qc[i].c);
        conn_fini(&qc[i]);
    }
    free(qc);
    for (unsigned i = nq; i-- > 0;)
        child_stop(qch[i]);
    n_children = n_children - (int)nq;
}

/* ------------------------------------------------------------------ main */

static void progress(const char *what)
{
    if (opt.quiet)
        return;
    fflush(stdout);
    fputs(what, stderr);
    fflush(stderr);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: scale [OPTIONS]\n"
            "  --only NAME         run one measurement (see --list) with -n N operations\n"
            "  -n N                commands per pipelined repetition (default 100000), or\n"
            "                      with --only many: calls per connection\n"
            "  --reps R            repetitions of the pipelined rows (default %d, max %d)\n"
            "  --conns N           connections of the many-connection runs (default %u)\n"
            "  --per-conn K        calls in flight per connection (default %u)\n"
            "  --secs S            measured seconds per many-connection run (default %.0f)\n"
            "  --many-reps R       rounds of the runs A, B, C (default %u)\n"
            "  --warmup-secs S     warm-up before each (default %.1f)\n"
            "  --call-timeout MS   per-call timeout of those runs (default %d)\n"
            "  --qemus N           real QEMUs (default %u, max %d; 0 skips them)\n"
            "  --qemu BIN          QEMU binary (default %s)\n"
            "  --no-qemu           skip the real QEMUs\n"
            "  --qemu-rounds N     query-status rounds over all QEMUs (default %u)\n"
            "  --qemu-calls N      pipelined calls per QEMU (default %u)\n"
            "  --stop-cont N       stop/cont cycles (default %u)\n"
            "  --fastserver PATH   fake server (default: the one built beside us)\n"
            "  --schema FILE       schema reply for the fake server (default %s)\n"
            "  --no-pin            do not pin client and servers to CPUs 0 and 1\n"

            "  --quiet             no progress on stderr\n"
            "  --list              list the measurements --only takes\n",
            opt.reps, MAX_REPS, opt.conns, opt.per_conn, opt.secs, opt.many_reps, opt.warmup_secs,
            opt.call_timeout_ms, opt.qemus, MAX_QEMUS, opt.qemu, opt.qemu_rounds, opt.qemu_calls,
            opt.stop_cont, BENCH_SCHEMA_PATH);
}

static unsigned long parse_num(const char *s, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v > max)
        die("bad number: %s", s);
    return v;
}

static double parse_secs(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end != '\0' || end == s || v < 0 || v > 3600)
        die("bad number of seconds: %s", s);
    return v;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    rlim_t nofile_before;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--list") == 0) {
            for (size_t k = 0; k < N_PIPE_SPECS; k++)
                printf("%-12s %s\n", pipe_specs[k].name, pipe_specs[k].label);
            printf("%-12s %s\n", "many", "--conns connections, -n calls each (mixed, events)");
            printf("%-12s %s\n", "many-own", "the same, own epoll loop instead of qmp_loop");
            return 0;
        } else if (strcmp(a, "--only") == 0 && has) {
            opt.only = argv[++i];
        } else if (strcmp(a, "-n") == 0 && has) {
            opt.n = parse_num(argv[++i], 1000000000);
        } else if (strcmp(a, "--reps") == 0 && has) {
            opt.reps = (int)parse_num(argv[++i], MAX_REPS);
        } else if (strcmp(a, "--conns") == 0 && has) {
            opt.conns = (unsigned)parse_num(argv[++i], 1000000);
        } else if (strcmp(a, "--per-conn") == 0 && has) {
            opt.per_conn = (unsigned)parse_num(argv[++i], MAX_WINDOW);
        } else if (strcmp(a, "--secs") == 0 && has) {
            opt.secs = parse_secs(argv[++i]);
        } else if (strcmp(a, "--many-reps") == 0 && has) {
            opt.many_reps = (unsigned)parse_num(argv[++i], MAX_REPS);
        } else if (strcmp(a, "--warmup-secs") == 0 && has) {
            opt.warmup_secs = parse_secs(argv[++i]);
        } else if (strcmp(a, "--call-timeout") == 0 && has) {
            opt.call_timeout_ms = (int)parse_num(argv[++i], 600000);
        } else if (strcmp(a, "--qemus") == 0 && has) {
            opt.qemus = (unsigned)parse_num(argv[++i], MAX_QEMUS);
        } else if (strcmp(a, "--qemu") == 0 && has) {
            opt.qemu = argv[++i];
        } else if (strcmp(a, "--no-qemu") == 0) {
            opt.qemu = NULL;
        } else if (strcmp(a, "--qemu-rounds") == 0 && has) {
            opt.qemu_rounds = (unsigned)parse_num(argv[++i], 1000000);
        } else if (strcmp(a, "--qemu-calls") == 0 && has) {
            opt.qemu_calls = (unsigned)parse_num(argv[++i], 1000000);
        } else if (strcmp(a, "--stop-cont") == 0 && has) {
            opt.stop_cont = (unsigned)parse_num(argv[++i], MAX_REPS);
        } else if (strcmp(a, "--fastserver") == 0 && has) {
            opt.fastserver = argv[++i];
        } else if (strcmp(a, "--schema") == 0 && has) {
            opt.schema = argv[++i];
        } else if (strcmp(a, "--no-pin") == 0) {
            opt.pin = false;

        } else if (strcmp(a, "--quiet") == 0) {
            opt.quiet = true;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (opt.reps < 1 || opt.per_conn < 1 || opt.many_reps < 1)
        die("--reps, --per-conn and --many-reps must be at least 1");

    /* Children are killed by pid on the way out, whichever way that is;
     * the handler has its own stack, so a stack overflow runs it too. */
    static char alt_stack[64 * 1024];
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof(alt_stack)};
    if (sigaltstack(&ss, NULL) < 0)
        die("sigaltstack: %s", strerror(errno));
    int fatal[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        struct sigaction sa = {.sa_handler = on_fatal_signal, .sa_flags = SA_ONSTACK};
        sigemptyset(&sa.sa_mask);
        sigaction(fatal[i], &sa, NULL);
    }
    signal(SIGPIPE, SIG_IGN);
    atexit(cleanup_children);

    /* A descriptor per connection: raise the soft limit to the hard one. */
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit: %s", strerror(errno));
    nofile_before = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die("setrlimit: %s", strerror(errno));
    }
    if (rl.rlim_cur < (rlim_t)opt.conns + 64)
        die("RLIMIT_NOFILE %llu is too low for %u connections", (unsigned long long)rl.rlim_cur,
            opt.conns);

    /* Client on CPU 0, servers on CPU 1, when both are ours to use. */
    cpu_set_t allowed;
    if (opt.pin && sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_ISSET(0, &allowed) &&
        CPU_ISSET(1, &allowed)) {
        client_cpu = 0;
        server_cpu = 1;
        pin_to(client_cpu);
    }

    fast_server = start_fastserver(false);

    if (opt.only != NULL) {
        if (strcmp(opt.only, "many") == 0 || strcmp(opt.only, "many-own") == 0) {
            drv = strcmp(opt.only, "many") == 0 ? DRV_LOOP : DRV_OWN;
            run_many_count(opt.n ? opt.n : 8);
        } else {
            size_t k = 0;
            while (k < N_PIPE_SPECS && strcmp(pipe_specs[k].name, opt.only) != 0)
                k++;
            if (k == N_PIPE_SPECS)
                die("unknown measurement %s (see --list)", opt.only);
            pipe_measure(&pipe_specs[k], opt.n ? opt.n : 20000, 0);
        }
        qmp_loop_free(loop);
        cleanup_children();
        return 0;
    }

    char model[128] = "unknown CPU", line[256];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
            snprintf(model, sizeof(model), "%s", colon + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    printf("libqmp %s scale benchmarks (%s build); %ld CPUs, %s\n", qmp_version_string(),
           BENCH_BUILDTYPE, sysconf(_SC_NPROCESSORS_ONLN), model);
    printf("RLIMIT_NOFILE: soft %llu raised to %llu (hard %llu)\n",
           (unsigned long long)nofile_before, (unsigned long long)rl.rlim_cur,
           (unsigned long long)rl.rlim_max);
    if (client_cpu >= 0)
        printf("client pinned to CPU %d, fake servers to CPU %d\n", client_cpu, server_cpu);
    else
        printf("not pinned\n");
    fflush(stdout);

    run_pipe_section();
    fflush(stdout);
    if (opt.conns > 0) {
        silent_server = start_fastserver(true);
        run_many_section();
        fflush(stdout);
    }
    if (opt.qemu != NULL && opt.qemus > 0)
        run_qemu_section();
    qmp_loop_free(loop);
    cleanup_children();
    return 0;
}
