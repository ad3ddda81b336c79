//! The files torture maps, named by vmscript file ids: two data files
//! (mapped shared, written) and a read-only file (mapped private). File id
//! [`RO_REOPEN_ID`] is the read-only file opened afresh: a new `File` over
//! the same store at each `mmap`, whose empty page cache makes its pages be
//! read from the store again (the page caches of the others fill once and
//! stay full).

use std::sync::{Arc, Mutex};

use vmspace::{File, FrameAllocator};

use crate::backend::FileTable;

use super::inject::Injector;
use super::store::{file_word, FlakyStore, StoreWords};
use super::{DATA_PAGES, RO_PAGES};

/// The file ids of the data files.
pub(super) const DATA_IDS: [u8; 2] = [1, 2];
/// The file id of the read-only file.
pub(super) const RO_ID: u8 = 3;
/// The file id of a fresh open of the read-only file.
pub(super) const RO_REOPEN_ID: u8 = 4;

/// The files of a run.
pub(super) struct Files {
    pub(super) data: Vec<Arc<File>>,
    pub(super) data_stores: Vec<Arc<StoreWords>>,
    pub(super) ro: Arc<File>,
    ro_store: Arc<StoreWords>,
    frames: Arc<FrameAllocator>,
}

impl Files {
    pub(super) fn new(frames: &Arc<FrameAllocator>, injector: &Arc<Injector>) -> Files {
        let store = |id: u8, pages: u64| {
            Arc::new(StoreWords {
                words: Mutex::new((0..pages).map(|p| file_word(id, p)).collect()),
                fail: injector.clone(),
            })
        };
        let data_stores: Vec<_> = DATA_IDS.iter().map(|&id| store(id, DATA_PAGES)).collect();
        let data = data_stores
            .iter()
            .map(|s| File::new(DATA_PAGES, Box::new(FlakyStore(s.clone())), frames.clone()))
            .collect();
        let ro_store = store(RO_ID, RO_PAGES);
        let ro = File::new(
            RO_PAGES,
            Box::new(FlakyStore(ro_store.clone())),
            frames.clone(),
        );
        Files {
            data,
            data_stores,
            ro,
            ro_store,
            frames: frames.clone(),
        }
    }

    /// A new open of the read-only file: same store, empty page cache.
    fn reopen_ro(&self) -> Arc<File> {
        File::new(
            RO_PAGES,
            Box::new(FlakyStore(self.ro_store.clone())),
            self.frames.clone(),
        )
    }

    /// The initial word of a page of `object` (zero for shared memory).
    pub(super) fn initial_word(&self, object: &Arc<File>, pgoff: u64) -> u64 {
        match self.data.iter().position(|f| Arc::ptr_eq(f, object)) {
            Some(i) => file_word(DATA_IDS[i], pgoff),
            None => 0,
        }
    }
}

impl FileTable for Files {
    fn file(&self, id: u8) -> Option<Arc<File>> {
        match id {
            RO_ID => Some(self.ro.clone()),
            RO_REOPEN_ID => Some(self.reopen_ro()),
            _ => {
                let i = DATA_IDS.iter().position(|&d| d == id)?;
                Some(self.data[i].clone())
            }
        }
    }
}
