/*
 * nss_gate.c - an LD_PRELOAD library that holds getpwuid_r, getgrnam and
 * getaddrinfo until a test lets them go, standing in for an NSS backend
 * (LDAP, sssd, DNS) that is slow to answer.
 *
 * With PGW_GETPW_GATE (getpwuid_r), PGW_GETGR_GATE (getgrnam) or
 * PGW_GETADDRINFO_GATE (getaddrinfo)
 * naming a FIFO that exists, each call (getaddrinfo: of a name, not of a
 * numeric address) first opens it for reading, which
 * blocks until a writer opens it, then reads to end of file; without the
 * variable, or once the FIFO is gone, it is glibc's function at once.  A
 * test sees a call waiting at the gate when open(fifo, O_WRONLY |
 * O_NONBLOCK) succeeds (ENXIO while nobody reads), and releases it by
 * closing that descriptor (unlinking the FIFO first lets later calls
 * through too).
 *
 * With PGW_FAKE_HOSTS=NAME=ADDR,ADDR,... getaddrinfo of NAME answers
 * those numeric addresses, in that order (each looked up by glibc, the
 * lists chained: freeaddrinfo frees them as its own), as a DNS name with
 * several A records would: test_hosts.py spreads servers over them.
 *
 * With PGW_GETADDRINFO_FAIL=PATH, a getaddrinfo of a name while PATH
 * exists removes it and fails with EAI_MEMORY: one failure each time a
 * test creates the file (glibc short of memory for the lookup).  A file
 * that starts with "keep" is left there: every lookup fails until the
 * test removes it (a shortage that lasts).
 *
 * With PGW_THREAD_FAIL=PATH, a pthread_create while PATH exists removes it
 * and fails with EAGAIN: one failure each time a test creates the file
 * (no thread for a host name's lookup: the threads limit, or memory).
 *
 * With PGW_EPOLL_FAIL=PATH, an epoll_ctl adding or changing a descriptor
 * while PATH exists removes it and fails with ENOMEM: one failure each time
 * a test creates the file (the kernel short of memory for the event).
 *
 * With PGW_SEND_FAIL=PATH, a send(2) on a Unix-domain socket connected to
 * a named one (pgwharf's connection to a server on PostgreSQL's Unix
 * socket; not a client's on pgwharf's own) while PATH exists removes it
 * and fails with ECONNRESET: one failure each time a test creates the
 * file (the server lost just as pgwharf writes to it).  Only send(2) is
 * seen: run pgwharf with io_batch = off, or its batched writes go out
 * through io_uring and never fail here.
 *
 * tests/integration/test_auth.py uses it to show that a peer login waiting
 * on the user database leaves the rest of pgwharf running, test_hosts.py
 * to hold a backend's name lookup while a reload moves its pools away,
 * test_proxy.py to hold the start-up at unix_socket_group's look-up,
 * test_pipeline.py to lose a server as pgwharf writes to it,
 * test_pgbouncer_keys.py to fail a host name's lookup for want of memory
 * or of a thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <stddef.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

typedef int (*getpwuid_r_fn)(uid_t, struct passwd *, char *, size_t, struct passwd **);
typedef struct group *(*getgrnam_fn)(const char *);
typedef int (*getaddrinfo_fn)(const char *, const char *, const struct addrinfo *,
                              struct addrinfo **);

/* Wait at the FIFO the variable names, if it names one that exists. */
static void gate_wait(const char *var)
{
    const char *gate = getenv(var);
    if (!gate || !*gate)
        return;
    int fd = open(gate, O_RDONLY);
    if (fd < 0)
        return;
    char c[64];
    while (read(fd, c, sizeof(c)) > 0)
        ;
    close(fd);
}

/* Does the file at path start with "keep"? */
static int kept(const char *path)
{
    char c[4];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, c, sizeof(c));
    close(fd);
    return n == (ssize_t)sizeof(c) && memcmp(c, "keep", sizeof(c)) == 0;
}

