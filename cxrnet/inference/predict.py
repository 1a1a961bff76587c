"""Score a list of film files in batches: every file gets a row, unreadable ones with their error.

Files are decoded exactly as the training cache decodes them (``cxrnet.data.decode.decode``),
then scaled to [0, 1] as the training dataset does, so a film scores the same either way.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cxrnet.data.decode import BadImageError, DecodeParams, decode
from cxrnet.data.findings import triage_output
from cxrnet.data.seen_films import ROLE_WORDS, SeenFilms, pixel_digest
from cxrnet.inference.inputs import OUTPUT_COLUMNS, Input, UnusableEntry
from cxrnet.inference.scorers import Findings, Scorer, findings_of, threshold_of
from cxrnet.publish import write_file
from cxrnet.user_errors import ConfigError

COLUMNS = OUTPUT_COLUMNS
# The seen column where the model records no films it saw (ONNX, an older checkpoint).
NOT_RECORDED = "not recorded"
# A findings model's further columns: per finding its probability and the call at its stored
# threshold, then whether any finding is called (a film for the radiologist's list).
ANY_FINDING = "any_finding"


def finding_columns(findings: Findings) -> list[str]:
    columns = [f"{kind}_{name}" for name in findings.names for kind in ("p", "call")]
    return [*columns, ANY_FINDING] if findings.names else []


@dataclass(frozen=True)
class PredictionRow:
    """One film's row: ``probability`` and ``prediction`` are pneumonia's (a findings model's
    triage finding), ``findings`` each finding's probability and call at its threshold."""

    path: str
    probability: float | None
    prediction: str
    threshold: float
    error: str
    findings: tuple[tuple[float, bool], ...] = ()
    # What the film was to the model, by its pixels: "trained the model", "chose its
    # checkpoint", "chose its threshold", "" (new to it) or NOT_RECORDED.
    seen: str = ""

    def as_row(self, n_findings: int = 0) -> list[str]:
        probability = "" if self.probability is None else f"{self.probability:.6f}"
        row = [self.path, probability, self.prediction, f"{self.threshold:.6f}", self.error]
        row.append(self.seen)
        if n_findings and not self.findings:  # a film that could not be scored
            return row + [""] * (2 * n_findings + 1)
        for p, call in self.findings:
            row += [f"{p:.6f}", str(int(call))]
        if self.findings:
            row.append(str(int(any(call for _, call in self.findings))))
        return row


def check_settings(batch_size: object, num_workers: object) -> None:
    """Refuse settings that cannot score films, before any file is opened or written."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be a whole number >= 1 (films per batch)")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(
            f"num_workers={num_workers} must be a whole number >= 0 (0 decodes in this process)"
        )


def check_output(output: Path, inputs: Iterable[Input]) -> None:
    """Refuse an ``output`` that is a folder or one of ``inputs`` (the model, the input list,
    a film): the predictions would replace the file they are made from."""
    for folder in output.parents:
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(
                    f"output={output} cannot be written: {folder} is a file, not a folder; "
                    "choose another output path"
                )
            break
    if output.is_dir():
        raise ConfigError(
            f"output={output} is a folder; name a CSV file, e.g. "
            f"output={output / 'predictions.csv'}"
        )
    # realpath, not Path.resolve: a symlink loop among the inputs gets its error row later.
    resolved = os.path.realpath(output)
    # An existing output may also be an input under another name (a hard link, a bind mount).
    existing = output.stat() if output.is_file() else None
    for path in inputs:
        if not isinstance(path, Path):
            continue
        same = os.path.realpath(path) == resolved
        if not same and existing is not None:
            try:
                same = os.path.samestat(existing, path.stat())
            except OSError:
                same = False
        if same:
            raise ConfigError(
                f"output={output} is one of the inputs ({path}); writing the predictions would "
                "replace it: choose another output file"
            )


def check_explainable(scorer: Scorer, explain_dir: Path | None) -> None:
    if explain_dir is not None and getattr(scorer, "net", None) is None:
        raise ConfigError(
            "explain=true needs a checkpoint (.ckpt) whose network Grad-CAM can open, not an "
            "exported file or an ensemble; drop explain=true or pass the .ckpt"
        )


def to_input(image: np.ndarray) -> np.ndarray:
    """A decoded uint8 film as the network's (1, S, S) float32 input, as ``XRayDataset`` does."""
    return (image.astype(np.float32) / 255.0)[None]


class _Films(Dataset[tuple[int, np.ndarray | None, str, str]]):
    """Each film decoded as the network takes it, with its error and (``digest``: when there are
    seen films to compare it with) its pixels' digest."""

    def __init__(self, paths: Sequence[Input], params: DecodeParams, digest: bool) -> None:
        self.paths = list(paths)
        self.params = params
        self.digest = digest

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str, str]:
        path = self.paths[index]
        if isinstance(path, UnusableEntry):
            return index, None, path.reason, ""
        try:
            image = decode(path, self.params)
        except BadImageError as error:
            return index, None, error.reason, ""
        except OSError as error:  # missing or unreadable listed file
            return index, None, f"{type(error).__name__}: {error.strerror or error}", ""
        return index, to_input(image), "", pixel_digest(image) if self.digest else ""


def _keep_as_list(batch: list[tuple[int, np.ndarray | None, str]]) -> list:
    return batch


@dataclass
class PredictionSummary:
    rows: list[PredictionRow]
    seconds: float
    threshold: float

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows if row.error)

    @property
    def images_per_second(self) -> float:
        scored = len(self.rows) - self.failed
        return scored / self.seconds if self.seconds > 0 else float("nan")


