"""moat-milter: the same engine inside Postfix (smtpd_milters), verdict
parity with moatd, miltertest edge cases, and the milter killed under load.

Each scenario of SCENARIOS runs twice with the same policy file: through a
private Postfix whose smtpd_milters points at moat-milter, and through
moatd in front of the recording fake upstream. The replies to MAIL, RCPT
and the end of data (code and text) and the header fields moat added
(Authentication-Results, X-Moat-*) must be the same. A refusal by the
connect rules is compared with the first refusal each side gives: moatd
answers the greeting, the milter (no reply text at connect in libmilter)
the next command.

MOAT_MILTER names the binary (default build-asan/moat-milter).
"""

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import Client, ConnectionClosed, MoatMilter, free_port, make_dir, message
from test_senderauth import dkim_key, signed, zones  # noqa: F401 (fixture)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
LUA = HERE.parent / "milter"

pytestmark = pytest.mark.postfix
CLIENT_IP = "127.0.0.7"     # not the RFC 5782 test points (127.0.0.1, .2)


@pytest.fixture(scope="module")
def milter_port():
    return free_port()


@pytest.fixture(scope="module")
def mpostfix(workroot, milter_port):
    """A private Postfix with smtpd_milters pointing at moat-milter."""
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix needs root")
    pf = harness.Postfix(make_dir(workroot / "milter-postfix"), extra_main={
        "smtpd_milters": "inet:127.0.0.1:%d" % milter_port,
        "milter_default_action": "tempfail",
        "milter_protocol": "6",
        "milter_connect_timeout": "5s",
        "milter_command_timeout": "30s",
        "milter_content_timeout": "60s",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "default_process_limit": "100",
    })
    try:
        pf.start()
    except Exception:
        pf.stop()
        raise
    yield pf
    pf.stop()


@pytest.fixture
def milter_factory(workdir, milter_port):
    started = []

    def make(args=(), **opts):
        m = MoatMilter(workdir, milter_port, name="milter%d" % len(started), args=args, **opts)
        started.append(m)
        return m.start()
    yield make
    problems = []
    for m in started:
        alive = m.proc is not None and m.proc.poll() is None
        m.stop()
        if m.sanitizer_reports():
            problems.append("sanitizer report:\n  " + "\n  ".join(m.sanitizer_reports()[:20]))
        if alive and m.rc not in (0, None):
            problems.append("moat-milter exited %s after SIGTERM" % m.rc)
        if problems:
            problems.append("log tail:\n" + m.log()[-3000:])
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# A session, the same through both


def run_session(port, helo, mfrom, rcpts, data):
    """EHLO, MAIL, RCPT..., DATA, message: the (code, text) of every step;
    a refused greeting ends it at once."""
    out = []
    try:
        c = Client(port, source=CLIENT_IP, greet=False, timeout=20)
    except OSError as e:
        return [("connect", str(e))]
    with c:
        g = c.reply()
        out.append(("greeting", g.code, g.text if g.code >= 400 else ""))
        if g.code >= 400:
            return out
        r = c.cmd("EHLO " + helo)
        out.append(("ehlo", r.code, r.text if r.code >= 400 else ""))
        if r.code >= 400:
            return out
        r = c.cmd("MAIL FROM:<%s>" % mfrom)
        out.append(("mail", r.code, r.text))
        if r.code >= 400:
            c.cmd("QUIT")
            return out
        for rc in rcpts:
            r = c.cmd("RCPT TO:<%s>" % rc)
            out.append(("rcpt", r.code, r.text))
        r = c.cmd("DATA")
        out.append(("data", r.code, r.text if r.code != 354 else ""))
        if r.code == 354:
            c.send(harness.dot_stuff(data) + b".\r\n")
            r = c.reply()
            # the accepting text is each MTA's own (queue id): only the code
            out.append(("dot", r.code, r.text if r.code >= 400 else ""))
        try:
            c.cmd("QUIT")
        except ConnectionClosed:
            pass
    return out


def first_refusal(steps):
    for s in steps:
        if s[1] >= 400:
            return s[1:]
    return None


def added_fields(content):
    """moat's fields, in order, unfolded: Authentication-Results and X-Moat-*."""
    head = content.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    head = head.replace("\r\n", "\n")
    fields = re.split(r"\n(?![ \t])", head)
    out = []
    for f in fields:
        name, _, value = f.partition(":")
        if name.lower() == "authentication-results" or name.lower().startswith("x-moat"):
            out.append((name, re.sub(r"\n[ \t]+", " ", value).strip()))
    return out


