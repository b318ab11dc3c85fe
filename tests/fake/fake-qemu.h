/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A scripted fake QEMU for tests: it speaks QMP over one end of a
 * socketpair (or over a socket it accepts or connects), in its own thread.
 *
 * A test builds a script before starting the fake: expected commands
 * (by name, optionally with an arguments pattern), canned replies whose
 * "id" is copied from the request, events, raw bytes and faults.  The
 * fake runs the steps in order.  It records an error, reported by
 * fake_qemu_finish(), for an unexpected command, a command that does not
 * match, a step that failed, and every step still unrun at teardown.
 *
 *   fake_qemu *f = fake_qemu_new();
 *   int q = fake_qemu_expect(f, "query-status", NULL);
 *   fake_qemu_reply(f, q, "{\"status\": \"running\"}");
 *   fake_qemu_start(f);
 *   qmp_client_connect_fd(c, fake_qemu_take_client_fd(f), &err);
 *   ...
 *   CHECK_EQ_INT(fake_qemu_finish(f), 0);
 *   fake_qemu_free(f);
 *
 * By default the fake first sends a QEMU 7.2-like greeting offering
 * "oob" and answers qmp_capabilities with success (request index
 * FAKE_QEMU_CAPS_REQ).  Every wait inside the fake has a deadline
 * (FAKE_QEMU_DEADLINE_MS), so a hang becomes a recorded error.
 *
 * Requests are read with json-c's strict tokener.  File descriptors that
 * arrive with SCM_RIGHTS are given to the next request that completes;
 * tests pass descriptors with one command at a time.
 */
#ifndef QMP_TEST_FAKE_QEMU_H
#define QMP_TEST_FAKE_QEMU_H

#include <stddef.h>
#include <json-c/json_object.h>

typedef struct fake_qemu fake_qemu;

/* Deadline of every wait inside the fake, in milliseconds. */
#define FAKE_QEMU_DEADLINE_MS 10000

/* The default greeting (without line end). */
#define FAKE_QEMU_GREETING                                                                         \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "              \
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u6\"}, \"capabilities\": [\"oob\"]}}"

/* Request index of the automatic qmp_capabilities exchange. */
#define FAKE_QEMU_CAPS_REQ 0

/* How the fake handles qmp_capabilities after the greeting. */
typedef enum fake_qemu_negotiation {
    FAKE_QEMU_NEG_OK = 0, /* expect it, reply {"return": {}} (default) */
    FAKE_QEMU_NEG_FAIL,   /* expect it, reply with a GenericError */
    FAKE_QEMU_NEG_NONE    /* nothing automatic: the script handles it */
} fake_qemu_negotiation;

/* Flags for fake_qemu_expect_full(). */
#define FAKE_QEMU_ARGS_EXACT 0x1u /* arguments must equal the pattern (NULL: no "arguments") */

/* ------------------------------------------------------------ creation */

/* Fake on one end of a socketpair; the other end is fake_qemu_take_client_fd(). */
fake_qemu *fake_qemu_new(void);

/* Fake listening on unix socket path; it accepts one connection when
 * started and removes path when freed. */
fake_qemu *fake_qemu_new_unix(const char *path);

/* Fake listening on 127.0.0.1 on a free port; see fake_qemu_address(). */
fake_qemu *fake_qemu_new_tcp(void);

/* Fake that connects to the unix socket path when started (for a client
 * that listens and accepts). */
fake_qemu *fake_qemu_new_connect(const char *path);

/* The client end of the socketpair, handed to the caller (who closes
 * it); -1 in other modes or when already taken. */
int fake_qemu_take_client_fd(fake_qemu *f);

/* The address to connect to: the unix path, or "127.0.0.1:PORT". */
const char *fake_qemu_address(const fake_qemu *f);

/* ------------------------------------------------------ configuration */

/* Greeting sent first (a CRLF is appended); NULL sends none.  Before start. */
void fake_qemu_set_greeting(fake_qemu *f, const char *text);

/* How qmp_capabilities is handled.  Before start. */
void fake_qemu_set_negotiation(fake_qemu *f, fake_qemu_negotiation mode);

/* --------------------------------------------------------------- script */

/*
 * Expects the next request to execute command.  args_pattern is JSON
 * text or NULL: every member of the pattern must be present in the
 * request's arguments with an equal value (nested objects recursively).
 * Returns the request index, used by the reply functions and the
 * inspectors below.
 */
int fake_qemu_expect(fake_qemu *f, const char *command, const char *args_pattern);

/* As fake_qemu_expect() with flags (FAKE_QEMU_ARGS_EXACT) and the number
 * of descriptors that must come with the request (-1: any). */
int fake_qemu_expect_full(fake_qemu *f, const char *command, const char *args_pattern,
                          unsigned flags, int n_fds);

/* Replies {"return": RETURN_JSON, "id": ID} to request req (no "id" when
 * the request had none). */
void fake_qemu_reply(fake_qemu *f, int req, const char *return_json);

/* Replies {"error": {"class": klass, "desc": desc}, "id": ID}. */
void fake_qemu_reply_error(fake_qemu *f, int req, const char *klass, const char *desc);

