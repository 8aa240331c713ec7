//! edgefleet: see `edgefleet_fleet::cli`.

fn main() -> std::process::ExitCode {
    edgefleet_fleet::cli::main()
}
