"""DMARC evaluation through `moatctl dmarc`, _dmarc records served by the
loopback DNS server (dnsserver.py) and fetched by moat's own resolver.

1. The tables of ../shared/conformance/dmarc (libopendmarc 1.4.2's own
   test cases): record parsing, identifier alignment, From-domain
   extraction. Where moat deliberately differs from libopendmarc the row
   is listed in a DIVERGE map with the reason, and the test asserts
   moat's answer.
2. Scenarios of our own: aligned and unaligned SPF/DKIM, strict and
   relaxed, sp and np, missing record, two records, bad tags, DNS
   failure, pct sampling, several authors, a domain with a comment in
   it, and the DMARCbis tree walk (psd=y, the 8-query bound).

The public suffix list test vectors (test_psl.txt) run in the C unit test
(tests/unit/test_dmarc.c), all 78; the 52 with an organizational domain
also run here, from a From field through moatctl (U-labels included).
MOATCTL selects the moatctl binary.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from dnsserver import DnsServer  # noqa: E402

import harness  # noqa: E402

CONF = Path(os.environ.get("MOAT_CONFORMANCE",
                           str(harness.REPO.parent / "shared" / "conformance"))) / "dmarc"
MOATCTL = os.environ.get("MOATCTL") or str(harness.REPO / "build-asan" / "moatctl")

FIELD = re.compile(r'(\S+?)=("[^"]*"|\S+)')


def dmarc(dns, froms, spf=None, dkim=(), mode="7489", roll=None):
    args = [MOATCTL, "dmarc", "--resolver", dns.address, "--timeout", "2000", "--mode", mode]
    for f in froms:
        args += ["--from-header", f]
    if spf:
        args += ["--spf", spf]
    for d in dkim:
        args += ["--dkim", d]
    if roll is not None:
        args += ["--pct-roll", str(roll)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, "moatctl dmarc failed (%d): %s" % (p.returncode, p.stderr)
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    line = p.stdout.splitlines()[0]
    assert line.startswith("dmarc "), line
    return {k: v.strip('"') for k, v in FIELD.findall(line[6:])}


def read_tsv(name):
    with open(CONF / name, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [r for r in rows[1:] if r and r[0]]


@pytest.fixture(scope="module")
def server():
    if not os.access(MOATCTL, os.X_OK):
        pytest.fail("moatctl missing: %s (make asan, or set MOATCTL)" % MOATCTL)
    srv = DnsServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def dns(server):
    server.reset()
    return server


# ---------------------------------------------------------------------------
# 1. libopendmarc's tables

PARSE_MAP = {"DMARC_PARSE_OKAY": "pass", "DMARC_PARSE_ERROR_EMPTY": "none",
             "DMARC_PARSE_ERROR_BAD_VERSION": "none", "DMARC_PARSE_ERROR_BAD_VALUE": "permerror",
             "DMARC_PARSE_ERROR_NO_REQUIRED_P": "permerror"}
# Each row judged against the RFC text (tests/unit/test_dmarc.c has the
# full verdicts); where moat's answer is not libopendmarc's, the reason:
PARSE_DIVERGE = {
    "5": ("permerror", "p=n: RFC 7489 has no abbreviated policy names; libopendmarc accepts it"),
    "10": ("pass", "RFC 7489 6.3: a bad adkim keeps its default (r); libopendmarc voids the record"),
    "11": ("pass", "RFC 7489 6.3: a bad aspf keeps its default (r); libopendmarc voids the record"),
    "12": ("pass", "RFC 7489 6.3: a bad rf keeps its default (afrf); libopendmarc voids the record"),
    "13": ("pass", "RFC 7489 6.3: a bad ri keeps its default; libopendmarc voids the record"),
    "14": ("pass", "RFC 7489 6.3: pct=500 keeps the default 100; libopendmarc voids the record"),
    "19": ("pass", "RFC 7489 6.3: a bad rf keeps its default (afrf); libopendmarc voids the record"),
}
# RFC 9989 mode: a missing or bad p= is p=none and a bad sp= is ignored, so
# these rows are DMARC records there (the SPF identity aligns: pass)
PARSE_BIS = {"5": "pass", "8": "pass", "9": "pass", "15": "pass"}


@pytest.mark.parametrize("mode", ["7489", "bis"])
@pytest.mark.parametrize("row", read_tsv("opendmarc-record-parse.tsv"), ids=lambda r: "case" + r[0])
def test_opendmarc_record_parse(dns, row, mode):
    case, record, status = row[0], row[1], row[2]
    domain = "case%s.example" % case
    dns.add("_dmarc." + domain, "TXT", record)
    want = PARSE_DIVERGE.get(case, (PARSE_MAP[status],))[0]
    if mode == "bis":
        want = PARSE_BIS.get(case, want)
    r = dmarc(dns, ["a@" + domain], spf="pass:" + domain, mode=mode)
    assert r["result"] == want, (record, r)


ALIGN_DIVERGE = {
    "5": "'.mac.com.' is not a host name: moat does not tidy it into one, so no alignment",
    "6": "'....mac.com....' likewise",
}


@pytest.mark.parametrize("row", read_tsv("opendmarc-alignment.tsv"), ids=lambda r: "case" + r[0])
def test_opendmarc_alignment(dns, row):
    case, a, b, mode, expected = row
    mode_tag = "s" if mode.endswith("STRICT") else "r"
    valid = re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", a) is not None
    if valid:
        dns.add("_dmarc." + a, "TXT", "v=DMARC1; p=reject; adkim=" + mode_tag)
    r = dmarc(dns, ["x@" + a], dkim=["pass:" + b])
    if case in ALIGN_DIVERGE or not valid:
        assert r["result"] == "permerror" and r["dkim-aligned"] == "no"
        return
    want = "yes" if expected == "0" else "no"
    assert r["dkim-aligned"] == want, r
    assert r["result"] == ("pass" if want == "yes" else "fail")


FROM_SEVERAL = {"7", "8"}    # two mailboxes: DMARC fails (RFC 7489 6.6.1), not "the first"


@pytest.mark.parametrize("row", read_tsv("opendmarc-from-domain.tsv"), ids=lambda r: "case" + r[0])
def test_opendmarc_from_domain(dns, row):
    case, value, domain = row
    dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=quarantine")
    r = dmarc(dns, [value], spf="pass:" + domain)
    assert r["domain"] == domain
    if case in FROM_SEVERAL:
        assert r["result"] == "fail" and r["reason"] == "several authors"
    else:
        assert r["result"] == "pass" and r["spf-aligned"] == "yes"


# ---------------------------------------------------------------------------
# 2. our scenarios

REJ = "v=DMARC1; p=reject"

# (id, records {name: [TXT...]}, extra A names, From values, spf, dkim, mode, roll,
#  expected subset of fields)
SCENARIOS = [
    ("spf-relaxed-aligned", {"example.com": [REJ]}, [], ["a@mail.example.com"],
     "pass:bounce.example.com", [], "7489", None,
     {"result": "pass", "policy": "none", "spf-aligned": "yes", "policy-domain": "example.com"}),
    ("spf-unaligned", {"example.com": [REJ]}, [], ["a@example.com"], "pass:other.net", [],
     "7489", None, {"result": "fail", "policy": "reject", "published": "reject"}),
    ("spf-fail-same-domain", {"example.com": [REJ]}, [], ["a@example.com"], "fail:example.com",
     [], "7489", None, {"result": "fail", "spf-aligned": "no"}),
    ("spf-strict", {"example.com": [REJ + "; aspf=s"]}, [], ["a@example.com"],
     "pass:bounce.example.com", [], "7489", None, {"result": "fail", "spf-aligned": "no"}),
    ("dkim-relaxed", {"example.com": [REJ]}, [], ["a@example.com"], None,
     ["pass:news.example.com"], "7489", None, {"result": "pass", "dkim-aligned": "yes"}),
    ("dkim-strict", {"example.com": [REJ + "; adkim=s"]}, [], ["a@example.com"], None,
     ["pass:news.example.com"], "7489", None, {"result": "fail", "dkim-aligned": "no"}),
    ("dkim-not-pass", {"example.com": [REJ]}, [], ["a@example.com"], None,
     ["fail:example.com"], "7489", None, {"result": "fail"}),
    ("dkim-second-sig-aligns", {"example.com": [REJ]}, [], ["a@example.com"], None,
     ["pass:esp.test", "pass:example.com"], "7489", None, {"result": "pass"}),
    ("psl-co-uk", {"shop.co.uk": [REJ]}, [], ["a@mail.shop.co.uk"], "pass:other.co.uk", [],
     "7489", None, {"result": "fail", "org-domain": "shop.co.uk"}),
    ("subdomain-sp", {"example.com": [REJ + "; sp=quarantine"]}, ["sub.example.com"],
     ["a@sub.example.com"], None, [], "7489", None,
     {"result": "fail", "policy": "quarantine", "published": "quarantine",
      "policy-domain": "example.com"}),
    ("own-record-beats-sp", {"example.com": [REJ + "; sp=none"], "sub.example.com": [REJ]},
     [], ["a@sub.example.com"], None, [], "7489", None,
     {"result": "fail", "policy": "reject", "policy-domain": "sub.example.com"}),
    ("np-nonexistent", {"example.com": ["v=DMARC1; p=none; sp=none; np=reject"]}, [],
     ["a@ghost.example.com"], None, [], "7489", None, {"result": "fail", "policy": "reject"}),
    ("np-existing", {"example.com": ["v=DMARC1; p=none; sp=none; np=reject"]},
     ["real.example.com"], ["a@real.example.com"], None, [], "7489", None,
     {"result": "fail", "policy": "none"}),
    ("missing-record", {}, [], ["a@example.com"], "pass:example.com", [], "7489", None,
     {"result": "none", "policy": "none"}),
    ("two-records", {"example.com": [REJ, "v=DMARC1; p=none"]}, [], ["a@example.com"], None, [],
     "7489", None, {"result": "none", "reason": "several DMARC records"}),
    ("other-txt-ignored", {"example.com": ["hello world", REJ]}, [], ["a@example.com"], None, [],
     "7489", None, {"result": "fail", "policy": "reject"}),
    ("v-not-first", {"example.com": ["p=reject; v=DMARC1"]}, [], ["a@example.com"], None, [],
     "7489", None, {"result": "none"}),
    # RFC 7489 6.3: a bad value keeps the record, the tag its default
    ("bad-adkim", {"example.com": [REJ + "; adkim=x"]}, [], ["a@example.com"], None, [], "7489",
     None, {"result": "fail", "policy": "reject"}),
    ("bad-adkim-default-relaxed", {"example.com": [REJ + "; adkim=x"]}, [], ["a@example.com"],
     None, ["pass:news.example.com"], "7489", None, {"result": "pass", "dkim-aligned": "yes"}),
    ("bad-p-with-rua", {"example.com": ["v=DMARC1; p=bogus; rua=mailto:d@example.com"]}, [],
     ["a@example.com"], None, [], "7489", None, {"result": "fail", "policy": "none"}),
    ("bad-pct", {"example.com": [REJ + "; pct=1000"]}, [], ["a@example.com"], None, [], "7489",
     99, {"result": "fail", "policy": "reject"}),
    ("bad-p-no-rua", {"example.com": ["v=DMARC1; p=bogus"]}, [], ["a@example.com"], None, [],
     "7489", None, {"result": "permerror", "policy": "none"}),
    ("bis-no-p", {"example.com": ["v=DMARC1; sp=reject"]}, ["sub.example.com"],
     ["a@example.com"], None, [], "bis", None, {"result": "fail", "policy": "none"}),
    ("bis-bad-sp-ignored", {"example.com": [REJ + "; sp=bogus"]}, ["sub.example.com"],
     ["a@sub.example.com"], None, [], "bis", None, {"result": "fail", "policy": "reject"}),
    ("unicode-from", {"xn--bcher-kva.test": [REJ]}, [], ["a@b\u00fccher.test"], None,
     ["pass:xn--bcher-kva.test"], "7489", None,
     {"result": "pass", "domain": "xn--bcher-kva.test", "dkim-aligned": "yes"}),
    ("unicode-dkim-d", {"xn--bcher-kva.test": [REJ]}, [], ["a@xn--bcher-kva.test"], None,
     ["pass:mail.b\u00fccher.test"], "7489", None, {"result": "pass", "dkim-aligned": "yes"}),
    ("invalid-idn-from", {}, [], ["a@xn--zz.test"], None, [], "7489", None,
     {"result": "permerror", "reason": "From domain is not a valid IDN"}),
    ("unknown-tag", {"example.com": [REJ + "; foo=bar; x-y=z"]}, [], ["a@example.com"], None, [],
     "7489", None, {"result": "fail", "policy": "reject"}),
    ("many-rua", {"example.com": [REJ + "; rua=" + ",".join("mailto:r%d@x.test" % i
                                                               for i in range(100))]},
     [], ["a@example.com"], None, [], "7489", None, {"result": "fail", "policy": "reject"}),
    # 1,000 URIs make a 17 KB record: past DMARC_RECORD_MAX (8 KiB), refused, never parsed whole
    ("huge-record", {"example.com": [REJ + "; rua=" + ",".join("mailto:r%d@x.test" % i
                                                                  for i in range(1000))]},
     [], ["a@example.com"], None, [], "7489", None,
     {"result": "permerror", "policy": "none", "reason": "record too long"}),
    ("pct-sampled-in", {"example.com": [REJ + "; pct=50"]}, [], ["a@example.com"], None, [],
     "7489", 10, {"result": "fail", "policy": "reject"}),
    ("pct-sampled-out", {"example.com": [REJ + "; pct=50"]}, [], ["a@example.com"], None, [],
     "7489", 70, {"result": "fail", "policy": "quarantine", "sampled": "yes"}),
    ("several-from-fields", {"victim.test": [REJ], "attacker.test": ["v=DMARC1; p=none"]}, [],
     ["a@attacker.test", "b@victim.test"], "pass:attacker.test", ["pass:attacker.test"], "7489",
     None, {"result": "fail", "policy": "reject", "reason": "several authors"}),
    ("two-mailboxes", {"victim.test": [REJ], "attacker.test": ["v=DMARC1; p=none"]}, [],
     ["a@victim.test, b@attacker.test"], None, ["pass:attacker.test"], "7489", None,
     {"result": "fail", "policy": "reject", "reason": "several authors"}),
    ("no-from-domain", {}, [], ["undisclosed-recipients:;"], None, [], "7489", None,
     {"result": "permerror", "policy": "none"}),
    ("comment-domain-hdr05", {"example.com": [REJ]}, [], ["a@example.com"],
     "pass:example.com(.evil.test", ["pass:example.com(.evil.test"], "7489", None,
     {"result": "fail", "spf-aligned": "no", "dkim-aligned": "no"}),
    ("bis-relaxed-by-walk", {"example.com": [REJ]}, [], ["a@mail.example.com"], None,
     ["pass:news.example.com"], "bis", None,
     {"result": "pass", "org-domain": "example.com", "policy-domain": "example.com"}),
    ("bis-psd", {"psd.test": ["v=DMARC1; p=reject; psd=y"]}, [], ["a@foo.bar.psd.test"], None,
     ["pass:baz.psd.test"], "bis", None,
     {"result": "fail", "org-domain": "bar.psd.test", "policy": "reject"}),
    # the same facts under RFC 7489: psd.test is not on the PSL, so it is the
    # organizational domain of both names, and they align
    ("7489-same-psd-case", {"psd.test": ["v=DMARC1; p=reject; psd=y"]}, [],
     ["a@foo.bar.psd.test"], None, ["pass:baz.psd.test"], "7489", None,
     {"result": "pass", "org-domain": "psd.test", "dkim-aligned": "yes"}),
    ("bis-testing-t", {"example.com": [REJ + "; t=y"]}, [], ["a@example.com"], None, [], "bis",
     None, {"result": "fail", "policy": "quarantine", "sampled": "yes"}),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s[0])
def test_scenario(dns, sc):
    _, records, a_names, froms, spf, dk, mode, roll, want = sc
    for name, txts in records.items():
        for t in txts:
            dns.add("_dmarc." + name, "TXT", t)
    for n in a_names:
        dns.add(n, "A", "192.0.2.1")
    r = dmarc(dns, froms, spf=spf, dkim=dk, mode=mode, roll=roll)
    for k, v in want.items():
        assert r.get(k) == v, (k, r)


def test_temperror_never_rejects(dns):
    dns.add("_dmarc.example.com", "TXT", REJ)
    dns.set_rcode("_dmarc.example.com", "TXT", "SERVFAIL")
    r = dmarc(dns, ["a@example.com"])
    assert r["result"] == "temperror" and r["policy"] == "none"


def test_temperror_bis(dns):
    dns.add("_dmarc.example.com", "TXT", REJ)
    dns.set_rcode("_dmarc.mail.example.com", "TXT", "SERVFAIL")
    r = dmarc(dns, ["a@mail.example.com"], mode="bis")
    assert r["result"] == "temperror" and r["policy"] == "none"


def test_bis_walk_is_bounded(dns):
    deep = ".".join("l%d" % i for i in range(12)) + ".example.com"
    dns.add("_dmarc.example.com", "TXT", REJ)
    dns.clear_log()
    r = dmarc(dns, ["a@" + deep], mode="bis")
    assert r["result"] == "fail" and r["policy"] == "reject"
    walked = [q[0] for q in dns.queries() if q[0].startswith("_dmarc.")]
    assert len(set(walked)) <= 8, walked
    # the jump: after the full name, seven labels
    assert "_dmarc." + ".".join(deep.split(".")[-7:]) in walked


def test_authres_rendering(dns):
    dns.add("_dmarc.example.com", "TXT", REJ)
    args = [MOATCTL, "dmarc", "--resolver", dns.address, "--from-header", "a@example.com",
            "--spf", "pass:other.net", "--authres", "mx.moat.test"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    ar = out[out.index("Authentication-Results:"):]
    assert ar == ("Authentication-Results: mx.moat.test;\n\tdmarc=fail (p=reject dis=reject)\n"
                  "\t header.from=example.com\n\t policy.dmarc=reject\n"), ar


def psl_checks():
    out = []
    with open(CONF / "test_psl.txt", encoding="utf-8") as f:
        for line in f:
            m = re.match(r"checkPublicSuffix\('([^']*)', '([^']*)'\);", line)
            if m:
                out.append((m.group(1), m.group(2)))
    return out


def test_psl_vectors_through_from(dns):
    """Every check of test_psl.txt with an organizational domain, the name
    given as a From domain (U-labels as SMTPUTF8 mail carries them): the
    organizational domain moat reports is the expected one in A-labels."""
    checks = psl_checks()
    assert len(checks) == 52 and sum(1 for n, _ in checks if not n.isascii()) == 7
    for name, want in checks:
        r = dmarc(dns, ["a@" + name])
        assert r["result"] == "none", (name, r)
        assert r["org-domain"] == want.encode("idna").decode().lower(), (name, r)
