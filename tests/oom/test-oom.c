/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Allocation-failure walk: runs each scenario again and again, failing the
 * first, second, third ... allocation, until a run needs no failure.  Every
 * run must end without a crash, with every command's callback called
 * exactly once, and with as many frees as allocations (no leak).
 *
 * The program replaces malloc, calloc, realloc and free (glibc supports
 * this) and forwards to glibc's own allocator.  It is not built with
 * AddressSanitizer, which owns the allocator itself.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

/* The walk's state; only this test program has it. */
static bool armed;
static long alloc_count; /* allocations done while armed */
static long fail_at;     /* fail the allocation with this index (-1: none) */
static bool injected;
static long live; /* allocations minus frees while armed */

static bool should_fail(void)
{
    if (!armed)
        return false;
    if (alloc_count++ == fail_at) {
        injected = true;
        return true;
    }
    return false;
}

void *malloc(size_t size)
{
    if (should_fail())
        return NULL;
    void *p = __libc_malloc(size);
    if (p && armed)
        live++;
    return p;
}

void *calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = __libc_calloc(n, size);
    if (p && armed)
        live++;
    return p;
}

void *realloc(void *old, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = __libc_realloc(old, size);
    if (p && armed && old == NULL)
        live++;
    return p;
}

void free(void *p)
{
    if (p && armed)
        live--;
    __libc_free(p);
}

/* ---------------------------------------------------------------- walking */

typedef void (*scenario_fn)(void);

/* Runs scenario with allocation n failing, for n = 0, 1, ... until a run
 * needs no injected failure.  Returns the number of runs. */
static long walk(scenario_fn scenario, const char *name)
{
    long n = 0, last = 100000;
    /* QMP_OOM_AT=N runs only the run that fails allocation N (debugging). */
    if (getenv("QMP_OOM_AT") != NULL)
        n = last = atol(getenv("QMP_OOM_AT"));
    for (; n <= last; n++) {
        alloc_count = 0;
        injected = false;
        live = 0;
        fail_at = n;
        armed = true;
        scenario();
        armed = false;
        if (live != 0) {
            HARNESS_FAIL_("%s: %ld allocation(s) leaked when allocation %ld failed", name, live, n);
            return n;
        }
        if (n == 0 && alloc_count == 0) {
            /* Our malloc was never called (a tool such as valgrind
             * replaced it): nothing can be walked. */
            printf("# %s: allocator not interposed\n", name);
            return -1;
        }
        if (!injected)
            break;
    }
    printf("# %s: %ld allocation-failure runs\n", name, n);
    return n;
}

/* ---------------------------------------------------------------- session */

static int replies_seen[8];
static int events_seen;

static void on_reply(qmp_session *s, qmp_reply *r, void *userdata)
{
    (void)s;
    replies_seen[(intptr_t)userdata]++;
    /* Touch the lazily decoded parts; they may fail with ENOMEM. */
    json_object *v = NULL;
    if (qmp_reply_get_return(r, &v) == 0)
        json_object_put(v);
    json_object_put(qmp_reply_to_json(r));
}

static void on_event(qmp_session *s, qmp_event *ev, void *userdata)
{
    (void)s;
    (void)userdata;
    events_seen++;
    (void)qmp_event_data(ev);
    json_object_put(qmp_event_to_json(ev));
}

static const char greeting[] =
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "
    "\"package\": \"test\"}, \"capabilities\": [\"oob\"]}}\r\n";

static void feed_str(qmp_session *s, const char *text)
{
    qmp_error err;
    (void)qmp_session_feed(s, text, strlen(text), &err);
}

static void drain(qmp_session *s)
{
    size_t len;
    while (qmp_session_get_output(s, &len, NULL, NULL) != NULL && len > 0)
        qmp_session_consume_output(s, len);
}

