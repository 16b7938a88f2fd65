/*
 * log.h - one line per event, in logfmt:
 *   ts=2026-11-30T10:31:08.123Z level=info event=login client=127.0.0.1:5123 db=app user=bob
 *
 * The logger is process-wide (like nginx's error log): each line goes out in
 * a single write(2), so lines from several loop threads never interleave.
 * Fields are given as a printf format of `key=value` pairs; pgw_log_quote()
 * makes a value safe for logfmt when it may hold spaces or quotes.
 */
#ifndef PGW_COMMON_LOG_H
#define PGW_COMMON_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum pgw_log_level {
    PGW_LOG_DEBUG,
    PGW_LOG_INFO,
    PGW_LOG_NOTICE,
    PGW_LOG_WARNING,
    PGW_LOG_ERROR,
    PGW_LOG_FATAL
};

/* Send lines to this file (NULL or "" = stderr).  Reopens when called again
 * (SIGHUP, for logrotate).  Returns 0 or PGW_EIO. */
int pgw_log_open(const char *path);
/* pgw_log_open in two steps, for a reload that must not change anything
 * when it fails: open the file (errno set on PGW_EIO; NULL or "" gives
 * stderr), then switch to it once nothing else can fail. */
int pgw_log_file_open(const char *path);
void pgw_log_use(int fd);
/* Lines go to stderr and, when set, to the logfile too (as PgBouncer in
 * the foreground).  Quiet (-q, -d): none to stderr; syslog and a logfile
 * still get them. */
void pgw_log_set_quiet(bool quiet);
/* The level; never less verbose than the floor (-v on the command line:
 * a reload's log_level does not undo it). */
void pgw_log_set_level(enum pgw_log_level level);
void pgw_log_set_floor(enum pgw_log_level floor);
enum pgw_log_level pgw_log_get_level(void);
/* Parse "debug", "info", ...; returns -1 when unknown. */
int pgw_log_level_parse(const char *name);

void pgw_log(enum pgw_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same whatever the level lets through: for the line that records a
 * change of the level itself (admin_set of log_level = error), the caller
 * having checked the level before the change. */
void pgw_log_always(enum pgw_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* syslog = 1 (PgBouncer's keys): every line also goes to the syslog daemon
 * (/dev/log, in syslog(3)'s format, never waiting: log.c), under ident and
 * facility (auth, authpriv, daemon, user, local0-local7), at the line's
 * level.  Off when on is false.  0, or PGW_EINVAL for an unknown
 * facility (nothing changes then). */
int pgw_log_syslog(bool on, const char *ident, const char *facility);
/* The facility's syslog(3) value, or -1 when unknown. */
int pgw_log_syslog_facility(const char *name);

/* Quote a value for logfmt into buf (always NUL-terminated); returns buf. */
const char *pgw_log_quote(char *buf, size_t size, const char *value);

#define pgw_debug(ev, ...)                                                                  \
    do {                                                                                    \
        if (pgw_log_get_level() <= PGW_LOG_DEBUG)                                           \
            pgw_log(PGW_LOG_DEBUG, ev, __VA_ARGS__);                                        \
    } while (0)
#define pgw_info(ev, ...)   pgw_log(PGW_LOG_INFO, ev, __VA_ARGS__)
#define pgw_notice(ev, ...) pgw_log(PGW_LOG_NOTICE, ev, __VA_ARGS__)
#define pgw_warn(ev, ...)   pgw_log(PGW_LOG_WARNING, ev, __VA_ARGS__)
#define pgw_error(ev, ...)  pgw_log(PGW_LOG_ERROR, ev, __VA_ARGS__)

#endif
