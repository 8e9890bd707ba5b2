//! The in-memory log: the same contract as the file log, without the disk.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard};

use inbox_core::{EventEnvelope, SiteId};

use crate::{
    AppendError, Appended, EventLog, ExpectedVersion, ReadError, StoredEvent, check_append,
};

/// A log in memory: for tests, and for embedding when nothing needs to survive the process.
#[derive(Debug, Default)]
pub struct MemoryLog {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<StoredEvent>,
    sites: HashMap<SiteId, Vec<u64>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated (appends build the
        // batch first and push it whole), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventLog for MemoryLog {
    fn append(
        &self,
        site: &SiteId,
        expected: ExpectedVersion,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError> {
        let mut inner = self.lock();
        let actual = inner.sites.get(site).map_or(0, |v| v.len() as u64);
        check_append(site, expected, actual, events)?;
        let first_position = inner.events.len() as u64 + 1;
        let mut version = actual;
        let mut position = first_position;
        let mut stored = Vec::with_capacity(events.len());
        for e in events {
            version += 1;
            stored.push(StoredEvent {
                position,
                site_version: version,
                envelope: e.clone(),
            });
            position += 1;
        }
        let positions = inner.sites.entry(site.clone()).or_default();
        positions.extend(stored.iter().map(|e| e.position));
        inner.events.extend(stored);
        Ok(Appended {
            first_position,
            last_position: position - 1,
            site_version: version,
        })
    }

    fn read_site(
        &self,
        site: &SiteId,
        from_version: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let inner = self.lock();
        let Some(positions) = inner.sites.get(site) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from_version.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(positions
            .iter()
            .skip(skip)
            .take(max)
            .filter_map(|p| inner.events.get(usize::try_from(*p - 1).ok()?).cloned())
            .collect())
    }

    fn replay(
        &self,
        from_position: u64,
        f: &mut dyn FnMut(StoredEvent) -> ControlFlow<()>,
    ) -> Result<(), ReadError> {
        let events: Vec<StoredEvent> = {
            let inner = self.lock();
            let skip = usize::try_from(from_position.saturating_sub(1)).unwrap_or(usize::MAX);
            inner.events.iter().skip(skip).cloned().collect()
        };
        for e in events {
            if f(e).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn site_version(&self, site: &SiteId) -> Result<u64, ReadError> {
        Ok(self.lock().sites.get(site).map_or(0, |v| v.len() as u64))
    }

    fn last_position(&self) -> Result<u64, ReadError> {
        Ok(self.lock().events.len() as u64)
    }
}
