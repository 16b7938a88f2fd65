/*
 * load.c - pgw_conf_load: reads the INI file through ini.c, routes each
 * section's keys ([pgwharf]/[pgbouncer] through the key table, [databases]
 * to dbs.c, [users] to users.c, [peers] to peers.c), then runs the checks
 * across keys.  It owns the config under construction until it is handed
 * out whole.  Also pgw_conf_free and pgw_conf_dup, the two walks over every
 * pointer a config owns: a field added to struct pgw_config (or to an
 * entry) that owns memory goes into both.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* PgBouncer's loader (libusual) sets every general key back to its default
 * where a [pgbouncer] header starts, so there a second one (often at the top
 * of an %include'd file) undoes the keys set above it: listen_addr,
 * auth_file...  pgwharf keeps them, the reading whoever wrote the file
 * meant; a warning at the header names them, as the file runs differently
 * under PgBouncer. */
static void general_again(struct conf_loader *ld, const char *file, int line, const char *name)
{
    char names[400];
    size_t used = 0;
    int n = 0;
    names[0] = '\0';
    for (int i = 0; i < conf_key_count(); i++) {
        if (!ld->origins[i].file)
            continue;
        const char *key = conf_key_at(i)->name;
        if (used + strlen(key) + 8 < sizeof(names))
            used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", n ? ", " : "",
                                     key);
        else if (used + 6 < sizeof(names) && strcmp(names + used - 3, "...") != 0)
            used += (size_t)snprintf(names + used, sizeof(names) - used, ", ...");
        n++;
    }
    if (n > 0)
        conf_warn(&ld->rep, file, line, "[%s] again: PgBouncer sets the %d general key%s set "
                  "above (%s) back to %s default%s here; pgwharf keeps %s",
                  name, n, n == 1 ? "" : "s", names, n == 1 ? "its" : "their",
                  n == 1 ? "" : "s", n == 1 ? "it" : "them");
}

static void on_section(void *arg, const char *file, int line, const char *name)
{
    struct conf_loader *ld = arg;
    if (strcasecmp(name, "pgwharf") == 0 || strcasecmp(name, "pgbouncer") == 0) {
        general_again(ld, file, line, name);
        ld->sect = SECT_GENERAL;
    } else if (strcasecmp(name, "databases") == 0) {
        ld->sect = SECT_DATABASES;
    } else if (strcasecmp(name, "users") == 0) {
        ld->sect = SECT_USERS;
    } else if (strcasecmp(name, "peers") == 0) {
        ld->sect = SECT_PEERS;
    } else {
        conf_error(&ld->rep, file, line, "unknown section [%s] (expected pgwharf, pgbouncer, "
                   "databases, users or peers)", name);
        ld->placed++;                   /* its lines: unread_key */
        ld->sect = SECT_SKIP;
    }
}

static void set_origin(struct conf_loader *ld, int i, const char *file, int line)
{
    char *copy = conf_strdup(&ld->rep, file);
    if (!copy)
        return;
    free(ld->origins[i].file);
    ld->origins[i].file = copy;
    ld->origins[i].line = line;
}

static void general_key(struct conf_loader *ld, const char *file, int line, const char *key,
                        const char *value)
{
    char err[CONF_ERRLEN];
    int i = conf_key_find(key);
    if (i < 0 && conf_key_unsupported(key)) {
        conf_warn(&ld->rep, file, line, "%s: ignored: not supported yet", key);
        return;
    }
    if (i < 0) {
        conf_error(&ld->rep, file, line, "unknown key \"%s\"", key);
        ld->placed++;                   /* no key the checks read */
        return;
    }
    const struct conf_key *k = conf_key_at(i);
    int rc = conf_key_set(ld->cfg, k, value, err, sizeof(err));
    if (rc == PGW_ENOMEM) {
        ld->rep.oom = true;
    } else if (rc != 0) {
        conf_error(&ld->rep, file, line, "%s: %s", k->name, err);
        ld->failed[i] = true;
        ld->placed++;
    } else {
        set_origin(ld, i, file, line);
        /* PgBouncer's strtol base 0: a surprise to whoever meant ten */
        if (k->kind == CONF_INT && conf_int_octal(value)) {
            char now[32];
            conf_key_get(ld->cfg, k, now, sizeof(now));
            conf_warn(&ld->rep, file, line, "%s: %s is octal, %s (a leading 0 means octal, "
                      "as PgBouncer reads it)", k->name, value, now);
        }
    }
}

