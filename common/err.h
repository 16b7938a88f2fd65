/*
 * err.h - the one list of pgwharf error codes.
 *
 * Functions return 0 (or a non-negative count) on success and a negative
 * PGW_E* code on failure.  The X-macro below generates both the enum and
 * pgw_strerror(), so a code and its text can never drift apart.  The names
 * say which side failed (client, server, protocol, pool, config).
 */
#ifndef PGW_COMMON_ERR_H
#define PGW_COMMON_ERR_H

#define PGW_ERRORS(X)                                                      \
    X(PGW_OK,             "success")                                       \
    X(PGW_ENOMEM,         "out of memory")                                 \
    X(PGW_EINVAL,         "invalid argument")                              \
    X(PGW_ECANCELED,      "context canceled")                              \
    X(PGW_EDEADLINE,      "context deadline exceeded")                     \
    X(PGW_ECLIENT_READ,   "error reading from client")                     \
    X(PGW_ECLIENT_WRITE,  "error writing to client")                       \
    X(PGW_ECLIENT_EOF,    "client closed the connection")                  \
    X(PGW_ESERVER_READ,   "error reading from server")                     \
    X(PGW_ESERVER_WRITE,  "error writing to server")                       \
    X(PGW_ESERVER_EOF,    "server closed the connection")                  \
    X(PGW_ESERVER_CONNECT,"could not connect to server")                   \
    X(PGW_ESERVER_LOGIN,  "server login failed")                           \
    X(PGW_EPROTO,         "protocol violation")                            \
    X(PGW_ETOOBIG,        "message too large")                             \
    X(PGW_EAUTH,          "authentication failed")                         \
    X(PGW_EBREAKER_OPEN,  "circuit breaker open")                          \
    X(PGW_EPOOL_FULL,     "pool full")                                     \
    X(PGW_ETIMEOUT,       "timeout")                                       \
    X(PGW_ESHUTDOWN,      "shutting down")                                 \
    X(PGW_ECONFIG,        "configuration error")                           \
    X(PGW_EIO,            "input/output error")                            \
    X(PGW_EAGAIN,         "operation would block")                         \
    X(PGW_ENOTFOUND,      "not found")                                     \
    X(PGW_EUNSUPPORTED,   "not supported")

#define PGW_ERR_ENUM_(name, text) name##_,
enum pgw_err_index_ { PGW_ERRORS(PGW_ERR_ENUM_) PGW_ERR_COUNT_ };
#undef PGW_ERR_ENUM_

/* Public codes are negative: PGW_ECANCELED == -3, and so on. */
#define PGW_ERR_DEF_(name, text) static const int name = -(int)name##_;
PGW_ERRORS(PGW_ERR_DEF_)
#undef PGW_ERR_DEF_

/* The text of a code (negative or zero); "unknown error" otherwise. */
const char *pgw_strerror(int err);
/* The symbolic name of a code, e.g. "PGW_ECANCELED". */
const char *pgw_errname(int err);

#endif
