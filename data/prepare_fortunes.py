#!/usr/bin/env python3
"""Byte-level token shards of the Debian `fortunes` corpus (docs/data-format.md).

Input: every regular fortune file under /usr/share/games/fortunes (subdirectories such
as off/ included), in sorted order of the path relative to that directory, except the
*.dat index files (strfile tables) and symlinks that point at a file already included
(Debian's *.u8 -> <name> links). Each file is a list of fortunes separated by lines
holding only "%".

Tokens: the raw bytes, one uint16 token per byte (vocab 256, no normalisation), each
fortune followed by its "%\\n" separator line, exactly as in the source files.

Split: a fortune goes to validation when the first 8 bytes of SHA-256(fortune bytes),
read as a big-endian integer, are below 5% of 2^64 -- deterministic, independent of file
order, and duplicate fortunes land on the same side. Everything else is training data.

Output: <out>/fortunes_train.tok and <out>/fortunes_val.tok (default out: data/shards
next to this script). Prints the fortune and token counts. Standard library only.
"""

import argparse
import array
import hashlib
import os
import struct
import sys

MAGIC = b"MOETOKS\0"
VERSION = 1
VOCAB = 256


def fortune_files(root):
    """Sorted (relative path, absolute path) of the fortune files under root."""
    candidates = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name.endswith(".dat"):
                continue
            path = os.path.join(dirpath, name)
            candidates.append((os.path.relpath(path, root), path))
    candidates.sort()
    chosen, seen = [], set()
    for rel, path in candidates:
        real = os.path.realpath(path)
        if not os.path.isfile(real) or real in seen:
            continue  # a dangling link, or a link to a file already taken
        seen.add(real)
        chosen.append((rel, path))
    return chosen


def split_fortunes(data):
    """The fortunes of one file: byte strings ending in a newline, separators removed."""
    fortunes, current = [], []
    for line in data.splitlines(keepends=True):
        if line.rstrip(b"\r\n") == b"%":
            if current:
                fortunes.append(b"".join(current))
            current = []
        else:
            current.append(line)
    if current:
        tail = b"".join(current)
        fortunes.append(tail if tail.endswith(b"\n") else tail + b"\n")
    return fortunes


def is_validation(fortune, fraction):
    digest = hashlib.sha256(fortune).digest()
    return int.from_bytes(digest[:8], "big") < int(fraction * 2**64)


def write_shard(path, data):
    tokens = array.array("H", list(data))  # one uint16 token per byte (not the raw buffer)
    if sys.byteorder != "little":
        tokens.byteswap()
    header = struct.pack("<8sIIQII", MAGIC, VERSION, 2, len(tokens), VOCAB, 0)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(tokens.tobytes())
    os.replace(tmp, path)  # readers never see a half-written shard
    return len(tokens)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="/usr/share/games/fortunes",
                        help="fortune directory (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(here, "shards"),
                        help="output directory (default: data/shards)")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of fortunes held out for validation (default: 0.05)")
    args = parser.parse_args()

    files = fortune_files(args.src)
    if not files:
        sys.exit(f"prepare_fortunes: no fortune files under {args.src} "
                 "(Debian package: fortunes)")
    train, val = bytearray(), bytearray()
    counts = {"train": 0, "val": 0}
    for _, path in files:
        with open(path, "rb") as f:
            for fortune in split_fortunes(f.read()):
                side = "val" if is_validation(fortune, args.val_fraction) else "train"
                (val if side == "val" else train).extend(fortune + b"%\n")
                counts[side] += 1

    os.makedirs(args.out, exist_ok=True)
    n_train = write_shard(os.path.join(args.out, "fortunes_train.tok"), train)
    n_val = write_shard(os.path.join(args.out, "fortunes_val.tok"), val)
    print(f"{len(files)} files: {', '.join(rel for rel, _ in files)}")
    print(f"train: {counts['train']} fortunes, {n_train} tokens -> "
          f"{os.path.join(args.out, 'fortunes_train.tok')}")
    print(f"val:   {counts['val']} fortunes, {n_val} tokens -> "
          f"{os.path.join(args.out, 'fortunes_val.tok')}")


if __name__ == "__main__":
    main()
