/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * template: command arguments written as JSON templates.
 *
 * A template is JSON in which strings may be single-quoted (so C needs no
 * \" escapes) and printf-like conversions insert values: %s inserts a C
 * string as a correctly escaped JSON string, so data can never change the
 * structure of the request; %d and friends insert numbers.
 *
 *   qemu-system-x86_64 -M none -display none \
 *       -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   ./template /tmp/qmp.sock
 */
#include <stdio.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

static int fail(const char *what, const qmp_error *err)
{
    fprintf(stderr, "%s: %s\n", what, err->message);
    return 1;
}

int main(int argc, char **argv)
{
    /* Quotes, braces and a percent sign: all safe through %s. */
    const char *tricky = "it's \"quoted\", {braced} and 100% safe";
    qmp_error err = QMP_ERROR_INIT;
    json_object *value = NULL, *args = NULL;
    qmp_client *c = NULL;
    int ret = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
        return 2;
    }
    if (qmp_client_new(&c) < 0)
        return 1;
    if (qmp_client_connect(c, argv[1], &err) < 0) {
        fail("connect", &err);
        goto out;
    }

    /* Strings: the command name is plain, the arguments a template. */
    if (qmp_client_command(c, &value, &err, "qom-get", "{'path': %s, 'property': %s}", "/machine",
                           "type") < 0) {
        fail("qom-get", &err);
        goto out;
    }
    printf("machine type: %s\n", json_object_get_string(value));
    json_object_put(value);

    /* Untrusted text goes in with %s and comes back unchanged. */
    if (qmp_client_command(c, NULL, &err, "qom-set",
                           "{'path': '/machine', 'property': 'dt-compatible', 'value': %s}",
                           tricky) < 0 ||
        qmp_client_command(c, &value, &err, "qom-get",
                           "{'path': '/machine', 'property': 'dt-compatible'}") < 0) {
        fail("qom-set/qom-get", &err);
        goto out;
    }
    printf("round trip: %s\n", json_object_get_string(value));
    json_object_put(value);

    /* Numbers, and a template built separately (a new reference). */
    if (qmp_json_build(&args, &err, "{'downtime-limit': %d}", 250) < 0) {
        fail("qmp_json_build", &err);
        goto out;
    }
    printf("request arguments: %s\n", json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN));
    if (qmp_client_execute(c, "migrate-set-parameters", args, NULL, &err) < 0 ||
        qmp_client_command(c, &value, &err, "query-migrate-parameters", NULL) < 0) {
        fail("migrate parameters", &err);
        goto out;
    }
    printf("downtime-limit is now %d ms\n",
           json_object_get_int(json_object_object_get(value, "downtime-limit")));
    json_object_put(value);
    ret = 0;
out:
    json_object_put(args);
    qmp_client_unref(c);
    return ret;
}
