/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Error reporting and logging helpers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const char *const category_names[] = {
    [QMP_ERR_NONE] = "no error",           [QMP_ERR_CONNECT] = "connect error",
    [QMP_ERR_GREETING] = "greeting error", [QMP_ERR_NEGOTIATION] = "negotiation error",
    [QMP_ERR_TIMEOUT] = "timeout",         [QMP_ERR_DISCONNECTED] = "disconnected",
    [QMP_ERR_PROTOCOL] = "protocol error", [QMP_ERR_COMMAND] = "command error",
    [QMP_ERR_LIMIT] = "limit exceeded",    [QMP_ERR_INVALID] = "invalid argument",
    [QMP_ERR_NOMEM] = "out of memory",     [QMP_ERR_CANCELLED] = "cancelled",
    [QMP_ERR_SYSTEM] = "system error",
};

const char *qmp_error_category_name(qmp_error_category category)
{
    if ((unsigned)category >= sizeof(category_names) / sizeof(category_names[0]))
        return "unknown";
    return category_names[category];
}

static const char *const class_names[] = {
    [QMP_CLASS_GENERIC_ERROR] = "GenericError",
    [QMP_CLASS_COMMAND_NOT_FOUND] = "CommandNotFound",
    [QMP_CLASS_DEVICE_NOT_ACTIVE] = "DeviceNotActive",
    [QMP_CLASS_DEVICE_NOT_FOUND] = "DeviceNotFound",
    [QMP_CLASS_KVM_MISSING_CAP] = "KVMMissingCap",
};

qmp_error_class qmp_error_class_from_name(const char *name)
{
    if (name == NULL)
        return QMP_CLASS_NONE;
    for (size_t i = QMP_CLASS_GENERIC_ERROR; i <= QMP_CLASS_KVM_MISSING_CAP; i++) {
        if (strcmp(name, class_names[i]) == 0)
            return (qmp_error_class)i;
    }
    return QMP_CLASS_OTHER;
}

const char *qmp_error_class_name(qmp_error_class klass)
{
    if (klass < QMP_CLASS_GENERIC_ERROR || klass > QMP_CLASS_KVM_MISSING_CAP)
        return NULL;
    return class_names[klass];
}

const char *qmp_version_string(void)
{
    return QMP_STRINGIFY_VERSION;
}

/* Writes a formatted message into buf, marking truncation with "...". */
static void format_truncated(char *buf, size_t size, const char *fmt, va_list ap) QMP_PRINTF(3, 0);
static void format_truncated(char *buf, size_t size, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, size, fmt, ap);
    if (n < 0) {
        snprintf(buf, size, "(unformattable message)");
    } else if ((size_t)n >= size && size > 4) {
        memcpy(buf + size - 4, "...", 4);
    }
}

int qmp__error_setv(qmp_error *err, int code, qmp_error_category category, const char *fmt,
                    va_list ap)
{
    if (err == NULL)
        return code;
    err->code = code;
    err->category = category;
    err->qmp_class = QMP_CLASS_NONE;
    err->class_name[0] = '\0';
    format_truncated(err->message, sizeof(err->message), fmt, ap);
    return code;
}

int qmp__error_set(qmp_error *err, int code, qmp_error_category category, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qmp__error_setv(err, code, category, fmt, ap);
    va_end(ap);
    return code;
}

void qmp__error_copy(qmp_error *dst, const qmp_error *src)
{
    if (dst != NULL && src != NULL && dst != src)
        *dst = *src;
}

void qmp__log(const qmp__logger *lg, qmp_log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!qmp__log_enabled(lg, level))
        return;
    va_start(ap, fmt);
    format_truncated(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lg->fn(level, msg, lg->userdata);
}
