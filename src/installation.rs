//! Kernel objects belong to the installation (the database) that made them.
//!
//! A controller pointed at the wrong database — an empty one, another installation's, an old
//! backup — would see every running tenant as an orphan and remove it. Two guards prevent that:
//!
//! - **The marker.** `RUNTIME_DIR/<prefix>.installation` names the installation whose objects
//!   carry this prefix on this host. A controller whose database is another installation refuses
//!   to start and touches nothing.
//! - **Accountability.** Kernel ids come from an identity column, so a database knows every id it
//!   ever issued. An object with an id it never issued is not its orphan but somebody else's
//!   tenant (or one made after the backup it was restored from): the controller refuses to start.
//!   Orphans it can account for (its own deleted tenants) are removed, a few at a time; more at
//!   once than [`MAX_AUTO_REMOVALS`] are left alone and reported.
//!
//! `meshwg serve --remove-unowned` overrides both, once, for an operator who means it: every
//! object with the prefix that the database does not own is removed, and the marker rewritten.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// More orphans than this at one start are not removed without `--remove-unowned`.
pub const MAX_AUTO_REMOVALS: usize = 3;

/// What to do with kernel objects the database does not own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Orphans {
    /// Remove the database's own orphans (a few); refuse to start beside unknown objects.
    #[default]
    Careful,
    /// Remove every object with our prefix that the database does not own (`--remove-unowned`).
    RemoveUnowned,
}

/// Kernel ids found with our prefix, sorted by what may be done with them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sorted {
    /// Issued by this database, org gone: its own orphans.
    pub orphans: Vec<i64>,
    /// Never issued by this database: another installation's, or newer than this database.
    pub unknown: Vec<i64>,
}

/// Sorts the kernel ids `found` that no org of the database (`owned`, any state) holds, given the
/// highest id the database ever issued.
pub fn sort(found: &BTreeSet<i64>, owned: &BTreeSet<i64>, last_issued: i64) -> Sorted {
    let (orphans, unknown) = found
        .difference(owned)
        .partition(|kid| **kid <= last_issued);
    Sorted { orphans, unknown }
}

pub fn marker_path(runtime_dir: &Path, prefix: &str) -> PathBuf {
    runtime_dir.join(format!("{prefix}.installation"))
}

/// The installation named by the marker, if there is one.
pub fn read_marker(path: &Path) -> Result<Option<Uuid>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{}: not an installation id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the marker (atomically: a half-written marker would refuse every start).
pub fn write_marker(path: &Path, id: Uuid) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("installation.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_the_database_never_issued_are_unknown_not_orphans() {
        let found = BTreeSet::from([1, 2, 3, 7, 8]);
        let owned = BTreeSet::from([2, 3]);
        assert_eq!(
            sort(&found, &owned, 5),
            Sorted {
                orphans: vec![1],
                unknown: vec![7, 8]
            }
        );
        // An empty database issued nothing: everything found is unknown.
        let s = sort(&found, &BTreeSet::new(), 0);
        assert!(s.orphans.is_empty());
        assert_eq!(s.unknown, vec![1, 2, 3, 7, 8]);
    }

    #[test]
    fn marker_round_trip() {
        let dir = std::env::temp_dir().join(format!("mwg-marker-{}", Uuid::new_v4()));
        let path = marker_path(&dir, "mwg");
        assert_eq!(read_marker(&path), Ok(None));
        let id = Uuid::new_v4();
        write_marker(&path, id).unwrap();
        assert_eq!(read_marker(&path), Ok(Some(id)));
        std::fs::write(&path, "garbage").unwrap();
        assert!(read_marker(&path).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
