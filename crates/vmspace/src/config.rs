//! The settings of an address space ([`Config`], its fault [`Strategy`]) and
//! the flag types of `mmap` and `mremap`. Plain values: no locks.

/// How page faults synchronize with changes to the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Faults take the address-space lock for reading (Linux before 6.4).
    MmapLock,
    /// Faults look the VMA up without locks and lock only it (Linux 6.4+).
    PerVma,
    /// Faults take no lock and validate with sequence counts (seeds 000, 001).
    Speculative,
}

impl Strategy {
    /// Every strategy, in the order benchmarks show them.
    pub const ALL: [Strategy; 3] = [Strategy::MmapLock, Strategy::PerVma, Strategy::Speculative];

    /// The name used on command lines and in results.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::MmapLock => "mmap-lock",
            Strategy::PerVma => "per-vma",
            Strategy::Speculative => "speculative",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Strategy::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown strategy {s:?} (mmap-lock, per-vma, speculative)"))
    }
}

/// Settings of a frame arena ([`crate::FrameAllocator::with_config`]).
#[derive(Clone, Debug)]
pub struct ArenaConfig {
    /// Memory of the arena, rounded up to whole frames.
    pub bytes: u64,
    /// The rmap lock of every object (file, anonymous object) on the arena.
    pub rmap_lock: crate::RmapLockKind,
    /// A swap device for the arena's private anonymous pages (none: reclaim
    /// can free only lazy-free pages).
    pub swap: Option<crate::SwapConfig>,
    /// Reclaim settings (background reclaimer, watermarks).
    pub reclaim: crate::ReclaimConfig,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        ArenaConfig {
            bytes: 64 << 20,
            rmap_lock: crate::RmapLockKind::default(),
            swap: None,
            reclaim: crate::ReclaimConfig::default(),
        }
    }
}

/// Settings of an address space.
#[derive(Clone, Debug)]
pub struct Config {
    /// The fault strategy.
    pub strategy: Strategy,
    /// Most VMAs allowed (Linux's `vm.max_map_count`).
    pub max_map_count: usize,
    /// Lowest address a mapping may use (Linux's `vm.mmap_min_addr`).
    pub mmap_min_addr: u64,
    /// Top of the area for placed mappings (placement is top-down below it).
    pub mmap_base: u64,
    /// Largest size a `MAP_GROWSDOWN` stack may grow to (Linux's
    /// `RLIMIT_STACK`, 8 MiB by default).
    pub stack_limit: u64,
    /// Whether the CPU has protection keys, so that an execute-only mapping
    /// (`PROT_EXEC` alone) gets Linux's execute-only key: it cannot be read,
    /// and the key is a VMA attribute that keeps it from merging with (or
    /// sharing an anonymous object with) a neighbour without it. Linux does
    /// this on x86-64 CPUs with PKU; `vmspace replay` sets it from the host.
    pub exec_only_pkey: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::PerVma,
            max_map_count: 65530,
            mmap_min_addr: 0x10000,
            mmap_base: 0x7f00_0000_0000,
            stack_limit: 8 << 20,
            exec_only_pkey: false,
        }
    }
}

/// `mmap` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapFlags {
    /// `MAP_SHARED` (else `MAP_PRIVATE`).
    pub shared: bool,
    /// `MAP_FIXED`: map exactly at the address, replacing what was there.
    pub fixed: bool,
    /// `MAP_FIXED_NOREPLACE`: map exactly at the address, `EEXIST` if taken.
    pub fixed_noreplace: bool,
    /// `MAP_GROWSDOWN`: a stack that grows down on faults just below it.
    pub growsdown: bool,
    /// `MAP_NORESERVE`: the mapping is never charged (Linux's
    /// `VM_NORESERVE`, a VMA flag that keeps it from merging with charged
    /// neighbours).
    pub noreserve: bool,
    /// `MAP_STACK`: Linux (6.7 and later) gives the mapping
    /// `VM_NOHUGEPAGE`, a VMA flag that keeps it from merging with
    /// neighbours without it.
    pub stack: bool,
}

/// `mremap` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemapFlags {
    /// `MREMAP_MAYMOVE`.
    pub may_move: bool,
    /// `MREMAP_FIXED` (with a new address; needs `may_move`).
    pub fixed: Option<u64>,
}

/// Why a [`Config`] was refused (by [`Config::validate`] and
/// `AddressSpace::new`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad vmspace configuration: {}: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Whether this machine gives execute-only protection keys (what
    /// [`Config::exec_only_pkey`] should be to behave as the host kernel
    /// does): the kernel hands out a protection key (`pkey_alloc`), which it
    /// does only on a CPU with PKU and with the feature enabled.
    pub fn host_has_exec_only_pkey() -> bool {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        {
            // SAFETY: `pkey_alloc(0, 0)` takes no pointers and changes
            // nothing but the process's key allocation, undone just below.
            let key = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0, 0) };
            if key < 0 {
                return false;
            }
            // SAFETY: frees the key allocated above; no memory uses it.
            unsafe { libc::syscall(libc::SYS_pkey_free, key) };
            true
        }
        #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
        false
    }

    /// Checks that the settings describe an address space that can exist:
    /// `mmap_min_addr` and `mmap_base` page aligned, with
    /// `mmap_min_addr < mmap_base <= TASK_SIZE` (so every placed mapping is
    /// below the user limit and can be unmapped again); `max_map_count` at
    /// least 1; `stack_limit` at most `TASK_SIZE`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use crate::frame::PAGE_SIZE;
        use crate::pagetable::TASK_SIZE;
        let bad = |field, reason: String| Err(ConfigError { field, reason });
        if !self.mmap_min_addr.is_multiple_of(PAGE_SIZE) {
            return bad(
                "mmap_min_addr",
                format!("{:#x} is not page aligned", self.mmap_min_addr),
            );
        }
        if !self.mmap_base.is_multiple_of(PAGE_SIZE) {
            return bad(
                "mmap_base",
                format!("{:#x} is not page aligned", self.mmap_base),
            );
        }
        if self.mmap_base > TASK_SIZE {
            return bad(
                "mmap_base",
                format!(
                    "{:#x} is above the user limit {TASK_SIZE:#x}",
                    self.mmap_base
                ),
            );
        }
        if self.mmap_min_addr >= self.mmap_base {
            return bad(
                "mmap_min_addr",
                format!(
                    "{:#x} leaves no room below mmap_base {:#x}",
                    self.mmap_min_addr, self.mmap_base
                ),
            );
        }
        if self.max_map_count == 0 {
            return bad("max_map_count", "0 allows no mapping".into());
        }
        if self.stack_limit > TASK_SIZE {
            return bad(
                "stack_limit",
                format!("{:#x} is larger than user space", self.stack_limit),
            );
        }
        Ok(())
    }
}
