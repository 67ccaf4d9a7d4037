"""The Pareto front of a search against hand-picked points, and the files it writes."""

from __future__ import annotations

import csv

from distill.search.front import front_table, mark_front, plot_front, write_csv


def row(trial: int, macs: int, accuracy: float | None, within: bool = True, state: str = "complete") -> dict:
    return {"trial": trial, "candidate": f"c{trial}", "training": {}, "state": state, "val_acc_top1": accuracy,
            "epochs": 2, "macs": macs, "params": macs // 10, "bytes": macs, "latency_ms": macs / 1e4,
            "within_budget": within}


def test_the_front_keeps_exactly_the_points_nothing_beats():
    rows = [row(0, 100, 0.80), row(1, 200, 0.90), row(2, 150, 0.85), row(3, 300, 0.88),  # 3: beaten by 1
            row(4, 100, 0.79),  # beaten by 0: same cost, lower accuracy
            row(5, 50, None, state="stopped by pruner"), row(6, 10, None, within=False, state="stopped by budget"),
            row(7, 400, 0.95, within=False)]  # the best accuracy, but over budget: not on the front
    marked = mark_front(rows, "macs")
    assert [r["trial"] for r in marked if r["pareto"]] == [0, 1, 2]
    table = front_table(marked, "macs")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["0", "2", "1"]  # cheapest first
    assert "| 1 | c1 | — | 90.00 | 200 | 20 | 200 | 0.0200 |" in table


def test_the_csv_and_the_plot_are_written(tmp_path):
    marked = mark_front([row(0, 100, 0.8), row(1, 200, 0.9)], "macs")
    write_csv(marked, tmp_path / "trials.csv")
    lines = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [line["pareto"] for line in lines] == ["True", "True"] and lines[1]["val_acc_top1"] == "0.9"
    plot = plot_front(marked, "macs", 250, {"default c": (150, 0.85)}, tmp_path / "front.png")
    assert plot.stat().st_size > 1000
