/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One qmp_client in thread-safe mode (qmp_client_set_thread_safe())
 * shared by many threads, against the fake QEMU serving requests in the
 * order they arrive:
 *
 *   - thousands of blocking calls (execute, command, send_raw, error
 *     replies, large replies) whose arguments differ per call and whose
 *     replies echo them, so a reply handed to the wrong thread shows;
 *   - a held reply times out on schedule, with its thread reading the
 *     socket for the others or waiting while another does, while the
 *     other threads' calls go on completing; its late reply goes to
 *     nobody;
 *   - events fan out to every thread waiting for them, each getting its
 *     own event object; threads waiting for another name get nothing;
 *     events nobody waits for are queued, events a subscription takes
 *     are not;
 *   - a disconnect wakes every blocked thread at once, long before its
 *     deadline, and ends a pending asynchronous call too;
 *   - asynchronous calls (with a cancel and a timeout among them) from
 *     one thread mix with blocking calls and qmp_client_process() from
 *     others.
 *
 * Nothing sleeps to synchronise: threads announce themselves through
 * counters (mutex and condition variable), the fake reports what it
 * received the same way, and every wait and join has a deadline.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "fake-qemu.h"
#include "harness.h"
#include "qmp/qmp.h"
#include "threads-util.h"

#define N_THREADS 12
#define CALLS_PER_THREAD 500

/* Deadline of every call that must succeed: generous for valgrind. */
#define CALL_TIMEOUT_MS 30000

/* Slack for a call that must end at a given time, and for one that
 * must end at once (a disconnect), both well below CALL_TIMEOUT_MS. */
#define MARGIN_MS 5000

/* The held reply's deadline in the timeout tests. */
#define HOLD_MS 1500

/* Announcements and reports are waited for this long. */
#define WAIT_MS 60000

static char *xstrdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *xstrdup_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    return s;
}

