"""The Dask executor on a real ``LocalCluster(n_workers=2, processes=True)``, started once for this module with
:func:`envelope.batch.cluster.start_local` (what ``--dask local:N`` starts): 127.0.0.1 only, no dashboard.

The CLI runs in this process (CliRunner) with ``--dask tcp://...`` pointing at that cluster, and the library with
``client=``. The worker processes were started with the AWS settings of moto (KMS) and of a fault proxy in
front of the small-parts moto_server (S3), kept for the whole module, so that the proxy counts what the
workers send (``proxy.reset_counts()`` per test).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import distributed
import psutil
import pytest
from aws_fixtures import REGION, TEST_BUCKET, FaultProxy, MotoServer
from envelope_cli.app import app
from helpers import read_tree, write_tree
from typer.testing import CliRunner

import envelope
import envelope.batch
from envelope.batch import cluster, encrypt_many
from testkit.messages import flip_bit

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # helpers below run on the workers
runner = CliRunner()
KEY_BYTES = bytes(range(7, 39))  # the key file's secret: it must never reach the scheduler or a worker's inbox


class Cluster:
    def __init__(self, local: Any, client: Any, proxy: FaultProxy) -> None:
        self.local = local
        self.client = client
        self.proxy = proxy
        self.address = str(local.scheduler_address)

    def worker_pids(self) -> dict[str, int]:
        return {address: int(pid) for address, pid in self.client.run(os.getpid).items()}


@pytest.fixture(scope="module")
def dask_cluster(moto_server: MotoServer, moto_server_small_parts: MotoServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("dask-workers")
    proxy = FaultProxy(moto_server_small_parts.url)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL_KMS": moto_server.url,
           "AWS_ENDPOINT_URL_S3": proxy.url, "AWS_CONFIG_FILE": str(folder / "no-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-credentials"), "AWS_EC2_METADATA_DISABLED": "true",
           "NO_PROXY": "127.0.0.1,localhost"}
    local = cluster.start_local(2, env=env)
    client = distributed.Client(local)
    try:
        yield Cluster(local, client, proxy)
    finally:
        client.close()
        local.close()
        proxy.close()


@pytest.fixture
def dask_s3(dask_cluster: Cluster, s3_env: Any, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The bucket TEST_BUCKET, and this process's S3 calls (planning) through the workers' proxy too."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dask_cluster.proxy.url)
    dask_cluster.client.wait_for_workers(2, timeout=60)
    dask_cluster.proxy.reset_counts()
    return dask_cluster


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "dask.key"
    envelope.write_key_file(str(path), {**envelope.generate_aes_key_file("envelope", "dask"),
                                        "key": __import__("base64").b64encode(KEY_BYTES).decode()})
    return path


def _tree(root: Path, count: int = 12) -> dict[str, bytes]:
    return write_tree(root, {f"d{i % 3}/f{i}": os.urandom(1000 + 997 * i) for i in range(count)})


def _cli(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    """A metadata line without what differs between two runs (message id, the raw-AES IV in the provider
    info, timing, the cache stats)."""
    header = dict(record["header"])
    del header["message_id"]
    header["encrypted_data_keys"] = [{k: v for k, v in edk.items() if k != "provider_info"}
                                     for edk in header["encrypted_data_keys"]]
    return {**{k: v for k, v in record.items() if k not in ("seconds", "header", "cache_stats")}, "header": header}


# ---------------------------------------------------------------------------------------------------------
# the cluster itself


def _listening(pid: int) -> list[tuple[str, int]]:
    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN]


def test_a_local_cluster_listens_on_loopback_only_and_serves_no_dashboard(dask_cluster: Cluster) -> None:
    # the scheduler and the nannies run in this process, the workers in their own
    pids = [os.getpid(), *dask_cluster.worker_pids().values()]
    sockets = {pid: _listening(pid) for pid in pids}
    assert all(sockets[pid] for pid in pids[1:]), sockets
    assert {ip for found in sockets.values() for ip, _ in found} == {"127.0.0.1"}, sockets
    assert 8787 not in {port for found in sockets.values() for _, port in found}
    http = dask_cluster.local.scheduler.http_server.port  # Dask always starts one: it must serve nothing
    for path in ("/status", "/info/main/workers.html", "/json/counts.json", "/metrics", "/health"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{http}{path}", timeout=5)
        assert caught.value.code == 404, path


def test_the_dashboard_only_when_asked_and_on_loopback(tmp_path: Path) -> None:
    shown: list[str] = []
    with cluster.connect("local:1", dashboard=True, on_dashboard=shown.append) as client:
        [url] = shown
        assert url.startswith("http://127.0.0.1:") and url.endswith("/status")
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.status == 200
        pids = [os.getpid(), *client.run(os.getpid).values()]
        assert {ip for pid in pids for ip, _ in _listening(pid)} == {"127.0.0.1"}
    with pytest.raises(envelope.UsageError, match="local cluster"):
        with cluster.connect("tcp://127.0.0.1:1", dashboard=True):
            pass


# ---------------------------------------------------------------------------------------------------------
# same outputs as --workers


def test_a_folder_on_dask_is_what_workers_make(dask_cluster: Cluster, tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in")
    on_dask = _cli("encrypt", "-r", tmp_path / "in", "-o", tmp_path / "dask", "-k", key, "-c", "app=x",
                   "--dask", dask_cluster.address, "--metadata-output", tmp_path / "dask.jsonl", "-v")
    assert on_dask.exit_code == 0, on_dask.stderr
    assert len(on_dask.stderr.splitlines()) == len(files)  # the -v lines, nothing from Dask
    local = _cli("encrypt", "-r", tmp_path / "in", "-o", tmp_path / "local", "-k", key, "-c", "app=x",
                 "--workers", "2", "--metadata-output", tmp_path / "local.jsonl")
    assert local.exit_code == 0, local.stderr
    assert sorted(read_tree(tmp_path / "dask")) == sorted(read_tree(tmp_path / "local"))
    dask_lines = [_fields(r) for r in _records(tmp_path / "dask.jsonl")]
    local_lines = [_fields(r) for r in _records(tmp_path / "local.jsonl")]
    assert [line["output"] for line in dask_lines] == [line["output"].replace("/local/", "/dask/")
                                                       for line in local_lines]
    assert [{**line, "output": None} for line in dask_lines] == [{**line, "output": None} for line in local_lines]
    # each decrypts with the other executor, to the same plaintext
    assert _cli("decrypt", "-r", tmp_path / "dask", "-o", tmp_path / "back1", "-k", key, "-c", "app=x",
                "--workers", "2").exit_code == 0
    assert _cli("decrypt", "-r", tmp_path / "local", "-o", tmp_path / "back2", "-k", key, "-c", "app=x",
                "--dask", dask_cluster.address).exit_code == 0
    assert read_tree(tmp_path / "back1") == read_tree(tmp_path / "back2") == files
    assert (os.stat(tmp_path / "back2" / "d0" / "f0").st_mode & 0o777) == 0o600
    # the library on the same cluster: the same planner, the same runner
    report = envelope.batch.decrypt_many(str(tmp_path / "dask"), str(tmp_path / "back3"), keys=[f"file:{key}"],
                                         required_context={"app": "x"}, client=dask_cluster.client)
    assert read_tree(tmp_path / "back3") == files and len(report.done) == len(files)


def test_a_long_lived_worker_makes_output_folders_again_for_the_next_run(dask_cluster: Cluster, tmp_path: Path,
                                                                         key: Path) -> None:
    import shutil

    files = _tree(tmp_path / "in", 4)
    args = ["encrypt", "-r", tmp_path / "in", "-o", tmp_path / "out", "-k", key, "--dask", dask_cluster.address]
    assert _cli(*args).exit_code == 0
    shutil.rmtree(tmp_path / "out")  # the workers made these folders for the run before
    again = _cli(*args)
    assert again.exit_code == 0, again.stderr
    assert sorted(read_tree(tmp_path / "out")) == sorted(f"{name}.encrypted" for name in files)


def test_an_s3_prefix_on_dask_and_back(dask_s3: Cluster, s3_env: Any, tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in", 8)
    for name, data in files.items():  # straight to moto: the proxy counts only what envelope sends
        s3_env.s3().put_object(Bucket=TEST_BUCKET, Key=f"plain/{name}", Body=data)
    result = _cli("encrypt", "-r", f"s3://{TEST_BUCKET}/plain/", "-o", f"s3://{TEST_BUCKET}/enc/", "-k", key,
                  "--dask", dask_s3.address, "--metadata-output", tmp_path / "m.jsonl")
    assert result.exit_code == 0, result.stderr
    assert dask_s3.proxy.statuses[("PutObject", 200)] == len(files)
    head = s3_env.s3().head_object(Bucket=TEST_BUCKET, Key="enc/d0/f0.encrypted")
    assert len(head["Metadata"]["envelope-run"]) == 32  # the run's mark (for retries): no secret
    records = _records(tmp_path / "m.jsonl")
    assert sorted(r["output"] for r in records) == sorted(f"s3://{TEST_BUCKET}/enc/{n}.encrypted" for n in files)
    back = _cli("decrypt", "-r", f"s3://{TEST_BUCKET}/enc/", "-o", tmp_path / "back", "-k", key, "--dask",
                dask_s3.address)
    assert back.exit_code == 0, back.stderr
    assert read_tree(tmp_path / "back") == files


# ---------------------------------------------------------------------------------------------------------
# failures, resuming, retries


def test_a_tampered_input_fails_alone(dask_cluster: Cluster, tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in")
    assert _cli("encrypt", "-r", tmp_path / "in", "-o", tmp_path / "enc", "-k", key, "--dask",
                dask_cluster.address).exit_code == 0
    bad = tmp_path / "enc" / "d1" / "f4.encrypted"
    bad.write_bytes(flip_bit(bad.read_bytes(), 8 * 300))
    (tmp_path / "enc" / "d2" / "f5.encrypted").write_bytes(b"not a message")
    result = _cli("decrypt", "-r", tmp_path / "enc", "-o", tmp_path / "dec", "-k", key, "--dask",
                  dask_cluster.address)
    lines = result.stderr.splitlines()
    assert result.exit_code == 1  # the first failure's code (in plan order: d1/f4 before d2/f5)
    assert len(lines) == 2 and all(line.startswith("envelope: error: ") for line in lines), lines
    assert str(bad) in lines[0] and "authenticate" in lines[0]
    assert "not an ESDK message" in lines[1]  # the CLI's own wording, classified on the worker
    assert read_tree(tmp_path / "dec") == {n: d for n, d in files.items() if n not in ("d1/f4", "d2/f5")}


def test_a_resumed_run_does_only_what_is_missing(dask_s3: Cluster, tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in", 10)
    args = ["encrypt", "-r", tmp_path / "in", "-o", f"s3://{TEST_BUCKET}/r/", "-k", key, "--dask", dask_s3.address]
    assert _cli(*args).exit_code == 0
    assert dask_s3.proxy.statuses[("PutObject", 200)] == len(files)
    dask_s3.proxy.reset_counts()
    again = _cli(*args, "--skip-existing")
    assert again.exit_code == 0, again.stderr
    assert dask_s3.proxy.received["PutObject"] == 0 and dask_s3.proxy.received["GetObject"] == 0
    s3 = __import__("boto3").client("s3", region_name=REGION, endpoint_url=dask_s3.proxy.url)
    for gone in ("d0/f3.encrypted", "d2/f8.encrypted"):
        s3.delete_object(Bucket=TEST_BUCKET, Key=f"r/{gone}")
    dask_s3.proxy.reset_counts()
    resumed = _cli(*args, "--skip-existing", "-v")
    assert resumed.exit_code == 0, resumed.stderr
    assert dask_s3.proxy.statuses[("PutObject", 200)] == 2 and dask_s3.proxy.received["PutObject"] == 2
    assert sum("wrote" in line for line in resumed.stderr.splitlines()) == 2
    without = _cli(*args)  # without --skip-existing an existing output is refused before any work
    assert without.exit_code == 2 and "already exists" in without.stderr


def _written(proxy: FaultProxy) -> int:
    return proxy.statuses[("PutObject", 200)]


def test_a_worker_lost_mid_task_writes_its_output_once(dask_s3: Cluster, tmp_path: Path, key: Path) -> None:
    """The worker uploading an output is killed (SIGKILL) while its PutObject is held at the proxy; the held
    request then reaches S3 all the same (the object appears, with the run's mark), and the scheduler runs the
    task again on the other worker: that attempt finds its own run's output and counts the task as done."""
    files = _tree(tmp_path / "in", 6)
    client, proxy = dask_s3.client, dask_s3.proxy
    proxy.hold("PutObject", times=len(files))  # every worker stops at its first upload
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["result"] = _cli("encrypt", "-r", tmp_path / "in", "-o", f"s3://{TEST_BUCKET}/k/", "-k", key,
                                 "--dask", dask_s3.address, "--metadata-output", tmp_path / "m.jsonl")

    thread = threading.Thread(target=run)
    thread.start()
    try:
        proxy.wait_held()
        proxy.wait_held()  # both workers are inside a task, each with its upload held
        pids = dask_s3.worker_pids()
        busy = [address for address, keys in client.processing().items() if keys]
        assert len(busy) == 2, client.processing()
        os.kill(pids[busy[0]], signal.SIGKILL)
    finally:
        proxy.release()
        thread.join(timeout=120)
    result = outcome["result"]
    assert result.exit_code == 0, result.stderr
    records = _records(tmp_path / "m.jsonl")
    assert len(records) == len(files)
    assert _written(proxy) == len(files)  # every output written exactly once
    # the lost attempt's request landed: the retry found that output (here, always so far), or the late
    # request was the one refused (If-None-Match)
    earlier = sum(bool(r.get("written_by_earlier_attempt")) for r in records)
    assert earlier <= 1 and 1 <= earlier + proxy.statuses[("PutObject", 412)] <= 2
    back = _cli("decrypt", "-r", f"s3://{TEST_BUCKET}/k/", "-o", tmp_path / "back", "-k", key, "--workers", "1")
    assert back.exit_code == 0 and read_tree(tmp_path / "back") == files
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the lost worker


def test_a_retry_counts_an_output_its_earlier_attempt_wrote(dask_cluster: Cluster, tmp_path: Path,
                                                             key: Path) -> None:
    """What a retry meets when its earlier attempt completed: the output exists with the run's mark."""
    from envelope.batch.jobs import EARLIER, EncryptJob, Run, run_tasks
    from envelope.batch.keys import KeyOptions
    from envelope.batch.planning import Task
    from envelope.batch.tempfiles import MARK_ATTRIBUTE

    (tmp_path / "a").write_bytes(b"a" * 3000)
    (tmp_path / "b").write_bytes(b"b" * 3000)
    run = Run(EncryptJob({}), KeyOptions((f"file:{key}",)), mark="0123456789abcdef0123456789abcdef")
    tasks = [Task(str(tmp_path / "a"), str(tmp_path / "a.e"), 3000), Task(str(tmp_path / "b"), str(tmp_path / "b.e"),
                                                                          3000)]
    earlier = encrypt_many([(str(tmp_path / "a"), str(tmp_path / "a.e"))], keys=[f"file:{key}"], workers=1)
    assert earlier.ok
    os.setxattr(tmp_path / "a.e", MARK_ATTRIBUTE, run.mark.encode())  # as that run's earlier attempt left it
    first = (tmp_path / "a.e").read_bytes()
    outcomes = list(run_tasks(tasks, run, run.materials(), workers=1, client=dask_cluster.client)[0])
    assert [(o.error, o.record.get(EARLIER)) for o in outcomes] == [(None, True), (None, None)]
    assert (tmp_path / "a.e").read_bytes() == first  # not written again
    assert os.getxattr(tmp_path / "b.e", MARK_ATTRIBUTE) == run.mark.encode()
    other = Run(EncryptJob({}), KeyOptions((f"file:{key}",)), mark="f" * 32)  # another run: exists already
    [refused] = list(run_tasks(tasks[:1], other, other.materials(), workers=1, client=dask_cluster.client)[0])
    assert refused.code == 1 and "already exists" in (refused.error or "")


# ---------------------------------------------------------------------------------------------------------
# keys


def _secret_forms() -> list[bytes]:
    import base64

    return [KEY_BYTES, KEY_BYTES.hex().encode(), base64.b64encode(KEY_BYTES), base64.b64encode(KEY_BYTES)[:40]]


def _scheduler_tasks(dask_scheduler: Any) -> list[bytes]:
    from distributed.protocol.pickle import dumps

    return [dumps(ts.run_spec) for ts in dask_scheduler.tasks.values() if str(ts.key).startswith("envelope-")]


def test_no_key_material_travels(dask_s3: Cluster, tmp_path: Path, key: Path) -> None:
    from envelope.batch.jobs import EncryptJob, Run
    from envelope.batch.keys import KeyOptions
    from envelope.batch.planning import Task

    run = Run(EncryptJob({"a": "b"}), KeyOptions((f"file:{key}", "kms:arn:aws:kms:us-east-1:123456789012:key/x")))
    run.materials()  # the main process read the key file: nothing of it may be in what is sent
    sent = pickle.dumps(([Task(str(key), "x", 1)], run)) + __import__("cloudpickle").dumps(run)
    assert str(key).encode() in sent and b"kms:arn:aws:kms" in sent  # the specs travel ...
    assert not any(form in sent for form in _secret_forms())  # ... never the key
    # what the scheduler holds while a run is in flight (its uploads held at the proxy)
    _tree(tmp_path / "in", 4)
    dask_s3.proxy.hold("PutObject")
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(r=_cli(
        "encrypt", "-r", tmp_path / "in", "-o", f"s3://{TEST_BUCKET}/keys/", "-k", key, "--dask", dask_s3.address)))
    thread.start()
    try:
        dask_s3.proxy.wait_held()
        held = dask_s3.client.run_on_scheduler(_scheduler_tasks)
    finally:
        dask_s3.proxy.release()
        thread.join(timeout=120)
    assert outcome["r"].exit_code == 0, outcome["r"].stderr
    assert held and all(str(key).encode() in spec for spec in held)
    assert not any(form in spec for spec in held for form in _secret_forms())


