"""Threads, fork, execve, exit_group, and where init_pkru comes from (boot parameter, debugfs).

Expected values are Linux's: rows g, h, i and p of
``/work/shared/linux-observed.md``, the facts of ``pkeys-facts.md`` (IDs in
the docstrings) and the kernel source named in the docstrings
(``arch/x86/mm/pkeys.c``: ``init_pkru_value``, ``setup_init_pkru``,
``init_pkru_write_file``; ``lib/kstrtox.c``; ``kernel/fork.c``;
``mm/memory.c`` ``copy_page_range``).
"""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, PROT_EXEC,
    PROT_READ, PROT_WRITE, SIGSEGV, SIGUSR1, Exited, Killed, System,
)
from pkeyspec.system import parse_kernel
from tests.helpers import err_of, bits

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE
INIT_PKRU = 0x55555554
SEGV_MAPERR = 1
SEGV_PKUERR = 4


def spawn(kernel="7.2", **kw):
    return System(kernel=kernel, pku=True, **kw).spawn()




def populated(t, value=0x5A, flags=ANON):
    p = t.mmap(0, PAGE, RW, flags)
    assert t.store(p, value) is None
    return p


# --- threads -------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_clone_inherits_the_creators_current_pkru(kernel):
    """Row g: "new thread's initial PKRU (creator 0x15555558)" -> "0x15555558 (inherits)".

    The creator got there as the C program would: pkey_alloc(0, WD) gives
    key 1 WD (0x55555558), then key 15 opened with WRPKRU.

    Facts: THR-CLONE-INHERITS.
    """
    t = spawn(kernel)
    assert t.pkey_alloc(0, WD) == 1
    assert t.wrpkru(t.rdpkru() & ~(3 << 30)) is None
    assert t.rdpkru() == 0x15555558
    u = t.clone()
    assert u.rdpkru() == 0x15555558


def test_clone_gets_its_own_64k_stack_vma_with_key_0():
    """Like pthread_create, the model's clone maps a 64 KiB stack for the thread, key 0.

    Facts: SYS-MMAP-DEFAULT-KEY, THR-CLONE-INHERITS.
    """
    t = spawn()
    u = t.clone()
    vma = t.process.mm.find_vma(u.sp - 1)
    assert vma.end - vma.start == 0x10000
    assert vma.end - PAGE < u.sp <= vma.end
    assert vma.perms == "rw-p"
    assert vma.name != "[stack]"
    assert t.smaps_pkey(u.sp - 1) == 0
    assert t.process.mm.find_vma(t.sp).name == "[stack]"


def test_clone_with_a_stack_given_uses_it():
    """clone(stack=...) maps nothing: the thread's stack pointer is the given top."""
    t = spawn()
    top = t.mmap(0, 4 * PAGE, RW, ANON) + 4 * PAGE
    before = list(t.process.mm.vmas)
    u = t.clone(top)
    assert u.sp == top
    assert t.process.mm.vmas == before


def test_threads_have_independent_pkru():
    """A WRPKRU in one thread changes neither the other thread nor a thread created later
    from the other one.

    Facts: HW-X86-THREAD-LOCAL, THR-NO-REMOTE-SET.
    """
    t = spawn()
    u = t.clone()
    assert t.wrpkru(0x55555550) is None
    assert u.rdpkru() == INIT_PKRU
    assert u.wrpkru(0) is None
    assert t.rdpkru() == 0x55555550
    v = u.clone()
    assert v.rdpkru() == 0
    assert t.rdpkru() == 0x55555550


def test_pkey_alloc_in_a_thread_sets_bits_only_there():
    """Row g: "pkey_alloc in a thread" -> "sets bits only in that thread; main keeps 01".

    Facts: SYS-ALLOC-RIGHTS-CALLER-ONLY, THR-NEW-KEY-OTHER-THREADS.
    """
    t = spawn()
    u = t.clone()
    k = u.pkey_alloc(0, WD)
    assert bits(u.rdpkru(), k) == 0b10
    assert bits(t.rdpkru(), k) == 0b01


def test_threads_share_the_mm_keys_and_memory():
    """A key allocated by one thread is allocated for the other; VMAs and bytes are shared."""
    t = spawn()
    u = t.clone()
    k = u.pkey_alloc(0, 0)
    p = populated(t, 0x33)
    assert u.pkey_mprotect(p, PAGE, RW, k) == 0
    assert t.smaps_pkey(p) == k
    assert u.load(p) == 0x33
    assert t.pkey_free(k) == 0
    assert err_of(u.pkey_free, k) == errno.EINVAL


