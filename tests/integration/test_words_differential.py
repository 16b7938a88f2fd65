"""py.words_differential: the relay's scan of a text (pgw_relay_text_words)
against PostgreSQL itself.

PGW_WORDS_MAKE is what makes a session cost a DISCARD TEMP before its
server goes to another client: a text that creates a temporary object
without it leaves that object to the next client of the server (with
pg_temp first in the search_path a plain CREATE TABLE makes a temporary
table, which the next client then reads).  Random texts, built from SQL
that creates (CREATE TABLE / VIEW / SEQUENCE / FUNCTION / TYPE, SELECT ...
INTO with column labels like insert or merge, glued punctuation, CREATE
TABLE AS, EXPLAIN ANALYZE, DO blocks, a function of the client's that
EXECUTEs its argument), harmless SQL, and wrappers (literals with '' and
E'\\'', quoted names, comments nested or not, dollar quotes, case,
blanks, several statements), run each in a transaction of their own on
PostgreSQL with search_path = pg_temp, public (a fifth of them with
standard_conforming_strings off: a backslash in a plain literal escapes;
with a backslash in it, or a '$' glued to a number -- 1$$...$$, which
PostgreSQL 15 rejects -- a blind text, its spans unknown to the scan);
inside it, before the
ROLLBACK, the catalogs say whether the text created a temporary object
(pg_class relpersistence 't', pg_proc or pg_type in the session's temp
namespace).  Every text that did must have PGW_WORDS_MAKE from the scan
(tests/words_filter.c, the scan as a filter): a miss fails the test with
the seed and the texts.  False alarms (MAKE with nothing created) are
allowed: counted and printed.  Texts PostgreSQL rejects are counted and
skipped (a failed text leaves nothing).

PGW_WORDS_COUNT (default 1500) texts, PGW_WORDS_SEED (default: a random
one, printed) to repeat a run.
"""

import os
import random
import re
import struct
import subprocess
import sys
import time
import unittest

import pgwharf_test as pt

try:
    import psycopg2
except ImportError:          # skips; scripts/deps.sh installs it
    psycopg2 = None

MAKE = 1 << 27
# Values with a parenthesis, ';' or backslash where a span may hide them.
SPANS = ["$$);$$", "$$(;$$", "$a$;)$a$", "$$;$$", "'('", "')'", "'\\' ' a, ' )'",
         "'a\\' ('", "1", "1$$;)$$", "1$a$(;$a$"]
# A blind text: its spans unknown to the scan (a backslash with
# standard_conforming_strings off, a '$' in a number: 1$$...).
DOLLAR_NUMBER = re.compile(r"(?<![A-Za-z0-9_$])[0-9]+\$")
TAG = re.compile(r"(\$[A-Za-z_][A-Za-z_0-9]*\$)")

SETUP = """
CREATE OR REPLACE FUNCTION public.run_sql(t text) RETURNS int
    LANGUAGE plpgsql AS $f$ BEGIN EXECUTE t; RETURN 1; END $f$;
CREATE TABLE IF NOT EXISTS public.pgw_words_audit (a text);
"""

# What the text created, temporary (inside its transaction).
CREATED = """
SELECT (SELECT count(*) FROM pg_class
         WHERE relpersistence = 't' AND NOT pg_is_other_temp_schema(relnamespace))
     + (SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema())
     + (SELECT count(*) FROM pg_type WHERE typnamespace = pg_my_temp_schema())
"""


def filter_binary():
    path = os.environ.get("PGW_WORDS_FILTER")
    if not path:
        build = os.environ.get("PGW_BUILD_DIR") or os.path.join(
            os.path.dirname(os.path.abspath(os.environ.get("PGW_BINARY", ""))))
        path = os.path.join(build, "tests", "words_filter")
    return path


def scan(texts):
    """The scan's words of each text (tests/words_filter.c)."""
    data = b"".join(struct.pack("<I", len(b)) + b
                    for b in (t.encode() for t in texts))
    out = subprocess.run([filter_binary()], input=data, stdout=subprocess.PIPE,
                         check=True, timeout=120).stdout.decode().split()
    assert len(out) == len(texts), (len(out), len(texts))
    return [int(w, 16) for w in out]


