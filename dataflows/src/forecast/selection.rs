//! The per-series ensemble: every candidate model runs side by side, is
//! scored out of sample on the values that arrive, and the one that would
//! recently have sized best makes the forecast.
//!
//! # Data flow
//!
//! [`Ensemble::push`] takes the next value of the series (non-finite =
//! missing) and, in this order:
//!
//! 1. **scores** the pending forecasts the value resolves: every candidate
//!    made a path of [`EnsembleConfig::score_horizon`] steps at each earlier
//!    step; a path whose last step has now arrived becomes two scores, its
//!    mean absolute error and its mean sizing loss (below; missing actuals
//!    skipped);
//! 2. **retains** the value in a bounded history
//!    ([`EnsembleConfig::max_history`]);
//! 3. **updates** every fitted candidate with the value (O(1) each), or
//!    **refits** all candidates on the retained history every
//!    [`EnsembleConfig::refit_every`] steps. A candidate that becomes
//!    eligible between refits (its [`Model::min_history`] is reached) is
//!    fitted at once, once per refit period, so that a new deployment gets
//!    seasonal models the moment it has two days of data;
//! 4. **forecasts** a new scoring path from every fitted candidate.
//!
//! # Deferred refits
//!
//! [`Ensemble::push_deferred`] splits the fits out of the push, so that a
//! caller serving many series (the dataflow's forecast stage) can run each
//! series' fits on their own, between other work, instead of all of them
//! inside one push round (thousands of series started together also reach
//! two days of history, and fit their seasonal models, at the same step).
//! The push only updates the fitted candidates and marks *due* the
//! scheduled refit it hits, or the first fit of a candidate that has just
//! reached its minimum history; [`Ensemble::run_due_refit`] runs it later
//! on the retained history, which still ends with the value that made it
//! due. (A first fit runs in the push when no candidate is fitted yet, so
//! that a new series' forecast never waits: that is last value's, which
//! costs nothing.) The install point is fixed by the series, not by when
//! the caller gets round to it: the next push runs a refit still due
//! before it takes its value. The refit then makes the scoring paths of
//! that value again from the refitted models, so once it has run the
//! ensemble is bit for bit what [`Ensemble::push`], which runs the fits at
//! once, would have made; only a forecast asked for between the push and
//! the refit differs, coming from the models updated with the value rather
//! than fitted on it.
//!
//! [`Ensemble::forecast`] then returns the forecast of the candidate with the
//! lowest recent *sizing loss* (see below). Its *recent error*, reported
//! with the forecast and checked by the decide stage, is the mean of its last
//! [`EnsembleConfig::error_window`] path scores divided by the series' scale,
//! the mean absolute one-step naive change over the retained history (see
//! [`super::metrics`] for why one-step and not seasonal). That makes the
//! recent error a MASE over the last N forecasts, comparable across series:
//! 1.0 means "off by as much as the series moves in one step, on average".
//!
//! # Selection rules
//!
//! * Candidates are ranked by what the decide stage does with a forecast:
//!   it sizes for a bound between the point and the upper end of the
//!   calibrated interval (at its sizing level, 0.9 by default: the
//!   95th percentile). Each scoring path therefore also carries that bound,
//!   read off the candidate's calibrated interval at the path's origin,
//!   and is scored by its mean pinball loss at that quantile over the
//!   first [`EnsembleConfig::sizing_leads`] leads (the ones a decision
//!   reads; later leads only matter to later forecasts): a bound too
//!   low costs the quantile times the miss, one too high one minus the
//!   quantile times the excess. That is the newsvendor's cost of sizing,
//!   and it is what a model with a fine point forecast but a useless upper
//!   bound loses on: ranked by absolute error, seasonal naive won on VM
//!   loads with a burst a day at varying times, and carried yesterday's
//!   burst into today's upper bound.
//!   [`EnsembleConfig::selection_level`] `None` ranks by recent error.
//! * A candidate competes once it is fitted and has at least
//!   [`EnsembleConfig::min_scored`] scores; ties go to the simpler model.
//! * If none qualifies yet (a new series), the fitted candidate with the
//!   most scores is used (ties: simpler first), and the note says so; its
//!   `recent_error` is `+inf` when it has no score at all, so a threshold
//!   check in the decide stage falls back to reactive scaling.
//! * A candidate that cannot be used (too little history, failed fit) is
//!   named in the note with the reason: the fallback to simpler models is
//!   always visible. If the selected model fails to predict, the next best
//!   one is used, and the note says that too.
//!
//! The ensemble selects by the *path* error over the scoring horizon, whatever
//! the horizon asked of [`Ensemble::forecast`]; set `score_horizon` to the
//! decision horizon.
//!
//! # Intervals
//!
//! Every scoring path is made with intervals at
//! [`EnsembleConfig::reference_level`]; the errors at leads 1, half and all
//! of the scoring horizon, normalised by those intervals, feed one
//! [`Calibrator`] per candidate. Once it holds enough errors, the
//! candidate's intervals are rescaled by it at any requested level (see
//! [`super::intervals`]); until then the model's own intervals are used.
//! This is what keeps the 90% intervals at 85–95% coverage on real traces:
//! uncalibrated, MSTL's covered 47–77% and Holt–Winters' up to 97%.
//!
//! # Determinism and memory
//!
//! Candidates live in a `Vec` in [`ModelKind`] order; no hash maps, threads
//! or randomness. Memory per series is bounded by `max_history` values, plus
//! per candidate `score_horizon` pending paths of `4 × score_horizon` values
//! (point, bounds and the sized bound), twice `error_window` scores (error
//! and sizing loss) and `calibration_window` normalised errors, plus
//! each model's own bounded state (at 5-minute steps with the defaults,
//! about 0.3 MB per series: 80 kB of retained history, ~130 kB of the
//! decomposition `augurs` keeps inside a fitted MSTL, the rest small).
//!
//! The refit schedule counts pushes since the ensemble was created. A job
//! restarted from a checkpoint of the ensemble continues exactly; one that
//! rebuilds it by replaying history gets the same fits only if the replay
//! starts at the same value (see `refit_all` to realign).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::cycle::{Cycle, CycleConfig};
use super::holt_winters::{HoltWinters, HoltWintersConfig};
use super::intervals::Calibrator;
use super::last_value::LastValue;
use super::mstl::{Mstl, MstlConfig};
use super::seasonal_naive::{NaiveConfig, SeasonalNaive};
use super::ses::{Ses, SesConfig};
use super::{Error, Forecast, Model, ModelKind, Result, Seasons, clean};