# --- fork ---------------------------------------------------------------------------------------

def test_fork_copies_the_allocation_map_then_maps_are_independent():
    """Row h: child "pkey_mprotect(k), pkey_free(k), alloc, alloc" -> "0, 0, 1, 2"; parent after
    the child: "free(k), alloc" -> "0, 1".

    Facts: FORK-COPIES-MAP, SYS-ALLOC-LOWEST.
    """
    t = spawn()
    k = t.pkey_alloc(0, 0)
    p = populated(t)
    assert t.pkey_mprotect(p, PAGE, RW, k) == 0
    child = t.fork()
    assert (child.pkey_mprotect(p, PAGE, PROT_READ, k), child.pkey_free(k),
            child.pkey_alloc(0, 0), child.pkey_alloc(0, 0)) == (0, 0, 1, 2)
    assert (t.pkey_free(k), t.pkey_alloc(0, 0)) == (0, 1)


def test_fork_copies_the_exec_only_key():
    """The child reuses the parent's execute-only key 1, cannot free it, and allocates 2 first.

    Facts: FORK-COPIES-MAP, XO-X86-HIDDEN-KEY.
    """
    t = spawn()
    code = t.mmap(0, PAGE, RW, ANON)
    assert t.mprotect(code, PAGE, PROT_EXEC) == 0
    assert t.smaps_pkey(code) == 1
    child = t.fork()
    more = child.mmap(0, PAGE, RW, ANON)
    assert child.mprotect(more, PAGE, PROT_EXEC) == 0
    assert child.smaps_pkey(more) == 1
    assert child.smaps_pkey(code) == 1
    assert err_of(child.pkey_free, 1) == errno.EINVAL
    assert child.pkey_alloc(0, 0) == 2


def test_fork_copies_vma_keys_including_shared_mappings():
    """Row h: "child smaps key" -> "same". Private and shared mappings keep their keys.

    Facts: FORK-VMA-KEYS, PROC-SMAPS-LINE.
    """
    t = spawn()
    k1 = t.pkey_alloc(0, 0)
    k2 = t.pkey_alloc(0, 0)
    priv = populated(t)
    shared = populated(t, flags=MAP_SHARED | MAP_ANONYMOUS)
    assert t.pkey_mprotect(priv, PAGE, RW, k1) == 0
    assert t.pkey_mprotect(shared, PAGE, RW, k2) == 0
    child = t.fork()
    assert (child.smaps_pkey(priv), child.smaps_pkey(shared)) == (k1, k2)


def test_fork_gives_the_child_the_pkru_of_the_calling_thread_only():
    """fork from a second thread: the child's PKRU is that thread's, and it has one thread.

    Facts: FORK-PKRU, HW-X86-THREAD-LOCAL.
    """
    t = spawn()
    u = t.clone()
    assert t.wrpkru(0x0) is None
    assert u.wrpkru(0x15555550) is None
    child = u.fork()
    assert child.rdpkru() == 0x15555550
    assert child.process.threads == [child]
    assert child.process is not t.process


def test_fork_gives_a_private_copy_of_private_memory():
    """After fork, a write by either process is not seen by the other (copy on write)."""
    t = spawn()
    p = populated(t, 0x11)
    child = t.fork()
    assert t.store(p, 0x22) is None
    assert child.load(p) == 0x11
    assert child.store(p + 1, 0x33) is None
    assert t.load(p + 1) == 0
    assert t.load(p) == 0x22


def test_fork_keeps_shared_anonymous_memory_shared():
    """MAP_SHARED|MAP_ANONYMOUS memory is the same object in both processes after fork."""
    t = spawn()
    s = populated(t, 0x11, flags=MAP_SHARED | MAP_ANONYMOUS)
    child = t.fork()
    assert child.load(s) == 0x11
    assert child.store(s, 0x44) is None
    assert t.load(s) == 0x44
    assert t.store(s + 1, 0x55) is None
    assert child.load(s + 1) == 0x55


