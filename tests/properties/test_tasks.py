"""Properties of docs/reference/tasks.md: threads, fork, execve and init_pkru."""

import errno
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import PAGE_SIZE, PROT_EXEC, SEGV_PKUERR, SIGUSR1, Killed, System, glibc
from tests.properties import proves
from tests.properties.histories import (
    ANON, DEFAULT_PKRU, RW, bits, fresh_key, histories, keyed_page, kernels, pkru_values, rights,
    run, with_bits,
)


def mm_keys(t):
    """What a program can learn about the keys of its mm, asked in a copy of the system: the key
    of each mapping (smaps), the key a new execute-only page gets, and which keys pkey_free takes."""
    copy = t.system.copy()
    c = copy.processes[t.process.pid].threads[t.process.threads.index(t)]
    mappings = re.findall(r"^(\S+-\S+) .*?^ProtectionKey:\s+(\d+)", c.smaps(), re.M | re.S)
    page = c.mmap(0, PAGE_SIZE, RW, ANON)
    c.mprotect(page, PAGE_SIZE, PROT_EXEC)
    frees = []
    for k in range(16):
        try:
            frees.append(c.pkey_free(k))
        except OSError as e:
            frees.append(e.errno)
    return mappings, c.smaps_pkey(page), frees


@proves("THR-CLONE-INHERITS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, init=pkru_values, history=histories(),
       later=st.lists(st.tuples(st.booleans(), st.booleans(), pkru_values), max_size=6))
def test_a_new_thread_starts_with_its_creators_current_pkru(kernel, init, history, later):
    """clone gives the new thread the PKRU its creator has at that moment, not init_pkru; later
    WRPKRUs and pkey_allocs in either thread do not reach the other."""
    t = System(kernel=kernel, init_pkru=init).spawn()
    run(t, history)
    now = t.rdpkru()
    u = t.clone()
    assert u.rdpkru() == now
    pkru = {t.tid: now, u.tid: now}
    for in_new, alloc, value in later:
        thread = u if in_new else t
        if alloc:
            try:
                k = thread.pkey_alloc(0, value & 3)
            except OSError:
                continue
            pkru[thread.tid] = with_bits(pkru[thread.tid], k, value & 3)
        else:
            thread.wrpkru(value)
            pkru[thread.tid] = value
        assert (t.rdpkru(), u.rdpkru()) == (pkru[t.tid], pkru[u.tid])


@proves("THR-NEW-KEY-OTHER-THREADS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(), other=pkru_values, first=rights, second=rights)
def test_another_thread_keeps_its_bits_for_a_key_allocated_and_allocated_again(
        kernel, history, other, first, second):
    """A thread that set its bits for a key (to anything, not only AD) keeps them when another
    thread allocates that key, and again when that thread frees it and allocates it anew."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    u = t.clone()
    u.wrpkru(other)                                  # u's bits for every key, allocated or not
    k = fresh_key(t, first)
    assert bits(t.rdpkru(), k) == first and u.rdpkru() == other
    assert t.pkey_free(k) == 0 and t.pkey_alloc(0, second) == k
    assert bits(t.rdpkru(), k) == second and u.rdpkru() == other


@proves("THR-NO-REMOTE-SET")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, other=pkru_values, history=histories(),
       sets=st.lists(st.tuples(st.integers(-1, 16), st.integers(0, 4)), max_size=4))
def test_no_call_changes_another_threads_pkru(kernel, other, history, sets):
    """Whatever one thread does (WRPKRU, glibc's pkey_set, pkey_alloc, pkey_free, pkey_mprotect,
    mprotect), another thread's PKRU stays what it was."""
    t = System(kernel=kernel).spawn()
    u = t.clone()
    u.wrpkru(other)
    run(t, history)
    for key, value in sets:
        try:
            glibc.pkey_set(t, key, value)
        except OSError:
            pass
    assert u.rdpkru() == other


@proves("THR-DENY-BY-DEFAULT-X86")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, init=st.sampled_from([DEFAULT_PKRU, 0]), history=histories(),
       given_rights=rights, touched=st.booleans(), write=st.booleans())
