/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The blocking client against a real qemu-system-x86_64 (-M none, TCG):
 * greeting, plain commands, events, HMP, error replies, a large reply,
 * pretty=on monitors, several monitors, raw requests, reconnecting and
 * quit.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/wait.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"
#include "qemu-harness.h"

#define EVENT_MS QEMU_TEST_EVENT_TIMEOUT_MS

#define exec_ok(c, command, args) qemu_exec((c), (command), (args), &harness_cur_failed)

/* query-status' "status" string, copied into buf ("" on failure). */
static const char *run_state(qmp_client *c, char *buf, size_t size)
{
    json_object *st = exec_ok(c, "query-status", NULL);
    const char *s = qemu_json_str(st, "status");

    snprintf(buf, size, "%s", s ? s : "");
    json_object_put(st);
    return buf;
}

/* Collects every received message, to check the bytes QEMU really sent. */
typedef struct trace_log {
    size_t n_in;
    size_t largest_in;
    int in_has_newline; /* some received message spans lines */
    char first_in[2048];
} trace_log;

static void on_trace(qmp_trace_direction dir, const char *data, size_t len, void *userdata)
{
    trace_log *t = userdata;

    if (dir != QMP_TRACE_IN)
        return;
    if (t->n_in == 0)
        snprintf(t->first_in, sizeof(t->first_in), "%.*s", (int)len, data);
    t->n_in++;
    if (len > t->largest_in)
        t->largest_in = len;
    if (memchr(data, '\n', len) != NULL)
        t->in_has_newline = 1;
}

/* ------------------------------------------------------------------ tests */

static void greeting_body(qemu_instance *q, qmp_client *c)
{
    const qmp_greeting *g = qmp_client_get_greeting(c);
    json_object *j, *caps, *version;
    int major = -1, minor = -1, micro = -1, found_oob = 0;
    size_t i;

    (void)q;
    REQUIRE(g != NULL);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK(qmp_client_get_fd(c) >= 0);
    qmp_greeting_version(g, &major, &minor, &micro);
    printf("# QEMU %d.%d.%d (%s)\n", major, minor, micro, qmp_greeting_package(g));
    CHECK(major >= 7);
    CHECK(minor >= 0);
    CHECK(micro >= 0);
    CHECK(qmp_greeting_package(g) != NULL && qmp_greeting_package(g)[0] != '\0');
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "oob"), 1);
    CHECK_EQ_INT(qmp_greeting_has_capability(g, "no-such-capability"), 0);
    /* oob is offered, but not enabled unless asked for. */
    CHECK_EQ_INT(qmp_client_oob_enabled(c), 0);

    j = qmp_greeting_json(g);
    REQUIRE(j != NULL);
    caps = qemu_json_get(qemu_json_get(j, "QMP"), "capabilities");
    REQUIRE(json_object_is_type(caps, json_type_array));
    for (i = 0; i < json_object_array_length(caps); i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(caps, i));

        if (s != NULL && strcmp(s, "oob") == 0)
            found_oob = 1;
    }
    CHECK(found_oob);
    version = qemu_json_get(qemu_json_get(j, "QMP"), "version");
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qemu_json_get(version, "qemu"), "major")),
                 major);
}

TEST(greeting)
{
    qemu_run(NULL, greeting_body, &harness_cur_failed);
}

static void query_status_body(qemu_instance *q, qmp_client *c)
{
    json_object *st = exec_ok(c, "query-status", NULL);
    json_object *running = qemu_json_get(st, "running");

    (void)q;
    REQUIRE(st != NULL);
    /* -M none has no CPUs to wait for: the machine runs at once. */
    CHECK_EQ_STR(qemu_json_str(st, "status"), "running");
    CHECK(json_object_is_type(running, json_type_boolean));
    CHECK_EQ_INT(json_object_get_boolean(running), 1);
    json_object_put(st);
}

TEST(query_status)
{
    qemu_run(NULL, query_status_body, &harness_cur_failed);
}

