"""The engine's process-wide services, the same through both front-ends:
the RFC 5782 DNSBL health probes and the embedded greylist store's
periodic save (engine/engine_svc.c). Before the milter ran the engine it
had neither: no probes (a zone that lost its test points stayed in use)
and a store saved only at a clean exit (lost on kill -9).

Each test runs moatd (in front of the recording fake upstream) and
moat-milter (inside the private Postfix of test_milter) with the same
policy. MOAT_MILTER names the milter binary (default build-asan/moat-milter).
"""

import os
import re
import signal
import time

import pytest

import harness
from harness import message
from test_milter import (CLIENT_IP, first_refusal, milter_factory, milter_port,  # noqa: F401
                         mpostfix, run_session)

pytestmark = pytest.mark.postfix

BL = "bl.test"
HELO = "mail.sender.test"
SENDER = "a@sender.test"
RCPT = "user@example.org"
# the triplet as the embedded store keys it (net /24, sender, recipient)
TRIPLET = "t:{127.0.0.0/24}|%s|%s" % (SENDER, RCPT)


def rev(ip):
    return ".".join(reversed(ip.split(".")))


def wait_log(p, pattern, timeout=20.0):
    """The first match of pattern in p's log, waiting at most timeout s."""
    rx = re.compile(pattern)
    found = harness.wait_for(lambda: rx.search(p.log()), timeout, 0.1)
    assert found, "no %r in %s within %.0fs:\n%s" % (pattern, getattr(p, "log_path", p),
                                                    timeout, p.log()[-3000:])
    return found


def kill9(p):
    """SIGKILL the front-end p by its PID and reap it (a crash, no exit path)."""
    assert p.proc.poll() is None, "%s died before the kill (rc %s)" % (p.log_path,
                                                                     p.proc.returncode)
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait(timeout=10)
    assert p.proc.returncode == -signal.SIGKILL, p.proc.returncode


@pytest.fixture
def kmoatd_factory(workdir, moatd_binary):
    """Like conftest's moatd_factory, but a moatd this test killed on purpose
    (make.kill(m)) is not flagged for its exit status; sanitizer reports
    (from before the kill) still fail the test, as does any other death."""
    started = []
    killed = []

    def make(upstream, **opts):
        m = harness.Moatd(workdir, upstream, name="kmoatd%d" % len(started), **opts)
        started.append(m)
        return m.start()

    def kill(m):
        kill9(m)
        killed.append(m)
    make.kill = kill
    yield make
    problems = []
    for m in started:
        was_alive = m.proc is not None and m.proc.poll() is None
        m.stop()                        # tolerates a reaped process
        mine = []
        reports = m.sanitizer_reports()
        if reports:
            mine.append("sanitizer report in %s:\n  %s" % (m.log_path, "\n  ".join(reports[:20])))
        if m not in killed:
            if not was_alive and m.rc != 0:
                mine.append("moatd died during the test with rc %s" % m.rc)
            elif m.rc not in (0, None):
                mine.append("moatd exited %s after SIGTERM (expected 0)" % m.rc)
        if mine:
            mine.append("log tail (%s):\n%s" % (m.log_path, m.log()[-4000:]))
        problems += mine
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------
# 1. DNSBL health probes


@pytest.mark.timeout(150)
def test_probes_both_front_ends(mpostfix, milter_factory, moatd_factory, fake, dns):
    """A zone whose test point 127.0.0.2 is not listed is disabled by the
    probes of both front-ends, and while it is, a listed client is let in
    by both (and the zone is not asked); once the test point is back, both
    enable it again and refuse the client with the same 554: moatd at the
    greeting, the milter at a later command (libmilter has no reply text
    at connect; through Postfix the client sees it at MAIL). Guards the
    milter's probes: before it ran the engine it never probed, logged no
    state, and kept using the zone."""
    listed = rev(CLIENT_IP) + "." + BL
    dns.add(listed, "A", "127.0.0.2", ttl=0)            # the client is listed
    opts = dict(resolver=dns.resolver, dns_timeout="2s", dns_negative_ttl="0",
                dnsbl=BL, dnsbl_probe_interval="1s",
                on=['connect dnsbl-score >= 1 reject 554 5.7.1 "listed"'])
    mlt = milter_factory(**opts)
    m = moatd_factory(fake.address, **opts)

    disabled = r"dnsbl zone=bl\.test state=disabled reason=test-point-not-listed"
    wait_log(m, disabled)
    wait_log(mlt, disabled)
    dns.clear_log()
    for tag, port in (("moatd", m.port), ("milter", mpostfix.port)):
        steps = run_session(port, HELO, SENDER, [RCPT], message("disabled-" + tag))
        assert first_refusal(steps) is None, (tag, steps)
        assert steps[-1][:2] == ("dot", 250), (tag, steps)
    assert mpostfix.wait_messages_with(b"Subject: disabled-milter"), mpostfix.log()[-3000:]
    assert fake.wait_completed(1), fake.all_lines()
    assert dns.queries(listed) == [], dns.queries()     # a disabled zone is not asked

    dns.add("2.0.0.127." + BL, "A", "127.0.0.2", ttl=0)  # the test point is back
    enabled = r"dnsbl zone=bl\.test state=enabled reason=probe-passed"
    wait_log(m, enabled)
    wait_log(mlt, enabled)
    via_moatd = run_session(m.port, HELO, SENDER, [RCPT], message("enabled-moatd"))
    via_milter = run_session(mpostfix.port, HELO, SENDER, [RCPT], message("enabled-milter"))
    want = (554, "5.7.1 listed")
    assert via_moatd[0][0] == "greeting" and first_refusal(via_moatd) == want, via_moatd
    assert via_milter[0][:2] == ("greeting", 220), via_milter
    assert first_refusal(via_milter) == want, via_milter
    # the milter holds the connect refusal and gives it at every later
    # callback; Postfix only logs one at HELO (it enforces 421 there, not
    # 5xx), so the client sees it at MAIL
    assert [s[0] for s in via_milter if s[1] >= 400][0] == "mail", via_milter
    assert dns.queries(listed), dns.queries()
    for p in (m, mlt):
        # the round after these sessions counts their listed answer (a
        # round logs a zone's stats when its counters moved)
        wait_log(p, r"stats dnsbl zone=bl\.test state=enabled queries=[1-9]\d* listed=[1-9]")
        log = p.log()
        # one state change each way, no flapping
        assert len(re.findall(disabled, log)) == 1, log[-3000:]
        assert len(re.findall(enabled, log)) == 1, log[-3000:]


