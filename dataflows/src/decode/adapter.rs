//! The JSON lines prometheus-kafka-adapter writes:
//! `{"timestamp":"2026-01-01T00:00:00Z","value":"0.42","name":"…","labels":{…}}`.
//!
//! The value is text (`"NaN"` and `"+Inf"` included; a JSON number is
//! accepted too), the timestamp RFC 3339. Labels give the namespace, the
//! pod and, when present, the deployment; other labels are skipped without
//! being copied. Strings are borrowed from the line where JSON allows it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use super::{Ctx, DecodeOptions, deployment, pod_id, validate};
use crate::record::{Interner, RejectReason, Rejected, Sample};
use crate::time::parse_datetime;

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    timestamp: Option<Cow<'a, str>>,
    value: Option<Value>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    labels: Labels<'a>,
}

/// A value written as text or as a number; `None` when the text is not a
/// number at all (as opposed to `NaN`, which is a number that fails
/// validation).
struct Value(Option<f64>);

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a number as text")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value(super::parse_value_text(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(Some(v as f64)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(Some(v as f64)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The labels prescale reads; the rest are skipped.
#[derive(Default)]
struct Labels<'a> {
    namespace: Option<Cow<'a, str>>,
    pod: Option<Cow<'a, str>>,
    deployment: Option<Cow<'a, str>>,
    app: Option<Cow<'a, str>>,
    app_name: Option<Cow<'a, str>>,
    metric: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Labels<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of label names to values")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Labels<'a>, M::Error> {
                let mut labels = Labels::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "namespace" => &mut labels.namespace,
                        "pod" | "pod_name" => &mut labels.pod,
                        "deployment" => &mut labels.deployment,
                        "app" => &mut labels.app,
                        "app.kubernetes.io/name" => &mut labels.app_name,
                        "__name__" => &mut labels.metric,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Cow<'de, str>>()?);
                }
                Ok(labels)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

pub(crate) fn decode(
    line: &str,
    options: &DecodeOptions,
    interner: &mut Interner,
    ctx: &Ctx<'_>,
    out: &mut impl FnMut(Result<Sample, Rejected>),
) {
    if line.trim().is_empty() {
        return;
    }
    let parsed: Line<'_> = match serde_json::from_str(line) {
        Ok(l) => l,
        Err(e) => return out(Err(ctx.reject(RejectReason::Malformed, format!("json: {e}")))),
    };
    let labels = &parsed.labels;
    let Some(metric) = parsed.name.as_deref().or(labels.metric.as_deref()).filter(|m| !m.is_empty()) else {
        return out(Err(ctx.reject(RejectReason::Malformed, "no metric name (`name` or label `__name__`)")));
    };
    let pod = labels.pod.as_deref().filter(|p| !p.is_empty());
    let from_labels =
        deployment::from_labels(labels.deployment.as_deref(), labels.app.as_deref(), labels.app_name.as_deref());
    let Some(deployment) = from_labels.or(pod.map(deployment::from_pod_name)).filter(|d| !d.is_empty()) else {
        return out(Err(ctx.reject(RejectReason::Malformed, "no pod or deployment label")));
    };
    let Some(ts) = parsed.timestamp.as_deref() else {
        return out(Err(ctx.reject(RejectReason::Malformed, "no timestamp")));
    };
    let Some(time) = parse_datetime(ts) else {
        return out(Err(ctx.reject(RejectReason::BadTimestamp, format!("timestamp {ts:?} is not RFC 3339"))));
    };
    let value = match parsed.value {
        Some(Value(Some(v))) => v,
        Some(Value(None)) => return out(Err(ctx.reject(RejectReason::Malformed, "value is not a number"))),
        None => return out(Err(ctx.reject(RejectReason::Malformed, "no value"))),
    };
    let value = match validate(value, options, ctx) {
        Ok(v) => v,
        Err(r) => return out(Err(r)),
    };
    let namespace = labels.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(&options.namespace);
    out(Ok(Sample {
        time,
        series: interner.series(namespace, deployment, metric),
        pod: pod_id(pod.unwrap_or(deployment)),
        value,
    }));
}

