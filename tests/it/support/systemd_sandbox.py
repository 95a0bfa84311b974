"""Runs a program in the sandbox of a systemd unit, as far as one process
can set that up without systemd, then execs the program in it.

    /usr/bin/python3 systemd_sandbox.py SPEC.json PROGRAM [ARG...]

Needs Debian's python3-seccomp (the libseccomp bindings), so it runs with
/usr/bin/python3. tests/it/systemd_sandbox.rs writes SPEC.json from the
unit, one entry per setting (null or false where the unit does not ask):

  nofile        LimitNOFILE=: soft and hard limit of open files
  umask         UMask=
  drop_caps     CapabilityBoundingSet= (empty): clear the bounding set
  user          [uid, gid] for DynamicUser=: run as that user, no groups
  families      RestrictAddressFamilies=: socket() of any other family
                fails with EAFNOSUPPORT
  namespaces    RestrictNamespaces=yes: clone/unshare with a namespace
                flag and setns fail with EPERM; clone3 fails with ENOSYS
                (its flags cannot be inspected), so that glibc falls back
                to clone, as under systemd
  mdwe          MemoryDenyWriteExecute=yes: writable+executable mmap and
                executable mprotect/pkey_mprotect/shmat fail with EPERM
  personality   LockPersonality=yes: personality() to any other persona
                fails with EPERM
  allow         SystemCallFilter=: the system calls the unit allows, its
                sets already expanded; any other call kills the process
                (KILL_PROCESS, what systemd does without
                SystemCallErrorNumber=), as does a call of a foreign
                architecture (SystemCallArchitectures=native)

NoNewPrivileges= comes with loading a seccomp filter. The order is
systemd's: limits, umask, capabilities, user, the filters that answer with
an error, the syscall filter last, exec.
"""

import ctypes
import errno
import json
import mmap
import os
import resource
import socket
import sys

import seccomp

PR_CAPBSET_DROP = 24
SHM_EXEC = 0o100000
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = [
    CLONE_NEWTIME,
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
]

libc = ctypes.CDLL(None, use_errno=True)


def fail(what):
    raise OSError(ctypes.get_errno(), what)


def errno_filter():
    """A filter that lets everything through except its rules."""
    return seccomp.SyscallFilter(defaction=seccomp.ALLOW)


def address_families(names):
    allowed = sorted(getattr(socket, name) for name in names)
    f = errno_filter()
    deny = seccomp.ERRNO(errno.EAFNOSUPPORT)
    for family in range(allowed[-1]):
        if family not in allowed:
            f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.EQ, family))
    f.add_rule(deny, "socket", seccomp.Arg(0, seccomp.GT, allowed[-1]))
    return f


def namespaces():
    f = errno_filter()
    deny = seccomp.ERRNO(errno.EPERM)
    for flag in NAMESPACE_FLAGS:
        for call in ("clone", "unshare"):
            f.add_rule(deny, call, seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    f.add_rule(deny, "setns")
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    return f


def memory_deny_write_execute():
    f = errno_filter()
    deny = seccomp.ERRNO(errno.EPERM)
    wx = mmap.PROT_WRITE | mmap.PROT_EXEC
    f.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
    for call in ("mprotect", "pkey_mprotect"):
        x = mmap.PROT_EXEC
        f.add_rule(deny, call, seccomp.Arg(2, seccomp.MASKED_EQ, x, x))
    f.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, SHM_EXEC, SHM_EXEC))
    return f


def lock_personality():
    current = libc.personality(0xFFFFFFFF)
    if current < 0:
        fail("personality")
    f = errno_filter()
    f.add_rule(seccomp.ERRNO(errno.EPERM), "personality", seccomp.Arg(0, seccomp.NE, current))
    return f


def syscall_filter(allow):
    f = seccomp.SyscallFilter(defaction=seccomp.KILL_PROCESS)
    f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    unknown = []
    for name in allow:
        try:
            f.add_rule(seccomp.ALLOW, name)
        except RuntimeError:
            # Named by systemd, unknown to this libseccomp; systemd skips
            # those too.
            unknown.append(name)
    if unknown:
        print(f"sandbox: not in libseccomp, left out: {' '.join(unknown)}", file=sys.stderr)
    return f


def main():
    spec_path, program = sys.argv[1], sys.argv[2:]
    with open(spec_path) as f:
        spec = json.load(f)

    if spec["nofile"] is not None:
        n = spec["nofile"]
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        except (ValueError, OSError) as e:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            sys.exit(f"sandbox: cannot apply LimitNOFILE={n} (hard limit here {hard}): {e}")
    if spec["umask"] is not None:
        os.umask(spec["umask"])
    if spec["drop_caps"]:
        last = int(open("/proc/sys/kernel/cap_last_cap").read())
        for cap in range(last + 1):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                fail(f"PR_CAPBSET_DROP {cap}")
    if spec["user"] is not None:
        uid, gid = spec["user"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    filters = []
    if spec["families"] is not None:
        filters.append(address_families(spec["families"]))
    if spec["namespaces"]:
        filters.append(namespaces())
    if spec["mdwe"]:
        filters.append(memory_deny_write_execute())
    if spec["personality"]:
        filters.append(lock_personality())
    filters.append(syscall_filter(spec["allow"]))
    for f in filters:
        f.load()
    os.execv(program[0], program)


main()
