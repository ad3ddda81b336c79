//! The swap device on its own (`swap.rs`): slots, reference counts, I/O on a
//! real file (buffered and `O_DIRECT`), failure injection, the errors of bad
//! configurations, and concurrent use.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use vmspace::{SlotError, SwapConfig, SwapDevice, SwapError, SwapSlot, MAX_SLOTS, PAGE_SIZE};

const PAGE: usize = PAGE_SIZE as usize;

/// A fresh path on disk (the target directory), unique per test.
fn disk_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("swap-{}-{name}", std::process::id()))
}

fn open(name: &str, slots: u64, direct: bool) -> SwapDevice {
    let config = SwapConfig {
        path: disk_path(name),
        slots,
        direct,
    };
    SwapDevice::open(&config).unwrap_or_else(|e| panic!("open {}: {e}", config.path.display()))
}

/// The content a test writes: every byte depends on `tag` and its offset.
fn pattern(tag: u64) -> Vec<u8> {
    (0..PAGE)
        .map(|i| (tag.wrapping_mul(0x9E37_79B9) as usize ^ i.wrapping_mul(31)) as u8)
        .collect()
}

#[repr(C, align(4096))]
struct Aligned([u8; PAGE]);

fn round_trip(dev: &SwapDevice, pages: u64) {
    let slots: Vec<SwapSlot> = (0..pages).map(|_| dev.alloc().unwrap()).collect();
    for &s in &slots {
        dev.write(s, &pattern(u64::from(s.index()))).unwrap();
    }
    // Read back in reverse order, into an unaligned buffer (a bounce buffer
    // under O_DIRECT) and an aligned one (read straight).
    let mut unaligned = vec![0u8; PAGE + 1];
    let mut aligned = Box::new(Aligned([0; PAGE]));
    for &s in slots.iter().rev() {
        let want = pattern(u64::from(s.index()));
        dev.read(s, &mut unaligned[1..]).unwrap();
        assert!(unaligned[1..] == want[..], "{s} came back changed");
        dev.read(s, &mut aligned.0).unwrap();
        assert!(aligned.0[..] == want[..], "{s} came back changed (aligned)");
    }
    let st = dev.stats();
    assert_eq!((st.writes, st.reads), (pages, 2 * pages));
    assert_eq!((st.write_errors, st.read_errors), (0, 0));
    assert_eq!((st.used, st.capacity), (pages, dev.capacity()));
}

#[test]
fn round_trip_of_many_pages() {
    let dev = open("round-trip", 1000, false);
    round_trip(&dev, 1000);
}

#[test]
fn direct_io_on_a_disk_directory() {
    let dev = open("direct", 300, true);
    assert!(dev.is_direct());
    round_trip(&dev, 300);
    // An unaligned write goes through the bounce buffer too.
    let s = SwapSlot::from_index(7);
    let mut buf = vec![0u8; PAGE + 3];
    buf[3..].copy_from_slice(&pattern(99));
    dev.write(s, &buf[3..]).unwrap();
    let mut back = vec![0u8; PAGE];
    dev.read(s, &mut back).unwrap();
    assert!(back == pattern(99));
}

