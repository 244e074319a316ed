"""Integration test harness for moatd: processes, fake upstreams, raw client.

Everything here runs on loopback only (127.0.0.0/8 and ::1). Every process is
started with subprocess.Popen and stopped by its PID; every wait is bounded in
count and in time.

Pieces:
  free_port()        a free TCP port on a loopback address (bind to port 0)
  wait_for()         bounded polling
  Sink               smtp-sink(1) as an upstream, with its -d dump parser
  FakeUpstream       a recording, fault-injecting SMTP upstream (Python threads)
                     that keeps the exact bytes moatd wrote
  Postfix            a private Postfix instance (own config/queue/data dirs)
                     delivering example.org into a maildir
  Moatd              moatd from a generated config, stderr captured to a file,
                     sanitizer reports turned into test failures
  Client             a byte-exact SMTP client (split writes, multi-line replies)
"""

import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
IS_ROOT = os.geteuid() == 0
UNPRIV_USER = "nobody"

# Sanitizer reports that fail a test when found in moatd's stderr.
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
)


def moatctl_path():
    """The moatctl under test: $MOATCTL, or the sanitizer build's."""
    return os.environ.get("MOATCTL") or str(REPO / "build-asan" / "moatctl")


def moatd_path():
    p = os.environ.get("MOATD") or str(REPO / "build-asan" / "moatd")
    return p


class HarnessError(Exception):
    pass


# --------------------------------------------------------------------------
# small helpers


def _check_loopback(host):
    if host in ("::1", "localhost"):
        return
    if not host.startswith("127."):
        raise HarnessError("refusing non-loopback address %r" % host)


def free_port(host=LOOPBACK):
    """A TCP port that was free a moment ago on host (bind to port 0)."""
    _check_loopback(host)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for(pred, timeout, interval=0.05):
    """Poll pred() until it returns something true or timeout seconds pass.
    Returns the last value of pred(). Bounded in time and in count."""
    deadline = time.monotonic() + timeout
    n = int(timeout / interval) + 2
    val = pred()
    for _ in range(n):
        if val or time.monotonic() >= deadline:
            break
        time.sleep(interval)
        val = pred()
    return val


def port_accepts(host, port, timeout=0.3):
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False
    s.close()
    return True


def wait_port(host, port, timeout, proc=None):
    def ok():
        if proc is not None and proc.poll() is not None:
            raise HarnessError("process %d exited (%s) before listening on %s:%d"
                               % (proc.pid, proc.returncode, host, port))
        return port_accepts(host, port)
    if not wait_for(ok, timeout, 0.05):
        raise HarnessError("nothing listening on %s:%d after %ss" % (host, port, timeout))


def make_dir(path, mode=0o755, owner=None):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner and IS_ROOT:
        shutil.chown(path, owner, None)
    return path


