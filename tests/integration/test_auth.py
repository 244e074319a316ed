"""AUTH pass-through on submission listeners (docs/SECURITY.md, AUT).

A private Dovecot (passwd-file, auth socket only) gives SASL to a private
Postfix (smtpd_sasl_type = dovecot); moatd relays AUTH to that Postfix.
The two are started once per module by conftest.py's sasl_postfix fixture
(harness.Dovecot, users harness.SASL_PASSWORDS).
"""

import base64
import re
import subprocess
import time

import pytest

import harness
from test_tls import client_ctx, starttls, tls_opts, certs  # noqa: F401 (fixture)

PASSWORDS = harness.SASL_PASSWORDS


def b64(s):
    return base64.b64encode(s.encode()).decode()


def plain(user, pw):
    return b64("\0%s\0%s" % (user, pw))


def sub_moatd(moatd_factory, upstream, certs, **kw):  # noqa: F811
    p25, p587 = harness.free_port(), harness.free_port()
    opts = tls_opts(certs, **{"auth-failure-delay": "200ms", "auth-max-failures": "3",
                              "upstream-timeout": "20s"})
    opts.update(kw)
    m = moatd_factory(upstream, listen=["127.0.0.1:%d" % p25, "127.0.0.1:%d submission" % p587],
                      **opts)
    m.sub_port = p587
    return m


def sub_client(m, tls=True, source=None):
    # Dovecot delays failures per client address (auth penalty, up to 15 s)
    # and Postfix passes it the XCLIENT address: tests that fail logins use
    # addresses of their own
    c = harness.Client(m.sub_port, source=source, timeout=20)
    c.ehlo()
    if tls:
        starttls(c)
        c.ehlo()
    return c


def test_auth_not_on_port_25(sasl_postfix, moatd_factory, certs):  # noqa: F811
    """AUT-01"""
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs)
    with m.client() as c:
        c.ehlo()
        starttls(c)
        assert "AUTH" not in c.ehlo().keywords()
        assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"])).code == 503


def test_auth_only_after_tls(sasl_postfix, moatd_factory, certs):  # noqa: F811
    """AUT-02 and TLS-06"""
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs)
    c = harness.Client(m.sub_port)
    r = c.ehlo()
    assert "AUTH" not in r.keywords() and "STARTTLS" in r.keywords()
    r = c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"]))
    assert r.code == 530 and r.enh == "5.7.0"
    starttls(c)
    r = c.ehlo()
    assert "AUTH" in r.keywords()
    auth_line = [l for l in r.lines if l.upper().startswith("AUTH")][0]
    assert "PLAIN" in auth_line and "LOGIN" in auth_line
    c.close()


@pytest.mark.timeout(90)
def test_auth_plain_and_login_good(sasl_postfix, moatd_factory, certs):  # noqa: F811
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs)
    c = sub_client(m)
    r = c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"]))
    assert r.code == 235, r
    assert c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"])).code == 503  # AUT-04 twice
    harness.smtp_transaction(c, harness.message(subject="auth plain", mfrom="alice@example.org"),
                             mfrom="alice@example.org")
    c.cmd("QUIT")
    c.close()
    c = sub_client(m)
    r = c.cmd("AUTH LOGIN")
    assert r.code == 334
    assert c.cmd(b64("bob@example.org")).code == 334
    assert c.cmd(b64(PASSWORDS["bob@example.org"])).code == 235
    c.cmd("QUIT")
    c.close()
    m.wait_log(r'auth mech=PLAIN login="alice" result=ok')
    m.wait_log(r'auth mech=LOGIN login="bob@example.org" result=ok')
    sasl_postfix.wait_messages_with("auth plain")
    assert re.search(r"sasl_method=PLAIN, sasl_username=alice", sasl_postfix.log())


