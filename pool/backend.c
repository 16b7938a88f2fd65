/*
 * backend.c - one backend per server address ("host:port": one host of a
 * database entry's host list, pgwharf picks the host of each connection):
 * the circuit breaker and the connect-rate token bucket shared by every
 * pool that connects there, and name resolution off the loop.
 *
 * Name resolution: libpq resolves `host` with a blocking getaddrinfo()
 * inside PQconnectPoll.  So when a host is a name (not a numeric address,
 * not a socket directory, and the entry gives no hostaddr), the backend
 * resolves it on a short-lived thread and wakes the loop with an ev_async;
 * connections then get libpq's `hostaddr` (host kept for TLS checks and
 * .pgpass).  The name expands to all its addresses as a libpq list for
 * that one host, so libpq still tries them in turn.  Results are reused for dns_max_ttl
 * seconds (PgBouncer's key); a stale result is used while a fresh one is on its way.  A
 * failed lookup is kept for dns_nxdomain_ttl (see dns_failed), but not one
 * that failed for want of a descriptor (dns_fds_short), nor one that could
 * not be made for want of memory or of a thread (dns_retry_later).
 *
 * Lifetimes: each lookup is a job of the set's offload (common/offload.h,
 * as proxy/peer.c's user lookups are): a detached thread, never joined (a
 * getaddrinfo waiting on an unreachable DNS server would hold up the exit
 * for as long as it waits), whose answer comes back through the offload's
 * ev_async.  A request belongs to its thread until its answer is back on
 * the loop.  A backend freed while its lookup runs cancels it: the answer
 * is dropped.  When the set is destroyed so is the offload: a thread
 * finishing later frees its own request.
 */
#include "pool/pool_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/offload.h"

#define DNS_MAX_ADDRS 8
#define DNS_LIST_MAX PGW_BACKEND_LIST_MAX

struct dns_req {
    struct pgw_offload_job job;
    struct pgw_backend *be;   /* the loop's side */
    char *hosts, *ports;      /* input lists (comma-separated) */
    char host[DNS_LIST_MAX], hostaddr[DNS_LIST_MAX], port[DNS_LIST_MAX];
    char error[512];
    bool fds_short;           /* it failed for want of a descriptor */
    bool mem_short;           /* it failed for want of memory (EAI_MEMORY) */
};

/* ---- name resolution (the thread side touches only its dns_req) ------- */

static bool host_is_literal(const char *h)
{
    unsigned char tmp[16];
    return !*h || h[0] == '/' || h[0] == '@' || inet_pton(AF_INET, h, tmp) == 1 ||
           inet_pton(AF_INET6, h, tmp) == 1;
}

static void list_add(char *list, const char *item)
{
    size_t l = strlen(list);
    snprintf(list + l, DNS_LIST_MAX - l, "%s%s", l ? "," : "", item);
}

/* The i-th port of a list, or the only one. */
static void port_at(const char *ports, int i, char *out, size_t len)
{
    char buf[DNS_LIST_MAX];
    snprintf(buf, sizeof(buf), "%s", ports);
    char *save = NULL, *last = "";
    int k = 0;
    for (char *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save), k++) {
        last = p;
        if (k == i)
            break;
    }
    snprintf(out, len, "%s", last);
}

