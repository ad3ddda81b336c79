//! The parent's side of a host run: check that forking is safe, fork, collect
//! the child's result lines from the pipe, and turn an abnormal end of the
//! child into an error.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};

use super::child;
use crate::script::Op;

/// Forks a child that runs `ops` (see [`child::main`]) and returns its lines.
pub(super) fn run_in_child(ops: &[Op]) -> io::Result<Vec<String>> {
    ensure_single_threaded()?;
    let (read_end, write_end) = pipe()?;
    // SAFETY: the process has a single thread (checked above), so the child
    // starts with every lock, malloc's included, in a consistent state. The
    // child never returns into the caller: `child::main` ends with `_exit`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read_end);
            child::main(ops, write_end)
        }
        pid => {
            drop(write_end);
            let output = read_all(read_end);
            let status = wait(pid)?;
            let output = output?;
            check_status(status, &output)?;
            Ok(output.lines().map(str::to_owned).collect())
        }
    }
}

/// Refuses to fork from a process that has more than one thread.
fn ensure_single_threaded() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads == 1 {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "the host backend forks, so its caller must be single-threaded, \
         but this process has {threads} threads"
    )))
}

/// A close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by no
    // one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything the child writes, until it closes the pipe (by exiting).
fn read_all(read_end: OwnedFd) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::from(read_end).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Waits for the child `pid` and returns its wait status.
fn wait(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid place for waitpid to store the status.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// `Ok` for a child that exited with status 0; otherwise an error naming the
/// signal or the exit status, with the child's last line as a clue.
fn check_status(status: libc::c_int, output: &str) -> io::Result<()> {
    let how = if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        format!("was killed by signal {signal} ({})", signal_name(signal))
    } else if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => return Ok(()),
            code => format!("exited with status {code}"),
        }
    } else {
        format!("ended with wait status {status:#x}")
    };
    let lines = output.lines().count();
    let last = output.lines().last().unwrap_or("");
    Err(io::Error::other(format!(
        "vmscript host child {how} after {lines} output lines; last line: {last:?}"
    )))
}

/// The usual name of the signals a crashing child may die of.
fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait status for a child that exited with `code`.
    fn exited(code: libc::c_int) -> libc::c_int {
        code << 8
    }

    #[test]
    fn clean_exit_is_ok() {
        assert!(check_status(exited(0), "ok\n").is_ok());
    }

    #[test]
    fn death_by_signal_names_the_signal() {
        let error = check_status(libc::SIGSEGV, "ok\nSEGV\n").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("killed by signal 11 (SIGSEGV)"),
            "{message}"
        );
        assert!(message.contains("after 2 output lines"), "{message}");
    }

    #[test]
    fn failed_exit_quotes_the_last_line() {
        let error = check_status(exited(2), "setup failed: no memfd\n").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("exited with status 2"), "{message}");
        assert!(message.contains("setup failed: no memfd"), "{message}");
    }
}
