//! Where a workload runs: the [`Env`] trait, with one implementation over a
//! vmspace [`AddressSpace`] ([`VmEnv`]) and one over the real Linux kernel
//! ([`HostEnv`], used only inside the host child process). The workload loops
//! in `run.rs` are generic over it, so both sides run the very same code.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use vmspace::{
    AddressSpace, BackingStore, Config, Cpu, FaultStats, File, FrameAllocator, MapFlags, MapSource,
    Prot, Strategy, ZeroStore, PAGE_SIZE,
};

/// What a thread maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// Private anonymous memory.
    Anon,
    /// Private anonymous memory for the churning thread, asked for at
    /// [`CHURN_HINT`] (not fixed): an area of its own, apart from the
    /// faulters' regions. On the host, placement already puts a small mapping
    /// into a hole among the libraries, far from a large region; in vmspace's
    /// otherwise empty address space top-down placement would put it right
    /// below a faulter's region, where it merges into the faulter's VMA and
    /// every churn operation write-locks that VMA (it would on Linux too).
    Churn,
    /// The thread's own warm file (index = thread), private (writes are COW).
    FilePrivate(usize),
    /// The thread's own warm file, shared.
    FileShared(usize),
    /// A fresh file whose backing store answers each read after a delay.
    Sleepy,
}

impl MapKind {
    /// The address hint a mapping of this kind is asked for at (0: none).
    pub fn hint(self) -> u64 {
        if self == MapKind::Churn {
            CHURN_HINT
        } else {
            0
        }
    }
}

/// Where the churning thread asks for its mappings (16 TiB: free in a fresh
/// Linux process, whose heap is near 0x5555_5555_0000 and mappings near
/// 0x7fxx_xxxx_xxxx, and in vmspace's address space).
pub const CHURN_HINT: u64 = 0x1000_0000_0000;

/// Memory operations a workload needs. `T` is what each thread holds (a
/// vmspace `Cpu`; nothing on the host).
pub trait Env: Sync {
    /// Per-thread state.
    type T;
    /// The state of a new thread (called on that thread).
    fn thread(&self) -> Self::T;
    /// Maps `len` bytes of `kind` somewhere, read-write; returns the address.
    fn map(&self, t: &mut Self::T, len: u64, kind: MapKind) -> u64;
    /// Unmaps a range.
    fn unmap(&self, t: &mut Self::T, addr: u64, len: u64);
    /// Makes a range read-only.
    fn protect_ro(&self, t: &mut Self::T, addr: u64, len: u64);
    /// Stores one byte (a write fault if the page is not yet writable).
    fn write(&self, t: &mut Self::T, addr: u64);
    /// Loads one byte.
    fn read(&self, t: &mut Self::T, addr: u64);
    /// Reads the list of mappings (`maps()`, `/proc/self/maps`); returns a size.
    fn read_maps(&self, t: &mut Self::T) -> usize;
    /// Fault counters so far, where the environment has them.
    fn fault_stats(&self) -> Option<FaultStats>;
    /// Minor faults of the process so far, where the environment has them.
    fn minor_faults(&self) -> Option<u64>;
}

/// The controls of `page_fault1` and `page_fault2`: their page writes
/// without a fault or a mapping. Each thread owns buffers of the region's
/// size, allocated and touched once.
///
/// * `page_fault1` (`MapKind::Anon`): a "write" zeroes the 4 KiB page under
///   the address (what a fault does to a fresh frame) and stores the byte.
///   vmspace's faults zero their frames the same way (`memset`), so the ratio
///   of the 2-thread to the 1-thread rate is what this machine's memory allows
///   the zeroing: the ceiling of `page_fault1`'s scaling whatever the fault
///   path does.
/// * `page_fault2` (`MapKind::FilePrivate`): a "write" copies the page from a
///   second buffer, which stands for the thread's cached file, word by word
///   with relaxed atomic loads and stores (how vmspace copies a frame whose
///   source other threads may be writing), then stores the byte.
///
/// The buffers are allocated and touched in [`Env::thread`], before the
/// measurement starts (256 MiB of host page faults would not fit in the
/// warm-up). (`page_fault3` zeroes and copies nothing: its control is
/// [`WarmEnv`].)
pub struct NoFaultEnv {
    /// Bytes of each buffer: the workload's region.
    pub region: u64,
    /// Whether the workload is `page_fault2` (copies) or `page_fault1` (zeroes).
    pub copies: bool,
}

