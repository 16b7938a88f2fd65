/*
 * batch.c - the relay's writes of one loop iteration, sent together.
 *
 * Relaying a message costs a wake-up of the peer that reads it.  On a busy
 * loop, writing at once means that the first write wakes a peer onto this
 * CPU, the scheduler switches to it, and the rest of the iteration's events
 * wait for the proxy to be scheduled again: one involuntary context switch
 * per relayed message, paid by everybody's latency.
 *
 * With io_batch on (the default), the relay's writes (server bytes to the
 * client, client bytes to the server, proxy-made messages) are not made
 * where the bytes arrive: the session is put on this loop's list, and the
 * prepare watcher, which runs after every callback of the iteration and
 * before the loop polls again, sends them all with one io_uring_enter(2)
 * (sends with MSG_DONTWAIT complete inside it, so no buffer stays in the
 * kernel's hands after it returns); a round that holds a single write uses
 * send(2), the cheaper call.  A short or refused send falls back to the
 * ordinary flush, which arms the write watcher.  Where io_uring is missing
 * (old kernel, a seccomp profile that forbids it, built without liburing)
 * io_batch stays off with a warning:
 * deferring plain send(2)s buys nothing measurable.
 *
 * The list is open from the check watcher (right after polling) to the end
 * of the prepare watcher; a write asked for while it is closed (from a
 * callback the prepare phase itself set off) is made at once, so nothing
 * can wait across a blocking poll.  TLS sessions and links always write at
 * once.  State is per loop (struct pgw_batch in struct pgw_proxy).
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#ifdef PGW_HAVE_LIBURING
#include <liburing.h>
#endif

#define BATCH_RING_ENTRIES 256

enum { WANT_CLIENT = 1, WANT_SERVER = 2 };

struct pgw_batch {
    struct pgw_proxy *px;
    bool on;                          /* watchers running, writes deferred */
    bool open;                        /* between the check and the prepare */
    struct pgw_list pending;          /* sessions, through batch_node */
    ev_check opener;
    ev_prepare flusher;
    bool ring_tried, ring_ok;
    uint64_t batches, sends;          /* flush rounds, deferred writes made */
#ifdef PGW_HAVE_LIBURING
    struct io_uring ring;
#endif
};

/* The bytes a direction has scanned and not sent; false when none or the
 * direction cannot be batched now. */
static bool client_span(struct pgw_session *s, int *fd, const uint8_t **p, size_t *n)
{
    struct pgw_iobuf *b = s->sbuf;
    if (!b || s->ssl || s->fd < 0 || b->sent >= pgw_iobuf_out_end(b))
        return false;
    *fd = s->fd;
    *p = b->data + b->sent;
    *n = pgw_iobuf_out_end(b) - b->sent;
    return true;
}

static bool server_span(struct pgw_session *s, int *fd, const uint8_t **p, size_t *n)
{
    struct pgw_iobuf *b = s->cbuf;
    struct pgw_server *srv = s->server;
    if (!b || !srv || srv->ssl || b->sent >= b->parsed)
        return false;
    *fd = srv->fd;
    *p = b->data + b->sent;
    *n = b->parsed - b->sent;
    return *fd >= 0;
}

/* Account for what the batched sends did (res: bytes sent, or -1 for "not
 * sent"), before anything else runs: a flush of one direction can close
 * the session, or write the other direction itself (the FATAL of a failed
 * server send goes out behind what the client is owed), and it must start
 * from the byte after the last one the kernel took. */
static void account(struct pgw_session *s, unsigned want, ssize_t cres, ssize_t sres)
{
    if ((want & WANT_SERVER) && sres > 0 && s->cbuf)
        s->cbuf->sent += (uint32_t)sres;
    if ((want & WANT_CLIENT) && cres > 0 && s->sbuf) {
        s->sbuf->sent += (uint32_t)cres;
        s->bytes_out += (uint64_t)cres;
    }
}

