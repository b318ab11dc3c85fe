/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Throwaway QEMU instances for the tests of the 'qemu' suite.
 *
 * Each instance runs qemu-system-x86_64 (found on PATH; a missing binary
 * fails the test, it is never skipped) with -nodefaults -no-user-config
 * -display none -accel tcg, in a private directory made by mkdtemp()
 * under $TMPDIR or /tmp.  QEMU's stdout and stderr go to DIR/qemu.log,
 * printed when the test failed.
 *
 * Readiness without sleeping: the harness binds and listens on the
 * monitor's socket itself and hands the listening descriptor to QEMU
 * (-chardev socket,fd=N,server=on,wait=off), so a client may connect as
 * soon as qemu_start() returns; the kernel queues the connection until
 * QEMU accepts it.
 *
 * QEMU is always killed by pid: by qemu_stop(), at exit, from a handler
 * for SIGSEGV, SIGABRT, SIGTERM and SIGINT, from the sanitizers' death
 * callback, and by the kernel (PR_SET_PDEATHSIG) if the test dies anyway.
 *
 * Connecting that early has one known effect: rarely (about once in
 * a few thousand starts, under load) QEMU 7.2 sends the greeting twice,
 * because monitor_qmp_setup_handlers_bh() in its I/O thread and the main
 * thread's accept both deliver CHR_EVENT_OPENED.  A client must cope.
 *
 * The harness blocks SIGCHLD in the test process and takes it only
 * while waiting for QEMU (qemu_wait_exit(), qemu_pause(), qemu_resume()),
 * so library calls never see EINTR from it.
 */
#ifndef QMP_TEST_QEMU_HARNESS_H
#define QMP_TEST_QEMU_HARNESS_H

#include <sys/types.h>

#include <qmp/qmp.h>

/* Deadlines used by the tests, generous enough for valgrind. */
#define QEMU_TEST_EVENT_TIMEOUT_MS 20000
#define QEMU_TEST_EXIT_TIMEOUT_MS 20000

#define QEMU_PATH_MAX 256
#define QEMU_MAX_EXTRA_MONITORS 4
#define QEMU_MAX_EXTRA_ARGS 32

/* How the primary monitor (chardev mon0) is reached. */
typedef enum qemu_monitor_kind {
    QEMU_MON_UNIX = 0,   /* listening unix socket DIR/qmp.sock, passed by fd */
    QEMU_MON_TCP,        /* listening TCP socket on 127.0.0.1, port chosen by the kernel */
    QEMU_MON_SOCKETPAIR, /* one end of a socketpair; the other is qemu_instance.client_fd */
    QEMU_MON_NONE        /* no primary monitor: the test adds its own with extra_args */
} qemu_monitor_kind;

typedef struct qemu_opts {
    const char *machine; /* -M value; NULL means "none" */
    qemu_monitor_kind monitor;
    int pretty;           /* primary monitor with pretty=on */
    int n_extra_monitors; /* more control monitors on DIR/monN.sock (N from 1) */
    int extra_pretty[QEMU_MAX_EXTRA_MONITORS];   /* pretty=on for extra monitor i */
    const char *extra_args[QEMU_MAX_EXTRA_ARGS]; /* appended; ends at the first NULL */
    int no_connect;                              /* qemu_run(): do not connect a client */
} qemu_opts;

typedef struct qemu_instance {
    pid_t pid;                        /* 0 when not started */
    int reaped;                       /* 1 once waitpid() collected it */
    int status;                       /* wait status, valid when reaped */
    char dir[QEMU_PATH_MAX];          /* private directory, "" when none */
    char log_path[QEMU_PATH_MAX];     /* QEMU's stdout and stderr */
    char address[QEMU_PATH_MAX + 16]; /* primary monitor address ("unix:..." or "127.0.0.1:PORT") */
    int tcp_port;                     /* QEMU_MON_TCP: the port */
    int client_fd;                    /* QEMU_MON_SOCKETPAIR: our end (-1 once taken) */
    char extra_address[QEMU_MAX_EXTRA_MONITORS][QEMU_PATH_MAX + 16];
    int slot; /* internal: index in the cleanup registry, -1 when none */
} qemu_instance;

