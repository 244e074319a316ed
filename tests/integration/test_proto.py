"""Session dialogues as golden files (tests/proto/NAME.in -> NAME.ref), in the
manner of Postfix's .in/.ref tests: one test per .in file, run against a real
moatd in front of the harness's recording FakeUpstream. The format is in
tests/proto/README. PROTO_UPDATE=1 rewrites the .ref files instead of
comparing (after an intended change; review the diff before committing)."""

import difflib
import os
import re
import socket

import pytest

import harness
from harness import ConnectionClosed, wait_for

PROTO_DIR = harness.REPO / "tests" / "proto"
CASES = sorted(PROTO_DIR.glob("*.in"))
UPDATE = os.environ.get("PROTO_UPDATE") == "1"

REPLY_TIMEOUT = 3.0     # one reply; a missing one is shown as S: <no reply>
END_WAIT = 0.2          # extra bytes after a dialogue that did not QUIT
DIRECTIVES = ("policy", "pipeline", "end", "raw")


class ProtoError(Exception):
    pass


# ---------------------------------------------------------------------------
# the .in file


def unescape(text, where):
    """\\r \\n \\t \\\\ \\xHH in a raw: directive -> bytes."""
    out = bytearray()
    i = 0
    raw = text.encode("utf-8")
    while i < len(raw):
        ch = raw[i]
        if ch != 0x5C:
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1:i + 2]
        if nxt in (b"r", b"n", b"t", b"\\"):
            out += {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"\\": b"\\"}[nxt]
            i += 2
        elif nxt == b"x" and re.match(rb"[0-9A-Fa-f]{2}$", raw[i + 2:i + 4]):
            out.append(int(raw[i + 2:i + 4], 16))
            i += 4
        else:
            raise ProtoError("%s: bad escape in %r" % (where, text))
    return bytes(out)


def parse(path):
    """-> (policy lines, writes); a write is a list of (kind, bytes), kind
    "line" (CRLF added when sent) or "raw" (sent as it is)."""
    policy = []
    writes = []
    group = None
    started = False
    text = path.read_text("utf-8")
    if text.endswith("\n"):
        text = text[:-1]                                # the file's final newline
    for n, line in enumerate(text.split("\n"), 1):
        where = "%s:%d" % (path.name, n)
        if line.endswith("\r"):
            raise ProtoError("%s: CR in the .in file (use # raw:)" % where)
        m = re.match(r"#\s*([A-Za-z-]+)(:?)\s?(.*)$", line)
        if line.startswith("#"):
            word, colon, rest = (m.group(1).lower(), m.group(2), m.group(3)) if m else ("", "", "")
            if word == "policy" and colon:
                if started:
                    raise ProtoError("%s: # policy: after the first client line" % where)
                policy.append(rest.strip())
            elif word == "pipeline" and not colon:
                if group is not None:
                    raise ProtoError("%s: # pipeline inside a pipeline" % where)
                group = []
                started = True
            elif word == "end" and not colon:
                if group is None:
                    raise ProtoError("%s: # end without # pipeline" % where)
                if group:
                    writes.append(group)
                group = None
            elif word == "raw" and colon:
                item = ("raw", unescape(rest, where))
                started = True
                (group.append(item) if group is not None else writes.append([item]))
            elif colon or (m and word in DIRECTIVES):
                raise ProtoError("%s: unknown or malformed directive %r" % (where, line))
            # anything else starting with "#" is a comment
            continue
        started = True
        item = ("line", line.encode("utf-8"))
        (group.append(item) if group is not None else writes.append([item]))
    if group is not None:
        raise ProtoError("%s: # pipeline without # end" % path.name)
    return policy, writes


# ---------------------------------------------------------------------------
# showing bytes


def show(b):
    out = []
    for ch in b:
        if ch == 0x5C:
            out.append("\\\\")
        elif 0x20 <= ch < 0x7F:
            out.append(chr(ch))
        else:
            out.append({13: "\\r", 10: "\\n", 9: "\\t"}.get(ch, "\\x%02x" % ch))
    return "".join(out)


def show_lines(prefix, raw, fix=None):
    """raw split at CRLF, each line escaped; a last piece without CRLF is
    marked."""
    parts = raw.split(b"\r\n")
    last = parts.pop()
    lines = [show(p) for p in parts]
    if last:
        lines.append(show(last) + " <no CRLF>")
    if fix:
        lines = [fix(l) for l in lines]
    return [prefix + (" " + l if l else "") for l in lines]


