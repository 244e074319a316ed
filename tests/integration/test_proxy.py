"""Integration tests of moatd's proxy core (the case ids of docs/SECURITY.md
in the test names). Each test starts its own moatd and upstream on free loopback
ports and asserts what a user sees: replies, the bytes the upstream got, logs.
"""

import os
import re
import select
import shutil
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import Client, message, smtp_transaction, dot_stuff, wait_for

TSV = Path("/work/shared/conformance/smtp/smtp-smuggling-eod-sequences.tsv")


def codes(replies):
    return [r.code for r in replies]


def assert_no_2xx(r, what):
    assert r.cls != 2, "%s: got %s, must never be 2xx" % (what, r)


def canonical_crlf(data):
    """True when every CR is followed by LF and every LF preceded by CR, no NUL."""
    if b"\x00" in data:
        return False
    stripped = data.replace(b"\r\n", b"")
    return b"\r" not in stripped and b"\n" not in stripped


def after_marker(data, marker=b"X-Moat-Test-Marker:"):
    """The upstream copy from our first header on (moat may prepend its own)."""
    i = data.find(marker)
    assert i >= 0, "our first header is missing upstream: %r" % data[:400]
    return data[i:]


# ===========================================================================
# Plain relaying


def test_relay_swaks_plain(moatd_sink):
    m, sink = moatd_sink
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % m.port, "--to", "user@example.org",
                        "--from", "a@b.test", "--header", "Subject: swaks-relay",
                        "--helo", "swaks.test", "--timeout", "10"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert re.search(r"<-  250[ -].*\n -> QUIT", out), out
    dumps = sink.wait_dumps(1)
    assert len(dumps) == 1, dumps
    d = dumps[0]
    assert d.mail == "<a@b.test>"
    assert d.rcpts == ["<user@example.org>"]
    assert b"Subject: swaks-relay" in d.content
    assert b"This is a test mailing" in d.content
    assert re.search(r"\bconnect\b.*client=127\.0\.0\.1:\d+", m.log()), m.log()[-2000:]


def test_relay_smtplib(moatd_fake):
    m, fake = moatd_fake
    body = ("X-Moat-Test-Marker: smtplib\r\nFrom: <a@b.test>\r\nTo: <user@example.org>\r\n"
            "Subject: smtplib\r\n\r\nfirst\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n")
    with smtplib.SMTP("127.0.0.1", m.port, local_hostname="smtplib.test", timeout=10) as s:
        code, _ = s.ehlo()
        assert code == 250
        refused = s.sendmail("a@b.test", ["user@example.org", "other@example.org"], body)
        assert refused == {}
    t = fake.wait_completed(1)
    assert len(t) == 1
    assert t[0].accepted
    assert t[0].mail.split(b" ")[0] == b"<a@b.test>"
    assert [x.split(b" ")[0] for x in t[0].rcpts] == [b"<user@example.org>", b"<other@example.org>"]
    assert canonical_crlf(t[0].data_raw)
    assert after_marker(t[0].content) == body.encode()


def test_idn_03_ehlo_advertises_only_end_to_end_extensions(moatd_fake):
    m, fake = moatd_fake
    with m.client() as c:
        assert c.greeting.code == 220
        kw = c.ehlo().keywords()
        for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            assert k in kw, (k, kw)
        for k in ("CHUNKING", "XCLIENT", "XFORWARD", "STARTTLS", "BINARYMIME"):
            assert k not in kw, (k, kw)
        r = c.cmd("XCLIENT ADDR=1.2.3.4 NAME=spoof.test")
        assert r.cls == 5, r
        r = c.cmd("XFORWARD ADDR=1.2.3.4")
        assert r.cls == 5, r
        # the session still works and the upstream sees the real peer
        rs = smtp_transaction(c, message("idn-03", extra_headers=["X-Moat-Test-Marker: 1"]))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    raw = fake.all_raw()
    assert b"1.2.3.4" not in raw
    assert b"spoof.test" not in raw
    assert b"XFORWARD" not in raw


def test_idn_01_client_proxy_header_not_trusted(moatd_fake):
    m, fake = moatd_fake
    c = m.client()
    r = None
    try:
        r = c.cmd("PROXY TCP4 6.6.6.6 127.0.0.1 1 25")
    except harness.ConnectionClosed:
        pass
    if r is not None:
        assert r.cls == 5, r
        if not c.wait_closed(0.3):
            c.ehlo()
            rs = smtp_transaction(c, message("idn-01"))
            assert rs[-1].code == 250, rs
    c.close()
    raw = fake.all_raw()
    assert b"6.6.6.6" not in raw
    for t in fake.completed():
        assert t.xclient is not None and b"ADDR=127.0.0.1" in t.xclient, t.xclient


def test_idn_04_xclient_attributes_to_fake_upstream(moatd_fake):
    """The XCLIENT line moatd sends carries the real peer address and port
    and the client's HELO."""
    m, fake = moatd_fake
    with m.client(source="127.0.0.5") as c:
        cport = c.sock.getsockname()[1]
        c.ehlo("client5.test")
        rs = smtp_transaction(c, message("idn-04"))
        assert rs[-1].code == 250, rs
    t = fake.completed()
    assert len(t) == 1
    x = t[0].xclient
    assert x is not None, fake.all_lines()
    assert x.startswith(b"XCLIENT ")
    attrs = dict(a.split(b"=", 1) for a in x.split()[1:])
    assert attrs.get(b"ADDR") == b"127.0.0.5", x
    assert attrs.get(b"PORT") == str(cport).encode(), x
    assert attrs.get(b"HELO") == b"client5.test", x
    assert attrs.get(b"PROTO") in (b"ESMTP", b"SMTP"), x


def test_idn_07_ipv6_client_address_in_xclient(fake, moatd_factory):
    port6 = harness.free_port("::1")
    m = moatd_factory(fake.address, listen=["127.0.0.1:%d" % harness.free_port(),
                                            "[::1]:%d" % port6])
    with Client(port6, host="::1") as c:
        assert c.greeting.code == 220
        c.ehlo("v6.test")
        rs = smtp_transaction(c, message("idn-07"))
        assert rs[-1].code == 250, rs
    t = fake.completed()
    assert len(t) == 1 and t[0].xclient, fake.all_lines()
    assert b"ADDR=IPV6:::1" in t[0].xclient, t[0].xclient


@pytest.mark.postfix
@pytest.mark.timeout(60)
def test_idn_real_client_address_reaches_postfix_via_xclient(postfix, moatd_factory):
    m = moatd_factory("127.0.0.1:%d" % postfix.port)
    tag = "idn-postfix-%d" % m.port
    with m.client(source="127.0.0.5") as c:
        c.ehlo("client5.test")
        rs = smtp_transaction(c, message(tag))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    msgs = postfix.wait_messages_with(tag, 1, 15)
    assert len(msgs) == 1, postfix.log()[-3000:]
    hdr = msgs[0].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", hdr, re.M)
    assert received, hdr
    assert b"[127.0.0.5]" in received[0], received[0]
    assert b"[127.0.0.1]" not in received[0], received[0]
    log = postfix.log()
    assert re.search(r"client=\S*\[127\.0\.0\.5\]", log), log[-3000:]
    assert "XCLIENT" not in "".join(l for l in log.splitlines() if "warning" in l), log[-3000:]


@pytest.mark.postfix
@pytest.mark.timeout(60)
def test_idn_04_client_helo_reaches_postfix(postfix, moatd_factory):
    """The client's HELO name is what Postfix records (Received: from NAME):
    XCLIENT HELO= is lost if moatd then sends its own name in the EHLO that
    follows the XCLIENT greeting."""
    m = moatd_factory("127.0.0.1:%d" % postfix.port)
    tag = "idn-04-helo-%d" % m.port
    with m.client(source="127.0.0.6") as c:
        c.ehlo("client6.test")
        rs = smtp_transaction(c, message(tag))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    msgs = postfix.wait_messages_with(tag, 1, 15)
    assert len(msgs) == 1, postfix.log()[-3000:]
    received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", msgs[0], re.M)
    assert received and received[0].startswith(b"Received: from client6.test "), received[:1]


