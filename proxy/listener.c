/*
 * listener.c - listening sockets: TCP on every listen_addr entry and the
 * Unix socket <unix_socket_dir>/.s.PGSQL.<port>, as PostgreSQL names it (a
 * file, or with "@" a name in the abstract namespace).
 * Accepts in a bounded batch per wake-up; beyond max_client_conn (or the
 * fewer clients the open-files limit leaves room for, px->client_cap) a
 * client gets ErrorResponse 53300 and is closed.
 */
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define ACCEPT_BATCH 64
#define ACCEPT_RETRY 0.5      /* seconds without accepting after EMFILE */

static void reject_full(const struct pgw_proxy *px, int fd)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error(&b, "FATAL", "53300", "no more connections allowed (%s)",
                   pgw_proxy_full_limit(px));
    if (!b.failed) {
        ssize_t w = write(fd, b.data, b.len);
        (void)w;
    }
    pgw_wbuf_deinit(&b);
    close(fd);
}

/* TCP_NODELAY and SO_KEEPALIVE (tcp_keepalive) for clients.  Set on the
 * listening socket, Linux hands them down to every accepted one: two
 * syscalls less a login.  A reload sets them again on the listeners.
 * tcp_socket_buffer too (fixed at start): a receive buffer shrunk on a
 * connection already open drops what the window the handshake advertised
 * let the peer send. */
static void client_sockopts(const struct pgw_config *cfg, int fd)
{
    int one = 1, keep = cfg->tcp_keepalive, buf = cfg->tcp_socket_buffer;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keep, sizeof(keep));
    if (buf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
    }
}

/* The tcp_* keys with a number (0 = the kernel's default) go on each
 * accepted socket rather than the listener, so a reload back to 0 gives
 * new clients the kernel's default again; nothing is set (no syscall)
 * while they are all 0. */
static void client_tcp_tuning(const struct pgw_config *cfg, int fd)
{
    struct { int level, name, value; } opt[] = {
        { IPPROTO_TCP, TCP_KEEPCNT, cfg->tcp_keepcnt },
        { IPPROTO_TCP, TCP_KEEPIDLE, cfg->tcp_keepidle },
        { IPPROTO_TCP, TCP_KEEPINTVL, cfg->tcp_keepintvl },
        { IPPROTO_TCP, TCP_USER_TIMEOUT, cfg->tcp_user_timeout },
    };
    for (size_t i = 0; i < sizeof(opt) / sizeof(opt[0]); i++)
        if (opt[i].value > 0 &&
            setsockopt(fd, opt[i].level, opt[i].name, &opt[i].value, sizeof(int)) < 0)
            pgw_debug("client_sockopt", "reason=\"%s\"", strerror(errno));
}

static bool tuned(const struct pgw_config *cfg)
{
    return cfg->tcp_keepcnt > 0 || cfg->tcp_keepidle > 0 || cfg->tcp_keepintvl > 0 ||
           cfg->tcp_user_timeout > 0;
}

