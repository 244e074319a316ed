"""moat-milter against raw milter packets (MLT-02) and many MTA connections
at once (MLT-06), without an MTA: a small milter-protocol client
(milterproto.py) plays the MTA.

MLT-02: every hostile case (CASES: lengths 0, 1, past Maxdatasize and
huge, strings without NUL, bad CONNECT data, odd macros, 10,000 macros,
unknown commands, OPTNEG versions and flags, commands out of order, ABORT
storms, connections closed mid-packet) runs on its own connection against
one moat-milter (the ASan+UBSan build). Each must end with the connection
closed promptly, or ignored (no reply, and the next valid command is
answered), or a sane reply; moat-milter then still answers a normal
transaction correctly. After all of them (and three more rounds) its
memory is back near its baseline, every "connect" log line has its
"disconnect", and at SIGTERM it exits 0 with no sanitizer report. Macro
lists with an odd number of strings get a milter each: libmilter's
smfi_getsymval() reads past their end (xfail, see LIBMILTER_ODD_MACROS).

MLT-06: 200 connections at once each get a full transaction answered
within a deadline, libmilter's threads within max-connections + 32; with
-c 20, connections past the limit get 421 4.7.0 at HELO, never a hang;
stalled connections hold at most one thread each (that -c does not bound
the threads is reported as an xfail when seen); the listening backlog is
128 (ss). The idle timeout (smfi_settimeout(60)) has no option to shorten
it and is not tested.

MOAT_MILTER names the binary (default build-asan/moat-milter).
"""

import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import harness
from harness import LOOPBACK, free_port, make_dir, milter_path
import milterproto as mp
from milterproto import MilterClient, packet, raw_header, optneg_data, connect_data

ROOT = Path(__file__).resolve().parents[2]
CLIENT_IP = "127.0.0.7"
RULES = [
    'data true add-header X-Moat-Raw "from $sender-domain"',
    'mail sender-domain is bad.test reject 550 5.7.1 "sender $sender-domain refused"',
]
MAXDATA = 65535         # libmilter's Maxdatasize (MILTER_MDS_64K): data bytes after the command


