"""Start-up checks and health (issue 15): moatd -n and a start name what
is missing (upstream, Redis, resolver, directories the user cannot write),
one line each with the address or path and errno."""

import os
import re
import shutil
import subprocess

import pytest

import harness
from harness import free_port, moatd_check


def test_check_only_warns_unwritable_store_and_dead_parts(workdir):
    if not harness.IS_ROOT:
        pytest.skip("needs root to own a directory the user cannot write")
    locked = harness.make_dir(os.path.join(str(workdir), "locked"))
    os.chmod(locked, 0o755)                     # root's: user nobody cannot write
    spool = harness.make_dir(os.path.join(str(workdir), "spool"))
    os.chmod(spool, 0o700)
    up, dnsport, rport = free_port(), free_port(), free_port()
    conf = "\n".join([
        "listen 127.0.0.1:%d" % free_port(),
        "upstream 127.0.0.1:%d" % up,           # nothing listens there
        "user %s" % harness.UNPRIV_USER,
        "spool-dir %s" % spool,
        "resolver forward 127.0.0.1@%d" % dnsport,
        "dns-timeout 500ms",
        "greylist-store %s/greylist.db" % locked,
        "on rcpt true greylist",
        "",
    ])
    rc, out, _ = moatd_check(conf, workdir)
    assert rc == 0, out
    assert "configuration OK" in out, out
    assert re.search(r"warn: check greylist-store path=%s/greylist\.db error=not-writable "
                     r"user=nobody dir=%s errno=13 \(Permission denied\)" %
                     (re.escape(str(locked)), re.escape(str(locked))), out), out
    assert re.search(r"warn: check spool-dir path=%s error=not-writable user=nobody .*errno=13"
                     % re.escape(str(spool)), out), out
    assert re.search(r"warn: check upstream addr=127\.0\.0\.1:%d error=connect errno=111: "
                     r"Connection refused" % up, out), out
    assert re.search(r"warn: check resolver mode=forward error=\S+", out), out
    # Redis named but not running: one line with its address
    conf2 = conf.replace("greylist-store %s/greylist.db" % locked, "redis 127.0.0.1:%d" % rport)
    rc, out, _ = moatd_check(conf2, workdir, name="check2.conf")
    assert rc == 0, out
    assert re.search(r"warn: check redis addr=127\.0\.0\.1:%d error=" % rport, out), out
    # all well: no warning about the store once the user may write there
    shutil.chown(locked, harness.UNPRIV_USER)
    rc, out, _ = moatd_check(conf, workdir, name="check3.conf")
    assert "check greylist-store" not in out, out


def test_startup_checks_upstream_ok_and_logged(fake, moatd_factory):
    m = moatd_factory(fake.address, startup_checks="yes", resolver="forward 127.0.0.1@%d" %
                      free_port(), dns_timeout="500ms")
    m.wait_log(r"check upstream addr=%s ok" % re.escape(fake.address), timeout=5)
    m.wait_log(r"warn: check resolver mode=forward error=", timeout=5)
    assert any(b"EHLO" in l for l in fake.all_lines()), fake.all_lines()[:5]


def test_syslog_without_socket_errors_to_stderr(workdir):
    """log syslog and no /dev/log: a start that fails says why on stderr."""
    if os.path.exists("/dev/log"):
        pytest.skip("/dev/log exists here: syslog gets the line")
    busy = free_port()
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", busy))
    s.listen(1)
    try:
        p = harness.make_dir(os.path.join(str(workdir), "sl"))
        conf = os.path.join(p, "moat.conf")
        with open(conf, "w") as f:
            f.write("listen 127.0.0.1:%d\nupstream 127.0.0.1:9\nlog syslog\n"
                    "startup-checks no\nspool-dir %s\n" % (busy, p))
        r = subprocess.run([harness.moatd_path(), "-f", conf], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=20)
    finally:
        s.close()
    assert r.returncode != 0
    err = r.stderr.decode(errors="replace")
    assert re.search(r"moatd\[\d+\]: fatal: .*127\.0\.0\.1:%d" % busy, err), err


