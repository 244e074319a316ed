"""Side-by-side runs (bench/features --side-by-side, bench/milter): two
systems driven at the same time, each by its own smtp-source -c, their
messages counted over the same seconds. Whatever changes the machine's
speed from one second to the next (other work, the host) then touches
both sides of a repetition alike, and cancels in its ratio."""

import subprocess


def source_counting(argv, path):
    """smtp-source ARGV with -c (a "\\rN" counter per message written to
    stdout) into path, until stopped by the caller; the Popen, its output
    file as .bench_out"""
    out = open(path, "wb")
    p = subprocess.Popen([argv[0], "-c"] + argv[1:], stdout=out, stderr=subprocess.STDOUT)
    p.bench_out = out
    return p


def source_count(path):
    """the last complete counter smtp-source -c wrote (0 before the first)"""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64))
            fields = f.read().split(b"\r")
    except OSError:
        return 0
    done = [x for x in fields[:-1] if x.strip().isdigit()]
    return int(done[-1]) if done else 0