void pgw_listener_reconfigure(struct pgw_proxy *px)
{
    for (struct pgw_listener *l = px->listeners; l; l = l->next)
        if (!l->unix_sock)
            client_sockopts(px->cfg, l->fd);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct pgw_listener *l = pgw_container_of(w, struct pgw_listener, io);
    struct pgw_proxy *px = l->px;
    if (revents & EV_ERROR) {
        /* libev could not watch the listener (epoll_ctl failed, ENOMEM)
         * and stopped it: as when accept finds no memory, listen again in
         * a moment (it accepted nobody more, ever). */
        pgw_warn("accept_paused", "reason=\"could not watch the listening socket for events\" "
                 "retry_in=%.1fs clients=%d", ACCEPT_RETRY, px->nclients);
        pgw_listener_pause(px, true);
        if (!ev_is_active(&px->accept_retry)) {   /* (another listener's may run) */
            ev_timer_set(&px->accept_retry, ACCEPT_RETRY, 0);
            ev_timer_start(loop, &px->accept_retry);
        }
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors or memory: the listener stays readable,
                 * so stop listening for a moment instead of spinning. */
                pgw_warn("accept_paused", "reason=\"%s\" retry_in=%.1fs clients=%d",
                         strerror(errno), ACCEPT_RETRY, px->nclients);
                pgw_listener_pause(px, true);
                if (!ev_is_active(&px->accept_retry)) {
                    ev_timer_set(&px->accept_retry, ACCEPT_RETRY, 0);
                    ev_timer_start(loop, &px->accept_retry);
                }
                return;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pgw_warn("accept", "reason=\"%s\"", strerror(errno));
            return;
        }
        if (px->shutting_down && !l->unix_sock) {
            close(fd);
            continue;
        }
        /* Beyond the cap a client still gets to send its first packet (a
         * CancelRequest must work when full; a StartupMessage gets a clear
         * 53300 after SSLRequest), within a hard bound. */
        /* Lingering sockets (linger.c) use free places under the cap
         * only: a client coming at cap closes the oldest. */
        while (px->nclients + px->nlingering >= px->client_cap && pgw_linger_evict(px))
            ;
        bool over = px->nclients >= px->client_cap;
        if (over && px->nrejecting >= px->overflow_cap && !pgw_session_over_limit_room(px)) {
            pgw_warn("client_rejected", "reason=%s clients=%d",
                     pgw_proxy_fd_limited(px) ? "open_files_limit" : "max_client_conn",
                     px->nclients);
            reject_full(px, fd);
            continue;
        }
        if (!l->unix_sock) {
#ifndef __linux__
            client_sockopts(px->cfg, fd);   /* Linux: inherited from the listener */
#endif
            if (tuned(px->cfg))
                client_tcp_tuning(px->cfg, fd);
        }
        struct pgw_session *s =
            pgw_session_create(px, fd, (struct sockaddr *)&sa, salen, l->unix_sock, over);
        if (s)
            s->late = px->shutting_down;
        if (!s)
            close(fd);
        else if (l->defer)
            ev_feed_event(loop, &s->cli_r, EV_READ);   /* its first bytes are here already */
    }
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pgw_proxy *px = pgw_container_of(w, struct pgw_proxy, accept_retry);
    /* During a shutdown the list holds at most the Unix socket kept for
     * peers' cancels (pgw_listener_close): it must listen again too. */
    pgw_listener_pause(px, false);
}

static int add_listener(struct pgw_proxy *px, int fd, bool unix_sock, const char *path)
{
    struct pgw_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return PGW_ENOMEM;
    l->fd = fd;
    l->px = px;
    l->unix_sock = unix_sock;
    l->path = path ? strdup(path) : NULL;
    ev_io_init(&l->io, accept_cb, fd, EV_READ);
    ev_io_start(px->loop, &l->io);
    l->next = px->listeners;
    px->listeners = l;
    return 0;
}

#define LISTEN_SEP PGW_CONF_LISTEN_SEP

/* The families listen_addr has a wildcard of ("*", "0.0.0.0", "::"). */
enum { WILD_INET = 1, WILD_INET6 = 2 };

static int wildcard_bit(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return in->sin_addr.s_addr == htonl(INADDR_ANY) ? WILD_INET : 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr) ? WILD_INET6 : 0;
    }
    return 0;
}

static bool same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6)
        return IN6_ARE_ADDR_EQUAL(&((const struct sockaddr_in6 *)a)->sin6_addr,
                                  &((const struct sockaddr_in6 *)b)->sin6_addr);
    return false;
}

static void format_addr(const struct sockaddr *sa, int port, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%d", host, port);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%d", host, port);
    }
}

/* An address listen_addr names twice (127.0.0.1 and localhost), or one a
 * wildcard of its family in the list already covers (127.0.0.1 beside
 * "*"), gets no socket of its own: its bind would fail with EADDRINUSE
 * (the one start-up stop that is not the operator's intent), and when
 * it came before the "*" the wildcard lost its IPv4 socket.  PgBouncer
 * warns and goes on with the sockets it could bind; so does pgwharf,
 * with the wildcard bound whatever the order. */
static bool redundant_addr(struct pgw_proxy *px, const struct sockaddr *sa, int wild,
                           const char *host, int port)
{
    char addr[INET6_ADDRSTRLEN + 16];
    format_addr(sa, port, addr, sizeof(addr));
    if (!wildcard_bit(sa) && (wild & (sa->sa_family == AF_INET6 ? WILD_INET6 : WILD_INET))) {
        pgw_warn("config", "key=listen_addr addr=%s reason=\"%s is covered by the wildcard "
                 "address of its family in listen_addr: listening there once\"", addr, host);
        return true;
    }
    for (const struct pgw_listener *l = px->listeners; l; l = l->next) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (l->unix_sock || getsockname(l->fd, (struct sockaddr *)&ss, &len) < 0)
            continue;
        if (same_addr(sa, (const struct sockaddr *)&ss)) {
            pgw_warn("config", "key=listen_addr addr=%s reason=\"%s names an address listen_addr "
                     "gives already: listening there once\"", addr, host);
            return true;
        }
    }
    return false;
}