@pytest.mark.postfix
@pytest.mark.timeout(90)
def test_idn_xclient_on_later_connections_to_postfix(postfix, moatd_factory):
    """Once moatd knows the upstream's XCLIENT attributes it sends XCLIENT
    right after the greeting of each new upstream connection (one round trip
    less): every session must still reach Postfix with its own address and
    HELO name, and Postfix must not warn about any of them. With one worker,
    the later sessions reuse the parked upstream connection (XCLIENT resets
    the identity on it)."""
    m = moatd_factory("127.0.0.1:%d" % postfix.port, workers=1)
    tags = []
    for i in range(3):
        tag = "idn-later-%d-%d" % (m.port, i)
        tags.append(tag)
        with m.client(source="127.0.0.%d" % (20 + i)) as c:
            c.ehlo("later%d.test" % i)
            rs = smtp_transaction(c, message(tag))
            assert rs[-1].code == 250, rs
            c.cmd("QUIT")
    for i, tag in enumerate(tags):
        msgs = postfix.wait_messages_with(tag, 1, 15)
        assert len(msgs) == 1, postfix.log()[-3000:]
        received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", msgs[0], re.M)
        assert received, msgs[0][:500]
        assert received[0].startswith(b"Received: from later%d.test " % i), received[0]
        assert b"[127.0.0.%d]" % (20 + i) in received[0], received[0]
    log = postfix.log()
    assert not [l for l in log.splitlines() if "warning" in l and "XCLIENT" in l], log[-3000:]
    assert "xclient-refused" not in m.log()
    assert m.log().count("upstream reused") >= 2, m.log()[-3000:]


@pytest.mark.postfix
@pytest.mark.timeout(120)
def test_pool_reuses_connection_after_moat_refusals_postfix(postfix, moatd_factory, dns):
    """Sessions that moat refuses after the upstream accepted MAIL (SPF fail
    at RCPT, with and without the client's RSET; a policy refusal at the end
    of data, after which moat sent RSET) leave their upstream connection in
    the pool: it is parked with an RSET whose 250 the pool awaits, and the
    next session takes it. Postfix sees one connection for all five
    sessions, each with its own XCLIENT, and loses none of them
    ("lost connection after MAIL/RSET" before this); the message that is
    accepted carries its own client's Received: line."""
    dns.add("forged.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns.add("good.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    start = len(postfix.log())
    m = moatd_factory("127.0.0.1:%d" % postfix.port, workers=1, resolver=dns.resolver,
                      spf="yes", on=['rcpt spf is fail reject 550 5.7.23 "SPF fail"',
                                     'data size > 3k reject 552 5.3.4 "too big for policy"'])
    tag = "pool-refused-%d" % m.port

    def session(i, how):
        with m.client(source="127.0.0.%d" % (40 + i)) as c:
            c.ehlo("pool%d.test" % i)
            if how == "ok":
                rs = smtp_transaction(c, message(tag), mfrom="ok@good.test")
                assert rs[-1].code == 250, rs
            elif how == "big":
                rs = smtp_transaction(c, message(tag + "-big", body="x" * 70 + "\r\n" * 1)
                                      + b"y" * 60 + b"\r\n" + (b"z" * 70 + b"\r\n") * 60,
                                      mfrom="ok@good.test")
                assert rs[-1].code == 552, rs
            else:
                assert c.cmd("MAIL FROM:<x@forged.test>").code == 250
                r = c.cmd("RCPT TO:<user@example.org>")
                assert r.code == 550, r
                if how == "rset":
                    assert c.cmd("RSET").code == 250
            c.cmd("QUIT")
        # the session's upstream connection is parked once the client is gone
        assert wait_for(lambda: m.log().count("disconnect") >= i + 1, 5)

    for i, how in enumerate(["rcpt", "big", "rset", "rcpt", "ok"]):
        session(i, how)
    msgs = postfix.wait_messages_with(tag, 1, 15)
    assert len(msgs) == 1, postfix.log()[start:][-3000:]
    received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", msgs[0], re.M)
    assert received[0].startswith(b"Received: from pool4.test "), received[0]
    assert b"[127.0.0.44]" in received[0], received[0]
    assert m.log().count("upstream reused") == 4, m.log()[-3000:]
    assert "upstream retry" not in m.log()
    m.stop()    # the parked connection says QUIT
    assert wait_for(lambda: "disconnect from" in postfix.log()[start:], 10)
    # the connections that served our clients (an smtpd process serves
    # one connection after another; the fixture's probe may be logged here
    # too): one, none lost. Postfix counts an XCLIENT as not completed (it
    # restarts the session): xclient=0/5
    spans, cur = [], {}
    for line in postfix.log()[start:].splitlines():
        pm = re.search(r"postfix/smtpd\[(\d+)\]: ", line)
        if pm is None:
            continue
        if ": connect from" in line:
            cur[pm.group(1)] = []
            spans.append(cur[pm.group(1)])
        if pm.group(1) in cur:
            cur[pm.group(1)].append(line)
    mine = [sp for sp in spans if any(re.search(r"\[127\.0\.0\.4\d\]", l) for l in sp)]
    assert len(mine) == 1, spans
    mine = mine[0]
    assert not [l for l in mine if "lost connection" in l], "\n".join(mine)
    assert re.search(r"disconnect from \S+ .*xclient=\d+/5 .*quit=1 ", "\n".join(mine)), mine


@pytest.mark.postfix
@pytest.mark.timeout(90)
def test_pool_reused_connection_says_ehlo_for_helo_restrictions(moatd_factory):
    """A reused upstream connection still says EHLO after XCLIENT: with
    smtpd_delay_reject = no that EHLO is where Postfix applies
    smtpd_helo_restrictions (it takes MAIL straight after XCLIENT's 220
    too, and would then never check the HELO name). A client whose HELO
    name Postfix refuses gets no 250 for MAIL on a reused connection
    either, and its message never reaches Postfix."""
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix upstream needs root")
    # a short base: Postfix's socket paths must fit sun_path
    base = harness.make_dir(Path("/tmp") / ("moat-helo-%d" % time.time_ns()))
    pf = harness.Postfix(base, extra_main={
        "smtpd_delay_reject": "no",
        "smtpd_helo_restrictions": "check_helo_access inline:{ { refused.test = REJECT no } }"})
    pf.start()
    try:
        m = moatd_factory("127.0.0.1:%d" % pf.port, workers=1)
        tag = "pool-helo-%d" % m.port
        for i, helo in enumerate(["fine.test", "refused.test", "fine2.test"]):
            with m.client(source="127.0.0.%d" % (50 + i)) as c:
                c.ehlo(helo)
                rs = smtp_transaction(c, message("%s-%s" % (tag, helo)))
                if helo == "refused.test":
                    # 421: moatd's session cannot go on without the upstream
                    assert len(rs) == 1 and rs[0].cls == 4, rs
                else:
                    assert rs[-1].code == 250, rs
                    c.cmd("QUIT")
            assert wait_for(lambda: m.log().count("disconnect") >= i + 1, 5)
        assert "upstream reused" in m.log(), m.log()[-3000:]
        assert pf.wait_messages_with(tag + "-fine2.test", 1, 15)
        assert not pf.messages_with(tag + "-refused.test")
        assert re.search(r"reject: EHLO from \S+\[127\.0\.0\.51\]: 554 5\.7\.1 <refused\.test>",
                         pf.log()), pf.log()[-3000:]
    finally:
        pf.stop()
        if not os.environ.get("MOAT_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


def private_postfix(extra):
    """A private Postfix (harness.Postfix) with main.cf additions, on a short
    base under /tmp (its socket paths must fit sun_path)."""
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix upstream needs root")
    base = harness.make_dir(Path("/tmp") / ("moat-pf-%d" % time.time_ns()))
    pf = harness.Postfix(base, extra_main=extra)
    pf.base_dir = base
    try:
        pf.start()
    except Exception:
        pf.stop()
        raise
    return pf


def private_postfix_stop(pf):
    pf.stop()
    if not os.environ.get("MOAT_KEEP"):
        shutil.rmtree(pf.base_dir, ignore_errors=True)


# header_checks of both private Postfix instances: a refusal by content,
# which Postfix's cleanup gives at the end of the message (BDAT or dot)
REFUSE_CHECKS = {"header_checks": "regexp:{ {/^Subject: refuse-me/ REJECT content says no} }"}


@pytest.mark.postfix
@pytest.mark.timeout(120)
def test_bdat_to_postfix_same_message_as_data(moatd_factory):
    """When the upstream offers CHUNKING, moatd sends the message as one
    BDAT n LAST (no DATA, no 354 to wait for, no dot), its content
    unstuffed, when the message is spooled in memory. What Postfix delivers
    is the same as through DATA (a Postfix
    that does not offer CHUNKING): 0 bytes, 200 KiB, dot-stuffed lines
    (".", "..", ".x"), 8-bit bytes. A refusal of the message by Postfix
    (header_checks) reaches the client like the reply to the dot, and the
    next transaction of the same session goes through."""
    pf_bdat = private_postfix(dict(REFUSE_CHECKS))
    pf_data = private_postfix(dict(REFUSE_CHECKS, smtpd_discard_ehlo_keywords="chunking"))
    try:
        big = b"".join(b"%06d big line of the 200 KiB message, some text to fill it......\r\n" % i
                       for i in range(3000))
        bodies = {
            "empty": None,
            "big": big,
            "dots": b".\r\n..\r\n.x\r\n...\r\nplain\r\n.\r\n",
            "8bit": b"caf\xc3\xa9 \xff\xfe bytes\r\n\x01\x7f end\r\n",
        }
        got = {}
        moatds = []
        for name, pf in (("bdat", pf_bdat), ("data", pf_data)):
            # in memory: a message spooled to a file goes as DATA
            m = moatd_factory("127.0.0.1:%d" % pf.port, workers=1, spool_memory="1m")
            moatds.append(m)
            for key, body in bodies.items():
                with m.client() as c:
                    c.ehlo("%s-%s.test" % (key, name))
                    if body is None:
                        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
                        assert c.cmd("RCPT TO:<user@example.org>").code == 250
                        assert c.cmd("DATA").code == 354
                        c.send(b".\r\n")
                        rs = [c.reply()]
                    else:
                        msg = message("bdat-%s" % key, body=body,
                                      extra_headers=["X-Moat-Test-Marker: %s" % key])
                        rs = smtp_transaction(c, msg)
                    assert rs[-1].code == 250, (key, name, rs)
                    # refused by Postfix at the end of the message, then
                    # the next transaction on the same session
                    rs = smtp_transaction(c, message("refuse-me", body="no\r\n"))
                    assert (rs[-1].code, rs[-1].enh) == (550, "5.7.1"), (key, name, rs)
                    assert "content says no" in rs[-1].text, rs[-1]
                    rs = smtp_transaction(c, message("after-%s" % key))
                    assert rs[-1].code == 250, (key, name, rs)
                    c.cmd("QUIT")
            log = m.log()
            if name == "bdat":
                assert 'upstream send="BDAT ' in log and 'upstream send="DATA"' not in log, log[-3000:]
            else:
                assert 'upstream send="DATA"' in log and 'upstream send="BDAT' not in log, log[-3000:]
            assert pf.wait_messages_with(b"Subject: after-8bit", 1, 15), pf.log()[-3000:]
            for key in bodies:
                found = [x for x in pf.messages() if b"from %s-%s.test " % (key.encode(), name.encode()) in x
                         and b"Subject: after-" not in x]
                assert len(found) == 1, (key, name, len(found))
                got[(key, name)] = found[0]
        for key, body in bodies.items():
            a, b = got[(key, "bdat")], got[(key, "data")]
            if body is None:
                assert a.split(b"\n\n", 1)[1:] in ([], [b""]), a
                assert b.split(b"\n\n", 1)[1:] in ([], [b""]), b
                continue
            # from our first header on: the same bytes either way, and the
            # client's message (maildir lines end in LF; Postfix adds the
            # Date: field the message lacks, at its own second)
            def ours(x):
                return re.sub(rb"\nDate: [^\n]*\n", b"\n", after_marker(x), count=1)
            assert ours(a) == ours(b), key
            want = after_marker(message("bdat-%s" % key, body=body,
                                        extra_headers=["X-Moat-Test-Marker: %s" % key]))
            assert ours(a) == want.replace(b"\r\n", b"\n"), key
        # the Received: fields differ only in queue id and date
        for key in bodies:
            r = [re.sub(rb"id \w+|; .*", b"", re.findall(rb"^Received: .*(?:\n[ \t].*)*",
                                                         got[(key, n)], re.M)[0].replace(
                                                             b"%s-%s" % (key.encode(), n.encode()), b""))
                 for n in ("bdat", "data")]
            assert r[0] == r[1], r
        for m in moatds:
            m.stop()    # the parked connections say QUIT: Postfix counts
        # (a refused message is a failed BDAT or DATA to it)
        assert wait_for(lambda: re.search(r"disconnect from .* bdat=8/12 ", pf_bdat.log()), 10), \
            pf_bdat.log()[-2000:]
        assert wait_for(lambda: re.search(r"disconnect from .* data=8/12 ", pf_data.log()), 10), \
            pf_data.log()[-2000:]
        assert not re.search(r" bdat=", pf_data.log())
    finally:
        private_postfix_stop(pf_bdat)
        private_postfix_stop(pf_data)


@pytest.mark.timeout(60)
def test_refused_data_rset_goes_before_pipelined_mail(fake_factory, moatd_factory):
    """The upstream refuses DATA (451, before the content): moatd ends the
    transaction it still has open with RSET. The client pipelined its next
    MAIL right after the dot: that RSET must go upstream before the MAIL,
    or it would end the new transaction (and RCPT get 503 upstream)."""
    n = {"data": 0}

    def data(arg):
        n["data"] += 1
        return "451 4.3.0 fake.test try again later" if n["data"] == 1 else None
    fake = fake_factory(replies={"DATA": data})
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("refused-data")) + b".\r\nMAIL FROM:<second@b.test>\r\n")
        r = c.reply(timeout=10)
        assert (r.code, r.enh) == (451, "4.3.0"), r
        assert c.reply(timeout=10).code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("second-data")) + b".\r\n")
        assert c.reply(timeout=10).code == 250
        c.cmd("QUIT")
    got = [t.content.split(b"Subject: ")[1].split(b"\r\n")[0] for t in fake.accepted()]
    assert got == [b"second-data"], got
    raw = fake.all_raw()
    assert raw.index(b"RSET\r\n") < raw.index(b"MAIL FROM:<second@b.test>"), raw[-400:]


