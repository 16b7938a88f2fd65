/*
 * proxy.h - the client-facing side of pgwharf: listeners, client sessions,
 * authentication, the relay, cancel forwarding, the admin console and the
 * metrics endpoint, all on one libev loop.
 *
 * main.c makes one struct pgw_proxy per loop, feeds it signals (as
 * pgw_proxy_reload / pgw_proxy_shutdown) and runs the loop until
 * pgw_proxy_finished() says it may exit.
 */
#ifndef PGW_PROXY_PROXY_H
#define PGW_PROXY_PROXY_H

#include <ev.h>
#include <stdbool.h>
#include <stdio.h>

#include "conf/conf.h"

struct pgw_proxy;

enum pgw_shutdown_mode {
    PGW_SHUTDOWN_FAST,            /* SIGQUIT: close everything now */
    PGW_SHUTDOWN_WAIT_CLIENTS,    /* SIGTERM: stop accepting, let clients finish */
    PGW_SHUTDOWN_WAIT_SERVERS     /* SIGINT: stop accepting, wait for servers to be released */
};

/* Takes ownership of cfg.  Returns NULL and a message in errbuf on failure
 * (cannot bind, unreadable auth_file, ...). */
struct pgw_proxy *pgw_proxy_create(struct ev_loop *loop, struct pgw_config *cfg,
                                   char *errbuf, size_t errlen);

/* After the change to `user`: scram_salt_key_file is read again at every
 * reload, now as that user.  0, or -1 with a file:line error in err. */
int pgw_proxy_check_salt_key(const struct pgw_config *cfg, char *err, size_t errlen);

/* What `pgwharf --check` adds to the config file's own checks: the files
 * it names (auth_file, auth_hba_file, TLS keys and certificates) load.
 * Prints each problem to err; returns the number of problems. */
int pgw_proxy_check_files(const struct pgw_config *cfg, FILE *err);
/* Swap in a new config (takes ownership); nobody is dropped.  Returns 0,
 * or PGW_ECONFIG when a file it names (auth_file, auth_hba_file, TLS keys)
 * does not load: then the old config stays, as the log says. */
int pgw_proxy_reload(struct pgw_proxy *px, struct pgw_config *cfg);
/* Re-read cfg->file; on errors logs each with file:line and keeps the old
 * config.  Returns 0 or PGW_ECONFIG. */
int pgw_proxy_reload_file(struct pgw_proxy *px);
/* The running `user` came from the command line (-u), which wins over the
 * file's at start: a reload keeps it without a word about the file's. */
void pgw_proxy_user_from_command_line(struct pgw_proxy *px);
void pgw_proxy_shutdown(struct pgw_proxy *px, enum pgw_shutdown_mode mode);
/* SIGUSR1 (pause) / SIGUSR2 (resume): the admin console's PAUSE and
 * RESUME of every database, as PgBouncer. */
void pgw_proxy_pause_all(struct pgw_proxy *px, bool pause);
/* A shutdown (signal or admin SHUTDOWN) has begun. */
bool pgw_proxy_shutting_down(const struct pgw_proxy *px);
/* True once a shutdown has completed and the loop may stop. */
bool pgw_proxy_finished(const struct pgw_proxy *px);
void pgw_proxy_destroy(struct pgw_proxy *px);

#endif
