/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Throwaway QEMU instances for the 'qemu' test suite; see qemu-harness.h.
 */
#include "qemu-harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
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

#define QEMU_BINARY "qemu-system-x86_64"

/*
 * Cleanup registry.  Slots hold copies (not pointers to the caller's
 * qemu_instance, which may live in a stack frame that is gone by exit
 * time).  The signal handler reads only live_pid[].
 */
#define MAX_LIVE 16
static volatile sig_atomic_t live_pid[MAX_LIVE];
static int live_used[MAX_LIVE];
static char live_dir[MAX_LIVE][QEMU_PATH_MAX];

static int harness_ready;
static pid_t harness_pid;
static sigset_t orig_mask; /* the mask before SIGCHLD was blocked */

static const int fatal_signals[] = {SIGSEGV, SIGABRT, SIGTERM, SIGINT};
#define N_FATAL (sizeof(fatal_signals) / sizeof(fatal_signals[0]))
static struct sigaction old_fatal[N_FATAL];
static int old_fatal_saved[N_FATAL];

/* Present only in sanitizer builds; called before the sanitizer exits. */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

long long qemu_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_sigchld(int sig)
{
    (void)sig;
}

static void on_fatal(int sig, siginfo_t *info, void *ucontext)
{
    size_t i;

    (void)ucontext;
    /* A forked child that has not exec'd yet must not kill its siblings. */
    if (getpid() == harness_pid) {
        for (i = 0; i < MAX_LIVE; i++)
            if (live_pid[i] > 0)
                kill((pid_t)live_pid[i], SIGKILL);
    }
    for (i = 0; i < N_FATAL; i++)
        if (fatal_signals[i] == sig && old_fatal_saved[i])
            sigaction(sig, &old_fatal[i], NULL);
    /* A real fault recurs on return and reaches the previous handler (the
     * default, or a sanitizer's, which then reports where it happened). */
    if (sig == SIGSEGV && info != NULL && info->si_code > 0)
        return;
    raise(sig);
}

/*
 * Waits with a deadline until waitpid(pid, flags) reports a change of pid
 * (flags 0: exit; WUNTRACED: stop or exit; WCONTINUED: continue or
 * exit).  SIGCHLD, raised for each of them, is taken only inside ppoll().
 */
static int wait_child(pid_t pid, int flags, int timeout_ms, int *ret_status)
{
    long long deadline = qemu_now_ms() + timeout_ms;
    sigset_t waitmask = orig_mask;

    sigdelset(&waitmask, SIGCHLD);
    for (;;) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG | flags);
        long long left;
        struct timespec ts;

        if (r == pid) {
            *ret_status = status;
            return 0;
        }
        if (r < 0 && errno != EINTR)
            return -errno;
        left = deadline - qemu_now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        ts.tv_sec = left / 1000;
        ts.tv_nsec = (left % 1000) * 1000000;
        /* Returns early (EINTR) when SIGCHLD arrives, even if it arrived
         * between waitpid() and here: it stayed pending while blocked. */
        ppoll(NULL, 0, &ts, &waitmask);
    }
}

static int reap_pid(pid_t pid, int timeout_ms, int *ret_status)
{
    return wait_child(pid, 0, timeout_ms, ret_status);
}

static void remove_dir(const char *dir)
{
    DIR *d;
    struct dirent *e;
    char path[QEMU_PATH_MAX * 2];

    if (dir[0] == '\0')
        return;
    d = opendir(dir);
    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
            if (unlink(path) < 0)
                printf("# cannot remove %s: %s\n", path, strerror(errno));
        }
        closedir(d);
    }
    if (rmdir(dir) < 0 && errno != ENOENT)
        printf("# cannot remove %s: %s\n", dir, strerror(errno));
}

