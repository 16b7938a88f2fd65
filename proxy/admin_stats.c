/*
 * admin_stats.c - per-database counters for SHOW STATS and the
 * pgwharf_*_total metrics.
 *
 * Where each number comes from:
 *   xacts, queries, bytes      the sessions' own counters (relay/session;
 *                              bytes from the end of the login's welcome)
 *   xact_time, query_time      the sessions' counters kept by
 *                              pgw_metrics_ready (metrics.c)
 *   assignments, wait_time,    the pools' counters (total_acquires,
 *   wait_timeouts              total_wait_us, total_wait_timeouts)
 *   client/server parses,      the sessions' counters kept by prepared.c
 *   binds                      (named statements, max_prepared_statements)
 * Totals = counters folded in from sessions and pools already freed +
 * sessions alive (open and closing) + pools.  A session counts once it has
 * a pool and is not an admin session, so a total never goes down -- until
 * the database has neither pool nor session left (its pools freed by
 * autodb_idle_timeout, or its entry gone from the config): then its entry
 * goes.
 *
 * Averages (PgBouncer's avg_*) cover the last complete stats_period: a timer
 * snapshots the totals; rates are per second, times per transaction, query
 * and server assignment.
 */
#include "proxy/admin_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/array.h"
#include "common/clock.h"
#include "common/log.h"

struct stat_entry {
    char *database;
    bool live;                       /* a pool or a session has it (collect) */
    struct pgw_dbstat closed;        /* from sessions already freed */
    struct pgw_dbstat prev, last;    /* snapshots for the averages */
};

struct pgw_stats {
    struct pgw_proxy *px;
    struct stat_entry *e;            /* sorted by database */
    int n;
    size_t cap;
    ev_timer timer;
    ev_tstamp prev_t, last_t;
    struct pgw_dbstat gone;          /* sessions freed, every database's, kept
                                        when their entry goes (the log line) */
    uint64_t console, console_prev, console_last;   /* the console's row: sessions
                                                       that sent a Query; snapshots */
};

bool pgw_stats_counts(const struct pgw_session *s)
{
    return !s->is_admin && s->pool && s->database;
}

