/*
 * main.c - the pgwharf command: parse the command line, load the config,
 * run one proxy on the default loop, turn signals into reload/shutdown.
 *
 *   pgwharf [-d] [-q] [-u USER] [-v] CONFIG    run (PgBouncer's options)
 *   pgwharf --check CONFIG    validate, print the effective settings
 *   pgwharf --version | --help
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sdnotify.h"
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
            "Options (as PgBouncer's):\n"
            "  -d, --daemon                 run in the background (needs pidfile, and logfile\n"
            "                               or syslog); returns once pgwharf listens\n"
            "  -q, --quiet                  no log lines on stderr (logfile, syslog go on)\n"
            "  -u, --user=USER              become USER after start (overrides the user key)\n"
            "  -v, --verbose                log at debug level\n"
            "\n"
            "Signals: SIGHUP reloads the config; SIGTERM stops accepting and waits for\n"
            "clients (up to shutdown_timeout); SIGINT waits for servers to be released;\n"
            "SIGQUIT exits at once, as does a second SIGTERM or SIGINT.\n",
            PGW_VERSION);
}

/* Load path; errors (and, with print_warnings, warnings) go to stderr as
 * "file:line: ..." lines.  The warnings stay in *diag for the caller. */
static struct pgw_config *load(const char *path, bool print_warnings, struct pgw_conf_diag *diag)
{
    struct pgw_config *cfg = NULL;
    int rc = pgw_conf_load(path, &cfg, diag);
    if (print_warnings)
        for (int i = 0; i < diag->nwarnings; i++)
            fprintf(stderr, "%s\n", diag->warnings[i]);
    for (int i = 0; i < diag->nerrors; i++)
        fprintf(stderr, "%s\n", diag->errors[i]);
    if (rc < 0) {
        pgw_conf_free(cfg);
        pgw_conf_diag_free(diag);
        return NULL;
    }
    return cfg;
}

static int check(const char *path)
{
    struct pgw_conf_diag diag = { 0 };
    struct pgw_config *cfg = load(path, true, &diag);
    pgw_conf_diag_free(&diag);
    if (!cfg)
        return 2;
    int problems = pgw_proxy_check_files(cfg, stderr);
    if (problems == 0)
        pgw_conf_print(stdout, cfg);
    pgw_conf_free(cfg);
    return problems ? 2 : 0;
}


/* Tell systemd (Type=notify, as Debian's pgbouncer.service) where we are;
 * nothing when not started by it. */
static void notify_systemd(const char *state)
{
    if (pgw_sd_notify(state) < 0) {
        char q[256], qs[256];
        const char *why = strerror(errno);
        pgw_warn("sd_notify", "state=%s reason=%s", pgw_log_quote(qs, sizeof(qs), state),
                 pgw_log_quote(q, sizeof(q), why));
    }
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct pgw_proxy *px = w->data;
    switch (w->signum) {
    case SIGHUP:
        pgw_info("signal", "signal=SIGHUP action=reload");
        /* (STOPPING=1 is sent by pgw_proxy_shutdown, whatever asked) */
        if (!pgw_proxy_shutting_down(px))
            notify_systemd("RELOADING=1");
        pgw_proxy_reload_file(px);
        if (!pgw_proxy_shutting_down(px))
            notify_systemd("READY=1");
        break;
    case SIGTERM:
    case SIGINT:
        if (pgw_proxy_shutting_down(px)) {
            /* A second one (or one after SHUTDOWN WAIT_FOR_*): as
             * PgBouncer, stop waiting. */
            pgw_info("signal", "signal=%s action=shutdown_now reason=\"already shutting down\"",
                     w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
            pgw_proxy_shutdown(px, PGW_SHUTDOWN_FAST);
            break;
        }
        if (w->signum == SIGINT) {
            pgw_info("signal", "signal=SIGINT action=shutdown_wait_for_servers");
            pgw_proxy_shutdown(px, PGW_SHUTDOWN_WAIT_SERVERS);
            break;
        }
        pgw_info("signal", "signal=SIGTERM action=shutdown_wait_for_clients");
        pgw_proxy_shutdown(px, PGW_SHUTDOWN_WAIT_CLIENTS);
        break;
    case SIGQUIT:
        pgw_info("signal", "signal=SIGQUIT action=shutdown_now");
        pgw_proxy_shutdown(px, PGW_SHUTDOWN_FAST);
        break;
    case SIGUSR1:
    case SIGUSR2:
        /* A shutdown is not taken back (its listeners are closed, for a
         * rolling restart): said so rather than logged as done. */
        if (pgw_proxy_shutting_down(px)) {
            pgw_info("signal", "signal=%s action=none reason=\"shutting down\"",
                     w->signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
            break;
        }
        pgw_info("signal", "signal=%s action=%s", w->signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2",
                 w->signum == SIGUSR1 ? "pause" : "resume");
        pgw_proxy_pause_all(px, w->signum == SIGUSR1);
        break;
    default:
        break;
    }
}

/* As PgBouncer: created, never overwritten (O_EXCL: of two pgwharfs
 * started at once with one pidfile, the second fails here), by the user
 * pgwharf runs as, so that it can remove the file at exit.  0, or -1 with
 * err. */
static int write_pidfile(const char *path, char *err, size_t errlen)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "pidfile %s: cannot create it: %s", path, strerror(errno));
        return -1;
    }
    ssize_t w;
    do {
        w = write(fd, buf, (size_t)n);
    } while (w < 0 && errno == EINTR);
    int saved = errno;
    if (close(fd) < 0 && w == n) {
        saved = errno;
        w = -1;
    }
    if (w != n) {
        unlink(path);
        snprintf(err, errlen, "pidfile %s: cannot write it: %s", path,
                 w < 0 ? strerror(saved) : "short write");
        return -1;
    }
    return 0;
}

