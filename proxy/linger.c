/*
 * linger.c - lingering closes of client sockets.
 *
 * A client that pgwharf ends while it is still sending (a Bind over the
 * 64 MiB a held message may have: the FATAL 54000 goes out after its
 * first bytes) must not be closed at once: closing a socket with unread
 * input makes the kernel send a reset, and the client (libpq, writing the
 * rest of its message) then reads "server closed the connection
 * unexpectedly" where the FATAL was.  Such a socket is kept here instead,
 * what the client still sends read and dropped (a bounded amount per
 * callback and in all) until the client closes or LINGER_SECONDS pass.
 * Not shut for writing: libpq that reads the end of the stream while it
 * still sends reports "server closed the connection unexpectedly" too,
 * where with the FATAL read and the stream open it finishes its message
 * and then reports the FATAL.  Owns the descriptors it was given; at most
 * LINGER_MAX at once (past that a socket is closed at once, as before).
 * Its descriptors are client descriptors: they take free places under
 * client_cap, the oldest closed when a client comes and would find none
 * (pgw_linger_evict from the listener), so lingering never takes
 * descriptors the open-files budget keeps for servers and the reserve.
 * nginx's lingering_close does the same.  A safe shutdown waits for them
 * (at most LINGER_SECONDS), a fast one closes them.  Also here: pgw_drain,
 * which session.c's close after a queued FATAL and metrics.c read with too.
 */
#include "proxy/proxy_int.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINGER_SECONDS 5.0
#define LINGER_MAX 16
#define LINGER_PER_CB (1024 * 1024)     /* bytes dropped per callback */

struct lingering_conn {
    struct pgw_proxy *px;
    ev_io io;
    ev_timer timer;
    int fd;
    uint64_t left;                      /* bytes it may still send */
    struct pgw_list node;
};

static void linger_end(struct lingering_conn *l)
{
    ev_io_stop(l->px->loop, &l->io);
    ev_timer_stop(l->px->loop, &l->timer);
    close(l->fd);
    pgw_list_del(&l->node);
    l->px->nlingering--;
    free(l);
}

enum pgw_drain pgw_drain(int fd, pgw_read_fn rd, void *arg, size_t per_cb, uint64_t *left)
{
    char sink[16384];
    size_t this_cb = 0;
    while (this_cb < per_cb) {
        ssize_t n = rd ? rd(arg, sink, sizeof(sink)) : read(fd, sink, sizeof(sink));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return PGW_DRAIN_AGAIN;
        if (n <= 0)
            return n == 0 ? PGW_DRAIN_EOF : PGW_DRAIN_ERROR;
        if ((uint64_t)n >= *left) {
            *left = 0;
            return PGW_DRAIN_SPENT;
        }
        *left -= (uint64_t)n;
        this_cb += (size_t)n;
    }
    return PGW_DRAIN_AGAIN;
}

static void linger_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct lingering_conn *l = pgw_container_of(w, struct lingering_conn, io);
    struct pgw_proxy *px = l->px;
    if (pgw_drain(l->fd, NULL, NULL, LINGER_PER_CB, &l->left) != PGW_DRAIN_AGAIN) {
        linger_end(l);                  /* its end (or an error, or more than its message) */
        pgw_proxy_maybe_finish(px);     /* a safe shutdown waits for it */
    }
}

static void linger_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct lingering_conn *l = pgw_container_of(w, struct lingering_conn, timer);
    struct pgw_proxy *px = l->px;
    linger_end(l);
    pgw_proxy_maybe_finish(px);
}

void pgw_linger_close(struct pgw_proxy *px, int fd, uint64_t bytes)
{
    struct lingering_conn *l = px->nlingering < LINGER_MAX ? calloc(1, sizeof(*l)) : NULL;
    if (!l) {
        close(fd);
        return;
    }
    l->px = px;
    l->fd = fd;
    l->left = bytes;
    ev_io_init(&l->io, linger_read_cb, fd, EV_READ);
    ev_io_start(px->loop, &l->io);
    ev_timer_init(&l->timer, linger_timer_cb, LINGER_SECONDS, 0);
    ev_timer_start(px->loop, &l->timer);
    pgw_list_append(&px->lingering, &l->node);
    px->nlingering++;
}

bool pgw_linger_evict(struct pgw_proxy *px)
{
    if (pgw_list_empty(&px->lingering))
        return false;
    linger_end(pgw_container_of(pgw_list_first(&px->lingering), struct lingering_conn, node));
    return true;
}

void pgw_linger_deinit(struct pgw_proxy *px)
{
    while (!pgw_list_empty(&px->lingering))
        linger_end(pgw_container_of(pgw_list_first(&px->lingering), struct lingering_conn, node));
}
