"""The ``pkeyspec`` command: check the race catalogue, explore your own races, decode registers.

::

    pkeyspec races list                      the catalogue: name, family, stated result, facts
    pkeyspec races check [NAME ...]          explore, compare with the stated result (the judge)
    pkeyspec races show NAME                 one race: threads, exists, verdicts, witnesses
    pkeyspec races explore FILE              the races a Python file defines, shown like `show`
    pkeyspec pkru decode VALUE [--svg]       the rights a PKRU value gives each key
    pkeyspec fault decode ERR [--si-code N]  the bits of a page-fault error code, in words

Exit status, as herd7's judge script has it, but simpler: 0 when every
computed result equals the stated one; 1 when one differs or an exploration
stopped before it was complete (a limit); 2 for bad input (an unknown race,
a bad number, a FILE that cannot be loaded or defines no race); 130 when
interrupted with Ctrl-C, after printing what was found so far.

Everything is also usable from Python: :func:`main` takes the argument list,
:func:`load_races` reads a race FILE and :func:`replay` runs one schedule.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import runpy
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from . import cabi
from .explore import InconsistentOutcome, LimitReached, Observation, explore, explore_stateful
from .hardware import (
    INIT_PKRU_VALUE, PF_BIT_NAMES, PKRU_HW_INIT, X86_PF_INSTR, X86_PF_PK, X86_PF_PROT,
    X86_PF_RSVD, X86_PF_USER, X86_PF_WRITE, decode_pf_error, decode_pkru,
)
from .races import Race, World, _show, catalogue
from .uapi import SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR, SI_CODE_NAMES, SI_KERNEL, SIGSEGV

#: Exit statuses.
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130

#: Width the thread columns of ``show`` are fitted into (fixed, so output does not
#: depend on the terminal).
WIDTH = 100

#: Seconds between two progress lines on stderr.
PROGRESS_INTERVAL = 0.5


class CliError(Exception):
    """Bad input: printed as one line on stderr, exit status 2."""


def _text_arg(what: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} is a str, not {type(value).__name__}")
    return value


# --- races: finding and loading -------------------------------------------------


def find_race(name: str) -> Race:
    """The catalogue race called ``name``; a :class:`CliError` naming close matches otherwise."""
    _text_arg("name", name)
    races = catalogue()
    if name in races:
        return races[name]
    raise CliError(_unknown("race", name, list(races), "see `pkeyspec races list`"))


def _unknown(what: str, name: str, names: Sequence[str], hint: str) -> str:
    folded = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if name.lower() in folded and folded[name.lower()] not in close:
        close.insert(0, folded[name.lower()])
    msg = f"no {what} named {name!r}"
    if close:
        return f"{msg}; did you mean {' or '.join(close)}?"
    return f"{msg}; {hint}"


def load_races(path: str | os.PathLike) -> list[Race]:
    """The :class:`~pkeyspec.races.Race` objects a Python file defines.

    A list named ``RACES`` wins; otherwise every module-level variable
    holding a Race, in the order the file defines them. The file runs with
    its own directory first on ``sys.path`` (so it can import files next to
    it) and with ``__name__`` not ``"__main__"``. Any failure is a
    :class:`CliError` of one line.
    """
    path = Path(path)
    if not path.exists():
        raise CliError(f"no such file: {path}")
    if not path.is_file():
        raise CliError(f"not a file: {path}")
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(path), run_name="pkeyspec_race_file")
    except SyntaxError as e:
        raise CliError(f"{path}:{e.lineno}: SyntaxError: {e.msg}") from None
    except (Exception, SystemExit) as e:  # the user's code: report it in one line
        raise CliError(f"{path}{_where(e, path)}: {type(e).__name__}: {e}") from None
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    if "RACES" in namespace:
        found = namespace["RACES"]
        if not isinstance(found, (list, tuple)) or not all(isinstance(r, Race) for r in found):
            raise CliError(f"{path}: RACES must be a list of Race objects")
    else:
        found = [v for k, v in namespace.items() if isinstance(v, Race) and not k.startswith("__")]
    races: list[Race] = []
    for r in found:
        if all(r is not seen for seen in races):
            races.append(r)
    if not races:
        raise CliError(f"{path} defines no Race (assign Race objects to module-level "
                       "variables, or list them in RACES)")
    names = [r.name for r in races]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CliError(f"{path}: two races are named {twice[0]}")
    return races


def _where(error: BaseException, path: Path) -> str:
    """':LINE' of the innermost frame of ``error`` that ran in the file ``path``."""
    line = None
    tb = error.__traceback__
    target = str(path.resolve())
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line else ""


# --- exploring ------------------------------------------------------------------


class RaceError(Exception):
    """A race's setup, step or exists clause raised: the message says which and what."""


