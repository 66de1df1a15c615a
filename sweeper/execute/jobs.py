"""A whole sweep as a Ray Job: submit it, follow it, and bring its results home.

Client side (the user's machine) talks only to the head's Job Submission API (the dashboard
port, 8265 by default) through ``ray.job_submission.JobSubmissionClient``; nothing else of
the cluster need be reachable. The runtime_env carries the recipe (working_dir) and this
package (py_modules), so the cluster needs Ray and sweeper's dependencies, not sweeper
itself.

Cluster side, the job's entrypoint is ``python -m sweeper submit recipe.yaml --out ...``:
the ordinary command-line driver on the head, whose run folder is local to the head
(``$HOME/sweeper-runs/<job id>`` unless ``--out`` says otherwise), and which, given
``--results URI``, copies each finished trial's part files there as it goes
(``ResultMirror``: object-store puts are atomic; on a local filesystem each file is written
with runfolder.atomic_write), so results outlive the head node.

How results come home (``fetch``):
1. The job was given ``--results URI`` (s3://, gs://, abfs://, file://, any pyarrow.fs URI):
   the client copies from there. Works when the head is gone; the recommended way.
2. Otherwise the run folder is still on the head's disk: ``fetch`` submits a tiny helper
   job that packs the folder (tar.gz, base64) into its own log, and the client reads it
   back through the same Job API. Works whenever the head is up and its disk kept.

The job's metadata records both places (``sweeper_run_dir``, ``sweeper_results``), so the
client needs only the job id.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import shlex
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sweeper
from sweeper.errors import SweeperError
from sweeper.results.parts import part_files
from sweeper.results.schema import CURVES_DIR, TRIALS_DIR
from sweeper.runfolder import atomic_write

PACK_BEGIN = "----- sweeper pack begin -----"
PACK_END = "----- sweeper pack end -----"
#: Where a job's run folder lives on the head unless ``--out`` is given (expanded by the shell).
DEFAULT_REMOTE_RUNS = "$HOME/sweeper-runs"
#: Job states that end a job (JobStatus values).
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class JobError(SweeperError):
    """A job request that cannot be served (the cluster or the job, not the input: exit 1)."""

    exit_code = 1


@dataclass
class SubmittedJob:
    job_id: str
    dashboard_url: str  # the job's page in the Ray dashboard
    run_dir: str  # on the head node, as the shell there spells it
    results: str | None  # storage URI the job mirrors its results to, if any


def http_address(address: str) -> str:
    """The Job API's address: http://HOST:PORT (a bare HOST:PORT gets http://)."""
    address = address.rstrip("/")
    return address if re.match(r"^[a-z][a-z0-9+.-]*://", address) else f"http://{address}"


def client(address: str):  # noqa: ANN201 (JobSubmissionClient; imported lazily)
    """A JobSubmissionClient for ``address``; token auth is picked up by Ray itself from
    RAY_AUTH_MODE=token plus RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(http_address(address))
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise JobError(f"cannot reach the Ray Job API at {http_address(address)}: {first}") from None


def runtime_env(recipe_file: Path, staging: Path) -> dict:
    """The job's runtime_env: the recipe as ``recipe.yaml`` in working_dir, the package as
    a py_module (so an unchanged cluster image runs the client's version of sweeper)."""
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "recipe.yaml").write_bytes(Path(recipe_file).read_bytes())
    return {
        "working_dir": str(staging),
        "py_modules": [str(Path(sweeper.__file__).parent)],
        "excludes": ["__pycache__", "*.pyc"],
        "env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"},
    }