@pytest.mark.timeout(90)
def test_auth_failures_limited(sasl_postfix, moatd_factory, certs):  # noqa: F811
    """AUT-03, AUT-08: 535 relayed and delayed; the limit holds across reconnects."""
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs)
    c = sub_client(m, source="127.0.0.10")
    t0 = time.monotonic()
    r1 = c.cmd("AUTH PLAIN " + plain("alice", "wrong-password"))
    assert r1.code == 535
    assert time.monotonic() - t0 >= 0.2
    r2 = c.cmd("AUTH PLAIN " + plain("nosuchuser", "wrong-password"))
    assert r2.code == 535 and r2.enh == r1.enh           # no user enumeration
    r3 = c.cmd("AUTH PLAIN " + plain("alice", "wrong-again"))
    assert r3.code == 421
    c.wait_closed(5)
    c = sub_client(m, source="127.0.0.10")
    r = c.cmd("AUTH PLAIN " + plain("alice", PASSWORDS["alice"]))
    assert r.code == 421, r                               # counters survive reconnects
    c.wait_closed(5)
    m.wait_log(r"auth refused reason=too-many-failures")


def test_auth_exchange_edge_cases(sasl_postfix, moatd_factory, certs):  # noqa: F811
    """AUT-04: cancel, unknown mechanism, bad base64, empty initial response."""
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs,
                  **{"auth-max-failures": "10"})
    c = sub_client(m, source="127.0.0.11")
    assert c.cmd("AUTH GSSAPI").code == 504
    assert c.cmd("AUTH PLAIN not*base64").code == 501
    assert c.cmd("AUTH LOGIN").code == 334
    assert c.cmd("*").code == 501                          # cancelled
    assert c.cmd("AUTH LOGIN").code == 334
    assert c.cmd("%%%%").code == 501                       # bad base64 response
    r = c.cmd("AUTH PLAIN =")                              # empty initial response
    assert r.code in (334, 501, 535), r
    if r.code == 334:
        assert c.cmd(plain("alice", PASSWORDS["alice"])).code == 235
    assert c.cmd("NOOP").code == 250
    c.close()


def test_swaks_auth(sasl_postfix, moatd_factory, certs):  # noqa: F811
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs)
    r = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % m.sub_port, "--tls",
                        "-a", "LOGIN", "-au", "alice", "-ap", PASSWORDS["alice"],
                        "--from", "alice@example.org", "--to", "user@example.org",
                        "--header", "Subject: swaks auth", "--timeout", "15",
                        "--local-interface", "127.0.0.13"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=40)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert "235 " in out
    sasl_postfix.wait_messages_with("swaks auth")


def test_passwords_never_logged(sasl_postfix, moatd_factory, certs):  # noqa: F811
    """AUT-06: log-level debug, every way of sending a password."""
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs,
                  **{"auth-max-failures": "10"})
    c = sub_client(m, source="127.0.0.12")
    assert c.cmd("AUTH PLAIN " + plain("alice", "WrongPassWord77")).code == 535
    assert c.cmd("AUTH LOGIN " + b64("alice")).code == 334
    assert c.cmd(b64(PASSWORDS["alice"])).code == 235
    c.cmd("QUIT")
    c.close()
    time.sleep(0.3)
    log = m.log()
    for secret in ("WrongPassWord77", PASSWORDS["alice"], plain("alice", "WrongPassWord77"),
                   b64(PASSWORDS["alice"])):
        assert secret not in log, secret
    assert "auth mech=LOGIN" in log


def test_xclient_login_on_new_connection(fake_factory, moatd_factory, certs):  # noqa: F811
    """After AUTH, an upstream connection made later carries XCLIENT LOGIN=."""
    state = {"mails": 0}

    def on_mail(arg):
        state["mails"] += 1
        return "CLOSE" if state["mails"] == 1 else None
    f = fake_factory(caps=list(harness.DEFAULT_CAPS) + ["AUTH PLAIN LOGIN"],
                     replies={"AUTH": "235 2.7.0 Authentication successful", "MAIL": on_mail})
    m = sub_moatd(moatd_factory, f.address, certs)
    c = sub_client(m)
    assert c.cmd("AUTH PLAIN " + plain("carol", "pw")).code == 235
    assert c.cmd("MAIL FROM:<carol@example.org>").cls == 4        # upstream lost
    assert c.cmd("MAIL FROM:<carol@example.org>").code == 250     # a new connection
    c.close()
    xcl = [l for l in f.all_lines() if l.startswith(b"XCLIENT")]
    assert any(b"LOGIN=carol" in l for l in xcl), xcl
    assert not any(b"LOGIN=" in l for l in xcl[:1])


