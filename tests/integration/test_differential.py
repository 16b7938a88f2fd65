"""py.differential: difftest.py's fixed seeds under ctest.

Random protocol sessions (simple and extended protocol, errors mid-batch,
pipelines past a Sync, COPY, transactions, tracked SETs) run once straight
against PostgreSQL and once through pgwharf in transaction mode on a pool
of 2, eight at a time; every reply must match (see difftest.py for what is
left out as known to differ), and through pgwharf a client with nothing
under way (all answered, no batch open, no transaction) must hold no
server (SHOW CLIENTS)."""

import unittest

import difftest


class TestDifferential(difftest.TestDifferential):
    SEEDS = range(1, 201)


class TestDifferentialMore(difftest.TestDifferential):
    """Also what the seeds above do not send (Gen.more_step): batches
    ending with Flush left open, Close or Describe and Flush alone,
    FunctionCall in and after batches, COPY FROM STDIN by Execute with
    its Sync and then rows, a bad one, CopyDone or CopyFail and more
    messages before and after a Sync, lone Syncs."""
    SEEDS = range(1, 41)
    MORE = True


class TestDifferentialMoreWithoutPrepared(TestDifferentialMore):
    """The same with max_prepared_statements = 0 (the tracker alone):
    named statements only as PostgreSQL's errors (never prepared)."""
    EXTRA = {"max_prepared_statements": 0}


class TestDifferentialMoreFoundSeedsWithoutPrepared(TestDifferentialMoreWithoutPrepared):
    """Seeds of a difftest hunt (--more, max_prepared_statements = 0)
    where a COPY FROM STDIN by Execute ended well and an error then skipped
    a Query or FunctionCall: the server stayed with its client
    (docs/found-and-fixed.md, session 41)."""
    SEEDS = [90177, 5001, 5073, 5396, 5434, 5505, 90235]


class TestDifferentialFoundSeeds(difftest.TestDifferential):
    """Seeds beyond the fixed ones that found a difference, at the number
    of steps that showed it (docs/found-and-fixed.md)."""
    SEEDS = [2608]     # a Parse of a name in use replaced the unnamed portal
    STEPS = 40


if __name__ == "__main__":
    unittest.main()
