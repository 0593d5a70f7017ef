"""Properties of docs/reference/glibc.md: glibc's pkey functions on x86-64."""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import (
    ILL_ILLOPN, PAGE_SIZE, PKRU_AD_BIT, PROT_EXEC, SEGV_PKUERR, SIGILL, SIGSEGV, SIGUSR1, Killed,
    glibc,
)
from tests.properties import proves
from tests.properties.histories import (
    ANY_INT, ARENA_PAGES, KERNELS, PROTS, STABLE, bits, byte_at, c_int, free_keys, mostly, outcome,
    twin, user_keys, with_bits, worlds,
)

KEYS = mostly(st.integers(0, 15), st.integers(-2, 17), ANY_INT)
who = st.integers(0, 2)


def traced(thread):
    """Log the names and arguments of the mprotect and pkey_mprotect system calls ``thread``
    makes (what strace would show)."""
    log = []
    for name in ("mprotect", "pkey_mprotect"):
        def call(*args, _name=name, _real=getattr(thread, name)):
            log.append((_name, args))
            return _real(*args)
        setattr(thread, name, call)
    return log


@proves("GLIBC-X86-GET")
@settings(deadline=None, max_examples=80)
@given(w=worlds(), who=who, key=KEYS)
def test_pkey_get_returns_the_two_bits_of_the_key(w, who, key):
    """pkey_get(key) returns the calling thread's two PKRU bits of key (0 to 3) for every key
    0 to 15, allocated or not, and EINVAL for any other int; PKRU does not change."""
    t = w.threads[who % len(w.threads)]
    pkru = t.pkru
    expected = bits(pkru, c_int(key)) if 0 <= c_int(key) <= 15 else "EINVAL"
    assert outcome(glibc.pkey_get, t, key) == expected
    assert t.pkru == pkru


@proves("GLIBC-X86-SET")
@settings(deadline=None, max_examples=80)
@given(w=worlds(), who=who, key=KEYS,
       access=mostly(st.integers(0, 3), st.integers(4, 7), ANY_INT))
def test_pkey_set_replaces_the_two_bits_of_the_key(w, who, key, access):
    """pkey_set(key, rights) replaces the calling thread's two PKRU bits of key and returns 0
    for every key 0 to 15, allocated or not; a key outside 0..15 or rights above 3 (an unsigned
    int) give EINVAL. No other bit, no other thread and not the key map change."""
    t = w.threads[who % len(w.threads)]
    others = [u for u in w.threads if u is not t]
    pkru, their_pkru, the_map = t.pkru, [u.pkru for u in others], w.mm.pkey_allocation_map
    k, r = c_int(key), access % 2**32
    expected, after = (0, with_bits(pkru, k, r)) if 0 <= k <= 15 and r <= 3 else ("EINVAL", pkru)
    assert outcome(glibc.pkey_set, t, key, access) == expected
    assert t.pkru == after
    assert ([u.pkru for u in others], w.mm.pkey_allocation_map) == (their_pkru, the_map)


@proves("GLIBC-SET-EXEC")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), data=st.data(), first=st.integers(0, ARENA_PAGES - 1),
       prot=st.sampled_from([p for p in PROTS if p & PROT_EXEC]), access=st.integers(0, 3))
def test_no_rights_stop_execution(w, data, first, prot, access):
    """Whatever rights pkey_set gives the key of memory mapped with PROT_EXEC, access disabled
    included, the memory still executes; a load from it faults when access is disabled."""
    assume(user_keys(w.mm) and w.mm.find_vma(w.page(first)))
    key = data.draw(st.sampled_from(user_keys(w.mm)), "key")
    addr, expected_byte = w.page(first), byte_at(w.mm, w.page(first))
    assert glibc.pkey_mprotect(w.t, addr, PAGE_SIZE, prot, key) == 0
    assert glibc.pkey_set(w.t, key, access) == 0
    assert w.t.execute(addr) == expected_byte
    if access & PKRU_AD_BIT:
        end = w.t.fork().load(addr)
        assert (end.signo, end.siginfo.si_code, end.siginfo.si_pkey) == (SIGSEGV, SEGV_PKUERR, key)


@proves("GLIBC-UB-UNALLOCATED")
@settings(deadline=None, max_examples=40)
@given(w=worlds(pku=(False,)), key=st.integers(0, 15), access=st.integers(0, 3),
       setter=st.booleans())