#[test]
fn direct_refused_names_the_cause() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        println!("skipped: no /dev/shm on this host");
        return;
    }
    let path = shm.join(format!("vmspace-swap-direct-{}", std::process::id()));
    let config = SwapConfig {
        path: path.clone(),
        slots: 4,
        direct: true,
    };
    match SwapDevice::open(&config) {
        Ok(dev) => {
            // tmpfs accepts O_DIRECT since Linux 6.6: then it must work.
            println!(
                "skipped: the filesystem of /dev/shm accepts O_DIRECT (tmpfs does since Linux 6.6)"
            );
            let s = dev.alloc().unwrap();
            dev.write(s, &pattern(1)).unwrap();
            let mut back = vec![0u8; PAGE];
            dev.read(s, &mut back).unwrap();
            assert!(back == pattern(1));
        }
        Err(e) => {
            assert!(matches!(e, SwapError::DirectUnsupported { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("/dev/shm") && msg.contains("O_DIRECT"),
                "{msg}"
            );
            assert!(msg.contains("turn direct off"), "{msg}");
            assert!(!path.exists(), "a refused device leaves no file");
        }
    }
}

#[test]
fn a_full_device_returns_none() {
    let dev = open("full", 130, false);
    let slots: Vec<SwapSlot> = std::iter::from_fn(|| dev.alloc()).collect();
    assert_eq!(slots.len(), 130);
    assert_eq!(
        slots.iter().collect::<HashSet<_>>().len(),
        130,
        "a slot handed out twice"
    );
    assert!(slots.iter().all(|s| u64::from(s.index()) < 130));
    assert_eq!(dev.alloc(), None);
    assert_eq!(dev.used(), 130);
    assert_eq!(dev.free(slots[42]), Ok(true));
    assert_eq!(dev.alloc(), Some(slots[42]));
    assert_eq!(dev.alloc(), None);
}

#[test]
fn dup_and_free_count_references() {
    let dev = open("refs", 4, false);
    let s = dev.alloc().unwrap();
    assert_eq!(dev.refcount(s), 1);
    // fork: parent and two children share the entry.
    assert_eq!(dev.dup(s), Ok(2));
    assert_eq!(dev.dup(s), Ok(3));
    assert_eq!(dev.slot_refcounts(), vec![(s, 3)]);
    assert_eq!(dev.free(s), Ok(false));
    assert_eq!(dev.free(s), Ok(false));
    assert_eq!(dev.used(), 1);
    assert_eq!(dev.free(s), Ok(true));
    assert_eq!((dev.refcount(s), dev.used()), (0, 0));
    assert_eq!(dev.free(s), Err(SlotError::NotAllocated(s)), "double free");
    assert_eq!(dev.dup(s), Err(SlotError::NotAllocated(s)));
    assert!(dev.slot_refcounts().is_empty());
    let e = dev.write(s, &pattern(0)).unwrap_err();
    assert!(e.to_string().contains("not allocated"), "{e}");
}

#[test]
fn injected_failures_are_reported_and_counted() {
    let dev = open("inject", 64, false);
    let s = dev.alloc().unwrap();
    dev.write(s, &pattern(5)).unwrap();
    dev.set_failure_rates(0.5, 0.5);
    let (mut w_err, mut r_err) = (0u64, 0u64);
    let mut page = vec![0u8; PAGE];
    for _ in 0..400 {
        if let Err(e) = dev.write(s, &pattern(5)) {
            assert!(e.to_string().contains("injected"), "{e}");
            w_err += 1;
        }
        match dev.read(s, &mut page) {
            Err(e) => {
                assert!(e.to_string().contains("injected"), "{e}");
                r_err += 1;
            }
            Ok(()) => assert!(page == pattern(5)),
        }
    }
    assert!(
        (50..350).contains(&w_err),
        "{w_err} of 400 writes failed at rate 0.5"
    );
    assert!(
        (50..350).contains(&r_err),
        "{r_err} of 400 reads failed at rate 0.5"
    );
    let st = dev.stats();
    assert_eq!((st.write_errors, st.read_errors), (w_err, r_err));
    assert_eq!((st.writes, st.reads), (1 + 400 - w_err, 400 - r_err));
    // A failed write leaves the page the caller keeps; turning injection
    // off, everything works again.
    dev.set_failure_rates(0.0, 0.0);
    dev.read(s, &mut page).unwrap();
    assert!(page == pattern(5));
}

#[test]
fn concurrent_alloc_free_and_io() {
    concurrent_use("concurrent", false);
}

#[test]
fn concurrent_alloc_free_and_direct_io() {
    concurrent_use("concurrent-direct", true);
}

/// Threads allocate, write, read back and free at once on a small device
/// (full most of the time): no slot is handed out twice, no data is lost,
/// and the counts agree at the end.
fn concurrent_use(name: &str, direct: bool) {
    const THREADS: u64 = 4;
    const SLOTS: u64 = 200;
    let dev = open(name, SLOTS, direct);
    let held: Mutex<HashSet<SwapSlot>> = Mutex::new(HashSet::new());
    let kept: Mutex<HashMap<SwapSlot, u32>> = Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (dev, held, kept) = (&dev, &held, &kept);
            scope.spawn(move || {
                let mut mine: Vec<(SwapSlot, u64)> = Vec::new();
                let mut page = vec![0u8; PAGE];
                for i in 0..3000u64 {
                    let tag = (t << 32) | i;
                    if i % 3 != 2 {
                        if let Some(s) = dev.alloc() {
                            assert!(held.lock().unwrap().insert(s), "{s} handed out twice");
                            dev.write(s, &pattern(tag)).unwrap();
                            mine.push((s, tag));
                            continue;
                        }
                    }
                    // Free the oldest of ours, after checking its data.
                    if !mine.is_empty() {
                        let (s, tag) = mine.remove(0);
                        dev.read(s, &mut page).unwrap();
                        assert!(page == pattern(tag), "{s} lost its data");
                        assert!(held.lock().unwrap().remove(&s));
                        assert_eq!(dev.free(s), Ok(true));
                    }
                }
                for (s, tag) in mine {
                    dev.read(s, &mut page).unwrap();
                    assert!(page == pattern(tag), "{s} lost its data");
                    kept.lock().unwrap().insert(s, 1);
                }
            });
        }
    });
    let kept = kept.into_inner().unwrap();
    assert_eq!(dev.used(), kept.len() as u64);
    dev.check_against(&kept).unwrap();
}

