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

/// The fields of a line, borrowed from the line or from its serde parse.
struct Fields<'a> {
    timestamp: Option<&'a str>,
    /// `Some(None)`: present but not a number.
    value: Option<Option<f64>>,
    name: Option<&'a str>,
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    deployment: Option<&'a str>,
    app: Option<&'a str>,
    app_name: Option<&'a str>,
    metric: Option<&'a str>,
}

impl<'a> From<&'a Line<'a>> for Fields<'a> {
    fn from(l: &'a Line<'a>) -> Self {
        Fields {
            timestamp: l.timestamp.as_deref(),
            value: l.value.as_ref().map(|v| v.0),
            name: l.name.as_deref(),
            namespace: l.labels.namespace.as_deref(),
            pod: l.labels.pod.as_deref(),
            deployment: l.labels.deployment.as_deref(),
            app: l.labels.app.as_deref(),
            app_name: l.labels.app_name.as_deref(),
            metric: l.labels.metric.as_deref(),
        }
    }
}

/// A byte cursor for [`scan`].
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// After an object member: `Some(true)` past a comma (another member
    /// follows), `Some(false)` before the closing brace, `None` otherwise.
    fn more(&mut self) -> Option<bool> {
        self.skip_ws();
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Some(true)
            }
            b'}' => Some(false),
            _ => None,
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = self.text.get(self.pos..)?;
        // Strings are short: a plain loop beats a memchr call here.
        let len = rest.bytes().position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
        // An escape or a raw control character: leave the line to serde_json.
        if rest.as_bytes()[len] != b'"' {
            return None;
        }
        self.pos += len + 1;
        rest.get(..len)
    }
}

/// The fast path: reads the common shape of an adapter line (string
/// values, a flat labels object, no escapes) without building a serde
/// value. Anything else returns `None`, and the line goes through
/// serde_json, which gives the same answer or the precise error; a test
/// checks the two agree on mutated lines.
fn scan(line: &str) -> Option<Fields<'_>> {
    let mut f = Fields {
        timestamp: None,
        value: None,
        name: None,
        namespace: None,
        pod: None,
        deployment: None,
        app: None,
        app_name: None,
        metric: None,
    };
    let mut s = Scanner { text: line, pos: 0 };
    let mut seen_labels = false;
    s.eat(b'{')?;
    s.skip_ws();
    if s.peek()? != b'}' {
        loop {
            let key = s.string()?;
            s.eat(b':')?;
            s.skip_ws();
            match key {
                "timestamp" if f.timestamp.is_none() => f.timestamp = Some(s.string()?),
                "name" if f.name.is_none() => f.name = Some(s.string()?),
                "value" if f.value.is_none() => f.value = Some(super::parse_value_text(s.string()?)),
                "labels" if !seen_labels => {
                    seen_labels = true;
                    s.eat(b'{')?;
                    s.skip_ws();
                    if s.peek()? != b'}' {
                        loop {
                            let label = s.string()?;
                            s.eat(b':')?;
                            let value = s.string()?;
                            let slot = match label {
                                "namespace" => &mut f.namespace,
                                "pod" | "pod_name" => &mut f.pod,
                                "deployment" => &mut f.deployment,
                                "app" => &mut f.app,
                                "app.kubernetes.io/name" => &mut f.app_name,
                                "__name__" => &mut f.metric,
                                _ => &mut None,
                            };
                            if slot.is_some() {
                                return None; // A repeated label: let serde decide.
                            }
                            *slot = Some(value);
                            if !s.more()? {
                                break;
                            }
                        }
                    }
                    s.eat(b'}')?;
                }
                "timestamp" | "name" | "value" | "labels" => return None,
                _ => {
                    s.string()?;
                }
            }
            if !s.more()? {
                break;
            }
        }
    }
    s.eat(b'}')?;
    s.skip_ws();
    (s.pos == line.len()).then_some(f)
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
    let parsed: Line<'_>;
    let fields = match scan(line) {
        Some(fields) => fields,
        None => {
            parsed = match serde_json::from_str(line) {
                Ok(l) => l,
                Err(e) => return out(Err(ctx.reject(RejectReason::Malformed, format!("json: {e}")))),
            };
            Fields::from(&parsed)
        }
    };
    out(sample(&fields, options, interner, ctx));
}