def test_auth_initial_response_length(fake_factory, moatd_factory, certs):  # noqa: F811
    """LEN-08: an initial response of 12288 octets goes to the upstream;
    12289 octets and 100 KB get 500 5.5.6, and the session goes on."""
    f = fake_factory(caps=list(harness.DEFAULT_CAPS) + ["AUTH PLAIN LOGIN"],
                     replies={"AUTH": "535 5.7.8 Authentication credentials invalid"})
    m = sub_moatd(moatd_factory, f.address, certs, **{"auth-failure-delay": "0"})
    c = sub_client(m)
    ok = base64.b64encode(b"\0alice\0" + b"p" * (9216 - 7)).decode()
    assert len(ok) == 12288
    r = c.cmd("AUTH PLAIN " + ok)
    assert r.code == 535, r                                 # the upstream's answer
    assert any(l.startswith(b"AUTH PLAIN " + ok[:100].encode()) and len(l) >= 12288 + 11
               for l in f.all_lines()), [l[:40] for l in f.all_lines()]
    r = c.cmd("AUTH PLAIN " + "A" * 12289)
    assert (r.code, r.enh) == (500, "5.5.6"), r
    c.send(b"AUTH PLAIN " + b"A" * 100000 + b"\r\n")
    r = c.reply()
    assert (r.code, r.enh) == (500, "5.5.6"), r
    assert c.cmd("NOOP").code == 250
    c.close()


# twenty passwords, one per way of sending it (AUT-06, issue 15): none of
# them may reach the log at any level, in clear or in base64
TWENTY = ["Pw%02d-%s" % (i, w) for i, w in enumerate(
    "Zebra7! Quartz9$ Mango3# Violet8& Falcon2* Ember5% Cobalt4@ Lotus6+ Raven1= Tundra0~ "
    "Saffron3^ Glacier8? Nimbus2x Orchid5; Pepper7, Quill1. Rustic9_ Sonnet4[ Thistle6] "
    "Umber2{".split())]


def _secret_forms(pw):
    return [pw, b64(pw), plain("alice", pw), plain("bob@example.org", pw),
            b64("\0\0" + pw)[4:-4], b64(pw)[:-4] if len(b64(pw)) > 8 else b64(pw)]


