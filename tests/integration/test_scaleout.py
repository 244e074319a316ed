"""Scale out (issue 18): moatd behind a load balancer that speaks the
PROXY protocol (listen ... proxy-protocol, proxy-protocol-from,
proxy-protocol-timeout; proxy/ppin.c, core/proxyproto.c)."""
import base64
import re
import socket
import struct
import subprocess
import time

import pytest

import harness
from harness import Client, message, smtp_transaction, wait_for

V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class Haproxy(harness.LoggedProcess):
    """haproxy -db in mode tcp: one frontend on a free loopback port, one
    backend server per (address, send-proxy option); stopped by its PID."""

    def __init__(self, workdir, servers, name="haproxy"):
        self.dir = harness.make_dir(workdir / name)
        self.port = harness.free_port()
        self.log_path = self.dir / "haproxy.log"
        lines = ["global", "  maxconn 200", "defaults", "  mode tcp",
                 "  timeout connect 5s", "  timeout client 30s", "  timeout server 30s",
                 "frontend fe", "  bind 127.0.0.1:%d" % self.port, "  default_backend be",
                 "backend be", "  balance roundrobin"]
        for i, (addr, opt) in enumerate(servers):
            lines.append("  server s%d %s %s" % (i, addr, opt))
        self.conf_path = self.dir / "haproxy.cfg"
        self.conf_path.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.conf_path)],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        if not wait_for(lambda: harness.port_accepts("127.0.0.1", self.port), 10):
            self.stop()
            raise harness.HarnessError("haproxy did not start:\n" + self.log())
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None


@pytest.fixture
def haproxy_factory(workdir):
    started = []

    def make(servers):
        h = Haproxy(workdir, servers, name="haproxy%d" % len(started))
        started.append(h)
        return h.start()
    yield make
    for h in started:
        h.stop()


def pp_moatd(moatd_factory, upstream, frm="127.0.0.1", **kw):
    port = harness.free_port()
    return moatd_factory(upstream, listen="127.0.0.1:%d proxy-protocol" % port,
                         proxy_protocol_from=frm, **kw)


def v2_header(src, sport, dst="198.51.100.2", dport=25, cmd=0x21, tlvs=b""):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlvs
    return V2SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(body)) + body


