"""Greylisting through moatd: the embedded store (one host) and Redis
(shared by several moatd), with Redis stopped, paused and failed over.

Short timings: greylist-delay 2s; a retry passes from then on within the
window.
"""

import re
import subprocess
import time

import pytest

import harness
from harness import Client, message, moatctl_path, smtp_transaction

GL_RULES = [
    "rcpt client-ip in trusted accept",
    "rcpt true greylist",
]
TRUSTED = ["trusted net { 127.0.0.200 }"]


def rcpt_reply(m, rcpt, source="127.0.0.1", mfrom="a@sender.test"):
    with Client(m.port, m.host, source=source, timeout=8) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % mfrom).code == 250
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        c.cmd("QUIT")
    return r


def send(m, rcpt, subject, source="127.0.0.1", mfrom="a@sender.test"):
    with Client(m.port, m.host, source=source, timeout=8) as c:
        c.ehlo()
        rs = smtp_transaction(c, message(subject), mfrom=mfrom, rcpts=(rcpt,))
        c.cmd("QUIT")
    return rs


def ctl(sock, *args):
    return subprocess.run([moatctl_path(), "greylist", "--socket", str(sock)] + list(args),
                          capture_output=True, text=True, timeout=20)


def test_embedded_store_lifecycle_and_control(fake, moatd_factory, workdir):
    sock = workdir / "moatd.sock"
    m = moatd_factory(fake.address, greylist_delay="2s", control_socket=str(sock),
                      list=TRUSTED, on=GL_RULES)
    r = rcpt_reply(m, "u1@example.org")
    assert r.code == 451 and r.text.startswith("4.7.1 greylisted, please retry in"), r
    r = rcpt_reply(m, "u1@example.org")                  # too early
    assert r.code == 451, r
    r2 = rcpt_reply(m, "u2@example.org")                 # its own triplet
    assert r2.code == 451, r2
    time.sleep(2.2)
    rs = send(m, "u1@example.org", "after the delay")
    assert rs[-1].code == 250, rs
    assert fake.wait_completed(1)[0].rcpts == [b"<u1@example.org>"]
    # a trusted client is never greylisted, and leaves no record
    rs = send(m, "u3@example.org", "trusted", source="127.0.0.200")
    assert rs[-1].code == 250, rs
    log = m.log()
    assert re.search(r"check greylist=greylisted reason=new retry-in=2 ", log), log[-2000:]
    assert re.search(r"check greylist=greylisted reason=early", log)
    assert re.search(r"check greylist=pass reason=retried", log)
    p = ctl(sock, "list")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "u1@example.org" in p.stdout and "u2@example.org" in p.stdout, p.stdout
    assert "u3@example.org" not in p.stdout and "127.0.0.200" not in p.stdout, p.stdout
    p = ctl(sock, "stats")
    assert p.returncode == 0 and re.search(r"triplets\D+3|records\D+[34]", p.stdout), p.stdout
    # allow-list a network by hand: its next new triplet passes at once
    p = ctl(sock, "allow", "127.0.0.77")
    assert p.returncode == 0, p.stdout + p.stderr
    r = rcpt_reply(m, "u9@example.org", source="127.0.0.77")
    assert r.code == 250, r


def test_store_survives_a_restart(fake, moatd_factory, workdir):
    """Saved at shutdown by the user moatd runs as, loaded at start."""
    d = harness.make_dir(workdir / "glstore", 0o700, harness.UNPRIV_USER)
    store = d / "greylist.db"
    conf = dict(greylist_delay="2s", greylist_store=str(store), list=TRUSTED, on=GL_RULES)
    m = moatd_factory(fake.address, **conf)
    assert rcpt_reply(m, "keep@example.org").code == 451
    time.sleep(2.2)
    assert send(m, "keep@example.org", "passes")[-1].code == 250
    m.stop()
    assert store.exists() and "keep@example.org" in store.read_text(errors="replace")
    m2 = moatd_factory(fake.address, **conf)
    # known triplet: passes at once after the restart; a new one waits
    assert send(m2, "keep@example.org", "again")[-1].code == 250
    assert rcpt_reply(m2, "new@example.org").code == 451