static void query_status_prelaunch_body(qemu_instance *q, qmp_client *c)
{
    json_object *st = exec_ok(c, "query-status", NULL);

    (void)q;
    REQUIRE(st != NULL);
    CHECK_EQ_STR(qemu_json_str(st, "status"), "prelaunch");
    CHECK_EQ_INT(json_object_get_boolean(qemu_json_get(st, "running")), 0);
    json_object_put(st);
}

TEST(query_status_prelaunch)
{
    qemu_opts o = {.extra_args = {"-S"}};

    qemu_run(&o, query_status_prelaunch_body, &harness_cur_failed);
}

static void query_version_body(qemu_instance *q, qmp_client *c)
{
    const qmp_greeting *g = qmp_client_get_greeting(c);
    json_object *v = exec_ok(c, "query-version", NULL);
    json_object *qv = qemu_json_get(v, "qemu"), *version;
    int major, minor, micro;

    (void)q;
    REQUIRE(g != NULL);
    REQUIRE(v != NULL);
    qmp_greeting_version(g, &major, &minor, &micro);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qv, "major")), major);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qv, "minor")), minor);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(qv, "micro")), micro);
    CHECK_EQ_STR(qemu_json_str(v, "package"), qmp_greeting_package(g));
    /* The greeting's version object is query-version's reply. */
    version = qemu_json_get(qemu_json_get(qmp_greeting_json(g), "QMP"), "version");
    CHECK(version != NULL && json_object_equal(v, version));
    json_object_put(v);
}

TEST(query_version)
{
    qemu_run(NULL, query_version_body, &harness_cur_failed);
}

static void stop_cont_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    json_object *r;
    char state[64];
    int rc;

    (void)q;
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
    /* No event has happened yet. */
    rc = qmp_client_next_event(c, 0, &ev, &err);
    CHECK_EQ_INT(rc, -EAGAIN);

    r = exec_ok(c, "stop", NULL);
    /* stop returns {}. */
    CHECK(json_object_is_type(r, json_type_object) && json_object_object_length(r) == 0);
    json_object_put(r);
    rc = qmp_client_wait_event(c, "STOP", NULL, EVENT_MS, &ev, &err);
    if (rc < 0)
        qemu_print_error("wait STOP", rc, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(qmp_event_name(ev), "STOP");
    CHECK(qmp_event_seconds(ev) > 0);
    CHECK(qmp_event_microseconds(ev) >= 0 && qmp_event_microseconds(ev) < 1000000);
    CHECK_EQ_INT(qmp_event_has_data(ev), 0);
    ev = qmp_event_unref(ev);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "paused");

    json_object_put(exec_ok(c, "cont", NULL));
    rc = qmp_client_wait_event(c, "RESUME", NULL, EVENT_MS, &ev, &err);
    if (rc < 0)
        qemu_print_error("wait RESUME", rc, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(qmp_event_name(ev), "RESUME");
    ev = qmp_event_unref(ev);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");

    /* Nothing else was emitted, nothing was lost. */
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_events_lost(c), 0);
    rc = qmp_client_next_event(c, 0, &ev, &err);
    CHECK_EQ_INT(rc, -EAGAIN);
    qmp_event_unref(ev);
}

TEST(stop_cont_events)
{
    qemu_run(NULL, stop_cont_body, &harness_cur_failed);
}

/* An event that arrives while a command waits for its reply is queued
 * for later. */
static void event_queued_during_call_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    char state[64];
    int rc;

    (void)q;
    json_object_put(exec_ok(c, "stop", NULL));
    /* STOP comes before stop's reply; query-status reads past it too. */
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "paused");
    CHECK_EQ_INT(qmp_client_events_queued(c), 1);
    rc = qmp_client_next_event(c, 0, &ev, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(qmp_event_name(ev), "STOP");
    qmp_event_unref(ev);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
}

TEST(event_queued_during_call)
{
    qemu_run(NULL, event_queued_during_call_body, &harness_cur_failed);
}

