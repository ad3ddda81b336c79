//! The backing stores of torture's files, and the switch that makes their
//! reads and writes fail on purpose.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmspace::BackingStore;

use super::FILE_TAG;

/// Word 0 of every page (the rest of a page is zero).
pub(super) struct StoreWords {
    pub(super) words: Mutex<Vec<u64>>,
    pub(super) fail: Arc<Injector>,
}

/// Shared failure switch of the stores.
pub(super) struct Injector {
    pub(super) rate: AtomicU64,
    pub(super) state: AtomicU64,
}

impl Injector {
    pub(super) fn fails(&self) -> bool {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return false;
        }
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        (x >> 32) < rate
    }

    pub(super) fn set(&self, p: f64) {
        self.rate.store(
            (p.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64,
            Ordering::Relaxed,
        );
    }
}

pub(super) struct FlakyStore(pub(super) Arc<StoreWords>);

impl BackingStore for FlakyStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.0.fail.fails() {
            return Err(io::Error::other("injected read error"));
        }
        let words = self.0.words.lock().unwrap();
        let w = words
            .get(pgoff as usize)
            .copied()
            .ok_or_else(|| io::Error::other("read past the end"))?;
        buf.fill(0);
        buf[..8].copy_from_slice(&w.to_le_bytes());
        Ok(())
    }

    fn write_page(&self, pgoff: u64, buf: &[u8]) -> io::Result<()> {
        if self.0.fail.fails() {
            return Err(io::Error::other("injected write error"));
        }
        let mut words = self.0.words.lock().unwrap();
        let slot = words
            .get_mut(pgoff as usize)
            .ok_or_else(|| io::Error::other("write past the end"))?;
        *slot = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        Ok(())
    }
}

/// The initial word of page `pgoff` of file `id`.
pub(super) fn file_word(id: u8, pgoff: u64) -> u64 {
    FILE_TAG | (u64::from(id) << 32) | pgoff
}
