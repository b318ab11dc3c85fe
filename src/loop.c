/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qmp_loop: drives non-blocking clients with one epoll descriptor.
 *
 * Each attached client has an entry.  The entry mirrors what the client
 * wants (its descriptor and poll events, registered with epoll, and its
 * next deadline, kept in a min-heap), and is re-synchronised from the
 * client's watch callback and after each qmp_client_process().  A round
 * costs O(ready clients * log clients), whatever the number attached.
 *
 * epoll remembers registrations by open file, not by number, and drops
 * one by itself when the file is closed.  A client closes its socket
 * inside qmp_client_process() without telling us first, and a callback
 * may then open a socket that gets the same number for another client,
 * so the loop keeps a table of which entry registered each number: an
 * entry never deletes a registration that another entry made since, and
 * a registration found under a reused number is known to be stale.
 *
 * Entries are named in epoll and in the list of a round's ready clients
 * by slot and generation, never by pointer, so a client removed by a
 * callback (its entry freed, its slot perhaps reused) is skipped for the
 * rest of the round.  The client being processed is kept alive by a
 * reference held around qmp_client_process().
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "transport.h"

/* Most events taken from epoll per round; more ready clients are served
 * in the next rounds (epoll is level-triggered and rotates them). */
#define MAX_EVENTS 256

#define NO_HEAP SIZE_MAX
#define NO_SLOT UINT32_MAX

typedef struct loop_entry {
    qmp_loop *loop;
    qmp_client *client; /* the loop's reference */
    uint32_t slot;
    size_t heap_idx;   /* position in the deadline heap, NO_HEAP when absent */
    uint64_t deadline; /* absolute CLOCK_MONOTONIC usec, UINT64_MAX: none */
    int reg_fd;        /* descriptor registered with epoll, -1 when none */
    uint32_t reg_events;
    uint64_t round;     /* last round that collected this entry */
    unsigned watch_seq; /* counts watch callbacks */
    bool suspended;     /* broke in process(): unwatched until the next watch callback */
    int sync_error;     /* 0, or the negative errno of the last failed registration */
} loop_entry;

typedef struct loop_slot {
    loop_entry *entry; /* NULL when free */
    uint32_t gen;      /* bumped each time the slot is freed */
    uint32_t next_free;
} loop_slot;

struct qmp_loop {
    int epfd;

    loop_slot *slots;
    uint32_t n_slots;
    uint32_t cap_slots;
    uint32_t free_head; /* NO_SLOT when none */
    size_t n_clients;

    loop_entry **heap; /* min-heap on deadline */
    size_t heap_len;
    size_t heap_cap; /* at least n_clients, so pushing never fails */

    /* slot + 1 of the entry that registered each descriptor number, 0 for none. */
    uint32_t *fd_owner;
    size_t fd_owner_cap;

    struct epoll_event *events;
    size_t events_cap;
    uint64_t *ready; /* ids collected in a round; capacity at least n_clients */
    size_t ready_cap;

    uint64_t round;
    size_t n_sync_failed;
    bool running; /* inside run_once() (or free): no nested rounds */
    bool quit;
};

static uint64_t now_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ------------------------------------------------------------- slots, ids */

static uint64_t entry_id(const qmp_loop *l, const loop_entry *e)
{
    return (uint64_t)l->slots[e->slot].gen << 32 | e->slot;
}

/* The entry named by id, or NULL when it has been removed since. */
static loop_entry *entry_lookup(const qmp_loop *l, uint64_t id)
{
    uint32_t slot = (uint32_t)id;

    if (slot >= l->n_slots || l->slots[slot].gen != (uint32_t)(id >> 32))
        return NULL;
    return l->slots[slot].entry;
}

static loop_entry *entry_find(const qmp_loop *l, const qmp_client *c)
{
    for (uint32_t i = 0; i < l->n_slots; i++) {
        if (l->slots[i].entry != NULL && l->slots[i].entry->client == c)
            return l->slots[i].entry;
    }
    return NULL;
}

