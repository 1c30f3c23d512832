"""Dead-latent detectors on constructed codes whose truth is known."""

from __future__ import annotations

import math

import torch

from saelab.config import TrackingConfig
from saelab.training.tracking import DETECTORS, DeadTracker, precision_recall

S = 5


def _codes(*fired: list[int], rows: int = 4, k: int = 1) -> torch.Tensor:
    """codes [k, rows, S]: latent j fires on fired[j] rows of every arm (the first fired[j] rows)."""
    c = torch.zeros(k, rows, S)
    for j, n in enumerate(fired):
        c[:, :n, j] = 1.0
    return c


def _tracker(k: int = 1, **kw) -> DeadTracker:
    cfg = TrackingConfig(**({"window_batches": 3, "window_threshold": 0.25, "dead_tokens": 8} | kw))
    return DeadTracker(k, S, cfg)


def test_nothing_is_dead_before_the_first_batch():
    t = _tracker()
    for d in DETECTORS:
        assert not t.dead(d).any(), d


def test_single_batch_is_the_latest_batch_only():
    t = _tracker()
    t.update(_codes(1, 0, 4, 0, 2))
    assert t.dead("single_batch").tolist() == [[False, True, False, True, False]]
    t.update(_codes(0, 1, 1, 0, 1))  # latent 0 silent in this batch only: the seed calls it dead
    assert t.dead("single_batch").tolist() == [[True, False, False, True, False]]


def test_window_rate_over_the_last_batches():
    # threshold 0.25 over the last 3 batches of 4 rows (12 rows): dead below 3 firings
    t = _tracker()
    t.update(_codes(4, 0, 2, 0, 0))
    t.update(_codes(0, 0, 0, 1, 0))
    # rows so far 8: rates 4/8, 0, 2/8, 1/8, 0 -> dead: 1, 3, 4 (2/8 = 0.25 is not below)
    assert t.dead("window").tolist() == [[False, True, False, True, True]]
    t.update(_codes(0, 0, 0, 2, 0))
    # 12 rows: 4/12, 0, 2/12, 3/12, 0 -> latent 2 now below, latent 3 at exactly 0.25
    assert t.dead("window").tolist() == [[False, True, True, False, True]]
    t.update(_codes(0, 4, 0, 0, 0))  # the first batch leaves the window: latent 0 has 0/12
    assert t.dead("window").tolist() == [[True, False, True, False, True]]


def test_tokens_since_fired():
    # dead after 8 tokens (2 batches of 4 rows) without firing
    t = _tracker()
    t.update(_codes(1, 0, 1, 1, 1))
    assert t.tokens_since_fired.tolist() == [[0, 4, 0, 0, 0]]
    assert not t.dead("tokens").any()
    t.update(_codes(1, 0, 0, 1, 1))
    assert t.tokens_since_fired.tolist() == [[0, 8, 4, 0, 0]]
    assert t.dead("tokens").tolist() == [[False, True, False, False, False]]
    t.update(_codes(0, 1, 0, 1, 1))  # firing once resets the counter
    assert t.tokens_since_fired.tolist() == [[4, 0, 8, 0, 0]]
    assert t.dead("tokens").tolist() == [[False, False, True, False, False]]


def test_detectors_disagree_as_designed():
    """A rare but alive latent (1 firing in 12 rows) and a latent silent only in the last batch:
    single_batch calls the second dead, window the first, tokens neither."""
    t = _tracker(dead_tokens=100)
    t.update(_codes(1, 2, 2, 2, 2))
    t.update(_codes(0, 2, 2, 2, 2))
    t.update(_codes(0, 2, 2, 2, 0))
    assert t.dead("single_batch").tolist() == [[True, False, False, False, True]]
    assert t.dead("window").tolist() == [[True, False, False, False, False]]
    assert not t.dead("tokens").any()


def test_arms_are_tracked_separately():
    t = _tracker(k=2)
    c = _codes(1, 1, 1, 1, 1, k=2)
    c[1, :, 2] = 0
    t.update(c)
    assert t.dead("single_batch").tolist() == [[False] * 5, [False, False, True, False, False]]


def test_revive_starts_a_fresh_life_in_every_counter_detector():
    t = _tracker()
    for _ in range(3):
        t.update(_codes(2, 0, 2, 0, 2))
    assert t.dead("window")[0, [1, 3]].all() and t.dead("tokens")[0, [1, 3]].all()
    t.revive(0, torch.tensor([1, 3]))
    assert not t.dead("tokens")[0, [1, 3]].any()
    assert not t.dead("window")[0, [1, 3]].any(), "a revived latent has no evidence yet: not dead"
    t.update(_codes(2, 1, 2, 0, 2))  # latent 1 fires once in 4 rows (0.25), latent 3 never
    assert t.dead("window").tolist() == [[False, False, False, True, False]]
    assert t.dead("tokens").tolist() == [[False] * 5]
    t.update(_codes(2, 0, 2, 1, 2))  # latent 1: 1 of its 8 rows (0.125); latent 3: 1 of 8
    assert t.dead("window").tolist() == [[False, True, False, True, False]]


def test_state_dict_round_trip():
    t = _tracker(k=2)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        t.update((torch.rand(2, 4, S, generator=g) < 0.2).float())
    t.revive(1, torch.tensor([0]))
    state = t.state_dict()
    frozen = {k: v.clone() for k, v in state.items()}
    u = _tracker(k=2)
    u.load_state_dict(state)
    for d in DETECTORS:
        assert torch.equal(t.dead(d), u.dead(d)), d
    nxt = (torch.rand(2, 4, S, generator=g) < 0.2).float()
    t.update(nxt)
    u.update(nxt)
    for d in DETECTORS:
        assert torch.equal(t.dead(d), u.dead(d)), d
    for k, v in state.items():  # the saved state is a copy: later updates do not change it
        assert torch.equal(v, frozen[k]), k


def test_precision_recall_numbers():
    predicted = torch.tensor([[True, True, False, False], [False, False, False, False], [True, False, True, False]])
    truth = torch.tensor([[True, False, True, False], [True, False, False, False], [False, False, False, False]])
    p, r = precision_recall(predicted, truth)
    # arm 0: tp 1 of 2 predicted, 1 of 2 true -> 0.5, 0.5
    assert (p[0].item(), r[0].item()) == (0.5, 0.5)
    # arm 1: nothing predicted -> precision NaN; 0 of 1 true found -> recall 0
    assert math.isnan(p[1].item()) and r[1].item() == 0.0
    # arm 2: 0 of 2 predicted are right -> 0; nothing truly dead -> recall NaN
    assert p[2].item() == 0.0 and math.isnan(r[2].item())


def test_a_state_saved_without_ages_loads_as_a_full_window():
    t = _tracker()
    for _ in range(3):
        t.update(_codes(2, 0, 2, 0, 2))
    state = {k: v for k, v in t.state_dict().items() if k != "age"}
    u = _tracker()
    u.load_state_dict(state)
    assert torch.equal(u.dead("window"), t.dead("window"))
