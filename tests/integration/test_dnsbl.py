"""Reputation at connect time: moat's resolver against a DNS server on
loopback, DNSBL/DNSWL/RHSBL zones, health probes, pregreet and the other
hygiene facts.

Clients connect from different 127.0.0.0/8 addresses so that each gets its
own DNSBL answer; the DNS server (dnsserver.py) serves the zones under
test. and counts the queries.
"""

import re
import subprocess
import threading
import time

import pytest

from harness import Client, ConnectionClosed, message, moatctl_path, smtp_transaction

BL = "bl.test"
WL = "wl.test"


def zone_points(dns, zone, listed="127.0.0.2"):
    """RFC 5782 test points: 127.0.0.2 listed, 127.0.0.1 not."""
    dns.add("2.0.0.127." + zone, "A", listed, ttl=1)


def rev(ip):
    return ".".join(reversed(ip.split(".")))


def wait_log(m, pattern, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, m.log())
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("no %r in the log within %.0fs:\n%s" % (pattern, timeout, m.log()[-3000:]))


REPUTATION_RULES = [
    'connect dnsbl-score >= 3 reject 554 5.7.1 "client [$ip] listed: $dnsbl ($dnsbl-reply)"',
    'connect dnsbl-error add-header X-DNSBL "error"',
    'connect dnsbl-score < 0 add-header X-DNSWL "$dnsbl"',
    'connect dnsbl-hit is bl.test and dnsbl-score < 3 add-header X-DNSBL-Low "$dnsbl"',
]


def test_zone_answer_table(fake, moatd_factory, dns):
    """Each client address gets its own answer from the zones; the reply,
    the headers the upstream received and the log show what moat made of
    it (DNS-12)."""
    zone_points(dns, BL)
    zone_points(dns, WL, "127.0.10.0")
    table = [
        # client      bl answer            wl answer     expected
        ("127.0.1.2", ("A", "127.0.0.2"), None, (554, None)),
        ("127.0.1.3", None, None, (250, None)),                       # NXDOMAIN
        ("127.0.1.4", ("A", "127.255.255.254"), None, (250, "X-DNSBL: error")),
        ("127.0.1.5", ("A", "10.0.0.2"), None, (250, "X-DNSBL: error")),
        ("127.0.1.6", "SERVFAIL", None, (250, "X-DNSBL: error")),
        ("127.0.1.7", ("A", "127.0.0.4"), ("A", "127.0.10.2"), (250, "X-DNSWL: bl.test,wl.test")),
        ("127.0.1.8", ("A", "127.0.0.20"), None, (250, None)),       # outside codes
        ("127.0.1.9", None, ("A", "127.0.10.3"), (250, "X-DNSWL: wl.test")),
        ("127.0.1.10", ("A", "127.0.0.11"), ("A", "127.0.10.3"), (250, "X-DNSWL: bl.test,wl.test")),
        ("127.0.1.12", ("A", "127.255.255.252"), None, (250, "X-DNSBL: error")),
        ("127.0.1.13", "DROP", None, (250, "X-DNSBL: error")),      # timeout
    ]
    for ip, bl, wl, _ in table:
        for zone, ans in ((BL, bl), (WL, wl)):
            name = rev(ip) + "." + zone
            if ans == "SERVFAIL":
                dns.set_rcode(name, rcode="SERVFAIL")
            elif ans == "DROP":
                dns.set_drop(name)
            elif ans:
                dns.add(name, ans[0], ans[1], ttl=1)
    m = moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="1s", dnsbl=[
        "bl.test weight 3 codes 127.0.0.2-127.0.0.11 {\n"
        "  code 127.0.0.2 weight 3 reply \"spam source\"\n"
        "  code 127.0.0.4-127.0.0.11 weight 2\n}",
    ], dnswl=["wl.test weight -3"], on=REPUTATION_RULES)
    n_ok = 0
    for ip, _, _, (code, header) in table:
        t0 = time.monotonic()
        with Client(m.port, m.host, source=ip, timeout=8) as c:
            assert c.greeting.code == (554 if code == 554 else 220), (ip, c.greeting)
            if code == 554:
                assert c.greeting.text == "5.7.1 client [%s] listed: bl.test (spam source)" % ip, \
                    c.greeting
                continue
            c.ehlo()
            rs = smtp_transaction(c, message("dnsbl " + ip))
            assert rs[-1].code == 250, (ip, rs)
            c.cmd("QUIT")
        n_ok += 1
        done = fake.wait_completed(n_ok)
        head = done[-1].content.split(b"\r\n\r\n")[0].decode()
        if header:
            assert header in head, (ip, head)
        else:
            assert "X-DNSBL" not in head and "X-DNSWL" not in head, (ip, head)
        assert time.monotonic() - t0 < 6, ip
    log = m.log()
    # the bad answers are errors, logged once per zone, never listings
    assert len(re.findall(r"dnsbl zone=bl.test error=bad-answer", log)) == 1, log[-3000:]
    assert re.search(r"check dnsbl zone=bl.test type=ip result=listed answer=127.0.0.2 weight=3", log)
    assert re.search(r"check dnsbl zone=bl.test type=ip result=temperror", log)
    assert "result=listed answer=127.255.255" not in log
    assert "result=listed answer=10.0.0.2" not in log


