/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qmp command-line tool and the example programs, run as child
 * processes against a real qemu-system-x86_64: their output, their
 * argument forms and every exit status of qmp(1) that the command line, the
 * environment or the peer can cause.
 *
 * The programs' paths come as arguments NAME=PATH (qmp=..., events=...,
 * one per program built); the tests of a program that was not built do
 * not run.  Any other argument names the one test to run.
 *
 * A child runs with stdin on /dev/null and stdout and stderr on pipes.
 * Every wait polls those pipes with a deadline, after which the child is
 * killed.  Its exit is seen through a pipe too: a thread blocked in
 * waitpid() for that one pid writes to it, so no signal is involved (the
 * QEMU harness owns SIGCHLD, and valgrind cannot poll a pidfd).
 *
 * Some outcomes cannot be had from a well-behaved QEMU at a chosen moment:
 * a bad greeting, a greeting without "oob", a malformed or oversized
 * message, a reply that never comes.  For those the child talks to QEMU
 * through a relay: it gets one end of a socketpair as descriptor 3
 * (address fd:3), and the test forwards the other end to QEMU's monitor,
 * altering the greeting or, once the child has sent its command, dropping
 * what QEMU sends and injecting bytes of its own.  The relay also shows
 * when a child has finished negotiating, for programs that print nothing
 * until an event arrives.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"
#include "qemu-harness.h"

extern char **environ;

/* Deadline of one run of a program, and of a wait for its output. */
#define RUN_MS 60000
#define WAIT_MS QEMU_TEST_EVENT_TIMEOUT_MS

/* The descriptor on which a child gets its socket (address "fd:3"). */
#define CHILD_SOCK_FD 3
#define CHILD_SOCK_ADDRESS "fd:3"

#define exec_ok(c, command, args) qemu_exec((c), (command), (args), &harness_cur_failed)

#define CHECK_STARTS(str, prefix)                                                                  \
    do {                                                                                           \
        const char *s_ = (str), *p_ = (prefix);                                                    \
        if (s_ == NULL || strncmp(s_, p_, strlen(p_)) != 0)                                        \
            HARNESS_FAIL_("\"%s\" does not begin with \"%s\"", s_ ? s_ : "(null)", p_);            \
    } while (0)

/* ---------------------------------------------------------------- programs */

enum { PROG_QMP, PROG_BLOCKING_CLIENT, PROG_EVENTS, PROG_TEMPLATE, PROG_SANSIO, N_PROGS };

static const char *const prog_name[N_PROGS] = {"qmp", "blocking-client", "events", "template",
                                               "sansio-session"};
static const char *prog_path[N_PROGS];

/* ----------------------------------------------------------------- buffers */

typedef struct buf {
    char *data; /* NUL-terminated when not NULL */
    size_t len, cap;
} buf;

static void buf_add(buf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        char *p;

        while (cap < b->len + len + 1)
            cap *= 2;
        p = realloc(b->data, cap);
        if (p == NULL) {
            printf("# out of memory\n");
            abort();
        }
        b->data = p;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static const char *buf_str(const buf *b)
{
    return b->data ? b->data : "";
}

static void buf_free(buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------- lines */

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Number of lines in s (a last line without newline counts). */
static int n_lines(const char *s)
{
    int n = 0;

    for (; *s; s++) {
        if (*s == '\n' || s[1] == '\0')
            n++;
    }
    return n;
}

/* Copies line i of s (from 0; negative counts from the end) without its
 * newline into out and returns out; "" when there is no such line. */
static const char *line_at(const char *s, int i, char *out, size_t size)
{
    int n = n_lines(s);
    size_t len;

    out[0] = '\0';
    if (i < 0)
        i += n;
    if (i < 0 || i >= n)
        return out;
    for (; i > 0; i--)
        s = strchr(s, '\n') + 1;
    len = strcspn(s, "\n");
    snprintf(out, size, "%.*s", (int)len, s);
    return out;
}

/* Parses text as one JSON value: a new reference, or NULL with a
 * diagnostic when it is not JSON (or is null). */
static json_object *parse_json(const char *text)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *v = NULL;
    int rc = qmp_json_parse(text, strlen(text), 0, &v, &err);

    if (rc < 0)
        printf("# not JSON (%s): %s\n", err.message, text);
    return rc < 0 ? NULL : v;
}

/* Parses line i of s as JSON; see parse_json(). */
static json_object *line_json(const char *s, int i)
{
    char line[16384];

    return parse_json(line_at(s, i, line, sizeof(line)));
}

/* json_object_equal() that prints both sides when they differ. */
static int json_same(json_object *a, json_object *b)
{
    if (json_object_equal(a, b))
        return 1;
    printf("# %s\n# differs from %s\n", json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN),
           json_object_to_json_string_ext(b, JSON_C_TO_STRING_PLAIN));
    return 0;
}

/* ------------------------------------------------------------------- relay */

typedef struct relay {
    int child_sock;        /* our end of the child's socketpair; -1 when closed */
    int qemu_sock;         /* our connection to QEMU's monitor; -1 when closed */
    buf to_child, to_qemu; /* bytes to write, from the offsets on */
    size_t to_child_off, to_qemu_off;
    buf from_qemu;         /* everything QEMU sent */
    size_t from_qemu_done; /* how much of it was forwarded or dropped */
    size_t child_msgs;     /* lines the child sent */

    /* Set before the child starts. */
    const char *greeting_find; /* replaced in QEMU's greeting by greeting_replace */
    const char *greeting_replace;
    const char *qemu_address; /* QEMU's unix monitor, "unix:PATH" */
    size_t cut_after; /* once the child sent this many lines, drop QEMU's bytes (0: never) */
    buf inject;       /* ... and send these to the child instead */

    /* What happened. */
    int greeting_seen, greeting_replaced, cut;
} relay;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void relay_init(relay *r)
{
    memset(r, 0, sizeof(*r));
    r->child_sock = -1;
    r->qemu_sock = -1;
}

static void relay_free(relay *r)
{
    close_fd(&r->child_sock);
    close_fd(&r->qemu_sock);
    buf_free(&r->to_child);
    buf_free(&r->to_qemu);
    buf_free(&r->from_qemu);
    buf_free(&r->inject);
}

/* Connects the relay to the unix monitor at address ("unix:PATH") and
 * returns the child's end of a new socketpair (the caller closes it once
 * the child has it), or -1 with a diagnostic. */
static int relay_connect(relay *r, const char *address)
{
    struct sockaddr_un sa;
    const char *path = starts_with(address, "unix:") ? address + 5 : address;
    int sv[2];

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    r->qemu_sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->qemu_sock < 0 || connect(r->qemu_sock, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        fcntl(r->qemu_sock, F_SETFL, O_NONBLOCK) < 0) {
        printf("# relay: connecting to %s: %s\n", path, strerror(errno));
        close_fd(&r->qemu_sock);
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        printf("# relay: socketpair: %s\n", strerror(errno));
        close_fd(&r->qemu_sock);
        return -1;
    }
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) < 0) {
        printf("# relay: fcntl: %s\n", strerror(errno));
        close_fd(&r->qemu_sock);
        close_fd(&sv[0]);
        close_fd(&sv[1]);
        return -1;
    }
    r->child_sock = sv[0];
    return sv[1];
}

/* Forwards (or drops) what QEMU sent and was not handled yet. */
static void relay_from_qemu(relay *r)
{
    const buf *in = &r->from_qemu;

    if (in->len == r->from_qemu_done)
        return;
    if (r->greeting_find != NULL && !r->greeting_seen) {
        const char *nl = memchr(in->data, '\n', in->len);
        size_t len, flen = strlen(r->greeting_find);
        const char *hit;

        if (nl == NULL)
            return;
        len = (size_t)(nl + 1 - in->data);
        hit = memmem(in->data, len, r->greeting_find, flen);
        if (hit != NULL) {
            buf_add(&r->to_child, in->data, (size_t)(hit - in->data));
            buf_add(&r->to_child, r->greeting_replace, strlen(r->greeting_replace));
            buf_add(&r->to_child, hit + flen, len - (size_t)(hit - in->data) - flen);
            r->greeting_replaced = 1;
        } else {
            printf("# relay: \"%s\" is not in the greeting\n", r->greeting_find);
            buf_add(&r->to_child, in->data, len);
        }
        r->greeting_seen = 1;
        r->from_qemu_done = len;
    }
    if (!r->cut)
        buf_add(&r->to_child, in->data + r->from_qemu_done, in->len - r->from_qemu_done);
    r->from_qemu_done = in->len;
}

/* Forwards what the child sent, counting its lines. */
static void relay_from_child(relay *r, const char *data, size_t len)
{
    size_t i;

    buf_add(&r->to_qemu, data, len);
    for (i = 0; i < len; i++) {
        if (data[i] == '\n' && ++r->child_msgs == r->cut_after) {
            /* QEMU answers only after reading this line, so all it sent
             * so far was forwarded, and everything later is dropped. */
            r->cut = 1;
            buf_add(&r->to_child, r->inject.data, r->inject.len);
        }
    }
}

/* Writes what it can of b to *fd; closes *fd when the peer is gone. */
static void relay_write(int *fd, buf *b, size_t *off)
{
    ssize_t n;

    if (*fd < 0 || *off == b->len)
        return;
    n = send(*fd, b->data + *off, b->len - *off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
        close_fd(fd);
        *off = b->len = 0;
        return;
    }
    if (n > 0)
        *off += (size_t)n;
    if (*off == b->len)
        *off = b->len = 0;
}

