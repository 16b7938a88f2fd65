/*
 * report.c - collecting config errors and warnings as "file:line: text"
 * lines into a struct pgw_conf_diag, and freeing them.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *format_message(const char *file, int line, const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof(text), fmt, ap);
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
