//! The forked child of a host run: it sets up the files and the window, then
//! performs each op with the real system call and writes each result line to
//! the pipe.
//!
//! Memory discipline: once the window is reserved, a big allocation (which
//! glibc would satisfy with `mmap`) could land inside the window and show up
//! in `maps` or be clobbered by a `MAP_FIXED`. So every buffer the run needs is
//! allocated before the window exists, and glibc is told to serve every
//! allocation below 32 MiB from the heap (`brk`), far from the mmap area.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

use super::maps::MapsReader;
use super::probe::Probe;
use crate::script::{
    file_byte, Advice, Backing, MmapFlags, Op, Outcome, Prot, Sharing, Side, FILE_COUNT,
    FILE_PAGES, PAGE, WINDOW_PAGES,
};

/// Exit status: the script ran to its end.
const EXIT_DONE: libc::c_int = 0;
/// Exit status: setting up failed; the pipe's last line says why.
const EXIT_SETUP_FAILED: libc::c_int = 2;
/// Exit status: a result line could not be written to the pipe.
const EXIT_PIPE_FAILED: libc::c_int = 3;
/// Exit status: running an op failed outside the script's control; the
/// pipe's last line says why.
const EXIT_OP_FAILED: libc::c_int = 4;
/// Exit status: the child panicked.
const EXIT_PANICKED: libc::c_int = 101;

/// The largest `M_MMAP_THRESHOLD` glibc accepts on 64-bit targets.
#[cfg(target_env = "gnu")]
const MAX_MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// The child's whole life: run `ops`, write the lines to `pipe`, `_exit`.
pub(super) fn main(ops: &[Op], pipe: OwnedFd) -> ! {
    let mut out = File::from(pipe);
    let status = panic::catch_unwind(AssertUnwindSafe(|| run(ops, &mut out)));
    // SAFETY: `_exit` ends the process at once, without unwinding into the
    // parent's code and without flushing stdio buffers copied from the parent.
    unsafe { libc::_exit(status.unwrap_or(EXIT_PANICKED)) }
}

/// Sets up, then runs every op; returns the exit status.
///
/// A `fork` op forks this process ([`Forked`]); from then on the ops after
/// a `child` line are sent to the forked process, which runs them and
/// answers with their result lines, until a `parent` line.
fn run(ops: &[Op], out: &mut File) -> libc::c_int {
    let mut space = match HostSpace::new(ops) {
        Ok(space) => space,
        Err(error) => {
            let _ = writeln!(out, "setup failed: {error}");
            return EXIT_SETUP_FAILED;
        }
    };
    let mut forked: Option<Forked> = None;
    let mut side = Side::Parent;
    for (index, op) in ops.iter().enumerate() {
        let result = match (op, &mut forked) {
            (Op::Fork, _) => Forked::start(ops, &mut space, out).map(|(outcome, child)| {
                forked = child;
                outcome
            }),
            (Op::Side(new), _) => {
                side = *new;
                Ok(Outcome::Side(side).to_string())
            }
            (_, Some(child)) if side == Side::Child => child.exec(index),
            _ => space.exec(op).map(|outcome| outcome.to_string()),
        };
        let mut line = match result {
            Ok(line) => line,
            Err(error) => {
                let _ = writeln!(out, "`{op}` failed: {error}");
                return EXIT_OP_FAILED;
            }
        };
        line.push('\n');
        if out.write_all(line.as_bytes()).is_err() {
            return EXIT_PIPE_FAILED;
        }
    }
    match forked.map(Forked::finish) {
        Some(Err(error)) => {
            let _ = writeln!(out, "the forked child failed: {error}");
            EXIT_OP_FAILED
        }
        _ => EXIT_DONE,
    }
}

/// The process a script's `fork` made, seen from the parent: a pipe that
/// carries op indices to it and one that carries its result lines back.
struct Forked {
    pid: libc::pid_t,
    commands: File,
    results: io::BufReader<File>,
}

impl Forked {
    /// Forks. In the parent: `fork`'s result line and, when it succeeded,
    /// the child. The child never returns: it serves ops until the command
    /// pipe closes, then `_exit`s.
    fn start(
        ops: &[Op],
        space: &mut HostSpace,
        out: &File,
    ) -> io::Result<(String, Option<Forked>)> {
        let (command_read, command_write) = super::process::pipe()?;
        let (result_read, result_write) = super::process::pipe()?;
        // Allocated before the fork: the child's memory copy must not
        // change between the two sides, and the buffer stays out of the
        // window (see the module docs).
        let results = io::BufReader::with_capacity(8192, File::from(result_read));
        // SAFETY: the process has a single thread (the host runner forks
        // from a single-threaded caller, and this child made none), so the
        // forked process starts with malloc's lock free. It never returns
        // into this function's caller: `serve` ends with `_exit`.
        match unsafe { libc::fork() } {
            -1 => Ok((last_errno().to_string(), None)),
            0 => {
                drop((command_write, results));
                // SAFETY: closes this process's copy of the output pipe, so
                // only the parent writes result lines there.
                unsafe { libc::close(out.as_raw_fd()) };
                serve(
                    ops,
                    space,
                    File::from(command_read),
                    File::from(result_write),
                )
            }
            pid => {
                let child = Forked {
                    pid,
                    commands: File::from(command_write),
                    results,
                };
                Ok((Outcome::Ok.to_string(), Some(child)))
            }
        }
    }