class _Guarded:
    """A race's program whose setup, steps and exists clause report what raised, and where."""

    def __init__(self, race: Race) -> None:
        inner = race.program()
        self.race, self.inner = race, inner
        self.thread_names = inner.thread_names
        self.length, self.dependent = inner.length, inner.dependent
        self.fingerprint, self.label = inner.fingerprint, inner.label

    def _fail(self, what: str, e: Exception) -> RaceError:
        return RaceError(f"race {self.race.name}: {what} raised {type(e).__name__}: {e}")

    def initial(self) -> World:
        try:
            return self.inner.initial()
        except Exception as e:
            raise self._fail("setup", e) from e

    def run(self, state: World, thread: int, index: int) -> World:
        try:
            return self.inner.run(state, thread, index)
        except Exception as e:
            raise self._fail(f"step {self.inner.label(thread, index)!r}", e) from e

    def outcome(self, state: World) -> tuple[bool, tuple]:
        try:
            return self.inner.outcome(state)
        except Exception as e:
            raise self._fail("the exists clause or an observed value", e) from e


class Progress:
    """The explorer's progress callback: a status line on ``stream`` every ~0.5 s.

    It also enforces the limit the chosen explorer does not take itself
    (``--max-states`` when stateless, ``--max-executions`` when stateful),
    at the explorer's callback points: every 1,000 executions (stateless) or
    10,000 states (stateful).
    """

    def __init__(self, name: str, stream: TextIO | None, *, max_states: int | None = None,
                 max_executions: int | None = None, interval: float = PROGRESS_INTERVAL) -> None:
        self.name, self.stream, self.interval = name, stream, interval
        self.max_states, self.max_executions = max_states, max_executions
        self.last = 0.0
        self.shown = False
        #: Which limit this callback stopped the exploration at, if it did.
        self.limited: str | None = None
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def __call__(self, states: int, executions: int, elapsed: float) -> None:
        if self.max_states is not None and states > self.max_states:
            self.limited = "--max-states reached"
        elif self.max_executions is not None and executions >= self.max_executions:
            self.limited = "--max-executions reached"
        if self.limited:
            raise LimitReached
        if self.stream is None or elapsed < self.interval or elapsed - self.last < self.interval:
            return
        self.last = elapsed
        rate = states / elapsed if elapsed else 0.0
        text = (f"{self.name}: {states:,} states, {executions:,} executions, "
                f"{rate:,.0f} states/s, {elapsed:.1f} s (Ctrl-C stops and shows what was found)")
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown and self.tty and self.stream is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Result:
    """One exploration: the observation, and why it stopped early if it did."""

    def __init__(self, race: Race, obs: Observation, stopped: str | None, stateful: bool) -> None:
        self.race, self.obs, self.stopped, self.stateful = race, obs, stopped, stateful

    @property
    def agrees(self) -> bool:
        return self.stopped is None and self.obs.verdict == self.race.result

    def status(self) -> str:
        if self.stopped is not None:
            return f"INCOMPLETE ({self.stopped}; so far {self.obs.verdict})"
        if self.obs.verdict != self.race.result:
            return f"MISMATCH (stated {self.race.result})"
        return "ok"


def run_race(race: Race, *, stateful: bool = False, max_states: int | None = None,
             max_executions: int | None = None, stream: TextIO | None = None) -> Result:
    """Explore ``race``, with progress on ``stream``; a :class:`RaceError` if the race raises."""
    program = _Guarded(race)
    progress = Progress(race.name, stream)
    limits = {"max_states": max_states, "max_executions": max_executions}
    try:
        if stateful:
            obs = explore_stateful(program, race.name, progress=progress, **limits)
        else:
            obs = explore(program, race.name, progress=progress, **limits)
    except InconsistentOutcome as e:
        raise RaceError(f"race {race.name}: {e}") from e
    finally:
        progress.done()
    stopped = None
    if not obs.complete:
        if progress.limited:
            stopped = progress.limited
        elif max_states is not None and obs.states > max_states:
            stopped = "--max-states reached"
        elif max_executions is not None and obs.executions >= max_executions:
            stopped = "--max-executions reached"
        else:
            stopped = "interrupted"
    return Result(race, obs, stopped, stateful)


