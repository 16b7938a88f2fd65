/* test_scram.c - SCRAM-SHA-256 server side, verifiers and SASLprep
 * (proxy/scram.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/err.h"
#include "proxy/scram.h"

/* RFC 7677 section 3: user "user", password "pencil". */
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST                                                     \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL                                                     \
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"            \
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The verifier for "pencil" with the RFC's salt (computed independently
 * with Python's hashlib when the test was written). */
#define RFC_VERIFIER                                                         \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"                            \
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"                           \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/*
 * Verifiers made by PostgreSQL 15 itself (SET password_encryption =
 * 'scram-sha-256'; CREATE ROLE ... PASSWORD '...'; SELECT rolpassword FROM
 * pg_authid), with the passwords given.  They pin SASLprep to PostgreSQL's:
 * mapping, NFKC (compatibility characters, ordering of marks, Hangul,
 * exclusions), and the raw fallback when a prohibited or unassigned
 * character, the bidi rules or an empty result make prep fail.
 */
static const struct {
    const char *what, *password, *verifier;
} pg_verifiers[] = {
    { "ascii", "app_pw",
      "SCRAM-SHA-256$4096:zgrsOU+GTzExpy2k0ScA3Q==$EhSTOrM+NHAuEIqgs8T5cg/Me0dt5MwYxS08Kzjp4Q0="
      ":39qY9+0VVNJnczq8aDll0Jc240DUwEiFZvQjCkYYfB4=" },
    { "latin-1", "p\xC3\xA4ssw\xC3\xB6rd",
      "SCRAM-SHA-256$4096:lOPYdrFArLN1FjUPa+ywhw==$bJ7gM3sD+DTEbvgx15WajB6DZAQJSaG4MPLBuOXkyl8="
      ":kzN025WyucAE3x2oJtFsoSvc/vnWT1wKXZTKzChDDos=" },
    { "spaces and soft hyphen", "a\xC2\xA0" "b\xC2\xAD" "c\xE3\x80\x80" "d",
      "SCRAM-SHA-256$4096:gKMkWH3i+TP2bWIj9m7/4w==$2KHsmhIZu+PRCYD/0jsEBNarqOkFQVl6kqoPbrm8hjU="
      ":6jFuYikTKrMqbzXHKiAX5vfQwk1BuR6zCBUKSQXlre8=" },
    { "compatibility characters", "\xEF\xBC\xB0\xC2\xB2\xEF\xAC\x81\xC2\xBD\xC5\xBF",
      "SCRAM-SHA-256$4096:eM3Xcx+BTAFx1s13Acpj4A==$05JX/rxfTergQbZ1gkMkwmGrJ+A3lwL79EIHL8hKi8Y="
      ":9+jJjaW5ZnpqVVVGY45I7D7CrcmJDaESg4Xf6Qz9jfg=" },
    { "prohibited control character", "\xC3\xA9\x01x",
      "SCRAM-SHA-256$4096:rteB2gxB0o50s0zMEiVBQQ==$s9/IfjG8cwaIAFAr1ZOXy1MXlhFJlVWP5qlTpTNV3cw="
      ":YJ31r/2VRP11OmXkkHg3IZSxJZbVNW6f2omtvhEDSK0=" },
    { "cjk, hangul, cyrillic", "\xE5\xAF\x86\xE7\xA0\x81\xEA\xB0\x80\xD0\x96",
      "SCRAM-SHA-256$4096:muXRo7Zzz33mdAdAy0OSCQ==$sjob7I5KE4G5GnS0YK3bvBvPiTT0Jqx6chxguPOI4mU="
      ":x6cNkyqOzhkRr+vFftKD4lyk8JiBJ+jDh7my7uCEuoY=" },
    { "circled digit, trade mark, ligature", "\xE2\x91\xA0\xE2\x84\xA2\xEF\xAC\x81x",
      "SCRAM-SHA-256$4096:oNTwaEu2Sz27wALd1lZhQQ==$R5ah3vupJEVGlCtCmt2xqJH8QQX05K3yyIdQ0kf6RhY="
      ":5xetQzzw8RDD8HA/CKOS4NN0cwq4/Z5E7AszP7m2bAU=" },
    { "marks out of order, hangul jamo, composition exclusion",
      "s\xCC\x87\xCC\xA3\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8\xE0\xA5\x98",
      "SCRAM-SHA-256$4096:wu6X33CgPqYUTQg8ZSeEag==$0YSnLUi3osiClmc3qtqwGGTzQhc3kzcillHCm5jdoU8="
      ":+BaD82/9o8Cwd6UOdgBIIJWbmpcIJ2E2ZbU8cq7QOsM=" },
    { "bidi failure (raw)", "\xD7\x90" "a",
      "SCRAM-SHA-256$4096:pAWH/Zp8Rk5FOv9Prp6y5A==$mxFzxrB73FtGZuUdxrGZlsasm9K19gBXdMkLigmWlpc="
      ":SDYzFKqf6Awldh+uD+juVIJ8LyimYyTFwSl3upsvl6Y=" },
    { "unassigned in Unicode 3.2 (raw)", "x\xE9\xBE\xA6",
      "SCRAM-SHA-256$4096:VCZe+04V0/dWXY6sPr22Vg==$sgoJqiY1wz6ewOt/0SWD/Gsxa52QAoXtkWnASSwRVFE="
      ":ZXclkSOtlCXTLP/P7nnWS1bU9DZ72wFv0iJe7Slaqs8=" },
    { "empty after mapping", "\xC2\xAD",
      "SCRAM-SHA-256$4096:aXdP2V/yo4s1msEHEqXAIA==$G0RicXWrussEGadEkO7UrcRc3Goif4+G0XiiK65Cnc8="
      ":ICTyaCvKWqarne41T8YQ7MXoUAvvsMn7h8GGDVCgB5c=" },
};

/* ---- a SCRAM client, written against the RFC with OpenSSL's own base64 ---- */

