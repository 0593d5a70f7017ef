"""C argument conversion: what SYSCALL_DEFINE's casts do to a 64-bit register value."""

import fractions
import decimal

import pytest

from pkeyspec import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, System
from pkeyspec.cabi import int32, uint32, ulong


@pytest.mark.parametrize("value, expected", [
    (0, 0),
    (1, 1),
    (-1, 0xFFFFFFFFFFFFFFFF),
    (-4096, 0xFFFFFFFFFFFFF000),
    (2**64, 0),
    (2**64 + 5, 5),
    (2**64 - 1, 0xFFFFFFFFFFFFFFFF),
    (2**65 + 0x1000, 0x1000),
    (-(2**64) - 1, 0xFFFFFFFFFFFFFFFF),
    (True, 1),
])
def test_ulong_is_value_mod_2_64(value, expected):
    """unsigned long / size_t: the register value modulo 2**64 (SYS-SIGNATURES)."""
    assert ulong(value) == expected


@pytest.mark.parametrize("value, expected", [
    (0, 0),
    (15, 15),
    (-1, -1),
    (2**31 - 1, 2147483647),
    (2**31, -2147483648),
    (0xFFFFFFFF, -1),
    (2**32, 0),
    (2**32 + 1, 1),
    (2**64 - 1, -1),
    (2**64 + 16, 16),
    (-(2**31) - 1, 2147483647),
])
def test_int32_wraps_to_signed_32_bits(value, expected):
    """int: the low 32 bits as two's complement, as pkey_free(int pkey) reads them (SYS-SIGNATURES)."""
    assert int32(value) == expected


@pytest.mark.parametrize("value, expected", [
    (0, 0), (-1, 0xFFFFFFFF), (2**32, 0), (2**32 + 7, 7), (0x80000000, 0x80000000),
])
def test_uint32_is_low_32_bits(value, expected):
    """unsigned int: the low 32 bits."""
    assert uint32(value) == expected


class Index:
    """An object with __index__ is an integer for C conversion purposes."""

    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


def test_objects_with_index_are_accepted():
    """operator.index semantics: an __index__ object converts like the int it stands for."""
    assert ulong(Index(-1)) == 0xFFFFFFFFFFFFFFFF
    assert int32(Index(2**32 + 3)) == 3


@pytest.mark.parametrize("bad", [1.0, 0.5, "1", b"\x01", None, [1],
                                 decimal.Decimal(1), fractions.Fraction(1, 1), 1j])
@pytest.mark.parametrize("conv", [ulong, int32, uint32])
def test_non_integers_raise_type_error(conv, bad):
    """A C compiler would reject a non-integer argument: TypeError, not a silent conversion."""
    with pytest.raises(TypeError):
        conv(bad)


@pytest.mark.parametrize("call", [
    lambda t: t.pkey_alloc(0.0, 0),
    lambda t: t.pkey_alloc(0, 0.0),
    lambda t: t.pkey_free(1.0),
    lambda t: t.pkey_free("1"),
    lambda t: t.mmap(0, 4096.0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS),
    lambda t: t.mprotect(0x400000, 4096, float(PROT_READ)),
    lambda t: t.pkey_mprotect(0x400000, 4096, PROT_READ, 0.0),
    lambda t: t.munmap(None, 4096),
    lambda t: t.madvise(0x400000, 4096, 4.0),
    lambda t: t.load(0x400000 + 0.5),
    lambda t: t.store(0x402000, 1.5),
    lambda t: t.execute(float(0x401000)),
    lambda t: t.wrpkru(0.0),
    lambda t: t.rdpkru(0.0),
    lambda t: t.mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, None),
    lambda t: t.load(0x400000, 1.0),
    lambda t: t.smaps_pkey(None),
    lambda t: t.exit_group(None),
    lambda t: t.clone(stack=[]),
    lambda t: t.sigaction(10, 5),
    lambda t: t.sigaction(10, 0.0),
    lambda t: t.sigaction(10, lambda ctx: None, touches_stack="no"),
    lambda t: t.ptrace(2, 99, 0x400000, None),
    lambda t: t.tgkill(None, 10),
    lambda t: t.kill(1, None),
])
def test_thread_calls_reject_non_integers(call):
    """Every call of a Thread converts its arguments like C and rejects non-integers with
    TypeError at once, before any check that could fail first, so the state is unchanged."""
    t = System().spawn()
    before = t.system.state()
    with pytest.raises(TypeError, match=" is | not "):
        call(t)
    assert t.alive
    assert t.system.state() == before
    t.system.copy()


