/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libqmp: a client library for the QEMU Machine Protocol.
 *
 * Umbrella header.  Components:
 *   common.h   export macro, qmp_error, logging, timeouts
 *   json.h     strict JSON decoding, JSON templates, matching
 *   message.h  greeting, events, replies
 *   session.h  sans-I/O protocol core (qmp_session)
 *   client.h   client over a socket, blocking and non-blocking (qmp_client,
 *              qmp_listener)
 *   loop.h     a small event loop for non-blocking clients (qmp_loop)
 */
#ifndef QMP_QMP_H
#define QMP_QMP_H

#include "common.h"
#include "json.h"
#include "message.h"
#include "session.h"
#include "client.h"
#include "loop.h"

#endif /* QMP_QMP_H */
