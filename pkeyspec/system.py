"""The machine: a CPU (with or without PKU) running one Linux kernel.

Everything the model knows lives in one :class:`System`, so a state can be
copied (:meth:`System.copy`) and compared (:meth:`System.state`) cheaply,
which the race explorer relies on.
"""

from __future__ import annotations

import copy
import os

from . import io_uring
from . import cabi
from .hardware import INIT_PKRU_VALUE, U32
from .mm import PROGRAM_BASE, Mm, initial_vmas
from .signals import SIG_IGN
from .tasks import Process, Thread
from .uapi import EINVAL, ENOENT, PAGE_SIZE



#: Where the main thread's ``struct rseq`` lives: glibc's thread control block, which a
#: static program keeps in its data segment (key 0).
RSEQ_AREA = PROGRAM_BASE + 2 * PAGE_SIZE + 0x100


def initial_sp(mm: Mm) -> int:
    """The main thread's stack pointer after exec: below the top page (argv, environment)."""
    stack = next(v for v in mm.vmas if v.name == "[stack]")
    return stack.end - 0x1000


def kstrtouint(text: str) -> int | None:
    """``kstrtouint(s, 0, &v)``: base from the prefix, one trailing newline allowed; None on error.

    A number that does not fit in 32 bits is an error too (-ERANGE in the kernel).
    """
    if not isinstance(text, str):
        raise TypeError(f"kstrtouint parses a str, not {type(text).__name__}")
    s = text[1:] if text.startswith("+") else text
    if s.endswith("\n"):
        s = s[:-1]
    if s[:2].lower() == "0x":
        base, digits = 16, s[2:]
    elif s.startswith("0") and len(s) > 1:
        base, digits = 8, s[1:]
    else:
        base, digits = 10, s
    if not digits or any(c not in "0123456789abcdef"[:base] for c in digits.lower()):
        return None
    if len(digits.lstrip("0")) > 11:        # more than 32 bits in any base; Python's
        return None                         # int() refuses very long strings anyway
    value = int(digits, base)
    return value if value <= U32 else None

#: The kernels the project observes (linux-observed.md); the default is the newest.
KNOWN_KERNELS = ("6.1", "6.12", "7.2")


def _version_parts(version: str | tuple[int, ...]) -> list:
    """The components of ``"6.12.4"`` or ``(6, 12, 4)``; any other type is a TypeError."""
    if isinstance(version, str):
        return version.split(".")
    if isinstance(version, tuple):
        return [cabi.index(part) for part in version]
    raise TypeError("a kernel version is a str such as '6.12' or a tuple of ints such as (6, 12), "
                    f"not {type(version).__name__}")


def kernel_patch_level(version: str | tuple[int, ...]) -> int | None:
    """The stable release of ``"6.12.4"`` (4); None when only the series is given (its newest)."""
    parts = _version_parts(version)
    try:
        return int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        return None


def parse_kernel(version: str | tuple[int, int]) -> tuple[int, int]:
    """``"6.12"`` -> ``(6, 12)``; extra components such as ``.117`` are ignored.

    The contract: a version with fewer than two numeric components is a
    ValueError; anything but a str or a tuple of ints is a TypeError.
    """
    parts = _version_parts(version)
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"kernel version must look like '6.12', not {version!r:.60}") from None


def _check_path(path) -> None:
    if not isinstance(path, str):
        raise TypeError(f"a debugfs path is a str, not {type(path).__name__}")


