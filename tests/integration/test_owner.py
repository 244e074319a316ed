"""Sender ownership (filters/owner.c): login maps, header From, local-domain
forgery from outside (ADR-10, AUT-07).

The upstream is a FakeUpstream that accepts any AUTH (235), so the table
exercises moat's map alone; test_auth.py covers real SASL.
"""

import base64

import pytest

import harness
from test_tls import certs, starttls, tls_opts  # noqa: F401 (fixture)

MAP = """\
alice:   alice@example.org  alice+*@example.org  =sales
bob@example.org:  %l  @example.net
sales:   sales@example.org
*:       %u@users.example.org
"""

RULES = [
    'mail login in any-login and not sender owned-by owners '
    'reject 553 5.7.1 "Sender address rejected: not owned by auth user"',
    'mail sender-domain in local-domains and not auth and not client-ip in trusted '
    'reject 553 5.7.1 "Sender address rejected: not logged in"',
    'data login in any-login and not from owned-by owners '
    'reject 550 5.7.1 "From header not owned by auth user"',
]


@pytest.fixture
def owner_moatd(fake_factory, moatd_factory, certs, workdir):  # noqa: F811
    f = fake_factory(caps=list(harness.DEFAULT_CAPS) + ["AUTH PLAIN LOGIN"],
                     replies={"AUTH": "235 2.7.0 Authentication successful"})
    mapfile = workdir / "owners.map"
    mapfile.write_text(MAP)
    p25, p587 = harness.free_port(), harness.free_port()
    opts = tls_opts(certs)
    opts["list"] = ["local-domains domain { example.org example.net }",
                    "trusted net { 127.0.0.5 }",
                    "any-login word { * }",
                    'owners login-map file "%s"' % mapfile]
    opts["on"] = RULES
    m = moatd_factory(f.address, listen=["127.0.0.1:%d" % p25, "127.0.0.1:%d submission" % p587],
                      **opts)
    m.sub_port = p587
    return m, f


def login(m, user):
    c = harness.Client(m.sub_port)
    c.ehlo()
    starttls(c)
    c.ehlo()
    r = c.cmd("AUTH PLAIN " + base64.b64encode(("\0%s\0pw" % user).encode()).decode())
    assert r.code == 235, r
    return c


OWNERSHIP = [
    ("alice", "alice@example.org", 250),
    ("alice", "ALICE@Example.ORG", 250),               # case
    ('alice', '"alice"@example.org', 250),             # quoted local part
    ("alice", "alice+lists@example.org", 250),         # pattern
    ("alice", "alice@example.org.", 250),              # trailing dot
    ("alice", "<@relay.test:alice@example.org>", 250), # source route dropped
    ("alice", "sales@example.org", 250),               # alias =sales
    ("alice", "alice@users.example.org", 250),         # * -> %u@users...
    ("alice", "bob@example.org", 553),
    ("alice", "alicex@example.org", 553),
    ("alice", "alice@example.org.evil.test", 553),
    ("alice", "", 553),                                # null sender
    ("bob@example.org", "bob@example.org", 250),       # %l
    ("bob@example.org", "anyone@example.net", 250),    # @domain
    ("bob@example.org", "bob@users.example.org", 250), # %u of an address login
    ("bob@example.org", "alice@example.org", 553),
    ("mallory", "mallory@users.example.org", 250),     # only what * gives
    ("mallory", "mallory@example.org", 553),
]


@pytest.mark.parametrize("user,sender,code", OWNERSHIP)
def test_ownership_table(owner_moatd, user, sender, code):
    m, _ = owner_moatd
    c = login(m, user)
    path = sender if sender.startswith("<") else "<%s>" % sender
    r = c.cmd("MAIL FROM:%s" % path)
    assert r.code == code, (user, sender, r)
    if code == 553:
        assert "not owned by auth user" in r.text and r.enh == "5.7.1"
    c.close()


def test_header_from_mismatch(owner_moatd):
    m, f = owner_moatd
    c = login(m, "alice")
    r = c.cmd("MAIL FROM:<alice@example.org>")
    assert r.code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"From: The Boss <boss@example.org>\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    r = c.reply()
    assert r.code == 550 and "From header not owned" in r.text
    # the same with an owned From goes through
    assert c.cmd("MAIL FROM:<alice@example.org>").code == 250
    assert c.cmd("RCPT TO:<user@example.org>").code == 250
    assert c.cmd("DATA").code == 354
    c.send(b"From: \"Alice (home)\" <Alice+home@Example.org>\r\nSubject: y\r\n\r\nhi\r\n.\r\n")
    assert c.reply().code == 250
    # two From fields, or two mailboxes one of which is not hers: refused
    for hdr in (b"From: alice@example.org\r\nFrom: boss@example.org\r\n",
                b"From: alice@example.org, boss@example.org\r\nSender: alice@example.org\r\n"):
        assert c.cmd("MAIL FROM:<alice@example.org>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(hdr + b"Subject: z\r\n\r\nhi\r\n.\r\n")
        assert c.reply().code == 550
    c.close()
    assert len(f.completed()) == 1


def test_local_domain_forgery_from_outside(owner_moatd):
    m, _ = owner_moatd
    with m.client() as c:                                 # 127.0.0.1: not trusted
        c.ehlo()
        r = c.cmd("MAIL FROM:<ceo@example.org>")
        assert r.code == 553 and "not logged in" in r.text
        assert c.cmd("MAIL FROM:<someone@elsewhere.test>").code == 250
    with harness.Client(m.port, source="127.0.0.5") as c:  # trusted network
        c.ehlo()
        assert c.cmd("MAIL FROM:<ceo@example.org>").code == 250


def test_map_reloaded_with_policy(owner_moatd, workdir):
    import signal
    m, _ = owner_moatd
    c = login(m, "carol")
    assert c.cmd("MAIL FROM:<carol@example.org>").code == 553
    c.close()
    (workdir / "owners.map").write_text(MAP + "carol: carol@example.org\n")
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload ok")
    c = login(m, "carol")
    assert c.cmd("MAIL FROM:<carol@example.org>").code == 250
    c.close()
