/*
 * hosts.c - a database entry's host list: libpq's lists split per host,
 * and the load_balance_hosts cursor.  Pure: see hosts.h.
 */
#include "pool/hosts.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/names.h"

int pgw_hosts_count(const char *host, const char *hostaddr)
{
    int n = pgw_comma_count(host);
    if (!n)
        n = pgw_comma_count(hostaddr);
    return n ? n : 1;
}

int pgw_hosts_parse(const char *host, const char *hostaddr, const char *port,
                    struct pgw_host_spec *out, int count, char *err, size_t errlen)
{
    int na = pgw_comma_count(hostaddr), np = pgw_comma_count(port);
    if (na && na != count) {
        snprintf(err, errlen, "%d hostaddr value%s for %d hosts", na, na == 1 ? "" : "s", count);
        return -1;
    }
    if (np > 1 && np != count) {
        snprintf(err, errlen, "%d ports for %d hosts (expected one, or one per host)", np,
                 count);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        struct pgw_host_spec *s = &out[i];
        if (!pgw_comma_item(host, i, s->host, sizeof(s->host)) ||
            !pgw_comma_item(hostaddr, i, s->hostaddr, sizeof(s->hostaddr)) ||
            !pgw_comma_item(port, np > 1 ? i : 0, s->port, sizeof(s->port))) {
            snprintf(err, errlen, "host %d of the list is too long", i + 1);
            return -1;
        }
    }
    return count;
}

int pgw_hosts_choose(struct pgw_host_cursor *c, pgw_host_try_fn try_host, void *arg)
{
    bool wait = false;
    if (c->n <= 0)
        return PGW_EBREAKER_OPEN;
    if (c->next < 0 || c->next >= c->n)
        c->next = 0;
    for (int k = 0; k < c->n; k++) {
        int i = (c->next + k) % c->n;
        int rc = try_host(i, arg);
        if (rc == 0) {
            c->next = c->mode == PGW_LB_DISABLE ? i : (i + 1) % c->n;
            return i;
        }
        if (rc == PGW_EAGAIN) {
            if (c->mode == PGW_LB_DISABLE)
                return PGW_EAGAIN;
            wait = true;
        }
    }
    return wait ? PGW_EAGAIN : PGW_EBREAKER_OPEN;
}

void pgw_hosts_failed(struct pgw_host_cursor *c, int i)
{
    if (c->mode == PGW_LB_DISABLE && c->n > 0 && c->next == i)
        c->next = (i + 1) % c->n;
}
