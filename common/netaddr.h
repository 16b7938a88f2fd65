/*
 * netaddr.h - reading a numeric network address, once for every part that
 * compares addresses (auth_hba_file's rules, the metrics_port/listen_port
 * overlap check of the config).
 */
#ifndef PGW_COMMON_NETADDR_H
#define PGW_COMMON_NETADDR_H

#include <stdbool.h>
#include <stdint.h>

/* A numeric address into *family (AF_INET, AF_INET6) and out (4 or 16
 * bytes, the rest zero), read as PostgreSQL reads pg_hba.conf's
 * (getaddrinfo with AI_NUMERICHOST: "127.1" too, an IPv6 zone such as
 * "fe80::1%lo" accepted and not kept).  With brackets true an IPv6 address
 * may come in [ ] as in listen_addr.  No name look-up: false for a name. */
bool pgw_addr_numeric(const char *s, bool brackets, int *family, uint8_t out[16]);

#endif
