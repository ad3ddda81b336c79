//! The `vmspace` command line: one subcommand per tool. Each subcommand lives
//! in its own module with an `Args` struct and a `main(args) -> ExitCode`;
//! adding one is a module, an enum variant and a match arm.
//!
//! # Exit status
//!
//! Every subcommand uses the same three statuses ([`exit`]); `vmspace --help`
//! prints this table too ([`EXIT_STATUS`]).
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done: `replay` ran every script to its end (whatever its result lines), `gen` wrote every file, `torture` found nothing, `bench` finished (also when it warns that the run is not trustworthy); `--help`, `--version` |
//! | 1 | the work failed: `replay` could not read a file or run a script, `gen` could not write a file, `torture` found a violation or a leak, `bench` could not run a measurement or write its results |
//! | 2 | bad usage, refused before any work starts: an unknown subcommand, flag, workload or strategy (`VMSPACE_STRATEGY` included), a flag value outside its bounds, a `--json`/`--plot` path that cannot be written, a malformed script |
//!
//! Usage errors are found by the argument parser wherever a value can be
//! checked on its own (clap exits 2 for them); the others exit with
//! [`exit::USAGE`] themselves.

mod bench;
mod gen_cmd;
mod replay;
mod torture_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit statuses every subcommand uses (see the module docs).
pub(crate) mod exit {
    /// The work failed (a run, a read, a write, a check).
    pub const FAILED: u8 = 1;
    /// Bad usage, refused before any work: the status clap gives its errors.
    pub const USAGE: u8 = 2;
}

/// The exit-status table of `vmspace --help`.
const EXIT_STATUS: &str = "\
Exit status (every subcommand):
  0  done (replay: every script ran to its end, whatever its results; bench:
     finished, also when it warns that the run is not trustworthy)
  1  the work failed: a file could not be read or written, a run failed,
     torture found a violation or a leak
  2  bad usage, refused before any work: an unknown subcommand, flag,
     workload or strategy (VMSPACE_STRATEGY included), a value outside its
     bounds, an output path that cannot be written, a malformed script";

/// vmspace: a user-space virtual-memory subsystem, and its tools.
#[derive(Debug, Parser)]
#[command(name = "vmspace", version, about, after_help = EXIT_STATUS)]
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
    /// the host kernel; fork, reclaim and MMU-notifier (device mirror)
    /// workloads when named (no workloads named: the default suite, with
    /// results.json and plots in target/vmspace-bench/).
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
