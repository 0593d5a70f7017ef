"""The machine: kernel versions, CPU flags, init_pkru, copy() and state()."""

import errno

import pytest

from tests.helpers import err_of
from pkeyspec import MAP_ANONYMOUS, MAP_PRIVATE, PKEY_DISABLE_ACCESS, PROT_EXEC, PROT_READ, PROT_WRITE, System

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


# --- kernel versions ------------------------------------------------------------------


def test_default_kernel_is_7_2():
    """The default is the newest observed kernel, 7.2 (linux-observed.md)."""
    assert System().kernel == (7, 2)


@pytest.mark.parametrize("text, version", [
    ("6.1", (6, 1)), ("6.12", (6, 12)), ("7.2", (7, 2)),
    ("6.1.192", (6, 1)), ("6.12.117", (6, 12)), ("7.2.13", (7, 2)), ("5.4", (5, 4)),
    ((6, 12), (6, 12)), ((6, 1, 192), (6, 1)),
])
def test_kernel_version_parsing(text, version):
    """'6.12.117' is (6, 12): extra components are ignored; tuples are accepted."""
    assert System(kernel=text).kernel == version


def test_kernel_versions_compare_numerically():
    """6.12 is newer than 6.9 (tuples, not strings)."""
    assert System(kernel="6.12").kernel > System(kernel="6.9").kernel


@pytest.mark.parametrize("text", ["6", "", "abc", "6.x", "x.1", "six.twelve", ".12"])
def test_bad_kernel_version_is_value_error(text):
    """A version that is not MAJOR.MINOR[...] is refused with ValueError."""
    with pytest.raises(ValueError):
        System(kernel=text)


@pytest.mark.parametrize("kernel, first", [("6.8", 0x7FFFF7FFE000), ("6.9", 0x7FFFF7FF8000),
                                           ("6.1", 0x7FFFF7FFE000), ("6.12", 0x7FFFF7FF8000)])
def test_vdso_moves_into_mmap_area_in_6_9(kernel, first):
    """Since 6.9 (commit 3c6539b4c177) [vvar]/[vdso] sit below mmap_base, so the first mmap lands lower (kernel notes §6)."""
    t = System(kernel=kernel).spawn()
    assert t.mmap(0, PAGE, RW, ANON) == first


# --- CPU ----------------------------------------------------------------------------


def test_cpuinfo_flags_with_pku():
    """/proc/cpuinfo shows pku and ospke (HW-X86-ENUM; observed a)."""
    assert System(pku=True).cpuinfo_flags() == ["pku", "ospke"]


def test_cpuinfo_flags_without_pku():
    """A CPU without PKU (qemu64) shows neither flag (HW-X86-ENUM; observed z)."""
    assert System(pku=False).cpuinfo_flags() == []


def test_default_cpu_has_pku():
    """The default machine is -cpu max: PKU present and enabled."""
    s = System()
    assert s.pku and s.ospke


# --- init_pkru ------------------------------------------------------------------------


def test_spawned_main_thread_starts_with_0x55555554():
    """Initial PKRU of the main thread: 0x55555554 (INIT-PKRU-VALUE; observed a)."""
    assert System().spawn().pkru == 0x55555554


def test_init_pkru_boot_parameter():
    """init_pkru=0x15555554 at boot: the main process starts with it (INIT-PKRU-TUNABLE; observed p)."""
    assert System(init_pkru=0x15555554).spawn().pkru == 0x15555554


def test_init_pkru_boot_parameter_has_no_key0_check():
    """The boot parameter is not sanity-checked: key-0 bits are accepted (INIT-PKRU-TUNABLE, kernel notes §2)."""
    t = System(init_pkru=0x55555555).spawn()
    assert t.pkru == 0x55555555


def test_init_pkru_boot_parameter_too_large_is_ignored():
    """init_pkru=0x100000000 does not fit kstrtouint: setup_init_pkru ignores it, default 0x55555554 stays (kernel notes §2)."""
    assert System(init_pkru=0x100000000).spawn().pkru == 0x55555554


def test_debugfs_init_pkru_reads_hex():
    """debugfs x86/init_pkru reads '0x55555554\\n' (INIT-PKRU-TUNABLE; observed p)."""
    assert System().debugfs_read("x86/init_pkru") == "0x55555554\n"