/* Reads what is there from *fd into b; closes *fd at end of file or error. */
static void read_some(int *fd, buf *b)
{
    char chunk[65536];
    ssize_t n = read(*fd, chunk, sizeof(chunk));

    if (n > 0)
        buf_add(b, chunk, (size_t)n);
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        close_fd(fd);
}

/* ------------------------------------------------------------------ children */

typedef struct child {
    pid_t pid;            /* 0 when it could not be started */
    int out_fd, err_fd;   /* read ends of its stdout and stderr; -1 at end of file */
    int exit_rd, exit_wr; /* the reaper writes a byte to exit_wr once the child exited */
    pthread_t reaper;
    int reaper_running;
    int reaped_status;  /* written by the reaper, read after joining it */
    int exited, status; /* status as from waitpid(), valid once exited */
    int finished;       /* child_finish() ran */
    long long start_ms, end_ms;
    buf out, err;
    char cmdline[2048];
    relay relay;
} child;

/* Every child of the current test, killed and freed after it. */
#define MAX_CHILDREN 64
static child *children[MAX_CHILDREN];
static int n_children;

static void *reaper_main(void *arg)
{
    child *ch = arg;
    int status = 0;
    pid_t r;

    do
        r = waitpid(ch->pid, &status, 0);
    while (r < 0 && errno == EINTR);
    ch->reaped_status = r == ch->pid ? status : 0x7f00; /* "exit 127" if waitpid failed */
    if (write(ch->exit_wr, "x", 1) < 0) {
        /* The pipe cannot be full or closed here. */
    }
    return NULL;
}

/* One round of I/O: reads the pipes, notices the exit, moves relay data.
 * Returns 0, -ETIMEDOUT, or -ESRCH when nothing is left to wait for. */
static int child_pump(child *ch, int timeout_ms)
{
    relay *r = &ch->relay;
    struct pollfd p[5];
    int n = 0, i_out = -1, i_err = -1, i_exit = -1, i_cs = -1, i_qs = -1, rc;

    if (ch->out_fd >= 0) {
        i_out = n;
        p[n++] = (struct pollfd){.fd = ch->out_fd, .events = POLLIN};
    }
    if (ch->err_fd >= 0) {
        i_err = n;
        p[n++] = (struct pollfd){.fd = ch->err_fd, .events = POLLIN};
    }
    if (!ch->exited && ch->exit_rd >= 0) {
        i_exit = n;
        p[n++] = (struct pollfd){.fd = ch->exit_rd, .events = POLLIN};
    }
    if (r->child_sock >= 0) {
        i_cs = n;
        p[n++] = (struct pollfd){.fd = r->child_sock,
                                 .events = POLLIN | (r->to_child.len > 0 ? POLLOUT : 0)};
    }
    if (r->qemu_sock >= 0) {
        i_qs = n;
        p[n++] = (struct pollfd){.fd = r->qemu_sock,
                                 .events = POLLIN | (r->to_qemu.len > 0 ? POLLOUT : 0)};
    }
    if (n == 0)
        return -ESRCH;
    rc = poll(p, (nfds_t)n, timeout_ms);
    if (rc < 0)
        return errno == EINTR ? 0 : -errno;
    if (rc == 0)
        return -ETIMEDOUT;

    if (i_out >= 0 && p[i_out].revents)
        read_some(&ch->out_fd, &ch->out);
    if (i_err >= 0 && p[i_err].revents)
        read_some(&ch->err_fd, &ch->err);
    if (i_exit >= 0 && p[i_exit].revents) {
        char byte;

        if (read(ch->exit_rd, &byte, 1) == 1) {
            pthread_join(ch->reaper, NULL);
            ch->reaper_running = 0;
            ch->exited = 1;
            ch->status = ch->reaped_status;
            ch->end_ms = qemu_now_ms();
        }
    }
    if (i_qs >= 0 && r->qemu_sock >= 0 && (p[i_qs].revents & POLLOUT))
        relay_write(&r->qemu_sock, &r->to_qemu, &r->to_qemu_off);
    if (i_qs >= 0 && r->qemu_sock >= 0 && (p[i_qs].revents & (POLLIN | POLLHUP | POLLERR))) {
        read_some(&r->qemu_sock, &r->from_qemu);
        relay_from_qemu(r);
    }
    if (i_cs >= 0 && r->child_sock >= 0 && (p[i_cs].revents & (POLLIN | POLLHUP | POLLERR))) {
        buf in = {0};

        read_some(&r->child_sock, &in);
        relay_from_child(r, buf_str(&in), in.len);
        buf_free(&in);
        if (r->child_sock < 0)
            close_fd(&r->qemu_sock); /* the child left: so does its connection */
    }
    if (i_cs >= 0 && r->child_sock >= 0 && (p[i_cs].revents & POLLOUT))
        relay_write(&r->child_sock, &r->to_child, &r->to_child_off);
    /* Pass QEMU's close on once the child has everything QEMU sent. */
    if (r->qemu_sock < 0 && r->to_child.len == 0)
        close_fd(&r->child_sock);
    return 0;
}

typedef int (*cond_fn)(const child *ch, const void *arg);

static int cond_done(const child *ch, const void *arg)
{
    (void)arg;
    return ch->exited && ch->out_fd < 0 && ch->err_fd < 0;
}

static int cond_stdout(const child *ch, const void *needle)
{
    return strstr(buf_str(&ch->out), needle) != NULL;
}

static int cond_stderr(const child *ch, const void *needle)
{
    return strstr(buf_str(&ch->err), needle) != NULL;
}

static int cond_from_qemu(const child *ch, const void *needle)
{
    return strstr(buf_str(&ch->relay.from_qemu), needle) != NULL;
}

/* The child's command went to QEMU, and QEMU's bytes are dropped from now on. */
static int cond_cut(const child *ch, const void *arg)
{
    (void)arg;
    return ch->relay.cut && ch->relay.to_qemu.len == 0;
}

/* Pumps until cond holds.  Returns 0, -ETIMEDOUT, or -ESRCH when it can no
 * longer come true (the child is gone and every descriptor closed). */
static int wait_for(child *ch, cond_fn cond, const void *arg, int timeout_ms)
{
    long long deadline = qemu_now_ms() + timeout_ms;

    for (;;) {
        long long left;
        int rc;

        if (cond(ch, arg))
            return 0;
        left = deadline - qemu_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        rc = child_pump(ch, (int)left);
        if (rc == -ESRCH || (rc < 0 && rc != -ETIMEDOUT))
            return cond(ch, arg) ? 0 : rc;
    }
}

/* Prints up to 40 lines of text, each after prefix. */
static void print_output(const char *prefix, const char *text)
{
    int i, n = n_lines(text);
    char line[512];

    for (i = 0; i < n && i < 40; i++)
        printf("# %s%s\n", prefix, line_at(text, i, line, sizeof(line)));
    if (n > 40)
        printf("# %s... (%d lines)\n", prefix, n);
}

static void print_run(const child *ch)
{
    printf("# $ %s\n", ch->cmdline);
    if (!ch->exited)
        printf("#   (did not exit)\n");
    else if (WIFEXITED(ch->status))
        printf("#   exit status %d after %lld ms\n", WEXITSTATUS(ch->status),
               ch->end_ms - ch->start_ms);
    else if (WIFSIGNALED(ch->status))
        printf("#   killed by signal %d after %lld ms\n", WTERMSIG(ch->status),
               ch->end_ms - ch->start_ms);
    print_output("  stdout| ", buf_str(&ch->out));
    print_output("  stderr| ", buf_str(&ch->err));
}

/* Waits for the child to exit and close its output; kills it (and fails
 * the test) when it takes longer than RUN_MS. */
static void child_finish(child *ch)
{
    if (ch->finished)
        return;
    ch->finished = 1;
    if (ch->pid <= 0)
        return;
    if (wait_for(ch, cond_done, NULL, RUN_MS) < 0 && !ch->exited) {
        harness_cur_failed = 1;
        printf("# still running after %d ms, killed: %s\n", RUN_MS, ch->cmdline);
        kill(ch->pid, SIGKILL);
        wait_for(ch, cond_done, NULL, 10000);
    }
    print_run(ch);
}

/* Kills and frees every child of the test. */
static void children_cleanup(void)
{
    int i;

    for (i = 0; i < n_children; i++) {
        child *ch = children[i];

        if (ch->pid > 0 && !ch->exited) {
            kill(ch->pid, SIGKILL);
            wait_for(ch, cond_done, NULL, 10000);
        }
        if (ch->reaper_running)
            printf("# pid %d was not reaped\n", (int)ch->pid);
        else {
            close_fd(&ch->exit_rd);
            close_fd(&ch->exit_wr);
        }
        close_fd(&ch->out_fd);
        close_fd(&ch->err_fd);
        relay_free(&ch->relay);
        buf_free(&ch->out);
        buf_free(&ch->err);
        if (!ch->reaper_running)
            free(ch);
    }
    n_children = 0;
}

typedef struct run_opts {
    const char *qmp_socket;  /* QMP_SOCKET of the child; NULL: not set */
    int sock_fd;             /* >= 0: given to the child as CHILD_SOCK_FD */
    const char *stdout_file; /* stdout to this file (e.g. /dev/full) instead of the pipe */
    relay *relay;            /* set up (interference included): the child gets its socket */
} run_opts;

/* The environment without QMP_SOCKET, plus QMP_SOCKET=value when given.
 * Free the returned vector (not its strings) and *ret_extra. */
