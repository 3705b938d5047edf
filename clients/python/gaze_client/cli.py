"""`gaze-client`: the GAZE REST API from a shell.

    gaze-client presets
    gaze-client generate example_01 -n 4 --seed 7 --extra-positive "smiling" --wait --out images
    gaze-client job ID | jobs --status done | cancel ID | watch [ID]

The server and the key come from --url / --api-key, else GAZE_URL / GAZE_API_KEY. `--json` prints what
the commands found as JSON on standard output (one document per line for `watch`); the live progress of
a wait goes to standard error. Exit status: 0 every job done (or the command did what it was asked),
1 a job failed or was cancelled (or a cancel found it already ended), 2 a usage error or an error
answer, 3 a wait that timed out.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from gaze_client import errors
from gaze_client._progress import Display, describe
from gaze_client._sync import Client
from gaze_client._version import __version__
from gaze_client.models import STATUSES, Job

OK, JOB_FAILED, ERROR, TIMED_OUT = 0, 1, 2, 3


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options every command takes, before or after its name (the later one wins)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--url", default=default, help="the GAZE server (default: $GAZE_URL, else http://localhost:5782)")
    parser.add_argument("--api-key", default=default, help="the API key (default: $GAZE_API_KEY)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="print JSON on standard output")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="gaze-client", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="exit status: 0 done, 1 a job failed or was cancelled, 2 usage or server"
                                          " error, 3 timeout")
    main.add_argument("--version", action="version", version=f"gaze-client {__version__}")
    _common(main, suppress=False)
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common(sub, suppress=True)
        return sub

    command("presets", "list the presets")

    generate = command("generate", "queue images of a preset; --wait to follow them, --out to download them")
    generate.add_argument("slug", help="the preset's slug, e.g. example_01")
    generate.add_argument("-n", "--count", type=positive_int, default=1, help="images to make (1-20)")
    generate.add_argument("--seed", type=int, help="seed of the first image (image i gets seed + i)")
    generate.add_argument("--extra-positive", help="appended to the preset's prompt")
    generate.add_argument("--extra-negative", help="appended to the preset's negative prompt")
    generate.add_argument("--checkpoint", help="a checkpoint instead of the preset's")
    generate.add_argument("--width", type=int, help="image width (with --height)")
    generate.add_argument("--height", type=int, help="image height (with --width)")
    generate.add_argument("--wait", action="store_true", help="follow the jobs until they end")
    generate.add_argument("--out", metavar="DIR", help="download the images into DIR (implies --wait)")
    generate.add_argument("--timeout", type=seconds, help="give up waiting after this many seconds (exit 3)")

    job = command("job", "show a job")
    job.add_argument("id")

    jobs = command("jobs", "list your jobs, newest first")
    jobs.add_argument("--status", choices=STATUSES)
    jobs.add_argument("--preset", help="only this preset's jobs")
    jobs.add_argument("--limit", type=positive_int, default=20, help="at most this many (default 20)")

    cancel = command("cancel", "cancel a job that has not ended")
    cancel.add_argument("id")

    watch = command("watch", "follow one job until it ends, or with no ID every job of your key")
    watch.add_argument("id", nargs="?")
    watch.add_argument("--timeout", type=seconds, help="with an ID: give up after this many seconds (exit 3)")
    return main


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def _doc(job: Job, **extra) -> dict:
    return {**job.model_dump(mode="json"), **extra}


def _exit_for(jobs: Sequence[Job]) -> int:
    return OK if all(job.status == "done" for job in jobs) else JOB_FAILED


def run_presets(client: Client, args) -> int:
    presets = client.presets()
    if args.json:
        _print_json([preset.model_dump(mode="json") for preset in presets])
    else:
        for preset in presets:
            print(f"{preset.slug}\t{preset.name}")
    return OK


def run_generate(client: Client, args) -> int:
    params = {name: getattr(args, name) for name in ("seed", "extra_positive", "extra_negative", "checkpoint",
                                                      "width", "height")}
    jobs = client.generate(args.slug, args.count, **params)
    if not (args.wait or args.out):
        if args.json:
            _print_json([_doc(job) for job in jobs])
        else:
            for job in jobs:
                print(job.id)
        return OK
    display = Display([job.id for job in jobs])
    for job in jobs:
        display.update(job)
    try:
        jobs = client.wait(jobs, timeout=args.timeout, on_update=display.update)
    finally:
        display.close()
    files = {job.id: str(client.download(job, args.out)) for job in jobs if args.out and job.status == "done"}
    if args.json:
        _print_json([_doc(job, **({"file": files[job.id]} if job.id in files else {})) for job in jobs])
    else:
        for job in jobs:
            print(files.get(job.id) or describe(job, bar=False))
    return _exit_for(jobs)


def run_job(client: Client, args) -> int:
    job = client.job(args.id)
    if args.json:
        _print_json(_doc(job))
    else:
        print(describe(job, bar=False))
        print(f"  label: {job.label}")
        if job.result:
            print(f"  image: {client.base_url}{job.result.image_url}\n  seed:  {job.result.seed}")
    return OK


def run_jobs(client: Client, args) -> int:
    found = []
    for job in client.jobs(args.status, preset=args.preset, page_size=min(args.limit, 100)):
        found.append(job)
        if len(found) >= args.limit:
            break
    if args.json:
        _print_json([_doc(job) for job in found])
    else:
        for job in found:
            print(describe(job, bar=False))
    return OK


def run_cancel(client: Client, args) -> int:
    try:
        answer = client.cancel(args.id)
    except errors.AlreadyEnded as exc:
        if args.json:
            _print_json({"id": args.id, "status": exc.status, "error": exc.message})
        else:
            print(f"{args.id}: already {exc.status}, not cancelled", file=sys.stderr)
        return JOB_FAILED
    if args.json:
        _print_json(answer.model_dump(mode="json"))
    else:
        print(f"{answer.id} cancelled")
    return OK


def run_watch(client: Client, args) -> int:
    if args.id is None:      # every job of the key, until interrupted
        for job in client.events():
            if args.json:
                _print_json(_doc(job))
            else:
                print(describe(job, bar=False), flush=True)
        return OK
    if args.json:
        job = client.wait(args.id, timeout=args.timeout, on_update=lambda seen: _print_json(_doc(seen)))
        return _exit_for([job])
    display = Display([args.id])
    try:
        job = client.wait(args.id, timeout=args.timeout, on_update=display.update)
    finally:
        display.close()
    return _exit_for([job])


COMMANDS = {"presets": run_presets, "generate": run_generate, "job": run_job, "jobs": run_jobs,
            "cancel": run_cancel, "watch": run_watch}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)    # a usage error exits 2 here
    try:
        with Client(args.url, args.api_key) as client:
            return COMMANDS[args.command](client, args)
    except errors.WaitTimeout as exc:
        print(f"gaze-client: {exc}", file=sys.stderr)
        return TIMED_OUT
    except errors.JobFailed as exc:
        print(f"gaze-client: {exc}", file=sys.stderr)
        return JOB_FAILED
    except errors.GazeError as exc:
        where = f" ({exc.field})" if exc.field else ""
        status = f"{exc.status_code}: " if exc.status_code else ""
        print(f"gaze-client: {status}{exc}{where}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":   # python -m gaze_client.cli
    sys.exit(main())
