"""DKIM keys and DMARC records asked at the end of the header section
(issue 21): the engine asks them from the loop as soon as the header is
in, while the body still streams, so a message whose names were not
cached gets its end-of-data reply without a DNS round trip after the dot.

Both front-ends, the same way: moatd (its message scanner sees the
header's end while the body goes to the spool) and moat-milter (the
end-of-header callback). The key and the DMARC record of the From domain
are answered 1 s late by the loopback DNS server; the client pauses 1.5 s
between the header and the rest of the message; the end-of-data reply
then comes at once (it took the 1 s before), with dkim=pass and
dmarc=pass, and each name was asked once. MAIL FROM is another domain, so
the DMARC record of the From domain is not the one asked at MAIL.
"""

import re
import time

import dkim
import pytest

import harness
from harness import free_port, message
import milterproto as mp
from milterproto import MilterClient
from test_senderauth import dkim_key  # noqa: F401 (the module's RSA key, dkimpy signs)

DELAY = 1.0             # the DNS server's answer delay for the key and DMARC record
PAUSE = 1.5             # the client's pause between the header and the rest
FAST = 0.5              # the end-of-data reply, the names cached: well under DELAY
KEY = "sel._domainkey.sender.test"
DMARC = "_dmarc.sender.test"
RULES = ['data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 "DMARC says reject"',
         'data true add-header X-Ahead "dkim=$dkim"']


def zones(dns, pub):
    dns.add("envelope.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add("_dmarc.envelope.test", "TXT", "v=DMARC1; p=none")
    dns.add(KEY, "TXT", "v=DKIM1; k=rsa; p=" + pub)
    dns.add(DMARC, "TXT", "v=DMARC1; p=reject")
    dns.set_delay(KEY, DELAY)
    dns.set_delay(DMARC, DELAY)


def signed(key):
    msg = message("ahead", body="hello\r\n" * 50, mfrom="boss@sender.test")
    sig = dkim.sign(msg, b"sel", b"sender.test", key,
                    include_headers=[b"from", b"to", b"subject"])
    return sig + msg


def conf(dns):
    return dict(resolver="forward " + dns.address, spf="yes", dkim="yes", dmarc="rfc7489",
                dns_timeout="5s", on=RULES)


def to_data(c):
    """EHLO .. DATA, the envelope's domain not the From domain"""
    c.ehlo("mail.envelope.test")
    assert c.cmd("MAIL FROM:<a@envelope.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354


def asked_once(dns):
    for name in (KEY, DMARC):
        n = len(dns.queries(name))
        assert n == 1, "%s asked %d times: %r" % (name, n, dns.queries())


@pytest.mark.timeout(60)
def test_moatd_asks_at_the_end_of_the_header(fake, moatd_factory, dns, dkim_key):
    key, pub = dkim_key
    zones(dns, pub)
    m = moatd_factory(fake.address, **conf(dns))
    data = signed(key)
    head, body = data.split(b"\r\n\r\n", 1)
    with m.client(timeout=15) as c:
        to_data(c)
        c.send(head + b"\r\n\r\n")
        time.sleep(PAUSE)
        c.send(harness.dot_stuff(body) + b".\r\n")
        t0 = time.monotonic()
        r = c.reply()
        took = time.monotonic() - t0
        c.cmd("QUIT")
    assert r.code == 250, r
    assert took < FAST, "end-of-data reply %.2f s after the dot (the header came "\
        "%.1f s before the dot)" % (took, PAUSE)
    got = fake.wait_completed(1)[0].content
    h = re.sub(r"\r\n[ \t]+", " ", got.split(b"\r\n\r\n", 1)[0].decode())
    assert re.search(r"dkim=pass header\.d=sender\.test", h), h[:800]
    assert re.search(r"dmarc=pass \(p=reject dis=none\) header\.from=sender\.test", h), h[:800]
    assert "X-Ahead: dkim=pass" in h, h[:800]
    asked_once(dns)


@pytest.mark.timeout(60)
def test_moatd_client_gone_before_the_answers(fake, moatd_factory, dns, dkim_key):
    """The client goes away mid-body while the names asked at the end of
    the header are in flight (its transaction and session end): the late
    answers touch nothing (ASan would say); the next session's message,
    sent at once, waits for its own (not cached yet) and is judged
    right."""
    key, pub = dkim_key
    zones(dns, pub)
    m = moatd_factory(fake.address, **conf(dns))
    data = signed(key)
    head = data.split(b"\r\n\r\n", 1)[0]
    with m.client(timeout=15) as c:
        to_data(c)
        c.send(head + b"\r\n\r\nhalf a mess")
        assert harness.wait_for(lambda: len(dns.queries(KEY)) == 1, 5), dns.queries()
        c.close()                       # the client goes away mid-body
    with m.client(timeout=15) as c:
        c.ehlo("mail.envelope.test")
        rs = harness.smtp_transaction(c, data, mfrom="a@envelope.test")
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    h = fake.wait_completed(1)[0].content.split(b"\r\n\r\n", 1)[0].decode()
    assert "X-Ahead: dkim=pass" in h, h[:800]
    time.sleep(DELAY)                   # every late answer is in
    assert m.proc.poll() is None


@pytest.mark.timeout(60)
def test_milter_asks_at_the_end_of_the_header(workdir, dns, dkim_key):
    key, pub = dkim_key
    zones(dns, pub)
    mlt = harness.MoatMilter(workdir, free_port(), **conf(dns)).start()
    try:
        data = signed(key)
        head, body = data.split(b"\r\n\r\n", 1)
        fields = re.split(rb"\r\n(?![ \t])", head)
        with MilterClient(mlt.port, timeout=15) as c:
            c.optneg()
            assert c.proto & mp.SMFIP_HDR_LEADSPC
            for step in (lambda: c.connect("client.test", "127.0.0.7"),
                         lambda: c.helo("mail.envelope.test"),
                         lambda: c.mail("<a@envelope.test>"),
                         lambda: c.rcpt("<user@example.org>")):
                r, _ = step()
                assert r.cmd == mp.SMFIR_CONTINUE, r
            for f in fields:
                name, value = f.decode().split(":", 1)
                c.header(name, value)
            c.eoh()
            time.sleep(PAUSE)
            c.body(body)
            t0 = time.monotonic()
            r, mods = c.eom()
            took = time.monotonic() - t0
            c.quit()
        assert r.cmd == mp.SMFIR_CONTINUE, r
        assert took < FAST, "end-of-message answer %.2f s after it (the header came "\
            "%.1f s before the end)" % (took, PAUSE)
        added = {m.header()[1]: m.header()[2] for m in mods if m.cmd == mp.SMFIR_INSHEADER}
        ar = re.sub(r"\s+", " ", added.get("Authentication-Results", ""))
        assert "dkim=pass header.d=sender.test" in ar, added
        assert "dmarc=pass (p=reject dis=none) header.from=sender.test" in ar, added
        assert added.get("X-Ahead", "").strip() == "dkim=pass", added
        asked_once(dns)
    finally:
        mlt.stop()
        reports = mlt.sanitizer_reports()
    assert mlt.rc == 0, mlt.log()[-3000:]
    assert not reports, reports
