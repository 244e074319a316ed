"""Issue 16, item 3: `moatctl explain --live` asks the greylist of the
policy read-only, and says what a live moatd decides for the same triplet
at that moment: new, early (with the seconds left), passed. Through a real
redis-server and through the embedded store's file. explain --live never
writes: Redis's keys, values and expiry times are the same before and
after, and no command with the "write" flag ran (INFO commandstats, read
after CONFIG RESETSTAT); the store file is byte for byte the same, never
renamed or replaced. `--live --greylist ...` is a usage error."""

import os
import re
import subprocess
import time

import harness
from harness import Client

DELAY = 3
RULES = ['rcpt rcpt-domain is example.test greylist']
IP, SENDER, RCPT = "127.0.31.7", "a@sender.test", "<u@example.test>"


def session(m, ip=IP, rcpt=RCPT):
    """MAIL and RCPT through moatd: the RCPT reply as (code, text)."""
    with Client(m.port, m.host, source=ip, timeout=10) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        x = c.cmd("MAIL FROM:<%s>" % SENDER)
        assert x.code == 250, x
        x = c.cmd("RCPT TO:%s" % rcpt)
        c.cmd("QUIT")
        return x.code, x.text


def explain(conf, *extra, ip=IP, rcpt=RCPT):
    argv = [harness.moatctl_path(), "explain", str(conf), "--ip", ip, "--helo", "client.test",
            "--from", "<%s>" % SENDER, "--rcpt", rcpt, "--no-network"] + list(extra)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def live(conf, **kw):
    """explain --live: (greylist word, retry-in, result line, output)."""
    rc, out, err = explain(conf, "--live", **kw)
    g = re.search(r"^live greylist=(\w+) retry-in=(\d+) passes=\d+ key=\"[^\"]*\" "
                  r"\(read-only: nothing recorded\)$", out, re.M)
    res = re.search(r"^result: (.*)$", out, re.M)
    assert g and res, out + err
    assert "assume greylist" not in out and "not-asked" not in out, out
    assert rc == (0 if res.group(1) == "accept" else 1), (rc, out)
    return g.group(1), int(g.group(2)), res.group(1), out


def redis_state(rc):
    """Every key: its hash and its absolute expiry (PEXPIRETIME)."""
    return {k: (rc.hgetall(k), rc.execute_command("PEXPIRETIME", k)) for k in rc.keys("*")}


def writes_since_reset(rc):
    """Commands that ran since CONFIG RESETSTAT and carry the write flag."""
    ran = [k[len("cmdstat_"):] for k in rc.info("commandstats")]
    bad = []
    for name in ran:
        base = name.split("|")[0]
        info = rc.execute_command("COMMAND", "INFO", base)
        if "write" in info[base]["flags"]:
            bad.append(name)
    return ran, bad


def check_live_cycle(m, conf, unchanged, after_explain=None):
    """The walk shared by both stores: new (nothing recorded), early,
    passed; unchanged() is asserted around every explain --live."""
    # before any attempt: new, and still nothing recorded
    with unchanged():
        word, retry, res, out = live(conf)
    assert (word, retry) == ("new", DELAY), out
    assert res == "tempfail 451 4.7.1 greylisted, please retry in %d seconds" % DELAY, out
    # moatd records the triplet: its first attempt is new too (explain made none)
    t0 = time.monotonic()
    code, text = session(m)
    assert (code, text) == (451, "4.7.1 greylisted, please retry in %d seconds" % DELAY), text
    assert re.search(r"check greylist=greylisted reason=new", m.log())
    if after_explain:
        after_explain()
    # too early: explain and moatd agree, with the seconds left
    with unchanged():
        word, retry, res, out = live(conf)
    assert word == "early" and 1 <= retry <= DELAY, out
    assert res == "tempfail 451 4.7.1 greylisted, please retry in %d seconds" % retry, out
    code, text = session(m)
    assert code == 451, text
    left = int(re.search(r"retry in (\d+) seconds", text).group(1))
    assert left <= retry, (left, retry)
    assert re.search(r"check greylist=greylisted reason=early", m.log())
    if after_explain:
        after_explain()
    # after the delay: passed, and moatd lets the retry through
    time.sleep(max(0.0, DELAY + 0.3 - (time.monotonic() - t0)))
    with unchanged():
        word, retry, res, out = live(conf)
    assert word == "passed" and res == "accept", out
    code, text = session(m)
    assert code == 250, text
    assert re.search(r"check greylist=pass reason=retried", m.log()), m.log()[-2000:]


