/*
 * auth.c - client authentication against auth_file (PgBouncer's format):
 * trust, any, plain (cleartext), md5 and scram-sha-256, or a method per
 * connection from auth_hba_file (auth_type hba).
 *
 * As PostgreSQL does: md5 with a SCRAM secret runs SCRAM instead; plain
 * with a SCRAM secret checks the cleartext against the verifier.  An
 * unknown user goes through the same exchange and fails with the same
 * message as a wrong password.  Secrets are compared in constant time.
 *
 * Per-session state (struct pgw_auth_state) exists only while a password
 * exchange is under way: made by pgw_auth_start, freed when auth ends (or
 * by pgw_session_free when the client leaves half-way).
 */
#include "proxy/proxy_int.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "proxy/authquery.h"
#include "proxy/hba.h"
#include "proxy/scram.h"
#include "proxy/tls.h"

#define AUTH_OK             0u
#define AUTH_CLEARTEXT      3u
#define AUTH_MD5            5u
#define AUTH_SASL           10u
#define AUTH_SASL_CONTINUE  11u
#define AUTH_SASL_FINAL     12u

enum auth_method {
    AM_PLAIN,
    AM_MD5,
    AM_SCRAM
};

struct pgw_auth_state {
    enum auth_method method;
    int hba_line;                    /* the auth_hba_file rule, 0 without one */
    bool sasl_begun;                 /* SASLInitialResponse seen */
    bool scram_ready;                /* scram initialised */
    struct pgw_scram_server scram;
    /* ---- auth_query (authquery.c): a user not in auth_file ---- */
    struct pgw_aq_wait aq;           /* the lookup being waited for */
    bool aq_trust;                   /* it was for trust: only existence counts */
    bool aq_done;                    /* looked up: aq_found, aq_secret */
    bool aq_found;                   /* a row came back */
    bool aq_starting;                /* inside pgw_authquery_lookup: an answer now is synchronous */
    char *aq_secret;                 /* NULL: no row, or a NULL password */
    char *aq_key;                    /* the lookup asked for (pgw_authquery_target) */
    size_t aq_keylen;
    /* ---- peer: the client's user name being looked up (peer.c) ---- */
    struct pgw_peer_req *peer;       /* non-NULL while waiting */
    char *peer_map;                  /* the rule's map=, NULL for none */
    uid_t peer_uid;                  /* SO_PEERCRED's */
};

void pgw_auth_state_free(struct pgw_auth_state *st)
{
    if (!st)
        return;
    if (st->scram_ready)
        pgw_scram_server_deinit(&st->scram);
    pgw_authquery_cancel(&st->aq);
    pgw_peer_cancel(st->peer);
    free(st->peer_map);
    free(st->aq_key);
    if (st->aq_secret) {
        OPENSSL_cleanse(st->aq_secret, strlen(st->aq_secret));
        free(st->aq_secret);
    }
    free(st);
}

void pgw_auth_session_closing(struct pgw_session *s)
{
    struct pgw_auth_state *st = s->auth_state;
    if (st && st->peer) {
        pgw_peer_cancel(st->peer);       /* its answer, should it come, is dropped */
        st->peer = NULL;
    }
}

static void release_state(struct pgw_session *s)
{
    pgw_auth_state_free(s->auth_state);
    s->auth_state = NULL;
}

/* ---- secrets ---- */

/* MD5 (RFC 1321) of our own, as PostgreSQL carries its own
 * (src/common/md5.c): a login hashes two short strings, which OpenSSL's
 * EVP does at several times the cost (a context allocated and freed,
 * provider dispatch), and this works whatever provider OpenSSL runs. */
#define MD5_F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define MD5_G(x, y, z) (((x) & (z)) | ((y) & ~(z)))
#define MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define MD5_STEP(f, a, b, c, d, x, k, s)            \
    do {                                            \
        (a) += f((b), (c), (d)) + (x) + (uint32_t)(k); \
        (a) = ((a) << (s)) | ((a) >> (32 - (s)));   \
        (a) += (b);                                 \
    } while (0)

/* One 64-byte block, its 64 steps written out (generated from RFC 1321's
 * table: T[i] = floor(2^32 * |sin(i + 1)|)). */
