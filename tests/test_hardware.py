"""The x86 protection-key hardware: PKRU layout, the key in the PTE, the access check.

Expected values are written out literally (PKRU hex values, page-fault
error codes such as 0x25), never computed with the module's own helpers.
"""

import pytest

from pkeyspec import hardware
from pkeyspec.hardware import (
    GeneralProtection, InvalidOpcode, PageFault, Pte, check_user_access, decode_pf_error,
    decode_pkru, pkru_allows, pkru_allows_read, pkru_allows_write, pkru_rights,
    pkru_with_rights, pte_pkey, pte_with_pkey,
)

# --- constants --------------------------------------------------------------


def test_sixteen_keys():
    """The key is a 4-bit PTE field: keys 0..15 (HW-X86-KEYBITS)."""
    assert hardware.NR_PKEYS == 16


def test_pkru_bit_constants():
    """AD is bit 2k (0x1), WD bit 2k+1 (0x2), two bits per key (HW-X86-PKRU-LAYOUT)."""
    assert (hardware.PKRU_AD_BIT, hardware.PKRU_WD_BIT, hardware.PKRU_BITS_PER_PKEY) == (1, 2, 2)


def test_default_init_pkru_is_0x55555554():
    """Linux's init_pkru_value: AD for keys 1..15, key 0 open, no WD bits (INIT-PKRU-VALUE)."""
    assert hardware.INIT_PKRU_VALUE == 0x55555554


def test_xsave_hardware_init_pkru_is_0():
    """The XSAVE init value of PKRU is 0, not Linux's default (HW-X86-XSAVE-COMPONENT, INIT-PKRU-VS-HW-INIT)."""
    assert hardware.PKRU_HW_INIT == 0
    assert hardware.XFEATURE_PKRU == 9


def test_page_fault_error_code_bits():
    """PROT 0x1, WRITE 0x2, USER 0x4, RSVD 0x8, INSTR 0x10, PK 0x20 (HW-X86-PFEC-PK)."""
    assert (hardware.X86_PF_PROT, hardware.X86_PF_WRITE, hardware.X86_PF_USER,
            hardware.X86_PF_RSVD, hardware.X86_PF_INSTR, hardware.X86_PF_PK) == (
        0x1, 0x2, 0x4, 0x8, 0x10, 0x20)


def test_rdpkru_wrpkru_encodings():
    """RDPKRU is 0F 01 EE, WRPKRU is 0F 01 EF (HW-X86-INSNS)."""
    assert hardware.RDPKRU_BYTES == b"\x0f\x01\xee"
    assert hardware.WRPKRU_BYTES == b"\x0f\x01\xef"


# --- PKRU layout -------------------------------------------------------------


@pytest.mark.parametrize("pkey", range(16))
def test_init_pkru_rights_per_key(pkey):
    """In 0x55555554 key 0 has rights 0 and every other key has AD only (INIT-PKRU-VALUE)."""
    assert pkru_rights(0x55555554, pkey) == (0 if pkey == 0 else 1)


@pytest.mark.parametrize("pkey, pkru", [(0, 0x1), (1, 0x4), (2, 0x10), (7, 0x4000), (15, 0x40000000)])
def test_ad_of_key_k_is_bit_2k(pkey, pkru):
    """AD of key k is PKRU bit 2k (HW-X86-PKRU-LAYOUT)."""
    assert pkru_rights(pkru, pkey) == 1
    for other in range(16):
        if other != pkey:
            assert pkru_rights(pkru, other) == 0


@pytest.mark.parametrize("pkey, pkru", [(0, 0x2), (1, 0x8), (2, 0x20), (7, 0x8000), (15, 0x80000000)])
def test_wd_of_key_k_is_bit_2k_plus_1(pkey, pkru):
    """WD of key k is PKRU bit 2k+1 (HW-X86-PKRU-LAYOUT)."""
    assert pkru_rights(pkru, pkey) == 2


def test_rights_of_all_ones_pkru():
    """0xFFFFFFFF gives every key AD|WD = 3."""
    assert [pkru_rights(0xFFFFFFFF, k) for k in range(16)] == [3] * 16


