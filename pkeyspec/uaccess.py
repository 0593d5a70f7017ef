"""The kernel's accesses to user memory: its own (checked) and foreign ones (not).

When a system call copies to or from a buffer of the calling process
(``copy_to_user``, ``copy_from_user``), the CPU checks the page and the
calling thread's PKRU exactly as for the thread's own access: PKRU applies
to supervisor accesses to user pages (HW-X86-USER-PAGES). A denied copy is
not a signal: the kernel's exception fixup makes the call fail with EFAULT
(KERN-COPY-USER; observed, rows l).

A foreign access is made on behalf of a process into another mm, or through
an interface that reaches memory "remotely" even in the same process:
``/proc/PID/mem``, the remote side of ``process_vm_readv``/``process_vm_writev``,
``ptrace(PTRACE_PEEKDATA)``. Keys are not checked there at all
(KERN-FOREIGN-BYPASS; observed, rows m). Sources: :kernel:`7.2 mm/memory.c
__access_remote_vm`, :kernel:`7.2 mm/gup.c check_vma_flags`,
:kernel:`7.2 fs/proc/base.c mem_rw`, :kernel:`7.2 mm/process_vm_access.c
process_vm_rw_single_vec`, :kernel:`7.2 kernel/ptrace.c generic_ptrace_peekdata`,
:kernel:`7.2 fs/pipe.c anon_pipe_read anon_pipe_write`.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import cabi
from .access import fault_in, page_access, read_bytes, write_bytes
from .mm import TASK_SIZE, VM_IO, VM_MAYREAD, VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE
from .uapi import (
    EAGAIN, EBADF, EFAULT, EINVAL, EIO, ENOENT, EPIPE, ESPIPE, ESRCH, PAGE_SHIFT, PAGE_SIZE, SIGPIPE,
)

if TYPE_CHECKING:
    from .mm import Mm
    from .system import System
    from .tasks import Thread

PTRACE_PEEKDATA = 2
PTRACE_POKEDATA = 5
#: The model's pipes never block (as if made with ``pipe2(O_NONBLOCK)``):
#: no step of the model may wait.
PIPE_BUF_SIZE = 65536
#: ``UIO_MAXIOV``: at most 1024 iovecs per call (include/uapi/linux/uio.h).
UIO_MAXIOV = 1024
#: ``MAX_RW_COUNT``: one read or write moves at most INT_MAX rounded down to a page.
MAX_RW_COUNT = 0x7FFFF000
#: ``PVM_MAX_USER_PAGES``: the remote pages process_vm_* pins per round (8 KiB of page pointers).
PVM_MAX_PAGES = 1024
#: ``TASK_SIZE_MAX`` on x86-64 (4-level paging): where user addresses end.
TASK_SIZE_MAX = TASK_SIZE
U64 = 0xFFFFFFFFFFFFFFFF


def access_ok(addr: int, size: int) -> bool:
    """``access_ok``: the range lies below TASK_SIZE_MAX (the generic check of
    include/asm-generic/access_ok.h). 6.12's x86 version refuses one byte more at the very
    top (``USER_PTR_MAX`` was TASK_SIZE_MAX - 1); the model does not."""
    return size <= TASK_SIZE_MAX and addr <= TASK_SIZE_MAX - size


def _pages(addr: int, length: int):
    """(first address, byte count) for each page the range touches."""
    end = addr + length
    while addr < end:
        n = min(end, (addr & ~(PAGE_SIZE - 1)) + PAGE_SIZE) - addr
        yield addr, n
        addr += n


def copy_to_user_with_pkru(thread: Thread, addr: int, data: bytes, pkru: int) -> int:
    """Write ``data`` at ``addr`` as the kernel does, with ``pkru`` in the CPU.

    Returns the number of bytes written (a denied page stops the copy), or
    -EFAULT when not even the first byte could be written.
    """
    mm, system = thread.process.mm, thread.system
    done = 0
    for a, n in _pages(addr, len(data)):
        if addr >= 1 << 64 or page_access(mm, pkru, a, write=True) is not None:
            break
        write_bytes(system, mm, a, data[done:done + n])
        done += n
    return done if done or not data else -EFAULT


def copy_to_user(thread: Thread, addr: int, data: bytes) -> int:
    """``copy_to_user`` under the calling thread's PKRU."""
    return copy_to_user_with_pkru(thread, addr, data, thread.pkru)


