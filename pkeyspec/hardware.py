"""The x86 protection-key hardware: PKRU, the key in the PTE, and the checks.

This module knows nothing about Linux. It says what the CPU does: which bits
of PKRU belong to which key, what RDPKRU and WRPKRU do with their registers,
which data accesses a PKRU allows, where the key sits in a page-table entry,
and which page-fault error code the CPU reports. The kernel side
(:mod:`pkeyspec.access`) turns these hardware events into Linux signals.

The helpers' contract: a PKRU value is any int, of which the low 32 bits
count (the register is 32 bits wide; WRPKRU takes EAX); a key is 0 to 15 and
rights are 0 to 3 (AD = 1, WD = 2). A key or rights outside those ranges is
a ValueError naming the range, and a value that is not an int is a
TypeError; both are raised at once, whatever the size of the number.
"""

from dataclasses import dataclass

from . import cabi

#: Keys 0..15: the key is a 4-bit field in each PTE (HW-X86-KEYBITS).
NR_PKEYS = 16
PKRU_BITS_PER_PKEY = 2
#: Access-disable: bit 2*k of PKRU (HW-X86-PKRU-LAYOUT).
PKRU_AD_BIT = 0x1
#: Write-disable: bit 2*k+1 of PKRU.
PKRU_WD_BIT = 0x2

#: The XSAVE hardware init value of PKRU: everything allowed (HW-X86-XSAVE-COMPONENT).
PKRU_HW_INIT = 0x0
#: Linux's default ``init_pkru_value``: AD for keys 1..15, key 0 open (INIT-PKRU-VALUE).
INIT_PKRU_VALUE = 0x55555554
#: PKRU is XSAVE state component 9 (XSTATE_BV bit 9).
XFEATURE_PKRU = 9

#: PTE bits 59..62 hold the key (arch/x86/include/asm/pgtable_types.h).
_PAGE_BIT_PKEY_BIT0 = 59
_PAGE_PKEY_MASK = 0xF << _PAGE_BIT_PKEY_BIT0
_PAGE_BIT_NX = 63

# Page-fault error code bits (arch/x86/include/asm/trap_pf.h).
X86_PF_PROT = 1 << 0
X86_PF_WRITE = 1 << 1
X86_PF_USER = 1 << 2
X86_PF_RSVD = 1 << 3
X86_PF_INSTR = 1 << 4
X86_PF_PK = 1 << 5

PF_BIT_NAMES = ((X86_PF_PROT, "PROT"), (X86_PF_WRITE, "WRITE"), (X86_PF_USER, "USER"),
                (X86_PF_RSVD, "RSVD"), (X86_PF_INSTR, "INSTR"), (X86_PF_PK, "PK"))

#: RDPKRU is 0F 01 EE, WRPKRU is 0F 01 EF (HW-X86-INSNS).
RDPKRU_BYTES = bytes((0x0F, 0x01, 0xEE))
WRPKRU_BYTES = bytes((0x0F, 0x01, 0xEF))

U32 = 0xFFFFFFFF


def _number(value: int) -> str:
    """An int for a message: in hex when it is too long to print in decimal."""
    return str(value) if -(1 << 64) < value < 1 << 64 else f"{value:#x}"[:24] + "..."


def checked_pkey(pkey: int) -> int:
    """``pkey`` as a hardware key, 0 to 15; else ValueError (a TypeError if it is no int).

    >>> checked_pkey(15)
    15
    >>> checked_pkey(16)
    Traceback (most recent call last):
    ...
    ValueError: a protection key is 0 to 15, not 16
    """
    pkey = cabi.index(pkey)
    if not 0 <= pkey < NR_PKEYS:
        raise ValueError(f"a protection key is 0 to {NR_PKEYS - 1}, not {_number(pkey)}")
    return pkey


def checked_rights(rights: int) -> int:
    """``rights`` as two PKRU bits, 0 to 3 (AD = 1, WD = 2); else ValueError."""
    rights = cabi.index(rights)
    if not 0 <= rights <= PKRU_AD_BIT | PKRU_WD_BIT:
        raise ValueError(f"the rights of a key are 0 to 3 (AD = 1, WD = 2), not {_number(rights)}")
    return rights


def pkru_rights(pkru: int, pkey: int) -> int:
    """The two bits of ``pkey`` in ``pkru``: 0, AD (1), WD (2) or AD|WD (3).

    >>> pkru_rights(INIT_PKRU_VALUE, 0), pkru_rights(INIT_PKRU_VALUE, 1)
    (0, 1)
    >>> pkru_rights(0, -1)
    Traceback (most recent call last):
    ...
    ValueError: a protection key is 0 to 15, not -1
    """
    pkru = cabi.index(pkru)
    return (pkru >> (checked_pkey(pkey) * PKRU_BITS_PER_PKEY)) & (PKRU_AD_BIT | PKRU_WD_BIT)


def pkru_with_rights(pkru: int, pkey: int, rights: int) -> int:
    """The low 32 bits of ``pkru`` with the two bits of ``pkey`` replaced by ``rights``.

    >>> hex(pkru_with_rights(INIT_PKRU_VALUE, 1, 0))
    '0x55555550'
    >>> pkru_with_rights(0, 2**33, 0)
    Traceback (most recent call last):
    ...
    ValueError: a protection key is 0 to 15, not 8589934592
    """
    pkru, pkey, rights = cabi.index(pkru), cabi.index(pkey), cabi.index(rights)
    shift = checked_pkey(pkey) * PKRU_BITS_PER_PKEY
    rights = checked_rights(rights)
    mask = (PKRU_AD_BIT | PKRU_WD_BIT) << shift
    return (pkru & ~mask & U32) | (rights << shift)


