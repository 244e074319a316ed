"""moat-milter reloads its policy file on SIGHUP, as moatd does, through a
private Postfix (smtpd_milters): a changed rule applies to the next
session; a broken file is refused with FILE:LINE:COL errors and the old
policy stays; a session open across the reload finishes under the policy
it began with (the engine's rules and the callbacks' own reads, the
authserv-id of forged Authentication-Results); SIGTERM still stops
moat-milter with exit code 0.

Without the sigwait() interposition (milter/mlt_policy.c) libmilter's
signal thread stops the milter on SIGHUP: every test below then fails
(no "reload ok", Postfix tempfails the next session).

MOAT_MILTER names the binary (default build-asan/moat-milter).
"""

import itertools
import os
import re
import signal
import time

import pytest

import harness
from harness import Client, message
from test_milter import (CLIENT_IP, milter_factory, milter_port, mpostfix,  # noqa: F401 (fixtures)
                         run_session)

pytestmark = pytest.mark.postfix

_tag = itertools.count()


def unique(name):
    return "%s-%d-%d" % (name, os.getpid(), next(_tag))


def write_policy(m, rules=(), extra=()):
    """The milter's file again: its settings as started, without its "on"
    lines, then extra lines and the rules. Returns the text."""
    base = [l for l in m.conf_path.read_text().splitlines()
            if l.split(None, 1)[:1] != ["on"]]
    lines = base + list(extra) + ["%-26s %s" % ("on", r) for r in rules]
    text = "\n".join(lines) + "\n"
    m.conf_path.write_text(text)
    return text


def hup(m):
    """SIGHUP by PID; the log size before, to look only at what follows."""
    before = len(m.log())
    os.kill(m.proc.pid, signal.SIGHUP)
    return before


def wait_log_after(m, before, pattern, timeout=10):
    rx = re.compile(pattern)
    return harness.wait_for(lambda: rx.search(m.log()[before:]), timeout)


def alive(m):
    return m.proc.poll() is None


def step(steps, name):
    return [s for s in steps if s[0] == name]


def test_reload_applies_new_rule(mpostfix, milter_factory):
    """(a) a rcpt rule added to the file and SIGHUP: moat-milter keeps
    running, logs "reload ok file=...", and the next session gets the new
    5xx reply; the session before it was accepted."""
    m = milter_factory()
    subj = unique("reload-a-before")
    before = run_session(mpostfix.port, "client.test", "a@sender.test", ["user@example.org"],
                         message(subj))
    assert before[-2:] == [("data", 354, ""), ("dot", 250, "")], before
    assert mpostfix.wait_messages_with(("Subject: %s\n" % subj).encode()), mpostfix.log()[-2000:]

    write_policy(m, ['rcpt rcpt in refused reject 550 5.7.1 "new rule refuses $rcpt"'],
                 extra=["list refused address { user@example.org }"])
    mark = hup(m)
    assert wait_log_after(m, mark, r"reload ok file=%s\b" % re.escape(str(m.conf_path))), \
        m.log()[-3000:]
    assert alive(m), m.log()[-3000:]

    after = run_session(mpostfix.port, "client.test", "a@sender.test", ["user@example.org"],
                        message(unique("reload-a-after")))
    assert step(after, "rcpt") == [("rcpt", 550, "5.7.1 new rule refuses user@example.org")], after
    assert alive(m), m.log()[-3000:]


def test_reload_refused_keeps_old_policy(mpostfix, milter_factory):
    """(b) a broken file on SIGHUP: refused, its error logged as
    FILE:LINE:COL, moat-milter keeps running with the old policy (its rule
    still refuses, the broken file's rule does not apply) and mail still
    flows."""
    old_rule = 'rcpt rcpt in blocked reject 550 5.7.1 "old policy refuses $rcpt"'
    m = milter_factory(list="blocked address { blocked@example.org }", on=[old_rule])
    text = write_policy(m, ['rcpt true reject 550 5.7.1 "broken file rule"'],
                        extra=["frobnicate-setting         yes"])
    bad_line = text.splitlines().index("frobnicate-setting         yes") + 1
    mark = hup(m)
    assert wait_log_after(m, mark, r"reload refused file=%s" % re.escape(str(m.conf_path))), \
        m.log()[-3000:]
    tail = m.log()[mark:]
    assert re.search(r"%s:%d:\d+: error" % (re.escape(str(m.conf_path)), bad_line), tail), \
        "the reload error is not logged as FILE:LINE:COL: error:\n" + tail[-3000:]
    assert "reload ok" not in tail, tail[-3000:]
    time.sleep(0.3)
    assert alive(m), m.log()[-3000:]

    refused = run_session(mpostfix.port, "client.test", "a@sender.test",
                          ["blocked@example.org"], message(unique("reload-b-refused")))
    assert step(refused, "rcpt") == [
        ("rcpt", 550, "5.7.1 old policy refuses blocked@example.org")], refused
    subj = unique("reload-b-flows")
    flows = run_session(mpostfix.port, "client.test", "a@sender.test", ["user@example.org"],
                        message(subj))
    assert [x[1] for x in step(flows, "rcpt")] == [250], flows
    assert flows[-1] == ("dot", 250, ""), flows
    assert mpostfix.wait_messages_with(("Subject: %s\n" % subj).encode()), mpostfix.log()[-2000:]
    assert alive(m), m.log()[-3000:]


