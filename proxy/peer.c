/*
 * peer.c - the local user name of a unix-socket client (auth method peer),
 * looked up off the loop.
 *
 * getpwuid_r goes through NSS: with LDAP or sssd behind it, it can wait on
 * the network for seconds, and on the loop that would stall every client.
 * So each lookup runs on a short-lived detached thread, as the backends'
 * name lookups do (pool/backend.c), and the answer comes back through an
 * ev_async: the thread puts its finished request on the hub's done list
 * and wakes the loop, which calls the session's callback.
 *
 * Lifetimes.  The hub (one per proxy, made on first use) is shared by the
 * loop and the threads and counted (refs: the proxy, and each thread not
 * finished): the last to let go frees it.  A request belongs to its thread
 * until the thread puts it on the done list, then to the loop.  A session
 * that ends while its lookup runs (client gone, client_login_timeout)
 * only forgets it (pgw_peer_cancel: r->session = NULL): the answer, when
 * it comes, is dropped.  At shutdown the hub is closed: a thread still
 * waiting on NSS is not joined (that could hang the exit); when it
 * finishes it frees its request and, last, the hub.
 *
 * At most PEER_THREADS_MAX lookups run at once: with NSS hung, every
 * waiting login would otherwise hold a thread.  The others wait on the
 * hub's queue (the loop's alone), in arrival order, and start as earlier
 * ones finish; a queued request whose session ends leaves the queue and is
 * freed at once (pgw_peer_cancel).
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define PEER_NAME_MAX 256
#define PEER_BUF_MAX (1024 * 1024)       /* the largest getpwuid_r buffer tried */
#define PEER_THREADS_MAX 8               /* lookups running at once */

struct pgw_peer_hub {
    pthread_mutex_t mu;
    int refs;                        /* the proxy, and each running thread */
    bool open;                       /* the loop is there to be woken (mu) */
    struct ev_loop *loop;
    ev_async async;
    struct pgw_list done;            /* finished requests (mu) */
    /* the loop's side */
    int running;                     /* started, answer not yet taken */
    struct pgw_list queue;           /* waiting for a thread, oldest first */
};

struct pgw_peer_req {
    struct pgw_list node;            /* in hub->queue until started; in
                                      * hub->done once finished */
    struct pgw_peer_hub *hub;
    uid_t uid;
    /* the loop's side */
    struct pgw_session *session;     /* NULL: nobody waits any more */
    pgw_peer_done_fn done;
    bool queued;                     /* on hub->queue, no thread yet */
    /* the thread's answer */
    int rc;                          /* getpwuid_r's error, 0 when none */
    bool found;
    char name[PEER_NAME_MAX];
};

static void hub_unref(struct pgw_peer_hub *hub)
{
    pthread_mutex_lock(&hub->mu);
    bool last = --hub->refs == 0;
    pthread_mutex_unlock(&hub->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&hub->mu);
    free(hub);
}

static void lookup(struct pgw_peer_req *r)
{
    size_t len = 4096;
    for (;;) {
        char *buf = malloc(len);
        struct passwd pw, *found = NULL;
        if (!buf) {
            r->rc = ENOMEM;
            return;
        }
        r->rc = getpwuid_r(r->uid, &pw, buf, len, &found);
        if (found) {
            snprintf(r->name, sizeof(r->name), "%s", pw.pw_name);
            r->found = strlen(pw.pw_name) < sizeof(r->name);
            if (!r->found)
                r->rc = ENAMETOOLONG;
        }
        free(buf);
        if (r->rc != ERANGE || len >= PEER_BUF_MAX)
            return;
        len *= 2;
    }
}

static void *peer_thread(void *arg)
{
    struct pgw_peer_req *r = arg;
    struct pgw_peer_hub *hub = r->hub;
    lookup(r);
    pthread_mutex_lock(&hub->mu);
    bool open = hub->open;
    if (open) {
        pgw_list_append(&hub->done, &r->node);
        ev_async_send(hub->loop, &hub->async);
    }
    pthread_mutex_unlock(&hub->mu);
    if (!open)                       /* shut down meanwhile: nobody to tell */
        free(r);
    hub_unref(hub);
    return NULL;
}

static void answer(struct pgw_peer_req *r)
{
    struct pgw_session *s = r->session;
    if (!s)
        return;                      /* the session ended meanwhile */
    r->session = NULL;
    char ebuf[128];
    if (r->found)
        r->done(s, r->name, NULL);
    else if (r->rc)
        r->done(s, NULL, strerror_r(r->rc, ebuf, sizeof(ebuf)));
    else
        r->done(s, NULL, "user does not exist");
}

static bool thread_start(struct pgw_peer_hub *hub, struct pgw_peer_req *r);