def test_corrupt_store_file_is_refused_not_fatal(fake, moatd_factory, workdir):
    store = workdir / "greylist.db"
    store.write_text("this is not a greylist file\n")
    m = moatd_factory(fake.address, greylist_delay="2s", greylist_store=str(store),
                      on=GL_RULES[1:])
    assert rcpt_reply(m, "x@example.org").code == 451
    assert re.search(r"greylist store error=", m.log())


@pytest.mark.timeout(90)
def test_two_moatd_share_one_redis(fake, moatd_factory, redis_factory):
    """Greylisted at one moatd, passes at the other after the delay; the
    decision is one Lua script call, keys under the prefix."""
    rd = redis_factory()
    conf = dict(redis=rd.address, greylist_delay="2s", redis_prefix="mt:", list=TRUSTED,
                on=GL_RULES)
    a = moatd_factory(fake.address, **conf)
    b = moatd_factory(fake.address, **conf)
    assert rcpt_reply(a, "shared@example.org").code == 451
    assert rcpt_reply(b, "shared@example.org").code == 451          # still too early
    time.sleep(2.2)
    assert send(b, "shared@example.org", "via b")[-1].code == 250
    keys = sorted(k.decode() for k in rd.client().keys("mt:*"))
    assert any(k.startswith("mt:t:{127.0.0.0/24}|a@sender.test|shared@example.org") for k in keys), keys
    assert any(k.startswith("mt:c:{127.0.0.0/24}") for k in keys), keys
    info = rd.client().info("commandstats")
    assert "cmdstat_evalsha" in info and "cmdstat_get" not in info, info


@pytest.mark.timeout(90)
def test_redis_down_paused_and_back(fake, moatd_factory, redis_factory):
    """Redis stopped, then paused: each decision is an error within the
    deadline, the policy accepts (never a 5xx), the outage is logged once;
    when Redis comes back greylisting works again, no restart of moatd."""
    rd = redis_factory()
    m = moatd_factory(fake.address, redis=rd.address, redis_timeout="300ms",
                      greylist_delay="2s", on=GL_RULES[1:])
    assert rcpt_reply(m, "r1@example.org").code == 451
    rd.stop()
    for i in range(3):
        t0 = time.monotonic()
        r = rcpt_reply(m, "down%d@example.org" % i)
        assert r.code == 250, r
        assert time.monotonic() - t0 < 2
    rd.start()
    ok = False
    for _ in range(60):
        r = rcpt_reply(m, "back@example.org")
        if r.code == 451:
            ok = True
            break
        time.sleep(0.1)
    assert ok, m.log()[-2000:]
    rd.pause()
    try:
        t0 = time.monotonic()
        r = rcpt_reply(m, "paused@example.org")
        assert r.code == 250, r
        assert time.monotonic() - t0 < 2
    finally:
        rd.resume()
    log = m.log()
    # one warning per outage (stopped, then paused), one line on recovery
    assert len(re.findall(r"warn: greylist redis unavailable", log)) == 2, log[-3000:]
    assert re.search(r"info: greylist redis available again errors=\d+", log), log[-3000:]
    assert re.search(r"check greylist=error", log)
    assert not re.search(r" 5\d\d ", "\n".join(l for l in log.splitlines() if "greylist" in l))


def evalsha_calls(rd):
    return rd.client().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.mark.timeout(90)
def test_pass_memory_spares_redis(fake, moatd_factory, redis_factory):
    """greylist-cache: a pass Redis gave is answered from the worker's memory
    for that long (no Redis call, logged from=memory); greylisted triplets
    always ask Redis; known senders keep flowing while Redis is down, new
    ones get greylist-on-error. With greylist-cache 0 every decision asks."""
    rd = redis_factory()
    conf = dict(redis=rd.address, redis_timeout="300ms", greylist_delay="2s",
                greylist_on_error="tempfail", workers="1", on=GL_RULES[1:])
    m = moatd_factory(fake.address, greylist_cache="30s", **conf)
    assert rcpt_reply(m, "mem@example.org").code == 451
    assert rcpt_reply(m, "mem@example.org").code == 451     # too early: Redis again
    assert evalsha_calls(rd) == 2
    time.sleep(2.2)
    assert send(m, "mem@example.org", "retried")[-1].code == 250
    assert evalsha_calls(rd) == 3
    for i in range(5):
        assert send(m, "mem@example.org", "known %d" % i)[-1].code == 250
    assert evalsha_calls(rd) == 3
    assert len(fake.wait_completed(6)) == 6
    log = m.log()
    assert len(re.findall(r"check greylist=pass reason=known retry-in=0 passes=1 from=memory ",
                          log)) == 5, log[-3000:]
    assert re.search(r"check greylist=pass reason=retried .*key=", log)
    rd.stop()
    assert send(m, "mem@example.org", "redis down, known")[-1].code == 250
    r = rcpt_reply(m, "stranger@example.org")
    assert (r.code, r.text) == (451, "4.7.1 greylisting is unavailable, please try again later"), r
    rd.start()
    n0 = evalsha_calls(rd)
    m2 = moatd_factory(fake.address, greylist_cache="0", **conf)
    for _ in range(60):                                     # Redis back: the triplet is known
        if rcpt_reply(m2, "mem@example.org").code == 250:
            break
        time.sleep(0.1)
    n1 = evalsha_calls(rd)
    for i in range(3):
        assert send(m2, "mem@example.org", "no memory %d" % i)[-1].code == 250
    assert evalsha_calls(rd) - n1 == 3, (n0, n1, evalsha_calls(rd))
    assert "from=memory" not in m2.log()


