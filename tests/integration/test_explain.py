"""Parity of `moatctl explain` with moatd: one policy file (lists, and rules
at every stage, with monitor and accept rules), a table of sessions, each
walked by moatctl explain on moatd's own configuration file and run through
a real moatd in front of the fake upstream (which accepts everything). Both
must agree on the stage that decided, the reply code and text, and on the
answer to each recipient.

MOATCTL selects the moatctl binary (default: build-asan/moatctl)."""

import os
import re
import subprocess

import pytest

import harness
from harness import dot_stuff

LISTS = [
    "blocked net { 127.0.0.9 127.0.1.0/24 }",
    "slow net { 127.0.0.7 }",
    "local domain { example.org }",
    "bad-senders address { spammer@ @bad.test }",
    "vip address { boss@example.org }",
    "bad-helo word { evil* }",
]
RULES = [
    'connect client-ip in blocked reject 554 5.7.1 "client blocked by policy"',
    'connect client-ip in slow tempfail 421 4.7.0 "slow down"',
    'helo helo in bad-helo reject 550 5.7.1 "bad helo"',
    'helo helo is localhost tempfail 450 4.7.1 "say who you are"',
    'mail sender in vip accept',
    'mail sender in bad-senders reject 553 5.7.1 "sender refused"',
    'mail monitor declared-size > 100k reject 552 5.3.4 "would be too big"',
    'rcpt rcpt-count >= 2 tempfail 452 4.5.3 "too many recipients for policy"',
    'rcpt not rcpt-domain in local reject 554 5.7.1 "relay access denied"',
    'data monitor size > 1k reject 552 5.3.4 "would be big"',
    'data sender in vip accept',
    'data size > 2k reject 552 5.3.4 "message too big for policy"',
    'data null-sender and rcpt-count > 1 reject 550 5.7.1 "bounce to many"',
]

OK = "<u@example.org>"
OK2 = "<v@sub.Example.ORG>"
OK3 = "<w@example.org>"
EXT = "<victim@external.test>"

# name, client ip, helo, MAIL FROM argument, RCPT TO arguments, message size
SCENARIOS = [
    ("connect-reject", "127.0.0.9", "c.test", "<a@b.test>", [OK], 300),
    ("connect-reject-cidr", "127.0.1.5", "c.test", "<a@b.test>", [OK], 300),
    ("connect-tempfail", "127.0.0.7", "c.test", "<a@b.test>", [OK], 300),
    ("helo-reject", "127.0.0.2", "evil.example", "<a@b.test>", [OK], 300),
    ("helo-tempfail-case", "127.0.0.2", "LocalHost", "<a@b.test>", [OK], 300),
    ("mail-reject-local", "127.0.0.2", "c.test", "<Spammer@x.test>", [OK], 300),
    ("mail-reject-domain", "127.0.0.2", "c.test", "<a@BAD.test>", [OK], 300),
    ("mail-syntax", "127.0.0.2", "c.test", "<a@b.test", [OK], 300),
    ("mail-monitor-only", "127.0.0.2", "c.test", "<a@b.test> SIZE=200000", [OK], 300),
    ("rcpt-all-refused", "127.0.0.3", "c.test", "<a@b.test>", [EXT, EXT], 300),
    ("rcpt-some-refused", "127.0.0.3", "c.test", "<a@b.test>", [EXT, OK, OK2], 300),
    ("rcpt-count-tempfail", "127.0.0.3", "c.test", "<a@b.test>", [OK, OK2, OK3], 300),
    ("rcpt-syntax", "127.0.0.3", "c.test", "<a@b.test>", ["<bad address", OK], 300),
    ("data-boundary-accept", "127.0.0.4", "c.test", "<a@b.test>", [OK], 2048),
    ("data-boundary-reject", "127.0.0.4", "c.test", "<a@b.test>", [OK], 2049),
    ("data-vip-accept", "127.0.0.4", "c.test", "<boss@example.org>", [EXT, OK], 5000),
    ("data-null-sender-two", "127.0.0.4", "c.test", "<>", [OK, OK2], 300),
    ("data-null-sender-one", "127.0.0.4", "c.test", "<>", [OK], 300),
]


def moatctl_path():
    return os.environ.get("MOATCTL") or str(harness.REPO / "build-asan" / "moatctl")