# ===========================================================================
# When the upstream session is taken (upstream-connect), and the identity
# passed again when it changed


def xclient_lines(raw):
    return [l for l in raw.split(b"\r\n") if l.startswith(b"XCLIENT ")]


@pytest.mark.timeout(60)
def test_upstream_set_up_at_ehlo_before_mail(fake_factory, moatd_factory):
    """With upstream-connect helo moatd connects upstream and passes the
    client's identity (XCLIENT, then EHLO with the client's name) as soon
    as it has answered the client's EHLO: the upstream has both before the
    client says MAIL."""
    fake = fake_factory()
    m = moatd_factory(fake.address, upstream_connect="helo")
    with m.client(source="127.0.0.7") as c:
        c.ehlo("early.test")
        assert wait_for(lambda: b"EHLO early.test\r\n" in fake.all_raw(), 5), fake.all_raw()
        assert b"MAIL FROM" not in fake.all_raw()
        rs = smtp_transaction(c, message("early-setup"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    raw = fake.all_raw()
    x = xclient_lines(raw)
    assert len(x) == 1 and b"ADDR=127.0.0.7" in x[0] and b"HELO=early.test" in x[0], raw
    assert raw.index(b"EHLO early.test\r\n") < raw.index(b"MAIL FROM:"), raw
    assert len(fake.accepted()) == 1


@pytest.mark.timeout(60)
def test_upstream_connect_mail_waits_for_mail(fake_factory, moatd_factory):
    """upstream-connect mail (the default): a session that never says MAIL
    (a probe, an address checker) never reaches the upstream; the first MAIL
    connects."""
    fake = fake_factory()
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo("probe.test")
        assert c.cmd("NOOP").code == 250
        time.sleep(1.0)
        assert fake.all_raw() == b"" and not fake.conns, fake.all_raw()
        rs = smtp_transaction(c, message("connect-at-mail"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    raw = fake.all_raw()
    assert b"HELO=probe.test" in xclient_lines(raw)[0], raw
    assert len(fake.accepted()) == 1


@pytest.mark.timeout(60)
def test_identity_changed_after_setup_passed_again(fake_factory, moatd_factory):
    """upstream-connect helo: the upstream was set up for the client's first
    EHLO; the client greets again with another name before MAIL: moatd
    gives the upstream the new identity (XCLIENT, EHLO) before MAIL, never
    MAIL under the old name. A second message in the same session, with no
    new EHLO, goes without another XCLIENT."""
    fake = fake_factory()
    m = moatd_factory(fake.address, upstream_connect="helo")
    with m.client() as c:
        c.ehlo("first.test")
        assert wait_for(lambda: b"EHLO first.test\r\n" in fake.all_raw(), 5), fake.all_raw()
        c.ehlo("second.test")
        for tag in ("changed-1", "changed-2"):
            rs = smtp_transaction(c, message(tag))
            assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    raw = fake.all_raw()
    x = xclient_lines(raw)
    assert [b"HELO=first.test" in x[0], b"HELO=second.test" in x[1], len(x)] == \
        [True, True, 2], raw
    first_mail = raw.index(b"MAIL FROM:")
    assert raw.index(x[1]) < raw.index(b"EHLO second.test\r\n") < first_mail, raw
    assert len(fake.accepted()) == 2


@pytest.mark.postfix
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["helo", "mail"])
def test_identity_changed_reaches_postfix(postfix, moatd_factory, mode):
    """Against Postfix: the client greets as before.test, then as after.test
    (helo: before its first MAIL, once the upstream was set up for
    before.test; mail: after a first message sent as before.test): the
    Received: line of the message sent after the second EHLO names
    after.test, and Postfix warns about nothing."""
    m = moatd_factory("127.0.0.1:%d" % postfix.port, log_level="debug",
                      upstream_connect=mode)
    tag = "ident-changed-%s-%d" % (mode, m.port)
    start = len(postfix.log())
    with m.client(source="127.0.0.8") as c:
        c.ehlo("before.test")
        if mode == "helo":
            # set up for before.test: XCLIENT and EHLO answered
            assert wait_for(lambda: "upstream ready" in m.log(), 10), m.log()[-2000:]
        else:
            rs = smtp_transaction(c, message(tag + "-first"))
            assert rs[-1].code == 250, rs
        c.ehlo("after.test")
        rs = smtp_transaction(c, message(tag))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    msgs = postfix.wait_messages_with(tag, 2 if mode == "mail" else 1, 15)
    msgs = [x for x in msgs if (tag + "-first").encode() not in x]
    assert len(msgs) == 1, postfix.log()[start:][-3000:]
    received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", msgs[0], re.M)
    assert received[0].startswith(b"Received: from after.test "), received[0]
    assert b"[127.0.0.8]" in received[0], received[0]
    assert not [l for l in postfix.log()[start:].splitlines() if "warning" in l], \
        postfix.log()[start:][-3000:]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["helo", "mail"])
def test_upstream_connect_helo_mail_waits_for_no_setup(fake_factory, moatd_factory, mode):
    """An upstream slow to answer (0.7 s for each EHLO and XCLIENT, as one
    some distance away under load): with upstream-connect helo those round
    trips are over by the time the client says MAIL, which is answered at
    once; with mail, MAIL waits for them (three: EHLO, XCLIENT, EHLO)."""
    def slow(arg):
        time.sleep(0.7)
        return None
    fake = fake_factory(replies={"EHLO": slow, "XCLIENT": slow})
    m = moatd_factory(fake.address, upstream_connect=mode)
    with m.client() as c:
        c.ehlo("slowup.test")
        time.sleep(3.0)
        t0 = time.monotonic()
        r = c.cmd("MAIL FROM:<a@b.test>", timeout=10)
        dt = time.monotonic() - t0
        assert r.code == 250, r
        if mode == "helo":
            assert dt < 0.5, dt
        else:
            assert dt >= 2.0, dt
        c.cmd("QUIT")


@pytest.mark.timeout(60)
def test_identity_changed_between_transactions(fake_factory, moatd_factory):
    """upstream-connect mail (the default): the connection is set up at the
    first MAIL with the client's HELO name; the client then greets again
    with another name and sends a second message: XCLIENT and EHLO with
    the new name go before its MAIL (the upstream's Received: line would
    name the old one otherwise)."""
    fake = fake_factory()
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo("one.test")
        rs = smtp_transaction(c, message("between-1"))
        assert rs[-1].code == 250, rs
        c.ehlo("two.test")
        rs = smtp_transaction(c, message("between-2"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    raw = fake.all_raw()
    x = xclient_lines(raw)
    assert len(x) == 2 and b"HELO=one.test" in x[0] and b"HELO=two.test" in x[1], raw
    second_mail = raw.index(b"MAIL FROM:", raw.index(b"MAIL FROM:") + 1)
    assert raw.index(x[1]) < raw.index(b"EHLO two.test\r\n") < second_mail, raw
    assert len(fake.accepted()) == 2


@pytest.mark.timeout(60)
def test_session_gone_during_setup_parks_connection(fake_factory, moatd_factory):
    """A client that leaves while its identity is still being passed (the
    upstream slow to answer XCLIENT) leaves the connection parked, not
    dropped: the pool awaits the XCLIENT's 2xx, and the next session takes
    the same connection with its own XCLIENT and gets its message through."""
    n = {"x": 0}

    def xclient(arg):
        n["x"] += 1
        if n["x"] == 1:
            time.sleep(1.0)
        return None
    fake = fake_factory(replies={"XCLIENT": xclient})
    m = moatd_factory(fake.address, workers=1, upstream_connect="helo")
    with m.client(source="127.0.0.9") as c:
        c.ehlo("leaver.test")
        assert wait_for(lambda: b"HELO=leaver.test" in fake.all_raw(), 5), fake.all_raw()
        c.cmd("QUIT")
    time.sleep(1.5)     # the XCLIENT's reply comes to the parked connection
    with m.client(source="127.0.0.10") as c:
        c.ehlo("stayer.test")
        rs = smtp_transaction(c, message("after-parked-setup"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    assert len(fake.conns) == 1, [bytes(k.raw) for k in fake.conns]
    x = xclient_lines(fake.all_raw())
    assert len(x) == 2 and b"HELO=stayer.test" in x[1], fake.all_raw()
    assert "upstream reused" in m.log(), m.log()[-2000:]
    assert len(fake.accepted()) == 1


@pytest.mark.timeout(60)
def test_setup_at_ehlo_fails_mail_connects_again(fake_factory, moatd_factory):
    """The connection taken at EHLO fails before the client says anything
    more (the upstream greets with 421): the client hears nothing of it,
    and its MAIL opens a new connection that works."""
    n = {"c": 0}

    def connect(arg):
        n["c"] += 1
        return "421 4.3.2 busy, come back" if n["c"] == 1 else None
    fake = fake_factory(replies={"CONNECT": connect})
    m = moatd_factory(fake.address, upstream_connect="helo")
    with m.client() as c:
        c.ehlo("retry.test")
        assert wait_for(lambda: "upstream error=greeting" in m.log(), 5), m.log()[-2000:]
        rs = smtp_transaction(c, message("after-failed-setup"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    assert n["c"] == 2
    assert len(fake.accepted()) == 1


# ===========================================================================
# PIP - pipelining


def test_pip_01_mail_and_100_pipelined_rcpt(moatd_fake):
    m, fake = moatd_fake
    rcpts = ["u%03d@example.org" % i for i in range(100)]
    with m.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\n" +
               b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in rcpts))
        rs = c.replies(101, timeout=15)
        assert rs[0].code == 250 and rs[0].enh.startswith("2.1."), rs[0]
        assert codes(rs[1:]) == [250] * 100, [str(r) for r in rs[1:] if r.code != 250]
        assert c.pending(0.2) == b""
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("pip-01", extra_headers=["X-Moat-Test-Marker: 1"])) + b".\r\n")
        assert c.reply(timeout=10).code == 250
    t = fake.completed()
    assert len(t) == 1
    assert t[0].rcpts == [b"<%s>" % r.encode() for r in rcpts]


def test_pip_07_pipelined_rcpt_partly_rejected_upstream(fake_factory, moatd_factory):
    def rcpt(arg):
        n = int(re.search(rb"u(\d+)@", arg).group(1))
        return "550 5.1.1 <u%d>: unknown" % n if n % 7 == 3 else (
            "452 4.2.2 full" if n % 11 == 5 else None)
    fake = fake_factory(replies={"RCPT": rcpt})
    m = moatd_factory(fake.address)
    n = 30
    with m.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\n" +
               b"".join(b"RCPT TO:<u%d@example.org>\r\n" % i for i in range(n)))
        rs = c.replies(n + 1, timeout=10)
        assert rs[0].code == 250
        want = [550 if i % 7 == 3 else 452 if i % 11 == 5 else 250 for i in range(n)]
        assert codes(rs[1:]) == want
        for i, r in enumerate(rs[1:]):
            if want[i] == 550:
                assert r.enh == "5.1.1", r
            if want[i] == 452:
                assert r.enh == "4.2.2", r
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("pip-07")) + b".\r\n")
        assert c.reply(timeout=10).code == 250
    t = fake.completed()
    assert len(t) == 1
    assert t[0].rcpts == [b"<u%d@example.org>" % i for i in range(n) if want[i] == 250]


def test_pip_06_commands_after_quit_ignored(moatd_fake):
    m, fake = moatd_fake
    with m.client() as c:
        c.ehlo()
        c.send(b"QUIT\r\nMAIL FROM:<late@b.test>\r\nRCPT TO:<user@example.org>\r\n")
        assert c.reply().code == 221
        assert c.wait_closed(3)
        assert c.tail == b"", c.tail
    assert b"late@b.test" not in fake.all_raw()


# ===========================================================================
# SMG - smuggling

# (docs/SECURITY.md id, TSV name, bytes, kind): kind "lf" = bare LF only
# (normalised by default), "cr" = bare CR, "nul" = NUL (always rejected).
SMG_ROWS = [
    ("SMG-01", "lflf", b"\n.\n", "lf"),
    ("SMG-02", "lfcrlf", b"\n.\r\n", "lf"),
    ("SMG-03", "crlflf", b"\r\n.\n", "lf"),
    ("SMG-04", "crcr", b"\r.\r", "cr"),
    ("SMG-05", "crlf", b"\r.\n", "cr"),
    ("SMG-06", "lfcr", b"\n.\r", "cr"),
    ("SMG-07", "crcrlf", b"\r.\r\n", "cr"),
    ("SMG-08", "crlfcr", b"\r\n.\r", "cr"),
    ("SMG-09", "nullbefore", b"\r\n\x00.\r\n", "nul"),
    ("SMG-10", "nullafter", b"\r\n.\x00\r\n", "nul"),
    ("SMG-TSV", "crlf-dot-crcrlf", b"\r\n.\r\r\n", "cr"),
    ("SMG-TSV", "crcrlf-dot-crcrlf", b"\r\r\n.\r\r\n", "cr"),
]
SMG_IDS = ["%s-%s" % (r[0], r[1]) for r in SMG_ROWS]

SMUGGLED = (b"MAIL FROM:<ceo@victim.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n"
            b"From: <ceo@victim.test>\r\nSubject: forged\r\n\r\nforged body\r\n")


def smg_stream(name, seq):
    prefix = (b"X-Moat-Test-Marker: smg\r\nFrom: <a@b.test>\r\nTo: <user@example.org>\r\n"
              b"Subject: smuggle-" + name.encode() + b"\r\n\r\nbody line")
    return prefix, prefix + seq + SMUGGLED + b".\r\n"


def test_smg_table_matches_conformance_tsv():
    """The embedded table is the shared conformance file (noticed if it grows)."""
    if not TSV.exists():
        pytest.skip("%s not present" % TSV)
    rows = [l.split("\t") for l in TSV.read_text().splitlines()[1:] if l.strip()]
    tsv = {r[0]: r[1].encode().decode("unicode_escape").encode("latin-1") for r in rows}
    assert set(tsv) == {r[1] for r in SMG_ROWS} | {"pipelining"}
    for _, name, seq, _ in SMG_ROWS:
        assert tsv[name] == seq, name


@pytest.fixture(scope="module")
def smg_env(workroot, moatd_binary):
    """One fake upstream + moatd per bare-lf mode, shared by the SMG tests."""
    envs = {}

    def get(mode):
        if mode not in envs:
            d = harness.make_dir(workroot / ("smg-" + mode))
            fake = harness.FakeUpstream().start()
            m = harness.Moatd(d, fake.address, name="moatd", bare_lf=mode)
            envs[mode] = (m, fake)
            try:
                m.start()
            except Exception:
                fake.stop()
                raise
        m, fake = envs[mode]
        assert m.alive(), "shared moatd (%s) died:\n%s" % (mode, m.log()[-3000:])
        fake.reset()
        return m, fake
    yield get
    problems = []
    for mode, (m, fake) in envs.items():
        m.stop()
        fake.stop()
        problems += ["%s: %s" % (mode, p) for p in conftest_check(m)]
        problems += ["%s: fake upstream error %s" % (mode, e) for e in fake.errors]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def conftest_check(m):
    from conftest import check_moatd_after
    return check_moatd_after(m)


def smg_session(m, fake, stream, cuts=None, bytewise=False, settle=0.15):
    """One client session sending stream as DATA content. Returns
    (replies as (code, enh) list, new upstream transactions, extra bytes)."""
    n0 = len(fake.transactions)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        if bytewise:
            c.send_bytewise(stream, pause=0.001)
        else:
            c.send(stream, cuts=cuts, pause=0.01)
        final = c.reply(timeout=10)
        extra = c.pending(settle)
        if not c.eof:
            q = c.cmd("QUIT")
            assert q.code == 221, q
    time.sleep(settle / 3)
    with fake.lock:
        new = list(fake.transactions[n0:])
    return final, new, extra


def check_smg_outcome(mode, kind, name, seq, final, new, extra, fake):
    assert extra == b"", "replies beyond the one for the message: %r" % extra
    for t in new:
        assert b"ceo@victim.test" not in t.mail
    lines = fake.all_lines()
    assert not any(b"victim.test" in l for l in lines), "smuggled command ran upstream: %r" % lines
    rejected = kind in ("cr", "nul") or mode == "reject"
    if rejected:
        assert final.code == 550, final
        if kind == "lf":
            assert final.enh == "5.6.11", final
        else:
            assert final.enh == "5.6.0", final
        assert [t for t in new if t.complete] == [], "rejected message reached the upstream"
        assert b"forged body" not in fake.all_raw()
        return
    assert final.code == 250, final
    done = [t for t in new if t.complete]
    assert len(done) == 1, new
    t = done[0]
    assert t.accepted and t.mail.split(b" ")[0] == b"<a@b.test>"
    assert t.rcpts == [b"<user@example.org>"]
    data = t.data_raw
    assert canonical_crlf(data), "non-canonical line ends upstream: %r" % data
    assert b"\r\n.\r\n" not in b"\r\n" + data
    body = after_marker(data)
    # the smuggled commands are body text of the one message
    assert b"\r\nMAIL FROM:<ceo@victim.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n" in body
    assert body.endswith(b"\r\nforged body\r\n")
    if name in ("lflf", "lfcrlf"):
        # SMG-01/02: the "." line arrived after a bare LF, goes up as ".."
        assert b"body line\r\n..\r\nMAIL FROM:<ceo@victim.test>" in body, body
    else:  # crlflf: "." after a real CRLF, unstuffed to an empty line (or kept as "..")
        assert (b"body line\r\n\r\nMAIL FROM:<ceo@victim.test>" in body or
                b"body line\r\n..\r\nMAIL FROM:<ceo@victim.test>" in body), body


@pytest.mark.parametrize("mode", ["normalise", "reject"])
@pytest.mark.parametrize("case", SMG_ROWS, ids=SMG_IDS)
def test_smg_01_10_eod_sequences(smg_env, case, mode):
    sid, name, seq, kind = case
    m, fake = smg_env(mode)
    _, stream = smg_stream(name, seq)
    final, new, extra = smg_session(m, fake, stream)
    check_smg_outcome(mode, kind, name, seq, final, new, extra, fake)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["normalise", "reject"])