static bool resolve_one(struct dns_req *r, const char *h, const char *port)
{
    if (host_is_literal(h)) {
        list_add(r->host, h);
        list_add(r->hostaddr, h[0] == '/' || h[0] == '@' ? "" : h);
        list_add(r->port, port);
        return true;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    errno = 0;
    int e = getaddrinfo(h, NULL, &hints, &res);
    if (e) {
        /* Out of descriptors, glibc cannot open /etc/hosts or a socket to
         * the DNS server, and says "Name or service not known" or "System
         * error", errno EMFILE: pgwharf's shortage, not the name's.  The
         * probe covers an errno overwritten on the way out. */
        r->fds_short = errno == EMFILE || errno == ENFILE || pgw_pool_fds_exhausted();
        /* glibc short of memory (EAI_MEMORY; or EAI_SYSTEM, errno
         * ENOMEM): pgwharf's shortage too, not the name's. */
        r->mem_short = e == EAI_MEMORY || (e == EAI_SYSTEM && errno == ENOMEM);
        snprintf(r->error, sizeof(r->error), "could not translate host name \"%s\" to address: %s",
                 h, gai_strerror(e));
        return false;
    }
    int n = 0;
    for (struct addrinfo *a = res; a && n < DNS_MAX_ADDRS; a = a->ai_next) {
        char num[NI_MAXHOST];
        if (getnameinfo(a->ai_addr, a->ai_addrlen, num, sizeof(num), NULL, 0, NI_NUMERICHOST))
            continue;
        list_add(r->host, h);
        list_add(r->hostaddr, num);
        list_add(r->port, port);
        n++;
    }
    freeaddrinfo(res);
    if (!n)
        snprintf(r->error, sizeof(r->error), "no address for host name \"%s\"", h);
    return n > 0;
}

static void dns_req_free(struct dns_req *r)
{
    free(r->hosts);
    free(r->ports);
    free(r);
}

/* The job's work, on its thread. */
static void dns_resolve(struct pgw_offload_job *job)
{
    struct dns_req *r = pgw_container_of(job, struct dns_req, job);
    char buf[DNS_LIST_MAX], port[64];
    snprintf(buf, sizeof(buf), "%s", r->hosts);
    char *save = NULL;
    int i = 0;
    for (char *h = strtok_r(buf, ",", &save); h; h = strtok_r(NULL, ",", &save), i++) {
        port_at(r->ports, i, port, sizeof(port));
        if (!resolve_one(r, h, port))
            break;
    }
}

/* The job's end without an answer wanted (backend freed, set destroyed). */
static void dns_drop(struct pgw_offload_job *job)
{
    dns_req_free(pgw_container_of(job, struct dns_req, job));
}

static void dns_done(struct pgw_offload_job *job);
static void wake_in(struct pgw_backend *be, double after);

/* A lookup that could not be made, or failed, for want of memory or of a
 * thread: pgwharf's shortage, not the name's (EAI_MEMORY was kept as the
 * name's failure for dns_nxdomain_ttl, as an NXDOMAIN, every login refused
 * 08001 long after; a thread that could not start was dropped without a
 * word, the next maintenance tick trying again).  Nothing is kept, the breaker
 * is left alone, and the name is looked up again after
 * PGW_POOL_FDS_PAUSE, the waiters waiting for it under query_wait_timeout
 * (earlier addresses, if any, stay in use meanwhile).  No callback runs
 * here: called inside pgw_backend_admit too. */
static void dns_retry_later(struct pgw_backend *be, const char *error)
{
    char q[600];
    pgw_warn("server_resolve_failed", "backend=%s reason=%s retry_in=%.1f", be->address,
             pgw_log_quote(q, sizeof(q), error), PGW_POOL_FDS_PAUSE);
    snprintf(be->dns_retry_error, sizeof(be->dns_retry_error), "%s", error);
    be->dns_retry_at = pgw_mono_now(be->set->loop) + PGW_POOL_FDS_PAUSE;
    wake_in(be, PGW_POOL_FDS_PAUSE);
}

static void dns_start(struct pgw_backend *be)
{
    struct dns_req *r = calloc(1, sizeof(*r));
    if (!r) {
        dns_retry_later(be, "out of memory for the lookup");
        return;
    }
    r->be = be;
    r->hosts = strdup(be->hosts);
    r->ports = strdup(be->port);
    if (!r->hosts || !r->ports) {
        dns_req_free(r);
        dns_retry_later(be, "out of memory for the lookup");
        return;
    }
    if (pgw_offload_submit(be->set->dns, &r->job, dns_resolve, dns_done, dns_drop) < 0) {
        /* (pthread_create's errno said: the threads limit, or memory) */
        char why[160];
        snprintf(why, sizeof(why), "could not start a thread for the lookup: %s",
                 strerror(r->job.error));
        dns_req_free(r);
        dns_retry_later(be, why);
        return;
    }
    be->dns = r;
    be->dns_started = pgw_mono_now(be->set->loop);
}

/* The cached failure as the error a login gets. */
static void dns_error_of(const struct pgw_backend *be, struct pgw_pool_error *err)
{
    err->code = PGW_ESERVER_CONNECT;
    snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", pgw_pool_guess_sqlstate(be->dns_error));
    snprintf(err->message, sizeof(err->message), "server connection failed: %.480s",
             be->dns_error);
}

const char *pgw_backend_dns_retrying(const struct pgw_backend *be)
{
    /* A lookup under way longer than a retry's pause is not the failure
     * retried (that one fails at once): it is merely slow, and the error
     * of the one before it says nothing of it. */
    if (be->dns && pgw_mono_now(be->set->loop) - be->dns_started > PGW_POOL_FDS_PAUSE)
        return NULL;
    return be->hosts && !be->hostaddr && be->dns_retry_error[0] ? be->dns_retry_error : NULL;
}

bool pgw_backend_dns_failed(const struct pgw_backend *be, struct pgw_pool_error *err)
{
    if (!be->hosts || be->hostaddr || be->dns ||
        pgw_mono_now(be->set->loop) >= be->dns_error_until)
        return false;
    dns_error_of(be, err);
    return true;
}

/* be can take no connection now (its breaker opened, or its name does not
 * resolve): each pool with it in its host list hears so
 * (pgw_pool_host_down may fail the pool's waiters; their callbacks run
 * inside it, so the next pool is taken first). */
static void pools_host_down(struct pgw_backend *be)
{
    struct pgw_list *n, *next;
    for (n = be->set->pools.next; n != &be->set->pools; n = next) {
        next = n->next;
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (pgw_pool_host_index(p, be) >= 0)
            pgw_pool_host_down(p);
    }
}

/* A failed lookup: one failed connection attempt for the breaker.  Kept
 * for dns_nxdomain_ttl (PgBouncer's key): no new lookup before then, and,
 * with no earlier addresses to use meanwhile, the clients waiting for a
 * server of this backend get the error now and new logins at once
 * (acquire_refuse), instead of a lookup each until the breaker opens. */
static void dns_failed(struct pgw_backend *be, const char *error)
{
    struct pgw_pool_set *set = be->set;
    ev_tstamp now = pgw_mono_now(set->loop);
    char q[300];
    pgw_warn("server_resolve_failed", "backend=%s reason=%s", be->address,
             pgw_log_quote(q, sizeof(q), error));
    bool probe = false;
    if (pgw_breaker_allow(&be->breaker, now, &probe))
        pgw_backend_failed(be, probe, error, NULL);
    if (set->cfg->dns_nxdomain_ttl <= 0)
        return;
    snprintf(be->dns_error, sizeof(be->dns_error), "%s", error);
    be->dns_error_until = now + set->cfg->dns_nxdomain_ttl;
    pools_host_down(be);
}

/* A lookup that failed because pgwharf had no descriptor left: as for a
 * socket() that fails so (server.c), no word on the name or the backend.
 * Nothing is kept (the name was kept unresolvable for dns_nxdomain_ttl,
 * every login refused 08001 long after the descriptors came back), the
 * breaker is left alone, and each pool on be has its waiters answered
 * 53300 and starts no server for PGW_POOL_FDS_PAUSE (so no lookup either:
 * earlier addresses, if any, stay in use until the next one). */
static void dns_fds_short(struct pgw_backend *be, const char *error)
{
    char q[600];
    pgw_warn("server_resolve_failed", "backend=%s reason=%s", be->address,
             pgw_log_quote(q, sizeof(q), error));
    pgw_warn("server_resolve_failed", "backend=%s reason=\"no file descriptor left (open-files "
             "limit): not the backend's failure\"", be->address);
    struct pgw_list *n, *next;
    for (n = be->set->pools.next; n != &be->set->pools; n = next) {
        next = n->next;
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (pgw_pool_host_index(p, be) < 0)
            continue;
        pgw_pool_fds_short(p);
        /* Replication waiters too, as server.c's socket() EMFILE does for
         * its one (pgw_pool_repl_login_failed): left queued, each kick
         * started another lookup. */
        struct pgw_pool_error err;
        pgw_pool_set_error(&err, PGW_ESERVER_CONNECT, "53300", "no server connection: "
                           "pgwharf has no file descriptor left (open-files limit)");
        pgw_pool_repl_fail_unserved(p, &err);
    }
}

static void dns_apply(struct pgw_backend *be, struct dns_req *r)
{
    if (r->job.error) {              /* no thread: the lookup never ran */
        char why[160];
        snprintf(why, sizeof(why), "could not start a thread for the lookup: %s",
                 strerror(r->job.error));
        dns_retry_later(be, why);
        return;
    }
    be->dns_retry_error[0] = '\0';   /* answered (set again below when short of memory) */
    if (r->error[0] && r->fds_short) {
        dns_fds_short(be, r->error);
        return;
    }
    if (r->error[0] && r->mem_short) {
        dns_retry_later(be, r->error);
        return;
    }
    if (r->error[0]) {
        dns_failed(be, r->error);
        return;
    }
    char *h = strdup(r->host), *a = strdup(r->hostaddr), *p = strdup(r->port);
    if (!h || !a || !p) {
        free(h), free(a), free(p);
        return;
    }
    free(be->res_host), free(be->hostaddr), free(be->res_port);
    be->res_host = h;
    be->hostaddr = a;
    be->res_port = p;
    be->hostaddr_until = pgw_mono_now(be->set->loop) + be->set->cfg->dns_max_ttl;
    be->dns_error_until = 0;
    pgw_debug("server_resolve", "backend=%s hostaddr=%s", be->address, a);
}

/* An answer, on the loop (never for a backend freed meanwhile: that
 * cancelled it). */
static void dns_done(struct pgw_offload_job *job)
{
    struct dns_req *r = pgw_container_of(job, struct dns_req, job);
    struct pgw_backend *be = r->be;
    be->dns = NULL;
    if (be->refs <= 0) {             /* unused since the lookup began */
        pgw_backend_free(be);
    } else {
        dns_apply(be, r);
        pgw_backend_kick_pools(be);
    }
    dns_req_free(r);
}

int pgw_backend_dns_init(struct pgw_pool_set *set)
{
    set->dns = pgw_offload_create(set->loop, 0);
    return set->dns ? 0 : PGW_ENOMEM;
}

void pgw_backend_dns_deinit(struct pgw_pool_set *set)
{
    pgw_offload_destroy(set->dns);
    set->dns = NULL;
}

/* ---- backends ---------------------------------------------------------- */

static void wake_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pgw_backend_kick_pools(pgw_container_of(t, struct pgw_backend, wake));
}

