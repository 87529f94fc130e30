"""pytest plugin for AWS tests over real HTTP: a moto_server on 127.0.0.1 and a fault-injecting proxy.

Registered in tests/conftest.py (``pytest_plugins``). Fixtures:

``moto_server`` (session)
    Starts the venv's ``moto_server`` (next to ``sys.executable``) on 127.0.0.1 with a free port, waits until
    it answers, and stops it by its own PID at the end. A :class:`MotoServer` (``url``, ``port``, ``pid``).
``aws_env`` (function)
    Resets moto's state (``POST /moto-api/reset``), then sets, for this test only, dummy credentials, region
    ``us-east-1``, ``AWS_ENDPOINT_URL_KMS`` and ``AWS_ENDPOINT_URL_S3`` -> moto, with ``AWS_PROFILE``, retry
    settings and the user's ``~/.aws`` files masked. Subprocesses inherit it through ``os.environ``. An
    :class:`AwsEnv`: ``create_key(region=..., alias=..., multi_region=...)`` (setup calls go straight to moto,
    never through a proxy, so they are not counted), ``kms(region)`` a setup client, ``url``; for S3
    ``s3()`` a setup client, ``create_bucket(name)``, ``object_keys(bucket)``, ``pending_uploads(bucket)``
    (``ListMultipartUploads``), ``s3_url``. This server keeps S3's real 5 MiB minimum part size.
``moto_server_small_parts`` (session) and ``s3_small_parts`` (function, uses ``aws_env``)
    A second moto_server whose minimum part size (``S3_UPLOAD_PART_MIN_SIZE``) is :data:`SMALL_PART_SIZE`,
    for fast multipart tests; ``s3_small_parts`` resets it and points ``AWS_ENDPOINT_URL_S3`` at it (KMS stays
    on ``moto_server``) and returns the same :class:`AwsEnv`, whose ``s3()`` / ``s3_url`` then follow.
``s3_env`` (function, uses ``s3_small_parts``) and ``s3_proxy`` (function, uses ``s3_env``)
    ``s3_small_parts`` with ``envelope.s3.MIN_PART_SIZE`` lowered to match (this process) and the bucket
    :data:`TEST_BUCKET`; ``s3_proxy`` also sends every S3 client made afterwards through a :class:`FaultProxy`.
``kms_proxy`` (function, uses ``aws_env``)
    A :class:`FaultProxy` in front of moto, with ``AWS_ENDPOINT_URL_KMS`` pointed at it: every KMS client the
    test (or a subprocess it starts) creates afterwards goes through it. ``throttle_share`` (0.0 to 1.0) sets
    the share of requests answered ``400 ThrottlingException``; ``calls("GenerateDataKey")`` counts requests
    that reached moto, ``received`` / ``throttled`` count all requests and the throttled ones per operation,
    ``response_bytes`` the body bytes of moto's answers per operation.
    S3 requests through a proxy are named by their REST shape (``UploadPart``, ``GetObject``, ...; see
    :func:`s3_operation`); a throttled one is answered ``503 SlowDown`` in S3's XML, and ``fail(operation,
    times, status, code)`` answers the next ``times`` requests of an operation (``None``: all) with that error.
    ``hold(operation)`` keeps the next request of an operation waiting (``wait_held()`` returns once it
    arrived) until ``release()``, then forwards it; ``statuses[(operation, status)]`` counts moto's answers.
``fast_throttle_backoff`` (function)
    In this process only, lowers botocore's throttling backoff base from 1 s to 10 ms. Retries, the retry
    quota and error classification are untouched; only the sleeps shrink (see the note on the fixture).

``services_env`` (function, uses ``aws_env``)
    Also points ``AWS_ENDPOINT_URL_SSM``, ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` and ``AWS_ENDPOINT_URL_LAMBDA`` at
    moto. A :class:`ServicesEnv`: ``aws`` (the AwsEnv), setup clients ``ssm()``, ``secrets()``, ``lambda_()``
    straight to moto, ``lambda_function(name, variables)`` (creates a function without Docker).
``services_proxy`` (function, uses ``services_env``)
    A :class:`FaultProxy` in front of moto for KMS, SSM and Secrets Manager at once (the three
    ``AWS_ENDPOINT_URL_*`` point at it): ``calls("GetParameters")``, ``calls("BatchGetSecretValue")``,
    ``calls("Decrypt")``, ... count what reached moto; ``throttle_operations`` limits throttling to some of them.

``refused_endpoint()`` returns a loopback URL whose port refuses connections. ``separate_moto_server(log, env)``
starts another moto_server with extra environment (e.g. ``INITIAL_NO_AUTH_ACTION_COUNT`` to enforce IAM), for a
module-scoped fixture; stop it with ``stop_moto_server``; ``iam_user(server, name, actions)`` makes a user there.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from shutil import which
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's only account
#: S3_UPLOAD_PART_MIN_SIZE of moto_server_small_parts (moto's default, like S3's, is 5 MiB)
SMALL_PART_SIZE = 64 * 1024
#: the bucket the S3 tests use (tests/s3/conftest.py creates it)
TEST_BUCKET = "envelope-test"

__all__ = ["ACCOUNT", "REGION", "SMALL_PART_SIZE", "TEST_BUCKET", "AwsEnv", "FaultProxy", "MotoServer",
           "ServicesEnv", "iam_user", "refused_endpoint", "s3_operation", "separate_moto_server", "stop_moto_server"]


# ---------------------------------------------------------------------------------------------------------
# moto_server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_endpoint() -> str:
    """A loopback URL nobody listens on (the port was free a moment ago): connections are refused."""
    return f"http://127.0.0.1:{_free_port()}"


def _moto_script() -> str:
    script = Path(sys.executable).parent / "moto_server"
    if script.exists():
        return str(script)
    found = which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found next to the Python executable; pip install 'moto[server]'")
    return found


@dataclass
class MotoServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:
                response.read()
            return True
        except (OSError, urllib.error.URLError):
            return False


def _start_moto(log: Path, env: dict[str, str] | None = None) -> MotoServer:
    script = _moto_script()
    environ = {**os.environ, **env} if env else None
    for _ in range(3):  # a free port can be taken between choosing it and binding it
        port = _free_port()
        with log.open("ab") as out:
            process = subprocess.Popen([script, "-H", "127.0.0.1", "-p", str(port)], env=environ,
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = MotoServer(f"http://127.0.0.1:{port}", port, process, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if server.answers():
                return server
            time.sleep(0.1)
        _stop(process)
    raise RuntimeError(f"moto_server did not start; log:\n{log.read_text(errors='replace')[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # by its own PID
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = _start_moto(tmp_path_factory.mktemp("moto") / "moto_server.log")
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="session")
def moto_server_small_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A second moto_server whose S3 accepts parts of SMALL_PART_SIZE (moto reads the variable at start)."""
    server = _start_moto(tmp_path_factory.mktemp("moto-small-parts") / "moto_server.log",
                         env={"S3_UPLOAD_PART_MIN_SIZE": str(SMALL_PART_SIZE)})
    try:
        yield server
    finally:
        _stop(server.process)


