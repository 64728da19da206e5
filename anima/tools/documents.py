"""Local documents: the folders the user names (config `tools.documents`), indexed into
passages of about 800 characters on paragraph boundaries, searched by their words (FTS5,
BM25) and cited as `notes/plan.md:12-30` (folder name, path inside it, lines).

Read-only: files are only ever opened for reading. Text formats only: a file whose
extension is not text, that holds NUL bytes, or that cannot be read is skipped and
counted, never fatal. Re-indexing reads only files whose size or mtime changed and drops
the passages of files that are gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from anima.errors import BadInput
from anima.store import query_words
from anima.tools import Arg, Tool, ToolContext, tool

TEXT_SUFFIXES = frozenset(
    ".txt .text .md .markdown .rst .org .tex .csv .tsv .json .jsonl .yaml .yml .toml .ini .cfg .conf .log "
    ".xml .html .htm .css "
    ".py .js .ts .sh .c .h .cpp .hpp .java .go .rs .rb .php .sql .r .lua .pl .swift .kt".split()
)
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})
CHUNK_CHARS = 800  # a passage: long enough to answer from, short enough for a small model's context
MAX_BYTES = 5_000_000  # bigger "text" files are logs or dumps, not documents


@dataclass
class IndexReport:
    folder: str
    indexed: int = 0  # files read (new or changed)
    unchanged: int = 0
    removed: int = 0  # files gone (or no longer text) since the last index
    passages: int = 0  # passages written this time
    skipped: dict[str, int] = field(default_factory=dict)  # reason (binary, unreadable, too large) -> files

    def summary(self) -> str:
        parts = [
            f"{self.folder}: indexed {self.indexed} file{'s' * (self.indexed != 1)} ({self.passages} passages)",
            f"{self.unchanged} unchanged",
        ]
        if self.removed:
            parts.append(f"{self.removed} removed")
        text = ", ".join(parts)
        if self.skipped:
            text += "; skipped " + ", ".join(
                f"{n} {why} file{'s' * (n != 1)}" for why, n in sorted(self.skipped.items())
            )
        return text


def chunks(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, int, str]]:
    """(first line, last line, text) passages: whole paragraphs joined up to `size`
    characters; a longer paragraph split by lines, a longer line by characters."""
    pieces, para, first = [], [], 0
    for n, line in enumerate(text.splitlines() + [""], 1):
        if line.strip():
            first = first or n
            para.append(line)
            continue
        if para:
            block = "\n".join(para)
            if len(block) <= size:
                pieces.append((first, n - 1, block))
            else:
                for k, long_line in enumerate(para, first):
                    pieces += [
                        (k, k, long_line[i : i + size])
                        for i in range(0, len(long_line), size)
                        if long_line[i : i + size].strip()
                    ]
        para, first = [], 0
    passages: list[tuple[int, int, str]] = []
    for a, b, piece in pieces:
        if passages and len(passages[-1][2]) + len(piece) + 2 <= size:
            start, end, prev = passages[-1]
            passages[-1] = (start, b, prev + ("\n" if a == end + 1 else "\n\n") + piece)
        else:
            passages.append((a, b, piece))
    return passages


def _read_text(path: Path, size: int) -> tuple[str | None, str | None]:
    """(text, None), or (None, why it was skipped)."""
    if path.suffix.lower() not in TEXT_SUFFIXES and path.suffix:
        return None, "binary"
    if size > MAX_BYTES:
        return None, "too large"
    try:
        data = path.read_bytes()
    except OSError:
        return None, "unreadable"
    if b"\0" in data:
        return None, "binary"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return data.decode("latin-1"), None  # old 8-bit text; anything without NUL bytes decodes


def _files(root: Path, report: IndexReport):
    """Files under root, hidden ones and tool folders (.git, node_modules) left out."""

    def unreadable(exc: OSError) -> None:
        report.skipped["unreadable"] = report.skipped.get("unreadable", 0) + 1

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(folder) / name


def index_folder(store, folder: str | Path) -> IndexReport:
    """Bring the index of one folder up to date; returns what was done."""
    root = Path(folder).expanduser()
    try:
        exists = root.exists()
    except OSError as exc:  # a name too long for the file system
        raise BadInput(
            f"cannot read folder {str(root)[:80]}: {exc.strerror}",
            "check the path (config tools.documents, or the one given)",
        ) from exc
    if not exists:
        raise BadInput(f"no such folder: {root}", "check the path (config tools.documents, or the one given)")
    if not root.is_dir():
        raise BadInput(f"{root} is a file, not a folder", "give the folder that holds it")
    root = root.resolve()
    report = IndexReport(str(root))
    known = store.documents.files()
    seen = set()
    for path in _files(root, report):
        try:
            st = path.stat()
        except OSError:  # a broken link, or no permission
            report.skipped["unreadable"] = report.skipped.get("unreadable", 0) + 1
            continue
        key = str(path)
        if known.get(key) == (st.st_mtime, st.st_size):
            report.unchanged += 1
            seen.add(key)
            continue
        text, why = _read_text(path, st.st_size)
        if text is None:
            report.skipped[why] = report.skipped.get(why, 0) + 1
            continue
        seen.add(key)
        passages = chunks(text)
        cite = f"{root.name}/{path.relative_to(root).as_posix()}"
        store.documents.put(key, str(root), mtime=st.st_mtime, size=st.st_size, cite=cite, passages=passages)
        report.indexed += 1
        report.passages += len(passages)
    gone = [p for p in known if p.startswith(str(root) + os.sep) and p not in seen]
    store.documents.remove(gone)
    report.removed = len(gone)
    return report


def index_documents(store, folders: list[str]) -> list[IndexReport]:
    """Index each folder (usually config `tools.documents`)."""
    if not folders:
        raise BadInput(
            "no document folders to index",
            'give a FOLDER, or list folders in the config: [tools] documents = ["~/notes"]',
        )
    return [index_folder(store, f) for f in folders]


def search(store, query: str, k: int = 5) -> list[dict]:
    """Passages sharing words with the query, best first: path, cite ('notes/plan.md:12-30'),
    lines ('12-30'), snippet (matches in [brackets]), text, score (higher is better)."""
    if not query_words(query):
        raise BadInput("nothing to search for", "give a word or two")
    hits = []
    for r in store.documents.search(query, k):
        lines = f"{r['line_start']}-{r['line_end']}"
        cite = f"{r['cite']}:{lines}"
        hits.append(
            {
                "path": r["path"],
                "cite": cite,
                "lines": lines,
                "snippet": r["snippet"],
                "text": r["text"],
                "score": round(r["score"], 4),
            }
        )
    return hits


def indexed_count(store) -> int:
    return store.documents.count()


def tools(ctx: ToolContext) -> list[Tool]:
    store = ctx.store

    def documents_search(query: Annotated[str, Arg("words to look for")]) -> str:
        """Search the user's own documents and files; returns passages with [file:lines] to cite."""
        hits = search(store, query, k=3)
        if hits:
            return "\n\n".join(f"[{h['cite']}]\n{h['text']}" for h in hits)
        if not indexed_count(store):
            return "no documents are indexed yet (the user can run: anima docs index FOLDER)"
        return f"no passage in the user's documents matches '{query}'"

    return [tool(documents_search, triggers=r"\bdocuments?\b|\bdocs?\b|\bfiles?\b|\bmy notes\b|\bfolder\b")]