/// A [`NoFaultEnv`] thread's buffers.
#[derive(Default)]
pub struct NoFaultBufs {
    /// The zeroed pages (`page_fault1`).
    zeroed: Vec<u8>,
    /// The copies and their source (`page_fault2`), page-aligned like frames.
    copies: Vec<Page>,
    file: Vec<Page>,
}

/// A page of words, aligned as a frame is.
#[repr(C, align(4096))]
struct Page([AtomicU64; (PAGE_SIZE / 8) as usize]);

impl Page {
    fn filled(v: u64) -> Page {
        Page(std::array::from_fn(|_| AtomicU64::new(v)))
    }
}

impl Env for NoFaultEnv {
    type T = NoFaultBufs;

    fn thread(&self) -> NoFaultBufs {
        let mut b = NoFaultBufs::default();
        if self.copies {
            let pages = (self.region / PAGE_SIZE) as usize;
            b.copies = (0..pages).map(|_| Page::filled(1)).collect();
            b.file = (0..pages).map(|i| Page::filled(i as u64)).collect();
        } else {
            // Non-zero, so that the host kernel populates it now.
            b.zeroed = vec![1u8; self.region as usize];
        }
        b
    }

    fn map(&self, b: &mut NoFaultBufs, len: u64, kind: MapKind) -> u64 {
        let (base, size) = match kind {
            MapKind::Anon => (b.zeroed.as_ptr() as u64, b.zeroed.len() as u64),
            MapKind::FilePrivate(_) => {
                (b.copies.as_ptr() as u64, b.copies.len() as u64 * PAGE_SIZE)
            }
            _ => unreachable!("no-fault runs page_fault1 and page_fault2 only"),
        };
        assert!(
            len <= size,
            "no-fault buffers are {size} bytes, asked for {len}"
        );
        base
    }

    fn unmap(&self, _: &mut NoFaultBufs, _: u64, _: u64) {}

    fn protect_ro(&self, _: &mut NoFaultBufs, _: u64, _: u64) {
        unreachable!("no-fault runs page_fault1 and page_fault2 only")
    }

    #[inline]
    fn write(&self, b: &mut NoFaultBufs, addr: u64) {
        let copies = b.copies.as_ptr() as u64;
        if (copies..copies + b.copies.len() as u64 * PAGE_SIZE).contains(&addr) {
            let off = (addr - copies) as usize;
            let page = off / PAGE_SIZE as usize;
            let (dst, src) = (&b.copies[page].0, &b.file[page].0);
            for (d, s) in dst.iter().zip(src) {
                d.store(s.load(Relaxed), Relaxed);
            }
            dst[off % PAGE_SIZE as usize / 8].store(1, Relaxed);
            return;
        }
        let off = (addr - b.zeroed.as_ptr() as u64) as usize;
        let page = off & !(PAGE_SIZE as usize - 1);
        b.zeroed[page..page + PAGE_SIZE as usize].fill(0);
        b.zeroed[off] = 1;
        std::hint::black_box(&mut b.zeroed[off]);
    }

    fn read(&self, b: &mut NoFaultBufs, addr: u64) {
        let off = (addr - b.zeroed.as_ptr() as u64) as usize;
        std::hint::black_box(b.zeroed[off]);
    }

    fn read_maps(&self, _: &mut NoFaultBufs) -> usize {
        0
    }

    fn fault_stats(&self) -> Option<FaultStats> {
        None
    }

    fn minor_faults(&self) -> Option<u64> {
        None
    }
}

/// The control of `page_fault3`: its writes through the same access path
/// ([`Cpu::write_u8`]) to the same kind of mapping (the thread's own warm
/// file, shared), whose entries are all present, so that nothing faults.
/// Each thread maps its file once and writes every page once (in the
/// warm-up); its `unmap` keeps the mapping. A write still pulls a cold line
/// of a different frame each time, as a faulting write does, so the ratio
/// of the 2-thread to the 1-thread rate is what this machine's memory allows
/// those writes. A fault adds work that runs in the cores' caches, so
/// `page_fault3` at two threads should land between this ratio and 2 (in
/// the full suite it lands above 2: see the README on the order effect). Its fault
/// counters are reported, so that a run shows it took no fault.
pub struct WarmEnv(pub VmEnv);

impl Env for WarmEnv {
    type T = (Cpu, Option<u64>);

    fn thread(&self) -> Self::T {
        (self.0.thread(), None)
    }

    fn map(&self, t: &mut Self::T, len: u64, kind: MapKind) -> u64 {
        assert!(
            matches!(kind, MapKind::FileShared(_)),
            "the warm control runs page_fault3 only"
        );
        if let Some(addr) = t.1 {
            return addr;
        }
        let addr = self.0.map(&mut t.0, len, kind);
        for page in 0..len / PAGE_SIZE {
            self.0.write(&mut t.0, addr + page * PAGE_SIZE);
        }
        t.1 = Some(addr);
        addr
    }