static void md5_block(uint32_t h[4], const uint8_t p[64])
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
               (uint32_t)p[4 * i + 3] << 24;
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    MD5_STEP(MD5_F, a, b, c, d, m[0], 0xd76aa478, 7);
    MD5_STEP(MD5_F, d, a, b, c, m[1], 0xe8c7b756, 12);
    MD5_STEP(MD5_F, c, d, a, b, m[2], 0x242070db, 17);
    MD5_STEP(MD5_F, b, c, d, a, m[3], 0xc1bdceee, 22);
    MD5_STEP(MD5_F, a, b, c, d, m[4], 0xf57c0faf, 7);
    MD5_STEP(MD5_F, d, a, b, c, m[5], 0x4787c62a, 12);
    MD5_STEP(MD5_F, c, d, a, b, m[6], 0xa8304613, 17);
    MD5_STEP(MD5_F, b, c, d, a, m[7], 0xfd469501, 22);
    MD5_STEP(MD5_F, a, b, c, d, m[8], 0x698098d8, 7);
    MD5_STEP(MD5_F, d, a, b, c, m[9], 0x8b44f7af, 12);
    MD5_STEP(MD5_F, c, d, a, b, m[10], 0xffff5bb1, 17);
    MD5_STEP(MD5_F, b, c, d, a, m[11], 0x895cd7be, 22);
    MD5_STEP(MD5_F, a, b, c, d, m[12], 0x6b901122, 7);
    MD5_STEP(MD5_F, d, a, b, c, m[13], 0xfd987193, 12);
    MD5_STEP(MD5_F, c, d, a, b, m[14], 0xa679438e, 17);
    MD5_STEP(MD5_F, b, c, d, a, m[15], 0x49b40821, 22);
    MD5_STEP(MD5_G, a, b, c, d, m[1], 0xf61e2562, 5);
    MD5_STEP(MD5_G, d, a, b, c, m[6], 0xc040b340, 9);
    MD5_STEP(MD5_G, c, d, a, b, m[11], 0x265e5a51, 14);
    MD5_STEP(MD5_G, b, c, d, a, m[0], 0xe9b6c7aa, 20);
    MD5_STEP(MD5_G, a, b, c, d, m[5], 0xd62f105d, 5);
    MD5_STEP(MD5_G, d, a, b, c, m[10], 0x02441453, 9);
    MD5_STEP(MD5_G, c, d, a, b, m[15], 0xd8a1e681, 14);
    MD5_STEP(MD5_G, b, c, d, a, m[4], 0xe7d3fbc8, 20);
    MD5_STEP(MD5_G, a, b, c, d, m[9], 0x21e1cde6, 5);
    MD5_STEP(MD5_G, d, a, b, c, m[14], 0xc33707d6, 9);
    MD5_STEP(MD5_G, c, d, a, b, m[3], 0xf4d50d87, 14);
    MD5_STEP(MD5_G, b, c, d, a, m[8], 0x455a14ed, 20);
    MD5_STEP(MD5_G, a, b, c, d, m[13], 0xa9e3e905, 5);
    MD5_STEP(MD5_G, d, a, b, c, m[2], 0xfcefa3f8, 9);
    MD5_STEP(MD5_G, c, d, a, b, m[7], 0x676f02d9, 14);
    MD5_STEP(MD5_G, b, c, d, a, m[12], 0x8d2a4c8a, 20);
    MD5_STEP(MD5_H, a, b, c, d, m[5], 0xfffa3942, 4);
    MD5_STEP(MD5_H, d, a, b, c, m[8], 0x8771f681, 11);
    MD5_STEP(MD5_H, c, d, a, b, m[11], 0x6d9d6122, 16);
    MD5_STEP(MD5_H, b, c, d, a, m[14], 0xfde5380c, 23);
    MD5_STEP(MD5_H, a, b, c, d, m[1], 0xa4beea44, 4);
    MD5_STEP(MD5_H, d, a, b, c, m[4], 0x4bdecfa9, 11);
    MD5_STEP(MD5_H, c, d, a, b, m[7], 0xf6bb4b60, 16);
    MD5_STEP(MD5_H, b, c, d, a, m[10], 0xbebfbc70, 23);
    MD5_STEP(MD5_H, a, b, c, d, m[13], 0x289b7ec6, 4);
    MD5_STEP(MD5_H, d, a, b, c, m[0], 0xeaa127fa, 11);
    MD5_STEP(MD5_H, c, d, a, b, m[3], 0xd4ef3085, 16);
    MD5_STEP(MD5_H, b, c, d, a, m[6], 0x04881d05, 23);
    MD5_STEP(MD5_H, a, b, c, d, m[9], 0xd9d4d039, 4);
    MD5_STEP(MD5_H, d, a, b, c, m[12], 0xe6db99e5, 11);
    MD5_STEP(MD5_H, c, d, a, b, m[15], 0x1fa27cf8, 16);
    MD5_STEP(MD5_H, b, c, d, a, m[2], 0xc4ac5665, 23);
    MD5_STEP(MD5_I, a, b, c, d, m[0], 0xf4292244, 6);
    MD5_STEP(MD5_I, d, a, b, c, m[7], 0x432aff97, 10);
    MD5_STEP(MD5_I, c, d, a, b, m[14], 0xab9423a7, 15);
    MD5_STEP(MD5_I, b, c, d, a, m[5], 0xfc93a039, 21);
    MD5_STEP(MD5_I, a, b, c, d, m[12], 0x655b59c3, 6);
    MD5_STEP(MD5_I, d, a, b, c, m[3], 0x8f0ccc92, 10);
    MD5_STEP(MD5_I, c, d, a, b, m[10], 0xffeff47d, 15);
    MD5_STEP(MD5_I, b, c, d, a, m[1], 0x85845dd1, 21);
    MD5_STEP(MD5_I, a, b, c, d, m[8], 0x6fa87e4f, 6);
    MD5_STEP(MD5_I, d, a, b, c, m[15], 0xfe2ce6e0, 10);
    MD5_STEP(MD5_I, c, d, a, b, m[6], 0xa3014314, 15);
    MD5_STEP(MD5_I, b, c, d, a, m[13], 0x4e0811a1, 21);
    MD5_STEP(MD5_I, a, b, c, d, m[4], 0xf7537e82, 6);
    MD5_STEP(MD5_I, d, a, b, c, m[11], 0xbd3af235, 10);
    MD5_STEP(MD5_I, c, d, a, b, m[2], 0x2ad7d2bb, 15);
    MD5_STEP(MD5_I, b, c, d, a, m[9], 0xeb86d391, 21);
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

