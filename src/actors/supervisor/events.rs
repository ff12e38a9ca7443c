//! Controller-wide change feeds for the supervisor to pass on to tenant actors: inotify on the
//! namespace directory (a tenant namespace deleted or replaced by hand) and PostgreSQL
//! `LISTEN meshwg` (a tenant's rows changed by another process; see migration V3).

use super::SupervisorMsg;
use crate::db::pending::Table;
use crate::kernel::watch::{Dirty, watch_netns_dir};
use crate::names::KernelPrefix;
use futures_util::StreamExt;
use ractor::ActorRef;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

/// Tells the supervisor about namespaces of ours appearing or disappearing.
pub fn netns_feed(
    prefix: KernelPrefix,
    supervisor: ActorRef<SupervisorMsg>,
) -> std::io::Result<JoinHandle<()>> {
    watch_netns_dir(move |name| match name {
        Some(name) => {
            if let Some(kid) = prefix.parse_netns(name) {
                let _ = supervisor.cast(SupervisorMsg::KickKid {
                    kid,
                    bits: Dirty::NETNS,
                });
            }
        }
        // The cheap poll trusts this feed to say a namespace went: lost events, look at all.
        None => {
            let _ = supervisor.cast(SupervisorMsg::KickAll { bits: Dirty::NETNS });
        }
    })
}

/// Listens for `meshwg` notifications, reconnecting with backoff; after a reconnect every
/// tenant re-reads the database (notifications sent meanwhile are lost).
pub fn database_feed(
    config: tokio_postgres::Config,
    supervisor: ActorRef<SupervisorMsg>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        let mut first = true;
        loop {
            match listen_once(&config, &supervisor, first).await {
                Ok(()) => wait = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "database notifications unavailable; full checks cover changes")
                }
            }
            first = false;
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    })
}

/// `<org id>` (migration V3) or `<org id> <transaction id>` (V5).
/// What a `meshwg` notification says: `<org id>`, `<org id> <txid>` (migration V5) or, for a
/// machine or policy row, `<org id> <txid> <table> <row id>` (V6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub org_id: Uuid,
    /// The transaction that made the change.
    pub xid: Option<u64>,
    /// The row changed, if it is one the tenant can read alone.
    pub row: Option<(Table, Uuid)>,
}

fn parse_payload(payload: &str) -> Option<Note> {
    let mut words = payload.split(' ');
    let org_id = words.next()?.parse().ok()?;
    let xid = match words.next() {
        Some(w) => Some(w.parse().ok()?),
        None => None,
    };
    let row = match words.next() {
        Some(table) => Some((Table::parse(table)?, words.next()?.parse().ok()?)),
        None => None,
    };
    words.next().is_none().then_some(Note { org_id, xid, row })
}

/// One `LISTEN` connection, until it breaks.
async fn listen_once(
    config: &tokio_postgres::Config,
    supervisor: &ActorRef<SupervisorMsg>,
    first: bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let result = client.batch_execute("LISTEN meshwg").await;
    if result.is_ok() {
        if !first {
            let _ = supervisor.cast(SupervisorMsg::KickAll {
                bits: Dirty::DATABASE,
            });
        }
        while let Some(payload) = rx.recv().await {
            if let Some(note) = parse_payload(&payload) {
                let _ = supervisor.cast(SupervisorMsg::Notified(note));
            }
        }
    }
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::{Note, parse_payload};
    use crate::db::pending::Table;
    use uuid::Uuid;

    #[test]
    fn payloads_with_and_without_a_transaction_or_a_row() {
        let id = Uuid::new_v4();
        let row = Uuid::new_v4();
        let note = |xid, row| {
            Some(Note {
                org_id: id,
                xid,
                row,
            })
        };
        assert_eq!(parse_payload(&id.to_string()), note(None, None));
        assert_eq!(parse_payload(&format!("{id} 7345")), note(Some(7345), None));
        assert_eq!(
            parse_payload(&format!("{id} 7345 policies {row}")),
            note(Some(7345), Some((Table::Policies, row)))
        );
        assert_eq!(
            parse_payload(&format!("{id} 1 machines {row}")),
            note(Some(1), Some((Table::Machines, row)))
        );
        for bad in [
            "",
            "x",
            &format!("{id} x"),
            &format!("{id} 1 2"),
            &format!("{id}  1"),
            &format!("{id} 1 orgs {row}"),
            &format!("{id} 1 policies"),
            &format!("{id} 1 policies x"),
            &format!("{id} 1 policies {row} 2"),
        ] {
            assert_eq!(parse_payload(bad), None, "{bad:?}");
        }
    }
}
