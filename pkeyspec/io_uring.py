"""io_uring: which task's PKRU the kernel's copies for a request run under.

The kernel copies a request's data from or to user memory with
``copy_from_user``/``copy_to_user``, which the CPU checks against the PKRU
of the task that runs the copy (KERN-COPY-USER). For an io_uring request
that task is one of three:

- **inline**: the submitting thread, inside ``io_uring_enter``, under its
  current PKRU;
- **an io-wq worker** (``IOSQE_ASYNC``, or a request that cannot complete
  inline): a thread of the process made by ``create_io_thread``, with
  ``PF_IO_WORKER`` and not ``PF_KTHREAD``, so ``copy_thread`` gives it
  ``read_pkru()`` of the task that created it. io-wq belongs to the
  submitting task (``current->io_uring``), not to the ring; its first worker
  is created by the first punted request, in the submitting thread, with
  that thread's PKRU at that moment, and then stays idle for the next ones
  (the last worker of a pool never times out);
- **the SQPOLL thread** (``IORING_SETUP_SQPOLL``): made by ``io_uring_setup``
  with ``create_io_thread``, so it has the PKRU of the thread that called
  ``io_uring_setup``, at that moment. The requests it punts go to its own
  io-wq, whose workers it creates: the same PKRU.

None of them takes ``init_pkru``, which only true kernel threads
(``PF_KTHREAD``) get (KERN-KTHREAD-DEFAULT). Observed on 6.1, 6.12 and 7.2
(conformance scenarios ``r_*``). From 6.18 (commit 38aa434ab933, in 7.0 and
backported to 6.18 and 6.19 stable) a task's io-wq workers exit once the
task has no ring left, so the next ring's first punt creates a new worker.

The model keeps no rings in user memory: :func:`submit_and_wait` takes one
SQE as Python values and returns its CQE's ``res``. Only pipes are modelled
as the file of a request; a request that would wait (an empty pipe, a full
one: io_uring arms a poll and completes it later from task work) is not
modelled and raises :class:`NotImplementedError`, as does any setup flag,
opcode or SQE flag beyond ``IORING_SETUP_SQPOLL``, ``IORING_OP_READ``,
``IORING_OP_WRITE`` and ``IOSQE_ASYNC``.

Sources: ``io_uring/io_uring.c`` (``io_uring_setup``, ``io_uring_create``,
7.x ``io_uring_sanitise_params`` and ``io_uring_fill_params``,
``io_uring_enter``, ``io_init_req``), ``io_uring/rw.c`` (``io_read``,
``io_write``, ``io_rw_init_file``), ``io_uring/io-wq.c``
(``io_wq_enqueue``, ``io_wq_create_worker``, ``create_io_worker``,
``io_wq_worker``), ``io_uring/tctx.c`` (``__io_uring_add_tctx_node``,
``io_uring_del_tctx_node``), ``io_uring/sqpoll.c``
(``io_sq_offload_create``), ``kernel/fork.c`` (``create_io_thread``),
``arch/x86/kernel/process.c`` (``copy_thread``), ``fs/exec.c``
(``io_uring_task_cancel``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import cabi, uaccess
from .uapi import (
    EAGAIN, EBADF, EINVAL, ENOSYS, EOPNOTSUPP, IORING_OP_READ, IORING_OP_WRITE,
    IORING_SETUP_SQPOLL, IOSQE_ASYNC,
)

if TYPE_CHECKING:
    from .system import System
    from .tasks import Thread

IORING_MAX_ENTRIES = 32768

#: Every ``io_uring_setup`` flag the kernel accepts (6.1: up to DEFER_TASKRUN,
#: 6.12: up to NO_SQARRAY, 7.2: up to SQ_REWIND); other bits are EINVAL.
SETUP_FLAGS = {(6, 1): (1 << 14) - 1, (6, 12): (1 << 17) - 1, (7, 2): (1 << 21) - 1}
#: ``IORING_OP_LAST``: an opcode at or above it completes with EINVAL.
OP_LAST = {(6, 1): 49, (6, 12): 58, (7, 2): 65}
#: ``SQE_VALID_FLAGS``: FIXED_FILE, IO_DRAIN, IO_LINK, IO_HARDLINK, ASYNC, BUFFER_SELECT,
#: CQE_SKIP_SUCCESS (the same in 6.1, 6.12 and 7.2); other bits complete with EINVAL.
SQE_VALID_FLAGS = 0x7F


def _by_series(table: dict, kernel: tuple[int, int]):
    """The entry of the newest modelled series not newer than ``kernel``.

    The tables hold what 6.1, 6.12 and 7.2 define; a release in between gets
    the older series' entry, which may miss flags and opcodes it added.
    """
    return table[max(k for k in table if k <= kernel)] if kernel >= min(table) else table[min(table)]


@dataclass(eq=False)
class IoUring:
    """An io_uring instance (``struct io_ring_ctx``) behind a file descriptor."""

    ring_id: int
    #: The pid of the process that set it up (its mm is the SQPOLL thread's).
    pid: int
    #: The SQPOLL thread's PKRU (``read_pkru()`` of the caller of io_uring_setup), or None.
    sqpoll_pkru: int | None = None
    #: Open file descriptors that refer to it, in every process (fork shares it).
    refs: int = 1


@dataclass
class IoUringTask:
    """A task's io_uring context (``current->io_uring``, ``struct io_uring_task``)."""

    #: The rings this task has submitted to (``tctx->xa``).
    rings: set[int] = field(default_factory=set)
    #: The PKRU of its idle io-wq worker; None until a request is first punted.
    worker_pkru: int | None = None

    def copy(self) -> IoUringTask:
        return IoUringTask(set(self.rings), self.worker_pkru)


