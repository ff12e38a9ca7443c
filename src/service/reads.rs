//! The read model of an org's machines: the rows (with the org row) as PostgreSQL last gave
//! them, merged with the tenant's last published kernel observation into typed views, and the
//! pages clients asked for kept serialized. A read that finds it current costs a lookup and an
//! `Arc` clone; none waits on a tenant actor or asks PostgreSQL.
//!
//! **When it is current.** The rows are keyed by the tenant's rows version (moved by every
//! controller change and by PostgreSQL `NOTIFY` for the org, see `actors::board`) and by a count
//! of the writes this API made to the org (bumped by every writing operation once it is
//! committed: some changes, such as confirming a new machine, send no notification). The merge
//! is keyed by the identity of the published observation (a new `Arc` per observation). Both
//! counts are read *before* the rows are, so a write that lands during a rebuild leaves the
//! model keyed to the older count, and the next read rebuilds.
//!
//! **Single flight.** One rebuild per org at a time; readers that find it stale meanwhile wait
//! for it instead of querying too. A change of the observation alone re-merges without a query.
//!
//! **ETag.** Every model gets a serial that never repeats in this process, and the process a
//! random epoch, so an entity tag names exactly one body: `"<epoch><serial>-<limit>-<cursor>"`.
//! A rebuild whose views equal the model before keeps that model's serial (and its pages).

use super::page::{Key, PageRequest};
use super::views::{Listed, MachineView, PeerView, StatusPeers};
use crate::actors::tenant::TenantStatus;
use crate::db::DbError;
use crate::db::machines::{self, Machine};
use crate::db::orgs::{self, Org};
use crate::keys::PublicKey;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use uuid::Uuid;

/// Serialized pages kept per model; beyond this the cache starts afresh.
const MAX_PAGES: usize = 64;

pub struct ReadModel {
    epoch: u32,
    serial: AtomicU64,
    orgs: RwLock<HashMap<Uuid, Arc<Slot>>>,
}

impl Default for ReadModel {
    fn default() -> Self {
        let mut b = [0u8; 4];
        // Without randomness the epoch is the start time: still distinct from the last process.
        let epoch = match getrandom::fill(&mut b) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => chrono::Utc::now().timestamp() as u32,
        };
        ReadModel {
            epoch,
            serial: AtomicU64::new(1),
            orgs: RwLock::new(HashMap::new()),
        }
    }
}

#[derive(Default)]
struct Slot {
    /// Writes this API committed to the org's rows.
    writes: AtomicU64,
    model: RwLock<Option<Arc<Model>>>,
    build: tokio::sync::Mutex<()>,
}

/// The rows of one org as read at one rows version.
pub struct Rows {
    version: (u64, u64),
    pub org: Arc<Org>,
    /// Confirmed machines in address order.
    pub machines: Vec<Machine>,
    by_key: HashMap<PublicKey, usize>,
}

impl Rows {
    /// The machine whose key a peer has.
    pub fn machine_by_key(&self, key: &PublicKey) -> Option<&Machine> {
        self.by_key.get(key).map(|i| &self.machines[*i])
    }
}

/// An org's machines with their kernel stats, and the pages of them already serialized.
pub struct Model {
    pub rows: Arc<Rows>,
    status: Option<Arc<TenantStatus>>,
    /// `<epoch><serial>`: what every entity tag of this model starts with.
    tag: String,
    /// In address order, as `rows.machines`.
    pub machines: Vec<MachineView>,
    by_id: HashMap<Uuid, usize>,
    /// Shared with the model before when the views came out the same (then so do the pages).
    pages: Arc<Pages>,
    /// The status's peers as of `status`, made on the first status read.
    status_peers: OnceLock<Arc<StatusPeers>>,
}

/// Serialized pages by (cursor position, limit).
type Pages = Mutex<HashMap<(Option<Ipv4Addr>, usize), Bytes>>;

/// What the tenant has published: its rows version and last observation (`None`: the
/// controller runs no actor for the org, so nothing can be cached for it).
struct Published {
    rows_version: u64,
    status: Option<Arc<TenantStatus>>,
}

