"""Process-wide AWS clients are per process: a child made by fork (the CLI's ``--workers``) never uses its
parent's client, whose connection pool (sockets) it would otherwise share with the parent."""

from __future__ import annotations

import os

import pytest

from envelope._aws import cached_client


@pytest.mark.usefixtures("services_env")
def test_a_forked_child_makes_its_own_client() -> None:
    parent = cached_client("ssm")
    assert cached_client("ssm") is parent  # reused within a process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer whether it got the parent's client, then leave at once
        try:
            os.write(write, b"same" if cached_client("ssm") is parent else b"own")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"own"
