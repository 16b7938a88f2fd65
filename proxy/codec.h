/*
 * codec.h - pure parsers for the bytes clients send before and around the
 * relay: the startup packet (StartupMessage, SSLRequest, GSSENCRequest,
 * CancelRequest) and the password message.  Functions over buffers, no I/O,
 * fuzzable (tests/fuzz).  Internal to proxy/ (and its tests).
 */
#ifndef PGW_PROXY_CODEC_H
#define PGW_PROXY_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum pgw_startup_kind {
    PGW_STARTUP_V3,          /* StartupMessage 3.x */
    PGW_STARTUP_SSL,
    PGW_STARTUP_GSSENC,
    PGW_STARTUP_CANCEL,
    PGW_STARTUP_BAD          /* see .error */
};

#define PGW_STARTUP_MAX_PARAMS 128   /* PostgreSQL has none but the packet's 10000 bytes */
#define PGW_NAME_MAX 63          /* NAMEDATALEN - 1: PostgreSQL cuts a user name there */

struct pgw_startup {
    enum pgw_startup_kind kind;
    uint32_t version;        /* the requested protocol version */
    uint32_t cancel_pid, cancel_key;
    /* V3: parameters, pointers into the packet (must outlive this). */
    const char *user, *database;
    int nparams;
    const char *names[PGW_STARTUP_MAX_PARAMS];
    const char *values[PGW_STARTUP_MAX_PARAMS];
    /* "_pq_." protocol options the client asked for (for NegotiateProtocolVersion). */
    int nprotoopts;
    const char *protoopts[PGW_STARTUP_MAX_PARAMS];
    const char *error;       /* BAD: why */
    const char *sqlstate;    /* BAD: PostgreSQL's for it (08P01 but for a missing user
                              * name, 28000, and a protocol it lacks, 0A000) */
    char errbuf[96];         /* error's text, when made here */
};

/*
 * How many bytes the first packet needs: 0 when fewer than 4 bytes are in,
 * the declared length when it is sane (8..PGW_STARTUP_MAX), or -1 when the
 * length field is out of range.
 */
long pgw_startup_need(const uint8_t *buf, size_t len);

/* Parse a whole first packet (len = its declared length).  Always fills
 * out; returns 0, or PGW_EPROTO with out->kind = PGW_STARTUP_BAD. */
int pgw_startup_parse(const uint8_t *pkt, size_t len, struct pgw_startup *out);

/* A whole frontend message in buf: returns its total size (type + length)
 * when complete, 0 when more bytes are needed, -1 when the length field is
 * invalid (< 4 or > max). */
long pgw_msg_complete(const uint8_t *buf, size_t len, uint32_t max);

/*
 * The "options" startup parameter (libpq's PGOPTIONS), read as PostgreSQL
 * reads it (pg_split_opts, then its command-line switches): words split at
 * white space, a backslash taking the next character as it is (an escaped
 * space stays in its word, "\\" is one backslash, a backslash at the very
 * end is dropped).  The switches that set a parameter, "-c name=value",
 * "-cname=value" and "--name=value", call fn(arg, name, value), the name
 * with '-' read as '_' as PostgreSQL does.  Every other word (another
 * switch, a name without "=value", a bare word, anything after "--") calls
 * fn(arg, NULL, why).  fn returns 0 to go on; anything else stops the
 * split and is returned.  Returns 0, fn's return or PGW_ENOMEM.  Pure: no
 * I/O, one allocation the size of options.
 */
typedef int (*pgw_startup_option_fn)(void *arg, const char *name, const char *value);
int pgw_startup_options(const char *options, pgw_startup_option_fn fn, void *arg);

/*
 * A login's DateStyle given twice (in options and on its own, or twice in
 * options), as PostgreSQL applies one after the other (check_datestyle):
 * a value of one part keeps the other part of the value before it
 * ("German" then "SQL" is "SQL, DMY"), and "German" sets DMY too unless
 * its own value names an order.  The two combined into out, canonical
 * ("SQL, DMY"; one part alone when neither names the other).  false when
 * either holds what is not read here (DEFAULT but as next alone, which
 * keeps prev; quotes, a word PostgreSQL refuses, two styles or two
 * orders): the caller keeps next as it is
 * (and the login's check refuses what PostgreSQL would).  Pure.
 */
bool pgw_datestyle_merge(const char *prev, const char *next, char *out, size_t outlen);