/* Grows *array (of *cap elements of size each) to hold at least want. */
static int reserve(void *array, size_t *cap, size_t want, size_t size)
{
    void **p = array;

    if (want <= *cap)
        return 0;
    size_t n = *cap < 8 ? 8 : *cap;
    while (n < want)
        n *= 2;
    if (n > SIZE_MAX / size)
        return -ENOMEM;
    void *q = realloc(*p, n * size);
    if (q == NULL)
        return -ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Makes room for one more client in every per-client array, so that
 * nothing fails later for lack of memory except a new descriptor number. */
static int reserve_client(qmp_loop *l)
{
    size_t want = l->n_clients + 1;
    size_t cap;
    int r;

    if (l->free_head == NO_SLOT) {
        if (l->n_slots == NO_SLOT - 1)
            return -ENOMEM;
        cap = l->cap_slots;
        r = reserve(&l->slots, &cap, (size_t)l->n_slots + 1, sizeof(*l->slots));
        if (r < 0)
            return r;
        l->cap_slots = cap > NO_SLOT - 1 ? NO_SLOT - 1 : (uint32_t)cap;
    }
    if ((r = reserve(&l->heap, &l->heap_cap, want, sizeof(*l->heap))) < 0 ||
        (r = reserve(&l->ready, &l->ready_cap, want, sizeof(*l->ready))) < 0 ||
        (r = reserve(&l->events, &l->events_cap, want < MAX_EVENTS ? want : MAX_EVENTS,
                     sizeof(*l->events))) < 0)
        return r;
    return 0;
}

static uint32_t slot_alloc(qmp_loop *l, loop_entry *e)
{
    uint32_t s;

    if (l->free_head != NO_SLOT) {
        s = l->free_head;
        l->free_head = l->slots[s].next_free;
    } else {
        s = l->n_slots++;
        l->slots[s].gen = 1;
    }
    l->slots[s].entry = e;
    l->slots[s].next_free = NO_SLOT;
    return s;
}

static void slot_free(qmp_loop *l, uint32_t s)
{
    l->slots[s].entry = NULL;
    l->slots[s].gen++;
    l->slots[s].next_free = l->free_head;
    l->free_head = s;
}

/* ----------------------------------------------------------- deadline heap */

static void heap_place(qmp_loop *l, size_t i, loop_entry *e)
{
    l->heap[i] = e;
    e->heap_idx = i;
}

static void heap_up(qmp_loop *l, size_t i)
{
    loop_entry *e = l->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (l->heap[parent]->deadline <= e->deadline)
            break;
        heap_place(l, i, l->heap[parent]);
        i = parent;
    }
    heap_place(l, i, e);
}

static void heap_down(qmp_loop *l, size_t i)
{
    loop_entry *e = l->heap[i];

    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= l->heap_len)
            break;
        if (child + 1 < l->heap_len && l->heap[child + 1]->deadline < l->heap[child]->deadline)
            child++;
        if (e->deadline <= l->heap[child]->deadline)
            break;
        heap_place(l, i, l->heap[child]);
        i = child;
    }
    heap_place(l, i, e);
}

/* Sets e's deadline and its place in the heap (absent for UINT64_MAX). */
static void heap_set(qmp_loop *l, loop_entry *e, uint64_t deadline)
{
    uint64_t old = e->deadline;

    e->deadline = deadline;
    if (e->heap_idx == NO_HEAP) {
        if (deadline == UINT64_MAX)
            return;
        /* heap_cap >= n_clients (reserve_client()), so there is room. */
        heap_place(l, l->heap_len++, e);
        heap_up(l, e->heap_idx);
    } else if (deadline == UINT64_MAX) {
        size_t i = e->heap_idx;
        loop_entry *last = l->heap[--l->heap_len];
        e->heap_idx = NO_HEAP;
        if (last != e) {
            heap_place(l, i, last);
            heap_up(l, i);
            heap_down(l, last->heap_idx);
        }
    } else if (deadline < old) {
        heap_up(l, e->heap_idx);
    } else if (deadline > old) {
        heap_down(l, e->heap_idx);
    }
}