@pytest.mark.parametrize(("flags", "err"), [
    (ANON, 0x25),
    (MAP_SHARED | MAP_ANONYMOUS, 0x4),
], ids=["private-pte-copied", "shared-pte-not-copied"])
def test_fork_copies_ptes_of_private_but_not_of_shared_anonymous_memory(flags, err):
    """The child's first read of a populated AD page: err 0x25 (PTE present, PK bit) for
    private memory, whose PTEs fork copies; err 0x4 (not present, key checked in
    software) for shared anonymous memory, whose PTEs it does not copy.

    Both are SEGV_PKUERR with the page's key.

    Facts: HW-X86-PK-NEEDS-PRESENT, HW-X86-PFEC-PK, FORK-VMA-KEYS. Source: mm/memory.c
    ``copy_page_range`` -> ``vma_needs_copy`` (no anon_vma, not PFNMAP: skip).
    """
    t = spawn()
    p = populated(t, flags=flags)
    k = t.pkey_alloc(0, AD)
    assert t.pkey_mprotect(p, PAGE, RW, k) == 0
    child = t.fork()
    end = child.load(p)
    assert isinstance(end, Killed), end
    assert end.siginfo.si_code == SEGV_PKUERR
    assert end.siginfo.si_pkey == k
    assert end.err == err


# --- execve ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_execve_resets_pkru_and_the_allocation_map(kernel):
    """Row i: "execve: PKRU" -> "0x55555554"; "free(k) / pkey_mprotect(k) / first alloc" ->
    "-1 EINVAL / -1 EINVAL / 1 (map reset)".

    Facts: EXEC-RESET, INIT-PKRU-VALUE.
    """
    t = spawn(kernel)
    assert t.pkey_alloc(0, 0) == 1
    k = t.pkey_alloc(0, 0)
    assert t.wrpkru(0) is None
    t = t.execve()
    assert t.rdpkru() == INIT_PKRU
    p = t.mmap(0, PAGE, RW, ANON)
    assert err_of(t.pkey_free, k) == errno.EINVAL
    assert err_of(t.pkey_mprotect, p, PAGE, RW, k) == errno.EINVAL
    assert t.pkey_alloc(0, 0) == 1


def test_execve_resets_the_exec_only_key_and_the_vmas():
    """After execve no exec-only key exists (the next mprotect(PROT_EXEC) allocates 1 again,
    after a user allocation took 1 it is 2) and the old mappings are gone.

    Facts: EXEC-RESET, XO-X86-IMPLICIT.
    """
    t = spawn()
    code = t.mmap(0, PAGE, RW, ANON)
    assert t.mprotect(code, PAGE, PROT_EXEC) == 0
    k = t.pkey_alloc(0, 0)
    old = populated(t)
    assert t.pkey_mprotect(old, PAGE, RW, k) == 0
    t = t.execve()
    assert t.process.mm.find_vma(code) is None
    end = t.fork().load(old)
    assert isinstance(end, Killed) and end.siginfo.si_code == SEGV_MAPERR
    assert t.pkey_alloc(0, 0) == 1
    c2 = t.mmap(0, PAGE, RW, ANON)
    assert t.mprotect(c2, PAGE, PROT_EXEC) == 0
    assert t.smaps_pkey(c2) == 2


def test_execve_ends_the_other_threads():
    """After execve by a non-main thread, that thread is the only one; the others are gone.

    Their calls raise ProcessLookupError (ESRCH); the process runs on.

    Facts: EXEC-RESET. Source: fs/exec.c ``de_thread``.
    """
    t = spawn()
    u = t.clone()
    v = t.clone()
    assert u.wrpkru(0) is None
    survivor = u.execve()
    assert survivor is u
    assert u.process.threads == [u]
    assert u.rdpkru() == INIT_PKRU
    for gone in (t, v):
        with pytest.raises(ProcessLookupError) as exc:
            gone.rdpkru()
        assert exc.value.errno == errno.ESRCH
    assert u.alive


# --- exit_group --------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "expected"), [(0, 0), (17, 17), (256 + 3, 3), (-1, 255),
                                                  (2**31 + 5, 5)])
def test_exit_group_status_is_the_low_8_bits(status, expected):
    """WEXITSTATUS is ``status & 0xff``; every thread is gone afterwards.

    Source: kernel/exit.c ``SYSCALL_DEFINE1(exit_group)`` (``(error_code & 0xff) << 8``).
    """
    t = spawn()
    u = t.clone()
    assert u.exit_group(status) is None
    assert t.process.end == Exited(expected)
    for th in (t, u):
        with pytest.raises(ProcessLookupError):
            th.rdpkru()


# --- debugfs x86/init_pkru -----------------------------------------------------------------------

def test_debugfs_init_pkru_reads_0x55555554():
    """Row p: "debugfs x86/init_pkru" -> "0x55555554"; the file holds ``"0x%x\\n"``.

    Facts: INIT-PKRU-TUNABLE, INIT-PKRU-VALUE.
    """
    assert System().debugfs_read("x86/init_pkru") == "0x55555554\n"


