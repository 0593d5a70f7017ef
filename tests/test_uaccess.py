"""The kernel's accesses to user memory: its own copies (checked) and foreign ones (not).

Expected values are Linux's: rows l and m of
``/work/shared/linux-observed.md``, the facts of ``pkeys-facts.md`` (IDs in
the docstrings) and, where no row covers a case, the kernel source named in
the docstring (``fs/pipe.c``, ``fs/proc/base.c`` ``mem_rw``,
``mm/process_vm_access.c``, ``mm/gup.c`` ``check_vma_flags``,
``kernel/ptrace.c``, ``fs/read_write.c``).
"""

import errno

import pytest

from pkeyspec import (
    MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE,
    PROT_NONE, PROT_READ, PROT_WRITE, PTRACE_PEEKDATA, PTRACE_POKEDATA, SIG_IGN, SIGSEGV, Exited, Killed,
    System, pkru_with_rights,
)
from tests.helpers import err_of

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
SHARED = MAP_SHARED | MAP_ANONYMOUS
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE
SIGPIPE = 13
SEGV_PKUERR = 4
SEGV_ACCERR = 2


def spawn(kernel="7.2"):
    return System(kernel=kernel, pku=True).spawn()


def fill(t, addr, data):
    for i, b in enumerate(data):
        assert t.store(addr + i, b) is None


def dump(t, addr, n):
    return bytes(t.load(addr + i) for i in range(n))


def page(t, pages=1, value=None, prot=RW, flags=ANON):
    """Fresh pages; with ``value``, every page's first byte is written (so it is populated)."""
    p = t.mmap(0, pages * PAGE, prot, flags)
    if value is not None:
        for i in range(pages):
            assert t.store(p + i * PAGE, value) is None
    return p


def lone_page(t, n=0):
    """A one-page private mapping far from the others, so it is a VMA of its own (mmap's hint)."""
    addr = 0x100000000 + n * 0x1000000
    assert t.mmap(addr, PAGE, RW, ANON) == addr
    return addr


def rss_kb(t, addr):
    """The Rss: line of the /proc/self/smaps block of the VMA holding addr, in kB."""
    inside = False
    for line in t.smaps().splitlines():
        first = line.split(" ")[0]
        if "-" in first and all(c in "0123456789abcdef-" for c in first):
            lo, hi = (int(x, 16) for x in first.split("-"))
            inside = lo <= addr < hi
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1])
    raise AssertionError(f"no VMA holds {addr:#x}")


def rekey(t, addr, rights, pages=1):
    k = t.pkey_alloc(0, rights)
    assert t.pkey_mprotect(addr, pages * PAGE, RW, k) == 0
    return k



def watch_sigsegv(t):
    """Install a SIGSEGV handler that records each call and ends the process with status 17."""
    calls = []

    def record(ctx):
        calls.append(ctx.info)
        ctx.thread.exit_group(17)

    t.sigaction(SIGSEGV, record)
    return calls


@pytest.fixture(params=("6.1", "6.12", "7.2"))
def kernel(request):
    return request.param


# --- the kernel's own copies: EFAULT under the caller's PKRU --------------------------------

@pytest.mark.parametrize("populated", [True, False], ids=["populated", "never-touched"])
def test_write_from_ad_buffer_is_efault_no_signal_process_alive(kernel, populated):
    """Row l: "write(pipe, AD buf)" -> "-1 EFAULT" (6.1, 6.12, 7.2).

    No SIGSEGV is delivered (a handler is installed and never called), the
    process runs on, and nothing reached the pipe.

    Facts: KERN-COPY-USER, KERN-DOC-SIGSEGV-CLAIM, HW-X86-USER-PAGES, HW-X86-PK-NEEDS-PRESENT.
    """
    t = spawn(kernel)
    buf = page(t, value=0x41 if populated else None)
    rekey(t, buf, AD)
    calls = watch_sigsegv(t)
    r, w = t.pipe()
    assert err_of(t.write, w, buf, 1) == errno.EFAULT
    assert calls == []
    assert t.alive
    assert err_of(t.read, r, page(t), 1) == errno.EAGAIN


@pytest.mark.parametrize("populated", [True, False], ids=["populated", "never-touched"])
def test_read_into_ad_buffer_is_efault_and_the_byte_stays_in_the_pipe(kernel, populated):
    """Row l: "read(pipe -> AD buf) / read(-> never-touched AD buf)" -> "-1 EFAULT".

    The byte that could not be delivered is still in the pipe; no signal.

    Facts: KERN-COPY-USER, KERN-DOC-SIGSEGV-CLAIM, HW-X86-PK-NEEDS-PRESENT.
    Source: fs/pipe.c ``pipe_read`` (a short copy returns -EFAULT and leaves the buffer).
    """
    t = spawn(kernel)
    buf = page(t, value=0x41 if populated else None)
    rekey(t, buf, AD)
    plain = page(t, value=0x5A)
    calls = watch_sigsegv(t)
    r, w = t.pipe()
    assert t.write(w, plain, 1) == 1
    assert err_of(t.read, r, buf, 1) == errno.EFAULT
    assert calls == []
    assert t.alive
    assert t.read(r, plain + 1, 1) == 1
    assert t.load(plain + 1) == 0x5A


def test_wd_buffer_write_ok_read_into_it_efault():
    """Write-disable: the kernel may read the buffer (write() works) but not write it (read() EFAULT).

    Facts: HW-X86-AD-WD-SEMANTICS, HW-X86-USER-PAGES, KERN-COPY-USER.
    Source: tools/testing/selftests/mm/protection_keys.c
    ``test_kernel_write_of_write_disabled_region``.
    """
    t = spawn()
    buf = page(t, value=0x33)
    rekey(t, buf, WD)
    plain = page(t)
    r, w = t.pipe()
    assert t.write(w, buf, 1) == 1
    assert t.read(r, plain, 1) == 1
    assert t.load(plain) == 0x33
    assert t.write(w, plain, 1) == 1
    assert err_of(t.read, r, buf, 1) == errno.EFAULT
    assert t.load(buf) == 0x33


def test_second_thread_whose_pkru_allows_the_key_succeeds():
    """The check uses the PKRU of the thread making the call, not the process's or the key owner's.

    Facts: KERN-COPY-USER, HW-X86-THREAD-LOCAL.
    """
    t = spawn()
    secret = page(t, value=0x41)
    k = rekey(t, secret, AD)
    u = t.clone()
    assert u.wrpkru(pkru_with_rights(u.rdpkru(), k, 0)) is None
    r, w = t.pipe()
    assert u.write(w, secret, 1) == 1
    assert err_of(t.write, w, secret, 1) == errno.EFAULT
    assert u.read(r, secret + 1, 1) == 1
    assert u.load(secret + 1) == 0x41


# --- partial copies across a denied page boundary ----------------------------------------------

def test_write_whole_pages_stops_at_the_denied_page():
    """write(w, p, 8192), p's second page AD: the first page is written, 4096 is returned.

    Source: fs/pipe.c ``pipe_write`` (one page per pipe buffer; a fault after
    earlier buffers were filled returns the count so far).
    """
    t = spawn()
    p = page(t, 2)
    fill(t, p + PAGE - 2, b"xy")
    rekey(t, p + PAGE, AD)
    dst = page(t, 2)
    r, w = t.pipe()
    assert t.write(w, p, 2 * PAGE) == PAGE
    assert t.read(r, dst, 2 * PAGE) == PAGE
    assert dump(t, dst + PAGE - 2, 2) == b"xy"


