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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import cabi
from .access import fault_in, page_access, read_bytes, write_bytes
from .mm import VM_IO, VM_MAYREAD, VM_MAYWRITE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE
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
        vma = mm.find_vma(a)
        if vma is None:
            break
        if not _vma_allows(vma.flags, write, force):
            break
        pte = mm.ptes.get(a >> PAGE_SHIFT)
        if pte is None or write and pte.zero_page:
            fault_in(mm, vma, a, write)
        if write:
            write_bytes(system, mm, a, data[done:done + n])
        else:
            out += read_bytes(system, mm, a, n)
        done += n
    if not done:
        return -EFAULT
    return bytes(out) if not write else done


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
    """An open ``/proc/PID/mem``."""

    pid: int


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


def sys_write(thread: Thread, fd: int, buf: int, count: int, *, pkru: int | None = None) -> int:
    """``write(2)`` to a pipe: the kernel copies from ``buf`` under the caller's PKRU.

    ``pipe_write`` fills one pipe page at a time; a page that cannot be
    filled completely is dropped, and the call fails with EFAULT if nothing
    was written before it. With no reader left: SIGPIPE, then EPIPE.
    ``pkru``: the PKRU of the task that runs the copy, when it is not
    ``thread`` (an io_uring kernel thread, :mod:`pkeyspec.io_uring`).
    """
    buf, count = cabi.ulong(buf), cabi.ulong(count)
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    if not isinstance(f, PipeEnd) or not f.write:
        return -EBADF
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
    """``read(2)`` from a pipe: the kernel copies into ``buf`` under the caller's PKRU.

    ``pipe_read`` empties one pipe page at a time; a page that cannot be
    copied out completely stays in the pipe, and the call fails with EFAULT
    if nothing was read before it. ``pkru`` as for :func:`sys_write`.
    """
    buf, count = cabi.ulong(buf), cabi.ulong(count)
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    if not isinstance(f, PipeEnd) or f.write:
        return -EBADF
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
    """``open("/proc/PID/mem", O_RDWR)``; ``pid`` 0 means ``/proc/self/mem``."""
    pid = cabi.int32(pid) or thread.process.pid
    if pid not in thread.system.processes or thread.system.processes[pid].end is not None:
        return -ENOENT
    return thread.process.alloc_fd(ProcMem(pid))


def _mem_rw(thread: Thread, fd: int, buf: int, count: int, offset: int, write: bool) -> int:
    """``mem_rw`` (fs/proc/base.c): one page-sized chunk at a time through a kernel page.

    The target is accessed foreign, with FOLL_FORCE (no keys); the caller's
    buffer is copied with the caller's PKRU, and any failed copy makes the
    whole call EFAULT. A target chunk that cannot be accessed ends the call:
    EIO if nothing was done yet.
    """
    buf, count, offset = cabi.ulong(buf), cabi.ulong(count), cabi.ulong(offset)
    f = _file(thread, fd)
    if isinstance(f, int):
        return f
    if isinstance(f, PipeEnd):
        return -ESPIPE
    target = thread.system.processes[f.pid]
    copied = 0
    while count:
        this_len = min(count, PAGE_SIZE)
        if write:
            data = copy_from_user(thread, buf, this_len)
            if isinstance(data, int) or len(data) != this_len:
                return -EFAULT
            done = access_remote_vm(thread.system, target.mm, offset, this_len, write=True,
                                    data=data, force=True)
            this_len = 0 if done < 0 else done
        else:
            data = access_remote_vm(thread.system, target.mm, offset, this_len, write=False,
                                    force=True)
            this_len = 0 if isinstance(data, int) else len(data)
            if this_len and copy_to_user(thread, buf, data) != this_len:
                return -EFAULT
        if not this_len:
            return copied if copied else -EIO
        buf, offset, count, copied = buf + this_len, offset + this_len, count - this_len, copied + this_len
    return copied


def sys_pread(thread: Thread, fd: int, buf: int, count: int, offset: int) -> int:
    """``pread`` on ``/proc/PID/mem`` (a pipe has no offset: ESPIPE)."""
    return _mem_rw(thread, fd, buf, count, offset, write=False)


def sys_pwrite(thread: Thread, fd: int, buf: int, count: int, offset: int) -> int:
    """``pwrite`` on ``/proc/PID/mem`` (a pipe has no offset: ESPIPE)."""
    return _mem_rw(thread, fd, buf, count, offset, write=True)


def _target(thread: Thread, pid: int):
    proc = thread.system.processes.get(cabi.int32(pid))
    if proc is None or proc.end is not None:
        return None
    return proc


def _gather(iov, read) -> bytes | int:
    """Read the iovecs in order until one fails: the bytes, or the error if none could be read."""
    out = b""
    for base, length in iov:
        got = read(cabi.ulong(base), cabi.ulong(length))
        if isinstance(got, int):
            return got if not out else out
        out += got
    return out


def sys_process_vm_readv(thread: Thread, pid: int, local_iov, remote_iov, flags: int) -> int:
    """``process_vm_readv``: remote side foreign (no keys), local side checked."""
    if cabi.ulong(flags):
        return -EINVAL
    target = _target(thread, pid)
    if target is None:
        return -ESRCH
    remote = _gather(remote_iov, lambda base, length: access_remote_vm(
        thread.system, target.mm, base, length, write=False, force=False))
    if isinstance(remote, int):
        return remote
    done = 0
    for base, length in local_iov:
        piece = remote[done:done + cabi.ulong(length)]
        if not piece:
            break
        n = copy_to_user(thread, cabi.ulong(base), piece)
        if n < 0:
            return n if not done else done
        done += n
        if n < len(piece):
            break
    return done


def sys_process_vm_writev(thread: Thread, pid: int, local_iov, remote_iov, flags: int) -> int:
    """``process_vm_writev``: local side checked, remote side foreign (no keys)."""
    if cabi.ulong(flags):
        return -EINVAL
    target = _target(thread, pid)
    if target is None:
        return -ESRCH
    local = _gather(local_iov, lambda base, length: copy_from_user(thread, base, length))
    if isinstance(local, int):
        return local
    done = 0
    for base, length in remote_iov:
        piece = local[done:done + cabi.ulong(length)]
        if not piece:
            break
        n = access_remote_vm(thread.system, target.mm, cabi.ulong(base), len(piece),
                             write=True, data=piece, force=False)
        if n < 0:
            return n if not done else done
        done += n
    return done


def sys_ptrace(thread: Thread, request: int, pid: int, addr: int, data: int) -> int:
    """``ptrace(PTRACE_PEEKDATA | PTRACE_POKEDATA, ...)``: foreign, FOLL_FORCE, 8 bytes.

    The model does not check the tracing relationship or the tracee's stop state.
    """
    request = cabi.int32(request)
    target = _target(thread, pid)
    if target is None:
        return -ESRCH
    addr = cabi.ulong(addr)
    if request == PTRACE_PEEKDATA:
        got = access_remote_vm(thread.system, target.mm, addr, 8, write=False, force=True)
        if isinstance(got, int) or len(got) != 8:
            return -EIO
        return int.from_bytes(got, "little")
    if request == PTRACE_POKEDATA:
        word = cabi.ulong(data).to_bytes(8, "little")
        done = access_remote_vm(thread.system, target.mm, addr, 8, write=True, data=word,
                                force=True)
        return 0 if done == 8 else -EIO
    return -EIO
