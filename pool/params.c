/*
 * params.c - a small fixed table of server parameters (ParameterStatus
 * name/value pairs) kept per server, with no allocation.
 */
#include "pool/pool.h"

#include <string.h>

const char *pgw_params_get(const struct pgw_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].name, name) == 0)
            return ps->p[i].value;
    return NULL;
}

bool pgw_params_set(struct pgw_params *ps, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (nl >= sizeof(ps->p[0].name) || vl >= sizeof(ps->p[0].value))
        return false;
    struct pgw_param *p = NULL;
    for (int i = 0; i < ps->n && !p; i++)
        if (strcmp(ps->p[i].name, name) == 0)
            p = &ps->p[i];
    if (!p) {
        if (ps->n >= PGW_MAX_PARAMS)
            return false;
        p = &ps->p[ps->n++];
        memcpy(p->name, name, nl + 1);
    }
    memcpy(p->value, value, vl + 1);
    ps->gen++;
    return true;
}

bool pgw_params_unset(struct pgw_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++) {
        if (strcmp(ps->p[i].name, name) == 0) {
            ps->p[i] = ps->p[--ps->n];
            ps->gen++;
            return true;
        }
    }
    return false;
}
