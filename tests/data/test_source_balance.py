"""data.source_balance: the training draw takes each source in proportion to its weight, the
class correction within each source, resumable mid-epoch and split between DDP ranks as today."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers.datamodule import make_dm
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from cxrnet.data.loaders import balanced_class_weights
from cxrnet.data.sampling import EpochSampler
from cxrnet.data.source_balance import draw_weights, drawn_class_weights, source_weights
from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic
from cxrnet.user_errors import DataError

DRAWS = 40_000


def films() -> tuple[list[str], list[int]]:
    """A big public source (300 films, 3/4 pneumonia) and a small site (40 films, 2/5)."""
    sources = ["public"] * 300 + ["site"] * 40
    labels = [int(i % 4 != 0) for i in range(300)] + [int(i % 5 < 2) for i in range(40)]
    return sources, labels


def drawn(weights: list[float], seed: int = 0) -> np.ndarray:
    return np.array([index for index, _ in EpochSampler(DRAWS, seed, weights)])


def within(observed: float, expected: float, n: int) -> bool:
    """``observed`` a binomial fraction of ``n`` draws within 4 standard deviations."""
    return abs(observed - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("class_correction", [False, True], ids=["uniform", "class_corrected"])
@pytest.mark.parametrize("setting", ["equal", {"public": 1, "site": 3}], ids=["equal", "1:3"])
def test_sources_are_drawn_in_proportion_and_classes_as_today_within_each(
    setting, class_correction: bool
) -> None:
    sources, labels = films()
    shares = source_weights(setting, sources)
    assert shares == (
        {"public": 0.5, "site": 0.5} if setting == "equal" else {"public": 0.25, "site": 0.75}
    )
    weights = draw_weights(sources, labels, shares, class_correction)
    assert sum(weights) == pytest.approx(1.0)
    indices = drawn(weights)
    source = np.array(sources)[indices]
    label = np.array(labels)[indices]
    for name, share in shares.items():
        from_source = source == name
        assert within(from_source.mean(), share, DRAWS), (name, from_source.mean())
        # Within the source: each class equally often, or as many as the source has.
        pneumonia = [lab for s, lab in zip(sources, labels, strict=True) if s == name]
        expected = 0.5 if class_correction else sum(pneumonia) / len(pneumonia)
        n = int(from_source.sum())
        assert within(label[from_source].mean(), expected, n), (name, label[from_source].mean())


def test_the_loss_weights_the_classes_the_source_balanced_draw_shows() -> None:
    sources, labels = films()
    shares = source_weights({"public": 1, "site": 3}, sources)
    class_weights = drawn_class_weights(sources, labels, shares, 2)
    fractions = np.bincount(np.array(labels)[drawn(draw_weights(sources, labels, shares, False))])
    fractions = fractions / DRAWS
    # 1 / (k p_c): the expected share of each class among the draws is 1 / (k w_c).
    for weight, fraction in zip(class_weights, fractions, strict=True):
        assert within(fraction, 1 / (2 * weight), DRAWS)
    # Without source balance (one source) it is today's n / (k n_c).
    one = ["public"] * 300
    alone = drawn_class_weights(one, labels[:300], source_weights("equal", one), 2)
    assert alone == pytest.approx(balanced_class_weights(np.array(labels[:300]), 2))


def test_source_balance_errors_name_the_setting() -> None:
    sources, _ = films()
    with pytest.raises(DataError, match=r"data.source_balance names source\(s\) \['kaggle'\]"):
        source_weights({"public": 1, "site": 1, "kaggle": 2}, sources)
    with pytest.raises(DataError, match=r"no weight to the training source\(s\) \['site'\]"):
        source_weights({"public": 1}, sources)
    with pytest.raises(DataError, match=r"data.source_balance.site=-1"):
        source_weights({"public": 1, "site": -1}, sources)
    with pytest.raises(DataError, match="must be none, equal, or a weight per source"):
        source_weights("sites", sources)
    with pytest.raises(DataError, match="must be none, equal, or a weight per source"):
        make_dm("/nowhere", source_balance="balanced")


@pytest.fixture(scope="module")
def two_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("sources")
    spec = SyntheticSpec(n_train=24, n_val=6, n_test=4, min_size=36, max_size=44, seed=1)
    small = SyntheticSpec(**{**vars(spec), "n_train": 8, "seed": 2})
    return {
        "public": str(generate_synthetic(base / "public", spec)),
        "site": str(generate_synthetic(base / "site", small)),
    }


def _module(two_roots: dict[str, str], **kwargs):
    datamodule = make_dm(None, sources=two_roots, seed=11, **kwargs)
    datamodule.setup("fit")
    return datamodule


def _keys(loader) -> list[tuple[int, int]]:
    return list(loader.sampler)


def test_a_resumed_source_balanced_epoch_is_exactly_the_rest_of_it(two_roots) -> None:
    full = _module(two_roots, source_balance={"public": 1, "site": 2}, imbalance="sampler")
    full._resume_at = (3, 0)
    draws = _keys(full.train_dataloader())
    assert full._train_sampler.weights is not None
    resumed = _module(two_roots, source_balance={"public": 1, "site": 2}, imbalance="sampler")
    resumed.load_state_dict({"epoch": 3, "batches": 2})  # as from a mid-epoch checkpoint
    assert _keys(resumed.train_dataloader()) == draws[2 * 8 :]
    # The films and their sources as split.csv names them.
    train = resumed.split_records["train"]
    assert {r.metadata["source"] for r in train} == {"public", "site"}


def test_source_balance_none_draws_as_today(two_roots) -> None:
    datamodule = _module(two_roots, imbalance="sampler")
    labels = datamodule.datasets["train"].labels.numpy()
    per_class = balanced_class_weights(labels, 2)
    today = EpochSampler(len(labels), 11, [per_class[label] for label in labels], epoch=0)
    datamodule._resume_at = (0, 0)
    assert _keys(datamodule.train_dataloader()) == list(today)
    shuffled = _module(two_roots)  # class_weight: a permutation, no weights
    shuffled._resume_at = (0, 0)
    assert _keys(shuffled.train_dataloader()) == list(EpochSampler(len(labels), 11, epoch=0))
    assert shuffled.class_weights == balanced_class_weights(labels, 2)


def test_under_ddp_the_ranks_split_one_source_balanced_draw(two_roots) -> None:
    datamodule = _module(two_roots, source_balance="equal")
    datamodule.trainer = SimpleNamespace(world_size=2)
    loader = datamodule.train_dataloader()
    inner = loader.sampler
    n = len(inner)
    sources = [r.metadata["source"] for r in datamodule.split_records["train"]]
    labels = datamodule.datasets["train"].labels.tolist()
    expected = draw_weights(sources, labels, source_weights("equal", sources), False)
    assert inner.weights.tolist() == pytest.approx(expected)  # the same on every rank
    ranks = []
    for rank in (0, 1):
        torch.manual_seed(5)  # each rank seeded alike, as seed_everything does
        wrapper = DistributedSamplerWrapper(inner, num_replicas=2, rank=rank, shuffle=True)
        wrapper.set_epoch(1)
        ranks.append(list(wrapper))
    torch.manual_seed(5)
    shared = list(inner)
    assert n % 2 == 0  # so neither rank pads its share with a repeat
    assert len(ranks[0]) == len(ranks[1]) == n // 2
    # Disjoint shares of one draw (the same on both ranks) that together are the whole draw.
    assert sorted(ranks[0] + ranks[1]) == sorted(shared)
    assert ranks[0] != ranks[1]