def raw(m, source=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(10)
    s.connect((m.host, m.port))
    return s


def read_until_close(s, limit=10.0):
    """Everything the server sends until it closes; (bytes, seconds)."""
    t0 = time.monotonic()
    got = b""
    s.settimeout(limit)
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            chunk = b""
        except socket.timeout:
            raise AssertionError("not closed within %.1fs; got %r" % (limit, got))
        if not chunk:
            return got, time.monotonic() - t0
        got += chunk


def session_after_header(s):
    c = Client.__new__(Client)
    c.sock, c.buf, c.eof, c.timeout = s, b"", False, 10.0
    c.greeting = c.reply()
    return c


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", [1, 2])
def test_pp_claimed_client_reaches_upstream_xclient(fake, moatd_factory, version):
    """A v1 or v2 header from a trusted balancer: the session, its log line
    and the XCLIENT toward the upstream carry the claimed address and port."""
    m = pp_moatd(moatd_factory, fake.address)
    s = raw(m)
    hdr = (b"PROXY TCP4 192.0.2.77 198.51.100.2 40077 25\r\n" if version == 1
           else v2_header("192.0.2.77", 40077, tlvs=b"\x04\x00\x02ab\x20\x00\x05\x01\x00\x00\x00\x00"))
    s.sendall(hdr)
    c = session_after_header(s)
    assert c.greeting.code == 220, c.greeting
    c.ehlo("claimed.test")
    rs = smtp_transaction(c, message("pp-%d" % version))
    assert rs[-1].code == 250, rs
    c.cmd("QUIT")
    s.close()
    t = fake.completed()
    assert len(t) == 1 and t[0].xclient, fake.all_lines()
    attrs = dict(a.split(b"=", 1) for a in t[0].xclient.split()[1:])
    assert attrs.get(b"ADDR") == b"192.0.2.77", t[0].xclient
    assert attrs.get(b"PORT") == b"40077", t[0].xclient
    # the session's line at info names the claimed client and the balancer
    line = m.wait_log(r"disconnect client=unknown\[192\.0\.2\.77\]:40077 helo=<claimed\.test> "
                      r"reason=quit .* via=127\.0\.0\.1:\d+.*", timeout=8)
    assert line, m.log()[-2000:]
    if version == 2:
        assert line[0].endswith(" proxy-tls=yes"), line
    else:
        assert "proxy-tls" not in line[0], line


@pytest.mark.timeout(60)
def test_pp_local_and_unknown_keep_own_address(fake, moatd_factory):
    """v2 LOCAL and v1 UNKNOWN: the connection's own addresses are used."""
    m = pp_moatd(moatd_factory, fake.address)
    for hdr in (V2SIG + b"\x20\x00\x00\x00", b"PROXY UNKNOWN whatever\r\n"):
        s = raw(m)
        s.sendall(hdr)
        c = session_after_header(s)
        assert c.greeting.code == 220
        c.ehlo("local.test")
        rs = smtp_transaction(c, message("pp-local"))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
        s.close()
    t = fake.completed()
    assert len(t) == 2
    for x in t:
        assert b"ADDR=127.0.0.1" in x.xclient, x.xclient
    # a connect-only health check (haproxy "check"): no warning
    s = raw(m)
    s.close()
    time.sleep(0.3)
    assert "proxy-protocol error" not in m.log(), m.log()[-2000:]


@pytest.mark.timeout(60)
def test_pp_peer_not_in_from_closed_nothing_relayed(fake, moatd_factory):
    """A header from a peer outside proxy-protocol-from: closed before the
    greeting, logged, nothing reaches the upstream."""
    m = pp_moatd(moatd_factory, fake.address, frm="127.0.0.9 10.0.0.0/8")
    s = raw(m, source="127.0.0.5")
    s.sendall(b"PROXY TCP4 192.0.2.77 198.51.100.2 40077 25\r\nEHLO x\r\nMAIL FROM:<a@b.test>\r\n")
    got, took = read_until_close(s, 5)
    s.close()
    assert got == b"", got
    m.wait_log(r"proxy-protocol refuse peer=127\.0\.0\.5:\d+ reason=not-in-proxy-protocol-from")
    assert fake.completed() == [] and not fake.all_lines(), fake.all_lines()
    assert "192.0.2.77" not in m.log()


@pytest.mark.timeout(90)
def test_pp_bad_headers_closed_within_deadline(fake, moatd_factory):
    """Malformed, over-long, truncated and slow headers from a trusted peer:
    closed without a greeting, at once or within proxy-protocol-timeout;
    moatd goes on serving (a good header after them works)."""
    m = pp_moatd(moatd_factory, fake.address, proxy_protocol_timeout="1s")
    cases = [
        ("plain-smtp", b"EHLO x\r\n", 0.9),
        ("v1-bad-family", b"PROXY TCP4 2001:db8::1 198.51.100.2 1 25\r\n", 0.9),
        ("v1-bare-lf", b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25\n", 0.9),
        ("v1-over-long", b"PROXY UNKNOWN " + b"a" * 200, 0.9),
        ("v2-over-long", V2SIG + b"\x21\x11\xff\xff" + b"\x00" * 64, 0.9),
        ("v2-bad-tlv", V2SIG + b"\x21\x11\x00\x10" + b"\x00" * 12 + b"\x04\x00\x09\x00", 0.9),
        ("v2-command-2", V2SIG + b"\x22\x11\x00\x0c" + b"\x00" * 12, 0.9),
        ("truncated-v1", b"PROXY TCP4 192.0.2.1 ", 3.0),
        ("truncated-v2", V2SIG + b"\x21\x11\x00\x0c\x00", 3.0),
        ("nothing", b"", 3.0),
    ]
    for name, data, limit in cases:
        s = raw(m)
        if data:
            s.sendall(data)
        got, took = read_until_close(s, limit + 2)
        s.close()
        assert got == b"", (name, got)
        assert took < limit, (name, took)
    # slow: a byte every 0.25 s; the deadline is for the whole header
    s = raw(m)
    t0 = time.monotonic()
    closed = False
    for b in b"PROXY TCP4 192.0.2.1 198.51.100.2 1 25\r\n":
        try:
            s.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.25)
        if time.monotonic() - t0 > 4:
            break
    if not closed:
        got, _ = read_until_close(s, 3)
        assert got == b"", got
    assert time.monotonic() - t0 < 4.5
    s.close()
    log = m.log()
    assert log.count("proxy-protocol error") >= len(cases) + 1, log[-3000:]
    assert "within proxy-protocol-timeout" in log
    assert "longer than 107 bytes" in log and "longer than 1552 bytes" in log
    # still serving
    s = raw(m)
    s.sendall(b"PROXY TCP4 192.0.2.78 198.51.100.2 40078 25\r\n")
    c = session_after_header(s)
    assert c.greeting.code == 220
    c.cmd("QUIT")
    s.close()
    assert fake.completed() == []


@pytest.mark.timeout(60)
def test_pp_header_needed_on_proxy_listener_only(fake, moatd_factory):
    """A proxy-protocol listener beside a plain one: the plain one greets
    at once, as before."""
    pport = harness.free_port()
    m = moatd_factory(fake.address, listen=["127.0.0.1:%d" % harness.free_port(),
                                            "127.0.0.1:%d proxy-protocol" % pport],
                      proxy_protocol_from="127.0.0.1")
    with m.client() as c:
        assert c.greeting.code == 220


@pytest.mark.timeout(60)
def test_pp_conf_errors(workdir, moatd_factory, fake):
    m = moatd_factory(fake.address, start=False,
                      listen="127.0.0.1:%d proxy-protocol" % harness.free_port())
    m.conf_path.write_text(harness.render_conf(m.conf_items))
    r = subprocess.run([m.binary, "-n", "-f", str(m.conf_path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "no proxy-protocol-from" in r.stderr + r.stdout, r.stderr
    m2 = moatd_factory(fake.address, start=False, proxy_protocol_from="192.0.2.1/24")
    m2.conf_path.write_text(harness.render_conf(m2.conf_items))
    r = subprocess.run([m2.binary, "-n", "-f", str(m2.conf_path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert re.search(r"moat\.conf:\d+:\d+: error: proxy-protocol-from: bad network", r.stderr + r.stdout), r.stderr


@pytest.mark.postfix
@pytest.mark.timeout(90)
@pytest.mark.parametrize("option", ["send-proxy-v2", "send-proxy"])
def test_pp_haproxy_real_client_reaches_postfix(postfix, moatd_factory, haproxy_factory, option):
    """client 127.0.0.5 -> haproxy (send-proxy[-v2]) -> moatd -> Postfix:
    Postfix logs and records the real client address (XCLIENT)."""
    m = pp_moatd(moatd_factory, "127.0.0.1:%d" % postfix.port)
    h = haproxy_factory([("127.0.0.1:%d" % m.port, option)])
    tag = "pp-haproxy-%s-%d" % (option, m.port)
    with Client(h.port, source="127.0.0.5", timeout=10) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo("behind-lb.test")
        rs = smtp_transaction(c, message(tag))
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    msgs = postfix.wait_messages_with(tag, 1, 15)
    assert len(msgs) == 1, postfix.log()[-3000:]
    received = re.findall(rb"^Received: .*(?:\n[ \t].*)*", msgs[0], re.M)
    assert received and b"[127.0.0.5]" in received[0], received[:1]
    assert re.search(r"client=\S*\[127\.0\.0\.5\]", postfix.log()), postfix.log()[-3000:]
    assert m.wait_log(r"disconnect client=unknown\[127\.0\.0\.5\]:\d+ helo=<behind-lb\.test> .* "
                      r"via=127\.0\.0\.1:", timeout=8), m.log()[-2000:]


# ===========================================================================
# Rate limits shared in Redis (ratelimit NAME ...; "ratelimit NAME" in rules)

RL_REPLY = '451 4.7.1 "rate limit exceeded, slow down"'


def send_one(port, source, tag, login=None):
    """One message on a fresh connection: the first refusal among MAIL,
    RCPT and the end of DATA, or the reply to the dot."""
    with Client(port, source=source, timeout=10) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo("rl.test")
        if login:
            r = c.cmd("AUTH PLAIN " + base64.b64encode(("\0%s\0pw" % login).encode()).decode())
            assert r.code == 235, r
        for cmd in ("MAIL FROM:<a@sender.test>", "RCPT TO:<user@example.org>"):
            r = c.cmd(cmd)
            if r.code != 250:
                c.cmd("QUIT")
                return r
        assert c.cmd("DATA").code == 354
        c.send(harness.dot_stuff(message(tag)) + b".\r\n")
        r = c.reply()
        c.cmd("QUIT")
        return r


@pytest.mark.timeout(120)
def test_rl_client_limit_shared_by_two_moatd_behind_haproxy(fake, moatd_factory, redis_factory,
                                                            haproxy_factory):
    """Two moatd behind haproxy (send-proxy-v2), one Redis: 3 messages
    per client address (3 per 10 minutes: no refill during the test, even
    on a loaded machine), counted across both nodes: the fourth gets the
    policy's 451 wherever it lands; another client is not limited; one
    Lua call per decision."""
    rd = redis_factory()
    conf = dict(redis=rd.address, ratelimit="net key client-ip rate 3/10m",
                on="mail ratelimit net tempfail " + RL_REPLY)
    a = pp_moatd(moatd_factory, fake.address, **conf)
    b = pp_moatd(moatd_factory, fake.address, **conf)
    h = haproxy_factory([("127.0.0.1:%d" % a.port, "send-proxy-v2"),
                         ("127.0.0.1:%d" % b.port, "send-proxy-v2")])
    codes = [send_one(h.port, "127.0.0.5", "rl-%d" % i).code for i in range(5)]
    assert codes == [250, 250, 250, 451, 451], codes
    assert send_one(h.port, "127.0.0.6", "rl-other").code == 250
    # both nodes took part and the limit named the claimed client
    for n in (a, b):
        assert n.wait_log(r"disconnect client=unknown\[127\.0\.0\.5\]:", timeout=8), n.log()[-2000:]
    assert "ratelimit exceeded name=net" in a.log() + b.log()
    keys = sorted(k.decode() for k in rd.client().keys("moat:rl:*"))
    assert keys == ["moat:rl:net|127.0.0.5/32", "moat:rl:net|127.0.0.6/32"], keys
    stats = rd.client().info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] + stats.get("cmdstat_eval", {"calls": 0})["calls"] == 6, stats
    assert len(fake.completed()) == 4
    # moatctl ratelimit list | show | reset
    a.conf_path.write_text(harness.render_conf(a.conf_items))

    def ctl(*args):
        return subprocess.run([harness.moatctl_path(), "ratelimit", "-f", str(a.conf_path)] +
                              list(args), capture_output=True, text=True, timeout=30)
    r = ctl("list")
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert len(lines) == 2 and lines[0].startswith("net|127.0.0.5/32 used=3/3 rate=3/600s burst=3 "), lines
    assert lines[1].startswith("net|127.0.0.6/32 used=1/3 "), lines
    r = ctl("show", "net|127.0.0.5/32")
    assert r.returncode == 0 and "used=3/3" in r.stdout, (r.stdout, r.stderr)
    r = ctl("reset", "net|127.0.0.5/32")
    assert r.returncode == 0 and r.stdout.strip() == "reset net|127.0.0.5/32", (r.stdout, r.stderr)
    assert ctl("reset", "net|127.0.0.5/32").returncode == 1
    assert ctl("show", "net|127.0.0.5/32").stdout.strip() == "net|127.0.0.5/32 unused"
    assert send_one(h.port, "127.0.0.5", "rl-after-reset").code == 250


@pytest.mark.timeout(120)
def test_rl_login_limit_counted_across_two_moatd(fake_factory, moatd_factory, redis_factory):
    """A login over its submission limit (2 per 10 minutes) is refused after 2
    messages, counted across two nodes; another login is not."""
    rd = redis_factory()
    f = fake_factory(caps=list(harness.DEFAULT_CAPS) + ["AUTH PLAIN LOGIN"],
                     replies={"AUTH": "235 2.7.0 Authentication successful"})
    nodes = []
    for _ in range(2):
        p = harness.free_port()
        m = moatd_factory(f.address, listen="127.0.0.1:%d submission" % p, auth_require_tls="no",
                          redis=rd.address, ratelimit="sub key login rate 2/10m",
                          on="mail ratelimit sub tempfail 451 4.7.1 \"too many messages from your login\"")
        nodes.append(m)
    order = [0, 1, 0, 1]
    codes = [send_one(nodes[i].port, None, "sub-%d" % k, login="carol").code
             for k, i in enumerate(order)]
    assert codes == [250, 250, 451, 451], codes
    assert send_one(nodes[1].port, None, "sub-dave", login="dave").code == 250
    assert "ratelimit exceeded name=sub" in nodes[0].log() + nodes[1].log()
    assert rd.client().exists("moat:rl:sub|carol")


@pytest.mark.timeout(60)
def test_rl_without_redis_in_process_and_on_error(fake, moatd_factory, redis_factory):
    """Without Redis the limit lives in the process; with Redis down the
    decision fails open by default (logged)."""
    m = moatd_factory(fake.address, ratelimit="net key client-ip rate 2/10m",
                      on="mail ratelimit net tempfail " + RL_REPLY)
    codes = [send_one(m.port, "127.0.0.7", "local-%d" % i).code for i in range(3)]
    assert codes == [250, 250, 451], codes
    # moatctl explain counts nothing and says so
    r = subprocess.run([harness.moatctl_path(), "explain", str(m.conf_path), "--ip", "127.0.0.7",
                        "--helo", "h.test", "--from", "a@sender.test", "--rcpt", "u@example.org",
                        "--no-network"], capture_output=True, text=True, timeout=60)
    assert "check ratelimit=not-asked (offline: counted as not exceeded)" in r.stdout, r.stdout
    assert "result: accept" in r.stdout, r.stdout
    rd = redis_factory()
    port = rd.port
    rd.stop()
    m2 = moatd_factory(fake.address, redis="127.0.0.1:%d" % port, redis_timeout="500ms",
                       ratelimit="net key client-ip rate 1/1m",
                       on="mail ratelimit net tempfail " + RL_REPLY)
    codes = [send_one(m2.port, "127.0.0.8", "down-%d" % i).code for i in range(2)]
    assert codes == [250, 250], codes
    assert "check ratelimit error=" in m2.log() and "counted-as=not-exceeded" in m2.log()


def test_rl_reads_keys_as_the_earlier_script_wrote_them(fake, moatd_factory, redis_factory):
    """A limit's key as moat before this release left it (the TAT in
    milliseconds written by SET ... PX) is read by the current script
    (MGET, PSETEX): a TAT one burst ahead of Redis's clock refuses at
    once; two emission intervals below it allow one message more; the
    key keeps the same form."""
    rd = redis_factory()
    m = moatd_factory(fake.address, redis=rd.address, ratelimit="net key client-ip rate 3/10m",
                      on="mail ratelimit net tempfail " + RL_REPLY)
    key = "moat:rl:net|127.0.0.9/32"
    sec, usec = rd.client().time()
    now = sec * 1000 + usec // 1000
    rd.client().set(key, str(now + 600000), px=601000)   # T = 200 s, tau = 600 s: used up
    assert send_one(m.port, "127.0.0.9", "old-full").code == 451
    rd.client().set(key, str(now + 400000), px=401000)   # one left
    codes = [send_one(m.port, "127.0.0.9", "old-one-%d" % i).code for i in range(2)]
    assert codes == [250, 451], codes
    tat = int(rd.client().get(key))
    assert now + 600000 <= tat < now + 600000 + 60000, (tat, now)
    assert 0 < rd.client().pttl(key) <= tat - now + 1000


@pytest.mark.timeout(60)
def test_rl_policy_listener_and_smtp_count_together(fake, moatd_factory, redis_factory):
    """The limits live in the engine: a Postfix policy delegation request
    and an SMTP session of another moatd count in the same Redis limit
    (per recipient)."""
    rd = redis_factory()
    pport = harness.free_port()
    conf = dict(redis=rd.address, ratelimit="r key client-ip rate 3/10m per recipient",
                on="rcpt ratelimit r tempfail " + RL_REPLY)
    moatd_factory(fake.address, listen=["127.0.0.1:%d" % harness.free_port(),
                                        "127.0.0.1:%d policy" % pport], **conf)
    smtp = moatd_factory(fake.address, **conf)

    def pdel(rcpt, client="127.0.0.9"):
        with socket.create_connection(("127.0.0.1", pport), timeout=20) as s:
            req = dict(request="smtpd_access_policy", protocol_state="RCPT",
                       protocol_name="ESMTP", client_address=client, helo_name="h.test",
                       sender="a@sender.test", recipient=rcpt, instance="i." + rcpt)
            s.sendall(("".join("%s=%s\n" % kv for kv in req.items()) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n\n"):
                c = s.recv(4096)
                if not c:
                    break
                buf += c
            return buf.decode()
    assert pdel("r1@example.org") == "action=DUNNO\n\n"
    assert pdel("r2@example.org") == "action=DUNNO\n\n"
    assert send_one(smtp.port, "127.0.0.9", "rl-pdel").code == 250       # the third
    assert pdel("r3@example.org").startswith("action=451 4.7.1 rate limit exceeded")
    assert pdel("r4@example.org", client="127.0.0.10") == "action=DUNNO\n\n"


@pytest.mark.timeout(150)
def test_rl_counts_survive_sentinel_failover(fake, moatd_factory, redis_factory, workdir):
    """Two moatd find the Redis master through a sentinel; the master is
    stopped after two messages and the replica promoted: the counts made
    before the failover hold after it (4 per client: two more pass, then
    451), whichever node the message reaches. A decision Redis could not
    answer during the switch fails open and is not counted (logged)."""
    master = redis_factory()
    replica = redis_factory(replica_of=(master.host, master.port))
    sen = harness.Sentinel(workdir, master).start()
    try:
        assert wait_for(lambda: replica.client().info("replication").get(
            "master_link_status") == "up", 15), "the replica never synced"
        conf = dict(redis="sentinel %s master mm" % sen.address, redis_timeout="500ms",
                    ratelimit="net key client-ip rate 4/10m",
                    on="mail ratelimit net tempfail " + RL_REPLY)
        nodes = [moatd_factory(fake.address, **conf), moatd_factory(fake.address, **conf)]
        assert [send_one(nodes[i].port, "127.0.0.5", "fo-%d" % i).code for i in (0, 1)] == [250, 250]
        assert wait_for(lambda: replica.client().info("replication").get(
            "master_repl_offset") == master.client().info("replication").get(
            "master_repl_offset"), 10)
        assert replica.client().exists("moat:rl:net|127.0.0.5/32")
        master.stop()
        assert wait_for(lambda: sen.master_port() == replica.port, 30, interval=0.2)
        time.sleep(2.0)
        codes = []
        for k in range(12):
            codes.append(send_one(nodes[k % 2].port, "127.0.0.5", "after-%d" % k).code)
            if codes[-1] == 451:
                break
        errors = sum(n.log().count("check ratelimit error=") for n in nodes)
        assert codes[-1] == 451, (codes, errors)
        assert codes.count(250) == 2 + errors, (codes, errors)
    finally:
        sen.stop()


def evals(rd):
    """Script calls Redis has served: INFO commandstats, EVALSHA + EVAL."""
    st = rd.client().info("commandstats")
    return sum(st.get(k, {}).get("calls", 0) for k in ("cmdstat_evalsha", "cmdstat_eval"))


def rcpts(m, mfrom, rcpt_list, source="127.0.0.1"):
    """One transaction: the RCPT replies, each with the script calls Redis
    served for it."""
    out = []
    with Client(m.port, m.host, source=source, timeout=10) as c:
        c.ehlo("rl.test")
        assert c.cmd("MAIL FROM:<%s>" % mfrom).code == 250
        for r in rcpt_list:
            out.append(c.cmd("RCPT TO:<%s>" % r))
        c.cmd("QUIT")
    return out


@pytest.mark.timeout(120)
def test_rl_and_greylist_one_redis_call_per_rcpt(fake, moatd_factory, redis_factory):
    """Three limits (client network, sender domain, recipient) and the
    greylist at RCPT, through one Redis: every RCPT decision is ONE script
    call (INFO commandstats, greylist-cache 0 so that none is spared); a
    recipient the limits refuse leaves no greylist triplet (the policy
    never reached the greylist); every key under redis-prefix, moatctl
    ratelimit reads and resets them there."""
    rd = redis_factory()
    m = moatd_factory(
        fake.address, redis=rd.address, redis_prefix="mx:", greylist_delay="2s",
        greylist_cache="0",
        ratelimit=["net key client-net rate 1000/10m", "dom key sender-domain rate 1000/10m",
                   "hot key rcpt rate 2/10m per recipient"],
        on=["rcpt ratelimit net or ratelimit dom or ratelimit hot tempfail " + RL_REPLY,
            "rcpt true greylist"])
    rd.client().config_resetstat()
    base = evals(rd)
    got = rcpts(m, "a@sender.test", ["u1@example.org", "u2@example.org", "hot@example.org"])
    assert [r.code for r in got] == [451, 451, 451], got
    assert all("greylisted" in r.text for r in got), got
    assert evals(rd) - base == 3, rd.client().info("commandstats")
    base = evals(rd)
    got = rcpts(m, "a@sender.test", ["hot@example.org"])
    assert got[0].code == 451 and "greylisted" in got[0].text, got
    assert evals(rd) - base == 1
    # the recipient limit is spent for hot@: another sender is refused by the
    # limit, and its triplet is not recorded
    base = evals(rd)
    got = rcpts(m, "b@other.test", ["hot@example.org"])
    assert got[0].code == 451 and "rate limit exceeded" in got[0].text, got
    assert evals(rd) - base == 1
    keys = sorted(k.decode() for k in rd.client().keys("*"))
    assert not any("b@other.test" in k and k.startswith("mx:t:") for k in keys), keys
    assert "mx:t:{127.0.0.0/24}|a@sender.test|hot@example.org" in keys, keys
    assert not any(k.startswith("moat:") for k in keys), keys
    for k in ("mx:rl:net|127.0.0.0/24", "mx:rl:dom|sender.test", "mx:rl:hot|hot@example.org"):
        assert k in keys, keys
    assert "ratelimit exceeded name=hot" in m.log()
    # after the delay the retry passes, still one call per recipient
    time.sleep(2.2)
    base = evals(rd)
    got = rcpts(m, "a@sender.test", ["u1@example.org", "u2@example.org"])
    assert [r.code for r in got] == [250, 250], got
    assert evals(rd) - base == 2
    # moatctl ratelimit under redis-prefix
    def ctl(*args):
        return subprocess.run([harness.moatctl_path(), "ratelimit", "-f", str(m.conf_path)] +
                              list(args), capture_output=True, text=True, timeout=30)
    r = ctl("list")
    assert r.returncode == 0, r.stderr
    names = sorted(line.split()[0] for line in r.stdout.splitlines())
    # (net and dom, 1000 per 10 minutes, are empty again within a second)
    assert [n for n in names if n.startswith("hot|")] == [
        "hot|hot@example.org", "hot|u1@example.org", "hot|u2@example.org"], r.stdout
    assert all(n.split("|")[0] in ("net", "dom", "hot") for n in names), r.stdout
    assert "used=2/2" in ctl("show", "hot|hot@example.org").stdout
    r = ctl("reset", "hot|hot@example.org")
    assert r.returncode == 0 and r.stdout.strip() == "reset hot|hot@example.org", (r.stdout, r.stderr)
    assert not rd.client().exists("mx:rl:hot|hot@example.org")
    got = rcpts(m, "b@other.test", ["hot@example.org"])
    assert got[0].code == 451 and "greylisted" in got[0].text, got


def test_rl_five_limits_and_greylist_one_call(fake, moatd_factory, redis_factory):
    """Five limits at RCPT (the most the combined script takes) and the
    greylist: still one script call per recipient (its 30 arguments fit
    the client's limit), every limit counted."""
    rd = redis_factory()
    names = ["l%d" % i for i in range(5)]
    m = moatd_factory(
        fake.address, redis=rd.address, greylist_delay="0", greylist_cache="0",
        ratelimit=["%s key client-net rate %d/10m" % (n, 100 + i) for i, n in enumerate(names)],
        on=["rcpt " + " or ".join("ratelimit " + n for n in names) + " tempfail " + RL_REPLY,
            "rcpt true greylist"])
    rd.client().config_resetstat()
    base = evals(rd)
    got = rcpts(m, "a@sender.test", ["u1@example.org", "u2@example.org"])
    assert [r.code for r in got] == [451, 451] and all("greylisted" in r.text for r in got), got
    assert evals(rd) - base == 2, rd.client().info("commandstats")
    for n in names:
        assert rd.client().exists("moat:rl:%s|127.0.0.0/24" % n), n
    assert "refused" not in m.log()


@pytest.mark.timeout(90)
def test_rl_node_share_blocks_bounded_and_small_limits_exact(fake, moatd_factory, redis_factory):
    """ratelimit-node-share 10: two moatd (one worker each), one Redis. A
    limit of 40 an hour (block 4) is counted mostly from the blocks each
    node reserved, in far fewer script calls than decisions, and refuses
    after between 36 and 40 recipients in all (never more than 40; early
    by at most the other node's block); a limit of 3 (block 0) stays
    exact: the fourth message is refused wherever it lands."""
    rd = redis_factory()
    conf = dict(redis=rd.address, workers="1", ratelimit_node_share="10",
                ratelimit=["big key rcpt rate 40/1h per recipient",
                           "small key sender rate 3/10m"],
                on=["mail ratelimit small tempfail " + RL_REPLY,
                    "rcpt ratelimit big tempfail " + RL_REPLY])
    a = moatd_factory(fake.address, **conf)
    b = moatd_factory(fake.address, **conf)
    rd.client().config_resetstat()
    codes = []
    with Client(a.port, a.host, timeout=10) as ca, Client(b.port, b.host, timeout=10) as cb:
        for c in (ca, cb):
            c.ehlo("rl.test")
            assert c.cmd("MAIL FROM:<big@sender.test>").code == 250
        for i in range(50):
            codes.append((ca, cb)[i % 2].cmd("RCPT TO:<big@example.org>").code)
            if i == 35:
                calls = evals(rd)
    ok = codes.count(250)
    assert 36 <= ok <= 40, codes
    assert codes[:36] == [250] * 36, codes
    assert codes.count(451) == 50 - ok, codes
    assert calls <= 12, (calls, codes)      # 36 decisions: 36 calls when exact
    tat = int(rd.client().get("moat:rl:big|big@example.org"))
    sec, usec = rd.client().time()
    # T = 90 s: the TAT is at most one burst (40 x 90 s) ahead of Redis's clock
    assert tat - (sec * 1000 + usec // 1000) <= 3600000, tat
    small = [send_one((a, b)[i % 2].port, "127.0.0.1", "small-%d" % i).code for i in range(4)]
    assert small == [250, 250, 250, 451], small


@pytest.mark.timeout(90)
def test_rl_and_greylist_one_call_when_the_limit_only_scores(fake, moatd_factory, redis_factory):
    """When an exceeded limit only adds to the score, the policy reaches the
    greylist whatever the limit says: the same single call records the
    triplet of a recipient over its limit too."""
    rd = redis_factory()
    m = moatd_factory(
        fake.address, redis=rd.address, greylist_delay="2s", greylist_cache="0",
        ratelimit="hot key rcpt rate 1/10m burst 1 per recipient",
        on=["rcpt ratelimit hot score +5", "rcpt true greylist"])
    base = evals(rd)
    got = rcpts(m, "a@sender.test", ["hot@example.org"])
    got += rcpts(m, "b@other.test", ["hot@example.org"])
    assert [r.code for r in got] == [451, 451] and all("greylisted" in r.text for r in got), got
    assert evals(rd) - base == 2, rd.client().info("commandstats")
    keys = sorted(k.decode() for k in rd.client().keys("moat:t:*"))
    assert keys == ["moat:t:{127.0.0.0/24}|a@sender.test|hot@example.org",
                    "moat:t:{127.0.0.0/24}|b@other.test|hot@example.org"], keys
    assert "ratelimit exceeded name=hot" in m.log()