/* Hex MD5 of a followed by b (b may be NULL). */
static void md5_hex2(const void *a, size_t la, const void *b, size_t lb, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint32_t h[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };
    uint8_t blk[64];
    size_t n = 0;
    const uint8_t *part[2] = { a, b };
    size_t plen[2] = { la, b ? lb : 0 };
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < plen[k];) {
            size_t take = plen[k] - i < 64 - n ? plen[k] - i : 64 - n;
            memcpy(blk + n, part[k] + i, take);
            n += take;
            i += take;
            if (n == 64) {
                md5_block(h, blk);
                n = 0;
            }
        }
    }
    uint64_t bits = (uint64_t)(la + plen[1]) * 8;
    blk[n++] = 0x80;
    if (n > 56) {
        memset(blk + n, 0, 64 - n);
        md5_block(h, blk);
        n = 0;
    }
    memset(blk + n, 0, 56 - n);
    for (int i = 0; i < 8; i++)
        blk[56 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(h, blk);
    for (unsigned i = 0; i < 16; i++) {
        uint8_t byte = (uint8_t)(h[i / 4] >> (8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
    out[32] = '\0';
}

/* "md5" + md5(password + user), as pg_authid stores it, for any length. */
static void md5_of_password(const char *user, const char *password, char out[36])
{
    memcpy(out, "md5", 3);
    md5_hex2(password, strlen(password), user, strlen(user), out + 3);
}

/* The stored secret in that form: an md5 secret as it is, a plain one
 * hashed.  (Only for secrets: what a client sends is always hashed.) */
static void md5_inner(const char *user, const char *secret, char out[36])
{
    if (pgw_md5_is_secret(secret))
        memcpy(out, secret, 36);
    else
        md5_of_password(user, secret, out);
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
    md5_hex2(buf, 36, NULL, 0, expect + 3);
    expect[35] = '\0';
    return const_eq(response, expect);
}

/* A cleartext password against a SCRAM verifier costs its iterations of
 * PBKDF2 on the loop (4096 by default: about 2 ms; 100 000: about 50 ms).
 * A role may set its own verifier, pre-hashed, with up to 2^31 of them:
 * one that asks for more than this is not used. */
#define PLAIN_SCRAM_MAX_ITERATIONS 100000

static bool plain_check(const char *user, const char *secret, const char *password)
{
    if (!*password)
        return false;                /* as PostgreSQL: no empty passwords */
    if (pgw_md5_is_secret(secret)) {
        char inner[36];
        md5_of_password(user, password, inner);
        return const_eq(inner, secret);
    }
    if (pgw_scram_is_secret(secret)) {
        struct pgw_scram_secret v;
        bool ok = pgw_scram_secret_parse(secret, &v) == 0;
        char qu[200];
        if (!ok)
            pgw_warn("auth_verifier_refused", "user=%s reason=\"the SCRAM secret has a salt or "
                     "an iteration count pgwharf cannot use\"",
                     pgw_log_quote(qu, sizeof(qu), user));
        if (ok && v.iterations > PLAIN_SCRAM_MAX_ITERATIONS) {
            pgw_warn("auth_verifier_refused", "user=%s iterations=%d reason=\"a cleartext "
                     "password is checked on the loop: over %d iterations would hold every "
                     "client\"", pgw_log_quote(qu, sizeof(qu), user), v.iterations,
                     PLAIN_SCRAM_MAX_ITERATIONS);
            ok = false;
        }
        ok = ok && pgw_scram_verify_plain(&v, password);
        OPENSSL_cleanse(&v, sizeof(v));
        return ok;
    }
    return const_eq(password, secret);
}

static const char *lookup_secret(struct pgw_session *s)
{
    const char *secret = s->px->auth ? pgw_authfile_lookup(s->px->auth, s->user) : NULL;
    if (!secret && s->auth_state && s->auth_state->aq_done)
        secret = s->auth_state->aq_secret;          /* auth_query's answer */
    /* An empty secret is no password, not the empty one (PgBouncer and
     * PostgreSQL refuse those logins too): the user cannot log in with a
     * password at all. */
    return secret && *secret ? secret : NULL;
}

/* ---- auth_query: the secret of a user auth_file does not know ---- */

static void begin(struct pgw_session *s, enum auth_method method, int hba_line);
static void trust_login(struct pgw_session *s);

/* The per-session state, made on first use. */
static struct pgw_auth_state *state_get(struct pgw_session *s)
{
    if (!s->auth_state && !(s->auth_state = calloc(1, sizeof(*s->auth_state))))
        pgw_session_close(s, "53200", "out of memory");
    return s->auth_state;
}

static bool need_lookup(struct pgw_session *s)
{
    if (s->auth_state && s->auth_state->aq_done)
        return false;
    if (s->px->auth && pgw_authfile_lookup(s->px->auth, s->user))
        return false;
    return pgw_authquery_applies(s);
}

static void lookup_done(struct pgw_aq_wait *w, const struct pgw_aq_result *r)
{
    struct pgw_session *s = w->session;
    struct pgw_auth_state *st = s->auth_state;
    if (r->status == PGW_AQ_ERROR) {
        pgw_session_close(s, r->sqlstate, "%s", r->message);
        return;
    }
    st->aq_done = true;
    st->aq_found = r->status == PGW_AQ_FOUND;
    if (r->secret && !(st->aq_secret = strdup(r->secret))) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    bool async = !st->aq_starting;
    if (st->aq_trust)
        trust_login(s);
    else
        begin(s, st->method, st->hba_line);
    /* What the client sent while the lookup ran (a password sent unasked)
     * was kept: nothing reads it again unless more arrives, so take it now
     * that it has been asked for.  (Answered at once, the input loop that
     * started the lookup goes on by itself; once logged in, the welcome
     * takes what waits, a query behind the startup packet.) */
    if (async && s->state == PGW_SS_AUTH && s->cbuf && s->cbuf->sent < s->cbuf->len)
        pgw_session_on_client_input(s);
}

/* Look the user up, then carry on with begin() (or trust_login()). */
static void lookup_start(struct pgw_session *s, enum auth_method method, int hba_line, bool trust)
{
    struct pgw_auth_state *st = state_get(s);
    if (!st)
        return;
    st->method = method;
    st->hba_line = hba_line;
    st->aq_trust = trust;
    st->aq_starting = true;
    free(st->aq_key);
    st->aq_key = pgw_authquery_target(s, &st->aq_keylen);
    pgw_authquery_lookup(s, &st->aq, lookup_done);
    if (s->auth_state)               /* st, unless the answer ended the auth already */
        s->auth_state->aq_starting = false;
}

/* ---- outcomes ---- */

/* Wrong password and unknown user end alike; only the log says which. */
static void auth_fail(struct pgw_session *s, const char *why)
{
    char qd[200], qu[200], qw[200];
    int line = s->auth_state ? s->auth_state->hba_line : 0;
    pgw_warn("auth_failed", "client=%s db=%s user=%s hba_line=%d reason=%s", s->addr_text,
             pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
             line, pgw_log_quote(qw, sizeof(qw), why));
    release_state(s);
    pgw_session_close(s, "28P01", "password authentication failed for user \"%s\"", s->user);
}

/* The answer came from the lookup that applies now: a reload during the
 * login may have given the database other auth_user/auth_query/auth_dbname
 * settings, or (a database not in [databases] when the login began, looked
 * up with the general ones) added it with settings of its own that need
 * not know this user. */
static bool lookup_still_applies(struct pgw_session *s)
{
    struct pgw_auth_state *st = s->auth_state;
    size_t len = 0;
    char *now = pgw_authquery_target(s, &len);
    bool same = now && st->aq_key && len == st->aq_keylen && memcmp(now, st->aq_key, len) == 0;
    free(now);
    return same;
}

static void auth_ok(struct pgw_session *s)
{
    if (s->auth_state && s->auth_state->aq_done && !lookup_still_applies(s)) {
        auth_fail(s, "auth_query settings changed by a reload during the login");
        return;
    }
    if (s->auth_state && s->auth_state->aq_done)     /* auth_query: the server login */
        pgw_authquery_server_login(s, s->auth_state->aq_secret);
    release_state(s);
    pgw_session_login_done(s);
}

static void send_auth_request(struct pgw_session *s, uint32_t code, const void *extra, size_t n)
{
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_auth(&b, code, extra, n);
    if (!pgw_session_send(s, &b) && s->state != PGW_SS_CLOSING)
        pgw_session_close(s, "53200", "out of memory");
    pgw_wbuf_deinit(&b);
}

/* As PgBouncer: no password, but the user must be known when there is an
 * auth_file (or auth_query applies).  Being listed is enough: an empty
 * secret means no password, which trust does not ask for.  peer and cert
 * end here too once the identity is checked: the identity vouches for the
 * name, not for a user pgwharf does not have. */
static void trust_login(struct pgw_session *s)
{
    if (need_lookup(s)) {
        lookup_start(s, AM_PLAIN, 0, true);
        return;
    }
    bool looked_up = s->auth_state && s->auth_state->aq_done;
    bool known = looked_up ? s->auth_state->aq_found
                           : s->px->auth && pgw_authfile_lookup(s->px->auth, s->user) != NULL;
    if ((s->px->auth || looked_up) && !known) {
        pgw_session_close(s, "28000", "no such user: \"%s\"", s->user);
        return;
    }
    auth_ok(s);
}

/* AuthenticationSASL: the mechanism list, each name NUL-terminated, then an
 * empty one.  Over TLS, SCRAM-SHA-256-PLUS first, as PostgreSQL does. */
static void offer_mechanisms(struct pgw_session *s, struct pgw_scram_server *scram)
{
    static const char plain[] = PGW_SCRAM_MECHANISM "\0";
    static const char both[] = PGW_SCRAM_MECHANISM_PLUS "\0" PGW_SCRAM_MECHANISM "\0";
    unsigned char cbind[EVP_MAX_MD_SIZE];
    size_t n = pgw_tls_server_end_point(s, cbind, sizeof(cbind));
    if (n && pgw_scram_server_offer_plus(scram, cbind, n) == 0)
        send_auth_request(s, AUTH_SASL, both, sizeof(both));
    else
        send_auth_request(s, AUTH_SASL, plain, sizeof(plain));
}

/* Under md5, a user with no secret (unknown, or without a password) must
 * be asked what the real users are asked, or the request itself tells
 * them apart.  PostgreSQL asks such a user for its password_encryption
 * (scram-sha-256 since 14).  Here: SCRAM when auth_query looked the user
 * up (pg_authid's secrets: SCRAM verifiers by that default), or when at
 * least half the auth_file's secrets are SCRAM verifiers; md5 otherwise. */
static bool mock_with_scram(const struct pgw_session *s)
{
    const struct pgw_auth_file *af = s->px->auth;
    if (s->auth_state && s->auth_state->aq_done)
        return true;
    return af && af->nscram > 0 && 2 * af->nscram >= af->nsecret;
}

/* Ask for a password with `method`; hba_line is the rule that chose it. */
static void begin(struct pgw_session *s, enum auth_method method, int hba_line)
{
    if (need_lookup(s)) {
        lookup_start(s, method, hba_line, false);
        return;
    }
    const char *secret = lookup_secret(s);
    if (method == AM_MD5 && (secret ? pgw_scram_is_secret(secret) : mock_with_scram(s)))
        method = AM_SCRAM;           /* as PostgreSQL does */
    struct pgw_auth_state *st = state_get(s);     /* keeps auth_query's answer */
    if (!st)
        return;
    st->method = method;
    st->hba_line = hba_line;
    switch (method) {
    case AM_PLAIN:
        send_auth_request(s, AUTH_CLEARTEXT, NULL, 0);
        return;
    case AM_MD5:
        if (pgw_proxy_random(s->px, s->md5_salt, sizeof(s->md5_salt)) < 0) {
            pgw_session_close(s, "53200", "cannot make a salt");
            return;
        }
        send_auth_request(s, AUTH_MD5, s->md5_salt, sizeof(s->md5_salt));
        return;
    case AM_SCRAM:
        if (pgw_scram_server_start(&st->scram, secret, s->user, s->px->cfg->scram_iterations,
                                   s->px->scram_cache) < 0) {
            pgw_session_close(s, "53200", "out of memory");
            return;
        }
        st->scram_ready = true;
        offer_mechanisms(s, &st->scram);
        return;
    }
}

/* Log why a login without a password failed (peer, cert). */
static void identity_fail(struct pgw_session *s, const char *method, const char *who,
                          const char *map, int hba_line)
{
    char qd[200], qu[200], qw[300], qm[200];
    pgw_warn("auth_failed", "client=%s db=%s user=%s hba_line=%d method=%s identity=%s map=%s "
             "reason=\"no user name map allows it\"", s->addr_text,
             pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
             hba_line, method, pgw_log_quote(qw, sizeof(qw), who),
             pgw_log_quote(qm, sizeof(qm), map ? map : ""));
}

/* cert: the verified client certificate's CN must be the user name, or
 * map to it (map=, auth_ident_file). */
static void cert_login(struct pgw_session *s, const char *map, int hba_line)
{
    char cn[256];
    const char *why = "";
    int ident_line;
    if (!pgw_tls_peer_cn(s, cn, sizeof(cn), &why)) {
        pgw_session_close(s, "28000", "connection requires a valid client certificate: %s", why);
    } else if (!pgw_hba_usermap(s->px->hba, map, cn, s->user, &ident_line)) {
        identity_fail(s, "cert", cn, map, hba_line);
        if (map)
            pgw_session_close(s, "28000", "certificate authentication failed for user \"%s\"",
                              s->user);
        else
            pgw_session_close(s, "28000", "certificate authentication failed for user \"%s\": "
                              "the certificate is for \"%s\"", s->user, cn);
    } else {
        trust_login(s);
    }
}

/* The peer lookup's answer: the name must be the user, or map to it (with
 * the map in force now: a reload may have come meanwhile). */
static void peer_done(struct pgw_session *s, const char *name, const char *error)
{
    struct pgw_auth_state *st = s->auth_state;
    st->peer = NULL;
    if (s->state == PGW_SS_CLOSING)
        return;                          /* (pgw_auth_session_closing cancels it) */
    int ident_line;
    if (!name) {
        pgw_session_close(s, "28000", "could not look up local user ID %ld: %s",
                          (long)st->peer_uid, error);
        return;
    }
    if (!pgw_hba_usermap(s->px->hba, st->peer_map, name, s->user, &ident_line)) {
        identity_fail(s, "peer", name, st->peer_map, st->hba_line);
        pgw_session_close(s, "28000", "Peer authentication failed for user \"%s\"", s->user);
        return;
    }
    trust_login(s);
}

/* peer (unix sockets): the connecting process's operating system user must
 * be the user name, or map to it.  Its name comes from the local user
 * database (getpwuid_r, NSS: maybe LDAP or sssd, which can take long), so
 * it is looked up on a thread (peer.c); the login waits for it, under
 * client_login_timeout, in state auth. */
static void peer_login(struct pgw_session *s, const char *map, int hba_line)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    char ebuf[128];
    if (!s->unix_sock || getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        const char *why =
            s->unix_sock ? strerror_r(errno, ebuf, sizeof(ebuf)) : "not a unix socket";
        pgw_session_close(s, "28000", "could not get peer credentials: %s", why);
        return;
    }
    struct pgw_auth_state *st = state_get(s);
    if (!st)
        return;
    st->hba_line = hba_line;
    st->peer_uid = cred.uid;
    if (map && !(st->peer_map = strdup(map))) {
        pgw_session_close(s, "53200", "out of memory");
        return;
    }
    st->peer = pgw_peer_lookup(s, cred.uid, peer_done);
    if (!st->peer)
        pgw_session_close(s, "53200", "could not start the lookup of local user ID %ld",
                          (long)cred.uid);
}

/* "127.0.0.1" or "[local]", as PostgreSQL names the host in its messages. */
static const char *client_host(const struct pgw_session *s, char *buf, size_t size)
{
    const struct sockaddr *sa = (const struct sockaddr *)&s->addr;
    snprintf(buf, size, "[local]");
    if (s->unix_sock)
        return buf;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)size);
    return buf;
}

