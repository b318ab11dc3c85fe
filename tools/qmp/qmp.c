/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qmp: runs one QMP command against a running QEMU and prints its result.
 *
 *   qmp [OPTIONS] COMMAND [ARGS...]
 *   qmp [OPTIONS] hmp 'info version'
 *   qmp [OPTIONS] events [--count N] [--timeout MS]
 *
 * The tool uses only libqmp's public API, exactly as any application
 * would: read it as an example of the blocking client.  Exit codes are one
 * per error category (see exit_code() and qmp(1)).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

/* Exit codes, documented in qmp(1). */
enum {
    EXIT_OK = 0,
    EXIT_QMP_ERROR = 1,    /* QEMU answered with an error reply */
    EXIT_USAGE = 2,        /* bad command line or invalid argument */
    EXIT_CONNECT = 3,      /* could not connect */
    EXIT_GREETING = 4,     /* bad greeting or capability negotiation */
    EXIT_TIMEOUT = 5,      /* a deadline passed */
    EXIT_DISCONNECTED = 6, /* QEMU closed the connection */
    EXIT_PROTOCOL = 7,     /* QEMU broke the protocol */
    EXIT_LIMIT = 8,        /* a message exceeded a limit */
    EXIT_SYSTEM = 9,       /* out of memory or another system error */
    EXIT_CANCELLED = 10,   /* a call was cancelled */
};

struct options {
    const char *address;
    int timeout_ms; /* per command and per awaited event */
    int connect_timeout_ms;
    int pretty;
    int trace;
    int verbose;      /* 1: info, 2 or more: debug */
    int print_events; /* -e */
    int oob;
    const char **wait_events; /* -w NAME..., pointers into argv */
    size_t n_wait_events;
};

static const char usage_text[] =
    "Usage: qmp [OPTIONS] COMMAND [ARGS...]\n"
    "       qmp [OPTIONS] hmp 'HMP COMMAND'\n"
    "       qmp [OPTIONS] events [--count N] [--timeout MS]\n"
    "\n"
    "Runs one QMP command on a running QEMU and prints its return value as JSON.\n"
    "ARGS is one JSON object ('{\"id\": \"x\"}' or \"{'id': 'x'}\") or KEY=VALUE pairs;\n"
    "a VALUE that parses as JSON is taken as such, anything else as a string.\n"
    "\n"
    "Options:\n"
    "  -s, --socket ADDRESS      QMP socket: PATH, unix:PATH, HOST:PORT, tcp:HOST:PORT,\n"
    "                            [IPV6]:PORT or fd:N (default: $QMP_SOCKET)\n"
    "  -t, --timeout MS          deadline of the command and of each awaited event\n"
    "                            (default 30000; 0 waits forever)\n"
    "      --connect-timeout MS  deadline of connect, greeting and negotiation\n"
    "                            (default 10000; 0 waits forever)\n"
    "  -p, --pretty              indent the JSON output\n"
    "  -w, --wait-event NAME     after the reply, wait for event NAME and print it\n"
    "                            (repeatable)\n"
    "  -e, --events              also print the events that arrived meanwhile\n"
    "      --oob                 run the command out-of-band (exec-oob)\n"
    "      --trace               print every message on stderr (-> sent, <- received)\n"
    "  -v, --verbose             print the library's log on stderr (twice: debug)\n"
    "  -h, --help                show this help\n"
    "  -V, --version             show the version\n"
    "\n"
    "Exit status: 0 ok, 1 QMP error reply, 2 usage, 3 connect, 4 greeting or\n"
    "negotiation, 5 timeout, 6 disconnected, 7 protocol, 8 limit, 9 system error,\n"
    "10 cancelled.  See qmp(1).\n";

