/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One thread-safe qmp_client shared by several threads against a real
 * qemu-system-x86_64: readers query status and QOM properties (each its
 * own memory backend object, whose size tells its replies from the
 * others'), while a controller stops and continues the VM, waiting for
 * STOP and RESUME each time.  Every wait has a deadline; nothing sleeps.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"
#include "qemu-harness.h"
#include "threads-util.h"

#define N_READERS 4
#define CYCLES 40
#define MIN_READS 20

typedef struct tally {
    long ok;
    long bad;
    char first[512];
} tally;

static void tally_bad(tally *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tally_bad(tally *t, const char *fmt, ...)
{
    if (t->bad++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->first, sizeof(t->first), fmt, ap);
        va_end(ap);
    }
}

/* Runs command with arguments from template; returns the result (new
 * reference) or NULL with the failure in t. */
static json_object *call(qmp_client *c, tally *t, const char *command, const char *tmpl, ...)
    __attribute__((format(printf, 4, 5)));

static json_object *call(qmp_client *c, tally *t, const char *command, const char *tmpl, ...)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *args = NULL, *ret = NULL;
    int r = 0;

    if (tmpl != NULL) {
        va_list ap;
        va_start(ap, tmpl);
        r = qmp_json_vbuild(&args, &err, tmpl, ap);
        va_end(ap);
    }
    if (r == 0)
        r = qmp_client_execute(c, command, args, &ret, &err);
    json_object_put(args);
    if (r != 0) {
        tally_bad(t, "%s: %d: %s", command, r, err.message);
        return NULL;
    }
    t->ok++;
    return ret;
}

/* Checks a query-status result; returns its status or NULL. */
static const char *check_status(json_object *st, tally *t)
{
    const char *status = qemu_json_str(st, "status");
    json_object *running = qemu_json_get(st, "running");
    if (status == NULL || !json_object_is_type(running, json_type_boolean) ||
        (strcmp(status, "running") != 0 && strcmp(status, "paused") != 0) ||
        json_object_get_boolean(running) != (strcmp(status, "running") == 0)) {
        tally_bad(t, "query-status: %s", st ? json_object_to_json_string(st) : "(null)");
        return NULL;
    }
    return status;
}

typedef struct reader {
    qmp_client *c;
    int id;
    counter *stop;
    long reads;
    tally t;
} reader;

static void *reader_main(void *arg)
{
    reader *rd = arg;
    char obj[32], path[64];
    long long size = (long long)(rd->id + 1) << 20;

    snprintf(obj, sizeof(obj), "thr-obj%d", rd->id);
    snprintf(path, sizeof(path), "/objects/%s", obj);
    json_object_put(call(rd->c, &rd->t, "object-add",
                         "{'qom-type': 'memory-backend-ram', 'id': %s, 'size': %lld}", obj, size));
    while (rd->reads < MIN_READS || counter_get(rd->stop) == 0) {
        json_object *v = call(rd->c, &rd->t, "qom-get", "{'path': %s, 'property': 'size'}", path);
        if (v != NULL &&
            (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != size))
            tally_bad(&rd->t, "qom-get %s size: %s, not %lld", path, json_object_to_json_string(v),
                      size);
        json_object_put(v);
        v = call(rd->c, &rd->t, "qom-get", "{'path': '/machine', 'property': 'type'}");
        if (v != NULL && (!json_object_is_type(v, json_type_string) ||
                          strcmp(json_object_get_string(v), "none-machine") != 0))
            tally_bad(&rd->t, "qom-get /machine type: %s", json_object_to_json_string(v));
        json_object_put(v);
        v = call(rd->c, &rd->t, "query-status", NULL);
        if (v != NULL)
            check_status(v, &rd->t);
        json_object_put(v);
        rd->reads++;
    }
    json_object_put(call(rd->c, &rd->t, "object-del", "{'id': %s}", obj));
    return NULL;
}

typedef struct controller {
    qmp_client *c;
    tally t;
} controller;

/* One command that changes the run state, its event, and the state
 * it must leave. */
static void transition(controller *ct, const char *command, const char *event, const char *status)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;

    json_object_put(call(ct->c, &ct->t, command, NULL));
    /* The event may have come before the reply: it waits in the queue,
     * as no other thread waits for it. */
    int r = qmp_client_wait_event(ct->c, event, NULL, QEMU_TEST_EVENT_TIMEOUT_MS, &ev, &err);
    if (r != 0)
        tally_bad(&ct->t, "waiting for %s: %d: %s", event, r, err.message);
    qmp_event_unref(ev);
    json_object *st = call(ct->c, &ct->t, "query-status", NULL);
    const char *s = st != NULL ? check_status(st, &ct->t) : NULL;
    if (s != NULL && strcmp(s, status) != 0)
        tally_bad(&ct->t, "after %s and %s the status is %s, not %s", command, event, s, status);
    json_object_put(st);
}

static void *controller_main(void *arg)
{
    controller *ct = arg;
    for (int i = 0; i < CYCLES; i++) {
        transition(ct, "stop", "STOP", "paused");
        transition(ct, "cont", "RESUME", "running");
    }
    return NULL;
}

static void shared_body(qemu_instance *q, qmp_client *unused)
{
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;

    (void)unused;
    REQUIRE(qmp_client_new(&c) == 0);
    CHECK_EQ_INT(qmp_client_set_thread_safe(c, 1), 0);
    CHECK_EQ_INT(qmp_client_set_timeout(c, QEMU_TEST_EVENT_TIMEOUT_MS), 0);
    int r = qmp_client_connect(c, q->address, &err);
    if (r != 0) {
        qemu_print_error("qmp_client_connect", r, &err);
        harness_cur_failed = 1;
        qmp_client_unref(c);
        return;
    }

    counter stop;
    counter_init(&stop);
    reader rd[N_READERS];
    pthread_t th[N_READERS], ct_th;
    controller ct = {.c = c};
    for (int i = 0; i < N_READERS; i++) {
        rd[i] = (reader){.c = c, .id = i, .stop = &stop};
        threads_start(&th[i], reader_main, &rd[i]);
    }
    threads_start(&ct_th, controller_main, &ct);
    threads_join(ct_th, "controller");
    counter_set(&stop, 1);
    long reads = 0;
    for (int i = 0; i < N_READERS; i++) {
        threads_join(th[i], "reader");
        if (rd[i].t.bad != 0)
            HARNESS_FAIL_("reader %d: %ld calls went wrong, the first: %s", i, rd[i].t.bad,
                          rd[i].t.first);
        CHECK(rd[i].reads >= MIN_READS);
        reads += rd[i].reads;
    }
    printf("# %d stop/cont cycles, %ld rounds of reads\n", CYCLES, reads);
    if (ct.t.bad != 0)
        HARNESS_FAIL_("controller: %ld calls went wrong, the first: %s", ct.t.bad, ct.t.first);
    CHECK_EQ_INT(ct.t.ok, CYCLES * 4);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    counter_destroy(&stop);
    qmp_client_unref(c);
}

TEST(qemu_shared_client)
{
    qemu_opts o = {.no_connect = 1};
    qemu_run(&o, shared_body, &harness_cur_failed);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(qemu_shared_client);
    return harness_done();
}
