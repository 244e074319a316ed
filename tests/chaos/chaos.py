#!/usr/bin/python3
"""make chaos: a real sending Postfix delivers N messages through moatd to a
real receiving Postfix while faults are injected; then every Message-ID is
counted in the receiving maildir.

    tests/chaos/chaos.py [-n N] [--seed S] [--keep]     (root: two Postfix)

Parts, all on loopback, all started here and stopped by PID (or by
`postfix -c DIR stop` for the Postfix instances):

  sender     Postfix, relayhost [127.0.0.1]:moatd, retries in seconds
             (queue_run_delay 2s, minimal_backoff_time 2s,
             maximal_backoff_time 8s); the messages are injected over SMTP
             into its own smtpd
  moatd      build/moatd (MOATD overrides): greylisting on Redis through
             Sentinel (greylist-on-error tempfail, no local cache, no
             allow-listing: every RCPT asks Redis), a DNSBL zone served by
             tests/integration/dnsserver.py, XCLIENT to the receiver
  receiver   Postfix, example.org delivered into a maildir
  redis      a master, a replica and one redis-sentinel

Faults, one every 2-5 s (each kind once per round, in random order,
--seed) while messages are injected and 30 s after, and SIGHUP to moatd
every 3 s throughout:

  moatd-term     SIGTERM (drain), then start again
  moatd-kill     SIGKILL, then start again
  upstream       receiving Postfix stopped and started again
  redis-kill     the Redis master SIGKILLed, started again 3 s later
  redis-stop     the Redis master SIGSTOPped for 3 s
  failover       SENTINEL FAILOVER
  dns-late       DNSBL answers 3 s late (dns-timeout 2s) for 5 s
  dns-none       DNSBL queries dropped for 5 s

The report: injected, delivered (distinct Message-IDs), duplicated (extra
copies), lost (neither delivered nor still queued), still queued, faults
injected (by kind), messages retried (sender queue IDs deferred at least
once, and deferrals in all). Each duplicate is explained by the sender's
log: Postfix says "message may be sent more than once" when the connection
ended after the end-of-data dot without a reply; a duplicate without that
line is unexplained. Exit status 0 only with 0 lost, 0 unexplained
duplicates and nothing left in the queue.
"""

import argparse
import os
import random
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import harness  # noqa: E402
from harness import Moatd, Postfix, Redis, Sentinel, free_port, wait_for  # noqa: E402
from dnsserver import DnsServer  # noqa: E402

RUN_LIMIT = 3600          # the whole run, seconds: a hard bound
SETTLE_LIMIT = 600        # after the faults stop, for the queue to empty


def log(fmt, *a):
    print("chaos: " + (fmt % a if a else fmt), flush=True)


