/*
 * saslprep_int.h - the Unicode 3.2 tables of SASLprep, generated into
 * saslprep_tables.c by scripts/gen_saslprep.py; used by saslprep.c only.
 */
#ifndef PGW_PROXY_SASLPREP_INT_H
#define PGW_PROXY_SASLPREP_INT_H

#include <stddef.h>
#include <stdint.h>

struct pgw_sp_range {
    uint32_t lo, hi;
};

struct pgw_sp_ccc {
    uint32_t lo, hi;
    uint8_t ccc;
};

/* cp decomposes to pgw_sp_pool[off .. off+len); when run > 0, cp+k
 * (k <= run) decomposes to the single character pgw_sp_pool[off] + k. */
struct pgw_sp_decomp {
    uint32_t cp;
    uint16_t off;
    uint8_t len;
    uint8_t run;
};

struct pgw_sp_compose {
    uint32_t first, second, composed;
};

extern const struct pgw_sp_range pgw_sp_map_to_nothing[], pgw_sp_non_ascii_space[],
    pgw_sp_prohibited[], pgw_sp_unassigned[], pgw_sp_randalcat[], pgw_sp_lcat[];
extern const size_t pgw_sp_map_to_nothing_n, pgw_sp_non_ascii_space_n, pgw_sp_prohibited_n,
    pgw_sp_unassigned_n, pgw_sp_randalcat_n, pgw_sp_lcat_n;
extern const struct pgw_sp_ccc pgw_sp_ccc[];
extern const size_t pgw_sp_ccc_n;
extern const struct pgw_sp_decomp pgw_sp_decomp[];
extern const size_t pgw_sp_decomp_n;
extern const uint32_t pgw_sp_pool[];
extern const struct pgw_sp_compose pgw_sp_compose[];
extern const size_t pgw_sp_compose_n;

#endif
