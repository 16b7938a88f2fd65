/*
 * report.c - collecting config errors and warnings as "file:line: text"
 * lines into a struct pgw_conf_diag, and freeing them.
 */
#include "conf/conf_int.h"
#include "common/err.h"
#include "common/wire.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* s with each byte that is no part of a UTF-8 character, and each
 * control character (C1's too: U+009B is a terminal's CSI), written \xNN
 * byte by byte, into out (at least 4 * strlen(s) + 1
 * bytes): a key or value read from the file goes to stderr, the log and a
 * console's ErrorResponse as text that is UTF-8, on one line. */
static void escape_text(const char *s, char *out)
{
    size_t o = 0;
    uint32_t cp;
    while (*s) {
        unsigned char c = (unsigned char)*s;
        size_t n = c >= 0x80 ? pgw_utf8_decode((const unsigned char *)s, &cp) : 1;
        if (n == 0 || c < 0x20 || c == 0x7f || (c >= 0x80 && cp <= 0x9f)) {
            o += (size_t)sprintf(out + o, "\\x%02X", c);
            s++;
        } else {
            memcpy(out + o, s, n);
            o += n;
            s += n;
        }
    }
    out[o] = '\0';
}

static char *format_message(const char *file, int line, const char *fmt, va_list ap)
{
    char raw[1024], text[4 * sizeof(raw)];
    vsnprintf(raw, sizeof(raw), fmt, ap);
    escape_text(raw, text);
    char *msg = NULL;
    int n = line > 0 ? asprintf(&msg, "%s:%d: %s", file, line, text)
                     : asprintf(&msg, "%s: %s", file, text);
    return n < 0 ? NULL : msg;
}

static void append(struct conf_report *r, char ***list, int *n, char *msg)
{
    if (!msg) {
        r->oom = true;
        return;
    }
    char **grown = realloc(*list, (size_t)(*n + 1) * sizeof(**list));
    if (!grown) {
        r->oom = true;
        free(msg);
        return;
    }
    grown[(*n)++] = msg;
    *list = grown;
}

void conf_error(struct conf_report *r, const char *file, int line, const char *fmt, ...)
{
    r->nerrors++;
    if (!r->diag)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = format_message(file, line, fmt, ap);
    va_end(ap);
    append(r, &r->diag->errors, &r->diag->nerrors, msg);
}

void conf_warn(struct conf_report *r, const char *file, int line, const char *fmt, ...)
{
    r->nwarnings++;
    if (!r->diag)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = format_message(file, line, fmt, ap);
    va_end(ap);
    append(r, &r->diag->warnings, &r->diag->nwarnings, msg);
}

char *conf_strdup(struct conf_report *r, const char *s)
{
    char *copy = strdup(s ? s : "");
    if (!copy && r)
        r->oom = true;
    return copy;
}

int conf_dup_str(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return src && !*dst ? PGW_ENOMEM : 0;
}

int conf_own_strs(char **const own[], size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = conf_dup_str(own[i], *own[i]);
        else
            *own[i] = NULL;                  /* still the source's */
    }
    return rc;
}

void pgw_conf_diag_free(struct pgw_conf_diag *diag)
{
    if (!diag)
        return;
    for (int i = 0; i < diag->nerrors; i++)
        free(diag->errors[i]);
    for (int i = 0; i < diag->nwarnings; i++)
        free(diag->warnings[i]);
    free(diag->errors);
    free(diag->warnings);
    memset(diag, 0, sizeof(*diag));
}
