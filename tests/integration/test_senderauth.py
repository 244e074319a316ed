"""Sender authentication through moatd: SPF, DKIM (dkimpy signs the test
mail), DMARC and the one Authentication-Results field the upstream gets.

Zones are served by the loopback DNS server; the rules are the sample
policy's: SPF fail -> 550 5.7.23 at RCPT, DMARC fail with p=reject -> 550
5.7.1 at the end of data, p=quarantine -> a tag, temperror never a 5xx.
"""

import base64
import re
import subprocess

import dkim
import pytest

from harness import message, smtp_transaction

AUTH_RULES = [
    'rcpt spf is fail reject 550 5.7.23 "SPF check failed for $sender-domain"',
    'data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 '
    '"DMARC policy of $from-domain says reject"',
    'data dmarc is fail and dmarc-policy is quarantine tag quarantine',
]


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkimkey")
    key = d / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                   capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    return key.read_bytes(), base64.b64encode(der).decode()


def zones(dns, pub, dmarc="v=DMARC1; p=reject", spf="v=spf1 ip4:127.0.0.0/8 -all",
          domain="sender.test"):
    if spf:
        dns.add(domain, "TXT", spf)
    if pub:
        dns.add("sel._domainkey." + domain, "TXT", "v=DKIM1; k=rsa; p=" + pub)
    if dmarc:
        dns.add("_dmarc." + domain, "TXT", dmarc)


def signed(key, frm="a@sender.test", subject="signed", body="hello\r\n", d="sender.test",
           extra=()):
    msg = message(subject, body=body, mfrom=frm, extra_headers=extra)
    sig = dkim.sign(msg, b"sel", d.encode(), key, include_headers=[b"from", b"to", b"subject"])
    return sig + msg


def moatd(moatd_factory, fake, dns, **kw):
    conf = dict(resolver=dns.resolver, spf="yes", dkim="yes", dmarc="rfc7489",
                on=AUTH_RULES)
    conf.update(kw)
    return moatd_factory(fake.address, **conf)


def head(content):
    return content.split(b"\r\n\r\n", 1)[0].decode()


def ar_field(content):
    """The Authentication-Results field on top, unfolded into one line."""
    h = head(content)
    m = re.match(r"Authentication-Results: (.*?)\r\n(?![ \t])", h, re.S)
    assert m, h[:500]
    return re.sub(r"\r\n[ \t]+", " ", m.group(1))


def test_all_pass_and_the_exact_field(fake, moatd_factory, dns, dkim_key):
    key, pub = dkim_key
    zones(dns, pub)
    m = moatd(moatd_factory, fake, dns)
    with m.client() as c:
        c.ehlo("mail.sender.test")
        rs = smtp_transaction(c, signed(key), mfrom="a@sender.test", stuff=True)
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    done = fake.wait_completed(1)
    ar = ar_field(done[0].content)
    assert re.fullmatch(
        r"mx\.moat\.test; spf=pass smtp\.mailfrom=a@sender\.test; "
        r"dkim=pass header\.d=sender\.test header\.s=sel header\.b=(\"[A-Za-z0-9+/]{12}\"|[A-Za-z0-9+]{12}); "
        r"dmarc=pass \(p=reject dis=none\) header\.from=sender\.test", ar), ar
    # exactly one such field, moat's, on top
    assert head(done[0].content).count("Authentication-Results:") == 1
    log = m.log()
    assert re.search(r"check spf mailfrom=pass domain=sender.test", log)
    assert re.search(r"check dkim=pass d=sender.test s=sel a=rsa-sha256", log)
    assert re.search(r"check dmarc=pass policy=none from-domain=sender.test", log) or \
        re.search(r"check dmarc=pass policy=\w+ from-domain=sender.test", log)


def test_spf_fail_rejected_at_rcpt(fake, moatd_factory, dns, dkim_key):
    zones(dns, None, dmarc=None, spf="v=spf1 ip4:192.0.2.0/24 -all", domain="forged.test")
    m = moatd(moatd_factory, fake, dns)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<x@forged.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert (r.code, r.text) == (550, "5.7.23 SPF check failed for forged.test"), r
        c.cmd("QUIT")
    assert fake.completed() == [] if hasattr(fake, "completed") else True


def test_spf_temperror_never_a_5xx(fake, moatd_factory, dns, dkim_key):
    dns.set_rcode("flaky.test", rtype="TXT", rcode="SERVFAIL")
    m = moatd(moatd_factory, fake, dns, dns_timeout="1s", spf_timeout="2s")
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("temp", mfrom="x@flaky.test"), mfrom="x@flaky.test")
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    ar = ar_field(fake.wait_completed(1)[0].content)
    assert "spf=temperror smtp.mailfrom=x@flaky.test" in ar, ar


def test_dmarc_reject_and_quarantine(fake, moatd_factory, dns, dkim_key):
    key, pub = dkim_key
    zones(dns, pub, dmarc="v=DMARC1; p=reject", spf="v=spf1 ip4:127.0.0.0/8 -all")
    zones(dns, None, dmarc="v=DMARC1; p=quarantine", spf=None, domain="quar.test")
    m = moatd(moatd_factory, fake, dns)
    with m.client() as c:
        c.ehlo()
        # From sender.test, unsigned, envelope from another domain: not aligned
        rs = smtp_transaction(c, message("spoof", mfrom="boss@sender.test"),
                              mfrom="bounce@other.test")
        assert (rs[-1].code, rs[-1].text) == (
            550, "5.7.1 DMARC policy of sender.test says reject"), rs
        rs = smtp_transaction(c, message("quar", mfrom="boss@quar.test"),
                              mfrom="bounce@other.test")
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    done = fake.wait_completed(1)
    assert len(done) == 1 and b"Subject: quar" in done[0].content
    h = head(done[0].content)
    assert "X-Moat-Tag: quarantine" in h, h
    assert "dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test " \
        "policy.dmarc=quarantine" in ar_field(done[0].content)


