"""The guard's sentence embedder: MiniLM's own weights (the GGUF file) run by ONNX Runtime,
its matrix products in int8.

Why: the guard's fast layer embeds a message and up to four pieces of it, and llama.cpp
takes ~0.35 ms a token for MiniLM on 2 cores (its graph for a small BERT is mostly
overhead): a 400-character message cost 50-75 ms. ONNX Runtime with the weights' matrix
products in int8 (per channel, activations quantised as they come; the attention's own
products stay float) reads the same tokens 4-6x faster. The vectors are not the same:
cosine 0.98-0.995 to llama.cpp's on chat text, so the guard's heads are trained on these
(`EMBEDDER`, in their manifest; `anima guard train` again after a change). Memory keeps
llama.cpp's exact vectors (what its stores hold).

The ONNX file is built from the GGUF once, next to it (~10 s), and read from then on.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from anima.errors import ModelCorrupt, ModelUnavailable

EMBEDDER = "minilm-onnx-int8-1"  # in the heads' manifest: heads trained on other vectors are stale
MAX_TOKENS = 512  # MiniLM's positions; a longer text keeps its start, as llama.cpp's `truncate`


def onnx_path(gguf: Path) -> Path:
    return gguf.with_name(f"{gguf.stem}.{EMBEDDER}.onnx")


def build(gguf: Path, out: Path) -> None:
    """The BERT encoder of `gguf` (mean-pooled, L2-normalised) as an ONNX graph, its
    weight products quantised to int8, written to `out`."""
    import gguf as gguf_lib
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        reader = gguf_lib.GGUFReader(str(gguf))
    except (ValueError, OSError) as exc:
        raise ModelCorrupt(f"cannot read {gguf}: {exc}", "pull the embedder again: `anima models pull minilm`") from exc
    field = lambda key: reader.fields[key].parts[reader.fields[key].data[0]][0]
    hidden, heads = int(field("bert.embedding_length")), int(field("bert.attention.head_count"))
    layers, eps = int(field("bert.block_count")), float(field("bert.attention.layer_norm_epsilon"))
    t = {
        x.name: np.asarray(x.data).astype(np.float32).reshape([int(s) for s in reversed(x.shape)])
        for x in reader.tensors
    }
    inits, nodes = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    f32 = lambda v: np.asarray(v, np.float32)
    const("heads_shape", np.array([0, heads, hidden // heads], np.int64))
    const("flat_shape", np.array([0, hidden], np.int64))
    const("axis0", np.array([0], np.int64))
    const("scale", f32(1 / np.sqrt(hidden // heads)))
    const("half", f32(0.5))
    const("one", f32(1.0))
    const("rsqrt2", f32(1 / np.sqrt(2)))
    const("thirds", np.array([hidden] * 3, np.int64))
    x = node("Gather", [const("tok", t["token_embd.weight"]), "ids"], "tok_e")
    x = node("Add", [x, node("Gather", [const("pos", t["position_embd.weight"]), "positions"], "pos_e")], "sum_e")
    x = node("Add", [x, const("typ", t["token_types.weight"][0])], "emb")

    def norm(x: str, name: str, out: str) -> str:
        weight, bias = const(name + ".weight", t[name + ".weight"]), const(name + ".bias", t[name + ".bias"])
        return node("LayerNormalization", [x, weight, bias], out, epsilon=eps)

    def linear(x: str, weight, bias, out: str) -> str:  # named by `out`: the attention's are left unquantised
        return node("Add", [node("MatMul", [x, const(out + "_w", weight)], out + "_m"), const(out + "_b", bias)], out)

    x = norm(x, "token_embd_norm", "x")
    for i in range(layers):
        p = f"l{i}_"
        g = lambda name: t[f"blk.{i}.{name}"]  # noqa: B023 - used within this iteration only
        qkv_w = np.concatenate([g("attn_q.weight").T, g("attn_k.weight").T, g("attn_v.weight").T], 1)
        qkv_b = np.concatenate([g("attn_q.bias"), g("attn_k.bias"), g("attn_v.bias")])
        qkv = linear(x, qkv_w, qkv_b, p + "qkv")
        nodes.append(helper.make_node("Split", [qkv, "thirds"], [p + "q", p + "k", p + "v"], name=p + "split", axis=1))
        q = node("Transpose", [node("Reshape", [p + "q", "heads_shape"], p + "qr")], p + "qt", perm=[1, 0, 2])
        k = node("Transpose", [node("Reshape", [p + "k", "heads_shape"], p + "kr")], p + "kt", perm=[1, 2, 0])
        v = node("Transpose", [node("Reshape", [p + "v", "heads_shape"], p + "vr")], p + "vt", perm=[1, 0, 2])
        a = node("Softmax", [node("Mul", [node("MatMul", [q, k], p + "qk"), "scale"], p + "qks")], p + "att", axis=-1)
        a = node("Transpose", [node("MatMul", [a, v], p + "av")], p + "avt", perm=[1, 0, 2])
        o = linear(
            node("Reshape", [a, "flat_shape"], p + "avr"), g("attn_output.weight").T, g("attn_output.bias"), p + "o"
        )
        x = norm(node("Add", [x, o], p + "r1"), f"blk.{i}.attn_output_norm", p + "x1")
        u = linear(x, g("ffn_up.weight").T, g("ffn_up.bias"), p + "up")
        erf = node("Erf", [node("Mul", [u, "rsqrt2"], p + "us")], p + "erf")
        u = node("Mul", [node("Mul", [u, "half"], p + "uh"), node("Add", ["one", erf], p + "u1")], p + "gelu")
        d = linear(u, g("ffn_down.weight").T, g("ffn_down.bias"), p + "down")
        x = norm(node("Add", [x, d], p + "r2"), f"blk.{i}.layer_output_norm", p + "x2")
    mean = node("Unsqueeze", [node("ReduceMean", [x, "axis0"], "mean", keepdims=0), "axis0"], "mean2")
    node("LpNormalization", [mean], "vector", axis=1, p=2)
    graph = helper.make_graph(
        nodes,
        "minilm",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["n"]) for n in ("ids", "positions")],
        [helper.make_tensor_value_info("vector", TensorProto.FLOAT, [1, hidden])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    out.parent.mkdir(parents=True, exist_ok=True)
    plain = out.with_name(out.name + f".{os.getpid()}.float")
    part = out.with_name(out.name + f".{os.getpid()}.part")
    root = logging.getLogger()  # the quantiser warns on the root logger about a step it does not need
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        onnx.save(model, str(plain))
        attention = [f"l{i}_{n}" for i in range(layers) for n in ("qk", "av")]  # products of two activations
        quantize_dynamic(
            str(plain),
            str(part),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=attention,
            per_channel=True,
        )
        part.replace(out)
    finally:
        root.setLevel(level)
        plain.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


class OnnxEmbedder:
    """Sentence embeddings of a GGUF MiniLM through ONNX Runtime (int8 products)."""

    _building = threading.Lock()

    def __init__(self, gguf: Path, name: str | None = None, n_threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelUnavailable("onnxruntime is not installed", "run `pip install -e .` in anima's folder") from exc
        from anima.models.llama_cpp import _load

        self.path = Path(gguf)
        self.name = name or self.path.stem
        self.file = onnx_path(self.path)
        with self._building:
            if not self.file.is_file():
                build(self.path, self.file)
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):  # llama.cpp warns of a context a vocabulary never uses
            self.tokenizer = _load(self.path, vocab_only=True, verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads or 2
        options.inter_op_num_threads = 1
        # no busy-waiting threads between calls: the chat model may be decoding beside it
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelCorrupt(f"cannot load {self.file}: {exc}", f"delete {self.file}; it is built again") from exc
        self.dim = int(self.session.get_outputs()[0].shape[1])
        self.lock = threading.Lock()

    def ids(self, text: str) -> list[int]:
        ids = self.tokenizer.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return ids if len(ids) <= MAX_TOKENS else ids[: MAX_TOKENS - 1] + ids[-1:]

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        out = []
        with self.lock:
            for text in texts:
                ids = np.asarray(self.ids(text), np.int64)
                feed = {"ids": ids, "positions": np.arange(len(ids), dtype=np.int64)}
                out.append(self.session.run(None, feed)[0][0].tolist())
        return out
