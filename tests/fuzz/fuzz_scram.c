/*
 * fuzz_scram.c - the server side of SCRAM-SHA-256 (proxy/scram.h): the
 * client-first and client-final messages a client sends in
 * SASLInitialResponse and SASLResponse, verifier parsing, and SASLprep.
 *
 * Input: client-first, a NUL byte, client-final (no NUL: client-first
 * only).  Each input runs twice: against a known verifier (RFC 7677's
 * "pencil") with a fixed server nonce, so a seed holding the RFC's
 * messages reaches a successful exchange, and as an unknown user (the mock
 * exchange, which must never succeed), and a third time against the verifier
 * with SCRAM-SHA-256-PLUS offered (fixed binding data) and chosen when
 * client-first starts with 'p'.  The whole input is also parsed as
 * a verifier (and a parsed one must survive format + parse unchanged) and
 * SASLprepped.  No PBKDF2 runs per input: plaintext secrets are not used.
 */
#include "common/err.h"
#include "fuzz_util.h"
#include "proxy/scram.h"

#define RFC_VERIFIER                                                         \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"                            \
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"                           \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

static void exchange(const char *secret, const uint8_t *first, size_t first_len,
                     const uint8_t *final, size_t final_len, int has_final, int plus)
{
    static const uint8_t cbind[32] = "0123456789abcdef0123456789abcdef";
    struct pgw_scram_server st;
    if (pgw_scram_server_init(&st, secret, "user") != 0)
        abort();
    if (pgw_scram_server_set_nonce(&st, RFC_SERVER_NONCE) != 0)
        abort();
    if (plus && (pgw_scram_server_offer_plus(&st, cbind, sizeof(cbind)) != 0 ||
                 pgw_scram_server_choose(&st, first_len && first[0] == 'p'
                                                  ? PGW_SCRAM_MECHANISM_PLUS
                                                  : PGW_SCRAM_MECHANISM) != 0))
        abort();
    const char *out = NULL;
    size_t outlen = 0;
    /* Exact-size heap copies: the messages are not NUL-terminated. */
    char *m1 = malloc(first_len ? first_len : 1);
    if (!m1)
        abort();
    memcpy(m1, first, first_len);
    int rc = pgw_scram_server_client_first(&st, m1, first_len, &out, &outlen);
    free(m1);
    if (rc == 0) {
        if (!out || outlen == 0 || memchr(out, 0, outlen))
            abort();
        if (st.stage != PGW_SCRAM_WANT_CLIENT_FINAL)
            abort();
        if (has_final) {
            char *m2 = malloc(final_len ? final_len : 1);
            if (!m2)
                abort();
            memcpy(m2, final, final_len);
            rc = pgw_scram_server_client_final(&st, m2, final_len, &out, &outlen);
            free(m2);
            if (rc == 0) {
                if (!secret || st.doomed)
                    abort();        /* the mock exchange never succeeds */
                if (st.stage != PGW_SCRAM_DONE || !out || outlen == 0)
                    abort();
            } else if (st.stage == PGW_SCRAM_DONE) {
                abort();
            }
        }
    } else {
        if (rc != PGW_EAUTH && rc != PGW_EPROTO && rc != PGW_ENOMEM)
            abort();
        if (rc == PGW_EPROTO && (!st.sqlstate || !st.error[0]))
            abort();
        /* After a failure every further call fails. */
        if (pgw_scram_server_client_final(&st, "c=biws,r=x,p=AAAA", 17, &out, &outlen) == 0)
            abort();
    }
    pgw_scram_server_deinit(&st);
}

static void verifier(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    struct pgw_scram_secret s, t;
    pgw_scram_is_secret(text);
    if (pgw_scram_secret_parse(text, &s) == 0) {
        char buf[256];
        int n = pgw_scram_secret_format(&s, buf, sizeof(buf));
        if (n < 0 || pgw_scram_secret_parse(buf, &t) != 0)
            abort();
        if (s.iterations != t.iterations || s.salt_len != t.salt_len ||
            memcmp(s.salt, t.salt, s.salt_len) != 0 ||
            memcmp(s.stored_key, t.stored_key, sizeof(s.stored_key)) != 0 ||
            memcmp(s.server_key, t.server_key, sizeof(s.server_key)) != 0)
            abort();
    }
    char *prepped = NULL;
    enum pgw_saslprep_rc rc = pgw_saslprep(text, &prepped);
    if ((rc == PGW_SASLPREP_OK) != (prepped != NULL))
        abort();
    fuzz_touch(prepped);
    free(prepped);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t first_len = nul ? (size_t)(nul - data) : size;
    const uint8_t *final = nul ? nul + 1 : data + size;
    size_t final_len = nul ? size - first_len - 1 : 0;
    exchange(RFC_VERIFIER, data, first_len, final, final_len, nul != NULL, 0);
    exchange(NULL, data, first_len, final, final_len, nul != NULL, 0);
    exchange(RFC_VERIFIER, data, first_len, final, final_len, nul != NULL, 1);
    if (size <= 512)
        verifier(data, size);
    return 0;
}