static void hba_start(struct pgw_session *s)
{
    struct pgw_proxy *px = s->px;
    char host[INET6_ADDRSTRLEN + 8];
    int line = 0;
    const char *map = NULL;
    if (!px->hba) {
        pgw_session_close(s, "28000", "auth_hba_file is not loaded");
        return;
    }
    enum pgw_hba_method m = pgw_hba_match_conn(px->hba, s->unix_sock, s->ssl != NULL,
                                               s->replication == PGW_REPL_PHYSICAL,
                                               (const struct sockaddr *)&s->addr, s->database,
                                               s->user, &line, &map);
    char qd[200], qu[200];
    pgw_debug("hba", "client=%s db=%s user=%s method=%s line=%d", s->addr_text,
              pgw_log_quote(qd, sizeof(qd), s->database), pgw_log_quote(qu, sizeof(qu), s->user),
              pgw_hba_method_name(m), line);
    switch (m) {
    case PGW_HBA_REJECT:
        client_host(s, host, sizeof(host));
        if (line > 0)
            pgw_session_close(s, "28000", "pg_hba.conf rejects connection for host \"%s\", user "
                              "\"%s\", database \"%s\", %s", host, s->user, s->database,
                              s->ssl ? "SSL encryption" : "no encryption");
        else
            pgw_session_close(s, "28000", "no pg_hba.conf entry for host \"%s\", user \"%s\", "
                              "database \"%s\", %s", host, s->user, s->database,
                              s->ssl ? "SSL encryption" : "no encryption");
        return;
    case PGW_HBA_TRUST:
        trust_login(s);
        return;
    case PGW_HBA_PASSWORD:
        begin(s, AM_PLAIN, line);
        return;
    case PGW_HBA_MD5:
        begin(s, AM_MD5, line);
        return;
    case PGW_HBA_SCRAM:
        begin(s, AM_SCRAM, line);
        return;
    case PGW_HBA_CERT:
        cert_login(s, map, line);
        return;
    case PGW_HBA_PEER:
        peer_login(s, map, line);
        return;
    }
}