/* As PgBouncer: a pidfile naming a live process means another pgwharf
 * runs (refuse to start); one naming no process is stale (removed); one
 * that cannot be read, or holds no pid, may be another's (refuse).  0, or
 * -1 with err. */
static int check_pidfile(const char *path, char *err, size_t errlen)
{
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "pidfile %s: cannot read it: %s", path, strerror(errno));
        return -1;
    }
    long pid = 0;
    int got = fscanf(f, "%ld", &pid);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr) {
        /* a directory (fopen takes one): not a pidfile without a pid */
        snprintf(err, errlen, "pidfile %s: cannot read it: %s", path, strerror(rerr));
        return -1;
    }
    if (got != 1 || pid <= 0) {
        /* As PgBouncer: maybe another pgwharf's, created (O_EXCL) and not
         * yet written; removing it would leave that one without. */
        snprintf(err, errlen, "pidfile %s: exists without a pid (another pgwharf starting?); "
                 "remove it if it is stale", path);
        return -1;
    }
    if (pid != getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
        snprintf(err, errlen, "pidfile %s: pgwharf (pid %ld) is already running", path, pid);
        return -1;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "pidfile %s: cannot remove the stale file: %s", path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* -d: fork twice (a new session, not its leader) and return in the
 * grandchild; the first process waits on a pipe and exits with the status
 * the grandchild reports once it listens (ready()), or 1 if it dies first.
 * Start-up errors thus still reach the terminal and the exit status, as
 * without -d.  Returns the pipe's write end, or -1 (err set). */
static int daemonize(char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "daemon: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "daemon: fork: %s", strerror(errno));
        return -1;
    }
    if (pid > 0) {
        close(p[1]);
        unsigned char status = 1;
        ssize_t n;
        do {
            n = read(p[0], &status, 1);
        } while (n < 0 && errno == EINTR);
        waitpid(pid, NULL, 0);
        _exit(n == 1 ? status : 1);
    }
    close(p[0]);
    if (setsid() < 0)
        _exit(1);
    pid = fork();
    if (pid < 0)
        _exit(1);
    if (pid > 0)
        _exit(0);
    return p[1];         /* the directory stays: relative paths in the config */
}

/* The daemon listens: stdin/stdout/stderr to /dev/null, exit status 0 to
 * the waiting first process. */