def ar_message(subj):
    """A message with two foreign Authentication-Results fields: one with
    the old policy's authserv-id (mx.moat.test), one with the new's."""
    return message(subj, extra_headers=[
        "Authentication-Results: mx.moat.test; spf=pass smtp.mailfrom=forged-old",
        "Authentication-Results: new.moat.test; spf=pass smtp.mailfrom=forged-new"])


@pytest.mark.timeout(90)
def test_session_open_across_reload_keeps_its_policy(mpostfix, milter_factory):
    """(c) SIGHUP while a session is in a transaction: that session ends
    under the policy it began with (a recipient the new file refuses is
    taken, the old data rule's field is added, forged fields are those of
    the old authserv-id); a session begun after the reload gets the new
    policy in all three."""
    m = milter_factory(on=['data true add-header X-Moat-Policy "old"'])
    subj_old = unique("reload-c-open")
    c = Client(mpostfix.port, source=CLIENT_IP, timeout=20)
    try:
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert r.code == 250, r

        write_policy(m, ['rcpt rcpt in blocked reject 550 5.7.1 "new policy refuses $rcpt"',
                         'data true add-header X-Moat-Policy "new"'],
                     extra=["authserv-id                new.moat.test",
                            "list blocked address { blocked@example.org }"])
        mark = hup(m)
        assert wait_log_after(m, mark, r"reload ok file="), m.log()[-3000:]

        r = c.cmd("RCPT TO:<blocked@example.org>")
        assert r.code == 250, "the open session got the new policy's rcpt rule: %s" % r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(harness.dot_stuff(ar_message(subj_old)) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        c.cmd("QUIT")
    finally:
        c.close()
    got = mpostfix.wait_messages_with(("Subject: %s\n" % subj_old).encode())
    assert got, mpostfix.log()[-2000:]
    for msg in got:
        assert b"X-Moat-Policy: old" in msg and b"X-Moat-Policy: new" not in msg, msg[:1500]
        assert b"Authentication-Results: mx.moat.test" not in msg, msg[:1500]
        assert b"Authentication-Results: new.moat.test" in msg, msg[:1500]

    subj_new = unique("reload-c-new")
    steps = run_session(mpostfix.port, "client.test", "a@sender.test",
                        ["blocked@example.org", "user@example.org"], ar_message(subj_new))
    rc = step(steps, "rcpt")
    assert rc[0] == ("rcpt", 550, "5.7.1 new policy refuses blocked@example.org"), steps
    assert rc[1][1] == 250 and steps[-1] == ("dot", 250, ""), steps
    got = mpostfix.wait_messages_with(("Subject: %s\n" % subj_new).encode())
    assert got, mpostfix.log()[-2000:]
    for msg in got:
        assert b"X-Moat-Policy: new" in msg and b"X-Moat-Policy: old" not in msg, msg[:1500]
        assert b"Authentication-Results: mx.moat.test" in msg, msg[:1500]
        assert b"Authentication-Results: new.moat.test" not in msg, msg[:1500]
    assert alive(m), m.log()[-3000:]


def test_sigterm_still_stops_cleanly(mpostfix, milter_factory):
    """(d) after a reload, SIGTERM (libmilter's own handling, passed on
    by the sigwait stand-in) stops moat-milter: exit code 0, "stopped"
    logged; SIGHUP twice in a row does not stop it."""
    m = milter_factory()
    for _ in range(2):
        mark = hup(m)
        assert wait_log_after(m, mark, r"reload ok file="), m.log()[-3000:]
    assert alive(m), m.log()[-3000:]
    steps = run_session(mpostfix.port, "client.test", "a@sender.test", ["user@example.org"],
                        message(unique("reload-d")))
    assert steps[-1] == ("dot", 250, ""), steps
    t0 = time.monotonic()
    m.stop(signal.SIGTERM)
    took = time.monotonic() - t0
    assert m.rc == 0, (m.rc, m.log()[-3000:])
    assert took < 9, took     # stop_process would have used SIGKILL at 10 s
    assert re.search(r"\bstopped\b", m.log()), m.log()[-3000:]