def _explain(
    scorer: Scorer, good: list[tuple[int, np.ndarray]], scores: np.ndarray, paths, folder: Path
) -> None:
    from cxrnet.inference.gradcam import gradcam, save_overlay

    net = getattr(scorer, "net", None)
    images = torch.from_numpy(np.stack([image for _, image in good]))
    names = findings_of(scorer).names
    # A findings model: an overlay per finding, each explaining that finding's output.
    for output, finding in enumerate(names) if names else [(None, "")]:
        maps = gradcam(net, images.to(next(net.parameters()).device), output=output)
        column = scores if output is None else scores[:, output]
        for (index, image), heatmap, p in zip(good, maps, column, strict=True):
            film = (image[0] * 255).round().astype(np.uint8)
            suffix = f"_{finding}" if finding else ""
            name = f"{index:06d}_{Path(paths[index]).stem}{suffix}.png"
            caption = f"p({finding or 'pneumonia'})={p:.3f}"
            save_overlay(film, heatmap, folder / name, caption=caption)


def iter_predictions(
    paths: Sequence[Input],
    scorer: Scorer,
    batch_size: int = 64,
    num_workers: int = 0,
    explain_dir: Path | None = None,
    seen: SeenFilms | None = None,
) -> Iterator[list[PredictionRow]]:
    """Rows batch by batch, in the order of ``paths``; decoding runs in ``num_workers``.

    ``explain_dir``: a Grad-CAM overlay per scored film is written there, numbered by position.
    ``seen``: the films the model saw (``cxrnet.passes.seen_pass.seen_films_at``), for each
    row's ``seen`` column; None: not recorded.
    """
    threshold = threshold_of(scorer)
    findings = findings_of(scorer)
    # A findings model's probability column is its triage finding's (pneumonia).
    triage = triage_output(findings.names)
    cuts = np.array([findings.threshold(name) for name in findings.names])
    loader = DataLoader(
        _Films(paths, scorer.preprocessing, digest=seen is not None),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_keep_as_list,
    )
    for batch in loader:
        good = [(i, image) for i, image, _, _ in batch if image is not None]
        probabilities: dict[int, float] = {}
        per_finding: dict[int, tuple[tuple[float, bool], ...]] = {}
        if good:
            images = np.stack([image for _, image in good]).astype(np.float32)
            scores = scorer(images)
            if findings.names:
                for (i, _), row in zip(good, scores, strict=True):
                    per_finding[i] = tuple(
                        (float(p), bool(p >= cut)) for p, cut in zip(row, cuts, strict=True)
                    )
                probabilities = {i: row[triage][0] for i, row in per_finding.items()}
            else:
                probabilities = {i: float(p) for (i, _), p in zip(good, scores, strict=True)}
            if explain_dir is not None:
                _explain(scorer, good, scores, paths, explain_dir)
        rows = []
        for index, _, error, digest in batch:
            path = str(paths[index])
            if error:
                rows.append(PredictionRow(path, None, "", threshold, error))
                continue
            p = probabilities[index]
            call = "PNEUMONIA" if p >= threshold else "NORMAL"
            role = NOT_RECORDED if seen is None else ROLE_WORDS.get(seen.role_of_digest(digest), "")
            findings_row = per_finding.get(index, ())
            rows.append(PredictionRow(path, p, call, threshold, "", findings_row, role))
        yield rows


def predict_files(
    paths: Sequence[Input],
    scorer: Scorer,
    output: Path,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    explain_dir: Path | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
    seen: SeenFilms | None = None,
) -> PredictionSummary:
    """Score ``paths`` and write ``output`` (CSV, ``COLUMNS``, then ``columns``: the films'
    further columns, one value per path, as ``input_columns`` gives them): rows go to a temporary
    file as they arrive, renamed to ``output`` at the end, so a failed run leaves an earlier
    ``output`` whole and a reader never sees half of one."""
    from tqdm import tqdm

    columns = dict(columns or {})
    findings = findings_of(scorer)
    clash = sorted(set(columns) & {*COLUMNS, *finding_columns(findings)})
    uneven = sorted(name for name, values in columns.items() if len(values) != len(paths))
    if clash or uneven:
        raise ValueError(f"columns {clash} repeat predict's own, {uneven} do not match the paths")
    check_settings(batch_size, num_workers)
    check_output(output, paths)
    check_explainable(scorer, explain_dir)
    rows: list[PredictionRow] = []
    start = time.perf_counter()

    def write(temporary: Path) -> None:
        with (
            temporary.open("w", newline="") as handle,
            tqdm(total=len(paths), unit="film", disable=not progress, desc="predicting") as bar,
        ):
            writer = csv.writer(handle)
            writer.writerow([*COLUMNS, *finding_columns(findings), *columns])
            n = len(findings.names)
            batches = iter_predictions(paths, scorer, batch_size, num_workers, explain_dir, seen)
            for batch in batches:
                writer.writerows(
                    [*row.as_row(n), *(values[len(rows) + i] for values in columns.values())]
                    for i, row in enumerate(batch)
                )
                rows.extend(batch)
                bar.update(len(batch))

    try:
        # A context, not torch.set_grad_enabled(False): a library caller's autograd stays on.
        with torch.no_grad():
            write_file(output, write)
    except OSError as error:
        if error.filename is None or Path(error.filename).parent != output.parent:
            raise  # a film or the model, not the output
        raise ConfigError(
            f"cannot write output={output} ({error.strerror}); choose a file in a folder you "
            "can write to"
        ) from error
    return PredictionSummary(rows, time.perf_counter() - start, threshold_of(scorer))