@pytest.mark.parametrize("text", [
    "0x55555555", "0x2", "0x1", "0x3", "3",          # AD or WD for key 0
    "hello", "", "0x", "-1", " 0x10", "0x10 ", "0x55555550\n\n", "0x5555555g",
    "0x100000000", "4294967296", "99999999999999999999",   # more than 32 bits
])
def test_debugfs_write_refuses_key0_bits_garbage_and_values_over_32_bits(text):
    """Row p: write "0x55555555 / 0x2 / "hello"" -> "-1 EINVAL"; the value is unchanged.

    Any kstrtouint failure (bad digits, overflow: -ERANGE) becomes EINVAL;
    a value with either bit of key 0 is refused.

    Facts: INIT-PKRU-TUNABLE. Source: arch/x86/mm/pkeys.c ``init_pkru_write_file``,
    lib/kstrtox.c.
    """
    s = System()
    assert err_of(s.debugfs_write, "x86/init_pkru", text) == errno.EINVAL
    assert s.debugfs_read("x86/init_pkru") == "0x55555554\n"


@pytest.mark.parametrize(("text", "value"), [
    ("0x55555550", 0x55555550),
    ("0x55555550\n", 0x55555550),      # one trailing newline
    ("0X5555555c", 0x5555555C),        # 0X and upper/lower case digits
    ("1431655760", 0x55555550),        # base 10
    ("012525252520", 0x55555550),      # leading 0: base 8
    ("+0x10", 0x10),
    ("0", 0x0),
])
def test_debugfs_write_accepts_kstrtouint_base_0(text, value):
    """kstrtouint(buf, 0, ...): 0x hex, leading-0 octal, decimal, a '+', one trailing newline.

    The write returns the count written.

    Facts: INIT-PKRU-TUNABLE. Source: lib/kstrtox.c ``_parse_integer_fixup_radix``,
    ``_kstrtoull``.
    """
    s = System()
    assert s.debugfs_write("x86/init_pkru", text) == len(text)
    assert s.debugfs_read("x86/init_pkru") == f"{value:#x}\n"


def test_debugfs_write_parses_only_the_first_31_bytes():
    """The handler copies at most 31 bytes (``char buf[32]``); the rest is never seen.

    32 bytes whose first 31 are "0x" + 21 zeros + "55555550" parse as
    0x55555550 (all 32 would be 0x555555509, too big); the write returns 32.

    Facts: INIT-PKRU-TUNABLE. Source: arch/x86/mm/pkeys.c ``init_pkru_write_file``
    (``len = min(count, sizeof(buf) - 1)``, ``return count``).
    """
    s = System()
    text = "0x" + "0" * 21 + "55555550" + "9"
    assert len(text) == 32
    assert s.debugfs_write("x86/init_pkru", text) == 32
    assert s.debugfs_read("x86/init_pkru") == "0x55555550\n"


def test_debugfs_file_does_not_exist_without_pku():
    """Without OSPKE the kernel does not create x86/init_pkru: ENOENT for read and write.

    Facts: INIT-PKRU-TUNABLE ("Newer kernels create the debugfs file only when
    OSPKE is enabled"). Source: arch/x86/mm/pkeys.c ``create_init_pkru_value``.
    """
    s = System(pku=False)
    with pytest.raises(FileNotFoundError) as exc:
        s.debugfs_read("x86/init_pkru")
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        s.debugfs_write("x86/init_pkru", "0x55555550")


def test_debugfs_value_reaches_new_programs_and_handlers_not_running_threads():
    """A new init_pkru applies to contexts created afterwards: exec and signal handlers.

    Running threads keep their PKRU; a new thread still inherits its
    creator's PKRU and a forked child its caller's; a new program starts with
    the new value.

    Facts: INIT-PKRU-TUNABLE, SIG-HANDLER-RIGHTS-GLOBAL, THR-CLONE-INHERITS, FORK-PKRU,
    EXEC-RESET.
    """
    s = System()
    t = s.spawn()
    u = t.clone()
    assert s.debugfs_write("x86/init_pkru", "0x55555550") == 10
    assert (t.rdpkru(), u.rdpkru()) == (INIT_PKRU, INIT_PKRU)
    assert t.clone().rdpkru() == INIT_PKRU
    assert t.fork().rdpkru() == INIT_PKRU
    assert s.spawn().rdpkru() == 0x55555550
    seen = []
    t.sigaction(SIGUSR1, lambda ctx: seen.append(ctx.thread.rdpkru()))
    assert t.raise_signal(SIGUSR1) is None
    assert seen == [0x55555550]
    assert t.rdpkru() == INIT_PKRU
    assert u.execve().rdpkru() == 0x55555550


