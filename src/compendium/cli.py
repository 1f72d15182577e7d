"""Command line: ``compendium list | run | build | data | claims`` (also ``python -m compendium``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from compendium.project import Project


def _cmd_list(project: Project, args: argparse.Namespace) -> int:
    from compendium.chapters import available_chapters, last_record, load_spec

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


def _cmd_run(project: Project, args: argparse.Namespace) -> int:
    from compendium.book.runner import ChapterFailed, run_chapter
    from compendium.params import ParameterError

    overrides = {}
    for name, value in args.param or []:
        if name in overrides:
            print(f"error: parameter '{name}' given twice", file=sys.stderr)
            return 2
        overrides[name] = value
    try:
        run_chapter(project, args.chapter, args.profile, overrides)
    except (ParameterError, KeyError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    except ChapterFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _cmd_build(project: Project, args: argparse.Namespace) -> int:
    from compendium.book.render import render_book
    from compendium.book.runner import run_stale

    status = run_stale(project, args.profile, jobs=args.jobs, force=args.force)
    failed = {c: s for c, s in status.items() if s.startswith("failed")}
    try:
        index, _log = render_book(project, strict=not args.lenient)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"[build] book rendered: {index}")
    for c, s in failed.items():
        print(f"error: chapter {c} {s}", file=sys.stderr)
    return 1 if failed else 0


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
                for fname, r in reg.status(name).items():
                    print(f"{name}/{fname}: " + (f"ok ({r.source}, {r.location})" if r else "MISSING or unverifiable"))
                    bad += r is None
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compendium", description=__doc__)
    p.add_argument("--root", help="project root (default: found from the working directory)")
    p.add_argument("--output-root", help="where book/chapters, results and _build go (default: the project root)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="chapters with their title, paper, profiles and last result")

    r = sub.add_parser("run", help="validate parameters, execute one chapter and record its results")
    r.add_argument("chapter")
    r.add_argument("--profile", default="default", help="quick | default | paper (default: default)")
    r.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="override one parameter (repeatable), e.g. -p epochs 3")

    b = sub.add_parser("build", help="re-run changed chapters, then render the book")
    b.add_argument("--profile", default="default")
    b.add_argument("--jobs", type=int, default=1, help="chapters run in parallel (default 1)")
    b.add_argument("--force", action="store_true", help="re-run every chapter")
    b.add_argument("--lenient", action="store_true", help="do not fail the render on Sphinx warnings")

    cl = sub.add_parser("claims", help="pre-registration: check the claims' rules against their pins, or re-pin")
    cl.add_argument("action", choices=["check", "lock"],
                    help="check: list drifted rules; lock: re-pin (refused for a rule changed without a revision)")

    d = sub.add_parser("data", help="the dataset registry")
    d.add_argument("action", choices=["list", "verify", "fetch"])
    d.add_argument("names", nargs="*", help="datasets (default: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        project = Project.discover(args.root, args.output_root)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    handler = {"list": _cmd_list, "run": _cmd_run, "build": _cmd_build, "data": _cmd_data,
               "claims": _cmd_claims}[args.command]
    return handler(project, args)