static void session_scenario(void)
{
    qmp_session *s = NULL;
    qmp_error err;
    bool sent[4] = {false, false, false, false};
    uint64_t tags[4] = {0, 0, 0, 0};

    memset(replies_seen, 0, sizeof(replies_seen));
    events_seen = 0;
    if (qmp_session_new(&s) < 0)
        return;
    qmp_session_set_want_oob(s, 1);
    qmp_session_set_event_callback(s, on_event, NULL);

    feed_str(s, "{\"event\": \"EARLY\", \"data\": {\"a\": [1, 2, {\"b\": \"c\"}]}, "
                "\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n");
    feed_str(s, greeting);
    drain(s);
    feed_str(s, "{\"return\": {}, \"id\": \"libqmp:1\"}\r\n");

    json_object *args = NULL;
    if (qmp_json_build(&args, &err, "{'id': %s, 'n': %d, 'list': [1, 'two', {'x': 3.5}]}", "dev\"0",
                       42) == 0) {
        sent[0] = qmp_session_send_command(s, "device_add", args, 0, NULL, 0, on_reply, (void *)0,
                                           &tags[0], &err) == 0;
        json_object_put(args);
    }
    int fds[1] = {0};
    sent[1] = qmp_session_send_command(s, "getfd", NULL, 0, fds, 1, on_reply, (void *)1, &tags[1],
                                       &err) == 0;
    json_object *raw = NULL;
    if (qmp_json_build(&raw, &err, "{'execute': 'query-status', 'id': {'mine': 7}}") == 0) {
        sent[2] = qmp_session_send_raw(s, raw, NULL, 0, on_reply, (void *)2, &tags[2], &err) == 0;
        json_object_put(raw);
    }
    sent[3] = qmp_session_send_command(s, "query-name", NULL, 0, NULL, 0, on_reply, (void *)3,
                                       &tags[3], &err) == 0;
    drain(s);
    if (sent[3])
        (void)qmp_session_cancel(s, tags[3], NULL);

    char buf[512];
    if (sent[1]) {
        snprintf(buf, sizeof(buf),
                 "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no fd\"}, "
                 "\"id\": \"libqmp:%llu\"}\r\n",
                 (unsigned long long)tags[1]);
        feed_str(s, buf);
    }
    feed_str(s, "{\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}, \"event\": \"STOP\"}\r\n"
                "{\"return\": {\"status\": \"running\", \"running\": true}, \"id\": {\"mine\": 7}}"
                "\r\n");
    if (sent[0]) {
        /* A reply split across feeds goes through the framer's buffer. */
        snprintf(buf, sizeof(buf),
                 "{\"return\": {\"big\": 18446744073709551615, \"s\": \"\\u00e9\\ud83d\\ude00\"},"
                 " \"id\": \"libqmp:%llu\"}\r\n",
                 (unsigned long long)tags[0]);
        size_t half = strlen(buf) / 2;
        qmp_session_feed(s, buf, half, &err);
        feed_str(s, buf + half);
    }
    qmp_session_feed_eof(s, &err);
    qmp_session_unref(s);

    for (int i = 0; i < 4; i++) {
        if (sent[i] && replies_seen[i] != 1)
            HARNESS_FAIL_("command %d: callback called %d times (fail_at %ld)", i, replies_seen[i],
                          fail_at);
        if (!sent[i] && replies_seen[i] != 0)
            HARNESS_FAIL_("command %d failed to send but its callback ran (fail_at %ld)", i,
                          fail_at);
    }
}

TEST(session_allocation_failures)
{
    long runs = walk(session_scenario, "session");
    if (runs < 0) {
        harness_skip("malloc is not interposed here");
        return;
    }
    CHECK(runs > 20);
}

/* ------------------------------------------------------------------- JSON */

static void json_scenario(void)
{
    static const char doc[] =
        "{\"a\": [1, -2, 3.25, 1e3, true, false, null, \"x\\n\\u00e9\"], "
        "\"b\": {\"c\": {\"d\": [[], {}, [{\"e\": 18446744073709551615}]]}}, "
        "\"long key that does not fit the small buffer of the parser, so it goes to the heap "
        "instead, as long keys do\": \"v\"}";
    json_object *v = NULL;
    qmp_error err;

    if (qmp_json_parse(doc, sizeof(doc) - 1, 0, &v, &err) == 0) {
        json_object *pattern = NULL;
        if (qmp_json_build(&pattern, &err, "{'b': {'c': {'d': [[], {}, [{'e': %llu}]]}}}",
                           18446744073709551615ULL) == 0) {
            if (!qmp_json_match(v, pattern))
                HARNESS_FAIL_("match failed (fail_at %ld)", fail_at);
            json_object_put(pattern);
        }
        json_object_put(v);
    } else if (err.code != -ENOMEM) {
        HARNESS_FAIL_("parse failed with %d, not -ENOMEM: %s", err.code, err.message);
    }
}

TEST(json_allocation_failures)
{
    long runs = walk(json_scenario, "json");
    if (runs < 0) {
        harness_skip("malloc is not interposed here");
        return;
    }
    CHECK(runs > 20);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(session_allocation_failures);
    RUN(json_allocation_failures);
    return harness_done();
}
