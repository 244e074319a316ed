"""Issue 22, findings 5-8: moatd under faults of its own front and of its
upstream.

  5  the listen backlog reaches listen() (ss shows it), and a burst of
     1,000 connections gets 220 or 421 on every one
  6  the upstream is kept alive (NOOP) while a client's DATA comes in
     slowly: a real Postfix with smtpd_timeout = 10s, a 30 s DATA
  7  drain: a session whose message went upstream is answered, even when
     the upstream is slower than drain-timeout
  8  a pooled upstream connection that fails as it is reused (closed, 421)
     is replaced by a fresh one: the client never sees it; one parked with
     an open transaction (moat refused the recipient) gets an RSET, and
     when the upstream answers that RSET with an error or closes, the
     connection is dropped (parked) or replaced (already taken)
"""

import os
import resource
import select
import signal
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import Postfix, dot_stuff, message, smtp_transaction, wait_for


# ===========================================================================
# 5: listen backlog


def listen_queues(port):
    """Send-Q of every socket listening on 127.0.0.1:port (ss -ltn)."""
    out = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, timeout=10).stdout.decode()
    qs = []
    for line in out.splitlines():
        f = line.split()
        # State Recv-Q Send-Q Local Peer
        if len(f) >= 5 and f[3].endswith(":%d" % port):
            qs.append(int(f[2]))
    return qs


def somaxconn():
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read().strip())


@pytest.mark.timeout(60)
def test_listen_backlog_default_reaches_listen(fake, moatd_factory):
    m = moatd_factory(fake.address, workers="2")
    want = min(1024, somaxconn())
    qs = listen_queues(m.port)
    assert qs == [want, want], "listen queues %r, want %d on each worker's socket " \
        "(min(1024, somaxconn))" % (qs, want)


@pytest.mark.timeout(60)
def test_listen_backlog_setting(fake, moatd_factory):
    m = moatd_factory(fake.address, workers="1", listen_backlog="300")
    assert listen_queues(m.port) == [300]


