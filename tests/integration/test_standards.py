"""Standards through moatd, with the loopback DNS server (issue 14):

- DMARC records with a bad optional tag value or an unknown tag keep
  their policy (RFC 7489 6.3: the tag keeps its default), so a spoof is
  refused exactly like one against plain p=reject; in DMARCbis mode
  (RFC 9989) a record without p= gives policy none.
- Internationalised domains (RFC 8616): a From domain in U-labels
  (SMTPUTF8 mail) is looked up and aligned in A-labels; an invalid IDN is
  a permerror, never a crash or a lookup of its raw bytes.
"""

import re

import pytest

from harness import message, smtp_transaction

RULES = [
    'rcpt spf is fail reject 550 5.7.23 "SPF check failed for $sender-domain"',
    'data dmarc is fail and dmarc-policy is reject reject 550 5.7.1 '
    '"DMARC policy of $from-domain says reject"',
    'data dmarc is fail and dmarc-policy is quarantine tag quarantine',
]


def moatd(moatd_factory, fake, dns, **kw):
    conf = dict(resolver=dns.resolver, spf="yes", dkim="yes", dmarc="rfc7489", on=RULES)
    conf.update(kw)
    return moatd_factory(fake.address, **conf)


def ar_field(content):
    h = content.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.match(r"Authentication-Results: (.*?)\r\n(?![ \t])", h, re.S)
    assert m, h[:500]
    return re.sub(r"\r\n[ \t]+", " ", m.group(1))


# the bad values of issue 14, each on its own domain, and plain p=reject
BAD_TAGS = [("plain", ""), ("adkim", "adkim=bob"), ("aspf", "aspf=bob"),
            ("pct", "pct=500"), ("fo", "fo=2"), ("rf", "rf=bob"), ("ri", "ri=bob"),
            ("unknown", "foo=bar; x-y=z")]


def test_bad_tags_refused_like_plain_reject(fake, moatd_factory, dns):
    for name, tag in BAD_TAGS:
        dns.add("_dmarc.%s.test" % name, "TXT", "v=DMARC1; p=reject" + ("; " + tag if tag else ""))
    m = moatd(moatd_factory, fake, dns)
    replies = {}
    with m.client() as c:
        c.ehlo()
        for name, _ in BAD_TAGS:
            rs = smtp_transaction(c, message("spoof " + name, mfrom="boss@%s.test" % name),
                                  mfrom="bounce@other.test")
            replies[name] = (rs[-1].code, rs[-1].text.replace(name + ".test", "DOMAIN"))
        c.cmd("QUIT")
    assert replies["plain"] == (550, "5.7.1 DMARC policy of DOMAIN says reject"), replies
    for name, _ in BAD_TAGS:
        assert replies[name] == replies["plain"], (name, replies)
    assert fake.completed() == []


# records that still relay the message, and what Authentication-Results
# (and the log, where given) then says: (id, records, dmarc mode, From
# header, MAIL FROM, A-R parts, log pattern)
RELAYED = [
    # the kept record still passes what aligns (so the test above is about
    # the policy, not about a broken record refusing everything)
    ("bad-tag-aligned", [("_dmarc.adkim.test", "v=DMARC1; p=reject; adkim=bob"),
                         ("adkim.test", "v=spf1 ip4:127.0.0.0/8 -all")],
     "rfc7489", "boss@adkim.test", "b@adkim.test",
     ["dmarc=pass (p=reject dis=none) header.from=adkim.test"], None),
] + [
    # DMARCbis: a record without p= (or with a bad one) gives policy none
    ("dmarcbis-no-p-%d" % i, [("_dmarc.nop.test", record)], "dmarcbis", "boss@nop.test",
     "bounce@other.test", ["dmarc=fail (p=none dis=none) header.from=nop.test"],
     r"check dmarc=fail policy=none from-domain=nop\.test")
    for i, record in enumerate(["v=DMARC1", "v=DMARC1; adkim=s; rua=mailto:d@nop.test",
                                "v=DMARC1; p=bogus"])
] + [
    # the same record in RFC 7489 mode: no p and no rua, no DMARC (6.6.3)
    ("rfc7489-no-p-void", [("_dmarc.nop.test", "v=DMARC1; adkim=s")], "rfc7489",
     "boss@nop.test", "bounce@other.test", ["dmarc=permerror", "header.from=nop.test"], None),
]


@pytest.mark.parametrize("records,mode,frm,mfrom,ar_parts,log_re",
                         [r[1:] for r in RELAYED], ids=[r[0] for r in RELAYED])
def test_record_relays(fake, moatd_factory, dns, records, mode, frm, mfrom, ar_parts, log_re):
    for name, text in records:
        dns.add(name, "TXT", text)
    m = moatd(moatd_factory, fake, dns, dmarc=mode)
    with m.client() as c:
        c.ehlo()
        rs = smtp_transaction(c, message("relayed", mfrom=frm), mfrom=mfrom)
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    ar = ar_field(fake.wait_completed(1)[0].content)
    for part in ar_parts:
        assert part in ar, (part, ar)
    if log_re is not None:
        assert re.search(log_re, m.log())


