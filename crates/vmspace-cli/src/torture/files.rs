//! The files torture maps: two data files (mapped shared, written) and a
//! read-only file (mapped private), named by vmscript file ids.

use std::sync::{Arc, Mutex};

use vmspace::{File, FrameAllocator};

use crate::backend::FileTable;

use super::store::{file_word, FlakyStore, Injector, StoreWords};
use super::{DATA_PAGES, RO_PAGES};

/// The file ids of the data files.
pub(super) const DATA_IDS: [u8; 2] = [1, 2];
/// The file id of the read-only file.
pub(super) const RO_ID: u8 = 3;

/// The files of a run.
pub(super) struct Files {
    pub(super) data: Vec<Arc<File>>,
    pub(super) data_stores: Vec<Arc<StoreWords>>,
    pub(super) ro: Arc<File>,
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
            .map(|s| {
                Arc::new(File::new(
                    DATA_PAGES,
                    Box::new(FlakyStore(s.clone())),
                    frames.clone(),
                ))
            })
            .collect();
        let ro = Arc::new(File::new(
            RO_PAGES,
            Box::new(FlakyStore(store(RO_ID, RO_PAGES))),
            frames.clone(),
        ));
        Files {
            data,
            data_stores,
            ro,
        }
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
            _ => {
                let i = DATA_IDS.iter().position(|&d| d == id)?;
                Some(self.data[i].clone())
            }
        }
    }
}
