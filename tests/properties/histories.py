"""What a process did before the call under test: generated machines and prior histories.

A property should not hold only in a fresh process, so most of them first run a
*history*: a generated list of calls the threads of one process make before the
call under test. It starts with a run of ``pkey_alloc`` (so that the next key may
be any of 1 to 15), then makes, in any order, ``pkey_alloc`` (once, a few times or
until no key is left), ``pkey_free``, ``mmap`` (anywhere, or with MAP_FIXED over a
page it has), ``munmap``, ``pkey_mprotect`` of a few pages (key -1 is a plain
``mprotect``; a plain ``mprotect(PROT_EXEC)`` is a step of its own, so that many
histories take an execute-only key), ``PTRACE_POKEDATA`` (which never faults, so the
page gets its page-table entry whatever its key), WRPKRU and ``clone``, each made by
one of the threads. A call that fails is part of the history too: its errno is
logged and the history goes on. Nothing in a history loads or stores through a key,
so no history ends the process. :func:`worlds` runs one on a generated machine in a
new process that first maps an *arena* of ``ARENA_PAGES`` pages, each holding a known
byte; :func:`run` runs one in a thread a property made.

The expectations of the properties never come from here: the helpers at the end
read what Linux's rules need straight from the model's state (the VMAs, the
allocation map, a thread's PKRU) or compute it by hand; they never call the model's
own checks.
"""

from __future__ import annotations

import errno
import functools
from dataclasses import dataclass, field

from hypothesis import assume
from hypothesis import strategies as st

from pkeyspec import (
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE,
    PTRACE_POKEDATA, Killed, System,
)
from tests.helpers import bits  # noqa: F401  (one definition, the unit tests' own)

#: The prot of a page a property writes, and the flags of a private anonymous mapping.
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
#: PKRU's two bits of a key: access-disable and write-disable.
AD, WD = 1, 2
#: The default init_pkru, written out: key 0 open, AD for keys 1 to 15.
DEFAULT_PKRU = 0x55555554
#: Every combination of PROT_READ, PROT_WRITE and PROT_EXEC.
PROTS = tuple(range(8))
#: The kernels the model knows; a bare series is its newest stable release.
KERNELS = ("6.1", "6.12", "7.2")
#: Stable releases on both sides of a version boundary inside 6.12.
STABLE = ("6.12.4", "6.12.5")
#: The CPU vendors the model tells apart.
VENDORS = ("intel", "amd")
#: The pages of the arena a :func:`worlds` process maps before its history.
ARENA_PAGES = 8

#: A kernel the model knows, so that a property holds on each of them.
kernels = st.sampled_from(KERNELS)
#: A CPU vendor, so that AMD's ways with PKRU 0 are met too.
vendors = st.sampled_from(VENDORS)
#: Any hardware key, 0 to 15, not only the one pkey_alloc would return next.
keys = st.integers(0, 15)
#: Access rights as pkey_alloc and pkey_set take them: none, AD, WD or both.
rights = st.integers(0, 3)
#: Any 32-bit PKRU, keys denied or allowed in every combination.
pkru_values = st.integers(0, 2**32 - 1)
#: Any combination of PROT_READ, PROT_WRITE and PROT_EXEC, exactly PROT_EXEC included.
prots = st.sampled_from(PROTS)
#: Integers as a C caller may pass them: small, boundary and huge, of either sign.
ANY_INT = st.one_of(
    st.integers(), st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -1, -2, 3, 4, 15, 16, 2**31 - 1, -2**31, 2**32 - 1, 2**32, 2**32 + 1,
                     2**63, 2**64 - 1, 2**64, 9999, 0x1000, 0x01000000, 0x02000000, 0x03000000]))


def mostly(good, *bad):
    """``good`` three times in four, else one of ``bad``: mostly valid arguments, some not."""
    return st.integers(0, 3).flatmap(lambda i: st.one_of(*bad) if i == 3 else good)


