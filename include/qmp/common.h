/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: definitions shared by every component: export macro, error
 * reporting, logging and timeouts.
 *
 * Error convention (used by every fallible libqmp function): the return
 * value is 0 (or a non-negative count) on success and a negative errno
 * value on failure.  Details go into an optional, caller-owned qmp_error
 * (it may live on the stack and may be NULL when the caller needs only
 * the code).  libqmp has no global or thread-local "last error".
 */
#ifndef QMP_COMMON_H
#define QMP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(QMP_STATIC_BUILD)
#define QMP_EXPORT __attribute__((visibility("default")))
#else
#define QMP_EXPORT
#endif

#if defined(__GNUC__)
#define QMP_PRINTF(fmt, first) __attribute__((format(printf, fmt, first)))
#define QMP_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define QMP_PRINTF(fmt, first)
#define QMP_WARN_UNUSED
#endif

/* Library version, also available at run time via qmp_version_string(). */
#define QMP_VERSION_MAJOR 0
#define QMP_VERSION_MINOR 1
#define QMP_VERSION_MICRO 0

/*
 * Timeouts are in milliseconds.  QMP_TIMEOUT_INFINITE waits forever;
 * QMP_TIMEOUT_DEFAULT, accepted where a per-call timeout is taken, means
 * "use the object's default".  A timeout is a deadline for the whole
 * operation, not for each read or write.
 */
#define QMP_TIMEOUT_INFINITE (-1)
#define QMP_TIMEOUT_DEFAULT (-2)

/*
 * Error categories.  Each failure falls into exactly one; the CLI maps
 * them to distinct exit codes.  The negative errno returned alongside is
 * listed for each.
 */
typedef enum qmp_error_category {
    QMP_ERR_NONE = 0,
    QMP_ERR_CONNECT,  /* socket could not be created, connected or accepted (errno of the call) */
    QMP_ERR_GREETING, /* missing or malformed greeting (-EPROTO) */
    QMP_ERR_NEGOTIATION,  /* qmp_capabilities failed (-EPROTO) */
    QMP_ERR_TIMEOUT,      /* deadline passed (-ETIMEDOUT) */
    QMP_ERR_DISCONNECTED, /* peer closed or the connection broke (-ECONNRESET, -EPIPE) */
    QMP_ERR_PROTOCOL,     /* the peer broke the protocol: bad JSON, bad shape (-EPROTO) */
    QMP_ERR_COMMAND,      /* QEMU answered with an error reply (-EREMOTEIO) */
    QMP_ERR_LIMIT,        /* a configured limit was exceeded (-EMSGSIZE) */
    QMP_ERR_INVALID,      /* invalid argument or call out of sequence (-EINVAL, -ENOTCONN, ...) */
    QMP_ERR_NOMEM,        /* out of memory (-ENOMEM) */
    QMP_ERR_CANCELLED,    /* the call was cancelled by the caller (-ECANCELED) */
    QMP_ERR_SYSTEM        /* other operating-system failure (errno of the call) */
} qmp_error_category;

/*
 * The QMP error classes QEMU sends in error replies.  QMP_CLASS_OTHER is
 * any class this version of libqmp does not know; its name is still in
 * qmp_error.class_name.
 */
typedef enum qmp_error_class {
    QMP_CLASS_NONE = 0,
    QMP_CLASS_GENERIC_ERROR,
    QMP_CLASS_COMMAND_NOT_FOUND,
    QMP_CLASS_DEVICE_NOT_ACTIVE,
    QMP_CLASS_DEVICE_NOT_FOUND,
    QMP_CLASS_KVM_MISSING_CAP,
    QMP_CLASS_OTHER
} qmp_error_class;

/*
 * Details of a failure, filled by the function that failed.  The caller
 * owns it; it holds no pointers and needs no cleanup.  Fields are valid
 * only after a call returned a negative value; on success the struct is
 * left untouched.
 *
 * code:       the negative errno the function returned.
 * category:   what kind of failure (see qmp_error_category).
 * qmp_class:  for QMP_ERR_COMMAND (and QMP_ERR_NEGOTIATION caused by an
 *             error reply): the error class; QMP_CLASS_NONE otherwise.
 * class_name: the class as QEMU spelt it ("" when there is none).
 * message:    one human-readable sentence saying what happened and where;
 *             for QMP_ERR_COMMAND it is QEMU's "desc" text.  Truncated
 *             with "..." if longer than the buffer.
 */
typedef struct qmp_error {
    int code;
    qmp_error_category category;
    qmp_error_class qmp_class;
    char class_name[64];
    char message[512];
} qmp_error;

/* Initialiser for a qmp_error on the stack: qmp_error err = QMP_ERROR_INIT; */
#define QMP_ERROR_INIT                                                                             \
    {                                                                                              \
        0, QMP_ERR_NONE, QMP_CLASS_NONE, "", ""                                                    \
    }

/*
 * Returns a static, lower-case name for a category ("timeout",
 * "command error", ...), "unknown" for values outside the enum.
 */
QMP_EXPORT const char *qmp_error_category_name(qmp_error_category category);

/* Maps a QMP class name ("DeviceNotFound") to its enum; NULL gives
 * QMP_CLASS_NONE, an unknown name QMP_CLASS_OTHER. */
QMP_EXPORT qmp_error_class qmp_error_class_from_name(const char *name);

/* Returns QEMU's spelling of a class ("GenericError"), or NULL for
 * QMP_CLASS_NONE, QMP_CLASS_OTHER and values outside the enum. */
QMP_EXPORT const char *qmp_error_class_name(qmp_error_class klass);

/* Log levels, most severe first. */
typedef enum qmp_log_level {
    QMP_LOG_ERROR = 1,
    QMP_LOG_WARNING,
    QMP_LOG_INFO,
    QMP_LOG_DEBUG
} qmp_log_level;

/*
 * Log callback.  message is a NUL-terminated sentence without trailing
 * newline, borrowed for the duration of the call.  The callback must not
 * call back into the object that logs.  libqmp is silent until one is set.
 */
typedef void (*qmp_log_fn)(qmp_log_level level, const char *message, void *userdata);

/* Direction of a traced message. */
typedef enum qmp_trace_direction {
    QMP_TRACE_IN = 0, /* received from QEMU */
    QMP_TRACE_OUT = 1 /* sent to QEMU */
} qmp_trace_direction;

/*
 * Traffic trace callback: called once per whole message, with the exact
 * bytes (not NUL-terminated; len excludes the final newline of outgoing
 * messages).  data is borrowed for the duration of the call.  Received
 * messages are traced before they are routed, so a malformed message is
 * traced too.
 */
typedef void (*qmp_trace_fn)(qmp_trace_direction direction, const char *data, size_t len,
                             void *userdata);

/* Returns the library version as "MAJOR.MINOR.MICRO"; static storage. */
QMP_EXPORT const char *qmp_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* QMP_COMMON_H */
