/*
 * test_hosts.c - unit tests for a database entry's host list
 * (pool/hosts.c): libpq's host, hostaddr and port lists split per host,
 * the load_balance_hosts cursor (round-robin, disable), and one circuit
 * breaker per host: a host whose breaker is open is passed over while
 * another takes the attempts, and is probed again after its cooldown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "common/err.h"
#include "pool/breaker.h"
#include "pool/hosts.h"

static void t_parse(void **state)
{
    struct pgw_host_spec s[4];
    char err[128];
    assert_int_equal(pgw_hosts_count(NULL, NULL), 1);
    assert_int_equal(pgw_hosts_count("", NULL), 1);
    assert_int_equal(pgw_hosts_count("a,b,c", NULL), 3);
    assert_int_equal(pgw_hosts_count(NULL, "10.0.0.1,10.0.0.2"), 2);

    /* one port for every host */
    assert_int_equal(pgw_hosts_parse("a,b,c", NULL, "6000", s, 3, err, sizeof(err)), 3);
    assert_string_equal(s[0].host, "a");
    assert_string_equal(s[2].host, "c");
    assert_string_equal(s[1].port, "6000");
    assert_string_equal(s[2].port, "6000");
    assert_string_equal(s[1].hostaddr, "");
    /* the i-th port, an empty one being libpq's default */
    assert_int_equal(pgw_hosts_parse("a,b,c", NULL, "1,,3", s, 3, err, sizeof(err)), 3);
    assert_string_equal(s[0].port, "1");
    assert_string_equal(s[1].port, "");
    assert_string_equal(s[2].port, "3");
    /* hostaddr pairs with host; a host may be empty (libpq's default) */
    assert_int_equal(pgw_hosts_parse("x,", "10.0.0.1,10.0.0.2", NULL, s, 2, err, sizeof(err)), 2);
    assert_string_equal(s[0].host, "x");
    assert_string_equal(s[1].host, "");
    assert_string_equal(s[1].hostaddr, "10.0.0.2");
    assert_string_equal(s[1].port, "");
    /* no host at all: one target with libpq's defaults */
    assert_int_equal(pgw_hosts_parse(NULL, NULL, NULL, s, 1, err, sizeof(err)), 1);
    assert_string_equal(s[0].host, "");
    assert_string_equal(s[0].port, "");
    /* lists that do not pair up */
    assert_int_equal(pgw_hosts_parse("a,b", NULL, "1,2,3", s, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "3 ports for 2 hosts (expected one, or one per host)");
    assert_int_equal(pgw_hosts_parse("a,b,c", "1.1.1.1,2.2.2.2", NULL, s, 3, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "2 hostaddr values for 3 hosts");
    /* one hostaddr for two hosts: libpq refuses it too ("could not match
     * 2 host names to 1 hostaddr values"), not every host to that one */
    assert_int_equal(pgw_hosts_parse("a,b", "1.1.1.1", NULL, s, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "1 hostaddr value for 2 hosts");
    char longname[300];
    memset(longname, 'h', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(pgw_hosts_parse(longname, NULL, NULL, s, 1, err, sizeof(err)), -1);
}

/* A fake try: per host, what it answers; counts the tries and keeps the
 * first ones (a test resets ntried before the tries it looks at). */
struct fake {
    int answer[4];
    int tried[8];
    int ntried;
};

static int fake_try(int i, void *arg)
{
    struct fake *f = arg;
    if (f->ntried < (int)(sizeof(f->tried) / sizeof(f->tried[0])))
        f->tried[f->ntried] = i;
    f->ntried++;
    return f->answer[i];
}

static void t_round_robin(void **state)
{
    struct pgw_host_cursor c = { .n = 3, .next = 0, .mode = PGW_LB_ROUND_ROBIN };
    struct fake f = { { 0, 0, 0 } };
    /* each attempt takes the next host */
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 0);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 1);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 2);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 0);
    /* a host that cannot take one now is passed over */
    f.answer[1] = PGW_EBREAKER_OPEN;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 2);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 0);
    /* so is one that asks to wait (its rate, its name lookup) */
    f.answer[1] = PGW_EAGAIN;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 2);
    /* a failure does not move a round-robin cursor */
    pgw_hosts_failed(&c, 0);
    assert_int_equal(c.next, 0);
    /* none can: wait when one asked to, else the breaker's refusal */
    f.answer[0] = f.answer[2] = PGW_EBREAKER_OPEN;
    f.ntried = 0;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), PGW_EAGAIN);
    assert_int_equal(f.ntried, 3);
    f.answer[1] = PGW_EBREAKER_OPEN;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), PGW_EBREAKER_OPEN);
}

