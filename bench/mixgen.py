#!/usr/bin/python3
"""bench/mixgen.py - the traffic-mix generator (issue 21).

Two halves:

* plan/zone (imported by bench/mix): a deterministic plan of N sessions
  drawn from a mix (shares of clean, DKIM-signed RSA/Ed25519, DNSBL-listed,
  SPF-fail, DMARC p=reject spoof, new greylist triplet), each from its own
  source address in 127.64.0.0/10, with a sender domain from a generated
  zone of --domains domains (SPF + DMARC records, DKIM keys), and a message
  size from 2 KiB to 200 KiB. Signed messages are signed once with dkimpy
  when the plan is made. `zone_records()` gives the DNS records for
  tests/integration/dnsserver.py.

* run (the client, run as its own process): asyncio, --concurrency
  sessions at once, each session bound to its own source address; one
  message per session; a greylisted recipient (4xx at RCPT) of a
  greylist-share session is retried once after --retry-delay. Bounded: at
  most the plan's sessions, each session and the whole run have deadlines.
  Prints JSON: the mix, counts by kind and outcome, p50/p99 of the time
  from the end of DATA ("." sent) to the final reply, wall time.

    bench/mixgen.py run --port 2525 --plan plan.json --concurrency 20

Standard library + dkimpy (Debian python3-dkim) only.
"""

import argparse
import asyncio
import base64
import json
import math
import os
import random
import statistics
import sys
import time

# The default mix (see bench/README.md, "Traffic mix", for the reasons).
DEFAULT_MIX = {
    "clean": 0.40,          # SPF pass, unsigned, DMARC pass by SPF alignment
    "dkim-rsa": 0.15,       # also DKIM-signed, RSA 2048
    "dkim-ed25519": 0.05,   # also DKIM-signed, Ed25519
    "dnsbl": 0.15,          # client listed in zen.bl.test (weight 3: refused at connect)
    "spf-fail": 0.08,       # sender domain's SPF does not cover the client: -all
    "dmarc-spoof": 0.07,    # header From: a p=reject domain, envelope elsewhere, unsigned
    "greylist": 0.10,       # new triplet: 4xx at RCPT, retried after the delay
}
# sizes: share, low, high (bytes), drawn log-uniform inside the band
SIZES = [(0.60, 2048, 8192), (0.30, 8192, 51200), (0.10, 51200, 204800)]
RCPT = "rcpt@mx.test"
ZONE = "test"
BL_ZONES = ("zen.bl.test", "sbl.bl.test")


def domain(i):
    return "d%05d.test" % i


def client_ip(i):
    """session i's source address: 127.64.0.0/10, never .0 or .255"""
    a, b, c = 64 + i // (256 * 254), (i // 254) % 256, 1 + i % 254
    return "127.%d.%d.%d" % (a, b, c)


def pick(rng, shares):
    x, acc = rng.random(), 0.0
    for k, v in shares.items():
        acc += v
        if x < acc:
            return k
    return list(shares)[-1]


def draw_size(rng):
    x, acc = rng.random(), 0.0
    for share, lo, hi in SIZES:
        acc += share
        if x < acc:
            break
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def domain_kind(i):
    """what domain i publishes: SPF fail for every 10th, p=reject for every 3rd"""
    return {"spf_fail": i % 10 == 9, "reject": i % 3 == 0}


def zone_records(ndomains, rsa_pub, ed_pub, listed_ips):
    """[(name, type, value)] for the DNS server"""
    out = []
    for i in range(ndomains):
        d, k = domain(i), domain_kind(i)
        out.append((d, "TXT", "v=spf1 ip4:192.0.2.0/24 -all" if k["spf_fail"]
                    else "v=spf1 ip4:127.0.0.0/8 -all"))
        out.append(("_dmarc." + d, "TXT", "v=DMARC1; p=%s" % ("reject" if k["reject"]
                                                             else "none")))
        out.append(("rsa._domainkey." + d, "TXT", "v=DKIM1; k=rsa; p=" + rsa_pub))
        out.append(("ed._domainkey." + d, "TXT", "v=DKIM1; k=ed25519; p=" + ed_pub))
    for z in BL_ZONES:      # the test points every DNSBL answers (RFC 5782)
        out.append(("2.0.0.127." + z, "A", "127.0.0.2"))
        out.append(("2.0.0.127." + z, "TXT", "test point"))
    for ip in listed_ips:
        rev = ".".join(reversed(ip.split(".")))
        out.append((rev + "." + BL_ZONES[0], "A", "127.0.0.2"))
    return out