    fn unmap(&self, _: &mut Self::T, _: u64, _: u64) {}

    fn protect_ro(&self, _: &mut Self::T, _: u64, _: u64) {
        unreachable!("the warm control runs page_fault3 only")
    }

    #[inline]
    fn write(&self, t: &mut Self::T, addr: u64) {
        self.0.write(&mut t.0, addr)
    }

    #[inline]
    fn read(&self, t: &mut Self::T, addr: u64) {
        self.0.read(&mut t.0, addr)
    }

    fn read_maps(&self, t: &mut Self::T) -> usize {
        self.0.read_maps(&mut t.0)
    }

    fn fault_stats(&self) -> Option<FaultStats> {
        self.0.fault_stats()
    }

    fn minor_faults(&self) -> Option<u64> {
        None
    }
}

/// A backing store that reads zeros after sleeping (slow I/O).
struct SleepyStore(Duration);

impl BackingStore for SleepyStore {
    fn read_page(&self, _: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::thread::sleep(self.0);
        buf.fill(0);
        Ok(())
    }
    fn write_page(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn is_slow(&self) -> bool {
        true
    }
}

/// The latency of the sleepy file's store.
pub const SLEEPY_LATENCY: Duration = Duration::from_micros(50);

/// A fresh vmspace address space of one strategy.
pub struct VmEnv {
    space: Arc<AddressSpace>,
    files: Vec<Arc<File>>,
}

impl VmEnv {
    /// A new address space over `frames`, with `files` warm files of
    /// `file_bytes` each (every page already in the page cache).
    pub fn new(
        strategy: Strategy,
        frames: &Arc<FrameAllocator>,
        files: usize,
        file_bytes: u64,
    ) -> VmEnv {
        let space = AddressSpace::new(
            Config {
                strategy,
                max_map_count: 1 << 20,
                ..Config::default()
            },
            frames.clone(),
        )
        .expect("a default configuration is valid");
        let pages = file_bytes / PAGE_SIZE;
        let files = (0..files)
            .map(|_| {
                let f = File::new(pages, Box::new(ZeroStore), frames.clone());
                for p in 0..pages {
                    f.fill(p)
                        .expect("warming a bench file: frame arena too small");
                }
                f
            })
            .collect();
        VmEnv { space, files }
    }

    /// The address space (a device mirror subscribes to it, `mirror.rs`).
    pub fn space(&self) -> &Arc<AddressSpace> {
        &self.space
    }
}

impl Env for VmEnv {
    type T = Cpu;

    fn thread(&self) -> Cpu {
        self.space.cpu()
    }

    fn map(&self, _: &mut Cpu, len: u64, kind: MapKind) -> u64 {
        let (shared, src) = match kind {
            MapKind::Anon | MapKind::Churn => (false, MapSource::Anon),
            MapKind::FilePrivate(i) | MapKind::FileShared(i) => (
                matches!(kind, MapKind::FileShared(_)),
                MapSource::File {
                    file: self.files[i].clone(),
                    pgoff: 0,
                },
            ),
            MapKind::Sleepy => {
                let file = File::new(
                    len / PAGE_SIZE,
                    Box::new(SleepyStore(SLEEPY_LATENCY)),
                    self.space.frames().clone(),
                );
                (false, MapSource::File { file, pgoff: 0 })
            }
        };
        let flags = MapFlags {
            shared,
            ..MapFlags::default()
        };
        self.space
            .mmap(kind.hint(), len, Prot::READ_WRITE, flags, src)
            .expect("vmspace mmap in a benchmark")
    }

    fn unmap(&self, _: &mut Cpu, addr: u64, len: u64) {
        self.space
            .munmap(addr, len)
            .expect("vmspace munmap in a benchmark");
    }

    fn protect_ro(&self, _: &mut Cpu, addr: u64, len: u64) {
        self.space
            .mprotect(addr, len, Prot::READ)
            .expect("vmspace mprotect in a benchmark");
    }

    #[inline]
    fn write(&self, cpu: &mut Cpu, addr: u64) {
        cpu.write_u8(addr, 1).expect("vmspace store in a benchmark");
    }

    #[inline]
    fn read(&self, cpu: &mut Cpu, addr: u64) {
        std::hint::black_box(cpu.read_u8(addr).expect("vmspace load in a benchmark"));
    }

