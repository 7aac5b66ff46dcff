"""Tests for deepnotes.vision.online_action: causality, shapes, losses and the metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from deepnotes.data.sensor_streams import synthetic_stream
from deepnotes.vision.online_action import (
    IDN,
    MODELS,
    TRN,
    IDUCell,
    OadTR,
    RecurrentDetector,
    action_instances,
    anticipation_accuracy,
    average_precision,
    build_model,
    calibrated_average_precision,
    detection_latency,
    detection_loss,
    frame_map,
    future_targets,
)

D, C1, K = 6, 4, 3  # features per frame, classes incl. background, horizon


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second thread only adds synchronisation on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(name, **kw):
    torch.manual_seed(0)
    return build_model(name, D, C1, hidden=16, horizon=K, window=5, **kw).eval()


# --------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("name", MODELS)
def test_shapes(name):
    out = _model(name)(torch.randn(3, 11, D))
    assert out.current.shape == (3, 11, C1)
    assert out.future.shape == (3, 11, K, C1)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("t", [0, 3, 9])
def test_causal_future_frames_do_not_change_the_past(name, t):
    """Row t of every output is a function of frames 0..t only: perturb t+1.. and compare."""
    model = _model(name)
    gen = torch.Generator().manual_seed(t)
    x = torch.randn(2, 14, D, generator=gen)
    x2 = x.clone()
    x2[:, t + 1:] = 100 * torch.randn(2, 14 - t - 1, D, generator=gen)
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a.current[:, :t + 1], b.current[:, :t + 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(a.future[:, :t + 1], b.future[:, :t + 1], rtol=0, atol=1e-5)
    # ...and the perturbation is visible from frame t + 1 on (the test can fail)
    assert (a.current[:, t + 1] - b.current[:, t + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_streaming_prefix_equals_full_stream(name):
    """Running on the first t frames alone gives the same rows as running on the whole stream."""
    model = _model(name)
    x = torch.randn(1, 12, D)
    with torch.no_grad():
        full = model(x).current
        for t in (1, 4, 12):
            torch.testing.assert_close(model(x[:, :t]).current, full[:, :t], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_last_rows_equal_the_full_output(name):
    """``model(x, last=L)`` returns the last L rows of ``model(x)``, and its loss matches."""
    model = _model(name)
    x = torch.randn(2, 9, D)
    labels = torch.randint(0, C1, (2, 9))
    with torch.no_grad():
        full, part = model(x), model(x, last=3)
        torch.testing.assert_close(part.current, full.current[:, -3:], rtol=0, atol=1e-5)
        torch.testing.assert_close(part.future, full.future[:, -3:], rtol=0, atol=1e-5)
        # the loss of the last rows: their own targets, the future ones read from the input's
        _, parts = detection_loss(part, labels)
        masked = labels.clone()
        masked[:, :6] = -100
        _, parts_full = detection_loss(full, masked)
        assert parts["ce_current"] == pytest.approx(parts_full["ce_current"], rel=1e-5)
        tgt = future_targets(labels, K)[:, -3:]
        ce_future = torch.nn.functional.cross_entropy(full.future[:, -3:].reshape(-1, C1),
                                                      tgt.reshape(-1))
        assert parts["ce_future"] == pytest.approx(float(ce_future), rel=1e-5)
        # labels past the input's end give the last rows' anticipation its targets
        ahead = torch.randint(0, C1, (2, K))
        _, parts_ahead = detection_loss(part, torch.cat([labels, ahead], 1), lookahead=K)
        assert parts_ahead["ce_current"] == pytest.approx(parts["ce_current"], rel=1e-6)
        tgt = future_targets(torch.cat([labels, ahead], 1), K)[:, 6:9]
        assert (tgt >= 0).all()  # every anticipated frame has a target now
        ce_ahead = torch.nn.functional.cross_entropy(part.future.reshape(-1, C1),
                                                     tgt.reshape(-1))
        assert parts_ahead["ce_future"] == pytest.approx(float(ce_ahead), rel=1e-5)
    with pytest.raises(ValueError, match="last"):
        model(x, last=10)
    with pytest.raises(ValueError, match="lookahead"):
        detection_loss(part, labels, lookahead=-1)
    with pytest.raises(ValueError, match="labels"):
        detection_loss(part, labels[:, :2])


def test_window_models_forget_frames_older_than_the_window():
    for cls in (IDN, OadTR):
        torch.manual_seed(0)
        model = cls(D, C1, hidden=16, horizon=K, window=4).eval()
        x = torch.randn(1, 10, D)
        x2 = x.clone()
        x2[:, :3] += 5.0  # frames 0..2 lie outside the window of frame t >= 6
        with torch.no_grad():
            a, b = model(x).current, model(x2).current
        torch.testing.assert_close(a[:, 6:], b[:, 6:], rtol=0, atol=1e-5)
        assert (a[:, 3] - b[:, 3]).abs().max() > 1e-4


def test_idu_cell_matches_its_equations():
    torch.manual_seed(1)
    cell = IDUCell(5)
    x, x0, h = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    r = torch.sigmoid(h @ cell.w_hr.weight.T + x0 @ cell.w_0r.weight.T + cell.w_0r.bias)
    z = torch.sigmoid(x @ cell.w_xz.weight.T + x0 @ cell.w_0z.weight.T + cell.w_0z.bias)
    cand = torch.tanh(x @ cell.w_xh.weight.T + cell.w_xh.bias + (r * h) @ cell.w_hh.weight.T)
    torch.testing.assert_close(cell(x, x0, h), (1 - z) * (r * h) + z * cand)


def test_trn_future_feedback_reaches_the_next_step():
    """TRN's encoder at t + 1 reads the decoder's anticipation made at t: zeroing the future gate
    changes the output from the second frame on but not at the first."""
    torch.manual_seed(0)
    model = TRN(D, C1, hidden=16, horizon=K).eval()
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        a = model(x).current
        model.future_gate[0].weight.zero_()
        model.future_gate[0].bias.zero_()
        b = model(x).current
    torch.testing.assert_close(a[:, 0], b[:, 0])
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-4


def test_future_targets_and_loss():
    labels = torch.tensor([[0, 1, 1, 2, 0]])
    tgt = future_targets(labels, 2)
    np.testing.assert_array_equal(tgt[0].numpy(), [[1, 1], [1, 2], [2, 0], [0, -100],
                                                   [-100, -100]])
    for name in MODELS:
        model = _model(name).train()
        out = model(torch.randn(2, 5, D))
        loss, parts = detection_loss(out, labels.expand(2, -1))
        assert torch.isfinite(loss) and "ce_current" in parts
        assert ("contrastive" in parts) == (name == "idn")
        loss.backward()
    with pytest.raises(ValueError, match="labels"):
        detection_loss(out, labels)  # batch of 1 for an output of 2 streams


def test_models_learn_a_synthetic_stream():
    """Forty steps on the synthetic generator lift the frame mAP far above chance (GRU, IDN)."""
    rng = np.random.default_rng(0)
    s = synthetic_stream(3, 40, rng, dim=D, noise=0.2)
    x = torch.from_numpy(s.x)[None]
    y = torch.from_numpy(s.labels)[None]
    chance, _ = frame_map(rng.random((len(s.labels), C1)), s.labels)
    for name in ("gru", "idn"):
        torch.manual_seed(0)
        model = build_model(name, D, C1, hidden=16, horizon=K, window=16)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(40):
            idx = rng.integers(0, x.shape[1] - 64, 4)
            xb = torch.cat([x[:, o:o + 64] for o in idx])
            yb = torch.cat([y[:, o:o + 64] for o in idx])
            loss, _ = detection_loss(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scores = model.eval()(x).current[0].softmax(-1).numpy()
        mean_ap, _ = frame_map(scores, s.labels)
        assert chance < 0.4 and mean_ap > 0.6, (name, chance, mean_ap)


@pytest.mark.parametrize("bad, match", [
    (dict(in_dim=0), "in_dim"),
    (dict(n_classes=1), "n_classes"),
    (dict(hidden=-1), "hidden"),
    (dict(dropout=1.0), "dropout"),
])
def test_constructor_errors(bad, match):
    kw = dict(in_dim=D, n_classes=C1)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        RecurrentDetector(**kw)


def test_input_errors():
    with pytest.raises(ValueError, match="kind"):
        RecurrentDetector(D, C1, kind="rnn")
    with pytest.raises(ValueError, match="divide"):
        OadTR(D, C1, hidden=10, heads=4)
    with pytest.raises(ValueError, match="name"):
        build_model("tcn", D, C1)
    with pytest.raises(ValueError, match="shape"):
        _model("gru")(torch.randn(2, 5, D + 1))
    with pytest.raises(TypeError, match="torch.Tensor"):
        _model("lstm")(np.zeros((1, 3, D), dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Metrics


def _ap_brute(scores, targets, calibrated=False):
    """Mean over positives of the (calibrated) precision at that positive's score."""
    scores, targets = np.asarray(scores), np.asarray(targets).astype(bool)
    w = (~targets).sum() / targets.sum()
    vals = []
    for s in scores[targets]:
        above = scores >= s
        tp, fp = (above & targets).sum(), (above & ~targets).sum()
        vals.append(w * tp / (w * tp + fp) if calibrated else tp / (tp + fp))
    return np.mean(vals)


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_matches_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    targets = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
    targets[0] = 1
    # seeds >= 3 draw scores from a few values: many ties
    scores = rng.integers(0, 5, n) / 4 if seed >= 3 else rng.standard_normal(n)
    ap = average_precision(scores, targets)
    assert ap == pytest.approx(average_precision_score(targets, scores), abs=1e-12)
    assert ap == pytest.approx(_ap_brute(scores, targets), abs=1e-12)
    cap = calibrated_average_precision(scores, targets)
    assert cap == pytest.approx(_ap_brute(scores, targets, calibrated=True), abs=1e-12)


