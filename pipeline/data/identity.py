"""The identity of a source's data, recorded when a run begins, to tell later whether the data changed.

A run can train for days over many sessions on a folder that changes meanwhile: a class folder added,
renamed or removed; files added or deleted. Its data identity says what the data was:

    class names   in index order: what each of the model's outputs means
    each split    (train, validation): its count and a digest of what it holds. A folder source knows
                  its files: the split is the sorted 64-bit hashes of its files' names relative to the
                  split's root (`name_hashes`), so files added and removed can be counted (ImageNet's
                  1.28 M training names take 10 MB). Other sources (digits, synthetic, records:, tfds:)
                  have a digest only (`pipeline.data.splits.SplitContents`): the same split, or another.

Where it is kept, in the run directory (`pipeline.storage.rundir`):

    data_identity.json   {"format": 1, "class_names": [...], "splits": {"train": {"count", "digest",
                         "names"}, "validation": {...}}, "hashes_digest"}: "names" says whether the split's
                         name hashes are in the .bin; "hashes_digest" is the digest of the .bin
    data_identity.bin    the name hashes: uint64, little-endian, each split's sorted, train's then
                         validation's (absent when no split has names)

The trainer records the identity once, when a run begins, and compares the data with it when the run
resumes; `python -m pipeline.evaluate` compares the data it evaluates on:

    identity = identify(source)                     # or Datasets.identity
    record(run_dir, identity)                       # a run begins
    for line in check_resume(run_dir, identity):    # a run resumes: DataError when the classes differ
        print(line)

This module does not import TensorFlow.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Optional

import numpy as np

from pipeline.data.splits import SPLITS, DataError
from pipeline.storage.files import DirectoryError, atomic_output, atomic_write_text
from pipeline.storage.rundir import DATA_HASHES_FILE, DATA_IDENTITY_FILE, LABELS_FILE

FORMAT = 1
SPLIT_WORDS = {"train": "training", "validation": "validation"}
_SHOWN = 3  # class indices a class difference names; more are counted


def name_hashes(names, salt=b""):
    """64-bit hashes of names: each name's blake2b digest (8 bytes, keyed with `salt`), little-endian.

    Args:
        names: an iterable of bytes or str (str is encoded with `os.fsencode`: a file name need not be UTF-8).
        salt: up to 64 bytes; hashes under another salt are independent of these.

    Returns:
        uint64 array, in the order of `names`.
    """
    digests = b"".join(hashlib.blake2b(os.fsencode(name), digest_size=8, key=salt).digest() for name in names)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def digest(data):
    """The hex digest (blake2b, 16 bytes) of bytes or of a JSON-able value, for `SplitContents.digest`."""
    if not isinstance(data, bytes):
        data = json.dumps(data, sort_keys=True).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclasses.dataclass(frozen=True)
class SplitIdentity:
    """What one split held: `digest` is equal exactly for the same split; `hashes` is None without file names."""

    count: int  # files or examples
    digest: Optional[str]  # None: the source did not describe the split
    # Sorted uint64 name hashes (folder sources); the digest covers them, so equality compares digests.
    hashes: Optional[np.ndarray] = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class DataIdentity:
    """A dataset's class names (index order) and its splits: {"train": SplitIdentity, "validation": ...}."""

    class_names: tuple
    splits: dict


@dataclasses.dataclass(frozen=True)
class SplitChange:
    """How a split differs from the one recorded; `added` and `removed` are None when no names tell."""

    split: str  # "train" or "validation"
    count: int  # now
    recorded_count: int  # then
    added: Optional[int]  # files now that were not then
    removed: Optional[int]  # files then that are not now

    def as_record(self):
        """The change as a results file holds it."""
        return {"added": self.added, "removed": self.removed, "count": self.count,
                "recorded_count": self.recorded_count}


def identify(source):
    """The `DataIdentity` of a `pipeline.data.splits.Source` (its `class_names` and `contents`).

    A split the source does not describe gets digest None: nothing can be said about it.
    """
    contents = source.contents or {}
    splits = {}
    for split in SPLITS:
        found = contents.get(split)
        if found is None:
            count = source.train_size if split == "train" else source.validation_size
            splits[split] = SplitIdentity(count, None)
        elif found.name_hashes is not None:
            hashes = np.sort(np.asarray(found.name_hashes, np.uint64))
            splits[split] = SplitIdentity(len(hashes), digest(hashes.astype("<u8").tobytes()), hashes)
        else:
            splits[split] = SplitIdentity(found.count, found.digest)
    return DataIdentity(tuple(source.class_names), splits)


