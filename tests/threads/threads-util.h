/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the tests of thread-safe clients: a counter threads
 * wait on (mutex, condition variable on CLOCK_MONOTONIC, deadline), thread
 * start and bounded join, and the clock.
 *
 * Worker threads never use the harness's CHECK macros (the harness is
 * single-threaded): they record what they saw, and the test's own thread
 * checks it after joining them.
 */
#ifndef QMP_TEST_THREADS_UTIL_H
#define QMP_TEST_THREADS_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Bound of every join: far beyond any test's needs, valgrind included,
 * yet short of meson's timeout, so a hang is reported as such. */
#define THREADS_JOIN_TIMEOUT_MS 150000

static inline long long threads_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline struct timespec threads_deadline(clockid_t clock, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    return ts;
}

/* A value threads raise and others wait on. */
typedef struct counter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    long value;
} counter;

static inline void counter_init(counter *k)
{
    pthread_condattr_t ca;
    pthread_mutex_init(&k->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cond, &ca);
    pthread_condattr_destroy(&ca);
    k->value = 0;
}

static inline void counter_destroy(counter *k)
{
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->lock);
}

static inline void counter_add(counter *k, long n)
{
    pthread_mutex_lock(&k->lock);
    k->value += n;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
}

static inline void counter_set(counter *k, long v)
{
    pthread_mutex_lock(&k->lock);
    k->value = v;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
}

static inline long counter_get(counter *k)
{
    pthread_mutex_lock(&k->lock);
    long v = k->value;
    pthread_mutex_unlock(&k->lock);
    return v;
}

/* Waits until the value is at least target; returns whether it got
 * there within timeout_ms. */
static inline bool counter_wait(counter *k, long target, int timeout_ms)
{
    struct timespec ts = threads_deadline(CLOCK_MONOTONIC, timeout_ms);
    int r = 0;
    pthread_mutex_lock(&k->lock);
    while (k->value < target && r != ETIMEDOUT)
        r = pthread_cond_timedwait(&k->cond, &k->lock, &ts);
    bool ok = k->value >= target;
    pthread_mutex_unlock(&k->lock);
    return ok;
}

static inline void threads_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int r = pthread_create(t, NULL, fn, arg);
    if (r != 0) {
        printf("Bail out! pthread_create: %s\n", strerror(r));
        fflush(stdout);
        abort();
    }
}

/* Joins t within THREADS_JOIN_TIMEOUT_MS.  A thread still running then
 * is a hang (a lost wake-up, a deadlock): the test cannot go on with a
 * thread inside the client it is about to free, so it bails out, and
 * abort() leaves a core that shows where every thread is. */
static inline void threads_join(pthread_t t, const char *what)
{
    struct timespec ts = threads_deadline(CLOCK_REALTIME, THREADS_JOIN_TIMEOUT_MS);
    int r = pthread_timedjoin_np(t, NULL, &ts);
    if (r != 0) {
        printf("Bail out! %s: thread not finished within %d ms (%s)\n", what,
               THREADS_JOIN_TIMEOUT_MS, strerror(r));
        fflush(stdout);
        abort();
    }
}

#endif /* QMP_TEST_THREADS_UTIL_H */
