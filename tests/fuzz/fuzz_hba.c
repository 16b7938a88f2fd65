/*
 * fuzz_hba.c - auth_hba_file in pg_hba.conf syntax (proxy/hba.h): fields,
 * quoting, continuation lines, keyword lists, addresses and masks, methods.
 * A file that parses is then matched against a few connections (unix
 * socket, IPv4, IPv6, IPv4-mapped IPv6; with and without TLS); the answer
 * must be a known method and name a rule line within the file, or 0 with
 * reject, and a map only for peer and cert.  The same text is then read as
 * auth_ident_file (pg_ident.conf) and a few identities are mapped.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/err.h"
#include "fuzz_util.h"
#include "proxy/hba.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

static int count_lines(const char *text)
{
    int n = 1;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

static void match_all(const struct pgw_hba *hba, int nlines)
{
    struct sockaddr_in v4 = { .sin_family = AF_INET };
    struct sockaddr_in6 v6 = { .sin6_family = AF_INET6 }, mapped = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr);
    inet_pton(AF_INET6, "::1", &v6.sin6_addr);
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &mapped.sin6_addr);
    const struct sockaddr *addrs[] = { (const struct sockaddr *)&v4,
                                       (const struct sockaddr *)&v6,
                                       (const struct sockaddr *)&mapped };
    static const char *const dbs[] = { "app", "all", "replication", "pgbouncer" };
    static const char *const users[] = { "app", "bob", "all", "app" };
    for (int a = -1; a < 3; a++) {
        for (int k = 0; k < 4; k++) {
            for (int tls = 0; tls < 2; tls++) {
                int line = -1;
                const char *map = "unset";
                enum pgw_hba_method m = pgw_hba_match(hba, a < 0, tls,
                                                      a < 0 ? NULL : addrs[a], dbs[k],
                                                      users[k], &line, &map);
                if ((int)m < PGW_HBA_REJECT || (int)m > PGW_HBA_PEER)
                    abort();
                if (line < 0 || line > nlines || (line == 0 && m != PGW_HBA_REJECT))
                    abort();
                if (map && (m != PGW_HBA_PEER && m != PGW_HBA_CERT))
                    abort();
                if (m == PGW_HBA_PEER && a >= 0)
                    abort();                    /* peer is for local rules only */
                fuzz_touch(pgw_hba_method_name(m));
                if (map)
                    fuzz_touch(map);
            }
        }
    }
}

/* The text as auth_ident_file, then a few identities mapped with it. */
static void ident_all(struct pgw_hba *hba, const char *text)
{
    struct pgw_conf_diag diag = { 0 };
    int rc = pgw_hba_parse_ident(hba, "ident.conf", text, &diag);
    if (rc != 0 && rc != PGW_ECONFIG && rc != PGW_ENOMEM)
        abort();
    for (int i = 0; i < diag.nerrors; i++)
        if (strncmp(diag.errors[i], "ident.conf:", 11) != 0)
            abort();
    pgw_conf_diag_free(&diag);
    static const char *const names[] = { "app", "root", "all", "m", "" };
    int nlines = count_lines(text);
    for (int i = 0; i < 5; i++) {
        for (int j = 0; j < 5; j++) {
            int line = -1;
            bool ok = pgw_hba_usermap(hba, names[j][0] ? names[j] : NULL, names[i], "app", &line);
            if (line < 0 || line > nlines || (!ok && line != 0) || (rc != 0 && names[j][0] && ok))
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    struct pgw_hba *hba = NULL;
    struct pgw_conf_diag diag = { 0 };
    int rc = pgw_hba_parse("hba.conf", text, &hba, &diag);
    if (rc == 0) {
        if (!hba || pgw_hba_count(hba) < 0)
            abort();
        match_all(hba, count_lines(text));
    } else if (rc != PGW_ECONFIG && rc != PGW_ENOMEM) {
        abort();
    } else if (pgw_hba_parse("hba.conf", "", &hba, NULL) != 0) {
        hba = NULL;
    }
    if (hba) {
        ident_all(hba, text);
        pgw_hba_free(hba);
    }
    for (int i = 0; i < diag.nerrors; i++)
        if (strncmp(diag.errors[i], "hba.conf:", 9) != 0)
            abort();
    pgw_conf_diag_free(&diag);
    free(text);
    return 0;
}
