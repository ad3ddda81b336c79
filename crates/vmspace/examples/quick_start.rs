// Quick start: one address space, four threads faulting into one mapping at
// once, each through its own `Cpu`, while the main thread changes the
// mappings afterwards. Run it with
// `cargo run --release -p vmspace --example quick_start`; the same code is the
// crate documentation's example (a doctest) and the README's quick start.
use std::sync::Arc;
use std::thread;

use vmspace::{
    AddressSpace, Config, FrameAllocator, MapFlags, MapSource, Prot, Strategy, PAGE_SIZE,
};

fn main() {
    // Frames come from one arena of real memory (here 16 MiB).
    let frames = Arc::new(FrameAllocator::new(16 << 20).expect("frame arena"));
    let config = Config {
        strategy: Strategy::PerVma,
        ..Config::default()
    };
    let space = AddressSpace::new(config, frames).expect("valid configuration");

    // 64 pages of private anonymous memory, placed by the address space.
    let pages = 64;
    let len = pages * PAGE_SIZE;
    let base = space
        .mmap(
            0,
            len,
            Prot::READ_WRITE,
            MapFlags::default(),
            MapSource::Anon,
        )
        .expect("mmap");

    // Each thread writes one byte to every fourth page: the first touch of a
    // page is a fault, handled under that VMA's lock only.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let space = Arc::clone(&space);
            thread::spawn(move || {
                let mut cpu = space.cpu();
                for page in (t..pages).step_by(4) {
                    cpu.write_u8(base + page * PAGE_SIZE, page as u8)
                        .expect("store");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }

    // Every page holds what its thread wrote.
    let mut cpu = space.cpu();
    for page in 0..pages {
        assert_eq!(cpu.read_u8(base + page * PAGE_SIZE).unwrap(), page as u8);
    }
    println!("faults: {:?}", space.fault_stats());

    // Linux semantics: read-only in the middle splits the VMA in three, and a
    // store there is a protection fault.
    space
        .mprotect(base + 8 * PAGE_SIZE, 8 * PAGE_SIZE, Prot::READ)
        .expect("mprotect");
    assert_eq!(space.maps().len(), 3);
    assert!(cpu.write_u8(base + 8 * PAGE_SIZE, 1).is_err());

    // After munmap returns, no `Cpu` reaches the old memory.
    space.munmap(base, len).expect("munmap");
    assert!(cpu.read_u8(base).is_err());
    space.check_invariants().expect("invariants");
}
