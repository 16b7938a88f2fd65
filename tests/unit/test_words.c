/* test_words.c - the relay's scan of SQL text for what may change a tracked
 * parameter (pgw_relay_text_words): SET, RESET and DISCARD, and the
 * tracked names, as words of their own in any case; and HOLD, TEMP and
 * CREATE/INTO, what may outlive a transaction (note_leftover). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/proxy_int.h"

#define EFD (1u << 0)           /* extra_float_digits */
#define SP (1u << 1)            /* search_path */
#define EXT (1u << 2)           /* myext.mode: an extension's, with a dot */
#define XO (1u << 3)            /* xmloption */
#define DTI (1u << 4)           /* default_transaction_isolation */
#define ALL (EFD | SP | EXT | XO | DTI)
#define SET PGW_WORDS_SET

static int setup(void **state)
{
    struct pgw_proxy *px = calloc(1, sizeof(*px));
    if (!px)
        return -1;
    static const char *const names[] = { "extra_float_digits", "search_path", "myext.mode",
                                         "XmlOption", "default_transaction_isolation" };
    for (int i = 0; i < 5; i++) {
        px->tracked[i] = names[i];
        px->tracked_len[i] = strlen(names[i]);
    }
    px->ntracked = 5;
    *state = px;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static uint32_t words(void **state, const char *text, uint32_t want)
{
    return pgw_relay_text_words(*state, (const uint8_t *)text, strlen(text), want);
}

static void test_plain_queries_hold_none(void **state)
{
    assert_int_equal(words(state, "SELECT abalance FROM pgbench_accounts WHERE aid = 1;", ALL), 0);
    assert_int_equal(words(state, "", ALL), 0);
    assert_int_equal(words(state, "select 1", ALL), 0);
    /* inside other words, or longer names */
    assert_int_equal(words(state, "select password_resets, discarded, resets from t", ALL), 0);
    assert_int_equal(words(state, "select extra_float_digits_x, xsearch_path, $reset", ALL), 0);
    assert_int_equal(words(state, "show myext.model", ALL), 0);
    assert_int_equal(words(state, "select 1reset", ALL), 0);
    /* a byte of a multibyte character is part of the word */
    assert_int_equal(words(state, "select \xc3\xa9reset, reset\xc3\xa9", ALL), 0);
}

static void test_reset_and_discard(void **state)
{
    assert_int_equal(words(state, "RESET ALL", ALL), PGW_WORDS_RESET);
    assert_int_equal(words(state, "discard all", 0), PGW_WORDS_RESET);
    assert_int_equal(words(state, "select 1;DiScArD ALL", 0), PGW_WORDS_RESET);
    assert_int_equal(words(state, "reset", 0), PGW_WORDS_RESET);
    assert_int_equal(words(state, "x.reset()", 0), PGW_WORDS_RESET);
}

static void test_set(void **state)
{
    assert_int_equal(words(state, "SET TIME ZONE 'Asia/Tokyo'", 0), SET);
    assert_int_equal(words(state, "select pg_catalog.set_config('TimeZone', 'UTC', true)", 0),
                     SET);
    /* SET as a clause is no command; the command after one is */
    assert_int_equal(words(state, "update t set a = 1", 0), 0);
    assert_int_equal(words(state, "UPDATE t SET a = 1; SET TimeZone = 'UTC'", 0), SET);
    assert_int_equal(words(state, "insert into t values (1) on conflict do update set a = 2", 0),
                     0);
    assert_int_equal(words(state, "alter role r set timezone = 'UTC'", 0), 0);
    assert_int_equal(words(state, "with x as (update t set a = 1 returning a) select a from x", 0),
                     0);
    assert_int_equal(words(state, "update t set a = set_config('x.y', '1', false)", 0), SET);
    /* a transaction's end takes SET LOCALs back; pg_settings is SET too */
    assert_int_equal(words(state, "COMMIT", 0), SET);
    assert_int_equal(words(state, "select 1; rollback", 0), SET);
    assert_int_equal(words(state, "end", 0), SET);
    assert_int_equal(words(state, "select case when a then 1 else 2 end from t", 0), 0);
    assert_int_equal(words(state, "update pg_settings set setting = 'UTC' where name = 'x'", 0),
                     SET);
    /* a DO block or a comment first: counted */
    assert_int_equal(words(state, "do $$ begin set timezone = 'UTC'; end $$", 0), SET);
    assert_int_equal(words(state, "/* update */ set timezone = 'UTC'", 0), SET);
    assert_int_equal(words(state, "-- insert\n  /* x */ set timezone = 'UTC'", 0), SET);
    assert_int_equal(words(state, "/* set */ update t set a = 1 -- set", 0), 0);
    assert_int_equal(words(state, "/* unterminated set", 0), 0);
    assert_int_equal(words(state, "--", 0), 0);
    /* a Parse's statement: after the NUL that ends its name */
    static const uint8_t parse[] = "PGW_1\0set timezone = 'UTC'\0\0\0";
    assert_int_equal(pgw_relay_text_words(*state, parse, sizeof(parse), 0), SET);
    static const uint8_t upd[] = "PGW_2\0update t set a = $1\0\0\0";
    assert_int_equal(pgw_relay_text_words(*state, upd, sizeof(upd), 0), 0);
    /* inside other words */
    assert_int_equal(words(state, "select offset, settings, set_configs, resettable from t", 0),
                     0);
    /* a SET in a literal or dollar quote with a word behind it: a statement
     * a function of the client's may run, whatever the statement it is in
     * (review r7) */
    assert_int_equal(words(state, "update t set a = run_sql('set work_mem = 1')", 0),
                     PGW_WORDS_SET);
    assert_int_equal(words(state, "update t set a = run_sql($$SET work_mem = 1$$)", 0),
                     PGW_WORDS_SET);
    assert_int_equal(words(state, "update t set a = run_sql('set search_path = a')", ALL),
                     PGW_WORDS_SET | SP);
    assert_int_equal(words(state, "update t set a = 'set', b = \"set x\" /* set x */", 0), 0);
    /* a tracked name spelled otherwise (review r4 of session 53): an
     * escape in a U& quoted name or, with standard_conforming_strings off,
     * in set_config's literal; an extension's name in parts */
    assert_int_equal(words(state, "set U&\"extra!005ffloat!005fdigits\" uescape '!' = 0", ALL)
                     & EFD, EFD);
    assert_int_equal(words(state, "set U&\"extra\\005ffloat\\005fdigits\" = 0", ALL) & EFD,
                     EFD);
    assert_int_equal(words(state, "select set_config('extra\\_float\\_digits', '0', false)",
                           ALL) & EFD, EFD);
    assert_int_equal(words(state, "set \"myext\".\"mode\" = 1", ALL), SET | EXT);
    assert_int_equal(words(state, "set myext /* . */ . -- x\n Mode = 1", ALL), SET | EXT);
    /* PostgreSQL's comments between the parts (session 54): a '\r' ends a
     * -- comment too, and a nested comment's closing star and slash are
     * read as one (the slash opens no other) */
    assert_int_equal(words(state, "set myext -- x\r. mode = 1", ALL), SET | EXT);
    assert_int_equal(words(state, "set myext./* /* */* x */mode = 1", ALL), SET | EXT);
    /* a form feed is one of PostgreSQL's blanks too (review r4 of
     * session 54) */
    assert_int_equal(words(state, "set myext\f. mode = 1", ALL), SET | EXT);
    assert_int_equal(words(state, "set \"myext\" .\f\"mode\" = 1", ALL), SET | EXT);
    assert_int_equal(words(state, "show myext . model, myext.mode2, myext.", ALL), 0);
}

static void test_tracked_names(void **state)
{
    assert_int_equal(words(state, "SET extra_float_digits = 0", ALL), SET | EFD);
    assert_int_equal(words(state, "select set_config('Extra_Float_Digits', '0', false)", ALL),
                     SET | EFD);
    assert_int_equal(words(state, "SET search_path=public;set extra_float_digits=3", ALL),
                     SET | EFD | SP);
    assert_int_equal(words(state, "set myext.mode = 1", ALL), SET | EXT);
    assert_int_equal(words(state, "set \"search_path\" to x", ALL), SET | SP);
    /* at the very end, and the bytes of a Parse: name, NUL, text, NUL, types */
    assert_int_equal(words(state, "show search_path", ALL), SP);
    static const uint8_t parse[] = "s1\0set search_path to x\0\0\0";
    assert_int_equal(pgw_relay_text_words(*state, parse, sizeof(parse), ALL), SET | SP);
    /* only those asked for */
    assert_int_equal(words(state, "SET search_path = x; reset extra_float_digits", SP),
                     SET | SP | PGW_WORDS_RESET);
    assert_int_equal(words(state, "SET search_path = x", EFD), SET);
    /* bits past the tracked ones are not names */
    assert_int_equal(words(state, "SET search_path = x", UINT32_MAX), SET | SP);
}

/* SQL's own spellings name a parameter by other words; a set_config whose
 * name is not a literal (a bound $1) may set any. */
static void test_other_spellings(void **state)
{
    assert_int_equal(words(state, "SET SCHEMA 'pg_catalog'", ALL), SET | SP);
    assert_int_equal(words(state, "set xml option document", ALL), SET | XO);
    assert_int_equal(words(state, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
                                  "SERIALIZABLE", ALL), SET | DTI);
    assert_int_equal(words(state, "SET SCHEMA 'x'", EFD), SET);       /* only those asked for */
    assert_int_equal(words(state, "select xmlparse(document '<a/>'), xml_is_well_formed('')",
                           ALL), 0);
    assert_int_equal(words(state, "select set_config($1, $2, false)", ALL), SET | ALL);
    assert_int_equal(words(state, "select set_config ( name, 'x', false) from t", EFD | SP),
                     SET | EFD | SP);
    assert_int_equal(words(state, "select set_config(E'search_path', 'x', false)", SP), SET | SP);
    assert_int_equal(words(state, "select set_config", SP), SET | SP);
    assert_int_equal(words(state, "select set_config( 'search_path', $1, false)", ALL),
                     SET | SP);
    assert_int_equal(words(state, "select set_config('app.user', $1, false)", ALL), SET);
    /* a literal only in part: an expression that may name any */
    assert_int_equal(words(state, "select set_config('search_' || 'path', 'x', false)", EFD),
                     SET | EFD);
    assert_int_equal(words(state, "select set_config('work' || '_mem', '77MB', false)", SP),
                     SET | SP);
    assert_int_equal(words(state, "select set_config('it''s', '1', false)", SP), SET);
    assert_int_equal(words(state, "select set_config('search_path' , 'x', false)", ALL),
                     SET | SP);
    assert_int_equal(words(state, "select set_config('search_path", SP), SET | SP);
    /* pg_settings: the name may be any expression */
    assert_int_equal(words(state, "update pg_settings set setting = 'x' where name = "
                                  "'search_' || 'path'", SP), SET | SP);
    /* a statement PREPAREd before (SQL): its text is not here */
    const uint32_t EX = PGW_WORDS_EXECUTE;
    assert_int_equal(words(state, "EXECUTE p('pg_catalog')", ALL), SET | EX | ALL);
    assert_int_equal(words(state, "select executed from t", ALL), 0);
    assert_int_equal(words(state, "grant execute on function f() to r", ALL), 0);
    assert_int_equal(words(state, "select 1; execute p", ALL), SET | EX | ALL);
    assert_int_equal(words(state, "EXPLAIN ANALYZE EXECUTE s", SP), SET | EX | SP);
    assert_int_equal(words(state, "create temp table x as execute s", SP),
                     SET | EX | SP | PGW_WORDS_TEMP | PGW_WORDS_MAKE);
    assert_int_equal(words(state, "revoke execute on function f() from r", ALL), 0);
    assert_int_equal(words(state, "alter default privileges grant execute on functions to r",
                           ALL), 0);
}

/* What may outlive the transaction (note_leftover): HOLD, not WITHOUT
 * HOLD; TEMP, TEMPORARY, pg_temp; CREATE or INTO, not INSERT INTO or MERGE
 * INTO. */
static void test_state_words(void **state)
{
    const uint32_t HOLD = PGW_WORDS_HOLD, TEMP = PGW_WORDS_TEMP, MAKE = PGW_WORDS_MAKE;
    assert_int_equal(words(state, "DECLARE \"cur\" CURSOR WITH HOLD FOR select 1", ALL), HOLD);
    assert_int_equal(words(state, "declare c cursor without hold for select 1", ALL), 0);
    assert_int_equal(words(state, "declare c cursor WITHOUT\n  HOLD for select 1", ALL), 0);
    assert_int_equal(words(state, "select holder, household from t", ALL), 0);
    assert_int_equal(words(state, "CREATE TEMP TABLE t AS SELECT 'secret'", ALL), TEMP | MAKE);
    assert_int_equal(words(state, "create temporary view v as select 1", ALL), TEMP | MAKE);
    assert_int_equal(words(state, "select 1 into temp t", ALL), TEMP | MAKE);
    assert_int_equal(words(state, "select * from pg_temp.t", ALL), TEMP);
    assert_int_equal(words(state, "select * from pg_temp_3.t", ALL), TEMP);
    assert_int_equal(words(state, "select temp from weather", ALL), TEMP);
    assert_int_equal(words(state, "insert into weather (temp) select 1", ALL), TEMP);
    assert_int_equal(words(state, "merge into w using x on true when matched then do nothing",
                           ALL), 0);
    assert_int_equal(words(state, "select temperature, tempo, attempt from t", ALL), 0);
    assert_int_equal(words(state, "create table t (a int)", ALL), MAKE);
    /* INSERT or MERGE where a command goes; a column's label INSERT or
     * MERGE is not one: a SELECT INTO's INTO follows it. */
    assert_int_equal(words(state, "select 'secret' as insert into t", ALL), MAKE);
    assert_int_equal(words(state, "select 'secret' merge into t", ALL), MAKE);
    assert_int_equal(words(state, "select s as \"insert\" into t from u", ALL), MAKE);
    assert_int_equal(words(state, "select x.insert into t from x", ALL), MAKE);
    assert_int_equal(words(state, "select count(*) insert into t from x", ALL), MAKE);
    assert_int_equal(words(state, "prepare p as select 1 as insert into t", ALL),
                     PGW_WORDS_PREPARE | MAKE);
    assert_int_equal(words(state, "select 1; insert into t values (1)", ALL), 0);
    assert_int_equal(words(state, "/* c */ INSERT\n INTO t values (1)", ALL), 0);
    assert_int_equal(words(state, "with x as (insert into t values (1) returning a) "
                                  "insert into u select a from x", ALL), 0);
    assert_int_equal(words(state, "with x as (select 1) merge into t using x on true "
                                  "when not matched then insert values (1)", ALL), 0);
    assert_int_equal(words(state, "copy (insert into t values (1) returning a) to stdout", ALL),
                     0);
    assert_int_equal(words(state, "explain analyze verbose insert into t values (1)", ALL), 0);
    assert_int_equal(words(state, "explain (analyze, buffers) insert into t values (1)", ALL),
                     0);
    assert_int_equal(words(state, "PREPARE p (int) AS INSERT INTO t VALUES ($1)", ALL),
                     PGW_WORDS_PREPARE);
    assert_int_equal(words(state, "with x as (select 1) select count(*) insert into t from x",
                           ALL), MAKE);
    assert_int_equal(words(state, "explain analyze select count(*) insert into t", ALL), MAKE);
    assert_int_equal(words(state, "explain (analyze) select count(*) insert into t", ALL), MAKE);
    assert_int_equal(words(state, "select loop insert into t from (select 1 as loop) s", ALL),
                     MAKE);
    /* EXPLAIN's words as a name or literal, BEGIN or LOOP after a DO block
     * or in what its body EXECUTEs: a column's label before INTO
     * (py.words_differential) */
    assert_int_equal(words(state, "explain analyze select \"verbose\" insert into t from x",
                           ALL), MAKE);
    assert_int_equal(words(state, "explain analyze select 'verbose' merge into t", ALL), MAKE);
    assert_int_equal(words(state, "explain (analyze) select explain insert into t from x", ALL),
                     MAKE);
    assert_int_equal(words(state, "do $$begin end$$; select loop insert into t from x", ALL),
                     MAKE);
    assert_int_equal(words(state, "do $$begin end$$; select \"else\" merge into t from x",
                           ALL), MAKE);
    assert_int_equal(words(state, "do $$begin execute 'explain analyze select loop insert "
                                  "into t from x'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $$begin execute 'explain analyze select ''x'' insert "
                                  "into t'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $d$begin execute $x$explain analyze select begin insert "
                                  "into t from x$x$; end$d$", 0) & MAKE, MAKE);
    /* a parenthesis in a literal, a quoted name or a comment is none: the
     * ')' that ends a WITH's queries or EXPLAIN's options is where it is
     * (review r4: with x as (select '(' a) select ')', (1) insert into t
     * made t with no MAKE) */
    assert_int_equal(words(state, "with x as (select '(' a) select ')', (1) insert into t",
                           ALL), MAKE);
    assert_int_equal(words(state, "with x as (select 1 /* ( */) select 1 /* ) */, (1) "
                                  "insert into t", ALL), MAKE);
    assert_int_equal(words(state, "with x as (select 1 -- (\n) select 1 -- )\n, (1) "
                                  "insert into t", ALL), MAKE);
    assert_int_equal(words(state, "with x as (select 1 \"(\") select 1 \")\", (1) "
                                  "insert into t", ALL), MAKE);
    assert_int_equal(words(state, "explain (analyze /* ( */) select 1 /* ) */, (1) "
                                  "insert into t", ALL), MAKE);
    /* a comment is a blank: the word after one is where it is (with x as
     * (...) -- c, then its main query; py.words_differential) */
    assert_int_equal(words(state, "with x as (select 1 a) -- c\nselect 1 b, (1) insert into t",
                           ALL), MAKE);
    assert_int_equal(words(state, "with x as (select 1 a)/**/select (1) insert into t", ALL),
                     MAKE);
    assert_int_equal(words(state, "explain (analyze) /* c */ select ';' b, (1) insert into t",
                           ALL), MAKE);
    assert_int_equal(words(state, "explain (analyze) -- c\nselect (1) insert into t", ALL),
                     MAKE);
    assert_int_equal(words(state, "with x as (select 1) /* c */ insert into t select 1", ALL),
                     0);
    assert_int_equal(words(state, "with x as (select ')' a) insert into t select a from x",
                           ALL), 0);
    assert_int_equal(words(state, "explain (analyze, format text /* ) */) insert into t "
                                  "values (1)", ALL), 0);
    /* a quote in a comment or a quoted name of a DO block's body, or one
     * an E'' literal's backslash takes, neither opens nor closes a literal
     * of the body (review r4) */
    assert_int_equal(words(state, "do $$begin -- don't\n execute 'explain analyze select loop "
                                  "insert into t from x'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $$begin /* don't */ execute 'explain analyze select "
                                  "loop insert into t from x'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $$declare \"it's\" int; begin execute 'explain analyze "
                                  "select loop insert into t from x'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $$begin execute E'explain analyze select \\'x\\' "
                                  "insert into t'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $$begin execute 'explain analyze select \\'x\\' "
                                  "insert into t'; end$$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "do $$ begin -- it's\n insert into t values (1); end $$", 0) &
                     MAKE, 0);
    assert_int_equal(words(state, "explain /* c */ analyze insert into t values (1)", ALL), 0);
    /* a ';' in a dollar quote (or a DO text's literal) begins statements
     * only until its end: then the statement it is in goes on (review r4:
     * WITH in it made the (1) behind it a WITH's ')') */
    assert_int_equal(words(state, "select $$;with $$ a, (1) insert into t", ALL), MAKE);
    assert_int_equal(words(state, "do $$begin end$$; select ';with' a, (1) insert into t",
                           ALL), MAKE);
    assert_int_equal(words(state, "with x as (select $$;select 1$$ a) insert into t select 1",
                           ALL), 0);
    /* ... its depth is the one where the span opened: a dollar quote's
     * parentheses are counted, but none of them is the statement's (review
     * r7: with x as (select $$);$$ a) ... made t with no MAKE) */
    assert_int_equal(words(state, "with x as (select $$);$$ a) select $$(;$$ b, (1) "
                                  "insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "with x as (select $$(;$$ a) select $$);$$ b, (1) "
                                  "insert into t", ALL) & MAKE, MAKE);
    /* a backslash (standard_conforming_strings off: a literal may go on
     * past the quote read as its end): a blind text, CREATE or INTO
     * anywhere is MAKE (review r7; test_blind_texts) */
    assert_int_equal(words(state, "with x as (select '\\' ' a) select ' )''a\\' 'as b, (1) "
                                  "insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "select 'a\\' (--'\n insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "select 'a\\' (/*'*/ insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "with x as (select ' (''a\\'/* ) */ a) select '('--'\n b, "
                                  "(1) insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "with x as (select '\\' ' a) --'\n select $a$;)$a$-- (\n"
                                  "-- )\n insert into t", ALL) & MAKE, MAKE);
    /* (and the scan's own rules hold: a backslash elsewhere) */
    assert_int_equal(words(state, "select E'\\n'; with x as (select '(' a) select ')', (1) "
                                  "insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "select E'\\n'; with x as (select 1 a) -- c\nselect 1 b, (1) "
                                  "insert into t", ALL) & MAKE, MAKE);
    assert_int_equal(words(state, "with x (a) as (select 1), y as materialized (select 2) "
                                  "insert into t select a from x", ALL), 0);
    assert_int_equal(words(state, "do $$ begin execute 'insert into t values (1)'; end $$", 0),
                     PGW_WORDS_SET | PGW_WORDS_EXECUTE);
    assert_int_equal(words(state, "do $$ begin insert into t values (1); if true then "
                                  "insert into t values (2); else insert into t values (3); "
                                  "end if; end $$", ALL), PGW_WORDS_SET);   /* (END) */
}

/* CREATE and INTO in a string literal or a comment make nothing (review r1
 * of ca89bab: each cost a DISCARD TEMP); where the literal may be code
 * PostgreSQL runs, or PostgreSQL may read it otherwise, they still count. */
static void test_make_words_in_literals(void **state)
{
    const uint32_t MAKE = PGW_WORDS_MAKE;
    assert_int_equal(words(state, "INSERT INTO audit VALUES ('create')", ALL), 0);
    assert_int_equal(words(state, "SELECT * FROM users WHERE id = 1 "
                                  "/*action:create,controller:users*/", ALL), 0);
    assert_int_equal(words(state, "SELECT has_database_privilege(current_user, 'pgwharf', "
                                  "'CREATE')", ALL), 0);
    assert_int_equal(words(state, "select * from log where action = 'into'", ALL), 0);
    assert_int_equal(words(state, "select 'it''s into' from t -- select 1 into t", ALL), 0);
    assert_int_equal(words(state, "select E'create' /* a /* into */ create */", ALL), 0);
    assert_int_equal(words(state, "select 1 -- create\r", ALL), 0);
    assert_int_equal(words(state, "select $1::text, 'into'", ALL), 0);
    /* SQL, and code PostgreSQL runs */
    assert_int_equal(words(state, "SELECT 1 INTO t", ALL), MAKE);
    assert_int_equal(words(state, "CREATE TABLE t AS SELECT 'x'", ALL), MAKE);
    assert_int_equal(words(state, "select 'a' /* c */ INTO t", ALL), MAKE);
    assert_int_equal(words(state, "select 'a' -- c\rinto t", ALL), MAKE);
    assert_int_equal(words(state, "select 1 -- c\ncreate table t ()", ALL), MAKE);
    assert_int_equal(words(state, "/* a /* b */ it's */ select 1 into t", ALL), MAKE);
    assert_int_equal(words(state, "select 1 as \"it's\" into t from u where v = 'x'", ALL), MAKE);
    assert_int_equal(words(state, "select 'x' as \"create\"", ALL), MAKE);   /* (a name) */
    assert_int_equal(words(state, "DO $$ BEGIN CREATE TABLE t (); END $$", ALL),
                     PGW_WORDS_SET | MAKE);
    assert_int_equal(words(state, "do $b$ begin perform 'x'; create table t (); end $b$", ALL),
                     PGW_WORDS_SET | MAKE);
    assert_int_equal(words(state, "DO 'begin execute ''create table t ()''; end'", ALL),
                     PGW_WORDS_SET | PGW_WORDS_EXECUTE | ALL | MAKE);
    assert_int_equal(words(state, "do language plpgsql 'begin create table t (); end'", 0),
                     PGW_WORDS_SET | MAKE);
    assert_int_equal(words(state, "select 'create table t ()' as q; do 'begin end'", 0), MAKE);
    assert_int_equal(words(state, "select f(format('create table %I ()', 't'))", 0), MAKE);
    /* a dollar quote's end ends a word (PostgreSQL: SELECT ... INTO t) */
    assert_int_equal(words(state, "select $$a$$into t", ALL), MAKE);
    assert_int_equal(words(state, "select $q$a$q$into t", ALL), MAKE);
    assert_int_equal(words(state, "select $$a b$$into t", ALL), MAKE);
    assert_int_equal(words(state, "select $$a$$temp", ALL), PGW_WORDS_TEMP);
    /* a ';' or '(' in a literal, comment or quoted name: no statement
     * start, no INSERT INTO; a column named insert in parentheses */
    assert_int_equal(words(state, "select ';--' a, 1 b into t", ALL), MAKE);
    assert_int_equal(words(state, "select ';/*' a, 1 b into t; --*/", ALL), MAKE);
    assert_int_equal(words(state, "select 1 as \";--\", 2 into t", ALL), MAKE);
    assert_int_equal(words(state, "select $$;--$$ a, 2 b into t", ALL), MAKE);
    assert_int_equal(words(state, "select '(insert'into t", ALL), MAKE);
    assert_int_equal(words(state, "select 1 /*(insert*/ into t", ALL), MAKE);
    assert_int_equal(words(state, "select ';insert' into t", ALL), MAKE);
    assert_int_equal(words(state, "select(insert)into t from (select 1 as insert) s", ALL),
                     MAKE);
    assert_int_equal(words(state, "/* a /* b */ c */ insert into t values (1)", ALL), 0);
    assert_int_equal(words(state, "-- c\ninsert into t values ('x')", ALL), 0);
    /* a statement in a literal: what a function of the client's may run */
    assert_int_equal(words(state, "select run_sql('create table t (a int)')", ALL), MAKE);
    assert_int_equal(words(state, "select run_sql('select 1 into t')", ALL), MAKE);
    /* a form feed is one of PostgreSQL's blanks (review r4 of session 54) */
    assert_int_equal(words(state, "select run_sql('create\ftable t (a int)')", ALL), MAKE);
    assert_int_equal(words(state, "select run_sql('select 1 into\ft')", ALL), MAKE);
    assert_int_equal(words(state, "with x as (select 1 a)\fselect 1 b, (1) insert into t", ALL),
                     MAKE);
    /* a quoted name or a comment after the word, blanks before it or not */
    assert_int_equal(words(state, "select run_sql('explain analyze select 1 into\"t\"')", ALL),
                     MAKE);
    assert_int_equal(words(state, "select run_sql('create/**/table t (a int)')", ALL), MAKE);
    assert_int_equal(words(state, "select run_sql('create--\ntable t (a int)')", ALL), MAKE);
    assert_int_equal(words(state, "select 'create/', 'into-'", ALL), 0);
    assert_int_equal(words(state, "select 'CREATE, USAGE', 'create'", ALL), 0);
    /* a dollar quote's delimiter ends a word: CREATE glued to it */
    assert_int_equal(words(state, "select run_sql($$create table t (a int)$$)", ALL), MAKE);
    assert_int_equal(words(state, "select run_sql($x$create table t (a int)$x$)", ALL), MAKE);
    assert_int_equal(words(state, "do $do$begin execute $x$create table t (a int)$x$; end$do$",
                           ALL) & MAKE, MAKE);
    /* a column labelled insert or merge behind a literal, DO in the text */
    assert_int_equal(words(state, "do $d$begin end$d$; select 'x' insert into t", ALL), MAKE);
    assert_int_equal(words(state, "do 'begin end'; select 'x' merge into t", ALL), MAKE);
    assert_int_equal(words(state, "with w as (select 1) select ';--' merge into t", ALL),
                     MAKE);
    assert_int_equal(words(state, "select $$;$$ insert into t", ALL), MAKE);
    assert_int_equal(words(state, "do $$begin execute 'insert into t values (1)'; end$$", 0) &
                         MAKE, 0);
    /* A backslash anywhere, a '$' in a number or parameter: as before */
    assert_int_equal(words(state, "select E'\\'' into t", ALL), MAKE);
    assert_int_equal(words(state, "select 'a\\' into t -- '", ALL), MAKE);
    assert_int_equal(words(state, "select 'into', '\\'", ALL), MAKE);
    assert_int_equal(words(state, "select 1$$' into t", ALL), MAKE);
    /* an E'' literal ends where PostgreSQL ends it: a backslash takes the
     * quote behind it (py.words_differential) */
    assert_int_equal(words(state, "select E'a\\'; --'; select 1 into t", ALL), MAKE);
    assert_int_equal(words(state, "select E'\\''; do $d$begin execute $x$create table t "
                                  "(a int)$x$; end$d$", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "select 'a\\'; --'; select 1 into t", ALL), MAKE);
    /* a '$' ends a word in a literal too: with standard_conforming_strings
     * off the "literal" may be SQL, INTO glued to a dollar quote (review
     * r4: no test failed without it) */
    assert_int_equal(words(state, "select 'a\\' ' a, $$x$$into t; --'", ALL), MAKE);
    /* a Parse's statement name ends what it opened */
    static const char parse[] = "it's\0select 1 into t\0";
    assert_int_equal(pgw_relay_text_words(*state, (const uint8_t *)parse, sizeof(parse), 0),
                     MAKE);
    /* a comment before its text does not go past its NUL either */
    static const char block[] = "/*\0create temp table t (a int)\0\0";
    assert_int_equal(pgw_relay_text_words(*state, (const uint8_t *)block, sizeof(block), 0),
                     PGW_WORDS_TEMP | MAKE);
    static const char line[] = "--\0create temp table t (a int)\0\0";
    assert_int_equal(pgw_relay_text_words(*state, (const uint8_t *)line, sizeof(line), 0),
                     PGW_WORDS_TEMP | MAKE);
    static const char closed[] = "/* c */\0select 1\0\0";
    assert_int_equal(pgw_relay_text_words(*state, (const uint8_t *)closed, sizeof(closed), 0), 0);
}

/* An SQL PREPARE: a statement that starts with it (stmt_sql_*); the word
 * PREPARE past a statement's first word (a DO block's EXECUTE 'PREPARE
 * ...': relay.c stmt_sql_hidden). */
static void test_prepare_word(void **state)
{
    const uint32_t PREP = PGW_WORDS_PREPARE, TEMP = PGW_WORDS_TEMP, MAKE = PGW_WORDS_MAKE,
                   IN = PGW_WORDS_PREPARE_IN, EX = PGW_WORDS_EXECUTE | PGW_WORDS_SET;
    assert_int_equal(words(state, "PREPARE p AS select 1 into temp t", 0), PREP | TEMP | MAKE);
    assert_int_equal(words(state, "  /* c */ -- d\n prepare p as select 1", 0), PREP);
    assert_int_equal(words(state, "/* c */ prepare p as select 1", 0), PREP);
    assert_int_equal(words(state, "select 1; Prepare p as select 2", 0), PREP);
    assert_int_equal(words(state, "select prepare from t", 0), IN);
    assert_int_equal(words(state, "select 1 as prepared", 0), 0);
    assert_int_equal(words(state, "select 1 as unprepare, prepare_x, x_prepare", 0), 0);
    assert_int_equal(words(state, "COMMIT PREPARED 'x'", 0), PGW_WORDS_SET);
    assert_int_equal(words(state, "PREPARE TRANSACTION 'x'", 0), PREP);
    assert_int_equal(words(state, "do $$ begin execute 'PREPARE p as select 1 into temp t'; "
                                  "end $$", 0), EX | IN | TEMP | MAKE);
    assert_int_equal(words(state, "do $$begin perform 1; execute 'prepare p as select 1'; end$$",
                           0), EX | IN);
    assert_int_equal(words(state, "select f('x')/*prepare*/", 0), IN);
    /* One statement's first word, another's not. */
    assert_int_equal(words(state, "prepare p as select 'prepare'", 0), PREP | IN);
    /* DEALLOCATE anywhere (relay.c stmt_sql_dealloc); DISCARD is RESET. */
    const uint32_t DEAL = PGW_WORDS_DEALLOCATE;
    assert_int_equal(words(state, "DEALLOCATE p", 0), DEAL);
    assert_int_equal(words(state, "do $$ begin execute 'deallocate p'; end $$", 0),
                     EX | DEAL);
    assert_int_equal(words(state, "select 1 as deallocated, deallocate_x", 0), 0);
    assert_int_equal(words(state, "discard all", 0), PGW_WORDS_RESET);
}

/* A blind text, one whose spans the scan may read wrong (a backslash:
 * with standard_conforming_strings off 'x\'' is one literal, x'; a '$' in
 * a number), has the words whose meaning the scan takes from a span, the
 * statement or a clause read wherever they are, in one pass (review r7's
 * second, loose, scan replaced). */
static void test_blind_texts(void **state)
{
    const uint32_t MAKE = PGW_WORDS_MAKE, HOLD = PGW_WORDS_HOLD, TEMP = PGW_WORDS_TEMP,
                   IN = PGW_WORDS_PREPARE_IN, EX = PGW_WORDS_EXECUTE | PGW_WORDS_SET;
    /* CREATE or INTO anywhere: MAKE -- in a literal, a comment, a quoted
     * name, glued to a '$' */
    assert_int_equal(words(state, "select 'create', E'\\n'", 0), MAKE);
    /* a number glued to INTO: PostgreSQL 14 and older read it apart
     * (review r4 of session 53) */
    assert_int_equal(words(state, "select 1into t", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "select 1.5into t", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "select 1e1into t", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "select $1into t", 0) & MAKE, MAKE);
    assert_int_equal(words(state, "select 1einto, 1intox, x1into from t", 0) & MAKE, 0);
    assert_int_equal(words(state, "select 'a\\' /* into */", 0), MAKE);
    assert_int_equal(words(state, "select 1 as \"Into\", 'a\\'", 0), MAKE);
    assert_int_equal(words(state, "select 1 insert into t, 'a\\'", 0), MAKE);
    assert_int_equal(words(state, "select 'a\\' ' a, x$$create$$", 0), MAKE);
    assert_int_equal(words(state, "select 'a\\', 'x into$$'", 0), MAKE);
    assert_int_equal(words(state, "select 1$$ a, 1$$ into t", 0), MAKE);
    /* ... a comment before a statement (read to its end, not as words) */
    assert_int_equal(words(state, "select 'a\\'; --'; create table t (a int)", 0), MAKE);
    assert_int_equal(words(state, "select 'a\\'; /*'; select 1 into t; --*/", 0), MAKE);
    /* but as a word only, and none is none */
    assert_int_equal(words(state, "select 'created', 'intox', E'\\n'", 0), 0);
    assert_int_equal(words(state, "select 'a\\'; --'; select 1", 0), 0);
    /* not blind: a literal's CREATE or INTO is none (test_make_words_in_literals) */
    assert_int_equal(words(state, "select 'create', 'a'", 0), 0);
    /* SET where the scan reads a clause (UPDATE ... SET) or a literal:
     * update t set a = 'x\'';set work_mem = 1 is an UPDATE and a SET;
     * a COMMIT behind it too (they were none) */
    assert_int_equal(words(state, "update t set a = 'x\\'';set work_mem = 1", 0),
                     PGW_WORDS_SET);
    assert_int_equal(words(state, "update t set a = 'x\\'';commit", 0), PGW_WORDS_SET);
    assert_int_equal(words(state, "update t set a = 'x\\'';set search_path = a", ALL),
                     PGW_WORDS_SET | SP);
    assert_int_equal(words(state, "update t set a = 'x'", 0), 0);
    /* a tracked name in a comment read loose as PostgreSQL may read it:
     * an extension's in parts, a U&"" name (review r4 of session 54) */
    assert_int_equal(words(state, "select 'a\\'; --'; set myext . mode = 1", ALL),
                     PGW_WORDS_SET | EXT);
    assert_int_equal(words(state, "select 'a\\'; --'; set \"myext\".\"mode\" = 1", ALL),
                     PGW_WORDS_SET | EXT);
    assert_int_equal(words(state, "select 'a\\'; --'; set myext -- x\n. mode = 1", ALL),
                     PGW_WORDS_SET | EXT);
    assert_int_equal(words(state, "select 'a\\'; --'; set U&\"extra!005ffloat!005fdigits\" "
                                  "uescape '!' = 0", ALL) & EFD, EFD);
    assert_int_equal(words(state, "select 'a\\'; --'; set myext . model = 1", ALL),
                     PGW_WORDS_SET);
    assert_int_equal(words(state, "select 'a\\'; --'; set work_mem = 1", 0), PGW_WORDS_SET);
    /* EXECUTE where the scan reads a privilege's (ALTER ...), HOLD where
     * it reads WITHOUT HOLD: the word alone */
    assert_int_equal(words(state, "alter table t alter a set default 'x\\'';execute p", 0), EX);
    assert_int_equal(words(state, "grant execute on function f() to u; select '\\'", 0), EX);
    assert_int_equal(words(state, "declare c cursor without /*'\\'*/ hold for select 1", 0),
                     HOLD);
    /* PREPARE, not known first: PREPARE_IN too (pgwharf does not read it) */
    assert_int_equal(words(state, "select 'a\\';prepare p as select 1 --'", 0),
                     PGW_WORDS_PREPARE | IN);
    assert_int_equal(words(state, "select 'x\\'';prepare p as select 1", 0), IN);
    /* the words read everywhere, in a comment before a statement too */
    assert_int_equal(words(state, "select 'a\\'; --'; set search_path = pg_temp", ALL),
                     PGW_WORDS_SET | SP | TEMP);
    assert_int_equal(words(state, "select 'a\\'; --'; set myext.mode = 1", ALL),
                     PGW_WORDS_SET | EXT);
    assert_int_equal(words(state, "select 'a\\'; --'; discard temp", 0),
                     PGW_WORDS_RESET | TEMP);
}

/* A text of head, then unit again and again to n bytes (malloc'd). */
static char *repeated(const char *head, const char *unit, size_t n)
{
    char *t = malloc(n + 1);
    assert_non_null(t);
    size_t h = strlen(head), u = strlen(unit), k = h;
    memcpy(t, head, h);
    for (; k + u <= n; k += u)
        memcpy(t + k, unit, u);
    t[k] = '\0';
    return t;
}

/* A long text is scanned in linear time: a word's look ahead (a name
 * with dots, the gap between an extension's name parts) went to the end
 * of a run of dotted words or of a comment for each word in it, so a
 * 256 kB Parse of a blind text took 13 s of the loop, 1 MB minutes, and
 * every other client of the thread waited (review r7 of session 54).
 * Six 1 MB texts: minutes each before, well under a second in all now;
 * ctest's 120 s bound on this test is the hang check (no clock read
 * here).  A gap longer than tracked_word reads is taken for the name. */
static void test_long_texts_in_linear_time(void **state)
{
    /* The answers are pinned too: a tracked name's first part ahead of a
     * gap of more than 256 bytes counts alone (EXT, a false alarm). */
    static const uint32_t want[] = { 0, EXT, EXT, EXT, EXT, 0 };
    static const char *const texts[][2] = {
        { "select '\\'; -- ", "a." },           /* blind_words: a name with dots */
        { "select 1 -- ", "myext --" },         /* tracked_word: a comment's gap */
        { "select 1 /* ", "myext /*" },
        { "select '\\'; -- ", "myext --" },     /* both: a blind text's comment */
        { "select '\\'; /* ", "myext /*" },
        { "select '\\'; -- ", "myext " },
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char *t = repeated(texts[i][0], texts[i][1], 1024 * 1024);
        uint32_t got = pgw_relay_text_words(*state, (const uint8_t *)t, strlen(t), ALL);
        assert_int_equal(got, want[i]);
        free(t);
    }
    /* exact up to the gap's limit, the name taken past it */
    char buf[600];
    snprintf(buf, sizeof(buf), "set myext /* %0200d */ . model = 1", 0);
    assert_int_equal(words(state, buf, ALL), SET);
    snprintf(buf, sizeof(buf), "set myext /* %0200d */ . mode = 1", 0);
    assert_int_equal(words(state, buf, ALL), SET | EXT);
    snprintf(buf, sizeof(buf), "set myext /* %0400d */ . mode = 1", 0);
    assert_int_equal(words(state, buf, ALL), SET | EXT);
    snprintf(buf, sizeof(buf), "select '\\'; -- set myext /* %0400d */ . mode = 1", 0);
    assert_int_equal(words(state, buf, ALL) & EXT, EXT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_queries_hold_none),
        cmocka_unit_test(test_reset_and_discard),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_tracked_names),
        cmocka_unit_test(test_other_spellings),
        cmocka_unit_test(test_state_words),
        cmocka_unit_test(test_make_words_in_literals),
        cmocka_unit_test(test_prepare_word),
        cmocka_unit_test(test_blind_texts),
        cmocka_unit_test(test_long_texts_in_linear_time),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
