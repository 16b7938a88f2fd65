/*
 * breaker.c - the circuit breaker state machine and the guess of a
 * SQLSTATE from libpq's connect error text.  Pure: no clock, no I/O.
 */
#include "pool/breaker.h"

#include <ctype.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

void pgw_breaker_init(struct pgw_breaker *b, int threshold, double cooldown,
                      double max_cooldown)
{
    memset(b, 0, sizeof(*b));
    b->state = PGW_BREAKER_CLOSED;
    pgw_breaker_configure(b, threshold, cooldown, max_cooldown, 0);
    b->cooldown = b->base_cooldown;
}

void pgw_breaker_configure(struct pgw_breaker *b, int threshold, double cooldown,
                           double max_cooldown, double now)
{
    b->threshold = threshold;
    b->base_cooldown = cooldown > 0 ? cooldown : 0;
    b->max_cooldown = max_cooldown > b->base_cooldown ? max_cooldown : b->base_cooldown;
    if (b->cooldown < b->base_cooldown)
        b->cooldown = b->base_cooldown;
    if (b->cooldown > b->max_cooldown)
        b->cooldown = b->max_cooldown;
    /* An open breaker's wait is the cooldown in force from now at most: one
     * opened under a 30 s cooldown kept its probe 30 s away after a reload
     * to 1 s / 2 s (older). */
    if (b->state == PGW_BREAKER_OPEN && b->next_probe > now + b->cooldown)
        b->next_probe = now + b->cooldown;
    if (threshold <= 0 && b->state != PGW_BREAKER_CLOSED) {
        b->state = PGW_BREAKER_CLOSED;
        b->probe_inflight = false;
        b->next_probe = 0;
    }
}

bool pgw_breaker_blocked(const struct pgw_breaker *b, double now)
{
    switch (b->state) {
    case PGW_BREAKER_CLOSED:
        return false;
    case PGW_BREAKER_OPEN:
        return now < b->next_probe;
    case PGW_BREAKER_HALF_OPEN:
        return b->probe_inflight;
    }
    return false;
}

bool pgw_breaker_allow(struct pgw_breaker *b, double now, bool *probe)
{
    *probe = false;
    if (pgw_breaker_blocked(b, now))
        return false;
    if (b->state == PGW_BREAKER_CLOSED)
        return true;
    b->state = PGW_BREAKER_HALF_OPEN;
    b->probe_inflight = true;
    *probe = true;
    return true;
}

void pgw_breaker_success(struct pgw_breaker *b)
{
    b->state = PGW_BREAKER_CLOSED;
    b->failures = 0;
    b->cooldown = b->base_cooldown;
    b->next_probe = 0;
    b->probe_inflight = false;
}

static void breaker_open(struct pgw_breaker *b, double now)
{
    b->state = PGW_BREAKER_OPEN;
    b->probe_inflight = false;
    b->next_probe = now + b->cooldown;
}

bool pgw_breaker_failure(struct pgw_breaker *b, double now, bool probe)
{
    b->failures++;
    if (b->threshold <= 0)
        return false;
    if (b->state == PGW_BREAKER_HALF_OPEN && probe) {
        b->cooldown *= 2;
        if (b->cooldown > b->max_cooldown)
            b->cooldown = b->max_cooldown;
        breaker_open(b, now);
        b->trips++;
        return true;
    }
    if (b->state == PGW_BREAKER_CLOSED && b->failures >= b->threshold) {
        breaker_open(b, now);
        b->trips++;
        return true;
    }
    /* Late failures of attempts started before the trip change nothing. */
    return false;
}

void pgw_breaker_probe_abort(struct pgw_breaker *b, double now)
{
    if (b->state != PGW_BREAKER_HALF_OPEN)
        return;
    b->state = PGW_BREAKER_OPEN;
    b->probe_inflight = false;
    b->next_probe = now;
}

/* ---- SQLSTATE from libpq's text ---- */

struct sqlstate_pattern {
    const char *needle;
    const char *sqlstate;
    const char *also;         /* must follow needle too, or NULL */
};

/* Backend messages (the FATAL: part) first, then libpq's own. Order matters:
 * the first match wins. */
