/*
 * tls.c - TLS on client connections: the SSL_CTX built from client_tls_*
 * (at startup and on reload, see proxy.c) and each session's SSL object,
 * driven without blocking on the session's cli_r/cli_w watchers.
 *
 * Owns: the SSL_CTX (held by struct pgw_proxy, refcounted by OpenSSL so
 * sessions that started under an old one keep it), and per session s->ssl,
 * s->tls_flags and the s->tls_pending prepare watcher.
 *
 * Non-blocking rules kept here:
 *   - SSL_read may want writability and SSL_write readability: the flag
 *     PGW_TLS_READ_WANTS_WRITE / PGW_TLS_WRITE_WANTS_READ says which call
 *     to retry when the other watcher fires.
 *   - Decrypted bytes still inside OpenSSL (SSL_pending) never wake cli_r:
 *     s->tls_pending, an ev_prepare, reads them before the loop blocks
 *     whenever cli_r is active (it is stopped while the client buffer is
 *     full, and whoever restarts it needs to know nothing about TLS).
 *   - Close sends close_notify once, best effort, and never waits.
 */
#include "proxy/tls.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/log.h"
#include "proxy/proxy_int.h"

/* ---- configuration ------------------------------------------------------ */

struct proto_name {
    const char *name;
    unsigned mask;
};

static const struct proto_name proto_names[] = {
    { "tlsv1",   PGW_TLS_V1_0 },
    { "tlsv1.0", PGW_TLS_V1_0 },
    { "tlsv1.1", PGW_TLS_V1_1 },
    { "tlsv1.2", PGW_TLS_V1_2 },
    { "tlsv1.3", PGW_TLS_V1_3 },
    { "all",     PGW_TLS_V1_0 | PGW_TLS_V1_1 | PGW_TLS_V1_2 | PGW_TLS_V1_3 },
    { "legacy",  PGW_TLS_V1_0 | PGW_TLS_V1_1 | PGW_TLS_V1_2 | PGW_TLS_V1_3 },
    { "secure",  PGW_TLS_V1_2 | PGW_TLS_V1_3 },
    { "default", PGW_TLS_V1_2 | PGW_TLS_V1_3 },
};

int pgw_tls_protocols_parse(const char *text, unsigned *mask, char *err, size_t errlen)
{
    unsigned on = 0, off = 0;
    const char *p = text ? text : "";
    for (;;) {
        p += strspn(p, ", :\t");
        if (!*p)
            break;
        size_t n = strcspn(p, ", :\t");
        bool neg = *p == '!';
        const char *w = p + neg;
        size_t wn = n - neg;
        unsigned m = 0;
        for (size_t i = 0; i < sizeof(proto_names) / sizeof(proto_names[0]); i++)
            if (strlen(proto_names[i].name) == wn && strncasecmp(proto_names[i].name, w, wn) == 0)
                m = proto_names[i].mask;
        if (!m) {
            snprintf(err, errlen, "unknown TLS protocol \"%.*s\" (expected tlsv1.0, tlsv1.1, "
                     "tlsv1.2, tlsv1.3, all, secure or legacy)", (int)n, p);
            return PGW_ECONFIG;
        }
        if (neg)
            off |= m;
        else
            on |= m;
        p += n;
    }
    if (!on && !off)
        on = PGW_TLS_V1_2 | PGW_TLS_V1_3;      /* empty: the default, secure */
    else if (!on)
        on = PGW_TLS_V1_0 | PGW_TLS_V1_1 | PGW_TLS_V1_2 | PGW_TLS_V1_3;
    *mask = on & ~off;
    if (!*mask) {
        snprintf(err, errlen, "\"%s\" leaves no TLS protocol version enabled", text);
        return PGW_ECONFIG;
    }
    return 0;
}

