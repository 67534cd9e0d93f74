"""The seccomp filter every sandboxed process gets (bwrap --seccomp): no new user namespaces.

A user namespace of its own gives a process no power over the host's resources, but it opens the parts of the kernel
that only "root" may use (mounting, netfilter, ...) to it, where most container escapes were found. As Docker's
default profile does, clone and unshare with CLONE_NEWUSER fail with EPERM, and clone3 (whose flags a filter cannot
read) with ENOSYS, so libc falls back to clone. Only the x86-64 ABI is allowed (32-bit and x32 calls fail), since
the rule is written against its syscall numbers.

The program is classic BPF, as the kernel and bwrap take it: a few instructions, written out here because no
library Runix uses builds one (libseccomp would be a C dependency for eight instructions)."""

from __future__ import annotations

import errno
import os
import platform
import struct

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: load a 32-bit word of struct seccomp_data
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45  # BPF_JMP | BPF_{JEQ,JGE,JSET} | BPF_K
_RET = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_CLONE, _UNSHARE, _CLONE3 = 56, 272, 435  # x86-64 syscall numbers
CLONE_NEWUSER = 0x10000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6] (the low half of args[0] first)
_NR, _ARCH, _ARG0_LOW = 0, 4, 16


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program() -> bytes | None:
    """The filter for this machine, or None where its ABI is not x86-64 (the sandbox then runs without one)."""
    if platform.machine() != "x86_64":
        return None
    deny, nosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    return b"".join([
        _op(_LD_W_ABS, _ARCH),
        _op(_JEQ, _AUDIT_ARCH_X86_64, jt=1),  # x86-64: on; anything else: denied below
        _op(_RET, deny),
        _op(_LD_W_ABS, _NR),
        _op(_JGE, _X32_SYSCALL_BIT, jt=5),  # x32 numbers: denied
        _op(_JEQ, _CLONE3, jt=6),
        _op(_JEQ, _CLONE, jt=1),
        _op(_JEQ, _UNSHARE, jf=3),
        _op(_LD_W_ABS, _ARG0_LOW),  # clone and unshare: flags are the first argument
        _op(_JSET, CLONE_NEWUSER, jt=0, jf=1),
        _op(_RET, deny),
        _op(_RET, _ALLOW),
        _op(_RET, nosys),
    ])


_PROGRAM = program()


def pipe_fd() -> int | None:
    """A file descriptor to hand to bwrap --seccomp (read to its end by bwrap), or None without a filter. The
    caller closes it once the process is started."""
    if _PROGRAM is None:
        return None
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, _PROGRAM)  # far below a pipe's buffer
    finally:
        os.close(write_end)
    return read_end