def submit(
    address: str,
    recipe_file: Path,
    sweep_name: str,
    *,
    out: str | None = None,
    results: str | None = None,
    storage: str | None = None,
) -> SubmittedJob:
    """Submit the sweep of ``recipe_file`` as one Ray Job and return at once."""
    api = client(address)
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "-", sweep_name)[:40]
    job_id = f"sweeper-{safe_name}-{uuid.uuid4().hex[:8]}"
    # $HOME stays unquoted-expandable: the entrypoint runs in a shell on the head.
    run_dir = out or f"{DEFAULT_REMOTE_RUNS}/{job_id}"
    arguments = ["recipe.yaml", "--out", run_dir]
    if results:
        arguments += ["--results", results]
    if storage:
        arguments += ["--storage", storage]
    entrypoint = "python -m sweeper submit " + " ".join(_shell_word(a) for a in arguments)
    with tempfile.TemporaryDirectory(prefix="sweeper-job-") as staging:
        env = runtime_env(recipe_file, Path(staging))
        try:
            api.submit_job(
                entrypoint=entrypoint,
                submission_id=job_id,
                runtime_env=env,
                metadata={
                    "sweeper_sweep": sweep_name,
                    "sweeper_run_dir": run_dir,
                    "sweeper_results": results or "",
                },
            )
        except RuntimeError as error:
            raise JobError(f"job submission refused: {str(error).strip().splitlines()[0][:300]}") from None
    return SubmittedJob(job_id, f"{http_address(address)}/#/jobs/{job_id}", run_dir, results)


def _shell_word(word: str) -> str:
    # Keep $HOME expandable (it names the head's home, unknown here); quote everything else.
    if word.startswith("$HOME/") and re.fullmatch(r"\$HOME/[A-Za-z0-9_./-]+", word):
        return word
    return shlex.quote(word)


def info(address: str, job_id: str):  # noqa: ANN201 (JobDetails)
    api = client(address)
    try:
        return api.get_job_info(job_id)
    except RuntimeError as error:
        raise JobError(
            f"no job {job_id} at {http_address(address)} ({str(error).splitlines()[0][:160]})"
        ) from None


def last_progress_line(logs: str) -> str | None:
    """The driver's latest ``[done/total] status label ...`` line, if it printed one."""
    lines = [line for line in logs.splitlines() if re.match(r"^\[\s*\d+/\d+\]", line)]
    return lines[-1] if lines else None


def follow(address: str, job_id: str) -> Iterator[str]:
    """Yield the job's log as it grows, until the job ends."""
    api = client(address)
    info(address, job_id)  # a clear error for an unknown id, before streaming

    # tail_job_logs is async; drive it in a private loop and hand out chunks as they come.
    loop = asyncio.new_event_loop()
    try:
        generator = api.tail_job_logs(job_id).__aiter__()
        while True:
            try:
                chunk = loop.run_until_complete(generator.__anext__())
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        loop.close()


def wait(address: str, job_id: str, timeout: float | None = None, poll: float = 1.0) -> str:
    """Block until the job ends (or ``timeout``); return its status name."""
    api = client(address)
    deadline = None if timeout is None else time.time() + timeout
    while True:
        status = str(api.get_job_status(job_id).value)
        if status in TERMINAL or (deadline is not None and time.time() > deadline):
            return status
        time.sleep(poll)


# ----------------------------------------------------------------------------- fetch


def fetch(address: str, job_id: str, destination: Path, timeout: float = 600, from_head: bool = False) -> str:
    """Copy the job's run folder into ``destination``; return where it came from.

    From the job's results URI when it has one (unless ``from_head``), else from the head's
    disk through a helper job.
    """
    details = info(address, job_id)
    metadata = details.metadata or {}
    if "sweeper_run_dir" not in metadata:
        raise JobError(f"job {job_id} was not submitted by sweeper (no sweeper metadata)")
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    results = metadata.get("sweeper_results")
    if results and not from_head:
        copy_tree_from_uri(results, destination)
        return results
    return _fetch_by_pack_job(address, job_id, metadata["sweeper_run_dir"], destination, timeout)


