#!/usr/bin/env python3
"""Prints the absolute file offset of a tensor's data in a GGUF v3 file
(the golden tests corrupt a chosen tensor with it). Usage: gguf_offset.py FILE NAME"""
import struct
import sys

SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def main(path, want):
    b = open(path, "rb").read()
    pos = 8
    n_t, n_kv = struct.unpack_from("<QQ", b, pos)
    pos += 16

    def string(p):
        n = struct.unpack_from("<Q", b, p)[0]
        return b[p + 8:p + 8 + n], p + 8 + n

    def value(t, p):
        if t == 8:
            return string(p)[1]
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, p)
            p += 12
            for _ in range(n):
                p = value(et, p)
            return p
        return p + SIZES[t]

    align = 32
    for _ in range(n_kv):
        key, pos = string(pos)
        t = struct.unpack_from("<I", b, pos)[0]
        if key == b"general.alignment":
            align = struct.unpack_from("<I", b, pos + 4)[0]
        pos = value(t, pos + 4)
    found = None
    for _ in range(n_t):
        name, pos = string(pos)
        nd = struct.unpack_from("<I", b, pos)[0]
        pos += 4 + 8 * nd
        _, off = struct.unpack_from("<IQ", b, pos)
        pos += 12
        if name.decode() == want:
            found = off
    data = (pos + align - 1) // align * align
    if found is None:
        sys.exit("no tensor " + want)
    print(data + found)


main(sys.argv[1], sys.argv[2])
