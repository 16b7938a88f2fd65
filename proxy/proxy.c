/*
 * proxy.c - the proxy object: owns the config, auth file, pool set,
 * listeners and sessions of one loop; the buffer free list; deferred
 * freeing of closed sessions; reload and shutdown.
 */
#include "proxy/proxy_int.h"
#include "proxy/admin_int.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sdnotify.h"
#include "proxy/authquery.h"
#include "proxy/prepared.h"
#include "proxy/scram.h"
#include "proxy/hba.h"
#include "proxy/tls.h"

/* Free buffers kept for reuse: at most MAX_FREE_BUFS, and once a second
 * those above MIN_FREE_BUFS that the last second did not need go back to
 * the system (the fewest free buffers seen in the second were not needed).
 * A fixed small cap made 1000 busy clients map and unmap a buffer every
 * ~45 transactions, each with its page faults. */
#define MIN_FREE_BUFS 64
#define MAX_FREE_BUFS 1024
#define BUF_TRIM_PERIOD 1.0
#define IOBUF_MAP (sizeof(struct pgw_iobuf) + PGW_IOBUF_SIZE)

/* Under AddressSanitizer a free buffer's bytes are poisoned: a read of a
 * buffer after pgw_iobuf_put (which keeps most of them mapped) is caught. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PGW_ASAN_BUFS 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(PGW_ASAN_BUFS)
#include <sanitizer/asan_interface.h>
#define buf_poison(b) ASAN_POISON_MEMORY_REGION((b)->data, PGW_IOBUF_SIZE)
#define buf_unpoison(b) ASAN_UNPOISON_MEMORY_REGION((b)->data, PGW_IOBUF_SIZE)
#else
#define buf_poison(b) ((void)(b))
#define buf_unpoison(b) ((void)(b))
#endif

static void buf_trim_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct pgw_proxy *px = pgw_container_of(w, struct pgw_proxy, buf_trim);
    int unused = px->free_low < px->nfree_bufs ? px->free_low : px->nfree_bufs;
    for (int n = unused - MIN_FREE_BUFS; n > 0; n--) {
        struct pgw_list *l = pgw_list_last(&px->free_bufs);   /* least recently put */
        pgw_list_del(l);
        px->nfree_bufs--;
        buf_unpoison(pgw_container_of(l, struct pgw_iobuf, node));
        munmap(pgw_container_of(l, struct pgw_iobuf, node), IOBUF_MAP);
    }
    px->free_low = px->nfree_bufs;
    if (px->nfree_bufs <= MIN_FREE_BUFS) {
        ev_ref(loop);
        ev_timer_stop(loop, w);
    }
}

struct pgw_iobuf *pgw_iobuf_get(struct pgw_proxy *px)
{
    struct pgw_list *n = pgw_list_first(&px->free_bufs);
    struct pgw_iobuf *b;
    if (n) {
        pgw_list_del(n);
        if (--px->nfree_bufs < px->free_low)
            px->free_low = px->nfree_bufs;
        b = pgw_container_of(n, struct pgw_iobuf, node);
        buf_unpoison(b);
    } else {
        /* Buffers are mapped, not malloc'ed: pages a small client never
         * touches cost no memory, and a freed buffer goes back to the
         * system instead of fragmenting the heap (10 000 logins at once). */
        void *m = mmap(NULL, IOBUF_MAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        b = m;
        pgw_list_init(&b->node);
        b->cap = PGW_IOBUF_SIZE;
    }
    b->sent = b->parsed = b->len = b->hold = 0;
    b->held = false;
    return b;
}

/* pgw_iobuf_reserve with a limit of max (PGW_IOBUF_MAX, or
 * PGW_IOBUF_EDIT_MAX for bytes pgwharf adds). */
static bool reserve_upto(struct pgw_proxy *px, struct pgw_iobuf **bp, uint32_t need, uint32_t max)
{
    struct pgw_iobuf *b = *bp;
    if (need <= b->cap)
        return true;
    if (need > max)
        return false;
    /* A grown buffer that must grow again doubles: growing by what each
     * reply needs would copy it whole per reply. */
    if (b->cap > PGW_IOBUF_SIZE && need < (uint64_t)b->cap * 2)
        need = (uint64_t)b->cap * 2 < max ? b->cap * 2 : max;
    size_t page = 65536;
    size_t cap = ((size_t)need + sizeof(*b) + page - 1) / page * page - sizeof(*b);
    void *m = mmap(NULL, sizeof(*b) + cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED)
        return false;
    struct pgw_iobuf *nb = m;
    pgw_list_init(&nb->node);
    nb->cap = (uint32_t)cap;
    nb->sent = 0;
    nb->parsed = b->parsed - b->sent;
    nb->len = b->len - b->sent;
    nb->held = b->held;
    nb->hold = b->held ? b->hold - b->sent : 0;
    memcpy(nb->data, b->data + b->sent, nb->len);
    pgw_iobuf_put(px, b);
    *bp = nb;
    return true;
}

bool pgw_iobuf_reserve(struct pgw_proxy *px, struct pgw_iobuf **bp, uint32_t need)
{
    return reserve_upto(px, bp, need, PGW_IOBUF_MAX);
}

bool pgw_iobuf_reserve_edit(struct pgw_proxy *px, struct pgw_iobuf **bp, uint32_t need)
{
    return reserve_upto(px, bp, need, PGW_IOBUF_EDIT_MAX);
}

void pgw_iobuf_put(struct pgw_proxy *px, struct pgw_iobuf *b)
{
    if (!b)
        return;
    if (b->cap != PGW_IOBUF_SIZE) {          /* grown for one large message */
        munmap(b, sizeof(*b) + b->cap);
        return;
    }
    if (px->nfree_bufs >= MAX_FREE_BUFS) {
        munmap(b, IOBUF_MAP);
        return;
    }
    buf_poison(b);
    pgw_list_prepend(&px->free_bufs, &b->node);
    if (++px->nfree_bufs > MIN_FREE_BUFS && !ev_is_active(&px->buf_trim)) {
        px->free_low = px->nfree_bufs;
        ev_timer_start(px->loop, &px->buf_trim);
        ev_unref(px->loop);                     /* does not keep the loop alive */
    }
}

void pgw_iobuf_compact(struct pgw_iobuf *b)
{
    if (b->sent == 0)
        return;
    memmove(b->data, b->data + b->sent, b->len - b->sent);
    b->parsed -= b->sent;
    b->len -= b->sent;
    if (b->held)
        b->hold -= b->sent;
    b->sent = 0;
}

bool pgw_iobuf_append(struct pgw_iobuf *b, const void *p, size_t n)
{
    if (b->len + n > b->cap)
        pgw_iobuf_compact(b);
    if (b->len + n > b->cap)
        return false;
    memcpy(b->data + b->len, p, n);
    b->len += (uint32_t)n;
    return true;
}

bool pgw_iobuf_insert(struct pgw_iobuf *b, uint32_t at, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        uint32_t shift = b->sent;
        pgw_iobuf_compact(b);
        at -= shift;
    }
    if (b->len + n > b->cap)
        return false;
    memmove(b->data + at + n, b->data + at, b->len - at);
    memcpy(b->data + at, p, n);
    b->len += (uint32_t)n;
    if (b->parsed >= at)
        b->parsed += (uint32_t)n;
    if (b->held && b->hold > at)
        b->hold += (uint32_t)n;
    return true;
}