    /// Has the child run op `index` and returns its result line.
    fn exec(&mut self, index: usize) -> io::Result<String> {
        let index = u32::try_from(index).map_err(io::Error::other)?;
        self.commands.write_all(&index.to_le_bytes())?;
        let mut line = String::new();
        if io::BufRead::read_line(&mut self.results, &mut line)? == 0 {
            return Err(io::Error::other("the forked child closed its pipe"));
        }
        match line.strip_suffix('\n') {
            Some(line) if !line.starts_with('!') => Ok(line.to_owned()),
            _ => Err(io::Error::other(format!("the forked child: {line}"))),
        }
    }

    /// Closes the command pipe and waits for the child to exit cleanly.
    fn finish(self) -> io::Result<()> {
        drop(self.commands);
        let mut status = 0;
        // SAFETY: `status` is a valid place for waitpid to store the status.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } != self.pid {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_DONE {
            return Ok(());
        }
        Err(io::Error::other(format!("wait status {status:#x}")))
    }
}

/// The forked child's life: reads op indices from `commands`, runs each op
/// on its copy of the address space (`space`: the fork copied the window,
/// the files, the probe and the maps buffer) and writes its result line to
/// `results` (a line starting with `!` when running it failed), until the
/// parent closes `commands`.
fn serve(ops: &[Op], space: &mut HostSpace, mut commands: File, mut results: File) -> ! {
    let status = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut index = [0u8; 4];
        while io::Read::read_exact(&mut commands, &mut index).is_ok() {
            let op = ops.get(u32::from_le_bytes(index) as usize);
            let line = match op.map(|op| space.exec(op)) {
                Some(Ok(outcome)) => outcome.to_string(),
                Some(Err(error)) => format!("!{error}"),
                None => "!no such op".to_owned(),
            };
            if writeln!(results, "{line}").is_err() {
                return EXIT_PIPE_FAILED;
            }
        }
        EXIT_DONE
    }));
    // SAFETY: as in `main`: ends the forked process without unwinding.
    unsafe { libc::_exit(status.unwrap_or(EXIT_PANICKED)) }
}

/// The child's address space as vmscript sees it.
struct HostSpace {
    /// The address of page 0 of the window.
    base: usize,
    /// The memfd of file `id` at index `id - 1`, for the files the script maps.
    files: Vec<Option<File>>,
    /// A preallocated `/proc/self/maps` reader.
    maps: MapsReader,
    /// Byte access that survives faults.
    probe: Probe,
}

impl HostSpace {
    /// Creates the files, the probe and the maps buffer, then the window.
    fn new(ops: &[Op]) -> io::Result<Self> {
        keep_malloc_out_of_the_window()?;
        let files = create_files(ops)?;
        let maps = MapsReader::new();
        let probe = Probe::install().map_err(context("installing the fault handlers"))?;
        let base = reserve_window()?;
        Ok(HostSpace {
            base,
            files,
            maps,
            probe,
        })
    }

    /// Performs one op; `Err` only for a failure that is not a script result.
    fn exec(&mut self, op: &Op) -> io::Result<Outcome> {
        let outcome = match *op {
            Op::Mmap {
                page,
                npages,
                prot,
                backing,
                sharing,
                flags,
            } => self.mmap(page, npages, prot, backing, sharing, flags),
            Op::Mlock {
                page,
                npages,
                onfault,
            } => {
                let flags = if onfault { MLOCK_ONFAULT } else { 0 };
                // SAFETY: mlock2 takes no pointer it dereferences in this
                // process; the range lies inside the window.
                let result = unsafe {
                    libc::syscall(libc::SYS_mlock2, self.addr(page), bytes(npages), flags)
                };
                status(result as libc::c_int)
            }
            Op::Munlock { page, npages } => {
                // SAFETY: as for mlock2.
                status(unsafe { libc::munlock(self.addr(page), bytes(npages)) })
            }
            Op::Munmap { page, npages } => {
                // SAFETY: the range lies inside the window, which holds no
                // memory that Rust code in this process refers to.
                status(unsafe { libc::munmap(self.addr(page), bytes(npages)) })
            }
            Op::Mprotect { page, npages, prot } => {
                // SAFETY: as for munmap: the range lies inside the window.
                status(unsafe { libc::mprotect(self.addr(page), bytes(npages), prot_bits(prot)) })
            }
            Op::Mremap {
                page,
                old_npages,
                new_npages,
                new_page,
            } => self.mremap(page, old_npages, new_npages, new_page),
            Op::MadviseDontneed { page, npages } => {
                // SAFETY: as for munmap: the range lies inside the window.
                let result =
                    unsafe { libc::madvise(self.addr(page), bytes(npages), libc::MADV_DONTNEED) };
                status(result)
            }
            Op::Write { page, value } => self.probe.write(self.addr(page).cast(), value),
            Op::Read { page } => self.probe.read(self.addr(page).cast()),
            Op::Maps => {
                let entries = self.maps.read(self.base).map_err(context("reading maps"))?;
                Outcome::Maps(entries)
            }
            Op::Madvise {
                page,
                npages,
                advice,
            } => {
                // SAFETY: as for munmap: the range lies inside the window.
                let result =
                    unsafe { libc::madvise(self.addr(page), bytes(npages), advice_bits(advice)) };
                status(result)
            }
            Op::Fork | Op::Side(_) => {
                return Err(io::Error::other("`run` handles fork and sides itself"))
            }
        };
        Ok(outcome)
    }

