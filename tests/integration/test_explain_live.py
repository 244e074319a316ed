"""Issue 16: explain equals live. One policy (DNSBL zones, SPF, DKIM,
DMARC, greylisting in Redis, AUTH and sender ownership), a table of
sessions. Each row runs through a live moatd (the loopback DNS server,
a real redis-server, and as the upstream a real Postfix with SASL from
a real Dovecot: conftest.py's sasl_postfix, one for the module) and
through `moatctl explain --no-network` with the check results given on
the command line (--dnsbl, --spf, --greylist, --dkim, --dmarc, ...).
Both must give the same outcome: the stage that refused and its reply,
or acceptance. Each row also names the outcome it must have, so that
both cannot agree on a wrong one, and every message moatd accepted must
be in Postfix's mailbox, every refused one not. Greylisting is taken in
every state (new, early, passed, allowlisted); DNSBL listings, a code
outside the zone's codes and errors; every SPF result; DKIM none; DMARC
pass, fail (reject, quarantine, none) and none; AUTH (checked by
Postfix against Dovecot) with owned and not owned senders."""

import base64
import re
import subprocess
import time

import pytest

import harness
from harness import Client, dot_stuff

BL, LOW = "bl.test", "low.test"
LISTS = [
    "local domain { example.test }",
    "trusted net { 127.0.0.200 }",
    "grey domain { grey.test }",
    "any-login word { * }",
    "owners login-map { alice: alice@example.test }",
]
RULES = [
    'connect client-ip in trusted accept',
    'connect dnsbl-score >= 3 reject 554 5.7.1 "blocked using $dnsbl"',
    'mail dnsbl-error and spf is softfail tempfail 451 4.7.1 "dnsbl error and softfail"',
    'mail spf is permerror reject 550 5.7.24 "SPF permerror for $sender-domain"',
    'mail spf is temperror tempfail 451 4.7.24 "SPF temperror for $sender-domain"',
    'mail sender-domain in local and not auth and not client-ip in trusted '
    'reject 553 5.7.1 "Sender address rejected: not logged in"',
    'mail login in any-login and not sender owned-by owners '
    'reject 553 5.7.1 "Sender address rejected: not owned by auth user"',
    'rcpt not rcpt-domain in local and not client-ip in trusted and not auth '
    'reject 554 5.7.1 "Relay access denied"',
    'rcpt spf is fail and not auth and not client-ip in trusted reject 550 5.7.23 "SPF fail for $sender-domain"',
    'rcpt dnsbl-hit is low.test and spf is none and not auth reject 550 5.7.1 "low listing without SPF"',
    'rcpt sender-domain in grey and not auth greylist',
    'rcpt dnsbl-score >= 1 and not auth and not client-ip in trusted greylist',
    'data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 "DMARC reject for $from-domain"',
    'data dmarc is fail and dmarc-policy is quarantine tempfail 451 4.7.1 "DMARC quarantine for $from-domain"',
    'data dkim is none and sender-domain is unsigned.test reject 550 5.7.1 "unsigned mail from $sender-domain"',
]

# the Postfix upstream delivers the table's domains into its mailbox, so
# that what moatd accepted can be looked for there
SASL_POSTFIX_MAIN = {"virtual_mailbox_domains": "example.org example.test elsewhere.test"}

SPF = {"pass.test": "v=spf1 ip4:127.0.0.0/8 -all", "grey.test": "v=spf1 ip4:127.0.0.0/8 -all",
       "unsigned.test": "v=spf1 ip4:127.0.0.0/8 -all", "fail.test": "v=spf1 -all",
       "soft.test": "v=spf1 ~all", "neutral.test": "v=spf1 ?all",
       "perm.test": "v=spf1 include:nothere.test -all"}
DMARC = {"pass.test": "v=DMARC1; p=reject", "dmr.test": "v=DMARC1; p=reject",
         "dmq.test": "v=DMARC1; p=quarantine", "dmn.test": "v=DMARC1; p=none"}