static void t_disable(void **state)
{
    struct pgw_host_cursor c = { .n = 3, .next = 0, .mode = PGW_LB_DISABLE };
    struct fake f = { { 0, 0, 0 } };
    /* the same host while it works */
    for (int k = 0; k < 4; k++)
        assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 0);
    /* a failed connection moves on to the next host, and it stays there */
    pgw_hosts_failed(&c, 0);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 1);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 1);
    /* a late failure of the old host does not move it again */
    pgw_hosts_failed(&c, 0);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 1);
    /* a host whose breaker is open (another pool saw it fail) is left */
    f.answer[1] = PGW_EBREAKER_OPEN;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 2);
    f.answer[1] = 0;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 2);
    /* the wrap-around */
    pgw_hosts_failed(&c, 2);
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), 0);
    /* a host that asks to wait is waited for, not left */
    f.answer[0] = PGW_EAGAIN;
    f.ntried = 0;
    assert_int_equal(pgw_hosts_choose(&c, fake_try, &f), PGW_EAGAIN);
    assert_int_equal(f.ntried, 1);
    assert_int_equal(c.next, 0);
}

/* One breaker per host, as pool.c's grow_try_host uses them. */
struct two_hosts {
    struct pgw_breaker b[2];
    double now;
    bool probe;
};

static int breaker_try(int i, void *arg)
{
    struct two_hosts *t = arg;
    return pgw_breaker_allow(&t->b[i], t->now, &t->probe) ? 0 : PGW_EBREAKER_OPEN;
}

static void t_breaker_per_host(void **state)
{
    struct two_hosts t = { .now = 100.0 };
    struct pgw_host_cursor c = { .n = 2, .next = 0, .mode = PGW_LB_ROUND_ROBIN };
    pgw_breaker_init(&t.b[0], 3, 1.0, 30.0);
    pgw_breaker_init(&t.b[1], 3, 1.0, 30.0);
    /* host 0 refuses every connection, host 1 answers: every attempt on
     * 0 fails, and the next one goes to 1 */
    int on0 = 0, on1 = 0;
    for (int k = 0; k < 20; k++) {
        int i = pgw_hosts_choose(&c, breaker_try, &t);
        assert_true(i == 0 || i == 1);
        if (i == 0) {
            on0++;
            pgw_breaker_failure(&t.b[0], t.now, t.probe);
            pgw_hosts_failed(&c, 0);
        } else {
            on1++;
            pgw_breaker_success(&t.b[1]);
        }
    }
    /* three failures opened host 0's breaker, and host 1's stayed closed */
    assert_int_equal(on0, 3);
    assert_int_equal(on1, 17);
    assert_int_equal(t.b[0].state, PGW_BREAKER_OPEN);
    assert_int_equal(t.b[1].state, PGW_BREAKER_CLOSED);
    assert_int_equal(t.b[1].failures, 0);
    /* after its cooldown host 0 gets one probe, and only one */
    t.now = 101.5;
    int probes = 0;
    for (int k = 0; k < 4; k++) {
        t.probe = false;
        int i = pgw_hosts_choose(&c, breaker_try, &t);
        if (i == 0) {
            assert_true(t.probe);
            probes++;
        }
    }
    assert_int_equal(probes, 1);
    /* both open: no host */
    pgw_breaker_failure(&t.b[0], t.now, true);
    for (int k = 0; k < 3; k++)
        pgw_breaker_failure(&t.b[1], t.now, false);
    assert_int_equal(pgw_hosts_choose(&c, breaker_try, &t), PGW_EBREAKER_OPEN);
}

static void t_target_mismatch(void **state)
{
    assert_true(pgw_pool_target_mismatch(
        "connection to server at \"127.0.0.1\", port 5432 failed: session is read-only\n"));
    assert_true(pgw_pool_target_mismatch("... failed: session is not read-only"));
    assert_true(pgw_pool_target_mismatch("... failed: server is in hot standby mode"));
    assert_true(pgw_pool_target_mismatch("... failed: server is not in hot standby mode"));
    assert_false(pgw_pool_target_mismatch(
        "connection to server at \"127.0.0.3\", port 5432 failed: Connection refused"));
    assert_false(pgw_pool_target_mismatch(NULL));
    assert_string_equal(pgw_pool_guess_sqlstate("... failed: session is read-only"), "08001");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_parse),
        cmocka_unit_test(t_round_robin),
        cmocka_unit_test(t_disable),
        cmocka_unit_test(t_breaker_per_host),
        cmocka_unit_test(t_target_mismatch),
    };
    return cmocka_run_group_tests_name("hosts", tests, NULL, NULL);
}
