/*
 * cancel.c - CancelRequest forwarding.
 *
 * Clients get a (pid, key) made by pgwharf; a CancelRequest carrying it is
 * looked up here and forwarded only to the server linked to that client,
 * and only while that server is busy with the client's request.  libpq's
 * PQcancel blocks, so each forward runs on a short-lived thread and reports
 * back through an ev_async.  While a cancel is in flight the session keeps
 * its server (no release to the pool), so the cancel can never reach the
 * next client's query.
 */
#include "proxy/proxy_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define MAX_INFLIGHT 32

struct cancel_job {
    struct pgw_list node;            /* inflight list: loop thread only */
    struct pgw_list done_node;       /* done list: under the lock */
    struct pgw_session *sess;        /* NULL once the session is gone */
    PGcancel *cancel;
    struct pgw_cancel_state *cs;
    int ok;
    char err[256];
};

struct pgw_cancel_state {
    struct pgw_proxy *px;
    pthread_mutex_t lock;
    struct pgw_list inflight;        /* loop thread only */
    struct pgw_list done;            /* guarded by lock */
    int ninflight;
    ev_async async;
};

static unsigned bucket(uint32_t pid, uint32_t key)
{
    return (pid * 2654435761u ^ key) % PGW_CANCEL_BUCKETS;
}

void pgw_cancel_register(struct pgw_proxy *px, struct pgw_session *s)
{
    pgw_list_append(&px->cancel_hash[bucket(s->cancel_pid, s->cancel_key)], &s->cancel_node);
}

void pgw_cancel_unregister(struct pgw_proxy *px, struct pgw_session *s)
{
    if (pgw_list_linked(&s->cancel_node))
        pgw_list_del(&s->cancel_node);
    if (!s->cancel_inflight || !px->cancel)
        return;
    struct pgw_list *pos;
    for (pos = px->cancel->inflight.next; pos != &px->cancel->inflight; pos = pos->next) {
        struct cancel_job *j = pgw_container_of(pos, struct cancel_job, node);
        if (j->sess == s)
            j->sess = NULL;
    }
    s->cancel_inflight = 0;
}

static void *cancel_thread(void *arg)
{
    struct cancel_job *j = arg;
    j->ok = PQcancel(j->cancel, j->err, sizeof(j->err));
    struct pgw_cancel_state *cs = j->cs;
    pthread_mutex_lock(&cs->lock);
    pgw_list_append(&cs->done, &j->done_node);
    pthread_mutex_unlock(&cs->lock);
    ev_async_send(cs->px->loop, &cs->async);
    return NULL;
}

/* A cancel finished: a session that reached ReadyForQuery meanwhile can
 * now let its server go. */
static void job_done(struct pgw_cancel_state *cs, struct cancel_job *j)
{
    struct pgw_session *s = j->sess;
    if (!j->ok)
        pgw_warn("cancel_failed", "reason=\"%s\"", j->err);
    PQfreeCancel(j->cancel);
    pgw_list_del(&j->node);
    cs->ninflight--;
    free(j);
    if (!s || --s->cancel_inflight > 0)
        return;
    if (s->server && s->state == PGW_SS_LINKED && s->mode != PGW_POOL_SESSION &&
        s->track.sync_out == 0 && s->track.fe_open == 0 && s->track.tx_status == 'I') {
        s->release_held = true;
        pgw_relay_release_if_clean(s);
    }
}

/* Finish every job its thread has handed back. */
static void reap_done(struct pgw_cancel_state *cs)
{
    struct pgw_list done;
    pgw_list_init(&done);
    pthread_mutex_lock(&cs->lock);
    while (!pgw_list_empty(&cs->done)) {
        struct pgw_list *n = pgw_list_first(&cs->done);
        pgw_list_del(n);
        pgw_list_append(&done, n);
    }
    pthread_mutex_unlock(&cs->lock);
    while (!pgw_list_empty(&done)) {
        struct pgw_list *n = pgw_list_first(&done);
        pgw_list_del(n);
        job_done(cs, pgw_container_of(n, struct cancel_job, done_node));
    }
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct pgw_cancel_state *cs = pgw_container_of(w, struct pgw_cancel_state, async);
    reap_done(cs);
    if (cs->ninflight == 0)
        pgw_proxy_maybe_finish(cs->px);
}

