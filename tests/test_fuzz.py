"""Fuzzing: every public function (tests/fuzz.py, a smoke run), and the Thread API with Hypothesis.

The smoke run is the code of ``make fuzz`` with a few thousand calls and a
fixed seed; the fuzzer itself is tested on planted defects, so that a run
without findings means something.

A system call either returns what the C call returns (a non-negative int)
or raises OSError with one of Linux's errno values; no other exception
escapes, whatever the integers (negative, above 2**64, ...). An instruction
returns its value, None or how the process ended, and never raises; only an
access size x86 does not have is an API misuse (ValueError).
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import inspect
import io
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkeyspec import (
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ, PROT_WRITE, Killed,
    System,
)

PAGE = 4096
SETTINGS = settings(max_examples=150, deadline=None, database=None)

#: Every errno a model system call may raise, per the kernel sources the model follows.
LINUX_ERRNOS = {errno.EINVAL, errno.ENOMEM, errno.EACCES, errno.EBADF, errno.EEXIST,
                errno.EPERM, errno.ENOSPC, errno.EOVERFLOW}

boundaries = st.sampled_from([
    0, 1, -1, 2, 3, 4, 15, 16, 17, PAGE - 1, PAGE, PAGE + 1, 0x10000, 0x7FFFF7FF8000,
    0x7FFFFFFFF000, 0x800000000000, 0xFFFF800000000000, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**32 + 1, 2**63 - 1, 2**63, 2**64 - PAGE, 2**64 - 1, 2**64, 2**64 + 1, 2**65,
    -(2**31), -(2**63), -(2**64), 2**100, -(2**100),
])
ints = st.one_of(boundaries, st.integers(), st.integers(min_value=-(2**70), max_value=2**70))
flags = st.one_of(ints, st.builds(lambda a, b, c: a | b | c,
                                  st.sampled_from([0, MAP_PRIVATE, MAP_SHARED, 3]),
                                  st.sampled_from([0, MAP_ANONYMOUS]),
                                  st.sampled_from([0, MAP_FIXED, 0x100000])))

SYSCALLS = {
    "mmap": st.tuples(ints, ints, ints, flags, ints, ints),
    "munmap": st.tuples(ints, ints),
    "mprotect": st.tuples(ints, ints, ints),
    "pkey_mprotect": st.tuples(ints, ints, ints, ints),
    "madvise": st.tuples(ints, ints, ints),
    "pkey_alloc": st.tuples(ints, ints),
    "pkey_free": st.tuples(ints),
}

calls = st.one_of([st.tuples(st.just(name), args) for name, args in SYSCALLS.items()])


def prepared_thread(pku=True):
    """A thread with something mapped, keyed and touched, so that fuzzed calls meet real VMAs."""
    t = System(pku=pku).spawn()
    a = t.mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    t.store(a, 1)
    if pku:
        k = t.pkey_alloc(0, 0)
        t.pkey_mprotect(a + PAGE, PAGE, PROT_READ, k)
        t.mprotect(a + 2 * PAGE, PAGE, PROT_EXEC)
    return t


def call_syscall(t, name, args):
    """Make the call; only OSError may escape, a success is a non-negative int."""
    try:
        ret = getattr(t, name)(*args)
    except OSError as e:
        # Python picks the subclass from the errno (EPERM is PermissionError, ...);
        # ESRCH would mean the call saw a dead thread, which cannot happen here.
        assert not isinstance(e, ProcessLookupError), f"{name}{args} raised {e!r}"
        assert e.errno in LINUX_ERRNOS, f"{name}{args}: errno {e.errno}"
        return None
    assert type(ret) is int, f"{name}{args} returned {ret!r}"
    assert ret >= 0
    return ret


@pytest.mark.parametrize("name", sorted(SYSCALLS))
@SETTINGS
@given(data=st.data())
def test_syscall_with_arbitrary_integers_only_raises_oserror(name, data):
    """Each syscall method: arbitrary integers give an int >= 0 or an OSError with a Linux errno."""
    t = prepared_thread()
    args = data.draw(SYSCALLS[name])
    call_syscall(t, name, args)
    assert t.alive


@SETTINGS
@given(pku=st.booleans(), seq=st.lists(calls, min_size=1, max_size=12))
def test_syscall_sequences_only_raise_oserror(pku, seq):
    """Sequences of arbitrary calls in one process, with or without PKU: still only OSError."""
    t = prepared_thread(pku)
    for name, args in seq:
        call_syscall(t, name, args)
    assert t.alive


@SETTINGS
@given(pkey=ints)
def test_pkey_free_of_any_integer_is_0_or_einval(pkey):
    """pkey_free(anything): 0 or EINVAL, never another error (SYS-FREE-ERRNO)."""
    t = System().spawn()
    try:
        assert t.pkey_free(pkey) == 0
    except OSError as e:
        assert e.errno == errno.EINVAL


@SETTINGS
@given(flags=ints, rights=ints)
def test_pkey_alloc_of_any_integers_is_key_einval_or_enospc(flags, rights):
    """pkey_alloc(anything): a key 1..15, EINVAL or ENOSPC (ERR-TABLE)."""
    t = System().spawn()
    try:
        assert 1 <= t.pkey_alloc(flags, rights) <= 15
    except OSError as e:
        assert e.errno in (errno.EINVAL, errno.ENOSPC)


# --- instructions ----------------------------------------------------------------------

sizes = st.sampled_from([1, 2, 4, 8])


def check_end(t, result):
    if isinstance(result, Killed):
        assert not t.alive
        assert result.signo in (4, 11)
    else:
        assert t.alive


@SETTINGS
@given(addr=ints, size=sizes, pku=st.booleans())
def test_load_of_any_address_never_raises(addr, size, pku):
    """load(anything): an int of the right width or Killed."""
    t = prepared_thread(pku)
    result = t.load(addr, size)
    assert isinstance(result, Killed) or (type(result) is int and 0 <= result < 1 << (8 * size))
    check_end(t, result)


@SETTINGS
@given(addr=ints, value=ints, size=sizes, pku=st.booleans())
def test_store_of_any_address_and_value_never_raises(addr, value, size, pku):
    """store(anything, anything): None or Killed."""
    t = prepared_thread(pku)
    result = t.store(addr, value, size)
    assert result is None or isinstance(result, Killed)
    check_end(t, result)


@SETTINGS
@given(addr=ints, pku=st.booleans())
def test_execute_of_any_address_never_raises(addr, pku):
    """execute(anything): a byte or Killed."""
    t = prepared_thread(pku)
    result = t.execute(addr)
    assert isinstance(result, Killed) or (type(result) is int and 0 <= result < 256)
    check_end(t, result)


@SETTINGS
@given(eax=ints, ecx=ints, edx=ints, pku=st.booleans())
def test_wrpkru_rdpkru_of_any_registers_never_raise(eax, ecx, edx, pku):
    """WRPKRU/RDPKRU with any register values: None / a 32-bit PKRU, or Killed."""
    t = prepared_thread(pku)
    result = t.wrpkru(eax, ecx, edx)
    assert result is None or isinstance(result, Killed)
    check_end(t, result)
    if t.alive:
        value = t.rdpkru(ecx)
        assert isinstance(value, Killed) or (type(value) is int and 0 <= value <= 0xFFFFFFFF)
        check_end(t, value)


@SETTINGS
@given(addr=ints)
def test_smaps_pkey_of_any_address(addr):
    """smaps_pkey(anything): a key 0..15 or None."""
    t = prepared_thread()
    key = t.smaps_pkey(addr)
    assert key is None or 0 <= key <= 15


@SETTINGS
@given(size=st.integers().filter(lambda n: n not in (1, 2, 4, 8)), addr=ints)
def test_invalid_access_size_is_value_error(size, addr):
    """A load or store of a size x86 cannot do is an API misuse: ValueError, and the process lives on."""
    t = prepared_thread()
    with pytest.raises(ValueError):
        t.load(addr, size)
    with pytest.raises(ValueError):
        t.store(addr, 0, size)
    assert t.alive


# --- tests/fuzz.py: the smoke run, and the fuzzer on planted defects -----------------------

from pkeyspec import cabi  # noqa: E402
from tests import fuzz  # noqa: E402


def test_smoke_run_of_make_fuzz_finds_no_disallowed_outcome():
    """A few thousand calls of every function, method and constructor: no disallowed outcome."""
    f = fuzz.Fuzzer(seed=20240601)
    f.run(15000)
    out = io.StringIO()
    status = fuzz.report(f, out)
    assert status == 0, out.getvalue()
    assert f.calls >= 15000
    assert f.outcomes["return"] > 5000 and f.outcomes["TypeError"] > 100


def _planted(func) -> fuzz.Target:
    params = list(inspect.signature(func).parameters.values())
    return fuzz.Target(f"planted.{func.__name__}", func, None, params, False, 1.0)


def planted_accepts(x: int):
    return x                                    # no conversion: a float is accepted


def planted_crashes(x: int):
    if cabi.index(x) == 3:
        raise KeyError(x)
    return 0


def planted_sloppy(x: int):
    return x + 1                                # a TypeError, but not one the model raises


def planted_errno(x: int):
    cabi.index(x)
    raise OSError(9999, "not an errno of Linux")


@pytest.mark.parametrize(("func", "kind"), [
    (planted_accepts, "wrong type accepted"), (planted_crashes, "KeyError"),
    (planted_sloppy, "TypeError not raised by the model itself"),
    (planted_errno, "OSError without a Linux errno"),
])
def test_the_fuzzer_reports_a_planted_defect(func, kind):
    """Each kind of disallowed outcome is caught and reported with the call that shows it."""
    spawn = next(t for t in fuzz.targets() if t.name == "System.spawn")
    f = fuzz.Fuzzer(seed=1, targets_=[spawn, _planted(func)])
    f.run(3000)
    assert (kind, f"planted.{func.__name__}") in f.defects, f.defects.keys()
    defect = f.defects[(kind, f"planted.{func.__name__}")][0]
    assert f"planted.{func.__name__}(" in defect.lines[-1]


def test_a_reproducer_is_minimal_and_runs(monkeypatch):
    """A defect in a model function is reported with the few lines that still show it."""
    import pkeyspec.hardware
    real = pkeyspec.hardware.decode_pf_error

    def broken(err: int) -> str:
        if cabi.ulong(err) == 0x25:
            raise KeyError("planted")
        return real(err)

    monkeypatch.setattr(pkeyspec.hardware, "decode_pf_error", broken)
    spawn = next(t for t in fuzz.targets() if t.name == "System.spawn")
    mmap = next(t for t in fuzz.targets() if t.name == "Thread.mmap")
    target = fuzz.Target("pkeyspec.hardware.decode_pf_error", broken, None,
                         list(inspect.signature(broken).parameters.values()), False, 1.0)
    f = fuzz.Fuzzer(seed=3, targets_=[spawn, mmap, target])
    f.run(3000)
    defect = f.defects[("KeyError", "pkeyspec.hardware.decode_pf_error")][0]
    lines = fuzz.minimize(defect)
    assert len(lines) == 2 and lines[0].startswith("s = System(")
    assert lines[-1].endswith("pkeyspec.hardware.decode_pf_error(37))")
    exc, _, _ = fuzz.replay(lines)
    assert isinstance(exc, KeyError)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_slow_call_is_reported_when_it_is_slow_again_on_replay(monkeypatch):
    """Over 100 ms of CPU is a defect if replaying the history shows it again; a call that was
    slow once only (a garbage collection, the load) is counted apart."""
    import pkeyspec.cli
    import pkeyspec.hardware
    decode, expected = pkeyspec.hardware.decode_pf_error, pkeyspec.cli.expected_si_code
    once = []

    def always_slow(err: int) -> str:
        if cabi.ulong(err) == 0x25:
            _burn(0.12)
        return decode(err)

    def slow_once(err: int):
        if not once:
            once.append(err)
            _burn(0.12)
        return expected(err)

    monkeypatch.setattr(pkeyspec.hardware, "decode_pf_error", always_slow)
    monkeypatch.setattr(pkeyspec.cli, "expected_si_code", slow_once)
    spawn = next(t for t in fuzz.targets() if t.name == "System.spawn")
    planted = [fuzz.Target(name, func, None, list(inspect.signature(func).parameters.values()),
                           False, 1.0)
               for name, func in (("pkeyspec.hardware.decode_pf_error", always_slow),
                                  ("pkeyspec.cli.expected_si_code", slow_once))]
    f = fuzz.Fuzzer(seed=5, targets_=[spawn, *planted])
    f.run(400)
    defect = f.defects[("slow", "pkeyspec.hardware.decode_pf_error")][0]
    assert defect.lines[-1].endswith("(37)")
    assert ("slow", "pkeyspec.cli.expected_si_code") not in f.defects
    assert f.outcomes["slow once, not on replay"] == 1


def test_every_public_function_and_method_is_a_target():
    """Found by introspection: each public function of each fuzzed module, each public method of
    System, Process, Thread and SignalContext, minus the listed exclusions."""
    names = {t.name for t in fuzz.targets()}
    for module in ("hardware", "glibc", "rfc", "keys", "mm", "access", "uaccess", "signals",
                   "execute_only", "system", "cabi", "cli", "pictures", "explore", "conformance"):
        mod = importlib.import_module(f"pkeyspec.{module}")
        for name, obj in vars(mod).items():
            qual = f"pkeyspec.{module}.{name}"
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__ and \
                    not name.startswith("_") and qual not in fuzz.EXCLUDED:
                assert qual in names, qual
    for cls in fuzz.METHOD_OWNERS:
        for name, member in vars(cls).items():
            qual = f"{cls.__name__}.{name}"
            if inspect.isfunction(member) and not name.startswith("_") and \
                    qual not in fuzz.EXCLUDED:
                assert qual in names
    for name in ("pkeyspec.system.System", "pkeyspec.signals.Siginfo", "pkeyspec.signals.Killed"):
        assert name in names


def test_every_exclusion_names_something_that_exists_and_says_why():
    for qual, why in {**fuzz.EXCLUDED, **fuzz.TYPED}.items():
        assert why
        if qual.startswith("pkeyspec."):
            module, _, name = qual.rpartition(".")
            try:
                mod = importlib.import_module(qual)
            except ImportError:
                mod = importlib.import_module(module)
                assert hasattr(mod, name), qual
        else:
            cls, name = qual.split(".")
            assert hasattr(getattr(fuzz, cls), name), qual
    for module in fuzz.EXCLUDED_MODULES:
        assert importlib.util.find_spec(module) is not None, module
