"""Properties of docs/reference/uaccess.md: the kernel's own copies, and foreign access."""

import errno

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pkeyspec import (
    IORING_OP_READ, IORING_OP_WRITE, IORING_SETUP_SQPOLL, IOSQE_ASYNC, PAGE_SIZE, PTRACE_PEEKDATA,
    PTRACE_POKEDATA, SIGSEGV, System,
)
from tests.properties import proves
from tests.properties.histories import (
    AD, ANON, RW, WD, fresh_key, histories, key0_open, keyed_page, kernels, pkru_values, run,
    with_bits,
)


def plain_page(t, data=b""):
    """A new key-0 page holding ``data``."""
    page = t.mmap(0, PAGE_SIZE, RW, ANON)
    for i, byte in enumerate(data):
        t.store(page + i, byte)
    return page


@proves("KERN-COPY-USER")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), pkrus=st.tuples(pkru_values, pkru_values),
       rights_for_k=st.integers(0, 3), touched=st.booleans(), n=st.integers(1, 8),
       caller_is_new=st.booleans())
def test_read_and_write_copy_under_the_calling_threads_pkru(
        kernel, history, pkrus, rights_for_k, touched, n, caller_is_new):
    """read() into a page whose key the calling thread may not write fails with EFAULT, touched
    page or not, and the bytes stay in the pipe; write() from one it may not read fails with EFAULT.
    Only the calling thread's PKRU counts."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    k = fresh_key(t)
    buf = keyed_page(t, k, value=0x41 if touched else None)
    u = t.clone()
    caller, other = (u, t) if caller_is_new else (t, u)
    pkru = with_bits(key0_open(pkrus[0]), k, rights_for_k)
    caller.wrpkru(pkru)
    other.wrpkru(key0_open(pkrus[1]))
    r, w = caller.pipe()
    data = bytes(range(1, n + 1))
    assert caller.write(w, plain_page(caller, data), n) == n
    if rights_for_k & (AD | WD):
        with pytest.raises(OSError) as denied:
            caller.read(r, buf, n)
        assert denied.value.errno == errno.EFAULT
        back = plain_page(caller)
        assert caller.read(r, back, n) == n
        assert bytes(caller.load(back + i) for i in range(n)) == data
    else:
        assert caller.read(r, buf, n) == n
        assert bytes(caller.load(buf + i) for i in range(n)) == data
    if rights_for_k & AD:
        with pytest.raises(OSError) as denied:
            caller.write(w, buf, n)
        assert denied.value.errno == errno.EFAULT
    else:
        assert caller.write(w, buf, n) == n
    assert t.process.end is None


COPIES = ["read", "write", "pread", "pwrite", "process_vm_readv", "process_vm_writev"]
INTO_BUF = {"read", "pread", "process_vm_readv"}     # the kernel writes the caller's buffer


@proves("KERN-DOC-SIGSEGV-CLAIM")
@settings(max_examples=60, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), call=st.sampled_from(COPIES),
       denied=st.sampled_from([AD, WD, AD | WD]), touched=st.booleans(), handler=st.booleans())
def test_a_denied_kernel_copy_sends_no_signal(kernel, history, call, denied, touched, handler):
    """A system call whose copy to or from the caller's buffer is denied by the caller's PKRU
    fails with EFAULT and sends nothing: no SIGSEGV handler runs, and without one the process
    still runs."""
    assume(call in INTO_BUF or denied & AD)
    t = System(kernel=kernel).spawn()
    run(t, history)
    k = fresh_key(t)
    buf = keyed_page(t, k, value=0x41 if touched else None)
    plain = plain_page(t, b"x")
    r, w = t.pipe()
    t.write(w, plain, 1)
    mem, me = t.open_proc_mem(), t.process.pid
    faults = []
    if handler:
        t.sigaction(SIGSEGV, lambda ctx: faults.append(ctx.info))
    t.wrpkru(with_bits(t.rdpkru(), k, denied))
    make_call = {
        "read": lambda: t.read(r, buf, 1),
        "write": lambda: t.write(w, buf, 1),
        "pread": lambda: t.pread(mem, buf, 1, plain),
        "pwrite": lambda: t.pwrite(mem, buf, 1, plain),
        "process_vm_readv": lambda: t.process_vm_readv(me, [(buf, 1)], [(plain, 1)]),
        "process_vm_writev": lambda: t.process_vm_writev(me, [(buf, 1)], [(plain, 1)]),
    }[call]
    with pytest.raises(OSError) as failed:
        make_call()
    assert failed.value.errno == errno.EFAULT
    assert faults == [] and t.process.end is None


@proves("KERN-FOREIGN-BYPASS")
@settings(max_examples=80, deadline=None)
@given(kernel=kernels, history=histories(keep_key0=True), caller_pkru=pkru_values,
       rights_for_k=st.integers(0, 3), how=st.sampled_from(["/proc/PID/mem", "process_vm", "ptrace"]),
       from_child=st.booleans(), write=st.booleans(), touched=st.booleans())
def test_a_foreign_access_ignores_keys(
        kernel, history, caller_pkru, rights_for_k, how, from_child, write, touched):
    """/proc/PID/mem, the remote side of process_vm_readv/writev and PTRACE_PEEKDATA/POKEDATA read
    and write a page whatever its key and the caller's rights for it, in its own process or not."""
    t = System(kernel=kernel).spawn()
    run(t, history)
    k = fresh_key(t)
    page = keyed_page(t, k, value=0x41 if touched else None)
    caller = t.fork() if from_child else t
    caller.wrpkru(with_bits(key0_open(caller_pkru), k, rights_for_k))
    pid = t.process.pid
    local = plain_page(caller, b"\x5a")
    if how == "/proc/PID/mem":
        mem = caller.open_proc_mem(pid)
        assert (caller.pwrite if write else caller.pread)(mem, local, 1, page) == 1
    elif how == "process_vm":
        move = caller.process_vm_writev if write else caller.process_vm_readv
        assert move(pid, [(local, 1)], [(page, 1)]) == 1
    elif write:
        assert caller.ptrace(PTRACE_POKEDATA, pid, page, 0x5a) == 0
    else:
        caller.store(local, caller.ptrace(PTRACE_PEEKDATA, pid, page) & 0xFF)
    if write:
        t.wrpkru(with_bits(t.rdpkru(), k, 0))
        assert t.load(page) == 0x5a
    else:
        assert caller.load(local) == (0x41 if touched else 0)


