/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * events: prints the events a QEMU sends, for a limited time.
 *
 * Waits with one deadline for the whole run rather than a timeout per
 * event, so a steady trickle of events cannot keep it alive for ever.
 * Stops early when QEMU closes the connection (after "quit", say).
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off \
 *       -qmp unix:/tmp/qmp2.sock,server=on,wait=off &
 *   ./events /tmp/qmp.sock 30 &
 *   qmp -s /tmp/qmp2.sock stop        (a second monitor: one client each)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void print_event(qmp_event *ev)
{
    /* The data is decoded on first use and borrowed from the event. */
    json_object *data = qmp_event_data(ev);

    printf("%lld.%06lld %s %s\n", (long long)qmp_event_seconds(ev),
           (long long)qmp_event_microseconds(ev), qmp_event_name(ev),
           data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_client *c = NULL;
    long long deadline;
    int n = 0, r;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s ADDRESS [SECONDS]   (default 10 seconds)\n", argv[0]);
        return 2;
    }
    deadline = now_ms() + 1000LL * (argc == 3 ? atoi(argv[2]) : 10);

    if (qmp_client_new(&c) < 0)
        return 1;
    if (qmp_client_connect(c, argv[1], &err) < 0) {
        fprintf(stderr, "connect: %s\n", err.message);
        qmp_client_unref(c);
        return 1;
    }

    for (;;) {
        long long left = deadline - now_ms();
        qmp_event *ev = NULL;

        /* 0 ms left still takes what already arrived, without waiting. */
        r = qmp_client_next_event(c, left > 0 ? (int)left : 0, &ev, &err);
        if (r == -ETIMEDOUT || r == -EAGAIN) {
            r = 0; /* the deadline passed: a normal end */
            break;
        }
        if (r < 0 && err.category == QMP_ERR_DISCONNECTED) {
            printf("QEMU closed the connection\n");
            r = 0;
            break;
        }
        if (r < 0) {
            fprintf(stderr, "next_event: %s\n", err.message);
            break;
        }
        print_event(ev);
        qmp_event_unref(ev);
        n++;
    }

    /* The queue is bounded; if we had been too slow, the oldest events
     * would have been dropped and counted. */
    printf("%d events, %llu lost\n", n, (unsigned long long)qmp_client_events_lost(c));
    qmp_client_unref(c);
    return r < 0;
}
