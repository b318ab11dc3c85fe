/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qmp_loop against the scripted fake QEMU: the scenarios shared with the
 * adapters (async-scenarios.h), then what is particular to qmp_loop:
 * argument checks, run() and quit(), clients added and removed by
 * callbacks in the middle of a round, and many clients at once.
 */
#include "async-scenarios.h"

/* ------------------------------------------------------------ basics */

TEST(api_errors)
{
    qmp_loop *l = NULL;
    qmp_client *c = NULL;
    qmp_error err = QMP_ERROR_INIT;

    CHECK_EQ_INT(qmp_loop_new(NULL), -EINVAL);
    REQUIRE(qmp_loop_new(&l) == 0 && l != NULL);
    REQUIRE(qmp_client_new(&c) == 0);
    CHECK_EQ_INT(qmp_loop_add_client(NULL, c), -EINVAL);
    CHECK_EQ_INT(qmp_loop_add_client(l, NULL), -EINVAL);
    CHECK_EQ_INT(qmp_loop_remove_client(l, c), -ENOENT);
    CHECK_EQ_INT(qmp_loop_client_count(l), 0);

    /* No client: run returns at once. */
    long long t0 = async_now_ms();
    CHECK_EQ_INT(qmp_loop_run(l, QMP_TIMEOUT_INFINITE, &err), 0);
    CHECK(async_now_ms() - t0 < 1000);
    CHECK_EQ_INT(qmp_loop_run_once(l, -2, &err), -EINVAL);
    CHECK_EQ_INT(err.category, QMP_ERR_INVALID);
    CHECK_EQ_INT(qmp_loop_run(l, -5, NULL), -EINVAL);
    CHECK_EQ_INT(qmp_loop_run_once(NULL, 0, NULL), -EINVAL);
    CHECK_EQ_INT(qmp_loop_run_once(l, 0, NULL), 0);

    CHECK_EQ_INT(qmp_loop_add_client(l, c), 0);
    CHECK_EQ_INT(qmp_loop_add_client(l, c), -EEXIST);
    CHECK_EQ_INT(qmp_loop_client_count(l), 1);

    /* An unconnected client waits for nothing: run times out on schedule. */
    t0 = async_now_ms();
    err = (qmp_error)QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_loop_run(l, 200, &err), -ETIMEDOUT);
    CHECK_EQ_INT(err.category, QMP_ERR_TIMEOUT);
    CHECK(async_now_ms() - t0 >= 200);
    CHECK(async_now_ms() - t0 < 200 + ASYNC_MARGIN_MS);
    /* Timeout 0: one round without waiting. */
    t0 = async_now_ms();
    CHECK_EQ_INT(qmp_loop_run(l, 0, NULL), -ETIMEDOUT);
    CHECK(async_now_ms() - t0 < 1000);

    CHECK_EQ_INT(qmp_loop_remove_client(l, c), 0);
    CHECK_EQ_INT(qmp_loop_remove_client(l, c), -ENOENT);
    CHECK_EQ_INT(qmp_loop_client_count(l), 0);
    /* Attached clients are released by free (the leak checkers see). */
    CHECK_EQ_INT(qmp_loop_add_client(l, c), 0);
    qmp_client_unref(c);
    qmp_loop_free(l);
    qmp_loop_free(NULL);
    qmp_loop_quit(NULL);
    CHECK_EQ_INT(qmp_loop_client_count(NULL), 0);
}

/* ------------------------------------------------------- run and quit */

typedef struct quit_ctx {
    qmp_loop *loop;
    call_rec rec;
    int nested_rc;
} quit_ctx;

static void quit_on_reply(qmp_client *c, qmp_reply *reply, void *userdata)
{
    quit_ctx *q = userdata;

    on_call(c, reply, &q->rec);
    /* A loop cannot be run from inside its own round. */
    q->nested_rc = qmp_loop_run_once(q->loop, 0, NULL);
    qmp_loop_quit(q->loop);
}

