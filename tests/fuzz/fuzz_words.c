/*
 * fuzz_words.c - the relay's scan of a Query's or Parse's text for what may
 * change a tracked parameter (pgw_relay_text_words): it runs on every
 * Query and Parse a client sends, over bytes the client chose.
 *
 * The input's first byte picks the tracked names asked for (want); the rest
 * is the text, in a heap block of exactly its size (no NUL: the scan is
 * given the length, and reads past it trip ASan).  Checked: only the kind
 * bits (SET, RESET, the HOLD / TEMP / MAKE words of what a transaction
 * may leave on its server, and the SQL PREPARE / EXECUTE / DEALLOCATE
 * words) and names
 * asked for come back; the kind bits
 * do not depend on what was asked for.
 */
#include "proxy/proxy_int.h"
#include "fuzz_util.h"

static struct pgw_proxy px;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    static const char *const names[] = { "extra_float_digits", "search_path", "myext.mode",
                                         "xmloption", "default_transaction_isolation",
                                         "DateStyle" };
    for (int i = 0; i < 6; i++) {
        px.tracked[i] = names[i];
        px.tracked_len[i] = strlen(names[i]);
    }
    px.ntracked = 6;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t want = data[0];
    size_t n = size - 1;
    uint8_t *text = malloc(n ? n : 1);
    if (!text)
        abort();
    memcpy(text, data + 1, n);
    const uint32_t kinds = PGW_WORDS_SET | PGW_WORDS_RESET | PGW_WORDS_STATE | PGW_WORDS_PREPARE |
                           PGW_WORDS_EXECUTE | PGW_WORDS_PREPARE_IN | PGW_WORDS_DEALLOCATE;
    uint32_t names = (1u << px.ntracked) - 1;
    uint32_t got = pgw_relay_text_words(&px, text, n, want);
    uint32_t none = pgw_relay_text_words(&px, text, n, 0);
    uint32_t all = pgw_relay_text_words(&px, text, n, UINT32_MAX);
    if ((got & ~(kinds | (want & names))) || (none & ~kinds) || (all & ~(kinds | names)))
        abort();
    if ((got & kinds) != (none & kinds) || (all & kinds) != (none & kinds))
        abort();
    if ((got & names) != (all & want & names))
        abort();                 /* a name found is found whatever else is asked */
    free(text);
    return 0;
}
