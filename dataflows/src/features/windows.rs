//! The window operator: tumbling and sliding windows per series, with
//! corrections for late records, on plain timely.
//!
//! Partials (per-pane aggregates, see [`super::pane`]) arrive at timely
//! timestamps equal to their partition's watermark. The operator keeps, per
//! series, the panes that some unfinished window still needs, and processes
//! timestamps strictly in order once the input frontier has passed them:
//!
//! - a window ending at `E` is *due* at timestamp `E − lateness` (the
//!   watermark is then `E − lateness`, so the stream has reached `E`): its
//!   first row (revision 0) is emitted at that timestamp;
//! - a partial processed at a timestamp where one of its windows is already
//!   due re-emits that window with the next revision (a correction);
//! - once the frontier reaches `E`, no record for the window can arrive
//!   (its watermark would be past the record's event time): the window is
//!   final and its state is released, so memory stays bounded.
//!
//! Every row is a function of the data at timestamps up to its own, and
//! timestamps are processed one at a time in order, so the rows (and their
//! revisions) do not depend on how the input was spread over workers or
//! batched by the scheduler.
//!
//! Alongside rows, the operator emits the updates of a differential
//! collection of window means for the lag join ([`super::lags`]), for the
//! tumbling widths that have lags (`FeatureSettings::lagged`).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use rustc_hash::FxHashMap;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::FeatureSettings;
use super::pane::{Accumulator, PaneAgg, Partial};
use super::rows::{FeatureRow, SlidingRow, TumblingRow};
use crate::record::Series;
use crate::time::{MINUTE, Millis, day_of_week, hour_of_day};

/// Key of the window-means collection: (window end, width, series). The
/// integers come first so that sorting, which differential does a lot of,
/// rarely needs to compare series.
pub type MeanKey = (Millis, Millis, Series);

/// An update of the window-means collection: ((key, mean bits), time, diff).
pub type MeanUpdate = ((MeanKey, u64), Millis, isize);

/// What the window operator emits.
#[derive(Clone, Debug)]
pub enum WindowOutput {
    /// A tumbling or sliding row.
    Row(FeatureRow),
    /// An update of the window-means collection.
    Mean(MeanUpdate),
}

/// Counters the operator keeps for the job summary.
#[derive(Clone, Default, Debug)]
pub struct WindowCounters {
    /// Records that arrived after a window they belong to was first
    /// emitted, and so corrected it.
    pub corrected_records: Rc<Cell<u64>>,
}

/// One window shape: a tumbling width or a sliding (width, slide).
#[derive(Clone, Copy, Debug)]
enum Spec {
    /// `lagged`: its means feed the lag join.
    Tumbling {
        width: Millis,
        lagged: bool,
    },
    Sliding {
        width: Millis,
        slide: Millis,
    },
}

impl Spec {
    fn width(self) -> Millis {
        match self {
            Spec::Tumbling { width, .. } | Spec::Sliding { width, .. } => width,
        }
    }

    fn step(self) -> Millis {
        match self {
            Spec::Tumbling { width, .. } => width,
            Spec::Sliding { slide, .. } => slide,
        }
    }
}

/// Per-series state.
struct SeriesState {
    series: Series,
    /// Pane start → aggregate, for panes some unfinished window needs.
    panes: BTreeMap<Millis, PaneAgg>,
    /// (spec, end) → the next revision number, for emitted windows.
    revisions: BTreeMap<(usize, Millis), u32>,
    /// (spec, end) → bits of the mean last inserted into the means
    /// collection, so a correction can retract it.
    means: BTreeMap<(usize, Millis), u64>,
}

impl SeriesState {
    /// Whether some pane of the window `[start, end)` has data.
    fn has_data(&self, start: Millis, end: Millis) -> bool {
        self.panes.range(start..end).next().is_some()
    }
}

