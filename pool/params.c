/*
 * params.c - a small table of server parameters (ParameterStatus
 * name/value pairs) kept per server and per pool.  A pair is kept inline
 * ("name\0value\0" in the entry) when it fits, which PostgreSQL's own
 * values do: setting one then allocates nothing.  A longer pair (a long
 * search_path, a POSIX TimeZone spec, a custom GUC's long name) goes to
 * the heap, so the table owns memory: pgw_params_deinit frees it and
 * pgw_params_copy copies it (never copy a table by assignment).
 */
#include "pool/pool.h"

#include <stdlib.h>
#include <string.h>

static const char *param_name(const struct pgw_param *p)
{
    return p->heap ? p->heap : p->buf;
}

const char *pgw_param_name(const struct pgw_param *p)
{
    return param_name(p);
}

const char *pgw_param_value(const struct pgw_param *p)
{
    return param_name(p) + p->nl + 1;
}

static struct pgw_param *find(const struct pgw_params *ps, const char *name)
{
    for (int i = 0; i < ps->n; i++)
        if (strcmp(param_name(&ps->p[i]), name) == 0)
            return (struct pgw_param *)&ps->p[i];
    return NULL;
}

const char *pgw_params_get(const struct pgw_params *ps, const char *name)
{
    const struct pgw_param *p = find(ps, name);
    return p ? pgw_param_value(p) : NULL;
}

static void drop(struct pgw_params *ps, struct pgw_param *p)
{
    free(p->heap);
    *p = ps->p[--ps->n];
    ps->p[ps->n].heap = NULL;
    ps->gen++;
}

/* value may point into ps (another entry's, or this one's own): the new
 * copy is made before the old storage goes. */
bool pgw_params_set(struct pgw_params *ps, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    struct pgw_param *p = find(ps, name);
    if (!p && ps->n >= PGW_MAX_PARAMS)
        return false;
    if (nl > UINT32_MAX || vl > SIZE_MAX - nl - 2)
        goto fail;
    if (nl + vl + 2 <= sizeof(p->buf)) {
        if (!p) {
            p = &ps->p[ps->n++];
            p->heap = NULL;
        }
        /* (name and value may be its own, in buf or in heap) */
        memmove(p->buf, name, nl + 1);
        memmove(p->buf + nl + 1, value, vl + 1);
        free(p->heap);
        p->heap = NULL;
    } else {
        char *h = malloc(nl + vl + 2);
        if (!h)
            goto fail;
        memcpy(h, name, nl + 1);
        memcpy(h + nl + 1, value, vl + 1);
        if (!p) {
            p = &ps->p[ps->n++];
            p->heap = NULL;
        }
        free(p->heap);
        p->heap = h;
    }
    p->nl = (uint32_t)nl;
    ps->gen++;
    return true;
fail:
    /* Out of memory: the old value must not pass for the new one. */
    if (p)
        drop(ps, p);
    return false;
}

/* A failed set of a new name with PGW_MAX_PARAMS there changed nothing; one
 * out of memory left fewer (a new name is not stored, an old one dropped). */
bool pgw_params_full(const struct pgw_params *ps)
{
    return ps->n >= PGW_MAX_PARAMS;
}

bool pgw_params_unset(struct pgw_params *ps, const char *name)
{
    struct pgw_param *p = find(ps, name);
    if (!p)
        return false;
    drop(ps, p);
    return true;
}

void pgw_params_deinit(struct pgw_params *ps)
{
    for (int i = 0; i < ps->n; i++) {
        free(ps->p[i].heap);
        ps->p[i].heap = NULL;
    }
    ps->n = 0;
    ps->gen++;
}

bool pgw_params_copy(struct pgw_params *dst, const struct pgw_params *src)
{
    if (dst == src)
        return true;
    /* The long ones first, so a failure leaves dst as it was. */
    char *heap[PGW_MAX_PARAMS];
    for (int i = 0; i < src->n; i++) {
        heap[i] = NULL;
        const struct pgw_param *p = &src->p[i];
        if (!p->heap)
            continue;
        size_t len = p->nl + 1 + strlen(p->heap + p->nl + 1) + 1;
        if (!(heap[i] = malloc(len))) {
            while (i-- > 0)
                free(heap[i]);
            return false;
        }
        memcpy(heap[i], p->heap, len);
    }
    uint32_t gen = dst->gen;
    pgw_params_deinit(dst);
    for (int i = 0; i < src->n; i++) {
        dst->p[i] = src->p[i];
        dst->p[i].heap = heap[i];
    }
    dst->n = src->n;
    dst->gen = gen + 1;
    return true;
}
