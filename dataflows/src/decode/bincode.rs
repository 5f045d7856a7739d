//! prescale's compact binary record: one sample per Kafka message, encoded
//! with bincode 2 (standard configuration: little-endian, variable-length
//! integers), written by `prescale produce --format bincode`.
//!
//! A record is [`BinarySample`]: event time in unix milliseconds,
//! namespace, deployment, pod, metric and value. Decoding borrows the
//! strings from the message, so a record costs no allocation beyond the
//! interner's first sight of a series. Bytes that are not exactly one
//! record (truncated, trailing garbage, strings over the size limit, not
//! UTF-8) become a `malformed` rejection; values are validated like every
//! other format's.

use std::borrow::Cow;

use ::bincode::config::{self, Configuration, Limit, LittleEndian, Varint};
use ::bincode::{BorrowDecode, Encode};

use super::{Ctx, DecodeOptions, pod_id, validate};
use crate::record::{Interner, RejectReason, Rejected, Sample};
use crate::time::{MAX_TIME, Millis};

/// The largest record accepted (bytes): bounds what a corrupt length
/// prefix can make the decoder look at.
pub const MAX_RECORD: usize = 64 * 1024;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_RECORD>>;

fn config() -> Config {
    config::standard().with_limit::<MAX_RECORD>()
}

/// One sample as it travels in a binary message.
#[derive(Clone, Debug, PartialEq, Encode, BorrowDecode)]
pub struct BinarySample<'a> {
    /// Event time, unix milliseconds.
    pub time: Millis,
    /// Kubernetes namespace.
    pub namespace: Cow<'a, str>,
    /// Deployment name.
    pub deployment: Cow<'a, str>,
    /// Pod name.
    pub pod: Cow<'a, str>,
    /// Metric name.
    pub metric: Cow<'a, str>,
    /// The value.
    pub value: f64,
}

impl BinarySample<'_> {
    /// Appends the encoded record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, and no field is bigger than the
        // limit allows unless a caller passes megabyte-long names, in which
        // case the record is simply cut short and rejected by the decoder.
        let _ = ::bincode::encode_into_std_write(self, out, config());
    }

    /// The encoded record.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }
}

/// Decodes exactly one record from `bytes`.
pub fn parse(bytes: &[u8]) -> Result<BinarySample<'_>, String> {
    let (record, used): (BinarySample<'_>, usize) =
        ::bincode::borrow_decode_from_slice(bytes, config()).map_err(|e| format!("bincode: {e}"))?;
    if used != bytes.len() {
        return Err(format!("bincode: {} trailing bytes after the record", bytes.len() - used));
    }
    Ok(record)
}

/// Decodes one message into a sample or a rejection.
pub(crate) fn decode(
    bytes: &[u8],
    options: &DecodeOptions,
    interner: &mut Interner,
    ctx: &Ctx<'_>,
    out: &mut impl FnMut(Result<Sample, Rejected>),
) {
    let record = match parse(bytes) {
        Ok(r) => r,
        Err(detail) => return out(Err(ctx.reject(RejectReason::Malformed, detail))),
    };
    if record.deployment.is_empty() || record.metric.is_empty() {
        return out(Err(ctx.reject(RejectReason::Malformed, "empty deployment or metric")));
    }
    if record.time > MAX_TIME {
        return out(Err(ctx.reject(RejectReason::BadTimestamp, format!("time {} ms is after year 9999", record.time))));
    }
    let namespace = if record.namespace.is_empty() { options.namespace.as_str() } else { &record.namespace };
    out(validate(record.value, options, ctx).map(|value| Sample {
        time: record.time,
        series: interner.series(namespace, &record.deployment, &record.metric),
        pod: pod_id(&record.pod),
        value,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, Format};

    fn sample(value: f64) -> BinarySample<'static> {
        BinarySample {
            time: 1_767_225_600_123,
            namespace: "shop".into(),
            deployment: "checkout".into(),
            pod: "checkout-7d9f8-abcde".into(),
            metric: "cpu".into(),
            value,
        }
    }

    fn run(bytes: &[u8]) -> Vec<Result<(u64, String, u64, f64), RejectReason>> {
        let mut d = Decoder::new(Format::Bincode, DecodeOptions::default(), "test");
        let mut got = Vec::new();
        d.decode_bytes(bytes, 3, 9, &mut |r| {
            got.push(r.map(|s| (s.time, s.series.to_string(), s.pod, s.value)).map_err(|e| e.reason))
        });
        got
    }

    #[test]
    fn round_trip() {
        let bytes = sample(0.42).to_bytes();
        assert!(bytes.len() < 64, "compact: {} bytes", bytes.len());
        assert_eq!(parse(&bytes), Ok(sample(0.42)));
        assert_eq!(
            run(&bytes),
            vec![Ok((1_767_225_600_123, "shop/checkout/cpu".to_owned(), pod_id("checkout-7d9f8-abcde"), 0.42))]
        );
    }

    #[test]
    fn bad_bytes_are_malformed_never_a_panic() {
        let bytes = sample(1.0).to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(run(&bytes[..cut]), vec![Err(RejectReason::Malformed)], "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(run(&longer), vec![Err(RejectReason::Malformed)]);
        // A length prefix claiming a huge string.
        assert_eq!(run(&[0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0]), vec![Err(RejectReason::Malformed)]);
        // Invalid UTF-8 inside a string.
        let mut bad = sample(1.0);
        bad.pod = "ab".into();
        let mut bytes = bad.to_bytes();
        let at = bytes.windows(2).position(|w| w == b"ab").unwrap_or(0);
        bytes[at] = 0xff;
        assert_eq!(run(&bytes), vec![Err(RejectReason::Malformed)]);
        // Pseudo-random garbage of many lengths.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = run(&junk);
        }
    }

    #[test]
    fn values_are_validated_like_other_formats() {
        assert_eq!(run(&sample(f64::NAN).to_bytes()), vec![Err(RejectReason::NonFinite)]);
        assert_eq!(run(&sample(-1.0).to_bytes()), vec![Err(RejectReason::Negative)]);
        let mut s = sample(1.0);
        s.namespace = "".into();
        assert_eq!(run(&s.to_bytes())[0].as_ref().map(|r| r.1.clone()), Ok("default/checkout/cpu".to_owned()));
    }
}