/// Settings of an [`Ensemble`]; build with [`EnsembleConfig::for_seasons`]
/// and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleConfig {
    /// The series' step and seasons.
    pub seasons: Seasons,
    /// Candidate models (order and duplicates do not matter).
    pub candidates: Vec<ModelKind>,
    /// Steps of each scored forecast path (default: one hour).
    pub score_horizon: usize,
    /// Number of recent path scores averaged into the recent error
    /// (default: one day of steps).
    pub error_window: usize,
    /// Scores a candidate needs before it competes (default: a quarter of
    /// `error_window`).
    pub min_scored: usize,
    /// Steps between refits of every candidate (default: one hour).
    pub refit_every: usize,
    /// MSTL and Holt–Winters refit at every this many scheduled refits
    /// (default 6: every six hours with hourly refits) and are updated in
    /// between. Their parameters and seasonal shapes change slowly, and
    /// their fits (AutoETS, Nelder–Mead) are the costliest by far, so this
    /// keeps the stage's refit work small for many series; the naive
    /// models, which cost nothing, refit on every schedule.
    pub slow_refit_every: usize,
    /// Values retained for refits (default: five weeks).
    pub max_history: usize,
    /// Rescale every candidate's intervals with its own recent
    /// out-of-sample errors ([`Calibrator`]); default on.
    pub calibrate: bool,
    /// Level of the intervals recorded for calibration (default 0.9).
    pub reference_level: f64,
    /// Rank the candidates by how well they would have sized: the mean
    /// pinball loss, at the quantile `(1 + level) / 2`, of the bound the
    /// decide stage sizes for at this central level (read off each
    /// candidate's calibrated interval as the decide stage does). `None`
    /// ranks by the mean absolute error. Default: the decide stage's
    /// default sizing level, 0.9.
    pub selection_level: Option<f64>,
    /// The leads the sizing loss is taken over (default 2): the steps the
    /// decide stage reads between one forecast and the next one's pods
    /// being ready, `1 + ceil(start-up lead / step)`. Further leads only
    /// matter to the next forecasts.
    pub sizing_leads: usize,
    /// Normalised errors kept per candidate for calibration (default: three
    /// per step over one day, from leads 1, half and all of
    /// `score_horizon`, and at least 1024 so that a 5% tail holds ~50
    /// errors even with long steps).
    pub calibration_window: usize,
    /// Last-value and seasonal-naive settings.
    pub naive: NaiveConfig,
    /// Holt–Winters settings.
    pub holt_winters: HoltWintersConfig,
    /// MSTL settings.
    pub mstl: MstlConfig,
    /// Exponential smoothing settings.
    pub ses: SesConfig,
    /// Cycle search settings.
    pub cycle: CycleConfig,
}

impl EnsembleConfig {
    /// The defaults for a series with these seasons.
    pub fn for_seasons(seasons: &Seasons) -> EnsembleConfig {
        let hour = seasons.steps_for_minutes(60);
        EnsembleConfig {
            seasons: *seasons,
            candidates: ModelKind::ALL.to_vec(),
            score_horizon: hour,
            error_window: seasons.day,
            min_scored: (seasons.day / 4).max(1),
            refit_every: hour,
            slow_refit_every: 6,
            max_history: 5 * seasons.week,
            calibrate: true,
            reference_level: 0.9,
            selection_level: Some(crate::decide::DEFAULT_LEVEL),
            sizing_leads: 2,
            calibration_window: (3 * seasons.day).max(1024),
            naive: NaiveConfig::for_seasons(seasons),
            holt_winters: HoltWintersConfig::for_seasons(seasons),
            mstl: MstlConfig::for_seasons(seasons),
            ses: SesConfig::for_seasons(seasons),
            cycle: CycleConfig::for_seasons(seasons),
        }
    }

    /// Checks the ranges; the error names the field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero window, horizon or period, or an
    /// empty candidate list.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("score_horizon", self.score_horizon),
            ("error_window", self.error_window),
            ("min_scored", self.min_scored),
            ("refit_every", self.refit_every),
            ("slow_refit_every", self.slow_refit_every),
            ("naive.error_window", self.naive.error_window),
            ("naive.max_horizon", self.naive.max_horizon),
            ("holt_winters.variance_window", self.holt_winters.variance_window),
            ("sizing_leads", self.sizing_leads),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig { field, reason: "must be at least 1".into() });
            }
        }
        if !(self.reference_level > 0.0 && self.reference_level < 1.0) {
            return Err(Error::InvalidConfig {
                field: "reference_level",
                reason: format!("must be in (0, 1), is {}", self.reference_level),
            });
        }
        if let Some(level) = self.selection_level
            && !(0.0..1.0).contains(&level)
        {
            return Err(Error::InvalidConfig {
                field: "selection_level",
                reason: format!("must be in [0, 1), is {level}"),
            });
        }
        if self.calibration_window == 0 {
            return Err(Error::InvalidConfig { field: "calibration_window", reason: "must be at least 1".into() });
        }
        if self.max_history < 2 {
            return Err(Error::InvalidConfig {
                field: "max_history",
                reason: format!("must be at least 2, is {}", self.max_history),
            });
        }
        if self.min_scored > self.error_window {
            return Err(Error::InvalidConfig {
                field: "min_scored",
                reason: format!("must not exceed error_window ({}), is {}", self.error_window, self.min_scored),
            });
        }
        if self.candidates.is_empty() {
            return Err(Error::InvalidConfig { field: "candidates", reason: "must name at least one model".into() });
        }
        Ok(())
    }

    fn build(&self, kind: ModelKind) -> Box<dyn Model> {
        let s = &self.seasons;
        match kind {
            ModelKind::LastValue => Box::new(LastValue::new(self.naive)),
            ModelKind::Ses => Box::new(Ses::new(self.ses)),
            ModelKind::Cycle => Box::new(Cycle::new(s, self.cycle, self.naive)),
            ModelKind::SeasonalNaiveDay => Box::new(SeasonalNaive::day(s, self.naive)),
            ModelKind::SeasonalNaiveWeek => Box::new(SeasonalNaive::week(s, self.naive)),
            ModelKind::HoltWinters => Box::new(HoltWinters::new(s, self.holt_winters)),
            ModelKind::Mstl => Box::new(Mstl::new(s, self.mstl.clone())),
        }
    }
}

