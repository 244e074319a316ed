"""DKIM signing (dkim-key statements, the sign action): keys checked at
load with file:line:col; mail submitted with AUTH through moatd to a real
Postfix arrives signed (RSA 2048, Ed25519, both) and verifies with dkimpy
and with moat's own verifier, DMARC passing; unauthenticated mail and a
From the login does not own are not signed; the message passes byte for
byte apart from the fields moat and Postfix add.

Keys are made with "moatctl dkim-keygen" and published, as it prints
them, in the loopback DNS server's zone.
"""

import base64
import os
import pwd
import re
import subprocess

import dkim
import pytest

import harness
from test_auth import PASSWORDS, plain, sub_client
from test_tls import certs, tls_opts  # noqa: F401 (fixture)

MAP = "alice: @rsa.test @ed.test @both.test @sub.both.test\n"
RULES = ['data auth and from owned-by owners sign']
DOMAINS = {"rsa.test": [("r2048", "rsa-sha256")],
           "ed.test": [("ed1", "ed25519-sha256")],
           "both.test": [("r2048", "rsa-sha256"), ("ed1", "ed25519-sha256")]}


def moatctl(*args, timeout=60):
    return subprocess.run([harness.moatctl_path()] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, text=True)


def keygen(d, domain, sel, alg):
    r = moatctl("dkim-keygen", domain, sel, "--algorithm", alg, "--dir", str(d))
    assert r.returncode == 0, r.stderr
    path = d / re.search(r"^# key written to .*/([^/ ]+) \(", r.stdout, re.M).group(1)
    assert os.stat(path).st_mode & 0o777 == 0o600
    # the record as printed: "NAME. IN TXT ( "..." "..." )"
    m = re.search(r"^(\S+)\. IN TXT \( (.*) \)$", r.stdout, re.M)
    assert m, r.stdout
    txt = "".join(re.findall(r'"([^"]*)"', m.group(2)))
    line = re.search(r"^dkim-key .*$", r.stdout, re.M).group(0)
    return path, m.group(1), txt, line


@pytest.fixture
def keys(workdir, dns):
    d = harness.make_dir(workdir / "dkim")
    lines, records = [], {}
    for domain, sels in DOMAINS.items():
        for sel, alg in sels:
            path, name, txt, line = keygen(d, domain, sel, alg)
            # moatd reads its keys again as its user on SIGHUP
            if harness.IS_ROOT:
                os.chown(path, pwd.getpwnam(harness.UNPRIV_USER).pw_uid, -1)
            dns.add(name, "TXT", txt)
            records[name] = txt.encode()
            lines.append(line[len("dkim-key "):])
        dns.add("_dmarc." + domain, "TXT", "v=DMARC1; p=reject")
    # a From below both.test signs with the parent's keys
    lines[-1] += " subdomains"
    return lines, records


def signer(moatd_factory, upstream, certs, workdir, keylines, dns, **kw):  # noqa: F811
    mapfile = workdir / "owners.map"
    mapfile.write_text(MAP)
    p25, p587 = harness.free_port(), harness.free_port()
    opts = tls_opts(certs, **{"upstream-timeout": "20s"})
    opts.update({"list": ['owners login-map file "%s"' % mapfile], "on": RULES,
                 "dkim_key": keylines, "resolver": dns.resolver, "spf": "no",
                 "dkim": "no", "dmarc": "off"})
    opts.update(kw)
    m = moatd_factory(upstream, listen=["127.0.0.1:%d" % p25, "127.0.0.1:%d submission" % p587],
                      **opts)
    m.sub_port = p587
    return m


def crlf(b):
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def field_names(head):
    return [l.split(b":", 1)[0].decode() for l in head.split(b"\r\n")
            if l and l[:1] not in (b" ", b"\t")]


def sigs(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"^DKIM-Signature:.*?(?=\r\n[^ \t])", head, re.M | re.S)