static char **make_env(const char *qmp_socket, char **ret_extra)
{
    size_t n = 0, i, j = 0;
    char **env;

    while (environ[n] != NULL)
        n++;
    env = calloc(n + 2, sizeof(*env));
    *ret_extra = NULL;
    if (env == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (!starts_with(environ[i], "QMP_SOCKET="))
            env[j++] = environ[i];
    }
    if (qmp_socket != NULL && asprintf(ret_extra, "QMP_SOCKET=%s", qmp_socket) >= 0)
        env[j++] = *ret_extra;
    env[j] = NULL;
    return env;
}

/* Starts program prog with arguments args (NULL-terminated).  Always
 * returns a child (registered for cleanup); one that could not start has
 * pid 0, which fails every check of its exit status. */
static child *child_start(const run_opts *o, int prog, const char *const *args)
{
    static const run_opts none = {.sock_fd = -1};
    child *ch = calloc(1, sizeof(*ch));
    const char *argv[64];
    int out[2] = {-1, -1}, err[2] = {-1, -1}, sock = -1, child_end = -1, argc, rc;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t mask;
    char **env = NULL, *env_extra = NULL;
    size_t used;

    if (ch == NULL || n_children == MAX_CHILDREN) {
        printf("# too many children\n");
        abort();
    }
    children[n_children++] = ch;
    if (o == NULL)
        o = &none;
    ch->out_fd = ch->err_fd = ch->exit_rd = ch->exit_wr = -1;
    relay_init(&ch->relay);

    argv[0] = prog_path[prog];
    for (argc = 1; args[argc - 1] != NULL && argc < 63; argc++)
        argv[argc] = args[argc - 1];
    argv[argc] = NULL;
    used = (size_t)snprintf(ch->cmdline, sizeof(ch->cmdline), "%s%s%s%s%s",
                            o->qmp_socket ? "QMP_SOCKET=" : "", o->qmp_socket ? o->qmp_socket : "",
                            o->qmp_socket ? " " : "", prog_name[prog],
                            o->relay ? " (through the relay)" : "");
    for (int i = 1; i < argc && used < sizeof(ch->cmdline); i++)
        used += (size_t)snprintf(ch->cmdline + used, sizeof(ch->cmdline) - used,
                                 strpbrk(argv[i], " '\"{") ? " '%s'" : " %s", argv[i]);
    if (o->stdout_file != NULL && used < sizeof(ch->cmdline))
        snprintf(ch->cmdline + used, sizeof(ch->cmdline) - used, " >%s", o->stdout_file);

    if (o->relay != NULL) {
        /* The child's relay is the one the test configured. */
        ch->relay = *o->relay;
        relay_init(o->relay);
        child_end = relay_connect(&ch->relay, ch->relay.qemu_address);
        if (child_end < 0)
            harness_cur_failed = 1;
    }
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        printf("# pipe: %s\n", strerror(errno));
        goto out;
    }
    {
        int ep[2];

        if (pipe2(ep, O_CLOEXEC) < 0) {
            printf("# pipe: %s\n", strerror(errno));
            goto out;
        }
        ch->exit_rd = ep[0];
        ch->exit_wr = ep[1];
    }
    /* A descriptor that is already 3 would keep its close-on-exec flag
     * through dup2(), so pass a copy from higher up. */
    if (o->sock_fd >= 0 || child_end >= 0) {
        sock = fcntl(child_end >= 0 ? child_end : o->sock_fd, F_DUPFD_CLOEXEC, 10);
        if (sock < 0) {
            printf("# dup: %s\n", strerror(errno));
            goto out;
        }
    }

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (o->stdout_file != NULL)
        posix_spawn_file_actions_addopen(&fa, 1, o->stdout_file, O_WRONLY, 0);
    else
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    if (sock >= 0)
        posix_spawn_file_actions_adddup2(&fa, sock, CHILD_SOCK_FD);
    /* The harness blocks SIGCHLD in the test; the child starts clean. */
    posix_spawnattr_init(&attr);
    sigemptyset(&mask);
    posix_spawnattr_setsigmask(&attr, &mask);
    sigaddset(&mask, SIGPIPE);
    sigaddset(&mask, SIGCHLD);
    posix_spawnattr_setsigdefault(&attr, &mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    env = make_env(o->qmp_socket, &env_extra);
    ch->start_ms = qemu_now_ms();
    rc =
        env == NULL ? ENOMEM : posix_spawn(&ch->pid, argv[0], &fa, &attr, (char *const *)argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        printf("# starting %s: %s\n", argv[0], strerror(rc));
        ch->pid = 0;
        goto out;
    }
    rc = pthread_create(&ch->reaper, NULL, reaper_main, ch);
    if (rc != 0) {
        /* Without a reaper the exit goes unnoticed: end it now. */
        printf("# pthread_create: %s\n", strerror(rc));
        kill(ch->pid, SIGKILL);
        waitpid(ch->pid, &ch->status, 0);
        ch->exited = 1;
        goto out;
    }
    ch->reaper_running = 1;
    ch->out_fd = out[0];
    ch->err_fd = err[0];
    out[0] = err[0] = -1;
    if (o->stdout_file != NULL)
        close_fd(&ch->out_fd);
out:
    close_fd(&out[0]);
    close_fd(&out[1]);
    close_fd(&err[0]);
    close_fd(&err[1]);
    close_fd(&sock);
    close_fd(&child_end);
    free(env);
    free(env_extra);
    return ch;
}

#define MAX_ARGS 32

/* Collects the NULL-terminated variadic arguments into args. */
static void collect_args(const char **args, va_list ap)
{
    int n = 0;
    const char *a;

    while ((a = va_arg(ap, const char *)) != NULL && n < MAX_ARGS)
        args[n++] = a;
    args[n] = NULL;
}

/* Starts prog with the arguments that follow (up to a NULL). */
static child *start(const run_opts *o, int prog, ...) __attribute__((sentinel));

static child *start(const run_opts *o, int prog, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;

    va_start(ap, prog);
    collect_args(args, ap);
    va_end(ap);
    return child_start(o, prog, args);
}

/* Runs prog with the arguments that follow (up to a NULL) to its end. */
static child *run(const run_opts *o, int prog, ...) __attribute__((sentinel));

static child *run(const run_opts *o, int prog, ...)
{
    const char *args[MAX_ARGS + 1];
    va_list ap;
    child *ch;

    va_start(ap, prog);
    collect_args(args, ap);
    va_end(ap);
    ch = child_start(o, prog, args);
    child_finish(ch);
    return ch;
}

/* Waits for output, failing the test with a diagnostic when it does not come. */
#define WAIT_FOR(ch, cond, arg) wait_or_fail(__LINE__, (ch), (cond), #cond, (arg))

static int wait_or_fail(int line, child *ch, cond_fn cond, const char *what, const char *arg)
{
    int rc = wait_for(ch, cond, arg, WAIT_MS);

    if (rc == 0)
        return 1;
    harness_cur_failed = 1;
    printf("# %s:%d: %s(\"%s\") did not come true: %s\n", __FILE__, line, what, arg ? arg : "",
           strerror(-rc));
    print_run(ch);
    return 0;
}

/* Checks that the child exited with status code. */
#define CHECK_EXIT(ch, code) check_exit(__LINE__, (ch), (code))

static void check_exit(int line, child *ch, int code)
{
    child_finish(ch);
    if (ch->exited && WIFEXITED(ch->status) && WEXITSTATUS(ch->status) == code)
        return;
    harness_cur_failed = 1;
    printf("# %s:%d: expected exit status %d from: %s\n", __FILE__, line, code, ch->cmdline);
}

/* Checks that stderr is one line beginning with prefix. */
#define CHECK_ERROR_LINE(ch, prefix)                                                               \
    do {                                                                                           \
        CHECK_EQ_INT(n_lines(buf_str(&(ch)->err)), 1);                                             \
        CHECK_STARTS(buf_str(&(ch)->err), (prefix));                                               \
    } while (0)

/* ------------------------------------------------------------ QEMU set-ups */

/* Primary monitor for the program under test, one more for the test's
 * own client (a monitor serves one client at a time). */
static const qemu_opts two_monitors = {.n_extra_monitors = 1, .no_connect = 1};

/* The test's client on the second monitor.  Its first reply also shows
 * that QEMU has set up its monitors, so programs that connect next are not
 * greeted twice (see qemu-harness.h). */
static qmp_client *side_client(qemu_instance *q)
{
    qmp_client *c = NULL;
    json_object *st;

    if (qemu_connect(q->extra_address[0], QEMU_TEST_EVENT_TIMEOUT_MS, &c, NULL) < 0) {
        harness_cur_failed = 1;
        return NULL;
    }
    st = exec_ok(c, "query-status", NULL);
    json_object_put(st);
    return c;
}

/* A string property through the side client; "" when it fails. */
static void qom_get_str(qmp_client *c, const char *property, char *out, size_t size)
{
    json_object *v = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int rc = qmp_client_command(c, &v, &err, "qom-get", "{'path': '/machine', 'property': %s}",
                                property);

    if (rc < 0) {
        qemu_print_error("qom-get", rc, &err);
        harness_cur_failed = 1;
    }
    snprintf(out, size, "%s",
             json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "");
    json_object_put(v);
}

/* The unix path of a "unix:PATH" address. */
static const char *unix_path(const qemu_instance *q)
{
    return starts_with(q->address, "unix:") ? q->address + 5 : q->address;
}

