"""Generate tests/nt_compat/status.py and nt_passing.txt from NT runs and a kjax run of NT's suite.

NT is slow on a shared 2-core machine (hours for all files), so the procedure runs the kjax side
first and NT only where it matters:

1. The port under kjax, one file at a time, one log per file (``-m nt_compat`` collects the whole
   port; ``-rA`` lists every outcome at the end, ``-v`` each as it ends, so a run cut by its
   ``timeout`` still records what it did; split slow files by class with ``-k``; logs are read in
   name order and a later one wins, so name reruns ``zz_*.log``):

       nice -n 5 timeout 900 .venv/bin/python -m pytest -v -p no:xdist -m nt_compat -rA \\
         tests/nt_compat/$f.py > <kjax_logs>/<f with / as _>.log

   A test that passes under kjax needs no NT run.

2. NT's own tests under NT (jax 0.4.23, CPU, NT's default sampling ``NT_NUM_GENERATED_CASES=4``)
   on the test IDs that FAILED / ERROR / XFAIL under kjax only, in a read-only export of NT's
   tests at v0.6.5 (``git --git-dir=<mirror> archive v0.6.5 tests examples | tar -x -C <dir>``):

       cd <dir> && NT_NUM_GENERATED_CASES=4 JAX_PLATFORMS=cpu nice -n 5 timeout 900 \\
         <repo>/benchmarks/.peers/nt/bin/python -m pytest -q -rA tests/$f.py::Class::test ... \\
         > <nt_id_logs>/<f with / as _>.log

   NT's environment lacks ``more_itertools`` (``stax/linear_test`` and ``rules_test`` import it):
   put a copy of ``tests/nt_compat/_more_itertools.py`` named ``more_itertools.py`` on
   ``PYTHONPATH``. Whole-file NT runs (the same command on ``tests/$f.py``) go to ``<nt_logs>``: a file whose
   NT run finished is an "NT-run file" (its tests that NT does not pass are skipped even without
   a kjax failure).

3. ``.venv/bin/python benchmarks/peers/nt_compat_status.py --kjax-logs <kjax_logs>
   [--nt-logs <nt_logs>] [--nt-id-logs <nt_id_logs>] [--previous]``

   ``--previous`` (on by default; ``--no-previous`` to drop) merges what the current
   ``tests/nt_compat/status.py`` records, so old logs need not be kept: its NT outcomes
   (``NT_PASSING``, ``NOT_PASSING_UNDER_NT``, ``NT_RUN_FILES``) and its kjax outcomes, test by
   test: a log wins for the test IDs it has, so a rerun of
   a few IDs (``-k``) updates only those. A test's NT outcome is known if any log (or the
   previous status) has it; a newer log wins over the previous status.

In the port (``tests/nt_compat/conftest.py``): a test NT itself fails or skips is skipped; a test
that passes under NT (or whose NT outcome is unknown) and fails under kjax is xfail, with a reason
read from its error (an NT internal, a stax layer still being built, a jax API that moved, or the
error itself); a test that passes under kjax simply runs, whether NT ran it or not.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEST = os.path.join(ROOT, "tests", "nt_compat")
LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (?:\[\d+\] )?(\S+?\.py)(?::\d+)?"
                  r"(?:::(\S+))?(?: - (.*))?$")
#: ``pytest -v``'s line per test, written as each test ends: the outcomes of a run cut by its
#: ``timeout`` survive (the ``-rA`` summary comes only at the end)
VLINE = re.compile(r"^(\S+?\.py)::(\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
#: a failed ``subTest`` (pytest reports its test PASSED, or XPASS when xfail, nonetheless): the
#: test fails (SUBXFAIL: a failed subTest of a test already xfail, whose reason follows " - ")
SUBLINE = re.compile(r"^(?:SUB(?:FAILED|XFAIL)\(.*?\) (\S+?\.py)::(\S+)|(\S+?\.py)::(\S+) "
                     r"SUBFAILED\()(?:.* - (.*))?")


def outcomes(log_dir: str, prefix: str) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """``{file::Class::test: (outcome, message)}`` and the files whose run finished."""
    res, done = {}, set()
    for path in sorted(glob.glob(os.path.join(log_dir, "*.log"))):
        with open(path) as f:
            text = f.read()
        finished = re.search(r"^\S* ?=* .*(passed|failed|error|skipped).* in [\d.]+s", text, re.M) or \
            re.search(r"\d+ (passed|failed|skipped)", text.splitlines()[-1] if text else "")
        # the first error line of each failure section ("____ Class.test ____"), for the reasons
        errors = {}
        for sec in re.split(r"^_{3,} (?=\S+ _{3,}$)", text, flags=re.M)[1:]:
            name = sec.split(" ", 1)[0]
            err = re.search(r"^E\s+([\w.]*(?:Error|Exception)\b.*)$", sec, re.M)
            if err:
                errors[name] = err.group(1).strip()
        here: dict[str, tuple[str, str]] = {}
        for line in text.splitlines():
            v = VLINE.match(line)
            if v and v.group(1).startswith(prefix) and v.group(3) != "SKIPPED":
                key = v.group(1)[len(prefix):] + "::" + v.group(2)
                here.setdefault(key, (v.group(3), errors.get(v.group(2).replace("::", "."), "")))
            m = LINE.match(line)
            if not m or not m.group(3):
                continue
            rel = m.group(2)
            if not rel.startswith(prefix):
                continue
            key = rel[len(prefix):] + "::" + m.group(3)
            here[key] = (m.group(1), errors.get(m.group(3).replace("::", "."), m.group(4) or ""))
            if finished:
                done.add(rel[len(prefix):])
        for line in text.splitlines():
            sub = SUBLINE.match(line)
            if sub:
                rel, name = (sub.group(1), sub.group(2)) if sub.group(1) else (sub.group(3), sub.group(4))
                if rel.startswith(prefix):
                    key = rel[len(prefix):] + "::" + name
                    head = re.search(r"^_{3,} " + re.escape(name.replace("::", ".")) + r"\b.*?\n"
                                     r"(?:.*\n)*?E\s+([\w.]*(?:Error|Exception)\b.*)$", text, re.M)
                    msg = sub.group(5) or ("a subTest: " + (head.group(1).strip() if head else ""))
                    here[key] = ("FAILED", msg.strip())
        res.update(here)  # later logs (sorted names: zz_* reruns last) win
    return res, done


#: reasons checked by hand, for failures whose error does not tell (with the command that shows it)
OVERRIDES = {
    "stax/elementwise_test.py::ActivationTest::test_monomial0":
        "statistical (Monte Carlo vs analytic at rtol 5%): misses by 0.6% on the inputs jax >= 0.5 "
        "draws, passes on NT's (JAX_THREEFRY_PARTITIONABLE=0 .venv/bin/python -m pytest -p no:xdist "
        "-m nt_compat tests/nt_compat/stax/elementwise_test.py -k test_monomial0)",
}


def reason(msg: str) -> str:
    if "is an NT internal" in msg or "tests an NT internal" in msg:
        return "tests an NT internal (neural_tangents._src.*); excluded, see README.md"
    m = re.search(r"unexpected keyword argument '(_\w+)'", msg)
    if m:
        return (f"passes NT's private argument {m.group(1)} (structured-derivative rule switches, "
                "an NT internal); excluded, see README.md")
    if "`dimension_numbers` must be None or (lhs, rhs, out)" in msg:
        return ("Conv with different lhs / out layouts (NT's test_vmap_axes); kjax's Conv keeps "
                "one layout (docs/migration_nt.md)")
    m = re.search(r"module 'kjax\.ntk\.stax' has no attribute '(\w+)'", msg)
    if m:
        return f"needs stax.{m.group(1)} (#14 D1a/D1b, in progress)"
    m = re.search(r"module 'jax(?:\.\w+)*' has no attribute '(\w+)'", msg)
    if m:
        return f"uses jax.{m.group(1)}, removed from jax since 0.4.23 (NT's test code, not kjax)"
    if re.search(r"kjax\.ntk\.predict\.\w+: `(trace_axes|k_train_train|y_train)` must", msg):
        return ("kjax.ntk.predict takes trace_axes (-1,) / () and [N, O] targets only (a documented "
                "difference, docs/migration_nt.md): " + msg[msg.index("kjax.ntk.predict"):][:110])
    if "dtype('float64') != dtype('float32')" in msg:
        return ("dtype check: kjax's predict returns the targets' floating dtype (a documented "
                "difference, docs/migration_nt.md) and this suite runs with float64 enabled")
    if msg.startswith(("fails under kjax", "needs stax.", "uses jax.", "passes NT", "Conv with",
                       "statistical", "kjax.ntk.predict takes", "dtype check")):
        return msg  # an xfail reason carried over from a run with the previous status
    return "fails under kjax: " + (msg[:160] or "see the full run")


def _previous() -> dict:
    path = os.path.join(DEST, "status.py")
    if not os.path.exists(path):
        return {}
    spec = importlib.util.spec_from_file_location("_nt_status_previous", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {k: getattr(mod, k, set()) for k in ("NT_RUN_FILES", "NT_PASSING", "NOT_PASSING_UNDER_NT",
                                                "KJAX_PASSING", "XFAIL")}


def merge(nt_logs: list[str], nt_id_logs: list[str], kjax_logs: list[str], previous: bool) -> dict:
    """The merged outcomes: ``nt`` ({test: passed?}), ``nt_files``, ``kjax`` ({test: (outcome,
    message)})."""
    prev = _previous() if previous else {}
    nt: dict[str, bool] = {k: True for k in prev.get("NT_PASSING", ())}
    nt.update({k: False for k in prev.get("NOT_PASSING_UNDER_NT", ())})
    nt_files = set(prev.get("NT_RUN_FILES", ()))
    for d in nt_logs:
        res, done = outcomes(d, "tests/")
        nt_files |= done
        nt.update({k: o == "PASSED" for k, (o, _) in res.items()})
    for d in nt_id_logs:  # targeted runs: outcomes of single IDs, no file counts as run
        res, _ = outcomes(d, "tests/")
        nt.update({k: o == "PASSED" for k, (o, _) in res.items()})
    # in an NT-run file, a test without an NT PASSED line does not pass under NT
    kjax: dict[str, tuple[str, str]] = {}
    for d in kjax_logs:
        res, _ = outcomes(d, "tests/nt_compat/")
        kjax.update(res)
    # the previous kjax outcomes of the tests these logs do not have (a log wins per test ID, so
    # a rerun of a few IDs with -k updates only those)
    for k in prev.get("KJAX_PASSING", ()):
        kjax.setdefault(k, ("PASSED", ""))
    for k, msg in prev.get("XFAIL", {}).items():
        kjax.setdefault(k, ("XFAIL", msg))
    return {"nt": nt, "nt_files": nt_files, "kjax": kjax}


def write(m: dict) -> None:
    nt, nt_files, kj = m["nt"], m["nt_files"], m["kjax"]
    nt_pass = {k for k, ok in nt.items() if ok}
    not_nt = {k for k, ok in nt.items() if not ok}
    kj_pass = {k for k, (o, _) in kj.items() if o in ("PASSED", "XPASS")}
    xfail = {k: OVERRIDES.get(k) or reason(msg) for k, (o, msg) in kj.items()
             if o in ("FAILED", "ERROR", "XFAIL") and k not in not_nt}
    with open(os.path.join(DEST, "status.py"), "w") as f:
        f.write('"""Outcomes of the ported NT suite (GENERATED by benchmarks/peers/nt_compat_status.py; '
                'do not edit)."""\n\n')
        f.write("# flake8: noqa\n# ruff: noqa\n\n")
        files = ", ".join(repr(x) for x in sorted(nt_files))
        f.write(f"NT_RUN_FILES: set[str] = {{{files}}}\n" if nt_files else "NT_RUN_FILES: set[str] = set()\n")
        lists = (("NT_PASSING", nt_pass), ("NOT_PASSING_UNDER_NT", not_nt), ("KJAX_PASSING", kj_pass))
        for name, items in lists:
            f.write(f"\n{name}: set[str] = {{\n" + "".join(f"    {k!r},\n" for k in sorted(items)) + "}\n"
                    if items else f"\n{name}: set[str] = set()\n")
        rows = "".join(f"    {k!r}: {v!r},\n" for k, v in sorted(xfail.items()))
        f.write("\nXFAIL: dict[str, str] = {\n" + rows + "}\n")
    with open(os.path.join(DEST, "nt_passing.txt"), "w") as f:
        f.write("# NT 0.6.5's own tests that pass under NT (jax 0.4.23, CPU, float32 default, "
                "NT_NUM_GENERATED_CASES=4), run per file or per test ID with\n")
        f.write("#   NT_NUM_GENERATED_CASES=4 JAX_PLATFORMS=cpu benchmarks/.peers/nt/bin/python -m pytest "
                "-q -rA tests/<file>.py[::Class::test ...]   (in an export of NT's tests/ at v0.6.5)\n")
        f.write("# (benchmarks/peers/nt_compat_status.py's docstring: NT runs only on the IDs that fail "
                "under kjax)\n")
        f.write(f"# files whose whole NT run finished: {', '.join(sorted(nt_files))}\n")
        f.write("".join(k + "\n" for k in sorted(nt_pass)))
    print(f"NT: {len(nt_pass)} pass, {len(not_nt)} do not, files done: {sorted(nt_files)}")
    print(f"kjax: {len(kj_pass)} pass, {len(xfail)} xfail")


