//! Errors at the boundary of the dataflows crate: invalid stage settings.
//!
//! Bad *input records* are never errors: they become [`crate::Rejected`]
//! values with a reason and travel on the rejected output.

/// What can go wrong when a stage is configured.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// A setting is out of its valid range; `field` names it as the job
    /// config spells it.
    #[error("invalid setting `{field}`: {reason}")]
    InvalidSetting {
        /// The config field, e.g. `features.tumbling`.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