static json_object *member(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (o == NULL || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

static int member_int(json_object *o, const char *key, int dflt)
{
    json_object *v = member(o, key);
    return json_object_is_type(v, json_type_int) ? json_object_get_int(v) : dflt;
}

/* --------------------------------------------------------- the server */

/*
 * The fake's serve function understands:
 *   x-echo ARGS     replies {"echo": ARGS}, or with "fail": true in ARGS
 *                   a GenericError whose desc is "refused TAG";
 *   x-hold          keeps the request unanswered;
 *   x-release       answers every held request with {"late": true},
 *                   then itself with {};
 *   x-events        emits COPIES events NAME with data {"round": ROUND,
 *                   "copy": 0..COPIES-1} in one write, then replies {};
 *   x-stop          replies {} and ends the serve step.
 * Serving also ends once hold_limit requests were held (if set).
 */
#define MAX_HELD 64

typedef struct server {
    counter echoes; /* x-echo requests answered */
    counter holds;  /* x-hold requests received */
    unsigned hold_limit;
    /* The fake's thread only. */
    json_object *held[MAX_HELD];
    size_t n_held;
} server;

static void server_init(server *s, unsigned hold_limit)
{
    memset(s, 0, sizeof(*s));
    counter_init(&s->echoes);
    counter_init(&s->holds);
    s->hold_limit = hold_limit;
}

/* After the fake's thread ended. */
static void server_destroy(server *s)
{
    for (size_t i = 0; i < s->n_held; i++)
        json_object_put(s->held[i]);
    counter_destroy(&s->echoes);
    counter_destroy(&s->holds);
}

static int serve(fake_qemu *f, json_object *req, void *userdata)
{
    server *s = userdata;
    const char *cmd = json_object_get_string(member(req, "execute"));
    json_object *args = member(req, "arguments");

    if (cmd == NULL) {
        fake_qemu_record_error(f, "request without execute: %s", json_object_to_json_string(req));
        fake_qemu_answer_error(f, req, "GenericError", "no execute");
        return FAKE_QEMU_SERVE_MORE;
    }
    if (strcmp(cmd, "x-echo") == 0) {
        if (json_object_get_boolean(member(args, "fail"))) {
            char *desc = xstrdup_printf("refused %s", json_object_get_string(member(args, "tag")));
            fake_qemu_answer_error(f, req, "GenericError", desc);
            free(desc);
        } else {
            json_object *ret = json_object_new_object();
            json_object_object_add(ret, "echo", json_object_get(args));
            fake_qemu_answer(f, req, json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN));
            json_object_put(ret);
        }
        counter_add(&s->echoes, 1);
        return FAKE_QEMU_SERVE_MORE;
    }
    if (strcmp(cmd, "x-hold") == 0) {
        if (s->n_held == MAX_HELD) {
            fake_qemu_record_error(f, "too many held requests");
            fake_qemu_answer_error(f, req, "GenericError", "too many held requests");
            return FAKE_QEMU_SERVE_MORE;
        }
        s->held[s->n_held++] = json_object_get(req);
        counter_add(&s->holds, 1);
        return s->hold_limit != 0 && counter_get(&s->holds) >= (long)s->hold_limit
                   ? FAKE_QEMU_SERVE_DONE
                   : FAKE_QEMU_SERVE_MORE;
    }
    if (strcmp(cmd, "x-release") == 0) {
        for (size_t i = 0; i < s->n_held; i++) {
            fake_qemu_answer(f, s->held[i], "{\"late\": true}");
            json_object_put(s->held[i]);
        }
        s->n_held = 0;
        fake_qemu_answer(f, req, "{}");
        return FAKE_QEMU_SERVE_MORE;
    }
    if (strcmp(cmd, "x-events") == 0) {
        const char *name = json_object_get_string(member(args, "name"));
        int copies = member_int(args, "copies", 0);
        int round = member_int(args, "round", 0);
        for (int i = 0; i < copies; i++) {
            char data[64];
            snprintf(data, sizeof(data), "{\"round\": %d, \"copy\": %d}", round, i);
            fake_qemu_emit(f, name ? name : "NONAME", data);
        }
        fake_qemu_answer(f, req, "{}");
        return FAKE_QEMU_SERVE_MORE;
    }
    if (strcmp(cmd, "x-stop") == 0) {
        fake_qemu_answer(f, req, "{}");
        return FAKE_QEMU_SERVE_DONE;
    }
    fake_qemu_record_error(f, "unexpected command %s", cmd);
    fake_qemu_answer_error(f, req, "CommandNotFound", "unexpected command");
    return FAKE_QEMU_SERVE_MORE;
}

/* ----------------------------------------------------------- the client */

/* The outcome of an asynchronous call, from its callback. */
typedef struct async_rec {
    counter done;
    int status;
    qmp_error_category category;
} async_rec;

static void on_async_reply(qmp_client *c, qmp_reply *reply, void *userdata)
{
    async_rec *a = userdata;
    (void)c;
    a->status = qmp_reply_status(reply);
    const qmp_error *e = qmp_reply_error(reply);
    a->category = e != NULL ? e->category : QMP_ERR_NONE;
    counter_add(&a->done, 1);
}

static void on_disconnect(qmp_client *c, const qmp_error *err, void *userdata)
{
    (void)c;
    (void)err;
    counter_add(userdata, 1);
}

/* A thread-safe client connected to f (started here), or NULL. */
static qmp_client *connect_shared(fake_qemu *f, counter *disconnects)
{
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;

    if (qmp_client_new(&c) != 0)
        return NULL;
    if (qmp_client_set_thread_safe(c, 1) != 0 || qmp_client_set_timeout(c, CALL_TIMEOUT_MS) != 0 ||
        qmp_client_set_connect_timeout(c, CALL_TIMEOUT_MS) != 0 || fake_qemu_start(f) != 0) {
        printf("# cannot set up the client or start the fake\n");
        return qmp_client_unref(c);
    }
    if (disconnects != NULL)
        qmp_client_set_disconnect_callback(c, on_disconnect, disconnects);
    int r = qmp_client_connect_fd(c, fake_qemu_take_client_fd(f), &err);
    if (r != 0) {
        printf("# connect: %d: %s\n", r, err.message);
        return qmp_client_unref(c);
    }
    return c;
}

/* Ends the serve step; the fake then expects nothing more. */
static void stop_serving(qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    int r = qmp_client_execute(c, "x-stop", NULL, NULL, &err);
    if (r != 0)
        HARNESS_FAIL_("x-stop: %d: %s", r, err.message);
}

static void finish(fake_qemu *f, qmp_client *c, server *s)
{
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    qmp_client_unref(c);
    server_destroy(s);
}

/* What a worker saw: calls that went right and wrong, and the first
 * thing that went wrong. */
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

static void check_tally(const char *who, int i, const tally *t)
{
    if (t->bad != 0)
        HARNESS_FAIL_("%s %d: %ld calls went wrong, the first: %s", who, i, t->bad, t->first);
}

/* Padding whose length and letters depend on the call: now and then
 * larger than the client's read buffer, so replies span reads, or than
 * a socket buffer, so requests take several writes. */
static char *make_pad(int thread, int seq)
{
    size_t len = (size_t)(thread * 7919 + seq * 613) % 2048;
    if (seq % 128 == 127)
        len = 300000 + (size_t)thread;
    else if (seq % 32 == 31)
        len = 40000 + (size_t)thread;
    char *pad = malloc(len + 1);
    if (pad == NULL)
        abort();
    for (size_t i = 0; i < len; i++)
        pad[i] = (char)('a' + (thread * 3 + seq + (int)i) % 26);
    pad[len] = '\0';
    return pad;
}

static bool is_echo_of(json_object *ret, json_object *args)
{
    json_object *echo = member(ret, "echo");
    return echo != NULL && json_object_equal(echo, args);
}

/*
 * One blocking call of x-echo through one of the API's entry points
 * (chosen by seq), with arguments unique to (thread, seq); checks that
 * the reply is this call's own.  Returns 0 or -1 (t records why).
 */
static int echo_call(qmp_client *c, int thread, int seq, tally *t)
{
    char tag[64];
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    int r, bad = 0;

    snprintf(tag, sizeof(tag), "t%d-%d", thread, seq);
    char *pad = make_pad(thread, seq);
    json_object *args = json_object_new_object();
    json_object_object_add(args, "thread", json_object_new_int(thread));
    json_object_object_add(args, "seq", json_object_new_int(seq));
    json_object_object_add(args, "tag", json_object_new_string(tag));
    json_object_object_add(args, "pad", json_object_new_string(pad));

    switch (seq % 5) {
    case 0:
        r = qmp_client_execute(c, "x-echo", args, &ret, &err);
        if (r != 0 || !is_echo_of(ret, args))
            bad = 1;
        break;
    case 1:
        r = qmp_client_command(c, &ret, &err, "x-echo",
                               "{'thread': %d, 'seq': %d, 'tag': %s, 'pad': %s}", thread, seq, tag,
                               pad);
        if (r != 0 || !is_echo_of(ret, args))
            bad = 1;
        break;
    case 2: {
        char id[80];
        snprintf(id, sizeof(id), "raw-%s", tag);
        json_object *msg = json_object_new_object();
        json_object_object_add(msg, "execute", json_object_new_string("x-echo"));
        json_object_object_add(msg, "arguments", json_object_get(args));
        json_object_object_add(msg, "id", json_object_new_string(id));
        r = qmp_client_send_raw(c, msg, QMP_TIMEOUT_DEFAULT, &ret, &err);
        json_object_put(msg);
        const char *rid = json_object_get_string(member(ret, "id"));
        if (r != 0 || rid == NULL || strcmp(rid, id) != 0 ||
            !is_echo_of(member(ret, "return"), args))
            bad = 1;
        break;
    }
    case 3: {
        char want[80];
        snprintf(want, sizeof(want), "refused %s", tag);
        json_object_object_add(args, "fail", json_object_new_boolean(1));
        r = qmp_client_execute(c, "x-echo", args, &ret, &err);
        if (r != -EREMOTEIO || err.category != QMP_ERR_COMMAND ||
            err.qmp_class != QMP_CLASS_GENERIC_ERROR || strcmp(err.message, want) != 0 ||
            ret != NULL)
            bad = 1;
        break;
    }
    default:
        /* No value wanted: the reply is consumed all the same. */
        r = qmp_client_execute_full(c, "x-echo", args, 0, CALL_TIMEOUT_MS, NULL, 0, NULL, &err);
        if (r != 0)
            bad = 1;
        break;
    }
    if (bad) {
        const char *got = ret != NULL ? json_object_to_json_string(ret) : "(none)";
        tally_bad(t, "%s (kind %d): returned %d (%s), reply %.200s", tag, seq % 5, r, err.message,
                  got);
    } else {
        t->ok++;
    }
    json_object_put(ret);
    json_object_put(args);
    free(pad);
    return bad ? -1 : 0;
}

/* ------------------------------------------------------ many threads */

typedef struct echo_worker {
    qmp_client *c;
    int id;
    int calls;
    tally t;
} echo_worker;

static void *echo_main(void *arg)
{
    echo_worker *w = arg;
    for (int i = 0; i < w->calls; i++)
        echo_call(w->c, w->id, i, &w->t);
    return NULL;
}

/* N_THREADS threads, CALLS_PER_THREAD calls each, every reply checked. */
TEST(echo_many_threads)
{
    server s;
    server_init(&s, 0);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    qmp_client *c = connect_shared(f, NULL);
    REQUIRE(c != NULL);

    echo_worker w[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (echo_worker){.c = c, .id = i, .calls = CALLS_PER_THREAD};
        threads_start(&th[i], echo_main, &w[i]);
    }
    long ok = 0;
    for (int i = 0; i < N_THREADS; i++) {
        threads_join(th[i], "echo worker");
        check_tally("worker", i, &w[i].t);
        ok += w[i].t.ok;
    }
    CHECK_EQ_INT(ok, N_THREADS * CALLS_PER_THREAD);
    CHECK_EQ_INT(counter_get(&s.echoes), N_THREADS * CALLS_PER_THREAD);
    CHECK_EQ_INT(qmp_client_is_connected(c), 1);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    stop_serving(c);
    finish(f, c, &s);
}

/* ------------------------------------------------------------ timeouts */

/* Threads that call x-echo until told to stop, counting the calls that
 * ran entirely inside a window the test opens and closes. */
typedef struct hammer {
    qmp_client *c;
    int id;
    counter *stop;   /* stop once > 0 */
    counter *window; /* 1: open, 2: closed */
    counter *started;
    long in_window;
    tally t;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    for (int seq = 0; counter_get(h->stop) == 0; seq++) {
        bool open = counter_get(h->window) == 1;
        int r = echo_call(h->c, h->id, seq, &h->t);
        /* Read concurrently with the threads that change them. */
        (void)qmp_client_events_queued(h->c);
        (void)qmp_client_events_lost(h->c);
        if (r == 0 && open && counter_get(h->window) == 1)
            h->in_window++;
        if (seq == 0)
            counter_add(h->started, 1);
    }
    return NULL;
}

/* Opens the window unless the held call already ended (closed it). */
static void open_window(counter *window)
{
    pthread_mutex_lock(&window->lock);
    if (window->value == 0)
        window->value = 1;
    pthread_mutex_unlock(&window->lock);
}

/* A thread whose x-hold call must time out after timeout_ms; it closes
 * the window (if any) when its call returned. */
typedef struct holder {
    qmp_client *c;
    int timeout_ms;
    counter *window;
    int rc;
    qmp_error err;
    long long elapsed_ms;
} holder;

static void *holder_main(void *arg)
{
    holder *h = arg;
    json_object *args = json_object_new_object();
    json_object_object_add(args, "who", json_object_new_string("holder"));
    long long t0 = threads_now_ms();
    h->rc = qmp_client_execute_full(h->c, "x-hold", args, 0, h->timeout_ms, NULL, 0, NULL, &h->err);
    h->elapsed_ms = threads_now_ms() - t0;
    if (h->window != NULL)
        counter_set(h->window, 2);
    json_object_put(args);
    return NULL;
}

/* Checks that h's call timed out on schedule. */
static void check_took(const char *who, const holder *h)
{
    CHECK_EQ_INT(h->rc, -ETIMEDOUT);
    if (h->elapsed_ms < h->timeout_ms - 1 || h->elapsed_ms > h->timeout_ms + MARGIN_MS)
        HARNESS_FAIL_("%s's call took %lld ms, its timeout was %d ms", who, h->elapsed_ms,
                      h->timeout_ms);
}

/*
 * One thread's call gets no reply and times out after HOLD_MS while the
 * others keep calling.  holder_first: the holder starts alone, so it is
 * the thread reading the socket for the others when they come; else the
 * others run first and the holder joins them.
 */
static void held_reply_case(bool holder_first)
{
    enum { N_HAMMERS = N_THREADS - 1 };
    server s;
    server_init(&s, 0);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    qmp_client *c = connect_shared(f, NULL);
    REQUIRE(c != NULL);

    counter stop, window, started;
    counter_init(&stop);
    counter_init(&window);
    counter_init(&started);
    hammer h[N_HAMMERS];
    pthread_t th[N_HAMMERS], hth;
    holder hd = {.c = c, .timeout_ms = HOLD_MS, .window = &window};

    if (holder_first) {
        threads_start(&hth, holder_main, &hd);
        CHECK(counter_wait(&s.holds, 1, WAIT_MS));
        open_window(&window);
    }
    for (int i = 0; i < N_HAMMERS; i++) {
        h[i] = (hammer){.c = c, .id = i, .stop = &stop, .window = &window, .started = &started};
        threads_start(&th[i], hammer_main, &h[i]);
    }
    if (!holder_first) {
        CHECK(counter_wait(&started, N_HAMMERS, WAIT_MS));
        threads_start(&hth, holder_main, &hd);
        CHECK(counter_wait(&s.holds, 1, WAIT_MS));
        open_window(&window);
    }
    threads_join(hth, "holder");
    check_took("the holder", &hd);
    CHECK_EQ_INT(hd.err.category, QMP_ERR_TIMEOUT);
    CHECK_CONTAINS(hd.err.message, "x-hold");

    /* The late reply arrives while the others still call: nobody gets it. */
    qmp_error err = QMP_ERROR_INIT;
    json_object *ret = NULL;
    CHECK_EQ_INT(qmp_client_execute(c, "x-release", NULL, &ret, &err), 0);
    CHECK(ret != NULL && json_object_object_length(ret) == 0);
    json_object_put(ret);
    counter_set(&stop, 1);
    for (int i = 0; i < N_HAMMERS; i++) {
        threads_join(th[i], "hammer");
        check_tally("hammer", i, &h[i].t);
        /* Every other thread completed calls while the held one waited. */
        if (h[i].in_window == 0)
            HARNESS_FAIL_("hammer %d completed no call while the held call waited", i);
    }
    /* The connection is still fine. */
    tally t = {0};
    CHECK_EQ_INT(echo_call(c, 99, 0, &t), 0);
    check_tally("main", 0, &t);
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    stop_serving(c);
    counter_destroy(&stop);
    counter_destroy(&window);
    counter_destroy(&started);
    finish(f, c, &s);
}

TEST(held_reply_times_out_reading_for_others)
{
    held_reply_case(true);
}

TEST(held_reply_times_out_among_others)
{
    held_reply_case(false);
}

/* ------------------------------------------------ the reading thread */

/* A thread waiting for WAKE, which the fake sends on its own. */
typedef struct event_taker {
    qmp_client *c;
    counter *announced;
    int rc;
    qmp_error err;
    qmp_event *ev;
    long long returned_ms;
} event_taker;

static void *event_taker_main(void *arg)
{
    event_taker *t = arg;
    counter_add(t->announced, 1);
    t->rc = qmp_client_wait_event(t->c, "WAKE", NULL, CALL_TIMEOUT_MS, &t->ev, &t->err);
    t->returned_ms = threads_now_ms();
    return NULL;
}

/* Checks that t got WAKE at most MARGIN_MS after sent_ms. */
static void check_woken(event_taker *t, long long sent_ms)
{
    CHECK_EQ_INT(t->rc, 0);
    if (t->rc == 0)
        CHECK_EQ_STR(qmp_event_name(t->ev), "WAKE");
    else
        printf("# %s\n", t->err.message);
    if (t->returned_ms - sent_ms > MARGIN_MS)
        HARNESS_FAIL_("WAKE was taken %lld ms after it was sent", t->returned_ms - sent_ms);
    qmp_event_unref(t->ev);
}

/* A raw x-hold with id "R" (which the script answers by itself). */
typedef struct raw_holder {
    qmp_client *c;
    int rc;
    qmp_error err;
    json_object *reply;
    long long returned_ms;
} raw_holder;

static void *raw_holder_main(void *arg)
{
    raw_holder *r = arg;
    json_object *msg = NULL;
    if (qmp_json_build(&msg, &r->err, "{'execute': 'x-hold', 'id': 'R'}") != 0)
        abort();
    r->rc = qmp_client_send_raw(r->c, msg, QMP_TIMEOUT_DEFAULT, &r->reply, &r->err);
    r->returned_ms = threads_now_ms();
    json_object_put(msg);
    return NULL;
}

/*
 * R waits for a reply the fake holds, reading the silent socket for
 * everyone.  Meanwhile an asynchronous call completes at once (R must
 * write it and read its reply), and H's call times out on schedule on
 * its own, as nothing R reads wakes it.  Then the fake answers R, which
 * leaves, and sends WAKE, which F (waiting all along) must get at once:
 * F took over the reading.
 */
TEST(reader_idle_others_keep_deadlines)
{
    server s;
    server_init(&s, 2);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    fake_qemu_hold(f);
    fake_qemu_send(f, "{\"return\": {\"late\": false}, \"id\": \"R\"}\r\n");
    fake_qemu_hold(f);
    fake_qemu_event(f, "WAKE", NULL);
    qmp_client *c = connect_shared(f, NULL);
    REQUIRE(c != NULL);

    counter announced;
    counter_init(&announced);
    raw_holder r = {.c = c};
    holder h = {.c = c, .timeout_ms = HOLD_MS};
    event_taker ft = {.c = c, .announced = &announced};
    pthread_t r_th, h_th, f_th;

    threads_start(&r_th, raw_holder_main, &r);
    CHECK(counter_wait(&s.holds, 1, WAIT_MS));
    async_rec a = {.status = 1};
    counter_init(&a.done);
    long long t0 = threads_now_ms();
    CHECK_EQ_INT(qmp_client_execute_async(c, "x-echo", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                          on_async_reply, &a, NULL, NULL),
                 0);
    CHECK(counter_wait(&a.done, 1, WAIT_MS));
    CHECK_EQ_INT(a.status, 0);
    if (threads_now_ms() - t0 > MARGIN_MS)
        HARNESS_FAIL_("the asynchronous call took %lld ms", threads_now_ms() - t0);
    counter_destroy(&a.done);

    threads_start(&f_th, event_taker_main, &ft);
    CHECK(counter_wait(&announced, 1, WAIT_MS));
    threads_start(&h_th, holder_main, &h);
    threads_join(h_th, "H");
    check_took("H", &h);

    long long sent_ms = threads_now_ms();
    fake_qemu_resume(f);
    threads_join(r_th, "R");
    CHECK_EQ_INT(r.rc, 0);
    CHECK_EQ_STR(json_object_get_string(member(r.reply, "id")), "R");
    json_object *late = member(member(r.reply, "return"), "late");
    CHECK(json_object_is_type(late, json_type_boolean) && !json_object_get_boolean(late));
    json_object_put(r.reply);
    if (r.returned_ms - sent_ms > MARGIN_MS)
        HARNESS_FAIL_("R got its reply %lld ms after it was sent", r.returned_ms - sent_ms);

    sent_ms = threads_now_ms();
    fake_qemu_resume(f);
    threads_join(f_th, "F");
    check_woken(&ft, sent_ms);
    CHECK_EQ_INT(fake_qemu_wait_done(f, WAIT_MS), 0);
    counter_destroy(&announced);
    finish(f, c, &s);
}

/*
 * R's call times out while R reads for F, who waits for an event: when
 * R gives up, F must take over the reading and get WAKE, sent later, at
 * once rather than at its own deadline.
 */
TEST(reader_times_out_hands_over)
{
    server s;
    server_init(&s, 1);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    fake_qemu_hold(f);
    fake_qemu_event(f, "WAKE", NULL);
    qmp_client *c = connect_shared(f, NULL);
    REQUIRE(c != NULL);

    counter announced;
    counter_init(&announced);
    holder r = {.c = c, .timeout_ms = HOLD_MS};
    event_taker ft = {.c = c, .announced = &announced};
    pthread_t r_th, f_th;

    threads_start(&r_th, holder_main, &r);
    CHECK(counter_wait(&s.holds, 1, WAIT_MS));
    threads_start(&f_th, event_taker_main, &ft);
    CHECK(counter_wait(&announced, 1, WAIT_MS));
    threads_join(r_th, "R");
    check_took("R", &r);

    long long sent_ms = threads_now_ms();
    fake_qemu_resume(f);
    threads_join(f_th, "F");
    check_woken(&ft, sent_ms);
    CHECK_EQ_INT(fake_qemu_wait_done(f, WAIT_MS), 0);
    counter_destroy(&announced);
    finish(f, c, &s);
}

/* -------------------------------------------------------------- events */

#define N_FAN 10
#define N_OTHER 2
#define FAN_ROUNDS_MAX 20

typedef struct ev_waiter {
    qmp_client *c;
    const char *name;
    int round; /* waits for data {"round": round}; -1: any data */
    counter *announced;
    int rc;
    qmp_error err;
    qmp_event *ev;
    int got_round;
    int got_copy;
} ev_waiter;

static void *ev_waiter_main(void *arg)
{
    ev_waiter *w = arg;
    json_object *match = NULL;

    if (w->round >= 0) {
        match = json_object_new_object();
        json_object_object_add(match, "round", json_object_new_int(w->round));
    }
    counter_add(w->announced, 1);
    w->rc = qmp_client_wait_event(w->c, w->name, match, CALL_TIMEOUT_MS, &w->ev, &w->err);
    if (w->rc == 0) {
        /* Decoded here, concurrently with the other threads' copies. */
        json_object *data = qmp_event_data(w->ev);
        w->got_round = member_int(data, "round", -1);
        w->got_copy = member_int(data, "copy", -1);
    }
    json_object_put(match);
    return NULL;
}

/* Emits copies events name with data {"round", "copy"} in one write. */
static void emit(qmp_client *c, const char *name, int copies, int round)
{
    qmp_error err = QMP_ERROR_INIT;
    json_object *args = NULL;
    int r =
        qmp_json_build(&args, &err, "{'name': %s, 'copies': %d, 'round': %d}", name, copies, round);
    if (r == 0)
        r = qmp_client_execute(c, "x-events", args, NULL, &err);
    if (r != 0)
        HARNESS_FAIL_("x-events %s: %d: %s", name, r, err.message);
    json_object_put(args);
}

/*
 * Checks n waiters that each waited for one of copies events name of
 * round round: each got its own event object, and every copy went either
 * to at least one waiter or to the queue (where it still is, in order;
 * it is taken from there).  Returns how many waiters got copy 0.
 */
static int check_fanned_out(qmp_client *c, ev_waiter *w, int n, const char *name, int copies,
                            int round)
{
    int recv[16] = {0};
    for (int i = 0; i < n; i++) {
        if (w[i].rc != 0) {
            HARNESS_FAIL_("waiter %d for %s: %d: %s", i, name, w[i].rc, w[i].err.message);
            continue;
        }
        CHECK_EQ_STR(qmp_event_name(w[i].ev), name);
        CHECK_EQ_INT(w[i].got_round, round);
        if (w[i].got_copy < 0 || w[i].got_copy >= copies) {
            HARNESS_FAIL_("waiter %d got copy %d", i, w[i].got_copy);
            continue;
        }
        recv[w[i].got_copy]++;
        for (int j = 0; j < i; j++) {
            if (w[j].rc == 0 && w[j].ev == w[i].ev)
                HARNESS_FAIL_("waiters %d and %d got the same event object", j, i);
        }
    }
    /* The copies nobody waited for are queued, oldest first. */
    int last = -1;
    for (;;) {
        qmp_event *ev = NULL;
        qmp_error err = QMP_ERROR_INIT;
        int r = qmp_client_wait_event(c, name, NULL, 0, &ev, &err);
        if (r == -EAGAIN)
            break;
        if (r != 0) {
            HARNESS_FAIL_("taking queued %s: %d: %s", name, r, err.message);
            break;
        }
        json_object *data = qmp_event_data(ev);
        int cp = member_int(data, "copy", -1);
        CHECK_EQ_INT(member_int(data, "round", -1), round);
        if (cp <= last || cp >= copies || recv[cp] != 0)
            HARNESS_FAIL_("queued copy %d (after %d) of %s, delivered %d times", cp, last, name,
                          cp >= 0 && cp < copies ? recv[cp] : -1);
        else
            recv[cp] = -1;
        last = cp;
        qmp_event_unref(ev);
    }
    for (int k = 0; k < copies; k++) {
        if (recv[k] == 0)
            HARNESS_FAIL_("copy %d of %s round %d neither delivered nor queued", k, name, round);
    }
    return recv[0] > 0 ? recv[0] : 0;
}

typedef struct sub_rec {
    pthread_mutex_t lock;
    int n;
    char name[32];
} sub_rec;

static void on_sub_event(qmp_client *c, qmp_event *ev, void *userdata)
{
    sub_rec *s = userdata;
    (void)c;
    pthread_mutex_lock(&s->lock);
    s->n++;
    snprintf(s->name, sizeof(s->name), "%s", qmp_event_name(ev));
    pthread_mutex_unlock(&s->lock);
}

/*
 * Rounds of N_FAN threads waiting for FANOUT (matching their round),
 * the fake emitting N_FAN copies at once: each thread gets exactly one
 * event object of its own.  Which threads are already waiting when the
 * copies are routed is up to the scheduler, so every round checks only
 * what holds either way (each copy goes to the threads waiting at that
 * moment, or to the queue when none is; late threads take it from
 * there); rounds go on until one shows a single copy reaching all
 * N_FAN threads, which an implementation that hands an event to one
 * waiter only never does.  Meanwhile N_OTHER threads wait for OTHER and
 * must get none of it, and a thread keeps calling.
 */
TEST(events_fan_out)
{
    server s;
    server_init(&s, 0);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    qmp_client *c = connect_shared(f, NULL);
    REQUIRE(c != NULL);

    sub_rec sub = {.n = 0};
    pthread_mutex_init(&sub.lock, NULL);
    uint64_t sub_id = 0;
    CHECK_EQ_INT(qmp_client_subscribe(c, "SUBONLY", on_sub_event, &sub, &sub_id), 0);

    counter stop, window, started, other_announced;
    counter_init(&stop);
    counter_init(&window);
    counter_init(&started);
    counter_init(&other_announced);
    hammer noise = {.c = c, .id = 0, .stop = &stop, .window = &window, .started = &started};
    pthread_t noise_th;
    threads_start(&noise_th, hammer_main, &noise);

    ev_waiter other[N_OTHER];
    pthread_t other_th[N_OTHER];
    for (int i = 0; i < N_OTHER; i++) {
        other[i] = (ev_waiter){.c = c, .name = "OTHER", .round = -1, .announced = &other_announced};
        threads_start(&other_th[i], ev_waiter_main, &other[i]);
    }
    CHECK(counter_wait(&other_announced, N_OTHER, WAIT_MS));

    int full_round = -1, best = 0;
    for (int round = 1; round <= FAN_ROUNDS_MAX && full_round < 0; round++) {
        counter announced;
        counter_init(&announced);
        ev_waiter w[N_FAN];
        pthread_t th[N_FAN];
        for (int i = 0; i < N_FAN; i++) {
            w[i] = (ev_waiter){.c = c, .name = "FANOUT", .round = round, .announced = &announced};
            threads_start(&th[i], ev_waiter_main, &w[i]);
        }
        CHECK(counter_wait(&announced, N_FAN, WAIT_MS));
        emit(c, "FANOUT", N_FAN, round);
        for (int i = 0; i < N_FAN; i++)
            threads_join(th[i], "FANOUT waiter");
        int n0 = check_fanned_out(c, w, N_FAN, "FANOUT", N_FAN, round);
        if (n0 > best)
            best = n0;
        if (n0 == N_FAN)
            full_round = round;
        for (int i = 0; i < N_FAN; i++)
            qmp_event_unref(w[i].ev);
        counter_destroy(&announced);
    }
    if (full_round < 0)
        HARNESS_FAIL_("no round of %d delivered one event to all %d waiters (at most %d)",
                      FAN_ROUNDS_MAX, N_FAN, best);
    else if (full_round > 1)
        printf("# full fan-out in round %d\n", full_round);

    /* The OTHER waiters are still waiting: nothing above was theirs. */
    bool other_joined[N_OTHER] = {false};
    for (int i = 0; i < N_OTHER; i++) {
        if (pthread_tryjoin_np(other_th[i], NULL) == 0) {
            other_joined[i] = true;
            HARNESS_FAIL_("OTHER waiter %d returned early: %d, %s", i, other[i].rc,
                          other[i].ev ? qmp_event_name(other[i].ev) : "no event");
        }
    }

    /* Nobody waits for LONELY: queued.  SUBONLY goes to the subscription
     * only. */
    emit(c, "LONELY", 2, 0);
    emit(c, "SUBONLY", 1, 0);
    CHECK_EQ_INT(qmp_client_events_queued(c), 2);
    pthread_mutex_lock(&sub.lock);
    CHECK_EQ_INT(sub.n, 1);
    CHECK_EQ_STR(sub.name, "SUBONLY");
    pthread_mutex_unlock(&sub.lock);

    emit(c, "OTHER", N_OTHER, 0);
    for (int i = 0; i < N_OTHER; i++) {
        if (!other_joined[i])
            threads_join(other_th[i], "OTHER waiter");
    }
    check_fanned_out(c, other, N_OTHER, "OTHER", N_OTHER, 0);
    for (int i = 0; i < N_OTHER; i++)
        qmp_event_unref(other[i].ev);

    /* Only the LONELY events are left, in order. */
    CHECK_EQ_INT(qmp_client_events_queued(c), 2);
    for (int i = 0; i < 2; i++) {
        qmp_event *ev = NULL;
        CHECK_EQ_INT(qmp_client_next_event(c, 0, &ev, NULL), 0);
        if (ev != NULL) {
            CHECK_EQ_STR(qmp_event_name(ev), "LONELY");
            CHECK_EQ_INT(member_int(qmp_event_data(ev), "copy", -1), i);
        }
        qmp_event_unref(ev);
    }
    CHECK_EQ_INT(qmp_client_events_queued(c), 0);
    CHECK_EQ_INT(qmp_client_events_lost(c), 0);

    counter_set(&stop, 1);
    threads_join(noise_th, "caller");
    check_tally("caller", 0, &noise.t);
    CHECK_EQ_INT(qmp_client_unsubscribe(c, sub_id), 0);
    stop_serving(c);
    pthread_mutex_destroy(&sub.lock);
    counter_destroy(&stop);
    counter_destroy(&window);
    counter_destroy(&started);
    counter_destroy(&other_announced);
    finish(f, c, &s);
}

/* ---------------------------------------------------------- disconnect */

#define N_BLOCKED_CALLS 6
#define N_BLOCKED_WAITS 3

typedef struct blocked {
    qmp_client *c;
    int id;
    bool wait_event; /* else a call that gets no reply */
    counter *announced;
    int rc;
    qmp_error err;
    long long returned_ms;
} blocked;

static void *blocked_main(void *arg)
{
    blocked *b = arg;
    counter_add(b->announced, 1);
    if (b->wait_event) {
        qmp_event *ev = NULL;
        if (b->id % 2 == 0)
            b->rc = qmp_client_wait_event(b->c, "NEVER", NULL, CALL_TIMEOUT_MS, &ev, &b->err);
        else
            b->rc = qmp_client_next_event(b->c, CALL_TIMEOUT_MS, &ev, &b->err);
        qmp_event_unref(ev);
    } else {
        json_object *args = json_object_new_object();
        json_object_object_add(args, "thread", json_object_new_int(b->id));
        b->rc = qmp_client_execute(b->c, "x-hold", args, NULL, &b->err);
        json_object_put(args);
    }
    b->returned_ms = threads_now_ms();
    return NULL;
}

/*
 * The fake closes the connection while N_BLOCKED_CALLS threads wait for
 * replies it holds, N_BLOCKED_WAITS threads wait for events and an
 * asynchronous call is pending: all of them end with the disconnect at
 * once, long before their deadlines, the disconnect callback runs once,
 * and later calls fail at once.
 */
TEST(disconnect_wakes_every_thread)
{
    enum { N = N_BLOCKED_CALLS + N_BLOCKED_WAITS };
    server s;
    /* The serve step ends once every call (and the asynchronous one) is
     * held; then the fake holds until resumed, and closes. */
    server_init(&s, N_BLOCKED_CALLS + 1);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    fake_qemu_hold(f);
    fake_qemu_close(f);
    counter disconnects, announced;
    counter_init(&disconnects);
    counter_init(&announced);
    qmp_client *c = connect_shared(f, &disconnects);
    REQUIRE(c != NULL);

    async_rec a = {.status = 1};
    counter_init(&a.done);
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_execute_async(c, "x-hold", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                          on_async_reply, &a, NULL, &err),
                 0);
    blocked b[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        b[i] =
            (blocked){.c = c, .id = i, .wait_event = i >= N_BLOCKED_CALLS, .announced = &announced};
        threads_start(&th[i], blocked_main, &b[i]);
    }
    CHECK(counter_wait(&announced, N, WAIT_MS));
    /* Every call has reached the fake, so its thread is blocked in it. */
    CHECK(counter_wait(&s.holds, N_BLOCKED_CALLS + 1, WAIT_MS));
    long long closed_ms = threads_now_ms();
    fake_qemu_resume(f);
    for (int i = 0; i < N; i++)
        threads_join(th[i], "blocked thread");
    CHECK(counter_wait(&a.done, 1, WAIT_MS));

    for (int i = 0; i < N; i++) {
        if (b[i].rc != -ECONNRESET || b[i].err.category != QMP_ERR_DISCONNECTED)
            HARNESS_FAIL_("thread %d (%s): %d (%s): %s", i, b[i].wait_event ? "event" : "call",
                          b[i].rc, qmp_error_category_name(b[i].err.category), b[i].err.message);
        if (b[i].returned_ms - closed_ms > MARGIN_MS)
            HARNESS_FAIL_("thread %d returned %lld ms after the close", i,
                          b[i].returned_ms - closed_ms);
    }
    CHECK_EQ_INT(counter_get(&a.done), 1);
    CHECK_EQ_INT(a.status, -ECONNRESET);
    CHECK_EQ_INT(a.category, QMP_ERR_DISCONNECTED);
    CHECK_EQ_INT(counter_get(&disconnects), 1);

    /* Later calls fail at once with the same error. */
    long long t0 = threads_now_ms();
    CHECK_EQ_INT(qmp_client_execute(c, "x-echo", NULL, NULL, &err), -ECONNRESET);
    CHECK_EQ_INT(err.category, QMP_ERR_DISCONNECTED);
    CHECK_EQ_INT(qmp_client_execute_async(c, "x-echo", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0, NULL,
                                          NULL, NULL, &err),
                 -ECONNRESET);
    CHECK(threads_now_ms() - t0 < MARGIN_MS);
    CHECK_EQ_INT(qmp_client_is_connected(c), 0);
    CHECK_EQ_INT(counter_get(&disconnects), 1);

    counter_destroy(&disconnects);
    counter_destroy(&announced);
    counter_destroy(&a.done);
    finish(f, c, &s);
}

