"""py.differential: difftest.py's fixed seeds under ctest.

Random protocol sessions (simple and extended protocol, errors mid-batch,
pipelines past a Sync, COPY, transactions, tracked SETs) run once straight
against PostgreSQL and once through pgwharf in transaction mode on a pool
of 2, eight at a time; every reply must match (see difftest.py for what is
left out as known to differ)."""

import unittest

import difftest


class TestDifferential(difftest.TestDifferential):
    SEEDS = range(1, 201)


class TestDifferentialFoundSeeds(difftest.TestDifferential):
    """Seeds beyond the fixed ones that found a difference, at the number
    of steps that showed it (docs/found-and-fixed.md)."""
    SEEDS = [2608]     # a Parse of a name in use replaced the unnamed portal
    STEPS = 40


if __name__ == "__main__":
    unittest.main()
