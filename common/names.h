/*
 * names.h - a small set of strings (database names the admin console
 * PAUSEd or DISABLEd): an unsorted array of copies, found by strcmp.  Meant
 * for a handful of names; nothing here is on a per-query path.  Also the
 * items of a libpq-style comma list (host, hostaddr, port), as the pool
 * and the config's checks split them.
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

/* A libpq-style comma list ("h1,h2"): how many items it has (0 for NULL
 * or ""), and its i-th item copied into out (an i past the end gives the
 * empty string).  false, out "", when the item does not fit in len. */
int pgw_comma_count(const char *list);
bool pgw_comma_item(const char *list, int i, char *out, size_t len);

#endif
