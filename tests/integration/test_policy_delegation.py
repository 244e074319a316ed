"""moatd's Postfix policy delegation front-end ("listen ... policy",
proxy/pdel.c): through a real Postfix with check_policy_service, and raw
requests on the policy socket (TCP and unix).

Each test's moatd listens for SMTP (in front of the recording fake
upstream, for the parity checks) and for policy requests on the port the
module's Postfix asks (check_policy_service inet:127.0.0.1:PORT under
smtpd_recipient_restrictions, so Postfix asks at RCPT and moat judges
connect, helo and mail first). Postfix's reply to a policy refusal is its
own "<rcpt>: Recipient address rejected: TEXT" around moat's code,
enhanced code and text.
"""

import os
import re
import signal
import socket
import time

import pytest

import harness
from harness import message
from test_milter import CLIENT_IP, SCENARIOS, first_refusal, run_session, scenario_input

RCPT = "user@example.org"


@pytest.fixture(scope="module")
def policy_port():
    return harness.free_port()


@pytest.fixture(scope="module")
def ppostfix(workroot, policy_port):
    """A private Postfix asking moatd's policy listener at RCPT."""
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix needs root")
    pf = harness.Postfix(harness.make_dir(workroot / "policy-postfix"), extra_main={
        "smtpd_recipient_restrictions": "check_policy_service inet:127.0.0.1:%d" % policy_port,
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
    })
    try:
        pf.start()
    except Exception:
        pf.stop()
        raise
    yield pf
    pf.stop()


def pmoatd(moatd_factory, fake, policy_port, unix=None, **opts):
    """moatd with an SMTP listener (first) and the policy listener(s)."""
    listen = ["127.0.0.1:%d" % harness.free_port(), "127.0.0.1:%d policy" % policy_port]
    if unix:
        listen.append("unix:%s policy" % unix)
    return moatd_factory(fake.address, listen=listen, **opts)


def request(sock, **kw):
    """One policy request (RCPT state by default); the reply's action."""
    d = dict(request="smtpd_access_policy", protocol_state="RCPT", protocol_name="ESMTP",
             client_address="192.0.2.9", client_name="unknown", reverse_client_name="unknown",
             helo_name="mail.sender.test", sender="a@sender.test", recipient=RCPT,
             recipient_count="0", instance="a1.b2.c3", size="0", sasl_method="",
             sasl_username="", sasl_sender="", ccert_subject="", encryption_protocol="")
    d.update(kw)
    sock.sendall(("".join("%s=%s\n" % kv for kv in d.items()) + "\n").encode())
    return read_reply(sock)


def read_reply(sock, timeout=20):
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n\n"):
        c = sock.recv(4096)
        if not c:
            break
        buf += c
    assert buf.startswith(b"action=") and buf.endswith(b"\n\n"), buf
    return buf[len("action="):-2].decode()


def connect(port):
    return socket.create_connection((harness.LOOPBACK, port), timeout=20)


def rcpt_step(steps, n=0):
    r = [s for s in steps if s[0] == "rcpt"]
    assert len(r) > n, steps
    return r[n]


# ---------------------------------------------------------------------------
# through Postfix


def test_greylist_through_postfix(ppostfix, moatd_factory, fake, policy_port):
    """PDL-01: the first attempt is deferred with moat's 451 4.7.1, the
    retry after the delay is accepted and delivered; a recipient on the
    exception list passes at once (PDL-05)."""
    pmoatd(moatd_factory, fake, policy_port, greylist_delay="1s",
           list="vip address { postmaster@example.org }",
           on=["rcpt rcpt in vip accept", "rcpt true greylist"])
    steps = run_session(ppostfix.port, "mail.sender.test", "a@sender.test",
                        [RCPT, "postmaster@example.org"], message("greylisted-first"))
    r = rcpt_step(steps)
    assert r[1] == 451 and "4.7.1" in r[2] and "greylisted, please retry in" in r[2], steps
    assert rcpt_step(steps, 1)[1] == 250, steps          # the exception
    assert steps[-1][:2] == ("dot", 250), steps            # for postmaster alone
    time.sleep(1.5)                                        # > greylist-delay
    steps = run_session(ppostfix.port, "mail.sender.test", "a@sender.test", [RCPT],
                        message("greylisted-retry"))
    assert rcpt_step(steps)[1] == 250 and steps[-1][:2] == ("dot", 250), steps
    assert ppostfix.wait_messages_with(b"Subject: greylisted-retry"), ppostfix.log()[-3000:]