def stop_process(proc, sig=signal.SIGTERM, timeout=5.0):
    """Stop proc (a Popen) by its PID: sig, wait, then SIGKILL. Returns rc."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)
    return proc.returncode


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return True


# --------------------------------------------------------------------------
# SMTP replies and the raw client


class Reply:
    """One SMTP reply: code (int), enh ("2.1.0" or ""), lines (text per line,
    without code and separator), raw (bytes as received)."""

    ENH_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)")

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines
        self.raw = raw
        m = self.ENH_RE.match(lines[0]) if lines else None
        self.enh = m.group(1) if m else ""

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def cls(self):
        return self.code // 100

    def keywords(self):
        """EHLO keywords (upper case) from lines 1..n."""
        return [l.split()[0].upper() for l in self.lines[1:] if l.strip()]

    def __repr__(self):
        return "Reply(%r)" % self.raw.decode("latin-1")

    def __str__(self):
        return self.raw.decode("latin-1").strip()


class ConnectionClosed(Exception):
    pass


class Client:
    """A byte-exact SMTP client on a raw socket.

    send() writes bytes exactly as given; cuts= splits them into separate
    writes (TCP_NODELAY and a short pause between writes so that they arrive
    as separate segments). reply() reads one (multi-line) reply."""

    def __init__(self, port, host=LOOPBACK, source=None, timeout=5.0, greet=True):
        _check_loopback(host)
        if source:
            _check_loopback(source)
        self.timeout = timeout
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.eof = False
        self.greeting = self.reply() if greet else None

    # -- output
    def send(self, data, cuts=None, pause=0.01):
        if isinstance(data, str):
            data = data.encode()
        if not cuts:
            self.sock.sendall(data)
            return
        prev = 0
        for c in sorted(set(cuts)) + [len(data)]:
            if c <= prev or c > len(data):
                continue
            self.sock.sendall(data[prev:c])
            prev = c
            if c < len(data):
                time.sleep(pause)

    def send_bytewise(self, data, pause=0.002):
        self.send(data, cuts=range(1, len(data)), pause=pause)

    # -- input
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no complete reply within %.1fs; have %r"
                                 % (self.timeout, self.buf[:300]))
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed; pending %r" % self.buf[:300])
        self.buf += chunk

    def _line(self, deadline):
        for _ in range(100000):
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
                return line
            if len(self.buf) > 1 << 20:
                raise HarnessError("reply line over 1 MiB")
            self._fill(deadline)
        raise HarnessError("too many reads for one line")

    def reply(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        raw = b""
        lines = []
        code = None
        for _ in range(1000):
            line = self._line(deadline)
            raw += line
            s = line.rstrip(b"\r\n").decode("latin-1")
            m = re.match(r"^(\d{3})([ -]?)(.*)$", s)
            if not m:
                raise HarnessError("malformed reply line %r (so far %r)" % (line, raw))
            c = int(m.group(1))
            if code is not None and c != code:
                raise HarnessError("reply code changed within a reply: %r" % raw)
            code = c
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines, raw)
        raise HarnessError("reply with over 1000 lines")

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, "EHLO: %s" % r
        return r

    def pending(self, wait=0.3):
        """Bytes that arrive within wait seconds with nothing sent (and the
        ones already buffered). b"" means nothing."""
        out = self.buf
        self.buf = b""
        deadline = time.monotonic() + wait
        for _ in range(1000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                break
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
                break
            out += chunk
        return out

    def wait_closed(self, timeout=5.0):
        """True if the server closes the connection within timeout (any
        unread bytes are discarded and returned in self.tail)."""
        self.tail = self.buf
        self.buf = b""
        if self.eof:
            return True
        deadline = time.monotonic() + timeout
        for _ in range(100000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                return False
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
                return True
            self.tail += chunk
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


def message(subject="test", body="hello world\r\n", extra_headers=(), mfrom="a@b.test",
            to="user@example.org"):
    """A small RFC 5322 message with CRLF line ends (bytes, not stuffed)."""
    h = list(extra_headers)
    h += ["From: <%s>" % mfrom, "To: <%s>" % to, "Subject: %s" % subject,
          "Message-ID: <%s@test.invalid>" % re.sub(r"[^A-Za-z0-9.-]", "-", subject)]
    b = body.encode() if isinstance(body, str) else body
    return ("\r\n".join(h) + "\r\n\r\n").encode() + b


def dot_stuff(data):
    """RFC 5321 4.5.2 transparency for data with CRLF line ends."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


def smtp_transaction(c, data, mfrom="a@b.test", rcpts=("user@example.org",), stuff=True):
    """MAIL, RCPT..., DATA, data, dot on client c; returns the list of replies
    (MAIL, RCPTs, DATA, final). Stops early on a failed MAIL or DATA."""
    out = [c.cmd("MAIL FROM:<%s>" % mfrom)]
    if out[0].code != 250:
        return out
    for r in rcpts:
        out.append(c.cmd("RCPT TO:<%s>" % r))
    d = c.cmd("DATA")
    out.append(d)
    if d.code != 354:
        return out
    body = dot_stuff(data) if stuff else data
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    c.send(body + b".\r\n")
    out.append(c.reply())
    return out


# --------------------------------------------------------------------------
# smtp-sink


class SinkDump:
    def __init__(self, path, text):
        self.path = path
        self.raw = text
        self.client_addr = None
        self.proto = None
        self.helo = None
        self.mail = None
        self.rcpts = []
        lines = text.split(b"\n")
        i = 0
        while i < len(lines):
            l = lines[i]
            if l.startswith(b"X-Client-Addr: "):
                self.client_addr = l[15:].decode("latin-1")
            elif l.startswith(b"X-Client-Proto: "):
                self.proto = l[16:].decode("latin-1")
            elif l.startswith(b"X-Helo-Args: "):
                self.helo = l[13:].decode("latin-1")
            elif l.startswith(b"X-Mail-Args: "):
                self.mail = l[13:].decode("latin-1")
            elif l.startswith(b"X-Rcpt-Args: "):
                self.rcpts.append(l[13:].decode("latin-1"))
            elif l.startswith(b"Received: "):
                i += 1
                while i < len(lines) and lines[i].startswith(b"\t"):
                    i += 1
                break
            else:
                break
            i += 1
        # content: what follows the sink's Received header; the sink appends
        # one empty line, and writes "\n" line ends (unstuffed).
        rest = lines[i:]
        if rest and rest[-1] == b"":
            rest = rest[:-1]
        if rest and rest[-1] == b"":
            rest = rest[:-1]
        self.content_lines = rest
        self.content = b"\n".join(rest)

    def __repr__(self):
        return "SinkDump(mail=%r rcpts=%r addr=%r)" % (self.mail, self.rcpts, self.client_addr)


