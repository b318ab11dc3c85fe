/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Greeting, event and reply objects: exact bytes kept, JSON decoded lazily. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "internal.h"

/* ---------------------------------------------------------------- greeting */

struct qmp_greeting {
    json_object *json;
    int major, minor, micro;
    const char *package;       /* borrowed from json */
    json_object *capabilities; /* borrowed from json */
};

static bool get_member(json_object *o, const char *key, json_type type, json_object **ret)
{
    return json_object_object_get_ex(o, key, ret) && json_object_is_type(*ret, type);
}

static int version_part(json_object *qemu, const char *key, int *ret)
{
    json_object *v;
    if (!get_member(qemu, key, json_type_int, &v))
        return -1;
    int64_t i = json_object_get_int64(v);
    if (i < 0 || i > 1000000)
        return -1;
    *ret = (int)i;
    return 0;
}

int qmp__greeting_new(qmp_greeting **ret, const char *text, size_t len, unsigned max_depth,
                      qmp_error *err)
{
    json_object *json = NULL, *qmp, *version, *qemu, *caps, *package;
    qmp_error perr;
    int r = qmp__json_build(text, text + len, max_depth, &json, &perr);

    if (r == -ENOMEM) {
        qmp__error_copy(err, &perr);
        return r;
    }
    if (r < 0)
        return qmp__error_set(err, -EPROTO, QMP_ERR_GREETING, "malformed greeting: %s",
                              perr.message);

    const char *what = NULL;
    if (!get_member(json, "QMP", json_type_object, &qmp))
        what = "\"QMP\" is not an object";
    else if (!get_member(qmp, "version", json_type_object, &version))
        what = "no \"version\" object";
    else if (!get_member(version, "qemu", json_type_object, &qemu))
        what = "no \"version\".\"qemu\" object";
    else if (!get_member(qmp, "capabilities", json_type_array, &caps))
        what = "no \"capabilities\" array";

    if (what == NULL) {
        for (size_t i = 0; i < json_object_array_length(caps); i++) {
            if (!json_object_is_type(json_object_array_get_idx(caps, i), json_type_string))
                what = "a capability is not a string";
        }
    }

    qmp_greeting *g = NULL;
    if (what == NULL) {
        g = calloc(1, sizeof(*g));
        if (g == NULL) {
            json_object_put(json);
            return qmp__error_set(err, -ENOMEM, QMP_ERR_NOMEM, "out of memory");
        }
        if (version_part(qemu, "major", &g->major) < 0 ||
            version_part(qemu, "minor", &g->minor) < 0 ||
            version_part(qemu, "micro", &g->micro) < 0)
            what = "bad version numbers";
        g->package = "";
        if (json_object_object_get_ex(version, "package", &package)) {
            if (!json_object_is_type(package, json_type_string))
                what = "\"package\" is not a string";
            else
                g->package = json_object_get_string(package);
        }
    }
    if (what != NULL) {
        free(g);
        json_object_put(json);
        return qmp__error_set(err, -EPROTO, QMP_ERR_GREETING, "malformed greeting: %s: %.*s", what,
                              (int)(len > 200 ? 200 : len), text);
    }
    g->json = json;
    g->capabilities = caps;
    *ret = g;
    return 0;
}

void qmp__greeting_free(qmp_greeting *g)
{
    if (g == NULL)
        return;
    json_object_put(g->json);
    free(g);
}

void qmp_greeting_version(const qmp_greeting *g, int *ret_major, int *ret_minor, int *ret_micro)
{
    if (g == NULL)
        return;
    if (ret_major)
        *ret_major = g->major;
    if (ret_minor)
        *ret_minor = g->minor;
    if (ret_micro)
        *ret_micro = g->micro;
}

const char *qmp_greeting_package(const qmp_greeting *g)
{
    return g ? g->package : "";
}

int qmp_greeting_has_capability(const qmp_greeting *g, const char *name)
{
    if (g == NULL || name == NULL)
        return 0;
    size_t n = json_object_array_length(g->capabilities);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(g->capabilities, i);
        if (json_object_is_type(c, json_type_string) &&
            strcmp(json_object_get_string(c), name) == 0)
            return 1;
    }
    return 0;
}

json_object *qmp_greeting_json(const qmp_greeting *g)
{
    return g ? g->json : NULL;
}

/* ------------------------------------------------------------------ events */

struct qmp_event {
    unsigned refs;
    bool data_decoded;
    unsigned max_depth;
    int64_t seconds;
    int64_t microseconds;
    json_object *data;
    size_t len;
    size_t data_off;
    size_t data_len; /* 0: no data member */
    char *name;
    char text[]; /* message, NUL, name, NUL */
};

