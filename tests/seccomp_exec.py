"""Run a command under the seccomp filters systemd installs for ingle.service, without systemd.

Usage: python tests/seccomp_exec.py COMMAND [ARG...]

MemoryDenyWriteExecute=yes is, in systemd, a seccomp filter (src/shared/seccomp-util.c):
mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC and shmat
with SHM_EXEC fail. `SystemCallFilter=~@privileged @resources` with
SystemCallErrorNumber=EPERM makes a few more calls fail with EPERM; the ones that
matter to a model server (@resources: thread affinity, NUMA placement, priorities)
are refused here the same way. Uses libseccomp through ctypes, as a test helper only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
PR_SET_NO_NEW_PRIVS = 38
# `systemd-analyze syscall-filter @resources` on systemd 252.
RESOURCES = [
    "ioprio_set",
    "mbind",
    "migrate_pages",
    "move_pages",
    "nice",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "setpriority",
    "setrlimit",
]


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def install_filter() -> None:
    """Load the filter into this process; it is inherited across exec."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(SCMP_ACT_ALLOW)
    eperm = SCMP_ACT_ERRNO | errno.EPERM

    def refuse(name: str, arg: int | None = None, mask: int = 0) -> None:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # not a syscall on this architecture
        if arg is None:
            lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
            result = lib.seccomp_rule_add(context, eperm, number, 0)
        else:
            lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, _ArgCmp]
            result = lib.seccomp_rule_add(context, eperm, number, 1, _ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, mask))
        if result != 0:
            raise OSError(-result, f"seccomp_rule_add({name})")

    refuse("mmap", 2, PROT_WRITE | PROT_EXEC)
    refuse("mprotect", 2, PROT_EXEC)
    refuse("pkey_mprotect", 2, PROT_EXEC)
    refuse("shmat", 2, SHM_EXEC)
    for name in RESOURCES:
        refuse(name)
    ctypes.CDLL(None).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if lib.seccomp_load(context) != 0:
        raise OSError("seccomp_load failed")


if __name__ == "__main__":
    install_filter()
    os.execvp(sys.argv[1], sys.argv[1:])