static int entry_index(const struct pgw_stats *st, const char *db, bool *found)
{
    int lo = 0, hi = st->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(st->e[mid].database, db);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* The entry for db, made when missing; NULL when memory is short. */
static struct stat_entry *entry_get(struct pgw_stats *st, const char *db)
{
    bool found;
    int i = entry_index(st, db, &found);
    if (found)
        return &st->e[i];
    struct stat_entry *grown = pgw_array_grow(st->e, sizeof(*grown), (size_t)st->n, &st->cap, 16);
    if (!grown)
        return NULL;
    st->e = grown;
    char *name = strdup(db);
    if (!name)
        return NULL;
    memmove(&st->e[i + 1], &st->e[i], sizeof(*st->e) * (size_t)(st->n - i));
    memset(&st->e[i], 0, sizeof(st->e[i]));
    st->e[i].database = name;
    st->n++;
    return &st->e[i];
}

static void add(struct pgw_dbstat *t, const struct pgw_dbstat *d)
{
    t->assignments += d->assignments;
    t->xacts += d->xacts;
    t->queries += d->queries;
    t->recv += d->recv;
    t->sent += d->sent;
    t->xact_us += d->xact_us;
    t->query_us += d->query_us;
    t->wait_us += d->wait_us;
    t->wait_timeouts += d->wait_timeouts;
    t->ps_client_parses += d->ps_client_parses;
    t->ps_server_parses += d->ps_server_parses;
    t->ps_binds += d->ps_binds;
}

static void session_stat(const struct pgw_session *s, struct pgw_dbstat *d)
{
    memset(d, 0, sizeof(*d));
    d->xacts = s->xact_count;
    d->queries = s->query_count;
    /* unrelayed_out counts the welcome as written when it was queued: one
     * never written (the client reset its connection at once, a KILL)
     * would make the difference negative -- a total going down, or round
     * to 2^64.  What is left out was never counted: none of it is taken. */
    if (s->welcomed) {
        d->recv = s->bytes_in > s->unrelayed_in ? s->bytes_in - s->unrelayed_in : 0;
        d->sent = s->bytes_out > s->unrelayed_out ? s->bytes_out - s->unrelayed_out : 0;
    }
    d->xact_us = s->xact_time_us;
    d->query_us = s->query_time_us;
    d->ps_client_parses = s->ps_parse_count;
    d->ps_server_parses = s->ps_server_parse_count;
    d->ps_binds = s->ps_bind_count;
}

static void pool_stat(const struct pgw_pool *p, struct pgw_dbstat *d)
{
    struct pgw_pool_stats ps;
    pgw_pool_get_stats(p, &ps);
    memset(d, 0, sizeof(*d));
    d->assignments = ps.total_acquires;
    d->wait_us = ps.total_wait_us;
    d->wait_timeouts = ps.total_wait_timeouts;
}

static void walk_sessions(struct pgw_stats *st, struct pgw_list *head, struct pgw_dbstat *cur)
{
    for (struct pgw_list *l = head->next; l != head; l = l->next) {
        const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
        if (!pgw_stats_counts(s))
            continue;
        bool found;
        int i = entry_index(st, s->database, &found);
        if (found) {
            struct pgw_dbstat d;
            session_stat(s, &d);
            add(&cur[i], &d);
        }
    }
}

static void mark_live(struct pgw_stats *st, const char *db)
{
    struct stat_entry *e = entry_get(st, db);
    if (e)
        e->live = true;
}

/* Current totals, one per entry (entries for every database seen first).
 * NULL when memory is short. */
static struct pgw_dbstat *collect(struct pgw_stats *st)
{
    struct pgw_proxy *px = st->px;
    struct pgw_list *heads[] = { &px->sessions, &px->closing };
    for (int i = 0; i < st->n; i++)
        st->e[i].live = false;
    for (int h = 0; h < 2; h++)
        for (struct pgw_list *l = heads[h]->next; l != heads[h]; l = l->next) {
            const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
            if (pgw_stats_counts(s))
                mark_live(st, s->database);
        }
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p))
        mark_live(st, pgw_pool_dbname(p));
    /* A database with neither pool nor session had its pools freed
     * (autodb_idle_timeout, or removed from the config): its stats go
     * with them, as in PgBouncer, so that names tried under "*" do not
     * pile up. */
    int kept = 0;
    for (int i = 0; i < st->n; i++) {
        if (st->e[i].live)
            st->e[kept++] = st->e[i];
        else
            free(st->e[i].database);
    }
    st->n = kept;
    struct pgw_dbstat *cur = calloc((size_t)(st->n ? st->n : 1), sizeof(*cur));
    if (!cur)
        return NULL;
    for (int i = 0; i < st->n; i++)
        cur[i] = st->e[i].closed;
    walk_sessions(st, &px->sessions, cur);
    walk_sessions(st, &px->closing, cur);
    for (struct pgw_pool *p = pgw_pool_next(px->pools, NULL); p; p = pgw_pool_next(px->pools, p)) {
        bool found;
        int i = entry_index(st, pgw_pool_dbname(p), &found);
        if (found) {
            struct pgw_dbstat d;
            pool_stat(p, &d);
            add(&cur[i], &d);
        }
    }
    return cur;
}

static uint64_t delta(uint64_t now, uint64_t before) { return now > before ? now - before : 0; }

/* What the last complete period added to an entry's counters. */
static void period_delta(const struct stat_entry *e, struct pgw_dbstat *d)
{
    const struct pgw_dbstat *a = &e->prev, *b = &e->last;
    d->assignments = delta(b->assignments, a->assignments);
    d->xacts = delta(b->xacts, a->xacts);
    d->queries = delta(b->queries, a->queries);
    d->recv = delta(b->recv, a->recv);
    d->sent = delta(b->sent, a->sent);
    d->xact_us = delta(b->xact_us, a->xact_us);
    d->query_us = delta(b->query_us, a->query_us);
    d->wait_us = delta(b->wait_us, a->wait_us);
    d->wait_timeouts = delta(b->wait_timeouts, a->wait_timeouts);
    d->ps_client_parses = delta(b->ps_client_parses, a->ps_client_parses);
    d->ps_server_parses = delta(b->ps_server_parses, a->ps_server_parses);
    d->ps_binds = delta(b->ps_binds, a->ps_binds);
}

