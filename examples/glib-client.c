/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * glib-client: the non-blocking client in a GLib main loop, through the
 * header-only adapter <qmp/adapters/glib.h> (build with glib-2.0; libqmp
 * itself does not link GLib).
 *
 * Connects asynchronously, runs query-status and query-version at once,
 * pauses the guest ("stop"), resumes it ("cont") when the STOP event
 * comes, and quits the loop once RESUME has come and every reply is in.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./glib-client /tmp/qmp.sock
 */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>
#include <qmp/adapters/glib.h>

#include "async-demo.h"

/* How the shared demo stops this example's loop. */
static void quit_loop(void *loop)
{
    g_main_loop_quit(loop);
}

int main(int argc, char **argv)
{
    demo d = {.quit = quit_loop};
    qmp_client *c = NULL;
    GSource *source = NULL;
    qmp_error err = QMP_ERROR_INIT;

    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
        return 2;
    }
    if (qmp_client_new(&c) < 0)
        return 1;
    d.loop = g_main_loop_new(NULL, FALSE);
    demo_setup(c, &d);
    /* The client becomes a GSource of the default main context. */
    qmp_glib_attach(c, NULL, &source);

    if (qmp_client_connect_async(c, argv[1], &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.message);
        d.status = 1;
    } else {
        /* The client's connect and call timeouts bound the run. */
        g_main_loop_run(d.loop);
    }

    qmp_glib_detach(source);
    qmp_client_unref(c);
    g_main_loop_unref(d.loop);
    return d.status;
}
