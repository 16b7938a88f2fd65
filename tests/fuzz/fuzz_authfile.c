/*
 * fuzz_authfile.c - the auth_file parser (conf/conf.h pgw_authfile_parse):
 * PgBouncer's `"user" "secret"` lines with "" escapes and comments.
 * Every entry found must be found again by pgw_authfile_lookup.
 */
#include "conf/conf.h"
#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    struct pgw_auth_file *af = NULL;
    struct pgw_conf_diag diag = { 0 };
    int rc = pgw_authfile_parse("userlist.txt", text, &af, &diag);
    if (rc == 0) {
        if (!af || af->n < 0)
            abort();
        for (int i = 0; i < af->n; i++) {
            fuzz_touch(af->entries[i].user);
            fuzz_touch(af->entries[i].secret);
            /* The later duplicate wins: whatever lookup returns, it is there. */
            if (!pgw_authfile_lookup(af, af->entries[i].user))
                abort();
        }
        pgw_authfile_lookup(af, "");
        pgw_authfile_lookup(af, "nobody-of-that-name");
        pgw_authfile_free(af);
    } else if (af) {
        abort();
    }
    for (int i = 0; i < diag.nerrors; i++)
        fuzz_touch(diag.errors[i]);
    for (int i = 0; i < diag.nwarnings; i++)
        fuzz_touch(diag.warnings[i]);
    pgw_conf_diag_free(&diag);
    free(text);
    return 0;
}