    /// `mmap(base + page, ..., MAP_FIXED | sharing [| MAP_ANONYMOUS]
    /// [| MAP_NORESERVE] [| MAP_STACK])`.
    fn mmap(
        &self,
        page: u64,
        npages: u64,
        prot: Prot,
        backing: Backing,
        sharing: Sharing,
        extra: MmapFlags,
    ) -> Outcome {
        let mut sharing = match sharing {
            Sharing::Private => libc::MAP_PRIVATE,
            Sharing::Shared => libc::MAP_SHARED,
        };
        if extra.noreserve {
            sharing |= libc::MAP_NORESERVE;
        }
        if extra.stack {
            sharing |= libc::MAP_STACK;
        }
        let (flags, fd, offset) = match backing {
            Backing::Anon => (libc::MAP_FIXED | sharing | libc::MAP_ANONYMOUS, -1, 0),
            Backing::File { id, pgoff } => {
                let Some(file) = self.file(id) else {
                    return Outcome::Err(libc::EBADF);
                };
                // The parser bounds PGOFF so the byte offset fits an off_t.
                let offset = (pgoff * PAGE) as libc::off_t;
                (libc::MAP_FIXED | sharing, file.as_raw_fd(), offset)
            }
        };
        // SAFETY: MAP_FIXED replaces only the range, which lies inside the
        // window; no memory that Rust code refers to lives there.
        let result = unsafe {
            libc::mmap(
                self.addr(page),
                bytes(npages),
                prot_bits(prot),
                flags,
                fd,
                offset,
            )
        };
        if result == libc::MAP_FAILED {
            return last_errno();
        }
        Outcome::Ok
    }

    /// `mremap` in place (flags 0), or a forced move to `base + new_page`.
    fn mremap(
        &self,
        page: u64,
        old_npages: u64,
        new_npages: u64,
        new_page: Option<u64>,
    ) -> Outcome {
        let (old, old_len, new_len) = (self.addr(page), bytes(old_npages), bytes(new_npages));
        let result = match new_page {
            // SAFETY: the old range lies inside the window, and so does the
            // grown range (the parser checks PAGE + NEW_NPAGES).
            None => unsafe { libc::mremap(old, old_len, new_len, 0) },
            Some(new_page) => {
                let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
                // SAFETY: both the old and the new range lie inside the window.
                unsafe { libc::mremap(old, old_len, new_len, flags, self.addr(new_page)) }
            }
        };
        if result == libc::MAP_FAILED {
            return last_errno();
        }
        Outcome::Ok
    }

    /// The memfd of file `id`, if the script maps that file.
    fn file(&self, id: u8) -> Option<&File> {
        self.files.get(usize::from(id).checked_sub(1)?)?.as_ref()
    }

    /// The address of window page `page`.
    fn addr(&self, page: u64) -> *mut libc::c_void {
        (self.base + bytes(page)) as *mut libc::c_void
    }
}

/// `page` pages in bytes (pages are below 2^17, so this cannot overflow).
fn bytes(pages: u64) -> usize {
    (pages * PAGE) as usize
}

/// The `PROT_*` bits of `prot`.
fn prot_bits(prot: Prot) -> libc::c_int {
    let mut bits = libc::PROT_NONE;
    if prot.read {
        bits |= libc::PROT_READ;
    }
    if prot.write {
        bits |= libc::PROT_WRITE;
    }
    if prot.exec {
        bits |= libc::PROT_EXEC;
    }
    bits
}

