/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The sans-I/O QMP core: framing, routing, negotiation, ids and pending
 * commands.  No file descriptors, syscalls or clocks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "internal.h"

#define ID_PREFIX "libqmp:"
#define ID_PREFIX_LEN (sizeof(ID_PREFIX) - 1)
#define MAX_FDS 16
/* Internal send flag: skip the in-flight backlog (qmp_capabilities after
 * a monitor reset must reach QEMU before anything else). */
#define SEND_URGENT 0x100u
#define MIN_MESSAGE_SIZE 256
/* json-c string lengths are ints; keep every message well inside that. */
#define MAX_MESSAGE_SIZE ((size_t)1 << 30)

/* A command waiting for its reply, keyed by tag in an open-addressing
 * table (tag 0 marks a free slot). */
typedef enum pending_state {
    PENDING_QUEUED = 0, /* waiting in the backlog, not sent */
    PENDING_SENT,       /* in the output or sent, awaiting the reply */
    PENDING_GHOST       /* sent, then cancelled: its reply is dropped */
} pending_state;

typedef struct pending {
    uint64_t tag;
    qmp_reply_fn cb;
    void *userdata;
    uint8_t state;   /* pending_state */
    bool in_band;    /* counts against max_in_flight while sent */
} pending;

/* A command held back by the in-flight limit, already serialised. */
typedef struct queued {
    uint64_t tag;
    char *bytes; /* without the final newline */
    size_t len;
    size_t n_fds;
    int fds[MAX_FDS];
} queued;

/* A raw request with the caller's own id. */
typedef struct raw_pending {
    uint64_t tag;
    json_object *id; /* NULL for an id-less request */
    bool has_id;
    qmp_reply_fn cb;
    void *userdata;
    uint8_t state; /* pending_state */
    bool in_band;  /* "execute" (not "exec-oob"): counts while sent */
} raw_pending;

/* Descriptors that travel with the output starting at stream offset off. */
typedef struct fd_attachment {
    uint64_t off;
    size_t n;
    int fds[MAX_FDS];
} fd_attachment;

/* Where the framer is between two feeds. */
typedef enum frame_mode {
    FRAME_IDLE = 0, /* between messages */
    FRAME_VALUE,    /* inside an object or array */
    FRAME_JUNK      /* a message that does not start with { or [ */
} frame_mode;

struct qmp_session {
    unsigned refs;
    qmp_session_state state;
    bool want_oob;
    bool oob_enabled;
    bool in_dispatch;
    unsigned max_depth;
    size_t max_message_size;

    qmp__logger log;
    qmp_trace_fn trace_fn;
    void *trace_userdata;
    qmp_state_fn state_fn;
    void *state_userdata;
    qmp_event_fn event_fn;
    void *event_userdata;

    qmp_greeting *greeting;
    qmp_error error;          /* sticky, valid when state == FAILED */
    uint64_t negotiation_tag; /* the first qmp_capabilities, while pending */
    unsigned renegotiations;  /* repeated qmp_capabilities still pending */

    /* Framer. */
    qmp__buf in;
    frame_mode mode;
    bool in_string;
    bool escape;
    size_t depth;

    /* Output. */
    qmp__buf out;
    uint64_t out_consumed; /* stream offset of out's first live byte */
    fd_attachment *atts;
    size_t n_atts;
    size_t cap_atts;

    /* Pending commands. */
    unsigned max_in_flight; /* 0: no limit */
    size_t in_flight;       /* in-band commands sent and not answered */
    size_t n_ghosts;        /* cancelled after sending, reply awaited */
    queued *backlog;        /* FIFO: backlog[backlog_head..backlog_len) */
    size_t backlog_head;
    size_t backlog_len;
    size_t backlog_cap;
    uint64_t next_tag;
    pending *table;
    size_t table_cap; /* power of two */
    size_t table_count;
    raw_pending *raws;
    size_t n_raws;
    size_t cap_raws;
};

static void fail_session(qmp_session *s, const qmp_error *why);

/* ------------------------------------------------------------ basic setup */

int qmp_session_new(qmp_session **ret)
{
    if (ret == NULL)
        return -EINVAL;
    qmp_session *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->refs = 1;
    s->state = QMP_SESSION_GREETING;
    s->max_depth = QMP_JSON_DEFAULT_MAX_DEPTH;
    s->max_message_size = QMP_DEFAULT_MAX_MESSAGE_SIZE;
    s->next_tag = 1;
    *ret = s;
    return 0;
}

qmp_session *qmp_session_ref(qmp_session *s)
{
    if (s != NULL)
        s->refs++;
    return s;
}

static void backlog_clear(qmp_session *s);
static void promote(qmp_session *s);

static void session_free(qmp_session *s)
{
    backlog_clear(s);
    qmp__greeting_free(s->greeting);
    qmp__buf_free(&s->in);
    qmp__buf_free(&s->out);
    free(s->atts);
    free(s->table);
    for (size_t i = 0; i < s->n_raws; i++)
        json_object_put(s->raws[i].id);
    free(s->raws);
    free(s);
}

qmp_session *qmp_session_unref(qmp_session *s)
{
    if (s == NULL)
        return NULL;
    if (s->refs == 1 && (s->table_count > 0 || s->n_raws > 0)) {
        /* Keep the session alive while the callbacks of the commands that
         * are still pending learn that they were dropped. */
        qmp_error why;
        qmp__error_set(&why, -ECANCELED, QMP_ERR_CANCELLED,
                       "the session was freed before the reply arrived");
        s->refs++;
        fail_session(s, &why);
        s->refs--;
    }
    if (--s->refs > 0)
        return NULL;
    session_free(s);
    return NULL;
}

int qmp_session_set_max_message_size(qmp_session *s, size_t bytes)
{
    if (s == NULL || bytes < MIN_MESSAGE_SIZE || bytes > MAX_MESSAGE_SIZE)
        return -EINVAL;
    s->max_message_size = bytes;
    return 0;
}

int qmp_session_set_max_in_flight(qmp_session *s, unsigned n)
{
    if (s == NULL || n > 65536)
        return -EINVAL;
    s->max_in_flight = n;
    promote(s);
    return 0;
}

int qmp_session_set_max_depth(qmp_session *s, unsigned depth)
{
    if (s == NULL || depth == 0 || depth > 100000)
        return -EINVAL;
    s->max_depth = depth;
    return 0;
}

int qmp_session_set_want_oob(qmp_session *s, int want)
{
    if (s == NULL)
        return -EINVAL;
    if (s->greeting != NULL)
        return -EBUSY;
    s->want_oob = want != 0;
    return 0;
}

void qmp_session_set_log(qmp_session *s, qmp_log_fn fn, qmp_log_level max_level, void *userdata)
{
    if (s == NULL)
        return;
    s->log.fn = fn;
    s->log.max_level = max_level;
    s->log.userdata = userdata;
}

