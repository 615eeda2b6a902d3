"""Reading an endpoint's traffic records and comparing what two members answered (mlops_magics.endpoints)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import pytest

from mlops_magics.endpoints.comparison import TrafficComparison, compare, member_summary, predictions_agree
from mlops_magics.endpoints.traffic import COLUMNS, read_traffic
from mlops_magics.errors import InvalidInputError, NotFoundError
from tests.endpoint_traffic import append_raw, write_records

FEATURES = ["sl", "sw", "pl", "pw"]
#: A moment an hour ago: the records' times.
T0 = round(time.time() - 3600, 3)


def chunks(total: int) -> list[tuple[int, int]]:
    """(start, stop) of requests of 1, 2, 3, 4, 1, 2, ... rows over ``total`` rows."""
    out, start, size = [], 0, 1
    while start < total:
        out.append((start, min(start + size, total)))
        start, size = start + size, size % 4 + 1
    return out


def latency(i: int, base: float) -> float:
    """A latency (ms) that differs per request, with 3 decimals like the router's."""
    return round(base + (i * 37 % 23) * 0.173 + (40.0 if i % 17 == 0 else 0.0), 3)


@dataclass
class Shadowed:
    """Traffic of blue (live, a logistic regression) shadowed to green (a one-split tree), and what it should give."""

    folder: Path
    records: list[dict[str, Any]]
    rows_compared: int
    differing: list[tuple[str, int, int, int]]  # id, row, blue's class, green's class
    blue_classes: list[int]  # blue's prediction of every row it answered (and whose body was recorded)
    green_classes: list[int]
    not_comparable: int


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> Shadowed:
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_iris(return_X_y=True)
    blue = LogisticRegression(max_iter=500).fit(X, y)
    green = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y)
    records: list[dict[str, Any]] = []
    differing: list[tuple[str, int, int, int]] = []
    blue_classes: list[int] = []
    green_classes: list[int] = []
    compared = 0
    failing = {5: ("green", 500), 9: ("green", 0), 13: ("blue", 503)}
    for i, (start, stop) in enumerate(chunks(len(X))):
        rows = X[start:stop]
        request = f"r{i:03d}"
        body = ({"data": rows.tolist()} if i % 2 == 0 else
                {"data": [dict(zip(FEATURES, map(float, r), strict=True)) for r in rows]})
        by_blue = [int(v) for v in blue.predict(rows)]
        by_green = [int(v) for v in green.predict(rows)]
        t = T0 + i
        live = {"t": t, "id": request, "m": "blue", "kind": "live", "status": 200, "ms": latency(i, 2.0),
                "in": body, "out": by_blue}
        shadow = {"t": t + 0.01, "id": request, "m": "green", "kind": "shadow", "status": 200,
                  "ms": latency(i, 3.0), "out": by_green if i % 2 == 0 else {"predictions": by_green}}
        fails = failing.get(i)
        if fails == ("green", 500):
            shadow.update(status=500, out={"message": "model crashed"})
        elif fails == ("green", 0):
            shadow.update(status=0, out=None, error="timeout after 5 s")
        elif fails == ("blue", 503):
            live.update(status=503, out={"message": "overloaded"})
        records += [live, shadow]
        if fails != ("blue", 503):
            blue_classes += by_blue
        if fails is None or fails[0] == "blue":
            green_classes += by_green
        if fails is None:
            compared += len(rows)
            differing += [(request, j, p, q) for j, (p, q) in enumerate(zip(by_blue, by_green, strict=True))
                          if p != q]
    big = np.tile(X, (27, 1))  # 4,050 rows: a body over 64 KiB, recorded as its size only
    t = T0 + 1000
    records += [{"t": t, "id": "big", "m": "blue", "kind": "live", "status": 200, "ms": 9.5,
                 "in": {"data": big.tolist()}, "out": [int(v) for v in blue.predict(big)]},
                {"t": t + 0.01, "id": "big", "m": "green", "kind": "shadow", "status": 200, "ms": 9.9,
                 "out": [int(v) for v in green.predict(big)]}]
    folder = tmp_path_factory.mktemp("traffic")
    files = write_records(folder, records, per_file=40)
    append_raw(files[-1], b'{"t": 1796173019.2, "id": "cut short", "m": "bl')  # the line being written
    return Shadowed(folder, records, compared, differing, blue_classes, green_classes, not_comparable=4)


