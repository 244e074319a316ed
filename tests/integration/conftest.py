"""pytest fixtures for the moatd integration tests (see harness.py).

Per-test timeout: pytest-timeout may be absent, so every test body runs under
SIGALRM (default MOAT_TEST_TIMEOUT=60 s; @pytest.mark.timeout(N) overrides).
"""

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

DEFAULT_TIMEOUT = float(os.environ.get("MOAT_TEST_TIMEOUT", "60"))


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit (SIGALRM)")
    config.addinivalue_line("markers", "postfix: needs a private Postfix instance (root)")


class TestTimeout(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    m = item.get_closest_marker("timeout")
    limit = float(m.args[0]) if m and m.args else DEFAULT_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded its %.0f s limit" % limit)
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# directories: world-traversable (smtp-sink runs as nobody, Postfix as
# postfix), unlike pytest's 0700 tmp_path.

@pytest.fixture(scope="session")
def workroot():
    d = tempfile.mkdtemp(prefix="moat-it-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    if not os.environ.get("MOAT_KEEP"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def workdir(workroot, request):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    return harness.make_dir(workroot / name)


@pytest.fixture(scope="session")
def moatd_binary():
    p = harness.moatd_path()
    if not os.access(p, os.X_OK):
        pytest.fail("moatd binary missing: %s (build with `make asan`, or set MOATD)" % p)
    return p


# ---------------------------------------------------------------------------
# upstreams

@pytest.fixture
def sink_factory(workdir):
    started = []

    def make(extra=(), name=None):
        s = harness.Sink(workdir, extra=extra, name=name or "sink%d" % len(started))
        started.append(s)
        return s.start()
    yield make
    for s in started:
        s.stop()


@pytest.fixture
def sink(sink_factory):
    return sink_factory()


@pytest.fixture
def fake_factory():
    started = []

    def make(**kw):
        f = harness.FakeUpstream(**kw)
        started.append(f)
        return f.start()
    yield make
    errors = []
    for f in started:
        f.stop()
        errors += f.errors
    assert not errors, "fake upstream internal errors: %r" % errors


@pytest.fixture
def fake(fake_factory):
    return fake_factory()


@pytest.fixture(scope="session")
def postfix(workroot):
    if not harness.IS_ROOT:
        pytest.skip("the private Postfix upstream needs root")
    pf = harness.Postfix(harness.make_dir(workroot / "session"))
    try:
        pf.start()
    except Exception:
        pf.stop()
        raise
    yield pf
    pf.stop()


@pytest.fixture(scope="module")
def sasl_postfix(request):
    """A private Postfix with SASL from a private Dovecot (harness.Dovecot,
    users harness.SASL_PASSWORDS), one per test module. A module may set
    SASL_POSTFIX_MAIN = {main.cf name: value} to add or change settings
    (for example more virtual_mailbox_domains)."""
    if not harness.IS_ROOT:
        pytest.skip("Postfix and Dovecot need root")
    base = harness.make_dir(Path("/tmp") / ("moat-auth-%d" % time.time_ns()))
    dv = pf = None
    try:
        dv = harness.Dovecot(base).start()
        main = {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": str(dv.socket),
            "smtpd_tls_auth_only": "no",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_client_auth_rate_limit": "0",
        }
        main.update(getattr(request.module, "SASL_POSTFIX_MAIN", {}))
        pf = harness.Postfix(base, extra_main=main)
        pf.start()
        yield pf
    finally:
        if pf is not None:
            pf.stop()
        if dv is not None:
            dv.stop()
        if not os.environ.get("MOAT_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# moatd

def check_moatd_after(m):
    """Failures to report after a moatd instance stopped."""
    problems = []
    reports = m.sanitizer_reports()
    if reports:
        problems.append("sanitizer report in moatd log:\n  " + "\n  ".join(reports[:20]))
    if m.rc is not None and m.rc != 0:
        problems.append("moatd exited %s after SIGTERM (expected 0)" % m.rc)
    return problems


@pytest.fixture
def moatd_factory(workdir, moatd_binary, request):
    """make(upstream="127.0.0.1:port", **config) -> a started Moatd."""
    started = []

    def make(upstream, start=True, **opts):
        m = harness.Moatd(workdir, upstream, name="moatd%d" % len(started), **opts)
        started.append(m)
        return m.start() if start else m
    yield make
    problems = []
    for m in started:
        was_alive = m.proc is not None and m.proc.poll() is None
        m.stop()
        if m.proc is not None and not was_alive and m.rc != 0:
            problems.append("moatd died during the test with rc %s" % m.rc)
        problems += check_moatd_after(m)
        if problems:
            problems.append("log tail (%s):\n%s" % (m.log_path, m.log()[-4000:]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def dns():
    """A DNS server on loopback (dnsserver.py), authoritative for test. and
    the reverse zones of 127/8 and ::1; moatd uses it with
    resolver=dns.resolver."""
    from dnsserver import DnsServer
    srv = DnsServer(zones=["test", "127.in-addr.arpa", "ip6.arpa"])
    srv.start()
    srv.resolver = "forward " + srv.address
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def redis_factory(workdir):
    """make(**kw) -> a started harness.Redis; all stopped by PID after."""
    started = []

    def make(**kw):
        r = harness.Redis(workdir, name="redis%d" % len(started), **kw)
        started.append(r)
        return r.start()
    yield make
    for r in reversed(started):
        r.stop()


@pytest.fixture
def moatd_sink(sink, moatd_factory):
    """moatd in front of a plain smtp-sink: (moatd, sink)."""
    return moatd_factory(sink.address), sink


@pytest.fixture
def moatd_fake(fake, moatd_factory):
    """moatd in front of the recording fake upstream: (moatd, fake)."""
    return moatd_factory(fake.address), fake
