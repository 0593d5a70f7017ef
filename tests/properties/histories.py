"""What a program did before the call under test: generated prior histories, and small helpers.

A history is a list of calls one thread makes: a run of ``pkey_alloc`` (so
that the next key may be any of 1 to 15), then ``pkey_alloc`` a few times,
``pkey_free``, ``mmap`` of a few pages, ``pkey_mprotect`` or
``mprotect(PROT_EXEC)`` of a page it mapped, a touch of such a page
(``PTRACE_POKEDATA``, which never faults, so the page gets its page-table
entry) and WRPKRU, in any order. :func:`replay` makes the calls and skips one
Linux refuses, as a program ignores a -1. A property replays a history before
the call it is about, so that what it asserts does not hold only in a fresh
process.

The expectations of the properties never come from here: they are written
from the statement and Linux's rules (``bits`` is the two PKRU bits of a key,
computed by hand).
"""

from hypothesis import assume
from hypothesis import strategies as st

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
    PTRACE_POKEDATA,
)

U32 = 0xFFFFFFFF
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
AD, WD = 1, 2
#: The default init_pkru, written out: key 0 open, AD for keys 1 to 15.
DEFAULT_PKRU = 0x55555554

#: The kernels the model has (the observed series; each one is its newest stable release).
kernels = st.sampled_from(("6.1", "6.12", "7.2"))
vendors = st.sampled_from(("intel", "amd"))
pkru_values = st.integers(0, U32)
rights = st.integers(0, 3)


def bits(pkru: int, key: int) -> int:
    """The two PKRU bits of ``key``: AD (1) and WD (2)."""
    return (pkru >> (2 * key)) & 3


def with_bits(pkru: int, key: int, value: int) -> int:
    """``pkru`` with the two bits of ``key`` replaced by ``value``."""
    return (pkru & ~(3 << (2 * key)) & U32) | (value << (2 * key))


def key0_open(pkru: int) -> int:
    """``pkru`` with key 0 (stacks, program, glibc's rseq area) readable and writable."""
    return pkru & ~3


def histories(*, keep_key0: bool = False, max_size: int = 8):
    """Lists of calls; with ``keep_key0`` no call frees key 0 or denies it in PKRU."""
    page = st.integers(0, 7)
    free_keys = st.integers(1 if keep_key0 else 0, 15)
    written = pkru_values.map(key0_open) if keep_key0 else pkru_values
    call = st.one_of(
        st.tuples(st.just("pkey_alloc"), rights, st.integers(1, 6)),
        st.tuples(st.just("pkey_free"), free_keys),
        st.tuples(st.just("mmap"), st.integers(1, 3)),
        st.tuples(st.just("pkey_mprotect"), page, st.sampled_from((PROT_NONE, PROT_READ, RW)),
                  st.integers(-1, 15)),
        st.tuples(st.just("mprotect_exec"), page),
        st.tuples(st.just("touch"), page, st.integers(0, 255)),
        st.tuples(st.just("wrpkru"), written),
    )
    first = st.tuples(st.just("pkey_alloc"), rights, st.integers(0, 14))
    return st.builds(lambda run, calls: [run] + calls, first, st.lists(call, max_size=max_size))


def replay(t, history) -> list[int]:
    """Make the calls of ``history`` in thread ``t``; returns the pages it mapped."""
    pages: list[int] = []
    for name, *args in history:
        try:
            if name == "mmap":
                base = t.mmap(0, args[0] * PAGE_SIZE, RW, ANON)
                pages += [base + i * PAGE_SIZE for i in range(args[0])]
            elif name == "wrpkru":
                if t.system.pku:                  # a program without PKU has no WRPKRU to run
                    t.wrpkru(args[0])
            elif name == "pkey_alloc":
                for _ in range(args[1]):
                    t.pkey_alloc(0, args[0])
            elif name == "pkey_free":
                t.pkey_free(args[0])
            elif pages:
                addr = pages[args[0] % len(pages)]
                if name == "pkey_mprotect":
                    t.pkey_mprotect(addr, PAGE_SIZE, args[1], args[2])
                elif name == "mprotect_exec":
                    t.mprotect(addr, PAGE_SIZE, PROT_EXEC)
                else:
                    t.ptrace(PTRACE_POKEDATA, t.process.pid, addr, args[1])
        except OSError:
            pass
    return pages


def fresh_key(t, access_rights: int = 0) -> int:
    """``pkey_alloc(0, access_rights)``; the example is dropped when the history left no key free."""
    try:
        return t.pkey_alloc(0, access_rights)
    except OSError:
        assume(False)
        raise


def keyed_page(t, key: int, value: int | None = None) -> int:
    """A new private page with ``key``; when ``value`` is given it is stored there first."""
    page = t.mmap(0, PAGE_SIZE, RW, ANON)
    if value is not None:
        t.ptrace(PTRACE_POKEDATA, t.process.pid, page, value)
    t.pkey_mprotect(page, PAGE_SIZE, RW, key)
    return page
