"""CLI commands that run and watch sweeps: submit, resume, status, dashboard."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click

from sweeper.cli.common import fail
from sweeper.cli.progress import SweepProgress, clock
from sweeper.outcome import STATUSES, TrialOutcome, TrialStatus
from sweeper.plan import TrialSpec
from sweeper.recipe import Recipe, load_recipe
from sweeper.results import damaged_curves, read_trials
from sweeper.runfolder import RECIPE_FILE, read_progress
from sweeper.sweep import SweepSummary, prepare_sweep, run_sweep

# Where the `--job` commands find the cluster's Job API (Ray's own CLI reads the first).
JOB_ADDRESS_ENV = ["RAY_API_SERVER_ADDRESS", "SWEEPER_JOB_ADDRESS"]
DEFAULT_JOB_ADDRESS = "http://127.0.0.1:8265"


LOG_TO = click.option(
    "--log-to",
    "log_to",
    multiple=True,
    metavar="DEST",
    help="Also log each finished trial (params, curve, status) to wandb[:PROJECT] or "
    "mlflow:TRACKING_URI; repeat for both (docs/watching.md).",
)

# The summary's counts, in this order.
SHOWN_STATUSES = (TrialStatus.COMPLETE, TrialStatus.DIVERGED, TrialStatus.FAILED)


def execute_sweep(
    recipe: Recipe,
    run_dir: Path,
    address: str | None,
    storage: str | None,
    mirror_uri: str | None = None,
    log_to: tuple[str, ...] = (),
) -> SweepSummary:
    """Run the sweep, showing its progress: a live view on a terminal, else a line per
    finished trial (also what a Ray Job's log shows; cli/progress.py). With ``mirror_uri``,
    copy each finished trial's files there as it goes (execute/jobs.py); with ``log_to``, log
    each finished trial to those trackers (trackers.py)."""
    from sweeper.trackers import TrialLogger, make_tracker

    log_trial = TrialLogger([make_tracker(destination, str(run_dir)) for destination in log_to])
    mirror = None
    if mirror_uri:
        from sweeper.execute.jobs import ResultMirror

        mirror = ResultMirror(mirror_uri, run_dir)
    view = SweepProgress()

    def on_start(planned: int, pending: int, dashboard_url: str | None) -> None:
        view.begun()
        if pending:
            click.echo(
                f"sweep {recipe.name}: {planned} trials planned, {planned - pending} already "
                f"recorded, {pending} to run -> {run_dir}"
                + (f"; mirrored to {mirror_uri}" if mirror_uri else "")
            )
        else:
            click.echo(
                f"sweep {recipe.name}: finished already, all {planned} trials recorded in "
                f"{run_dir} (0 to run); see `sweeper status {run_dir}` or `sweeper report {run_dir}`"
            )
        view.on_start(planned, pending, dashboard_url)

    def on_trial(spec: TrialSpec, outcome: TrialOutcome, counts: Counter) -> None:
        view.on_trial(spec, outcome, counts)
        log_trial(spec, outcome)
        if mirror is not None:
            mirror.put_parts()

    view.begin(f"sweep {recipe.name}: planning, and starting Ray if there is work")
    try:
        summary = run_sweep(
            recipe,
            run_dir,
            address=address,
            storage_url=storage,
            on_start=on_start,
            on_trial=on_trial,
            on_tick=view.on_tick,
            on_problem=lambda problem: click.echo(f"warning: {problem}", err=True),
            on_plan=click.echo,
        )
    finally:
        view.close()
        log_trial.close()
        if mirror is not None and run_dir.is_dir():
            mirror.put_all()  # recipe, journal, progress.json, and anything a crash left behind

    def listed(counts: Counter) -> str:
        return ", ".join(f"{counts.get(s, 0)} {s}" for s in SHOWN_STATUSES)

    click.echo(
        f"done in {summary.wall_seconds:.0f}s: this run {listed(summary.counts)}; "
        f"the sweep {listed(summary.sweep_counts)}; results in {run_dir}/trials"
    )
    if not summary.ok:
        click.echo(
            f"error: {summary.sweep_counts['failed']} trial(s) failed ({summary.failed_fraction:.0%}, "
            f"tolerated {summary.max_failed_fraction:.0%}); see the error column of {run_dir}/trials; "
            f"`sweeper resume {run_dir}` runs them again",
            err=True,
        )
    return summary


@click.command()
@click.argument("recipe_path", metavar="RECIPE")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder (default runs/<name>).")
@click.option("--address", envvar="RAY_ADDRESS", help="Attach to this Ray cluster instead of starting one.")
@click.option("--storage", help="Optuna storage URL (default: a journal file in the run folder).")
@click.option(
    "--job",
    is_flag=True,
    help="Submit the whole sweep as a Ray Job to --address "
    "(http://HEAD:8265) and return at once; follow it with `sweeper logs --job ID`.",
)
@click.option(
    "--results",
    "results_uri",
    metavar="URI",
    help="Storage URI (s3://..., gs://..., "
    "file://...) each finished trial is copied to as the sweep goes; with --job, where "
    "`sweeper fetch` reads the job's results.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Only check RECIPE, its data and its plan; print the "
    "plan and exit (0: it would run). Starts nothing, writes nothing.",
)
@LOG_TO
def submit(
    recipe_path: str,
    out: str | None,
    address: str | None,
    storage: str | None,
    job: bool,
    results_uri: str | None,
    check: bool,
    log_to: tuple[str, ...],
) -> None:
    """Run the sweep RECIPE to the end; results stream into the run folder.

    With --job, --out names the run folder on the head node (default
    $HOME/sweeper-runs/JOB_ID there).
    """
    recipe = load_recipe(recipe_path)
    if check:
        run_dir = Path(os.path.expandvars(str(recipe.run_dir(out)))).expanduser()
        specs = prepare_sweep(recipe, run_dir)
        cells = len({spec.cell_id for spec in specs})
        click.echo(
            f"sweep {recipe.name}: {len(specs)} trials in {cells} cells, "
            f"{sum(spec.tokens for spec in specs):.3g} tokens in all -> {run_dir}"
        )
        return
    if job:
        _submit_job(recipe, recipe_path, address, out, results_uri, storage)
        return
    run_dir = Path(os.path.expandvars(str(recipe.run_dir(out)))).expanduser()
    summary = execute_sweep(recipe, run_dir, address, storage, results_uri, log_to)
    sys.exit(0 if summary.ok else 1)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--address", envvar="RAY_ADDRESS", help="Attach to this Ray cluster instead of starting one.")
@click.option("--storage", help="Optuna storage URL, if the sweep used one.")
@LOG_TO
def resume(run_dir: str, address: str | None, storage: str | None, log_to: tuple[str, ...]) -> None:
    """Finish the sweep of RUN_DIR with the recipe saved there, skipping recorded trials."""
    recipe_file = Path(run_dir) / RECIPE_FILE
    if not recipe_file.is_file():
        fail(f"{run_dir}: no {RECIPE_FILE} here; is this a sweeper run folder?")
    recipe = load_recipe(recipe_file)
    summary = execute_sweep(recipe, Path(run_dir), address, storage, log_to=log_to)
    sys.exit(0 if summary.ok else 1)


def _driver_state(progress: dict) -> str:
    if not progress:
        return "no driver has run here (imported results?)"
    if progress.get("finished"):
        return "finished"
    pid, host = progress.get("pid"), progress.get("host")
    if host == os.uname().nodename and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"stopped before finishing (driver pid {pid} is gone; `sweeper resume` continues it)"
        except PermissionError:
            pass
    age = time.time() - float(progress.get("updated_at", 0))
    return f"running (pid {pid} on {host}, updated {age:.0f}s ago)"


# The columns `status` shows: a few of the trial rows' 37 (a sweep's table can be large).
STATUS_COLUMNS = ["status", "cell_id", "n_params", "tokens_budget", "loss", "lr", "batch_size"]


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--job", "job_id", metavar="ID", help="Report on the Ray Job ID (from `submit --job`) instead.")
@click.option(
    "--address",
    envvar=JOB_ADDRESS_ENV,
    default=DEFAULT_JOB_ADDRESS,
    show_default=True,
    help="With --job: the cluster's Job API (dashboard) address.",
)
def status(run_dir: str | None, as_json: bool, job_id: str | None, address: str) -> None:
    """Trials by status and the best loss per cell of RUN_DIR (while it runs or after)."""
    if job_id:
        _job_status(job_id, address, as_json)
        return
    if not run_dir:
        fail("give a RUN_DIR, or --job ID for a sweep submitted as a Ray Job")
    folder = Path(run_dir)
    if not folder.is_dir():
        fail(f"{run_dir}: no such run folder")
    progress = read_progress(folder)
    read = read_trials(folder, columns=STATUS_COLUMNS)
    problems = read.problems + sorted(damaged_curves(folder).values())
    frame = read.to_pandas()
    counts = Counter(frame["status"]) if len(frame) else Counter()
    driver = _driver_state(progress)
    # A dead driver's last progress.json still lists its in-flight trials; they are not running.
    running = progress.get("running", []) if driver.startswith("running") else []
    planned = progress.get("planned")
    # Pending: planned, and neither recorded (whatever its status: a failed trial is counted
    # as failed, though `resume` runs it again) nor running now.
    known = set(frame["trial_id"]) if len(frame) else set()
    known |= {item.get("trial_id") for item in running}
    pending = max(0, planned - len(known)) if planned else None
    best = []
    if len(frame):
        complete = frame[frame["status"] == TrialStatus.COMPLETE]
        for cell_id, group in complete.groupby("cell_id", sort=False):
            row = group.loc[group["loss"].idxmin()]
            best.append(
                {
                    "cell_id": cell_id,
                    "n_params": int(row["n_params"]),
                    "tokens_budget": int(row["tokens_budget"]),
                    "best_loss": float(row["loss"]),
                    "lr": float(row["lr"]),
                    "batch_size": int(row["batch_size"]),
                    "runs": int(len(group)),
                }
            )
        best.sort(key=lambda b: (b["n_params"], b["tokens_budget"]))
    report: dict[str, Any] = {
        "run_dir": str(folder),
        "driver": driver,
        "planned": planned,
        "counts": {s: counts.get(s, 0) for s in STATUSES},
        "running": running,
        "pending": pending,
        "best_per_cell": best,
        "problems": problems,
        "dashboard_url": progress.get("dashboard_url"),
        "training": progress.get("training") or None,
    }
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"run {folder}: driver {report['driver']}")
    shown = ", ".join(f"{n} {s}" for s, n in report["counts"].items() if n)
    click.echo(
        f"trials: {planned if planned is not None else len(frame)} planned; {shown or 'none recorded yet'}"
        + (f", {len(running)} running" if running else "")
        + (f", {pending} pending" if pending else "")
    )
    if counts.get(TrialStatus.FAILED) and not driver.startswith("running"):
        click.echo(
            f"failed trials: their errors are in the error column of {folder}/trials; "
            f"`sweeper resume {folder}` runs them again"
        )
    if report["training"]:
        click.echo(f"plan: {report['training']['note']}")
    for item in running:
        click.echo(f"  {item.get('state', 'running')}: {item['label']}{_node_words(item)}{_live_words(item)}")
    if best:
        click.echo(f"{'cell':<34} {'N':>10} {'D':>10} {'best loss':>10} {'lr':>9} {'B':>5} {'runs':>5}")
        for b in best:
            click.echo(
                f"{b['cell_id']:<34} {b['n_params']:>10.3g} {b['tokens_budget']:>10.3g} "
                f"{b['best_loss']:>10.4f} {b['lr']:>9.3g} {b['batch_size']:>5} {b['runs']:>5}"
            )


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--address", help="Ask this Ray cluster (HOST:6379 or ray://...) for its dashboard.")
def dashboard(run_dir: str | None, address: str | None) -> None:
    """Print the Ray dashboard address of a running sweep's own cluster.

    With RUN_DIR, the address its driver recorded while it runs; after the sweep, where its
    report is. Without RUN_DIR, the sweeps running under ./runs, or the cluster --address
    names. Never another cluster found by guessing: a machine may run several.
    """
    if run_dir:
        click.echo(_run_dashboard(Path(run_dir)))
        return
    if not address:
        running = [
            folder
            for folder in sorted(Path("runs").glob("*"))
            if _driver_state(read_progress(folder)).startswith("running")
        ]
        if not running:
            fail("no sweep is running under ./runs; give its RUN_DIR (or --address of a cluster)", code=1)
        for folder in running:
            click.echo(f"{folder}: {_run_dashboard(folder)}")
        return
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        context = ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError) as error:
        fail(f"no Ray cluster answers at {address} ({str(error).splitlines()[0][:120]})", code=1)
    url = context.dashboard_url
    ray.shutdown()
    if not url:
        fail("the cluster runs without a dashboard (install ray[default] on its head node)", code=1)
    click.echo(url if url.startswith("http") else f"http://{url}")
    if not any(h in address for h in ("127.0.0.1", "localhost")):
        click.echo(
            "remote cluster: reach it with `ray dashboard CLUSTER.yaml` or "
            "`ssh -L 8265:127.0.0.1:8265 HEAD` and open http://127.0.0.1:8265",
            err=True,
        )


def _run_dashboard(folder: Path) -> str:
    """The dashboard of RUN_DIR's own cluster while its driver runs; else exit 1 saying why,
    and where to look instead."""
    progress = read_progress(folder)
    if not progress:
        fail(f"{folder}: no sweep has run here")
    state = _driver_state(progress)
    if state.startswith("running") and progress.get("dashboard_url"):
        return str(progress["dashboard_url"])
    report = folder / "report.html"
    look = f"its report: {report}" if report.is_file() else f"write its report with `sweeper report {folder}`"
    fail(f"{folder}: not running ({state}); the dashboard went with its cluster; {look}", code=1)


def _live_words(item: dict) -> str:
    """'; step 120/400, loss 2.310, val 2.402, 0:14' once the trial has reported progress."""
    if "step" not in item:
        return ""
    words = f"; step {item['step']}/{item.get('steps', '?')}"
    if isinstance(item.get("train_loss"), (int, float)) and math.isfinite(item["train_loss"]):
        words += f", loss {item['train_loss']:.3f}"
    if item.get("val_loss") is not None:
        words += f", val {item['val_loss']:.3f}"
    return f"{words}, {clock(item.get('elapsed_s'))} elapsed"


def _node_words(item: dict) -> str:
    """' on node IP (id abcd1234)' for a progress.json running entry, when known."""
    node_id = item.get("node_id")
    if not node_id:
        return ""
    ip = item.get("node_ip")
    return f" on node {ip} ({node_id[:8]})" if ip else f" on node {node_id[:8]}"


# ----------------------------------------------------------------------------- Ray Jobs
# A sweep as a Ray Job: sweeper/execute/jobs.py holds the logic; these only print. The job
# itself runs `python -m sweeper submit recipe.yaml --out ... [--results URI]` on the head.


def _submit_job(
    recipe: Recipe,
    recipe_path: str,
    address: str | None,
    out: str | None,
    results_uri: str | None,
    storage: str | None,
) -> None:
    from sweeper.execute import jobs

    if not address:
        fail("--job needs --address http://HEAD:8265 (the cluster's dashboard / Job API)")
    if recipe.data.source != "builtin":
        click.echo("note: data.path is read on the cluster's nodes, not sent with the job", err=True)
    submitted = jobs.submit(
        address, Path(recipe_path), recipe.name, out=out, results=results_uri, storage=storage
    )
    click.echo(f"job {submitted.job_id} submitted: sweep {recipe.name}")
    click.echo(f"dashboard: {submitted.dashboard_url}")
    click.echo(
        f"run folder on the head: {submitted.run_dir}"
        + (f"; results mirrored to {submitted.results}" if submitted.results else "")
    )
    click.echo(
        f"follow: sweeper logs --job {submitted.job_id} --follow --address {jobs.http_address(address)}"
    )
    click.echo(
        f"fetch:  sweeper fetch --job {submitted.job_id} --out DIR --address {jobs.http_address(address)}"
    )


def _job_status(job_id: str, address: str, as_json: bool) -> None:
    from sweeper.execute import jobs

    details = jobs.info(address, job_id)
    logs = jobs.client(address).get_job_logs(job_id)
    metadata = details.metadata or {}
    report = {
        "job_id": job_id,
        "status": str(details.status.value),
        "message": details.message,
        "sweep": metadata.get("sweeper_sweep"),
        "run_dir": metadata.get("sweeper_run_dir"),
        "results": metadata.get("sweeper_results") or None,
        "last_trial": jobs.last_progress_line(logs),
        "start_time": details.start_time,
        "end_time": details.end_time,
        "driver_exit_code": details.driver_exit_code,
        "dashboard_url": f"{jobs.http_address(address)}/#/jobs/{job_id}",
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"job {job_id}: {report['status']}" + (f" ({report['message']})" if report["message"] else ""))
    if report["last_trial"]:
        click.echo(f"  last trial: {report['last_trial']}")
    click.echo(
        f"  run folder on the head: {report['run_dir']}"
        + (f"; results at {report['results']}" if report["results"] else "")
    )
    click.echo(f"  dashboard: {report['dashboard_url']}")


# The Job API address option shared by the commands that talk to a submitted Ray Job.
JOB_ADDRESS = click.option(
    "--address",
    envvar=JOB_ADDRESS_ENV,
    default=DEFAULT_JOB_ADDRESS,
    show_default=True,
    help="The cluster's Job API (dashboard) address.",
)


@click.command()
@click.option("--job", "job_id", required=True, metavar="ID", help="The Ray Job (from `submit --job`).")
@click.option("--follow", is_flag=True, help="Stream the log until the job ends; exit 0 if it succeeded.")
@JOB_ADDRESS
def logs(job_id: str, follow: bool, address: str) -> None:
    """Print the log of a sweep submitted as a Ray Job (its driver's output)."""
    from sweeper.execute import jobs

    if not follow:
        click.echo(jobs.client(address).get_job_logs(job_id), nl=False)
        return
    for chunk in jobs.follow(address, job_id):
        click.echo(chunk, nl=False)
    final = jobs.wait(address, job_id, timeout=30)
    click.echo(f"job {job_id}: {final}", err=True)
    sys.exit(0 if final == "SUCCEEDED" else 1)


@click.command()
@click.option("--job", "job_id", required=True, metavar="ID", help="The Ray Job (from `submit --job`).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Local folder to fill.")
@JOB_ADDRESS
@click.option(
    "--from-head",
    is_flag=True,
    help="Read the run folder on the head even if the job "
    "has a --results URI (e.g. a bucket this machine cannot read).",
)
def fetch(job_id: str, out: str, address: str, from_head: bool) -> None:
    """Bring a job's run folder home: from its --results URI, else from the head's disk."""
    from sweeper.execute import jobs

    source = jobs.fetch(address, job_id, Path(out), from_head=from_head)
    read = read_trials(out, columns=["status"])
    click.echo(f"fetched {read.table.num_rows} trial rows from {source} into {out}")


@click.command(hidden=True)
@click.argument("run_dir")
def pack(run_dir: str) -> None:
    """Print RUN_DIR as base64 tar.gz between markers (what `sweeper fetch` runs on the head)."""
    from sweeper.execute import jobs

    jobs.pack(Path(os.path.expandvars(run_dir)).expanduser())


COMMANDS = [submit, resume, status, dashboard, logs, fetch, pack]
