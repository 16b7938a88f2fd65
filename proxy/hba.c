/*
 * hba.c - auth_hba_file in pg_hba.conf syntax (see hba.h): a tokenizer for
 * one record at a time, the field parsers that turn a record into a rule,
 * and the first-match-wins matcher.  A struct pgw_hba owns its rules and
 * their strings; it is immutable once parsed, so sessions of any loop may
 * read it.
 */
#include "proxy/hba.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/array.h"
#include "common/err.h"
#include "common/log.h"
#include "common/netaddr.h"

#define HBA_MAX_FILE (16 * 1024 * 1024)

/* ---- rules ---- */

enum item_kind {
    IK_NAME,        /* a literal name */
    IK_ALL,
    IK_SAMEUSER,    /* database named like the user */
    IK_UNKNOWN,     /* samerole, +group: cannot be evaluated here */
    IK_REPLICATION  /* replication: physical replication connections only */
};

struct hba_item {
    enum item_kind kind;
    char *name;
};

struct hba_list {
    struct hba_item *items;
    int n;
};

enum conn_type {
    CT_LOCAL, CT_HOST, CT_HOSTSSL, CT_HOSTNOSSL, CT_HOSTGSSENC, CT_HOSTNOGSSENC
};

enum addr_kind {
    AK_NONE,        /* local rules */
    AK_ALL,
    AK_NET,         /* family + addr + mask */
    AK_UNKNOWN      /* samehost, samenet, host names */
};

struct hba_rule {
    int line;
    enum conn_type type;
    struct hba_list dbs, users;
    enum addr_kind addr_kind;
    int family;
    uint8_t addr[16], mask[16];
    enum pgw_hba_method method;
    char *map;                  /* map=: a user name map of auth_ident_file */
};

#define HBA_NMETHODS (PGW_HBA_PEER + 1)

/* One line of auth_ident_file. */
enum ident_kind {
    ID_NAME,
    ID_ALL,                     /* database user `all` */
    ID_UNKNOWN                  /* a regular expression or +group: never matches */
};

struct ident_line {
    int line;
    char *map, *system_user, *db_user;
    enum ident_kind system_kind, db_kind;
};

struct pgw_hba {
    struct hba_rule *rules;
    int n;
    size_t cap;
    struct ident_line *idents;
    int nidents;
    size_t capidents;
};

static const char *const method_names[] = {
    [PGW_HBA_REJECT] = "reject",
    [PGW_HBA_TRUST] = "trust",
    [PGW_HBA_PASSWORD] = "password",
    [PGW_HBA_MD5] = "md5",
    [PGW_HBA_SCRAM] = "scram-sha-256",
    [PGW_HBA_CERT] = "cert",
    [PGW_HBA_PEER] = "peer",
};

const char *pgw_hba_method_name(enum pgw_hba_method m)
{
    return (unsigned)m < sizeof(method_names) / sizeof(method_names[0]) ? method_names[m] : "?";
}

static void list_free(struct hba_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->items[i].name);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static void rule_free(struct hba_rule *rule)
{
    list_free(&rule->dbs);
    list_free(&rule->users);
    free(rule->map);
    rule->map = NULL;
}

static void idents_free(struct pgw_hba *hba)
{
    for (int i = 0; i < hba->nidents; i++) {
        free(hba->idents[i].map);
        free(hba->idents[i].system_user);
        free(hba->idents[i].db_user);
    }
    free(hba->idents);
    hba->idents = NULL;
    hba->nidents = 0;
    hba->capidents = 0;
}

void pgw_hba_free(struct pgw_hba *hba)
{
    if (!hba)
        return;
    for (int i = 0; i < hba->n; i++)
        rule_free(&hba->rules[i]);
    free(hba->rules);
    idents_free(hba);
    free(hba);
}

int pgw_hba_count(const struct pgw_hba *hba) { return hba ? hba->n : 0; }

/* ---- reporting ---- */

struct report {
    struct pgw_conf_diag *diag;
    const char *name;
    int line;
    int nerrors;
    bool oom;
    bool files;                  /* name is a file: @file may be read beside it */
};

