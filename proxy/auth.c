/*
 * auth.c - client authentication: trust, any, plain (cleartext) and md5
 * against auth_file (PgBouncer's format).  An unknown user goes through the
 * same exchange and fails with the same message as a wrong password.
 * Secrets are compared in constant time.
 */
#include "proxy/proxy_int.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"

#define AUTH_OK          0u
#define AUTH_CLEARTEXT   3u
#define AUTH_MD5         5u

static void md5_hex(const void *data, size_t len, char out[33])
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    EVP_Digest(data, len, d, &dl, EVP_md5(), NULL);
    for (unsigned i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static bool is_md5_secret(const char *secret)
{
    return strlen(secret) == 35 && strncmp(secret, "md5", 3) == 0;
}

static bool is_scram_secret(const char *secret)
{
    return strncmp(secret, "SCRAM-SHA-256$", 14) == 0;
}

/* "md5" + md5(password + user), as pg_authid stores it. */
static void md5_inner(const char *user, const char *secret, char out[36])
{
    if (is_md5_secret(secret)) {
        memcpy(out, secret, 36);
        return;
    }
    char buf[1024];
    int n = snprintf(buf, sizeof(buf), "%s%s", secret, user);
    memcpy(out, "md5", 3);
    md5_hex(buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0, out + 3);
    out[35] = '\0';
}

static bool const_eq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* Compare the full length of the expected value whatever the input. */
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)(b[i] ^ (i < la ? a[i] : 0));
    return diff == 0;
}

bool pgw_auth_md5_check(const char *user, const char *secret, const uint8_t salt[4],
                        const char *response)
{
    char inner[36], buf[40], expect[36];
    md5_inner(user, secret, inner);
    memcpy(buf, inner + 3, 32);
    memcpy(buf + 32, salt, 4);
    memcpy(expect, "md5", 3);
    md5_hex(buf, 36, expect + 3);
    expect[35] = '\0';
    return const_eq(response, expect);
}

static bool plain_check(const char *user, const char *secret, const char *password)
{
    if (is_md5_secret(secret)) {
        char inner[36];
        md5_inner(user, password, inner);
        return const_eq(inner, secret);
    }
    if (is_scram_secret(secret))
        return false;   /* needs the SCRAM exchange */
    return const_eq(password, secret);
}

static const char *lookup_secret(struct pgw_session *s)
{
    return s->px->auth ? pgw_authfile_lookup(s->px->auth, s->user) : NULL;
}

static void auth_fail(struct pgw_session *s)
{
    pgw_warn("auth_failed", "client=%s db=%s user=%s", s->addr_text, s->database, s->user);
    pgw_session_close(s, "28P01", "password authentication failed for user \"%s\"", s->user);
}

static void send_auth_request(struct pgw_session *s, uint32_t code, const void *extra, size_t n)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_auth(&b, code, extra, n);
    pgw_session_send(s, &b);
    pgw_wbuf_deinit(&b);
}

void pgw_auth_start(struct pgw_session *s)
{
    const struct pgw_config *cfg = s->px->cfg;
    switch (cfg->auth_type) {
    case PGW_AUTH_ANY:
        pgw_session_login_done(s);
        return;
    case PGW_AUTH_TRUST:
        /* As PgBouncer: no password, but the user must be known when there
         * is an auth_file. */
        if (s->px->auth && !lookup_secret(s)) {
            pgw_session_close(s, "28000", "no such user: \"%s\"", s->user);
            return;
        }
        pgw_session_login_done(s);
        return;
    case PGW_AUTH_PLAIN:
        send_auth_request(s, AUTH_CLEARTEXT, NULL, 0);
        return;
    case PGW_AUTH_MD5:
        if (getrandom(s->md5_salt, sizeof(s->md5_salt), 0) != sizeof(s->md5_salt)) {
            pgw_session_close(s, "53200", "cannot make a salt");
            return;
        }
        send_auth_request(s, AUTH_MD5, s->md5_salt, sizeof(s->md5_salt));
        return;
    default:
        pgw_session_close(s, "28000", "auth_type %s is not supported yet",
                          pgw_auth_type_name(cfg->auth_type));
        return;
    }
}

void pgw_auth_password(struct pgw_session *s, const uint8_t *body, size_t len)
{
    if (len == 0 || body[len - 1] != '\0' || memchr(body, 0, len) != body + len - 1) {
        pgw_session_close(s, "08P01", "invalid password packet");
        return;
    }
    const char *given = (const char *)body;
    const char *secret = lookup_secret(s);
    bool ok = false;
    switch (s->px->cfg->auth_type) {
    case PGW_AUTH_PLAIN:
        ok = secret && plain_check(s->user, secret, given);
        break;
    case PGW_AUTH_MD5:
        /* Unknown users are checked against a throwaway secret so the
         * work and the answer are the same. */
        ok = pgw_auth_md5_check(s->user, secret && !is_scram_secret(secret) ? secret : "\x01",
                                s->md5_salt, given) && secret && !is_scram_secret(secret);
        break;
    default:
        break;
    }
    if (!ok) {
        auth_fail(s);
        return;
    }
    pgw_session_login_done(s);
}

const char *pgw_auth_server_password(struct pgw_proxy *px, const struct pgw_conf_db *db,
                                     const char *user)
{
    if (db && db->password)
        return db->password;
    if (db && db->user)
        user = db->user;
    const char *secret = px->auth ? pgw_authfile_lookup(px->auth, user) : NULL;
    if (secret && !is_md5_secret(secret) && !is_scram_secret(secret))
        return secret;
    return NULL;
}
