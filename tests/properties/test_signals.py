"""Properties of docs/reference/signals.md: PKRU across signal delivery on x86."""

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import (
    PAGE_SIZE, SA_ONSTACK, SEGV_PKUERR, SI_KERNEL, SIGSEGV, SIGUSR1, Killed, System, glibc,
)
from tests.properties import proves
from tests.properties.histories import (
    AD, ANON, DEFAULT_PKRU, RW, WD, bits, fresh_key, histories, key0_open, keyed_page, kernels,
    pkru_values, run, vendors, with_bits,
)

#: The XSAVE image in the frame: XSTATE_BV at byte 512, PKRU at byte 2688.
XSTATE_BV, PKRU_SLOT = 512, 2688


def version(kernel: str) -> tuple[int, int]:
    return tuple(int(n) for n in kernel.split(".")[:2])


def run_until_delivered(t):
    """``t`` goes back to user space (here it executes RDPKRU): a pending signal is delivered."""
    try:
        t.rdpkru()
    except ProcessLookupError:
        pass


@proves("SIG-X86-HANDLER-RIGHTS")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(), interrupted=pkru_values,
       from_other_thread=st.booleans())
def test_a_handler_starts_with_init_pkru(kernel, vendor, history, interrupted, from_other_thread):
    """Whatever PKRU the interrupted thread had, a handler starts with init_pkru, 0x55555554 by
    default (and one runs whenever that PKRU leaves key 0, the stack's key, open)."""
    t = System(kernel=kernel, cpu_vendor=vendor).spawn()
    run(t, history)
    sender = t.clone()
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    t.wrpkru(interrupted)
    if from_other_thread:
        sender.tgkill(t.tid, SIGUSR1)
        run_until_delivered(t)
    else:
        t.raise_signal(SIGUSR1)
    assert seen in ([], [DEFAULT_PKRU])
    if bits(interrupted, 0) == 0:
        assert seen == [DEFAULT_PKRU]


@proves("SIG-HANDLER-RIGHTS-GLOBAL")
@settings(max_examples=50, deadline=None)
@given(kernel=kernels, boot=pkru_values.map(key0_open), history=histories(keep_key0=True),
       writes=st.lists(st.one_of(pkru_values, pkru_values.map(key0_open)), min_size=1, max_size=4))
def test_a_handler_gets_init_pkru_as_it_is_at_delivery(kernel, boot, history, writes):
    """A handler gets the global init_pkru as it is when the signal is delivered: each debugfs
    write the kernel accepts (key 0 open) changes what the next handler gets, in every process."""
    s = System(kernel=kernel, init_pkru=boot)
    old = s.spawn()
    run(old, history)
    expected = boot
    for value in writes:
        young = s.spawn()
        try:
            s.debugfs_write("x86/init_pkru", hex(value))
            expected = value
        except OSError:
            assert bits(value, 0)
        for t in (old, young):
            seen = []
            t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
            t.raise_signal(SIGUSR1)
            assert seen == [expected]


@proves("SIG-X86-RESTORE")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(keep_key0=True),
       interrupted=st.one_of(st.just(0), pkru_values.map(key0_open)))
def test_the_frame_holds_the_interrupted_pkru_and_sigreturn_restores_it(
        kernel, vendor, history, interrupted):
    """The frame's XSAVE image holds the interrupted PKRU at byte 2688 with bit 9 of XSTATE_BV set,
    and sigreturn restores it; except that on AMD before 6.12 XSAVE leaves bit 9 clear when that
    PKRU is 0, so XRSTOR loads the init value, 0: the same value."""
    t = System(kernel=kernel, cpu_vendor=vendor).spawn()
    run(t, history)
    frames = []
    t.sigaction(SIGUSR1, lambda ctx: frames.append(
        (ctx.thread.load(ctx.fpstate + PKRU_SLOT, 4), ctx.thread.load(ctx.fpstate + XSTATE_BV, 8))))
    t.wrpkru(interrupted)
    assert t.raise_signal(SIGUSR1) is None
    amd_init_tracker = vendor == "amd" and kernel == "6.1" and interrupted == 0
    [(pkru, xstate_bv)] = frames
    assert pkru == interrupted and bool(xstate_bv & 1 << 9) != amd_init_tracker
    assert t.rdpkru() == interrupted


