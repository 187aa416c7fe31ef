"""The Open Bandit Dataset sample, read from the ``obp==0.4.1`` wheel without obp or pandas.

Saito, Aihara, Matsutani and Narita, "Open Bandit Dataset and Pipeline: Towards Realistic and
Reproducible Off-Policy Evaluation", NeurIPS 2021 Datasets and Benchmarks track
(arXiv:2008.07146). ZOZOTOWN fashion recommendations logged by two policies, uniform random
(``random``) and Bernoulli Thompson sampling (``bts``), in three campaigns (``all`` 80 items,
``men`` 34, ``women`` 46); the sample shipped in the wheel has 10,000 events per log. Each event
shows one item in one of three positions and records the click and the logging policy's
probability of that item at that position. The wheel is Apache-2.0.

``load_obd`` fetches the wheel once (``pip download --no-deps``) into a cache folder, checks
the sha256 of every log, and returns both logs of a campaign as ``LoggedBandit``s with one
encoding: context = intercept, the one-hot user features (vocabulary over the union of both
logs: the random log lacks some values) and the one-hot position; action features = the item's
``item_feature_0`` and one-hot ``item_feature_1..3``. The two folders hash the item categories
with different strings for the same partition, so items are aligned by ``item_id``: the random
folder's strings name the columns and the bts folder must induce the same partition.
The user-item affinity columns are checked but not used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import subprocess
import sys
import zipfile
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from bandit.errors import InvalidInputError, UnavailableError
from simulators.offline.logs import LoggedBandit

__all__ = ["BEHAVIORS", "CAMPAIGNS", "SHA256", "fetch_wheel", "load_obd", "logged_policy_table"]

OBP_VERSION = "0.4.1"
BEHAVIORS = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_ITEMS = {"all": 80, "men": 34, "women": 46}
N_POSITIONS = 3
N_USER_FEATURES = 4
N_ITEM_FEATURES = 4
SHA256 = {
    ("random", "all"): "7168295b6e0a9eabcf3392320a5dd434e542b68e705d5cd9491499af589812f1",
    ("bts", "all"): "0ad874e4dbf6902f0845dd478ad8dde5ef6903583d3ffaace78411bdad064106",
    ("random", "men"): "ede6d08c6877f99cd3770f7d09e26c738e6aa6de4445ccccfb1356ba5d06b1eb",
    ("bts", "men"): "db6d1f7ed2d591ba521533e45286d4c1fba7fe57a8ad2e80342210335f43c527",
    ("random", "women"): "e65f3bd3beb17664fa69cc129bf7bf852a775f8ffa630506e505fc905315bb34",
    ("bts", "women"): "e5d1b49a39b608585a2f3014a3f54970430cd37a495c1b73fceb85cdf428a5b8",
}
_PREFIX = "obp/dataset/obd"


def default_cache_dir() -> Path:
    """``$CMAB_OBD_CACHE`` if set, else ~/.cache/cmab/obd."""
    return Path(os.environ.get("CMAB_OBD_CACHE", Path.home() / ".cache" / "cmab" / "obd"))


def fetch_wheel(cache_dir: str | Path | None = None) -> Path:
    """The path of the obp wheel in the cache folder, downloaded with pip the first time."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = sorted(cache.glob(f"obp-{OBP_VERSION}-*.whl"))
    if found:
        return found[0]
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(f"cache folder {cache}: {error.strerror}") from None
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         f"obp=={OBP_VERSION}", "-d", str(cache)],
        capture_output=True, text=True, check=False,
    )
    found = sorted(cache.glob(f"obp-{OBP_VERSION}-*.whl"))
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise UnavailableError(f"pip download obp=={OBP_VERSION} into {cache} failed: {last}")
    return found[0]


def _header(n_items: int) -> list[str]:
    return (["", "timestamp", "item_id", "position", "click", "propensity_score"]
            + [f"user_feature_{j}" for j in range(N_USER_FEATURES)]
            + [f"user-item_affinity_{j}" for j in range(n_items)])