@pytest.mark.parametrize("pkru, pkey, rights, expected", [
    (0x55555554, 1, 0, 0x55555550),
    (0x55555554, 1, 2, 0x55555558),
    (0x55555554, 1, 3, 0x5555555C),
    (0x55555554, 0, 1, 0x55555555),
    (0x55555554, 15, 0, 0x15555554),
    (0x55555554, 15, 2, 0x95555554),
    (0x00000000, 3, 1, 0x00000040),
    (0xFFFFFFFF, 3, 0, 0xFFFFFF3F),
])
def test_pkru_with_rights_replaces_exactly_two_bits(pkru, pkey, rights, expected):
    """Only the two bits of the key change; the result stays 32-bit (HW-X86-PKRU-LAYOUT)."""
    assert pkru_with_rights(pkru, pkey, rights) == expected


def test_pkru_with_rights_of_key2_ad_wd():
    """Setting AD|WD for key 2 in 0x55555554 gives 0x55555574 (bits 4 and 5)."""
    assert pkru_with_rights(0x55555554, 2, 3) == 0x55555574


# --- AD/WD semantics ---------------------------------------------------------


@pytest.mark.parametrize("bits, read, write", [(0, True, True), (1, False, False),
                                               (2, True, False), (3, False, False)])
def test_ad_wd_semantics(bits, read, write):
    """Read iff AD=0; write iff AD=0 and WD=0 (AD disables writes too) (HW-X86-AD-WD-SEMANTICS)."""
    pkru = bits << 10          # key 5
    assert pkru_allows_read(pkru, 5) is read
    assert pkru_allows_write(pkru, 5) is write
    assert pkru_allows(pkru, 5, write=False) is read
    assert pkru_allows(pkru, 5, write=True) is write
    # the other keys stay fully open
    assert pkru_allows_write(pkru, 4) and pkru_allows_write(pkru, 6)


# --- decode_pkru -------------------------------------------------------------


def test_decode_pkru_rows():
    """decode_pkru lists 16 rows, key 0 first, with AD/WD flags and the rights they leave."""
    rows = decode_pkru(0x55555558)
    assert [r.pkey for r in rows] == list(range(16))
    assert (rows[0].ad, rows[0].wd, rows[0].read, rows[0].write) == (False, False, True, True)
    assert (rows[1].ad, rows[1].wd, rows[1].read, rows[1].write) == (False, True, True, False)
    assert (rows[2].ad, rows[2].wd, rows[2].read, rows[2].write) == (True, False, False, False)
    assert str(rows[0]) == "  0  -- --  rw"
    assert str(rows[1]) == "  1  -- WD  r-"
    assert str(rows[2]) == "  2  AD --  --"


def test_decode_pkru_ad_and_wd_row():
    """A key with both bits shows AD WD and no rights."""
    row = decode_pkru(0xC0000000)[15]
    assert (row.ad, row.wd, row.read, row.write) == (True, True, False, False)
    assert str(row) == " 15  AD WD  --"


# --- PTE key bits ------------------------------------------------------------


@pytest.mark.parametrize("pte, pkey", [
    (0, 0),
    (1 << 59, 1),
    (1 << 60, 2),
    (1 << 61, 4),
    (1 << 62, 8),
    (0x7800000000000000, 15),
    (0xF800000000000000, 15),              # NX (bit 63) is not part of the key
    (0x8000000000000000, 0),
    (0x07FFFFFFFFFFFFFF, 0),               # bits 0..58 are not part of the key
])
def test_pte_key_is_bits_59_to_62(pte, pkey):
    """The key sits in PTE bits 59..62 (HW-X86-KEYBITS)."""
    assert pte_pkey(pte) == pkey


@pytest.mark.parametrize("pte, pkey, expected", [
    (0, 5, 0x2800000000000000),
    (0, 15, 0x7800000000000000),
    (0x8000000000000000, 15, 0xF800000000000000),   # NX kept
    (0xF800000000000FFF, 0, 0x8000000000000FFF),    # key cleared, NX and low bits kept
    (0x3800000000000067, 2, 0x1000000000000067),
])
def test_pte_with_pkey_touches_only_bits_59_to_62(pte, pkey, expected):
    """Setting the key replaces bits 59..62 only; NX (63) and the low bits stay (HW-X86-KEYBITS)."""
    assert pte_with_pkey(pte, pkey) == expected


# --- decode_pf_error -----------------------------------------------------------


