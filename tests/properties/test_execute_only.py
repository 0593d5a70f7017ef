"""Properties of docs/reference/execute_only.md: x86's execute-only key."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PKRU_AD_BIT, PROT_EXEC, PROT_NONE, PROT_READ,
    SEGV_PKUERR, SIGSEGV, Killed,
)
from tests.properties import proves
from tests.properties.histories import (
    ARENA_PAGES, PROTS, bits, byte_at, exec_only, free_keys, histories, key_of, map_bits,
    mapped_run, outcome, user_keys, worlds,
)

first_page = st.integers(0, ARENA_PAGES - 1)
pages = st.integers(1, ARENA_PAGES)


def mapped_range(w, first, n):
    """The arena range [first, first + n), clipped to the arena; assumed mapped throughout."""
    n = min(n, ARENA_PAGES - first)
    assume(mapped_run(w.mm, w.page(first), n) == n)
    return w.page(first), n


def keys_of(w, addr, n):
    return [key_of(w.mm, addr + i * PAGE_SIZE) for i in range(n)]


def pkey_fault(end):
    """(signal, si_code, si_pkey) of how a process ended."""
    return isinstance(end, Killed) and (end.signo, end.siginfo.si_code, end.siginfo.si_pkey)


def execute_only_key_to_come(mm):
    """The key a plain PROT_EXEC request takes: the one the mm has, else the lowest free.

    That is key 0 when the program freed key 0. The kernel then records 0 as the
    execute-only key and sets AD for key 0 in the caller's PKRU, but tags no VMA with it
    (``__arch_override_mprotect_pkey`` takes the key only ``if (pkey > 0)``): the page keeps
    its key. The page does not say so, and the properties leave that case out.
    """
    if mm.execute_only_pkey != -1:
        return mm.execute_only_pkey
    return (free_keys(mm) or [None])[0]


@proves("XO-X86-IMPLICIT")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), first=first_page, n=pages)
def test_plain_prot_exec_takes_the_execute_only_key(w, first, n):
    """A plain mprotect(PROT_EXEC) tags the range with the process's execute-only key (the
    lowest free key when it had none), records it, and sets AD for it in the caller's PKRU
    only; the range executes, and a read gets SEGV_PKUERR with that key in si_pkey."""
    addr, n = mapped_range(w, first, n)
    xo = execute_only_key_to_come(w.mm)
    assume(xo)  # None: no key is free (XO-X86-SILENT-FALLBACK); 0: a freed key 0 tags nothing
    pkru, others = w.t.pkru, [u.pkru for u in w.threads[1:]]
    assert w.t.mprotect(addr, n * PAGE_SIZE, PROT_EXEC) == 0
    assert (w.mm.execute_only_pkey, keys_of(w, addr, n)) == (xo, [xo] * n)
    assert bits(w.t.pkru, xo) & PKRU_AD_BIT
    assert w.t.pkru & ~(3 << 2 * xo) == pkru & ~(3 << 2 * xo)
    assert [u.pkru for u in w.threads[1:]] == others
    assert w.t.execute(addr) == byte_at(w.mm, addr)
    assert pkey_fault(w.t.fork().load(addr)) == (SIGSEGV, SEGV_PKUERR, xo)


@proves("XO-X86-HIDDEN-KEY")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), first=first_page, later=histories())
def test_execute_only_key_is_hidden_and_stays_taken(w, first, later):
    """Once taken, whatever the process does next, the execute-only key stays set in the map
    and refused (EINVAL) by pkey_free and pkey_mprotect; pkey_alloc hands out every other
    free key and never it (2 to 15 in a fresh process), and only execve starts a new map."""
    outcome(w.t.mprotect, w.page(first), PAGE_SIZE, PROT_EXEC)
    xo = w.mm.execute_only_pkey
    assume(xo != -1)
    w.play(later)
    assert w.mm.execute_only_pkey == xo and xo in map_bits(w.mm)
    assert outcome(w.t.pkey_free, xo) == "EINVAL"
    assert outcome(w.t.pkey_mprotect, w.arena, PAGE_SIZE, PROT_READ, xo) == "EINVAL"
    expected, got = free_keys(w.mm), []
    while (k := outcome(w.t.pkey_alloc, 0, 0)) != "ENOSPC":
        got.append(k)
    assert got == expected and xo not in got
    if not w.history:       # the process did nothing else
        assert got == list(range(2, 16))
    w.t.execve()
    assert (w.mm.pkey_allocation_map, w.mm.execute_only_pkey) == (1, -1)


@proves("XO-EXPLICIT-KEY-READABLE")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), first=first_page, n=pages, reader=st.integers(0, 2**32 - 1))
def test_prot_exec_with_a_key_is_as_readable_as_the_key(w, data, first, n, reader):
    """pkey_mprotect(PROT_EXEC) with an allocated key k keeps k and takes no execute-only
    key; a thread then reads the page exactly when its PKRU has no AD for k, and executes it
    either way."""
    assume(user_keys(w.mm))
    key = data.draw(st.sampled_from(user_keys(w.mm)), "key")
    addr, n = mapped_range(w, first, n)
    xo, expected_byte = w.mm.execute_only_pkey, byte_at(w.mm, addr)
    assert w.t.pkey_mprotect(addr, n * PAGE_SIZE, PROT_EXEC, key) == 0
    assert (keys_of(w, addr, n), w.mm.execute_only_pkey) == ([key] * n, xo)
    child = w.t.fork()
    child.wrpkru(reader)
    assert child.execute(addr) == expected_byte
    if bits(reader, key) & PKRU_AD_BIT:
        assert pkey_fault(child.load(addr)) == (SIGSEGV, SEGV_PKUERR, key)
    else:
        assert child.load(addr) == expected_byte


@proves("XO-X86-REVERT")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), xo_first=first_page, xo_n=pages, first=first_page, n=pages,
       prot=st.sampled_from([p for p in PROTS if p != PROT_EXEC]))
def test_leaving_execute_only_returns_to_key_0(w, xo_first, xo_n, first, n, prot):
    """A plain mprotect to any prot but PROT_EXEC gives key 0 back to every execute-only VMA
    (exactly PROT_EXEC, with the execute-only key) it reaches, so it is readable again unless
    the prot is PROT_NONE; the execute-only key stays taken."""
    outcome(w.t.mprotect, w.page(xo_first), xo_n * PAGE_SIZE, PROT_EXEC)
    xo = w.mm.execute_only_pkey
    n = min(n, ARENA_PAGES - first)
    reached = [w.page(first + i) for i in range(mapped_run(w.mm, w.page(first), n))]
    was_xo = [p for p in reached if exec_only(w.mm, p)]
    assume(was_xo)
    expected_bytes = {p: byte_at(w.mm, p) for p in was_xo}
    assert outcome(w.t.mprotect, w.page(first), n * PAGE_SIZE, prot) in (0, "ENOMEM")
    assert [key_of(w.mm, p) for p in was_xo] == [0] * len(was_xo)
    assert w.mm.execute_only_pkey == xo and xo in map_bits(w.mm)
    if prot != PROT_NONE:
        reader = w.t.fork()
        reader.wrpkru(0)
        assert {p: reader.load(p) for p in was_xo} == expected_bytes


@proves("XO-X86-PREV-KEY")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), first=first_page, n=pages)
def test_prot_exec_ignores_the_previous_key(w, data, first, n):
    """Whatever key the range had (key 0 or one of the program's), a plain mprotect(PROT_EXEC)
    gives it the execute-only key: the previous key is not looked at."""
    assume(user_keys(w.mm))
    previous = data.draw(st.sampled_from(user_keys(w.mm)), "previous key")
    addr, n = mapped_range(w, first, n)
    assert w.t.pkey_mprotect(addr, n * PAGE_SIZE, PROT_READ, previous) == 0
    xo = execute_only_key_to_come(w.mm)
    assume(xo)  # None: no key is free (XO-X86-SILENT-FALLBACK); 0: a freed key 0 tags nothing
    assert w.t.mprotect(addr, n * PAGE_SIZE, PROT_EXEC) == 0
    assert keys_of(w, addr, n) == [xo] * n


@proves("XO-X86-SILENT-FALLBACK")
@settings(deadline=None, max_examples=40)
@given(w=worlds(exec_only=False), first=first_page, n=pages)
def test_no_free_key_means_no_execute_only(w, first, n):
    """With every key taken and no execute-only key yet, mprotect(PROT_EXEC) still returns 0:
    each VMA keeps its key, no execute-only key is recorded, the caller's PKRU does not change,
    and a thread that may read the key reads the page."""
    while outcome(w.t.pkey_alloc, 0, 0) != "ENOSPC":
        pass
    addr, n = mapped_range(w, first, n)
    keys, pkru, expected_byte = keys_of(w, addr, n), w.t.pkru, byte_at(w.mm, addr)
    assert w.t.mprotect(addr, n * PAGE_SIZE, PROT_EXEC) == 0
    assert (keys_of(w, addr, n), w.mm.execute_only_pkey, w.t.pkru) == (keys, -1, pkru)
    reader = w.t.fork()
    reader.wrpkru(0)
    assert reader.load(addr) == expected_byte


@proves("XO-X86-PKRU-SHORTCUT")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), first=first_page, pkru=st.integers(0, 2**32 - 1), via_mmap=st.booleans())
def test_later_prot_exec_checks_only_the_callers_pkru(w, first, pkru, via_mmap):
    """Once the execute-only key exists, a further mprotect or mmap with exactly PROT_EXEC
    sets AD for it in the caller's PKRU if that PKRU allows reading it, writes nothing if it
    already denies reads, and never changes another thread's PKRU."""
    addr = w.page(first)
    assume(w.mm.find_vma(addr))
    outcome(w.t.mprotect, addr, PAGE_SIZE, PROT_EXEC)
    xo = w.mm.execute_only_pkey
    assume(xo != -1)
    w.t.wrpkru(pkru)
    others = [u.pkru for u in w.threads[1:]]
    if via_mmap:
        w.t.mmap(0, PAGE_SIZE, PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS)
    else:
        assert w.t.mprotect(addr, PAGE_SIZE, PROT_EXEC) == 0
    if bits(pkru, xo) & PKRU_AD_BIT:
        assert w.t.pkru == pkru
    else:
        assert bits(w.t.pkru, xo) & PKRU_AD_BIT
        assert w.t.pkru & ~(3 << 2 * xo) == pkru & ~(3 << 2 * xo)
    assert [u.pkru for u in w.threads[1:]] == others
