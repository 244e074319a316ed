"""A small client for the Sendmail milter protocol (the MTA side), for raw
protocol tests of moat-milter (test_milter_raw.py).

Wire format: every packet is a 4-byte big-endian length, then a command
byte, then length-1 bytes of data. The length counts the command byte.

    c = MilterClient(port)                 # loopback only
    c.optneg()                             # 'O' -> the milter's 'O'
    c.connect("client.test", "127.0.0.7")  # 'C' -> 'c'
    ...
    c.close()

Everything is bounded in time: each read has a deadline, reads of one
reply are bounded in size (MAX_REPLY) and in count.
"""

import socket
import struct
import time

# commands (MTA -> milter)
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# replies (milter -> MTA)
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# the final answers to a command (the rest are modifications or progress)
FINAL = {SMFIR_ACCEPT, SMFIR_CONTINUE, SMFIR_DISCARD, SMFIR_REJECT, SMFIR_SKIP,
         SMFIR_TEMPFAIL, SMFIR_REPLYCODE, SMFIR_CONN_FAIL}

# actions
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF             # what Postfix offers

# protocol flags
SMFIP_NOCONNECT = 0x1
SMFIP_NOHELO = 0x2
SMFIP_NOMAIL = 0x4
SMFIP_NORCPT = 0x8
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000
SMFIP_MDS_256K = 0x10000000
SMFIP_MDS_1M = 0x20000000
POSTFIX_PROTOCOL = 0x1FFFFF     # every step and every no-reply bit, as Postfix 3.x

MAX_REPLY = 1 << 20             # a reply longer than this is a protocol error here


class MilterClosed(Exception):
    """The milter closed the connection (EOF or reset)."""


class MilterTimeout(Exception):
    """No (complete) reply within the deadline."""


def packet(cmd, data=b""):
    """One milter packet: length (command byte included), command, data."""
    return struct.pack(">I", len(data) + 1) + enc(cmd) + data


def raw_header(length, cmd=b""):
    """A length field with any value, followed by cmd (may be empty)."""
    return struct.pack(">I", length & 0xFFFFFFFF) + cmd


def enc(s):
    """str to bytes one to one (latin-1): "\xff" is the byte 0xff"""
    return s.encode("latin-1") if isinstance(s, str) else s


def cstr(s):
    return enc(s) + b"\0"


def optneg_data(version=6, actions=ALL_ACTIONS, protocol=POSTFIX_PROTOCOL):
    return struct.pack(">III", version & 0xFFFFFFFF, actions & 0xFFFFFFFF,
                       protocol & 0xFFFFFFFF)


def connect_data(host, addr, family=b"4", port=25):
    family = enc(family)
    if family == b"U":
        return cstr(host) + b"U"
    return cstr(host) + family + struct.pack(">H", port) + cstr(addr)


def macro_data(cmdchar, pairs):
    """'D' data: the command the macros belong to, then name\\0value\\0 ...
    pairs may be a dict, a list of (name, value) or a flat list of strings."""
    cmdchar = enc(cmdchar)
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    out = [cmdchar]
    for p in pairs:
        if isinstance(p, (tuple, list)):
            out += [cstr(x) for x in p]
        else:
            out.append(cstr(p))
    return b"".join(out)


def header_data(name, value):
    return cstr(name) + cstr(value)


def args_data(*args):
    return b"".join(cstr(a) for a in args)


class Reply:
    def __init__(self, cmd, data):
        self.cmd = cmd
        self.data = data

    @property
    def final(self):
        return self.cmd in FINAL

    def text(self):
        return self.data.rstrip(b"\0").decode(errors="replace")

    def header(self):
        """(index or None, name, value) of an 'h', 'i' or 'm' reply."""
        d = self.data
        idx = None
        if self.cmd in (SMFIR_INSHEADER, SMFIR_CHGHEADER):
            idx, = struct.unpack(">I", d[:4])
            d = d[4:]
        parts = d.split(b"\0")
        return idx, parts[0].decode(errors="replace"), parts[1].decode(errors="replace")

    def __repr__(self):
        return "Reply(%r, %r)" % (self.cmd, self.data[:200])


