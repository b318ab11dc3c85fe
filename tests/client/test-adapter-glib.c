/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The header-only glib adapter (<qmp/adapters/glib.h>) against the scripted
 * fake QEMU: the scenarios of async-scenarios.h driven by GLib (GMainContext).
 */
#define ASYNC_DRIVER_GLIB 1
#include "async-scenarios.h"

int main(int argc, char **argv)
{
    harness_init(argc, argv);
    async_drv = &async_driver_glib;
    async_run_scenarios();
    return harness_done();
}