static size_t b64enc(const uint8_t *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static size_t b64dec(const char *in, uint8_t *out)
{
    size_t n = strlen(in);
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    assert_true(len >= 0);
    while (n > 0 && in[n - 1] == '=') {
        n--;
        len--;
    }
    return (size_t)len;
}

/* client-final for `password`, given the client-first-bare and the
 * server's first message; gs2 is the header the client sent, cbind the
 * channel binding data it binds (SCRAM-SHA-256-PLUS; NULL: none). */
static void client_final_bound(const char *password, const char *gs2, const uint8_t *cbind,
                               size_t cbind_len, const char *bare, const char *server_first,
                               char *out, size_t outsize)
{
    char nonce[200], salt_b64[256];
    int iter = 0;
    assert_int_equal(sscanf(server_first, "r=%199[^,],s=%255[^,],i=%d", nonce, salt_b64, &iter),
                     3);
    uint8_t salt[128], salted[32], client_key[32], stored[32], sig[32], proof[32];
    size_t salt_len = b64dec(salt_b64, salt);
    unsigned int l;
    assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
                                       iter, EVP_sha256(), 32, salted), 1);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, client_key, &l);
    EVP_Digest(client_key, 32, stored, &l, EVP_sha256(), NULL);
    char cb[160], without_proof[400], am[2048];
    uint8_t cbin[128];
    size_t gl = strlen(gs2);
    memcpy(cbin, gs2, gl);
    if (cbind)
        memcpy(cbin + gl, cbind, cbind_len);
    b64enc(cbin, gl + (cbind ? cbind_len : 0), cb);
    snprintf(without_proof, sizeof(without_proof), "c=%s,r=%s", cb, nonce);
    snprintf(am, sizeof(am), "%s,%s,%s", bare, server_first, without_proof);
    HMAC(EVP_sha256(), stored, 32, (const uint8_t *)am, strlen(am), sig, &l);
    for (int i = 0; i < 32; i++)
        proof[i] = client_key[i] ^ sig[i];
    char proof_b64[64];
    b64enc(proof, 32, proof_b64);
    snprintf(out, outsize, "%s,p=%s", without_proof, proof_b64);
}

#define SCRAM_BUF 512   /* a server-first or client-final message here */

/* The client's side of an exchange with st (started): client-first
 * `first`, then the client-final of `password` echoing the gs2 header
 * `gs2` (NULL: the one `first` has).  Returns client-first's error, else
 * client-final's result; the server-first goes to sf and the client-final
 * to final (SCRAM_BUF bytes each, or NULL). */
static int scram_exchange(struct pgw_scram_server *st, const char *first, const char *gs2,
                          const char *password, char *sf, char *final)
{
    const char *out;
    size_t outlen;
    int rc = pgw_scram_server_client_first(st, first, strlen(first), &out, &outlen);
    if (rc < 0)
        return rc;
    char sf_own[SCRAM_BUF], final_own[SCRAM_BUF], gs2_own[64];
    sf = sf ? sf : sf_own;
    final = final ? final : final_own;
    snprintf(sf, SCRAM_BUF, "%.*s", (int)outlen, out);
    const char *bare = strstr(first, ",,") + 2;
    snprintf(gs2_own, sizeof(gs2_own), "%.*s", (int)(bare - first), first);
    client_final_bound(password, gs2 ? gs2 : gs2_own, NULL, 0, bare, sf, final, SCRAM_BUF);
    return pgw_scram_server_client_final(st, final, strlen(final), &out, &outlen);
}

/* One whole exchange, with scram_iterations and a cache; returns the
 * result of client-final.  The server-first message goes to sf_out
 * (SCRAM_BUF bytes) when it is not NULL. */
static int exchange_with(const char *secret, const char *user, const char *password,
                         struct pgw_scram_server *st, int iterations,
                         struct pgw_scram_cache *cache, char *sf_out)
{
    assert_int_equal(pgw_scram_server_start(st, secret, user, iterations, cache), 0);
    return scram_exchange(st, "n,,n=,r=clientnonce123", NULL, password, sf_out, NULL);
}

/* One whole exchange; returns the result of client-final. */
static int exchange(const char *secret, const char *user, const char *password,
                    struct pgw_scram_server *st)
{
    return exchange_with(secret, user, password, st, 0, NULL, NULL);
}

/* ---- verifiers made from plaintext, cached ---- */

static void cached_exchange(struct pgw_scram_cache *c, const char *secret, const char *password,
                            int iterations, int want_rc, unsigned long want_hits,
                            unsigned long want_misses)
{
    struct pgw_scram_server st;
    char sf[SCRAM_BUF], iter[32];
    assert_int_equal(exchange_with(secret, "u", password, &st, iterations, c, sf), want_rc);
    snprintf(iter, sizeof(iter), ",i=%d", iterations);
    assert_non_null(strstr(sf, iter));
    pgw_scram_server_deinit(&st);
    unsigned long hits, misses;
    pgw_scram_cache_counts(c, &hits, &misses);
    assert_int_equal(hits, want_hits);
    assert_int_equal(misses, want_misses);
}

static void test_made_verifier_cache(void **state)
{
    (void)state;
    struct pgw_scram_cache *c = pgw_scram_cache_new();
    assert_non_null(c);
    cached_exchange(c, "pw", "pw", 4096, 0, 0, 1);           /* made once */
    cached_exchange(c, "pw", "pw", 4096, 0, 1, 1);           /* then kept */
    cached_exchange(c, "pw", "wrong", 4096, PGW_EAUTH, 2, 1); /* still checked */
    cached_exchange(c, "pw2", "pw", 4096, PGW_EAUTH, 2, 2);  /* a new password: made again */
    cached_exchange(c, "pw2", "pw2", 4096, 0, 3, 2);
    cached_exchange(c, "pw2", "pw2", 5000, 0, 3, 3);         /* scram_iterations changed */
    pgw_scram_cache_clear(c);
    cached_exchange(c, "pw2", "pw2", 5000, 0, 3, 4);
    pgw_scram_cache_free(c);
    pgw_scram_cache_free(NULL);
}

/* Up to 256 users' verifiers are kept, the least recently used going
 * first: a slot per hash value let users that shared one push each other
 * out at every login (PBKDF2 on the loop each time). */
static void test_made_verifier_cache_holds_256_users(void **state)
{
    (void)state;
    struct pgw_scram_cache *c = pgw_scram_cache_new();
    assert_non_null(c);
    char user[32];
    struct pgw_scram_server st;
    unsigned long hits, misses;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 256; i++) {
            snprintf(user, sizeof(user), "user%d", i);
            assert_int_equal(pgw_scram_server_start(&st, "pw", user, 16, c), 0);
            pgw_scram_server_deinit(&st);
        }
    pgw_scram_cache_counts(c, &hits, &misses);
    assert_int_equal(hits, 256);
    assert_int_equal(misses, 256);
    /* One more: user0, used least recently, goes; user1 stays. */
    assert_int_equal(pgw_scram_server_start(&st, "pw", "user256", 16, c), 0);
    pgw_scram_server_deinit(&st);
    assert_int_equal(pgw_scram_server_start(&st, "pw", "user1", 16, c), 0);
    pgw_scram_server_deinit(&st);
    assert_int_equal(pgw_scram_server_start(&st, "pw", "user0", 16, c), 0);
    pgw_scram_server_deinit(&st);
    pgw_scram_cache_counts(c, &hits, &misses);
    assert_int_equal(hits, 257);
    assert_int_equal(misses, 258);
    pgw_scram_cache_free(c);
}

/* The salt an exchange through cache c shows user (unknown when secret is
 * NULL). */
static void salt_of(struct pgw_scram_cache *c, const char *secret, const char *user, char *out,
                    size_t size)
{
    struct pgw_scram_server st;
    char sf[SCRAM_BUF];
    exchange_with(secret, user, "x", &st, 4096, c, sf);
    pgw_scram_server_deinit(&st);
    const char *s = strstr(sf, ",s=");
    assert_non_null(s);
    snprintf(out, size, "%.*s", (int)strcspn(s + 3, ","), s + 3);
}