@pytest.mark.parametrize("text", ["0x55555555", "0x2", "hello"])
def test_debugfs_init_pkru_rejects_key0_bits_and_garbage(text):
    """Writes of 0x55555555, 0x2 (key-0 bits) and 'hello': EINVAL (INIT-PKRU-TUNABLE; observed p)."""
    s = System()
    with pytest.raises(OSError) as info:
        s.debugfs_write("x86/init_pkru", text)
    assert info.value.errno == errno.EINVAL
    assert s.debugfs_read("x86/init_pkru") == "0x55555554\n"


def test_debugfs_init_pkru_write_affects_new_programs_only():
    """A new init_pkru applies to contexts created afterwards, not to running threads (INIT-PKRU-TUNABLE)."""
    s = System()
    old = s.spawn()
    s.debugfs_write("x86/init_pkru", "0x15555554\n")
    assert s.debugfs_read("x86/init_pkru") == "0x15555554\n"
    assert old.pkru == 0x55555554
    assert s.spawn().pkru == 0x15555554


def test_debugfs_init_pkru_absent_without_pku():
    """Without OSPKE the debugfs file is not created (INIT-PKRU-TUNABLE)."""
    with pytest.raises(FileNotFoundError):
        System(pku=False).debugfs_read("x86/init_pkru")


# --- processes ------------------------------------------------------------------------


def test_spawn_and_fork_register_processes():
    """Each spawn and fork makes a new process with a new pid."""
    s = System()
    t = s.spawn()
    u = s.spawn()
    c = t.fork()
    pids = {t.process.pid, u.process.pid, c.process.pid}
    assert len(pids) == 3
    assert set(s.processes) == pids


def test_spawned_processes_have_separate_address_spaces():
    """Two programs do not share memory or keys."""
    s = System()
    t, u = s.spawn(), s.spawn()
    t.store(0x402000, 1)
    assert t.pkey_alloc(0, 0) == 1
    assert u.load(0x402000) == 0
    assert u.pkey_alloc(0, 0) == 1


# --- copy() and state() ------------------------------------------------------------------


def history(s):
    t = s.spawn()
    k = t.pkey_alloc(0, PKEY_DISABLE_ACCESS)
    a = t.mmap(0, 2 * PAGE, RW, ANON)
    t.store(a, 0x11)
    t.pkey_mprotect(a + PAGE, PAGE, RW, k)
    t.mmap(0, PAGE, PROT_EXEC, ANON)
    c = t.fork()
    c.wrpkru(0)
    return t, a


def test_equal_histories_give_equal_states():
    """Two systems with the same history have equal, hashable states."""
    s1, s2 = System(), System()
    history(s1)
    history(s2)
    assert s1.state() == s2.state()
    assert hash(s1.state()) == hash(s2.state())


@pytest.mark.parametrize("change", [
    lambda t, a: t.store(a, 0x12),
    lambda t, a: t.wrpkru(0x55555550),
    lambda t, a: t.pkey_alloc(0, 0),
    lambda t, a: t.pkey_free(1),
    lambda t, a: t.mprotect(a, PAGE, PROT_READ),
    lambda t, a: t.munmap(a, PAGE),
    lambda t, a: t.load(0x400000),           # a never-touched page: a PTE appears
    lambda t, a: t.load(a + PAGE),           # key AD: the process is killed
    lambda t, a: t.clone(),
    lambda t, a: t.exit_group(0),
], ids=["store", "wrpkru", "pkey_alloc", "pkey_free", "mprotect", "munmap", "fault-in",
        "killed", "clone", "exit"])
def test_state_differs_after_a_change(change):
    """state() changes when memory, PTEs, PKRU, keys, VMAs, threads or the process's end change."""
    s1, s2 = System(), System()
    history(s1)
    t, a = history(s2)
    before = s2.state()
    assert before == s1.state()
    change(t, a)
    assert s2.state() != before


def test_state_unchanged_by_a_pure_read():
    """A load of an already-present page changes nothing."""
    s = System()
    t, a = history(s)
    before = s.state()
    assert t.load(a) == 0x11
    assert s.state() == before


