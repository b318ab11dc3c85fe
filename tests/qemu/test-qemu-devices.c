/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Devices and file descriptors against a real qemu-system-x86_64: USB
 * hotplug on q35 with DEVICE_DELETED, device-list-properties and its
 * UINT64_MAX defaults, descriptors passed with add-fd and getfd.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <qmp/qmp.h>

#include "harness.h"
#include "qemu-harness.h"

#define EVENT_MS QEMU_TEST_EVENT_TIMEOUT_MS
#define exec_ok(c, command, args) qemu_exec((c), (command), (args), &harness_cur_failed)

/* Whether /machine/peripheral holds a child named id. */
static int has_peripheral(qmp_client *c, const char *id)
{
    json_object *args = NULL, *list;
    size_t i;
    int found = 0;

    if (qmp_json_build(&args, NULL, "{'path': '/machine/peripheral'}") < 0)
        return -1;
    list = exec_ok(c, "qom-list", args);
    json_object_put(args);
    if (!json_object_is_type(list, json_type_array)) {
        json_object_put(list);
        return -1;
    }
    for (i = 0; i < json_object_array_length(list); i++) {
        const char *name = qemu_json_str(json_object_array_get_idx(list, i), "name");

        if (name != NULL && strcmp(name, id) == 0)
            found = 1;
    }
    json_object_put(list);
    return found;
}

static void usb_hotplug_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    json_object *ret = NULL, *match = NULL;
    int rc;

    (void)q;
    CHECK_EQ_INT(has_peripheral(c, "xhci"), 1);
    CHECK_EQ_INT(has_peripheral(c, "tab"), 0);
    rc = qmp_client_command(c, &ret, &err, "device_add",
                            "{'driver': 'usb-tablet', 'id': %s, 'bus': 'xhci.0'}", "tab");
    if (rc < 0)
        qemu_print_error("device_add", rc, &err);
    REQUIRE(rc == 0);
    json_object_put(ret);
    ret = NULL;
    CHECK_EQ_INT(has_peripheral(c, "tab"), 1);

    /* Match before sending: the event may come at any time after. */
    REQUIRE(qmp_json_build(&match, NULL, "{'device': 'tab'}") == 0);
    rc = qmp_client_command(c, NULL, &err, "device_del", "{'id': %s}", "tab");
    if (rc < 0)
        qemu_print_error("device_del", rc, &err);
    CHECK_EQ_INT(rc, 0);
    rc = qmp_client_wait_event(c, "DEVICE_DELETED", match, EVENT_MS, &ev, &err);
    json_object_put(match);
    if (rc < 0)
        qemu_print_error("wait DEVICE_DELETED", rc, &err);
    REQUIRE(rc == 0);
    CHECK_EQ_STR(qmp_event_name(ev), "DEVICE_DELETED");
    CHECK_EQ_INT(qmp_event_has_data(ev), 1);
    CHECK_EQ_STR(qemu_json_str(qmp_event_data(ev), "device"), "tab");
    CHECK_EQ_STR(qemu_json_str(qmp_event_data(ev), "path"), "/machine/peripheral/tab");
    qmp_event_unref(ev);
    CHECK_EQ_INT(has_peripheral(c, "tab"), 0);

    /* Gone for good. */
    rc = qmp_client_command(c, NULL, &err, "device_del", "{'id': %s}", "tab");
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_DEVICE_NOT_FOUND);
}

TEST(usb_hotplug)
{
    qemu_opts o = {.machine = "q35", .extra_args = {"-S", "-device", "qemu-xhci,id=xhci"}};

    qemu_run(&o, usb_hotplug_body, &harness_cur_failed);
}

/* Two unplugs: waiting for the second device's event first leaves the
 * first one's queued for the next wait. */