@functools.cache
def histories(*, keep_key0: bool = False, exec_only: bool = True, max_size: int = 12):
    """Histories as above; ``keep_key0``: key 0 stays allocated and open; ``exec_only``: XO too."""
    who, page, pages = st.integers(0, 3), st.integers(0, 15), st.integers(1, 3)
    prot = st.sampled_from([p for p in PROTS if exec_only or p != PROT_EXEC])
    # -1 is "no key" (plain mprotect); 16 is one past the keys; "last" is the key the
    # history's last pkey_alloc returned. Key 0, allocated from the start and taken back by
    # the next pkey_alloc, has a branch of its own in pkey_free, or few histories free it.
    key = st.one_of(st.just(-1), st.integers(0, 16), st.just("last"))
    freed = st.one_of(st.integers(-1, 16), st.just("last"), st.just(0))
    if keep_key0:
        freed = st.one_of(st.just(-1), st.integers(1, 16), st.just("last"))
    steps = [
        st.tuples(st.just("pkey_alloc"), who, rights, st.one_of(st.integers(1, 6), st.just(16))),
        st.tuples(st.just("pkey_free"), who, freed),
        st.tuples(st.just("mmap"), who, st.one_of(st.none(), page), pages, prot),
        st.tuples(st.just("munmap"), who, page, pages),
        st.tuples(st.just("pkey_mprotect"), who, page, pages, prot, key),
        st.tuples(st.just("poke"), who, page, st.integers(0, 255)),
        st.tuples(st.just("wrpkru"), who, pkru_values.map(key0_open) if keep_key0 else pkru_values),
        st.tuples(st.just("clone"), who),
    ]
    if exec_only:
        steps.append(st.tuples(st.just("mprotect"), who, page, pages, st.just(PROT_EXEC)))
    first = st.tuples(st.just("pkey_alloc"), st.just(0), rights, st.integers(0, 14))
    return st.builds(lambda lead, calls: [lead] * (lead[3] > 0) + calls,
                     first, st.lists(st.one_of(steps), max_size=max_size))


@dataclass
class World:
    """A process after its history: its threads (``t`` first), the pages it mapped, each result."""

    threads: list
    history: list = field(default_factory=list)
    arena: int = 0
    pages: list = field(default_factory=list)
    log: list = field(default_factory=list)
    last_key: int = -1

    @property
    def t(self):
        """The thread the history started in, which makes the call under test."""
        return self.threads[0]

    @property
    def system(self) -> System:
        """The machine the process runs on."""
        return self.threads[0].system

    @property
    def mm(self):
        """The process's address space: its VMAs, allocation map and execute-only key."""
        return self.threads[0].process.mm

    def page(self, i: int) -> int:
        """The address of arena page ``i``, for a property that picks a page of the arena."""
        return self.arena + i * PAGE_SIZE

    def mapped(self) -> list[int]:
        """The pages the history mapped that are mapped still, for a property that needs one."""
        return [p for p in self.pages if self.mm.find_vma(p) is not None]

    def call(self, thread, name: str, *args):
        """``thread`` makes system call ``name``; logs and returns its result or errno's name."""
        result = outcome(getattr(thread, name), *args)
        self.log.append((name, args, result))
        return result

    def play(self, history: list) -> World:
        """Make the calls of ``history`` (see :func:`histories`), failing ones too; returns self."""
        self.history = self.history + list(history)
        for name, who, *args in history:
            t = self.threads[who % len(self.threads)]
            if name == "pkey_alloc":
                for _ in range(args[1]):
                    key = self.call(t, "pkey_alloc", 0, args[0])
                    if isinstance(key, str):
                        break
                    self.last_key = key
            elif name == "pkey_free":
                self.call(t, "pkey_free", self.last_key if args[0] == "last" else args[0])
            elif name == "wrpkru":
                if self.system.pku:            # without PKU, WRPKRU is #UD: SIGILL
                    t.wrpkru(args[0])
                    self.log.append(("wrpkru", tuple(args), None))
            elif name == "clone":
                self.threads.append(t.clone())
            elif name == "mmap" and (args[0] is None or not self.pages):   # anywhere
                addr = self.call(t, "mmap", 0, args[1] * PAGE_SIZE, args[2], ANON)
                if not isinstance(addr, str):
                    self.pages += [addr + i * PAGE_SIZE for i in range(args[1])]
            elif self.pages:                   # a call on one of the pages the history has
                addr = self.pages[args[0] % len(self.pages)]
                if name == "poke":
                    self.call(t, "ptrace", PTRACE_POKEDATA, t.process.pid, addr, args[1])
                elif name == "munmap":
                    self.call(t, "munmap", addr, args[1] * PAGE_SIZE)
                elif name == "mmap":
                    self.call(t, "mmap", addr, args[1] * PAGE_SIZE, args[2], ANON | MAP_FIXED)
                elif name == "mprotect":
                    self.call(t, "mprotect", addr, args[1] * PAGE_SIZE, args[2])
                else:
                    key = self.last_key if args[3] == "last" else args[3]
                    self.call(t, "pkey_mprotect", addr, args[1] * PAGE_SIZE, args[2], key)
        return self

    def __repr__(self) -> str:
        s = self.system
        return (f"World(kernel={'.'.join(map(str, s.kernel))}"
                f"{'' if s.kernel_patch is None else f'.{s.kernel_patch}'}, "
                f"pku={s.pku}, {s.cpu_vendor}, history={self.history!r})")


def run(t, history: list, arena: bool = False) -> World:
    """Play ``history`` from ``t`` (mapping the arena first if asked), in a property's setup."""
    w = World([t])
    if arena:
        w.arena = t.mmap(0, ARENA_PAGES * PAGE_SIZE, RW, ANON)
        w.pages = [w.page(i) for i in range(ARENA_PAGES)]
        for i, page in enumerate(w.pages):
            t.store(page, 0x10 + i)
    return w.play(history)