def record(run_dir, identity):
    """Writes `identity` into the run directory (data_identity.json, data_identity.bin), replacing any there.

    Each file is written whole or not at all; the JSON file, which names the
    digest of the .bin, last, after removing an older one: a kill in between
    leaves no record, never a record that does not match its hashes.

    Args:
        run_dir: the run directory (it exists).
        identity: a `DataIdentity`.

    Raises:
        DiskFull: the disk is full.
    """
    run_dir = pathlib.Path(run_dir)
    named = [identity.splits[split].hashes for split in SPLITS if identity.splits[split].hashes is not None]
    summary = {
        "format": FORMAT,
        "class_names": list(identity.class_names),
        "splits": {
            split: {"count": part.count, "digest": part.digest, "names": part.hashes is not None}
            for split, part in identity.splits.items()
        },
    }
    with contextlib.suppress(FileNotFoundError):
        (run_dir / DATA_IDENTITY_FILE).unlink()
    if named:
        blob = np.concatenate(named).astype("<u8").tobytes()
        with atomic_output(run_dir / DATA_HASHES_FILE, needed=len(blob)) as tmp:
            tmp.write_bytes(blob)
        summary["hashes_digest"] = digest(blob)
    else:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / DATA_HASHES_FILE).unlink()
    atomic_write_text(run_dir / DATA_IDENTITY_FILE, json.dumps(summary, indent=1) + "\n")


class _Damaged(Exception):
    """A damaged record: (file name, reason)."""


def read(run_dir):
    """The `DataIdentity` recorded in a run directory; None for a run that has none (begun before it existed).

    Raises:
        DirectoryError: data_identity.json or data_identity.bin is damaged
            (the message names the file and says what to do).
    """
    run_dir = pathlib.Path(run_dir)
    path = run_dir / DATA_IDENTITY_FILE
    try:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise _Damaged(DATA_IDENTITY_FILE, getattr(exc, "strerror", None) or "not UTF-8 text") from None
        try:
            summary = json.loads(text)
        except ValueError:
            raise _Damaged(DATA_IDENTITY_FILE, "not JSON") from None
        return _parse(summary, run_dir / DATA_HASHES_FILE)
    except _Damaged as exc:
        name, reason = exc.args
        raise DirectoryError(
            f"{run_dir / name} is damaged ({reason}): it records the data the run began with; delete "
            f"{DATA_IDENTITY_FILE} and {DATA_HASHES_FILE} from {run_dir} to go on without comparing the data with it"
        ) from None


def _check(condition, reason, name=DATA_IDENTITY_FILE):
    if not condition:
        raise _Damaged(name, reason)


def _parse(summary, hashes_path):
    _check(isinstance(summary, dict) and summary.get("format") == FORMAT, f"not format {FORMAT} of this project")
    names = summary.get("class_names")
    _check(isinstance(names, list) and all(isinstance(n, str) for n in names), "no list of class names")
    splits = summary.get("splits")
    _check(isinstance(splits, dict) and set(splits) == set(SPLITS), "no train and validation splits")
    for split in SPLITS:
        part = splits[split]
        _check(
            isinstance(part, dict) and isinstance(part.get("count"), int) and part["count"] >= 0
            and (part.get("digest") is None or isinstance(part.get("digest"), str))
            and isinstance(part.get("names"), bool),
            f"a bad entry for the {split} split",
        )  # fmt: skip
    counts = [splits[split]["count"] if splits[split]["names"] else 0 for split in SPLITS]
    hashes = None
    if sum(counts):
        try:
            blob = hashes_path.read_bytes()
        except FileNotFoundError:
            raise _Damaged(DATA_HASHES_FILE, f"missing; {DATA_IDENTITY_FILE} names it") from None
        except OSError as exc:
            raise _Damaged(DATA_HASHES_FILE, exc.strerror or str(exc)) from None
        _check(len(blob) == 8 * sum(counts) and digest(blob) == summary.get("hashes_digest"),
               f"not the name hashes that {DATA_IDENTITY_FILE} describes", DATA_HASHES_FILE)
        hashes = np.frombuffer(blob, dtype="<u8").astype(np.uint64)
    result, start = {}, 0
    for split, count in zip(SPLITS, counts):
        part = splits[split]
        own = hashes[start : start + count] if part["names"] else None
        start += count
        result[split] = SplitIdentity(part["count"], part["digest"], own)
    return DataIdentity(tuple(names), result)


def _counted(count, one, many):
    return f"{count:,} {one if count == 1 else many}"


