/*
 * scram.c - SCRAM-SHA-256 for client authentication (see scram.h): base64,
 * the key derivations, SASLprep, PostgreSQL's verifier format, and the
 * server's two-step state machine.  Owns nothing beyond the strings a
 * struct pgw_scram_server holds and the per-loop cache (made verifiers and
 * the key user salts come from).  The one static: a process key for the
 * salts of exchanges run without a cache.
 */
#include "proxy/scram.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define SCRAM_PREFIX "SCRAM-SHA-256$"

/* ---- base64 (RFC 4648, with padding; strict on input) ---- */

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_enc_len(size_t n) { return (n + 2) / 3 * 4; }

/* Encode n bytes into out (b64_enc_len(n) + 1 bytes); returns the length. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64_chars[(v >> 18) & 63];
        out[o++] = b64_chars[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_chars[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decode exactly n characters into out (room for `cap` bytes; out NULL:
 * only check and count).  Returns the decoded length, or -1 when the text
 * is not base64 or does not fit. */
static long b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad > 0 || (v[k] = b64_value(c)) < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        size_t take = 3 - (size_t)pad;
        if (o + take > cap)
            return -1;
        if (!out) {                  /* only checked and counted */
            o += take;
            continue;
        }
        out[o++] = (uint8_t)(w >> 16);
        if (take > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (take > 2)
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ---- the hashes ---- */

static bool hmac256(const uint8_t *key, size_t keylen, const void *data, size_t n,
                    uint8_t out[PGW_SCRAM_KEY_LEN])
{
    unsigned int len = 0;
    return HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len) != NULL &&
           len == PGW_SCRAM_KEY_LEN;
}

static bool sha256(const uint8_t *data, size_t n, uint8_t out[PGW_SCRAM_KEY_LEN])
{
    unsigned int len = 0;
    return EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) == 1 && len == PGW_SCRAM_KEY_LEN;
}

/* SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations). */
static bool salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                            int iterations, uint8_t out[PGW_SCRAM_KEY_LEN])
{
    return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
                             iterations, EVP_sha256(), PGW_SCRAM_KEY_LEN, out) == 1;
}

/* ---- verifiers ---- */

static bool scram_prefixed(const char *text)
{
    return text && strncmp(text, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0;
}

bool pgw_scram_is_secret(const char *text)
{
    struct pgw_scram_secret v;
    int rc = pgw_scram_secret_parse(text, &v);
    return rc == 0 || rc == PGW_EUNSUPPORTED;
}

bool pgw_md5_is_secret(const char *text)
{
    return text && strlen(text) == 35 && strncmp(text, "md5", 3) == 0 &&
           strspn(text + 3, "0123456789abcdef") == 32;
}

/* Decode the base64 field [p, end) into out; true when it is exactly
 * `want` bytes (or, with want 0, 1..cap bytes, length in *got). */
static bool field_b64(const char *p, const char *end, uint8_t *out, size_t cap, size_t want,
                      size_t *got)
{
    long n = b64_decode(p, (size_t)(end - p), out, cap);
    if (n <= 0 || (want && (size_t)n != want))
        return false;
    if (got)
        *got = (size_t)n;
    return true;
}

/* The iteration count [p, end) as strtol reads it for PostgreSQL's
 * parse_scram_secret (leading blanks, a sign, leading zeros; nothing
 * after): false when that is not a number or beyond a long, else *out. */
static bool iterations_text(const char *p, const char *end, long long *out)
{
    while (p < end && (*p == ' ' || (*p >= '\t' && *p <= '\r')))
        p++;
    bool neg = p < end && *p == '-';
    if (p < end && (*p == '-' || *p == '+'))
        p++;
    if (p == end)
        return false;
    long long v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (v > LONG_MAX / 10 || (v == LONG_MAX / 10 && *p - '0' > LONG_MAX % 10))
            return false;                   /* ERANGE: not a verifier either */
        v = v * 10 + (*p - '0');
    }
    *out = neg ? -v : v;
    return true;
}