/* Without scram_salt_key_file each cache (process) has a random key of its
 * own; with one, two caches (processes, or one before and after a
 * restart) show an unknown user the same salt, as a verifier's stays. */
static void test_salt_key(void **state)
{
    (void)state;
    struct pgw_scram_cache *a = pgw_scram_cache_new(), *b = pgw_scram_cache_new();
    char sa[64], sb[64], sp[64];
    salt_of(a, NULL, "ghost", sa, sizeof(sa));
    salt_of(b, NULL, "ghost", sb, sizeof(sb));
    assert_string_not_equal(sa, sb);
    pgw_scram_cache_salt_key(a, NULL);                  /* no file: keeps its own */
    salt_of(a, NULL, "ghost", sp, sizeof(sp));
    assert_string_equal(sa, sp);

    char path[] = "/tmp/pgw-test-saltkey-XXXXXX", err[300];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("0123456789abcdef0123456789abcdef", f);
    fclose(f);
    uint8_t key[PGW_SCRAM_KEY_LEN], again[PGW_SCRAM_KEY_LEN];
    assert_int_equal(pgw_scram_salt_key_load(path, key, err, sizeof(err)), 0);
    assert_int_equal(pgw_scram_salt_key_load(path, again, err, sizeof(err)), 0);
    assert_memory_equal(key, again, sizeof(key));
    cached_exchange(a, "pw", "pw", 4096, 0, 0, 1);      /* a verifier made with a's salt */
    pgw_scram_cache_salt_key(a, key);
    pgw_scram_cache_salt_key(b, key);
    salt_of(a, NULL, "ghost", sa, sizeof(sa));
    salt_of(b, NULL, "ghost", sb, sizeof(sb));
    assert_string_equal(sa, sb);
    salt_of(a, "pw", "ghost", sp, sizeof(sp));          /* plaintext: the same salt */
    assert_string_equal(sa, sp);
    salt_of(a, NULL, "ghost2", sp, sizeof(sp));
    assert_string_not_equal(sa, sp);
    cached_exchange(a, "pw", "pw", 4096, 0, 0, 3);      /* made again under the new key */
    pgw_scram_cache_salt_key(a, NULL);                  /* the file is gone: a random key */
    salt_of(a, NULL, "ghost", sp, sizeof(sp));
    assert_string_not_equal(sa, sp);

    f = fopen(path, "w");                               /* too short */
    fputs("short", f);
    fclose(f);
    assert_int_equal(pgw_scram_salt_key_load(path, key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "holds 5 bytes, at least 16"));
    unlink(path);
    assert_int_equal(pgw_scram_salt_key_load(path, key, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file"));
    pgw_scram_cache_free(a);
    pgw_scram_cache_free(b);
}

/* ---- the exchange ---- */

static void test_rfc7677_exchange(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    assert_int_equal(pgw_scram_server_init(&st, RFC_VERIFIER, "user"), 0);
    assert_int_equal(pgw_scram_server_set_nonce(&st, RFC_SERVER_NONCE), 0);
    assert_int_equal(pgw_scram_server_client_first(&st, RFC_CLIENT_FIRST,
                                                   strlen(RFC_CLIENT_FIRST), &out, &outlen), 0);
    assert_int_equal(outlen, strlen(RFC_SERVER_FIRST));
    assert_memory_equal(out, RFC_SERVER_FIRST, outlen);
    assert_int_equal(pgw_scram_server_client_final(&st, RFC_CLIENT_FINAL,
                                                   strlen(RFC_CLIENT_FINAL), &out, &outlen), 0);
    assert_int_equal(outlen, strlen(RFC_SERVER_FINAL));
    assert_memory_equal(out, RFC_SERVER_FINAL, outlen);
    assert_int_equal(st.stage, PGW_SCRAM_DONE);
    /* Nothing more is accepted. */
    assert_int_equal(pgw_scram_server_client_final(&st, RFC_CLIENT_FINAL,
                                                   strlen(RFC_CLIENT_FINAL), &out, &outlen),
                     PGW_EPROTO);
    pgw_scram_server_deinit(&st);
}

static void test_rfc7677_wrong_proof(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    /* The RFC's messages against a verifier for another password. */
    struct pgw_scram_secret sec;
    uint8_t salt[16];
    assert_int_equal(b64dec("W22ZaJ0SNY7soEsUEjb6gQ==", salt), 16);
    assert_int_equal(pgw_scram_secret_make("pencil2", salt, 16, 4096, &sec), 0);
    char text[256];
    assert_true(pgw_scram_secret_format(&sec, text, sizeof(text)) > 0);
    assert_int_equal(pgw_scram_server_init(&st, text, "user"), 0);
    assert_int_equal(pgw_scram_server_set_nonce(&st, RFC_SERVER_NONCE), 0);
    assert_int_equal(pgw_scram_server_client_first(&st, RFC_CLIENT_FIRST,
                                                   strlen(RFC_CLIENT_FIRST), &out, &outlen), 0);
    assert_memory_equal(out, RFC_SERVER_FIRST, outlen);
    assert_int_equal(pgw_scram_server_client_final(&st, RFC_CLIENT_FINAL,
                                                   strlen(RFC_CLIENT_FINAL), &out, &outlen),
                     PGW_EAUTH);
    assert_string_equal(st.sqlstate, "28P01");
    assert_string_equal(st.error, "password does not match");
    pgw_scram_server_deinit(&st);

    /* One flipped bit in a correct proof. */
    char bad[] = RFC_CLIENT_FINAL;
    char *p = strstr(bad, ",p=") + 3;
    *p = *p == 'A' ? 'B' : 'A';
    assert_int_equal(pgw_scram_server_init(&st, RFC_VERIFIER, "user"), 0);
    assert_int_equal(pgw_scram_server_set_nonce(&st, RFC_SERVER_NONCE), 0);
    assert_int_equal(pgw_scram_server_client_first(&st, RFC_CLIENT_FIRST,
                                                   strlen(RFC_CLIENT_FIRST), &out, &outlen), 0);
    assert_int_equal(pgw_scram_server_client_final(&st, bad, strlen(bad), &out, &outlen),
                     PGW_EAUTH);
    pgw_scram_server_deinit(&st);
}

static void test_postgres_verifier_exchange(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    assert_int_equal(exchange(pg_verifiers[0].verifier, "app", "app_pw", &st), 0);
    assert_int_equal(st.stage, PGW_SCRAM_DONE);
    assert_memory_equal(st.server_final, "v=", 2);
    pgw_scram_server_deinit(&st);
    assert_int_equal(exchange(pg_verifiers[0].verifier, "app", "app_pW", &st), PGW_EAUTH);
    pgw_scram_server_deinit(&st);
}

static void test_plaintext_secret(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    assert_int_equal(exchange("s3cret", "bob", "s3cret", &st), 0);
    pgw_scram_server_deinit(&st);
    assert_int_equal(exchange("s3cret", "bob", "s3cret ", &st), PGW_EAUTH);
    pgw_scram_server_deinit(&st);
}

static void server_first_of(const char *secret, const char *user, char *buf, size_t size)
{
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    assert_int_equal(pgw_scram_server_init(&st, secret, user), 0);
    assert_int_equal(pgw_scram_server_set_nonce(&st, "NONCE"), 0);
    assert_int_equal(pgw_scram_server_client_first(&st, "n,,n=,r=x", 9, &out, &outlen), 0);
    snprintf(buf, size, "%.*s", (int)outlen, out);
    pgw_scram_server_deinit(&st);
}

/* An unknown user sees a salt that stays the same, and fails only at the
 * end, in the same way as a wrong password. */
static void test_unknown_user_mock(void **state)
{
    (void)state;
    char a[256], b[256], c[256], d[256];
    server_first_of(NULL, "ghost", a, sizeof(a));
    server_first_of(NULL, "ghost", b, sizeof(b));
    server_first_of(NULL, "ghost2", c, sizeof(c));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_non_null(strstr(a, ",i=4096"));
    /* A plaintext secret uses the same per-user salt: no way to tell. */
    server_first_of("whatever", "ghost", d, sizeof(d));
    assert_string_equal(a, d);

    struct pgw_scram_server st;
    assert_int_equal(exchange(NULL, "ghost", "anything", &st), PGW_EAUTH);
    assert_string_equal(st.sqlstate, "28P01");
    assert_string_equal(st.error, "no such user");
    pgw_scram_server_deinit(&st);
    assert_int_equal(exchange("", "ghost", "", &st), 0);   /* empty plaintext is a password */
    pgw_scram_server_deinit(&st);
}

static void test_unusable_secrets(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    /* an md5 hash: SCRAM cannot use it */
    assert_int_equal(exchange("md5fd3b5f9ec3ba7e9bbd4d7e5d1b6f1b20", "user", "pencil", &st),
                     PGW_EAUTH);
    assert_non_null(strstr(st.error, "md5"));
    pgw_scram_server_deinit(&st);
    pgw_scram_server_deinit(&st);
}

/* As PostgreSQL's get_password_type: a secret that only looks like a
 * verifier (a SCRAM one that does not parse, "md5" and 32 characters that
 * are not all lowercase hex) is a plaintext password.  Such a password in
 * an auth_file locked its user out, with any method. */
static void test_secrets_that_only_look_like_verifiers_are_passwords(void **state)
{
    (void)state;
    const char *fake_scram = "SCRAM-SHA-256$4096:abc$def:ghi";
    const char *fake_md5 = "md5zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
    assert_false(pgw_scram_is_secret(fake_scram));
    assert_false(pgw_md5_is_secret(fake_md5));
    assert_false(pgw_md5_is_secret("md5FD3B5F9EC3BA7E9BBD4D7E5D1B6F1B20"));
    assert_true(pgw_md5_is_secret("md5fd3b5f9ec3ba7e9bbd4d7e5d1b6f1b20"));
    struct pgw_scram_server st;
    assert_int_equal(exchange(fake_scram, "user", fake_scram, &st), 0);
    pgw_scram_server_deinit(&st);
    assert_int_equal(exchange(fake_scram, "user", "pencil", &st), PGW_EAUTH);
    pgw_scram_server_deinit(&st);
    assert_int_equal(exchange(fake_md5, "user", fake_md5, &st), 0);
    pgw_scram_server_deinit(&st);
}

static void test_y_flag_accepted(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    const char *first = "y,,n=u,r=abc,x=ext";   /* extensions after r= are ignored */
    char final[SCRAM_BUF];
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(scram_exchange(&st, first, NULL, "pw", NULL, final), 0);
    assert_memory_equal(final, "c=eSws,", 7);
    pgw_scram_server_deinit(&st);

    /* The channel-binding data must echo the header that was sent. */
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(scram_exchange(&st, first, "n,,", "pw", NULL, NULL), PGW_EPROTO);
    assert_non_null(strstr(st.error, "channel binding"));
    pgw_scram_server_deinit(&st);
}

static void test_channel_binding_refused(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    const char *first = "p=tls-server-end-point,,n=,r=abc";
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(pgw_scram_server_client_first(&st, first, strlen(first), &out, &outlen),
                     PGW_EPROTO);
    assert_string_equal(st.sqlstate, "08P01");
    assert_non_null(strstr(st.error, "channel binding"));
    assert_non_null(strstr(st.error, "SCRAM-SHA-256"));
    assert_int_equal(st.stage, PGW_SCRAM_FAILED);
    pgw_scram_server_deinit(&st);
}

/* SCRAM-SHA-256-PLUS: offered with the TLS connection's binding data,
 * chosen by the client, and c= must carry that data. */
static void test_channel_binding_plus(void **state)
{
    (void)state;
    static const uint8_t tls_a[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, tls_b[32] = { 9 };
    static const struct {
        const char *mechanism, *first;
        const uint8_t *bound;              /* the data the client binds */
        int first_rc, final_rc;
        const char *error;
    } cases[] = {
        { "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc", tls_a, 0, 0, NULL },
        /* a relay's TLS connection: other data */
        { "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc", tls_b, 0, PGW_EPROTO,
          "tls-server-end-point data" },
        /* the header alone (what an unbound client echoes) */
        { "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc", NULL, 0, PGW_EPROTO,
          "channel binding check failed" },
        { "SCRAM-SHA-256-PLUS", "p=tls-unique,,n=,r=abc", NULL, PGW_EPROTO, 0,
          "unsupported SCRAM channel-binding type" },
        { "SCRAM-SHA-256-PLUS", "p=tls-server-end-pointX,,n=,r=abc", NULL, PGW_EPROTO, 0,
          "unsupported SCRAM channel-binding type" },
        { "SCRAM-SHA-256-PLUS", "p=tls-server-end-point", NULL, PGW_EPROTO, 0,
          "unsupported SCRAM channel-binding type" },
        { "SCRAM-SHA-256-PLUS", "n,,n=,r=abc", NULL, PGW_EPROTO, 0,
          "selected SCRAM-SHA-256-PLUS, but" },
        { "SCRAM-SHA-256-PLUS", "y,,n=,r=abc", NULL, PGW_EPROTO, 0,
          "selected SCRAM-SHA-256-PLUS, but" },
        /* PLUS offered, not chosen: "n" is fine, "y" means it was stripped */
        { "SCRAM-SHA-256", "n,,n=,r=abc", NULL, 0, 0, NULL },
        { "SCRAM-SHA-256", "y,,n=,r=abc", NULL, PGW_EPROTO, 0,
          "channel binding negotiation error" },
        { "SCRAM-SHA-256", "p=tls-server-end-point,,n=,r=abc", NULL, PGW_EPROTO, 0,
          "without channel binding, but" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgw_scram_server st;
        const char *out;
        size_t outlen;
        char sf[256], final[512];
        assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
        assert_int_equal(pgw_scram_server_offer_plus(&st, tls_a, sizeof(tls_a)), 0);
        assert_int_equal(pgw_scram_server_choose(&st, cases[i].mechanism), 0);
        const char *first = cases[i].first;
        int rc = pgw_scram_server_client_first(&st, first, strlen(first), &out, &outlen);
        if (rc != cases[i].first_rc)
            fail_msg("case %zu: client-first %d (%s)", i, rc, st.error);
        if (rc == 0) {
            snprintf(sf, sizeof(sf), "%.*s", (int)outlen, out);
            const char *bare = strstr(first, ",,") + 2;
            char gs2[64];
            snprintf(gs2, sizeof(gs2), "%.*s", (int)(bare - first), first);
            client_final_bound("pw", gs2, cases[i].bound, 32, bare, sf, final, sizeof(final));
            rc = pgw_scram_server_client_final(&st, final, strlen(final), &out, &outlen);
            if (rc != cases[i].final_rc)
                fail_msg("case %zu: client-final %d (%s)", i, rc, st.error);
        }
        if (cases[i].error) {
            /* PostgreSQL's: 28000 for a stripped PLUS and for PLUS data
             * that does not match; the rest malformed (08P01) */
            bool auth = strstr(cases[i].error, "negotiation error") || cases[i].final_rc != 0;
            assert_string_equal(st.sqlstate, auth ? "28000" : "08P01");
            if (!strstr(st.error, cases[i].error))
                fail_msg("case %zu: %s", i, st.error);
        }
        pgw_scram_server_deinit(&st);
    }
    /* PLUS is chosen only when offered (TLS); other names never. */
    struct pgw_scram_server st;
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(pgw_scram_server_choose(&st, "SCRAM-SHA-256-PLUS"), PGW_EPROTO);
    assert_non_null(strstr(st.error, "invalid SASL authentication mechanism"));
    pgw_scram_server_deinit(&st);
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(pgw_scram_server_offer_plus(&st, tls_a, 0), PGW_EINVAL);
    assert_int_equal(pgw_scram_server_offer_plus(&st, tls_a, PGW_SCRAM_CBIND_MAX + 1),
                     PGW_EINVAL);
    assert_int_equal(pgw_scram_server_choose(&st, "SCRAM-SHA-1"), PGW_EPROTO);
    pgw_scram_server_deinit(&st);
}

/* ---- malformed input ---- */

static void test_client_first_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        size_t len;           /* 0: strlen */
        const char *sqlstate, *error;
    } cases[] = {
        { "", 0, "08P01", "empty message" },
        { "n,,n=,r=a\0b", 11, "08P01", "length mismatch" },
        { "x,,n=,r=abc", 0, "08P01", "unexpected channel-binding flag 'x'" },
        { "\x01,,n=,r=abc", 0, "08P01", "unexpected channel-binding flag 0x01" },
        { "nn,n=,r=abc", 0, "08P01", "comma expected" },
        { "n,a=admin,n=,r=abc", 0, "0A000", "authorization identity" },
        { "n,x,n=,r=abc", 0, "08P01", "unexpected attribute 'x'" },
        { "n,,m=ext,n=,r=abc", 0, "0A000", "unsupported SCRAM extension" },
        { "n,,r=abc", 0, "08P01", "expected attribute 'n'" },
        { "n,,n=u", 0, "08P01", "expected attribute 'r'" },
        { "n,,n=u,s=abc", 0, "08P01", "expected attribute 'r'" },
        { "n,,n=u,r", 0, "08P01", "expected attribute 'r'" },
        { "n,,n=u,r=a b", 0, "08P01", "non-printable" },
        { "n,,n=u,r=\xC3\xA9", 0, "08P01", "non-printable" },
        { "n,,n=u,r=abc,1=x", 0, "08P01", "attribute expected" },
        { "n,,n=u,r=abc,x", 0, "08P01", "attribute expected" },
        /* "n,,n=u,r=abc," (a trailing comma) and "n,,n=u,r=" (an empty
         * nonce: test_empty_client_nonce) are accepted, as PostgreSQL does. */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgw_scram_server st;
        const char *out = NULL;
        size_t outlen = 0, len = cases[i].len ? cases[i].len : strlen(cases[i].msg);
        assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
        int rc = pgw_scram_server_client_first(&st, cases[i].msg, len, &out, &outlen);
        if (rc != PGW_EPROTO || strcmp(st.sqlstate, cases[i].sqlstate) != 0 ||
            !strstr(st.error, cases[i].error))
            fail_msg("case %zu (%s): rc %d sqlstate %s error \"%s\"", i, cases[i].msg, rc,
                     st.sqlstate, st.error);
        pgw_scram_server_deinit(&st);
    }
    char big[PGW_SCRAM_MAX_MSG + 32];
    memset(big, 'a', sizeof(big));
    memcpy(big, "n,,n=,r=", 8);
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(pgw_scram_server_client_first(&st, big, sizeof(big), &out, &outlen),
                     PGW_EPROTO);
    assert_non_null(strstr(st.error, "too long"));
    pgw_scram_server_deinit(&st);
}

/* A server that has seen RFC_CLIENT_FIRST with the RFC's nonce. */
static void rfc_after_first(struct pgw_scram_server *st)
{
    const char *out;
    size_t outlen;
    assert_int_equal(pgw_scram_server_init(st, RFC_VERIFIER, "user"), 0);
    assert_int_equal(pgw_scram_server_set_nonce(st, RFC_SERVER_NONCE), 0);
    assert_int_equal(pgw_scram_server_client_first(st, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST),
                                                   &out, &outlen), 0);
}

#define RFC_NONCE "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="

static void test_client_final_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *error;
    } cases[] = {
        { "r=" RFC_NONCE ",p=" RFC_PROOF, "expected attribute 'c'" },
        { "c=eSws,r=" RFC_NONCE ",p=" RFC_PROOF, "channel binding" },
        { "c=biw,r=" RFC_NONCE ",p=" RFC_PROOF, "channel binding" },
        { "c=cD10bHMtdW5pcXVl,r=" RFC_NONCE ",p=" RFC_PROOF, "channel binding" },
        { "c=biws,p=" RFC_PROOF, "expected attribute 'r'" },
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=" RFC_PROOF, "nonce mismatch" },
        { "c=biws,r=" RFC_NONCE "x,p=" RFC_PROOF, "nonce mismatch" },
        { "c=biws,r=" RFC_NONCE, "could not find proof" },
        { "c=biws,r=" RFC_NONCE ",", "could not find proof" },
        { "c=biws,r=" RFC_NONCE ",x=1", "could not find proof" },
        { "c=biws,r=" RFC_NONCE ",=1,p=" RFC_PROOF, "attribute expected" },
        { "c=biws,r=" RFC_NONCE ",p=" RFC_PROOF ",x=1", "garbage" },
        { "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+", "invalid ClientProof" },
        { "c=biws,r=" RFC_NONCE ",p=" RFC_PROOF "AAAA", "invalid ClientProof" },
        { "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", "invalid ClientProof" },
        { "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And*Q=", "invalid ClientProof" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgw_scram_server st;
        const char *out = NULL;
        size_t outlen = 0;
        rfc_after_first(&st);
        int rc = pgw_scram_server_client_final(&st, cases[i].msg, strlen(cases[i].msg), &out,
                                               &outlen);
        if (rc != PGW_EPROTO || !strstr(st.error, cases[i].error))
            fail_msg("case %zu (%s): rc %d error \"%s\"", i, cases[i].msg, rc, st.error);
        pgw_scram_server_deinit(&st);
    }
    /* A valid extension before p= is skipped. */
    const char *ext = "c=biws,r=" RFC_NONCE ",x=1,p=" RFC_PROOF;
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    rfc_after_first(&st);
    assert_int_equal(pgw_scram_server_client_final(&st, ext, strlen(ext), &out, &outlen),
                     PGW_EAUTH);   /* well-formed, but the proof covers other bytes */
    pgw_scram_server_deinit(&st);
}

