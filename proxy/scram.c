/*
 * scram.c - SCRAM-SHA-256 for client authentication (see scram.h): base64,
 * the key derivations, SASLprep, PostgreSQL's verifier format, and the
 * server's two-step state machine.  Owns nothing beyond the strings a
 * struct pgw_scram_server holds; the per-process key for mock salts is the
 * only static state.
 */
#include "proxy/scram.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/pgenc.h"
#include "common/wire.h"

#define SCRAM_PREFIX "SCRAM-SHA-256$"

/* ---- base64 (RFC 4648, with padding; strict on input) ---- */

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_enc_len(size_t n) { return (n + 2) / 3 * 4; }

/* Encode n bytes into out (b64_enc_len(n) + 1 bytes); returns the length. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = b64_chars[(v >> 18) & 63];
        out[o++] = b64_chars[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? b64_chars[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decode exactly n characters into out (room for `cap` bytes).  Returns the
 * decoded length, or -1 when the text is not base64 or does not fit. */
static long b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                pad++;
                v[k] = 0;
                continue;
            }
            if (pad > 0 || (v[k] = b64_value(c)) < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        size_t take = 3 - (size_t)pad;
        if (o + take > cap)
            return -1;
        out[o++] = (uint8_t)(w >> 16);
        if (take > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (take > 2)
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ---- the hashes ---- */

static bool hmac256(const uint8_t *key, size_t keylen, const void *data, size_t n,
                    uint8_t out[PGW_SCRAM_KEY_LEN])
{
    unsigned int len = 0;
    return HMAC(EVP_sha256(), key, (int)keylen, data, n, out, &len) != NULL &&
           len == PGW_SCRAM_KEY_LEN;
}

static bool sha256(const uint8_t *data, size_t n, uint8_t out[PGW_SCRAM_KEY_LEN])
{
    unsigned int len = 0;
    return EVP_Digest(data, n, out, &len, EVP_sha256(), NULL) == 1 && len == PGW_SCRAM_KEY_LEN;
}

/* SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations). */
static bool salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                            int iterations, uint8_t out[PGW_SCRAM_KEY_LEN])
{
    return PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
                             iterations, EVP_sha256(), PGW_SCRAM_KEY_LEN, out) == 1;
}

/* ---- SASLprep (what is covered: see scram.h) ---- */

struct cp_range {
    uint32_t lo, hi;
};

