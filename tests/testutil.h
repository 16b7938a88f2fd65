/*
 * testutil.h - helpers shared by the C tests: reading the integration
 * environment file ($PGW_TEST_ENV, written by tests/pgcluster.sh) and
 * stepping an ev_loop until a condition holds.
 */
#ifndef PGW_TESTS_TESTUTIL_H
#define PGW_TESTS_TESTUTIL_H

#include <ev.h>
#include <stdbool.h>

/* The value of KEY in the $PGW_TEST_ENV file (e.g. "PGW_TEST_PGPORT"), or
 * NULL when the file or key is missing.  The string lives until exit. */
const char *pgw_test_env(const char *key);

/* Run the loop (EVRUN_ONCE steps) until *flag is true or `seconds` of wall
 * time pass; returns *flag.  A bound, not a timing assertion. */
bool pgw_test_run_until(struct ev_loop *loop, const bool *flag, double seconds);

/* Number of open file descriptors of this process. */
int pgw_test_fd_count(void);

#endif
