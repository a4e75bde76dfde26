"""Seeded Faker content, generated in the driver only (the child never imports Faker).

Everything here is a pure function of (seed, salt): a failing test is reproduced from the
printed seed. Faker's output for a seed is stable for a given Faker version.

Flavours choose how many multi-byte characters the text carries, because truncation at
4096 bytes must be exercised on 2-, 3- and 4-byte UTF-8 characters:
`ascii` (en_US only), `mixed` (mostly en_US, some Cyrillic/Greek/Japanese/emoji) and
`unicode` (every sentence mixes 2-, 3- and 4-byte characters).
"""

from __future__ import annotations

import random
from functools import cache
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from faker import Faker

Flavour: TypeAlias = Literal["ascii", "mixed", "unicode"]
FLAVOURS: tuple[Flavour, ...] = ("ascii", "mixed", "unicode")

_MULTIBYTE_LOCALES = ("ru_RU", "el_GR", "ja_JP", "zh_CN")


def derive_seed(seed: int, *salt: object) -> int:
    """A stable 63-bit seed for one purpose (`salt`) under `seed`; independent of PYTHONHASHSEED."""
    return random.Random(repr((seed, *salt))).getrandbits(63)


@cache
def _faker(locale: str) -> Faker:
    from faker import Faker  # deferred: importing Faker costs ~0.3 s

    return Faker(locale)


def _clean(text: str) -> str:
    return " ".join(text.split())  # no newline, CR or tab can sneak into a "line"


def sentence(seed: int, salt: object = 0, flavour: Flavour = "mixed") -> str:
    """One generated sentence for (seed, salt)."""
    rng = random.Random(derive_seed(seed, "sentence", salt))
    fake = _faker("en_US")
    fake.seed_instance(rng.getrandbits(63))
    if flavour == "ascii" or (flavour == "mixed" and rng.random() < 0.75):
        return _clean(fake.sentence(nb_words=rng.randint(4, 12)))
    other = _faker(rng.choice(_MULTIBYTE_LOCALES))
    other.seed_instance(rng.getrandbits(63))
    if flavour == "mixed":
        return _clean(f"{other.sentence()} {fake.emoji()}")
    parts = [_faker(loc) for loc in _MULTIBYTE_LOCALES]
    for fk in parts:
        fk.seed_instance(rng.getrandbits(63))
    words = [p.word() for p in parts] + [fake.emoji(), fake.emoji(), fake.word()]
    rng.shuffle(words)
    return _clean(" ".join(words))


def corpus(seed: int, size: int = 16, flavour: Flavour = "mixed") -> tuple[str, ...]:
    """`size` sentences the child cycles through for flood/interleave filler."""
    return tuple(sentence(seed, ("corpus", i), flavour) for i in range(size))


def binary_records(seed: int, count: int, max_len: int = 60) -> list[bytes]:
    """Byte strings of hostile content: invalid UTF-8, NUL, lone CR, CRLF endings.

    Each record ends in `\\n` (sometimes `\\r\\n`) and holds no other newline.
    """
    rng = random.Random(derive_seed(seed, "binary"))
    nasty = [
        b"\xff",
        b"\xfe",
        b"\x80",
        b"\xc3",
        b"\xe3\x81",
        b"\xf0\x9f\x98",
        b"\x00",
        b"\r",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        "é".encode(),
        "日本".encode(),
        "😀".encode(),
    ]
    out: list[bytes] = []
    for _ in range(count):
        parts: list[bytes] = []
        target = rng.randint(1, max_len)
        while sum(map(len, parts)) < target:
            if rng.random() < 0.4:
                parts.append(rng.choice(nasty))
            else:
                parts.append(bytes(rng.randint(0x20, 0x7E) for _ in range(rng.randint(1, 8))))
        out.append(b"".join(parts) + (b"\r\n" if rng.random() < 0.3 else b"\n"))
    return out
