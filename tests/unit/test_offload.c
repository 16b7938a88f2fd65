/*
 * test_offload.c - unit tests for common/offload.c, the jobs run off the
 * loop on detached threads: FIFO start order, the bound on threads
 * running at once, cancel (queued: dropped at once; running: answer
 * dropped), a done that cancels another answer or destroys the offload,
 * destroy while a job is blocked (its done never runs; its thread drops
 * it and frees the offload: no leak under ASan), one offload per loop.
 *
 * Jobs block in work on a gate (a condition variable) the test opens;
 * the test waits for threads with deadlines (condition variables, the
 * thread count in /proc/self/status), never for a guessed time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/offload.h"
#include "testutil.h"

#define WAIT_BOUND 10.0     /* seconds of wall time, a bound only */
#define MAX_JOBS 16

struct fx {
    struct ev_loop *loop;
    struct pgw_offload *o;  /* NULL once destroyed */
    int threads0;           /* the process's threads before the test */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* (mu): the threads' side */
    bool all_open;          /* every gate is open */
    int in_work, max_in_work;
    int started[MAX_JOBS];  /* job ids in the order their work began */
    int nstarted;
    int ndropped;           /* drops may run on a thread */
    /* the loop's */
    int done[MAX_JOBS];     /* job ids in the order done ran */
    int ndone;
    int want;               /* all_done once ndone reaches it */
    bool all_done;
};

struct job {
    struct pgw_offload_job job;
    struct fx *fx;
    int id;
    bool gated;             /* work waits for its gate */
    bool open;              /* its gate (fx->mu) */
    int error;              /* job.error as done saw it */
    /* what done does besides recording */
    struct job *cancel;     /* cancel this one, if done runs first */
    bool destroy;           /* destroy the offload */
};

static int thread_count(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Until the process is back to `extra` threads more than at the start:
 * the others have returned, so they let go of the offload (a bound). */
static void wait_threads(struct fx *fx, int extra)
{
    double end = wall_now() + WAIT_BOUND;
    while (thread_count() != fx->threads0 + extra && wall_now() < end) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_int_equal(thread_count(), fx->threads0 + extra);
}

/* Wait on fx->cv (mu held) until *v >= n, with a bound. */
static void wait_at_least(struct fx *fx, const int *v, int n)
{
    struct timespec end;
    clock_gettime(CLOCK_REALTIME, &end);
    end.tv_sec += (time_t)WAIT_BOUND;
    pthread_mutex_lock(&fx->mu);
    int rc = 0;
    while (*v < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&fx->cv, &fx->mu, &end);
    int got = *v;
    pthread_mutex_unlock(&fx->mu);
    assert_true(got >= n);
}

static void work(struct pgw_offload_job *job)
{
    struct job *j = pgw_container_of(job, struct job, job);
    struct fx *fx = j->fx;
    pthread_mutex_lock(&fx->mu);
    fx->started[fx->nstarted++] = j->id;
    if (++fx->in_work > fx->max_in_work)
        fx->max_in_work = fx->in_work;
    pthread_cond_broadcast(&fx->cv);
    while (j->gated && !j->open && !fx->all_open)
        pthread_cond_wait(&fx->cv, &fx->mu);
    fx->in_work--;
    pthread_mutex_unlock(&fx->mu);
}

static void done(struct pgw_offload_job *job)
{
    struct job *j = pgw_container_of(job, struct job, job);
    struct fx *fx = j->fx;
    j->error = job->error;
    fx->done[fx->ndone++] = j->id;
    if (j->cancel && fx->ndone == 1)
        pgw_offload_cancel(&j->cancel->job);
    if (j->destroy) {
        pgw_offload_destroy(fx->o);
        fx->o = NULL;
    }
    fx->all_done = fx->ndone >= fx->want;
    free(j);
}

static void drop(struct pgw_offload_job *job)
{
    struct job *j = pgw_container_of(job, struct job, job);
    struct fx *fx = j->fx;
    free(j);
    pthread_mutex_lock(&fx->mu);
    fx->ndropped++;
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
}

static struct job *submit(struct fx *fx, int id, bool gated, int want_rc)
{
    struct job *j = calloc(1, sizeof(*j));
    assert_non_null(j);
    j->fx = fx;
    j->id = id;
    j->gated = gated;
    assert_int_equal(pgw_offload_submit(fx->o, &j->job, work, done, drop), want_rc);
    return j;
}

static void release(struct fx *fx, struct job *j)
{
    pthread_mutex_lock(&fx->mu);
    j->open = true;
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
}

static void release_all(struct fx *fx)
{
    pthread_mutex_lock(&fx->mu);
    fx->all_open = true;
    pthread_cond_broadcast(&fx->cv);
    pthread_mutex_unlock(&fx->mu);
}

static int locked_int(struct fx *fx, const int *v)
{
    pthread_mutex_lock(&fx->mu);
    int n = *v;
    pthread_mutex_unlock(&fx->mu);
    return n;
}

/* Run the loop until `want` done callbacks in all have run. */
static void run_until_done(struct fx *fx, int want)
{
    fx->want = want;
    fx->all_done = fx->ndone >= want;
    assert_true(pgw_test_run_until(fx->loop, &fx->all_done, WAIT_BOUND));
}

static int setup_max(void **state, int max_threads)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->threads0 = thread_count();
    fx->loop = ev_loop_new(EVFLAG_AUTO);
    pthread_mutex_init(&fx->mu, NULL);
    pthread_cond_init(&fx->cv, NULL);
    fx->o = pgw_offload_create(fx->loop, max_threads);
    assert_non_null(fx->o);
    *state = fx;
    return 0;
}

