"""Prints the bad-input suite's counts at the end of the session.

Each case records its outcome in ``user_properties`` (which pytest-xdist carries from the workers
to the controller); the summary is printed by whichever process loads this conftest at start-up:
``pytest tests/bad_input`` (with or without ``-n``) always does, and so does ``pytest -n 0``. A
``pytest -n N`` run over all of ``tests/`` (``make test``) loads it only on the workers (pytest loads
the conftests of ``tests/test*`` folders at start-up, not ``tests/bad_input``); to print there too,
``tests/conftest.py`` can re-export the two hooks: ``from tests.bad_input.conftest import
pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401`` (the summary prints once).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict

_RESULTS: dict[str, dict] = {}
_PRINTED = False


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    for key, value in getattr(report, "user_properties", ()):
        if key == "bad_input":
            rec = json.loads(value)
            _RESULTS[rec["id"]] = rec


def pytest_terminal_summary(terminalreporter):
    global _PRINTED
    if not _RESULTS or _PRINTED:  # printed once even when tests/conftest.py re-exports this hook
        return
    _PRINTED = True
    w = terminalreporter.write_line
    cases = {k: r for k, r in _RESULTS.items() if r["outcome"] not in ("VALID", "BROKEN", "SKIPPED")}
    skipped = sum(r["outcome"] == "SKIPPED" for r in _RESULTS.values())
    valid = [r for r in _RESULTS.values() if r["outcome"] in ("VALID", "BROKEN")]
    kinds = ("OK", "SILENT", "FOREIGN", "MISNAMED")
    per: dict[str, Counter] = defaultdict(Counter)
    for r in cases.values():
        per[r["pillar"]][r["outcome"]] += 1
    terminalreporter.section("kjax bad-input suite")
    callables = len(valid)
    w(f"{callables} callables ({sum(r['outcome'] == 'BROKEN' for r in valid)} with a broken valid call), "
      f"{len(cases)} bad-input cases" + (f" ({skipped} skipped: their spec's valid call fails)" if skipped else ""))
    w(f"{'pillar':<18}" + "".join(f"{k:>10}" for k in kinds))
    for pillar in sorted(per):
        w(f"{pillar:<18}" + "".join(f"{per[pillar][k]:>10}" for k in kinds))
    total = Counter()
    for c in per.values():
        total.update(c)
    w(f"{'total':<18}" + "".join(f"{total[k]:>10}" for k in kinds))
    bad = sorted((r for r in _RESULTS.values() if r["outcome"] not in ("OK", "VALID", "SKIPPED")),
                 key=lambda r: r["id"])
    if bad:
        w("")
        w("not OK (id: outcome: message):")
        for r in bad:
            mark = " [known]" if r["known"] else ""
            w(f"  {r['id']}: {r['outcome']}{mark}: {r['message']}")
    fixed = sorted(r["id"] for r in _RESULTS.values() if r["known"] and r["outcome"] in ("OK", "VALID"))
    w("")
    w(f"KNOWN_FAILURES that now pass (remove them from tests/bad_input/specs.py): {len(fixed)}")
    for i in fixed:
        w(f"  {i}")
    if os.environ.get("KJAX_BAD_INPUT_PRINT_KNOWN", "") not in ("", "0"):
        ids = sorted(r["id"] for r in bad)
        w("")
        w("KNOWN_FAILURES: set[str] = {")
        for i in ids:
            w(f'    "{i}",')
        w("}")
