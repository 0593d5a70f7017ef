"""Properties of docs/explanation/not-protected.md: what protection keys do not protect against."""

import errno
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkeyspec import (
    MAP_FIXED, PAGE_SIZE, PROT_EXEC, PROT_READ, PROT_WRITE, PTRACE_PEEKDATA, SEGV_PKUERR, SIGSEGV,
    SIGUSR1, Killed, System,
)
from tests.properties import proves
from tests.properties.histories import (
    AD, ANON, RW, WD, bits, fresh_key, histories, key0_open, keyed_page, kernels, pkru_values,
    run, vendors, with_bits,
)

#: What the trusted code gives up for the secret's key: AD, with or without WD.
given_up = st.sampled_from([AD, AD | WD])


def sandboxed(system, history, rights=AD):
    """The page's starting point: after ``history``, a thread keeps 42 on a page with a new key
    ``k`` and has given up its rights for ``k``."""
    t = system.spawn()
    run(t, history)
    k = fresh_key(t, rights)
    secret = keyed_page(t, k, value=42)
    return t, secret, k


def vma_keys(t):
    """Each mapping of ``t``'s process and its key, as /proc/self/smaps shows them."""
    return re.findall(r"^(\S+-\S+) .*?^ProtectionKey:\s+(\d+)", t.smaps(), re.M | re.S)


@proves("SEC-NOT-A-SECURITY-FEATURE")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(), rights=given_up, written=pkru_values,
       opened=st.sampled_from([0, WD]))
def test_wrpkru_takes_back_any_right(kernel, history, rights, written, opened):
    """Whatever rights the trusted code gave up for key k, any code in the thread can write any
    value to PKRU with WRPKRU, no system call needed; a value that opens k reads the secret."""
    t, secret, k = sandboxed(System(kernel=kernel), history, rights)
    value = with_bits(written, k, opened)
    t.wrpkru(value)
    assert t.rdpkru() == value
    assert t.load(secret) == 42


@proves("SEC-UNPRIV-WRITERS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(keep_key0=True), rights=given_up,
       in_frame=pkru_values)
def test_clearing_bit_9_of_xstate_bv_makes_xrstor_load_pkru_0(kernel, vendor, history, rights, in_frame):
    """A handler that clears bit 9 of XSTATE_BV in its frame makes sigreturn's XRSTOR load the
    hardware's init value, 0 (every key open), whatever PKRU the frame holds; the secret reads."""
    t, secret, k = sandboxed(System(kernel=kernel, cpu_vendor=vendor), history, rights)

    def clear_bit_9(ctx):
        ctx.set_frame_pkru(in_frame)
        bv = ctx.thread.load(ctx.xstate_bv_address, 8)
        ctx.thread.store(ctx.xstate_bv_address, bv & ~(1 << 9), 8)

    t.sigaction(SIGUSR1, clear_bit_9)
    assert t.raise_signal(SIGUSR1) is None
    assert t.rdpkru() == 0
    assert t.load(secret) == 42


@proves("SEC-SIGRETURN")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(keep_key0=True), rights=given_up,
       chosen=pkru_values, by_other_thread=st.booleans())
def test_whoever_writes_the_frame_chooses_the_pkru_sigreturn_restores(
        kernel, vendor, history, rights, chosen, by_other_thread):
    """The frame is key-0 memory on the stack and the handler runs with key 0 open, so the
    handler, or another thread that writes the stack, chooses the PKRU the thread resumes with."""
    t, secret, k = sandboxed(System(kernel=kernel, cpu_vendor=vendor), history, rights)
    other = t.clone()
    seen = []

    def choose(ctx):
        seen.append((ctx.thread.smaps_pkey(ctx.frame), bits(ctx.thread.rdpkru(), 0)))
        writer = other if by_other_thread else ctx.thread
        writer.store(ctx.frame_pkru_address, chosen, 4)

    t.sigaction(SIGUSR1, choose)
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [(0, 0)]
    assert t.rdpkru() == chosen