void qmp_session_set_trace(qmp_session *s, qmp_trace_fn fn, void *userdata)
{
    if (s == NULL)
        return;
    s->trace_fn = fn;
    s->trace_userdata = userdata;
}

void qmp_session_set_state_callback(qmp_session *s, qmp_state_fn fn, void *userdata)
{
    if (s == NULL)
        return;
    s->state_fn = fn;
    s->state_userdata = userdata;
}

void qmp_session_set_event_callback(qmp_session *s, qmp_event_fn fn, void *userdata)
{
    if (s == NULL)
        return;
    s->event_fn = fn;
    s->event_userdata = userdata;
}

qmp_session_state qmp_session_get_state(const qmp_session *s)
{
    return s ? s->state : QMP_SESSION_FAILED;
}

int qmp_session_get_error(const qmp_session *s, qmp_error *err)
{
    if (s == NULL)
        return -EINVAL;
    if (s->state != QMP_SESSION_FAILED)
        return 0;
    qmp__error_copy(err, &s->error);
    return s->error.code;
}

const qmp_greeting *qmp_session_get_greeting(const qmp_session *s)
{
    return s ? s->greeting : NULL;
}

int qmp_session_oob_enabled(const qmp_session *s)
{
    return s != NULL && s->oob_enabled;
}

size_t qmp_session_pending_count(const qmp_session *s)
{
    return s ? s->table_count - s->n_ghosts + s->n_raws : 0;
}

size_t qmp__session_queued_count(const qmp_session *s)
{
    return s ? s->backlog_len - s->backlog_head : 0;
}

size_t qmp_session_in_flight_count(const qmp_session *s)
{
    return s ? s->in_flight : 0;
}

static void set_state(qmp_session *s, qmp_session_state state)
{
    s->state = state;
    if (s->state_fn)
        s->state_fn(s, state, s->state_userdata);
}

/* ------------------------------------------------------- pending commands */