#[test]
fn the_last_of_racing_frees_frees_the_slot_once() {
    const THREADS: u32 = 4;
    let dev = open("racing-frees", 64, false);
    let slots: Vec<SwapSlot> = std::iter::from_fn(|| dev.alloc()).collect();
    for &s in &slots {
        for _ in 1..THREADS {
            dev.dup(s).unwrap();
        }
        assert_eq!(dev.refcount(s), THREADS);
    }
    // Every thread drops its reference to every slot, as parent and
    // children exiting at once.
    let last: Vec<Vec<SwapSlot>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    slots
                        .iter()
                        .filter(|&&s| dev.free(s).unwrap())
                        .copied()
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut freed: Vec<SwapSlot> = last.into_iter().flatten().collect();
    freed.sort();
    assert_eq!(freed, slots, "each slot is freed by exactly one last free");
    assert_eq!(dev.used(), 0);
    dev.check_against(&HashMap::new()).unwrap();
    assert_eq!(std::iter::from_fn(|| dev.alloc()).count(), 64);
}

#[test]
fn the_file_is_removed_on_drop() {
    let path = disk_path("removed");
    let dev = SwapDevice::open(&SwapConfig {
        path: path.clone(),
        slots: 16,
        direct: false,
    })
    .unwrap();
    assert_eq!(dev.path(), path);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 * PAGE_SIZE);
    drop(dev);
    assert!(!path.exists());
}

#[test]
fn an_existing_file_is_truncated() {
    let path = disk_path("truncated");
    std::fs::write(&path, vec![1u8; 100 * PAGE]).unwrap();
    let dev = SwapDevice::open(&SwapConfig {
        path: path.clone(),
        slots: 2,
        direct: false,
    })
    .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * PAGE_SIZE);
    let s = dev.alloc().unwrap();
    let mut page = vec![9u8; PAGE];
    dev.read(s, &mut page).unwrap();
    assert!(
        page.iter().all(|&b| b == 0),
        "old content survived the truncation"
    );
}

fn refused(config: SwapConfig) -> String {
    let e = SwapDevice::open(&config).expect_err("the configuration must be refused");
    assert!(!config.path.exists(), "a refused device leaves no file");
    e.to_string()
}

#[test]
fn bad_configurations_are_refused_with_clear_messages() {
    let missing = disk_path("no-such-dir").join("swap");
    let msg = refused(SwapConfig {
        path: missing.clone(),
        slots: 4,
        direct: false,
    });
    assert!(
        msg.contains(&missing.parent().unwrap().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("No such file or directory"), "{msg}");

    let msg = refused(SwapConfig {
        path: disk_path("zero"),
        slots: 0,
        direct: false,
    });
    assert!(msg.contains("0 slots"), "{msg}");

    let msg = refused(SwapConfig {
        path: disk_path("huge"),
        slots: MAX_SLOTS + 1,
        direct: false,
    });
    assert!(msg.contains(&format!("{MAX_SLOTS}")), "{msg}");

    // A regular file where the directory should be.
    let file = disk_path("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let msg = refused(SwapConfig {
        path: file.join("swap"),
        slots: 4,
        direct: false,
    });
    assert!(msg.contains("not a directory"), "{msg}");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn too_little_disk_is_refused_before_anything_is_written() {
    // The most slots there are: 16 TiB, more than any test disk holds.
    let msg = refused(SwapConfig {
        path: disk_path("no-space"),
        slots: MAX_SLOTS,
        direct: false,
    });
    assert!(msg.contains("not enough disk space"), "{msg}");
    assert!(
        msg.contains(&format!("{} bytes needed", MAX_SLOTS * PAGE_SIZE)),
        "{msg}"
    );
}

#[test]
fn an_unwritable_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = disk_path("read-only");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let config = SwapConfig {
        path: dir.join("swap"),
        slots: 4,
        direct: false,
    };
    match SwapDevice::open(&config) {
        Ok(_) => println!("skipped: this user (root?) may write a read-only directory"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&dir.display().to_string()), "{msg}");
            assert!(msg.contains("ermission denied"), "{msg}");
        }
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_page_lengths_and_slots_out_of_range_are_errors() {
    let dev = open("lengths", 4, false);
    let s = dev.alloc().unwrap();
    for len in [0, 1, PAGE - 1, PAGE + 1, 2 * PAGE] {
        let mut buf = vec![0u8; len];
        let e = dev.write(s, &buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(&format!("{len} bytes")), "{e}");
        assert!(dev.read(s, &mut buf).is_err());
    }
    let far = SwapSlot::from_index(4);
    let e = dev.write(far, &pattern(0)).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    assert_eq!(dev.refcount(far), 0);
    // Misuse is not an I/O error.
    let st = dev.stats();
    assert_eq!(
        (st.writes, st.write_errors, st.reads, st.read_errors),
        (0, 0, 0, 0)
    );
}