def dkimpy_verify(msg, records):
    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip(".") if isinstance(name, bytes)
                           else name.rstrip("."), b"")
    d = dkim.DKIM(msg)
    return [d.verify(idx=i, dnsfunc=dnsfunc) for i in range(len(sigs(msg)))]


def the_message(frm, subject):
    body = (b"Hello,\r\n\r\n  spaced   line  \t\r\n..leading dot\r\n" +
            b"x" * 300 + b"\r\n\r\n\r\n")
    return harness.message(subject, body=body, mfrom=frm,
                           extra_headers=["Date: Sun, 06 Dec 2026 12:00:00 +0000",
                                          "Cc: <cc@example.org>",
                                          "MIME-Version: 1.0",
                                          "Content-Type: text/plain; charset=us-ascii"])


def submit(m, frm, subject, auth=True, port=None):
    c = sub_client(m) if port is None else harness.Client(port, timeout=20)
    if port is not None:
        c.ehlo()
    if auth:
        assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"])).code == 235
    data = the_message(frm, subject)
    rs = harness.smtp_transaction(c, data, mfrom=frm)
    assert rs[-1].code == 250, rs
    c.cmd("QUIT")
    c.close()
    return data


def delivered(pf, subject):
    got = pf.wait_messages_with(subject.encode(), timeout=20)
    assert len(got) == 1, len(got)
    return crlf(got[0])


@pytest.mark.postfix
@pytest.mark.timeout(180)
@pytest.mark.parametrize("domain,want", [
    ("rsa.test", ["rsa-sha256"]),
    ("ed.test", ["ed25519-sha256"]),
    ("both.test", ["rsa-sha256", "ed25519-sha256"]),
    ("sub.both.test", ["ed25519-sha256"]),      # the parent's key, subdomains
])
def test_signed_and_verified(sasl_postfix, moatd_factory, certs, workdir, dns, keys,  # noqa: F811
                             fake, domain, want):
    keylines, records = keys
    m = signer(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs, workdir, keylines, dns)
    subject = "signed %s %d" % (domain, os.getpid())
    sent = submit(m, "alice@" + domain, subject)
    got = delivered(sasl_postfix, subject)
    ss = sigs(got)
    assert [re.search(rb"a=([a-z0-9-]+);", s).group(1).decode() for s in ss] == want, ss
    d_tag = domain if domain != "sub.both.test" else "both.test"
    for s in ss:
        u = re.sub(rb"\r\n[ \t]+", b" ", s)
        assert re.search(rb"[; ]d=" + re.escape(d_tag.encode()) + rb";", u), u
        assert b"c=relaxed/relaxed" in u and re.search(rb" t=\d+;", u), u
        h = re.search(rb"[; ]h=([^;]+);", u).group(1).replace(b" ", b"").lower().split(b":")
        for f in (b"from", b"to", b"cc", b"subject", b"date", b"message-id",
                  b"mime-version", b"content-type"):
            assert h.count(f) == 2, (f, h)        # present once, over-signed once
        assert h.count(b"reply-to") == 1 and h.count(b"list-id") == 1, h
    # dkimpy verifies every signature
    assert dkimpy_verify(got, records) == [True] * len(want)
    # byte for byte: what the client sent (after dot-unstuffing) ends the
    # message; above it only the fields Postfix and moat added
    assert got.endswith(sent)
    added = got[:len(got) - len(sent)]
    names = field_names(added)
    assert set(names) <= {"Return-Path", "X-Original-To", "Delivered-To", "Received",
                          "DKIM-Signature"}, names
    # moat's signatures on top of what moat sent, under Postfix's fields
    assert names[-len(want):] == ["DKIM-Signature"] * len(want), names
    assert re.search(r"dkim-sign d=%s s=\S+ a=%s" % (re.escape(d_tag), want[0]), m.log())
    # moat's own verifier, with DMARC, as a receiver would run it
    v = moatd_factory(fake.address, resolver=dns.resolver, spf="yes", dkim="yes",
                      dmarc="rfc7489")
    with v.client() as c:
        c.ehlo("mail.example.org")
        rs = harness.smtp_transaction(c, got, mfrom="alice@" + domain)
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")
    done = fake.wait_completed(1)
    head = done[0].content.split(b"\r\n\r\n", 1)[0].decode()
    ar = re.sub(r"\r\n[ \t]+", " ", re.match(r"Authentication-Results: (.*?)\r\n(?![ \t])",
                                              head, re.S).group(1))
    assert len(re.findall(r"dkim=pass header\.d=%s " % re.escape(d_tag), ar)) == len(want), ar
    assert re.search(r"dmarc=pass \(p=reject dis=none\) header\.from=%s" % re.escape(domain),
                     ar), ar


