/*
 * ini.c - the INI reader, laid out as pgbouncer.ini: `[section]` headers,
 * `key = value` lines (the value runs to the end of the line, trimmed),
 * comment lines starting with ';' or '#' (not special later in a line),
 * `%include FILE` relative to the including file's directory.  A key may
 * be double-quoted ("my db" = ...) with "" for a quote inside.
 *
 * It owns only the text being read and the stack of files being included
 * (real paths, for loop detection); what the lines mean is the handler's
 * business.  Every syntax error is reported and reading goes on.
 */
#include "conf/conf_int.h"
#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ini_reader {
    const struct conf_ini_handler *h;
    char *stack[CONF_INCLUDE_DEPTH + 1];    /* real paths, NULL for a string */
    int depth;                              /* index of the current file */
    bool from_string;       /* depth 0 is a string: include from the cwd */
};

static void parse_text(struct ini_reader *rd, const char *file, char *text);

char *conf_read_file(const char *path, char *err, size_t errlen, int *errline)
{
    *errline = 0;
    char ebuf[128];
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (len + 1 >= cap) {
            char *grown = cap >= CONF_MAX_FILE_SIZE ? NULL : realloc(buf, cap * 2);
            if (!grown) {
                snprintf(err, errlen, cap >= CONF_MAX_FILE_SIZE ? "file too large"
                                                                : "out of memory");
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - 1 - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (buf && ferror(f)) {
        snprintf(err, errlen, "cannot read: %s", strerror_r(errno, ebuf, sizeof(ebuf)));
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[len] = '\0';
    size_t nul = strlen(buf);
    if (nul != len) {
        *errline = 1;
        for (size_t i = 0; i < nul; i++)
            *errline += buf[i] == '\n';
        snprintf(err, errlen, "contains a NUL byte");
        free(buf);
        return NULL;
    }
    return buf;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Join `name` to the directory of `file` unless name is absolute. */
static char *include_path(const char *file, const char *name)
{
    const char *slash = strrchr(file, '/');
    char *path = NULL;
    if (name[0] == '/' || !slash)
        return strdup(name);
    if (asprintf(&path, "%.*s/%s", (int)(slash - file), file, name) < 0)
        return NULL;
    return path;
}

static bool on_stack(const struct ini_reader *rd, const char *real)
{
    for (int i = 0; i <= rd->depth; i++)
        if (rd->stack[i] && strcmp(rd->stack[i], real) == 0)
            return true;
    return false;
}

/* Read `path` as a nested file; errors are reported at file:line. */
static void include_file(struct ini_reader *rd, const char *file, int line, const char *path)
{
    struct conf_report *rep = rd->h->rep;
    char err[CONF_ERRLEN], ebuf[128];
    int errline;
    char *real = realpath(path, NULL);
    if (!real) {
        conf_error(rep, file, line, "%%include \"%s\": cannot open: %s", path,
                   strerror_r(errno, ebuf, sizeof(ebuf)));
        return;
    }
    if (on_stack(rd, real)) {
        conf_error(rep, file, line, "%%include loop: \"%s\" is already being read", path);
    } else if (rd->depth >= CONF_INCLUDE_DEPTH) {
        conf_error(rep, file, line, "%%include nested too deeply (more than %d levels)",
                   CONF_INCLUDE_DEPTH);
    } else {
        char *text = conf_read_file(path, err, sizeof(err), &errline);
        if (!text && errline > 0) {
            conf_error(rep, file, line, "%%include \"%s\": %s:%d: %s", path, path, errline,
                       err);
        } else if (!text) {
            conf_error(rep, file, line, "%%include \"%s\": %s", path, err);
        } else {
            rd->stack[++rd->depth] = real;
            real = NULL;
            parse_text(rd, path, text);
            free(rd->stack[rd->depth]);
            rd->stack[rd->depth--] = NULL;
            free(text);
        }
    }
    free(real);
}

static void directive(struct ini_reader *rd, const char *file, int line, char *s)
{
    struct conf_report *rep = rd->h->rep;
    size_t n = strcspn(s, " \t");
    if (n != strlen("%include") || strncmp(s, "%include", n) != 0) {
        conf_error(rep, file, line, "unknown directive \"%.*s\"", (int)n, s);
        return;
    }
    char *name = trim(s + n);
    if (!*name) {
        conf_error(rep, file, line, "%%include needs a file name");
        return;
    }
    char *path = rd->depth == 0 && rd->from_string ? strdup(name) : include_path(file, name);
    if (!path) {
        rep->oom = true;
        return;
    }
    include_file(rd, file, line, path);
    free(path);
}

static void section(struct ini_reader *rd, const char *file, int line, char *s)
{
    struct conf_report *rep = rd->h->rep;
    char *end = strchr(s, ']');
    if (!end) {
        conf_error(rep, file, line, "unterminated section header (expected \"]\")");
        return;
    }
    *end = '\0';
    char *rest = trim(end + 1);
    if (*rest && *rest != ';' && *rest != '#')
        conf_error(rep, file, line, "unexpected text after section header: \"%s\"", rest);
    char *name = trim(s + 1);
    if (!*name) {
        conf_error(rep, file, line, "empty section name");
        return;
    }
    rd->h->section(rd->h->arg, file, line, name);
}

/* `"quoted key" = value`: unquote in place; returns the text after it. */
static char *quoted_key(char *s, bool *ok)
{
    char *out = s, *p = s + 1;
    *ok = false;
    for (; *p; p++) {
        if (*p == '"' && p[1] == '"') {
            *out++ = '"';
            p++;
        } else if (*p == '"') {
            *out = '\0';
            *ok = true;
            return p + 1;
        } else {
            *out++ = *p;
        }
    }
    return p;
}

static void key_line(struct ini_reader *rd, const char *file, int line, char *s)
{
    struct conf_report *rep = rd->h->rep;
    char *key = s, *eq;
    if (*s == '"') {
        bool ok;
        eq = quoted_key(s, &ok);
        if (!ok) {
            conf_error(rep, file, line, "unterminated quoted key");
            return;
        }
        eq += strspn(eq, " \t");
        if (*eq != '=') {
            conf_error(rep, file, line, "syntax error: expected \"=\" after the quoted key");
            return;
        }
    } else {
        eq = strchr(s, '=');
        if (!eq) {
            conf_error(rep, file, line, "syntax error: expected \"key = value\", got \"%s\"", s);
            return;
        }
        *eq = '\0';
        key = trim(s);
        if (!*key) {
            conf_error(rep, file, line, "syntax error: no key before \"=\"");
            return;
        }
    }
    *eq = '\0';
    rd->h->key(rd->h->arg, file, line, key, trim(eq + 1));
}

static void parse_line(struct ini_reader *rd, const char *file, int line, char *s)
{
    s = trim(s);
    if (*s == '\0' || *s == ';' || *s == '#')
        return;
    if (*s == '[')
        section(rd, file, line, s);
    else if (*s == '%')
        directive(rd, file, line, s);
    else
        key_line(rd, file, line, s);
}

static void parse_text(struct ini_reader *rd, const char *file, char *text)
{
    if (strncmp(text, "\xef\xbb\xbf", 3) == 0)     /* UTF-8 byte order mark */
        text += 3;
    int line = 0;
    while (*text) {
        char *nl = strchr(text, '\n');
        char *next = nl ? nl + 1 : text + strlen(text);
        if (nl)
            *nl = '\0';
        parse_line(rd, file, ++line, text);
        text = next;
    }
}

int conf_ini_load_file(const struct conf_ini_handler *h, const char *path)
{
    struct ini_reader rd = { .h = h };
    char err[CONF_ERRLEN];
    int errline;
    char *text = conf_read_file(path, err, sizeof(err), &errline);
    if (!text) {
        conf_error(h->rep, path, errline, "%s", err);
        return PGW_ECONFIG;
    }
    rd.stack[0] = realpath(path, NULL);
    parse_text(&rd, path, text);
    free(rd.stack[0]);
    free(text);
    return 0;
}

int conf_ini_load_string(const struct conf_ini_handler *h, const char *name, const char *text)
{
    struct ini_reader rd = { .h = h, .from_string = true };
    char *copy = strdup(text);
    if (!copy)
        return PGW_ENOMEM;
    parse_text(&rd, name, copy);
    free(copy);
    return 0;
}
