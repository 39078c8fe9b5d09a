"""OS confinement of an untrusted config's isolation worker, applied once before it says hello.

The sandbox and the worker's limits stop a fujsen that plays by the language; these stop one
that found a way out of it, by taking away what the process could reach:

1. **Not dumpable, no core** (``PR_SET_DUMPABLE 0``, with ``RLIMIT_CORE=0`` from the limits):
   no core file, and other processes of the same uid cannot read its memory through /proc.
2. **A read-only, minimal file-system view** (Landlock): reading is allowed only beneath the
   Python installation and this package; nothing may be written, created or removed anywhere,
   and /proc - the parent's included - /etc, /home and every other path cannot be opened.
   Where the kernel supports it (ABI 4+), TCP bind and connect are refused too, and (ABI 6+)
   signals and abstract sockets cannot leave the worker.
3. **An unprivileged user** (``nobody`` when started as root): no capabilities, no files of
   root, and ``RLIMIT_NPROC`` applies.
4. **A syscall allowlist** (seccomp through libseccomp): memory, time, signals, pipes and
   reading files; anything else - ``socket``, ``execve``, ``ptrace``, ``clone``, ``mount``,
   ``unshare``, ``bpf``... - fails with EPERM.

Each step reports what it did in the worker's hello (``WorkerPool.info()``); a step the
host cannot do is reported with its reason, never silently skipped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
import sysconfig
from typing import Any

_PR_SET_DUMPABLE = 4
_SYS_LANDLOCK_CREATE_RULESET = 444
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
_FS_BITS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # handled access bits per Landlock ABI
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2
_O_PATH = getattr(os, "O_PATH", 0o10000000)

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_ACT_ERRNO = 0x00050000
_SCMP_FLTATR_CTL_OPTIMIZE = 8  # libseccomp 2.5+: 2 = a binary tree instead of a linear list

SYSCALLS_ALLOWED = tuple(
    """
    read readv pread64 write writev pwrite64 close lseek fstat newfstatat stat lstat statx
    openat open getdents64 readlink readlinkat getcwd fcntl ioctl dup dup2 dup3
    mmap munmap mremap mprotect madvise brk mincore
    rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack restart_syscall tgkill
    poll ppoll select pselect6 futex futex_waitv sched_yield sched_getaffinity
    clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time getrusage times
    getpid gettid getuid geteuid getgid getegid getgroups prlimit64 getrlimit uname sysinfo
    getrandom set_robust_list rseq exit exit_group
    """.split()
)
"""What a worker needs once it is set up: no sockets, processes, threads, mounts or tracing."""


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def not_dumpable() -> str:
    if _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return f"failed: {os.strerror(ctypes.get_errno())}"
    return "on"


def readable_roots() -> list[str]:
    """The directories a worker may read beneath: Python's own and this package's."""
    paths = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tusk_events/
    return sorted(p for p in paths if p and os.path.isdir(p))


def landlock(roots: list[str]) -> dict[str, Any]:
    """Confine the file system (and TCP, and scoped IPC where supported) to reading ``roots``."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        return {"applied": False, "error": f"Landlock unavailable: {os.strerror(ctypes.get_errno())}"}
    fs = (1 << _FS_BITS_BY_ABI.get(abi, 16)) - 1
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    fields = [fs] + ([net] if abi >= 4 else []) + ([scoped] if abi >= 6 else [])
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return {"applied": False, "error": f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}"}
    try:
        read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
        for root in roots:
            fd = os.open(root, _O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(read.to_bytes(8, "little") + fd.to_bytes(4, "little", signed=True))
                if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                                rule, ctypes.c_uint32(0)) != 0:
                    return {"applied": False, "error": f"landlock_add_rule({root}): {os.strerror(ctypes.get_errno())}"}
            finally:
                os.close(fd)
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return {"applied": False, "error": f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}"}
    finally:
        os.close(ruleset)
    return {"applied": True, "abi": abi, "read_only": roots, "tcp": "refused" if net else "not handled",
            "scoped": bool(scoped)}


def unprivileged_ids(user: str = "nobody") -> tuple[int, int] | None:
    """(uid, gid) of ``user``, looked up while /etc/passwd can still be read."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def drop_privileges(ids: tuple[int, int] | None) -> dict[str, Any]:
    """Become ``ids`` (uid, gid; no supplementary groups) when running as root."""
    if os.geteuid() != 0:
        return {"uid": os.geteuid(), "gid": os.getegid(), "changed": False}
    if ids is None:
        return {"uid": 0, "changed": False, "error": "no unprivileged user (nobody) on this host"}
    os.setgroups([])
    os.setgid(ids[1])
    os.setuid(ids[0])
    return {"uid": os.geteuid(), "gid": os.getegid(), "changed": True}


class _Seccomp:
    """libseccomp through ctypes (the ``libseccomp2`` system package; no Python binding needed)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        lib = ctypes.CDLL(name, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        self.lib = lib

    def load(self, allowed: tuple[str, ...]) -> dict[str, Any]:
        lib = self.lib
        ctx = lib.seccomp_init(_SCMP_ACT_ERRNO | errno.EPERM)
        if not ctx:
            return {"applied": False, "error": "seccomp_init failed"}
        try:
            # every syscall of a call pays the filter: look it up in a tree (best effort)
            tree = lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_OPTIMIZE, 2) == 0
            count = 0
            for name in allowed:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0:
                    continue  # not a syscall on this architecture
                if lib.seccomp_rule_add(ctx, _SCMP_ACT_ALLOW, nr, 0) != 0:
                    return {"applied": False, "error": f"seccomp_rule_add({name}) failed"}
                count += 1
            rc = lib.seccomp_load(ctx)
            if rc != 0:
                return {"applied": False, "error": f"seccomp_load: {os.strerror(-rc)}"}
            return {"applied": True, "allowed": count, "default": "EPERM", "tree": tree}
        finally:
            lib.seccomp_release(ctx)


def apply(allowed: tuple[str, ...] = SYSCALLS_ALLOWED) -> dict[str, Any]:
    """All four steps, in the order that works: what cannot be done later is done first."""
    report: dict[str, Any] = {}
    if not sys.platform.startswith("linux"):
        return {"error": f"no confinement on {sys.platform}"}
    try:
        seccomp: _Seccomp | None = _Seccomp()  # loaded before the file system closes
    except OSError as err:
        seccomp = None
        report["seccomp"] = {"applied": False, "error": f"libseccomp unavailable ({err}); apt-get install libseccomp2"}
    ids = unprivileged_ids()
    report["not_dumpable"] = not_dumpable()
    report["landlock"] = landlock(readable_roots())
    report["user"] = drop_privileges(ids)
    if seccomp is not None:
        report["seccomp"] = seccomp.load(allowed)
    return report


__all__ = ["SYSCALLS_ALLOWED", "apply", "drop_privileges", "landlock", "readable_roots"]