/* At exit (and on sanitizer death): kill and reap whatever is left. */
static void cleanup_all(void)
{
    size_t i;
    int status;

    if (getpid() != harness_pid)
        return;
    for (i = 0; i < MAX_LIVE; i++) {
        pid_t pid = (pid_t)live_pid[i];

        if (pid > 0) {
            kill(pid, SIGKILL);
            if (reap_pid(pid, 10000, &status) < 0)
                printf("# QEMU pid %d could not be reaped\n", (int)pid);
            live_pid[i] = 0;
        }
        if (live_used[i]) {
            remove_dir(live_dir[i]);
            live_used[i] = 0;
        }
    }
}

static void setup_once(void)
{
    struct sigaction sa;
    sigset_t block;
    size_t i;
    int fd;

    if (harness_ready)
        return;
    harness_ready = 1;
    harness_pid = getpid();

    /* Keep 0, 1 and 2 taken, so no socket we make lands there and gets
     * clobbered by the child's dup2(). */
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
    }
    if (fd > 2)
        close(fd);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigchld;
    sa.sa_flags = 0; /* stops and continues raise SIGCHLD too (qemu_pause()) */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &orig_mask);

    for (i = 0; i < N_FATAL; i++) {
        struct sigaction old;

        if (sigaction(fatal_signals[i], NULL, &old) < 0 || old.sa_handler == SIG_IGN)
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_fatal;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        if (sigaction(fatal_signals[i], &sa, &old_fatal[i]) == 0)
            old_fatal_saved[i] = 1;
    }
    atexit(cleanup_all);
    if (__sanitizer_set_death_callback != NULL)
        __sanitizer_set_death_callback(cleanup_all);
}

int qemu_path(const qemu_instance *q, const char *name, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%s", q->dir, name);

    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

int qemu_prepare(qemu_instance *q)
{
    const char *tmp = getenv("TMPDIR");
    char tmpl[QEMU_PATH_MAX];
    size_t i;

    memset(q, 0, sizeof(*q));
    q->client_fd = -1;
    q->slot = -1;
    setup_once();

    /* Socket paths inside the directory must fit in sun_path (108). */
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(tmpl, sizeof(tmpl), "%s/libqmp-qemu-XXXXXX", tmp);
    if (mkdtemp(tmpl) == NULL) {
        int e = errno;

        printf("# mkdtemp(%s): %s\n", tmpl, strerror(e));
        return -e;
    }
    snprintf(q->dir, sizeof(q->dir), "%s", tmpl);
    qemu_path(q, "qemu.log", q->log_path, sizeof(q->log_path));

    for (i = 0; i < MAX_LIVE; i++) {
        if (!live_used[i]) {
            live_used[i] = 1;
            live_pid[i] = 0;
            snprintf(live_dir[i], sizeof(live_dir[i]), "%s", q->dir);
            q->slot = (int)i;
            return 0;
        }
    }
    printf("# too many QEMU instances at once (at most %d)\n", MAX_LIVE);
    remove_dir(q->dir);
    q->dir[0] = '\0';
    return -EMFILE;
}

static int find_qemu(char *buf, size_t size)
{
    const char *path = getenv("PATH");
    const char *p;

    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path;;) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        struct stat st;
        int n;

        if (len == 0)
            n = snprintf(buf, size, "./%s", QEMU_BINARY);
        else
            n = snprintf(buf, size, "%.*s/%s", (int)len, p, QEMU_BINARY);
        if (n > 0 && (size_t)n < size && stat(buf, &st) == 0 && S_ISREG(st.st_mode) &&
            access(buf, X_OK) == 0)
            return 0;
        if (end == NULL)
            break;
        p = end + 1;
    }
    printf("# %s not found on PATH (%s): the qemu suite needs a real QEMU "
           "(Debian: apt-get install qemu-system-x86)\n",
           QEMU_BINARY, path);
    return -ENOENT;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa;
    int fd, e;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        printf("# socket path too long: %s\n", path);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0)
        goto fail;
    return fd;
fail:
    e = errno;
    printf("# listening on %s: %s\n", path, strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}

static int listen_tcp(int *ret_port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd, e;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        goto fail;
    *ret_port = ntohs(sa.sin_port);
    return fd;
fail:
    e = errno;
    printf("# listening on 127.0.0.1: %s\n", strerror(e));
    if (fd >= 0)
        close(fd);
    return -e;
}