/* A client-first-message with an empty nonce ("r="): PostgreSQL takes it
 * (the combined nonce is then the server's alone) and logs the client in;
 * pgwharf refused it as "non-printable characters in SCRAM nonce". */
static void test_empty_client_nonce(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    char sf[SCRAM_BUF];
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(scram_exchange(&st, "n,,n=,r=", NULL, "pw", sf, NULL), 0);
    assert_true(strncmp(sf, "r=", 2) == 0 && sf[2] != ',');
    pgw_scram_server_deinit(&st);
    /* the wrong password still fails as one */
    assert_int_equal(pgw_scram_server_init(&st, "pw", "u"), 0);
    assert_int_equal(scram_exchange(&st, "n,,n=,r=", NULL, "other", NULL, NULL), PGW_EAUTH);
    pgw_scram_server_deinit(&st);
}

/* Every prefix of each message: no crash, and a clean failure wherever the
 * prefix is not itself a valid message. */
static void test_truncations(void **state)
{
    (void)state;
    const char *out;
    size_t outlen;
    size_t nonce_at = strlen("n,,n=user,r=");
    for (size_t len = 0; len < strlen(RFC_CLIENT_FIRST); len++) {
        struct pgw_scram_server st;
        assert_int_equal(pgw_scram_server_init(&st, RFC_VERIFIER, "user"), 0);
        int rc = pgw_scram_server_client_first(&st, RFC_CLIENT_FIRST, len, &out, &outlen);
        if (len < nonce_at)
            assert_int_equal(rc, PGW_EPROTO);
        else
            assert_int_equal(rc, 0);   /* a shorter client nonce (or none) is still a nonce */
        pgw_scram_server_deinit(&st);
    }
    for (size_t len = 0; len < strlen(RFC_CLIENT_FINAL); len++) {
        struct pgw_scram_server st;
        rfc_after_first(&st);
        int rc = pgw_scram_server_client_final(&st, RFC_CLIENT_FINAL, len, &out, &outlen);
        if (rc != PGW_EPROTO)
            fail_msg("prefix of %zu bytes: rc %d", len, rc);
        assert_int_equal(st.stage, PGW_SCRAM_FAILED);
        pgw_scram_server_deinit(&st);
    }
}