static void report(struct report *r, bool error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct report *r, bool error, const char *fmt, ...)
{
    char msg[512], full[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (error)
        r->nerrors++;
    if (!r->diag)
        return;
    if (r->line > 0)
        snprintf(full, sizeof(full), "%s:%d: %s", r->name, r->line, msg);
    else
        snprintf(full, sizeof(full), "%s: %s", r->name, msg);
    char ***arr = error ? &r->diag->errors : &r->diag->warnings;
    int *n = error ? &r->diag->nerrors : &r->diag->nwarnings;
    char **grown = realloc(*arr, (size_t)(*n + 1) * sizeof(**arr));
    char *copy = strdup(full);
    if (!grown || !copy) {
        if (grown)
            *arr = grown;
        free(copy);
        r->oom = true;
        return;
    }
    *arr = grown;
    (*arr)[(*n)++] = copy;
}

/* ---- tokens: a record is a list of fields, a field a list of tokens ---- */

struct token {
    char *s;
    bool quoted;        /* it starts with a quote: not a keyword, +group or @file */
};

struct field {
    struct token *toks;
    int n;
};

struct record {
    struct field *fields;
    int n;
};

static void record_free(struct record *rec)
{
    for (int i = 0; i < rec->n; i++) {
        for (int j = 0; j < rec->fields[i].n; j++)
            free(rec->fields[i].toks[j].s);
        free(rec->fields[i].toks);
    }
    free(rec->fields);
    rec->fields = NULL;
    rec->n = 0;
}

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Read one token at *pp: up to a blank, ',' or '#' outside quotes.  Returns
 * false (with a reported error) on an unterminated quote or no memory.  As
 * PostgreSQL's next_token (initial_quote), only a quote at the start makes
 * the token quoted: +"ops team" is a group, @"my list" a file, a"ll" the
 * keyword all (a quote further in just quotes what follows). */
static bool read_token(struct report *r, const char **pp, struct token *t)
{
    const char *p = *pp;
    char *out = malloc(strlen(p) + 1), *o = out;
    bool in_quote = false;
    t->quoted = false;
    if (!out) {
        r->oom = true;
        return false;
    }
    for (; *p; p++) {
        if (in_quote) {
            if (*p == '"' && p[1] == '"') {
                *o++ = '"';
                p++;
            } else if (*p == '"') {
                in_quote = false;
            } else {
                *o++ = *p;
            }
            continue;
        }
        if (is_blank(*p) || *p == ',' || *p == '#')
            break;
        if (*p == '"') {
            in_quote = true;
            if (o == out)
                t->quoted = true;
        } else {
            *o++ = *p;
        }
    }
    if (in_quote) {
        free(out);
        report(r, true, "unterminated quoted string");
        return false;
    }
    *o = '\0';
    t->s = out;
    *pp = p;
    return true;
}

static bool field_add(struct report *r, struct field *f, struct token t)
{
    struct token *grown = realloc(f->toks, (size_t)(f->n + 1) * sizeof(*grown));
    if (!grown) {
        free(t.s);
        r->oom = true;
        return false;
    }
    f->toks = grown;
    f->toks[f->n++] = t;
    return true;
}

static bool record_add(struct report *r, struct record *rec)
{
    struct field *grown = realloc(rec->fields, (size_t)(rec->n + 1) * sizeof(*grown));
    if (!grown) {
        r->oom = true;
        return false;
    }
    rec->fields = grown;
    rec->fields[rec->n++] = (struct field){ 0 };
    return true;
}

/* Split one logical line into fields.  A comma continues the field, even
 * across blanks ("db1, db2"). */
static bool tokenize(struct report *r, const char *line, struct record *rec)
{
    const char *p = line;
    for (;;) {
        while (is_blank(*p))
            p++;
        if (!*p || *p == '#')
            return true;
        if (!record_add(r, rec))
            return false;
        struct field *f = &rec->fields[rec->n - 1];
        for (;;) {
            struct token t;
            if (!read_token(r, &p, &t))
                return false;
            if (!*t.s && !t.quoted) {
                free(t.s);
                report(r, true, "empty element in a comma-separated list");
                return false;
            }
            if (!field_add(r, f, t))
                return false;
            if (*p != ',')
                break;
            p++;
            while (is_blank(*p))
                p++;
            if (!*p || *p == '#') {
                report(r, true, "a comma-separated list ends with a comma");
                return false;
            }
        }
    }
}

/* ---- fields to rule ---- */

static bool keyword(const struct token *t, const char *kw)
{
    return !t->quoted && strcmp(t->s, kw) == 0;
}

/* The connection type and method fields are words, quoted or not ("host",
 * "md5" there as PostgreSQL's parse_hba_line reads them; the address's
 * all, samehost and samenet are keywords: quoted, a host name). */
static bool word(const struct token *t, const char *w)
{
    return strcmp(t->s, w) == 0;
}

static bool parse_type(struct report *r, const struct field *f, enum conn_type *out)
{
    static const char *const names[] = {
        [CT_LOCAL] = "local", [CT_HOST] = "host", [CT_HOSTSSL] = "hostssl",
        [CT_HOSTNOSSL] = "hostnossl", [CT_HOSTGSSENC] = "hostgssenc",
        [CT_HOSTNOGSSENC] = "hostnogssenc",
    };
    if (f->n != 1) {
        report(r, true, "multiple values specified for connection type");
        return false;
    }
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
        if (word(&f->toks[0], names[i])) {
            *out = (enum conn_type)i;
            if (*out == CT_HOSTGSSENC)
                report(r, false, "hostgssenc rules never match: pgwharf does not do GSSAPI "
                       "encryption");
            return true;
        }
    }
    report(r, true, "invalid connection type \"%s\" (expected local, host, hostssl, hostnossl, "
           "hostgssenc or hostnogssenc)", f->toks[0].s);
    return false;
}

