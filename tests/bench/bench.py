"""Benchmark of the race explorer: ``make bench`` (a script, not a pytest test).

Measures, in one run, and prints one table:

(a) every race of the catalogue, decided in-process by the stateless explorer
    (the judge's mode): executions, states, CPU time (median, min-max over
    repeats), peak Python heap (tracemalloc, in a separate run);
(b) the reference scaling family (tests/bench/allocmap.py): N threads x M
    operations cycling pkey_alloc, pkey_mprotect, pkey_free on one allocation
    map, "locked" (verdict Never) and "lock-free" (verdict Sometimes), each
    size in a fresh Python process so that its peak RSS is its own;
(c) if Debian's ``spin`` is installed, the same family in Promela
    (tests/bench/alloc_*.pml), compiled with ``spin -a`` and ``gcc`` and run
    with ``./pan``, checking that the verdicts agree.

Times are CPU time (user + system) of the process doing the work, so that
other load on the machine disturbs them less than wall time would.

    python tests/bench/bench.py [--repeats N] [--budget SECONDS] [--no-spin]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from allocmap import AllocMap  # noqa: E402

from pkeyspec.explore import explore, explore_stateful  # noqa: E402

#: The family's sizes: (variant, threads, operations, explorer).
FAMILY = [
    ("locked", 2, 3, "stateful"),
    ("locked", 3, 3, "stateful"),
    ("locked", 3, 3, "stateless"),
    ("locked", 4, 4, "stateful"),
    ("locked", 4, 8, "stateful"),
    ("lock-free", 3, 3, "stateful"),
    ("lock-free", 3, 3, "stateless"),
    ("lock-free", 4, 6, "stateful"),
]
#: The issue's count of Mazurkiewicz traces of locked 3x3.
ISSUE_TRACES_LOCKED_3X3 = 1044
#: Hard limits per exploration, so that no size can run away with the budget.
MAX_STATES = 2_000_000
MAX_EXECUTIONS = 2_000_000
#: Spin's hash table: 2^20 slots (8 MB), plenty for these sizes.
PAN_HASH = "-w20"


def cpu() -> float:
    return time.process_time()


def repeat(fn, repeats: int, budget: float):
    """Run ``fn`` up to ``repeats`` times while the next run fits in ``budget`` seconds.

    Returns (the last result, the list of CPU times).
    """
    times: list[float] = []
    result = None
    while len(times) < repeats:
        start = cpu()
        result = fn()
        times.append(cpu() - start)
        if sum(times) + times[-1] > budget:
            break
    return result, times


# --- (b) one size of the family, in a worker process --------------------------------------


def family_program(variant: str, n: int, m: int) -> AllocMap:
    return AllocMap(n, m, lockfree=variant == "lock-free")


def worker(variant: str, n: int, m: int, mode: str, repeats: int, budget: float) -> dict:
    """Explore one size; the parent reads this process's peak RSS with wait4."""
    def once():
        program = family_program(variant, n, m)
        if mode == "stateful":
            return explore_stateful(program, program.name, max_states=MAX_STATES)
        return explore(program, program.name, max_executions=MAX_EXECUTIONS)

    obs, times = repeat(once, repeats, budget)
    return {"verdict": obs.verdict, "complete": obs.complete, "states": obs.states,
            "transitions": obs.transitions, "executions": obs.executions, "times": times,
            "rss": peak_rss()}


