"""DKIM verification through `moatctl dkim` with keys served by the
loopback DNS server (dnsserver.py) and fetched by moat's own resolver.

1. Every message of ../shared/conformance/dkim/MANIFEST.tsv gives the
   verdict the manifest expects (EXPECTED below says how each verdict
   reads in moat's words), including the bare PKCS#1 key of
   mail-auth/002 and the expired signature of mail-auth/005 at the pinned
   clock (and its failure without the pin).
2. Messages signed here by dkimpy (Debian's python3-dkim, an
   implementation that is not the one moat verifies with): intact ones
   pass, altered ones fail, and the hardening cases give their statuses
   (l= with appended text, small keys, rsa-sha1, missing, revoked and
   several keys, DNS failure, signature cap).
3. The verdict does not depend on how the message is cut into chunks.

MOATCTL selects the moatctl binary (default: build-asan/moatctl).  Each
test's DNS data lives in its own zone set on one server per module.
"""

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from dnsserver import DnsServer  # noqa: E402

import harness  # noqa: E402

try:
    import dkim  # python3-dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
except ImportError:  # pragma: no cover - the project installs python3-dkim
    dkim = None

CONF = Path(os.environ.get("MOAT_CONFORMANCE",
                           str(harness.REPO.parent / "shared" / "conformance"))) / "dkim"
MOATCTL = os.environ.get("MOATCTL") or str(harness.REPO / "build-asan" / "moatctl")
PIN_005 = 1667843664

LINE = re.compile(r"^dkim result=(\S+) d=(\S+) s=(\S+) a=(\S+)(.*)$")


