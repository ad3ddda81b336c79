//! `vmspace gen --seed N --count K --out DIR [--ops M]`: writes K random
//! vmscript files, `DIR/seed-N-I.vms` for I in `0..K`, so that anyone can
//! replay them (`vmspace replay [--host] DIR/*.vms`).
//!
//! File I is the script of seed `N + I` (wrapping at 2^64), the same one the
//! differential test runs for that seed, so `--seed S --count 1` reproduces
//! the single script a test failure names.
//!
//! Exit status: 0 when every file was written, 1 when the folder or a file
//! cannot be written, 2 for bad arguments (from the argument parser).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use vmspace_cli::gen::{generate, script_text, GenConfig};

/// Arguments of `vmspace gen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The seed of the first script; script I uses seed N + I.
    #[arg(long, value_name = "N")]
    seed: u64,
    /// How many scripts to write.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    count: u64,
    /// The folder to write them to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Operations per script.
    #[arg(long, value_name = "M", default_value_t = GenConfig::default().ops as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    ops: u64,
}

/// Runs the subcommand.
pub fn main(args: Args) -> ExitCode {
    match write_all(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vmspace gen: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Creates the folder and writes every script.
fn write_all(args: &Args) -> anyhow::Result<()> {
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let config = GenConfig {
        // The parser bounds `ops` to 100000, which fits any usize.
        ops: args.ops as usize,
        ..GenConfig::default()
    };
    for index in 0..args.count {
        let seed = args.seed.wrapping_add(index);
        let path = script_path(&args.out, args.seed, index);
        let text = script_text(seed, &generate(seed, &config));
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `DIR/seed-N-I.vms`.
fn script_path(out: &Path, seed: u64, index: u64) -> PathBuf {
    out.join(format!("seed-{seed}-{index}.vms"))
}