/// The forecast of the selected candidate, with why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectedForecast {
    /// The model that made the forecast.
    pub model: ModelKind,
    /// Its recent out-of-sample MASE (see the module docs); `+inf` when it
    /// has not been scored yet.
    pub recent_error: f64,
    /// Interval level of `forecast`.
    pub level: f64,
    /// The forecast itself.
    pub forecast: Forecast,
    /// Why a simpler model than configured was used, or anything else the
    /// caller should know; `None` when every candidate is in use.
    pub note: Option<String>,
}

/// A read-only view of one candidate, for status reports and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateStatus {
    /// The model.
    pub kind: ModelKind,
    /// Whether it is fitted and can forecast.
    pub ready: bool,
    /// Why it is not ready (or the model's own note when it is).
    pub reason: Option<String>,
    /// Its recent MASE, if scored.
    pub recent_error: Option<f64>,
    /// Scores in its window.
    pub scored: usize,
}

#[derive(Debug)]
struct Pending {
    /// Index of the last value known when the path was made.
    origin: u64,
    /// The path, with intervals at the reference level.
    forecast: Forecast,
    abs_sum: f64,
    count: usize,
    /// The bound the decide stage would size for, per lead.
    sized: Vec<f64>,
    pinball_sum: f64,
    sized_count: usize,
}

struct Candidate {
    model: Box<dyn Model>,
    calibrator: Calibrator,
    last_error: Option<Error>,
    /// Tried to fit off schedule since the last scheduled refit.
    tried_since_refit: bool,
    /// Was fitted when the push that made the due refit updated it: the
    /// refit then decides as it would have at the push, even if the update
    /// unfitted the model (MSTL does when it cannot extend its path).
    fitted_at_due: bool,
    pending: VecDeque<Pending>,
    scores: VecDeque<f64>,
    /// Mean pinball losses of the sized bound, per scored path.
    sizing_scores: VecDeque<f64>,
}

/// Every candidate model of one series, scored and refitted online.
pub struct Ensemble {
    config: EnsembleConfig,
    candidates: Vec<Candidate>,
    history: VecDeque<f64>,
    /// Values pushed so far (the index of the next value).
    seen: u64,
    since_refit: usize,
    /// Scheduled refits so far.
    refits: u64,
    /// A scheduled refit was deferred by [`Ensemble::push_deferred`] and
    /// has not run yet.
    refit_due: bool,
    /// First fits of newly eligible candidates were deferred likewise.
    fits_due: bool,
    scale_sum: f64,
    scale_count: usize,
    /// Leads whose errors feed the calibrators.
    calibration_leads: Vec<u64>,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("seen", &self.seen)
            .field("history", &self.history.len())
            .field("candidates", &self.candidates())
            .finish_non_exhaustive()
    }
}