AUTH = dict(spf="yes", dkim="yes", dmarc="rfc7489")
AUTH_RULES = [
    'rcpt spf is fail reject 550 5.7.23 "SPF check failed for $sender-domain"',
    'data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 '
    '"DMARC policy of $from-domain says reject"',
]

# name, options, dns setup, helo, sender, recipients, message, expected refusal
SCENARIOS = [
    ("pass-headers", dict(on=['connect true add-header X-Moat-Connect "from [$ip]"',
                              'rcpt true add-header X-Moat-Rcpt "rcpt $rcpt"',
                              'data true add-header X-Moat-Data "size ok, $score"'])),
    ("dnsbl-rcpt", dict(dnsbl="bl.test probe no", on=[
        'rcpt dnsbl-score >= 1 reject 554 5.7.1 "client [$ip] listed: $dnsbl"'])),
    ("dnsbl-connect", dict(dnsbl="bl.test probe no", on=[
        'connect dnsbl-score >= 1 reject 554 5.7.1 "client [$ip] blocked using $dnsbl"'])),
    ("dnsbl-clear-header", dict(dnsbl="clean.test probe no", on=[
        'connect dnsbl-score < 1 add-header X-Moat-DNSBL "clear"'])),
    ("spf-fail", dict(AUTH, on=AUTH_RULES)),
    ("dkim-dmarc-pass", dict(AUTH, on=AUTH_RULES)),
    ("dmarc-reject", dict(AUTH, on=AUTH_RULES)),
    ("forged-ar", dict(AUTH, on=AUTH_RULES)),
    ("greylist", dict(greylist_delay="60s", on=['rcpt true greylist'])),
    ("greylist-spf-key", dict(spf="yes", greylist_delay="60s",
                              greylist_key="sender-domain-spf,net,sender,rcpt",
                              on=['rcpt true greylist'])),
    ("size", dict(max_message_size="2k")),
    ("sender-rule", dict(on=['mail sender-domain is bad.test reject 553 5.7.1 '
                             '"sender domain $sender-domain refused"'])),
    ("rcpt-tempfail", dict(on=['rcpt rcpt-domain is later.test tempfail 451 4.7.1 "come back, $rcpt"'])),
]


def scenario_input(name, dns, key, pub):
    """DNS records, then (helo, sender, recipients, message)."""
    dns.add("2.0.0.127.bl.test", "A", "127.0.0.2")       # RFC 5782 test point
    dns.add("7.0.0.127.bl.test", "A", "127.0.0.2")       # lists the client
    helo = "mail.sender.test"
    rcpts = ["user@example.org"]
    msg = message(name)
    sender = "a@sender.test"
    if name == "spf-fail":
        zones(dns, None, dmarc=None, spf="v=spf1 ip4:192.0.2.0/24 -all", domain="forged.test")
        sender = "x@forged.test"
        msg = message(name, mfrom=sender)
    elif name in ("dkim-dmarc-pass", "forged-ar"):
        zones(dns, pub)
        extra = ["Authentication-Results: mx.moat.test; dkim=pass header.d=sender.test"] \
            if name == "forged-ar" else []
        msg = signed(key, subject=name, extra=extra)
        if name == "forged-ar":
            msg = b"Authentication-Results: mx.moat.test; spf=pass\r\n" + msg
    elif name == "dmarc-reject":
        zones(dns, pub, spf="v=spf1 ip4:192.0.2.0/24 ~all")
        sender = "bounce@other.test"
        msg = message(name, mfrom="ceo@sender.test")
    elif name == "greylist-spf-key":
        zones(dns, None, dmarc=None)                     # SPF pass for 127/8
    elif name == "size":
        msg = message(name, body="x" * 70 + "\r\n" * 1 + ("y" * 70 + "\r\n") * 60)
    elif name == "sender-rule":
        sender = "boss@bad.test"
    elif name == "rcpt-tempfail":
        rcpts = ["later@later.test", "user@example.org"]
    elif name == "pass-headers":
        rcpts = ["user@example.org", "other@example.org"]
    return helo, sender, rcpts, msg