/* Argument vector built before fork(), so the child only execs. */
#define MAX_ARGV (16 + 4 * (1 + QEMU_MAX_EXTRA_MONITORS) + QEMU_MAX_EXTRA_ARGS)
typedef struct argv_builder {
    char *argv[MAX_ARGV + 1];
    int argc;
    char store[2 * (1 + QEMU_MAX_EXTRA_MONITORS)][QEMU_PATH_MAX];
    int n_store;
} argv_builder;

static void arg_add(argv_builder *b, const char *s)
{
    if (b->argc < MAX_ARGV)
        b->argv[b->argc++] = (char *)s;
    b->argv[b->argc] = NULL;
}

static const char *arg_fmt(argv_builder *b, const char *fmt, ...) QMP_PRINTF(2, 3);

static const char *arg_fmt(argv_builder *b, const char *fmt, ...)
{
    va_list ap;
    char *s = b->store[b->n_store++];

    va_start(ap, fmt);
    vsnprintf(s, QEMU_PATH_MAX, fmt, ap);
    va_end(ap);
    return s;
}

static void add_monitor(argv_builder *b, const char *id, int fd, int server, int pretty)
{
    arg_add(b, "-chardev");
    arg_add(b, arg_fmt(b, "socket,id=%s,fd=%d%s", id, fd, server ? ",server=on,wait=off" : ""));
    arg_add(b, "-mon");
    arg_add(b, arg_fmt(b, "chardev=%s,mode=control%s", id, pretty ? ",pretty=on" : ""));
}

/* In the child between fork() and exec(): async-signal-safe calls only. */
static void child_exec(const char *qemu, char **argv, const int *pass, int n_pass, int devnull,
                       int logfd, int errfd, pid_t parent)
{
    int i, e;

    sigprocmask(SIG_SETMASK, &orig_mask, NULL);
    /* QEMU must not outlive the test process, even when it is killed. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        goto fail;
    if (getppid() != parent)
        _exit(126);
    if (dup2(devnull, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
        goto fail;
    for (i = 0; i < n_pass; i++)
        if (fcntl(pass[i], F_SETFD, 0) < 0)
            goto fail;
    execv(qemu, argv);
fail:
    e = errno;
    if (write(errfd, &e, sizeof(e)) < 0) {
        /* Nothing more to do; the parent sees a short read. */
    }
    _exit(127);
}

