"""Self-tests of the harness against the real upstreams, without moatd.

If these fail, the proxy tests' verdicts mean nothing."""

import subprocess
import time

import pytest

import harness
from harness import Client, message, smtp_transaction


def test_harness_client_against_sink(sink):
    with Client(sink.port) as c:
        assert c.greeting.code == 220
        r = c.ehlo("h.test")
        assert "PIPELINING" in r.keywords()
        replies = smtp_transaction(c, message("harness-1", body=".dot\r\nx\r\n"),
                                   rcpts=["u1@example.org", "u2@example.org"])
        assert [x.code for x in replies] == [250, 250, 250, 354, 250]
        assert replies[0].enh == "2.1.0"
        assert c.cmd("QUIT").code == 221
        assert c.wait_closed(3)
    dumps = sink.wait_dumps(1)
    assert len(dumps) == 1
    d = dumps[0]
    assert d.client_addr == "127.0.0.1"
    assert d.helo == "h.test"
    assert d.mail == "<a@b.test>"
    assert d.rcpts == ["<u1@example.org>", "<u2@example.org>"]
    assert b"Subject: harness-1" in d.content
    assert b"\n.dot\n" in d.content


def test_harness_sink_fault_flags(sink_factory):
    s = sink_factory(["-r", "RCPT"])
    with Client(s.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        r = c.cmd("RCPT TO:<u@example.org>")
        assert r.code == 450 and r.enh == "4.3.0"


def test_harness_fake_upstream_records_bytes(fake_factory):
    f = fake_factory(replies={"RCPT": lambda a: "550 5.1.1 no" if b"bad" in a else None})
    with Client(f.port) as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<ok@example.org>\r\n"
               b"RCPT TO:<bad@example.org>\r\nDATA\r\n")
        rs = c.replies(4)
        assert [r.code for r in rs] == [250, 250, 550, 354]
        c.send(b"l1\r\n..l2\r\n.\r\n", cuts=[1, 5, 9])
        assert c.reply().code == 250
    t = f.wait_completed(1)
    assert len(t) == 1
    assert t[0].mail == b"<a@b.test>"
    assert t[0].rcpts == [b"<ok@example.org>"]
    assert t[0].data_raw == b"l1\r\n..l2\r\n"
    assert t[0].content == b"l1\r\n.l2\r\n"


def test_harness_fake_upstream_close_mid_data(fake_factory):
    f = fake_factory(close_after_data_bytes=10)
    with Client(f.port) as c:
        c.ehlo()
        assert [r.code for r in smtp_transaction(c, b"x" * 5)] == [250, 250, 354, 250]
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n")
        assert [r.code for r in c.replies(3)] == [250, 250, 354]
        c.send(b"y" * 100 + b"\r\n.\r\n")
        assert c.wait_closed(3)
    assert len(f.completed()) == 1


def test_harness_client_wait_closed_and_pending(sink):
    c = Client(sink.port)
    assert c.pending(0.2) == b""
    c.send(b"QUIT\r\n")
    assert c.reply().code == 221
    assert c.wait_closed(3)
    c.close()


@pytest.mark.postfix
@pytest.mark.timeout(60)
def test_harness_postfix_xclient_delivery(postfix):
    """XCLIENT straight to the private Postfix: the delivered Received header
    carries the XCLIENT address (so the proxy test can trust this check)."""
    with Client(postfix.port) as c:
        r = c.ehlo("relay.test")
        assert "XCLIENT" in r.keywords()
        r = c.cmd("XCLIENT NAME=client.test ADDR=127.0.0.77 PORT=4242 PROTO=ESMTP HELO=orig.test")
        assert r.code == 220
        c.ehlo("relay.test")
        replies = smtp_transaction(c, message("harness-postfix-xclient"))
        assert replies[-1].code == 250, replies
        c.cmd("QUIT")
    msgs = postfix.wait_messages_with("harness-postfix-xclient")
    assert len(msgs) == 1
    assert b"[127.0.0.77]" in msgs[0]
    assert "client=client.test[127.0.0.77]" in postfix.log()


def test_harness_swaks_and_smtp_source_present():
    for prog in (["swaks", "--version"], ["smtp-source"]):
        r = subprocess.run(prog, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        assert r.stdout  # prints a version or its usage