@proves("SIG-X86-HANDLER-WRPKRU-LOST")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(keep_key0=True),
       interrupted=pkru_values.map(key0_open),
       writes=st.lists(st.tuples(st.booleans(), pkru_values), min_size=1, max_size=3))
def test_a_wrpkru_in_the_handler_is_lost(kernel, vendor, history, interrupted, writes):
    """Whatever the handler writes to PKRU, with WRPKRU or glibc's pkey_set, the thread resumes
    with the PKRU saved in the frame, the interrupted one."""
    t = System(kernel=kernel, cpu_vendor=vendor).spawn()
    run(t, history)

    def handler(ctx):
        for use_pkey_set, value in writes:     # key 0 stays readable: sigreturn reads the frame
            if use_pkey_set:
                glibc.pkey_set(ctx.thread, 1 + value % 15, value >> 30)
            else:
                ctx.thread.wrpkru(value & ~AD)

    t.sigaction(SIGUSR1, handler)
    t.wrpkru(interrupted)
    assert t.raise_signal(SIGUSR1) is None
    assert t.rdpkru() == interrupted


@proves("SIG-FRAME-PKRU-IS-INPUT")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(keep_key0=True),
       interrupted=st.one_of(st.just(0), pkru_values.map(key0_open)), edit=pkru_values)
def test_an_edit_of_the_frame_is_the_pkru_the_thread_resumes_with(
        kernel, vendor, history, interrupted, edit):
    """A handler that writes a PKRU value into its frame makes the thread resume with that value;
    except on AMD before 6.12 when the interrupted PKRU was 0: bit 9 is clear, the edit ignored."""
    t = System(kernel=kernel, cpu_vendor=vendor).spawn()
    run(t, history)
    t.sigaction(SIGUSR1, lambda ctx: ctx.thread.store(ctx.fpstate + PKRU_SLOT, edit, 4))
    t.wrpkru(interrupted)
    assert t.raise_signal(SIGUSR1) is None
    amd_init_tracker = vendor == "amd" and kernel == "6.1" and interrupted == 0
    assert t.rdpkru() == (0 if amd_init_tracker else edit)


@proves("SIG-FRAME-PKRU-IS-INPUT")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, vendor=vendors, history=histories(keep_key0=True),
       others=pkru_values.map(key0_open), denied=st.sampled_from([AD, WD, AD | WD]),
       write=st.booleans(), touched=st.booleans())
def test_a_sigsegv_handler_repairs_a_key_fault_by_editing_the_frame(
        kernel, vendor, history, others, denied, write, touched):
    """A SIGSEGV handler that clears the faulting key's bits in the saved PKRU and returns makes
    the faulting load or store run again and succeed, after one call of the handler."""
    assume(write or denied & AD)
    t = System(kernel=kernel, cpu_vendor=vendor).spawn()
    run(t, history)
    k = fresh_key(t)
    page = keyed_page(t, k, value=42 if touched else None)
    calls = []

    def repair(ctx):
        calls.append((ctx.info.si_code, ctx.info.si_pkey))
        ctx.set_frame_pkru(with_bits(ctx.frame_pkru(), ctx.info.si_pkey, 0))

    t.sigaction(SIGSEGV, repair)
    pkru = with_bits(others, k, denied)
    t.wrpkru(pkru)
    result = t.store(page, 7) if write else t.load(page)
    assert result == (None if write else 42 if touched else 0)
    assert calls == [(SEGV_PKUERR, k)]
    assert t.rdpkru() == with_bits(pkru, k, 0)


@proves("SIG-X86-612-PERMISSIVE-XSAVE")
@settings(max_examples=80, deadline=None)
@given(kernel=st.sampled_from(["6.1", "6.11", "6.12", "6.12.0", "7.2"]),
       history=histories(keep_key0=True), interrupted=pkru_values, on_altstack=st.booleans())