static int usage_error(const char *fmt, ...) QMP_PRINTF(1, 2);

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("qmp: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'qmp --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

static int exit_code(qmp_error_category category)
{
    switch (category) {
    case QMP_ERR_NONE:
        return EXIT_OK;
    case QMP_ERR_COMMAND:
        return EXIT_QMP_ERROR;
    case QMP_ERR_INVALID:
        return EXIT_USAGE;
    case QMP_ERR_CONNECT:
        return EXIT_CONNECT;
    case QMP_ERR_GREETING:
    case QMP_ERR_NEGOTIATION:
        return EXIT_GREETING;
    case QMP_ERR_TIMEOUT:
        return EXIT_TIMEOUT;
    case QMP_ERR_DISCONNECTED:
        return EXIT_DISCONNECTED;
    case QMP_ERR_PROTOCOL:
        return EXIT_PROTOCOL;
    case QMP_ERR_LIMIT:
        return EXIT_LIMIT;
    case QMP_ERR_CANCELLED:
        return EXIT_CANCELLED;
    case QMP_ERR_NOMEM:
    case QMP_ERR_SYSTEM:
        break;
    }
    return EXIT_SYSTEM;
}

/* Prints a failed call's error as one line and returns its exit code. */
static int report(int code, const qmp_error *err)
{
    if (err->category == QMP_ERR_COMMAND)
        fprintf(stderr, "qmp: %s: %s\n", err->class_name, err->message);
    else
        fprintf(stderr, "qmp: %s\n", err->message[0] ? err->message : strerror(-code));
    /* A library that forgot to fill err must not turn a failure into 0. */
    return err->category == QMP_ERR_NONE ? EXIT_SYSTEM : exit_code(err->category);
}

static int out_of_memory(void)
{
    fputs("qmp: out of memory\n", stderr);
    return EXIT_SYSTEM;
}

/* Milliseconds: a non-negative integer; 0 means no deadline. */
static int parse_ms(const char *text, const char *what, int *ret_ms)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 0 || v > INT_MAX)
        return usage_error("invalid %s '%s': expected milliseconds (0 for none)", what, text);
    *ret_ms = v == 0 ? QMP_TIMEOUT_INFINITE : (int)v;
    return EXIT_OK;
}

/* ------------------------------------------------------------------ output */

/*
 * json-c's pretty printer spreads an empty object or array over two lines;
 * this writes them as {} and [].  A raw newline never occurs inside a
 * serialised string, so a bracket followed by one is always structural.
 */
static void put_pretty(const char *s)
{
    while (*s) {
        if ((*s == '{' || *s == '[') && s[1] == '\n') {
            const char *p = s + 2 + strspn(s + 2, " ");

            if (*p == (*s == '{' ? '}' : ']')) {
                putchar(*s);
                putchar(*p);
                s = p + 1;
                continue;
            }
        }
        putchar(*s++);
    }
    putchar('\n');
}

static int print_json(json_object *value, int pretty)
{
    int flags = JSON_C_TO_STRING_NOSLASHESCAPE;
    const char *text;

    flags |= pretty ? JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED : JSON_C_TO_STRING_PLAIN;
    /* A NULL value (JSON null) prints as "null". */
    text = json_object_to_json_string_ext(value, flags);
    if (!text)
        return out_of_memory();
    if (pretty)
        put_pretty(text);
    else
        puts(text);
    return EXIT_OK;
}

/* Events are printed whole ({"event", "data", "timestamp"}), one per line
 * unless --pretty, flushed at once so that a pipe sees them as they come. */
