"""Finding images in the pre-split folder layout ``root/{train,val,test}/{NORMAL,PNEUMONIA}``.

The layout is found as people download it: nested (the Kaggle zip holds
``chest_xray/chest_xray/train/...``), with ``__MACOSX`` folders and ``.DS_Store`` files, and with
folder names in any case. Nothing inside a class or split folder is dropped silently: every file
that is not used comes back in ``DiscoveryResult.ignored`` with the reason.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.dicom_header import header_of
from cxrnet.data.files import Facts, RealFolders, child_path, entry_facts, facts_or_unreadable
from cxrnet.data.findings import CLASS_FINDINGS, film_findings
from cxrnet.data.other_classes import OtherFilm, other_film
from cxrnet.data.records import (
    CLASS_NAMES,
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    Record,
    is_image_file,
    make_record,
)
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)

# The Kaggle zip nests the layout (chest_xray/chest_xray/train/...); look a few levels down.
_MAX_NESTING = 3
_SUFFIXES_TEXT = ", ".join(sorted(IMAGE_SUFFIXES)) + " (or DICOM files without a suffix)"
_LAYOUT = "root/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (val and test optional)"


@dataclass
class DiscoveryResult:
    """Records per split folder found, and every file seen but not used, with the reason."""

    root: Path  # the folder that holds train/ (after following any nesting)
    records: dict[str, list[Record]]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    # Films in class folders other than NORMAL and PNEUMONIA, kept (not ignored) when the data
    # is scored as a test set (``unsplit``): cxrnet-eval reports them as their own groups.
    others: list[OtherFilm] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(f"{split} {len(items)}" for split, items in self.records.items())
        text = f"{self.root}: {counts} images"
        if self.ignored:
            text += f"; {len(self.ignored)} file(s) ignored (first: {self.ignored[0][0]}: "
            text += f"{self.ignored[0][1]})"
        return text


def _is_hidden(path: Path) -> bool:
    return _is_hidden_name(path.name)


def _is_hidden_name(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _child_dir(folder: Path, name: str) -> Path | None:
    """``folder/name`` as a folder, matching the name in any case ("Train", "normal")."""
    exact = folder / name
    if exact.is_dir():
        return exact
    for child in sorted(folder.iterdir()):
        if child.name.lower() == name.lower() and child.is_dir() and not _is_hidden(child):
            return child
    return None


def _has_any_image(folder: Path) -> bool:
    return any(
        not _is_hidden(path) and path.is_file() and is_image_file(path)
        for path in folder.rglob("*")
    )


def find_split_root(root: Path, splits: tuple[str, ...] = ("train",)) -> Path:
    """The folder under ``root`` (itself or nested) that holds a folder named in ``splits``
    (``train`` for training data; any split folder for a test set scored as it is)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist or is not a folder; set data.root to the folder "
            f"that holds the split folders ({_LAYOUT})"
        )
    frontier = [root]
    for _ in range(_MAX_NESTING + 1):
        found = [
            folder
            for folder in frontier
            if any(_child_dir(folder, split) is not None for split in splits)
        ]
        if len(found) > 1:
            # Picking one by name order would silently train on the wrong data set.
            raise DataError(
                f"{root} holds several data sets at the same depth ("
                f"{', '.join(str(f) for f in found)}); set data.root to the one to use"
            )
        if found:
            return found[0]
        frontier = [
            child
            for folder in frontier
            for child in sorted(folder.iterdir())
            if child.is_dir() and not _is_hidden(child)
        ]
    if not _has_any_image(root):
        raise DataError(
            f"data root {root} holds no images (no files ending in {_SUFFIXES_TEXT}); "
            f"expected {_LAYOUT}"
        )
    raise DataError(
        f"no train/ folder found in {root} (searched {_MAX_NESTING} levels down) although it "
        f"holds images; expected {_LAYOUT}, or list the images in a CSV manifest"
    )