static inline size_t slot_of(uint64_t tag, size_t cap)
{
    return (size_t)((tag * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (cap - 1);
}

static pending *table_find(qmp_session *s, uint64_t tag)
{
    if (s->table_count == 0)
        return NULL;
    for (size_t i = slot_of(tag, s->table_cap);; i = (i + 1) & (s->table_cap - 1)) {
        if (s->table[i].tag == tag)
            return &s->table[i];
        if (s->table[i].tag == 0)
            return NULL;
    }
}

static pending *table_insert(qmp_session *s, uint64_t tag, qmp_reply_fn cb, void *userdata)
{
    if ((s->table_count + 1) * 2 > s->table_cap) {
        size_t cap = s->table_cap ? s->table_cap * 2 : 8;
        pending *t = calloc(cap, sizeof(*t));
        if (t == NULL)
            return NULL;
        for (size_t i = 0; i < s->table_cap; i++) {
            if (s->table[i].tag == 0)
                continue;
            size_t j = slot_of(s->table[i].tag, cap);
            while (t[j].tag != 0)
                j = (j + 1) & (cap - 1);
            t[j] = s->table[i];
        }
        free(s->table);
        s->table = t;
        s->table_cap = cap;
    }
    size_t i = slot_of(tag, s->table_cap);
    while (s->table[i].tag != 0)
        i = (i + 1) & (s->table_cap - 1);
    /* Counted nowhere until the caller marks it sent. */
    s->table[i] = (pending){tag, cb, userdata, PENDING_QUEUED, false};
    s->table_count++;
    return &s->table[i];
}

/* Removes the entry at p, shifting later entries of its probe chain back. */
static void table_remove(qmp_session *s, pending *p)
{
    size_t mask = s->table_cap - 1;
    size_t i = (size_t)(p - s->table);

    if (p->state != PENDING_QUEUED && p->in_band)
        s->in_flight--;
    if (p->state == PENDING_GHOST)
        s->n_ghosts--;

    for (size_t j = (i + 1) & mask; s->table[j].tag != 0; j = (j + 1) & mask) {
        size_t home = slot_of(s->table[j].tag, s->table_cap);
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            s->table[i] = s->table[j];
            i = j;
        }
    }
    s->table[i].tag = 0;
    s->table_count--;
}

/* ---------------------------------------------------------------- backlog */

static void backlog_clear(qmp_session *s)
{
    for (size_t i = s->backlog_head; i < s->backlog_len; i++)
        free(s->backlog[i].bytes);
    free(s->backlog);
    s->backlog = NULL;
    s->backlog_head = s->backlog_len = s->backlog_cap = 0;
}

static int backlog_push(qmp_session *s, const queued *q)
{
    if (s->backlog_len == s->backlog_cap) {
        /* Reuse the consumed front before growing. */
        if (s->backlog_head > 0) {
            memmove(s->backlog, s->backlog + s->backlog_head,
                    (s->backlog_len - s->backlog_head) * sizeof(*q));
            s->backlog_len -= s->backlog_head;
            s->backlog_head = 0;
        }
        if (s->backlog_len == s->backlog_cap) {
            size_t cap = s->backlog_cap ? s->backlog_cap * 2 : 8;
            queued *n = realloc(s->backlog, cap * sizeof(*n));
            if (n == NULL)
                return -ENOMEM;
            s->backlog = n;
            s->backlog_cap = cap;
        }
    }
    s->backlog[s->backlog_len++] = *q;
    return 0;
}

static void backlog_remove(qmp_session *s, uint64_t tag)
{
    for (size_t i = s->backlog_head; i < s->backlog_len; i++) {
        if (s->backlog[i].tag != tag)
            continue;
        free(s->backlog[i].bytes);
        memmove(&s->backlog[i], &s->backlog[i + 1], (s->backlog_len - i - 1) * sizeof(queued));
        s->backlog_len--;
        break;
    }
    if (s->backlog_head == s->backlog_len)
        s->backlog_head = s->backlog_len = 0;
}

static int out_commit(qmp_session *s, size_t mark, const int *fds, size_t n_fds);
static void fail_session(qmp_session *s, const qmp_error *why);
static raw_pending *raw_find_tag(qmp_session *s, uint64_t tag);

/* Sends held-back commands while the in-flight limit allows. */
static void promote(qmp_session *s)
{
    while (s->backlog_head < s->backlog_len &&
           (s->max_in_flight == 0 || s->in_flight < s->max_in_flight) &&
           s->state != QMP_SESSION_FAILED) {
        queued *q = &s->backlog[s->backlog_head];
        size_t mark = qmp__buf_used(&s->out);
        if (qmp__buf_append(&s->out, q->bytes, q->len) < 0 ||
            out_commit(s, mark, q->fds, q->n_fds) < 0) {
            s->out.len = s->out.start + mark;
            qmp_error why;
            qmp__error_set(&why, -ENOMEM, QMP_ERR_NOMEM, "out of memory sending a command");
            fail_session(s, &why);
            return;
        }
        pending *p = table_find(s, q->tag);
        raw_pending *rp = p == NULL ? raw_find_tag(s, q->tag) : NULL;
        if (p != NULL)
            p->state = PENDING_SENT;
        else if (rp != NULL)
            rp->state = PENDING_SENT;
        s->in_flight++;
        free(q->bytes);
        s->backlog_head++;
    }
    if (s->backlog_head == s->backlog_len)
        s->backlog_head = s->backlog_len = 0;
}

static raw_pending *raw_find_tag(qmp_session *s, uint64_t tag)
{
    for (size_t i = 0; i < s->n_raws; i++) {
        if (s->raws[i].tag == tag)
            return &s->raws[i];
    }
    return NULL;
}

static void raw_remove(qmp_session *s, raw_pending *r)
{
    if (r->state != PENDING_QUEUED && r->in_band)
        s->in_flight--;
    if (r->state == PENDING_GHOST)
        s->n_ghosts--;
    json_object_put(r->id);
    size_t i = (size_t)(r - s->raws);
    memmove(&s->raws[i], &s->raws[i + 1], (s->n_raws - i - 1) * sizeof(*r));
    s->n_raws--;
}

/* Calls cb with a failure that carries no message. */
static void deliver_failure(qmp_session *s, uint64_t tag, qmp_reply_fn cb, void *userdata,
                            const qmp_error *why)
{
    if (cb == NULL)
        return;
    qmp_reply r = {.tag = tag, .status = why->code, .error = why, .max_depth = s->max_depth};
    cb(s, &r, userdata);
}

/*
 * Fails every pending command with why.  Entries are taken out of the
 * tables before their callbacks run, so a callback that sends or cancels
 * sees a consistent session.
 */
static void fail_all_pending(qmp_session *s, const qmp_error *why)
{
    while (s->table_count > 0) {
        for (size_t i = 0; i < s->table_cap; i++) {
            if (s->table[i].tag == 0)
                continue;
            pending p = s->table[i];
            table_remove(s, &s->table[i]);
            deliver_failure(s, p.tag, p.cb, p.userdata, why);
            break; /* the table may have changed: rescan */
        }
    }
    while (s->n_raws > 0) {
        raw_pending r = s->raws[0];
        r.id = NULL;
        raw_remove(s, &s->raws[0]);
        deliver_failure(s, r.tag, r.cb, r.userdata, why);
    }
}

static void fail_session(qmp_session *s, const qmp_error *why)
{
    /* Callers hold a reference, so callbacks cannot free the session. */
    if (s->state == QMP_SESSION_FAILED)
        return;
    s->error = *why;
    qmp__log(&s->log, QMP_LOG_ERROR, "%s", why->message);
    set_state(s, QMP_SESSION_FAILED);
    fail_all_pending(s, &s->error);
    /* Nothing more will be sent. */
    backlog_clear(s);
    qmp__buf_free(&s->out);
    s->n_atts = 0;
}

static int fail_with(qmp_session *s, int code, qmp_error_category category, const char *fmt, ...)
    QMP_PRINTF(4, 5);

static int fail_with(qmp_session *s, int code, qmp_error_category category, const char *fmt, ...)
{
    qmp_error why;
    va_list ap;
    va_start(ap, fmt);
    qmp__error_setv(&why, code, category, fmt, ap);
    va_end(ap);
    fail_session(s, &why);
    return s->error.code;
}

/* ----------------------------------------------------------------- output */

/*
 * Requests are serialised straight into the output buffer.  A message
 * starts at a mark (its offset from the first live byte); on failure the
 * output is rolled back to the mark, on success it is committed.
 */
static size_t out_mark(const qmp_session *s)
{
    return qmp__buf_used(&s->out);
}

static void out_rollback(qmp_session *s, size_t mark)
{
    s->out.len = s->out.start + mark;
}

/* Attaches fds, traces the message, and ends it with a newline. */
static int out_commit(qmp_session *s, size_t mark, const int *fds, size_t n_fds)
{
    if (n_fds > 0 && s->n_atts == s->cap_atts) {
        size_t cap = s->cap_atts ? s->cap_atts * 2 : 4;
        fd_attachment *a = realloc(s->atts, cap * sizeof(*a));
        if (a == NULL)
            return -ENOMEM;
        s->atts = a;
        s->cap_atts = cap;
    }
    if (qmp__buf_append(&s->out, "\n", 1) < 0)
        return -ENOMEM;
    if (n_fds > 0) {
        fd_attachment *a = &s->atts[s->n_atts++];
        a->off = s->out_consumed + mark;
        a->n = n_fds;
        memcpy(a->fds, fds, n_fds * sizeof(int));
    }
    if (s->trace_fn)
        s->trace_fn(QMP_TRACE_OUT, s->out.data + s->out.start + mark,
                    qmp__buf_used(&s->out) - mark - 1, s->trace_userdata);
    return 0;
}

const void *qmp_session_get_output(qmp_session *s, size_t *ret_len, const int **ret_fds,
                                   size_t *ret_n_fds)
{
    size_t len = s ? qmp__buf_used(&s->out) : 0;

    if (ret_fds)
        *ret_fds = NULL;
    if (ret_n_fds)
        *ret_n_fds = 0;
    if (len == 0) {
        if (ret_len)
            *ret_len = 0;
        return NULL;
    }
    if (s->n_atts > 0) {
        const fd_attachment *a = &s->atts[0];
        if (a->off == s->out_consumed) {
            if (ret_fds)
                *ret_fds = a->fds;
            if (ret_n_fds)
                *ret_n_fds = a->n;
            if (s->n_atts > 1)
                len = (size_t)(s->atts[1].off - s->out_consumed);
        } else {
            len = (size_t)(a->off - s->out_consumed);
        }
    }
    if (ret_len)
        *ret_len = len;
    return s->out.data + s->out.start;
}

void qmp_session_consume_output(qmp_session *s, size_t n)
{
    if (s == NULL)
        return;
    if (n > qmp__buf_used(&s->out))
        n = qmp__buf_used(&s->out);
    if (n == 0)
        return;
    /* An attachment whose first byte is written counts as sent. */
    size_t drop = 0;
    while (drop < s->n_atts && s->atts[drop].off < s->out_consumed + n)
        drop++;
    if (drop > 0) {
        memmove(s->atts, s->atts + drop, (s->n_atts - drop) * sizeof(*s->atts));
        s->n_atts -= drop;
    }
    s->out_consumed += n;
    qmp__buf_consume(&s->out, n);
}

/* --------------------------------------------------------------- commands */

static int check_sendable(qmp_session *s, qmp_error *err)
{
    if (s->state == QMP_SESSION_FAILED) {
        qmp__error_copy(err, &s->error);
        return s->error.code;
    }
    if (s->state != QMP_SESSION_READY)
        return qmp__error_set(err, -ENOTCONN, QMP_ERR_INVALID,
                              "cannot send a command before capabilities negotiation completed");
    return 0;
}

static int check_fds(const int *fds, size_t n_fds, qmp_error *err)
{
    if (n_fds > MAX_FDS)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "too many file descriptors (%zu, at most %d)", n_fds, MAX_FDS);
    if (n_fds > 0 && fds == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "n_fds given without fds");
    for (size_t i = 0; i < n_fds; i++) {
        if (fds[i] < 0)
            return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "invalid file descriptor %d",
                                  fds[i]);
    }
    return 0;
}

