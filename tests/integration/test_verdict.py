"""The verdict line (issue 15): one info line per refusal and one per
transaction, from the engine, with client, helo, sender, every recipient
with its outcome, size, code, reply as sent, rule, checks, queue id, time;
and a session's one line of its own at info, "disconnect", with the same
client and helo, why it ended, its counts and length.
"""

import re

import pytest

from harness import Client, message, smtp_transaction
from test_senderauth import AUTH_RULES, zones, signed, dkim_key  # noqa: F401 (fixture)


def vlines(m, pattern=""):
    return [l for l in m.log().splitlines() if "verdict=" in l and " by=" in l and pattern in l]


def wait_vline(m, pattern, count=1, timeout=8):
    m.wait_log(re.escape(pattern), timeout=timeout, count=count)
    return vlines(m, pattern)


def fields(line):
    """key=value pairs of a verdict line (to= gathered in a list)."""
    out = {"to": []}
    for k, v in re.findall(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|\S+)', line):
        if k == "to":
            out["to"].append(v)
        else:
            out.setdefault(k, v)
    return out


def test_two_recipients_one_refused_by_upstream_and_queue_id(fake_factory, moatd_factory):
    f = fake_factory(replies={
        "RCPT": lambda arg: "550 5.1.1 <nobody@example.org>: Recipient address rejected"
        if b"nobody" in arg else None,
        ".": "250 2.0.0 Ok: queued as 4QxYz12AbC"})
    m = moatd_factory(f.address, list=["bad-senders address { @blocked.test }"],
                      on=['mail sender in bad-senders reject 550 5.7.1 "no"'])
    with Client(m.port, m.host, source="127.0.0.61", timeout=8) as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("RCPT TO:<nobody@example.org>").code == 550
        assert c.cmd("DATA").code == 354
        c.send(message("two rcpts") + b".\r\n")
        assert c.reply().code == 250
        c.cmd("QUIT")
    ref = fields(wait_vline(m, "by=upstream stage=rcpt")[0])
    assert ref["verdict"] == "reject" and ref["code"] == "550" and ref["enh"] == "5.1.1"
    assert ref["to"] == ["<nobody@example.org>:550:5.1.1"], ref
    assert ref["reply"] == '"<nobody@example.org>: Recipient address rejected"', ref
    ok = fields(wait_vline(m, "verdict=accept")[0])
    assert ok["by"] == "moat" and ok["stage"] == "data" and ok["code"] == "250"
    assert ok["client"] == "unknown[127.0.0.61]:%s" % ok["client"].rsplit(":", 1)[1]
    assert ok["helo"] == "<client.example>" and ok["from"] == "<a@sender.test>"
    assert ok["to"] == ["<user@example.org>:250:2.1.5", "<nobody@example.org>:550:5.1.1"], ok
    assert int(ok["size"]) > 0 and ok["queue_id"] == "4QxYz12AbC", ok
    assert ok["reply"].startswith('"Ok: queued as 4QxYz12AbC'), ok
    for k in ("spf", "dkim", "dmarc", "dnsbl", "greylist", "time", "rule"):
        assert k in ok, (k, ok)
    # a refusal at MAIL by moat's rule: rule=FILE:LINE, the reply as sent
    with Client(m.port, m.host, source="127.0.0.61", timeout=8) as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<x@blocked.test>").code == 550
    r = fields(wait_vline(m, "stage=mail")[0])
    assert r["verdict"] == "reject" and r["by"] == "moat" and r["reply"] == '"no"'
    assert re.fullmatch(r"\S+:\d+", r["rule"]), r


def test_upstream_refuses_after_the_dot(fake_factory, moatd_factory):
    f = fake_factory(replies={".": "554 5.7.1 Message content rejected"})
    m = moatd_factory(f.address)
    with Client(m.port, m.host, timeout=8) as c:
        c.ehlo("client.example")
        rs = smtp_transaction(c, message("refused after dot"))
        assert rs[-1].code == 554
        c.cmd("QUIT")
    r = fields(wait_vline(m, "by=upstream stage=data")[0])
    assert r["verdict"] == "reject" and r["code"] == "554" and r["enh"] == "5.7.1"
    assert r["reply"] == '"Message content rejected"' and "queue_id" not in r
    assert len(r["to"]) == 1 and r["to"][0].endswith(":250:2.1.5"), r
    assert not vlines(m, "verdict=accept")