static void usb_two_body(qemu_instance *q, qmp_client *c)
{
    static const char *const ids[2] = {"tab1", "tab2"};
    qmp_error err = QMP_ERROR_INIT;
    qmp_event *ev = NULL;
    json_object *match = NULL;
    int i, rc;

    (void)q;
    for (i = 0; i < 2; i++) {
        rc = qmp_client_command(c, NULL, &err, "device_add",
                                "{'driver': 'usb-tablet', 'id': %s, 'bus': 'xhci.0'}", ids[i]);
        if (rc < 0)
            qemu_print_error("device_add", rc, &err);
        REQUIRE(rc == 0);
    }
    for (i = 0; i < 2; i++) {
        rc = qmp_client_command(c, NULL, &err, "device_del", "{'id': %s}", ids[i]);
        CHECK_EQ_INT(rc, 0);
    }
    for (i = 1; i >= 0; i--) {
        REQUIRE(qmp_json_build(&match, NULL, "{'device': %s}", ids[i]) == 0);
        rc = qmp_client_wait_event(c, "DEVICE_DELETED", match, EVENT_MS, &ev, &err);
        json_object_put(match);
        if (rc < 0)
            qemu_print_error("wait DEVICE_DELETED", rc, &err);
        REQUIRE(rc == 0);
        CHECK_EQ_STR(qemu_json_str(qmp_event_data(ev), "device"), ids[i]);
        ev = qmp_event_unref(ev);
    }
    CHECK_EQ_INT(has_peripheral(c, "tab1"), 0);
    CHECK_EQ_INT(has_peripheral(c, "tab2"), 0);
}

TEST(usb_unplug_two)
{
    qemu_opts o = {.machine = "q35", .extra_args = {"-S", "-device", "qemu-xhci,id=xhci"}};

    qemu_run(&o, usb_two_body, &harness_cur_failed);
}

/* Keeps a copy of the last message received. */
typedef struct last_in {
    char *data;
    size_t len;
} last_in;

static void keep_last_in(qmp_trace_direction dir, const char *data, size_t len, void *userdata)
{
    last_in *l = userdata;

    if (dir != QMP_TRACE_IN)
        return;
    free(l->data);
    l->data = malloc(len + 1);
    if (l->data != NULL) {
        memcpy(l->data, data, len);
        l->data[len] = '\0';
    }
    l->len = len;
}

static size_t count_substr(const char *hay, const char *needle)
{
    size_t n = 0;

    for (hay = strstr(hay, needle); hay != NULL; hay = strstr(hay + 1, needle))
        n++;
    return n;
}

/*
 * pcie-root-port's *-reserve properties default to UINT64_MAX, which
 * QEMU 7.2 sends as 18446744073709551615: it must read back exactly.
 */
static void uint64_body(qemu_instance *q, qmp_client *c)
{
    last_in raw = {NULL, 0};
    json_object *props, *v;
    size_t i, n, sent, max_seen = 0;
    int mem_reserve = 0, romsize = 0, addr = 0;

    (void)q;
    qmp_client_set_trace(c, keep_last_in, &raw);
    {
        json_object *args = NULL;

        REQUIRE(qmp_json_build(&args, NULL, "{'typename': 'pcie-root-port'}") == 0);
        props = exec_ok(c, "device-list-properties", args);
        json_object_put(args);
    }
    qmp_client_set_trace(c, NULL, NULL);
    REQUIRE(raw.data != NULL);
    sent = count_substr(raw.data, "18446744073709551615");
    printf("# UINT64_MAX appears %zu times in the %zu-byte reply\n", sent, raw.len);
    free(raw.data);
    CHECK(sent >= 1);
    REQUIRE(json_object_is_type(props, json_type_array));
    n = json_object_array_length(props);
    for (i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(props, i);
        const char *name = qemu_json_str(p, "name");

        v = qemu_json_get(p, "default-value");
        if (name == NULL || v == NULL)
            continue;
        if (json_object_is_type(v, json_type_int) && json_object_get_uint64(v) == UINT64_MAX &&
            json_object_get_int64(v) == INT64_MAX) {
            /* A uint64, not an int64 that saturated: it prints back the same. */
            CHECK_EQ_STR(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                         "18446744073709551615");
            max_seen++;
        }
        if (strcmp(name, "mem-reserve") == 0) {
            mem_reserve = 1;
            CHECK(json_object_is_type(v, json_type_int));
            CHECK(json_object_get_uint64(v) == UINT64_MAX);
        } else if (strcmp(name, "romsize") == 0) {
            romsize = 1;
            CHECK_EQ_INT(json_object_get_int64(v), 4294967295LL);
        } else if (strcmp(name, "addr") == 0) {
            addr = 1;
            CHECK_EQ_INT(json_object_get_int64(v), -1);
        }
    }
    /* Every UINT64_MAX QEMU sent decoded exactly. */
    CHECK_EQ_INT(max_seen, sent);
    CHECK(mem_reserve);
    CHECK(romsize);
    CHECK(addr);
    json_object_put(props);
}