/* ------------------------------------------------ asynchronous calls */

#define N_ASYNC 600
#define ASYNC_HOLD_MS 1000

typedef struct async_slot {
    json_object *args; /* what the reply must echo; NULL for the held call */
    int calls;         /* callbacks run */
    int status;
    bool echo_ok;
    bool cancelled; /* qmp_client_cancel() returned 0 */
    long long done_ms;
} async_slot;

typedef struct async_state {
    pthread_mutex_t lock;
    async_slot slots[N_ASYNC + 1];
    counter completed;
    pthread_t issuer;
    long foreign; /* callbacks run on another thread than the issuer */
} async_state;

typedef struct async_arg {
    async_state *st;
    int k;
} async_arg;

static void on_async_echo(qmp_client *c, qmp_reply *reply, void *userdata)
{
    async_arg *a = userdata;
    async_state *st = a->st;
    async_slot *sl = &st->slots[a->k];
    (void)c;

    int status = qmp_reply_status(reply);
    json_object *ret = status == 0 ? qmp_reply_return(reply) : NULL;
    bool ok = sl->args != NULL && ret != NULL && is_echo_of(ret, sl->args);
    pthread_mutex_lock(&st->lock);
    sl->calls++;
    sl->status = status;
    sl->echo_ok = ok;
    sl->done_ms = threads_now_ms();
    if (!pthread_equal(pthread_self(), st->issuer))
        st->foreign++;
    pthread_mutex_unlock(&st->lock);
    counter_add(&st->completed, 1);
}

