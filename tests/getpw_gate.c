/*
 * getpw_gate.c - an LD_PRELOAD library that holds getpwuid_r until a test
 * lets it go, standing in for an NSS backend (LDAP, sssd) that is slow to
 * answer.
 *
 * With PGW_GETPW_GATE naming a FIFO that exists, each getpwuid_r call first
 * opens it for reading, which blocks until a writer opens it, then reads
 * to end of file; without the variable, or once the FIFO is gone, it is
 * glibc's getpwuid_r at once.  A test sees a call waiting at the gate when
 * open(fifo, O_WRONLY | O_NONBLOCK) succeeds (ENXIO while nobody reads),
 * and releases it by closing that descriptor (unlinking the FIFO first lets
 * later calls through too).
 *
 * tests/integration/test_auth.py uses it to show that a peer login waiting
 * on the user database leaves the rest of pgwharf running.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

typedef int (*getpwuid_r_fn)(uid_t, struct passwd *, char *, size_t, struct passwd **);

int getpwuid_r(uid_t uid, struct passwd *pw, char *buf, size_t len, struct passwd **result)
{
    getpwuid_r_fn real = (getpwuid_r_fn)dlsym(RTLD_NEXT, "getpwuid_r");
    const char *gate = getenv("PGW_GETPW_GATE");
    if (gate && *gate) {
        int fd = open(gate, O_RDONLY);
        if (fd >= 0) {
            char c[64];
            while (read(fd, c, sizeof(c)) > 0)
                ;
            close(fd);
        }
    }
    if (!real) {
        *result = NULL;
        return 38;                    /* ENOSYS */
    }
    return real(uid, pw, buf, len, result);
}
