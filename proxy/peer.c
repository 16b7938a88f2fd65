/*
 * peer.c - the local user name of a unix-socket client (auth method peer),
 * looked up off the loop.
 *
 * getpwuid_r goes through NSS: with LDAP or sssd behind it, it can wait on
 * the network for seconds, and on the loop that would stall every client.
 * So each lookup is a job of the proxy's offload (common/offload.h, as the
 * backends' name lookups are, pool/backend.c): it runs on a short-lived
 * detached thread and the answer comes back through the offload's
 * ev_async, on the loop, which calls the session's callback.
 *
 * Lifetimes.  The offload (one per proxy, made on first use) is destroyed
 * at shutdown without waiting: a thread still waiting on NSS is not joined
 * (that could hang the exit); when it finishes it frees its request.  A
 * session that ends while its lookup runs or waits (client gone,
 * client_login_timeout) cancels it (pgw_peer_cancel): a queued request is
 * freed at once, a running one's answer is dropped when it comes.
 *
 * At most PEER_THREADS_MAX lookups run at once: with NSS hung, every
 * waiting login would otherwise hold a thread.  The others wait on the
 * offload's queue, in arrival order, and start as earlier ones finish.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/offload.h"

#define PEER_NAME_MAX 256
#define PEER_BUF_MAX (1024 * 1024)       /* the largest getpwuid_r buffer tried */
#define PEER_THREADS_MAX 8               /* lookups running at once */

struct pgw_peer_req {
    struct pgw_offload_job job;
    uid_t uid;
    /* the loop's side */
    struct pgw_session *session;
    pgw_peer_done_fn done;
    /* the thread's answer */
    int rc;                          /* getpwuid_r's error, 0 when none */
    bool found;
    char name[PEER_NAME_MAX];
};

/* The job's work, on its thread. */
static void lookup(struct pgw_offload_job *job)
{
    struct pgw_peer_req *r = pgw_container_of(job, struct pgw_peer_req, job);
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

/* The answer, on the loop (never after pgw_peer_cancel); or, job.error
 * set, no thread could be started for a queued lookup. */
static void answer(struct pgw_offload_job *job)
{
    struct pgw_peer_req *r = pgw_container_of(job, struct pgw_peer_req, job);
    struct pgw_session *s = r->session;
    char ebuf[128];
    if (job->error)
        r->rc = job->error;
    if (r->found)
        r->done(s, r->name, NULL);
    else if (r->rc)
        r->done(s, NULL, strerror_r(r->rc, ebuf, sizeof(ebuf)));
    else
        r->done(s, NULL, "user does not exist");
    free(r);
}

/* The job's end without an answer wanted (session gone, shutdown). */
static void drop(struct pgw_offload_job *job)
{
    free(pgw_container_of(job, struct pgw_peer_req, job));
}

struct pgw_peer_req *pgw_peer_lookup(struct pgw_session *s, uid_t uid, pgw_peer_done_fn done)
{
    struct pgw_proxy *px = s->px;
    if (!px->peer)
        px->peer = pgw_offload_create(px->loop, PEER_THREADS_MAX);
    struct pgw_peer_req *r = px->peer ? calloc(1, sizeof(*r)) : NULL;
    if (!r)
        return NULL;
    r->uid = uid;
    r->session = s;
    r->done = done;
    int rc = pgw_offload_submit(px->peer, &r->job, lookup, answer, drop);
    if (rc < 0) {
        free(r);
        return NULL;
    }
    if (rc > 0)                      /* a finished lookup starts it */
        pgw_info("peer_lookup_queued", "uid=%ld running=%d", (long)uid,
                 pgw_offload_running(px->peer));
    return r;
}

void pgw_peer_cancel(struct pgw_peer_req *r)
{
    if (r)
        pgw_offload_cancel(&r->job);
}

void pgw_peer_deinit(struct pgw_proxy *px)
{
    pgw_offload_destroy(px->peer);
    px->peer = NULL;
}