/*
 * The delimiter for value as a dollar-quoted string literal: "$pgw$", or
 * "$pgw1$", "$pgw2$", ... when value would end an earlier one (it holds
 * "$pgw$", or ends in "$pgw", which the closing delimiter completes).  No
 * escapes: the literal reads the same whatever standard_conforming_strings
 * or backslash_quote say, and whatever the client's client_encoding (no
 * character of a client-only encoding has a '$' byte, where 0x5C, a
 * backslash, is the second byte of many SJIS, BIG5, GBK ... characters).
 * tag holds PGW_DOLLAR_TAG_MAX bytes.
 */
#define PGW_DOLLAR_TAG_MAX 16
void pgw_dollar_tag(const char *value, char tag[PGW_DOLLAR_TAG_MAX]);

/*
 * A simple Query's text that is one LISTEN or UNLISTEN statement and
 * nothing else: "LISTEN name", "UNLISTEN name" or "UNLISTEN *", keywords
 * in any case, white space around, one optional ';' at the end.  The
 * channel goes to chan as PostgreSQL names it: an unquoted name with its
 * ASCII letters lowered, a quoted one as written ("" read as one quote),
 * a U&"..." one [UESCAPE 'c'] with its escapes decoded (to UTF-8); one
 * longer than PGW_CHANNEL_MAX bytes cut as PostgreSQL's
 * truncate_identifier cuts it, whatever its length: to PGW_CHANNEL_MAX
 * bytes when ASCII, else (sql in UTF-8) where clip says the database's
 * encoding cuts it (pg_mbcliplen there; NULL: unknown).  full (NULL: not
 * wanted) then says whether it was cut and holds the whole name, which
 * PostgreSQL's NOTICE 42622 names (pgw_ident_full_free).  Anything else
 * -- comments, several statements, a longer name not ASCII that clip
 * does not cut, an empty quoted name, an escape PostgreSQL refuses -- is
 * PGW_LISTEN_NONE: the server reads it.  sql is len bytes, no NUL among
 * them.  Pure but for malloc (a name over 63 bytes is kept whole while
 * read).
 */
#define PGW_CHANNEL_MAX 63             /* bytes in the database's encoding */
/* The same name in UTF-8, as the listening server reads it: a byte of
 * any server encoding PostgreSQL has is at most 3 bytes of UTF-8. */
#define PGW_CHANNEL_UTF8_MAX (3 * PGW_CHANNEL_MAX)
struct pgw_ident_full {
    bool cut;                          /* longer than PostgreSQL keeps */
    char *name;                        /* when cut: the whole name (malloc'd) */
};
void pgw_ident_full_free(struct pgw_ident_full *full);
/* Where a database cuts a name of n bytes (UTF-8, not ASCII, longer than
 * PGW_CHANNEL_MAX): the length of its longest prefix of whole characters
 * that fits in PGW_CHANNEL_MAX bytes of the database's encoding (n when
 * it all fits), at most PGW_CHANNEL_UTF8_MAX; -1 when not known (a
 * character the encoding lacks, bad UTF-8). */
struct pgw_ident_clip {
    ssize_t (*clip)(const void *arg, const char *name, size_t n);
    const void *arg;
};
extern const struct pgw_ident_clip pgw_ident_clip_utf8;   /* a UTF8 database */

/*
 * How many of the n bytes of a name-like setting's value (application_name)
 * PostgreSQL keeps in a database of the given encoding: all when n <=
 * PGW_NAME_MAX, else PGW_NAME_MAX at most, not splitting a character
 * (truncate_identifier's pg_mbcliplen, which reads each character's length
 * from its first byte and trusts it).  -1 for an encoding whose characters
 * it does not know (MULE_INTERNAL) or none given.
 */
ssize_t pgw_name_cliplen(const char *v, size_t n, const char *server_encoding);
enum pgw_listen_kind { PGW_LISTEN_NONE, PGW_LISTEN, PGW_UNLISTEN, PGW_UNLISTEN_ALL };
enum pgw_listen_kind pgw_listen_parse(const char *sql, size_t len,
                                      const struct pgw_ident_clip *clip,
                                      char chan[PGW_CHANNEL_UTF8_MAX + 1],
                                      struct pgw_ident_full *full);

/*
 * A simple Query's text that is one "DEALLOCATE [PREPARE] name" and nothing
 * else (white space and one ';' as for pgw_listen_parse): true, with the
 * name as PostgreSQL reads it (unquoted lowered, quoted as written, U&
 * decoded, one over PGW_CHANNEL_MAX bytes cut as pgw_listen_parse cuts a
 * channel's, with clip, full -- NULL: not wanted -- then set as there, for
 * the NOTICE 42622 PostgreSQL's scanner sends).  false for DEALLOCATE ALL,
 * a name pgwharf does not read, anything else.  Pure.
 */
