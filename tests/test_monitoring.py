"""Monitoring: %collected, %label, %monitor on real local deployments; drift statistics; table flattening."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

import mlops_magics as mm
from mlops_magics import api
from mlops_magics.errors import InvalidInputError, NotFoundError
from mlops_magics.monitoring import collection
from mlops_magics.monitoring.drift import feature_drift, ks_2samp, psi
from mlops_magics.monitoring.table import input_rows, predictions
from mlops_magics.registry import Registry

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


@pytest.fixture
def iris_frame() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture
def collecting(registry: Registry, iris_frame: tuple[pd.DataFrame, pd.Series]) -> Any:
    """iris:1 (a LogisticRegression on a DataFrame) deployed locally with --collect."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris_frame
    mm.register(LogisticRegression(max_iter=500).fit(X, y), "iris", sample=X)
    deployed = mm.deploy("iris", collect=True, registry=registry)
    yield deployed
    mm.undeploy(all_services=True, registry=registry)


def _wait_for(service: str, count: int, registry: Registry) -> pd.DataFrame:
    deadline = time.monotonic() + 10
    while True:
        frame = api.collected(service, registry=registry)
        if frame["request_id"].nunique() >= count or time.monotonic() > deadline:
            return frame
        time.sleep(0.1)


def test_collected_rows_have_the_features_predictions_and_request_ids(
        collecting: Any, registry: Registry, iris_frame: tuple[pd.DataFrame, pd.Series]) -> None:
    X, _ = iris_frame
    mm.call("iris", X.iloc[:3], request_id="batch-1", registry=registry)  # records: one request, three rows
    mm.call("iris", X.iloc[[60]], request_id="rows-1", registry=registry)
    frame = _wait_for("iris", 2, registry)
    assert list(frame.columns[:5]) == ["time", "request_id", "row", "status", "latency_ms"]
    assert set(FEATURES) <= set(frame.columns)
    assert list(frame["request_id"]) == ["batch-1"] * 3 + ["rows-1"]
    assert list(frame["row"]) == [0, 1, 2, 0]
    assert list(frame["prediction"]) == [0, 0, 0, 1]
    assert frame.loc[3, "petal length (cm)"] == X.iloc[60]["petal length (cm)"]
    assert str(frame["time"].dt.tz) == "UTC" and (frame["latency_ms"] > 0).all()
    stats = frame.attrs["stats"]
    assert (stats.written, stats.dropped, stats.lost) == (2, 0, 0)
    assert len(api.collected("iris", limit=1, registry=registry)) == 1
    assert api.collected("iris", since="1h", registry=registry)["request_id"].nunique() == 2
    later = time.time() + 60
    assert api.collected("iris", since=later, registry=registry).empty


def test_drift_flags_a_shifted_feature_and_not_the_others(
        collecting: Any, registry: Registry, iris_frame: tuple[pd.DataFrame, pd.Series]) -> None:
    X, _ = iris_frame
    rng = np.random.default_rng(0)
    sample = X.iloc[rng.integers(0, len(X), 300)].copy()
    sample["petal length (cm)"] += 2 * X["petal length (cm)"].std()
    for start in range(0, 300, 10):
        mm.call("iris", sample.iloc[start:start + 10], registry=registry)
    _wait_for("iris", 30, registry)
    report = api.monitor("iris", data=X, registry=registry)
    assert report.drifted == ["petal length (cm)"]
    by_name = {d.feature: d for d in report.drift}
    assert by_name["petal length (cm)"].psi > 0.2 and by_name["sepal width (cm)"].psi < 0.1
    assert report.requests == 30 and report.rows == 300 and report.errors == 0
    assert report.prediction_kind == "classes" and report.predictions.sum() == 300
    html = report._repr_html_()
    assert "data:image/png;base64," in html and "Drift in petal length (cm)" in html
    # Against the deployed version's 5-row input example the report warns that the baseline is small.
    small = api.monitor("iris", registry=registry)
    assert any("The baseline has 5 rows" in n for n in small.notes)