def test_actions_style(ppostfix, moatd_factory, fake, policy_port):
    """policy-reply actions: a greylist is DEFER_IF_PERMIT (Postfix's own
    450 4.7.1 around moat's text), a reject is REJECT (Postfix's 554)."""
    m = pmoatd(moatd_factory, fake, policy_port, policy_reply="actions", greylist_delay="60s",
               on=['rcpt rcpt-domain is bad.example.org reject 550 5.7.1 "no such place"',
                   "rcpt true greylist"])
    steps = run_session(ppostfix.port, "mail.sender.test", "a@sender.test",
                        [RCPT, "x@bad.example.org"], message("actions"))
    r = rcpt_step(steps)
    assert r[1] == 450 and "greylisted, please retry in" in r[2], steps
    r = rcpt_step(steps, 1)
    assert r[1] == 554 and "no such place" in r[2], steps
    with connect(policy_port) as s:
        assert request(s, recipient="x@bad.example.org") == "REJECT 5.7.1 no such place"
        assert request(s, recipient="y@example.org").startswith(
            "DEFER_IF_PERMIT 4.7.1 greylisted, please retry in"), m.log()[-2000:]


PARITY = ["dnsbl-rcpt", "dnsbl-connect", "spf-fail", "greylist", "sender-rule", "rcpt-tempfail"]


@pytest.mark.parametrize("name", PARITY)
def test_parity_policy(name, ppostfix, moatd_factory, fake, dns, policy_port):
    """PDL-02 / parity, third column: the scenarios of test_milter's parity
    table that a policy request can reach give, through Postfix asking
    moatd's policy listener, the code, enhanced code and text that moatd
    gives as a proxy (Postfix asks at RCPT, so a connect or MAIL refusal
    comes at RCPT, with Postfix's "Recipient address rejected" around it)."""
    opts = dict(dict(SCENARIOS)[name])
    opts["resolver"] = dns.resolver
    opts["dns_timeout"] = "2s"
    helo, sender, rcpts, msg = scenario_input(name, dns, None, None)
    m = pmoatd(moatd_factory, fake, policy_port, **opts)

    via_moatd = run_session(m.port, helo, sender, rcpts, msg)
    via_policy = run_session(ppostfix.port, helo, sender, rcpts, msg)
    want = first_refusal(via_moatd)
    assert want is not None, via_moatd
    got = first_refusal(via_policy)
    assert got is not None, via_policy
    code, text = want
    enh, _, words = text.partition(" ")
    if name.startswith("greylist"):
        words = "greylisted, please retry in"
    assert got[0] == code and got[1].startswith(enh + " ") and words in got[1], (got, want)
    assert rcpt_step(via_policy)[1] == code, via_policy


def test_spf_dnsbl_together(ppostfix, moatd_factory, fake, dns, policy_port):
    """PDL-03: SPF fail is rejected and a DNSBL score over the threshold is
    rejected, both through Postfix, the DNSBL at connect (judged before
    the RCPT that Postfix asked about)."""
    dns.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    dns.add("7.0.0.127.bl.test", "A", "127.0.0.2")
    dns.add("forged.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    pmoatd(moatd_factory, fake, policy_port, resolver=dns.resolver, dns_timeout="2s", spf="yes",
           dnsbl="bl.test weight 2", on=[
               'connect dnsbl-score >= 3 reject 554 5.7.1 "client [$ip] blocked"',
               'rcpt spf is fail reject 550 5.7.23 "SPF check failed for $sender-domain"',
               'rcpt dnsbl-score >= 2 reject 554 5.7.1 "score $score too high"'])
    steps = run_session(ppostfix.port, "h.test", "x@forged.test", [RCPT], message("spf"))
    r = rcpt_step(steps)
    assert r[1] == 550 and r[2].startswith("5.7.23 ") and \
        "SPF check failed for forged.test" in r[2], steps
    steps = run_session(ppostfix.port, "h.test", "a@sender.test", [RCPT], message("dnsbl"))
    r = rcpt_step(steps)
    assert r[1] == 554 and "score" in r[2] and "too high" in r[2], steps


# ---------------------------------------------------------------------------
# raw requests