#define HBA_INCLUDE_DEPTH 10
#define HBA_INCLUDE_MAX (1024 * 1024)

static bool list_add(struct report *r, struct hba_list *out, const struct token *t, bool is_db,
                     const char *base, int depth);

/* @file in a database or user list, as PostgreSQL: the names in the file
 * (separated by blanks, commas or newlines; # starts a comment; quoted as
 * in the rule file; @file again), a relative path being relative to the
 * including file's directory. */
static bool list_include(struct report *r, struct hba_list *out, const char *file, bool is_db,
                         const char *base, int depth)
{
    if (!*file) {
        report(r, true, "@ without a file name");
        return false;
    }
    if (!r->files) {
        report(r, true, "@%s: no file is read for rules given as text", file);
        return false;
    }
    if (depth >= HBA_INCLUDE_DEPTH) {
        report(r, true, "@%s: files included more than %d deep (a loop?)", file,
               HBA_INCLUDE_DEPTH);
        return false;
    }
    char path[4096];
    const char *slash = strrchr(base, '/');
    if (file[0] == '/' || !slash)
        snprintf(path, sizeof(path), "%s", file);
    else
        snprintf(path, sizeof(path), "%.*s/%s", (int)(slash - base), base, file);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        report(r, true, "@%s: cannot open %s: %s", file, path, strerror(errno));
        return false;
    }
    char *text = malloc(HBA_INCLUDE_MAX + 1);
    size_t len = text ? fread(text, 1, HBA_INCLUDE_MAX + 1, fp) : 0;
    bool bad = text && (ferror(fp) || len > HBA_INCLUDE_MAX);
    fclose(fp);
    if (!text) {
        r->oom = true;
        return false;
    }
    if (bad) {
        free(text);
        report(r, true, "@%s: cannot read %s (or larger than 1 MB)", file, path);
        return false;
    }
    text[len] = '\0';
    bool ok = true;
    for (const char *p = text; ok && *p;) {
        if (is_blank(*p) || *p == ',') {
            p++;
        } else if (*p == '#') {
            while (*p && *p != '\n')
                p++;
        } else {
            struct token t;
            if (!(ok = read_token(r, &p, &t)))
                break;
            if (*t.s || t.quoted)
                ok = list_add(r, out, &t, is_db, path, depth + 1);
            free(t.s);
        }
    }
    free(text);
    return ok;
}

/* One element of a database or user list; is_db picks the keywords that
 * apply; base: the file it was read from (for @file). */
static bool list_add(struct report *r, struct hba_list *out, const struct token *t, bool is_db,
                     const char *base, int depth)
{
    if (!t->quoted && t->s[0] == '@')
        return list_include(r, out, t->s + 1, is_db, base, depth);
    struct hba_item *grown = realloc(out->items, (size_t)(out->n + 1) * sizeof(*grown));
    if (!grown) {
        r->oom = true;
        return false;
    }
    out->items = grown;
    struct hba_item *it = &out->items[out->n];
    *it = (struct hba_item){ 0 };
    if (keyword(t, "all")) {
        it->kind = IK_ALL;
    } else if (is_db && keyword(t, "sameuser")) {
        it->kind = IK_SAMEUSER;
    } else if (is_db && (keyword(t, "samerole") || keyword(t, "samegroup"))) {
        it->kind = IK_UNKNOWN;
        report(r, false, "\"%s\" is not supported (pgwharf does not know role membership); "
               "the rule matches only if it is a reject rule", t->s);
    } else if (is_db && keyword(t, "replication")) {
        it->kind = IK_REPLICATION;
    } else if (t->s[0] == '/') {
        /* PostgreSQL 16 on: a regular expression, quoted or not (a
         * `reject` rule naming one must not be passed over) */
        it->kind = IK_UNKNOWN;
        report(r, false, "regular expression \"%s\" is not supported; the rule matches "
               "only if it is a reject rule", t->s);
    } else if (!is_db && !t->quoted && t->s[0] == '+') {
        it->kind = IK_UNKNOWN;
        report(r, false, "group \"%s\" is not supported (pgwharf does not know role "
               "membership); the rule matches only if it is a reject rule", t->s);
    } else {
        it->kind = IK_NAME;
        if (!(it->name = strdup(t->s))) {
            r->oom = true;
            return false;
        }
    }
    out->n++;
    return true;
}

