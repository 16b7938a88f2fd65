/*
 * scram.h - the server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as
 * PostgreSQL speaks it, for client authentication.  Pure: no I/O, no
 * logging; OpenSSL does HMAC, SHA-256 and PBKDF2.
 *
 * Secrets use PostgreSQL's verifier format, as in pg_authid.rolpassword:
 *
 *     SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
 *
 * The exchange (PostgreSQL's flavour of it):
 *
 *     client-first   n,,n=<ignored>,r=<client nonce>      ("y,," and, for
 *                                                           SCRAM-SHA-256-PLUS,
 *                                                           "p=tls-server-end-point,,")
 *     server-first   r=<client nonce><server nonce>,s=<salt>,i=<iterations>
 *     client-final   c=<base64 of the gs2 header [+ binding data]>,r=<nonce>,p=<ClientProof>
 *     server-final   v=<ServerSignature>
 *
 * Channel binding (RFC 5802, RFC 5929), as PostgreSQL does it over TLS:
 * the server offers SCRAM-SHA-256-PLUS as well, with tls-server-end-point
 * (a hash of its certificate) as the binding data; a client that chooses it
 * sends "p=tls-server-end-point" and echoes header and data in c=, so a
 * man in the middle holding another certificate cannot relay the exchange.
 * Where PLUS is offered, a client that says "y" (it could bind but thinks
 * the server cannot) is refused: someone stripped PLUS from the list.
 *
 * The user name inside the exchange is ignored (the startup packet's is the
 * one that counts).  The proof is checked without PBKDF2:
 * ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage), and
 * SHA-256(ClientKey) must equal StoredKey (compared in constant time).
 *
 * An unknown user (secret NULL), or a secret SCRAM cannot use (an md5
 * hash), gets a mock exchange: a salt derived from the user name with the
 * cache's key, so asking twice shows the same salt, and a failure at the
 * end that looks exactly like a wrong password.  The key is random per
 * process unless scram_salt_key_file gives one: then restarts and the
 * processes of a so_reuseport group show an unknown user one salt, as they
 * show a real user's verifier's (PostgreSQL keys its mock salts with a
 * nonce kept in pg_control, for the same reason).  A plaintext
 * secret is turned into a verifier on the fly (PBKDF2, 4096 iterations).
 */
#ifndef PGW_PROXY_SCRAM_H
#define PGW_PROXY_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PGW_SCRAM_KEY_LEN            32     /* SHA-256 */
#define PGW_SCRAM_SALT_LEN           16     /* for verifiers pgwharf makes */
#define PGW_SCRAM_MAX_SALT_LEN       64     /* longest salt a verifier may have */
#define PGW_SCRAM_ITERATIONS         4096   /* for verifiers pgwharf makes */
#define PGW_SCRAM_NONCE_RAW_LEN      18     /* server nonce: 18 random bytes ... */
#define PGW_SCRAM_NONCE_LEN          24     /* ... as 24 base64 characters */
#define PGW_SCRAM_MAX_MSG            2048   /* longest client message accepted */
#define PGW_SCRAM_MECHANISM          "SCRAM-SHA-256"
#define PGW_SCRAM_MECHANISM_PLUS     "SCRAM-SHA-256-PLUS"
#define PGW_SCRAM_CBIND_MAX          64     /* longest binding data (SHA-512) */

/* A parsed verifier. */
struct pgw_scram_secret {
    int iterations;
    size_t salt_len;
    uint8_t salt[PGW_SCRAM_MAX_SALT_LEN];
    uint8_t stored_key[PGW_SCRAM_KEY_LEN];
    uint8_t server_key[PGW_SCRAM_KEY_LEN];
};

/* Is the text a SCRAM verifier (one that parses as PostgreSQL's
 * parse_scram_secret parses it, usable by pgwharf or not)?  As
 * PostgreSQL's get_password_type: a secret that only looks like one is a
 * plaintext password. */