# client -> {zone: answer | "SERVFAIL"}
LISTED = {"127.0.1.2": {BL: "127.0.0.2"}, "127.0.0.200": {BL: "127.0.0.2"},
          "127.0.1.3": {LOW: "127.0.0.2"}, "127.0.1.4": {BL: "SERVFAIL"},
          "127.0.1.5": {BL: "127.0.0.20"}, "127.0.1.6": {BL: "127.255.255.254"}}

ACCEPT = ("accept",)
L = "<u@example.test>"
X = "<x@elsewhere.test>"
CLEAN = ["--dnsbl", "none"]
SAUTH = ["--dkim", "none", "--dmarc", "none"]


def row(name, ip, mfrom, rcpt, want, assume, auth=None, hfrom=None, gl=None):
    return dict(name=name, ip=ip, mfrom=mfrom, rcpt=rcpt, want=want, assume=assume,
                auth=auth, hfrom=hfrom, gl=gl)


ROWS = [
    row("clean inbound", "127.0.1.10", "a@pass.test", L, ACCEPT, CLEAN + ["--spf", "pass"] + SAUTH),
    row("dnsbl listed", "127.0.1.2", "a@pass.test", L, ("connect", 554, "5.7.1 blocked using bl.test"),
        ["--dnsbl", "bl.test=127.0.0.2"]),
    row("dnsbl listed but trusted", "127.0.0.200", "a@pass.test", L, ACCEPT,
        ["--dnsbl", "bl.test=127.0.0.2", "--spf", "pass"] + SAUTH),
    row("trusted may relay", "127.0.0.200", "a@fail.test", X, ACCEPT,
        ["--dnsbl", "bl.test=127.0.0.2", "--spf", "fail"] + SAUTH),
    row("low listing, no SPF", "127.0.1.3", "a@none.test", L,
        ("rcpt", 550, "5.7.1 low listing without SPF"), ["--dnsbl", "low.test=127.0.0.2", "--spf", "none"]),
    row("low listing, SPF pass: greylisted", "127.0.1.3", "b@pass.test", L,
        ("rcpt", 451, "4.7.1 greylisted, please retry in 2 seconds"),
        ["--dnsbl", "low.test=127.0.0.2", "--spf", "pass", "--greylist", "new"], gl="new"),
    row("low listing, softfail: greylisted", "127.0.1.3", "c@soft.test", L,
        ("rcpt", 451, "4.7.1 greylisted, please retry in 2 seconds"),
        ["--dnsbl", "low.test=127.0.0.2", "--spf", "softfail", "--greylist", "new"], gl="new"),
    row("low listing, null sender", "127.0.1.3", "", L, ("rcpt", 550, "5.7.1 low listing without SPF"),
        ["--dnsbl", "low.test=127.0.0.2", "--spf", "none"]),
    row("dnsbl error and softfail", "127.0.1.4", "a@soft.test", L,
        ("mail", 451, "4.7.1 dnsbl error and softfail"), ["--dnsbl", "bl.test=error", "--spf", "softfail"]),
    row("dnsbl error and SPF pass", "127.0.1.4", "a@pass.test", L, ACCEPT,
        ["--dnsbl", "bl.test=error", "--spf", "pass"] + SAUTH),
    row("dnsbl answer outside its codes", "127.0.1.5", "a@soft.test", L, ACCEPT,
        ["--dnsbl", "bl.test=127.0.0.20", "--spf", "softfail"] + SAUTH),
    row("dnsbl error code 127.255.255.254", "127.0.1.6", "a@soft.test", L,
        ("mail", 451, "4.7.1 dnsbl error and softfail"),
        ["--dnsbl", "bl.test=127.255.255.254", "--spf", "softfail"]),
    row("spf fail", "127.0.1.10", "a@fail.test", L, ("rcpt", 550, "5.7.23 SPF fail for fail.test"),
        CLEAN + ["--spf", "fail"]),
    row("spf softfail", "127.0.1.10", "a@soft.test", L, ACCEPT, CLEAN + ["--spf", "softfail"] + SAUTH),
    row("spf neutral", "127.0.1.10", "a@neutral.test", L, ACCEPT, CLEAN + ["--spf", "neutral"] + SAUTH),
    row("spf none", "127.0.1.10", "a@none.test", L, ACCEPT, CLEAN + ["--spf", "none"] + SAUTH),
    row("spf permerror", "127.0.1.10", "a@perm.test", L,
        ("mail", 550, "5.7.24 SPF permerror for perm.test"), CLEAN + ["--spf", "permerror"]),
    row("spf temperror", "127.0.1.10", "a@temp.test", L,
        ("mail", 451, "4.7.24 SPF temperror for temp.test"), CLEAN + ["--spf", "temperror"]),
    row("null sender", "127.0.1.10", "", L, ACCEPT, CLEAN + ["--spf", "none"] + SAUTH),
    row("relay denied", "127.0.1.10", "a@pass.test", X, ("rcpt", 554, "5.7.1 Relay access denied"),
        CLEAN + ["--spf", "pass"]),
    row("relay denied, null sender", "127.0.1.10", "", X, ("rcpt", 554, "5.7.1 Relay access denied"),
        CLEAN + ["--spf", "none"]),
    row("relay denied before greylist", "127.0.1.10", "a@grey.test", X,
        ("rcpt", 554, "5.7.1 Relay access denied"), CLEAN + ["--spf", "pass", "--greylist", "new"]),
    row("recipient domain in capitals", "127.0.1.10", "a@pass.test", "<u@EXAMPLE.TEST>", ACCEPT,
        CLEAN + ["--spf", "pass"] + SAUTH),
    row("local sender not logged in", "127.0.1.10", "alice@example.test", L,
        ("mail", 553, "5.7.1 Sender address rejected: not logged in"), CLEAN + ["--spf", "none"]),
    row("auth: owned sender relays", "127.0.1.10", "alice@example.test", X, ACCEPT,
        CLEAN + ["--spf", "none"] + SAUTH, auth="alice"),
    row("auth: owned sender to local", "127.0.1.10", "alice@example.test", L, ACCEPT,
        CLEAN + ["--spf", "none"] + SAUTH, auth="alice"),
    row("auth: sender not owned", "127.0.1.10", "bob@example.test", X,
        ("mail", 553, "5.7.1 Sender address rejected: not owned by auth user"),
        CLEAN + ["--spf", "none"], auth="alice"),
    row("auth: foreign sender not owned", "127.0.1.10", "a@pass.test", L,
        ("mail", 553, "5.7.1 Sender address rejected: not owned by auth user"),
        CLEAN + ["--spf", "pass"], auth="alice"),
    row("auth: low listing, never greylisted", "127.0.1.3", "alice@example.test", X, ACCEPT,
        ["--dnsbl", "low.test=127.0.0.2", "--spf", "none"] + SAUTH, auth="alice"),
    row("greylist new", "127.0.21.1", "a@grey.test", L,
        ("rcpt", 451, "4.7.1 greylisted, please retry in 2 seconds"),
        CLEAN + ["--spf", "pass", "--greylist", "new"], gl="new"),
    row("greylist early", "127.0.22.1", "a@grey.test", L,
        ("rcpt", 451, None), CLEAN + ["--spf", "pass", "--greylist", "early"], gl="early"),
    row("greylist passed", "127.0.23.1", "a@grey.test", L, ACCEPT,
        CLEAN + ["--spf", "pass", "--greylist", "passed"] + SAUTH, gl="passed"),
    row("greylist allowlisted", "127.0.24.1", "a@grey.test", "<v@example.test>", ACCEPT,
        CLEAN + ["--spf", "pass", "--greylist", "allowlisted"] + SAUTH, gl="allowlisted"),
    row("greylist passed, then SPF is checked", "127.0.25.1", "a@grey.test", L, ACCEPT,
        CLEAN + ["--spf", "pass", "--greylist", "passed"] + SAUTH, gl="passed"),
    row("dmarc fail, p=reject", "127.0.1.10", "a@pass.test", L,
        ("data", 550, "5.7.1 DMARC reject for dmr.test"),
        CLEAN + ["--spf", "pass", "--dkim", "none", "--dmarc", "fail", "--dmarc-policy", "reject",
                 "--from-domain", "dmr.test"], hfrom="u@dmr.test"),
    row("dmarc fail, p=quarantine", "127.0.1.10", "a@pass.test", L,
        ("data", 451, "4.7.1 DMARC quarantine for dmq.test"),
        CLEAN + ["--spf", "pass", "--dkim", "none", "--dmarc", "fail", "--dmarc-policy", "quarantine",
                 "--from-domain", "dmq.test"], hfrom="u@dmq.test"),
    row("dmarc fail, p=none", "127.0.1.10", "a@pass.test", L, ACCEPT,
        CLEAN + ["--spf", "pass", "--dkim", "none", "--dmarc", "fail", "--dmarc-policy", "none"],
        hfrom="u@dmn.test"),
    row("dmarc pass (SPF aligned)", "127.0.1.10", "a@pass.test", L, ACCEPT,
        CLEAN + ["--spf", "pass", "--dkim", "none", "--dmarc", "pass", "--dmarc-policy", "reject"],
        hfrom="x@pass.test"),
    row("dmarc none (no record)", "127.0.1.10", "a@pass.test", L, ACCEPT,
        CLEAN + ["--spf", "pass"] + SAUTH, hfrom="x@nodmarc.test"),
    row("dkim none from unsigned.test", "127.0.1.10", "a@unsigned.test", L,
        ("data", 550, "5.7.1 unsigned mail from unsigned.test"), CLEAN + ["--spf", "pass"] + SAUTH),
    row("spf fail to a relay target", "127.0.1.10", "a@fail.test", X,
        ("rcpt", 554, "5.7.1 Relay access denied"), CLEAN + ["--spf", "fail"]),
]


