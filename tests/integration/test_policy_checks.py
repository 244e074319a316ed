"""Issue 16: a policy that is hard to get wrong. Every bad file below is
refused by `moatd -n` and by `moatctl check` alike, with file:line:col and
(for a word of a fixed vocabulary) the valid words; the ordering warnings
fire on an include placed after a greylist rule and on a rule that repeats
an earlier final rule; the shipped sample.conf (with its moat.d/ example)
gives no warning."""

import shutil
import subprocess

import pytest

import harness

HEAD = "listen 127.0.0.1:2525\nupstream 127.0.0.1:10025\n"
SPF = "none, neutral, pass, fail, softfail, temperror, permerror"
DKIM = "none, pass, fail, neutral, policy, temperror, permerror"
DMARC = "none, pass, fail, temperror, permerror"

# name, policy lines after HEAD (so the first is line 3), expected error
BAD = [
    ("spf-fial", 'on rcpt spf is fial reject 550 5.7.1 "x"',
     f'3:16: error: spf is never "fial" (valid: {SPF})'),
    ("spf-pas", 'on mail spf is pas accept', f'3:16: error: spf is never "pas" (valid: {SPF})'),
    ("spf-soft-fail", 'on mail spf is soft-fail accept',
     f'3:16: error: spf is never "soft-fail" (valid: {SPF})'),
    ("spf-tempfail", 'on mail spf is tempfail accept',
     f'3:16: error: spf is never "tempfail" (valid: {SPF})'),
    ("spf-helo-failed", 'on helo spf-helo is failed accept',
     f'3:21: error: spf-helo is never "failed" (valid: {SPF})'),
    ("dkim-passed", 'on data dkim is passed accept',
     f'3:17: error: dkim is never "passed" (valid: {DKIM})'),
    ("dkim-invalid", 'on data dkim is invalid accept',
     f'3:17: error: dkim is never "invalid" (valid: {DKIM})'),
    ("dmarc-failure", 'on data dmarc is failure accept',
     f'3:18: error: dmarc is never "failure" (valid: {DMARC})'),
    ("dmarc-policy-rejct", 'on data dmarc-policy is rejct accept',
     '3:25: error: dmarc-policy is never "rejct" (valid: none, quarantine, reject)'),
    ("dmarc-policy-quarantined", 'on data dmarc-policy is quarantined accept',
     '3:25: error: dmarc-policy is never "quarantined" (valid: none, quarantine, reject)'),
    ("tls-version-bare", 'on connect tls-version is 1.2 accept',
     '3:27: error: tls-version is never "1.2" (valid: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)'),
    ("word-list-misspelt", 'list r word { pass fial }\non mail spf in r accept',
     f'4:16: error: list r has "fial", which spf never is (valid: {SPF})'),
    ("net-list-for-domain", 'list n net { 192.0.2.0/24 }\non rcpt rcpt-domain in n accept',
     '4:24: error: rcpt-domain cannot be looked up in the network list n (it needs a domain list)'),
    ("domain-list-for-ip", 'list d domain { a.test }\non connect client-ip in d accept',
     '4:25: error: client-ip cannot be looked up in the domain list d (it needs a net list)'),
    ("word-list-for-sender", 'list w word { a }\non mail sender in w accept',
     '4:19: error: sender cannot be looked up in the word list w (it needs an address or domain list)'),
    ("rcpt-count-range", 'on rcpt rcpt-count > 1000000 accept',
     '3:22: error: rcpt-count is between 0 and 100000, found "1000000"'),
    ("size-negative", 'on data size < -5 accept',
     '3:16: error: size is between 0 and 1099511627776, found "-5"'),
    ("policy-mode-word", 'policy-mode dry',
     '3:13: error: policy-mode: unknown word "dry" (expected enforce or monitor)'),
    ("include-mode-word", 'include "/dev/null" dry',
     '3:21: error: include takes one name and then monitor or enforce; unexpected dry'),
]


