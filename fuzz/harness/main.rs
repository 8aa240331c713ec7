//! The libFuzzer harness: runs the target named by `EDGEFLEET_FUZZ_TARGET` (see
//! `edgefleet_fuzz::TARGETS`). Built and run by `scripts/fuzz`.

#![no_main]

use std::sync::OnceLock;

fn run() -> fn(&[u8]) {
    static RUN: OnceLock<fn(&[u8])> = OnceLock::new();
    *RUN.get_or_init(|| {
        let name = std::env::var("EDGEFLEET_FUZZ_TARGET").unwrap_or_default();
        match edgefleet_fuzz::target(&name) {
            Some(target) => target.run,
            None => {
                let names: Vec<_> = edgefleet_fuzz::TARGETS.iter().map(|t| t.name).collect();
                eprintln!(
                    "EDGEFLEET_FUZZ_TARGET={name:?} is not a fuzz target; set it to one of: {}",
                    names.join(", ")
                );
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| run()(data));