@pytest.mark.timeout(150)
def test_twenty_passwords_every_auth_path(sasl_postfix, moatd_factory, certs):  # noqa: F811
    """Issue 15: every AUTH path (PLAIN, LOGIN, initial responses, cancel,
    refused 530/503, pipelined, TLS and plaintext) with a password each;
    the debug log holds none of them, lines after a refused AUTH are
    counted (lines_suppressed=N), a password typed as the user name is
    only hashed, and the authenticated message gets auth=pass in the
    Authentication-Results field (which moat adds when a check runs: DKIM
    here)."""
    m = sub_moatd(moatd_factory, "127.0.0.1:%d" % sasl_postfix.port, certs,
                  **{"auth-max-failures": "50", "auth-failure-delay": "0", "dkim": "yes"})
    pw = iter(TWENTY)
    src = iter("127.0.0.%d" % i for i in range(40, 80))

    # plaintext submission: 530 before STARTTLS, the client goes on anyway
    c = sub_client(m, tls=False, source=next(src))
    assert c.cmd("AUTH PLAIN " + plain("alice", next(pw))).code == 530
    assert c.cmd("AUTH LOGIN").code == 530
    assert c.cmd(b64("alice")).code == 500
    assert c.cmd(b64(next(pw))).code == 500
    assert c.cmd("AUTH LOGIN " + b64("alice")).code == 530
    assert c.cmd(b64(next(pw))).code == 500
    # pipelined after the 530
    c.send(("AUTH LOGIN\r\n%s\r\n%s\r\nNOOP\r\n" % (b64("alice"), b64(next(pw)))).encode())
    assert [c.reply().code for _ in range(4)] == [530, 500, 500, 250]
    c.close()

    # port 25: 503, the client sends its lines anyway (plaintext and TLS)
    for tls in (False, True):
        c = harness.Client(m.port, source=next(src), timeout=20)
        c.ehlo()
        if tls:
            starttls(c)
            c.ehlo()
        assert c.cmd("AUTH LOGIN").code == 503
        assert c.cmd(b64("alice")).code == 500
        assert c.cmd(b64(next(pw))).code == 500
        assert c.cmd("AUTH PLAIN " + plain("alice", next(pw))).code == 503
        c.close()

    # over TLS, failed logins, each from an address of its own (Dovecot's
    # penalty per address)
    c = sub_client(m, source=next(src))
    assert c.cmd("AUTH PLAIN " + plain("alice", next(pw))).code == 535        # PLAIN + IR
    c.close()
    c = sub_client(m, source=next(src))
    assert c.cmd("AUTH PLAIN").code == 334                                     # PLAIN, no IR
    assert c.cmd(plain("bob@example.org", next(pw))).code == 535
    c.close()
    c = sub_client(m, source=next(src))
    assert c.cmd("AUTH LOGIN").code == 334                                     # LOGIN
    assert c.cmd(b64("alice")).code == 334
    assert c.cmd(b64(next(pw))).code == 535
    c.close()
    c = sub_client(m, source=next(src))
    assert c.cmd("AUTH LOGIN " + b64("bob@example.org")).code == 334           # LOGIN + IR
    assert c.cmd(b64(next(pw))).code == 535
    c.close()
    typed_as_user = next(pw)
    c = sub_client(m, source=next(src))
    assert c.cmd("AUTH LOGIN").code == 334                                     # password as user name
    assert c.cmd(b64(typed_as_user)).code == 334
    assert c.cmd(b64(next(pw))).code == 535
    c.close()
    c = sub_client(m, source=next(src))                                        # cancelled, then sent anyway
    assert c.cmd("AUTH LOGIN").code == 334
    assert c.cmd(b64("alice")).code == 334
    assert c.cmd("*").code == 501
    assert c.cmd(b64(next(pw))).code == 500
    assert c.cmd("AUTH PLAIN").code == 334
    assert c.cmd("*").code == 501
    assert c.cmd(plain("alice", next(pw))).code == 500
    assert c.cmd("NOOP").code == 250
    c.close()
    c = sub_client(m, source=next(src))                                        # pipelined exchange
    c.send(("AUTH LOGIN\r\n%s\r\n%s\r\n" % (b64("alice"), b64(next(pw)))).encode())
    assert [c.reply().code for _ in range(3)] == [334, 334, 535]
    c.send(("AUTH PLAIN %s\r\nNOOP\r\n" % plain("alice", next(pw))).encode())
    assert [c.reply().code for _ in range(2)] == [535, 250]
    c.close()
    c = sub_client(m, source=next(src))                                        # bad base64 after a good user
    assert c.cmd("AUTH LOGIN " + b64("alice")).code == 334
    assert c.cmd(next(pw) + "*").code == 501
    assert c.cmd(b64(next(pw))).code == 500
    c.close()

    # the right password, at last: the message says auth=pass
    c = sub_client(m, source=next(src))
    assert c.cmd("AUTH LOGIN").code == 334
    assert c.cmd(b64("alice")).code == 334
    assert c.cmd(b64(PASSWORDS["alice"])).code == 235
    harness.smtp_transaction(c, harness.message(subject="auth twenty", mfrom="alice@example.org"),
                             mfrom="alice@example.org")
    c.cmd("QUIT")
    c.close()
    assert next(pw, None) is None, "every password used"

    time.sleep(0.3)
    log = m.log()
    for p in TWENTY + [PASSWORDS["alice"]]:
        for form in _secret_forms(p):
            assert form not in log, (p, form)
    assert re.search(r"auth mech=LOGIN login_hash=[0-9a-f]{16} result=failed", log), log
    assert re.search(r'auth mech=LOGIN login="bob@example.org" result=failed', log)
    assert "lines_suppressed=" in log
    n = sum(int(x) for x in re.findall(r"lines_suppressed=(\d+)", log))
    assert n == 12, n
    got = sasl_postfix.wait_messages_with("auth twenty")
    assert len(got) == 1
    text = got[0].decode(errors="replace")
    assert re.search(r"Authentication-Results: [^\n]*(\n\s[^\n]*)*auth=pass\s+smtp\.auth=alice",
                     text), text