# bücher.test, and the A-label libidn2 gives it
ULABEL = "b\u00fccher.test"
ALABEL = "xn--bcher-kva.test"


def utf8_transaction(c, frm_header, mfrom, subject):
    msg = ("From: <%s>\r\nTo: <user@example.org>\r\nSubject: %s\r\n"
           "Message-ID: <%s@test.invalid>\r\n\r\nhello\r\n" % (frm_header, subject, subject)
           ).encode("utf-8")
    out = [c.cmd(("MAIL FROM:<%s> SMTPUTF8" % mfrom).encode("utf-8"))]
    assert out[0].code == 250, out
    out.append(c.cmd("RCPT TO:<user@example.org>"))
    out.append(c.cmd("DATA"))
    assert out[-1].code == 354, out
    c.send(msg + b".\r\n")
    out.append(c.reply())
    return out


def test_smtputf8_unicode_from_domain_gets_dmarc(fake, moatd_factory, dns):
    dns.add("_dmarc." + ALABEL, "TXT", "v=DMARC1; p=reject")
    dns.add(ALABEL, "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    m = moatd(moatd_factory, fake, dns)
    with m.client() as c:
        c.ehlo()
        # a spoof: the From domain's policy is found through its A-label
        rs = utf8_transaction(c, "boss@" + ULABEL, "bounce@other.test", "spoof")
        assert (rs[-1].code, rs[-1].text) == (
            550, "5.7.1 DMARC policy of %s says reject" % ALABEL), rs
        # aligned: MAIL FROM in U-labels passes SPF in A-labels, and aligns
        rs = utf8_transaction(c, "boss@" + ULABEL, "b@" + ULABEL, "aligned")
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    ar = ar_field(fake.wait_completed(1)[0].content)
    assert "spf=pass" in ar and "dmarc=pass (p=reject dis=none) header.from=%s" % ALABEL in ar, ar
    # the A-label form in the From field works the same way
    assert re.search(r"check dmarc=pass policy=none from-domain=%s" % re.escape(ALABEL), m.log())


def test_invalid_idn_from_domain_is_permerror(fake, moatd_factory, dns):
    m = moatd(moatd_factory, fake, dns)
    with m.client() as c:
        c.ehlo()
        # bad Punycode, then a label with a byte that is not UTF-8
        rs = utf8_transaction(c, "boss@xn--zz.test", "bounce@other.test", "badpuny")
        assert rs[-1].code == 250, rs
        c.send(b"MAIL FROM:<bounce@other.test> SMTPUTF8\r\n")
        assert c.reply().code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"From: <boss@b\xc3\xbc\xe2\x80\x8dcher.test>\r\nSubject: zwj\r\n\r\nhi\r\n.\r\n")
        r = c.reply()
        assert r.code == 250, r
        c.cmd("QUIT")
    done = fake.wait_completed(2)
    for d in done:
        ar = ar_field(d.content)
        assert "dmarc=permerror" in ar, ar
    assert "From domain is not a valid IDN" in m.log()
    # neither name was asked for, in any spelling
    asked = [q[0] for q in dns.queries()]
    assert not any("xn--zz" in str(n) or "cher" in str(n) for n in asked), asked


# ---------------------------------------------------------------------------
# $spf-explanation (RFC 7208 6.2, 8.4)

EXP_RULES = ['rcpt spf is fail reject 550 5.7.23 "SPF [$spf-explanation]"']


def exp_zones(dns):
    dns.add("exp.test", "TXT", "v=spf1 -all exp=why.%{d}")
    dns.add("why.exp.test", "TXT", "%{i} is not allowed to send mail for %{d}")
    dns.add("soft.test", "TXT", "v=spf1 ~all exp=why.exp.test")
    # hostile explanations: a CR LF and a fake reply, 8-bit, over-long
    for name, text in (("crlf", "x\r\n250 2.0.0 Ok"), ("utf8", "caf\u00e9 says no"),
                       ("long", "x" * 401)):
        dns.add(name + ".test", "TXT", "v=spf1 -all exp=why.%s.test" % name)
        dns.add("why.%s.test" % name, "TXT", text)


def test_spf_explanation_in_the_reply(fake, moatd_factory, dns):
    exp_zones(dns)
    m = moatd(moatd_factory, fake, dns, on=EXP_RULES)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@exp.test>").code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert (r.code, r.text) == (
            550, "5.7.23 SPF [127.0.0.1 is not allowed to send mail for exp.test]"), r
        for name in ("crlf", "utf8", "long"):
            assert c.cmd("RSET").code == 250
            assert c.cmd("MAIL FROM:<a@%s.test>" % name).code == 250
            r = c.cmd("RCPT TO:<user@example.org>")
            # no explanation, and one reply line: the session stays in step
            assert (r.code, r.text) == (550, "5.7.23 SPF []"), (name, r)
            assert len(r.lines) == 1 and r.raw.count(b"\r\n") == 1, (name, r)
        assert c.cmd("RSET").code == 250
        assert c.cmd("NOOP").code == 250
        c.cmd("QUIT")
    assert dns.queries("why.exp.test"), "the explanation was never asked for"


