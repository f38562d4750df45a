#!/usr/bin/env python3
"""One file operation, reported as "ok" or the errno's name: tests compare exact errnos.

usage: op.py OP ARGS...   (see OPS below)
"""
import ctypes
import errno
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100


def renameat2(src, dst, flags):
    rc = libc.renameat2(AT_FDCWD, src.encode(), AT_FDCWD, dst.encode(), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def open_unlinked_read(path):
    fd = os.open(path, os.O_RDONLY)
    os.unlink(path)
    data = os.read(fd, 1 << 20)
    os.close(fd)
    print(f"read {len(data)} bytes after unlink: {data[:16]!r}")


def truncate_fd(path, size, nonblock="0"):
    flags = os.O_WRONLY | (os.O_NONBLOCK if nonblock == "1" else 0)
    fd = os.open(path, flags)
    try:
        os.ftruncate(fd, int(size))
    finally:
        os.close(fd)


def append(path, *words):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for w in words:
        os.write(fd, (w + "\n").encode())
    os.close(fd)


def setxattr(path, name, value, flag=""):
    flags = {"": 0, "create": os.XATTR_CREATE, "replace": os.XATTR_REPLACE}[flag]
    os.setxattr(path, name, value.encode(), flags)


OPS = {
    "rename": lambda s, d: os.rename(s, d),
    "rename-noreplace": lambda s, d: renameat2(s, d, RENAME_NOREPLACE),
    "rename-exchange": lambda s, d: renameat2(s, d, RENAME_EXCHANGE),
    "link": lambda s, d: os.link(s, d),
    "symlink": lambda t, p: os.symlink(t, p),
    "mkdir": lambda p: os.mkdir(p),
    "rmdir": lambda p: os.rmdir(p),
    "unlink": lambda p: os.unlink(p),
    "open": lambda p: os.close(os.open(p, os.O_RDONLY)),
    "open-write": lambda p: os.close(os.open(p, os.O_WRONLY)),
    "create": lambda p: os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)),
    "open-unlinked-read": open_unlinked_read,
    "truncate": truncate_fd,
    "append": append,
    "setxattr": setxattr,
    "getxattr": lambda p, n: print(os.getxattr(p, n).decode()),
    "removexattr": lambda p, n: os.removexattr(p, n),
    "mknod-fifo": lambda p: os.mkfifo(p, 0o644),
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in OPS:
        print(__doc__ + "ops: " + " ".join(sorted(OPS)), file=sys.stderr)
        sys.exit(2)
    try:
        OPS[sys.argv[1]](*sys.argv[2:])
        print("ok")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))


main()