/* Counts per second over dt seconds; times per transaction, query and
 * assignment (from the period's sums, not from rounded rates). */
static void averages(const struct pgw_dbstat *d, double dt, struct pgw_dbstat *avg)
{
    memset(avg, 0, sizeof(*avg));
    if (dt <= 0)
        return;
    avg->assignments = (uint64_t)(d->assignments / dt);
    avg->xacts = (uint64_t)(d->xacts / dt);
    avg->queries = (uint64_t)(d->queries / dt);
    avg->recv = (uint64_t)(d->recv / dt);
    avg->sent = (uint64_t)(d->sent / dt);
    avg->wait_timeouts = (uint64_t)(d->wait_timeouts / dt);
    avg->ps_client_parses = (uint64_t)(d->ps_client_parses / dt);
    avg->ps_server_parses = (uint64_t)(d->ps_server_parses / dt);
    avg->ps_binds = (uint64_t)(d->ps_binds / dt);
    avg->xact_us = d->xacts ? d->xact_us / d->xacts : 0;
    avg->query_us = d->queries ? d->query_us / d->queries : 0;
    avg->wait_us = d->assignments ? d->wait_us / d->assignments : 0;
}

void pgw_stats_totals(struct pgw_proxy *px, struct pgw_dbstat *total, struct pgw_dbstat *avg)
{
    struct pgw_stats *st = px->admin ? px->admin->stats : NULL;
    struct pgw_dbstat sum = { 0 };
    memset(total, 0, sizeof(*total));
    memset(avg, 0, sizeof(*avg));
    if (!st)
        return;
    struct pgw_dbstat *cur = collect(st);
    for (int i = 0; i < st->n; i++) {
        struct pgw_dbstat d;
        if (cur)
            add(total, &cur[i]);
        period_delta(&st->e[i], &d);
        add(&sum, &d);
    }
    free(cur);
    averages(&sum, st->last_t - st->prev_t, avg);
    /* The console's row too, as PgBouncer sums its admin pool's: in the
     * counts and their rates, not in the average times (its transactions
     * take none, and would only dilute the databases'). */
    struct pgw_dbstat ct, ca;
    pgw_stats_console(px, &ct, &ca);
    total->xacts += ct.xacts;
    total->queries += ct.queries;
    avg->xacts += ca.xacts;
    avg->queries += ca.queries;
}

void pgw_stats_sessions_total(struct pgw_proxy *px, struct pgw_dbstat *sum)
{
    struct pgw_stats *st = px->admin ? px->admin->stats : NULL;
    memset(sum, 0, sizeof(*sum));
    if (st)
        *sum = st->gone;
    struct pgw_list *heads[] = { &px->sessions, &px->closing };
    for (int h = 0; h < 2; h++)
        for (struct pgw_list *l = heads[h]->next; l != heads[h]; l = l->next) {
            const struct pgw_session *s = pgw_container_of(l, struct pgw_session, node);
            if (!pgw_stats_counts(s))
                continue;
            struct pgw_dbstat d;
            session_stat(s, &d);
            add(sum, &d);
        }
}

struct pgw_dbstat_row *pgw_stats_rows(struct pgw_proxy *px, int *n)
{
    struct pgw_stats *st = px->admin ? px->admin->stats : NULL;
    *n = 0;
    if (!st)
        return NULL;
    struct pgw_dbstat *cur = collect(st);
    if (!cur || st->n == 0) {
        free(cur);
        return NULL;
    }
    struct pgw_dbstat_row *rows = calloc((size_t)st->n, sizeof(*rows));
    if (!rows) {
        free(cur);
        return NULL;
    }
    for (int i = 0; i < st->n; i++) {
        rows[i].database = st->e[i].database;
        rows[i].total = cur[i];
        struct pgw_dbstat d;
        period_delta(&st->e[i], &d);
        averages(&d, st->last_t - st->prev_t, &rows[i].avg);
    }
    free(cur);
    *n = st->n;
    return rows;
}