def rev(ip):
    return ".".join(reversed(ip.split(".")))


def setup_dns(dns):
    for zone in (BL, LOW):
        dns.add("2.0.0.127." + zone, "A", "127.0.0.2", ttl=1)
    for ip, zones in LISTED.items():
        for zone, ans in zones.items():
            if ans == "SERVFAIL":
                dns.set_rcode(rev(ip) + "." + zone, rcode="SERVFAIL")
            else:
                dns.add(rev(ip) + "." + zone, "A", ans, ttl=1)
    for d, txt in SPF.items():
        dns.add(d, "TXT", txt)
    dns.set_rcode("temp.test", rcode="SERVFAIL")
    for d, txt in DMARC.items():
        dns.add("_dmarc." + d, "TXT", txt)


def message(hfrom, subject):
    return ("From: %s\r\nTo: u@example.test\r\nSubject: %s\r\nMessage-ID: <%s@moat.test>\r\n"
            "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\nhello\r\n"
            % (hfrom, subject, re.sub(r"\W", "", subject))).encode()


def subject_of(msg):
    x = re.search(rb"^Subject: (.*?)\r?$", msg, re.M)
    return x.group(1).decode() if x else None


def live(m, r, rcpt=None, subject=None):
    """One session; the outcome as explain gives it."""
    rcpt = rcpt or r["rcpt"]
    port = m.sub_port if r["auth"] else m.port     # AUTH: on the submission listener
    with Client(port, m.host, source=r["ip"], timeout=10) as c:
        if c.greeting.code != 220:
            return ("connect", c.greeting.code, c.greeting.text)
        c.ehlo()
        if r["auth"]:                               # Postfix asks Dovecot
            pw = harness.SASL_PASSWORDS[r["auth"]]
            a = c.cmd("AUTH PLAIN " + base64.b64encode(("\0%s\0%s" % (r["auth"], pw)).encode()).decode())
            assert a.code == 235, a
        for stage, cmd in (("mail", "MAIL FROM:<%s>" % r["mfrom"]), ("rcpt", "RCPT TO:%s" % rcpt)):
            x = c.cmd(cmd)
            if x.code != 250:
                c.cmd("QUIT")
                return (stage, x.code, x.text)
        x = c.cmd("DATA")
        assert x.code == 354, x
        c.send(dot_stuff(message(r["hfrom"] or "x@nodmarc.test", subject or r["name"])) + b".\r\n")
        x = c.reply()
        c.cmd("QUIT")
        return ACCEPT if x.code == 250 else ("data", x.code, x.text)


