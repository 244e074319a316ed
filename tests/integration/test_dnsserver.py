"""Tests for the loopback DNS test server (dnsserver.py), via dnslib's client."""

import socket
import threading
import time

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from dnsserver import DnsServer

T = 1.0  # client timeout, seconds


@pytest.fixture
def dns():
    srv = DnsServer(zones=["example.test", "dnsbl.test", "in-addr.arpa"])
    srv.start()
    yield srv
    srv.stop()


def ask(srv, name, qtype="A", tcp=False, timeout=T, raw=False):
    data = DNSRecord.question(name, qtype).send(srv.host, srv.port, tcp=tcp, timeout=timeout)
    return data if raw else DNSRecord.parse(data)


def rdatas(reply, qtype):
    return [rr.rdata for rr in reply.rr if rr.rtype == getattr(QTYPE, qtype)]


@pytest.mark.timeout(10)
def test_address_and_loopback_only(dns):
    assert dns.address == "127.0.0.1@%d" % dns.port and dns.port > 0
    with pytest.raises(ValueError):
        DnsServer(host="0.0.0.0")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tcp", [False, True])
def test_a_aaaa_mx_ptr(dns, tcp):
    dns.add("mail.example.test", "A", "192.0.2.1")
    dns.add("mail.example.test", "A", "192.0.2.2", ttl=300)
    dns.add("mail.example.test", "AAAA", "2001:db8::1")
    dns.add("example.test", "MX", (10, "mail.example.test"))
    dns.add("1.2.0.192.in-addr.arpa", "PTR", "mail.example.test")

    r = ask(dns, "mail.example.test", "A", tcp=tcp)
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert sorted(str(x) for x in rdatas(r, "A")) == ["192.0.2.1", "192.0.2.2"]
    assert sorted(rr.ttl for rr in r.rr) == [60, 300]

    r = ask(dns, "MAIL.Example.TEST.", "AAAA", tcp=tcp)   # case-insensitive
    assert [str(x) for x in rdatas(r, "AAAA")] == ["2001:db8::1"]

    r = ask(dns, "example.test", "MX", tcp=tcp)
    (mx,) = rdatas(r, "MX")
    assert mx.preference == 10 and str(mx.label) == "mail.example.test."

    r = ask(dns, "1.2.0.192.in-addr.arpa", "PTR", tcp=tcp)
    assert [str(x) for x in rdatas(r, "PTR")] == ["mail.example.test."]


