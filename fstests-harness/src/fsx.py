#!/usr/bin/env python3
"""An fsx-style checker: random writes, truncates, hole punches and zero ranges on one file,
each checked against an in-memory model by reading the file back.

usage: fsx.py FILE SECONDS SEED
Prints one summary line; exits 1 at the first mismatch, with the operation log's tail.
"""
import ctypes
import os
import random
import sys
import time

path, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
PUNCH, KEEP, ZERO = 2, 1, 0x10
MAXLEN = 1 << 20
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
model = bytearray()
log = []
ops = retried = 0


def fallocate(mode, off, n):
    # A break in progress (a holder slow to release) may refuse with EAGAIN: retry.
    while libc.fallocate(fd, mode, off, n) != 0:
        e = ctypes.get_errno()
        if e != 11:
            raise OSError(e, os.strerror(e))
        global retried
        retried += 1
        time.sleep(0.01)


end = time.time() + seconds
while time.time() < end:
    op = rng.choice(["write", "write", "write", "truncate", "punch", "zero"])
    off = rng.randrange(0, MAXLEN)
    n = rng.randrange(1, 65536)
    if op == "write":
        b = bytes([rng.randrange(1, 256)]) * n
        os.pwrite(fd, b, off)
        if len(model) < off + n:
            model.extend(bytes(off + n - len(model)))
        model[off:off + n] = b
    elif op == "truncate":
        os.ftruncate(fd, off)
        if off < len(model):
            del model[off:]
        else:
            model.extend(bytes(off - len(model)))
    elif op == "punch":
        fallocate(PUNCH | KEEP, off, n)
        e = min(off + n, len(model))
        if off < e:
            model[off:e] = bytes(e - off)
    else:
        fallocate(ZERO, off, n)
        if len(model) < off + n:
            model.extend(bytes(off + n - len(model)))
        model[off:off + n] = bytes(n)
    ops += 1
    log.append(f"{ops}: {op} {off} {n}")
    size = os.fstat(fd).st_size
    if size != len(model):
        print(f"MISMATCH size {size} != {len(model)} after", *log[-5:], sep="\n  ")
        sys.exit(1)
    lo = max(0, off - 4096)
    hi = min(size, off + n + 4096)
    got = os.pread(fd, max(0, hi - lo), lo) if hi > lo else b""
    if got != bytes(model[lo:hi]):
        bad = next(i for i in range(len(got)) if got[i] != model[lo + i])
        print(f"MISMATCH at byte {lo + bad}: read {got[bad]:#x}, expected {model[lo + bad]:#x} after", *log[-5:], sep="\n  ")
        sys.exit(1)
whole = os.pread(fd, len(model) + 1, 0)
if whole != bytes(model):
    print("MISMATCH in the final comparison")
    sys.exit(1)
print(f"fsx: {ops} operations checked, 0 mismatches")
sys.stderr.write(f"seed {seed}, {retried} EAGAIN retries\n")
