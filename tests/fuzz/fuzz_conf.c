/*
 * fuzz_conf.c - the config file parser (conf/conf.h pgw_conf_load_string):
 * INI lines, sections, every key's value parser, [databases] connection
 * strings, [users], the checks across keys, and what --check prints.
 *
 * %include is followed only into a private temp directory holding two
 * small files (inc.ini, loop.ini): inputs whose %include line names a path
 * with a '/' are skipped, so the fuzzer never reads the machine's files or
 * blocks on a device.  The input's first line is also fed to
 * pgw_conf_parse_duration and, split at '=', to pgw_conf_set (the admin
 * console's SET).
 */
#include <stdio.h>
#include <unistd.h>

#include "conf/conf.h"
#include "fuzz_util.h"

static FILE *devnull;
static char tmpdir[] = "/tmp/pgw-fuzz-conf-XXXXXX";

static void remove_tmpdir(void)
{
    if (chdir("/") == 0 && tmpdir[0]) {
        char path[sizeof(tmpdir) + 16];
        snprintf(path, sizeof(path), "%s/inc.ini", tmpdir);
        unlink(path);
        snprintf(path, sizeof(path), "%s/loop.ini", tmpdir);
        unlink(path);
        rmdir(tmpdir);
    }
}

static int write_file(const char *name, const char *text)
{
    FILE *f = fopen(name, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    if (!mkdtemp(tmpdir) || chdir(tmpdir) != 0)
        abort();
    atexit(remove_tmpdir);
    if (write_file("inc.ini", "[pgwharf]\nmax_client_conn = 50\n[databases]\n"
                              "inc = host=127.0.0.1 port=5432 dbname=x pool_size=3\n") != 0 ||
        write_file("loop.ini", "%include loop.ini\n") != 0)
        abort();
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        abort();
    return 0;
}

/* Does any line that mentions %include also hold a '/'? */
static int escapes(const char *text)
{
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        const char *inc = memmem(line, n, "%include", 8);
        if (inc && memchr(line, '/', n))
            return 1;
        line = end ? end + 1 : NULL;
    }
    return 0;
}

static void use_config(const struct pgw_config *cfg)
{
    char buf[256];
    pgw_conf_print(devnull, cfg);
    for (int i = 0; pgw_conf_key_name(i); i++)
        pgw_conf_get(cfg, pgw_conf_key_name(i), buf, sizeof(buf));
    for (int d = 0; d < cfg->ndbs; d++) {
        const struct pgw_conf_db *db = &cfg->dbs[d];
        if (pgw_conf_find_db(cfg, db->name) == NULL)
            abort();
        for (int j = 0; j < db->nconn; j++) {
            fuzz_touch(db->conn_keys[j]);
            fuzz_touch(db->conn_vals[j]);
        }
        for (int u = 0; u <= cfg->nusers; u++) {
            const struct pgw_conf_user *user = u < cfg->nusers ? &cfg->users[u] : NULL;
            pgw_conf_pool_mode(cfg, db, user);
            pgw_conf_pool_size(cfg, db, user);
            pgw_conf_max_user_connections(cfg, user);
            pgw_conf_query_timeout(cfg, user);
        }
        pgw_conf_min_pool_size(cfg, db);
        pgw_conf_reserve_pool_size(cfg, db, NULL);
        pgw_conf_max_db_connections(cfg, db);
        fuzz_touch(pgw_conf_auth_user(cfg, db));
    }
}

static void set_first_line(const char *text)
{
    size_t n = strcspn(text, "\n");
    char *line = strndup(text, n);
    if (!line)
        abort();
    double secs;
    pgw_conf_parse_duration(line, &secs);
    char *eq = strchr(line, '=');
    if (eq) {
        *eq = '\0';
        struct pgw_config *cfg = pgw_conf_defaults();
        char err[256];
        if (!cfg)
            abort();
        pgw_conf_set(cfg, line, eq + 1, err, sizeof(err));
        pgw_conf_free(cfg);
    }
    free(line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    if (escapes(text)) {
        free(text);
        return 0;
    }
    struct pgw_config *cfg = NULL;
    struct pgw_conf_diag diag = { 0 };
    int rc = pgw_conf_load_string("fuzz.ini", text, &cfg, &diag);
    if (rc == 0) {
        if (!cfg)
            abort();
        use_config(cfg);
        pgw_conf_free(cfg);
    } else if (cfg) {
        abort();                /* failure hands out nothing */
    }
    for (int i = 0; i < diag.nerrors; i++)
        if (strncmp(diag.errors[i], "fuzz.ini:", 9) != 0 && !strstr(diag.errors[i], ".ini:"))
            abort();            /* every error says file:line */
    pgw_conf_diag_free(&diag);
    set_first_line(text);
    free(text);
    return 0;
}