/* Writes the decimal digits of v; returns their number (at most 20). */
static size_t format_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

/* Serialises {"execute": command, "arguments": args, "id": "libqmp:tag"}
 * into b. */
static int build_command(qmp__buf *b, const char *command, json_object *arguments, bool oob,
                         uint64_t tag, qmp_error *err)
{
    char idbuf[48] = ",\"id\":\"" ID_PREFIX;
    size_t n = 7 + ID_PREFIX_LEN;
    int r;

    n += format_u64(idbuf + n, tag);
    idbuf[n++] = '"';
    idbuf[n++] = '}';
    if (oob)
        r = qmp__buf_append(b, "{\"exec-oob\":", 12);
    else
        r = qmp__buf_append(b, "{\"execute\":", 11);
    if (r < 0)
        return -ENOMEM;
    if ((r = qmp__json_write_string(b, command, strlen(command), err)) < 0)
        return r;
    if (arguments != NULL) {
        if (qmp__buf_append(b, ",\"arguments\":", 13) < 0)
            return -ENOMEM;
        if ((r = qmp__json_write(b, arguments, err)) < 0)
            return r;
    }
    return qmp__buf_append(b, idbuf, n);
}

static int send_internal(qmp_session *s, const char *command, json_object *arguments,
                         unsigned flags, const int *fds, size_t n_fds, qmp_reply_fn cb,
                         void *userdata, uint64_t *ret_tag, qmp_error *err)
{
    uint64_t tag = s->next_tag;
    int r;

    if (command == NULL || command[0] == '\0')
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "empty command name");
    if (arguments != NULL && !json_object_is_type(arguments, json_type_object))
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "arguments of %s must be a JSON object", command);
    if (flags & ~(QMP_EXEC_OOB | SEND_URGENT))
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "unknown flags 0x%x", flags);
    if ((flags & QMP_EXEC_OOB) && !s->oob_enabled)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "cannot run %s out-of-band: oob was not negotiated", command);
    if ((r = check_fds(fds, n_fds, err)) < 0)
        return r;

    bool oob = (flags & QMP_EXEC_OOB) != 0;
    bool hold = !oob && !(flags & SEND_URGENT) && s->max_in_flight != 0 &&
                (s->in_flight >= s->max_in_flight || s->backlog_head < s->backlog_len);
    pending *p;
    if (hold) {
        /* Serialise now (the caller's arguments are borrowed), send later. */
        qmp__buf b = {0};
        queued q = {.tag = tag, .n_fds = n_fds};
        r = build_command(&b, command, arguments, false, tag, err);
        if (r == 0 && n_fds > 0)
            memcpy(q.fds, fds, n_fds * sizeof(int));
        q.bytes = b.data;
        q.len = b.len;
        if (r == 0 && (p = table_insert(s, tag, cb, userdata)) == NULL)
            r = -ENOMEM;
        else if (r == 0 && (r = backlog_push(s, &q)) < 0)
            table_remove(s, p);
        else if (r == 0)
            p->in_band = true;
        if (r < 0)
            free(b.data);
    } else {
        size_t mark = out_mark(s);
        r = build_command(&s->out, command, arguments, oob, tag, err);
        if (r == 0 && (p = table_insert(s, tag, cb, userdata)) == NULL)
            r = -ENOMEM;
        else if (r == 0 && (r = out_commit(s, mark, fds, n_fds)) < 0)
            table_remove(s, p);
        else if (r == 0) {
            p->state = PENDING_SENT;
            p->in_band = !oob;
            if (!oob)
                s->in_flight++;
        }
        if (r < 0)
            out_rollback(s, mark);
    }
    if (r < 0) {
        if (r == -ENOMEM)
            return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory queueing %s",
                                  command);
        return r;
    }
    s->next_tag++;
    if (ret_tag)
        *ret_tag = tag;
    return 0;
}

int qmp_session_send_command(qmp_session *s, const char *command, json_object *arguments,
                             unsigned flags, const int *fds, size_t n_fds, qmp_reply_fn cb,
                             void *userdata, uint64_t *ret_tag, qmp_error *err)
{
    if (s == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "NULL session");
    if (flags & ~QMP_EXEC_OOB)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "unknown flags 0x%x", flags);
    int r = check_sendable(s, err);
    if (r < 0)
        return r;
    return send_internal(s, command, arguments, flags, fds, n_fds, cb, userdata, ret_tag, err);
}

/* True when the id span/string is in libqmp's reserved namespace. */
static bool is_reserved_id(json_object *id)
{
    return json_object_is_type(id, json_type_string) &&
           strncmp(json_object_get_string(id), ID_PREFIX, ID_PREFIX_LEN) == 0;
}

int qmp_session_send_raw(qmp_session *s, json_object *message, const int *fds, size_t n_fds,
                         qmp_reply_fn cb, void *userdata, uint64_t *ret_tag, qmp_error *err)
{
    json_object *id = NULL;
    bool has_id;
    int r;

    if (s == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "NULL session");
    if ((r = check_sendable(s, err)) < 0)
        return r;
    if (!json_object_is_type(message, json_type_object))
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "a raw message must be an object");
    if ((r = check_fds(fds, n_fds, err)) < 0)
        return r;
    has_id = json_object_object_get_ex(message, "id", &id);
    if (has_id && is_reserved_id(id))
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID,
                              "ids beginning with \"" ID_PREFIX "\" are reserved for libqmp");
    for (size_t i = 0; i < s->n_raws; i++) {
        if (s->raws[i].has_id == has_id && (!has_id || json_object_equal(s->raws[i].id, id)))
            return qmp__error_set(err, -EEXIST, QMP_ERR_INVALID,
                                  has_id ? "a request with the same id is still pending"
                                         : "another request without id is still pending");
    }
    if (s->n_raws == s->cap_raws) {
        size_t cap = s->cap_raws ? s->cap_raws * 2 : 4;
        raw_pending *nr = realloc(s->raws, cap * sizeof(*nr));
        if (nr == NULL)
            return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
        s->raws = nr;
        s->cap_raws = cap;
    }

    /* A raw "execute" occupies QEMU's queue like any in-band command. */
    json_object *unused;
    bool in_band = json_object_object_get_ex(message, "execute", &unused);
    bool hold = in_band && s->max_in_flight != 0 &&
                (s->in_flight >= s->max_in_flight || s->backlog_head < s->backlog_len);
    uint64_t tag = s->next_tag;
    if (hold) {
        qmp__buf b = {0};
        queued q = {.tag = tag, .n_fds = n_fds};
        r = qmp__json_write(&b, message, err);
        if (r == 0 && n_fds > 0)
            memcpy(q.fds, fds, n_fds * sizeof(int));
        q.bytes = b.data;
        q.len = b.len;
        if (r == 0 && backlog_push(s, &q) < 0)
            r = qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
        if (r < 0) {
            free(b.data);
            return r;
        }
    } else {
        size_t mark = out_mark(s);
        r = qmp__json_write(&s->out, message, err);
        if (r == 0 && (r = out_commit(s, mark, fds, n_fds)) == -ENOMEM)
            r = qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
        if (r < 0) {
            out_rollback(s, mark);
            return r;
        }
        if (in_band)
            s->in_flight++;
    }
    s->next_tag++;
    s->raws[s->n_raws++] = (raw_pending){tag,     has_id ? json_object_get(id) : NULL,
                                         has_id,  cb,
                                         userdata, hold ? PENDING_QUEUED : PENDING_SENT,
                                         in_band};
    if (ret_tag)
        *ret_tag = tag;
    return 0;
}