def test_sasl_sender_ownership(moatd_factory, fake, policy_port):
    """PDL-04: sender ownership for an authenticated submission, from the
    request's sasl_username: alice may send as alice@, not as bob@; an
    unauthenticated client may not use the local domain."""
    pmoatd(moatd_factory, fake, policy_port,
           list=["owners login-map { alice: alice@example.org }",
                 "any-login word { * }", "local-domains domain { example.org }"],
           on=['mail login in any-login and not sender owned-by owners '
               'reject 553 5.7.1 "Sender address rejected: not owned by $sender"',
               'mail sender-domain in local-domains and not auth '
               'reject 553 5.7.1 "Sender address rejected: not logged in"'])
    with connect(policy_port) as s:
        assert request(s, sasl_username="alice", sender="alice@example.org",
                       instance="i1") == "DUNNO"
        assert request(s, sasl_username="alice", sender="bob@example.org", instance="i2") == \
            "553 5.7.1 Sender address rejected: not owned by bob@example.org"
        # the refused MAIL sticks to its transaction: every recipient gets it
        assert request(s, sasl_username="alice", sender="bob@example.org", instance="i2",
                       recipient="other@example.net").startswith("553 5.7.1")
        assert request(s, sender="carol@example.org", instance="i3") == \
            "553 5.7.1 Sender address rejected: not logged in"


def test_repeat_cached_and_stages(moatd_factory, fake, policy_port):
    """The same request twice (check_policy_service under two restriction
    lists) gets the same answer without a second greylist decision;
    CONNECT, HELO, MAIL and DATA requests get DUNNO; a rule's header
    field comes as PREPEND, once; END-OF-MESSAGE runs the data rules."""
    m = pmoatd(moatd_factory, fake, policy_port, greylist_delay="60s",
               on=['rcpt rcpt-domain is example.org add-header X-Moat-Rcpt "rcpt $rcpt"',
                   "rcpt rcpt-domain is example.net greylist",
                   'data size > 5000 reject 552 5.3.4 "too big: $size"'])
    with connect(policy_port) as s:
        assert request(s, protocol_state="CONNECT", helo_name="", sender="",
                       recipient="") == "DUNNO"
        assert request(s, protocol_state="EHLO", sender="", recipient="") == "DUNNO"
        assert request(s, protocol_state="MAIL", recipient="") == "DUNNO"
        first = request(s, recipient="a@example.net")
        assert first.startswith("451 4.7.1 greylisted"), first
        assert request(s, recipient="a@example.net") == first
        assert len(re.findall(r"check greylist=greylisted", m.log())) == 1, m.log()[-3000:]
        assert request(s, recipient=RCPT) == "PREPEND X-Moat-Rcpt: rcpt %s" % RCPT
        assert request(s, recipient=RCPT) == "PREPEND X-Moat-Rcpt: rcpt %s" % RCPT  # cached
        assert request(s, recipient="b@example.org") == \
            "PREPEND X-Moat-Rcpt: rcpt b@example.org"
        assert request(s, protocol_state="DATA", recipient="", recipient_count="2") == "DUNNO"
        assert request(s, protocol_state="END-OF-MESSAGE", recipient="", recipient_count="2",
                       size="9000") == "552 5.3.4 too big: 9000"
        assert request(s, protocol_state="END-OF-MESSAGE", recipient="", recipient_count="2",
                       size="100", instance="a1.b2.c4", sender="z@sender.test") == "DUNNO"
        assert request(s, protocol_state="VRFY", recipient="x@example.org") == "DUNNO"
        assert request(s, request="something_else") == "DUNNO"


def test_unix_socket(moatd_factory, fake, policy_port, workdir):
    """A unix policy socket answers like the TCP one; a stale socket file
    left by a killed moatd does not stop the next start."""
    d = harness.make_dir(workdir / "psock", 0o755)
    path = str(d / "policy.sock")
    with socket.socket(socket.AF_UNIX) as stale:        # a stale socket file
        stale.bind(path)
    m = pmoatd(moatd_factory, fake, policy_port, unix=path, greylist_delay="60s",
               on=["rcpt true greylist"])
    assert (os.stat(path).st_mode & 0o777) == 0o666
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(path)
        assert request(s).startswith("451 4.7.1 greylisted, please retry in")
    assert "policy connect from=local" in m.log()