def _category(reason_: str) -> str:
    if "NT internal" in reason_:
        return "NT internal"
    if reason_.startswith(("kjax.ntk.predict takes", "dtype check", "Conv with")):
        return "documented difference"
    return reason_.split(" ", 1)[0].split(":")[0]  # "statistical", "fails", "needs", "uses"


def summary() -> None:
    """Per file: recorded NT passes, kjax passes and xfail reasons, from the current status.py
    (the table of tests/nt_compat/README.md)."""
    prev = _previous()
    files = sorted({k.split("::", 1)[0] for k in (prev["NT_PASSING"] | prev["KJAX_PASSING"]
                                                  | set(prev["XFAIL"]))})
    print("| file | passes under NT (recorded) | passes under kjax | xfail (reason) |")
    print("|---|---|---|---|")
    for f in files:
        def count(keys, f=f):
            return sum(k.startswith(f + "::") for k in keys)
        cats: dict[str, int] = {}
        for k, r in prev["XFAIL"].items():
            if k.startswith(f + "::"):
                cats[_category(r)] = cats.get(_category(r), 0) + 1
        xf = ", ".join(f"{n} {c}" for c, n in sorted(cats.items())) or "0"
        print(f"| `{f}` | {count(prev['NT_PASSING'])} | {count(prev['KJAX_PASSING'])} | {xf} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--kjax-logs", action="append", default=[], help="dir of per-file kjax logs")
    p.add_argument("--nt-logs", action="append", default=[], help="dir of whole-file NT logs")
    p.add_argument("--nt-id-logs", action="append", default=[], help="dir of NT logs of test IDs")
    p.add_argument("--no-previous", dest="previous", action="store_false",
                   help="do not merge the outcomes recorded in the current status.py")
    p.add_argument("--summary", action="store_true", help="print the per-file table of status.py")
    a = p.parse_args(argv)
    if a.summary:
        summary()
        return
    write(merge(a.nt_logs, a.nt_id_logs, a.kjax_logs, a.previous))


if __name__ == "__main__":
    main()
