"""What every benchmark writes: its results as JSON, with the machine measured on."""

import json
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