def test_read_whole_buffers_stops_at_the_denied_page():
    """Two 4096-byte writes (two pipe buffers), read(r, q, 8192), q's second page AD: 4096.

    The second buffer stays in the pipe.

    Source: fs/pipe.c ``pipe_read`` (per buffer; a fault after a full buffer returns the count).
    """
    t = spawn()
    src = page(t, 2)
    fill(t, src, b"A")
    fill(t, src + PAGE, b"B")
    q = page(t, 2)
    rekey(t, q + PAGE, AD)
    r, w = t.pipe()
    assert t.write(w, src, PAGE) == PAGE
    assert t.write(w, src + PAGE, PAGE) == PAGE
    assert t.read(r, q, 2 * PAGE) == PAGE
    assert t.load(q) == ord("A")
    plain = page(t, 2)
    assert t.read(r, plain, 2 * PAGE) == PAGE
    assert t.load(plain) == ord("B")


def test_write_crossing_into_a_denied_page_inside_one_pipe_buffer_is_efault():
    """write(w, p + 4000, 200) where p + 4096 is AD: EFAULT, and nothing reaches the pipe.

    pipe_write copies a page-sized chunk at a time; a chunk that stops short
    while data remains is dropped and, with nothing written before it, the
    call returns -EFAULT. It does not return the 96 bytes that were readable.

    Facts: KERN-COPY-USER. Source: fs/pipe.c ``pipe_write``
    (``copied < PAGE_SIZE && iov_iter_count(from)`` -> ``if (!ret) ret = -EFAULT``).
    """
    t = spawn()
    p = page(t, 2, value=0x11)
    fill(t, p + 4000, b"z" * 96)
    rekey(t, p + PAGE, AD)
    r, w = t.pipe()
    assert err_of(t.write, w, p + 4000, 200) == errno.EFAULT
    assert err_of(t.read, r, page(t), 200) == errno.EAGAIN


def test_read_crossing_into_a_denied_page_inside_one_pipe_buffer_is_efault():
    """200 bytes in one pipe buffer, read(r, q + 4000, 200) where q + 4096 is AD: EFAULT.

    The copy of that buffer stops short, so pipe_read returns -EFAULT (nothing
    was read before) and the buffer is not consumed: all 200 bytes stay.

    Facts: KERN-COPY-USER. Source: fs/pipe.c ``pipe_read``
    (``written < chars`` -> ``if (!ret) ret = -EFAULT``; offset and len unchanged).
    """
    t = spawn()
    src = page(t)
    fill(t, src, bytes(range(200)))
    q = page(t, 2)
    rekey(t, q + PAGE, AD)
    r, w = t.pipe()
    assert t.write(w, src, 200) == 200
    assert err_of(t.read, r, q + 4000, 200) == errno.EFAULT
    plain = page(t)
    assert t.read(r, plain, 300) == 200
    assert dump(t, plain, 200) == bytes(range(200))


def test_a_copy_from_an_odd_address_checks_the_next_page_too():
    """write(w, p + 4095, 2) and read(r, q + 4095, 2), where p + 4096 and q + 4096 are AD:
    both EFAULT, though the first byte of each is allowed; the two bytes stay in the pipe.

    The copy stops at the first byte of the denied page, wherever the buffer
    starts, so the chunk is short and dropped (write) or left (read).

    Facts: KERN-COPY-USER. Source: fs/pipe.c ``pipe_write`` (``copied < PAGE_SIZE &&
    iov_iter_count(from)`` -> -EFAULT), ``pipe_read`` (``written < chars`` -> -EFAULT).
    """
    t = spawn()
    p = page(t, 2)
    fill(t, p + PAGE - 1, b"x")
    rekey(t, p + PAGE, AD)
    r, w = t.pipe()
    assert err_of(t.write, w, p + PAGE - 1, 2) == errno.EFAULT
    src = page(t)
    fill(t, src, b"ab")
    assert t.write(w, src, 2) == 2
    assert err_of(t.read, r, p + PAGE - 1, 2) == errno.EFAULT
    assert t.read(r, src + 2, 2) == 2
    assert dump(t, src, 4) == b"abab"


def test_pipe_copies_from_and_into_a_shared_mapping():
    """write() from a MAP_SHARED buffer and read() into another: the bytes go through, and a
    child forked before sees what read() stored (the mapping is shared).

    Facts: KERN-COPY-USER. Source: fs/pipe.c ``pipe_write``/``pipe_read``
    (``copy_page_from_iter``/``copy_page_to_iter`` on the caller's mapping).
    """
    t = spawn()
    src = page(t, value=0x61, flags=SHARED)
    dst = page(t, value=0x7A, flags=SHARED)
    child = t.fork()
    r, w = t.pipe()
    assert t.write(w, src, 1) == 1
    assert t.read(r, dst, 1) == 1
    assert t.load(dst) == 0x61
    assert child.load(dst) == 0x61


def test_read_into_a_buffer_that_crosses_a_page_boundary():
    """One 4096-byte pipe buffer read into q + 100 (two pages, both allowed): 4096, in order.

    Source: fs/pipe.c ``pipe_read`` (``copy_page_to_iter`` of the whole buffer).
    """
    t = spawn()
    src = page(t)
    fill(t, src, b"a")
    fill(t, src + PAGE - 101, b"bc")
    fill(t, src + PAGE - 1, b"d")
    q = page(t, 2)
    r, w = t.pipe()
    assert t.write(w, src, PAGE) == PAGE
    assert t.read(r, q + 100, PAGE) == PAGE
    assert dump(t, q + 100, 1) == b"a"
    assert dump(t, q + PAGE - 1, 2) == b"bc"
    assert dump(t, q + PAGE + 99, 1) == b"d"


def test_read_of_two_pipe_buffers_fills_both_pages_then_stops_at_count():
    """Two 4096-byte writes; read(r, dst, 8192) returns 8192 with the second buffer in the
    second page. Again with read(r, dst, 4097): 4097, and the 4095 left come next.

    Source: fs/pipe.c ``pipe_read`` (per buffer, ``chars = min(buf->len, total_len)``;
    a partly read buffer keeps the rest).
    """
    t = spawn()
    src = page(t, 2)
    fill(t, src, b"A")
    fill(t, src + PAGE, b"B")
    fill(t, src + 2 * PAGE - 1, b"Z")
    dst = page(t, 3)
    r, w = t.pipe()
    assert t.write(w, src, PAGE) == PAGE
    assert t.write(w, src + PAGE, PAGE) == PAGE
    assert t.read(r, dst, 2 * PAGE) == 2 * PAGE
    assert dump(t, dst, 1) + dump(t, dst + PAGE, 1) == b"AB"
    assert t.write(w, src, 2 * PAGE) == 2 * PAGE
    assert t.read(r, dst, PAGE + 1) == PAGE + 1
    assert t.read(r, dst, 2 * PAGE) == PAGE - 1
    assert dump(t, dst + PAGE - 2, 1) == b"Z"


def test_zero_length_write_is_0_even_without_readers():
    """write(w, buf, 0) returns 0, and with every read end closed it still returns 0 without
    a SIGPIPE (a handler is installed and never called).

    Source: fs/pipe.c ``pipe_write`` (``/* Null write succeeds. */`` before the readers check).
    """
    t = spawn()
    buf = page(t, value=1)
    calls = []
    t.sigaction(SIGPIPE, lambda ctx: calls.append(ctx.info))
    r, w = t.pipe()
    assert t.write(w, buf, 0) == 0
    assert t.close(r) == 0
    assert t.write(w, buf, 0) == 0
    assert calls == []


def test_sigpipe_is_sent_as_si_user():
    """A write with no reader left: the SIGPIPE handler runs once with si_code SI_USER (0),
    then write fails with EPIPE.

    Source: fs/pipe.c ``pipe_write`` (``send_sig(SIGPIPE, current, 0)``); kernel/signal.c
    ``send_sig`` -> ``send_sig_info(sig, __si_special(0), p)``: SEND_SIG_NOINFO, which
    ``__send_signal_locked`` fills in with ``si_code = SI_USER``.
    """
    t = spawn()
    buf = page(t, value=1)
    calls = []
    t.sigaction(SIGPIPE, lambda ctx: calls.append(ctx.info))
    r, w = t.pipe()
    assert t.close(r) == 0
    assert err_of(t.write, w, buf, 1) == errno.EPIPE
    assert [(c.si_signo, c.si_code) for c in calls] == [(SIGPIPE, 0)]


