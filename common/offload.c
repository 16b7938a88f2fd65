/*
 * offload.c - blocking jobs on detached threads, answered on the loop
 * (see offload.h for the contract).
 *
 * Who touches what.  Under mu: refs, open and the done list, shared with
 * the threads.  The loop's alone: the queue, the taken list (answers
 * being handed out), running, closed, and each job's queued and cancelled
 * flags.  A job belongs to its thread from its start until the thread
 * puts it on the done list and wakes the loop (or, closed, drops it),
 * then to the loop.
 *
 * The answers are handed out from a list in the offload, not on the
 * stack, so that a done callback may destroy the offload: destroy then
 * drops what is left there, and the dispatch, holding a reference of its
 * own, stops.
 */
#include "common/offload.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "common/err.h"

struct pgw_offload {
    pthread_mutex_t mu;
    int refs;                   /* the owner, each thread not finished, a
                                 * dispatch under way (mu) */
    bool open;                  /* the loop is there to be woken (mu) */
    struct pgw_list done;       /* finished jobs (mu) */
    struct ev_loop *loop;
    ev_async async;
    /* the loop's side */
    bool closed;                /* pgw_offload_destroy was called */
    int max_threads;            /* <= 0: no limit */
    int running;                /* started, answer not yet taken */
    struct pgw_list queue;      /* waiting for a thread, oldest first */
    struct pgw_list taken;      /* answers being handed out */
};

static void hub_ref(struct pgw_offload *o)
{
    pthread_mutex_lock(&o->mu);
    o->refs++;
    pthread_mutex_unlock(&o->mu);
}

static void hub_unref(struct pgw_offload *o)
{
    pthread_mutex_lock(&o->mu);
    bool last = --o->refs == 0;
    pthread_mutex_unlock(&o->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&o->mu);
    free(o);
}

static void *job_thread(void *arg)
{
    struct pgw_offload_job *job = arg;
    struct pgw_offload *o = job->hub;
    job->work(job);
    pthread_mutex_lock(&o->mu);
    bool open = o->open;
    if (open) {
        pgw_list_append(&o->done, &job->node);
        ev_async_send(o->loop, &o->async);
    }
    pthread_mutex_unlock(&o->mu);
    if (!open)                  /* destroyed meanwhile: nobody to tell */
        job->drop(job);
    hub_unref(o);
    return NULL;
}

/* job's thread; an errno value when none could be started (job is still
 * the loop's). */
static int thread_start(struct pgw_offload *o, struct pgw_offload_job *job)
{
    pthread_attr_t attr;
    pthread_t t;
    int rc = pthread_attr_init(&attr);
    if (rc != 0)
        return rc;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    hub_ref(o);                 /* the thread's */
    /* Signals are the loop's: the thread starts with them all blocked, so
     * none is delivered to it (one would run no watcher there, and once
     * the loop stops them, end the process: proxy/main.c). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&t, &attr, job_thread, job);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        hub_unref(o);
        return rc;
    }
    o->running++;
    return 0;
}

static bool room(const struct pgw_offload *o)
{
    return o->max_threads <= 0 || o->running < o->max_threads;
}

/* Start queued jobs while there is room.  One whose thread cannot be
 * started gets its done with the error (which may cancel others: they
 * leave the queue, read from its head each time, or destroy o). */
static void queue_run(struct pgw_offload *o)
{
    struct pgw_list *n;
    while (!o->closed && room(o) && (n = pgw_list_first(&o->queue))) {
        pgw_list_del(n);
        struct pgw_offload_job *job = pgw_container_of(n, struct pgw_offload_job, node);
        job->queued = false;
        int rc = thread_start(o, job);
        if (rc == 0)
            continue;
        job->error = rc;
        job->done(job);
    }
}

/* Move the finished jobs to `taken` (their threads are done with them). */
static void take_done(struct pgw_offload *o)
{
    struct pgw_list *n;
    pthread_mutex_lock(&o->mu);
    while ((n = pgw_list_first(&o->done))) {
        pgw_list_del(n);
        pgw_list_append(&o->taken, n);
        o->running--;
    }
    pthread_mutex_unlock(&o->mu);
}

/* Hand out the answers.  A done may cancel jobs still on `taken` (they are
 * then dropped here, in turn) or destroy o (which drops the rest). */
static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct pgw_offload *o = pgw_container_of(w, struct pgw_offload, async);
    hub_ref(o);                 /* the dispatch's */
    take_done(o);
    struct pgw_list *n;
    while (!o->closed && (n = pgw_list_first(&o->taken))) {
        pgw_list_del(n);
        struct pgw_offload_job *job = pgw_container_of(n, struct pgw_offload_job, node);
        if (job->cancelled)
            job->drop(job);
        else
            job->done(job);
    }
    queue_run(o);
    hub_unref(o);
}

struct pgw_offload *pgw_offload_create(struct ev_loop *loop, int max_threads)
{
    struct pgw_offload *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    if (pthread_mutex_init(&o->mu, NULL) != 0) {
        free(o);
        return NULL;
    }
    o->refs = 1;
    o->open = true;
    o->loop = loop;
    o->max_threads = max_threads;
    pgw_list_init(&o->done);
    pgw_list_init(&o->queue);
    pgw_list_init(&o->taken);
    ev_async_init(&o->async, async_cb);
    ev_async_start(loop, &o->async);
    ev_unref(loop);             /* does not keep the loop alive */
    return o;
}

void pgw_offload_destroy(struct pgw_offload *o)
{
    if (!o)
        return;
    o->closed = true;
    pthread_mutex_lock(&o->mu);
    o->open = false;
    pthread_mutex_unlock(&o->mu);
    take_done(o);               /* no thread adds to done any more */
    ev_ref(o->loop);
    ev_async_stop(o->loop, &o->async);
    struct pgw_list *n;
    while ((n = pgw_list_first(&o->taken)) || (n = pgw_list_first(&o->queue))) {
        pgw_list_del(n);
        struct pgw_offload_job *job = pgw_container_of(n, struct pgw_offload_job, node);
        job->drop(job);
    }
    hub_unref(o);
}

int pgw_offload_submit(struct pgw_offload *o, struct pgw_offload_job *job, pgw_offload_fn work,
                       pgw_offload_fn done, pgw_offload_fn drop)
{
    *job = (struct pgw_offload_job){ .hub = o, .work = work, .done = done, .drop = drop };
    pgw_list_init(&job->node);
    if (!room(o) || !pgw_list_empty(&o->queue)) {
        job->queued = true;     /* an answered job starts it */
        pgw_list_append(&o->queue, &job->node);
        return 1;
    }
    int rc = thread_start(o, job);
    if (rc == 0)
        return 0;               /* (the job is its thread's now: not touched) */
    job->error = rc;
    return PGW_EAGAIN;
}

void pgw_offload_cancel(struct pgw_offload_job *job)
{
    if (!job->queued) {
        job->cancelled = true;  /* its thread's answer is dropped */
        return;
    }
    pgw_list_del(&job->node);   /* no thread has it: gone now */
    job->drop(job);
}

int pgw_offload_running(const struct pgw_offload *o)
{
    return o->running;
}