class MilterClient:
    """One connection to a milter at 127.0.0.1:port (or a unix path)."""

    def __init__(self, port=None, host="127.0.0.1", path=None, timeout=10.0):
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        else:
            if not (host.startswith("127.") or host == "::1"):
                raise ValueError("loopback only: %r" % host)
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.proto = 0          # negotiated protocol flags (from the milter's 'O')
        self.actions = 0
        self.version = 0

    # -- raw I/O

    def send(self, data):
        self.sock.sendall(data)

    def send_packet(self, cmd, data=b""):
        self.sock.sendall(packet(cmd, data))

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MilterTimeout("wanted %d bytes, have %d" % (n, len(self.buf)))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise MilterTimeout("wanted %d bytes, have %d" % (n, len(self.buf)))
            except ConnectionResetError:
                raise MilterClosed("reset")
            if not chunk:
                raise MilterClosed("eof with %d bytes pending" % len(self.buf))
            self.buf += chunk

    def read_packet(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(5, deadline)
        n, = struct.unpack(">I", self.buf[:4])
        if n < 1 or n > MAX_REPLY:
            raise AssertionError("milter sent a bad length %d" % n)
        self._fill(4 + n, deadline)
        cmd, data = self.buf[4:5], self.buf[5:4 + n]
        self.buf = self.buf[4 + n:]
        return Reply(cmd, data)

    def reply(self, timeout=None, max_packets=200):
        """Every packet up to and including a final answer: (final, [mods])."""
        mods = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for _ in range(max_packets):
            r = self.read_packet(max(0.0, deadline - time.monotonic()))
            if r.final:
                return r, mods
            mods.append(r)
        raise AssertionError("no final reply in %d packets: %r" % (max_packets, mods[:10]))

    def outcome(self, timeout=1.0):
        """What the milter does next, for hostile input: ("closed", None),
        ("silent", None) (nothing within timeout, connection still open),
        or ("reply", Reply)."""
        try:
            return "reply", self.read_packet(timeout)
        except MilterClosed:
            return "closed", None
        except MilterTimeout:
            if self.buf:
                raise AssertionError("partial reply from the milter: %r" % self.buf[:100])
            return "silent", None

    def wait_closed(self, timeout=5.0):
        """True if the milter closes the connection within timeout; replies
        (bounded) read on the way are discarded."""
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
        return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # -- the protocol steps

    def optneg(self, version=6, actions=ALL_ACTIONS, protocol=POSTFIX_PROTOCOL, timeout=None):
        self.send_packet(SMFIC_OPTNEG, optneg_data(version, actions, protocol))
        r = self.read_packet(timeout)
        if r.cmd != SMFIC_OPTNEG or len(r.data) < 12:
            raise AssertionError("optneg: unexpected reply %r" % r)
        self.version, self.actions, self.proto = struct.unpack(">III", r.data[:12])
        return r

    def macros(self, cmdchar, pairs):
        self.send_packet(SMFIC_MACRO, macro_data(cmdchar, pairs))    # never answered

    def _step(self, cmd, data, nr_flag, timeout):
        self.send_packet(cmd, data)
        if nr_flag and self.proto & nr_flag:
            return None, []
        return self.reply(timeout)

    def connect(self, host, addr, family=b"4", port=25, timeout=None):
        return self._step(SMFIC_CONNECT, connect_data(host, addr, family, port),
                          SMFIP_NR_CONN, timeout)

    def helo(self, name, timeout=None):
        return self._step(SMFIC_HELO, cstr(name), SMFIP_NR_HELO, timeout)

    def mail(self, *args, timeout=None):
        return self._step(SMFIC_MAIL, args_data(*args), SMFIP_NR_MAIL, timeout)

    def rcpt(self, *args, timeout=None):
        return self._step(SMFIC_RCPT, args_data(*args), SMFIP_NR_RCPT, timeout)

    def header(self, name, value, timeout=None):
        if self.proto & SMFIP_HDR_LEADSPC and not value.startswith((" ", "\t")):
            value = " " + value
        return self._step(SMFIC_HEADER, header_data(name, value), SMFIP_NR_HDR, timeout)

    def eoh(self, timeout=None):
        return self._step(SMFIC_EOH, b"", SMFIP_NR_EOH, timeout)

    def body(self, chunk, timeout=None):
        return self._step(SMFIC_BODY, chunk, SMFIP_NR_BODY, timeout)

    def eom(self, timeout=None):
        return self._step(SMFIC_BODYEOB, b"", 0, timeout)

    def abort(self):
        self.send_packet(SMFIC_ABORT)              # never answered

    def quit(self):
        self.send_packet(SMFIC_QUIT)               # never answered
