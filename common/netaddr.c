/*
 * netaddr.c - reading a numeric network address (see netaddr.h).
 */
#include "common/netaddr.h"

#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

bool pgw_addr_numeric(const char *s, bool brackets, int *family, uint8_t out[16])
{
    char buf[128];
    size_t n = strlen(s);
    memset(out, 0, 16);
    if (brackets && n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    struct addrinfo hints = { .ai_flags = AI_NUMERICHOST, .ai_family = AF_UNSPEC };
    struct addrinfo *res = NULL;
    if (getaddrinfo(buf, NULL, &hints, &res) != 0 || !res)
        return false;
    bool ok = true;
    if (res->ai_family == AF_INET) {
        memcpy(out, &((struct sockaddr_in *)res->ai_addr)->sin_addr, 4);
        *family = AF_INET;
    } else if (res->ai_family == AF_INET6) {
        memcpy(out, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, 16);
        *family = AF_INET6;
    } else {
        ok = false;
    }
    freeaddrinfo(res);
    return ok;
}
