/*
 * metrics.c - the Prometheus endpoint: GET /metrics on metrics_addr:
 * metrics_port (0 = off) answers with the text exposition format 0.0.4.
 *
 * A tiny HTTP/1.0 server on the proxy's loop: non-blocking sockets, a
 * request of at most METRICS_REQ_MAX bytes, at most METRICS_MAX_CONNS
 * connections (at the cap the oldest one still waiting for its request
 * makes room), METRICS_TIMEOUT seconds per connection, one response per
 * connection (then a lingering close that reads a bounded amount per
 * callback).  The body is built from live data (it is small) and written
 * as the socket takes it, so a slow scraper holds only its own connection.
 *
 * Also here: the two histograms (acquire wait, transaction duration) and the
 * hooks the relay calls to feed them.  The pool gauges come from
 * pgw_admin_pool_rows and the totals from pgw_stats_rows, as SHOW POOLS and
 * SHOW STATS do, so the console and the endpoint agree.
 */
#include "proxy/admin_int.h"
#include "proxy/prepared.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"

#define METRICS_REQ_MAX 8192
#define METRICS_MAX_CONNS 32
#define METRICS_TIMEOUT 10.0
#define METRICS_LINGER 2.0
#define METRICS_ACCEPTS_PER_CB 16
#define METRICS_DRAIN_PER_CB (64 * 1024)      /* lingering: bytes read per callback */
#define METRICS_DRAIN_MAX (1024 * 1024)       /* ... and in all, then close */
/* A scrape within this many times the last render's cost of its end waits
 * for the next render, made when that time is up, with every other scrape
 * that came meanwhile: rendering (a millisecond with hundreds of pools,
 * tens with thousands) takes at most about a fifth of the loop however fast
 * peers ask, and no scrape is answered with numbers older than its request
 * (a cheap render, a few microseconds, holds one for as long).  Renders
 * made for every request let a 1 ms render asked for in a loop take most of
 * the loop; serving the last render again answered a scrape made right
 * after a change with the numbers from before it. */
#define METRICS_RENDER_SPACING 4.0
/* ... but never for longer than this (a render of seconds, or a clock
 * read that failed, must not outlast the connection's METRICS_TIMEOUT). */
#define METRICS_HOLD_MAX 1.0

/* ---- histograms ---- */

static const double wait_bounds[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
};
static const double xact_bounds[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
};
#define NWAIT (sizeof(wait_bounds) / sizeof(wait_bounds[0]))
#define NXACT (sizeof(xact_bounds) / sizeof(xact_bounds[0]))

struct hist {
    const double *bounds;
    size_t n;
    uint64_t *buckets;       /* n + 1: the last is +Inf; not cumulative */
    uint64_t count;
    double sum;
};

static void hist_observe(struct hist *h, double v)
{
    if (v < 0)
        v = 0;
    size_t i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += v;
}

/* ---- the server ---- */

/* CONN_HELD: its request read, it waits for the next render. */
enum conn_phase { CONN_READ, CONN_HELD, CONN_WRITE, CONN_LINGER };

struct mconn {
    struct pgw_metrics *m;
    struct pgw_list node;
    int fd;
    enum conn_phase phase;
    ev_io io;
    ev_timer timer;
    size_t rlen, sent;
    uint64_t drain_left;     /* bytes it may still send after its request */
    bool head;               /* the request is a HEAD */
    bool peer_done;          /* held, and the peer ended its stream */
    struct pgw_wbuf out;
    char req[METRICS_REQ_MAX];
};

struct pgw_metrics {
    struct pgw_proxy *px;
    int lfd;
    ev_io lio;
    ev_timer retry;          /* accept failed for lack of fds: try again later */
    char *addr;              /* what lfd is bound to */
    int port;
    struct pgw_list conns, dead;
    int nconns;
    ev_check reaper;
    struct pgw_wbuf body;    /* the last render */
    ev_tstamp body_at;       /* when it ended (monotonic) */
    double body_cost;        /* the CPU time it took */
    ev_timer render;         /* the next render, for the CONN_HELD scrapes */
    int held;                /* how many there are */
    struct hist wait, xact;
    uint64_t wait_buckets[NWAIT + 1], xact_buckets[NXACT + 1];
};

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);

/* Stop, close and queue for freeing after this loop iteration. */
static void conn_close(struct mconn *c)
{
    struct ev_loop *loop = c->m->px->loop;
    ev_io_stop(loop, &c->io);
    ev_timer_stop(loop, &c->timer);
    if (c->phase == CONN_HELD && --c->m->held == 0)
        ev_timer_stop(loop, &c->m->render);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    pgw_list_del(&c->node);
    pgw_list_append(&c->m->dead, &c->node);
    c->m->nconns--;
    if (!ev_is_active(&c->m->reaper))
        ev_check_start(loop, &c->m->reaper);
}

static void conn_free(struct mconn *c)
{
    pgw_wbuf_deinit(&c->out);
    free(c);
}

static void reaper_cb(struct ev_loop *loop, ev_check *w, int revents)
{
    struct pgw_metrics *m = pgw_container_of(w, struct pgw_metrics, reaper);
    struct pgw_list *pos, *tmp;
    pgw_list_foreach_safe(pos, tmp, &m->dead) {
        pgw_list_del(pos);
        conn_free(pgw_container_of(pos, struct mconn, node));
    }
    ev_check_stop(loop, w);
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    conn_close(pgw_container_of(w, struct mconn, timer));
}

static void conn_watch(struct mconn *c, int events)
{
    struct ev_loop *loop = c->m->px->loop;
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(loop, &c->io);
}

/* Response sent: stop writing, read until the client closes (or the linger
 * timer), so a close never turns into a reset that eats the response. */
static void conn_linger(struct mconn *c)
{
    struct ev_loop *loop = c->m->px->loop;
    shutdown(c->fd, SHUT_WR);
    c->phase = CONN_LINGER;
    conn_watch(c, EV_READ);
    ev_timer_stop(loop, &c->timer);
    ev_timer_set(&c->timer, METRICS_LINGER, 0);
    ev_timer_start(loop, &c->timer);
}