const char *pgw_tls_ciphers_resolve(const char *text)
{
    static const struct {
        const char *alias, *ciphers;
    } aliases[] = {
        /* forward secrecy and AEAD only */
        { "default",  "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL" },
        { "secure",   "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL" },
        /* the same set, cheapest first */
        { "fast",     "ECDHE+AES128+AESGCM:ECDHE+CHACHA20:ECDHE+AESGCM:DHE+AESGCM:!aNULL" },
        { "normal",   "HIGH:!aNULL" },
        { "compat",   "HIGH:!aNULL" },
        { "legacy",   "HIGH:MEDIUM:!aNULL" },
        { "all",      "ALL:!aNULL:!eNULL" },
        { "insecure", "ALL:!aNULL:!eNULL" },
    };
    if (!text || !*text)
        return aliases[0].ciphers;
    for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
        if (strcasecmp(text, aliases[i].alias) == 0)
            return aliases[i].ciphers;
    return text;
}

/* OpenSSL's first queued error (the root cause), then clears the queue. */
static const char *ossl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, len, "%s", errno ? strerror(errno) : "unknown TLS error");
    } else {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(buf, len, "%s", r);
        else
            ERR_error_string_n(e, buf, len);
    }
    ERR_clear_error();
    return buf;
}

static int ctx_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *fmt, const char *arg)
{
    char why[256];
    char what[400];
    snprintf(what, sizeof(what), fmt, arg);
    snprintf(err, errlen, "%s: %s", what, ossl_reason(why, sizeof(why)));
    SSL_CTX_free(ctx);
    return PGW_ECONFIG;
}

static void set_protocols(SSL_CTX *ctx, unsigned mask)
{
    static const struct {
        unsigned bit;
        int version;
        uint64_t no;
    } v[] = {
        { PGW_TLS_V1_0, TLS1_VERSION,   SSL_OP_NO_TLSv1 },
        { PGW_TLS_V1_1, TLS1_1_VERSION, SSL_OP_NO_TLSv1_1 },
        { PGW_TLS_V1_2, TLS1_2_VERSION, SSL_OP_NO_TLSv1_2 },
        { PGW_TLS_V1_3, TLS1_3_VERSION, SSL_OP_NO_TLSv1_3 },
    };
    int lo = -1, hi = -1;
    for (int i = 0; i < 4; i++) {
        if (mask & v[i].bit) {
            if (lo < 0)
                lo = i;
            hi = i;
        }
    }
    SSL_CTX_set_min_proto_version(ctx, v[lo].version);
    SSL_CTX_set_max_proto_version(ctx, v[hi].version);
    for (int i = lo; i < hi; i++)          /* a hole such as "tlsv1.0,tlsv1.2" */
        if (!(mask & v[i].bit))
            SSL_CTX_set_options(ctx, v[i].no);
}

/* A key file protected by a passphrase: OpenSSL's default would ask for it
 * on the terminal (stdin), holding the loop at a reload until a line came.
 * None is given (the key fails to load); *asked notes that one was wanted. */
static int no_passphrase(char *buf, int size, int rwflag, void *asked)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    if (asked)
        *(bool *)asked = true;
    return 0;
}

/* The key file's error: one that needs a passphrase (asked) says so. */
static int key_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *key_name,
                    const char *cert_name, const char *path, bool asked)
{
    char what[300];
    if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
        snprintf(what, sizeof(what), "%s %%s does not match %s", key_name, cert_name);
        return ctx_fail(ctx, err, errlen, what, path);
    }
    if (asked) {
        snprintf(what, sizeof(what), "%s %%s is protected by a passphrase (not supported: "
                 "give the key without one)", key_name);
        return ctx_fail(ctx, err, errlen, what, path);
    }
    snprintf(what, sizeof(what), "%s %%s", key_name);
    return ctx_fail(ctx, err, errlen, what, path);
}