def test_without_pku_pkey_get_and_pkey_set_kill(w, key, access, setter):
    """On a CPU without protection keys pkey_get and pkey_set return no error code: the
    RDPKRU is an invalid opcode, SIGILL kills the process, and none of its threads can make
    another call."""
    end = glibc.pkey_set(w.t, key, access) if setter else glibc.pkey_get(w.t, key)
    assert isinstance(end, Killed)
    assert (end.signo, end.siginfo.si_code) == (SIGILL, ILL_ILLOPN)
    for thread in w.threads:
        with pytest.raises(ProcessLookupError):
            glibc.pkey_get(thread, key)


@proves("GLIBC-MPROTECT-NEG1")
@settings(deadline=None, max_examples=60)
@given(w=worlds(pku=(True, False)), first=st.integers(0, ARENA_PAGES - 1),
       n=st.integers(1, ARENA_PAGES), prot=st.sampled_from(PROTS),
       key=st.one_of(st.just(-1), st.just(2**32 - 1), KEYS))
def test_key_minus_one_makes_the_mprotect_system_call(w, first, n, prot, key):
    """glibc's pkey_mprotect with key -1 (as a C int) makes the mprotect system call, never
    pkey_mprotect; any other key goes to the pkey_mprotect system call. Either way the result
    and the memory are those of the kernel's pkey_mprotect with the same key."""
    addr, kernel = w.page(first), twin(w)
    log = traced(w.t)
    result = outcome(glibc.pkey_mprotect, w.t, addr, n * PAGE_SIZE, prot, key)
    if c_int(key) == -1:
        assert log == [("mprotect", (addr, n * PAGE_SIZE, prot))]
    else:
        assert log == [("pkey_mprotect", (addr, n * PAGE_SIZE, prot, c_int(key)))]
    assert outcome(kernel.t.pkey_mprotect, addr, n * PAGE_SIZE, prot, key) == result
    assert kernel.system.state() == w.system.state()


@proves("GLIBC-ALLOC-DOC")
@settings(deadline=None, max_examples=60)
@given(w=worlds(), who=who, access=st.integers(0, 3))
def test_pkey_alloc_and_pkey_free_as_the_manual_says(w, who, access):
    """pkey_alloc returns a non-negative key, 0 when key 0 is free, and gives the calling
    thread the rights as pkey_set would; pkey_free of that key changes no thread's rights."""
    t = w.threads[who % len(w.threads)]
    free, pkru = free_keys(w.mm), t.pkru
    assume(free)
    k = glibc.pkey_alloc(t, 0, access)
    assert k >= 0 and (k == 0 or 0 not in free)
    assert t.pkru == with_bits(pkru, k, access)
    rights_before = [u.pkru for u in w.threads]
    assert glibc.pkey_free(t, k) == 0
    assert [u.pkru for u in w.threads] == rights_before


@proves("GLIBC-SAFETY")
@settings(deadline=None, max_examples=60)
@given(w=worlds(kernels=KERNELS + STABLE), key=st.integers(0, 15), access=st.integers(0, 3),
       pkru=st.integers(0, 2**32 - 1))
def test_pkey_set_in_a_handler_lasts_until_sigreturn(w, key, access, pkru):
    """In a signal handler pkey_get sees the kernel's default PKRU and pkey_set changes the
    rights for the rest of the handler; sigreturn restores the PKRU saved in the frame, so the
    change is gone."""
    s = w.system
    # AMD with 6.12.0-6.12.4 restores PKRU 0 instead (RACE-AMD-XINUSE), which the page omits.
    assume(not (s.cpu_vendor == "amd" and s.kernel == (6, 12) and s.kernel_patch in range(5)))
    # The frame and rseq live in key-0 memory: the interrupted code and sigreturn need key 0.
    assume(not (key == 0 and access & PKRU_AD_BIT))
    interrupted = pkru & ~3
    w.t.wrpkru(interrupted)
    seen = []

    def handler(ctx):
        seen.append(glibc.pkey_get(ctx.thread, key))
        glibc.pkey_set(ctx.thread, key, access)
        seen.append(glibc.pkey_get(ctx.thread, key))

    w.t.sigaction(SIGUSR1, handler)
    assert w.t.raise_signal(SIGUSR1) is None
    assert seen == [bits(s.init_pkru_value, key), access]
    assert w.t.pkru == interrupted
