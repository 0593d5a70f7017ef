#!/usr/bin/env python3
"""``make mutate``: mutation testing of the model with mutmut, within a time budget.

mutmut copies the project into ``mutants/``, changes one operator, constant or
call at a time (a *mutant*) and runs the tests that cover the changed function.
A mutant the tests fail on is *killed*; one they pass on *survived*, and is a
behaviour no test states, unless it is *equivalent* (it cannot change what the
model does): those are listed with the reason in ``equivalent.tsv`` beside this
file and left out of the score. A timeout counts as killed (the tests noticed).

Usage: ``python tests/mutation/mutate.py [--seconds N] [MODULE ...]`` (default:
the kernel-side modules). mutmut keeps its results in ``mutants/``, so a run
cut short by the budget resumes where it stopped; ``--fresh`` starts over.
Prints the score per module and every survivor; ``mutmut show NAME`` prints
a survivor's diff.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = Path(__file__).with_name("equivalent.tsv")
#: The modules the project holds to the score (issue: keys, mm, execute_only, access,
#: signals, tasks, uaccess, hardware).
KERNEL_SIDE = ["keys", "mm", "execute_only", "access", "signals", "tasks", "uaccess", "hardware"]
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}      # 36 etc.: timeouts; 37: caught by type check
SURVIVED = {0, 5, 33}                           # 5/33: no test covers the function at all


def equivalent() -> dict[str, str]:
    """Mutant name -> why it cannot change the model's behaviour."""
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, reason = line.split("\t", 1)
                out[name] = reason
    return out


def results(modules: list[str]) -> dict[str, dict[str, int | None]]:
    """module -> mutant name -> exit code (None: not run yet), from mutmut's meta files."""
    out = {}
    for module in modules:
        meta = ROOT / "mutants" / "pkeyspec" / f"{module}.py.meta"
        if meta.exists():
            out[module] = json.loads(meta.read_text())["exit_code_by_key"]
    return out


def run(modules: list[str], seconds: float) -> bool:
    """Run mutmut on ``modules`` for at most ``seconds``; True when it finished."""
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    names = [f"pkeyspec.{m}.*" for m in modules]
    proc = subprocess.Popen([mutmut, "run", "--max-children", str(os.cpu_count() or 2), *names],
                            cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=seconds)
        return proc.returncode == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)          # mutmut saves what it has on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        return False


def report(modules: list[str]) -> int:
    eq = equivalent()
    total = Counter()
    survivors = []
    print(f"{'module':14} {'mutants':>7} {'killed':>7} {'survived':>8} {'equiv.':>6} "
          f"{'not run':>7} {'score':>7}")
    for module, codes in results(modules).items():
        c = Counter()
        for name, code in codes.items():
            if name in eq:
                c["equivalent"] += 1
            elif code is None:
                c["not run"] += 1
            elif code in KILLED:
                c["killed"] += 1
            elif code in SURVIVED:
                c["survived"] += 1
                survivors.append(name)
            else:
                c["survived"] += 1             # suspicious, skipped, segfault: not a kill
                survivors.append(name)
        judged = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / judged:6.1f}%" if judged else "     -"
        print(f"{module:14} {len(codes):7} {c['killed']:7} {c['survived']:8} "
              f"{c['equivalent']:6} {c['not run']:7} {score:>7}")
        total.update(c)
    judged = total["killed"] + total["survived"]
    if judged:
        print(f"{'all':14} {sum(total.values()):7} {total['killed']:7} {total['survived']:8} "
              f"{total['equivalent']:6} {total['not run']:7} {100 * total['killed'] / judged:6.1f}%")
    if survivors:
        print(f"\n{len(survivors)} survivors (mutmut show NAME for the diff):")
        for name in sorted(survivors):
            print("  " + name)
    stale = sorted(set(eq) - {n for codes in results(modules).values() for n in codes})
    if stale:
        print(f"\nequivalent.tsv names {len(stale)} mutants mutmut no longer makes: {stale[:5]}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", default=KERNEL_SIDE)
    ap.add_argument("--seconds", type=float, default=3600, help="time budget (default 3600)")
    ap.add_argument("--fresh", action="store_true", help="discard mutmut's earlier results")
    ap.add_argument("--report", action="store_true", help="only print the last results")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modules if not (ROOT / "pkeyspec" / f"{m}.py").exists()]
    if unknown:
        print(f"mutate: no module pkeyspec/{unknown[0]}.py", file=sys.stderr)
        return 2
    if args.fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    if not args.report:
        t = time.monotonic()
        done = run(args.modules, args.seconds)
        print(f"mutmut {'finished' if done else 'stopped by the budget'} after "
              f"{time.monotonic() - t:.0f} s")
    return report(args.modules)


if __name__ == "__main__":
    sys.exit(main())
