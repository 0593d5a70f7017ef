"""io_uring: the PKRU that governs the kernel's copies for a request.

Expected values are Linux's: the conformance scenarios ``r_*``
(``conformance/scenarios/r_io_uring.scn``, run on 6.1, 6.12 and 7.2) and,
where no scenario covers a case, the kernel source named in the docstring
(``io_uring/io_uring.c``, ``io_uring/io-wq.c``, ``io_uring/tctx.c``,
``io_uring/sqpoll.c``, ``kernel/fork.c`` ``create_io_thread``,
``arch/x86/kernel/process.c`` ``copy_thread``, ``fs/exec.c``). Fact
KERN-KTHREAD-DEFAULT: only PF_KTHREAD gets init_pkru; io_uring's workers
and SQPOLL threads are not kthreads.
"""

import errno

import pytest

from pkeyspec import (
    IORING_OP_READ, IORING_OP_WRITE, IORING_SETUP_SQPOLL, IOSQE_ASYNC, MAP_ANONYMOUS, MAP_PRIVATE,
    PKEY_DISABLE_ACCESS, PKEY_DISABLE_WRITE, PROT_READ, PROT_WRITE, SIG_IGN, System,
    pkru_with_rights,
)
from pkeyspec import io_uring
from tests.helpers import bits, err_of

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
AD = PKEY_DISABLE_ACCESS
WD = PKEY_DISABLE_WRITE
READ, WRITE, ASYNC = IORING_OP_READ, IORING_OP_WRITE, IOSQE_ASYNC
KERNELS = ("6.1", "6.12", "7.2")
EFAULT = -errno.EFAULT


class Setup:
    """One process: a k-keyed page ``buf`` (the thread may access it), a key-0 page ``src``
    holding 0x41 0x42 ..., and a pipe ``r``/``w`` kept full enough for every read."""

    def __init__(self, kernel="7.2", rights=0, key_pages=1, **system):
        self.t = t = System(kernel=kernel, **system).spawn()
        self.k = t.pkey_alloc(0, rights)
        self.buf = t.mmap(0, key_pages * PAGE, RW, ANON)
        t.pkey_mprotect(self.buf, key_pages * PAGE, RW, self.k)
        self.src = t.mmap(0, PAGE, RW, ANON)
        for i in range(16):
            t.store(self.src + i, 0x41 + i)
        self.r, self.w = t.pipe()
        self.refill()

    def refill(self, n=64):
        assert self.t.write(self.w, self.src, n) == n

    def set_rights(self, thread, rights):
        thread.wrpkru(pkru_with_rights(thread.rdpkru(), self.k, rights))


@pytest.fixture(params=KERNELS)
def kernel(request):
    return request.param


# --- the three executors ----------------------------------------------------------------------

def test_inline_copies_use_the_submitters_current_pkru(kernel):
    """r_inline_follows_the_submitter: READ into and WRITE from the k page, then the same after AD."""
    s = Setup(kernel)
    t = s.t
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8) == 8
    assert t.load(s.buf) == 0x41
    assert t.io_uring_submit(ring, WRITE, s.w, s.buf, 8) == 8
    s.set_rights(t, AD)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8) == EFAULT
    assert t.io_uring_submit(ring, WRITE, s.w, s.buf, 8) == EFAULT
    assert t.io_uring is not None and t.io_uring.worker_pkru is None   # nothing was punted


def test_write_disable_stops_the_kernels_writes_not_its_reads():
    """WD for k: WRITE from the k page works, READ into it is EFAULT (HW-X86-AD-WD-SEMANTICS)."""
    s = Setup(rights=WD)
    ring = s.t.io_uring_setup(4)
    assert s.t.io_uring_submit(ring, WRITE, s.w, s.buf, 8) == 8
    assert s.t.io_uring_submit(ring, READ, s.r, s.buf, 8) == EFAULT


def test_the_worker_has_its_creators_pkru_not_init_pkru(kernel):
    """r_worker_has_its_creators_pkru: init_pkru denies k, the submitter allows it: the worker succeeds,
    also into a page that is not present yet (the fault path checks the same PKRU)."""
    s = Setup(kernel, key_pages=2)
    t = s.t
    t.store(s.buf, 0)
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == 8
    assert t.io_uring_submit(ring, READ, s.r, s.buf + PAGE, 8, ASYNC) == 8
    assert t.io_uring_submit(ring, WRITE, s.w, s.buf, 8, ASYNC) == 8
    assert t.io_uring.worker_pkru == t.pkru
    assert bits(t.system.init_pkru_value, s.k) == AD


