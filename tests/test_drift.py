"""Result drift: bins, PSI on hand-built distributions, bounded labels, the SQLite store, the report and CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from sam3studio.observability import Observability
from sam3studio.observability.drift import (
    BINS,
    OTHER,
    Distributions,
    bin_index,
    compare,
    normalize_prompt,
    parse_duration,
    psi,
)
from sam3studio.observability.labels import TopPrompts
from sam3studio.observability.store import DB_NAME, HOUR, DriftStore
from sam3studio.results import PromptResult, Segmentation
from sam3studio.service import SegmentOptions
from sam3studio.settings import Settings

runner = CliRunner()
NOW = time.time() // HOUR * HOUR  # "now", on an hour boundary (recent: the store keeps 30 days)


def _cli(*args):
    from sam3studio.cli import app

    return runner.invoke(app, list(args))


def sample(dist: Distributions, prompt: str, presence, top, counts) -> Distributions:
    for p, t, n in zip(presence, top, counts, strict=True):
        dist.add(prompt, float(p), float(t), int(n))
    return dist


def fake_seg(prompts: list[tuple[str, float, list[float]]]) -> Segmentation:
    """A segmentation with these (prompt, presence, instance scores), 1x1 masks: what the observer reads."""
    scores = [s for _, _, ss in prompts for s in ss]
    ids = [i for i, (_, _, ss) in enumerate(prompts) for _ in ss]
    n = len(scores)
    return Segmentation(width=1, height=1, prompts=[PromptResult(t, p, len(ss)) for t, p, ss in prompts],
                        masks=np.ones((n, 1, 1), bool), boxes=np.zeros((n, 4)), scores=scores, prompt_ids=ids,
                        timings={"decode": 0.001, "image_encoding": 0.0, "prompts": 0.0, "postprocess": 0.001,
                                 "total": 0.002})


# ---------------------------------------------------------------------------- bins and PSI
@pytest.mark.parametrize(("metric", "value", "index"), [
    ("presence", 0.0, 0), ("presence", 0.1, 0), ("presence", 0.15, 1), ("presence", 0.95, 9), ("presence", 1.0, 9),
    ("instances", 0, 0), ("instances", 1, 1), ("instances", 3, 3), ("instances", 4, 3), ("instances", 5, 4),
    ("instances", 49, 6), ("instances", 50, 7), ("instances", 1000, 7),
])
def test_bins(metric, value, index):
    assert bin_index(metric, value) == index
    assert index <= len(BINS[metric])


def test_psi_by_hand():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)  # same shape, any size
    # shares (.5, .5) -> (.9, .1): (.4 ln 1.8) + (-.4 ln .2) = 0.2351 + 0.6438
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * np.log(1.8) + 0.4 * np.log(5), rel=1e-9)
    assert psi([50, 50], [90, 10]) == pytest.approx(psi([90, 10], [50, 50]))  # symmetric
    assert np.isfinite(psi([100, 0], [0, 100]))  # empty bins count as a tiny share
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        psi([0, 0], [1, 1])


def test_the_report_flags_a_shifted_distribution_and_not_an_unchanged_one():
    rng = np.random.default_rng(0)
    ref, cur = Distributions(), Distributions()
    n = 400
    # "cat": the same process on both sides (different draws): stable.
    for dist in (ref, cur):
        sample(dist, "cat", rng.beta(8, 2, n), rng.beta(8, 2, n), rng.poisson(2, n))
    # "dog": presence and top scores fell (a model swap), counts alike: drift.
    sample(ref, "dog", rng.beta(8, 2, n), rng.beta(8, 2, n), rng.poisson(2, n))
    sample(cur, "dog", rng.beta(2, 5, n), rng.beta(2, 5, n), rng.poisson(2, n))
    sample(ref, "rare", [0.9] * 5, [0.9] * 5, [1] * 5)
    sample(cur, "rare", [0.1] * 5, [0.1] * 5, [1] * 5)
    sample(cur, "new one", [0.5] * 40, [0.5] * 40, [1] * 40)
    rows = {r.prompt: r for r in compare(ref, cur, min_count=30)}
    assert rows["dog"].status == "drift" and rows["dog"].psi["presence"] > 1 and rows["dog"].psi["instances"] < 0.1
    assert rows["cat"].status == "stable" and rows["cat"].max_psi < 0.1
    assert rows["rare"].status == "too_few" and rows["rare"].max_psi is None
    assert rows["new one"].status == "new"
    assert [r.prompt for r in compare(ref, cur)][:1] == ["dog"]  # the most shifted first
    assert rows["dog"].to_dict()["status"] == "drift"


def test_chance_differences_of_small_samples_are_not_flagged():
    from scipy.stats import chi2

    def dist(presence_bins):
        d = Distributions()
        for metric in ("presence", "top_score", "instances"):
            for i, n in enumerate(presence_bins if metric == "presence" else (sum(presence_bins),)):
                d.add_bin("p", metric, i, n)
        return d

    # The same shares, (.5, .5) -> (.7, .3): PSI 0.169 either way, past the 0.1 "watch" line.
    small = compare(dist((20, 20)), dist((28, 12)), min_count=30)[0]
    large = compare(dist((2000, 2000)), dist((2800, 1200)), min_count=30)[0]
    assert small.psi["presence"] == pytest.approx(large.psi["presence"]) == pytest.approx(0.2 * np.log(1.4) + 0.2 * np.log(5 / 3))
    assert small.noise["presence"] == pytest.approx(chi2.ppf(0.99, 1) * (1 / 40 + 1 / 40))  # 0.33: chance can do it
    assert small.status == "stable" and large.status == "watch"


def test_prompts_and_durations_parse():
    assert normalize_prompt("  Red   CAR\t") == "red car"
    assert parse_duration("24h") == 86400 and parse_duration("1d12h") == 1.5 * 86400 and parse_duration("90m") == 5400
    for bad in ("", "12", "3 days", "-1h", "0h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_baselines_round_trip_and_bad_ones_are_one_sentence(tmp_path):
    dist = sample(Distributions(), "cat", [0.9, 0.8], [0.7, 0.6], [1, 3])
    path = dist.save_baseline(tmp_path / "b.json", source="test")
    assert Distributions.load_baseline(path).counts == dist.counts
    data = json.loads(path.read_text())
    for broken, message in (({**data, "format": "x"}, "not a drift baseline"),
                            ({**data, "bins": {}}, "bins differ"),
                            ({**data, "prompts": {"cat": {"presence": [1]}}}, "must be 10 counts")):
        with pytest.raises(ValueError, match=message):
            Distributions.from_baseline(broken)


# ---------------------------------------------------------------------------- bounded labels
def test_top_prompts_label_the_frequent_ones_and_one_offs_never():
    demoted = []
    top = TopPrompts(slots=3, capacity=30, on_demote=demoted.append)
    for i in range(10_000):
        top.label(f"one-off {i}")
        if i % 10 == 0:
            for p in ("cat", "dog", "car"):
                assert top.label(p) in (p, OTHER)
    assert top.labelled == {"cat", "dog", "car"} and len(top.counts) <= 30 and not demoted
    for _ in range(7000):  # "bird" now far more frequent than any labelled prompt: it takes a slot
        top.label("bird")
    assert "bird" in top.labelled and len(top.labelled) == 3 and len(demoted) == 1


def test_ten_thousand_distinct_prompts_keep_metrics_and_store_bounded(tmp_path):
    settings = Settings(data_dir=tmp_path, drift_top_prompts=5)
    obs = Observability(settings)
    obs.store.max_prompts_per_hour = 100
    start = time.perf_counter()
    for i in range(10_000):
        obs.observe_segment(fake_seg([(f"Prompt number {i}", 0.5, [0.7]), ("cat", 0.9, [0.95, 0.8])]),
                            SegmentOptions())
    elapsed = time.perf_counter() - start
    text = obs.exposition(None).body.decode()
    prompts = {s.labels["prompt"] for f in text_string_to_metric_families(text) for s in f.samples if "prompt" in s.labels}
    assert prompts == {"cat", OTHER}
    samples = sum(1 for line in text.splitlines() if line.startswith("sam3studio_drift_"))
    assert samples <= 3 * (5 + 1) * 15  # three histograms, slots + other, buckets + sum/count/created
    obs.close()
    store = DriftStore(tmp_path / DB_NAME, flush_s=0)
    dist = store.window(0, time.time() + HOUR)
    assert len(dist) == 100 + 1 and dist.total("cat") == 10_000  # 99 distinct prompts of this hour + cat, + other
    assert dist.total(OTHER) == 10_000 - 99
    assert elapsed < 20, f"{elapsed:.1f} s for 10 000 observations"


def test_exemplar_boxes_are_not_watched(tmp_path):
    obs = Observability(Settings(data_dir=tmp_path))
    obs.observe_segment(fake_seg([("cat", 0.9, [0.9])]), SegmentOptions(boxes=[[0, 0, 1, 1]]))
    assert obs._store is None  # nothing recorded: the store was not even opened
    assert "sam3studio_drift_presence_score_count" not in obs.exposition(None).body.decode()


# ---------------------------------------------------------------------------- the store
def test_store_buckets_by_hour_and_windows_meet_without_overlap(tmp_path):
    store = DriftStore(tmp_path / DB_NAME, flush_s=0)
    for h in range(48):  # one observation per hour for two days, presence rising after the first day
        store.add("cat", 0.9 if h >= 24 else 0.2, 0.5, 1, when=NOW - (48 - h) * HOUR + 60)
    store.flush()
    first, second = store.window(NOW - 48 * HOUR, NOW - 24 * HOUR), store.window(NOW - 24 * HOUR, NOW)
    assert first.total("cat") == 24 and second.total("cat") == 24
    assert first.counts["cat"]["presence"][bin_index("presence", 0.2)] == 24
    assert second.counts["cat"]["presence"][bin_index("presence", 0.9)] == 24
    store.add("cat", 0.5, 0.5, 1, when=NOW - 47.5 * HOUR)  # adds to an existing hour's rows
    store.flush()
    assert store.window(NOW - 48 * HOUR, NOW).total("cat") == 49
    store.close()


def test_retention_drops_old_hours_and_close_writes_the_rest(tmp_path):
    store = DriftStore(tmp_path / DB_NAME, retention_hours=24, flush_s=0)
    now = time.time()
    store.add("old", 0.5, 0.5, 1, when=now - 30 * HOUR)
    store.add("recent", 0.5, 0.5, 1, when=now - 2 * HOUR)
    store.close()  # flushes, then prunes hours past the retention
    again = DriftStore(tmp_path / DB_NAME, flush_s=0)
    assert set(again.window(0, now + HOUR).counts) == {"recent"}
    again.close()


def test_the_background_writer_flushes(tmp_path):
    store = DriftStore(tmp_path / DB_NAME, flush_s=0.05)
    store.add("cat", 0.5, 0.5, 1)
    reader = DriftStore(tmp_path / DB_NAME, flush_s=0)
    deadline = time.monotonic() + 5
    while reader.window(0, time.time() + HOUR).total("cat") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.window(0, time.time() + HOUR).total("cat") == 1
    store.close()
    reader.close()


# ---------------------------------------------------------------------------- sam3studio drift / eval --save-baseline
@pytest.fixture
def drift_dir(tmp_path):
    """A store whose last day differs from the week before for "dog", not for "cat"."""
    rng = np.random.default_rng(1)
    store = DriftStore(tmp_path / DB_NAME, flush_s=0)
    for h in range(24 * 8):
        when = NOW - (24 * 8 - h) * HOUR + 1
        recent = h >= 24 * 7
        for _ in range(3):
            store.add("cat", rng.beta(8, 2), rng.beta(8, 2), int(rng.poisson(2)), when=when)
            dog = rng.beta(2, 5) if recent else rng.beta(8, 2)
            store.add("dog", dog, dog, int(rng.poisson(2)), when=when)
    store.close()
    return tmp_path


def _until(before_s: float = 0.0):
    return datetime.fromtimestamp(NOW - before_s, UTC).isoformat()


def test_drift_cli_compares_two_windows(drift_dir):
    res = _cli("drift", "--data-dir", str(drift_dir), "--until", _until(), "--json", "-")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    status = {r["prompt"]: r["status"] for r in report["prompts"]}
    assert status == {"dog": "drift", "cat": "stable"}
    assert report["prompts"][0]["current_n"] == 72 and report["prompts"][0]["reference_n"] == 3 * 24 * 7
    table = _cli("drift", "--data-dir", str(drift_dir), "--until", _until())
    assert table.exit_code == 0 and "dog" in table.output and "1 drift, 1 stable" in table.output
    assert _cli("drift", "--data-dir", str(drift_dir), "--until", _until(), "--fail-on-drift").exit_code == 1
    only_cat = _cli("drift", "--data-dir", str(drift_dir), "--until", _until(), "--prompt", "CAT", "--fail-on-drift")
    assert only_cat.exit_code == 0, only_cat.output


def test_drift_cli_against_a_saved_baseline(drift_dir, tmp_path):
    week_ago = _cli("drift", "--data-dir", str(drift_dir), "--until", _until(2 * 86400),  # before the change
                    "--current", "3d", "--save-baseline", str(tmp_path / "base.json"))
    assert week_ago.exit_code == 0, week_ago.output
    res = _cli("drift", "--data-dir", str(drift_dir), "--until", _until(), "--baseline", str(tmp_path / "base.json"),
               "--json", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert {r["prompt"]: r["status"] for r in report["prompts"]} == {"dog": "drift", "cat": "stable"}
    assert report["reference"] == {"baseline": str(tmp_path / "base.json")}


@pytest.mark.parametrize(("args", "message"), [
    (["--current", "3 days"], "not a duration"),
    (["--until", "yesterday"], "ISO time"),
    (["--threshold", "0"], "--threshold must be > 0"),
    (["--baseline", "/no/such/baseline.json"], "could not read the baseline"),
])
def test_drift_cli_bad_input_is_one_line(drift_dir, args, message):
    res = _cli("drift", "--data-dir", str(drift_dir), *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_drift_cli_without_data(tmp_path):
    res = _cli("drift", "--data-dir", str(tmp_path / "empty"))
    assert res.exit_code == 2 and "no drift data" in res.output


def test_eval_saves_a_baseline_the_drift_report_reads(tmp_path, drift_dir):
    from PIL import Image

    from sam3studio.evaluation import Predictions

    images = tmp_path / "images"
    images.mkdir()
    n = 40
    for i in range(1, n + 1):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"{i}.png")
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 8} for i in range(1, n + 1)],
          "categories": [{"id": 1, "name": "Dog"}, {"id": 2, "name": "cat"}], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    dets = [{"image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2], "score": s}
            for i in range(1, n + 1) for s in (0.9, 0.7, 0.3)]  # two above the 0.5 threshold, one below
    presence = [{"image_id": i, "category_id": c, "score": 0.8 if c == 1 else 0.1} for i in range(1, n + 1) for c in (1, 2)]
    Predictions(dets, presence).save(tmp_path / "preds.json")
    res = _cli("eval", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "preds.json"), "--out",
               str(tmp_path / "report"), "--save-baseline", str(tmp_path / "base.json"))
    assert res.exit_code == 0, res.output
    base = Distributions.load_baseline(tmp_path / "base.json")
    assert base.total("dog") == n and base.total("cat") == n
    assert base.counts["dog"]["instances"][bin_index("instances", 2)] == n
    assert base.counts["dog"]["top_score"][bin_index("top_score", 0.9)] == n
    assert base.counts["cat"]["instances"][0] == n and base.counts["cat"]["presence"][bin_index("presence", 0.1)] == n
    report = _cli("drift", "--data-dir", str(drift_dir), "--until", _until(), "--baseline", str(tmp_path / "base.json"),
                  "--json", "-")
    assert report.exit_code == 0, report.output
    assert {r["prompt"] for r in json.loads(report.output)["prompts"]} == {"dog", "cat"}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(dets))  # a COCO results list: no presence scores, no baseline
    res = _cli("eval", str(tmp_path / "gt.json"), "--predictions", str(plain), "--out", str(tmp_path / "r2"),
               "--save-baseline", str(tmp_path / "b2.json"))
    assert res.exit_code != 0 and "no presence scores" in res.output