@pytest.mark.parametrize("case", SMG_ROWS, ids=SMG_IDS)
def test_smg_12_chunking_invariance(smg_env, case, mode):
    """Every cut of the interesting region (the sequence +- a few bytes) into
    separate writes, and one byte per write: same replies, same upstream bytes."""
    sid, name, seq, kind = case
    m, fake = smg_env(mode)
    prefix, stream = smg_stream(name, seq)

    def summary(final, new):
        done = [t for t in new if t.complete]
        return ((final.code, final.enh),
                [after_marker(t.data_raw) for t in done],
                [(t.mail, tuple(t.rcpts)) for t in done])

    final, new, extra = smg_session(m, fake, stream)
    check_smg_outcome(mode, kind, name, seq, final, new, extra, fake)
    ref = summary(final, new)
    lo = max(1, len(prefix) - 3)
    hi = min(len(stream) - 1, len(prefix) + len(seq) + 4)
    variants = [("cut@%d" % k, dict(cuts=[k])) for k in range(lo, hi + 1)]
    variants.append(("cuts-region", dict(cuts=list(range(lo, hi + 1)))))
    variants.append(("terminator-split", dict(cuts=[len(stream) - 4, len(stream) - 2,
                                                    len(stream) - 1])))
    variants.append(("bytewise", dict(bytewise=True)))
    diffs = []
    for label, kw in variants:
        final, new, extra = smg_session(m, fake, stream, settle=0.05, **kw)
        got = summary(final, new)
        if got != ref or extra:
            diffs.append((label, got, extra))
    assert not diffs, "chunking changed the outcome (ref %r): %r" % (ref, diffs[:3])


