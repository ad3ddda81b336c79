//! The `vmspace` command line: one subcommand per tool. Each subcommand lives
//! in its own module with an `Args` struct and a `main(args) -> ExitCode`;
//! adding one is a module, an enum variant and a match arm.

mod bench;
mod gen_cmd;
mod replay;
mod torture_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vmspace: a user-space virtual-memory subsystem, and its tools.
#[derive(Debug, Parser)]
#[command(name = "vmspace", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run vmscript files and print one result line per operation.
    Replay(replay::Args),
    /// Write random vmscript files (deterministic from a seed).
    Gen(gen_cmd::Args),
    /// Random concurrent operations, fault injection and a checker.
    Torture(torture_cmd::Args),
    /// Benchmark page faults, mmap and VMA lookups on every strategy and on
    /// the host kernel (no arguments: the default suite, with results.json
    /// and plots in target/vmspace-bench/).
    Bench(bench::Args),
    /// Internal: one host-kernel measurement in a fresh process (run by bench).
    #[command(name = "__bench-host", hide = true)]
    BenchHost(bench::HostArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay(args) => replay::main(args),
        Command::Gen(args) => gen_cmd::main(args),
        Command::Torture(args) => torture_cmd::main(args),
        Command::Bench(args) => bench::main(args),
        Command::BenchHost(args) => bench::host_main(args),
    }
}
