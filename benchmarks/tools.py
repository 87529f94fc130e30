"""Processes, peers and the machine: running timed commands with their peak RSS, finding or installing the
tools compared (envelope CLI, ESDK CLI, age), a moto_server for KMS, and a description of the machine.

Every process started here is registered and ended by its own PID on cleanup, also after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding benchmarks/ (and envelope/)


class Skip(Exception):
    """A measurement that cannot run here; the message says why (printed as a note, kept in the JSON)."""


# ---------------------------------------------------------------------------------------------------------
# process bookkeeping


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(cmd), **kwargs)
    _LIVE[proc.pid] = proc
    return proc


def _wait(proc: subprocess.Popen[bytes]) -> int:
    """Reap ``proc`` with wait4 and return its peak RSS in KiB (ru_maxrss)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    _LIVE.pop(proc.pid, None)
    return int(usage.ru_maxrss)


# Linux carries a process's peak RSS across exec: a command started straight from this (large) Python
# process would report at least this process's RSS. So measured commands are started by a minimal Python
# (-I -S, about 7 MiB) that forks, execs the command, reaps it with wait4 and reports the command's own
# ru_maxrss and its run time (fork to exit, so the launcher's own start-up is not counted). The launcher
# forwards SIGTERM/SIGINT to the command, so stopping the launcher by its PID stops the command too.
_LAUNCHER = """
import os, signal, sys, time
result, cmd = sys.argv[1], sys.argv[2:]
start = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        os.write(2, f"{cmd[0]}: {exc}\\n".encode())
    os._exit(127)
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda s, f: os.kill(pid, s))
_, status, usage = os.wait4(pid, 0)
end = time.monotonic()
with open(result, "w") as f:
    f.write(f"{start} {end} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""


@dataclass
class _Launched:
    proc: subprocess.Popen[bytes]
    result: Path

    def read(self) -> tuple[float, float, int]:
        """(start, end) on the monotonic clock and the command's peak RSS in KiB."""
        start, end, rss, _ = self.result.read_text().split()
        return float(start), float(end), int(rss)

    def cpu(self) -> float:
        """CPU seconds (user + system) of the command and the children it waited for (its worker processes)."""
        return float(self.result.read_text().split()[3])

    def discard(self) -> None:
        self.result.unlink(missing_ok=True)
        _RESULTS.discard(self.result)


_RESULTS: set[Path] = set()
#: Where launcher results go: the workspace while one is open (so that a launcher that writes its result
#: after being stopped leaves nothing behind), else the system temp folder.
_SCRATCH: list[Path] = []


def _launch(cmd: Sequence[str], **kwargs: Any) -> _Launched:
    fd, name = tempfile.mkstemp(prefix="envelope-bench-rss-", dir=_SCRATCH[-1] if _SCRATCH else None)
    os.close(fd)
    _RESULTS.add(Path(name))
    proc = _spawn([sys.executable, "-I", "-S", "-c", _LAUNCHER, name, *map(str, cmd)], **kwargs)
    return _Launched(proc, Path(name))


def stop_all() -> None:
    """End every process this harness started that is still running, each by its PID."""
    for pid, proc in list(_LIVE.items()):
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        _LIVE.pop(pid, None)
    for path in list(_RESULTS):
        path.unlink(missing_ok=True)
        _RESULTS.discard(path)


@dataclass
class Run:
    seconds: float
    rss_kib: int  # peak RSS of the measured process (0 when not measured)
    child: dict[str, Any] = field(default_factory=dict)  # what a benchmarks.child run reported
    cpu: float | None = None  # run_command: CPU seconds of the command and its waited-for children


class CommandFailed(Exception):
    pass


def _check(procs: Sequence[tuple[Sequence[str], subprocess.Popen[bytes]]], errfile: IO[bytes]) -> None:
    bad = [(cmd, p.returncode) for cmd, p in procs if p.returncode != 0]
    if bad:
        errfile.seek(0)
        err = errfile.read().decode(errors="replace").strip().splitlines()
        cmd, rc = bad[0]
        tail = " | ".join(err[-3:]) if err else "no message"
        raise CommandFailed(f"`{' '.join(map(str, cmd))[:160]}` exited {rc}: {tail[:400]}")