int qmp_session_cancel(qmp_session *s, uint64_t tag, const qmp_error *why)
{
    qmp_error def;
    qmp_reply_fn cb;
    void *userdata;

    if (s == NULL)
        return -EINVAL;
    if (why == NULL || why->code >= 0) {
        qmp__error_set(&def, -ECANCELED, QMP_ERR_CANCELLED, "the command was cancelled");
        why = &def;
    }
    pending *p = table_find(s, tag);
    if (p != NULL && tag != s->negotiation_tag && p->state != PENDING_GHOST) {
        cb = p->cb;
        userdata = p->userdata;
        if (p->state == PENDING_QUEUED) {
            /* Never sent: QEMU will not see it. */
            backlog_remove(s, tag);
            table_remove(s, p);
        } else {
            /* Sent: QEMU may still answer.  The entry stays, as a ghost,
             * so the reply is dropped quietly and, while QEMU holds the
             * command, it still counts against the in-flight limit. */
            p->state = PENDING_GHOST;
            p->cb = NULL;
            p->userdata = NULL;
            s->n_ghosts++;
        }
    } else {
        raw_pending *r = raw_find_tag(s, tag);
        if (r == NULL || r->state == PENDING_GHOST)
            return -ENOENT;
        cb = r->cb;
        userdata = r->userdata;
        if (r->state == PENDING_QUEUED) {
            backlog_remove(s, tag);
            raw_remove(s, r);
        } else {
            /* As for commands: its reply is still expected, and dropped. */
            r->state = PENDING_GHOST;
            r->cb = NULL;
            r->userdata = NULL;
            s->n_ghosts++;
        }
    }
    qmp_session_ref(s);
    deliver_failure(s, tag, cb, userdata, why);
    qmp_session_unref(s);
    return 0;
}

/* ---------------------------------------------------------------- routing */

typedef struct span {
    const char *p;
    const char *end;
} span;

/* Member names the router looks at, as literals with their quotes. */
enum { K_QMP, K_EVENT, K_DATA, K_TIMESTAMP, K_RETURN, K_ERROR, K_ID, K_COUNT };
static const char *const route_keys[K_COUNT] = {
    [K_QMP] = "\"QMP\"",       [K_EVENT] = "\"event\"",
    [K_DATA] = "\"data\"",     [K_TIMESTAMP] = "\"timestamp\"",
    [K_RETURN] = "\"return\"", [K_ERROR] = "\"error\"",
    [K_ID] = "\"id\"",
};
static const size_t route_key_lens[K_COUNT] = {
    [K_QMP] = 5,    [K_EVENT] = 7, [K_DATA] = 6, [K_TIMESTAMP] = 11,
    [K_RETURN] = 8, [K_ERROR] = 7, [K_ID] = 4,
};

static inline const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/*
 * Validates the object starting at p (within [p, end)) and records the
 * spans of the members named in keys (literals, with quotes).  Returns the
 * object's length (up to its closing brace) or a negative errno.  Names
 * are compared byte for byte as they appear, so escaped spellings of them
 * are not recognised.
 */
static int index_object(const char *p, const char *end, unsigned max_depth, const char *base,
                        const char *const *keys, const size_t *key_lens, size_t n_keys, span *out,
                        qmp_error *err)
{
    const char *start = p;

    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        goto bad;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return (int)(p + 1 - start);
    for (;;) {
        const char *k = p, *kend, *v, *vend;
        int r;
        if (p >= end || *p != '"')
            goto bad;
        if ((r = qmp__json_skip(k, end, 1, &kend, base, err)) < 0)
            return r;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            goto bad;
        v = skip_ws(p + 1, end);
        if ((r = qmp__json_skip(v, end, max_depth - 1, &vend, base, err)) < 0)
            return r;
        for (size_t i = 0; i < n_keys; i++) {
            if ((size_t)(kend - k) == key_lens[i] && memcmp(k, keys[i], key_lens[i]) == 0) {
                out[i].p = v;
                out[i].end = vend;
                break;
            }
        }
        p = skip_ws(vend, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        if (p < end && *p == '}')
            return (int)(p + 1 - start);
        goto bad;
    }
bad:
    /* Let the full validator produce the precise complaint. */
    {
        const char *e;
        int r = qmp__json_skip(start, end, max_depth, &e, base, err);
        if (r < 0)
            return r;
        return qmp__error_set(err, -EPROTO, QMP_ERR_PROTOCOL, "message is not a JSON object");
    }
}

static void report_message(qmp_session *s, qmp_error_category category, const char *what,
                           const char *msg, size_t len)
{
    int shown = len > 200 ? 200 : (int)len;
    fail_with(s, -EPROTO, category, "%s: %.*s%s", what, shown, msg, len > 200 ? "..." : "");
}

/* Parses "libqmp:N" from an id literal; returns 0 when it is not one. */
static uint64_t library_tag(span id)
{
    const char *p = id.p;
    size_t n = (size_t)(id.end - id.p);
    uint64_t tag = 0;

    if (n < ID_PREFIX_LEN + 3 || p[0] != '"' || p[n - 1] != '"' ||
        memcmp(p + 1, ID_PREFIX, ID_PREFIX_LEN) != 0)
        return 0;
    for (size_t i = 1 + ID_PREFIX_LEN; i < n - 1; i++) {
        if (p[i] < '0' || p[i] > '9' || tag > (UINT64_MAX - 9) / 10)
            return 0;
        tag = tag * 10 + (uint64_t)(p[i] - '0');
    }
    return tag;
}

/* Fills err from an "error" member: {"class": ..., "desc": ...}. */
static int parse_error_member(qmp_session *s, span e, qmp_error *err)
{
    json_object *obj = NULL, *cls, *desc;
    int r = qmp__json_build(e.p, e.end, s->max_depth, &obj, NULL);
    if (r < 0)
        return r;
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return -EPROTO;
    }
    const char *cname =
        json_object_object_get_ex(obj, "class", &cls) && json_object_is_type(cls, json_type_string)
            ? json_object_get_string(cls)
            : "";
    const char *dtext =
        json_object_object_get_ex(obj, "desc", &desc) && json_object_is_type(desc, json_type_string)
            ? json_object_get_string(desc)
            : "(no description)";
    qmp__error_set(err, -EREMOTEIO, QMP_ERR_COMMAND, "%s", dtext);
    snprintf(err->class_name, sizeof(err->class_name), "%s", cname);
    err->qmp_class = cname[0] ? qmp_error_class_from_name(cname) : QMP_CLASS_OTHER;
    json_object_put(obj);
    return 0;
}

