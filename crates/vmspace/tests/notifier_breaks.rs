//! The MMU-notifier protocol breaks (`vmspace::debug`), each shown to be
//! caught. They switch process-wide state, so they live in a test binary of
//! their own and run one after the other in one test. Debug builds only.

use std::sync::Arc;
use std::time::Duration;
use vmspace::debug::{break_protocol, ProtocolBreak};
use vmspace::{
    AddressSpace, ArenaConfig, Config, FaultCause, File, FrameAllocator, MapFlags, MapSource,
    MemoryStore, Mirror, MirrorConfig, Prot, RmapLockKind, PAGE_SIZE,
};

const P: u64 = PAGE_SIZE;

fn setup(kind: RmapLockKind) -> (Arc<FrameAllocator>, Arc<AddressSpace>) {
    let config = ArenaConfig {
        bytes: 64 * P,
        rmap_lock: kind,
        ..ArenaConfig::default()
    };
    let frames = Arc::new(FrameAllocator::with_config(&config).unwrap());
    let space = AddressSpace::new(Config::default(), frames.clone()).unwrap();
    (frames, space)
}

/// `sleep-under-rwlock`: reclaim's walk tells the notifier it may sleep
/// under the spinning rmap lock, and the mirror's sleeping invalidation
/// panics naming the path. Without the break the same call answers busy.
fn sleep_under_the_spinning_lock_panics() {
    let (frames, s) = setup(RmapLockKind::Rwlock);
    let file = File::new(1, Box::new(MemoryStore::new(1, |_, _| {})), frames.clone());
    let flags = MapFlags {
        shared: true,
        ..MapFlags::default()
    };
    let source = MapSource::File {
        file: file.clone(),
        pgoff: 0,
    };
    let m = s.mmap(0, P, Prot::READ_WRITE, flags, source).unwrap();
    let mirror = Mirror::new(
        &s,
        MirrorConfig {
            invalidate_sleep: Duration::from_millis(1),
            sleep_one_in: 1,
        },
    );
    let mut dev = mirror.device();
    dev.read_u64(m).unwrap();
    let f = s.debug_ptes(m, m + P)[0].frame;
    assert_eq!(frames.try_to_unmap(f), Ok(0), "busy, not slept");
    assert_eq!(mirror.stats().invalidations_slept, 0);

    assert!(break_protocol(Some(ProtocolBreak::SleepUnderRwlock)));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| frames.try_to_unmap(f)));
    break_protocol(None);
    let msg = panic.expect_err("a sleep under the spinning rmap lock went unnoticed");
    let msg = msg
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| msg.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("invalidation (Reclaim of") && msg.contains("spinning rmap lock"),
        "{msg}"
    );
}

/// `skip-notifier`: munmap does not tell the mirror, which keeps a
/// translation to the freed frame and lets a device read it; without the
/// break the same read faults.
fn a_skipped_notifier_leaves_a_stale_translation() {
    for broken in [false, true] {
        let (_frames, s) = setup(RmapLockKind::Rwsem);
        let a = s
            .mmap(0, P, Prot::READ_WRITE, MapFlags::default(), MapSource::Anon)
            .unwrap();
        let mirror = Mirror::new(&s, MirrorConfig::default());
        let mut dev = mirror.device();
        dev.write_u64(a, 1).unwrap();
        if broken {
            assert!(break_protocol(Some(ProtocolBreak::SkipNotifier)));
        }
        s.munmap(a, P).unwrap();
        break_protocol(None);
        let after = dev.read_u64(a);
        if broken {
            assert!(after.is_ok(), "the break should leave the stale entry");
            assert_eq!(mirror.entries(), 1);
        } else {
            assert_eq!(after.unwrap_err().cause, FaultCause::NoMapping);
        }
    }
}

#[test]
#[cfg(debug_assertions)]
fn notifier_protocol_breaks_are_caught() {
    sleep_under_the_spinning_lock_panics();
    a_skipped_notifier_leaves_a_stale_translation();
}