class Gen:
    """Random texts: statements that create (make), that do not (plain),
    and wrappers that hide a statement or run it."""

    def __init__(self, rnd):
        self.r = rnd
        self.n = 0

    def name(self):
        self.n += 1
        n = "t%d" % self.n
        return '"%s"' % n if self.r.random() < 0.15 else n

    def blank(self):
        return self.r.choice([" ", " ", " ", "  ", "\n", "\t", "\r\n", " /* c */ ",
                              "/**/", "--x\n", " -- ; ' $$\n", "/* /* n */ */", "\f",
                              "\r", " \f"])

    def value(self):
        """An expression, with what a scan may misread: quotes, ';' and
        comment openers in literals, dollar quotes."""
        return self.r.choice([
            "1", "'x'", "';'", "'--'", "'/*'", "$$;$$", "$q$x$q$", "E'\\''", "'it''s'",
            "(1)", "array[1]", "$$'$$", "'$$'", "'\"'", "E'\\\\'", "U&'\\0041'",
            "'create'", "'into'", "$$insert$$", "'a;b'", "1.5", "now()", "(select 1)",
            "'x'::text", "$a$ $$ $a$", "'--'||';'", "E'x\\'y'",
            "E'a\\'; --'", "E'\\'/*'", "e'\\\\'", "E'$$\\''",
            "'('", "')'", "'(('", "'('||')'", '"("', "/* ( */ 1", "1 -- )\n", "$$($$",
            "'\\' ', $$x$$", "'a\\'", "'\\\\'", "$$;with $$", "';with'", "$$;explain ($$",
            "$$);$$", "$$(;$$", "$a$;)$a$", "'\\' ' a, ' )'", "'a\\' ('",
            "1$$ a, 1$$", "1$a$;$a$", "2$$ -- $$",
        ])

    def label(self):
        return self.r.choice(["", "", " a", " as a", " insert", " as insert", " merge",
                              " as merge", ' "insert"', ' as "merge"', " as into_", " x"])

    def select_into(self):
        v, lab = self.value(), self.label()
        head = "select " + v + lab
        sep = self.r.choice([" ", "\n", "", "/**/"]) if not head[-1].isalnum() and \
            head[-1] not in "_$" else self.r.choice([" ", "\n", "/**/", "--\n"])
        if head.endswith("$$") or head.endswith("$"):
            sep = self.r.choice([" ", ""])
        name = self.name()
        return head + sep + "into" + self.r.choice(
            [" ", "\n", "/**/", " temp "] + ([""] if name[0] == '"' else [])) + name

    def labelled(self):
        """SELECT INTO of a column with a label like insert, the column
        named by a word that comes before a command elsewhere (EXPLAIN's
        own words, BEGIN, THEN, ELSE or LOOP in a DO block's body)."""
        r = self.r
        col = r.choice(["loop", "begin", '"then"', '"else"', '"loop"', '"begin"', '"verbose"',
                        '"analyze"', '"analyse"', "explain", '"explain"', '"as"', "a",
                        "'verbose'", "'loop'", "$$begin$$", "'x'"])
        return "%sselect %s %s into %s from (select 1 as loop, 1 as begin, 1 as \"then\", " \
               "1 as \"else\", 1 as \"verbose\", 1 as \"analyze\", 1 as \"analyse\", " \
               "1 as explain, 1 as \"as\", 1 as a) s" % (
                   r.choice(["", "", "explain analyze ", "explain (analyze) ",
                             "explain analyze verbose "]), col,
                   r.choice(["insert", "merge"]), self.name())

    def make(self):
        """One statement that creates a temporary object (with pg_temp first)."""
        r = self.r
        n = self.name()
        return r.choice([
            lambda: "create table %s (a int)" % n,
            lambda: "create temp table %s (a int)" % n,
            lambda: "create temporary table %s as select 1 as a" % n,
            lambda: "create table %s as values (1)" % n,
            lambda: "create table %s as select 'x' insert" % n,
            lambda: "create view %s as select 1 as a" % n,
            lambda: "create or replace view %s as select 'create' as a" % n,
            lambda: "create sequence %s" % n,
            lambda: "create function %s() returns int language sql as $$select 1$$" % n,
            lambda: "create function %s() returns int language sql as 'select 1'" % n,
            lambda: "create type %s as (a int)" % n,
            lambda: "create domain %s as int" % n,
            lambda: "select * into %s from (values (1)) v" % n,
            lambda: "select 1 as a into temp %s" % n,
            lambda: "with x as (select 1 a) select * into %s from x" % n,
            lambda: "with x as (insert into pgw_words_audit values ('a') returning a) "
                    "select * into %s from x" % n,
            lambda: "explain analyze create table %s as select 1 as a" % n,
            lambda: "explain (analyze) select 1 as a into %s" % n,
            self.select_into, self.select_into, self.select_into, self.labelled,
            self.labelled,
            lambda: "select $$x$$into %s" % n,
            lambda: "select 'x'into %s" % n,
            lambda: "select (1)into %s" % n,
            lambda: 'select 1 "a"into %s' % n,
            lambda: "select 'x' insert into %s" % n,
            lambda: "select $$;$$ a, 1 insert into %s" % n,
            # (a parenthesis in a literal, a quoted name or a comment: not the
            # one that ends a WITH's queries or EXPLAIN's options)
            lambda: "with x as (select %s a) select %s b, (1) insert into %s" % (
                self.value(), self.value(), n),
            lambda: "explain (analyze %s) select %s b, (1) insert into %s" % (
                r.choice(["", "/* ( */", "-- (\n", ", costs true"]), self.value(), n),
            # (a ';' in a dollar quote with a parenthesis: not the statement's;
            # with standard_conforming_strings off a backslash's literal
            # goes on past the quote, over a parenthesis or comment)
            lambda: "with x as (select %s a) select %s b, (1) insert into %s" % (
                r.choice(SPANS), r.choice(SPANS), n),
            lambda: "select 'a\\' %s%s insert into %s" % (
                r.choice(["(", ") (", "(1) ("]), r.choice(["--'\n", "/*'*/"]), n),
        ])()

    def plain(self):
        """One statement that creates nothing."""
        return self.r.choice([
            "select 1", "values (1)", "show search_path", "select now()",
            "select " + self.value() + self.label(),
            "insert into pgw_words_audit values ('create')",
            "insert into pgw_words_audit select 'create table x (a int)'",
            "insert into pgw_words_audit (a) values ($$into$$)",
            "INSERT INTO pgw_words_audit VALUES ('x')",
            "merge into pgw_words_audit a using (select 'x' b) s on a.a = s.b "
            "when not matched then insert values (s.b)",
            "select has_database_privilege(current_user, current_database(), 'CREATE')",
            "select 1 as insert", "select 1 insert", "select 'x' as merge",
            'select s.* from (select 1 "create", 2 "into") s',
            "update pgw_words_audit set a = 'into' where a = 'create'",
            "delete from pgw_words_audit where a = 'x;y'",
            "do $$begin perform 1; end$$", "do $d$ begin null; end $d$",
            "select run_sql('select 1')",
            "/* create table x (a int) */ select 1",
            "-- select 1 into x\nselect 2",
            "select 'create' as action",
        ])

    def quote(self, s, kind):
        if kind == "lit":
            return "'" + s.replace("'", "''") + "'"
        if kind == "elit":
            return "E'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if kind == "dollar":
            return "$$" + s + "$$" if "$$" not in s else None
        if kind == "tag":
            return "$tag$" + s + "$tag$" if "$tag$" not in s else None
        return None

    def hidden(self, s):
        """s where it runs not: in a literal, a quoted name, a comment."""
        r = self.r
        k = r.choice(["lit", "elit", "dollar", "tag", "name", "line", "block", "nested"])
        if k == "name":
            return 'select 1 as "' + s.replace('"', '""') + '"'
        if k == "line":
            return "-- " + s.replace("\n", " ").replace("\r", " ") + "\nselect 1"
        if k in ("block", "nested"):
            if "*/" in s or "/*" in s:
                return "select 1"
            inner = "/* " + s + " */" if k == "block" else "/* a /* " + s + " */ b */"
            return r.choice([inner + " select 1", "select 1 " + inner])
        q = self.quote(s, k)
        return "select " + q if q else "select 1"

    def run(self, s):
        """s run: directly, by run_sql(a literal of it), in a DO block."""
        r = self.r
        k = r.choice(["direct", "direct", "lit", "elit", "dollar", "tag", "do_exec", "do",
                      "do_exec_dollar", "do_format"])
        if k == "direct":
            return s
        low = s.lower()
        if "into" in low and not low.startswith("create") and not low.startswith("explain"):
            return s        # (PL/pgSQL: no EXECUTE of SELECT INTO, an INTO of its own)
        if k in ("lit", "elit", "dollar", "tag"):
            q = self.quote(s, k)
            return "select run_sql(" + q + ")" if q else s
        if k == "do_exec":
            return "do $d$begin execute " + self.quote(s, "lit") + "; end$d$"
        if k == "do_exec_dollar":
            return ("do $d$begin execute $x$" + s + "$x$; end$d$"
                    if "$x$" not in s and "$d$" not in s else s)
        if k == "do_format":
            return ("do $d$begin execute format(" + self.quote(s, "lit") + "); end$d$"
                    if "%" not in s else s)
        if not s.lower().startswith("create") or "$d$" in s:
            return s        # (EXPLAIN in PL/pgSQL: a result with no destination)
        return "do $d$begin " + s + "; end$d$"

    def spaces(self, s):
        """s with some of its blanks other blanks or comments."""
        if self.r.random() < 0.7:
            return s
        return "".join(self.blank() if c == " " and self.r.random() < 0.3 else c for c in s)

    def case(self, s):
        r = self.r
        k = r.random()
        if k < 0.6:
            return s
        if k < 0.75:
            return s.upper()
        # (random case per letter; a dollar quote's tag as it is, both ends alike)
        return "".join(p if TAG.fullmatch(p) else
                       "".join(c.upper() if c.isalpha() and r.random() < 0.5 else c for c in p)
                       for p in TAG.split(s))

    def stmt(self):
        r = self.r
        k = r.random()
        if k < 0.45:
            return self.run(self.spaces(self.make()))
        if k < 0.7:
            return self.hidden(self.make() if r.random() < 0.8 else self.plain())
        return self.plain()

    def text(self):
        r = self.r
        parts = [self.stmt() for _ in range(r.choice([1, 1, 1, 2, 2, 3, 4]))]
        out = ""
        for i, p in enumerate(parts):
            if i:
                out += r.choice([";", "; ", ";\n", " ;", ";/* ; */", ";-- x\n"])
            out += p
        if r.random() < 0.3:
            out += r.choice([";", " ;", ";\n", "; -- end"])
        if r.random() < 0.2:
            out = self.blank() + out
        return self.case(out)