def body(rng, size):
    line = b"The quick brown fox jumps over the lazy dog; moat mix benchmark text.\r\n"
    n = max(1, size // len(line))
    return line * n


def make_plan(n, ndomains, mix, seed, rsa_key, ed_key):
    """the sessions, deterministic for (n, ndomains, mix, seed)"""
    import dkim
    rng = random.Random(seed)
    good = [i for i in range(ndomains) if not domain_kind(i)["spf_fail"]]
    bad = [i for i in range(ndomains) if domain_kind(i)["spf_fail"]]
    reject = [i for i in good if domain_kind(i)["reject"]]
    sessions = []
    for s in range(n):
        kind = pick(rng, mix)
        size = draw_size(rng)
        di = rng.choice(bad if kind == "spf-fail" else good)
        mfrom = "u%d@%s" % (rng.randrange(1000), domain(di))
        hfrom = mfrom
        if kind == "dmarc-spoof":
            ri = rng.choice([i for i in reject if i != di] if len(reject) > 1 else reject)
            hfrom = "ceo@%s" % domain(ri)
        hdr = ("From: <%s>\r\nTo: <%s>\r\nSubject: mix %d %s\r\nMessage-ID: <%d.%d@mix.test>\r\n"
               "Date: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\n" % (hfrom, RCPT, s, kind, seed, s))
        msg = hdr.encode() + body(rng, size - len(hdr))
        if kind in ("dkim-rsa", "dkim-ed25519"):
            rsa = kind == "dkim-rsa"
            sig = dkim.sign(msg, b"rsa" if rsa else b"ed", domain(di).encode(),
                            rsa_key if rsa else ed_key,
                            signature_algorithm=b"rsa-sha256" if rsa else b"ed25519-sha256",
                            include_headers=[b"from", b"to", b"subject", b"message-id", b"date"])
            msg = sig + msg
        sessions.append({"i": s, "kind": kind, "ip": client_ip(s), "helo": "h%d.client.test" % s,
                         "mfrom": mfrom, "hfrom": hfrom, "size": len(msg),
                         "msg": base64.b64encode(msg).decode()})
    return sessions


def keys(outdir):
    """(rsa private PEM, rsa public b64, ed private b64 seed, ed public b64), made once"""
    import subprocess
    os.makedirs(outdir, exist_ok=True)
    rk = os.path.join(outdir, "mix-rsa.pem")
    if not os.path.exists(rk):
        subprocess.run(["openssl", "genrsa", "-out", rk, "2048"], check=True,
                       capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "rsa", "-in", rk, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    ek = os.path.join(outdir, "mix-ed25519.key")
    if not os.path.exists(ek):
        import nacl.signing
        with open(ek, "wb") as f:
            f.write(base64.b64encode(bytes(nacl.signing.SigningKey.generate())))
    import nacl.signing
    with open(ek, "rb") as f:
        seed = f.read()
    epub = base64.b64encode(bytes(nacl.signing.SigningKey(base64.b64decode(seed)).verify_key))
    with open(rk, "rb") as f:
        return f.read(), base64.b64encode(der).decode(), seed, epub.decode()


# What bench/mix's rules (MOAT_RULES there) decide for each kind: the reply that ends the
# session (mixclient --lookups: accept; refused at connect, rcpt, eod; grey:
# 4xx at RCPT, accepted on the retry).
VERDICT = {"clean": "accept", "dkim-rsa": "accept", "dkim-ed25519": "accept",
           "dnsbl": "connect", "spf-fail": "rcpt", "dmarc-spoof": "eod", "greylist": "grey"}
SELECTOR = {"dkim-rsa": "rsa", "dkim-ed25519": "ed"}


def floor_lookups(s):
    """the lookup floor of session s: (verdict, greylist decision 0/1, tokens).

    What any filter applying bench/mix's rules (DNSBL score at connect, SPF
    at RCPT, greylist, DMARC p=reject at the end of data, DKIM for DMARC)
    must ask for this session, from where it could first know the name, and
    before which reply it needs the answer. Each token is "SG:TYPE:NAME",
    S the point it is asked from (c: connection, m: MAIL FROM, b: start of
    the message, when the header is in), G the reply that waits for it (g:
    greeting, r: RCPT, e: end of data; asked only for a session that
    reaches DATA in one of its attempts). It is the least a filter can ask that asks every configured
    DNSBL zone: the client's address in each zone (every session), the envelope domain's SPF record (every
    session that gets to MAIL; the zone's SPF records need no further
    lookup: ip4 only), the DMARC record of the From domain (only sessions
    that reach DATA: an SPF failure is refused at RCPT before it matters;
    asked at MAIL FROM when the From domain is the envelope's, as a filter
    may guess, else when the header is in) and the DKIM key of a signed
    message. A greylist decision (one Redis call) for every RCPT that SPF
    does not refuse."""
    kind, verdict = s["kind"], VERDICT[s["kind"]]
    rev = ".".join(reversed(s["ip"].split(".")))
    toks = ["cg:A:%s.%s" % (rev, z) for z in BL_ZONES]
    if verdict == "connect":
        return verdict, 0, toks
    env = s["mfrom"].rsplit("@", 1)[1].lower()
    hdom = s.get("hfrom", s["mfrom"]).rsplit("@", 1)[1].lower()
    toks.append("mr:TXT:%s" % env)
    if verdict == "rcpt":
        return verdict, 0, toks
    toks.append("%se:TXT:_dmarc.%s" % ("m" if hdom == env else "b", hdom))
    if kind in SELECTOR:
        toks.append("be:TXT:%s._domainkey.%s" % (SELECTOR[kind], env))
    return verdict, 1, toks


def write_cplan(sessions, path):
    """the plan for bench/mixclient.c: PATH (one line per session: kind ip
    helo mfrom offset length), PATH.msgs (every message dot-stuffed, ended
    with ".\r\n") and PATH.lk (the lookup floor: a line per session,
    "VERDICT REDIS TOKEN...", see floor_lookups)"""
    off = 0
    with open(path, "w") as f, open(path + ".msgs", "wb") as m, open(path + ".lk", "w") as lk:
        for s in sessions:
            msg = stuffed(base64.b64decode(s["msg"])) + b".\r\n"
            m.write(msg)
            f.write("%s %s %s %s %d %d\n" % (s["kind"], s["ip"], s["helo"], s["mfrom"], off,
                                             len(msg)))
            v, grey, toks = floor_lookups(s)
            lk.write("%s %d %s\n" % (v, grey, " ".join(toks)))
            off += len(msg)


def summary(sessions):
    kinds, sizes = {}, [s["size"] for s in sessions]
    for s in sessions:
        kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
    return {"sessions": len(sessions), "kinds": kinds,
            "size_min": min(sizes) if sizes else 0, "size_max": max(sizes) if sizes else 0,
            "size_median": statistics.median(sizes) if sizes else 0}


# ------------------------------------------------------------------ client

class Fail(Exception):
    pass


async def reply(r, deadline):
    lines = []
    while True:
        line = await asyncio.wait_for(r.readline(), max(0.01, deadline - time.monotonic()))
        if not line:
            raise Fail("closed")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-" or len(lines) > 100:
            return int(line[:3]) if line[:3].isdigit() else 0


async def cmd(r, w, text, deadline):
    w.write(text)
    await w.drain()
    return await reply(r, deadline)


async def attempt(port, s, msg, timeout, lat, seed=False):
    """one SMTP session; returns an outcome string. seed: stop after RCPT
    (registers the greylist triplet without sending the message)"""
    deadline = time.monotonic() + timeout
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, local_addr=(s["ip"], 0), limit=1 << 16), timeout)
    except (OSError, asyncio.TimeoutError):
        return "error-connect"
    try:
        c = await reply(r, deadline)
        if c != 220:
            return "refused-connect" if c >= 500 else "tempfail-connect"
        c = await cmd(r, w, b"EHLO %s\r\n" % s["helo"].encode(), deadline)
        if c >= 400:
            return "refused-helo" if c >= 500 else "tempfail-helo"
        c = await cmd(r, w, b"MAIL FROM:<%s>\r\n" % s["mfrom"].encode(), deadline)
        if c >= 400:
            return "refused-mail" if c >= 500 else "tempfail-mail"
        c = await cmd(r, w, b"RCPT TO:<%s>\r\n" % RCPT.encode(), deadline)
        if seed:
            w.write(b"QUIT\r\n")
            return "seed-%dxx" % (c // 100)
        if c >= 400:
            return "refused-rcpt" if c >= 500 else "tempfail-rcpt"
        c = await cmd(r, w, b"DATA\r\n", deadline)
        if c != 354:
            return "refused-data" if c >= 500 else "tempfail-data"
        w.write(msg)
        w.write(b".\r\n")
        await w.drain()
        t0 = time.perf_counter()
        c = await reply(r, deadline)
        lat.append(time.perf_counter() - t0)
        if c == 250:
            out = "accepted"
        else:
            out = "refused-eod" if c >= 500 else "tempfail-eod"
        try:
            w.write(b"QUIT\r\n")
            await w.drain()
            await asyncio.wait_for(r.read(512), 1)
        except (OSError, asyncio.TimeoutError, Fail):
            pass
        return out
    except asyncio.TimeoutError:
        return "error-timeout"
    except (OSError, Fail, ValueError):
        return "error-closed"
    finally:
        w.close()


def stuffed(raw):
    lines = raw.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


async def run(port, sessions, concurrency, retry_delay, timeout, budget, seed=False):
    counts, lat = {}, []
    sem = asyncio.Semaphore(concurrency)
    t_end = time.monotonic() + budget

    # when the last first attempt ended; accepted on first attempts; retries
    # accepted so far, and by the time the last first attempt ended
    first = [0.0, 0, 0, 0]

    async def one(s):
        msg = stuffed(base64.b64decode(s["msg"]))
        async with sem:
            if time.monotonic() > t_end:
                out = "skipped-budget"
            else:
                out = await attempt(port, s, msg, timeout, lat, seed)
            if time.perf_counter() - t0 >= first[0]:
                first[0], first[3] = time.perf_counter() - t0, first[2]
            first[1] += out == "accepted"
        if out == "tempfail-rcpt" and s["kind"] == "greylist" and time.monotonic() < t_end:
            await asyncio.sleep(retry_delay)
            async with sem:
                out = "retried-" + await attempt(port, s, msg, timeout, lat)
            first[2] += out == "retried-accepted"
        key = s["kind"] + " " + out
        counts[key] = counts.get(key, 0) + 1

    t0, t0_mono = time.perf_counter(), time.monotonic()
    await asyncio.gather(*(one(s) for s in sessions))
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(p):
        return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0
    # every accepted message, retries included (as bench/mixclient.c counts)
    acc = sum(v for k, v in counts.items() if k.endswith((" accepted", " retried-accepted")))
    # first_wall_s: the time of every session's first attempt, without the
    # idle wait of greylisted retries (those show in wall_s and the counts)
    return {"wall_s": wall, "first_wall_s": first[0], "first_accepted": first[1],
            "retry_accepted_in_first": first[3], "t0_mono": t0_mono,
            "lat_ms": [round(1000 * x, 3) for x in lat], "counts": dict(sorted(counts.items())), "accepted": acc,
            "eod_replies": len(lat), "sessions": len(sessions),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--plan", required=True)
    r.add_argument("--concurrency", type=int, default=20)
    r.add_argument("--retry-delay", type=float, default=2.0)
    r.add_argument("--timeout", type=float, default=60.0, help="per session, seconds")
    r.add_argument("--shard", default="0/1",
                   help="k/n: run sessions k, k+n, k+2n, ... (n client processes)")
    r.add_argument("--seed", action="store_true",
                   help="stop each session after RCPT: register greylist triplets")
    r.add_argument("--budget", type=float, default=600.0, help="whole run, seconds")
    a = ap.parse_args()
    with open(a.plan) as f:
        sessions = json.load(f)
    k, n = (int(x) for x in a.shard.split("/"))
    if not 0 <= k < n <= 64:
        sys.exit("--shard k/n: 0 <= k < n <= 64")
    sessions = sessions[k::n]
    if not 1 <= a.concurrency <= 2000:
        sys.exit("--concurrency 1..2000")
    res = asyncio.run(run(a.port, sessions, a.concurrency, a.retry_delay, a.timeout,
                          min(a.budget, 3600.0), a.seed))
    res["mix"] = summary(sessions)
    json.dump(res, sys.stdout)
    print()


if __name__ == "__main__":
    main()
