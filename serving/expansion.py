"""Kubernetes' ``$(VAR)`` expansion for a container's ``command``, ``args`` and ``env`` values.

The rules are the kubelet's: ``$(NAME)`` becomes NAME's value when NAME is defined and stays
as written when it is not; ``$$`` is an escaped ``$`` (so ``$$(NAME)`` yields ``$(NAME)``);
any other ``$`` (including an unclosed ``$(``) is kept literally. Env values are expanded in
order, each seeing only the variables defined before it, as Kubernetes does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """``text`` with every defined ``$(NAME)`` replaced; pure and total (never raises)."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(mapping[name] if name in mapping else text[i : close + 1])
            i = close + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def expand_env(pairs: Iterable[tuple[str, str]], base: Mapping[str, str]) -> dict[str, str]:
    """Env entries in order, each value expanded against ``base`` and the entries before it."""
    env: dict[str, str] = {}
    for name, value in pairs:
        env[name] = expand(value, {**base, **env})
    return env


def expand_all(words: Iterable[str], mapping: Mapping[str, str]) -> tuple[str, ...]:
    """``command``/``args`` words, each expanded against the container's final environment."""
    return tuple(expand(w, mapping) for w in words)