def message_of_size(n):
    """CRLF bytes of exactly n bytes, lines of at most 72."""
    head = b"Subject: parity\r\n\r\n"
    rem = n - len(head)
    assert rem >= 2
    lines = []
    while rem > 74:
        lines.append(b"y" * 70 + b"\r\n")
        rem -= 72
    lines.append(b"z" * (rem - 2) + b"\r\n")
    data = head + b"".join(lines)
    assert len(data) == n
    return data


def reply_key(code, text):
    return (int(code), text.strip())


def run_explain(conf_path, workdir, name, ip, helo, mfrom, rcpts, data):
    """-> (stage, (code, text) or None, [per rcpt (code, text) or None], output)"""
    eml = workdir / ("%s.eml" % name)
    eml.write_bytes(data.replace(b"\r\n", b"\n"))     # explain turns LF into CRLF
    argv = [moatctl_path(), "explain", str(conf_path), "--ip", ip, "--helo", helo,
            "--from", mfrom, "--message", str(eml), "--no-network"]
    for r in rcpts:
        argv += ["--rcpt", r]
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1")
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30, env=env)
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    assert "Sanitizer" not in err and "runtime error" not in err, err
    res = re.search(r"^result: (\S+)(?: (\d{3}) (.*))?$", out, re.M)
    assert res, out + err
    if res.group(1) == "accept":
        assert p.returncode == 0, out + err
        stage, reply = "accept", None
    else:
        assert p.returncode == 1, out + err
        stage = re.search(r"^verdict: refused at (\w+)$", out, re.M).group(1)
        reply = reply_key(res.group(2), res.group(3))
    # the answer to each RCPT: the verdict line after each "stage rcpt"
    per_rcpt = []
    for block in re.split(r"^stage ", out, flags=re.M)[1:]:
        if not block.startswith("rcpt "):
            continue
        v = re.search(r'^  verdict (?:reject|tempfail) reply "(\d{3}) (.*)"$', block, re.M)
        per_rcpt.append(reply_key(v.group(1), v.group(2)) if v else None)
    return stage, reply, per_rcpt, out


def run_moatd(m, ip, helo, mfrom, rcpts, data):
    """The same session through moatd -> (stage, reply or None, per_rcpt)."""
    with m.client(source=ip) as c:
        g = c.greeting
        if g.code != 220:
            assert c.wait_closed(5)
            return "connect", reply_key(g.code, g.text), []
        r = c.cmd("EHLO " + helo)
        if r.code != 250:
            return "helo", reply_key(r.code, r.text), []
        r = c.cmd("MAIL FROM:" + mfrom)
        if r.code != 250:
            return "mail", reply_key(r.code, r.text), []
        per_rcpt, last = [], None
        for rc in rcpts:
            r = c.cmd("RCPT TO:" + rc)
            if r.code == 250:
                per_rcpt.append(None)
            else:
                last = reply_key(r.code, r.text)
                per_rcpt.append(last)
        if all(x is not None for x in per_rcpt):
            r = c.cmd("DATA")
            assert (r.code, r.text) == (554, "5.5.1 Error: no valid recipients"), r
            return "rcpt", last, per_rcpt
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(dot_stuff(data) + b".\r\n")
        r = c.reply()
        c.cmd("QUIT")
        if r.code != 250:
            return "data", reply_key(r.code, r.text), per_rcpt
        return "accept", None, per_rcpt


@pytest.mark.timeout(180)
def test_explain_parity_with_moatd(fake, moatd_factory, workdir):
    m = moatd_factory(fake.address, list=LISTS, on=RULES)
    mctl = moatctl_path()
    if not os.access(mctl, os.X_OK):
        pytest.fail("moatctl binary missing: %s (make asan, or set MOATCTL)" % mctl)
    assert len(SCENARIOS) >= 12
    mismatches = []
    seen_stages = set()
    n_accept = 0
    for name, ip, helo, mfrom, rcpts, size in SCENARIOS:
        data = message_of_size(size)
        e_stage, e_reply, e_rcpt, out = run_explain(m.conf_path, workdir, name, ip, helo,
                                                    mfrom, rcpts, data)
        d_stage, d_reply, d_rcpt = run_moatd(m, ip, helo, mfrom, rcpts, data)
        seen_stages.add(d_stage)
        n_accept += d_stage == "accept"
        if (e_stage, e_reply) != (d_stage, d_reply) or (d_rcpt and e_rcpt != d_rcpt):
            mismatches.append("%s: explain %s %r rcpts %r / moatd %s %r rcpts %r\n%s"
                              % (name, e_stage, e_reply, e_rcpt, d_stage, d_reply, d_rcpt,
                                 out))
    assert not mismatches, "\n".join(mismatches)
    # the table reaches every stage, and accepted messages reached the upstream
    assert seen_stages == {"connect", "helo", "mail", "rcpt", "data", "accept"}, seen_stages
    assert len(fake.wait_completed(n_accept)) == n_accept