static const struct sqlstate_pattern patterns[] = {
    { "password authentication failed", "28P01" },
    { "SCRAM authentication", "28P01" },
    { "no password supplied", "28P01" },
    { "fe_sendauth: no password", "28P01" },
    { "no pg_hba.conf entry", "28000" },
    { "pg_hba.conf rejects", "28000" },            /* a "reject" line */
    { "authentication failed", "28000" },
    { "too many connections", "53300" },
    { "too many clients", "53300" },
    { "remaining connection slots are reserved", "53300" },
    { "out of memory", "53200" },
    { "the database system is starting up", "57P03" },
    { "the database system is shutting down", "57P03" },
    { "the database system is in recovery mode", "57P03" },
    { "the database system is not yet accepting connections", "57P03" },
    { "the database system is not accepting connections", "57P03" },
    { "terminating connection due to administrator command", "57P01" },
    { "is not currently accepting connections", "55000" },
    { "permission denied for database", "42501" },
    /* replication connections (pgw_pool_acquire_replication): a role
     * without REPLICATION (PostgreSQL up to 15, then 16's wording), and
     * max_wal_senders reached */
    { "must be superuser or replication role", "42501" },
    { "permission denied to start WAL sender", "42501" },
    { "exceeds max_wal_senders", "53300" },
    { "is not permitted to log in", "28000" },
    { "role \"", "28000", "does not exist" },
    { "database \"", "3D000", "does not exist" },
    /* libpq's own TLS files (a database entry's sslrootcert, sslcert,
     * sslkey, or the server_tls_* ones): this pool's configuration, not
     * the server's health (before the network errors: some end in "No such
     * file or directory"). */
    { "root certificate file", "F0000" },
    { "certificate file \"", "F0000" },
    { "private key file", "F0000" },
    { "SSL engine", "F0000" },
    /* libpq refusing a connection option's value before it connects
     * ("invalid sslmode value: ...", "invalid integer value ... for
     * connection option ...", "invalid SSL protocol version range"): the
     * entry's, not the server's (conf/dbs.c checks the enum ones at load;
     * this is for what gets past it, or a newer libpq's) */
    { "invalid ", "F0000", " value: \"" },
    { "invalid integer value", "F0000", "for connection option" },
    { "invalid port number", "F0000" },
    { "invalid connection option", "F0000" },
    { "invalid SSL protocol version range", "F0000" },
    /* an entry's service= that pg_service.conf lacks, or a service file
     * libpq cannot read */
    { "definition of service", "F0000" },
    { "service file", "F0000" },
    /* The server refusing a parameter of the login (a [databases] entry's
     * datestyle, timezone or options, as PostgreSQL's
     * process_postgres_switches and set_config_option word it):
     * configuration too */
    { "invalid value for parameter", "22023" },
    { "unrecognized configuration parameter", "42704" },
    { "is outside the valid range for parameter", "22023" },
    { "requires a Boolean value", "22023" },
    { "requires a numeric value", "22023" },
    { "requires a value", "42601" },                      /* "-c name" */
    { "invalid command-line argument", "42601" },
    { "invalid configuration parameter name", "42602" },
    { "permission denied to set parameter", "42501" },
    { "cannot be changed", "55P02" },                     /* now, without restarting */
    { "cannot be set after connection start", "55P02" },
    /* target_session_attrs (libpq 14+): the server is up but not the kind
     * asked for (see pgw_pool_target_mismatch) */
    { "session is read-only", "08001" },
    { "session is not read-only", "08001" },
    { "server is in hot standby mode", "08001" },
    { "server is not in hot standby mode", "08001" },
    { "could not translate host name", "08001" },
    { "Connection refused", "08001" },
    { "No such file or directory", "08001" },
    { "timeout expired", "08001" },
    { "server_connect_timeout", "08001" },
    { "timed out", "08001" },
    { "Network is unreachable", "08001" },
    { "No route to host", "08001" },
    /* The entry asks for an encryption the server does not offer
     * (sslmode=require or stricter, gssencmode=require): this pool's
     * configuration, see pgw_pool_refusal_is_local */
    { "server does not support SSL, but SSL was required", "08001" },
    { "server doesn't support GSSAPI encryption, but it was required", "08001" },
    { "SSL", "08001" },
};

const char *pgw_pool_guess_sqlstate(const char *msg)
{
    if (!msg)
        return "08006";
    for (size_t i = 0; i < sizeof(patterns) / sizeof(patterns[0]); i++) {
        const char *hit = strstr(msg, patterns[i].needle);
        if (!hit)
            continue;
        if (patterns[i].also && !strstr(hit, patterns[i].also))
            continue;
        return patterns[i].sqlstate;
    }
    return "08006";
}

bool pgw_pool_target_mismatch(const char *msg)
{
    static const char *const texts[] = {
        "session is read-only", "session is not read-only",
        "server is in hot standby mode", "server is not in hot standby mode",
    };
    for (size_t i = 0; msg && i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strstr(msg, texts[i]))
            return true;
    return false;
}