@pytest.mark.parametrize("name", [s[0] for s in SCENARIOS])
def test_parity(name, mpostfix, milter_factory, moatd_factory, fake, dns, dkim_key):
    """MLT-01 / parity: the same replies and added fields through Postfix +
    moat-milter as through moatd."""
    key, pub = dkim_key
    opts = dict(dict(SCENARIOS)[name])
    opts["resolver"] = dns.resolver
    opts["dns_timeout"] = "2s"
    helo, sender, rcpts, msg = scenario_input(name, dns, key, pub)
    mlt = milter_factory(**opts)
    m = moatd_factory(fake.address, **opts)

    via_moatd = run_session(m.port, helo, sender, rcpts, msg)
    via_milter = run_session(mpostfix.port, helo, sender, rcpts, msg)

    if name == "dnsbl-connect":
        want = (554, "5.7.1 client [127.0.0.7] blocked using bl.test")
        assert first_refusal(via_moatd) == want, via_moatd
        assert first_refusal(via_milter) == want, via_milter
        return
    # greeting and EHLO texts are each MTA's own; the rest must agree
    def comparable(steps):
        return [s for s in steps if s[0] not in ("greeting", "ehlo")]
    assert comparable(via_milter) == comparable(via_moatd), (via_milter, via_moatd)
    if via_moatd[-1][:2] == ("dot", 250):
        got = fake.wait_completed(1)[-1].content
        want_fields = added_fields(got)
        subj = ("Subject: %s" % name).encode()
        delivered = mpostfix.wait_messages_with(subj)
        assert delivered, mpostfix.log()[-3000:]
        assert added_fields(delivered[-1]) == want_fields, (added_fields(delivered[-1]),
                                                             want_fields)
        if name == "forged-ar":
            # only moat's own field is left, on both sides (MLT-04)
            assert [f for f in want_fields if f[0].lower() == "authentication-results"] \
                == want_fields[:1], want_fields
            assert b"dkim=pass header.d=sender.test\r\n" not in delivered[-1]
    expected = {
        "dnsbl-rcpt": ("rcpt", 554, "5.7.1 client [127.0.0.7] listed: bl.test"),
        "spf-fail": ("rcpt", 550, "5.7.23 SPF check failed for forged.test"),
        "dmarc-reject": ("dot", 550, "5.7.1 DMARC policy of sender.test says reject"),
        "size": ("dot", 552, "5.3.4 Message size exceeds fixed limit"),
        "sender-rule": ("mail", 553, "5.7.1 sender domain bad.test refused"),
        "rcpt-tempfail": ("rcpt", 451, "4.7.1 come back, later@later.test"),
    }
    if name in expected:
        assert expected[name] in via_milter, via_milter
    if name.startswith("greylist"):
        r = [s for s in via_milter if s[0] == "rcpt"][0]
        assert r[1] == 451 and r[2].startswith("4.7.1 greylisted, please retry in"), r
    if name == "greylist-spf-key":
        # the SPF-validated domain is the client on both sides, not the address
        key = 'key="t:{spf:sender.test}|a@sender.test|user@example.org"'
        assert key in m.log(), m.log()[-2000:]
        assert key in mlt.log(), mlt.log()[-2000:]
    if name == "dkim-dmarc-pass":
        ar = [v for n, v in want_fields if n.lower() == "authentication-results"][0]
        assert "spf=pass" in ar and "dkim=pass" in ar and "dmarc=pass" in ar, ar


# ---------------------------------------------------------------------------
# miltertest scripts (MLT-01, MLT-05)

@pytest.mark.parametrize("script", sorted(p.name for p in LUA.glob("*.lua") if p.name != "common.lua"))
def test_miltertest(script, milter_factory, milter_port):
    m = milter_factory(on=[
        'mail sender-domain is bad.test reject 550 5.7.1 "sender $sender-domain refused"',
        'rcpt rcpt-domain is later.test tempfail 451 4.7.1 "later, $rcpt"',
        'data true add-header X-Moat "score $score rcpts ok"',
        'mail auth add-header X-Moat-Login "$sender"',
    ], list='owners login-map { alice: alice@example.org }')
    env = dict(os.environ, MILTER_SOCK="inet:%d@127.0.0.1" % milter_port, MILTER_LUA=str(LUA))
    r = subprocess.run(["miltertest", "-s", str(LUA / script)], env=env, capture_output=True,
                       timeout=60)
    assert r.returncode == 0, (r.stdout.decode(errors="replace") +
                               r.stderr.decode(errors="replace") + m.log()[-3000:])


