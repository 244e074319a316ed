"""Prometheus metrics (issue 15): metrics-listen serves GET /metrics in the
text exposition format from moatd and moat-milter; after a known mix of
messages the counts match, promtool accepts the page, and a reload
(SIGHUP) keeps the counters."""

import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from harness import Client, free_port, message, smtp_transaction
from test_milter_raw import milter_factory, dns_srv, transaction  # noqa: F401 (fixtures)


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def promtool_ok(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    # promtool's linter exits 3 for style hints only (e.g. a counter's
    # unit); a syntax error is exit 1
    out = (p.stdout + p.stderr).decode()
    assert p.returncode in (0, 3) and "error" not in out.lower(), out
    return out


def value(text, name, **labels):
    """The value of one series (labels as given, in any order), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == {k: str(v) for k, v in labels.items()}:
            return float(m.group(3))
    return None


def test_moatd_metrics_after_a_known_mix(fake_factory, moatd_factory):
    mport = free_port()
    f = fake_factory(replies={
        "RCPT": lambda arg: "550 5.1.1 no such user" if b"nobody" in arg else None,
        ".": lambda arg: None})
    m = moatd_factory(f.address, metrics_listen="127.0.0.1:%d" % mport,
                      list=["bad-senders address { @blocked.test }"],
                      on=['mail sender in bad-senders reject 550 5.7.1 "sender refused"'])
    before = scrape(mport)
    promtool_ok(before)
    assert value(before, "moat_sessions_opened_total") == 0
    # 3 accepted messages (one with a recipient the upstream refuses), one
    # sender refused by moat's rule
    for i in range(3):
        with Client(m.port, m.host, timeout=8) as c:
            c.ehlo("client.example")
            rcpts = ["user@example.org"] + (["nobody@example.org"] if i == 0 else [])
            rs = smtp_transaction(c, message("mix %d" % i), rcpts=rcpts)
            assert rs[-1].code == 250, rs
            c.cmd("QUIT")
    with Client(m.port, m.host, timeout=8) as c:
        c.ehlo("client.example")
        assert c.cmd("MAIL FROM:<x@blocked.test>").code == 550
        c.cmd("QUIT")
    m.wait_log(r"verdict=reject by=moat stage=mail", timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = scrape(mport)
        if value(text, "moat_sessions_active") == 0:
            break
        time.sleep(0.1)
    promtool_ok(text)
    assert value(text, "moat_sessions_opened_total") == 4, text
    assert value(text, "moat_sessions_active") == 0
    assert value(text, "moat_transactions_total") == 3
    assert value(text, "moat_messages_total", result="accepted", by="moat") == 3
    assert value(text, "moat_refusals_total", stage="mail", by="moat") == 1
    assert value(text, "moat_refusals_total", stage="rcpt", by="upstream") == 1
    rule = [l for l in text.splitlines() if l.startswith("moat_rule_hits_total{")]
    assert len(rule) == 1 and re.search(r'rule="[^"]+moat\.conf:\d+",verdict="reject"\} 1$',
                                        rule[0]), rule
    assert value(text, "moat_upstream_replies_total", **{"class": "5xx"}) == 1
    assert value(text, "moat_upstream_replies_total", **{"class": "2xx"}) == 3 + 3 + 3
    assert value(text, "moat_upstream_connects_total") >= 1
    assert value(text, "moat_upstream_connect_failures_total") == 0
    # the counters survive a reload
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log(r"reload", timeout=5)
    after = scrape(mport)
    assert value(after, "moat_messages_total", result="accepted", by="moat") == 3
    assert value(after, "moat_sessions_opened_total") == 4
    # only /metrics, only GET
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % mport, timeout=5)
    assert e.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%d/metrics" % mport, data=b"", method="POST"), timeout=5)
    assert e.value.code in (405, 501)


def test_milter_metrics(milter_factory):  # noqa: F811
    mport = free_port()
    m = milter_factory(metrics_listen="127.0.0.1:%d" % mport)
    assert transaction(m.port)["eom"] == (b"c", "")
    assert transaction(m.port)["eom"] == (b"c", "")
    assert transaction(m.port, sender="boss@bad.test")["mail"][0] == b"y"
    time.sleep(0.3)
    text = scrape(mport)
    promtool_ok(text)
    assert value(text, "moat_sessions_opened_total") == 3, text
    assert value(text, "moat_messages_total", result="accepted", by="moat") == 2
    assert value(text, "moat_refusals_total", stage="mail", by="moat") == 1
    assert value(text, "moat_sessions_active") == 0
    assert "moat_upstream_replies_total{" not in text
    log = m.log()
    assert len(re.findall(r"verdict=accept by=moat stage=data client=\S+ helo=<client.test> "
                          r"from=<a@sender.test> to=<user@example.org>:passed", log)) == 2, log
