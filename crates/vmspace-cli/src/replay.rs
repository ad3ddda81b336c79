//! `vmspace replay [--host] FILE...`: checks vmscript files, runs them on the
//! host kernel or on the vmspace library, and prints their result lines.
//!
//! Exit status: 0 when every script ran to its end (whatever its results),
//! 1 when a file cannot be read or a run fails, 2 for bad usage: a malformed
//! script (a line over 4 KiB and a script over 64 MiB included) or an
//! unknown `VMSPACE_STRATEGY`. Every file is read and checked before
//! anything runs, so a malformed or unreadable file prints nothing on stdout.
//! A file is read one bounded line at a time, so an endless one (such as
//! `/dev/zero`) is refused after its first 4 KiB.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use vmspace::Strategy;
use vmspace_cli::backend::Runner;
use vmspace_cli::host;
use vmspace_cli::script::{self, Op, ReadError};

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
    let strategy = match strategy_from_env() {
        Ok(strategy) => strategy,
        Err(error) => {
            eprintln!("vmspace replay: VMSPACE_STRATEGY: {error}");
            return ExitCode::from(crate::exit::USAGE);
        }
    };
    let scripts = match load_all(&args.files) {
        Ok(scripts) => scripts,
        Err(status) => return status,
    };
    let headers = scripts.len() > 1;
    let backend = if args.host {
        Backend::Host
    } else {
        Backend::Library(strategy)
    };
    match replay_all(&scripts, backend, headers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vmspace replay: {error:#}");
            ExitCode::from(crate::exit::FAILED)
        }
    }
}

/// Reads and checks every file, reporting each failure on stderr; fails with
/// status 1 if a file is unreadable, else 2 if a script is malformed.
fn load_all(paths: &[PathBuf]) -> Result<Vec<Script>, ExitCode> {
    let mut scripts = Vec::new();
    let (mut unreadable, mut malformed) = (false, false);
    for path in paths {
        match load(path) {
            Ok(ops) => scripts.push(Script {
                path: path.clone(),
                ops,
            }),
            Err(ReadError::Io(error)) => {
                eprintln!("vmspace replay: cannot read {}: {error}", path.display());
                unreadable = true;
            }
            Err(ReadError::Malformed(error)) => {
                eprintln!("{}:{error}", path.display());
                malformed = true;
            }
        }
    }
    match (unreadable, malformed) {
        (true, _) => Err(ExitCode::from(crate::exit::FAILED)),
        (false, true) => Err(ExitCode::from(crate::exit::USAGE)),
        (false, false) => Ok(scripts),
    }
}

/// Reads and parses one file, a bounded line at a time.
fn load(path: &Path) -> Result<Vec<Op>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    script::read(BufReader::new(file))
}

/// Where the scripts run.
#[derive(Clone, Copy)]
enum Backend {
    /// On the host kernel, each script in a fresh forked child.
    Host,
    /// On the vmspace library, with this fault strategy.
    Library(Strategy),
}

/// Runs each script and prints its lines, after `== FILE` when `headers`.
fn replay_all(scripts: &[Script], backend: Backend, headers: bool) -> anyhow::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut runner = None;
    for script in scripts {
        let lines = run_script(&script.ops, backend, &mut runner)
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

/// Runs one script on `backend`; the library's runner (one frame arena for
/// every script) is made on first use.
fn run_script(
    ops: &[Op],
    backend: Backend,
    runner: &mut Option<Runner>,
) -> anyhow::Result<Vec<String>> {
    let strategy = match backend {
        // The vmspace binary is single-threaded, as run_on_host requires.
        Backend::Host => return Ok(host::run_on_host(ops)?),
        Backend::Library(strategy) => strategy,
    };
    if runner.is_none() {
        *runner = Some(Runner::new(strategy)?);
    }
    Ok(runner.as_ref().expect("set above").run(ops))
}

/// The fault strategy for replays: `VMSPACE_STRATEGY`, default per-vma.
fn strategy_from_env() -> Result<Strategy, String> {
    match std::env::var_os("VMSPACE_STRATEGY") {
        Some(s) => s
            .to_str()
            .ok_or_else(|| format!("{s:?} is not UTF-8"))?
            .parse(),
        None => Ok(Strategy::PerVma),
    }
}
