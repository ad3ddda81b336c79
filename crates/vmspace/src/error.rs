//! Errors: what the Linux-facing calls return (`Errno`), and what a user
//! access that could not be resolved reports (`Fault`).

/// An error number, as Linux returns it from `mmap` and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Errno {
    /// Operation not permitted.
    EPERM,
    /// I/O error (a failed write-back).
    EIO,
    /// Try again.
    EAGAIN,
    /// Out of memory, or the range is not (fully) mapped.
    ENOMEM,
    /// Permission denied.
    EACCES,
    /// Bad address: the range is not mapped (mremap).
    EFAULT,
    /// Busy.
    EBUSY,
    /// The range exists already (`MAP_FIXED_NOREPLACE`).
    EEXIST,
    /// Invalid argument.
    EINVAL,
    /// Value too large (file offset overflow).
    EOVERFLOW,
}

impl Errno {
    /// The Linux error number.
    pub fn code(self) -> i32 {
        match self {
            Errno::EPERM => 1,
            Errno::EIO => 5,
            Errno::EAGAIN => 11,
            Errno::ENOMEM => 12,
            Errno::EACCES => 13,
            Errno::EFAULT => 14,
            Errno::EBUSY => 16,
            Errno::EEXIST => 17,
            Errno::EINVAL => 22,
            Errno::EOVERFLOW => 75,
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Errno {}

/// The kind of a user access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store (or an atomic read-modify-write).
    Write,
    /// An instruction fetch.
    Fetch,
}

/// Why a fault could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultCause {
    /// No mapping covers the address (`SIGSEGV`, `SEGV_MAPERR`).
    NoMapping,
    /// The mapping's protection forbids the access (`SIGSEGV`, `SEGV_ACCERR`).
    Protection,
    /// A file page past the end of the file (`SIGBUS`).
    PastEnd,
    /// The backing store failed to read the page (`SIGBUS`).
    Io,
    /// No frame was available (Linux would invoke the OOM killer).
    OutOfMemory,
}

/// A user access that failed: the address, the access and the cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// The faulting address.
    pub addr: u64,
    /// What the access was.
    pub access: Access,
    /// Why it failed.
    pub cause: FaultCause,
}

impl Fault {
    /// Whether Linux would deliver `SIGBUS` (else `SIGSEGV`, or OOM).
    pub fn is_bus_error(&self) -> bool {
        matches!(self.cause, FaultCause::PastEnd | FaultCause::Io)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} fault at {:#x}: {:?}",
            self.access, self.addr, self.cause
        )
    }
}

impl std::error::Error for Fault {}