def copy_from_user(thread: Thread, addr: int, length: int) -> bytes | int:
    """``copy_from_user`` under the calling thread's PKRU: the bytes, or -EFAULT.

    A copy that stops part way returns the bytes it got.
    """
    return copy_from_user_with_pkru(thread, addr, length, thread.pkru)


def copy_from_user_with_pkru(thread: Thread, addr: int, length: int, pkru: int) -> bytes | int:
    """Read user memory as the kernel does, with ``pkru`` in the CPU."""
    mm, system = thread.process.mm, thread.system
    out = bytearray()
    for a, n in _pages(addr, length):
        if page_access(mm, pkru, a) is not None:
            break
        out += read_bytes(system, mm, a, n)
    return bytes(out) if out or not length else -EFAULT


def access_remote_vm(system: System, mm: Mm, addr: int, length: int, *, write: bool,
                     data: bytes = b"", force: bool) -> bytes | int:
    """``__access_remote_vm``: a foreign access, which never looks at keys.

    With FOLL_FORCE (``/proc/PID/mem``, ptrace) a VMA that may be made
    readable or writable (VM_MAYREAD, VM_MAYWRITE) is enough; without it
    (``process_vm_*``) the VMA must be readable or writable now. A page with
    no PTE is faulted in, and so is the zero page for a write (GUP does not
    follow a read-only PTE for FOLL_WRITE: the write fault copies it). Returns
    the bytes read or the count written; -EFAULT if nothing could be done.
    """
    out = bytearray()
    done = 0
    for a, n in _pages(addr, length):
        if not _pin_page(mm, a, write, force):
            break

        if write:
            write_bytes(system, mm, a, data[done:done + n])
        else:
            out += read_bytes(system, mm, a, n)
        done += n
    if not done:
        return -EFAULT
    return bytes(out) if not write else done


def _pin_page(mm: Mm, addr: int, write: bool, force: bool) -> bool:
    """``get_user_pages_remote`` of one page: may the kernel reach it, and fault it in if so.

    A write to a page that has no page yet or only the shared zero page gets a page of
    its own (``FOLL_WRITE`` breaks copy on write).
    """
    vma = mm.find_vma(addr)
    if vma is None or not _vma_allows(vma.flags, write, force):
        return False
    pte = mm.ptes.get(addr >> PAGE_SHIFT)
    if pte is None or (write and pte.zero_page):
        fault_in(mm, vma, addr, write)
    return True


def _vma_allows(flags: int, write: bool, force: bool) -> bool:
    """``check_vma_flags`` (mm/gup.c): FOLL_FORCE may write a private mapping that could be
    made writable (copy on write), and read one that could be made readable.

    A VM_IO or VM_PFNMAP VMA ([vvar]) is never reached: it has no pages, and
    its special mapping has no ``vm_ops->access`` for ``__access_remote_vm``
    to fall back on ("vDSO code relies that VVAR can't be accessed remotely").
    """
    if flags & (VM_IO | VM_PFNMAP):
        return False
    if write:
        if flags & VM_WRITE:
            return True
        return force and flags & (VM_SHARED | VM_MAYWRITE) == VM_MAYWRITE
    if flags & VM_READ:
        return True
    return force and bool(flags & VM_MAYREAD)


@dataclass(eq=False)
class Pipe:
    """A pipe's buffer, shared by its two ends."""

    data: bytearray = field(default_factory=bytearray)
    readers: int = 1
    writers: int = 1


@dataclass(eq=False)
class PipeEnd:
    pipe: Pipe
    write: bool


@dataclass(eq=False)
class ProcMem:
    """An open ``/proc/PID/mem``: the process, which program it ran when opened (its mm
    goes away with an exec or the process's end), and the file position."""

    pid: int
    execs: int = 0
    pos: int = 0
    #: False when the process had no mm any more at open time (it had ended).
    has_mm: bool = True


