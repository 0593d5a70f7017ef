"""A random walk through the model, checked against Linux's rules after every step.

Several processes (spawn, fork) with several threads (clone) make system calls
with mostly valid, sometimes wild integer arguments, and execute loads,
stores, fetches and WRPKRU. The machine keeps its own *shadow* of what Linux
would do, computed from the rules in pkeys-facts.md and the kernel source
(never from the model's helpers):

* the allocation map of each mm: pkey_alloc returns the lowest free key
  (SYS-ALLOC-LOWEST) or ENOSPC, pkey_free clears a key that is allocated and
  is not the execute-only key (SYS-FREE-ERRNO, XO-X86-HIDDEN-KEY), a plain
  PROT_EXEC request takes the lowest free key once (XO-X86-IMPLICIT);
* every thread's PKRU, changed only by that thread's own WRPKRU, pkey_alloc
  (two bits of the returned key: SYS-ALLOC-RIGHTS-CALLER-ONLY) and
  mprotect/mmap(PROT_EXEC) (AD for the execute-only key unless already set:
  XO-X86-PKRU-SHORTCUT); clone and fork copy the creator's PKRU
  (THR-CLONE-INHERITS, FORK-PKRU);
* which processes have died.

Every system call is made with the errno it must fail with computed first,
from the state before the call, by the checks of the kernel function named
in the helper's docstring, in their order; a call either succeeds when no
check fails, or fails with exactly that errno.
"""

import copy
import errno
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pkeyspec import Killed, System

PAGE = 4096
U64 = 2**64
TASK_SIZE = 0x7FFFFFFFF000
MMAP_MIN_ADDR = 0x10000
INIT_PKRU = 0x55555554
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC, PROT_SEM = 0x0, 0x1, 0x2, 0x4, 0x8
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
MAP_FIXED_NOREPLACE = 0x100000
VM_READ, VM_WRITE, VM_EXEC, VM_GROWSDOWN = 0x1, 0x2, 0x4, 0x100
SEGV_PKUERR = 4
#: Where x86-64 starts its top-down search for a free range (mmap_base, no randomisation).
MMAP_BASE = 0x7FFFF7FFF000
MADV_NORMAL, MADV_DONTNEED = 0, 4
#: The other advice values Linux accepts (include/uapi/asm-generic/mman-common.h); the model
#: implements MADV_NORMAL and MADV_DONTNEED only, so these are not drawn.
OTHER_LINUX_ADVICE = set(range(1, 4)) | set(range(8, 26)) | {100, 101, 102, 103}


# --- Linux's arithmetic, written out ------------------------------------------------------

def c_int(v):
    v %= 2**32
    return v - 2**32 if v >= 2**31 else v


def page_align(v):
    return (v + PAGE - 1) // PAGE * PAGE % U64


def free_range_exists(vmas, length):
    """``vm_unmapped_area`` top-down: some gap of ``length`` bytes lies between mmap_min_addr
    and mmap_base."""
    below = MMAP_MIN_ADDR
    for v in sorted(vmas, key=lambda v: v.start):
        if min(v.start, MMAP_BASE) - below >= length:
            return True
        below = max(below, v.end)
    return MMAP_BASE - below >= length


def overlaps(vmas, start, end):
    return any(v.end > start and v.start < end for v in vmas)


def expected_mmap_errno(vmas, addr, length, prot, flags, offset):
    """The errno of an anonymous mmap, or None: arch/x86/kernel/sys_x86_64.c ``sys_mmap``
    (offset), mm/mmap.c ``ksys_mmap_pgoff`` (no file: EBADF) and ``do_mmap`` (length, the
    address, MAP_FIXED_NOREPLACE, the map type), ``security_mmap_addr`` (mmap_min_addr)."""
    addr, length, flags, offset = addr % U64, length % U64, flags % U64, offset % U64
    if offset % PAGE:
        return errno.EINVAL
    if not flags & MAP_ANONYMOUS:
        return errno.EBADF
    if not length:
        return errno.EINVAL
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    length = page_align(length)
    if not length or length > TASK_SIZE:
        return errno.ENOMEM
    if flags & MAP_FIXED:
        if addr > TASK_SIZE - length:
            return errno.ENOMEM
        if addr % PAGE:
            return errno.EINVAL
        if addr < MMAP_MIN_ADDR:
            return errno.EPERM
        if flags & MAP_FIXED_NOREPLACE and overlaps(vmas, addr, addr + length):
            return errno.EEXIST
    elif not free_range_exists(vmas, length):
        return errno.ENOMEM
    if flags & 0xF not in (MAP_SHARED, MAP_PRIVATE):
        return errno.EINVAL
    return None