def test_calibrated_ap_known_answers():
    # perfect ranking: both are 1; balanced classes: calibration changes nothing (w = 1)
    assert average_precision([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert calibrated_average_precision([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    s, y = [0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]
    assert calibrated_average_precision(s, y) == pytest.approx(average_precision(s, y))
    # one positive ranked second among 1 positive + 3 negatives: AP = 1/2, w = 3: cAP = 3/4
    assert average_precision([2, 3, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert calibrated_average_precision([2, 3, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.75)
    # three more negatives ranked last: AP keeps its value, cAP weighs the one false positive
    # above the positive by 1 / w with w = 6 now: 6 / 7
    s, y = [2, 3, 1, 0, -1, -1, -1], [1, 0, 0, 0, 0, 0, 0]
    assert average_precision(s, y) == pytest.approx(0.5)
    assert calibrated_average_precision(s, y) == pytest.approx(6 / 7)
    assert np.isnan(average_precision([1, 2], [0, 0]))
    assert np.isnan(calibrated_average_precision([1, 2], [1, 1]))


def test_metric_errors():
    with pytest.raises(ValueError, match="binary"):
        average_precision([1, 2], [0, 2])
    with pytest.raises(ValueError, match="equal length"):
        average_precision([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        calibrated_average_precision([np.nan, 1], [0, 1])
    with pytest.raises(ValueError, match="background"):
        frame_map(np.zeros((3, 2)), np.array([0, 1, 1]), background=5)
    with pytest.raises(ValueError, match="no action class"):
        frame_map(np.zeros((3, 2)), np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="equal length"):
        detection_latency(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="future_scores"):
        anticipation_accuracy(np.zeros((3, 2)), np.zeros(3))


def test_frame_map_excludes_background_and_absent_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)  # class 3 never occurs
    scores = rng.random((200, 4))
    mean, per_class = frame_map(scores, labels)
    assert np.isnan(per_class[0]) and np.isnan(per_class[3])
    for c in (1, 2):
        assert per_class[c] == pytest.approx(average_precision_score(labels == c, scores[:, c]))
    assert mean == pytest.approx(np.mean(per_class[1:3]))
    cmean, cper = frame_map(scores, labels, calibrated=True)
    assert cmean == pytest.approx(np.nanmean(cper))
    # the background column's scores do not matter
    scores2 = scores.copy()
    scores2[:, 0] = rng.random(200)
    assert frame_map(scores2, labels)[0] == mean


def test_action_instances_and_latency():
    labels = np.array([0, 1, 1, 1, 0, 2, 2, 1, 1, 0, 3, 3])
    inst = action_instances(labels)
    np.testing.assert_array_equal(inst, [[1, 4, 1], [5, 7, 2], [7, 9, 1], [10, 12, 3]])
    pred = np.array([0, 0, 0, 1, 1, 2, 1, 1, 0, 3, 0, 0])
    lat, inst2 = detection_latency(pred, labels)
    np.testing.assert_array_equal(inst2, inst)
    # instance 1 hit at its 3rd frame, 2 at once, 3 at once, 4 never (the early 3 is before it)
    np.testing.assert_array_equal(lat, [2, 0, 0, np.nan])
    assert action_instances(np.array([0, 0])).shape == (0, 3)


def test_anticipation_accuracy_brute_force():
    rng = np.random.default_rng(3)
    t_len, k = 40, 4
    fs = rng.random((t_len, k, 3))
    labels = rng.integers(0, 3, t_len)
    acc = anticipation_accuracy(fs, labels)
    for i in range(1, k + 1):
        hits = [fs[t, i - 1].argmax() == labels[t + i] for t in range(t_len - i)]
        assert acc[i - 1] == pytest.approx(np.mean(hits))
    # an oracle that copies the true future is always right
    oracle = np.zeros((t_len, k, 3))
    for t in range(t_len):
        for i in range(1, k + 1):
            if t + i < t_len:
                oracle[t, i - 1, labels[t + i]] = 1
    np.testing.assert_array_equal(anticipation_accuracy(oracle, labels), np.ones(k))
