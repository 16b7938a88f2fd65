/* log.c - the logfmt logger (see log.h).  Owns the log fd. */
#include "common/log.h"
#include "common/err.h"
#include "common/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <paths.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int log_fd = STDERR_FILENO;
static enum pgw_log_level log_level = PGW_LOG_INFO;
static enum pgw_log_level log_floor = PGW_LOG_FATAL;
static const char *const level_names[] = {
    "debug", "info", "notice", "warning", "error", "fatal"
};
static const int syslog_prio[] = {
    LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR, LOG_CRIT
};
static bool quiet;
static bool file_cut, stderr_cut;        /* see write_line */
static void write_line(int fd, const char *line, size_t n);

/* syslog = 1: pgwharf's own sender, not syslog(3), whose send() blocks
 * while the daemon's queue is full (a stalled journald or rsyslogd, or
 * just net.unix.max_dgram_qlen, 10 by default, datagrams it has not read
 * yet) and the loop with it.  Lines go to _PATH_LOG on a non-blocking
 * socket in syslog(3)'s format, "<PRI>Mmm dd hh:mm:ss ident[pid]: text";
 * one that finds no room is dropped and counted, and the count goes out
 * as a line of its own (event=log_dropped) after the next one that gets
 * through, when there is room for it too (before it, a daemon that reads
 * slower than pgwharf writes would get nothing but counts).  A daemon
 * restarted (ECONNREFUSED) is reconnected to at once, one that is not
 * there at most once a second.  On a stream socket (syslog-ng's
 * unix-stream) a line sent in part closes the connection, the daemon
 * left with a line cut short, rather than wait to send the rest.  The
 * lock: pgw_log may be called from any thread (none of today's helper
 * threads logs). */
static struct {
    pthread_mutex_t lock;
    bool on;
    int fd;                       /* -1: not connected */
    int type;                     /* SOCK_DGRAM, or SOCK_STREAM where _PATH_LOG is one */
    int facility;
    time_t retry_at;              /* no connect before this when it failed */
    unsigned long dropped;        /* lines lost since the last one sent */
    char ident[64];
} sl = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1, .type = SOCK_DGRAM };

int pgw_log_syslog_facility(const char *name)
{
    static const struct { const char *name; int value; } fac[] = {
        { "auth", LOG_AUTH }, { "authpriv", LOG_AUTHPRIV }, { "daemon", LOG_DAEMON },
        { "user", LOG_USER }, { "local0", LOG_LOCAL0 }, { "local1", LOG_LOCAL1 },
        { "local2", LOG_LOCAL2 }, { "local3", LOG_LOCAL3 }, { "local4", LOG_LOCAL4 },
        { "local5", LOG_LOCAL5 }, { "local6", LOG_LOCAL6 }, { "local7", LOG_LOCAL7 },
    };
    for (size_t i = 0; name && i < sizeof(fac) / sizeof(fac[0]); i++)
        if (strcasecmp(name, fac[i].name) == 0)
            return fac[i].value;
    return -1;
}

static void sl_close(void)
{
    if (sl.fd >= 0)
        close(sl.fd);
    sl.fd = -1;
}

/* A datagram socket, or a stream one where _PATH_LOG is that (as
 * syslog(3) does); neither blocks. */
static void sl_connect(void)
{
    static const int types[] = { SOCK_DGRAM, SOCK_STREAM };
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", _PATH_LOG);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        int fd = socket(AF_UNIX, types[i] | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            sl.fd = fd;
            sl.type = types[i];
            return;
        }
        int e = errno;
        close(fd);
        if (e != EPROTOTYPE)
            return;
    }
}

/* One line out, whole or not at all.  False when it was not sent: no
 * room (the caller counts it) or no daemon (the socket is closed). */
