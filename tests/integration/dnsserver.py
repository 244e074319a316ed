"""A small, controllable DNS server on loopback for the integration tests.

    srv = DnsServer(zones=["dnsbl.test", "example.test"])
    srv.start()
    srv.add("2.0.0.127.dnsbl.test", "A", "127.0.0.2")
    srv.add("example.test", "TXT", "v=spf1 -all")
    ... moat policy: resolver forward <srv.address> ...
    srv.stop()

One thread serves UDP and TCP on the same loopback port (selectors, no
worker pool, no unbounded queues).  Delayed answers wait in a bounded heap
inside that same thread, so a delay never blocks other queries.

Zone model (all names case-insensitive, trailing dot optional):
  * zones=None: authoritative for every name; otherwise only for names at or
    under one of the given apexes (others get REFUSED, aa=0).  Explicit zones
    also get a synthetic SOA at the apex, used in negative answers.
  * unknown name in a zone -> NXDOMAIN, aa=1; a name that exists (has records
    or is an empty non-terminal) but has no record of the type -> NOERROR with
    no answers (NODATA).  CNAMEs are chased inside the server's own data.
  * behaviours per name (exact name): set_rcode, set_delay, set_drop,
    set_truncate, set_garbage.  Precedence: drop > garbage > rcode > records;
    delay applies to whatever is sent.  set_default_delay(s) delays every
    answer of a name without a delay of its own (a slow name server).
  * whether a name exists (NXDOMAIN or NODATA) is read from an index of
    every record's name and its ancestors, kept as records come and go, so
    a zone of 100,000 names answers as fast as a small one.
"""

import heapq
import ipaddress
import itertools
import selectors
import socket
import struct
import threading
import time

from dnslib import (AAAA, CNAME, DNSRecord, MX, NS, PTR, QTYPE,
                    RCODE, RR, SOA, TXT, A)

__all__ = ["DnsServer"]

MAX_DELAY = 60.0          # seconds, per name
MAX_PENDING = 256         # delayed answers waiting at once
MAX_TCP_CONNS = 64
TCP_IDLE = 10.0           # seconds before an idle TCP connection is closed
MAX_TCP_OUT = 4 << 20     # bytes queued to one TCP client before it is cut
UDP_MAX = 65507           # larger UDP answers are sent truncated (TC=1)

_RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3,
           "NOTIMP": 4, "REFUSED": 5}
_TYPES = ("A", "AAAA", "TXT", "MX", "PTR", "CNAME", "NS")


def _norm(name):
    n = str(name).strip().rstrip(".").lower()
    return n


def _rtype(rtype):
    t = str(rtype).upper()
    if t not in _TYPES:
        raise ValueError("unsupported record type %r (have %s)" % (rtype, ", ".join(_TYPES)))
    return t


def _rcode(rcode):
    if isinstance(rcode, int):
        return rcode
    try:
        return _RCODES[str(rcode).upper()]
    except KeyError:
        raise ValueError("unknown rcode %r" % (rcode,)) from None


def _txt_strings(value):
    items = [value] if isinstance(value, (str, bytes, bytearray)) else list(value)
    out = []
    for item in items:
        b = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        if not b:
            out.append(b"")
        for i in range(0, len(b), 255):
            out.append(b[i:i + 255])
    return out


def _rdata(t, value):
    if t == "A":
        return A(str(ipaddress.IPv4Address(value)))
    if t == "AAAA":
        return AAAA(str(ipaddress.IPv6Address(value)))
    if t == "TXT":
        return TXT(_txt_strings(value))
    if t == "MX":
        pref, host = value
        return MX(_norm(host) + ".", int(pref))
    return {"PTR": PTR, "CNAME": CNAME, "NS": NS}[t](_norm(value) + ".")


class _Conn:
    __slots__ = ("sock", "inbuf", "out", "last", "closed")

    def __init__(self, sock):
        self.sock = sock
        self.inbuf = bytearray()
        self.out = bytearray()
        self.last = time.monotonic()
        self.closed = False