# --- replaying a schedule -----------------------------------------------------------


def parse_schedule(race: Race, schedule: str | Iterable[Any]) -> list[tuple[int, int]]:
    """A schedule as (thread, step) pairs.

    ``schedule`` is a string of thread names separated by spaces or commas
    (``"A B B A"``: each name runs that thread's next step), a sequence of
    names, or a sequence of (thread index, step index) pairs as
    :attr:`pkeyspec.explore.Observation.finals` holds them.
    """
    names = list(race.threads)
    items = re.split(r"[\s,]+", schedule.strip()) if isinstance(schedule, str) else list(schedule)
    items = [x for x in items if x != ""]
    pcs = [0] * len(names)
    pairs = []
    for n, item in enumerate(items, 1):
        if isinstance(item, tuple):
            t, i = item
            if not (0 <= t < len(names)) or i != pcs[t]:
                raise CliError(f"schedule item {n}: {item} is not thread {t}'s next step")
        else:
            if item not in names:
                raise CliError(_unknown("thread", str(item), names,
                                        f"{race.name} has threads {', '.join(names)}"))
            t = names.index(item)
        if pcs[t] >= len(race.threads[names[t]]):
            raise CliError(f"schedule item {n}: thread {names[t]} has only "
                           f"{len(race.threads[names[t]])} steps")
        pairs.append((t, pcs[t]))
        pcs[t] += 1
    return pairs


def replay(race: Race, schedule: str | Iterable[Any]) -> World:
    """Run ``race`` along one schedule and return the final :class:`~pkeyspec.races.World`.

    >>> from pkeyspec.races import catalogue
    >>> w = replay(catalogue()["MP+writeonce+readonce"], "R W")
    >>> hex(w.v["r"]), hex(w.v["map"])
    ('0xff', '0x17f')
    """
    program = race.program()
    state = program.initial()
    for t, i in parse_schedule(race, schedule):
        state = program.run(state, t, i)
    return state


def schedule_text(race: Race, schedule: Iterable[tuple[int, int]]) -> str:
    """``((0, 0), (1, 0), (0, 1))`` as ``"A B A"``."""
    names = list(race.threads)
    return " ".join(names[t] for t, _ in schedule)


# --- formatting -----------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


def _final_text(final: tuple) -> str:
    return "; ".join(f"{k}={v}" for k, v in final) or "(no observed values)"


