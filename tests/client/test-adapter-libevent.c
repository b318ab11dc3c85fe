/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The header-only libevent adapter (<qmp/adapters/libevent.h>) against the scripted
 * fake QEMU: the scenarios of async-scenarios.h driven by libevent (struct event_base).
 */
#define ASYNC_DRIVER_LIBEVENT 1
#include "async-scenarios.h"

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    async_drv = &async_driver_libevent;
    async_run_scenarios();
    return harness_done();
}
