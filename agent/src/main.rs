//! edgefleet-agent: see `edgefleet_agent::cli`.

fn main() -> std::process::ExitCode {
    edgefleet_agent::cli::main()
}