def copy_tree_from_uri(uri: str, destination: Path) -> None:
    from pyarrow import fs

    source_fs, source_path = fs.FileSystem.from_uri(uri)
    if source_fs.get_file_info(source_path).type == fs.FileType.NotFound:
        raise JobError(f"{uri}: nothing there yet (has the job recorded a trial?)")
    fs.copy_files(
        source_path,
        str(destination),
        source_filesystem=source_fs,
        destination_filesystem=fs.LocalFileSystem(),
    )


def _fetch_by_pack_job(address: str, job_id: str, run_dir: str, destination: Path, timeout: float) -> str:
    api = client(address)
    details = info(address, job_id)
    # The helper job must run where the sweep's driver wrote: job drivers run on the head
    # (the job supervisor is placed there), and so does this one.
    helper = api.submit_job(
        entrypoint=f"python -m sweeper pack {_shell_word(run_dir)}",
        submission_id=f"{job_id}-fetch-{uuid.uuid4().hex[:6]}",
        runtime_env={"py_modules": [str(Path(sweeper.__file__).parent)], "excludes": ["__pycache__"]},
        metadata={"sweeper_fetch_of": job_id},
    )
    status = wait(address, helper, timeout=timeout)
    logs = api.get_job_logs(helper)
    if status != "SUCCEEDED" or PACK_BEGIN not in logs:
        tail = logs.strip().splitlines()[-1][:200] if logs.strip() else status
        raise JobError(f"could not read {run_dir} on the head of job {job_id} ({details.status}): {tail}")
    payload = logs.split(PACK_BEGIN, 1)[1].split(PACK_END, 1)[0]
    data = base64.b64decode("".join(payload.split()))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        archive.extractall(destination, filter="data")
    return f"{run_dir} on the head node (through job {helper})"


def pack(run_dir: Path) -> None:
    """Print ``run_dir`` as base64 tar.gz between markers (the fetch helper job's body)."""
    if not run_dir.is_dir():
        raise JobError(f"{run_dir}: no such run folder on this node")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):  # no temporaries, no lock
                archive.add(path, arcname=str(path.relative_to(run_dir)))
    encoded = base64.encodebytes(buffer.getvalue()).decode()
    sys.stdout.write(f"{PACK_BEGIN}\n{encoded}{PACK_END}\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- job side


class ResultMirror:
    """Copies run-folder files to a storage URI, each file whole or not at all."""

    def __init__(self, uri: str, run_dir: Path):
        from pyarrow import fs

        self.fs, self.base = fs.FileSystem.from_uri(uri)
        self.is_local = isinstance(self.fs, fs.LocalFileSystem)
        self.run_dir = Path(run_dir)
        self._mirrored: dict[str, set[str]] = {}  # dataset -> part names mirrored

    def put(self, relative: str) -> None:
        source = self.run_dir / relative
        if not source.is_file():
            return
        target = f"{self.base.rstrip('/')}/{relative}"
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        data = source.read_bytes()
        if self.is_local:
            atomic_write(target, data)
        else:
            # Object stores publish an object only when its upload completes.
            with self.fs.open_output_stream(target) as stream:
                stream.write(data)

    def put_parts(self) -> None:
        """Mirror the result parts written since the last call (curves before trials, the
        order the sink writes them in), and remove mirrored parts that compaction replaced."""
        for dataset in (CURVES_DIR, TRIALS_DIR):
            local = {path.name for path in part_files(self.run_dir / dataset)}
            for name in sorted(local - self._mirrored.get(dataset, set())):
                self.put(f"{dataset}/{name}")
            for name in sorted(self._mirrored.get(dataset, set()) - local):
                try:
                    self.fs.delete_file(f"{self.base.rstrip('/')}/{dataset}/{name}")
                except (FileNotFoundError, OSError):
                    pass
            self._mirrored[dataset] = local

    def put_all(self) -> None:
        self.put_parts()
        for path in sorted(self.run_dir.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                self.put(str(path.relative_to(self.run_dir)))