def test_slow_answer_delays_no_other_session(fake, moatd_factory, dns):
    """One client's answer never comes: that client's greeting waits for
    the 2 s deadline (then the error is not a listing), while other clients
    are greeted and relay mail at once. An answer that is slow but within
    the deadline counts."""
    zone_points(dns, BL)
    dns.set_drop(rev("127.0.0.20") + "." + BL)
    dns.add(rev("127.0.0.21") + "." + BL, "A", "127.0.0.2", ttl=1)
    dns.set_delay(rev("127.0.0.21") + "." + BL, 0.25)
    m = moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="2s",
                      dnsbl=["bl.test weight 5"], on=REPUTATION_RULES[:1])
    result = {}

    def slow():
        t0 = time.monotonic()
        with Client(m.port, m.host, source="127.0.0.20", timeout=10) as c:
            result["slow"] = (c.greeting.code, time.monotonic() - t0)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.2)
    fast = []
    for i in range(5):
        t0 = time.monotonic()
        with Client(m.port, m.host, source="127.0.0.%d" % (30 + i), timeout=5) as c:
            c.ehlo()
            rs = smtp_transaction(c, message("fast %d" % i))
            assert rs[-1].code == 250, rs
            c.cmd("QUIT")
        fast.append(time.monotonic() - t0)
    assert "slow" not in result, "the slow client finished before the fast ones"
    th.join(10)
    assert result["slow"][0] == 220 and result["slow"][1] >= 1.8, result
    assert max(fast) < 1.0, fast
    t0 = time.monotonic()
    with Client(m.port, m.host, source="127.0.0.21", timeout=5) as c:
        assert c.greeting.code == 554, c.greeting
    assert 0.2 < time.monotonic() - t0 < 1.5