    fn read_maps(&self, _: &mut Cpu) -> usize {
        self.space.maps().len()
    }

    fn fault_stats(&self) -> Option<FaultStats> {
        Some(self.space.fault_stats())
    }

    fn minor_faults(&self) -> Option<u64> {
        None
    }
}

#[cfg(target_os = "linux")]
pub use host::HostEnv;

#[cfg(target_os = "linux")]
mod host {
    use super::{Env, MapKind};
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use vmspace::FaultStats;

    /// The real kernel: this process's own address space. Only used in the
    /// host child, whose address space holds nothing but the benchmark.
    pub struct HostEnv {
        files: Vec<OwnedFd>,
    }

    fn check(ok: bool, what: &str) {
        if !ok {
            panic!("{what}: {}", std::io::Error::last_os_error());
        }
    }

    impl HostEnv {
        /// `files` memfds of `file_bytes` each, every page allocated (warm).
        pub fn new(files: usize, file_bytes: u64) -> HostEnv {
            let files = (0..files)
                .map(|_| {
                    // SAFETY: the name is a NUL-terminated string; memfd_create
                    // touches no memory of ours otherwise.
                    let fd = unsafe { libc::memfd_create(c"vmspace-bench".as_ptr(), 0) };
                    check(fd >= 0, "memfd_create");
                    // SAFETY: fd was just created and is owned by nothing else.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    // SAFETY: plain system calls on our own descriptor.
                    let r = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, file_bytes as i64) };
                    check(r == 0, "fallocate on a memfd");
                    fd
                })
                .collect();
            HostEnv { files }
        }
    }

    impl Env for HostEnv {
        type T = Vec<u8>;

        fn thread(&self) -> Vec<u8> {
            Vec::with_capacity(1 << 16)
        }

        fn map(&self, _: &mut Vec<u8>, len: u64, kind: MapKind) -> u64 {
            let (flags, fd) = match kind {
                MapKind::Anon | MapKind::Churn => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
                MapKind::FilePrivate(i) => (libc::MAP_PRIVATE, self.files[i].as_raw_fd()),
                MapKind::FileShared(i) => (libc::MAP_SHARED, self.files[i].as_raw_fd()),
                MapKind::Sleepy => panic!("the host has no sleepy file"),
            };
            // SAFETY: a new mapping at an address the kernel picks (a hint is
            // not fixed: nothing mapped there is replaced): no memory of this
            // process changes.
            let p = unsafe {
                libc::mmap(
                    kind.hint() as *mut libc::c_void,
                    len as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    fd,
                    0,
                )
            };
            check(p != libc::MAP_FAILED, "mmap");
            // SAFETY: advice on the mapping just made; changes no content.
            let r = unsafe { libc::madvise(p, len as usize, libc::MADV_NOHUGEPAGE) };
            check(r == 0, "madvise(MADV_NOHUGEPAGE)");
            p as u64
        }

        fn unmap(&self, _: &mut Vec<u8>, addr: u64, len: u64) {
            // SAFETY: the range is a mapping this workload made and no Rust
            // reference points into it.
            let r = unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
            check(r == 0, "munmap");
        }

        fn protect_ro(&self, _: &mut Vec<u8>, addr: u64, len: u64) {
            // SAFETY: as for unmap; only this thread uses the range.
            let r =
                unsafe { libc::mprotect(addr as *mut libc::c_void, len as usize, libc::PROT_READ) };
            check(r == 0, "mprotect");
        }

        #[inline]
        fn write(&self, _: &mut Vec<u8>, addr: u64) {
            // SAFETY: `addr` lies in a read-write mapping this thread made and
            // has not unmapped; no Rust reference aliases it.
            unsafe { std::ptr::write_volatile(addr as *mut u8, 1) };
        }

        #[inline]
        fn read(&self, _: &mut Vec<u8>, addr: u64) {
            // SAFETY: as for write (the mapping is readable).
            std::hint::black_box(unsafe { std::ptr::read_volatile(addr as *const u8) });
        }

        fn read_maps(&self, buf: &mut Vec<u8>) -> usize {
            buf.clear();
            let mut f = std::fs::File::open("/proc/self/maps").expect("open /proc/self/maps");
            f.read_to_end(buf).expect("read /proc/self/maps")
        }

        fn fault_stats(&self) -> Option<FaultStats> {
            None
        }

        fn minor_faults(&self) -> Option<u64> {
            // SAFETY: getrusage writes into the zeroed struct we pass.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
            (r == 0).then_some(ru.ru_minflt as u64)
        }
    }
}
