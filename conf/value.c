/*
 * value.c - the value types of the config file: integers with ranges
 * (decimal in [databases], [users] and [peers], as PgBouncer's atoi; any C
 * integer in [pgwharf], as its strtol base 0),
 * durations ("1.5", "1e3", "250ms", "2min"), plain numbers, booleans (PgBouncer's
 * 0/1 and the usual words), and the enums with their names.  Each parser
 * returns 0 or PGW_ECONFIG with "expected ..., got \"x\"" in err.
 */
#include "conf/conf_int.h"
#include "common/err.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longer than any sane duration; keeps seconds * 1e6 inside an int64. */
#define MAX_SECONDS 1e12

static const char *const pool_mode_names[] = {
    [PGW_POOL_SESSION] = "session",
    [PGW_POOL_TRANSACTION] = "transaction",
    [PGW_POOL_STATEMENT] = "statement",
};
static const char *const load_balance_names[] = {
    [PGW_LB_ROUND_ROBIN] = "round-robin",
    [PGW_LB_DISABLE] = "disable",
};
static const char *const target_session_names[] = {
    [PGW_TSA_ANY] = "any", [PGW_TSA_READ_WRITE] = "read-write",
    [PGW_TSA_READ_ONLY] = "read-only", [PGW_TSA_PRIMARY] = "primary",
    [PGW_TSA_STANDBY] = "standby", [PGW_TSA_PREFER_STANDBY] = "prefer-standby",
};
static const char *const auth_type_names[] = {
    [PGW_AUTH_TRUST] = "trust", [PGW_AUTH_ANY] = "any",
    [PGW_AUTH_PLAIN] = "plain", [PGW_AUTH_MD5] = "md5",
    [PGW_AUTH_SCRAM] = "scram-sha-256", [PGW_AUTH_CERT] = "cert",
    [PGW_AUTH_HBA] = "hba",
};
static const char *const tls_mode_names[] = {
    [PGW_TLS_DISABLE] = "disable", [PGW_TLS_ALLOW] = "allow",
    [PGW_TLS_PREFER] = "prefer", [PGW_TLS_REQUIRE] = "require",
    [PGW_TLS_VERIFY_CA] = "verify-ca", [PGW_TLS_VERIFY_FULL] = "verify-full",
};
#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *name_of(const char *const *names, int n, int v)
{
    return v >= 0 && v < n ? names[v] : "?";
}

const char *pgw_pool_mode_name(enum pgw_pool_mode m)
{
    return name_of(pool_mode_names, NELEM(pool_mode_names), (int)m);
}

const char *pgw_load_balance_name(enum pgw_load_balance m)
{
    return name_of(load_balance_names, NELEM(load_balance_names), (int)m);
}

const char *pgw_target_session_name(enum pgw_target_session t)
{
    return name_of(target_session_names, NELEM(target_session_names), (int)t);
}

const char *pgw_auth_type_name(enum pgw_auth_type t)
{
    return name_of(auth_type_names, NELEM(auth_type_names), (int)t);
}

const char *pgw_tls_mode_name(enum pgw_tls_mode m)
{
    return name_of(tls_mode_names, NELEM(tls_mode_names), (int)m);
}

