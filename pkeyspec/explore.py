"""The interleaving explorer: every execution of a race, each trace once, and a verdict.

A race (:class:`pkeyspec.races.Race`) has threads made of atomic steps. An
execution is an interleaving of all steps that keeps each thread's order.
Two executions that differ only in the order of adjacent independent steps
(steps whose resources do not conflict) end in the same state; they are the
same Mazurkiewicz trace. The explorer visits each trace exactly once.

Stateless mode (:func:`explore`) enumerates interleavings depth first and
keeps only those in lexicographic normal form: an interleaving is pruned as
soon as it contains a factor ``b u a`` where step ``a`` comes before step
``b`` in the global order of steps and ``a`` is independent of ``b`` and of
every step of ``u`` (Anisimov and Knuth, 1979). Each trace has exactly one
such normal form, and every prefix of a normal form is free of the factor,
so the search is complete and runs one execution per trace: no redundant
executions, and no state is ever stored.

Stateful mode (:func:`explore_stateful`) searches the graph of model states
instead, storing each state's fingerprint once; it wins when many traces
reach the same states.

Both report an :class:`Observation` in herd7's words: ``Observation <name>
<Never|Sometimes|Always> <pos> <neg>``, where pos and neg count the distinct
final states that do and do not satisfy the race's ``exists`` clause, with
one witness schedule per final state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from . import cabi


class Program(Protocol):
    """What the explorer needs: threads of steps over states it can copy and compare."""

    thread_names: tuple[str, ...]

    def initial(self) -> Any: ...
    def length(self, thread: int) -> int: ...
    def run(self, state: Any, thread: int, index: int) -> Any: ...
    def dependent(self, a: tuple[int, int], b: tuple[int, int]) -> bool: ...
    def fingerprint(self, state: Any) -> Any: ...
    def outcome(self, state: Any) -> tuple[bool, tuple]: ...
    def label(self, thread: int, index: int) -> str: ...


@dataclass
class Observation:
    """The result of exploring one program."""

    name: str
    verdict: str
    positive: int
    negative: int
    executions: int
    states: int
    transitions: int
    seconds: float
    #: final state (as a tuple of (name, value)) -> (satisfies exists?, witness schedule)
    finals: dict[tuple, tuple[bool, tuple[tuple[int, int], ...]]] = field(default_factory=dict)
    complete: bool = True

    def line(self) -> str:
        return f"Observation {self.name} {self.verdict} {self.positive} {self.negative}"


#: Seconds between two calls of a progress callback, at the most.
PROGRESS_EVERY = 0.25


class LimitReached(Exception):
    """The exploration hit its state or execution limit before it was complete."""


class InconsistentOutcome(Exception):
    """Two executions show the same final values but disagree on ``exists``.

    A race must observe every value its ``exists`` clause depends on.
    """


def _record(finals: dict, final: tuple, ok: bool, schedule: tuple) -> None:
    seen = finals.get(final)
    if seen is None:
        finals[final] = (ok, schedule)
    elif seen[0] != ok:
        raise InconsistentOutcome(f"final state {final} is both bad and good: "
                                  "observe the values exists depends on")


def verdict(positive: int, negative: int) -> str:
    """"Never", "Always" or "Sometimes": how many executions had the outcome, how many not."""
    positive, negative = cabi.index(positive), cabi.index(negative)
    if positive == 0:
        return "Never"
    return "Always" if negative == 0 else "Sometimes"


def _observation(name: str, finals: dict, executions: int, states: int, transitions: int,
                 started: float, complete: bool) -> Observation:
    pos = sum(1 for ok, _ in finals.values() if ok)
    neg = len(finals) - pos
    return Observation(name, verdict(pos, neg), pos, neg, executions, states, transitions,
                       time.perf_counter() - started, finals, complete)


def explore(program: Program, name: str = "", *, max_executions: int | None = None,
            max_states: int | None = None,
            progress: Callable[[int, int, float], None] | None = None) -> Observation:
    """Stateless exploration, one execution per Mazurkiewicz trace (see the module text)."""
    started = time.perf_counter()
    n = len(program.thread_names)
    lengths = [program.length(t) for t in range(n)]
    finals: dict = {}
    counters = [0, 0, 0]            # executions, states, transitions
    schedule: list[tuple[int, int]] = []
    pcs = [0] * n

    def forbidden(a: tuple[int, int]) -> bool:
        for b in reversed(schedule):
            if program.dependent(a, b):
                return False
            if b > a:
                return True
        return False

    last = [started]

    def tick() -> None:
        # The clock is read every 64 states; progress is reported at most every quarter second.
        if progress and counters[1] & 63 == 0:
            now = time.perf_counter()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                progress(counters[1], counters[0], now - started)

    def dfs(state) -> None:
        counters[1] += 1
        if max_states is not None and counters[1] > max_states:
            raise LimitReached
        tick()
        done = True
        for t in range(n):
            if pcs[t] == lengths[t]:
                continue
            done = False
            event = (t, pcs[t])
            if forbidden(event):
                continue
            if max_executions is not None and counters[0] >= max_executions:
                raise LimitReached          # another execution would be needed
            nxt = program.run(state, t, pcs[t])
            counters[2] += 1
            schedule.append(event)
            pcs[t] += 1
            dfs(nxt)
            pcs[t] -= 1
            schedule.pop()
        if done:
            counters[0] += 1
            ok, final = program.outcome(state)
            _record(finals, final, ok, tuple(schedule))

    complete = True
    try:
        dfs(program.initial())
    except (LimitReached, KeyboardInterrupt):
        complete = False
    return _observation(name, finals, counters[0], counters[1], counters[2], started, complete)


def explore_stateful(program: Program, name: str = "", *, max_states: int | None = None,
                     max_executions: int | None = None,
                     progress: Callable[[int, int, float], None] | None = None) -> Observation:
    """Stateful exploration: depth first over model states, each state expanded once.

    A successor is fingerprinted when it is generated and pushed only if it
    is new. Schedules are not copied along: each stored state keeps its
    parent and the step that led to it, and a witness is rebuilt by walking
    back from a final state.
    """
    started = time.perf_counter()
    n = len(program.thread_names)
    lengths = tuple(program.length(t) for t in range(n))
    run, fingerprint = program.run, program.fingerprint
    finals: dict = {}
    initial = program.initial()
    start_pcs = (0,) * n
    seen: set = {(start_pcs, fingerprint(initial))}
    parents: list[tuple[int, tuple[int, int] | None]] = [(-1, None)]
    transitions = 0
    executions = 0
    stack = [(initial, start_pcs, 0)]
    last = started
    expanded = 0
    complete = True

    def schedule(node: int) -> tuple[tuple[int, int], ...]:
        steps = []
        while node > 0:
            node, step = parents[node]
            steps.append(step)
        return tuple(reversed(steps))

    try:
        while stack:
            state, pcs, node = stack.pop()
            moved = False
            for t in range(n):
                pc = pcs[t]
                if pc == lengths[t]:
                    continue
                moved = True
                transitions += 1
                nxt = run(state, t, pc)
                npcs = pcs[:t] + (pc + 1,) + pcs[t + 1:]
                key = (npcs, fingerprint(nxt))
                if key in seen:
                    continue
                seen.add(key)
                if max_states is not None and len(seen) > max_states:
                    raise LimitReached
                parents.append((node, (t, pc)))
                stack.append((nxt, npcs, len(parents) - 1))
            if not moved:
                if max_executions is not None and executions >= max_executions:
                    raise LimitReached
                executions += 1
                ok, final = program.outcome(state)
                _record(finals, final, ok, schedule(node))
            expanded += 1
            if progress and expanded & 63 == 0:
                now = time.perf_counter()
                if now - last >= PROGRESS_EVERY:
                    last = now
                    progress(len(seen), executions, now - started)
    except (LimitReached, KeyboardInterrupt):
        complete = False
    return _observation(name, finals, executions, len(seen), transitions, started, complete)


def _all_bad(program: Program, state: Any, pcs: list[int], lengths: list[int]) -> bool:
    """Does every completion from ``state`` (threads at ``pcs``) satisfy ``exists``?"""
    moved = False
    for t in range(len(pcs)):
        if pcs[t] < lengths[t]:
            moved = True
            nxt = program.run(state, t, pcs[t])
            pcs[t] += 1
            ok = _all_bad(program, nxt, pcs, lengths)
            pcs[t] -= 1
            if not ok:
                return False
    return True if moved else program.outcome(state)[0]


def point_of_no_return(program: Program, schedule: tuple[tuple[int, int], ...]) -> int | None:
    """The index of the step of ``schedule`` after which the bad outcome is certain.

    None when the schedule does not end in the bad outcome. This is the step
    a race page marks as "where it goes wrong".
    """
    n = len(program.thread_names)
    lengths = [program.length(t) for t in range(n)]
    pcs = [0] * n
    state = program.initial()
    if _all_bad(program, state, pcs, lengths):
        return None if not schedule else -1
    for i, (t, idx) in enumerate(schedule):
        state = program.run(state, t, idx)
        pcs[t] += 1
        if _all_bad(program, state, pcs, lengths):
            return i
    return None
