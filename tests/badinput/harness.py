#!/usr/bin/python3
"""Seeded bad-input harness for the kvroute executable.

The contract under test (README "Every bad input ..."): for every bad input the process exits
non-zero on its own (no signal, no timeout), its stderr is exactly one line starting with
"kvroute: error: " (a flag the command line parser rejects: the same line, exit code 2), and
nothing already written is lost: a run directory, checkpoint or output directory that existed
before a failed command is byte-for-byte unchanged after it.

The harness builds everything it needs from nothing in a fresh temporary directory (a generated
pseudo-English corpus, a 300-token tokenizer, shards, a tiny config and one trained "golden" run
with two checkpoints, a fixed_groups run, an export of the golden checkpoint, supervised fine-tuning
data from a generated JSONL file, a QA task file, the tokenizer converted to a Hugging Face
tokenizer.json), copies the Hugging Face model directories of tests/reference/fixtures/hf (vocab 64,
with shards remapped below 64), then runs several hundred cases: a fixed list of targeted mutations
per category plus seeded random ones (byte flips, truncations, duplicated lines, hostile values).
Every case that changes a file works on a copy in its own directory, never on the fixtures.

Each case carries an expectation:
  fail   the input is certainly invalid: must fail cleanly (any non-zero exit)
  fail2  a command-line parse error: must fail cleanly with exit code 2
  any    may be accepted (exit 0) or fail cleanly, but must never crash, hang, or print more
         than the one error line (random byte flips, which can land somewhere harmless)
  pass   a valid control command that must succeed (guards against over-strict validation
         and against a broken fixture)
A case may also list what its error line must name (Spec.mention: a file:line, a key path).

Standard library only; run with /usr/bin/python3:
  harness.py --kvroute build/kvroute [--cases 300] [--seed 1] [--keep-going] [--only CATEGORY,...]
             [--case ID] [--list] [--jobs N] [--timeout S] [--keep-workdir] [--json FILE] [-v]
--cases is the total: below the number of targeted cases it runs a seeded sample of them (in
proportion per category, baselines always); above it the rest are seeded random mutations.
Without --keep-going the run stops starting cases after the first violation.
Exit status: 0 no violation, 1 violations (each listed with its command), 3 the fixtures could not
be built, 2 usage errors.
"""

from __future__ import annotations

from harness_common import *  # noqa: F401,F403
from cases.baseline import *  # noqa: F401,F403
from cases.config import *  # noqa: F401,F403
from cases.override import *  # noqa: F401,F403
from cases.shard import *  # noqa: F401,F403
from cases.datajson import *  # noqa: F401,F403
from cases.tokenizer import *  # noqa: F401,F403
from cases.safetensors import *  # noqa: F401,F403
from cases.state import *  # noqa: F401,F403
from cases.ckptconfig import *  # noqa: F401,F403
from cases.rundir import *  # noqa: F401,F403
from cases.study import *  # noqa: F401,F403
from cases.hfmodel import *  # noqa: F401,F403
from cases.export import *  # noqa: F401,F403
from cases.sft import *  # noqa: F401,F403
from cases.task import *  # noqa: F401,F403
from cases.tokenizerjson import *  # noqa: F401,F403
from cases.cli import *  # noqa: F401,F403
from cases.output import *  # noqa: F401,F403


RANDOM_BUILDERS = {"config": config_random, "override": override_random, "shard": shard_random,
                   "datajson": datajson_random, "tokenizer": tokenizer_random, "safetensors": safetensors_random,
                   "state": state_random, "ckptconfig": ckptconfig_random, "cli": cli_random,
                   "hfmodel": hfmodel_random, "export": export_random, "sft": sft_random, "task": task_random,
                   "tokenizerjson": tokenizerjson_random}


def stratified_sample(cases: list, n: int, seed: int) -> list:
    base = [c for c in cases if c.category == "baseline"]
    rest = [c for c in cases if c.category != "baseline"]
    budget = max(0, n - len(base))
    by_cat = {}
    for c in rest:
        by_cat.setdefault(c.category, []).append(c)
    quota = {cat: max(1, round(len(cs) * budget / len(rest))) for cat, cs in by_cat.items()}
    while sum(quota.values()) > budget and any(q > 1 for q in quota.values()):
        quota[max(quota, key=lambda k: quota[k])] -= 1
    keep = {c.id for c in base}
    for cat, cs in by_cat.items():
        keep.update(c.id for c in random.Random(f"{seed}:sample:{cat}").sample(cs, min(len(cs), quota[cat])))
    return [c for c in cases if c.id in keep]