static void test_out_of_order(void **state)
{
    (void)state;
    struct pgw_scram_server st;
    const char *out;
    size_t outlen;
    assert_int_equal(pgw_scram_server_init(&st, RFC_VERIFIER, "user"), 0);
    assert_int_equal(pgw_scram_server_client_final(&st, RFC_CLIENT_FINAL,
                                                   strlen(RFC_CLIENT_FINAL), &out, &outlen),
                     PGW_EPROTO);
    /* After a failure, nothing more. */
    assert_int_equal(pgw_scram_server_client_first(&st, RFC_CLIENT_FIRST,
                                                   strlen(RFC_CLIENT_FIRST), &out, &outlen),
                     PGW_EPROTO);
    pgw_scram_server_deinit(&st);
    rfc_after_first(&st);
    assert_int_equal(pgw_scram_server_client_first(&st, RFC_CLIENT_FIRST,
                                                   strlen(RFC_CLIENT_FIRST), &out, &outlen),
                     PGW_EPROTO);
    pgw_scram_server_deinit(&st);

    struct pgw_scram_server *h = pgw_scram_server_create(NULL, "x");
    assert_non_null(h);
    assert_int_equal(pgw_scram_server_set_nonce(h, "a,b"), PGW_EINVAL);
    assert_int_equal(pgw_scram_server_set_nonce(h, ""), PGW_EINVAL);
    pgw_scram_server_destroy(h);
    pgw_scram_server_destroy(NULL);
}