class Sink:
    """smtp-sink listening on host:port, dumping each transaction to a file.

    extra: more smtp-sink options, e.g. ["-f", "RCPT"], ["-Q", "."]."""

    def __init__(self, workdir, extra=(), host=LOOPBACK, port=None, name="sink"):
        _check_loopback(host)
        self.dir = make_dir(Path(workdir) / name)
        self.dumpdir = make_dir(self.dir / "dump", 0o777)
        self.host = host
        self.port = port or free_port(host)
        self.extra = list(extra)
        self.proc = None
        self.logf = None

    def start(self):
        args = ["smtp-sink"]
        if IS_ROOT:
            args += ["-u", UNPRIV_USER]
        args += ["-d", str(self.dumpdir) + "/%M.%S."] + self.extra
        args += ["%s:%d" % (self.host, self.port), "64"]
        self.logf = open(self.dir / "sink.log", "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.host, self.port, 5, self.proc)
        except Exception:
            self.stop()
            raise
        return self

    def kill(self):
        """SIGKILL the sink (fault injection)."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self):
        stop_process(self.proc)
        if self.logf:
            self.logf.close()
            self.logf = None

    def dumps(self):
        out = []
        for p in sorted(self.dumpdir.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
            if p.is_file():
                out.append(SinkDump(p, p.read_bytes()))
        return out

    def wait_dumps(self, n, timeout=5):
        wait_for(lambda: len(self.dumps()) >= n, timeout)
        return self.dumps()

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)


# --------------------------------------------------------------------------
# A recording, fault-injecting upstream


class Transaction:
    def __init__(self, conn_id, mail):
        self.conn_id = conn_id
        self.mail = mail          # bytes, the argument after "MAIL FROM:"
        self.rcpts = []           # accepted RCPT arguments (bytes)
        self.data_raw = None      # bytes between the 354 and the terminator
        self.complete = False     # terminator received
        self.accepted = False     # we answered 2xx to the terminator
        self.xclient = None       # the last XCLIENT line on this connection

    @property
    def content(self):
        """data_raw unstuffed (valid when all line ends are CRLF)."""
        d = self.data_raw or b""
        if d.startswith(b".."):
            d = d[1:]
        return d.replace(b"\r\n..", b"\r\n.")

    def __repr__(self):
        return "Transaction(mail=%r rcpts=%r complete=%r accepted=%r len=%r)" % (
            self.mail, self.rcpts, self.complete, self.accepted,
            None if self.data_raw is None else len(self.data_raw))


class UpConn:
    def __init__(self, cid, sock, peer):
        self.id = cid
        self.sock = sock
        self.peer = peer
        self.raw = bytearray()    # every byte moatd sent on this connection
        self.lines = []           # command lines (bytes, line end included)
        self.closed_by_peer = False


DEFAULT_CAPS = ["PIPELINING", "SIZE 10240000", "8BITMIME",
                "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN",
                "ENHANCEDSTATUSCODES", "SMTPUTF8"]


class FakeUpstream:
    """An SMTP server that records exactly what it receives.

    replies: {VERB: action}, VERB one of CONNECT, EHLO, HELO, XCLIENT, MAIL,
    RCPT, DATA, ".", RSET, NOOP, QUIT; action is a reply (str, without CRLF;
    may be multi-line with "\\n"), "CLOSE" (close without reply), "RESET"
    (close with a TCP reset, no reply), "HANG" (send nothing, keep the
    connection) or a callable(arg_bytes) returning one of these (or None for
    the default).
    close_after_data_bytes: close the connection once that many DATA bytes
    have arrived (mid-DATA failure)."""

    def __init__(self, host=LOOPBACK, port=None, caps=None, replies=None,
                 close_after_data_bytes=None, name="fake"):
        _check_loopback(host)
        self.host = host
        self.port = port or free_port(host)
        self.caps = DEFAULT_CAPS if caps is None else caps
        self.replies = dict(replies or {})
        self.close_after_data_bytes = close_after_data_bytes
        self.name = name
        self.lock = threading.Lock()
        self.conns = []
        self.transactions = []
        self.stop_ev = threading.Event()
        self.threads = []
        self.lsock = None
        self.errors = []
        self.nmsg = 0

    # -- lifecycle
    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.lsock = socket.socket(fam, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((self.host, self.port))
        self.lsock.listen(64)
        self.lsock.settimeout(0.1)
        t = threading.Thread(target=self._accept_loop, name="fake-accept", daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stop_ev.set()
        for t in list(self.threads):
            t.join(timeout=3)
        if self.lsock:
            self.lsock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.sock.close()
                except OSError:
                    pass

    def reset(self):
        with self.lock:
            self.transactions = []
            self.conns = [c for c in self.conns if not c.closed_by_peer]
            for c in self.conns:
                c.raw = bytearray()
                c.lines = []

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    # -- views
    def completed(self):
        with self.lock:
            return [t for t in self.transactions if t.complete]

    def accepted(self):
        with self.lock:
            return [t for t in self.transactions if t.accepted]

    def all_raw(self):
        with self.lock:
            return b"".join(bytes(c.raw) for c in self.conns)

    def all_lines(self):
        with self.lock:
            return [l for c in self.conns for l in c.lines]

    def wait_completed(self, n, timeout=5):
        wait_for(lambda: len(self.completed()) >= n, timeout)
        return self.completed()

    # -- server
    def _accept_loop(self):
        cid = 0
        for _ in range(10 ** 9):
            if self.stop_ev.is_set():
                return
            try:
                s, peer = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            cid += 1
            c = UpConn(cid, s, peer)
            with self.lock:
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), name="fake-conn", daemon=True)
            t.start()
            self.threads.append(t)

    def _action(self, verb, arg, default):
        a = self.replies.get(verb)
        if callable(a):
            a = a(arg)
        return default if a is None else a

    def _send(self, c, action):
        """Perform an action; returns False when the connection is done."""
        if action == "CLOSE":
            return False
        if action == "RESET":
            # SO_LINGER 0: the close that follows sends RST, not FIN
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if action == "HANG":
            self.stop_ev.wait(60)
            return False
        lines = action.split("\n")
        out = b"".join(l.encode("latin-1") + b"\r\n" for l in lines)
        c.sock.sendall(out)
        return True

    def _serve(self, c):
        try:
            self._serve2(c)
        except (OSError, ConnectionError):
            pass
        except Exception as e:  # a harness bug: remember it
            self.errors.append(repr(e))
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    def _recv(self, c):
        for _ in range(10 ** 7):
            if self.stop_ev.is_set():
                return None
            r, _, _ = select.select([c.sock], [], [], 0.1)
            if not r:
                continue
            d = c.sock.recv(65536)
            if not d:
                c.closed_by_peer = True
                return None
            with self.lock:
                c.raw += d
            return d
        return None

    def _serve2(self, c):
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self._send(c, self._action("CONNECT", b"", "220 fake.test ESMTP fake")):
            return
        buf = b""
        tx = None
        xclient = None
        in_data = False
        dbuf = bytearray()
        for _ in range(10 ** 7):
            if in_data:
                # look for CRLF . CRLF, the data seen as starting after a CRLF
                probe = b"\r\n" + bytes(dbuf)
                i = probe.find(b"\r\n.\r\n")
                limit = self.close_after_data_bytes
                if limit is not None and ((i < 0 and len(dbuf) >= limit) or i >= limit):
                    return
                if i < 0:
                    d = self._recv(c)
                    if d is None:
                        return
                    dbuf += d
                    continue
                tx.data_raw = probe[2:i + 2]
                tx.complete = True
                buf = probe[i + 5:]
                in_data = False
                dbuf = bytearray()
                self.nmsg += 1
                act = self._action(".", tx.data_raw,
                                   "250 2.0.0 Ok: queued as FAKE%d" % self.nmsg)
                if isinstance(act, str) and act[:1] == "2":
                    tx.accepted = True
                if not self._send(c, act):
                    return
                tx = None
                continue
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > 1 << 16:
                    self.errors.append("command line over 64 KiB from moatd")
                    return
                d = self._recv(c)
                if d is None:
                    return
                buf += d
                continue
            line, buf = buf[:i + 1], buf[i + 1:]
            with self.lock:
                c.lines.append(line)
            s = line.rstrip(b"\r\n")
            verb = s.split(b" ", 1)[0].upper().decode("latin-1")
            arg = s[len(verb) + 1:] if b" " in s else b""
            if verb == "EHLO":
                caps = ["fake.test"] + list(self.caps)
                default = "\n".join(("250-" if k < len(caps) - 1 else "250 ") + cap
                                    for k, cap in enumerate(caps))
                act = self._action("EHLO", arg, default)
            elif verb == "HELO":
                act = self._action("HELO", arg, "250 fake.test")
            elif verb == "XCLIENT":
                xclient = s
                act = self._action("XCLIENT", arg, "220 fake.test ESMTP fake")
            elif verb == "MAIL":
                act = self._action("MAIL", arg, "250 2.1.0 Ok")
                if isinstance(act, str) and act[:1] == "2":
                    tx = Transaction(c.id, arg[5:] if arg.upper().startswith(b"FROM:") else arg)
                    tx.xclient = xclient
                    with self.lock:
                        self.transactions.append(tx)
            elif verb == "RCPT":
                act = self._action("RCPT", arg, "250 2.1.5 Ok")
                if tx is not None and isinstance(act, str) and act[:1] == "2":
                    tx.rcpts.append(arg[3:] if arg.upper().startswith(b"TO:") else arg)
            elif verb == "DATA":
                if tx is None or not tx.rcpts:
                    act = "503 5.5.1 Error: need RCPT command"
                else:
                    act = self._action("DATA", arg, "354 End data with <CR><LF>.<CR><LF>")
                    if isinstance(act, str) and act.startswith("354"):
                        in_data = True
                        dbuf = bytearray(buf)
                        buf = b""
            elif verb == "RSET":
                tx = None
                act = self._action("RSET", arg, "250 2.0.0 Ok")
            elif verb == "NOOP":
                act = self._action("NOOP", arg, "250 2.0.0 Ok")
            elif verb == "QUIT":
                act = self._action("QUIT", arg, "221 2.0.0 Bye")
                self._send(c, act)
                return
            else:
                # other verbs (AUTH, STARTTLS, ...) only when the test says
                act = self._action(verb, arg, "502 5.5.2 Error: command not recognized")
            if not self._send(c, act):
                return


# --------------------------------------------------------------------------
# Private Postfix instance

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def milter_path():
    return os.environ.get("MOAT_MILTER") or str(REPO / "build-asan" / "moat-milter")


class LoggedProcess:
    """A process of ours with a log file (self.proc, self.log_path)."""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class MoatMilter(LoggedProcess):
    """moat-milter -f CONFIG -l inet:PORT@127.0.0.1 [args], stdout and stderr
    into DIR/milter.log, from DEFAULT_CONF plus opts; stopped by its PID.
    asan_extra is added to ASAN_OPTIONS (e.g. a smaller quarantine)."""

    def __init__(self, workdir, port, name="milter", args=(), asan_extra="", **opts):
        self.dir = make_dir(Path(workdir) / name)
        self.port = port
        conf = dict(DEFAULT_CONF)
        conf["listen"] = "127.0.0.1:%d" % free_port()   # unused by the milter
        conf["upstream"] = "127.0.0.1:9"
        conf["spool-dir"] = str(self.dir)
        for k, v in opts.items():
            conf[k.replace("_", "-")] = v
        self.conf_path = self.dir / "moat.conf"
        self.conf_path.write_text(render_conf(list(conf.items())))
        self.log_path = self.dir / "milter.log"
        self.args = list(args)
        self.asan_extra = asan_extra
        self.proc = None
        self.rc = None

    def start(self):
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=1:detect_leaks=1")
        if self.asan_extra:
            env["ASAN_OPTIONS"] = ":".join(o for o in (env.get("ASAN_OPTIONS", ""),
                                                       self.asan_extra) if o)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [milter_path(), "-f", str(self.conf_path), "-l", "inet:%d@127.0.0.1" % self.port]
            + self.args, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf, env=env)
        wait_port(LOOPBACK, self.port, 15, self.proc)
        assert wait_for(lambda: "ready socket=" in self.log(), 10), self.log()[-3000:]
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.rc is None:
            self.rc = stop_process(self.proc, sig, 15)
            self.logf.close()
        return self.rc


    def sanitizer_reports(self):
        return [l for l in self.log().splitlines() if any(p in l for p in SANITIZER_PATTERNS)]


class Postfix:
    """A private Postfix 3.7 instance on 127.0.0.1:port.

    Mail for any address @example.org is delivered by virtual(8) into the
    maildir BASE/mail/box/. XCLIENT is allowed from 127.0.0.0/8. The log is
    BASE/maillog (maillog_file, postlogd)."""

    def __init__(self, workdir, port=None, extra_main=None):
        if not IS_ROOT:
            raise HarnessError("the Postfix fixture needs root")
        self.base = make_dir(Path(workdir) / "postfix")
        self.etc = make_dir(self.base / "etc")
        self.spool = make_dir(self.base / "spool")
        self.data = make_dir(self.base / "data", 0o700, "postfix")
        self.mail = make_dir(self.base / "mail", 0o755, UNPRIV_USER)
        self.maillog = self.base / "maillog"
        self.port = port or free_port()
        self.extra_main = extra_main or {}
        self.master_pid = None

    def main_cf(self):
        b = self.base
        kv = {
            "compatibility_level": "3.6",
            "config_directory": str(self.etc),
            "queue_directory": str(self.spool),
            "data_directory": str(self.data),
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "upstream.test",
            "mydomain": "upstream.test",
            "myorigin": "upstream.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "virtual_mailbox_domains": "example.org",
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": "static:box/",
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "virtual_minimum_uid": "100",
            "alias_maps": "",
            "alias_database": "",
            "relayhost": "",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(b),
            "smtp_dns_support_level": "disabled",
            "biff": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix",
        }
        kv.update(self.extra_main)
        return "".join("%s = %s\n" % (k, v) for k, v in kv.items())

    def _postfix(self, *args, timeout=30):
        # the postfix command reports only to syslog unless stderr is a tty;
        # the maillog_file has the messages once postlogd runs.
        return subprocess.run(["postfix", "-c", str(self.etc)] + list(args),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)

    def start(self):
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen="127.0.0.1:%d" % self.port))
        r = self._postfix("start")
        if r.returncode != 0:
            raise HarnessError("postfix start failed (%d): %s\n%s" % (
                r.returncode, r.stdout.decode(errors="replace"), self.log()))
        pidf = self.spool / "pid" / "master.pid"
        wait_for(lambda: pidf.exists() and pidf.read_text().strip(), 10)
        try:
            self.master_pid = int(pidf.read_text().strip())
        except (OSError, ValueError):
            self.master_pid = None
        wait_port(LOOPBACK, self.port, 10)
        return self

    def stop(self):
        try:
            self._postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        if self.master_pid:
            if not wait_for(lambda: not pid_alive(self.master_pid), 10):
                try:
                    os.kill(self.master_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def log(self):
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def messages(self):
        out = []
        for sub in ("new", "cur"):
            d = self.mail / "box" / sub
            if d.is_dir():
                for p in sorted(d.iterdir()):
                    out.append(p.read_bytes())
        return out

    def messages_with(self, needle):
        if isinstance(needle, str):
            needle = needle.encode()
        return [m for m in self.messages() if needle in m]

    def wait_messages_with(self, needle, n=1, timeout=10):
        wait_for(lambda: len(self.messages_with(needle)) >= n, timeout, 0.1)
        return self.messages_with(needle)


# the users of the Dovecot fixture (passwd-file, PLAIN scheme)
SASL_PASSWORDS = {"alice": "s3cret-Alice!", "bob@example.org": "hunter2-Bob"}


class Dovecot:
    """dovecot -F with only the auth service; socket DIR/auth (mode 0666)."""

    def __init__(self, workdir):
        self.dir = make_dir(Path(workdir) / "dovecot")
        self.socket = self.dir / "auth"
        self.proc = None

    def start(self):
        users = self.dir / "users"
        users.write_text("".join("%s:{PLAIN}%s\n" % kv for kv in SASL_PASSWORDS.items()))
        conf = self.dir / "dovecot.conf"
        conf.write_text("""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
ssl = no
auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/tmp
}}
service auth {{
  unix_listener {d}/auth {{
    mode = 0666
  }}
}}
""".format(d=self.dir))
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for(lambda: self.socket.exists(), 10):
            self.stop()
            raise HarnessError("dovecot did not start")
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)


# --------------------------------------------------------------------------
# moatd


DEFAULT_CONF = [
    ("hostname", "mx.moat.test"),
    ("listen", None),               # filled in: 127.0.0.1:<free port>
    ("workers", "2"),
    ("upstream", None),             # filled in
    ("upstream-identity", "xclient"),
    ("upstream-connect-timeout", "2s"),
    ("upstream-timeout", "5s"),
    ("max-sessions", "100"),
    ("max-sessions-per-client", "50"),
    ("max-message-size", "10m"),
    ("max-recipients", "1000"),
    ("max-errors", "20"),
    ("max-junk-commands", "100"),
    ("max-line-length", "998"),
    ("command-deadline", "5s"),
    ("session-deadline", "60s"),
    ("data-min-rate", "500"),
    ("drain-timeout", "3s"),
    ("bare-lf", "normalise"),
    ("spool-dir", None),            # filled in
    ("spool-memory", "64k"),
    ("user", UNPRIV_USER if IS_ROOT else None),
    ("log", "stderr"),
    ("log-level", "debug"),
    # sender authentication is on by default in moatd; the tests that are
    # not about it keep messages byte-exact (no Authentication-Results)
    ("spf", "no"),
    ("dkim", "no"),
    ("dmarc", "off"),
    # the start-up checks connect to the upstream (the fake would record
    # that connection) and probe the resolver: test_health.py turns them on
    ("startup-checks", "no"),
]


def render_conf(items):
    out = ["# generated by tests/integration/harness.py"]
    for k, v in items:
        if v is None:
            continue
        for one in (v if isinstance(v, (list, tuple)) else [v]):
            out.append("%-26s %s" % (k, one))
    return "\n".join(out) + "\n"


class Moatd(LoggedProcess):
    """moatd -f CONFIG in the foreground, stderr into DIR/moatd.log.

    Options are config keys with "-" (or "_" in Python keywords); a value
    None drops the key, a list repeats it."""

    def __init__(self, workdir, upstream, name="moatd", **opts):
        self.dir = make_dir(Path(workdir) / name)
        self.spool = make_dir(self.dir / "spool", 0o700, UNPRIV_USER)
        self.port = free_port()
        self.host = LOOPBACK
        conf = dict(DEFAULT_CONF)
        conf["listen"] = "%s:%d" % (self.host, self.port)
        conf["upstream"] = upstream
        conf["spool-dir"] = str(self.spool)
        for k, v in opts.items():
            conf[k.replace("_", "-")] = v
        self.conf_items = list(conf.items())
        # the address tests talk to: the first listen entry
        first = conf["listen"][0] if isinstance(conf["listen"], (list, tuple)) else conf["listen"]
        h, _, p = first.split()[0].rpartition(":")    # options may follow
        self.host, self.port = h.strip("[]"), int(p)
        _check_loopback(self.host)
        self.conf_path = self.dir / "moat.conf"
        self.log_path = self.dir / "moatd.log"
        self.proc = None
        self.logf = None
        self.rc = None
        self.binary = moatd_path()

    def start(self, timeout=15):
        if not os.access(self.binary, os.X_OK):
            raise HarnessError("moatd binary not found: %s (set MOATD)" % self.binary)
        self.conf_path.write_text(render_conf(self.conf_items))
        self.logf = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1:fast_unwind_on_malloc=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        self.proc = subprocess.Popen([self.binary, "-f", str(self.conf_path)],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(timeout)
        except Exception:
            self.stop()
            raise HarnessError("moatd did not become ready:\n%s" % self.log()[-3000:])
        return self

    def _wait_ready(self, timeout):
        # Prefer the "ready" log line (no probe session in the logs); fall
        # back to a connect probe.
        t0 = time.monotonic()

        def ready():
            if self.proc.poll() is not None:
                raise HarnessError("moatd exited with %s" % self.proc.returncode)
            if re.search(r"\bready\b", self.log()):
                return True
            if time.monotonic() - t0 > 10:
                return port_accepts(self.host, self.port)
            return False
        if not wait_for(ready, timeout, 0.05):
            raise HarnessError("timeout")
        # no probe connection here: moatd logs "ready" after listen(), so the
        # kernel queues connections already, and a probe would hold a
        # session slot for a moment (max-sessions tests count them)


    def wait_log(self, pattern, timeout=5, count=1):
        rx = re.compile(pattern)
        wait_for(lambda: len(rx.findall(self.log())) >= count, timeout)
        return rx.findall(self.log())

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def stop(self, timeout=None):
        """SIGTERM, wait (drain-timeout + margin), SIGKILL. Returns rc."""
        if self.proc is None:
            return None
        if timeout is None:
            timeout = 10
        self.rc = stop_process(self.proc, signal.SIGTERM, timeout)
        if self.logf:
            self.logf.close()
            self.logf = None
        return self.rc

    def sanitizer_reports(self):
        text = self.log()
        return [l for l in text.splitlines() if any(p in l for p in SANITIZER_PATTERNS)]

    def client(self, **kw):
        return Client(self.port, self.host, **kw)


def moatd_check(conf_text, workdir, name="check.conf", timeout=20):
    """moatd -n -f FILE: returns (rc, output, path)."""
    p = Path(workdir) / name
    p.write_text(conf_text)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1:fast_unwind_on_malloc=0")
    r = subprocess.run([moatd_path(), "-n", "-f", str(p)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    return r.returncode, r.stdout.decode(errors="replace"), p


# --------------------------------------------------------------------------
# A fake upstream behind the PROXY protocol (additive; used by test_ops.py)

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class ProxyFakeUpstream(FakeUpstream):
    """FakeUpstream that, like a server with smtpd_upstream_proxy_protocol,
    first reads a PROXY v1 line or v2 header, and only then greets.

    Per connection: c.proxy_header (the header bytes exactly, or None),
    c.proxy_extra (bytes that came with the header before our greeting:
    must be b""). A connection whose first bytes are no PROXY header within
    header_timeout seconds is recorded in self.proxy_errors and closed."""

    def __init__(self, header_timeout=5.0, **kw):
        super().__init__(**kw)
        self.header_timeout = header_timeout
        self.proxy_errors = []

    def _read_proxy_header(self, c):
        buf = b""
        deadline = time.monotonic() + self.header_timeout
        for _ in range(10000):
            if buf.startswith(b"PROXY "):
                i = buf.find(b"\r\n")
                if i >= 0:
                    return buf[:i + 2], buf[i + 2:]
                if len(buf) > 107:
                    return None, buf
            elif buf.startswith(PROXY_V2_SIG):
                if len(buf) >= 16:
                    n = 16 + (buf[14] << 8 | buf[15])
                    if len(buf) >= n:
                        return buf[:n], buf[n:]
            elif len(buf) >= 6 and not PROXY_V2_SIG.startswith(buf[:12]):
                return None, buf
            if time.monotonic() >= deadline:
                return None, buf
            r, _, _ = select.select([c.sock], [], [], 0.1)
            if self.stop_ev.is_set():
                return None, buf
            if not r:
                continue
            d = c.sock.recv(4096)
            if not d:
                c.closed_by_peer = True
                return None, buf
            with self.lock:
                c.raw += d
            buf += d
        return None, buf

    def _serve2(self, c):
        c.proxy_header = None
        c.proxy_extra = b""
        hdr, extra = self._read_proxy_header(c)
        if hdr is None:
            self.proxy_errors.append("connection %d: no PROXY header; got %r" % (c.id, extra[:200]))
            return
        c.proxy_header = hdr
        c.proxy_extra = extra
        # moatd must wait for our greeting: anything beyond the header now
        # would be lost by the command loop, so settle for a short grace
        time.sleep(0.05)
        r, _, _ = select.select([c.sock], [], [], 0)
        if r:
            d = c.sock.recv(4096)
            with self.lock:
                c.raw += d
            c.proxy_extra += d
        return super()._serve2(c)

    def proxy_headers(self):
        with self.lock:
            return [c.proxy_header for c in self.conns]


class Redis:
    """A private redis-server on a loopback port (no persistence), stopped
    by PID. stop()/start() again keep the port; pause()/resume() send
    SIGSTOP/SIGCONT. replica_of=(host, port) makes it a replica."""

    def __init__(self, workdir, name="redis", port=None, replica_of=None):
        self.dir = make_dir(Path(workdir) / name)
        self.host = LOOPBACK
        self.port = port or free_port()
        self.replica_of = replica_of
        self.proc = None
        self.log_path = self.dir / "redis.log"

    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    def start(self, timeout=10):
        argv = ["redis-server", "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.log_path), "--daemonize", "no"]
        if self.replica_of:
            argv += ["--replicaof", self.replica_of[0], str(self.replica_of[1])]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.host, self.port, timeout, self.proc)
        return self

    def client(self):
        import redis
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class Sentinel:
    """A redis-sentinel watching one master as NAME, fast timings."""

    def __init__(self, workdir, master, name="mm"):
        self.dir = make_dir(Path(workdir) / "sentinel")
        self.port = free_port()
        self.name = name
        self.master = master
        self.proc = None

    @property
    def address(self):
        return "%s:%d" % (LOOPBACK, self.port)

    def start(self, timeout=10):
        conf = self.dir / "sentinel.conf"
        conf.write_text("port %d\nbind %s\ndir %s\nsentinel monitor %s %s %d 1\n"
                        "sentinel down-after-milliseconds %s 500\n"
                        "sentinel failover-timeout %s 3000\n"
                        % (self.port, LOOPBACK, self.dir, self.name, self.master.host,
                           self.master.port, self.name, self.name))
        self.proc = subprocess.Popen(["redis-sentinel", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(LOOPBACK, self.port, timeout, self.proc)
        return self

    def master_port(self):
        import redis
        r = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)
        try:
            h, p = r.execute_command("SENTINEL", "get-master-addr-by-name", self.name)
            return int(p)
        finally:
            r.close()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
