"""The race catalogue: each race one named object with a stated verdict.

Following the Linux memory model's litmus tests, a :class:`Race` has a name
in ``pattern+ops`` style, a question, an initial state (``setup``), two or
more threads written as lists of the model's atomic steps, an ``exists``
clause naming the bad outcome, the stated result (Never, Sometimes or
Always) and the fact IDs it demonstrates. The explorer
(:mod:`pkeyspec.explore`) computes the result; the judge
(``tests/test_races.py``, ``pkeyspec races check``) compares the two.

Atomicity follows Linux: a system call that takes the mmap lock is one
step; the RFC's lockless read of the allocation map is its own step; glibc's
``pkey_set`` is RDPKRU, then WRPKRU; a signal handler runs as one step of
the signalling "thread", between any two steps of its target; each memory
access is one step.
"""

from __future__ import annotations

import copy
import errno as _errno
from dataclasses import dataclass, field
from typing import Any, Callable

from ..explore import Observation, explore, explore_stateful
from ..system import System
from ..tasks import Thread

VERDICTS = ("Never", "Sometimes", "Always")


class World:
    """A model state plus the names a race gives to its threads and results."""

    def __init__(self, system: System, threads: dict[str, Thread], **values: Any) -> None:
        self.system = system
        self.t = threads
        self.v: dict[str, Any] = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["t"][name]
        except KeyError:
            raise AttributeError(name) from None

    def do(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn(*args)`` and record its result (or its errno name) as ``name``."""
        try:
            result = fn(*args)
        except OSError as e:
            result = _errno.errorcode.get(e.errno, str(e.errno))
        self.v[name] = result
        return result

    def fingerprint(self) -> tuple:
        return (self.system.state(), tuple(sorted((k, repr(x)) for k, x in self.v.items())))

    def __deepcopy__(self, memo: dict) -> World:
        """The system first (it registers its threads in ``memo``), then the names."""
        new = World.__new__(World)
        memo[id(self)] = new
        new.system = copy.deepcopy(self.system, memo)
        new.t = {name: copy.deepcopy(t, memo) for name, t in self.t.items()}
        new.v = copy.deepcopy(self.v, memo)
        return new


@dataclass(frozen=True)
class Step:
    """One atomic step of a thread: what it does, as the page shows it, and what it touches.

    ``reads`` and ``writes`` name the resources the step may touch: ``mm``
    (VMAs, page tables, memory), ``map`` (the allocation map), ``pkru``
    (the step's own thread's PKRU; made ``pkru:<thread>`` by the race) and
    any name a race invents for its own shared variables. Every step also
    reads ``life``, whether its process still runs; a step that can end the
    process (a faulting access, a signal) writes it. Two steps of
    different threads are independent when neither writes what the other
    touches; the explorer relies on this, and ``tests/test_races.py`` checks
    that independent steps really commute.
    """

    label: str
    action: Callable[[World], Any]
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()


def syscall(label: str, action: Callable[[World], Any], *, pkru: bool = False,
            extra: tuple[str, ...] = ()) -> Step:
    """A system call under the mmap write lock: conflicts with every other such call."""
    writes = {"mm", "map", *extra} | ({"pkru"} if pkru else set())
    return Step(label, action, frozenset(), frozenset(writes))


def access(label: str, action: Callable[[World], Any], *, write_mm: bool = True) -> Step:
    """A load, store or fetch: reads the caller's PKRU, may fill in a page (writes mm) or
    end the process with a fault (writes life)."""
    return Step(label, action, frozenset({"pkru", "mm"}),
                frozenset({"mm", "life"} if write_mm else {"life"}))


def register(label: str, action: Callable[[World], Any], *, write: bool) -> Step:
    """RDPKRU (``write=False``) or WRPKRU (``write=True``): only the thread's own PKRU."""
    return Step(label, action, frozenset({"pkru"}), frozenset({"pkru"} if write else ()))


def local(label: str, action: Callable[[World], Any], reads=(), writes=()) -> Step:
    """A step over the race's own named resources only (computation, shared variables)."""
    return Step(label, action, frozenset(reads), frozenset(writes))


@dataclass(frozen=True)
class Race:
    """A named race: question, setup, threads of steps, exists clause, stated result."""

    name: str
    question: str
    setup: Callable[[], World]
    threads: dict[str, tuple[Step, ...]]
    exists: Callable[[World], bool]
    exists_text: str
    result: str
    facts: tuple[str, ...]
    observe: tuple[str, ...]
    family: str = ""
    #: The name of the race this one is a variant of ("As above, but ...").
    variant_of: str | None = None
    #: What this variant changes, in one sentence.
    variant: str = ""
    #: Kernel versions etc., shown in the page (one short line).
    note: str = ""

    def __post_init__(self) -> None:
        if self.result not in VERDICTS:
            raise ValueError(f"{self.name}: result must be one of {VERDICTS}, not {self.result!r}")

    def program(self) -> RaceProgram:
        return RaceProgram(self)

    def explore(self, *, stateful: bool = False, **limits: Any) -> Observation:
        program = self.program()
        if stateful:
            return explore_stateful(program, self.name, **limits)
        return explore(program, self.name, **limits)


def _resources(step: Step, thread: str) -> tuple[frozenset[str], frozenset[str]]:
    def own(names: frozenset[str]) -> frozenset[str]:
        return frozenset(f"pkru:{thread}" if n == "pkru" else n for n in names)
    return own(step.reads) | {"life"}, own(step.writes)


class RaceProgram:
    """A race as the explorer sees it (:class:`pkeyspec.explore.Program`)."""

    def __init__(self, race: Race) -> None:
        self.race = race
        self.thread_names = tuple(race.threads)
        self.steps = [tuple(race.threads[n]) for n in self.thread_names]
        self.footprints = [[_resources(s, n) for s in steps]
                           for n, steps in zip(self.thread_names, self.steps)]
        self._dep: dict = {}

    def initial(self) -> World:
        return self.race.setup()

    def length(self, thread: int) -> int:
        return len(self.steps[thread])

    def run(self, state: World, thread: int, index: int) -> World:
        world = copy.deepcopy(state)
        self.steps[thread][index].action(world)
        return world

    def dependent(self, a: tuple[int, int], b: tuple[int, int]) -> bool:
        if a[0] == b[0]:
            return True
        key = (a, b)
        hit = self._dep.get(key)
        if hit is None:
            ra, wa = self.footprints[a[0]][a[1]]
            rb, wb = self.footprints[b[0]][b[1]]
            hit = bool(wa & (rb | wb) or wb & ra)
            self._dep[key] = self._dep[(b, a)] = hit
        return hit

    def fingerprint(self, state: World) -> tuple:
        return state.fingerprint()

    def outcome(self, state: World) -> tuple[bool, tuple]:
        shown = tuple((name, _show(state.v.get(name))) for name in self.race.observe)
        return bool(self.race.exists(state)), shown

    def label(self, thread: int, index: int) -> str:
        return f"{self.thread_names[thread]}: {self.steps[thread][index].label}"


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) and value > 15:     # keys and rights in decimal, the rest in hex
        return hex(value)
    return str(value) if isinstance(value, (int, str)) else repr(value)


CATALOGUE: dict[str, Race] = {}


def catalogue() -> dict[str, Race]:
    """Every race of the catalogue, by name (importing the family modules fills it)."""
    if not CATALOGUE:
        from . import lifetime, rfc, signals, exec_only, mm  # noqa: F401
    return CATALOGUE


def race(r: Race) -> Race:
    """Add ``r`` to the catalogue (names are unique)."""
    if r.name in CATALOGUE:
        raise ValueError(f"two races are named {r.name}")
    CATALOGUE[r.name] = r
    return r