def test_callback_deadline_tempfails(mpostfix, milter_factory, dns):
    """A stuck dependency (DNS that never answers, checks allowed 10.5 s)
    gives the MTA 451 4.4.3 within the 1.5 s callback deadline, never a
    hang (INV-7)."""
    dns.set_drop("7.0.0.127.slow.test")
    milter_factory(args=["-t", "1.5"], resolver=dns.resolver, dns_timeout="5s",
                   dnsbl="slow.test probe no", on=['rcpt dnsbl-score >= 1 reject 554 5.7.1 "listed"'])
    t0 = time.monotonic()
    steps = run_session(mpostfix.port, "client.test", "a@sender.test", ["user@example.org"],
                        message("stuck"))
    took = time.monotonic() - t0
    rc = [s for s in steps if s[0] == "rcpt"][0]
    assert rc[1] == 451 and rc[2].startswith("4.4.3"), steps
    assert took < 8, took


def test_killed_under_load(mpostfix, milter_factory):
    """MLT-03: moat-milter killed (-9) while Postfix is sending it
    messages: Postfix applies milter_default_action (tempfail), every
    message is either delivered (250) or refused with 4xx for the sender
    to retry; none is lost, and after a restart the retries get through."""
    m = milter_factory(on=['data true add-header X-Moat-Load "yes"'])
    results = {}
    lock = threading.Lock()

    def sender(k):
        for i in range(25):
            tag = "load-%d-%d" % (k, i)
            steps = run_session(mpostfix.port, "client.test", "a@sender.test",
                                ["user@example.org"], message(tag))
            with lock:
                results[tag] = steps

    ts = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    # kill once some messages went through, with the rest still to come
    harness.wait_for(lambda: len(results) >= 10, 30)
    m.proc.kill()
    m.proc.wait(5)
    for t in ts:
        t.join(120)
    assert len(results) == 100

    def final(steps):
        # the reply that decided the message: the first refusal (a RCPT
        # tempfailed while the milter was down makes the client's DATA get
        # 554 "no valid recipients"; the sender retries on the 451), else
        # the last reply
        for name, code, _ in steps:
            if name not in ("greeting", "ehlo") and code >= 400:
                return code
        return steps[-1][1]
    ok = [t for t, s in results.items() if final(s) == 250]
    temp = [t for t, s in results.items() if final(s) != 250]
    assert all(400 <= final(results[t]) < 500 for t in temp), \
        {t: results[t] for t in temp if not 400 <= final(results[t]) < 500}
    assert temp, "the kill came too late to matter"
    print("kill-under-load: %d delivered, %d tempfailed then retried" % (len(ok), len(temp)))
    for t in ok:
        assert mpostfix.wait_messages_with(("Subject: %s\n" % t).encode(), timeout=20), t
    # the sender retries once the milter is back
    milter_factory(on=['data true add-header X-Moat-Load "yes"'])
    for t in temp:
        steps = run_session(mpostfix.port, "client.test", "a@sender.test", ["user@example.org"],
                            message(t))
        assert final(steps) == 250, steps
    for t in results:
        assert mpostfix.wait_messages_with(("Subject: %s\n" % t).encode(), timeout=20), t


# ---------------------------------------------------------------------
# Threads: a stage answered on libmilter's callback thread (the engine
# lock, mlt_engine.c), or handed to the engine thread when it must wait

def _answers(m, sender):
    """{stage: (taken-on, answered-on)} of the connection whose verdict line
    names sender (the debug line of each request)"""
    log = m.log()
    ids = re.findall(r"([0-9a-f]{16}) verdict=[^\n]*from=<%s>" % re.escape(sender), log)
    assert len(ids) == 1, (sender, log[-3000:])
    return {st: (t, a) for st, t, a in re.findall(
        r"%s milter stage=(\w+) taken-on=(\w+) answered-on=(\w+)" % ids[0], log)}


def _sauth_milter(milter_factory, dns, dkim_key):
    zones(dns, dkim_key[1], domain="fast.test")
    zones(dns, dkim_key[1], domain="slow.test")
    return milter_factory(resolver=dns.resolver, dns_timeout="5s", spf="yes", dkim="yes",
                          dmarc="rfc7489", on=[
                              'rcpt spf is fail reject 550 5.7.23 "SPF check failed"',
                              'data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 '
                              '"DMARC policy says reject"',
                              'data true add-header X-Moat-Spf "$spf"'])