static bool sl_send(int prio, const char *text, size_t len)
{
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    char msg[2400];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    int h = snprintf(msg, sizeof(msg), "<%d>%s %2d %02d:%02d:%02d %s[%ld]: ",
                     sl.facility | prio, months[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, sl.ident, (long)getpid());
    if (h < 0 || (size_t)h >= sizeof(msg))
        return false;
    size_t room = sizeof(msg) - (size_t)h - 1;          /* a stream's NUL */
    size_t len0 = (size_t)h + (len < room ? len : room);
    memcpy(msg + h, text, len0 - (size_t)h);
    msg[len0] = '\0';                   /* syslog(3)'s frame end on a stream */
    for (int attempt = 0; attempt < 2 && sl.fd >= 0; attempt++) {
        size_t n = len0 + (sl.type == SOCK_STREAM);     /* (the type may change on reconnecting) */
        ssize_t w;
        do {
            w = send(sl.fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (w < 0 && errno == EINTR);
        if (w == (ssize_t)n)
            return true;
        if (w >= 0 || (errno != ECONNREFUSED && errno != ENOTCONN && errno != EPIPE &&
                       errno != ECONNRESET)) {
            if (w >= 0)
                sl_close();              /* a stream cut mid-line: its framing is lost */
            return false;                /* EAGAIN, ENOBUFS: no room now */
        }
        sl_close();                      /* the daemon went: connect again, once */
        sl_connect();
    }
    if (sl.fd < 0)
        sl.retry_at = now + 1;
    return false;
}

static void sl_line(int prio, const char *text, size_t len)
{
    pthread_mutex_lock(&sl.lock);
    if (sl.on) {
        if (sl.fd < 0 && time(NULL) >= sl.retry_at) {
            sl_connect();
            if (sl.fd < 0)
                sl.retry_at = time(NULL) + 1;
        }
        if (sl.fd < 0 || !sl_send(prio, text, len)) {
            sl.dropped++;
        } else if (sl.dropped) {
            char note[96];
            int m = snprintf(note, sizeof(note),
                             "level=warning event=log_dropped target=syslog lines=%lu", sl.dropped);
            if (sl_send(LOG_WARNING, note, (size_t)m))
                sl.dropped = 0;
        }
    }
    pthread_mutex_unlock(&sl.lock);
}

int pgw_log_syslog(bool on, const char *ident, const char *facility)
{
    int fac = on ? pgw_log_syslog_facility(facility) : 0;
    if (fac < 0)
        return PGW_EINVAL;
    pthread_mutex_lock(&sl.lock);
    sl_close();
    if (!on)
        sl.dropped = 0;                  /* (a reload keeps the count to report) */
    __atomic_store_n(&sl.on, on, __ATOMIC_RELAXED);
    sl.facility = fac;
    sl.retry_at = 0;
    if (on) {
        snprintf(sl.ident, sizeof(sl.ident), "%s", ident && *ident ? ident : "pgwharf");
        sl_connect();
    }
    pthread_mutex_unlock(&sl.lock);
    return 0;
}

int pgw_log_file_open(const char *path)
{
    if (!path || !*path)
        return STDERR_FILENO;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return fd < 0 ? PGW_EIO : fd;
}

void pgw_log_use(int fd)
{
    int old = log_fd;
    log_fd = fd;
    /* A new file starts with a new line; the same file reopened (every
     * reload reopens it) still lacks the newline of its cut line.  A file
     * left for another (logrotate renamed it, the logfile setting changed)
     * gets that newline now, before it is closed: no later write ends its
     * last line.  Best effort: a disk still full leaves it cut. */
    struct stat a, b;
    if (fd != old && !(fstat(fd, &a) == 0 && fstat(old, &b) == 0 && a.st_dev == b.st_dev &&
                       a.st_ino == b.st_ino)) {
        if (file_cut && old != STDERR_FILENO)
            write_line(old, "", 0);          /* the newline alone */
        file_cut = false;
    }
    if (old != STDERR_FILENO && old != fd)
        close(old);
}

int pgw_log_open(const char *path)
{
    int fd = pgw_log_file_open(path);
    if (fd < 0)
        return fd;
    pgw_log_use(fd);
    return 0;
}

void pgw_log_set_level(enum pgw_log_level level)
{
    log_level = level < log_floor ? level : log_floor;
}

void pgw_log_set_floor(enum pgw_log_level floor)
{
    log_floor = floor;
    if (log_level > floor)
        log_level = floor;
}
void pgw_log_set_quiet(bool q) { quiet = q; }
enum pgw_log_level pgw_log_get_level(void) { return log_level; }

int pgw_log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

/* A character a log line must not carry as it is: C0 controls, DEL, the C1
 * controls (NEL, U+0085, among them) and U+2028/U+2029, which some log
 * viewers take for the end of a line. */
static bool log_unsafe(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 ||
           cp == 0x2029;
}

const char *pgw_log_quote(char *buf, size_t size, const char *value)
{
    if (!value)
        value = "";
    int plain = *value != '\0';
    uint32_t cp;
    for (const char *p = value; *p && plain; p++) {
        if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || log_unsafe((unsigned char)*p)) {
            plain = 0;
        } else if ((unsigned char)*p >= 0x80) {
            size_t n = pgw_utf8_decode((const unsigned char *)p, &cp);
            if (n == 0 || log_unsafe(cp))
                plain = 0;
            else
                p += n - 1;
        }
    }
    if (plain) {
        size_t n = strlen(value);
        if (size == 0)
            return buf;
        if (n >= size)           /* cut between characters */
            for (n = size - 1; n > 0 && ((unsigned char)value[n] & 0xC0) == 0x80; n--)
                ;
        memcpy(buf, value, n);
        buf[n] = '\0';
        return buf;
    }
    size_t o = 0;
    if (size < 3) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    buf[o++] = '"';
    for (const char *p = value; *p && o + 3 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c == '\n') {
            buf[o++] = '\\';
            buf[o++] = 'n';
        } else if (c < 0x20) {
            buf[o++] = ' ';
        } else if (c == 0x7f) {
            if (o + 6 > size)
                break;
            snprintf(buf + o, 5, "\\x%02X", c);
            o += 4;
        } else if (c >= 0x80) {
            /* A client's name need not be UTF-8: bytes that are not go
             * out as \xNN, so that the log stays UTF-8 (log shippers);
             * a C1 control or line separator as \uNNNN. */
            size_t n = pgw_utf8_decode((const unsigned char *)p, &cp);
            if (n == 0) {
                if (o + 6 > size)
                    break;
                snprintf(buf + o, 5, "\\x%02X", c);
                o += 4;
            } else if (log_unsafe(cp)) {
                if (o + 8 > size)
                    break;
                snprintf(buf + o, 7, "\\u%04X", (unsigned)cp);
                o += 6;
                p += n - 1;
            } else {
                if (o + n + 2 > size)
                    break;               /* no character cut in two */
                memcpy(buf + o, p, n);
                o += n;
                p += n - 1;
            }
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* A line the logfile or stderr got only part of (a full disk, a
 * non-blocking pipe, RLIMIT_FSIZE: SIGXFSZ is ignored, proxy/main.c): the
 * next line written there starts with the newline it lacks (file_cut,
 * stderr_cut), so each event stays on a line of its own (the next event
 * was glued to the cut one).  What is left of the line is written at once
 * while the fd takes it; a regular file that took part of a line fails the
 * next write (ENOSPC, EFBIG): no wait. */
static void write_line(int fd, const char *line, size_t n)
{
    bool *cut = fd == STDERR_FILENO ? &stderr_cut : &file_cut;
    size_t done = 0;
    if (*cut) {
        ssize_t w;
        do {
            w = write(fd, "\n", 1);
        } while (w < 0 && errno == EINTR);
        if (w != 1)
            return;                      /* still no room: the line is lost */
        *cut = false;
    }
    while (done < n) {
        ssize_t w = write(fd, line + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    *cut = done > 0 && done < n;
}

static void log_line(enum pgw_log_level level, const char *event, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void log_line(enum pgw_log_level level, const char *event, const char *fmt, va_list ap)
{
    int saved_errno = errno;             /* callers may read it after logging */
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000),
                     level_names[level], event);
    if (fmt && *fmt && n < (int)sizeof(line) - 2) {
        line[n++] = ' ';
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    /* One line per event whatever a value held: a control character left
     * unquoted (a name from a client, a server's message) becomes a space,
     * so no value can end the line or start a forged one. */
    for (int i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = ' ';
    if (__atomic_load_n(&sl.on, __ATOMIC_RELAXED)) {
        /* syslog stamps its own time: from "level=" on */
        const char *rest = memchr(line, ' ', (size_t)n);
        rest = rest ? rest + 1 : line;
        sl_line(syslog_prio[level], rest, (size_t)(n - (rest - line)));
    }
    line[n++] = '\n';
    /* As PgBouncer: stderr gets every line unless quiet (-q, -d), a
     * logfile too. */
    if (log_fd != STDERR_FILENO)
        write_line(log_fd, line, (size_t)n);
    if (!quiet)
        write_line(STDERR_FILENO, line, (size_t)n);
    errno = saved_errno;
}

void pgw_log(enum pgw_log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, event, fmt, ap);
    va_end(ap);
}

void pgw_log_always(enum pgw_log_level level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_line(level, event, fmt, ap);
    va_end(ap);
}
