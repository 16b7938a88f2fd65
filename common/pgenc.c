/*
 * pgenc.c - PostgreSQL client encodings through iconv (see pgenc.h).
 */
#include "common/pgenc.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/array.h"

/* PostgreSQL's client encodings (src/common/encnames.c) and glibc's
 * names for them.  UTF8 and SQL_ASCII need none; MULE_INTERNAL has none. */
static const struct {
    const char *pg, *iconv;
} encodings[] = {
    { "LATIN1", "ISO-8859-1" },     { "LATIN2", "ISO-8859-2" },
    { "LATIN3", "ISO-8859-3" },     { "LATIN4", "ISO-8859-4" },
    { "LATIN5", "ISO-8859-9" },     { "LATIN6", "ISO-8859-10" },
    { "LATIN7", "ISO-8859-13" },    { "LATIN8", "ISO-8859-14" },
    { "LATIN9", "ISO-8859-15" },    { "LATIN10", "ISO-8859-16" },
    { "ISO_8859_5", "ISO-8859-5" }, { "ISO_8859_6", "ISO-8859-6" },
    { "ISO_8859_7", "ISO-8859-7" }, { "ISO_8859_8", "ISO-8859-8" },
    { "WIN866", "CP866" },          { "WIN874", "CP874" },
    { "WIN1250", "CP1250" },        { "WIN1251", "CP1251" },
    { "WIN1252", "CP1252" },        { "WIN1253", "CP1253" },
    { "WIN1254", "CP1254" },        { "WIN1255", "CP1255" },
    { "WIN1256", "CP1256" },        { "WIN1257", "CP1257" },
    { "WIN1258", "CP1258" },        { "KOI8R", "KOI8-R" },
    { "KOI8U", "KOI8-U" },          { "EUC_JP", "EUC-JP" },
    { "EUC_CN", "EUC-CN" },         { "EUC_KR", "EUC-KR" },
    { "EUC_TW", "EUC-TW" },         { "EUC_JIS_2004", "EUC-JISX0213" },
    { "SJIS", "SHIFT_JIS" },        { "SHIFT_JIS_2004", "SHIFT_JISX0213" },
    { "BIG5", "BIG5" },             { "GBK", "GBK" },
    { "GB18030", "GB18030" },       { "UHC", "CP949" },
    { "JOHAB", "JOHAB" },
};

bool pgw_pgenc_same_name(const char *a, const char *b)
{
    for (;; a++, b++) {
        while (*a && !isalnum((unsigned char)*a))
            a++;
        while (*b && !isalnum((unsigned char)*b))
            b++;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return false;
        if (!*a)
            return true;
    }
}

const char *pgw_pgenc_iconv_name(const char *pg)
{
    for (size_t i = 0; i < sizeof(encodings) / sizeof(encodings[0]); i++)
        if (pgw_pgenc_same_name(encodings[i].pg, pg))
            return encodings[i].iconv;
    return NULL;
}

size_t pgw_utf8_encode(uint32_t c, char out[4])
{
    static const unsigned char lead[] = { 0, 0, 0xC0, 0xE0, 0xF0 };
    size_t k = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    unsigned char *o = (unsigned char *)out;
    for (size_t i = k - 1; i > 0; i--, c >>= 6)
        o[i] = (unsigned char)(0x80 | (c & 0x3F));
    o[0] = (unsigned char)(lead[k] | c);
    return k;
}

size_t pgw_utf8_trim_cut(char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    /* The last lead byte among the last four; continuation bytes after it
     * complete it or not. */
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = u[len - back];
        if ((c & 0xC0) == 0x80)
            continue;                        /* a continuation byte */
        size_t want = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
                    : (c & 0xF8) == 0xF0 ? 4 : 1;
        if (want > back)
            len -= back;
        break;
    }
    s[len] = '\0';
    return len;
}

bool pgw_pgenc_ascii(const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] & 0x80)
            return false;
    return true;
}

const struct pgw_pgenc_conv *pgw_pgenc_get(struct pgw_pgenc_set *set, const char *pg)
{
    for (size_t i = 0; i < set->n; i++) {
        const struct pgw_pgenc_conv *c = set->v[i];
        if (pgw_pgenc_same_name(c->name, pg))
            return c->to_client != (iconv_t)-1 ? c : NULL;
    }
    const char *name = pgw_pgenc_iconv_name(pg);
    if (!name || strlen(pg) >= sizeof(set->v[0]->name))
        return NULL;
    struct pgw_pgenc_conv **grown = pgw_array_grow(set->v, sizeof(*grown), set->n, &set->cap, 4);
    struct pgw_pgenc_conv *c = grown ? calloc(1, sizeof(*c)) : NULL;
    if (!c)
        return NULL;                 /* tried again next time */
    set->v = grown;
    memcpy(c->name, pg, strlen(pg) + 1);
    /* A failed open stays in the set (as -1): not tried for each message. */
    c->to_client = iconv_open(name, "UTF-8");
    c->from_client = c->to_client != (iconv_t)-1 ? iconv_open("UTF-8", name) : (iconv_t)-1;
    if (c->from_client == (iconv_t)-1 && c->to_client != (iconv_t)-1) {
        iconv_close(c->to_client);
        c->to_client = (iconv_t)-1;
    }
    set->v[set->n++] = c;
    return c->to_client != (iconv_t)-1 ? c : NULL;
}

void pgw_pgenc_set_free(struct pgw_pgenc_set *set)
{
    for (size_t i = 0; i < set->n; i++) {
        if (set->v[i]->to_client != (iconv_t)-1) {
            iconv_close(set->v[i]->to_client);
            iconv_close(set->v[i]->from_client);
        }
        free(set->v[i]);
    }
    free(set->v);
    set->v = NULL;
    set->n = set->cap = 0;
}

ssize_t pgw_pgenc_convert(iconv_t cd, const char *in, size_t n, char *out, size_t cap)
{
    iconv(cd, NULL, NULL, NULL, NULL);           /* the initial shift state */
    char *ip = (char *)in, *op = out;
    size_t il = n, ol = cap;
    if (iconv(cd, &ip, &il, &op, &ol) == (size_t)-1 ||
        iconv(cd, NULL, NULL, &op, &ol) == (size_t)-1)   /* back to the initial state */
        return -1;
    return (ssize_t)(cap - ol);
}
