/*
 * fuzz_track_model.c - the relay's release tracker (proxy/track.h) against
 * a model PostgreSQL backend (tests/track_model.h): the input is a script
 * of the client's messages, the ways the server answers them and when the
 * answers arrive.  Property: the server is never given back with a reply
 * still to come (the next client would read it), and is given back once
 * nothing is (outside the cases the tracker keeps it by design).
 */
#include "fuzz_util.h"
#include "../track_model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    pgw_log_set_level(PGW_LOG_FATAL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    uint8_t *copy = malloc(size ? size : 1);     /* exact size: ASan sees overruns */
    if (!copy)
        abort();
    memcpy(copy, data, size);
    enum track_model_result r = track_model_run(copy, size);
    free(copy);
    if (r != TRACK_MODEL_OK)
        abort();
    return 0;
}
