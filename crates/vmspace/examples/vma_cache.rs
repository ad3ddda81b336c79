//! Does the per-`Cpu` VMA cache pay? Times faults with the cache on and off:
//! `cargo run --release -p vmspace --example vma_cache`.
//!
//! Workload: page_fault1-like (map 16 MiB private anonymous, write one byte
//! per page, unmap), optionally with a read before the write (two faults per
//! page: zero page, then copy), in an address space with `extra` other VMAs
//! (so that the tree is deeper), one thread.
use std::sync::Arc;
use std::time::Instant;
use vmspace::{AddressSpace, Config, FrameAllocator, MapFlags, MapSource, Prot, Strategy};

const P: u64 = 4096;
const LEN: u64 = 16 << 20;

fn run(strategy: Strategy, extra: u64, read_first: bool, cache: bool, rounds: u32) -> f64 {
    let frames = Arc::new(FrameAllocator::new(LEN + (64 << 20)).unwrap());
    let s = AddressSpace::new(
        Config {
            strategy,
            ..Config::default()
        },
        frames,
    )
    .unwrap();
    // Neighbouring VMAs with alternating protections (no merges).
    for i in 0..extra {
        let prot = if i % 2 == 0 {
            Prot::READ
        } else {
            Prot::READ_WRITE
        };
        s.mmap(0, P, prot, MapFlags::default(), MapSource::Anon)
            .unwrap();
    }
    let mut cpu = s.cpu();
    cpu.set_vma_cache(cache);
    let mut faults = 0u64;
    let t = Instant::now();
    for _ in 0..rounds {
        let a = s
            .mmap(
                0,
                LEN,
                Prot::READ_WRITE,
                MapFlags::default(),
                MapSource::Anon,
            )
            .unwrap();
        let mut x = a;
        while x < a + LEN {
            if read_first {
                cpu.read_u8(x).unwrap();
                faults += 1;
            }
            cpu.write_u8(x, 1).unwrap();
            faults += 1;
            x += P;
        }
        s.munmap(a, LEN).unwrap();
    }
    t.elapsed().as_nanos() as f64 / faults as f64
}

fn main() {
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    println!("strategy     extra  read+write  cache-off ns/fault  cache-on ns/fault  change");
    for strategy in [Strategy::PerVma, Strategy::Speculative] {
        for extra in [0u64, 1000] {
            for read_first in [false, true] {
                // Interleave and take the best of 3 to damp noise.
                let mut off = f64::MAX;
                let mut on = f64::MAX;
                for _ in 0..3 {
                    off = off.min(run(strategy, extra, read_first, false, rounds));
                    on = on.min(run(strategy, extra, read_first, true, rounds));
                }
                println!(
                    "{:<12} {:>5}  {:<10}  {:>18.1}  {:>17.1}  {:>+5.1}%",
                    strategy.name(),
                    extra,
                    read_first,
                    off,
                    on,
                    (on - off) / off * 100.0
                );
            }
        }
    }
}
