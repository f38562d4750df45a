#!/usr/bin/env python3
"""An fsstress-style load: worker processes doing random namespace and data operations in
one directory tree. Errors that the operations can legitimately meet (a name another worker
removed, a directory not empty, ...) are expected; any other errno fails the run.

usage: fsstress.py DIR SECONDS SEED WORKERS
"""
import errno
import multiprocessing
import os
import random
import sys
import time

EXPECTED = {errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR, errno.EINVAL,
            errno.ENODATA, errno.EAGAIN, errno.ETXTBSY, errno.ENOSPC}


def worker(root, seconds, seed, out):
    rng = random.Random(seed)
    names = [os.path.join(root, f"d{i % 4}", f"n{i}") for i in range(64)]
    end = time.time() + seconds
    count = 0
    while time.time() < end:
        p = rng.choice(names)
        q = rng.choice(names)
        op = rng.randrange(12)
        try:
            if op == 0:
                with open(p, "wb") as f:
                    f.write(os.urandom(rng.randrange(0, 200000)))
            elif op == 1:
                with open(p, "ab") as f:
                    f.write(b"x" * rng.randrange(1, 10000))
            elif op == 2:
                os.rename(p, q)
            elif op == 3:
                os.link(p, q)
            elif op == 4:
                os.unlink(p)
            elif op == 5:
                os.mkdir(p)
            elif op == 6:
                os.rmdir(p)
            elif op == 7:
                os.truncate(p, rng.randrange(0, 300000))
            elif op == 8:
                os.setxattr(p, "user.s", os.urandom(rng.randrange(1, 100)))
            elif op == 9:
                os.listdir(os.path.dirname(p))
            elif op == 10:
                os.stat(p)
            else:
                fd = os.open(p, os.O_RDONLY)
                os.read(fd, 65536)
                os.close(fd)
            count += 1
        except OSError as e:
            if e.errno not in EXPECTED and not (op == 3 and e.errno == errno.EPERM):  # link of a directory
                out.put(f"unexpected {errno.errorcode.get(e.errno, e.errno)} from op {op} on {p}")
                return
    out.put(count)


def main():
    root, seconds, seed, workers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    for i in range(4):
        os.makedirs(os.path.join(root, f"d{i}"), exist_ok=True)
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=worker, args=(root, seconds, seed + w, q)) for w in range(workers)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    bad = [r for r in results if isinstance(r, str)]
    for b in bad:
        print(b)
    total = sum(r for r in results if isinstance(r, int))
    sys.stderr.write(f"seed {seed}: {total} operations\n")
    print("fsstress: no unexpected errors" if not bad else "fsstress: FAILED")
    sys.exit(1 if bad else 0)


main()