/* ----------------------------------------------------------- registration */

/* Drops e's epoll registration, unless its descriptor number has been
 * registered by another entry since (then the kernel already dropped
 * e's, when the descriptor was closed). */
static void entry_unregister(qmp_loop *l, loop_entry *e)
{
    int fd = e->reg_fd;

    if (fd < 0)
        return;
    if ((size_t)fd < l->fd_owner_cap && l->fd_owner[fd] == e->slot + 1) {
        /* Fails harmlessly (EBADF, ENOENT) when the client closed the
         * descriptor already. */
        struct epoll_event unused = {0};
        (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, &unused);
        l->fd_owner[fd] = 0;
    }
    e->reg_fd = -1;
    e->reg_events = 0;
}

/* Registers fd (>= 0) with events want for e.  force re-registers an
 * unchanged descriptor too, since the client may have closed and reopened
 * it under the same number.  Returns 0 or a negative errno. */
static int entry_register(qmp_loop *l, loop_entry *e, int fd, uint32_t want, bool force)
{
    struct epoll_event ev = {.events = want, .data.u64 = entry_id(l, e)};

    if (e->reg_fd == fd) {
        if (!force && want == e->reg_events)
            return 0;
        if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
            e->reg_events = want;
            return 0;
        }
        if (errno != ENOENT)
            return -errno;
        /* Closed and reopened under the same number: add it anew. */
    } else {
        entry_unregister(l, e);
        size_t old_cap = l->fd_owner_cap;
        int r = reserve(&l->fd_owner, &l->fd_owner_cap, (size_t)fd + 1, sizeof(*l->fd_owner));
        if (r < 0)
            return r;
        memset(l->fd_owner + old_cap, 0, (l->fd_owner_cap - old_cap) * sizeof(*l->fd_owner));
        uint32_t owner = l->fd_owner[fd];
        if (owner != 0 && owner != e->slot + 1) {
            /* The number is e's client's now, so the other entry's
             * descriptor was closed and its registration went with it. */
            loop_entry *o = l->slots[owner - 1].entry;
            if (o != NULL) {
                o->reg_fd = -1;
                o->reg_events = 0;
            }
            l->fd_owner[fd] = 0;
        }
    }
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (errno != EEXIST || epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0)
            return -errno;
    }
    e->reg_fd = fd;
    e->reg_events = want;
    l->fd_owner[fd] = e->slot + 1;
    return 0;
}

/* Brings e's registration and deadline up to date with its client.
 * Returns 0 or the negative errno of a failed registration (also kept in
 * e->sync_error for the next round to retry and report). */
static int entry_sync(qmp_loop *l, loop_entry *e, bool force)
{
    int fd = -1;
    uint32_t want = 0;
    uint64_t deadline = UINT64_MAX;
    int r = 0;

    if (!e->suspended) {
        int pev = qmp_client_get_events(e->client);
        fd = qmp_client_get_fd(e->client);
        if (pev & POLLIN)
            want |= EPOLLIN;
        if (pev & POLLOUT)
            want |= EPOLLOUT;
        if (qmp_client_get_timeout(e->client, &deadline) < 0)
            deadline = UINT64_MAX;
    }
    heap_set(l, e, deadline);
    if (fd < 0 || want == 0)
        entry_unregister(l, e);
    else
        r = entry_register(l, e, fd, want, force);

    if (r < 0 && e->sync_error == 0)
        l->n_sync_failed++;
    else if (r == 0 && e->sync_error != 0)
        l->n_sync_failed--;
    e->sync_error = r;
    return r;
}

static void loop_on_watch(qmp_client *c, void *userdata)
{
    loop_entry *e = userdata;

    (void)c;
    e->watch_seq++;
    e->suspended = false;
    /* The client reports every close, so an unchanged descriptor and
     * events need no system call (a call started is the common case). */
    (void)entry_sync(e->loop, e, false);
}

/* Detaches and frees e, then drops the loop's reference to its client
 * (last, since that may run the client's callbacks). */