def test_smg_11_pipelined_transaction_after_dot(moatd_fake):
    """D2: commands pipelined after a correct end of data form a second,
    separate transaction, with the same boundaries upstream."""
    m, fake = moatd_fake
    msg1 = message("smg-11-first", extra_headers=["X-Moat-Test-Marker: 1"])
    msg2 = message("smg-11-second", extra_headers=["X-Moat-Test-Marker: 2"], mfrom="second@b.test")
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg1) + b"\r\n.\r\nMAIL FROM:<second@b.test>\r\n"
               b"RCPT TO:<user2@example.org>\r\nDATA\r\n")
        rs = c.replies(4, timeout=10)
        assert codes(rs) == [250, 250, 250, 354], rs
        c.send(dot_stuff(msg2) + b"\r\n.\r\n")
        assert c.reply(timeout=10).code == 250
        assert c.cmd("QUIT").code == 221
    t = fake.completed()
    assert len(t) == 2, t
    assert t[0].mail.split(b" ")[0] == b"<a@b.test>" and t[0].rcpts == [b"<user@example.org>"]
    assert t[1].mail.split(b" ")[0] == b"<second@b.test>" and t[1].rcpts == [b"<user2@example.org>"]
    assert after_marker(t[0].content) == msg1 + b"\r\n"
    assert after_marker(t[1].content) == msg2 + b"\r\n"