static int setup_1(void **state) { return setup_max(state, 1); }
static int setup_2(void **state) { return setup_max(state, 2); }
static int setup_3(void **state) { return setup_max(state, 3); }
static int setup_unbounded(void **state) { return setup_max(state, 0); }

/* Every thread gone (so the offload freed by the last of them), the
 * loop without a watcher left. */
static int teardown(void **state)
{
    struct fx *fx = *state;
    release_all(fx);
    pgw_offload_destroy(fx->o);
    wait_threads(fx, 0);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);    /* nothing keeps it alive */
    ev_loop_destroy(fx->loop);
    pthread_cond_destroy(&fx->cv);
    pthread_mutex_destroy(&fx->mu);
    free(fx);
    return 0;
}

/* One thread: jobs run one after the other, in submission order, and
 * are answered in that order. */
static void t_fifo_one_thread(void **state)
{
    struct fx *fx = *state;
    submit(fx, 0, true, 0);
    for (int i = 1; i < 5; i++)
        submit(fx, i, false, 1);
    wait_at_least(fx, &fx->in_work, 1);
    assert_int_equal(pgw_offload_running(fx->o), 1);
    assert_int_equal(locked_int(fx, &fx->nstarted), 1);
    release_all(fx);
    run_until_done(fx, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fx->started[i], i);
        assert_int_equal(fx->done[i], i);
    }
    assert_int_equal(fx->max_in_work, 1);
    assert_int_equal(fx->ndropped, 0);
    assert_int_equal(pgw_offload_running(fx->o), 0);
}

/* Two threads: the queued jobs take the room of answered ones in
 * submission order, whichever running job finishes first. */
static void t_fifo_queue_order(void **state)
{
    struct fx *fx = *state;
    struct job *j[5];
    for (int i = 0; i < 5; i++)
        j[i] = submit(fx, i, true, i < 2 ? 0 : 1);
    wait_at_least(fx, &fx->in_work, 2);
    /* the second finishes first: the oldest queued takes its room */
    int next = 2;
    for (int k = 1; k >= 0; k--, next++) {
        release(fx, j[k]);
        run_until_done(fx, 2 - k);
        assert_int_equal(fx->done[1 - k], k);
        wait_at_least(fx, &fx->nstarted, next + 1);
        assert_int_equal(locked_int(fx, &fx->nstarted), next + 1);
        assert_int_equal(fx->started[next], next);
        assert_int_equal(pgw_offload_running(fx->o), 2);
    }
    release_all(fx);
    run_until_done(fx, 5);
    assert_int_equal(fx->max_in_work, 2);
}