#[cfg(test)]
mod tests {
    use crate::decode::{DecodeOptions, Decoder, Format};
    use crate::record::{RejectReason, stable_hash};

    fn run(line: &str) -> Vec<Result<(u64, String, u64, f64), RejectReason>> {
        let mut d = Decoder::new(Format::AdapterJson, DecodeOptions::default(), "test");
        let mut got = Vec::new();
        d.decode(line, 0, 0, &mut |r| {
            got.push(r.map(|s| (s.time, s.series.to_string(), s.pod, s.value)).map_err(|e| e.reason))
        });
        got
    }

    #[test]
    fn decodes_the_adapter_format() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","value":"0.42","name":"container_cpu_usage_seconds_total","labels":{"__name__":"container_cpu_usage_seconds_total","namespace":"shop","pod":"checkout-7d9f8-abcde","container":"app","instance":"10.0.0.1:9100"}}"#;
        assert_eq!(
            run(line),
            vec![Ok((
                1_767_225_600_000,
                "shop/checkout/container_cpu_usage_seconds_total".to_owned(),
                stable_hash("checkout-7d9f8-abcde"),
                0.42
            ))]
        );
    }

    #[test]
    fn deployment_label_wins_over_pod_name() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00.5Z","value":1,"name":"rps","labels":{"app.kubernetes.io/name":"web","pod":"frontend-7d9f8-abcde"}}"#;
        let got = run(line);
        assert_eq!(got.len(), 1);
        let (t, s, _, v) = got[0].clone().unwrap_or_default();
        assert_eq!((t, s.as_str(), v), (1_767_225_600_500, "default/web/rps", 1.0));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","value":"1","name":"r\u0070s","labels":{"namespace":"sh\"op","pod":"a-7d9f8-abcde"}}"#;
        assert_eq!(run(line)[0].clone().map(|r| r.1), Ok("sh\"op/a/rps".to_owned()));
    }

    #[test]
    fn bad_records_are_rejected_by_reason() {
        let ok = |ts: &str, v: &str| {
            format!(r#"{{"timestamp":{ts},"value":{v},"name":"m","labels":{{"pod":"p-7d9f8-abcde"}}}}"#)
        };
        assert_eq!(run(&ok("\"2026-01-01T00:00:00Z\"", "\"NaN\"")), vec![Err(RejectReason::NonFinite)]);
        assert_eq!(run(&ok("\"2026-01-01T00:00:00Z\"", "\"+Inf\"")), vec![Err(RejectReason::NonFinite)]);
        assert_eq!(run(&ok("\"2026-01-01T00:00:00Z\"", "\"-1\"")), vec![Err(RejectReason::Negative)]);
        assert_eq!(run(&ok("\"2026-01-01T00:00:00Z\"", "\"x\"")), vec![Err(RejectReason::Malformed)]);
        assert_eq!(run(&ok("\"2026-01-01T00:00:00Z\"", "[1]")), vec![Err(RejectReason::Malformed)]);
        assert_eq!(run(&ok("\"yesterday\"", "\"1\"")), vec![Err(RejectReason::BadTimestamp)]);
        assert_eq!(run(&ok("1767225600", "\"1\"")), vec![Err(RejectReason::Malformed)]);
        assert_eq!(
            run(r#"{"timestamp":"2026-01-01T00:00:00Z","value":"1","name":"m","labels":{}}"#),
            vec![Err(RejectReason::Malformed)]
        );
        assert_eq!(
            run(r#"{"timestamp":"2026-01-01T00:00:00Z","value":"1","name":"m""#),
            vec![Err(RejectReason::Malformed)]
        );
        assert_eq!(run("not json"), vec![Err(RejectReason::Malformed)]);
        assert_eq!(run("[]"), vec![Err(RejectReason::Malformed)]);
    }
}
