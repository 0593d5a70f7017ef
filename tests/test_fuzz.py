"""Fuzzing the Thread API with arbitrary integers.

A system call either returns what the C call returns (a non-negative int)
or raises OSError with one of Linux's errno values; no other exception
escapes, whatever the integers (negative, above 2**64, ...). An instruction
returns its value, None or how the process ended, and never raises; only an
access size x86 does not have is an API misuse (ValueError).
"""

import errno

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