@pytest.fixture(scope="module")
def comparison(shadowed: Shadowed) -> TrafficComparison:
    return compare(read_traffic(shadowed.folder), "blue", "green", feature_names=FEATURES, examples=10_000)


def test_agreement_is_the_share_of_rows_both_models_predicted_alike(shadowed: Shadowed,
                                                                    comparison: TrafficComparison) -> None:
    assert comparison.pairs == len(chunks(150)) + 1
    assert comparison.rows_compared == shadowed.rows_compared
    assert comparison.rows_differing == len(shadowed.differing) > 10
    assert comparison.agreement == (shadowed.rows_compared - len(shadowed.differing)) / shadowed.rows_compared


def test_the_differing_rows_are_exactly_those_the_models_disagree_on(shadowed: Shadowed,
                                                                   comparison: TrafficComparison) -> None:
    found = comparison.disagreements
    assert list(found.columns) == ["id", "row", *FEATURES, "blue", "green"]
    assert list(found[["id", "row", "blue", "green"]].itertuples(index=False, name=None)) == shadowed.differing
    first = shadowed.differing[0]
    request = next(r for r in shadowed.records if r["id"] == first[0] and r["kind"] == "live")
    sent = request["in"]["data"][first[1]]
    assert list(found.loc[0, FEATURES]) == (sent if isinstance(sent, list) else [sent[f] for f in FEATURES])


def test_examples_keep_the_first_differing_rows(shadowed: Shadowed) -> None:
    few = compare(read_traffic(shadowed.folder), "blue", "green", feature_names=FEATURES)
    assert list(few.disagreements[["id", "row"]].itertuples(index=False, name=None)) == [
        (i, r) for i, r, _, _ in shadowed.differing[:10]]
    assert few.rows_differing == len(shadowed.differing)


def test_error_answers_and_bodies_over_64_kib_are_not_compared(shadowed: Shadowed,
                                                              comparison: TrafficComparison) -> None:
    frame = read_traffic(shadowed.folder)
    (big,) = frame.loc[(frame["id"] == "big") & (frame["kind"] == "live"), "in"]
    assert set(big) == {"truncated", "bytes"} and big["truncated"] is True and big["bytes"] > 64 * 1024
    assert comparison.not_comparable == shadowed.not_comparable
    assert (f"4 of the {comparison.pairs} requests both members answered were not compared: 3 with an error answer, "
            "1 with a body over 64 KiB (not recorded).") in comparison.note


def test_distributions_are_each_members_share_of_rows_per_class(shadowed: Shadowed,
                                                               comparison: TrafficComparison) -> None:
    shares = comparison.distribution
    assert comparison.prediction_kind == "classes"
    assert list(shares.index) == [0, 1, 2]
    assert shares["blue"].sum() == pytest.approx(1.0) and shares["green"].sum() == pytest.approx(1.0)
    for member, classes in (("blue", shadowed.blue_classes), ("green", shadowed.green_classes)):
        assert shares[member].tolist() == [classes.count(c) / len(classes) for c in (0, 1, 2)]
    assert shares.loc[2, "green"] == 0.0  # a single split never predicts the third class


def test_latency_quantiles_are_numpys_over_the_answers(shadowed: Shadowed, comparison: TrafficComparison) -> None:
    import numpy as np

    for member in ("blue", "green"):
        answered = [r["ms"] for r in shadowed.records if r["m"] == member and r["status"] > 0]
        expected = np.percentile(answered, [50, 90, 99])
        assert comparison.latency.loc[member].tolist() == pytest.approx(expected.tolist(), rel=1e-12)
    assert list(comparison.latency.columns) == ["p50_ms", "p90_ms", "p99_ms"]


def test_errors_count_server_errors_and_missing_answers(shadowed: Shadowed, comparison: TrafficComparison) -> None:
    per_member = len(chunks(150)) + 1
    assert comparison.requests == {"blue": per_member, "green": per_member}
    assert comparison.errors.loc["blue"].tolist() == [per_member, 1, 1 / per_member]
    assert comparison.errors.loc["green"].tolist() == [per_member, 2, 2 / per_member]