def test_explain_usage_and_config_errors(workdir):
    mctl = moatctl_path()
    if not os.access(mctl, os.X_OK):
        pytest.fail("moatctl binary missing: %s (make asan, or set MOATCTL)" % mctl)
    bad = workdir / "bad.conf"
    bad.write_text('on rcpt nosuchfact in x reject 554 5.7.1 "x"\n')
    p = subprocess.run([mctl, "explain", str(bad), "--ip", "127.0.0.1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 2, p
    assert b"bad.conf:1:" in p.stderr, p.stderr
    p = subprocess.run([mctl, "explain", str(bad), "--rcpt", "<a@b>"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 2 and b"usage" in p.stderr, p


def test_explain_sample_conf_sender_ownership(workdir):
    """The shipped sample.conf, offline: a logged-in user may send only as
    an address the login-map gives it; without a login, our own domains are
    refused from outside; the trace names the deciding rule."""
    mctl = moatctl_path()
    sample = str(harness.REPO / "sample.conf")
    base = [mctl, "explain", sample, "--ip", "198.51.100.7", "--helo", "mx.remote.test",
            "--rcpt", "<u@example.org>", "--no-network"]
    cases = [
        (["--auth", "alice", "--from", "<alice@example.org>"], 0, "result: accept"),
        (["--auth", "alice", "--from", "<anyone@example.net>"], 0, "result: accept"),
        (["--auth", "alice", "--from", "<bob@example.org>"], 1,
         "result: reject 553 5.7.1 Sender address rejected: not owned by auth user"),
        (["--from", "<alice@example.org>"], 1,
         "result: reject 553 5.7.1 Sender address rejected: not logged in"),
    ]
    for extra, rc, want in cases:
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=20)
        assert r.returncode == rc, (extra, r.stdout, r.stderr)
        assert r.stdout.rstrip().splitlines()[-1] == want, (extra, r.stdout)
        if rc == 1:
            assert re.search(r"rule \S*sample.conf:\d+ enforce matched: on mail", r.stdout), r.stdout


def test_explain_why_each_rule(workdir):
    """Issue 16, item 3: the trace shows, under each rule, the facts it read
    and why it matched or not (each term: the fact's value, the test, yes
    or no); a DNS check not given is not counted as a pass, and SPF, read
    after the greylist rule, is asked at rcpt (not counted as a temporary
    error for want of waiting)."""
    sample = str(harness.REPO / "sample.conf")
    r = subprocess.run([moatctl_path(), "explain", sample, "--ip", "198.51.100.7",
                        "--helo", "mx.remote.test", "--from", "<a@remote.test>",
                        "--rcpt", "<u@example.org>", "--no-network", "--fcrdns", "fail",
                        "--dnsbl", "none", "--greylist", "passed"],
                       capture_output=True, text=True, timeout=20)
    out = r.stdout
    assert r.returncode == 0 and out.rstrip().endswith("result: accept"), (r.stdout, r.stderr)
    lines = out.splitlines()
    whys = {}
    for i, line in enumerate(lines):
        m = re.match(r"  rule \S+:(\d+) \w+ (matched|no-match): (.*)", line)
        if m:
            assert lines[i + 1].startswith("    why: "), lines[i:i + 2]
            whys[m.group(3)] = (m.group(2), lines[i + 1][9:])
    grey = [v for k, v in whys.items() if k.startswith("on rcpt") and k.endswith(" greylist")]
    assert grey == [("matched", "client-ip=198.51.100.7 in trusted: no; auth: no; fcrdns: no; "
                                "dnsbl-score=0 > 0: no")], whys
    relay = [v for k, v in whys.items() if "Relay access denied" in k]
    assert relay == [("no-match", "rcpt-domain=example.org in local-domains: yes; "
                                  "client-ip=198.51.100.7 in trusted: no; auth: no")], whys
    spf = [v for k, v in whys.items() if k.startswith("on rcpt spf is fail")]
    assert spf == [("no-match", "spf=temperror is fail: no; client-ip=198.51.100.7 in trusted: no; "
                                "auth: no")], whys
    assert "not awaited" not in r.stderr, r.stderr
