/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * async-demo.h: what the four non-blocking examples (loop-client,
 * glib-client, libuv-client, libevent-client) do alike, so each of them
 * shows only how its loop drives the client.
 *
 * Connects asynchronously, runs query-status and query-version at once,
 * pauses the guest ("stop"), resumes it ("cont") when the STOP event
 * comes, and asks the loop to stop once RESUME has come and every reply is
 * in.  Not part of libqmp: an example's helper.
 */
#ifndef QMP_EXAMPLE_ASYNC_DEMO_H
#define QMP_EXAMPLE_ASYNC_DEMO_H

#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

typedef struct demo {
    void (*quit)(void *loop); /* stops the example's loop */
    void *loop;
    int pending; /* calls started and not yet answered */
    int resumed; /* RESUME has come */
    int status;  /* exit status */
} demo;

static void finish_if_done(demo *d)
{
    if (d->status != 0 || (d->resumed && d->pending == 0))
        d->quit(d->loop);
}

/* One callback for every call: the reply is borrowed for its duration. */
static void on_reply(qmp_client *c, qmp_reply *reply, void *userdata)
{
    demo *d = userdata;
    const char *what = qmp_reply_status(reply) == 0 ? "" : qmp_reply_error(reply)->message;
    json_object *ret = qmp_reply_return(reply);

    (void)c;
    d->pending--;
    if (qmp_reply_status(reply) != 0) {
        fprintf(stderr, "call %llu failed: %s\n", (unsigned long long)qmp_reply_tag(reply), what);
        d->status = 1;
    } else {
        printf("reply %llu: %s\n", (unsigned long long)qmp_reply_tag(reply),
               ret ? json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN) : "null");
    }
    finish_if_done(d);
}

static void start(qmp_client *c, demo *d, const char *command)
{
    qmp_error err = QMP_ERROR_INIT;
    uint64_t tag = 0;

    /* The callback never runs inside execute_async itself, and not at all
     * when it fails. */
    if (qmp_client_execute_async(c, command, NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, on_reply, d,
                                 &tag, &err) < 0) {
        fprintf(stderr, "%s: %s\n", command, err.message);
        d->status = 1;
        finish_if_done(d);
        return;
    }
    printf("started %s as call %llu\n", command, (unsigned long long)tag);
    d->pending++;
}

static void on_connect(qmp_client *c, int status, const qmp_error *err, void *userdata)
{
    demo *d = userdata;

    if (status != 0) {
        fprintf(stderr, "connect: %s\n", err->message);
        d->status = 1;
        finish_if_done(d);
        return;
    }
    printf("connected\n");
    start(c, d, "query-status");
    start(c, d, "query-version");
    start(c, d, "stop");
}

static void on_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    demo *d = userdata;

    printf("event %s\n", qmp_event_name(ev));
    if (strcmp(qmp_event_name(ev), "STOP") == 0) {
        start(c, d, "cont");
    } else {
        d->resumed = 1;
        finish_if_done(d);
    }
}

static void on_disconnect(qmp_client *c, const qmp_error *err, void *userdata)
{
    demo *d = userdata;

    (void)c;
    fprintf(stderr, "disconnected: %s\n", err->message);
    d->status = 1;
    finish_if_done(d);
}

/* Sets the callbacks and subscriptions on c; the events are subscribed to
 * before the commands that cause them are started. */
static void demo_setup(qmp_client *c, demo *d)
{
    qmp_client_set_connect_callback(c, on_connect, d);
    qmp_client_set_disconnect_callback(c, on_disconnect, d);
    qmp_client_subscribe(c, "STOP", on_event, d, NULL);
    qmp_client_subscribe(c, "RESUME", on_event, d, NULL);
}

#endif /* QMP_EXAMPLE_ASYNC_DEMO_H */