TEST(run_until_quit)
{
    fake_qemu *f = fake_qemu_new();
    int q1 = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q1, "{\"status\": \"running\"}");

    conn_state st = {0};
    quit_ctx q = {0};
    qmp_loop *l = NULL;
    REQUIRE(qmp_loop_new(&l) == 0);
    q.loop = l;
    qmp_client *c = async_new_client(&st);
    CHECK_EQ_INT(qmp_loop_add_client(l, c), 0);
    REQUIRE(fake_qemu_start(f) == 0);
    qmp_error err = QMP_ERROR_INIT;
    CHECK_EQ_INT(qmp_client_connect_fd_async(c, fake_qemu_take_client_fd(f), &err), 0);
    /* Nothing quits yet: run until the connect is done (timing out). */
    while (st.connect_n == 0 && qmp_loop_run(l, 100, NULL) == -ETIMEDOUT)
        ;
    CHECK_EQ_INT(st.connect_status, 0);
    CHECK_EQ_INT(qmp_client_execute_async(c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT, NULL, 0,
                                          quit_on_reply, &q, NULL, &err),
                 0);
    CHECK_EQ_INT(qmp_loop_run(l, ASYNC_WAIT_MS, &err), 0);
    CHECK_EQ_INT(q.rec.n, 1);
    CHECK_EQ_INT(q.rec.status, 0);
    CHECK_EQ_INT(q.nested_rc, -EINVAL);
    /* The client stays attached after quit. */
    CHECK_EQ_INT(qmp_loop_client_count(l), 1);
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    qmp_client_unref(c);
    qmp_loop_free(l);
}

/* --------------------------------------------- removal inside a round */

typedef struct pair_ctx {
    qmp_loop *loop;
    qmp_client *clients[2];
    call_rec rec[2];
    int remove_self; /* also remove the client whose callback runs */
    int first;       /* index whose callback ran first, -1 before */
} pair_ctx;

static void pair_on_reply(pair_ctx *p, int idx, qmp_client *c, qmp_reply *reply)
{
    on_call(c, reply, &p->rec[idx]);
    if (p->first >= 0)
        return;
    p->first = idx;
    CHECK_EQ_INT(qmp_loop_remove_client(p->loop, p->clients[1 - idx]), 0);
    if (p->remove_self)
        CHECK_EQ_INT(qmp_loop_remove_client(p->loop, p->clients[idx]), 0);
}

static void pair_on_reply0(qmp_client *c, qmp_reply *reply, void *userdata)
{
    pair_on_reply(userdata, 0, c, reply);
}

static void pair_on_reply1(qmp_client *c, qmp_reply *reply, void *userdata)
{
    pair_on_reply(userdata, 1, c, reply);
}

/* Both clients have a reply waiting in the same round; the first one's
 * callback removes the other, which must then not be processed by that
 * round (its reply stays unread until someone processes it). */