struct State {
    specs: Vec<Spec>,
    lateness: Millis,
    pane: Millis,
    /// Largest window width: a pane older than this before the frontier is
    /// needed by no unfinished window.
    max_width: Millis,
    /// Retention of window means in the lag collection.
    mean_retention: Millis,
    /// Final window means to retract from the lag collection, by the
    /// time they may go. Retracting at the first timestamp processed after
    /// that time (rather than at a future timestamp, which differential
    /// would hold unconsolidated until then) keeps the collection small; no
    /// lag row can still need them then, so when exactly they go does not
    /// change any row.
    expiries: BTreeMap<Millis, Vec<(MeanKey, u64)>>,
    /// Series → its slot in `slots`: the hot path refers to series by slot.
    index: FxHashMap<Series, usize>,
    slots: Vec<Option<SeriesState>>,
    free: Vec<usize>,
    /// (timestamp, window end): windows ending at `end` become due at the
    /// timestamp, `end - lateness` (0 for the first windows of time).
    deadlines: BTreeSet<(Millis, Millis)>,
    /// Buffered input by timestamp.
    inputs: BTreeMap<Millis, Vec<Partial>>,
    /// A capability for every buffered input and deadline timestamp.
    caps: BTreeMap<Millis, Capability<Millis>>,
    /// Windows to (re-)emit at the timestamp being processed: (slot,
    /// spec, end).
    dirty: Vec<(usize, usize, Millis)>,
    /// Scratch space for window aggregates, reused across windows.
    scratch: Accumulator,
    steps: Vec<Accumulator>,
    points: Vec<(f64, f64)>,
    /// The frontier at the last release of finished state.
    released_to: Millis,
    counters: WindowCounters,
}

/// The ends of every window containing the pane starting at `ps`.
fn ends_for_pane(specs: &[Spec], ps: Millis) -> impl Iterator<Item = (usize, Millis)> + '_ {
    specs.iter().enumerate().flat_map(move |(i, spec)| {
        let step = spec.step();
        let first = (ps / step + 1) * step;
        let last = ps + spec.width();
        (first..=last).step_by(step as usize).map(move |end| (i, end))
    })
}

impl State {
    fn slot(&mut self, series: Series) -> usize {
        if let Some(&slot) = self.index.get(&series) {
            return slot;
        }
        let state = SeriesState {
            series: series.clone(),
            panes: BTreeMap::new(),
            revisions: BTreeMap::new(),
            means: BTreeMap::new(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(state);
                slot
            }
            None => {
                self.slots.push(Some(state));
                self.slots.len() - 1
            }
        };
        self.index.insert(series, slot);
        slot
    }

    fn apply(&mut self, now: Millis, partial: Partial) {
        let Partial { series, pane_start, agg } = partial;
        let count = agg.count;
        let lateness = self.lateness;
        let slot = self.slot(series);
        // The slot was just looked up or filled.
        let Some(state) = self.slots[slot].as_mut() else { return };
        let created = match state.panes.get_mut(&pane_start) {
            Some(pane) => {
                pane.merge(&agg);
                false
            }
            None => {
                state.panes.insert(pane_start, agg);
                true
            }
        };
        // In-order data merges into a pane none of whose windows is due:
        // then there is nothing else to do.
        let first_end = self.specs.iter().map(|s| (pane_start / s.step() + 1) * s.step()).min().unwrap_or(0);
        if !created && first_end.saturating_sub(lateness) > now {
            return;
        }
        let mut corrected = false;
        for (spec, end) in ends_for_pane(&self.specs, pane_start) {
            let due_at = end.saturating_sub(lateness);
            if due_at <= now {
                corrected |= state.revisions.contains_key(&(spec, end));
                self.dirty.push((slot, spec, end));
            } else if created && self.deadlines.insert((due_at, end)) {
                // A capability for `now` exists while `now` is processed.
                if let Some(cap) = self.caps.get(&now) {
                    let delayed = cap.delayed(&due_at);
                    self.caps.entry(due_at).or_insert(delayed);
                }
            }
        }
        if corrected {
            let c = &self.counters.corrected_records;
            c.set(c.get() + count);
        }
    }

    /// Windows ending at `end` become due: every series with data in one.
    fn deadline(&mut self, end: Millis) {
        let oldest = end.saturating_sub(self.max_width);
        for (slot, state) in self.slots.iter().enumerate() {
            let Some(state) = state else { continue };
            let (Some(first), Some(last)) = (state.panes.keys().next(), state.panes.keys().next_back()) else {
                continue;
            };
            if *first >= end || *last < oldest {
                continue;
            }
            for (i, spec) in self.specs.iter().enumerate() {
                if end.is_multiple_of(spec.step()) && state.has_data(end.saturating_sub(spec.width()), end) {
                    self.dirty.push((slot, i, end));
                }
            }
        }
    }

