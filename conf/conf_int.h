/*
 * conf_int.h - what the files of conf/ share; never included outside conf/.
 *
 *   report.c   collecting "file:line: message" errors and warnings
 *   value.c    text -> int / duration / bool / enum, and back
 *   keys.c     the one table of [pgwharf] keys: defaults, set, get, free
 *   ini.c      the INI reader: lines, sections, %include
 *   load.c     the loader: routes sections and keys, builds the config
 *   connstr.c  `key=value ...` strings and the libpq keyword list
 *   dbs.c      [databases] entries      users.c  [users] entries
 *   peers.c    [peers] entries
 *   validate.c checks across keys       lookup.c finding entries, inheritance
 *   print.c    pgw_conf_print           authfile.c  the auth_file reader
 */
#ifndef PGW_CONF_CONF_INT_H
#define PGW_CONF_CONF_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/conf.h"

/* ---- report.c ---- */

/* Where messages go.  diag may be NULL: counts are kept either way, so a
 * message lost to a failed allocation still fails the load. */
struct conf_report {
    struct pgw_conf_diag *diag;
    int nerrors;
    int nwarnings;
    bool oom;
};

/* "file:line: text" (line 0: "file: text"). */
void conf_error(struct conf_report *r, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void conf_warn(struct conf_report *r, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* strdup that records a failure in r (r may be NULL). */
char *conf_strdup(struct conf_report *r, const char *s);
/* *dst = a copy of src (NULL stays NULL): 0, or PGW_ENOMEM with *dst NULL. */
int conf_dup_str(char **dst, const char *src);
/* The n strings at own[i], fields of a struct copy that still point to its
 * source's, each made a copy of its own (NULL stays NULL): 0; or
 * PGW_ENOMEM, every one not copied set to NULL, so that the copy's free
 * frees only what is its own.  CONF_OWN_STRS(&dst->a, &dst->b, ...). */
int conf_own_strs(char **const own[], size_t n);
#define CONF_OWN_STRS(...)                                                   \
    conf_own_strs((char **const[]){ __VA_ARGS__ },                          \
                  sizeof((char **const[]){ __VA_ARGS__ }) / sizeof(char **))

/* A parsed [databases], [users] or [peers] entry into its array: in place
 * of entry `replace` (>= 0; the old one freed with free_fn), as a name
 * defined again replaces the earlier line, or appended.  Evaluates to 0,
 * or PGW_ENOMEM with the array unchanged (the caller frees the entry). */
#define CONF_ENTRY_PUT(arr, n, replace, entry, free_fn)                          \
    __extension__({                                                              \
        int put_rc_ = 0;                                                         \
        if ((replace) >= 0) {                                                    \
            free_fn(&(arr)[(replace)]);                                          \
            (arr)[(replace)] = (entry);                                          \
        } else {                                                                 \
            __typeof__(arr) grown_ = realloc((arr), (size_t)((n) + 1) * sizeof(*grown_)); \
            if (grown_) {                                                        \
                (arr) = grown_;                                                  \
                (arr)[(n)++] = (entry);                                          \
            } else {                                                             \
                put_rc_ = PGW_ENOMEM;                                            \
            }                                                                    \
        }                                                                        \
        put_rc_;                                                                 \
    })

/* ---- lookup.c: the index of [databases] by name ---- */

/* The entry named name exactly, -1 when none. */
int conf_db_find(const struct pgw_config *cfg, const char *name);
/* cfg->dbs[i], just added, into the index (a replaced entry keeps its
 * place and its name: nothing to do).  Short of memory the index goes
 * and lookups look through the entries. */
void conf_db_indexed(struct pgw_config *cfg, int i);

/* ---- value.c: parsers write "expected ..., got \"x\"" into err ---- */

#define CONF_ERRLEN 256

/* A decimal integer in [lo, hi] (optional sign): [databases], [users] and
 * [peers] values, which PgBouncer reads with atoi. */
int conf_parse_int(const char *text, int lo, int hi, int *out, char *err, size_t errlen);
/* The same, or -1: not set (a [databases] or [users] key then takes the
 * general one, as PgBouncer reads -1 there). */
int conf_parse_int_unset(const char *text, int lo, int hi, int *out, char *err, size_t errlen);
/* An integer in [lo, hi] as PgBouncer's cf_set_int reads the general
 * section's: strtol base 0, the whole text (0x1f hexadecimal, 017 octal). */
int conf_parse_int_c(const char *text, int lo, int hi, int *out, char *err, size_t errlen);
/* Is text (read by conf_parse_int_c) octal: a 0 followed by digits? */
bool conf_int_octal(const char *text);
/* A general section's duration, as PgBouncer's strtod reads it ("1e3",
 * "0x10"), or a number with a unit ("250ms"). */
int conf_parse_dur(const char *text, double *out, char *err, size_t errlen);
/* A [databases] or [users] entry's: PgBouncer reads those with atoi, so
 * only a plain decimal ("1.5", "30") or a number with a unit. */
int conf_parse_entry_dur(const char *text, double *out, char *err, size_t errlen);
/* An entry's, and PgBouncer's -1 for "not set" (*out = -1). */
int conf_parse_dur_unset(const char *text, double *out, char *err, size_t errlen);
int conf_parse_num(const char *text, double *out, char *err, size_t errlen);
int conf_parse_bool(const char *text, bool *out, char *err, size_t errlen);
int conf_parse_pool_mode(const char *text, int *out, char *err, size_t errlen);
int conf_parse_load_balance(const char *text, int *out, char *err, size_t errlen);
int conf_parse_target_session(const char *text, int *out, char *err, size_t errlen);
int conf_parse_auth_type(const char *text, int *out, char *err, size_t errlen);
int conf_parse_tls_mode(const char *text, int *out, char *err, size_t errlen);
int conf_parse_log_level(const char *text, char *err, size_t errlen);
/* The shortest plain decimal that reads back as the same double. */
void conf_format_num(char *buf, size_t len, double v);

/* ---- keys.c ---- */

enum conf_kind {
    CONF_INT, CONF_DUR, CONF_NUM, CONF_BOOL, CONF_STR,
    CONF_POOL_MODE, CONF_AUTH_TYPE, CONF_TLS_MODE, CONF_LOG_LEVEL
};

struct conf_key {
    const char *name;
    enum conf_kind kind;
    size_t offset;           /* into struct pgw_config */
    const char *def;         /* default, as the file would write it */
    int lo, hi;              /* CONF_INT range */
};

int conf_key_count(void);
const struct conf_key *conf_key_at(int i);
/* Index of a key (case-insensitive), or -1. */
int conf_key_find(const char *name);
/* A PgBouncer key pgwharf accepts but ignores (case-insensitive)? */
bool conf_key_unsupported(const char *name);
/* Parse text into the field.  0, PGW_ECONFIG (message in err) or PGW_ENOMEM. */
int conf_key_set(struct pgw_config *cfg, const struct conf_key *k, const char *text,
                 char *err, size_t errlen);
void conf_key_get(const struct pgw_config *cfg, const struct conf_key *k, char *buf,
                  size_t len);
/* The value of a string key (never truncated), or NULL for other kinds. */
const char *conf_key_string(const struct pgw_config *cfg, const struct conf_key *k);
/* Free the general string fields (not file, dbs or users). */
void conf_keys_free(struct pgw_config *cfg);
/* dst, a struct copy of src, gets its own copies of the general string
 * fields: first every one is set to NULL (none of src's is dst's to
 * free), then each is copied.  0, or PGW_ENOMEM with the rest NULL. */
int conf_keys_dup(struct pgw_config *dst, const struct pgw_config *src);

/* ---- ini.c ---- */

/* What the INI reader calls for each section header and key line.  `file`
 * is the name to show in messages; `quoted` says the key was "quoted". */
struct conf_ini_handler {
    void (*section)(void *arg, const char *file, int line, const char *name);
    void (*key)(void *arg, const char *file, int line, const char *key,
                const char *value);
    void *arg;
    struct conf_report *rep;
};

#define CONF_INCLUDE_DEPTH 10
#define CONF_MAX_FILE_SIZE (16 * 1024 * 1024)

/* Read a file (and its %includes).  Returns 0, or PGW_ECONFIG when the
 * file itself cannot be read; syntax errors only go to h->rep. */
int conf_ini_load_file(const struct conf_ini_handler *h, const char *path);
int conf_ini_load_string(const struct conf_ini_handler *h, const char *name,
                         const char *text);
/* Read a whole file into a NUL-terminated heap string (for authfile.c too).
 * On failure returns NULL with a message in err, and in *errline the line
 * it is about (a NUL byte's), 0 for the whole file. */
char *conf_read_file(const char *path, char *err, size_t errlen, int *errline);

/* ---- load.c: the loader state shared with dbs.c, users.c, validate.c ---- */

enum conf_section {
    SECT_NONE, SECT_GENERAL, SECT_DATABASES, SECT_USERS, SECT_PEERS, SECT_SKIP
};

struct conf_loader {
    struct pgw_config *cfg;
    struct conf_report rep;
    enum conf_section sect;
    struct pgw_conf_origin *origins; /* one per general key; moves into cfg */
    /* What the errors so far leave unknown, so that the checks across
     * keys run on the rest (every error at once) and none of them reports
     * a key's default that stands only for a line that failed: */
    bool *failed;                    /* one per general key: its line failed */
    bool lists_failed;               /* a [databases]/[users]/[peers] line failed */
    int placed;                      /* errors counted in failed/lists_failed (or
                                        about no key: an unknown one); any other
                                        (a syntax error, an unknown section, an
                                        %include not read) leaves all unknown */
};

/* ---- connstr.c ---- */

/* Next `key=value` of a connection string; *p advances.  Returns 1 with
 * heap copies in *key and *val, 0 at the end, PGW_ECONFIG with a message
 * in err, PGW_ENOMEM. */
int conf_connstr_next(const char **p, char **key, char **val, char *err, size_t errlen);
/* The canonical libpq keyword for name (case-insensitive), or NULL. */
const char *conf_libpq_keyword(const char *name);
/* Write a value the way conf_connstr_next reads it back. */
void conf_connstr_quote(FILE *f, const char *val);

/* ---- dbs.c, users.c, peers.c ---- */

void conf_db_add(struct conf_loader *ld, const char *file, int line, const char *name,
                 const char *connstr);
void conf_db_free(struct pgw_conf_db *db);
/* A deep copy of an entry into dst (pgw_conf_dup): 0, or PGW_ENOMEM with
 * dst freed (conf_*_free may run on it again). */
int conf_db_dup(struct pgw_conf_db *dst, const struct pgw_conf_db *src);
void conf_user_add(struct conf_loader *ld, const char *file, int line, const char *name,
                   const char *settings);
void conf_user_free(struct pgw_conf_user *u);
int conf_user_dup(struct pgw_conf_user *dst, const struct pgw_conf_user *src);
void conf_peer_add(struct conf_loader *ld, const char *file, int line, const char *name,
                   const char *settings);
void conf_peer_free(struct pgw_conf_peer *p);
int conf_peer_dup(struct pgw_conf_peer *dst, const struct pgw_conf_peer *src);

/* ---- validate.c ---- */

/* The checks across keys, each one whose keys all parsed (ld->failed). */
void conf_validate(struct conf_loader *ld);

#endif