static bool in_ranges(uint32_t c, const struct cp_range *r, size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < r[mid].lo)
            hi = mid;
        else if (c > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define NRANGES(a) (sizeof(a) / sizeof((a)[0]))

/* RFC 3454 B.1: commonly mapped to nothing. */
static const struct cp_range map_to_nothing[] = {
    { 0x00AD, 0x00AD }, { 0x034F, 0x034F }, { 0x1806, 0x1806 }, { 0x180B, 0x180D },
    { 0x200B, 0x200D }, { 0x2060, 0x2060 }, { 0xFE00, 0xFE0F }, { 0xFEFF, 0xFEFF },
};

/* RFC 3454 C.1.2: non-ASCII spaces, mapped to U+0020 (checked first, as
 * PostgreSQL does, so U+200B becomes a space). */
static const struct cp_range non_ascii_space[] = {
    { 0x00A0, 0x00A0 }, { 0x1680, 0x1680 }, { 0x2000, 0x200B }, { 0x202F, 0x202F },
    { 0x205F, 0x205F }, { 0x3000, 0x3000 },
};

/* RFC 3454 C.2.1-C.9: prohibited in the output (C.1.2 is mapped away). */
static const struct cp_range prohibited[] = {
    { 0x0000, 0x001F }, { 0x007F, 0x009F }, { 0x0340, 0x0341 }, { 0x06DD, 0x06DD },
    { 0x070F, 0x070F }, { 0x180E, 0x180E }, { 0x200C, 0x200F }, { 0x2028, 0x202E },
    { 0x2060, 0x2063 }, { 0x206A, 0x206F }, { 0x2FF0, 0x2FFB }, { 0xD800, 0xF8FF },
    { 0xFDD0, 0xFDEF }, { 0xFEFF, 0xFEFF }, { 0xFFF9, 0xFFFF }, { 0x1D173, 0x1D17A },
    { 0x1FFFE, 0x1FFFF }, { 0x2FFFE, 0x2FFFF }, { 0x3FFFE, 0x3FFFF }, { 0x4FFFE, 0x4FFFF },
    { 0x5FFFE, 0x5FFFF }, { 0x6FFFE, 0x6FFFF }, { 0x7FFFE, 0x7FFFF }, { 0x8FFFE, 0x8FFFF },
    { 0x9FFFE, 0x9FFFF }, { 0xAFFFE, 0xAFFFF }, { 0xBFFFE, 0xBFFFF }, { 0xCFFFE, 0xCFFFF },
    { 0xDFFFE, 0xDFFFF }, { 0xE0001, 0xE0001 }, { 0xE0020, 0xE007F }, { 0xEFFFE, 0xEFFFF },
    { 0xF0000, 0x10FFFF },
};

/* Characters that are their own NFKC form, assigned in Unicode 3.2, not
 * right-to-left, and that never compose with a neighbour from this list
 * (checked against Python's unicodedata 14.0 when written). */
static const struct cp_range nfkc_stable[] = {
    { 0x0020, 0x007E }, { 0x00A1, 0x00A7 }, { 0x00A9, 0x00A9 }, { 0x00AB, 0x00AC },
    { 0x00AE, 0x00AE }, { 0x00B0, 0x00B1 }, { 0x00B6, 0x00B7 }, { 0x00BB, 0x00BB },
    { 0x00BF, 0x0131 }, { 0x0134, 0x013E }, { 0x0141, 0x0148 }, { 0x014A, 0x017E },
    { 0x0386, 0x0386 }, { 0x0388, 0x038A }, { 0x038C, 0x038C }, { 0x038E, 0x03A1 },
    { 0x03A3, 0x03CE }, { 0x0400, 0x045F }, { 0x0490, 0x0491 }, { 0x3041, 0x3096 },
    { 0x309D, 0x309E }, { 0x30A1, 0x30FE }, { 0x4E00, 0x9FA5 }, { 0xAC00, 0xD7A3 },
};

/* Compatibility characters and their NFKC form, in UTF-8. */
struct compat_map {
    uint32_t cp;
    const char *to;
};
static const struct compat_map nfkc_compat[] = {
    { 0x00A8, " \xCC\x88" }, { 0x00AA, "a" }, { 0x00AF, " \xCC\x84" }, { 0x00B2, "2" },
    { 0x00B3, "3" }, { 0x00B4, " \xCC\x81" }, { 0x00B5, "\xCE\xBC" }, { 0x00B8, " \xCC\xA7" },
    { 0x00B9, "1" }, { 0x00BA, "o" }, { 0x00BC, "1\xE2\x81\x84" "4" },
    { 0x00BD, "1\xE2\x81\x84" "2" }, { 0x00BE, "3\xE2\x81\x84" "4" }, { 0x0132, "IJ" },
    { 0x0133, "ij" }, { 0x013F, "L\xC2\xB7" }, { 0x0140, "l\xC2\xB7" },
    { 0x0149, "\xCA\xBCn" }, { 0x017F, "s" }, { 0xFB00, "ff" }, { 0xFB01, "fi" },
    { 0xFB02, "fl" }, { 0xFB03, "ffi" }, { 0xFB04, "ffl" }, { 0xFB05, "st" }, { 0xFB06, "st" },
};

static const char *compat_of(uint32_t c)
{
    for (size_t i = 0; i < NRANGES(nfkc_compat); i++)
        if (nfkc_compat[i].cp == c)
            return nfkc_compat[i].to;
    return NULL;
}

/* Canonical compositions of a character from nfkc_stable (or ASCII) and
 * one combining mark into a character of nfkc_stable, by (base, mark):
 * "e" U+0301 is U+00E9 after NFKC.  Only a base followed by marks that
 * compose one after the other is handled (checked against Python's
 * unicodedata 14.0 for every base with up to two marks); any other mark
 * leaves the password unsupported, used raw as before. */
static const struct compose { uint32_t base, mark, to; } nfc_pairs[] = {
    { 0x0041, 0x0300, 0x00C0 }, { 0x0041, 0x0301, 0x00C1 }, { 0x0041, 0x0302, 0x00C2 },
    { 0x0041, 0x0303, 0x00C3 }, { 0x0041, 0x0304, 0x0100 }, { 0x0041, 0x0306, 0x0102 },
    { 0x0041, 0x0308, 0x00C4 }, { 0x0041, 0x030A, 0x00C5 }, { 0x0041, 0x0328, 0x0104 },
    { 0x0043, 0x0301, 0x0106 }, { 0x0043, 0x0302, 0x0108 }, { 0x0043, 0x0307, 0x010A },
    { 0x0043, 0x030C, 0x010C }, { 0x0043, 0x0327, 0x00C7 }, { 0x0044, 0x030C, 0x010E },
    { 0x0045, 0x0300, 0x00C8 }, { 0x0045, 0x0301, 0x00C9 }, { 0x0045, 0x0302, 0x00CA },
    { 0x0045, 0x0304, 0x0112 }, { 0x0045, 0x0306, 0x0114 }, { 0x0045, 0x0307, 0x0116 },
    { 0x0045, 0x0308, 0x00CB }, { 0x0045, 0x030C, 0x011A }, { 0x0045, 0x0328, 0x0118 },
    { 0x0047, 0x0302, 0x011C }, { 0x0047, 0x0306, 0x011E }, { 0x0047, 0x0307, 0x0120 },
    { 0x0047, 0x0327, 0x0122 }, { 0x0048, 0x0302, 0x0124 }, { 0x0049, 0x0300, 0x00CC },
    { 0x0049, 0x0301, 0x00CD }, { 0x0049, 0x0302, 0x00CE }, { 0x0049, 0x0303, 0x0128 },
    { 0x0049, 0x0304, 0x012A }, { 0x0049, 0x0306, 0x012C }, { 0x0049, 0x0307, 0x0130 },
    { 0x0049, 0x0308, 0x00CF }, { 0x0049, 0x0328, 0x012E }, { 0x004A, 0x0302, 0x0134 },
    { 0x004B, 0x0327, 0x0136 }, { 0x004C, 0x0301, 0x0139 }, { 0x004C, 0x030C, 0x013D },
    { 0x004C, 0x0327, 0x013B }, { 0x004E, 0x0301, 0x0143 }, { 0x004E, 0x0303, 0x00D1 },
    { 0x004E, 0x030C, 0x0147 }, { 0x004E, 0x0327, 0x0145 }, { 0x004F, 0x0300, 0x00D2 },
    { 0x004F, 0x0301, 0x00D3 }, { 0x004F, 0x0302, 0x00D4 }, { 0x004F, 0x0303, 0x00D5 },
    { 0x004F, 0x0304, 0x014C }, { 0x004F, 0x0306, 0x014E }, { 0x004F, 0x0308, 0x00D6 },
    { 0x004F, 0x030B, 0x0150 }, { 0x0052, 0x0301, 0x0154 }, { 0x0052, 0x030C, 0x0158 },
    { 0x0052, 0x0327, 0x0156 }, { 0x0053, 0x0301, 0x015A }, { 0x0053, 0x0302, 0x015C },
    { 0x0053, 0x030C, 0x0160 }, { 0x0053, 0x0327, 0x015E }, { 0x0054, 0x030C, 0x0164 },
    { 0x0054, 0x0327, 0x0162 }, { 0x0055, 0x0300, 0x00D9 }, { 0x0055, 0x0301, 0x00DA },
    { 0x0055, 0x0302, 0x00DB }, { 0x0055, 0x0303, 0x0168 }, { 0x0055, 0x0304, 0x016A },
    { 0x0055, 0x0306, 0x016C }, { 0x0055, 0x0308, 0x00DC }, { 0x0055, 0x030A, 0x016E },
    { 0x0055, 0x030B, 0x0170 }, { 0x0055, 0x0328, 0x0172 }, { 0x0057, 0x0302, 0x0174 },
    { 0x0059, 0x0301, 0x00DD }, { 0x0059, 0x0302, 0x0176 }, { 0x0059, 0x0308, 0x0178 },
    { 0x005A, 0x0301, 0x0179 }, { 0x005A, 0x0307, 0x017B }, { 0x005A, 0x030C, 0x017D },
    { 0x0061, 0x0300, 0x00E0 }, { 0x0061, 0x0301, 0x00E1 }, { 0x0061, 0x0302, 0x00E2 },
    { 0x0061, 0x0303, 0x00E3 }, { 0x0061, 0x0304, 0x0101 }, { 0x0061, 0x0306, 0x0103 },
    { 0x0061, 0x0308, 0x00E4 }, { 0x0061, 0x030A, 0x00E5 }, { 0x0061, 0x0328, 0x0105 },
    { 0x0063, 0x0301, 0x0107 }, { 0x0063, 0x0302, 0x0109 }, { 0x0063, 0x0307, 0x010B },
    { 0x0063, 0x030C, 0x010D }, { 0x0063, 0x0327, 0x00E7 }, { 0x0064, 0x030C, 0x010F },
    { 0x0065, 0x0300, 0x00E8 }, { 0x0065, 0x0301, 0x00E9 }, { 0x0065, 0x0302, 0x00EA },
    { 0x0065, 0x0304, 0x0113 }, { 0x0065, 0x0306, 0x0115 }, { 0x0065, 0x0307, 0x0117 },
    { 0x0065, 0x0308, 0x00EB }, { 0x0065, 0x030C, 0x011B }, { 0x0065, 0x0328, 0x0119 },
    { 0x0067, 0x0302, 0x011D }, { 0x0067, 0x0306, 0x011F }, { 0x0067, 0x0307, 0x0121 },
    { 0x0067, 0x0327, 0x0123 }, { 0x0068, 0x0302, 0x0125 }, { 0x0069, 0x0300, 0x00EC },
    { 0x0069, 0x0301, 0x00ED }, { 0x0069, 0x0302, 0x00EE }, { 0x0069, 0x0303, 0x0129 },
    { 0x0069, 0x0304, 0x012B }, { 0x0069, 0x0306, 0x012D }, { 0x0069, 0x0308, 0x00EF },
    { 0x0069, 0x0328, 0x012F }, { 0x006A, 0x0302, 0x0135 }, { 0x006B, 0x0327, 0x0137 },
    { 0x006C, 0x0301, 0x013A }, { 0x006C, 0x030C, 0x013E }, { 0x006C, 0x0327, 0x013C },
    { 0x006E, 0x0301, 0x0144 }, { 0x006E, 0x0303, 0x00F1 }, { 0x006E, 0x030C, 0x0148 },
    { 0x006E, 0x0327, 0x0146 }, { 0x006F, 0x0300, 0x00F2 }, { 0x006F, 0x0301, 0x00F3 },
    { 0x006F, 0x0302, 0x00F4 }, { 0x006F, 0x0303, 0x00F5 }, { 0x006F, 0x0304, 0x014D },
    { 0x006F, 0x0306, 0x014F }, { 0x006F, 0x0308, 0x00F6 }, { 0x006F, 0x030B, 0x0151 },
    { 0x0072, 0x0301, 0x0155 }, { 0x0072, 0x030C, 0x0159 }, { 0x0072, 0x0327, 0x0157 },
    { 0x0073, 0x0301, 0x015B }, { 0x0073, 0x0302, 0x015D }, { 0x0073, 0x030C, 0x0161 },
    { 0x0073, 0x0327, 0x015F }, { 0x0074, 0x030C, 0x0165 }, { 0x0074, 0x0327, 0x0163 },
    { 0x0075, 0x0300, 0x00F9 }, { 0x0075, 0x0301, 0x00FA }, { 0x0075, 0x0302, 0x00FB },
    { 0x0075, 0x0303, 0x0169 }, { 0x0075, 0x0304, 0x016B }, { 0x0075, 0x0306, 0x016D },
    { 0x0075, 0x0308, 0x00FC }, { 0x0075, 0x030A, 0x016F }, { 0x0075, 0x030B, 0x0171 },
    { 0x0075, 0x0328, 0x0173 }, { 0x0077, 0x0302, 0x0175 }, { 0x0079, 0x0301, 0x00FD },
    { 0x0079, 0x0302, 0x0177 }, { 0x0079, 0x0308, 0x00FF }, { 0x007A, 0x0301, 0x017A },
    { 0x007A, 0x0307, 0x017C }, { 0x007A, 0x030C, 0x017E }, { 0x0391, 0x0301, 0x0386 },
    { 0x0395, 0x0301, 0x0388 }, { 0x0397, 0x0301, 0x0389 }, { 0x0399, 0x0301, 0x038A },
    { 0x0399, 0x0308, 0x03AA }, { 0x039F, 0x0301, 0x038C }, { 0x03A5, 0x0301, 0x038E },
    { 0x03A5, 0x0308, 0x03AB }, { 0x03A9, 0x0301, 0x038F }, { 0x03B1, 0x0301, 0x03AC },
    { 0x03B5, 0x0301, 0x03AD }, { 0x03B7, 0x0301, 0x03AE }, { 0x03B9, 0x0301, 0x03AF },
    { 0x03B9, 0x0308, 0x03CA }, { 0x03BF, 0x0301, 0x03CC }, { 0x03C5, 0x0301, 0x03CD },
    { 0x03C5, 0x0308, 0x03CB }, { 0x03C9, 0x0301, 0x03CE }, { 0x03CA, 0x0301, 0x0390 },
    { 0x03CB, 0x0301, 0x03B0 }, { 0x0406, 0x0308, 0x0407 }, { 0x0413, 0x0301, 0x0403 },
    { 0x0415, 0x0300, 0x0400 }, { 0x0415, 0x0308, 0x0401 }, { 0x0418, 0x0300, 0x040D },
    { 0x0418, 0x0306, 0x0419 }, { 0x041A, 0x0301, 0x040C }, { 0x0423, 0x0306, 0x040E },
    { 0x0433, 0x0301, 0x0453 }, { 0x0435, 0x0300, 0x0450 }, { 0x0435, 0x0308, 0x0451 },
    { 0x0438, 0x0300, 0x045D }, { 0x0438, 0x0306, 0x0439 }, { 0x043A, 0x0301, 0x045C },
    { 0x0443, 0x0306, 0x045E }, { 0x0456, 0x0308, 0x0457 }, { 0x3046, 0x3099, 0x3094 },
    { 0x304B, 0x3099, 0x304C }, { 0x304D, 0x3099, 0x304E }, { 0x304F, 0x3099, 0x3050 },
    { 0x3051, 0x3099, 0x3052 }, { 0x3053, 0x3099, 0x3054 }, { 0x3055, 0x3099, 0x3056 },
    { 0x3057, 0x3099, 0x3058 }, { 0x3059, 0x3099, 0x305A }, { 0x305B, 0x3099, 0x305C },
    { 0x305D, 0x3099, 0x305E }, { 0x305F, 0x3099, 0x3060 }, { 0x3061, 0x3099, 0x3062 },
    { 0x3064, 0x3099, 0x3065 }, { 0x3066, 0x3099, 0x3067 }, { 0x3068, 0x3099, 0x3069 },
    { 0x306F, 0x3099, 0x3070 }, { 0x306F, 0x309A, 0x3071 }, { 0x3072, 0x3099, 0x3073 },
    { 0x3072, 0x309A, 0x3074 }, { 0x3075, 0x3099, 0x3076 }, { 0x3075, 0x309A, 0x3077 },
    { 0x3078, 0x3099, 0x3079 }, { 0x3078, 0x309A, 0x307A }, { 0x307B, 0x3099, 0x307C },
    { 0x307B, 0x309A, 0x307D }, { 0x309D, 0x3099, 0x309E }, { 0x30A6, 0x3099, 0x30F4 },
    { 0x30AB, 0x3099, 0x30AC }, { 0x30AD, 0x3099, 0x30AE }, { 0x30AF, 0x3099, 0x30B0 },
    { 0x30B1, 0x3099, 0x30B2 }, { 0x30B3, 0x3099, 0x30B4 }, { 0x30B5, 0x3099, 0x30B6 },
    { 0x30B7, 0x3099, 0x30B8 }, { 0x30B9, 0x3099, 0x30BA }, { 0x30BB, 0x3099, 0x30BC },
    { 0x30BD, 0x3099, 0x30BE }, { 0x30BF, 0x3099, 0x30C0 }, { 0x30C1, 0x3099, 0x30C2 },
    { 0x30C4, 0x3099, 0x30C5 }, { 0x30C6, 0x3099, 0x30C7 }, { 0x30C8, 0x3099, 0x30C9 },
    { 0x30CF, 0x3099, 0x30D0 }, { 0x30CF, 0x309A, 0x30D1 }, { 0x30D2, 0x3099, 0x30D3 },
    { 0x30D2, 0x309A, 0x30D4 }, { 0x30D5, 0x3099, 0x30D6 }, { 0x30D5, 0x309A, 0x30D7 },
    { 0x30D8, 0x3099, 0x30D9 }, { 0x30D8, 0x309A, 0x30DA }, { 0x30DB, 0x3099, 0x30DC },
    { 0x30DB, 0x309A, 0x30DD }, { 0x30EF, 0x3099, 0x30F7 }, { 0x30F0, 0x3099, 0x30F8 },
    { 0x30F1, 0x3099, 0x30F9 }, { 0x30F2, 0x3099, 0x30FA }, { 0x30FD, 0x3099, 0x30FE },
};

/* The composition of base and mark, or 0. */
static uint32_t compose(uint32_t base, uint32_t mark)
{
    size_t lo = 0, hi = NRANGES(nfc_pairs);
    while (base && lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct compose *p = &nfc_pairs[mid];
        if (base < p->base || (base == p->base && mark < p->mark))
            hi = mid;
        else if (base > p->base || mark > p->mark)
            lo = mid + 1;
        else
            return p->to;
    }
    return 0;
}

static size_t utf8_len(uint32_t c)
{
    return c < 0x80 ? 1 : c < 0x800 ? 2 : 3;      /* (only BMP characters here) */
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* First pass: validate, and find out whether prep is possible. */
static enum pgw_saslprep_rc saslprep_check(const char *in, size_t *outlen)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t len = 0, kept = 0;
    uint32_t last = 0;                       /* the last character out, if composable */
    enum pgw_saslprep_rc rc = PGW_SASLPREP_OK;
    while (*p) {
        uint32_t c, to;
        size_t n = pgw_utf8_decode(p, &c);
        if (n == 0)
            return PGW_SASLPREP_INVALID_UTF8;
        p += n;
        if (in_ranges(c, non_ascii_space, NRANGES(non_ascii_space)))
            c = 0x20;
        else if (in_ranges(c, map_to_nothing, NRANGES(map_to_nothing)))
            continue;
        kept++;
        const char *m;
        if (in_ranges(c, prohibited, NRANGES(prohibited)))
            return PGW_SASLPREP_PROHIBITED;
        if (in_ranges(c, nfkc_stable, NRANGES(nfkc_stable))) {
            len += utf8_len(c);
            last = c;
        } else if (c >= 0xFF01 && c <= 0xFF5E) {
            len += 1;
            last = c - 0xFEE0;
        } else if ((m = compat_of(c)) != NULL) {
            len += strlen(m);
            last = 0;
        } else if ((to = compose(last, c)) != 0) {
            len += utf8_len(to) - utf8_len(last);
            last = to;
        } else {
            rc = PGW_SASLPREP_UNSUPPORTED;   /* keep looking for invalid/prohibited */
            last = 0;
        }
    }
    if (kept == 0)
        return PGW_SASLPREP_PROHIBITED;      /* PostgreSQL refuses an empty result */
    *outlen = len;
    return rc;
}

enum pgw_saslprep_rc pgw_saslprep(const char *in, char **out)
{
    *out = NULL;
    if (is_ascii(in)) {
        *out = strdup(in);
        return *out ? PGW_SASLPREP_OK : PGW_SASLPREP_NOMEM;
    }
    size_t len = 0;
    enum pgw_saslprep_rc rc = saslprep_check(in, &len);
    if (rc != PGW_SASLPREP_OK)
        return rc;
    char *o = malloc(len + 1), *w = o, *w_last = o;
    if (!o)
        return PGW_SASLPREP_NOMEM;
    uint32_t last = 0;                       /* as in saslprep_check; written at w_last */
    for (const unsigned char *p = (const unsigned char *)in; *p;) {
        uint32_t c, to;
        p += pgw_utf8_decode(p, &c);
        const char *m;
        if (in_ranges(c, map_to_nothing, NRANGES(map_to_nothing)) &&
            !in_ranges(c, non_ascii_space, NRANGES(non_ascii_space)))
            continue;
        if (in_ranges(c, non_ascii_space, NRANGES(non_ascii_space)))
            c = 0x20;
        else if (c >= 0xFF01 && c <= 0xFF5E)
            c -= 0xFEE0;
        if ((m = compat_of(c)) != NULL) {
            w += strlen(strcpy(w, m));
            last = 0;
        } else if (!in_ranges(c, nfkc_stable, NRANGES(nfkc_stable)) &&
                   (to = compose(last, c)) != 0) {
            w = w_last;                      /* the base becomes the composition */
            w += pgw_utf8_encode(to, w);
            last = to;
        } else {
            w_last = w;
            w += pgw_utf8_encode(c, w);
            last = c;
        }
    }
    *w = '\0';
    *out = o;
    return PGW_SASLPREP_OK;
}

/* ---- verifiers ---- */

bool pgw_scram_is_secret(const char *text)
{
    return text && strncmp(text, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) == 0;
}

/* Decode the base64 field [p, end) into out; true when it is exactly
 * `want` bytes (or, with want 0, 1..cap bytes, length in *got). */
static bool field_b64(const char *p, const char *end, uint8_t *out, size_t cap, size_t want,
                      size_t *got)
{
    long n = b64_decode(p, (size_t)(end - p), out, cap);
    if (n <= 0 || (want && (size_t)n != want))
        return false;
    if (got)
        *got = (size_t)n;
    return true;
}

int pgw_scram_secret_parse(const char *text, struct pgw_scram_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (!pgw_scram_is_secret(text))
        return PGW_EINVAL;
    const char *p = text + strlen(SCRAM_PREFIX);
    const char *colon = strchr(p, ':');
    const char *dollar = colon ? strchr(colon + 1, '$') : NULL;
    const char *colon2 = dollar ? strchr(dollar + 1, ':') : NULL;
    if (!colon2 || colon == p || colon - p > 10)
        return PGW_EINVAL;
    long long iter = 0;
    for (const char *d = p; d < colon; d++) {
        if (*d < '0' || *d > '9')
            return PGW_EINVAL;
        iter = iter * 10 + (*d - '0');
    }
    if (iter < 1 || iter > INT_MAX)
        return PGW_EINVAL;
    out->iterations = (int)iter;
    if (!field_b64(colon + 1, dollar, out->salt, sizeof(out->salt), 0, &out->salt_len) ||
        !field_b64(dollar + 1, colon2, out->stored_key, PGW_SCRAM_KEY_LEN, PGW_SCRAM_KEY_LEN,
                   NULL) ||
        !field_b64(colon2 + 1, colon2 + 1 + strlen(colon2 + 1), out->server_key,
                   PGW_SCRAM_KEY_LEN, PGW_SCRAM_KEY_LEN, NULL)) {
        memset(out, 0, sizeof(*out));
        return PGW_EINVAL;
    }
    return 0;
}

/* The password PostgreSQL would hash: SASLprepped, or raw when prep fails.
 * *to_free is set when a new string was made. */
static const char *prepared(const char *password, char **to_free)
{
    *to_free = NULL;
    if (pgw_saslprep(password, to_free) == PGW_SASLPREP_OK)
        return *to_free;
    return password;
}

int pgw_scram_secret_make(const char *password, const uint8_t *salt, size_t salt_len,
                          int iterations, struct pgw_scram_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (salt && (salt_len == 0 || salt_len > PGW_SCRAM_MAX_SALT_LEN))
        return PGW_EINVAL;
    if (salt) {
        memcpy(out->salt, salt, salt_len);
        out->salt_len = salt_len;
    } else {
        out->salt_len = PGW_SCRAM_SALT_LEN;
        if (RAND_bytes(out->salt, PGW_SCRAM_SALT_LEN) != 1)
            return PGW_ENOMEM;
    }
    out->iterations = iterations > 0 ? iterations : PGW_SCRAM_ITERATIONS;
    char *prep;
    const char *pw = prepared(password, &prep);
    uint8_t salted[PGW_SCRAM_KEY_LEN], client_key[PGW_SCRAM_KEY_LEN];
    bool ok = salted_password(pw, out->salt, out->salt_len, out->iterations, salted) &&
              hmac256(salted, sizeof(salted), "Client Key", 10, client_key) &&
              sha256(client_key, sizeof(client_key), out->stored_key) &&
              hmac256(salted, sizeof(salted), "Server Key", 10, out->server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (prep) {
        OPENSSL_cleanse(prep, strlen(prep));
        free(prep);
    }
    return ok ? 0 : PGW_ENOMEM;
}

int pgw_scram_secret_format(const struct pgw_scram_secret *s, char *buf, size_t size)
{
    char salt[b64_enc_len(PGW_SCRAM_MAX_SALT_LEN) + 1];
    char stored[b64_enc_len(PGW_SCRAM_KEY_LEN) + 1], server[b64_enc_len(PGW_SCRAM_KEY_LEN) + 1];
    if (s->salt_len > PGW_SCRAM_MAX_SALT_LEN)
        return PGW_EINVAL;
    b64_encode(s->salt, s->salt_len, salt);
    b64_encode(s->stored_key, PGW_SCRAM_KEY_LEN, stored);
    b64_encode(s->server_key, PGW_SCRAM_KEY_LEN, server);
    int n = snprintf(buf, size, SCRAM_PREFIX "%d:%s$%s:%s", s->iterations, salt, stored, server);
    return n >= 0 && (size_t)n < size ? n : PGW_EINVAL;
}

bool pgw_scram_verify_plain(const struct pgw_scram_secret *s, const char *password)
{
    char *prep;
    const char *pw = prepared(password, &prep);
    uint8_t salted[PGW_SCRAM_KEY_LEN], server_key[PGW_SCRAM_KEY_LEN];
    bool ok = salted_password(pw, s->salt, s->salt_len, s->iterations, salted) &&
              hmac256(salted, sizeof(salted), "Server Key", 10, server_key) &&
              CRYPTO_memcmp(server_key, s->server_key, PGW_SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(salted, sizeof(salted));
    if (prep) {
        OPENSSL_cleanse(prep, strlen(prep));
        free(prep);
    }
    return ok;
}

/* ---- salts for users without a usable verifier ---- */

static uint8_t mock_key[32];
static pthread_once_t mock_once = PTHREAD_ONCE_INIT;

static void mock_key_init(void)
{
    if (RAND_bytes(mock_key, sizeof(mock_key)) != 1)
        memset(mock_key, 0x5a, sizeof(mock_key));   /* still deterministic per user */
}

/* A salt that depends only on the user name and this process: the same
 * answer every time, so probing cannot tell a mock from a real user. */
static void user_salt(const char *username, uint8_t out[PGW_SCRAM_SALT_LEN])
{
    uint8_t h[PGW_SCRAM_KEY_LEN];
    pthread_once(&mock_once, mock_key_init);
    if (!hmac256(mock_key, sizeof(mock_key), username, strlen(username), h))
        memset(h, 0, sizeof(h));
    memcpy(out, h, PGW_SCRAM_SALT_LEN);
}

/* ---- the server ---- */

static bool is_md5_hash(const char *s)
{
    return strlen(s) == 35 && strncmp(s, "md5", 3) == 0;
}

/* ---- made verifiers, cached ---- */

#define SCRAM_CACHE_SLOTS 256

struct scram_cache_slot {
    bool used;
    uint8_t key[PGW_SCRAM_KEY_LEN];
    struct pgw_scram_secret secret;
};

struct pgw_scram_cache {
    struct scram_cache_slot slot[SCRAM_CACHE_SLOTS];
    unsigned long hits, misses;
};

struct pgw_scram_cache *pgw_scram_cache_new(void)
{
    return calloc(1, sizeof(struct pgw_scram_cache));
}

void pgw_scram_cache_clear(struct pgw_scram_cache *c)
{
    if (c)
        OPENSSL_cleanse(c->slot, sizeof(c->slot));
}

void pgw_scram_cache_free(struct pgw_scram_cache *c)
{
    pgw_scram_cache_clear(c);
    free(c);
}

void pgw_scram_cache_counts(const struct pgw_scram_cache *c, unsigned long *hits,
                            unsigned long *misses)
{
    *hits = c ? c->hits : 0;
    *misses = c ? c->misses : 0;
}

/* The cache key: HMAC keyed by the password over the iterations and the
 * user name (the password itself is never kept). */
static bool cache_key(const char *password, const char *username, int iterations,
                      uint8_t out[PGW_SCRAM_KEY_LEN])
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "%d:%s", iterations, username);
    return n > 0 && (size_t)n < sizeof(buf) &&
           hmac256((const uint8_t *)password, strlen(password), buf, (size_t)n, out);
}

/* pgw_scram_secret_make for a plaintext secret, through the cache. */
static int made_secret(const char *password, const char *username, const uint8_t *salt,
                       int iterations, struct pgw_scram_cache *c, struct pgw_scram_secret *out)
{
    uint8_t key[PGW_SCRAM_KEY_LEN];
    struct scram_cache_slot *sl = NULL;
    if (c && cache_key(password, username, iterations, key)) {
        sl = &c->slot[(key[0] | (unsigned)key[1] << 8) % SCRAM_CACHE_SLOTS];
        if (sl->used && CRYPTO_memcmp(sl->key, key, sizeof(key)) == 0) {
            c->hits++;
            *out = sl->secret;
            return 0;
        }
        c->misses++;
    }
    int rc = pgw_scram_secret_make(password, salt, PGW_SCRAM_SALT_LEN, iterations, out);
    if (rc == 0 && sl) {
        sl->used = true;
        memcpy(sl->key, key, sizeof(key));
        sl->secret = *out;
    }
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

int pgw_scram_server_init(struct pgw_scram_server *st, const char *secret, const char *username)
{
    return pgw_scram_server_start(st, secret, username, 0, NULL);
}

int pgw_scram_server_start(struct pgw_scram_server *st, const char *secret, const char *username,
                           int iterations, struct pgw_scram_cache *cache)
{
    memset(st, 0, sizeof(*st));
    st->stage = PGW_SCRAM_WANT_CLIENT_FIRST;
    st->sqlstate = "08P01";
    if (!username)
        username = "";
    uint8_t salt[PGW_SCRAM_SALT_LEN];
    user_salt(username, salt);
    if (!secret) {
        st->doomed = true;
        snprintf(st->error, sizeof(st->error), "no such user");
    } else if (pgw_scram_is_secret(secret)) {
        if (pgw_scram_secret_parse(secret, &st->secret) < 0) {
            st->doomed = true;
            snprintf(st->error, sizeof(st->error), "invalid SCRAM verifier in auth_file");
        }
    } else if (is_md5_hash(secret)) {
        st->doomed = true;
        snprintf(st->error, sizeof(st->error), "the user's secret is an md5 hash, "
                 "which SCRAM cannot use");
    } else {
        /* Plaintext: the salt is the per-user one, so the server-first
         * message is the same on every try, as for a stored verifier. */
        int rc = made_secret(secret, username, salt, iterations, cache, &st->secret);
        if (rc < 0)
            return rc;
    }
    if (st->doomed) {
        memset(&st->secret, 0, sizeof(st->secret));
        memcpy(st->secret.salt, salt, sizeof(salt));
        st->secret.salt_len = sizeof(salt);
        st->secret.iterations = iterations > 0 ? iterations : PGW_SCRAM_ITERATIONS;
    }
    return 0;
}

void pgw_scram_server_deinit(struct pgw_scram_server *st)
{
    if (!st)
        return;
    free(st->client_nonce);
    free(st->client_first_bare);
    free(st->server_first);
    OPENSSL_cleanse(st, sizeof(*st));
}

struct pgw_scram_server *pgw_scram_server_create(const char *secret, const char *username)
{
    struct pgw_scram_server *st = malloc(sizeof(*st));
    if (st && pgw_scram_server_init(st, secret, username) < 0) {
        free(st);
        st = NULL;
    }
    return st;
}

void pgw_scram_server_destroy(struct pgw_scram_server *st)
{
    if (!st)
        return;
    pgw_scram_server_deinit(st);
    free(st);
}

static bool is_printable(const char *s)
{
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7E || *s == ',')
            return false;
    return true;
}

int pgw_scram_server_set_nonce(struct pgw_scram_server *st, const char *nonce)
{
    if (st->stage != PGW_SCRAM_WANT_CLIENT_FIRST || !*nonce || !is_printable(nonce) ||
        strlen(nonce) >= sizeof(st->server_nonce))
        return PGW_EINVAL;
    strcpy(st->server_nonce, nonce);
    return 0;
}

static int fail(struct pgw_scram_server *st, int rc, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct pgw_scram_server *st, int rc, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->error, sizeof(st->error), fmt, ap);
    va_end(ap);
    st->sqlstate = sqlstate;
    st->stage = PGW_SCRAM_FAILED;
    return rc;
}

