"""Issue 16: `moatctl test FILE`. The shipped sample.tests passes against
sample.conf (the README's scenarios); a scenario whose expectation is
wrong is a FAIL with a diff and a non-zero exit; a misspelt assumed
result is refused with the valid words, never counted as a pass."""

import shutil
import subprocess

import harness


def moatctl(*args, cwd=None):
    r = subprocess.run([harness.moatctl_path(), *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, cwd=cwd)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def test_sample_tests_pass():
    rc, out, err = moatctl("test", str(harness.REPO / "sample.tests"))
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[-1] == "%d passed, 0 failed" % sum(l.startswith("PASS ") for l in lines), out
    for name in ("inbound mail to a local domain", "relay denied to strangers",
                 "authenticated submission to any domain", "sender not owned by the login"):
        assert "PASS " + name in lines, out


def make_tests(workdir, tests):
    d = workdir / "pt"
    d.mkdir()
    shutil.copy(harness.REPO / "sample.conf", d / "sample.conf")
    shutil.copytree(harness.REPO / "moat.d", d / "moat.d")
    (d / "x.tests").write_text("policy sample.conf\n" + tests)
    return d / "x.tests"


def test_failure_shows_a_diff(workdir):
    f = make_tests(workdir, "test wrong on purpose\n ip 198.51.100.7\n helo mx.s.test\n"
              " from <a@s.test>\n rcpt <x@elsewhere.test>\n"
              " assume fcrdns=pass spf=pass greylist=passed dnsbl=none\n"
              " expect rcpt continue\n"
              "test right\n ip 127.0.0.1\n expect connect accept\n")
    rc, out, err = moatctl("test", str(f))
    assert rc == 1, out + err
    assert "FAIL wrong on purpose\n  - rcpt continue\n" in out, out
    assert "  + rcpt reject 554 5.7.1 Relay access denied\n" in out, out
    assert "PASS right\n" in out and out.endswith("1 passed, 1 failed\n"), out


def test_greylist_states_are_assumed_not_passed(workdir):
    base = (" ip 198.51.100.7\n helo mx.s.test\n from <a@s.test>\n rcpt <u@example.org>\n"
            " assume fcrdns=fail dnsbl=none spf=pass greylist=%s\n")
    f = make_tests(workdir, "".join(
        "test %s\n" % st + base % st + " expect rcpt %s\n" % want for st, want in [
            ("new", "tempfail 451 4.7.1 greylisted, please retry in 5 minutes"),
            ("early", "tempfail 451 4.7.1 greylisted, please retry in 5 minutes"),
            ("passed", "continue"), ("allowlisted", "continue")]))
    rc, out, err = moatctl("test", str(f))
    assert rc == 0 and out.endswith("4 passed, 0 failed\n"), out + err


def test_bad_assumption_refused(workdir):
    f = make_tests(workdir, "test typo\n ip 198.51.100.7\n helo h.test\n from <a@s.test>\n"
              " assume spf=fial\n expect mail continue\n")
    rc, out, err = moatctl("test", str(f))
    assert rc == 1 and "FAIL typo" in out, out + err
    assert "--spf fial: spf is never that (valid: none, neutral, pass, fail, softfail, " \
           "temperror, permerror)" in err, err


def test_explain_prints_assumptions():
    rc, out, err = moatctl("explain", str(harness.REPO / "sample.conf"), "--ip", "198.51.100.7",
                           "--helo", "mx.s.test", "--from", "<a@s.test>",
                           "--rcpt", "<u@example.org>", "--no-network",
                           "--fcrdns", "fail", "--greylist", "new", "--spf", "pass")
    assert rc == 1, out + err
    assert "assume fcrdns=fail" in out and "assume greylist=new" in out, out
    assert "assume spf=pass" in out and "check spf" not in out, out
    assert "result: tempfail 451 4.7.1 greylisted, please retry in 5 minutes" in out, out
    # without --greylist, the pass is said to be assumed
    rc, out, err = moatctl("explain", str(harness.REPO / "sample.conf"), "--ip", "198.51.100.7",
                           "--helo", "mx.s.test", "--from", "<a@s.test>",
                           "--rcpt", "<u@example.org>", "--no-network")
    assert "check greylist=not-asked (assumed passed: no --greylist" in out, out
    assert "counted as a pass" not in out
