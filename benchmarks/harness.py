"""The benchmark harness: ``python -m benchmarks [--quick] [--size 1GiB] [--out DIR] [--groups ...]``.

Every tool reads the same random input from one temporary folder and writes its output next to it (one
filesystem for all, reported in the output); each output is removed after its run so that every tool pays the
same cost of allocating fresh page-cache pages. Repetitions go round-robin over the tools of a group, so a
burst of noise from other processes lands on all of them rather than on one; each figure is the median.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import filecmp
import json
import os
import re
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import report, tools
from .dask_group import group_dask
from .report import fmt_size, frame_tag
from .signed_group import group_signed
from .small_group import group_small
from .tools import CommandFailed, Run, Skip

GROUPS = ("files", "pipes", "limits", "suites", "rss", "startup", "many", "kms", "coldstart", "s3", "rewrap", "dask",
          "signed", "small")
GROUP_HELP = {
    "files": "file encrypt/decrypt: envelope CLI and library, ESDK library (2 frame lengths) and CLI, age, cp",
    "pipes": "cat f | TOOL | cat > out for the same tools, and cat | cat",
    "limits": "bare AES-GCM loops over the same frames: in memory, and file-to-file",
    "suites": "envelope library, suites 0x0478/0x0578 x frame lengths 4 KiB/64 KiB/1 MiB",
    "rss": "peak RSS of envelope CLI and library runs at size/8 and size, both suites",
    "startup": "CLI start-up: --version, and decrypting a 1 KiB message (local key, KMS on moto)",
    "many": "10x--files files of 16 KiB and --files of 1 MiB with envelope -r: --workers 1, 2, default; cp -r",
    "kms": "1 KiB messages under KMS on moto: envelope and ESDK, without and with the data-key cache",
    "coldstart": "a fresh process decrypting 3 secrets under KMS on moto: envelope.aws.load_env vs the Lambda "
                 "console's boto3 snippet",
    "s3": "the large file to and from S3 on moto: envelope.s3 vs boto3 upload_file/download_file; a 1 MiB range",
    "rewrap": "new keys for the large message without re-encryption: envelope rewrap (CLI, library, --verify, "
              "signed) vs cp of the same file",
    "dask": "the many-files set with --dask (a standing 2-worker LocalCluster, and local:2) vs --workers 2",
    "signed": "suite 0x0578 (CLI file and pipe, library) vs SHA-384 of the same file (openssl dgst, hashlib, "
              "cat | openssl dgst)",
    "small": "1 KiB one-shot encrypt/decrypt with a raw AES key, us per message: envelope and the ESDK, without and "
             "with their data-key caches",
}
CONTEXT_ARG = "purpose=benchmark"
ESDK_SUITE = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"  # 0x0478, envelope's default: same suite for every peer
COMMITMENT = "require-encrypt-require-decrypt"
KEY_NAMESPACE, KEY_NAME = "envelope-bench", "bench-key"


def parse_size(text: str) -> int:
    """``1073741824``, ``1GiB``, ``64M`` (K/M/G and KiB/MiB/GiB are binary; KB/MB/GB decimal)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1GiB, 256MiB, 1048576)")
    number, prefix, suffix = float(m.group(1)), m.group(2), m.group(3)
    base = 1000 if suffix == "b" and prefix else 1024
    value = int(number * base ** " kmg".index(prefix or " "))
    if value < 1:
        raise argparse.ArgumentTypeError("the size must be at least 1 byte")
    return value


# ---------------------------------------------------------------------------------------------------------
# cases and their measurement


@dataclass
class Case:
    id: str
    label: str
    unit: str  # "MB/s" (payload bytes), "ms", "files/s" or "msgs/s" (payload items), "us/msg" (time per item)
    payload: int
    run: Callable[[], Run]
    after: Callable[[], None] | None = None  # after every repetition (remove the output)
    check: Callable[[], None] | None = None  # once, after the first repetition (was the work done?)
    envelope: bool = False  # an envelope run: its RSS counts against the target
    params: dict[str, Any] = field(default_factory=dict)
    extra: Callable[[Run], str] | None = None  # a line under the row (e.g. KMS calls)
    writes: int | None = None  # bytes a run writes, for _prime_page_cache (None: the payload of a MB/s row)
    reads: tuple[Path, ...] = ()  # the files (or folders) a run reads, read once untimed before it (_warm_inputs)