# --- KERN-KTHREAD-DEFAULT: io_uring's executors are not kernel threads ------------------------

RIGHTS = st.sampled_from([0, AD, WD, AD | WD])


@proves("KERN-KTHREAD-DEFAULT")
@settings(max_examples=150, deadline=None, database=None)
@given(key=st.integers(1, 15), at_creation=RIGHTS, now=RIGHTS, init_pkru=st.sampled_from(
    [0x55555554, 0, 0xFFFFFFFC, 0x55555550]), kernel=kernels, op=st.sampled_from(
    [IORING_OP_READ, IORING_OP_WRITE]))
def test_each_io_uring_executor_checks_the_pkru_it_was_created_with(key, at_creation, now,
                                                                     init_pkru, kernel, op):
    """For any key and rights: an inline request is allowed iff the submitter's current rights
    allow the copy; a punted one iff the rights when its worker was made allow it; an SQPOLL one
    iff the rights at io_uring_setup allow it. init_pkru, a kthread's PKRU, never matters."""
    t = System(kernel=kernel, init_pkru=init_pkru).spawn()
    while (k := t.pkey_alloc(0, 0)) != key:
        pass
    buf = t.mmap(0, PAGE_SIZE, RW, ANON)
    t.store(buf, 1)
    t.pkey_mprotect(buf, PAGE_SIZE, RW, key)
    r, w = t.pipe()
    assert t.write(w, buf, 64) == 64

    def allowed(rr):        # READ writes the buffer (needs neither AD nor WD); WRITE reads it
        return not rr & (AD | WD) if op == IORING_OP_READ else not rr & AD

    fd = r if op == IORING_OP_READ else w
    set_rights = lambda rr: t.wrpkru(with_bits(t.rdpkru(), k, rr))
    set_rights(at_creation)
    ring, sq = t.io_uring_setup(8), t.io_uring_setup(8, IORING_SETUP_SQPOLL)
    first = t.io_uring_submit(ring, op, fd, buf, 8, IOSQE_ASYNC)
    set_rights(now)
    results = [t.io_uring_submit(ring, op, fd, buf, 8),
               t.io_uring_submit(ring, op, fd, buf, 8, IOSQE_ASYNC),
               t.io_uring_submit(sq, op, fd, buf, 8), first]
    expected = [allowed(now), allowed(at_creation), allowed(at_creation), allowed(at_creation)]
    assert [res == 8 for res in results] == expected
    assert all(res in (8, -errno.EFAULT) for res in results)