/* A database or user list; is_db picks the keywords that apply. */
static bool parse_list(struct report *r, const struct field *f, bool is_db, struct hba_list *out)
{
    for (int i = 0; i < f->n; i++)
        if (!list_add(r, out, &f->toks[i], is_db, r->name, 0))
            return false;
    return true;
}

static bool mask_from_bits(const char *bits, int family, uint8_t mask[16])
{
    int max = family == AF_INET ? 32 : 128;
    if (!*bits || strlen(bits) > 3)
        return false;
    int n = 0;
    for (const char *d = bits; *d; d++) {
        if (*d < '0' || *d > '9')
            return false;
        n = n * 10 + (*d - '0');
    }
    if (n > max)
        return false;
    memset(mask, 0, 16);
    for (int i = 0; i < n; i++)
        mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
    return true;
}

/* The address field (and the mask field after it when there is no /bits);
 * *next is the index of the field after them. */
static bool parse_address(struct report *r, const struct record *rec, int at,
                          struct hba_rule *rule, int *next)
{
    const struct field *f = &rec->fields[at];
    *next = at + 1;
    if (f->n != 1) {
        report(r, true, "multiple values specified for host address");
        return false;
    }
    const struct token *t = &f->toks[0];
    if (keyword(t, "all")) {
        rule->addr_kind = AK_ALL;
        return true;
    }
    if (keyword(t, "samehost") || keyword(t, "samenet")) {
        rule->addr_kind = AK_UNKNOWN;
        report(r, false, "\"%s\" is not supported; the rule matches only if it is a reject rule",
               t->s);
        return true;
    }
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", t->s);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (!pgw_addr_numeric(buf, false, &rule->family, rule->addr)) {
        if (slash || strlen(t->s) >= sizeof(buf) || strchr(t->s, ':')) {
            report(r, true, "invalid IP address \"%s\"", t->s);
            return false;
        }
        rule->addr_kind = AK_UNKNOWN;
        report(r, false, "host name \"%s\" is not supported (give an address); the rule "
               "matches only if it is a reject rule", t->s);
        return true;
    }
    rule->addr_kind = AK_NET;
    if (slash) {
        if (!mask_from_bits(slash + 1, rule->family, rule->mask)) {
            report(r, true, "invalid CIDR mask in address \"%s\"", t->s);
            return false;
        }
        return true;
    }
    if (at + 1 >= rec->n) {
        report(r, true, "end-of-line before netmask specification");
        return false;
    }
    const struct field *mf = &rec->fields[at + 1];
    int mfamily;
    if (mf->n != 1 || !pgw_addr_numeric(mf->toks[0].s, false, &mfamily, rule->mask)) {
        report(r, true, "invalid IP mask \"%s\"", mf->toks[0].s);
        return false;
    }
    if (mfamily != rule->family) {
        report(r, true, "IP address and mask do not match");
        return false;
    }
    *next = at + 2;
    return true;
}

static bool parse_method(struct report *r, const struct field *f, enum conn_type type,
                         enum pgw_hba_method *out)
{
    static const char *const unsupported[] = {
        "ident", "gss", "sspi", "pam", "ldap", "radius", "bsd", "krb5", "crypt",
    };
    if (f->n != 1) {
        report(r, true, "multiple values specified for authentication type");
        return false;
    }
    const char *m = f->toks[0].s;
    for (int i = 0; i < (int)(sizeof(method_names) / sizeof(method_names[0])); i++) {
        if (strcmp(m, method_names[i]) == 0) {
            *out = (enum pgw_hba_method)i;
            if (*out == PGW_HBA_CERT && type != CT_HOSTSSL) {
                report(r, true, "cert authentication is only supported on hostssl connections");
                return false;
            }
            if (*out == PGW_HBA_PEER && type != CT_LOCAL) {
                report(r, true, "peer authentication is only supported on local sockets");
                return false;
            }
            return true;
        }
    }
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        if (strcmp(m, unsupported[i]) == 0) {
            report(r, false, "authentication method \"%s\" is not supported by pgwharf; the "
                   "rule rejects", m);
            *out = PGW_HBA_REJECT;
            return true;
        }
    }
    report(r, true, "invalid authentication method \"%s\" (expected trust, reject, password, "
           "md5, scram-sha-256, cert or peer)", m);
    return false;
}