def test_probe_disables_and_reenables_a_zone(fake, moatd_factory, dns):
    """RFC 5782 test points: a zone whose 127.0.0.2 is not listed, or that
    lists 127.0.0.1 too, is disabled with a log line and not queried; it
    is enabled again when the probe passes."""
    zone_points(dns, BL)
    listed = rev("127.0.0.40") + "." + BL
    dns.add(listed, "A", "127.0.0.2", ttl=0)
    m = moatd_factory(fake.address, resolver=dns.resolver, dnsbl_probe_interval="1s",
                      dns_negative_ttl="0",
                      dnsbl=["bl.test weight 5"], on=REPUTATION_RULES[:1])

    def greet():
        with Client(m.port, m.host, source="127.0.0.40", timeout=8) as c:
            return c.greeting.code

    assert greet() == 554
    dns.remove("2.0.0.127." + BL)               # the test point disappears
    wait_log(m, r"dnsbl zone=bl.test state=disabled reason=test-point-not-listed")
    dns.clear_log()
    assert greet() == 220                       # not asked while disabled
    assert dns.queries(listed) == [], dns.queries()
    zone_points(dns, BL)
    wait_log(m, r"dnsbl zone=bl.test state=enabled reason=probe-passed")
    assert greet() == 554
    dns.add("1.0.0.127." + BL, "A", "127.0.0.2", ttl=0)   # a list that lists everything
    wait_log(m, r"dnsbl zone=bl.test state=disabled reason=everything-listed")
    assert greet() == 220
    dns.remove("1.0.0.127." + BL)
    assert len(re.findall(r"state=enabled reason=probe-passed", m.log())) == 1


def test_rhsbl_helo_sender_and_client_name(fake, moatd_factory, dns):
    """RHSBL on the HELO name, the forward-confirmed client name and the
    sender domain, each with its own reply."""
    for z in ("helo.rhs.test", "name.rhs.test", "from.rhs.test"):
        dns.add("test." + z, "A", "127.0.0.2", ttl=1)
    dns.add("bad-helo.example.helo.rhs.test", "A", "127.0.0.2", ttl=1)
    dns.add("spammer.example.from.rhs.test", "A", "127.0.0.2", ttl=1)
    dns.add("dyn.pool.test.name.rhs.test", "A", "127.0.0.2", ttl=1)
    dns.add(rev("127.0.0.50") + ".in-addr.arpa", "PTR", "dyn.pool.test")
    dns.add("dyn.pool.test", "A", "127.0.0.50")
    m = moatd_factory(fake.address, resolver=dns.resolver, dnsbl=[
        "helo.rhs.test name helo-bl type helo",
        "name.rhs.test name name-bl type client-name",
        "from.rhs.test name from-bl type sender-domain",
    ], on=[
        'connect dnsbl-hit is name-bl reject 554 5.7.1 "your name $client-name is listed"',
        'helo dnsbl-hit is helo-bl reject 550 5.7.1 "HELO name listed"',
        'mail dnsbl-hit is from-bl reject 553 5.7.1 "sender domain $sender-domain listed"',
    ])
    with Client(m.port, m.host, source="127.0.0.50") as c:
        assert (c.greeting.code, c.greeting.text) == \
            (554, "5.7.1 your name dyn.pool.test is listed"), c.greeting
    with m.client() as c:
        r = c.cmd("EHLO bad-helo.example")
        assert (r.code, r.text) == (550, "5.7.1 HELO name listed"), r
        r = c.cmd("EHLO Good.Example")
        assert r.code == 250, r
        r = c.cmd("MAIL FROM:<x@spammer.example>")
        assert (r.code, r.text) == (553, "5.7.1 sender domain spammer.example listed"), r
        rs = smtp_transaction(c, message("rhsbl"), mfrom="x@fine.example")
        assert rs[-1].code == 250, rs
        r = c.cmd("EHLO [127.0.0.1]")           # an address literal is not looked up
        assert r.code == 250, r
        c.cmd("QUIT")
    names = [q[0] for q in dns.queries()]
    assert "good.example.helo.rhs.test" in names, names
    assert "fine.example.from.rhs.test" in names, names
    assert not any(n.startswith("[") or "127.0.0.1]" in n for n in names), names


def test_ipv6_client_in_nibble_form(fake, moatd_factory, dns):
    zone_points(dns, BL)
    nib = ".".join(["1"] + ["0"] * 31)          # ::1, nibbles reversed
    dns.add(nib + "." + BL, "A", "127.0.0.2", ttl=1)
    port6 = __import__("harness").free_port("::1")
    m = moatd_factory(fake.address, resolver=dns.resolver, listen=["[::1]:%d" % port6],
                      dnsbl=["bl.test weight 5"], on=REPUTATION_RULES[:1])
    with Client(port6, host="::1") as c:
        assert c.greeting.code == 554 and "client [::1] listed: bl.test" in c.greeting.text, \
            c.greeting
    assert dns.queries(nib + "." + BL), dns.queries()