def test_smg_11b_content_pipelined_before_354(moatd_fake):
    """hannob 'pipelining': the whole second message in the same write,
    content before its 354. Either D2 (two transactions, same boundaries) or
    a synchronisation error (PIP-02: 554 5.5.0 and close); never merged, never
    the second message's lines run as commands."""
    m, fake = moatd_fake
    msg1 = message("smg-11b-first", extra_headers=["X-Moat-Test-Marker: 1"])
    msg2 = message("smg-11b-second", extra_headers=["X-Moat-Test-Marker: 2"])
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg1) + b"\r\n.\r\nMAIL FROM:<second@b.test>\r\n"
               b"RCPT TO:<user2@example.org>\r\nDATA\r\n" + dot_stuff(msg2) + b"\r\n.\r\n")
        first = c.reply(timeout=10)
        assert first.code == 250, first
        rest = []
        for _ in range(4):
            try:
                rest.append(c.reply(timeout=5))
            except (harness.ConnectionClosed, socket.timeout):
                break
            if rest[-1].code == 554:
                break
    t = fake.completed()
    assert t and after_marker(t[0].content) == msg1 + b"\r\n"
    if codes(rest) == [250, 250, 354, 250]:
        assert len(t) == 2
        assert after_marker(t[1].content) == msg2 + b"\r\n"
    else:
        assert rest and rest[-1].code == 554, rest
        assert len(t) == 1


def test_smg_13_dot_lines_and_bare_cr_line(moatd_fake):
    m, fake = moatd_fake
    body = b".\r\n..\r\n...x\r\n. x\r\nend\r\n"
    msg = message("smg-13", body=body, extra_headers=["X-Moat-Test-Marker: 1"])
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, msg)
        assert rs[-1].code == 250, rs
        # a ".\r" line: bare CR, rejected after the real end of data
        c.cmd("MAIL FROM:<a@b.test>")
        c.cmd("RCPT TO:<user@example.org>")
        assert c.cmd("DATA").code == 354
        c.send(b"X-Moat-Test-Marker: 2\r\nSubject: smg-13-cr\r\n\r\nx\r\n.\r\r\nmore\r\n.\r\n")
        r = c.reply()
        assert r.code == 550, r
        assert c.cmd("NOOP").code == 250
    t = fake.completed()
    assert len(t) == 1
    assert after_marker(t[0].content) == msg
    assert after_marker(t[0].data_raw) == dot_stuff(msg)
    assert b"smg-13-cr" not in fake.all_raw()


@pytest.mark.postfix
@pytest.mark.timeout(90)
def test_smg_14_smuggling_against_postfix_default(postfix, moatd_factory):
    """All sequences through moatd into Postfix 3.7 with its default
    smtpd_forbid_bare_newline = no: one delivered message per bare-LF row,
    none for the rejected rows, never a message from the smuggled sender."""
    m = moatd_factory("127.0.0.1:%d" % postfix.port)
    tagbase = "smg14-%d-" % m.port
    for sid, name, seq, kind in SMG_ROWS:
        _, stream = smg_stream(tagbase + name, seq)
        with m.client() as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@b.test>").code == 250
            assert c.cmd("RCPT TO:<user@example.org>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(stream)
            r = c.reply(timeout=10)
            assert r.code == (250 if kind == "lf" else 550), (name, r)
            assert c.pending(0.1) == b""
            c.cmd("QUIT")
    for sid, name, seq, kind in SMG_ROWS:
        if kind == "lf":
            got = postfix.wait_messages_with(("smuggle-" + tagbase + name + "\n").encode(), 1, 15)
            assert len(got) == 1, (name, len(got))
    time.sleep(1.0)
    for sid, name, seq, kind in SMG_ROWS:
        got = postfix.messages_with(("smuggle-" + tagbase + name + "\n").encode())
        assert len(got) == (1 if kind == "lf" else 0), name
    log = postfix.log()
    assert "ceo@victim.test" not in log, [l for l in log.splitlines() if "victim" in l]
    for msg in postfix.messages():
        assert not msg.startswith(b"Return-Path: <ceo@victim.test>")


# ===========================================================================
# UPS - upstream failures


UPS_SINK_CASES = [
    # (id, sink flags, stage, expected code, expected enh)
    ("MAIL-5xx", ["-f", "MAIL"], "MAIL", 500, "5.3.0"),
    ("MAIL-4xx", ["-r", "MAIL"], "MAIL", 450, "4.3.0"),
    ("RCPT-5xx", ["-f", "RCPT"], "RCPT", 500, "5.3.0"),
    ("RCPT-4xx", ["-r", "RCPT"], "RCPT", 450, "4.3.0"),
    ("DATA-5xx", ["-f", "DATA"], "DATA", 500, "5.3.0"),
    ("DATA-4xx", ["-r", "DATA"], "DATA", 450, "4.3.0"),
    ("DOT-5xx", ["-f", "."], ".", 500, "5.3.0"),
    ("DOT-4xx", ["-r", "."], ".", 450, "4.3.0"),
]


@pytest.mark.parametrize("case", UPS_SINK_CASES, ids=["UPS-04-" + c[0] for c in UPS_SINK_CASES])
def test_ups_04_upstream_rejects(sink_factory, moatd_factory, case):
    cid, flags, stage, code, enh = case
    sink = sink_factory(flags)
    m = moatd_factory(sink.address)
    with m.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@b.test>")
        if stage == "MAIL":
            assert (r.code, r.enh) == (code, enh), r
            r2 = c.cmd("RCPT TO:<user@example.org>")
            assert r2.code == 503, r2
        else:
            assert r.code == 250, r
            r = c.cmd("RCPT TO:<user@example.org>")
            if stage == "RCPT":
                assert (r.code, r.enh) == (code, enh), r
                d = c.cmd("DATA")
                assert d.code in (503, 554), d
            else:
                assert r.code == 250, r
                d = c.cmd("DATA")
                assert d.code == 354, d   # moatd answers 354 itself
                c.send(dot_stuff(message("ups-04-" + cid)) + b".\r\n")
                final = c.reply(timeout=10)
                assert (final.code, final.enh) == (code, enh), final
        assert c.cmd("RSET").code == 250
        assert c.cmd("QUIT").code == 221
    if stage != ".":        # smtp-sink keeps the dump of a transaction whose dot it refused
        time.sleep(0.2)
        assert sink.dumps() == []


@pytest.mark.parametrize("stage", ["MAIL", "."])
def test_ups_03_upstream_421_and_disconnect(sink_factory, moatd_factory, stage):
    sink = sink_factory(["-Q", stage])
    m = moatd_factory(sink.address)
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("ups-421"))
        assert rs[-1].cls == 4, rs
    if stage != ".":
        assert sink.dumps() == []


def test_ups_06_upstream_closes_after_dot_without_reply(sink_factory, moatd_factory):
    sink = sink_factory(["-q", "."])
    m = moatd_factory(sink.address)
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("ups-06"))
        assert codes(rs[:3]) == [250, 250, 354]
        assert rs[-1].cls == 4, rs[-1]
        assert rs[-1].code in (421, 451), rs[-1]