#define MALFORMED(st, ...) fail(st, PGW_EPROTO, "08P01", "malformed SCRAM message: " __VA_ARGS__)

/* A client byte fit for a log line. */
static const char *show_char(char c, char buf[8])
{
    if (c >= 0x21 && c <= 0x7E)
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "0x%02x", (unsigned char)c);
    return buf;
}

/* Check a client message and copy it as a C string. */
static int take_message(struct pgw_scram_server *st, enum pgw_scram_stage want, const char *msg,
                        size_t len, char **copy)
{
    *copy = NULL;
    if (st->stage != want)
        return fail(st, PGW_EPROTO, "08P01", "unexpected SCRAM message");
    if (len == 0)
        return MALFORMED(st, "empty message");
    if (memchr(msg, '\0', len))
        return MALFORMED(st, "length mismatch");
    if (len > PGW_SCRAM_MAX_MSG)
        return MALFORMED(st, "message too long");
    if (!(*copy = strndup(msg, len)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    return 0;
}

/* Read `attr=value` at *p (value up to the next ',', which is cut);
 * attr 0 accepts any letter and stores it in *got. */
static char *read_attr(char **p, char attr, char *got)
{
    char *s = *p;
    bool letter = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z');
    if (!letter || (attr && *s != attr) || s[1] != '=')
        return NULL;
    if (got)
        *got = *s;
    char *v = s + 2, *comma = strchr(v, ',');
    if (comma) {
        *comma = '\0';
        *p = comma + 1;
    } else {
        *p = v + strlen(v);
    }
    return v;
}

int pgw_scram_server_offer_plus(struct pgw_scram_server *st, const uint8_t *data, size_t len)
{
    if (len == 0 || len > sizeof(st->cbind))
        return PGW_EINVAL;
    memcpy(st->cbind, data, len);
    st->cbind_len = len;
    return 0;
}

int pgw_scram_server_choose(struct pgw_scram_server *st, const char *mechanism)
{
    if (strcmp(mechanism, PGW_SCRAM_MECHANISM) == 0) {
        st->plus = false;
        return 0;
    }
    if (st->cbind_len && strcmp(mechanism, PGW_SCRAM_MECHANISM_PLUS) == 0) {
        st->plus = true;
        return 0;
    }
    return fail(st, PGW_EPROTO, "08P01",
                "client selected an invalid SASL authentication mechanism");
}

#define CB_TYPE "tls-server-end-point"

static int parse_client_first(struct pgw_scram_server *st, char *msg)
{
    char *p = msg, cb[8];
    switch (*p) {
    case 'n':
    case 'y':
        if (st->plus)
            return fail(st, PGW_EPROTO, "08P01",
                        "malformed SCRAM message: the client selected SCRAM-SHA-256-PLUS, but "
                        "the SCRAM message does not include channel binding data");
        if (*p == 'y' && st->cbind_len)
            return fail(st, PGW_EPROTO, "08P01",
                        "SCRAM channel binding negotiation error: the client supports SCRAM "
                        "channel binding but thinks the server does not; this server does "
                        "support channel binding");
        p++;
        break;
    case 'p':
        if (!st->plus)
            return fail(st, PGW_EPROTO, "08P01",
                        "malformed SCRAM message: the client selected SCRAM-SHA-256 without "
                        "channel binding, but the SCRAM message includes channel binding data");
        if (strncmp(p, "p=" CB_TYPE ",", sizeof(CB_TYPE) + 2) != 0)
            return fail(st, PGW_EPROTO, "08P01", "unsupported SCRAM channel-binding type");
        p += sizeof(CB_TYPE) + 1;            /* at the ',' after the type */
        break;
    default:
        return MALFORMED(st, "unexpected channel-binding flag %s", show_char(*p, cb));
    }
    if (*p != ',')
        return MALFORMED(st, "comma expected after the channel-binding flag, found %s",
                         show_char(*p, cb));
    p++;
    if (*p == 'a')
        return fail(st, PGW_EPROTO, "0A000",
                    "client uses authorization identity, but it is not supported");
    if (*p != ',')
        return MALFORMED(st, "unexpected attribute %s in client-first-message", show_char(*p, cb));
    p++;
    memcpy(st->gs2_header, msg, (size_t)(p - msg));    /* at most "p=" CB_TYPE ",," */
    st->gs2_header[p - msg] = '\0';
    if (!(st->client_first_bare = strdup(p)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    if (*p == 'm')
        return fail(st, PGW_EPROTO, "0A000", "client requires an unsupported SCRAM extension");
    if (!read_attr(&p, 'n', NULL))
        return MALFORMED(st, "expected attribute 'n' in client-first-message");
    char *nonce = read_attr(&p, 'r', NULL);
    if (!nonce)
        return MALFORMED(st, "expected attribute 'r' in client-first-message");
    if (!*nonce || !is_printable(nonce))
        return fail(st, PGW_EPROTO, "08P01", "non-printable characters in SCRAM nonce");
    while (*p)
        if (!read_attr(&p, 0, NULL))
            return MALFORMED(st, "attribute expected in client-first-message");
    if (!(st->client_nonce = strdup(nonce)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    return 0;
}

int pgw_scram_server_client_first(struct pgw_scram_server *st, const char *msg, size_t len,
                                  const char **out, size_t *outlen)
{
    char *copy;
    int rc = take_message(st, PGW_SCRAM_WANT_CLIENT_FIRST, msg, len, &copy);
    if (rc == 0)
        rc = parse_client_first(st, copy);
    free(copy);
    if (rc < 0)
        return rc;
    if (!st->server_nonce[0]) {
        uint8_t raw[PGW_SCRAM_NONCE_RAW_LEN];
        if (RAND_bytes(raw, sizeof(raw)) != 1)
            return fail(st, PGW_ENOMEM, "53200", "could not generate a SCRAM nonce");
        b64_encode(raw, sizeof(raw), st->server_nonce);
    }
    char salt[b64_enc_len(PGW_SCRAM_MAX_SALT_LEN) + 1];
    b64_encode(st->secret.salt, st->secret.salt_len, salt);
    size_t n = strlen(st->client_nonce) + strlen(st->server_nonce) + strlen(salt) + 32;
    if (!(st->server_first = malloc(n)))
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    snprintf(st->server_first, n, "r=%s%s,s=%s,i=%d", st->client_nonce, st->server_nonce, salt,
             st->secret.iterations);
    st->stage = PGW_SCRAM_WANT_CLIENT_FINAL;
    *out = st->server_first;
    *outlen = strlen(st->server_first);
    return 0;
}

/* The combined nonce the client must echo, compared without early exit. */
static bool nonce_matches(const struct pgw_scram_server *st, const char *given)
{
    size_t cl = strlen(st->client_nonce), sl = strlen(st->server_nonce);
    if (strlen(given) != cl + sl)
        return false;
    return CRYPTO_memcmp(given, st->client_nonce, cl) == 0 &&
           CRYPTO_memcmp(given + cl, st->server_nonce, sl) == 0;
}

/* Parse client-final; on success *without_proof_len is the length of the
 * part the AuthMessage uses and proof holds the decoded ClientProof. */
static int parse_client_final(struct pgw_scram_server *st, char *msg,
                              size_t *without_proof_len, uint8_t proof[PGW_SCRAM_KEY_LEN])
{
    char *p = msg;
    char *cbind = read_attr(&p, 'c', NULL);
    if (!cbind)
        return MALFORMED(st, "expected attribute 'c' in client-final-message");
    /* c= is the gs2 header and, with PLUS, the binding data: a client
     * that bound another TLS connection (a relay's) sends other data. */
    uint8_t cbuf[sizeof(st->gs2_header) + PGW_SCRAM_CBIND_MAX], want[sizeof(cbuf)];
    size_t hl = strlen(st->gs2_header), wl = hl + (st->plus ? st->cbind_len : 0);
    memcpy(want, st->gs2_header, hl);
    if (st->plus)
        memcpy(want + hl, st->cbind, st->cbind_len);
    long cn = b64_decode(cbind, strlen(cbind), cbuf, sizeof(cbuf));
    if (cn != (long)wl || CRYPTO_memcmp(cbuf, want, wl) != 0)
        return fail(st, PGW_EPROTO, "08P01", "SCRAM channel binding check failed (c= does not "
                    "match %s)", st->plus ? "this TLS connection's tls-server-end-point data"
                                          : "the gs2 header");
    char *nonce = read_attr(&p, 'r', NULL);
    if (!nonce)
        return MALFORMED(st, "expected attribute 'r' in client-final-message");
    if (!nonce_matches(st, nonce))
        return fail(st, PGW_EPROTO, "08P01", "invalid SCRAM response (nonce mismatch)");
    char attr = 0, *value, *start;
    do {
        start = p;
        if (!*p)
            return MALFORMED(st, "could not find proof in client-final-message");
        if (!(value = read_attr(&p, 0, &attr)))
            return MALFORMED(st, "attribute expected in client-final-message");
    } while (attr != 'p');
    if (*p)
        return MALFORMED(st, "garbage at the end of client-final-message");
    if (b64_decode(value, strlen(value), proof, PGW_SCRAM_KEY_LEN) != PGW_SCRAM_KEY_LEN)
        return MALFORMED(st, "invalid ClientProof");
    *without_proof_len = (size_t)(start - msg) - 1;   /* without the ',' before p= */
    return 0;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
static char *auth_message(const struct pgw_scram_server *st, const char *final, size_t final_len,
                          size_t *len)
{
    size_t a = strlen(st->client_first_bare), b = strlen(st->server_first);
    char *m = malloc(a + b + final_len + 3);
    if (!m)
        return NULL;
    memcpy(m, st->client_first_bare, a);
    m[a] = ',';
    memcpy(m + a + 1, st->server_first, b);
    m[a + 1 + b] = ',';
    memcpy(m + a + b + 2, final, final_len);
    *len = a + b + 2 + final_len;
    m[*len] = '\0';
    return m;
}

int pgw_scram_server_client_final(struct pgw_scram_server *st, const char *msg, size_t len,
                                  const char **out, size_t *outlen)
{
    char *copy;
    size_t wplen = 0;
    uint8_t proof[PGW_SCRAM_KEY_LEN];
    int rc = take_message(st, PGW_SCRAM_WANT_CLIENT_FINAL, msg, len, &copy);
    if (rc == 0)
        rc = parse_client_final(st, copy, &wplen, proof);
    free(copy);
    if (rc < 0)
        return rc;
    size_t alen = 0;
    char *am = auth_message(st, msg, wplen, &alen);
    if (!am)
        return fail(st, PGW_ENOMEM, "53200", "out of memory");
    /* The proof is checked even in a mock exchange, so both take as long. */
    uint8_t sig[PGW_SCRAM_KEY_LEN], client_key[PGW_SCRAM_KEY_LEN], stored[PGW_SCRAM_KEY_LEN];
    bool ok = hmac256(st->secret.stored_key, PGW_SCRAM_KEY_LEN, am, alen, sig);
    for (int i = 0; i < PGW_SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    ok = ok && sha256(client_key, sizeof(client_key), stored) &&
         CRYPTO_memcmp(stored, st->secret.stored_key, PGW_SCRAM_KEY_LEN) == 0;
    uint8_t server_sig[PGW_SCRAM_KEY_LEN];
    bool signed_ok = ok && !st->doomed &&
                     hmac256(st->secret.server_key, PGW_SCRAM_KEY_LEN, am, alen, server_sig);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    free(am);
    if (!signed_ok) {
        if (!st->doomed)
            snprintf(st->error, sizeof(st->error), "password does not match");
        st->sqlstate = "28P01";
        st->stage = PGW_SCRAM_FAILED;
        return PGW_EAUTH;
    }
    char v[b64_enc_len(PGW_SCRAM_KEY_LEN) + 1];
    b64_encode(server_sig, sizeof(server_sig), v);
    snprintf(st->server_final, sizeof(st->server_final), "v=%s", v);
    st->stage = PGW_SCRAM_DONE;
    *out = st->server_final;
    *outlen = strlen(st->server_final);
    return 0;
}