def all_cases(n_cases: int, seed: int) -> tuple:
    R = Registry()
    baseline_cases(R)
    config_cases(R)
    override_cases(R)
    shard_cases(R)
    datajson_cases(R)
    tokenizer_cases(R)
    safetensors_cases(R)
    state_cases(R)
    ckptconfig_cases(R)
    rundir_cases(R)
    study_cases(R)
    cli_cases(R)
    hfmodel_cases(R)
    export_cases(R)
    sft_cases(R)
    task_cases(R)
    tokenizerjson_cases(R)
    output_cases(R)
    fixed = R.cases
    note = ""
    if n_cases < len(fixed):
        fixed = stratified_sample(fixed, n_cases, seed)
        note = (f"--cases {n_cases} is below the {len(R.cases)} targeted cases: running a seeded sample of "
                f"{len(fixed)} of them, in proportion per category (all baseline cases included)")
    cats = sorted(RANDOM_WEIGHTS)
    pick = random.Random(f"{seed}:categories")
    randoms = []
    for i in range(max(0, n_cases - len(fixed))):
        cat = pick.choices(cats, weights=[RANDOM_WEIGHTS[c] for c in cats])[0]
        randoms.append(Case(f"{cat}-r{i:03d}-random", cat, "seeded random mutation", "any", RANDOM_BUILDERS[cat]))
    return fixed + randoms, note


# ------------------------------------------------------------------------------------------------
# Running one case
# ------------------------------------------------------------------------------------------------

@dataclass
class Result:
    case: Case
    expect: str
    outcome: str            # ok-failed-cleanly | accepted-valid | passed | VIOLATION | setup-error
    reasons: list
    argv: list
    cwd: str
    rc: Optional[int]
    stderr: str
    detail: str
    seconds: float


def classify(expect: str, rc: Optional[int], timed_out: bool, stderr: bytes, changed: dict) -> tuple:
    reasons = []
    if timed_out:
        return "VIOLATION", ["timeout (killed by the harness)"]
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return "VIOLATION", [f"killed by {name}"]
    if rc == 0:
        if expect in ("fail", "fail2"):
            extra = "; it changed " + "; ".join(f"{k} ({v})" for k, v in changed.items()) if changed else ""
            return "VIOLATION", ["exit 0 on invalid input" + extra]
        return ("passed" if expect == "pass" else "accepted-valid"), []
    # a failure: must be clean
    if expect == "pass":
        reasons.append(f"a valid command failed (exit {rc})")
    text = stderr.decode("utf-8", errors="replace")
    body = text[:-1] if text.endswith("\n") else text
    if body == "":
        reasons.append("empty stderr")
    else:
        lines = body.split("\n")
        if len(lines) > 1:
            reasons.append(f"stderr has {len(lines)} lines")
        controls = sorted({c for c in body if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127})
        if controls:
            reasons.append("stderr holds raw control characters " + "".join(repr(c)[1:-1] for c in controls[:6])
                           + " (file bytes echoed unescaped)")
        if not body.startswith(PREFIX):
            reasons.append(f"stderr does not start with {PREFIX!r}")
        elif body.strip() == PREFIX.strip():
            reasons.append("empty error message")
    if "bad_alloc" in text or "std::length_error" in text or "vector::_M" in text:
        reasons.append("ran out of memory / size overflow instead of a validation error")
    if expect == "fail2" and rc != 2:
        reasons.append(f"a command-line parse error must exit 2, got {rc}")
    if changed:
        reasons.append("existing files changed: " + "; ".join(f"{k} ({v})" for k, v in changed.items()))
    return ("VIOLATION" if reasons else "ok-failed-cleanly"), reasons