# --- /proc/self/mem: the target is foreign, the caller's buffer is not -----------------------------

def test_proc_self_mem_pread_pwrite_bypass_ad_page(kernel):
    """Row m: "/proc/self/mem pread / pwrite on an AD page" -> "succeed (bypass)".

    The thread's own load of the page still faults (in a forked child, which
    has the same memory and PKRU).

    Facts: KERN-FOREIGN-BYPASS, SEC-KERNEL-CONFUSED-DEPUTY.
    """
    t = spawn(kernel)
    secret = page(t, value=0x41)
    k = rekey(t, secret, AD)
    plain = page(t)
    mem = t.open_proc_mem()
    assert t.pread(mem, plain, 1, secret) == 1
    assert t.load(plain) == 0x41
    assert t.store(plain, 0x42) is None
    assert t.pwrite(mem, plain, 1, secret) == 1
    assert t.pread(mem, plain + 1, 1, secret) == 1
    assert t.load(plain + 1) == 0x42
    end = t.fork().load(secret)
    assert isinstance(end, Killed) and end.siginfo.si_code == SEGV_PKUERR
    assert end.siginfo.si_pkey == k


def test_proc_self_mem_pwrite_bypasses_wd(kernel):
    """Row m: "pwrite on a WD page" -> "succeed (bypass)".

    Facts: KERN-FOREIGN-BYPASS.
    """
    t = spawn(kernel)
    ro = page(t, value=0x33)
    rekey(t, ro, WD)
    plain = page(t, value=0x44)
    mem = t.open_proc_mem()
    assert t.pwrite(mem, plain, 1, ro) == 1
    assert t.load(ro) == 0x44


def test_proc_self_mem_pwrite_to_read_only_private_vma_uses_foll_force():
    """pwrite of /proc/self/mem to a PROT_READ private page succeeds (FOLL_FORCE, COW).

    The VMA stays read-only: the thread's own store still gets SEGV_ACCERR.

    Source: fs/proc/base.c ``mem_rw`` (``FOLL_FORCE``), mm/gup.c ``check_vma_flags``
    (write to !VM_WRITE allowed with FOLL_FORCE on a COW mapping).
    """
    t = spawn()
    ro = page(t, value=0x10)
    assert t.mprotect(ro, PAGE, PROT_READ) == 0
    plain = page(t, value=0x20)
    mem = t.open_proc_mem()
    assert t.pwrite(mem, plain, 1, ro) == 1
    assert t.load(ro) == 0x20
    end = t.store(ro, 1)
    assert isinstance(end, Killed) and end.siginfo.si_code == SEGV_ACCERR


def test_proc_self_mem_pwrite_to_read_only_shared_vma_is_eio():
    """FOLL_FORCE does not write a read-only *shared* mapping: pwrite gets EIO, memory unchanged.

    check_vma_flags refuses a forced write to a VMA that is not a COW
    mapping ("Anon pages in shared mappings are surprising: now just reject
    it"), access_remote_vm copies nothing, and mem_rw returns -EIO.

    Source: mm/gup.c ``check_vma_flags`` (``if (!is_cow_mapping(vm_flags)) return
    -EFAULT``), fs/proc/base.c ``mem_rw`` (``if (!copied) copied = -EIO``).
    """
    t = spawn()
    shared = page(t, value=0x10, flags=MAP_SHARED | MAP_ANONYMOUS)
    assert t.mprotect(shared, PAGE, PROT_READ) == 0
    plain = page(t, value=0x20)
    mem = t.open_proc_mem()
    assert err_of(t.pwrite, mem, plain, 1, shared) == errno.EIO
    assert t.load(shared) == 0x10


def test_proc_self_mem_local_buffer_is_checked():
    """Only the target is foreign: pread into an AD buffer and pwrite from one are EFAULT.

    The target of the failed pwrite is unchanged.

    Facts: KERN-COPY-USER, KERN-FOREIGN-BYPASS. Source: fs/proc/base.c ``mem_rw``
    (``copy_to_user`` after reading, ``copy_from_user`` before writing).
    """
    t = spawn()
    secret = page(t, value=0x41)
    rekey(t, secret, AD)
    plain = page(t, value=0x5A)
    mem = t.open_proc_mem()
    assert err_of(t.pread, mem, secret, 1, plain) == errno.EFAULT
    assert err_of(t.pwrite, mem, secret, 1, plain) == errno.EFAULT
    assert t.load(plain) == 0x5A
    assert t.alive


def test_proc_self_mem_pread_is_efault_when_a_later_chunk_cannot_be_copied_out():
    """pread(mem, buf, 8192, src) where buf's second page is AD: -1 EFAULT, not 4096.

    mem_rw works a page at a time and a failed ``copy_to_user`` replaces the
    count with -EFAULT even after a first page was copied.

    Facts: KERN-COPY-USER. Source: fs/proc/base.c ``mem_rw``
    (``if (!write && copy_to_user(buf, page, this_len)) { copied = -EFAULT; break; }``).
    """
    t = spawn()
    src = page(t, 2, value=0x61)
    buf = page(t, 2)
    rekey(t, buf + PAGE, AD)
    mem = t.open_proc_mem()
    assert err_of(t.pread, mem, buf, 2 * PAGE, src) == errno.EFAULT


def test_proc_self_mem_pwrite_is_efault_when_a_later_chunk_cannot_be_copied_in():
    """pwrite(mem, buf, 8192, dst) where buf's second page is AD: -1 EFAULT; the first page
    of dst was already written.

    Facts: KERN-COPY-USER. Source: fs/proc/base.c ``mem_rw``
    (``if (write && copy_from_user(page, buf, this_len)) { copied = -EFAULT; break; }``).
    """
    t = spawn()
    buf = page(t, 2, value=0x61)
    rekey(t, buf + PAGE, AD)
    dst = page(t, 2, value=0x10)
    mem = t.open_proc_mem()
    assert err_of(t.pwrite, mem, buf, 2 * PAGE, dst) == errno.EFAULT
    assert t.load(dst) == 0x61
    assert t.load(dst + PAGE) == 0x10


def test_proc_self_mem_pwrite_from_a_buffer_crossing_into_an_ad_page_is_efault():
    """pwrite(mem, p + 4000, 200, dst) where p + 4096 is AD: EFAULT and dst is untouched.

    ``copy_from_user`` of the chunk fails (it could not copy all 200 bytes).

    Source: fs/proc/base.c ``mem_rw``.
    """
    t = spawn()
    p = page(t, 2)
    fill(t, p + 4000, b"q" * 96)
    rekey(t, p + PAGE, AD)
    dst = page(t, value=0x10)
    mem = t.open_proc_mem()
    assert err_of(t.pwrite, mem, p + 4000, 200, dst) == errno.EFAULT
    assert t.load(dst) == 0x10


def test_proc_self_mem_unmapped_target_eio_and_short_read_at_the_end():
    """Nothing mapped at the offset: EIO. A read running off the end of a mapping: the mapped part.

    Source: fs/proc/base.c ``mem_rw`` (``access_remote_vm`` returns 0 ->
    -EIO if nothing was copied, else the count).
    """
    t = spawn()
    buf = page(t, 2)
    last = page(t, 2, value=0x7)
    gone = last + PAGE
    assert t.munmap(gone, PAGE) == 0
    assert t.process.mm.find_vma(gone) is None
    mem = t.open_proc_mem()
    assert err_of(t.pread, mem, buf, 1, gone) == errno.EIO
    assert t.pread(mem, buf, 2 * PAGE, last) == PAGE
    assert t.load(buf) == 0x7


