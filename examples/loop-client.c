/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * loop-client: the non-blocking client driven by qmp_loop, for programs
 * that have no event loop of their own.
 *
 * Connects asynchronously, runs query-status and query-version at once,
 * pauses the guest ("stop"), resumes it ("cont") when the STOP event
 * comes, and quits the loop once RESUME has come and every reply is in.
 * The adapter examples (glib-client, libuv-client, libevent-client) do
 * the same with another loop.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./loop-client /tmp/qmp.sock
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "async-demo.h"

/* How the shared demo stops this example's loop. */
static void quit_loop(void *loop)
{
    qmp_loop_quit(loop);
}

int main(int argc, char **argv)
{
    demo d = {.quit = quit_loop};
    qmp_loop *loop = NULL;
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;

    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
        return 2;
    }
    if (qmp_loop_new(&loop) < 0 || qmp_client_new(&c) < 0)
        return 1;
    d.loop = loop;
    demo_setup(c, &d);
    qmp_loop_add_client(loop, c);

    if (qmp_client_connect_async(c, argv[1], &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.message);
        d.status = 1;
    } else if (qmp_loop_run(loop, 60000, &err) < 0) {
        fprintf(stderr, "loop: %s\n", err.message);
        d.status = 1;
    }

    /* Freeing the loop drops its reference; ours goes last. */
    qmp_loop_free(loop);
    qmp_client_unref(c);
    return d.status;
}