void pgw_stats_console_query(struct pgw_stats *st)
{
    if (st)
        st->console++;
}

void pgw_stats_console(struct pgw_proxy *px, struct pgw_dbstat *total, struct pgw_dbstat *avg)
{
    struct pgw_stats *st = px->admin ? px->admin->stats : NULL;
    memset(total, 0, sizeof(*total));
    memset(avg, 0, sizeof(*avg));
    if (!st)
        return;
    total->xacts = total->queries = st->console;
    struct pgw_dbstat d = { 0 };
    d.xacts = d.queries = delta(st->console_last, st->console_prev);
    averages(&d, st->last_t - st->prev_t, avg);
}

static void snapshot_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_stats *st = pgw_container_of(w, struct pgw_stats, timer);
    struct pgw_dbstat *cur = collect(st);
    if (!cur)
        return;
    for (int i = 0; i < st->n; i++) {
        st->e[i].prev = st->e[i].last;
        st->e[i].last = cur[i];
    }
    st->console_prev = st->console_last;
    st->console_last = st->console;
    st->prev_t = st->last_t;
    st->last_t = pgw_mono_now(loop);
    free(cur);
}

static void timer_stop(struct pgw_stats *st)
{
    if (ev_is_active(&st->timer)) {
        ev_ref(st->px->loop);
        ev_timer_stop(st->px->loop, &st->timer);
    }
}

/* The snapshot timer follows stats_period (60 s when it is 0, as the
 * averages need some period).  It does not keep the loop alive. */
void pgw_stats_reconfigure(struct pgw_stats *st)
{
    double period = st->px->cfg->stats_period > 0 ? st->px->cfg->stats_period : 60;
    if (ev_is_active(&st->timer) && st->timer.repeat == period)
        return;
    timer_stop(st);
    ev_timer_set(&st->timer, period, period);
    ev_timer_start(st->px->loop, &st->timer);
    ev_unref(st->px->loop);
}

/* A freed pool's counters stay with its database (in `closed`), so that a
 * total only goes down when the database's entry goes. */
static void pool_gone(const struct pgw_pool *pool, void *arg)
{
    struct pgw_stats *st = arg;
    struct stat_entry *e = entry_get(st, pgw_pool_dbname(pool));
    if (!e) {
        pgw_warn("stats", "db=%s reason=\"out of memory: a freed pool's counters are lost\"",
                 pgw_pool_dbname(pool));
        return;
    }
    struct pgw_dbstat d;
    pool_stat(pool, &d);
    add(&e->closed, &d);
}

struct pgw_stats *pgw_stats_create(struct pgw_proxy *px)
{
    struct pgw_stats *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->px = px;
    st->prev_t = st->last_t = pgw_mono_now(px->loop);
    ev_init(&st->timer, snapshot_cb);
    pgw_stats_reconfigure(st);
    pgw_pool_set_gone_hook(px->pools, pool_gone, st);
    return st;
}

void pgw_stats_destroy(struct pgw_stats *st)
{
    if (!st)
        return;
    pgw_pool_set_gone_hook(st->px->pools, NULL, NULL);
    timer_stop(st);
    for (int i = 0; i < st->n; i++)
        free(st->e[i].database);
    free(st->e);
    free(st);
}

void pgw_stats_session_gone(struct pgw_stats *st, const struct pgw_session *s)
{
    if (!st || !pgw_stats_counts(s))
        return;
    struct pgw_dbstat d;
    session_stat(s, &d);
    add(&st->gone, &d);
    struct stat_entry *e = entry_get(st, s->database);
    if (!e) {
        pgw_warn("stats", "db=%s reason=\"out of memory: a closed session's counters are lost\"",
                 s->database);
        return;
    }
    add(&e->closed, &d);
}