@pytest.mark.parametrize("err, text", [
    (0x25, "PROT|USER|PK"),
    (0x27, "PROT|WRITE|USER|PK"),
    (0x4, "USER"),
    (0x6, "WRITE|USER"),
    (0x15, "PROT|USER|INSTR"),
    (0x14, "USER|INSTR"),
    (0x7, "PROT|WRITE|USER"),
    (0x8, "RSVD"),
    (0x0, "0"),
    (0x40, "0x40"),
    (0x65, "PROT|USER|PK|0x40"),
])
def test_decode_pf_error(err, text):
    """Page-fault error codes are named bit by bit, in the order of trap_pf.h (HW-X86-PFEC-PK)."""
    assert decode_pf_error(err) == text


# --- check_user_access -------------------------------------------------------

RW_KEY5 = Pte(present=True, writable=True, executable=False, pkey=5)
RO_KEY5 = Pte(present=True, writable=False, executable=False, pkey=5)
RX_KEY5 = Pte(present=True, writable=False, executable=True, pkey=5)
PROTNONE_KEY5 = Pte(present=False, writable=False, executable=False, pkey=5)
AD5 = 0x400      # AD for key 5
WD5 = 0x800      # WD for key 5


def check(pte, pkru, *, write=False, fetch=False, pke=True):
    return check_user_access(pte, pkru, write=write, fetch=fetch, pke=pke)


def test_allowed_read_and_write_complete():
    """An open key and a writable present page: no fault."""
    assert check(RW_KEY5, 0) is None
    assert check(RW_KEY5, 0, write=True) is None


def test_not_present_read_write_fetch_error_codes():
    """No translation: err = USER (0x4), WRITE|USER (0x6), USER|INSTR (0x14), never PROT."""
    assert check(None, 0) == PageFault(0, 0x4)
    assert check(None, 0, write=True) == PageFault(0, 0x6)
    assert check(None, 0, fetch=True) == PageFault(0, 0x14)


def test_key_not_checked_for_not_present_page():
    """The hardware evaluates the key only for a present translation: no PK bit (HW-X86-PK-NEEDS-PRESENT)."""
    assert check(None, 0xFFFFFFFF) == PageFault(0, 0x4)
    assert check(None, 0xFFFFFFFF, write=True) == PageFault(0, 0x6)
    assert check(PROTNONE_KEY5, AD5) == PageFault(0, 0x4)
    assert check(PROTNONE_KEY5, AD5, write=True) == PageFault(0, 0x6)


def test_ad_blocks_read_with_err_0x25():
    """AD + read of a present page: PROT|USER|PK = 0x25 (HW-X86-AD-WD-SEMANTICS, HW-X86-PFEC-PK)."""
    assert check(RW_KEY5, AD5) == PageFault(0, 0x25)


def test_ad_blocks_write_with_err_0x27():
    """AD + write: 0x27 (AD disables writes too) (HW-X86-AD-WD-SEMANTICS)."""
    assert check(RW_KEY5, AD5, write=True) == PageFault(0, 0x27)


def test_wd_allows_read_blocks_write():
    """WD + read succeeds, WD + write faults with 0x27 (HW-X86-AD-WD-SEMANTICS)."""
    assert check(RW_KEY5, WD5) is None
    assert check(RW_KEY5, WD5, write=True) == PageFault(0, 0x27)


def test_other_keys_bits_do_not_matter():
    """Only the page's own key is consulted: AD|WD for every key but 5 still allows key-5 access."""
    assert check(RW_KEY5, 0xFFFFFFFF & ~0xC00, write=True) is None


def test_pk_wins_when_key_and_page_both_deny_a_write():
    """Read-only page, key WD, write: PK bit set, 0x27 (HW-X86-BOTH-VIOLATIONS; observed row e)."""
    assert check(RO_KEY5, WD5, write=True) == PageFault(0, 0x27)
    assert check(RO_KEY5, AD5, write=True) == PageFault(0, 0x27)


def test_write_to_read_only_page_with_open_key_has_no_pk_bit():
    """Read-only page, open key, write: PROT|WRITE|USER = 0x7."""
    assert check(RO_KEY5, 0, write=True) == PageFault(0, 0x7)


def test_fetch_ignores_keys():
    """Instruction fetch is never blocked by a key, AD or WD (HW-X86-DATA-ONLY)."""
    assert check(RX_KEY5, AD5, fetch=True) is None
    assert check(RX_KEY5, 0xFFFFFFFF, fetch=True) is None


def test_fetch_from_non_executable_page_has_no_pk_bit():
    """NX page, key AD: fetch faults with PROT|USER|INSTR = 0x15, no PK (HW-X86-DATA-ONLY)."""
    assert check(RW_KEY5, AD5, fetch=True) == PageFault(0, 0x15)


