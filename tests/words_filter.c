/*
 * words_filter.c - pgw_relay_text_words as a filter, for the differential
 * test against PostgreSQL (tests/integration/test_words_differential.py):
 * the input is texts, each a 4-byte little-endian length and its bytes;
 * each output line is the scan's words of one text in hex (no tracked
 * names: only the kind bits).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "proxy/proxy_int.h"

int main(void)
{
    static struct pgw_proxy px;
    uint8_t len[4];
    while (fread(len, 1, 4, stdin) == 4) {
        size_t n = (size_t)len[0] | (size_t)len[1] << 8 | (size_t)len[2] << 16 |
                   (size_t)len[3] << 24;
        uint8_t *text = malloc(n ? n : 1);     /* exactly its size: ASan sees overreads */
        if (!text || fread(text, 1, n, stdin) != n)
            return 2;
        printf("%08x\n", (unsigned)pgw_relay_text_words(&px, text, n, 0));
        free(text);
    }
    return ferror(stdin) ? 2 : 0;
}
