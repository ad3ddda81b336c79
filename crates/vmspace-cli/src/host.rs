//! The host-kernel backend: runs a vmscript against Linux itself, so its
//! output is the reference the vmspace library must reproduce.
//!
//! Each script runs in a fresh child process made with `fork()`. The child
//! creates the eight files as memfds, reserves the 256 MiB window (an empty
//! hole between two guard mappings that never merge with anything), installs
//! SIGSEGV/SIGBUS handlers, then performs every op with the real system call
//! and sends each result line back over a pipe as soon as it has it.
//!
//! Module map:
//! * `process`: fork, the pipe, waiting for the child and judging its end;
//! * `child`: the child's setup and the op-by-op execution;
//! * `probe`: the byte loads and stores that may fault (x86-64 `asm!` plus a
//!   signal handler acting as an exception table);
//! * `maps`: reading `/proc/self/maps` into [`MapEntry`](crate::script::MapEntry)s.
//!
//! # Precondition: a single-threaded caller
//!
//! The child allocates memory after `fork()`, which is only sound when the
//! parent had exactly one thread (another thread could hold malloc's lock at
//! the instant of the fork). The `vmspace` binary is single-threaded; a
//! multi-threaded caller (such as a `cargo test` harness) gets an error rather
//! than a possible deadlock. Tests should run the `vmspace replay --host`
//! binary instead.
//!
//! The real backend exists on Linux x86-64 only; elsewhere both functions
//! return an [`io::ErrorKind::Unsupported`] error.
//!
//! [`host_has_pkeys`] says whether the host gives processes protection keys,
//! which changes the kernel's answers for execute-only mappings; the vmspace
//! backend copies it into its `Config` so both backends agree.

use std::io;

use crate::script::Op;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod child;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod maps;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod probe;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod process;

/// Runs `ops` on the host kernel in a fresh child process and returns its
/// result lines, one per op.
///
/// The calling process must be single-threaded (see the module docs); the
/// error names the problem if it is not, if the child cannot be set up, or if
/// the child dies unexpectedly (with its signal or exit status).
pub fn run_on_host(ops: &[Op]) -> io::Result<Vec<String>> {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        process::run_in_child(ops)
    }
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    {
        let _ = ops;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the host backend needs Linux on x86-64",
        ))
    }
}

/// Runs each script in its own fresh child process, one after the other, and
/// returns the result lines of each. Stops at the first failure, whose error
/// names the script's index.
pub fn run_many_on_host(scripts: &[Vec<Op>]) -> io::Result<Vec<Vec<String>>> {
    scripts
        .iter()
        .enumerate()
        .map(|(index, ops)| {
            run_on_host(ops)
                .map_err(|error| io::Error::new(error.kind(), format!("script {index}: {error}")))
        })
        .collect()
}

/// Whether this host's kernel and CPU give a process memory protection keys
/// (`vmspace::Config::host_has_exec_only_pkey`: `pkey_alloc(0, 0)`
/// succeeds). Linux then
/// gives an execute-only mapping (`PROT_EXEC` alone) its execute-only key,
/// which keeps it from merging with its neighbours: `vmspace replay` sets
/// `vmspace::Config::exec_only_pkey` from this so its output matches the
/// host's. Asked of the kernel once per process.
pub fn host_has_pkeys() -> bool {
    static HAS_PKEYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS_PKEYS.get_or_init(vmspace::Config::host_has_exec_only_pkey)
}

#[cfg(test)]
mod tests {
    /// The probe agrees with what the kernel tells `/proc/cpuinfo`: on
    /// x86-64, `ospke` (protection keys enabled by the OS).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn pkeys_probe_matches_cpuinfo() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
        let ospke = cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|flag| flag == "ospke"));
        assert_eq!(super::host_has_pkeys(), ospke);
        assert_eq!(super::host_has_pkeys(), ospke, "asked twice");
    }
}
