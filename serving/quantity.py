"""Kubernetes resource quantities (``500m``, ``1.5``, ``128Mi``, ``1G``) as numbers.

Only what ``resources.limits`` needs: CPU in cores and memory in bytes, for the container
runtime's ``--cpus`` and ``--memory``. ``ValueError`` names the quantity when it is not one.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][-+]?[0-9]+|[numkKMGTPE]i?|m)?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value (``"500m"`` → 0.5, ``"1Ki"`` → 1024); ``ValueError`` otherwise."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None or match.group(2) in ("ni", "ui", "mi", "ki"):
        raise ValueError(f'invalid quantity "{value}": want a number with an optional suffix '
                         "(500m, 1.5, 128Mi, 1G)")  # fmt: skip
    number, suffix = match.group(1), match.group(2) or ""
    try:
        base = Decimal(number)
    except InvalidOperation:
        raise ValueError(f'invalid quantity "{value}"') from None
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return base * Decimal(10) ** int(suffix[1:])
    return base * _SUFFIX[suffix]


def cpu_cores(value: str | int | float) -> float:
    """CPU as cores: ``"250m"`` → 0.25."""
    return float(parse_quantity(value))


def memory_bytes(value: str | int | float) -> int:
    """Memory as bytes, rounded up: ``"128Mi"`` → 134217728."""
    amount = parse_quantity(value)
    return int(amount.to_integral_value(rounding="ROUND_CEILING"))