static void conn_flush(struct mconn *c)
{
    while (c->sent < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;                  /* the write watcher brings us back */
            conn_close(c);
            return;
        }
        c->sent += (size_t)w;
    }
    pgw_wbuf_deinit(&c->out);
    conn_linger(c);
}

static void respond(struct mconn *c, int code, const char *reason, const char *ctype,
                    const struct pgw_wbuf *body, bool head)
{
    size_t len = body ? body->len : 0;
    pgw_wbuf_reset(&c->out);
    pgw_admin_printf(&c->out,
                     "HTTP/1.0 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-cache\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n",
                     code, reason, ctype, len, code == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (body && !head)
        pgw_wbuf_append(&c->out, body->data, body->len);
    if (c->out.failed) {
        conn_close(c);
        return;
    }
    c->phase = CONN_WRITE;
    c->sent = 0;
    conn_watch(c, EV_WRITE);
    conn_flush(c);
}

/* head: the request was a HEAD (the headers only, as for any reply). */
static void respond_text(struct mconn *c, int code, const char *reason, const char *text,
                         bool head)
{
    struct pgw_wbuf body;
    pgw_wbuf_init(&body);
    pgw_wbuf_append(&body, text, strlen(text));
    respond(c, code, reason, "text/plain; charset=utf-8", &body, head);
    pgw_wbuf_deinit(&body);
}

/* This thread's CPU time in seconds (0 if the clock fails). */
static double thread_cpu(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void render(struct pgw_metrics *m)
{
    double cpu = thread_cpu();
    pgw_wbuf_reset(&m->body);
    pgw_metrics_render(m->px, &m->body);
    m->body_at = pgw_clock_read();
    m->body_cost = thread_cpu() - cpu;
}

/* The render just made to c (it asked before the render began). */
static void answer(struct mconn *c)
{
    struct pgw_metrics *m = c->m;
    if (m->body.failed)
        respond_text(c, 500, "Internal Server Error", "out of memory\n", c->head);
    else
        respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &m->body, c->head);
}

/* After the answers: a render that ran out of memory is let go. */
static void render_done(struct pgw_metrics *m)
{
    if (m->body.failed) {
        pgw_wbuf_deinit(&m->body);
        pgw_wbuf_init(&m->body);
    }
}

/* RFC 9110's tchar: what a method or a header field's name is made of. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool all_tchar(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)p[i]))
            return false;
    return n > 0;
}

/* One line of the head from *p (its CR LF or LF cut off; a CR anywhere
 * else, which RFC 9112 makes invalid, is a bad line): start and length;
 * *p moves past it.  False at the end of the head or on a bad line (*bad). */
static bool head_line(const char **p, const char **line, size_t *len, bool *bad)
{
    const char *l = *p, *nl = strchr(l, '\n');
    if (!nl)
        return false;
    size_t n = (size_t)(nl - l);
    if (n > 0 && l[n - 1] == '\r')
        n--;
    *p = nl + 1;
    if (memchr(l, '\r', n)) {
        *bad = true;
        return false;
    }
    *line = l;
    *len = n;
    return true;
}

/* The path an origin-form (/metrics?x) or absolute-form
 * (http://host:port/metrics?x, which RFC 9112 has servers accept) target
 * names, into path; 0, else 400 for an http(s) URI with no host, 404 for
 * any other target (another scheme, "*", an authority). */
static int target_path(const char *t, char *path, size_t size)
{
    if (*t != '/') {
        size_t sl = strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
        if (sl == 0 || strncmp(t + sl, "://", 3) != 0)
            return 404;
        if (!((sl == 4 && strncasecmp(t, "http", 4) == 0) ||
              (sl == 5 && strncasecmp(t, "https", 5) == 0)))
            return 404;
        t += sl + 3;
        size_t al = strcspn(t, "/?#");
        const char *host = t;            /* past a userinfo@, if any */
        for (const char *a = t; a < t + al; a++)
            if (*a == '@')
                host = a + 1;
        if (host == t + al || *host == ':')
            return 400;                  /* no host: RFC 9110 4.2.1 */
        t += al;
    }
    size_t pl = strcspn(t, "?#");
    if (pl == 0) {
        t = "/";                         /* http://host or http://host?x */
        pl = 1;
    }
    if (pl >= size)
        return 404;
    memcpy(path, t, pl);
    path[pl] = '\0';
    return 0;
}

/* A whole request head is in c->req: answer it.  As RFC 9112 has a
 * server: a request line of method, target and HTTP version (words
 * apart by any blanks, as it allows); 505 for a version other than 1.x;
 * 414 for a target longer than we parse; a header line with no colon, a
 * name that is not a token (whitespace before the colon) or a folded
 * one, a second Host, or none in an HTTP/1.1 request: 400. */
static void handle_request(struct mconn *c)
{
    char method[16], target[512];
    const char *r = c->req;
    while (*r == '\r' || *r == '\n')
        r++;                             /* blank lines first: ignored (RFC 9112) */
    const char *line;
    size_t len;
    bool bad = false;
    if (!head_line(&r, &line, &len, &bad)) {
        respond_text(c, 400, "Bad Request", "bad request\n", false);
        return;
    }
    const char *w[4];
    size_t wl[4];
    int nw = 0;
    for (size_t i = 0; i < len;) {
        i += strspn(line + i, " \t");
        if (i >= len)
            break;
        size_t n = strcspn(line + i, " \t");
        if (n > len - i)
            n = len - i;
        if (nw == 4)
            break;
        w[nw] = line + i;
        wl[nw++] = n;
        i += n;
    }
    if (nw != 3 || wl[0] >= sizeof(method) || !all_tchar(w[0], wl[0])) {
        respond_text(c, 400, "Bad Request", "bad request\n", false);
        return;
    }
    /* (A HEAD's answer has no body, whatever its status.) */
    bool head = wl[0] == 4 && memcmp(w[0], "HEAD", 4) == 0;
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive */
    const char *v = w[2];
    if (wl[2] != 8 || strncmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
        v[6] != '.' || v[7] < '0' || v[7] > '9') {
        respond_text(c, 400, "Bad Request", "bad request: no HTTP version\n", head);
        return;
    }
    if (v[5] != '1') {
        respond_text(c, 505, "HTTP Version Not Supported", "HTTP/1.x only\n", head);
        return;
    }
    if (wl[1] >= sizeof(target)) {
        respond_text(c, 414, "URI Too Long", "request target too long\n", head);
        return;
    }
    memcpy(method, w[0], wl[0]);
    method[wl[0]] = '\0';
    memcpy(target, w[1], wl[1]);
    target[wl[1]] = '\0';
    int hosts = 0;
    while (head_line(&r, &line, &len, &bad) && len > 0) {
        const char *colon = memchr(line, ':', len);
        if (*line == ' ' || *line == '\t' || !colon ||
            !all_tchar(line, (size_t)(colon - line))) {
            bad = true;                  /* obs-fold, no colon, a name not a token */
            break;
        }
        if (colon - line == 4 && strncasecmp(line, "host", 4) == 0)
            hosts++;
    }
    if (bad || hosts > 1 || (hosts == 0 && v[7] != '0')) {
        respond_text(c, 400, "Bad Request", "bad request: header fields\n", head);
        return;
    }
    char path[sizeof(target)];
    int code = target_path(target, path, sizeof(path));
    if (code == 400) {
        respond_text(c, 400, "Bad Request", "bad request: no host in the target\n", head);
        return;
    }
    if (code != 0 || strcmp(path, "/metrics") != 0) {
        respond_text(c, 404, "Not Found", "not found: try /metrics\n", head);
        return;
    }
    if (!head && strcmp(method, "GET") != 0) {
        respond_text(c, 405, "Method Not Allowed", "method not allowed\n", false);
        return;
    }
    struct pgw_metrics *m = c->m;
    c->head = head;
    /* the cost in CPU time: a render the scheduler held up is no reason
     * to hold scrapes longer */
    ev_tstamp wait = m->body_at + METRICS_RENDER_SPACING * m->body_cost - pgw_clock_read();
    if (m->held == 0 && wait <= 0) {
        render(m);
        answer(c);
        render_done(m);
        return;
    }
    /* Still read while held (conn_drain): a peer that leaves is the first
     * to give its place up. */
    struct ev_loop *loop = m->px->loop;
    c->phase = CONN_HELD;
    if (m->held++ == 0) {
        ev_timer_set(&m->render, wait < METRICS_HOLD_MAX ? wait : METRICS_HOLD_MAX, 0);
        ev_timer_start(loop, &m->render);
    }
}

/* Time for the next render: every held scrape gets it. */
static void render_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct pgw_metrics *m = pgw_container_of(w, struct pgw_metrics, render);
    render(m);
    struct pgw_list *pos, *tmp;
    pgw_list_foreach_safe(pos, tmp, &m->conns) {
        struct mconn *c = pgw_container_of(pos, struct mconn, node);
        if (c->phase == CONN_HELD) {
            c->phase = CONN_WRITE;
            m->held--;
            answer(c);
        }
    }
    render_done(m);
}