/* A line not read (outside of any section, or in an unknown one): the key
 * it may have meant is unknown to the checks. */
static void unread_key(struct conf_loader *ld, const char *key)
{
    int i = conf_key_find(key);
    if (i >= 0)
        ld->failed[i] = true;
    else
        ld->lists_failed = true;
}

static void on_key(void *arg, const char *file, int line, const char *key, const char *value)
{
    struct conf_loader *ld = arg;
    int before = ld->rep.nerrors;
    switch (ld->sect) {
    case SECT_NONE:
        conf_error(&ld->rep, file, line, "key \"%s\" outside of any section", key);
        ld->placed++;
        unread_key(ld, key);
        break;
    case SECT_GENERAL:
        general_key(ld, file, line, key, value);
        break;
    case SECT_DATABASES:
        conf_db_add(ld, file, line, key, value);
        break;
    case SECT_USERS:
        conf_user_add(ld, file, line, key, value);
        break;
    case SECT_PEERS:
        conf_peer_add(ld, file, line, key, value);
        break;
    case SECT_SKIP:
        unread_key(ld, key);
        break;
    }
    if (ld->sect >= SECT_DATABASES && ld->sect <= SECT_PEERS && ld->rep.nerrors > before) {
        ld->lists_failed = true;
        ld->placed += ld->rep.nerrors - before;
    }
}

/* Load from a file (text NULL) or from text standing for file `name`.
 * running: for a reload, the config in force, whose fixed keys the new one
 * takes before the checks across keys (changed hears of each the file
 * changed); NULL at start. */
static int load(const char *name, const char *text, const struct pgw_config *running,
                pgw_conf_changed_fn changed, void *arg, struct pgw_config **out,
                struct pgw_conf_diag *diag)
{
    struct conf_loader ld = { .rep = { .diag = diag } };
    struct conf_ini_handler h = { on_section, on_key, &ld, &ld.rep };
    *out = NULL;
    ld.cfg = pgw_conf_defaults();
    ld.origins = calloc((size_t)conf_key_count(), sizeof(*ld.origins));
    ld.failed = calloc((size_t)conf_key_count(), sizeof(*ld.failed));
    if (!ld.cfg || !ld.origins || !ld.failed) {
        pgw_conf_free(ld.cfg);
        free(ld.origins);
        free(ld.failed);
        return PGW_ENOMEM;
    }
    free(ld.cfg->file);
    ld.cfg->file = conf_strdup(&ld.rep, name);
    int rc = text ? conf_ini_load_string(&h, name, text) : conf_ini_load_file(&h, name);
    /* The checks across keys, on the config that would run: a reload keeps
     * the fixed keys' running values (peer_id, listen_port,
     * unix_socket_dir: [peers] is checked against them; which ones the file
     * changed is news only for a file that loads).  They run after errors
     * too, every check whose keys parsed (all the errors at once), unless
     * an error hides which keys the file set (a syntax error, an %include
     * not read). */
    bool placed = ld.rep.nerrors == ld.placed;
    if (rc == 0 && !ld.rep.oom && running &&
        pgw_conf_keep_fixed(ld.cfg, running, ld.rep.nerrors ? NULL : changed, arg) < 0)
        ld.rep.oom = true;
    if (rc == 0 && placed && !ld.rep.oom)
        conf_validate(&ld);
    free(ld.failed);