def threads_side_by_side(race: Race, width: int = WIDTH) -> str:
    """The threads as columns of step labels, each column wrapped to fit ``width``."""
    names = list(race.threads)
    steps = [[s.label for s in race.threads[n]] for n in names]
    sep = " | "
    # Natural widths; while too wide for ``width``, narrow the widest column.
    widths = [max([len(n)] + [len(label) for label in col]) for n, col in zip(names, steps)]
    room = width - len(sep) * (len(names) - 1)
    while sum(widths) > room and max(widths) > 16:
        widths[widths.index(max(widths))] -= 1
    lines = [sep.join(n.ljust(w) for n, w in zip(names, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    for i in range(max(len(col) for col in steps)):
        cells = [textwrap.wrap(col[i], w, subsequent_indent="  ") if i < len(col) else []
                 for col, w in zip(steps, widths)]
        for j in range(max(1, max(len(c) for c in cells))):
            lines.append(sep.join((c[j] if j < len(c) else "").ljust(w)
                                  for c, w in zip(cells, widths)).rstrip())
    return "\n".join(lines)


def format_race(result: Result, *, timing: bool = True) -> str:
    """A race as ``pkeyspec races show`` prints it: everything needed to judge the verdict."""
    race, obs = result.race, result.obs
    program = race.program()
    out = [f"{race.name}" + (f"  (family {race.family})" if race.family else "")]
    if race.variant_of:
        out.append(textwrap.fill(f"Variant of {race.variant_of}: {race.variant}", WIDTH))
    out.append(textwrap.fill(race.question, WIDTH))
    if race.note:
        out.append(textwrap.fill(f"Note: {race.note}", WIDTH))
    if race.facts:
        out.append("Facts: " + ", ".join(race.facts))
    out.append("")
    out.append(threads_side_by_side(race))
    out.append("")
    out.append(f"exists: {race.exists_text}")
    out.append("")
    mode = "stateful, each state once" if result.stateful else "stateless, one execution per trace"
    out.append(f"Stated result:   {race.result}")
    out.append(f"Computed result: {obs.verdict}  {result.status()}")
    out.append(obs.line())
    explored = (f"Explored: {obs.executions:,} executions, {obs.states:,} states, "
                f"{obs.transitions:,} transitions ({mode})")
    if timing:
        explored += f" in {obs.seconds:.3f} s"
    out.append(explored)
    finals = sorted(obs.finals.items(), key=lambda kv: (not kv[1][0], kv[0]))
    out.append("")
    out.append(f"Final states ({len(finals)}; * = exists holds):")
    for final, (ok, _) in finals:
        out.append(f"  {'*' if ok else ' '} {_final_text(final)}")
    if not finals:
        out.append("    (none yet)")
    for final, (ok, schedule) in finals:
        out.append("")
        out.append(f"Witness ({'exists holds' if ok else 'exists fails'}): {_final_text(final)}")
        out.append(f"  replay: {schedule_text(race, schedule)}")
        for n, (t, i) in enumerate(schedule, 1):
            out.append(f"  {n:>3}. {program.label(t, i)}")
    return "\n".join(out)


def format_replay(race: Race, schedule: str | Iterable[Any]) -> str:
    """Run one schedule step by step: each step with the values it set or changed."""
    pairs = parse_schedule(race, schedule)
    program = _Guarded(race)
    state = program.initial()
    out = [f"Replay of {race.name}: {schedule_text(race, pairs)}"]
    labels = [program.label(t, i) for t, i in pairs]
    width = min(60, max([len(label) for label in labels] + [0]))
    for n, ((t, i), label) in enumerate(zip(pairs, labels), 1):
        before = {k: _show(v) for k, v in state.v.items()}
        state = program.run(state, t, i)
        changed = [f"{k}={_show(v)}" for k, v in state.v.items() if before.get(k) != _show(v)]
        out.append(f"  {n:>3}. {label.ljust(width)}  {' '.join(changed)}".rstrip())
    missing = [name for t, name in enumerate(race.threads)
               if sum(1 for u, _ in pairs if u == t) < len(race.threads[name])]
    if missing:
        out.append(f"(not finished: {', '.join(missing)}; the exists clause is judged on a final state)")
        return "\n".join(out)
    ok, final = program.outcome(state)
    out.append(f"Final state: {_final_text(final)}")
    out.append(f"exists ({race.exists_text}): {'yes' if ok else 'no'}")
    return "\n".join(out)


# --- decoding ---------------------------------------------------------------------------


def parse_int(text: str, what: str, *, bits: int | None = None, signed: bool = False) -> int:
    """``0x25``, ``37``, ``0b100101``, ``0o45``: an integer, or a :class:`CliError`.

    With ``bits`` (at least 1), the integer must fit in that many bits, as a
    two's complement number when ``signed``; ``bits`` below 1 is a ValueError.
    """
    _text_arg("text", text), _text_arg("what", what)
    if bits is not None:
        bits = cabi.index(bits)
        if bits < 1:
            raise ValueError(f"bits is at least 1, not {bits}")
    try:
        value = int(text.strip().replace("_", ""), 0)
    except ValueError:
        raise CliError(f"{what} must be an integer (decimal, or hex with 0x), not {text!r:.60}") from None
    if bits is not None:
        magnitude = (-value - 1 if value < 0 else value).bit_length()
        if (value < 0 and not signed) or magnitude > bits - signed:
            if bits > 64:
                bounds = f"-2**{bits - 1} and 2**{bits - 1} - 1" if signed else f"0 and 2**{bits} - 1"
            else:
                low = -(1 << (bits - 1)) if signed else 0
                high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
                bounds = f"{low:#x} and {high:#x}"
            raise CliError(f"{what} must be between {bounds}, not {text!r:.60}")
    return value


def format_pkru(pkru: int) -> str:
    """The per-key table of ``pkeyspec pkru decode`` (of the low 32 bits of ``pkru``)."""
    pkru = cabi.index(pkru) & 0xFFFFFFFF
    known = {INIT_PKRU_VALUE: "Linux's default init_pkru: only key 0 open",
             PKRU_HW_INIT: "the hardware init value: every key open"}
    head = f"PKRU {pkru:#010x}" + (f" ({known[pkru]})" if pkru in known else "")
    rows = [(r.pkey, "AD" if r.ad else "-", "WD" if r.wd else "-",
             "yes" if r.read else "no", "yes" if r.write else "no") for r in decode_pkru(pkru)]
    readable = [str(r.pkey) for r in decode_pkru(pkru) if r.read]
    writable = [str(r.pkey) for r in decode_pkru(pkru) if r.write]
    return "\n".join([head, _table(["key", "AD", "WD", "read", "write"], rows, right=(0,)),
                      f"readable: {' '.join(readable) or 'none'}; writable: {' '.join(writable) or 'none'}"])


_PF_MEANING = {
    X86_PF_PROT: ("the page was present: a protection violation", "the page was not present"),
    X86_PF_WRITE: ("a write", "a read (or a fetch)"),
    X86_PF_USER: ("from user mode", "from kernel mode"),
    X86_PF_RSVD: ("a reserved bit set in a paging entry", ""),
    X86_PF_INSTR: ("an instruction fetch", "a data access"),
    X86_PF_PK: ("the page's protection key forbade the access", "no protection-key violation"),
}


def expected_si_code(err: int) -> int | None:
    """The SIGSEGV si_code Linux sends a user-mode fault with this error code; None if it depends.

    PK set: SEGV_PKUERR. Present page without PK: SEGV_ACCERR. A page that
    is not present is filled in, or is SEGV_MAPERR, SEGV_ACCERR or
    SEGV_PKUERR depending on the mapping (``access.do_user_addr_fault``).
    """
    err = cabi.ulong(err)
    if err & X86_PF_PK:
        return SEGV_PKUERR
    if err & X86_PF_PROT:
        return SEGV_ACCERR
    return None


def explain_fault(err: int, si_code: int | None = None) -> str:
    """What a page-fault error code (and si_code) means, in one line.

    >>> explain_fault(0x25)
    'a read of a present page blocked by its protection key'
    >>> explain_fault(0x4, SEGV_PKUERR)
    "a read of a page not yet present, refused by its mapping's key (Linux's software check)"
    """
    err = cabi.ulong(err)
    si_code = None if si_code is None else cabi.int32(si_code)
    if err & X86_PF_INSTR:
        access = "an instruction fetch from"
    else:
        access = "a write to" if err & X86_PF_WRITE else "a read of"
    if not err & X86_PF_USER:
        access = "a kernel-mode " + access.split(" ", 1)[1]
    if err & X86_PF_PK and not err & X86_PF_PROT:
        return "not a combination the CPU reports: PK is set only for a present page"
    if err & X86_PF_PK and err & X86_PF_INSTR:
        return "not a combination the CPU reports: keys never block an instruction fetch"
    if err & X86_PF_RSVD:
        return f"{access} that met a reserved bit set in a page-table entry (a broken page table)"
    if err & X86_PF_PK:
        also = " (the page itself may be read-only too)" if err & X86_PF_WRITE else ""
        return f"{access} a present page blocked by its protection key{also}"
    if err & X86_PF_PROT:
        what = {X86_PF_WRITE: " (e.g. a read-only page)", X86_PF_INSTR: " (e.g. a no-exec page)"}
        hint = next((h for bit, h in what.items() if err & bit), "")
        return f"{access} a present page that its page protections forbid{hint}"
    if si_code == SEGV_MAPERR:
        return f"{access} an address with no mapping"
    if si_code == SEGV_ACCERR:
        return f"{access} a page not yet present whose mapping forbids it"
    if si_code == SEGV_PKUERR:
        return f"{access} a page not yet present, refused by its mapping's key (Linux's software check)"
    return (f"{access} a page that is not present: Linux fills it in if the mapping allows, "
            "else SIGSEGV (SEGV_MAPERR, SEGV_ACCERR or SEGV_PKUERR)")


def format_fault(err: int, si_code: int | None = None) -> str:
    """The bit table, the si_code name and the one-line meaning of ``pkeyspec fault decode``."""
    err = cabi.ulong(err)
    si_code = None if si_code is None else cabi.int32(si_code)
    rows = []
    for bit, name in PF_BIT_NAMES:
        on = bool(err & bit)
        rows.append((bit.bit_length() - 1, name, int(on), _PF_MEANING[bit][0 if on else 1]))
    out = [f"error code {err:#x} = {decode_pf_error(err)}",
           _table(["bit", "name", "set", "meaning"], rows, right=(0,))]
    unknown = err & ~sum(bit for bit, _ in PF_BIT_NAMES)
    if unknown:
        out.append(f"other bits {unknown:#x}: not decoded here (not about protection keys)")
    names = SI_CODE_NAMES[SIGSEGV]
    if si_code is not None:
        out.append(f"si_code {si_code} = {names.get(si_code, 'not a SIGSEGV code')}")
    if si_code == SI_KERNEL:
        out.append("SI_KERNEL comes with a #GP (a non-canonical address, or RDPKRU/WRPKRU with "
                   "ECX or EDX not 0), not a page fault: the error code does not apply")
    else:
        out.append(f"meaning: {explain_fault(err, si_code)}")
        expected = expected_si_code(err)
        if si_code is not None and expected is not None and si_code != expected and err & X86_PF_USER:
            out.append(f"note: Linux sends {names[expected]} for this error code, not "
                       f"{names.get(si_code, si_code)}")
    return "\n".join(out)


# --- commands ---------------------------------------------------------------------------


def _explore_many(races: Sequence[Race], args: argparse.Namespace, err: TextIO) -> list[Result]:
    results = []
    for race in races:
        result = run_race(race, stateful=args.stateful, max_states=args.max_states,
                          max_executions=args.max_executions, stream=err)
        results.append(result)
        if result.stopped == "interrupted":
            break
    return results


def _status(results: Sequence[Result], wanted: int) -> int:
    if any(r.stopped == "interrupted" for r in results) or len(results) < wanted:
        return INTERRUPTED
    return OK if all(r.agrees for r in results) else FAILED


def cmd_races_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    races = catalogue().values()
    rows = [(r.name, r.family or "-", r.result, ", ".join(r.facts)) for r in races]
    print(_table(["name", "family", "result", "facts"], rows), file=out)
    print(f"{len(rows)} races", file=out)
    return OK


def cmd_races_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    races = [find_race(n) for n in args.names] if args.names else list(catalogue().values())
    width = max((len(f"Observation {r.name} Sometimes 00 00") for r in races), default=0)
    results = []
    for race in races:
        try:
            result = run_race(race, stateful=args.stateful, max_states=args.max_states,
                              max_executions=args.max_executions, stream=err)
        except RaceError as e:
            print(f"{'Observation ' + race.name:<{width}}  ERROR ({e})", file=out)
            results.append(None)
            continue
        results.append(result)
        print(f"{result.obs.line():<{width}}  {result.status()}", file=out, flush=True)
        if result.stopped == "interrupted":
            break
    done = [r for r in results if r is not None]
    ok = sum(1 for r in done if r.agrees)
    mismatch = sum(1 for r in done if r.stopped is None and not r.agrees)
    incomplete = sum(1 for r in done if r.stopped is not None)
    errors = len(results) - len(done)
    summary = f"{len(results)} races: {ok} ok, {mismatch} mismatch, {incomplete} incomplete"
    print(summary + (f", {errors} error" if errors else ""), file=out)
    if any(r.stopped == "interrupted" for r in done):
        return INTERRUPTED
    return OK if ok == len(races) else FAILED


def _show_results(races: Sequence[Race], args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.replay is not None:
        if len(races) != 1:
            raise CliError(f"--replay needs one race; choose one with --race "
                           f"({', '.join(r.name for r in races)})")
        print(format_replay(races[0], args.replay), file=out)
        return OK
    results = _explore_many(races, args, err)
    for n, result in enumerate(results):
        if n:
            print("\n" + "=" * 40 + "\n", file=out)
        print(format_race(result), file=out)
    return _status(results, len(races))


def cmd_races_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _show_results([find_race(args.name)], args, out, err)


def cmd_races_explore(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    races = load_races(args.file)
    if args.race:
        by_name = {r.name: r for r in races}
        races = []
        for name in args.race:
            if name not in by_name:
                raise CliError(_unknown("race", name, list(by_name),
                                        f"{args.file} defines {', '.join(by_name)}"))
            races.append(by_name[name])
    return _show_results(races, args, out, err)


def cmd_pkru_decode(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    value = parse_int(args.value, "PKRU value", bits=32)
    if args.svg:
        from .pictures import pkru_svg
        print(pkru_svg(value).markup, file=out)
    else:
        print(format_pkru(value), file=out)
    return OK


def cmd_fault_decode(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    code = parse_int(args.err, "error code", bits=64)
    si_code = None
    if args.si_code is not None:
        si_code = parse_int(args.si_code, "si_code", bits=32, signed=True)
        names = SI_CODE_NAMES[SIGSEGV]
        if si_code not in names:
            known = ", ".join(f"{v} {k}" for k, v in sorted(names.items()))
            raise CliError(f"si_code {si_code} is not a SIGSEGV code of the model ({known})")
    print(format_fault(code, si_code), file=out)
    return OK


def _count(text: str) -> int:
    value = parse_int(text, "a limit")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _count_type(text: str) -> int:
    try:
        return _count(text)
    except CliError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pkeyspec",
        description="An executable specification of Linux memory protection keys (x86).",
        epilog="Exit status: 0 ok; 1 a verdict differs from the stated result or an exploration "
               "is incomplete; 2 bad input; 130 interrupted.")
    top = parser.add_subparsers(dest="group", required=True, metavar="{races,pkru,fault}")

    races = top.add_parser("races", help="the race catalogue and your own races",
                           description="List, check, show and explore races.")
    sub = races.add_subparsers(dest="command", required=True, metavar="{list,check,show,explore}")

    def limits(p: argparse.ArgumentParser) -> None:
        p.add_argument("--stateful", action="store_true",
                       help="search model states, each once, instead of one execution per trace")
        p.add_argument("--max-states", type=_count_type, metavar="N",
                       help="stop after N states (stateless: checked every 1,000 executions)")
        p.add_argument("--max-executions", type=_count_type, metavar="N",
                       help="stop after N executions (stateful: checked every 10,000 states)")

    p = sub.add_parser("list", help="name, family, stated result and facts of every race")
    p.set_defaults(func=cmd_races_list)

    p = sub.add_parser("check", help="explore races and compare with their stated results",
                       description="Explore each race (all by default) and print its Observation "
                                   "line with ok or MISMATCH. Exit 1 on any mismatch or "
                                   "incomplete exploration.")
    p.add_argument("names", nargs="*", metavar="NAME", help="races to check (default: all)")
    limits(p)
    p.set_defaults(func=cmd_races_check)

    replay_help = ("run one schedule step by step instead, e.g. 'A B B A' "
                   "(thread names; each runs that thread's next step)")
    p = sub.add_parser("show", help="one race: threads, exists, verdicts, final states, witnesses")
    p.add_argument("name", metavar="NAME")
    limits(p)
    p.add_argument("--replay", metavar="SCHEDULE", help=replay_help)
    p.set_defaults(func=cmd_races_show)

    p = sub.add_parser("explore", help="explore the races a Python FILE defines",
                       description="FILE defines Race objects as module-level variables, or a "
                                   "list named RACES. Each is explored and shown like `show`.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--race", action="append", metavar="NAME",
                   help="only this race of FILE (repeatable)")
    limits(p)
    p.add_argument("--replay", metavar="SCHEDULE", help=replay_help)
    p.set_defaults(func=cmd_races_explore)

    pkru = top.add_parser("pkru", help="decode a PKRU value")
    p = pkru.add_subparsers(dest="command", required=True, metavar="{decode}").add_parser(
        "decode", help="per-key rights (AD, WD, read, write) of a PKRU value")
    p.add_argument("value", metavar="VALUE", help="the PKRU value, decimal or hex (0x...)")
    p.add_argument("--svg", action="store_true",
                   help="print the register as an SVG picture (as the site draws it) instead")
    p.set_defaults(func=cmd_pkru_decode)

    fault = top.add_parser("fault", help="decode a page-fault error code")
    p = fault.add_subparsers(dest="command", required=True, metavar="{decode}").add_parser(
        "decode", help="the bits of a page-fault error code and what they mean together")
    p.add_argument("err", metavar="ERR", help="the error code, decimal or hex (0x...)")
    p.add_argument("--si-code", metavar="N", help="the SIGSEGV si_code that came with it")
    p.set_defaults(func=cmd_fault_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    out, err = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else USAGE
    try:
        return args.func(args, out, err)
    except CliError as e:
        print(f"pkeyspec: error: {e}", file=err)
        return USAGE
    except RaceError as e:
        print(f"pkeyspec: error: {e}", file=err)
        return USAGE
    except KeyboardInterrupt:
        print("pkeyspec: interrupted", file=err)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`pkeyspec races list | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 128 + 13  # as if killed by SIGPIPE