void pgw_iobuf_cut(struct pgw_iobuf *b, uint32_t at, uint32_t n)
{
    memmove(b->data + at, b->data + at + n, b->len - at - n);
    b->len -= n;
    if (b->parsed > at)
        b->parsed = b->parsed >= at + n ? b->parsed - n : at;
    if (b->held && b->hold > at)
        b->hold = b->hold >= at + n ? b->hold - n : at;
}

int pgw_proxy_random(struct pgw_proxy *px, void *out, size_t n)
{
    /* Drawn from OpenSSL's CSPRNG a block at a time: one call (and its
     * fork-check getpid) per 16 logins rather than three per login. */
    uint8_t *o = out;
    while (n > 0) {
        if (px->rnd_pos == sizeof(px->rnd)) {
            if (RAND_bytes(px->rnd, sizeof(px->rnd)) != 1)
                return PGW_EIO;
            px->rnd_pos = 0;
        }
        size_t k = sizeof(px->rnd) - px->rnd_pos;
        if (k > n)
            k = n;
        memcpy(o, px->rnd + px->rnd_pos, k);
        memset(px->rnd + px->rnd_pos, 0, k);     /* used bytes are not kept */
        px->rnd_pos += k;
        o += k;
        n -= k;
    }
    return 0;
}

/* The seed of the in-memory hashes whose input a client chooses (a
 * statement's name, its text and the settings it is read in, a
 * notification it sends): random, drawn at first use, so that nobody can
 * make two of them collide at will; a fixed one if no random bytes. */
uint64_t pgw_proxy_hash_seed(struct pgw_proxy *px)
{
    while (px->hash_seed == 0 && pgw_proxy_random(px, &px->hash_seed, sizeof(px->hash_seed)) == 0)
        ;
    if (px->hash_seed == 0)
        px->hash_seed = 0x9e3779b97f4a7c15ULL;
    return px->hash_seed;
}

static void reaper_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    struct pgw_proxy *px = pgw_container_of(w, struct pgw_proxy, reaper);
    struct pgw_list *pos, *tmp;
    pgw_list_foreach_safe(pos, tmp, &px->closing) {
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, node);
        pgw_list_del(&s->node);
        pgw_admin_session_gone(s);              /* admin: fold its stats */
        pgw_session_free(s);
    }
    ev_check_stop(loop, w);
    ev_idle_stop(loop, &px->reaper_nudge);
    pgw_proxy_maybe_finish(px);
}

static void reaper_nudge_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);     /* its work is the poll it kept short */
}

void pgw_proxy_reap_later(struct pgw_proxy *px)
{
    if (!ev_is_active(&px->reaper))
        ev_check_start(px->loop, &px->reaper);
    if (!ev_is_active(&px->reaper_nudge))
        ev_idle_start(px->loop, &px->reaper_nudge);
}

/* A TLS error (it starts with the key whose file failed: "server_tls_ca_file
 * x.pem: ...") becomes "file:line: side TLS: ..." with the line of that key. */
static void tls_locate(const struct pgw_config *cfg, const char *side, char *err, size_t errlen)
{
    char key[64];
    size_t n = strcspn(err, " :");
    snprintf(key, sizeof(key), "%.*s", (int)(n < sizeof(key) ? n : 0), err);
    pgw_conf_locate(cfg, key, err, errlen, "%s TLS", side);
}

/* The files auth_type hba reads, errors naming the keys' lines. */
static int load_hba(const struct pgw_config *cfg, struct pgw_hba **out,
                    struct pgw_conf_diag *diag)
{
    int rc = pgw_hba_load(cfg->auth_hba_file, cfg->auth_ident_file, out, diag);
    pgw_conf_diag_locate(diag, 0, cfg, "auth_hba_file", cfg->auth_hba_file);
    if (*cfg->auth_ident_file)
        pgw_conf_diag_locate(diag, 0, cfg, "auth_ident_file", cfg->auth_ident_file);
    return rc;
}