def test_labels_join_by_request_id_and_give_accuracy_over_time(
        collecting: Any, registry: Registry, iris_frame: tuple[pd.DataFrame, pd.Series]) -> None:
    X, y = iris_frame
    for i in range(0, 150, 15):
        mm.call("iris", X.iloc[[i]], request_id=f"req-{i}", registry=registry)
    _wait_for("iris", 10, registry)
    truth = pd.DataFrame({"request_id": [f"req-{i}" for i in range(0, 150, 15)],
                          "label": [int(y.iloc[i]) for i in range(0, 150, 15)]})
    wrong = truth.assign(label=(truth["label"] + 1) % 3).iloc[:2]
    attached = api.label("iris", truth, registry=registry)
    assert (attached.attached, attached.matched) == (10, 10)
    frame = api.collected("iris", registry=registry)
    assert list(frame["label"]) == list(truth["label"])
    expected = float((frame["prediction"] == frame["label"]).mean())
    report = api.monitor("iris", registry=registry)
    assert report.quality == pytest.approx(expected) and report.labelled_rows == 10
    corrected = api.label("iris", wrong, registry=registry)  # a later label wins, and says it replaced one
    assert api.monitor("iris", registry=registry).quality == pytest.approx(expected - 0.2)
    first = int(truth["label"][0])
    assert corrected.replaced == [("req-0", first, (first + 1) % 3), ("req-15", int(truth["label"][1]),
                                                                     (int(truth["label"][1]) + 1) % 3)]
    assert repr(corrected) == (f"iris: 2 labels attached, 2 to collected requests, 2 replaced an earlier label (e.g. "
                               f"'req-0': {first} -> {(first + 1) % 3})")
    partly = api.label("iris", {"req-0": (first + 1) % 3, "req-15": 9, "never-sent": 1}, registry=registry)
    assert partly.matched == 2 and [r[0] for r in partly.replaced] == ["req-15"]  # the same label again: no change
    assert repr(partly) == ("iris: 3 labels attached, 2 to collected requests, 1 replaced an earlier label ('req-15': "
                            f"{(int(truth['label'][1]) + 1) % 3} -> 9); 1 request id is not among the records (yet), "
                            "'never-sent': kept, it joins when that record arrives")
    with pytest.raises(InvalidInputError, match="None of the 1 request ids is among the records of 'iris'"):
        api.label("iris", {"typo": 1}, registry=registry)
    with pytest.raises(InvalidInputError, match="needs a 'request_id' column"):
        api.label("iris", pd.DataFrame({"id": ["req-0"], "label": [0]}), registry=registry)


def test_errors_are_counted_and_shown(collecting: Any, registry: Registry,
                                      iris_frame: tuple[pd.DataFrame, pd.Series]) -> None:
    with pytest.raises(mm.MlopsError, match="answered 400"):
        mm.call("iris", {"data": [[1, 2]]}, request_id="bad", registry=registry)  # rows without the columns
    mm.call("iris", iris_frame[0].iloc[[0]], request_id="good", registry=registry)
    frame = _wait_for("iris", 2, registry)
    failed = frame[frame["request_id"] == "bad"].iloc[0]
    assert failed["status"] == 400 and "got 1 row x 2 unnamed columns; expected 4 named columns" in failed["error"]
    report = api.monitor("iris", registry=registry)
    assert report.errors == 1 and report.error_rate == 0.5
    assert int(report.series["errors"].sum()) == 1


def test_mistakes_get_clear_messages(registry: Registry, iris_lr: Any, iris: Any) -> None:
    with pytest.raises(NotFoundError, match="No deployment named 'nope'"):
        api.collected("nope", registry=registry)
    mm.register(iris_lr, "plain", sample=iris[0][:5])
    mm.deploy("plain", registry=registry)
    try:
        with pytest.raises(NotFoundError, match="deployed without --collect.*--collect"):
            api.monitor("plain", registry=registry)
    finally:
        mm.undeploy("plain", registry=registry)
    with pytest.raises(InvalidInputError, match="--since 'yesterday' is neither a duration nor a time"):
        collection.parse_since("yesterday")
    # an ISO time, as the help says (it was refused as "not a duration"); UTC unless it names a zone
    assert collection.parse_since("2026-12-02T07:00:00") == 1796194800.0
    assert collection.parse_since("2026-12-02T08:00:00+01:00") == 1796194800.0
    with pytest.raises(InvalidInputError, match="--sample-rate 1.5 is out of range"):
        mm.deploy("plain", sample_rate=1.5, registry=registry)