static int print_event(qmp_event *ev, int pretty)
{
    json_object *obj = qmp_event_to_json(ev);
    int r;

    if (!obj)
        return out_of_memory();
    r = print_json(obj, pretty);
    json_object_put(obj);
    fflush(stdout);
    return r;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * HMP output is text with CR LF line ends; it is printed with LF only.
 * human-monitor-command succeeds even when the HMP command failed, so
 * the text is checked for the failure messages HMP prints.
 */
static int print_hmp(json_object *value)
{
    const char *text;
    size_t i, len;

    if (!json_object_is_type(value, json_type_string))
        return print_json(value, 0);
    text = json_object_get_string(value);
    if (starts_with(text, "Error: ") || starts_with(text, "unknown command: ")) {
        if (starts_with(text, "Error: "))
            text += strlen("Error: ");
        len = strcspn(text, "\r\n");
        fprintf(stderr, "qmp: hmp: %.*s\n", (int)len, text);
        return EXIT_QMP_ERROR;
    }
    for (i = 0; text[i]; i++) {
        if (!(text[i] == '\r' && text[i + 1] == '\n'))
            putchar(text[i]);
    }
    return EXIT_OK;
}

/* ------------------------------------------------------ library callbacks */

static void trace_cb(qmp_trace_direction direction, const char *data, size_t len, void *userdata)
{
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        len--;
    fputs(direction == QMP_TRACE_OUT ? "-> " : "<- ", stderr);
    fwrite(data, 1, len, stderr);
    fputc('\n', stderr);
}

static void log_cb(qmp_log_level level, const char *message, void *userdata)
{
    static const char *const names[] = {"", "error", "warning", "info", "debug"};

    fprintf(stderr, "qmp: %s: %s\n", level <= QMP_LOG_DEBUG ? names[level] : "log", message);
}

/* --------------------------------------------------------------- arguments */

/*
 * Parses the template syntax (single-quoted strings allowed).  The text
 * comes from the user, so every '%' was doubled by the caller: no
 * conversion is left and no variable argument is read.
 */
static int build_template(json_object **ret, qmp_error *err, const char *template_, ...)
{
    va_list ap;
    int r;

    va_start(ap, template_);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    r = qmp_json_vbuild(ret, err, template_, ap);
#pragma GCC diagnostic pop
    va_end(ap);
    return r;
}

/* ARGS as one JSON object: strict JSON first, then the template syntax. */
static int parse_object_arg(const char *text, json_object **ret)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *obj = NULL;
    char *escaped;
    size_t i, j;
    int r;

    r = qmp_json_parse(text, strlen(text), 0, &obj, NULL);
    if (r == -ENOMEM)
        return out_of_memory();
    if (r < 0) {
        escaped = malloc(2 * strlen(text) + 1);
        if (!escaped)
            return out_of_memory();
        for (i = j = 0; text[i]; i++) {
            escaped[j++] = text[i];
            if (text[i] == '%')
                escaped[j++] = '%';
        }
        escaped[j] = '\0';
        r = build_template(&obj, &err, escaped);
        free(escaped);
        if (r == -ENOMEM)
            return out_of_memory();
        if (r < 0)
            return usage_error("invalid JSON arguments: %s", err.message);
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return usage_error("the arguments must be a JSON object");
    }
    *ret = obj;
    return EXIT_OK;
}

/* ARGS as KEY=VALUE pairs; a VALUE that is valid JSON is taken as JSON. */
static int parse_pairs(char **args, int n_args, json_object **ret)
{
    json_object *obj = json_object_new_object();
    int i, r = EXIT_OK;

    if (!obj)
        return out_of_memory();
    for (i = 0; i < n_args && r == EXIT_OK; i++) {
        char *eq = strchr(args[i], '=');
        json_object *value = NULL;

        if (!eq || eq == args[i]) {
            r = usage_error("expected KEY=VALUE or one JSON object, got '%s'", args[i]);
            break;
        }
        *eq = '\0'; /* argv strings may be modified */
        if (qmp_json_parse(eq + 1, strlen(eq + 1), 0, &value, NULL) < 0) {
            value = json_object_new_string(eq + 1);
            if (!value)
                r = out_of_memory();
        }
        if (r == EXIT_OK && json_object_object_add(obj, args[i], value) < 0) {
            json_object_put(value);
            r = out_of_memory();
        }
    }
    if (r != EXIT_OK) {
        json_object_put(obj);
        return r;
    }
    *ret = obj;
    return EXIT_OK;
}

/* Builds the command's arguments: NULL for none. */
static int build_arguments(char **args, int n_args, json_object **ret)
{
    *ret = NULL;
    if (n_args == 0)
        return EXIT_OK;
    if (n_args == 1 && args[0][strspn(args[0], " \t\n\r")] == '{')
        return parse_object_arg(args[0], ret);
    return parse_pairs(args, n_args, ret);
}