/* Lingering or held: read and drop what the client sends after its
 * request (pgw_drain); past METRICS_DRAIN_MAX it is closed.  At the end
 * of its stream a lingering one is closed (its reply went out); a held
 * one is marked and no longer read: it may only have shut its side, and
 * its reply still goes -- it is the first a full endpoint closes
 * (make_room). */
static void conn_drain(struct mconn *c)
{
    enum pgw_drain r = pgw_drain(c->fd, NULL, NULL, METRICS_DRAIN_PER_CB, &c->drain_left);
    if (r == PGW_DRAIN_EOF && c->phase == CONN_HELD) {
        c->peer_done = true;
        ev_io_stop(c->m->px->loop, &c->io);
    } else if (r != PGW_DRAIN_AGAIN) {
        conn_close(c);                  /* EOF (or error, or too much): done */
    }
}

static void conn_read(struct mconn *c)
{
    if (c->phase == CONN_LINGER || c->phase == CONN_HELD) {
        conn_drain(c);
        return;
    }
    for (;;) {
        size_t room = sizeof(c->req) - 1 - c->rlen;
        if (room == 0) {
            respond_text(c, 431, "Request Header Fields Too Large", "request too large\n", false);
            return;
        }
        ssize_t n = read(c->fd, c->req + c->rlen, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        /* The head is searched as a C string: a NUL would hide its end. */
        if (memchr(c->req + c->rlen, '\0', (size_t)n)) {
            respond_text(c, 400, "Bad Request", "bad request: NUL byte\n", false);
            return;
        }
        c->rlen += (size_t)n;
        c->req[c->rlen] = '\0';
        /* (blank lines before the request line are not its end)  The
         * head ends at an empty line, its CR optional as on every line
         * (head_line): "\n\r\n" covers CR LF CR LF and a bare LF line
         * followed by CR LF, which was never taken for the end. */
        const char *h = c->req + strspn(c->req, "\r\n");
        if (strstr(h, "\n\r\n") || strstr(h, "\n\n")) {
            handle_request(c);
            return;
        }
    }
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mconn *c = pgw_container_of(w, struct mconn, io);
    if (revents & EV_ERROR) {           /* libev could not watch the socket */
        conn_close(c);
        return;
    }
    if (c->phase == CONN_WRITE)
        conn_flush(c);
    else
        conn_read(c);
}

static void conn_start(struct pgw_metrics *m, int fd)
{
    struct mconn *c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    memset(c, 0, offsetof(struct mconn, req));
    c->req[0] = '\0';
    c->m = m;
    c->fd = fd;
    c->phase = CONN_READ;
    c->drain_left = METRICS_DRAIN_MAX + 1;
    pgw_list_append(&m->conns, &c->node);
    m->nconns++;
    ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
    ev_timer_init(&c->timer, conn_timeout_cb, METRICS_TIMEOUT, 0);
    ev_io_start(m->px->loop, &c->io);
    ev_timer_start(m->px->loop, &c->timer);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_metrics *m = pgw_container_of(w, struct pgw_metrics, retry);
    if (m->lfd >= 0)
        ev_io_start(loop, &m->lio);
}

/* At the cap: close the oldest connection still waiting for its request
 * (m->conns is in accept order), so peers that connect and send nothing
 * cannot keep scrapes out; else the oldest whose reply is all sent
 * (lingering); else the oldest held one whose peer ended its stream; else
 * the oldest reply under way (being written, else waiting for its
 * render): peers that ask and never read (10 s each) cannot
 * either, and a new scrape always gets in.  false
 * with no connection at all. */
static bool make_room(struct pgw_metrics *m)
{
    struct mconn *pick[CONN_LINGER + 1] = { NULL }, *gone = NULL;
    struct pgw_list *pos;
    for (pos = m->conns.next; pos != &m->conns; pos = pos->next) {
        struct mconn *c = pgw_container_of(pos, struct mconn, node);
        if (!pick[c->phase])
            pick[c->phase] = c;
        if (c->peer_done && c->phase == CONN_HELD && !gone)
            gone = c;
    }
    struct mconn *c = pick[CONN_READ]     ? pick[CONN_READ]
                      : pick[CONN_LINGER] ? pick[CONN_LINGER]
                      : gone              ? gone
                      : pick[CONN_WRITE]  ? pick[CONN_WRITE]
                                          : pick[CONN_HELD];
    if (!c)
        return false;
    conn_close(c);
    return true;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_metrics *m = pgw_container_of(w, struct pgw_metrics, lio);
    if (revents & EV_ERROR) {
        /* libev could not watch the socket (epoll_ctl failed) and stopped
         * the watcher: listen again in a moment, as when out of memory. */
        pgw_warn("metrics", "reason=\"could not watch the listening socket for events; "
                 "pausing the endpoint for 1 s\"");
        ev_io_stop(loop, &m->lio);
        ev_timer_stop(loop, &m->retry);
        ev_timer_set(&m->retry, 1.0, 0);
        ev_timer_start(loop, &m->retry);
        return;
    }
    for (int i = 0; i < METRICS_ACCEPTS_PER_CB; i++) {
        int fd = accept4(m->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: a level-triggered watcher would spin. */
                pgw_warn("metrics", "reason=\"accept: %s; pausing the endpoint for 1 s\"",
                         strerror(errno));
                ev_io_stop(loop, &m->lio);
                ev_timer_stop(loop, &m->retry);
                ev_timer_set(&m->retry, 1.0, 0);
                ev_timer_start(loop, &m->retry);
            }
            return;
        }
        if (m->nconns >= METRICS_MAX_CONNS && !make_room(m)) {
            close(fd);                   /* that many replies under way */
            continue;
        }
        conn_start(m, fd);
    }
}