def _file(thread: Thread, fd: int):
    f = thread.process.fds.get(cabi.int32(fd))
    if f is None:
        return -EBADF
    return f


def sys_pipe(thread: Thread) -> tuple[int, int]:
    proc = thread.process
    p = Pipe()
    rfd = proc.alloc_fd(PipeEnd(p, False))
    wfd = proc.alloc_fd(PipeEnd(p, True))
    return rfd, wfd


def close_file(f: object, system: System) -> None:
    """Drop one reference to an open file (a pipe end counts its readers and writers,
    an io_uring instance its descriptors)."""
    from .io_uring import IoUring, put_ring
    if isinstance(f, PipeEnd):
        if f.write:
            f.pipe.writers -= 1
        else:
            f.pipe.readers -= 1
    elif isinstance(f, IoUring):
        put_ring(system, f)


def sys_close(thread: Thread, fd: int) -> int:
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    del thread.process.fds[cabi.int32(fd)]
    close_file(f, thread.system)
    return 0


def _vfs_check(f, buf: int, count: int, write: bool) -> int:
    """``vfs_read``/``vfs_write`` before the file's own method: EBADF for the wrong end of a
    pipe, EFAULT for a buffer beyond user space (``access_ok``); 0 when both pass."""
    if isinstance(f, PipeEnd) and f.write != write:
        return -EBADF
    if not isinstance(f, (PipeEnd, ProcMem)):
        return -EINVAL          # no read or write method (an io_uring fd): FMODE_CAN_READ/WRITE
    if not access_ok(buf, count):
        return -EFAULT
    return 0


def sys_write(thread: Thread, fd: int, buf: int, count: int, *, pkru: int | None = None) -> int:
    """``write(2)``: to a pipe, or to ``/proc/PID/mem`` at its file position.

    The kernel copies from ``buf`` under the caller's PKRU. ``pipe_write``
    fills one pipe page at a time; a page that cannot be filled completely
    is dropped, and the call fails with EFAULT if nothing was written
    before it. With no reader left: SIGPIPE, then EPIPE. ``pkru``: the PKRU of
    the task that runs the copy, when it is not ``thread`` (an io_uring
    worker or SQPOLL thread, :mod:`pkeyspec.io_uring`).
    """
    buf, count = cabi.ulong(buf), cabi.ulong(count)
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    err = _vfs_check(f, buf, count, True)
    if err:
        return err
    if isinstance(f, ProcMem):
        return _mem_file_rw(thread, f, buf, count, write=True)
    if count == 0:
        return 0
    if f.pipe.readers == 0:
        from .signals import send_signal
        send_signal(thread, SIGPIPE, code=0)      # send_sig(SIGPIPE, current, 0): SI_USER
        return -EPIPE
    count = min(count, PIPE_BUF_SIZE - len(f.pipe.data))
    if count == 0:
        return -EAGAIN
    data = copy_from_user_with_pkru(thread, buf, count, thread.pkru if pkru is None else pkru)
    got = 0 if isinstance(data, int) else len(data)
    if got < count:
        got -= got % PAGE_SIZE          # the partly filled page is dropped
    if got == 0:
        return -EFAULT
    f.pipe.data += data[:got]
    return got


def sys_read(thread: Thread, fd: int, buf: int, count: int, *, pkru: int | None = None) -> int:
    """``read(2)``: from a pipe, or from ``/proc/PID/mem`` at its file position.

    The kernel copies into ``buf`` under the caller's PKRU. ``pipe_read``
    empties one pipe page at a time; a page that cannot be copied out
    completely stays in the pipe, and the call fails with EFAULT if nothing
    was read before it. ``pkru`` as for :func:`sys_write`.
    """
    buf, count = cabi.ulong(buf), cabi.ulong(count)
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    err = _vfs_check(f, buf, count, False)
    if err:
        return err
    if isinstance(f, ProcMem):
        return _mem_file_rw(thread, f, buf, count, write=False)
    if count == 0:
        return 0
    if not f.pipe.data:
        return 0 if f.pipe.writers == 0 else -EAGAIN
    done = 0
    while done < count and f.pipe.data:
        chars = min(count - done, PAGE_SIZE, len(f.pipe.data))
        chunk = bytes(f.pipe.data[:chars])
        if copy_to_user_with_pkru(thread, buf + done, chunk,
                                  thread.pkru if pkru is None else pkru) != chars:
            return done if done else -EFAULT
        del f.pipe.data[:chars]
        done += chars
    return done