/* At most max_threads run at once; the rest wait for the loop to start
 * them (nothing else does, so the count is exact while it does not run). */
static void t_max_threads(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < 3; i++)
        submit(fx, i, true, 0);
    for (int i = 3; i < 8; i++)
        submit(fx, i, true, 1);
    wait_at_least(fx, &fx->in_work, 3);
    wait_threads(fx, 3);
    assert_int_equal(locked_int(fx, &fx->nstarted), 3);
    assert_int_equal(pgw_offload_running(fx->o), 3);
    release_all(fx);
    run_until_done(fx, 8);
    assert_int_equal(fx->max_in_work, 3);
    assert_int_equal(fx->nstarted, 8);
}

/* No limit: every job has its thread at once. */
static void t_unbounded(void **state)
{
    struct fx *fx = *state;
    for (int i = 0; i < 6; i++)
        submit(fx, i, true, 0);
    wait_at_least(fx, &fx->in_work, 6);
    assert_int_equal(pgw_offload_running(fx->o), 6);
    release_all(fx);
    run_until_done(fx, 6);
}

/* A cancelled queued job is dropped at once, a cancelled running one
 * when its work returns; neither gets its done. */
static void t_cancel(void **state)
{
    struct fx *fx = *state;
    struct job *a = submit(fx, 0, true, 0);
    struct job *b = submit(fx, 1, false, 1);
    submit(fx, 2, false, 1);
    wait_at_least(fx, &fx->in_work, 1);
    pgw_offload_cancel(&b->job);
    assert_int_equal(locked_int(fx, &fx->ndropped), 1);
    pgw_offload_cancel(&a->job);
    assert_int_equal(locked_int(fx, &fx->ndropped), 1);
    release(fx, a);
    run_until_done(fx, 1);
    assert_int_equal(fx->done[0], 2);
    assert_int_equal(locked_int(fx, &fx->ndropped), 2);
    assert_int_equal(locked_int(fx, &fx->nstarted), 2);     /* a and c; b never ran */
}

/* A done that cancels another answer already back: that one is dropped. */
static void t_done_cancels_another(void **state)
{
    struct fx *fx = *state;
    struct job *a = submit(fx, 0, false, 0);
    struct job *b = submit(fx, 1, false, 0);
    a->cancel = b;
    b->cancel = a;
    wait_at_least(fx, &fx->nstarted, 2);
    wait_threads(fx, 0);                        /* both answers are back */
    run_until_done(fx, 1);                      /* one callback hands out both */
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(locked_int(fx, &fx->ndropped), 1);
}

/* A done that destroys the offload: the other answer is dropped, a job
 * still running is dropped on its thread, and the last thread frees it. */
static void t_done_destroys(void **state)
{
    struct fx *fx = *state;
    submit(fx, 0, true, 0);
    struct job *a = submit(fx, 1, false, 0);
    struct job *b = submit(fx, 2, false, 0);
    a->destroy = b->destroy = true;
    wait_at_least(fx, &fx->nstarted, 3);
    wait_threads(fx, 1);                        /* only the gated one runs */
    run_until_done(fx, 1);                      /* one callback hands out both */
    assert_null(fx->o);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(locked_int(fx, &fx->ndropped), 1);
    release_all(fx);
    wait_at_least(fx, &fx->ndropped, 2);
    wait_threads(fx, 0);
    assert_int_equal(fx->ndone, 1);
}

/* Destroyed while a job is blocked and another waits for a thread: the
 * queued one is dropped at once, the blocked one by its thread once
 * released, which frees the offload last; no done runs after destroy. */