def test_copy_is_independent():
    """Changes in a copy do not reach the original, and the copy starts with an equal state."""
    s = System()
    t, a = history(s)
    c = s.copy()
    assert c.state() == s.state()
    ct = c.processes[t.process.pid].threads[0]
    assert ct is not t
    ct.store(a, 0x99)
    ct.wrpkru(0)
    assert ct.pkey_alloc(0, 0) == 3         # 1 is a user key, 2 the exec-only key
    assert t.load(a) == 0x11
    assert t.pkru == 0x55555554
    assert t.pkey_alloc(0, 0) == 3
    assert ct.load(a) == 0x99


def test_copy_keeps_kernel_and_cpu():
    """A copy models the same machine."""
    s = System(pku=False, kernel="6.1", init_pkru=0x15555554)
    c = s.copy()
    assert (c.pku, c.kernel, c.init_pkru_value) == (False, (6, 1), 0x15555554)


def test_copy_of_killed_process_stays_killed():
    """A dead process is dead in the copy too, and its threads raise ESRCH there."""
    s = System()
    t = s.spawn()
    end = t.load(0)
    c = s.copy()
    ct = c.processes[t.process.pid].threads[0]
    assert ct.process.end == end
    with pytest.raises(ProcessLookupError):
        ct.load(0x402000)


def test_copy_shares_nothing_with_original_shared_memory():
    """MAP_SHARED memory of a copy is the copy's own: writes do not reach the original system."""
    s = System()
    t = s.spawn()
    a = t.mmap(0, PAGE, RW, MAP_ANONYMOUS | 0x01)
    c = s.copy()
    c.processes[t.process.pid].threads[0].store(a, 5)
    assert t.load(a) == 0


# --- the constructor's contract ----------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"kernel": ()}, {"kernel": (6,)}, {"kernel": "6"}, {"kernel": "x.y"}, {"cpu_vendor": "arm"},
])
def test_bad_values_are_value_errors_at_once(kwargs):
    """A kernel version without two numbers, or an unknown CPU vendor: ValueError, documented in
    System's docstring (before: ``kernel=()`` was an IndexError)."""
    with pytest.raises(ValueError):
        System(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"kernel": ("6", "12")}, {"kernel": 6.12}, {"kernel": None}, {"init_pkru": 1.5},
    {"init_pkru": None}, {"init_pkru": b"0x0"}, {"pku": "yes"}, {"pku": None},
    {"cpu_vendor": None},
])
def test_wrong_types_are_type_errors_at_once(kwargs):
    """An argument of the wrong type is a TypeError from the constructor itself (before:
    ``init_pkru=1.5`` was accepted and failed in a later call)."""
    with pytest.raises(TypeError):
        System(**kwargs)


def test_init_pkru_boot_parameter_as_a_string_is_parsed_like_the_kernel():
    """``init_pkru=`` is parsed with kstrtouint; a string it refuses (not a number, more than
    32 bits, even 5000 digits long) leaves the default (arch/x86/mm/pkeys.c ``setup_init_pkru``)."""
    assert System(init_pkru="0x15555554").init_pkru_value == 0x15555554
    for text in ("hello", "0x100000000", "1" * 5000, ""):
        assert System(init_pkru=text).init_pkru_value == 0x55555554


@pytest.mark.parametrize(("path", "data"), [("x86/init_pkru", []), ("x86/init_pkru", None),
                                            (None, "0x0"), (b"x86/init_pkru", "0x0")])
def test_debugfs_write_of_a_wrong_type_is_a_type_error(path, data):
    """debugfs_write(path, []) was an AttributeError; a path is a str, the data a str or bytes."""
    s = System()
    with pytest.raises(TypeError):
        s.debugfs_write(path, data)
    assert s.init_pkru_value == 0x55555554


def test_debugfs_write_counts_bytes_and_parses_31_of_them():
    """``init_pkru_write_file`` copies at most 31 bytes, reads them as a C string, and returns
    the whole count written, in bytes (arch/x86/mm/pkeys.c)."""
    s = System()
    assert s.debugfs_write("x86/init_pkru", b"0x55555550") == 10
    assert s.debugfs_write("x86/init_pkru", "0x55555554\0\u00e9") == 13
    assert s.init_pkru_value == 0x55555554
    text = "0x" + "0" * 21 + "15555554"            # 31 bytes; what follows is not read
    assert s.debugfs_write("x86/init_pkru", text + "zzz") == 34
    assert s.init_pkru_value == 0x15555554
    assert err_of(s.debugfs_write, "x86/init_pkru", "0x15555554" + " " * 40) == errno.EINVAL