@proves("SEC-HANDLER-GETS-KEY0")
@settings(max_examples=80, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), interrupted=pkru_values,
       rseq=st.booleans(), from_other_thread=st.booleans())
def test_a_handler_starts_with_key0_open(kernel, history, interrupted, rseq, from_other_thread):
    """Whatever PKRU the interrupted code had, a handler that runs has key 0 open and reads key-0
    data. From 6.12 one always runs, and a thread without rseq resumes with its own PKRU; on 6.1
    none runs when that PKRU may not write key 0."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    data = t.mmap(0, PAGE_SIZE, RW, ANON)
    t.store(data, 7)
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append((bits(ctx.thread.rdpkru(), 0), ctx.thread.load(data))))
    timer = t.clone()
    if not rseq:
        t.rseq_unregister()
    t.wrpkru(interrupted)
    if from_other_thread:
        timer.tgkill(t.tid, SIGUSR1)
        try:
            t.rdpkru()                         # back in user space, where the signal arrives
        except ProcessLookupError:
            pass
    else:
        t.raise_signal(SIGUSR1)
    assert seen in ([], [(0, 7)])
    if kernel != "6.1" and not rseq:
        assert seen == [(0, 7)] and t.rdpkru() == interrupted
    if kernel == "6.1" and bits(interrupted, 0):
        assert seen == [] and t.process.end.signo == SIGSEGV


@proves("SEC-KERNEL-CONFUSED-DEPUTY")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), rights=given_up)
def test_foreign_interfaces_read_what_the_thread_cannot(kernel, history, rights):
    """A thread that cannot read the secret gets EFAULT when it passes it to write(), yet
    /proc/self/mem, process_vm_readv on its own pid and PTRACE_PEEKDATA read it for it."""
    t, secret, k = sandboxed(System(kernel=kernel), history, rights)
    r, w = t.pipe()
    with pytest.raises(OSError) as denied:
        t.write(w, secret, 1)
    assert denied.value.errno == errno.EFAULT
    buf, me = t.mmap(0, PAGE_SIZE, RW, ANON), t.process.pid
    assert t.pread(t.open_proc_mem(), buf, 1, secret) == 1 and t.load(buf) == 42
    assert t.process_vm_readv(me, [(buf + 8, 1)], [(secret, 1)]) == 1 and t.load(buf + 8) == 42
    assert t.ptrace(PTRACE_PEEKDATA, me, secret) & 0xFF == 42


@proves("SEC-REMAP-RETAG")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), rights=st.integers(0, 3),
       actor_pkru=pkru_values, by_other_thread=st.booleans(), munmap_first=st.booleans())
def test_any_thread_can_replace_a_keyed_page_by_a_key0_page(
        kernel, history, rights, actor_pkru, by_other_thread, munmap_first):
    """Any thread, whatever its rights for k, can unmap the page (or map over it with MAP_FIXED)
    and map a new one at the same address: it has key 0 and new contents, which it can replace."""
    t, secret, k = sandboxed(System(kernel=kernel), history, rights)
    actor = t.clone() if by_other_thread else t
    actor.wrpkru(key0_open(actor_pkru))
    if munmap_first:
        assert actor.munmap(secret, PAGE_SIZE) == 0
    assert actor.mmap(secret, PAGE_SIZE, RW, ANON | MAP_FIXED) == secret
    assert actor.smaps_pkey(secret) == 0 and actor.load(secret) == 0
    actor.store(secret, 99)
    assert t.load(secret) == 99


@proves("SEC-FREE-DOESNT-REVOKE")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(), first=st.integers(0, 3), second=st.integers(0, 3),
       others=st.lists(pkru_values, max_size=3))
def test_pkey_free_changes_no_page_and_no_rights(kernel, history, first, second, others):
    """pkey_free(k) changes no page's key and no thread's PKRU; the next pkey_alloc returns k, and
    the rights it gives its caller decide whether that thread reads the old page."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    k = fresh_key(t, first)
    old = keyed_page(t, k, value=42)
    threads = [t] + [t.clone() for _ in others]
    for thread, value in zip(threads[1:], others):
        thread.wrpkru(value)
    keys, pkrus = vma_keys(t), [thread.rdpkru() for thread in threads]
    assert t.pkey_free(k) == 0
    assert vma_keys(t) == keys and [thread.rdpkru() for thread in threads] == pkrus
    assert t.pkey_alloc(0, second) == k
    assert [thread.rdpkru() for thread in threads[1:]] == pkrus[1:]
    end = t.load(old)
    if second & AD:
        assert isinstance(end, Killed) and (end.siginfo.si_code, end.siginfo.si_pkey) == (SEGV_PKUERR, k)
    else:
        assert end == 42