/* One option after the method: map=NAME on peer and cert rules,
 * clientcert=verify-full on cert rules.  Any other is not implemented, and
 * ignoring it would let in more than the rule says: the rule rejects
 * instead, as for an unsupported method. */
static bool parse_option(struct report *r, const struct field *f, struct hba_rule *rule)
{
    const char *opt = f->n > 0 ? f->toks[0].s : "";
    const char *eq = strchr(opt, '=');
    if (f->n != 1 || !eq) {
        report(r, true, "authentication option not in name=value format: %s", opt);
        return false;
    }
    size_t nlen = (size_t)(eq - opt);
    const char *val = eq + 1;
    if (rule->method == PGW_HBA_REJECT)
        return true;                         /* rejects anyway */
    if (nlen == 3 && strncmp(opt, "map", 3) == 0) {
        if (rule->method != PGW_HBA_PEER && rule->method != PGW_HBA_CERT) {
            report(r, true, "authentication option \"map\" is only valid for authentication "
                   "methods peer and cert");
            return false;
        }
        if (!*val) {
            report(r, true, "map= needs a map name");
            return false;
        }
        free(rule->map);
        if (!(rule->map = strdup(val))) {
            r->oom = true;
            return false;
        }
        return true;
    }
    if (nlen == 10 && strncmp(opt, "clientcert", 10) == 0 && rule->method == PGW_HBA_CERT) {
        if (strcmp(val, "verify-full") != 0) {
            report(r, true, "clientcert only accepts \"verify-full\" when using \"cert\" "
                   "authentication");
            return false;
        }
        return true;
    }
    report(r, false, "authentication option \"%s\" is not supported by pgwharf; the rule "
           "rejects", opt);
    rule->method = PGW_HBA_REJECT;
    free(rule->map);                         /* a reject rule maps nobody */
    rule->map = NULL;
    return true;
}

static bool parse_rule(struct report *r, const struct record *rec, struct hba_rule *rule)
{
    memset(rule, 0, sizeof(*rule));
    rule->line = r->line;
    if (!parse_type(r, &rec->fields[0], &rule->type))
        return false;
    if (rec->n < 2) {
        report(r, true, "end-of-line before database specification");
        return false;
    }
    if (!parse_list(r, &rec->fields[1], true, &rule->dbs))
        return false;
    if (rec->n < 3) {
        report(r, true, "end-of-line before role specification");
        return false;
    }
    if (!parse_list(r, &rec->fields[2], false, &rule->users))
        return false;
    int at = 3;
    if (rule->type != CT_LOCAL) {
        if (rec->n < 4) {
            report(r, true, "end-of-line before IP address specification");
            return false;
        }
        if (!parse_address(r, rec, 3, rule, &at))
            return false;
    }
    if (rec->n <= at) {
        report(r, true, "end-of-line before authentication method");
        return false;
    }
    if (!parse_method(r, &rec->fields[at], rule->type, &rule->method))
        return false;
    for (int i = at + 1; i < rec->n; i++)
        if (!parse_option(r, &rec->fields[i], rule))
            return false;
    return true;
}

static bool hba_add(struct report *r, struct pgw_hba *hba, const struct hba_rule *rule)
{
    struct hba_rule *grown = pgw_array_grow(hba->rules, sizeof(*grown), (size_t)hba->n,
                                            &hba->cap, 16);
    if (!grown) {
        r->oom = true;
        return false;
    }
    hba->rules = grown;
    hba->rules[hba->n++] = *rule;
    return true;
}

/* One record (already joined across continuation lines). */
static void parse_record(struct report *r, struct pgw_hba *hba, const char *text)
{
    struct record rec = { 0 };
    struct hba_rule rule;
    if (tokenize(r, text, &rec) && rec.n > 0) {
        if (parse_rule(r, &rec, &rule)) {
            if (!hba_add(r, hba, &rule))
                rule_free(&rule);
        } else {
            rule_free(&rule);
        }
    }
    record_free(&rec);
}

static void for_each_record(struct report *r, struct pgw_hba *hba, const char *text, char *buf,
                            void (*fn)(struct report *, struct pgw_hba *, const char *));

static int hba_parse(const char *name, const char *text, struct pgw_hba **out,
                     struct pgw_conf_diag *diag, bool files)
{
    struct report r = { .diag = diag, .name = name, .files = files };
    struct pgw_hba *hba = calloc(1, sizeof(*hba));
    char *buf = malloc(strlen(text) + 1);
    *out = NULL;
    if (!hba || !buf) {
        free(hba);
        free(buf);
        return PGW_ENOMEM;
    }
    for_each_record(&r, hba, text, buf, parse_record);
    free(buf);
    if (r.oom) {
        pgw_hba_free(hba);
        return PGW_ENOMEM;
    }
    if (r.nerrors) {
        pgw_hba_free(hba);
        return PGW_ECONFIG;
    }
    *out = hba;
    return 0;
}