def scan_folder(
    folder: Path, facts: Facts | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder`` (recursively, sorted) and the other files with the reason.

    Hidden files (``.DS_Store``, AppleDouble ``._x.jpeg``) and ``__MACOSX`` content are never
    images, but they are reported so a user can see what was left out. One ``os.scandir`` walk:
    the entries' types come with the listing, so a plain file costs no stat. ``facts``, when
    given, receives each image's ``FileFacts`` from its one stat (``entry.stat()``).
    """
    images: list[tuple[tuple[str, ...], Path]] = []
    ignored: list[tuple[tuple[str, ...], Path, str]] = []
    real_folders = RealFolders()

    def walk(current: Path, parts: tuple[str, ...], hidden: bool) -> None:
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except PermissionError as error:
            # pathlib's rglob skipped such a folder without a word.
            ignored.append((parts, Path(current), f"folder cannot be read: {error.strerror}"))
            return
        for entry in entries:
            here = (*parts, entry.name)
            inside_hidden = hidden or _is_hidden_name(entry.name)
            if entry.is_dir(follow_symlinks=False):
                walk(child_path(current, entry.name), here, inside_hidden)
                continue
            if not entry.is_file():  # follows a link: a link to a folder is not walked
                if entry.is_symlink() and not os.path.exists(entry.path):
                    # is_file() is False for a link whose target is gone: report it.
                    target = os.readlink(entry.path)
                    reason = f"broken symbolic link (its target {target} is gone)"
                    ignored.append((here, Path(entry.path), reason))
                continue
            path = child_path(current, entry.name)
            if inside_hidden:
                ignored.append((here, path, "hidden file or __MACOSX content"))
            elif is_image_file(path):
                images.append((here, path))
                if facts is not None:
                    try:
                        facts[path] = entry_facts(entry, real_folders(str(current)))
                    except OSError:  # gone since the listing: decoding says why
                        facts[path] = facts_or_unreadable(path, real_folders)
            else:
                reason = f"not an image (expected a name ending in {_SUFFIXES_TEXT})"
                ignored.append((here, path, reason))

    walk(Path(folder), (), False)
    images.sort(key=lambda item: item[0])
    ignored.sort(key=lambda item: item[0])
    return [path for _, path in images], [(path, reason) for _, path, reason in ignored]


def list_images(folder: Path) -> list[Path]:
    """Image files in ``folder`` (recursively), sorted, without hidden files or ``__MACOSX``."""
    return scan_folder(folder)[0]


def _record(path: Path, label: int, split: str, findings: bool = False, klass: str = "") -> Record:
    """A film's record; a DICOM film's patient and view, age and sex come from its header.
    ``findings`` (data.task=findings): it carries what its class folder says of its findings."""
    header = header_of(path)
    labelled = film_findings(klass or CLASS_NAMES[label]) if findings else ()
    return make_record(
        path, label, split, patient=header.patient, metadata=header.fields, findings=labelled
    )


def _scan_split(
    split_dir: Path,
    split: str,
    others: list[OtherFilm] | None = None,
    facts: Facts | None = None,
    finding_classes: bool = False,
) -> tuple[list[Record], list[tuple[Path, str]]]:
    """The split's records and ignored files; with ``others``, films in further class folders
    (``OTHER_ABNORMAL``) are added to it instead of being ignored. ``facts`` receives each
    film's ``FileFacts`` (see ``scan_folder``). ``finding_classes`` (data.task=findings): the
    folders of ``CLASS_FINDINGS``' further classes hold films to train on, and every record
    carries its findings."""
    records: list[Record] = []
    ignored: list[tuple[Path, str]] = []
    class_dirs: list[Path] = []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = _child_dir(split_dir, class_name)
        if class_dir is None:
            raise DataError(
                f"missing class folder {split_dir / class_name}; every split folder needs "
                f"{' and '.join(CLASS_NAMES)} subfolders ({_LAYOUT})"
            )
        images, skipped = scan_folder(class_dir, facts)
        if not images:
            raise DataError(
                f"class folder {class_dir} holds no images; expected files ending in "
                f"{_SUFFIXES_TEXT}"
            )
        class_dirs.append(class_dir)
        records.extend(_record(path, label, split, finding_classes) for path in images)
        ignored.extend(skipped)
    # Anything beside the class folders (a third class, stray files) is outside the layout.
    for child in sorted(split_dir.iterdir()):
        if child in class_dirs:
            continue
        if _is_hidden(child):
            reason = "hidden file or __MACOSX content"
        elif child.is_dir() and finding_classes and child.name.upper() in CLASS_FINDINGS:
            images, skipped = scan_folder(child, facts)
            label = int(CLASS_FINDINGS[child.name.upper()]["pneumonia"])
            klass = child.name.upper()
            records.extend(_record(path, label, split, True, klass) for path in images)
            ignored.extend(skipped)
            continue
        elif child.is_dir() and others is not None:
            images, skipped = scan_folder(child)
            for path in images:
                header = header_of(path)
                others.append(other_film(path, child.name, header.patient, header.fields))
            ignored.extend(skipped)
            continue
        elif child.is_dir():
            reason = f"folder outside the layout (a split holds only {' and '.join(CLASS_NAMES)})"
        else:
            reason = "file outside a class folder"
        ignored.append((child, reason))
    return records, ignored


def discover_split(split_dir: Path, split: str) -> list[Record]:
    """Records of one split folder (``split_dir/{NORMAL,PNEUMONIA}``)."""
    return _scan_split(Path(split_dir), split)[0]


def _holds_class_folders(folder: Path) -> bool:
    return folder.is_dir() and all(_child_dir(folder, name) for name in CLASS_NAMES)


def discover_folders(
    root: Path,
    unsplit: str | None = None,
    facts: Facts | None = None,
    finding_classes: bool = False,
) -> DiscoveryResult:
    """Records per split folder present under ``root`` and the files left out.

    ``train`` is required; ``val`` and ``test`` are optional (a missing one has no key).
    ``unsplit`` names a split for films that have none (an external site's labelled films,
    scored as a test set): then a folder without ``train`` is read as it is, and one holding
    ``NORMAL`` and ``PNEUMONIA`` itself, with no split folders, is that split. Films in other
    class folders (``OTHER_ABNORMAL``) of that split come back in ``others``; elsewhere (and
    always for training) they are ignored, with the reason. ``facts``, when given, receives each
    film's ``FileFacts`` (see ``scan_folder``); None stats no film.
    """
    root = Path(root)
    if (
        unsplit is not None
        and _holds_class_folders(root)
        and not any(_child_dir(root, split) for split in SPLIT_NAMES)
    ):
        others: list[OtherFilm] = []
        records, ignored = _scan_split(root, unsplit, others, facts, finding_classes)
        return DiscoveryResult(root, {unsplit: records}, ignored, others)
    split_root = find_split_root(root, ("train",) if unsplit is None else SPLIT_NAMES)
    result = DiscoveryResult(root=split_root, records={})
    for split in SPLIT_NAMES:
        split_dir = _child_dir(split_root, split)
        if split_dir is None:
            continue
        # Only the scored split's: other-class films beside training films are outside it.
        others = result.others if split == unsplit else None
        records, ignored = _scan_split(split_dir, split, others, facts, finding_classes)
        result.records[split] = records
        result.ignored.extend(ignored)
    return result


def discover(root: Path) -> dict[str, list[Record]]:
    """Records per split folder under ``root``; ignored files are logged as a warning."""
    result = discover_folders(root)
    if result.ignored:
        shown = "; ".join(f"{path} ({reason})" for path, reason in result.ignored[:5])
        more = f" and {len(result.ignored) - 5} more" if len(result.ignored) > 5 else ""
        log.warning(
            "ignored %d file(s) under %s: %s%s", len(result.ignored), result.root, shown, more
        )
    return result.records