def test_greylisted_recipient_expanded_reply(fake, moatd_factory):
    m = moatd_factory(fake.address, greylist_delay="60s", on=["rcpt true greylist"])
    with Client(m.port, m.host, source="127.0.0.62", timeout=8) as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert r.cls == 4
        c.cmd("QUIT")
    v = fields(wait_vline(m, "stage=rcpt")[0])
    assert v["verdict"] == "tempfail" and v["code"] == str(r.code) and v["by"] == "moat"
    assert v["greylist"] == "new" and v["to"][0].startswith("<user@example.org>:%d" % r.code)
    assert v["reply"] == '"%s"' % r.text.split(" ", 1)[1], (v, r.text)
    assert "$" not in v["reply"]
    assert re.fullmatch(r"\S+:\d+", v["rule"]), v
    assert "verdict=continue code=451" not in m.log()


def test_dnsbl_rejection_expanded_reply(fake, moatd_factory, dns):
    dns.add("2.0.0.127.bl.test", "A", "127.0.0.2", ttl=1)
    dns.add("63.0.0.127.bl.test", "A", "127.0.0.2", ttl=1)
    m = moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="1s",
                      dnsbl=["bl.test weight 3"],
                      on=['connect dnsbl-score >= 3 reject 554 5.7.1 "client [$ip] listed on $dnsbl"'])
    with Client(m.port, m.host, source="127.0.0.63", timeout=8) as c:
        assert c.greeting.code == 554
    v = fields(wait_vline(m, "stage=connect")[0])
    assert v["verdict"] == "reject" and v["code"] == "554" and v["enh"] == "5.7.1"
    assert v["reply"] == '"client [127.0.0.63] listed on bl.test"', v
    assert v["dnsbl"] == "3" and v["client"].startswith("unknown[127.0.0.63]:"), v


def test_dmarc_rejection_at_end_of_data(fake, moatd_factory, dns, dkim_key):  # noqa: F811
    key, pub = dkim_key
    zones(dns, pub, dmarc="v=DMARC1; p=reject", spf="v=spf1 -all")
    m = moatd_factory(fake.address, resolver=dns.resolver, spf="yes", dkim="yes",
                      dmarc="rfc7489", on=[r for r in AUTH_RULES if not r.startswith("rcpt")])
    with m.client() as c:
        c.ehlo("mail.sender.test")
        rs = smtp_transaction(c, signed(key, d="other.test"), mfrom="a@sender.test", stuff=True)
        assert rs[-1].code == 550, rs
    v = fields(wait_vline(m, "stage=data")[0])
    assert v["verdict"] == "reject" and v["by"] == "moat" and v["code"] == "550"
    assert v["reply"] == '"DMARC policy of sender.test says reject"', v
    assert v["dmarc"] == "fail" and v["spf"] == "fail", v
    assert int(v["size"]) > 0 and re.fullmatch(r"\S+:\d+", v["rule"]), v
    assert len(vlines(m)) == 1, vlines(m)


def test_abandoned_transaction_gets_its_line(fake, moatd_factory):
    m = moatd_factory(fake.address)
    with Client(m.port, m.host, timeout=8) as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<b@sender.test>").code == 250    # no recipient: no line
        c.cmd("QUIT")
    v = fields(wait_vline(m, "verdict=abandoned")[0])
    assert v["by"] == "moat" and v["code"] == "-" and "reply" not in v, v
    assert v["from"] == "<a@sender.test>" and v["to"] == ["<user@example.org>:250:2.1.5"], v
    m.wait_log("disconnect", timeout=5)
    assert len(vlines(m)) == 1, vlines(m)


# ---------------------------------------------------------------------------
# The other ends of a transaction: exactly one line each, never one that
# contradicts the reply the client got.

def reply_text(r):
    """The reply's first line as the log's reply= shows it (after the enhanced code)."""
    t = r.lines[0]
    return t[len(r.enh) + 1:] if r.enh else t


def one_line_after_disconnect(m):
    m.wait_log("disconnect", timeout=8)
    ls = vlines(m)
    assert len(ls) == 1, ls
    return fields(ls[0])


