#!/usr/bin/env python3
"""Which bytes a range of a file holds, checked against the bytes allowed there.

usage: bytes.py FILE OFFSET LEN ALLOWED   (ALLOWED: bytes as hex, comma-separated: 41,00)
       bytes.py FILE OFFSET LEN           (prints the distinct bytes present, as hex)

With ALLOWED, prints "ok" when the file has all LEN bytes from OFFSET and each is one of
ALLOWED; otherwise what is wrong (short, or the first byte that is not allowed and where).
"""
import sys


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    path, off, length = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0)
    try:
        with open(path, "rb") as f:
            f.seek(off)
            data = f.read(length)
    except OSError as e:
        print(f"cannot read {path}: {e.strerror}")
        return
    if len(sys.argv) == 4:
        print(",".join(f"{b:02x}" for b in sorted(set(data))) or "empty")
        return
    allowed = {int(x, 16) for x in sys.argv[4].split(",")}
    if len(data) < length:
        print(f"short: {len(data)} of {length} bytes")
        return
    for i, b in enumerate(data):
        if b not in allowed:
            print(f"byte {off + i} is {b:02x}, not one of {sys.argv[4]}")
            return
    print("ok")


main()