/* PgBouncer's way into the console from the machine itself: the user
 * "pgbouncer" over the Unix socket, from a process of pgwharf's own Unix
 * user (who can read the config and auth_file anyway), needs no password
 * whatever auth_type says, and may run every command. */
static bool local_console_owner(const struct pgw_session *s)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    return s->is_admin && s->unix_sock && strcmp(s->user, "pgbouncer") == 0 &&
           getsockopt(s->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
           cred.uid == getuid();
}

void pgw_auth_start(struct pgw_session *s)
{
    const struct pgw_config *cfg = s->px->cfg;
    if (local_console_owner(s)) {
        s->admin_local = true;
        pgw_session_login_done(s);
        return;
    }
    switch (cfg->auth_type) {
    case PGW_AUTH_ANY:
        pgw_session_login_done(s);
        return;
    case PGW_AUTH_TRUST:
        trust_login(s);
        return;
    case PGW_AUTH_PLAIN:
        begin(s, AM_PLAIN, 0);
        return;
    case PGW_AUTH_MD5:
        begin(s, AM_MD5, 0);
        return;
    case PGW_AUTH_SCRAM:
        begin(s, AM_SCRAM, 0);
        return;
    case PGW_AUTH_HBA:
        hba_start(s);
        return;
    case PGW_AUTH_CERT:
        cert_login(s, NULL, 0);
        return;
    default:
        pgw_session_close(s, "28000", "auth_type %s is not supported yet",
                          pgw_auth_type_name(cfg->auth_type));
        return;
    }
}

