#!/usr/bin/env python3
"""Extracts BGP messages from a clean pcap of TCP port 179 and writes codec fixtures.

A small hand-written reader (no scapy): pcap (microsecond or nanosecond, either byte order),
Ethernet or Linux cooked capture, IPv4/IPv6, TCP; each direction of each TCP connection is
reassembled by sequence number (retransmissions dropped), then cut into BGP messages by the
16-byte marker and the length field (RFC 4271 section 4.1).

  bgp_pcap.py list CAPTURE.pcap
      prints every message: time, sender, receiver, type, length, a short decode
  bgp_pcap.py fixtures CAPTURE.pcap OUTDIR NAME=IP[,IP...]...
      writes OUTDIR/NAME_<what>.hex (one message, full hex incl. marker) for each router
      NAME whose addresses are given, and prints one Markdown table row per file
"""
import ipaddress
import os
import struct
import sys

MARKER = b"\xff" * 16
TYPES = {1: "OPEN", 2: "UPDATE", 3: "NOTIFICATION", 4: "KEEPALIVE", 5: "ROUTE-REFRESH"}
CAPS = {
    1: "multiprotocol", 2: "route-refresh", 5: "extended-nexthop", 6: "extended-message",
    9: "bgp-role", 64: "graceful-restart", 65: "4-octet-as", 69: "add-path",
    70: "enhanced-route-refresh", 71: "long-lived-graceful-restart", 73: "fqdn",
    128: "route-refresh-old-cisco",
}
ATTRS = {
    1: "ORIGIN", 2: "AS_PATH", 3: "NEXT_HOP", 4: "MED", 5: "LOCAL_PREF", 6: "ATOMIC_AGGREGATE",
    7: "AGGREGATOR", 8: "COMMUNITIES", 9: "ORIGINATOR_ID", 10: "CLUSTER_LIST",
    14: "MP_REACH_NLRI", 15: "MP_UNREACH_NLRI", 16: "EXT_COMMUNITIES", 32: "LARGE_COMMUNITY",
}
AFI = {1: "ipv4", 2: "ipv6"}
SAFI = {1: "unicast"}


