/*
 * pgenc.h - text in a client's client_encoding, for what pgwharf itself
 * writes to or reads from a client in UTF-8 (the LISTEN/NOTIFY fan-out's
 * listening server speaks UTF-8 to every client's channels).
 *
 * PostgreSQL's encoding names (as a server reports client_encoding: UTF8,
 * LATIN1, WIN1252, SJIS...) map to iconv's; converters are opened once per
 * encoding and kept in a set the caller owns (one per proxy: no global
 * state).  Every client encoding PostgreSQL knows is ASCII-compatible, so
 * ASCII text needs no conversion.
 */
#ifndef PGW_COMMON_PGENC_H
#define PGW_COMMON_PGENC_H

#include <iconv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Do a and b name the same encoding as PostgreSQL reads a name
 * (clean_encoding_name): by its letters and digits only, in any case --
 * "utf-8" is UTF8, "latin_1" LATIN1.  Aliases (UNICODE, WIN) are not known. */
bool pgw_pgenc_same_name(const char *a, const char *b);

/* iconv's name for PostgreSQL's encoding pg (read as pgw_pgenc_same_name
 * does); NULL when text in
 * it is UTF-8's bytes as they are (UTF8, SQL_ASCII, which PostgreSQL does
 * not convert) or when there is no converter for it (MULE_INTERNAL, a
 * name PostgreSQL does not know). */
const char *pgw_pgenc_iconv_name(const char *pg);

/* Code point c (at most 0x10FFFF) as UTF-8 into out; its length, 1 to 4. */
size_t pgw_utf8_encode(uint32_t c, char out[4]);

/* Text s of len bytes, cut short by a formatter, without the incomplete
 * UTF-8 sequence the cut may have left at its end (a client decoding
 * UTF-8 would refuse the whole message); its new length. */
size_t pgw_utf8_trim_cut(char *s, size_t len);

/* No byte of p[0..n) is above 0x7f. */
bool pgw_pgenc_ascii(const void *p, size_t n);

struct pgw_pgenc_conv {
    char name[32];                   /* PostgreSQL's, as given */
    iconv_t to_client, from_client;  /* UTF-8 -> it, it -> UTF-8 */
};

struct pgw_pgenc_set {
    struct pgw_pgenc_conv **v;
    size_t n, cap;
};

/* The converters for client_encoding pg, opened on first use; NULL when
 * none is needed or none could be opened (text then goes as it is). */
const struct pgw_pgenc_conv *pgw_pgenc_get(struct pgw_pgenc_set *set, const char *pg);
void pgw_pgenc_set_free(struct pgw_pgenc_set *set);

/* in[0..n) converted by cd into out[0..cap); its length, or -1 when a
 * character has no equivalent in the target, the input is not valid in
 * its encoding, or out is too small. */
ssize_t pgw_pgenc_convert(iconv_t cd, const char *in, size_t n, char *out, size_t cap);

#endif
