//! A PredictiveScaler spec as JSON, converted to the decide stage's spec (see `prescale_fuzz::scaler_spec`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prescale_fuzz::scaler_spec(data);
});
