"""Generated machines and prior histories for the properties.

A property should not hold only in a fresh process, so most of them first run
a *history*: a generated list of calls a program could have made before the
call under test (pkey_alloc, once or until no key is left, pkey_free, mmap,
mprotect, pkey_mprotect, WRPKRU, new threads). Failing calls are part of a
history too: their errors are recorded and the history goes on. Nothing in a
history loads or stores through a key, so no history ends the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from pkeyspec import Killed, System

PAGE = 4096
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = 0x0, 0x1, 0x2, 0x4
RW = PROT_READ | PROT_WRITE
ANON = 0x02 | 0x20                       # MAP_PRIVATE | MAP_ANONYMOUS
#: Every combination of read, write and execute.
PROTS = list(range(8))
#: The kernels the model knows; a bare series is its newest stable release.
KERNELS = ["6.1", "6.12", "7.2"]
VENDORS = ["intel", "amd"]


def c_int(value):
    """The C ``int`` a 64-bit register holds: its low 32 bits, two's complement."""
    value %= 2**32
    return value - 2**32 if value >= 2**31 else value


keys = st.integers(0, 15)
rights = st.integers(0, 3)
pkrus = st.integers(0, 2**32 - 1)
prots = st.sampled_from(PROTS)


def systems(pku=st.booleans(), kernels=st.sampled_from(KERNELS)):
    """A CPU (Intel or AMD, with or without PKU) running one of the modelled kernels."""
    return st.builds(lambda pku, kernel, vendor: System(pku=pku, kernel=kernel, cpu_vendor=vendor),
                     pku, kernels, st.sampled_from(VENDORS))


_thread = st.integers(0, 3)
_OPS = st.one_of(
    st.tuples(st.just("pkey_alloc"), _thread, rights),
    st.tuples(st.just("pkey_alloc_all"), _thread, rights),
    st.tuples(st.just("pkey_free"), _thread, st.integers(-1, 16)),
    # PROT_EXEC alone, which takes the execute-only key, one time in three.
    st.tuples(st.just("mmap"), _thread, st.sampled_from(PROTS + [PROT_EXEC] * 4),
              st.integers(1, 3), st.booleans()),
    st.tuples(st.just("pkey_mprotect"), _thread, st.integers(0, 7), prots,
              st.one_of(st.integers(-1, 15), st.just("last"))),
    st.tuples(st.just("wrpkru"), _thread, pkrus),
    st.tuples(st.just("clone"), _thread),
)
histories = st.lists(_OPS, max_size=12)


@dataclass
class Run:
    """What a history left behind: the threads (main first), the mappings it made, and
    each call with its result (a value or an errno)."""

    threads: list
    mappings: list = field(default_factory=list)
    log: list = field(default_factory=list)

    @property
    def main(self):
        return self.threads[0]


def killed(end, signo, code):
    """Did the access or instruction end the process with this signal and si_code?"""
    return isinstance(end, Killed) and (end.signo, end.siginfo.si_code) == (signo, code)


def touch(t, addr):
    """Populate the page at ``addr`` (a fresh read-write key-0 page) whatever PKRU says."""
    if not t.system.pku:
        t.store(addr, 1)
        return
    old = t.rdpkru()
    t.wrpkru(0)
    t.store(addr, 1)
    t.wrpkru(old)


def run(system: System, history, thread=None) -> Run:
    """Play ``history`` in a new process of ``system`` (or in ``thread``'s process)."""
    r = Run([thread or system.spawn()])
    last_key = 0
    for op, who, *args in history:
        t = r.threads[who % len(r.threads)]
        try:
            if op == "pkey_alloc":
                result = last_key = t.pkey_alloc(0, args[0])
            elif op == "pkey_alloc_all":          # until ENOSPC
                while True:
                    last_key = t.pkey_alloc(0, args[0])
            elif op == "pkey_free":
                result = t.pkey_free(args[0])
            elif op == "mmap":
                prot, pages, touched = args
                if touched:
                    result = t.mmap(0, pages * PAGE, RW, ANON)
                    touch(t, result)
                    t.mprotect(result, pages * PAGE, prot)
                else:
                    result = t.mmap(0, pages * PAGE, prot, ANON)
                r.mappings.append(result)
            elif op == "pkey_mprotect":
                i, prot, key = args
                if not r.mappings:
                    continue
                key = last_key if key == "last" else key
                result = t.pkey_mprotect(r.mappings[i % len(r.mappings)], PAGE, prot, key)
            elif op == "wrpkru":
                if not system.pku:
                    continue                  # #UD: it would end the process
                result = t.wrpkru(args[0])
            else:
                result = t.clone()
                r.threads.append(result)
        except OSError as e:
            result = e.errno
        r.log.append((op, args, result))
    return r


def keyed_page(t, key, prot=RW, touched=True, at=0):
    """A new page with ``key`` attached, allocating keys until ``key`` comes if it is free.

    Returns the address, or None when ``key`` cannot be attached (it is the hidden
    execute-only key). The page is written once first when ``touched``; it is mapped at
    ``at`` with MAP_FIXED when ``at`` is given.
    """
    addr = t.mmap(at, PAGE, RW, ANON | (0x10 if at else 0))
    if touched:
        touch(t, addr)
    for _ in range(17):
        try:
            t.pkey_mprotect(addr, PAGE, prot, key)
            return addr
        except OSError:
            pass
        try:
            t.pkey_alloc(0, 0)
        except OSError:
            return None
    return None