def test_redis_down_with_on_error_tempfail(fake, moatd_factory, redis_factory):
    rd = redis_factory()
    m = moatd_factory(fake.address, redis=rd.address, redis_timeout="300ms",
                      greylist_on_error="tempfail", on=GL_RULES[1:])
    rd.stop()
    r = rcpt_reply(m, "x@example.org")
    assert (r.code, r.text) == (451, "4.7.1 greylisting is unavailable, please try again later"), r


def sentinel_setup(redis_factory, workdir):
    """(master, replica in sync, sentinel watching the master as mm)"""
    master = redis_factory()
    replica = redis_factory(replica_of=(master.host, master.port))
    sen = harness.Sentinel(workdir, master).start()
    try:
        assert harness.wait_for(lambda: replica.client().info("replication").get(
            "master_link_status") == "up", 15), "the replica never synced"
    except BaseException:
        sen.stop()
        raise
    return master, replica, sen


@pytest.mark.timeout(120)
def test_sentinel_failover_keeps_state(fake, moatd_factory, redis_factory, workdir):
    """moatd finds the master through a sentinel; the master is stopped, the
    replica promoted; moatd follows and the triplet first seen before the
    failover passes after it."""
    master, replica, sen = sentinel_setup(redis_factory, workdir)
    try:
        m = moatd_factory(fake.address, redis="sentinel %s master mm" % sen.address,
                          redis_timeout="500ms", greylist_delay="2s", on=GL_RULES[1:])
        assert rcpt_reply(m, "fo@example.org").code == 451
        harness.wait_for(lambda: replica.client().info("replication").get(
            "master_repl_offset") == master.client().info("replication").get(
            "master_repl_offset"), 10)
        master.stop()
        harness.wait_for(lambda: sen.master_port() == replica.port, 30, interval=0.2)
        time.sleep(2.0)
        passed = False
        for _ in range(50):
            r = rcpt_reply(m, "fo@example.org")
            if r.code == 250 and "check greylist=pass" in m.log():
                passed = True
                break
            time.sleep(0.2)
        assert passed, m.log()[-3000:]
    finally:
        sen.stop()


def test_key_by_spf_domain_spans_the_senders_pool(fake, moatd_factory, dns):
    """greylist-key sender-domain-spf,...: a sender whose SPF passes is one
    client whatever address of its pool it retries from."""
    dns.add("pool.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    m = moatd_factory(fake.address, resolver=dns.resolver, spf="yes", greylist_delay="2s",
                      greylist_key="sender-domain-spf,net,sender,rcpt", on=GL_RULES[1:])
    r = rcpt_reply(m, "u@example.org", source="127.0.1.5", mfrom="news@pool.test")
    assert r.code == 451, r
    time.sleep(2.2)
    r = rcpt_reply(m, "u@example.org", source="127.0.9.9", mfrom="news@pool.test")
    assert r.code == 250, r           # another /24 of the same pool
    assert re.search(r'check greylist=pass reason=retried .*key="t:\{spf:pool.test\}', m.log())
    # without SPF (another domain) the network is the client
    r = rcpt_reply(m, "u@example.org", source="127.0.1.5", mfrom="x@nospf.test")
    assert r.code == 451 and re.search(r'key="t:\{127.0.1.0/24\}', m.log()), r