def run_command(cmd: Sequence[str], *, env: dict[str, str] | None = None) -> Run:
    """Run one command to completion: its run time and its own peak RSS."""
    with tempfile.TemporaryFile() as err:
        launched = _launch(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            _wait(launched.proc)
            _check([(cmd, launched.proc)], err)
            start, end, rss = launched.read()
            cpu = launched.cpu()
        finally:
            launched.discard()
    return Run(end - start, rss, cpu=cpu)


def run_pipe(cmd: Sequence[str] | None, source: Path, destination: Path, *, env: dict[str, str] | None = None) -> Run:
    """``cat source | cmd | cat > destination`` (``cmd`` None: ``cat source | cat > destination``).

    Times the whole pipeline, from the start of ``cmd`` (or of the first cat) until the last process
    ended; the RSS is that of ``cmd`` alone.
    """
    with tempfile.TemporaryFile() as err, open(destination, "wb") as out:
        before = _children_cpu()
        start = time.monotonic()
        first = _spawn(["cat", str(source)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        procs: list[tuple[Sequence[str], subprocess.Popen[bytes]]] = [(["cat"], first)]
        upstream = first.stdout
        launched = None
        if cmd is not None:
            launched = _launch(cmd, stdin=upstream, stdout=subprocess.PIPE, stderr=err, env=env)
            assert upstream is not None
            upstream.close()
            procs.append((cmd, launched.proc))
            upstream = launched.proc.stdout
        last = _spawn(["cat"], stdin=upstream, stdout=out, stderr=err)
        assert upstream is not None
        upstream.close()
        procs.append((["cat"], last))
        try:
            for _, p in procs:
                _wait(p)
            end = time.monotonic()
            cpu = _children_cpu() - before
            _check(procs, err)
            rss = 0
            if launched is not None:
                start, _, rss = launched.read()
        finally:
            if launched is not None:
                launched.discard()
    return Run(end - start, rss, cpu=cpu)


def _children_cpu() -> float:
    """User + system seconds of every child reaped so far (a launcher's counts include the command it ran)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pipeline_cpu(run: Run) -> str:
    """The line under a pipe row: the CPU the whole pipeline used. On 2 cores, CPU / wall near 2 means the
    pipeline is CPU-bound, and its wall time cannot drop below CPU / 2."""
    if run.cpu is None:
        return ""
    return (f"last run: {run.cpu:.2f} s CPU (user + system, every process of the pipeline) in {run.seconds:.2f} s "
            f"wall = {run.cpu / run.seconds:.2f} cores busy")


def rss_floor() -> float:
    """Peak RSS (MiB) the launcher itself reports for a trivial command: values near it are the floor."""
    return run_command(["true"]).rss_kib / 1024


def child_command(kind: str, spec: dict[str, Any], result: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.child", kind, "--spec", json.dumps(spec), "--result", str(result)]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def run_child(kind: str, spec: dict[str, Any], scratch: Path, *, env: dict[str, str] | None = None) -> Run:
    """Run one benchmarks.child operation; seconds are the child's own timing of the operation."""
    result = scratch / f"child-result-{os.getpid()}-{time.monotonic_ns()}.json"
    try:
        run = run_command(child_command(kind, spec, result), env=child_env(env))
        reported = json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)
    return Run(float(reported["seconds"]), run.rss_kib, reported)


# ---------------------------------------------------------------------------------------------------------
# the tools compared


def version_line(cmd: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else f"exit {done.returncode}"


def _beside_python(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def find_envelope_cli() -> str:
    """The ``envelope`` console script beside this Python, or Skip when it is not installed."""
    exe = _beside_python("envelope")
    if exe is None:
        raise Skip("envelope CLI not installed")
    return exe


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "envelope-bench"


def find_esdk_cli(explicit: str | None, install: bool, log: Any) -> str:
    """aws-encryption-cli: ``--esdk-cli PATH``, else on PATH, else in a venv of its own that is created once
    under the user's cache folder (the CLI pins aws-encryption-sdk < 4, so it cannot share the project's)."""
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise Skip(f"--esdk-cli {explicit}: not an executable file")
        return explicit
    venv = cache_dir() / "esdk-cli-venv"
    exe = venv / "bin" / "aws-encryption-cli"
    on_path = shutil.which("aws-encryption-cli")
    if on_path:
        return on_path
    if exe.is_file():
        return str(exe)
    if not install:
        raise Skip("ESDK CLI not found and --no-install given")
    log(f"creating a venv for the ESDK CLI in {venv} (once; pip install aws-encryption-sdk-cli)")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True,
                       timeout=300)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "aws-encryption-sdk-cli"], check=True, capture_output=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(venv, ignore_errors=True)
        detail = getattr(exc, "stderr", b"") or b""
        raise Skip(f"could not create the ESDK CLI venv: {exc} {detail.decode(errors='replace')[-300:]}") from None
    if not exe.is_file():
        raise Skip("the ESDK CLI venv has no aws-encryption-cli script")
    return str(exe)


def find_age() -> tuple[str, str]:
    age, keygen = shutil.which("age"), shutil.which("age-keygen")
    if not age or not keygen:
        raise Skip("age not on PATH (apt-get install age)")
    return age, keygen


# ---------------------------------------------------------------------------------------------------------
# moto_server: a local KMS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Moto:
    """A moto_server on 127.0.0.1 with one symmetric KMS key, stopped by its PID."""

    def __init__(self, scratch: Path) -> None:
        exe = _beside_python("moto_server")
        if exe is None:
            raise Skip("moto_server not installed (pip install 'moto[server]')")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(scratch / "moto.log", "wb")
        self.proc = _spawn([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdin=subprocess.DEVNULL,
                           stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise Skip("moto_server did not start") from None
                time.sleep(0.2)
        self.env = {
            "AWS_ENDPOINT_URL_KMS": self.url, "AWS_ENDPOINT_URL_S3": self.url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        import boto3

        kms = boto3.client("kms", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing", aws_session_token="testing")
        self.arn: str = kms.create_key(Description="envelope benchmark")["KeyMetadata"]["Arn"]
        self._s3: Any = None

    def s3(self) -> Any:
        """A boto3 S3 client for setup and clean-up (untimed)."""
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                                    aws_access_key_id="testing", aws_secret_access_key="testing",
                                    aws_session_token="testing")
        return self._s3

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")}
        env.update(self.env)
        return env

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _LIVE.pop(self.proc.pid, None)
        self.log.close()


# ---------------------------------------------------------------------------------------------------------
# data and the machine


def write_random(path: Path, size: int) -> None:
    """Random bytes (an AES-CTR keystream: incompressible, and much faster than os.urandom)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(os.urandom(32)), modes.CTR(os.urandom(16))).encryptor()
    zeros = bytes(4 * 1024 * 1024)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(zeros))
            f.write(encryptor.update(zeros[:n]))
            left -= n


def filesystem_of(path: Path) -> dict[str, str]:
    """The mount holding ``path``: mount point, type and device (from /proc/mounts)."""
    real = os.path.realpath(path)
    best = {"mount": "?", "type": "unknown", "device": "?"}
    longest = -1
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if len(parts) < 3:
                continue
            mount = parts[1].replace("\\040", " ")
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= longest:  # the last of equal mounts is the one in effect
                best, longest = {"mount": mount, "type": parts[2], "device": parts[0]}, len(mount)
    return best


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode().strip() or None


def machine_info(tmp: Path) -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": cores,
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "transparent_hugepages": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "envelope_commit": _git_commit(),
        "temp_folder": str(tmp),
        "filesystem": filesystem_of(tmp),
        "libraries": {name: _dist_version(name) for name in
                      ("envelope-crypt", "aws-encryption-sdk", "cryptography", "boto3", "moto")},
    }


@contextlib.contextmanager
def workspace(parent: str | None) -> Iterator[Path]:
    """A fresh temporary folder (under ``parent`` when given), removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix="envelope-bench-", dir=parent))
    _SCRATCH.append(path)
    try:
        yield path
    finally:
        _SCRATCH.remove(path)
        shutil.rmtree(path, ignore_errors=True)