fn same_status(a: &Option<Arc<TenantStatus>>, b: &Option<Arc<TenantStatus>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl ReadModel {
    /// Called by every operation that wrote an org's rows, once the write is committed.
    pub fn wrote(&self, org: Uuid) {
        if let Some(slot) = self.slot(org, false) {
            slot.writes.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn slot(&self, org: Uuid, create: bool) -> Option<Arc<Slot>> {
        if let Some(s) = self
            .orgs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&org)
        {
            return Some(s.clone());
        }
        create.then(|| {
            self.orgs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(org)
                .or_default()
                .clone()
        })
    }

    fn published(app: &super::App, org: Uuid) -> Option<Published> {
        let p = app.ctl.deps().board.get(org)?;
        let status = p.status.borrow().clone();
        Some(Published {
            rows_version: p.db_version(),
            status,
        })
    }

    /// The org row: from the current model when there is one, else from PostgreSQL.
    pub async fn org(&self, app: &super::App, org: Uuid) -> Result<Option<Arc<Org>>, DbError> {
        if let Some(p) = Self::published(app, org)
            && let Some(slot) = self.slot(org, false)
            && let Some(m) = slot
                .model
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
            && m.rows.version == (p.rows_version, slot.writes.load(Ordering::Acquire))
        {
            return Ok(Some(m.rows.org.clone()));
        }
        Ok(orgs::get(&app.pool, org).await?.map(Arc::new))
    }

    /// The current model of an org's machines (`None`: no such org), rebuilt if it is stale.
    pub async fn machines(
        &self,
        app: &super::App,
        org: Uuid,
    ) -> Result<Option<Arc<Model>>, DbError> {
        let Some(published) = Self::published(app, org) else {
            // No actor for the org (deleted, or not started): nothing to key a cache on.
            self.orgs
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&org);
            return Ok(load_rows(app, org, (0, 0))
                .await?
                .map(|rows| Arc::new(self.merge(Arc::new(rows), None))));
        };
        let slot = self.slot(org, true).expect("created");
        if let Some(m) = fresh(&slot, &published) {
            return Ok(Some(m));
        }
        let _building = slot.build.lock().await;
        // Read before the rows are: a write committed after this makes the result stale.
        let writes = slot.writes.load(Ordering::Acquire);
        let published = Self::published(app, org).unwrap_or(published);
        if let Some(m) = fresh(&slot, &published) {
            return Ok(Some(m));
        }
        let version = (published.rows_version, writes);
        let old = slot.model.read().unwrap_or_else(|e| e.into_inner()).clone();
        let rows = match old.as_ref().filter(|m| m.rows.version == version) {
            Some(m) => m.rows.clone(),
            None => match load_rows(app, org, version).await? {
                Some(rows) => Arc::new(rows),
                None => return Ok(None),
            },
        };
        let mut model = self.merge(rows, published.status);
        // Same views (an observation or a row change that shows nowhere in the list, such as a
        // policy change or a full check): same tag and pages, so pollers keep getting 304s.
        if let Some(old) = old.filter(|o| o.machines == model.machines) {
            model.tag.clone_from(&old.tag);
            model.pages = old.pages.clone();
        }
        let model = Arc::new(model);
        *slot.model.write().unwrap_or_else(|e| e.into_inner()) = Some(model.clone());
        Ok(Some(model))
    }

    fn merge(&self, rows: Arc<Rows>, status: Option<Arc<TenantStatus>>) -> Model {
        let machines: Vec<MachineView> = rows
            .machines
            .iter()
            .map(|m| MachineView::with_stats(m, status.as_deref()))
            .collect();
        let by_id = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        Model {
            rows,
            status,
            tag: format!("{:08x}{serial:x}", self.epoch),
            machines,
            by_id,
            pages: Default::default(),
            status_peers: OnceLock::new(),
        }
    }
}

impl ReadModel {
    /// The peers of an observation, named from the model's rows: made once per model when the
    /// observation is the model's own (the usual case), else afresh.
    pub fn status_peers(
        &self,
        model: Option<&Model>,
        status: &Arc<TenantStatus>,
    ) -> Arc<StatusPeers> {
        let make = || {
            let rows = model.map(|m| &m.rows);
            let views = status
                .peers
                .iter()
                .map(|(key, p)| PeerView::of(key, p, rows.and_then(|r| r.machine_by_key(key))))
                .collect();
            let serial = self.serial.fetch_add(1, Ordering::Relaxed);
            Arc::new(StatusPeers::new(
                views,
                format!("{:08x}{serial:x}", self.epoch),
            ))
        };
        match model {
            Some(m) if same_status(&m.status, &Some(status.clone())) => {
                m.status_peers.get_or_init(make).clone()
            }
            _ => make(),
        }
    }
}

/// The slot's model if it matches what is published now.
fn fresh(slot: &Slot, p: &Published) -> Option<Arc<Model>> {
    let writes = slot.writes.load(Ordering::Acquire);
    let model = slot.model.read().unwrap_or_else(|e| e.into_inner());
    let m = model.as_ref()?;
    (m.rows.version == (p.rows_version, writes) && same_status(&m.status, &p.status))
        .then(|| m.clone())
}

async fn load_rows(
    app: &super::App,
    org: Uuid,
    version: (u64, u64),
) -> Result<Option<Rows>, DbError> {
    let Some(org) = orgs::get(&app.pool, org).await? else {
        return Ok(None);
    };
    let machines = machines::list(&app.pool, org.id).await?;
    let by_key = machines
        .iter()
        .enumerate()
        .map(|(i, m)| (m.public_key, i))
        .collect();
    Ok(Some(Rows {
        version,
        org: Arc::new(org),
        machines,
        by_key,
    }))
}

impl Model {
    pub fn machine(&self, id: Uuid) -> Option<&MachineView> {
        self.by_id.get(&id).map(|i| &self.machines[*i])
    }

    /// The machines of a page and the cursor of the next (`None`: this is the last page).
    pub fn page(&self, req: &PageRequest<Ipv4Addr>) -> (&[MachineView], Option<String>) {
        let start = req
            .after
            .map_or(0, |a| self.machines.partition_point(|m| m.address <= a));
        let end = (start + req.limit).min(self.machines.len());
        let items = &self.machines[start..end];
        let next = (end < self.machines.len())
            .then(|| items.last().map(|m| m.address.encode()))
            .flatten();
        (items, next)
    }

    /// The entity tag of a page (quoted, as the header carries it).
    pub fn etag(&self, req: &PageRequest<Ipv4Addr>) -> String {
        let after = req.after.map_or(0, u32::from);
        format!("\"{}-{}-{after:x}\"", self.tag, req.limit)
    }

    /// The page as the API's JSON, serialized once per model.
    pub fn rendered(&self, req: &PageRequest<Ipv4Addr>) -> Bytes {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = pages.get(&(req.after, req.limit)) {
            return b.clone();
        }
        let (items, next) = self.page(req);
        let mut body = Vec::with_capacity(64 + items.len() * 280);
        let listed = Listed {
            key: "machines",
            items,
            next_cursor: next.as_deref(),
        };
        serde_json::to_writer(&mut body, &listed).expect("views always serialize");
        let body = Bytes::from(body);
        if pages.len() >= MAX_PAGES {
            pages.clear();
        }
        pages.insert((req.after, req.limit), body.clone());
        body
    }
}