typedef struct issuer {
    qmp_client *c;
    async_state *st;
    async_arg args[N_ASYNC + 1];
    long long hold_started_ms;
    int start_failures;
    tally t; /* its own blocking calls */
} issuer;

/* Starts N_ASYNC echo calls (cancelling some at once) and one held call
 * with a timeout, makes a blocking call now and then, and at the end
 * keeps making blocking calls (which run the others' callbacks) until
 * every callback ran. */
static void *issuer_main(void *arg)
{
    issuer *is = arg;
    async_state *st = is->st;
    qmp_error err = QMP_ERROR_INIT;
    int seq = 0;

    is->args[N_ASYNC] = (async_arg){st, N_ASYNC};
    is->hold_started_ms = threads_now_ms();
    if (qmp_client_execute_async(is->c, "x-hold", NULL, 0, ASYNC_HOLD_MS, NULL, 0, on_async_echo,
                                 &is->args[N_ASYNC], NULL, &err) != 0)
        is->start_failures++;
    for (int k = 0; k < N_ASYNC; k++) {
        uint64_t tag = 0;
        async_slot *sl = &st->slots[k];
        is->args[k] = (async_arg){st, k};
        sl->args = json_object_new_object();
        json_object_object_add(sl->args, "async", json_object_new_int(k));
        json_object_object_add(sl->args, "pad", json_object_new_string_len("xyzzy", k % 6));
        if (qmp_client_execute_async(is->c, "x-echo", sl->args, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                     on_async_echo, &is->args[k], &tag, &err) != 0) {
            is->start_failures++;
            continue;
        }
        if (k % 97 == 5) {
            int r = qmp_client_cancel(is->c, tag);
            pthread_mutex_lock(&st->lock);
            sl->cancelled = r == 0;
            pthread_mutex_unlock(&st->lock);
        }
        if (k % 50 == 49)
            echo_call(is->c, 100, seq++, &is->t);
    }
    long long deadline = threads_now_ms() + WAIT_MS;
    while (counter_get(&st->completed) < N_ASYNC + 1 && threads_now_ms() < deadline)
        echo_call(is->c, 100, seq++, &is->t);
    return NULL;
}