/* Sends an event; data_json is JSON text or NULL for no "data".  Events
 * get increasing timestamps starting at seconds 1700000000. */
void fake_qemu_event(fake_qemu *f, const char *name, const char *data_json);

/* Sends n events name with data {"seq": 0..n-1} in one write. */
void fake_qemu_event_burst(fake_qemu *f, const char *name, unsigned n);

/* Sends text (NUL-terminated) or len bytes verbatim. */
void fake_qemu_send(fake_qemu *f, const char *text);
void fake_qemu_send_bytes(fake_qemu *f, const void *data, size_t len);

/* Modifiers of the send step just added (greeting text counts only when
 * sent with fake_qemu_send()): dribble writes one byte at a time, waiting
 * interval_ms between bytes (0: no wait); cut writes only the first
 * n_bytes and then closes the connection, ending the script. */
void fake_qemu_dribble(fake_qemu *f, int interval_ms);
void fake_qemu_cut(fake_qemu *f, size_t n_bytes);

/* Closes the connection; the script ends there. */
void fake_qemu_close(fake_qemu *f);

/* shutdown(SHUT_WR): the client sees end of file, the fake can still read. */
void fake_qemu_shutdown_write(fake_qemu *f);

/* Neither reads nor writes until fake_qemu_resume() (or teardown, which
 * is not an error; steps after an unreleased hold count as unrun). */
void fake_qemu_hold(fake_qemu *f);

/* ------------------------------------------------------------- serving */

/*
 * For requests that come in no fixed order (several threads sharing one
 * connection), a step can serve instead of expect: fake_qemu_serve() adds
 * a step that reads requests one at a time, in arrival order, and hands
 * each to fn on the fake's thread (request is borrowed; fn may keep it
 * with json_object_get() to answer it from a later call).  fn answers
 * with fake_qemu_answer(), fake_qemu_answer_error() and fake_qemu_emit();
 * what one call of fn queues is written in one piece after it returns.
 * fn returns FAKE_QEMU_SERVE_MORE to read the next request or
 * FAKE_QEMU_SERVE_DONE to end the step (the script then goes on).  The
 * client closing the connection while the step runs, and no request
 * within FAKE_QEMU_DEADLINE_MS, are recorded errors; so is a serve step
 * still running at teardown.
 */
#define FAKE_QEMU_SERVE_MORE 0
#define FAKE_QEMU_SERVE_DONE 1

typedef int (*fake_qemu_serve_fn)(fake_qemu *f, json_object *request, void *userdata);

void fake_qemu_serve(fake_qemu *f, fake_qemu_serve_fn fn, void *userdata);

/* From a serve function only: queues {"return": RETURN_JSON, "id": ID}
 * for request (no "id" when it had none). */
void fake_qemu_answer(fake_qemu *f, json_object *request, const char *return_json);

/* From a serve function only: queues an error reply to request. */
void fake_qemu_answer_error(fake_qemu *f, json_object *request, const char *klass,
                            const char *desc);

/* From a serve function only: queues an event, as fake_qemu_event(). */
void fake_qemu_emit(fake_qemu *f, const char *name, const char *data_json);

/* Records an error (printf-like), reported by fake_qemu_finish(); may be
 * called from any thread, a serve function included. */
void fake_qemu_record_error(fake_qemu *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* -------------------------------------------------------------- control */

/* Starts the fake's thread.  Returns 0 or a negative errno. */
int fake_qemu_start(fake_qemu *f);

/* Releases one hold (the current one, or the next one reached). */
void fake_qemu_resume(fake_qemu *f);

/* Waits until every step has run (or the script ended early).  Returns 0
 * or -ETIMEDOUT. */
int fake_qemu_wait_done(fake_qemu *f, int timeout_ms);

/* Number of errors recorded so far. */
int fake_qemu_error_count(fake_qemu *f);

/*
 * Stops the fake, joins its thread, records unrun steps, prints every
 * error as a TAP comment and returns the number of errors.  Descriptors
 * and requests stay available for inspection until fake_qemu_free().
 * Idempotent.
 */
int fake_qemu_finish(fake_qemu *f);

/* Finishes if needed and frees everything.  Accepts NULL. */
void fake_qemu_free(fake_qemu *f);

/* ----------------------------------------------------------- inspection */

/* The request received for index req (borrowed, valid until free), or
 * NULL if it has not arrived. */
json_object *fake_qemu_request(fake_qemu *f, int req);

/* The exact text of that request (without line end), or NULL. */
const char *fake_qemu_request_text(fake_qemu *f, int req);

/* Descriptors received with request req: count, and the i-th (borrowed,
 * closed by fake_qemu_free()), -1 if out of range. */
size_t fake_qemu_request_n_fds(fake_qemu *f, int req);
int fake_qemu_request_fd(fake_qemu *f, int req, size_t i);

/* Number of bytes the fake has read from the client in total. */
size_t fake_qemu_bytes_read(fake_qemu *f);

#endif /* QMP_TEST_FAKE_QEMU_H */