def test_the_frame_is_written_under_the_interrupted_pkru_before_612_and_open_since(
        kernel, history, interrupted, on_altstack):
    """Before 6.12 a PKRU that denies writing the key of the stack the frame goes to gets the
    process killed with SIGSEGV and no handler runs; from 6.12 the handler runs, with init_pkru."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    stack_key = 0
    if on_altstack:
        stack_key = fresh_key(t)
        alt = t.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        t.pkey_mprotect(alt, 2 * PAGE_SIZE, RW, stack_key)
        t.sigaltstack(alt, 2 * PAGE_SIZE)
    if bits(interrupted, 0):
        t.rseq_unregister()                    # glibc's rseq area, on key 0: SIG-SELFTESTS-612
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()),
                SA_ONSTACK if on_altstack else 0, touches_stack=False)
    t.wrpkru(interrupted)
    end = t.raise_signal(SIGUSR1)
    if version(kernel) < (6, 12) and bits(interrupted, stack_key):
        assert seen == [] and isinstance(end, Killed) and end.signo == SIGSEGV
    else:
        assert seen == [DEFAULT_PKRU]


@proves("SIG-SELFTESTS-612")
@settings(max_examples=80, deadline=None)
@given(kernel=st.sampled_from(["6.12", "6.12.4", "6.18", "6.19", "7.2"]),
       history=histories(keep_key0=True), others=pkru_values,
       denied=st.sampled_from([AD, WD, AD | WD]), pthread=st.booleans(), rseq=st.booleans())
def test_the_rseq_update_kills_a_thread_that_denies_key0_when_its_handler_returns(
        kernel, history, others, denied, pthread, rseq):
    """From 6.12, when a glibc thread (rseq area on key 0) that denies key 0 touches its stack, its
    SIGSEGV handler runs and repairs key 0 in the frame, yet the process dies when it returns if
    key 0 was access-disabled, or write-disabled before 6.19. A thread without rseq survives."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    thread = t.clone() if pthread else t
    if not rseq:
        thread.rseq_unregister()
    calls = []

    def repair(ctx):
        calls.append((ctx.info.si_code, ctx.info.si_pkey))
        ctx.set_frame_pkru(with_bits(ctx.frame_pkru(), 0, 0))

    thread.sigaction(SIGSEGV, repair)
    pkru = with_bits(others, 0, denied)
    thread.wrpkru(pkru)
    end = thread.store(thread.sp - 8, 0, 8)
    assert calls == [(SEGV_PKUERR, 0)]
    if rseq and (denied & AD or version(kernel) < (6, 19)):
        assert isinstance(end, Killed) and (end.signo, end.siginfo.si_code) == (SIGSEGV, SI_KERNEL)
    else:
        assert end is None and thread.rdpkru() == with_bits(pkru, 0, 0)


@proves("SIG-HANDLER-STACK-KEY")
@settings(max_examples=60, deadline=None)
@given(kernel=st.sampled_from(["6.1", "6.11", "6.12", "7.2"]), history=histories(keep_key0=True),
       others=pkru_values.map(key0_open), stack_rights=st.integers(0, 3), assembly=st.booleans())
def test_a_handler_on_an_alternate_stack_with_its_own_key(
        kernel, history, others, stack_rights, assembly):
    """On an alternate stack with a key of its own, a C handler dies at its first push on every
    version (init_pkru denies the key); an assembly one that opens PKRU first runs and the thread
    resumes with its own PKRU, except before 6.12 when the thread denied writing the key."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    k = fresh_key(t)
    alt = t.mmap(0, 2 * PAGE_SIZE, RW, ANON)
    t.pkey_mprotect(alt, 2 * PAGE_SIZE, RW, k)
    t.sigaltstack(alt, 2 * PAGE_SIZE)
    t.sigaction(SIGUSR1, lambda ctx: ctx.thread.wrpkru(0), SA_ONSTACK, touches_stack=not assembly)
    pkru = with_bits(others, k, stack_rights)
    t.wrpkru(pkru)
    end = t.raise_signal(SIGUSR1)
    if not assembly or (version(kernel) < (6, 12) and stack_rights):
        assert isinstance(end, Killed) and end.signo == SIGSEGV
    else:
        assert end is None and t.rdpkru() == pkru