static void remove_in_round_case(int remove_self)
{
    fake_qemu *f[2];
    conn_state st[2] = {{0}, {0}};
    pair_ctx p;
    qmp_error err = QMP_ERROR_INIT;

    memset(&p, 0, sizeof(p));
    p.first = -1;
    p.remove_self = remove_self;
    REQUIRE(qmp_loop_new(&p.loop) == 0);
    for (int i = 0; i < 2; i++) {
        f[i] = fake_qemu_new();
        int q = fake_qemu_expect(f[i], "query-status", NULL);
        fake_qemu_reply(f[i], q, i == 0 ? "{\"c\": 0}" : "{\"c\": 1}");
        p.clients[i] = async_new_client(&st[i]);
        CHECK_EQ_INT(qmp_loop_add_client(p.loop, p.clients[i]), 0);
    }
    async_drv = &async_driver_loop;
    int ok = async_connect_fake(p.loop, p.clients[0], &st[0], f[0]) == 0 &&
             async_connect_fake(p.loop, p.clients[1], &st[1], f[1]) == 0;
    if (ok) {
        CHECK_EQ_INT(qmp_client_execute_async(p.clients[0], "query-status", NULL, 0,
                                              QMP_TIMEOUT_DEFAULT, NULL, 0, pair_on_reply0, &p,
                                              NULL, &err),
                     0);
        CHECK_EQ_INT(qmp_client_execute_async(p.clients[1], "query-status", NULL, 0,
                                              QMP_TIMEOUT_DEFAULT, NULL, 0, pair_on_reply1, &p,
                                              NULL, &err),
                     0);
        /* Send both requests (a round with timeout 0 per pass) until both
         * fakes have replied, so both sockets are readable at once. */
        long long t0 = async_now_ms();
        while ((fake_qemu_wait_done(f[0], 0) != 0 || fake_qemu_wait_done(f[1], 0) != 0) &&
               p.first < 0 && async_now_ms() - t0 < ASYNC_WAIT_MS)
            CHECK(qmp_loop_run_once(p.loop, 10, NULL) >= 0);
        CHECK_EQ_INT(fake_qemu_wait_done(f[0], ASYNC_WAIT_MS), 0);
        CHECK_EQ_INT(fake_qemu_wait_done(f[1], ASYNC_WAIT_MS), 0);
        if (p.first < 0) {
            int r = qmp_loop_run_once(p.loop, ASYNC_WAIT_MS, NULL);
            CHECK(r >= 1);
        }
        REQUIRE(p.first >= 0);
        int other = 1 - p.first;
        CHECK_EQ_INT(p.rec[p.first].n, 1);
        CHECK_EQ_INT(p.rec[other].n, 0);
        CHECK_EQ_INT(qmp_loop_client_count(p.loop), remove_self ? 0 : 1);
        /* Later rounds leave the removed client alone too. */
        CHECK(qmp_loop_run_once(p.loop, 0, NULL) >= 0);
        CHECK_EQ_INT(p.rec[other].n, 0);
        /* Its reply is still there for whoever drives it now. */
        t0 = async_now_ms();
        while (p.rec[other].n == 0 && async_now_ms() - t0 < ASYNC_WAIT_MS)
            CHECK(qmp_client_process(p.clients[other], NULL) >= 0);
        CHECK_EQ_INT(p.rec[other].n, 1);
        CHECK_EQ_INT(p.rec[other].status, 0);
    }
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(fake_qemu_finish(f[i]), 0);
        fake_qemu_free(f[i]);
        qmp_client_unref(p.clients[i]);
    }
    qmp_loop_free(p.loop);
}

TEST(remove_other_in_round)
{
    remove_in_round_case(0);
}

TEST(remove_both_in_round)
{
    remove_in_round_case(1);
}

/* A client whose only reference is the loop's removes itself from its
 * own callback: it lives until the callback returns, then goes away. */
typedef struct self_ctx {
    qmp_loop *loop;
    qmp_client *c;
    call_rec rec;
    int removed;
} self_ctx;

static void self_remove_on_reply(qmp_client *c, qmp_reply *reply, void *userdata)
{
    self_ctx *s = userdata;

    on_call(c, reply, &s->rec);
    s->removed = qmp_loop_remove_client(s->loop, c) == 0;
    /* Still usable inside the callback. */
    CHECK(qmp_client_get_fd(c) >= 0);
}

TEST(remove_last_reference_in_callback)
{
    fake_qemu *f = fake_qemu_new();
    int q = fake_qemu_expect(f, "query-status", NULL);
    fake_qemu_reply(f, q, "{}");
    conn_state st = {0};
    self_ctx s = {0};
    qmp_error err = QMP_ERROR_INIT;

    REQUIRE(qmp_loop_new(&s.loop) == 0);
    async_drv = &async_driver_loop;
    s.c = async_new_client(&st);
    CHECK_EQ_INT(qmp_loop_add_client(s.loop, s.c), 0);
    if (async_connect_fake(s.loop, s.c, &st, f) == 0) {
        CHECK_EQ_INT(qmp_client_execute_async(s.c, "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT,
                                              NULL, 0, self_remove_on_reply, &s, NULL, &err),
                     0);
        qmp_client_unref(s.c); /* the loop's reference is the last */
        CHECK_EQ_INT(qmp_loop_run(s.loop, ASYNC_WAIT_MS, &err), 0);
        CHECK_EQ_INT(s.rec.n, 1);
        CHECK_EQ_INT(s.removed, 1);
        CHECK_EQ_INT(qmp_loop_client_count(s.loop), 0);
    } else {
        qmp_client_unref(s.c);
    }
    CHECK_EQ_INT(fake_qemu_finish(f), 0);
    fake_qemu_free(f);
    qmp_loop_free(s.loop);
}

