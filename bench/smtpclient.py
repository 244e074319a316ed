#!/usr/bin/python3
"""Small SMTP load clients for bench/run (Python standard library only).

  smtpclient.py latency --host H --port P --sessions N --messages M
                        --size BYTES [--reuse] [--timeout S] [--message FILE]
      Sends M messages over N parallel sessions (asyncio, raw streams,
      lock-step SMTP: EHLO, MAIL, RCPT, DATA, text, "."). Without --reuse
      every message gets its own session (connect, 220, EHLO, ..., QUIT),
      as smtp-source does by default; with --reuse each of the N sessions
      sends its share of the M messages one after another (smtp-source -d).
      For every message it records the time from writing the final
      ".\\r\\n" (after the text has been handed to the kernel) to reading
      the whole 250 reply. Prints one JSON object: msgs, errors, wall_s,
      msgs_per_s, p50_ms, p90_ms, p99_ms, max_ms.

  smtpclient.py idle --host H --port P --count N [--sources K]
      Opens N connections (source addresses spread over 127.0.1.1 ..
      127.0.1.K so no single source runs out of ephemeral ports), reads the
      220 greeting on each and keeps them all open. Prints
      "READY <connected> <greeted>" on stdout, then waits for a line on
      stdin (or EOF) and closes everything. Bounded: connects in batches,
      gives up on a batch after a timeout.
"""

import argparse
import asyncio
import json
import os
import selectors
import socket
import sys
import time


def make_text(size):
    """Headers plus a body of `size` bytes in 78-byte lines (76 + CRLF)."""
    hdr = (b"From: <sender@bench.test>\r\n"
           b"To: <rcpt@bench.test>\r\n"
           b"Subject: moat bench\r\n"
           b"Message-ID: <bench@bench.test>\r\n\r\n")
    line = b"x" * 76 + b"\r\n"
    n, rest = divmod(size, len(line))
    body = line * n
    if rest:
        body += b"y" * max(rest - 2, 0) + b"\r\n"
    return hdr + body


class SmtpError(Exception):
    pass


async def reply(reader, want):
    """Read one (possibly multi-line) reply; raise unless it starts with want."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            break
    if not line.startswith(want):
        raise SmtpError(line.decode("latin-1").strip())
    return line


async def one_message(reader, writer, text, lat):
    writer.write(b"MAIL FROM:<sender@bench.test>\r\n")
    await reply(reader, b"250")
    writer.write(b"RCPT TO:<rcpt@bench.test>\r\n")
    await reply(reader, b"250")
    writer.write(b"DATA\r\n")
    await reply(reader, b"354")
    writer.write(text)
    await writer.drain()
    t0 = time.perf_counter()
    writer.write(b".\r\n")
    await reply(reader, b"250")
    lat.append(time.perf_counter() - t0)


async def open_session(host, port):
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    await reply(reader, b"220")
    writer.write(b"EHLO client.bench.test\r\n")
    await reply(reader, b"250")
    return reader, writer


async def close_session(reader, writer):
    try:
        writer.write(b"QUIT\r\n")
        await reply(reader, b"221")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def latency(args):
    if args.message:
        with open(args.message, "rb") as f:
            text = f.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not text.endswith(b"\r\n"):
            text += b"\r\n"
        text = text.replace(b"\r\n.", b"\r\n..")      # dot-stuffing
        if text.startswith(b"."):
            text = b"." + text
    else:
        text = make_text(args.size)
    lat, errors = [], []
    left = [args.messages]

    def take():
        if left[0] <= 0:
            return False
        left[0] -= 1
        return True

    async def worker():
        if args.reuse:
            try:
                r, w = await open_session(args.host, args.port)
            except (OSError, SmtpError) as e:
                errors.append(str(e))
                return
            try:
                while take():
                    await one_message(r, w, text, lat)
                await close_session(r, w)
            except (OSError, SmtpError) as e:
                errors.append(str(e))
                w.close()
        else:
            while take():
                try:
                    r, w = await open_session(args.host, args.port)
                except (OSError, SmtpError) as e:
                    errors.append(str(e))
                    continue
                try:
                    await one_message(r, w, text, lat)
                    await close_session(r, w)
                except (OSError, SmtpError) as e:
                    errors.append(str(e))
                    w.close()

    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(args.sessions))),
            timeout=args.timeout)
    except asyncio.TimeoutError:
        errors.append("timeout after %ss" % args.timeout)
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(p):
        if not lat:
            return None
        i = min(len(lat) - 1, max(0, int(round(p / 100.0 * len(lat))) - 1))
        return round(lat[i] * 1000.0, 3)

    return {
        "msgs": len(lat), "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 4),
        "msgs_per_s": round(len(lat) / wall, 1) if wall > 0 else None,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "max_ms": round(lat[-1] * 1000.0, 3) if lat else None,
    }


def idle(args):
    sel = selectors.DefaultSelector()
    socks = []
    greeted = 0
    connected = 0
    batch = 500
    deadline_total = time.monotonic() + args.timeout
    i = 0
    while i < args.count and time.monotonic() < deadline_total:
        pending = {}
        for j in range(i, min(i + batch, args.count)):
            src = "127.0.1.%d" % (1 + j % args.sources)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((src, 0))
                s.setblocking(False)
                s.connect_ex((args.host, args.port))
            except OSError as e:
                print("connect %d: %s" % (j, e), file=sys.stderr)
                s.close()
                continue
            socks.append(s)
            pending[s.fileno()] = (s, b"")
            sel.register(s, selectors.EVENT_READ)
        i += batch
        # read the 220 greetings of this batch, bounded in time
        bdl = time.monotonic() + 10
        while pending and time.monotonic() < bdl:
            for key, _ in sel.select(timeout=1.0):
                s, buf = pending[key.fd]
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    del pending[key.fd]
                    continue
                buf += data
                if b"\n" in buf:
                    sel.unregister(s)
                    del pending[key.fd]
                    connected += 1
                    if buf.startswith(b"220"):
                        greeted += 1
                else:
                    pending[key.fd] = (s, buf)
        for fd, (s, _) in pending.items():
            sel.unregister(s)
    print("READY %d %d" % (connected, greeted), flush=True)
    try:
        sys.stdin.readline()
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("latency")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--sessions", type=int, default=1)
    a.add_argument("--messages", type=int, default=100)
    a.add_argument("--size", type=int, default=4096)
    a.add_argument("--reuse", action="store_true")
    a.add_argument("--timeout", type=float, default=120)
    a.add_argument("--message", help="send this file (CRLF lines) instead of a made-up text")
    b = sub.add_parser("idle")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--count", type=int, default=1000)
    b.add_argument("--sources", type=int, default=10)
    b.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    if args.cmd == "latency":
        print(json.dumps(asyncio.run(latency(args))), flush=True)
        return 0
    return idle(args)


if __name__ == "__main__":
    sys.exit(main())
