/*
 * connstr.c - connection strings as in [databases] and [users]: `key=value`
 * pairs separated by spaces, read the way PgBouncer reads them (its
 * loader.c cstr_get_value): a value may be single-quoted, `''` is a quote
 * inside quotes, and a backslash is a plain character (libpq's `\x`
 * escapes are not: PgBouncer's `password=a\b` is those three characters,
 * and `'a\'b'` ends at the second quote).  Also the static list of libpq keywords
 * (conf does not link libpq; PQconndefaults() of libpq 15 plus the keys
 * libpq 16-18 added).
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const libpq_keywords[] = {
    "service", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "dbname", "host", "hostaddr", "port", "client_encoding", "options",
    "application_name", "fallback_application_name", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout", "sslmode",
    "sslcompression", "sslcert", "sslkey", "sslpassword", "sslrootcert", "sslcrl",
    "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "gssencmode", "krbsrvname", "gsslib", "replication",
    "target_session_attrs",
    /* libpq 16 (its load_balance_hosts is a pool key: pgwharf picks the host) */
    "require_auth", "sslcertmode",
    /* libpq 17 */
    "sslnegotiation", "gssdelegation",
    /* libpq 18 */
    "sslkeylogfile", "min_protocol_version", "max_protocol_version",
    "scram_client_key", "scram_server_key", "oauth_issuer", "oauth_client_id",
    "oauth_client_secret", "oauth_scope",
};

const char *conf_libpq_keyword(const char *name)
{
    for (size_t i = 0; i < sizeof(libpq_keywords) / sizeof(libpq_keywords[0]); i++)
        if (strcasecmp(libpq_keywords[i], name) == 0)
            return libpq_keywords[i];
    return NULL;
}

static const char *skip_space(const char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    return p;
}

/* Copy a value starting at p into out; returns the end or NULL on error.
 * Unquoted: up to the next blank.  Quoted: up to the quote not doubled. */
static const char *read_value(const char *p, char *out, const char *key, char *err,
                              size_t errlen)
{
    if (*p != '\'') {
        while (*p && !isspace((unsigned char)*p))
            *out++ = *p++;
        *out = '\0';
        return p;
    }
    for (p++;; p++) {
        if (*p == '\0') {
            snprintf(err, errlen, "%s: unterminated quoted value", key);
            return NULL;
        }
        if (*p == '\'' && p[1] == '\'') {
            *out++ = *++p;
        } else if (*p == '\'') {
            break;
        } else {
            *out++ = *p;
        }
    }
    *out = '\0';
    p++;
    if (*p && !isspace((unsigned char)*p)) {
        /* PgBouncer's "syntax error in connection string" for libpq's
         * `'a\'b'` (the value is `a\`, then `b'` is no key=value): the
         * same error here, saying why. */
        snprintf(err, errlen, "%s: expected a space after the quoted value "
                 "(a quote inside quotes is '', a backslash escapes nothing)", key);
        return NULL;
    }
    return p;
}

int conf_connstr_next(const char **pp, char **key, char **val, char *err, size_t errlen)
{
    const char *p = skip_space(*pp);
    *key = *val = NULL;
    if (!*p)
        return 0;
    size_t klen = strcspn(p, "= \t\r\n\v\f");
    if (klen == 0) {
        snprintf(err, errlen, "expected key=value, got \"%s\"", p);
        return PGW_ECONFIG;
    }
    const char *eq = skip_space(p + klen);
    if (*eq != '=') {
        snprintf(err, errlen, "expected \"=\" after \"%.*s\"", (int)klen, p);
        return PGW_ECONFIG;
    }
    const char *v = skip_space(eq + 1);
    if (!*v) {
        /* PgBouncer's "syntax error in connection string": dbname= at the
         * end of the line was an empty dbname (the server got the
         * entry's name instead). */
        snprintf(err, errlen, "%.*s: expected a value after \"=\" (an empty one is '')",
                 (int)klen, p);
        return PGW_ECONFIG;
    }
    *key = strndup(p, klen);
    *val = malloc(strlen(v) + 1);
    if (!*key || !*val) {
        free(*key);
        free(*val);
        *key = *val = NULL;
        return PGW_ENOMEM;
    }
    const char *end = read_value(v, *val, *key, err, errlen);
    if (!end) {
        free(*key);
        free(*val);
        *key = *val = NULL;
        return PGW_ECONFIG;
    }
    *pp = end;
    return 1;
}

void conf_connstr_quote(FILE *f, const char *val)
{
    bool plain = *val != '\0';
    for (const char *p = val; *p; p++)
        if (isspace((unsigned char)*p) || *p == '\'')
            plain = false;
    if (plain) {
        fputs(val, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = val; *p; p++) {
        if (*p == '\'')
            fputc('\'', f);
        fputc(*p, f);
    }
    fputc('\'', f);
}