/* The backend of one host of an entry's list, made on first use.  Its
 * address is where libpq connects: the hostaddr when given (libpq then
 * uses host only for TLS and .pgpass: host=db,db hostaddr=A,B are two
 * servers), else the host. */
struct pgw_backend *pgw_backend_get(struct pgw_pool_set *set, const struct pgw_host_spec *spec)
{
    const char *host = spec->hostaddr[0] ? spec->hostaddr
                       : spec->host[0]   ? spec->host
                                         : "/var/run/postgresql";
    const char *port = spec->port[0] ? spec->port : "5432";
    char address[1024];
    snprintf(address, sizeof(address), "%s:%s", host, port);

    struct pgw_list *n;
    for (n = set->backends.next; n != &set->backends; n = n->next) {
        struct pgw_backend *be = pgw_container_of(n, struct pgw_backend, node);
        if (strcmp(be->address, address) == 0) {
            be->refs++;
            return be;
        }
    }
    struct pgw_backend *be = calloc(1, sizeof(*be));
    if (!be)
        return NULL;
    be->set = set;
    be->refs = 1;
    pgw_list_init(&be->node);    /* (unlinked: pgw_backend_free on a failed strdup) */
    ev_init(&be->wake, wake_cb);
    be->address = strdup(address);
    be->port = strdup(port);
    bool name = !host_is_literal(host);
    be->hosts = name ? strdup(host) : NULL;
    if (!be->address || !be->port || (name && !be->hosts)) {
        pgw_backend_free(be);
        return NULL;
    }
    pgw_breaker_init(&be->breaker, set->cfg->breaker_threshold, set->cfg->breaker_cooldown,
                     set->cfg->breaker_max_cooldown);
    pgw_bucket_init(&be->bucket, set->cfg->server_connect_rate, set->cfg->server_connect_burst,
                    pgw_mono_now(set->loop));
    pgw_list_append(&set->backends, &be->node);
    return be;
}