# ---------------------------------------------------------------------------------------------------------
# per-test AWS environment

_MASKED = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
    "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "HTTP_PROXY", "HTTPS_PROXY",
    "http_proxy", "https_proxy",
)


@dataclass
class AwsEnv:
    server: MotoServer
    region: str = REGION
    _clients: dict[str, Any] = field(default_factory=dict)
    s3_server: MotoServer | None = None  # S3 elsewhere than KMS (s3_small_parts)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def s3_url(self) -> str:
        """The moto_server that S3 requests go to (AWS_ENDPOINT_URL_S3)."""
        return (self.s3_server or self.server).url

    def s3(self) -> Any:
        """A setup S3 client talking straight to that server (not through any proxy)."""
        key = f"s3 {self.s3_url}"
        if key not in self._clients:
            import boto3

            self._clients[key] = boto3.client("s3", region_name=self.region, endpoint_url=self.s3_url)
        return self._clients[key]

    def create_bucket(self, name: str = "envelope-test") -> str:
        self.s3().create_bucket(Bucket=name)
        return name

    def object_keys(self, bucket: str) -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """ListMultipartUploads: what a failed or interrupted upload must not leave behind."""
        return list(self.s3().list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    def kms(self, region: str = REGION) -> Any:
        """A setup client talking straight to moto (not through any proxy)."""
        if region not in self._clients:
            import boto3

            self._clients[region] = boto3.client("kms", region_name=region, endpoint_url=self.server.url)
        return self._clients[region]

    def create_key(self, region: str = REGION, *, alias: str | None = None, multi_region: bool = False) -> str:
        """Create a symmetric key (optionally with ``alias/NAME``); return its ARN."""
        kms = self.kms(region)
        metadata = kms.create_key(MultiRegion=multi_region, Description="envelope test key")["KeyMetadata"]
        if alias is not None:
            kms.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"])
        return str(metadata["Arn"])


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AwsEnv:
    moto_server.reset()
    for name in _MASKED:
        monkeypatch.delenv(name, raising=False)
    settings = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_KMS": moto_server.url,
        "AWS_ENDPOINT_URL_S3": moto_server.url,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return AwsEnv(moto_server)


@pytest.fixture
def s3_small_parts(aws_env: AwsEnv, moto_server_small_parts: MotoServer, monkeypatch: pytest.MonkeyPatch) -> AwsEnv:
    """``aws_env`` with S3 on moto_server_small_parts (parts of SMALL_PART_SIZE accepted); KMS stays put."""
    moto_server_small_parts.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server_small_parts.url)
    aws_env.s3_server = moto_server_small_parts
    return aws_env


