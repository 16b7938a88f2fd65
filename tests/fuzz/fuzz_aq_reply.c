/*
 * fuzz_aq_reply.c - the auth_query reply parser (proxy/aq_reply.h) fed a
 * server's reply in pieces whose sizes come from the input, as reads would
 * deliver it.  Properties: nothing reads out of bounds or leaks; however
 * the reply is cut, the result (failed, its SQLSTATE, rows, ReadyForQuery,
 * the secret) is the same as when it comes whole.  (dirty may differ: bytes
 * after ReadyForQuery count only when they came in the same read.)
 *
 * Input: bytes 0..7 give chunk sizes, the rest is the reply.
 */
#include "fuzz_util.h"
#include "proxy/aq_reply.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pgw_log_set_level(PGW_LOG_FATAL);
    return 0;
}

/* Feed p in pieces (cuts NULL: as much as fits); stop when it is over. */
static bool feed(struct pgw_aq_reply *r, const uint8_t *p, size_t n, const uint8_t *cuts)
{
    size_t i = 0, c = 0;
    while (i < n) {
        size_t room = sizeof(r->in) - r->in_len;
        size_t k = cuts ? (size_t)cuts[c++ % 8] % 97 + 1 : room;
        if (k > n - i)
            k = n - i;
        if (k > room)
            k = room;
        if (k == 0)
            abort();          /* every message the parser keeps fits in in[] */
        memcpy(r->in + r->in_len, p + i, k);
        r->in_len += (uint32_t)k;
        i += k;
        if (pgw_aq_reply_take(r))
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    const uint8_t *cuts = data;
    const uint8_t *p = data + 8;
    size_t n = size - 8;
    struct pgw_aq_reply *whole = calloc(1, sizeof(*whole));
    struct pgw_aq_reply *split = calloc(1, sizeof(*split));
    if (!whole || !split)
        abort();
    bool ow = feed(whole, p, n, NULL);
    bool os = feed(split, p, n, cuts);
    if (ow && os) {
        if (whole->failed != split->failed || whole->rows != split->rows || whole->at_ready != split->at_ready ||
            strcmp(whole->sqlstate, split->sqlstate) != 0)
            abort();
        if ((whole->secret == NULL) != (split->secret == NULL) ||
            (whole->secret && strcmp(whole->secret, split->secret) != 0))
            abort();
    }
    free(whole->secret);
    free(split->secret);
    free(whole);
    free(split);
    return 0;
}