def test_the_worker_keeps_the_pkru_it_was_created_with(kernel):
    """r_worker_keeps_its_pkru: after AD in the submitter the idle worker still writes the page."""
    s = Setup(kernel)
    t = s.t
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == 8
    s.set_rights(t, AD)
    assert t.io_uring_submit(ring, READ, s.r, s.buf + 8, 8, ASYNC) == 8
    assert t.io_uring_submit(ring, READ, s.r, s.buf + 16, 8) == EFAULT
    s.set_rights(t, 0)
    assert t.load(s.buf + 8) == 0x49


def test_a_worker_created_while_the_key_is_denied_keeps_denying(kernel):
    """r_worker_created_while_denied: the converse."""
    s = Setup(kernel, rights=AD)
    t = s.t
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == EFAULT
    s.set_rights(t, 0)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == EFAULT
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8) == 8


def test_workers_belong_to_the_submitting_thread_not_to_the_ring(kernel):
    """r_worker_per_submitting_thread: u (cloned before pkey_alloc) has AD for k; its punt
    creates its own worker, which fails, while main's worker succeeds on the same ring."""
    t = System(kernel=kernel).spawn()
    u = t.clone()
    s = Setup.__new__(Setup)
    s.t, s.k = t, t.pkey_alloc(0, 0)
    s.buf = t.mmap(0, PAGE, RW, ANON)
    t.pkey_mprotect(s.buf, PAGE, RW, s.k)
    s.src = t.mmap(0, PAGE, RW, ANON)
    s.r, s.w = t.pipe()
    s.refill()
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == 8
    assert u.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == EFAULT
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == 8
    assert bits(u.io_uring.worker_pkru, s.k) == AD and bits(t.io_uring.worker_pkru, s.k) == 0


def test_one_worker_serves_every_ring_of_the_thread():
    """io-wq hangs off current->io_uring: a second ring's punt reuses the first ring's worker."""
    s = Setup()
    t = s.t
    ring1, ring2 = t.io_uring_setup(8), t.io_uring_setup(8)
    assert t.io_uring_submit(ring1, READ, s.r, s.buf, 8, ASYNC) == 8
    s.set_rights(t, AD)
    assert t.io_uring_submit(ring2, READ, s.r, s.buf, 8, ASYNC) == 8


def test_sqpoll_thread_has_the_pkru_of_the_setup_call(kernel):
    """r_sqpoll_has_the_setup_pkru: later changes in the submitter change nothing, and the
    SQ thread's own io-wq worker (IOSQE_ASYNC) has the same PKRU."""
    s = Setup(kernel)
    t = s.t
    sq = t.io_uring_setup(8, IORING_SETUP_SQPOLL)
    assert t.io_uring_submit(sq, READ, s.r, s.buf, 8) == 8
    s.set_rights(t, AD)
    assert t.io_uring_submit(sq, READ, s.r, s.buf, 8) == 8
    assert t.io_uring_submit(sq, READ, s.r, s.buf, 8, ASYNC) == 8
    assert t.io_uring is None          # with SQPOLL the submitter does not register with the ring


def test_sqpoll_thread_created_while_the_key_is_denied(kernel):
    """r_sqpoll_created_while_denied: the submitter's own read() works, the SQ thread's fails."""
    s = Setup(kernel, rights=AD)
    t = s.t
    sq = t.io_uring_setup(8, IORING_SETUP_SQPOLL)
    s.set_rights(t, 0)
    assert t.io_uring_submit(sq, READ, s.r, s.buf, 8) == EFAULT
    assert t.io_uring_submit(sq, READ, s.r, s.buf, 8, ASYNC) == EFAULT
    assert t.read(s.r, s.buf, 8) == 8


def test_init_pkru_plays_no_part(kernel):
    """r_init_pkru_zero_changes_nothing: init_pkru = 0 through debugfs, AD in the submitter."""
    s = Setup(kernel, rights=AD)
    t = s.t
    t.system.debugfs_write("x86/init_pkru", "0x0")
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == EFAULT
    sq = t.io_uring_setup(8, IORING_SETUP_SQPOLL)
    assert t.io_uring_submit(sq, READ, s.r, s.buf, 8) == EFAULT


def test_without_pku_every_executor_just_works():
    """r_plain_memory on the no-PKU control: no keys, no PKRU checks."""
    t = System(pku=False).spawn()
    buf = t.mmap(0, PAGE, RW, ANON)
    r, w = t.pipe()
    assert t.write(w, buf, 24) == 24
    ring, sq = t.io_uring_setup(8), t.io_uring_setup(8, IORING_SETUP_SQPOLL)
    assert [t.io_uring_submit(ring, READ, r, buf, 8), t.io_uring_submit(ring, READ, r, buf, 8, ASYNC),
            t.io_uring_submit(sq, READ, r, buf, 8)] == [8, 8, 8]