@proves("SEC-16-KEYS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(), before=st.integers(0, 15), execute_only=st.booleans(),
       rights=st.integers(0, 3))
def test_a_program_gets_15_keys_and_14_after_an_execute_only_page(
        kernel, history, before, execute_only, rights):
    """A new program (whatever the process did before execve) can allocate 15 keys, 1 to 15; a
    plain mprotect(PROT_EXEC), before or after some of its allocations, takes one more (14 left)."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    t.execve()
    got = [t.pkey_alloc(0, rights) for _ in range(before)]
    if execute_only:
        code = t.mmap(0, PAGE_SIZE, RW, ANON)
        t.mprotect(code, PAGE_SIZE, PROT_EXEC)
    while True:
        try:
            got.append(t.pkey_alloc(0, rights))
        except OSError as e:
            assert e.errno == errno.ENOSPC
            break
    hidden = before + 1 if execute_only and before < 15 else None
    assert got == [key for key in range(1, 16) if key != hidden]
    if execute_only:
        assert t.smaps_pkey(code) == (hidden or 0)


@proves("SEC-SECCOMP-WX-BYPASS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), keyed=st.booleans(),
       key=st.sampled_from([-1, 0, "new"]), readable=st.booleans())
def test_pkey_mprotect_makes_the_writable_executable_mapping_mprotect_would(
        kernel, history, keyed, key, readable):
    """pkey_mprotect with key -1 (the key stays), key 0 or any allocated key makes a writable and
    executable mapping, the one a filter on mprotect's PROT_WRITE | PROT_EXEC means to forbid."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    old_key = fresh_key(t) if keyed else 0
    page = keyed_page(t, old_key)
    new_key = fresh_key(t) if key == "new" else key
    prot = PROT_WRITE | PROT_EXEC | (PROT_READ if readable else 0)
    assert t.pkey_mprotect(page, PAGE_SIZE, prot, new_key) == 0
    [perms] = re.findall(rf"^{page:08x}-\S+ (\S+)", t.smaps(), re.M)
    assert perms == ("r" if readable else "-") + "wxp"
    assert t.smaps_pkey(page) == (old_key if new_key == -1 else new_key)


@proves("HW-X86-NO-BARRIER")
@settings(max_examples=100, deadline=None)
@given(kernel=kernels, history=histories(), before=pkru_values, after=pkru_values,
       write=st.booleans())
def test_access_after_wrpkru_is_judged_by_the_written_value(kernel, history, before, after, write):
    """The first access after a WRPKRU is judged by the value written, for every key and every
    PKRU before and after: it faults exactly when the new value denies it."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    k = fresh_key(t)
    page = keyed_page(t, k, value=1)
    t.wrpkru(before)
    t.wrpkru(after)
    end = t.store(page, 2) if write else t.load(page)
    if bits(after, k) & (AD | WD if write else AD):
        assert isinstance(end, Killed)
        assert (end.siginfo.si_code, end.siginfo.si_addr, end.siginfo.si_pkey) == (SEGV_PKUERR, page, k)
    else:
        assert end == (None if write else 1)
