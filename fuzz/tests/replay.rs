//! Replays every committed corpus input (`corpus/<target>/`) and every input that once made a
//! target fail (`regressions/<target>/`) through its target: what `scripts/fuzz` found stays
//! found, with plain `cargo test` and no fuzzer.

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir` (none when it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every input of `kind` (`corpus` or `regressions`) through its target; the names of
/// the inputs that failed, with the target and the panic message.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failed = Vec::new();
    for target in edgefleet_fuzz::TARGETS {
        for file in inputs(&crate_dir().join(kind).join(target.name)) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            ran += 1;
            if let Err(panic) = std::panic::catch_unwind(|| (target.run)(&data)) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failed.push(format!("{} ({}): {message}", file.display(), target.name));
            }
        }
    }
    (ran, failed)
}

#[test]
fn every_committed_corpus_input_runs_through_its_target_without_a_panic() {
    let (ran, failed) = replay("corpus");
    assert!(
        ran > 0,
        "no corpus inputs found under {}",
        crate_dir().display()
    );
    assert!(
        failed.is_empty(),
        "{} input(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn every_input_that_once_failed_now_runs_without_a_panic() {
    let (_, failed) = replay("regressions");
    assert!(
        failed.is_empty(),
        "{} input(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn every_target_has_seed_inputs_and_every_input_directory_names_a_target() {
    for target in edgefleet_fuzz::TARGETS {
        let dir = crate_dir().join("corpus").join(target.name);
        assert!(
            !inputs(&dir).is_empty(),
            "target {} has no inputs in {}",
            target.name,
            dir.display()
        );
    }
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(crate_dir().join(kind)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                edgefleet_fuzz::target(&name).is_some(),
                "{kind}/{name} is not the name of a target in edgefleet_fuzz::TARGETS"
            );
        }
    }
}