def peak_rss() -> int:
    """This process's own peak resident set (VmHWM, KB).

    Not ``ru_maxrss``: for a process started by fork and exec, Linux keeps
    the larger of its own peak and that of the process it was forked from.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_worker(args: list[str]) -> dict:
    """Run ``bench.py --worker ...`` in a fresh interpreter; its result."""
    proc = subprocess.run([sys.executable, __file__, "--worker", *args],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout)


def baseline_rss() -> int:
    """Peak RSS (KB) of a Python process that imports the model and the family, and stops."""
    return run_worker(["none"])["rss"]


# --- (c) Spin ----------------------------------------------------------------------------------


def spin_case(variant: str, n: int, m: int, repeats: int, workdir: Path) -> dict:
    """Compile the Promela family for N, M and run pan; states, transitions, errors, times."""
    source = HERE / ("alloc_locked.pml" if variant == "locked" else "alloc_lockfree.pml")
    build = workdir / f"{variant}-{n}x{m}"
    build.mkdir()
    start = time.perf_counter()
    subprocess.run(["spin", "-a", f"-DN={n}", f"-DM={m}", str(source)], cwd=build, check=True,
                   capture_output=True, text=True)
    subprocess.run(["gcc", "-O2", "-DSAFETY", "-o", "pan", "pan.c"], cwd=build, check=True,
                   capture_output=True, text=True)
    compile_seconds = time.perf_counter() - start
    times, text = [], ""
    for _ in range(repeats):
        proc = subprocess.Popen(["./pan", "-c0", PAN_HASH], cwd=build, stdout=subprocess.PIPE,
                                text=True)
        text = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        times.append(usage.ru_utime + usage.ru_stime)
    found = re.search(r"([\d.]+)\s+total actual memory usage", text)
    memory = float(found.group(1)) * 1024 if found else 0.0

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        if not found:
            raise RuntimeError(f"pan output has no {pattern!r}:\n{text}")
        return int(found.group(1))

    errors = number(r"errors: (\d+)")
    return {"verdict": "Sometimes" if errors else "Never", "errors": errors,
            "states": number(r"(\d+) states, stored"),
            "transitions": number(r"(\d+) transitions \(= stored\+matched\)"),
            "times": times, "memory": memory, "compile": compile_seconds,
            "por": "+ Partial Order Reduction" in text}


# --- checks --------------------------------------------------------------------------------------


def brute_force_traces(program) -> int:
    """Count Mazurkiewicz traces without the explorer: distinct orders of dependent pairs."""
    n = len(program.thread_names)
    events = [(t, i) for t in range(n) for i in range(program.length(t))]
    pairs = [(a, b) for a, b in itertools.combinations(events, 2)
             if a[0] != b[0] and program.dependent(a, b)]
    traces = set()
    word = [t for t in range(n) for _ in range(program.length(t))]
    for order in set(itertools.permutations(word)):
        pcs, position = [0] * n, {}
        for k, t in enumerate(order):
            position[(t, pcs[t])] = k
            pcs[t] += 1
        traces.add(tuple(position[a] < position[b] for a, b in pairs))
    return len(traces)


# --- the table ------------------------------------------------------------------------------------


def fmt_time(times: list[float]) -> str:
    def s(x: float) -> str:
        return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"
    med = statistics.median(times)
    if len(times) == 1:
        return f"{s(med)} (1 run)"
    return f"{s(med)} ({s(min(times))}-{s(max(times))})"


def fmt_mem(kb: float, kind: str) -> str:
    return f"{kb:,.0f} KB {kind}" if kb < 1024 else f"{kb / 1024:.1f} MB {kind}"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows if r is not None)) for i, h in enumerate(headers)]
    right = {4, 5, 6, 9}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [rule if r is None else line(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds for the whole run; later sizes are skipped beyond it")
    parser.add_argument("--no-spin", action="store_true", help="do not run Spin even if installed")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker == ["none"]:
            print(json.dumps({"rss": peak_rss()}))
            return 0
        variant, n, m, mode, repeats, budget = args.worker
        print(json.dumps(worker(variant, int(n), int(m), mode, int(repeats), float(budget))))
        return 0

    started = time.perf_counter()
    notes: list[str] = []
    rows: list[list[str] | None] = []

    def elapsed() -> float:
        return time.perf_counter() - started

    def say(text: str) -> None:
        print(f"[{elapsed():6.1f} s] {text}", file=sys.stderr, flush=True)

    # (a) the catalogue, in-process.
    from pkeyspec.races import catalogue
    races = catalogue()
    say(f"(a) {len(races)} catalogue races, stateless, in-process")
    for race in races.values():
        obs, times = repeat(lambda: race.explore(), args.repeats, 10.0)
        tracemalloc.start()
        race.explore()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        verdict = obs.verdict + ("" if obs.verdict == race.result else f" (stated {race.result}!)")
        med = statistics.median(times)
        rows.append([race.name, "pkeyspec", "stateless", verdict, f"{obs.states:,}",
                     f"{obs.transitions:,}", f"{obs.executions:,}", fmt_time(times),
                     fmt_mem(peak / 1024, "heap"), f"{obs.states / med:,.0f}" if med else "-", ""])
    rows.append(None)

    # (b) and (c): the family, pkeyspec then Spin, size by size.
    spin = None if args.no_spin else shutil.which("spin")
    gcc = shutil.which("gcc")
    if args.no_spin:
        notes.append("Spin: not run (--no-spin).")
    elif spin is None:
        notes.append("spin not installed: no Spin rows (apt-get install spin).")
    elif gcc is None:
        spin = None
        notes.append("spin is installed but gcc is not: no Spin rows.")
    base = baseline_rss()
    notes.append(f"Peak RSS of a Python process that only imports pkeyspec and the family: "
                 f"{base / 1024:.1f} MB (included in the pkeyspec RSS figures).")
    workdir = Path(tempfile.mkdtemp(prefix="pkeyspec-bench-"))
    spin_done: dict[tuple, dict] = {}
    ratios: list[str] = []
    try:
        for variant, n, m, mode in FAMILY:
            name = f"{variant} {n}x{m}"
            left = args.budget - elapsed()
            if left < 5:
                notes.append(f"{name} {mode}: skipped, the {args.budget:.0f} s budget is spent.")
                continue
            say(f"(b) {name} {mode}")
            result = run_worker([variant, str(n), str(m), mode, str(args.repeats),
                                 str(min(60.0, left / 2))])
            rss = result["rss"]
            expected = family_program(variant, n, m).result
            verdict = result["verdict"] + ("" if result["complete"] else " (incomplete)")
            if result["verdict"] != expected:
                verdict += f" (expected {expected}!)"
            med = statistics.median(result["times"])
            row = [name, "pkeyspec", mode, verdict, f"{result['states']:,}",
                   f"{result['transitions']:,}", f"{result['executions']:,}",
                   fmt_time(result["times"]), fmt_mem(rss, "RSS"), f"{result['states'] / med:,.0f}", ""]
            rows.append(row)
            if mode == "stateless" and variant == "locked" and (n, m) == (3, 3):
                brute = brute_force_traces(family_program(variant, n, m))
                same = result["executions"] == brute == ISSUE_TRACES_LOCKED_3X3
                notes.append(
                    f"locked 3x3 stateless: {result['executions']:,} executions; brute force over "
                    f"all 1,680 interleavings counts {brute:,} traces; the issue says "
                    f"{ISSUE_TRACES_LOCKED_3X3:,}: " + ("they match." if same else "THEY DIFFER."))
            if spin and mode == "stateful" and (variant, n, m) not in spin_done:
                say(f"(c) {name} spin")
                s = spin_case(variant, n, m, args.repeats, workdir)
                spin_done[(variant, n, m)] = s
                agree = s["verdict"] == result["verdict"]
                what = (f"violated, {s['errors']:,} errors" if s["errors"] else "never violated")
                smed = statistics.median(s["times"])
                rows.append([name, "spin", "POR" if s["por"] else "full",
                             f"{s['verdict']} ({what})" + ("" if agree else " DISAGREES"),
                             f"{s['states']:,}", f"{s['transitions']:,}", "-", fmt_time(s["times"]),
                             fmt_mem(s["memory"], "pan"),
                             f"{s['states'] / smed:,.0f}" if smed else "-", ""])
                if smed > 0:
                    row[10] = f"{med / smed:.2g}x"
                    ratios.append(f"{name}: pkeyspec {med:.4f} s / pan {smed:.4f} s CPU = "
                                  f"{med / smed:.2g}x; states {result['states']:,} vs "
                                  f"{s['states']:,}")
                else:
                    row[10] = "-"
                notes.append(f"{name}: Spin compile (spin -a + gcc -O2) took {s['compile']:.1f} s "
                             "wall, not included in its time.")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    headers = ["case", "tool", "mode", "verdict", "states", "transitions", "executions",
               "CPU time median (min-max)", "peak memory", "states/s", "vs spin"]
    print(table(rows, headers))
    print()
    print("pkeyspec rows: 'states' are distinct states visited (stateful) or search nodes "
          "(stateless); 'vs spin' = pkeyspec CPU time / pan CPU time, same size, same run.")
    print("Memory: 'heap' = tracemalloc peak of one exploration (catalogue races, in-process); "
          "'RSS' = peak resident set (VmHWM) of the Python process that ran the size; "
          "'pan' = pan's own 'total actual memory usage'.")
    if spin and spin_done:
        print("Spin rows: pan -c0 (count every assertion violation, do not stop), "
              f"{PAN_HASH} (8 MB hash table), compiled with -DSAFETY; 'POR' = Spin's partial "
              "order reduction on (the default; -DNOREDUCE gives the same counts here). "
              "pan's CPU time includes its start-up (about 8 ms here), which dominates "
              "the small sizes.")
    for note in notes:
        print("- " + note)
    for r in ratios:
        print("- " + r)
    print(f"Total wall time {elapsed():.0f} s.")
    bad = [r for r in rows if r is not None and ("!" in r[3] or "DISAGREES" in r[3]
                                                   or "incomplete" in r[3])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