static void hmp_body(qemu_instance *q, qmp_client *c)
{
    const qmp_greeting *g = qmp_client_get_greeting(c);
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    char expect[128];
    int major, minor, micro, rc;

    (void)q;
    REQUIRE(g != NULL);
    rc = qmp_client_command(c, &ret, &err, "human-monitor-command", "{'command-line': %s}",
                            "info version");
    if (rc < 0)
        qemu_print_error("human-monitor-command", rc, &err);
    REQUIRE(rc == 0);
    REQUIRE(json_object_is_type(ret, json_type_string));
    qmp_greeting_version(g, &major, &minor, &micro);
    /* HMP prints "7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3\r\n". */
    snprintf(expect, sizeof(expect), "%d.%d.%d%s\r\n", major, minor, micro,
             qmp_greeting_package(g));
    CHECK_EQ_STR(json_object_get_string(ret), expect);
    json_object_put(ret);
}

TEST(hmp_info_version)
{
    qemu_run(NULL, hmp_body, &harness_cur_failed);
}

static void error_replies_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL, *args = NULL;
    char state[64];
    int rc;

    (void)q;
    /* QEMU 7.2 answers device_del of a missing id with DeviceNotFound
     * ("Device 'nope' not found"). */
    rc = qmp_client_command(c, &ret, &err, "device_del", "{'id': %s}", "nope");
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.code, -EREMOTEIO);
    CHECK_EQ_INT(err.category, QMP_ERR_COMMAND);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_DEVICE_NOT_FOUND);
    CHECK_EQ_STR(err.class_name, "DeviceNotFound");
    CHECK_CONTAINS(err.message, "'nope'");
    CHECK(ret == NULL);

    err = (qmp_error)QMP_ERROR_INIT;
    rc = qmp_client_execute(c, "no-such-command", NULL, &ret, &err);
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.category, QMP_ERR_COMMAND);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_COMMAND_NOT_FOUND);
    CHECK_EQ_STR(err.class_name, "CommandNotFound");
    CHECK_CONTAINS(err.message, "no-such-command");
    CHECK(ret == NULL);

    /* A bad argument is a GenericError. */
    err = (qmp_error)QMP_ERROR_INIT;
    REQUIRE(qmp_json_build(&args, NULL, "{'no-such-argument': 1}") == 0);
    rc = qmp_client_execute(c, "query-status", args, &ret, &err);
    json_object_put(args);
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.category, QMP_ERR_COMMAND);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_GENERIC_ERROR);
    CHECK_EQ_STR(err.class_name, "GenericError");
    CHECK_CONTAINS(err.message, "no-such-argument");
    CHECK(ret == NULL);

    /* Error replies leave the connection usable. */
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
}

TEST(error_replies)
{
    qemu_run(NULL, error_replies_body, &harness_cur_failed);
}

/* QEMU escapes non-ASCII output as \uXXXX (upper-case hex, surrogate
 * pairs past U+FFFF); it must come back as the UTF-8 we sent. */
static void unicode_body(qemu_instance *q, qmp_client *c)
{
    static const char id[] = "t\xc3\xabst\xe2\x98\x83\xf0\x9f\x98\x80"; /* tëst☃😀 */
    qmp_error err = QMP_ERROR_INIT;
    char expect[128];
    int rc;

    (void)q;
    rc = qmp_client_command(c, NULL, &err, "device_del", "{'id': %s}", id);
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_DEVICE_NOT_FOUND);
    snprintf(expect, sizeof(expect), "Device '%s' not found", id);
    CHECK_EQ_STR(err.message, expect);
}

TEST(unicode_round_trip)
{
    qemu_run(NULL, unicode_body, &harness_cur_failed);
}

static void schema_body(qemu_instance *q, qmp_client *c)
{
    trace_log t;
    json_object *schema;
    size_t i, n, commands = 0, events = 0;
    int found = 0;

    (void)q;
    memset(&t, 0, sizeof(t));
    qmp_client_set_trace(c, on_trace, &t);
    schema = exec_ok(c, "query-qmp-schema", NULL);
    qmp_client_set_trace(c, NULL, NULL);
    REQUIRE(schema != NULL);
    /* About 200 KB on QEMU 7.2: far past any 64 KiB buffer. */
    printf("# query-qmp-schema reply: %zu bytes\n", t.largest_in);
    CHECK(t.largest_in > 100 * 1024);
    CHECK_EQ_INT(t.n_in, 1);
    REQUIRE(json_object_is_type(schema, json_type_array));
    n = json_object_array_length(schema);
    printf("# %zu schema entries\n", n);
    CHECK(n > 500);
    for (i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(schema, i);
        const char *name = qemu_json_str(e, "name");
        const char *meta = qemu_json_str(e, "meta-type");

        if (name == NULL || meta == NULL) {
            HARNESS_FAIL_("schema entry %zu without name or meta-type", i);
            break;
        }
        if (strcmp(meta, "command") == 0)
            commands++;
        else if (strcmp(meta, "event") == 0)
            events++;
        if (strcmp(name, "query-status") == 0) {
            found++;
            CHECK_EQ_STR(meta, "command");
        }
    }
    CHECK_EQ_INT(found, 1);
    CHECK(commands > 100);
    CHECK(events > 20);
    json_object_put(schema);
}

