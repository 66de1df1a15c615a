"""Real components the watching tests start: a pseudo-terminal, an MLflow tracking server, a
headless Chromium driven over the DevTools protocol, and a reader of W&B's offline run files."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- a command on a pseudo-terminal ----------------------------------------------------------


class TerminalRun:
    """A process whose stdout is a pseudo-terminal (as a person's shell), stderr a pipe."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.master, slave = pty.openpty()
        # 120 columns: what rich lays its bars out for (a pty starts at 0x0).
        import fcntl
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(
            argv, stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
        )
        os.close(slave)
        self.raw = b""

    def pump(self, seconds: float) -> None:
        """Read what the terminal shows for up to ``seconds`` (a full pty blocks the writer)."""
        end = time.time() + seconds
        while time.time() < end:
            ready, _, _ = select.select([self.master], [], [], max(0.0, end - time.time()))
            if not ready:
                return
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the other end closed: the process has exited
                return
            if not chunk:
                return
            self.raw += chunk

    def finish(self, timeout: float) -> tuple[int, str, str]:
        end = time.time() + timeout
        while self.process.poll() is None and time.time() < end:
            self.pump(0.5)
        self.pump(0.5)
        if self.process.poll() is None:
            self.process.kill()
        stderr = self.process.stderr.read().decode(errors="replace")
        self.process.wait(timeout=10)
        os.close(self.master)
        return self.process.returncode, self.text(), stderr

    def text(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))


# ---- an MLflow tracking server -----------------------------------------------------------------


class MlflowServer:
    """`mlflow server` on a free loopback port with a SQLite store in ``folder``."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "mlflow.log", "wb")
        mlflow = Path(sys.executable).with_name("mlflow")
        self.process = subprocess.Popen(
            [
                str(mlflow),
                "server",
                "--backend-store-uri",
                f"sqlite:///{folder / 'mlflow.db'}",
                "--default-artifact-root",
                str(folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> bool:
        import urllib.request

        end = time.time() + timeout
        while time.time() < end and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                time.sleep(1)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=3)  # its workers may linger; nothing needs to be kept
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
        self.log.close()


# ---- W&B offline run files ---------------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The records of a ``run-*.wandb`` file, parsed with W&B's own protobuf classes. The file
    is a LevelDB-style log (7-byte header, 32 KiB blocks, each record chunk with a 7-byte
    header: crc32c, length, type FULL/FIRST/MIDDLE/LAST); W&B's SDK ships no reader for it."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


# ---- headless Chromium over the DevTools protocol ------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def open_in_chromium(page: Path, width: int = 1280) -> dict:
    """Load ``page`` in a headless Chromium with the network cut off; return its console
    errors, uncaught exceptions, failed loads, the images' state and a full-page PNG."""
    return asyncio.run(_open(page, width))


async def _open(page: Path, width: int) -> dict:
    import aiohttp

    profile = page.parent / ".chromium-profile"
    browser = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        # No network at all: a page that needs one shows it as failed loads.
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        endpoint = await asyncio.wait_for(_devtools_endpoint(browser), 60)
        port = re.search(r":(\d+)/", endpoint).group(1)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                target = next(t for t in await answer.json() if t["type"] == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket_:
                return await _drive(socket_, page, width)
    finally:
        browser.kill()
        await browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _devtools_endpoint(browser) -> str:  # noqa: ANN001
    while True:
        line = (await browser.stderr.readline()).decode()
        if not line:
            raise RuntimeError("chromium exited before it opened its DevTools port")
        if "DevTools listening on" in line:
            return line.split("listening on", 1)[1].strip()


async def _drive(ws, page: Path, width: int) -> dict:  # noqa: ANN001
    counter = iter(range(1, 10_000))
    events: list[dict] = []

    async def call(method: str, **params) -> dict:
        number = next(counter)
        await ws.send_json({"id": number, "method": method, "params": params})
        while True:
            message = json.loads((await ws.receive()).data)
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            events.append(message)

    for domain in ("Page", "Runtime", "Log", "Network"):
        await call(f"{domain}.enable")
    await call("Page.navigate", url=page.resolve().as_uri())
    deadline = time.time() + 60
    while not any(e.get("method") == "Page.loadEventFired" for e in events) and time.time() < deadline:
        events.append(json.loads((await asyncio.wait_for(ws.receive(), 60)).data))
    images = (
        await call(
            "Runtime.evaluate",
            returnByValue=True,
            expression=(
                "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
                " width: i.naturalWidth, height: i.naturalHeight}))"
            ),
        )
    )["result"]["value"]
    height = (
        await call("Runtime.evaluate", returnByValue=True, expression="document.documentElement.scrollHeight")
    )["result"]["value"]
    await call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=int(height),
        deviceScaleFactor=1,
        mobile=False,
    )
    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    console_errors = [
        e["params"]
        for e in events
        if e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") in ("error", "assert")
    ]
    console_errors += [
        e["params"]["entry"]
        for e in events
        if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"
    ]
    exceptions = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    failed = [e["params"] for e in events if e.get("method") == "Network.loadingFailed"]
    requests = [
        e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"
    ]
    return {
        "console_errors": console_errors,
        "exceptions": exceptions,
        "failed_loads": failed,
        "requests": requests,
        "images": images,
        "height": height,
        "png": base64.b64decode(shot["data"]),
    }
