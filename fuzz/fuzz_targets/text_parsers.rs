//! Durations, RFC 3339 times, Kafka addresses and commit metadata (see `prescale_fuzz::text_parsers`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prescale_fuzz::text_parsers(data);
});