TEST(query_qmp_schema)
{
    qemu_run(NULL, schema_body, &harness_cur_failed);
}

/* With pretty=on every message spans many lines. */
static void pretty_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    trace_log t;
    const char *text;
    size_t len = 0;
    char state[64];
    int rc;

    (void)c0;
    memset(&t, 0, sizeof(t));
    REQUIRE(qmp_client_new(&c) == 0);
    qmp_client_set_trace(c, on_trace, &t);
    rc = qmp_client_connect(c, q->address, &err);
    if (rc < 0)
        qemu_print_error("connect to pretty monitor", rc, &err);
    if (rc == 0) {
        /* The greeting as received is multi-line. */
        CHECK(strncmp(t.first_in, "{\r\n    \"QMP\": {\r\n", 17) == 0);
        CHECK(t.in_has_newline);
        CHECK(qmp_client_get_greeting(c) != NULL);
        CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
        json_object_put(exec_ok(c, "stop", NULL));
        rc = qmp_client_wait_event(c, "STOP", NULL, EVENT_MS, &ev, &err);
        if (rc < 0)
            qemu_print_error("wait STOP", rc, &err);
        CHECK_EQ_INT(rc, 0);
        if (rc == 0) {
            text = qmp_event_text(ev, &len);
            CHECK(text != NULL && memchr(text, '\n', len) != NULL);
            CHECK_EQ_STR(qmp_event_name(ev), "STOP");
            CHECK(qmp_event_seconds(ev) > 0);
        }
        CHECK_EQ_STR(run_state(c, state, sizeof(state)), "paused");
        /* A large reply: the schema spread over many lines. */
        {
            json_object *schema;

            memset(&t, 0, sizeof(t));
            schema = exec_ok(c, "query-qmp-schema", NULL);
            printf("# pretty query-qmp-schema reply: %zu bytes\n", t.largest_in);
            CHECK(t.largest_in > 200 * 1024);
            CHECK(json_object_is_type(schema, json_type_array) &&
                  json_object_array_length(schema) > 500);
            json_object_put(schema);
        }
        /* An error reply spans lines as well. */
        rc = qmp_client_execute(c, "no-such-command", NULL, NULL, &err);
        CHECK_EQ_INT(rc, -EREMOTEIO);
        CHECK_EQ_INT(err.qmp_class, QMP_CLASS_COMMAND_NOT_FOUND);
        CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    }
    qmp_event_unref(ev);
    qmp_client_unref(c);
}

TEST(pretty_monitor)
{
    qemu_opts o = {.pretty = 1, .no_connect = 1};

    qemu_run(&o, pretty_body, &harness_cur_failed);
}