/* PGW_FAKE_HOSTS's answer for node: 0 or an EAI_ code, or 1 when it does
 * not name node. */
static int fake_hosts(getaddrinfo_fn real, const char *node, const char *service,
                      const struct addrinfo *hints, struct addrinfo **res)
{
    const char *spec = getenv("PGW_FAKE_HOSTS");
    size_t n = node ? strlen(node) : 0;
    if (!spec || !n || strncmp(spec, node, n) != 0 || spec[n] != '=')
        return 1;
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", spec + n + 1);
    struct addrinfo *head = NULL, **tail = &head;
    char *save = NULL;
    for (char *a = strtok_r(buf, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
        struct addrinfo *r = NULL;
        if (real(a, service, hints, &r) != 0 || !r)
            continue;
        *tail = r;
        while (r->ai_next)
            r = r->ai_next;
        tail = &r->ai_next;
    }
    *res = head;
    return head ? 0 : EAI_NONAME;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    getaddrinfo_fn real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (real) {
        int rc = fake_hosts(real, node, service, hints, res);
        if (rc != 1)
            return rc;
    }
    unsigned char a[16];
    if (node && inet_pton(AF_INET, node, a) != 1 && inet_pton(AF_INET6, node, a) != 1) {
        const char *fail = getenv("PGW_GETADDRINFO_FAIL");
        if (fail && *fail && (kept(fail) || unlink(fail) == 0))
            return EAI_MEMORY;
        gate_wait("PGW_GETADDRINFO_GATE");      /* names only: libpq asks for numbers too */
    }
    if (!real)
        return EAI_SYSTEM;
    return real(node, service, hints, res);
}

int getpwuid_r(uid_t uid, struct passwd *pw, char *buf, size_t len, struct passwd **result)
{
    getpwuid_r_fn real = (getpwuid_r_fn)dlsym(RTLD_NEXT, "getpwuid_r");
    gate_wait("PGW_GETPW_GATE");
    if (!real) {
        *result = NULL;
        return 38;                    /* ENOSYS */
    }
    return real(uid, pw, buf, len, result);
}

struct group *getgrnam(const char *name)
{
    getgrnam_fn real = (getgrnam_fn)dlsym(RTLD_NEXT, "getgrnam");
    gate_wait("PGW_GETGR_GATE");
    return real ? real(name) : NULL;
}

typedef int (*epoll_ctl_fn)(int, int, int, struct epoll_event *);

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    epoll_ctl_fn real = (epoll_ctl_fn)dlsym(RTLD_NEXT, "epoll_ctl");
    const char *path = getenv("PGW_EPOLL_FAIL");
    if (path && *path && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && unlink(path) == 0) {
        errno = ENOMEM;
        return -1;
    }
    return real(epfd, op, fd, ev);
}

typedef ssize_t (*send_fn)(int, const void *, size_t, int);

/* Is fd a Unix-domain socket whose peer has a name (a server's socket)? */
static int unix_to_named(int fd)
{
    struct sockaddr_un a;
    socklen_t len = sizeof(a);
    memset(&a, 0, sizeof(a));
    if (getpeername(fd, (struct sockaddr *)&a, &len) != 0 || a.sun_family != AF_UNIX)
        return 0;
    return len > offsetof(struct sockaddr_un, sun_path) && a.sun_path[0] != '\0';
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    send_fn real = (send_fn)dlsym(RTLD_NEXT, "send");
    const char *path = getenv("PGW_SEND_FAIL");
    if (path && *path && unix_to_named(fd) && unlink(path) == 0) {
        errno = ECONNRESET;
        return -1;
    }
    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    return real(fd, buf, n, flags);
}

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    pthread_create_fn real = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
    const char *path = getenv("PGW_THREAD_FAIL");
    if (path && *path && unlink(path) == 0)
        return EAGAIN;
    if (!real)
        return ENOSYS;
    return real(t, attr, fn, arg);
}
