"""Operational integration tests of moatd: reload, privileges, upstream
timeouts and hostile upstream replies, PROXY identity, slow DATA, pipelining
floods, fd exhaustion, shutdown (the case ids of docs/SECURITY.md in the names).

Each test starts its own moatd and upstream on free loopback ports, stops
every process by its PID (fixtures), and asserts what a user sees: SMTP
replies, the bytes the upstream received, log lines, process state.
"""

import os
import pwd
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import harness
from harness import Client, message, smtp_transaction, dot_stuff, wait_for


def codes(replies):
    return [r.code for r in replies]


def proc_status(pid, task=None):
    p = "/proc/%d/status" % pid if task is None else "/proc/%d/task/%d/status" % (pid, task)
    out = {}
    with open(p) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def rss_kb(pid):
    return int(proc_status(pid)["VmRSS"].split()[0])


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spin_diagnosis(pid):
    """Per-thread CPU over 1 s and a 1 s syscall summary (strace -c), for
    the failure message of a CPU-spin assertion."""
    import subprocess

    def per_thread():
        out = {}
        for t in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                    s = f.read()
            except OSError:
                continue
            fl = s[s.rindex(")") + 2:].split()
            out[t] = int(fl[11]) + int(fl[12])
        return out
    a = per_thread()
    time.sleep(1)
    b = per_thread()
    lines = ["thread %s: %d ticks/s" % (t, b[t] - a.get(t, 0)) for t in sorted(b)]
    try:
        r = subprocess.run(["timeout", "1", "strace", "-f", "-c", "-p", str(pid)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        lines.append(r.stdout.decode(errors="replace")[-2500:])
    except (OSError, subprocess.SubprocessError) as e:
        lines.append("strace: %r" % e)
    return "\n".join(lines)


def m_stop_quickly(m):
    """Stop moatd within a few seconds (SIGTERM, then SIGKILL); the fixture
    still reports a non-zero exit. Keeps a hanging moatd from costing the
    fixture's 10 s stop timeout."""
    if m is not None and m.proc is not None:
        m.stop(timeout=3)


def write_conf(m, **changes):
    """Rewrite moatd's config file with some settings changed (value None
    drops a key); extra_lines are appended verbatim."""
    extra = changes.pop("extra_lines", [])
    items = []
    seen = set()
    for k, v in m.conf_items:
        key = k
        for ck, cv in changes.items():
            if ck.replace("_", "-") == k:
                v = cv
                seen.add(ck)
        items.append((key, v))
    for ck, cv in changes.items():
        if ck not in seen:
            items.append((ck.replace("_", "-"), cv))
    text = harness.render_conf(items) + "".join(l + "\n" for l in extra)
    m.conf_path.write_text(text)
    return text


def rcpt_block(c, n, start=0):
    """MAIL + n RCPT, one command at a time; returns the replies."""
    out = [c.cmd("MAIL FROM:<a@b.test>")]
    for i in range(start, start + n):
        out.append(c.cmd("RCPT TO:<r%d@example.org>" % i))
    return out


class Looper(threading.Thread):
    """Sends messages in a loop until stopped: one long session
    (new_session=False) or a new session per message. Records every final
    reply and every failure."""

    def __init__(self, port, tag, new_session=False):
        super().__init__(daemon=True, name="looper-" + tag)
        self.port = port
        self.tag = tag
        self.new_session = new_session
        self.stop_ev = threading.Event()
        self.results = []       # (time, code, text)
        self.failures = []

    def one(self, c, i):
        # in DATA for ~50 ms per message, so that a reload is likely to
        # arrive while a message is in flight
        rs = [c.cmd("MAIL FROM:<a@b.test>"), c.cmd("RCPT TO:<user@example.org>"),
              c.cmd("DATA")]
        if codes(rs) == [250, 250, 354]:
            body = dot_stuff(message("%s-%d" % (self.tag, i)))
            c.send(body[:40])
            time.sleep(0.05)
            c.send(body[40:] + b".\r\n")
            rs.append(c.reply())
        r = rs[-1]
        self.results.append((time.monotonic(), r.code, str(r)))
        if r.code != 250:
            self.failures.append("message %d: %r" % (i, [str(x) for x in rs]))

    def run(self):
        c = None
        try:
            for i in range(100000):
                if self.stop_ev.is_set():
                    break
                if c is None:
                    c = Client(self.port, timeout=5)
                    if c.greeting.code != 220:
                        self.failures.append("greeting %s" % c.greeting)
                        return
                    c.ehlo("looper.test")
                self.one(c, i)
                if self.new_session:
                    c.cmd("QUIT")
                    c.close()
                    c = None
                time.sleep(0.02)
        except Exception as e:  # every exception is a dropped session
            self.failures.append("after %d messages: %r" % (len(self.results), e))
        finally:
            if c is not None:
                try:
                    c.cmd("QUIT", timeout=2)
                except Exception:
                    pass
                c.close()

    def count(self):
        return len(self.results)


# ===========================================================================
# CRS-03 reload


@pytest.mark.timeout(40)
def test_crs_03_reload_refused_then_applied(fake, moatd_factory):
    m = moatd_factory(fake.address, max_recipients=5)
    # a session opened before any reload
    early = m.client()
    early.ehlo("early.test")
    loop_one = Looper(m.port, "crs03-long")
    loop_new = Looper(m.port, "crs03-new", new_session=True)
    loop_one.start()
    loop_new.start()
    try:
        assert wait_for(lambda: loop_one.count() >= 2 and loop_new.count() >= 2, 10), \
            (loop_one.failures, loop_new.failures)

        # 1. a file with errors: refused, and nothing of it applies (it
        # also asks for max-recipients 3)
        n1 = (loop_one.count(), loop_new.count())
        text = write_conf(m, max_recipients="3", extra_lines=["frobnicate-setting  yes"])
        bad_line = text.count("\n")
        m.signal(signal.SIGHUP)
        assert m.wait_log(r"reload refused", 5), m.log()[-2000:]
        time.sleep(0.2)
        assert re.search(r"%s:%d:\d+: error" % (re.escape(str(m.conf_path)), bad_line), m.log()), \
            "the reload errors are not logged as FILE:LINE:COL: error:\n" + m.log()[-2000:]
        assert not re.search(r"reload ok", m.log())
        with m.client() as c:
            c.ehlo()
            rs = rcpt_block(c, 6)
            assert codes(rs) == [250] * 6 + [452], \
                "old config (max-recipients 5) after a refused reload: %r" % rs
            assert rs[-1].enh == "4.5.3", rs[-1]
            c.cmd("QUIT")

        # 2. a good file: max-recipients 2
        assert wait_for(lambda: loop_one.count() > n1[0] and loop_new.count() > n1[1], 10), \
            "loopers made no progress across the refused reload: %r %r" % (
                loop_one.failures, loop_new.failures)
        n2 = (loop_one.count(), loop_new.count())
        write_conf(m, max_recipients="2")
        m.signal(signal.SIGHUP)
        assert m.wait_log(r"reload ok", 5), m.log()[-2000:]
        time.sleep(0.2)
        with m.client() as c:
            c.ehlo()
            rs = rcpt_block(c, 3)
            assert codes(rs) == [250, 250, 250, 452], \
                "a session opened after the reload to max-recipients 2: %r" % rs
            assert rs[-1].enh == "4.5.3", rs[-1]
            assert c.cmd("RSET").code == 250
            c.cmd("QUIT")
        # the session opened before both reloads keeps max-recipients 5
        rs = rcpt_block(early, 6)
        assert codes(rs) == [250] * 6 + [452], \
            "session opened before the reload lost its policy: %r" % rs
        assert early.cmd("DATA").code == 354
        early.send(dot_stuff(message("crs03-early", extra_headers=["X-Moat-Test-Marker: e"]))
                   + b".\r\n")
        r = early.reply()
        assert r.code == 250, r
        early.cmd("QUIT")
        assert wait_for(lambda: loop_one.count() > n2[0] and loop_new.count() > n2[1], 10), \
            "loopers made no progress across the good reload: %r %r" % (
                loop_one.failures, loop_new.failures)
    finally:
        loop_one.stop_ev.set()
        loop_new.stop_ev.set()
        loop_one.join(10)
        loop_new.join(10)
        early.close()
    assert not loop_one.failures, "long session during reloads: %r" % loop_one.failures
    assert not loop_new.failures, "new sessions during reloads: %r" % loop_new.failures
    assert loop_one.count() >= 3 and loop_new.count() >= 3
    early_tx = [t for t in fake.completed() if b"crs03-early" in (t.data_raw or b"")]
    assert len(early_tx) == 1
    assert early_tx[0].rcpts == [b"<r%d@example.org>" % i for i in range(5)]
    assert m.alive()


# ===========================================================================
# CRS-05 privileges


@pytest.mark.timeout(30)
def test_crs_05_runs_unprivileged_and_spools(fake, moatd_factory, workdir):
    if not harness.IS_ROOT:
        pytest.skip("needs root to start moatd as root")
    nobody = pwd.getpwnam("nobody")
    spool = workdir / "spool1777"
    spool.mkdir()
    os.chmod(spool, 0o1777)
    m = moatd_factory(fake.address, user="nobody", spool_dir=str(spool), spool_memory="1k",
                      workers="2")
    pid = m.proc.pid
    tasks = sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))
    assert len(tasks) >= 2, tasks
    for t in tasks:
        st = proc_status(pid, t)
        uids = st["Uid"].split()
        gids = st["Gid"].split()
        assert uids == [str(nobody.pw_uid)] * 4, "task %d Uid: %s" % (t, st["Uid"])
        assert gids == [str(nobody.pw_gid)] * 4, "task %d Gid: %s" % (t, st["Gid"])
        assert "0" not in st.get("Groups", "").split(), "task %d Groups: %s" % (t, st["Groups"])
        assert int(st["CapEff"], 16) == 0, "task %d CapEff %s" % (t, st["CapEff"])
        assert int(st["CapPrm"], 16) == 0, "task %d CapPrm %s" % (t, st["CapPrm"])

    body = b"".join(b"%06d a line of a big message, spooled to a file by nobody..\r\n" % i
                    for i in range(3300))
    msg = message("crs05", body=body, extra_headers=["X-Moat-Test-Marker: crs05"])
    assert len(msg) >= 200 * 1024
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg))

        def spool_fd():
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    tgt = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if tgt.startswith(str(spool) + "/"):
                    return fd, tgt
            return None
        found = wait_for(spool_fd, 5)
        assert found, "no spool file of moatd in %s while a 200 KB message is in DATA" % spool
        st = os.stat("/proc/%d/fd/%s" % (pid, found[0]))
        assert found[1].endswith("(deleted)"), "spool file not unlinked: %s" % found[1]
        assert st.st_uid == nobody.pw_uid, st
        assert st.st_mode & 0o077 == 0, "spool file mode %o" % st.st_mode
        c.send(b".\r\n")
        r = c.reply(timeout=10)
        assert r.code == 250, r
        c.cmd("QUIT")
    t = fake.completed()
    assert len(t) == 1
    i = t[0].content.find(b"X-Moat-Test-Marker:")
    assert t[0].content[i:] == msg
    assert list(spool.iterdir()) == []


