/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Growable byte buffer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int qmp__buf_reserve(qmp__buf *b, size_t n)
{
    size_t used = b->len - b->start;

    if (b->cap - b->len >= n)
        return 0;
    /* Reclaim the consumed front before growing. */
    if (b->start > 0 && b->cap - used >= n && b->start >= used) {
        memcpy(b->data, b->data + b->start, used);
        b->start = 0;
        b->len = used;
        return 0;
    }
    if (b->start > 0) {
        memmove(b->data, b->data + b->start, used);
        b->start = 0;
        b->len = used;
        if (b->cap - b->len >= n)
            return 0;
    }
    if (n > SIZE_MAX / 2 - used)
        return -ENOMEM;
    size_t want = used + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int qmp__buf_append(qmp__buf *b, const void *data, size_t n)
{
    int r = qmp__buf_reserve(b, n);
    if (r < 0)
        return r;
    if (n > 0)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    return 0;
}

void qmp__buf_consume(qmp__buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->len)
        b->start = b->len = 0;
}

void qmp__buf_free(qmp__buf *b)
{
    free(b->data);
    b->data = NULL;
    b->start = b->len = b->cap = 0;
}