int pgw_scram_secret_parse(const char *text, struct pgw_scram_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (!scram_prefixed(text))
        return PGW_EINVAL;
    const char *p = text + strlen(SCRAM_PREFIX);
    const char *colon = strchr(p, ':');
    const char *dollar = colon ? strchr(colon + 1, '$') : NULL;
    const char *colon2 = dollar ? strchr(dollar + 1, ':') : NULL;
    long long iter = 0;
    if (!colon2 || dollar == colon + 1 || !iterations_text(p, colon, &iter))
        return PGW_EINVAL;
    /* The salt: any base64, of any length, for PostgreSQL. */
    long salt_len = b64_decode(colon + 1, (size_t)(dollar - colon - 1), NULL, SIZE_MAX);
    if (salt_len < 0 ||
        !field_b64(dollar + 1, colon2, out->stored_key, PGW_SCRAM_KEY_LEN, PGW_SCRAM_KEY_LEN,
                   NULL) ||
        !field_b64(colon2 + 1, colon2 + 1 + strlen(colon2 + 1), out->server_key,
                   PGW_SCRAM_KEY_LEN, PGW_SCRAM_KEY_LEN, NULL)) {
        memset(out, 0, sizeof(*out));
        return PGW_EINVAL;
    }
    if (iter < 1 || iter > INT_MAX || salt_len == 0 || salt_len > PGW_SCRAM_MAX_SALT_LEN) {
        memset(out, 0, sizeof(*out));
        return PGW_EUNSUPPORTED;
    }
    out->iterations = (int)iter;
    out->salt_len = (size_t)b64_decode(colon + 1, (size_t)(dollar - colon - 1), out->salt,
                                       sizeof(out->salt));
    return 0;
}

/* The password PostgreSQL would hash: SASLprepped, or raw when prep fails.
 * *to_free is set when a new string was made. */
static const char *prepared(const char *password, char **to_free)
{
    *to_free = NULL;
    if (pgw_saslprep(password, to_free) == PGW_SASLPREP_OK)
        return *to_free;
    return password;
}

