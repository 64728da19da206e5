"""Convert a sentence-transformers BERT (all-MiniLM-L6-v2) from Hugging Face files to GGUF.

Why: the default install runs embeddings through llama-cpp-python, which loads
GGUF files only, and we do not want torch, transformers or safetensors in the
default install just to convert one small model once. So this module reads the
safetensors file by hand with numpy and writes GGUF with the `gguf` package,
laid out the way llama.cpp's own converter (convert_hf_to_gguf.py, BertModel)
lays out a BERT: arch "bert", a WordPiece vocab rewritten to "phantom space"
form, mean pooling, non-causal attention.

    model.safetensors  8-byte little-endian header length, JSON header, raw data
    config.json        sizes of the network
    vocab.txt          one WordPiece token per line, line number = token id
    tokenizer_config.json, 1_Pooling/config.json   optional

2-D weight matrices are stored as F16; 1-D tensors (biases, norms) and the two
small embedding tables that are added, not multiplied (positions, token types),
stay F32, as llama.cpp's converter does. The output is byte-for-byte
deterministic: no timestamps, no paths, a fixed order of keys and tensors.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import gguf
import numpy as np

from anima.errors import ModelCorrupt

_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}

# Hugging Face BERT tensor name -> (GGUF tensor kind, stored as F16?)
_EMBEDDINGS = {
    "embeddings.word_embeddings.weight": (gguf.MODEL_TENSOR.TOKEN_EMBD, "weight", True),
    "embeddings.token_type_embeddings.weight": (gguf.MODEL_TENSOR.TOKEN_TYPES, "weight", False),
    "embeddings.position_embeddings.weight": (gguf.MODEL_TENSOR.POS_EMBD, "weight", False),
    "embeddings.LayerNorm.weight": (gguf.MODEL_TENSOR.TOKEN_EMBD_NORM, "weight", False),
    "embeddings.LayerNorm.bias": (gguf.MODEL_TENSOR.TOKEN_EMBD_NORM, "bias", False),
}
_LAYER = {
    "attention.self.query": gguf.MODEL_TENSOR.ATTN_Q,
    "attention.self.key": gguf.MODEL_TENSOR.ATTN_K,
    "attention.self.value": gguf.MODEL_TENSOR.ATTN_V,
    "attention.output.dense": gguf.MODEL_TENSOR.ATTN_OUT,
    "attention.output.LayerNorm": gguf.MODEL_TENSOR.ATTN_OUT_NORM,
    "intermediate.dense": gguf.MODEL_TENSOR.FFN_UP,
    "output.dense": gguf.MODEL_TENSOR.FFN_DOWN,
    "output.LayerNorm": gguf.MODEL_TENSOR.LAYER_OUT_NORM,
}
_SPECIALS = {
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "unk_token": "[UNK]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}


def _corrupt(path: Path, what: str) -> ModelCorrupt:
    return ModelCorrupt(f"{path}: {what}", "re-download the model files and convert again")


def _read_json(path: Path, required: bool = True) -> dict:
    if not path.is_file():
        if required:
            raise _corrupt(path, "file is missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise _corrupt(path, "expected a JSON object")
    return data


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor in the file as float32 (integer tensors are skipped)."""
    if not path.is_file():
        raise _corrupt(path, "file is missing")
    raw = path.read_bytes()
    try:
        (n,) = struct.unpack_from("<Q", raw, 0)
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (struct.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"unreadable safetensors header ({e})") from None
    tensors = {}
    try:
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] not in _DTYPES:
                continue  # e.g. embeddings.position_ids (I64): not a weight
            dtype = np.dtype(_DTYPES[info["dtype"]])
            begin, end = (8 + n + int(o) for o in info["data_offsets"])
            count = int(np.prod(info["shape"], dtype=np.int64))
            if not 8 + n <= begin <= end <= len(raw) or end - begin != count * dtype.itemsize:
                raise ValueError(f"tensor {name} lies outside the file or has the wrong size")
            a = np.frombuffer(raw, dtype=dtype, count=count, offset=begin)
            if info["dtype"] == "BF16":
                a = (a.astype(np.uint32) << 16).view(np.float32)
            tensors[name.removeprefix("bert.")] = a.astype(np.float32).reshape(info["shape"])
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise _corrupt(path, f"malformed safetensors header ({e})") from None
    return tensors


def _read_vocab(path: Path) -> list[str]:
    if not path.is_file():
        raise _corrupt(path, "file is missing")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): tokens may hold \x1c etc.
    except UnicodeDecodeError:
        raise _corrupt(path, "not UTF-8") from None
    return lines[:-1] if lines[-1] == "" else lines