/* Random messages from a SCRAM-ish alphabet: always a clean answer. */
static void test_random_messages(void **state)
{
    (void)state;
    static const char alphabet[] = "nypcrmas=,,,biwsAB+/0189\0\x01\xff";
    unsigned seed = 12345;
    for (int i = 0; i < 20000; i++) {
        char msg[80];
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % sizeof(msg);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            msg[k] = alphabet[(seed >> 16) % (sizeof(alphabet) - 1)];
        }
        struct pgw_scram_server st;
        const char *out = NULL;
        size_t outlen = 0;
        if (i % 2 == 0) {
            assert_int_equal(pgw_scram_server_init(&st, RFC_VERIFIER, "u"), 0);  /* no PBKDF2 */
            int rc = pgw_scram_server_client_first(&st, msg, len, &out, &outlen);
            assert_true(rc == 0 || rc == PGW_EPROTO);
            if (rc == 0)
                assert_int_equal(outlen, strlen(out));
        } else {
            rfc_after_first(&st);
            int rc = pgw_scram_server_client_final(&st, msg, len, &out, &outlen);
            assert_int_equal(rc, PGW_EPROTO);
        }
        pgw_scram_server_deinit(&st);
    }
}

/* ---- verifiers ---- */

static void test_secret_make_and_format(void **state)
{
    (void)state;
    struct pgw_scram_secret s, p;
    uint8_t salt[16];
    char text[256];
    assert_int_equal(b64dec("W22ZaJ0SNY7soEsUEjb6gQ==", salt), 16);
    assert_int_equal(pgw_scram_secret_make("pencil", salt, 16, 4096, &s), 0);
    assert_int_equal(pgw_scram_secret_format(&s, text, sizeof(text)), strlen(RFC_VERIFIER));
    assert_string_equal(text, RFC_VERIFIER);
    assert_int_equal(pgw_scram_secret_format(&s, text, 20), PGW_EINVAL);

    /* Random salt, default iterations; round trip through the text. */
    assert_int_equal(pgw_scram_secret_make("pencil", NULL, 0, 0, &s), 0);
    assert_int_equal(s.iterations, 4096);
    assert_int_equal(s.salt_len, 16);
    assert_true(pgw_scram_secret_format(&s, text, sizeof(text)) > 0);
    assert_true(pgw_scram_is_secret(text));
    assert_int_equal(pgw_scram_secret_parse(text, &p), 0);
    assert_memory_equal(&s, &p, sizeof(s));
    assert_true(pgw_scram_verify_plain(&p, "pencil"));
    assert_false(pgw_scram_verify_plain(&p, "Pencil"));
    assert_false(pgw_scram_verify_plain(&p, ""));
    struct pgw_scram_secret other;
    assert_int_equal(pgw_scram_secret_make("pencil", NULL, 0, 0, &other), 0);
    assert_memory_not_equal(other.salt, s.salt, 16);
    assert_int_equal(pgw_scram_secret_make("x", salt, 0, 0, &other), PGW_EINVAL);
    assert_int_equal(pgw_scram_secret_make("x", salt, PGW_SCRAM_MAX_SALT_LEN + 1, 0, &other),
                     PGW_EINVAL);
}