def test_explain_live_redis(fake_factory, moatd_factory, redis_factory, workdir):
    rd = redis_factory()
    rc = rd.client()
    fake = fake_factory()
    m = moatd_factory(fake.address, redis=rd.address, greylist_delay="%ds" % DELAY,
                      greylist_cache="0", on=RULES)
    conf = m.conf_path

    class Unchanged:
        def __enter__(self):
            self.before = redis_state(rc)
            rc.config_resetstat()

        def __exit__(self, *exc):
            if exc[0] is not None:
                return False
            ran, bad = writes_since_reset(rc)
            assert "evalsha" in ran or "eval" in ran, ran     # explain did ask Redis
            assert "hmget" in ran, ran
            assert bad == [], ran
            assert redis_state(rc) == self.before
            return False

    check_live_cycle(m, conf, Unchanged)
    # the triplet passed: moatd made it known; explain reads it as passed
    state = redis_state(rc)
    tkeys = [k for k in state if k.startswith(b"moat:t:")]
    assert len(tkeys) == 1 and state[tkeys[0]][0][b"p"] == b"1", state
    with Unchanged():
        word, _, res, out = live(conf)
    assert word == "passed" and res == "accept", out
    # another recipient of the same client: new, and nothing recorded for it
    with Unchanged():
        word, _, _, out = live(conf, rcpt="<w@example.test>")
    assert word == "new", out
    assert len([k for k in rc.keys("*") if k.startswith(b"moat:t:")]) == 1


def test_explain_live_store(fake_factory, moatd_factory, workdir):
    sdir = harness.make_dir(workdir / "glstore", 0o700, harness.UNPRIV_USER)
    store = sdir / "grey.db"
    fake = fake_factory()
    m = moatd_factory(fake.address, greylist_store=str(store), greylist_store_save_interval="1s",
                      greylist_delay="%ds" % DELAY, on=RULES)
    conf = m.conf_path

    def saved():
        """moatd's next save holds the triplet (every second)."""
        assert harness.wait_for(lambda: store.exists() and "|a@sender.test|u@example.test "
                                in store.read_text(), 10), store.read_text()

    class Unchanged:
        """The store's directory: the same names, and the file the same
        bytes, inode and mtime (moatd's saves rewrite it, so the check
        waits for a second without one, bounded)."""
        def snap(self):
            st = store.stat() if store.exists() else None
            return (sorted(os.listdir(sdir)), store.read_bytes() if st else None,
                    (st.st_ino, st.st_mtime_ns) if st else None)

        def __enter__(self):
            self.before = self.snap()

        def __exit__(self, *exc):
            if exc[0] is not None:
                return False
            after = self.snap()
            names = [n for n in after[0] if n.startswith("grey.db")]
            assert names in ([], ["grey.db"]), after[0]    # no .bad, no .tmp left
            assert after[1] == self.before[1]              # the records are the same
            return False

    # moatd's first save (an empty store) before the first look, so that
    # it does not land between a snapshot and the next
    assert harness.wait_for(store.exists, 10)
    check_live_cycle(m, conf, Unchanged, after_explain=saved)
    # explain itself never writes: on a copy no moatd saves, the file keeps
    # its bytes, inode and mtime
    saved()
    copy = workdir / "copy"
    copy.mkdir()
    (copy / "grey.db").write_bytes(store.read_bytes())
    c2 = copy / "moat.conf"
    c2.write_text(conf.read_text().replace(str(store), str(copy / "grey.db")))
    st = (copy / "grey.db").stat()
    word, _, res, out = live(c2)
    assert word == "passed" and res == "accept", out
    st2 = (copy / "grey.db").stat()
    assert (st.st_ino, st.st_mtime_ns, st.st_size) == (st2.st_ino, st2.st_mtime_ns, st2.st_size)
    assert sorted(os.listdir(copy)) == ["grey.db", "moat.conf"]
    # a file the store refuses is left where it is (moatd would rename it)
    (copy / "grey.db").write_text("not a store\n")
    word, _, _, out = live(c2)
    assert word == "new", out
    assert sorted(os.listdir(copy)) == ["grey.db", "moat.conf"]
    assert (copy / "grey.db").read_text() == "not a store\n"


def test_explain_live_with_greylist_is_usage_error(workdir):
    conf = workdir / "moat.conf"
    conf.write_text("listen 127.0.0.1:2525\nupstream 127.0.0.1:2526\nspool-dir %s\n"
                    "greylist-store %s\n%s\n" % (workdir, workdir / "grey.db",
                                                "\n".join("on " + r for r in RULES)))
    rc, out, err = explain(conf, "--live")
    assert rc == 1 and "live greylist=new" in out, (rc, out, err)
    assert not (workdir / "grey.db").exists()
    for extra in (["--live", "--greylist", "new"], ["--greylist", "passed", "--live"]):
        rc, out, err = explain(conf, *extra)
        assert rc == 2, (rc, out, err)
        assert "--live asks the greylist, --greylist assumes it" in err, err
        assert "result:" not in out, out