qmp_event *qmp__event_new(const char *text, size_t len, const char *name, size_t name_len,
                          int64_t seconds, int64_t microseconds, size_t data_off, size_t data_len,
                          unsigned max_depth)
{
    qmp_event *ev = malloc(sizeof(*ev) + len + name_len + 2);
    if (ev == NULL)
        return NULL;
    ev->refs = 1;
    ev->data_decoded = false;
    ev->max_depth = max_depth;
    ev->seconds = seconds;
    ev->microseconds = microseconds;
    ev->data = NULL;
    ev->len = len;
    ev->data_off = data_off;
    ev->data_len = data_len;
    memcpy(ev->text, text, len);
    ev->text[len] = '\0';
    ev->name = ev->text + len + 1;
    memcpy(ev->name, name, name_len);
    ev->name[name_len] = '\0';
    return ev;
}

qmp_event *qmp__event_dup(const qmp_event *ev)
{
    return qmp__event_new(ev->text, ev->len, ev->name, strlen(ev->name), ev->seconds,
                          ev->microseconds, ev->data_off, ev->data_len, ev->max_depth);
}

/* Reference counts are atomic so that events handed to several threads
 * (a thread-safe client's waiters and subscriptions) may be dropped
 * anywhere; the lazily decoded data is not shared that way. */
qmp_event *qmp_event_ref(qmp_event *ev)
{
    if (ev != NULL)
        __atomic_add_fetch(&ev->refs, 1, __ATOMIC_RELAXED);
    return ev;
}

qmp_event *qmp_event_unref(qmp_event *ev)
{
    if (ev == NULL || __atomic_sub_fetch(&ev->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return NULL;
    json_object_put(ev->data);
    free(ev);
    return NULL;
}

const char *qmp_event_name(const qmp_event *ev)
{
    return ev ? ev->name : NULL;
}

int64_t qmp_event_seconds(const qmp_event *ev)
{
    return ev ? ev->seconds : -1;
}

int64_t qmp_event_microseconds(const qmp_event *ev)
{
    return ev ? ev->microseconds : -1;
}

int qmp_event_has_data(const qmp_event *ev)
{
    return ev != NULL && ev->data_len > 0;
}

json_object *qmp_event_data(qmp_event *ev)
{
    if (ev == NULL || ev->data_len == 0)
        return NULL;
    if (!ev->data_decoded) {
        const char *p = ev->text + ev->data_off;
        /* The message was validated when it arrived: only ENOMEM can fail. */
        if (qmp__json_build(p, p + ev->data_len, ev->max_depth, &ev->data, NULL) < 0)
            return NULL;
        ev->data_decoded = true;
    }
    return ev->data;
}

json_object *qmp_event_to_json(const qmp_event *ev)
{
    json_object *o = NULL;
    if (ev == NULL || qmp__json_build(ev->text, ev->text + ev->len, ev->max_depth, &o, NULL) < 0)
        return NULL;
    return o;
}

const char *qmp_event_text(const qmp_event *ev, size_t *ret_len)
{
    if (ev == NULL)
        return NULL;
    if (ret_len)
        *ret_len = ev->len;
    return ev->text;
}

/* ----------------------------------------------------------------- replies */

uint64_t qmp_reply_tag(const qmp_reply *r)
{
    return r ? r->tag : 0;
}

int qmp_reply_status(const qmp_reply *r)
{
    return r ? r->status : -EINVAL;
}

const qmp_error *qmp_reply_error(const qmp_reply *r)
{
    return r && r->status < 0 ? r->error : NULL;
}

static int reply_decode(qmp_reply *r)
{
    if (r->status < 0)
        return r->status;
    if (!r->decoded) {
        if (qmp__json_build(r->value, r->value + r->value_len, r->max_depth, &r->decoded_value,
                            NULL) < 0)
            return -ENOMEM;
        r->decoded = true;
    }
    return 0;
}

json_object *qmp_reply_return(qmp_reply *r)
{
    if (r == NULL || reply_decode(r) < 0)
        return NULL;
    return r->decoded_value;
}

int qmp_reply_get_return(qmp_reply *r, json_object **ret_value)
{
    if (r == NULL || ret_value == NULL)
        return -EINVAL;
    int s = reply_decode(r);
    if (s < 0)
        return s;
    *ret_value = json_object_get(r->decoded_value);
    return 0;
}

json_object *qmp_reply_to_json(const qmp_reply *r)
{
    json_object *o = NULL;
    if (r == NULL || r->text == NULL ||
        qmp__json_build(r->text, r->text + r->text_len, r->max_depth, &o, NULL) < 0)
        return NULL;
    return o;
}

const char *qmp_reply_text(const qmp_reply *r, size_t *ret_len)
{
    if (r == NULL || r->text == NULL)
        return NULL;
    if (ret_len)
        *ret_len = r->text_len;
    return r->text;
}
