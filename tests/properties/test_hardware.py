"""Properties of docs/reference/hardware.md: PKRU, what its bits allow, RDPKRU and WRPKRU."""

from hypothesis import assume, given, settings, strategies as st

from pkeyspec import (
    INIT_PKRU_VALUE, PAGE_SIZE, PKRU_AD_BIT, PKRU_HW_INIT, PKRU_WD_BIT, PROT_EXEC, PROT_READ,
    PROT_WRITE, Killed,
)
from pkeyspec.hardware import (
    RDPKRU_BYTES, WRPKRU_BYTES, XFEATURE_PKRU, pkru_rights, pkru_with_rights,
)
from tests.properties import proves
from tests.properties.histories import (
    KERNELS, keyed_page, keys, killed, pkru_values, rights, take_key, worlds,
)

SIGSEGV, SIGILL, SEGV_ACCERR, SEGV_PKUERR, SI_KERNEL, ILL_ILLOPN = 11, 4, 2, 4, 0x80, 2
RWX = PROT_READ | PROT_WRITE | PROT_EXEC


@proves("HW-X86-PKRU-LAYOUT")
@settings(deadline=None, max_examples=60)
@given(worlds(), pkru_values, st.integers(0, 2**64 - 1), keys, rights)
def test_two_pkru_bits_per_key(w, pkru, eax, k, r):
    """PKRU is 32 bits and key k owns bit 2k (AD, 0x1) and bit 2k+1 (WD, 0x2):
    pkru_rights reads exactly those two bits and pkru_with_rights replaces exactly them."""
    assert (PKRU_AD_BIT, PKRU_WD_BIT) == (0x1, 0x2)
    assert pkru_rights(pkru, k) == (pkru >> 2 * k) & 1 | ((pkru >> (2 * k + 1)) & 1) << 1
    new = pkru_with_rights(pkru, k, r)
    assert new >> 2 * k & 3 == r and new & ~(3 << 2 * k) == pkru & ~(3 << 2 * k) and new < 2**32
    t = w.t
    t.wrpkru(eax)
    assert t.rdpkru() == eax % 2**32


@proves("HW-X86-AD-WD-SEMANTICS")
@settings(deadline=None, max_examples=150)
@given(worlds(), keys, pkru_values, st.booleans(), st.sampled_from(["read", "write", "fetch"]))
def test_ad_stops_reads_ad_or_wd_stop_writes_nothing_stops_fetch(w, k, pkru, touched, access):
    """On a read-write-execute page with key k, a read completes iff AD(k) is clear, a
    write iff AD(k) and WD(k) are both clear, and a fetch always; a refusal is SEGV_PKUERR."""
    t = w.t
    assume(take_key(t, k))
    page = keyed_page(t, k, RWX, 1 if touched else None)
    t.wrpkru(pkru)
    ad, wd = pkru >> 2 * k & 1, pkru >> (2 * k + 1) & 1
    if access == "read":
        end, allowed = t.load(page), not ad
    elif access == "write":
        end, allowed = t.store(page, 2), not ad and not wd
    else:
        end, allowed = t.execute(page), True
    assert not isinstance(end, Killed) if allowed else killed(end, SIGSEGV, SEGV_PKUERR)


@proves("HW-X86-DATA-ONLY")
@settings(deadline=None, max_examples=60)
@given(worlds(), keys, pkru_values, st.sampled_from([PROT_EXEC, PROT_READ | PROT_EXEC, RWX]),
       st.integers(0, 255))
def test_a_key_with_ad_lets_code_run_but_not_be_read(w, k, pkru, prot, byte):
    """With AD set for the key of an executable page, populated or not, fetching from the
    page returns its byte, while reading the same byte as data is SEGV_PKUERR."""
    t = w.t
    assume(take_key(t, k))
    page = keyed_page(t, k, RWX)
    if byte:                                    # else the page stays never touched
        t.wrpkru(0)
        t.store(page, byte)
    t.pkey_mprotect(page, PAGE_SIZE, prot, k)
    t.wrpkru(pkru | 1 << 2 * k)
    assert t.execute(page) == byte
    end = t.load(page)
    assert killed(end, SIGSEGV, SEGV_PKUERR) and end.siginfo.si_pkey == k