fn sample(f: &Fields<'_>, options: &DecodeOptions, interner: &mut Interner, ctx: &Ctx<'_>) -> Result<Sample, Rejected> {
    let Some(metric) = f.name.or(f.metric).filter(|m| !m.is_empty()) else {
        return Err(ctx.reject(RejectReason::Malformed, "no metric name (`name` or label `__name__`)"));
    };
    let pod = f.pod.filter(|p| !p.is_empty());
    let from_labels = deployment::from_labels(f.deployment, f.app, f.app_name);
    let Some(deployment) = from_labels.or(pod.map(deployment::from_pod_name)).filter(|d| !d.is_empty()) else {
        return Err(ctx.reject(RejectReason::Malformed, "no pod or deployment label"));
    };
    let Some(ts) = f.timestamp else {
        return Err(ctx.reject(RejectReason::Malformed, "no timestamp"));
    };
    let Some(time) = parse_datetime(ts) else {
        return Err(ctx.reject(RejectReason::BadTimestamp, format!("timestamp {ts:?} is not RFC 3339")));
    };
    let value = match f.value {
        Some(Some(v)) => v,
        Some(None) => return Err(ctx.reject(RejectReason::Malformed, "value is not a number")),
        None => return Err(ctx.reject(RejectReason::Malformed, "no value")),
    };
    let value = validate(value, options, ctx)?;
    let namespace = f.namespace.filter(|n| !n.is_empty()).unwrap_or(&options.namespace);
    Ok(Sample {
        time,
        series: interner.series(namespace, deployment, metric),
        pod: pod_id(pod.unwrap_or(deployment)),
        value,
    })
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

    /// The fast path answers only when serde_json would give the same.
    #[test]
    fn fast_path_agrees_with_serde_on_mutated_lines() {
        use super::{Fields, Line, scan};
        let seeds = [
            r#"{"timestamp":"2026-01-01T00:00:00Z","value":"0.42","name":"cpu","labels":{"__name__":"cpu","namespace":"shop","pod":"checkout-7d9f8-abcde","container":"app"}}"#,
            r#"{ "labels" : { "app" : "web" , "pod":"p-0" } , "value":"NaN", "timestamp":"2026-01-01T00:00:00.5+01:00", "name":"m", "extra":"x" }"#,
            r#"{"timestamp":"2026-01-01T00:00:00Z","value":"7","name":"m","labels":{}}"#,
        ];
        let alphabet = br#"{}[]:,"\ 0aZ.-+eE
"#;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let view = |f: &Fields<'_>| {
            format!(
                "{:?}",
                (
                    f.timestamp,
                    f.value.map(|v| v.map(f64::to_bits)),
                    f.name,
                    f.namespace,
                    f.pod,
                    f.deployment,
                    f.app,
                    f.app_name,
                    f.metric
                )
            )
        };
        let mut answered = 0;
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..(1 + next() % 3) {
                let at = (next() as usize) % (bytes.len() + 1);
                let b = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < bytes.len() => bytes[at] = b,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b),
                }
            }
            let Ok(line) = std::str::from_utf8(&bytes) else { continue };
            if let Some(fast) = scan(line) {
                answered += 1;
                let slow: Line<'_> = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("fast path accepted what serde refuses ({e}): {line}"));
                assert_eq!(view(&fast), view(&Fields::from(&slow)), "{line}");
            }
        }
        assert!(answered > 1_000, "the fast path should answer most near-valid lines: {answered}");
        for seed in seeds {
            assert!(scan(seed).is_some(), "{seed}");
        }
    }
}
