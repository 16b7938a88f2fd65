/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ENV 64
static char *env_keys[MAX_ENV], *env_vals[MAX_ENV];
static int env_n = -1;

static void env_load(void)
{
    env_n = 0;
    const char *path = getenv("PGW_TEST_ENV");
    if (!path)
        return;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[1024];
    while (env_n < MAX_ENV && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#')
            continue;
        *eq = '\0';
        char *v = eq + 1;
        size_t vl = strlen(v);
        if (vl >= 2 && (v[0] == '\'' || v[0] == '"') && v[vl - 1] == v[0]) {
            v[vl - 1] = '\0';
            v++;
        }
        env_keys[env_n] = strdup(line);
        env_vals[env_n] = strdup(v);
        env_n++;
    }
    fclose(f);
}

const char *pgw_test_env(const char *key)
{
    if (env_n < 0)
        env_load();
    for (int i = 0; i < env_n; i++)
        if (strcmp(env_keys[i], key) == 0)
            return env_vals[i];
    return NULL;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)w; (void)revents;
}

bool pgw_test_run_until(struct ev_loop *loop, const bool *flag, double seconds)
{
    double end = wall_now() + seconds;
    ev_timer wake;
    /* A periodic wake-up so the bound is honoured even when nothing happens. */
    ev_timer_init(&wake, wake_cb, 0.05, 0.05);
    ev_timer_start(loop, &wake);
    while (!*flag && wall_now() < end)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &wake);
    return *flag;
}

int pgw_test_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR's own fd */
}
