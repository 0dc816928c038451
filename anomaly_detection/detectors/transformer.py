"""A small transformer (PyTorch) forecasting each service's next window.

Input: the last `seq_len` windows' service-normalised features; output: the
next window's features. The score is the forecast error, standardised per
feature on the training residuals and calibrated like the Isolation Forest
(0.5 at the `calibration_quantile` of training errors). It runs on CUDA when
`device="auto"` finds one, else on the CPU; weights, config and training
metrics are saved together so a version can be reloaded and compared.
"""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from anomaly_detection import features
from anomaly_detection.detectors.base import BaseDetector, ramp
from anomaly_detection.detectors.isolation_forest import _result

# The forecast target: everything but the short-term latency median (which is
# itself a smoothed past, not news about this window).
FORECAST_FEATURES = features.MODEL_FEATURES[:5]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` = CUDA when `torch.cuda.is_available()`, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Forecaster(nn.Module):
    def __init__(
        self, n_features: int, seq_len: int, d_model: int, n_heads: int, n_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=2 * d_model, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.inp(x) + self.pos[:, : x.shape[1]])
        return self.out(h[:, -1])


class TransformerDetector(BaseDetector):
    name = "transformer"

    def __init__(
        self,
        *,
        seq_len: int = 16,
        d_model: int = 32,
        n_heads: int = 2,
        n_layers: int = 1,
        dropout: float = 0.0,
        epochs: int = 6,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        max_train_sequences: int = 20000,
        calibration_quantile: float = 0.999,
        min_train_windows: int = 240,
        window: int = 60,
        min_periods: int = 10,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self.seq_len = seq_len
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_train_sequences = max_train_sequences
        self.calibration_quantile = calibration_quantile
        self.min_train_windows = min_train_windows
        self.window = window
        self.min_periods = min_periods
        self.device = device
        self.seed = seed

    # -- sequences ---------------------------------------------------------------
    def _sequences(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs [n, L, F], targets [n, F], usable mask [n]) for every row of the frame."""
        f = features.build(frame, window=self.window, min_periods=self.min_periods)
        x = features.model_matrix(f)[:, : len(FORECAST_FEATURES)]
        usable = f["has_baseline"].to_numpy() & (frame["request_count"] > 0).to_numpy()
        x = np.where(usable[:, None], x, 0.0)
        # Context is clipped to the training range, so the windows after an incident
        # are forecast from a calm past instead of inheriting the incident's error.
        clip = getattr(self, "input_clip_", None)
        ctx = x if clip is None else np.clip(x, -np.asarray(clip), np.asarray(clip))
        n, nf, L = len(x), x.shape[1], self.seq_len
        seqs = np.zeros((n, L, nf), dtype=np.float32)
        services = frame["service"].to_numpy()
        starts = np.r_[0, np.flatnonzero(services[1:] != services[:-1]) + 1, n]
        for a, b in pairwise(starts):
            padded = np.vstack([np.zeros((L, nf)), ctx[a:b]])
            for k in range(L):  # seqs[i, k] = row i - L + k (zeros before the service's first row)
                seqs[a:b, k] = padded[k : k + (b - a)]
        return seqs, x.astype(np.float32), usable

    def _fit(self, history: pd.DataFrame) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.device_ = str(resolve_device(self.device))
        if len(history):
            seqs, targets, usable = self._sequences(history)
        else:  # a fresh platform: nothing to learn yet, but shapes must still line up
            nf = len(FORECAST_FEATURES)
            seqs, targets, usable = (
                np.zeros((0, self.seq_len, nf), np.float32),
                np.zeros((0, nf), np.float32),
                np.zeros(0, bool),
            )
        idx = np.flatnonzero(usable)
        self.input_clip_ = (
            np.maximum(np.quantile(np.abs(targets[idx]), 0.995, axis=0), 0.1).tolist()
            if len(idx)
            else [1.0] * len(FORECAST_FEATURES)
        )
        seqs = np.clip(
            seqs, -np.asarray(self.input_clip_, dtype=np.float32), np.asarray(self.input_clip_, dtype=np.float32)
        )
        self.n_train_ = int(len(idx))
        self.ready_ = self.n_train_ >= self.min_train_windows
        self.training_metrics_ = {"n_train": self.n_train_, "device": self.device_}
        if not self.ready_:
            self.model_ = None
            return
        if len(idx) > self.max_train_sequences:
            idx = np.sort(rng.choice(idx, self.max_train_sequences, replace=False))
        n_val = max(1, len(idx) // 10)
        val_idx, train_idx = idx[-n_val:], idx[:-n_val]
        device = torch.device(self.device_)
        model = _Forecaster(targets.shape[1], self.seq_len, self.d_model, self.n_heads, self.n_layers, self.dropout).to(
            device
        )
        opt = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        xs, ys = torch.from_numpy(seqs), torch.from_numpy(targets)
        gen = torch.Generator().manual_seed(self.seed)
        started, losses = time.perf_counter(), []
        for _ in range(self.epochs):
            model.train()
            perm = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=gen)]
            total = 0.0
            for b in range(0, len(perm), self.batch_size):
                batch = perm[b : b + self.batch_size]
                xb, yb = xs[batch].to(device), ys[batch].to(device)
                loss = nn.functional.mse_loss(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            losses.append(total / max(len(perm), 1))
        self.model_ = model.eval()
        resid = self._residuals(seqs[idx], targets[idx])
        self.resid_scale_ = np.maximum(np.quantile(np.abs(resid), 0.9, axis=0), 0.05).astype(np.float32)
        err = self._error(resid)
        self.center_ = float(np.median(err))
        self.edge_ = float(max(np.quantile(err, self.calibration_quantile), self.center_ + 1e-6))
        val_loss = float(np.mean(self._residuals(seqs[val_idx], targets[val_idx]) ** 2))
        self.training_metrics_.update(
            {
                "epochs": self.epochs,
                "train_loss": [round(v, 6) for v in losses],
                "val_mse": round(val_loss, 6),
                "train_seconds": round(time.perf_counter() - started, 2),
                "calibration_center": self.center_,
                "calibration_edge": self.edge_,
            }
        )

    def _residuals(self, seqs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        device = next(self.model_.parameters()).device
        out = []
        with torch.no_grad():
            for b in range(0, len(seqs), 4096):
                out.append(self.model_(torch.from_numpy(seqs[b : b + 4096]).to(device)).cpu().numpy())
        pred = np.vstack(out) if out else np.empty_like(targets)
        return targets - pred

    def _error(self, resid: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean((resid / self.resid_scale_) ** 2, axis=1))

    def _evaluate(self, frame: pd.DataFrame) -> pd.DataFrame:
        n = len(frame)
        if not getattr(self, "ready_", False):
            return pd.DataFrame(
                {"score": np.zeros(n), "anomaly_type": [None] * n, "baseline": [{}] * n, "observed": [{}] * n}
            )
        seqs, targets, usable = self._sequences(frame)
        resid = self._residuals(seqs, targets)
        score = ramp(self._error(resid), self.center_, self.edge_, 2 * self.edge_ - self.center_)
        score[~usable] = 0.0
        return _result(score, resid, self.resid_scale_, FORECAST_FEATURES)

    # -- persistence -------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "params": self.get_params(),
            "fitted": {
                "n_train_": self.n_train_,
                "ready_": self.ready_,
                "center_": getattr(self, "center_", None),
                "edge_": getattr(self, "edge_", None),
                "resid_scale_": getattr(self, "resid_scale_", np.ones(len(FORECAST_FEATURES))).tolist(),
                "input_clip_": list(self.input_clip_),
                "services_": self.services_,
            },
            "history_": self.history_.to_dict("list"),
        }
        torch.save(
            {"state": state, "weights": self.model_.state_dict() if self.model_ is not None else None},
            path / "model.pt",
        )
        (path / "params.json").write_text(json.dumps(self.get_params(), indent=2))
        (path / "training_metrics.json").write_text(json.dumps(self.training_metrics_, indent=2))

    @classmethod
    def load(cls, path: Path, device: str | None = None) -> TransformerDetector:
        blob = torch.load(Path(path) / "model.pt", map_location="cpu", weights_only=False)
        state = blob["state"]
        params = dict(state["params"])
        if device is not None:
            params["device"] = device
        det = cls(**params)
        for k, v in state["fitted"].items():
            setattr(det, k, v)
        det.resid_scale_ = np.asarray(det.resid_scale_, dtype=np.float32)
        det.history_ = features.clean(pd.DataFrame(state["history_"])) if state["history_"] else pd.DataFrame()
        det.device_ = str(resolve_device(det.device))
        det.is_fitted_ = True
        det.training_metrics_ = json.loads((Path(path) / "training_metrics.json").read_text())
        det.model_ = None
        if blob["weights"] is not None:
            model = _Forecaster(
                len(FORECAST_FEATURES), det.seq_len, det.d_model, det.n_heads, det.n_layers, det.dropout
            )
            model.load_state_dict(blob["weights"])
            det.model_ = model.to(torch.device(det.device_)).eval()
        return det
