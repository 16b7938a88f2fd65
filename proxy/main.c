/*
 * main.c - the pgwharf command: parse the command line, load the config,
 * run one proxy on the default loop, turn signals into reload/shutdown.
 *
 *   pgwharf CONFIG            run
 *   pgwharf --check CONFIG    validate, print the effective settings
 *   pgwharf --version | --help
 */
#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "conf/conf.h"
#include "proxy/proxy.h"

static void usage(FILE *f)
{
    fprintf(f,
            "pgwharf %s - a PostgreSQL connection pooler\n"
            "\n"
            "Usage:\n"
            "  pgwharf [OPTIONS] CONFIG     run with the given pgwharf.ini (or pgbouncer.ini)\n"
            "  pgwharf --check CONFIG       validate CONFIG, print the effective settings;\n"
            "                               exit 0 when valid, 2 with every error otherwise\n"
            "  pgwharf --version            print the version\n"
            "  pgwharf --help               this text\n"
            "\n"
            "Options:\n"
            "  -v, --verbose                log at debug level\n"
            "\n"
            "Signals: SIGHUP reloads the config; SIGTERM stops accepting and waits for\n"
            "clients (up to shutdown_timeout); SIGINT waits for servers to be released;\n"
            "SIGQUIT exits at once.\n",
            PGW_VERSION);
}

static struct pgw_config *load(const char *path, bool print_warnings)
{
    struct pgw_config *cfg = NULL;
    struct pgw_conf_diag diag = { 0 };
    int rc = pgw_conf_load(path, &cfg, &diag);
    if (print_warnings)
        for (int i = 0; i < diag.nwarnings; i++)
            fprintf(stderr, "%s\n", diag.warnings[i]);
    for (int i = 0; i < diag.nerrors; i++)
        fprintf(stderr, "%s\n", diag.errors[i]);
    pgw_conf_diag_free(&diag);
    if (rc < 0) {
        pgw_conf_free(cfg);
        return NULL;
    }
    return cfg;
}

static int check(const char *path)
{
    struct pgw_config *cfg = load(path, true);
    if (!cfg)
        return 2;
    int problems = pgw_proxy_check_files(cfg, stderr);
    if (problems == 0)
        pgw_conf_print(stdout, cfg);
    pgw_conf_free(cfg);
    return problems ? 2 : 0;
}


static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct pgw_proxy *px = w->data;
    switch (w->signum) {
    case SIGHUP:
        pgw_info("signal", "signal=SIGHUP action=reload");
        pgw_proxy_reload_file(px);
        break;
    case SIGTERM:
        pgw_info("signal", "signal=SIGTERM action=shutdown_wait_for_clients");
        pgw_proxy_shutdown(px, PGW_SHUTDOWN_WAIT_CLIENTS);
        break;
    case SIGINT:
        pgw_info("signal", "signal=SIGINT action=shutdown_wait_for_servers");
        pgw_proxy_shutdown(px, PGW_SHUTDOWN_WAIT_SERVERS);
        break;
    case SIGQUIT:
        pgw_info("signal", "signal=SIGQUIT action=shutdown_now");
        pgw_proxy_shutdown(px, PGW_SHUTDOWN_FAST);
        break;
    default:
        break;
    }
}

static int write_pidfile(const char *path)
{
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%d\n", (int)getpid());
    return fclose(f) == 0 ? 0 : -1;
}

/* user = NAME (PgBouncer's): started as root, become NAME once the
 * listeners (a port below 1024), the log and the pidfile are open.  Not
 * root: only NAME's own uid is accepted.  0, or -1 with err. */
static int become_user(const char *name, char *err, size_t errlen)
{
    struct passwd *pw = getpwnam(name);
    if (!pw) {
        snprintf(err, errlen, "user \"%s\": no such user", name);
        return -1;
    }
    if (geteuid() != 0) {
        if (pw->pw_uid == geteuid())
            return 0;
        snprintf(err, errlen, "user \"%s\": pgwharf must be started as root to become "
                 "another user", name);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        snprintf(err, errlen, "user \"%s\": %s", name, strerror(errno));
        return -1;
    }
    return 0;
}

static int run(const char *path)
{
    struct pgw_config *cfg = load(path, true);
    if (!cfg)
        return 2;
    int lvl = pgw_conf_log_level(cfg);
    if (lvl >= 0 && pgw_log_get_level() > PGW_LOG_DEBUG)
        pgw_log_set_level((enum pgw_log_level)lvl);
    if (pgw_log_open(cfg->logfile) < 0) {
        fprintf(stderr, "cannot open logfile %s: %s\n", cfg->logfile, strerror(errno));
        pgw_conf_free(cfg);
        return 1;
    }
    pgw_log_syslog(cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);   /* checked */
    char *pidfile = cfg->pidfile && *cfg->pidfile ? strdup(cfg->pidfile) : NULL;
    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    char err[512];
    struct pgw_proxy *px = pgw_proxy_create(loop, cfg, err, sizeof(err));
    if (!px) {
        char q[700];
        pgw_error("startup", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        fprintf(stderr, "pgwharf: %s\n", err);
        pgw_conf_free(cfg);
        free(pidfile);
        return 1;
    }
    if (write_pidfile(pidfile) < 0) {
        char qf[300];
        pgw_warn("pidfile", "file=%s reason=\"%s\"", pgw_log_quote(qf, sizeof(qf), pidfile),
                 strerror(errno));
    }
    if (*cfg->user && become_user(cfg->user, err, sizeof(err)) < 0) {
        char q[700];
        pgw_error("startup", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        fprintf(stderr, "pgwharf: %s\n", err);
        pgw_proxy_destroy(px);
        if (pidfile)
            unlink(pidfile);
        free(pidfile);
        ev_loop_destroy(loop);
        return 1;
    }
    static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGQUIT };
    ev_signal sw[4];
    for (int i = 0; i < 4; i++) {
        ev_signal_init(&sw[i], signal_cb, sigs[i]);
        sw[i].data = px;
        ev_signal_start(loop, &sw[i]);
        ev_unref(loop);
    }
    pgw_info("started", "version=%s pid=%d", PGW_VERSION, (int)getpid());
    while (!pgw_proxy_finished(px))
        ev_run(loop, 0);
    for (int i = 0; i < 4; i++) {
        ev_ref(loop);
        ev_signal_stop(loop, &sw[i]);
    }
    pgw_proxy_destroy(px);
    if (pidfile)
        unlink(pidfile);
    free(pidfile);
    pgw_info("stopped", "pid=%d", (int)getpid());
    ev_loop_destroy(loop);
    return 0;
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool do_check = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("pgwharf %s\n", PGW_VERSION);
            return 0;
        } else if (strcmp(a, "--check") == 0) {
            do_check = true;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            pgw_log_set_level(PGW_LOG_DEBUG);
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "pgwharf: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!config) {
            config = a;
        } else {
            fprintf(stderr, "pgwharf: one config file only\n");
            return 2;
        }
    }
    if (!config) {
        usage(stderr);
        return 2;
    }
    return do_check ? check(config) : run(config);
}
