#!/usr/bin/env python3
"""MASE of the forecasting peers (Prophet, statsforecast's AutoETS) under
the exact protocol of `prescale forecast-eval`, for a side-by-side table.

Protocol (as in dataflows/src/forecast/eval.rs): the series on a 5-minute
grid (mean per step, missing steps NaN); origins spread evenly over
[n/2, n - 13]; at each origin a model sees the values up to and including
it and forecasts 6 steps (30 minutes); MASE is the mean absolute error at
step 6 over the origins, divided by the mean absolute one-step change of
the first half of the series. Peers are fitted on the last four weeks
before each origin (gaps interpolated), as prescale retains.

    pip install prophet statsforecast
    PEERS=prophet,autoets-level python3 benches/peers/forecast_peers.py \
        ../shared/traces/dc_aggregates/series.csv SERIES [SERIES ...]

`PEERS` picks the models (default all three): `prophet` (daily and weekly
seasonality), `autoets` (statsforecast's AutoETS with a daily season of 288
steps: about 10 s a fit here) and `autoets-level` (AutoETS without a
season, the level-tracking model that was the strongest peer on noisy
loads). Prints one JSON object per series and model.
"""
import csv
import json
import logging
import math
import os
import sys
import time
from collections import defaultdict

STEP = 300
H = 6
MAX_H = 12
ORIGINS = 50
WINDOW = 4 * 7 * 288


def load(path, names):
    points = defaultdict(list)
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["series"] in names:
                try:
                    points[row["series"]].append((int(float(row["timestamp"])), float(row["value"])))
                except ValueError:
                    pass
    grids = {}
    for name, pts in points.items():
        pts.sort()
        t0 = pts[0][0] // STEP * STEP
        n = (pts[-1][0] - t0) // STEP + 1
        sums = [[0.0, 0] for _ in range(n)]
        for t, v in pts:
            s = sums[(t - t0) // STEP]
            s[0] += v
            s[1] += 1
        grids[name] = (t0, [s[0] / s[1] if s[1] else math.nan for s in sums])
    return grids


def spread(first, last, count):
    span = last - first
    count = min(count, span + 1)
    out = [first + (i * span + (count - 1) // 2) // (count - 1) for i in range(count)]
    return sorted(set(out))


def naive_scale(y):
    diffs = [abs(b - a) for a, b in zip(y, y[1:]) if math.isfinite(a) and math.isfinite(b)]
    return sum(diffs) / len(diffs) if diffs else None


def filled(y):
    import numpy as np
    import pandas as pd
    return pd.Series(y).interpolate(limit_direction="both").to_numpy(dtype=np.float64)


def prophet_forecast(t0, hist, start):
    import pandas as pd
    from prophet import Prophet
    ds = pd.to_datetime([t0 + (start + i) * STEP for i in range(len(hist))], unit="s")
    m = Prophet(daily_seasonality=True, weekly_seasonality=True, yearly_seasonality=False)
    m.fit(pd.DataFrame({"ds": ds, "y": hist}))
    future = m.make_future_dataframe(periods=H, freq=f"{STEP}s", include_history=False)
    return m.predict(future)["yhat"].to_numpy()[H - 1]


def autoets_forecast(hist, season):
    from statsforecast.models import AutoETS
    return AutoETS(season_length=season).forecast(y=hist, h=H)["mean"][H - 1]


FORECASTERS = {
    "prophet": lambda t0, hist, start: prophet_forecast(t0, hist, start),
    "autoets": lambda t0, hist, start: autoets_forecast(hist, 288),
    "autoets-level": lambda t0, hist, start: autoets_forecast(hist, 1),
}


def main():
    logging.getLogger("prophet").setLevel(logging.ERROR)
    logging.getLogger("cmdstanpy").setLevel(logging.ERROR)
    path, names = sys.argv[1], sys.argv[2:]
    for name, (t0, y) in load(path, set(names)).items():
        n = len(y)
        scale = naive_scale(y[: n // 2])
        if scale is None:
            print(f"{name}: no two consecutive 5-minute values (a coarser series?); skipped", file=sys.stderr)
            continue
        origins = spread(n // 2, n - MAX_H - 1, ORIGINS)
        for model in os.environ.get("PEERS", ",".join(FORECASTERS)).split(","):
            forecaster = FORECASTERS[model]
            errors, started = [], time.time()
            for t in origins:
                actual = y[t + H]
                if not math.isfinite(actual):
                    continue
                start = max(0, t + 1 - WINDOW)
                hist = filled(y[start : t + 1])
                f = forecaster(t0, hist, start)
                errors.append(abs(actual - f))
            print(json.dumps({
                "series": name, "model": model, "horizon_minutes": H * STEP / 60,
                "mase": sum(errors) / len(errors) / scale, "origins": len(errors),
                "seconds_per_fit": (time.time() - started) / max(1, len(origins)),
            }), flush=True)


if __name__ == "__main__":
    main()