static ssize_t send_now(int fd, const uint8_t *p, size_t n)
{
    ssize_t w;
    do {
        w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    return w;
}

/* Let the ordinary flush finish the job of both directions, their sends
 * accounted for already: the rest of a short send, the watcher after
 * EAGAIN, an error, and everything a completed flush does next. */
static void finish(struct pgw_session *s, unsigned want)
{
    if (want & WANT_SERVER) {
        pgw_relay_flush_server(s);
        if (s->state == PGW_SS_CLOSING)
            return;
    }
    if (want & WANT_CLIENT)
        pgw_session_flush_client(s);
}

/* The first session on the list, with send(2)s. */
static void flush_one(struct pgw_batch *bt)
{
    struct pgw_session *s = pgw_container_of(bt->pending.next, struct pgw_session, batch_node);
    unsigned want = s->batch_want;
    pgw_list_del(&s->batch_node);
    s->batch_want = 0;
    int fd;
    const uint8_t *p;
    size_t n;
    ssize_t sres = -1, cres = -1;
    if ((want & WANT_SERVER) && server_span(s, &fd, &p, &n)) {
        sres = send_now(fd, p, n);
        bt->sends++;
    }
    if ((want & WANT_CLIENT) && client_span(s, &fd, &p, &n)) {
        cres = send_now(fd, p, n);
        bt->sends++;
    }
    account(s, want, cres, sres);
    finish(s, want);
}

/* All of it with send(2)s: a batch of one, what is left when the ring
 * fails, or io_batch turned off. */
static void flush_plain(struct pgw_batch *bt)
{
    while (!pgw_list_empty(&bt->pending))
        flush_one(bt);
}

#ifdef PGW_HAVE_LIBURING
/* The ring is not to be used again: SQEs a failed submit left in it would
 * go out with the next io_uring_enter(2), long after their bytes were sent
 * some other way. */
static void ring_retire(struct pgw_batch *bt)
{
    if (bt->ring_ok) {
        io_uring_queue_exit(&bt->ring);
        bt->ring_ok = false;
    }
}

#define RES_UNKNOWN ((ssize_t)-2)  /* submitted, completion not seen yet */

/* One io_uring_enter(2) for up to BATCH_RING_ENTRIES sends.  Returns false
 * when the ring failed; the ring is then retired and the caller goes on with
 * plain sends.  A send the kernel took is never made twice: sessions with
 * nothing submitted go back on the list; a submitted send whose completion
 * cannot be had (a wait that fails other than by EINTR, which does not
 * happen with MSG_DONTWAIT sends) closes its session, as its bytes may or
 * may not have gone out. */
static bool flush_ring(struct pgw_batch *bt)
{
    struct pgw_session *taken[BATCH_RING_ENTRIES / 2];
    ssize_t cres[BATCH_RING_ENTRIES / 2], sres[BATCH_RING_ENTRIES / 2];
    unsigned want[BATCH_RING_ENTRIES / 2];
    uint64_t order[BATCH_RING_ENTRIES];  /* SQE user data, in submission order */
    unsigned nsess = 0, nsqe = 0;

    while (!pgw_list_empty(&bt->pending) && nsess < BATCH_RING_ENTRIES / 2) {
        struct pgw_session *s = pgw_container_of(bt->pending.next, struct pgw_session, batch_node);
        pgw_list_del(&s->batch_node);
        want[nsess] = s->batch_want;
        s->batch_want = 0;
        cres[nsess] = sres[nsess] = -1;
        taken[nsess] = s;
        int fd;
        const uint8_t *p;
        size_t n;
        for (unsigned dir = 0; dir < 2; dir++) {
            bool ok = dir == 0 ? (want[nsess] & WANT_SERVER) && server_span(s, &fd, &p, &n)
                               : (want[nsess] & WANT_CLIENT) && client_span(s, &fd, &p, &n);
            if (!ok)
                continue;
            struct io_uring_sqe *sqe = io_uring_get_sqe(&bt->ring);
            if (!sqe) {            /* cannot happen: the ring was empty */
                nsess++;
                goto unsent;
            }
            io_uring_prep_send(sqe, fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            order[nsqe] = (uint64_t)nsess << 1 | dir;
            io_uring_sqe_set_data64(sqe, order[nsqe]);
            nsqe++;
        }
        nsess++;
    }

    unsigned submitted = 0;
    bool lost = false;
    while (submitted < nsqe) {
        int rc = io_uring_submit(&bt->ring);
        if (rc == -EINTR)
            continue;
        if (rc <= 0)
            break;
        submitted += (unsigned)rc;
    }
    if (nsqe > 0 && submitted == 0)
        goto unsent;
    bt->sends += submitted;
    /* The kernel takes SQEs in order: the first `submitted` went in. */
    for (unsigned k = 0; k < submitted; k++) {
        unsigned i = (unsigned)(order[k] >> 1);
        *(order[k] & 1 ? &cres[i] : &sres[i]) = RES_UNKNOWN;
    }
    /* MSG_DONTWAIT sends finish inside the submit; should one have been
     * queued in the kernel all the same, wait for it: its buffer is ours. */
    unsigned seen = 0;
    while (seen < submitted) {
        struct io_uring_cqe *cqe;
        unsigned head, got = 0;
        io_uring_for_each_cqe(&bt->ring, head, cqe) {
            uint64_t d = io_uring_cqe_get_data64(cqe);
            unsigned i = (unsigned)(d >> 1);
            if (i < nsess) {
                ssize_t r = cqe->res >= 0 ? cqe->res : -1;
                *(d & 1 ? &cres[i] : &sres[i]) = r;
            }
            got++;
        }
        io_uring_cq_advance(&bt->ring, got);
        seen += got;
        if (seen < submitted) {
            int rc = io_uring_wait_cqe(&bt->ring, &cqe);
            if (rc < 0 && rc != -EINTR) {
                lost = true;
                break;
            }
        }
    }
    if (submitted < nsqe || lost) {
        pgw_warn("io_batch", "reason=\"io_uring %s: writing at once from now on\"",
                 lost ? "completion wait failed" : "submit failed");
        ring_retire(bt);
    }
    /* Every session's sends are accounted for before any flush runs: a
     * finish() can write another session of this batch (a close sends its
     * FATAL behind what its client is owed) or close it (it stays
     * allocated until the reaper runs next iteration: skipped below). */
    for (unsigned i = 0; i < nsess; i++)
        account(taken[i], want[i], cres[i], sres[i]);
    for (unsigned i = 0; i < nsess; i++) {
        if (taken[i]->state == PGW_SS_CLOSING)
            continue;
        if (cres[i] == RES_UNKNOWN || sres[i] == RES_UNKNOWN)
            pgw_session_close(taken[i], "08006", "lost track of a batched write");
        else
            finish(taken[i], want[i]);
    }
    return bt->ring_ok;
unsent:
    /* Nothing was sent: put the sessions back for the plain pass. */
    pgw_warn("io_batch", "reason=\"io_uring submit failed: writing at once from now on\"");
    ring_retire(bt);
    for (unsigned i = 0; i < nsess; i++) {
        if (taken[i]->state != PGW_SS_CLOSING && !taken[i]->batch_want)
            pgw_list_append(&bt->pending, &taken[i]->batch_node);
        taken[i]->batch_want |= want[i];
    }
    return false;
}
#endif

/* Exactly one session with one direction pending. */
static bool single(const struct pgw_batch *bt)
{
    const struct pgw_list *first = bt->pending.next;
    if (first->next != &bt->pending)
        return false;
    const struct pgw_session *s = pgw_container_of(first, struct pgw_session, batch_node);
    return s->batch_want == WANT_CLIENT || s->batch_want == WANT_SERVER;
}

static void opener_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    struct pgw_batch *bt = pgw_container_of(w, struct pgw_batch, opener);
    bt->open = true;
}

static void stop(struct pgw_batch *bt)
{
    struct ev_loop *loop = bt->px->loop;
    flush_plain(bt);
    ev_ref(loop);
    ev_ref(loop);
    ev_check_stop(loop, &bt->opener);
    ev_prepare_stop(loop, &bt->flusher);
    bt->on = bt->open = false;
}

static void flusher_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct pgw_batch *bt = pgw_container_of(w, struct pgw_batch, flusher);
    /* finish() may queue more (a flush that resumes reading): go on until
     * the list stays empty, then close it for the rest of this iteration. */
    while (!pgw_list_empty(&bt->pending)) {
        bt->batches++;
        if (single(bt)) {
            /* One send: send(2) is the cheaper syscall, and there is no
             * second wake-up for the first to get in the way of. */
            flush_one(bt);
            continue;
        }
#ifdef PGW_HAVE_LIBURING
        if (flush_ring(bt))
            continue;
#endif
        stop(bt);
        return;
    }
    bt->open = false;
}

