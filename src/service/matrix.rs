//! The reachability matrix of an org for one protocol and port: machines (or tags) × machines
//! (or tags), each cell what the chain does with a connection between them (the pure
//! `policy::matrix`), from the snapshot the tenant actor renders for the kernel.

use super::preview::{addrs, snapshot};
use super::{ApiError, App, Ctx};
use crate::policy::PortRange;
use crate::policy::analysis;
use crate::policy::matrix::{Matrix, Probe};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use uuid::Uuid;

/// Up to this many machines a matrix shows each; beyond, it groups them by tag.
pub const MATRIX_MACHINES: usize = 50;

/// `?proto=tcp|udp|icmp&port=&by=machine|tag` as given.
pub struct MatrixQuery<'a> {
    pub proto: Option<&'a str>,
    pub port: Option<&'a str>,
    pub by: Option<&'a str>,
}

/// A row (and the same column) of the matrix: a machine, a tag, or the untagged machines.
#[derive(Debug, Clone, Serialize)]
pub struct AxisItem {
    pub kind: &'static str,
    pub label: String,
    pub id: Option<Uuid>,
    pub address: Option<Ipv4Addr>,
    pub machines: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellView {
    /// `allow`, `deny`, `mixed` (a group whose pairs differ) or null (a machine to itself).
    pub verdict: Option<&'static str>,
    /// A pair that shows the verdict (for a mixed cell, a denied one), for Explain.
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixView {
    pub proto: &'static str,
    pub port: Option<u16>,
    pub by: &'static str,
    /// Asked for machines, but there were more than [`MATRIX_MACHINES`]: grouped by tag.
    pub grouped: bool,
    /// More than [`MATRIX_MACHINES`] tags: only the first ones (by name) are shown.
    pub truncated: bool,
    pub axis: Vec<AxisItem>,
    /// `cells[row][column]`: can the row's machines connect to the column's?
    pub cells: Vec<Vec<CellView>>,
}

fn probe(q: &MatrixQuery) -> Result<Probe, ApiError> {
    let proto = match q.proto.unwrap_or("icmp") {
        "tcp" => analysis::IPPROTO_TCP,
        "udp" => analysis::IPPROTO_UDP,
        "icmp" => analysis::IPPROTO_ICMP,
        _ => return Err(ApiError::invalid("proto", "tcp, udp or icmp")),
    };
    let port = match (proto, q.port.filter(|p| !p.is_empty())) {
        (analysis::IPPROTO_ICMP, None) => None,
        (analysis::IPPROTO_ICMP, Some(_)) => {
            return Err(ApiError::invalid("port", "only with tcp or udp"));
        }
        (_, None) => return Err(ApiError::invalid("port", "tcp and udp need a port")),
        (_, Some(p)) => match p.parse::<PortRange>() {
            Ok(r) if r.first == r.last => Some(r.first),
            _ => return Err(ApiError::invalid("port", "a port, 1 to 65535")),
        },
    };
    Ok(Probe { proto, port })
}

/// `GET /orgs/{org}/matrix`: who can connect to whom for one protocol and port.
pub async fn matrix(app: &App, ctx: &Ctx, q: MatrixQuery<'_>) -> Result<MatrixView, ApiError> {
    let probe = probe(&q)?;
    let by_tag = match q.by.unwrap_or("machine") {
        "machine" => false,
        "tag" => true,
        _ => return Err(ApiError::invalid("by", "machine or tag")),
    };
    let snap = snapshot(app, ctx).await?;
    let machines = addrs(&snap);
    let mut m = Matrix::new(&snap.policies, &machines, snap.org.default_action, probe);
    let grouped = !by_tag && snap.machines.len() > MATRIX_MACHINES;
    let mut sorted: Vec<&crate::db::machines::Machine> = snap.machines.iter().collect();
    sorted.sort_by_key(|x| x.address);
    let mut truncated = false;
    let (axis, groups): (Vec<AxisItem>, Vec<Vec<Uuid>>) = if by_tag || grouped {
        let mut tags: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
        let mut untagged = Vec::new();
        for x in &sorted {
            for t in &x.tags {
                tags.entry(t).or_default().push(x.id);
            }
            if x.tags.is_empty() {
                untagged.push(x.id);
            }
        }
        let mut items: Vec<(AxisItem, Vec<Uuid>)> = tags
            .into_iter()
            .map(|(t, ids)| {
                let item = AxisItem {
                    kind: "tag",
                    label: t.to_string(),
                    id: None,
                    address: None,
                    machines: ids.len(),
                };
                (item, ids)
            })
            .collect();
        if !untagged.is_empty() {
            let item = AxisItem {
                kind: "untagged",
                label: "(no tag)".into(),
                id: None,
                address: None,
                machines: untagged.len(),
            };
            items.push((item, untagged));
        }
        truncated = items.len() > MATRIX_MACHINES;
        items.truncate(MATRIX_MACHINES);
        items.into_iter().unzip()
    } else {
        sorted
            .iter()
            .map(|x| {
                let item = AxisItem {
                    kind: "machine",
                    label: x.name.clone(),
                    id: Some(x.id),
                    address: Some(x.address),
                    machines: 1,
                };
                (item, vec![x.id])
            })
            .unzip()
    };
    let address = |id: Uuid| snap.machines.iter().find(|x| x.id == id).map(|x| x.address);
    let cells = groups
        .iter()
        .map(|rows| {
            groups
                .iter()
                .map(|cols| {
                    let e = m.group(rows, cols);
                    CellView {
                        verdict: e.cell.map(|c| c.as_str()),
                        src: e.example.and_then(|(s, _)| address(s)),
                        dst: e.example.and_then(|(_, d)| address(d)),
                    }
                })
                .collect()
        })
        .collect();
    Ok(MatrixView {
        proto: match probe.proto {
            analysis::IPPROTO_TCP => "tcp",
            analysis::IPPROTO_UDP => "udp",
            _ => "icmp",
        },
        port: probe.port,
        by: if by_tag || grouped { "tag" } else { "machine" },
        grouped,
        truncated,
        axis,
        cells,
    })
}