static void entry_detach(qmp_loop *l, loop_entry *e)
{
    qmp_client *c = e->client;

    qmp_client_set_watch_callback(c, NULL, NULL);
    entry_unregister(l, e);
    heap_set(l, e, UINT64_MAX);
    if (e->sync_error != 0)
        l->n_sync_failed--;
    slot_free(l, e->slot);
    l->n_clients--;
    free(e);
    qmp_client_unref(c);
}

/* ------------------------------------------------------------------- API */

int qmp_loop_new(qmp_loop **ret)
{
    if (ret == NULL)
        return -EINVAL;
    qmp_loop *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->free_head = NO_SLOT;
    l->events = calloc(1, sizeof(*l->events));
    if (l->events == NULL) {
        free(l);
        return -ENOMEM;
    }
    l->events_cap = 1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int r = -errno;
        free(l->events);
        free(l);
        return r;
    }
    *ret = l;
    return 0;
}

void qmp_loop_free(qmp_loop *l)
{
    if (l == NULL)
        return;
    /* Unrefs may run callbacks; they must not start a round in a loop
     * that is going away, and what they add is detached too. */
    l->running = true;
    while (l->n_clients > 0) {
        for (uint32_t i = l->n_slots; i-- > 0;) {
            if (l->slots[i].entry != NULL)
                entry_detach(l, l->slots[i].entry);
        }
    }
    close(l->epfd);
    free(l->slots);
    free(l->heap);
    free(l->fd_owner);
    free(l->events);
    free(l->ready);
    free(l);
}

int qmp_loop_add_client(qmp_loop *l, qmp_client *c)
{
    if (l == NULL || c == NULL)
        return -EINVAL;
    if (entry_find(l, c) != NULL)
        return -EEXIST;
    int r = reserve_client(l);
    if (r < 0)
        return r;
    loop_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->loop = l;
    e->client = qmp_client_ref(c);
    e->heap_idx = NO_HEAP;
    e->deadline = UINT64_MAX;
    e->reg_fd = -1;
    e->slot = slot_alloc(l, e);
    l->n_clients++;
    qmp_client_set_watch_callback(c, loop_on_watch, e);
    r = entry_sync(l, e, true);
    if (r < 0) {
        /* The caller still holds its reference: no callback runs here. */
        entry_detach(l, e);
        return r;
    }
    return 0;
}

int qmp_loop_remove_client(qmp_loop *l, qmp_client *c)
{
    loop_entry *e;

    if (l == NULL || c == NULL || (e = entry_find(l, c)) == NULL)
        return -ENOENT;
    entry_detach(l, e);
    return 0;
}

size_t qmp_loop_client_count(const qmp_loop *l)
{
    return l != NULL ? l->n_clients : 0;
}

void qmp_loop_quit(qmp_loop *l)
{
    if (l != NULL)
        l->quit = true;
}

/* Retries the registrations that failed in a watch callback. */
static int retry_failed_syncs(qmp_loop *l, qmp_error *err)
{
    for (uint32_t i = 0; i < l->n_slots && l->n_sync_failed > 0; i++) {
        loop_entry *e = l->slots[i].entry;
        if (e == NULL || e->sync_error == 0)
            continue;
        int r = entry_sync(l, e, true);
        if (r < 0) {
            char buf[128];
            return qmp__error_set(err, r, QMP_ERR_SYSTEM,
                                  "cannot watch the socket of a client in the loop: %s",
                                  qmp__strerror(-r, buf, sizeof(buf)));
        }
    }
    return 0;
}

/* Adds e to the round's ready list unless it is there already. */
static void collect(qmp_loop *l, loop_entry *e, size_t *n_ready)
{
    if (e->round == l->round)
        return;
    e->round = l->round;
    l->ready[(*n_ready)++] = entry_id(l, e);
}

