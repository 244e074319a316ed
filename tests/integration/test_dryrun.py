"""Issue 16: dry run. The same policy in two moatd, one enforcing and one
with "policy-mode monitor": every message the enforcing one refuses (a
DNSBL listing, an SPF fail, a greylisted triplet, a relay attempt) passes
the dry-run one, which logs a would= line naming the rule and the reply.
Greylisting in dry run still records the triplet (the retry after the
delay is a pass). An include with "monitor" dry-runs its own rules beside
enforced ones."""

import re
import time

import pytest

import harness
from harness import Client, message, smtp_transaction

BL = "bl.test"
LISTS = ["local domain { example.org }", "trusted net { 127.0.0.200 }"]
RULES = [
    'connect dnsbl-score >= 3 reject 554 5.7.1 "client [$ip] listed by $dnsbl"',
    'rcpt not rcpt-domain in local and not client-ip in trusted '
    'reject 554 5.7.1 "Relay access denied"',
    'rcpt spf is fail reject 550 5.7.23 "SPF check failed for $sender-domain"',
    'rcpt not client-ip in trusted greylist',
]

# name, client address, MAIL FROM, RCPT TO, the enforcing reply (stage, code),
# the would= line (rule index in RULES, kind, reply)
CASES = [
    ("dnsbl", "127.0.0.21", "a@none.test", "u@example.org", ("connect", 554),
     (0, "reject", "554 5.7.1 client [127.0.0.21] listed by bl.test")),
    ("spf-fail", "127.0.0.22", "a@spffail.test", "u@example.org", ("rcpt", 550),
     (2, "reject", "550 5.7.23 SPF check failed for spffail.test")),
    ("greylist", "127.0.0.23", "a@none.test", "u@example.org", ("rcpt", 451),
     (3, "tempfail", "451 4.7.1 greylisted, please retry in")),
    ("relay", "127.0.0.24", "a@none.test", "x@elsewhere.test", ("rcpt", 554),
     (1, "reject", "554 5.7.1 Relay access denied")),
]


def setup_dns(dns):
    dns.add("2.0.0.127." + BL, "A", "127.0.0.2", ttl=1)          # test point
    dns.add("21.0.0.127." + BL, "A", "127.0.0.2", ttl=1)
    dns.add("spffail.test", "TXT", "v=spf1 -all")


def start(moatd_factory, fake, dns, **kw):
    return moatd_factory(fake.address, resolver=dns.resolver, dns_timeout="2s", spf="yes",
                         greylist_delay="2s", dnsbl=[BL + " weight 5"], list=LISTS,
                         on=RULES, **kw)


def session(m, ip, mfrom, rcpt, subject):
    """The replies: greeting first, then each command until one fails."""
    with Client(m.port, m.host, source=ip, timeout=10) as c:
        if c.greeting.code != 220:
            return ("connect", c.greeting.code)
        c.ehlo()
        rs = smtp_transaction(c, message(subject), mfrom=mfrom, rcpts=(rcpt,))
        c.cmd("QUIT")
    if rs[0].code != 250:
        return ("mail", rs[0].code)
    if rs[1].code != 250:
        return ("rcpt", rs[1].code)
    return ("data", rs[-1].code)


def test_dry_run_passes_what_enforcing_refuses(fake, moatd_factory, dns):
    setup_dns(dns)
    enf = start(moatd_factory, fake, dns)
    dry = start(moatd_factory, fake, dns, policy_mode="monitor")
    rule_line = {}
    for i, r in enumerate(RULES):
        conf = enf.conf_path.read_text().splitlines()
        rule_line[i] = next(n for n, l in enumerate(conf, 1) if l.startswith("on") and r in l)
    for name, ip, mfrom, rcpt, refused, would in CASES:
        got = session(enf, ip, mfrom, rcpt, "enforce " + name)
        assert got == refused, (name, got, enf.log()[-2000:])
        before = len(fake.completed())
        at = len(dry.log())
        got = session(dry, ip, mfrom, rcpt, "dry " + name)
        assert got == ("data", 250), (name, got, dry.log()[-2000:])
        done = fake.wait_completed(before + 1)
        assert done[-1].rcpts == [("<%s>" % rcpt).encode()], name
        idx, kind, reply = would
        pat = (r'policy stage=\w+ rule=\S+moat\.conf:%d mode=dry-run would=%s reply="%s'
               % (rule_line[idx], kind, re.escape(reply)))
        assert harness.wait_for(lambda: re.search(pat, dry.log()[at:]), 5), \
            (name, pat, dry.log()[at:])
    # the dry run recorded the greylisted triplet: after the delay, a pass
    time.sleep(2.3)
    at = len(dry.log())
    got = session(dry, "127.0.0.23", "a@none.test", "u@example.org", "dry retry")
    assert got == ("data", 250)
    assert dry.wait_log(r"check greylist=pass reason=retried"), dry.log()[at:]
    assert "would=" not in dry.log()[at:], dry.log()[at:]
    # the enforcing one refused with no would= line at all
    assert "would=" not in enf.log()


def test_include_monitor_beside_enforced(fake, moatd_factory, dns, workdir):
    setup_dns(dns)
    inc = workdir / "new-rules.conf"
    inc.write_text('list newbad address { u@example.org }\n'
                   'on rcpt rcpt in newbad reject 550 5.7.1 "new rule: $rcpt"\n')
    m = moatd_factory(fake.address, list=LISTS, on=[RULES[1]],
                      include='"%s" monitor' % inc)
    got = session(m, "127.0.0.30", "a@none.test", "u@example.org", "include monitor")
    assert got == ("data", 250), m.log()[-2000:]
    assert m.wait_log(r'rule=\S*new-rules.conf:2 mode=dry-run would=reject '
                      r'reply="550 5.7.1 new rule: u@example.org"'), m.log()[-2000:]
    # the enforced rule beside it still refuses
    got = session(m, "127.0.0.30", "a@none.test", "x@elsewhere.test", "relay")
    assert got == ("rcpt", 554)