/* Runs fn against a fresh QEMU, then ends the children fn left. */
#define QEMU_TEST(name, opts)                                                                      \
    TEST(name)                                                                                     \
    {                                                                                              \
        qemu_run((opts), name##_body, &harness_cur_failed);                                        \
        children_cleanup();                                                                        \
    }

/* Runs name_body with a private directory (no QEMU), then ends the children. */
#define DIR_TEST(name)                                                                             \
    TEST(name)                                                                                     \
    {                                                                                              \
        qemu_instance q;                                                                           \
                                                                                                   \
        if (qemu_prepare(&q) < 0)                                                                  \
            harness_cur_failed = 1;                                                                \
        else                                                                                       \
            name##_body(&q);                                                                       \
        children_cleanup();                                                                        \
        qemu_stop(&q, 0);                                                                          \
    }

/* ============================================================== qmp: basics */

TEST(qmp_version_and_help)
{
    char expected[64];
    child *ch;

    snprintf(expected, sizeof(expected), "qmp (libqmp) %s\n", qmp_version_string());
    ch = run(NULL, PROG_QMP, "-V", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->out), expected);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    ch = run(NULL, PROG_QMP, "--version", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->out), expected);

    ch = run(NULL, PROG_QMP, "--help", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_STARTS(buf_str(&ch->out), "Usage: qmp [OPTIONS] COMMAND [ARGS...]\n");
    CHECK_CONTAINS(buf_str(&ch->out), "Exit status:");
    CHECK_EQ_STR(buf_str(&ch->err), "");
    ch = run(NULL, PROG_QMP, "-h", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_STARTS(buf_str(&ch->out), "Usage: qmp");
    children_cleanup();
}

/*
 * Usage errors exit with 2 before connecting: the socket given ("@" in
 * the table) does not exist, so a connect attempt would exit with 3.
 */
static const struct usage_case {
    const char *qmp_socket; /* QMP_SOCKET, "@" for the missing socket */
    const char *args[8];
    const char *message; /* the first line of stderr contains it */
    int no_hint;         /* no "Try 'qmp --help'" line (the address is invalid, not its use) */
} usage_cases[] = {
    {NULL, {"-s", "@", "--no-such-option", "query-status"}, "unknown option '--no-such-option'", 0},
    {NULL, {"-s", "@", "-X", "query-status"}, "unknown option", 0},
    {NULL, {"query-status"}, "no QMP socket", 0},
    {"", {"query-status"}, "no QMP socket", 0},
    {NULL, {"-s"}, "needs an argument", 0},
    {NULL, {"-s", "@"}, "no command given", 0},
    {"@", {"-t", "soon", "query-status"}, "invalid timeout 'soon'", 0},
    {"@", {"-t", "-5", "query-status"}, "invalid timeout '-5'", 0},
    {"@", {"--connect-timeout", "1x", "query-status"}, "invalid connect timeout", 0},
    {"@", {"qom-get", "path"}, "expected KEY=VALUE or one JSON object", 0},
    {"@", {"qom-get", "=x"}, "expected KEY=VALUE", 0},
    {"@", {"qom-get", "{'path': "}, "invalid JSON arguments", 0},
    {"@", {"qom-get", "{\"path\": \"/machine\"", "x=1"}, "expected KEY=VALUE", 0},
    {"@", {"hmp"}, "hmp needs a command", 0},
    {"@", {"events", "--count", "0"}, "invalid count '0'", 0},
    {"@", {"events", "--timeout", "x"}, "invalid timeout 'x'", 0},
    {"@", {"events", "--bogus"}, "unknown events option", 0},
    {"@", {"events", "extra"}, "unexpected argument 'extra'", 0},
    {"@", {"-w", "STOP", "events"}, "-w and -e apply to commands", 0},
    {"@", {"-e", "events"}, "-w and -e apply to commands", 0},
    /* Options end at COMMAND: a later -p is an argument, not an option. */
    {"@", {"query-status", "-p"}, "expected KEY=VALUE", 0},
    /* Invalid addresses are usage errors too. */
    {NULL, {"-s", "fd:x", "query-status"}, "invalid descriptor number", 1},
    {NULL, {"-s", "127.0.0.1:99999", "query-status"}, "invalid port", 1},
    {NULL, {"-s", "tcp:127.0.0.1:0", "query-status"}, "port 0", 1},
    {NULL, {"-s", "[::1:4444", "query-status"}, "invalid bracketed IPv6 address", 1},
};

static void qmp_usage_errors_body(qemu_instance *q)
{
    char missing[QEMU_PATH_MAX];
    size_t i;

    qemu_path(q, "no-such.sock", missing, sizeof(missing));
    for (i = 0; i < sizeof(usage_cases) / sizeof(usage_cases[0]); i++) {
        const struct usage_case *uc = &usage_cases[i];
        const char *args[9];
        char first[512];
        run_opts o = {.sock_fd = -1};
        child *ch;
        int j;

        for (j = 0; j < 8 && uc->args[j] != NULL; j++)
            args[j] = strcmp(uc->args[j], "@") == 0 ? missing : uc->args[j];
        args[j] = NULL;
        if (uc->qmp_socket != NULL)
            o.qmp_socket = strcmp(uc->qmp_socket, "@") == 0 ? missing : uc->qmp_socket;
        ch = child_start(&o, PROG_QMP, args);
        CHECK_EXIT(ch, 2);
        CHECK_EQ_STR(buf_str(&ch->out), "");
        line_at(buf_str(&ch->err), 0, first, sizeof(first));
        CHECK_STARTS(first, "qmp: ");
        CHECK_CONTAINS(first, uc->message);
        if (uc->no_hint)
            CHECK_EQ_INT(n_lines(buf_str(&ch->err)), 1);
        else
            CHECK_CONTAINS(buf_str(&ch->err), "Try 'qmp --help' for more information.");
    }
}

DIR_TEST(qmp_usage_errors)

/* Exit status 3: nothing to connect to. */
static void qmp_connect_errors_body(qemu_instance *q)
{
    char missing[QEMU_PATH_MAX], addr[64];
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    child *ch;
    int fd;

    qemu_path(q, "no-such.sock", missing, sizeof(missing));
    ch = run(NULL, PROG_QMP, "-s", missing, "query-status", NULL);
    CHECK_EXIT(ch, 3);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
    CHECK_CONTAINS(buf_str(&ch->err), missing);

    /* A file that is no socket: nobody listens there. */
    fd = open(q->log_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    ch = run(NULL, PROG_QMP, "-s", q->log_path, "query-status", NULL);
    CHECK_EXIT(ch, 3);
    CHECK_ERROR_LINE(ch, "qmp: ");

    /* fd:0 is /dev/null, not a socket. */
    ch = run(NULL, PROG_QMP, "-s", "fd:0", "query-status", NULL);
    CHECK_EXIT(ch, 3);
    CHECK_ERROR_LINE(ch, "qmp: ");

    /* A TCP port that is bound but not listening refuses connections. */
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0) {
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
        ch = run(NULL, PROG_QMP, "-s", addr, "query-status", NULL);
        CHECK_EXIT(ch, 3);
        CHECK_ERROR_LINE(ch, "qmp: ");
    } else {
        printf("# bind: %s\n", strerror(errno));
        harness_cur_failed = 1;
    }
    close(fd);
}

DIR_TEST(qmp_connect_errors)

/* =========================================================== qmp: commands */

static void qmp_query_status_body(qemu_instance *q, qmp_client *c0)
{
    json_object *v;
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    CHECK_EQ_INT(n_lines(buf_str(&ch->out)), 1);
    v = parse_json(buf_str(&ch->out));
    CHECK(json_object_is_type(v, json_type_object));
    CHECK_EQ_STR(qemu_json_str(v, "status"), "running");
    CHECK(json_object_get_boolean(qemu_json_get(v, "running")));
    json_object_put(v);

    /* The other spelling of a unix address: a plain path. */
    ch = run(NULL, PROG_QMP, "-s", unix_path(q), "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");

    /* Long options with '='. */
    ch = run(NULL, PROG_QMP, "--socket", q->address, "--timeout=20000", "--connect-timeout=20000",
             "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");
}

QEMU_TEST(qmp_query_status, &two_monitors)

static void qmp_environment_body(qemu_instance *q, qmp_client *c0)
{
    char missing[QEMU_PATH_MAX];
    run_opts o = {.sock_fd = -1};
    child *ch;

    (void)c0;
    qemu_path(q, "no-such.sock", missing, sizeof(missing));

    o.qmp_socket = q->address;
    ch = run(&o, PROG_QMP, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");
    o.qmp_socket = unix_path(q);
    ch = run(&o, PROG_QMP, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");

    /* -s wins over QMP_SOCKET, both ways. */
    o.qmp_socket = missing;
    ch = run(&o, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    o.qmp_socket = q->address;
    ch = run(&o, PROG_QMP, "-s", missing, "query-status", NULL);
    CHECK_EXIT(ch, 3);
}

QEMU_TEST(qmp_environment, &two_monitors)

static void qmp_pretty_body(qemu_instance *q, qmp_client *c0)
{
    json_object *compact, *pretty, *ev;
    char line[256];
    const char *out;
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    compact = parse_json(buf_str(&ch->out));

    ch = run(NULL, PROG_QMP, "-s", q->address, "-p", "query-status", NULL);
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK(n_lines(out) >= 3);
    CHECK_EQ_STR(line_at(out, 0, line, sizeof(line)), "{");
    CHECK_STARTS(line_at(out, 1, line, sizeof(line)), "  \"");
    CHECK_EQ_STR(line_at(out, -1, line, sizeof(line)), "}");
    pretty = parse_json(out);
    CHECK(compact != NULL && json_same(pretty, compact));
    json_object_put(compact);
    json_object_put(pretty);

    /* An empty object stays {} on one line. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "--pretty", "stop", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->out), "{}\n");

    /* Events are indented too. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "-p", "-w", "RESUME", "cont", NULL);
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK_STARTS(out, "{}\n{\n  ");
    ev = starts_with(out, "{}\n") ? parse_json(out + 3) : NULL;
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "RESUME");
    json_object_put(ev);
}

QEMU_TEST(qmp_pretty, &two_monitors)

static void qmp_argument_forms_body(qemu_instance *q, qmp_client *c0)
{
    static const char *const forms[][2] = {
        {"path=/machine", "property=type"},
        {"{\"path\": \"/machine\", \"property\": \"type\"}", NULL},
        {"{'path': '/machine', 'property': 'type'}", NULL},
        {" {'property': 'type', 'path': '/machine'}", NULL},
    };
    qmp_client *c = side_client(q);
    json_object *expected = NULL, *v;
    char value[256];
    child *ch;
    size_t i;

    (void)c0;
    REQUIRE(c != NULL);
    {
        qmp_error err = QMP_ERROR_INIT;

        if (qmp_client_command(c, &expected, &err, "qom-get",
                               "{'path': '/machine', 'property': 'type'}") < 0)
            harness_cur_failed = 1;
    }
    CHECK(json_object_is_type(expected, json_type_string));

    for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        ch = run(NULL, PROG_QMP, "-s", q->address, "qom-get", forms[i][0], forms[i][1], NULL);
        CHECK_EXIT(ch, 0);
        CHECK_EQ_INT(n_lines(buf_str(&ch->out)), 1);
        v = parse_json(buf_str(&ch->out));
        CHECK(v != NULL && json_same(v, expected));
        json_object_put(v);
    }
    json_object_put(expected);

    /* A VALUE that is not JSON is a string; one that is JSON is taken as
     * such, so a string that looks like JSON is quoted as JSON. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "qom-set", "path=/machine", "property=dt-compatible",
             "value=plain text", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->out), "{}\n");
    qom_get_str(c, "dt-compatible", value, sizeof(value));
    CHECK_EQ_STR(value, "plain text");

    ch = run(NULL, PROG_QMP, "-s", q->address, "qom-set", "path=/machine", "property=dt-compatible",
             "value=\"42\"", NULL);
    CHECK_EXIT(ch, 0);
    qom_get_str(c, "dt-compatible", value, sizeof(value));
    CHECK_EQ_STR(value, "42");

    ch = run(NULL, PROG_QMP, "-s", q->address, "qom-set", "path=/machine", "property=dt-compatible",
             "value=42", NULL);
    CHECK_EXIT(ch, 1); /* a number for a string property */
    CHECK_ERROR_LINE(ch, "qmp: GenericError: ");
    qom_get_str(c, "dt-compatible", value, sizeof(value));
    CHECK_EQ_STR(value, "42");

    /* Numbers as KEY=VALUE. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "migrate-set-parameters", "downtime-limit=1234",
             NULL);
    CHECK_EXIT(ch, 0);
    v = exec_ok(c, "query-migrate-parameters", NULL);
    CHECK_EQ_INT(json_object_get_int64(qemu_json_get(v, "downtime-limit")), 1234);
    json_object_put(v);

    /* The template form: \' inside single quotes, and a literal '%'. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "qom-set",
             "{'path': '/machine', 'property': 'dt-compatible', 'value': '100% it\\'s'}", NULL);
    CHECK_EXIT(ch, 0);
    qom_get_str(c, "dt-compatible", value, sizeof(value));
    CHECK_EQ_STR(value, "100% it's");

    qmp_client_unref(c);
}

QEMU_TEST(qmp_argument_forms, &two_monitors)

static void qmp_wait_event_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    json_object *ev, *ts, *st;
    const char *out;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    ch = run(NULL, PROG_QMP, "-s", q->address, "-w", "STOP", "stop", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 2);
    CHECK_STARTS(out, "{}\n");
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "STOP");
    ts = qemu_json_get(ev, "timestamp");
    CHECK(json_object_is_type(qemu_json_get(ts, "seconds"), json_type_int));
    CHECK(json_object_is_type(qemu_json_get(ts, "microseconds"), json_type_int));
    json_object_put(ev);

    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    st = parse_json(buf_str(&ch->out));
    CHECK_EQ_STR(qemu_json_str(st, "status"), "paused");
    json_object_put(st);

    ch = run(NULL, PROG_QMP, "-s", q->address, "--wait-event=RESUME", "cont", NULL);
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 2);
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "RESUME");
    json_object_put(ev);

    qmp_client_unref(c);
}

QEMU_TEST(qmp_wait_event, &two_monitors)

/* -w twice waits for two events, caused here by the other monitor. */
static void qmp_wait_two_events_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    json_object *ev, *r;
    const char *out;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    ch = start(NULL, PROG_QMP, "--trace", "-s", q->address, "-w", "STOP", "-w", "RESUME",
               "query-status", NULL);
    if (WAIT_FOR(ch, cond_stderr, "\"status\": \"running\"")) {
        r = exec_ok(c, "stop", NULL);
        json_object_put(r);
        r = exec_ok(c, "cont", NULL);
        json_object_put(r);
    }
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 3);
    CHECK_CONTAINS(out, "\"status\":\"running\"");
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "STOP");
    json_object_put(ev);
    ev = line_json(out, 2);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "RESUME");
    json_object_put(ev);

    /* Only the first of two comes: the reply and that event are printed. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "-t", "1000", "-w", "STOP", "-w", "RESUME", "stop",
             NULL);
    CHECK_EXIT(ch, 5);
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 2);
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "STOP");
    json_object_put(ev);
    CHECK_EQ_STR(buf_str(&ch->err), "qmp: no RESUME event within 1000 ms\n");
    qmp_client_unref(c);
}

QEMU_TEST(qmp_wait_two_events, &two_monitors)

static void qmp_print_events_body(qemu_instance *q, qmp_client *c0)
{
    json_object *ev;
    const char *out;
    child *ch;

    (void)c0;
    /* QEMU sends STOP before the reply to stop: -e prints it after. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "-e", "stop", NULL);
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 2);
    CHECK_STARTS(out, "{}\n");
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "STOP");
    json_object_put(ev);

    /* Nothing happened during this one: the reply alone. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "--events", "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_INT(n_lines(buf_str(&ch->out)), 1);

    /* With -w as well: each event once, in order. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "-e", "-w", "RESUME", "cont", NULL);
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 2);
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "RESUME");
    json_object_put(ev);
}

QEMU_TEST(qmp_print_events, &two_monitors)

static void qmp_hmp_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    json_object *v, *qv;
    char expected[512];
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    v = exec_ok(c, "query-version", NULL);
    qv = qemu_json_get(v, "qemu");
    /* HMP's own format for "info version". */
    snprintf(expected, sizeof(expected), "%d.%d.%d%s\n",
             json_object_get_int(qemu_json_get(qv, "major")),
             json_object_get_int(qemu_json_get(qv, "minor")),
             json_object_get_int(qemu_json_get(qv, "micro")),
             qemu_json_str(v, "package") ? qemu_json_str(v, "package") : "");
    json_object_put(v);
    qmp_client_unref(c);

    ch = run(NULL, PROG_QMP, "-s", q->address, "hmp", "info version", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->out), expected);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    CHECK(strchr(buf_str(&ch->out), '\r') == NULL);

    /* Several words are joined. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "hmp", "info", "version", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->out), expected);

    /* HMP's failures come as text in a successful reply. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "hmp", "no-such-hmp-command", NULL);
    CHECK_EXIT(ch, 1);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: hmp: ");
    CHECK_CONTAINS(buf_str(&ch->err), "no-such-hmp-command");
    ch = run(NULL, PROG_QMP, "-s", q->address, "hmp", "device_del nope", NULL);
    CHECK_EXIT(ch, 1);
    CHECK_ERROR_LINE(ch, "qmp: hmp: ");
    CHECK_CONTAINS(buf_str(&ch->err), "nope");
}

QEMU_TEST(qmp_hmp, &two_monitors)

/* Exit status 1: QEMU's error reply, as "qmp: CLASS: desc". */
static void qmp_error_reply_body(qemu_instance *q, qmp_client *c0)
{
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_QMP, "-s", q->address, "device_del", "id=nope", NULL);
    CHECK_EXIT(ch, 1);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: DeviceNotFound: ");
    CHECK_CONTAINS(buf_str(&ch->err), "'nope'");

    ch = run(NULL, PROG_QMP, "-s", q->address, "no-such-command", NULL);
    CHECK_EXIT(ch, 1);
    CHECK_ERROR_LINE(ch, "qmp: CommandNotFound: ");

    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", "bogus=1", NULL);
    CHECK_EXIT(ch, 1);
    CHECK_ERROR_LINE(ch, "qmp: GenericError: ");

    /* -w is not waited for after an error reply. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "-w", "DEVICE_DELETED", "device_del", "id=nope",
             NULL);
    CHECK_EXIT(ch, 1);
    CHECK_ERROR_LINE(ch, "qmp: DeviceNotFound: ");
}

QEMU_TEST(qmp_error_reply, &two_monitors)

static void qmp_oob_body(qemu_instance *q, qmp_client *c0)
{
    json_object *v;
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_QMP, "-s", q->address, "--trace", "--oob", "query-yank", NULL);
    CHECK_EXIT(ch, 0);
    v = parse_json(buf_str(&ch->out));
    CHECK(json_object_is_type(v, json_type_array));
    json_object_put(v);
    CHECK_CONTAINS(buf_str(&ch->err), "\"enable\":[\"oob\"]");
    CHECK_CONTAINS(buf_str(&ch->err), "-> {\"exec-oob\":\"query-yank\"");

    /* QEMU refuses commands that do not allow out-of-band execution. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "--oob", "query-status", NULL);
    CHECK_EXIT(ch, 1);
    CHECK_ERROR_LINE(ch, "qmp: GenericError: ");
}

QEMU_TEST(qmp_oob, &two_monitors)

static void qmp_trace_body(qemu_instance *q, qmp_client *c0)
{
    json_object *reply = NULL, *printed, *traced;
    const char *err;
    char line[4096];
    int i, n, caps = 0, cmd = 0;
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_QMP, "-s", q->address, "--trace", "query-version", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_INT(n_lines(buf_str(&ch->out)), 1);
    err = buf_str(&ch->err);
    n = n_lines(err);
    CHECK_EQ_INT(n, 5);
    CHECK_STARTS(line_at(err, 0, line, sizeof(line)), "<- {\"QMP\": ");
    for (i = 0; i < n; i++) {
        line_at(err, i, line, sizeof(line));
        if (!starts_with(line, "-> ") && !starts_with(line, "<- "))
            HARNESS_FAIL_("stderr line %d is not a trace line: %s", i, line);
        if (starts_with(line, "-> ") && strstr(line, "\"qmp_capabilities\""))
            caps++;
        if (starts_with(line, "-> ") && strstr(line, "\"query-version\""))
            cmd++;
        if (starts_with(line, "<- ")) {
            json_object_put(reply);
            reply = parse_json(line + 3);
        }
    }
    CHECK_EQ_INT(caps, 1);
    CHECK_EQ_INT(cmd, 1);
    /* The last message received is the reply that was printed. */
    printed = parse_json(buf_str(&ch->out));
    traced = qemu_json_get(reply, "return");
    CHECK(printed != NULL && traced != NULL && json_same(printed, traced));
    json_object_put(printed);
    json_object_put(reply);
}