static void t_destroy_while_blocked(void **state)
{
    struct fx *fx = *state;
    submit(fx, 0, true, 0);
    submit(fx, 1, false, 1);
    wait_at_least(fx, &fx->in_work, 1);
    pgw_offload_destroy(fx->o);
    fx->o = NULL;
    assert_int_equal(locked_int(fx, &fx->ndropped), 1);
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);    /* nothing keeps it alive */
    release_all(fx);
    wait_at_least(fx, &fx->ndropped, 2);
    wait_threads(fx, 0);
    ev_run(fx->loop, EVRUN_NOWAIT);
    assert_int_equal(fx->ndone, 0);
    assert_int_equal(fx->nstarted, 1);
}

/* Destroyed with answers back but not yet handed out: they are dropped. */
static void t_destroy_with_answers_waiting(void **state)
{
    struct fx *fx = *state;
    submit(fx, 0, false, 0);
    submit(fx, 1, false, 0);
    wait_at_least(fx, &fx->nstarted, 2);
    wait_threads(fx, 0);
    pgw_offload_destroy(fx->o);
    fx->o = NULL;
    assert_int_equal(locked_int(fx, &fx->ndropped), 2);
    ev_run(fx->loop, EVRUN_NOWAIT);
    assert_int_equal(fx->ndone, 0);
}

/* The async does not keep the loop alive, and no done runs inside submit. */
static void t_loop_not_kept_alive(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(ev_run(fx->loop, EVRUN_NOWAIT), 0);    /* nothing keeps it alive */
    submit(fx, 0, false, 0);
    assert_int_equal(fx->ndone, 0);
    run_until_done(fx, 1);
}

/* One offload per loop: each answer comes back on its own loop. */
static void t_two_loops(void **state)
{
    struct fx *fx = *state;
    struct fx other = { .threads0 = fx->threads0 };
    pthread_mutex_init(&other.mu, NULL);
    pthread_cond_init(&other.cv, NULL);
    other.loop = ev_loop_new(EVFLAG_AUTO);
    other.o = pgw_offload_create(other.loop, 1);
    assert_non_null(other.o);
    submit(fx, 0, false, 0);
    submit(&other, 1, false, 0);
    wait_at_least(&other, &other.nstarted, 1);
    wait_at_least(fx, &fx->nstarted, 1);
    wait_threads(fx, 0);
    ev_run(fx->loop, EVRUN_NOWAIT);
    assert_int_equal(fx->ndone, 1);
    assert_int_equal(fx->done[0], 0);
    assert_int_equal(other.ndone, 0);
    run_until_done(&other, 1);
    assert_int_equal(other.done[0], 1);
    assert_int_equal(fx->ndone, 1);
    pgw_offload_destroy(other.o);
    ev_loop_destroy(other.loop);
    pthread_cond_destroy(&other.cv);
    pthread_mutex_destroy(&other.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_fifo_one_thread, setup_1, teardown),
        cmocka_unit_test_setup_teardown(t_fifo_queue_order, setup_2, teardown),
        cmocka_unit_test_setup_teardown(t_max_threads, setup_3, teardown),
        cmocka_unit_test_setup_teardown(t_unbounded, setup_unbounded, teardown),
        cmocka_unit_test_setup_teardown(t_cancel, setup_1, teardown),
        cmocka_unit_test_setup_teardown(t_done_cancels_another, setup_unbounded, teardown),
        cmocka_unit_test_setup_teardown(t_done_destroys, setup_unbounded, teardown),
        cmocka_unit_test_setup_teardown(t_destroy_while_blocked, setup_1, teardown),
        cmocka_unit_test_setup_teardown(t_destroy_with_answers_waiting, setup_unbounded,
                                        teardown),
        cmocka_unit_test_setup_teardown(t_loop_not_kept_alive, setup_unbounded, teardown),
        cmocka_unit_test_setup_teardown(t_two_loops, setup_unbounded, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
