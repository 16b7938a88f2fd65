/* hmap.c - see hmap.h. */
#include "common/hmap.h"
#include "common/err.h"

#include <stdlib.h>

void pgw_hmap_deinit(struct pgw_hmap *m)
{
    free(m->buckets);
    pgw_hmap_init(m);
}

static int grow(struct pgw_hmap *m)
{
    size_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
    struct pgw_hnode **b = calloc(nb, sizeof(*b));
    if (!b)
        return PGW_ENOMEM;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct pgw_hnode *n = m->buckets[i];
        while (n) {
            struct pgw_hnode *next = n->next;
            size_t j = n->hash & (nb - 1);
            n->next = b[j];
            b[j] = n;
            n = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = nb;
    return 0;
}

int pgw_hmap_insert(struct pgw_hmap *m, struct pgw_hnode *n, uint64_t hash)
{
    if (m->count >= m->nbuckets && grow(m) < 0 && m->nbuckets == 0)
        return PGW_ENOMEM;
    n->hash = hash;
    size_t i = hash & (m->nbuckets - 1);
    n->next = m->buckets[i];
    m->buckets[i] = n;
    m->count++;
    return 0;
}

void pgw_hmap_remove(struct pgw_hmap *m, struct pgw_hnode *n)
{
    if (!m->nbuckets)
        return;
    struct pgw_hnode **pp = &m->buckets[n->hash & (m->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            m->count--;
            return;
        }
    }
}

struct pgw_hnode *pgw_hmap_first(const struct pgw_hmap *m, uint64_t hash)
{
    if (!m->nbuckets)
        return NULL;
    struct pgw_hnode *n = m->buckets[hash & (m->nbuckets - 1)];
    while (n && n->hash != hash)
        n = n->next;
    return n;
}

struct pgw_hnode *pgw_hmap_next(const struct pgw_hnode *n)
{
    uint64_t h = n->hash;
    for (n = n->next; n && n->hash != h; n = n->next)
        ;
    return (struct pgw_hnode *)n;
}

struct pgw_hnode *pgw_hmap_iter(const struct pgw_hmap *m, size_t *bucket, struct pgw_hnode *prev)
{
    if (prev && prev->next)
        return prev->next;
    size_t i = prev ? *bucket + 1 : 0;
    for (; i < m->nbuckets; i++) {
        if (m->buckets[i]) {
            *bucket = i;
            return m->buckets[i];
        }
    }
    return NULL;
}

uint64_t pgw_hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}