/* READY once the first qmp_capabilities succeeded and no repeat of it
 * (after a repeated greeting) is still outstanding. */
static void maybe_ready(qmp_session *s)
{
    if (s->state == QMP_SESSION_NEGOTIATING && s->negotiation_tag == 0 && s->renegotiations == 0) {
        qmp__log(&s->log, QMP_LOG_DEBUG, "capabilities negotiated%s",
                 s->oob_enabled ? " (oob enabled)" : "");
        set_state(s, QMP_SESSION_READY);
    }
}

static void on_negotiated(qmp_session *s, qmp_reply *reply, void *userdata)
{
    (void)userdata;
    s->negotiation_tag = 0;
    if (reply->status == 0) {
        maybe_ready(s);
        return;
    }
    if (s->state == QMP_SESSION_FAILED)
        return; /* failed for another reason, already reported */
    const qmp_error *e = reply->error;
    qmp_error why = *e;
    if (e->category == QMP_ERR_COMMAND) {
        /* Keep QEMU's class; say which step failed. */
        qmp__error_set(&why, -EPROTO, QMP_ERR_NEGOTIATION, "qmp_capabilities failed: %s: %s",
                       e->class_name[0] ? e->class_name : "error", e->message);
        why.qmp_class = e->qmp_class;
        memcpy(why.class_name, e->class_name, sizeof(why.class_name));
    }
    fail_session(s, &why);
}

/*
 * The reply to a repeated qmp_capabilities.  Success (the monitor had been
 * reset) and an error reply ("negotiation is already complete": the reset
 * came before our first request) both leave the monitor negotiated.
 */
static void on_renegotiated(qmp_session *s, qmp_reply *reply, void *userdata)
{
    (void)userdata;
    s->renegotiations--;
    if (reply->status == -EREMOTEIO)
        qmp__log(&s->log, QMP_LOG_DEBUG, "repeated qmp_capabilities: %s", reply->error->message);
    if (reply->status == 0 || reply->status == -EREMOTEIO)
        maybe_ready(s);
}

/* Queues qmp_capabilities, enabling oob when negotiated so. */
static int send_capabilities(qmp_session *s, qmp_reply_fn cb, uint64_t *ret_tag, qmp_error *err)
{
    json_object *args = NULL;
    if (s->oob_enabled && qmp_json_build(&args, err, "{'enable': ['oob']}") < 0)
        return err ? err->code : -ENOMEM;
    int r = send_internal(s, "qmp_capabilities", args, SEND_URGENT, NULL, 0, cb, NULL, ret_tag,
                          err);
    json_object_put(args);
    return r;
}

static void handle_greeting(qmp_session *s, const char *msg, size_t len)
{
    qmp_error err;
    qmp_greeting *g;
    uint64_t tag = 0;

    if (qmp__greeting_new(&g, msg, len, s->max_depth, &err) < 0) {
        fail_session(s, &err);
        return;
    }
    if (s->state != QMP_SESSION_GREETING) {
        /*
         * QEMU greets again when its monitor is opened twice, which
         * happens when a client was already waiting as QEMU started: each
         * open resets the monitor to capabilities mode, so negotiate again
         * (an error reply, if the reset came first, is harmless).
         */
        qmp__greeting_free(g);
        qmp__log(&s->log, QMP_LOG_WARNING,
                 "QEMU sent its greeting again (its monitor was reset): negotiating again");
        if (send_capabilities(s, on_renegotiated, &tag, &err) < 0) {
            fail_session(s, &err);
            return;
        }
        s->renegotiations++;
        return;
    }
    s->greeting = g;
    s->oob_enabled = s->want_oob && qmp_greeting_has_capability(g, "oob");
    int major = 0, minor = 0, micro = 0;
    qmp_greeting_version(g, &major, &minor, &micro);
    qmp__log(&s->log, QMP_LOG_DEBUG, "greeting from QEMU %d.%d.%d", major, minor, micro);

    if (send_capabilities(s, on_negotiated, &tag, &err) < 0) {
        fail_session(s, &err);
        return;
    }
    s->negotiation_tag = tag;
    set_state(s, QMP_SESSION_NEGOTIATING);
}

static void handle_event(qmp_session *s, const char *msg, size_t len, span name, span data, span ts)
{
    char namebuf[256];
    const char *n;
    size_t nlen;
    int64_t secs = -1, usecs = -1;

    if (name.p[0] != '"') {
        report_message(s, QMP_ERR_PROTOCOL, "event name is not a string", msg, len);
        return;
    }
    if (memchr(name.p, '\\', (size_t)(name.end - name.p)) == NULL) {
        n = name.p + 1;
        nlen = (size_t)(name.end - name.p) - 2;
    } else {
        long l = qmp__json_unescape(name.p, name.end, namebuf, sizeof(namebuf));
        if (l < 0) {
            report_message(s, QMP_ERR_PROTOCOL, "event name too long", msg, len);
            return;
        }
        n = namebuf;
        nlen = (size_t)l;
    }
    if (ts.p != NULL && ts.p[0] == '{') {
        static const char *const tkeys[] = {"\"seconds\"", "\"microseconds\""};
        static const size_t tlens[] = {9, 14};
        span t[2] = {{NULL, NULL}, {NULL, NULL}};
        if (index_object(ts.p, ts.end, s->max_depth, msg, tkeys, tlens, 2, t, NULL) >= 0 &&
            t[0].p && t[1].p) {
            int64_t a, b;
            if (qmp__json_int64(t[0].p, t[0].end, &a) == 0 &&
                qmp__json_int64(t[1].p, t[1].end, &b) == 0) {
                secs = a;
                usecs = b;
            }
        }
    }
    size_t doff = data.p ? (size_t)(data.p - msg) : 0;
    size_t dlen = data.p ? (size_t)(data.end - data.p) : 0;
    qmp_event *ev = qmp__event_new(msg, len, n, nlen, secs, usecs, doff, dlen, s->max_depth);
    if (ev == NULL) {
        fail_with(s, -ENOMEM, QMP_ERR_NOMEM, "out of memory receiving an event");
        return;
    }
    if (s->event_fn)
        s->event_fn(s, ev, s->event_userdata);
    else
        qmp__log(&s->log, QMP_LOG_DEBUG, "event %s dropped: no event callback", qmp_event_name(ev));
    qmp_event_unref(ev);
}