def run_case(ctx: Ctx, case: Case, seed: int, timeout: float, case_root: Path) -> Result:
    d = case_root / case.id
    d.mkdir(parents=True)
    env = Env(ctx, d, random.Random(f"{seed}:{case.id}"))
    t0 = time.monotonic()
    try:
        spec = case.build(env)
    except Exception as e:  # a bug in the harness or a fixture that changed shape
        return Result(case, case.expect, "setup-error", [f"{type(e).__name__}: {e}"], [], str(d), None, "", "", 0.0)
    expect = spec.expect or case.expect
    before = {p: tree_hash(d / p) for p in spec.protect}
    cmd = ctx.wrapper + [ctx.kvroute] + spec.argv
    timed_out = False
    try:
        p = subprocess.Popen(cmd, cwd=d, env=ctx.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        return Result(case, expect, "setup-error", [f"cannot start the command: {e}"], spec.argv, str(d), None, "",
                      spec.detail, 0.0)
    try:
        out, err = p.communicate(timeout=spec.timeout or timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the case's own process group (start_new_session)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    rc = None if timed_out else p.returncode
    changed = {}
    for path, h in before.items():
        after = tree_hash(d / path)
        if after != h:
            changed[path] = tree_diff(h, after)
    outcome, reasons = classify(expect, rc, timed_out, err, changed)
    if outcome == "ok-failed-cleanly" and expect in ("fail", "fail2"):
        text = err.decode("utf-8", errors="replace")
        missing = [m for m in spec.mention if m not in text]
        if missing:
            outcome, reasons = "VIOLATION", [f"the error does not name {', '.join(map(repr, missing))}"]
    return Result(case, expect, outcome, reasons, spec.argv, str(d), rc, err.decode("utf-8", errors="replace"),
                  spec.detail, time.monotonic() - t0)


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------

def is_asan(path: str) -> bool:
    needle = b"__asan_init"
    with open(path, "rb") as f:
        tail = b""
        for chunk in iter(lambda: f.read(1 << 22), b""):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle):]
    return False


def snapshot_binary(src: str, dest: Path, wait: float = 180.0) -> None:
    """Copies the executable once it exists and has stopped changing (it may be relinked while we start)."""
    deadline = time.monotonic() + wait
    last = None
    while True:
        try:
            st = os.stat(src)
            sig = (st.st_size, st.st_mtime_ns)
            if sig == last and st.st_size > 0:
                break
            last = sig
        except FileNotFoundError:
            last = None
        if time.monotonic() > deadline:
            raise FixtureError(f"{src}: no stable executable after {wait:.0f} s")
        time.sleep(1.0)
    shutil.copy2(src, dest)
    os.chmod(dest, 0o755)


def clip(s: str, n: int = 300) -> str:
    return s if len(s) <= n else s[:n] + f"... [{len(s)} chars]"