/* ---- the password message ---- */

static void password_step(struct pgw_session *s, const uint8_t *body, size_t len)
{
    if (len == 0 || body[len - 1] != '\0' || memchr(body, 0, len) != body + len - 1) {
        pgw_session_close(s, "08P01", "invalid password packet");
        return;
    }
    const char *given = (const char *)body;
    const char *secret = lookup_secret(s);
    bool ok = false;
    if (s->auth_state->method == AM_PLAIN) {
        ok = secret && plain_check(s->user, secret, given);
    } else {
        /* Unknown users are checked against a throwaway secret so the
         * work and the answer are the same. */
        bool usable = secret && !pgw_scram_is_secret(secret);
        ok = pgw_auth_md5_check(s->user, usable ? secret : "\x01", s->md5_salt, given) && usable;
    }
    if (!ok) {
        auth_fail(s, secret ? "password does not match" : "no such user");
        return;
    }
    auth_ok(s);
}

/* SASLInitialResponse: mechanism\0, int32 length (-1: none), data.  Sets
 * data and dlen (data NULL when the client sent none); false when it closed. */
static bool sasl_initial(struct pgw_session *s, const uint8_t *body, size_t len,
                         const uint8_t **data, size_t *dlen)
{
    const uint8_t *nul = memchr(body, '\0', len);
    if (!nul) {
        pgw_session_close(s, "08P01", "invalid SASLInitialResponse message");
        return false;
    }
    if (pgw_scram_server_choose(&s->auth_state->scram, (const char *)body) < 0) {
        pgw_session_close(s, s->auth_state->scram.sqlstate, "%s", s->auth_state->scram.error);
        return false;
    }
    size_t rest = len - (size_t)(nul + 1 - body);
    if (rest < 4) {
        pgw_session_close(s, "08P01", "invalid SASLInitialResponse message");
        return false;
    }
    int32_t n = (int32_t)pgw_get_u32(nul + 1);
    if (n == -1 && rest == 4) {
        *data = NULL;
        *dlen = 0;
        return true;
    }
    if (n < 0 || (size_t)n != rest - 4) {
        pgw_session_close(s, "08P01", "invalid SASLInitialResponse message (length mismatch)");
        return false;
    }
    *data = nul + 5;
    *dlen = (size_t)n;
    return true;
}