def test_without_cr4_pke_keys_are_ignored():
    """With CR4.PKE clear the key bits do nothing."""
    assert check(RW_KEY5, 0xFFFFFFFF, pke=False) is None
    assert check(RW_KEY5, 0xFFFFFFFF, write=True, pke=False) is None
    assert check(RO_KEY5, 0xFFFFFFFF, write=True, pke=False) == PageFault(0, 0x7)


def test_key_0_is_checked_like_any_other():
    """Key 0 is a key: AD for key 0 (PKRU bit 0) blocks a key-0 page (HW-X86-PKRU-LAYOUT)."""
    page = Pte(present=True, writable=True, executable=False, pkey=0)
    assert check(page, 0x55555555) == PageFault(0, 0x25)
    assert check(page, 0x55555556) is None
    assert check(page, 0x55555556, write=True) == PageFault(0, 0x27)


def test_exception_records_are_values():
    """The hardware exception records compare by value."""
    assert PageFault(0x1000, 0x25) == PageFault(0x1000, 0x25)
    assert PageFault(0x1000, 0x25) != PageFault(0x1000, 0x27)
    assert GeneralProtection() == GeneralProtection()
    assert InvalidOpcode() == InvalidOpcode()


# --- the helpers' contract ----------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: pkru_rights(0, -1), lambda: pkru_rights(0, 16), lambda: pkru_with_rights(0, -1, 0),
    lambda: pkru_with_rights(0, 2**33, 0), lambda: pkru_with_rights(0, 10**5000, 0),
    lambda: pkru_allows_read(0, 16), lambda: pkru_allows_write(0, -(2**64)),
    lambda: pte_with_pkey(0, 16),
])
def test_a_key_outside_0_to_15_is_a_value_error_at_once(call):
    """A hardware key is a 4-bit PTE field, 0 to 15 (arch/x86/include/asm/pgtable_types.h,
    ``_PAGE_PKEY_MASK``); the kernel's own PKRU helpers (arch/x86/include/asm/pkru.h,
    ``__pkru_allows_read``) are only ever given such keys. The helpers' documented contract:
    ValueError naming the range, at once (before: -1 was a negative-shift ValueError,
    2**33 ran for 30 s, larger keys were MemoryError or OverflowError)."""
    import time
    start = time.process_time()
    with pytest.raises(ValueError, match="a protection key is 0 to 15, not "):
        call()
    assert time.process_time() - start < 0.1


@pytest.mark.parametrize("rights", [-1, 4, 2**64])
def test_rights_outside_0_to_3_are_a_value_error(rights):
    """Two PKRU bits per key (``PKRU_BITS_PER_PKEY``): rights are 0 to 3; before, 4 was silently
    masked to 0."""
    with pytest.raises(ValueError, match="0 to 3"):
        pkru_with_rights(0x55555554, 1, rights)


@pytest.mark.parametrize("bad", [1.5, None, "1", [1]])
def test_non_integers_are_type_errors(bad):
    for call in (lambda: pkru_rights(bad, 0), lambda: pkru_rights(0, bad),
                 lambda: pkru_with_rights(0, 1, bad), lambda: decode_pkru(bad),
                 lambda: decode_pf_error(bad), lambda: pte_pkey(bad)):
        with pytest.raises(TypeError):
            call()


def test_pkru_values_count_by_their_low_32_bits():
    """PKRU is 32 bits wide (WRPKRU loads EAX): a wider int is read by its low 32 bits, and
    pkru_with_rights returns a 32-bit value."""
    assert pkru_with_rights(0xF_5555_5554, 1, 0) == 0x55555550
    assert pkru_rights(-1, 15) == 3
    assert [r.ad for r in decode_pkru(0x1_0000_0001)][:2] == [True, False]


def test_a_pte_is_64_bits_and_a_page_fault_error_code_too():
    """A PTE and the error code the CPU pushes are 64-bit values."""
    assert pte_pkey(2**64 + (5 << 59)) == 5
    assert pte_with_pkey(-1, 0) == 0x87FFFFFFFFFFFFFF
    assert decode_pf_error(2**64 + 0x25) == "PROT|USER|PK"


def test_check_user_access_takes_a_pte_or_none():
    with pytest.raises(TypeError):
        check_user_access(5, 0, write=False, fetch=False, pke=True)
