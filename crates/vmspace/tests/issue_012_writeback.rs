//! Issue 12, data loss: dirty pages of a shared file mapping must reach the
//! store whenever the VMA is freed. Its own test binary: it holds an epoch
//! guard for its whole run (as at process exit, garbage is never
//! collected), which would hold back other tests' grace periods.

use std::sync::Arc;
use vmspace::*;

const P: u64 = PAGE_SIZE;

/// Data loss: a disk file mapped shared, written, unmapped, then the space
/// and the `File` dropped. The removed VMA still held the `File` in epoch
/// garbage (here kept uncollected by a pinned guard, as at process exit), so
/// the write-back at drop never ran and the disk read zeros. Now the pages
/// reach the disk when the mapping goes.
#[test]
fn dirty_shared_pages_reach_the_disk_when_the_mapping_goes() {
    for unmap_first in [true, false] {
        let path = std::env::temp_dir().join(format!(
            "vmspace-issue12-{}-{unmap_first}",
            std::process::id()
        ));
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _garbage_stays = vmspace_tree::pin();
        {
            let frames = Arc::new(FrameAllocator::new(64 * P).unwrap());
            let s = AddressSpace::new(Config::default(), frames.clone()).unwrap();
            let file = File::new(2, Box::new(DiskStore::new(disk)), frames);
            let shared = MapFlags {
                shared: true,
                ..MapFlags::default()
            };
            let src = MapSource::File { file, pgoff: 0 };
            let a = s.mmap(0, 2 * P, Prot::READ_WRITE, shared, src).unwrap();
            let mut cpu = s.cpu();
            cpu.write_bytes(a + P + 10, b"kept").unwrap();
            drop(cpu);
            if unmap_first {
                s.munmap(a, 2 * P).unwrap();
            }
        }
        let on_disk = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            on_disk.get(P as usize + 10..P as usize + 14),
            Some(&b"kept"[..]),
            "unmap first: {unmap_first}"
        );
    }
}
