"""TLS: STARTTLS, implicit TLS, injection (docs/SECURITY.md, TLS), upstream TLS.

Certificates are made with the openssl CLI per test session. The STARTTLS
injection cases come from ../shared/conformance/smtp/starttls-injection-cases.tsv.
"""

import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import harness

CASES = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "smtp" / \
    "starttls-injection-cases.tsv"


@pytest.fixture(scope="session")
def certs(workroot):
    """A CA, a server certificate signed by it, and a client certificate."""
    d = harness.make_dir(workroot / "certs")

    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=moat test CA")
    for name, cn in (("server", "mx.moat.test"), ("client", "client.moat.test"),
                     ("upstream", "upstream.test")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=" + cn)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2")
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return d


def tls_opts(certs, **kw):
    o = {"tls-certificate": str(certs / "server.pem"), "tls-key": str(certs / "server.key"),
         "tls-chain": str(certs / "ca.pem")}
    o.update(kw)
    return o


def client_ctx(cert=None, key=None, maxv=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if maxv:
        ctx.maximum_version = maxv
    return ctx


def starttls(c, ctx=None):
    """STARTTLS on a harness.Client; the socket is wrapped in place."""
    r = c.cmd("STARTTLS")
    assert r.code == 220, r
    assert c.buf == b"", "bytes after the 220: %r" % c.buf
    c.sock = (ctx or client_ctx()).wrap_socket(c.sock, server_hostname="mx.moat.test")
    return c.sock


def implicit_client(port, ctx=None, timeout=5):
    """A harness.Client over implicit TLS."""
    raw = socket.create_connection((harness.LOOPBACK, port), timeout=timeout)
    s = (ctx or client_ctx()).wrap_socket(raw, server_hostname="mx.moat.test")
    c = harness.Client.__new__(harness.Client)
    c.timeout = timeout
    c.sock = s
    c.buf = b""
    c.eof = False
    c.greeting = c.reply()
    return c


def listen2(port1, port2, opts2):
    return ["127.0.0.1:%d" % port1, "127.0.0.1:%d %s" % (port2, opts2)]


# ---------------------------------------------------------------------------

def test_no_certificate_no_starttls(moatd_sink):
    m, _ = moatd_sink
    with m.client() as c:
        r = c.ehlo()
        assert "STARTTLS" not in r.keywords()
        assert c.cmd("STARTTLS").code == 502


def test_starttls_relay_and_facts(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs))
    with m.client() as c:
        r = c.ehlo()
        assert "STARTTLS" in r.keywords()
        s = starttls(c)
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        r = c.ehlo()
        assert r.code == 250
        assert "STARTTLS" not in r.keywords()          # TLS-06
        assert "AUTH" not in r.keywords()              # port 25: no AUTH
        assert c.cmd("STARTTLS").code == 503           # TLS-04
        harness.smtp_transaction(c, harness.message(subject="over tls"))
        c.cmd("QUIT")
    sink.wait_dumps(1)
    # at info the session's disconnect line says how TLS went
    assert m.wait_log(r"disconnect client=\S+ helo=<\S+> reason=quit .* tls=starttls "
                      r"tls-version=TLSv1\.[23] tls-cipher=\S+ tls-resumed=0 tls-client-cert=none",
                      timeout=8), m.log()[-2000:]


def test_starttls_with_argument(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs))
    with m.client() as c:
        c.ehlo()
        assert c.cmd("STARTTLS foo").code == 501        # TLS-03


def test_swaks_tls(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs))
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % m.port, "--tls", "--to",
                        "user@example.org", "--from", "a@b.test", "--timeout", "10"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert "TLS started" in out
    sink.wait_dumps(1)


def test_openssl_s_client_starttls(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs))
    r = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect",
                        "127.0.0.1:%d" % m.port, "-CAfile", str(certs / "ca.pem"),
                        "-verify_return_error", "-brief", "-ign_eof"],
                       input=b"QUIT\r\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    out = r.stdout.decode(errors="replace")
    assert "Verification: OK" in out, out
    assert "221" in out


def test_tls_min_version(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs, **{"tls-min-version": "1.3"}))
    with m.client() as c:
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            client_ctx(maxv=ssl.TLSVersion.TLSv1_2).wrap_socket(c.sock, server_hostname="x")
    m.wait_log(r"tls handshake=failed")
    with m.client() as c:
        c.ehlo()
        s = starttls(c)
        assert s.version() == "TLSv1.3"