# --- the init_pkru= boot parameter -------------------------------------------------------------

@pytest.mark.parametrize("param", ["0x15555554", 0x15555554, "357913940"])
def test_boot_parameter_sets_init_pkru(param):
    """``init_pkru=0x15555554``: PID 1, programs it runs and handlers start with it (row p).

    Facts: INIT-PKRU-TUNABLE.
    """
    s = System(init_pkru=param)
    pid1 = s.spawn()
    assert pid1.process.pid == 1
    assert pid1.rdpkru() == 0x15555554
    main = pid1.fork().execve()
    assert main.rdpkru() == 0x15555554
    assert s.debugfs_read("x86/init_pkru") == "0x15555554\n"


def test_boot_parameter_has_no_key0_check():
    """Unlike the debugfs file, the boot parameter takes a value that denies key 0.

    Facts: INIT-PKRU-TUNABLE ("no sanity check"). Source: arch/x86/mm/pkeys.c
    ``setup_init_pkru``.
    """
    s = System(init_pkru="0x55555556")
    assert s.spawn().rdpkru() == 0x55555556
    assert s.debugfs_read("x86/init_pkru") == "0x55555556\n"


@pytest.mark.parametrize("param", ["hello", "", "0x100000000", "-4", "0x1555555g"])
def test_invalid_boot_parameter_is_ignored(param):
    """A value kstrtouint refuses leaves init_pkru at 0x55555554 (the boot goes on).

    Facts: INIT-PKRU-TUNABLE. Source: arch/x86/mm/pkeys.c ``setup_init_pkru``
    (``if (kstrtouint(opt, 0, &new_init_pkru)) return 1;``).
    """
    s = System(init_pkru=param)
    assert s.spawn().rdpkru() == INIT_PKRU
    assert s.debugfs_read("x86/init_pkru") == "0x55555554\n"


# --- kernel versions -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("6.1", (6, 1)), ("6.12", (6, 12)), ("6.12.117", (6, 12)), ("7.2.13", (7, 2)),
    ((6, 1), (6, 1)), ((7, 2, 13), (7, 2)),
])
def test_kernel_version_parsing(text, expected):
    """``System(kernel=...)`` keeps (major, minor); "6.12" sorts after "6.1"."""
    assert parse_kernel(text) == expected
    assert System(kernel=text).kernel == expected
    assert parse_kernel("6.12") > parse_kernel("6.1")


@pytest.mark.parametrize("text", ["6", "six.one", "", "6.x", "v6.1"])
def test_bad_kernel_version_is_valueerror(text):
    with pytest.raises(ValueError):
        System(kernel=text)


def test_default_kernel_is_the_newest_observed():
    assert System().kernel == (7, 2)


@pytest.mark.parametrize(("kernel", "handler_runs"), [("6.1", False), ("6.11", False),
                                                      ("6.12", True), ("7.2", True)])
def test_kernel_version_selects_the_signal_frame_behaviour(kernel, handler_runs):
    """The version boundary the model uses: the frame is written with every key open from 6.12.

    Facts: SIG-X86-612-PERMISSIVE-XSAVE.
    """
    t = spawn(kernel)
    t.sigaction(SIGSEGV, lambda ctx: ctx.thread.exit_group(17))
    assert t.wrpkru(0x55555556) is None
    end = t.store(t.sp - 8, 0, 8)
    assert (end == Exited(17)) is handler_runs
    assert isinstance(end, Killed) is not handler_runs


def test_pkey_syscalls_are_enosys_before_4_9():
    """SYS-ENOSYS: the three system calls were merged in 4.9; before, they do not exist,
    while glibc's pkey_mprotect(..., -1) still works through mprotect."""
    import errno
    from pkeyspec import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, System, glibc
    t = System(kernel="4.8").spawn()
    for call in (lambda: t.pkey_alloc(0, 0), lambda: t.pkey_free(1),
                 lambda: t.pkey_mprotect(0x400000, PAGE_SIZE, PROT_READ, 0)):
        try:
            call()
        except OSError as e:
            assert e.errno == errno.ENOSYS
        else:
            raise AssertionError("expected ENOSYS")
    buf = t.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    assert glibc.pkey_mprotect(t, buf, PAGE_SIZE, PROT_READ, -1) == 0
    assert System(kernel="4.9").spawn().pkey_alloc(0, 0) == 1