/* A start-up error in errbuf, prefixed with the config line of key
 * ("file:line: ", the project's form) and, when what is set, with
 * "key what: " too, so that the message names the key. */
static void locate(const struct pgw_config *cfg, const char *key, const char *what,
                   char *errbuf, size_t errlen)
{
    if (what)
        pgw_conf_locate(cfg, key, errbuf, errlen, "%s %s", key, what);
    else
        pgw_conf_locate(cfg, key, errbuf, errlen, NULL);
}

static int resolve_tcp(const char *host, int port, struct addrinfo **res, char *errbuf,
                       size_t errlen)
{
    struct addrinfo hints = { 0 };
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, portstr, &hints, res);
    if (rc != 0) {
        snprintf(errbuf, errlen, "listen_addr %s: %s", host, gai_strerror(rc));
        return PGW_ECONFIG;
    }
    return 0;
}

/* The wildcard families the whole listen_addr list names, so that an
 * address before its "*" is known to be covered too. */
static int listen_wildcards(const char *list, int port)
{
    char *addrs = strdup(list);
    int wild = 0;
    char *save = NULL, err[256];
    for (char *tok = addrs ? strtok_r(addrs, LISTEN_SEP, &save) : NULL; tok;
         tok = strtok_r(NULL, LISTEN_SEP, &save)) {
        struct addrinfo *res = NULL;
        if (resolve_tcp(tok, port, &res, err, sizeof(err)) < 0)
            continue;           /* listen_tcp reports it */
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
            wild |= wildcard_bit(ai->ai_addr);
        freeaddrinfo(res);
    }
    free(addrs);
    return wild;
}

static int listen_tcp(struct pgw_proxy *px, const char *host, int port, int wild,
                      char *errbuf, size_t errlen)
{
    struct addrinfo *res = NULL;
    int rc = resolve_tcp(host, port, &res, errbuf, errlen);
    if (rc < 0)
        return rc;
    bool any = strcmp(host, "*") == 0;
    int opened = 0, skipped = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (redundant_addr(px, ai->ai_addr, wild, host, port)) {
            skipped++;
            continue;
        }
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        /* so_reuseport: another pgwharf may listen on the same port (a
         * rolling restart); the kernel spreads new clients over both. */
        if (px->cfg->so_reuseport &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
            snprintf(errbuf, errlen, "so_reuseport: %s", strerror(errno));
            close(fd);
            freeaddrinfo(res);
            return PGW_EIO;
        }
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        client_sockopts(px->cfg, fd);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
            listen(fd, px->cfg->listen_backlog > 0 ? px->cfg->listen_backlog : 128) < 0) {
            int err = errno;
            char addr[INET6_ADDRSTRLEN + 16];
            format_addr(ai->ai_addr, port, addr, sizeof(addr));
            snprintf(errbuf, errlen, "cannot listen on %s: %s", addr, strerror(err));
            close(fd);
            /* "*" on a host without IPv6 (or IPv4): that family is
             * missing, not taken; anything else stops the start. */
            if (any && (err == EADDRNOTAVAIL || err == EAFNOSUPPORT))
                continue;
            freeaddrinfo(res);
            return PGW_EIO;
        }
        /* Woken when a client's first bytes arrive, not at its handshake
         * (as PgBouncer's tcp_defer_accept): one wake-up less per login. */
        int secs = px->cfg->tcp_defer_accept;
        bool defer = secs > 0 &&
                     setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) == 0;
        if (add_listener(px, fd, false, NULL) < 0) {
            close(fd);
            freeaddrinfo(res);
            return PGW_ENOMEM;
        }
        px->listeners->defer = defer;
        opened++;
    }
    freeaddrinfo(res);
    if (!opened && !skipped) {
        if (!*errbuf)
            snprintf(errbuf, errlen, "cannot listen on %s:%d", host, port);
        return PGW_EIO;
    }
    errbuf[0] = '\0';
    return 0;
}

/* unix_socket_mode and unix_socket_group, as PgBouncer applies them.
 * Started as root with user = NAME, the socket is NAME's (and its group's
 * unless unix_socket_group says another), as PgBouncer's, which it makes
 * as that user: a root-owned one with a mode of 0660 shut NAME out of its
 * own console and its peers out of their cancel forwards. */