    /// Emits every dirty window with data, at `now`.
    fn emit(&mut self, now: Millis, out: &mut Vec<WindowOutput>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for (slot, spec_index, end) in dirty.drain(..) {
            let Some(state) = self.slots.get_mut(slot).and_then(Option::as_mut) else { continue };
            let series = &state.series;
            let spec = self.specs[spec_index];
            let start = end.saturating_sub(spec.width());
            let acc = &mut self.scratch;
            acc.clear();
            match spec {
                Spec::Tumbling { .. } => {
                    for pane in state.panes.range(start..end).map(|(_, p)| p) {
                        acc.add_with_pods(pane);
                    }
                }
                Spec::Sliding { slide, .. } => {
                    self.steps.clear();
                    self.steps.resize_with(((end - start) / slide) as usize, Accumulator::default);
                    for step in &mut self.steps {
                        step.clear();
                    }
                    for (&pane_start, pane) in state.panes.range(start..end) {
                        acc.add(pane);
                        if let Some(step) = self.steps.get_mut(((pane_start - start) / slide) as usize) {
                            step.add(pane);
                        }
                    }
                }
            }
            if acc.count == 0 {
                continue;
            }
            let revision = state.revisions.entry((spec_index, end)).or_insert(0);
            let this_revision = *revision;
            *revision += 1;
            match spec {
                Spec::Tumbling { width, lagged } => {
                    let row = TumblingRow {
                        series: series.clone(),
                        width_s: width / 1000,
                        start_ms: start,
                        end_ms: end,
                        revision: this_revision,
                        count: acc.count,
                        avg: acc.mean(),
                        max: acc.max,
                        min: acc.min,
                        sum: acc.sum(),
                        pods: acc.distinct_pods() as u32,
                        hour_of_day: hour_of_day(start),
                        day_of_week: day_of_week(start),
                    };
                    if lagged {
                        let key = (end, width, series.clone());
                        let mean = row.avg.to_bits();
                        out.push(WindowOutput::Mean(((key.clone(), mean), now, 1)));
                        if this_revision > 0 {
                            // Retract what the previous revision inserted.
                            if let Some(prev) = state.previous_mean(spec_index, end) {
                                out.push(WindowOutput::Mean(((key, prev), now, -1)));
                            }
                        }
                        state.remember_mean(spec_index, end, mean);
                    }
                    out.push(WindowOutput::Row(FeatureRow::Tumbling(row)));
                }
                Spec::Sliding { width, slide } => {
                    self.points.clear();
                    for (i, step) in self.steps.iter().enumerate() {
                        if step.count > 0 {
                            // Mid-point of the step, in minutes from the window start.
                            let x = (i as f64 + 0.5) * slide as f64 / MINUTE as f64;
                            self.points.push((x, step.mean()));
                        }
                    }
                    let (stddev, slope) = spread_and_slope(&self.points);
                    out.push(WindowOutput::Row(FeatureRow::Sliding(SlidingRow {
                        series: series.clone(),
                        width_s: width / 1000,
                        slide_s: slide / 1000,
                        start_ms: start,
                        end_ms: end,
                        revision: this_revision,
                        count: acc.count,
                        steps: self.points.len() as u32,
                        mean: acc.mean(),
                        stddev,
                        slope_per_min: slope,
                    })));
                }
            }
        }
        self.dirty = dirty;
    }

    /// Releases state no unfinished window needs once the frontier is at
    /// `frontier`.
    fn release(&mut self, frontier: Millis) {
        // Sweep at most once per pane of progress: the sweep visits every series.
        if frontier < self.released_to.saturating_add(self.pane) {
            return;
        }
        self.released_to = frontier;
        let keep_panes_from = frontier.saturating_sub(self.max_width);
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(s) = entry else { continue };
            s.panes = s.panes.split_off(&keep_panes_from);
            s.revisions.retain(|&(_, end), _| end > frontier);
            for ((spec, end), mean) in s.means.extract_if(.., |&(_, end), _| end <= frontier) {
                if let Some(Spec::Tumbling { width, .. }) = self.specs.get(spec) {
                    let key = (end, *width, s.series.clone());
                    self.expiries.entry(end + self.mean_retention).or_default().push((key, mean));
                }
            }
            if s.panes.is_empty() && s.revisions.is_empty() && s.means.is_empty() {
                self.index.remove(&s.series);
                *entry = None;
                self.free.push(slot);
            }
        }
    }
}