bool pgw_deallocate_parse(const char *sql, size_t len, const struct pgw_ident_clip *clip,
                          char name[PGW_CHANNEL_UTF8_MAX + 1], struct pgw_ident_full *full);

/*
 * SQL prepared statements (server_reset_session_state keeps the words of
 * those that may leave a temporary table, relay.c stmt_sql_*).  A name is
 * read as PostgreSQL reads it (unquoted lowered, quoted as written, U&
 * decoded, cut to PGW_NAME_MAX bytes): PGW_SQL_NAME_READ when it is ASCII
 * (a name of other characters may be cut or converted otherwise by the
 * server), PGW_SQL_NAME_UNREAD for one pgwharf does not read so.
 *
 * pgw_prepare_parse: the statement sql[0..len) (one, as
 * pgw_sql_statement_end splits them) is "PREPARE name ..." (not PREPARE
 * TRANSACTION): READ with the name, *rest the offset past it (the types
 * and the statement prepared), or UNREAD (*rest: past PREPARE); NONE for
 * any other statement.  pgw_sql_execute_next: the next word EXECUTE of
 * sql[*at..len) (any case, a word of its own, read as the relay's word scan
 * reads one: in a literal or comment too) that a name follows (white space
 * and comments between): READ or UNREAD, *at past it; NONE when no more.
 * Pure.
 */
enum pgw_sql_name_kind { PGW_SQL_NAME_NONE, PGW_SQL_NAME_READ, PGW_SQL_NAME_UNREAD };
enum pgw_sql_name_kind pgw_prepare_parse(const char *sql, size_t len,
                                         char name[PGW_NAME_MAX + 1], size_t *rest);
enum pgw_sql_name_kind pgw_sql_execute_next(const char *sql, size_t len, size_t *at,
                                            char name[PGW_NAME_MAX + 1]);

/*
 * A savepoint statement's kind and name: "SAVEPOINT name", "RELEASE
 * [SAVEPOINT] name", "ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name"
 * (name read as by pgw_listen_parse; "" when it is one pgwharf does not
 * read, or more follows), or PGW_SP_ROLLBACK for any other text starting
 * with ROLLBACK (of the whole transaction).  Pure.
 * pgw_sp_may_be: the first n bytes of a text could start one.
 */
enum pgw_sp_kind { PGW_SP_NONE, PGW_SP_SAVE, PGW_SP_RELEASE, PGW_SP_ROLLBACK_TO,
                   PGW_SP_ROLLBACK };
enum pgw_sp_kind pgw_sp_parse(const char *sql, size_t len, char name[PGW_CHANNEL_MAX + 1]);
bool pgw_sp_may_be(const char *sql, size_t n);
/* Could the first n bytes of sql (after white space) start with one of the
 * nkw upper-case keywords kw, in any case, or be a prefix of one? */
bool pgw_sql_may_start(const char *sql, size_t n, const char *const *kw, int nkw);

/* The length of the comment p[0..n) starts with (-- to a line's end, not
 * the LF or CR that ends it; or a nested block comment, cut short at n),
 * 0 when it starts with none. */
size_t pgw_sql_comment_len(const char *p, size_t n);

/* Where the first statement of sql[0..len) ends: the offset of the ';'
 * that ends it, outside string literals, quoted names, dollar quotes and
 * comments (as PostgreSQL's scanner, with standard_conforming_strings on),
 * or len when none does. */
size_t pgw_sql_statement_end(const char *sql, size_t len);

/* pgw_sql_statement_end over a text that comes in pieces (a Query larger
 * than the relay's buffer, read as it streams through): the scanner
 * carries what it is inside of (a literal, a quoted name, a comment, a
 * dollar quote) from one piece to the next.  init before the first piece
 * of each statement; feed returns the offset in p of the ';' that ends
 * the statement, or n when none does in this piece (the caller inits
 * again and feeds what follows the ';').  A dollar quote's tag longer
 * than PGW_SQL_TAG_MAX bytes cannot be matched: lost is set, and no ';'
 * ends the statement from there on. */
#define PGW_SQL_TAG_MAX 128
struct pgw_sql_scan {
    uint8_t state;                   /* what it is inside of */
    unsigned char pend;              /* a character whose meaning the next one decides */
    bool esc;                        /* an E'' literal: backslash escapes */
    bool lost;
    unsigned char prev, prev2;       /* the last two characters of the statement */
    uint32_t depth;                  /* comments nest */
    uint16_t taglen, match;          /* a dollar quote's tag, and how much of it came */
    char tag[PGW_SQL_TAG_MAX];
};
void pgw_sql_scan_init(struct pgw_sql_scan *sc);
size_t pgw_sql_scan_feed(struct pgw_sql_scan *sc, const char *p, size_t n);

#endif
