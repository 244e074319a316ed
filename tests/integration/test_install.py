"""What the package installs, checked from the tree (tests/package-test
builds, installs and runs the .debs themselves):

- moat.conf, the production /etc/moat/moat.conf: moatd -n and moat-milter
  -n accept it as it is; it listens on port 25 in front of Postfix on
  127.0.0.1:10025 with XCLIENT, runs as "moat", keeps its state in
  /var/lib/moat, and every setting line carries a comment;
- systemd/*.service: systemd-analyze verify passes (binaries pointed at
  this build), Type=notify with the hardening the README promises;
- the sd_notify protocol, on a socket of our own in $NOTIFY_SOCKET:
  moatd and moat-milter say READY=1 once serving, RELOADING=1 (with
  MONOTONIC_USEC) then READY=1 around SIGHUP, STOPPING=1 on SIGTERM.
"""

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import harness
from harness import Client, free_port

TOP = Path(__file__).resolve().parents[2]
PROD = TOP / "moat.conf"
UNITS = ("moatd.service", "moat-milter.service")


def settings(path):
    """(name, value, line) of every setting line (not comments, rules,
    lists or blocks)"""
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#") or s.split()[0] in ("on", "list", "include", "}"):
            continue
        if line[:1].isspace():
            continue            # a list's or block's continuation
        name, _, rest = s.partition(" ")
        out.append((name, rest.split("#")[0].strip(), line))
    return out


def test_production_conf_moatd_n():
    r = subprocess.run([harness.moatd_path(), "-n", "-f", str(PROD)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


def test_production_conf_milter_n():
    r = subprocess.run([harness.milter_path(), "-n", "-f", str(PROD)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout


def test_production_conf_is_production():
    conf = {}
    for name, value, _ in settings(PROD):
        conf.setdefault(name, []).append(value)
    assert conf["listen"] == ["0.0.0.0:25", "[::]:25"]
    assert conf["upstream"] == ["127.0.0.1:10025"]
    assert conf["upstream-identity"] == ["xclient"]
    assert conf["user"] == ["moat"]
    assert conf["greylist-store"][0].startswith("/var/lib/moat/")
    assert conf["spool-dir"] == ["/var/spool/moat"]
    for check in ("spf", "dkim"):
        assert conf[check] == ["yes"]
    assert conf["dmarc"] == ["rfc7489"]
    # not the demo's
    text = PROD.read_text()
    assert "2525" not in text and "nobody" not in text


def test_production_conf_every_line_commented():
    lines = PROD.read_text().splitlines()
    bare = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        above = lines[i - 1].strip() if i else ""
        if "#" not in line and not above.startswith("#") and not above.startswith("on "):
            bare.append(line)
    assert bare == []


def unit_copy(tmp_path, name):
    """the unit with /usr/sbin/ pointing at this build's binaries"""
    text = (TOP / "systemd" / name).read_text()
    moatd = os.path.dirname(os.path.abspath(harness.moatd_path()))
    text = text.replace("/usr/sbin/", moatd + "/")
    p = tmp_path / name
    p.write_text(text)
    return p, text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path):
    paths = [unit_copy(tmp_path, u)[0] for u in UNITS]
    r = subprocess.run(["systemd-analyze", "verify", "--man=no"] + [str(p) for p in paths],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify_fails_on_a_broken_unit(tmp_path):
    p, text = unit_copy(tmp_path, "moatd.service")
    p.write_text(text.replace("ExecStart=", "ExecStart=/nonexistent/moatd #"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


@pytest.mark.parametrize("unit", UNITS)
def test_unit_hardening(unit):
    text = (TOP / "systemd" / unit).read_text()
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            keys.setdefault(k, []).append(v)
    for k, v in (("Type", "notify"), ("User", "moat"), ("NoNewPrivileges", "yes"),
                 ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                 ("SystemCallFilter", "@system-service"),
                 ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
                 ("ReadWritePaths", "/var/lib/moat /var/spool/moat /run/moat")):
        assert keys.get(k) == [v], k
    assert keys["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    caps = "CAP_NET_BIND_SERVICE" if unit == "moatd.service" else ""
    assert keys["CapabilityBoundingSet"] == [caps]
    assert keys["AmbientCapabilities"] == [caps]
    assert "WantedBy" in keys


_notify_ids = itertools.count()


class Notify:
    """a datagram socket standing in for systemd's $NOTIFY_SOCKET: an
    abstract one ("@name"), which the user moatd drops to can reach"""

    def __init__(self, name):
        self.path = "@" + name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name)

    def expect(self, pattern, timeout=20):
        """the next messages until one matches pattern: that one"""
        rx = re.compile(pattern, re.M)
        self.sock.settimeout(timeout)
        seen = []
        while True:
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                raise AssertionError("no %r within %ss; got %r" % (pattern, timeout, seen))
            seen.append(msg)
            if rx.search(msg):
                return msg

    def close(self):
        self.sock.close()


@pytest.fixture
def notify(monkeypatch):
    n = Notify("moat-test-notify-%d-%d" % (os.getpid(), next(_notify_ids)))
    monkeypatch.setenv("NOTIFY_SOCKET", n.path)
    yield n
    n.close()


def reload_and_stop(notify, pid):
    """SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1; SIGTERM:
    STOPPING=1"""
    os.kill(pid, signal.SIGHUP)
    msg = notify.expect(r"^RELOADING=1$")
    assert re.search(r"^MONOTONIC_USEC=\d+$", msg, re.M), msg
    notify.expect(r"^READY=1$")
    os.kill(pid, signal.SIGTERM)
    notify.expect(r"^STOPPING=1$")


def test_moatd_sd_notify(notify, moatd_sink):
    m, _ = moatd_sink
    notify.expect(r"^READY=1$")
    with Client(m.port) as c:         # READY came once it serves
        assert c.greeting.code == 220
    reload_and_stop(notify, m.proc.pid)
    m.stop()
    assert m.rc == 0


def test_moat_milter_sd_notify(notify, workdir):
    m = harness.MoatMilter(workdir, free_port(), name="milter-notify")
    try:
        m.start()
        notify.expect(r"^READY=1$")
        reload_and_stop(notify, m.proc.pid)
    finally:
        m.stop()
    assert m.rc == 0