@pytest.mark.parametrize("release", ["6.1", "6.12"])
def test_vvar_cannot_be_reached_by_a_foreign_access(release):
    """[vvar] (VM_IO | VM_PFNMAP) is refused to every foreign access: /proc/self/mem pread
    EIO, process_vm_readv EFAULT, PTRACE_PEEKDATA EIO; the buffer is left alone.

    ``check_vma_flags`` refuses VM_IO and VM_PFNMAP VMAs, and ``__access_remote_vm``
    has no fallback: the special mapping's ``vm_ops->access`` is NULL ("vDSO
    code relies that VVAR can't be accessed remotely").

    Source: mm/gup.c ``check_vma_flags``; mm/memory.c ``__access_remote_vm``;
    mm/mmap.c ``special_mapping_vmops``; arch/x86/entry/vdso/vma.c ``map_vdso``
    (the [vvar] flags in 6.1 and 6.12; later releases map it from lib/vdso/datastore.c).
    """
    t = spawn(release)
    vvar = next(v.start for v in t.process.mm.vmas if v.name == "[vvar]")
    buf = page(t, value=0x5A)
    mem = t.open_proc_mem()
    assert err_of(t.pread, mem, buf, 1, vvar) == errno.EIO
    assert err_of(t.process_vm_readv, t.process.pid, [(buf, 1)], [(vvar, 1)]) == errno.EFAULT
    assert err_of(t.ptrace, PTRACE_PEEKDATA, t.fork().process.pid, vvar) == errno.EIO
    assert t.load(buf) == 0x5A


def test_open_proc_mem_of_a_pid_that_does_not_exist_is_enoent():
    """open("/proc/99999/mem") with no such process: ENOENT (the directory is not there).

    Source: fs/proc/base.c ``proc_pid_lookup`` (no task: the dentry stays negative).
    """
    t = spawn()
    assert err_of(t.open_proc_mem, 99999) == errno.ENOENT


def test_proc_self_mem_reads_and_writes_across_pages():
    """pread(mem, buf, 4096, src + 100) reads the tail of one page and the head of the next,
    in order; pread/pwrite of 8192 bytes move both pages (mem_rw works a page at a time
    and moves on by what it copied).

    Source: fs/proc/base.c ``mem_rw`` (``addr += this_len``); mm/memory.c
    ``__access_remote_vm`` (page by page, ``buf += bytes``).
    """
    t = spawn()
    src = page(t, 2)
    fill(t, src, b"A")
    fill(t, src + 100, b"a")
    fill(t, src + PAGE, b"B")
    fill(t, src + PAGE + 99, b"c")
    buf = page(t, 2)
    mem = t.open_proc_mem()
    assert t.pread(mem, buf, PAGE, src + 100) == PAGE
    assert dump(t, buf, 1) + dump(t, buf + PAGE - 100, 1) + dump(t, buf + PAGE - 1, 1) == b"aBc"
    assert t.pread(mem, buf, 2 * PAGE, src) == 2 * PAGE
    assert dump(t, buf, 1) + dump(t, buf + PAGE, 1) == b"AB"
    dst = page(t, 2, value=0x10)
    assert t.pwrite(mem, buf, 2 * PAGE, dst) == 2 * PAGE
    assert dump(t, dst, 1) + dump(t, dst + PAGE, 1) + dump(t, dst + PAGE + 99, 1) == b"ABc"


def test_foreign_accesses_reach_a_shared_mapping():
    """A MAP_SHARED page of a parent and its child: /proc/PID/mem, process_vm_readv/writev
    and PTRACE_PEEKDATA/POKEDATA read and write it, and both processes see every write.

    Source: fs/proc/base.c ``mem_rw``, mm/process_vm_access.c, kernel/ptrace.c
    ``generic_ptrace_peekdata``/``pokedata``: all take the target's page with GUP, which
    for a writable shared mapping is the shared page itself (mm/gup.c ``check_vma_flags``).
    """
    t = spawn()
    shared = page(t, value=0x10, flags=SHARED)
    child = t.fork()
    cpid = child.process.pid
    buf = page(t)
    mem = t.open_proc_mem(cpid)
    assert t.pread(mem, buf, 1, shared) == 1
    assert t.load(buf) == 0x10
    assert t.store(buf, 0x21) is None
    assert t.pwrite(mem, buf, 1, shared) == 1
    assert child.load(shared) == 0x21
    assert t.store(buf, 0x32) is None
    assert t.process_vm_writev(cpid, [(buf, 1)], [(shared, 1)]) == 1
    assert t.load(shared) == 0x32
    assert child.store(shared, 0x3C) is None
    assert t.process_vm_readv(cpid, [(buf, 1)], [(shared, 1)]) == 1
    assert t.load(buf) == 0x3C
    assert t.ptrace(PTRACE_POKEDATA, cpid, shared, 0x43) == 0
    assert t.load(shared) == 0x43
    assert t.store(shared, 0x54) is None
    assert t.ptrace(PTRACE_PEEKDATA, cpid, shared) == 0x54


def test_prot_none_page_forced_foreign_reads_reach_it_process_vm_readv_does_not():
    """A PROT_NONE private page: /proc/self/mem pread and PTRACE_PEEKDATA (FOLL_FORCE) read
    it, since it may be made readable (VM_MAYREAD); process_vm_readv (no FOLL_FORCE): EFAULT.

    Source: mm/gup.c ``check_vma_flags`` (``!(vm_flags & VM_READ)``: -EFAULT without
    FOLL_FORCE, else allowed with VM_MAYREAD); fs/proc/base.c ``mem_rw`` and
    kernel/ptrace.c ``generic_ptrace_peekdata`` pass FOLL_FORCE, mm/process_vm_access.c
    does not.
    """
    t = spawn()
    p = page(t, value=0x41)
    assert t.mprotect(p, PAGE, PROT_NONE) == 0
    buf = page(t, value=0x5A)
    mem = t.open_proc_mem()
    assert t.pread(mem, buf, 1, p) == 1
    assert t.load(buf) == 0x41
    assert t.store(buf, 0x5A) is None
    assert err_of(t.process_vm_readv, t.process.pid, [(buf, 1)], [(p, 1)]) == errno.EFAULT
    assert t.load(buf) == 0x5A
    assert t.ptrace(PTRACE_PEEKDATA, t.fork().process.pid, p) == 0x41


def test_child_reads_parents_ad_page_through_proc_pid_mem():
    """The child opens /proc/<parent>/mem and reads the parent's AD page; its own load faults.

    Facts: KERN-FOREIGN-BYPASS, FORK-PKRU.
    """
    t = spawn()
    secret = page(t, value=0x41)
    rekey(t, secret, AD)
    child = t.fork()
    buf = page(child)
    mem = child.open_proc_mem(t.process.pid)
    assert child.pread(mem, buf, 1, secret) == 1
    assert child.load(buf) == 0x41


def foreign_write(t, how, src, dst, n):
    """Write n bytes from src to dst of t's own memory through a foreign interface."""
    if how == "proc-mem":
        return t.pwrite(t.open_proc_mem(), src, n, dst)
    return t.process_vm_writev(t.process.pid, [(src, n)], [(dst, n)])