def test_the_report_shows_the_headline_then_its_tables(shadowed: Shadowed, comparison: TrafficComparison) -> None:
    c = comparison
    p50 = [f"{c.latency.loc[m, 'p50_ms']:.1f}" for m in ("blue", "green")]
    expected = (f"blue vs green: {c.agreement:.1%} of {shadowed.rows_compared:,} rows agree "
                f"({len(shadowed.differing)} differ); p50 {p50[0]} vs {p50[1]} ms; errors 1 vs 2")
    assert repr(c) == expected
    html = c._repr_html_()
    assert html.startswith(f"<div><p><strong>{escape(expected)}</strong></p>")
    assert f"Rows that differ (the first {len(shadowed.differing)} of {len(shadowed.differing)})" in html
    assert "<th" in html and ">p99 ms</th>" in html and "Predictions: share of rows" in html


def test_to_dict_is_plain_json(comparison: TrafficComparison) -> None:
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert data["agreement"] == comparison.agreement and data["headline"] == repr(comparison)
    assert data["errors"]["green"] == {"requests": comparison.requests["green"], "errors": 2,
                                       "error_rate": 2 / comparison.requests["green"]}
    assert [d["prediction"] for d in data["distribution"]] == [0, 1, 2]
    assert len(data["disagreements"]) == comparison.rows_differing
    assert set(data["disagreements"][0]) == {"id", "row", *FEATURES, "blue", "green"}


def test_plot_draws_predictions_and_latency_side_by_side(comparison: TrafficComparison) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = comparison.plot()
    assert isinstance(figure, Figure) and len(figure.axes) == 2
    # it shows itself as a PNG in a notebook without %matplotlib inline (a bare Figure showed as its repr)
    assert figure._repr_png_().startswith(b"\x89PNG")
    shares, latency = figure.axes
    assert shares.get_title() == "predictions" and shares.get_ylabel() == "share of rows"
    assert len(shares.patches) == 2 * 3  # a bar per class and member
    assert latency.get_xscale() == "log" and latency.get_title() == "latency"
    assert [line.get_label() for line in latency.get_lines()] == [
        f"blue ({comparison.requests['blue']:,} answers)", f"green ({comparison.requests['green'] - 1:,} answers)"]


def test_a_canary_compares_no_answers_and_says_how_to(tmp_path: Path) -> None:
    records = [{"t": T0 + i, "id": f"r{i}", "m": "blue" if i < 50 else "green", "kind": "live", "status": 200,
                "ms": 2.0 + i % 7, "in": {"data": [[i, 1.0]]}, "out": [i % 3]} for i in range(100)]
    write_records(tmp_path, records)
    canary = compare(read_traffic(tmp_path), "blue", "green", endpoint="iris")
    assert canary.pairs == 0 and canary.rows_compared == 0 and canary.agreement is None
    assert canary.note == ("The members answered different requests: send a shadow copy (%endpoint iris --shadow "
                           "green=100) or replay collected requests (%replay iris --to green) to compare answers on "
                           "the same requests.")
    assert repr(canary).startswith("blue vs green: answers not compared (the members answered different requests);")
    assert canary.requests == {"blue": 50, "green": 50}
    assert canary.distribution["green"].sum() == pytest.approx(1.0)
    assert len(canary.disagreements) == 0 and canary.to_dict()["agreement"] is None


