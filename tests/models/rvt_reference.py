"""The reference listing of RVT-S gen1's state dict (the key listing RVT's own code gives, stored in tests/models/data), parsed for tests."""
from __future__ import annotations

from pathlib import Path

import torch

STATE_DICT_FILE = Path(__file__).parent / "data" / "rvt-s-gen1-state-dict.txt"
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def parse_state_dict_file(path: Path = STATE_DICT_FILE) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) rows of the reference listing, in file order."""
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, rest = line.split(maxsplit=1)
        shape_str, dtype_str = rest.rsplit(maxsplit=1)
        inner = shape_str.strip().strip("()").replace(" ", "")
        shape = tuple(int(v) for v in inner.split(",") if v)
        rows.append((key, shape, DTYPES[dtype_str]))
    return rows