impl Ensemble {
    /// An empty ensemble.
    ///
    /// # Errors
    /// As [`EnsembleConfig::validate`].
    pub fn new(config: EnsembleConfig) -> Result<Ensemble> {
        config.validate()?;
        let mut kinds = config.candidates.clone();
        kinds.sort();
        kinds.dedup();
        let candidates = kinds
            .into_iter()
            .map(|kind| Candidate {
                model: config.build(kind),
                calibrator: Calibrator::new(config.calibration_window),
                last_error: None,
                tried_since_refit: false,
                fitted_at_due: false,
                pending: VecDeque::with_capacity(config.score_horizon + 1),
                scores: VecDeque::with_capacity(config.error_window),
                sizing_scores: VecDeque::with_capacity(config.error_window),
            })
            .collect();
        let h = config.score_horizon as u64;
        let mut calibration_leads = vec![1, h.div_ceil(2), h];
        calibration_leads.dedup();
        Ok(Ensemble {
            calibration_leads,
            history: VecDeque::with_capacity(config.max_history),
            config,
            candidates,
            seen: 0,
            since_refit: 0,
            refits: 0,
            refit_due: false,
            fits_due: false,
            scale_sum: 0.0,
            scale_count: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EnsembleConfig {
        &self.config
    }

    /// Values pushed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Values retained for refits.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Takes the next value of the series (see the module docs), running
    /// its refit or first fits at once.
    pub fn push(&mut self, value: f64) {
        self.push_deferred(value);
        self.run_due_refit();
    }

    /// Takes the next value of the series like [`Ensemble::push`], but a
    /// scheduled refit it hits, or a first fit, is left due for
    /// [`Ensemble::run_due_refit`] (see "Deferred refits" in the module
    /// docs); returns whether one is due. One still due from the previous
    /// push runs first.
    pub fn push_deferred(&mut self, value: f64) -> bool {
        // The install point of a deferred refit is before the next value,
        // whenever the caller found time for it: results never depend on it.
        self.run_due_refit();
        let value = clean(value);
        let index = self.seen;
        self.seen += 1;
        self.score(index, value);
        self.retain(value);
        self.since_refit += 1;
        if self.since_refit >= self.config.refit_every {
            self.since_refit = 0;
            self.refit_due = true;
            for c in &mut self.candidates {
                c.fitted_at_due = c.model.is_fitted();
            }
        }
        if self.update_fitted(value) {
            if !self.candidates.iter().any(|c| c.model.is_fitted()) {
                // Nothing could forecast this value without the fit (a new
                // series): it runs now, as the forecast must not wait. Only
                // last value is this young, and its fit costs nothing.
                self.first_fits();
            } else if !self.refit_due {
                // (A due refit fits every candidate anyway.)
                self.fits_due = true;
            }
        }
        self.forecast_for_scoring(index);
        self.refit_due()
    }

    /// Whether a scheduled refit, or a first fit of a candidate that just
    /// reached its minimum history, was deferred by
    /// [`Ensemble::push_deferred`] and is still to run.
    pub fn refit_due(&self) -> bool {
        self.refit_due || self.fits_due
    }

    /// Shifts the refit schedule by `phase` steps. The dataflow gives every
    /// series its own phase (from its stable hash) so that thousands of
    /// series started together do not all refit at the same step.
    pub fn stagger_refits(&mut self, phase: usize) {
        self.since_refit = phase % self.config.refit_every.max(1);
    }

    /// Runs what [`Ensemble::push_deferred`] left due, if anything; returns
    /// whether it ran. A scheduled refit refits every candidate, except a
    /// fitted slow model between its own, less frequent refits, which the
    /// push already updated with the value; otherwise the candidates that
    /// just reached their minimum history get their first fit.
    pub fn run_due_refit(&mut self) -> bool {
        if self.fits_due && !self.refit_due {
            self.fits_due = false;
            self.first_fits();
            self.remake_last_paths();
            return true;
        }
        if !self.refit_due {
            return false;
        }
        self.refit_due = false;
        self.fits_due = false;
        self.refits += 1;
        let every = self.config.slow_refit_every.max(1) as u64;
        let skip_slow = !self.refits.is_multiple_of(every);
        self.recompute_scale();
        let history = self.history.make_contiguous();
        for c in &mut self.candidates {
            let slow = matches!(c.model.kind(), ModelKind::Mstl | ModelKind::HoltWinters);
            if skip_slow && slow && c.fitted_at_due {
                continue;
            }
            c.tried_since_refit = false;
            c.last_error = c.model.fit(history).err();
        }
        self.remake_last_paths();
        true
    }

    /// The push made the scoring paths of its value before the deferred
    /// fits; the models as they now are make them again, so the state is
    /// that of fits at the push. No value arrived since, so those paths are
    /// unscored.
    fn remake_last_paths(&mut self) {
        let origin = self.seen.saturating_sub(1);
        for c in &mut self.candidates {
            while c.pending.back().is_some_and(|p| p.origin == origin) {
                c.pending.pop_back();
            }
        }
        self.forecast_for_scoring(origin);
    }

    /// Refits every candidate now on the retained history and restarts the
    /// refit schedule (for instance after a restore from a checkpoint). It
    /// stands in for a refit that was due.
    pub fn refit_all(&mut self) {
        self.since_refit = 0;
        self.refit_due = false;
        self.fits_due = false;
        self.recompute_scale();
        let history = self.history.make_contiguous();
        for c in &mut self.candidates {
            c.tried_since_refit = false;
            c.last_error = c.model.fit(history).err();
        }
    }

    fn score(&mut self, index: u64, value: f64) {
        let horizon = self.config.score_horizon as u64;
        let tau = self.config.selection_level.map(|l| (1.0 + l) / 2.0);
        let sizing_leads = self.config.sizing_leads as u64;
        for c in &mut self.candidates {
            for p in &mut c.pending {
                let lead = index - p.origin;
                // `lead` is in 1..=horizon: paths are dropped at `horizon`.
                let Some(i) = usize::try_from(lead - 1).ok().filter(|i| *i < p.forecast.point.len()) else {
                    continue;
                };
                let f = &p.forecast;
                let e = (value - f.point[i]).abs();
                if e.is_finite() {
                    p.abs_sum += e;
                    p.count += 1;
                    if let (Some(tau), Some(&b)) = (tau, p.sized.get(i))
                        && lead <= sizing_leads
                    {
                        let miss = value - b;
                        p.pinball_sum += if miss > 0.0 { tau * miss } else { (tau - 1.0) * miss };
                        p.sized_count += 1;
                    }
                    if self.calibration_leads.contains(&lead) {
                        c.calibrator.record(value, f.point[i], f.lower[i], f.upper[i]);
                    }
                }
            }
            while c.pending.front().is_some_and(|p| index - p.origin >= horizon) {
                let Some(done) = c.pending.pop_front() else {
                    break;
                };
                if done.count > 0 {
                    if c.scores.len() == self.config.error_window {
                        c.scores.pop_front();
                    }
                    c.scores.push_back(done.abs_sum / done.count as f64);
                    if done.sized_count > 0 {
                        if c.sizing_scores.len() == self.config.error_window {
                            c.sizing_scores.pop_front();
                        }
                        c.sizing_scores.push_back(done.pinball_sum / done.sized_count as f64);
                    }
                }
            }
        }
    }

    fn retain(&mut self, value: f64) {
        if let Some(&prev) = self.history.back() {
            let d = (value - prev).abs();
            if d.is_finite() {
                self.scale_sum += d;
                self.scale_count += 1;
            }
        }
        if self.history.len() == self.config.max_history
            && let (Some(a), Some(b)) = (self.history.pop_front(), self.history.front())
        {
            let d = (b - a).abs();
            if d.is_finite() {
                self.scale_sum -= d;
                self.scale_count = self.scale_count.saturating_sub(1);
            }
        }
        self.history.push_back(value);
    }

    /// Exact recomputation, so that the running sum cannot drift.
    fn recompute_scale(&mut self) {
        let (sum, count) = self
            .history
            .iter()
            .zip(self.history.iter().skip(1))
            .map(|(a, b)| (b - a).abs())
            .filter(|d| d.is_finite())
            .fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
        self.scale_sum = sum;
        self.scale_count = count;
    }

    /// The series' scale: mean absolute one-step change over the retained
    /// history, or 1 when there is none (constant or too short a series), so
    /// the recent error is then the plain MAE.
    pub fn scale(&self) -> f64 {
        let s = self.scale_sum / self.scale_count.max(1) as f64;
        if self.scale_count > 0 && s > 0.0 && s.is_finite() { s } else { 1.0 }
    }

    /// Updates the fitted candidates with the value; returns whether one
    /// that is not fitted has reached its minimum history and awaits
    /// [`Ensemble::first_fits`].
    fn update_fitted(&mut self, value: f64) -> bool {
        let len = self.history.len();
        let mut needs_fit = false;
        for c in &mut self.candidates {
            if c.model.is_fitted() {
                c.model.update(value);
            } else if !c.tried_since_refit && len >= c.model.min_history() {
                needs_fit = true;
            }
        }
        needs_fit
    }

    /// Fits, once per refit period, every candidate that is not fitted and
    /// has its minimum history, so that a new deployment gets a model as
    /// soon as it has the data.
    fn first_fits(&mut self) {
        let len = self.history.len();
        let history = self.history.make_contiguous();
        for c in &mut self.candidates {
            if !c.model.is_fitted() && !c.tried_since_refit && len >= c.model.min_history() {
                c.tried_since_refit = true;
                c.last_error = c.model.fit(history).err();
            }
        }
    }

    fn forecast_for_scoring(&mut self, origin: u64) {
        let horizon = self.config.score_horizon;
        let reference = self.config.reference_level;
        // The share of the calibrated upper half-width the sized bound
        // lies at, as the decide stage reads it.
        let share = self.config.selection_level.and_then(|l| super::sizing_share(l, reference));
        let mut scratch = Vec::new();
        for c in &mut self.candidates {
            if !c.model.is_fitted() {
                continue;
            }
            if let Ok(forecast) = c.model.predict(horizon, reference) {
                let sized = match share {
                    Some(share) => {
                        let hi = match c.calibrator.multipliers(reference, &mut scratch) {
                            Some((_, hi)) if self.config.calibrate => hi,
                            _ => 1.0,
                        };
                        forecast.point.iter().zip(&forecast.upper).map(|(p, u)| p + share * hi * (u - p)).collect()
                    }
                    None => Vec::new(),
                };
                c.pending.push_back(Pending {
                    origin,
                    forecast,
                    abs_sum: 0.0,
                    count: 0,
                    sized,
                    pinball_sum: 0.0,
                    sized_count: 0,
                });
            }
        }
    }

    /// What candidates are ranked by: the mean sizing loss of their recent
    /// paths, or their recent error without a selection level.
    fn rank_error_of(&self, c: &Candidate) -> Option<f64> {
        if self.config.selection_level.is_none() {
            return self.recent_error_of(c);
        }
        if c.sizing_scores.is_empty() {
            return None;
        }
        Some(c.sizing_scores.iter().sum::<f64>() / c.sizing_scores.len() as f64)
    }

    fn recent_error_of(&self, c: &Candidate) -> Option<f64> {
        if c.scores.is_empty() {
            return None;
        }
        let mean = c.scores.iter().sum::<f64>() / c.scores.len() as f64;
        Some(mean / self.scale())
    }

    /// Why a candidate is not fitted, without repeating its name.
    fn reason_unavailable(&self, c: &Candidate) -> String {
        let (need, have) = match &c.last_error {
            Some(Error::InsufficientHistory { need, have, .. }) => (*need, *have),
            Some(Error::Fit { reason, .. }) => return format!("fit failed: {reason}"),
            Some(e) => return e.to_string(),
            None => (c.model.min_history(), self.history.len()),
        };
        format!(
            "needs {need} steps ({:.1} days) of history, has {have}",
            self.config.seasons.minutes_for_steps(need) / 1440.0
        )
    }

    /// A snapshot of every candidate, simplest first.
    pub fn candidates(&self) -> Vec<CandidateStatus> {
        self.candidates
            .iter()
            .map(|c| {
                let ready = c.model.is_fitted();
                CandidateStatus {
                    kind: c.model.kind(),
                    ready,
                    reason: if ready { c.model.note() } else { Some(self.reason_unavailable(c)) },
                    recent_error: self.recent_error_of(c),
                    scored: c.scores.len(),
                }
            })
            .collect()
    }

    /// The recent error of one candidate, if it is configured and scored.
    pub fn recent_error(&self, kind: ModelKind) -> Option<f64> {
        self.candidates.iter().find(|c| c.model.kind() == kind).and_then(|c| self.recent_error_of(c))
    }

    /// The forecast of one candidate, whether or not it would be selected.
    ///
    /// # Errors
    /// [`Error::NoModelReady`] if `kind` is not a candidate, else as
    /// [`Model::predict`].
    pub fn candidate_forecast(&self, kind: ModelKind, horizon: usize, level: f64) -> Result<Forecast> {
        let c = self
            .candidates
            .iter()
            .find(|c| c.model.kind() == kind)
            .ok_or_else(|| Error::NoModelReady(format!("{kind} is not a candidate")))?;
        self.predict_with(c, horizon, level)
    }

    /// A candidate's forecast, with calibrated intervals once its calibrator
    /// has enough errors.
    fn predict_with(&self, c: &Candidate, horizon: usize, level: f64) -> Result<Forecast> {
        super::check_level(level)?;
        if self.config.calibrate {
            let mut f = c.model.predict(horizon, self.config.reference_level)?;
            if c.calibrator.apply(&mut f, level, &mut Vec::new()) {
                return f.checked(c.model.kind());
            }
        }
        c.model.predict(horizon, level)
    }

    /// The candidates in the order they would be tried, best first, and
    /// whether the first one was chosen by score (`true`) or by default.
    fn ranking(&self, by_sizing: bool) -> (Vec<usize>, bool) {
        let min = self.config.min_scored;
        let mut qualified: Vec<(usize, f64)> = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.model.is_fitted() && c.scores.len() >= min)
            .filter_map(|(i, c)| {
                if by_sizing { self.rank_error_of(c) } else { self.recent_error_of(c) }.map(|e| (i, e))
            })
            .collect();
        // Stable sort: equal errors keep the simpler-first order.
        qualified.sort_by(|a, b| a.1.total_cmp(&b.1));
        let by_score = !qualified.is_empty();
        let mut order: Vec<usize> = qualified.iter().map(|(i, _)| *i).collect();
        let mut rest: Vec<usize> = (0..self.candidates.len())
            .filter(|i| !order.contains(i) && self.candidates[*i].model.is_fitted())
            .collect();
        rest.sort_by(|a, b| {
            let (ca, cb) = (&self.candidates[*a], &self.candidates[*b]);
            cb.scores.len().cmp(&ca.scores.len()).then(a.cmp(b))
        });
        order.extend(rest);
        (order, by_score)
    }

    /// The forecast of the candidate with the lowest recent sizing loss (or
    /// recent error, without a selection level).
    ///
    /// # Errors
    /// [`Error::InvalidLevel`] for a level outside (0, 1);
    /// [`Error::NoModelReady`] when no candidate can forecast (fewer than
    /// two values, or every candidate failed), with the reasons.
    pub fn forecast(&self, horizon: usize, level: f64) -> Result<SelectedForecast> {
        self.forecast_ranked(horizon, level, true)
    }

    /// As [`Ensemble::forecast`], ranking the candidates by recent error
    /// whatever the selection level: the selection for point accuracy,
    /// which `forecast-eval` reports beside the job's.
    ///
    /// # Errors
    /// As [`Ensemble::forecast`].
    pub fn forecast_by_error(&self, horizon: usize, level: f64) -> Result<SelectedForecast> {
        self.forecast_ranked(horizon, level, false)
    }

    fn forecast_ranked(&self, horizon: usize, level: f64, by_sizing: bool) -> Result<SelectedForecast> {
        super::check_level(level)?;
        let (order, by_score) = self.ranking(by_sizing);
        let mut notes: Vec<String> = self
            .candidates
            .iter()
            .filter(|c| !c.model.is_fitted())
            .map(|c| format!("{} unavailable: {}", c.model.kind(), self.reason_unavailable(c)))
            .collect();
        for (rank, &i) in order.iter().enumerate() {
            let c = &self.candidates[i];
            match self.predict_with(c, horizon, level) {
                Ok(forecast) => {
                    if rank == 0 && !by_score {
                        notes.push(format!(
                            "no candidate has {} scored forecasts yet; {} chosen by default",
                            self.config.min_scored,
                            c.model.kind()
                        ));
                    }
                    if let Some(n) = c.model.note() {
                        notes.push(n);
                    }
                    return Ok(SelectedForecast {
                        model: c.model.kind(),
                        recent_error: self.recent_error_of(c).unwrap_or(f64::INFINITY),
                        level,
                        forecast,
                        note: (!notes.is_empty()).then(|| notes.join("; ")),
                    });
                }
                Err(e) => notes.push(format!("{} failed to predict: {e}", c.model.kind())),
            }
        }
        Err(Error::NoModelReady(if notes.is_empty() { "no candidate is fitted".into() } else { notes.join("; ") }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::testing::{daily_sine, gaussian_noise};

    fn seasons() -> Seasons {
        Seasons::from_step(300).expect("valid step")
    }

    fn ensemble(candidates: &[ModelKind]) -> Ensemble {
        let mut config = EnsembleConfig::for_seasons(&seasons());
        config.candidates = candidates.to_vec();
        Ensemble::new(config).expect("valid config")
    }

    #[test]
    fn short_history_falls_back_with_a_note() {
        let s = seasons();
        let mut e = ensemble(&ModelKind::ALL);
        assert!(matches!(e.forecast(1, 0.9), Err(Error::NoModelReady(_))));
        for v in daily_sine(&s, s.day, 1.0) {
            e.push(v);
        }
        let f = e.forecast(12, 0.9).expect("last value is ready");
        assert_eq!(f.model, ModelKind::LastValue);
        let note = f.note.expect("fallback is explained");
        for kind in ["holt-winters", "mstl", "seasonal-naive-day", "seasonal-naive-week"] {
            assert!(note.contains(&format!("{kind} unavailable")), "{note}");
        }
        assert!(note.contains("needs 576 steps"), "{note}");
        assert!(f.recent_error.is_finite(), "last value has been scored");
    }

    #[test]
    fn seasonal_models_win_on_a_seasonal_series() {
        let s = seasons();
        let mut e = ensemble(&[ModelKind::LastValue, ModelKind::SeasonalNaiveDay, ModelKind::HoltWinters]);
        for v in daily_sine(&s, 4 * s.day, 0.5) {
            e.push(v);
        }
        let f = e.forecast(12, 0.9).expect("ready");
        assert_ne!(f.model, ModelKind::LastValue, "{:?}", e.candidates());
        assert!(f.recent_error < 1.0);
        assert_eq!(f.note, None);
    }

    #[test]
    fn an_hourly_job_is_forecast_by_its_cycle() {
        let s = seasons();
        let mut e = ensemble(&ModelKind::ALL);
        for v in crate::forecast::testing::bursts(3 * s.day, 12.0, 21) {
            e.push(v);
        }
        let f = e.forecast(12, 0.9).expect("ready");
        assert_eq!(f.model, ModelKind::Cycle, "{:?}", e.candidates());
        // The history ends 72 cycles in; the next bursts are 6 and 7 on.
        let upper_bursts: Vec<usize> = (1..=12).filter(|h| f.forecast.point[h - 1] > 25.0).collect();
        assert_eq!(upper_bursts, vec![6, 7]);
        assert!(f.note.is_some_and(|n| n.contains("cycle of 12 steps")));
    }

    /// Regression: ranked by mean absolute error, the seasonal-naive model
    /// won on flat VM loads with a burst a day at varying times (Azure VM
    /// CPU), though its interval carried yesterday's burst into today's
    /// upper bound: sized for it, prescale kept dozens of idle replicas.
    #[test]
    fn a_burst_yesterday_does_not_size_today_for_it() {
        let s = seasons();
        let noise = gaussian_noise(8 * s.day, 3);
        let mut rng = crate::forecast::testing::SplitMix::new(11);
        let mut values = Vec::new();
        for day in 0..8 {
            let start = (rng.uniform() * 270.0) as usize;
            for i in 0..s.day {
                let calm = 10.0 + 0.5 * noise[day * s.day + i];
                values.push(if (start..start + 7).contains(&i) { 100.0 } else { calm });
            }
        }
        let run = |selection_level| {
            let mut config = EnsembleConfig::for_seasons(&s);
            config.candidates = vec![ModelKind::LastValue, ModelKind::SeasonalNaiveDay, ModelKind::Ses];
            config.selection_level = selection_level;
            let mut e = Ensemble::new(config).expect("valid config");
            let (mut naive_picks, mut uppers) = (0, Vec::new());
            for (i, v) in values.iter().enumerate() {
                e.push(*v);
                if i > 3 * s.day {
                    let f = e.forecast(1, 0.9).expect("ready");
                    naive_picks += usize::from(f.model == ModelKind::SeasonalNaiveDay);
                    uppers.push(f.forecast.upper[0]);
                }
            }
            uppers.sort_by(f64::total_cmp);
            (naive_picks, uppers[uppers.len() * 9 / 10])
        };
        let (by_error, upper_by_error) = run(None);
        let (by_sizing, upper_by_sizing) = run(Some(0.6));
        assert!(by_error > 100, "the case no longer shows what broke: {by_error} picks");
        assert_eq!(by_sizing, 0);
        assert!(upper_by_sizing < upper_by_error - 0.5, "{upper_by_sizing} vs {upper_by_error}");
    }

    #[test]
    fn step_change_is_followed() {
        let s = seasons();
        let mut e = ensemble(&[ModelKind::LastValue, ModelKind::HoltWinters]);
        for v in gaussian_noise(3 * s.day, 9) {
            e.push(100.0 + v);
        }
        for _ in 0..6 {
            e.push(300.0);
        }
        let lv = e.candidate_forecast(ModelKind::LastValue, 1, 0.9).expect("ready");
        assert_eq!(lv.point[0], 300.0);
        let hw = e.candidate_forecast(ModelKind::HoltWinters, 1, 0.9).expect("ready");
        assert!((hw.point[0] - 300.0).abs() < 30.0, "{}", hw.point[0]);
    }

    #[test]
    fn bad_input_never_panics() {
        let s = seasons();
        let mut e = ensemble(&ModelKind::ALL);
        let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308, 0.0];
        for (i, v) in daily_sine(&s, 3 * s.day, 1.0).into_iter().enumerate() {
            e.push(if i % 13 == 0 { specials[i % specials.len()] } else { v });
            if i % 97 == 0
                && let Ok(f) = e.forecast(12, 0.9)
            {
                assert!(f.forecast.point.iter().all(|v| v.is_finite()));
            }
        }
        let mut all_nan = ensemble(&ModelKind::ALL);
        for _ in 0..3 * s.day {
            all_nan.push(f64::NAN);
        }
        assert!(all_nan.forecast(12, 0.9).is_err());
    }

    #[test]
    fn intervals_cover_gaussian_noise_at_nominal_rate() {
        let s = seasons();
        let y = daily_sine(&s, 8 * s.day, 2.0);
        let mut e = ensemble(&ModelKind::ALL);
        let (mut inside_1, mut inside_6, mut total) = (0, 0, 0);
        for t in 0..y.len() - 6 {
            e.push(y[t]);
            if t < 3 * s.day {
                continue;
            }
            let f = e.forecast(6, 0.9).expect("ready").forecast;
            total += 1;
            inside_1 += usize::from(f.lower[0] <= y[t + 1] && y[t + 1] <= f.upper[0]);
            inside_6 += usize::from(f.lower[5] <= y[t + 6] && y[t + 6] <= f.upper[5]);
        }
        for (lead, inside) in [(1, inside_1), (6, inside_6)] {
            let rate = inside as f64 / total as f64;
            assert!((0.86..=0.94).contains(&rate), "lead {lead}: coverage {rate}");
        }
    }

    #[test]
    fn history_is_bounded() {
        let s = seasons();
        let mut config = EnsembleConfig::for_seasons(&s);
        config.candidates = vec![ModelKind::LastValue];
        config.max_history = 100;
        let mut e = Ensemble::new(config).expect("valid config");
        for v in gaussian_noise(1000, 1) {
            e.push(v);
        }
        assert_eq!(e.history_len(), 100);
        let exact = {
            let mut copy = e.history.clone();
            let h = copy.make_contiguous();
            crate::forecast::metrics::naive_scale(h).expect("noise moves")
        };
        assert!((e.scale() - exact).abs() < 1e-9 * exact);
    }

    #[test]
    fn deterministic_bit_for_bit() {
        let s = seasons();
        let y: Vec<f64> = daily_sine(&s, 3 * s.day, 2.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 101 == 0 { f64::NAN } else { v })
            .collect();
        let run = || {
            let mut e = ensemble(&ModelKind::ALL);
            let mut out = Vec::new();
            for (i, &v) in y.iter().enumerate() {
                e.push(v);
                if i % 50 == 0
                    && let Ok(f) = e.forecast(12, 0.9)
                {
                    out.push(f.recent_error.to_bits());
                    out.extend(f.forecast.point.iter().map(|v| v.to_bits()));
                    out.extend(f.forecast.upper.iter().map(|v| v.to_bits()));
                }
            }
            out
        };
        let first = run();
        assert!(!first.is_empty());
        assert_eq!(first, run());
    }

    /// Every candidate's forecast (with calibrated intervals) and recent
    /// error, and the selected forecast, as bits.
    fn state_bits(e: &Ensemble) -> Vec<u64> {
        let mut out = Vec::new();
        for kind in ModelKind::ALL {
            if let Ok(f) = e.candidate_forecast(kind, 6, 0.9) {
                out.extend(f.point.iter().chain(&f.lower).chain(&f.upper).map(|v| v.to_bits()));
            }
            out.push(e.recent_error(kind).map_or(u64::MAX, f64::to_bits));
        }
        if let Ok(f) = e.forecast(6, 0.9) {
            out.push(f.recent_error.to_bits());
            out.extend(f.forecast.point.iter().map(|v| v.to_bits()));
        }
        out
    }

    fn noisy_sine(s: &Seasons, days: usize) -> Vec<f64> {
        daily_sine(s, days * s.day, 2.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 89 == 0 { f64::NAN } else { v })
            .collect()
    }

    #[test]
    fn deferred_refit_leaves_the_state_of_a_refit_at_push() {
        let s = seasons();
        let y = noisy_sine(&s, 3);
        let mut config = EnsembleConfig::for_seasons(&s);
        config.refit_every = 12;
        config.score_horizon = 6;
        let mut sync = Ensemble::new(config.clone()).expect("valid config");
        let mut deferred = Ensemble::new(config).expect("valid config");
        sync.stagger_refits(5);
        deferred.stagger_refits(5);
        let (mut compared, mut with_slow, mut forced, mut first_fits) = (0, 0, 0, 0);
        for (i, &v) in y.iter().enumerate() {
            sync.push(v);
            let was_due = deferred.refit_due();
            let due = deferred.push_deferred(v);
            forced += usize::from(was_due);
            first_fits += usize::from(deferred.fits_due);
            // Half the due refits run at once, the others are left for the
            // next push to run.
            if due && (i / 12) % 2 == 0 {
                assert!(deferred.run_due_refit());
                assert!(!deferred.run_due_refit(), "a refit runs once");
            }
            if deferred.refit_due() {
                continue;
            }
            assert_eq!(state_bits(&sync), state_bits(&deferred), "step {i}");
            // The newest scoring paths come from the models as they are now:
            // after a refit, from the refitted ones.
            for c in deferred.candidates.iter().filter(|c| c.model.is_fitted()) {
                let newest = c.pending.back().expect("a fitted candidate made a path");
                assert_eq!(newest.origin, deferred.seen - 1, "step {i}");
                let now = c.model.predict(6, deferred.config.reference_level).expect("fitted");
                assert_eq!(newest.forecast.point, now.point, "{} at step {i}", c.model.kind());
            }
            compared += 1;
            let ready = |k| sync.candidates().iter().any(|c| c.kind == k && c.ready);
            with_slow += usize::from(ready(ModelKind::HoltWinters) && ready(ModelKind::Mstl));
        }
        assert!(forced > 0 && compared > y.len() / 2, "forced {forced}, compared {compared}");
        assert!(first_fits > 0, "the seasonal models' first fits were deferred too");
        assert!(with_slow > s.day / 2, "slow models compared at {with_slow} steps");
        assert!(sync.refits > 6, "slow models skipped and refitted: {} refits", sync.refits);
    }

    #[test]
    fn a_new_series_forecasts_when_its_first_push_makes_a_refit_due() {
        let mut config = EnsembleConfig::for_seasons(&seasons());
        config.refit_every = 12;
        let mut e = Ensemble::new(config).expect("valid config");
        e.stagger_refits(10);
        let mut lazy = Ensemble::new(e.config().clone()).expect("valid config");
        lazy.stagger_refits(10);
        // Last value needs two values: none is fitted before the second.
        assert!(!e.push_deferred(4.0));
        assert!(e.push_deferred(5.0), "the second push hits the schedule");
        lazy.push(4.0);
        lazy.push(5.0);
        let deferred = e.forecast(1, 0.9).expect("last value fitted at the push");
        assert_eq!(deferred.forecast.point, lazy.forecast(1, 0.9).expect("refitted").forecast.point);
    }

    #[test]
    fn deferred_refit_does_not_update_slow_models_twice() {
        let s = seasons();
        let mut config = EnsembleConfig::for_seasons(&s);
        config.candidates = vec![ModelKind::LastValue, ModelKind::HoltWinters, ModelKind::Mstl];
        config.refit_every = 12;
        config.score_horizon = 6;
        let mut e = Ensemble::new(config).expect("valid config");
        let (mut skipped, mut refitted) = (0, 0);
        for v in noisy_sine(&s, 3) {
            // Fitted before the push, so not fitted at it for the first time.
            let slow_fitted = e.candidates().iter().filter(|c| c.ready).count() == 3;
            if !e.push_deferred(v) || !slow_fitted {
                continue;
            }
            let before: Vec<_> = [ModelKind::HoltWinters, ModelKind::Mstl]
                .map(|k| e.candidate_forecast(k, 6, 0.9).map(|f| f.point).ok())
                .to_vec();
            assert!(e.run_due_refit());
            let after: Vec<_> = [ModelKind::HoltWinters, ModelKind::Mstl]
                .map(|k| e.candidate_forecast(k, 6, 0.9).map(|f| f.point).ok())
                .to_vec();
            if e.refits.is_multiple_of(e.config.slow_refit_every as u64) {
                assert_ne!(before, after, "a slow refit refits them");
                refitted += 1;
            } else {
                // Updated with the value at the push; another update would
                // move their forecast origin one step on.
                assert_eq!(before, after, "refit {}", e.refits);
                skipped += 1;
            }
        }
        assert!(skipped >= 10 && refitted >= 2, "skipped {skipped}, refitted {refitted}");
    }

    #[test]
    fn invalid_config_names_the_field() {
        let mut config = EnsembleConfig::for_seasons(&seasons());
        config.refit_every = 0;
        let err = Ensemble::new(config).expect_err("zero refit period");
        assert!(matches!(err, Error::InvalidConfig { field: "refit_every", .. }), "{err:?}");
    }
}