def parse_log(text: str, n_items: int, where: str) -> dict[str, np.ndarray]:
    """One campaign CSV into columns: item (n,), position (n,) in 0..2, click (n,),
    propensity (n,), users (n, 4) strings. Any bad cell is an error naming its data row
    (numbered from 0, the CSV's own index column) and its column."""
    rows = list(csv.reader(io.StringIO(text)))
    expected = _header(n_items)
    if not rows or rows[0] != expected:
        got = rows[0] if rows else []
        missing = [c for c in expected if c not in got]
        extra = [c for c in got if c not in expected]
        raise InvalidInputError(f"{where}: wrong columns: missing {missing[:3]}, unexpected "
                                f"{extra[:3]}" if missing or extra
                                else f"{where}: columns out of order")
    data = rows[1:]
    if not data:
        raise InvalidInputError(f"{where}: no rows")
    n = len(data)
    item, position, click = (np.empty(n, dtype=np.int64) for _ in range(3))
    propensity = np.empty(n)
    users = np.empty((n, N_USER_FEATURES), dtype=object)
    for i, row in enumerate(data):
        if len(row) != len(expected):
            raise InvalidInputError(f"{where}: row {i}: expected {len(expected)} cells, got "
                                    f"{len(row)}")
        item[i] = _integer(row[2], 0, n_items - 1, where, i, "item_id")
        position[i] = _integer(row[3], 1, N_POSITIONS, where, i, "position") - 1
        click[i] = _integer(row[4], 0, 1, where, i, "click")
        p = _number(row[5], where, i, "propensity_score")
        if not 0.0 < p <= 1.0:
            raise InvalidInputError(f"{where}: row {i}: propensity_score: expected a number in "
                                    f"(0, 1], got {row[5]!r}")
        propensity[i] = p
        for j in range(N_USER_FEATURES):
            if not row[6 + j]:
                raise InvalidInputError(f"{where}: row {i}: user_feature_{j}: empty")
            users[i, j] = row[6 + j]
    try:
        affinity = np.array([row[6 + N_USER_FEATURES:] for row in data], dtype=np.float64)
    except ValueError:
        affinity = np.full((n, 1), np.nan)  # the row loop below names the cell
    bad = ~np.isfinite(affinity).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        for j, cell in enumerate(data[i][6 + N_USER_FEATURES:]):
            _number(cell, where, i, f"user-item_affinity_{j}")
    return {"item": item, "position": position, "click": click, "propensity": propensity,
            "users": users}