bool pgw_backend_resolves(const struct pgw_backend *be, const struct pgw_host_spec *spec)
{
    return be->hosts && !spec->hostaddr[0];
}

/* list rotated to start at its k-th item (of n) into out */
static void rotate_list(const char *list, int k, char *out)
{
    char buf[DNS_LIST_MAX];
    const char *item[DNS_MAX_ADDRS];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", list);
    char *save = NULL;
    for (char *p = strtok_r(buf, ",", &save); p && n < DNS_MAX_ADDRS;
         p = strtok_r(NULL, ",", &save))
        item[n++] = p;
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        list_add(out, item[(k + i) % n]);
}

bool pgw_backend_addr_lists(struct pgw_backend *be, bool turn, char *host, char *hostaddr,
                            char *port)
{
    if (!be->hostaddr || !be->res_host || !be->res_port)
        return false;
    int n = 1;
    for (const char *c = be->hostaddr; *c; c++)
        n += *c == ',';
    int k = turn && n > 1 ? (int)(be->addr_turn++ % (unsigned)n) : 0;
    rotate_list(be->res_host, k, host);
    rotate_list(be->hostaddr, k, hostaddr);
    rotate_list(be->res_port, k, port);
    return true;
}

void pgw_backend_configure(struct pgw_backend *be, const struct pgw_config *cfg)
{
    double now = pgw_mono_now(be->set->loop);
    pgw_breaker_configure(&be->breaker, cfg->breaker_threshold, cfg->breaker_cooldown,
                          cfg->breaker_max_cooldown, now);
    pgw_bucket_configure(&be->bucket, cfg->server_connect_rate, cfg->server_connect_burst, now);
}