def test_ups_upstream_closes_mid_data(fake_factory, moatd_factory):
    fake = fake_factory(close_after_data_bytes=2000)
    m = moatd_factory(fake.address)
    body = b"".join(b"line %05d of a longer message\r\n" % i for i in range(700))
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("ups-mid-data", body=body))
        assert codes(rs[:3]) == [250, 250, 354]
        assert rs[-1].cls == 4, rs[-1]
        # the session goes on (or was closed with a 421)
        if rs[-1].code != 421:
            assert c.cmd("RSET").code == 250
    assert fake.completed() == []


@pytest.mark.timeout(60)
def test_ups_sink_killed_while_client_in_data(sink, moatd_factory):
    m = moatd_factory(sink.address)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: killed\r\n\r\nfirst half\r\n")
        time.sleep(0.2)
        sink.kill()
        time.sleep(0.2)
        c.send(b"second half\r\n.\r\n")
        r = c.reply(timeout=15)
        assert r.cls == 4, r


def test_ups_01_no_upstream_listening(moatd_factory):
    dead = harness.free_port()
    m = moatd_factory("127.0.0.1:%d" % dead)
    with m.client() as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.cmd("MAIL FROM:<a@b.test>", timeout=10)
        assert r.code == 421, r
        assert r.enh.startswith("4."), r
        assert time.monotonic() - t0 < 5


def test_ups_02_upstream_accepts_but_never_greets(fake_factory, moatd_factory):
    fake = fake_factory(replies={"CONNECT": "HANG"})
    m = moatd_factory(fake.address, upstream_timeout="2s", upstream_connect_timeout="2s")
    with m.client() as c:
        c.ehlo()
        t0 = time.monotonic()
        r = c.cmd("MAIL FROM:<a@b.test>", timeout=10)
        el = time.monotonic() - t0
        assert r.cls == 4, r
        assert el < 6, el


def test_ups_03_upstream_greets_554(fake_factory, moatd_factory):
    fake = fake_factory(replies={"CONNECT": "554 5.7.1 go away"})
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@b.test>")
        assert r.cls == 4, "a transient upstream state must give 4xx, got %s" % r


@pytest.mark.parametrize("garbage", ["this is not smtp", "250-ok\n354 mixed codes",
                                     "2x0 bad code", "250 " + "x" * 600])
def test_ups_07_garbage_reply_to_mail(fake_factory, moatd_factory, garbage):
    fake = fake_factory(replies={"MAIL": garbage})
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@b.test>")
        assert r.cls == 4, r


def test_ups_09_250_instead_of_354(fake_factory, moatd_factory):
    fake = fake_factory(replies={"DATA": "250 2.0.0 what"})
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("ups-09-secret-body"))
        assert codes(rs[:3]) == [250, 250, 354]
        assert_no_2xx(rs[-1], "final reply when the upstream answered DATA with 250")
    assert b"ups-09-secret-body" not in fake.all_raw()


# ===========================================================================
# FLD - session caps


def test_fld_01_per_client_session_cap(fake, moatd_factory):
    m = moatd_factory(fake.address, max_sessions_per_client=2)
    held = []
    try:
        for _ in range(2):
            c = m.client(source="127.0.0.7")
            assert c.greeting.code == 220, c.greeting
            held.append(c)
        third = m.client(source="127.0.0.7")
        held.append(third)
        assert third.greeting.code == 421, third.greeting
        assert third.greeting.enh == "4.7.0", third.greeting
        assert third.wait_closed(3)
        # the refusal's line names the client (no session, so no disconnect line)
        assert m.wait_log(r"refuse reason=max-sessions-per-client "
                          r"client=unknown\[127\.0\.0\.7\]:\d+ "), m.log()[-2000:]
        other = m.client(source="127.0.0.8")
        held.append(other)
        assert other.greeting.code == 220
        assert held[0].cmd("NOOP").code == 250
        assert held[1].cmd("NOOP").code == 250
        # a freed slot is usable again
        held[0].cmd("QUIT")
        held[0].close()

        def retry():
            c = m.client(source="127.0.0.7")
            held.append(c)
            return c.greeting.code == 220
        assert wait_for(retry, 3, 0.2)
    finally:
        for c in held:
            c.close()


def test_fld_06_total_session_cap(fake, moatd_factory):
    m = moatd_factory(fake.address, max_sessions=3, max_sessions_per_client=50)
    held = []
    try:
        for i in range(3):
            c = m.client(source="127.0.0.%d" % (11 + i))
            held.append(c)
            assert c.greeting.code == 220
        c = m.client(source="127.0.0.14")
        held.append(c)
        assert c.greeting.code == 421 and c.greeting.enh == "4.7.0", c.greeting
        assert m.wait_log(r"refuse reason=max-sessions "
                          r"client=unknown\[127\.0\.0\.14\]:\d+ "), m.log()[-2000:]
        assert held[2].cmd("NOOP").code == 250
    finally:
        for c in held:
            c.close()


# ===========================================================================
# LEN - over-long lines, sizes


def test_len_01_command_line_length(moatd_fake):
    m, fake = moatd_fake
    with m.client() as c:
        c.ehlo()
        ok = c.cmd("NOOP " + "x" * 505)          # 512 bytes with CRLF
        assert not (ok.code == 500 and ok.enh == "5.5.2"), ok
        r = c.cmd("NOOP " + "x" * 593)           # 600 bytes with CRLF
        assert r.code == 500 and r.enh == "5.5.2", r
        try:
            r = c.cmd("NOOP")
            assert r.code == 250, r
        except harness.ConnectionClosed:
            pass
    with m.client() as c:
        assert c.greeting.code == 220
        c.ehlo()
        assert smtp_transaction(c, message("len-01"))[-1].code == 250


@pytest.mark.timeout(60)
def test_len_01_100k_without_crlf(moatd_fake):
    m, fake = moatd_fake
    c = m.client()
    c.ehlo()
    try:
        c.send(b"A" * 100 * 1024)
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = None
    try:
        r = c.reply(timeout=3)
    except socket.timeout:
        # moatd may discard silently up to the next CRLF
        c.send(b"\r\n")
        r = c.reply(timeout=5)
    except harness.ConnectionClosed:
        r = None
    if r is not None:
        assert r.code == 500 and r.enh == "5.5.2", r
        if not c.wait_closed(0.3):
            try:
                c.send(b"\r\nNOOP\r\n")
                got = [c.reply(timeout=5) for _ in range(2)]
            except (harness.ConnectionClosed, socket.timeout, BrokenPipeError,
                    ConnectionResetError):
                got = []
            # the tail of the long line is discarded (maybe one more 500),
            # then the session is in sync again
            if got:
                assert 250 in codes(got) or all(x.code == 500 for x in got), got
    c.close()
    assert m.alive()
    with m.client() as c2:
        assert c2.greeting.code == 220
        assert c2.cmd("NOOP").code == 250


@pytest.fixture
def moatd_small(fake, moatd_factory):
    return moatd_factory(fake.address, max_message_size="10k"), fake


def test_len_05_message_over_limit_rejected_after_real_end(moatd_small):
    m, fake = moatd_small
    with m.client() as c:
        c.ehlo()
        size = [l for l in c.ehlo().lines if l.upper().startswith("SIZE")]
        assert size and size[0].split()[1:] == ["10240"], size
        # control: under the limit passes
        small = message("len-05-small", body=("y" * 78 + "\r\n") * 100,
                        extra_headers=["X-Moat-Test-Marker: 1"])
        assert smtp_transaction(c, small)[-1].code == 250
        # over the limit, with command-looking lines past the limit
        body = (b"z" * 78 + b"\r\n") * 150 + b"RSET\r\nMAIL FROM:<past-limit@b.test>\r\nNOOP\r\n"
        rs = smtp_transaction(c, message("len-05-big", body=body))
        assert codes(rs[:3]) == [250, 250, 354]
        assert (rs[-1].code, rs[-1].enh) == (552, "5.3.4"), rs[-1]
        assert c.pending(0.3) == b""
        assert c.cmd("NOOP").code == 250
    done = fake.completed()
    assert len(done) == 1 and b"len-05-small" in done[0].data_raw
    raw = fake.all_raw()
    assert b"len-05-big" not in raw and b"past-limit" not in raw


def test_len_06_size_parameter_over_limit(moatd_small):
    m, fake = moatd_small
    with m.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@b.test> SIZE=20000")
        assert r.code == 552 and r.enh == "5.3.4", r
        r = c.cmd("MAIL FROM:<a@b.test> SIZE=5000")
        assert r.code == 250, r
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("len-06-lie", body=("q" * 78 + "\r\n") * 250)) + b".\r\n")
        r = c.reply()
        assert (r.code, r.enh) == (552, "5.3.4"), r
        for bad in ("SIZE=abc", "SIZE=-1", "SIZE=99999999999999999999"):
            r = c.cmd("MAIL FROM:<a@b.test> " + bad)
            assert r.cls == 5, (bad, r)
    assert fake.completed() == []


