"""Sentence embeddings for the knowledge base: all-MiniLM-L6-v2 (int8 ONNX) on the CPU.

The model turns a passage or a caller's question into a 384-dim unit vector, so cosine similarity is
a plain dot product. Mean pooling over the real (non-padding) tokens followed by L2 normalisation is
exactly what sentence-transformers does for this model, so the vectors match the published ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

# The box has 2 cores shared with STT, the LLM and TTS, all running at once during a call. One
# intra-op thread keeps a query embedding (~a few ms) from stealing a core mid-utterance; more
# threads buy almost nothing for a 6-layer model on one short sentence.
ONNX_INTRA_OP_THREADS = 1
# MiniLM was trained on up to 256 word pieces; longer input is silently degraded, so cut it there.
MAX_TOKENS = 256
EMBEDDING_DIM = 384
# Ingest embeds many passages; batching amortises the per-call overhead while bounding padding waste
# and peak memory on a small machine.
BATCH_SIZE = 32


class Embedder:
    """Embeds texts into L2-normalised float32 vectors of shape (n, EMBEDDING_DIM)."""

    def __init__(self, session: ort.InferenceSession, tokenizer: Tokenizer) -> None:
        self._session = session
        self._tokenizer = tokenizer
        # Export variants differ: some MiniLM ONNX files take token_type_ids, some don't. Ask the model.
        self._input_names = {i.name for i in session.get_inputs()}
        self._output_name = session.get_outputs()[0].name

    @classmethod
    def load(cls, folder: Path) -> Embedder:
        """Load `model.onnx` and `tokenizer.json` from `folder` (as returned by `voice.catalogue.ensure`)."""
        folder = Path(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = ONNX_INTRA_OP_THREADS
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(folder / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        # Pad to the longest text in the batch, not to MAX_TOKENS: short queries stay cheap.
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
        return cls(session, tokenizer)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return one unit-length float32 row per text; an empty list gives shape (0, EMBEDDING_DIM)."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        out = [self._embed_batch(texts[i : i + BATCH_SIZE]) for i in range(0, len(texts), BATCH_SIZE)]
        return np.concatenate(out, axis=0)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run([self._output_name], feeds)[0]  # (batch, seq, dim)
        # Mean over real tokens only: padding positions must not dilute short texts.
        weights = mask[:, :, None].astype(np.float32)
        summed = (hidden * weights).sum(axis=1)
        pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