def test_a_thread_older_than_a_key_cannot_touch_its_memory(
        kernel, init, history, given_rights, touched, write):
    """With init_pkru 0x55555554, a thread created before a key exists and that never touches
    PKRU has AD for every key but 0, so memory protected later with a new key faults for it;
    with init_pkru=0 (the broken twin) it reads and writes that memory."""
    t = System(kernel=kernel, init_pkru=init).spawn()
    early = t.clone()
    run(t, history)
    k = fresh_key(t, given_rights)
    assume(k != 0)                             # the history freed key 0 and got it back
    page = keyed_page(t, k, value=42 if touched else None)
    end = early.store(page, 7) if write else early.load(page)
    if init == DEFAULT_PKRU:
        assert isinstance(end, Killed), end
        assert (end.siginfo.si_code, end.siginfo.si_pkey) == (SEGV_PKUERR, k)
    else:
        assert end == (None if write else 42 if touched else 0)


@proves("FORK-COPIES-MAP")
@settings(max_examples=40, deadline=None)
@given(kernel=kernels, history=histories(), in_child=histories(), in_parent=histories())
def test_fork_copies_the_map_the_execute_only_key_and_every_vma_key(
        kernel, history, in_child, in_parent):
    """The child of fork has a copy of its parent's mm: the key of every mapping, the allocation
    map and the execute-only key. Afterwards neither one's calls change the other's."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    at_fork = mm_keys(t)
    child = t.fork()
    assert mm_keys(child) == at_fork
    run(child, in_child)
    assert mm_keys(t) == at_fork
    child_now = mm_keys(child)
    run(t, in_parent)
    assert mm_keys(child) == child_now


@proves("FORK-PKRU")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(), pkrus=st.lists(pkru_values, min_size=1, max_size=4),
       which=st.integers(0, 3))
def test_the_child_has_the_pkru_of_the_thread_that_called_fork(kernel, history, pkrus, which):
    """The child of fork has one thread, whose PKRU is that of the thread that called fork,
    whatever the parent's other threads hold."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    threads = [t] + [t.clone() for _ in pkrus[1:]]
    for thread, value in zip(threads, pkrus):
        thread.wrpkru(value)
    caller = which % len(threads)
    child = threads[caller].fork()
    assert len(child.process.threads) == 1
    assert child.rdpkru() == pkrus[caller]


@proves("EXEC-RESET")
@settings(max_examples=40, deadline=None)
@given(kernel=kernels, init=pkru_values, history=histories(),
       pkrus=st.lists(pkru_values, min_size=1, max_size=3), which=st.integers(0, 2))
def test_execve_resets_the_map_the_vma_keys_and_the_callers_pkru(kernel, init, history, pkrus, which):
    """After execve the allocation map is {0} with no execute-only key (pkey_alloc gives 1 to
    15, and pkey_free takes each back), every mapping has key 0, the caller's PKRU is init_pkru
    and the other threads have ended."""
    t = System(kernel=kernel, init_pkru=init).spawn()
    run(t, history)
    threads = [t] + [t.clone() for _ in pkrus[1:]]
    for thread, value in zip(threads, pkrus):
        thread.wrpkru(value)
    caller = threads[which % len(threads)]
    assert caller.execve() is caller and caller.process.threads == [caller]
    assert caller.rdpkru() == init
    assert set(re.findall(r"^ProtectionKey:\s+(\d+)", caller.smaps(), re.M)) == {"0"}
    assert [caller.pkey_alloc(0, 0) for _ in range(15)] == list(range(1, 16))
    with pytest.raises(OSError) as full:
        caller.pkey_alloc(0, 0)
    assert full.value.errno == errno.ENOSPC
    assert [caller.pkey_free(k) for k in range(1, 16)] == [0] * 15
    for thread in threads:
        if thread is not caller:
            with pytest.raises(ProcessLookupError):
                thread.rdpkru()


@proves("INIT-PKRU-TUNABLE")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, value=pkru_values, history=histories())
def test_the_boot_parameter_is_taken_unchecked(kernel, value, history):
    """init_pkru= sets the value, any 32-bit number even one that denies key 0: PID 1, a program
    it forks and executes, and that program's signal handlers start with it; debugfs shows it."""
    s = System(kernel=kernel, init_pkru=value)
    init = s.spawn()
    assert init.process.pid == 1 and init.rdpkru() == value
    run(init, history)
    prog = init.fork()
    prog.wrpkru(DEFAULT_PKRU)
    assert prog.execve().rdpkru() == value
    seen = []
    prog.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()), touches_stack=False)
    prog.wrpkru(DEFAULT_PKRU)                  # so the frame can be written on every kernel
    prog.raise_signal(SIGUSR1)
    assert seen == [value]
    assert s.debugfs_read("x86/init_pkru") == f"{value:#x}\n"