int qemu_launch(qemu_instance *q, const qemu_opts *opts)
{
    static const qemu_opts defaults;
    char qemu[QEMU_PATH_MAX];
    char path[QEMU_PATH_MAX];
    argv_builder b;
    int pass[1 + QEMU_MAX_EXTRA_MONITORS];
    int n_pass = 0, devnull = -1, logfd = -1, errpipe[2] = {-1, -1};
    int rc, i, child_errno;
    ssize_t n;
    pid_t pid;

    if (opts == NULL)
        opts = &defaults;
    if (q->dir[0] == '\0') {
        printf("# qemu_launch() without qemu_prepare()\n");
        return -EINVAL;
    }
    if (opts->n_extra_monitors < 0 || opts->n_extra_monitors > QEMU_MAX_EXTRA_MONITORS)
        return -EINVAL;
    rc = find_qemu(qemu, sizeof(qemu));
    if (rc < 0)
        return rc;

    memset(&b, 0, sizeof(b));
    arg_add(&b, qemu);
    arg_add(&b, "-nodefaults");
    arg_add(&b, "-no-user-config");
    arg_add(&b, "-display");
    arg_add(&b, "none");
    arg_add(&b, "-accel");
    arg_add(&b, "tcg");
    arg_add(&b, "-M");
    arg_add(&b, opts->machine ? opts->machine : "none");

    switch (opts->monitor) {
    case QEMU_MON_UNIX:
        qemu_path(q, "qmp.sock", path, sizeof(path));
        rc = listen_unix(path);
        if (rc < 0)
            goto out;
        pass[n_pass++] = rc;
        snprintf(q->address, sizeof(q->address), "unix:%s", path);
        add_monitor(&b, "mon0", rc, 1, opts->pretty);
        break;
    case QEMU_MON_TCP:
        rc = listen_tcp(&q->tcp_port);
        if (rc < 0)
            goto out;
        pass[n_pass++] = rc;
        snprintf(q->address, sizeof(q->address), "127.0.0.1:%d", q->tcp_port);
        add_monitor(&b, "mon0", rc, 1, opts->pretty);
        break;
    case QEMU_MON_SOCKETPAIR: {
        int sv[2];

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
            rc = -errno;
            printf("# socketpair: %s\n", strerror(errno));
            goto out;
        }
        q->client_fd = sv[0];
        pass[n_pass++] = sv[1];
        add_monitor(&b, "mon0", sv[1], 0, opts->pretty);
        break;
    }
    case QEMU_MON_NONE:
        break;
    }

    for (i = 0; i < opts->n_extra_monitors; i++) {
        char name[32];

        snprintf(name, sizeof(name), "mon%d.sock", i + 1);
        qemu_path(q, name, path, sizeof(path));
        rc = listen_unix(path);
        if (rc < 0)
            goto out;
        pass[n_pass++] = rc;
        snprintf(q->extra_address[i], sizeof(q->extra_address[i]), "unix:%s", path);
        snprintf(name, sizeof(name), "mon%d", i + 1);
        add_monitor(&b, name, rc, 1, opts->extra_pretty[i]);
    }
    for (i = 0; i < QEMU_MAX_EXTRA_ARGS && opts->extra_args[i] != NULL; i++)
        arg_add(&b, opts->extra_args[i]);

    devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    logfd = open(q->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (devnull < 0 || logfd < 0 || pipe2(errpipe, O_CLOEXEC) < 0) {
        rc = -errno;
        printf("# preparing QEMU's stdio: %s\n", strerror(errno));
        goto out;
    }

    printf("#");
    for (i = 0; i < b.argc; i++)
        printf(" %s", b.argv[i]);
    printf("\n");
    fflush(stdout);

    pid = fork();
    if (pid < 0) {
        rc = -errno;
        printf("# fork: %s\n", strerror(errno));
        goto out;
    }
    if (pid == 0)
        child_exec(qemu, b.argv, pass, n_pass, devnull, logfd, errpipe[1], harness_pid);
    q->pid = pid;
    if (q->slot >= 0)
        live_pid[q->slot] = pid;

    close(errpipe[1]);
    errpipe[1] = -1;
    do
        n = read(errpipe[0], &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    if (n != 0) {
        rc = n == (ssize_t)sizeof(child_errno) ? -child_errno : -EIO;
        printf("# starting %s failed: %s\n", qemu, strerror(-rc));
        goto out;
    }
    rc = 0;

out:
    /* Only QEMU keeps the listening sockets, so if it dies a connect fails
     * at once instead of waiting in the backlog. */
    for (i = 0; i < n_pass; i++)
        close(pass[i]);
    if (devnull >= 0)
        close(devnull);
    if (logfd >= 0)
        close(logfd);
    if (errpipe[0] >= 0)
        close(errpipe[0]);
    if (errpipe[1] >= 0)
        close(errpipe[1]);
    return rc;
}

int qemu_start(qemu_instance *q, const qemu_opts *opts)
{
    int rc = qemu_prepare(q);

    if (rc < 0)
        return rc;
    return qemu_launch(q, opts);
}

int qemu_wait_exit(qemu_instance *q, int timeout_ms)
{
    int rc;

    if (q->pid <= 0)
        return -ECHILD;
    if (q->reaped)
        return 0;
    rc = reap_pid(q->pid, timeout_ms, &q->status);
    if (rc == 0) {
        q->reaped = 1;
        if (q->slot >= 0)
            live_pid[q->slot] = 0;
    }
    return rc;
}

/* Records an exit seen while waiting for something else. */
static int note_exit(qemu_instance *q, int status, const char *what)
{
    if (!WIFEXITED(status) && !WIFSIGNALED(status))
        return 0;
    q->reaped = 1;
    q->status = status;
    if (q->slot >= 0)
        live_pid[q->slot] = 0;
    printf("# QEMU exited while %s\n", what);
    return -ESRCH;
}

int qemu_pause(qemu_instance *q)
{
    int status, rc;

    if (q->pid <= 0 || q->reaped)
        return -ESRCH;
    if (kill(q->pid, SIGSTOP) < 0)
        return -errno;
    rc = wait_child(q->pid, WUNTRACED, 10000, &status);
    if (rc < 0) {
        printf("# QEMU did not stop: %s\n", strerror(-rc));
        return rc;
    }
    return WIFSTOPPED(status) ? 0 : note_exit(q, status, "being stopped");
}

int qemu_resume(qemu_instance *q)
{
    int status, rc;

    if (q->pid <= 0 || q->reaped)
        return -ESRCH;
    if (kill(q->pid, SIGCONT) < 0)
        return -errno;
    rc = wait_child(q->pid, WCONTINUED, 10000, &status);
    if (rc < 0) {
        printf("# QEMU did not continue: %s\n", strerror(-rc));
        return rc;
    }
    return WIFCONTINUED(status) ? 0 : note_exit(q, status, "being continued");
}

static void print_status(const char *what, int status)
{
    if (WIFEXITED(status))
        printf("# %s: exit status %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("# %s: killed by signal %d\n", what, WTERMSIG(status));
}

void qemu_stop(qemu_instance *q, int dump_log)
{
    if (q->pid > 0 && !q->reaped) {
        int status;
        pid_t r = waitpid(q->pid, &status, WNOHANG);

        if (r == q->pid) {
            q->reaped = 1;
            q->status = status;
            if (q->slot >= 0)
                live_pid[q->slot] = 0;
            if (dump_log)
                print_status("QEMU had exited by itself", status);
        } else {
            kill(q->pid, SIGKILL);
            if (qemu_wait_exit(q, 10000) < 0)
                printf("# QEMU pid %d did not die after SIGKILL\n", (int)q->pid);
        }
    }
    if (dump_log && q->pid > 0 && q->dir[0] != '\0')
        qemu_dump_log(q);
    if (q->client_fd >= 0) {
        close(q->client_fd);
        q->client_fd = -1;
    }
    if (q->dir[0] != '\0') {
        remove_dir(q->dir);
        q->dir[0] = '\0';
    }
    if (q->slot >= 0 && (q->reaped || q->pid <= 0)) {
        live_used[q->slot] = 0;
        live_pid[q->slot] = 0;
        q->slot = -1;
    }
}

void qemu_dump_log(const qemu_instance *q)
{
    char line[1024];
    FILE *f = fopen(q->log_path, "r");
    int any = 0;

    if (f == NULL) {
        printf("# qemu: no log (%s)\n", strerror(errno));
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);

        if (len > 0 && line[len - 1] == '\n')
            line[len - 1] = '\0';
        printf("# qemu: %s\n", line);
        any = 1;
    }
    if (!any)
        printf("# qemu: (QEMU wrote nothing to stdout or stderr)\n");
    fclose(f);
}

void qemu_print_error(const char *what, int rc, const qmp_error *err)
{
    printf("# %s: returned %d (%s)", what, rc, rc < 0 ? strerror(-rc) : "no error");
    if (err != NULL)
        printf(", category %s, class \"%s\": %s", qmp_error_category_name(err->category),
               err->class_name, err->message);
    printf("\n");
}

/* The first messages of a connection, printed when connecting fails. */
typedef struct connect_trace {
    int n;
    char msg[6][256];
} connect_trace;

static void on_connect_trace(qmp_trace_direction dir, const char *data, size_t len, void *userdata)
{
    connect_trace *t = userdata;

    if (t->n < (int)(sizeof(t->msg) / sizeof(t->msg[0])))
        snprintf(t->msg[t->n++], sizeof(t->msg[0]), "%s %.*s", dir == QMP_TRACE_IN ? "<-" : "->",
                 (int)(len > 200 ? 200 : len), data);
}

int qemu_connect(const char *address, int connect_timeout_ms, qmp_client **ret, qmp_error *err)
{
    connect_trace trace;
    int i;
    qmp_error local = QMP_ERROR_INIT;
    qmp_client *c = NULL;
    int rc;

    if (err == NULL)
        err = &local;
    rc = qmp_client_new(&c);
    if (rc < 0) {
        qemu_print_error("qmp_client_new", rc, NULL);
        return rc;
    }
    if (connect_timeout_ms != 0) {
        rc = qmp_client_set_connect_timeout(c, connect_timeout_ms);
        if (rc < 0) {
            qemu_print_error("qmp_client_set_connect_timeout", rc, NULL);
            qmp_client_unref(c);
            return rc;
        }
    }
    trace.n = 0;
    qmp_client_set_trace(c, on_connect_trace, &trace);
    rc = qmp_client_connect(c, address, err);
    qmp_client_set_trace(c, NULL, NULL);
    if (rc < 0) {
        char what[QEMU_PATH_MAX + 32];

        snprintf(what, sizeof(what), "qmp_client_connect(%s)", address);
        qemu_print_error(what, rc, err);
        for (i = 0; i < trace.n; i++)
            printf("#   %s\n", trace.msg[i]);
        qmp_client_unref(c);
        return rc;
    }
    *ret = c;
    return 0;
}

json_object *qemu_exec(qmp_client *c, const char *command, json_object *args, int *failed)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    int rc = qmp_client_execute(c, command, args, &ret, &err);

    if (rc < 0) {
        qemu_print_error(command, rc, &err);
        *failed = 1;
        return NULL;
    }
    return ret;
}