bool pgw_scram_is_secret(const char *text);
/* Is the text an md5 secret: "md5" and 32 lowercase hex digits (else, as
 * in PostgreSQL, a plaintext password)? */
bool pgw_md5_is_secret(const char *text);

/* Parse a verifier.  Returns 0; PGW_EINVAL when it is not one (a
 * plaintext password); PGW_EUNSUPPORTED when PostgreSQL reads it as one
 * but pgwharf cannot use it (a salt of more than PGW_SCRAM_MAX_SALT_LEN
 * bytes, iterations outside 1..INT_MAX): still a
 * verifier, never a password, and no login with it succeeds. */
int pgw_scram_secret_parse(const char *text, struct pgw_scram_secret *out);

/* Make a verifier from a password, SASLprepped as PostgreSQL does (see
 * pgw_saslprep).  salt NULL: PGW_SCRAM_SALT_LEN random bytes; iterations
 * <= 0: PGW_SCRAM_ITERATIONS.  Returns 0, PGW_EINVAL (salt too long) or
 * PGW_ENOMEM. */
int pgw_scram_secret_make(const char *password, const uint8_t *salt, size_t salt_len,
                          int iterations, struct pgw_scram_secret *out);

/* Write the verifier's text into buf.  Returns its length, or PGW_EINVAL
 * when buf is too small (256 bytes always suffice). */
int pgw_scram_secret_format(const struct pgw_scram_secret *s, char *buf, size_t size);

/* Check a cleartext password against a verifier (for auth_type plain):
 * SASLprep, PBKDF2, compare ServerKey in constant time. */
bool pgw_scram_verify_plain(const struct pgw_scram_secret *s, const char *password);

/*
 * SASLprep (RFC 4013) of a password, as PostgreSQL's pg_saslprep does it
 * (proxy/saslprep.c): an ASCII password is used as it is; otherwise the
 * mapping (B.1 to nothing, C.1.2 spaces to U+0020), NFKC, the prohibited
 * (C.1.2-C.9) and unassigned (A.1) checks and the bidi rules of RFC 3454
 * section 6, over Unicode 3.2.  A password that is not valid UTF-8, that
 * fails a check or that maps to nothing is used raw by the callers, as
 * PostgreSQL and libpq use it.
 *
 * On PGW_SASLPREP_OK *out is a malloc'd string; otherwise *out is NULL.
 */
enum pgw_saslprep_rc {
    PGW_SASLPREP_OK = 0,
    PGW_SASLPREP_INVALID_UTF8 = -1,
    PGW_SASLPREP_PROHIBITED = -2,
    PGW_SASLPREP_NOMEM = -3
};
enum pgw_saslprep_rc pgw_saslprep(const char *in, char **out);

/* ---- the server's state machine ---- */

enum pgw_scram_stage {
    PGW_SCRAM_WANT_CLIENT_FIRST,
    PGW_SCRAM_WANT_CLIENT_FINAL,
    PGW_SCRAM_DONE,                   /* succeeded */
    PGW_SCRAM_FAILED
};

struct pgw_scram_server {
    enum pgw_scram_stage stage;
    struct pgw_scram_secret secret;
    bool doomed;                      /* mock exchange: fail at the end */
    char gs2_header[32];              /* "n,,", "y,," or "p=tls-server-end-point,," */
    uint8_t cbind[PGW_SCRAM_CBIND_MAX];  /* tls-server-end-point data when PLUS is offered */
    size_t cbind_len;                 /* 0: SCRAM-SHA-256-PLUS not offered */
    bool plus;                        /* the client chose SCRAM-SHA-256-PLUS */
    char server_nonce[64];
    char *client_nonce;
    char *client_first_bare;
    char *server_first;
    char server_final[64];
    /* After a failure: why, for the log (never secret), and the SQLSTATE
     * for the client when it was not a wrong password. */
    char error[256];
    const char *sqlstate;
};