@dataclass(frozen=True)
class Sqe:
    """The fields of a submission queue entry that the model reads."""

    opcode: int
    fd: int
    addr: int
    len: int
    flags: int = 0


def _available(system: System) -> None:
    if system.kernel < (5, 1):
        raise OSError(ENOSYS, os.strerror(ENOSYS))    # io_uring arrived in 5.1
    if system.kernel < (6, 1):
        raise NotImplementedError("io_uring is modelled from Linux 6.1")


def sys_io_uring_setup(thread: Thread, entries: int, flags: int) -> int:
    """``io_uring_setup(entries, &params)`` with ``params.flags = flags``: the ring's fd, or -errno.

    Checks in the kernel's order: unknown flags, then ``entries`` (0, or more
    than IORING_MAX_ENTRIES without IORING_SETUP_CLAMP), all EINVAL. (7.x checks
    combinations of known flags in between, also with EINVAL.) With
    IORING_SETUP_SQPOLL the new kernel thread takes this thread's PKRU now.
    """
    _available(thread.system)
    entries, flags = cabi.uint32(entries), cabi.uint32(flags)
    if flags & ~_by_series(SETUP_FLAGS, thread.system.kernel):
        return -EINVAL
    if not entries or entries > IORING_MAX_ENTRIES:
        return -EINVAL
    if flags & ~IORING_SETUP_SQPOLL:
        raise NotImplementedError(f"io_uring_setup flags {flags:#x}: only IORING_SETUP_SQPOLL is modelled")
    ring = IoUring(thread.system._new_id(), thread.process.pid,
                   thread.pkru if flags & IORING_SETUP_SQPOLL else None)
    return thread.process.alloc_fd(ring)


def submit_and_wait(thread: Thread, ring_fd: int, sqe: Sqe) -> int:
    """``io_uring_enter(ring_fd, 1, 1, IORING_ENTER_GETEVENTS)`` for one SQE; its CQE's ``res``.

    A failed ``io_uring_enter`` raises OSError (EBADF, EOPNOTSUPP for an fd
    that is not a ring); a failed request completes with a negative errno
    in ``res``, as the kernel writes it.
    """
    _available(thread.system)
    ring = thread.process.fds.get(cabi.int32(ring_fd))
    if ring is None:
        raise OSError(EBADF, os.strerror(EBADF))
    if not isinstance(ring, IoUring):
        raise OSError(EOPNOTSUPP, os.strerror(EOPNOTSUPP))
    if ring.sqpoll_pkru is not None and ring.pid != thread.process.pid:
        raise NotImplementedError("an SQPOLL ring used from another process is not modelled")
    if ring.sqpoll_pkru is None:
        # io_uring_add_tctx_node: the submitting task registers with the ring. (With SQPOLL
        # the SQ thread submits, and it is registered already.)
        if thread.io_uring is None:
            thread.io_uring = IoUringTask()
        thread.io_uring.rings.add(ring.ring_id)
    return _issue(thread, ring, sqe)


