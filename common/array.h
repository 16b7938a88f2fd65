/*
 * array.h - room in an array that grows by doubling: the realloc idiom of
 * the small tables (LISTEN channels and subscriptions, virtual statements,
 * RECONNECT marks, stats entries, HBA rules, auth_file lines) in one
 * place.  The caller keeps the pointer, the count and the capacity.
 */
#ifndef PGW_COMMON_ARRAY_H
#define PGW_COMMON_ARRAY_H

#include <stddef.h>

/* Room for element n of arr, which has room for *cap elements of elem (> 0)
 * bytes: arr itself while n < *cap; else arr reallocated to twice *cap
 * (first when *cap is 0) and *cap updated.  NULL when memory is short or
 * the size would overflow: arr, still valid, and *cap are unchanged.
 *
 *     struct rule *r = pgw_array_grow(t->rules, sizeof(*r), t->n, &t->cap, 16);
 *     if (!r)
 *         return PGW_ENOMEM;
 *     t->rules = r;
 *     t->rules[t->n++] = ...;
 */
void *pgw_array_grow(void *arr, size_t elem, size_t n, size_t *cap, size_t first);

#endif