static int unix_socket_access(const struct pgw_config *cfg, const char *path, char *errbuf,
                              size_t errlen)
{
    struct passwd *pw = *cfg->user && geteuid() == 0 ? getpwnam(cfg->user) : NULL;
    if (pw) {             /* (no such user: the start stops at become_user, main.c) */
        if (chown(path, pw->pw_uid, pw->pw_gid) < 0) {
            snprintf(errbuf, errlen, "user \"%s\": cannot give it %s: %s", cfg->user, path,
                     strerror(errno));
            return -1;
        }
    }
    gid_t gid;
    int has_group = pgw_conf_unix_socket_gid(cfg, &gid);
    if (has_group < 0) {
        snprintf(errbuf, errlen, "unix_socket_group \"%s\": no such group",
                 cfg->unix_socket_group);
        return -1;
    }
    if (has_group > 0) {
        if (chown(path, (uid_t)-1, gid) < 0) {
            snprintf(errbuf, errlen, "unix_socket_group \"%s\": cannot chown %s: %s",
                     cfg->unix_socket_group, path, strerror(errno));
            return -1;
        }
    }
    int mode = pgw_conf_unix_socket_mode(cfg);
    if (chmod(path, (mode_t)(mode < 0 ? 0777 : mode)) < 0) {
        snprintf(errbuf, errlen, "unix_socket_mode: cannot chmod %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Does a process accept connections on the Unix socket at sun?  0: no
 * (no file, or nobody accepts: stale), 1: yes, or an errno value when
 * connect() cannot tell (EACCES: a socket pgwharf's user may not connect
 * to, another user's maybe, in use or not). */
static int socket_in_use(const struct sockaddr_un *sun, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int rc = connect(fd, (const struct sockaddr *)sun, len) == 0 ? 1 : 0;
    if (rc == 0) {
        if (errno == EAGAIN)        /* not blocking: a full backlog is a listener */
            rc = 1;
        else if (errno == EACCES || errno == EPERM)
            rc = errno;
    }
    close(fd);
    return rc;
}

/* A unix_socket_dir starting with '@' is a name in Linux's abstract
 * namespace (as PgBouncer and libpq take it): the socket "@dir/.s.PGSQL.N"
 * is no file, so nothing to unlink, chmod or chown (unix_socket_mode and
 * unix_socket_group do not apply), and it goes with the process.  Its
 * address is the name after a NUL, without a trailing one, as libpq
 * connects to it. */
static int listen_unix(struct pgw_proxy *px, const char *dir, int port, char *errbuf, size_t errlen)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    bool abstract = dir[0] == '@';
    /* path: what the log shows and close_all unlinks ("@..." for an
     * abstract name) */
    char path[sizeof(sun.sun_path) + 1];
    int n = snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", dir, port);
    if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
        snprintf(errbuf, errlen, "unix_socket_dir %s: path too long", dir);
        return PGW_ECONFIG;
    }
    memcpy(sun.sun_path, path, (size_t)n);
    socklen_t len = (socklen_t)sizeof(sun);
    if (abstract) {
        sun.sun_path[0] = '\0';
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        return PGW_EIO;
    }
    if (!abstract) {
        /* As PgBouncer: a socket some process still accepts on is not
         * taken over (a second pgwharf with the same unix_socket_dir and
         * port would have unlinked the first's); one nobody accepts on is
         * stale. */
        int used = socket_in_use(&sun, len);
        if (used == 1)
            snprintf(errbuf, errlen, "cannot listen on %s: a running process listens on it",
                     path);
        else if (used)              /* unlinking it could take a live one over */
            snprintf(errbuf, errlen, "cannot listen on %s: cannot tell whether a process "
                     "listens on it (connect: %s); remove it if it is stale", path,
                     strerror(used));
        if (used) {
            close(fd);
            return PGW_EIO;
        }
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sun, len) < 0 || listen(fd, 128) < 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return PGW_EIO;
    }
    if (!abstract && unix_socket_access(px->cfg, path, errbuf, errlen) < 0) {
        close(fd);
        unlink(path);
        return PGW_EIO;
    }
    if (add_listener(px, fd, true, path) < 0) {
        close(fd);
        return PGW_ENOMEM;
    }
    return 0;
}

/* One event=listening line per socket, with the address and port it is
 * bound to (a listen_addr of several addresses, a host name or "*" gives
 * several sockets), as PgBouncer's "listening on 127.0.0.1:6432". */
static void log_listening(const struct pgw_listener *l)
{
    if (l->unix_sock) {
        pgw_info("listening", "addr=%s", l->path);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char addr[INET6_ADDRSTRLEN + 16] = "?";
    if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0) {
        int port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
        format_addr((const struct sockaddr *)&ss, port, addr, sizeof(addr));
    }
    pgw_info("listening", "addr=%s", addr);
}

int pgw_listener_open_all(struct pgw_proxy *px, char *errbuf, size_t errlen)
{
    const struct pgw_config *cfg = px->cfg;
    errbuf[0] = '\0';
    ev_init(&px->accept_retry, accept_retry_cb);
    char *addrs = strdup(cfg->listen_addr ? cfg->listen_addr : "");
    if (!addrs)
        return PGW_ENOMEM;
    /* The Unix socket first, its mode and group set: once the TCP port
     * accepts (what a supervisor or a test waits for), every listener
     * is ready. */
    int rc = 0;
    if (cfg->unix_socket_dir && *cfg->unix_socket_dir)
        rc = listen_unix(px, cfg->unix_socket_dir, cfg->listen_port, errbuf, errlen);
    if (rc < 0) {
        static const char *const keys[] = { "unix_socket_group", "unix_socket_mode" };
        const char *key = NULL;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !key; i++)
            if (strncmp(errbuf, keys[i], strlen(keys[i])) == 0)
                key = keys[i];
        if (key)
            locate(cfg, key, NULL, errbuf, errlen);
        else
            locate(cfg, "unix_socket_dir",
                   strncmp(errbuf, "unix_socket_dir ", 16) ? cfg->unix_socket_dir : NULL,
                   errbuf, errlen);
    }
    int wild = listen_wildcards(addrs, cfg->listen_port);
    char *save = NULL;
    /* As PgBouncer: an address of the list that cannot be listened on (a
     * floating IP this node does not hold now) is a warning, as long as
     * another one of the list can; none at all stops the start. */
    int tcp_ok = 0, tcp_failed = 0;
    char first_err[512] = "";
    for (char *tok = strtok_r(addrs, LISTEN_SEP, &save); tok && rc == 0;
         tok = strtok_r(NULL, LISTEN_SEP, &save)) {
        int r = listen_tcp(px, tok, cfg->listen_port, wild, errbuf, errlen);
        if (r < 0 && strncmp(errbuf, "so_reuseport:", 13) == 0) {
            locate(cfg, "so_reuseport", NULL, errbuf, errlen);
            rc = r;
        } else if (r < 0) {     /* "listen_addr x: ..." names the key already */
            locate(cfg, "listen_addr", strncmp(errbuf, "listen_addr ", 12) ? tok : NULL,
                   errbuf, errlen);
            if (r != PGW_EIO) {
                rc = r;
            } else {
                if (!tcp_failed++)
                    snprintf(first_err, sizeof(first_err), "%s", errbuf);
                char q[600];
                pgw_warn("listen_failed", "addr=%s reason=%s", tok,
                         pgw_log_quote(q, sizeof(q), errbuf));
                errbuf[0] = '\0';
            }
        } else {
            tcp_ok++;
        }
    }
    if (rc == 0 && tcp_failed > 0 && tcp_ok == 0) {
        snprintf(errbuf, errlen, "%s", first_err);
        rc = PGW_EIO;
    }
    free(addrs);
    if (rc == 0 && !px->listeners) {
        snprintf(errbuf, errlen, "nothing to listen on: set listen_addr or unix_socket_dir");
        rc = PGW_ECONFIG;
    }
    if (rc == 0)
        for (struct pgw_listener *l = px->listeners; l; l = l->next)
            log_listening(l);
    return rc;
}

void pgw_listener_pause(struct pgw_proxy *px, bool paused)
{
    for (struct pgw_listener *l = px->listeners; l; l = l->next) {
        if (paused)
            ev_io_stop(px->loop, &l->io);
        else
            ev_io_start(px->loop, &l->io);
    }
}

void pgw_listener_close_all(struct pgw_proxy *px)
{
    pgw_listener_close(px, false);
}

void pgw_listener_close(struct pgw_proxy *px, bool keep_unix)
{
    if (ev_is_active(&px->accept_retry) && !keep_unix)
        ev_timer_stop(px->loop, &px->accept_retry);
    struct pgw_listener **at = &px->listeners, *l;
    while ((l = *at)) {
        if (keep_unix && l->unix_sock) {
            at = &l->next;
            continue;
        }
        *at = l->next;
        ev_io_stop(px->loop, &l->io);
        close(l->fd);
        if (l->path) {
            if (l->path[0] != '@')
                unlink(l->path);
            free(l->path);
        }
        free(l);
    }
}
