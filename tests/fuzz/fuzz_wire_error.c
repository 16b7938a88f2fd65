/*
 * fuzz_wire_error.c - ErrorResponse/NoticeResponse bodies as a server sends
 * them (common/wire.h pgw_wire_parse_error), which the relay parses when it
 * swallows replies and the pool when a check or reset query fails.
 *
 * The input is one message body (after the 5-byte header).  Every field
 * handed back must be a NUL-terminated string inside the body or "".  A
 * body pgwharf builds itself with pgw_wire_error() from the input's text
 * must parse back to the same fields (the message possibly cut short).
 */
#include "common/err.h"
#include "common/wire.h"
#include "fuzz_util.h"

static void check_field(const char *f, const uint8_t *body, size_t len)
{
    const uint8_t *p = (const uint8_t *)f;
    if (*f && (p < body || p >= body + len))
        abort();
    fuzz_touch(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *body = malloc(size ? size : 1);
    if (!body)
        abort();
    memcpy(body, data, size);
    struct pgw_wire_err_fields f;
    if (pgw_wire_parse_error(body, size, &f) == 0) {
        check_field(f.severity, body, size);
        check_field(f.sqlstate, body, size);
        check_field(f.message, body, size);
        check_field(f.detail, body, size);
        check_field(f.hint, body, size);
        check_field(f.routine, body, size);
    } else if (!f.severity || !f.sqlstate || !f.message || !f.detail || !f.hint || !f.routine) {
        abort();
    }
    free(body);

    /* Round trip: the input as a message text. */
    char *text = fuzz_cstr(data, size < 4096 ? size : 4096);
    struct pgw_wbuf b;
    pgw_wbuf_init(&b);
    pgw_wire_error(&b, "ERROR", "08P01", "%s", text);
    if (!b.failed) {
        if (b.len < PGW_MSG_HDR || b.data[0] != 'E' || pgw_get_u32(b.data + 1) != b.len - 1)
            abort();
        struct pgw_wire_err_fields g;
        if (pgw_wire_parse_error(b.data + 5, b.len - 5, &g) != 0)
            abort();
        /* Long texts are cut (at 1023 bytes today): a prefix, not garbage. */
        size_t ml = strlen(g.message), tl = strlen(text);
        if (strcmp(g.severity, "ERROR") != 0 || strcmp(g.sqlstate, "08P01") != 0 ||
            ml > tl || memcmp(g.message, text, ml) != 0 || (ml < tl && ml < 1000))
            abort();
    }
    pgw_wbuf_deinit(&b);
    free(text);
    return 0;
}