/* The first of diag's errors into first (when given): a start stopped by
 * the file says why on stderr too, not only in the log (-q, -d). */
static void first_error(const struct pgw_conf_diag *diag, char *first, size_t firstlen)
{
    if (first && diag->nerrors > 0)
        snprintf(first, firstlen, "%s%s", diag->errors[0],
                 diag->nerrors > 1 ? " (more in the log)" : "");
}

static int load_hba_logged(const struct pgw_config *cfg, struct pgw_hba **out, char *first,
                           size_t firstlen)
{
    struct pgw_conf_diag diag = { 0 };
    char q[1100];
    int rc = load_hba(cfg, out, &diag);
    first_error(&diag, first, firstlen);
    for (int i = 0; i < diag.nwarnings; i++)
        pgw_warn("auth_hba_file", "reason=%s", pgw_log_quote(q, sizeof(q), diag.warnings[i]));
    for (int i = 0; i < diag.nerrors; i++)
        pgw_error("auth_hba_file", "reason=%s", pgw_log_quote(q, sizeof(q), diag.errors[i]));
    if (rc == PGW_ENOMEM)
        pgw_error("auth_hba_file", "file=%s reason=\"out of memory\"", cfg->auth_hba_file);
    pgw_conf_diag_free(&diag);
    return rc;
}

static int load_auth(struct pgw_config *cfg, struct pgw_auth_file **out, char *first,
                     size_t firstlen)
{
    *out = NULL;
    if (!cfg->auth_file || !*cfg->auth_file)
        return 0;
    struct pgw_conf_diag diag = { 0 };
    char q[1100];
    int rc = pgw_authfile_load(cfg->auth_file, out, &diag);
    pgw_conf_diag_locate(&diag, 0, cfg, "auth_file", cfg->auth_file);
    first_error(&diag, first, firstlen);
    for (int i = 0; i < diag.nwarnings; i++)
        pgw_warn("auth_file", "reason=%s", pgw_log_quote(q, sizeof(q), diag.warnings[i]));
    for (int i = 0; i < diag.nerrors; i++)
        pgw_error("auth_file", "reason=%s", pgw_log_quote(q, sizeof(q), diag.errors[i]));
    pgw_conf_diag_free(&diag);
    return rc;
}

/* scram_salt_key_file into key (*have false without one).  -1: errbuf says
 * why, at the key's file:line. */
static int load_salt_key(const struct pgw_config *cfg, uint8_t key[PGW_SCRAM_KEY_LEN], bool *have,
                         char *errbuf, size_t errlen)
{
    char err[300], where[1100];
    *have = false;
    if (!*cfg->scram_salt_key_file)
        return 0;
    if (pgw_scram_salt_key_load(cfg->scram_salt_key_file, key, err, sizeof(err)) < 0) {
        snprintf(errbuf, errlen, "%s: scram_salt_key_file \"%s\": %s",
                 pgw_conf_where(cfg, "scram_salt_key_file", where, sizeof(where)),
                 cfg->scram_salt_key_file, err);
        return -1;
    }
    *have = true;
    return 0;
}

static void stats_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_proxy *px = pgw_container_of(w, struct pgw_proxy, stats_timer);
    if (!px->cfg->log_stats)
        return;
    struct pgw_dbstat t;
    pgw_stats_sessions_total(px, &t);
    pgw_info("stats", "clients=%d servers=%d xacts=%llu queries=%llu bytes_in=%llu bytes_out=%llu",
             px->nclients + px->nrejecting, pgw_pool_set_server_count(px->pools),
             (unsigned long long)t.xacts,
             (unsigned long long)t.queries, (unsigned long long)t.recv,
             (unsigned long long)t.sent);
}

/* Open files: raise the soft RLIMIT_NOFILE to the hard limit (as `ulimit
 * -n` could; nothing here uses select()), then cap clients below it so that
 * a flood of clients does not take the descriptors the pools need: past
 * the cap a client gets 53300 as past max_client_conn.  Process-wide:
 * loops sharing the process must split the cap. */
static void fd_budget(struct pgw_proxy *px, bool starting)
{
    const struct pgw_config *cfg = px->cfg;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        px->client_cap = cfg->max_client_conn;
        px->overflow_cap = PGW_OVERFLOW_SESSIONS;
        px->cancel_cap = INT_MAX;
        return;
    }
    bool raised = false;
    if (rl.rlim_cur != rl.rlim_max) {
        struct rlimit up = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            rl.rlim_cur = rl.rlim_max;
            raised = true;
        }
    }
    long long soft = rl.rlim_cur == RLIM_INFINITY ? LLONG_MAX : (long long)rl.rlim_cur;
    int old_cap = px->client_cap;
    px->client_cap = pgw_conf_client_cap(cfg, soft);
    long long spare = pgw_conf_fd_reserve(soft) - PGW_FD_FIXED;
    px->overflow_cap = spare < PGW_OVERFLOW_SESSIONS ? (int)spare : PGW_OVERFLOW_SESSIONS;
    /* Cancel links in flight (cancel.c): the ones kept for them, and what
     * the servers, the clients and the rest of the reserve leave over. */
    long long servers = pgw_conf_server_fds(cfg);
    if (servers > soft / 2)
        servers = soft / 2;
    long long left = soft == LLONG_MAX
                         ? LLONG_MAX / 2
                         : soft - servers - pgw_conf_fd_reserve(soft) - px->client_cap;
    long long links = PGW_FD_CANCEL_LINKS + (left > 0 ? left : 0);
    px->cancel_cap = links < INT_MAX ? (int)links : INT_MAX;
    if (px->client_cap < cfg->max_client_conn)
        pgw_warn("fd_limit", "nofile=%lld%s max_client_conn=%d server_fds=%d client_cap=%d "
                 "reason=\"the open-files limit leaves room for client_cap clients only; "
                 "raise the hard limit (ulimit -Hn, LimitNOFILE=)\"", soft,
                 raised ? " raised=yes" : "", cfg->max_client_conn, pgw_conf_server_fds(cfg),
                 px->client_cap);
    else if (starting || raised || old_cap != px->client_cap)
        pgw_info("fd_limit", "nofile=%lld%s max_client_conn=%d server_fds=%d",
                 soft == LLONG_MAX ? -1 : soft, raised ? " raised=yes" : "",
                 cfg->max_client_conn, pgw_conf_server_fds(cfg));
}

