/*
 * saslprep_filter.c - pgw_saslprep as a filter, for the comparison with
 * Python's stringprep (scripts/gen_saslprep.py --check, ctest
 * unit.saslprep_reference): each input line is a password in hex, each
 * output line "<rc>" or "<rc> <prepped password in hex>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/scram.h"

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int main(void)
{
    static char line[16384], pw[8192];
    while (fgets(line, sizeof(line), stdin)) {
        size_t n = strcspn(line, "\n"), k = 0;
        for (size_t i = 0; i + 1 < n && k + 1 < sizeof(pw); i += 2) {
            int hi = hexval(line[i]), lo = hexval(line[i + 1]);
            if (hi < 0 || lo < 0)
                return 2;
            pw[k++] = (char)(hi << 4 | lo);
        }
        pw[k] = '\0';
        char *out = NULL;
        int rc = pgw_saslprep(pw, &out);
        printf("%d", rc);
        if (out) {
            putchar(' ');
            for (const unsigned char *p = (const unsigned char *)out; *p; p++)
                printf("%02x", *p);
        }
        putchar('\n');
        free(out);
    }
    return 0;
}
