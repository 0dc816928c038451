"""What the API says about the served model (/api/tags, /api/ps, /api/show) and what a request may ask."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from llm.model_files import ModelFileError, get_spec

SERVER_VERSION = "0.1.0"


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (MODEL_SERVER_* settings)."""

    max_body_bytes: int = 1024 * 1024
    max_prompt_chars: int = 32_768

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(settings.model_server_max_body_bytes, settings.model_server_max_prompt_chars)


class ModelInfo:
    """What /api/tags, /api/ps and /api/show say about the served model."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = Path(path)
        try:
            self.spec = get_spec(name)
        except ModelFileError:
            self.spec = None
        stat = self.path.stat()
        self.size = stat.st_size
        self.modified_at = datetime.fromtimestamp(stat.st_mtime, UTC).isoformat().replace("+00:00", "Z")
        self.digest = self.spec.sha256 if self.spec and self.path.name == self.spec.file_name else ""

    def matches(self, requested: str) -> bool:
        requested = (requested or "").strip()
        bare = requested[: -len(":latest")] if requested.endswith(":latest") else requested
        return bare in (self.name, self.name.removesuffix(":latest"))

    def details(self) -> dict:
        spec = self.spec
        return {
            "parent_model": "",
            "format": "gguf",
            "family": spec.family if spec else "",
            "families": [spec.family] if spec else [],
            "parameter_size": spec.parameter_size if spec else "",
            "quantization_level": spec.quantization if spec else "",
        }

    def listing(self) -> dict:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }
