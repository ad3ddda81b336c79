//! The backing stores of torture's files: one word per page, kept where
//! the final check can read it, behind a [`BackingStore`] whose reads and
//! writes fail when the [`Injector`] says so.

use std::io;
use std::sync::{Arc, Mutex};

use vmspace::BackingStore;

use super::inject::Injector;
use super::FILE_TAG;

/// The content of a store: word 0 of every page (the rest of a page is
/// zero), and the switch that makes its reads and writes fail.
pub(super) struct StoreWords {
    pub(super) words: Mutex<Vec<u64>>,
    pub(super) fail: Arc<Injector>,
}

/// A store over [`StoreWords`] whose reads and writes fail when its
/// [`Injector`] says so.
pub(super) struct FlakyStore(pub(super) Arc<StoreWords>);

impl BackingStore for FlakyStore {
    fn read_page(&self, pgoff: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.0.fail.read_fails() {
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
        if self.0.fail.write_fails() {
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
