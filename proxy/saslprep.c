/*
 * saslprep.c - SASLprep (RFC 4013, the stringprep profile of RFC 3454) of
 * a password, step for step as PostgreSQL's src/common/saslprep.c does it,
 * so a plaintext secret hashes to what the client's libpq hashes:
 *
 *   1. map: C.1.2 non-ASCII spaces to U+0020, B.1 to nothing;
 *      an empty result is refused;
 *   2. normalize: NFKC (compatibility decomposition, Hangul included,
 *      canonical ordering by combining class, canonical composition);
 *   3. prohibit: C.1.2, C.2.1-C.9 and A.1 (unassigned in Unicode 3.2),
 *   4. bidi (RFC 3454 section 6): with any RandALCat character, no LCat
 *      character, and RandALCat first and last;
 *
 * where 3 and 4 look at the mapped string, as PostgreSQL does.  The tables
 * are generated (saslprep_tables.c, scripts/gen_saslprep.py).
 */
#include "proxy/scram.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/pgenc.h"
#include "common/wire.h"
#include "proxy/saslprep_int.h"

#define HANGUL_S 0xAC00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11A7u
#define HANGUL_LN 19u
#define HANGUL_VN 21u
#define HANGUL_TN 28u
#define HANGUL_NN (HANGUL_VN * HANGUL_TN)
#define HANGUL_SN (HANGUL_LN * HANGUL_NN)

static bool in_table(uint32_t c, const struct pgw_sp_range *r, size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < r[mid].lo)
            hi = mid;
        else if (c > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define IN(c, name) in_table((c), pgw_sp_##name, pgw_sp_##name##_n)

static uint8_t ccc_of(uint32_t c)
{
    size_t lo = 0, hi = pgw_sp_ccc_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < pgw_sp_ccc[mid].lo)
            hi = mid;
        else if (c > pgw_sp_ccc[mid].hi)
            lo = mid + 1;
        else
            return pgw_sp_ccc[mid].ccc;
    }
    return 0;
}

/* The full compatibility decomposition of c into out (NULL: just count).
 * Returns its length (1 when c decomposes to itself). */
static size_t decompose(uint32_t c, uint32_t *out)
{
    if (c >= HANGUL_S && c < HANGUL_S + HANGUL_SN) {
        uint32_t s = c - HANGUL_S, t = s % HANGUL_TN;
        if (out) {
            out[0] = HANGUL_L + s / HANGUL_NN;
            out[1] = HANGUL_V + (s % HANGUL_NN) / HANGUL_TN;
            if (t)
                out[2] = HANGUL_T + t;
        }
        return t ? 3 : 2;
    }
    size_t lo = 0, hi = pgw_sp_decomp_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct pgw_sp_decomp *d = &pgw_sp_decomp[mid];
        if (c < d->cp) {
            hi = mid;
        } else if (c > d->cp + d->run) {
            lo = mid + 1;
        } else if (d->run) {
            if (out)
                out[0] = pgw_sp_pool[d->off] + (c - d->cp);
            return 1;
        } else {
            if (out)
                memcpy(out, &pgw_sp_pool[d->off], d->len * sizeof(uint32_t));
            return d->len;
        }
    }
    if (out)
        out[0] = c;
    return 1;
}

/* The canonical composition of a and b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= HANGUL_L && a < HANGUL_L + HANGUL_LN && b >= HANGUL_V && b < HANGUL_V + HANGUL_VN)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_VN + (b - HANGUL_V)) * HANGUL_TN;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_SN && (a - HANGUL_S) % HANGUL_TN == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_TN)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = pgw_sp_compose_n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct pgw_sp_compose *p = &pgw_sp_compose[mid];
        if (a < p->first || (a == p->first && b < p->second))
            hi = mid;
        else if (a > p->first || b > p->second)
            lo = mid + 1;
        else
            return p->composed;
    }
    return 0;
}

struct mark {
    uint32_t c;
    size_t pos;
    uint8_t k;
};

static int mark_cmp(const void *a, const void *b)
{
    const struct mark *x = a, *y = b;
    if (x->k != y->k)
        return x->k < y->k ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Canonical ordering: each run of marks (class not 0) sorted by class,
 * keeping the order of equal classes.  A sort by (class, position) rather
 * than PostgreSQL's swap-and-backtrack: a password of thousands of marks
 * would cost n^2 class look-ups on the loop.  false: no memory. */