# ===========================================================================
# UPS-05 upstream slow to reply


def delayed(fake_stop, seconds, reply, times=1):
    """A FakeUpstream action: wait, then reply (the first `times` calls)."""
    n = [0]

    def act(arg):
        n[0] += 1
        if n[0] > times:
            return None
        fake_stop.wait(seconds)
        return reply
    return act


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stage", ["dot", "354"])
def test_ups_05_upstream_reply_delayed(fake_factory, moatd_factory, stage):
    fake = fake_factory()
    if stage == "dot":
        fake.replies["."] = delayed(fake.stop_ev, 3.5, "250 2.0.0 Ok: queued late")
    else:
        fake.replies["DATA"] = delayed(fake.stop_ev, 3.5, "354 go ahead, late")
    m = moatd_factory(fake.address, upstream_timeout="2s")
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message("ups05-" + stage)))
        t0 = time.monotonic()
        c.send(b".\r\n")
        r = c.reply(timeout=8)
        el = time.monotonic() - t0
        assert r.code == 451 and r.enh.startswith("4.4."), \
            "upstream %s delayed past upstream-timeout: got %s after %.2fs" % (stage, r, el)
        assert 1.5 <= el <= 3.2, "451 after %.2fs (upstream-timeout 2s)" % el
        # never a late 250 for that message
        late = c.pending(2.0)     # the upstream's late reply comes at 3.5 s
        assert not re.search(rb"(^|\n)2\d\d", late), "late bytes after the 451: %r" % late
        # the session goes on: a next message is relayed (the delay was once)
        rs = smtp_transaction(c, message("ups05-next-" + stage))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    if stage == "354":
        # the body of the first message never went upstream
        assert b"ups05-354" not in b"".join(
            t.data_raw or b"" for t in fake.completed() if b"ups05-next" not in t.data_raw)
        assert len(fake.completed()) == 1
    assert m.alive()


