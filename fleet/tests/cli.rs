//! Both binaries generate their shell completions and man pages from their command
//! definitions, so they never drift from `--help`.

use std::process::Command;

use edgefleet_tests::workspace_binary;

#[test]
fn completions_and_man_pages_cover_every_command_of_both_binaries() {
    let dir = tempfile::tempdir().expect("dir");
    for (binary, command) in [
        ("edgefleet", "bundle-create"),
        ("edgefleet-agent", "bundle-import"),
    ] {
        let out = Command::new(workspace_binary(binary))
            .args(["man", "--dir"])
            .arg(dir.path())
            .output()
            .expect("run man");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page = std::fs::read_to_string(dir.path().join(format!("{binary}-{command}.1")))
            .expect("the subcommand's page");
        assert!(page.contains(".TH"), "{page}");
        let out = Command::new(workspace_binary(binary))
            .args(["completions", "bash"])
            .output()
            .expect("run completions");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains("bundle") && script.contains("complete -F"),
            "{script}"
        );
    }
}