/* The pool gives up on a query of its own (connect_query, a reset, a
 * check) still running. */
static void cancel_pool_query(const struct pgw_server *srv, const char *what, void *arg)
{
    pgw_cancel_server(arg, srv, what);
}

struct pgw_proxy *pgw_proxy_create(struct ev_loop *loop, struct pgw_config *cfg,
                                   char *errbuf, size_t errlen)
{
    struct pgw_proxy *px = calloc(1, sizeof(*px));
    if (!px) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    px->loop = loop;
    px->cfg = cfg;
    px->rnd_pos = sizeof(px->rnd);
    pgw_list_init(&px->sessions);
    pgw_list_init(&px->over_limit);
    pgw_list_init(&px->lingering);
    pgw_notify_init(px);
    pgw_list_init(&px->closing);
    pgw_list_init(&px->free_bufs);
    /* PGW_IOBUF_TRIM_PERIOD overrides the 1 s: a test looks at the free
     * list after a burst without racing the trim. */
    double trim = pgw_env_seconds("PGW_IOBUF_TRIM_PERIOD", BUF_TRIM_PERIOD, 0.01, 86400, "iobuf");
    ev_timer_init(&px->buf_trim, buf_trim_cb, trim, trim);
    for (int i = 0; i < PGW_CANCEL_BUCKETS; i++)
        pgw_list_init(&px->cancel_hash[i]);
    ev_check_init(&px->reaper, reaper_cb);
    ev_idle_init(&px->reaper_nudge, reaper_nudge_cb);
    fd_budget(px, true);
    if (pgw_tracked_params_init(px, errbuf, errlen) < 0)   /* track_extra_parameters */
        goto fail;
    errbuf[0] = '\0';
    if (load_auth(cfg, &px->auth, errbuf, errlen) < 0) {
        char where[1100];
        if (!errbuf[0])
            snprintf(errbuf, errlen, "%s: auth_file \"%s\": cannot load it",
                     pgw_conf_where(cfg, "auth_file", where, sizeof(where)), cfg->auth_file);
        goto fail;
    }
    if (cfg->auth_type == PGW_AUTH_HBA &&
        load_hba_logged(cfg, &px->hba, errbuf, errlen) < 0) {
        char where[1100];
        if (!errbuf[0])
            snprintf(errbuf, errlen, "%s: auth_hba_file \"%s\"%s%s%s: cannot load it",
                     pgw_conf_where(cfg, "auth_hba_file", where, sizeof(where)),
                     cfg->auth_hba_file, *cfg->auth_ident_file ? " or auth_ident_file \"" : "",
                     cfg->auth_ident_file, *cfg->auth_ident_file ? "\"" : "");
        goto fail;
    }
    if (pgw_tls_ctx_build(cfg, &px->tls_ctx, errbuf, errlen) < 0) { /* TLS: client_tls_* */
        tls_locate(cfg, "client", errbuf, errlen);
        goto fail;
    }
    if (pgw_tls_server_check(cfg, errbuf, errlen) < 0) {            /* and server_tls_* */
        tls_locate(cfg, "server", errbuf, errlen);
        goto fail;
    }
    px->root = pgw_ctx_background(loop);
    px->pools = px->root ? pgw_pool_set_create(loop, px->root, cfg) : NULL;
    if (!px->pools) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    pgw_pool_set_cancel_hook(px->pools, cancel_pool_query, px);
    if (pgw_ps_init(px) < 0) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    if (pgw_authquery_init(px) < 0) {            /* auth_query cache */
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    if (pgw_batch_init(px) < 0) {                  /* io_batch */
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    px->scram_cache = pgw_scram_cache_new();     /* made SCRAM verifiers */
    if (!px->scram_cache) {
        snprintf(errbuf, errlen, "out of memory, or no random bytes from OpenSSL");
        goto fail;
    }
    uint8_t salt_key[PGW_SCRAM_KEY_LEN];
    bool keyed;
    if (load_salt_key(cfg, salt_key, &keyed, errbuf, errlen) < 0)
        goto fail;
    if (keyed) {
        pgw_scram_cache_salt_key(px->scram_cache, salt_key);
        OPENSSL_cleanse(salt_key, sizeof(salt_key));
    } else if (cfg->so_reuseport) {
        pgw_warn("config", "key=scram_salt_key_file reason=\"so_reuseport without it: each process "
                 "shows an unknown user a salt of its own, which tells real users from unknown "
                 "ones\"");
    }
    if (pgw_cancel_init(px) < 0) {
        snprintf(errbuf, errlen, "out of memory for cancel forwarding");
        goto fail;
    }
    if (pgw_admin_init(px, errbuf, errlen) < 0)   /* admin: stats, metrics endpoint */
        goto fail;
    /* Last: once a client's connect succeeds, the metrics endpoint is
     * there too (a scrape right after the port opens found none). */
    if (pgw_listener_open_all(px, errbuf, errlen) < 0)
        goto fail;
    if (cfg->stats_period > 0) {
        ev_timer_init(&px->stats_timer, stats_cb, cfg->stats_period, cfg->stats_period);
        ev_timer_start(loop, &px->stats_timer);
        ev_unref(loop);
    }
    return px;
fail:
    px->cfg = NULL; /* the caller keeps cfg on failure */
    pgw_proxy_destroy(px);
    return NULL;
}

/* What a reload builds before it commits: everything that may fail. */
struct reload_prep {
    struct pgw_auth_file *auth;
    struct pgw_hba *hba;
    struct ssl_ctx_st *tls;
    int log_fd;
    bool keyed;                                 /* scram_salt_key_file */
    uint8_t salt_key[PGW_SCRAM_KEY_LEN];
};

static void reload_discard(struct reload_prep *r)
{
    pgw_authfile_free(r->auth);
    pgw_hba_free(r->hba);
    pgw_tls_ctx_free(r->tls);
    if (r->log_fd > STDERR_FILENO)
        close(r->log_fd);
    OPENSSL_cleanse(r->salt_key, sizeof(r->salt_key));
}

/* arg: the proxy.  -u wins over the file's user at every start: no change
 * a restart would apply, nothing to say. */
static void fixed_key_changed(const char *key, const char *was, const char *now, void *arg)
{
    const struct pgw_proxy *px = arg;
    char qw[300], qn[300];
    if (px->user_from_command_line && strcmp(key, "user") == 0)
        return;
    pgw_warn("config", "key=%s running=%s file=%s reason=\"fixed at start: a restart applies it\"",
             key, pgw_log_quote(qw, sizeof(qw), was), pgw_log_quote(qn, sizeof(qn), now));
}

/* Load the files cfg names and move the metrics listener; on failure log
 * why and leave everything as it was.  The metrics listener goes last: it
 * is the one step that changes something when it succeeds. */
static int reload_prepare(struct pgw_proxy *px, struct pgw_config *cfg, struct reload_prep *r)
{
    char err[1024], q[1200], ebuf[128];
    memset(r, 0, sizeof(*r));
    r->log_fd = -1;
    /* -u wins over the file at every start, so the file's user is no
     * change a restart would apply */
    if ((px->user_from_command_line &&
         pgw_conf_set(cfg, "user", px->cfg->user, NULL, 0) < 0) ||
        pgw_conf_keep_fixed(cfg, px->cfg, fixed_key_changed, px) < 0) {
        pgw_error("reload", "reason=\"out of memory, keeping the old config\"");
        return PGW_ENOMEM;
    }
    if (load_auth(cfg, &r->auth, NULL, 0) < 0) {
        pgw_error("reload", "reason=\"cannot load auth_file, keeping the old config\"");
        return PGW_ECONFIG;
    }
    if (cfg->auth_type == PGW_AUTH_HBA &&
        load_hba_logged(cfg, &r->hba, NULL, 0) < 0) {
        pgw_error("reload", "reason=\"cannot load auth_hba_file or auth_ident_file, keeping the "
                  "old config\"");
        reload_discard(r);
        return PGW_ECONFIG;
    }
    if (load_salt_key(cfg, r->salt_key, &r->keyed, err, sizeof(err)) < 0) {
        pgw_error("reload", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        pgw_error("reload", "reason=\"cannot load scram_salt_key_file, keeping the old config\"");
        reload_discard(r);
        return PGW_ECONFIG;
    }
    /* TLS: sessions keep the context they started with */
    if (pgw_tls_ctx_build(cfg, &r->tls, err, sizeof(err)) < 0) {
        tls_locate(cfg, "client", err, sizeof(err));
        pgw_error("reload", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        pgw_error("reload", "reason=\"cannot set up client TLS, keeping the old config\"");
        reload_discard(r);
        return PGW_ECONFIG;
    }
    if (pgw_tls_server_check(cfg, err, sizeof(err)) < 0) {
        tls_locate(cfg, "server", err, sizeof(err));
        pgw_error("reload", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        pgw_error("reload", "reason=\"cannot set up server TLS, keeping the old config\"");
        reload_discard(r);
        return PGW_ECONFIG;
    }
    if ((r->log_fd = pgw_log_file_open(cfg->logfile)) < 0) {
        const char *why = strerror_r(errno, ebuf, sizeof(ebuf));
        char where[1024];
        snprintf(err, sizeof(err), "%s: cannot open logfile %s: %s, keeping the old config",
                 pgw_conf_where(cfg, "logfile", where, sizeof(where)), cfg->logfile, why);
        pgw_error("reload", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        reload_discard(r);
        return PGW_ECONFIG;
    }
    if (pgw_admin_prepare_reload(px, cfg, err, sizeof(err)) < 0) {
        pgw_error("reload", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        pgw_error("reload", "reason=\"cannot move the metrics endpoint, keeping the old config\"");
        reload_discard(r);
        return PGW_ECONFIG;
    }
    return 0;
}

int pgw_proxy_reload(struct pgw_proxy *px, struct pgw_config *cfg)
{
    struct reload_prep r;
    int rc = reload_prepare(px, cfg, &r);
    if (rc < 0) {
        pgw_conf_free(cfg);
        return rc;
    }
    pgw_tls_ctx_free(px->tls_ctx);
    px->tls_ctx = r.tls;
    pgw_hba_free(px->hba);
    px->hba = r.hba;
    pgw_authfile_free(px->auth);
    px->auth = r.auth;
    pgw_pool_set_reconfigure(px->pools, cfg);
    /* A pool's server password is worked out at its clients' logins: a
     * reload that changes it (auth_file, the entry's password= or user=)
     * applies now, or the pool's next servers would log in with the old
     * one until a new client came (as PgBouncer, which reads it at each
     * connect). */
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        const struct pgw_conf_db *db = pgw_conf_find_db(cfg, pgw_pool_dbname(p));
        if (db)
            pgw_pool_set_password(p, pgw_auth_server_password(px, db, pgw_pool_user(p)), false);
    }
    /* Sessions keep pointers into the old config's db entries until they
     * re-resolve; keep a few old configs alive rather than chase them. */
    if (px->nretired == (int)(sizeof(px->retired_cfgs) / sizeof(px->retired_cfgs[0]))) {
        pgw_conf_free(px->retired_cfgs[0]);
        memmove(px->retired_cfgs, px->retired_cfgs + 1,
                sizeof(px->retired_cfgs[0]) * (size_t)(px->nretired - 1));
        px->nretired--;
    }
    px->retired_cfgs[px->nretired++] = px->cfg;
    px->cfg = cfg;
    pgw_batch_configure(px);
    pgw_listener_reconfigure(px);               /* tcp_keepalive */
    pgw_authquery_reload(px);                   /* auth_query: forget cached answers */
    pgw_scram_cache_clear(px->scram_cache);     /* auth_file, scram_iterations */
    pgw_scram_cache_salt_key(px->scram_cache, r.keyed ? r.salt_key : NULL);
    OPENSSL_cleanse(r.salt_key, sizeof(r.salt_key));
    /* Sessions re-resolve their db entry so the retired configs can go. */
    struct pgw_list *pos;
    for (pos = px->sessions.next; pos != &px->sessions; pos = pos->next) {
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, node);
        if (s->database && !s->is_admin)
            s->db = pgw_conf_find_db(cfg, s->database);
        if (s->user && s->state != PGW_SS_STARTUP && s->state != PGW_SS_AUTH) {
            pgw_session_apply_timeouts(s);
            pgw_session_arm_timer(s);
        } else if (s->state == PGW_SS_STARTUP || s->state == PGW_SS_AUTH ||
                   s->state == PGW_SS_CANCEL) {
            /* A login under way: client_login_timeout as set now, from
             * its connect (as PgBouncer, which reads it at each check);
             * one set where there was none left it open for good.  A
             * CancelRequest waiting for its deferred cancel: the same,
             * cancel_wait_timeout from when it was deferred. */
            pgw_session_arm_timer(s);
        }
    }
    if (ev_is_active(&px->stats_timer)) {
        ev_ref(px->loop);
        ev_timer_stop(px->loop, &px->stats_timer);
    }
    if (cfg->stats_period > 0) {
        ev_timer_set(&px->stats_timer, cfg->stats_period, cfg->stats_period);
        ev_timer_start(px->loop, &px->stats_timer);
        ev_unref(px->loop);
    }
    pgw_admin_reload(px);                       /* admin: stats timer */
    pgw_log_use(r.log_fd);                      /* reopened: logrotate */
    pgw_log_syslog(cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);
    int lvl = pgw_conf_log_level(cfg);
    if (lvl >= 0)
        pgw_log_set_level((enum pgw_log_level)lvl);
    fd_budget(px, false);
    pgw_relay_fast_close_idle(px);              /* servers the reload replaces */
    pgw_info("reload", "file=%s databases=%d peers=%d", cfg->file ? cfg->file : "", cfg->ndbs,
             cfg->npeers);
    return 0;
}

/* What only the start would find otherwise, without its side effects:
 * listen_addr's names resolve (no bind), user names a user. */
static int check_names(const struct pgw_config *cfg, FILE *err)
{
    int problems = 0;
    char where[1100];
    char *addrs = strdup(cfg->listen_addr), *save = NULL;
    for (char *tok = addrs ? strtok_r(addrs, PGW_CONF_LISTEN_SEP, &save) : NULL; tok;
         tok = strtok_r(NULL, PGW_CONF_LISTEN_SEP, &save)) {
        struct addrinfo hints = { 0 }, *res = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
        int rc = getaddrinfo(strcmp(tok, "*") == 0 ? NULL : tok, "1", &hints, &res);
        if (rc != 0)
            fprintf(err, "%s: listen_addr %s: %s\n",
                    pgw_conf_where(cfg, "listen_addr", where, sizeof(where)), tok,
                    gai_strerror(rc)), problems++;
        freeaddrinfo(res);
    }
    free(addrs);
    if (*cfg->user && !getpwnam(cfg->user))
        fprintf(err, "%s: user \"%s\": no such user\n",
                pgw_conf_where(cfg, "user", where, sizeof(where)), cfg->user), problems++;
    gid_t gid;
    if (*cfg->unix_socket_dir && pgw_conf_unix_socket_gid(cfg, &gid) < 0)
        fprintf(err, "%s: unix_socket_group \"%s\": no such group\n",
                pgw_conf_where(cfg, "unix_socket_group", where, sizeof(where)),
                cfg->unix_socket_group), problems++;
    return problems;
}

int pgw_proxy_check_salt_key(const struct pgw_config *cfg, char *err, size_t errlen)
{
    uint8_t key[PGW_SCRAM_KEY_LEN];
    bool keyed;
    int rc = load_salt_key(cfg, key, &keyed, err, errlen);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc < 0) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (as user %s: every reload would fail)", cfg->user);
    }
    return rc;
}

int pgw_proxy_check_files(const struct pgw_config *cfg, FILE *err)
{
    int problems = check_names(cfg, err);
    struct pgw_conf_diag diag = { 0 };
    if (cfg->auth_file && *cfg->auth_file) {
        struct pgw_auth_file *af = NULL;
        int rc = pgw_authfile_load(cfg->auth_file, &af, &diag);
        pgw_conf_diag_locate(&diag, 0, cfg, "auth_file", cfg->auth_file);
        if (rc < 0 && diag.nerrors == 0)
            fprintf(err, "%s: cannot read auth_file\n", cfg->auth_file), problems++;
        pgw_authfile_free(af);
    }
    if (cfg->auth_type == PGW_AUTH_HBA) {
        struct pgw_hba *hba = NULL;
        if (load_hba(cfg, &hba, &diag) < 0 && diag.nerrors == 0)
            fprintf(err, "%s: cannot read auth_hba_file\n", cfg->auth_hba_file), problems++;
        pgw_hba_free(hba);
    }
    for (int i = 0; i < diag.nwarnings; i++)
        fprintf(err, "%s\n", diag.warnings[i]);
    for (int i = 0; i < diag.nerrors; i++)
        fprintf(err, "%s\n", diag.errors[i]);
    problems += diag.nerrors;
    pgw_conf_diag_free(&diag);
    if (cfg->client_tls_sslmode != PGW_TLS_DISABLE) {
        struct ssl_ctx_st *ctx = NULL;
        char why[1024];
        if (pgw_tls_ctx_build(cfg, &ctx, why, sizeof(why)) < 0) {
            tls_locate(cfg, "client", why, sizeof(why));
            fprintf(err, "%s\n", why), problems++;
        }
        pgw_tls_ctx_free(ctx);
    }
    char why[1024];
    if (pgw_tls_server_check(cfg, why, sizeof(why)) < 0) {
        tls_locate(cfg, "server", why, sizeof(why));
        fprintf(err, "%s\n", why), problems++;
    }
    uint8_t key[PGW_SCRAM_KEY_LEN];
    bool keyed;
    if (load_salt_key(cfg, key, &keyed, why, sizeof(why)) < 0)
        fprintf(err, "%s\n", why), problems++;
    OPENSSL_cleanse(key, sizeof(key));
    return problems;
}

int pgw_proxy_reload_file(struct pgw_proxy *px)
{
    struct pgw_config *cfg = NULL;
    struct pgw_conf_diag diag = { 0 };
    char q[1100];
    /* Checked as it would run: with the running values of the keys fixed
     * at start (fixed_key_changed says which the file changed). */
    int rc = pgw_conf_load_over(px->cfg->file, NULL, px->cfg, fixed_key_changed, px, &cfg,
                                &diag);
    for (int i = 0; i < diag.nwarnings; i++)
        pgw_warn("config", "reason=%s", pgw_log_quote(q, sizeof(q), diag.warnings[i]));
    for (int i = 0; i < diag.nerrors; i++)
        pgw_error("config", "reason=%s", pgw_log_quote(q, sizeof(q), diag.errors[i]));
    pgw_conf_diag_free(&diag);
    if (rc < 0 || !cfg) {
        pgw_error("reload", "reason=\"config has errors, keeping the old one\"");
        return PGW_ECONFIG;
    }
    return pgw_proxy_reload(px, cfg);
}

void pgw_proxy_user_from_command_line(struct pgw_proxy *px)
{
    px->user_from_command_line = true;
}

static void shutdown_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_proxy *px = pgw_container_of(w, struct pgw_proxy, shutdown_timer);
    pgw_warn("shutdown", "reason=\"shutdown_timeout reached, closing remaining clients\"");
    pgw_proxy_shutdown(px, PGW_SHUTDOWN_FAST);
}

static void close_all_sessions(struct pgw_proxy *px, bool only_idle)
{
    /* From the head again after each close: closing one session may close
     * others (the clients queued on its server, a failed write to one),
     * which leave this list for px->closing, a saved next pointer with them. */
    for (;;) {
        struct pgw_session *victim = NULL;
        for (struct pgw_list *pos = px->sessions.next; pos != &px->sessions; pos = pos->next) {
            struct pgw_session *s = pgw_container_of(pos, struct pgw_session, node);
            if (s->state == PGW_SS_CLOSING)       /* being closed further up */
                continue;
            /* A client waiting in a paused pool gets no server (and the
             * console that could RESUME is closed): it holds none. */
            if (only_idle && (s->server || (s->state == PGW_SS_WAIT_SERVER &&
                                            (s->pipe_srv || !s->pool ||
                                             !pgw_pool_paused(s->pool)))))
                continue;
            /* A cancel being forwarded, or a connection of the Unix socket
             * kept for them (a peer's forward not read yet), ends itself
             * (cancel_wait_timeout, client_login_timeout). */
            if (only_idle && (s->state == PGW_SS_CANCEL || s->late))
                continue;
            victim = s;
            break;
        }
        if (!victim)
            return;
        pgw_session_close(victim, "57P01", "terminating connection due to administrator command");
    }
}

void pgw_proxy_shutdown(struct pgw_proxy *px, enum pgw_shutdown_mode mode)
{
    if (!px->shutting_down) {
        px->shutting_down = true;
        /* systemd (Type=notify): a signal's, or the console's SHUTDOWN */
        if (pgw_sd_notify("STOPPING=1") < 0)
            pgw_warn("sd_notify", "state=STOPPING=1 reason=\"%s\"", strerror(errno));
        /* With peers, the Unix socket stays while clients drain: a cancel
         * for one of them that lands on another process comes through
         * it (PgBouncer, too, closes only its TCP sockets). */
        pgw_listener_close(px, px->cfg->npeers > 0 && mode != PGW_SHUTDOWN_FAST);
        if (px->pools)
            pgw_pool_set_drain(px->pools);
        if (px->cfg->shutdown_timeout > 0 && mode != PGW_SHUTDOWN_FAST) {
            ev_timer_init(&px->shutdown_timer, shutdown_timeout_cb, px->cfg->shutdown_timeout, 0);
            ev_timer_start(px->loop, &px->shutdown_timer);
        }
    }
    if (mode == PGW_SHUTDOWN_FAST)
        pgw_listener_close(px, false);          /* a Unix socket kept for cancels too */
    px->shutdown_mode = mode;
    pgw_info("shutdown", "mode=%s clients=%d",
             mode == PGW_SHUTDOWN_FAST ? "fast" :
             mode == PGW_SHUTDOWN_WAIT_CLIENTS ? "wait_for_clients" : "wait_for_servers",
             px->nclients);
    if (mode == PGW_SHUTDOWN_FAST) {
        close_all_sessions(px, false);
        pgw_linger_deinit(px);                  /* no lingering either */
    } else if (mode == PGW_SHUTDOWN_WAIT_SERVERS)
        close_all_sessions(px, true);
    pgw_proxy_maybe_finish(px);
}

bool pgw_proxy_shutting_down(const struct pgw_proxy *px) { return px->shutting_down; }

/* Called whenever a session goes away or a server is released. */
void pgw_proxy_maybe_finish(struct pgw_proxy *px)
{
    if (!px->shutting_down || px->finished)
        return;
    if (px->shutdown_mode == PGW_SHUTDOWN_WAIT_SERVERS) {
        /* Clients that no longer hold a server are closed as they let go. */
        close_all_sessions(px, true);
    }
    if (!pgw_list_empty(&px->sessions) || !pgw_list_empty(&px->closing))
        return;
    /* A socket lingering after its FATAL (linger.c) finishes first too:
     * closed now, with the client's input unread, the reset would lose
     * the FATAL; it ends within seconds. */
    if (px->shutdown_mode != PGW_SHUTDOWN_FAST && px->nlingering > 0)
        return;
    /* A forwarded cancel finishes first (the server closes its connection,
     * or cancel_wait_timeout), unless this is the fast shutdown. */
    if (px->shutdown_mode != PGW_SHUTDOWN_FAST && pgw_cancel_inflight(px) > 0)
        return;
    px->finished = true;
    if (ev_is_active(&px->shutdown_timer))
        ev_timer_stop(px->loop, &px->shutdown_timer);
    ev_break(px->loop, EVBREAK_ALL);
}

bool pgw_proxy_finished(const struct pgw_proxy *px) { return px->finished; }

void pgw_proxy_destroy(struct pgw_proxy *px)
{
    if (!px)
        return;
    struct pgw_list *pos, *tmp;
    pgw_list_foreach_safe(pos, tmp, &px->sessions) {
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, node);
        pgw_session_close(s, NULL, "shutdown");
    }
    pgw_list_foreach_safe(pos, tmp, &px->closing) {
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, node);
        pgw_list_del(&s->node);
        pgw_admin_session_gone(s);              /* admin */
        pgw_session_free(s);
    }
    pgw_relay_told_unref(px->told_last);        /* the sessions' are gone */
    pgw_peer_deinit(px);                        /* after the sessions */
    pgw_notify_destroy(px);                     /* hubs hold pools and servers */
    pgw_admin_deinit(px);                       /* admin: before the pools go */
    if (ev_is_active(&px->reaper))
        ev_check_stop(px->loop, &px->reaper);
    if (ev_is_active(&px->reaper_nudge))
        ev_idle_stop(px->loop, &px->reaper_nudge);
    if (ev_is_active(&px->shutdown_timer))
        ev_timer_stop(px->loop, &px->shutdown_timer);
    if (ev_is_active(&px->stats_timer)) {
        ev_ref(px->loop);
        ev_timer_stop(px->loop, &px->stats_timer);
    }
    pgw_listener_close_all(px);
    pgw_linger_deinit(px);
    pgw_batch_free(px);
    pgw_cancel_deinit(px);
    pgw_scram_cache_free(px->scram_cache);
    pgw_authquery_deinit(px);                   /* auth_query: before the pools go */
    if (px->pools)
        pgw_pool_set_destroy(px->pools);
    pgw_ps_deinit(px);
    if (px->root)
        pgw_ctx_release(px->root);
    if (ev_is_active(&px->buf_trim)) {
        ev_ref(px->loop);
        ev_timer_stop(px->loop, &px->buf_trim);
    }
    pgw_list_foreach_safe(pos, tmp, &px->free_bufs) {
        pgw_list_del(pos);
        buf_unpoison(pgw_container_of(pos, struct pgw_iobuf, node));
        munmap(pgw_container_of(pos, struct pgw_iobuf, node), IOBUF_MAP);
    }
    pgw_authfile_free(px->auth);
    pgw_hba_free(px->hba);
    pgw_tls_ctx_free(px->tls_ctx);
    for (int i = 0; i < px->nretired; i++)
        pgw_conf_free(px->retired_cfgs[i]);
    if (px->cfg)
        pgw_conf_free(px->cfg);
    free(px);
}