def sys_open_proc_mem(thread: Thread, pid: int) -> int:
    """``open("/proc/PID/mem", O_RDWR)``; ``pid`` 0 means ``/proc/self/mem``.

    An ended process that nobody has waited for (the model never reaps one)
    still has its ``/proc/PID``: the file opens, without an mm, and reads 0 bytes.
    """
    pid = cabi.int32(pid) or thread.process.pid
    target = thread.system.processes.get(pid)
    if target is None:
        return -ENOENT
    return thread.process.alloc_fd(ProcMem(pid, target.execs, has_mm=target.end is None))


def _mem_file_rw(thread: Thread, f: ProcMem, buf: int, count: int, write: bool,
                 offset: int | None = None) -> int:
    """``mem_rw`` (fs/proc/base.c) at ``offset``, or at the file position, which it advances.

    No mm (the process had ended when the file was opened, or has ended or
    exec'd since): 0 bytes. Otherwise one page-sized chunk at a time through
    a kernel page: the target is accessed foreign, with FOLL_FORCE (no keys);
    the caller's buffer is copied with the caller's PKRU, and any failed copy
    makes the whole call EFAULT. A target chunk that cannot be accessed ends
    the call: EIO if nothing was done yet.
    """
    target = thread.system.processes[f.pid]
    if not f.has_mm or target.end is not None or target.execs != f.execs:
        return 0
    addr = f.pos if offset is None else offset
    count = min(count, MAX_RW_COUNT)            # rw_verify_area / vfs_read
    copied = 0
    while count:
        this_len = min(count, PAGE_SIZE)
        if write:
            data = copy_from_user(thread, buf, this_len)
            if isinstance(data, int) or len(data) != this_len:
                copied = -EFAULT
                break
            done = access_remote_vm(thread.system, target.mm, addr, this_len, write=True,
                                    data=data, force=True)
            this_len = 0 if done < 0 else done
        else:
            data = access_remote_vm(thread.system, target.mm, addr, this_len, write=False,
                                    force=True)
            this_len = 0 if isinstance(data, int) else len(data)
            if this_len and copy_to_user(thread, buf, data) != this_len:
                copied = -EFAULT
                break
        if not this_len:
            copied = copied if copied else -EIO
            break
        buf, addr, count, copied = buf + this_len, (addr + this_len) & U64, count - this_len, \
            copied + this_len
    if offset is None:
        f.pos = addr
    return copied


def _positional(thread: Thread, fd: int, buf: int, count: int, offset: int, write: bool) -> int:
    """``ksys_pread64``/``ksys_pwrite64``: a negative offset (as a loff_t) is EINVAL before
    the descriptor is looked at; a pipe has no offset (ESPIPE)."""
    buf, count, offset = cabi.ulong(buf), cabi.ulong(count), cabi.ulong(offset)
    fd = cabi.int32(fd)
    if offset >> 63:
        return -EINVAL
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    if not isinstance(f, ProcMem):
        return -ESPIPE          # no FMODE_PREAD/FMODE_PWRITE: a pipe, an io_uring fd
    err = _vfs_check(f, buf, count, write)
    if err:
        return err
    return _mem_file_rw(thread, f, buf, count, write, offset)


def sys_pread(thread: Thread, fd: int, buf: int, count: int, offset: int) -> int:
    """``pread`` on ``/proc/PID/mem`` (a pipe has no offset: ESPIPE)."""
    return _positional(thread, fd, buf, count, offset, write=False)


def sys_pwrite(thread: Thread, fd: int, buf: int, count: int, offset: int) -> int:
    """``pwrite`` on ``/proc/PID/mem`` (a pipe has no offset: ESPIPE)."""
    return _positional(thread, fd, buf, count, offset, write=True)