def reason_kinds(results: list) -> dict:
    """A coarse tally of why cases failed the contract (one case can count under several kinds)."""
    kinds = {}
    for r in results:
        seen = set()
        for reason in r.reasons:
            if reason.startswith("stderr does not start"):
                first = r.stderr.splitlines()[0] if r.stderr else ""
                k = ("stderr prefix 'kvroute: error (rank N): ' instead of 'kvroute: error: '"
                     if first.startswith("kvroute: error (rank") else "stderr without the 'kvroute: error: ' prefix")
            elif reason.startswith("stderr has"):
                k = "stderr of more than one line"
            elif reason.startswith("the error does not name"):
                k = "error line does not name the file:line / key at fault"
            elif reason.startswith("exit 0"):
                k = "exit 0 on invalid input"
            elif reason.startswith("a command-line parse error"):
                k = "command-line parse error with an exit code other than 2"
            elif reason.startswith("killed by"):
                k = reason
            elif reason.startswith("existing files changed") or "; it changed" in reason:
                k = "existing files changed by a failed command"
            else:
                k = reason.split(" (")[0].split(":")[0]
            if k not in seen:
                seen.add(k)
                kinds[k] = kinds.get(k, 0) + 1
            if "; it changed" in reason and "existing files changed" not in seen:
                seen.add("existing files changed")
                kinds["exit 0 on invalid input that also changed existing files"] = kinds.get(
                    "exit 0 on invalid input that also changed existing files", 0) + 1
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser(description="Seeded bad-input harness for kvroute (see the module docstring).")
    ap.add_argument("--kvroute", required=False, help="the kvroute executable")
    ap.add_argument("--cases", type=int, default=300, help="total cases (fixed + seeded random); default 300")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-going", action="store_true", help="run every case (default: stop at the first violation)")
    ap.add_argument("--only", default="", help="comma-separated categories: " + ",".join(CATEGORIES))
    ap.add_argument("--case", action="append", default=[], help="run only this case id (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--jobs", type=int, default=4, help="cases run at once (default 4; FIFO cases mostly wait)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per case (default 15; 30 for an ASan build)")
    ap.add_argument("--budget", type=float, default=540.0, help="stop starting cases after this many seconds")
    ap.add_argument("--mem-limit-mb", type=int, default=2048,
                    help="address-space limit per case (ulimit -v; ASan builds get hard_rss_limit_mb instead); 0: none")
    ap.add_argument("--workdir", help="use this (new or empty) directory instead of a fresh temporary one")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the fixtures and case directories")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    ap.add_argument("--json", help="also write every result (case, expectation, outcome, reasons, command, exit, "
                                   "stderr) to this JSON file")
    args = ap.parse_args()

    only = [c for c in args.only.split(",") if c]
    bad = [c for c in only if c not in CATEGORIES]
    if bad:
        ap.error(f"--only: unknown categories {bad}; known: {', '.join(CATEGORIES)}")
    cases, note = all_cases(args.cases, args.seed)
    if only:
        cases = [c for c in cases if c.category in only]
    if args.case:
        known = {c.id for c in cases}
        missing = [c for c in args.case if c not in known]
        if missing:
            ap.error(f"--case: no such case {missing} (see --list with the same --cases/--seed)")
        cases = [c for c in cases if c.id in args.case]
    if args.list:
        for c in cases:
            print(f"{c.id:48s} {c.category:12s} {c.expect:5s} {c.desc}")
        print(f"{len(cases)} cases" + (f" ({note})" if note else ""))
        return 0
    if not args.kvroute:
        ap.error("--kvroute is required")

    start = time.monotonic()
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            ap.error(f"--workdir {work} is not empty")
    else:
        work = Path(tempfile.mkdtemp(prefix="kvroute-badinput-"))
    (work / "bin").mkdir()
    fixtures = work / "fixtures"
    fixtures.mkdir()
    ctx = Ctx(kvroute=str(work / "bin/kvroute"), kvroute_shown=args.kvroute, work=work, fixtures=fixtures,
              corpus=fixtures / "corpus", tok=fixtures / "tok", data=fixtures / "data", golden=fixtures / "golden")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI_", "PMIX_", "MPI_"))}
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LC_ALL": "C"})
    keep_workdir = args.keep_workdir
    try:
        snapshot_binary(args.kvroute, Path(ctx.kvroute))
        asan = is_asan(ctx.kvroute)
        if asan:
            opts = env.get("ASAN_OPTIONS", "")
            extra = "allocator_may_return_null=1:max_allocation_size_mb=2048:hard_rss_limit_mb=3072"
            env["ASAN_OPTIONS"] = f"{opts}:{extra}" if opts else extra
            ctx.wrapper = ["/bin/sh", "-c", 'ulimit -c 0; exec "$0" "$@"']
        elif args.mem_limit_mb > 0:
            ctx.wrapper = ["/bin/sh", "-c", f'ulimit -c 0; ulimit -v {args.mem_limit_mb * 1024}; exec "$0" "$@"']
        else:
            ctx.wrapper = ["/bin/sh", "-c", 'ulimit -c 0; exec "$0" "$@"']
        ctx.env = env
        if args.timeout <= 0:
            args.timeout = 30.0 if asan else 15.0
        try:
            build_fixtures(ctx)
        except (FixtureError, subprocess.TimeoutExpired, OSError) as e:
            print(f"badinput: cannot build the fixtures: {e}", file=sys.stderr)
            keep_workdir = True
            print(f"badinput: fixtures left in {work}", file=sys.stderr)
            return 3
        fixture_hash = tree_hash(fixtures)
        t_fix = time.monotonic() - start
        print(f"badinput: {args.kvroute}{' (ASan)' if asan else ''}; fixtures in {t_fix:.1f} s "
              f"(vocab {ctx.vocab}); {len(cases)} cases, seed {args.seed}, jobs {args.jobs}, timeout {args.timeout:g} s")
        if note:
            print(f"badinput: note: {note}")

        stop = threading.Event()
        results = []
        lock = threading.Lock()
        case_root = work / "cases"
        skipped = []

        def task(case: Case) -> Optional[Result]:
            if stop.is_set() or time.monotonic() - start > args.budget:
                skipped.append(case.id)
                return None
            res = run_case(ctx, case, args.seed, args.timeout, case_root)
            with lock:
                results.append(res)
                if args.verbose:
                    print(f"  {res.outcome:18s} {res.case.id} ({res.seconds:.1f} s) rc={res.rc} {res.detail}", flush=True)
                if res.outcome in ("VIOLATION", "setup-error"):
                    if not args.verbose:
                        print(f"  {res.outcome}: {res.case.id}: {'; '.join(res.reasons)}", flush=True)
                    if not args.keep_going:
                        stop.set()
            if not keep_workdir:
                shutil.rmtree(res.cwd, ignore_errors=True)
            return res

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(task, cases))

        after = tree_hash(fixtures)
        fixture_changed = after != fixture_hash
        elapsed = time.monotonic() - start

        # ---- report ----
        order = {c.id: i for i, c in enumerate(cases)}
        results.sort(key=lambda r: order[r.case.id])
        outcomes = ["ok-failed-cleanly", "accepted-valid", "passed", "VIOLATION", "setup-error"]
        print()
        print(f"{'category':12s} " + " ".join(f"{o:>17s}" for o in outcomes) + f" {'total':>6s}")
        totals = {o: 0 for o in outcomes}
        for cat in CATEGORIES:
            rs = [r for r in results if r.case.category == cat]
            if not rs:
                continue
            counts = {o: sum(1 for r in rs if r.outcome == o) for o in outcomes}
            for o in outcomes:
                totals[o] += counts[o]
            print(f"{cat:12s} " + " ".join(f"{counts[o]:>17d}" for o in outcomes) + f" {len(rs):>6d}")
        print(f"{'all':12s} " + " ".join(f"{totals[o]:>17d}" for o in outcomes) + f" {len(results):>6d}")
        bad_results = [r for r in results if r.outcome in ("VIOLATION", "setup-error")]
        if bad_results:
            print(f"\n{len(bad_results)} violation(s) of the bad-input contract:")
            for r in bad_results:
                print(f"\n[{r.case.id}] {r.case.desc}" + (f" -- {r.detail}" if r.detail else ""))
                print(f"  expect:  {r.expect}")
                print(f"  reason:  {'; '.join(r.reasons)}")
                if r.argv:
                    print(f"  command: {clip(shlex.join([ctx.kvroute_shown] + r.argv), 400)}")
                    print(f"  in:      {r.cwd}" + ("" if keep_workdir else " (removed; --case ID --keep-workdir keeps it)"))
                    print(f"  exit:    {r.rc if r.rc is not None else ('not run' if r.outcome == 'setup-error' else 'timeout')}")
                    lines = r.stderr.splitlines()
                    for line in lines[:3]:
                        print(f"  stderr:  {clip(line)}")
                    if len(lines) > 3:
                        print(f"  stderr:  ... ({len(lines)} lines)")
            print("\nviolations by kind:")
            for kind, n in sorted(reason_kinds(bad_results).items(), key=lambda kv: -kv[1]):
                print(f"  {n:4d}  {kind}")
            print(f"\nreproduce one: {shlex.join([sys.argv[0], '--kvroute', args.kvroute, '--cases', str(args.cases), '--seed', str(args.seed)])}"
                  " --case ID --keep-workdir")
        if args.json:
            with open(args.json, "w") as f:
                json.dump([{"id": r.case.id, "category": r.case.category, "desc": r.case.desc, "detail": r.detail,
                            "expect": r.expect, "outcome": r.outcome, "reasons": r.reasons,
                            "argv": [args.kvroute] + r.argv, "cwd": r.cwd, "rc": r.rc, "stderr": r.stderr[:2000],
                            "seconds": round(r.seconds, 3)} for r in results], f, indent=1)
        if fixture_changed:
            print("\nVIOLATION: the shared fixtures (golden run, shards, tokenizer) changed during the run: "
                  + tree_diff(fixture_hash, after))
        if skipped:
            why = "after the first violation (use --keep-going)" if stop.is_set() else f"past the {args.budget:g} s budget"
            print(f"\n{len(skipped)} case(s) not run {why}")
        print(f"\nbadinput: {len(results)} cases in {elapsed:.1f} s: {totals['VIOLATION'] + totals['setup-error']} violation(s)")
        if bad_results and keep_workdir:
            print(f"badinput: case directories kept in {work}")
        ok = not bad_results and not fixture_changed and not (skipped and not stop.is_set())
        return 0 if ok else 1
    finally:
        if not keep_workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