/* Alternates qmp_client_process() and blocking calls. */
typedef struct processor {
    qmp_client *c;
    int rounds;
    int process_errors;
    tally t;
} processor;

static void *processor_main(void *arg)
{
    processor *p = arg;
    for (int i = 0; i < p->rounds; i++) {
        qmp_error err = QMP_ERROR_INIT;
        if (qmp_client_process(p->c, &err) < 0)
            p->process_errors++;
        echo_call(p->c, 200, i, &p->t);
    }
    return NULL;
}

/*
 * One thread starts asynchronous calls while others make blocking ones
 * and one calls qmp_client_process(): every callback runs exactly once,
 * on whichever thread read its reply, with the reply to its own call; a
 * cancelled call ends with -ECANCELED; the held call times out on
 * schedule.
 */
TEST(async_mixed_with_blocking)
{
    enum { N_BLOCKING = N_THREADS - 2 };
    server s;
    server_init(&s, 0);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    qmp_client *c = connect_shared(f, NULL);
    REQUIRE(c != NULL);

    async_state *st = calloc(1, sizeof(*st));
    issuer *is = calloc(1, sizeof(*is));
    REQUIRE(st != NULL && is != NULL);
    pthread_mutex_init(&st->lock, NULL);
    counter_init(&st->completed);
    is->c = c;
    is->st = st;

    echo_worker w[N_BLOCKING];
    pthread_t th[N_BLOCKING], proc_th;
    processor proc = {.c = c, .rounds = 100};
    for (int i = 0; i < N_BLOCKING; i++) {
        w[i] = (echo_worker){.c = c, .id = i, .calls = CALLS_PER_THREAD / 2};
        threads_start(&th[i], echo_main, &w[i]);
    }
    threads_start(&proc_th, processor_main, &proc);
    /* The issuer's id is known before it can run a callback. */
    pthread_mutex_lock(&st->lock);
    threads_start(&st->issuer, issuer_main, is);
    pthread_mutex_unlock(&st->lock);

    for (int i = 0; i < N_BLOCKING; i++) {
        threads_join(th[i], "blocking caller");
        check_tally("blocking caller", i, &w[i].t);
    }
    threads_join(proc_th, "processor");
    check_tally("processor", 0, &proc.t);
    CHECK_EQ_INT(proc.process_errors, 0);
    threads_join(st->issuer, "issuer");
    check_tally("issuer", 0, &is->t);
    CHECK_EQ_INT(is->start_failures, 0);

    int cancelled = 0;
    for (int k = 0; k < N_ASYNC; k++) {
        async_slot *sl = &st->slots[k];
        if (sl->calls != 1) {
            HARNESS_FAIL_("async call %d: callback ran %d times", k, sl->calls);
            continue;
        }
        if (sl->cancelled) {
            cancelled++;
            if (sl->status != -ECANCELED)
                HARNESS_FAIL_("async call %d was cancelled but ended with %d", k, sl->status);
        } else if (sl->status != 0 || !sl->echo_ok) {
            HARNESS_FAIL_("async call %d: status %d, own reply %d", k, sl->status, sl->echo_ok);
        }
    }
    async_slot *held = &st->slots[N_ASYNC];
    CHECK_EQ_INT(held->calls, 1);
    CHECK_EQ_INT(held->status, -ETIMEDOUT);
    long long took = held->done_ms - is->hold_started_ms;
    if (took < ASYNC_HOLD_MS - 1 || took > ASYNC_HOLD_MS + MARGIN_MS)
        HARNESS_FAIL_("the held asynchronous call ended after %lld ms, its timeout was %d ms", took,
                      ASYNC_HOLD_MS);
    printf("# %d of %d cancels came first; %ld callbacks ran on other threads than the issuer\n",
           cancelled, (N_ASYNC + 96) / 97, st->foreign);

    /* The held call's late reply is dropped. */
    CHECK_EQ_INT(qmp_client_execute(c, "x-release", NULL, NULL, NULL), 0);
    tally t = {0};
    CHECK_EQ_INT(echo_call(c, 99, 0, &t), 0);
    check_tally("main", 0, &t);
    CHECK_EQ_INT(counter_get(&st->completed), N_ASYNC + 1);
    stop_serving(c);
    finish(f, c, &s);
    for (int k = 0; k < N_ASYNC; k++)
        json_object_put(st->slots[k].args);
    counter_destroy(&st->completed);
    pthread_mutex_destroy(&st->lock);
    free(st);
    free(is);
}

