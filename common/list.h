/*
 * list.h - intrusive circular doubly linked list (the Linux/nginx shape).
 * A struct pgw_list is embedded in the object it links; pgw_container_of
 * recovers the object.  An unlinked node points to itself.
 */
#ifndef PGW_COMMON_LIST_H
#define PGW_COMMON_LIST_H

#include <stddef.h>
#include <stdbool.h>

#define pgw_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

struct pgw_list {
    struct pgw_list *next, *prev;
};

static inline void pgw_list_init(struct pgw_list *l) { l->next = l->prev = l; }
static inline bool pgw_list_empty(const struct pgw_list *l) { return l->next == l; }
static inline bool pgw_list_linked(const struct pgw_list *n) { return n->next != n; }

static inline void pgw_list_insert_(struct pgw_list *n, struct pgw_list *prev,
                                    struct pgw_list *next)
{
    n->next = next;
    n->prev = prev;
    prev->next = n;
    next->prev = n;
}
/* Append at the tail (FIFO order with pgw_list_first). */
static inline void pgw_list_append(struct pgw_list *head, struct pgw_list *n)
{
    pgw_list_insert_(n, head->prev, head);
}
/* Insert at the head (LIFO order with pgw_list_first). */
static inline void pgw_list_prepend(struct pgw_list *head, struct pgw_list *n)
{
    pgw_list_insert_(n, head, head->next);
}
static inline void pgw_list_del(struct pgw_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    pgw_list_init(n);
}
static inline struct pgw_list *pgw_list_first(const struct pgw_list *head)
{
    return head->next == head ? NULL : head->next;
}
static inline struct pgw_list *pgw_list_last(const struct pgw_list *head)
{
    return head->prev == head ? NULL : head->prev;
}
static inline size_t pgw_list_count(const struct pgw_list *head)
{
    size_t n = 0;
    for (const struct pgw_list *i = head->next; i != head; i = i->next)
        n++;
    return n;
}

/* Iterate; safe against removal of the current node. */
#define pgw_list_foreach_safe(pos, tmp, head) \
    for (pos = (head)->next, tmp = pos->next; pos != (head); pos = tmp, tmp = pos->next)

#endif