    ld.cfg->origins = ld.origins;       /* freed with the config */
    if (rc == 0 && ld.rep.oom)
        rc = PGW_ENOMEM;
    else if (rc == 0 && ld.rep.nerrors > 0)
        rc = PGW_ECONFIG;
    if (rc != 0) {
        pgw_conf_free(ld.cfg);
        return rc;
    }
    *out = ld.cfg;
    return 0;
}

int pgw_conf_load(const char *path, struct pgw_config **out, struct pgw_conf_diag *diag)
{
    return load(path, NULL, NULL, NULL, NULL, out, diag);
}

int pgw_conf_load_string(const char *name, const char *text, struct pgw_config **out,
                         struct pgw_conf_diag *diag)
{
    return load(name, text, NULL, NULL, NULL, out, diag);
}

int pgw_conf_load_over(const char *name, const char *text, const struct pgw_config *running,
                       pgw_conf_changed_fn changed, void *arg, struct pgw_config **out,
                       struct pgw_conf_diag *diag)
{
    return load(name, text, running, changed, arg, out, diag);
}

void pgw_conf_free(struct pgw_config *cfg)
{
    if (!cfg)
        return;
    conf_keys_free(cfg);
    for (int i = 0; i < cfg->ndbs; i++)
        conf_db_free(&cfg->dbs[i]);
    for (int i = 0; i < cfg->nusers; i++)
        conf_user_free(&cfg->users[i]);
    for (int i = 0; i < cfg->npeers; i++)
        conf_peer_free(&cfg->peers[i]);
    free(cfg->dbs);
    free(cfg->db_slots);
    free(cfg->users);
    free(cfg->peers);
    free(cfg->file);
    if (cfg->origins)
        for (int i = 0; i < conf_key_count(); i++)
            free(cfg->origins[i].file);
    free(cfg->origins);
    free(cfg);
}

/* The entries of src's array arr (n of them) into dst's, each with dup_fn;
 * dst's count grows with each one copied, so that pgw_conf_free frees
 * what a shortage of memory left.  Evaluates to 0 or PGW_ENOMEM. */
#define ENTRIES_DUP(dst, src, arr, n, dup_fn)                                    \
    __extension__({                                                              \
        int dup_rc_ = 0;                                                         \
        if ((src)->n > 0) {                                                      \
            (dst)->arr = calloc((size_t)(src)->n, sizeof(*(dst)->arr));          \
            if (!(dst)->arr)                                                     \
                dup_rc_ = PGW_ENOMEM;                                            \
            while (dup_rc_ == 0 && (dst)->n < (src)->n) {                        \
                dup_rc_ = dup_fn(&(dst)->arr[(dst)->n], &(src)->arr[(dst)->n]);  \
                if (dup_rc_ == 0)                                                \
                    (dst)->n++;                                                  \
            }                                                                    \
        }                                                                        \
        dup_rc_;                                                                 \
    })

static int origins_dup(struct pgw_config *dst, const struct pgw_config *src)
{
    if (!src->origins)
        return 0;
    dst->origins = calloc((size_t)conf_key_count(), sizeof(*dst->origins));
    if (!dst->origins)
        return PGW_ENOMEM;
    for (int i = 0; i < conf_key_count(); i++) {
        if (conf_dup_str(&dst->origins[i].file, src->origins[i].file) != 0)
            return PGW_ENOMEM;
        dst->origins[i].line = src->origins[i].line;
    }
    return 0;
}

static int db_slots_dup(struct pgw_config *dst, const struct pgw_config *src)
{
    if (!src->db_slots)
        return 0;                       /* none, or looked through */
    dst->db_slots = malloc(src->db_nslots * sizeof(*dst->db_slots));
    if (!dst->db_slots)
        return PGW_ENOMEM;
    memcpy(dst->db_slots, src->db_slots, src->db_nslots * sizeof(*dst->db_slots));
    dst->db_nslots = src->db_nslots;
    return 0;
}