def test_numbers_agree_within_the_tolerance_only(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LinearRegression

    X, _ = load_iris(return_X_y=True)
    model = LinearRegression().fit(X[:, :3], X[:, 3])
    records = []
    beyond = 0
    for i, row in enumerate(X[:, :3]):
        value = float(model.predict([row])[0])
        shifted = (value if i % 3 == 0 else value + 1e-9 * max(1.0, abs(value)) if i % 3 == 1 else value + 1e-3)
        beyond += i % 3 == 2
        records += [{"t": T0 + i, "id": f"q{i}", "m": "blue", "kind": "live", "status": 200, "ms": 1.5,
                     "in": {"data": [row.tolist()]}, "out": [value]},
                    {"t": T0 + i + 0.01, "id": f"q{i}", "m": "green", "kind": "shadow", "status": 200, "ms": 1.7,
                     "out": shifted}]  # a bare number for one row
    write_records(tmp_path, records)
    frame = read_traffic(tmp_path)
    default = compare(frame, "blue", "green")
    assert default.rows_compared == len(X) and default.agreement == (len(X) - beyond) / len(X)
    assert set(default.disagreements["id"]) <= {f"q{i}" for i in range(2, len(X), 3)}
    assert compare(frame, "blue", "green", tolerance=0).agreement == len(range(0, len(X), 3)) / len(X)
    assert compare(frame, "blue", "green", tolerance=1e-2).agreement == 1.0
    assert default.prediction_kind == "bins" and 5 <= len(default.distribution) <= 10
    assert default.distribution.sum().tolist() == pytest.approx([1.0, 1.0])
    assert default.distribution.index[0].startswith("[")
    assert len(default.plot().axes) == 2


def test_predictions_agree_compares_labels_exactly_numbers_within_tolerance_and_nests() -> None:
    assert predictions_agree("setosa", "setosa") and not predictions_agree("setosa", "virginica")
    assert predictions_agree(None, None) and not predictions_agree(None, 0)
    assert predictions_agree(True, True) and not predictions_agree(True, 1) and not predictions_agree(1, True)
    assert not predictions_agree(1_000_000, 1_000_001)  # whole numbers are classes
    assert predictions_agree(1_000_000.0, 1_000_000.5) and not predictions_agree(1_000_000.0, 1_000_002.0)
    assert predictions_agree(1, 1.0) and predictions_agree(0.0, 5e-7) and not predictions_agree(0.0, 2e-6)
    assert predictions_agree(math.inf, math.inf) and not predictions_agree(math.inf, 1e308)
    assert predictions_agree([1, {"p": [0.1, 0.9]}], [1, {"p": [0.1 + 1e-9, 0.9]}])
    assert not predictions_agree([1, {"p": [0.1, 0.9]}], [1, {"p": [0.1, 0.91]}])
    assert not predictions_agree({"p": 1}, {"q": 1}) and not predictions_agree([1, 2], [1, 2, 3])


def test_replays_pair_with_the_collected_answers_and_two_live_answers_pair(tmp_path: Path) -> None:
    records = [
        {"t": T0, "id": "a", "m": "blue", "kind": "original", "status": 200, "ms": 2, "in": [[1, 2], [3, 4]],
         "out": ["x", "y"]},
        {"t": T0 + 1, "id": "a", "m": "green", "kind": "replay", "status": 200, "ms": 3, "out": ["x", "z"]},
        {"t": T0 + 2, "id": "b", "m": "blue", "kind": "live", "status": 200, "ms": 2, "in": "free text",
         "out": "ok"},
        {"t": T0 + 3, "id": "b", "m": "green", "kind": "live", "status": 200, "ms": 3, "in": "free text",
         "out": "ok"},
        {"t": T0 + 4, "id": "c", "m": "green", "kind": "shadow", "status": 200, "ms": 3, "out": ["q"]},  # no pair
    ]
    write_records(tmp_path, records)
    c = compare(read_traffic(tmp_path), "blue", "green")
    assert (c.pairs, c.rows_compared, c.rows_differing) == (2, 3, 1)
    assert c.disagreements.to_dict(orient="records") == [{"id": "a", "row": 1, "x0": 3, "x1": 4, "blue": "y",
                                                          "green": "z"}]
    assert c.note == ""


def test_compare_refuses_a_member_without_traffic_and_the_same_member_twice(shadowed: Shadowed) -> None:
    frame = read_traffic(shadowed.folder)
    with pytest.raises(NotFoundError, match=r"No traffic recorded from member 'red'\. Members with records: "
                                            r"'blue', 'green'\."):
        compare(frame, "blue", "red")
    with pytest.raises(InvalidInputError, match="Both members are 'blue'"):
        compare(frame, "blue", "blue")
    with pytest.raises(InvalidInputError, match="has no 'kind', 'status' column"):
        compare(frame.drop(columns=["kind", "status"]), "blue", "green")


def test_member_summary_counts_per_member_and_kind(shadowed: Shadowed) -> None:
    import numpy as np

    summary = member_summary(read_traffic(shadowed.folder))
    assert list(summary.columns) == ["member", "kind", "requests", "errors", "error_rate", "p50_ms", "p99_ms"]
    assert summary[["member", "kind", "requests", "errors"]].values.tolist() == [
        ["blue", "live", 61, 1], ["green", "shadow", 61, 2]]
    green = [r["ms"] for r in shadowed.records if r["m"] == "green" and r["status"] > 0]
    assert summary.loc[1, ["p50_ms", "p99_ms"]].tolist() == pytest.approx(np.percentile(green, [50, 99]).tolist())
    assert member_summary(read_traffic(shadowed.folder / "nothing")).empty


# -- read_traffic ------------------------------------------------------------------------------------


def simple(i: int, *, m: str = "blue", kind: str = "live") -> dict[str, Any]:
    return {"t": T0 + i, "id": f"r{i}", "m": m, "kind": kind, "status": 200, "ms": 1.0 + i,
            "in": None if kind in ("shadow", "replay") else {"data": [[i]]}, "out": [i]}


def test_read_traffic_reads_every_file_oldest_first_with_the_columns(shadowed: Shadowed) -> None:
    frame = read_traffic(shadowed.folder)
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == len(shadowed.records) and frame.attrs["skipped"] == 1
    assert len(frame.attrs["files"]) == math.ceil(len(shadowed.records) / 40) and frame.attrs["limited"] is False
    assert str(frame["t"].dt.tz) == "UTC" and frame["t"].is_monotonic_increasing
    assert frame.loc[0, "t"].timestamp() == pytest.approx(T0, abs=1e-3)
    assert frame["status"].dtype == "int64" and frame["ms"].dtype == "float64"
    timeout = frame[frame["status"] == 0].iloc[0]
    assert timeout["error"] == "timeout after 5 s" and timeout["out"] is None and timeout["in"] is None
    assert frame["error"].isna().sum() == len(frame) - 1
    assert "1 line skipped (cut short or not a record)" in frame.attrs["note"]


def test_read_traffic_skips_lines_that_are_not_records(tmp_path: Path) -> None:
    (path,) = write_records(tmp_path, [simple(0), simple(1)])
    append_raw(path, b"not json\n[1, 2]\n{\"t\": 5, \"id\": \"x\"}\n\n\xff\xfe\n")
    write_records(tmp_path, [simple(2), simple(3)])  # a newer file
    frame = read_traffic(tmp_path)
    assert frame["id"].tolist() == ["r0", "r1", "r2", "r3"]
    assert frame.attrs["skipped"] == 4  # the blank line is not counted


def test_read_traffic_filters_by_time_kind_and_member(tmp_path: Path) -> None:
    write_records(tmp_path, [simple(i) for i in range(10)], per_file=5)
    write_records(tmp_path, [simple(i, m="green", kind="shadow") for i in range(10, 14)], pid=77)
    since = read_traffic(tmp_path, since=T0 + 6)
    assert since["id"].tolist() == ["r6", "r7", "r8", "r9", "r10", "r11", "r12", "r13"]
    assert len(since.attrs["files"]) == 2  # the first file was last written to before T0 + 6
    assert read_traffic(tmp_path, kinds=["shadow"])["id"].tolist() == ["r10", "r11", "r12", "r13"]
    assert read_traffic(tmp_path, members={"blue"}, since=T0 + 8)["id"].tolist() == ["r8", "r9"]
    with pytest.raises(InvalidInputError, match="Unknown traffic record kind 'canary'"):
        read_traffic(tmp_path, kinds=["canary"])


def test_read_traffic_keeps_the_newest_records_up_to_the_limit(tmp_path: Path) -> None:
    # files started at 500 ms and 1000 ms: the newest is the one that sorts first as text
    write_records(tmp_path, [{**simple(i), "t": 0.5 + i * 0.0001} for i in range(3)])
    write_records(tmp_path, [{**simple(i), "t": 1.0 + (i - 3)} for i in range(3, 13)])
    frame = read_traffic(tmp_path, limit=4)
    assert frame["id"].tolist() == ["r9", "r10", "r11", "r12"]
    assert frame.attrs["limited"] is True and [p.name for p in frame.attrs["files"]] == ["traffic-1000-4242.jsonl"]
    assert "only the newest 4 records were read (limit=4): older ones are not in this frame" in frame.attrs["note"]
    across = read_traffic(tmp_path, limit=12)
    assert across["id"].tolist() == [f"r{i}" for i in range(1, 13)] and across.attrs["limited"] is True
    everything = read_traffic(tmp_path, limit=13)
    assert len(everything) == 13 and everything.attrs["limited"] is False
    assert [p.name for p in everything.attrs["files"]] == ["traffic-500-4242.jsonl", "traffic-1000-4242.jsonl"]
    with pytest.raises(InvalidInputError, match="limit=0 keeps no record"):
        read_traffic(tmp_path, limit=0)


def test_an_empty_or_missing_folder_gives_an_empty_frame(tmp_path: Path) -> None:
    for folder in (tmp_path, tmp_path / "missing"):
        frame = read_traffic(folder)
        assert frame.empty and tuple(frame.columns) == COLUMNS and frame.attrs["skipped"] == 0
        assert frame.attrs["note"].startswith(f"No traffic recorded under {folder}")
    assert "(the folder does not exist)" in read_traffic(tmp_path / "missing").attrs["note"]
