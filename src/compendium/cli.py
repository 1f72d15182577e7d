"""Command line: ``compendium list | run | build | clean | data | claims | course | calibrate | compare``
(also ``python -m compendium``).

Exit statuses: 0 done; 1 a chapter failed (a cell raised, the timeout, a dead kernel) or the
book did not render; 2 refused before any compute (parameters, data, device, kernel, unknown
chapter); 3 busy (another run of the chapter, or another build, holds its lock); 130/143
interrupted by SIGINT/SIGTERM (nothing published, previous outputs kept). ``compare``: 0
compared, 1 a verdict differs (with ``--fail-on-flip``), 2 a record missing or unreadable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from compendium.project import Project


def _cmd_list(project: Project, args: argparse.Namespace) -> int:
    from compendium.chapters import available_chapters, last_record, load_spec

    if getattr(args, "cost", False):
        from compendium.book.cost import print_cost

        print_cost(project)
        return 0
    for c in available_chapters(project):
        spec = load_spec(project, c)
        rec = last_record(project, c)
        if rec:
            verdicts = ", ".join(f"{cl['verdict']}" for cl in rec.get("claims", []))
            last = f"last run: profile {rec.get('profile')}, {rec.get('wall_time_s')} s, {rec.get('started_at')}; verdicts: {verdicts}"
        else:
            last = "last run: never"
        print(f"{c}\n  {spec.title}\n  paper: {spec.paper}" + (f" (arXiv {spec.arxiv})" if spec.arxiv else "")
              + f"\n  profiles: {', '.join(spec.profiles)}; datasets: {', '.join(spec.datasets) or 'none'}\n  {last}")
    return 0


def _interrupted(err: KeyboardInterrupt, what: str) -> int:
    from compendium.book.runner import EXIT_SIGINT, EXIT_SIGTERM, Terminated

    name = "SIGTERM" if isinstance(err, Terminated) else "SIGINT"
    print(f"interrupted ({name}): {what}", file=sys.stderr)
    return EXIT_SIGTERM if isinstance(err, Terminated) else EXIT_SIGINT


def _cmd_run(project: Project, args: argparse.Namespace) -> int:
    from compendium.book.runner import EXIT_NOT_READY, restore_environ, set_environ, thread_environment

    overrides = {}
    for name, value in args.param or []:
        if name in overrides:
            print(f"error: parameter '{name}' given twice", file=sys.stderr)
            return EXIT_NOT_READY
        overrides[name] = value
    # the kernel, a local submitit job and torchrun's workers inherit this process's environment
    env_before = set_environ(thread_environment(args.threads)) if args.threads else {}
    try:
        return _run_dispatch(project, args, overrides)
    finally:
        restore_environ(env_before)


def _run_dispatch(project: Project, args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from compendium.book.runner import (EXIT_BUSY, EXIT_FAILED, EXIT_NOT_READY, Busy, ChapterFailed, NotReady,
                                        run_chapter)
    from compendium.params import ParameterError

    try:
        if getattr(args, "executor", None):  # submitit: a Slurm job, or the same path on this machine
            from compendium.book.executor import submit

            return submit(project, args.chapter, args.profile, overrides, executor=args.executor, gpus=args.gpus,
                          partition=args.partition, hours=args.time, smoke=args.smoke, kernel=args.kernel,
                          timeout=args.timeout, threads=args.threads, wait=args.executor == "local" or args.wait)
        from compendium.learning.distributed import world_from_env

        rank = world_from_env().rank
        if rank > 0:  # a torchrun worker: execute alongside rank 0, which records and publishes
            from compendium.book.smoke_run import run_worker

            run_worker(project, args.chapter, args.profile, overrides, kernel=args.kernel, rank=rank, smoke=args.smoke)
        elif args.smoke:
            from compendium.book.smoke_run import run_smoke

            run_smoke(project, args.chapter, args.profile, overrides, kernel=args.kernel, timeout=args.timeout,
                      log_output=args.log_output)
        else:
            run_chapter(project, args.chapter, args.profile, overrides, kernel=args.kernel, timeout=args.timeout,
                        log_output=args.log_output)
    except (ParameterError, KeyError, NotReady) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return EXIT_NOT_READY
    except Busy as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except ChapterFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as err:
        return _interrupted(err, f"nothing was published; the previous outputs of '{args.chapter}' are untouched "
                                 f"and no partial files remain (log: {project.log(args.chapter)})")
    return 0


def _cmd_build(project: Project, args: argparse.Namespace) -> int:
    from compendium.book.render import render_book
    from compendium.book.runner import EXIT_BUSY, Busy, build_lock, run_stale

    try:
        with build_lock(project):
            status = run_stale(project, args.profile, jobs=args.jobs, force=args.force, kernel=args.kernel,
                               timeout=args.timeout, threads=args.threads)
            failed = {c: s for c, s in status.items() if not s.startswith(("fresh", "ran"))}
            try:
                index, _log = render_book(project, strict=not args.lenient)
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
    except Busy as err:
        print(f"error: another build of this output root is under way: {err}", file=sys.stderr)
        return EXIT_BUSY
    except KeyboardInterrupt as err:
        return _interrupted(err, "the build stopped; chapters under way were stopped and kept their previous outputs")
    print(f"[build] book rendered: {index}")
    for c, s in failed.items():
        print(f"error: chapter {c} {s}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_clean(project: Project, args: argparse.Namespace) -> int:
    from compendium.book.runner import EXIT_BUSY, Busy, clean

    try:
        removed = clean(project)
    except Busy as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUSY
    for p in removed:
        try:
            shown = p.relative_to(project.output_root)
        except ValueError:
            shown = p
        print(f"removed {shown}")
    print("nothing to clean" if not removed else f"[clean] removed {len(removed)} path(s)")
    return 0


def _cmd_data(project: Project, args: argparse.Namespace) -> int:
    from compendium.datasets import DataMissing, Registry

    reg = Registry.default(project.root)
    if args.action == "list":
        for name, ds in reg.datasets.items():
            print(f"{name}: {ds.title}\n  licence: {ds.licence}; {ds.homepage}\n  checksums: {ds.checksum_source}")
            for f in ds.files:
                print(f"    {f.path}  [{', '.join(f.checksums) or 'NO CHECKSUM RECORDED'}]")
        print(f"cache: {reg.cache_dir}\nmirror: {reg.mirror_dir or '(none; set COMPENDIUM_DATA_MIRROR)'}")
        return 0
    names = args.names or sorted(reg.datasets)
    bad = 0
    for name in names:
        try:
            if args.action == "verify":
                for f in reg.dataset(name).files:
                    d = reg.diagnose(f)
                    if d.resolved:
                        print(f"{name}/{f.name}: ok ({d.resolved.source}, {d.resolved.location})")
                    else:
                        print(f"{name}/{f.name}: {d.state.upper()}\n" + "\n".join(d.lines("    ")[1:]))
                    bad += d.resolved is None
            else:  # fetch
                for fname, r in reg.resolve(name).items():
                    print(f"{name}/{fname}: ok ({r.source}, {r.location})")
        except DataMissing as err:
            print(f"error: {err}", file=sys.stderr)
            bad += 1
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
    return 1 if bad else 0


def _cmd_claims(project: Project, args: argparse.Namespace) -> int:
    from compendium.book.claims import lock_problems, write_lock

    if args.action == "check":
        problems = lock_problems(project.papers_dir)
        for p in problems:
            print(p)
        print("all claims match their pre-registered pins" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0
    try:
        changed = write_lock(project.papers_dir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(f"pinned {c}" for c in changed) or "nothing changed")
    return 0


def _cmd_course(project: Project, args: argparse.Namespace) -> int:
    """``compendium course --student OUT/`` (solutions removed, stubs in place) or ``--instructor OUT/``."""
    from pathlib import Path

    from compendium.book.course import write_release

    chapters = [c.strip() for c in args.chapters.split(",") if c.strip()] if args.chapters else None
    try:
        written = write_release(project, Path(args.out), student=args.student, chapters=chapters)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    kind = "student" if args.student else "instructor"
    print(f"[course] {kind} release: {len(written)} notebooks in {args.out} (see {Path(args.out) / 'README.md'})")
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _run_knobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="CPU threads of the chapter's kernel (OMP_NUM_THREADS; recorded with its results). A record "
                        "repeats bit for bit only at its own thread count")
    p.add_argument("--kernel", default=None, metavar="NAME",
                   help="Jupyter kernel to execute with (default: python3, the interpreter running compendium)")
    p.add_argument("--timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="wall-clock limit for the whole notebook, per chapter (default: none)")


def _cmd_compare(args: argparse.Namespace) -> int:
    from compendium.book.compare import compare_paths

    chapters = list(dict.fromkeys(c.strip() for c in args.chapters.split(",") if c.strip())) if args.chapters else None
    try:
        comparisons, warnings = compare_paths(args.a, args.b, chapters)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("\n".join(c.summary() for c in comparisons))
    flips = sum(len(c.flips) for c in comparisons)
    print(f"{flips} verdict(s) differ across {len(comparisons)} chapter(s)")
    return 1 if flips and args.fail_on_flip else 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    """``compendium calibrate``: a pooled nested case-control CSV in, the calibrated spline analysis out
    (:mod:`compendium.stats.pooling`); needs no project checkout."""
    import warnings
    from pathlib import Path

    import pandas as pd

    from compendium.stats.pooling import PooledSplineModel

    path = Path(args.data)
    if not path.is_file():
        print(f"error: no such file: {path}", file=sys.stderr)
        return 2
    try:
        df = pd.read_csv(path, sep=args.sep)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        print(f"error: cannot read {path} as CSV: {err}", file=sys.stderr)
        return 2
    knots: object = args.knots
    try:
        values = [float(v) for v in str(args.knots).split(",") if v.strip()]
        knots = int(values[0]) if len(values) == 1 else values
    except ValueError:
        print(f"error: --knots takes a number of knots (3-7) or comma-separated knot values, got {args.knots!r}",
              file=sys.stderr)
        return 2
    ref_studies = None
    if args.reference_studies:
        ref_studies = [v.strip() for v in args.reference_studies.split(",") if v.strip()]
        labels = {str(v): v for v in pd.unique(df[args.study])} if args.study in df.columns else {}
        ref_studies = [labels.get(v, v) for v in ref_studies]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = PooledSplineModel(df, study=args.study, set=args.set, case=args.case, local=args.local,
                                      reference=args.reference, covariates=args.covariates,
                                      calibration_covariates=args.calibration_covariates,
                                      reference_studies=ref_studies, missing=args.missing)
            res = model.fit(args.method, knots=knots)
            grid = None
            if args.grid:
                lo, hi, n = (float(v) for v in args.grid.split(","))
                grid = __import__("numpy").linspace(lo, hi, int(n))
            paths = res.save(args.out, grid=grid, ref=args.ref)
        except (ValueError, KeyError) as err:
            print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
            return 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(res.report())
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compendium", description=__doc__)
    p.add_argument("--root", help="project root (default: found from the working directory)")
    p.add_argument("--output-root", help="where book/chapters, results and _build go (default: the project root)")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="chapters with their title, paper, profiles and last result")
    ls.add_argument("--cost", action="store_true", help="the cost table: each paper profile's measured smoke step "
                    "time on this CPU and ESTIMATED CPU-/GPU-hours of the full paper run (book page: book/cost.md)")

    r = sub.add_parser("run", help="validate parameters, execute one chapter and record its results")
    r.add_argument("chapter")
    r.add_argument("--profile", default="default", help="quick | default | paper (default: default)")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override one parameter (repeatable), e.g. -p epochs 3")
    _run_knobs(r)
    r.add_argument("--log-output", action="store_true",
                   help="also stream the kernel's output to the terminal (it always goes to results/<chapter>.log)")
    r.add_argument("--smoke", action="store_true",
                   help="smoke mode: the profile's architecture and every loop with one or two steps, a batch of at "
                        "most two, synthetic samples of the real shapes where data is absent; publishes nothing "
                        "(_build/smoke/<chapter>.ipynb; step times in results/smoke/<chapter>.json)")
    r.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="run through submitit: 'slurm' submits a job (papermill + torchrun inside it), "
                        "'local' runs the same path on this machine (submitit's LocalExecutor)")
    r.add_argument("--gpus", type=int, default=None, help="GPUs of the job (one torchrun process each; default: "
                   "1 for slurm, 0 for local)")
    r.add_argument("--partition", default=None, help="Slurm partition")
    r.add_argument("--time", type=float, default=None, metavar="HOURS", help="Slurm time limit in hours (default 24)")
    r.add_argument("--wait", action="store_true", help="with --executor slurm: wait for the job and report its end")

    b = sub.add_parser("build", help="re-run changed chapters, then render the book")
    b.add_argument("--profile", default="default")
    b.add_argument("--jobs", type=_positive_int, default=1,
                   help="chapters run in parallel (default 1; `make book` runs 2), each with cores/jobs threads "
                        "unless --threads or OMP_NUM_THREADS says otherwise")
    b.add_argument("--force", action="store_true", help="re-run every chapter")
    b.add_argument("--lenient", action="store_true", help="do not fail the render on Sphinx warnings")
    _run_knobs(b)

    sub.add_parser("clean", help="remove build outputs (book/chapters, results, _build) and what interrupted runs left")

    cl = sub.add_parser("claims", help="pre-registration: check the claims' rules against their pins, or re-pin")
    cl.add_argument("action", choices=["check", "lock"],
                    help="check: list drifted rules; lock: re-pin (refused for a rule changed without a revision)")

    d = sub.add_parser("data", help="the dataset registry")
    d.add_argument("action", choices=["list", "verify", "fetch"])
    d.add_argument("names", nargs="*", help="datasets (default: all)")
    ca = sub.add_parser("calibrate", help="calibrated spline analysis of your own pooled nested case-control CSV",
                        description="Calibrate each study's local measurements to the reference laboratory, fit a "
                        "restricted-cubic-spline conditional logistic regression, and write the coefficient table "
                        "(stacked sandwich SEs), the curve with pointwise CIs (CSV, PNG) and a report. Matched sets "
                        "are identified by (study, set); any matching ratio; tied cases by the exact conditional "
                        "likelihood. Python API: compendium.stats.pooling.PooledSplineModel.")
    ca.add_argument("data", help="CSV file, one row per person")
    ca.add_argument("--study", required=True, help="study column")
    ca.add_argument("--set", required=True, help="matched-set column (ids may restart in each study)")
    ca.add_argument("--case", required=True, help="case indicator column (1 case, 0 control)")
    ca.add_argument("--local", required=True, help="local-laboratory measurement column (may be empty in reference studies)")
    ca.add_argument("--reference", required=True, help="reference-laboratory measurement column (empty where not measured)")
    ca.add_argument("--covariates", help="outcome-model covariates: a patsy right-hand side, e.g. \"age + C(sex)\"")
    ca.add_argument("--calibration-covariates", help="calibration-model covariates (patsy right-hand side)")
    ca.add_argument("--reference-studies", help="comma-separated reference-laboratory studies "
                    "(default: the studies where everyone has a reference measurement)")
    ca.add_argument("--method", default="full", choices=["naive", "internalized", "full"], help="default: full")
    ca.add_argument("--knots", default="4", help="number of knots (3-7, Harrell's quantiles) or comma-separated values (default 4)")
    ca.add_argument("--ref", type=float, help="reference exposure of the curve (default: the median exposure)")
    ca.add_argument("--grid", help="curve grid as FROM,TO,N (default: 1st to 99th percentile, 101 points)")
    ca.add_argument("--missing", default="raise", choices=["raise", "drop"], help="rows with missing values: stop (default) or drop")
    ca.add_argument("--sep", default=",", help="CSV field separator (default ,)")
    ca.add_argument("--out", default="calibration-results", help="output folder (default calibration-results/)")
    ca.set_defaults(standalone=_cmd_calibrate)

    cm = sub.add_parser("compare", help="two runs' records side by side: how they ran, which numbers and verdicts differ",
                        description="Compare the results records of two runs (two output roots, results folders or "
                        "record files): commit, parameters, threads and vector kernels, every entry of the records' numbers "
                        "that differs and every claim whose verdict or interval differs. Exit 0 compared, 1 a verdict "
                        "differs (--fail-on-flip), 2 a record missing or unreadable. Two runs of one commit on machines with "
                        "other vector kernels (AVX2 against AVX-512) show which verdicts hang on the last bits.")
    cm.add_argument("a", type=Path, help="an output root, a results folder or one results/<chapter>.json")
    cm.add_argument("b", type=Path, help="the other run, in the same forms")
    cm.add_argument("--chapters", help="comma-separated chapters (default: every chapter both hold)")
    cm.add_argument("--fail-on-flip", action="store_true", help="exit with status 1 when a verdict differs")
    cm.set_defaults(standalone=_cmd_compare)

    co = sub.add_parser("course", help="hand out the chapter notebooks: --student (solutions removed, exercise "
                                       "stubs in place) or --instructor (with solutions)")
    kind = co.add_mutually_exclusive_group(required=True)
    kind.add_argument("--student", action="store_true", help="remove solution cells, put exercise stubs in place")
    kind.add_argument("--instructor", action="store_true", help="keep the solutions")
    co.add_argument("out", help="output folder (created)")
    co.add_argument("--chapters", help="comma-separated chapters (default: all)")

    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "standalone", None):  # needs no project (calibrate, compare)
        return args.standalone(args)
    try:
        project = Project.discover(args.root, args.output_root)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    handler = {"list": _cmd_list, "run": _cmd_run, "build": _cmd_build, "clean": _cmd_clean, "data": _cmd_data,
               "claims": _cmd_claims, "course": _cmd_course}[args.command]
    from compendium.book.runner import sigterm_raises

    with sigterm_raises():  # SIGTERM cleans up like Ctrl-C: no partial outputs, previous ones kept
        return handler(project, args)
