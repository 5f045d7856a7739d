//! The `timestamp,series,value` CSV of the shared traces.
//!
//! `timestamp` is unix seconds (integer or decimal), `series` becomes the
//! deployment in the configured namespace with the configured metric name,
//! and the series is also its only "pod". The header line and blank lines
//! are not records.

use super::{Ctx, DecodeOptions, pod_id, validate};
use crate::quality::{Flag, Issue};
use crate::record::SeriesKey;
use crate::record::{Interner, RejectReason, Rejected, Sample};
use crate::time::{MAX_TIME, Millis};

/// Unix seconds, possibly fractional, to milliseconds.
fn parse_unix_seconds(text: &str) -> Option<Millis> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: Millis = whole.parse().ok()?;
    let mut ms = 0;
    for (i, b) in frac.bytes().take(3).enumerate() {
        ms += Millis::from(b - b'0') * [100, 10, 1][i];
    }
    secs.checked_mul(1000)?.checked_add(ms).filter(|&t| t <= MAX_TIME)
}

pub(crate) fn decode(
    line: &str,
    options: &DecodeOptions,
    interner: &mut Interner,
    ctx: &Ctx<'_>,
    out: &mut impl FnMut(Result<Sample, Rejected>),
) {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() || line.starts_with("timestamp,") {
        return;
    }
    let mut fields = line.split(',');
    let (Some(ts), Some(series), Some(value), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return out(Err(ctx.reject(RejectReason::Malformed, "expected 3 fields: timestamp,series,value")));
    };
    let series = series.trim();
    if series.is_empty() {
        return out(Err(ctx.reject(RejectReason::Malformed, "empty series")));
    }
    let Some(time) = parse_unix_seconds(ts.trim()) else {
        let mut rejected = ctx.reject(RejectReason::BadTimestamp, format!("timestamp {ts:?} is not unix seconds"));
        // Beyond year 9999 as seconds, but a time as milliseconds: the
        // signature of a producer switching units. The partition's clock
        // decides whether the guess fits its time (`PartitionClock::place`).
        if let Some(as_ms) = ts.trim().parse::<Millis>().ok().filter(|&t| t <= MAX_TIME) {
            let series = SeriesKey {
                namespace: options.namespace.clone(),
                deployment: series.to_owned(),
                metric: options.csv_metric.clone(),
            };
            rejected.flag = Some(Box::new(Flag { series, issue: Issue::TimestampUnit, at_ms: as_ms }));
        }
        return out(Err(rejected));
    };
    let Some(value) = super::parse_value_text(value) else {
        return out(Err(ctx.reject(RejectReason::Malformed, format!("value {value:?} is not a number"))));
    };
    let value = match validate(value, options, ctx) {
        Ok(v) => v,
        Err(r) => return out(Err(r)),
    };
    out(Ok(Sample {
        time,
        series: interner.series(&options.namespace, series, &options.csv_metric),
        pod: pod_id(series),
        value,
    }));
}

#[cfg(test)]
mod tests {
    use crate::decode::{DecodeOptions, Decoder, Format};
    use crate::record::RejectReason;

    fn run(line: &str) -> Vec<Result<(u64, String, f64), RejectReason>> {
        let mut d = Decoder::new(Format::Csv, DecodeOptions::default(), "test");
        let mut got = Vec::new();
        d.decode(line, 0, 7, &mut |r| {
            got.push(r.map(|s| (s.time, s.series.to_string(), s.value)).map_err(|e| {
                assert_eq!(e.origin.offset, 7);
                e.reason
            }))
        });
        got
    }

    #[test]
    fn decodes_a_trace_line() {
        assert_eq!(
            run("1392388200,realAWSCloudwatch/ec2_cpu_utilization_24ae8d,0.132"),
            vec![Ok((
                1_392_388_200_000,
                "default/realAWSCloudwatch/ec2_cpu_utilization_24ae8d/value".to_owned(),
                0.132
            ))]
        );
        assert_eq!(run("0.5,s,1e3"), vec![Ok((500, "default/s/value".to_owned(), 1000.0))]);
    }

    #[test]
    fn header_and_blank_lines_are_not_records() {
        assert!(run("timestamp,series,value").is_empty());
        assert!(run("  ").is_empty());
    }

    #[test]
    fn bad_lines_are_rejected_by_reason() {
        assert_eq!(run("1,2"), vec![Err(RejectReason::Malformed)]);
        assert_eq!(run("1,s,2,3"), vec![Err(RejectReason::Malformed)]);
        assert_eq!(run("-5,s,1"), vec![Err(RejectReason::BadTimestamp)]);
        assert_eq!(run("2026-01-01,s,1"), vec![Err(RejectReason::BadTimestamp)]);
        assert_eq!(run("99999999999999999999,s,1"), vec![Err(RejectReason::BadTimestamp)]);
        assert_eq!(run("1,s,abc"), vec![Err(RejectReason::Malformed)]);
        assert_eq!(run("1,s,NaN"), vec![Err(RejectReason::NonFinite)]);
        assert_eq!(run("1,s,inf"), vec![Err(RejectReason::NonFinite)]);
        assert_eq!(run("1,s,-2"), vec![Err(RejectReason::Negative)]);
        assert_eq!(run("1,s,1e300"), vec![Err(RejectReason::OutOfRange)]);
        assert_eq!(run("1,,1"), vec![Err(RejectReason::Malformed)]);
    }
}