/* Two monitors of one QEMU: both get every event; the second is pretty. */
static void two_monitors_body(qemu_instance *q, qmp_client *c)
{
    qmp_client *c2 = NULL;
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev1 = NULL, *ev2 = NULL;
    size_t len = 0;
    char state[64];
    int rc;

    REQUIRE(qemu_connect(q->extra_address[0], 0, &c2, &err) == 0);
    CHECK_EQ_STR(run_state(c2, state, sizeof(state)), "running");
    json_object_put(exec_ok(c, "stop", NULL));
    rc = qmp_client_wait_event(c, "STOP", NULL, EVENT_MS, &ev1, &err);
    CHECK_EQ_INT(rc, 0);
    rc = qmp_client_wait_event(c2, "STOP", NULL, EVENT_MS, &ev2, &err);
    CHECK_EQ_INT(rc, 0);
    if (ev1 != NULL && ev2 != NULL) {
        /* The same event, printed in two layouts. */
        CHECK_EQ_INT(qmp_event_seconds(ev1), qmp_event_seconds(ev2));
        CHECK_EQ_INT(qmp_event_microseconds(ev1), qmp_event_microseconds(ev2));
        CHECK(memchr(qmp_event_text(ev1, &len), '\n', len) == NULL);
        CHECK(memchr(qmp_event_text(ev2, &len), '\n', len) != NULL);
    }
    CHECK_EQ_STR(run_state(c2, state, sizeof(state)), "paused");
    qmp_event_unref(ev1);
    qmp_event_unref(ev2);
    qmp_client_unref(c2);
}

TEST(two_monitors)
{
    qemu_opts o = {.n_extra_monitors = 1, .extra_pretty = {1}};

    qemu_run(&o, two_monitors_body, &harness_cur_failed);
}

/* Raw requests carry the caller's own id, echoed verbatim. */
static void send_raw_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *msg = NULL, *reply = NULL, *id;
    int rc;

    (void)q;
    REQUIRE(qmp_json_build(&msg, NULL, "{'execute': 'query-status', 'id': {'mine': [1, 'x']}}") ==
            0);
    rc = qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &reply, &err);
    if (rc < 0)
        qemu_print_error("send_raw", rc, &err);
    CHECK_EQ_INT(rc, 0);
    id = qemu_json_get(reply, "id");
    CHECK(json_object_equal(id, qemu_json_get(msg, "id")));
    CHECK_EQ_STR(qemu_json_str(qemu_json_get(reply, "return"), "status"), "running");
    json_object_put(msg);
    json_object_put(reply);
    reply = NULL;

    /* An error reply is returned whole, not as a failure. */
    REQUIRE(qmp_json_build(&msg, NULL, "{'execute': 'no-such-command', 'id': 42}") == 0);
    rc = qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &reply, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(reply, "id")), 42);
    CHECK_EQ_STR(qemu_json_str(qemu_json_get(reply, "error"), "class"), "CommandNotFound");
    json_object_put(msg);
    json_object_put(reply);
}

TEST(send_raw)
{
    qemu_run(NULL, send_raw_body, &harness_cur_failed);
}

/* QEMU serves the next client once the first has gone. */
static void reconnect_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    char state[64], path_only[QEMU_PATH_MAX];
    int i, rc;

    json_object_put(exec_ok(c, "stop", NULL));
    qmp_client_close(c);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(qmp_client_get_fd(c), -1);
    rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
    CHECK_EQ_INT(rc, -ENOTCONN);

    /* Connecting a connected client first closes the old connection
     * (QEMU serves one client per monitor, so the new one could not get
     * a greeting otherwise). */
    rc = qmp_client_connect(c, q->address, &err);
    if (rc < 0)
        qemu_print_error("connect while connected", rc, &err);
    CHECK_EQ_INT(rc, 0);
    rc = qmp_client_connect(c, q->address, &err);
    if (rc < 0)
        qemu_print_error("connect while connected", rc, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "paused");
    qmp_client_close(c);

    /* Reconnect the same client, by "unix:PATH" and by plain path. */
    snprintf(path_only, sizeof(path_only), "%s", q->address + strlen("unix:"));
    for (i = 0; i < 2; i++) {
        rc = qmp_client_connect(c, i == 0 ? q->address : path_only, &err);
        if (rc < 0)
            qemu_print_error("reconnect", rc, &err);
        REQUIRE(rc == 0);
        CHECK(qmp_client_get_greeting(c) != NULL);
        /* State persists in QEMU across connections. */
        CHECK_EQ_STR(run_state(c, state, sizeof(state)), "paused");
        qmp_client_close(c);
    }
}

TEST(reconnect)
{
    qemu_run(NULL, reconnect_body, &harness_cur_failed);
}

