/*
 * authfile.c - auth_file in PgBouncer's format: one `"user" "secret"` per
 * line, `""` for a quote inside quotes, fields after the second ignored,
 * blank lines and lines starting with ';' or '#' skipped.  Entries are kept
 * sorted by user for lookup; when a user is listed twice the later line
 * wins, with a warning.  Secrets never appear in messages.
 */
#include "conf/conf_int.h"
#include "common/array.h"
#include "common/err.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* An entry while parsing, with its line for ordering and messages. */
struct auth_line {
    struct pgw_auth_entry e;
    int line;
};

struct auth_parse {
    struct auth_line *lines;
    int n;
    size_t cap;
};

/* Read a "quoted" field at *pp (which points at the quote).  Returns a heap
 * copy and advances *pp, or NULL with *bad set when the quote is open. */
static char *quoted(const char **pp, bool *bad)
{
    const char *p = *pp + 1;
    char *out = malloc(strlen(p) + 1), *o = out;
    *bad = false;
    if (!out)
        return NULL;
    for (;; p++) {
        if (*p == '\0' || *p == '\n' || *p == '\r') {
            *bad = true;
            free(out);
            return NULL;
        }
        if (*p == '"' && p[1] == '"')
            *o++ = *p++;
        else if (*p == '"')
            break;
        else
            *o++ = *p;
    }
    *o = '\0';
    *pp = p + 1;
    return out;
}

static int add_line(struct auth_parse *ap, char *user, char *secret, int line)
{
    struct auth_line *grown = pgw_array_grow(ap->lines, sizeof(*grown), (size_t)ap->n, &ap->cap,
                                             16);
    if (!grown)
        return PGW_ENOMEM;
    ap->lines = grown;
    ap->lines[ap->n++] = (struct auth_line){ { user, secret }, line };
    return 0;
}

/* One line; returns 0, PGW_ECONFIG (reported) or PGW_ENOMEM. */
static int parse_line(struct auth_parse *ap, struct conf_report *rep, const char *name,
                      int line, const char *p)
{
    bool bad;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == ';' || *p == '#')
        return 0;
    if (*p != '"') {
        conf_error(rep, name, line, "expected a quoted user name (\"user\" \"secret\")");
        return PGW_ECONFIG;
    }
    char *user = quoted(&p, &bad);
    if (!user) {
        if (bad)
            conf_error(rep, name, line, "unterminated quoted user name");
        return bad ? PGW_ECONFIG : PGW_ENOMEM;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    char *secret = NULL;
    if (*p != '"') {
        conf_error(rep, name, line, "user \"%s\": expected a quoted secret after the user name",
                   user);
        bad = true;
    } else if (!(secret = quoted(&p, &bad)) && bad) {
        conf_error(rep, name, line, "user \"%s\": unterminated quoted secret", user);
    } else if (secret && !*user) {
        conf_error(rep, name, line, "empty user name");
        bad = true;
    }
    int rc = bad ? PGW_ECONFIG : !secret ? PGW_ENOMEM : add_line(ap, user, secret, line);
    if (rc != 0) {
        free(user);
        free(secret);
    }
    return rc;
}

static int by_user_then_line(const void *a, const void *b)
{
    const struct auth_line *x = a, *y = b;
    int c = strcmp(x->e.user, y->e.user);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* Sort, keep the last line of each user; build the public table. */
static int finish(struct auth_parse *ap, struct conf_report *rep, const char *name,
                  struct pgw_auth_file **out)
{
    struct pgw_auth_file *af = calloc(1, sizeof(*af));
    if (af && ap->n > 0 && !(af->entries = calloc((size_t)ap->n, sizeof(*af->entries)))) {
        free(af);
        af = NULL;
    }
    if (!af)
        return PGW_ENOMEM;
    if (ap->n > 0)
        qsort(ap->lines, (size_t)ap->n, sizeof(*ap->lines), by_user_then_line);
    for (int i = 0; i < ap->n; i++) {
        struct auth_line *l = &ap->lines[i];
        if (i + 1 < ap->n && strcmp(l->e.user, ap->lines[i + 1].e.user) == 0) {
            conf_warn(rep, name, ap->lines[i + 1].line,
                      "user \"%s\" is listed again; this line replaces line %d", l->e.user,
                      l->line);
            free(l->e.user);
            free(l->e.secret);
            continue;
        }
        af->entries[af->n++] = l->e;
        if (*l->e.secret)
            af->nsecret++;
        if (strncmp(l->e.secret, "SCRAM-SHA-256$", 14) == 0)
            af->nscram++;
    }
    ap->n = 0;
    *out = af;
    return 0;
}

static void parse_free(struct auth_parse *ap)
{
    for (int i = 0; i < ap->n; i++) {
        free(ap->lines[i].e.user);
        free(ap->lines[i].e.secret);
    }
    free(ap->lines);
}

int pgw_authfile_parse(const char *name, const char *text, struct pgw_auth_file **out,
                       struct pgw_conf_diag *diag)
{
    struct conf_report rep = { .diag = diag };
    struct auth_parse ap = { 0 };
    int rc = 0, line = 0;
    *out = NULL;
    for (const char *p = text; *p && rc != PGW_ENOMEM;) {
        size_t n = strcspn(p, "\n");
        char *one = strndup(p, n);
        rc = one ? parse_line(&ap, &rep, name, ++line, one) : PGW_ENOMEM;
        free(one);
        p += n + (p[n] == '\n');
    }
    if (rc != PGW_ENOMEM)
        rc = rep.nerrors ? PGW_ECONFIG : finish(&ap, &rep, name, out);
    parse_free(&ap);
    if (rc == 0 && rep.oom) {
        pgw_authfile_free(*out);
        *out = NULL;
        rc = PGW_ENOMEM;
    }
    return rc;
}

int pgw_authfile_load(const char *path, struct pgw_auth_file **out, struct pgw_conf_diag *diag)
{
    struct conf_report rep = { .diag = diag };
    char err[CONF_ERRLEN];
    int errline;
    *out = NULL;
    char *text = conf_read_file(path, err, sizeof(err), &errline);
    if (!text) {
        conf_error(&rep, path, errline, "%s", err);
        return PGW_ECONFIG;
    }
    int rc = pgw_authfile_parse(path, text, out, diag);
    free(text);
    return rc;
}

static int by_user(const void *key, const void *entry)
{
    return strcmp(key, ((const struct pgw_auth_entry *)entry)->user);
}

const char *pgw_authfile_lookup(const struct pgw_auth_file *af, const char *user)
{
    if (!af || !user || af->n == 0)
        return NULL;
    const struct pgw_auth_entry *e =
        bsearch(user, af->entries, (size_t)af->n, sizeof(*af->entries), by_user);
    return e ? e->secret : NULL;
}

void pgw_authfile_free(struct pgw_auth_file *af)
{
    if (!af)
        return;
    for (int i = 0; i < af->n; i++) {
        free(af->entries[i].user);
        free(af->entries[i].secret);
    }
    free(af->entries);
    free(af);
}
