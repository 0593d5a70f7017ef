"""C argument types of the kernel's syscall definitions, applied to Python ints.

A syscall receives 64-bit registers; ``SYSCALL_DEFINE`` casts each to the C
type it declares. The model does the same, so ``pkey_free(2**32 + 1)`` frees
key 1 exactly as the kernel would, and no Python integer escapes as anything
but an errno.
"""

import operator
import reprlib


def index(value) -> int:
    """The Python int of an integer argument; anything else is a TypeError, at once.

    A C compiler would reject a call with a non-integer argument; the model
    says so plainly instead of failing later.
    """
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"an integer argument is an int, not {type(value).__name__}: "
                        f"{reprlib.repr(value)}") from None


def ulong(value) -> int:
    """``unsigned long`` / ``size_t``: the value modulo 2**64."""
    return index(value) & 0xFFFFFFFFFFFFFFFF


def int32(value) -> int:
    """``int``: the low 32 bits, read as two's complement."""
    v = index(value) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def uint32(value) -> int:
    """``unsigned int``: the low 32 bits."""
    return index(value) & 0xFFFFFFFF