def _target(thread: Thread, pid: int):
    proc = thread.system.processes.get(cabi.int32(pid))
    if proc is None or proc.end is not None:
        return None
    return proc


def iovecs(iov) -> list[tuple[int, int]]:
    """A Python iovec array, as C would read it: a list (or tuple) of ``(base, len)`` pairs of
    ints, each converted to ``unsigned long``. Anything else is a TypeError, at once."""
    if not isinstance(iov, (list, tuple)):
        raise TypeError(f"an iovec array is a list of (base, len) pairs, not {type(iov).__name__}")
    out = []
    for item in iov:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise TypeError(f"an iovec is a (base, len) pair, not {type(item).__name__} "
                            f"{reprlib.repr(item)}")
        out.append((cabi.ulong(item[0]), cabi.ulong(item[1])))
    return out


def iovec_from_user(iov: list[tuple[int, int]]) -> int:
    """``iovec_from_user``: -EINVAL for more than UIO_MAXIOV iovecs or a length that is
    negative as an ``ssize_t``; else 0."""
    if len(iov) > UIO_MAXIOV or any(length >> 63 for _, length in iov):
        return -EINVAL
    return 0


class IovIter:
    """The caller's side of process_vm_readv/writev: an ``iov_iter`` over its iovecs.

    ``import_iovec`` built it: each iovec passed ``access_ok`` and the total
    is at most MAX_RW_COUNT. Copies go through ``copy_to_user`` and
    ``copy_from_user``, under the calling thread's PKRU, and advance by what
    was copied; a copy that stops short stops the iterator's caller.
    """

    def __init__(self, thread: Thread, segs: list[tuple[int, int]]) -> None:
        self.thread = thread
        self.segs = [(base, length) for base, length in segs if length]
        self.total = sum(length for _, length in self.segs)
        self.seg = 0
        self.off = 0
        self.done = 0

    def count(self) -> int:
        return self.total - self.done

    def _advance(self, n: int) -> None:
        self.done += n
        self.off += n
        while self.seg < len(self.segs) and self.off >= self.segs[self.seg][1]:
            self.off -= self.segs[self.seg][1]
            self.seg += 1

    def copy_out(self, data: bytes) -> int:
        """``copy_page_to_iter``: write ``data`` into the caller's memory; the bytes written."""
        written = 0
        while written < len(data) and self.seg < len(self.segs):
            base, length = self.segs[self.seg]
            n = min(length - self.off, len(data) - written)
            got = max(copy_to_user(self.thread, base + self.off, data[written:written + n]), 0)
            self._advance(got)
            written += got
            if got < n:
                break
        return written

    def copy_in(self, n: int) -> bytes:
        """``copy_page_from_iter``: read up to ``n`` bytes of the caller's memory."""
        out = b""
        while len(out) < n and self.seg < len(self.segs):
            base, length = self.segs[self.seg]
            want = min(length - self.off, n - len(out))
            got = copy_from_user(self.thread, base + self.off, want)
            got = b"" if isinstance(got, int) else got
            self._advance(len(got))
            out += got
            if len(got) < want:
                break
        return out


def import_iovec(thread: Thread, iov: list[tuple[int, int]]) -> IovIter | int:
    """``import_iovec``: ``iovec_from_user``, then EFAULT for an iovec that fails
    ``access_ok``; lengths past a total of MAX_RW_COUNT are cut."""
    err = iovec_from_user(iov)
    if err:
        return err
    segs, total = [], 0
    for base, length in iov:
        if not access_ok(base, length):
            return -EFAULT
        length = min(length, MAX_RW_COUNT - total)
        segs.append((base, length))
        total += length
    return IovIter(thread, segs)