# the explanation is fetched only when a rule that matches shows it: a
# policy that does not show it, and softfail (exp= is for fail only)
NOT_FETCHED = [
    ("not-shown", ['rcpt spf is fail reject 550 5.7.23 "SPF $spf"'], "exp.test",
     "5.7.23 SPF fail"),
    ("softfail", EXP_RULES + ['rcpt spf is softfail reject 550 5.7.24 "soft [$spf-explanation]"'],
     "soft.test", "5.7.24 soft []"),
]


@pytest.mark.parametrize("rules,domain,text", [r[1:] for r in NOT_FETCHED],
                         ids=[r[0] for r in NOT_FETCHED])
def test_spf_explanation_not_fetched(fake, moatd_factory, dns, rules, domain, text):
    exp_zones(dns)
    m = moatd(moatd_factory, fake, dns, on=rules)
    with m.client() as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@%s>" % domain).code == 250
        r = c.cmd("RCPT TO:<user@example.org>")
        assert (r.code, r.text) == (550, text), r
        c.cmd("QUIT")
    assert dns.queries(domain) and not dns.queries("why.exp.test")


# ---------------------------------------------------------------------------
# lists: an IDN written in either form matches both (entries in A-labels)

def test_idn_list_entries_match_both_forms(fake, moatd_factory):
    m = moatd_factory(fake.address, list=[
        "u-form domain { b\u00fccher.test }",
        "a-form address { @XN--CAF-DMA.test }",
    ], on=[
        'mail sender-domain in u-form reject 553 5.7.1 "u-form listed"',
        'mail sender in a-form reject 553 5.7.1 "a-form listed"',
    ])
    with m.client() as c:
        c.ehlo()
        for sender, want in (("a@xn--bcher-kva.test", "u-form"),
                             ("a@mail.b\u00fccher.test", "u-form"),
                             ("a@caf\u00e9.test", "a-form"),
                             ("a@xn--caf-dma.test", "a-form")):
            r = c.cmd(("MAIL FROM:<%s> SMTPUTF8" % sender).encode("utf-8"))
            assert (r.code, r.text) == (553, "5.7.1 %s listed" % want), (sender, r)
        # a name that is not a valid IDN matches nothing (and breaks nothing)
        r = c.cmd(b"MAIL FROM:<a@b\xc3\xbc\xe2\x80\x8dcher.test> SMTPUTF8")
        assert r.code == 250, r
        assert c.cmd("RSET").code == 250
        c.cmd("QUIT")


# HELO names: a word list entry or "helo is" written in U-labels or A-labels
# matches a client that sends either form; an entry that is no valid IDN is
# an error at the rule (file:line:col); the same list read as login names
# stays byte for byte.

def test_idn_helo_names_match_both_forms(fake, moatd_factory):
    m = moatd_factory(fake.address, list=[
        "u-helo word { b\u00fccher.test }",
    ], on=[
        'helo helo in u-helo reject 550 5.7.1 "u-form helo"',
        'helo helo is XN--CAF-DMA.test reject 550 5.7.1 "a-form helo"',
    ])
    with m.client() as c:
        for name, want in ((b"xn--bcher-kva.test", "u-form"), (b"XN--BCHER-KVA.TEST", "u-form"),
                           (b"b\xc3\xbccher.test", "u-form"), (b"caf\xc3\xa9.test", "a-form"),
                           (b"xn--caf-dma.test", "a-form")):
            r = c.cmd(b"EHLO " + name)
            assert (r.code, r.text) == (550, "5.7.1 %s helo" % want), (name, r)
        # a name that is not a valid IDN matches nothing
        assert c.cmd(b"EHLO xn--zz.test").code == 250
        assert c.cmd(b"EHLO bucher.test").code == 250
        c.cmd("QUIT")


def test_invalid_idn_in_a_helo_list_is_an_error(workdir):
    import harness
    conf = harness.render_conf([("listen", "127.0.0.1:2525"), ("upstream", "127.0.0.1:2526")])
    for rule, col, err in (
            ('on helo helo in h reject 550 5.7.1 "x"', 17,
             'list h has "xn--zz.test", which is not a valid internationalised domain name'),
            ('on helo helo is xn--zz.test reject 550 5.7.1 "x"', 17,
             'helo is "xn--zz.test": not a valid internationalised domain name')):
        text = conf + "list h word { localhost xn--zz.test }\n" + rule + "\n"
        lineno = text.count("\n", 0, text.index(rule)) + 1
        rc, out, cpath = harness.moatd_check(text, workdir)
        assert rc != 0 and re.search(r"%s:%d:%d: error: %s" % (
            re.escape(str(cpath)), lineno, col, re.escape(err)), out), out
    # the same list read as login names is fine: a login is no domain
    text = conf + "list h word { localhost xn--zz.test }\n" + \
        'on mail login in h reject 550 5.7.1 "x"\n'
    rc, out, _ = harness.moatd_check(text, workdir)
    assert rc == 0, out
