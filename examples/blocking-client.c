/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * blocking-client: the blocking client in a few calls.
 *
 * Connects to a QEMU, prints its version and run state, pauses and resumes
 * the guest waiting for the events that confirm it, and shows how a QMP
 * error reply (QEMU said no) differs from a failure of the connection.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./blocking-client /tmp/qmp.sock
 */
#include <errno.h>
#include <stdio.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

/* Every failure comes with a qmp_error saying what kind it was and why. */
static int fail(const char *what, const qmp_error *err)
{
    fprintf(stderr, "%s failed (%s): %s\n", what, qmp_error_category_name(err->category),
            err->message);
    return -1;
}

/*
 * Runs a command without arguments and waits for the event that confirms
 * it.  QEMU may send the event before the reply; the client queues events
 * that arrive during a call, so waiting after the reply cannot miss it.
 */
static int run_and_wait(qmp_client *c, const char *command, const char *event)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;

    if (qmp_client_execute(c, command, NULL, NULL, &err) < 0)
        return fail(command, &err);
    if (qmp_client_wait_event(c, event, NULL, 5000, &ev, &err) < 0)
        return fail(event, &err);
    printf("%s: got %s at %lld.%06lld\n", command, qmp_event_name(ev),
           (long long)qmp_event_seconds(ev), (long long)qmp_event_microseconds(ev));
    qmp_event_unref(ev); /* wait_event handed us a new reference */
    return 0;
}

/* device_del of a device that does not exist: an error reply, not a failure
 * of the client, which stays connected and usable. */
static int show_error_reply(qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *args = json_object_new_object();
    int r;

    if (!args)
        return -1;
    /* object_add steals the new string; args stays ours to put. */
    json_object_object_add(args, "id", json_object_new_string("no-such-device"));
    r = qmp_client_execute(c, "device_del", args, NULL, &err);
    json_object_put(args);

    if (r == -EREMOTEIO && err.qmp_class == QMP_CLASS_DEVICE_NOT_FOUND) {
        printf("device_del refused, as expected: %s: %s\n", err.class_name, err.message);
        return 0;
    }
    if (r < 0)
        return fail("device_del", &err);
    fprintf(stderr, "device_del unexpectedly succeeded\n");
    return -1;
}

int main(int argc, char **argv)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *status = NULL;
    qmp_client *c = NULL;
    int major, minor, micro, ret = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS   (e.g. /tmp/qmp.sock or localhost:4444)\n", argv[0]);
        return 2;
    }
    if (qmp_client_new(&c) < 0) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    qmp_client_set_timeout(c, 5000); /* deadline of every call, in ms */

    /* Connect, read the greeting and negotiate capabilities in one call. */
    if (qmp_client_connect(c, argv[1], &err) < 0) {
        fail("connect", &err);
        goto out;
    }
    qmp_greeting_version(qmp_client_get_greeting(c), &major, &minor, &micro);
    printf("connected to QEMU %d.%d.%d (%s)\n", major, minor, micro,
           qmp_greeting_package(qmp_client_get_greeting(c)));

    /* The return value is a new reference: put it when done. */
    if (qmp_client_execute(c, "query-status", NULL, &status, &err) < 0) {
        fail("query-status", &err);
        goto out;
    }
    printf("status: %s\n", json_object_get_string(json_object_object_get(status, "status")));
    json_object_put(status);

    if (run_and_wait(c, "stop", "STOP") < 0 || run_and_wait(c, "cont", "RESUME") < 0)
        goto out;
    if (show_error_reply(c) < 0)
        goto out;
    ret = 0;
out:
    qmp_client_unref(c); /* closes the connection */
    return ret;
}