def decisions(m, n, tag, per_session=10):
    """n greylist decisions over new triplets: the RCPT replies"""
    out = []
    for s in range(0, n, per_session):
        with Client(m.port, m.host, timeout=8) as c:
            c.ehlo()
            assert c.cmd("MAIL FROM:<a@sender.test>").code == 250
            for i in range(s, min(n, s + per_session)):
                out.append(c.cmd("RCPT TO:<%s%d@example.org>" % (tag, i)))
            c.cmd("QUIT")
    return out


@pytest.mark.timeout(90)
def test_redis_stall_then_clean_recovery(fake, moatd_factory, redis_factory):
    """Issue 22 finding 2: Redis paused (SIGSTOP) long enough for the
    client to drop and back off, then resumed (SIGCONT): the next 100
    decisions all succeed (with greylist-on-error tempfail a failed one
    would be 451 "greylisting is unavailable"), and the log has one
    outage and one recovery, not a stream of them."""
    rd = redis_factory()
    m = moatd_factory(fake.address, redis=rd.address, redis_timeout="300ms",
                      greylist_on_error="tempfail", greylist_delay="60s", on=GL_RULES[1:])
    r = rcpt_reply(m, "first@example.org")
    assert r.code == 451 and r.text.startswith("4.7.1 greylisted"), r
    rd.pause()
    try:
        t_end = time.monotonic() + 6
        n = 0
        while time.monotonic() < t_end and n < 30:      # decisions while stalled
            r = rcpt_reply(m, "stalled%d@example.org" % n)
            assert r.code == 451 and "unavailable" in r.text, r
            n += 1
            time.sleep(0.3)
    finally:
        rd.resume()
    rs = decisions(m, 100, "after")
    bad = [(i, r.code, r.text) for i, r in enumerate(rs)
           if not (r.code == 451 and r.text.startswith("4.7.1 greylisted"))]
    assert not bad, (bad, m.log()[-3000:])
    keys = rd.client().keys("moat:t:*after*")
    assert len(keys) == 100, len(keys)
    log = m.log()
    assert len(re.findall(r"greylist redis unavailable", log)) == 1, log[-3000:]
    assert len(re.findall(r"greylist redis available again", log)) == 1, log[-3000:]


@pytest.mark.timeout(150)
def test_sentinel_failover_loses_no_recorded_triplet(fake, moatd_factory, redis_factory, workdir):
    """Issue 22 finding 1: SENTINEL FAILOVER (the old master stays up and
    is demoted later) during a stream of new triplets. moatd follows the
    sentinel's +switch-master at once and never writes to the old master
    after the failover began; afterwards every triplet moatd answered
    "greylisted" for is on the new master."""
    master, replica, sen = sentinel_setup(redis_factory, workdir)
    try:
        # the sentinel must know the replica before it can fail over
        assert harness.wait_for(lambda: len(redis_cmd(sen, "SENTINEL", "replicas", "mm")) == 1,
                                30, interval=0.2), "the sentinel never saw the replica"
        m = moatd_factory(fake.address, redis="sentinel %s master mm" % sen.address,
                          redis_timeout="3s", greylist_delay="60s",
                          greylist_on_error="tempfail", on=GL_RULES[1:])
        recorded, failed = [], []

        def one(i):
            rcpt = "fo%d@example.org" % i
            r = rcpt_reply(m, rcpt)
            if r.code == 451 and r.text.startswith("4.7.1 greylisted"):
                recorded.append(rcpt)
            else:
                failed.append((rcpt, r.code, r.text))

        i = 0
        t_end = time.monotonic() + 60
        while i < 20:                                      # before
            one(i)
            i += 1
        assert redis_cmd(sen, "SENTINEL", "FAILOVER", "mm") in (b"OK", "OK")
        t_fo = time.monotonic()
        switched_at = None
        while time.monotonic() < t_end and i < 1500:       # during and after
            one(i)
            i += 1
            if switched_at is None and sen.master_port() == replica.port:
                switched_at = time.monotonic()
            if switched_at is not None and time.monotonic() - switched_at > 12:
                break
        assert switched_at is not None, "the sentinel never switched"
        # the old master is demoted and in sync with the new one
        assert harness.wait_for(lambda: master.client().info("replication").get("role")
                                == "slave" and master.client().info("replication").get(
                                    "master_link_status") == "up", 30, interval=0.2), \
            "the old master was never demoted"
        keys = {k.decode() for k in replica.client().keys("moat:t:*")}
        lost = [r for r in recorded if not any(k.endswith("|" + r) for k in keys)]
        assert not lost, ("%d of %d recorded triplets lost (failover at +%.1fs)"
                          % (len(lost), len(recorded), switched_at - t_fo), lost[:10],
                          m.log()[-3000:])
        assert len(recorded) >= 40, (len(recorded), failed[:10])
        log = m.log()
        assert re.search(r"redis .*switch-master|redis failover", log), log[-3000:]
    finally:
        sen.stop()


