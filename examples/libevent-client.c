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

#include "async-demo.h"

/* How the shared demo stops this example's loop. */
static void quit_loop(void *loop)
{
    event_base_loopbreak(loop);
}

int main(int argc, char **argv)
{
    demo d = {.quit = quit_loop};
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
    demo_setup(c, &d);
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
