"""The docs hold together: every relative link and anchor resolves, and the Python examples in docs/ run.

The KMS and cache examples run against the local moto_server (``aws_env``), with the alias they name created
first; nothing is mocked.
"""

from __future__ import annotations

import io
import re
import runpy
from pathlib import Path

import pytest
from aws_fixtures import AwsEnv

import envelope
from envelope._keyrings.keyfile import generate_aes_key_file, write_key_file

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (links are not links there)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (but not '-' or '_'), spaces -> '-'."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        plain = re.sub(r"[`*]", "", heading).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
    return anchors


def _links() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for match in LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
            target = match.group(1) or match.group(2)
            if not re.match(r"[a-z]+:", target):  # http(s):, mailto: are not checked here
                found.append((str(page.relative_to(ROOT)), target))
    return found


def test_pages_have_links() -> None:
    pages = {page for page, _ in _links()}
    assert {"README.md", "docs/cli.md", "docs/from-esdk-cli.md", "docs/performance.md"} <= pages


@pytest.mark.parametrize("page, target", _links(), ids=lambda v: v)
def test_relative_link_resolves(page: str, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = ((ROOT / page).parent / path).resolve() if path else ROOT / page
    assert resolved.exists(), f"{page}: {target} -> no such file"
    if anchor:
        assert resolved.suffix == ".md", f"{page}: {target}"
        assert anchor in _anchors(resolved), f"{page}: {target} -> no heading with that anchor"


def _python_block(page: str, index: int = 0) -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / page).read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) > index, f"{page} has no Python example"
    return str(blocks[index])


def test_kms_example_runs(aws_env: AwsEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/kms.md builds each kind of KMS keyring; the multi-keyring then encrypts for real."""
    aws_env.create_key(alias="alias/app")
    monkeypatch.chdir(tmp_path)
    write_key_file("backup.key", generate_aes_key_file(name="backup"))
    (tmp_path / "example.py").write_text(_python_block("docs/kms.md"), encoding="utf-8")
    namespace = runpy.run_path(str(tmp_path / "example.py"))
    assert isinstance(namespace["keyring"], envelope.KmsKeyring)
    assert isinstance(namespace["discovery"], envelope.KmsDiscoveryKeyring)
    message = envelope.encrypt(b"secret", keyring=namespace["both"], context={"app": "web"})
    header = envelope.read_header(io.BytesIO(message))[0]
    assert [edk.provider_id for edk in header.encrypted_data_keys] == ["aws-kms", "envelope"]
    backup = envelope.load_keyring(str(tmp_path / "backup.key"))  # the recovery key alone opens it
    assert envelope.decrypt(message, keyring=backup).plaintext == b"secret"


def test_cache_example_runs(aws_env: AwsEnv, tmp_path: Path) -> None:
    """docs/cache.md's example makes one KMS data key; a second message with the same context reuses it."""
    aws_env.create_key(alias="alias/app")
    (tmp_path / "example.py").write_text(_python_block("docs/cache.md"), encoding="utf-8")
    namespace = runpy.run_path(str(tmp_path / "example.py"))
    manager = namespace["manager"]
    assert (manager.stats.misses, manager.stats.hits, manager.stats.keyring_encrypt_calls) == (1, 0, 1)
    second = envelope.encrypt(b"more", materials_manager=manager, context={"app": "web"})
    assert (manager.stats.misses, manager.stats.hits, manager.stats.keyring_encrypt_calls) == (1, 1, 1)
    first = envelope.read_header(io.BytesIO(namespace["message"]))[0]
    assert envelope.read_header(io.BytesIO(second))[0].encrypted_data_keys == first.encrypted_data_keys