@proves("INIT-PKRU-VALUE")
@settings(deadline=None, max_examples=40)
@given(worlds(), st.integers(0, 3))
def test_a_new_program_starts_with_0x55555554(w, who):
    """A new program, a fresh one or one that a thread of any history exec'd, starts with
    key 0 open and AD, not WD, for keys 1 to 15: 0x55555554, which is not the XSAVE init 0."""
    expected = sum(1 << 2 * k for k in range(1, 16))
    assert expected == INIT_PKRU_VALUE == 0x55555554 != PKRU_HW_INIT
    assert w.system.spawn().rdpkru() == expected
    assert w.threads[who % len(w.threads)].execve().rdpkru() == expected


@proves("HW-X86-XSAVE-COMPONENT")
@settings(deadline=None, max_examples=40)
@given(worlds(kernels=KERNELS + ("6.12.3", "6.12.5")), pkru_values, pkru_values, st.booleans(),
       keys)
def test_xrstor_of_a_buffer_without_bit_9_loads_0(w, before, written, bit9, k):
    """PKRU is XSAVE component 9: the XRSTOR of sigreturn, from a frame the handler
    wrote, loads the frame's PKRU when XSTATE_BV bit 9 is set and the init value 0, under
    which every key allows reads and writes, when it is clear."""
    assert (XFEATURE_PKRU, PKRU_HW_INIT) == (9, 0)
    t = w.t
    assume(take_key(t, k))
    page = keyed_page(t, k, value=1)

    def handler(ctx):
        bv = ctx.thread.load(ctx.xstate_bv_address, 8)
        ctx.thread.store(ctx.xstate_bv_address, bv & ~(1 << 9) | bit9 << 9, 8)
        ctx.set_frame_pkru(written)

    t.sigaction(10, handler)
    t.wrpkru(before & ~3)                # key 0 open: the frame goes on a key-0 stack
    assert t.raise_signal(10) is None
    assert t.rdpkru() == (written if bit9 else 0)
    if not bit9:
        assert t.store(page, 7) is None and t.load(page) == 7


@proves("HW-X86-INSNS")
@settings(deadline=None, max_examples=100)
@given(worlds(pku=(True, False)), st.integers(0, 3), st.integers(0, 2**64 - 1),
       st.sampled_from([None, "wrpkru ecx", "wrpkru edx", "rdpkru ecx"]),
       st.integers(1, 2**32 - 1), st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3))
def test_rdpkru_and_wrpkru_need_no_system_call(w, who, eax, bad, low, high):
    """WRPKRU (0F 01 EF) sets the calling thread's own PKRU to EAX and RDPKRU (0F 01 EE)
    reads it back, from user code. ECX != 0 (or EDX != 0 for WRPKRU) is #GP, SIGSEGV with
    SI_KERNEL; without CR4.PKE both are #UD, SIGILL with ILL_ILLOPN."""
    assert (RDPKRU_BYTES, WRPKRU_BYTES) == (b"\x0f\x01\xee", b"\x0f\x01\xef")
    t = w.threads[who % len(w.threads)]
    others = [(u, u.pkru) for u in w.threads if u is not t]
    # ECX and EDX are the low halves of RCX and RDX: only the register named by bad has
    # a low half that is not 0.
    rcx, rdx, rcx2 = (h << 32 | (low if bad == name else 0) for h, name in
                      zip(high, ["wrpkru ecx", "wrpkru edx", "rdpkru ecx"]))
    end = t.wrpkru(eax, ecx=rcx, edx=rdx)
    if end is None:
        end = t.rdpkru(ecx=rcx2)
    if not w.system.pku:
        assert killed(end, SIGILL, ILL_ILLOPN)
    elif bad:
        assert killed(end, SIGSEGV, SI_KERNEL) and end.siginfo.si_addr == 0
    else:
        assert end == eax % 2**32
        assert all(u.pkru == pkru for u, pkru in others)
