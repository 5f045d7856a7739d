//! The job config: TOML text to validated settings (see `prescale_fuzz::job_config`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prescale_fuzz::job_config(data);
});
