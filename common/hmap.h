/*
 * hmap.h - an intrusive chained hash map.  The caller embeds a struct
 * pgw_hnode in its object, computes the hash, and compares keys itself
 * while walking a bucket (pgw_hmap_first / pgw_hmap_next with the same
 * hash).  Grows by doubling; never allocates per entry.
 */
#ifndef PGW_COMMON_HMAP_H
#define PGW_COMMON_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct pgw_hnode {
    struct pgw_hnode *next;
    uint64_t hash;
};

struct pgw_hmap {
    struct pgw_hnode **buckets;
    size_t nbuckets;          /* a power of two, or 0 before first insert */
    size_t count;
};

static inline void pgw_hmap_init(struct pgw_hmap *m)
{
    m->buckets = NULL;
    m->nbuckets = m->count = 0;
}
void pgw_hmap_deinit(struct pgw_hmap *m);          /* frees buckets, not entries */
/* Returns 0 or PGW_ENOMEM (the entry is then not inserted). */
int pgw_hmap_insert(struct pgw_hmap *m, struct pgw_hnode *n, uint64_t hash);
void pgw_hmap_remove(struct pgw_hmap *m, struct pgw_hnode *n);
struct pgw_hnode *pgw_hmap_first(const struct pgw_hmap *m, uint64_t hash);
struct pgw_hnode *pgw_hmap_next(const struct pgw_hnode *n);   /* same hash */
/* Visit every entry (any order); the callback may not modify the map. */
struct pgw_hnode *pgw_hmap_iter(const struct pgw_hmap *m, size_t *bucket, struct pgw_hnode *prev);

uint64_t pgw_hash_bytes(const void *p, size_t n, uint64_t seed);

#endif