@pytest.mark.parametrize("how", ["proc-mem", "process_vm_writev"])
def test_foreign_write_to_a_never_touched_page_faults_in_a_page_of_its_own(how):
    """A foreign write to a never-touched private page faults it in for writing: Rss 4 kB.

    A foreign read of another never-touched page maps the zero page: the bytes
    are 0 and Rss stays 0 kB.

    Source: mm/gup.c ``__get_user_pages`` -> ``faultin_page`` (FAULT_FLAG_WRITE
    for FOLL_WRITE); mm/memory.c ``do_anonymous_page`` (a read fault maps the
    zero page, a write fault a new page); fs/proc/task_mmu.c ``smaps_pte_entry``
    (``vm_normal_page`` is NULL for the zero page, so it is not counted).
    """
    t = spawn()
    src = page(t, value=0x5A)
    dst = lone_page(t)
    assert foreign_write(t, how, src, dst, 1) == 1
    assert rss_kb(t, dst) == 4
    assert t.load(dst) == 0x5A
    untouched = lone_page(t, 1)
    buf = page(t, value=0x77)
    assert t.process_vm_readv(t.process.pid, [(buf, 1)], [(untouched, 1)]) == 1
    assert t.load(buf) == 0
    assert rss_kb(t, untouched) == 0


@pytest.mark.parametrize("how", ["proc-mem", "process_vm_writev"])
def test_foreign_write_to_the_zero_page_copies_it(how):
    """A read maps the zero page (Rss 0 kB); a foreign write to that page copies it into a
    page of its own (Rss 4 kB), which the thread then reads.

    GUP does not follow a read-only PTE for a write: it takes a write fault,
    and the zero page is copied on write.

    Source: mm/gup.c ``follow_page_pte`` (``FOLL_WRITE && !can_follow_write_pte``:
    no page) and ``faultin_page`` (FAULT_FLAG_WRITE); mm/memory.c ``do_wp_page``
    -> ``wp_page_copy``; fs/proc/task_mmu.c ``smaps_pte_entry``.
    """
    t = spawn()
    src = page(t, value=0x5A)
    dst = lone_page(t)
    assert t.load(dst) == 0
    assert rss_kb(t, dst) == 0
    assert foreign_write(t, how, src, dst, 1) == 1
    assert rss_kb(t, dst) == 4
    assert t.load(dst) == 0x5A


# --- process_vm_readv / process_vm_writev -----------------------------------------------------

def test_process_vm_readv_writev_remote_side_bypasses_keys(kernel):
    """Row m: "process_vm_readv/writev, remote = own AD page" -> "succeed".

    Facts: KERN-FOREIGN-BYPASS.
    """
    t = spawn(kernel)
    secret = page(t, value=0x41)
    rekey(t, secret, AD)
    plain = page(t)
    fill(t, plain, b"C")
    me = t.process.pid
    assert t.process_vm_writev(me, [(plain, 1)], [(secret, 1)]) == 1
    assert t.process_vm_readv(me, [(plain + 16, 1)], [(secret, 1)]) == 1
    assert t.load(plain + 16) == ord("C")


def test_process_vm_local_side_is_checked():
    """The local iovecs are copied under the caller's PKRU: AD local buffer -> EFAULT.

    Facts: KERN-COPY-USER. Source: mm/process_vm_access.c ``process_vm_rw_pages``
    (``copy_page_to_iter``/``copy_page_from_iter``; nothing copied -> the error).
    """
    t = spawn()
    secret = page(t, value=0x41)
    rekey(t, secret, AD)
    plain = page(t, value=0x5A)
    me = t.process.pid
    assert err_of(t.process_vm_readv, me, [(secret, 1)], [(plain, 1)]) == errno.EFAULT
    assert err_of(t.process_vm_writev, me, [(secret, 1)], [(plain, 1)]) == errno.EFAULT
    assert t.load(plain) == 0x5A


def test_process_vm_readv_returns_the_bytes_copied_before_a_denied_local_page():
    """Local buffer of two pages, the second AD: process_vm_readv returns 4096.

    Source: mm/process_vm_access.c ``process_vm_rw_core`` ("If we have
    managed to copy any data at all then we return the number of bytes
    copied").
    """
    t = spawn()
    src = page(t, 2, value=0x61)
    buf = page(t, 2)
    rekey(t, buf + PAGE, AD)
    me = t.process.pid
    assert t.process_vm_readv(me, [(buf, 2 * PAGE)], [(src, 2 * PAGE)]) == PAGE
    assert t.load(buf) == 0x61


def test_process_vm_writev_to_a_read_only_remote_vma_is_efault():
    """No FOLL_FORCE: a PROT_READ remote VMA cannot be written; nothing copied -> EFAULT.

    The /proc/self/mem twin (FOLL_FORCE) succeeds, see above.

    Source: mm/process_vm_access.c (``pin_user_pages_remote`` with FOLL_WRITE only),
    mm/gup.c ``check_vma_flags`` (``if (!(gup_flags & FOLL_FORCE)) return -EFAULT``).
    """
    t = spawn()
    ro = page(t, value=0x10)
    assert t.mprotect(ro, PAGE, PROT_READ) == 0
    plain = page(t, value=0x20)
    me = t.process.pid
    assert err_of(t.process_vm_writev, me, [(plain, 1)], [(ro, 1)]) == errno.EFAULT
    assert t.load(ro) == 0x10


def test_process_vm_readv_of_unmapped_remote_is_efault_and_dead_pid_esrch():
    """Remote address with no VMA: EFAULT. A pid that does not exist (or has exited): ESRCH."""
    t = spawn()
    buf = page(t)
    gone = page(t)
    assert t.munmap(gone, PAGE) == 0
    me = t.process.pid
    assert err_of(t.process_vm_readv, me, [(buf, 1)], [(gone, 1)]) == errno.EFAULT
    child = t.fork()
    cpid = child.process.pid
    child.exit_group(0)
    assert err_of(t.process_vm_readv, cpid, [(buf, 1)], [(buf, 1)]) == errno.ESRCH
    assert err_of(t.process_vm_readv, 99999, [(buf, 1)], [(buf, 1)]) == errno.ESRCH


def test_process_vm_flags_einval_and_writev_to_a_dead_pid_esrch():
    """flags must be 0: EINVAL, for both calls; process_vm_writev to a pid that is gone: ESRCH.

    Source: mm/process_vm_access.c ``process_vm_rw`` (``if (flags != 0) return -EINVAL;``),
    ``process_vm_rw_core`` (no task: -ESRCH).
    """
    t = spawn()
    buf = page(t, value=1)
    me = t.process.pid
    assert err_of(t.process_vm_readv, me, [(buf, 1)], [(buf + 1, 1)], 1) == errno.EINVAL
    assert err_of(t.process_vm_writev, me, [(buf, 1)], [(buf + 1, 1)], 1) == errno.EINVAL
    assert err_of(t.process_vm_writev, 99999, [(buf, 1)], [(buf + 1, 1)]) == errno.ESRCH
    assert t.load(buf + 1) == 0


def test_process_vm_readv_scatters_and_gathers_in_order():
    """Remote iovecs are read in order into the local ones, across iovec boundaries on both
    sides; a local side longer than the data gets what there is, a remote side longer than
    the local one is read only as far as the local one goes.

    Source: mm/process_vm_access.c ``process_vm_rw_core`` (remote iovecs in order
    while the local iterator has room), ``process_vm_rw_pages``.
    """
    t = spawn()
    a, b = page(t, value=0x61), page(t, value=0x62)
    x, y = page(t, value=0x30), page(t, value=0x31)
    me = t.process.pid
    assert t.process_vm_readv(me, [(x, 2)], [(a, 1), (b, 1)]) == 2
    assert dump(t, x, 2) == b"ab"
    fill(t, a, b"cd")
    assert t.process_vm_readv(me, [(x, 1), (y, 1)], [(a, 2)]) == 2
    assert dump(t, x, 1) + dump(t, y, 1) == b"cd"
    assert t.process_vm_readv(me, [(y, 1), (x, 1)], [(b, 1)]) == 1
    assert dump(t, y, 1) + dump(t, x, 1) == b"bc"
    assert t.process_vm_readv(me, [(x, 1)], [(a, 1), (b, 1)]) == 1
    assert dump(t, x, 1) == b"c"