static void listener_close(struct pgw_metrics *m)
{
    struct ev_loop *loop = m->px->loop;
    ev_io_stop(loop, &m->lio);
    ev_timer_stop(loop, &m->retry);
    if (m->lfd >= 0) {
        close(m->lfd);
        m->lfd = -1;
    }
    free(m->addr);
    m->addr = NULL;
    m->port = 0;
}

/* Opens the endpoint at addr:port; an error names the config line (of cfg,
 * NULL for none) of the key at fault, "file:line: key value: ...". */
static int listener_open(struct pgw_metrics *m, const struct pgw_config *cfg, const char *addr,
                         int port, char *errbuf, size_t errlen)
{
    const char *host = addr;
    if (!*host || strcmp(host, "*") == 0)
        host = "0.0.0.0";
    else if (strcasecmp(host, "localhost") == 0)
        host = "127.0.0.1";
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(errbuf, errlen, "%s (a numeric address, \"*\" or localhost)",
                 gai_strerror(gai));
        pgw_conf_locate(cfg, "metrics_addr", errbuf, errlen, "metrics_addr %s", addr);
        return PGW_ECONFIG;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
        int err = errno;
        /* an address this host lacks is metrics_addr's fault, else the port's */
        bool by_addr = err == EADDRNOTAVAIL;
        snprintf(errbuf, errlen, "cannot listen on %s:%d: %s", addr, port, strerror(err));
        if (by_addr)
            pgw_conf_locate(cfg, "metrics_addr", errbuf, errlen, "metrics_addr %s", addr);
        else
            pgw_conf_locate(cfg, "metrics_port", errbuf, errlen, "metrics_port %d", port);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return PGW_EIO;
    }
    freeaddrinfo(ai);
    m->addr = strdup(addr);
    if (!m->addr) {
        close(fd);
        snprintf(errbuf, errlen, "out of memory");
        return PGW_ENOMEM;
    }
    m->lfd = fd;
    m->port = port;
    ev_io_init(&m->lio, accept_cb, fd, EV_READ);
    ev_io_start(m->px->loop, &m->lio);
    pgw_info("metrics_listen", "addr=%s port=%d", addr, port);
    return 0;
}

