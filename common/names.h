/*
 * names.h - a small set of strings (database names the admin console
 * PAUSEd or DISABLEd): an unsorted array of copies, found by strcmp.  Meant
 * for a handful of names; nothing here is on a per-query path.
 */
#ifndef PGW_COMMON_NAMES_H
#define PGW_COMMON_NAMES_H

#include <stdbool.h>
#include <stddef.h>

struct pgw_names {
    char **v;
    int n;
};

/* A zeroed struct pgw_names is an empty set. */
static inline void pgw_names_init(struct pgw_names *ns)
{
    ns->v = NULL;
    ns->n = 0;
}

/* Index of name in the set, or -1. */
int pgw_names_find(const struct pgw_names *ns, const char *name);

static inline bool pgw_names_has(const struct pgw_names *ns, const char *name)
{
    return pgw_names_find(ns, name) >= 0;
}

/* Add a copy of name: 1 when added, 0 when already there, PGW_ENOMEM
 * (the set unchanged) when memory is short. */
int pgw_names_add(struct pgw_names *ns, const char *name);

/* Remove name: true when it was there.  Order is not kept. */
bool pgw_names_remove(struct pgw_names *ns, const char *name);

/* Empty the set (keeps the array for reuse). */
void pgw_names_clear(struct pgw_names *ns);

/* Free everything; the set is empty again after. */
void pgw_names_deinit(struct pgw_names *ns);

#endif