/*
 * Creates the private directory (mode 0700) and registers it for cleanup;
 * no process yet.  Use it when something must exist before QEMU starts
 * (a listener QEMU connects to).  Returns 0 or a negative errno, with a
 * TAP diagnostic printed.
 */
int qemu_prepare(qemu_instance *q);

/*
 * Starts QEMU in a prepared instance.  Returns once exec succeeded (a
 * failing exec is reported, not left to a later timeout).  Returns 0 or a
 * negative errno (-ENOENT when qemu-system-x86_64 is not on PATH), with a
 * TAP diagnostic printed.
 */
int qemu_launch(qemu_instance *q, const qemu_opts *opts);

/* qemu_prepare() then qemu_launch(); opts may be NULL for the defaults. */
int qemu_start(qemu_instance *q, const qemu_opts *opts);

/* Writes DIR/name into buf.  Returns 0 or -ENAMETOOLONG. */
int qemu_path(const qemu_instance *q, const char *name, char *buf, size_t size);

/*
 * Waits up to timeout_ms for QEMU to exit by itself and reaps it (status
 * in q->status).  Returns 0, -ETIMEDOUT, or another negative errno.
 */
int qemu_wait_exit(qemu_instance *q, int timeout_ms);

/*
 * Freezes QEMU with SIGSTOP and returns once the kernel reports it
 * stopped, so it reads and answers nothing until qemu_resume(), which
 * sends SIGCONT and waits for the kernel to report it running.  Return 0
 * or a negative errno (-ESRCH when QEMU is gone).
 */
int qemu_pause(qemu_instance *q);
int qemu_resume(qemu_instance *q);

/*
 * Kills QEMU (SIGKILL) unless it exited already, reaps it, prints its log
 * when dump_log is set, closes client_fd and removes the private
 * directory.  Safe on an instance that failed to start or was stopped.
 */
void qemu_stop(qemu_instance *q, int dump_log);

/* Prints QEMU's log as TAP diagnostics. */
void qemu_dump_log(const qemu_instance *q);

/* Prints "# what: returned RC (category): message" for a libqmp failure. */
void qemu_print_error(const char *what, int rc, const qmp_error *err);

/*
 * Creates a client and connects it to address; connect_timeout_ms 0 keeps
 * the default.  Returns 0 or the negative errno of the failing call, with
 * a diagnostic printed; err (may be NULL) receives the details.
 */
int qemu_connect(const char *address, int connect_timeout_ms, qmp_client **ret, qmp_error *err);

/*
 * Executes a command that must succeed and returns its result (a new
 * reference; NULL for a JSON null).  On failure prints the error, sets
 * *failed and returns NULL.
 */
json_object *qemu_exec(qmp_client *c, const char *command, json_object *args, int *failed);

/* Member key of object o (borrowed), NULL when o is NULL or lacks it. */
json_object *qemu_json_get(json_object *o, const char *key);

/* As qemu_json_get() for a string member; NULL when not a string. */
const char *qemu_json_str(json_object *o, const char *key);

/* Milliseconds of CLOCK_MONOTONIC. */
long long qemu_now_ms(void);

/*
 * Runs one test case against a fresh QEMU: starts it with opts (NULL for
 * the defaults), connects a client to the primary monitor unless
 * opts->no_connect or QEMU_MON_NONE (c is then NULL), calls fn, then
 * unrefs the client and stops QEMU, whatever fn did.  A failing start or
 * connect sets *failed and skips fn; QEMU's log is printed when *failed
 * is set at the end.
 */
typedef void (*qemu_test_fn)(qemu_instance *q, qmp_client *c);
void qemu_run(const qemu_opts *opts, qemu_test_fn fn, int *failed);

#endif /* QMP_TEST_QEMU_HARNESS_H */
