/*
 * hosts.h - pure parts of using a database entry's host list: splitting
 * libpq's host, hostaddr and port lists into one target per host, and the
 * cursor that picks the host of each connection attempt
 * (load_balance_hosts).
 *
 * Internal to pool/ (exposed only so tests/unit can reach them).  No clock,
 * no I/O: the caller's try function says whether a host can take an
 * attempt now (its breaker, its connect rate, its name resolution).
 */
#ifndef PGW_POOL_HOSTS_H
#define PGW_POOL_HOSTS_H

#include <stddef.h>

#include "conf/conf.h"

/* One host of the list, as libpq would take it on its own. */
struct pgw_host_spec {
    char host[PGW_CONF_HOST_MAX + 1];           /* "" when the entry gives none */
    char hostaddr[PGW_CONF_HOSTADDR_MAX + 1];   /* "" when none */
    char port[16];            /* "" = libpq's default */
};

/* How many hosts the lists name (host's, else hostaddr's; 1 for none). */
int pgw_hosts_count(const char *host, const char *hostaddr);
/* Fill out[0..count-1] (count from pgw_hosts_count): the i-th host and
 * hostaddr, and the i-th port or the only one, as libpq pairs them.
 * Returns count, or -1 with err when the lists do not pair up (a hostaddr
 * count other than the host count; a port count neither 1 nor the host
 * count; an item too long).  NULL or "" lists are empty. */
int pgw_hosts_parse(const char *host, const char *hostaddr, const char *port,
                    struct pgw_host_spec *out, int count, char *err, size_t errlen);

/* Where the next connection attempt starts in a list of n hosts. */
struct pgw_host_cursor {
    int n;
    int next;
    enum pgw_load_balance mode;
};

/* try(i, arg): 0 when host i took the attempt, PGW_EAGAIN when it can take
 * one later (a wake-up is armed), another negative code when it cannot
 * now (breaker open, ...): the next host is tried. */
typedef int (*pgw_host_try_fn)(int i, void *arg);

/* The host of one connection attempt, from the cursor on in list order,
 * skipping hosts that cannot take it.  round-robin: the cursor moves past
 * the host taken, and a host that asks to wait is passed over; disable:
 * the cursor stays on the host taken, and a host that asks to wait is
 * waited for.  Returns the index taken, PGW_EAGAIN (wait), or
 * PGW_EBREAKER_OPEN when no host can take an attempt now. */
int pgw_hosts_choose(struct pgw_host_cursor *c, pgw_host_try_fn try_host, void *arg);
/* A connection attempt on host i failed (or the host did not match
 * target_session_attrs): with disable, the cursor leaves it. */
void pgw_hosts_failed(struct pgw_host_cursor *c, int i);

#endif