def explain(conf, r, workdir, extra=()):
    eml = workdir / "msg.eml"
    eml.write_bytes(message(r["hfrom"] or "x@nodmarc.test", r["name"]))
    argv = [harness.moatctl_path(), "explain", str(conf), "--ip", r["ip"], "--helo", "client.test",
            "--from", "<%s>" % r["mfrom"], "--rcpt", r["rcpt"], "--message", str(eml),
            "--no-network"] + r["assume"] + list(extra)
    if r["auth"]:
        argv += ["--auth", r["auth"]]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    out = p.stdout.decode(errors="replace")
    res = re.search(r"^result: (accept|(reject|tempfail) (\d+) (.*))$", out, re.M)
    assert res, out + p.stderr.decode(errors="replace")
    if res.group(1) == "accept":
        return ACCEPT, out
    stage = re.search(r"^verdict: refused at (\w+)$", out, re.M).group(1)
    return (stage, int(res.group(3)), res.group(4)), out


@pytest.mark.timeout(240)
def test_explain_equals_live(sasl_postfix, moatd_factory, redis_factory, dns, workdir):
    setup_dns(dns)
    rd = redis_factory()
    p25, p587 = harness.free_port(), harness.free_port()
    m = moatd_factory("127.0.0.1:%d" % sasl_postfix.port,
                      listen=["127.0.0.1:%d" % p25, "127.0.0.1:%d submission" % p587],
                      resolver=dns.resolver, dns_timeout="2s", spf="yes", upstream_timeout="20s",
                      dkim="yes", dmarc="rfc7489", auth_require_tls="no", redis=rd.address,
                      greylist_delay="2s", greylist_allow_after="1",
                      dnsbl=[BL + " weight 3 codes 127.0.0.2-127.0.0.11", LOW + " weight 1"],
                      list=LISTS, on=RULES)
    m.sub_port = p587
    # greylisting: the first attempts of the rows that need one
    for r in ROWS:
        if r["gl"] in ("passed", "allowlisted"):
            assert live(m, r, subject="first")[:2] == ("rcpt", 451), r["name"]
    time.sleep(2.3)
    for r in ROWS:
        if r["gl"] == "allowlisted":     # a retry that passes: the client is allowlisted
            assert live(m, r, subject="retry") == ACCEPT, r["name"]
    rows = 0
    for r in ROWS:
        if r["gl"] == "early":          # a first attempt; the row is the retry, too early
            assert live(m, r, subject="first")[:2] == ("rcpt", 451), r["name"]
        got_live = live(m, r)
        extra = []
        if r["gl"] == "early":
            n = re.search(r"retry in (\d+) seconds", got_live[2])
            assert n, got_live
            extra = ["--greylist-retry", n.group(1)]
        got_explain, out = explain(m.conf_path, r, workdir, extra)
        assert got_live == got_explain, (r["name"], got_live, got_explain, out, m.log()[-3000:])
        want = r["want"]
        assert got_live[:2] == want[:2] and (len(want) < 3 or want[2] is None or
                                             got_live[2] == want[2]), (r["name"], got_live)
        rows += 1
    assert rows == len(ROWS) >= 40
    # the real upstream has each accepted message once, and no refused one
    accepted = [r["name"] for r in ROWS if r["want"] == ACCEPT]
    retry = sum(1 for r in ROWS if r["gl"] == "allowlisted")
    harness.wait_for(lambda: len(sasl_postfix.messages()) >= len(accepted) + retry, 30, 0.2)
    box = sasl_postfix.messages()
    for r in ROWS:
        n = sum(1 for x in box if subject_of(x) == r["name"])
        assert n == (1 if r["want"] == ACCEPT else 0), (r["name"], n)
    assert sum(1 for x in box if subject_of(x) == "retry") == retry
    assert not any(subject_of(x) == "first" for x in box)
    assert len(box) == len(accepted) + retry
    assert re.search(r"sasl_method=PLAIN, sasl_username=alice", sasl_postfix.log())
    # the greylist states were the ones assumed
    log = m.log()
    for state in ("greylisted reason=new", "greylisted reason=early", r"pass reason=\w+",
                  "allowlisted reason=allowlisted"):
        assert re.search("check greylist=" + state, log), state