def test_process_vm_writev_scatters_and_gathers_in_order():
    """The writing twin: local iovecs gathered in order into the remote ones; a remote side
    longer than the data is written as far as the data goes.

    Source: mm/process_vm_access.c ``process_vm_rw_core``, ``process_vm_rw_pages``.
    """
    t = spawn()
    src = page(t)
    fill(t, src, b"pq")
    a, b = page(t, value=0x61), page(t, value=0x62)
    me = t.process.pid
    assert t.process_vm_writev(me, [(src, 2)], [(a, 1), (b, 1)]) == 2
    assert dump(t, a, 1) + dump(t, b, 1) == b"pq"
    assert t.process_vm_writev(me, [(src + 1, 1), (src, 1)], [(a, 2)]) == 2
    assert dump(t, a, 2) == b"qp"
    assert t.process_vm_writev(me, [(src, 1)], [(b, 1), (a, 1)]) == 1
    assert dump(t, b, 1) + dump(t, a, 1) == b"pq"


def test_process_vm_partial_transfer_returns_the_bytes_moved():
    """When a later iovec fails, the bytes moved before it are returned, not the error:
    a remote iovec with nothing mapped, a local iovec on an AD page, on either call.

    Source: mm/process_vm_access.c ``process_vm_rw_core`` ("If we have managed to copy
    any data at all then we return the number of bytes copied").
    """
    t = spawn()
    src = page(t, value=0x61)
    secret = page(t, value=0x41)
    rekey(t, secret, AD)
    buf = page(t, value=0x30)
    gone = page(t)
    assert t.munmap(gone, PAGE) == 0
    me = t.process.pid
    assert t.process_vm_readv(me, [(buf, 2)], [(src, 1), (gone, 1)]) == 1
    assert t.load(buf) == 0x61
    assert t.store(buf, 0x30) is None
    assert t.process_vm_readv(me, [(buf, 1), (secret, 1)], [(src, 2)]) == 1
    assert t.load(buf) == 0x61
    assert t.process_vm_writev(me, [(buf, 1), (secret, 1)], [(src + 1, 2)]) == 1
    assert t.load(src + 1) == 0x61
    assert t.store(buf, 0x71) is None
    assert t.process_vm_writev(me, [(buf, 2)], [(src, 1), (gone, 1)]) == 1
    assert t.load(src) == 0x71


def test_child_process_vm_readv_of_parents_ad_page(kernel):
    """Row m: "child process_vm_readv of the parent's AD page" -> "succeeds".

    The child has the parent's PKRU (AD for k), so its own load of the same
    address faults.

    Facts: KERN-FOREIGN-BYPASS, FORK-PKRU, FORK-VMA-KEYS.
    """
    t = spawn(kernel)
    secret = page(t, value=0x41)
    k = rekey(t, secret, AD)
    child = t.fork()
    buf = page(child)
    assert child.process_vm_readv(t.process.pid, [(buf, 1)], [(secret, 1)]) == 1
    assert child.load(buf) == 0x41
    end = child.load(secret)
    assert isinstance(end, Killed) and end.siginfo.si_pkey == k


# --- ptrace PEEKDATA / POKEDATA ----------------------------------------------------------------

def test_ptrace_peek_and_poke_bypass_keys():
    """PTRACE_PEEKDATA/POKEDATA of a child's AD page work; 8 bytes, little-endian.

    Neither process's PKRU allows the key; the child's own load faults.

    Facts: KERN-FOREIGN-BYPASS. Source: kernel/ptrace.c ``generic_ptrace_peekdata``,
    ``generic_ptrace_pokedata``; selftest ``test_ptrace_of_child``.
    """
    t = spawn()
    secret = page(t)
    fill(t, secret, bytes(range(1, 9)))
    k = rekey(t, secret, AD)
    child = t.fork()
    calls = watch_sigsegv(child)
    cpid = child.process.pid
    assert t.ptrace(PTRACE_PEEKDATA, cpid, secret) == int.from_bytes(bytes(range(1, 9)), "little")
    assert t.ptrace(PTRACE_POKEDATA, cpid, secret, 0x1122334455667788) == 0
    assert t.ptrace(PTRACE_PEEKDATA, cpid, secret) == 0x1122334455667788
    assert child.load(secret) == Exited(17)
    assert [c.si_pkey for c in calls] == [k]


def test_ptrace_poke_into_a_read_only_private_page_uses_foll_force():
    """POKEDATA into a PROT_READ private page succeeds (FOLL_FORCE, as for breakpoints)."""
    t = spawn()
    ro = page(t, value=0x10)
    assert t.mprotect(ro, PAGE, PROT_READ) == 0
    child = t.fork()
    cpid = child.process.pid
    assert t.ptrace(PTRACE_POKEDATA, cpid, ro, 0xAB) == 0
    assert child.load(ro) == 0xAB
    assert t.load(ro) == 0x10


def test_ptrace_unmapped_or_partly_mapped_word_is_eio():
    """PEEK/POKE at an unmapped address: EIO; a word whose last bytes are unmapped: EIO.

    Source: kernel/ptrace.c (``if (copied != sizeof(tmp)) return -EIO``).
    """
    t = spawn()
    last = page(t, 2, value=1)
    gone = last + PAGE
    assert t.munmap(gone, PAGE) == 0
    assert t.process.mm.find_vma(gone) is None
    child = t.fork()
    cpid = child.process.pid
    assert err_of(t.ptrace, PTRACE_PEEKDATA, cpid, gone) == errno.EIO
    assert err_of(t.ptrace, PTRACE_POKEDATA, cpid, gone, 1) == errno.EIO
    assert err_of(t.ptrace, PTRACE_PEEKDATA, cpid, last + PAGE - 4) == errno.EIO
    assert t.ptrace(PTRACE_PEEKDATA, cpid, last + PAGE - 8) == 0


def test_ptrace_word_across_a_page_boundary():
    """PEEKDATA and POKEDATA of a word whose halves lie in two mapped pages: 8 bytes each way.

    Source: kernel/ptrace.c (``copied != sizeof(tmp)`` is the only failure);
    mm/memory.c ``__access_remote_vm`` (page by page).
    """
    t = spawn()
    p = page(t, 2, value=1)
    at = p + PAGE - 4
    fill(t, at, bytes(range(1, 9)))
    child = t.fork()
    cpid = child.process.pid
    assert t.ptrace(PTRACE_PEEKDATA, cpid, at) == int.from_bytes(bytes(range(1, 9)), "little")
    assert t.ptrace(PTRACE_POKEDATA, cpid, at, 0x1122334455667788) == 0
    assert dump(child, at, 8) == (0x1122334455667788).to_bytes(8, "little")


def test_ptrace_unknown_request_is_eio():
    """A request ptrace does not know: EIO (the model does not check the tracing
    relationship, so this is the answer for a stopped tracee).

    Source: kernel/ptrace.c ``ptrace_request`` (``int ret = -EIO;`` ... ``default: break;``).
    """
    t = spawn()
    cpid = t.fork().process.pid
    assert err_of(t.ptrace, 0x7777, cpid, 0x10000) == errno.EIO


def test_ptrace_of_a_process_that_is_gone_esrch():
    """ptrace on a pid that does not exist: ESRCH."""
    t = spawn()
    with pytest.raises(ProcessLookupError) as exc:
        t.ptrace(PTRACE_PEEKDATA, 4242, 0x10000)
    assert exc.value.errno == errno.ESRCH


# --- file descriptors and pipe semantics ------------------------------------------------------

