"""The coldstart benchmark group's peers really do the work: each fresh process gets the 3 secrets right (the
child asserts it), with the KMS calls issue 14 expects: 3 for the console snippet, 1 for envelope's helper."""

from __future__ import annotations

import os

import pytest
from aws_fixtures import AwsEnv

from benchmarks import coldstart


@pytest.mark.parametrize(("kind", "calls"), [("snippet", 3), ("envelope-vars", 1), ("envelope-bundle", 1),
                                             ("envelope-console", 3)])
def test_coldstart_peer_decrypts_with_the_expected_kms_calls(aws_env: AwsEnv, kind: str, calls: int) -> None:
    moto_env = {name: os.environ[name] for name in ("AWS_ENDPOINT_URL_KMS", "AWS_REGION", "AWS_DEFAULT_REGION",
                                                    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env = {**os.environ, **coldstart.environment(moto_env, aws_env.create_key())}
    marks = coldstart.run_once(kind, env, count=True)
    assert marks["kms_calls"] == calls
    assert 0 < marks["first"] <= marks["all"]