static void test_postgres_verifiers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(pg_verifiers) / sizeof(pg_verifiers[0]); i++) {
        struct pgw_scram_secret s;
        assert_int_equal(pgw_scram_secret_parse(pg_verifiers[i].verifier, &s), 0);
        assert_int_equal(s.iterations, 4096);
        assert_int_equal(s.salt_len, 16);
        if (!pgw_scram_verify_plain(&s, pg_verifiers[i].password))
            fail_msg("%s: the password does not match PostgreSQL's verifier",
                     pg_verifiers[i].what);
        assert_false(pgw_scram_verify_plain(&s, "wrong"));
        char text[256];
        assert_true(pgw_scram_secret_format(&s, text, sizeof(text)) > 0);
        assert_string_equal(text, pg_verifiers[i].verifier);
    }
}

/* What PostgreSQL's parse_scram_secret reads as a verifier is one, usable
 * by pgwharf or not.  A salt over 64 bytes and iterations written "+4096"
 * or "00000004096" did not parse, so the verifier was taken for a
 * plaintext password: its text logged in, the real password did not. */
static void test_verifiers_as_postgresql_reads_them(void **state)
{
    (void)state;
    static const char *const keys =
        "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    static const char *const salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    char text[512];
    struct pgw_scram_secret v;
    struct pgw_scram_server st;
    /* usable: the RFC 7677 verifier ("pencil") with its count spelled otherwise */
    static const char *const counts[] = { "+4096", "00000004096", " 4096", "\t+04096" };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        snprintf(text, sizeof(text), "SCRAM-SHA-256$%s:%s%s", counts[i], salt, keys);
        if (pgw_scram_secret_parse(text, &v) != 0 || v.iterations != 4096)
            fail_msg("count \"%s\" not read as 4096", counts[i]);
        assert_true(pgw_scram_verify_plain(&v, "pencil"));
        assert_int_equal(exchange(text, "user", "pencil", &st), 0);
        pgw_scram_server_deinit(&st);
        assert_int_equal(exchange(text, "user", text, &st), PGW_EAUTH);
        pgw_scram_server_deinit(&st);
    }
    /* verifiers pgwharf cannot use: never a password, no login */
    char long_salt[97];
    memset(long_salt, 'A', 96);
    long_salt[96] = '\0';                          /* 72 bytes */
    static const char *const bad_counts[] = { "0", "-1", "99999999999", "4096" };
    for (size_t i = 0; i < sizeof(bad_counts) / sizeof(bad_counts[0]); i++) {
        bool last = i + 1 == sizeof(bad_counts) / sizeof(bad_counts[0]);
        snprintf(text, sizeof(text), "SCRAM-SHA-256$%s:%s%s", bad_counts[i],
                 last ? long_salt : salt, keys);
        if (pgw_scram_secret_parse(text, &v) != PGW_EUNSUPPORTED || !pgw_scram_is_secret(text))
            fail_msg("not an unusable verifier: %s", text);
        assert_int_equal(exchange(text, "user", text, &st), PGW_EAUTH);
        assert_string_equal(st.sqlstate, "28P01");
        assert_non_null(strstr(st.error, "cannot use"));
        pgw_scram_server_deinit(&st);
        assert_int_equal(exchange(text, "user", "pencil", &st), PGW_EAUTH);
        pgw_scram_server_deinit(&st);
    }
}

static void test_secret_parse_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "md5fd3b5f9ec3ba7e9bbd4d7e5d1b6f1b20",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4x96:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        /* strtol's: trailing blank, no digits, beyond a long (ERANGE) */
        "SCRAM-SHA-256$4096 :W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$+:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$99999999999999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2d=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU= ",
        "SCRAM-SHA-256$4096:W22Z=J0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pgw_scram_secret s;
        if (pgw_scram_secret_parse(bad[i], &s) != PGW_EINVAL)
            fail_msg("accepted bad verifier %zu: %s", i, bad[i]);
    }
    /* Every prefix of a good one is bad. */
    for (size_t len = 0; len < strlen(RFC_VERIFIER); len++) {
        char buf[256];
        struct pgw_scram_secret s;
        snprintf(buf, sizeof(buf), "%.*s", (int)len, RFC_VERIFIER);
        assert_int_equal(pgw_scram_secret_parse(buf, &s), PGW_EINVAL);
    }
}

/* ---- SASLprep ---- */