def test_collection_survives_reload_and_the_sample_rate_is_kept(registry: Registry, iris_lr: Any, iris: Any) -> None:
    mm.register(iris_lr, "sampled", sample=iris[0][:5])
    deployed = mm.deploy("sampled", sample_rate=0.5, registry=registry)
    try:
        assert deployed.config["collect"] is True and deployed.config["sample_rate"] == 0.5
        reloaded = mm.reload("sampled", registry=registry)
        assert reloaded.config["collect"] is True and reloaded.config["sample_rate"] == 0.5
        for _ in range(200):
            mm.call("sampled", iris[0][:1], registry=registry)
    finally:
        mm.undeploy("sampled", registry=registry)
    stats = api.collection_stats("sampled", registry=registry)
    assert stats.written + stats.sampled_out == 200 and 50 < stats.written < 150
    assert stats.workers == 2, "both generations collected into the same store"


def test_the_magics(ip: Any, registry: Registry, iris_frame: tuple[pd.DataFrame, pd.Series], capsys: Any) -> None:
    from IPython.core.error import UsageError
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris_frame
    ip.user_ns.update(model=DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y), X=X)
    ip.run_line_magic("register", "model --name flowers --sample X")
    ip.run_line_magic("deploy", "flowers --collect")
    try:
        ip.run_line_magic("call", "flowers X.iloc[:4] --request-id first")
        deadline = time.monotonic() + 10
        frame = ip.run_line_magic("collected", "flowers --limit 5")
        while frame.empty and time.monotonic() < deadline:
            time.sleep(0.1)
            frame = ip.run_line_magic("collected", "flowers --limit 5")
        assert list(frame["request_id"]) == ["first"] * 4
        shown = capsys.readouterr().out
        assert "flowers: 1 record written, 0 dropped (1 worker run, <0.1 MB on disk)\n" in shown
        assert "1 request, 4 rows: one row per input row; --limit 5 keeps the newest 5 requests (not rows)\n" in shown
        assert (frame["time"].dt.nanosecond == 0).all() and (frame["time"].dt.microsecond % 1000 == 0).all()
        empty = ip.run_line_magic("monitor", "flowers --data X")  # no labels yet
        figure = empty.figure()
        figure.canvas.draw()
        volume, quality = figure.axes[0], figure.axes[4]
        assert quality.get_ylim() == (0, 105) and quality.get_title() == "accuracy (%)"  # a % axis, as with labels
        ticks = [t.get_text() for t in volume.get_xticklabels() if t.get_text()]
        assert ticks and all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t) for t in ticks), ticks  # clock times, not "55"
        ip.user_ns["truth"] = {"first": [0, 0, 0, 0]}
        assert "1 label attached, 1 to collected requests" in repr(ip.run_line_magic("label", "flowers --data truth"))
        report = ip.run_line_magic("monitor", "flowers --data X")
        assert report.quality == 1.0 and report.drift
        with pytest.raises(UsageError, match="no ModelDataCollector data for designation 'inputs'"):
            ip.run_line_magic("collected", "flowers --designation inputs")
    finally:
        ip.run_line_magic("undeploy", "flowers")


def test_the_command_line(collecting: Any, registry: Registry, iris_frame: tuple[pd.DataFrame, pd.Series],
                          tmp_path: Any, capsys: Any) -> None:
    from mlops_magics import cli

    mm.call("iris", iris_frame[0].iloc[:2], request_id="cli", registry=registry)
    _wait_for("iris", 1, registry)
    assert cli.main(["collected", "iris", "--output", str(tmp_path / "out.csv")]) == 0
    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written["request_id"]) == ["cli", "cli"] and "petal width (cm)" in written
    assert cli.main(["monitor", "iris"]) == 0
    assert "iris (iris:1): 1 requests, 2 rows" in capsys.readouterr().out
    assert cli.main(["collected", "nope"]) == 2
    assert "No deployment named 'nope'" in capsys.readouterr().err


# -- the statistics and the flattening, on known values ------------------------------------------