int pgw_hba_parse(const char *name, const char *text, struct pgw_hba **out,
                  struct pgw_conf_diag *diag)
{
    return hba_parse(name, text, out, diag, false);
}

/* The whole file as a string; NULL (with a reported error) on failure. */
static char *read_file(struct report *r)
{
    FILE *f = fopen(r->name, "r");
    if (!f) {
        report(r, true, "cannot open: %s", strerror(errno));
        return NULL;
    }
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    while (text) {
        if (len + 1 == cap) {
            char *grown = cap <= HBA_MAX_FILE ? realloc(text, cap * 2) : NULL;
            if (!grown) {
                report(r, true, cap > HBA_MAX_FILE ? "file too large" : "out of memory");
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            cap *= 2;
        }
        size_t n = fread(text + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (text && ferror(f)) {
        report(r, true, "read error");
        free(text);
        text = NULL;
    }
    fclose(f);
    if (text) {
        text[len] = '\0';
        if (strlen(text) != len) {
            report(r, true, "file contains a NUL byte");
            free(text);
            text = NULL;
        }
    }
    return text;
}

/* A map= that no line of auth_ident_file defines lets nobody in: say so. */
static void warn_unknown_maps(const struct pgw_hba *hba, const char *path, const char *ident_path,
                              struct pgw_conf_diag *diag)
{
    struct report r = { .diag = diag, .name = path };
    for (int i = 0; i < hba->n; i++) {
        const struct hba_rule *rule = &hba->rules[i];
        int j = 0;
        if (!rule->map || rule->method == PGW_HBA_REJECT)
            continue;
        while (j < hba->nidents && strcmp(hba->idents[j].map, rule->map) != 0)
            j++;
        if (j < hba->nidents)
            continue;
        r.line = rule->line;
        if (ident_path && *ident_path)
            report(&r, false, "map \"%s\" has no line in %s; the rule lets nobody in",
                   rule->map, ident_path);
        else
            report(&r, false, "map \"%s\" but auth_ident_file is not set; the rule lets "
                   "nobody in", rule->map);
    }
}

int pgw_hba_load(const char *path, const char *ident_path, struct pgw_hba **out,
                 struct pgw_conf_diag *diag)
{
    struct report r = { .diag = diag, .name = path };
    *out = NULL;
    char *text = read_file(&r);
    if (!text)
        return PGW_ECONFIG;
    int rc = hba_parse(path, text, out, diag, true);
    free(text);
    if (rc < 0)
        return rc;
    if (ident_path && *ident_path) {
        r.name = ident_path;
        if (!(text = read_file(&r)))
            rc = PGW_ECONFIG;
        else
            rc = pgw_hba_parse_ident(*out, ident_path, text, diag);
        free(text);
        if (rc < 0) {
            pgw_hba_free(*out);
            *out = NULL;
            return rc;
        }
    }
    warn_unknown_maps(*out, path, ident_path, diag);
    return 0;
}

/* ---- matching ---- */

enum tri { NO, MAYBE, YES };

/* physical: a database list for a physical replication connection, which
 * only the keyword replication matches (as in PostgreSQL's check_db);
 * any other connection never matches that keyword. */
static enum tri match_list(const struct hba_list *l, const char *name, const char *user,
                           bool physical)
{
    enum tri best = NO;
    for (int i = 0; i < l->n; i++) {
        const struct hba_item *it = &l->items[i];
        if (physical) {
            if (it->kind == IK_REPLICATION)
                return YES;
            continue;
        }
        switch (it->kind) {
        case IK_ALL:
            return YES;
        case IK_SAMEUSER:
            if (strcmp(name, user) == 0)
                return YES;
            break;
        case IK_NAME:
            if (strcmp(name, it->name) == 0)
                return YES;
            break;
        case IK_UNKNOWN:
            best = MAYBE;
            break;
        case IK_REPLICATION:
            break;
        }
    }
    return best;
}

static bool net_match(const struct hba_rule *rule, const struct sockaddr *sa)
{
    const uint8_t *a;
    int len;
    if (sa->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        len = 4;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        a = (const uint8_t *)in6;
        len = 16;
        if (rule->family == AF_INET && IN6_IS_ADDR_V4MAPPED(in6)) {
            a += 12;
            len = 4;
        }
    } else {
        return false;
    }
    if ((rule->family == AF_INET) != (len == 4))
        return false;
    for (int i = 0; i < len; i++)
        if ((a[i] & rule->mask[i]) != (rule->addr[i] & rule->mask[i]))
            return false;
    return true;
}

static enum tri match_conn(const struct hba_rule *rule, bool is_unix, bool is_tls,
                           const struct sockaddr *addr)
{
    switch (rule->type) {
    case CT_LOCAL:
        return is_unix ? YES : NO;
    case CT_HOSTSSL:
        if (!is_tls)
            return NO;
        break;
    case CT_HOSTNOSSL:
        if (is_tls)
            return NO;
        break;
    case CT_HOSTGSSENC:
        return NO;
    case CT_HOST:
    case CT_HOSTNOGSSENC:
        break;
    }
    if (is_unix)
        return NO;
    switch (rule->addr_kind) {
    case AK_ALL:
        return YES;
    case AK_NET:
        return addr && net_match(rule, addr) ? YES : NO;
    case AK_UNKNOWN:
        return MAYBE;
    case AK_NONE:
        break;
    }
    return NO;
}

/* Does `later` ask at least what `skipped` would have?  Reject asks the
 * most, trust the least; scram-sha-256 is md5 without the md5 secrets
 * (an md5 rule runs SCRAM for a SCRAM secret anyway).  Other pairs do not
 * compare: a password is not an md5 hash, a certificate not a password. */
static bool asks_at_least(enum pgw_hba_method later, enum pgw_hba_method skipped)
{
    return later == skipped || later == PGW_HBA_REJECT || skipped == PGW_HBA_TRUST ||
           (skipped == PGW_HBA_MD5 && later == PGW_HBA_SCRAM);
}

static bool same_map(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

enum pgw_hba_method pgw_hba_match(const struct pgw_hba *hba, bool is_unix, bool is_tls,
                                  const struct sockaddr *addr, const char *db, const char *user,
                                  int *line, const char **map)
{
    return pgw_hba_match_conn(hba, is_unix, is_tls, false, addr, db, user, line, map);
}

enum pgw_hba_method pgw_hba_match_conn(const struct pgw_hba *hba, bool is_unix, bool is_tls,
                                       bool physical, const struct sockaddr *addr,
                                       const char *db, const char *user, int *line,
                                       const char **map)
{
    /* Per method, the first rule skipped as unsure that asks for it (line
     * 0: none), its map, and whether later skipped rules of that method had
     * another.  PostgreSQL may have matched any of them, so the rule that
     * decides must ask for at least what each of them would: the same map
     * too, as one map cannot be said to allow less than another. */
    struct { int line; const char *map; bool mixed; } skipped[HBA_NMETHODS] = { { 0 } };
    *line = 0;
    if (map)
        *map = NULL;
    for (int i = 0; hba && i < hba->n; i++) {
        const struct hba_rule *rule = &hba->rules[i];
        enum tri c = match_conn(rule, is_unix, is_tls, addr);
        if (c == NO)
            continue;
        enum tri d = match_list(&rule->dbs, db, user, physical);
        if (d == NO)
            continue;
        enum tri u = match_list(&rule->users, user, user, false);
        if (u == NO)
            continue;
        bool sure = c == YES && d == YES && u == YES;
        if (!sure && rule->method != PGW_HBA_REJECT) {
            /* Unsure: only a reject rule decides (fail closed). */
            if (!skipped[rule->method].line) {
                skipped[rule->method].line = rule->line;
                skipped[rule->method].map = rule->map;
            } else if (!same_map(skipped[rule->method].map, rule->map)) {
                skipped[rule->method].mixed = true;
            }
            continue;
        }
        int refused = 0;                 /* the first skipped rule it asks less than */
        for (int m = 0; m < HBA_NMETHODS; m++) {
            if (!skipped[m].line)
                continue;
            bool enough = asks_at_least(rule->method, (enum pgw_hba_method)m);
            if (enough && rule->method == (enum pgw_hba_method)m &&
                (skipped[m].mixed || !same_map(skipped[m].map, rule->map)))
                enough = false;
            if (!enough && (!refused || skipped[m].line < refused))
                refused = skipped[m].line;
        }
        *line = refused ? refused : rule->line;
        if (refused)
            return PGW_HBA_REJECT;
        if (map)
            *map = rule->map;
        return rule->method;
    }
    return PGW_HBA_REJECT;
}

/* ---- user name maps ---- */

static bool ident_line_add(struct report *r, struct pgw_hba *hba, struct ident_line *l)
{
    struct ident_line *grown = pgw_array_grow(hba->idents, sizeof(*grown), (size_t)hba->nidents,
                                              &hba->capidents, 16);
    if (!grown) {
        r->oom = true;
        return false;
    }
    hba->idents = grown;
    hba->idents[hba->nidents++] = *l;
    return true;
}

static void ident_record(struct report *r, struct pgw_hba *hba, const char *text)
{
    static const char *const what[] = { "map name", "system user name", "database user name" };
    struct record rec = { 0 };
    struct ident_line l = { .line = r->line };
    if (!tokenize(r, text, &rec) || rec.n == 0)
        goto done;
    if (rec.n < 3) {
        report(r, true, "missing entry at end of line (expected map name, system user name "
               "and database user name)");
        goto done;
    }
    if (rec.n > 3) {
        report(r, true, "extra field \"%s\" after the database user name", rec.fields[3].toks[0].s);
        goto done;
    }
    for (int i = 0; i < 3; i++) {
        if (rec.fields[i].n != 1) {
            report(r, true, "multiple values in ident field (%s)", what[i]);
            goto done;
        }
    }
    const struct token *sys = &rec.fields[1].toks[0], *dbu = &rec.fields[2].toks[0];
    /* As PostgreSQL: a name starting with '/' is a regular expression,
     * quoted or not. */
    if (sys->s[0] == '/') {
        l.system_kind = ID_UNKNOWN;
        report(r, false, "regular expression \"%s\" is not supported; the line never matches",
               sys->s);
    }
    if (keyword(dbu, "all")) {
        l.db_kind = ID_ALL;
    } else if (dbu->s[0] == '/' || (!dbu->quoted && dbu->s[0] == '+')) {
        l.db_kind = ID_UNKNOWN;
        report(r, false, "%s \"%s\" is not supported; the line never matches",
               dbu->s[0] == '/' ? "regular expression" : "group", dbu->s);
    }
    l.map = strdup(rec.fields[0].toks[0].s);
    l.system_user = strdup(sys->s);
    l.db_user = strdup(dbu->s);
    if (!l.map || !l.system_user || !l.db_user) {
        r->oom = true;
        goto done;
    }
    if (ident_line_add(r, hba, &l))
        l.map = l.system_user = l.db_user = NULL;
done:
    free(l.map);
    free(l.system_user);
    free(l.db_user);
    record_free(&rec);
}

/* Feed each logical line (continuations joined) of text to fn. */
static void for_each_record(struct report *r, struct pgw_hba *hba, const char *text, char *buf,
                            void (*fn)(struct report *, struct pgw_hba *, const char *))
{
    int lineno = 0;
    size_t blen = 0;
    for (const char *p = text; *p && !r->oom;) {
        size_t n = strcspn(p, "\n");
        if (blen == 0)
            r->line = lineno + 1;    /* a record is reported at its first line */
        lineno++;
        memcpy(buf + blen, p, n);
        blen += n;
        while (blen > 0 && buf[blen - 1] == '\r')
            blen--;
        p += n + (p[n] == '\n');
        /* Joined with nothing in between, as PostgreSQL 16's
         * tokenize_auth_file does ("scram-sha-\" then "256"). */
        bool more = blen > 0 && buf[blen - 1] == '\\' && *p;
        if (more) {
            blen--;
            continue;
        }
        if (blen > 0 && buf[blen - 1] == '\\')
            blen--;                 /* a continuation at the end of the file */
        buf[blen] = '\0';
        fn(r, hba, buf);
        blen = 0;
    }
}

int pgw_hba_parse_ident(struct pgw_hba *hba, const char *name, const char *text,
                        struct pgw_conf_diag *diag)
{
    struct report r = { .diag = diag, .name = name };
    char *buf = malloc(strlen(text) + 1);
    if (!buf)
        return PGW_ENOMEM;
    idents_free(hba);
    for_each_record(&r, hba, text, buf, ident_record);
    free(buf);
    if (r.oom || r.nerrors) {
        idents_free(hba);
        return r.oom ? PGW_ENOMEM : PGW_ECONFIG;
    }
    return 0;
}

bool pgw_hba_usermap(const struct pgw_hba *hba, const char *map, const char *system_user,
                     const char *db_user, int *line)
{
    *line = 0;
    if (!map)
        return strcmp(system_user, db_user) == 0;
    for (int i = 0; hba && i < hba->nidents; i++) {
        const struct ident_line *l = &hba->idents[i];
        if (strcmp(l->map, map) != 0 || l->system_kind != ID_NAME || l->db_kind == ID_UNKNOWN ||
            strcmp(l->system_user, system_user) != 0)
            continue;
        if (l->db_kind == ID_ALL || strcmp(l->db_user, db_user) == 0) {
            *line = l->line;
            return true;
        }
    }
    return false;
}