static void ready(int fd)
{
    if (fd < 0)
        return;
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    unsigned char ok = 0;
    ssize_t n;
    do {
        n = write(fd, &ok, 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
}

/* A start-up failure in the daemon: the first process exits with it. */
static int failed(int fd, int status)
{
    if (fd >= 0) {
        unsigned char st = (unsigned char)status;
        ssize_t n;
        do {
            n = write(fd, &st, 1);
        } while (n < 0 && errno == EINTR);
        close(fd);
    }
    return status;
}

/* user = NAME (PgBouncer's): started as root, become NAME once the
 * listeners (a port below 1024) and the log are open; a logfile this start
 * created (log_new) becomes NAME's first, since every reload reopens it
 * as NAME.  Not root: only NAME's own uid is accepted.  1 when the user
 * changed, 0 when it is one's own, -1 with err. */
static int become_user(const char *name, int log_fd, bool log_new, char *err,
                       size_t errlen)
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
    if (log_new && log_fd > STDERR_FILENO && fchown(log_fd, pw->pw_uid, pw->pw_gid) < 0) {
        snprintf(err, errlen, "user \"%s\": cannot give it the new logfile: %s", name,
                 strerror(errno));
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        snprintf(err, errlen, "user \"%s\": %s", name, strerror(errno));
        return -1;
    }
    return 1;
}

/* Once the user changed: the logfile opened again, as the user, since
 * SIGHUP and RELOAD reopen it so (a file the user cannot open would fail
 * every reload); it stops the start instead.  0, or -1 with err. */
static int reopen_log(const char *path, const char *user, char *err, size_t errlen)
{
    if (!path || !*path)
        return 0;
    int fd = pgw_log_file_open(path);
    if (fd < 0) {
        snprintf(err, errlen, "logfile %s: user \"%s\" cannot open it (a reload reopens it): %s",
                 path, user, strerror(errno));
        return -1;
    }
    pgw_log_use(fd);
    return 0;
}

struct options {
    bool daemon, quiet;
    const char *user;            /* -u, NULL = the config's */
};

/* libpq fills a connection parameter pgwharf leaves out from the
 * environment (PGPORT, PGPASSWORD, PGOPTIONS, PGAPPNAME, ...), and sends
 * PGDATESTYLE, PGTZ and PGGEQO as settings: a shell's variables would
 * change every server connection, or log a user in with a password nobody
 * configured.  Server connections are made from the config alone (as
 * PgBouncer's, which do not use libpq), so every PG* variable goes at
 * start-up -- by name, not from PQconndefaults(), which asks the user
 * database and may block -- but those naming where files are (PGPASSFILE,
 * PGSERVICEFILE, PGSYSCONFDIR, PGLOCALEDIR) and pgwharf's own PGW_*.
 * Writes the names dropped, space-separated, into out. */
static void drop_libpq_env(char *out, size_t size)
{
    static const char *const keep[] = { "PGPASSFILE", "PGSERVICEFILE", "PGSYSCONFDIR",
                                         "PGLOCALEDIR" };
    extern char **environ;
    size_t used = 0;
    out[0] = 0;
    for (;;) {
        char name[128];
        bool found = false;
        for (char **e = environ; e && *e && !found; e++) {
            const char *eq = strchr(*e, '=');
            size_t n = eq ? (size_t)(eq - *e) : 0;     /* none: unsetenv cannot drop it */
            if (n < 3 || n >= sizeof(name) || strncmp(*e, "PG", 2) != 0 || (*e)[2] == 'W')
                continue;
            memcpy(name, *e, n);
            name[n] = 0;
            found = true;
            for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
                found = found && strcmp(name, keep[i]) != 0;
        }
        if (!found)
            break;
        if (used < size)
            used += (size_t)snprintf(out + used, size - used, "%s%s", used ? " " : "", name);
        unsetenv(name);
    }
}

static int run(const char *path, const struct options *o)
{
    /* The file's warnings go to the log once it is open, as `event=config`
     * lines like a reload's (a logfile, syslog: where a DBA looks; PgBouncer
     * logs them too), and to stderr as they are when the log will not write
     * there (-q, -d: the terminal that started pgwharf still sees them). */
    char dropped_env[512];
    drop_libpq_env(dropped_env, sizeof(dropped_env));
    /* A logfile (or stderr redirected to a file) that reaches RLIMIT_FSIZE
     * sends SIGXFSZ, whose default action ends the process: ignored, the
     * write fails with EFBIG instead, a line lost as on a full disk
     * (common/log.c), and pgwharf serves on. */
    signal(SIGXFSZ, SIG_IGN);
    struct pgw_conf_diag diag = { 0 };
    struct pgw_config *cfg = load(path, o->quiet || o->daemon, &diag);
    if (!cfg)
        return 2;
    if (o->user) {
        char *u = strdup(o->user);
        if (!u) {
            pgw_conf_free(cfg);
            pgw_conf_diag_free(&diag);
            return 1;
        }
        free(cfg->user);
        cfg->user = u;
    }
    if (o->daemon && (!cfg->pidfile || !*cfg->pidfile)) {
        fprintf(stderr, "pgwharf: -d needs pidfile set in the config\n");
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&diag);
        return 2;
    }
    if (o->daemon && (!cfg->logfile || !*cfg->logfile) && !cfg->syslog) {
        fprintf(stderr, "pgwharf: -d needs logfile or syslog set in the config\n");
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&diag);
        return 2;
    }
    char err[1024];
    if (check_pidfile(cfg->pidfile, err, sizeof(err)) < 0) {
        pgw_conf_locate(cfg, "pidfile", err, sizeof(err), NULL);
        fprintf(stderr, "pgwharf: %s\n", err);
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&diag);
        return 1;
    }
    int ready_fd = -1;
    if (o->daemon && (ready_fd = daemonize(err, sizeof(err))) < 0) {
        fprintf(stderr, "pgwharf: %s\n", err);
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&diag);
        return 1;
    }
    int lvl = pgw_conf_log_level(cfg);
    if (lvl >= 0)
        pgw_log_set_level((enum pgw_log_level)lvl);
    bool log_new = cfg->logfile && *cfg->logfile && access(cfg->logfile, F_OK) < 0;
    int log_fd = pgw_log_file_open(cfg->logfile);
    if (log_fd < 0) {
        snprintf(err, sizeof(err), "cannot open logfile %s: %s", cfg->logfile, strerror(errno));
        pgw_conf_locate(cfg, "logfile", err, sizeof(err), NULL);
        fprintf(stderr, "pgwharf: %s\n", err);
        pgw_conf_free(cfg);
        pgw_conf_diag_free(&diag);
        return failed(ready_fd, 1);
    }
    pgw_log_use(log_fd);
    pgw_log_syslog(cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);   /* checked */
    for (int i = 0; i < diag.nwarnings; i++) {
        char q[1200];
        pgw_warn("config", "reason=%s", pgw_log_quote(q, sizeof(q), diag.warnings[i]));
    }
    pgw_conf_diag_free(&diag);
    if (*dropped_env)
        pgw_warn("startup", "reason=\"libpq's environment variables are ignored: server "
                 "connections are made from the config alone\" ignored=%s",
                 pgw_log_quote(err, sizeof(err), dropped_env));
    char *pidfile = NULL;            /* set once written: removed at exit */
    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct pgw_clock loop_clock;     /* the loop's monotonic now */
    pgw_clock_attach(&loop_clock, loop);
    struct pgw_proxy *px = pgw_proxy_create(loop, cfg, err, sizeof(err));
    if (!px) {
        char q[1200];
        pgw_error("startup", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        fprintf(stderr, "pgwharf: %s\n", err);
        pgw_clock_detach(loop);
        pgw_conf_free(cfg);
        return failed(ready_fd, 1);
    }
    if (o->user)
        pgw_proxy_user_from_command_line(px);
    /* From here a signal shuts down cleanly (the pidfile, once written,
     * goes too). */
    static const int sigs[] = { SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 };
    ev_signal sw[sizeof(sigs) / sizeof(sigs[0])];
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        ev_signal_init(&sw[i], signal_cb, sigs[i]);
        sw[i].data = px;
        ev_signal_start(loop, &sw[i]);
        ev_unref(loop);
    }
    int status = 0;
    int changed = 0;
    /* errors name the config line of their key (not that of -u's user) */
    if (*cfg->user && (changed = become_user(cfg->user, log_fd, log_new, err, sizeof(err))) < 0) {
        if (!o->user)
            pgw_conf_locate(cfg, "user", err, sizeof(err), NULL);
        status = 1;
    } else if (changed > 0 && reopen_log(cfg->logfile, cfg->user, err, sizeof(err)) < 0) {
        pgw_conf_locate(cfg, "logfile", err, sizeof(err), NULL);
        status = 1;
    } else if (changed > 0 && pgw_proxy_check_salt_key(cfg, err, sizeof(err)) < 0) {
        status = 1;
    }
    /* As PgBouncer, written as the user pgwharf runs as (who removes it). */
    if (!status && cfg->pidfile && *cfg->pidfile) {
        if (!(pidfile = strdup(cfg->pidfile)))
            snprintf(err, sizeof(err), "out of memory"), status = 1;
        else if (write_pidfile(pidfile, err, sizeof(err)) < 0) {
            pgw_conf_locate(cfg, "pidfile", err, sizeof(err), NULL);
            free(pidfile);
            pidfile = NULL;
            status = 1;
        }
    }
    if (status) {
        char q[1200];
        pgw_error("startup", "reason=%s", pgw_log_quote(q, sizeof(q), err));
        fprintf(stderr, "pgwharf: %s\n", err);
    } else {
        pgw_info("started", "version=%s pid=%d", PGW_VERSION, (int)getpid());
        if (geteuid() == 0)
            /* PgBouncer refuses to run as root; a warning here (containers
             * and test rigs do), naming the way out. */
            pgw_warn("running_as_root", "reason=\"pgwharf runs as root: set user = NAME "
                     "(or -u NAME) to run as an unprivileged user\"");
        ready(ready_fd);
        char state[64];
        snprintf(state, sizeof(state), "READY=1\nMAINPID=%d", (int)getpid());
        notify_systemd(state);
        while (!pgw_proxy_finished(px))
            ev_run(loop, 0);
    }
    /* On the way out a signal comes too late to act on.  Stopping the
     * watchers puts back each default action (to end the process): blocked
     * first, a second SIGTERM or logrotate's SIGHUP now can no longer kill
     * pgwharf before its pidfile goes and "stopped" is logged (exit 0).
     * The helper threads block them all (offload.c). */
    sigset_t late;
    sigemptyset(&late);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&late, sigs[i]);
    sigprocmask(SIG_BLOCK, &late, NULL);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        ev_ref(loop);
        ev_signal_stop(loop, &sw[i]);
    }
    pgw_proxy_destroy(px);
    if (pidfile)
        unlink(pidfile);
    free(pidfile);
    if (status) {
        ev_loop_destroy(loop);
        return failed(ready_fd, status);
    }
    pgw_info("stopped", "pid=%d", (int)getpid());
    ev_loop_destroy(loop);
    return 0;
}