def _issue(thread: Thread, ring: IoUring, sqe: Sqe) -> int:
    """``io_init_req`` then the opcode's issue: the CQE's res."""
    kernel = thread.system.kernel
    opcode, flags = cabi.uint32(sqe.opcode) & 0xFF, cabi.uint32(sqe.flags) & 0xFF
    if opcode >= _by_series(OP_LAST, kernel):
        return -EINVAL
    if flags & ~SQE_VALID_FLAGS:
        return -EINVAL
    if opcode not in (IORING_OP_READ, IORING_OP_WRITE):
        raise NotImplementedError(f"io_uring opcode {opcode} is not modelled")
    if flags & ~IOSQE_ASYNC:
        raise NotImplementedError(f"SQE flags {flags:#x}: only IOSQE_ASYNC is modelled")
    pkru, inline = executor_pkru(thread, ring, flags & IOSQE_ASYNC)
    fd, addr, length = cabi.int32(sqe.fd), cabi.ulong(sqe.addr), cabi.uint32(sqe.len)
    f = thread.process.fds.get(fd)
    if f is None:
        return -EBADF
    if not isinstance(f, uaccess.PipeEnd):
        raise NotImplementedError("only pipes are modelled as the file of an io_uring request")
    if opcode == IORING_OP_READ:
        res = uaccess.sys_read(thread, fd, addr, length, pkru=pkru)
    else:
        if f.write and f.pipe.readers == 0 and length and not inline:
            raise NotImplementedError("SIGPIPE sent to an io_uring kernel thread is not modelled")
        res = uaccess.sys_write(thread, fd, addr, length, pkru=pkru)
    if res == -EAGAIN:
        raise NotImplementedError("the request would wait (io_uring arms a poll): not modelled")
    return res


def executor_pkru(thread: Thread, ring: IoUring, punt: bool) -> tuple[int, bool]:
    """The PKRU the request's copies run under, and whether it runs inline in ``thread``.

    SQPOLL: the SQ thread's PKRU, for its own issue and for its io-wq workers
    (which it creates). Otherwise a punted request goes to the submitting
    thread's io-wq worker, created now (``create_io_worker``: ``copy_thread``
    copies ``read_pkru()``) if the thread has none; an inline one runs under
    the thread's current PKRU.
    """
    if ring.sqpoll_pkru is not None:
        return ring.sqpoll_pkru, False
    if not punt:
        return thread.pkru, True
    if thread.io_uring.worker_pkru is None:
        thread.io_uring.worker_pkru = thread.pkru
    return thread.io_uring.worker_pkru, False


def put_ring(system: System, ring: IoUring) -> None:
    """One file descriptor of ``ring`` closed; on the last one the ring goes away.

    Every task that submitted to it drops it (``io_uring_del_tctx_node``,
    run as task work). From 6.18, a task left with no ring sets its io-wq to
    exit on idle: its worker exits, and the next punted request creates a
    new one with the task's PKRU at that time.
    """
    ring.refs -= 1
    if ring.refs:
        return
    for proc in system.processes.values():
        for t in proc.threads:
            if t.io_uring is not None and ring.ring_id in t.io_uring.rings:
                t.io_uring.rings.discard(ring.ring_id)
                if not t.io_uring.rings and system.kernel >= (6, 18):
                    t.io_uring.worker_pkru = None


def exec_cleanup(thread: Thread) -> None:
    """At execve: ``io_uring_task_cancel`` frees the task's io_uring context and its workers,
    and the ring fds, which io_uring makes ``O_CLOEXEC``, are closed."""
    thread.io_uring = None
    proc = thread.process
    for fd in [fd for fd, f in proc.fds.items() if isinstance(f, IoUring)]:
        put_ring(thread.system, proc.fds.pop(fd))
