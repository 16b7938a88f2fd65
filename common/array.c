/* array.c - see array.h. */
#include "common/array.h"

#include <stdint.h>
#include <stdlib.h>

void *pgw_array_grow(void *arr, size_t elem, size_t n, size_t *cap, size_t first)
{
    if (n < *cap)
        return arr;
    size_t c = *cap;
    while (c <= n) {
        if (c > SIZE_MAX / 2)
            return NULL;
        c = c ? 2 * c : first ? first : 1;
    }
    if (c > SIZE_MAX / elem)
        return NULL;
    void *grown = realloc(arr, c * elem);
    if (grown)
        *cap = c;
    return grown;
}
