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