def _number(cell: str, where: str, i: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidInputError(f"{where}: row {i}: {column}: expected a finite number, got "
                                f"{cell!r}")
    return value


def _integer(cell: str, low: int, high: int, where: str, i: int, column: str) -> int:
    value = _number(cell, where, i, column)
    if value != int(value) or not low <= value <= high:
        raise InvalidInputError(f"{where}: row {i}: {column}: expected an integer in "
                                f"{low}..{high}, got {cell!r}")
    return int(value)


def parse_items(text: str, n_items: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """item_context.csv: item_feature_0 (n_items,) and the category strings (n_items, 3),
    rows ordered by item_id (every id 0..n_items-1 exactly once)."""
    rows = list(csv.reader(io.StringIO(text)))
    expected = ["", "item_id"] + [f"item_feature_{j}" for j in range(N_ITEM_FEATURES)]
    if not rows or rows[0] != expected:
        raise InvalidInputError(f"{where}: wrong columns: expected {expected}, got "
                                f"{rows[0] if rows else []}")
    numeric = np.full(n_items, np.nan)
    categories = np.empty((n_items, N_ITEM_FEATURES - 1), dtype=object)
    seen = np.zeros(n_items, dtype=bool)
    if len(rows) - 1 != n_items:
        raise InvalidInputError(f"{where}: expected {n_items} items, got {len(rows) - 1}")
    for i, row in enumerate(rows[1:]):
        if len(row) != len(expected):
            raise InvalidInputError(f"{where}: row {i}: expected {len(expected)} cells")
        a = _integer(row[1], 0, n_items - 1, where, i, "item_id")
        if seen[a]:
            raise InvalidInputError(f"{where}: row {i}: item_id {a} listed twice")
        seen[a] = True
        numeric[a] = _number(row[2], where, i, "item_feature_0")
        categories[a] = row[3:]
    return numeric, categories


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise InvalidInputError(f"{path}: has no {name}") from None


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the labels a and b (n,) group the items the same way."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _one_hot(values: np.ndarray, vocabulary: Sequence[Hashable]) -> np.ndarray:
    index = {v: j for j, v in enumerate(vocabulary)}
    out = np.zeros((len(values), len(vocabulary)))
    out[np.arange(len(values)), [index[v] for v in values]] = 1.0
    return out


def load_obd(campaign: str = "all", *, cache_dir: str | Path | None = None,
             wheel: str | Path | None = None, verify: bool = True) -> dict[str, LoggedBandit]:
    """Both logs of a campaign, {"random": log, "bts": log}, on one encoding (module docstring).

    wheel: a local obp wheel (default: ``fetch_wheel(cache_dir)``). verify: check each log's
    sha256 against ``SHA256`` before parsing it.
    """
    if campaign not in CAMPAIGNS:
        raise InvalidInputError(f"campaign: expected one of {', '.join(CAMPAIGNS)}, got "
                                f"{campaign!r}")
    path = Path(wheel) if wheel is not None else fetch_wheel(cache_dir)
    n_items = N_ITEMS[campaign]
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise InvalidInputError(f"{path}: not a readable wheel: {error}") from None
    logs, items = {}, {}
    with archive:
        for behavior in BEHAVIORS:
            name = f"{behavior}/{campaign}/{campaign}.csv"
            raw = _member(archive, f"{_PREFIX}/{name}", path)
            digest = hashlib.sha256(raw).hexdigest()
            if verify and digest != SHA256[(behavior, campaign)]:
                raise InvalidInputError(f"{name}: sha256 {digest}, expected "
                                        f"{SHA256[(behavior, campaign)]}")
            item_text = _member(archive, f"{_PREFIX}/{behavior}/{campaign}/item_context.csv", path)
            logs[behavior] = parse_log(raw.decode("utf-8"), n_items, name)
            items[behavior] = parse_items(item_text.decode("utf-8"), n_items,
                                          f"{behavior}/{campaign}/item_context.csv")
    # Items: the random folder's features; the bts folder must agree up to the hash strings.
    numeric, categories = items["random"]
    other_numeric, other_categories = items["bts"]
    if not np.allclose(numeric, other_numeric):
        raise InvalidInputError(f"{campaign}: item_feature_0 differs between random and bts")
    for j in range(categories.shape[1]):
        if not _same_partition(categories[:, j], other_categories[:, j]):
            raise InvalidInputError(f"{campaign}: item_feature_{j + 1} groups items differently "
                                    f"in random and bts")
    blocks, action_columns = [numeric[:, None]], ["item_feature_0"]
    for j in range(categories.shape[1]):
        vocabulary = sorted(set(categories[:, j]))
        blocks.append(_one_hot(categories[:, j], vocabulary))
        action_columns += [f"item_feature_{j + 1}={v}" for v in vocabulary]
    action_features = np.hstack(blocks)

    # Users: one vocabulary per feature over both logs.
    vocabularies = [sorted(set(logs["random"]["users"][:, j]) | set(logs["bts"]["users"][:, j]))
                    for j in range(N_USER_FEATURES)]
    columns = ["(intercept)"]
    for j, vocabulary in enumerate(vocabularies):
        columns += [f"user_feature_{j}={v}" for v in vocabulary]
    columns += [f"position={p + 1}" for p in range(N_POSITIONS)]
    out = {}
    for behavior, log in logs.items():
        n = len(log["item"])
        X = np.hstack([np.ones((n, 1))]
                      + [_one_hot(log["users"][:, j], vocabularies[j])
                         for j in range(N_USER_FEATURES)]
                      + [_one_hot(log["position"], list(range(N_POSITIONS)))])
        out[behavior] = LoggedBandit(
            X, log["item"], log["click"].astype(np.float64), log["propensity"], n_items,
            action_features=action_features, position=log["position"],
            action_names=tuple(f"item{a}" for a in range(n_items)), context_names=tuple(columns),
            name=f"obd/{behavior}/{campaign}",
        )
    return out


def logged_policy_table(source: LoggedBandit, log: LoggedBandit) -> np.ndarray:
    """pi (n, k): a context-free policy that shows each item at each position as often as
    ``source``'s logging policy did, for every event of ``log`` (by its position).

    This stands in for the logged policy when evaluating it on another log: the bts policy's
    time-averaged probability of item a at position p is estimated by its share of position
    p's events in the bts log.
    """
    if source.position is None or log.position is None:
        raise InvalidInputError("logged_policy_table: both logs need positions")
    if source.n_actions != log.n_actions:
        raise InvalidInputError(f"logged_policy_table: {source.n_actions} vs {log.n_actions} "
                                f"actions")
    n_pos = int(max(source.position.max(), log.position.max())) + 1
    counts = np.zeros((n_pos, source.n_actions))
    np.add.at(counts, (source.position, source.actions), 1.0)
    table = counts / counts.sum(axis=1, keepdims=True)
    return np.ascontiguousarray(table[log.position])