def test_type_error_names_the_type_and_the_value():
    """The message says what was expected and what came instead."""
    with pytest.raises(TypeError, match=r"^an integer argument is an int, not float: 1\.5$"):
        int32(1.5)


def test_clone_stack_is_a_64_bit_register():
    """clone(stack=2**70 + x) starts the thread with sp = x: the stack pointer is a 64-bit
    register (``unsigned long newsp`` in kernel/fork.c ``SYSCALL_DEFINE5(clone)``)."""
    t = System().spawn()
    u = t.clone(stack=2**70 + 0x7FFFF7FF0000)
    assert u.sp == 0x7FFFF7FF0000
    assert t.system.copy().state() == t.system.state()


def test_exit_status_is_the_low_8_bits_of_a_c_int():
    """exit_group(int error_code): the parent sees (error_code & 0xff) (kernel/exit.c ``do_group_exit``)."""
    t = System().spawn()
    t.exit_group(2**32 + 3)
    assert t.process.end.status == 3


def _t(**kw):
    return System(**kw).spawn()


@pytest.mark.parametrize("call", [
    lambda: __import__("pkeyspec").glibc.pkey_get(None, 1),
    lambda: __import__("pkeyspec").glibc.pkey_set_steps(_t(), None, 0),       # at the call
    lambda: __import__("pkeyspec").rfc.pkey_get("t", 1, 0),
    lambda: __import__("pkeyspec").rfc.pkey_set(_t(), 0, None, 1),            # before EINVAL
    lambda: _t(kernel="4.8").pkey_alloc(0.5, 0),                             # before ENOSYS
    lambda: _t(kernel="4.8").pkey_mprotect(0x400000, 4096, 1, None),
    lambda: _t(pku=False).wrpkru(0, 1.5),                                     # before #UD
    lambda: _t(pku=False).rdpkru("0"),
    lambda: __import__("pkeyspec").pkru_with_rights("x", 99, 0),             # before ValueError
    lambda: System(kernel="x.y", init_pkru=1.5),
    lambda: __import__("pkeyspec.explore").explore.verdict("a", 1),
    lambda: __import__("pkeyspec.pictures").pictures.key_colour(None),
    lambda: __import__("pkeyspec.conformance").conformance.parse_text(None, "f"),
    lambda: __import__("pkeyspec.cli").cli.find_race(1.5),
    lambda: __import__("pkeyspec.signals").signals.valid_signal(object()),
    lambda: __import__("pkeyspec.hardware").hardware.check_user_access(None, "0", write=False,
                                                                        fetch=False, pke=True),
])
def test_a_wrong_type_is_a_type_error_before_any_other_answer(call):
    """A C compiler refuses a wrong type before the call runs: no errno, no ValueError, no
    signal and no quiet acceptance first (each of these answered otherwise before; found by
    tests/fuzz.py)."""
    with pytest.raises(TypeError):
        call()


def test_drawing_and_cli_helpers_take_the_low_32_bits_of_a_pkru_and_any_size():
    from pkeyspec import cli, pictures
    assert cli.format_pkru(2**40 + 0x55555554).startswith("PKRU 0x55555554")
    assert "PKRU = 0x55555554" in pictures.pkru_svg(2**40 + 0x55555554).markup
    assert pictures.human_size(10**5000).startswith("≈2**")