@pytest.mark.timeout(120)
def test_burst_of_1000_connections_all_answered(fake, moatd_factory):
    """Every connection of a burst gets 220 or 421 (max-sessions), none is
    left without a word in a full accept queue."""
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        if hard < n + 200:
            pytest.skip("RLIMIT_NOFILE hard limit %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, hard))
    m = moatd_factory(fake.address, workers="2", max_sessions="200",
                      max_sessions_per_client="1000", command_deadline="30s",
                      log_level="info")
    socks = []
    # the burst arrives while moatd does not accept (stopped), as it would
    # while its workers are busy: the kernel's accept queues take it all,
    # or drop what is over the backlog (the client's SYN is retried after
    # 1, 3, 7, 15 s: "no reply" for that long)
    os.kill(m.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", m.port))
            socks.append(s)
        time.sleep(0.5)
    finally:
        os.kill(m.proc.pid, signal.SIGCONT)
    try:
        got = {}
        limit = 5
        deadline = time.monotonic() + limit
        waiting = {s.fileno(): s for s in socks}
        bufs = {}
        while waiting and time.monotonic() < deadline:
            p = select.poll()
            for fd in waiting:
                p.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            for fd, ev in p.poll(200):
                s = waiting[fd]
                try:
                    d = s.recv(512)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    got[fd] = "error %s" % e
                    del waiting[fd]
                    continue
                bufs[fd] = bufs.get(fd, b"") + d
                if b"\n" in bufs[fd] or not d:
                    got[fd] = bufs[fd].split(b"\n")[0].decode("latin-1")
                    del waiting[fd]
        codes = {}
        for v in got.values():
            codes[v[:3]] = codes.get(v[:3], 0) + 1
        print("burst of %d: %r, %d without a reply after %d s" % (n, codes, len(waiting),
                                                                 limit))
        assert not waiting, "%d of %d connections got no reply in %d s (%r)" % (
            len(waiting), n, limit, codes)
        bad = [v for v in got.values() if v[:3] not in ("220", "421")]
        assert not bad, bad[:5]
        assert codes.get("220", 0) >= 1
    finally:
        for s in socks:
            s.close()


# ===========================================================================
# 8: a pooled connection that fails as it is reused


class ReuseFaults:
    """FakeUpstream reply hooks: a connection that has ended a transaction
    fails at the next session's first command (XCLIENT, or MAIL without
    XCLIENT): it closes, or says 421 (and then closes). Each connection has
    its own thread in FakeUpstream, so the state is thread-local."""

    def __init__(self, how):
        self.how = how
        self.local = threading.local()
        self.injected = 0
        self.lock = threading.Lock()

    def dot(self, arg):
        self.local.used = True
        return None

    def first(self, arg):
        if getattr(self.local, "used", False):
            with self.lock:
                self.injected += 1
            if self.how == "close":
                return "CLOSE"
            self.local.used = False
            return "421 4.4.2 fake.test Error: timeout exceeded"
        return None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("identity,how,verb,connect", [
    ("xclient", "close", "XCLIENT", "mail"),
    ("xclient", "421", "XCLIENT", "mail"),
    ("xclient", "close", "MAIL", "mail"),
    ("xclient", "421", "MAIL", "mail"),
    ("none", "close", "MAIL", "mail"),
    ("none", "421", "MAIL", "mail"),
    # taken at EHLO (upstream-connect helo): the fault comes while the
    # connection is being set up for a session that has sent nothing yet
    ("xclient", "close", "XCLIENT", "helo"),
    ("xclient", "421", "XCLIENT", "helo"),
    ("xclient", "close", "MAIL", "helo"),
])
def test_pooled_upstream_fails_on_reuse(fake_factory, moatd_factory, identity, how, verb,
                                        connect):
    f = ReuseFaults(how)
    fake = fake_factory(replies={".": f.dot, verb: f.first})
    m = moatd_factory(fake.address, workers="1", upstream_identity=identity,
                      upstream_connect=connect)
    results = []
    for i in range(20):
        with m.client() as c:
            c.ehlo()
            rs = smtp_transaction(c, message("reuse-%d" % i))
            results.append(rs[-1].code if rs[-1].code == 250 else str(rs))
            c.cmd("QUIT")
        # the session's upstream connection is parked once the client is gone
        wait_for(lambda: m.log().count("disconnect") >= i + 1, 2)
    fails = [r for r in results if r != 250]
    print("%s/%s at %s: injected %d, retries logged %d" % (
        identity, how, verb, f.injected, m.log().count("upstream retry")))
    assert not fails, "%d of 20 sessions failed: %r" % (len(fails), fails[:3])
    assert f.injected >= 5, "the fault was injected %d times only (no reuse?)" % f.injected
    got = sorted(t.content.split(b"Subject: ")[1].split(b"\r\n")[0] for t in fake.accepted())
    assert len(got) == 20 and len(set(got)) == 20, got


@pytest.mark.timeout(60)
@pytest.mark.parametrize("action", ["500 5.5.1 RSET refused", "421 4.4.2 fake.test closing",
                                    "CLOSE"])
@pytest.mark.parametrize("when", ["parked", "owed"])
def test_pooled_rset_refused_or_closed(fake_factory, moatd_factory, action, when):
    """Session A is refused at RCPT by moat after the upstream accepted its
    MAIL; its connection is parked with an RSET. The upstream answers that
    RSET with an error, a 421, or closes: while parked (the pool drops
    it), or (owed: the answer comes 1 s late) after session B took it and
    sent its XCLIENT behind the RSET (B's commands move to a fresh
    connection). Either way B's message goes through on a second
    connection and nothing of the stale RSET reaches B."""
    delay = 1.0 if when == "owed" else 0

    def rset(arg):
        time.sleep(delay)
        return action
    fake = fake_factory(replies={"RSET": rset})
    m = moatd_factory(fake.address, workers="1",
                      on=['rcpt sender-domain is bad.test reject 550 5.7.1 "refused by moat"'])
    with m.client() as c:
        c.ehlo("a.test")
        assert c.cmd("MAIL FROM:<x@bad.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert (r.code, r.enh) == (550, "5.7.1"), r
        c.cmd("QUIT")
    if when == "parked":
        assert wait_for(lambda: "upstream pooled=dropped" in m.log(), 5), m.log()[-3000:]
    else:
        assert wait_for(lambda: "disconnect" in m.log(), 2)
    with m.client() as c:
        c.ehlo("b.test")
        rs = smtp_transaction(c, message("pool-rset-b"))
        assert [r.code for r in rs] == [250, 250, 354, 250], rs
        c.cmd("QUIT")
    got = [t.content.split(b"Subject: ")[1].split(b"\r\n")[0] for t in fake.accepted()]
    assert got == [b"pool-rset-b"], got
    assert len(fake.conns) == 2, len(fake.conns)
    assert b"RSET\r\n" in bytes(fake.conns[0].raw)
    log = m.log()
    if when == "owed":
        assert "upstream reused pooled=0 owed=1" in log, log[-3000:]
        assert "upstream retry reason=pooled-connection-failed" in log, log[-3000:]
    else:
        assert "upstream reused" not in log, log[-3000:]


# ===========================================================================
# 7: drain waits for the answer to a message that went upstream


@pytest.mark.timeout(60)
def test_drain_answers_message_already_upstream(fake_factory, moatd_factory):
    dot_seen = threading.Event()

    def slow_dot(arg):
        dot_seen.set()
        time.sleep(6)
        return None
    fake = fake_factory(replies={".": slow_dot})
    m = moatd_factory(fake.address, drain_timeout="3s", upstream_timeout="10s")
    idle = m.client()
    idle.ehlo()
    c = m.client()
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@b.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(dot_stuff(message("drain-slow")) + b".\r\n")
    assert dot_seen.wait(5), "the dot never reached the upstream"
    t0 = time.monotonic()
    m.signal(signal.SIGTERM)
    r = idle.reply(timeout=2)
    assert r.code == 421, "idle session at SIGTERM: %s" % r
    r = c.reply(timeout=12)
    el = time.monotonic() - t0
    assert r.code == 250, "the client got %s after %.1fs; the upstream said 250" % (r, el)
    assert el > 4, el
    r = c.reply(timeout=3)
    assert r.code == 421, "after the relayed answer: %s" % r
    assert c.wait_closed(3)
    assert len(fake.accepted()) == 1
    m.proc.wait(timeout=10)
    assert m.proc.returncode == 0
    assert "shutdown session=waiting-upstream" in m.log()
    idle.close()
    c.close()
    m.stop()


# ===========================================================================
# 6: keep the upstream alive while a client's DATA comes in slowly


@pytest.fixture
def postfix_short_timeout(workdir):
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix upstream needs root")
    pf = Postfix(workdir, extra_main={"smtpd_timeout": "10s"})
    try:
        pf.start()
        yield pf
    finally:
        pf.stop()


@pytest.mark.postfix
@pytest.mark.timeout(120)
def test_slow_data_upstream_kept_alive(postfix_short_timeout, moatd_factory):
    pf = postfix_short_timeout
    m = moatd_factory("127.0.0.1:%d" % pf.port, upstream_keepalive="3s",
                      upstream_timeout="20s", command_deadline="60s", data_min_rate="0",
                      session_deadline="120s", log_level="debug")
    marker = "slow-data-%d" % m.port
    with m.client(timeout=30) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(("From: a@b.test\r\nTo: user@example.org\r\nSubject: %s\r\n"
                "Message-ID: <%s@b.test>\r\n\r\n" % (marker, marker)).encode())
        t0 = time.monotonic()
        for i in range(15):     # 30 s of DATA, a line every 2 s
            time.sleep(2)
            c.send(b"line %d of a slow message\r\n" % i)
        c.send(b".\r\n")
        r = c.reply(timeout=30)
        el = time.monotonic() - t0
        assert r.code == 250, "after a %.0f s DATA (smtpd_timeout 10s): %s" % (el, r)
        c.cmd("QUIT")
    got = pf.wait_messages_with(marker, 1, 15)
    time.sleep(1)
    got = pf.messages_with(marker)
    assert len(got) == 1, "delivered %d times" % len(got)
    assert m.log().count("upstream keepalive=noop") >= 5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("keepalive,want_noops", [("1s", True), ("0", False)])
def test_keepalive_noop_while_client_is_slow(fake, moatd_factory, keepalive, want_noops):
    """Without Postfix: while the client's DATA comes in, the upstream hears
    NOOP every upstream-keepalive (never inside the message: DATA goes
    upstream only after the client's dot), and none with 0."""
    m = moatd_factory(fake.address, upstream_keepalive=keepalive, command_deadline="30s",
                      data_min_rate="0")
    with m.client(timeout=10) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: keepalive\r\n\r\n")
        for i in range(4):
            time.sleep(1)
            c.send(b"line %d\r\n" % i)
        c.send(b".\r\n")
        assert c.reply().code == 250
    lines = fake.all_lines()
    noops = [l for l in lines if l.upper().startswith(b"NOOP")]
    verbs = [l.split()[0].upper() for l in lines if l.strip()]
    if want_noops:
        assert len(noops) >= 2, lines
        # every NOOP between RCPT and DATA: the message itself is one piece
        assert verbs.index(b"DATA") > max(i for i, v in enumerate(verbs) if v == b"NOOP")
    else:
        assert noops == [], lines
    tx = fake.completed()
    assert len(tx) == 1 and b"line 3" in tx[0].content