static bool reorder(uint32_t *d, size_t len)
{
    struct mark *m = NULL;
    for (size_t i = 0; i < len;) {
        uint8_t k = ccc_of(d[i]);
        if (k == 0) {
            i++;
            continue;
        }
        size_t start = i, n = 0;
        if (!m && !(m = malloc(len * sizeof(*m))))
            return false;
        do {
            m[n] = (struct mark){.c = d[i], .pos = n, .k = k};
            n++;
            if (++i == len)
                break;
            k = ccc_of(d[i]);
        } while (k != 0);
        if (n > 1) {
            qsort(m, n, sizeof(*m), mark_cmp);
            for (size_t j = 0; j < n; j++)
                d[start + j] = m[j].c;
        }
        /* d[i], if any, is a starter: skip it without a second look-up */
        i++;
    }
    free(m);
    return true;
}

/* NFKC of s[0..n) into a new array; *outn its length.  NULL: no memory. */
static uint32_t *nfkc(const uint32_t *s, size_t n, size_t *outn)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += decompose(s[i], NULL);
    uint32_t *d = malloc((len + 1) * sizeof(uint32_t));
    if (!d)
        return NULL;
    len = 0;
    for (size_t i = 0; i < n; i++)
        len += decompose(s[i], d + len);
    if (!reorder(d, len)) {
        free(d);
        return NULL;
    }
    /* canonical composition: a mark joins the last starter unless blocked
     * (a character between of class 0 or of a class not below its own) */
    size_t w = 0, starter = 0;
    bool have_starter = false;
    uint8_t last = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t c = d[i], to;
        uint8_t k = ccc_of(c);
        if (have_starter && (w == starter + 1 || (last != 0 && last < k)) &&
            (to = compose(d[starter], c)) != 0) {
            d[starter] = to;
            continue;
        }
        if (k == 0) {
            starter = w;
            have_starter = true;
        }
        last = k;
        d[w++] = c;
    }
    *outn = w;
    return d;
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* Steps 3 and 4 over the mapped string. */
static bool allowed(const uint32_t *s, size_t n)
{
    bool rtl = false;
    for (size_t i = 0; i < n; i++) {
        if (IN(s[i], prohibited) || IN(s[i], unassigned))
            return false;
        rtl = rtl || IN(s[i], randalcat);
    }
    if (!rtl)
        return true;
    for (size_t i = 0; i < n; i++)
        if (IN(s[i], lcat))
            return false;
    return IN(s[0], randalcat) && IN(s[n - 1], randalcat);
}

static enum pgw_saslprep_rc prep(const char *in, uint32_t *cps, char **out)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p;) {
        uint32_t c;
        size_t len = pgw_utf8_decode(p, &c);
        if (len == 0)
            return PGW_SASLPREP_INVALID_UTF8;
        p += len;
        if (IN(c, non_ascii_space))
            cps[n++] = 0x20;
        else if (!IN(c, map_to_nothing))
            cps[n++] = c;
    }
    if (n == 0 || !allowed(cps, n))
        return PGW_SASLPREP_PROHIBITED;
    size_t m;
    uint32_t *norm = nfkc(cps, n, &m);
    if (!norm)
        return PGW_SASLPREP_NOMEM;
    char *o = malloc(m * 4 + 1), *w = o;
    if (o) {
        for (size_t i = 0; i < m; i++)
            w += pgw_utf8_encode(norm[i], w);
        *w = '\0';
    }
    free(norm);
    *out = o;
    return o ? PGW_SASLPREP_OK : PGW_SASLPREP_NOMEM;
}

enum pgw_saslprep_rc pgw_saslprep(const char *in, char **out)
{
    *out = NULL;
    if (is_ascii(in)) {
        *out = strdup(in);
        return *out ? PGW_SASLPREP_OK : PGW_SASLPREP_NOMEM;
    }
    size_t len = strlen(in);
    uint32_t *cps = malloc((len + 1) * sizeof(uint32_t));
    if (!cps)
        return PGW_SASLPREP_NOMEM;
    enum pgw_saslprep_rc rc = prep(in, cps, out);
    free(cps);
    return rc;
}