/* The HMP command line: the remaining words joined by spaces. */
static int build_hmp_arguments(char **args, int n_args, json_object **ret)
{
    json_object *obj, *line;
    size_t len = 1;
    char *text;
    int i;

    if (n_args == 0)
        return usage_error("hmp needs a command, e.g. qmp hmp 'info version'");
    for (i = 0; i < n_args; i++)
        len += strlen(args[i]) + 1;
    text = calloc(1, len);
    if (!text)
        return out_of_memory();
    for (i = 0; i < n_args; i++) {
        if (i > 0)
            strcat(text, " ");
        strcat(text, args[i]);
    }
    line = json_object_new_string(text);
    free(text);
    obj = json_object_new_object();
    if (!line || !obj || json_object_object_add(obj, "command-line", line) < 0) {
        json_object_put(line);
        json_object_put(obj);
        return out_of_memory();
    }
    *ret = obj;
    return EXIT_OK;
}

/* ------------------------------------------------------------------ events */

/* Milliseconds left until deadline (a CLOCK_MONOTONIC time), at least 0. */
static int remaining_ms(const struct timespec *deadline)
{
    struct timespec now;
    long long ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (long long)(deadline->tv_sec - now.tv_sec) * 1000 +
         (deadline->tv_nsec - now.tv_nsec) / 1000000;
    return ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

static int timed_out_waiting(const char *name, int timeout_ms)
{
    fprintf(stderr, "qmp: no %s event within %d ms\n", name, timeout_ms);
    return EXIT_TIMEOUT;
}

/* Crosses name off the -w list, if it is there. */
static void take_wait(struct options *o, const char *name)
{
    size_t i;

    for (i = 0; i < o->n_wait_events; i++) {
        if (strcmp(o->wait_events[i], name) == 0) {
            o->wait_events[i] = o->wait_events[--o->n_wait_events];
            return;
        }
    }
}

/*
 * After the reply: waits for each -w event (taking it from the queue when
 * it arrived already) and, with -e, prints the other events that arrived,
 * all in arrival order.  Each wait has the command's timeout.
 */
static int handle_events(qmp_client *c, struct options *o)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    int r;

    if (!o->print_events) {
        /* Only the awaited events: let the library pick them. */
        for (size_t i = 0; i < o->n_wait_events; i++) {
            r = qmp_client_wait_event(c, o->wait_events[i], NULL, o->timeout_ms, &ev, &err);
            if (r == -ETIMEDOUT)
                return timed_out_waiting(o->wait_events[i], o->timeout_ms);
            if (r < 0)
                return report(r, &err);
            r = print_event(ev, o->pretty);
            qmp_event_unref(ev);
            if (r != EXIT_OK)
                return r;
        }
        return EXIT_OK;
    }

    /* Everything in order; wait only while some -w event is missing. */
    for (;;) {
        int waiting = o->n_wait_events > 0;

        r = qmp_client_next_event(c, waiting ? o->timeout_ms : 0, &ev, &err);
        if (r == -ETIMEDOUT)
            return timed_out_waiting(o->wait_events[0], o->timeout_ms);
        /* Draining only: an empty queue, or one emptied by a disconnect, ends it. */
        if (!waiting && r < 0 && (r == -EAGAIN || err.category == QMP_ERR_DISCONNECTED))
            return EXIT_OK;
        if (r < 0)
            return report(r, &err);
        take_wait(o, qmp_event_name(ev));
        r = print_event(ev, o->pretty);
        qmp_event_unref(ev);
        if (r != EXIT_OK)
            return r;
    }
}

/*
 * qmp events: prints events until --count of them arrived, the --timeout
 * passed, or QEMU closed the connection.
 *
 * Exit status: 0 when the count is reached; at the timeout, 0 without
 * --count (listening for a while is the request) and 5 with it (fewer
 * events than asked for); at a disconnect, 0 when a SHUTDOWN event came
 * first (QEMU quit normally) and 6 otherwise.
 */
