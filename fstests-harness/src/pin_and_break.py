#!/usr/bin/env python3
"""Pins a file range through the holder protocol, then breaks the lease from the same
process: prints the pin reply's verb and the breaker's outcome (an errno name or "ok").

usage: pin_and_break.py FILE truncate|punch
The protocol is pinfs's (see src/protocol.rs): one SOCK_SEQPACKET message per request,
the file's descriptor passed with SCM_RIGHTS.
"""
import array
import errno
import os
import socket
import sys

path, how = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
dev = os.fstat(fd).st_dev
run = os.environ.get("PINFS_RUN_DIR", "/run/pinfs")
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(f"{run}/{dev}.sock")
s.sendmsg([b"1 pin offset=0 len=4096"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
while True:
    msg, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
    words = msg.decode().split()
    if words[0] == "1":
        print("pin:", words[1])
        break
try:
    if how == "truncate":
        os.ftruncate(fd, 0)
    else:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
        if libc.fallocate(fd, 3, 0, 4096) != 0:
            raise OSError(ctypes.get_errno(), "fallocate")
    print("break:", "ok")
except OSError as e:
    name = "EDEADLK" if e.errno == errno.EDEADLK else errno.errorcode.get(e.errno, str(e.errno))
    print("break:", name)