def redis_cmd(sen, *args):
    import redis
    r = redis.Redis(host=harness.LOOPBACK, port=sen.port, socket_timeout=5)
    try:
        return r.execute_command(*args)
    finally:
        r.close()


class FakeSentinel:
    """A sentinel that names whatever master the test sets: RESP on a
    loopback port, answering SENTINEL get-master-addr-by-name and taking
    (P)SUBSCRIBE without ever publishing (a failover moatd does not hear
    of). One thread per connection, all closed by stop()."""

    def __init__(self, master):
        import socket
        import threading
        self.master = master
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((harness.LOOPBACK, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "%s:%d" % (harness.LOOPBACK, self.port)
        self.conns = []
        self.running = True
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    @staticmethod
    def _bulk(s):
        b = s.encode()
        return b"$%d\r\n%s\r\n" % (len(b), b)

    def _accept(self):
        import socket
        import threading
        while self.running:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            for _ in range(1000):
                line = f.readline()
                if not line.startswith(b"*"):
                    return
                args = []
                for _ in range(int(line[1:])):
                    n = int(f.readline()[1:])
                    args.append(f.read(n + 2)[:-2].decode())
                cmd = args[0].upper()
                if cmd == "SENTINEL":
                    c.sendall(b"*2\r\n" + self._bulk(self.master.host)
                              + self._bulk(str(self.master.port)))
                elif cmd in ("SUBSCRIBE", "PSUBSCRIBE"):
                    for i, ch in enumerate(args[1:], 1):
                        c.sendall(b"*3\r\n" + self._bulk(cmd.lower()) + self._bulk(ch)
                                  + b":%d\r\n" % i)
                else:
                    c.sendall(b"-ERR unknown\r\n")
        except (OSError, ValueError):
            return

    def stop(self):
        self.running = False
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=2)


@pytest.mark.timeout(90)
def test_readonly_reply_resends_to_the_new_master(fake, moatd_factory, redis_factory):
    """Issue 22 finding 1, a failover moatd did not hear of: its master was
    turned into a replica. The -READONLY reply (the script wrote nothing)
    makes moatd ask the sentinel again, check the named server's ROLE and
    send the same decision there, within its deadline: no decision fails,
    and the triplets are on the new master."""
    a = redis_factory()
    b = redis_factory(replica_of=(a.host, a.port))
    assert harness.wait_for(lambda: b.client().info("replication").get("master_link_status")
                            == "up", 15), "the replica never synced"
    sen = FakeSentinel(a)
    try:
        m = moatd_factory(fake.address, redis="sentinel %s master mm" % sen.address,
                          redis_timeout="2s", greylist_delay="60s",
                          greylist_on_error="tempfail", on=GL_RULES[1:])
        before = decisions(m, 10, "ro-before")
        assert all(r.code == 451 and r.text.startswith("4.7.1 greylisted") for r in before), \
            before
        # the failover, behind moatd's back
        b.client().execute_command("REPLICAOF", "NO", "ONE")
        sen.master = b
        a.client().execute_command("REPLICAOF", b.host, str(b.port))
        assert harness.wait_for(lambda: a.client().info("replication").get("role") == "slave",
                                10)
        after = decisions(m, 20, "ro-after")
        bad = [(i, r.code, r.text) for i, r in enumerate(after)
               if not (r.code == 451 and r.text.startswith("4.7.1 greylisted"))]
        assert not bad, (bad, m.log()[-3000:])
        keys = {k.decode() for k in b.client().keys("moat:t:*ro-after*")}
        assert len(keys) == 20, sorted(keys)
        assert re.search(r"redis drop reason=server is read-only", m.log()), m.log()[-3000:]
    finally:
        sen.stop()