/* Is arg ("--qui=1") a value given to the long option, or an abbreviation
 * of it, that takes none and whose val is opt?  Not merely an argument
 * with "--" and '=': for an unknown letter inside a cluster ("-xq", the x)
 * getopt leaves optind on the cluster, and argv[optind - 1] is the
 * argument before it ("--user=bob": "option --user takes no value"). */
static bool valued_flag(const struct option *lo, const char *arg, int opt)
{
    const char *eq = strchr(arg, '=');
    if (!opt || strncmp(arg, "--", 2) != 0 || !eq || eq == arg + 2)
        return false;
    size_t n = (size_t)(eq - arg - 2);
    for (; lo->name; lo++)
        if (lo->val == opt && lo->has_arg == no_argument && strncmp(lo->name, arg + 2, n) == 0)
            return true;
    return false;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },    { "version", no_argument, NULL, 'V' },
        { "check", no_argument, NULL, 'C' },   { "verbose", no_argument, NULL, 'v' },
        { "daemon", no_argument, NULL, 'd' },  { "quiet", no_argument, NULL, 'q' },
        { "user", required_argument, NULL, 'u' }, { "reboot", no_argument, NULL, 'R' },
        { NULL, 0, NULL, 0 },
    };
    struct options o = { 0 };
    bool do_check = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hVvdqu:R", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("pgwharf %s\n", PGW_VERSION);
            return 0;
        case 'C': do_check = true; break;
        case 'v': pgw_log_set_floor(PGW_LOG_DEBUG); break;
        case 'd': o.daemon = true; break;
        case 'q': o.quiet = true; break;
        case 'u': o.user = optarg; break;
        case 'R':
            fprintf(stderr, "pgwharf: -R (online restart) is not supported: start the new "
                    "pgwharf with so_reuseport = 1 (and its own pidfile) beside the old one, then "
                    "stop the old one with SIGINT\n");
            return 2;
        case ':':
            fprintf(stderr, "pgwharf: option %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            /* getopt_long sets optopt to the option's val both for an
             * unknown short option and for "--quiet=1" (a value given to
             * a long option that takes none): not "unknown option -q" */
            if (valued_flag(longopts, argv[optind - 1], optopt))
                fprintf(stderr, "pgwharf: option %.*s takes no value\n",
                        (int)(strchr(argv[optind - 1], '=') - argv[optind - 1]),
                        argv[optind - 1]);
            else if (optopt)
                fprintf(stderr, "pgwharf: unknown option -%c\n", optopt);
            else
                fprintf(stderr, "pgwharf: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "pgwharf: one config file only\n");
        return 2;
    }
    if (o.quiet || o.daemon)
        pgw_log_set_quiet(true);
    return do_check ? check(argv[optind]) : run(argv[optind], &o);
}
