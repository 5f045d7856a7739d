//! The flat JSON of the original blog pipeline:
//! `{"timestamp":"2026-01-01 00:00:00.000","pod_name":"…","cpu_usage":0.42,"memory_usage":1.2e8}`.
//!
//! One line carries two samples, metrics `cpu_usage` and `memory_usage`,
//! each accepted or rejected on its own; a line missing both is one
//! malformed record. The deployment comes from the pod name, the namespace
//! from the job config.

use std::borrow::Cow;

use serde::Deserialize;

use super::{Ctx, DecodeOptions, deployment, pod_id, validate};
use crate::record::{Interner, RejectReason, Rejected, Sample};
use crate::time::parse_datetime;

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pod_name: Option<Cow<'a, str>>,
    cpu_usage: Option<f64>,
    memory_usage: Option<f64>,
}

pub(crate) fn decode(
    line: &str,
    options: &DecodeOptions,
    interner: &mut Interner,
    ctx: &Ctx<'_>,
    out: &mut impl FnMut(Result<Sample, Rejected>),
) {
    if line.bytes().all(|b| b.is_ascii_whitespace()) {
        return;
    }
    let parsed: Line<'_> = match serde_json::from_str(line) {
        Ok(l) => l,
        Err(e) => return out(Err(ctx.reject(RejectReason::Malformed, format!("json: {e}")))),
    };
    let Some(pod) = parsed.pod_name.as_deref().filter(|p| !p.is_empty()) else {
        return out(Err(ctx.reject(RejectReason::Malformed, "no pod_name")));
    };
    let Some(ts) = parsed.timestamp.as_deref() else {
        return out(Err(ctx.reject(RejectReason::Malformed, "no timestamp")));
    };
    let Some(time) = parse_datetime(ts) else {
        return out(Err(ctx.reject(RejectReason::BadTimestamp, format!("timestamp {ts:?}"))));
    };
    if parsed.cpu_usage.is_none() && parsed.memory_usage.is_none() {
        return out(Err(ctx.reject(RejectReason::Malformed, "neither cpu_usage nor memory_usage")));
    }
    let deployment = deployment::from_pod_name(pod);
    for (metric, value) in [("cpu_usage", parsed.cpu_usage), ("memory_usage", parsed.memory_usage)] {
        let Some(value) = value else { continue };
        out(validate(value, options, ctx).map(|value| Sample {
            time,
            series: interner.series(&options.namespace, deployment, metric),
            pod: pod_id(pod),
            value,
        }));
    }
}

#[cfg(test)]
mod tests {
    use crate::decode::{DecodeOptions, Decoder, Format};
    use crate::record::RejectReason;

    fn run(line: &str) -> Vec<Result<(u64, String, f64), RejectReason>> {
        let mut d = Decoder::new(Format::BlogJson, DecodeOptions::default(), "test");
        let mut got = Vec::new();
        d.decode(line, 0, 0, &mut |r| {
            got.push(r.map(|s| (s.time, s.series.to_string(), s.value)).map_err(|e| e.reason))
        });
        got
    }

    #[test]
    fn one_line_two_samples() {
        let line = r#"{"timestamp":"2026-01-01 00:00:00.000","pod_name":"checkout-7d9f8-abcde","cpu_usage":0.42,"memory_usage":1.2e8}"#;
        assert_eq!(
            run(line),
            vec![
                Ok((1_767_225_600_000, "default/checkout/cpu_usage".to_owned(), 0.42)),
                Ok((1_767_225_600_000, "default/checkout/memory_usage".to_owned(), 1.2e8)),
            ]
        );
    }

    #[test]
    fn each_sample_is_judged_on_its_own() {
        let line = r#"{"timestamp":"2026-01-01 00:00:00.000","pod_name":"web-0","cpu_usage":-1,"memory_usage":5}"#;
        assert_eq!(
            run(line),
            vec![Err(RejectReason::Negative), Ok((1_767_225_600_000, "default/web/memory_usage".to_owned(), 5.0))]
        );
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            run(r#"{"timestamp":"2026-01-01 00:00:00.000","pod_name":"web-0"}"#),
            vec![Err(RejectReason::Malformed)]
        );
        assert_eq!(
            run(r#"{"timestamp":"01/01/2026","pod_name":"web-0","cpu_usage":1}"#),
            vec![Err(RejectReason::BadTimestamp)]
        );
        assert_eq!(run(r#"{"timestamp":"2026-01-01 00:00:00","cpu_usage":1}"#), vec![Err(RejectReason::Malformed)]);
        assert_eq!(
            run(r#"{"timestamp":"2026-01-01 00:00:00","pod_name":"a","cpu_usage":"1"}"#),
            vec![Err(RejectReason::Malformed)]
        );
        assert_eq!(
            run(r#"{"timestamp":"2026-01-01 00:00:00","pod_name":"a","cpu_usage":1e999}"#),
            vec![Err(RejectReason::Malformed)]
        );
    }
}