/* ------------------------------------------------------------ settings */

TEST(thread_safe_setting)
{
    qmp_client *c = NULL;
    CHECK_EQ_INT(qmp_client_set_thread_safe(NULL, 1), -EINVAL);
    REQUIRE(qmp_client_new(&c) == 0);
    CHECK_EQ_INT(qmp_client_set_thread_safe(c, 0), 0);
    CHECK_EQ_INT(qmp_client_set_thread_safe(c, 1), 0);
    CHECK_EQ_INT(qmp_client_set_thread_safe(c, 1), 0);
    CHECK_EQ_INT(qmp_client_set_thread_safe(c, 0), -EBUSY);
    qmp_client_unref(c);

    /* Not once connected. */
    server s;
    server_init(&s, 0);
    fake_qemu *f = fake_qemu_new();
    fake_qemu_serve(f, serve, &s);
    REQUIRE(qmp_client_new(&c) == 0);
    REQUIRE(fake_qemu_start(f) == 0);
    REQUIRE(qmp_client_connect_fd(c, fake_qemu_take_client_fd(f), NULL) == 0);
    CHECK_EQ_INT(qmp_client_set_thread_safe(c, 1), -EBUSY);
    stop_serving(c);
    finish(f, c, &s);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(thread_safe_setting);
    RUN(echo_many_threads);
    RUN(held_reply_times_out_reading_for_others);
    RUN(held_reply_times_out_among_others);
    RUN(reader_idle_others_keep_deadlines);
    RUN(reader_times_out_hands_over);
    RUN(events_fan_out);
    RUN(disconnect_wakes_every_thread);
    RUN(async_mixed_with_blocking);
    return harness_done();
}