class Bench:
    def __init__(self, args: argparse.Namespace, ws: Path) -> None:
        self.args = args
        self.ws = ws
        self.results: dict[str, dict[str, Any]] = {}
        self.skipped: list[dict[str, str]] = []
        self.notes: list[str] = []
        self.tools: dict[str, str] = {}
        self._memo: dict[str, Any] = {}
        self.group = ""

    # -- output -------------------------------------------------------------------------------------------

    def log(self, text: str) -> None:
        print(f"[{self.group or 'bench'}] {text}", file=sys.stderr, flush=True)

    def skip(self, what: str, reason: str) -> None:
        self.skipped.append({"group": self.group, "what": what, "reason": reason})
        self.log(f"skipped {what}: {reason}")

    # -- shared resources, made once --------------------------------------------------------------------

    def once(self, name: str, make: Callable[[], Any]) -> Any:
        """Make a resource once; a Skip is remembered so every later user is told the same reason."""
        if name not in self._memo:
            try:
                self._memo[name] = make()
            except Skip as exc:
                self._memo[name] = exc
        value = self._memo[name]
        if isinstance(value, Skip):
            raise value
        return value

    def plain(self, size: int) -> Path:
        def make() -> Path:
            path = self.ws / f"plain-{size}.bin"
            self.log(f"writing {fmt_size(size)} of random data to {path.name}")
            tools.write_random(path, size)
            return path
        return self.once(f"plain-{size}", make)  # type: ignore[no-any-return]

    def key(self) -> Path:
        def make() -> Path:
            path = self.ws / "envelope.key"
            doc = {"type": "raw-aes", "namespace": KEY_NAMESPACE, "name": KEY_NAME,
                   "key": base64.b64encode(os.urandom(32)).decode()}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            return path
        return self.once("key", make)  # type: ignore[no-any-return]

    def envelope_cli(self) -> str:
        def make() -> str:
            exe = tools.find_envelope_cli()
            self.tools["envelope"] = tools.version_line([exe, "--version"])
            return exe
        return self.once("envelope-cli", make)  # type: ignore[no-any-return]

    def esdk_cli(self) -> str:
        def make() -> str:
            exe = tools.find_esdk_cli(self.args.esdk_cli, not self.args.no_install, self.log)
            version = tools.version_line([exe, "--version"])
            if "aws-encryption-sdk-cli" not in version:
                raise Skip(f"{exe} --version printed {version!r}")
            self.tools["aws-encryption-cli"] = version
            self.notes.append("the ESDK CLI has no local-key option (its only built-in wrapping-key provider is "
                              "aws-kms), so it runs with a KMS key on the local moto_server; one KMS call per "
                              "message, which is negligible for the large file and part of the start-up figure")
            return exe
        return self.once("esdk-cli", make)  # type: ignore[no-any-return]

    def age(self) -> tuple[str, str, Path]:
        def make() -> tuple[str, str, Path]:
            age, keygen = tools.find_age()
            self.tools["age"] = tools.version_line([age, "--version"])
            identity = self.ws / "age.key"
            tools.run_command([keygen, "-o", str(identity)])
            return age, tools.version_line([keygen, "-y", str(identity)]), identity
        return self.once("age", make)  # type: ignore[no-any-return]

    def moto(self) -> tools.Moto:
        def make() -> tools.Moto:
            self.log("starting moto_server on 127.0.0.1")
            return tools.Moto(self.ws)
        return self.once("moto", make)  # type: ignore[no-any-return]

    def stop(self) -> None:
        moto = self._memo.get("moto")
        if isinstance(moto, tools.Moto):
            moto.stop()

    # -- measuring --------------------------------------------------------------------------------------

    def measure(self, cases: list[Case], reps: int) -> None:
        """Round-robin repetitions; a case that fails is reported as skipped with its error."""
        samples: dict[str, list[Run]] = {c.id: [] for c in cases}
        failed: set[str] = set()
        for rep in range(reps):
            for case in cases:
                if case.id in failed:
                    continue
                try:
                    writes = case.writes if case.writes is not None else case.payload if case.unit == "MB/s" else 0
                    if self.args.prime:
                        _warm_inputs(case.reads)
                        if writes >= PRIME_MIN:
                            _prime_page_cache(self.ws, writes)
                    run = case.run()
                    if rep == 0 and case.check:
                        case.check()
                except (CommandFailed, Skip, OSError, ValueError, KeyError) as exc:
                    failed.add(case.id)
                    self.skip(case.label, f"failed: {exc}")
                    continue
                finally:
                    if case.after:
                        case.after()
                    _settle()
                samples[case.id].append(run)
                self.log(f"{case.label} ({rep + 1}/{reps}): {self._value(case, run.seconds):,.1f} {case.unit}")
        for case in cases:
            if samples[case.id]:
                self._record(case, samples[case.id])

    @staticmethod
    def _value(case: Case, seconds: float) -> float:
        if case.unit == "ms":
            return seconds * 1000
        if case.unit == "us/msg":  # the child's time for ``payload`` messages
            return seconds * 1e6 / case.payload
        if case.unit == "MB/s":
            return case.payload / seconds / 1e6
        return case.payload / seconds

    def _record(self, case: Case, runs: list[Run]) -> None:
        seconds = [r.seconds for r in runs]
        values = [self._value(case, s) for s in seconds]
        rss = max(r.rss_kib for r in runs) / 1024
        row = {
            "id": case.id, "group": self.group, "label": case.label, "unit": case.unit,
            "value": round(self._value(case, statistics.median(seconds)), 3),
            "min": round(min(values), 3), "max": round(max(values), 3),
            "seconds": [round(s, 6) for s in seconds],
            ("bytes" if case.unit == "MB/s" else "items"): case.payload,
            "rss_mib": round(rss, 1) if rss else None,
            "envelope": case.envelope, "params": case.params,
        }
        if case.extra:
            row["extra"] = case.extra(runs[-1])
        self.results[case.id] = row

    # -- helpers to build cases -------------------------------------------------------------------------

    def out(self, name: str) -> Path:
        return self.ws / "out" / name

    def removing(self, *paths: Path) -> Callable[[], None]:
        def remove() -> None:
            for p in paths:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        return remove

    def cp_case(self, case_id: str, label: str, payload: int, src: Path, dst: Path) -> Case:
        """``cp src dst``, the output removed after each repetition and checked once: the copy limit beside a
        group's rows (``payload``: the bytes its MB/s counts, the group's size)."""
        return Case(case_id, label, "MB/s", payload,
                    lambda: tools.run_command(["cp", str(src), str(dst)]), self.removing(dst), self.same_as(src, dst),
                    reads=(src,))

    @staticmethod
    def same_as(expected: Path, produced: Path) -> Callable[[], None]:
        def check() -> None:
            if not filecmp.cmp(expected, produced, shallow=False):
                raise ValueError(f"{produced.name} differs from {expected.name}")
        return check

    @staticmethod
    def bigger_than(plain: Path, produced: Path) -> Callable[[], None]:
        def check() -> None:
            if produced.stat().st_size <= plain.stat().st_size:
                raise ValueError(f"{produced.name} is not larger than its plaintext")
        return check

    def prepare(self, what: str, make: Callable[[Path], Any], name: str) -> Path:
        """An untimed run that makes a decrypt input (and warms the tool up)."""
        path = self.ws / "ct" / name
        if not path.exists():
            self.log(f"preparing {what}")
            make(path)
        return path


# ---------------------------------------------------------------------------------------------------------
# command lines


def envelope_encrypt_cmd(exe: str, key: Path, src: str, dst: str | None, suite: str | None = None,
                         frame: int | None = None) -> list[str]:
    cmd = [exe, "encrypt", src, "--key", f"file:{key}", "-c", CONTEXT_ARG]
    cmd += ["-o", dst] if dst else []
    cmd += ["--algorithm", suite] if suite else []
    cmd += ["--frame-size", str(frame)] if frame else []
    return cmd


def envelope_decrypt_cmd(exe: str, key: Path, src: str, dst: str | None) -> list[str]:
    return [exe, "decrypt", src, "--key", f"file:{key}", *(["-o", dst] if dst else [])]