def test_dkim_altered_message_fails(fake, moatd_factory, dns, dkim_key):
    key, pub = dkim_key
    zones(dns, pub, dmarc=None)
    msg = signed(key, body="original body\r\n").replace(b"original", b"altered!")
    m = moatd(moatd_factory, fake, dns, on=[])
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, msg, mfrom="a@sender.test")
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    ar = ar_field(fake.wait_completed(1)[0].content)
    assert re.search(r"dkim=fail \(?[^;]*header\.d=sender\.test header\.s=sel", ar), ar


def test_forged_authentication_results_removed(fake, moatd_factory, dns, dkim_key):
    m = moatd(moatd_factory, fake, dns, on=[])
    msg = message("forged", extra_headers=[
        "Authentication-Results: mx.moat.test; spf=pass smtp.mailfrom=evil@x.test",
        "Authentication-Results: MX.MOAT.TEST (comment); dkim=pass",
        "Authentication-Results: elsewhere.test; spf=pass"])
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, msg)
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    h = head(fake.wait_completed(1)[0].content)
    assert h.count("Authentication-Results:") == 2, h
    assert "evil@x.test" not in h and "MX.MOAT.TEST" not in h
    assert "Authentication-Results: elsewhere.test; spf=pass" in h
    assert re.search(r"message removed=2 field=Authentication-Results", m.log())


def test_null_sender_reports_the_helo(fake, moatd_factory, dns, dkim_key):
    dns.add("mx.sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    m = moatd(moatd_factory, fake, dns, on=[])
    with m.client() as c:
        c.ehlo("mx.sender.test")
        rs = smtp_transaction(c, message("bounce"), mfrom="")
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    ar = ar_field(fake.wait_completed(1)[0].content)
    assert "spf=pass smtp.helo=mx.sender.test" in ar, ar


def test_spf_and_dmarc_slow_dns_waits_block_no_session(fake, moatd_factory, dns):
    """A slow name server (every answer 0.6 s late) and 32 sessions at once,
    each with a sender domain of its own: every SPF check and DMARC record
    waits for its answers at the same time, so each RCPT gets its reply
    about one delay after MAIL, and the whole batch takes a few delays, not
    32/8 rounds of them (the pool had 8 threads, each blocked on a lookup).
    One in three fails SPF (550 at RCPT), one in three is a DMARC p=reject
    spoof (550 at the end of data), the rest pass and are relayed."""
    import threading
    import time

    n, delay = 32, 0.6
    for i in range(n):
        d = "d%d.slow.test" % i
        if i % 3 == 0:
            dns.add(d, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
        else:
            dns.add(d, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
        dns.add("_dmarc." + d, "TXT", "v=DMARC1; p=reject")
    dns.add("envelope.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    m = moatd(moatd_factory, fake, dns, dns_timeout="5s", spf_timeout="10s")
    dns.set_default_delay(delay)
    clients = []
    try:
        for i in range(n):
            c = m.client(timeout=15)
            c.ehlo("mail%d.slow.test" % i)
            clients.append(c)
        go = threading.Barrier(n, timeout=30)
        out = [None] * n

        def session(i):
            c, d = clients[i], "d%d.slow.test" % i
            mfrom = "bounce@envelope.test" if i % 3 == 2 else "a@" + d
            go.wait()
            t0 = time.monotonic()
            r_mail = c.cmd("MAIL FROM:<%s>" % mfrom)
            r_rcpt = c.cmd("RCPT TO:<user@example.org>")
            t_rcpt = time.monotonic() - t0
            final = None
            if r_rcpt.code == 250:
                assert c.cmd("DATA").code == 354
                c.send(message("s%d" % i, mfrom="boss@" + d) + b".\r\n")
                final = c.reply()
            out[i] = (r_mail, r_rcpt, t_rcpt, final, time.monotonic())

        threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(o is not None for o in out), out
    finally:
        dns.set_default_delay(0)
        for c in clients:
            c.close()
    for i, (r_mail, r_rcpt, t_rcpt, final, _) in enumerate(out):
        assert r_mail.code == 250, (i, r_mail)
        if i % 3 == 0:
            assert (r_rcpt.code, r_rcpt.text) == (
                550, "5.7.23 SPF check failed for d%d.slow.test" % i), (i, r_rcpt)
        elif i % 3 == 1:
            assert r_rcpt.code == 250 and final.code == 250, (i, r_rcpt, final)
        else:
            assert r_rcpt.code == 250, (i, r_rcpt)
            assert (final.code, final.text) == (
                550, "5.7.1 DMARC policy of d%d.slow.test says reject" % i), (i, final)
    # one lookup (0.6 s) between MAIL and RCPT's reply; 32/8 rounds would
    # be 2.4 s for the last ones
    slowest = max(o[2] for o in out)
    assert slowest < 2.5 * delay, "slowest RCPT %.2f s after MAIL" % slowest
    # the batch: SPF, then DMARC's record at the end of data (two delays),
    # not 4 + 4 rounds
    total = max(o[4] for o in out) - start
    assert total < 4 * delay, "32 sessions took %.2f s" % total
    assert len(fake.wait_completed(len([i for i in range(n) if i % 3 == 1]))) == \
        len([i for i in range(n) if i % 3 == 1])