/* Start queued lookups while there is room.  One whose thread cannot be
 * started is answered with the error (its callback may cancel others:
 * they leave the queue, which is read from its head each time). */
static void queue_run(struct pgw_peer_hub *hub)
{
    struct pgw_list *n;
    while (hub->running < PEER_THREADS_MAX && (n = pgw_list_first(&hub->queue))) {
        pgw_list_del(n);
        struct pgw_peer_req *r = pgw_container_of(n, struct pgw_peer_req, node);
        r->queued = false;
        if (thread_start(hub, r))
            continue;
        r->rc = EAGAIN;
        answer(r);
        free(r);
    }
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct pgw_peer_hub *hub = pgw_container_of(w, struct pgw_peer_hub, async);
    struct pgw_list got;
    pgw_list_init(&got);
    pthread_mutex_lock(&hub->mu);
    struct pgw_list *n;
    while ((n = pgw_list_first(&hub->done))) {
        pgw_list_del(n);
        pgw_list_append(&got, n);
    }
    pthread_mutex_unlock(&hub->mu);
    /* A callback may end other sessions: their requests still on `got`
     * are then cancelled (session NULL), not freed, so the walk is safe. */
    while ((n = pgw_list_first(&got))) {
        pgw_list_del(n);
        struct pgw_peer_req *r = pgw_container_of(n, struct pgw_peer_req, node);
        hub->running--;
        answer(r);
        free(r);
    }
    queue_run(hub);
}

static struct pgw_peer_hub *hub_get(struct pgw_proxy *px)
{
    if (px->peer)
        return px->peer;
    struct pgw_peer_hub *hub = calloc(1, sizeof(*hub));
    if (!hub)
        return NULL;
    if (pthread_mutex_init(&hub->mu, NULL) != 0) {
        free(hub);
        return NULL;
    }
    hub->refs = 1;
    hub->open = true;
    hub->loop = px->loop;
    pgw_list_init(&hub->done);
    pgw_list_init(&hub->queue);
    ev_async_init(&hub->async, async_cb);
    ev_async_start(px->loop, &hub->async);
    ev_unref(px->loop);              /* does not keep the loop alive */
    px->peer = hub;
    return hub;
}

/* r's thread; false when none could be started (r is still the loop's). */
static bool thread_start(struct pgw_peer_hub *hub, struct pgw_peer_req *r)
{
    pthread_attr_t attr;
    pthread_t t;
    if (pthread_attr_init(&attr) != 0)
        return false;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&hub->mu);
    hub->refs++;                     /* the thread's */
    pthread_mutex_unlock(&hub->mu);
    int rc = pthread_create(&t, &attr, peer_thread, r);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        hub_unref(hub);
        return false;
    }
    hub->running++;
    return true;
}

struct pgw_peer_req *pgw_peer_lookup(struct pgw_session *s, uid_t uid, pgw_peer_done_fn done)
{
    struct pgw_peer_hub *hub = hub_get(s->px);
    struct pgw_peer_req *r = hub ? calloc(1, sizeof(*r)) : NULL;
    if (!r)
        return NULL;
    r->hub = hub;
    r->uid = uid;
    r->session = s;
    r->done = done;
    pgw_list_init(&r->node);
    if (hub->running >= PEER_THREADS_MAX || !pgw_list_empty(&hub->queue)) {
        r->queued = true;            /* a finished lookup starts it */
        pgw_list_append(&hub->queue, &r->node);
        pgw_info("peer_lookup_queued", "uid=%ld running=%d", (long)uid, hub->running);
        return r;
    }
    if (!thread_start(hub, r)) {
        free(r);
        return NULL;
    }
    return r;
}

void pgw_peer_cancel(struct pgw_peer_req *r)
{
    if (!r)
        return;
    if (r->queued) {                 /* no thread has it: gone now */
        pgw_list_del(&r->node);
        free(r);
        return;
    }
    r->session = NULL;
}

void pgw_peer_deinit(struct pgw_proxy *px)
{
    struct pgw_peer_hub *hub = px->peer;
    if (!hub)
        return;
    px->peer = NULL;
    struct pgw_list got;
    pgw_list_init(&got);
    pthread_mutex_lock(&hub->mu);
    hub->open = false;
    struct pgw_list *n;
    while ((n = pgw_list_first(&hub->done))) {
        pgw_list_del(n);
        pgw_list_append(&got, n);
    }
    pthread_mutex_unlock(&hub->mu);
    ev_ref(px->loop);
    ev_async_stop(px->loop, &hub->async);
    while ((n = pgw_list_first(&got)) || (n = pgw_list_first(&hub->queue))) {
        pgw_list_del(n);
        free(pgw_container_of(n, struct pgw_peer_req, node));
    }
    hub_unref(hub);
}