void pgw_backend_forget_failures(struct pgw_backend *be)
{
    enum pgw_breaker_state was = be->breaker.state;
    pgw_breaker_success(&be->breaker);
    be->retry_after = 0;
    if (was != PGW_BREAKER_CLOSED)
        pgw_info("breaker_closed", "backend=%s reason=\"server_tls settings changed\"",
                 be->address);
}

void pgw_backend_ref(struct pgw_backend *be)
{
    be->refs++;
}

void pgw_backend_unref(struct pgw_backend *be)
{
    if (!be || --be->refs > 0)
        return;
    pgw_debug("backend_unused", "backend=%s lookup_running=%s", be->address,
              be->dns ? "yes" : "no");
    if (!be->dns)                    /* else dns_async_cb frees it */
        pgw_backend_free(be);
}

void pgw_backend_free(struct pgw_backend *be)
{
    if (be->dns)              /* its thread goes on; the answer is dropped */
        pgw_offload_cancel(&be->dns->job);
    if (be->set)
        ev_timer_stop(be->set->loop, &be->wake);
    if (pgw_list_linked(&be->node))
        pgw_list_del(&be->node);
    free(be->address);
    free(be->port);
    free(be->hosts);
    free(be->hostaddr);
    free(be->res_host);
    free(be->res_port);
    free(be);
}

static bool on_backend(const struct pgw_pool *p, const void *arg)
{
    return pgw_pool_host_index(p, arg) >= 0;
}

/* The pools on be (waiting first, their longest wait first: a
 * server_connect_rate token goes to the client that has waited longest,
 * not to the waiters or the min_pool_size warm-up of a pool earlier in
 * the list), then the others.  Pools are not freed while kicked. */