int pgw_scram_secret_make(const char *password, const uint8_t *salt, size_t salt_len,
                          int iterations, struct pgw_scram_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (salt && (salt_len == 0 || salt_len > PGW_SCRAM_MAX_SALT_LEN))
        return PGW_EINVAL;
    if (salt) {
        memcpy(out->salt, salt, salt_len);
        out->salt_len = salt_len;
    } else {
        out->salt_len = PGW_SCRAM_SALT_LEN;
        if (RAND_bytes(out->salt, PGW_SCRAM_SALT_LEN) != 1)
            return PGW_ENOMEM;
    }
    out->iterations = iterations > 0 ? iterations : PGW_SCRAM_ITERATIONS;
    char *prep;
    const char *pw = prepared(password, &prep);
    uint8_t salted[PGW_SCRAM_KEY_LEN], client_key[PGW_SCRAM_KEY_LEN];
    bool ok = salted_password(pw, out->salt, out->salt_len, out->iterations, salted) &&
              hmac256(salted, sizeof(salted), "Client Key", 10, client_key) &&
              sha256(client_key, sizeof(client_key), out->stored_key) &&
              hmac256(salted, sizeof(salted), "Server Key", 10, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (prep) {
        OPENSSL_cleanse(prep, strlen(prep));
        free(prep);
    }
    return ok ? 0 : PGW_ENOMEM;
}

int pgw_scram_secret_format(const struct pgw_scram_secret *s, char *buf, size_t size)
{
    char salt[b64_enc_len(PGW_SCRAM_MAX_SALT_LEN) + 1];
    char stored[b64_enc_len(PGW_SCRAM_KEY_LEN) + 1], server[b64_enc_len(PGW_SCRAM_KEY_LEN) + 1];
    if (s->salt_len > PGW_SCRAM_MAX_SALT_LEN)
        return PGW_EINVAL;
    b64_encode(s->salt, s->salt_len, salt);
    b64_encode(s->stored_key, PGW_SCRAM_KEY_LEN, stored);
    b64_encode(s->server_key, PGW_SCRAM_KEY_LEN, server);
    int n = snprintf(buf, size, SCRAM_PREFIX "%d:%s$%s:%s", s->iterations, salt, stored, server);
    return n >= 0 && (size_t)n < size ? n : PGW_EINVAL;
}

bool pgw_scram_verify_plain(const struct pgw_scram_secret *s, const char *password)
{
    char *prep;
    const char *pw = prepared(password, &prep);
    uint8_t salted[PGW_SCRAM_KEY_LEN], server_key[PGW_SCRAM_KEY_LEN];
    bool ok = salted_password(pw, s->salt, s->salt_len, s->iterations, salted) &&
              hmac256(salted, sizeof(salted), "Server Key", 10, server_key) &&
              CRYPTO_memcmp(server_key, s->server_key, PGW_SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(salted, sizeof(salted));
    if (prep) {
        OPENSSL_cleanse(prep, strlen(prep));
        free(prep);
    }
    return ok;
}

/* ---- salts for users without a usable verifier ---- */

#define SALT_KEY_MIN 16          /* bytes a scram_salt_key_file must hold */
#define SALT_KEY_MAX 4096

int pgw_scram_salt_key_load(const char *path, uint8_t key[PGW_SCRAM_KEY_LEN], char *err,
                            size_t errlen)
{
    uint8_t buf[SALT_KEY_MAX + 1];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open it: %s", strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, sizeof(buf), f);
    bool bad = ferror(f);
    fclose(f);
    int rc = -1;
    if (bad)
        snprintf(err, errlen, "cannot read it");
    else if (n < SALT_KEY_MIN)
        snprintf(err, errlen, "it holds %zu bytes, at least %d are needed "
                 "(head -c 32 /dev/urandom makes one)", n, SALT_KEY_MIN);
    else if (n > SALT_KEY_MAX)
        snprintf(err, errlen, "it holds more than %d bytes", SALT_KEY_MAX);
    else if (!hmac256(buf, n, "pgwharf scram salt", 18, key))
        snprintf(err, errlen, "out of memory");
    else
        rc = 0;
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

/* A salt that depends only on the user name and the cache's key: the same
 * answer every time (and in every process given the same key), so probing
 * cannot tell a mock from a real user.  No cache: a random key of the
 * process's (never a known one: anyone could compute the salts). */
static void user_salt(const struct pgw_scram_cache *c, const char *username,
                      uint8_t out[PGW_SCRAM_SALT_LEN]);

/* ---- the server ---- */

/* ---- made verifiers, cached ---- */

#define SCRAM_CACHE_SLOTS 256

struct scram_cache_slot {
    bool used;
    uint64_t last;                    /* c->tick at its last use */
    uint8_t key[PGW_SCRAM_KEY_LEN];
    struct pgw_scram_secret secret;
};

/* The last SCRAM_CACHE_SLOTS users' verifiers, the least recently used
 * going first (a slot per hash value let two users push each other out at
 * every login: PBKDF2 on the loop each time).  A login looks through all
 * of them: 256 compares of 32 bytes, next to a PBKDF2 of thousands of
 * HMACs. */
struct pgw_scram_cache {
    struct scram_cache_slot slot[SCRAM_CACHE_SLOTS];
    uint64_t tick;
    unsigned long hits, misses;
    uint8_t salt_key[PGW_SCRAM_KEY_LEN];
    bool keyed;                       /* salt_key from scram_salt_key_file */
};

static uint8_t process_key[PGW_SCRAM_KEY_LEN];
static pthread_once_t process_key_once = PTHREAD_ONCE_INIT;

static void process_key_init(void)
{
    if (RAND_bytes(process_key, sizeof(process_key)) != 1)
        memset(process_key, 0x5a, sizeof(process_key));   /* still stable per user */
}

static void user_salt(const struct pgw_scram_cache *c, const char *username,
                      uint8_t out[PGW_SCRAM_SALT_LEN])
{
    uint8_t h[PGW_SCRAM_KEY_LEN];
    if (!c)
        pthread_once(&process_key_once, process_key_init);
    if (!hmac256(c ? c->salt_key : process_key, PGW_SCRAM_KEY_LEN, username, strlen(username), h))
        memset(h, 0, sizeof(h));
    memcpy(out, h, PGW_SCRAM_SALT_LEN);
}

struct pgw_scram_cache *pgw_scram_cache_new(void)
{
    struct pgw_scram_cache *c = calloc(1, sizeof(struct pgw_scram_cache));
    if (c && RAND_bytes(c->salt_key, sizeof(c->salt_key)) != 1) {
        free(c);
        return NULL;
    }
    return c;
}

void pgw_scram_cache_salt_key(struct pgw_scram_cache *c, const uint8_t *key)
{
    uint8_t fresh[PGW_SCRAM_KEY_LEN];
    if (!c)
        return;
    if (!key) {
        if (!c->keyed)
            return;                   /* keep this process's own key */
        if (RAND_bytes(fresh, sizeof(fresh)) != 1)
            return;                   /* keep the file's: still stable */
        key = fresh;
    }
    c->keyed = key != fresh;
    if (CRYPTO_memcmp(c->salt_key, key, sizeof(c->salt_key)) != 0) {
        memcpy(c->salt_key, key, sizeof(c->salt_key));
        pgw_scram_cache_clear(c);     /* the verifiers made hold the old salts */
    }
    OPENSSL_cleanse(fresh, sizeof(fresh));
}

void pgw_scram_cache_clear(struct pgw_scram_cache *c)
{
    if (c)
        OPENSSL_cleanse(c->slot, sizeof(c->slot));
}

void pgw_scram_cache_free(struct pgw_scram_cache *c)
{
    if (c)
        OPENSSL_cleanse(c, sizeof(*c));
    free(c);
}

void pgw_scram_cache_counts(const struct pgw_scram_cache *c, unsigned long *hits,
                            unsigned long *misses)
{
    *hits = c ? c->hits : 0;
    *misses = c ? c->misses : 0;
}

/* The cache key: HMAC keyed by the password over the iterations and the
 * user name (the password itself is never kept). */
static bool cache_key(const char *password, const char *username, int iterations,
                      uint8_t out[PGW_SCRAM_KEY_LEN])
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "%d:%s", iterations, username);
    return n > 0 && (size_t)n < sizeof(buf) &&
           hmac256((const uint8_t *)password, strlen(password), buf, (size_t)n, out);
}

/* pgw_scram_secret_make for a plaintext secret, through the cache. */
static int made_secret(const char *password, const char *username, const uint8_t *salt,
                       int iterations, struct pgw_scram_cache *c, struct pgw_scram_secret *out)
{
    uint8_t key[PGW_SCRAM_KEY_LEN];
    struct scram_cache_slot *sl = NULL;
    if (c && cache_key(password, username, iterations, key)) {
        sl = &c->slot[0];
        for (int i = 0; i < SCRAM_CACHE_SLOTS; i++) {
            struct scram_cache_slot *e = &c->slot[i];
            if (e->used && CRYPTO_memcmp(e->key, key, sizeof(key)) == 0) {
                c->hits++;
                e->last = ++c->tick;
                *out = e->secret;
                OPENSSL_cleanse(key, sizeof(key));
                return 0;
            }
            if (sl->used && (!e->used || e->last < sl->last))
                sl = e;                   /* a free one, else the least recent */
        }
        c->misses++;
    }
    int rc = pgw_scram_secret_make(password, salt, PGW_SCRAM_SALT_LEN, iterations, out);
    if (rc == 0 && sl) {
        sl->used = true;
        sl->last = ++c->tick;
        memcpy(sl->key, key, sizeof(key));
        sl->secret = *out;
    }
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int pgw_scram_server_init(struct pgw_scram_server *st, const char *secret, const char *username)
{
    return pgw_scram_server_start(st, secret, username, 0, NULL);
}

int pgw_scram_server_start(struct pgw_scram_server *st, const char *secret, const char *username,
                           int iterations, struct pgw_scram_cache *cache)
{
    memset(st, 0, sizeof(*st));
    st->stage = PGW_SCRAM_WANT_CLIENT_FIRST;
    st->sqlstate = "08P01";
    if (!username)
        username = "";
    uint8_t salt[PGW_SCRAM_SALT_LEN];
    user_salt(cache, username, salt);
    int rc = 0;
    if (!secret) {
        st->doomed = true;
        snprintf(st->error, sizeof(st->error), "no such user");
    } else if ((rc = pgw_scram_secret_parse(secret, &st->secret)) == 0) {
        /* a verifier (one that does not parse is a plaintext password,
         * as PostgreSQL reads it) */
    } else if (rc == PGW_EUNSUPPORTED) {
        st->doomed = true;
        snprintf(st->error, sizeof(st->error), "the user's SCRAM secret has a salt or an "
                 "iteration count pgwharf cannot use");
    } else if (pgw_md5_is_secret(secret)) {
        st->doomed = true;
        snprintf(st->error, sizeof(st->error), "the user's secret is an md5 hash, "
                 "which SCRAM cannot use");
    } else {
        /* Plaintext: the salt is the per-user one, so the server-first
         * message is the same on every try, as for a stored verifier. */
        rc = made_secret(secret, username, salt, iterations, cache, &st->secret);
        if (rc < 0)
            return rc;
    }
    if (st->doomed) {
        memset(&st->secret, 0, sizeof(st->secret));
        memcpy(st->secret.salt, salt, sizeof(salt));
        st->secret.salt_len = sizeof(salt);
        st->secret.iterations = iterations > 0 ? iterations : PGW_SCRAM_ITERATIONS;
    }
    return 0;
}

void pgw_scram_server_deinit(struct pgw_scram_server *st)
{
    if (!st)
        return;
    free(st->client_nonce);
    free(st->client_first_bare);
    free(st->server_first);
    OPENSSL_cleanse(st, sizeof(*st));
}

struct pgw_scram_server *pgw_scram_server_create(const char *secret, const char *username)
{
    struct pgw_scram_server *st = malloc(sizeof(*st));
    if (st && pgw_scram_server_init(st, secret, username) < 0) {
        free(st);
        st = NULL;
    }
    return st;
}

void pgw_scram_server_destroy(struct pgw_scram_server *st)
{
    if (!st)
        return;
    pgw_scram_server_deinit(st);
    free(st);
}

static bool is_printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7E || *s == ',')
            return false;
    return true;
}