def moatctl_dkim(dns, path, *extra, timeout=30):
    p = subprocess.run([MOATCTL, "dkim", "--resolver", dns.address, "--timeout", "2000",
                        *extra, str(path)], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "moatctl dkim failed (%d): %s" % (p.returncode, p.stderr)
    assert "ERROR: AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr
    return p.stdout


def verdicts(out):
    """[(result, d, s, a, rest)] per signature line of moatctl's output."""
    rows = []
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            rows.append(m.groups())
    return rows


def serve_keys(dns, lines, bare_domain=None):
    """Publish 'owner TXT' lines; bare selectors get bare_domain."""
    for line in lines:
        line = line.strip()
        if not line or " " not in line:
            continue
        owner, value = line.split(" ", 1)
        if "._domainkey." not in owner and bare_domain:
            owner = "%s._domainkey.%s" % (owner, bare_domain)
        try:
            dns.add(owner, "TXT", value)
        except ValueError:
            pass    # an owner name no DNS can hold (the d= with a '(')


@pytest.fixture(scope="module")
def dns():
    if not os.access(MOATCTL, os.X_OK):
        pytest.fail("moatctl missing: %s (make asan, or set MOATCTL)" % MOATCTL)
    srv = DnsServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh(dns):
    dns.reset()
    return dns


# ---------------------------------------------------------------------------
# 1. the manifest

# message -> (keys file or None for inline keys, domain for bare selectors,
# extra args, expected per signature: (result, d, s, a))
EXPECTED = {
    "rfc6376/rfc6376-a2-signed.eml": ("rfc6376/keys.txt", None, (), [
        ("pass", "example.com", "brisbane", "rsa-sha256")]),
    "rfc8463/rfc8463-a3-signed.eml": ("rfc8463/keys.txt", None, (), [
        ("pass", "football.example.com", "brisbane", "ed25519-sha256"),
        ("pass", "football.example.com", "test", "rsa-sha256")]),
    "dkimpy/rfc6376.signed.msg": ("dkimpy/keys.txt", None, (), [
        ("pass", "football.example.com", "brisbane", "ed25519-sha256"),
        ("pass", "football.example.com", "test", "rsa-sha256")]),
    "dkimpy/rfc6376.signed.rsa.msg": ("dkimpy/keys.txt", None, (), [
        ("pass", "football.example.com", "test", "rsa-sha256")]),
    "dkimpy/ed25519test2.msg": ("dkimpy/keys.txt", None, (), [
        ("pass", "test.ex", "sed", "ed25519-sha256")]),
    "dkimpy/test2.message": ("dkimpy/keys.txt", None, (), [
        ("pass", "gmail.com", "20120113", "rsa-sha256")]),
    # "fail (invalid d=)": the d= is never attributed ("-"), nothing looked up
    "dkimpy/test.message.baddomain": ("dkimpy/keys.txt", None, (), [
        ("fail", "-", "test", "rsa-sha256")]),
    "mail-auth/001.txt": (None, "football.example.com", (), [
        ("pass", "football.example.com", "brisbane", "ed25519-sha256"),
        ("pass", "football.example.com", "test", "rsa-sha256")]),
    # p= is a bare PKCS#1 RSAPublicKey: libopendkim alone refuses it
    "mail-auth/002.txt": (None, None, (), [
        ("pass", "example.com", "newengland", "rsa-sha256")]),
    "mail-auth/003.txt": (None, None, (), [
        ("pass", "ietf.org", "ietf1", "rsa-sha256"),
        ("pass", "ietf.org", "ietf1", "rsa-sha256")]),
    "mail-auth/004.txt": (None, None, (), [
        ("pass", "facebookmail.com", "s1024-2013-q3", "rsa-sha256")]),
    "mail-auth/005.txt": (None, None, ("--now", str(PIN_005)), [
        ("pass", "topicbox.com", "sysmsg-1", "rsa-sha256")]),
    "mail-auth/006.txt": (None, None, (), [
        ("pass", "github.com", "dk2016", "rsa-sha256")]),
}


def manifest_messages():
    with open(CONF / "MANIFEST.tsv", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return sorted({r[0] for r in rows if r and r[0]})


def prepare(name, tmp_path, dns):
    keys, bare, extra, want = EXPECTED[name]
    src = CONF / name
    if keys is None:
        text = src.read_bytes()
        head, _, body = text.partition(b"\n\n")
        serve_keys(dns, head.decode().splitlines(), bare)
        msg = tmp_path / "msg.eml"
        msg.write_bytes(body)
    else:
        serve_keys(dns, (CONF / keys).read_text().splitlines())
        msg = src
    return msg, extra, want


def test_manifest_lists_every_expected_message():
    assert manifest_messages() == sorted(EXPECTED), "MANIFEST.tsv and EXPECTED disagree"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_manifest_message(name, fresh, tmp_path):
    msg, extra, want = prepare(name, tmp_path, fresh)
    got = [v[:4] for v in verdicts(moatctl_dkim(fresh, msg, *extra))]
    assert got == want


def test_expired_without_pinned_clock(fresh, tmp_path):
    msg, _, _ = prepare("mail-auth/005.txt", tmp_path, fresh)
    got = verdicts(moatctl_dkim(fresh, msg))
    assert [g[0] for g in got] == ["fail"] and 'reason="signature expired"' in got[0][4]


def test_bad_domain_is_not_looked_up_nor_attributed(fresh, tmp_path):
    msg, _, _ = prepare("dkimpy/test.message.baddomain", tmp_path, fresh)
    out = moatctl_dkim(fresh, msg, "--authres", "mx.moat.test")
    assert "attacker" not in out and "legitimate" not in out
    assert not [q for q in fresh.queries() if "legitimate" in q[0]]


# ---------------------------------------------------------------------------
# 2. signed here by dkimpy

BASE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\n"
        b"Subject: moat dkim test\r\nDate: Mon, 1 Dec 2025 10:00:00 +0000\r\n"
        b"Message-ID: <t1@example.com>\r\n\r\n"
        b"Hello Bob,\r\n\r\nthis is   a   test with  spaces  \r\nand lines.\r\n\r\n\r\n")
HDRS = [b"from", b"to", b"subject", b"date", b"message-id"]

_KEYS = {}


def rsa_key(bits):
    if bits not in _KEYS:
        _KEYS[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _KEYS[bits]


def rsa_pem(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())


def rsa_txt(k, pkcs1=False):
    fmt = serialization.PublicFormat.PKCS1 if pkcs1 else serialization.PublicFormat.SubjectPublicKeyInfo
    der = k.public_key().public_bytes(serialization.Encoding.DER, fmt)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def sign(msg, key_pem, selector=b"sel", domain=b"example.com", **kw):
    kw.setdefault("include_headers", HDRS)
    return dkim.sign(msg, selector, domain, key_pem, **kw) + msg


def publish(dns, selector, value, domain="example.com"):
    dns.add("%s._domainkey.%s" % (selector, domain), "TXT", value)


def one(dns, tmp_path, data, *extra):
    p = tmp_path / "m.eml"
    p.write_bytes(data)
    got = verdicts(moatctl_dkim(dns, p, *extra))
    assert len(got) == 1, got
    return got[0]


needs_dkimpy = pytest.mark.skipif(dkim is None, reason="python3-dkim not importable (run with /usr/bin/python3)")


@needs_dkimpy
@pytest.mark.parametrize("bits", [1024, 2048, 4096])
@pytest.mark.parametrize("canon", [(b"simple", b"simple"), (b"relaxed", b"relaxed"),
                                   (b"relaxed", b"simple")])
def test_dkimpy_rsa_intact_and_altered(fresh, tmp_path, bits, canon):
    k = rsa_key(bits)
    publish(fresh, "sel", rsa_txt(k))
    signed = sign(BASE, rsa_pem(k), canonicalize=canon)
    r = one(fresh, tmp_path, signed)
    assert r[:4] == ("pass", "example.com", "sel", "rsa-sha256") and "bits=%d" % bits in r[4]
    body = one(fresh, tmp_path, signed.replace(b"Hello Bob", b"Hello Eve"))
    assert body[0] == "fail" and "body hash" in body[4]
    head = one(fresh, tmp_path, signed.replace(b"Subject: moat dkim test", b"Subject: moat dkim TEST"))
    assert head[0] == "fail" and "signature did not verify" in head[4]


@needs_dkimpy
def test_dkimpy_ed25519_intact_and_altered(fresh, tmp_path):
    sk = ed25519.Ed25519PrivateKey.generate()
    seed = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    publish(fresh, "ed", "v=DKIM1; k=ed25519; p=" + base64.b64encode(pub).decode())
    signed = sign(BASE, base64.b64encode(seed), selector=b"ed", signature_algorithm=b"ed25519-sha256")
    assert one(fresh, tmp_path, signed)[:4] == ("pass", "example.com", "ed", "ed25519-sha256")
    assert one(fresh, tmp_path, signed.replace(b"lines.", b"lines!"))[0] == "fail"


@needs_dkimpy
def test_dkimpy_pkcs1_key_record(fresh, tmp_path):
    k = rsa_key(2048)
    publish(fresh, "p1", rsa_txt(k, pkcs1=True))
    assert one(fresh, tmp_path, sign(BASE, rsa_pem(k), selector=b"p1"))[0] == "pass"


@needs_dkimpy
def test_dkimpy_partial_body_is_not_a_pass(fresh, tmp_path):
    k = rsa_key(2048)
    publish(fresh, "sel", rsa_txt(k))
    signed = sign(BASE, rsa_pem(k), length=True, canonicalize=(b"relaxed", b"relaxed"))
    # l= over the whole (relaxed) body: a full pass
    r = one(fresh, tmp_path, signed)
    assert r[0] == "pass" and "partial" not in r[4]
    appended = signed + b"Click here: http://evil.test/\r\n"
    r = one(fresh, tmp_path, appended)
    assert r[0] == "policy" and "partial=yes" in r[4]
    r = one(fresh, tmp_path, appended, "--accept-partial")
    assert r[0] == "pass" and "partial=yes" in r[4]


@needs_dkimpy
def test_dkimpy_small_key_and_sha1(fresh, tmp_path):
    small = rsa.generate_private_key(public_exponent=65537, key_size=768)
    publish(fresh, "small", rsa_txt(small))
    r = one(fresh, tmp_path, sign(BASE, rsa_pem(small), selector=b"small"))
    assert r[0] == "policy" and "key too small" in r[4]
    k = rsa_key(2048)
    publish(fresh, "sel", rsa_txt(k))
    sha1 = sign(BASE, rsa_pem(k), signature_algorithm=b"rsa-sha1")
    r = one(fresh, tmp_path, sha1)
    assert r[0] == "policy" and r[3] == "rsa-sha1"
    assert one(fresh, tmp_path, sha1, "--allow-sha1")[0] == "pass"


@needs_dkimpy
def test_dkimpy_key_problems(fresh, tmp_path):
    k = rsa_key(2048)
    signed = sign(BASE, rsa_pem(k))
    r = one(fresh, tmp_path, signed)
    assert r[0] == "permerror" and 'reason="no key"' in r[4]
    publish(fresh, "sel", "v=DKIM1; k=rsa; p=")
    r = one(fresh, tmp_path, signed)
    assert r[0] == "permerror" and "revoked" in r[4]
    fresh.reset()
    publish(fresh, "sel", rsa_txt(k))
    publish(fresh, "sel", rsa_txt(rsa_key(1024)))
    r = one(fresh, tmp_path, signed)
    assert r[0] == "permerror" and "several key records" in r[4]
    fresh.reset()
    fresh.set_rcode("sel._domainkey.example.com", "TXT", "SERVFAIL")
    r = one(fresh, tmp_path, signed)
    assert r[0] == "temperror"
    fresh.reset()
    publish(fresh, "sel", "v=DKIM1; k=rsa; p=!!!notbase64!!!")
    assert one(fresh, tmp_path, signed)[0] == "permerror"


@needs_dkimpy
def test_dkimpy_signature_cap(fresh, tmp_path):
    k = rsa_key(1024)
    sigs = b"".join(dkim.sign(BASE, b"s%d" % i, b"example.com", rsa_pem(k), include_headers=HDRS)
                    for i in range(12))
    for i in range(12):
        publish(fresh, "s%d" % i, rsa_txt(k))
    p = tmp_path / "m.eml"
    p.write_bytes(sigs + BASE)
    out = moatctl_dkim(fresh, p, "--max-sigs", "5")
    assert len(verdicts(out)) == 5 and "dkim ignored=7" in out
    looked = {q[0] for q in fresh.queries() if "_domainkey" in q[0]}
    assert len(looked) == 5


@needs_dkimpy
def test_unsigned_and_authres(fresh, tmp_path):
    p = tmp_path / "m.eml"
    p.write_bytes(BASE)
    out = moatctl_dkim(fresh, p, "--authres", "mx.moat.test")
    assert out.splitlines()[0] == "dkim result=none"
    assert "Authentication-Results: mx.moat.test; none" not in out
    assert "dkim=none" in out
    k = rsa_key(2048)
    publish(fresh, "sel", rsa_txt(k))
    p.write_bytes(sign(BASE, rsa_pem(k)))
    out = moatctl_dkim(fresh, p, "--authres", "mx.moat.test")
    ar = out[out.index("Authentication-Results:"):]
    assert re.search(r"dkim=pass\n\t header\.d=example\.com\n\t header\.s=sel\n\t header\.b=", ar), ar


# ---------------------------------------------------------------------------
# 3. chunking

@needs_dkimpy
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_chunking_does_not_change_the_verdict(fresh, tmp_path, chunk):
    k = rsa_key(2048)
    publish(fresh, "sel", rsa_txt(k))
    for canon in ((b"simple", b"simple"), (b"relaxed", b"relaxed")):
        signed = sign(BASE, rsa_pem(k), canonicalize=canon)
        assert one(fresh, tmp_path, signed, "--chunk", str(chunk))[0] == "pass"
        bad = signed.replace(b"and lines", b"and LINES")
        assert one(fresh, tmp_path, bad, "--chunk", str(chunk))[0] == "fail"