void pgw_backend_kick_pools(struct pgw_backend *be)
{
    uint64_t round = pgw_pool_kick_waiting(be->set, on_backend, be);
    for (struct pgw_list *n = be->set->pools.next; n != &be->set->pools; n = n->next) {
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        if (p->kick_mark != round && pgw_pool_host_index(p, be) >= 0)
            pgw_pool_kick(p);
    }
}

static void wake_in(struct pgw_backend *be, double after)
{
    struct ev_loop *loop = be->set->loop;
    if (ev_is_active(&be->wake) && ev_timer_remaining(loop, &be->wake) <= after)
        return;
    ev_timer_stop(loop, &be->wake);
    ev_timer_set(&be->wake, after, 0);
    ev_timer_start(loop, &be->wake);
}

/* Resolved addresses usable now?  0, PGW_EAGAIN (a lookup is on its way:
 * the async wakes the pools; or one could not be made: the wake timer
 * does, at dns_retry_at) or PGW_ESERVER_CONNECT (a failed lookup is
 * still cached, dns_nxdomain_ttl, and no earlier addresses: nothing wakes
 * the pools for this host before then, so a host list goes on to its next
 * host, with load_balance_hosts=disable too).  Starts a resolution when
 * due. */
static int dns_ready(struct pgw_backend *be, bool resolve, ev_tstamp now)
{
    if (!be->hosts || !resolve)
        return 0;
    if ((!be->hostaddr || now >= be->hostaddr_until) && !be->dns && now >= be->dns_error_until) {
        if (now >= be->dns_retry_at)
            dns_start(be);
        else
            wake_in(be, be->dns_retry_at - now);
    }
    if (be->hostaddr)
        return 0;
    return be->dns || now < be->dns_retry_at ? PGW_EAGAIN : PGW_ESERVER_CONNECT;
}

int pgw_backend_admit(struct pgw_backend *be, bool resolve, bool *probe)
{
    ev_tstamp now = pgw_mono_now(be->set->loop);
    *probe = false;
    if (pgw_breaker_blocked(&be->breaker, now))
        return PGW_EBREAKER_OPEN;
    if (now < be->retry_after) {
        wake_in(be, be->retry_after - now);
        return PGW_EAGAIN;
    }
    int rc = dns_ready(be, resolve, now);
    if (rc < 0)
        return rc;
    double wait = pgw_bucket_wait(&be->bucket, now);
    if (wait > 0) {
        wake_in(be, wait);
        return PGW_EAGAIN;
    }
    if (!pgw_breaker_allow(&be->breaker, now, probe))
        return PGW_EBREAKER_OPEN;
    pgw_bucket_take(&be->bucket, now);
    if (*probe)
        pgw_info("breaker_half_open", "backend=%s failures=%d", be->address,
                 be->breaker.failures);
    return 0;
}

void pgw_backend_unadmit(struct pgw_backend *be, bool probe)
{
    pgw_bucket_put_back(&be->bucket);
    if (probe)
        pgw_breaker_probe_abort(&be->breaker, pgw_mono_now(be->set->loop));
}

void pgw_backend_connected(struct pgw_backend *be, bool probe)
{
    enum pgw_breaker_state was = be->breaker.state;
    pgw_breaker_success(&be->breaker);
    be->retry_after = 0;
    if (was == PGW_BREAKER_CLOSED)
        return;
    pgw_info("breaker_closed", "backend=%s probe=%s", be->address, probe ? "yes" : "no");
    pgw_backend_kick_pools(be);
}

void pgw_backend_error(const struct pgw_backend *be, struct pgw_pool_error *err)
{
    err->code = PGW_EBREAKER_OPEN;
    snprintf(err->sqlstate, sizeof(err->sqlstate), "%s",
             be->last_sqlstate[0] ? be->last_sqlstate : "08006");
    if (be->last_error[0])
        snprintf(err->message, sizeof(err->message), "server connection failed: %.480s",
                 be->last_error);
    else
        snprintf(err->message, sizeof(err->message),
                 "server connection failed: circuit breaker open for %s", be->address);
}

