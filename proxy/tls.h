/*
 * tls.h - TLS on client connections (internal to proxy/).
 *
 * The proxy builds one SSL_CTX from the client_tls_* settings at startup
 * and on reload (pgw_tls_ctx_build); a session that sent SSLRequest and got
 * 'S' owns an SSL object (s->ssl) driven without blocking on the session's
 * own cli_r/cli_w watchers.  session.c calls in at three places only:
 *   cli_read/cli_write    pgw_tls_read/pgw_tls_write when s->ssl is set
 *   client_*_cb           pgw_tls_readable/pgw_tls_writable when s->ssl is set
 *                         (handshake, a read that needs writability, a write
 *                         that needs readability)
 *   pgw_session_close     pgw_tls_close: best-effort close_notify, SSL_free
 * Bytes OpenSSL has already decrypted (SSL_pending) do not make the socket
 * readable: a per-session ev_prepare (s->tls_pending) reads them as soon as
 * cli_r is active again.
 */
#ifndef PGW_PROXY_TLS_H
#define PGW_PROXY_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "conf/conf.h"

struct pgw_session;
struct ssl_ctx_st;

/* s->tls_flags */
#define PGW_TLS_HANDSHAKE        0x01u   /* SSL_accept not finished */
#define PGW_TLS_READ_WANTS_WRITE 0x02u   /* retry the read when writable */
#define PGW_TLS_WRITE_WANTS_READ 0x04u   /* retry the write when readable */
#define PGW_TLS_BROKEN           0x08u   /* fatal TLS error: no close_notify */

/* ---- configuration (pure, no session) ---- */

/* Bits for TLS 1.0 .. 1.3. */
#define PGW_TLS_V1_0 0x1u
#define PGW_TLS_V1_1 0x2u
#define PGW_TLS_V1_2 0x4u
#define PGW_TLS_V1_3 0x8u

/* PgBouncer's client_tls_protocols syntax: a list (commas, colons or
 * blanks) of tlsv1.0 (or tlsv1), tlsv1.1, tlsv1.2, tlsv1.3, all, secure
 * (= default: tlsv1.2,tlsv1.3) and legacy (= all); "!name" takes one
 * away.  Returns 0 with *mask set, or PGW_ECONFIG with a message. */
int pgw_tls_protocols_parse(const char *text, unsigned *mask, char *err, size_t errlen);
/* PgBouncer's cipher aliases (default/secure, fast, normal/compat,
 * legacy, all/insecure) as OpenSSL cipher strings; anything else is
 * returned as given (an OpenSSL cipher string). */
const char *pgw_tls_ciphers_resolve(const char *text);

/* The SSL_CTX for client connections from cfg: *out NULL when
 * client_tls_sslmode is disable.  Returns 0, or PGW_ECONFIG with a
 * message naming the setting and file at fault. */
int pgw_tls_ctx_build(const struct pgw_config *cfg, struct ssl_ctx_st **out, char *err,
                      size_t errlen);
void pgw_tls_ctx_free(struct ssl_ctx_st *ctx);
/* The server_tls_* settings libpq will be given, read now: the protocol
 * list parses, the CA file has certificates, the certificate and key load
 * and match (each only when set; libpq reads them at every connect, so a
 * bad one would fail them all).  Returns 0, or PGW_ECONFIG with a message
 * naming the setting and file at fault. */
int pgw_tls_server_check(const struct pgw_config *cfg, char *err, size_t errlen);

/* ---- sessions ---- */

/* Would an SSLRequest from this session get 'S'? */
bool pgw_tls_offered(const struct pgw_session *s);
/* 'S' has been sent: make s->ssl and start the handshake.  May close s. */
void pgw_tls_accept(struct pgw_session *s);
/* Watcher events while s->ssl is set.  May close s. */
void pgw_tls_readable(struct pgw_session *s);
void pgw_tls_writable(struct pgw_session *s);
/* read(2)/write(2) alike: > 0 bytes, 0 on EOF (read), -1 with errno
 * (EAGAIN: wait; the right watcher is armed for a TLS retry). */
ssize_t pgw_tls_read(struct pgw_session *s, void *buf, size_t n);
ssize_t pgw_tls_write(struct pgw_session *s, const void *buf, size_t n);
/* Bytes OpenSSL holds decrypted for s, unread (0 without TLS). */
size_t pgw_tls_pending(const struct pgw_session *s);
/* Best-effort close_notify, free s->ssl, stop the pending watcher. */
void pgw_tls_close(struct pgw_session *s);

/* The verified client certificate's common name into buf.  false with
 * *why set when there is no verified certificate or no usable CN. */
bool pgw_tls_peer_cn(const struct pgw_session *s, char *buf, size_t len, const char **why);
/* The tls-server-end-point channel binding data of the connection (RFC
 * 5929): the hash of pgwharf's certificate with its signature's digest
 * (SHA-256 for MD5 and SHA-1).  Returns its length, 0 without TLS or when
 * the signature names no single digest (Ed25519: no binding then). */
size_t pgw_tls_server_end_point(const struct pgw_session *s, unsigned char *out, size_t size);
/* "TLSv1.3/TLS_AES_256_GCM_SHA384" (or "" without TLS), for SHOW CLIENTS
 * and logs. */
const char *pgw_tls_describe(const struct pgw_session *s, char *buf, size_t len);

#endif