int pgw_metrics_create(struct pgw_proxy *px, struct pgw_metrics **out, char *errbuf,
                       size_t errlen)
{
    struct pgw_metrics *m = calloc(1, sizeof(*m));
    *out = NULL;
    if (!m) {
        snprintf(errbuf, errlen, "out of memory");
        return PGW_ENOMEM;
    }
    m->px = px;
    m->lfd = -1;
    pgw_list_init(&m->conns);
    pgw_list_init(&m->dead);
    pgw_wbuf_init(&m->body);
    ev_init(&m->lio, accept_cb);
    ev_init(&m->retry, retry_cb);
    ev_check_init(&m->reaper, reaper_cb);
    ev_init(&m->render, render_cb);
    m->wait = (struct hist){ wait_bounds, NWAIT, m->wait_buckets, 0, 0 };
    m->xact = (struct hist){ xact_bounds, NXACT, m->xact_buckets, 0, 0 };
    const struct pgw_config *cfg = px->cfg;
    if (cfg->metrics_port > 0) {
        int rc = listener_open(m, cfg, cfg->metrics_addr, cfg->metrics_port, errbuf, errlen);
        if (rc < 0) {
            free(m);
            return rc;
        }
    }
    *out = m;
    return 0;
}

/* A listening socket taken out of m, still open (fd -1: there was none). */
struct old_listener {
    int fd;
    char *addr;
    int port;
};

static struct old_listener listener_detach(struct pgw_metrics *m)
{
    struct old_listener o = { m->lfd, m->addr, m->port };
    ev_io_stop(m->px->loop, &m->lio);
    ev_timer_stop(m->px->loop, &m->retry);
    m->lfd = -1;
    m->addr = NULL;
    m->port = 0;
    return o;
}

static void listener_attach(struct pgw_metrics *m, struct old_listener *o)
{
    m->lfd = o->fd;
    m->addr = o->addr;
    m->port = o->port;
    if (o->fd >= 0) {
        ev_io_init(&m->lio, accept_cb, o->fd, EV_READ);
        ev_io_start(m->px->loop, &m->lio);
    }
}

/* Before a reload commits: move the listener to cfg's metrics_addr and
 * metrics_port when they changed.  The new socket opens before the old one
 * closes, so a port that cannot be bound changes nothing: PGW_EIO (or
 * PGW_ECONFIG for a bad address) with the reason in errbuf, and the old
 * endpoint stays.  Open scrapes finish on the old socket. */
int pgw_metrics_reconfigure(struct pgw_metrics *m, const struct pgw_config *cfg, char *errbuf,
                            size_t errlen)
{
    if (!m)
        return 0;
    int port = cfg->metrics_port;
    if (port == m->port && (port == 0 || (m->addr && strcmp(m->addr, cfg->metrics_addr) == 0)))
        return 0;
    struct old_listener old = listener_detach(m);
    int rc = port > 0 ? listener_open(m, cfg, cfg->metrics_addr, port, errbuf, errlen) : 0;
    if (rc == PGW_EIO && old.fd >= 0 && old.port == port) {
        /* Another address on the same port: the old socket may be what
         * holds the port.  Close it, try again, and on failure go back. */
        close(old.fd);
        old.fd = -1;
        rc = listener_open(m, cfg, cfg->metrics_addr, port, errbuf, errlen);
        char why[300], q[320];
        if (rc < 0 && listener_open(m, NULL, old.addr, old.port, why, sizeof(why)) < 0)
            pgw_error("metrics_listen", "reason=%s", pgw_log_quote(q, sizeof(q), why));
        free(old.addr);
        return rc;
    }
    if (rc < 0) {
        listener_attach(m, &old);
        return rc;
    }
    if (old.fd >= 0)
        close(old.fd);
    free(old.addr);
    return 0;
}

void pgw_metrics_destroy(struct pgw_metrics *m)
{
    if (!m)
        return;
    listener_close(m);
    struct pgw_list *pos, *tmp;
    pgw_list_foreach_safe(pos, tmp, &m->conns)
        conn_close(pgw_container_of(pos, struct mconn, node));
    ev_check_stop(m->px->loop, &m->reaper);
    ev_timer_stop(m->px->loop, &m->render);
    pgw_list_foreach_safe(pos, tmp, &m->dead) {
        pgw_list_del(pos);
        conn_free(pgw_container_of(pos, struct mconn, node));
    }
    pgw_wbuf_deinit(&m->body);
    free(m);
}

/* ---- hooks from the relay ---- */

static struct pgw_metrics *metrics_of(const struct pgw_session *s)
{
    return s->px->admin ? s->px->admin->metrics : NULL;
}

void pgw_metrics_observe_wait(struct pgw_session *s, double seconds)
{
    struct pgw_metrics *m = metrics_of(s);
    if (m)
        hist_observe(&m->wait, seconds);
}

/* At the ReadyForQuery that ends the outstanding requests: the query time
 * since query_start; a transaction starts with the first query after 'I'
 * and ends at the next 'I' (idle-in-transaction time included, as
 * PgBouncer counts it). */
static void xact_done(struct pgw_session *s, ev_tstamp now);

void pgw_metrics_ready(struct pgw_session *s, char status)
{
    ev_tstamp now = pgw_mono_now(s->px->loop);
    if (s->query_start > 0 && now >= s->query_start) {
        s->query_time_us += (uint64_t)((now - s->query_start) * 1e6);
        if (s->xact_start == 0)
            s->xact_start = s->query_start;
    }
    if (status == 'I')
        xact_done(s, now);
}

/* A transaction ended now: counted (SHOW STATS' xact_count, the metric
 * pgwharf_transactions_total) and observed in the duration histogram in
 * one place, so that the histogram's count is the sum of that counter's
 * series (but those of databases gone from SHOW STATS: the histogram
 * keeps them, a counter never goes down).  It began at xact_start, at
 * the pipeline's ReadyForQuery 'I' before it (xact_floor), or at the
 * request it answers; one with no start known (a Sync with nothing
 * under way, answered here) took 0 s. */
static void xact_done(struct pgw_session *s, ev_tstamp now)
{
    ev_tstamp start = s->xact_start > 0 ? s->xact_start : s->query_start;
    if (s->xact_floor > start)
        start = s->xact_floor;
    s->xact_start = 0;
    s->xact_count++;
    double d = start > 0 && now > start ? now - start : 0;
    s->xact_time_us += (uint64_t)(d * 1e6);
    struct pgw_metrics *m = metrics_of(s);
    if (m && pgw_stats_counts(s))
        hist_observe(&m->xact, d);
}