def _rw_single_vec(thread: Thread, mm: Mm, addr: int, length: int, it: IovIter,
                   write: bool) -> int:
    """``process_vm_rw_single_vec``: pin up to PVM_MAX_PAGES remote pages at a time (no
    FOLL_FORCE, no keys), then copy them one by one while the caller's side has room.
    0, or -EFAULT when no page could be pinned or a local copy stopped short."""
    if length == 0:
        return 0
    pa, offset = addr & ~(PAGE_SIZE - 1), addr & (PAGE_SIZE - 1)
    nr_pages = (((addr + length - 1) & U64) // PAGE_SIZE - addr // PAGE_SIZE + 1) & U64
    system = thread.system
    while nr_pages and it.count():
        pinned = 0
        while pinned < min(nr_pages, PVM_MAX_PAGES) and \
                _pin_page(mm, pa + pinned * PAGE_SIZE, write, False):
            pinned += 1
        if not pinned:
            return -EFAULT
        left = min(pinned * PAGE_SIZE - offset, length)
        length -= left
        page = pa
        while left and it.count():                      # process_vm_rw_pages
            copy = min(PAGE_SIZE - offset, left)
            if write:
                data = it.copy_in(copy)
                write_bytes(system, mm, page + offset, data)
                copied = len(data)
            else:
                copied = it.copy_out(read_bytes(system, mm, page + offset, copy))
            left -= copied
            if copied < copy and it.count():
                return -EFAULT
            offset, page = 0, page + PAGE_SIZE
        offset = 0
        nr_pages -= pinned
        pa += pinned * PAGE_SIZE
    return 0


def sys_process_vm_rw(thread: Thread, pid: int, local_iov, remote_iov, flags: int,
                      write: bool) -> int:
    """``process_vm_rw``: the remote side foreign (no keys), the local side checked.

    In Linux's order: flags != 0 is EINVAL; the local iovecs are imported
    (EINVAL, EFAULT) and, if they hold no byte, the call returns 0; then the
    remote iovecs (EINVAL); if they hold no byte, 0; then the process (ESRCH,
    also for one that has ended). Only min(local, remote) bytes are copied,
    page by page; the count copied is returned if it is not 0, else the error.
    """
    pid, flags = cabi.int32(pid), cabi.ulong(flags)
    local, remote = iovecs(local_iov), iovecs(remote_iov)
    if flags:
        return -EINVAL
    it = import_iovec(thread, local)
    if isinstance(it, int):
        return it
    if not it.count():
        return 0
    err = iovec_from_user(remote)
    if err:
        return err
    if not any(length for _, length in remote):
        return 0
    target = _target(thread, pid)
    if target is None:
        return -ESRCH
    rc = 0
    for base, length in remote:
        if rc or not it.count():
            break
        rc = _rw_single_vec(thread, target.mm, base, length, it, write)
    return it.done if it.done else rc


def sys_process_vm_readv(thread: Thread, pid: int, local_iov, remote_iov, flags: int) -> int:
    """``process_vm_readv``: remote side foreign (no keys), local side checked."""
    return sys_process_vm_rw(thread, pid, local_iov, remote_iov, flags, write=False)


def sys_process_vm_writev(thread: Thread, pid: int, local_iov, remote_iov, flags: int) -> int:
    """``process_vm_writev``: local side checked, remote side foreign (no keys)."""
    return sys_process_vm_rw(thread, pid, local_iov, remote_iov, flags, write=True)


def sys_ptrace(thread: Thread, request: int, pid: int, addr: int, data: int) -> int:
    """``ptrace(PTRACE_PEEKDATA | PTRACE_POKEDATA, ...)``: foreign, FOLL_FORCE, 8 bytes.

    The model does not check the tracing relationship or the tracee's stop state.
    """
    request, addr, data = cabi.int32(request), cabi.ulong(addr), cabi.ulong(data)
    target = _target(thread, pid)
    if target is None:
        return -ESRCH
    if request == PTRACE_PEEKDATA:
        got = access_remote_vm(thread.system, target.mm, addr, 8, write=False, force=True)
        if isinstance(got, int) or len(got) != 8:
            return -EIO
        return int.from_bytes(got, "little")
    if request == PTRACE_POKEDATA:
        word = data.to_bytes(8, "little")
        done = access_remote_vm(thread.system, target.mm, addr, 8, write=True, data=word,
                                force=True)
        return 0 if done == 8 else -EIO
    return -EIO