impl State {
    /// Retracts final means whose retention ended by `now`.
    fn expire(&mut self, now: Millis, out: &mut Vec<WindowOutput>) {
        while let Some(entry) = self.expiries.first_entry() {
            if *entry.key() > now {
                break;
            }
            for (key, mean) in entry.remove() {
                out.push(WindowOutput::Mean(((key, mean), now, -1)));
            }
        }
    }
}

impl SeriesState {
    fn previous_mean(&self, spec: usize, end: Millis) -> Option<u64> {
        self.means.get(&(spec, end)).copied()
    }

    fn remember_mean(&mut self, spec: usize, end: Millis, mean: u64) {
        self.means.insert((spec, end), mean);
    }
}

/// Sample standard deviation of the y values and least-squares slope of y
/// over x; both 0 with fewer than two points.
fn spread_and_slope(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (0.0, 0.0);
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in points {
        sxx += (x - mean_x) * (x - mean_x);
        sxy += (x - mean_x) * (y - mean_y);
        syy += (y - mean_y) * (y - mean_y);
    }
    let stddev = (syy / (n - 1.0)).sqrt();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (stddev, slope)
}

/// Builds the window operator over a stream of partials.
pub fn windows<'scope>(
    partials: StreamVec<'scope, Millis, Partial>,
    settings: &FeatureSettings,
    counters: WindowCounters,
) -> StreamVec<'scope, Millis, WindowOutput> {
    let lagged = |width| !settings.lags.is_empty() && settings.lagged.contains(&width);
    let mut specs: Vec<Spec> =
        settings.tumbling.iter().map(|&width| Spec::Tumbling { width, lagged: lagged(width) }).collect();
    specs.extend(settings.sliding.iter().map(|s| Spec::Sliding { width: s.width, slide: s.slide }));
    let max_width = specs.iter().map(|s| s.width()).max().unwrap_or(0);
    let mut state = State {
        specs,
        lateness: settings.lateness,
        pane: settings.pane(),
        max_width,
        mean_retention: settings.mean_retention(),
        expiries: BTreeMap::new(),
        index: FxHashMap::default(),
        slots: Vec::new(),
        free: Vec::new(),
        deadlines: BTreeSet::new(),
        inputs: BTreeMap::new(),
        caps: BTreeMap::new(),
        dirty: Vec::new(),
        released_to: 0,
        scratch: Accumulator::default(),
        steps: Vec::new(),
        points: Vec::new(),
        counters,
    };
    let exchange = Exchange::new(|p: &Partial| p.series.route());
    partials.unary_frontier::<CapacityContainerBuilder<Vec<WindowOutput>>, _, _, _>(
        exchange,
        "Windows",
        move |_cap, _info| {
            let mut out = Vec::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let time = *cap.time();
                    state.caps.entry(time).or_insert(cap);
                    let buffer = state.inputs.entry(time).or_default();
                    for batch in data {
                        buffer.append(batch);
                    }
                });
                let limit = frontier.frontier().first().copied();
                let passed = |t: Millis| limit.is_none_or(|f| t < f);
                loop {
                    let next_input = state.inputs.keys().next().copied();
                    let next_deadline = state.deadlines.first().map(|&(due, _)| due);
                    let Some(now) = [next_input, next_deadline].into_iter().flatten().min() else { break };
                    if !passed(now) {
                        break;
                    }
                    if next_input == Some(now) {
                        for partial in state.inputs.remove(&now).unwrap_or_default() {
                            state.apply(now, partial);
                        }
                    }
                    if next_deadline == Some(now) {
                        while let Some(&(due, end)) = state.deadlines.first()
                            && due == now
                        {
                            state.deadlines.pop_first();
                            state.deadline(end);
                        }
                    }
                    state.emit(now, &mut out);
                    state.expire(now, &mut out);
                    if let Some(cap) = state.caps.remove(&now)
                        && !out.is_empty()
                    {
                        output.session(&cap).give_iterator(out.drain(..));
                    }
                    out.clear();
                }
                state.release(limit.unwrap_or(Millis::MAX));
            }
        },
    )
}