QEMU_TEST(qmp_trace, &two_monitors)

/* Exit status 9: the output cannot be written. */
static void qmp_output_error_body(qemu_instance *q, qmp_client *c0)
{
    run_opts o = {.sock_fd = -1, .stdout_file = "/dev/full"};
    child *ch;

    (void)c0;
    ch = run(&o, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 9);
    CHECK_ERROR_LINE(ch, "qmp: cannot write the output");
}

QEMU_TEST(qmp_output_error, &two_monitors)

/* ======================================================== qmp: addresses */

static void qmp_tcp_body(qemu_instance *q, qmp_client *c0)
{
    static const char *const hosts[] = {"127.0.0.1", "tcp:127.0.0.1", "localhost"};
    char addr[64];
    child *ch;
    size_t i;

    (void)c0;
    REQUIRE(q->tcp_port > 0);
    for (i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        snprintf(addr, sizeof(addr), "%s:%d", hosts[i], q->tcp_port);
        ch = run(NULL, PROG_QMP, "-s", addr, "query-status", NULL);
        CHECK_EXIT(ch, 0);
        CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");
    }
}

static const qemu_opts tcp_monitor = {.monitor = QEMU_MON_TCP, .no_connect = 1};
QEMU_TEST(qmp_tcp, &tcp_monitor)