void pgw_metrics_xact_end(struct pgw_session *s)
{
    xact_done(s, pgw_mono_now(s->px->loop));
}

/* ---- the exposition text ---- */

/* The exposition format is UTF-8: a byte that does not start a well-formed
 * sequence (a database name a client chose under "*", say) becomes U+FFFD
 * and its two hex digits instead of making the whole scrape unparsable;
 * so does each byte of a U+FFFD of the name itself.  Names that differ
 * keep differing (q\xff and q\xfe are "q\ufffdff" and "q\ufffdfe"): one
 * series per pool, never two of one label set. */
static void put_escaped(struct pgw_wbuf *b, const char *v, bool label)
{
    const char *run = v;                 /* bytes as they are, appended at once */
    size_t marked = 0;                   /* bytes of a U+FFFD still to escape */
    for (; *v; v++) {
        unsigned char ch = (unsigned char)*v;
        if (ch >= 0x80 && !marked) {
            uint32_t cp;
            size_t n = pgw_utf8_decode((const unsigned char *)v, &cp);
            if (n > 0 && cp != 0xFFFD) {
                v += n - 1;
                continue;
            }
            marked = n;                  /* 0: this byte alone */
        } else if (ch < 0x80 && ch != '\\' && ch != '\n' && !(ch == '"' && label)) {
            continue;
        }
        pgw_wbuf_append(b, run, (size_t)(v - run));
        run = v + 1;
        if (ch >= 0x80) {
            char hex[3];
            snprintf(hex, sizeof(hex), "%02x", ch);
            pgw_wbuf_append(b, "\xEF\xBF\xBD", 3);
            pgw_wbuf_append(b, hex, 2);
            if (marked)
                marked--;
        } else {
            pgw_wbuf_append(b, ch == '\\' ? "\\\\" : ch == '\n' ? "\\n" : "\\\"", 2);
        }
    }
    pgw_wbuf_append(b, run, (size_t)(v - run));
}

static void family(struct pgw_wbuf *b, const char *name, const char *type, const char *help)
{
    pgw_admin_printf(b, "# HELP %s ", name);
    put_escaped(b, help, false);
    pgw_admin_printf(b, "\n# TYPE %s %s\n", name, type);
}

/* name{k1="v1",k2="v2"} value: labels as NULL-terminated key/value pairs. */
static void sample(struct pgw_wbuf *b, const char *name, const char *const *labels,
                   const char *value)
{
    pgw_wbuf_append(b, name, strlen(name));
    if (labels && labels[0]) {
        pgw_wbuf_put_u8(b, '{');
        for (int i = 0; labels[i]; i += 2) {
            if (i)
                pgw_wbuf_put_u8(b, ',');
            pgw_admin_printf(b, "%s=\"", labels[i]);
            put_escaped(b, labels[i + 1], true);
            pgw_wbuf_put_u8(b, '"');
        }
        pgw_wbuf_put_u8(b, '}');
    }
    pgw_admin_printf(b, " %s\n", value);
}

static void sample_u(struct pgw_wbuf *b, const char *name, const char *const *labels, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    sample(b, name, labels, buf);
}

static void sample_f(struct pgw_wbuf *b, const char *name, const char *const *labels, double v)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%.6f", v);
    sample(b, name, labels, buf);
}

/* A family of one sample without labels. */
static void metric_u(struct pgw_wbuf *b, const char *name, const char *type, uint64_t v,
                     const char *help)
{
    family(b, name, type, help);
    sample_u(b, name, NULL, v);
}

/* ---- pool gauges ---- */

enum pool_field { PF_CL_ACTIVE, PF_CL_WAITING, PF_SV_ACTIVE, PF_SV_IDLE, PF_SV_USED,
                  PF_SV_TESTED, PF_SV_LOGIN, PF_PAUSED, PF_BRIDGES };

static const struct {
    const char *name, *help;
    enum pool_field f;
} pool_gauges[] = {
    { "pgwharf_pool_client_active",
      "Clients linked to a server or idle, per pool (SHOW POOLS cl_active).", PF_CL_ACTIVE },
    { "pgwharf_pool_client_waiting",
      "Clients waiting for a server, per pool (SHOW POOLS cl_waiting).", PF_CL_WAITING },
    { "pgwharf_pool_server_active",
      "Servers lent to a client, per pool (SHOW POOLS sv_active).", PF_SV_ACTIVE },
    { "pgwharf_pool_server_idle",
      "Servers idle and ready, per pool (SHOW POOLS sv_idle).", PF_SV_IDLE },
    { "pgwharf_pool_server_used",
      "Idle servers due for server_check_query, per pool (SHOW POOLS sv_used).", PF_SV_USED },
    { "pgwharf_pool_server_tested",
      "Servers running a reset or check query, per pool (SHOW POOLS sv_tested).", PF_SV_TESTED },
    { "pgwharf_pool_server_login",
      "Servers connecting or logging in, per pool (SHOW POOLS sv_login).", PF_SV_LOGIN },
    { "pgwharf_pool_paused", "1 while the pool is paused by PAUSE.", PF_PAUSED },
    { "pgwharf_pool_notify_bridges", "LISTEN bridges of the pool: servers a committed LISTEN ran "
      "on, kept listening for their client until the listening server takes over (outside "
      "pool_size and SHOW POOLS' sv_*; SHOW SERVERS state bridge).", PF_BRIDGES },
};

static int pool_value(const struct pgw_pool_row *r, enum pool_field f)
{
    switch (f) {
    case PF_CL_ACTIVE:  return r->cl_active;
    case PF_CL_WAITING: return r->cl_waiting;
    case PF_SV_ACTIVE:  return r->sv_active;
    case PF_SV_IDLE:    return r->sv_idle;
    case PF_SV_USED:    return r->sv_used;
    case PF_SV_TESTED:  return r->sv_tested;
    case PF_SV_LOGIN:   return r->sv_login;
    case PF_PAUSED:     return r->paused;
    case PF_BRIDGES:    return r->bridges;
    }
    return 0;
}