def test_stage_on_callback_thread_while_lookup_in_flight(mpostfix, milter_factory, dns,
                                                          dkim_key):
    """With everything a stage reads in the caches, MAIL, RCPT and the end
    of data are answered on libmilter's thread (no hand-off to the engine
    thread), also while another connection's SPF lookup is in flight on
    the engine's loop; that connection's RCPT waits for its lookup and is
    answered from the engine thread, with the same verdict as always."""
    m = _sauth_milter(milter_factory, dns, dkim_key)
    key = dkim_key[0]
    # warm the caches for fast.test (this first message may wait for DNS)
    steps = run_session(mpostfix.port, "client.test", "warm@fast.test", ["user@example.org"],
                        signed(key, frm="warm@fast.test", subject="warm", d="fast.test"))
    assert steps[-1][:2] == ("dot", 250), steps
    dns.set_delay("slow.test", 2.5)
    slow = {}

    def run_slow():
        t0 = time.monotonic()
        slow["steps"] = run_session(mpostfix.port, "client.test", "a@slow.test",
                                    ["user@example.org"],
                                    signed(key, frm="a@slow.test", subject="slow", d="slow.test"))
        slow["took"] = time.monotonic() - t0

    t = threading.Thread(target=run_slow)
    t.start()
    # the slow connection's RCPT waits for SPF once the engine asked
    assert harness.wait_for(lambda: dns.queries("slow.test"), 10), m.log()[-3000:]
    time.sleep(0.3)
    t0 = time.monotonic()
    fast = run_session(mpostfix.port, "client.test", "b@fast.test", ["user@example.org"],
                       signed(key, frm="b@fast.test", subject="fast", d="fast.test"))
    fast_took = time.monotonic() - t0
    assert t.is_alive(), "the slow lookup ended before the fast session ran"
    t.join(30)
    assert fast[-1][:2] == ("dot", 250), fast
    assert fast_took < 1.5, fast_took
    assert slow["steps"][-1][:2] == ("dot", 250), slow
    assert slow["took"] >= 2.4, slow
    # the fast connection never went through the engine thread's loop
    here = ("callback", "callback")
    assert _answers(m, "b@fast.test") == {"connect": here, "helo": here, "mail": here,
                                           "rcpt": here, "data": here}, m.log()[-3000:]
    # the slow one's RCPT waited for SPF: answered from the engine thread
    assert _answers(m, "a@slow.test")["rcpt"] == ("callback", "engine"), m.log()[-3000:]
    for subj in (b"fast", b"slow"):
        got = mpostfix.wait_messages_with(b"Subject: " + subj + b"\n", timeout=20)
        assert len(got) == 1 and b"X-Moat-Spf: pass" in got[0], got


def test_check_deadline_armed_on_callback_thread(mpostfix, milter_factory, dns):
    """A stage taken on a callback's thread adds timers to the loop while
    the loop's thread sleeps with nothing else to do (the zone's query
    at connect, its dns-timeout; the check deadline at RCPT, which waits
    for it): the loop is nudged, so they fire on time (the lookup a
    temperror after 1 s, the rule not met, 250), not at the callback
    deadline (-t 20: 451 4.4.3)."""
    dns.set_drop("7.0.0.127.drop.test")
    m = milter_factory(args=["-t", "20"], resolver=dns.resolver, dns_timeout="1s",
                       dnsbl="drop.test probe no",
                       on=['rcpt dnsbl-score >= 1 reject 554 5.7.1 "listed"'])
    t0 = time.monotonic()
    steps = run_session(mpostfix.port, "client.test", "d@sender.test", ["user@example.org"],
                        message("deadline"))
    took = time.monotonic() - t0
    rc = [s for s in steps if s[0] == "rcpt"][0]
    assert rc[1] == 250, (steps, m.log()[-3000:])
    assert steps[-1][:2] == ("dot", 250), steps
    assert 0.9 <= took < 8, took
    got = _answers(m, "d@sender.test")
    assert got["connect"] == ("callback", "callback"), got   # its zone query sent from there
    assert got["rcpt"] == ("callback", "engine"), got