def esdk_cli_cmd(exe: str, arn: str, op: str, src: str, dst: str) -> list[str]:
    cmd = [exe, "--encrypt" if op == "encrypt" else "--decrypt", "-i", src, "-o", dst, "-w", f"key={arn}", "-S",
           "-q", "--commitment-policy", COMMITMENT]
    if op == "encrypt":
        cmd += ["-c", CONTEXT_ARG, "--algorithm", ESDK_SUITE]
    return cmd


def age_cmd(age: str, recipient: str, identity: Path, op: str, src: str | None, dst: str | None) -> list[str]:
    cmd = [age, "-e", "-r", recipient] if op == "encrypt" else [age, "-d", "-i", str(identity)]
    cmd += ["-o", dst] if dst else []
    cmd += [src] if src else []
    return cmd


# ---------------------------------------------------------------------------------------------------------
# the groups


def _tool_cases(b: Bench, mode: str, size: int) -> list[Case]:
    """The envelope CLI and library, the ESDK library and CLI and age on one file (``mode`` "files") or
    through ``cat | TOOL | cat`` ("pipes"), encrypt and decrypt. Decrypt inputs come from an untimed encrypt."""
    import envelope

    plain = b.plain(size)
    key = b.key()
    pipe = mode == "pipes"
    default_frame = envelope.DEFAULT_FRAME_LENGTH
    cases: list[Case] = []

    def add_pair(tool: str, label: str, encrypt: Callable[[Path, Path], Run], decrypt: Callable[[Path, Path], Run],
                 ct_name: str, is_envelope: bool = False, params: dict[str, Any] | None = None) -> None:
        ct = b.prepare(f"{label} ciphertext", lambda p: encrypt(plain, p), ct_name)
        enc_out, dec_out = b.out(f"{mode}-{tool}.enc"), b.out(f"{mode}-{tool}.dec")
        cases.append(Case(f"{mode}/{tool}/encrypt", f"{label} encrypt", "MB/s", size,
                          lambda: encrypt(plain, enc_out), b.removing(enc_out), b.bigger_than(plain, enc_out),
                          is_envelope, params or {}, reads=(plain,)))
        cases.append(Case(f"{mode}/{tool}/decrypt", f"{label} decrypt", "MB/s", size,
                          lambda: decrypt(ct, dec_out), b.removing(dec_out), b.same_as(plain, dec_out),
                          is_envelope, params or {}, reads=(ct,)))

    # baselines: cp for files, cat | cat for pipes
    base_out = b.out(f"{mode}-baseline")
    if pipe:
        cases.append(Case("pipes/cat-cat", "cat | cat", "MB/s", size, lambda: tools.run_pipe(None, plain, base_out),
                          b.removing(base_out), b.same_as(plain, base_out), reads=(plain,)))
        # issue 16's pipe baseline: a third process in the middle that only copies, where envelope sits
        cases.append(Case("pipes/cat-cat-cat", "cat | cat | cat", "MB/s", size,
                          lambda: tools.run_pipe(["cat"], plain, base_out),
                          b.removing(base_out), b.same_as(plain, base_out), reads=(plain,)))
    else:
        cases.append(b.cp_case("files/cp", "cp", size, plain, base_out))

    def cmd_runner(make: Callable[[str, str | None], list[str]], env: dict[str, str] | None = None
                   ) -> Callable[[Path, Path], Run]:
        if pipe:
            return lambda src, dst: tools.run_pipe(make("-", None), src, dst, env=env)
        return lambda src, dst: tools.run_command(make(str(src), str(dst)), env=env)

    def child_runner(kind: str, op: str, spec: dict[str, Any]) -> Callable[[Path, Path], Run]:
        if pipe:  # the parent times the whole pipeline
            return lambda src, dst: tools.run_pipe(
                tools.child_command(kind, {**spec, "op": op, "input": "-", "output": "-"}, b.ws / "pipe-result.json"),
                src, dst, env=tools.child_env())
        return lambda src, dst: tools.run_child(kind, {**spec, "op": op, "input": str(src), "output": str(dst)},
                                                b.ws)

    # envelope CLI
    try:
        exe = b.envelope_cli()
        add_pair("envelope-cli", "envelope CLI",
                 cmd_runner(lambda s, d: envelope_encrypt_cmd(exe, key, s, d)),
                 cmd_runner(lambda s, d: envelope_decrypt_cmd(exe, key, s, d)), "envelope-cli.ct", True,
                 {"suite": "default", "frame": "default"})
    except Skip as exc:
        b.skip(f"envelope CLI ({mode})", str(exc))

    # envelope library
    spec: dict[str, Any] = {"key": str(key)}
    add_pair("envelope-lib", "envelope library", child_runner("envelope", "encrypt", spec),
             child_runner("envelope", "decrypt", spec), f"envelope-lib-{mode}.ct", True,
             {"suite": "0x0478 (default)", "frame": default_frame})

    # aws-encryption-sdk library: its default frame length (what its users get: the targets) and envelope's
    frames = list(dict.fromkeys([4096, default_frame]))
    for frame in frames:
        spec = {"key": str(key), "frame": frame, "suite": 0x0478}
        tag = frame_tag(frame)
        add_pair(f"esdk-lib-{tag}", f"ESDK library ({tag} frames)", child_runner("esdk", "encrypt", spec),
                 child_runner("esdk", "decrypt", spec), f"esdk-lib-{tag}-{mode}.ct",
                 params={"suite": "0x0478", "frame": frame})

    # ESDK CLI, with KMS on moto
    try:
        esdk = b.esdk_cli()
        moto = b.moto()
        env = moto.environ()
        add_pair("esdk-cli", "ESDK CLI (KMS on moto)",
                 cmd_runner(lambda s, d: esdk_cli_cmd(esdk, moto.arn, "encrypt", s, d or "-"), env),
                 cmd_runner(lambda s, d: esdk_cli_cmd(esdk, moto.arn, "decrypt", s, d or "-"), env),
                 f"esdk-cli-{mode}.ct", params={"suite": "0x0478", "frame": 4096, "key": "KMS on moto_server"})
    except Skip as exc:
        b.skip(f"ESDK CLI ({mode})", str(exc))

    # age
    try:
        age, recipient, identity = b.age()
        add_pair("age", "age", cmd_runner(lambda s, d: age_cmd(age, recipient, identity, "encrypt", s, d)),
                 cmd_runner(lambda s, d: age_cmd(age, recipient, identity, "decrypt", s, d)), f"age-{mode}.ct",
                 params={"recipient": "X25519"})
    except Skip as exc:
        b.skip(f"age ({mode})", str(exc))
    if pipe:  # the whole pipeline's CPU, under each row: it shows when 2 cores are the limit
        for case in cases:
            case.extra = case.extra or tools.pipeline_cpu
    return cases