static int parse_enum(const char *const *names, int n, const char *text, int *out,
                      char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        if (strcasecmp(text, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    size_t used = (size_t)snprintf(err, errlen, "expected one of ");
    for (int i = 0; i < n && used < errlen; i++)
        used += (size_t)snprintf(err + used, errlen - used, "%s%s", i ? ", " : "", names[i]);
    if (used < errlen)
        snprintf(err + used, errlen - used, "; got \"%s\"", text);
    return PGW_ECONFIG;
}

int conf_parse_pool_mode(const char *text, int *out, char *err, size_t errlen)
{
    return parse_enum(pool_mode_names, NELEM(pool_mode_names), text, out, err, errlen);
}

int conf_parse_load_balance(const char *text, int *out, char *err, size_t errlen)
{
    return parse_enum(load_balance_names, NELEM(load_balance_names), text, out, err, errlen);
}

int conf_parse_target_session(const char *text, int *out, char *err, size_t errlen)
{
    return parse_enum(target_session_names, NELEM(target_session_names), text, out, err, errlen);
}

int conf_parse_auth_type(const char *text, int *out, char *err, size_t errlen)
{
    return parse_enum(auth_type_names, NELEM(auth_type_names), text, out, err, errlen);
}

int conf_parse_tls_mode(const char *text, int *out, char *err, size_t errlen)
{
    return parse_enum(tls_mode_names, NELEM(tls_mode_names), text, out, err, errlen);
}

int conf_parse_log_level(const char *text, char *err, size_t errlen)
{
    if (pgw_log_level_parse(text) >= 0)
        return 0;
    snprintf(err, errlen,
             "expected one of debug, info, notice, warning, error, fatal; got \"%s\"", text);
    return PGW_ECONFIG;
}

static int int_error(const char *text, int lo, int hi, const char *how, char *err,
                     size_t errlen)
{
    if (lo == 1 && hi == INT_MAX)
        snprintf(err, errlen, "expected a positive integer%s, got \"%s\"", how, text);
    else if (lo == 0 && hi == INT_MAX)
        snprintf(err, errlen, "expected a non-negative integer%s, got \"%s\"", how, text);
    else
        snprintf(err, errlen, "expected an integer from %d to %d%s, got \"%s\"", lo, hi, how,
                 text);
    return PGW_ECONFIG;
}

/* After an optional sign, a 0 and more: C's octal or hexadecimal prefix. */
static bool zero_prefixed(const char *text)
{
    if (*text == '+' || *text == '-')
        text++;
    return text[0] == '0' && text[1] != '\0';
}

int conf_parse_int_c(const char *text, int lo, int hi, int *out, char *err, size_t errlen)
{
    char *end = NULL;
    errno = 0;
    long long v = *text && !isspace((unsigned char)*text) ? strtoll(text, &end, 0) : 0;
    if (!end || end == text || *end != '\0')
        return int_error(text, lo, hi, zero_prefixed(text) ?
                         " (decimal, 0x hexadecimal, or octal after a leading 0, as PgBouncer "
                         "reads it)" : "", err, errlen);
    if (errno == ERANGE || v < lo || v > hi)
        return int_error(text, lo, hi, "", err, errlen);
    *out = (int)v;
    return 0;
}

bool conf_int_octal(const char *text)
{
    if (!zero_prefixed(text))
        return false;
    if (*text == '+' || *text == '-')
        text++;
    return text[1] != 'x' && text[1] != 'X';
}

int conf_parse_int(const char *text, int lo, int hi, int *out, char *err, size_t errlen)
{
    const char *p = text;
    if (*p == '+' || *p == '-')
        p++;
    bool digits = isdigit((unsigned char)*p);
    while (isdigit((unsigned char)*p))
        p++;
    long long v = 0;
    if (digits && *p == '\0' && p - text <= 12)
        v = strtoll(text, NULL, 10);
    if (digits && *p == '\0' && p - text <= 12 && v >= lo && v <= hi) {
        *out = (int)v;
        return 0;
    }
    return int_error(text, lo, hi, "", err, errlen);
}

/* A plain decimal "12", "1.5", ".5", "3." at the start of text; returns the
 * length, 0 when there is none.  strtod reads it (the C locale is assumed). */
static size_t decimal_len(const char *text)
{
    const char *p = text;
    size_t ndigits = 0;
    for (; isdigit((unsigned char)*p); p++)
        ndigits++;
    if (*p == '.')
        for (p++; isdigit((unsigned char)*p); p++)
            ndigits++;
    return ndigits ? (size_t)(p - text) : 0;
}

/* seconds = number * scale / divisor: dividing keeps "250ms" exact. */
static const struct {
    const char *name;
    double scale;
    double divisor;
} dur_units[] = {
    { "us", 1, 1e6 }, { "ms", 1, 1e3 }, { "s", 1, 1 },
    { "min", 60, 1 }, { "h", 3600, 1 }, { "d", 86400, 1 },
};

/* The number strtod reads at text, as PgBouncer reads a [pgbouncer] time
 * value ("1.5", ".5", "1e3", "+2", "0x10", "-0"), but not inf or nan, nor
 * one out of strtod's range ("1e400", "1e-400": PgBouncer refuses those).
 * In an entry (entry: [databases], [users]) PgBouncer's atoi reads the
 * value: only a plain decimal means the same to both ("1e3" is 1 there). */
static int dur_number(const char *text, bool entry, double *v, const char **end)
{
    const char *p = text + (*text == '+' || *text == '-');
    if (!isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1])))
        return PGW_EINVAL;
    char *e;
    errno = 0;
    *v = strtod(text, &e);
    if (errno == ERANGE || e == text)
        return PGW_EINVAL;
    if (entry && (p != text || (size_t)(e - text) != decimal_len(text)))
        return PGW_EINVAL;
    *end = e;
    return 0;
}

