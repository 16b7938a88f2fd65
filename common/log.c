/* log.c - the logfmt logger (see log.h).  Owns the log fd. */
#include "common/log.h"
#include "common/err.h"
#include "common/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
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
static bool use_syslog;
static bool quiet;
static char syslog_ident[64];     /* openlog keeps the pointer */

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

int pgw_log_syslog(bool on, const char *ident, const char *facility)
{
    int fac = on ? pgw_log_syslog_facility(facility) : 0;
    if (fac < 0)
        return PGW_EINVAL;
    if (use_syslog)
        closelog();
    use_syslog = on;
    if (on) {
        snprintf(syslog_ident, sizeof(syslog_ident), "%s", ident && *ident ? ident : "pgwharf");
        openlog(syslog_ident, LOG_PID | LOG_NDELAY, fac);
    }
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

static void write_line(int fd, const char *line, size_t n)
{
    ssize_t w;
    do {
        w = write(fd, line, n);
    } while (w < 0 && errno == EINTR);
}

void pgw_log(enum pgw_log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_level)
        return;
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
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
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
    if (use_syslog) {
        /* syslog stamps its own time: from "level=" on */
        const char *rest = memchr(line, ' ', (size_t)n);
        rest = rest ? rest + 1 : line;
        syslog(syslog_prio[level], "%.*s", (int)(n - (rest - line)), rest);
    }
    line[n++] = '\n';
    /* As PgBouncer: stderr gets every line unless quiet (-q, -d), a
     * logfile too. */
    if (log_fd != STDERR_FILENO)
        write_line(log_fd, line, (size_t)n);
    if (!quiet)
        write_line(STDERR_FILENO, line, (size_t)n);
}