@functools.cache
def worlds(pku=(True,), kernels=KERNELS, vendors=VENDORS, **options):
    """A :class:`World` on a machine of ``pku`` x ``kernels`` x ``vendors``: arena, then history."""
    machines = st.builds(lambda p, k, v: System(pku=p, kernel=k, cpu_vendor=v),
                         st.sampled_from(pku), st.sampled_from(kernels), st.sampled_from(vendors))
    return st.builds(lambda system, history: run(system.spawn(), history, arena=True),
                     machines, histories(**options))


def twin(w: World) -> World:
    """An independent copy of ``w`` (the same state in another System), to compare two calls."""
    system = w.system.copy()
    tids = {t.tid: t for t in system.processes[w.t.process.pid].threads}
    return World([tids[t.tid] for t in w.threads], w.history, w.arena, list(w.pages),
                 list(w.log), w.last_key)


# --- Keys and pages a property needs -------------------------------------------------------

def fresh_key(t, access_rights: int = 0) -> int:
    """``pkey_alloc(0, access_rights)``; the example is dropped when the history left none free."""
    try:
        return t.pkey_alloc(0, access_rights)
    except OSError:
        assume(False)
        raise


def take_key(t, key: int) -> bool:
    """pkey_alloc until ``key`` (any of 0 to 15) can be attached; False if never (XO, none left)."""
    while key not in user_keys(t.process.mm):
        try:
            t.pkey_alloc(0, 0)
        except OSError:
            return False
    return True


def keyed_page(t, key: int, prot: int = RW, value: int | None = None, at: int = 0) -> int:
    """A new page with ``key`` and ``prot``; ``value`` poked in first; MAP_FIXED at ``at``."""
    page = t.mmap(at, PAGE_SIZE, RW, ANON | (MAP_FIXED if at else 0))
    if value is not None:
        t.ptrace(PTRACE_POKEDATA, t.process.pid, page, value)
    t.pkey_mprotect(page, PAGE_SIZE, prot, key)
    return page


# --- Linux's rules, computed by hand or read from the state ------------------------------

def c_int(value: int) -> int:
    """The C ``int`` a 64-bit register holds: its low 32 bits, two's complement."""
    value %= 2**32
    return value - 2**32 if value >= 2**31 else value


def with_bits(pkru: int, key: int, value: int) -> int:
    """``pkru`` with the two bits of ``key`` replaced by ``value``."""
    return (pkru & ~(3 << (2 * key)) & 0xFFFFFFFF) | (value << (2 * key))


def key0_open(pkru: int) -> int:
    """``pkru`` with key 0 (stacks, program, glibc's rseq area) readable and writable."""
    return pkru & ~3


def killed(end, signo: int, code: int) -> bool:
    """Did the access or instruction end the process with this signal and si_code?"""
    return isinstance(end, Killed) and (end.signo, end.siginfo.si_code) == (signo, code)


def outcome(call, *args):
    """What the call returned, or the name of its errno."""
    try:
        return call(*args)
    except OSError as e:
        return errno.errorcode[e.errno]


def map_bits(mm) -> set[int]:
    """The keys whose bit is set in the allocation map."""
    return {k for k in range(16) if mm.pkey_allocation_map >> k & 1}


def user_keys(mm) -> list[int]:
    """The keys the system calls accept: set in the map, 0 to 15 (with PKU), not execute-only."""
    if not mm.ospke:
        return []
    return sorted(k for k in map_bits(mm) if k != mm.execute_only_pkey)


def free_keys(mm) -> list[int]:
    """The keys pkey_alloc can still hand out, lowest first."""
    return [k for k in range(16) if k not in map_bits(mm)] if mm.ospke else []


def key_of(mm, addr: int):
    """The key of the VMA holding ``addr``; None when nothing is mapped there."""
    v = mm.find_vma(addr)
    return None if v is None else v.pkey


def byte_at(mm, addr: int) -> int:
    """The byte of private memory at ``addr`` (the arena's; 0 on a page mapped afresh)."""
    return mm.memory.get(addr, 0)


def exec_only(mm, addr: int) -> bool:
    """Is the VMA at ``addr`` exactly PROT_EXEC and tagged with the execute-only key?"""
    v = mm.find_vma(addr)
    return v is not None and v.flags & 7 == PROT_EXEC and v.pkey == mm.execute_only_pkey


def mapped_run(mm, addr: int, n: int) -> int:
    """How many of the ``n`` pages from ``addr`` are mapped before the first hole."""
    for i in range(n):
        if mm.find_vma(addr + i * PAGE_SIZE) is None:
            return i
    return n