def test_ks_matches_scipy_and_psi_is_zero_for_the_same_distribution() -> None:
    from scipy import stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 400), rng.normal(0.3, 1, 700)
    statistic, pvalue = ks_2samp(a, b)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert statistic == pytest.approx(expected.statistic) and pvalue == pytest.approx(expected.pvalue, rel=0.05)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-9)
    assert psi(a, rng.normal(0, 1, 5000)) < 0.1 and psi(a, rng.normal(1.5, 1, 5000)) > 0.2
    same = feature_drift("x", pd.Series(a), pd.Series(rng.normal(0, 1, 5000)))
    moved = feature_drift("x", pd.Series(a), pd.Series(rng.normal(1, 1, 5000)))
    assert not same.drifted and moved.drifted
    colours = feature_drift("c", pd.Series(["red", "blue"] * 50), pd.Series(["red"] * 100))
    assert colours.ks_statistic is None and colours.drifted


def test_feature_drift_gives_scipys_ks_statistic_and_pvalue() -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    baseline = pd.Series(rng.integers(0, 5, 300).astype(float))  # ties, and samples of different sizes
    current = pd.Series(np.append(rng.integers(1, 6, 500).astype(float), np.nan))  # the NaN is dropped
    drift = feature_drift("x", baseline, current)
    expected = stats.ks_2samp(baseline, current.dropna(), method="asymp")
    assert drift.current_rows == 500 and drift.drifted
    assert drift.ks_statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert drift.ks_pvalue == pytest.approx(expected.pvalue, rel=1e-12)


@pytest.mark.parametrize("body, rows", [
    ({"data": [[1, 2], [3, 4]]}, [{"a": 1, "b": 2}, {"a": 3, "b": 4}]),
    ({"data": [{"a": 1, "b": 2}]}, [{"a": 1, "b": 2}]),
    ({"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}}, [{"a": 1, "b": 2}]),
    ({"data": {"a": [1, 3], "b": [2, 4]}}, [{"a": 1, "b": 2}, {"a": 3, "b": 4}]),
    ([[1, 2]], [{"a": 1, "b": 2}]),
    ({"data": [1, 2]}, [{"a": 1, "b": 2}]),
    ({"data": [[1, 2, 3]]}, [{"x0": 1, "x1": 2, "x2": 3}]),
    ({"text": "hello"}, None),
    ("free text", None),
])
def test_request_bodies_become_rows(body: Any, rows: Any) -> None:
    assert input_rows(body, ["a", "b"]) == rows


def test_answers_become_one_prediction_per_row() -> None:
    assert predictions([1, 0], 2) == [1, 0]
    assert predictions({"predictions": [1, 0], "model": "x"}, 2) == [1, 0]
    assert predictions(7, 1) == [7] and predictions({"result": 7}, 1) == [7]
    assert predictions([1, 0, 1], 2) is None and predictions("text", 2) is None


def test_the_writers_counters_read_as_a_sentence(tmp_path: Any) -> None:
    from mlops_magics.monitoring.store import CollectionStats

    counters = dict(received=84, sampled_out=0, written=84, spilled=0, dropped=0, queued=0, lost=0)
    one = CollectionStats(service="iris", folder=tmp_path, workers=1, bytes_on_disk=31_000,
                          **{**counters, "written": 1})
    assert repr(one) == "iris: 1 record written, 0 dropped (1 worker run, <0.1 MB on disk)"
    two = CollectionStats(service="iris", folder=tmp_path, workers=2, bytes_on_disk=2_345_678, **counters)
    assert repr(two) == "iris: 84 records written, 0 dropped (2 worker runs, 2.3 MB on disk)"


def test_model_data_collector_rows_say_where_their_files_are(tmp_path: Any) -> None:
    service = tmp_path / "collected"
    files = []
    for day, rows in (("01", "5.1,1.4\n4.9,1.4\n"), ("02", "6.3,4.9\n")):  # Azure's layout, one file a day
        path = service / "modeldata/default/default/default/iris/iris/1/inputs/2026/12" / day / "data.csv"
        path.parent.mkdir(parents=True)
        path.write_text("sepal,petal\n" + rows)
        files.append(path)
    frame = collection.csv_frame(service, "inputs", None, "iris", limit=2)
    assert frame["petal"].tolist() == [1.4, 4.9] and frame.attrs["files"] == files
    assert frame.attrs["note"] == (
        "2 rows that ModelDataCollector collected as 'inputs'; --limit 2 keeps the newest 2 rows, from 2 CSV files "
        f"(one a day, <yyyy>/<mm>/<dd>/data.csv) under {service}/modeldata/default/default/default/iris/iris/1/inputs: "
        ".attrs['files'] lists them")