/* fd:N: a connected socket inherited from the parent. */
static void qmp_fd_body(qemu_instance *q, qmp_client *c0)
{
    run_opts o = {.sock_fd = q->client_fd};
    child *ch;

    (void)c0;
    REQUIRE(q->client_fd >= 0);
    ch = run(&o, PROG_QMP, "-s", CHILD_SOCK_ADDRESS, "query-status", NULL);
    CHECK_EXIT(ch, 0);
    CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");
}

static const qemu_opts socketpair_monitor = {.monitor = QEMU_MON_SOCKETPAIR, .no_connect = 1};
QEMU_TEST(qmp_fd, &socketpair_monitor)

/* ========================================================= qmp: timeouts */

/* Exit status 5: no greeting while another client holds the monitor. */
static void qmp_second_client_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = NULL;
    child *ch;

    (void)c0;
    REQUIRE(qemu_connect(q->address, 0, &c, NULL) == 0);
    ch = run(NULL, PROG_QMP, "-s", q->address, "--connect-timeout", "1000", "query-status", NULL);
    CHECK_EXIT(ch, 5);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
    CHECK_CONTAINS(buf_str(&ch->err), "is another client connected?");
    CHECK(ch->end_ms - ch->start_ms >= 1000);

    /* Once the first client left, the monitor serves the tool. */
    qmp_client_unref(c);
    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 0);
}

QEMU_TEST(qmp_second_client, &two_monitors)

/* Exit status 5: a frozen QEMU sends no greeting. */
static void qmp_frozen_qemu_body(qemu_instance *q, qmp_client *c0)
{
    child *ch;

    (void)c0;
    REQUIRE(qemu_pause(q) == 0);
    ch = run(NULL, PROG_QMP, "-s", q->address, "--connect-timeout", "1000", "-t", "1000",
             "query-status", NULL);
    REQUIRE(qemu_resume(q) == 0);
    CHECK_EXIT(ch, 5);
    CHECK_ERROR_LINE(ch, "qmp: ");
    CHECK(ch->end_ms - ch->start_ms >= 1000);

    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 0);
}

QEMU_TEST(qmp_frozen_qemu, &two_monitors)

/* Exit status 5: an awaited event that does not come; events --count. */
static void qmp_event_timeout_body(qemu_instance *q, qmp_client *c0)
{
    json_object *v;
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_QMP, "-s", q->address, "-t", "1000", "-w", "NO_SUCH_EVENT", "query-status",
             NULL);
    CHECK_EXIT(ch, 5);
    CHECK(ch->end_ms - ch->start_ms >= 1000);
    /* The reply was printed before the wait. */
    v = parse_json(buf_str(&ch->out));
    CHECK_EQ_STR(qemu_json_str(v, "status"), "running");
    json_object_put(v);
    CHECK_EQ_STR(buf_str(&ch->err), "qmp: no NO_SUCH_EVENT event within 1000 ms\n");

    ch = run(NULL, PROG_QMP, "-s", q->address, "events", "--count", "1", "--timeout", "1000", NULL);
    CHECK_EXIT(ch, 5);
    CHECK(ch->end_ms - ch->start_ms >= 1000);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_EQ_STR(buf_str(&ch->err), "qmp: timed out after 1000 ms with 0 of 1 events\n");

    /* Without --count, listening for a while was the request. */
    ch = run(NULL, PROG_QMP, "-s", q->address, "events", "-t", "500", NULL);
    CHECK_EXIT(ch, 0);
    CHECK(ch->end_ms - ch->start_ms >= 500);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_EQ_STR(buf_str(&ch->err), "");
}

QEMU_TEST(qmp_event_timeout, &two_monitors)

/* ============================================================ qmp: events */

/* The tool's trace shows the reply to qmp_capabilities: events sent after
 * it reach the tool. */
#define NEGOTIATED_TRACE "<- {\"return\": {}"

static void qmp_events_count_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    json_object *ev, *r;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    ch = start(NULL, PROG_QMP, "--trace", "-s", q->address, "events", "--count", "1", NULL);
    if (WAIT_FOR(ch, cond_stderr, NEGOTIATED_TRACE)) {
        /* Two events; the tool stops after the first. */
        r = exec_ok(c, "stop", NULL);
        json_object_put(r);
        r = exec_ok(c, "cont", NULL);
        json_object_put(r);
    }
    CHECK_EXIT(ch, 0);
    CHECK_EQ_INT(n_lines(buf_str(&ch->out)), 1);
    ev = parse_json(buf_str(&ch->out));
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "STOP");
    CHECK(json_object_is_type(qemu_json_get(ev, "timestamp"), json_type_object));
    json_object_put(ev);

    /* --count 2 --pretty: both, in order, indented. */
    ch = start(NULL, PROG_QMP, "--trace", "-s", q->address, "-p", "events", "-n", "2", NULL);
    if (WAIT_FOR(ch, cond_stderr, NEGOTIATED_TRACE)) {
        r = exec_ok(c, "stop", NULL);
        json_object_put(r);
        r = exec_ok(c, "cont", NULL);
        json_object_put(r);
    }
    CHECK_EXIT(ch, 0);
    CHECK_STARTS(buf_str(&ch->out), "{\n  ");
    {
        const char *second = strstr(buf_str(&ch->out), "}\n{\n");

        ev = parse_json(second ? second + 2 : "null");
        CHECK_EQ_STR(qemu_json_str(ev, "event"), "RESUME");
        json_object_put(ev);
    }
    qmp_client_unref(c);
}

QEMU_TEST(qmp_events_count, &two_monitors)