def pkru_allows_read(pkru: int, pkey: int) -> bool:
    """A data read is allowed iff AD is clear (HW-X86-AD-WD-SEMANTICS)."""
    return not pkru_rights(pkru, pkey) & PKRU_AD_BIT


def pkru_allows_write(pkru: int, pkey: int) -> bool:
    """A data write needs AD and WD clear: access-disable disables writes too."""
    return not pkru_rights(pkru, pkey) & (PKRU_AD_BIT | PKRU_WD_BIT)


def pkru_allows(pkru: int, pkey: int, write: bool) -> bool:
    return pkru_allows_write(pkru, pkey) if write else pkru_allows_read(pkru, pkey)


def pte_pkey(pte: int) -> int:
    """The key stored in bits 59..62 of a page-table entry (a 64-bit value).

    >>> pte_pkey(0x3 << 59)
    3
    """
    return (cabi.ulong(pte) & _PAGE_PKEY_MASK) >> _PAGE_BIT_PKEY_BIT0


def pte_with_pkey(pte: int, pkey: int) -> int:
    """The 64-bit ``pte`` with its key field set to ``pkey`` (0 to 15); the NX bit (63) is untouched."""
    pte, pkey = cabi.ulong(pte), cabi.index(pkey)
    return (pte & ~_PAGE_PKEY_MASK) | (checked_pkey(pkey) << _PAGE_BIT_PKEY_BIT0)


@dataclass(frozen=True)
class PkeyRights:
    """One row of a decoded PKRU: the rights one key gives a thread."""

    pkey: int
    ad: bool
    wd: bool

    @property
    def read(self) -> bool:
        return not self.ad

    @property
    def write(self) -> bool:
        return not (self.ad or self.wd)

    def __str__(self) -> str:
        bits = ("AD" if self.ad else "--") + " " + ("WD" if self.wd else "--")
        rights = "rw" if self.write else ("r-" if self.read else "--")
        return f"{self.pkey:>3}  {bits}  {rights}"


def decode_pkru(pkru: int) -> list[PkeyRights]:
    """PKRU as sixteen rows, key 0 first.

    >>> for row in decode_pkru(0x55555558)[:3]: print(row)
      0  -- --  rw
      1  -- WD  r-
      2  AD --  --
    """
    pkru = cabi.index(pkru) & U32
    rows = []
    for pkey in range(NR_PKEYS):
        r = pkru_rights(pkru, pkey)
        rows.append(PkeyRights(pkey, bool(r & PKRU_AD_BIT), bool(r & PKRU_WD_BIT)))
    return rows


def decode_pf_error(err: int) -> str:
    """Name the bits of a page-fault error code, Linux's order.

    >>> decode_pf_error(0x25)
    'PROT|USER|PK'
    >>> decode_pf_error(0x6)
    'WRITE|USER'
    """
    err = cabi.ulong(err)       # the error code the CPU pushes is 64 bits wide
    names = [name for bit, name in PF_BIT_NAMES if err & bit]
    unknown = err & ~sum(bit for bit, _ in PF_BIT_NAMES)
    if unknown:
        names.append(hex(unknown))
    return "|".join(names) or "0"


@dataclass(frozen=True)
class Pte:
    """A present-or-not user PTE as the model keeps it.

    ``present`` is the hardware P bit: a PROT_NONE mapping keeps its page but
    clears P (Linux's ``_PAGE_PROTNONE``), so the CPU faults without looking
    at the key.
    """

    present: bool
    writable: bool
    executable: bool
    pkey: int
    #: A read fault on private anonymous memory maps the shared zero page,
    #: read-only; the first write replaces it (copy on write). Not counted in Rss.
    zero_page: bool = False


# Hardware exceptions, as the CPU raises them; Linux decides what they become.
@dataclass(frozen=True)
class PageFault:
    """#PF: CR2 holds the address, the error code says why."""

    address: int
    error_code: int


@dataclass(frozen=True)
class GeneralProtection:
    """#GP(0), for example RDPKRU with ECX != 0."""


@dataclass(frozen=True)
class InvalidOpcode:
    """#UD, for example RDPKRU or WRPKRU when CR4.PKE is clear."""


def check_user_access(pte: Pte | None, pkru: int, *, write: bool, fetch: bool,
                      pke: bool) -> PageFault | None:
    """What the CPU does for one user-mode access to one page.

    Returns ``None`` when the access completes and a :class:`PageFault` (with
    address 0: the caller knows the address) otherwise. Keys apply to data
    accesses only, never to instruction fetch (HW-X86-DATA-ONLY), and only to
    present translations (HW-X86-PK-NEEDS-PRESENT). When the key and the page
    both deny a write, the PK bit is set (HW-X86-BOTH-VIOLATIONS; observed:
    a PROT_READ page whose key has WD gives err=0x27).
    """
    if pte is not None and not isinstance(pte, Pte):
        raise TypeError(f"a PTE is a Pte or None, not {type(pte).__name__}")
    pkru = cabi.index(pkru)
    err = X86_PF_USER
    if write:
        err |= X86_PF_WRITE
    if fetch:
        err |= X86_PF_INSTR
    if pte is None or not pte.present:
        return PageFault(0, err)
    err |= X86_PF_PROT
    if pke and not fetch and not pkru_allows(pkru, pte.pkey, write):
        return PageFault(0, err | X86_PF_PK)
    if (write and not pte.writable) or (fetch and not pte.executable):
        return PageFault(0, err)
    return None
