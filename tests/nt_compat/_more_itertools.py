"""The one ``more_itertools`` function NT's rules_test uses (not a kjax dependency)."""

import itertools


def powerset(iterable):
    """All subsets of ``iterable`` as tuples, smallest first (``more_itertools.powerset``)."""
    s = list(iterable)
    return itertools.chain.from_iterable(itertools.combinations(s, r) for r in range(len(s) + 1))
