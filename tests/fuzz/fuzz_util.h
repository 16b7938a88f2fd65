/*
 * fuzz_util.h - small helpers shared by the libFuzzer targets in this folder.
 *
 * Every target gets bytes from libFuzzer; the string parsers want a C
 * string.  fuzz_cstr() copies the input into a heap block of exactly
 * size + 1 bytes (so ASan sees any read past the end) with a NUL after it.
 */
#ifndef PGW_FUZZ_UTIL_H
#define PGW_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Touch every byte of a NUL-terminated string the parser handed back, so
 * a pointer outside the input (or a missing terminator) trips ASan. */
static inline size_t fuzz_touch(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Parsers may log (hba, conf): keep the fuzzer's output readable. */
static inline void fuzz_quiet_logs(void)
{
    pgw_log_set_level(PGW_LOG_FATAL);
}

#endif