def test_bad_fds_are_ebadf():
    """read/write/close/pread/pwrite on an fd that is not open: EBADF; so is a wrong-direction
    pipe end (write on the read end, read on the write end).

    Source: fs/read_write.c (``vfs_read``: no FMODE_READ -> -EBADF; ``vfs_write``:
    no FMODE_WRITE -> -EBADF), fs/file.c.
    """
    t = spawn()
    buf = page(t, value=1)
    r, w = t.pipe()
    assert err_of(t.read, 99, buf, 1) == errno.EBADF
    assert err_of(t.write, 99, buf, 1) == errno.EBADF
    assert err_of(t.read, -1, buf, 1) == errno.EBADF
    assert err_of(t.close, 99) == errno.EBADF
    assert err_of(t.pread, 99, buf, 1, buf) == errno.EBADF
    assert err_of(t.pwrite, 99, buf, 1, buf) == errno.EBADF
    assert err_of(t.write, r, buf, 1) == errno.EBADF
    assert err_of(t.read, w, buf, 1) == errno.EBADF
    assert t.close(w) == 0
    assert err_of(t.close, w) == errno.EBADF
    assert err_of(t.write, w, buf, 1) == errno.EBADF


def test_pread_on_a_pipe_is_espipe():
    """A pipe has no file position: pread/pwrite on it fail with ESPIPE.

    Source: fs/read_write.c ``ksys_pread64`` (``if (f.file->f_mode & FMODE_PREAD)
    ... else ret = -ESPIPE``); fs/pipe.c opens pipes with ``stream_open``.
    """
    t = spawn()
    buf = page(t, value=1)
    r, w = t.pipe()
    assert t.write(w, buf, 1) == 1
    assert err_of(t.pread, r, buf, 1, 0) == errno.ESPIPE
    assert err_of(t.pwrite, w, buf, 1, 0) == errno.ESPIPE


def test_pipe_empty_with_a_writer_is_eagain_and_eof_after_the_writer_closes():
    """Empty with a writer open: EAGAIN (O_NONBLOCK). Writer closed: the data, then 0 (EOF).

    Count 0 returns 0 at once.

    Source: fs/pipe.c ``pipe_read`` (``if (!pipe->writers) break;`` before the
    O_NONBLOCK -EAGAIN).
    """
    t = spawn()
    buf = page(t)
    fill(t, buf, b"abc")
    out = page(t)
    r, w = t.pipe()
    assert t.read(r, out, 0) == 0
    assert err_of(t.read, r, out, 10) == errno.EAGAIN
    assert t.write(w, buf, 3) == 3
    assert t.close(w) == 0
    assert t.read(r, out, 10) == 3
    assert dump(t, out, 3) == b"abc"
    assert t.read(r, out, 10) == 0


def test_pipe_fork_keeps_the_write_end_open_in_the_child():
    """After fork both processes hold the write end: the parent's close does not give EOF."""
    t = spawn()
    out = page(t)
    r, w = t.pipe()
    child = t.fork()
    assert t.close(w) == 0
    assert err_of(t.read, r, out, 1) == errno.EAGAIN
    assert child.close(w) == 0
    assert t.read(r, out, 1) == 0


def test_pipe_eof_when_the_writing_process_exits():
    """A process's files are closed when it exits: after the child (the last writer) exits,
    the parent reads the data and then EOF.

    Source: kernel/exit.c ``do_exit`` -> ``exit_files``; fs/pipe.c ``pipe_release``
    (``pipe->writers--``).
    """
    t = spawn()
    out = page(t)
    r, w = t.pipe()
    child = t.fork()
    assert t.close(w) == 0
    src = page(child)
    fill(child, src, b"x")
    assert child.write(w, src, 1) == 1
    child.exit_group(0)
    assert t.read(r, out, 10) == 1
    assert t.read(r, out, 10) == 0


def test_pipe_write_without_readers_is_epipe():
    """Every read end closed: write fails with EPIPE (and SIGPIPE, ignored here).

    Source: fs/pipe.c ``pipe_write`` (``if (!pipe->readers) { send_sig(SIGPIPE,
    current, 0); ret = -EPIPE; }``).
    """
    t = spawn()
    buf = page(t, value=1)
    t.sigaction(SIGPIPE, SIG_IGN)
    r, w = t.pipe()
    assert t.close(r) == 0
    assert err_of(t.write, w, buf, 1) == errno.EPIPE
    assert t.alive


def test_pipe_full_is_eagain():
    """A pipe holds 16 pages (65536 bytes); a non-blocking write to a full pipe: EAGAIN.

    Source: fs/pipe.c (``PIPE_DEF_BUFFERS`` 16, ``pipe_write`` O_NONBLOCK -> -EAGAIN).
    """
    t = spawn()
    buf = page(t, 17, value=7)
    r, w = t.pipe()
    assert t.write(w, buf, 16 * PAGE) == 16 * PAGE
    assert err_of(t.write, w, buf, 1) == errno.EAGAIN
    assert t.read(r, buf + 16 * PAGE, 1) == 1
    assert t.load(buf + 16 * PAGE) == 7


# --- process_vm_*: what Linux copies, in its order ----------------------------------------

MIB = 1 << 20
TASK_SIZE_MAX = 0x7FFFFFFFF000


def rss_kb(t, addr):
    """The Rss: line of the VMA holding ``addr`` in smaps."""
    lines = t.smaps().splitlines()
    for i, line in enumerate(lines):
        if "-" in line.split()[0] and not line.startswith(("Size", "Rss", "Prot", "VmFlags")):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return int(lines[i + 2].split()[1])
    raise AssertionError(hex(addr))


@pytest.mark.parametrize("write", [False, True])
def test_process_vm_copies_min_of_local_and_remote_not_the_whole_remote(write):
    """A 256 MiB remote iovec and an 8-byte local buffer: 8 bytes, at once. Linux pins at most
    1024 remote pages per round (``PVM_MAX_KMALLOC_PAGES / sizeof(struct page *)``) and copies
    while the local iov_iter has room; the pinned pages of a write are faulted in (4 MiB of
    Rss), those of a read get the zero page. Before, the model touched all 65536 pages first
    and took more than 10 s.

    Source: mm/process_vm_access.c ``process_vm_rw_single_vec``, ``process_vm_rw_pages``.
    """
    import time
    t = spawn()
    big = t.mmap(0, 256 * MIB, RW, ANON)
    buf = page(t, value=7, flags=MAP_SHARED | MAP_ANONYMOUS)     # not merged with big
    start = time.process_time()
    call = t.process_vm_writev if write else t.process_vm_readv
    assert call(t.process.pid, [(buf, 8)], [(big + 100, 256 * MIB - 100)]) == 8
    assert time.process_time() - start < 0.5
    assert rss_kb(t, big) == (4096 if write else 0)
    assert t.load(big + 100) == (7 if write else 0)


def test_process_vm_returns_0_for_empty_iovecs_before_looking_for_the_process():
    """No local byte, or no remote byte: 0, even for a pid nobody has; flags first (EINVAL).

    Source: mm/process_vm_access.c ``process_vm_rw`` (``if (!iov_iter_count(&iter))``)
    and ``process_vm_rw_core`` (``if (nr_pages == 0) return 0`` before ``find_get_task_by_vpid``).
    """
    t = spawn()
    buf = page(t, value=1)
    assert t.process_vm_readv(99999, [], [(buf, 8)]) == 0
    assert t.process_vm_readv(99999, [(buf, 0)], [(buf, 8)]) == 0
    assert t.process_vm_writev(99999, [(buf, 8)], [(buf, 0)]) == 0
    assert err_of(t.process_vm_readv, 99999, [(buf, 8)], [(buf, 8)]) == errno.ESRCH
    assert err_of(t.process_vm_readv, 99999, [], [], 1) == errno.EINVAL


