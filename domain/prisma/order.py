"""The order in which Prisma applies migration directories: JavaScript's `localeCompare`.

Contract:

    REFERENCE_ICU_MAJOR: int                       # the ICU major version node 20/22 bundle (78)
    ICU_VERSION: str                               # the ICU this process collates with
    def prisma_compare(a: str, b: str, locale: str = "") -> int   # -1 / 0 / 1
    def prisma_sort_key(name: str, locale: str = "") -> PrismaSortKey   # for sorted(), min(), max(), <
    def prisma_sorted(names: Iterable[str], locale: str = "") -> list[str]

What Prisma does (prisma 6.19.3, `build/index.js`, function `sc()`): it reads the folder with
`fs.promises.readdir(dir, {withFileTypes: true})`, keeps the directories and sorts them with
`(a, b) => a.path.localeCompare(b.path)`. Three things follow, and each one is reproduced here:

1. `localeCompare` without a locale argument is V8's `Intl.Collator` for the process's default
   locale, at default options: ICU collation at tertiary strength with normalization on (V8 sets
   UCOL_NORMALIZATION_MODE, so canonically equivalent names compare equal). Under LANG=C, C.UTF-8,
   POSIX or en_* that locale is `en-US`, whose collation is CLDR's root collation. This is what
   `locale=""` gives. Prisma run under another LANG sorts by that language's rules (under
   sv_SE, `ä` comes after `z`; under tr_TR, `ı` comes before `i`); pass that BCP 47 tag as
   `locale` to follow it.
2. `Array.prototype.sort` is stable, and libuv's readdir hands the names over sorted by `strcmp`,
   i.e. by their bytes. Names the collator calls equal (NFC vs NFD spellings, or names that
   differ only by ignorable characters such as U+200B) therefore keep byte order, and so do
   prisma_compare and prisma_sorted.
3. The collation data is the one inside ICU, and it changes between ICU versions. ICU 72
   (Debian 12's libicu) differs from node 20's ICU 78 on ordinary punctuation: with ICU 78 `"`
   and `„` share a primary weight, so `'"$'.localeCompare('„')` is 1 there and -1 with ICU 72.
   ICU 77 differs on Tangut. So this module needs ICU >= REFERENCE_ICU_MAJOR, and refuses to
   load with an older one rather than order a deploy differently from Prisma. A hand-written
   approximation is not an option either: the order decides which migration runs first.

The ICU comes from the `icukit-pyicu` wheel (PyICU with ICU 78 built in), a hard dependency.
tests/test_prisma_order.py checks the result against node itself, on thousands of random names,
and against the real Prisma CLI's apply order.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cmp_to_key, lru_cache, total_ordering

REFERENCE_ICU_MAJOR = 78

try:
    import icu
except ImportError:  # pragma: no cover - an installation error, reported as one sentence
    raise ImportError(
        "domain.prisma.order needs ICU collation: install the Python package icukit-pyicu "
        f"(PyICU with ICU {REFERENCE_ICU_MAJOR}), listed in pyproject.toml"
    ) from None

ICU_VERSION: str = icu.ICU_VERSION

if int(ICU_VERSION.split(".")[0]) < REFERENCE_ICU_MAJOR:  # pragma: no cover - installation error
    raise ImportError(
        f"domain.prisma.order needs ICU {REFERENCE_ICU_MAJOR} or newer to sort migrations as node does, "
        f"but the installed PyICU uses ICU {ICU_VERSION}; install icukit-pyicu instead of PyICU"
    )

@lru_cache(maxsize=16)
def _collator(locale: str) -> icu.Collator:
    """One configured collator per locale. It is configured before anyone sees it and never
    changed afterwards: ICU collators are safe to share for reading (getSortKey is const)."""
    where = icu.Locale.getRoot() if not locale else icu.Locale.forLanguageTag(locale)
    collator = icu.Collator.createInstance(where)
    # V8's Intl.Collator turns normalization on (ECMA-402: canonically equivalent strings
    # compare equal); ICU's default is off, which orders bare combining marks differently.
    collator.setAttribute(icu.UCollAttribute.NORMALIZATION_MODE, icu.UCollAttributeValue.ON)
    return collator


def _text_and_bytes(name: str) -> tuple[str, bytes]:
    """What node collates and what readdir sorted by. A name that is not valid UTF-8 on disk
    (surrogate escapes from os.listdir) is collated as node reads it, with U+FFFD."""
    try:
        return name, name.encode("utf-8")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "replace"), raw


def prisma_compare(a: str, b: str, locale: str = "") -> int:
    """-1, 0 or 1, as Prisma orders the two directory names: `a.localeCompare(b)`, then bytes.

    ICU's compare(), which V8 calls, is used rather than sort keys: the two disagree on some
    non-canonically-ordered combining sequences under tailorings (seen with tr: a c-acute
    followed by a diaeresis and a cedilla)."""
    (ta, ra), (tb, rb) = _text_and_bytes(a), _text_and_bytes(b)
    c = _collator(locale).compare(ta, tb)
    if c:
        return -1 if c < 0 else 1
    return (ra > rb) - (ra < rb)


@total_ordering
class PrismaSortKey:
    """Orders names with prisma_compare; usable with sorted(), min(), max() and `<`."""

    __slots__ = ("name", "locale")

    def __init__(self, name: str, locale: str = "") -> None:
        self.name = name
        self.locale = locale

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrismaSortKey) and self.name == other.name

    def __lt__(self, other: PrismaSortKey) -> bool:
        return prisma_compare(self.name, other.name, self.locale) < 0

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"PrismaSortKey({self.name!r})"


def prisma_sort_key(name: str, locale: str = "") -> PrismaSortKey:
    """A key that orders directory names exactly as Prisma's CLI does (see the module docstring)."""
    return PrismaSortKey(name, locale)


def prisma_sorted(names: Iterable[str], locale: str = "") -> list[str]:
    """The names in the order Prisma applies them.

    Done the way node does it, step for step: readdir's byte order first, then a stable sort
    with the collator alone. CPython's sort and V8's are the same TimSort, so even where ICU's
    comparison is not transitive the outcome is node's."""
    by_bytes = sorted(names, key=lambda n: _text_and_bytes(n)[1])
    collator = _collator(locale)
    texts = {n: _text_and_bytes(n)[0] for n in by_bytes}
    return sorted(by_bytes, key=cmp_to_key(lambda a, b: collator.compare(texts[a], texts[b])))