static int run_events(qmp_client *c, const struct options *o, long count, int timeout_ms)
{
    struct timespec deadline;
    int shutdown_seen = 0, r = EXIT_OK;
    long n;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms != QMP_TIMEOUT_INFINITE) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
    }
    for (n = 0; r == EXIT_OK && (count == 0 || n < count); n++) {
        qmp_error err = QMP_ERROR_INIT;
        qmp_event *ev = NULL;
        int wait =
            timeout_ms == QMP_TIMEOUT_INFINITE ? QMP_TIMEOUT_INFINITE : remaining_ms(&deadline);

        r = qmp_client_next_event(c, wait, &ev, &err);
        if (r == -ETIMEDOUT || r == -EAGAIN) {
            if (count > 0)
                fprintf(stderr, "qmp: timed out after %d ms with %ld of %ld events\n", timeout_ms,
                        n, count);
            r = count > 0 ? EXIT_TIMEOUT : EXIT_OK;
            break;
        }
        if (r < 0) {
            r = shutdown_seen && err.category == QMP_ERR_DISCONNECTED ? EXIT_OK : report(r, &err);
            break;
        }
        if (strcmp(qmp_event_name(ev), "SHUTDOWN") == 0)
            shutdown_seen = 1;
        r = print_event(ev, o->pretty);
        qmp_event_unref(ev);
    }
    if (qmp_client_events_lost(c) > 0)
        fprintf(stderr, "qmp: warning: %llu events were lost (too many at once)\n",
                (unsigned long long)qmp_client_events_lost(c));
    return r;
}

/* Options of the events subcommand; args[0] is "events". */
static int parse_events_options(int n_args, char **args, long *ret_count, int *ret_timeout_ms)
{
    static const struct option longopts[] = {
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        {NULL, 0, NULL, 0},
    };
    int opt, r;

    *ret_count = 0;
    *ret_timeout_ms = QMP_TIMEOUT_INFINITE;
    optind = 0; /* restart getopt on the new vector */
    while ((opt = getopt_long(n_args, args, "+:n:t:", longopts, NULL)) != -1) {
        char *end;

        switch (opt) {
        case 'n':
            errno = 0;
            *ret_count = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || *ret_count <= 0)
                return usage_error("invalid count '%s': expected a positive number", optarg);
            break;
        case 't':
            r = parse_ms(optarg, "timeout", ret_timeout_ms);
            if (r != EXIT_OK)
                return r;
            break;
        case ':':
            return usage_error("option '%s' needs an argument", args[optind - 1]);
        default:
            return usage_error("unknown events option '%s'", args[optind - 1]);
        }
    }
    if (optind < n_args)
        return usage_error("unexpected argument '%s' after events", args[optind]);
    return EXIT_OK;
}

/* -------------------------------------------------------------------- main */

enum { OPT_CONNECT_TIMEOUT = 256, OPT_TRACE, OPT_OOB };