def convert_bert_to_gguf(src: Path, dest: Path) -> None:
    (
        """src: folder with model.safetensors, config.json, vocab.txt (and optionally 1_Pooling/config.json). """
        """Writes dest atomically (dest + '.part' then rename)."""
    )
    src, dest = Path(src), Path(dest)
    config = _read_json(src / "config.json")
    tok_config = _read_json(src / "tokenizer_config.json", required=False)
    pooling = _read_json(src / "1_Pooling" / "config.json", required=False)
    vocab = _read_vocab(src / "vocab.txt")
    weights = _read_safetensors(src / "model.safetensors")

    try:
        n_layer, n_embd = int(config["num_hidden_layers"]), int(config["hidden_size"])
        n_head, n_ff = int(config["num_attention_heads"]), int(config["intermediate_size"])
        n_ctx, eps = int(config["max_position_embeddings"]), float(config.get("layer_norm_eps", 1e-12))
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(src / "config.json", f"missing or bad BERT setting {e}") from None
    if config.get("vocab_size", len(vocab)) != len(vocab):
        raise _corrupt(src / "vocab.txt", f"{len(vocab)} tokens, config.json says {config['vocab_size']}")

    # Which pooling the sentence-transformers model applies after the encoder.
    if pooling.get("pooling_mode_cls_token"):
        pooling_type = gguf.PoolingType.CLS
    elif pooling.get("pooling_mode_lasttoken"):
        pooling_type = gguf.PoolingType.LAST
    else:
        pooling_type = gguf.PoolingType.MEAN

    # Tensors in a fixed order: embeddings, then each layer.
    plan = [(hf, gguf.TENSOR_NAMES[kind] + "." + suffix, f16) for hf, (kind, suffix, f16) in _EMBEDDINGS.items()]
    for i in range(n_layer):
        for part, kind in _LAYER.items():
            name = gguf.TENSOR_NAMES[kind].format(bid=i)
            plan.append((f"encoder.layer.{i}.{part}.weight", f"{name}.weight", not part.endswith("LayerNorm")))
            plan.append((f"encoder.layer.{i}.{part}.bias", f"{name}.bias", False))
    missing = [hf for hf, _, _ in plan if hf not in weights]
    if missing:
        raise _corrupt(src / "model.safetensors", f"no tensor {missing[0]} ({len(missing)} missing)")
    if weights["embeddings.word_embeddings.weight"].shape != (len(vocab), n_embd):
        raise _corrupt(src / "model.safetensors", "word embeddings do not match vocab.txt and hidden_size")

    # llama.cpp's WordPiece tokenizer matches "\u2581word" at the start of a word and
    # plain pieces after it, so "##ing" becomes "ing" and "walk" becomes "\u2581walk".
    special_ids = {}
    for key, default in _SPECIALS.items():
        token = tok_config.get(key, default)
        token = token.get("content", default) if isinstance(token, dict) else token
        if token not in vocab:
            raise _corrupt(src / "vocab.txt", f"special token {token!r} is not in the vocabulary")
        special_ids[key] = vocab.index(token)
    control = set(special_ids.values())
    tokens = [t if i in control else t[2:] if t.startswith("##") else "\u2581" + t for i, t in enumerate(vocab)]
    token_types = [gguf.TokenType.CONTROL if i in control else gguf.TokenType.NORMAL for i in range(len(vocab))]

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(part, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_context_length(n_ctx)
        writer.add_embedding_length(n_embd)
        writer.add_feed_forward_length(n_ff)
        writer.add_block_count(n_layer)
        writer.add_head_count(n_head)
        writer.add_layer_norm_eps(eps)
        writer.add_causal_attention(False)
        writer.add_pooling_type(pooling_type)

        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")  # llama.cpp reads pre-tokenizers for BPE vocabs only
        writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
        writer.add_token_list(tokens)
        writer.add_token_types(token_types)
        writer.add_bos_token_id(special_ids["cls_token"])
        writer.add_eos_token_id(special_ids["sep_token"])
        writer.add_unk_token_id(special_ids["unk_token"])
        writer.add_sep_token_id(special_ids["sep_token"])
        writer.add_pad_token_id(special_ids["pad_token"])
        writer.add_mask_token_id(special_ids["mask_token"])
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(True)
        # BertNormalizer options (keys spelt out: older gguf releases lack the constants)
        writer.add_bool("tokenizer.ggml.normalizer.lowercase", bool(tok_config.get("do_lower_case", True)))
        if tok_config.get("strip_accents") is not None:
            writer.add_bool("tokenizer.ggml.normalizer.strip_accents", bool(tok_config["strip_accents"]))

        for hf, name, f16 in plan:
            writer.add_tensor(name, weights[hf].astype(np.float16 if f16 else np.float32))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(part, dest)
    finally:
        writer.close()  # a no-op after the close above
        part.unlink(missing_ok=True)