def asan_build():
    """True if the moat-milter under test is the AddressSanitizer build."""
    try:
        with open(milter_path(), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return True


class RawMilter(harness.MoatMilter):
    """harness.MoatMilter on its own port, with the DNS server of this file,
    the rules above, and what the checks here read from /proc and the log."""

    def __init__(self, workdir, name, resolver, args=(), asan_extra="", **opts):
        opts.setdefault("on", RULES)
        super().__init__(workdir, free_port(), name=name, args=args, asan_extra=asan_extra,
                         resolver=resolver, dns_timeout="2s", **opts)

    def status(self, field):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError("no %s in /proc/%d/status" % (field, self.proc.pid))

    def rss_kib(self):
        return self.status("VmRSS")

    def threads(self):
        return self.status("Threads")

    def conn_counts(self):
        """(connect lines, disconnect lines) of the log (connect is a debug
        line; the tests run at debug)."""
        log = self.log()
        return (len(re.findall(r" connect client=", log)),
                len(re.findall(r"^moat-milter\[\d+\]: info: [0-9a-f]+ disconnect client=", log,
                               re.M)))

    def check_alive(self, what=""):
        assert self.alive(), "moat-milter died (%s), rc %s; log tail:\n%s" % (
            what, self.proc.poll(), self.log()[-4000:])


def check_stopped_clean(m):
    """SIGTERM: exit 0, no sanitizer report."""
    was_alive = m.alive()
    rc = m.stop()
    problems = []
    if not was_alive:
        problems.append("moat-milter was dead before SIGTERM (rc %s)" % rc)
    elif rc != 0:
        problems.append("moat-milter exited %s after SIGTERM (expected 0)" % rc)
    reports = m.sanitizer_reports()
    if reports:
        problems.append("sanitizer report:\n  " + "\n  ".join(reports[:30]))
    return problems


@pytest.fixture(scope="module")
def dns_srv():
    from dnsserver import DnsServer
    srv = DnsServer(zones=["test", "127.in-addr.arpa", "ip6.arpa"])
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def raw_milter(workroot, dns_srv):
    """The moat-milter every MLT-02 case and the MLT-06 load runs against;
    test_zz_stop_clean stops it at the end and checks how."""
    if not os.access(milter_path(), os.X_OK):
        pytest.fail("moat-milter binary missing: %s (make asan, or set MOAT_MILTER)" % milter_path())
    # ASan keeps freed memory in quarantine (256 MiB by default) before reuse:
    # with that, VmRSS grows with every byte ever allocated and "memory back
    # to baseline" cannot be seen. 4 MiB still holds far more than one
    # connection frees, for use-after-free reports, and is full after the
    # warm-up of test_memory_back_to_baseline (VmRSS then varies by ~3 MiB).
    m = RawMilter(make_dir(workroot / "milter-raw"), "shared", "forward " + dns_srv.address,
                  asan_extra="quarantine_size_mb=4")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def milter_factory(workdir, dns_srv):
    """Own moat-milter instances for one test; all stopped by PID after."""
    started = []

    def make(args=(), **opts):
        m = RawMilter(workdir, "milter%d" % len(started), "forward " + dns_srv.address,
                      args=args, **opts)
        started.append(m)
        return m.start()
    yield make
    for m in started:
        m.stop()


# ---------------------------------------------------------------------------
# a normal transaction


def transaction(port, sender="a@sender.test", rcpt="user@example.org", ip=CLIENT_IP,
                subject="raw", timeout=10.0, barrier=None):
    """OPTNEG .. EOM as Postfix does it: the final reply of each step that has
    one, and the modifications that came with the end of message."""
    out = {}
    with MilterClient(port, timeout=timeout) as c:
        if barrier is not None:
            barrier.wait(timeout)
        c.optneg()
        out["proto"] = c.proto
        for step, call in (("connect", lambda: c.connect("client.test", ip)),
                           ("helo", lambda: c.helo("client.test")),
                           ("mail", lambda: c.mail("<%s>" % sender)),
                           ("rcpt", lambda: c.rcpt("<%s>" % rcpt))):
            r, _ = call()
            out[step] = (r.cmd, r.text())
            if r.cmd != mp.SMFIR_CONTINUE:
                c.quit()
                return out
        c.header("From", "<%s>" % sender)
        c.header("Subject", subject)
        c.eoh()
        c.body(b"hello\r\n")
        r, mods = c.eom()
        out["eom"] = (r.cmd, r.text())
        out["mods"] = [(m.cmd,) + m.header() for m in mods]
        c.quit()
        out["closed_after_quit"] = c.wait_closed(5)
    return out


def expected_ok(sender_domain="sender.test"):
    return {
        "connect": (b"c", ""), "helo": (b"c", ""), "mail": (b"c", ""), "rcpt": (b"c", ""),
        "eom": (b"c", ""),
        "mods": [(b"i", 0, "X-Moat-Raw", " from %s" % sender_domain)],
        "closed_after_quit": True,
    }


def check_transaction(port, **kw):
    got = transaction(port, **kw)
    got.pop("proto")
    assert got == expected_ok(), got


def test_normal_transaction(raw_milter):
    """The baseline every hostile case is compared with: OPTNEG negotiates
    what moat-milter needs, each step continues, the end of message inserts
    moat's field on top; a refused sender gets the rule's reply."""
    r = transaction(raw_milter.port)
    # the header, end-of-header and body steps are no-reply (Postfix offers it)
    assert r["proto"] & (mp.SMFIP_NR_HDR | mp.SMFIP_NR_EOH | mp.SMFIP_NR_BODY |
                         mp.SMFIP_HDR_LEADSPC) == (mp.SMFIP_NR_HDR | mp.SMFIP_NR_EOH |
                                                   mp.SMFIP_NR_BODY | mp.SMFIP_HDR_LEADSPC), r
    r.pop("proto")
    assert r == expected_ok(), r
    r = transaction(raw_milter.port, sender="boss@bad.test")
    assert r["mail"] == (b"y", "550 5.7.1 sender bad.test refused"), r


def test_mail_without_rule_goes_with_the_next_request(milter_factory):
    """With no rule at MAIL, MAIL's request is kept by the callbacks and
    posted with the next one (one wake-up of the engine thread for MAIL and
    RCPT). The engine still gets every MAIL, in order: a RCPT rule reads the
    sender; a MAIL followed by ABORT has its verdict=abandoned line; a MAIL
    with no RCPT, followed by another MAIL or by the end of the connection,
    is still counted (moat_transactions_total: MAILs let through). A policy
    with a MAIL rule still refuses at MAIL (test_normal_transaction)."""
    mport = free_port()
    m = milter_factory(metrics_listen="127.0.0.1:%d" % mport, on=[
        'rcpt sender-domain is bad.test reject 550 5.7.1 "sender $sender-domain refused at rcpt"',
        'data true add-header X-Moat-Raw "from $sender-domain"'])
    check_transaction(m.port)
    r = transaction(m.port, sender="boss@bad.test")
    assert r["mail"] == (b"c", ""), r
    assert r["rcpt"] == (b"y", "550 5.7.1 sender bad.test refused at rcpt"), r
    with MilterClient(m.port, timeout=10) as c:
        to_stage(c, "rcpt", sender="a@first.test")
        c.abort()
        r, _ = c.mail("<b@second.test>")           # no RCPT: another MAIL follows
        assert r.cmd == mp.SMFIR_CONTINUE, r
        r, _ = c.mail("<c@third.test>")            # no RCPT: the connection ends
        assert r.cmd == mp.SMFIR_CONTINUE, r
        c.quit()
        assert c.wait_closed(5)

    def transactions():
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as page:
            text = page.read().decode()
        n = re.search(r"^moat_transactions_total (\d+)$", text, re.M)
        return int(n.group(1)) if n else None
    assert harness.wait_for(lambda: transactions() == 5, 10), transactions()
    v = [l for l in m.log().splitlines() if "verdict=abandoned" in l and "first.test" in l]
    assert len(v) == 1 and "from=<a@first.test>" in v[0] and \
        "to=<user@example.org>:passed" in v[0], v
    time.sleep(0.3)
    assert transactions() == 5
    m.check_alive("MAIL kept back")


# ---------------------------------------------------------------------------
# MLT-02: the hostile cases. Each takes a fresh connection c and the port,
# and asserts what the MTA side sees.

CLOSE_WITHIN = 2.0      # a refused packet closes the connection at once, not at a timeout
QUIET = 0.2             # how long "no reply" is waited for


def expect_closed(c, what=""):
    t0 = time.monotonic()
    kind, r = c.outcome(CLOSE_WITHIN)
    if kind == "reply":
        raise AssertionError("%s: expected the connection closed, got %r" % (what, r))
    assert kind == "closed", "%s: still open after %.1f s" % (what, CLOSE_WITHIN)
    assert time.monotonic() - t0 < CLOSE_WITHIN


def expect_ignored(c, what="", then=None):
    """No reply and no close; the connection still works: the next valid
    command (default MAIL) is answered with continue."""
    kind, r = c.outcome(QUIET)
    assert kind == "silent", "%s: expected no reply, got %s %r" % (what, kind, r)
    if then is None:
        r, _ = c.mail("<a@sender.test>")
    else:
        r, _ = then()
    assert r.cmd == mp.SMFIR_CONTINUE, "%s: connection unusable after it: %r" % (what, r)


NO_CONNECT = b"451 4.7.0 Error: the policy service did not see this connection start"


def expect_failclosed(c, what=""):
    """No reply and no close, but libmilter skipped the CONNECT that follows
    (its state was reset): the callbacks never saw the connection start, so
    moat-milter refuses the next MAIL with a tempfail, never a silent pass."""
    kind, r = c.outcome(QUIET)
    assert kind == "silent", "%s: expected no reply, got %s %r" % (what, kind, r)
    r, _ = c.mail("<a@sender.test>")
    assert r.cmd == mp.SMFIR_REPLYCODE and r.data.startswith(NO_CONNECT), \
        "%s: expected the no-connect tempfail, got %r" % (what, r)


def expect_reply(c, cmd, what=""):
    kind, r = c.outcome(5)
    assert kind == "reply" and r.cmd == cmd, "%s: expected %r, got %s %r" % (what, cmd, kind, r)
    return r


def to_stage(c, stage, sender="a@sender.test"):
    """optneg, connect, helo, mail, rcpt, eoh: the steps before stage, done."""
    steps = ["optneg", "connect", "helo", "mail", "rcpt", "headers", "eoh"]
    if stage == "fresh":
        return
    for s in steps:
        if s == "optneg":
            c.optneg()
        elif s == "connect":
            assert c.connect("client.test", CLIENT_IP)[0].cmd == mp.SMFIR_CONTINUE
        elif s == "helo":
            assert c.helo("client.test")[0].cmd == mp.SMFIR_CONTINUE
        elif s == "mail":
            assert c.mail("<%s>" % sender)[0].cmd == mp.SMFIR_CONTINUE
        elif s == "rcpt":
            assert c.rcpt("<user@example.org>")[0].cmd == mp.SMFIR_CONTINUE
        elif s == "headers":
            c.header("From", "<%s>" % sender)
            c.header("Subject", "hostile")
        elif s == "eoh":
            c.eoh()
        if s == stage:
            return
    raise ValueError(stage)


def eom_ok(c):
    """The end of message of the current transaction: moat's field, continue."""
    r, mods = c.eom()
    assert r.cmd == mp.SMFIR_CONTINUE, r
    assert [(m.cmd,) + m.header() for m in mods] == [(b"i", 0, "X-Moat-Raw", " from sender.test")], mods
    return r


CASES = {}


def case(name, stage, send=None, expect="closed"):
    """A hostile case: reach stage, send bytes, expect closed / ignored / a reply."""
    def run(c):
        to_stage(c, stage)
        c.send(send)
        if expect == "closed":
            expect_closed(c, name)
        elif expect == "ignored":
            expect_ignored(c, name)
        elif expect == "failclosed":
            expect_failclosed(c, name)
        else:
            expect_reply(c, expect, name)
    CASES[name] = run


def case_fn(name):
    def deco(f):
        CASES[name] = f
        return f
    return deco


# lengths
case("len0-before-optneg", "fresh", raw_header(0, b"O"))
case("len0-optneg-again", "optneg", raw_header(0, b"O"), "failclosed")
case("len0-connect", "optneg", raw_header(0, b"C"))
case("len0-helo", "connect", raw_header(0, b"H"))
case("len0-mail", "connect", raw_header(0, b"M"))
case("len0-rcpt", "mail", raw_header(0, b"R"))
case("len0-header", "rcpt", raw_header(0, b"L"))
case("len0-body", "eoh", raw_header(0, b"B"))
case("len0-macro", "connect", raw_header(0, b"D"))
case("len0-abort", "rcpt", raw_header(0, b"A"), "ignored")
case("len1-optneg", "fresh", packet("O"))
case("len1-connect", "optneg", packet("C"))
case("len1-helo", "connect", packet("H"))
case("len1-mail", "connect", packet("M"))
case("len1-macro", "connect", packet("D"))
case("len1-quit", "rcpt", packet("Q"))
case("len-ffffffff-optneg", "optneg", raw_header(0xFFFFFFFF, b"O"), "failclosed")   # -1: as length 0
case("len-ffffffff-connect", "optneg", raw_header(0xFFFFFFFF, b"C"))
case("len-80000001-mail", "connect", raw_header(0x80000001, b"M"))
case("len-max-plus-one", "eoh", raw_header(MAXDATA + 2, b"B"))
case("len-2MiB", "eoh", raw_header(2 << 20, b"B"))
case("len-7fffffff", "eoh", raw_header(0x7FFFFFFF, b"B"))
case("len-7fffffff-fresh", "fresh", raw_header(0x7FFFFFFF, b"O"))
case("len-80000000", "connect", raw_header(0x80000000, b"H"))


@case_fn("len-at-max-accepted")
def _(c):
    """A body chunk of exactly Maxdatasize bytes is taken; one more is not."""
    to_stage(c, "eoh")
    c.send(packet("B", b"x" * MAXDATA))
    assert c.outcome(QUIET)[0] == "silent"
    eom_ok(c)
    to_stage_mail_rcpt(c)
    c.eoh()
    c.send(packet("B", b"x" * (MAXDATA + 1)))
    expect_closed(c, "one byte over")


def to_stage_mail_rcpt(c):
    assert c.mail("<a@sender.test>")[0].cmd == mp.SMFIR_CONTINUE
    assert c.rcpt("<user@example.org>")[0].cmd == mp.SMFIR_CONTINUE


@case_fn("len-above-1MiB-with-MDS_1M-offered")
def _(c):
    """The MTA offers 1 MB packets: a length past 1 MiB is still refused."""
    c.optneg(protocol=mp.POSTFIX_PROTOCOL | mp.SMFIP_MDS_1M)
    assert c.connect("client.test", CLIENT_IP)[0].cmd == mp.SMFIR_CONTINUE
    to_stage_mail_rcpt(c)
    c.eoh()
    c.send(raw_header((1 << 20) + 2, b"B"))
    expect_closed(c, "1 MiB + 1")


# strings without NUL, short and odd CONNECT data
case("connect-no-nul", "optneg", packet("C", b"hostname-without-nul"))
case("connect-host-only", "optneg", packet("C", b"client.test\0"))
case("connect-unknown-family", "optneg", packet("C", b"h\0X\x00\x19127.0.0.1\0"))
case("connect-family-nul", "optneg", packet("C", b"h\0\0\x00\x19127.0.0.1\0"))
case("connect-truncated-port", "optneg", packet("C", b"h\x004\x00"))
case("connect-port-no-address", "optneg", packet("C", b"h\x004\x00\x19"))
case("connect-address-no-nul", "optneg", packet("C", b"h\x004\x00\x19127.0.0.1"))
case("connect-bad-ipv4", "optneg", packet("C", connect_data("h", "999.1.1.1")))
case("connect-bad-ipv6", "optneg", packet("C", connect_data("h", "zz::1", family="6")))
case("connect-family-unknown", "optneg", packet("C", b"h\0U"), b"c")
case("connect-family-unix", "optneg", packet("C", connect_data("h", "/tmp/x", family="L")), b"c")
case("connect-ipv6", "optneg", packet("C", connect_data("h", "::1", family="6")), b"c")
case("connect-long-name", "optneg", packet("C", connect_data("h" * 60000, CLIENT_IP)), b"c")
case("helo-no-nul", "connect", packet("H", b"helo-without-nul"), "ignored")
case("mail-no-nul", "connect", packet("M", b"<a@sender.test>"))
case("rcpt-no-nul", "mail", packet("R", b"<user@example.org>"))
case("header-no-nul", "rcpt", packet("L", b"Subject\0value"))
case("header-one-string", "rcpt", packet("L", b"Subject\0"))
case("header-empty-name", "rcpt", packet("L", b"\0value\0"))
case("mail-long-args", "connect", packet("M", b"<a@sender.test>\0" + b"X=y\0" * 10000), b"c")


@case_fn("header-and-body-binary")
def _(c):
    """8-bit, CR, LF and NUL bytes in header values and the body; a header
    value near the maximum packet size."""
    to_stage(c, "rcpt")
    c.header("From", "<a@sender.test>")
    c.header("X-Bin", "\xff\xfe\r\n\t x\x01")
    c.header("X-Long", "a" * (MAXDATA - 20))
    c.send(packet("L", b"X-Empty\0\0"))
    c.eoh()
    c.body(b"\0\0\xff\r\n.\r\n\r")
    eom_ok(c)


# macros
case("macro-unknown-command", "connect", packet("D", b"Zfoo\0bar\0"), "ignored")
case("macro-only-command", "connect", packet("D", b"C"), "ignored")
case("macro-no-nul", "connect", packet("D", b"Cfoo"), "ignored")
case("macro-nul-command", "connect", packet("D", b"\0{a}\0b\0"), "ignored")


@case_fn("macro-10000-pairs")
def _(c):
    """10,000 macros in one packet for CONNECT, MAIL and the end of message."""
    c.optneg()
    pairs = [("%x" % i, "") for i in range(10000)]       # short: one packet is at most 64 KiB
    assert len(mp.macro_data("C", pairs)) < MAXDATA - 100
    c.macros("C", pairs + [("{daemon_port}", "25"), ("{client_addr}", CLIENT_IP)])
    assert c.connect("client.test", CLIENT_IP)[0].cmd == mp.SMFIR_CONTINUE
    c.macros("M", pairs + [("i", "ABC123"), ("{auth_authen}", "x" * 1000)])
    assert c.mail("<a@sender.test>")[0].cmd == mp.SMFIR_CONTINUE
    assert c.rcpt("<user@example.org>")[0].cmd == mp.SMFIR_CONTINUE
    c.header("From", "<a@sender.test>")
    c.eoh()
    c.macros("E", pairs)
    eom_ok(c)


case("macro-over-max", "connect",
     packet("D", mp.macro_data("C", [("{m%d}" % i, "v%d" % i) for i in range(10000)])))


@case_fn("macro-flood")
def _(c):
    """2,000 macro packets in a row, each replacing the last."""
    c.optneg()
    c.send(b"".join(packet("D", mp.macro_data("C", [("{x}", "%d" % i), ("{y}", "z" * 100)]))
                    for i in range(2000)))
    assert c.connect("client.test", CLIENT_IP)[0].cmd == mp.SMFIR_CONTINUE


@case_fn("macro-hostile-values")
def _(c):
    """Macro values moat reads, made hostile: CR LF, 8-bit, %, huge, and an
    address macro that is no address."""
    c.optneg()
    c.macros("C", [("{client_addr}", "IPv6:not-an-address\r\n"), ("{daemon_port}", "587\0x"),
                   ("{daemon_name}", "%s%n%x" * 100)])
    assert c.connect("client.test", "", family="U")[0].cmd == mp.SMFIR_CONTINUE
    c.macros("H", [("{tls_version}", "\xff" * 3000), ("{cipher}", "%%%\r\n"),
                   ("{cert_subject}", "x" * 40000)])
    assert c.helo("client.test")[0].cmd == mp.SMFIR_CONTINUE
    c.macros("M", [("{auth_authen}", "a\r\nb%s" * 500), ("i", "Q" * 1000)])
    assert c.mail("<a@sender.test>")[0].cmd == mp.SMFIR_CONTINUE


# unknown command letters
for ch in (b"z", b"X", b"\0", b"\xff", b"c", b"a", b"y", b"h", b"~"):
    case("unknown-command-%02x" % ch[0], "connect", packet(ch, b"abc\0"))
case("unknown-smtp-command-U", "connect", packet("U", b"XYZZY arg\0"), b"c")
case("data-command-T", "rcpt", packet("T"), b"c")


@case_fn("quit-new-connection-K")
def _(c):
    """QUIT_NC ('K'): the same socket carries a second SMTP connection."""
    to_stage(c, "eoh")
    eom_ok(c)
    c.send(packet("K"))
    assert c.outcome(QUIET)[0] == "silent"
    assert c.connect("second.test", "127.0.0.8")[0].cmd == mp.SMFIR_CONTINUE
    to_stage_mail_rcpt(c)
    c.header("From", "<a@sender.test>")
    c.eoh()
    eom_ok(c)


# OPTNEG
def optneg_case(name, version, actions=mp.ALL_ACTIONS, protocol=mp.POSTFIX_PROTOCOL,
                ok=True, want_version=6, data=None):
    @case_fn(name)
    def _(c):
        c.send(packet("O", data if data is not None else optneg_data(version, actions, protocol)))
        if not ok:
            expect_closed(c, name)
            return
        r = expect_reply(c, b"O", name)
        v, a, p = struct.unpack(">III", r.data[:12])
        assert v == want_version, (name, v)
        assert a & ~(actions or mp.SMFIF_ADDHDRS) == 0, (name, hex(a))   # never more than offered
        assert p & ~(protocol or 0x7F) == 0, (name, hex(p))
        c.proto = p
        assert c.connect("client.test", CLIENT_IP)[0].cmd == mp.SMFIR_CONTINUE


optneg_case("optneg-version-0", 0, ok=False)
optneg_case("optneg-version-1", 1, ok=False)
optneg_case("optneg-version-2", 2, want_version=2)
optneg_case("optneg-version-99", 99)
optneg_case("optneg-version-ffffffff", 0xFFFFFFFF, ok=False)
optneg_case("optneg-all-bits", 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, ok=False)
optneg_case("optneg-v6-all-flag-bits", 6, 0xFFFFFFFF, 0xFFFFFFFF)
optneg_case("optneg-v99-all-flag-bits", 99, 0xFFFFFFFF, 0xFFFFFFFF)
optneg_case("optneg-no-flags", 6, 0, 0)
optneg_case("optneg-short", 6, data=b"\0\0\0\6", ok=False)
optneg_case("optneg-trailing-garbage", 6, data=optneg_data() + b"\xff" * 1000)


# commands out of order
case("body-before-mail", "connect", packet("B", b"hello\r\n"), "ignored")
case("eom-without-mail", "connect", packet("E"), "ignored")
case("eom-without-mail-after-helo", "helo", packet("E"), "ignored")
case("rcpt-before-mail", "helo", packet("R", b"<user@example.org>\0"), "ignored")
case("header-before-mail", "helo", packet("L", b"Subject\0 x\0"), "ignored")
case("eoh-before-mail", "connect", packet("N"), "ignored")
case("connect-twice", "connect", packet("C", connect_data("again.test", "127.0.0.9")), "ignored")
case("optneg-twice", "rcpt", packet("O", optneg_data()), "ignored")
# libmilter takes a command it cannot reach as if from HELO; no CONNECT was
# seen, so the answer is the no-connect tempfail
case("helo-before-optneg", "fresh", packet("H", b"x\0"), b"y")
case("mail-inside-message", "eoh", packet("M", b"<b@sender.test>\0"), b"c")
case("helo-inside-transaction", "rcpt", packet("H", b"again.test\0"), b"c")


@case_fn("header-after-eoh")
def _(c):
    """A header after the end of headers aborts the message (libmilter);
    the EOM that follows is ignored, a new MAIL works."""
    to_stage(c, "eoh")
    c.send(packet("L", b"Subject\0 late\0"))
    assert c.outcome(QUIET)[0] == "silent"
    c.send(packet("E"))
    assert c.outcome(QUIET)[0] == "silent"
    to_stage_mail_rcpt(c)
    c.header("From", "<a@sender.test>")
    c.eoh()
    eom_ok(c)


@case_fn("abort-before-connect")
def _(c):
    """ABORT right after OPTNEG: ignored; libmilter then ignores CONNECT too
    (its state is reset to HELO), so MAIL gets the no-connect tempfail."""
    c.optneg()
    c.send(packet("A") * 100)
    expect_failclosed(c, "abort-before-connect")


# ABORT storms
@case_fn("abort-storm-in-transaction")
def _(c):
    to_stage(c, "rcpt")
    c.send(packet("A") * 5000)
    assert c.outcome(QUIET)[0] == "silent"
    to_stage_mail_rcpt(c)
    c.header("From", "<a@sender.test>")
    c.eoh()
    eom_ok(c)


@case_fn("abort-storm-in-body")
def _(c):
    to_stage(c, "eoh")
    c.body(b"x" * 1000)
    c.send(packet("A") * 5000)
    expect_ignored(c, "abort storm in body")


@case_fn("mail-abort-storm")
def _(c):
    """1,000 MAIL/ABORT pairs pipelined: 1,000 continues, then a message."""
    to_stage(c, "helo")
    c.send((packet("M", b"<a@sender.test>\0") + packet("A")) * 1000)
    n = 0
    for _ in range(1000):
        r, _m = c.reply(10)
        n += r.cmd == mp.SMFIR_CONTINUE
    assert n == 1000
    to_stage_mail_rcpt(c)
    c.header("From", "<a@sender.test>")
    c.eoh()
    eom_ok(c)


# closed mid-packet (by the MTA side)
def close_case(name, stage, send):
    @case_fn(name)
    def _(c):
        to_stage(c, stage)
        if send:
            c.send(send)
        time.sleep(0.02)
        c.close()


close_case("close-2-length-bytes", "fresh", b"\0\0")
close_case("close-length-no-command", "optneg", b"\0\0\0\x10")
close_case("close-mid-connect", "optneg", packet("C", connect_data("h", CLIENT_IP))[:9])
close_case("close-mid-mail", "connect", packet("M", b"<a@sender.test>\0")[:8])
close_case("close-mid-body", "eoh", raw_header(1001, b"B") + b"x" * 10)
close_case("close-mid-header", "rcpt", raw_header(100, b"L") + b"Subj")
close_case("close-in-transaction", "rcpt", b"")
close_case("close-after-eoh", "eoh", packet("B", b"x" * 100))
close_case("close-no-quit-after-connect", "connect", b"")


@pytest.mark.parametrize("name", list(CASES))
def test_hostile(name, raw_milter):
    """MLT-02: one hostile case on its own connection; moat-milter survives
    it and still answers a normal transaction."""
    with MilterClient(raw_milter.port, timeout=10) as c:
        CASES[name](c)
    raw_milter.check_alive(name)
    check_transaction(raw_milter.port)
    raw_milter.check_alive(name)


# ---------------------------------------------------------------------------
# odd macro lists: each on a milter of its own (the first crashes it today)

ODD_MACROS = {
    # name: (macro strings for CONNECT, family)
    "odd-1-string": (["{foo}"], "4"),
    "odd-1-string-client_addr": (["{client_addr}"], "U"),
    "odd-3-strings": (["{a}", "1", "{b}"], "4"),
    "odd-10001-strings": (["%x" % i for i in range(10001)], "4"),
}
# strict in the ASan build only: without ASan the read past the array
# usually finds a NULL or a readable pointer and nothing shows
ODD_STRICT = asan_build()
LIBMILTER_ODD_MACROS = (
    "libmilter smfi_getsymval() walks name/value pairs two at a time past the "
    "NULL that ends an odd macro list (reads one pointer past dec_argv's array); "
    "with one string the ASan build dies in strcmp (SEGV) at the first "
    "smfi_getsymval of cb_connect; the release build dies (SIGSEGV) when the "
    "same one-string list is sent for MAIL")


@pytest.mark.parametrize("name", [
    pytest.param("odd-1-string",
                 marks=pytest.mark.xfail(strict=ODD_STRICT, reason=LIBMILTER_ODD_MACROS)),
    pytest.param("odd-1-string-client_addr",
                 marks=pytest.mark.xfail(strict=ODD_STRICT, reason=LIBMILTER_ODD_MACROS)),
    # the same bug; whether the pointer read past the array is NULL depends
    # on the heap layout of the build (odd-3 crashed one ASan build, not another)
    pytest.param("odd-3-strings", marks=pytest.mark.xfail(strict=False, reason=LIBMILTER_ODD_MACROS)),
    pytest.param("odd-10001-strings",
                 marks=pytest.mark.xfail(strict=False, reason=LIBMILTER_ODD_MACROS)),
])
def test_odd_macro_list(name, milter_factory):
    """MLT-02: a macro packet with an odd number of strings (a name without
    its value), then CONNECT, MAIL and the end of message. Expected: sane
    replies, moat-milter alive, clean exit, no sanitizer report."""
    m = milter_factory()
    strings, family = ODD_MACROS[name]
    with MilterClient(m.port, timeout=10) as c:
        c.optneg()
        c.macros("C", strings)
        try:
            r, _ = c.connect("client.test", CLIENT_IP if family == "4" else "", family=family)
            assert r.cmd == mp.SMFIR_CONTINUE, r
            c.macros("M", strings)
            to_stage_mail_rcpt(c)
            c.header("From", "<%s>" % sender)
            c.eoh()
            c.macros("E", strings)
            eom_ok(c)
        except (mp.MilterClosed, mp.MilterTimeout) as e:
            raise AssertionError("%s: connection lost (%r); log tail:\n%s"
                                 % (name, e, m.log()[-3000:]))
    time.sleep(0.1)
    m.check_alive(name)
    check_transaction(m.port)
    problems = check_stopped_clean(m)
    assert not problems, "\n".join(problems) + "\nlog tail:\n" + m.log()[-3000:]


# ---------------------------------------------------------------------------
# memory back to baseline, per-connection state freed

WARMUP = 150
ROUNDS = 3
WORKERS = 4
RSS_GROWTH_KIB = 8 * 1024


def warm_up(port, n):
    for i in range(n):
        check_transaction(port, subject="warm-%d" % i)


def all_cases(port):
    """Every hostile case once, WORKERS connections at a time."""
    names = list(CASES)
    errors = []

    def worker(k):
        for name in names[k::WORKERS]:
            try:
                with MilterClient(port, timeout=10) as c:
                    CASES[name](c)
            except Exception as e:      # reported below
                errors.append((name, repr(e)))

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(WORKERS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts), "hostile cases still running after 60 s"
    assert not errors, errors[:10]


def test_memory_back_to_baseline(raw_milter):
    """MLT-02: memory back to baseline, per-connection state freed. The
    baseline is VmRSS once warmed up (one round of every hostile case and
    WARMUP transactions: ASan's 4 MiB quarantine full, libmilter's worker
    threads started); ROUNDS more rounds and the same transactions (~600
    connections) may grow it by less than RSS_GROWTH_KIB. Measured: VmRSS
    varies by up to ~3 MiB around a flat line over 12 rounds, so 8 MiB
    leaves room for that and still fails on ~14 KiB kept per connection or
    one kept 64 KiB packet buffer per case round; smaller leaks of
    unreachable memory are LeakSanitizer's to report at exit
    (test_zz_stop_clean). Every connection that reached "connect" has its
    "disconnect" line.
    """
    m = raw_milter
    all_cases(m.port)
    warm_up(m.port, WARMUP)
    base = m.rss_kib()
    for r in range(ROUNDS):
        all_cases(m.port)
        m.check_alive("round %d" % r)
    warm_up(m.port, WARMUP)
    # connections the cases closed from our side end in libmilter a little later
    harness.wait_for(lambda: m.conn_counts()[0] == m.conn_counts()[1], 10)
    after = m.rss_kib()
    print("VmRSS baseline %d KiB, after %d x %d hostile cases and %d transactions: %d KiB (%+d)"
          % (base, ROUNDS, len(CASES), WARMUP, after, after - base))
    connects, disconnects = m.conn_counts()
    assert connects == disconnects, (connects, disconnects)
    assert connects >= ROUNDS * len(CASES) // 2 + 2 * WARMUP, connects
    assert after - base < RSS_GROWTH_KIB, (base, after)


# ---------------------------------------------------------------------------
# MLT-06: many MTA connections at once

PARALLEL = 200
PARALLEL_DEADLINE = 30.0
THREAD_SLACK = 32


def run_parallel(port, n, deadline, sample=None):
    """n transactions at once (all connected before any starts); the results,
    any exceptions, the wall time and the most threads seen."""
    results = [None] * n
    errors = []
    barrier = threading.Barrier(n + 1)
    peak = [0]

    def one(i):
        try:
            results[i] = transaction(port, subject="par-%d" % i, timeout=deadline,
                                     barrier=barrier)
        except Exception as e:      # reported below
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    barrier.wait(deadline)
    t0 = time.monotonic()
    end = t0 + deadline
    while time.monotonic() < end and any(t.is_alive() for t in ts):
        if sample is not None:
            try:
                peak[0] = max(peak[0], sample())
            except (OSError, AssertionError):
                pass
        time.sleep(0.02)
    took = time.monotonic() - t0
    for t in ts:
        t.join(max(0.1, end - time.monotonic()))
    hung = sum(t.is_alive() for t in ts)
    return results, errors, took, peak[0], hung


def test_parallel_200(raw_milter):
    """MLT-06: 200 MTA connections at once, each a full transaction: all get
    the right answers within PARALLEL_DEADLINE; libmilter's threads stay
    within max-connections (256, mlt_opts.max_conns) plus the idle threads
    plus THREAD_SLACK. libmilter's worker pool has no cap of its own: a
    worker is started whenever a command arrives and none is idle, and
    finished workers linger up to 10 s, so the peak varies (seen: 79 to 241
    threads for these 200 connections, 15 idle)."""
    m = raw_milter
    mx = int(re.search(r"max-connections=(\d+)", m.log()).group(1))
    idle = m.threads()
    results, errors, took, peak, hung = run_parallel(m.port, PARALLEL, PARALLEL_DEADLINE,
                                                     m.threads)
    print("%d parallel transactions: %.2f s, threads idle %d, peak %d (max-connections %d)"
          % (PARALLEL, took, idle, peak, mx))
    assert not hung, "%d transactions still running after %.0f s" % (hung, PARALLEL_DEADLINE)
    assert not errors, errors[:10]
    bad = [r for r in results if r is None or {k: v for k, v in r.items() if k != "proto"}
           != expected_ok()]
    assert not bad, bad[:5]
    assert took < PARALLEL_DEADLINE
    assert 0 < peak <= mx + idle + THREAD_SLACK, (peak, idle, mx)
    m.check_alive("parallel")
    # the threads go back to the pool: no thread per past connection is kept
    assert harness.wait_for(lambda: m.threads() <= idle + 16, 25), (m.threads(), idle)


def test_over_max_connections_tempfail(milter_factory):
    """MLT-06: with -c 20, 40 connections held open at once: 20 are served,
    the other 20 get 421 4.7.0 at HELO (the first step that can carry a
    reply), and MAIL too, at once, never a hang; once they are gone a new
    connection is served again."""
    m = milter_factory(args=["-c", "20"])
    assert "max-connections=20 " in m.log()
    conns = []
    try:
        for i in range(40):
            c = MilterClient(m.port, timeout=10)
            conns.append(c)
            c.optneg()
            r, _ = c.connect("client.test", CLIENT_IP)
            assert r.cmd == mp.SMFIR_CONTINUE, (i, r)        # no reply text at connect
        t0 = time.monotonic()
        answers = []
        for c in conns:
            r, _ = c.helo("client.test", timeout=10)
            answers.append((r.cmd, r.text()))
        took = time.monotonic() - t0
        over = (b"y", "421 4.7.0 Error: too many connections to the policy service, try again later")
        assert answers[:20] == [(b"c", "")] * 20, answers[:20]
        assert answers[20:] == [over] * 20, answers[20:]
        assert took < 10, took
        for c in conns[20:]:
            r, _ = c.mail("<a@sender.test>", timeout=10)
            assert (r.cmd, r.text()) == over
    finally:
        for c in conns:
            c.close()
    log = m.log()
    assert log.count("tempfail stage=connect reason=max-connections max=20") == 20, log[-3000:]
    assert harness.wait_for(lambda: m.conn_counts() == (20, 20), 10), m.conn_counts()
    check_transaction(m.port)           # the count went back down
    problems = check_stopped_clean(m)
    assert not problems, "\n".join(problems) + "\nlog tail:\n" + m.log()[-3000:]


STALLED = 100
OVER_BUDGET = (
    "finding: -c (mlt_opts.max_conns) only refuses service (421 at HELO); "
    "libmilter (Debian's build has _FFR_WORKERS_POOL) gives a connection whose "
    "command has started to arrive a worker thread of its own, and one that "
    "stops mid-packet keeps it for smfi_settimeout (60 s): %d stalled "
    "connections against -c 20 held %d threads (idle %d). How many get a "
    "thread varies from run to run (seen: 2 to 98 of 100)")


def test_threads_stalled_connections(milter_factory):
    """MLT-06: 100 connections (OPTNEG, CONNECT, then the first 5 bytes of a
    HELO packet, the rest never sent) against -c 20. At most one libmilter
    thread per connection (+ THREAD_SLACK) is held; when they close, the
    threads go back and a normal transaction works. The budget of -c 20 + a small constant is
    not enforced by anything: when more threads are held the test is
    marked xfail with the numbers (see OVER_BUDGET)."""
    m = milter_factory(args=["-c", "20"])
    idle = m.threads()
    conns = []
    try:
        for i in range(STALLED):
            c = MilterClient(m.port, timeout=10)
            conns.append(c)
            c.optneg()
            assert c.connect("client.test", CLIENT_IP)[0].cmd == mp.SMFIR_CONTINUE
        for c in conns:
            c.send(raw_header(100, b"H"))            # the rest never comes
        time.sleep(0.5)
        held = m.threads()
    finally:
        for c in conns:
            c.close()
    print("%d stalled connections against -c 20: threads idle %d, held %d" % (STALLED, idle, held))
    assert held <= STALLED + idle + THREAD_SLACK, (held, idle)
    assert harness.wait_for(lambda: m.threads() <= idle + 16, 25), (m.threads(), idle)
    m.check_alive("stalled connections")
    check_transaction(m.port)
    problems = check_stopped_clean(m)
    assert not problems, "\n".join(problems) + "\nlog tail:\n" + m.log()[-3000:]
    if held > 20 + idle + 16:
        pytest.xfail(OVER_BUDGET % (STALLED, held, idle))


def listen_backlog(port):
    """The backlog of the listening socket on 127.0.0.1:port as ss(8) shows
    it (Send-Q of a LISTEN socket), or None without ss."""
    try:
        out = subprocess.run(["ss", "-ltnH", "sport = :%d" % port], capture_output=True,
                             text=True, timeout=10).stdout
    except FileNotFoundError:
        return None
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LISTEN" and f[3].endswith(":%d" % port):
            return int(f[2])
    raise AssertionError("no LISTEN socket on port %d in ss output: %r" % (port, out))


def test_listen_settings_visible(raw_milter):
    """MLT-06, smfi_setbacklog and the connection limit as a user sees them:
    the ready line names max-connections and the deadline, ss(8) shows the
    listening socket's backlog of 128 (or net.core.somaxconn if lower),
    and 150 connections opened at once without a word are all accepted and
    each answers an OPTNEG. The idle timeout (smfi_settimeout(60)) has no
    command-line option to shorten it: not tested here."""
    m = raw_milter
    assert re.search(r"ready socket=inet:%d@127\.0\.0\.1 max-connections=256 deadline-ms=20000 "
                     % m.port, m.log()), m.log()[:2000]
    backlog = listen_backlog(m.port)
    if backlog is not None:
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        assert backlog == min(128, somaxconn), backlog
    socks = []
    try:
        for _ in range(150):
            socks.append(socket.create_connection((LOOPBACK, m.port), timeout=5))
        for s in socks:
            s.sendall(packet("O", optneg_data()))
        for s in socks:
            s.settimeout(10)
            hdr = s.recv(5, socket.MSG_WAITALL)
            assert len(hdr) == 5 and hdr[4:5] == b"O", hdr
    finally:
        for s in socks:
            s.close()
    m.check_alive("150 idle connections")
    check_transaction(m.port)


# ---------------------------------------------------------------------------

def test_zz_stop_clean(raw_milter):
    """After everything above: a normal transaction still works, SIGTERM
    makes moat-milter exit 0, no sanitizer report in its log, and every
    connect line has its disconnect line."""
    m = raw_milter
    check_transaction(m.port)
    harness.wait_for(lambda: m.conn_counts()[0] == m.conn_counts()[1], 10)
    counts = m.conn_counts()
    problems = check_stopped_clean(m)
    assert not problems, "\n".join(problems) + "\nlog tail:\n" + m.log()[-4000:]
    assert counts[0] == counts[1] and counts[0] > 0, counts
    assert "info: stopped" in m.log()


# ---------------------------------------------------------------------------
# the verdict line (issue 15) at the other ends of a transaction: one
# verdict=abandoned line each, as from moatd

@pytest.mark.timeout(60)
@pytest.mark.parametrize("end", ["abort", "abort-in-body", "abort-then-new-mail", "close"])
def test_transaction_ended_by_the_mta_gets_one_line(milter_factory, end):
    m = milter_factory()
    with MilterClient(m.port, timeout=10) as c:
        to_stage(c, "rcpt")
        if end == "abort-in-body":
            c.header("Subject", "half")
            c.eoh()
            c.body(b"half a messa")
        if end != "close":
            c.abort()
        if end == "abort-then-new-mail":
            r, _ = c.mail("<b@sender.test>")       # no recipient: no line of its own
            assert r.cmd == mp.SMFIR_CONTINUE, r
        if end != "close":
            c.quit()
    def vlines():
        return [l for l in m.log().splitlines() if "verdict=" in l and " by=" in l]
    harness.wait_for(lambda: vlines(), 10)
    time.sleep(0.5)     # a second line would come at once
    lines = vlines()
    assert len(lines) == 1, lines
    assert "from=<a@sender.test> to=<user@example.org>:passed code=-" in lines[0], lines


# ---------------------------------------------------------------------------
# at log-level info: no connect line; one disconnect line per connection,
# from the engine thread after the connection's verdict lines, with the
# client and helo as those name them, why it ended, messages, time and the
# MTA's name for the client

@pytest.mark.timeout(60)
def test_info_disconnect_line(milter_factory):
    m = milter_factory(log_level="info")
    check_transaction(m.port)
    with MilterClient(m.port, timeout=10) as c:      # no transaction
        to_stage(c, "helo")
        c.quit()
    harness.wait_for(lambda: m.log().count(" disconnect client=") >= 2, 10)
    log = m.log()
    assert " connect client=" not in log and "message size=" not in log, log[-3000:]
    heads = re.findall(r"^moat-milter\[\d+\]: info: ([0-9a-f]{16}) (\S+)(.*)$", log, re.M)
    by_sid = {}
    for sid, word, rest in heads:
        if word not in ("check", "policy"):   # a check's or a rule's detail (add-header)
            by_sid.setdefault(sid, []).append(word + rest)
    sessions = list(by_sid.values())
    assert len(sessions) == 2, sessions
    first, second = sessions
    assert len(first) == 2 and first[0].startswith("verdict=accept ") and \
        first[1].startswith("disconnect "), first
    who = re.search(r" (client=\S+ helo=<[^>]*>)", first[0]).group(1)
    assert who.startswith("client=unknown[%s]:" % CLIENT_IP), who
    assert re.fullmatch(r"disconnect %s reason=close messages=1 time=\d+\.\d{3} "
                        r'name="client\.test"' % re.escape(who), first[1]), first[1]
    assert len(second) == 1 and re.fullmatch(
        r"disconnect client=unknown\[%s\]:\d+ helo=<client\.test> reason=close messages=0 "
        r'time=\d+\.\d{3} name="client\.test"' % re.escape(CLIENT_IP), second[0]), second
    problems = check_stopped_clean(m)
    assert not problems, problems