def normalise_upstream(line):
    # the client's source port changes run to run
    if line.startswith("XCLIENT "):
        line = re.sub(r"\bPORT=\d+", "PORT=<port>", line)
    return line


# ---------------------------------------------------------------------------
# the dialogue


def expected_replies(items, in_data):
    """How many replies a write asks for, and whether it leaves the session
    in message content. A command line or raw LF asks for one; content
    lines none; the content line "." one. After DATA, content is assumed
    (the caller corrects this from the DATA reply)."""
    n = 0
    last_was_data = False
    for kind, b in items:
        last_was_data = False
        if kind == "raw":
            if not in_data:
                n += b.count(b"\n")
            continue
        if in_data:
            if b == b".":
                n += 1
                in_data = False
            continue
        n += 1
        if b.upper() == b"DATA":
            in_data = True
            last_was_data = True
    return n, in_data, last_was_data


def run_dialogue(port, writes):
    out = []
    c = harness.Client(port, timeout=REPLY_TIMEOUT, greet=False)
    closed = False
    try:
        try:
            out += show_lines("S:", c.reply().raw)
        except ConnectionClosed:
            out.append("S: <closed>")
            return out
        except socket.timeout:
            out.append("S: <no reply>")
            return out
        in_data = False
        last_cmd = b""
        for items in writes:
            data = b"".join(b + b"\r\n" if kind == "line" else b for kind, b in items)
            n, in_data, ended_with_data = expected_replies(items, in_data)
            for kind, b in items:
                if kind == "line":
                    last_cmd = b.upper()
            try:
                c.send(data)
            except (BrokenPipeError, ConnectionResetError):
                out.append("S: <closed>")
                closed = True
                break
            code = None
            for _ in range(n):
                try:
                    r = c.reply()
                except ConnectionClosed:
                    out.append("S: <closed>")
                    closed = True
                    break
                except socket.timeout:
                    out.append("S: <no reply>")
                    return out
                out += show_lines("S:", r.raw)
                code = r.code
            if closed:
                break
            if ended_with_data and code != 354:
                in_data = False
        if not closed:
            # unsolicited replies, and the close after QUIT
            if last_cmd == b"QUIT":
                closed = c.wait_closed(5.0)
                extra = c.tail
            else:
                extra = c.pending(END_WAIT)
                closed = c.eof
            if extra:
                out += show_lines("S:", extra)
            if closed:
                out.append("S: <closed>")
    finally:
        c.close()
    return out


def upstream_lines(fake):
    out = []
    with fake.lock:
        conns = list(fake.conns)
    for uc in conns:
        out.append("U: <connect>")
        out += show_lines("U:", bytes(uc.raw), normalise_upstream)
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_proto(path, fake, moatd_factory):
    policy, writes = parse(path)
    m = moatd_factory(fake.address, start=False)
    # a "# policy:" line replaces a setting of the harness's base config,
    # or is appended (lists, rules, settings the base does not have)
    base = [k for k, _ in m.conf_items]
    for line in policy:
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        if key in base and key not in ("listen",):
            i = base.index(key)
            m.conf_items[i] = (key, rest)
        else:
            m.conf_items.append((key, rest))
    m.start()
    got = run_dialogue(m.port, writes)
    # SIGTERM: moatd closes its idle upstream connections (QUIT); then the
    # upstream's record is complete
    rc = m.stop()
    assert rc == 0, "moatd exited %s after SIGTERM:\n%s" % (rc, m.log()[-3000:])
    wait_for(lambda: not any(t.is_alive() for t in fake.threads if t.name == "fake-conn"), 5)
    got += upstream_lines(fake)
    text = "\n".join(got) + "\n"

    ref = path.with_suffix(".ref")
    if UPDATE:
        if not ref.exists() or ref.read_text() != text:
            ref.write_text(text)
        return
    if not ref.exists():
        pytest.fail("%s is missing (PROTO_UPDATE=1 writes it); this run gave:\n%s"
                    % (ref, text), pytrace=False)
    want = ref.read_text()
    if want != text:
        diff = difflib.unified_diff(want.splitlines(), text.splitlines(),
                                    str(ref.relative_to(harness.REPO)), "this run", lineterm="")
        pytest.fail("dialogue differs from %s (moatd log, with MOAT_KEEP=1: %s):\n%s"
                    % (ref.name, m.log_path, "\n".join(diff)), pytrace=False)