def read_pcap(path):
    """Yields (time, src, dst, sport, dport, seq, flags, payload) for each TCP packet."""
    data = open(path, "rb").read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise SystemExit(f"{path}: not a pcap file (magic {magic.hex()})")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(end + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:  # Ethernet
            etype, l3 = struct.unpack(">H", frame[12:14])[0], frame[14:]
            if etype == 0x8100:
                etype, l3 = struct.unpack(">H", frame[16:18])[0], frame[18:]
        elif linktype == 113:  # Linux cooked (any)
            etype, l3 = struct.unpack(">H", frame[14:16])[0], frame[16:]
        else:
            raise SystemExit(f"{path}: unsupported link type {linktype}")
        if etype == 0x0800:
            ihl = (l3[0] & 0x0F) * 4
            total = struct.unpack(">H", l3[2:4])[0]
            if l3[9] != 6:
                continue
            src, dst = ipaddress.ip_address(l3[12:16]), ipaddress.ip_address(l3[16:20])
            tcp = l3[ihl:total]
        elif etype == 0x86DD:
            plen = struct.unpack(">H", l3[4:6])[0]
            if l3[6] != 6:
                continue
            src, dst = ipaddress.ip_address(l3[8:24]), ipaddress.ip_address(l3[24:40])
            tcp = l3[40:40 + plen]
        else:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        flags = tcp[13]
        yield t, src, dst, sport, dport, seq, flags, tcp[doff:]


def messages(path):
    """Returns [(time, src, dst, stream_no, bytes)] in capture order of each message's start."""
    streams = {}
    order = []
    for t, src, dst, sport, dport, seq, flags, payload in read_pcap(path):
        key = (src, sport, dst, dport)
        if key not in streams:
            streams[key] = {"base": None, "segs": {}, "first": t}
            order.append(key)
        s = streams[key]
        if flags & 0x02:  # SYN: data starts at ISN + 1
            s["base"] = (seq + 1) & 0xFFFFFFFF
            continue
        if not payload:
            continue
        if s["base"] is None:
            s["base"] = seq
        rel = (seq - s["base"]) & 0xFFFFFFFF
        s["segs"].setdefault(rel, (t, payload))
    out = []
    for n, key in enumerate(order):
        s = streams[key]
        buf, times, cur = bytearray(), [], 0
        for rel in sorted(s["segs"]):
            t, p = s["segs"][rel]
            if rel > cur:
                print(f"warning: gap of {rel - cur} bytes in stream {key}", file=sys.stderr)
                break
            if rel + len(p) <= cur:
                continue
            chunk = p[cur - rel:]
            times.extend([t] * len(chunk))
            buf += chunk
            cur += len(chunk)
        i = 0
        while i + 19 <= len(buf):
            if buf[i:i + 16] != MARKER:
                print(f"warning: no marker at byte {i} of stream {key}", file=sys.stderr)
                break
            length = struct.unpack(">H", buf[i + 16:i + 18])[0]
            if length < 19 or i + length > len(buf):
                break
            out.append((times[i], key[0], key[2], n, bytes(buf[i:i + length])))
            i += length
    out.sort(key=lambda m: m[0])
    return out


def prefixes(data, afi):
    """Decodes an RFC 4271 section 4.3 prefix list."""
    size = 4 if afi == 1 else 16
    out, i = [], 0
    while i < len(data):
        plen = data[i]
        nbytes = (plen + 7) // 8
        addr = data[i + 1:i + 1 + nbytes] + b"\x00" * (size - nbytes)
        out.append(f"{ipaddress.ip_address(addr)}/{plen}")
        i += 1 + nbytes
    return out


def decode_caps(params):
    caps, i = [], 0
    while i + 2 <= len(params):
        ptype, plen = params[i], params[i + 1]
        body = params[i + 2:i + 2 + plen]
        i += 2 + plen
        if ptype != 2:
            caps.append(f"param{ptype}")
            continue
        j = 0
        while j + 2 <= len(body):
            code, clen = body[j], body[j + 1]
            v = body[j + 2:j + 2 + clen]
            j += 2 + clen
            name = CAPS.get(code, f"cap{code}")
            if code == 1 and clen == 4:
                afi, safi = struct.unpack(">HxB", v)
                name += f" {AFI.get(afi, afi)}/{SAFI.get(safi, safi)}"
            elif code == 65 and clen == 4:
                name += f" {struct.unpack('>I', v)[0]}"
            elif code == 73 and clen >= 1:
                hl = v[0]
                name += f" host={v[1:1 + hl].decode(errors='replace')!r}"
            elif code == 69:
                parts = []
                for k in range(0, clen - 3, 4):
                    afi, safi, sr = struct.unpack(">HBB", v[k:k + 4])
                    parts.append(f"{AFI.get(afi, afi)}/{SAFI.get(safi, safi)}:{sr}")
                name += " " + ",".join(parts)
            elif code == 64 and clen >= 2:
                flags_time = struct.unpack(">H", v[:2])[0]
                name += f" time={flags_time & 0xFFF} flags={flags_time >> 12:#x}"
                afs = [f"{AFI.get(a, a)}/{SAFI.get(s, s)}" for a, s, _f in
                       (struct.unpack(">HBB", v[k:k + 4]) for k in range(2, clen - 3, 4))]
                if afs:
                    name += " " + ",".join(afs)
            elif code == 5:
                parts = []
                for k in range(0, clen - 5, 6):
                    afi, safi, nh = struct.unpack(">HHH", v[k:k + 6])
                    parts.append(f"{AFI.get(afi, afi)}/{SAFI.get(safi, safi)} nh-afi={AFI.get(nh, nh)}")
                name += " " + ",".join(parts)
            elif code == 71:
                parts = []
                for k in range(0, clen - 6, 7):
                    afi, safi, fl, t1, t2, t3 = struct.unpack(">HBBBBB", v[k:k + 7])
                    parts.append(f"{AFI.get(afi, afi)}/{SAFI.get(safi, safi)} flags={fl:#x} stale={(t1 << 16) | (t2 << 8) | t3}")
                name += " " + ",".join(parts)
            elif clen:
                name += f" ({clen} bytes)"
            caps.append(name)
    return caps


def decode_attrs(data):
    out, i = [], 0
    while i + 3 <= len(data):
        flags, code = data[i], data[i + 1]
        if flags & 0x10:
            alen, hdr = struct.unpack(">H", data[i + 2:i + 4])[0], 4
        else:
            alen, hdr = data[i + 2], 3
        v = data[i + hdr:i + hdr + alen]
        i += hdr + alen
        name = ATTRS.get(code, f"ATTR{code}")
        if code == 1:
            name += "=" + ["IGP", "EGP", "INCOMPLETE"][v[0]] if v and v[0] < 3 else ""
        elif code == 2:
            segs, k = [], 0
            while k + 2 <= len(v):
                st, cnt = v[k], v[k + 1]
                asns = struct.unpack(f">{cnt}I", v[k + 2:k + 2 + 4 * cnt])
                segs.append(("{%s}" if st == 1 else "%s") % " ".join(map(str, asns)))
                k += 2 + 4 * cnt
            name += "=[" + " ".join(segs) + "]"
        elif code == 3:
            name += f"={ipaddress.ip_address(v)}"
        elif code in (4, 5):
            name += f"={struct.unpack('>I', v)[0]}"
        elif code == 8:
            name += "=" + ",".join(f"{a}:{b}" for a, b in
                                   (struct.unpack(">HH", v[k:k + 4]) for k in range(0, len(v), 4)))
        elif code == 32:
            name += "=" + ",".join("%d:%d:%d" % struct.unpack(">III", v[k:k + 12])
                                   for k in range(0, len(v), 12))
        elif code == 14:
            afi, safi, nhl = struct.unpack(">HBB", v[:4])
            nh = v[4:4 + nhl]
            hops = [str(ipaddress.ip_address(nh[k:k + 16])) for k in range(0, nhl, 16)] \
                if afi == 2 else [str(ipaddress.ip_address(nh[:4]))]
            nlri = prefixes(v[5 + nhl:], afi)
            name += f"({AFI.get(afi, afi)}/{SAFI.get(safi, safi)} nh={'+'.join(hops)} nlri={','.join(nlri)})"
        elif code == 15:
            afi, safi = struct.unpack(">HB", v[:3])
            name += f"({AFI.get(afi, afi)}/{SAFI.get(safi, safi)} withdrawn={','.join(prefixes(v[3:], afi)) or 'none'})"
        out.append(name)
    return out


def describe(msg):
    """A one-line summary of a BGP message, and a fixture category (or None)."""
    mtype = msg[18]
    body = msg[19:]
    if mtype == 1:
        ver, asn, hold = struct.unpack(">BHH", body[:5])
        bgp_id = ipaddress.ip_address(body[5:9])
        plen = body[9]
        caps = decode_caps(body[10:10 + plen])
        return f"OPEN v{ver} AS {asn} hold {hold} id {bgp_id}; capabilities: {'; '.join(caps)}", "open"
    if mtype == 4:
        return "KEEPALIVE", "keepalive"
    if mtype == 3:
        code, sub = body[0], body[1]
        data = body[2:]
        text = f"NOTIFICATION code {code} subcode {sub}"
        if data:
            text += f" data {data.hex()}"
            if code == 6 and sub in (2, 4) and data[0] + 1 <= len(data):
                text += f" (shutdown communication {data[1:1 + data[0]].decode(errors='replace')!r}, RFC 9003)"
        if code != 6:
            return text, None
        return text, ("notification_cease_message" if data else "notification_cease")
    if mtype != 2:
        return TYPES.get(mtype, f"type {mtype}"), None
    wlen = struct.unpack(">H", body[:2])[0]
    withdrawn = prefixes(body[2:2 + wlen], 1)
    alen = struct.unpack(">H", body[2 + wlen:4 + wlen])[0]
    attrs = decode_attrs(body[4 + wlen:4 + wlen + alen])
    nlri = prefixes(body[4 + wlen + alen:], 1)
    if not withdrawn and not attrs and not nlri:
        return "UPDATE End-of-RIB ipv4/unicast (empty UPDATE, RFC 4724 section 2)", "eor_ipv4"
    parts = []
    if withdrawn:
        parts.append("withdrawn " + ",".join(withdrawn))
    if attrs:
        parts.append("attributes " + "; ".join(attrs))
    if nlri:
        parts.append("NLRI " + ",".join(nlri))
    text = "UPDATE " + " | ".join(parts)
    if nlri:
        return text, "update_ipv4"
    if withdrawn:
        return text, "withdraw_ipv4"
    if any(a.startswith("MP_REACH_NLRI(ipv6") for a in attrs):
        return text, "update_ipv6"
    if len(attrs) == 1 and attrs[0].startswith("MP_UNREACH_NLRI(ipv6/unicast withdrawn=none"):
        return "UPDATE End-of-RIB ipv6/unicast (MP_UNREACH_NLRI without prefixes, RFC 4724 section 2)", "eor_ipv6"
    if any(a.startswith("MP_UNREACH_NLRI(ipv6") for a in attrs):
        return text, "withdraw_ipv6"
    return text, None


def main(argv):
    if len(argv) >= 2 and argv[0] == "list":
        for t, src, dst, n, m in messages(argv[1]):
            print(f"{t:.6f} {src} -> {dst} stream {n} len {len(m)}: {describe(m)[0]}")
        return
    if len(argv) >= 4 and argv[0] == "fixtures":
        pcap, outdir = argv[1], argv[2]
        routers = {}
        for spec in argv[3:]:
            name, addrs = spec.split("=", 1)
            for a in addrs.split(","):
                routers[ipaddress.ip_address(a)] = name
        written = set()
        for _t, src, _dst, _n, m in messages(pcap):
            name = routers.get(src)
            text, what = describe(m)
            if what == "open" and src.version == 6:
                what = "open_ipv6_session"
            if name is None or what is None or (name, what) in written:
                continue
            if os.path.exists(f"{outdir}/{name}_{what}.hex"):
                continue  # an earlier capture already gave this one
            written.add((name, what))
            fname = f"{name}_{what}.hex"
            with open(f"{outdir}/{fname}", "w") as f:
                f.write(m.hex() + "\n")
            print(f"| `{fname}` | {len(m)} | {text} |")
        return
    print(__doc__, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