def expected_munmap_errno(addr, length):
    """mm/vma.c ``do_vmi_munmap``: an unaligned start, a range past TASK_SIZE or a length that
    rounds to 0 is EINVAL; anything else succeeds, mapped or not."""
    addr, length = addr % U64, length % U64
    if addr % PAGE or addr > TASK_SIZE or length > TASK_SIZE - addr:
        return errno.EINVAL
    if not page_align(length):
        return errno.EINVAL
    return None


def expected_madvise_errno(vmas, addr, length, advice):
    """mm/madvise.c ``do_madvise``: unknown advice, an unaligned start, a length that rounds
    to 0 or a range that wraps is EINVAL; an empty range succeeds; a hole is ENOMEM."""
    addr, length = addr % U64, length % U64
    if c_int(advice) not in (MADV_NORMAL, MADV_DONTNEED) or addr % PAGE:
        return errno.EINVAL
    aligned = page_align(length)
    if length and not aligned:
        return errno.EINVAL
    end = (addr + aligned) % U64
    if end < addr:
        return errno.EINVAL
    covered = addr
    for v in sorted(vmas, key=lambda v: v.start):
        if v.end <= covered or v.start >= end:
            continue
        if v.start > covered:
            break
        covered = v.end
    return None if covered >= end else errno.ENOMEM


def expected_mprotect_errno(vmas, start, length, prot, key_ok):
    """mm/mprotect.c ``do_mprotect_pkey``, check for check: both GROWS flags or an unaligned
    start is EINVAL; a zero length succeeds; a range that wraps is ENOMEM; prot bits other
    than READ, WRITE, EXEC, SEM are EINVAL; then (mmap lock held) a key that is not allocated
    is EINVAL; no VMA in the range is ENOMEM; PROT_GROWSDOWN needs a VM_GROWSDOWN first VMA
    (EINVAL), otherwise the first VMA must start at ``start`` (ENOMEM) and PROT_GROWSUP is
    EINVAL (x86 has no VM_GROWSUP). Then VMA by VMA, stopping at the first error: a hole is
    ENOMEM, rights beyond the VMA's VM_MAY* bits EACCES; a range that ends in a hole, ENOMEM."""
    start, length, prot = start % U64, length % U64, prot % U64
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP or start % PAGE:
        return errno.EINVAL
    if not length:
        return None
    end = (start + page_align(length)) % U64
    if end <= start:
        return errno.ENOMEM
    if prot & ~0xF:
        return errno.EINVAL
    if not key_ok:
        return errno.EINVAL
    inside = sorted((v for v in vmas if v.end > start and v.start < end), key=lambda v: v.start)
    if not inside:
        return errno.ENOMEM
    first = inside[0]
    if grows & PROT_GROWSDOWN:
        if not first.flags & VM_GROWSDOWN:
            return errno.EINVAL
    elif first.start > start:
        return errno.ENOMEM
    elif grows & PROT_GROWSUP:
        return errno.EINVAL
    tmp = first.start
    for v in inside:
        if v.start != tmp:
            return errno.ENOMEM
        new = (prot & 0x7) | (v.flags & ~0x7)
        if new & ~(new >> 4) & 0x7:
            return errno.EACCES
        tmp = v.end
    return errno.ENOMEM if tmp < end else None


def with_bits(pkru, key, bits):
    """PKRU with the two bits of ``key`` replaced by ``bits`` (AD = 1, WD = 2)."""
    return (pkru & ~(3 << (2 * key)) & 0xFFFFFFFF) | (bits << (2 * key))


def ad(pkru, key):
    return (pkru >> (2 * key)) & 1


def wd(pkru, key):
    return (pkru >> (2 * key + 1)) & 1