@pytest.mark.timeout(30)
def test_ups_05_idle_upstream_not_timed_out_while_client_thinks(fake, moatd_factory):
    """upstream-timeout bounds each upstream reply; it is not an idle
    timeout of the upstream connection while moatd waits for its client
    (within command-deadline)."""
    m = moatd_factory(fake.address, upstream_timeout="2s", command_deadline="30s")
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@b.test>").code == 250
        time.sleep(3.0)
        r = c.cmd("RCPT TO:<user@example.org>")
        assert r.code == 250, "RCPT 3 s after MAIL (upstream-timeout 2s, command-deadline " \
            "30s): %s" % r
        assert c.cmd("DATA").code == 354
        time.sleep(3.0)
        c.send(dot_stuff(message("ups05-idle")) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        c.cmd("QUIT")
    assert len(fake.completed()) == 1
    assert "upstream error=timeout" not in m.log()


# ===========================================================================
# UPS-08 unsolicited upstream reply while idle


@pytest.mark.timeout(30)
@pytest.mark.parametrize("then_close", [False, True], ids=["421-stays-open", "421-and-close"])
def test_ups_08_unsolicited_421_while_idle(fake, moatd_factory, then_close):
    m = moatd_factory(fake.address)
    marker = "stale-marker-%d" % m.port
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("ups08-first"))
        assert rs[-1].code == 250, rs
        first = fake.completed()[0]
        old = [x for x in fake.conns if x.id == first.conn_id][0]
        n_lines_before = len(old.lines)
        # the upstream speaks while moatd's connection is idle
        old.sock.sendall(("421 4.4.2 fake.test %s idle timeout\r\n" % marker).encode())
        if then_close:
            old.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        got_unsolicited = c.pending(0.2)
        assert marker.encode() not in got_unsolicited, got_unsolicited
        closed = c.eof
        r = None
        if not closed:
            try:
                r = c.cmd("MAIL FROM:<a@b.test>")
            except harness.ConnectionClosed:
                closed = True
        assert not closed or r is None
        if r is not None:
            assert marker not in str(r), "the stale upstream reply reached the client: %s" % r
            assert r.code == 250 or r.cls == 4, r
        # moatd must not send the next transaction on the dead connection
        after = [l for l in old.lines[n_lines_before:] if not l.upper().startswith(b"QUIT")]
        assert after == [], "commands on the upstream connection after its 421: %r" % after
        behaviour = None
        if r is not None and r.code == 250:
            behaviour = "fresh upstream connection at the next MAIL"
            assert c.cmd("RCPT TO:<user@example.org>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(message("ups08-second")) + b".\r\n")
            r2 = c.reply()
            assert r2.code == 250, r2
            second = [t for t in fake.completed() if b"ups08-second" in t.data_raw]
            assert len(second) == 1 and second[0].conn_id != first.conn_id
        elif r is not None:
            behaviour = "next MAIL answered %s by moatd" % r
            if not c.wait_closed(0.5):
                # the session goes on; a later MAIL reconnects
                rs = smtp_transaction(c, message("ups08-third"))
                assert rs[-1].code == 250, rs
        else:
            behaviour = "client session closed (%r)" % getattr(c, "tail", got_unsolicited)
        print("UPS-08 (%s): %s" % ("close" if then_close else "open", behaviour))
        print("\n".join(l for l in m.log().splitlines() if "upstream" in l)[-1500:])
    assert m.alive()


# ===========================================================================
# LEN-07 over-long and over-many upstream reply lines


LEN07 = {
    "600-byte-line": "250 2.1.0 " + "x" * 590,
    "40-lines": "\n".join(["250-2.1.0 line %d" % i for i in range(39)] + ["250 2.1.0 ok"]),
    "10000-lines": "\n".join(["250-2.1.0 line %d" % i for i in range(9999)] + ["250 2.1.0 ok"]),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(LEN07))
def test_len_07_hostile_upstream_reply_to_mail(fake_factory, moatd_factory, case):
    n = [0]

    def mail(arg):
        n[0] += 1
        return LEN07[case] if n[0] == 1 else None
    fake = fake_factory(replies={"MAIL": mail})
    m = moatd_factory(fake.address)
    with m.client() as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@b.test>")
        assert r.code == 451 and r.enh.startswith("4.4."), "upstream reply %s: got %r" % (case, r)
        assert len(r.raw) < 600 and len(r.lines) == 1, r
    assert m.alive()
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("len07-next"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    assert len(fake.completed()) == 1


# ===========================================================================
# IDN-10 PROXY protocol toward the upstream


def proxy_v2_expected(src, sport, dst, dport):
    return (harness.PROXY_V2_SIG + b"\x21\x11\x00\x0c" + socket.inet_aton(src)
            + socket.inet_aton(dst) + struct.pack("!HH", sport, dport))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_idn_10_proxy_header_bytes(moatd_factory, version):
    fake = harness.ProxyFakeUpstream(caps=[c for c in harness.DEFAULT_CAPS
                                           if not c.startswith("XCLIENT")])
    fake.start()
    try:
        m = moatd_factory(fake.address, upstream_identity="proxy-" + version, drain_timeout="1s")
        with m.client(source="127.0.0.7", timeout=6) as c:
            cport = c.sock.getsockname()[1]
            c.ehlo("client7.test")
            for i in range(2):
                rs = smtp_transaction(c, message("idn10-%s-%d" % (version, i)))
                assert rs[-1].code == 250, (rs, fake.proxy_errors)
            c.cmd("QUIT")
        assert not fake.proxy_errors, fake.proxy_errors
        assert len(fake.conns) == 1, "one upstream connection per session expected"
        conn = fake.conns[0]
        if version == "v1":
            exp = b"PROXY TCP4 127.0.0.7 127.0.0.1 %d %d\r\n" % (cport, m.port)
            assert len(exp) <= 107
        else:
            exp = proxy_v2_expected("127.0.0.7", cport, "127.0.0.1", m.port)
        assert conn.proxy_header == exp, (conn.proxy_header, exp)
        assert conn.proxy_extra == b"", "bytes sent before the greeting: %r" % conn.proxy_extra
        raw = bytes(conn.raw)
        assert raw.startswith(exp)
        assert raw[len(exp):].startswith(b"EHLO "), raw[:200]
        assert raw.count(b"PROXY") == (1 if version == "v1" else 0)
        assert raw.count(harness.PROXY_V2_SIG) == (0 if version == "v1" else 1)
        assert b"XCLIENT" not in raw
        assert len(fake.completed()) == 2
    finally:
        m_stop_quickly(locals().get("m"))
        fake.stop()
        assert not fake.errors, fake.errors


@pytest.fixture(scope="module")
def postfix_haproxy(workroot):
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix upstream needs root")
    pf = harness.Postfix(harness.make_dir(workroot / "postfix-haproxy"),
                         extra_main={"smtpd_upstream_proxy_protocol": "haproxy",
                                     "smtpd_authorized_xclient_hosts": ""})
    try:
        pf.start()
    except Exception:
        pf.stop()
        raise
    yield pf
    pf.stop()


@pytest.mark.postfix
@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_idn_10_proxy_identity_reaches_postfix(postfix_haproxy, moatd_factory, version):
    pf = postfix_haproxy
    m = moatd_factory("127.0.0.1:%d" % pf.port, upstream_identity="proxy-" + version,
                      drain_timeout="1s")
    tag = "idn10-pf-%s-%d" % (version, m.port)
    try:
        with m.client(source="127.0.0.7", timeout=6) as c:
            c.ehlo("client7.test")
            rs = smtp_transaction(c, message(tag))
            assert rs[-1].code == 250, (rs, pf.log()[-2000:])
            c.cmd("QUIT")
    finally:
        m_stop_quickly(m)
    msgs = pf.wait_messages_with(tag, 1, 15)
    assert len(msgs) == 1, pf.log()[-3000:]
    hdr = msgs[0].split(b"\n\n", 1)[0]
    received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", hdr, re.M)
    assert received, hdr
    assert b"[127.0.0.7]" in received[0], received[0]
    assert b"[127.0.0.1]" not in received[0], received[0]
    assert re.search(r"client=\S*\[127\.0\.0\.7\]", pf.log()), pf.log()[-3000:]


# ===========================================================================
# SLO-03 DATA at a trickle


@pytest.mark.timeout(30)
def test_slo_03_data_trickle_min_rate(fake, moatd_factory):
    m = moatd_factory(fake.address, command_deadline="2s", data_min_rate="1000")
    c = m.client()
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@b.test>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    t0 = time.monotonic()
    content = message("slo03-trickle", body="slo03 body " * 20)
    got = b""
    closed_at = None
    sent = 0
    for b in content:
        try:
            c.sock.sendall(bytes([b]))
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic()
            break
        r, _, _ = select.select([c.sock], [], [], 0.1)   # 10 bytes/s
        if r:
            try:
                chunk = c.sock.recv(4096)
            except ConnectionResetError:
                chunk = b""
            got += chunk
            if not chunk:
                closed_at = time.monotonic()
                break
        if time.monotonic() - t0 > 7:
            break
    reply_at = time.monotonic()
    if closed_at is None and c.wait_closed(3):
        closed_at = time.monotonic()
        got += c.tail
    c.close()
    assert re.match(rb"421[ -]4\.4\.2", got), \
        "trickling DATA (%d bytes in %.1fs): got %r" % (sent, reply_at - t0, got)
    assert closed_at is not None, "connection not closed after the 421"
    el = closed_at - t0
    assert 1.5 <= el <= 4.0, "closed after %.2fs (deadline 2s + bytes/1000)" % el
    time.sleep(0.3)
    lines = fake.all_lines()
    assert not any(l.upper().startswith(b"DATA") for l in lines), lines
    assert fake.completed() == []
    assert b"slo03" not in fake.all_raw()
    assert m.alive()


# ===========================================================================
# PIP-05 pipelined flood, client never reads


@pytest.mark.timeout(40)
def test_pip_05_pipelined_flood_never_read(fake, moatd_factory):
    m = moatd_factory(fake.address, max_junk_commands="100000", max_errors="100000")
    pid = m.proc.pid
    base = rss_kb(pid)
    flood = m.client(timeout=5)
    try:
        flood.ehlo("flood.test")
        flood.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = b"RSET\r\n" * 20000
        sent = 0
        try:
            sent = flood.sock.send(data)
            while sent < len(data):
                sent += flood.sock.send(data[sent:])
        except (socket.timeout, OSError):
            pass
        peak = base
        for _ in range(20):
            peak = max(peak, rss_kb(pid))
            time.sleep(0.1)
        assert m.alive()
        assert peak < 60 * 1024, "moatd RSS %d kB (base %d kB) under a never-read flood" % (
            peak, base)
        t0 = time.monotonic()
        with m.client(timeout=3) as c:
            el = time.monotonic() - t0
            assert c.greeting.code == 220, c.greeting
            assert el < 1.0, "greeting of a second client took %.2fs" % el
            assert c.cmd("NOOP").code == 250
        print("PIP-05: sent %d of %d bytes; RSS base %d kB peak %d kB" % (
            sent, len(data), base, peak))
    finally:
        flood.close()
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("pip05-after"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    assert m.alive()


# ===========================================================================
# FLD-05 descriptors exhausted


@pytest.mark.timeout(60)
def test_fld_05_fd_exhaustion_no_spin(fake, moatd_factory, workdir):
    wrapper = workdir / "moatd-lowfd"
    wrapper.write_text('#!/bin/sh\nexec prlimit --nofile=64:64 "%s" "$@"\n' % harness.moatd_path())
    wrapper.chmod(0o755)
    m = moatd_factory(fake.address, start=False, max_sessions="1000",
                      max_sessions_per_client="1000", command_deadline="60s")
    m.binary = str(wrapper)
    m.start()
    pid = m.proc.pid
    limits = Path("/proc/%d/limits" % pid).read_text()
    assert re.search(r"Max open files\s+64\s+64", limits), limits
    assert os.readlink("/proc/%d/exe" % pid).endswith("moatd")
    held = []
    stats = {"220": 0, "421": 0, "none": 0, "closed": 0, "mail250": 0, "mail4xx": 0}

    def greeting(c, wait):
        r, _, _ = select.select([c.sock], [], [], wait)
        if not r:
            return "none"
        try:
            g = c.reply(timeout=1)
        except harness.ConnectionClosed:
            return "closed"
        except socket.timeout:
            return "none"
        if g.code != 220:
            assert g.cls == 4, g
            return "421"
        return "220"
    try:
        # 40 sessions one after the other, each busy (upstream descriptor)
        for i in range(40):
            try:
                c = Client(m.port, timeout=2, greet=False)
            except OSError:
                stats["none"] += 1
                continue
            held.append(c)
            g = greeting(c, 0.15)
            stats[g] += 1
            if g != "220":
                continue
            c.ehlo("busy.test")
            r = c.cmd("MAIL FROM:<a@b.test>")
            if r.code == 250:
                stats["mail250"] += 1
            else:
                assert r.cls == 4, "MAIL under fd exhaustion: %s" % r
                stats["mail4xx"] += 1
        # 40 more at once
        late = []
        for i in range(40):
            try:
                late.append(Client(m.port, timeout=2, greet=False))
            except OSError:
                stats["none"] += 1
        held += late
        time.sleep(0.5)
        for c in late:
            stats[greeting(c, 0)] += 1
        assert m.alive(), m.log()[-2000:]
        assert stats["220"] > 0, stats
        excess = stats["421"] + stats["none"] + stats["closed"] + stats["mail4xx"]
        assert excess > 0, "80 sessions fit in 64 descriptors? %r" % stats
        # no spinning while connections are pending or being refused
        cpu0 = cpu_seconds(pid)
        time.sleep(2.0)
        cpu = cpu_seconds(pid) - cpu0
        if cpu >= 0.5:
            diag = spin_diagnosis(pid)
            pytest.fail("moatd used %.2fs CPU in 2s under fd exhaustion (%r)\n%s\nlog:\n%s" % (
                cpu, stats, diag, "\n".join(l for l in m.log().splitlines()
                                            if "debug" not in l)[-3000:]))
        assert m.alive()
        # an existing session continues
        first = held[0]
        r = first.cmd("RSET")
        assert r.code == 250, r
        print("FLD-05: %r cpu %.2fs in 2s" % (stats, cpu))
        print("\n".join(l for l in m.log().splitlines() if "limit" in l or "accept" in l)[-1500:])
    finally:
        for c in held:
            c.close()
    # service resumes once descriptors are free

    def fresh():
        try:
            with Client(m.port, timeout=2) as c:
                if c.greeting.code != 220:
                    return False
                c.ehlo()
                rs = smtp_transaction(c, message("fld05-after"))
                c.cmd("QUIT")
                return rs[-1].code == 250
        except (OSError, harness.ConnectionClosed, harness.HarnessError):
            return False
    assert wait_for(fresh, 8, 0.5), m.log()[-2000:]
    assert m.alive()


# ===========================================================================
# Shutdown


@pytest.mark.timeout(30)
def test_crs_02_sigterm_idle_sessions_get_421(fake, moatd_factory):
    m = moatd_factory(fake.address, drain_timeout="5s")
    fresh = m.client()
    fresh.ehlo()
    after_tx = m.client()
    after_tx.ehlo()
    assert smtp_transaction(after_tx, message("crs02-idle"))[-1].code == 250
    t0 = time.monotonic()
    m.signal(signal.SIGTERM)
    for name, c in (("fresh", fresh), ("after a transaction", after_tx)):
        r = c.reply(timeout=2)
        assert r.code == 421 and r.enh == "4.3.2", "idle session (%s) at SIGTERM: %s" % (name, r)
        assert time.monotonic() - t0 < 1.5, "421 came %.2fs after SIGTERM" % (
            time.monotonic() - t0)
        assert c.wait_closed(2), "%s: not closed after the 421" % name
        c.close()
    try:
        m.proc.wait(timeout=6)
    except harness.subprocess.TimeoutExpired:
        pass
    el = time.monotonic() - t0
    assert m.proc.poll() is not None, "moatd still running %.1fs after SIGTERM" % el
    assert m.proc.returncode == 0, m.log()[-2000:]
    assert el < 5.0, "exit took %.2fs (drain-timeout 5s, nothing to drain)" % el
    m.stop()


@pytest.mark.timeout(30)
def test_second_moatd_on_the_same_address_refuses_to_start(moatd_sink, moatd_binary):
    """SO_REUSEPORT would let a second moatd share the first one's port
    silently; it must refuse to start instead, and the first keeps serving."""
    m, sink = moatd_sink
    r = subprocess.run([moatd_binary, "-f", str(m.conf_path)], capture_output=True,
                       timeout=10, text=True)
    assert r.returncode != 0, r
    assert "something already accepts connections there" in r.stderr, r.stderr
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("second-moatd"))
        assert rs[-1].code == 250, rs


@pytest.mark.timeout(60)
def test_crs_05_user_root_warned_unknown_user_refused(fake, moatd_factory, workdir):
    """The start-up both programs share (engine_drop_privileges): told to
    stay root, moatd and moat-milter run and each says so in a warning
    naming itself; told to become a user that does not exist, each refuses
    to start and names the user."""
    if not harness.IS_ROOT:
        pytest.skip("needs root")
    m = moatd_factory(fake.address, user="root")
    assert wait_for(lambda: "user root: moatd keeps running as root" in m.log(), 5), \
        m.log()[-2000:]
    with m.client() as c:
        assert c.ehlo().code == 250
    mm = harness.MoatMilter(workdir, harness.free_port(), name="milter-root", user="root")
    mm.start()
    try:
        assert wait_for(lambda: "user root: moat-milter keeps running as root" in mm.log(), 5), \
            mm.log()[-2000:]
        assert mm.proc.poll() is None
    finally:
        mm.stop()
    # (made here, not by the fixture, which takes an exit as a failure)
    for bad in (harness.Moatd(workdir, fake.address, name="moatd-nouser",
                              user="no-such-user-moat"),
                harness.MoatMilter(workdir, harness.free_port(), name="milter-nouser",
                                   user="no-such-user-moat")):
        try:
            bad.start()
        except Exception:
            pass    # it did not come up: what is checked below
        try:
            assert wait_for(lambda: bad.proc is not None and bad.proc.poll() is not None, 10)
            assert bad.proc.returncode != 0
            assert "user no-such-user-moat: no such user" in bad.log(), bad.log()[-1000:]
        finally:
            bad.stop()


@pytest.mark.timeout(40)
def test_crs_03_reload_names_what_waits_for_a_restart(fake, moatd_factory):
    """A reload that changes settings only a restart applies says so, one
    warning per kind, and applies the rest (max-recipients here)."""
    m = moatd_factory(fake.address, max_recipients=5)
    write_conf(m, max_recipients="2", workers="3", user="daemon",
               metrics_listen="127.0.0.1:%d" % harness.free_port())
    m.signal(signal.SIGHUP)
    assert m.wait_log(r"reload ok", 5), m.log()[-2000:]
    log = m.log()
    for what in ("listen, listen-backlog and workers changes take effect at restart",
                 "metrics-listen and control-socket changes take effect at restart",
                 "user changes take effect at restart"):
        assert "reload: " + what in log, (what, log[-2000:])
    with m.client() as c:
        c.ehlo()
        rs = rcpt_block(c, 3)
        assert codes(rs) == [250, 250, 250, 452], rs
        c.cmd("QUIT")