class DnsServer:
    def __init__(self, host="127.0.0.1", port=0, zones=None):
        ip = ipaddress.ip_address(host)
        if not ip.is_loopback:
            raise ValueError("DnsServer binds to loopback only, not %r" % host)
        self.host = str(ip)
        self._family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self._want_port = int(port)
        self.port = None
        self.zones = None if zones is None else [_norm(z) for z in zones]
        self.udp_max = UDP_MAX
        self.lock = threading.Lock()
        self.log = []                 # (qname, qtype, proto); hold .lock to read
        self._clear()
        self._udp = self._tcp = None
        self._thread = None
        self._stopping = threading.Event()
        self._wake_r = self._wake_w = None

    # ------------------------------------------------------------ zone model

    def _clear(self):
        self._records = {}            # name -> [(type, rdata, ttl)]
        self._names = {}              # name or ancestor of one -> names under it (incl.)
        self.default_delay = 0.0
        self._rcodes = {}             # (name, type or None) -> int
        self._delays = {}
        self._drops = set()
        self._truncs = set()
        self._garbage = {}

    def _check_name(self, name):
        n = _norm(name)
        if self._zone_of(n) is None:
            raise ValueError("%r is outside the served zones %r" % (name, self.zones))
        return n

    def add(self, name, rtype, value, ttl=60):
        """Add a record: A/AAAA (address), TXT (str/bytes or list; strings
        longer than 255 bytes are split), MX ((pref, host)), PTR/CNAME/NS (name)."""
        n = self._check_name(name)
        t = _rtype(rtype)
        rd = _rdata(t, value)
        with self.lock:
            if n not in self._records:
                self._index(n, 1)
            self._records.setdefault(n, []).append((t, rd, int(ttl)))

    def _index(self, n, d):
        """Count name n (d=1) or uncount it (d=-1) at n and each ancestor."""
        parts = n.split(".")
        for i in range(len(parts)):
            k = ".".join(parts[i:])
            c = self._names.get(k, 0) + d
            if c > 0:
                self._names[k] = c
            else:
                self._names.pop(k, None)

    def remove(self, name, rtype=None):
        n = _norm(name)
        with self.lock:
            if rtype is None:
                if self._records.pop(n, None) is not None:
                    self._index(n, -1)
            else:
                t = _rtype(rtype)
                recs = [r for r in self._records.get(n, []) if r[0] != t]
                if recs:
                    self._records[n] = recs
                elif self._records.pop(n, None) is not None:
                    self._index(n, -1)

    def set_rcode(self, name, rtype=None, rcode="SERVFAIL"):
        """Answer `name` (all types, or only `rtype`) with `rcode`, no records.
        rcode=None removes the override."""
        key = (_norm(name), None if rtype is None else str(rtype).upper())
        with self.lock:
            if rcode is None:
                self._rcodes.pop(key, None)
            else:
                self._rcodes[key] = _rcode(rcode)

    def set_delay(self, name, seconds):
        s = float(seconds)
        if not 0 <= s <= MAX_DELAY:
            raise ValueError("delay must be within 0..%g s" % MAX_DELAY)
        with self.lock:
            if s:
                self._delays[_norm(name)] = s
            else:
                self._delays.pop(_norm(name), None)

    def set_default_delay(self, seconds):
        """Delay every answer (of a name without set_delay) by `seconds`."""
        s = float(seconds)
        if not 0 <= s <= MAX_DELAY:
            raise ValueError("delay must be within 0..%g s" % MAX_DELAY)
        with self.lock:
            self.default_delay = s

    def set_drop(self, name, on=True):
        with self.lock:
            (self._drops.add if on else self._drops.discard)(_norm(name))

    def set_truncate(self, name, on=True):
        with self.lock:
            (self._truncs.add if on else self._truncs.discard)(_norm(name))

    def set_garbage(self, name, data):
        """Send `data` verbatim as the answer (TCP: with the 2-byte length
        prefix).  data=None removes the override."""
        with self.lock:
            if data is None:
                self._garbage.pop(_norm(name), None)
            else:
                data = bytes(data)
                if len(data) > 65535:
                    raise ValueError("garbage longer than 65535 bytes")
                self._garbage[_norm(name)] = data

    def reset(self):
        """Clear records, behaviours and the query log (zones stay)."""
        with self.lock:
            self._clear()
            self.log.clear()

    def queries(self, name=None):
        """Copy of the query log, optionally only for one name."""
        with self.lock:
            q = list(self.log)
        if name is not None:
            n = _norm(name)
            q = [e for e in q if e[0] == n]
        return q

    def clear_log(self):
        with self.lock:
            self.log.clear()

    @property
    def address(self):
        """"127.0.0.1@PORT", as in moat's `resolver forward ADDR@PORT`."""
        return "%s@%d" % (self.host, self.port)

    # ------------------------------------------------------------- answering

    def _zone_of(self, n):
        if self.zones is None:
            return ""
        best = None
        for z in self.zones:
            if z == "" or n == z or n.endswith("." + z):
                if best is None or len(z) > len(best):
                    best = z
        return best

    def _exists(self, n):
        # a record's name, an empty non-terminal above one, or an apex
        return n in self._names or bool(self.zones and n in self.zones)

    def _soa(self, zone):
        if not zone:
            return None
        return RR(zone + ".", QTYPE.SOA, ttl=60,
                  rdata=SOA("ns." + zone + ".", "hostmaster." + zone + ".",
                            (1, 3600, 600, 86400, 60)))

    def _respond(self, data, proto):
        """Return (delay, bytes) to send, or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:  # malformed query: stay silent
            return None
        if req.header.qr or not req.questions:
            return None
        q = req.questions[0]
        # the raw label bytes: str(qname) would escape a space as \\032
        n = _norm(".".join(l.decode("latin-1") for l in q.qname.label))
        qt = QTYPE.get(q.qtype, "TYPE%d" % q.qtype)
        with self.lock:
            self.log.append((n, qt, proto))
            if n in self._drops:
                return None
            delay = self._delays.get(n, self.default_delay)
            if n in self._garbage:
                return delay, self._garbage[n]
            reply = req.reply(ra=0, aa=1)
            zone = self._zone_of(n)
            rc = self._rcodes.get((n, qt), self._rcodes.get((n, None)))
            if zone is None:
                reply.header.aa = 0
                reply.header.rcode = RCODE.REFUSED
            elif rc is not None:
                reply.header.rcode = rc
            else:
                self._fill(reply, n, qt, zone)
            trunc = proto == "udp" and n in self._truncs
        if trunc:
            return delay, self._truncated(req)
        out = reply.pack()
        if proto == "udp" and len(out) > self.udp_max:
            out = self._truncated(req)
        return delay, out

    def _fill(self, reply, n, qt, zone):
        name, seen = n, set()
        while len(seen) < 8:
            seen.add(name)
            recs = self._records.get(name, [])
            answered = False
            if self.zones and name in self.zones and qt in ("SOA", "ANY"):
                reply.add_answer(self._soa(name))
                answered = True
            hit = [r for r in recs if qt in ("ANY", r[0])]
            for t, rd, ttl in hit:
                reply.add_answer(RR(name + ".", getattr(QTYPE, t), ttl=ttl, rdata=rd))
            if hit or answered:
                return
            cn = [r for r in recs if r[0] == "CNAME"]
            if qt == "CNAME" or not cn:
                break
            t, rd, ttl = cn[0]
            reply.add_answer(RR(name + ".", QTYPE.CNAME, ttl=ttl, rdata=rd))
            target = _norm(rd.label)
            if target in seen or self._zone_of(target) is None:
                return          # loop or outside our data: the chain is the answer
            name = target
        # `name` (the query or the end of a CNAME chain) has no `qt` record
        if not self._exists(name):
            reply.header.rcode = RCODE.NXDOMAIN
        soa = self._soa(self._zone_of(name))
        if soa is not None:
            reply.add_auth(soa)

    @staticmethod
    def _truncated(req):
        r = req.reply(ra=0, aa=1)
        r.header.tc = 1
        return r.pack()

    # ------------------------------------------------------------- lifecycle

    def _bind(self):
        last = None
        for _ in range(50):
            t = socket.socket(self._family, socket.SOCK_STREAM)
            u = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.bind((self.host, self._want_port))
                port = t.getsockname()[1]
                u.bind((self.host, port))
                # a burst of queries (a hundred sessions asking at once)
                # must not overflow the default buffer (~200 datagrams):
                # a datagram dropped there is a query the resolver only
                # gives up on at its timeout
                u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                t.listen(16)
                t.setblocking(False)
                u.setblocking(False)
                return t, u, port
            except OSError as e:
                last = e
                t.close()
                u.close()
                if self._want_port:
                    break
        raise OSError("DnsServer: cannot bind %s port %s: %s" % (self.host, self._want_port, last))

    def start(self):
        if self._thread is not None:
            raise RuntimeError("already started")
        self._tcp, self._udp, self.port = self._bind()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="DnsServer-%d" % self.port,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=2.0):
        """Stop serving, close the sockets, join the thread (<= timeout)."""
        th = self._thread
        if th is None:
            return
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        th.join(timeout)
        if th.is_alive():
            raise RuntimeError("DnsServer thread did not stop within %g s" % timeout)
        self._thread = None
        for s in (self._wake_r, self._wake_w):
            s.close()
        self._wake_r = self._wake_w = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ event loop

    def _run(self):
        sel = selectors.DefaultSelector()
        conns = {}
        pending = []              # heap of (due, seq, proto, target, bytes)
        seq = itertools.count()

        def close(c):
            if c.closed:
                return
            c.closed = True
            conns.pop(c.sock, None)
            try:
                sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()

        def tcp_send(c, payload):
            if c.closed:
                return
            c.out += struct.pack("!H", len(payload)) + payload
            flush(c)

        def flush(c):
            try:
                while c.out:
                    k = c.sock.send(c.out)
                    del c.out[:k]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                close(c)
                return
            if len(c.out) > MAX_TCP_OUT:
                close(c)
                return
            ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
            sel.modify(c.sock, ev, ("conn", c))

        def deliver(proto, target, payload):
            if proto == "udp":
                try:
                    self._udp.sendto(payload, target)
                except OSError:
                    pass
            else:
                tcp_send(target, payload)

        def handle(data, proto, target):
            res = self._respond(data, proto)
            if res is None:
                return
            delay, payload = res
            if delay > 0:
                if len(pending) < MAX_PENDING:
                    heapq.heappush(pending, (time.monotonic() + delay, next(seq),
                                             proto, target, payload))
            else:
                deliver(proto, target, payload)

        sel.register(self._udp, selectors.EVENT_READ, ("udp", None))
        sel.register(self._tcp, selectors.EVENT_READ, ("listen", None))
        sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                wait = 0.5
                if pending:
                    wait = max(0.0, min(wait, pending[0][0] - now))
                for key, ev in sel.select(wait):
                    kind, c = key.data
                    if kind == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                    elif kind == "udp":
                        for _ in range(64):
                            try:
                                data, addr = self._udp.recvfrom(65535)
                            except (BlockingIOError, InterruptedError):
                                break
                            except OSError:
                                break
                            handle(data, "udp", addr)
                    elif kind == "listen":
                        try:
                            s, _addr = self._tcp.accept()
                        except OSError:
                            continue
                        if len(conns) >= MAX_TCP_CONNS:
                            s.close()
                            continue
                        s.setblocking(False)
                        nc = _Conn(s)
                        conns[s] = nc
                        sel.register(s, selectors.EVENT_READ, ("conn", nc))
                    elif kind == "conn" and not c.closed:
                        c.last = time.monotonic()
                        if ev & selectors.EVENT_WRITE:
                            flush(c)
                            if c.closed:
                                continue
                        if ev & selectors.EVENT_READ:
                            try:
                                chunk = c.sock.recv(65537)
                            except (BlockingIOError, InterruptedError):
                                continue
                            except OSError:
                                chunk = b""
                            if not chunk:
                                close(c)
                                continue
                            c.inbuf += chunk
                            while len(c.inbuf) >= 2 and not c.closed:
                                ln = struct.unpack("!H", c.inbuf[:2])[0]
                                if len(c.inbuf) < 2 + ln:
                                    break
                                msg = bytes(c.inbuf[2:2 + ln])
                                del c.inbuf[:2 + ln]
                                handle(msg, "tcp", c)
                now = time.monotonic()
                while pending and pending[0][0] <= now:
                    _due, _s, proto, target, payload = heapq.heappop(pending)
                    deliver(proto, target, payload)
                for c in [c for c in conns.values() if now - c.last > TCP_IDLE]:
                    close(c)
        finally:
            for c in list(conns.values()):
                close(c)
            sel.close()
            self._udp.close()
            self._tcp.close()