static void oob_body(qemu_instance *q, qmp_client *c0)
{
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    char state[64];
    int rc;

    (void)c0;
    REQUIRE(qmp_client_new(&c) == 0);
    qmp_client_set_want_oob(c, 1);
    rc = qmp_client_connect(c, q->address, &err);
    if (rc < 0)
        qemu_print_error("connect with oob", rc, &err);
    if (rc == 0) {
        CHECK_EQ_INT(qmp_client_oob_enabled(c), 1);
        /* query-yank is one of the few commands with allow-oob in 7.2. */
        rc = qmp_client_execute_full(c, "query-yank", NULL, QMP_EXEC_OOB, QMP_TIMEOUT_DEFAULT, NULL,
                                     0, &ret, &err);
        if (rc < 0)
            qemu_print_error("exec-oob query-yank", rc, &err);
        CHECK_EQ_INT(rc, 0);
        CHECK(json_object_is_type(ret, json_type_array));
        json_object_put(ret);
        ret = NULL;
        /* A command without allow-oob is refused as exec-oob. */
        rc = qmp_client_execute_full(c, "query-status", NULL, QMP_EXEC_OOB, QMP_TIMEOUT_DEFAULT,
                                     NULL, 0, &ret, &err);
        CHECK_EQ_INT(rc, -EREMOTEIO);
        CHECK_EQ_INT(err.qmp_class, QMP_CLASS_GENERIC_ERROR);
        CHECK(ret == NULL);
        /* In-band commands still work. */
        CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");

        /* An in-band call times out while QEMU is frozen; its late reply
         * and an exec-oob reply then race (OOB may overtake): each must
         * go where its id says. */
        REQUIRE(qemu_pause(q) == 0);
        rc = qmp_client_execute_full(c, "query-version", NULL, 0, 200, NULL, 0, &ret, &err);
        CHECK_EQ_INT(qemu_resume(q), 0);
        CHECK_EQ_INT(rc, -ETIMEDOUT);
        rc = qmp_client_execute_full(c, "query-yank", NULL, QMP_EXEC_OOB, QMP_TIMEOUT_DEFAULT, NULL,
                                     0, &ret, &err);
        CHECK_EQ_INT(rc, 0);
        CHECK(json_object_is_type(ret, json_type_array));
        json_object_put(ret);
        ret = NULL;
        CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
    }
    qmp_client_unref(c);
}

TEST(oob)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, oob_body, &harness_cur_failed);
}

/* A reply that comes after its call timed out is dropped, never handed to
 * the next call. */
static void late_reply_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    char state[64];
    long long t0, elapsed;
    int rc;

    REQUIRE(qemu_pause(q) == 0);
    t0 = qemu_now_ms();
    rc = qmp_client_execute_full(c, "query-version", NULL, 0, 300, NULL, 0, &ret, &err);
    elapsed = qemu_now_ms() - t0;
    CHECK_EQ_INT(qemu_resume(q), 0);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(ret == NULL);
    CHECK(elapsed >= 250);
    CHECK(elapsed < 10000);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    /* QEMU now answers query-version, then query-status. */
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
    ret = exec_ok(c, "query-version", NULL);
    CHECK(qemu_json_get(ret, "qemu") != NULL);
    json_object_put(ret);
}

TEST(late_reply_dropped)
{
    qemu_run(NULL, late_reply_body, &harness_cur_failed);
}

/* The deadline holds while our request does not fit into the socket
 * (QEMU frozen), and the connection recovers afterwards. */
static void big_request_body(qemu_instance *q, qmp_client *c)
{
    enum { BIG = 400 * 1024 }; /* about twice what a unix socket buffers */
    qmp_error err = QMP_ERROR_INIT;
    json_object *args, *ret = NULL;
    char *line, state[64];
    long long t0, elapsed;
    int rc;

    line = malloc(BIG + 1);
    REQUIRE(line != NULL);
    memset(line, 'x', BIG);
    line[BIG] = '\0';
    args = json_object_new_object();
    json_object_object_add(args, "command-line", json_object_new_string(line));
    free(line);

    REQUIRE(qemu_pause(q) == 0);
    t0 = qemu_now_ms();
    rc = qmp_client_execute_full(c, "human-monitor-command", args, 0, 500, NULL, 0, &ret, &err);
    elapsed = qemu_now_ms() - t0;
    json_object_put(args);
    CHECK_EQ_INT(qemu_resume(q), 0);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(elapsed >= 450);
    CHECK(elapsed < 10000);
    json_object_put(ret);
    /* The rest of the request still goes out; QEMU answers it (HMP says
     * "unknown command"), and that late reply is dropped. */
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK_EQ_STR(run_state(c, state, sizeof(state)), "running");
}

