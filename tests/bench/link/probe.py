"""Measures the emulated link from inside a namespace; prints one JSON line.

  probe.py ping ADDR COUNT INTERVAL_S      ICMP echo: loss and round-trip times
  probe.py udp-sink PORT SECONDS           packets and rate of a UDP flood (rate after its first second)
  probe.py udp-blast ADDR PORT BPS SECONDS send a UDP flood at BPS bits/s
  probe.py tcp-sink PORT                   receive rate of one TCP stream (after its first second)
  probe.py tcp-send ADDR PORT SECONDS      send one TCP stream for SECONDS

Python, not Deno: raw ICMP and UDP sockets without unstable flags.
"""
import json, os, socket, struct, sys, time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(addr, count, interval):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setblocking(False)
    ident = os.getpid() & 0xFFFF
    sent = {}
    rtts = []
    next_send = time.monotonic()
    seq = 0
    deadline = None
    while True:
        now = time.monotonic()
        if seq < count and now >= next_send:
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"x" * 56
            packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload
            sock.sendto(packet, (addr, 0))
            sent[seq] = now
            seq += 1
            next_send += interval
            if seq == count:
                deadline = now + 3 + 4 * (max(rtts) if rtts else 1)
        if deadline is not None and (now > deadline or len(rtts) == count):
            break
        try:
            while True:
                data = sock.recv(2048)
                icmp = data[(data[0] & 0xF) * 4:]
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if kind == 0 and rid == ident and rseq in sent:
                    rtts.append(time.monotonic() - sent.pop(rseq))
        except BlockingIOError:
            pass
        time.sleep(0.0005)
    rtts.sort()
    return {
        "sent": count,
        "received": len(rtts),
        "rttMinMs": rtts[0] * 1000 if rtts else None,
        "rttMedianMs": rtts[len(rtts) // 2] * 1000 if rtts else None,
        "rttMaxMs": rtts[-1] * 1000 if rtts else None,
    }


def measure(chunks):
    """Bits per second over what arrived after the first second."""
    start = None
    counted = 0
    first = last = None
    for size, at in chunks:
        if start is None:
            start = at
        if at - start >= 1.0:
            if first is None:
                first = at
            else:
                counted += size
            last = at
    if first is None or last <= first:
        return {"bps": 0}
    return {"bps": counted * 8 / (last - first), "seconds": last - first}


def udp_sink(port, seconds):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(seconds)
    print(json.dumps({"ready": True}), flush=True)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            break  # the flood is over (or never came within SECONDS)
        sock.settimeout(1.0)
        chunks.append((len(data) + 28, time.monotonic()))  # + IP and UDP headers: the link carries them
    return dict(measure(chunks), packets=len(chunks))


def udp_blast(addr, port, bps, seconds):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"\0" * 1400
    per_packet = (len(payload) + 28) * 8 / bps
    start = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        if now - start > seconds:
            break
        due = start + sent * per_packet
        if now < due:
            time.sleep(min(due - now, 0.001))
            continue
        try:
            sock.sendto(payload, (addr, port))
        except OSError:
            pass
        sent += 1
    return {"sent": sent}


def tcp_sink(port):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(1)
    print(json.dumps({"ready": True}), flush=True)
    conn, _ = server.accept()
    chunks = []
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        chunks.append((len(data), time.monotonic()))
    return measure(chunks)


def tcp_send(addr, port, seconds):
    sock = socket.create_connection((addr, port), timeout=30)
    block = b"\0" * (1 << 16)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        sent += sock.send(block)
    sock.close()
    return {"sent": sent}


def main(args):
    mode = args[0]
    if mode == "ping":
        return ping(args[1], int(args[2]), float(args[3]))
    if mode == "udp-sink":
        return udp_sink(int(args[1]), float(args[2]))
    if mode == "udp-blast":
        return udp_blast(args[1], int(args[2]), float(args[3]), float(args[4]))
    if mode == "tcp-sink":
        return tcp_sink(int(args[1]))
    if mode == "tcp-send":
        return tcp_send(args[1], int(args[2]), float(args[3]))
    raise SystemExit("unknown mode " + mode)


print(json.dumps(main(sys.argv[1:])), flush=True)
