"""What every benchmark writes: its results as JSON, with the machine measured on."""

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def write_report(
    path: Path, benchmark: str, device: torch.device, **results: Any
) -> Path:
    """Write `results` to `path` (atomically).

    The benchmark's name and the machine's facts come first, then `results`.
    """
    report = {
        "benchmark": benchmark,
        "device": str(device),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def local_shakespeare() -> Path | None:
    """Tiny Shakespeare on this machine, never downloaded: $GPTLIB_TINYSHAKESPEARE (the
    copy ./dev points at) or ../shared/data/ beside the clone; None if neither."""
    copies = [
        os.environ.get("GPTLIB_TINYSHAKESPEARE", ""),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt",
    ]
    return next((Path(p) for p in copies if p and Path(p).is_file()), None)
