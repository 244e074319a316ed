"""Waits and DNS deadlines under faults (issue 22, findings 3 and 4).

- A stage waits only for the checks the rules it evaluates read, in
  order: with DNS down, a trusted client decided by the first rcpt rule
  is answered at once; a client that reaches a rule reading spf waits.
- dns-timeout means what it says: an answer that comes within it is used,
  however slow the server (libunbound's own timers must not drop it).
"""

import socket
import time

import pytest

import harness
import milterproto as mp
from harness import Client, free_port


class DeadDns:
    """A DNS "server" on loopback that never answers: a UDP socket nobody
    reads and a TCP listener nobody accepts on."""

    def __init__(self):
        # a UDP port whose TCP twin is free too: the TCP port may be held
        # by another test's connection, so try a few
        for _ in range(50):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        else:
            raise OSError("no UDP+TCP port pair free on 127.0.0.1")
        self.tcp.listen(1)
        self.resolver = "forward 127.0.0.1@%d" % self.port

    def close(self):
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def dead_dns():
    d = DeadDns()
    yield d
    d.close()


def rcpt_timed(m, source, rcpt="u@example.org", mfrom="a@sender.test"):
    """(seconds the RCPT took, its reply)"""
    with Client(m.port, m.host, source=source, timeout=20) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % mfrom).code == 250
        t0 = time.monotonic()
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        dt = time.monotonic() - t0
        c.cmd("QUIT")
    return dt, r


LAZY_RULES = ['rcpt client-ip in trusted accept',
              'rcpt spf is fail reject 550 5.7.23 "SPF fail"',
              'rcpt spf is temperror tempfail 451 4.7.24 "SPF temperror"']


@pytest.mark.timeout(60)
def test_lazy_wait_trusted_rcpt_does_not_wait_for_spf(fake, moatd_factory, dead_dns):
    """Finding 4: DNS down, `rcpt client-ip in trusted accept` first. The
    trusted client's RCPT is answered at once (no rule it reaches reads
    spf); another client reaches the spf rule and waits for SPF's
    deadline (spf-timeout), then the rule sees temperror."""
    m = moatd_factory(fake.address, resolver=dead_dns.resolver, spf="yes",
                      spf_timeout="3s", dns_timeout="1s",
                      list=["trusted net { 127.0.0.1 }"], on=LAZY_RULES)
    for i in range(3):
        dt, r = rcpt_timed(m, "127.0.0.1", rcpt="t%d@example.org" % i)
        assert r.code == 250, r
        assert dt < 1.0, "trusted RCPT %d waited %.2fs for SPF" % (i, dt)
    dt, r = rcpt_timed(m, "127.0.0.66")
    assert r.code == 451 and "SPF temperror" in r.text, r
    assert dt >= 2.5, "untrusted RCPT did not wait for SPF (%.2fs)" % dt


@pytest.mark.timeout(60)
def test_lazy_wait_milter(workdir, dead_dns):
    """Finding 4 through moat-milter (the same engine): the trusted
    client's RCPT is answered at once with DNS down; another client's
    RCPT waits for SPF's deadline and is tempfailed."""
    m = harness.MoatMilter(workdir, free_port(), resolver=dead_dns.resolver, spf="yes",
                           spf_timeout="3s", dns_timeout="1s",
                           list=["trusted net { 127.0.0.1 }"], on=LAZY_RULES).start()
    try:
        for ip, fast in (("127.0.0.1", True), ("127.0.0.66", False)):
            with mp.MilterClient(m.port, timeout=20) as c:
                c.optneg()
                c.macros("C", [("{client_addr}", ip), ("{daemon_port}", "25")])
                assert c.connect("client.test", ip)[0].cmd == mp.SMFIR_CONTINUE
                assert c.helo("client.test")[0].cmd == mp.SMFIR_CONTINUE
                assert c.mail("<a@sender.test>", timeout=20)[0].cmd == mp.SMFIR_CONTINUE
                t0 = time.monotonic()
                r = c.rcpt("<u@example.org>", timeout=20)[0]
                dt = time.monotonic() - t0
                if fast:
                    assert r.cmd == mp.SMFIR_CONTINUE, r
                    assert dt < 1.0, "trusted RCPT waited %.2fs for SPF" % dt
                else:
                    assert r.cmd == mp.SMFIR_REPLYCODE and b"4.7.24" in r.data, r
                    assert dt >= 2.5, "untrusted RCPT did not wait for SPF (%.2fs)" % dt
    finally:
        m.stop()


def rev(ip):
    return ".".join(reversed(ip.split(".")))


@pytest.mark.timeout(120)
def test_dns_timeout_means_what_it_says(fake, moatd_factory, dns):
    """Finding 3: with dns-timeout 5s, a DNSBL listing answered after 0.5,
    1, 2, 3 and 4 s refuses the client at connect (libunbound must not
    give up on the server and drop the late answer); one answered after
    6 s is a temporary error, and the client is greeted."""
    dns.add("2.0.0.127.bl.test", "A", "127.0.0.2", ttl=1)
    cases = [(0.5, "127.0.3.1"), (1, "127.0.3.2"), (2, "127.0.3.3"), (3, "127.0.3.4"),
             (4, "127.0.3.5"), (6, "127.0.3.6")]
    for delay, ip in cases:
        dns.add(rev(ip) + ".bl.test", "A", "127.0.0.2", ttl=1)
        dns.set_delay(rev(ip) + ".bl.test", delay)
    m = moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="5s",
                      dnsbl=["bl.test weight 5"], on=[
                          'connect dnsbl-score >= 5 reject 554 5.7.1 "listed"'])
    for delay, ip in cases:
        t0 = time.monotonic()
        with Client(m.port, m.host, source=ip, timeout=20) as c:
            dt = time.monotonic() - t0
            if delay < 5:
                assert c.greeting.code == 554, (delay, dt, c.greeting, m.log()[-2000:])
                assert dt >= delay - 0.1, (delay, dt)
            else:
                assert c.greeting.code == 220, (delay, dt, c.greeting)
                assert 4.5 <= dt < 9, (delay, dt)