TEST(big_request_timeout)
{
    qemu_run(NULL, big_request_body, &harness_cur_failed);
}

/* A full event queue drops the oldest events and counts them. */
static void event_overflow_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    int i, rc;

    (void)q;
    REQUIRE(qmp_client_set_event_queue_max(c, 1) == 0);
    for (i = 0; i < 2; i++) {
        json_object_put(exec_ok(c, "stop", NULL));
        json_object_put(exec_ok(c, "cont", NULL));
    }
    /* STOP, RESUME, STOP, RESUME arrived; the last one is kept. */
    CHECK_EQ_INT(qmp_client_events_queued(c), 1);
    CHECK_EQ_INT(qmp_client_events_lost(c), 3);
    rc = qmp_client_next_event(c, 0, &ev, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(ev ? qmp_event_name(ev) : NULL, "RESUME");
    qmp_event_unref(ev);
    CHECK_EQ_INT(qmp_client_reset_events_lost(c), 3);
    CHECK_EQ_INT(qmp_client_events_lost(c), 0);
}

TEST(event_queue_overflow)
{
    qemu_run(NULL, event_overflow_body, &harness_cur_failed);
}

/* Waiting for an event that does not come times out and leaves the
 * queue as it was. */
static void wait_event_no_match_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    json_object *match = NULL;
    long long t0;
    int rc;

    (void)q;
    json_object_put(exec_ok(c, "stop", NULL));
    CHECK_EQ_INT(qmp_client_events_queued(c), 1);
    t0 = qemu_now_ms();
    rc = qmp_client_wait_event(c, "RESUME", NULL, 300, &ev, &err);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(qemu_now_ms() - t0 >= 250);
    CHECK(ev == NULL);
    /* STOP carries no data, so a data pattern cannot match it. */
    REQUIRE(qmp_json_build(&match, NULL, "{'reason': 'none'}") == 0);
    rc = qmp_client_wait_event(c, "STOP", match, 300, &ev, &err);
    json_object_put(match);
    CHECK_EQ_INT(rc, -ETIMEDOUT);
    CHECK_EQ_INT(qmp_client_events_queued(c), 1);
    rc = qmp_client_wait_event(c, "STOP", NULL, 0, &ev, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(ev ? qmp_event_name(ev) : NULL, "STOP");
    qmp_event_unref(ev);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
}

TEST(wait_event_no_match)
{
    qemu_run(NULL, wait_event_no_match_body, &harness_cur_failed);
}

/* The message size cap applies to real replies: the schema (about
 * 200 KB) passes a 512 KiB cap and breaks a 64 KiB one, for good. */
static void max_message_size_body(qemu_instance *q, qmp_client *c0)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_client *c = NULL;
    json_object *ret = NULL;
    long long t0;
    int rc;

    (void)c0;
    REQUIRE(qmp_client_new(&c) == 0);
    CHECK_EQ_INT(qmp_client_set_max_message_size(c, 512 * 1024), 0);
    rc = qmp_client_connect(c, q->address, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        ret = exec_ok(c, "query-qmp-schema", NULL);
        CHECK(json_object_is_type(ret, json_type_array));
        json_object_put(ret);
        ret = NULL;
        qmp_client_close(c);
    }

    CHECK_EQ_INT(qmp_client_set_max_message_size(c, 64 * 1024), 0);
    rc = qmp_client_connect(c, q->address, &err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        rc = qmp_client_execute(c, "query-qmp-schema", NULL, &ret, &err);
        CHECK_EQ_INT(rc, -EMSGSIZE);
        CHECK_EQ_INT(err.category, QMP_ERR_LIMIT);
        CHECK(ret == NULL);
        CHECK_EQ_INT(qmp_client_is_connected(c), 0);
        /* Sticky: the rest of the stream cannot be trusted. */
        t0 = qemu_now_ms();
        rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
        CHECK_EQ_INT(rc, -EMSGSIZE);
        CHECK(qemu_now_ms() - t0 < 1000);
    }
    json_object_put(ret);
    qmp_client_unref(c);
}

