"""cxrnet-compare on hand-built sweep folders: a 2x2 grid x 3 seeds, one failed, one unfinished."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxrnet.cli.compare import main
from cxrnet.comparison.plot import build_figure
from cxrnet.comparison.render import (
    CSV_NAME,
    MARKDOWN_NAME,
    PLOT_NAME,
    ranking_note,
    table_lines,
    terminal_metrics,
)
from cxrnet.comparison.report import write_report
from cxrnet.comparison.stat import finite_stat
from cxrnet.comparison.summary import summarize
from cxrnet.runs import overrides_as_dict
from cxrnet.runs.results import UNFINISHED, collect_runs

# val/auroc per configuration, one value per seed; hand-computed mean and sample std below.
GRID = {
    ("stratified", 0.1): [0.90, 0.92, 0.94],  # mean 0.92, std 0.02
    ("stratified", 0.2): [0.85, 0.86, 0.87],  # mean 0.86, std 0.01
    ("random", 0.1): [0.95, 0.95, 0.98],  # mean 0.96, std sqrt(3e-4)
    ("random", 0.2): [0.80, 0.84, 0.88],  # mean 0.84, std 0.04
}
EXPECTED = {  # in descending val/auroc order
    ("random", "0.1"): (0.96, math.sqrt(3e-4)),
    ("stratified", "0.1"): (0.92, 0.02),
    ("stratified", "0.2"): (0.86, 0.01),
    ("random", "0.2"): (0.84, 0.04),
}


def write_job(
    folder: Path,
    overrides: list[str],
    metrics: dict | None = None,
    config: dict | None = None,
) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if config is not None:
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def completed(val_auroc: float, **extra: float) -> dict:
    metrics = {
        "val/auroc": val_auroc,
        "val/f1": val_auroc - 0.05,
        "test/auroc": val_auroc - 0.02,
        "train/loss": 0.3,
        **extra,
    }
    return {"status": "completed", "monitor": "val/auroc", "metrics": metrics, "run_dir": "x"}


def grid_overrides(split: str, fraction: float, seed: int) -> list[str]:
    return [
        f"data.split={split}",
        f"data.val_fraction={fraction}",
        f"seed={seed}",
        "experiment=notebook_baseline",
    ]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    job = 0
    for (split, fraction), values in GRID.items():
        for seed, value in enumerate(values):
            write_job(root / str(job), grid_overrides(split, fraction, seed), completed(value))
            job += 1
    # Would drag random/0.1 down to ~0.74 if it were folded in.
    failed = {"status": "failed", "error": "ValueError: loss is NaN\nTraceback ...",
              "metrics": {"val/auroc": 0.1}}  # fmt: skip
    write_job(root / str(job), grid_overrides("random", 0.1, 3), failed)
    write_job(root / str(job + 1), grid_overrides("random", 0.2, 3))  # killed: no metrics.json
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_collect_runs_finds_every_job_with_its_status(sweep: Path) -> None:
    runs = collect_runs([sweep])
    assert len(runs) == 14
    assert [run.path.name for run in runs] == [str(i) for i in range(14)]  # 10 after 9
    statuses = [run.status for run in runs]
    assert statuses.count("completed") == 12
    assert runs[12].status == "failed"
    assert runs[12].error.startswith("ValueError: loss is NaN")
    assert runs[13].status == UNFINISHED
    assert runs[0].overrides == {
        "data.split": "stratified",
        "data.val_fraction": 0.1,
        "seed": 0,
        "experiment": "notebook_baseline",
    }


def test_collect_runs_reads_overlapping_and_multiple_folders_once(sweep: Path) -> None:
    runs = collect_runs([sweep, sweep / "3", sweep.parent])
    assert len(runs) == 14


def test_csv_has_one_row_per_configuration_with_mean_std_n(sweep: Path, tmp_path: Path) -> None:
    summary = summarize(collect_runs([sweep]))
    files = write_report(summary, tmp_path / "report")
    rows = read_csv(files.csv)

    assert [(r["data.split"], r["data.val_fraction"]) for r in rows] == list(EXPECTED)
    assert list(rows[0])[:3] == ["data.split", "data.val_fraction", "n"]
    assert "seed" not in rows[0] and "experiment" not in rows[0]  # folded / constant
    assert "train/loss_mean" not in rows[0]  # only val/ and test/ by default
    for row, (mean, std) in zip(rows, EXPECTED.values(), strict=True):
        assert row["n"] == "3"  # the failed and unfinished seeds are not counted
        assert float(row["val/auroc_mean"]) == pytest.approx(mean)
        assert float(row["val/auroc_std"]) == pytest.approx(std)
        assert float(row["test/auroc_mean"]) == pytest.approx(mean - 0.02)
        assert float(row["test/auroc_std"]) == pytest.approx(std)
        assert float(row["val/f1_mean"]) == pytest.approx(mean - 0.05)
        assert len(row["jobs"].split(";")) == 3


def test_default_metrics_are_val_then_test(sweep: Path) -> None:
    summary = summarize(collect_runs([sweep]))
    assert summary.metrics == ("val/auroc", "val/f1", "test/auroc")
    assert summary.sort == "val/auroc"  # the jobs' monitor


def test_ascending_and_other_sort_metric(sweep: Path) -> None:
    runs = collect_runs([sweep])
    ascending = summarize(runs, ascending=True)
    assert [tuple(r.config.values()) for r in ascending.rows] == [
        ("random", 0.2),
        ("stratified", 0.2),
        ("stratified", 0.1),
        ("random", 0.1),
    ]
    by_test = summarize(runs, metrics=["test/*"], sort="val/f1")
    assert by_test.metrics == ("val/f1", "test/auroc")  # the sort metric is always shown
    assert tuple(by_test.rows[0].config.values()) == ("random", 0.1)


def test_unknown_metric_names_the_available_ones(sweep: Path) -> None:
    with pytest.raises(ValueError, match=r"'val/auprc'.*available: test/auroc"):
        summarize(collect_runs([sweep]), metrics=["val/auprc"])


def test_markdown_lists_rows_and_failed_jobs(sweep: Path, tmp_path: Path) -> None:
    files = write_report(summarize(collect_runs([sweep])), tmp_path)
    text = files.markdown.read_text()
    assert "| data.split | data.val_fraction | n | val/auroc ↓ | val/f1 | test/auroc |" in text
    assert "| random | 0.1 | 3 | 0.960 ± 0.017 | 0.910 ± 0.017 | 0.940 ± 0.017 |" in text
    assert "| stratified | 0.2 | 3 | 0.860 ± 0.010 |" in text
    assert text.index("| random | 0.1 |") < text.index("| random | 0.2 |")
    assert "## Failed or unfinished jobs (2)" in text
    assert "| failed | ValueError: loss is NaN |" in text
    assert "Traceback" not in text  # one line per job
    assert "| unfinished | no final record" in text
    assert f"]({PLOT_NAME})" in text


def test_plot_written_with_a_panel_per_swept_key(sweep: Path, tmp_path: Path) -> None:
    summary = summarize(collect_runs([sweep]))
    files = write_report(summary, tmp_path)
    assert files.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files.plot.stat().st_size > 5000

    split_ax, fraction_ax = build_figure(summary).axes
    assert [t.get_text() for t in split_ax.get_xticklabels()] == ["random", "stratified"]
    left, right = fraction_ax.get_xlim()
    assert left < 0.1 < 0.2 < right < 1.0  # numeric key on a numeric axis
    assert len(split_ax.get_legend().get_texts()) == 2  # one series per val_fraction


def test_main_writes_into_the_first_folder_and_prints(
    sweep: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert main([str(sweep)]) == 0
    for name in (CSV_NAME, MARKDOWN_NAME, PLOT_NAME):
        assert (sweep / name).stat().st_size > 0
    out = capsys.readouterr().out
    assert "4 configurations from 12 completed jobs" in out
    assert "0.960 ± 0.017" in out
    assert "ValueError: loss is NaN" in out
    assert "unfinished" in out
    assert str(sweep / "13") in out


def test_main_out_metrics_and_fold_keys(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out), "--metrics", "val/auroc", "--fold-keys"]) == 0
    rows = read_csv(out / CSV_NAME)
    assert len(rows) == 12  # nothing folded: each seed is its own configuration
    assert list(rows[0]) == ["data.split", "data.val_fraction", "seed", "n",
                             "val/auroc_mean", "val/auroc_std", "val/auroc_low", "val/auroc_high",
                             "jobs"]  # fmt: skip
    assert {row["n"] for row in rows} == {"1"}
    assert not (sweep / CSV_NAME).exists()


def test_main_fails_clearly_without_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no job found in" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_main_fails_when_no_job_completed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {"status": "failed", "error": "RuntimeError: out of memory", "metrics": {}}
    write_job(tmp_path / "0", ["seed=0"], failed)
    assert main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "none of the 1 jobs" in captured.err
    assert "RuntimeError: out of memory" in captured.out
    assert not (tmp_path / CSV_NAME).exists()


def test_main_unknown_metric_is_a_usage_error(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(sweep), "--sort", "val/nope"]) == 2
    assert "'val/nope'" in capsys.readouterr().err


def test_single_run_shows_its_value_without_std(tmp_path: Path) -> None:
    run = write_job(tmp_path / "run", ["seed=7"], completed(0.9))
    summary = summarize(collect_runs([run]))
    assert summary.keys == ()
    (row,) = summary.rows
    assert row.n == 1 and row.stats["val/auroc"].std is None
    files = write_report(summary, tmp_path)
    (csv_row,) = read_csv(files.csv)
    assert csv_row["val/auroc_mean"] == "0.9" and csv_row["val/auroc_std"] == ""
    markdown = files.markdown.read_text()
    assert "| 1 | 0.900 | 0.850 | 0.880 |" in markdown
    assert "nan" not in markdown.lower()
    assert files.plot.stat().st_size > 0


def test_nan_metric_lowers_n_instead_of_poisoning_the_mean(tmp_path: Path) -> None:
    write_job(tmp_path / "0", ["seed=0"], completed(0.9, **{"test/auroc": float("nan")}))
    write_job(tmp_path / "1", ["seed=1"], completed(0.8))
    summary = summarize(collect_runs([tmp_path]))
    (row,) = summary.rows
    assert row.stats["test/auroc"].mean == pytest.approx(0.78)
    assert row.stats["test/auroc"].n == 1
    markdown = write_report(summary, tmp_path).markdown.read_text()
    assert "| 2 | 0.850 ± 0.071 | 0.800 ± 0.071 | 0.780 (n=1) |" in markdown


def test_missing_override_takes_the_value_from_the_saved_config(tmp_path: Path) -> None:
    config = {"data": {"val_fraction": 0.1}, "seed": 0}
    write_job(tmp_path / "a", ["data.val_fraction=1e-1", "seed=0"], completed(0.9), config)
    write_job(tmp_path / "b", ["seed=1"], completed(0.8), {**config, "seed": 1})
    write_job(tmp_path / "c", ["data.val_fraction=0.2", "seed=0"], completed(0.7), config)
    summary = summarize(collect_runs([tmp_path]))
    assert summary.keys == ("data.val_fraction",)
    assert [(row.config["data.val_fraction"], row.n) for row in summary.rows] == [
        (0.1, 2),
        (0.2, 1),
    ]


def test_parse_overrides_handles_hydra_prefixes() -> None:
    parsed = overrides_as_dict(
        ["+trainer.max_epochs=3", "++model.name='seed cnn'", "hydra.run.dir=x", "flag=true"]
    )
    assert parsed == {"trainer.max_epochs": 3, "model.name": "seed cnn", "flag": True}


def test_the_console_script_prints_rows_into_a_pipe(sweep: Path) -> None:
    # A Slurm log or a pipe is not a terminal: the table must still have its rows, in plain text.
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cxrnet-compare"), str(sweep)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("data.split"))
    assert header.split()[:4] == ["data.split", "data.val_fraction", "n", "val/auroc"]
    rows = [line for line in lines if line.startswith(("random", "stratified"))]
    assert len(rows) == 4
    assert rows[0].split()[:5] == ["random", "0.1", "3", "0.960", "±"]
    assert "\x1b[" not in done.stdout  # no terminal escape codes in a log


def test_the_terminal_table_fits_the_width_and_shows_the_monitor_first(sweep: Path) -> None:
    summary = summarize(collect_runs([sweep]))
    shown = terminal_metrics(summary)
    assert shown[0] == "val/auroc" and len(shown) <= 5
    assert terminal_metrics(summary, ["test/*"]) == ["val/auroc", "test/auroc"]
    with pytest.raises(ValueError, match="--show 'nope'"):
        terminal_metrics(summary, ["nope"])

    wide, hidden = table_lines(summary, shown, width=None)
    assert hidden == [] and len(wide) == 2 + 4
    narrow, hidden = table_lines(summary, shown, width=60)
    assert all(len(line) <= 60 for line in narrow)
    assert hidden and "val/auroc" not in hidden  # the sort metric is the last to go
    assert narrow[2].split()[:2] == ["random", "0.1"]
    # Even a very narrow terminal keeps every row and the monitor, shortening the keys.
    tiny, _ = table_lines(summary, shown, width=30)
    assert len(tiny) == 6 and "0.960" in tiny[2]


def _single(folder: Path, seed: int, auroc: float, low: float, high: float) -> Path:
    metrics = completed(
        auroc,
        **{"val/auroc_ci_low": low, "val/auroc_ci_high": high},
        **{"val/f1_at_threshold": 0.7, "val/recall_at_threshold": 0.8, "val/f1": 0.0},
    )
    return write_job(folder, [f"model.net.name=net{seed}"], metrics)


def test_single_runs_show_their_interval_and_an_overlap_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: 0.479 against 0.458 on 16 validation films, intervals 0.18-0.79.
    _single(tmp_path / "0", 0, 0.479, 0.18, 0.79)
    _single(tmp_path / "1", 1, 0.458, 0.15, 0.76)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.479 [0.180, 0.790]" in out and "0.458 [0.150, 0.760]" in out
    note = (
        "The two best configurations' intervals on val/auroc overlap (0.180-0.790 and "
        "0.150-0.760): their order is not evidence that one is better."
    )
    assert note in out
    markdown = (tmp_path / MARKDOWN_NAME).read_text()
    assert f"**{note}" in markdown
    # The compact table comes first, with the metrics at each run's own threshold, not at 0.5;
    # the interval ends are no columns of their own.
    compact = markdown.split("## Every metric")[0]
    assert "val/f1_at_threshold" in compact and "| val/f1 |" not in compact
    assert "_ci_low" not in markdown
    rows = read_csv(tmp_path / CSV_NAME)
    assert [(r["val/auroc_low"], r["val/auroc_high"]) for r in rows] == [
        ("0.18", "0.79"),
        ("0.15", "0.76"),
    ]


def test_runs_apart_get_no_note_and_repeats_a_t_interval(tmp_path: Path) -> None:
    _single(tmp_path / "0", 0, 0.95, 0.90, 0.99)
    _single(tmp_path / "1", 1, 0.60, 0.50, 0.70)
    summary = summarize(collect_runs([tmp_path / "0", tmp_path / "1"]))
    assert ranking_note(summary) is None
    # Three seeds 0.90, 0.92, 0.94: mean 0.92, std 0.02, t(0.975, 2) = 4.303 -> +-0.0497.
    stat = finite_stat([0.90, 0.92, 0.94])
    assert stat is not None and stat.interval == pytest.approx(
        (0.92 - 0.04969, 0.92 + 0.04969), abs=1e-4
    )
    lone = finite_stat([0.5])
    assert lone is not None and lone.interval is None and lone.text() == "0.500"


def test_the_plot_draws_rates_on_the_whole_0_to_1_axis_with_interval_bars(tmp_path: Path) -> None:
    _single(tmp_path / "0", 0, 0.479, 0.18, 0.79)
    _single(tmp_path / "1", 1, 0.458, 0.15, 0.76)
    summary = summarize(collect_runs([tmp_path / "0", tmp_path / "1"]))
    figure = build_figure(summary)
    (axis,) = [ax for ax in figure.axes if ax.get_visible()]
    assert axis.get_ylim() == (0.0, 1.0)  # not zoomed onto a gap of 0.02
    (bars,) = [c for c in axis.containers]
    segments = bars.lines[2][0].get_segments()
    assert sorted((round(s[0][1], 3), round(s[1][1], 3)) for s in segments) == [
        (0.15, 0.76),
        (0.18, 0.79),
    ]
    assert "interval" in figure.get_suptitle()
