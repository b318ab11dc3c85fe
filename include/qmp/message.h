/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: the three kinds of message QEMU sends: the greeting, events and
 * replies.  Each keeps the exact bytes received and decodes JSON only when
 * asked, so routing a message costs no JSON tree.
 */
#ifndef QMP_MESSAGE_H
#define QMP_MESSAGE_H

#include <stdint.h>
#include <json-c/json_object.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- greeting */

/*
 * The greeting QEMU sends on connect:
 *   {"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"},
 *            "capabilities": [...]}}
 * Owned by the session or client that received it; valid until that
 * object is freed or reconnected.
 */
typedef struct qmp_greeting qmp_greeting;

/* Writes QEMU's version numbers; any output pointer may be NULL. */
QMP_EXPORT void qmp_greeting_version(const qmp_greeting *g, int *ret_major, int *ret_minor,
                                     int *ret_micro);

/* QEMU's package string (e.g. "Debian 1:7.2+dfsg-7"), "" when absent.
 * Borrowed, valid as long as the greeting. */
QMP_EXPORT const char *qmp_greeting_package(const qmp_greeting *g);

/* Returns 1 if the greeting offers capability name (e.g. "oob"), else 0. */
QMP_EXPORT int qmp_greeting_has_capability(const qmp_greeting *g, const char *name);

/* The whole greeting message decoded; borrowed, valid as long as the
 * greeting.  NULL only when out of memory. */
QMP_EXPORT json_object *qmp_greeting_json(const qmp_greeting *g);

/* ------------------------------------------------------------------ events */

/*
 * An event: {"event": NAME, "data"?: {...}, "timestamp": {"seconds",
 * "microseconds"}}.  Reference counted; callbacks receive a borrowed
 * event and may keep it with qmp_event_ref().  References may be taken
 * and dropped from any thread; the data is decoded lazily on first use,
 * so calls to qmp_event_data() on one event from several threads need a
 * lock (a thread-safe client gives each waiting thread its own event).
 */
typedef struct qmp_event qmp_event;

/* Takes a reference; returns ev. */
QMP_EXPORT qmp_event *qmp_event_ref(qmp_event *ev);

/* Drops a reference; frees on the last one.  Accepts NULL; returns NULL. */
QMP_EXPORT qmp_event *qmp_event_unref(qmp_event *ev);

/* Event name, e.g. "STOP".  Borrowed, valid as long as the event. */
QMP_EXPORT const char *qmp_event_name(const qmp_event *ev);

/* QEMU's wall-clock timestamp of the event; both -1 when QEMU's clock
 * failed or the event had none. */
QMP_EXPORT int64_t qmp_event_seconds(const qmp_event *ev);
QMP_EXPORT int64_t qmp_event_microseconds(const qmp_event *ev);

/*
 * The event's "data" member, decoded on first use.  Borrowed, valid as
 * long as the event.  NULL when the event has no data (or out of memory;
 * qmp_event_has_data() tells them apart).
 */
QMP_EXPORT json_object *qmp_event_data(qmp_event *ev);

/* Returns 1 when the event carries a "data" member. */
QMP_EXPORT int qmp_event_has_data(const qmp_event *ev);

/*
 * The whole message decoded (a new object on each call).  New reference;
 * NULL when out of memory.
 */
QMP_EXPORT json_object *qmp_event_to_json(const qmp_event *ev);

/* The exact bytes received (without surrounding whitespace).  Borrowed,
 * valid as long as the event; NUL-terminated; *ret_len may be NULL. */
QMP_EXPORT const char *qmp_event_text(const qmp_event *ev, size_t *ret_len);

/* ----------------------------------------------------------------- replies */

/*
 * The outcome of one command, handed to the command's callback.  The
 * reply is borrowed and valid only during the callback; take a reference
 * to the return value (json_object_get()) or copy what you need.
 *
 * Every command sent through a session ends in exactly one reply:
 * success (status 0), a QMP error reply (-EREMOTEIO, category
 * QMP_ERR_COMMAND), or a failure that carries no message (disconnect,
 * protocol error, cancellation; see qmp_reply_error()).
 */
typedef struct qmp_reply qmp_reply;

/* The tag returned when the command was sent. */
QMP_EXPORT uint64_t qmp_reply_tag(const qmp_reply *r);

/* 0 for a "return" reply, otherwise the negative errno of the failure. */
QMP_EXPORT int qmp_reply_status(const qmp_reply *r);

/* Details of a failure; NULL when status is 0.  Borrowed, valid during
 * the callback. */
QMP_EXPORT const qmp_error *qmp_reply_error(const qmp_reply *r);

/*
 * The decoded "return" value (decoded on first call; any JSON type).
 * Borrowed, valid during the callback: json_object_get() it to keep it.
 * NULL for failures, for a JSON null, and when out of memory (then
 * qmp_reply_status() still says 0; use qmp_reply_get_return() to tell).
 */
QMP_EXPORT json_object *qmp_reply_return(qmp_reply *r);

/*
 * Like qmp_reply_return() but distinguishes the cases.  On success
 * *ret_value is a NEW reference (NULL for JSON null).
 * Returns 0, the reply's own failure status, or -ENOMEM.
 */
QMP_EXPORT int qmp_reply_get_return(qmp_reply *r, json_object **ret_value);

/*
 * The whole reply message decoded (including "id"), a new reference;
 * NULL for failures that carry no message or when out of memory.
 */
QMP_EXPORT json_object *qmp_reply_to_json(const qmp_reply *r);

/* The exact bytes of the reply message; NULL for failures without a
 * message.  Borrowed, valid during the callback, not NUL-terminated. */
QMP_EXPORT const char *qmp_reply_text(const qmp_reply *r, size_t *ret_len);

#ifdef __cplusplus
}
#endif

#endif /* QMP_MESSAGE_H */