@dataclass
class MmShadow:
    """What Linux keeps in mm->context for keys, plus the history the checks need."""

    allocated: set = field(default_factory=lambda: {0})
    xo: int = -1
    ever_freed: set = field(default_factory=set)
    key0_freed: bool = False
    dead: bool = False

    def free_keys(self):
        return [k for k in range(16) if k not in self.allocated]

    def user_allocated(self, k):
        return 0 <= k < 16 and k in self.allocated and k != self.xo


def execute_only_pkey(shadow, pkru):
    """__execute_only_pkey: returns (key or -1, new PKRU of the caller)."""
    if shadow.xo == -1:
        free = shadow.free_keys()
        if not free:
            return -1, pkru
        k = free[0]
        shadow.allocated.add(k)
        shadow.xo = k
        if k == 0:
            shadow.key0_freed = False
        return k, with_bits(pkru, k, 1)
    k = shadow.xo
    if ad(pkru, k):
        return k, pkru
    return k, with_bits(pkru, k, 1)


# --- argument strategies: mostly valid, sometimes wild -------------------------------------

wild = st.integers(min_value=-(2**66), max_value=2**66)
lengths = st.one_of(st.sampled_from([PAGE, 2 * PAGE, 3 * PAGE, 1, 0, PAGE + 1, 2**40]), wild)
prots = st.one_of(
    st.sampled_from([0, PROT_READ, PROT_READ | PROT_WRITE, PROT_EXEC, PROT_EXEC, PROT_EXEC,
                     PROT_READ | PROT_EXEC, PROT_WRITE, 7, PROT_EXEC | PROT_SEM,
                     PROT_EXEC | PROT_GROWSDOWN, PROT_READ | PROT_GROWSDOWN, 0x1000]),
    wild)
pkeys = st.one_of(st.sampled_from([-1, -1, 0, 1, 2, 3, 15, 16, -2, 2**32 + 1, 2**32 - 1]), wild)
rights = st.one_of(st.sampled_from([0, 1, 2, 3]), st.sampled_from([4, 8, -1, 2**64 + 1]), wild)
flags0 = st.one_of(st.just(0), st.just(0), st.just(0), st.sampled_from([1, 2**64, 2**32]), wild)
map_flags = st.builds(
    lambda typ, anon, fixed: typ | anon | fixed,
    st.sampled_from([MAP_PRIVATE, MAP_PRIVATE, MAP_SHARED, 0, 3]),
    st.sampled_from([MAP_ANONYMOUS, MAP_ANONYMOUS, MAP_ANONYMOUS, 0]),
    st.sampled_from([0, 0, 0, MAP_FIXED, MAP_FIXED_NOREPLACE]))
offsets = st.sampled_from([0, 0, 0, 0, PAGE, 1, 2**64 - PAGE])
picks = st.integers(min_value=0, max_value=10**6)


