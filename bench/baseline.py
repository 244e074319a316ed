"""bench/baseline.py - another git ref's moatd, built beside the current one,
for the drivers' --baseline-ref REF (or BENCH_BASELINE_REF=REF).

The ref is checked out into a private worktree,

    git worktree add --detach bench/out/baseline-REF REF

(bench/out is git-ignored) and built there with `make -C ... -j2 all`; a
worktree left by an earlier run is reused (make rebuilds nothing when it is
up to date). Nothing is ever removed: a path that exists but is not a
worktree of this repository, or a worktree with local changes that would
have to move to another commit, is an error the user resolves.

Python 3 standard library only, like the drivers.
"""

import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
BUILD_TIMEOUT = 1800        # seconds: a cold -j2 build takes a minute or two


class BaselineError(Exception):
    pass


def split_argv(argv):
    """(REF or None, the other arguments): --baseline-ref REF,
    --baseline-ref=REF, else the environment's BENCH_BASELINE_REF."""
    ref, rest, i = None, [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--baseline-ref":
            if i + 1 >= len(argv):
                raise BaselineError("--baseline-ref needs a git ref")
            ref = argv[i + 1]
            i += 2
            continue
        if a.startswith("--baseline-ref="):
            ref = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if ref is None:
        ref = os.environ.get("BENCH_BASELINE_REF") or None
    return (ref or None), rest


def git(args, cwd=ROOT, timeout=120):
    r = subprocess.run(["git", "-C", cwd] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    if r.returncode != 0:
        raise BaselineError("git %s (in %s): %s" % (" ".join(args), cwd,
                                                    r.stderr.decode(errors="replace").strip()))
    return r.stdout.decode(errors="replace").strip()


def registered_worktrees():
    out = git(["worktree", "list", "--porcelain"])
    return [os.path.realpath(line.split(" ", 1)[1]) for line in out.splitlines()
            if line.startswith("worktree ")]


def prepare(ref, log):
    """Check out and build REF; returns a dict: ref, sha, short, worktree,
    moatd (path of its binary), label ("moatd (REF)"), before (what the
    build is: the commit after it on the way to HEAD, when there is one)."""
    if ref.startswith("-"):
        raise BaselineError("not a git ref: %r" % ref)
    try:
        sha = git(["rev-parse", "--verify", "--quiet", ref + "^{commit}"])
    except BaselineError:
        raise BaselineError("%r is not a commit in %s" % (ref, ROOT))
    short = git(["rev-parse", "--short", sha])
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", ref)
    wt = os.path.join(OUT, "baseline-" + safe)
    known = registered_worktrees()
    if os.path.lexists(wt):
        if os.path.realpath(wt) not in known:
            raise BaselineError("%s exists but is not a worktree of this repository; "
                                "move it away (the bench removes nothing)" % wt)
        head = git(["rev-parse", "HEAD"], cwd=wt)
        if head != sha:
            if git(["status", "--porcelain", "--untracked-files=no"], cwd=wt):
                raise BaselineError("%s is at %s with local changes, %s is %s: commit or "
                                    "discard them, or pick another path" % (wt, head[:12], ref,
                                                                            short))
            log("baseline: %s is now %s; checking it out in %s" % (ref, short, wt))
            git(["checkout", "--quiet", "--detach", sha], cwd=wt)
        else:
            log("baseline: reusing %s (%s)" % (wt, short))
    else:
        os.makedirs(OUT, exist_ok=True)
        # a worktree deleted by hand is still registered: add -f takes the path back
        force = ["-f"] if os.path.realpath(wt) in known else []
        log("baseline: git worktree add --detach %s %s" % (os.path.relpath(wt, ROOT), ref))
        git(["worktree", "add", "--quiet", "--detach"] + force + [wt, sha], timeout=300)
    # a standalone build: no jobserver or variables from a `make bench` above us
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "BUILD")}
    blog = wt + ".build.log"
    log("baseline: make -C %s -j2 all (log %s)" % (os.path.relpath(wt, ROOT),
                                                 os.path.relpath(blog, ROOT)))
    with open(blog, "ab") as f:
        try:
            r = subprocess.run(["make", "-C", wt, "-j2", "all"], stdout=f,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BaselineError("building %s took over %d s (see %s)" % (ref, BUILD_TIMEOUT, blog))
    moatd = os.path.join(wt, "build", "moatd")
    if r.returncode != 0 or not os.access(moatd, os.X_OK):
        raise BaselineError("building %s failed (make exit %d; see %s)" % (ref, r.returncode,
                                                                           blog))
    # what the baseline is the build before: the commit after it on the
    # way to HEAD (first on the ancestry path), if REF is an ancestor
    before = None
    try:
        nxt = git(["rev-list", "--reverse", "--ancestry-path", sha + "..HEAD"]).split()
        if nxt:
            subj = git(["log", "-1", "--format=%h %s", nxt[0]])
            h, s = subj.split(" ", 1) if " " in subj else (subj, "")
            s = s if len(s) <= 70 else s[:67].rstrip() + "..."
            before = "%s \"%s\"" % (h, s.replace("|", "/"))
    except BaselineError:
        pass
    name = ref if sha.startswith(ref.lower()) else "%s = %s" % (ref, short)
    return {"ref": ref, "sha": sha, "short": short, "worktree": wt, "moatd": moatd,
            "name": name, "label": "moatd (%s)" % name, "before": before}


def heading(b):
    """The results files' section title."""
    if b["before"]:
        return "Against %s (the build before %s)" % (b["name"], b["before"])
    return "Against %s (the build at that commit)" % b["name"]


def target_line(ratios, floor=0.95):
    """`no cell below 0.95x: MET/MISSED (lowest X)` over the cells' new/old
    ratios (None: a cell where either build failed, which counts as a miss)."""
    got = [x for x in ratios if x is not None]
    failed = len(ratios) - len(got)
    lowest = min(got) if got else None
    ok = failed == 0 and lowest is not None and lowest >= floor
    s = "no cell below %.2fx: %s (lowest %s" % (
        floor, "MET" if ok else "MISSED", "%.2fx" % lowest if lowest is not None else "-")
    if failed:
        s += "; %d of %d cells without a ratio: a build failed there" % (failed, len(ratios))
    return s + ")"