def group_files(b: Bench) -> None:
    b.measure(_tool_cases(b, "files", b.args.size), b.args.reps)


def group_pipes(b: Bench) -> None:
    b.measure(_tool_cases(b, "pipes", b.args.size), b.args.reps)


def group_limits(b: Bench) -> None:
    import envelope

    size, frame = b.args.size, envelope.DEFAULT_FRAME_LENGTH
    plain = b.plain(size)
    aes_key = os.urandom(32).hex()
    cases = []
    for f in dict.fromkeys([frame, 64 * 1024]):
        suffix = "" if f == frame else f"-{frame_tag(f)}"
        for op in ("encrypt", "decrypt"):
            spec = {"op": op, "frame": f, "bytes": size}
            cases.append(Case(f"limits/bare-memory{suffix}/{op}", f"bare AES-GCM {op}, in memory, "
                              f"{frame_tag(f)} frames", "MB/s", size,
                              lambda spec=spec: tools.run_child("bare-memory", spec, b.ws), params=spec))
            if f == frame:  # envelope's engine on the same in-memory data (like for like with the bare loop)
                cases.append(Case(f"limits/envelope-memory/{op}", f"envelope.{op}() one-shot, in memory, "
                                  f"{frame_tag(f)} frames", "MB/s", size,
                                  lambda spec=spec: tools.run_child("envelope-memory", spec, b.ws), params=spec))
    ct = b.prepare("bare-loop ciphertext", lambda p: tools.run_child(
        "bare-file", {"op": "encrypt", "frame": frame, "aes_key": aes_key, "input": str(plain),
                      "output": str(p)}, b.ws), "bare.ct")
    for op, src in (("encrypt", plain), ("decrypt", ct)):
        dst = b.out(f"bare-{op}")
        spec = {"op": op, "frame": frame, "aes_key": aes_key, "input": str(src), "output": str(dst)}
        check = b.same_as(plain, dst) if op == "decrypt" else b.bigger_than(plain, dst)
        cases.append(Case(f"limits/bare-file/{op}", f"bare AES-GCM {op}, file to file, {frame_tag(frame)} frames",
                          "MB/s", size, lambda spec=spec: tools.run_child("bare-file", spec, b.ws),
                          b.removing(dst), check, params={"frame": frame}, reads=(src,)))
    b.measure(cases, b.args.reps)


def group_suites(b: Bench) -> None:
    size = b.args.size
    plain, key = b.plain(size), b.key()
    cases = []
    for suite in (0x0478, 0x0578):
        for frame in (4096, 64 * 1024, 1024 * 1024):
            base = {"key": str(key), "suite": suite, "frame": frame}
            name = f"0x{suite:04x}-{frame_tag(frame)}"
            ct = b.prepare(f"library {name} ciphertext", lambda p, base=base: tools.run_child(
                "envelope", {**base, "op": "encrypt", "input": str(plain), "output": str(p)}, b.ws), f"{name}.ct")
            for op, src in (("encrypt", plain), ("decrypt", ct)):
                dst = b.out(f"{name}.{op}")
                spec = {**base, "op": op, "input": str(src), "output": str(dst)}
                check = b.same_as(plain, dst) if op == "decrypt" else b.bigger_than(plain, dst)
                cases.append(Case(f"suites/{name}/{op}", f"envelope library {op}, 0x{suite:04x}, {frame_tag(frame)} "
                                  "frames", "MB/s", size, lambda spec=spec: tools.run_child("envelope", spec, b.ws),
                                  b.removing(dst), check, True, {"suite": f"0x{suite:04x}", "frame": frame},
                                  reads=(src,)))
    b.measure(cases, b.args.reps)


def group_rewrap(b: Bench) -> None:
    """Issue 15: rewrap the large message (unsigned 0x0478 and signed 0x0578, 1 MiB frames) against ``cp`` of the
    same ciphertext file. The unsigned body is copied by the kernel unless --verify opens every frame; the signed
    one is read once and hashed twice (old signature checked, new one made). Each output is checked once: it
    decrypts with the new key to the plaintext."""
    import envelope

    size = b.args.size
    plain, key = b.plain(size), b.key()
    new_key = b.ws / "envelope-new.key"
    if not new_key.exists():
        doc = {"type": "raw-aes", "namespace": KEY_NAMESPACE, "name": "bench-new-key",
               "key": base64.b64encode(os.urandom(32)).decode()}
        new_key.write_text(json.dumps(doc))
        new_key.chmod(0o600)
    new_keyring = envelope.load_keyring(str(new_key))

    def decrypts_to_plain(produced: Path) -> Callable[[], None]:
        def check() -> None:
            with open(produced, "rb") as src, open(b.out("rewrap-check"), "wb") as dst:
                envelope.decrypt_stream(src, dst, keyring=new_keyring)
            same = filecmp.cmp(plain, b.out("rewrap-check"), shallow=False)
            b.out("rewrap-check").unlink()
            if not same:
                raise ValueError(f"{produced.name} does not decrypt to the plaintext")
        return check

    cases: list[Case] = []
    for suite in (0x0478, 0x0578):
        name = f"0x{suite:04x}"
        ct = b.prepare(f"{name} ciphertext to rewrap", lambda p, suite=suite: tools.run_child(
            "envelope", {"key": str(key), "suite": suite, "op": "encrypt", "input": str(plain), "output": str(p)},
            b.ws), f"rewrap-{name}.ct")
        if suite == 0x0478:
            cases.append(b.cp_case("rewrap/cp", "cp of the message", size, ct, b.out("rewrap-cp")))
            try:
                exe = b.envelope_cli()
                cli_out = b.out("rewrap-cli")
                cases.append(Case("rewrap/envelope-cli", f"envelope rewrap (CLI), {name}", "MB/s", size,
                                  lambda ct=ct, cli_out=cli_out, exe=exe: tools.run_command(
                                      [exe, "rewrap", str(ct), "-o", str(cli_out), "--old-key", f"file:{key}",
                                       "--key", f"file:{new_key}", "--force"]),
                                  b.removing(cli_out), decrypts_to_plain(cli_out), True, {"suite": name},
                                  reads=(ct,)))
            except Skip as exc:
                b.skip("envelope rewrap (CLI)", str(exc))
        for verify in ((None, True) if suite == 0x0478 else (None,)):
            tag = "-verify" if verify else ""
            dst = b.out(f"rewrap-{name}{tag}")
            spec = {"key": str(key), "new_key": str(new_key), "op": "rewrap", "verify": verify, "input": str(ct),
                    "output": str(dst)}
            label = f"envelope.rewrap_stream, {name}" + (", verify" if verify else "")
            cases.append(Case(f"rewrap/envelope-lib-{name}{tag}", label, "MB/s", size,
                              lambda spec=spec: tools.run_child("envelope", spec, b.ws), b.removing(dst),
                              decrypts_to_plain(dst), True, {"suite": name, "verify": bool(verify)}, reads=(ct,)))
    b.measure(cases, b.args.reps)