@pytest.mark.postfix
@pytest.mark.timeout(180)
def test_not_signed(sasl_postfix, moatd_factory, certs, workdir, dns, keys):  # noqa: F811
    keylines, records = keys
    m = signer(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs, workdir, keylines, dns)
    tag = os.getpid()
    # no AUTH (port 25, From a signing domain)
    submit(m, "alice@both.test", "unauth %d" % tag, auth=False, port=m.port)
    # AUTH, but a From the login does not own (the domain has keys)
    c = sub_client(m)
    assert c.cmd("AUTH PLAIN " + plain("bob@example.org", PASSWORDS["bob@example.org"])).code \
        == 235
    rs = harness.smtp_transaction(c, the_message("alice@both.test", "notowned %d" % tag),
                                  mfrom="bob@example.org")
    assert rs[-1].code == 250, rs
    c.close()
    # AUTH and owned, but the domain has no key
    submit(m, "alice@rsa.test", "control %d" % tag)    # signed: the control
    for subject in ("unauth %d" % tag, "notowned %d" % tag):
        got = delivered(sasl_postfix, subject)
        assert b"DKIM-Signature:" not in got, subject
    assert len(sigs(delivered(sasl_postfix, "control %d" % tag))) == 1
    assert "dkim-sign d=both.test" not in m.log()


# bad keys: each refused at load, at the key file's name in the policy file
def _write(path, data, mode=0o600):
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _openssl(*args):
    return subprocess.run(["openssl"] + list(args), check=True, capture_output=True,
                          timeout=120).stdout