void pgw_backend_failed(struct pgw_backend *be, bool probe, const char *msg,
                        const char *sqlstate)
{
    struct pgw_pool_set *set = be->set;
    ev_tstamp now = pgw_mono_now(set->loop);
    pgw_pool_trim_error(be->last_error, sizeof(be->last_error), msg);
    snprintf(be->last_sqlstate, sizeof(be->last_sqlstate), "%s",
             sqlstate ? sqlstate : pgw_pool_guess_sqlstate(msg));
    bool tripped = pgw_breaker_failure(&be->breaker, now, probe);
    if (be->breaker.threshold <= 0 && set->cfg->server_login_retry > 0)
        be->retry_after = now + set->cfg->server_login_retry;
    if (!tripped)
        return;
    char q[600];
    pgw_warn("breaker_open", "backend=%s failures=%d cooldown=%.1f sqlstate=%s reason=%s",
             be->address, be->breaker.failures, be->breaker.cooldown, be->last_sqlstate,
             pgw_log_quote(q, sizeof(q), be->last_error));
    pools_host_down(be);
}

/* Maintenance: once the cooldown has passed, probe even without demand,
 * through a pool that may open a server (within its limits; not a paused
 * one: PAUSE promises no server on its database until RESUME). */
void pgw_backend_tick(struct pgw_backend *be, ev_tstamp now)
{
    if (be->breaker.state == PGW_BREAKER_CLOSED || pgw_breaker_blocked(&be->breaker, now))
        return;
    struct pgw_list *n;
    for (n = be->set->pools.next; n != &be->set->pools; n = n->next) {
        struct pgw_pool *p = pgw_container_of(n, struct pgw_pool, node);
        int i = pgw_pool_host_index(p, be);
        /* (not through a pool waiting out server_login_retry: its refusal
         * would restart that wait, and tell nothing of the backend) */
        if (i < 0 || p->orphan || p->paused || p->expiring || p->user_superseded ||
            pgw_pool_login_blocked(p) ||
            !pgw_pool_has_room(p))
            continue;
        bool probe = false;
        if (pgw_backend_admit(be, pgw_backend_resolves(be, &p->hosts[i].spec), &probe) == 0 &&
            !pgw_server_start(p, i, probe, NULL) && probe)
            pgw_breaker_probe_abort(&be->breaker, now);
        return;
    }
}

struct pgw_backend *pgw_backend_next(struct pgw_pool_set *set, struct pgw_backend *prev)
{
    struct pgw_list *n = prev ? prev->node.next : set->backends.next;
    return n == &set->backends ? NULL : pgw_container_of(n, struct pgw_backend, node);
}

void pgw_backend_get_info(const struct pgw_backend *be, struct pgw_backend_info *info)
{
    info->address = be->address;
    info->state = be->breaker.state;
    info->failures = be->breaker.failures;
    info->trips = be->breaker.trips;
    info->next_probe = be->breaker.state == PGW_BREAKER_OPEN ? be->breaker.next_probe : 0;
    info->last_error = be->last_error;
    info->last_sqlstate = be->last_sqlstate;
    /* a name once looked up (not one given with its hostaddr) */
    info->hostname = be->hosts && (be->hostaddr || be->dns || be->dns_error[0] ||
                                   be->dns_retry_at > 0) ? be->hosts : NULL;
    info->addrs = be->hostaddr;
    info->addrs_until = be->hostaddr_until;
    /* dns_ready looks the name up once both have passed */
    info->lookup_due = be->hostaddr ? be->hostaddr_until : 0;
    if (be->dns_error_until > info->lookup_due)
        info->lookup_due = be->dns_error_until;
    if (!be->dns && be->dns_retry_at > info->lookup_due)   /* dns_retry_later */
        info->lookup_due = be->dns_retry_at;
    info->resolving = be->dns != NULL;
}

const char *pgw_breaker_state_name(enum pgw_breaker_state s)
{
    switch (s) {
    case PGW_BREAKER_CLOSED:    return "closed";
    case PGW_BREAKER_OPEN:      return "open";
    case PGW_BREAKER_HALF_OPEN: return "half-open";
    }
    return "?";
}