struct pgw_config *pgw_conf_dup(const struct pgw_config *src)
{
    struct pgw_config *cfg = malloc(sizeof(*cfg));
    if (!cfg)
        return NULL;
    *cfg = *src;                        /* the numbers, booleans and enums */
    /* src's pointers, none of them cfg's to free (conf_keys_dup clears the
     * general strings'): */
    cfg->file = NULL;
    cfg->origins = NULL;
    cfg->dbs = NULL;
    cfg->ndbs = 0;
    cfg->db_slots = NULL;
    cfg->db_nslots = 0;
    cfg->users = NULL;
    cfg->nusers = 0;
    cfg->peers = NULL;
    cfg->npeers = 0;
    if (conf_keys_dup(cfg, src) != 0 || conf_dup_str(&cfg->file, src->file) != 0 ||
        origins_dup(cfg, src) != 0 || ENTRIES_DUP(cfg, src, dbs, ndbs, conf_db_dup) != 0 ||
        db_slots_dup(cfg, src) != 0 || ENTRIES_DUP(cfg, src, users, nusers, conf_user_dup) != 0 ||
        ENTRIES_DUP(cfg, src, peers, npeers, conf_peer_dup) != 0) {
        pgw_conf_free(cfg);
        return NULL;
    }
    return cfg;
}

const char *pgw_conf_where(const struct pgw_config *cfg, const char *key, char *buf,
                           size_t len)
{
    int i = key ? conf_key_find(key) : -1;
    const struct pgw_conf_origin *o = i >= 0 && cfg->origins ? &cfg->origins[i] : NULL;
    if (o && o->file)
        snprintf(buf, len, "%s:%d", o->file, o->line);
    else
        snprintf(buf, len, "%s", cfg->file && *cfg->file ? cfg->file : "config");
    return buf;
}

void pgw_conf_locate(const struct pgw_config *cfg, const char *key, char *err, size_t errlen,
                     const char *label_fmt, ...)
{
    char where[1100] = "", label[600] = "", text[2048];
    if (errlen == 0)
        return;
    if (cfg) {
        pgw_conf_where(cfg, key, where, sizeof(where) - 2);
        strcat(where, ": ");
    }
    if (label_fmt) {
        va_list ap;
        va_start(ap, label_fmt);
        vsnprintf(label, sizeof(label), label_fmt, ap);
        va_end(ap);
    }
    int w = snprintf(text, sizeof(text), "%s%s%s%s", where, label, *label ? ": " : "", err);
    if (w < 0)
        return;
    /* memcpy: snprintf(err, errlen, "%s", text) trips gcc's -O3
     * format-truncation check, which cannot bound errlen */
    size_t len = (size_t)w < sizeof(text) ? (size_t)w : sizeof(text) - 1;
    if (len >= errlen)
        len = errlen - 1;
    memcpy(err, text, len);
    err[len] = '\0';
}

void pgw_conf_diag_locate(struct pgw_conf_diag *diag, int from, const struct pgw_config *cfg,
                          const char *key, const char *path)
{
    size_t plen = strlen(path);
    char where[1100];
    pgw_conf_where(cfg, key, where, sizeof(where));
    for (int i = from < 0 ? 0 : from; i < diag->nerrors; i++) {
        const char *msg = diag->errors[i];
        if (strncmp(msg, path, plen) != 0 || strncmp(msg + plen, ": ", 2) != 0)
            continue;
        size_t n = strlen(where) + strlen(key) + plen + strlen(msg + plen) + 8;
        char *text = malloc(n);
        if (!text)
            continue;                   /* keeps the message without the line */
        snprintf(text, n, "%s: %s \"%s\"%s", where, key, path, msg + plen);
        free(diag->errors[i]);
        diag->errors[i] = text;
    }
}
