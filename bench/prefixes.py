#!/usr/bin/env python3
"""Generates N consecutive /32 prefixes from 198.18.0.0 (198.18.0.0/15, benchmarking range)
for the announce benchmark, in the form each announcer loads fastest.

  prefixes.py bird-static N        BIRD "route 198.18.x.y/32 blackhole;" lines
  prefixes.py mrt N NEXT_HOP FILE [SKIP]
                                   an MRT TABLE_DUMP_V2 file (RFC 6396) for `gobgp mrt inject`
                                   with prefixes SKIP..N-1: one peer, ORIGIN IGP, empty AS_PATH,
                                   NEXT_HOP; then PAD (2048) records repeating the first
                                   prefixes, because `gobgp mrt inject` (3.10) loses the last
                                   hundred or so records of every file it reads
"""
import ipaddress
import struct
import sys

FIRST = int(ipaddress.IPv4Address("198.18.0.0"))
PAD = 2048


def addrs(n, skip=0):
    if n > 131072:
        raise SystemExit("at most 131072 prefixes fit in 198.18.0.0/15")
    for i in range(skip, n):
        yield FIRST + i


def mrt_record(subtype, body):
    # MRT common header: timestamp, type 13 (TABLE_DUMP_V2), subtype, length.
    return struct.pack(">IHHI", 0, 13, subtype, len(body)) + body


def write_mrt(n, next_hop, path, skip=0):
    nh = ipaddress.IPv4Address(next_hop).packed
    # PEER_INDEX_TABLE: collector id, empty view name, one peer (type 0x02: IPv4, 4-octet AS).
    peers = nh + struct.pack(">HH", 0, 1) + bytes([0x02]) + nh + nh + struct.pack(">I", 65002)
    attrs = (
        bytes([0x40, 1, 1, 0])            # ORIGIN IGP
        + bytes([0x40, 2, 0])             # AS_PATH empty
        + bytes([0x40, 3, 4]) + nh        # NEXT_HOP
    )
    with open(path, "wb") as f:
        f.write(mrt_record(1, peers))
        wanted = list(addrs(n, skip))
        for seq, a in enumerate(wanted + wanted[:PAD]):
            entry = struct.pack(">HIH", 0, 0, len(attrs)) + attrs
            body = struct.pack(">IB", seq, 32) + struct.pack(">I", a) + struct.pack(">H", 1) + entry
            f.write(mrt_record(2, body))  # RIB_IPV4_UNICAST


def main(argv):
    if len(argv) == 2 and argv[0] == "bird-static":
        out = sys.stdout
        for a in addrs(int(argv[1])):
            out.write(f"  route {ipaddress.IPv4Address(a)}/32 blackhole;\n")
        return
    if len(argv) in (4, 5) and argv[0] == "mrt":
        write_mrt(int(argv[1]), argv[2], argv[3], int(argv[4]) if len(argv) == 5 else 0)
        return
    print(__doc__, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
