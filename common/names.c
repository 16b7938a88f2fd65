/* names.c - see names.h. */
#include "common/names.h"
#include "common/err.h"

#include <stdlib.h>
#include <string.h>

int pgw_names_find(const struct pgw_names *ns, const char *name)
{
    for (int i = 0; i < ns->n; i++)
        if (strcmp(ns->v[i], name) == 0)
            return i;
    return -1;
}

int pgw_names_add(struct pgw_names *ns, const char *name)
{
    if (pgw_names_has(ns, name))
        return 0;
    char **v = realloc(ns->v, sizeof(*v) * (size_t)(ns->n + 1));
    char *copy = strdup(name);
    if (v)
        ns->v = v;
    if (!v || !copy) {
        free(copy);
        return PGW_ENOMEM;
    }
    ns->v[ns->n++] = copy;
    return 1;
}

bool pgw_names_remove(struct pgw_names *ns, const char *name)
{
    int i = pgw_names_find(ns, name);
    if (i < 0)
        return false;
    free(ns->v[i]);
    ns->v[i] = ns->v[--ns->n];
    return true;
}

void pgw_names_clear(struct pgw_names *ns)
{
    for (int i = 0; i < ns->n; i++)
        free(ns->v[i]);
    ns->n = 0;
}

void pgw_names_deinit(struct pgw_names *ns)
{
    pgw_names_clear(ns);
    free(ns->v);
    pgw_names_init(ns);
}

int pgw_comma_count(const char *list)
{
    if (!list || !*list)
        return 0;
    int n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    return n;
}

bool pgw_comma_item(const char *list, int i, char *out, size_t len)
{
    const char *p = list ? list : "";
    for (; i > 0 && *p; i--) {
        p += strcspn(p, ",");
        if (*p)
            p++;
    }
    size_t n = strcspn(p, ",");
    if (n >= len) {
        if (len)
            out[0] = '\0';
        return false;
    }
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}
