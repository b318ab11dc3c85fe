/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libevent-client: the non-blocking client in a libevent loop, through
 * the header-only adapter <qmp/adapters/libevent.h> (build with libevent;
 * libqmp itself does not link libevent).
 *
 * Connects asynchronously, runs query-status and query-version at once,
 * pauses the guest ("stop"), resumes it ("cont") when the STOP event
 * comes, and breaks the loop once RESUME has come and every reply is in.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./libevent-client /tmp/qmp.sock
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>
#include <qmp/adapters/libevent.h>

typedef struct demo {
    struct event_base *loop;
    int pending; /* calls started and not yet answered */
    int resumed; /* RESUME has come */
    int status;  /* exit status */
} demo;

static void finish_if_done(demo *d)
{
    if (d->status != 0 || (d->resumed && d->pending == 0))
        event_base_loopbreak(d->loop);
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

int main(int argc, char **argv)
{
    demo d = {0};
    qmp_client *c = NULL;
    qmp_libevent *handle = NULL;
    qmp_error err = QMP_ERROR_INIT;

    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
        return 2;
    }
    d.loop = event_base_new();
    if (d.loop == NULL || qmp_client_new(&c) < 0)
        return 1;
    qmp_client_set_connect_callback(c, on_connect, &d);
    qmp_client_set_disconnect_callback(c, on_disconnect, &d);
    /* Subscribe before starting the commands whose events we wait for. */
    qmp_client_subscribe(c, "STOP", on_event, &d, NULL);
    qmp_client_subscribe(c, "RESUME", on_event, &d, NULL);
    if (qmp_libevent_attach(c, d.loop, &handle) < 0)
        return 1;

    if (qmp_client_connect_async(c, argv[1], &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.message);
        d.status = 1;
    } else {
        /* The client's connect and call timeouts bound the run. */
        event_base_dispatch(d.loop);
    }

    qmp_libevent_detach(handle);
    qmp_client_unref(c);
    event_base_free(d.loop);
    return d.status;
}