/* Parses the global options; *ret_first is the index of COMMAND. */
static int parse_options(int argc, char **argv, struct options *o, int *ret_first)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"pretty", no_argument, NULL, 'p'},
        {"trace", no_argument, NULL, OPT_TRACE},
        {"verbose", no_argument, NULL, 'v'},
        {"wait-event", required_argument, NULL, 'w'},
        {"events", no_argument, NULL, 'e'},
        {"oob", no_argument, NULL, OPT_OOB},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt, r = EXIT_OK;

    /* "+": options end at COMMAND, so ARGS are never taken for options;
     * ":": report errors here, not in getopt. */
    opterr = 0;
    while (r == EXIT_OK && (opt = getopt_long(argc, argv, "+:s:t:pvw:ehV", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            o->address = optarg;
            break;
        case 't':
            r = parse_ms(optarg, "timeout", &o->timeout_ms);
            break;
        case OPT_CONNECT_TIMEOUT:
            r = parse_ms(optarg, "connect timeout", &o->connect_timeout_ms);
            break;
        case 'p':
            o->pretty = 1;
            break;
        case OPT_TRACE:
            o->trace = 1;
            break;
        case 'v':
            o->verbose++;
            break;
        case 'w':
            o->wait_events[o->n_wait_events++] = optarg;
            break;
        case 'e':
            o->print_events = 1;
            break;
        case OPT_OOB:
            o->oob = 1;
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(EXIT_OK);
        case 'V':
            printf("qmp (libqmp) %s\n", qmp_version_string());
            exit(EXIT_OK);
        case ':':
            return usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (r != EXIT_OK)
        return r;
    if (!o->address)
        o->address = getenv("QMP_SOCKET");
    if (!o->address || !o->address[0])
        return usage_error("no QMP socket: use -s ADDRESS or set QMP_SOCKET");
    if (optind >= argc)
        return usage_error("no command given");
    *ret_first = optind;
    return EXIT_OK;
}

static int open_client(const struct options *o, qmp_client **ret)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_client *c = NULL;
    int r;

    r = qmp_client_new(&c);
    if (r < 0)
        return out_of_memory();
    qmp_client_set_timeout(c, o->timeout_ms);
    qmp_client_set_connect_timeout(c, o->connect_timeout_ms);
    if (o->verbose)
        qmp_client_set_log(c, log_cb, o->verbose > 1 ? QMP_LOG_DEBUG : QMP_LOG_INFO, NULL);
    if (o->trace)
        qmp_client_set_trace(c, trace_cb, NULL);
    qmp_client_set_want_oob(c, o->oob);

    r = qmp_client_connect(c, o->address, &err);
    if (r < 0) {
        qmp_client_unref(c);
        return report(r, &err);
    }
    if (o->oob && !qmp_client_oob_enabled(c)) {
        qmp_client_unref(c);
        fprintf(stderr, "qmp: QEMU at %s does not offer out-of-band execution\n", o->address);
        return EXIT_GREETING;
    }
    *ret = c;
    return EXIT_OK;
}

/* Runs COMMAND (or HMP) and prints its result and the requested events. */
static int run_command(qmp_client *c, struct options *o, const char *command,
                       json_object *arguments, int hmp)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *value = NULL;
    int r;

    r = qmp_client_execute_full(c, command, arguments, o->oob ? QMP_EXEC_OOB : 0,
                                QMP_TIMEOUT_DEFAULT, NULL, 0, &value, &err);
    if (r < 0)
        return report(r, &err);
    r = hmp ? print_hmp(value) : print_json(value, o->pretty);
    json_object_put(value);
    if (r == EXIT_OK)
        r = handle_events(c, o);
    return r;
}

int main(int argc, char **argv)
{
    struct options o = {
        .timeout_ms = QMP_CLIENT_DEFAULT_TIMEOUT_MS,
        .connect_timeout_ms = QMP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS,
    };
    json_object *arguments = NULL;
    qmp_client *c = NULL;
    const char *command;
    int first = 0, r, hmp, events;
    long count = 0;
    int events_timeout_ms = QMP_TIMEOUT_INFINITE;

    o.wait_events = calloc((size_t)argc, sizeof(*o.wait_events));
    if (!o.wait_events)
        return out_of_memory();
    r = parse_options(argc, argv, &o, &first);
    if (r != EXIT_OK)
        goto out;

    /* Check the rest of the command line before connecting. */
    command = argv[first];
    hmp = strcmp(command, "hmp") == 0;
    events = strcmp(command, "events") == 0;
    if (events && (o.n_wait_events > 0 || o.print_events))
        r = usage_error("-w and -e apply to commands, not to events");
    else if (events)
        r = parse_events_options(argc - first, argv + first, &count, &events_timeout_ms);
    else if (hmp)
        r = build_hmp_arguments(argv + first + 1, argc - first - 1, &arguments);
    else
        r = build_arguments(argv + first + 1, argc - first - 1, &arguments);
    if (r != EXIT_OK)
        goto out;

    r = open_client(&o, &c);
    if (r != EXIT_OK)
        goto out;
    if (events)
        r = run_events(c, &o, count, events_timeout_ms);
    else
        r = run_command(c, &o, hmp ? "human-monitor-command" : command, arguments, hmp);

out:
    json_object_put(arguments);
    qmp_client_unref(c);
    free(o.wait_events);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "qmp: cannot write the output: %s\n", strerror(errno));
        if (r == EXIT_OK)
            r = EXIT_SYSTEM;
    }
    return r;
}