TEST(device_list_properties_uint64)
{
    qemu_opts o = {.machine = "q35", .extra_args = {"-S"}};

    qemu_run(&o, uint64_body, &harness_cur_failed);
}

/* The target of QEMU's descriptor fd, as /proc shows it ("" if none). */
static void qemu_fd_target(const qemu_instance *q, long fd, char *buf, size_t size)
{
    char link[64];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/%d/fd/%ld", (int)q->pid, fd);
    n = readlink(link, buf, size - 1);
    buf[n > 0 ? (size_t)n : 0] = '\0';
}

/* Whether QEMU holds a descriptor whose /proc link reads target. */
static int qemu_holds(const qemu_instance *q, const char *target)
{
    char dir[64], buf[PATH_MAX];
    struct dirent *e;
    DIR *d;
    int found = 0;

    snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)q->pid);
    d = opendir(dir);
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        qemu_fd_target(q, strtol(e->d_name, NULL, 10), buf, sizeof(buf));
        if (strcmp(buf, target) == 0)
            found = 1;
    }
    closedir(d);
    return found;
}

static int open_temp(const qemu_instance *q, const char *name, char *path, size_t size)
{
    if (qemu_path(q, name, path, size) < 0)
        return -1;
    return open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
}

/* add-fd puts the descriptor sent with the command into an fdset. */
static void add_fd_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    char path[2][QEMU_PATH_MAX], target[PATH_MAX];
    json_object *args = NULL, *ret = NULL, *sets;
    long qfd[2] = {-1, -1};
    int fd[2], i, rc;
    size_t k;

    for (i = 0; i < 2; i++) {
        char name[16];

        snprintf(name, sizeof(name), "fdfile%d", i);
        fd[i] = open_temp(q, name, path[i], sizeof(path[i]));
        REQUIRE(fd[i] >= 0);
    }

    /* Without a descriptor QEMU refuses. */
    rc = qmp_client_command(c, NULL, &err, "add-fd", "{'fdset-id': 1}");
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_GENERIC_ERROR);
    CHECK_CONTAINS(err.message, "SCM_RIGHTS");

    /* Two commands, each with its own descriptor. */
    for (i = 0; i < 2; i++) {
        REQUIRE(qmp_json_build(&args, NULL, "{'fdset-id': %d, 'opaque': %s}", i + 1,
                               i == 0 ? "libqmp-a" : "libqmp-b") == 0);
        rc = qmp_client_execute_full(c, "add-fd", args, 0, QMP_TIMEOUT_DEFAULT, &fd[i], 1, &ret,
                                     &err);
        json_object_put(args);
        if (rc < 0)
            qemu_print_error("add-fd", rc, &err);
        REQUIRE(rc == 0);
        CHECK_EQ_INT(json_object_get_int(qemu_json_get(ret, "fdset-id")), i + 1);
        REQUIRE(json_object_is_type(qemu_json_get(ret, "fd"), json_type_int));
        qfd[i] = (long)json_object_get_int64(qemu_json_get(ret, "fd"));
        json_object_put(ret);
        ret = NULL;
        /* QEMU's new descriptor is the file we sent. */
        qemu_fd_target(q, qfd[i], target, sizeof(target));
        CHECK_EQ_STR(target, path[i]);
    }
    /* Ours stay open and usable. */
    for (i = 0; i < 2; i++)
        CHECK(write(fd[i], "x", 1) == 1);

    sets = exec_ok(c, "query-fdsets", NULL);
    REQUIRE(json_object_is_type(sets, json_type_array));
    CHECK_EQ_INT(json_object_array_length(sets), 2);
    for (k = 0; k < json_object_array_length(sets); k++) {
        json_object *set = json_object_array_get_idx(sets, k);
        json_object *fds = qemu_json_get(set, "fds");
        int id = json_object_get_int(qemu_json_get(set, "fdset-id"));

        CHECK(id == 1 || id == 2);
        if (id != 1 && id != 2)
            continue;
        CHECK(json_object_is_type(fds, json_type_array) && json_object_array_length(fds) == 1);
        CHECK_EQ_INT(json_object_get_int64(qemu_json_get(json_object_array_get_idx(fds, 0), "fd")),
                     qfd[id - 1]);
        CHECK_EQ_STR(qemu_json_str(json_object_array_get_idx(fds, 0), "opaque"),
                     id == 1 ? "libqmp-a" : "libqmp-b");
    }
    json_object_put(sets);

    /* remove-fd closes QEMU's copy. */
    rc = qmp_client_command(c, NULL, &err, "remove-fd", "{'fdset-id': 1, 'fd': %ld}", qfd[0]);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(qemu_holds(q, path[0]), 0);
    CHECK_EQ_INT(qemu_holds(q, path[1]), 1);
    sets = exec_ok(c, "query-fdsets", NULL);
    CHECK(json_object_is_type(sets, json_type_array) && json_object_array_length(sets) == 1);
    CHECK_EQ_INT(json_object_get_int(qemu_json_get(json_object_array_get_idx(sets, 0), "fdset-id")),
                 2);
    json_object_put(sets);
    for (i = 0; i < 2; i++)
        close(fd[i]);
}