static void sasl_step(struct pgw_session *s, const uint8_t *body, size_t len)
{
    struct pgw_auth_state *st = s->auth_state;
    const uint8_t *data = body;
    size_t dlen = len;
    if (!st->sasl_begun) {
        if (!sasl_initial(s, body, len, &data, &dlen))
            return;
        st->sasl_begun = true;
        if (!data) {
            /* No initial response: an empty challenge asks for it. */
            send_auth_request(s, AUTH_SASL_CONTINUE, NULL, 0);
            return;
        }
    }
    const char *out = NULL;
    size_t outlen = 0;
    bool final = st->scram.stage == PGW_SCRAM_WANT_CLIENT_FINAL;
    int rc = final ? pgw_scram_server_client_final(&st->scram, (const char *)data, dlen, &out,
                                                   &outlen)
                   : pgw_scram_server_client_first(&st->scram, (const char *)data, dlen, &out,
                                                   &outlen);
    if (rc == PGW_EAUTH) {
        auth_fail(s, st->scram.error);
        return;
    }
    if (rc < 0) {
        pgw_session_close(s, st->scram.sqlstate, "%s", st->scram.error);
        return;
    }
    send_auth_request(s, final ? AUTH_SASL_FINAL : AUTH_SASL_CONTINUE, out, outlen);
    if (final && s->state != PGW_SS_CLOSING)
        auth_ok(s);
}

bool pgw_auth_looking_up(const struct pgw_session *s)
{
    return s->auth_state && (pgw_authquery_waiting(&s->auth_state->aq) || s->auth_state->peer);
}

void pgw_auth_password(struct pgw_session *s, const uint8_t *body, size_t len)
{
    if (!s->auth_state || s->auth_state->peer) {
        pgw_session_close(s, "08P01", "unexpected password message");
        return;
    }
    if (s->auth_state->method == AM_SCRAM)
        sasl_step(s, body, len);
    else
        password_step(s, body, len);
}

const char *pgw_auth_server_password(struct pgw_proxy *px, const struct pgw_conf_db *db,
                                     const char *user)
{
    if (db && db->password)
        return db->password;
    if (db && db->user)
        user = db->user;
    const char *secret = px->auth ? pgw_authfile_lookup(px->auth, user) : NULL;
    if (secret && !pgw_md5_is_secret(secret) && !pgw_scram_is_secret(secret))
        return secret;
    return NULL;
}