def moatctl(*args, timeout=30):
    r = subprocess.run([harness.moatctl_path()] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


@pytest.mark.timeout(90)
def test_status_reports_stopped_redis_and_upstream(fake_factory, moatd_factory, redis_factory,
                                                   workdir):
    rd = redis_factory()
    f = fake_factory()
    sock = os.path.join(str(workdir), "moatd.sock")
    m = moatd_factory(f.address, redis=rd.address, control_socket=sock,
                      on=["rcpt true greylist"], dnsbl=["bl.test weight 3"])
    rc, out, err = moatctl("status", "--socket", sock)
    assert rc == 0, (out, err)
    assert re.search(r"^who moatd pid=\d+$", out, re.M), out
    assert re.search(r"^up-since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ uptime=\d+s$", out, re.M), out
    assert re.search(r"^policy %s loaded=\S+Z$" % re.escape(str(m.conf_path)), out, re.M), out
    assert "upstream addr=%s reachable=yes" % f.address in out, out
    assert "redis addr=%s reachable=yes" % rd.address in out, out
    assert re.search(r"^dnsbl zones=1 enabled=\d", out, re.M), out
    assert re.search(r"^sessions active=0$", out, re.M), out
    assert out.rstrip().endswith("status ok"), out
    # -f FILE finds the socket in the policy file
    rc, out2, err = moatctl("status", "-f", str(m.conf_path))
    assert rc == 0 and "status ok" in out2, (out2, err)
    rd.stop()
    f.stop()
    rc, out, err = moatctl("status", "--socket", sock)
    assert rc == 1, (out, err)
    assert re.search(r"^upstream addr=%s reachable=no error=connect errno=111" %
                     re.escape(f.address), out, re.M), out
    assert re.search(r"^redis addr=%s reachable=no error=" % re.escape(rd.address), out, re.M), out
    assert out.rstrip().endswith("status degraded reason=upstream,redis"), out


def test_milter_control_socket_status_and_greylist(workdir):
    from test_milter_raw import RawMilter
    from dnsserver import DnsServer
    dns = DnsServer(zones=["test"])
    dns.start()
    sock = os.path.join(str(workdir), "milter.sock")
    m = RawMilter(workdir, "mctl", "forward " + dns.address, control_socket=sock,
                  greylist_delay="2s", on=["rcpt true greylist"])
    try:
        m.start()
        rc, out, err = moatctl("status", "--socket", sock)
        assert rc == 0, (out, err)
        assert "who moat-milter" in out and "upstream addr" not in out, out
        assert "redis none (greylist store in memory)" in out, out
        assert out.rstrip().endswith("status ok"), out
        rc, out, err = moatctl("greylist", "--socket", sock, "stats")
        assert rc == 0, (out, err)
        assert out.strip(), out
    finally:
        m.stop()
        dns.stop()


def test_moatctl_explains_itself(fake, moatd_factory, workdir):
    rc, out, err = moatctl("--help")
    assert rc == 0, err
    subs = ["check", "explain", "status", "greylist", "query", "spf", "dkim", "dmarc"]
    for sub in subs:
        assert re.search(r"^  %s\s+\S" % sub, out, re.M), (sub, out)
        rc, text, err = moatctl(sub, "--help")
        assert rc == 0 and text.startswith("usage: moatctl %s" % sub), (sub, text, err)
    rc, text, _ = moatctl("dmarc", "--help")
    assert "--mode rfc7489|dmarcbis" in text and "--resolver system|recursive|ADDR" in text, text
    rc, text, _ = moatctl("spf", "--help")
    assert "--resolver system|recursive|ADDR" in text, text
    # a usage error says the subcommand's own usage
    rc, _, err = moatctl("status", "--bogus")
    assert rc == 2 and err.startswith("usage: moatctl status"), err
    # the config's spellings are taken
    rc, out, err = moatctl("dmarc", "--resolver", "127.0.0.1@%d" % free_port(), "--timeout", "300",
                           "--mode", "dmarcbis", "--from-header", "a@example.test")
    assert rc != 2, (out, err)
    # greylist -f FILE with no Redis there: the file's control socket
    sock = os.path.join(str(workdir), "gl.sock")
    m = moatd_factory(fake.address, control_socket=sock, greylist_delay="2s",
                      on=["rcpt true greylist"])
    rc, out, err = moatctl("greylist", "-f", str(m.conf_path), "stats")
    assert rc == 0 and out.strip(), (out, err)
