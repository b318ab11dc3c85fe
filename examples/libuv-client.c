/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libuv-client: the non-blocking client in a libuv loop, through the
 * header-only adapter <qmp/adapters/libuv.h> (build with libuv; libqmp
 * itself does not link libuv).
 *
 * Connects asynchronously, runs query-status and query-version at once,
 * pauses the guest ("stop"), resumes it ("cont") when the STOP event
 * comes, and stops the loop once RESUME has come and every reply is in.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./libuv-client /tmp/qmp.sock
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>
#include <qmp/adapters/libuv.h>

#include "async-demo.h"

/* How the shared demo stops this example's loop. */
static void quit_loop(void *loop)
{
    uv_stop(loop);
}

int main(int argc, char **argv)
{
    demo d = {.quit = quit_loop};
    qmp_client *c = NULL;
    qmp_uv *handle = NULL;
    qmp_error err = QMP_ERROR_INIT;
    uv_loop_t loop;

    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
        return 2;
    }
    if (uv_loop_init(&loop) < 0 || qmp_client_new(&c) < 0)
        return 1;
    d.loop = &loop;
    demo_setup(c, &d);
    if (qmp_uv_attach(c, &loop, &handle) < 0)
        return 1;

    if (qmp_client_connect_async(c, argv[1], &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.message);
        d.status = 1;
    } else {
        /* The client's connect and call timeouts bound the run. */
        uv_run(&loop, UV_RUN_DEFAULT);
    }

    qmp_uv_detach(handle);
    qmp_client_unref(c);
    /* Lets the adapter's handles finish closing. */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
    return d.status;
}
