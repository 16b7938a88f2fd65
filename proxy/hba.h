/*
 * hba.h - auth_hba_file: which authentication method a connection gets,
 * in PostgreSQL's pg_hba.conf syntax.  Pure: parsing and matching, no I/O
 * but reading the file.
 *
 * One rule per line, fields separated by blanks, '#' to the end of the line
 * a comment, '\' at the end of a line continues it:
 *
 *     local      DATABASE  USER            METHOD [OPTIONS]
 *     host       DATABASE  USER  ADDRESS   METHOD [OPTIONS]
 *     hostssl    ... (also hostnossl, hostgssenc, hostnogssenc)
 *
 * DATABASE and USER are comma-separated lists; "double quotes" keep blanks
 * and commas and take away a keyword's meaning ("all" quoted is a name).
 * Keywords: all; for databases also sameuser, samerole/samegroup and
 * replication; for users a +group prefix.  ADDRESS is `all`, an IPv4 or
 * IPv6 address with /bits, or an address followed by a mask field.
 * METHOD: trust, reject, password, md5, scram-sha-256, cert, peer (local
 * rules only).  Options after the method: map=NAME on peer and cert rules
 * (a user name map of auth_ident_file, below), clientcert=verify-full on
 * cert rules (what cert means anyway).  Any other option is not
 * implemented: the rule rejects instead.
 *
 * What pgwharf cannot evaluate is accepted with a warning and fails closed:
 * samerole and +group (no role membership here), regular expressions (a
 * database or user name starting with '/', PostgreSQL 16's, quoted or
 * not), samehost and samenet, host names, and the methods pgwharf does not
 * implement (ident, ldap, ..., treated as reject).  A rule whose outcome
 * hinges on such an element matches if it is a reject rule and does not
 * match otherwise; a later rule then decides only if it asks for at least
 * as much as the skipped one (the same method, reject, scram-sha-256 after
 * md5, anything after trust), else the connection is rejected.  So a
 * connection PostgreSQL would refuse, or ask a password or certificate of,
 * is never let in with less.
 * A physical replication connection matches only rules whose database is
 * the keyword `replication` (not `all`, not a name); any other connection,
 * a logical replication one included, never matches that keyword -- as in
 * PostgreSQL.
 * hostgssenc never matches (no GSSAPI encryption).  @file in a database or
 * user list reads the names in that file (relative to the including file's
 * directory), as PostgreSQL.
 *
 * An IPv4-mapped IPv6 client address (::ffff:a.b.c.d) also matches IPv4
 * rules.  The first matching rule wins; no match means reject.
 *
 * User name maps (auth_ident_file, pg_ident.conf syntax), one per line:
 *
 *     MAPNAME  SYSTEM-USERNAME  DATABASE-USERNAME
 *
 * A rule with map=NAME lets a client in as DATABASE-USERNAME when a line of
 * map NAME pairs it with the name the method found (the peer's operating
 * system user, the certificate's common name); without map= the two must
 * be equal.  DATABASE-USERNAME may be `all`.  Regular expressions (a name
 * starting with '/', quoted or not, as PostgreSQL reads it) and +group are
 * accepted with a warning and never match (fail closed).
 */
#ifndef PGW_PROXY_HBA_H
#define PGW_PROXY_HBA_H

#include <stdbool.h>
#include <sys/socket.h>

#include "conf/conf.h"

enum pgw_hba_method {
    PGW_HBA_REJECT,
    PGW_HBA_TRUST,
    PGW_HBA_PASSWORD,
    PGW_HBA_MD5,
    PGW_HBA_SCRAM,
    PGW_HBA_CERT,
    PGW_HBA_PEER
};

const char *pgw_hba_method_name(enum pgw_hba_method m);

struct pgw_hba;

/* Parse rules from text; `name` stands for the file in messages (no
 * @file is read: an error; pgw_hba_load reads them).  Returns
 * 0 and sets *out, or PGW_ECONFIG with every problem in diag as
 * "file:line: message" (warnings are listed either way), or PGW_ENOMEM.
 * diag may be NULL. */
int pgw_hba_parse(const char *name, const char *text, struct pgw_hba **out,
                  struct pgw_conf_diag *diag);
/* Read user name maps into hba (replacing any it has). */
int pgw_hba_parse_ident(struct pgw_hba *hba, const char *name, const char *text,
                        struct pgw_conf_diag *diag);
/* The rules at path and, when ident_path is set (non-empty), its maps. */
int pgw_hba_load(const char *path, const char *ident_path, struct pgw_hba **out,
                 struct pgw_conf_diag *diag);
void pgw_hba_free(struct pgw_hba *hba);
int pgw_hba_count(const struct pgw_hba *hba);

/* The method for a connection.  addr is the client's address (ignored when
 * is_unix).  *line is set to the matching rule's line, 0 when none matched
 * (and the answer is PGW_HBA_REJECT).  *map (when map is not NULL) is the
 * rule's map= name, NULL without one; it lives as long as hba. */
enum pgw_hba_method pgw_hba_match(const struct pgw_hba *hba, bool is_unix, bool is_tls,
                                  const struct sockaddr *addr, const char *db, const char *user,
                                  int *line, const char **map);

/* The same for a physical replication connection when physical (the
 * startup parameter replication=true; a logical one matches as any). */
enum pgw_hba_method pgw_hba_match_conn(const struct pgw_hba *hba, bool is_unix, bool is_tls,
                                       bool physical, const struct sockaddr *addr,
                                       const char *db, const char *user, int *line,
                                       const char **map);

/* May the client that the method identified as system_user log in as
 * db_user?  Without a map (NULL), only as itself; with one, when a line of
 * that map allows it (*line is set to that line of auth_ident_file, 0 when
 * none did). */
bool pgw_hba_usermap(const struct pgw_hba *hba, const char *map, const char *system_user,
                     const char *db_user, int *line);

#endif