int qmp_loop_run_once(qmp_loop *l, int timeout_ms, qmp_error *err)
{
    if (l == NULL || timeout_ms < QMP_TIMEOUT_INFINITE)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              l == NULL ? "no loop given" : "invalid timeout %d ms", timeout_ms);
    if (l->running)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "a loop cannot be run from inside one of its own rounds");

    int r = retry_failed_syncs(l, err);
    if (r < 0)
        return r;

    /* Wait until the earliest deadline (rounded up, so the deadline has
     * passed when epoll_wait() returns) or the caller's timeout. */
    int wait = timeout_ms;
    if (l->heap_len > 0) {
        uint64_t deadline = l->heap[0]->deadline, now = now_usec();
        uint64_t ms = deadline <= now ? 0 : (deadline - now + 999) / 1000;
        if (ms > INT_MAX)
            ms = INT_MAX;
        if (wait < 0 || (int)ms < wait)
            wait = (int)ms;
    }
    size_t max_events = l->n_clients < l->events_cap ? l->n_clients : l->events_cap;
    if (max_events == 0)
        max_events = 1;
    int n = epoll_wait(l->epfd, l->events, (int)max_events, wait);
    if (n < 0) {
        if (errno != EINTR) {
            char buf[128];
            int errnum = errno;
            return qmp__error_set(err, -errnum, QMP_ERR_SYSTEM, "epoll_wait() failed: %s",
                                  qmp__strerror(errnum, buf, sizeof(buf)));
        }
        n = 0;
    }

    /* Collect first, then process: callbacks may add and remove clients.
     * Clients whose deadline passed come first, earliest first, so that
     * timeouts fire in the order of their deadlines; they leave the heap
     * until their re-sync after processing. */
    size_t n_ready = 0;
    uint64_t now = now_usec();
    l->round++;
    while (l->heap_len > 0 && l->heap[0]->deadline <= now) {
        loop_entry *e = l->heap[0];
        heap_set(l, e, UINT64_MAX);
        collect(l, e, &n_ready);
    }
    for (int i = 0; i < n; i++) {
        loop_entry *e = entry_lookup(l, l->events[i].data.u64);
        if (e != NULL)
            collect(l, e, &n_ready);
    }

    int processed = 0;
    l->running = true;
    for (size_t i = 0; i < n_ready; i++) {
        loop_entry *e = entry_lookup(l, l->ready[i]);
        if (e == NULL)
            continue; /* removed by an earlier callback of this round */
        qmp_client *c = qmp_client_ref(e->client);
        unsigned seq = e->watch_seq;
        r = qmp_client_process(c, NULL);
        processed++;
        e = entry_lookup(l, l->ready[i]);
        if (e != NULL) {
            /* A connection that broke and still asks to be watched would
             * wake every round; leave it alone until it reconnects (its
             * watch callback then runs). */
            if (r < 0 && e->watch_seq == seq)
                e->suspended = true;
            (void)entry_sync(l, e, false);
        }
        qmp_client_unref(c);
    }
    l->running = false;
    return processed;
}

int qmp_loop_run(qmp_loop *l, int timeout_ms, qmp_error *err)
{
    if (l == NULL || timeout_ms < QMP_TIMEOUT_INFINITE)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              l == NULL ? "no loop given" : "invalid timeout %d ms", timeout_ms);
    if (l->running)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "a loop cannot be run from inside one of its own rounds");

    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_usec() + (uint64_t)timeout_ms * 1000;
    l->quit = false;
    while (l->n_clients > 0) {
        int wait = -1;
        if (deadline != UINT64_MAX) {
            uint64_t now = now_usec();
            uint64_t ms = deadline <= now ? 0 : (deadline - now + 999) / 1000;
            wait = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        int r = qmp_loop_run_once(l, wait, err);
        if (r < 0)
            return r;
        if (l->quit) {
            l->quit = false;
            return 0;
        }
        if (deadline != UINT64_MAX && now_usec() >= deadline)
            return qmp__error_set(err, -ETIMEDOUT, QMP_ERR_TIMEOUT,
                                  "the loop ran for %d ms without being told to quit", timeout_ms);
    }
    return 0;
}
