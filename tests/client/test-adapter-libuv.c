/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The header-only libuv adapter (<qmp/adapters/libuv.h>) against the scripted
 * fake QEMU: the scenarios of async-scenarios.h driven by libuv (uv_loop_t).
 */
#define ASYNC_DRIVER_LIBUV 1
#include "async-scenarios.h"

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    async_drv = &async_driver_libuv;
    async_run_scenarios();
    return harness_done();
}