@unittest.skipIf(psycopg2 is None, "psycopg2 missing (scripts/deps.sh)")
class TestWordsDifferential(unittest.TestCase):

    def test_make_for_every_temp_object(self):
        count = int(os.environ.get("PGW_WORDS_COUNT", "1500"))
        seed = int(os.environ.get("PGW_WORDS_SEED") or random.SystemRandom().randrange(1 << 30))
        if not os.path.exists(filter_binary()):
            self.skipTest("no words_filter (build tests/words_filter.c): " + filter_binary())
        gen = Gen(random.Random(seed))
        texts = [gen.text() for _ in range(count)]
        words = scan(texts)
        pg = pt.Postgres()
        conn = psycopg2.connect(pg.dsn())
        self.addCleanup(conn.close)
        cur = conn.cursor()
        conn.autocommit = True
        cur.execute(SETUP)
        self.addCleanup(pt.Postgres().psql, "DROP FUNCTION IF EXISTS public.run_sql(text); "
                        "DROP TABLE IF EXISTS public.pgw_words_audit")
        cur.execute("SET statement_timeout = '10s'")
        conn.autocommit = False
        cur.execute(CREATED)
        self.assertEqual(cur.fetchone()[0], 0, "temporary objects before the first text")
        conn.rollback()
        started = time.monotonic()
        made = failed = alarms = blind = blind_ran = 0
        misses = []
        scs = random.Random(seed)
        for text, w in zip(texts, words):
            cur.execute("SET LOCAL search_path = pg_temp, public")
            off = scs.random() < 0.2
            if off:                     # (a backslash in any literal: an escape)
                cur.execute("SET LOCAL standard_conforming_strings = off")
            is_blind = (off and "\\" in text) or bool(DOLLAR_NUMBER.search(text))
            blind += is_blind
            try:
                cur.execute(text)
            except psycopg2.Error:
                conn.rollback()
                failed += 1
                created = None
            else:
                cur.execute(CREATED)
                created = cur.fetchone()[0]
                conn.rollback()
            if "prepare" in text.lower():
                conn.autocommit = True
                cur.execute("DEALLOCATE ALL")
                conn.autocommit = False
            if created is None:
                continue
            blind_ran += is_blind
            if created:
                made += 1
                if not w & MAKE:
                    misses.append(text)
            elif w & MAKE:
                alarms += 1
        ran = count - failed
        summary = ("seed %d: %d texts, %d rejected by PostgreSQL, %d created a temporary "
                   "object, %d misses, %d false alarms (%.1f%% of the %d that created "
                   "nothing), %d blind (%d ran), %.1f s" % (
                       seed, count, failed, made, len(misses), alarms,
                       100.0 * alarms / max(1, ran - made), ran - made, blind, blind_ran,
                       time.monotonic() - started))
        print("\n" + summary, file=sys.stderr)
        if misses:
            self.fail("%s\nPGW_WORDS_SEED=%d: texts that created a temporary object without "
                      "PGW_WORDS_MAKE (the first 40):\n%s" % (
                          summary, seed, "\n".join(repr(t) for t in misses[:40])))
        # (the generator does what it is for: texts that run and create)
        self.assertGreater(made, count // 10, summary)
        self.assertGreater(ran - made, count // 10, summary)
        self.assertGreater(blind_ran, count // 100, summary)


if __name__ == "__main__":
    unittest.main()