class System:
    """A CPU and a kernel.

    ``pku``: the CPU has protection keys (``-cpu max``) or not (``-cpu qemu64``);
    when it has them the kernel enables them (OSPKE). ``kernel``: the Linux
    version whose behaviour is modelled where versions differ.
    ``init_pkru``: the ``init_pkru=`` boot parameter (no sanity check, as in
    Linux; INIT-PKRU-TUNABLE); a string or a number the kernel's ``kstrtouint``
    refuses leaves the default. ``cpu_vendor``: ``"intel"`` or ``"amd"``.

    The contract for the arguments: a kernel version that is not ``"6.12"``-like
    and a vendor other than those two are a ValueError; an argument of the
    wrong type (``pku`` not a bool, ``init_pkru`` neither an int nor a str, ...)
    is a TypeError, raised here rather than by a later call.
    """

    def __init__(self, *, pku: bool = True, kernel: str | tuple[int, int] = KNOWN_KERNELS[-1],
                 init_pkru: int | str = INIT_PKRU_VALUE, cpu_vendor: str = "intel") -> None:
        if not isinstance(pku, int):
            raise TypeError(f"pku is True or False, not {type(pku).__name__}")
        _version_parts(kernel)                          # the types first, then the values
        if not isinstance(cpu_vendor, str):
            raise TypeError(f"cpu_vendor is a str, not {type(cpu_vendor).__name__}")
        if not isinstance(init_pkru, str):
            cabi.index(init_pkru)
        self.pku = bool(pku)
        self.kernel = parse_kernel(kernel)
        #: The stable release within the series ("6.12.4" -> 4); None means its newest.
        self.kernel_patch = kernel_patch_level(kernel)
        if cpu_vendor not in ("intel", "amd"):
            raise ValueError(f"cpu_vendor must be 'intel' or 'amd', not {cpu_vendor!r:.60}")
        #: AMD's XSAVE init tracker treats PKRU = 0 as "in its init state" (HW-X86-INIT-TRACKER).
        self.cpu_vendor = cpu_vendor
        # init_pkru= is parsed with kstrtouint; a value it refuses is ignored (setup_init_pkru).
        value = kstrtouint(init_pkru) if isinstance(init_pkru, str) else cabi.index(init_pkru)
        self.init_pkru_value = value if value is not None and 0 <= value <= U32 else INIT_PKRU_VALUE
        self.processes: dict[int, Process] = {}
        self.shmem: dict[int, dict[int, int]] = {}
        self._next_id = 1
        #: When a list, the model appends (event, PKRU) pairs to it as signals are delivered;
        #: the pictures use it. None (the default) records nothing.
        self.trace: list[tuple[str, int]] | None = None

    def kernel_at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """Is the modelled kernel this release or newer? A bare series counts as its newest."""
        major, minor, patch = cabi.index(major), cabi.index(minor), cabi.index(patch)
        if self.kernel != (major, minor):
            return self.kernel > (major, minor)
        return self.kernel_patch is None or self.kernel_patch >= patch

    def note(self, event: str, pkru: int) -> None:
        if self.trace is not None:
            self.trace.append((event, pkru))

    def __repr__(self) -> str:
        cpu = "PKU" if self.pku else "no PKU"
        return f"<System Linux {self.kernel[0]}.{self.kernel[1]}, {cpu}, {len(self.processes)} processes>"

    @property
    def ospke(self) -> bool:
        return self.pku

    def cpuinfo_flags(self) -> list[str]:
        """The pkeys flags of ``/proc/cpuinfo``: ``pku`` (CPU) and ``ospke`` (enabled) (HW-X86-ENUM)."""
        return ["pku", "ospke"] if self.pku else []

    # --- identities ---------------------------------------------------------
    def _new_id(self) -> int:
        n = self._next_id
        self._next_id += 1
        return n

    def new_shmem(self) -> int:
        n = self._new_id()
        self.shmem[n] = {}
        return n

    # --- tasks ----------------------------------------------------------------
    def spawn(self) -> Thread:
        """A new process running a fresh program; returns its main thread."""
        pid = self._new_id()
        proc = Process(self, pid, self._fresh_mm(), pgid=pid)
        self.processes[pid] = proc
        thread = Thread(proc, pid, self.init_pkru_value, sp=initial_sp(proc.mm),
                        rseq=RSEQ_AREA)
        proc.threads.append(thread)
        return thread

    def _fresh_mm(self) -> Mm:
        mm = Mm.new(self.ospke)
        mm.vmas = initial_vmas(self.kernel)
        return mm

    def new_thread(self, proc: Process, pkru: int, sp: int) -> Thread:
        thread = Thread(proc, self._new_id(), pkru, sp=sp)
        proc.threads.append(thread)
        return thread

    def fork(self, parent: Thread) -> Thread:
        pid = self._new_id()
        # The whole mm is copied: VMAs with their keys, the allocation map and
        # the execute-only key. Shared anonymous memory stays shared (same shmem id).
        child_mm = copy.deepcopy(parent.process.mm)
        # copy_page_range skips shared anonymous VMAs: the child faults their pages in again.
        for vma in child_mm.vmas:
            if vma.shmem is not None:
                for vpn in [p for p in child_mm.ptes if vma.start <= p * PAGE_SIZE < vma.end]:
                    del child_mm.ptes[vpn]
        proc = Process(self, pid, child_mm, sigactions=dict(parent.process.sigactions),
                       fds=dict(parent.process.fds), pgid=parent.process.pgid)
        for f in proc.fds.values():
            if hasattr(f, "pipe"):
                if f.write:
                    f.pipe.writers += 1
                else:
                    f.pipe.readers += 1
            elif isinstance(f, io_uring.IoUring):
                f.refs += 1
        self.processes[pid] = proc
        thread = Thread(proc, pid, parent.pkru, sp=parent.sp, altstack=parent.altstack,
                        altstack_flags=parent.altstack_flags, rseq=parent.rseq,
                        blocked=set(parent.blocked))
        proc.threads.append(thread)
        return thread

    def execve(self, thread: Thread) -> Thread:
        proc = thread.process
        proc.mm = self._fresh_mm()
        proc.threads[:] = [thread]
        thread.tid = proc.pid              # de_thread: the exec'ing thread becomes the leader
        thread.pkru = self.init_pkru_value
        # begin_new_exec clears sas_ss_sp and sas_ss_size only: sas_ss_flags stay.
        thread.sp, thread.altstack, thread.rseq = initial_sp(proc.mm), None, RSEQ_AREA
        io_uring.exec_cleanup(thread)
        proc.execs += 1
        # Handlers do not survive exec; ignored signals stay ignored.
        proc.sigactions = {s: a for s, a in proc.sigactions.items() if a.handler == SIG_IGN}
        return thread

    # --- debugfs ----------------------------------------------------------------
    def debugfs_read(self, path: str) -> str:
        """Read a debugfs file; only ``x86/init_pkru`` exists, and only with PKU."""
        _check_path(path)
        if path != "x86/init_pkru" or not self.ospke:
            raise FileNotFoundError(ENOENT, os.strerror(ENOENT), path)
        return f"{self.init_pkru_value:#x}\n"

    def debugfs_write(self, path: str, data: str) -> int:
        """Write ``x86/init_pkru`` (``init_pkru_write_file``): returns the count written.

        The kernel parses at most 31 bytes with ``kstrtouint(buf, 0, ...)`` and
        refuses a value that sets AD or WD for key 0 (INIT-PKRU-TUNABLE). The
        new value affects contexts created afterwards: exec and signal
        handlers, not running threads.
        """
        _check_path(path)
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"debugfs_write writes a str or bytes, not {type(data).__name__}")
        if path != "x86/init_pkru" or not self.ospke:
            raise FileNotFoundError(ENOENT, os.strerror(ENOENT), path)
        # At most 31 bytes are copied in and read as a C string: up to the first NUL.
        value = kstrtouint(bytes(data[:31]).split(b"\0", 1)[0].decode("latin-1"))
        if value is None or value & 0x3:
            raise OSError(EINVAL, os.strerror(EINVAL))
        self.init_pkru_value = value
        return len(data)

    # --- state ----------------------------------------------------------------
    def copy(self) -> System:
        """An independent copy of the whole state."""
        return copy.deepcopy(self)

    def __deepcopy__(self, memo: dict) -> System:
        """Copy the state field by field: VMAs, PTEs, siginfo and actions are immutable and
        shared; dictionaries, lists and the task objects are new. The race explorer copies
        a state before every step, so this is its hot path."""
        new = System.__new__(System)
        memo[id(self)] = new
        new.pku, new.kernel, new.init_pkru_value = self.pku, self.kernel, self.init_pkru_value
        new.kernel_patch, new.cpu_vendor = self.kernel_patch, self.cpu_vendor
        new.shmem = {k: dict(v) for k, v in self.shmem.items()}
        new._next_id = self._next_id
        new.trace = None if self.trace is None else list(self.trace)
        new.processes = {}
        for pid, proc in self.processes.items():
            mm = proc.mm
            mm2 = Mm(ospke=mm.ospke, vmas=list(mm.vmas), pkey_allocation_map=mm.pkey_allocation_map,
                     execute_only_pkey=mm.execute_only_pkey, ptes=dict(mm.ptes),
                     memory=dict(mm.memory), next_anon_vma=mm.next_anon_vma)
            memo[id(mm)] = mm2
            proc2 = Process(new, pid, mm2, end=proc.end, execs=proc.execs,
                            sigactions=dict(proc.sigactions),
                            fds={fd: copy.deepcopy(f, memo) for fd, f in proc.fds.items()},
                            stopped=proc.stopped, pgid=proc.pgid)
            memo[id(proc)] = proc2
            for t in proc.threads:
                t2 = Thread(proc2, t.tid, t.pkru, sp=t.sp, altstack=t.altstack,
                            altstack_flags=t.altstack_flags, blocked=set(t.blocked),
                            pending=list(t.pending), forced=t.forced,
                            handler_depth=t.handler_depth, rseq=t.rseq,
                            io_uring=t.io_uring and t.io_uring.copy())
                memo[id(t)] = t2
                proc2.threads.append(t2)
            new.processes[pid] = proc2
        return new

    def state(self) -> tuple:
        """A hashable value equal for equal states (for the race explorer)."""
        procs = []
        for pid, p in sorted(self.processes.items()):
            mm = p.mm
            procs.append((pid, repr(p.end), p.stopped, p.pgid, mm.pkey_allocation_map,
                          mm.execute_only_pkey,
                          tuple((v.start, v.end, v.flags, v.pkey, v.name, v.anon_vma, v.shmem)
                                for v in mm.vmas),
                          tuple(sorted(mm.ptes.items())), tuple(sorted(mm.memory.items())),
                          tuple((t.tid, t.pkru, t.sp, t.altstack, t.altstack_flags,
                                 tuple(sorted(t.blocked)), tuple(t.pending), t.forced, t.rseq,
                                 t.io_uring and (tuple(sorted(t.io_uring.rings)),
                                                 t.io_uring.worker_pkru))
                                for t in p.threads),
                          tuple(sorted((s, repr(a)) for s, a in p.sigactions.items())),
                          tuple(sorted((fd, repr(f)) for fd, f in p.fds.items()))))
        shm = tuple((k, tuple(sorted(v.items()))) for k, v in sorted(self.shmem.items()))
        return (tuple(procs), shm)