@pytest.mark.timeout(10)
def test_txt_and_long_string_split(dns):
    dns.add("example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns.add("multi.example.test", "TXT", ["part one ", "part two"])
    dns.add("long.example.test", "TXT", "x" * 600)
    r = ask(dns, "example.test", "TXT")
    assert [x.data for x in rdatas(r, "TXT")] == [[b"v=spf1 ip4:192.0.2.0/24 -all"]]
    r = ask(dns, "multi.example.test", "TXT")
    assert [x.data for x in rdatas(r, "TXT")] == [[b"part one ", b"part two"]]
    r = ask(dns, "long.example.test", "TXT")
    (txt,) = rdatas(r, "TXT")
    assert [len(s) for s in txt.data] == [255, 255, 90]
    assert b"".join(txt.data) == b"x" * 600


@pytest.mark.timeout(10)
def test_cname_chased(dns):
    dns.add("alias.example.test", "CNAME", "mail.example.test")
    dns.add("mail.example.test", "A", "192.0.2.7")
    r = ask(dns, "alias.example.test", "A")
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["CNAME", "A"]
    assert str(r.rr[1].rdata) == "192.0.2.7"


@pytest.mark.timeout(10)
def test_nxdomain_vs_nodata_vs_refused(dns):
    dns.add("a.b.example.test", "A", "192.0.2.1")
    r = ask(dns, "nope.example.test", "A")
    assert r.header.rcode == RCODE.NXDOMAIN and r.header.aa == 1 and not r.rr
    assert QTYPE[r.auth[0].rtype] == "SOA"                  # negative-caching SOA
    r = ask(dns, "a.b.example.test", "TXT")                 # NODATA
    assert r.header.rcode == RCODE.NOERROR and not r.rr and r.header.aa == 1
    r = ask(dns, "b.example.test", "A")                     # empty non-terminal
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    r = ask(dns, "other.zone", "A")                         # not ours
    assert r.header.rcode == RCODE.REFUSED and r.header.aa == 0
    with pytest.raises(ValueError):
        dns.add("other.zone", "A", "192.0.2.1")


@pytest.mark.timeout(10)
def test_rcodes(dns):
    dns.add("x.example.test", "A", "192.0.2.1")
    dns.add("x.example.test", "TXT", "t")
    dns.set_rcode("x.example.test", "TXT", "SERVFAIL")
    assert ask(dns, "x.example.test", "TXT").header.rcode == RCODE.SERVFAIL
    assert ask(dns, "x.example.test", "A").header.rcode == RCODE.NOERROR
    dns.set_rcode("x.example.test", rcode="REFUSED")
    r = ask(dns, "x.example.test", "A")
    assert r.header.rcode == RCODE.REFUSED and not r.rr
    dns.set_rcode("x.example.test", rcode="NXDOMAIN")
    assert ask(dns, "x.example.test", "A", tcp=True).header.rcode == RCODE.NXDOMAIN
    dns.set_rcode("x.example.test", rcode=None)
    assert ask(dns, "x.example.test", "A").header.rcode == RCODE.NOERROR


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tcp", [False, True])
def test_delay(dns, tcp):
    dns.add("slow.example.test", "A", "192.0.2.9")
    dns.add("fast.example.test", "A", "192.0.2.8")
    dns.set_delay("slow.example.test", 0.4)
    got = {}

    def slow():
        t0 = time.monotonic()
        r = ask(dns, "slow.example.test", tcp=tcp, timeout=3)
        got["slow"] = (time.monotonic() - t0, r)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    r = ask(dns, "fast.example.test", tcp=tcp)              # not blocked by the delay
    fast = time.monotonic() - t0
    th.join(5)
    elapsed, r2 = got["slow"]
    assert fast < 0.2 and str(r.rr[0].rdata) == "192.0.2.8"
    assert 0.38 <= elapsed < 1.5
    assert str(r2.rr[0].rdata) == "192.0.2.9"
    with pytest.raises(ValueError):
        dns.set_delay("slow.example.test", 3600)


@pytest.mark.timeout(10)
def test_default_delay(dns):
    dns.add("a.example.test", "A", "192.0.2.1")
    dns.add("b.example.test", "A", "192.0.2.2")
    dns.set_default_delay(0.3)
    dns.set_delay("b.example.test", 0.05)          # its own delay wins
    t0 = time.monotonic()
    r = ask(dns, "a.example.test", timeout=3)
    slow = time.monotonic() - t0
    assert 0.28 <= slow < 1.5 and str(r.rr[0].rdata) == "192.0.2.1"
    t0 = time.monotonic()
    r = ask(dns, "nothere.example.test", timeout=3)  # negative answers too
    assert time.monotonic() - t0 >= 0.28 and r.header.rcode == RCODE.NXDOMAIN
    t0 = time.monotonic()
    ask(dns, "b.example.test", timeout=3)
    assert time.monotonic() - t0 < 0.25
    dns.set_default_delay(0)
    t0 = time.monotonic()
    ask(dns, "a.example.test")
    assert time.monotonic() - t0 < 0.25
    with pytest.raises(ValueError):
        dns.set_default_delay(-1)


@pytest.mark.timeout(30)
def test_exists_index_follows_add_and_remove(dns):
    dns.add("x.y.example.test", "TXT", "v")
    dns.add("x.y.example.test", "A", "192.0.2.1")
    # y.example.test is an empty non-terminal: NODATA, not NXDOMAIN
    assert ask(dns, "y.example.test", "A").header.rcode == RCODE.NOERROR
    dns.remove("x.y.example.test", "TXT")
    assert ask(dns, "y.example.test", "A").header.rcode == RCODE.NOERROR
    dns.remove("x.y.example.test", "A")
    assert ask(dns, "y.example.test", "A").header.rcode == RCODE.NXDOMAIN
    assert ask(dns, "x.y.example.test", "A").header.rcode == RCODE.NXDOMAIN
    dns.add("x.y.example.test", "A", "192.0.2.1")
    dns.remove("x.y.example.test")
    assert ask(dns, "y.example.test", "A").header.rcode == RCODE.NXDOMAIN
    assert ask(dns, "example.test", "A").header.rcode == RCODE.NOERROR   # the apex
    # a large zone: 50,000 names; no answer walks all of them (the records
    # refuse to be iterated: a scan per NXDOMAIN would make the server the
    # bottleneck of a benchmark), and 200 NXDOMAIN answers come quickly
    for i in range(50000):
        dns.add("d%d.big.example.test" % i, "TXT", "v=spf1 -all")

    class NoScan(dict):
        def __iter__(self):
            raise AssertionError("scanned every record")

    with dns.lock:
        dns._records = NoScan(dns._records)
    t0 = time.monotonic()
    for i in range(200):
        assert ask(dns, "_dmarc.d%d.big.example.test" % i, "TXT").header.rcode == RCODE.NXDOMAIN
    assert time.monotonic() - t0 < 10
    assert ask(dns, "big.example.test", "TXT").header.rcode == RCODE.NOERROR
    dns.reset()
    assert ask(dns, "big.example.test", "TXT").header.rcode == RCODE.NXDOMAIN


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tcp", [False, True])
def test_drop_times_out(dns, tcp):
    dns.add("dead.example.test", "A", "192.0.2.1")
    dns.set_drop("dead.example.test")
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        ask(dns, "dead.example.test", tcp=tcp, timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    assert dns.queries("dead.example.test") == [("dead.example.test", "A", "tcp" if tcp else "udp")]


@pytest.mark.timeout(10)
def test_truncate_then_tcp(dns):
    dns.add("big.example.test", "TXT", "hello")
    dns.set_truncate("big.example.test")
    r = ask(dns, "big.example.test", "TXT")
    assert r.header.tc == 1 and not r.rr and r.header.rcode == RCODE.NOERROR
    r = ask(dns, "big.example.test", "TXT", tcp=True)
    assert r.header.tc == 0 and [x.data for x in rdatas(r, "TXT")] == [[b"hello"]]
    assert [p for (_n, _t, p) in dns.queries()] == ["udp", "tcp"]


@pytest.mark.timeout(10)
def test_60k_txt_over_tcp(dns):
    blob = bytes(ord("a") + i % 26 for i in range(60 * 1024))
    dns.add("huge.example.test", "TXT", blob.decode())
    r = ask(dns, "huge.example.test", "TXT", tcp=True, timeout=3)
    (txt,) = rdatas(r, "TXT")
    assert len(txt.data) == 241 and all(len(s) <= 255 for s in txt.data)
    assert b"".join(txt.data) == blob


@pytest.mark.timeout(10)
@pytest.mark.parametrize("tcp", [False, True])
def test_garbage(dns, tcp):
    junk = b"\x12\x34\xff\x00not dns at all\x00"
    dns.set_garbage("junk.example.test", junk)
    assert ask(dns, "junk.example.test", tcp=tcp, raw=True) == junk


@pytest.mark.timeout(10)
def test_query_log_and_reset(dns):
    dns.add("a.example.test", "A", "192.0.2.1")
    ask(dns, "A.Example.Test", "A")
    ask(dns, "a.example.test", "MX", tcp=True)
    ask(dns, "zz.example.test", "TXT")
    assert dns.queries() == [("a.example.test", "A", "udp"),
                             ("a.example.test", "MX", "tcp"),
                             ("zz.example.test", "TXT", "udp")]
    with dns.lock:
        assert len(dns.log) == 3
    dns.set_drop("a.example.test")
    dns.reset()
    assert dns.queries() == []
    r = ask(dns, "a.example.test", "A")                     # record and drop gone
    assert r.header.rcode == RCODE.NXDOMAIN


@pytest.mark.timeout(10)
def test_pipelined_tcp_queries(dns):
    dns.add("p.example.test", "A", "192.0.2.5")
    msgs = [DNSRecord.question("p.example.test", "A"), DNSRecord.question("q.example.test", "A")]
    wire = b"".join(len(m.pack()).to_bytes(2, "big") + m.pack() for m in msgs)
    with socket.create_connection((dns.host, dns.port), timeout=T) as s:
        s.sendall(wire)
        buf = b""
        out = []
        while len(out) < 2:
            buf += s.recv(4096)
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                n = int.from_bytes(buf[:2], "big")
                out.append(DNSRecord.parse(buf[2:2 + n]))
                buf = buf[2 + n:]
    assert [r.header.id for r in out] == [m.header.id for m in msgs]
    assert [r.header.rcode for r in out] == [RCODE.NOERROR, RCODE.NXDOMAIN]


@pytest.mark.timeout(10)
def test_start_stop_leaves_no_thread():
    before = set(threading.enumerate())
    srv = DnsServer()
    srv.start()
    srv.add("x.test", "A", "192.0.2.1")                     # zones=None: everything
    port = srv.port
    assert str(ask(srv, "x.test").rr[0].rdata) == "192.0.2.1"
    # a TCP client left connected and a pending delayed answer must not block stop()
    idle = socket.create_connection((srv.host, port), timeout=T)
    srv.set_delay("x.test", 5)
    q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    q.sendto(DNSRecord.question("x.test").pack(), (srv.host, port))
    time.sleep(0.05)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0
    idle.close()
    q.close()
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(OSError):                            # TCP port closed
        socket.create_connection((srv.host, port), timeout=T).close()


@pytest.mark.timeout(10)
def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = DnsServer(host="::1").start()
    except OSError:
        pytest.skip("::1 not available")
    try:
        srv.add("v6.test", "AAAA", "::1")
        assert srv.address == "::1@%d" % srv.port
        data = DNSRecord.question("v6.test", "AAAA").send("::1", srv.port, timeout=T, ipv6=True)
        assert str(DNSRecord.parse(data).rr[0].rdata) == "::1"
    finally:
        srv.stop()