def test_bad_input(moatd_factory, fake, policy_port, dns):
    """PDL-06 / bad input: a line over 2048 bytes, 10,000 attributes, a
    request over 16 KiB, binary, NUL, a line without '=' each get
    "action=DEFER 4.3.0" and a closed connection; a request cut short and
    abrupt closes (with a verdict pending) leave moatd serving; never a
    crash (the fixture fails the test on a sanitizer report)."""
    dns.set_drop("9.0.0.127.bl.test")                  # never answers
    m = pmoatd(moatd_factory, fake, policy_port, resolver=dns.resolver,
               dns_timeout="1s", dnsbl="bl.test probe no",
               on=['connect dnsbl-score >= 1 reject 554 5.7.1 "listed"'])
    # (input, big): moatd closes with the rest of a big input unread, and
    # the kernel may then reset the connection before the reply is read
    bad = [
        (b"request=smtpd_access_policy\nsender=" + b"a" * 3000 + b"\n\n", False),
        (b"".join(b"a%d=1\n" % i for i in range(10000)) + b"\n", True),
        (b"".join(b"x%d=" % i + b"v" * 1900 + b"\n" for i in range(10)) + b"\n", True),
        (bytes(range(256)) * 4 + b"\n\n", False),
        (b"request=smtpd\x00_access_policy\n\n", False),
        (b"just some words\n\n", False),
        (b"a" * 100000, True),                             # no LF at all
    ]
    defer = b"action=DEFER 4.3.0 Error: bad policy request\n\n"
    for i, (raw, big) in enumerate(bad):
        with connect(policy_port) as s:
            try:
                s.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass
            s.settimeout(20)
            got = b""
            reset = False
            try:
                while True:
                    c = s.recv(4096)
                    if not c:
                        break
                    got += c
            except ConnectionResetError:
                reset = True
            if big and reset:
                assert defer.startswith(got), (i, got)
            else:
                assert got == defer, (i, got)
    # no empty line: no answer yet, the connection stays for the rest
    with connect(policy_port) as s:
        s.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\n")
        s.settimeout(1)
        with pytest.raises(socket.timeout):
            s.recv(100)
    # abrupt closes: mid-request, and while the engine waits on DNS
    for _ in range(3):
        with connect(policy_port) as s:
            s.sendall(b"request=smtpd_access_policy\nprotocol_st")
        with connect(policy_port) as s:
            s.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
                      b"client_address=127.0.0.9\nrecipient=u@example.org\n\n")
    # still serving; the DNS that never answers gives a decision within
    # the check deadline (temperror: not listed), never a hang
    with connect(policy_port) as s:
        t0 = time.monotonic()
        assert request(s, client_address="127.0.0.9") == "DUNNO"
        assert time.monotonic() - t0 < 10
    assert harness.wait_for(lambda: "reason=closed-while-judging" in m.log(), 10), \
        m.log()[-3000:]
    for reason in ("line too long", "too many attributes", "request too long",
                   "control byte in a line", "a line without '='"):
        assert 'policy bad-request reason="%s"' % reason in m.log(), reason


def test_conf_checks(workdir):
    """A unix socket only for a policy listener; no upstream needed with
    policy listeners alone; data rules that read dkim/dmarc/from get a
    load-time warning naming the policy listener."""
    rc, out, path = harness.moatd_check(
        "listen unix:/tmp/x.sock\nupstream 127.0.0.1:25\n", workdir, "unix-smtp.conf")
    assert rc != 0 and "a unix socket is for a policy listener only" in out, out
    rc, out, path = harness.moatd_check(
        "listen 127.0.0.1:10040 policy\n", workdir, "policy-only.conf")
    assert rc == 0, out
    rc, out, path = harness.moatd_check(
        "listen 127.0.0.1:10040 policy\nlisten 127.0.0.1:2525\nupstream 127.0.0.1:25\n"
        'on data from-domain is x.test reject 550 5.7.1 "not from x"\n', workdir, "warn.conf")
    assert rc == 0, out
    assert re.search(r"warn\.conf:1:\d+: warning: policy listener: rules at data read "
                     r"dkim, dmarc or from", out), out
    rc, out, path = harness.moatd_check(
        "listen 127.0.0.1:10040 policy implicit-tls\n", workdir, "bad-opt.conf")
    assert rc != 0 and "implicit-tls and no-starttls are for SMTP listeners" in out, out