/* A duration: PgBouncer's number of seconds, or one with a unit; kept in
 * whole microseconds, as PgBouncer keeps it (its usec_t: "1e-7" is 0). */
static int parse_dur(const char *text, bool entry, double *out)
{
    while (isspace((unsigned char)*text))
        text++;
    double v;
    const char *unit;
    if (dur_number(text, entry, &v, &unit) != 0)
        return PGW_EINVAL;
    while (isspace((unsigned char)*unit))
        unit++;
    size_t ulen = strlen(unit);
    while (ulen > 0 && isspace((unsigned char)unit[ulen - 1]))
        ulen--;
    double scale = 1, divisor = 1;
    if (ulen > 0) {
        int i = 0;
        while (i < NELEM(dur_units) && (strlen(dur_units[i].name) != ulen ||
                                        strncasecmp(unit, dur_units[i].name, ulen) != 0))
            i++;
        if (i == NELEM(dur_units))
            return PGW_EINVAL;
        scale = dur_units[i].scale;
        divisor = dur_units[i].divisor;
    }
    if (v < 0 || v * scale / divisor > MAX_SECONDS)
        return PGW_EINVAL;
    *out = floor(v * scale * 1e6 / divisor) / 1e6 + 0.0;     /* "-0" is 0 */
    return 0;
}

int pgw_conf_parse_duration(const char *text, double *seconds)
{
    return text ? parse_dur(text, false, seconds) : PGW_EINVAL;
}

static int dur_error(const char *text, char *err, size_t errlen)
{
    if (text[strspn(text, " \t")] == '-')
        snprintf(err, errlen, "expected a non-negative duration, got \"%s\"", text);
    else
        snprintf(err, errlen,
                 "expected a duration (seconds, or a number with us, ms, s, min, h, d), "
                 "got \"%s\"", text);
    return PGW_ECONFIG;
}

int conf_parse_dur(const char *text, double *out, char *err, size_t errlen)
{
    return parse_dur(text, false, out) == 0 ? 0 : dur_error(text, err, errlen);
}

int conf_parse_entry_dur(const char *text, double *out, char *err, size_t errlen)
{
    return parse_dur(text, true, out) == 0 ? 0 : dur_error(text, err, errlen);
}

int conf_parse_int_unset(const char *text, int lo, int hi, int *out, char *err, size_t errlen)
{
    if (strcmp(text, "-1") == 0) {
        *out = -1;
        return 0;
    }
    return conf_parse_int(text, lo, hi, out, err, errlen);
}

int conf_parse_dur_unset(const char *text, double *out, char *err, size_t errlen)
{
    if (strcmp(text, "-1") == 0) {
        *out = -1;
        return 0;
    }
    if (parse_dur(text, true, out) == 0)
        return 0;
    snprintf(err, errlen,
             "expected a duration (seconds, or a number with us, ms, s, min, h, d) or -1 "
             "(not set), got \"%s\"", text);
    return PGW_ECONFIG;
}

int conf_parse_num(const char *text, double *out, char *err, size_t errlen)
{
    size_t n = decimal_len(text);
    if (n > 0 && text[n] == '\0') {
        double v = strtod(text, NULL);
        if (isfinite(v) && v <= MAX_SECONDS) {
            *out = v;
            return 0;
        }
    }
    snprintf(err, errlen, "expected a non-negative number, got \"%s\"", text);
    return PGW_ECONFIG;
}

static const struct {
    const char *name;
    bool value;
} bool_words[] = {
    { "1", true }, { "0", false }, { "yes", true }, { "no", false },
    { "on", true }, { "off", false }, { "true", true }, { "false", false },
};

int conf_parse_bool(const char *text, bool *out, char *err, size_t errlen)
{
    for (int i = 0; i < NELEM(bool_words); i++) {
        if (strcasecmp(text, bool_words[i].name) == 0) {
            *out = bool_words[i].value;
            return 0;
        }
    }
    snprintf(err, errlen, "expected a boolean (on/off, yes/no, true/false, 1/0), got \"%s\"",
             text);
    return PGW_ECONFIG;
}

void conf_format_num(char *buf, size_t len, double v)
{
    for (int prec = 0; prec <= 20; prec++) {
        snprintf(buf, len, "%.*f", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}
