"""Prisma's folder order (domain.prisma.order) against node itself and against the real Prisma CLI.

node sorts the way Prisma's CLI does: the names become real directories, read back with
`fs.promises.readdir(dir, {withFileTypes: true})`, filtered to directories and sorted with
`localeCompare`, as `sc()` in prisma/build/index.js does. Names are random (fixed seeds) and
mix ASCII, non-ASCII letters, combining marks, ASCII and non-ASCII punctuation, ASCII,
Arabic-Indic, Devanagari and full-width digits, symbols, emoji, full-width forms, other
scripts, spaces, ignorables and any assigned code point.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import unicodedata
from pathlib import Path

import asyncpg
import pytest

from domain.prisma.order import (
    ICU_VERSION,
    prisma_compare,
    prisma_sort_key,
    prisma_sorted,
)
from tests.oracle import prisma

POOLS = {
    "ascii_lower": "abcdefghijklmnopqrstuvwxyz",
    "ascii_upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "ascii_digits": "0123456789",
    "ascii_punct": " !\"#$%&'()*+,-.:;<=>?@[\\]^_`{|}~",
    "latin_letters": "ßæøłđþœÆØŁĐÞŒðÐĳŋſẞ",
    "accented": "éèêëàáâäãåçñüöóòôõíìîïúùûÿýčšžřćńśźżőűāēīōūąęİıÅÉÜ",
    "combining": "\u0301\u0300\u0308\u0327\u030c\u0303\u030a",
    "unicode_punct": "–—‐‑‒―‘’‚‛“”„«»‹›¿¡·•…§¶†‡‰′″、。「」〈〉【】¦¨¯´¸",
    "unicode_digits": "٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹०१२३४५६७८९０１２３４５６７８９¹²³⁴①②⑩ⅫⅣ½¼",
    "symbols": "$€£¥¢©®™°±×÷→←∑√∞♥★☃✓♠≠≤≥µ¤😀🎉🚀",
    "fullwidth": "ＡＢＣＺａｂｃｚ！＿－（）［］＠＃",
    "scripts": "αβγΩΣжЖяЯאבשابت漢字日本한국ひらがなカタカナเแไกขคกำฯअआक्षঅ",
    "spaces_ignorables": "\u00a0\u3000\u200b\u00ad\u200d\u2060\t\n\u0001",
}


def _any_assigned(rng: random.Random) -> str:
    while True:
        ch = chr(rng.randrange(0x20, 0x30000))
        if ch != "/" and unicodedata.category(ch) not in ("Cn", "Cs", "Co"):
            return ch


def random_names(count: int, seed: int, any_code_point: float) -> list[str]:
    """`count` distinct names that are legal directory names; some look like Prisma's
    `<timestamp>_<label>`, some share the same timestamp, some are bare labels."""
    rng = random.Random(seed)
    pools = list(POOLS)
    names: set[str] = set()
    while len(names) < count:
        chosen = rng.sample(pools, rng.randrange(1, 4))
        label = "".join(
            _any_assigned(rng) if rng.random() < any_code_point else rng.choice(POOLS[rng.choice(chosen)])
            for _ in range(rng.randrange(1, 12))
        )
        shape = rng.random()
        if shape < 0.4:
            name = f"2024{rng.randrange(10**9, 10**10)}_{label}"
        elif shape < 0.6:
            name = f"20240101000000_{label}"
        else:
            name = label
        if name not in (".", "..") and len(name.encode()) <= 200:
            names.add(name)
    return sorted(names)  # the order they are created in must not matter


NODE_SORT = r"""
const fs = require('fs'), path = require('path');
const [dir] = process.argv.slice(1);
const names = JSON.parse(fs.readFileSync(0, 'utf8'));
for (const n of names) fs.mkdirSync(path.join(dir, n));
fs.promises.readdir(dir, {withFileTypes: true, recursive: false}).then((entries) => {
  const sorted = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort((a, b) => a.localeCompare(b));
  process.stdout.write(JSON.stringify({sorted, icu: process.versions.icu}));
});
"""


def node_sorted(names: list[str], workdir: Path, lang: str = "C.UTF-8") -> tuple[list[str], str]:
    """The names in the order node (as Prisma's CLI) puts them, and node's ICU version."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (it is the reference for Prisma's order)")
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    env.update(LANG=lang, LC_ALL=lang)
    proc = subprocess.run(
        [node, "-e", NODE_SORT, str(workdir)], input=json.dumps(names), capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return out["sorted"], out["icu"]


def assert_same_order(ours: list[str], node: list[str], node_icu: str) -> None:
    assert len(ours) == len(node)
    for i, (a, b) in enumerate(zip(ours, node)):
        assert a == b, (
            f"position {i}: ours {a!r}, node {b!r} (ICU here {ICU_VERSION}, node's {node_icu}); "
            f"context ours {ours[max(0, i - 2):i + 3]!r} node {node[max(0, i - 2):i + 3]!r}"
        )


@pytest.mark.parametrize(
    ("seed", "any_code_point"), [(1, 0.0), (2, 0.0), (3, 0.1), (4, 0.3)], ids=["mixed-1", "mixed-2", "any-10pc", "any-30pc"]
)
def test_random_names_sort_as_node_sorts_them(tmp_path: Path, seed: int, any_code_point: float) -> None:
    names = random_names(4000, seed, any_code_point)
    node, node_icu = node_sorted(names, tmp_path / "m")
    assert sorted(names) != node  # the sample is not one code point order would get right
    assert_same_order(prisma_sorted(names), node, node_icu)


def test_names_the_collator_calls_equal_keep_byte_order(tmp_path: Path) -> None:
    # NFC and NFD spellings, the Angstrom sign, ignorable characters: localeCompare says 0, the
    # stable sort keeps readdir's (byte) order, and so must we.
    names = [
        "20240101000000_caf\u00e9",
        "20240101000000_cafe\u0301",
        "20240101000000_\u00c5",
        "20240101000000_A\u030a",
        "20240101000000_\u212b",
        "20240101000000_a",
        "20240101000000_a\u200b",
        "20240101000000_\u200ba",
        "20240101000000_a\u00ad",
        "20240101000000_a\u0001",
    ]
    node, node_icu = node_sorted(names, tmp_path / "m")
    assert_same_order(prisma_sorted(reversed(names)), node, node_icu)
    assert sorted(reversed(names), key=prisma_sort_key) == node


def test_pairwise_compare_is_localecompare_then_bytes() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (it is the reference for Prisma's order)")
    rng = random.Random(5)
    names = random_names(3000, 5, 0.1)
    pairs = [[rng.choice(names), rng.choice(names)] for _ in range(6000)]
    pairs += [["caf\u00e9", "cafe\u0301"], ["a\u200b", "a"], ["\u212b", "\u00c5"], ["x", "x"]]
    script = "const p=JSON.parse(require('fs').readFileSync(0,'utf8'));console.log(JSON.stringify(p.map(([a,b])=>a.localeCompare(b))))"
    proc = subprocess.run([node, "-e", script], input=json.dumps(pairs), capture_output=True, text=True, check=True)
    signs = [(c > 0) - (c < 0) for c in json.loads(proc.stdout)]
    assert signs[-4:-1] == [0, 0, 0]  # ties for localeCompare; bytes decide for Prisma (readdir order)
    for (a, b), sign in zip(pairs, signs):
        expected = sign if sign else (a.encode() > b.encode()) - (a.encode() < b.encode())
        assert prisma_compare(a, b) == expected, (a, b, sign)
        assert (prisma_sort_key(a) < prisma_sort_key(b)) == (expected < 0)


@pytest.mark.parametrize(("lang", "tag"), [("sv_SE.UTF-8", "sv-SE"), ("tr_TR.UTF-8", "tr-TR"), ("de_DE.UTF-8", "de-DE")])
def test_prisma_run_under_another_language_follows_that_language(tmp_path: Path, lang: str, tag: str) -> None:
    names = random_names(1500, 11, 0.0) + ["20240101000000_z", "20240101000000_ä", "20240101000000_ı", "20240101000000_i"]
    node, node_icu = node_sorted(names, tmp_path / "m", lang=lang)
    assert_same_order(prisma_sorted(names, locale=tag), node, node_icu)
    if tag != "de-DE":  # German sorts like the root; Swedish and Turkish do not
        assert prisma_sorted(names) != node


def test_order_the_prisma_cli_was_seen_to_apply() -> None:
    # REPORT.md §4.4, scenario S7d: the order in which Prisma 6.19.3 applied these.
    observed = [
        "2024010300000_short",
        "20240103000000__x",
        "20240103000000_a",
        "20240103000000_b",
        "20240103000000_B",
        "20240103000000_Z",
        "20240103000000-dash",
        "abc",
    ]
    assert prisma_sorted(reversed(observed)) == observed


@pytest.mark.oracle
async def test_real_prisma_deploy_applies_in_this_order(tmp_path: Path, database_url: str) -> None:
    """Each migration records its own name; the table's serial order is Prisma's apply order."""
    names = [n for n in random_names(400, 21, 0.05) if "\n" not in n and "\t" not in n and "\x01" not in n][:30]
    names += ["20240101000000_café", "20240101000000_cafe\u0301", "20240101000000_“quoted”", "20240101000000_\"quoted\""]
    mdir = tmp_path / "migrations"
    for i, name in enumerate(names):
        (mdir / name).mkdir(parents=True)
        literal = "$q$" + name + "$q$"
        (mdir / name / "migration.sql").write_text(
            "CREATE TABLE IF NOT EXISTS applied_order (seq serial PRIMARY KEY, name text NOT NULL);\n"
            f"INSERT INTO applied_order (name) VALUES ({literal});\n",
            encoding="utf-8",
        )
    result = prisma(database_url, mdir, "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    conn = await asyncpg.connect(database_url)
    try:
        applied = [r["name"] for r in await conn.fetch("SELECT name FROM applied_order ORDER BY seq")]
    finally:
        await conn.close()
    assert applied == prisma_sorted(names)
    assert applied != sorted(names)
