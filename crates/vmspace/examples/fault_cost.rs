//! Probe (not part of the suite): a fixed number of page_fault3-like faults
//! (map a warm shared file region, write one byte per page, unmap) on one
//! thread, for instruction counts under cachegrind, which are deterministic
//! where this machine's clocks are not:
//! `valgrind --tool=cachegrind --cache-sim=no target/release/examples/fault_cost per-vma`.
//! Strategy from the first argument (`mmap-lock`, `per-vma`, `speculative`);
//! `anon` as second argument faults private anonymous memory instead;
//! `ROUNDS` (default 20) sets the number of regions, `MIB` (default 4) their
//! size (the bench's page_fault3 maps 128).
use std::sync::Arc;
use vmspace::{AddressSpace, Config, File, FrameAllocator, MapFlags, MapSource, Prot, ZeroStore};

const P: u64 = 4096;

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
    let len: u64 = std::env::var("MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        << 20;
    let frames = Arc::new(FrameAllocator::new(3 * len).unwrap());
    let s = AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames.clone(),
    )
    .unwrap();
    let file = File::new(len / P, Box::new(ZeroStore), frames);
    let mut cpu = s.cpu();
    let started = std::time::Instant::now();
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
        let a = s.mmap(0, len, Prot::READ_WRITE, flags, source).unwrap();
        for i in 0..len / P {
            cpu.write_u8(a + i * P, 1).unwrap();
        }
        s.munmap(a, len).unwrap();
    }
    let faults = rounds * len / P;
    let secs = started.elapsed().as_secs_f64();
    println!("{faults} faults, {:.2} M/s", faults as f64 / secs / 1e6);
}