def _listed(names, limit=5):
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def class_change(recorded, current, now="now", then="when the run began"):
    """How the class names `current` differ from `recorded` (both in index order), in one line; None if equal.

    Names the first indices whose class differs ("class 3 is 'green' now,
    'blue' when the run began"), and, when the counts differ, the classes added
    and gone.

    Args:
        recorded, current: class names in index order.
        now, then: how the line calls the two.
    """
    recorded, current = list(recorded), list(current)
    if recorded == current:
        return None
    moved = [i for i in range(min(len(recorded), len(current))) if recorded[i] != current[i]]
    parts = [f"class {i} is {current[i]!r} {now}, {recorded[i]!r} {then}" for i in moved[:_SHOWN]]
    if len(moved) > _SHOWN:
        parts.append(f"{_counted(len(moved) - _SHOWN, 'more index differs', 'more indices differ')}")
    if len(recorded) != len(current):
        known, kept = set(recorded), set(current)
        added = [name for name in current if name not in known]
        gone = [name for name in recorded if name not in kept]
        if added:
            parts.append(f"{_counted(len(added), 'class', 'classes')} added: {_listed(added)}")
        if gone:
            parts.append(f"{_counted(len(gone), 'class', 'classes')} gone: {_listed(gone)}")
        if not added and not gone:
            parts.append(f"{len(current):,} classes {now}, {len(recorded):,} {then}")
    return "; ".join(parts)


def _missing_from(hashes, others):
    """How many of the sorted `hashes` are not in the sorted `others`."""
    if not len(others):
        return len(hashes)
    at = np.minimum(np.searchsorted(others, hashes), len(others) - 1)
    return int(np.count_nonzero(others[at] != hashes))


def split_change(split, recorded, current):
    """The `SplitChange` from `recorded` to `current` (`SplitIdentity`s of one split); None if the same or unknown."""
    if recorded.digest is None or current.digest is None or recorded.digest == current.digest:
        return None
    added = removed = None
    if recorded.hashes is not None and current.hashes is not None:
        added, removed = _missing_from(current.hashes, recorded.hashes), _missing_from(recorded.hashes, current.hashes)
    return SplitChange(split, current.count, recorded.count, added, removed)


def changes(recorded, current):
    """{split: SplitChange} for the splits of `current` that differ from `recorded` (`DataIdentity`s)."""
    found = {split: split_change(split, recorded.splits[split], current.splits[split]) for split in SPLITS}
    return {split: change for split, change in found.items() if change is not None}


def resume_note(change):
    """The line a resumed run prints about a split that changed since it began."""
    words = SPLIT_WORDS[change.split]
    if change.added is None:
        return (f"note: the {words} split differs from the one the run began with "
                f"({change.count:,} examples now, {change.recorded_count:,} then)")
    parts = [f"{_counted(change.added, 'file', 'files')} added" if change.added else None,
             f"{_counted(change.removed, 'file', 'files')} removed" if change.removed else None]
    return (f"note: the {words} split has {' and '.join(p for p in parts if p)} since the run began "
            f"({_counted(change.count, 'file', 'files')} now)")


def evaluation_note(change):
    """The line an evaluation prints about a split that is not the one the run used."""
    verb, past = ("train", "trained") if change.split == "train" else ("validate", "validated")
    words = SPLIT_WORDS[change.split]
    if change.added is None:
        return (f"note: the {words} split is not the one the run {past} on "
                f"({change.count:,} images now, {change.recorded_count:,} then)")
    if change.added and change.removed:
        return (f"note: the {words} split has {_counted(change.added, 'file', 'files')} the run did not {verb} on "
                f"and lacks {change.removed:,} it did")
    if change.added:
        return f"note: the {words} split has {_counted(change.added, 'file', 'files')} the run did not {verb} on"
    return f"note: the {words} split lacks {_counted(change.removed, 'file', 'files')} the run {past} on"


def run_class_names(run_dir, recorded=None):
    """The class names a run was trained with: its recorded identity's, else its labels.txt; None if neither."""
    if recorded is not None:
        return list(recorded.class_names)
    if not (pathlib.Path(run_dir) / LABELS_FILE).exists():
        return None
    from pipeline.serving.run_model import read_labels  # a damaged labels.txt: one clear error

    return read_labels(run_dir)


def check_resume(run_dir, identity):
    """Compares the data of a resumed run with the data it began with; writes nothing.

    A run begun before identities were recorded is compared by its labels.txt
    (class names only).

    Args:
        run_dir: the run directory.
        identity: the `DataIdentity` of the data found now.

    Returns:
        Lines to print, one per split whose files changed (none when the data is the same).

    Raises:
        DataError: the classes differ (names or order): the model's outputs would mean other classes.
        DirectoryError: the recorded identity (or labels.txt) is damaged.
    """
    recorded = read(run_dir)
    names = run_class_names(run_dir, recorded)
    change = None if names is None else class_change(names, identity.class_names)
    if change:
        raise DataError(
            f"the data's classes are not those the run in {run_dir} began with ({change}): restore the data "
            "the run began with, or pass --overwrite to train the run afresh, or choose another --run-dir"
        )
    if recorded is None:
        return []
    return [resume_note(change) for change in changes(recorded, identity).values()]