/* ------------------------------------------------------ many clients */

/* Clients added from callbacks, many at once, each with a different
 * deadline: all complete, and run() ends when the last callback quits. */
enum { MANY = 32 };

typedef struct many_ctx {
    qmp_loop *loop;
    int done;
    call_rec rec[MANY];
    call_rec timeouts[MANY];
} many_ctx;

static many_ctx many;

static void many_on_timeout(qmp_client *c, qmp_reply *reply, void *userdata)
{
    on_call(c, reply, userdata);
    if (++many.done == 2 * MANY)
        qmp_loop_quit(many.loop);
}

static void many_on_reply(qmp_client *c, qmp_reply *reply, void *userdata)
{
    on_call(c, reply, userdata);
    if (++many.done == 2 * MANY)
        qmp_loop_quit(many.loop);
}

TEST(many_clients)
{
    fake_qemu *f[MANY];
    conn_state st[MANY];
    qmp_client *c[MANY];
    qmp_error err = QMP_ERROR_INIT;

    memset(&many, 0, sizeof(many));
    memset(st, 0, sizeof(st));
    REQUIRE(qmp_loop_new(&many.loop) == 0);
    async_drv = &async_driver_loop;
    for (int i = 0; i < MANY; i++) {
        f[i] = fake_qemu_new();
        int q = fake_qemu_expect(f[i], "query-status", NULL);
        fake_qemu_expect(f[i], "query-name", NULL);
        fake_qemu_reply(f[i], q, "{}");
        fake_qemu_hold(f[i]);
        c[i] = async_new_client(&st[i]);
        CHECK_EQ_INT(qmp_loop_add_client(many.loop, c[i]), 0);
        CHECK_EQ_INT(fake_qemu_start(f[i]), 0);
        CHECK_EQ_INT(qmp_client_connect_fd_async(c[i], fake_qemu_take_client_fd(f[i]), &err), 0);
    }
    CHECK_EQ_INT(qmp_loop_client_count(many.loop), MANY);
    int connected = 0;
    long long t0 = async_now_ms();
    while (connected < MANY && async_now_ms() - t0 < ASYNC_WAIT_MS) {
        CHECK(qmp_loop_run_once(many.loop, ASYNC_WAIT_MS, NULL) >= 0);
        connected = 0;
        for (int i = 0; i < MANY; i++)
            connected += st[i].connect_n == 1 && st[i].connect_status == 0;
    }
    REQUIRE(connected == MANY);
    t0 = async_now_ms();
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ_INT(qmp_client_execute_async(c[i], "query-status", NULL, 0, QMP_TIMEOUT_DEFAULT,
                                              NULL, 0, many_on_reply, &many.rec[i], NULL, &err),
                     0);
        /* Deadlines in reverse order of the clients, 10 ms apart. */
        CHECK_EQ_INT(qmp_client_execute_async(c[i], "query-name", NULL, 0, 200 + 10 * (MANY - i),
                                              NULL, 0, many_on_timeout, &many.timeouts[i], NULL,
                                              &err),
                     0);
    }
    CHECK_EQ_INT(qmp_loop_run(many.loop, 200 + 10 * MANY + ASYNC_MARGIN_MS, &err), 0);
    CHECK_EQ_INT(many.done, 2 * MANY);
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ_INT(many.rec[i].n, 1);
        CHECK_EQ_INT(many.rec[i].status, 0);
        CHECK_EQ_INT(many.timeouts[i].status, -ETIMEDOUT);
        CHECK(many.timeouts[i].t_ms - t0 >= 200 + 10 * (MANY - i));
        if (i > 0)
            CHECK(many.timeouts[i].seq < many.timeouts[i - 1].seq);
    }
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ_INT(fake_qemu_finish(f[i]), 0);
        fake_qemu_free(f[i]);
        qmp_client_unref(c[i]);
    }
    qmp_loop_free(many.loop);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    async_drv = &async_driver_loop;
    async_run_scenarios();
    RUN(api_errors);
    RUN(run_until_quit);
    RUN(remove_other_in_round);
    RUN(remove_both_in_round);
    RUN(remove_last_reference_in_callback);
    RUN(many_clients);
    return harness_done();
}