static void test_saslprep(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        enum pgw_saslprep_rc rc;
        const char *out;
    } cases[] = {
        { "plain ascii", PGW_SASLPREP_OK, "plain ascii" },
        { "ctl\x01ok", PGW_SASLPREP_OK, "ctl\x01ok" },          /* ASCII: untouched */
        { "", PGW_SASLPREP_OK, "" },
        { "I\xC2\xADX", PGW_SASLPREP_OK, "IX" },                  /* soft hyphen */
        { "a\xC2\xA0" "b", PGW_SASLPREP_OK, "a b" },              /* no-break space */
        { "a\xE2\x80\x8B" "b", PGW_SASLPREP_OK, "a b" },          /* U+200B: a space first */
        { "\xC2\xAA", PGW_SASLPREP_OK, "a" },
        { "x\xC2\xB2", PGW_SASLPREP_OK, "x2" },
        { "\xE2\x85\xA8", PGW_SASLPREP_OK, "IX" },                 /* roman numeral IX */
        { "\xE2\x91\xA0", PGW_SASLPREP_OK, "1" },                  /* circled digit one */
        { "x\xEF\xAC\x81", PGW_SASLPREP_OK, "xfi" },               /* fi ligature */
        { "\xE2\x84\xA2", PGW_SASLPREP_OK, "TM" },                 /* trade mark sign */
        { "\xE3\x8C\x80", PGW_SASLPREP_OK,                         /* square apaato */
          "\xE3\x82\xA2\xE3\x83\x91\xE3\x83\xBC\xE3\x83\x88" },
        { "a\xE3\x80\x80" "b", PGW_SASLPREP_OK, "a b" },           /* ideographic space */
        { "\xEF\xBC\xA1\xEF\xBD\x9E", PGW_SASLPREP_OK, "A~" },    /* fullwidth */
        { "\xC2\xB5", PGW_SASLPREP_OK, "\xCE\xBC" },              /* micro sign */
        { "\xC3\xA9t\xC3\xA9", PGW_SASLPREP_OK, "\xC3\xA9t\xC3\xA9" },
        { "e\xCC\x81", PGW_SASLPREP_OK, "\xC3\xA9" },             /* e + combining acute */
        { "\xCE\xB9\xCC\x88\xCC\x81", PGW_SASLPREP_OK, "\xCE\x90" }, /* iota, diaeresis, acute */
        { "\xEF\xBC\xA5\xCC\x81x", PGW_SASLPREP_OK, "\xC3\x89x" },   /* fullwidth E + acute */
        { "\xE3\x81\x8B\xE3\x82\x99", PGW_SASLPREP_OK, "\xE3\x81\x8C" }, /* ka + voiced mark */
        { "I\xC2\xAD\xCC\x81", PGW_SASLPREP_OK, "\xC3\x8D" },        /* soft hyphen between */
        { "e\xCC\x81\xCC\x81", PGW_SASLPREP_OK, "\xC3\xA9\xCC\x81" }, /* a second acute */
        { "x\xCC\x81", PGW_SASLPREP_OK, "x\xCC\x81" },            /* no such composition */
        { "\xC2\xAA\xCC\x81", PGW_SASLPREP_OK, "\xC3\xA1" },     /* after a compatibility map */
        { "\xCC\x81", PGW_SASLPREP_OK, "\xCC\x81" },              /* a mark alone */
        { "q\xCC\x87\xCC\xA3", PGW_SASLPREP_OK, "q\xCC\xA3\xCC\x87" }, /* dot below first */
        { "s\xCC\x87\xCC\xA3", PGW_SASLPREP_OK, "\xE1\xB9\xA9" }, /* ... then both compose */
        { "a\xCC\x87\xCC\xA3", PGW_SASLPREP_OK, "\xE1\xBA\xA1\xCC\x87" }, /* one does */
        { "\xE1\xBA\x9B\xCC\xA3", PGW_SASLPREP_OK, "\xE1\xB9\xA9" }, /* long s, dots */
        { "\xE0\xA5\x98", PGW_SASLPREP_OK, "\xE0\xA4\x95\xE0\xA4\xBC" }, /* excluded */
        { "\xCD\x84", PGW_SASLPREP_OK, "\xCC\x88\xCC\x81" },      /* non-starter decomp. */
        { "\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", PGW_SASLPREP_OK, "\xEA\xB0\x81" }, /* jamo */
        { "\xEA\xB0\x80\xE1\x86\xA8", PGW_SASLPREP_OK, "\xEA\xB0\x81" }, /* LV + T */
        { "\xED\x95\x9C\xEA\xB5\xAD", PGW_SASLPREP_OK, "\xED\x95\x9C\xEA\xB5\xAD" },
        { "\xD7\x90" "1" "\xD7\x91", PGW_SASLPREP_OK, "\xD7\x90" "1" "\xD7\x91" }, /* bidi ok */
        { "\xD8\xA7\xD9\xA1\xD8\xA8", PGW_SASLPREP_OK, "\xD8\xA7\xD9\xA1\xD8\xA8" },
        { "\xD7\x90" "a", PGW_SASLPREP_PROHIBITED, NULL },         /* RandALCat with LCat */
        { "\xD7\x90" "1", PGW_SASLPREP_PROHIBITED, NULL },         /* RandALCat not last */
        { "1\xD7\x90", PGW_SASLPREP_PROHIBITED, NULL },            /* RandALCat not first */
        { "\xC2\xAD", PGW_SASLPREP_PROHIBITED, NULL },             /* maps to nothing */
        { "\xC3\xA9\xC2\x85", PGW_SASLPREP_PROHIBITED, NULL },    /* C1 control U+0085 */
        { "\xC3\xA9\x07", PGW_SASLPREP_PROHIBITED, NULL },        /* control character */
        { "\xC3\xA9\xEE\x80\x80", PGW_SASLPREP_PROHIBITED, NULL },/* private use */
        { "\xE2\x80\x8E\xC3\xA9", PGW_SASLPREP_PROHIBITED, NULL },/* LRM */
        { "\xC2\xAD\xEF\xBB\xBF", PGW_SASLPREP_PROHIBITED, NULL },/* maps to nothing */
        { "\xE2\x85\xA8\x01", PGW_SASLPREP_PROHIBITED, NULL },    /* prohibited wins */
        { "\xC3", PGW_SASLPREP_INVALID_UTF8, NULL },
        { "\xC0\xAF", PGW_SASLPREP_INVALID_UTF8, NULL },          /* overlong */
        { "\xED\xA0\x80", PGW_SASLPREP_INVALID_UTF8, NULL },      /* surrogate */
        { "\xF4\x90\x80\x80", PGW_SASLPREP_INVALID_UTF8, NULL },  /* > U+10FFFF */
        { "\xFF", PGW_SASLPREP_INVALID_UTF8, NULL },
        { "\xE5\xAF\x86\xE7\xA0\x81", PGW_SASLPREP_OK, "\xE5\xAF\x86\xE7\xA0\x81" },
        { "\xE9\xBE\xA6", PGW_SASLPREP_PROHIBITED, NULL },        /* U+9FA6: after Unicode 3.2 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *out = (char *)"untouched";
        enum pgw_saslprep_rc rc = pgw_saslprep(cases[i].in, &out);
        if (rc != cases[i].rc)
            fail_msg("case %zu: rc %d, expected %d", i, rc, cases[i].rc);
        if (cases[i].out) {
            assert_non_null(out);
            assert_string_equal(out, cases[i].out);
        } else {
            assert_null(out);
        }
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_exchange),
        cmocka_unit_test(test_rfc7677_wrong_proof),
        cmocka_unit_test(test_postgres_verifier_exchange),
        cmocka_unit_test(test_plaintext_secret),
        cmocka_unit_test(test_unknown_user_mock),
        cmocka_unit_test(test_unusable_secrets),
        cmocka_unit_test(test_secrets_that_only_look_like_verifiers_are_passwords),
        cmocka_unit_test(test_y_flag_accepted),
        cmocka_unit_test(test_channel_binding_refused),
        cmocka_unit_test(test_channel_binding_plus),
        cmocka_unit_test(test_client_first_malformed),
        cmocka_unit_test(test_client_final_malformed),
        cmocka_unit_test(test_empty_client_nonce),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_random_messages),
        cmocka_unit_test(test_secret_make_and_format),
        cmocka_unit_test(test_postgres_verifiers),
        cmocka_unit_test(test_secret_parse_errors),
        cmocka_unit_test(test_verifiers_as_postgresql_reads_them),
        cmocka_unit_test(test_saslprep),
        cmocka_unit_test(test_made_verifier_cache),
        cmocka_unit_test(test_made_verifier_cache_holds_256_users),
        cmocka_unit_test(test_salt_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