@pytest.fixture
def s3_env(s3_small_parts: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> AwsEnv:
    """S3 on the moto_server that accepts parts of SMALL_PART_SIZE, envelope's 5 MiB floor lowered to match (in
    this process, and in worker processes it forks), and the bucket TEST_BUCKET. KMS is on the main moto_server."""
    import envelope.s3

    monkeypatch.setattr(envelope.s3, "MIN_PART_SIZE", SMALL_PART_SIZE)
    s3_small_parts.create_bucket(TEST_BUCKET)
    return s3_small_parts


@pytest.fixture
def s3_proxy(s3_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """Every S3 client made from here on goes through a FaultProxy (counted; faults on demand)."""
    with FaultProxy(s3_env.s3_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield proxy


# ---------------------------------------------------------------------------------------------------------
# fault-injecting proxy

_THROTTLE_BODY = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te",
               "trailer", "upgrade"}


def _s3_error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>fault-proxy</RequestId></Error>").encode()


def s3_operation(method: str, target: str) -> str:
    """The S3 operation of a REST request (path-style, as botocore sends to a loopback endpoint)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    if method == "PUT":
        if "partNumber" in query and "uploadId" in query:
            return "UploadPart"
        return "PutObject" if key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "PostObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if key:
        return "ListParts" if "uploadId" in query else "GetObject"
    if "uploads" in query:
        return "ListMultipartUploads"
    return "ListObjectsV2" if "list-type" in query else ("ListObjects" if bucket else "ListBuckets")


class FaultProxy:
    """A loopback HTTP proxy in front of an AWS endpoint.

    Counts requests per KMS operation (from ``X-Amz-Target``) and answers ``400 ThrottlingException`` for a
    share of them, chosen deterministically: with ``throttle_share = 0.5`` every second request is throttled.
    ``throttle_operations`` (a set of names, default: all) limits throttling to those operations.
    Counters are per HTTP request, so retries count as separate requests.
    """

    def __init__(self, target_url: str, *, throttle_share: float = 0.0,
                 throttle_operations: set[str] | None = None) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._lock = threading.Lock()
        self._share = 0.0
        self._debt = 0.0
        self.throttle_share = throttle_share
        self.throttle_operations = throttle_operations
        self.received: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        #: body bytes of the answers moto gave, per operation (what a ranged read really fetched)
        self.response_bytes: Counter[str] = Counter()
        self._faults: dict[str, list[Any]] = {}  # operation -> [times left or None, status, code]
        #: (operation, JSON request body) of every request, in order (tests inspect what was sent to KMS)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        #: (operation, HTTP status) of every answer moto gave through the proxy
        self.statuses: Counter[tuple[str, int]] = Counter()
        self._hold: dict[str, int] = {}  # operation -> requests still to hold
        self._held = threading.Semaphore(0)  # one per request that arrived and is being held
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy",
                                        daemon=True)
        self._thread.start()

    @property
    def throttle_share(self) -> float:
        return self._share

    @throttle_share.setter
    def throttle_share(self, share: float) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError("throttle_share must be between 0 and 1")
        with self._lock:
            self._share = share
            self._debt = 0.0

    def calls(self, operation: str) -> int:
        """Requests for ``operation`` that reached the endpoint (throttled ones excluded)."""
        with self._lock:
            return self.forwarded[operation]

    def fail(self, operation: str, times: int | None = 1, *, status: int = 500, code: str = "InternalError") -> None:
        """Answer the next ``times`` requests for S3 ``operation`` (None: every one) with ``status`` and an S3
        XML error ``code``, without forwarding them. ``times=0`` stops failing it."""
        with self._lock:
            if times == 0:
                self._faults.pop(operation, None)
            else:
                self._faults[operation] = [times, status, code]

    def hold(self, operation: str, times: int = 1) -> None:
        """Keep the next ``times`` requests for ``operation`` waiting (counted as they arrive) until
        :meth:`release`; then they are forwarded as usual."""
        with self._lock:
            self._released.clear()
            self._hold[operation] = self._hold.get(operation, 0) + times

    def wait_held(self, timeout: float = 60.0) -> None:
        """Return once one more held request has arrived (AssertionError after ``timeout`` seconds)."""
        assert self._held.acquire(timeout=timeout), "no held request arrived"

    def release(self) -> None:
        with self._lock:
            self._hold.clear()
        self._released.set()

    def _wait_if_held(self, operation: str) -> None:
        with self._lock:
            held = self._hold.get(operation, 0) > 0
            if held:
                self._hold[operation] -= 1
        if held:
            self._held.release()
            self._released.wait(timeout=120)

    def reset_counts(self) -> None:
        with self._lock:
            self.statuses.clear()
            self.received.clear()
            self.forwarded.clear()
            self.throttled.clear()
            self.failed.clear()
            self.response_bytes.clear()
            self.requests.clear()

    def _injected(self, operation: str) -> tuple[int, str] | None:
        """(status, code) when the request must fail by ``fail()``; counts it."""
        with self._lock:
            fault = self._faults.get(operation)
            if fault is None:
                return None
            times, status, code = fault
            if times is not None:
                fault[0] = times - 1
                if fault[0] <= 0:
                    del self._faults[operation]
            self.received[operation] += 1
            self.failed[operation] += 1
            return status, code

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _decide(self, operation: str, body: bytes) -> bool:
        """Count the request; True when it must be throttled."""
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        with self._lock:
            self.received[operation] += 1
            self.requests.append((operation, parsed if isinstance(parsed, dict) else {}))
            throttle = False
            if operation and (self.throttle_operations is None or operation in self.throttle_operations):
                self._debt += self._share
                if self._debt >= 1.0 - 1e-9:
                    self._debt -= 1.0
                    throttle = True
            if throttle:
                self.throttled[operation] += 1
            else:
                self.forwarded[operation] += 1
            return throttle

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms delayed ACKs
            wbufsize = 64 * 1024  # ... and send them as one (handle_one_request flushes after each answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target") or ""
                operation = target.rpartition(".")[2] if "." in target else ""
                s3 = not target and not self.path.startswith("/moto-api")
                if s3:  # REST (S3): named from the method and the query; the body is data, not JSON
                    operation = s3_operation(self.command, self.path)
                    injected = proxy._injected(operation)
                    if injected is not None:
                        self._answer(injected[0], [("Content-Type", "application/xml")],
                                     _s3_error_body(injected[1], "injected by the fault proxy"))
                        return
                if proxy._decide(operation, b"" if s3 else body):
                    if s3:
                        self._answer(503, [("Content-Type", "application/xml")],
                                     _s3_error_body("SlowDown", "Please reduce your request rate."))
                        return
                    self._answer(400, [("Content-Type", "application/x-amz-json-1.1"),
                                       ("x-amzn-RequestId", "fault-proxy")], _THROTTLE_BODY)
                    return
                proxy._wait_if_held(operation)
                conn = http.client.HTTPConnection(*proxy._target, timeout=60)
                try:
                    # Expect: 100-continue was answered here (BaseHTTPRequestHandler); the body is sent whole
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP and k.lower() != "expect"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    with proxy._lock:
                        proxy.response_bytes[operation] += len(data)
                        proxy.statuses[(operation, response.status)] += 1
                    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                    # a HEAD answer has no body but tells the object's Content-Length: pass that on
                    head_length = response.getheader("Content-Length") if self.command == "HEAD" else None
                    self._answer(response.status, kept, data, head_length)
                finally:
                    conn.close()

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes,
                        content_length: str | None = None) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", content_length or str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        return Handler


@pytest.fixture
def kms_proxy(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", proxy.url)
        yield proxy


@pytest.fixture
def fast_throttle_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore sleeps rand(0, 1) * 2**i seconds after a throttle (toolbox section 2): 200 throttled round trips
    would take minutes. This shrinks the 1 s base to 10 ms in this process; botocore still decides whether to
    retry, counts attempts, spends retry quota and raises after the last attempt exactly as in production.
    """
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)


# ---------------------------------------------------------------------------------------------------------
# SSM, Secrets Manager and Lambda (moto 5.2.5: none of their size limits is enforced, SecureString is stored
# as "kms:<KeyId>:<value>" without calling KMS; see the tests that rely on them)

SERVICE_ENDPOINTS = ("AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_LAMBDA")


@dataclass
class ServicesEnv:
    aws: AwsEnv
    _clients: dict[str, Any] = field(default_factory=dict)

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(service, region_name=REGION, endpoint_url=self.aws.url)
        return self._clients[service]

    def ssm(self) -> Any:
        """A setup SSM client straight to moto."""
        return self._client("ssm")

    def secrets(self) -> Any:
        """A setup Secrets Manager client straight to moto."""
        return self._client("secretsmanager")

    def lambda_(self) -> Any:
        """A setup Lambda client straight to moto."""
        return self._client("lambda")

    def lambda_function(self, name: str, variables: dict[str, str], kms_key_arn: str | None = None) -> dict[str, Any]:
        """Create a Lambda function (moto runs no code without Docker; its configuration is what tests need)."""
        import io
        import zipfile

        iam = self._client("iam")
        try:
            role = iam.get_role(RoleName="envelope-test")["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            role = iam.create_role(RoleName="envelope-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return None\n")
        params: dict[str, Any] = {"FunctionName": name, "Runtime": "python3.11", "Role": role,
                                  "Handler": "handler.handler", "Code": {"ZipFile": code.getvalue()},
                                  "Environment": {"Variables": variables}}
        if kms_key_arn:
            params["KMSKeyArn"] = kms_key_arn
        return dict(self.lambda_().create_function(**params))


@pytest.fixture
def services_env(aws_env: AwsEnv, monkeypatch: pytest.MonkeyPatch) -> ServicesEnv:
    for name in SERVICE_ENDPOINTS:
        monkeypatch.setenv(name, aws_env.url)
    return ServicesEnv(aws_env)


@pytest.fixture
def services_proxy(services_env: ServicesEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(services_env.aws.url) as proxy:
        for name in ("AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
            monkeypatch.setenv(name, proxy.url)
        yield proxy


def separate_moto_server(log: Path, env: dict[str, str]) -> MotoServer:
    """Another moto_server (not the session one), started with ``env`` added to its environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        return _start_moto(log)


def stop_moto_server(server: MotoServer) -> None:
    _stop(server.process)


def iam_user(server: MotoServer, name: str, actions: list[str]) -> tuple[str, str]:
    """Create the IAM user ``name`` on ``server`` (a ``separate_moto_server`` that enforces IAM), allowed only
    ``actions`` on every resource (moto checks actions, not resources); returns its (access key id, secret
    access key). Makes 3 requests: count them in ``INITIAL_NO_AUTH_ACTION_COUNT``."""
    import boto3

    iam = boto3.client("iam", region_name=REGION, endpoint_url=server.url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    iam.create_user(UserName=name)
    access = iam.create_access_key(UserName=name)["AccessKey"]
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
    return str(access["AccessKeyId"]), str(access["SecretAccessKey"])
