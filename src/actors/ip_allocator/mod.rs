//! Serialises overlay address allocation: one message at a time picks the lowest free address of
//! a tenant network and inserts the machine in the same transaction.

use super::CoreError;
use crate::db::machines::{self, Machine, NewMachine};
use crate::db::{DbError, Pool};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct IpAllocator;

pub enum IpAllocatorMsg {
    /// Inserts the machine pending for `pending_for` (see `db::pending`), unless the caller gave
    /// up waiting before this message's turn came (`deadline`).
    Allocate {
        org_id: Uuid,
        machine: NewMachine,
        pending_for: Duration,
        deadline: Instant,
        /// The org's machine quota.
        max: u32,
        reply: RpcReplyPort<Result<Machine, CoreError>>,
    },
}

impl Actor for IpAllocator {
    type Msg = IpAllocatorMsg;
    type State = Pool;
    type Arguments = Pool;

    async fn pre_start(
        &self,
        _myself: ActorRef<IpAllocatorMsg>,
        pool: Pool,
    ) -> Result<Pool, ActorProcessingErr> {
        Ok(pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<IpAllocatorMsg>,
        msg: IpAllocatorMsg,
        pool: &mut Pool,
    ) -> Result<(), ActorProcessingErr> {
        let IpAllocatorMsg::Allocate {
            org_id,
            machine,
            pending_for,
            deadline,
            max,
            reply,
        } = msg;
        if Instant::now() >= deadline {
            // Nobody waits for this machine any more: inserting it would make a row nobody owns.
            let _ = reply.send(Err(CoreError::Timeout));
            return Ok(());
        }
        let insert = || machines::insert_lowest_free(pool, org_id, &machine, pending_for, max);
        let mut result = insert().await;
        // Another process may have taken the address between our read and insert; the unique
        // constraint caught it, so try again with a fresh view.
        for _ in 0..3 {
            match &result {
                Err(DbError::Conflict(c)) if c.contains("address") => {
                    result = insert().await;
                }
                _ => break,
            }
        }
        let _ = reply.send(result.map_err(|e| match e {
            DbError::Conflict(c) if c.contains("public_key") => CoreError::Conflict(
                "a machine with this public key already exists in this org".into(),
            ),
            e => e.into(),
        }));
        Ok(())
    }
}
