/*
 * sdnotify.h - systemd's readiness protocol (sd_notify(3)) without
 * libsystemd: a service of Type=notify (Debian's pgbouncer.service) is
 * started once it says READY=1.
 */
#ifndef PGW_COMMON_SDNOTIFY_H
#define PGW_COMMON_SDNOTIFY_H

/* Send state ("READY=1", "RELOADING=1", "STOPPING=1", lines of
 * KEY=value) to the socket $NOTIFY_SOCKET names, a path or an abstract
 * name (@...).  1 when sent, 0 when there is no such variable (not under
 * systemd), -1 on failure (errno set). */
int pgw_sd_notify(const char *state);

#endif