/* Start an exchange.  secret: the user's secret from auth_file (a
 * verifier, plaintext, or md5 hash), NULL for an unknown user.  Returns 0
 * or PGW_ENOMEM. */
int pgw_scram_server_init(struct pgw_scram_server *st, const char *secret, const char *username);

/* Verifiers pgwharf made from plaintext secrets.  The salt is the user's
 * own (the same on every try), so the verifier is too: kept here, a user's
 * next login skips PBKDF2 (thousands of HMACs: most of a SCRAM login's
 * CPU).  Keyed by a digest of (iterations, user, password), so a changed
 * password or scram_iterations is a miss; a fixed number of slots, a
 * collision replaces.  One per loop. */
struct pgw_scram_cache;
struct pgw_scram_cache *pgw_scram_cache_new(void);
void pgw_scram_cache_clear(struct pgw_scram_cache *c);
void pgw_scram_cache_free(struct pgw_scram_cache *c);
/* The key the salts of users without a verifier come from (unknown users
 * and plaintext secrets): key (PGW_SCRAM_KEY_LEN bytes), or NULL for a
 * random one of this process's own (kept if it has one already).  A new
 * key forgets the verifiers made. */
void pgw_scram_cache_salt_key(struct pgw_scram_cache *c, const uint8_t *key);
/* scram_salt_key_file: at least 16 bytes of anything (at most 4096), made
 * into a key.  0, or -1 with why in err. */
int pgw_scram_salt_key_load(const char *path, uint8_t key[PGW_SCRAM_KEY_LEN], char *err,
                            size_t errlen);
/* Lookups and verifiers made so far (tests, SHOW MEM-like counters). */
void pgw_scram_cache_counts(const struct pgw_scram_cache *c, unsigned long *hits,
                            unsigned long *misses);

/* pgw_scram_server_init with scram_iterations for verifiers made from a
 * plaintext secret (<= 0: PGW_SCRAM_ITERATIONS) and a cache (may be NULL). */
int pgw_scram_server_start(struct pgw_scram_server *st, const char *secret, const char *username,
                           int iterations, struct pgw_scram_cache *cache);
void pgw_scram_server_deinit(struct pgw_scram_server *st);

/* Heap versions for callers that keep a pointer (NULL on no memory). */
struct pgw_scram_server *pgw_scram_server_create(const char *secret, const char *username);
void pgw_scram_server_destroy(struct pgw_scram_server *st);

/* Offer SCRAM-SHA-256-PLUS: data is the TLS connection's tls-server-end-point
 * binding (a hash of the server certificate).  Call before client-first.
 * Returns 0, or PGW_EINVAL when len is 0 or over PGW_SCRAM_CBIND_MAX. */
int pgw_scram_server_offer_plus(struct pgw_scram_server *st, const uint8_t *data, size_t len);

/* The mechanism the client chose (SASLInitialResponse).  Returns 0, or
 * PGW_EPROTO (st->error) for a name that was not offered. */
int pgw_scram_server_choose(struct pgw_scram_server *st, const char *mechanism);

/* Tests only: use this server nonce (printable, no ',', at most 63
 * characters) instead of a random one.  Call before client-first. */
int pgw_scram_server_set_nonce(struct pgw_scram_server *st, const char *nonce);

/*
 * Feed the client's messages.  On 0, *out and *outlen are the reply to send
 * (owned by st, valid until deinit).  On failure:
 *   PGW_EAUTH   wrong password, unknown user, unusable secret: tell the
 *               client only "password authentication failed"
 *   PGW_EPROTO  malformed message or refused feature: st->sqlstate and
 *               st->error say what to send
 *   PGW_ENOMEM
 * After a failure, or after client-final, further calls fail.
 */
int pgw_scram_server_client_first(struct pgw_scram_server *st, const char *msg, size_t len,
                                  const char **out, size_t *outlen);
int pgw_scram_server_client_final(struct pgw_scram_server *st, const char *msg, size_t len,
                                  const char **out, size_t *outlen);

#endif