def test_len_02_text_line_length(moatd_fake):
    """max-line-length 998: a 998-byte text line passes unchanged (never
    split), a 999-byte one gets the message rejected after the end of data."""
    m, fake = moatd_fake
    ok_line = b"a" * 998
    with m.client() as c:
        c.ehlo()
        msg = message("len-02-ok", body=ok_line + b"\r\n", extra_headers=["X-Moat-Test-Marker: 1"])
        assert smtp_transaction(c, msg)[-1].code == 250
        rs = smtp_transaction(c, message("len-02-long", body=b"b" * 999 + b"\r\n"))
        assert rs[-1].cls == 5, rs[-1]
        assert c.cmd("NOOP").code == 250
    t = fake.completed()
    assert len(t) == 1
    assert after_marker(t[0].content) == msg
    assert b"len-02-long" not in fake.all_raw()


def test_slo_07_client_half_closes_in_data(moatd_fake):
    m, fake = moatd_fake
    c = m.client()
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@b.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"Subject: slo-07\r\n\r\nhalf a message\r\n")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.wait_closed(5)
    assert not re.search(rb"^2\d\d", c.tail, re.M), c.tail
    c.close()
    time.sleep(0.3)
    assert fake.completed() == []
    assert b"half a message" not in fake.all_raw()


def test_d6_big_message_spilled_to_spool(fake, moatd_factory):
    m = moatd_factory(fake.address, spool_memory="64k")
    body = b"".join(b"%06d spool line with some text to make it longer....\r\n" % i
                    for i in range(6000))
    msg = message("d6-spool", body=body, extra_headers=["X-Moat-Test-Marker: 1"])
    assert len(msg) > 300 * 1024
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, msg)
        assert rs[-1].code == 250, rs
    t = fake.completed()
    assert len(t) == 1
    assert after_marker(t[0].content) == msg


# ===========================================================================
# RCP - recipients


def test_rcp_01_too_many_recipients(fake, moatd_factory):
    m = moatd_factory(fake.address, max_recipients=5)
    with m.client() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\n" +
               b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(7)))
        rs = c.replies(8)
        assert codes(rs) == [250] * 6 + [452, 452], rs
        assert rs[6].enh == "4.5.3" and rs[7].enh == "4.5.3", rs[6:]
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("rcp-01")) + b".\r\n")
        assert c.reply().code == 250
    t = fake.completed()
    assert len(t) == 1
    assert t[0].rcpts == [b"<r%d@example.org>" % i for i in range(5)]


def test_rcp_05_out_of_order_commands(moatd_fake):
    m, fake = moatd_fake
    with m.client() as c:
        c.ehlo()
        assert c.cmd("RCPT TO:<user@example.org>").code == 503
        assert c.cmd("DATA").code in (503, 554)
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("DATA").code in (503, 554)
        assert c.cmd("RSET").code == 250
    assert fake.completed() == []


# ===========================================================================
# SLO - slow clients


@pytest.mark.timeout(30)
def test_slo_02_command_deadline(fake, moatd_factory):
    m = moatd_factory(fake.address, command_deadline="2s")
    c = m.client()
    c.ehlo()
    line = b"NOOP " + b"x" * 40
    t0 = time.monotonic()
    got = b""
    closed_at = None
    for i in range(len(line)):
        try:
            c.sock.sendall(line[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic()
            break
        r, _, _ = select.select([c.sock], [], [], 0.5)
        if r:
            try:
                chunk = c.sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                closed_at = time.monotonic()
                break
            got += chunk
        if time.monotonic() - t0 > 8:
            break
    if closed_at is None and c.wait_closed(3):
        closed_at = time.monotonic()
        got += c.tail
    c.close()
    assert got.startswith(b"421"), got
    assert re.match(rb"421[ -]4\.4\.2", got), got
    assert closed_at is not None, "connection not closed after the 421"
    el = closed_at - t0
    assert 1.5 <= el <= 3.5, "closed after %.2fs (deadline 2s)" % el
    assert m.alive()


# ===========================================================================
# smtp-source load


@pytest.mark.timeout(90)
def test_smtp_source_20_messages_5_sessions(moatd_sink):
    m, sink = moatd_sink
    r = subprocess.run(["smtp-source", "-s", "5", "-m", "20", "-f", "a@b.test",
                        "-t", "user@example.org", "127.0.0.1:%d" % m.port],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert r.returncode == 0, r.stdout
    dumps = sink.wait_dumps(20, 10)
    assert len(dumps) == 20
    assert all(d.mail == "<a@b.test>" and d.rcpts == ["<user@example.org>"] for d in dumps)


# ===========================================================================
# configuration check


GOOD_CONF = """\
hostname            mx.example.test
listen              127.0.0.1:2525
listen              [::1]:2525
workers             2
upstream            127.0.0.1:10025
upstream-identity   xclient
max-sessions        1000
max-message-size    10m
bare-lf             normalise
log                 stderr
log-level           info
"""


def test_config_check_sample_conf(workdir, moatd_binary):
    text = (harness.REPO / "sample.conf").read_text()
    rc, out, p = harness.moatd_check(text, workdir, "sample.conf")
    assert rc == 0, out
    assert "configuration OK" in out


def test_config_check_good(workdir, moatd_binary):
    rc, out, p = harness.moatd_check(GOOD_CONF, workdir)
    assert rc == 0, out
    assert "configuration OK" in out


@pytest.mark.parametrize("bad_line,col_re", [
    ("frobnicate          yes", r"1"),
    ("max-sessions        abc", r"\d+"),
    ("bare-lf             sometimes", r"\d+"),
    ("listen              127.0.0.1:99999", r"\d+"),
    ("max-message-size    10q", r"\d+"),
])
def test_config_check_bad(workdir, moatd_binary, bad_line, col_re):
    lines = GOOD_CONF.splitlines()
    lines.insert(4, bad_line)       # line 5
    rc, out, p = harness.moatd_check("\n".join(lines) + "\n", workdir)
    assert rc != 0, out
    assert "configuration OK" not in out
    assert re.search(r"%s:5:%s: " % (re.escape(str(p)), col_re), out), out


# ===========================================================================
# CRS - shutdown


@pytest.mark.timeout(30)
def test_crs_sigterm_while_upstream_quit_pending(fake_factory, moatd_factory):
    """The client disconnects (EOF, no QUIT) right after its message while
    moatd's upstream connection is still closing (the upstream never answers
    QUIT); SIGTERM then: moatd exits 0 within drain-timeout, without leaks
    (the fixture fails the test on a sanitizer report or a non-zero exit)."""
    fake = fake_factory(replies={"QUIT": "HANG"})
    m = moatd_factory(fake.address, drain_timeout="2s")
    for i in range(3):
        c = m.client()
        c.ehlo()
        assert smtp_transaction(c, message("crs-%d" % i))[-1].code == 250
        c.close()
    t0 = time.monotonic()
    rc = m.stop(timeout=10)
    assert rc == 0, m.log()[-2000:]
    assert time.monotonic() - t0 < 5
    assert not m.sanitizer_reports(), "\n".join(m.sanitizer_reports())


@pytest.mark.timeout(30)
def test_crs_sigterm_drains_session_in_progress(fake, moatd_factory):
    """SIGTERM: the session in DATA may finish within drain-timeout (250 and
    delivered), no new session is accepted, then moatd exits 0."""
    m = moatd_factory(fake.address, drain_timeout="5s")
    c = m.client()
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@b.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"X-Moat-Test-Marker: drain\r\nSubject: drain\r\n\r\nfirst\r\n")
    m.signal(harness.signal.SIGTERM)
    assert m.wait_log(r"shutdown", 3)
    time.sleep(0.3)
    late_ok = False
    try:
        late = Client(m.port, timeout=2)
        late_ok = late.greeting.code == 220
        late.close()
    except (OSError, harness.ConnectionClosed, socket.timeout):
        pass
    assert not late_ok, "a new session was accepted after SIGTERM"
    c.send(b"second\r\n.\r\n")
    r = c.reply(timeout=5)
    assert r.code == 250, r
    c.close()
    assert wait_for(lambda: not m.alive(), 8), "moatd still running after the drain"
    m.stop()
    assert m.rc == 0
    t = fake.completed()
    assert len(t) == 1 and after_marker(t[0].content).endswith(b"first\r\nsecond\r\n")