# The greylist answered in the same loop turn (moatd's embedded store; with
# Redis, a pass from greylist-cache): a later rcpt rule that reads a check
# still in flight (SPF, started at MAIL) must wait for it, live as in
# explain. It did not: SPF counted as a temperror, and an SPF fail passed.
GL_RULES = [
    'rcpt sender-domain in grey greylist',
    'rcpt spf is fail reject 550 5.7.23 "SPF fail for $sender-domain"',
    'rcpt dnsbl-score >= 1 reject 550 5.7.1 "listed in $dnsbl"',
]
GL_ROWS = [
    row("greylist at once: passed, then SPF fail", "127.0.41.1", "a@grey.test", L,
        ("rcpt", 550, "5.7.23 SPF fail for grey.test"),
        CLEAN + ["--spf", "fail", "--greylist", "passed"] + SAUTH, gl="passed"),
    row("greylist at once: passed, then listed", "127.0.1.2", "a@grey2.test", L,
        ("rcpt", 550, "5.7.1 listed in bl.test"),
        ["--dnsbl", "bl.test=127.0.0.2", "--spf", "pass", "--greylist", "passed"] + SAUTH, gl="passed"),
    row("greylist at once: passed, clean", "127.0.41.3", "a@grey2.test", L, ACCEPT,
        CLEAN + ["--spf", "pass", "--greylist", "passed"] + SAUTH, gl="passed"),
]


