//! `vmspace replay [--host] FILE...`: checks vmscript files, runs them on the
//! host kernel or on the vmspace library, and prints their result lines.
//!
//! Exit status: 0 when every script ran to its end (whatever its results),
//! 1 when a file cannot be read or a run fails, 2 when a script is malformed.
//! Every file is read and checked before anything runs, so a malformed or
//! unreadable file prints nothing on stdout.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use vmspace::Strategy;
use vmspace_cli::backend::Runner;
use vmspace_cli::host;
use vmspace_cli::script::{self, Op};

/// Arguments of `vmspace replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run on the host kernel (each script in a fresh forked child) instead of
    /// the vmspace library.
    #[arg(long)]
    host: bool,
    /// The scripts. With more than one, each output follows a line `== FILE`.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// A file's name and its parsed ops.
struct Script {
    path: PathBuf,
    ops: Vec<Op>,
}

/// Runs the subcommand.
pub fn main(args: Args) -> ExitCode {
    let scripts = match load_all(&args.files) {
        Ok(scripts) => scripts,
        Err(status) => return status,
    };
    let headers = scripts.len() > 1;
    match replay_all(&scripts, args.host, headers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vmspace replay: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Reads and checks every file, reporting each failure on stderr; fails with
/// status 1 if a file is unreadable, else 2 if a script is malformed.
fn load_all(paths: &[PathBuf]) -> Result<Vec<Script>, ExitCode> {
    let mut scripts = Vec::new();
    let (mut unreadable, mut malformed) = (false, false);
    for path in paths {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => {
                eprintln!("vmspace replay: cannot read {}: {error}", path.display());
                unreadable = true;
                continue;
            }
        };
        match script::parse(&text) {
            Ok(ops) => scripts.push(Script {
                path: path.clone(),
                ops,
            }),
            Err(error) => {
                eprintln!("{}:{error}", path.display());
                malformed = true;
            }
        }
    }
    match (unreadable, malformed) {
        (true, _) => Err(ExitCode::from(1)),
        (false, true) => Err(ExitCode::from(2)),
        (false, false) => Ok(scripts),
    }
}

/// Runs each script and prints its lines, after `== FILE` when `headers`.
fn replay_all(scripts: &[Script], on_host: bool, headers: bool) -> anyhow::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut runner = None;
    for script in scripts {
        let lines = run_script(&script.ops, on_host, &mut runner)
            .with_context(|| format!("{}", script.path.display()))?;
        if headers {
            writeln!(out, "== {}", script.path.display())?;
        }
        for line in lines {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Runs one script on the chosen backend.
fn run_script(
    ops: &[Op],
    on_host: bool,
    runner: &mut Option<Runner>,
) -> anyhow::Result<Vec<String>> {
    if on_host {
        // The vmspace binary is single-threaded, as run_on_host requires.
        return Ok(host::run_on_host(ops)?);
    }
    if runner.is_none() {
        *runner = Some(Runner::new(strategy_from_env()?)?);
    }
    Ok(runner.as_ref().expect("set above").run(ops))
}

/// The fault strategy for replays: `VMSPACE_STRATEGY`, default per-vma.
fn strategy_from_env() -> anyhow::Result<Strategy> {
    match std::env::var("VMSPACE_STRATEGY") {
        Ok(s) => s.parse().map_err(anyhow::Error::msg),
        Err(_) => Ok(Strategy::PerVma),
    }
}