/// The `MADV_*` value of `advice`.
fn advice_bits(advice: Advice) -> libc::c_int {
    match advice {
        Advice::Free => libc::MADV_FREE,
        Advice::Dontfork => libc::MADV_DONTFORK,
        Advice::Dofork => libc::MADV_DOFORK,
        Advice::Wipeonfork => libc::MADV_WIPEONFORK,
        Advice::Keeponfork => libc::MADV_KEEPONFORK,
        Advice::PopulateRead => MADV_POPULATE_READ,
        Advice::PopulateWrite => MADV_POPULATE_WRITE,
    }
}

/// `mlock2`'s `MLOCK_ONFAULT` (Linux 4.4).
const MLOCK_ONFAULT: libc::c_int = 1;

/// `MADV_POPULATE_READ` (Linux 5.14).
const MADV_POPULATE_READ: libc::c_int = 22;
/// `MADV_POPULATE_WRITE` (Linux 5.14).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// `ok` for a call that returned 0, else `err` with the errno.
fn status(result: libc::c_int) -> Outcome {
    if result == 0 {
        Outcome::Ok
    } else {
        last_errno()
    }
}

/// `err` with the errno of the call that just failed.
fn last_errno() -> Outcome {
    Outcome::Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Wraps an error with what was being done.
fn context(what: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |error| io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// Makes glibc serve allocations below 32 MiB from the `brk` heap, so that
/// nothing the child allocates during the run is mmapped into the window.
#[cfg(target_env = "gnu")]
fn keep_malloc_out_of_the_window() -> io::Result<()> {
    // SAFETY: mallopt only retunes glibc's allocator; the child has a single
    // thread.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD) } == 1 {
        return Ok(());
    }
    Err(io::Error::other("mallopt(M_MMAP_THRESHOLD) failed"))
}

/// Other C libraries: rely on the allocations made before the window only.
#[cfg(not(target_env = "gnu"))]
fn keep_malloc_out_of_the_window() -> io::Result<()> {
    Ok(())
}

/// Creates the memfds of the files `ops` map (the others are never seen).
fn create_files(ops: &[Op]) -> io::Result<Vec<Option<File>>> {
    let mut files: Vec<Option<File>> = (0..FILE_COUNT).map(|_| None).collect();
    for op in ops {
        if let Op::Mmap {
            backing: Backing::File { id, .. },
            ..
        } = *op
        {
            let slot = &mut files[usize::from(id - 1)];
            if slot.is_none() {
                *slot = Some(create_file(id).map_err(context("creating a file"))?);
            }
        }
    }
    Ok(files)
}

/// File `id`: FILE_PAGES pages; byte 0 of page p is `file_byte(id, p)`.
fn create_file(id: u8) -> io::Result<File> {
    let file = memfd(&format!("vmscript-{id}"))?;
    file.set_len(FILE_PAGES * PAGE)?;
    for page in 0..FILE_PAGES {
        file.write_all_at(&[file_byte(id, page)], page * PAGE)?;
    }
    Ok(file)
}

/// A new memfd; it shows in `/proc/self/maps` as `/memfd:NAME (deleted)`.
fn memfd(name: &str) -> io::Result<File> {
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reserves the window and returns its base: an empty hole of WINDOW_PAGES
/// pages with a one-page guard on each side. The guards map a memfd of their
/// own, so no mapping a script makes can merge with them (or with whatever
/// lies beyond them), and every mapping inside the window stays inside it.
fn reserve_window() -> io::Result<usize> {
    let window = bytes(WINDOW_PAGES);
    let total = window + 2 * bytes(1);
    // SAFETY: a fresh PROT_NONE reservation at an address the kernel picks;
    // it replaces nothing.
    let start = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if start == libc::MAP_FAILED {
        return Err(io::Error::last_os_error()).map_err(context("reserving the window"));
    }
    let start = start as usize;
    let guard = memfd("vmscript-guard")?;
    guard.set_len(PAGE)?;
    map_guard(start, &guard)?;
    map_guard(start + bytes(1) + window, &guard)?;
    let base = start + bytes(1);
    // SAFETY: unmaps the middle of the reservation made above.
    if unsafe { libc::munmap(base as *mut libc::c_void, window) } != 0 {
        return Err(io::Error::last_os_error()).map_err(context("emptying the window"));
    }
    Ok(base)
}

/// Maps one PROT_NONE page of `guard` at `addr`, inside the reservation.
fn map_guard(addr: usize, guard: &File) -> io::Result<()> {
    // SAFETY: `addr` is a page of the reservation made by reserve_window,
    // which nothing else uses.
    let result = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            bytes(1),
            libc::PROT_NONE,
            libc::MAP_FIXED | libc::MAP_SHARED,
            guard.as_raw_fd(),
            0,
        )
    };
    if result == libc::MAP_FAILED {
        return Err(io::Error::last_os_error()).map_err(context("mapping a guard page"));
    }
    Ok(())
}