static void render_pools(struct pgw_proxy *px, struct pgw_wbuf *b)
{
    int n;
    struct pgw_pool_row *rows = pgw_admin_pool_rows(px, &n);
    for (size_t g = 0; g < sizeof(pool_gauges) / sizeof(pool_gauges[0]); g++) {
        family(b, pool_gauges[g].name, "gauge", pool_gauges[g].help);
        for (int i = 0; i < n; i++) {
            const char *labels[] = { "database", pgw_pool_dbname(rows[i].pool),
                                     "user", pgw_pool_user(rows[i].pool), NULL };
            sample_u(b, pool_gauges[g].name, labels,
                     (uint64_t)pool_value(&rows[i], pool_gauges[g].f));
        }
    }
    family(b, "pgwharf_pool_maxwait_seconds", "gauge",
           "How long the oldest waiting client of the pool has waited.");
    for (int i = 0; i < n; i++) {
        const char *labels[] = { "database", pgw_pool_dbname(rows[i].pool),
                                 "user", pgw_pool_user(rows[i].pool), NULL };
        sample_f(b, "pgwharf_pool_maxwait_seconds", labels, rows[i].maxwait);
    }
    free(rows);
}

/* ---- per-database counters ---- */

enum db_field { DF_XACTS, DF_QUERIES, DF_RECV, DF_SENT, DF_ASSIGN, DF_TIMEOUTS,
                DF_WAIT_S, DF_XACT_S, DF_QUERY_S, DF_CPARSE, DF_SPARSE, DF_BINDS };

static const struct {
    const char *name, *help;
    enum db_field f;
} db_counters[] = {
    { "pgwharf_transactions_total",
      "Transactions finished, per database (SHOW STATS total_xact_count).", DF_XACTS },
    { "pgwharf_queries_total",
      "Queries (Query or Sync) sent, per database (SHOW STATS total_query_count).", DF_QUERIES },
    { "pgwharf_bytes_received_total",
      "Bytes received from clients past their login, per database (SHOW STATS "
      "total_received).", DF_RECV },
    { "pgwharf_bytes_sent_total",
      "Bytes sent to clients past their login, per database (SHOW STATS total_sent).", DF_SENT },
    { "pgwharf_server_assignments_total", "Servers lent to clients, per database.", DF_ASSIGN },
    { "pgwharf_wait_seconds_total", "Time clients waited for a server, per database.", DF_WAIT_S },
    { "pgwharf_wait_timeouts_total",
      "Waits that ended at query_wait_timeout, per database.", DF_TIMEOUTS },
    { "pgwharf_transaction_seconds_total", "Time spent in transactions, per database.", DF_XACT_S },
    { "pgwharf_query_seconds_total", "Time spent running queries, per database.", DF_QUERY_S },
    { "pgwharf_client_parses_total",
      "Named Parse messages of clients, per database (SHOW STATS "
      "total_client_parse_count).", DF_CPARSE },
    { "pgwharf_server_parses_total",
      "Parse messages pgwharf sent to servers for them, per database (SHOW STATS "
      "total_server_parse_count).", DF_SPARSE },
    { "pgwharf_binds_total",
      "Binds of clients' named statements, per database (SHOW STATS total_bind_count).", DF_BINDS },
};

static void render_db_counters(struct pgw_proxy *px, struct pgw_wbuf *b)
{
    int n;
    struct pgw_dbstat_row *rows = pgw_stats_rows(px, &n);
    for (size_t c = 0; c < sizeof(db_counters) / sizeof(db_counters[0]); c++) {
        const char *name = db_counters[c].name;
        family(b, name, "counter", db_counters[c].help);
        for (int i = 0; i < n; i++) {
            const struct pgw_dbstat *t = &rows[i].total;
            const char *labels[] = { "database", rows[i].database, NULL };
            switch (db_counters[c].f) {
            case DF_XACTS:    sample_u(b, name, labels, t->xacts); break;
            case DF_QUERIES:  sample_u(b, name, labels, t->queries); break;
            case DF_RECV:     sample_u(b, name, labels, t->recv); break;
            case DF_SENT:     sample_u(b, name, labels, t->sent); break;
            case DF_ASSIGN:   sample_u(b, name, labels, t->assignments); break;
            case DF_TIMEOUTS: sample_u(b, name, labels, t->wait_timeouts); break;
            case DF_WAIT_S:   sample_f(b, name, labels, (double)t->wait_us / 1e6); break;
            case DF_XACT_S:   sample_f(b, name, labels, (double)t->xact_us / 1e6); break;
            case DF_QUERY_S:  sample_f(b, name, labels, (double)t->query_us / 1e6); break;
            case DF_CPARSE:   sample_u(b, name, labels, t->ps_client_parses); break;
            case DF_SPARSE:   sample_u(b, name, labels, t->ps_server_parses); break;
            case DF_BINDS:    sample_u(b, name, labels, t->ps_binds); break;
            }
        }
    }
    free(rows);
}

/* ---- breakers ---- */

static void render_breakers(struct pgw_proxy *px, struct pgw_wbuf *b)
{
    static const char *const names[] = {
        "pgwharf_breaker_state", "pgwharf_breaker_failures", "pgwharf_breaker_trips_total"
    };
    static const char *const types[] = { "gauge", "gauge", "counter" };
    static const char *const helps[] = {
        "Circuit breaker of the backend: 0 closed, 1 open, 2 half-open.",
        "Consecutive connect/login failures of the backend.",
        "Times the backend's breaker opened.",
    };
    for (int k = 0; k < 3; k++) {
        family(b, names[k], types[k], helps[k]);
        for (struct pgw_backend *be = pgw_backend_next(px->pools, NULL); be;
             be = pgw_backend_next(px->pools, be)) {
            struct pgw_backend_info bi;
            pgw_backend_get_info(be, &bi);
            const char *labels[] = { "backend", bi.address ? bi.address : "", NULL };
            uint64_t v = k == 0 ? (bi.state == PGW_BREAKER_OPEN ? 1
                                   : bi.state == PGW_BREAKER_HALF_OPEN ? 2 : 0)
                       : k == 1 ? (uint64_t)bi.failures : bi.trips;
            sample_u(b, names[k], labels, v);
        }
    }
}