# --- how long a worker lives -------------------------------------------------------------------

@pytest.mark.parametrize(("kernel", "second"), [("6.1", 8), ("6.12", 8), ("7.2", EFAULT)])
def test_the_last_ring_closed_takes_the_worker_with_it_from_6_18(kernel, second):
    """r_worker_after_the_last_ring_closes: 6.1 and 6.12 keep the idle worker; 7.2 lets it exit
    (io_wq_set_exit_on_idle), so the next ring's punt makes a worker with the current PKRU."""
    s = Setup(kernel)
    t = s.t
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == 8
    assert t.close(ring) == 0
    s.set_rights(t, AD)
    ring2 = t.io_uring_setup(8)
    assert t.io_uring_submit(ring2, READ, s.r, s.buf, 8, ASYNC) == second


def test_closing_one_of_two_rings_keeps_the_worker():
    """io_uring_del_tctx_node sets exit-on-idle only when the task's last ring is gone."""
    s = Setup("7.2")
    t = s.t
    ring1, ring2 = t.io_uring_setup(8), t.io_uring_setup(8)
    assert t.io_uring_submit(ring1, READ, s.r, s.buf, 8, ASYNC) == 8
    assert t.io_uring_submit(ring2, READ, s.r, s.buf, 8) == 8
    t.close(ring1)
    s.set_rights(t, AD)
    assert t.io_uring_submit(ring2, READ, s.r, s.buf, 8, ASYNC) == 8


def test_a_ring_shared_with_a_forked_child_lives_until_both_close_it():
    """fork shares the ring's file; the child has no io_uring context of its own until it submits,
    and its punt creates a worker with the child's PKRU (io_uring_fork: tsk->io_uring = NULL)."""
    s = Setup("7.2")
    t = s.t
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == 8
    child = t.fork()
    assert child.io_uring is None
    s.set_rights(child, AD)
    assert child.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC) == EFAULT
    t.close(ring)            # the child still holds the ring: it is not released
    s.set_rights(t, AD)
    ring2 = t.io_uring_setup(8)
    assert t.io_uring_submit(ring2, READ, s.r, s.buf, 8, ASYNC) == 8


def test_execve_closes_the_rings_and_ends_the_workers():
    """io_uring_task_cancel frees current->io_uring at exec; ring fds are O_CLOEXEC."""
    s = Setup()
    t = s.t
    ring = t.io_uring_setup(8)
    t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC)
    t.execve()
    assert t.io_uring is None
    assert err_of(t.io_uring_submit, ring, READ, s.r, 0, 8) == errno.EBADF
    assert ring not in t.process.fds and s.r in t.process.fds   # the pipe has no O_CLOEXEC


def test_process_exit_releases_the_ring():
    s = Setup("7.2")
    t = s.t
    ring = t.io_uring_setup(8)
    child = t.fork()
    t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC)
    f = t.process.fds[ring]
    assert f.refs == 2
    child.exit_group(0)
    assert f.refs == 1


def test_copies_of_the_system_are_independent():
    s = Setup()
    t = s.t
    ring = t.io_uring_setup(8)
    t.io_uring_submit(ring, READ, s.r, s.buf, 8, ASYNC)
    before = t.system.state()
    copy = t.system.copy()
    t2 = copy.processes[t.process.pid].threads[0]
    t2.io_uring.worker_pkru = 0
    t2.io_uring.rings.clear()
    assert t.system.state() == before != copy.state()
    assert t.io_uring.worker_pkru == t.pkru


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("entries", [0, 32769, 65536, 2**32])
def test_setup_entries_out_of_range_is_einval(kernel, entries):
    """r_bad_input: io_uring_create / io_uring_fill_params (entries is a u32: 2**32 is 0)."""
    t = System(kernel=kernel).spawn()
    assert err_of(t.io_uring_setup, entries) == errno.EINVAL


def test_setup_accepts_the_largest_ring():
    assert System().spawn().io_uring_setup(32768) >= 3


@pytest.mark.parametrize(("kernel", "flag", "result"), [
    ("6.1", 1 << 14, errno.EINVAL), ("6.1", 1 << 13, NotImplementedError),
    ("6.12", 1 << 14, NotImplementedError), ("6.12", 1 << 17, errno.EINVAL),
    ("7.2", 1 << 17, NotImplementedError), ("7.2", 1 << 20, NotImplementedError),
    ("7.2", 1 << 21, errno.EINVAL), ("7.2", 1 << 31, errno.EINVAL), ("6.1", 1 << 31, errno.EINVAL),
])
def test_setup_flags_the_kernel_does_not_know_are_einval(kernel, flag, result):
    """6.1 knows bits 0..13, 6.12 bits 0..16, 7.2 bits 0..20 (r_bad_input: 1 << 31); a known flag
    other than SQPOLL is not modelled."""
    t = System(kernel=kernel).spawn()
    if result is NotImplementedError:
        with pytest.raises(NotImplementedError):
            t.io_uring_setup(8, flag)
    else:
        assert err_of(t.io_uring_setup, 8, flag) == result


