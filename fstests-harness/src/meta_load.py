#!/usr/bin/env python3
"""A metadata load for power-cut tests, and the check of what must survive the cut.

usage: meta_load.py setup DIR LOG     20 keepers k0..k19 (version 0), made durable
       meta_load.py run DIR LOG       runs until an operation fails (the cut: EIO)
       meta_load.py check DIR LOG     after the next mount: prints "ok" or what is wrong

The load replaces keepers atomically (write a temporary file, fsync it, rename it over the
keeper) and churns long names (create, write, rename, unlink, no fsync); every 8 replacements
it fsyncs the directory, which makes every rename before it durable. LOG (on another
filesystem) records each step after it returned. What must hold after a cut: each keeper
holds one whole version of its own, no older than its last durable rename and no newer
than its last attempted one; a temporary file that is still there, and whose fsync returned,
holds its whole content.
"""
import os
import sys

KEEPERS = 20
PAD = 60  # lines of content per version
LONG = "n" * 180  # long names make big journal records: checkpoints come sooner


def content(i, v):
    return (f"k{i} v{v}\n" * PAD).encode()


def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data, sync):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def setup(d, log):
    os.makedirs(os.path.join(d, "churn"))
    for i in range(KEEPERS):
        write_file(os.path.join(d, f"k{i}"), content(i, 0), True)
    fsync_dir(d)
    with open(log, "w") as f:
        f.write("durable 0\n")


def run(d, log):
    # Versions go on from the log's (a later run after a check: every version is new).
    n = max([0] + [int(line.split()[-1]) for line in open(log) if line.startswith(("renamed", "next"))])
    with open(log, "a", buffering=1) as out:
        made = []  # churn rounds of this run whose files are still there
        try:
            while True:
                n += 1
                c = os.path.join(d, "churn")
                for j in range(4):
                    a = os.path.join(c, f"{LONG}.{n}.{j}.a")
                    write_file(a, b"churn %d\n" % n, False)
                    os.rename(a, os.path.join(c, f"{LONG}.{n}.{j}.b"))
                made.append(n)
                if len(made) > 3:
                    m = made.pop(0)
                    for j in range(4):
                        os.unlink(os.path.join(c, f"{LONG}.{m}.{j}.b"))
                i = n % KEEPERS
                tmp = os.path.join(d, f"tmp.{n}")
                write_file(tmp, content(i, n), True)
                out.write(f"attempt {i} {n}\n")
                os.rename(tmp, os.path.join(d, f"k{i}"))
                out.write(f"renamed {i} {n}\n")
                if n % 8 == 0:
                    fsync_dir(d)
                    out.write(f"durable {n}\n")
        except OSError as e:
            out.write(f"stopped at {n}: {e.strerror}\n")


def check(d, log):
    attempts = {i: {0} for i in range(KEEPERS)}
    renamed = {i: [(0, 0)] for i in range(KEEPERS)}  # (version, step index)
    durable_step = 0
    steps = 0
    for line in open(log):
        w = line.split()
        steps += 1
        if w[0] == "attempt":
            attempts[int(w[1])].add(int(w[2]))
        elif w[0] == "renamed":
            renamed[int(w[1])].append((int(w[2]), steps))
        elif w[0] == "durable":  # every rename logged before it is durable
            durable_step = steps
    problems = []
    for i in range(KEEPERS):
        floor = max(v for v, s in renamed[i] if s <= durable_step)
        path = os.path.join(d, f"k{i}")
        try:
            data = open(path, "rb").read()
        except OSError as e:
            problems.append(f"k{i}: {e.strerror}")
            continue
        first = data.split(b"\n", 1)[0].decode(errors="replace")
        w = first.split()
        ok = len(w) == 2 and w[0] == f"k{i}" and w[1].startswith("v") and w[1][1:].isdigit()
        v = int(w[1][1:]) if ok else None
        if not ok or data != content(i, v):
            problems.append(f"k{i}: not one whole version of its own ({len(data)} bytes, {first[:20]!r})")
        elif v not in attempts[i]:
            problems.append(f"k{i}: version {v} was never written to it")
        elif v < floor:
            problems.append(f"k{i}: version {v}, older than its durable version {floor}")
    for name in os.listdir(d):
        if name.startswith("tmp."):
            n = int(name[4:])
            if n not in attempts[n % KEEPERS]:
                continue  # cut before its fsync returned: it may hold anything of its own
            data = open(os.path.join(d, name), "rb").read()
            if data != content(n % KEEPERS, n):
                problems.append(f"{name}: not its whole fsync'd content ({len(data)} bytes)")
    print("; ".join(problems) if problems else "ok")
    if not problems:
        # What the next run starts from: the versions found, durable now.
        current = {i: int(open(os.path.join(d, f"k{i}"), "rb").read().split()[1][1:].decode()) for i in range(KEEPERS)}
        top = max(v for r in renamed.values() for v, _ in r)
        with open(log, "w") as f:
            for i, v in current.items():
                f.write(f"attempt {i} {v}\nrenamed {i} {v}\n")
            f.write(f"durable {top}\nnext {top}\n")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("setup", "run", "check"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    {"setup": setup, "run": run, "check": check}[sys.argv[1]](sys.argv[2], sys.argv[3])


main()