bool pgw_pool_refusal_is_tls(const char *msg)
{
    static const char *const texts[] = {
        "server does not support SSL, but SSL was required",
        "certificate verify failed",
        "does not match host name",
        "could not get server's host name from server certificate",
    };
    for (size_t i = 0; msg && i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strstr(msg, texts[i]))
            return true;
    return false;
}

bool pgw_pool_refusal_is_local(const char *msg)
{
    static const char *const texts[] = {
        "too many connections for role", "too many connections for database",
        "is not currently accepting connections",
        /* the server's reserved slots (15's "... for non-replication
         * superuser connections", 16's "... for roles with the SUPERUSER
         * attribute" and "... with privileges of the
         * pg_use_reserved_connections role"): full for this pool's role,
         * not for one that may use them (pgw_pool_refused_for_role_or_db) */
        "remaining connection slots are reserved",
        /* the server answered the GSSENCRequest with 'N': it is up, and
         * serves the pools that do not require it (an SSLRequest's 'N':
         * pgw_pool_refusal_is_tls, above) */
        "server doesn't support GSSAPI encryption, but it was required",
        /* channel_binding=require where the link or the server's
         * authentication offers none (libpq's "channel binding required,
         * but SSL not in use", "... is required, but server did not offer
         * an authentication method that supports channel binding") */
        "channel binding required", "channel binding is required",
    };
    for (size_t i = 0; msg && i < sizeof(texts) / sizeof(texts[0]); i++)
        if (strstr(msg, texts[i]))
            return true;
    /* a TLS refusal (no TLS there, a certificate that failed this pool's
     * check: the wrong sslrootcert / server_tls_ca_file, a name that does
     * not match under verify-full): the server is up, and serves the
     * pools that check it otherwise or not at all */
    return pgw_pool_refusal_is_tls(msg);
}

/* "  XXXXX: " after a severity's colon: the SQLSTATE libpq writes in its
 * verbose form (p at the colon). */
static bool at_sqlstate(const char *p)
{
    if (p[0] != ':' || p[1] != ' ' || p[2] != ' ')
        return false;
    for (int i = 3; i < 8; i++)
        if (!isdigit((unsigned char)p[i]) && !(p[i] >= 'A' && p[i] <= 'Z'))
            return false;
    return p[8] == ':' && p[9] == ' ';
}

/* Where the server's SQLSTATE of the attempt whose line starts at line
 * is (the severity's colon), or NULL.  Only there: libpq's "connection to
 * server at ... failed: " then the severity (a word in the server's
 * language, no colon in it) and its ":  "; the message after it may
 * quote the client's names, which could spell anything. */
static const char *attempt_sqlstate(const char *line)
{
    static const char prefix[] = "connection to server ";
    if (strncmp(line, prefix, sizeof(prefix) - 1) != 0)
        return NULL;
    const char *eol = strchr(line, '\n');
    const char *failed = strstr(line, " failed: ");
    if (!failed || (eol && failed > eol))
        return NULL;
    const char *colon = strchr(failed + 9, ':');
    if (!colon || (eol && colon > eol) || !at_sqlstate(colon))
        return NULL;
    return colon;
}