int pgw_tls_ctx_build(const struct pgw_config *cfg, struct ssl_ctx_st **out, char *err,
                      size_t errlen)
{
    char msg[300];
    unsigned mask;
    *out = NULL;
    if (cfg->client_tls_sslmode == PGW_TLS_DISABLE)
        return 0;
    if (pgw_tls_protocols_parse(cfg->client_tls_protocols, &mask, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "client_tls_protocols: %s", msg);
        return PGW_ECONFIG;
    }
    if (!*cfg->client_tls_key_file || !*cfg->client_tls_cert_file) {
        snprintf(err, errlen, "client_tls_sslmode %s needs client_tls_key_file and "
                 "client_tls_cert_file", pgw_tls_mode_name(cfg->client_tls_sslmode));
        return PGW_ECONFIG;
    }
    bool verify = cfg->client_tls_sslmode >= PGW_TLS_VERIFY_CA;
    if ((verify || cfg->auth_type == PGW_AUTH_CERT) && !*cfg->client_tls_ca_file) {
        snprintf(err, errlen, "%s needs client_tls_ca_file to verify client certificates",
                 verify ? "client_tls_sslmode verify-ca/verify-full" : "auth_type cert");
        return PGW_ECONFIG;
    }

    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return ctx_fail(NULL, err, errlen, "%s", "cannot make a TLS context");
    bool asked = false;
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* The protocol frames its own messages: a peer that vanishes without
     * close_notify is an EOF like any other. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    /* Partial writes and a buffer that moves (compaction) between retries;
     * idle clients hold no TLS buffers. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"pgwharf", 7);
    /* client_tls_dheparams: "none" offers no DHE key exchange (TLS 1.2 and
     * below); "auto" and "legacy" let OpenSSL pick parameters as large as
     * the certificate's key calls for. */
    SSL_CTX_set_dh_auto(ctx, strcasecmp(cfg->client_tls_dheparams, "none") != 0);
    set_protocols(ctx, mask);

    const char *ciphers = pgw_tls_ciphers_resolve(cfg->client_tls_ciphers);
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_ciphers %s", cfg->client_tls_ciphers);
    if (*cfg->client_tls13_ciphers && SSL_CTX_set_ciphersuites(ctx, cfg->client_tls13_ciphers) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls13_ciphers %s", cfg->client_tls13_ciphers);
    /* client_tls_ecdhcurve: "auto" (or empty) keeps OpenSSL's groups;
     * "none" leaves finite-field groups only (no ECDHE); else OpenSSL's
     * list ("prime256v1", "X25519:secp384r1", ...). */
    const char *curve = cfg->client_tls_ecdhcurve;
    if (*curve && strcasecmp(curve, "auto") != 0 &&
        SSL_CTX_set1_groups_list(ctx, strcasecmp(curve, "none") == 0
                                          ? "ffdhe2048:ffdhe3072:ffdhe4096" : curve) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_ecdhcurve %s", curve);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->client_tls_cert_file) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_cert_file %s", cfg->client_tls_cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->client_tls_key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        return key_fail(ctx, err, errlen, "client_tls_key_file", "client_tls_cert_file",
                        cfg->client_tls_key_file, asked);
    if (*cfg->client_tls_ca_file) {
        const char *ca = cfg->client_tls_ca_file;
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
            return ctx_fail(ctx, err, errlen, "client_tls_ca_file %s", ca);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (!names)
            return ctx_fail(ctx, err, errlen, "client_tls_ca_file %s has no CA names", ca);
        SSL_CTX_set_client_CA_list(ctx, names);
        /* With a CA, a certificate is asked for (and must verify when
         * given); verify-ca and verify-full also refuse clients without. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
                                (verify ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    }
    SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);     /* `asked` goes out of scope */
    ERR_clear_error();
    *out = ctx;
    return 0;
}

int pgw_tls_server_check(const struct pgw_config *cfg, char *err, size_t errlen)
{
    char msg[300];
    unsigned mask;
    if (pgw_tls_protocols_parse(cfg->server_tls_protocols, &mask, msg, sizeof(msg)) < 0) {
        snprintf(err, errlen, "server_tls_protocols: %s", msg);
        return PGW_ECONFIG;
    }
    const char *ca = cfg->server_tls_ca_file, *cert = cfg->server_tls_cert_file,
               *key = cfg->server_tls_key_file;
    if (!*ca && !*cert && !*key)
        return 0;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return ctx_fail(NULL, err, errlen, "%s", "cannot make a TLS context");
    /* (libpq is told never to ask either: pool/set.c) */
    bool asked = false;
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
    if (*ca && SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        return ctx_fail(ctx, err, errlen, "server_tls_ca_file %s", ca);
    if (*cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return ctx_fail(ctx, err, errlen, "server_tls_cert_file %s", cert);
    /* libpq refuses, at every connect, a key file others may read or one
     * that is not a regular file: every server login would fail on it.
     * Its rule (fe-secure-openssl.c) goes by the file's owner alone, not
     * by who runs it: 0640 or less when root owns the file (system-wide
     * keys read through a group, by root itself too), 0600 or less for
     * any other owner (the user pgwharf runs as or another: 0640 owned by
     * postgres is refused even to root). */
    struct stat st;
    if (*key && stat(key, &st) == 0) {
        const char *why = NULL;
        if (!S_ISREG(st.st_mode))
            why = "is not a regular file";
        else if (st.st_uid == 0 ? (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0
                                : (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
            why = "has group or world access (libpq refuses it: 0640 or less when owned by "
                  "root, else 0600 or less)";
        if (why) {
            snprintf(err, errlen, "server_tls_key_file %s %s", key, why);
            SSL_CTX_free(ctx);
            return PGW_ECONFIG;
        }
    }
    if (*key && (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
                 (*cert && SSL_CTX_check_private_key(ctx) != 1)))
        return key_fail(ctx, err, errlen, "server_tls_key_file", "server_tls_cert_file", key,
                        asked);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return 0;
}

void pgw_tls_ctx_free(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}

/* ---- sessions ----------------------------------------------------------- */

static void pending_cb(struct ev_loop *loop, ev_prepare *w, int revents);

bool pgw_tls_offered(const struct pgw_session *s)
{
    /* libpq never asks for TLS on a unix socket; PgBouncer answers 'N'. */
    return s->px->tls_ctx && !s->unix_sock && !s->ssl;
}

/* Wait for exactly one direction (the handshake). */
static void watch(struct pgw_session *s, int events)
{
    struct ev_loop *loop = s->px->loop;
    if (events & EV_READ) {
        if (!ev_is_active(&s->cli_r))
            ev_io_start(loop, &s->cli_r);
    } else {
        ev_io_stop(loop, &s->cli_r);
    }
    if (events & EV_WRITE) {
        if (!ev_is_active(&s->cli_w))
            ev_io_start(loop, &s->cli_w);
    } else {
        ev_io_stop(loop, &s->cli_w);
    }
}

static void handshake(struct pgw_session *s)
{
    char why[256];
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        s->tls_flags &= ~PGW_TLS_HANDSHAKE;
        watch(s, EV_READ);
        if (pgw_log_get_level() <= PGW_LOG_DEBUG) {
            char cn[128];
            const char *no;
            pgw_debug("tls", "client=%s tls=%s client_cn=%s", s->addr_text,
                      pgw_tls_describe(s, why, sizeof(why)),
                      pgw_tls_peer_cn(s, cn, sizeof(cn), &no) ? cn : "-");
        }
        /* The startup packet may already sit decrypted inside OpenSSL. */
        pgw_session_read_client(s);
        return;
    }
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        watch(s, EV_READ);
        return;
    case SSL_ERROR_WANT_WRITE:
        watch(s, EV_WRITE);
        return;
    case SSL_ERROR_ZERO_RETURN:          /* EOF, with SSL_OP_IGNORE_UNEXPECTED_EOF */
        s->tls_flags |= PGW_TLS_BROKEN;
        pgw_session_close(s, NULL, "TLS handshake failed: client closed the connection");
        return;
    case SSL_ERROR_SYSCALL:
        s->tls_flags |= PGW_TLS_BROKEN;
        if (ERR_peek_error() == 0) {
            pgw_session_close(s, NULL, "TLS handshake failed: %s",
                              errno ? strerror(errno) : "client closed the connection");
            return;
        }
        break;
    default:
        s->tls_flags |= PGW_TLS_BROKEN;
        break;
    }
    pgw_session_close(s, NULL, "TLS handshake failed: %s", ossl_reason(why, sizeof(why)));
}

void pgw_tls_accept(struct pgw_session *s)
{
    char why[256];
    ERR_clear_error();
    SSL *ssl = SSL_new(s->px->tls_ctx);
    if (!ssl || SSL_set_fd(ssl, s->fd) != 1) {
        SSL_free(ssl);
        pgw_session_close(s, NULL, "cannot start TLS: %s", ossl_reason(why, sizeof(why)));
        return;
    }
    SSL_set_accept_state(ssl);
    s->ssl = ssl;
    s->tls_flags = PGW_TLS_HANDSHAKE;
    ev_prepare_init(&s->tls_pending, pending_cb);
    handshake(s);   /* the ClientHello is usually there already */
}

void pgw_tls_readable(struct pgw_session *s)
{
    if (s->tls_flags & PGW_TLS_HANDSHAKE) {
        handshake(s);
        return;
    }
    if (s->tls_flags & PGW_TLS_WRITE_WANTS_READ) {
        s->tls_flags &= ~PGW_TLS_WRITE_WANTS_READ;
        pgw_session_flush_client(s);
        if (s->state == PGW_SS_CLOSING)
            return;
    }
    pgw_session_read_client(s);
}

void pgw_tls_writable(struct pgw_session *s)
{
    struct ev_loop *loop = s->px->loop;
    unsigned f = s->tls_flags;
    if (f & PGW_TLS_HANDSHAKE) {
        handshake(s);
        return;
    }
    if ((f & PGW_TLS_WRITE_WANTS_READ) && !(f & PGW_TLS_READ_WANTS_WRITE)) {
        ev_io_stop(loop, &s->cli_w);    /* the write waits for readability */
        return;
    }
    pgw_session_flush_client(s);
    if (s->state == PGW_SS_CLOSING || !(s->tls_flags & PGW_TLS_READ_WANTS_WRITE))
        return;
    s->tls_flags &= ~PGW_TLS_READ_WANTS_WRITE;
    pgw_session_read_client(s);
    if (s->state != PGW_SS_CLOSING && !(s->tls_flags & PGW_TLS_READ_WANTS_WRITE) &&
        !s->cli_write_blocked)
        ev_io_stop(loop, &s->cli_w);
}

/* A failed SSL_read/SSL_write as read(2)/write(2) would report it. */
static ssize_t io_failed(struct pgw_session *s, int r, bool reading)
{
    struct ev_loop *loop = s->px->loop;
    int saved = errno;
    char why[256];
    switch (SSL_get_error(s->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        if (!reading) {
            s->tls_flags |= PGW_TLS_WRITE_WANTS_READ;
            if (!ev_is_active(&s->cli_r))
                ev_io_start(loop, &s->cli_r);
        }
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        if (reading) {
            s->tls_flags |= PGW_TLS_READ_WANTS_WRITE;
            if (!ev_is_active(&s->cli_w))
                ev_io_start(loop, &s->cli_w);
        }
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:            /* close_notify */
        if (reading)
            return 0;
        errno = EPIPE;
        return -1;
    case SSL_ERROR_SYSCALL:
        s->tls_flags |= PGW_TLS_BROKEN;
        if (ERR_peek_error() == 0) {
            if (saved == 0 && reading)
                return 0;                  /* EOF without close_notify */
            errno = saved ? saved : EPIPE;
            return -1;
        }
        break;
    default:
        s->tls_flags |= PGW_TLS_BROKEN;
#ifdef SSL_R_UNEXPECTED_EOF_WHILE_READING
        if (reading &&
            ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return 0;
        }
#endif
        break;
    }
    pgw_info("tls_error", "client=%s op=%s reason=%s", s->addr_text, reading ? "read" : "write",
             ossl_reason(why, sizeof(why)));
    errno = EPROTO;
    return -1;
}

ssize_t pgw_tls_read(struct pgw_session *s, void *buf, size_t n)
{
    if (n > INT_MAX)
        n = INT_MAX;
    ERR_clear_error();
    errno = 0;
    int r = SSL_read(s->ssl, buf, (int)n);
    if (r > 0) {
        if (SSL_pending(s->ssl) > 0 && !ev_is_active(&s->tls_pending))
            ev_prepare_start(s->px->loop, &s->tls_pending);
        return r;
    }
    return io_failed(s, r, true);
}

ssize_t pgw_tls_write(struct pgw_session *s, const void *buf, size_t n)
{
    if (s->tls_flags & (PGW_TLS_HANDSHAKE | PGW_TLS_BROKEN)) {
        errno = EPROTO;             /* nothing can go out on this TLS link */
        return -1;
    }
    if (n > INT_MAX)
        n = INT_MAX;
    ERR_clear_error();
    errno = 0;
    int r = SSL_write(s->ssl, buf, (int)n);
    if (r > 0)
        return r;
    return io_failed(s, r, false);
}

/* Before the loop blocks: read what OpenSSL holds decrypted while the
 * session wants input.  Each round either consumes pending bytes or finds
 * the client buffer full (and cli_r stopped), so it ends. */
static void pending_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct pgw_session *s = pgw_container_of(w, struct pgw_session, tls_pending);
    while (s->ssl && SSL_pending(s->ssl) > 0) {
        if (!ev_is_active(&s->cli_r) || s->state == PGW_SS_CLOSING)
            return;                  /* backpressure: wait until reading resumes */
        pgw_session_read_client(s);
    }
    if (s->ssl)
        ev_prepare_stop(loop, w);
}

size_t pgw_tls_pending(const struct pgw_session *s)
{
    if (!s->ssl || (s->tls_flags & PGW_TLS_HANDSHAKE))
        return 0;
    int n = SSL_pending(s->ssl);
    return n > 0 ? (size_t)n : 0;
}

void pgw_tls_close(struct pgw_session *s)
{
    SSL *ssl = s->ssl;
    if (!ssl)
        return;
    ev_prepare_stop(s->px->loop, &s->tls_pending);
    if (!(s->tls_flags & (PGW_TLS_HANDSHAKE | PGW_TLS_BROKEN))) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl);     /* close_notify if the socket takes it; no waiting */
    }
    ERR_clear_error();
    SSL_free(ssl);
    s->ssl = NULL;
    s->tls_flags = 0;
}

size_t pgw_tls_server_end_point(const struct pgw_session *s, unsigned char *out, size_t size)
{
    X509 *cert = s->ssl ? SSL_get_certificate(s->ssl) : NULL;
    int md_nid = NID_undef;
    unsigned int len = 0;
    unsigned char hash[EVP_MAX_MD_SIZE];
    if (!cert || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL))
        return 0;
    if (md_nid == NID_md5 || md_nid == NID_sha1)
        md_nid = NID_sha256;
    const EVP_MD *md = md_nid == NID_undef ? NULL : EVP_get_digestbynid(md_nid);
    if (!md || !X509_digest(cert, md, hash, &len) || len > size)
        return 0;
    memcpy(out, hash, len);
    return len;
}

bool pgw_tls_peer_cn(const struct pgw_session *s, char *buf, size_t len, const char **why)
{
    if (!s->ssl) {
        *why = "the connection does not use TLS";
        return false;
    }
    X509 *cert = SSL_get1_peer_certificate(s->ssl);
    if (!cert) {
        *why = "no client certificate was presented";
        return false;
    }
    bool ok = false;
    X509_NAME *name = X509_get_subject_name(cert);
    int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (SSL_get_verify_result(s->ssl) != X509_V_OK) {
        *why = "the client certificate was not verified";
    } else if (i < 0) {
        *why = "the client certificate has no common name";
    } else if (X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0) {
        *why = "the client certificate has more than one common name";
    } else {
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
        if (n < 0 || (size_t)n >= len || memchr(utf8, 0, (size_t)n)) {
            *why = "the client certificate's common name is unusable";
        } else {
            memcpy(buf, utf8, (size_t)n);
            buf[n] = '\0';
            ok = true;
        }
        OPENSSL_free(utf8);
    }
    X509_free(cert);
    ERR_clear_error();
    return ok;
}

const char *pgw_tls_describe(const struct pgw_session *s, char *buf, size_t len)
{
    if (!s->ssl || (s->tls_flags & PGW_TLS_HANDSHAKE)) {
        snprintf(buf, len, "%s", "");
        return buf;
    }
    snprintf(buf, len, "%s/%s", SSL_get_version(s->ssl), SSL_get_cipher_name(s->ssl));
    return buf;
}