/* quit with -w SHUTDOWN; qmp events on the other monitor ends with 0. */
static void qmp_quit_body(qemu_instance *q, qmp_client *c0)
{
    json_object *ev;
    child *listener, *ch;
    const char *out;

    (void)c0;
    listener = start(NULL, PROG_QMP, "--trace", "-s", q->extra_address[0], "events", NULL);
    REQUIRE(WAIT_FOR(listener, cond_stderr, NEGOTIATED_TRACE));

    ch = run(NULL, PROG_QMP, "-s", q->address, "-w", "SHUTDOWN", "quit", NULL);
    CHECK_EXIT(ch, 0);
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 2);
    CHECK_STARTS(out, "{}\n");
    ev = line_json(out, 1);
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "SHUTDOWN");
    CHECK_EQ_STR(qemu_json_str(qemu_json_get(ev, "data"), "reason"), "host-qmp-quit");
    json_object_put(ev);

    CHECK_EQ_INT(qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS), 0);
    CHECK(WIFEXITED(q->status) && WEXITSTATUS(q->status) == 0);

    CHECK_EXIT(listener, 0);
    CHECK_EQ_INT(n_lines(buf_str(&listener->out)), 1);
    ev = parse_json(buf_str(&listener->out));
    CHECK_EQ_STR(qemu_json_str(ev, "event"), "SHUTDOWN");
    json_object_put(ev);
}

QEMU_TEST(qmp_quit, &two_monitors)

/* Exit status 6: QEMU killed while the tool waits for an event, and under
 * qmp events; then exit status 3, as nobody listens any more. */
static void qmp_qemu_killed_body(qemu_instance *q, qmp_client *c0)
{
    child *waiter, *listener, *ch;
    char last[512];

    (void)c0;
    waiter = start(NULL, PROG_QMP, "--trace", "-s", q->address, "-t", "60000", "-w",
                   "NO_SUCH_EVENT", "query-status", NULL);
    listener = start(NULL, PROG_QMP, "--trace", "-s", q->extra_address[0], "events", NULL);
    REQUIRE(WAIT_FOR(waiter, cond_stderr, "\"status\": \"running\""));
    REQUIRE(WAIT_FOR(listener, cond_stderr, NEGOTIATED_TRACE));

    REQUIRE(kill(q->pid, SIGKILL) == 0);
    REQUIRE(qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS) == 0);

    CHECK_EXIT(waiter, 6);
    CHECK_CONTAINS(buf_str(&waiter->out), "\"status\":\"running\"");
    CHECK_STARTS(line_at(buf_str(&waiter->err), -1, last, sizeof(last)), "qmp: ");
    CHECK(waiter->end_ms - waiter->start_ms < 60000);

    CHECK_EXIT(listener, 6);
    CHECK_EQ_STR(buf_str(&listener->out), "");
    CHECK_STARTS(line_at(buf_str(&listener->err), -1, last, sizeof(last)), "qmp: ");

    ch = run(NULL, PROG_QMP, "-s", q->address, "query-status", NULL);
    CHECK_EXIT(ch, 3);
    CHECK_ERROR_LINE(ch, "qmp: ");
}

QEMU_TEST(qmp_qemu_killed, &two_monitors)

/* ======================================== qmp: through the altering relay */

/* Starts qmp through a relay, set up as r says, to QEMU's primary
 * monitor.  The child takes r over (r is reset). */
static child *start_relayed(qemu_instance *q, relay *r, const char *const *args)
{
    run_opts o = {.sock_fd = -1, .relay = r};

    r->qemu_address = q->address;
    return child_start(&o, PROG_QMP, args);
}

/* The command is the child's second line, after qmp_capabilities. */
#define COMMAND_LINE 2

/* Exit status 5: QEMU's reply is held back. */
static void qmp_reply_timeout_body(qemu_instance *q, qmp_client *c0)
{
    const char *args[] = {"-s", CHILD_SOCK_ADDRESS, "-t", "1000", "query-status", NULL};
    qmp_client *c = side_client(q);
    relay r;
    child *ch;

    (void)c0;
    qmp_client_unref(c);
    relay_init(&r);
    r.cut_after = COMMAND_LINE;
    ch = start_relayed(q, &r, args);
    CHECK_EXIT(ch, 5);
    CHECK(ch->end_ms - ch->start_ms >= 1000);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
    /* QEMU did answer: the reply was there to hold back. */
    CHECK(ch->relay.cut);
    CHECK(cond_from_qemu(ch, "\"status\": \"running\""));
}

/* Exit status 6: QEMU killed while the command is pending. */
static void qmp_killed_mid_command_body(qemu_instance *q, qmp_client *c0)
{
    const char *args[] = {"-s", CHILD_SOCK_ADDRESS, "-t", "60000", "query-status", NULL};
    qmp_client *c = side_client(q);
    relay r;
    child *ch;

    (void)c0;
    qmp_client_unref(c);
    relay_init(&r);
    r.cut_after = COMMAND_LINE;
    ch = start_relayed(q, &r, args);
    REQUIRE(WAIT_FOR(ch, cond_cut, NULL));
    REQUIRE(kill(q->pid, SIGKILL) == 0);
    REQUIRE(qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS) == 0);
    CHECK_EXIT(ch, 6);
    CHECK(ch->end_ms - ch->start_ms < 60000);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
    CHECK_CONTAINS(buf_str(&ch->err), "pending");
}

/* Exit status 7: a malformed message instead of the reply. */
static void qmp_protocol_error_body(qemu_instance *q, qmp_client *c0)
{
    static const char garbage[] = "{\"return\": {}, \"id\": }\r\n";
    const char *args[] = {"-s", CHILD_SOCK_ADDRESS, "query-status", NULL};
    qmp_client *c = side_client(q);
    relay r;
    child *ch;

    (void)c0;
    qmp_client_unref(c);
    relay_init(&r);
    r.cut_after = COMMAND_LINE;
    buf_add(&r.inject, garbage, strlen(garbage));
    ch = start_relayed(q, &r, args);
    CHECK_EXIT(ch, 7);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
}

/* Exit status 8: a reply larger than the 10 MiB limit. */
static void qmp_limit_body(qemu_instance *q, qmp_client *c0)
{
    const char *args[] = {"-s", CHILD_SOCK_ADDRESS, "query-status", NULL};
    qmp_client *c = side_client(q);
    size_t size = 11u * 1024 * 1024;
    relay r;
    child *ch;
    char *big;

    (void)c0;
    qmp_client_unref(c);
    relay_init(&r);
    r.cut_after = COMMAND_LINE;
    big = malloc(size);
    REQUIRE(big != NULL);
    memset(big, 'x', size);
    memcpy(big, "{\"return\": \"", 12);
    buf_add(&r.inject, big, size);
    free(big);
    ch = start_relayed(q, &r, args);
    CHECK_EXIT(ch, 8);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
}

/* Exit status 4: a malformed greeting, and --oob without "oob" offered. */
static void qmp_greeting_errors_body(qemu_instance *q, qmp_client *c0)
{
    const char *plain[] = {"-s", CHILD_SOCK_ADDRESS, "query-status", NULL};
    const char *oob[] = {"-s", CHILD_SOCK_ADDRESS, "--oob", "query-yank", NULL};
    qmp_client *c = side_client(q);
    relay r;
    child *ch;

    (void)c0;
    qmp_client_unref(c);
    relay_init(&r);
    r.greeting_find = "{\"QMP\": {";
    r.greeting_replace = "{\"QMP\": 42, \"was\": {";
    ch = start_relayed(q, &r, plain);
    CHECK_EXIT(ch, 4);
    CHECK(ch->relay.greeting_replaced);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");

    relay_init(&r);
    r.greeting_find = "\"capabilities\": [\"oob\"]";
    r.greeting_replace = "\"capabilities\": []";
    ch = start_relayed(q, &r, oob);
    CHECK_EXIT(ch, 4);
    CHECK(ch->relay.greeting_replaced);
    CHECK_EQ_STR(buf_str(&ch->out), "");
    CHECK_ERROR_LINE(ch, "qmp: ");
    CHECK_CONTAINS(buf_str(&ch->err), "out-of-band");

    /* The same greeting without --oob is fine. */
    relay_init(&r);
    r.greeting_find = "\"capabilities\": [\"oob\"]";
    r.greeting_replace = "\"capabilities\": []";
    ch = start_relayed(q, &r, plain);
    CHECK_EXIT(ch, 0);
    CHECK(ch->relay.greeting_replaced);
    CHECK_CONTAINS(buf_str(&ch->out), "\"status\":\"running\"");
}

QEMU_TEST(qmp_reply_timeout, &two_monitors)
QEMU_TEST(qmp_killed_mid_command, &two_monitors)
QEMU_TEST(qmp_protocol_error, &two_monitors)
QEMU_TEST(qmp_limit, &two_monitors)
QEMU_TEST(qmp_greeting_errors, &two_monitors)

/* ================================================================ examples */

static void example_blocking_client_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    json_object *v, *qv;
    char expected[512], line[512];
    const char *out;
    long long s, us;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    v = exec_ok(c, "query-version", NULL);
    qv = qemu_json_get(v, "qemu");
    snprintf(expected, sizeof(expected), "connected to QEMU %d.%d.%d (%s)",
             json_object_get_int(qemu_json_get(qv, "major")),
             json_object_get_int(qemu_json_get(qv, "minor")),
             json_object_get_int(qemu_json_get(qv, "micro")),
             qemu_json_str(v, "package") ? qemu_json_str(v, "package") : "");
    json_object_put(v);

    ch = run(NULL, PROG_BLOCKING_CLIENT, q->address, NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 5);
    CHECK_EQ_STR(line_at(out, 0, line, sizeof(line)), expected);
    CHECK_EQ_STR(line_at(out, 1, line, sizeof(line)), "status: running");
    CHECK(sscanf(line_at(out, 2, line, sizeof(line)), "stop: got STOP at %lld.%lld", &s, &us) == 2);
    CHECK(sscanf(line_at(out, 3, line, sizeof(line)), "cont: got RESUME at %lld.%lld", &s, &us) ==
          2);
    CHECK_STARTS(line_at(out, 4, line, sizeof(line)),
                 "device_del refused, as expected: DeviceNotFound: ");
    CHECK_CONTAINS(line, "no-such-device");

    /* It left the guest running. */
    v = exec_ok(c, "query-status", NULL);
    CHECK_EQ_STR(qemu_json_str(v, "status"), "running");
    json_object_put(v);
    qmp_client_unref(c);

    /* A failure to connect is reported as such. */
    qemu_path(q, "no-such.sock", line, sizeof(line));
    ch = run(NULL, PROG_BLOCKING_CLIENT, line, NULL);
    CHECK_EXIT(ch, 1);
    CHECK_STARTS(buf_str(&ch->err), "connect failed (");
}