def test_entries_are_checked_before_a_flag_that_is_not_modelled():
    """Both checks give EINVAL in the kernel; the model reaches its own limit only after them."""
    assert err_of(System().spawn().io_uring_setup, 0, 1 << 3) == errno.EINVAL


def test_enter_on_a_bad_fd_or_a_file_that_is_not_a_ring():
    """r_bad_input: fdget fails (EBADF); io_is_uring_fops fails (EOPNOTSUPP)."""
    s = Setup()
    assert err_of(s.t.io_uring_submit, 99, READ, s.r, s.buf, 8) == errno.EBADF
    assert err_of(s.t.io_uring_submit, s.r, READ, s.r, s.buf, 8) == errno.EOPNOTSUPP
    assert err_of(s.t.io_uring_submit, -1, READ, s.r, s.buf, 8) == errno.EBADF


@pytest.mark.parametrize(("kernel", "last"), [("6.1", 49), ("6.12", 58), ("7.2", 65)])
def test_an_opcode_the_kernel_does_not_know_completes_with_einval(kernel, last):
    """io_init_req: opcode >= IORING_OP_LAST; checked before the SQE's flags and its fd."""
    s = Setup(kernel)
    ring = s.t.io_uring_setup(8)
    for opcode in (last, 255, 0x1FF):        # the SQE's opcode is a u8: 0x1FF is 255
        assert s.t.io_uring_submit(ring, opcode, 99, s.buf, 8, 0x80) == -errno.EINVAL
    with pytest.raises(NotImplementedError):
        s.t.io_uring_submit(ring, last - 1, s.r, s.buf, 8)


def test_bad_sqe_flags_bad_fd_and_wrong_pipe_end():
    """r_bad_input: SQE flags outside SQE_VALID_FLAGS are EINVAL (before the fd); a closed fd
    and the wrong end of the pipe are EBADF (io_rw_init_file checks FMODE_READ/FMODE_WRITE)."""
    s = Setup()
    t = s.t
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, READ, 99, s.buf, 8, 0x80) == -errno.EINVAL
    assert t.io_uring_submit(ring, READ, 99, s.buf, 8) == -errno.EBADF
    assert t.io_uring_submit(ring, READ, s.w, s.buf, 8) == -errno.EBADF
    assert t.io_uring_submit(ring, WRITE, s.r, s.buf, 8) == -errno.EBADF
    assert t.io_uring_submit(ring, READ, 99, s.buf, 8, ASYNC) == -errno.EBADF
    assert t.io_uring.worker_pkru == t.pkru     # the punt made the worker; the file came after
    with pytest.raises(NotImplementedError):
        t.io_uring_submit(ring, READ, s.r, s.buf, 8, 1 << 2)      # IOSQE_IO_LINK


def test_before_5_1_there_is_no_io_uring():
    t = System(kernel="5.0").spawn()
    assert err_of(t.io_uring_setup, 8) == errno.ENOSYS
    with pytest.raises(NotImplementedError):
        System(kernel="5.10").spawn().io_uring_setup(8)


def test_requests_that_would_wait_are_not_modelled():
    t = System().spawn()
    buf = t.mmap(0, PAGE, RW, ANON)
    r, w = t.pipe()
    ring = t.io_uring_setup(8)
    with pytest.raises(NotImplementedError):
        t.io_uring_submit(ring, READ, r, buf, 8)          # empty pipe: io_uring would poll
    assert t.io_uring_submit(ring, READ, r, buf, 0) == 0  # nothing asked, nothing waited for
    t.close(r)
    with pytest.raises(NotImplementedError):
        t.io_uring_submit(ring, WRITE, w, buf, 8, ASYNC)  # SIGPIPE to a worker


def test_an_inline_write_to_a_pipe_without_readers_is_epipe_with_sigpipe():
    """pipe_write sends SIGPIPE to current, here the submitter; ignored, the request gets EPIPE."""
    t = System().spawn()
    buf = t.mmap(0, PAGE, RW, ANON)
    r, w = t.pipe()
    t.sigaction(13, SIG_IGN)
    t.close(r)
    ring = t.io_uring_setup(8)
    assert t.io_uring_submit(ring, WRITE, w, buf, 8) == -errno.EPIPE
    assert t.process.end is None