def test_session_resumption(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs, **{"tls-min-version": "1.2"}))
    ctx = client_ctx(maxv=ssl.TLSVersion.TLSv1_2)
    session = None
    for i in range(2):
        with m.client() as c:
            c.ehlo()
            assert c.cmd("STARTTLS").code == 220
            c.sock = ctx.wrap_socket(c.sock, server_hostname="mx.moat.test", session=session)
            assert c.ehlo().code == 250
            if i == 1:
                assert c.sock.session_reused
            session = c.sock.session
            c.cmd("QUIT")
    m.wait_log(r"resumed=1")


# --- injection: the conformance table ---------------------------------------

def injection_cases():
    rows = []
    for line in CASES.read_text().splitlines()[1:]:
        if line.strip():
            rows.append(line.split("\t")[0])
    return rows


def test_injection_table_is_covered():
    assert set(injection_cases()) == {"smtp-command-injection", "smtp-command-injection-rset",
                                      "smtp-response-injection", "smtp-starttls-stripping"}


@pytest.mark.parametrize("payload,name", [
    (b"STARTTLS\r\nEHLO commandinjectiontester\r\n", "smtp-command-injection"),
    (b"STARTTLS\r\nRSET\r\n", "smtp-command-injection-rset"),           # TLS-01
    (b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n", "TLS-02"),
])
def test_starttls_command_injection(certs, sink, moatd_factory, payload, name):
    m = moatd_factory(sink.address, **tls_opts(certs))
    with m.client() as c:
        c.ehlo()
        c.send(payload)
        r = c.reply()
        assert r.code == 220
        c.sock = client_ctx().wrap_socket(c.sock, server_hostname="mx.moat.test")
        # nothing arrives inside TLS unasked
        c.sock.settimeout(0.5)
        try:
            extra = c.sock.recv(4096)
        except (socket.timeout, ssl.SSLError):
            extra = b""
        assert extra == b"", "%s: injected command answered: %r" % (name, extra)
        c.sock.settimeout(5)
        r = c.ehlo()
        assert r.code == 250
        if name == "TLS-02":
            assert c.cmd("RCPT TO:<user@example.org>").code == 503
    m.wait_log(r"protocol fact=starttls-injection discarded=\d+")


def test_starttls_resets_transaction(certs, fake, moatd_factory):
    """TLS-05: STARTTLS after MAIL: everything is forgotten, here and upstream."""
    m = moatd_factory(fake.address, **tls_opts(certs))
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<pre@tls.test>").code == 250
        starttls(c)
        assert c.cmd("MAIL FROM:<x@y.test>").code == 503      # EHLO again first
        c.ehlo()
        assert c.cmd("RCPT TO:<user@example.org>").code == 503
        assert c.cmd("MAIL FROM:<post@tls.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        c.cmd("QUIT")
    lines = b"".join(fake.all_lines())
    assert lines.index(b"MAIL FROM:<pre@tls.test>") < lines.index(b"RSET") < \
        lines.index(b"MAIL FROM:<post@tls.test>")


def test_handshake_garbage_and_stall(certs, sink, moatd_factory):
    """TLS-07: garbage, and a handshake that stalls: deadline, clean close."""
    m = moatd_factory(sink.address, **tls_opts(certs, **{"tls-handshake-timeout": "1s"}))
    with m.client() as c:
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        c.send(b"\x16\x03\x01\x00\x05hello garbage\r\n")
        c.wait_closed(5)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        c.send(b"\x16\x03\x01")           # a truncated record, then nothing
        t0 = time.monotonic()
        c.wait_closed(5)
        assert time.monotonic() - t0 < 4
    m.wait_log(r"limit reason=tls-handshake-deadline")


def test_implicit_tls(certs, sink, moatd_factory):
    p1, p2 = harness.free_port(), harness.free_port()
    m = moatd_factory(sink.address, listen=listen2(p1, p2, "implicit-tls"), **tls_opts(certs))
    c = implicit_client(p2)
    assert c.greeting.code == 220
    r = c.ehlo()
    assert "STARTTLS" not in r.keywords()
    harness.smtp_transaction(c, harness.message(subject="implicit"))
    c.cmd("QUIT")
    c.close()
    sink.wait_dumps(1)
    assert m.wait_log(r"disconnect client=unknown\[127\.0\.0\.1\]:\d+ .* tls=implicit "
                      r"tls-version=TLSv1\.[23] ", timeout=8), m.log()[-2000:]


def test_plaintext_on_implicit_port(certs, sink, moatd_factory):
    """TLS-11: plaintext SMTP on the implicit-TLS port: failure, close."""
    p1, p2 = harness.free_port(), harness.free_port()
    m = moatd_factory(sink.address, listen=listen2(p1, p2, "implicit-tls"), **tls_opts(certs))
    c = harness.Client(p2, greet=False)
    c.send(b"EHLO x\r\n")
    c.wait_closed(5)
    assert b"250" not in c.buf and b"220" not in c.buf
    m.wait_log(r"tls handshake=failed")


def test_implicit_tls_needs_certificate(workdir):
    conf = "listen 127.0.0.1:2465 implicit-tls\nupstream 127.0.0.1:10025\n"
    rc, out, _ = harness.moatd_check(conf, workdir)
    assert rc != 0
    assert re.search(r"check\.conf:1:\d+: error: listen 127.0.0.1:2465 implicit-tls: no "
                     r"tls-certificate", out), out
    rc, out, _ = harness.moatd_check("listen 127.0.0.1:25 bogus\nupstream 127.0.0.1:1\n", workdir)
    assert rc != 0 and "unknown listen option" in out, out


def test_bad_certificate_refused(workdir, certs):
    conf = "listen 127.0.0.1:2525\nupstream 127.0.0.1:10025\ntls-certificate %s\ntls-key %s\n" % (
        certs / "server.pem", certs / "client.key")
    rc, out, _ = harness.moatd_check(conf, workdir)
    assert rc != 0 and ("does not match" in out or "mismatch" in out), out


def test_client_certificate_fact(certs, sink, moatd_factory):
    opts = tls_opts(certs, **{"tls-client-ca": str(certs / "ca.pem")})
    opts["list"] = "certs word { client.moat.test }"
    opts["on"] = ['mail not tls-client-cert in certs reject 530 5.7.0 "client certificate required"',
                  'mail tls-version is TLSv1.1 reject 554 5.7.0 "old TLS"']
    m = moatd_factory(sink.address, **opts)
    with m.client() as c:
        c.ehlo()
        starttls(c, client_ctx(str(certs / "client.pem"), str(certs / "client.key")))
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
    with m.client() as c:
        c.ehlo()
        starttls(c)
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@b.test>")
        assert r.code == 530 and "client certificate required" in r.text
    m.wait_log(r"client-cert=client\.moat\.test")


def test_reload_picks_new_certificate(certs, sink, moatd_factory):
    m = moatd_factory(sink.address, **tls_opts(certs))
    with m.client() as c:
        c.ehlo()
        s = starttls(c)
        der1 = s.getpeercert(binary_form=True)
    conf = m.conf_path.read_text().replace(str(certs / "server.pem"), str(certs / "upstream.pem")) \
        .replace(str(certs / "server.key"), str(certs / "upstream.key"))
    m.conf_path.write_text(conf)
    m.signal(__import__("signal").SIGHUP)
    m.wait_log(r"reload ok")
    with m.client() as c:
        c.ehlo()
        der2 = starttls(c).getpeercert(binary_form=True)
    assert der1 != der2


# --- upstream TLS -----------------------------------------------------------

class TlsFake(harness.FakeUpstream):
    """FakeUpstream that offers STARTTLS and wraps its socket when asked.

    starttls_reply: the exact bytes sent for STARTTLS (injection tests);
    None: refuse with 454."""

    def __init__(self, certs, starttls_reply=b"220 2.0.0 Ready to start TLS\r\n", **kw):
        caps = kw.pop("caps", None) or (list(harness.DEFAULT_CAPS) + ["STARTTLS"])
        super().__init__(caps=caps, **kw)
        self.certs = certs
        self.starttls_reply = starttls_reply
        self.tls_conns = 0
        self.injected_seen = False

    def _serve2(self, c):
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock.sendall(b"220 fake.test ESMTP fake\r\n")
        buf = b""
        for _ in range(100):
            while b"\r\n" not in buf:
                d = self._recv(c)
                if d is None:
                    return
                buf += d
            line, buf = buf.split(b"\r\n", 1)
            with self.lock:
                c.lines.append(line + b"\r\n")
            verb = line.split(b" ")[0].upper()
            if verb == b"EHLO":
                caps = ["fake.test"] + list(self.caps)
                c.sock.sendall("".join(("250-" if k < len(caps) - 1 else "250 ") + x + "\r\n"
                                       for k, x in enumerate(caps)).encode())
            elif verb == b"STARTTLS":
                if self.starttls_reply is None:
                    c.sock.sendall(b"454 4.7.0 TLS not available\r\n")
                    continue
                c.sock.sendall(self.starttls_reply)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(str(self.certs / "upstream.pem"), str(self.certs / "upstream.key"))
                c.sock.settimeout(5)
                c.sock = ctx.wrap_socket(c.sock, server_side=True)
                self.tls_conns += 1
                # from here on the ordinary fake, inside TLS (no new greeting)
                c.skip_greeting = True
                if buf:
                    self.injected_seen = True
                return super()._serve2(c)
            else:
                c.sock.sendall(b"502 5.5.2 not before TLS\r\n")

    def _send(self, c, action):
        if getattr(c, "skip_greeting", False):
            c.skip_greeting = False
            return True
        return super()._send(c, action)

    def _recv(self, c):
        if isinstance(c.sock, ssl.SSLSocket):
            c.sock.settimeout(0.1)
            for _ in range(10 ** 6):
                if self.stop_ev.is_set():
                    return None
                try:
                    d = c.sock.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                if not d:
                    c.closed_by_peer = True
                    return None
                with self.lock:
                    c.raw += d
                return d
            return None
        return super()._recv(c)


def tls_fake(fake_factory, certs, **kw):
    f = TlsFake(certs, **kw)
    return f.start()


def test_upstream_starttls(certs, moatd_factory):
    f = TlsFake(certs).start()
    try:
        m = moatd_factory(f.address, **{"upstream-tls": "required"})
        with m.client() as c:
            c.ehlo()
            harness.smtp_transaction(c, harness.message(subject="tls upstream"))
            c.cmd("QUIT")
        f.wait_completed(1)
        assert f.tls_conns >= 1
        m.wait_log(r"upstream tls version=TLSv1\.[23]")
        lines = [l for l in f.all_lines()]
        # EHLO, STARTTLS, then EHLO again inside TLS before XCLIENT
        verbs = [l.split(b" ")[0].rstrip(b"\r\n") for l in lines]
        assert verbs[:4] == [b"EHLO", b"STARTTLS", b"EHLO", b"XCLIENT"], verbs
    finally:
        f.stop()


def test_upstream_response_injection(certs, moatd_factory):
    """TLS-09 / smtp-response-injection: plaintext after the 220 is discarded."""
    f = TlsFake(certs, starttls_reply=b"220 Ready to start TLS\r\n250-example.org\r\n"
                                      b"250 AUTH LOGIN\r\n").start()
    try:
        m = moatd_factory(f.address, **{"upstream-tls": "required"})
        with m.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@b.test>")
            # either the injected lines were discarded and all went on, or
            # they broke the handshake and the client got a 4xx; never a
            # reply read from the injected bytes
            assert r.code in (250, 421), r
            if r.code == 250:
                assert c.cmd("RCPT TO:<user@example.org>").code == 250
        m.wait_log(r"upstream protocol=starttls-response-injection discarded=\d+")
    finally:
        f.stop()


@pytest.mark.parametrize("mode,caps,reply", [
    ("required", list(harness.DEFAULT_CAPS), b""),           # not offered
    ("required", None, None),                                  # refused (454)
])
def test_upstream_tls_required_fails_4xx(certs, moatd_factory, mode, caps, reply):
    """TLS-10 / smtp-starttls-stripping: no silent plaintext fallback."""
    kw = {"caps": caps} if caps is not None else {}
    f = TlsFake(certs, starttls_reply=reply if reply != b"" else b"220 x\r\n", **kw).start()
    try:
        m = moatd_factory(f.address, **{"upstream-tls": mode})
        with m.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@b.test>")
            assert r.cls == 4, r
        assert not any(l.startswith(b"MAIL") for l in f.all_lines())
    finally:
        f.stop()


def test_upstream_tls_handshake_failure_4xx(certs, moatd_factory, fake):
    """The upstream says 220 to STARTTLS but speaks no TLS: 4xx."""
    f = TlsFake(certs, starttls_reply=b"220 go ahead\r\n").start()
    f.certs = Path("/nonexistent")     # wrapping fails on the fake's side
    try:
        m = moatd_factory(f.address, **{"upstream-tls": "required", "upstream-timeout": "2s"})
        with m.client() as c:
            c.ehlo()
            r = c.cmd("MAIL FROM:<a@b.test>", timeout=10)
            assert r.cls == 4, r
    finally:
        f.stop()
        f.errors.clear()


def test_upstream_opportunistic_plaintext(certs, moatd_factory, fake):
    """opportunistic: no STARTTLS offered -> plaintext goes on."""
    m = moatd_factory(fake.address, **{"upstream-tls": "opportunistic"})
    with m.client() as c:
        c.ehlo()
        harness.smtp_transaction(c, harness.message())
    fake.wait_completed(1)
    m.wait_log(r"upstream tls=none reason=starttls-not-offered")