/* Set up the ring the first time io_batch is on; false when there is none. */
static bool ring_ready(struct pgw_batch *bt)
{
    if (bt->ring_tried)
        return bt->ring_ok;
    bt->ring_tried = true;
#ifdef PGW_HAVE_LIBURING
    /* One thread (this loop's) submits; nothing here needs task work to
     * interrupt it.  Kernels before 6.0 refuse these flags: then plain. */
    int rc = io_uring_queue_init(BATCH_RING_ENTRIES, &bt->ring,
                                 IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(BATCH_RING_ENTRIES, &bt->ring, 0);
    if (rc == 0) {
        bt->ring_ok = true;
        return true;
    }
    pgw_warn("io_batch", "reason=\"io_uring unavailable (%s): writing at once\"", strerror(-rc));
#else
    pgw_warn("io_batch", "reason=\"built without liburing: writing at once\"");
#endif
    return false;
}

void pgw_batch_configure(struct pgw_proxy *px)
{
    struct pgw_batch *bt = px->batch;
    if (!bt)
        return;
    bool want = px->cfg->io_batch;
    if (want && !bt->on && ring_ready(bt)) {
        ev_check_start(px->loop, &bt->opener);
        ev_prepare_start(px->loop, &bt->flusher);
        ev_unref(px->loop);          /* neither keeps the loop alive */
        ev_unref(px->loop);
        bt->on = true;
    } else if (!want && bt->on) {
        stop(bt);
    }
}

int pgw_batch_init(struct pgw_proxy *px)
{
    struct pgw_batch *bt = calloc(1, sizeof(*bt));
    if (!bt)
        return PGW_ENOMEM;
    bt->px = px;
    pgw_list_init(&bt->pending);
    ev_check_init(&bt->opener, opener_cb);
    ev_prepare_init(&bt->flusher, flusher_cb);
    px->batch = bt;
    pgw_batch_configure(px);
    return 0;
}

void pgw_batch_get_stats(const struct pgw_proxy *px, struct pgw_batch_stats *st)
{
    const struct pgw_batch *bt = px->batch;
    st->on = bt && bt->on;
    st->batches = bt ? bt->batches : 0;
    st->sends = bt ? bt->sends : 0;
}

void pgw_batch_free(struct pgw_proxy *px)
{
    struct pgw_batch *bt = px->batch;
    if (!bt)
        return;
    if (bt->on)
        stop(bt);
#ifdef PGW_HAVE_LIBURING
    if (bt->ring_ok)
        io_uring_queue_exit(&bt->ring);
#endif
    free(bt);
    px->batch = NULL;
}

static void later(struct pgw_session *s, unsigned want)
{
    struct pgw_batch *bt = s->px->batch;
    if (!s->batch_want)
        pgw_list_append(&bt->pending, &s->batch_node);
    s->batch_want |= want;
}

static bool can_wait(const struct pgw_session *s)
{
    const struct pgw_batch *bt = s->px->batch;
    return bt && bt->open;
}

void pgw_batch_flush_client(struct pgw_session *s)
{
    if (can_wait(s) && !s->ssl && !s->cli_write_blocked)
        later(s, WANT_CLIENT);
    else
        pgw_session_flush_client(s);
}

void pgw_batch_flush_server(struct pgw_session *s)
{
    if (can_wait(s) && s->server && !s->server->ssl && !s->srv_write_blocked)
        later(s, WANT_SERVER);
    else
        pgw_relay_flush_server(s);
}

void pgw_batch_forget(struct pgw_session *s)
{
    if (s->batch_want) {
        pgw_list_del(&s->batch_node);
        s->batch_want = 0;
    }
}
