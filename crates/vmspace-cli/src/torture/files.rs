//! The files torture maps: two data files (mapped shared, written) and a
//! read-only file (mapped private).

use std::sync::{Arc, Mutex};

use vmspace::{File, FrameAllocator};

use super::store::{file_word, FlakyStore, Injector, StoreWords};
use super::{DATA_PAGES, RO_PAGES};

pub(super) struct Files {
    pub(super) data: Vec<Arc<File>>,
    pub(super) data_stores: Vec<Arc<StoreWords>>,
    pub(super) ro: Arc<File>,
    pub(super) ro_id: u64,
}

impl Files {
    pub(super) fn new(frames: &Arc<FrameAllocator>, injector: &Arc<Injector>) -> Files {
        let store = |id: u64, pages: u64| {
            Arc::new(StoreWords {
                words: Mutex::new((0..pages).map(|p| file_word(id, p)).collect()),
                fail: injector.clone(),
            })
        };
        let data_stores: Vec<_> = (1..=2).map(|id| store(id, DATA_PAGES)).collect();
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
        let ro_id = 3;
        let ro = Arc::new(File::new(
            RO_PAGES,
            Box::new(FlakyStore(store(ro_id, RO_PAGES))),
            frames.clone(),
        ));
        Files {
            data,
            data_stores,
            ro,
            ro_id,
        }
    }

    /// The initial word of a page of `object` (zero for shared memory).
    pub(super) fn initial_word(&self, object: &Arc<File>, pgoff: u64) -> u64 {
        match self.data.iter().position(|f| Arc::ptr_eq(f, object)) {
            Some(i) => file_word(i as u64 + 1, pgoff),
            None => 0,
        }
    }
}
