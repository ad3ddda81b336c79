//! Probe (not part of the suite): a fixed number of page_fault3-like faults
//! (map a warm shared file region, write one byte per page, unmap) on one
//! thread, for instruction counts under cachegrind, which are deterministic
//! where this machine's clocks are not:
//! `valgrind --tool=cachegrind --cache-sim=no target/release/examples/fault_cost per-vma`.
//! Strategy from the first argument (`mmap-lock`, `per-vma`, `speculative`);
//! `anon` as second argument faults private anonymous memory instead;
//! `ROUNDS` (default 20) sets the number of regions.
use std::sync::Arc;
use vmspace::{AddressSpace, Config, File, FrameAllocator, MapFlags, MapSource, Prot, ZeroStore};

const P: u64 = 4096;
const LEN: u64 = 4 << 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let strategy = args
        .next()
        .unwrap_or_else(|| "per-vma".into())
        .parse()
        .expect("a strategy");
    let anon = args.next().as_deref() == Some("anon");
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let frames = Arc::new(FrameAllocator::new(3 * LEN).unwrap());
    let s = AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames.clone(),
    );
    let file = Arc::new(File::new(LEN / P, Box::new(ZeroStore), frames));
    let mut cpu = s.cpu();
    for _ in 0..rounds {
        let (flags, source) = if anon {
            (MapFlags::default(), MapSource::Anon)
        } else {
            (
                MapFlags {
                    shared: true,
                    ..MapFlags::default()
                },
                MapSource::File {
                    file: file.clone(),
                    pgoff: 0,
                },
            )
        };
        let a = s.mmap(0, LEN, Prot::READ_WRITE, flags, source).unwrap();
        for i in 0..LEN / P {
            cpu.write_u8(a + i * P, 1).unwrap();
        }
        s.munmap(a, LEN).unwrap();
    }
    println!("{} faults", rounds * LEN / P);
}