@pytest.mark.parametrize("store", ["embedded", "redis-cache"])
def test_explain_equals_live_greylist_at_once(store, sasl_postfix, moatd_factory, redis_factory,
                                              dns, workdir):
    """The retry that the greylist passes at once (the embedded store; or,
    with Redis, a pass greylist-cache remembers: the third attempt), while
    the SPF lookup started at MAIL is still out (its TXT answer is slow and
    never cached): the rule after the greylist rule waits for SPF and
    refuses the SPF fail, as explain says; a listing and a clean retry
    agree too."""
    dns.add("grey.test", "TXT", "v=spf1 -all", ttl=0)
    dns.set_delay("grey.test", 0.8)
    dns.add("grey2.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns.add(rev("127.0.1.2") + "." + BL, "A", "127.0.0.2", ttl=1)
    dns.add("2.0.0.127." + BL, "A", "127.0.0.2", ttl=1)      # the zone's test entry
    extra = {}
    if store == "redis-cache":
        extra = dict(redis=redis_factory().address, greylist_cache="30s", workers="1")
    m = moatd_factory("127.0.0.1:%d" % sasl_postfix.port, resolver=dns.resolver,
                      dns_timeout="2s", spf="yes", dkim="yes", dmarc="rfc7489",
                      greylist_delay="1s", dnsbl=[BL + " weight 3"],
                      list=["grey domain { grey.test grey2.test }"], on=GL_RULES, **extra)
    for r in GL_ROWS:
        assert live(m, r, subject="first")[:2] == ("rcpt", 451), r["name"]
    time.sleep(1.3)
    if store == "redis-cache":          # Redis passes the retry; the cache keeps it
        for r in GL_ROWS:
            assert live(m, r, subject="second " + store) == r["want"], r["name"]
    for r in GL_ROWS:
        got_live = live(m, r, subject=r["name"] + " " + store)
        got_explain, out = explain(m.conf_path, r, workdir)
        assert got_live == got_explain == r["want"], (r["name"], got_live, got_explain, out,
                                                      m.log()[-3000:])
    log = m.log()
    assert "not awaited" not in log
    assert re.search(r"verdict=reject .*from=<a@grey\.test>.*greylist=passed", log), log[-3000:]
    if store == "redis-cache":
        assert len(re.findall(r"check greylist=pass .*from=memory", log)) == len(GL_ROWS), log[-3000:]
    assert sasl_postfix.wait_messages_with("greylist at once: passed, clean " + store)
    assert not sasl_postfix.messages_with("greylist at once: passed, then")
