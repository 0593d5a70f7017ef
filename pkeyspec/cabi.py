"""C argument types of the kernel's syscall definitions, applied to Python ints.

A syscall receives 64-bit registers; ``SYSCALL_DEFINE`` casts each to the C
type it declares. The model does the same, so ``pkey_free(2**32 + 1)`` frees
key 1 exactly as the kernel would, and no Python integer escapes as anything
but an errno.
"""

import operator


def _index(value) -> int:
    # The C compiler would reject a non-integer; the model says so plainly.
    return operator.index(value)


def ulong(value) -> int:
    """``unsigned long`` / ``size_t``: the value modulo 2**64."""
    return _index(value) & 0xFFFFFFFFFFFFFFFF


def int32(value) -> int:
    """``int``: the low 32 bits, read as two's complement."""
    v = _index(value) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def uint32(value) -> int:
    """``unsigned int``: the low 32 bits."""
    return _index(value) & 0xFFFFFFFF