class Chaos:
    def __init__(self, args):
        self.args = args
        self.n = args.n
        self.rnd = random.Random(args.seed)
        self.work = harness.make_dir(Path(args.workdir))
        self.faults = {}
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.moatd = None
        self.moatd_gen = 0
        self.moatd_starts = 0
        self.sender = None
        self.moatd_port = free_port()
        self.injected = []
        self.t0 = time.monotonic()

    # -- parts
    def start_parts(self):
        self.dns = DnsServer(zones=["test", "127.in-addr.arpa"])
        self.dns.start()
        self.dns.add("2.0.0.127.bl.test", "A", "127.0.0.2")     # the RFC 5782 test point
        self.master = Redis(self.work, name="redis-a").start()
        self.replica = Redis(self.work, name="redis-b",
                             replica_of=(self.master.host, self.master.port)).start()
        self.redises = {self.master.port: self.master, self.replica.port: self.replica}
        self.sentinel = Sentinel(self.work, self.master).start()
        self.receiver = Postfix(harness.make_dir(self.work / "recv"),
                                extra_main={"smtpd_timeout": "30s"})
        self.receiver.start()
        self.start_moatd()
        self.sender = Postfix(harness.make_dir(self.work / "send"), extra_main={
            "myhostname": "sender.test",
            "mydomain": "sender.test",
            "myorigin": "sender.test",
            "relayhost": "[127.0.0.1]:%d" % self.moatd_port,
            "virtual_mailbox_domains": "",
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "8s",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "30s",
            "smtp_data_done_timeout": "60s",
            "default_destination_concurrency_limit": "10",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "smtpd_timeout": "30s",
        })
        self.sender.start()

    def start_moatd(self):
        for attempt in range(3):
            try:
                return self._start_moatd()
            except harness.HarnessError:
                if self.sender is not None or attempt == 2:
                    raise
                # the first start only: the port picked a moment ago may
                # have been taken since (the sender is told it later)
                self.moatd_port = free_port()

    def _start_moatd(self):
        self.moatd_gen += 1
        m = Moatd(self.work, "127.0.0.1:%d" % self.receiver.port, name="moatd%d" % self.moatd_gen,
                  listen="127.0.0.1:%d" % self.moatd_port, workers="2",
                  upstream_connect_timeout="3s", upstream_timeout="20s",
                  upstream_keepalive="10s", drain_timeout="3s",
                  command_deadline="60s", session_deadline="300s",
                  max_sessions="200", max_sessions_per_client="100",
                  log_level="info", resolver="forward " + self.dns.address,
                  dns_timeout="2s", dnsbl=["bl.test weight 5"],
                  redis="sentinel %s master mm" % self.sentinel.address,
                  redis_timeout="500ms", greylist_delay="2s", greylist_on_error="tempfail",
                  # every decision asks Redis: its faults must show
                  greylist_cache="0", greylist_allow_after="0",
                  on=['connect dnsbl-score >= 3 reject 554 5.7.1 "listed"',
                      "rcpt true greylist"])
        m.binary = os.environ.get("MOATD") or str(harness.REPO / "build" / "moatd")
        for _ in range(1 if self.sender is None else 3):
            try:
                m.start(timeout=20)
                break
            except harness.HarnessError:
                # the old moatd's socket may still be closing
                time.sleep(1)
        else:
            raise harness.HarnessError("moatd did not start (port %d)" % self.moatd_port)
        self.moatd = m
        self.moatd_starts += 1

    def stop_parts(self):
        for what, fn in (("sender", lambda: self.sender.stop()),
                         ("moatd", lambda: self.moatd.stop(timeout=30)),
                         ("receiver", lambda: self.receiver.stop()),
                         ("sentinel", lambda: self.sentinel.stop()),
                         ("redis", lambda: [r.stop() for r in self.redises.values()]),
                         ("dns", lambda: self.dns.stop())):
            try:
                fn()
            except Exception as e:      # keep stopping the others
                log("stopping %s: %r", what, e)

    # -- traffic
    def inject(self):
        """N messages into the sender's smtpd, spread over the first part of
        the run (about 20 messages a second), a few per connection."""
        i = 0
        for _ in range(self.n):
            if i >= self.n or self.stop_ev.is_set():
                break
            try:
                s = smtplib.SMTP("127.0.0.1", self.sender.port, timeout=30)
                s.ehlo("injector.test")
                for _ in range(10):
                    if i >= self.n:
                        break
                    mid = "chaos-%d-%d@sender.test" % (self.args.seed, i)
                    # 100 triplets (20 senders, 50 recipients): new
                    # ones greylisted, all of them looked up in Redis
                    frm, to = "a%d@sender.test" % (i % 20), "user%d@example.org" % (i % 50)
                    body = ("From: %s\r\nTo: %s\r\nSubject: chaos %d\r\n"
                            "Message-ID: <%s>\r\n\r\nmessage %d of the chaos run\r\n"
                            % (frm, to, i, mid, i))
                    s.sendmail(frm, [to], body)
                    self.injected.append(mid)
                    i += 1
                s.quit()
            except (OSError, smtplib.SMTPException) as e:
                log("inject: %r (retrying)", e)
                time.sleep(1)
            time.sleep(0.5)
        log("injected %d messages in %.0fs", len(self.injected), time.monotonic() - self.t0)

    # -- faults
    def count(self, kind):
        with self.lock:
            self.faults[kind] = self.faults.get(kind, 0) + 1

    def current_master(self):
        try:
            return self.redises.get(self.sentinel.master_port())
        except Exception:
            return None

    def fault(self, kind):
        m = self.moatd
        if kind == "moatd-term":
            m.proc.send_signal(signal.SIGTERM)
            try:
                m.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                log("moatd did not exit 40 s after SIGTERM: SIGKILL")
                m.proc.kill()
                m.proc.wait(timeout=10)
            m.rc = m.proc.returncode
            m.logf.close()
            if m.rc != 0:
                log("moatd exited %s after SIGTERM", m.rc)
            self.start_moatd()
        elif kind == "moatd-kill":
            m.proc.kill()
            m.proc.wait(timeout=10)
            m.rc = m.proc.returncode
            m.logf.close()
            time.sleep(0.5)
            self.start_moatd()
        elif kind == "upstream":
            self.receiver.stop()
            time.sleep(1)
            self.receiver.start()
        elif kind == "redis-kill":
            r = self.current_master()
            if r is None or r.proc is None:
                return False
            r.proc.kill()
            r.proc.wait(timeout=10)
            r.proc = None
            time.sleep(3)
            r.replica_of = None
            r.start()
        elif kind == "redis-stop":
            r = self.current_master()
            if r is None or r.proc is None:
                return False
            r.pause()
            time.sleep(3)
            r.resume()
        elif kind == "failover":
            import redis
            c = redis.Redis(host="127.0.0.1", port=self.sentinel.port, socket_timeout=3)
            try:
                c.execute_command("SENTINEL", "FAILOVER", "mm")
            except Exception as e:
                log("failover refused: %r", e)
                return False
            finally:
                c.close()
        elif kind == "dns-late":
            self.dns.set_delay("1.0.0.127.bl.test", 3)
            time.sleep(5)
            self.dns.set_delay("1.0.0.127.bl.test", 0)
        elif kind == "dns-none":
            self.dns.set_drop("1.0.0.127.bl.test", True)
            time.sleep(5)
            self.dns.set_drop("1.0.0.127.bl.test", False)
        return True

    def faults_loop(self, until):
        kinds = ["moatd-term", "moatd-kill", "upstream", "redis-kill", "redis-stop",
                 "failover", "dns-late", "dns-none"]
        round_ = []
        for _ in range(100000):
            if self.stop_ev.is_set() or time.monotonic() >= until():
                return
            time.sleep(self.rnd.uniform(2, 5))
            if not round_:
                # every kind once per round, in a random order
                round_ = list(kinds)
                self.rnd.shuffle(round_)
            kind = round_.pop()
            try:
                if self.fault(kind):
                    self.count(kind)
                    log("fault %s (t=%.0fs)", kind, time.monotonic() - self.t0)
            except Exception as e:
                log("fault %s failed: %r", kind, e)
                if self.moatd is None or not self.moatd.alive():
                    self.start_moatd()

    def hup_loop(self):
        for _ in range(100000):
            if self.stop_ev.wait(3):
                return
            m = self.moatd
            if m is not None and m.alive():
                try:
                    m.proc.send_signal(signal.SIGHUP)
                    self.count("sighup")
                except ProcessLookupError:
                    pass

    # -- counting
    def queue_size(self):
        r = subprocess.run(["postqueue", "-c", str(self.sender.etc), "-p"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
        out = r.stdout.decode(errors="replace")
        if "Mail queue is empty" in out:
            return 0
        m = re.search(r"in (\d+) Request", out)
        return int(m.group(1)) if m else -1

    def flush(self):
        subprocess.run(["postqueue", "-c", str(self.sender.etc), "-f"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)

    def report(self):
        seen = {}
        for msg in self.receiver.messages():
            m = re.search(rb"(?im)^Message-ID:\s*<([^>]+)>", msg)
            if m:
                k = m.group(1).decode()
                seen[k] = seen.get(k, 0) + 1
        injected = set(self.injected)
        delivered = [k for k in injected if k in seen]
        dups = {k: c - 1 for k, c in seen.items() if c > 1}
        queued = self.queue_size()
        slog = self.sender.log()
        qid_of = {}
        for m in re.finditer(r"\b([0-9A-F]{6,})\b: message-id=<([^>]+)>", slog):
            qid_of.setdefault(m.group(2), set()).add(m.group(1))
        deferred = re.findall(r"\b([0-9A-F]{6,})\b: to=<[^>]*>, relay=.*status=deferred", slog)
        # the connection ended after the dot, no reply: Postfix's own words
        # (not "delivery temporarily suspended: ...", which only repeats
        # another delivery's reason for messages never tried)
        cut = [l for l in slog.splitlines() if "may be sent more than once" in l
               and "temporarily suspended" not in l]
        explained, unexplained = 0, []
        for k, extra in dups.items():
            why = False
            for q in qid_of.get(k, ()):
                if any(re.search(r"\b%s\b: " % q, l) for l in cut):
                    why = True
            if why:
                explained += extra
            else:
                unexplained.append(k)
        lost = [k for k in injected if k not in seen]
        bounced = len(re.findall(r"status=bounced", slog))
        r = {
            "injected": len(injected),
            "delivered": len(delivered),
            "duplicated": sum(dups.values()),
            "duplicates_explained": explained,
            "duplicates_unexplained": len(unexplained),
            "lost": len(lost) if queued == 0 else len(lost) - max(queued, 0),
            "not_delivered": len(lost),
            "still_queued": queued,
            "bounced": bounced,
            "cut_after_dot": len(cut),
            "retried_messages": len(set(deferred)),
            "deferrals": len(deferred),
            "faults": dict(sorted(self.faults.items())),
            "faults_total": sum(v for k, v in self.faults.items() if k != "sighup"),
            "moatd_starts": self.moatd_starts,
            "seconds": round(time.monotonic() - self.t0),
        }
        return r, unexplained, lost

    # -- the run
    def run(self):
        self.start_parts()
        wait_for(lambda: self.replica.client().info("replication").get("master_link_status")
                 == "up", 15)
        log("parts up: moatd 127.0.0.1:%d, receiver :%d, sender :%d, sentinel %s",
            self.moatd_port, self.receiver.port, self.sender.port, self.sentinel.address)
        injector = threading.Thread(target=self.inject, daemon=True)
        hup = threading.Thread(target=self.hup_loop, daemon=True)
        injector.start()
        hup.start()
        hard_end = self.t0 + RUN_LIMIT

        ended = []

        def fault_end():
            # faults go on while messages are injected, then 30 s more
            # (the retries), at least 60 s in all; never past the bound
            if injector.is_alive():
                return hard_end
            if not ended:
                ended.append(time.monotonic())
            return min(hard_end, max(ended[0] + 30, self.t0 + 60))
        self.faults_loop(fault_end)
        injector.join(timeout=60)
        self.stop_ev.set()
        hup.join(timeout=10)
        self.dns.set_delay("1.0.0.127.bl.test", 0)
        self.dns.set_drop("1.0.0.127.bl.test", False)
        log("faults over (t=%.0fs): %r; waiting for the sender's queue",
            time.monotonic() - self.t0, self.faults)
        settle = time.monotonic() + SETTLE_LIMIT
        for _ in range(SETTLE_LIMIT):
            q = self.queue_size()
            if q == 0 or time.monotonic() >= settle:
                break
            self.flush()
            time.sleep(3)
        time.sleep(3)       # the receiver's last deliveries into the maildir
        return self.report()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=int(os.environ.get("CHAOS_N", "5000")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("chaos: needs root (two private Postfix instances)", file=sys.stderr)
        return 2
    if args.workdir is None:
        import tempfile
        args.workdir = tempfile.mkdtemp(prefix="moat-chaos-", dir="/tmp")
        os.chmod(args.workdir, 0o755)
    c = Chaos(args)
    rc = 1
    try:
        r, unexplained, lost = c.run()
        print("chaos report:")
        for k, v in r.items():
            print("  %-24s %s" % (k, v))
        if unexplained:
            print("  unexplained duplicates: %s" % " ".join(unexplained[:20]))
        if lost:
            print("  not delivered: %s" % " ".join(sorted(lost)[:20]))
        rc = 0 if (r["lost"] == 0 and r["still_queued"] == 0 and
                   r["duplicates_unexplained"] == 0 and r["delivered"] == r["injected"]) else 1
    finally:
        c.stop_ev.set()
        c.stop_parts()
        if args.keep or rc != 0:
            print("chaos: work directory kept: %s" % args.workdir)
        else:
            import shutil
            shutil.rmtree(args.workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