bool pgw_pool_server_sqlstate(const char *msg, char out[6])
{
    bool found = false;
    for (const char *line = msg; line && *line;) {
        const char *at = attempt_sqlstate(line);
        if (at) {
            memcpy(out, at + 3, 5);      /* the last attempt's, which ended the login */
            out[5] = '\0';
            found = true;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return found;
}

bool pgw_pool_refused_for_role_or_db(const char *msg)
{
    /* PostgreSQL's routines checking one role (InitializeSessionUserId:
     * its CONNECTION LIMIT, LOGIN, existence) and one database
     * (CheckMyDatabase: its CONNECTION LIMIT, ALLOW_CONNECTIONS, CONNECT
     * privilege); the server-wide limits are InitProcess's and
     * ProcessStartupPacket's.  InitPostgres' 53300 is the reserved slots
     * (superuser_reserved_connections, 16's reserved_connections): the
     * server is full for roles that may not use them, and lets in those
     * that may -- the superuser come to end the exhaustion, whom an
     * open breaker would refuse.  Its other refusals (shutting down, a
     * missing database) are not 53300. */
    static const struct {
        const char *name;
        const char *sqlstate;   /* only for this one, or any when NULL */
    } routines[] = {
        { "InitializeSessionUserId", NULL },
        { "CheckMyDatabase", NULL },
        { "InitPostgres", "53300" },
    };
    static const char loc[] = "LOCATION:  ";
    const char *routine = NULL;   /* the last attempt's */
    const char *code = NULL;      /* its SQLSTATE (attempt_sqlstate's colon) */
    for (const char *line = msg; line && *line;) {
        if (strncmp(line, "connection to server ", 21) == 0) {
            code = attempt_sqlstate(line);               /* a new attempt */
            routine = NULL;
        } else if (code && !routine && strncmp(line, loc, sizeof(loc) - 1) == 0) {
            routine = line + sizeof(loc) - 1;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    for (size_t i = 0; routine && i < sizeof(routines) / sizeof(routines[0]); i++) {
        size_t n = strlen(routines[i].name);
        if (strncmp(routine, routines[i].name, n) != 0 || routine[n] != ',')
            continue;
        if (!routines[i].sqlstate || strncmp(code + 3, routines[i].sqlstate, 5) == 0)
            return true;
    }
    return false;
}

void pgw_pool_trim_error(char *buf, size_t size, const char *msg)
{
    if (!size)
        return;
    size_t o = 0;
    bool space = true;        /* drop leading blanks, collapse runs */
    const char *start = msg ? msg : "";
    const char *code = NULL;  /* this line's SQLSTATE (attempt_sqlstate) */
    for (const char *p = start; *p && o + 1 < size; p++) {
        unsigned char c = (unsigned char)*p;
        /* libpq's verbose form: the SQLSTATE (read apart) and the
         * server's source position are not for clients. */
        if (p == start || p[-1] == '\n') {
            if (strncmp(p, "LOCATION:  ", 11) == 0) {
                const char *nl = strchr(p, '\n');
                if (!nl)
                    break;
                p = nl;
                continue;
            }
            code = attempt_sqlstate(p);
        }
        if (p == code) {
            buf[o++] = ':';
            p += 8;
            space = false;
            continue;
        }
        if (isspace(c)) {
            if (!space)
                buf[o++] = ' ';
            space = true;
            continue;
        }
        buf[o++] = (char)c;
        space = false;
    }
    while (o > 0 && buf[o - 1] == ' ')
        o--;
    buf[o] = '\0';
}

/* ---- libpq's cancel copy ---- */

static bool same_addr(const struct sockaddr *a, socklen_t alen, const struct sockaddr *b,
                      socklen_t blen)
{
    if (alen < (socklen_t)sizeof(sa_family_t) || blen < (socklen_t)sizeof(sa_family_t) ||
        a->sa_family != b->sa_family)
        return false;
    switch (a->sa_family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return alen >= (socklen_t)sizeof(*x) && blen >= (socklen_t)sizeof(*y) &&
               x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return alen >= (socklen_t)sizeof(*x) && blen >= (socklen_t)sizeof(*y) &&
               x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    case AF_UNIX: {
        /* the path up to its NUL or the length given, whichever first;
         * an abstract one (a NUL first, libpq's "@name") by its length */
        size_t off = offsetof(struct sockaddr_un, sun_path);
        const struct sockaddr_un *x = (const void *)a, *y = (const void *)b;
        if (alen <= (socklen_t)off || blen <= (socklen_t)off)
            return false;
        size_t xl = (size_t)alen - off, yl = (size_t)blen - off;
        if (xl > sizeof(x->sun_path))
            xl = sizeof(x->sun_path);
        if (yl > sizeof(y->sun_path))
            yl = sizeof(y->sun_path);
        if (x->sun_path[0] == '\0' || y->sun_path[0] == '\0')
            return xl == yl && memcmp(x->sun_path, y->sun_path, xl) == 0;
        /* A path by its last component (".s.PGSQL.5432"): the kernel
         * gives the name the server bound, libpq keeps the one it was
         * given, which may reach the same socket another way ("DIR/",
         * a symlinked directory such as /var/run for /run, a relative
         * unix_socket_directories). */
        size_t xn = strnlen(x->sun_path, xl);
        size_t yn = strnlen(y->sun_path, yl);
        const char *xb = memrchr(x->sun_path, '/', xn), *yb = memrchr(y->sun_path, '/', yn);
        size_t xo = xb ? (size_t)(xb - x->sun_path) + 1 : 0;
        size_t yo = yb ? (size_t)(yb - y->sun_path) + 1 : 0;
        return xn > xo && xn - xo == yn - yo &&
               memcmp(x->sun_path + xo, y->sun_path + yo, xn - xo) == 0;
    }
    }
    return false;
}

bool pgw_pool_cancel_head_valid(const struct pgw_libpq_cancel_head *h,
                                const struct sockaddr *peer, socklen_t peerlen)
{
    socklen_t len = h->raddr.salen;
    if (h->be_pid <= 0 || len == 0 || len > (socklen_t)sizeof(h->raddr.addr) ||
        peerlen > (socklen_t)sizeof(struct sockaddr_storage))
        return false;
    return same_addr((const struct sockaddr *)&h->raddr.addr, len, peer, peerlen);
}