json_object *qemu_json_get(json_object *o, const char *key)
{
    json_object *v = NULL;

    if (o == NULL || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

const char *qemu_json_str(json_object *o, const char *key)
{
    json_object *v = qemu_json_get(o, key);

    return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/*
 * Proves a freshly started QEMU's extra monitor ready with one handshake.
 * QEMU listens before it has finished setting up each monitor, and a
 * client that talks to a monitor that early has been seen to get the
 * greeting but never an answer to qmp_capabilities.  The tests connect at
 * once (the listening socket is passed to QEMU), so the harness does one
 * handshake per extra monitor first, tried again while it times out.
 */
static int probe_monitor(const char *address)
{
    int rc = -ETIMEDOUT;

    for (int attempt = 0; attempt < 4 && rc == -ETIMEDOUT; attempt++) {
        qmp_client *p = NULL;
        qmp_error e = QMP_ERROR_INIT;
        rc = qemu_connect(address, 3000, &p, &e);
        qmp_client_unref(p);
    }
    return rc;
}

void qemu_run(const qemu_opts *opts, qemu_test_fn fn, int *failed)
{
    qemu_instance q;
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;
    int rc;

    rc = qemu_start(&q, opts);
    if (rc < 0) {
        *failed = 1;
        goto out;
    }
    if (opts == NULL || (!opts->no_connect && opts->monitor != QEMU_MON_NONE)) {
        if (opts != NULL && opts->monitor == QEMU_MON_SOCKETPAIR) {
            rc = qmp_client_new(&c);
            if (rc == 0) {
                /* The client owns the descriptor from here on, even on failure. */
                int fd = q.client_fd;

                q.client_fd = -1;
                rc = qmp_client_connect_fd(c, fd, &err);
                if (rc < 0) {
                    qemu_print_error("qmp_client_connect_fd", rc, &err);
                    c = qmp_client_unref(c);
                }
            } else {
                qemu_print_error("qmp_client_new", rc, NULL);
            }
        } else {
            rc = qemu_connect(q.address, 0, &c, &err);
        }
        if (rc < 0) {
            *failed = 1;
            goto out;
        }
    }
    for (int i = 0; opts != NULL && i < opts->n_extra_monitors; i++) {
        if (probe_monitor(q.extra_address[i]) < 0) {
            *failed = 1;
            goto out;
        }
    }
    fn(&q, c);
out:
    qmp_client_unref(c);
    qemu_stop(&q, *failed);
}