TEST(max_message_size)
{
    qemu_opts o = {.no_connect = 1};

    qemu_run(&o, max_message_size_body, &harness_cur_failed);
}

/* quit: SHUTDOWN, then the connection reports the disconnect and QEMU
 * exits. */
static void quit_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    json_object *match = NULL;
    long long t0;
    int rc;

    json_object_put(exec_ok(c, "quit", NULL));
    REQUIRE(!harness_cur_failed);
    REQUIRE(qmp_json_build(&match, NULL, "{'guest': false, 'reason': 'host-qmp-quit'}") == 0);
    rc = qmp_client_wait_event(c, "SHUTDOWN", match, EVENT_MS, &ev, &err);
    json_object_put(match);
    if (rc < 0)
        qemu_print_error("wait SHUTDOWN", rc, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(ev ? qmp_event_name(ev) : NULL, "SHUTDOWN");
    ev = qmp_event_unref(ev);

    /* QEMU closes the socket (often with a reset: it had not read the
     * request's final newline); the next read reports it promptly. */
    t0 = qemu_now_ms();
    rc = qmp_client_next_event(c, EVENT_MS, &ev, &err);
    if (rc != -ECONNRESET)
        qemu_print_error("next_event after quit", rc, &err);
    CHECK_EQ_INT(rc, -ECONNRESET);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK(qemu_now_ms() - t0 < EVENT_MS);
    CHECK(ev == NULL);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    /* Sticky and immediate. */
    t0 = qemu_now_ms();
    rc = qmp_client_execute(c, "query-status", NULL, NULL, &err);
    CHECK_EQ_INT(rc, -ECONNRESET);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK(qemu_now_ms() - t0 < 1000);

    rc = qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK(WIFEXITED(q->status));
        CHECK_EQ_INT(WEXITSTATUS(q->status), 0);
    }
}

TEST(quit)
{
    qemu_run(NULL, quit_body, &harness_cur_failed);
}

/* QEMU has exited before we read anything after quit's reply: what it
 * sent before closing (SHUTDOWN) still comes out before the disconnect. */
static void quit_after_exit_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    int rc;

    json_object_put(exec_ok(c, "quit", NULL));
    REQUIRE(!harness_cur_failed);
    rc = qemu_wait_exit(q, QEMU_TEST_EXIT_TIMEOUT_MS);
    REQUIRE(rc == 0);
    CHECK(WIFEXITED(q->status) && WEXITSTATUS(q->status) == 0);
    rc = qmp_client_wait_event(c, "SHUTDOWN", NULL, EVENT_MS, &ev, &err);
    if (rc < 0)
        qemu_print_error("wait SHUTDOWN", rc, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(qemu_json_str(ev ? qmp_event_data(ev) : NULL, "reason"), "host-qmp-quit");
    qmp_event_unref(ev);
    ev = NULL;
    rc = qmp_client_next_event(c, EVENT_MS, &ev, &err);
    CHECK_EQ_INT(rc, -ECONNRESET);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    qmp_event_unref(ev);
}

TEST(quit_after_exit)
{
    qemu_run(NULL, quit_after_exit_body, &harness_cur_failed);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(greeting);
    RUN(query_status);
    RUN(query_status_prelaunch);
    RUN(query_version);
    RUN(stop_cont_events);
    RUN(event_queued_during_call);
    RUN(hmp_info_version);
    RUN(error_replies);
    RUN(unicode_round_trip);
    RUN(query_qmp_schema);
    RUN(pretty_monitor);
    RUN(two_monitors);
    RUN(send_raw);
    RUN(reconnect);
    RUN(oob);
    RUN(late_reply_dropped);
    RUN(big_request_timeout);
    RUN(event_queue_overflow);
    RUN(wait_event_no_match);
    RUN(max_message_size);
    RUN(quit);
    RUN(quit_after_exit);
    return harness_done();
}
