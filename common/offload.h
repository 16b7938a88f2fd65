/*
 * offload.h - blocking calls off the libev loop: each job runs on a
 * short-lived detached thread and its answer comes back to the loop
 * through an ev_async.  Host-name lookups (pool/backend.c, getaddrinfo)
 * and peer-auth user lookups (proxy/peer.c, getpwuid_r) use it.
 *
 * One per loop (its owner's; nothing global): all of this API is called
 * on that loop's thread.  A job is embedded in its owner's request and
 * moves through three hands:
 *
 *   submit  ->  [queue: loop's]  ->  work(job) on a thread  ->  done(job)
 *                                                               on the loop
 *
 * Exactly one of done or drop ends each job: done on the loop once work
 * has returned (or, job->error set, once no thread could be had for a
 * queued job); drop instead when the job was cancelled or the offload
 * destroyed.  Each takes the job over (frees it, typically).  drop may run
 * on the job's thread (destroyed while work ran), so it touches nothing
 * but the job's own memory.  done never runs after pgw_offload_cancel of
 * its job or pgw_offload_destroy, nor inside pgw_offload_submit.
 *
 * With max_threads > 0 at most that many jobs run at once; the others wait
 * in submission order and start as earlier ones are answered.
 *
 * Shutdown never waits: threads are never joined (a getaddrinfo waiting on
 * an unreachable DNS server would hold up the exit as long as it waits).
 * The offload is counted by its owner and by each thread not finished;
 * the last to let go frees it.
 */
#ifndef PGW_COMMON_OFFLOAD_H
#define PGW_COMMON_OFFLOAD_H

#include <stdbool.h>

#include <ev.h>

#include "common/list.h"

struct pgw_offload;
struct pgw_offload_job;
typedef void (*pgw_offload_fn)(struct pgw_offload_job *job);

/* Embed in the request; the fields are offload.c's. */
struct pgw_offload_job {
    struct pgw_list node;       /* on the queue, the done list, or taken */
    struct pgw_offload *hub;
    pgw_offload_fn work, done, drop;
    int error;                  /* for done: 0, or the errno of a failed
                                 * thread start (work never ran); the same
                                 * after pgw_offload_submit's PGW_EAGAIN */
    bool queued;                /* waits for a thread (the loop's) */
    bool cancelled;             /* nobody wants the answer (the loop's) */
};

/* NULL when out of memory or mutexes.  max_threads <= 0: no limit. */
struct pgw_offload *pgw_offload_create(struct ev_loop *loop, int max_threads);
/* Lets go of the offload: queued and finished jobs are dropped now, a
 * running job's drop runs on its thread when work returns. */
void pgw_offload_destroy(struct pgw_offload *o);

/* 0: started on a thread; 1: queued; PGW_EAGAIN: no thread could be
 * started (the job is still the caller's, no callback will run; its error
 * holds pthread_create's errno value, for the caller's message). */
int pgw_offload_submit(struct pgw_offload *o, struct pgw_offload_job *job, pgw_offload_fn work,
                       pgw_offload_fn done, pgw_offload_fn drop);
/* Nobody wants the answer: a queued job is dropped now, a running one
 * when its work returns.  Not from the job's own done. */
void pgw_offload_cancel(struct pgw_offload_job *job);
/* Jobs started and not yet answered. */
int pgw_offload_running(const struct pgw_offload *o);

#endif