@pytest.fixture(scope="module")
def key_material(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkimbad")
    out = {}
    for bits in (512, 1024, 2048):
        out["rsa%d" % bits] = _openssl("genpkey", "-algorithm", "rsa", "-pkeyopt",
                                       "rsa_keygen_bits:%d" % bits)
    out["ed"] = _openssl("genpkey", "-algorithm", "ed25519")
    out["ec"] = _openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")
    out["enc"] = _openssl("genpkey", "-algorithm", "ed25519", "-aes256", "-pass", "pass:x")
    out["pub"] = _openssl("pkey", "-pubout", "-in", str(_write(d / "k", out["rsa2048"])))
    return out


BAD_KEYS = [
    # name, key material, mode, algorithm, error (regex) or None, warning
    ("good-rsa", "rsa2048", 0o600, "rsa-sha256", None, None),
    ("good-ed", "ed", 0o400, "ed25519-sha256", None, None),
    ("rsa-1024-warns", "rsa1024", 0o600, "rsa-sha256", None, r"RSA key of 1024 bits; 2048"),
    ("rsa-512", "rsa512", 0o600, "rsa-sha256", r"RSA key of 512 bits; at least 1024", None),
    ("group-readable", "rsa2048", 0o640, "rsa-sha256", r"mode 0640 lets group or others", None),
    ("world-readable", "ed", 0o604, "ed25519-sha256", r"mode 0604 lets group or others", None),
    ("rsa-as-ed", "rsa2048", 0o600, "ed25519-sha256", r"not an Ed25519 key", None),
    ("ed-as-rsa", "ed", 0o600, "rsa-sha256", r"not an RSA key", None),
    ("ec-key", "ec", 0o600, "rsa-sha256", r"not an RSA key", None),
    ("public-key", "pub", 0o600, "rsa-sha256", r"not a PEM private key", None),
    ("encrypted", "enc", 0o600, "ed25519-sha256", r"not a PEM private key", None),
    ("garbage", b"hello\n", 0o600, "rsa-sha256", r"not a PEM private key", None),
    ("empty", b"", 0o600, "rsa-sha256", r": empty", None),
    ("missing", None, 0o600, "rsa-sha256", r"No such file or directory", None),
    ("directory", "dir", 0o700, "rsa-sha256", r"not a regular file", None),
]


@pytest.mark.parametrize("name,mat,mode,alg,err,warn", BAD_KEYS, ids=[b[0] for b in BAD_KEYS])
def test_key_checks_at_load(workdir, key_material, name, mat, mode, alg, err, warn):
    path = workdir / ("%s.key" % name)
    if mat == "dir":
        os.mkdir(path, mode)
    elif mat is not None:
        _write(path, key_material[mat] if isinstance(mat, str) else mat, mode)
    conf = harness.render_conf([("listen", "127.0.0.1:2525"), ("upstream", "127.0.0.1:2526"),
                                ("user", harness.UNPRIV_USER if harness.IS_ROOT else None)])
    line = 'dkim-key example.test sel %s "%s"\n' % (alg, path)
    text = conf + line + "on data auth sign\n"
    lineno = text.count("\n", 0, text.index("dkim-key")) + 1
    col = line.index('"') + 1
    rc, out, cpath = harness.moatd_check(text, workdir, name=name + ".conf")
    if err is None:
        assert rc == 0, out
        assert "configuration OK" in out or rc == 0
    else:
        assert rc != 0, out
        assert re.search(r"%s:%d:%d: error: key file .*%s" % (re.escape(str(cpath)), lineno, col,
                                                              err), out), out
    if warn is not None:
        assert re.search(r"%s:%d:%d: warning: .*%s" % (re.escape(str(cpath)), lineno, col, warn),
                         out), out


SYNTAX = [
    ('dkim-key example sel rsa-sha256 "/x"', 10, "expected the signing domain"),
    ('dkim-key example.test bad..sel rsa-sha256 "/x"', 23, "expected a selector"),
    ('dkim-key example.test sel rsa-sha1 "/x"', 27, "expected rsa-sha256 or ed25519-sha256"),
    ('dkim-key example.test sel rsa-sha256 /x', 38, "expected the private key file"),
    ('dkim-key example.test sel rsa-sha256 "/x" everything', 43, "unexpected"),
    ('on mail auth sign', 14, 'sign works on the message'),
    # selectors and domains go into the DNS in A-labels: a bad IDN is refused
    ('dkim-key example.test xn--zz rsa-sha256 "/x"', 23,
     "expected a selector (s=: letters, digits, '-', '_', dots, or an internationalised name), "
     "found xn--zz: not a valid internationalised domain name"),
    ('dkim-key example.test s\u2028el rsa-sha256 "/x"', 23,
     "not a valid internationalised domain name"),
    ('dkim-key xn--zz.test sel rsa-sha256 "/x"', 10,
     "expected the signing domain (d=) after dkim-key, found xn--zz.test: not a valid"),
]


@pytest.mark.parametrize("line,col,err", SYNTAX)
def test_statement_errors(workdir, line, col, err):
    conf = harness.render_conf([("listen", "127.0.0.1:2525"), ("upstream", "127.0.0.1:2526")])
    text = conf + line + "\n"
    lineno = text.count("\n", 0, text.index(line)) + 1
    rc, out, cpath = harness.moatd_check(text, workdir)
    assert rc != 0
    assert re.search(r"%s:%d:%d: error: .*%s" % (re.escape(str(cpath)), lineno, col,
                                                 re.escape(err)), out), out


def test_check_key(workdir, dns):
    d = harness.make_dir(workdir / "ck")
    path, name, txt, _ = keygen(d, "check.test", "s1", "ed25519-sha256")
    args = ["dkim", "--check-key", "check.test", "s1", "--dir", str(d),
            "--resolver", dns.address, "--timeout", "2000"]
    r = moatctl(*args)
    assert r.returncode == 1 and "check-key missing name=s1._domainkey.check.test" in r.stdout
    dns.add(name, "TXT", txt)
    r = moatctl(*args)
    assert r.returncode == 0 and "check-key ok name=s1._domainkey.check.test k=ed25519" \
        in r.stdout, (r.stdout, r.stderr)
    _, name2, txt2, _ = keygen(d, "check.test", "s2", "rsa-sha256")
    dns.reset()
    dns.add(name, "TXT", txt2)       # another key's record under s1
    r = moatctl(*args)
    assert r.returncode == 1 and "check-key mismatch" in r.stdout, r.stdout
    assert base64.b64decode(txt.split("p=")[1])  # the record moatctl printed is base64


IDN_DOM, IDN_SEL = "b\u00fccher.test", "schl\u00fcssel"          # bücher.test, schlüssel
IDN_ADOM, IDN_ASEL = "xn--bcher-kva.test", "xn--schlssel-95a"


@pytest.mark.timeout(120)
def test_unicode_selector_and_domain_are_a_labels(moatd_factory, fake, dns, workdir):
    """RFC 5890 / RFC 6376 3.5: a selector and a signing domain written
    with U-labels go into s=, d=, the key file's name and the DNS name in
    A-labels, in dkim-keygen, dkim --check-key and moatd's dkim-key alike."""
    d = harness.make_dir(workdir / "idn")
    path, name, txt, line = keygen(d, IDN_DOM, IDN_SEL, "ed25519-sha256")
    assert path.name == "%s.%s.key" % (IDN_ADOM, IDN_ASEL), path
    assert name == "%s._domainkey.%s" % (IDN_ASEL, IDN_ADOM), name
    assert line.startswith("dkim-key %s %s ed25519-sha256 " % (IDN_ADOM, IDN_ASEL)), line
    args = ["dkim", "--check-key", IDN_DOM, IDN_SEL, "--dir", str(d),
            "--resolver", dns.address, "--timeout", "2000"]
    r = moatctl(*args)
    assert r.returncode == 1 and "check-key missing name=%s" % name in r.stdout, r
    dns.add(name, "TXT", txt)
    r = moatctl(*args)
    assert r.returncode == 0 and "check-key ok name=%s" % name in r.stdout, (r.stdout, r.stderr)
    r = moatctl("dkim-keygen", IDN_DOM, "xn--zz", "--dir", str(d))
    assert r.returncode == 2 and "bad selector: not a valid internationalised" in r.stderr, r
    # moatd: the policy file names the key in U-labels; From in A-labels
    if harness.IS_ROOT:
        os.chown(path, pwd.getpwnam(harness.UNPRIV_USER).pw_uid, -1)
    m = moatd_factory(fake.address, on=["data true sign"], resolver=dns.resolver, spf="no",
                      dkim="no", dmarc="off",
                      dkim_key=['%s %s ed25519-sha256 "%s"' % (IDN_DOM, IDN_SEL, path)])
    send_plain(m, "alice@" + IDN_ADOM, "idn selector")
    msg = fake.wait_completed(1)[-1].content
    sa = sigs(msg)
    assert len(sa) == 1, msg[:600]
    u = unfolded(sa[0])
    assert (b" d=%s;" % IDN_ADOM.encode()) in u and (b" s=%s;" % IDN_ASEL.encode()) in u, u
    assert dkimpy_verify(msg, {name: txt.encode()}) == [True]


# moat-milter signs as moatd does (the engine signs; each front-end puts the
# fields on top). No SASL in the milter's Postfix: the rule signs every
# message whose From domain has keys, which the policy may say.
from test_milter import milter_factory, milter_port, mpostfix, run_session  # noqa: E402,F401


def unfolded(s):
    return re.sub(rb"\r\n[ \t]+", b" ", s)


def masked(s):
    """A signature without what depends on the second it was made."""
    u = unfolded(s)
    return re.sub(rb"; b=[A-Za-z0-9+/= ]+$", b"; b=B", re.sub(rb" t=\d+;", b" t=T;", u))


@pytest.mark.postfix
@pytest.mark.timeout(180)
def test_milter_signs_the_same(mpostfix, milter_factory, moatd_factory, fake, dns,  # noqa: F811
                               keys):
    keylines, records = keys
    opts = dict(on=["data true sign"], dkim_key=keylines, resolver=dns.resolver, spf="no",
                dkim="no", dmarc="off")
    milter_factory(**opts)
    m = moatd_factory(fake.address, **opts)
    subject = "parity %d" % os.getpid()
    msg = the_message("alice@both.test", subject)
    via_moatd = run_session(m.port, "mail.example.org", "alice@both.test",
                            ["user@example.org"], msg)
    via_milter = run_session(mpostfix.port, "mail.example.org", "alice@both.test",
                             ["user@example.org"], msg)
    assert via_moatd[-1][:2] == ("dot", 250) and via_milter[-1][:2] == ("dot", 250), \
        (via_moatd, via_milter)
    a = fake.wait_completed(1)[-1].content
    b = delivered(mpostfix, subject)
    sa, sb = sigs(a), sigs(b)
    assert len(sa) == 2 and len(sb) == 2, (sa, sb)
    # the same h=, bh=, d=, s=, a=; the same bytes when made in the same second
    assert [masked(s) for s in sa] == [masked(s) for s in sb], (sa, sb)
    for x, y in zip(sa, sb):
        if re.search(rb" t=(\d+);", unfolded(x)).group(1) == \
                re.search(rb" t=(\d+);", unfolded(y)).group(1):
            assert x == y
    assert dkimpy_verify(a, records) == [True, True]
    assert dkimpy_verify(b, records) == [True, True]
    # on top of the message in both
    assert a.startswith(b"DKIM-Signature:")
    assert field_names(b.split(b"\r\n\r\n", 1)[0]).count("DKIM-Signature") == 2


def send_plain(m, frm, subject):
    with m.client() as c:
        c.ehlo("mail.example.org")
        rs = harness.smtp_transaction(c, the_message(frm, subject), mfrom=frm)
        assert rs[-1].code == 250, rs
        c.cmd("QUIT")


@pytest.mark.timeout(120)
def test_keys_reloaded_on_sighup(moatd_factory, fake, dns, keys):
    import signal
    keylines, records = keys
    rsa_only = [l for l in keylines if l.startswith("rsa.test ")]
    ed = [l for l in keylines if l.startswith("ed.test ")]
    m = moatd_factory(fake.address, on=["data true sign"], dkim_key=rsa_only,
                      resolver=dns.resolver, spf="no", dkim="no", dmarc="off")
    send_plain(m, "alice@ed.test", "before")
    assert sigs(fake.wait_completed(1)[-1].content) == []
    # a key added: used after SIGHUP (moatd reads it as its own user)
    items = [(k, v) for k, v in m.conf_items if k != "dkim-key"] + \
        [("dkim-key", rsa_only + ed)]
    m.conf_path.write_text(harness.render_conf(items))
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload ok", count=1)
    send_plain(m, "alice@ed.test", "after")
    got = fake.wait_completed(2)[-1].content
    assert len(sigs(got)) == 1 and dkimpy_verify(got, records) == [True]
    # a key file that went world-readable: the reload is refused, at the
    # file name's line and column, and the running keys stay
    path = re.search(r'"([^"]+)"', ed[0]).group(1)
    os.chmod(path, 0o644)
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload refused")
    text = m.conf_path.read_text()
    line = text[:text.index(path)].count("\n") + 1
    col = text.splitlines()[line - 1].index('"') + 1
    assert re.search(r"%s:%d:%d: error: key file %s: mode 0644 lets group or others in"
                     % (re.escape(str(m.conf_path)), line, col, re.escape(path)), m.log())
    send_plain(m, "alice@ed.test", "still")
    got = fake.wait_completed(3)[-1].content
    assert len(sigs(got)) == 1 and dkimpy_verify(got, records) == [True]