int pgw_cancel_inflight(const struct pgw_proxy *px)
{
    return px->cancel ? px->cancel->ninflight : 0;
}

static struct pgw_session *find(struct pgw_proxy *px, uint32_t pid, uint32_t key)
{
    struct pgw_list *head = &px->cancel_hash[bucket(pid, key)], *pos;
    for (pos = head->next; pos != head; pos = pos->next) {
        struct pgw_session *s = pgw_container_of(pos, struct pgw_session, cancel_node);
        if (s->cancel_pid == pid && s->cancel_key == key)
            return s;
    }
    return NULL;
}

void pgw_cancel_request(struct pgw_proxy *px, uint32_t pid, uint32_t key, const char *from)
{
    struct pgw_session *s = find(px, pid, key);
    if (!s) {
        pgw_info("cancel_ignored", "client=%s reason=\"unknown cancel key\"", from);
        return;
    }
    if (s->pipe_srv || (s->server && (s->pipe_skip > 0 || s->pipe_drop > 0))) {
        /* Queued behind another client's query (server_pipeline_depth), or
         * holding the server while it still drops replies of clients that
         * left: the server runs someone else's query now.  Sent once this
         * client's own query runs (relay.c, pipe_cancel_due). */
        s->pipe_cancel = true;
        pgw_info("cancel_deferred", "client=%s target=%s reason=\"query queued on a server\"",
                 from, s->addr_text);
        return;
    }
    pgw_cancel_session(px, s, from);
}

void pgw_cancel_session(struct pgw_proxy *px, struct pgw_session *s, const char *from)
{
    struct pgw_cancel_state *cs = px->cancel;
    bool busy = s->server && (s->track.sync_out > 0 || s->track.fe_open > 0 || s->track.copy);
    if (!busy) {
        pgw_info("cancel_ignored", "client=%s target=%s reason=\"no query in progress\"",
                 from, s->addr_text);
        return;
    }
    if (cs->ninflight >= MAX_INFLIGHT) {
        pgw_warn("cancel_ignored", "client=%s reason=\"too many cancels in flight\"", from);
        return;
    }
    struct cancel_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->cancel = PQgetCancel(s->server->conn);
    if (!j->cancel) {
        free(j);
        return;
    }
    j->sess = s;
    j->cs = cs;
    pgw_list_init(&j->done_node);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pgw_list_append(&cs->inflight, &j->node);
    if (pthread_create(&t, &attr, cancel_thread, j) != 0) {
        pgw_list_del(&j->node);
        PQfreeCancel(j->cancel);
        free(j);
        pthread_attr_destroy(&attr);
        return;
    }
    pthread_attr_destroy(&attr);
    cs->ninflight++;
    s->cancel_inflight++;
    if (s->server->user_queued > 0) {
        /* The cancel may land on a query queued behind this one
         * (server_pipeline_depth): those clients get 08006 instead. */
        pgw_relay_pipe_taint(s->server);
    }
    pgw_info("cancel_forwarded", "client=%s target=%s backend_pid=%d", from, s->addr_text,
             s->server->backend_pid);
}

int pgw_cancel_init(struct pgw_proxy *px)
{
    struct pgw_cancel_state *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return -1;
    cs->px = px;
    pthread_mutex_init(&cs->lock, NULL);
    pgw_list_init(&cs->inflight);
    pgw_list_init(&cs->done);
    ev_async_init(&cs->async, async_cb);
    ev_async_start(px->loop, &cs->async);
    ev_unref(px->loop);
    px->cancel = cs;
    return 0;
}

void pgw_cancel_deinit(struct pgw_proxy *px)
{
    struct pgw_cancel_state *cs = px->cancel;
    if (!cs)
        return;
    /* Jobs handed back but not yet seen by the loop (it stopped first). */
    reap_done(cs);
    /* Threads still running own their jobs; leave the state to them rather
     * than free it under their feet (only at a fast exit). */
    if (cs->ninflight > 0)
        return;
    ev_ref(px->loop);
    ev_async_stop(px->loop, &cs->async);
    pthread_mutex_destroy(&cs->lock);
    free(cs);
    px->cancel = NULL;
}
