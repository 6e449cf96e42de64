"""Facts about the machine a report was made on: CPU, its int8 instructions, and input hashes."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

# /proc/cpuinfo flag -> the name people know it by; these decide how fast int8 kernels run.
INT8_FLAGS = {
    "avx2": "AVX2",
    "avx512bw": "AVX-512 BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_int8": "AMX-INT8",
    "asimddp": "Arm dot product",
    "i8mm": "Arm I8MM",
}


def cpu_description() -> tuple[str, list[str]]:
    """The CPU model name and the int8-relevant instruction sets it reports."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [name for flag, name in INT8_FLAGS.items() if flag in flags]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