def assert_line_is_reply(v, r, by, stage):
    """The line says what the client was told: code, enhanced code, text."""
    assert v["by"] == by and v["stage"] == stage, v
    assert v["verdict"] == ("tempfail" if r.code // 100 == 4 else "reject"), (v, r)
    assert v["code"] == str(r.code) and v["enh"] == (r.enh or "-"), (v, r)
    assert v["reply"] == '"%s"' % reply_text(r), (v, r)


def open_transaction(c):
    """EHLO, then MAIL and RCPT, both accepted."""
    c.ehlo("client.example")
    assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250


def lossy_transaction(c, size=0):
    """MAIL, RCPT, DATA, the message: the replies until the first that is not
    a success (the client stops there, as a real one would)."""
    out = []
    for line in ("MAIL FROM:<a@sender.test>", "RCPT TO:<user@example.org>", "DATA"):
        r = c.cmd(line)
        out.append(r)
        if r.code not in (250, 354):
            return out
    body = message("lost upstream") if not size else \
        message("lost upstream", body=("x" * 70 + "\r\n") * (size // 72))
    c.send(body + b".\r\n")
    out.append(c.reply())
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("verb,action,stage", [
    ("MAIL", "CLOSE", "mail"), ("MAIL", "RESET", "mail"), ("MAIL", "HANG", "mail"),
    ("RCPT", "CLOSE", "rcpt"), ("RCPT", "RESET", "rcpt"), ("RCPT", "HANG", "rcpt"),
    ("DATA", "CLOSE", "data"), ("DATA", "RESET", "data"), ("DATA", "HANG", "data"),
    (".", "CLOSE", "data"), (".", "RESET", "data"), (".", "HANG", "data"),
    ("CONNECT", "CLOSE", "mail"), ("EHLO", "RESET", "mail"),
])
def test_upstream_lost_in_a_transaction_gets_its_line(fake_factory, moatd_factory, verb,
                                                       action, stage):
    """The upstream closes, resets or stops answering (upstream-timeout) in
    the middle of a transaction: the client gets moat's 4xx, and the log one
    line, by=upstream, with that code and text."""
    f = fake_factory(replies={verb: action})
    m = moatd_factory(f.address, upstream_timeout="2s")
    with Client(m.port, m.host, timeout=15) as c:
        c.ehlo("client.example")
        rs = lossy_transaction(c)
        last = rs[-1]
        assert last.code // 100 == 4, rs
        if last.code != 421:
            c.cmd("QUIT")
    v = one_line_after_disconnect(m)
    assert_line_is_reply(v, last, "upstream", stage)
    assert v["from"] == "<a@sender.test>", v
    if stage != "mail":
        assert v["to"] == ["<user@example.org>:%s" % (
            "250:2.1.5" if stage == "data" else "%d:%s" % (last.code, last.enh))], v
    if verb == "CONNECT":
        assert last.code == 421, last       # the upstream never got ready
    if verb == "MAIL" and action == "HANG":
        assert "upstream error=timeout" in m.log(), m.log()[-2000:]


@pytest.mark.timeout(60)
def test_upstream_closes_in_the_middle_of_the_message(fake_factory, moatd_factory):
    f = fake_factory(close_after_data_bytes=20000)
    m = moatd_factory(f.address, upstream_timeout="5s")
    with Client(m.port, m.host, timeout=15) as c:
        c.ehlo("client.example")
        rs = lossy_transaction(c, size=200000)
        assert [r.code for r in rs[:3]] == [250, 250, 354] and rs[-1].code == 451, rs
        c.cmd("QUIT")
    v = one_line_after_disconnect(m)
    assert_line_is_reply(v, rs[-1], "upstream", "data")
    assert int(v["size"]) > 200000 and v["to"] == ["<user@example.org>:250:2.1.5"], v


@pytest.mark.timeout(60)
@pytest.mark.parametrize("then", ["DATA", "RCPT", "RSET"])
def test_upstream_lost_while_idle_in_a_transaction(fake_factory, moatd_factory, then):
    """After the recipient's 250 the upstream goes away with nothing owed:
    the client's next command of the transaction gets 451 and the line; a
    client that resets instead was never refused: the abandoned line."""
    f = fake_factory()
    m = moatd_factory(f.address)
    with Client(m.port, m.host, timeout=15) as c:
        open_transaction(c)
        f.stop()
        m.wait_log("upstream error=", timeout=8)
        r = c.cmd({"DATA": "DATA", "RCPT": "RCPT TO:<two@example.org>", "RSET": "RSET"}[then])
        if then != "RSET":
            assert r.code == 451, r
            assert c.cmd("DATA").code == 451       # still lost: no second line
        else:
            assert r.code == 250, r
        c.cmd("QUIT")
    v = one_line_after_disconnect(m)
    if then == "RSET":
        assert v["verdict"] == "abandoned" and v["code"] == "-" and "reply" not in v, v
    else:
        assert_line_is_reply(v, r, "upstream", then.lower())
    assert v["to"] == ["<user@example.org>:250:2.1.5"], v


@pytest.mark.timeout(60)
@pytest.mark.parametrize("end", ["QUIT", "RSET", "disconnect-in-data", "disconnect"])
def test_client_ends_the_transaction(fake, moatd_factory, end):
    m = moatd_factory(fake.address)
    with Client(m.port, m.host, timeout=15) as c:
        open_transaction(c)
        if end == "disconnect-in-data":
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: half\r\n\r\nhalf a messa")
        elif end in ("QUIT", "RSET"):
            assert c.cmd(end).code in (221, 250)
            if end == "RSET":
                c.cmd("QUIT")
    v = one_line_after_disconnect(m)
    assert v["verdict"] == "abandoned" and v["code"] == "-" and "reply" not in v, v
    assert v["from"] == "<a@sender.test>" and v["to"] == ["<user@example.org>:250:2.1.5"], v
    assert not fake.accepted()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["rcpt", "data"])
def test_timeout_in_a_transaction_gets_the_421_line(fake, moatd_factory, where):
    """command-deadline (or the data's deadline) ends the session with 421:
    the transaction's line is that 421, by=moat."""
    m = moatd_factory(fake.address, command_deadline="2s", data_min_rate="1000")
    with Client(m.port, m.host, timeout=15) as c:
        open_transaction(c)
        if where == "data":
            assert c.cmd("DATA").code == 354
            c.send(b"Subject: slow\r\n\r\n")
        r = c.reply(timeout=10)
        assert r.code == 421 and "timeout" in r.text, r
    v = one_line_after_disconnect(m)
    assert_line_is_reply(v, r, "moat", where)
    assert v["to"] == ["<user@example.org>:250:2.1.5"], v


@pytest.mark.timeout(60)
def test_message_over_the_size_limit_gets_the_552_line(fake, moatd_factory):
    m = moatd_factory(fake.address, max_message_size="10k")
    with Client(m.port, m.host, timeout=15) as c:
        c.ehlo("client.example")
        rs = lossy_transaction(c, size=30000)
        assert rs[-1].code == 552, rs
        c.cmd("QUIT")
    v = one_line_after_disconnect(m)
    assert_line_is_reply(v, rs[-1], "moat", "data")
    assert not fake.accepted()


@pytest.mark.timeout(60)
def test_upstream_lost_under_pipelining_one_line(fake_factory, moatd_factory):
    """A pipelined group (RFC 2920) whose second RCPT loses the upstream: the
    client gets 250, 250, 451, 451 (DATA); the log one line, each recipient
    with the code the client got."""
    f = fake_factory(replies={"RCPT": lambda arg: "CLOSE" if b"two@" in arg else None})
    m = moatd_factory(f.address)
    with Client(m.port, m.host, timeout=15) as c:
        c.ehlo("client.example")
        c.send(b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<one@example.org>\r\n"
               b"RCPT TO:<two@example.org>\r\nDATA\r\n")
        rs = [c.reply() for _ in range(4)]
        assert [r.code for r in rs] == [250, 250, 451, 451], rs
        c.cmd("QUIT")
    v = one_line_after_disconnect(m)
    assert_line_is_reply(v, rs[2], "upstream", "rcpt")
    assert v["to"] == ["<one@example.org>:250:2.1.5",
                       "<two@example.org>:451:%s" % rs[2].enh], v


# ---------------------------------------------------------------------------
# The session's own line at info: one "disconnect" line that names the
# client as the verdict lines do, with the HELO, why the session ended, its
# counts and length; no "connect" line (that one is at debug).

def session_lines(m, sid):
    """The info lines of one session, without their "PROG[PID]: info: SID " head."""
    out = []
    for l in m.log().splitlines():
        h = re.match(r"moatd\[\d+\]: (\w+): ([0-9a-f]{16}) (.*)$", l)
        if h and h.group(2) == sid:
            out.append((h.group(1), h.group(3)))
    return out


def sid_of(m, pattern):
    h = re.search(r"info: ([0-9a-f]{16}) [^\n]*" + pattern, m.log())
    assert h, (pattern, m.log()[-3000:])
    return h.group(1)


@pytest.mark.timeout(60)
def test_info_one_verdict_and_one_disconnect_line_per_session(fake, moatd_factory):
    m = moatd_factory(fake.address, log_level="info")
    # a message: its verdict line and the disconnect line, nothing else
    with Client(m.port, m.host, source="127.0.0.64", timeout=8) as c:
        c.ehlo("client.example")
        rs = smtp_transaction(c, message("info lines"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    m.wait_log(r"disconnect client=unknown\[127\.0\.0\.64\]", timeout=8)
    sid = sid_of(m, r"disconnect client=unknown\[127\.0\.0\.64\]")
    lines = session_lines(m, sid)
    assert [l for l, _ in lines] == ["info", "info"], lines
    v, d = fields(lines[0][1]), fields(lines[1][1])
    assert lines[0][1].startswith("verdict=accept ") and lines[1][1].startswith("disconnect "), lines
    assert d["client"] == v["client"] and d["helo"] == v["helo"] == "<client.example>", (v, d)
    assert d["reason"] == "quit" and d["messages"] == "1" and d["errors"] == "0", d
    assert int(d["commands"]) >= 5 and re.fullmatch(r"\d+\.\d{3}", d["time"]), d
    assert re.fullmatch(r"\d+\.\d{3}", v["time"]), v
    assert " connect client=" not in m.log()
    # no transaction: the disconnect line alone says who came and what it did
    with Client(m.port, m.host, source="127.0.0.65", timeout=8) as c:
        c.ehlo("probe.example")
        assert c.cmd("NOOP").code == 250
        c.cmd("QUIT")
    m.wait_log(r"disconnect client=unknown\[127\.0\.0\.65\]", timeout=8)
    lines = session_lines(m, sid_of(m, r"disconnect client=unknown\[127\.0\.0\.65\]"))
    assert len(lines) == 1, lines
    d = fields(lines[0][1])
    assert d["helo"] == "<probe.example>" and d["reason"] == "quit", d
    assert d["messages"] == "0" and d["commands"] == "3" and d["errors"] == "0", d
    # gone before a word: no HELO, reason eof
    with Client(m.port, m.host, source="127.0.0.66", timeout=8) as c:
        assert c.greeting.code == 220
    m.wait_log(r"disconnect client=unknown\[127\.0\.0\.66\]", timeout=8)
    lines = session_lines(m, sid_of(m, r"disconnect client=unknown\[127\.0\.0\.66\]"))
    assert len(lines) == 1, lines
    d = fields(lines[0][1])
    assert d["helo"] == "<>" and d["reason"] == "eof" and d["commands"] == "0", d
    assert d["client"].startswith("unknown[127.0.0.66]:"), d


@pytest.mark.timeout(60)
def test_info_refused_at_connect_names_the_client(fake, moatd_factory, dns):
    """A DNSBL refusal at connect: its verdict line, then the disconnect
    line, both with the client."""
    dns.add("2.0.0.127.bl.test", "A", "127.0.0.2", ttl=1)      # the zone's probe
    dns.add("67.0.0.127.bl.test", "A", "127.0.0.2", ttl=1)
    m = moatd_factory(fake.address, log_level="info", resolver=dns.resolver, dns_timeout="1s",
                      dnsbl=["bl.test weight 3"],
                      on=['connect dnsbl-score >= 3 reject 554 5.7.1 "listed"'])
    with Client(m.port, m.host, source="127.0.0.67", timeout=8) as c:
        assert c.greeting.code == 554
    m.wait_log(r"disconnect client=unknown\[127\.0\.0\.67\]", timeout=8)
    lines = [t for l, t in session_lines(m, sid_of(m, r"disconnect client=unknown\[127\.0\.0\.67\]"))
             if not t.startswith(("check ", "policy "))]     # the checks' and rule's detail
    assert len(lines) == 2 and lines[0].startswith("verdict=reject by=moat stage=connect "), lines
    assert fields(lines[0])["client"] == fields(lines[1])["client"], lines


@pytest.mark.timeout(60)
def test_many_recipients_counted_when_the_line_is_full(fake, moatd_factory):
    """A line that cannot show every recipient shows those that fit, then
    to_more=N for the others, and keeps what follows them (size, code,
    reply, rule, checks, queue id, time)."""
    m = moatd_factory(fake.address)
    rcpts = ["recipient-number-%02d-with-a-long-local-part@example.org" % i for i in range(60)]
    with Client(m.port, m.host, source="127.0.0.62", timeout=8) as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
        for r in rcpts:
            assert c.cmd("RCPT TO:<%s>" % r).code == 250
        assert c.cmd("DATA").code == 354
        c.send(message("sixty rcpts") + b".\r\n")
        assert c.reply().code == 250
        c.cmd("QUIT")
    line = wait_vline(m, "verdict=accept")[0]
    f = fields(line)
    shown = f["to"]
    assert 0 < len(shown) < len(rcpts), len(shown)
    assert shown == ["<%s>:250:2.1.5" % r for r in rcpts[:len(shown)]], shown
    assert int(f["to_more"]) == len(rcpts) - len(shown), f
    for k in ("size", "code", "enh", "reply", "rule", "spf", "greylist", "time"):
        assert k in f, (k, line)
    assert re.search(r" time=\d+\.\d{3}$", line), line
    assert len(line.split(": ", 2)[-1]) < 2048, len(line)
