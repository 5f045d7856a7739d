//! The prometheus-kafka-adapter JSON decoder, on any bytes (see `prescale_fuzz::decoder`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prescale_fuzz::decoder(prescale_dataflows::decode::Format::AdapterJson, data);
});