def test_each_worker_process_has_its_own_bounded_cache(dask_cluster: Cluster, tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in", 16)
    result = _cli("encrypt", "-r", tmp_path / "in", "-o", tmp_path / "enc", "-k", key, "--dask", dask_cluster.address,
                  "--cache-max-age", "300", "--cache-max-messages", "3", "--metadata-output", tmp_path / "m.jsonl")
    assert result.exit_code == 0, result.stderr
    *lines, summary = _records(tmp_path / "m.jsonl")
    assert summary["summary"] and summary["cache"]["scope"] == "per-process"
    assert 1 <= summary["cache"]["caches"] <= 2  # the worker processes that ran tasks, one cache each
    assert all(r["cache_stats"]["hits"] + r["cache_stats"]["misses"] == 1 for r in lines)
    stats = summary["cache_stats"]
    assert stats["hits"] + stats["misses"] == len(files)
    # messages sharing a data key share its encrypted data key: no data key protects more than 3 messages
    uses: dict[str, int] = {}
    for name in files:
        with open(tmp_path / "enc" / f"{name}.encrypted", "rb") as f:
            header = envelope.read_header(f)[0]
        edk = header.encrypted_data_keys[0].ciphertext.hex()
        uses[edk] = uses.get(edk, 0) + 1
    assert max(uses.values()) <= 3 and len(uses) >= -(-len(files) // 3)


# ---------------------------------------------------------------------------------------------------------
# the CLI end to end, and without the extra


def _envelope(*args: str | Path, cwd: Path, code: str = "") -> subprocess.CompletedProcess[str]:
    probe = (f"import sys\n{code}sys.argv = ['envelope', *sys.argv[1:]]\nfrom envelope_cli.main import run\n"
             "run()\n")
    return subprocess.run([sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_dask_local_from_the_command_line(tmp_path: Path, key: Path) -> None:
    files = _tree(tmp_path / "in", 6)
    result = _envelope("encrypt", "-r", "in", "-o", "enc", "-k", key, "--dask", "local:2", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    back = _envelope("decrypt", "-r", "enc", "-o", "dec", "-k", key, "--dask", "local:1", "--dask-dashboard",
                     cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert back.stderr.startswith("envelope: Dask dashboard: http://127.0.0.1:")
    assert read_tree(tmp_path / "dec") == files


def test_a_signal_closes_a_local_cluster_and_its_uploads(dask_s3: Cluster, s3_env: Any, tmp_path: Path,
                                                         key: Path) -> None:
    """Ctrl-C while a worker of ``--dask local:1`` has an UploadPart in flight (held at the proxy): the command
    closes its cluster, the worker aborts its multipart upload, and one line says so (exit 130)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big").write_bytes(os.urandom(9 * 2**20))  # two parts of the default 8 MiB
    dask_s3.proxy.hold("UploadPart")
    probe = "import sys\nsys.argv = ['envelope', *sys.argv[1:]]\nfrom envelope_cli.main import run\nrun()\n"
    child = subprocess.Popen([sys.executable, "-c", probe, "encrypt", "-r", "in", "-o", f"s3://{TEST_BUCKET}/sig/",
                              "-k", str(key), "--dask", "local:1"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        dask_s3.proxy.wait_held(timeout=90)
        assert len(s3_env.pending_uploads(TEST_BUCKET)) == 1
        child.send_signal(signal.SIGINT)
        threading.Timer(1.0, dask_s3.proxy.release).start()  # the part may finish: the upload is aborted anyway
        _, err = child.communicate(timeout=90)
    finally:
        dask_s3.proxy.release()
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert err == "envelope: error: interrupted; temporary files were removed\n"
    assert s3_env.pending_uploads(TEST_BUCKET) == [] and s3_env.object_keys(TEST_BUCKET) == []


BLOCKED = "sys.modules['dask'] = None\nsys.modules['distributed'] = None\n"


def test_without_the_extra_one_line_and_exit_2(tmp_path: Path, key: Path) -> None:
    (tmp_path / "f").write_bytes(b"f")
    result = _envelope("encrypt", "f", "-k", key, "--dask", "local:2", cwd=tmp_path, code=BLOCKED)
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("envelope: error: --dask needs Dask, which is not installed: pip install "
                             "'envelope-crypt[dask]'\n")
    assert not (tmp_path / "f.encrypted").exists()
    for spec, words in (("local:0", "local:N"), ("scheduler:8786", "scheduler address")):
        bad = _cli("encrypt", tmp_path / "f", "-k", key, "--dask", spec)
        assert bad.exit_code == 2 and words in bad.stderr, bad.stderr
    both = _cli("encrypt", tmp_path / "f", "-k", key, "--dask", "local:2", "--workers", "2")
    assert both.exit_code == 2 and "exclude each other" in both.stderr
    stdin = _cli("encrypt", "-", "-k", key, "--dask", "local:2", "-o", tmp_path / "x")
    assert stdin.exit_code == 2 and "not stdin" in stdin.stderr
    unreachable = _cli("encrypt", tmp_path / "f", "-k", key, "--dask", f"tcp://127.0.0.1:{_free_port()}",
                       "-o", tmp_path / "y")
    assert unreachable.exit_code == 4 and "cannot reach the Dask scheduler" in unreachable.stderr
    assert not (tmp_path / "y").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_up_never_imports_dask(tmp_path: Path, key: Path) -> None:
    report = "sys.stderr.write('\\nMODULES ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    (tmp_path / "m").write_bytes(envelope.encrypt(b"m" * 100, keyring=envelope.load_keyring(str(key))))
    for args in (["--version"], ["decrypt", "m", "-k", str(key), "-o", "out"]):
        probe = ("import sys\nsys.argv = ['envelope', *sys.argv[1:]]\nfrom envelope_cli.main import run\n"
                 f"try:\n    run(exit_now=False)\nexcept SystemExit:\n    pass\n{report}")
        done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=tmp_path,
                              timeout=60)
        modules = set(done.stderr.rsplit("MODULES ", 1)[1].split())
        assert not modules & {"dask", "distributed", "tornado", "cloudpickle", "psutil"}, args
    assert (tmp_path / "out").read_bytes() == b"m" * 100


def test_worker_teardown_aborts_its_pending_uploads(dask_s3: Cluster, s3_env: Any) -> None:
    cluster._register(dask_s3.client)  # what every run does first (once per cluster)
    address = next(iter(dask_s3.worker_pids()))
    dask_s3.client.run(_start_an_upload, f"s3://{TEST_BUCKET}/pending", workers=[address])
    assert len(s3_env.pending_uploads(TEST_BUCKET)) == 1
    dask_s3.client.restart_workers([address], timeout=120)  # a graceful close: the plugin's teardown runs
    deadline = time.monotonic() + 30  # under load the abort may land just after the restart is acknowledged
    while s3_env.pending_uploads(TEST_BUCKET) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert s3_env.pending_uploads(TEST_BUCKET) == []
    dask_s3.client.wait_for_workers(2, timeout=60)


def _start_an_upload(url: str) -> None:
    """On a worker: an upload left open (envelope.s3 keeps every writer until commit or abort)."""
    import envelope.s3

    writer = envelope.s3.S3Writer(url, part_size=envelope.s3.MIN_PART_SIZE)
    writer.write(bytes(envelope.s3.MIN_PART_SIZE + 1))  # a part is shipped: the multipart upload is pending