def test_redis_down_on_error(moatd_factory, fake, policy_port, redis_factory):
    """PDL-07: Redis gone: the policy answer is the greylist-on-error
    action (tempfail: moat's 451 4.7.1), within the Redis deadline, and
    the same as moatd gives an SMTP client; a stalled Redis (SIGSTOP)
    gives it within redis-timeout too, never a hung smtpd."""
    rd = redis_factory()
    m = pmoatd(moatd_factory, fake, policy_port, redis=rd.address, redis_timeout="300ms",
               greylist_on_error="tempfail", on=["rcpt true greylist"])
    want = "451 4.7.1 greylisting is unavailable, please try again later"
    with connect(policy_port) as s:
        assert request(s, instance="r0").startswith("451 4.7.1 greylisted"), m.log()[-2000:]
        os.kill(rd.proc.pid, signal.SIGSTOP)             # stalled: no answer at all
        try:
            t0 = time.monotonic()
            assert request(s, instance="r1", recipient="b@example.org") == want
            assert time.monotonic() - t0 < 5
        finally:
            os.kill(rd.proc.pid, signal.SIGCONT)
        rd.stop()
        t0 = time.monotonic()
        assert request(s, instance="r2", recipient="c@example.org") == want
        assert time.monotonic() - t0 < 5
    steps = run_session(m.port, "mail.sender.test", "a@sender.test", ["d@example.org"],
                        message("redis-down"))
    assert rcpt_step(steps)[1:] == (451, "4.7.1 greylisting is unavailable, please try again "
                                         "later"), steps


def test_reload_reaches_open_connection(moatd_factory, fake, policy_port):
    """Postfix keeps its policy connections for many client sessions: a
    SIGHUP reload applies to the next client asked about on a connection
    opened before it, while the client session in flight keeps its policy."""
    m = pmoatd(moatd_factory, fake, policy_port,
               on=['rcpt rcpt-domain is example.org reject 550 5.7.1 "old rules"'])
    with connect(policy_port) as s:
        assert request(s, instance="x1") == "550 5.7.1 old rules"
        m.conf_path.write_text(m.conf_path.read_text().replace('"old rules"', '"new rules"'))
        m.signal(signal.SIGHUP)
        assert m.wait_log(r"reload ok", 10), m.log()[-2000:]
        # the same client, a new transaction: its session keeps its policy
        assert request(s, instance="x2", recipient="b@example.org") == "550 5.7.1 old rules"
        # another client on the same connection: the new policy
        assert request(s, instance="x3", client_address="192.0.2.77") == "550 5.7.1 new rules"


def test_end_of_message_without_message(moatd_factory, fake, policy_port, dns):
    """END-OF-MESSAGE: Postfix sends no message, so data rules that read
    DKIM or DMARC find nothing (a load-time warning names the policy
    listener); the size rule still acts; never a crash."""
    dns.add("sender.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns.add("_dmarc.sender.test", "TXT", "v=DMARC1; p=reject")
    m = pmoatd(moatd_factory, fake, policy_port, resolver=dns.resolver, dns_timeout="2s",
               spf="yes", dkim="yes", dmarc="rfc7489",
               on=['data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 "DMARC"',
                   'data size > 1000 reject 552 5.3.4 "too big"'])
    assert re.search(r"warning: policy listener: rules at data read dkim, dmarc or from",
                     m.log()), m.log()[-2000:]
    with connect(policy_port) as s:
        eom = dict(protocol_state="END-OF-MESSAGE", recipient="", recipient_count="1")
        assert request(s, instance="e1", size="500", **eom) == "DUNNO"
        assert request(s, instance="e2", size="5000", **eom) == "552 5.3.4 too big"


def test_drain_answers_pending(moatd_factory, fake, policy_port, dns):
    """SIGTERM while a verdict waits on DNS: the request is still answered
    (within the check deadline), then the connection closes; an idle
    policy connection closes at once; moatd exits 0 within drain-timeout."""
    dns.set_drop("9.0.0.127.bl.test")                  # never answers
    m = pmoatd(moatd_factory, fake, policy_port, resolver=dns.resolver, dns_timeout="1s",
               drain_timeout="10s", dnsbl="bl.test probe no",
               on=['rcpt dnsbl-score >= 1 reject 554 5.7.1 "listed"'])
    idle = connect(policy_port)
    busy = connect(policy_port)
    try:
        assert request(idle) == "DUNNO"
        busy.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
                     b"client_address=127.0.0.9\nsender=a@sender.test\nrecipient=u@example.org\n"
                     b"instance=d1\n\n")
        assert m.wait_log(r"policy client=127\.0\.0\.9", 10)
        t0 = time.monotonic()
        m.signal(signal.SIGTERM)
        assert read_reply(busy) == "DUNNO"                # temperror: not listed
        assert busy.recv(10) == b""                        # then closed
        idle.settimeout(10)
        assert idle.recv(10) == b""
        m.proc.wait(timeout=15)
        assert m.proc.returncode == 0
        assert time.monotonic() - t0 < 10
        assert "policy disconnect reason=shutdown" in m.log()
    finally:
        idle.close()
        busy.close()