QEMU_TEST(example_blocking_client, &two_monitors)

static void example_template_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    char type[128], value[256], line[512], expected[256];
    const char *out;
    json_object *v;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    qom_get_str(c, "type", type, sizeof(type));
    CHECK(type[0] != '\0');

    ch = run(NULL, PROG_TEMPLATE, q->address, NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 4);
    snprintf(expected, sizeof(expected), "machine type: %s", type);
    CHECK_EQ_STR(line_at(out, 0, line, sizeof(line)), expected);
    CHECK_EQ_STR(line_at(out, 1, line, sizeof(line)),
                 "round trip: it's \"quoted\", {braced} and 100% safe");
    CHECK_EQ_STR(line_at(out, 2, line, sizeof(line)),
                 "request arguments: {\"downtime-limit\":250}");
    CHECK_EQ_STR(line_at(out, 3, line, sizeof(line)), "downtime-limit is now 250 ms");

    /* What it printed is what QEMU holds. */
    qom_get_str(c, "dt-compatible", value, sizeof(value));
    CHECK_EQ_STR(value, "it's \"quoted\", {braced} and 100% safe");
    v = exec_ok(c, "query-migrate-parameters", NULL);
    CHECK_EQ_INT(json_object_get_int64(qemu_json_get(v, "downtime-limit")), 250);
    json_object_put(v);
    qmp_client_unref(c);
}

QEMU_TEST(example_template, &two_monitors)

static void example_sansio_session_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = side_client(q);
    json_object *v, *qv;
    char expected[128], line[512];
    const char *out;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    v = exec_ok(c, "query-version", NULL);
    qv = qemu_json_get(v, "qemu");
    snprintf(expected, sizeof(expected), "greeting from QEMU %d.%d.%d, negotiating",
             json_object_get_int(qemu_json_get(qv, "major")),
             json_object_get_int(qemu_json_get(qv, "minor")),
             json_object_get_int(qemu_json_get(qv, "micro")));
    json_object_put(v);
    qmp_client_unref(c);

    /* It takes a socket path, not an address. */
    ch = run(NULL, PROG_SANSIO, unix_path(q), NULL);
    CHECK_EXIT(ch, 0);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 3);
    CHECK_EQ_STR(line_at(out, 0, line, sizeof(line)), expected);
    CHECK_EQ_STR(line_at(out, 1, line, sizeof(line)), "ready");
    CHECK_STARTS(line_at(out, 2, line, sizeof(line)), "query-status returned {");
    v = starts_with(line, "query-status returned ") ? parse_json(line + 22) : NULL;
    CHECK_EQ_STR(qemu_json_str(v, "status"), "running");
    json_object_put(v);
}

QEMU_TEST(example_sansio_session, &two_monitors)

/* events: prints what another monitor causes, stops when QEMU quits.  It
 * prints nothing until an event comes, so it is connected through the
 * relay, which shows when its negotiation is done. */
static void example_events_body(qemu_instance *q, qmp_client *c0)
{
    const char *args[] = {CHILD_SOCK_ADDRESS, "60", NULL};
    run_opts o = {.sock_fd = -1};
    qmp_client *c = side_client(q);
    qmp_error err = QMP_ERROR_INIT;
    char line[512], name[64], data[256];
    long long s, us;
    const char *out;
    json_object *r;
    relay rl;
    child *ch;

    (void)c0;
    REQUIRE(c != NULL);
    relay_init(&rl);
    rl.qemu_address = q->address;
    o.relay = &rl;
    ch = child_start(&o, PROG_EVENTS, args);
    REQUIRE(WAIT_FOR(ch, cond_from_qemu, "\"return\""));
    r = exec_ok(c, "stop", NULL);
    json_object_put(r);
    REQUIRE(WAIT_FOR(ch, cond_stdout, " STOP "));
    /* quit answers, or QEMU is gone first: either is fine. */
    qmp_client_execute(c, "quit", NULL, NULL, &err);
    CHECK_EQ_INT(qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS), 0);
    CHECK_EXIT(ch, 0);
    CHECK(ch->end_ms - ch->start_ms < 60000);
    CHECK_EQ_STR(buf_str(&ch->err), "");
    out = buf_str(&ch->out);
    CHECK_EQ_INT(n_lines(out), 4);
    CHECK(sscanf(line_at(out, 0, line, sizeof(line)), "%lld.%lld %63s", &s, &us, name) == 3);
    CHECK_EQ_STR(name, "STOP");
    data[0] = '\0';
    CHECK(sscanf(line_at(out, 1, line, sizeof(line)), "%lld.%lld %63s %255s", &s, &us, name,
                 data) == 4);
    CHECK_EQ_STR(name, "SHUTDOWN");
    CHECK_CONTAINS(line, "\"reason\":\"host-qmp-quit\"");
    CHECK_EQ_STR(line_at(out, 2, line, sizeof(line)), "QEMU closed the connection");
    CHECK_EQ_STR(line_at(out, 3, line, sizeof(line)), "2 events, 0 lost");
    qmp_client_unref(c);
}

QEMU_TEST(example_events, &two_monitors)

/* events ends at its deadline when nothing happens. */
static void example_events_deadline_body(qemu_instance *q, qmp_client *c0)
{
    child *ch;

    (void)c0;
    ch = run(NULL, PROG_EVENTS, q->address, "1", NULL);
    CHECK_EXIT(ch, 0);
    CHECK(ch->end_ms - ch->start_ms >= 1000);
    CHECK_EQ_STR(buf_str(&ch->out), "0 events, 0 lost\n");
    CHECK_EQ_STR(buf_str(&ch->err), "");
}

QEMU_TEST(example_events_deadline, &two_monitors)

/* Without an address, each example prints its usage and exits with 2. */
TEST(example_usage)
{
    int p;

    for (p = PROG_BLOCKING_CLIENT; p < N_PROGS; p++) {
        const char *none[] = {NULL};
        child *ch;

        if (prog_path[p] == NULL)
            continue;
        ch = child_start(NULL, p, none);
        CHECK_EXIT(ch, 2);
        CHECK_EQ_STR(buf_str(&ch->out), "");
        CHECK_STARTS(buf_str(&ch->err), "usage: ");
    }
    children_cleanup();
}

/* -------------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    char *rest[2] = {argv[0], NULL};
    int i, p, have_examples = 0;

    for (i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');

        for (p = 0; eq != NULL && p < N_PROGS; p++) {
            if (strlen(prog_name[p]) == (size_t)(eq - argv[i]) &&
                strncmp(argv[i], prog_name[p], (size_t)(eq - argv[i])) == 0) {
                prog_path[p] = eq + 1;
                break;
            }
        }
        if (eq == NULL || p == N_PROGS)
            rest[1] = argv[i];
    }
    harness_init(rest[1] ? 2 : 1, rest);

    if (prog_path[PROG_QMP] != NULL) {
        RUN(qmp_version_and_help);
        RUN(qmp_usage_errors);
        RUN(qmp_connect_errors);
        RUN(qmp_query_status);
        RUN(qmp_environment);
        RUN(qmp_pretty);
        RUN(qmp_argument_forms);
        RUN(qmp_wait_event);
        RUN(qmp_wait_two_events);
        RUN(qmp_print_events);
        RUN(qmp_hmp);
        RUN(qmp_error_reply);
        RUN(qmp_oob);
        RUN(qmp_trace);
        RUN(qmp_output_error);
        RUN(qmp_tcp);
        RUN(qmp_fd);
        RUN(qmp_second_client);
        RUN(qmp_frozen_qemu);
        RUN(qmp_event_timeout);
        RUN(qmp_events_count);
        RUN(qmp_quit);
        RUN(qmp_qemu_killed);
        RUN(qmp_reply_timeout);
        RUN(qmp_killed_mid_command);
        RUN(qmp_protocol_error);
        RUN(qmp_limit);
        RUN(qmp_greeting_errors);
    } else {
        printf("# the qmp tool was not built: its tests do not run\n");
    }
    for (p = PROG_BLOCKING_CLIENT; p < N_PROGS; p++)
        have_examples |= prog_path[p] != NULL;
    if (have_examples) {
        RUN(example_usage);
        if (prog_path[PROG_BLOCKING_CLIENT] != NULL)
            RUN(example_blocking_client);
        if (prog_path[PROG_TEMPLATE] != NULL)
            RUN(example_template);
        if (prog_path[PROG_SANSIO] != NULL)
            RUN(example_sansio_session);
        if (prog_path[PROG_EVENTS] != NULL) {
            RUN(example_events);
            RUN(example_events_deadline);
        }
    } else {
        printf("# the examples were not built: their tests do not run\n");
    }
    return harness_done();
}
