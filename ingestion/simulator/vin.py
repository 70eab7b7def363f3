"""Vehicle identification numbers (ISO 3779) for simulated cars: plausible, valid, reproducible."""

from __future__ import annotations

import numpy as np

VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # ISO 3779: no I, O, Q
_VIN_VALUES = dict(zip("ABCDEFGHJKLMNPRSTUVWXYZ", "12345678123457923456789", strict=True))  # ISO 3779 transliteration
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    """The 9th character of a 17-character VIN (North American check digit)."""
    total = sum(int(c if c.isdigit() else _VIN_VALUES[c]) * w for c, w in zip(vin, _VIN_WEIGHTS, strict=True))
    return "X" if total % 11 == 10 else str(total % 11)


def make_vin(rng: np.random.Generator, wmi: str) -> str:
    """A plausible VIN: maker code, vehicle descriptor, check digit, 2023-25 model year, plant, serial."""
    vds = "".join(VIN_CHARS[int(i)] for i in rng.integers(len(VIN_CHARS), size=5))
    tail = "PRS"[int(rng.integers(3))] + VIN_CHARS[int(rng.integers(23))] + f"{int(rng.integers(1_000_000)):06d}"
    draft = wmi + vds + "0" + tail
    return wmi + vds + vin_check_digit(draft) + tail