int pgw_scram_server_set_nonce(struct pgw_scram_server *st, const char *nonce)
{
    if (st->stage != PGW_SCRAM_WANT_CLIENT_FIRST || !*nonce || !is_printable(nonce) ||
        strlen(nonce) >= sizeof(st->server_nonce))
        return PGW_EINVAL;
    strcpy(st->server_nonce, nonce);
    return 0;
}

static int fail(struct pgw_scram_server *st, int rc, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct pgw_scram_server *st, int rc, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->error, sizeof(st->error), fmt, ap);
    va_end(ap);
    st->sqlstate = sqlstate;
    st->stage = PGW_SCRAM_FAILED;
    return rc;
}

#define MALFORMED(st, ...) fail(st, PGW_EPROTO, "08P01", "malformed SCRAM message: " __VA_ARGS__)

/* A client byte fit for a log line. */
static const char *show_char(char c, char buf[8])
{
    if (c >= 0x21 && c <= 0x7E)
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "0x%02x", (unsigned char)c);
    return buf;
}

/* Check a client message and copy it as a C string. */
static int take_message(struct pgw_scram_server *st, enum pgw_scram_stage want, const char *msg,
                        size_t len, char **copy)
{
    *copy = NULL;
    if (st->stage != want)
        return fail(st, PGW_EPROTO, "08P01", "unexpected SCRAM message");
    if (len == 0)
        return MALFORMED(st, "empty message");
    if (memchr(msg, '\0', len))
        return MALFORMED(st, "length mismatch");
    if (len > PGW_SCRAM_MAX_MSG)
        return MALFORMED(st, "message too long");
    if (!(*copy = strndup(msg, len)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    return 0;
}

/* Read `attr=value` at *p (value up to the next ',', which is cut);
 * attr 0 accepts any letter and stores it in *got. */
static char *read_attr(char **p, char attr, char *got)
{
    char *s = *p;
    bool letter = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z');
    if (!letter || (attr && *s != attr) || s[1] != '=')
        return NULL;
    if (got)
        *got = *s;
    char *v = s + 2, *comma = strchr(v, ',');
    if (comma) {
        *comma = '\0';
        *p = comma + 1;
    } else {
        *p = v + strlen(v);
    }
    return v;
}

int pgw_scram_server_offer_plus(struct pgw_scram_server *st, const uint8_t *data, size_t len)
{
    if (len == 0 || len > sizeof(st->cbind))
        return PGW_EINVAL;
    memcpy(st->cbind, data, len);
    st->cbind_len = len;
    return 0;
}

int pgw_scram_server_choose(struct pgw_scram_server *st, const char *mechanism)
{
    if (strcmp(mechanism, PGW_SCRAM_MECHANISM) == 0) {
        st->plus = false;
        return 0;
    }
    if (st->cbind_len && strcmp(mechanism, PGW_SCRAM_MECHANISM_PLUS) == 0) {
        st->plus = true;
        return 0;
    }
    return fail(st, PGW_EPROTO, "08P01",
                "client selected an invalid SASL authentication mechanism");
}

#define CB_TYPE "tls-server-end-point"

static int parse_client_first(struct pgw_scram_server *st, char *msg)
{
    char *p = msg, cb[8];
    switch (*p) {
    case 'n':
    case 'y':
        if (st->plus)
            return fail(st, PGW_EPROTO, "08P01",
                        "malformed SCRAM message: the client selected SCRAM-SHA-256-PLUS, but "
                        "the SCRAM message does not include channel binding data");
        if (*p == 'y' && st->cbind_len)      /* 28000, as PostgreSQL */
            return fail(st, PGW_EPROTO, "28000",
                        "SCRAM channel binding negotiation error: the client supports SCRAM "
                        "channel binding but thinks the server does not; this server does "
                        "support channel binding");
        p++;
        break;
    case 'p':
        if (!st->plus)
            return fail(st, PGW_EPROTO, "08P01",
                        "malformed SCRAM message: the client selected SCRAM-SHA-256 without "
                        "channel binding, but the SCRAM message includes channel binding data");
        if (strncmp(p, "p=" CB_TYPE ",", sizeof(CB_TYPE) + 2) != 0)
            return fail(st, PGW_EPROTO, "08P01", "unsupported SCRAM channel-binding type");
        p += sizeof(CB_TYPE) + 1;            /* at the ',' after the type */
        break;
    default:
        return MALFORMED(st, "unexpected channel-binding flag %s", show_char(*p, cb));
    }
    if (*p != ',')
        return MALFORMED(st, "comma expected after the channel-binding flag, found %s",
                         show_char(*p, cb));
    p++;
    if (*p == 'a')
        return fail(st, PGW_EPROTO, "0A000",
                    "client uses authorization identity, but it is not supported");
    if (*p != ',')
        return MALFORMED(st, "unexpected attribute %s in client-first-message", show_char(*p, cb));
    p++;
    memcpy(st->gs2_header, msg, (size_t)(p - msg));    /* at most "p=" CB_TYPE ",," */
    st->gs2_header[p - msg] = '\0';
    if (!(st->client_first_bare = strdup(p)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    if (*p == 'm')
        return fail(st, PGW_EPROTO, "0A000", "client requires an unsupported SCRAM extension");
    if (!read_attr(&p, 'n', NULL))
        return MALFORMED(st, "expected attribute 'n' in client-first-message");
    char *nonce = read_attr(&p, 'r', NULL);
    if (!nonce)
        return MALFORMED(st, "expected attribute 'r' in client-first-message");
    /* An empty one too, as PostgreSQL (is_scram_printable of ""): RFC
     * 5802 wants one character at least, but the server's half of the
     * nonce is what makes the exchange fresh, and a client PostgreSQL
     * lets in must not be refused here as a non-printable nonce. */
    if (!is_printable(nonce))
        return fail(st, PGW_EPROTO, "08P01", "non-printable characters in SCRAM nonce");
    while (*p)
        if (!read_attr(&p, 0, NULL))
            return MALFORMED(st, "attribute expected in client-first-message");
    if (!(st->client_nonce = strdup(nonce)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    return 0;
}

int pgw_scram_server_client_first(struct pgw_scram_server *st, const char *msg, size_t len,
                                  const char **out, size_t *outlen)
{
    char *copy;
    int rc = take_message(st, PGW_SCRAM_WANT_CLIENT_FIRST, msg, len, &copy);
    if (rc == 0)
        rc = parse_client_first(st, copy);
    free(copy);
    if (rc < 0)
        return rc;
    if (!st->server_nonce[0]) {
        uint8_t raw[PGW_SCRAM_NONCE_RAW_LEN];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return fail(st, PGW_ENOMEM, "53200", "could not generate a SCRAM nonce");
        b64_encode(raw, sizeof(raw), st->server_nonce);
    }
    char salt[b64_enc_len(PGW_SCRAM_MAX_SALT_LEN) + 1];
    b64_encode(st->secret.salt, st->secret.salt_len, salt);
    size_t n = strlen(st->client_nonce) + strlen(st->server_nonce) + strlen(salt) + 32;
    if (!(st->server_first = malloc(n)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    snprintf(st->server_first, n, "r=%s%s,s=%s,i=%d", st->client_nonce, st->server_nonce, salt,
             st->secret.iterations);
    st->stage = PGW_SCRAM_WANT_CLIENT_FINAL;
    *out = st->server_first;
    *outlen = strlen(st->server_first);
    return 0;
}

/* The combined nonce the client must echo, compared without early exit. */
static bool nonce_matches(const struct pgw_scram_server *st, const char *given)
{
    size_t cl = strlen(st->client_nonce), sl = strlen(st->server_nonce);
    if (strlen(given) != cl + sl)
        return false;
    return CRYPTO_memcmp(given, st->client_nonce, cl) == 0 &&
           CRYPTO_memcmp(given + cl, st->server_nonce, sl) == 0;
}

/* Parse client-final; on success *without_proof_len is the length of the
 * part the AuthMessage uses and proof holds the decoded ClientProof. */
static int parse_client_final(struct pgw_scram_server *st, char *msg,
                              size_t *without_proof_len, uint8_t proof[PGW_SCRAM_KEY_LEN])
{
    char *p = msg;
    char *cbind = read_attr(&p, 'c', NULL);
    if (!cbind)
        return MALFORMED(st, "expected attribute 'c' in client-final-message");
    /* c= is the gs2 header and, with PLUS, the binding data: a client
     * that bound another TLS connection (a relay's) sends other data. */
    uint8_t cbuf[sizeof(st->gs2_header) + PGW_SCRAM_CBIND_MAX], want[sizeof(cbuf)];
    size_t hl = strlen(st->gs2_header), wl = hl + (st->plus ? st->cbind_len : 0);
    memcpy(want, st->gs2_header, hl);
    if (st->plus)
        memcpy(want + hl, st->cbind, st->cbind_len);
    long cn = b64_decode(cbind, strlen(cbind), cbuf, sizeof(cbuf));
    if (cn != (long)wl || CRYPTO_memcmp(cbuf, want, wl) != 0)      /* PostgreSQL: 28000 with PLUS */
        return fail(st, PGW_EPROTO, st->plus ? "28000" : "08P01",
                    "SCRAM channel binding check failed (c= does not "
                    "match %s)", st->plus ? "this TLS connection's tls-server-end-point data"
                                          : "the gs2 header");
    char *nonce = read_attr(&p, 'r', NULL);
    if (!nonce)
        return MALFORMED(st, "expected attribute 'r' in client-final-message");
    if (!nonce_matches(st, nonce))
        return fail(st, PGW_EPROTO, "08P01", "invalid SCRAM response (nonce mismatch)");
    char attr = 0, *value, *start;
    do {
        start = p;
        if (!*p)
            return MALFORMED(st, "could not find proof in client-final-message");
        if (!(value = read_attr(&p, 0, &attr)))
            return MALFORMED(st, "attribute expected in client-final-message");
    } while (attr != 'p');
    if (*p)
        return MALFORMED(st, "garbage at the end of client-final-message");
    if (b64_decode(value, strlen(value), proof, PGW_SCRAM_KEY_LEN) != PGW_SCRAM_KEY_LEN)
        return MALFORMED(st, "invalid ClientProof");
    *without_proof_len = (size_t)(start - msg) - 1;   /* without the ',' before p= */
    return 0;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
static char *auth_message(const struct pgw_scram_server *st, const char *final, size_t final_len,
                          size_t *len)
{
    size_t a = strlen(st->client_first_bare), b = strlen(st->server_first);
    char *m = malloc(a + b + final_len + 3);
    if (!m)
        return NULL;
    memcpy(m, st->client_first_bare, a);
    m[a] = ',';
    memcpy(m + a + 1, st->server_first, b);
    m[a + 1 + b] = ',';
    memcpy(m + a + b + 2, final, final_len);
    *len = a + b + 2 + final_len;
    m[*len] = '\0';
    return m;
}

int pgw_scram_server_client_final(struct pgw_scram_server *st, const char *msg, size_t len,
                                  const char **out, size_t *outlen)
{
    char *copy;
    size_t wplen = 0;
    uint8_t proof[PGW_SCRAM_KEY_LEN];
    int rc = take_message(st, PGW_SCRAM_WANT_CLIENT_FINAL, msg, len, &copy);
    if (rc == 0)
        rc = parse_client_final(st, copy, &wplen, proof);
    free(copy);
    if (rc < 0)
        return rc;
    size_t alen = 0;
    char *am = auth_message(st, msg, wplen, &alen);
    if (!am)
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    /* The proof is checked even in a mock exchange, so both take as long. */
    uint8_t sig[PGW_SCRAM_KEY_LEN], client_key[PGW_SCRAM_KEY_LEN], stored[PGW_SCRAM_KEY_LEN];
    bool ok = hmac256(st->secret.stored_key, PGW_SCRAM_KEY_LEN, am, alen, sig);
    for (int i = 0; i < PGW_SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    ok = ok && sha256(client_key, sizeof(client_key), stored) &&
         CRYPTO_memcmp(stored, st->secret.stored_key, PGW_SCRAM_KEY_LEN) == 0;
    uint8_t server_sig[PGW_SCRAM_KEY_LEN];
    bool signed_ok = ok && !st->doomed &&
                     hmac256(st->secret.server_key, PGW_SCRAM_KEY_LEN, am, alen, server_sig);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    free(am);
    if (!signed_ok) {
        if (!st->doomed)
            snprintf(st->error, sizeof(st->error), "password does not match");
        st->sqlstate = "28P01";
        st->stage = PGW_SCRAM_FAILED;
        return PGW_EAUTH;
    }
    char v[b64_enc_len(PGW_SCRAM_KEY_LEN) + 1];
    b64_encode(server_sig, sizeof(server_sig), v);
    snprintf(st->server_final, sizeof(st->server_final), "v=%s", v);
    st->stage = PGW_SCRAM_DONE;
    *out = st->server_final;
    *outlen = strlen(st->server_final);
    return 0;
}