def group_rss(b: Bench) -> None:
    """Peak RSS at size/8 and size: envelope CLI on files and pipes, and the library, for both suites.

    One repetition each: these runs are about memory; their MB/s are single samples."""
    key = b.key()
    try:
        exe: str | None = b.envelope_cli()
    except Skip as exc:
        exe = None
        b.skip("envelope CLI runs (rss)", str(exc))
    cases = []
    for tag, size in (("eighth", max(1, b.args.size // 8)), ("full", b.args.size)):
        plain = b.plain(size)
        for suite in ("0x0478", "0x0578"):
            prefix = f"rss/{tag}/{suite}"
            make_spec = {"key": str(key), "suite": int(suite, 16), "op": "encrypt", "input": str(plain)}
            ct = b.prepare(f"{suite} ciphertext of {fmt_size(size)}", lambda p, spec=make_spec: tools.run_child(
                "envelope", {**spec, "output": str(p)}, b.ws), f"rss-{tag}-{suite}.ct")
            for op, src in (("encrypt", plain), ("decrypt", ct)):
                dst = b.out(f"rss-{tag}-{suite}.{op}")
                check = b.same_as(plain, dst) if op == "decrypt" else b.bigger_than(plain, dst)
                label = f"{op} {suite} {fmt_size(size)}"
                params = {"suite": suite, "size": size}
                spec = {"key": str(key), "suite": int(suite, 16), "op": op, "input": str(src), "output": str(dst)}
                cases.append(Case(f"{prefix}/lib/{op}", f"library {label}", "MB/s", size,
                                  lambda spec=spec: tools.run_child("envelope", spec, b.ws), b.removing(dst), check,
                                  True, params, reads=(src,)))
                if exe is None:
                    continue
                if op == "encrypt":
                    file_cmd = envelope_encrypt_cmd(exe, key, str(src), str(dst), suite)
                    pipe_cmd = envelope_encrypt_cmd(exe, key, "-", None, suite)
                else:
                    file_cmd = envelope_decrypt_cmd(exe, key, str(src), str(dst))
                    pipe_cmd = envelope_decrypt_cmd(exe, key, "-", None)
                cases.append(Case(f"{prefix}/cli-file/{op}", f"CLI file {label}", "MB/s", size,
                                  lambda c=file_cmd: tools.run_command(c), b.removing(dst), check, True, params,
                                  reads=(src,)))
                cases.append(Case(f"{prefix}/cli-pipe/{op}", f"CLI pipe {label}", "MB/s", size,
                                  lambda c=pipe_cmd, s=src, d=dst: tools.run_pipe(c, s, d), b.removing(dst), check,
                                  True, params, reads=(src,)))
    b.measure(cases, 1)


def group_startup(b: Bench) -> None:
    small = b.plain(1024)
    key = b.key()
    reps = b.args.startup_reps
    cases: list[Case] = []
    dst = b.out("startup.dec")
    try:
        exe: str | None = b.envelope_cli()
    except Skip as exc:
        exe = None
        b.skip("envelope CLI start-up", str(exc))
    if exe:
        cases.append(Case("startup/envelope/version", "envelope --version", "ms", 1,
                          lambda: tools.run_command([exe, "--version"]), envelope=True))
        local_ct = b.prepare("1 KiB envelope message", lambda p: tools.run_command(
            envelope_encrypt_cmd(exe, key, str(small), str(p))), "startup-local.ct")
        cases.append(Case("startup/envelope/decrypt-local", "envelope decrypt 1 KiB, local key", "ms", 1,
                          lambda: tools.run_command(envelope_decrypt_cmd(exe, key, str(local_ct), str(dst))),
                          b.removing(dst), b.same_as(small, dst), True))
    try:
        moto: tools.Moto | None = b.moto()
    except Skip as exc:
        moto = None
        b.skip("KMS start-up runs", str(exc))
    if exe and moto:
        kms_env = moto.environ()
        try:
            envelope_kms_ct = b.prepare("1 KiB envelope message under KMS", lambda p: tools.run_command(
                [exe, "encrypt", str(small), "-o", str(p), "--key", f"kms:{moto.arn}", "-c", CONTEXT_ARG],
                env=kms_env), "startup-kms.ct")
        except CommandFailed as exc:
            b.skip("envelope decrypt 1 KiB with KMS", f"envelope encrypt --key kms: failed: {exc}")
        else:
            cases.append(Case("startup/envelope/decrypt-kms", "envelope decrypt 1 KiB, KMS on moto", "ms", 1,
                              lambda: tools.run_command([exe, "decrypt", str(envelope_kms_ct), "-o", str(dst),
                                                         "--key", f"kms:{moto.arn}"], env=kms_env),
                              b.removing(dst), b.same_as(small, dst), True))
    try:
        esdk = b.esdk_cli()
        cases.append(Case("startup/esdk-cli/version", "aws-encryption-cli --version", "ms", 1,
                          lambda: tools.run_command([esdk, "--version"])))
        if moto:
            esdk_env = moto.environ()
            esdk_ct = b.prepare("1 KiB ESDK CLI message under KMS", lambda p: tools.run_command(
                esdk_cli_cmd(esdk, moto.arn, "encrypt", str(small), str(p)), env=esdk_env), "startup-esdk.ct")
            cases.append(Case("startup/esdk-cli/decrypt-kms", "aws-encryption-cli decrypt 1 KiB, KMS on moto", "ms",
                              1, lambda: tools.run_command(esdk_cli_cmd(esdk, moto.arn, "decrypt", str(esdk_ct),
                                                                        str(dst)), env=esdk_env),
                              b.removing(dst), b.same_as(small, dst)))
    except Skip as exc:
        b.skip("ESDK CLI start-up", str(exc))
    try:
        age, recipient, identity = b.age()
        age_ct = b.prepare("1 KiB age message", lambda p: tools.run_command(
            age_cmd(age, recipient, identity, "encrypt", str(small), str(p))), "startup-age.ct")
        cases.append(Case("startup/age/decrypt", "age decrypt 1 KiB", "ms", 1, lambda: tools.run_command(
            age_cmd(age, recipient, identity, "decrypt", str(age_ct), str(dst))), b.removing(dst),
            b.same_as(small, dst)))
    except Skip as exc:
        b.skip("age start-up", str(exc))
    b.measure(cases, reps)


#: Runs that write at least this many bytes start from primed memory (see _prime_page_cache).
PRIME_MIN = 64 * 1024 * 1024
_ZEROS = memoryview(bytes(4 * 1024 * 1024))


def _prime_page_cache(ws: Path, size: int) -> None:
    """Write and remove a scratch file a little larger than ``size`` (untimed), right before a large run.

    On a VM that hands freed memory back to the host (free page reporting), a page the guest touches for the
    first time after that costs a host fault: writing 1 GiB to a new file took 1.0-2.5 s of system time 3 s
    after an ``rm``, and 0.33-0.40 s right after one, which reuses the pages the ``rm`` freed. Without this
    step a row's cost depended on whether the run before it had just freed 1 GiB: measured by hand, the 0x0578
    CLI decrypt took 2.8-3.3 s unprimed and 2.2-2.5 s primed, while ``openssl dgst``, which writes nothing,
    does not change. Every large row (tools, peers and limits alike) is primed the same way; ``--no-prime``
    measures without it. Freed anonymous memory did not help (measured): the file's pages must be page cache.
    """
    path = ws / "prime.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size + size // 16  # a ciphertext is a little larger than its plaintext
        while left > 0:
            left -= os.write(fd, _ZEROS[:min(left, len(_ZEROS))])
    finally:
        os.close(fd)
        path.unlink()


def _warm_inputs(paths: tuple[Path, ...]) -> None:
    """Read a run's inputs once (untimed; every file under a folder). This guest runs a DAMON ``pageout`` scheme
    and its idle memory is slow to touch again: a 0x0478 ciphertext left idle for 60 s was still 97% resident
    (``fincore``), yet decrypting it took 3.2 s against 1.0 s right after it was read (by hand, primed both
    times). A plaintext is read by many rows and stays warm; each ciphertext is read by one row per repetition.
    Without this, decrypt rows paid for the idle input and encrypt rows did not."""
    buf = bytearray(4 * 1024 * 1024)
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for name in files:
            with open(name, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def _settle() -> None:
    """Flush the file system between runs (untimed), so that the journal work and writeback a run leaves behind,
    such as freeing the inodes of the outputs just removed, do not land in the next run's time. Measured on ext4:
    creating 1,000 files right after removing 1,000 others cost 0.55 ms per open(), against 0.02-0.1 ms once
    flushed. It narrows the spread of the many-files figures; it cannot remove the VM's own noise."""
    if hasattr(os, "sync"):
        os.sync()


def group_many(b: Bench) -> None:
    """Issue 16's many files: see benchmarks/many_group.py."""
    from .many_group import group_many as measure_many

    measure_many(b)


def group_kms(b: Bench) -> None:
    try:
        moto = b.moto()
    except Skip as exc:
        b.skip("small messages under KMS", str(exc))
        return
    env = moto.environ()
    messages, max_messages = b.args.messages, 100
    cases = []

    def extra(run: Run) -> str:
        calls = run.child.get("kms_calls", {})
        total = sum(calls.values())
        return f"KMS calls for {messages} messages: {total} ({', '.join(f'{k} {v}' for k, v in calls.items())})"

    # the ESDK's cache is CachingCryptoMaterialsManager + LocalCryptoMaterialsCache; envelope's is
    # envelope._cache.CachingMaterialsManager + LocalCache; both with max_age 300 s and the same max messages
    rows = [("esdk", "no-cache", "ESDK library, no cache", "esdk-kms-small", False, False),
            ("esdk", "cache", f"ESDK library, cache ({max_messages} msgs/key)", "esdk-kms-small", True, False),
            ("envelope", "no-cache", "envelope library, no cache", "envelope-kms-small", False, True),
            ("envelope", "cache", f"envelope library, cache ({max_messages} msgs/key)", "envelope-kms-small", True,
             True)]
    for tool, variant, label, kind, cache, is_env in rows:
        spec = {"arn": moto.arn, "messages": messages, "message_bytes": 1024, "cache": cache,
                "max_messages": max_messages}
        cases.append(Case(f"kms/{tool}/{variant}", f"{label}, 1 KiB messages", "msgs/s", messages,
                          lambda kind=kind, spec=spec: tools.run_child(kind, spec, b.ws, env=env), envelope=is_env,
                          params={k: v for k, v in spec.items() if k != "arn"}, extra=extra))
    b.measure(cases, b.args.reps)


def group_coldstart(b: Bench) -> None:
    """Issue 14's cold start: see benchmarks/coldstart.py."""
    from .coldstart import group_coldstart as measure_coldstart

    measure_coldstart(b)


S3_BUCKET = "envelope-bench"
RANGE_BYTES = 1024 * 1024


def group_s3(b: Bench) -> None:
    """Encrypt the large file to S3 and decrypt it back with envelope.s3, beside boto3's own upload_file and
    download_file of the same bytes (no encryption), on a local moto_server; and a 1 MiB range from the middle
    of the encrypted object (decrypt_range over ranged GETs) against the full transfers."""
    try:
        moto = b.moto()
    except Skip as exc:
        b.skip("S3 transfers", str(exc))
        return
    env = moto.environ()
    size = b.args.size
    plain, key = b.plain(size), b.key()
    client = moto.s3()
    with contextlib.suppress(Exception):  # exists already (an earlier group run in this harness)
        client.create_bucket(Bucket=S3_BUCKET)
    base = {"bucket": S3_BUCKET, "key": str(key)}
    b.notes.append("s3 group: moto_server copies the whole object inside the server for every GET, ranged or not "
                   "(toolbox), so clients that make many ranged GETs pay for it there and not on S3: boto3's "
                   "download_file makes one per 8 MiB part; envelope's reader makes a few growing ones. Both sides "
                   "send the same CRC32 checksums; there is no network (loopback), and moto shares the 2 cores")

    def prepare(name: str, kind: str, spec: dict[str, Any]) -> None:
        def make() -> bool:
            b.log(f"preparing s3://{S3_BUCKET}/{name}")
            tools.run_child(kind, spec, b.ws, env=env)
            return True
        b.once(f"s3-object-{name}-{size}", make)

    prepare("plain.bin", "s3-boto3", {**base, "op": "upload", "input": str(plain), "key": "plain.bin"})
    prepare("message.enc", "s3-envelope", {**base, "op": "encrypt", "input": str(plain), "key_name": "message.enc"})

    def delete(name: str) -> Callable[[], None]:
        return lambda: client.delete_object(Bucket=S3_BUCKET, Key=name)

    def stored_bigger(name: str) -> Callable[[], None]:
        def check() -> None:
            if client.head_object(Bucket=S3_BUCKET, Key=name)["ContentLength"] <= size:
                raise ValueError(f"s3://{S3_BUCKET}/{name} is not larger than its plaintext")
        return check

    start = max(0, size // 2 - RANGE_BYTES // 2)
    end = min(size - 1, start + RANGE_BYTES - 1)
    down, dec, rng = b.out("s3-boto3.download"), b.out("s3-envelope.decrypt"), b.out("s3-envelope.range")

    def range_check() -> None:
        with open(plain, "rb") as f:
            f.seek(start)
            if rng.read_bytes() != f.read(end - start + 1):
                raise ValueError("the decrypted range differs from the plaintext")

    def fetched(run: Run) -> str:
        c = run.child
        return (f"fetched {fmt_size(int(c.get('bytes_fetched', 0)))} in {c.get('requests')} requests to decrypt "
                f"{fmt_size(int(c.get('bytes_out', 0)))} from a {fmt_size(int(c.get('object_size', 0)))} object")

    def child(kind: str, spec: dict[str, Any]) -> Callable[[], Run]:
        return lambda: tools.run_child(kind, spec, b.ws, env=env)

    whole = {"size": size, "part_size": "8 MiB", "moto": "127.0.0.1"}
    cases = [
        Case("s3/boto3/upload", "boto3 upload_file local -> S3 (no encryption)", "MB/s", size,
             child("s3-boto3", {**base, "op": "upload", "input": str(plain), "key": "up.bin"}), delete("up.bin"),
             params=whole, reads=(plain,)),
        Case("s3/envelope/encrypt", "envelope.s3 encrypt_object local -> S3", "MB/s", size,
             child("s3-envelope", {**base, "op": "encrypt", "input": str(plain), "key_name": "up.enc"}),
             delete("up.enc"), stored_bigger("up.enc"), True, whole, reads=(plain,)),
        Case("s3/boto3/download", "boto3 download_file S3 -> local (no encryption)", "MB/s", size,
             child("s3-boto3", {**base, "op": "download", "key": "plain.bin", "output": str(down)}),
             b.removing(down), b.same_as(plain, down), params=whole),
        Case("s3/envelope/decrypt", "envelope.s3 decrypt_object S3 -> local", "MB/s", size,
             child("s3-envelope", {**base, "op": "decrypt", "key_name": "message.enc", "output": str(dec)}),
             b.removing(dec), b.same_as(plain, dec), True, whole),
        Case("s3/envelope/range", f"envelope.decrypt_range {fmt_size(end - start + 1)} from the middle, S3 -> local",
             "ms", 1, child("s3-envelope", {**base, "op": "range", "key_name": "message.enc", "output": str(rng),
                                            "start": start, "end": end}),
             b.removing(rng), range_check, True, {"start": start, "end": end, "object": "message.enc"}, fetched),
    ]
    b.measure(cases, b.args.reps)


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "files": group_files, "pipes": group_pipes, "limits": group_limits, "suites": group_suites, "rss": group_rss,
    "startup": group_startup, "many": group_many, "kms": group_kms,
    "coldstart": group_coldstart,
    "s3": group_s3,
    "rewrap": group_rewrap,
    "dask": group_dask,
    "signed": group_signed,
    "small": group_small,
}


# ---------------------------------------------------------------------------------------------------------
# main


def build_parser() -> argparse.ArgumentParser:
    groups = "\n".join(f"  {g:<8} {GROUP_HELP[g]}" for g in GROUPS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmark envelope against the aws-encryption-sdk (library and CLI), age and the limits "
                    "(cp, cat | cat, bare AES-GCM) on the same data. Prints a table with ratios and the targets, "
                    "and writes results.json and benchmark.png to --out.",
        epilog=f"groups:\n{groups}")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 32 MiB unless --size, 3 repetitions, 100 files, 50 messages")
    parser.add_argument("--size", type=parse_size, help="size of the large file (default 1GiB; --quick 32MiB)")
    parser.add_argument("--reps", type=int, help="repetitions per figure, the median is reported (default 5; "
                        "--quick 3)")
    parser.add_argument("--startup-reps", type=int, help="repetitions for start-up times (default 15; --quick 5)")
    parser.add_argument("--files", type=int, help="files in the many-files group: that many of 1 MiB and ten times as "
                        "many of 16 KiB (default 1000; --quick 100)")
    parser.add_argument("--messages", type=int, help="1 KiB messages per run in the kms group (default 500; "
                        "--quick 50)")
    parser.add_argument("--groups", help=f"comma-separated groups to run (default all: {','.join(GROUPS)})")
    parser.add_argument("--skip", help="comma-separated groups not to run")
    parser.add_argument("--out", default="bench-results", help="folder for results.json and benchmark.png "
                        "(default ./bench-results)")
    parser.add_argument("--tmp", help="parent folder for the temporary data (default: the system temp folder); "
                        "every tool reads and writes there")
    parser.add_argument("--esdk-cli", help="path of an aws-encryption-cli executable to use")
    parser.add_argument("--no-install", action="store_true",
                        help="never create the ESDK CLI venv (~/.cache/envelope-bench/esdk-cli-venv)")
    parser.add_argument("--no-plot", action="store_true", help="do not write benchmark.png")
    parser.add_argument("--no-prime", dest="prime", action="store_false",
                        help="do not read each run's inputs, nor write and remove a scratch file of its size, "
                             "before it (see benchmarks/README.md)")
    parser.add_argument("--report", metavar="RESULTS_JSON", help="measure nothing: print the table of an earlier "
                        "results.json and write its plot to --out")
    return parser


def _groups(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    def split(text: str | None) -> list[str]:
        names = [g.strip() for g in (text or "").split(",") if g.strip()]
        for g in names:
            if g not in GROUPS:
                parser.error(f"unknown group {g!r}; choose from {', '.join(GROUPS)}")
        return names
    chosen = split(args.groups) or list(GROUPS)
    skipped = set(split(args.skip))
    return [g for g in GROUPS if g in chosen and g not in skipped]


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.size = args.size or (32 * 1024 * 1024 if quick else 1024 * 1024 * 1024)
    args.reps = args.reps or (3 if quick else 5)
    args.startup_reps = args.startup_reps or (5 if quick else 15)
    args.files = args.files or (100 if quick else 1000)
    args.messages = args.messages or (50 if quick else 500)
    if min(args.reps, args.startup_reps, args.files, args.messages) < 1:
        raise SystemExit("python -m benchmarks: --reps, --startup-reps, --files and --messages must be >= 1")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so the same clean-up runs."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        doc["notes"] = [n for n in doc["notes"] if not n.startswith("benchmark.png not written")]
        return emit(doc, out, plot=not args.no_plot, write=False)
    _defaults(args)
    doc = measure(args, _groups(args, parser))
    if doc is None:
        return 130
    return emit(doc, out, plot=not args.no_plot, write=True)


def emit(doc: dict[str, Any], out: Path, *, plot: bool, write: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    png = report.write_plot(doc, out) if plot else None
    path = report.write_json(doc, out) if write else None
    print(report.render_table(doc))
    written = [str(p) for p in (path, png) if p]
    if written:
        print(f"\nwrote {' and '.join(written)}")
    return 0


def _compile_bytecode() -> bool:
    """Write the .pyc files of ``envelope`` and ``envelope_cli`` when they are missing (an editable install, or
    PYTHONDONTWRITEBYTECODE set): otherwise every CLI run recompiles them, ~50 ms measured here, which the
    peers, installed normally, never pay. False when the folders are not writable."""
    import compileall

    import envelope_cli

    import envelope

    folders = [Path(envelope.__file__).parent, Path(envelope_cli.__file__).parent]
    with contextlib.redirect_stdout(None):
        return all(compileall.compile_dir(str(folder), quiet=1) for folder in folders)


def measure(args: argparse.Namespace, groups: list[str]) -> dict[str, Any] | None:
    """Run the groups; the results document, or None when interrupted (everything is cleaned up)."""
    started = time.time()
    with _terminate_as_interrupt(), tools.workspace(args.tmp) as ws:
        (ws / "out").mkdir()
        (ws / "ct").mkdir()
        bench = Bench(args, ws)
        try:
            machine = tools.machine_info(ws)
            machine["rss_floor_mib"] = round(tools.rss_floor(), 1)
            bench.notes.append(f"peak RSS is each command's own ru_maxrss, read by a minimal launcher process; "
                               f"figures near {machine['rss_floor_mib']} MiB are that launcher's floor, not the "
                               "command's")
            if args.size < 256 * 1024 * 1024 and {"files", "pipes", "rss"} & set(groups):
                bench.notes.append(f"at {fmt_size(args.size)} a CLI run is dominated by its start-up (see the startup "
                                   "group), so CLI MB/s understate throughput; compare at the default 1 GiB")
            if _compile_bytecode():
                bench.notes.append("compiled envelope's bytecode first (as a non-editable pip install does), so "
                                   "start-up figures do not include compiling its modules")
            fs = machine["filesystem"]
            bench.log(f"temporary folder {ws} on {fs['type']}; groups: {', '.join(groups)}; "
                      f"size {fmt_size(args.size)}; {args.reps} repetitions")
            for group in groups:
                bench.group = group
                try:
                    RUNNERS[group](bench)
                except Skip as exc:
                    bench.skip(f"group {group}", str(exc))
                except (CommandFailed, OSError, ValueError) as exc:
                    bench.skip(f"group {group}", f"failed: {exc}")
                finally:
                    # keep the disk use bounded: ciphertexts and outputs of a group are not needed later
                    for sub in ("out", "ct"):
                        shutil.rmtree(ws / sub, ignore_errors=True)
                        (ws / sub).mkdir()
            bench.group = ""
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the processes started and removing the temporary folder",
                  file=sys.stderr)
            return None
        finally:
            bench.stop()
            tools.stop_all()
    import envelope

    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {
        "schema": 1,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_seconds": round(time.time() - started, 1),
        "machine": machine,
        "tools": bench.tools,
        "config": {"size": args.size, "reps": args.reps, "startup_reps": args.startup_reps, "files": args.files,
                   "messages": args.messages, "quick": args.quick, "groups": groups,
                   "envelope_default_frame_length": envelope.DEFAULT_FRAME_LENGTH, "mb": 1_000_000},
        "results": bench.results,
        "ratios": report.compute_ratios(bench.results, envelope.DEFAULT_FRAME_LENGTH, args.size),
        "skipped": bench.skipped,
        "notes": bench.notes,
    }
