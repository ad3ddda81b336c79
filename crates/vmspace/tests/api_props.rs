//! Property test of the library API under arbitrary arguments: sequences of
//! calls whose addresses and lengths are drawn from the awkward places (zero,
//! unaligned, overflowing, huge, past the address limit, overlapping what is
//! mapped, on holes), mixed with loads and stores through a `Cpu`. Every call
//! must return (an error value or success, never a panic), errors must be
//! ones Linux returns for that call, and the address space's invariants
//! (tree, VMAs, page table against VMAs, frame reference counts) must hold
//! after each step. At the end, every frame comes back.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 256 per strategy).

use proptest::prelude::*;
use std::sync::Arc;
use vmspace::{
    AddressSpace, Config, Cpu, Errno, File, FrameAllocator, MapFlags, MapSource, MemoryStore, Prot,
    RemapFlags, ADDR_LIMIT, PAGE_SIZE,
};

const P: u64 = PAGE_SIZE;
/// A small window most calls aim at, so that they meet each other.
const BASE: u64 = 0x2000_0000;

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (0u64..32).prop_map(|p| BASE + p * P),
        1 => Just(0u64),
        1 => (0u64..P).prop_map(|o| BASE + o),
        1 => Just(ADDR_LIMIT - P),
        1 => Just(ADDR_LIMIT),
        1 => Just(!(P - 1)),
        1 => any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => (1u64..8).prop_map(|n| n * P),
        1 => Just(0u64),
        1 => 1u64..P,
        1 => Just(u64::MAX),
        1 => Just(ADDR_LIMIT),
        1 => any::<u64>(),
    ]
}

fn prot() -> impl Strategy<Value = Prot> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, w, x)| Prot::new(r, w, x))
}

#[derive(Clone, Debug)]
enum Call {
    Mmap(u64, u64, Prot, bool, u8),
    Munmap(u64, u64),
    Mprotect(u64, u64, Prot),
    Mremap(u64, u64, u64, bool, Option<u64>),
    Dontneed(u64, u64),
    Msync(u64, u64),
    Load(u64),
    Store(u64, u64),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        3 => (addr(), len(), prot(), any::<bool>(), 0u8..8)
            .prop_map(|(a, l, p, s, f)| Call::Mmap(a, l, p, s, f)),
        2 => (addr(), len()).prop_map(|(a, l)| Call::Munmap(a, l)),
        2 => (addr(), len(), prot()).prop_map(|(a, l, p)| Call::Mprotect(a, l, p)),
        2 => (addr(), len(), len(), any::<bool>(), proptest::option::of(addr()))
            .prop_map(|(a, o, n, m, d)| Call::Mremap(a, o, n, m, d)),
        1 => (addr(), len()).prop_map(|(a, l)| Call::Dontneed(a, l)),
        1 => (addr(), len()).prop_map(|(a, l)| Call::Msync(a, l)),
        2 => addr().prop_map(Call::Load),
        2 => (addr(), any::<u64>()).prop_map(|(a, v)| Call::Store(a, v)),
    ]
}

/// Runs `call`; returns the error, if any.
fn run(s: &Arc<AddressSpace>, cpu: &mut Cpu, file: &Arc<File>, call: &Call) -> Option<Errno> {
    match *call {
        Call::Mmap(a, l, p, shared, flavour) => {
            let flags = MapFlags {
                shared,
                fixed: flavour & 1 != 0,
                fixed_noreplace: flavour == 2,
                growsdown: flavour == 4 && !shared,
                ..MapFlags::default()
            };
            let source = if flavour & 6 == 6 {
                MapSource::File {
                    file: file.clone(),
                    pgoff: u64::from(flavour),
                }
            } else {
                MapSource::Anon
            };
            s.mmap(a, l, p, flags, source).err()
        }
        Call::Munmap(a, l) => s.munmap(a, l).err(),
        Call::Mprotect(a, l, p) => s.mprotect(a, l, p).err(),
        Call::Mremap(a, o, n, may_move, dest) => {
            let flags = RemapFlags {
                may_move: may_move || dest.is_some(),
                fixed: dest,
            };
            s.mremap(a, o, n, flags).err()
        }
        Call::Dontneed(a, l) => s.madvise_dontneed(a, l).err(),
        Call::Msync(a, l) => s.msync(a, l).err(),
        Call::Load(a) => {
            let _ = cpu.read_u64(a & !7);
            let _ = cpu.read_u8(a);
            None
        }
        Call::Store(a, v) => {
            let _ = cpu.write_u64(a & !7, v);
            None
        }
    }
}

/// The errors Linux documents for each call.
fn allowed(call: &Call, e: Errno) -> bool {
    use Errno::*;
    match call {
        Call::Mmap(..) => [EINVAL, ENOMEM, EEXIST, EPERM, EOVERFLOW].contains(&e),
        Call::Munmap(..) => [EINVAL, ENOMEM].contains(&e),
        Call::Mprotect(..) => [EINVAL, ENOMEM, EACCES].contains(&e),
        Call::Mremap(..) => [EINVAL, ENOMEM, EFAULT, EAGAIN, EPERM].contains(&e),
        Call::Dontneed(..) => [EINVAL, ENOMEM].contains(&e),
        Call::Msync(..) => [EINVAL, ENOMEM, EIO, EBUSY].contains(&e),
        Call::Load(_) | Call::Store(..) => false,
    }
}

fn sequence(strategy: vmspace::Strategy, calls: &[Call]) -> Result<(), TestCaseError> {
    let frames = Arc::new(FrameAllocator::new(512 * P).unwrap());
    let file = File::new(
        16,
        Box::new(MemoryStore::new(16, |p, page| page[0] = p as u8)),
        frames.clone(),
    );
    let config = Config {
        strategy,
        max_map_count: 24,
        ..Config::default()
    };
    let s = AddressSpace::new(config, frames.clone()).unwrap();
    let mut cpu = s.cpu();
    for (i, c) in calls.iter().enumerate() {
        if let Some(e) = run(&s, &mut cpu, &file, c) {
            prop_assert!(allowed(c, e), "step {i}: {c:?} returned {e:?}");
        }
        if let Err(broken) = s.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "after step {i} {c:?}: {broken}"
            )));
        }
    }
    drop(cpu);
    drop(s);
    drop(file);
    // Unmapped VMAs (and the objects they hold) are freed after a grace
    // period; other test threads may hold it back for a while (a thread
    // descheduled while pinned), so wait for it with a generous deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while frames.in_use() != 0 && std::time::Instant::now() < deadline {
        vmspace_tree::pin().flush();
        std::thread::yield_now();
    }
    prop_assert_eq!(frames.in_use(), 0, "frames leaked");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_calls_mmap_lock(calls in proptest::collection::vec(call(), 1..60)) {
        sequence(vmspace::Strategy::MmapLock, &calls)?;
    }

    #[test]
    fn arbitrary_calls_per_vma(calls in proptest::collection::vec(call(), 1..60)) {
        sequence(vmspace::Strategy::PerVma, &calls)?;
    }

    #[test]
    fn arbitrary_calls_speculative(calls in proptest::collection::vec(call(), 1..60)) {
        sequence(vmspace::Strategy::Speculative, &calls)?;
    }
}