def test_process_vm_local_iovecs_are_checked_before_anything_is_copied():
    """A local iovec beyond user space is EFAULT up front, even after a good one (before, the
    model copied the good one and returned 8); a length negative as an ssize_t, or more than
    UIO_MAXIOV (1024) iovecs on either side, is EINVAL.

    Source: lib/iov_iter.c ``__import_iovec`` (``access_ok`` for each segment),
    ``iovec_from_user`` (``nr_segs > UIO_MAXIOV``, ``(ssize_t)len < 0``).
    """
    t = spawn()
    buf = page(t, value=1)
    src = page(t, value=2)
    pid = t.process.pid
    assert err_of(t.process_vm_readv, pid, [(buf, 8), (TASK_SIZE_MAX - 4, 8)],
                  [(src, 16)]) == errno.EFAULT
    assert t.load(buf) == 1
    assert err_of(t.process_vm_readv, pid, [(buf, 2**63)], [(src, 8)]) == errno.EINVAL
    assert err_of(t.process_vm_readv, pid, [(buf, 8)], [(src, 2**63)]) == errno.EINVAL
    assert err_of(t.process_vm_readv, pid, [(buf, 1)] * 1025, [(src, 8)]) == errno.EINVAL
    assert err_of(t.process_vm_readv, pid, [(buf, 8)], [(src, 1)] * 1025) == errno.EINVAL
    assert t.process_vm_readv(pid, [(buf, 1)] * 1024, [(src, 8)]) == 8


def test_remote_range_into_a_hole_and_local_range_into_a_denied_page():
    """Remote: 4 bytes before a hole are copied (``pin_user_pages_remote`` returns the pages it
    got; the count copied wins over the error). Local: 4 bytes into the first iovec, then an
    iovec on a page whose key the thread denies: 4 (``process_vm_rw_pages``: a short copy with
    room left is -EFAULT, but the count copied is returned).

    Source: mm/process_vm_access.c ``process_vm_rw_core`` ("If we have managed to copy any
    data at all then we return the number of bytes copied").
    """
    t = spawn()
    buf = page(t, value=1)
    secret = page(t, value=9)
    rekey(t, secret, AD)
    two = page(t, pages=2, value=3)
    assert t.munmap(two + PAGE, PAGE) == 0
    pid = t.process.pid
    assert t.process_vm_readv(pid, [(buf, 8)], [(two + PAGE - 4, 8)]) == 4
    assert t.process_vm_readv(pid, [(buf, 4), (secret, 4)], [(two, 8)]) == 4
    assert err_of(t.process_vm_readv, pid, [(secret, 4)], [(two, 8)]) == errno.EFAULT


def test_vvar_is_not_reachable_by_a_foreign_access():
    """[vvar] is VM_IO|VM_PFNMAP: get_user_pages refuses it, so /proc/self/mem reads EIO and
    process_vm_readv EFAULT (before, the model read zeros).

    Source: mm/gup.c ``check_vma_flags`` (``if (vm_flags & (VM_IO | VM_PFNMAP)) return
    -EFAULT``); mm/memory.c ``__access_remote_vm``; fs/proc/base.c ``mem_rw`` (-EIO).
    """
    t = spawn()
    vvar = next(v.start for v in t.process.mm.vmas if v.name == "[vvar]")
    vdso = next(v.start for v in t.process.mm.vmas if v.name == "[vdso]")
    buf = page(t, value=1)
    mem = t.open_proc_mem()
    assert err_of(t.pread, mem, buf, 8, vvar) == errno.EIO
    assert err_of(t.process_vm_readv, t.process.pid, [(buf, 8)], [(vvar, 8)]) == errno.EFAULT
    assert t.pread(mem, buf, 8, vdso) == 8


@pytest.mark.parametrize("bad", [None, 5, [(1,)], [(1, 2, 3)], [("a", 1)], [None]])
def test_process_vm_iovecs_of_a_wrong_type_are_a_type_error_first(bad):
    """An iovec array is a list of (base, len) pairs of ints: anything else is a TypeError,
    before the flags are looked at."""
    t = spawn()
    with pytest.raises(TypeError):
        t.process_vm_readv(t.process.pid, bad, [], 1)
    with pytest.raises(TypeError):
        t.process_vm_writev(t.process.pid, [], bad, 1)


def test_pread_negative_offset_einval_before_the_fd_and_huge_count_efault():
    """pread/pwrite: an offset negative as a loff_t is EINVAL before the descriptor is looked
    up; a buffer range beyond user space is EFAULT before the file is read (``access_ok`` in
    ``vfs_read``), also for read() from a pipe that holds data.

    Source: fs/read_write.c ``ksys_pread64`` (``if (pos < 0) return -EINVAL``),
    ``vfs_read``, ``vfs_write``.
    """
    t = spawn()
    buf = page(t, value=1)
    mem = t.open_proc_mem()
    r, w = t.pipe()
    assert t.write(w, buf, 1) == 1
    assert err_of(t.pread, 99, buf, 1, 2**63) == errno.EINVAL
    assert err_of(t.pwrite, mem, buf, 1, -PAGE) == errno.EINVAL
    assert err_of(t.pread, mem, buf, 2**62, buf) == errno.EFAULT
    assert err_of(t.read, r, buf, 2**62) == errno.EFAULT
    assert err_of(t.write, w, 0xFFFF800000000000, 0) == errno.EFAULT
    assert t.read(r, buf, 1) == 1


def test_read_and_write_of_proc_self_mem_use_the_file_position():
    """read()/write() on /proc/self/mem work at the file position, which starts at 0 (an
    unmapped address: EIO). Before, the model answered EBADF.

    Source: fs/proc/base.c ``mem_read``, ``mem_write`` (``mem_rw(file, buf, count, ppos, ...)``).
    """
    t = spawn()
    buf = page(t, value=1)
    mem = t.open_proc_mem()
    assert err_of(t.read, mem, buf, 8) == errno.EIO
    assert err_of(t.write, mem, buf, 8) == errno.EIO


def test_proc_pid_mem_after_exec_or_end_reads_nothing():
    """An open /proc/PID/mem keeps the mm it was opened on: after the process execs or ends
    it reads 0 bytes; /proc/PID of an ended process that nobody waited for still opens
    (without an mm) and reads 0 bytes.

    Source: fs/proc/base.c ``proc_mem_open`` (``mmgrab``, not ``mmget``), ``mem_rw``
    (``if (!mm) return 0``; ``if (!mmget_not_zero(mm)) goto free`` with ``copied = 0``).
    """
    s = System()
    t = s.spawn()
    child = t.fork()
    buf = page(t, value=1)
    fd = t.open_proc_mem(child.process.pid)
    assert t.pread(fd, buf, 8, 0x400000) == 8
    child.execve()
    assert t.pread(fd, buf, 8, 0x400000) == 0
    other = t.fork()
    other.exit_group(0)
    fd2 = t.open_proc_mem(other.process.pid)
    assert t.pread(fd2, buf, 8, 0x400000) == 0
    assert err_of(t.open_proc_mem, 99999) == errno.ENOENT


def test_foreign_write_to_a_zero_page_gets_a_page_of_its_own():
    """A read fault maps the shared zero page; a write through /proc/self/mem then breaks
    copy on write (FOLL_WRITE), so the page counts in Rss and holds the byte. Before, the
    model wrote the byte with the zero page still mapped (Rss 0).

    Source: mm/gup.c (``faultin_page`` with ``FAULT_FLAG_WRITE``); mm/memory.c ``do_wp_page``.
    """
    t = spawn()
    a = page(t)
    assert t.load(a) == 0
    assert rss_kb(t, a) == 0
    buf = page(t, value=0x5A, flags=MAP_SHARED | MAP_ANONYMOUS)     # not merged with a
    mem = t.open_proc_mem()
    assert t.pwrite(mem, buf, 1, a) == 1
    assert rss_kb(t, a) == 4
    assert t.load(a) == 0x5A