class PkeysMachine(RuleBasedStateMachine):

    @initialize(kernel=st.sampled_from(["6.1", "6.12", "7.2"]))
    def boot(self, kernel):
        self.system = System(kernel=kernel)
        self.threads = []
        self.pkru = {}          # thread -> expected PKRU
        self.shadow = {}        # process -> MmShadow
        t = self._spawn()
        other = t.clone()
        self.threads.append(other)
        self.pkru[other] = INIT_PKRU

    # --- bookkeeping -------------------------------------------------------------

    def _spawn(self):
        t = self.system.spawn()
        self.threads.append(t)
        self.pkru[t] = INIT_PKRU
        self.shadow[t.process] = MmShadow()
        return t

    def _thread(self, i):
        """Mostly a live thread; sometimes any thread, dead ones included."""
        live = [t for t in self.threads if not self._dead(t)]
        if live and i % 8:
            return live[(i // 8) % len(live)]
        return self.threads[i % len(self.threads)]

    def _dead(self, t):
        return self.shadow[t.process].dead

    def _expect_esrch(self, call):
        with pytest.raises(ProcessLookupError) as info:
            call()
        assert info.value.errno == errno.ESRCH

    def _address(self, data, t, prefer=None):
        """An address inside a VMA most of the time (often one ``prefer`` likes), else anything."""
        vmas = t.process.mm.vmas
        roll = data.draw(st.integers(0, 9))
        if vmas and roll < 9:
            liked = [v for v in vmas if prefer(v)] if prefer else []
            keyed = [v for v in vmas if v.pkey != 0]
            both = [v for v in liked if v.pkey != 0]
            if both and roll < 3:
                v = data.draw(st.sampled_from(both))
            elif liked and roll < 6:
                v = data.draw(st.sampled_from(liked))
            elif keyed and roll < 7:
                v = data.draw(st.sampled_from(keyed))
            else:
                v = data.draw(st.sampled_from(vmas))
            return v.start + data.draw(st.integers(0, min(v.end - v.start, 4 * PAGE) - 1))
        return data.draw(st.one_of(st.sampled_from([0, TASK_SIZE - 1, TASK_SIZE,
                                                    0xFFFF800000000000, 0x30000000]), wild))

    def _key(self, data, t, wild_keys):
        """A key this process has allocated (or -1) most of the time, else anything."""
        sh = self.shadow[t.process]
        if data.draw(st.integers(0, 9)) < 7:
            return data.draw(st.sampled_from(sorted(sh.allocated | {-1})))
        return data.draw(wild_keys)

    def _vma_at(self, t, addr):
        for v in t.process.mm.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    # --- processes and threads -------------------------------------------------------

    @precondition(lambda self: len(self.threads) < 12
                  and sum(not s.dead for s in self.shadow.values()) < 3)
    @rule()
    def spawn(self):
        self._spawn()

    @precondition(lambda self: len(self.threads) < 12)
    @rule(i=picks)
    def clone(self, i):
        t = self._thread(i)
        if self._dead(t):
            self._expect_esrch(t.clone)
            return
        if not free_range_exists(t.process.mm.vmas, 64 * 1024):
            # pthread_create's 64 KiB stack: mmap finds no free range.
            with pytest.raises(OSError) as e:
                t.clone()
            assert e.value.errno == errno.ENOMEM
            return
        new = t.clone()
        self.threads.append(new)
        self.pkru[new] = self.pkru[t]

    @precondition(lambda self: len(self.threads) < 12)
    @rule(i=picks)
    def fork(self, i):
        t = self._thread(i)
        if self._dead(t):
            self._expect_esrch(t.fork)
            return
        child = t.fork()
        self.threads.append(child)
        self.pkru[child] = self.pkru[t]
        self.shadow[child.process] = copy.deepcopy(self.shadow[t.process])

    # --- key syscalls ---------------------------------------------------------------------

    @rule(i=picks, flags=flags0, init=rights)
    def pkey_alloc(self, i, flags, init):
        self._pkey_alloc(self._thread(i), flags, init)

    def _pkey_alloc(self, t, flags, init):
        """pkey_alloc with its expected outcome; returns the key or None."""
        if self._dead(t):
            self._expect_esrch(lambda: t.pkey_alloc(flags, init))
            return None
        sh = self.shadow[t.process]
        if flags % U64 or (init % U64) & ~3:
            with pytest.raises(OSError) as e:
                t.pkey_alloc(flags, init)
            assert e.value.errno == errno.EINVAL            # SYS-ALLOC-CHECK-ORDER
            return None
        if not sh.free_keys():
            with pytest.raises(OSError) as e:
                t.pkey_alloc(flags, init)
            assert e.value.errno == errno.ENOSPC
            return None
        key = t.pkey_alloc(flags, init)
        assert key == sh.free_keys()[0]                     # SYS-ALLOC-LOWEST
        assert key != sh.xo                                 # XO-X86-HIDDEN-KEY
        sh.allocated.add(key)
        if key == 0:
            sh.key0_freed = False
        self.pkru[t] = with_bits(self.pkru[t], key, init % U64)
        return key

    @rule(i=picks, data=st.data())
    def pkey_free(self, i, data):
        t = self._thread(i)
        pkey = self._key(data, t, pkeys)
        if self._dead(t):
            self._expect_esrch(lambda: t.pkey_free(pkey))
            return
        sh = self.shadow[t.process]
        k = c_int(pkey)
        if sh.user_allocated(k):
            assert t.pkey_free(pkey) == 0
            sh.allocated.discard(k)
            sh.ever_freed.add(k)
            if k == 0:
                sh.key0_freed = True
        else:
            with pytest.raises(OSError) as e:
                t.pkey_free(pkey)
            assert e.value.errno == errno.EINVAL

    @precondition(lambda self: any(s.xo != -1 and not s.dead for s in self.shadow.values()))
    @rule(data=st.data())
    def exec_only_key_is_hidden(self, data):
        """The execute-only key: EINVAL for pkey_free and pkey_mprotect (XO-X86-HIDDEN-KEY)."""
        ts = [t for t in self.threads if not self._dead(t) and self.shadow[t.process].xo != -1]
        t = data.draw(st.sampled_from(ts))
        xo = self.shadow[t.process].xo
        with pytest.raises(OSError) as e:
            t.pkey_free(xo)
        assert e.value.errno == errno.EINVAL
        addr = self._address(data, t) // PAGE * PAGE
        prot = data.draw(prots)
        expected = expected_mprotect_errno(t.process.mm.vmas, addr, PAGE, prot, key_ok=False)
        with pytest.raises(OSError) as e:
            t.pkey_mprotect(addr, PAGE, prot, xo)
        # a bad prot or a wrapping range is reported first, else the key: never success
        assert e.value.errno == expected

    # --- memory syscalls -------------------------------------------------------------------

    @rule(i=picks, data=st.data(), length=lengths, prot=prots, flags=map_flags, offset=offsets)
    def mmap(self, i, data, length, prot, flags, offset):
        t = self._thread(i)
        addr = 0 if not flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) else \
            self._address(data, t) // PAGE * PAGE
        self._mmap(t, addr, length, prot, flags, offset)

    def _mmap(self, t, addr, length, prot, flags, offset=0):
        """mmap with its expected effect on keys and PKRU; returns the address or None."""
        if self._dead(t):
            self._expect_esrch(lambda: t.mmap(addr, length, prot, flags, -1, offset))
            return None
        sh = self.shadow[t.process]
        # do_mmap takes the exec-only key after the offset, fd, len and overflow checks
        reaches_xo = (offset % PAGE == 0 and flags & MAP_ANONYMOUS and length % U64 != 0
                      and page_align(length % U64) != 0 and prot % U64 == PROT_EXEC)
        expected = expected_mmap_errno(t.process.mm.vmas, addr, length, prot, flags, offset)
        if reaches_xo:
            _, self.pkru[t] = execute_only_pkey(sh, self.pkru[t])
        if expected is not None:
            with pytest.raises(OSError) as e:
                t.mmap(addr, length, prot, flags, -1, offset)
            assert e.value.errno == expected, (hex(addr), length, prot, flags, offset)
            return None
        a = t.mmap(addr, length, prot, flags, -1, offset)
        assert a % PAGE == 0
        v = self._vma_at(t, a)
        assert v is not None
        if prot % U64 == PROT_EXEC:
            assert v.pkey == (sh.xo if sh.xo != -1 else 0)   # SYS-MMAP-DEFAULT-KEY
        else:
            assert v.pkey == 0
        return a

    @rule(i=picks, data=st.data(), length=lengths)
    def munmap(self, i, data, length):
        t = self._thread(i)
        addr = self._address(data, t) // PAGE * PAGE
        if self._dead(t):
            self._expect_esrch(lambda: t.munmap(addr, length))
            return
        expected = expected_munmap_errno(addr, length)
        if expected is not None:
            with pytest.raises(OSError) as e:
                t.munmap(addr, length)
            assert e.value.errno == expected
            return
        assert t.munmap(addr, length) == 0
        end = addr % U64 + page_align(length % U64)
        assert not overlaps(t.process.mm.vmas, addr % U64, end)

    @rule(i=picks, data=st.data(), length=lengths,
          advice=st.one_of(st.sampled_from([0, 4, 4, 26, 99, -1]),
                           wild.filter(lambda v: c_int(v) not in OTHER_LINUX_ADVICE)))
    def madvise(self, i, data, length, advice):
        """MADV_NORMAL, MADV_DONTNEED and advice Linux does not know (EINVAL)."""
        t = self._thread(i)
        addr = self._address(data, t) // PAGE * PAGE
        if self._dead(t):
            self._expect_esrch(lambda: t.madvise(addr, length, advice))
            return
        expected = expected_madvise_errno(t.process.mm.vmas, addr, length, advice)
        if expected is not None:
            with pytest.raises(OSError) as e:
                t.madvise(addr, length, advice)
            assert e.value.errno == expected
            return
        assert t.madvise(addr, length, advice) == 0

    def _reaches_vma_loop(self, t, start, length, prot, key_ok):
        """Does do_mprotect_pkey get past its checks into the per-VMA loop? (SYS-MPROT-CHECK-ORDER)"""
        start, length, prot = start % U64, length % U64, prot % U64
        grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
        prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
        if grows == PROT_GROWSDOWN | PROT_GROWSUP or start % PAGE or not length:
            return False
        end = (start + page_align(length)) % U64
        if end <= start or prot & ~0xF or not key_ok:
            return False
        first = next((v for v in t.process.mm.vmas if v.end > start and v.start < end), None)
        if first is None:
            return False
        if grows & PROT_GROWSDOWN:
            return bool(first.flags & VM_GROWSDOWN)
        return first.start <= start and not grows & PROT_GROWSUP

    def _start(self, data, t):
        start = self._address(data, t)
        if data.draw(st.integers(0, 9)) < 9:
            start = start // PAGE * PAGE
        return start

    def _mprotect(self, t, start, length, prot, pkey):
        """mprotect (pkey -1) or pkey_mprotect with its expected effect on keys, VMAs and PKRU."""
        if pkey == -1:
            call = t.mprotect
        else:
            def call(a, n, p):
                return t.pkey_mprotect(a, n, p, pkey)
        if self._dead(t):
            self._expect_esrch(lambda: call(start, length, prot))
            return
        sh = self.shadow[t.process]
        k = c_int(pkey)
        key_ok = k == -1 or sh.user_allocated(k)
        before = [(v.start, v.end, v.flags, v.pkey) for v in t.process.mm.vmas]
        reaches = self._reaches_vma_loop(t, start, length, prot, key_ok)
        bare = (prot % U64) & ~(PROT_GROWSDOWN | PROT_GROWSUP)
        xo_key = None
        if reaches and k == -1 and bare == PROT_EXEC:
            xo_key, self.pkru[t] = execute_only_pkey(sh, self.pkru[t])
        expected = expected_mprotect_errno(t.process.mm.vmas, start, length, prot, key_ok)
        if expected is not None:
            with pytest.raises(OSError) as e:
                call(start, length, prot)
            assert e.value.errno == expected
            return
        ret = call(start, length, prot)
        assert ret == 0
        if not reaches:
            assert length % U64 == 0, "mprotect succeeded without reaching its VMA loop"
            return
        if (prot % U64) & (PROT_GROWSDOWN | PROT_GROWSUP):
            return
        # Every changed range has the prot asked for and the key Linux picks
        # (SYS-MPROT-EXPLICIT-WINS, SYS-MPROT-NEG1, XO-X86-IMPLICIT, XO-X86-REVERT).
        end = (start % U64 + page_align(length % U64)) % U64
        want = bare & 0x7
        for (vs, ve, vflags, vkey) in before:
            lo, hi = max(vs, start % U64), min(ve, end)
            if lo >= hi:
                continue
            if k != -1:
                expected = k
            elif bare == PROT_EXEC:
                expected = xo_key if xo_key is not None and xo_key > 0 else vkey
            elif vflags & 0x7 == VM_EXEC and vkey == sh.xo:
                expected = 0
            else:
                expected = vkey
            for w in t.process.mm.vmas:
                if w.end > lo and w.start < hi:
                    assert w.pkey == expected, (w, expected)
                    assert w.flags & 0x7 == want, (w, want)

    @rule(i=picks, data=st.data(), length=lengths, prot=prots)
    def mprotect(self, i, data, length, prot):
        t = self._thread(i)
        self._mprotect(t, self._start(data, t), length, prot, -1)

    @rule(i=picks, data=st.data(), length=lengths, prot=prots)
    def pkey_mprotect(self, i, data, length, prot):
        t = self._thread(i)
        pkey = self._key(data, t, pkeys)
        self._mprotect(t, self._start(data, t), length, prot, pkey)

    # --- composite steps: the same calls, in the orders that make keys matter -------------

    @rule(i=picks, rights=st.sampled_from([0, 1, 2, 3]),
          prot=st.sampled_from([PROT_READ | PROT_WRITE, PROT_READ, PROT_EXEC, PROT_READ | PROT_EXEC,
                                7, PROT_NONE]),
          pages=st.integers(1, 3), fill=st.booleans())
    def keyed_mapping(self, i, rights, prot, pages, fill):
        """mmap RW pages, maybe write them, pkey_alloc(0, rights), pkey_mprotect them with the key."""
        t = self._thread(i)
        a = self._mmap(t, 0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        if a is None:
            return
        if fill:
            self._check_access(t, a, 1, t.store(a, 0xC3), write=True)
            if self._dead(t):
                return
        k = self._pkey_alloc(t, 0, rights)
        if k is not None:
            self._mprotect(t, a, pages * PAGE, prot, k)

    @rule(i=picks, data=st.data())
    def exec_only_request(self, i, data):
        """A plain mprotect(PROT_EXEC) of (part of) an existing mapping (XO-X86-IMPLICIT)."""
        t = self._thread(i)
        start = self._address(data, t, prefer=lambda v: not v.name) // PAGE * PAGE
        self._mprotect(t, start, data.draw(st.sampled_from([PAGE, 2 * PAGE])), PROT_EXEC, -1)

    # --- instructions -----------------------------------------------------------------------

    def _check_access(self, t, addr, size, result, *, write=False, fetch=False):
        pkru = self.pkru[t]
        if isinstance(result, Killed):
            self.shadow[t.process].dead = True
            info = result.siginfo
            if info is not None and info.si_code == SEGV_PKUERR and info.si_signo == 11:
                assert not fetch                               # HW-X86-DATA-ONLY
                v = self._vma_at(t, info.si_addr)
                assert v is not None and v.pkey == info.si_pkey
                denied = ad(pkru, v.pkey) or (write and wd(pkru, v.pkey))
                assert denied, "SEGV_PKUERR although PKRU allows the key"
            return
        for a in {addr % U64, (addr + size - 1) % U64}:
            v = self._vma_at(t, a)
            assert v is not None, "an access to unmapped memory completed"
            if fetch:
                assert v.flags & VM_EXEC
            else:
                assert not ad(pkru, v.pkey), "a read completed under AD"
                if write:
                    assert v.flags & VM_WRITE and not wd(pkru, v.pkey)

    @rule(i=picks, data=st.data(),
          kind=st.sampled_from(["load", "load", "load", "store", "store", "store", "execute",
                                "execute"]),
          size=st.sampled_from([1, 1, 2, 4, 8]), value=wild)
    def access(self, i, data, kind, size, value):
        """One load, store or instruction fetch; the result must agree with PKRU and the VMA."""
        t = self._thread(i)
        flag = {"load": VM_READ, "store": VM_WRITE, "execute": VM_EXEC}[kind]
        addr = self._address(data, t, prefer=lambda v: v.flags & flag)
        call = {"load": lambda: t.load(addr, size),
                "store": lambda: t.store(addr, value, size),
                "execute": lambda: t.execute(addr)}[kind]
        if self._dead(t):
            self._expect_esrch(call)
            return
        result = call()
        if kind == "store":
            assert result is None or isinstance(result, Killed)
        else:
            assert isinstance(result, (int, Killed)) and not isinstance(result, bool)
        self._check_access(t, addr, 1 if kind == "execute" else size, result,
                           write=kind == "store", fetch=kind == "execute")
        if kind == "store" and result is None:
            assert t.load(addr, size) == value % (1 << (8 * size))

    @rule(i=picks,
          eax=st.one_of(st.sampled_from([0, INIT_PKRU, 0x55555550, 0xFFFFFFFF, 0xAAAAAAAA,
                                         0xAAAAAAA8, 0x55555555, 0xFFFFFFFC]),
                        st.integers(0, 2**32 - 1), wild),
          ecx=st.sampled_from([0] * 19 + [1]), edx=st.sampled_from([0] * 19 + [2**32 + 1]))
    def wrpkru(self, i, eax, ecx, edx):
        t = self._thread(i)
        if self._dead(t):
            self._expect_esrch(lambda: t.wrpkru(eax, ecx, edx))
            return
        result = t.wrpkru(eax, ecx, edx)
        if (ecx % 2**32) or (edx % 2**32):
            assert isinstance(result, Killed) and result.siginfo.si_code == 0x80
            self.shadow[t.process].dead = True
        else:
            assert result is None
            self.pkru[t] = eax % 2**32

    @rule(i=picks, data=st.data(), bits=st.sampled_from([0, 1, 2, 3]))
    def pkey_set(self, i, data, bits):
        """glibc pkey_set: RDPKRU, replace the two bits of one key, WRPKRU (GLIBC-X86-SET)."""
        t = self._thread(i)
        if self._dead(t):
            self._expect_esrch(t.rdpkru)
            return
        sh = self.shadow[t.process]
        known = sorted(sh.allocated | {sh.xo} - {-1})
        key = data.draw(st.sampled_from(known) if known and data.draw(st.booleans())
                        else st.integers(0, 15))
        pkru = t.rdpkru()
        assert pkru == self.pkru[t]
        assert t.wrpkru(with_bits(pkru, key, bits)) is None
        self.pkru[t] = with_bits(pkru, key, bits)

    @rule(i=picks)
    def rdpkru(self, i):
        t = self._thread(i)
        if self._dead(t):
            self._expect_esrch(t.rdpkru)
            return
        assert t.rdpkru() == self.pkru[t]

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def processes_die_only_from_their_own_faults(self):
        for proc, sh in self.shadow.items():
            assert (proc.end is not None) == sh.dead, proc

    @invariant()
    def pkru_changes_only_by_own_actions(self):
        """Every live thread's PKRU is what its own actions made it (HW-X86-THREAD-LOCAL, THR-NO-REMOTE-SET)."""
        for t in self.threads:
            if not self._dead(t):
                assert t.pkru == self.pkru[t], t

    @invariant()
    def allocation_map_follows_linux(self):
        """The model's map and execute-only key equal the shadow's (SYS-KEY0-PREALLOCATED, SYS-FREE-KEY0, XO-X86-*)."""
        for proc, sh in self.shadow.items():
            mm = proc.mm
            assert mm.pkey_allocation_map == sum(1 << k for k in sh.allocated), proc
            assert mm.execute_only_pkey == sh.xo
            assert bool(mm.pkey_allocation_map & 1) == (not sh.key0_freed), proc

    @invariant()
    def vmas_are_well_formed(self):
        """VMAs are sorted, non-overlapping, page aligned, non-empty, inside the user address space."""
        for proc in self.shadow:
            prev_end = 0
            for v in proc.mm.vmas:
                assert v.start % PAGE == 0 and v.end % PAGE == 0, v
                assert v.start < v.end, v
                assert v.start >= prev_end, v
                assert MMAP_MIN_ADDR <= v.start and v.end <= TASK_SIZE, v
                prev_end = v.end

    @invariant()
    def vma_keys_are_accounted_for(self):
        """Every VMA's key is allocated, was freed earlier, or is the execute-only key (SYS-FREE-NO-INUSE-CHECK)."""
        for proc, sh in self.shadow.items():
            for v in proc.mm.vmas:
                assert v.pkey in sh.allocated or v.pkey in sh.ever_freed or v.pkey == sh.xo, v

    @invariant()
    def ptes_and_bytes_only_inside_vmas(self):
        """Page-table entries and private bytes exist only inside VMAs."""
        for proc in self.shadow:
            mm = proc.mm
            for vpn in mm.ptes:
                assert mm.find_vma(vpn * PAGE) is not None, hex(vpn * PAGE)
            for a in mm.memory:
                assert mm.find_vma(a) is not None, hex(a)


PkeysMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestPkeysMachine = PkeysMachine.TestCase