def moatctl(*args):
    return subprocess.run([harness.moatctl_path(), *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)


@pytest.mark.parametrize("name,text,error", BAD, ids=[b[0] for b in BAD])
def test_bad_value_refused(workdir, name, text, error):
    rc, out, p = harness.moatd_check(HEAD + text + "\n", workdir, name + ".conf")
    assert rc != 0, out
    assert f"{p}:{error}" in out, out
    assert "configuration OK" not in out
    r = moatctl("check", str(p))
    out2 = r.stdout.decode(errors="replace")
    assert r.returncode != 0, out2
    assert f"{p}:{error}" in out2, out2


def test_include_after_greylist_warns(workdir):
    d = workdir / "inc"
    (d / "moat.d").mkdir(parents=True)
    (d / "moat.d" / "partners.conf").write_text(
        "list partners domain { partner.test }\n"
        "on rcpt rcpt-domain is example.net and sender-domain in partners accept\n")
    main = d / "moat.conf"
    main.write_text(HEAD + "list trusted net { 127.0.0.0/8 }\n"
                    "on rcpt not client-ip in trusted greylist\n"
                    'include "moat.d/*.conf"\n')
    want = (f"{main}:5:1: warning: {d}/moat.d/partners.conf:2: this rcpt rule comes after "
            f"the greylist rule at {main}:4, which decides first (its accept cannot spare a "
            "client from greylisting): put the include before that rule")
    rc, out, _ = harness.moatd_check(main.read_text(), d, "moat.conf")
    assert rc == 0 and want in out, out
    r = moatctl("check", str(main))
    assert r.returncode == 0 and want in r.stdout.decode(), r.stdout
    # the include first: no warning
    main.write_text(HEAD + "list trusted net { 127.0.0.0/8 }\n"
                    'include "moat.d/*.conf"\n'
                    "on rcpt not client-ip in trusted greylist\n")
    r = moatctl("check", str(main))
    assert r.returncode == 0 and ": warning:" not in r.stdout.decode(), r.stdout


def test_include_after_catch_all_warns(workdir):
    d = workdir / "inc2"
    d.mkdir()
    (d / "extra.conf").write_text("on mail auth accept\non rcpt auth accept\n")
    main = d / "moat.conf"
    main.write_text(HEAD + 'on mail true reject 550 5.7.1 "closed"\ninclude "extra.conf"\n')
    r = moatctl("check", str(main))
    out = r.stdout.decode()
    assert r.returncode == 0, out
    assert (f"{main}:4:1: warning: {d}/extra.conf:1: this mail rule comes after the catch-all "
            f"rule at {main}:3, which decides first for every session") in out, out
    assert "this rcpt rule" not in out, out      # nothing decides every rcpt


def test_identical_later_rule_warns(workdir):
    text = (HEAD + 'on rcpt spf is fail and not auth reject 550 5.7.23 "spf"\n'
            'on rcpt not auth and spf is fail reject 550 5.7.1 "again"\n'
            'on rcpt spf is fail reject 550 5.7.1 "broader: runs"\n'
            'on rcpt spf is fail tempfail 451 4.7.1 "same as line 5"\n')
    rc, out, p = harness.moatd_check(text, workdir, "dup.conf")
    assert rc == 0, out
    assert (f"{p}:4:1: warning: this rule can never run: whenever its condition holds, the "
            "rule at line 3 (a part of this condition) matches first and decides the rcpt") in out
    assert (f"{p}:6:1: warning: this rule can never run: whenever its condition holds, the "
            "rule at line 5 (the same condition) matches first and decides the rcpt") in out
    assert f"{p}:5:1" not in out, out


def test_sample_conf_no_warning(workdir):
    d = workdir / "sample"
    shutil.copytree(harness.REPO / "moat.d", d / "moat.d")
    shutil.copy(harness.REPO / "sample.conf", d / "moat.conf")
    for cmd in ([harness.moatd_path(), "-n", "-f", str(d / "moat.conf")],
                [harness.moatctl_path(), "check", str(d / "moat.conf")]):
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=20)
        out = r.stdout.decode()
        assert r.returncode == 0 and "configuration OK" in out, out
        assert ": warning:" not in out, out
    # the example exception is read: the include is live
    r = moatctl("explain", str(d / "moat.conf"), "--ip", "192.0.2.7", "--helo", "mx.partner.test",
                "--from", "a@partner.test", "--rcpt", "u@example.org", "--no-network")
    assert "moat.d/example.conf:11" in r.stdout.decode(), r.stdout