static void handle_reply(qmp_session *s, const char *msg, size_t len, span ret, span error, span id)
{
    qmp_error err;
    qmp_reply_fn cb;
    void *userdata;
    uint64_t tag;

    if (ret.p != NULL && error.p != NULL) {
        report_message(s, QMP_ERR_PROTOCOL, "reply has both \"return\" and \"error\"", msg, len);
        return;
    }
    if (id.p == NULL) {
        /* QEMU answers without id when it could not read the request's id
         * (malformed input), or when the request had none. */
        raw_pending *idless = NULL;
        for (size_t i = 0; i < s->n_raws; i++) {
            if (!s->raws[i].has_id && s->raws[i].state != PENDING_QUEUED)
                idless = &s->raws[i];
        }
        if (idless == NULL) {
            if (error.p != NULL && parse_error_member(s, error, &err) == 0)
                fail_with(s, -EPROTO, QMP_ERR_PROTOCOL, "QEMU reported an error without id: %s",
                          err.message);
            else
                report_message(s, QMP_ERR_PROTOCOL, "reply without id", msg, len);
            return;
        }
        tag = idless->tag;
        cb = idless->cb;
        userdata = idless->userdata;
        raw_remove(s, idless);
        promote(s);
        if (cb == NULL)
            return; /* a cancelled request's late reply */
    } else if ((tag = library_tag(id)) != 0) {
        pending *p = table_find(s, tag);
        if (p != NULL && p->state == PENDING_GHOST) {
            qmp__log(&s->log, QMP_LOG_DEBUG, "dropped the late reply to cancelled command %.*s",
                     (int)(id.end - id.p > 80 ? 80 : id.end - id.p), id.p);
            table_remove(s, p);
            promote(s);
            return;
        }
        if (p == NULL || p->state == PENDING_QUEUED) {
            qmp__log(&s->log, QMP_LOG_WARNING,
                     "dropped reply with unknown id %.*s (late reply to a cancelled or timed-out "
                     "command?)",
                     (int)(id.end - id.p > 80 ? 80 : id.end - id.p), id.p);
            return;
        }
        cb = p->cb;
        userdata = p->userdata;
        table_remove(s, p);
        promote(s);
    } else {
        json_object *idv = NULL;
        raw_pending *match = NULL;
        if (qmp__json_build(id.p, id.end, s->max_depth, &idv, NULL) < 0) {
            fail_with(s, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
            return;
        }
        for (size_t i = 0; i < s->n_raws && match == NULL; i++) {
            if (s->raws[i].has_id && s->raws[i].state != PENDING_QUEUED &&
                json_object_equal(s->raws[i].id, idv))
                match = &s->raws[i];
        }
        json_object_put(idv);
        if (match == NULL) {
            qmp__log(&s->log, QMP_LOG_WARNING, "dropped reply with unknown id %.*s",
                     (int)(id.end - id.p > 80 ? 80 : id.end - id.p), id.p);
            return;
        }
        tag = match->tag;
        cb = match->cb;
        userdata = match->userdata;
        raw_remove(s, match);
        promote(s);
        if (cb == NULL)
            return; /* a cancelled request's late reply */
    }

    qmp_reply r = {.tag = tag, .text = msg, .text_len = len, .max_depth = s->max_depth};
    if (error.p != NULL) {
        int pr = parse_error_member(s, error, &err);
        if (pr == -ENOMEM) {
            qmp__error_set(&err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
        } else if (pr < 0) {
            qmp_error why;
            qmp__error_set(&why, -EPROTO, QMP_ERR_PROTOCOL, "malformed error reply: %.*s",
                           (int)(len > 200 ? 200 : len), msg);
            deliver_failure(s, tag, cb, userdata, &why);
            fail_session(s, &why);
            return;
        }
        r.status = err.code;
        r.error = &err;
    } else {
        r.value = ret.p;
        r.value_len = (size_t)(ret.end - ret.p);
    }
    if (cb)
        cb(s, &r, userdata);
    json_object_put(r.decoded_value);
}

/* Routes one indexed message by its shape. */
static void route(qmp_session *s, const char *msg, size_t len, const span *f)
{
    if (s->trace_fn)
        s->trace_fn(QMP_TRACE_IN, msg, len, s->trace_userdata);
    if (f[K_QMP].p)
        handle_greeting(s, msg, len);
    else if (f[K_EVENT].p)
        handle_event(s, msg, len, f[K_EVENT], f[K_DATA], f[K_TIMESTAMP]);
    else if (f[K_RETURN].p || f[K_ERROR].p)
        handle_reply(s, msg, len, f[K_RETURN], f[K_ERROR], f[K_ID]);
    else
        report_message(s, QMP_ERR_PROTOCOL,
                       "message is neither greeting, event nor reply (no return or error)", msg,
                       len);
}

/* Validates, indexes and routes one complete, framed message. */
static void dispatch(qmp_session *s, const char *msg, size_t len)
{
    span f[K_COUNT];
    qmp_error err;

    memset(f, 0, sizeof(f));
    int r = msg[0] == '{' ? index_object(msg, msg + len, s->max_depth, msg, route_keys,
                                         route_key_lens, K_COUNT, f, &err)
                          : -EPROTO;
    if (r >= 0 && (size_t)r == len) {
        route(s, msg, len, f);
        return;
    }
    if (s->trace_fn)
        s->trace_fn(QMP_TRACE_IN, msg, len, s->trace_userdata);
    if (r == -EPROTO || r >= 0) {
        qmp_error why;
        qmp__error_set(&why, -EPROTO, QMP_ERR_PROTOCOL, "%s: %.*s%s",
                       msg[0] == '{' && r < 0 ? err.message : "message is not a JSON object",
                       (int)(len > 160 ? 160 : len), msg, len > 160 ? "..." : "");
        fail_session(s, &why);
    } else {
        fail_session(s, &err);
    }
}

/*
 * Fast path for a message that starts at p and is complete in the
 * caller's buffer [p, end): validate, index and route it without
 * framing it first.  Returns its length, or 0 when it is incomplete or
 * malformed; the framer then takes over (and reports what is wrong).
 */
static size_t dispatch_direct(qmp_session *s, const char *p, const char *end)
{
    span f[K_COUNT];

    memset(f, 0, sizeof(f));
    int r = index_object(p, end, s->max_depth, p, route_keys, route_key_lens, K_COUNT, f, NULL);
    if (r <= 0 || (size_t)r > s->max_message_size)
        return 0;
    route(s, p, (size_t)r, f);
    return (size_t)r;
}

/* ---------------------------------------------------------------- framing */

/*
 * Scans p[0..n) continuing the framer's state.  Returns how many bytes
 * belong to the current message; *complete tells whether it ended there.
 * In FRAME_IDLE leading whitespace is skipped and reported via *skipped.
 */
static size_t frame_scan(qmp_session *s, const char *p, size_t n, bool *complete, size_t *skipped)
{
    size_t i = 0;

    *complete = false;
    *skipped = 0;
    if (s->mode == FRAME_IDLE) {
        while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t'))
            i++;
        *skipped = i;
        if (i == n)
            return i;
        if (p[i] == '{' || p[i] == '[') {
            s->mode = FRAME_VALUE;
            s->depth = 1;
            i++;
        } else {
            s->mode = FRAME_JUNK;
        }
    }
    if (s->mode == FRAME_JUNK) {
        const char *nl = memchr(p + i, '\n', n - i);
        if (nl == NULL)
            return n;
        *complete = true;
        return (size_t)(nl - p);
    }
    while (i < n) {
        if (s->in_string) {
            if (s->escape) {
                s->escape = false;
                i++;
                continue;
            }
            /* Skip the string's ordinary bytes quickly. */
            while (i < n && p[i] != '"' && p[i] != '\\')
                i++;
            if (i == n)
                break;
            if (p[i] == '\\')
                s->escape = true;
            else
                s->in_string = false;
            i++;
            continue;
        }
        switch (p[i++]) {
        case '"':
            s->in_string = true;
            break;
        case '{':
        case '[':
            s->depth++;
            break;
        case '}':
        case ']':
            if (--s->depth == 0) {
                *complete = true;
                return i;
            }
            break;
        default:
            break;
        }
    }
    return i;
}

static void frame_reset(qmp_session *s)
{
    s->mode = FRAME_IDLE;
    s->in_string = false;
    s->escape = false;
    s->depth = 0;
}

static int too_big(qmp_session *s)
{
    return fail_with(s, -EMSGSIZE, QMP_ERR_LIMIT,
                     "message from QEMU larger than the limit of %zu bytes", s->max_message_size);
}

static void dispatch_framed(qmp_session *s, const char *msg, size_t len)
{
    if (s->mode == FRAME_JUNK) {
        frame_reset(s);
        /* Trim the CR of a CRLF line ending. */
        while (len > 0 && (msg[len - 1] == '\r' || msg[len - 1] == ' ' || msg[len - 1] == '\t'))
            len--;
        if (s->trace_fn)
            s->trace_fn(QMP_TRACE_IN, msg, len, s->trace_userdata);
        report_message(s, QMP_ERR_PROTOCOL, "message is not a JSON object", msg, len);
        return;
    }
    frame_reset(s);
    dispatch(s, msg, len);
}

int qmp_session_feed(qmp_session *s, const void *data, size_t len, qmp_error *err)
{
    const char *p = data;

    if (s == NULL || (data == NULL && len > 0))
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "qmp_session_feed: NULL argument");
    if (s->in_dispatch)
        return qmp__error_set(err, -EBUSY, QMP_ERR_INVALID,
                              "qmp_session_feed called from a session callback");
    qmp_session_ref(s);
    s->in_dispatch = true;
    while (len > 0 && s->state != QMP_SESSION_FAILED) {
        bool complete;
        if (s->mode == FRAME_IDLE) {
            size_t ws = 0;
            while (ws < len && (p[ws] == ' ' || p[ws] == '\n' || p[ws] == '\r' || p[ws] == '\t'))
                ws++;
            p += ws;
            len -= ws;
            size_t n = len > 0 && p[0] == '{' ? dispatch_direct(s, p, p + len) : 0;
            if (n > 0) {
                p += n;
                len -= n;
                continue;
            }
            if (len == 0)
                break;
        }
        size_t skipped;
        size_t used = qmp__buf_used(&s->in);
        size_t n = frame_scan(s, p, len, &complete, &skipped);
        size_t body = n - skipped;

        if (used + body > s->max_message_size) {
            too_big(s);
            break;
        }
        if (complete && used == 0) {
            /* Fast path: the whole message is in the caller's buffer. */
            dispatch_framed(s, p + skipped, body);
        } else if (complete) {
            if (qmp__buf_append(&s->in, p + skipped, body) < 0) {
                fail_with(s, -ENOMEM, QMP_ERR_NOMEM, "out of memory receiving a message");
                break;
            }
            dispatch_framed(s, s->in.data + s->in.start, qmp__buf_used(&s->in));
            s->in.start = s->in.len = 0;
            /* Do not keep a large buffer around after a large message. */
            if (s->in.cap > 65536)
                qmp__buf_free(&s->in);
        } else if (body > 0 && qmp__buf_append(&s->in, p + skipped, body) < 0) {
            fail_with(s, -ENOMEM, QMP_ERR_NOMEM, "out of memory receiving a message");
            break;
        }
        p += n;
        len -= n;
    }
    s->in_dispatch = false;
    int r = qmp_session_get_error(s, err);
    qmp_session_unref(s);
    return r;
}

int qmp_session_feed_eof(qmp_session *s, qmp_error *err)
{
    if (s == NULL)
        return qmp__error_set(err, -EINVAL, QMP_ERR_INVALID, "NULL session");
    if (s->state != QMP_SESSION_FAILED) {
        size_t partial = qmp__buf_used(&s->in);
        size_t n = qmp_session_pending_count(s);
        qmp_session_ref(s);
        if (partial > 0 && s->mode == FRAME_VALUE)
            fail_with(s, -ECONNRESET, QMP_ERR_DISCONNECTED,
                      "QEMU closed the connection in the middle of a message (%zu bytes received)",
                      partial);
        else if (partial > 0)
            report_message(s, QMP_ERR_PROTOCOL, "message is not a JSON object",
                           s->in.data + s->in.start, partial);
        else if (s->state == QMP_SESSION_GREETING)
            fail_with(s, -ECONNRESET, QMP_ERR_DISCONNECTED,
                      "QEMU closed the connection before sending the QMP greeting");
        else if (s->state == QMP_SESSION_NEGOTIATING)
            fail_with(s, -ECONNRESET, QMP_ERR_DISCONNECTED,
                      "QEMU closed the connection during capabilities negotiation");
        else if (n > 0)
            fail_with(s, -ECONNRESET, QMP_ERR_DISCONNECTED,
                      "QEMU closed the connection with %zu command%s pending", n,
                      n == 1 ? "" : "s");
        else
            fail_with(s, -ECONNRESET, QMP_ERR_DISCONNECTED, "QEMU closed the connection");
        qmp_session_unref(s);
    }
    return qmp_session_get_error(s, err);
}

void qmp_session_abort(qmp_session *s, const qmp_error *why)
{
    qmp_error def;

    if (s == NULL || s->state == QMP_SESSION_FAILED)
        return;
    if (why == NULL || why->code >= 0) {
        qmp__error_set(&def, -ECONNRESET, QMP_ERR_DISCONNECTED, "the connection was aborted");
        why = &def;
    }
    qmp_session_ref(s);
    fail_session(s, why);
    qmp_session_unref(s);
}