# ---------------------------------------------------------------------------
# 2. the embedded greylist store's periodic save


def saved_records(path):
    """The records of a store file as glstore_save() writes it (header
    "moat-greylist 1", lines "KEY A B X", trailer "end COUNT"): {key: (a,
    b, x)}; {} while there is no file. A malformed file fails the test."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return {}
    lines = text.split("\n")
    assert lines[0] == "moat-greylist 1" and lines[-1] == "", text[:2000]
    body = lines[1:-1]
    assert body and body[-1] == "end %d" % (len(body) - 1), text[:2000]
    out = {}
    for l in body[:-1]:
        key, a, b, x = l.rsplit(" ", 3)
        out[key] = (int(a), int(b), int(x))
    return out


def triplet_passed(path):
    rec = saved_records(path).get(TRIPLET)
    return rec is not None and rec[1] == 1


def rcpt_step(steps):
    r = [s for s in steps if s[0] == "rcpt"]
    assert r, steps
    return r[0]


@pytest.mark.timeout(180)
def test_store_saved_periodically_both(mpostfix, milter_factory, kmoatd_factory, fake, workdir):
    """The embedded store is saved every greylist-store-save-interval, so a
    front-end killed with SIGKILL (no exit path runs) keeps what it
    learned: the saved file holds the passed triplet and a restarted
    front-end on the same file lets the triplet through at once.

    Regression guarded: before moat-milter ran the engine it saved its
    store only at a clean exit, so a milter killed -9 (or crashing) lost
    every triplet and greylisted all its senders again."""
    front_ends = (
        ("moatd", lambda **o: kmoatd_factory(fake.address, **o), kmoatd_factory.kill,
         lambda p: p.port),
        ("milter", lambda **o: milter_factory(**o), kill9, lambda p: mpostfix.port),
    )
    for tag, start, kill, port_of in front_ends:
        d = harness.make_dir(workdir / ("glstore-" + tag), 0o700, harness.UNPRIV_USER)
        store = d / "greylist.db"
        opts = dict(greylist_store=str(store), greylist_store_save_interval="1s",
                    greylist_delay="1s", on=["rcpt true greylist"])
        p = start(**opts)

        def session(subject):
            return run_session(port_of(p), HELO, SENDER, [RCPT], message(subject))

        steps = session("first-" + tag)
        r = rcpt_step(steps)
        assert r[1] == 451 and r[2].startswith("4.7.1 greylisted, please retry in"), (tag, steps)
        time.sleep(1.5)                                  # > greylist-delay
        steps = session("retried-" + tag)
        assert rcpt_step(steps)[1] == 250 and steps[-1][:2] == ("dot", 250), (tag, steps)
        # the periodic save (1 s) writes the passed triplet; no exit happens
        assert harness.wait_for(lambda: triplet_passed(store), 15, 0.2), \
            (tag, saved_records(store), p.log()[-3000:])
        kill(p)
        assert store.exists(), tag
        rec = saved_records(store).get(TRIPLET)
        assert rec is not None and rec[1] == 1 and rec[2] > time.time(), (tag, rec)

        p = start(**opts)                                # the same store file
        steps = session("after-kill-" + tag)
        assert rcpt_step(steps)[1] == 250 and steps[-1][:2] == ("dot", 250), (tag, steps)
        assert re.search(r"greylist=pass reason=known", p.log()), (tag, p.log()[-3000:])
    for subj in (b"Subject: retried-milter", b"Subject: after-kill-milter"):
        assert mpostfix.wait_messages_with(subj), (subj, mpostfix.log()[-3000:])
    assert len(fake.wait_completed(2)) == 2, fake.completed()
