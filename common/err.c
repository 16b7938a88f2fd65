/* err.c - strings for the codes in err.h, generated from the same list. */
#include "common/err.h"

#define PGW_ERR_TEXT_(name, text) text,
static const char *const err_text[] = { PGW_ERRORS(PGW_ERR_TEXT_) };
#undef PGW_ERR_TEXT_
#define PGW_ERR_NAME_(name, text) #name,
static const char *const err_name[] = { PGW_ERRORS(PGW_ERR_NAME_) };
#undef PGW_ERR_NAME_

const char *pgw_strerror(int err)
{
    int i = -err;
    if (i < 0 || i >= PGW_ERR_COUNT_)
        return "unknown error";
    return err_text[i];
}

const char *pgw_errname(int err)
{
    int i = -err;
    if (i < 0 || i >= PGW_ERR_COUNT_)
        return "PGW_E?";
    return err_name[i];
}