static void render_hist(struct pgw_wbuf *b, const char *name, const char *help,
                        const struct hist *h)
{
    char sname[128], le[32];
    family(b, name, "histogram", help);
    snprintf(sname, sizeof(sname), "%s_bucket", name);
    uint64_t cum = 0;
    for (size_t i = 0; i <= h->n; i++) {
        cum += h->buckets[i];
        if (i < h->n)
            snprintf(le, sizeof(le), "%g", h->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        const char *labels[] = { "le", le, NULL };
        sample_u(b, sname, labels, cum);
    }
    snprintf(sname, sizeof(sname), "%s_sum", name);
    sample_f(b, sname, NULL, h->sum);
    snprintf(sname, sizeof(sname), "%s_count", name);
    sample_u(b, sname, NULL, h->count);
}

static void render_prepared(struct pgw_proxy *px, struct pgw_wbuf *b)
{
    struct pgw_ps_stats st;
    pgw_ps_get_stats(px, &st);
    metric_u(b, "pgwharf_prepared_statements", "gauge", st.statements,
             "Distinct prepared statements registered (shared by text and parameter types).");
    static const struct { const char *name, *help; } c[] = {
        { "pgwharf_prepared_client_parses_total", "Named Parse messages from clients." },
        { "pgwharf_prepared_server_prepares_total", "Parse messages pgwharf sent to servers." },
        { "pgwharf_prepared_hits_total",
          "Parse/Bind/Describe served by a statement the server already had." },
        { "pgwharf_prepared_evictions_total",
          "Statements closed on a server by its max_prepared_statements LRU." },
    };
    const uint64_t v[] = { st.client_parses, st.server_prepares, st.hits, st.evictions };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        metric_u(b, c[i].name, "counter", v[i], c[i].help);
}

static void render_batch(struct pgw_proxy *px, struct pgw_wbuf *b)
{
    struct pgw_batch_stats st;
    pgw_batch_get_stats(px, &st);
    metric_u(b, "pgwharf_io_batch_enabled", "gauge", st.on ? 1 : 0,
             "1 while relay writes are batched through io_uring (io_batch).");
    metric_u(b, "pgwharf_io_batches_total", "counter", st.batches,
             "Rounds of deferred relay writes made before a poll (one io_uring_enter(2), or one "
             "send(2) when the round holds a single write).");
    metric_u(b, "pgwharf_io_batched_sends_total", "counter", st.sends,
             "Relay writes made in those rounds (divided by the rounds: the mean batch size).");
    metric_u(b, "pgwharf_pipelined_queries_total", "counter", px->total_pipelined,
             "Queries sent to a busy server behind another client's (server_pipeline_depth).");
    metric_u(b, "pgwharf_pipelined_failed_total", "counter", px->total_pipeline_failed,
             "Of those, queries whose client got 08006 because the server could not pass on to "
             "it (a queued client left, a cancel, a settings change, the server closed).");
    uint64_t channels, listeners;
    pgw_notify_counts(px, &channels, &listeners);
    metric_u(b, "pgwharf_listen_channels", "gauge", channels,
             "Channels the pools' listening servers LISTEN on for clients in transaction and "
             "statement mode.");
    metric_u(b, "pgwharf_listen_clients", "gauge", listeners,
             "Clients listening on at least one of those channels.");
    metric_u(b, "pgwharf_notifications_total", "counter", px->total_notifications,
             "Notifications passed to clients from the listening servers.");
    metric_u(b, "pgwharf_notifications_dropped_total", "counter", px->total_notifications_dropped,
             "Notifications dropped for a client that had max_notify_backlog bytes of them "
             "waiting (inside a transaction, or not reading; the client is then disconnected "
             "with 54000), or whose encoding lacks a character of one.");
}

void pgw_metrics_render(struct pgw_proxy *px, struct pgw_wbuf *b)
{
    metric_u(b, "pgwharf_up", "gauge", 1, "1 while pgwharf runs.");
    int open_clients = px->nclients + px->nrejecting;      /* as SHOW LISTS used_clients */
    metric_u(b, "pgwharf_clients_total", "gauge", (uint64_t)(open_clients > 0 ? open_clients : 0),
             "Client connections open now, in any state (admin console included).");
    metric_u(b, "pgwharf_clients_max", "gauge", (uint64_t)(px->client_cap > 0 ? px->client_cap : 0),
             "Clients served at once: max_client_conn, or fewer under the open-files limit.");
    metric_u(b, "pgwharf_lingering_sockets", "gauge", (uint64_t)px->nlingering,
             "Client sockets open after their session ended mid-message (FATAL 54000 or 53200), "
             "the rest of the message read and dropped (for at most 5 s).");
    metric_u(b, "pgwharf_servers_total", "gauge", (uint64_t)pgw_pool_set_server_count(px->pools),
             "Server connections open now, in any state.");
    render_pools(px, b);
    render_db_counters(px, b);
    render_breakers(px, b);
    render_prepared(px, b);
    render_batch(px, b);
    struct pgw_metrics *m = px->admin ? px->admin->metrics : NULL;
    if (m) {
        render_hist(b, "pgwharf_acquire_wait_seconds",
                    "Time from asking the pool for a server to getting one.", &m->wait);
        render_hist(b, "pgwharf_transaction_duration_seconds",
                    "Transaction duration, first query to ReadyForQuery idle.", &m->xact);
    }
}