TEST(add_fd)
{
    qemu_run(NULL, add_fd_body, &harness_cur_failed);
}

/* getfd names the descriptor sent with it; closefd closes it. */
static void getfd_body(qemu_instance *q, qmp_client *c)
{
    qmp_error err = QMP_ERROR_INIT;
    char target[64];
    struct stat st;
    int p[2], rc;

    REQUIRE(pipe2(p, O_CLOEXEC) == 0);
    REQUIRE(fstat(p[1], &st) == 0);
    snprintf(target, sizeof(target), "pipe:[%lu]", (unsigned long)st.st_ino);
    CHECK_EQ_INT(qemu_holds(q, target), 0);

    {
        json_object *args = NULL;

        REQUIRE(qmp_json_build(&args, NULL, "{'fdname': 'pipe0'}") == 0);
        rc =
            qmp_client_execute_full(c, "getfd", args, 0, QMP_TIMEOUT_DEFAULT, &p[1], 1, NULL, &err);
        json_object_put(args);
    }
    if (rc < 0)
        qemu_print_error("getfd", rc, &err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(qemu_holds(q, target), 1);

    rc = qmp_client_command(c, NULL, &err, "closefd", "{'fdname': 'pipe0'}");
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(qemu_holds(q, target), 0);
    rc = qmp_client_command(c, NULL, &err, "closefd", "{'fdname': 'pipe0'}");
    CHECK_EQ_INT(rc, -EREMOTEIO);
    CHECK_EQ_INT(err.qmp_class, QMP_CLASS_GENERIC_ERROR);
    CHECK_CONTAINS(err.message, "pipe0");
    close(p[0]);
    close(p[1]);
}

TEST(getfd_closefd)
{
    qemu_run(NULL, getfd_body, &harness_cur_failed);
}

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    RUN(usb_hotplug);
    RUN(usb_unplug_two);
    RUN(device_list_properties_uint64);
    RUN(add_fd);
    RUN(getfd_closefd);
    return harness_done();
}