def test_dqs_key_never_in_replies_or_logs(fake, moatd_factory, dns, workdir):
    key = "s3cr3tk3yabc"
    dns.add("2.0.0.127.%s.dq.test" % key, "A", "127.0.0.2", ttl=1)
    dns.add("%s.%s.dq.test" % (rev("127.0.0.60"), key), "A", "127.0.0.2", ttl=1)
    m = moatd_factory(fake.address, resolver=dns.resolver, log_level="debug",
                      dnsbl=['dq.test name spamhaus key %s reply "see $dnsbl"' % key],
                      on=['connect dnsbl-score >= 1 reject 554 5.7.1 "listed: $dnsbl $dnsbl-reply"'])
    with Client(m.port, m.host, source="127.0.0.60") as c:
        assert c.greeting.code == 554 and key not in c.greeting.raw.decode(), c.greeting
        assert "listed: spamhaus" in c.greeting.text, c.greeting
    assert dns.queries("%s.%s.dq.test" % (rev("127.0.0.60"), key))
    time.sleep(0.3)
    assert key not in m.log(), m.log()[-2000:]
    out = subprocess.run([moatctl_path(), "explain", str(m.conf_path), "--ip", "127.0.0.60"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "check dnsbl zone=spamhaus type=ip result=listed" in out.stdout, \
        out.stdout + out.stderr
    assert key not in out.stdout and key not in out.stderr


def test_explain_shows_the_zones(fake, moatd_factory, dns):
    zone_points(dns, BL)
    dns.add(rev("127.0.0.70") + "." + BL, "A", "127.0.0.3", ttl=1)
    m = moatd_factory(fake.address, resolver=dns.resolver, dnsbl=["bl.test weight 5"],
                      on=REPUTATION_RULES[:1], start=False)
    m.start()
    p = subprocess.run([moatctl_path(), "explain", str(m.conf_path), "--ip", "127.0.0.70"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "check dnsbl zone=bl.test type=ip result=listed answer=127.0.0.3 weight=5" in p.stdout
    assert "result: reject 554 5.7.1 client [127.0.0.70] listed: bl.test ()" in p.stdout, p.stdout
    with Client(m.port, m.host, source="127.0.0.70") as c:
        assert c.greeting.raw.decode().strip() == "554 5.7.1 client [127.0.0.70] listed: bl.test ()"
    p = subprocess.run([moatctl_path(), "explain", str(m.conf_path), "--ip", "127.0.0.70",
                        "--no-network"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "result=temperror (--no-network)" in p.stdout, p.stdout


def test_no_resolver_reachable(fake, moatd_factory, workdir):
    """DNS-14: nothing answers on the forwarder's port. moatd starts, the
    lookups become temporary errors within the deadline, and the policy
    decides (here: an error is not a listing)."""
    closed = __import__("harness").free_port()
    m = moatd_factory(fake.address, resolver="forward 127.0.0.1@%d" % closed, dns_timeout="1s",
                      dnsbl=["bl.test weight 5"], on=REPUTATION_RULES[:2])
    t0 = time.monotonic()
    with m.client(timeout=8) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        rs = smtp_transaction(c, message("no dns"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    assert time.monotonic() - t0 < 4
    done = fake.wait_completed(1)
    assert b"X-DNSBL: error" in done[0].content


def test_early_talker_is_rejected(fake, moatd_factory):
    """greet-delay: a client that talks before the banner is an early
    talker; the rule rejects it with its reply, at once, and nothing of
    it reaches the upstream. A patient client is greeted after the delay."""
    m = moatd_factory(fake.address, greet_delay="1500ms", on=[
        'connect early-talker reject 554 5.5.1 "talked before the greeting"'])
    t0 = time.monotonic()
    with Client(m.port, m.host, greet=False, timeout=5) as c:
        c.send(b"EHLO eager.test\r\nMAIL FROM:<a@b.test>\r\n")
        r = c.reply()
        assert (r.code, r.text) == (554, "5.5.1 talked before the greeting"), r
        assert time.monotonic() - t0 < 1.2
        with pytest.raises(ConnectionClosed):
            c.reply(timeout=2)
    t0 = time.monotonic()
    with m.client(timeout=5) as c:
        assert c.greeting.code == 220 and time.monotonic() - t0 >= 1.4, c.greeting
        c.ehlo()
        rs = smtp_transaction(c, message("patient"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    done = fake.wait_completed(1)
    assert len(done) == 1 and b"patient" in done[0].content
    assert re.search(r"protocol fact=early-talker bytes=\d+", m.log())


def test_early_talker_only_logged_without_a_rule(fake, moatd_factory):
    m = moatd_factory(fake.address, greet_delay="500ms",
                      on=['connect early-talker add-header X-Early "yes"'])
    with Client(m.port, m.host, greet=False, timeout=5) as c:
        c.send(b"EHLO eager.test\r\n")
        assert c.reply().code == 220
        assert c.reply().code == 250
        rs = smtp_transaction(c, message("eager"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    assert fake.wait_completed(1)[0].content.startswith(b"X-Early: yes\r\n")


def test_hygiene_counters_as_facts(fake, moatd_factory):
    """Unknown commands and bare-LF command lines are counted; rules act
    on the counts."""
    m = moatd_factory(fake.address, on=[
        'mail unknown-commands >= 2 reject 550 5.5.1 "too many unknown commands"',
        'mail bare-lf-commands >= 1 reject 550 5.5.2 "bare LF seen"'])
    with m.client() as c:
        c.ehlo()
        assert c.cmd("FOO").code == 500
        assert c.cmd("BAR baz").code == 500
        r = c.cmd("MAIL FROM:<a@b.test>")
        assert (r.code, r.text) == (550, "5.5.1 too many unknown commands"), r
    with m.client() as c:
        c.ehlo()
        c.send(b"NOOP\n")
        assert c.reply().code == 500
        r = c.cmd("MAIL FROM:<a@b.test>")
        assert (r.code, r.text) == (550, "5.5.2 bare LF seen"), r


def test_http_on_port_25_closed_with_5xx(moatd_fake):
    m, fake = moatd_fake
    with m.client() as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.reply()
        assert r.code == 554, r
        with pytest.raises(ConnectionClosed):
            c.reply(timeout=2)


def test_bad_zone_settings_name_line_and_column(workdir):
    from harness import moatd_check
    rc, out, p = moatd_check("listen 127.0.0.1:2525\nupstream 127.0.0.1:2526\n"
                             "dnsbl bl.test codes 10.0.0.2\n"
                             "resolver forward nameserver.test\n", workdir)
    assert rc == 1, out
    assert "check.conf:3:21: error: \"10.0.0.2\" is not an answer range in 127.0.0.0/8" in out, out
    assert "check.conf:4:18: error: resolver forward: \"nameserver.test\" is not an IP" in out, out


def test_probe_round_without_zones_and_stats_lines(fake, moatd_factory, dns):
    """The probe timer runs with no zone (a reload may add some), and
    after traffic each zone's counters are logged."""
    m = moatd_factory(fake.address, resolver=dns.resolver, dnsbl_probe_interval="1s")
    time.sleep(2.5)
    with m.client() as c:
        assert c.greeting.code == 220
        c.cmd("QUIT")
    zone_points(dns, BL)
    m2 = moatd_factory(fake.address, resolver=dns.resolver, dnsbl_probe_interval="1s",
                       dnsbl=["bl.test"])
    with Client(m2.port, m2.host, source="127.0.0.2") as c:
        wait_log(m2, r"check dnsbl zone=bl.test type=ip result=listed")
        c.cmd("QUIT")
    wait_log(m2, r"stats dnsbl zone=bl.test state=enabled queries=\d+ listed=1 bad-answers=0 "
             r"temperrors=0")


def test_hostile_answers_and_ptr_chains(fake, moatd_factory, dns):
    """DNS-11 and DNS-13: a garbage packet is dropped by the resolver
    (temperror at the deadline, no crash); many PTR names, a CNAME loop
    and over-long names end within the deadline."""
    zone_points(dns, BL)
    dns.set_garbage(rev("127.0.0.80") + "." + BL, b"\x12\x34\x81\x80\x00\x01\x00\x01garbage")
    for i in range(12):
        dns.add(rev("127.0.0.81") + ".in-addr.arpa", "PTR", "h%d.pool.test" % i)
    for i in range(12):
        dns.add("h%d.pool.test" % i, "A", "127.0.0.99")        # none confirms
    dns.add(rev("127.0.0.82") + ".in-addr.arpa", "PTR", "loop1.test")
    dns.add("loop1.test", "CNAME", "loop2.test")
    dns.add("loop2.test", "CNAME", "loop1.test")
    m = moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="1s",
                      dnsbl=["bl.test weight 5"], on=[
                          'connect dnsbl-error add-header X-DNSBL "error"',
                          'connect fcrdns add-header X-FCrDNS "$client-name"',
                          'connect not fcrdns add-header X-FCrDNS "none"'])
    for n, ip in enumerate(("127.0.0.80", "127.0.0.81", "127.0.0.82"), 1):
        t0 = time.monotonic()
        with Client(m.port, m.host, source=ip, timeout=8) as c:
            assert c.greeting.code == 220, c.greeting
            c.ehlo()
            assert smtp_transaction(c, message(ip))[-1].code == 250
            c.cmd("QUIT")
        assert time.monotonic() - t0 < 4, ip
        fake.wait_completed(n)
    done = fake.wait_completed(3)
    heads = [d.content.split(b"\r\n\r\n")[0] for d in done]
    assert b"X-DNSBL: error" in heads[0], heads[0]
    # 12 names: at most 4 are looked up
    assert b"X-FCrDNS: none" in heads[1], heads[1]
    assert len([q for q in dns.queries() if q[0].endswith(".pool.test")]) <= 4
    assert b"X-FCrDNS: none" in heads[2], heads[2]


def test_trusted_clients_never_wait_for_dns(fake, moatd_factory, dns):
    """A connect rule that decides first (or a condition that is false
    before it reaches a DNS fact) means the client is greeted at once,
    whatever the resolver does; other clients wait for their answers."""
    zone_points(dns, BL)
    for ip in ("127.0.0.1", "127.0.0.90"):
        dns.set_drop(rev(ip) + "." + BL)
        dns.set_drop(rev(ip) + ".in-addr.arpa")
    m = moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="1500ms",
                      list=["trusted net { 127.0.0.1 }"], dnsbl=["bl.test weight 5"], on=[
                          'connect client-ip in trusted accept',
                          'connect dnsbl-score >= 5 reject 554 5.7.1 "listed"',
                          'helo not client-ip in trusted and not fcrdns score +1'])
    t0 = time.monotonic()
    with m.client(timeout=8) as c:
        assert c.greeting.code == 220
        assert time.monotonic() - t0 < 0.5
        c.ehlo()
        assert time.monotonic() - t0 < 0.5
        c.cmd("QUIT")
    t0 = time.monotonic()
    with Client(m.port, m.host, source="127.0.0.90", timeout=8) as c:
        assert c.greeting.code == 220
        assert time.monotonic() - t0 >= 1.4
    assert re.search(r"check dnsbl zone=bl.test type=ip result=temperror", m.log())
