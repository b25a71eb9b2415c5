"""The attributes checksum of docs/checkpoint-format.md (`/@attrs_checksum`), written
from the document with h5py alone: every attribute of every object but the checksum
itself, as records sorted by (object, name), hashed with 64-bit FNV-1a.

    checksum(f)  the value the document defines for the open file f
    seal(f)      rewrites /@attrs_checksum of a file opened "r+" (tests that change an
                 attribute on purpose and want the reader to see the change itself)
"""

import struct

import h5py

NAME = "attrs_checksum"


def _records(f):
    out = []

    def add(path, obj):
        for name in obj.attrs:
            if path == "/" and name == NAME:
                continue
            kind = obj.attrs.get_id(name).get_type()
            value = obj.attrs[name]
            cls = kind.get_class()
            if cls == h5py.h5t.INTEGER:
                signed = kind.get_sign() != h5py.h5t.SGN_NONE
                code, raw = (b"i" if signed else b"u"), int(value).to_bytes(8, "little", signed=signed)
            elif cls == h5py.h5t.FLOAT:
                code, raw = b"f", struct.pack("<d", float(value))
            elif cls == h5py.h5t.STRING:
                code, raw = b"s", (value if isinstance(value, bytes) else value.encode())
            else:
                raise ValueError(f"{path}@{name}: unexpected attribute type")
            out.append((path.encode(), name.encode(), code, bytes(raw)))

    add("/", f)
    f.visititems(lambda name, obj: add("/" + name, obj))
    return sorted(out)


def checksum(f):
    h = 0xCBF29CE484222325
    for obj, name, code, raw in _records(f):
        record = (len(obj).to_bytes(8, "little") + obj + len(name).to_bytes(8, "little") + name
                  + code + len(raw).to_bytes(8, "little") + raw)
        for byte in record:
            h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def seal(f):
    import numpy as np
    f.attrs[NAME] = np.uint64(checksum(f))
