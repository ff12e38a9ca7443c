//! The OpenAPI 3.1 document, generated from the router's table (paths, methods, bodies, success
//! statuses) plus the schemas below, so it always lists exactly the routes that exist.

use super::router::{Op, ROUTES};
use crate::service::page::{AUDIT_DEFAULT_LIMIT, DEFAULT_LIMIT, MAX_CURSOR_LEN, MAX_LIMIT};
use serde_json::{Value, json};

fn schemas() -> Value {
    let uuid = json!({"type": "string", "format": "uuid"});
    let time = json!({"type": "string", "format": "date-time"});
    let name = json!({"type": "string", "minLength": 1, "maxLength": 64, "description": "any script; no control characters"});
    let selector = json!({"oneOf": [
        {"const": "any"},
        {"type": "object", "required": ["machine"], "additionalProperties": false, "properties": {"machine": uuid}},
        {"type": "object", "required": ["tag"], "additionalProperties": false, "properties": {"tag": {"type": "string", "pattern": "^[\\p{L}\\p{N}_.:-]{1,64}$"}}},
        {"type": "object", "required": ["cidr"], "additionalProperties": false, "properties": {"cidr": {"type": "string", "description": "an IPv4 network inside the org network"}}}
    ]});
    let action = json!({"type": "string", "enum": ["allow", "deny"]});
    let protocol = json!({"type": "string", "enum": ["any", "tcp", "udp", "icmp"]});
    let ports = json!({"type": ["string", "null"], "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$", "description": "\"443\" or \"8000-8100\"; tcp and udp only"});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let nullable_int = json!({"type": ["integer", "null"]});
    let user = json!({"type": "object", "properties": {"id": uuid, "email": {"type": "string"}, "role": {"type": "string", "enum": ["operator", "admin", "member"]}, "org_id": {"type": ["string", "null"], "format": "uuid"}, "created_at": time}});
    let org = json!({"type": "object", "properties": {
        "id": uuid, "name": name, "cidr": {"type": "string"}, "hub_address": {"type": "string"},
        "listen_port": {"type": "integer"}, "hub_public_key": {"type": "string"},
        "state": {"type": "string", "enum": ["creating", "active", "deleting"]},
        "default_action": action, "created_at": time}});
    let machine = json!({"type": "object", "properties": {
        "id": uuid, "name": name, "address": {"type": "string"}, "public_key": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}}, "created_at": time,
        "last_handshake_at": nullable_time, "rx_bytes": nullable_int, "tx_bytes": nullable_int,
        "endpoint": {"type": ["string", "null"]}}});
    let policy = json!({"type": "object", "properties": {
        "id": uuid, "name": {"type": "string"}, "priority": {"type": "integer"}, "action": action,
        "src": {"$ref": "#/components/schemas/Selector"}, "dst": {"$ref": "#/components/schemas/Selector"},
        "protocol": protocol, "ports": ports, "enabled": {"type": "boolean"}, "created_at": time,
        "packets": {"type": "integer"}, "bytes": {"type": "integer"}}});
    let next = json!({"type": ["string", "null"], "description": "the cursor of the next page; null on the last page"});
    let mut m = serde_json::Map::new();
    m.insert("Error".into(), json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}));
    m.insert(
        "Health".into(),
        json!({"type": "object", "properties": {"status": {"type": "string"}}}),
    );
    m.insert("Login".into(), json!({"type": "object", "required": ["email", "password"], "additionalProperties": false, "properties": {"email": {"type": "string"}, "password": {"type": "string", "minLength": 8, "maxLength": 1024}}}));
    m.insert(
        "LoginResult".into(),
        json!({"type": "object", "properties": {"user": user, "csrf_token": {"type": "string"}}}),
    );
    m.insert(
        "Me".into(),
        json!({"type": "object", "properties": {"user": user}}),
    );
    m.insert("PasswordChange".into(), json!({"type": "object", "required": ["current_password", "new_password"], "additionalProperties": false, "properties": {"current_password": {"type": "string"}, "new_password": {"type": "string", "minLength": 8, "maxLength": 1024}}}));
    m.insert("User".into(), json!(user));
    m.insert("UserCreate".into(), json!({"type": "object", "required": ["email", "password", "role"], "additionalProperties": false, "properties": {"email": {"type": "string"}, "password": {"type": "string", "minLength": 8, "maxLength": 1024}, "role": {"type": "string", "enum": ["admin", "member"]}}}));
    m.insert(
        "UserList".into(),
        json!({"type": "object", "required": ["users", "next_cursor"], "properties": {"users": {"type": "array", "items": user}, "next_cursor": next}}),
    );
    m.insert("Org".into(), json!(org));
    m.insert("OrgCreate".into(), json!({"type": "object", "required": ["name"], "additionalProperties": false, "properties": {"name": name, "cidr": {"type": "string", "default": "10.100.0.0/16", "description": "private IPv4, /8 to /28"}, "default_action": {"type": "string", "enum": ["allow", "deny"], "default": "allow"}}}));
    m.insert("OrgPatch".into(), json!({"type": "object", "additionalProperties": false, "properties": {"name": name, "default_action": action}}));
    m.insert(
        "OrgList".into(),
        json!({"type": "object", "properties": {"orgs": {"type": "array", "items": org}}}),
    );
    m.insert("Machine".into(), json!(machine));
    m.insert("MachineCreate".into(), json!({"type": "object", "required": ["name"], "additionalProperties": false, "properties": {"name": name, "public_key": {"type": ["string", "null"], "description": "32 bytes, base64; without it (or null) the server makes the key pair and returns the private key once"}, "tags": {"type": "array", "maxItems": 32, "items": {"type": "string"}}}}));
    m.insert("MachineCreated".into(), json!({"type": "object", "properties": {"machine": machine, "config": {"type": "string", "description": "wg-quick configuration; holds the private key if the server made it (shown this once)"}, "config_qr_svg": {"type": "string"}}}));
    m.insert("MachineRotateKey".into(), json!({"type": "object", "additionalProperties": false, "properties": {"public_key": {"type": ["string", "null"], "description": "32 bytes, base64: the machine's own new key; without it (or without a body) the server makes the key pair and returns the private key once"}}}));
    m.insert("MachineRotated".into(), json!({"type": "object", "required": ["machine"], "properties": {"machine": machine, "config": {"type": "string", "description": "wg-quick configuration with the new private key (only when the server made the key pair; shown this once)"}, "config_qr_svg": {"type": "string"}}}));
    let batch_ids = json!({"type": "array", "minItems": 1, "maxItems": 1000, "items": uuid, "description": "machines of the org; repeated ids count once"});
    m.insert("MachineBatch".into(), json!({"oneOf": [
        {"type": "object", "required": ["action", "ids", "tag"], "additionalProperties": false, "properties": {"action": {"type": "string", "enum": ["tag_add", "tag_remove"]}, "ids": batch_ids, "tag": {"type": "string", "pattern": "^[\\p{L}\\p{N}_.:-]{1,64}$"}}},
        {"type": "object", "required": ["action", "ids"], "additionalProperties": false, "properties": {"action": {"const": "delete"}, "ids": batch_ids}}
    ]}));
    m.insert("MachineBatchDone".into(), json!({"type": "object", "required": ["action", "count", "machines"], "properties": {"action": {"type": "string", "enum": ["tag_add", "tag_remove", "delete"]}, "count": {"type": "integer"}, "machines": {"type": "array", "items": machine, "description": "as they are now (deleted ones: as they were)"}}}));
    m.insert("Timeline".into(), json!({"type": "object", "required": ["entries", "next_cursor"], "properties": {"entries": {"type": "array", "items": {"type": "object", "required": ["at", "source", "kind", "summary", "count"], "properties": {"at": time, "source": {"type": "string", "enum": ["reconciler", "audit"]}, "kind": {"type": "string", "description": "repair, failure, restart, or the audit action"}, "summary": {"type": "string"}, "count": {"type": "integer", "description": "identical reconciler events within 60 s are one entry"}, "first_at": time, "duration_ms": {"type": "integer"}, "actor": {"type": "string"}, "detail": {"description": "audit entries: their detail; reconciler entries: actions or error, for the operator only"}}}}, "next_cursor": {"type": ["string", "null"], "description": "pass as ?before= for older entries"}}}));
    m.insert("Invariants".into(), json!({"type": "object", "required": ["verified_at", "unverified", "checks"], "properties": {"verified_at": nullable_time, "unverified": {"type": "boolean", "description": "the last reconcile failed: nothing is verified"}, "checks": {"type": "array", "items": {"type": "object", "required": ["id", "label", "pass", "last_failed_at"], "properties": {"id": {"type": "string", "enum": ["forward", "links", "nat", "routes", "ipv6", "allowed_ips", "hub_key"]}, "label": {"type": "string"}, "pass": {"type": ["boolean", "null"]}, "last_failed_at": nullable_time, "detail": {"type": "string", "description": "what the kernel showed (operator only)"}}}}}}));
    m.insert("MachinePatch".into(), json!({"type": "object", "additionalProperties": false, "properties": {"name": name, "tags": {"type": "array", "items": {"type": "string"}}}}));
    m.insert(
        "MachineList".into(),
        json!({"type": "object", "required": ["machines", "next_cursor"], "properties": {"machines": {"type": "array", "items": machine}, "next_cursor": next}}),
    );
    m.insert("Selector".into(), json!(selector));
    m.insert("Policy".into(), json!(policy));
    m.insert("PolicyCreate".into(), json!({"type": "object", "required": ["action", "src", "dst"], "additionalProperties": false, "properties": {"name": {"type": "string", "maxLength": 64}, "priority": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 100, "description": "lower first; first match wins"}, "action": action, "src": {"$ref": "#/components/schemas/Selector"}, "dst": {"$ref": "#/components/schemas/Selector"}, "protocol": protocol, "ports": ports, "enabled": {"type": "boolean", "default": true}}}));
    m.insert("PolicyMove".into(), json!({"type": "object", "additionalProperties": false, "required": ["way"], "properties": {"way": {"type": "string", "enum": ["up", "down"]}}}));
    m.insert("PolicyPatch".into(), json!({"type": "object", "additionalProperties": false, "properties": {"name": {"type": "string"}, "priority": {"type": "integer"}, "action": action, "src": {"$ref": "#/components/schemas/Selector"}, "dst": {"$ref": "#/components/schemas/Selector"}, "protocol": protocol, "ports": ports, "enabled": {"type": "boolean"}}}));
    m.insert(
        "PolicyList".into(),
        json!({"type": "object", "required": ["policies", "next_cursor"], "properties": {"policies": {"type": "array", "items": policy}, "next_cursor": next}}),
    );
    let policy_ref = json!({"type": "object", "required": ["number", "id"], "properties": {"number": {"type": "integer", "description": "the policy's place in evaluation order (1 = first), disabled ones included, as on the policies page"}, "id": uuid}});
    m.insert("PolicyAnalysis".into(), json!({"type": "object", "required": ["complete", "findings"], "properties": {
        "complete": {"type": "boolean", "description": "false when the chain was too large to analyse (no findings then)"},
        "findings": {"type": "array", "items": {"type": "object", "required": ["policy", "kind"], "properties": {
            "policy": policy_ref,
            "kind": {"type": "string", "enum": ["shadowed", "redundant", "matches_nothing"], "description": "shadowed: earlier rules decide every packet it matches, `by` with the other verdict; redundant: removing it changes no verdict (`with` and/or the default decide the same); matches_nothing: no packet between the org's current machines"},
            "by": {"type": "array", "items": policy_ref}, "with": {"type": "array", "items": policy_ref}, "default": {"type": "boolean"}}}}}}));
    m.insert("PolicyPreview".into(), json!({"oneOf": [
        {"type": "object", "required": ["op", "policy"], "additionalProperties": false, "properties": {"op": {"const": "create"}, "policy": {"$ref": "#/components/schemas/PolicyCreate"}}},
        {"type": "object", "required": ["op", "id", "changes"], "additionalProperties": false, "properties": {"op": {"const": "update"}, "id": uuid, "changes": {"$ref": "#/components/schemas/PolicyPatch"}}},
        {"type": "object", "required": ["op", "id"], "additionalProperties": false, "properties": {"op": {"const": "delete"}, "id": uuid}},
        {"type": "object", "required": ["op", "action"], "additionalProperties": false, "properties": {"op": {"const": "default"}, "action": action}}
    ], "description": "the change as its own operation would take it, checked the same way (a bad one is the same 400; an unknown id a 404)"}));
    let machine_ref = json!({"type": "object", "required": ["id", "name", "address"], "properties": {"id": uuid, "name": {"type": "string"}, "address": {"type": "string"}}});
    m.insert("PolicyPreviewResult".into(), json!({"type": "object", "required": ["line", "rules", "flips", "flipped_pairs", "complete", "analysis"], "properties": {
        "line": {"type": ["string", "null"], "description": "the `-A MWG-ACL …` line of the created or updated policy (a new policy carries the nil id)"},
        "rules": {"type": "object", "required": ["removed", "added", "reordered", "after"], "properties": {
            "removed": {"type": "array", "items": {"type": "string"}}, "added": {"type": "array", "items": {"type": "string"}},
            "reordered": {"type": "boolean", "description": "lines on both sides changed places"},
            "after": {"type": "array", "items": {"type": "string"}, "description": "the whole chain after the change"}}},
        "flips": {"type": "array", "description": "per port range that every policy treats alike and direction", "items": {"type": "object", "required": ["label", "protocol", "ports", "port", "from", "to", "pairs", "sample"], "properties": {
            "label": {"type": "string", "description": "tcp/22, udp/1-52, icmp, other"}, "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp", "other"]},
            "ports": {"type": ["string", "null"]}, "port": {"type": ["integer", "null"], "description": "a port in the range to probe with"},
            "from": action, "to": action, "pairs": {"type": "integer", "description": "(source, destination) machine pairs whose connections flip: the first packet as new and the replies (to client ports 32768-60999) as established must pass"},
            "sample": {"type": "array", "maxItems": crate::policy::impact::MAX_SAMPLE, "items": {"type": "object", "required": ["src", "dst"], "properties": {"src": machine_ref, "dst": machine_ref}}}}}},
        "flipped_pairs": {"type": "integer", "description": "distinct pairs that flip on some port"},
        "complete": {"type": "boolean", "description": "false when the org was too large to compare or the flips were cut"},
        "analysis": {"$ref": "#/components/schemas/PolicyAnalysis"}}}));
    m.insert("Matrix".into(), json!({"type": "object", "required": ["proto", "port", "by", "grouped", "truncated", "axis", "cells"], "properties": {
        "truncated": {"type": "boolean", "description": "more than 50 tags: only the first 50 by name"},
        "proto": {"type": "string", "enum": ["tcp", "udp", "icmp"]}, "port": {"type": ["integer", "null"]},
        "by": {"type": "string", "enum": ["machine", "tag"]},
        "grouped": {"type": "boolean", "description": "machines were asked for, but there are more than 50: grouped by tag"},
        "axis": {"type": "array", "description": "the rows, and in the same order the columns", "items": {"type": "object", "required": ["kind", "label", "id", "address", "machines"], "properties": {
            "kind": {"type": "string", "enum": ["machine", "tag", "untagged"]}, "label": {"type": "string"},
            "id": {"type": ["string", "null"], "format": "uuid"}, "address": {"type": ["string", "null"]}, "machines": {"type": "integer"}}}},
        "cells": {"type": "array", "description": "cells[row][column]: can the row's machines connect to the column's (first packet as new, replies as established)", "items": {"type": "array", "items": {"type": "object", "required": ["verdict", "src", "dst"], "properties": {
            "verdict": {"type": ["string", "null"], "enum": ["allow", "deny", "mixed", null], "description": "null: a machine to itself"},
            "src": {"type": ["string", "null"], "description": "a pair showing the verdict (for mixed, a denied one), for Explain"}, "dst": {"type": ["string", "null"]}}}}}}}));
    let hub = json!({"type": "object", "required": ["up", "listen_port", "public_key", "address", "name", "netns", "device"], "properties": {
        "up": {"type": "boolean"}, "listen_port": {"type": "integer"}, "public_key": {"type": ["string", "null"]},
        "address": {"type": ["string", "null"], "description": "null while PostgreSQL cannot be read"},
        "name": {"type": ["string", "null"]}, "netns": {"type": "string"}, "device": {"type": "string"}}});
    let peer = json!({"type": "object", "required": ["machine_id", "name", "public_key", "allowed_ips", "endpoint", "last_handshake_at", "rx_bytes", "tx_bytes"], "properties": {
        "machine_id": {"type": ["string", "null"], "format": "uuid"}, "name": {"type": ["string", "null"]},
        "public_key": {"type": "string"}, "allowed_ips": {"type": "array", "items": {"type": "string"}},
        "endpoint": {"type": ["string", "null"]}, "last_handshake_at": nullable_time,
        "rx_bytes": {"type": "integer"}, "tx_bytes": {"type": "integer"}}});
    let rule = json!({"type": "object", "required": ["kind", "policy_id", "packets", "bytes"], "properties": {
        "kind": {"type": "string", "enum": ["policy", "established", "default"]},
        "policy_id": {"type": ["string", "null"]}, "packets": {"type": "integer"}, "bytes": {"type": "integer"}}});
    m.insert("Status".into(), json!({"type": "object", "required": ["hub", "peers", "rules", "observed_at", "last_error"], "properties": {"hub": hub, "peers": {"type": "array", "items": peer}, "rules": {"type": "array", "items": rule}, "observed_at": time, "last_error": {"type": ["string", "null"]}}}));
    let series = json!({"type": "array", "maxItems": 120, "items": {"type": "integer", "minimum": 0}, "description": "growth per step, oldest first; the last item is the step ending at newest_at"});
    m.insert("History".into(), json!({"type": "object", "required": ["step_seconds", "newest_at", "machines", "policies"], "properties": {
        "step_seconds": {"type": "integer"}, "newest_at": nullable_time,
        "machines": {"type": "array", "items": {"type": "object", "required": ["machine_id", "name", "public_key", "since", "rx_bytes", "tx_bytes"], "properties": {
            "machine_id": {"type": ["string", "null"], "format": "uuid"}, "name": {"type": ["string", "null"]}, "public_key": {"type": "string"},
            "since": time, "rx_bytes": series, "tx_bytes": series}}},
        "policies": {"type": "array", "items": {"type": "object", "required": ["kind", "policy_id", "since", "packets", "bytes", "last_hit_at", "never_hit_since"], "properties": {
            "kind": {"type": "string", "enum": ["policy", "established", "default"]}, "policy_id": {"type": ["string", "null"]},
            "since": time, "packets": series, "bytes": series,
            "last_hit_at": nullable_time, "never_hit_since": nullable_time}}}}}));
    m.insert(
        "Explain".into(),
        explain_schema(&json!({"$ref": "#/components/schemas/Selector"})),
    );
    let watch = watch_schema();
    m.insert("WatchCreate".into(), json!({"type": "object", "required": ["src", "dst", "proto"], "additionalProperties": false, "properties": {
        "src": {"type": "string", "minLength": 1, "description": "a machine's id or name, or an IPv4 address inside the org network"},
        "dst": {"type": "string", "minLength": 1}, "proto": {"type": "string", "enum": ["tcp", "udp", "icmp"]},
        "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535, "description": "required with tcp and udp, refused with icmp"},
        "ttl_secs": {"type": ["integer", "null"], "minimum": 1, "maximum": 120, "default": 60}}}));
    m.insert(
        "WatchList".into(),
        json!({"type": "object", "required": ["watches", "max"], "properties": {"watches": {"type": "array", "items": watch.clone()}, "max": {"type": "integer"}}}),
    );
    m.insert("Watch".into(), watch);
    m.insert("AuditList".into(), json!({"type": "object", "required": ["entries", "next_cursor"], "properties": {"entries": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}, "at": time, "actor_id": {"type": ["string", "null"]}, "actor_email": {"type": ["string", "null"]}, "action": {"type": "string"}, "target_type": {"type": "string"}, "target_id": {"type": ["string", "null"]}, "detail": {"type": "object"}}}}, "next_cursor": next}}));
    Value::Object(m)
}

/// A watch as `POST`/`GET /orgs/{org}/watch` answer it.
fn watch_schema() -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let end = json!({"type": "object", "required": ["address", "machine_id", "name"], "properties": {
        "address": {"type": "string"}, "machine_id": {"type": ["string", "null"], "format": "uuid"},
        "name": {"type": ["string", "null"]}}});
    json!({"type": "object", "required": ["id", "src", "dst", "protocol", "port", "created_at", "expires_at", "expires_in_secs", "packets", "bytes", "verdict", "decided_by", "number", "reachable", "summary"], "properties": {
        "id": {"type": "string", "format": "uuid"}, "src": end, "dst": end,
        "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp"]}, "port": {"type": ["integer", "null"]},
        "created_at": time, "expires_at": time, "expires_in_secs": {"type": "integer"},
        "packets": {"type": "integer", "description": "packets of the path that reached the hub since the watch began"},
        "bytes": {"type": "integer"},
        "verdict": {"type": "string", "enum": ["allow", "deny"]},
        "decided_by": {"type": "object", "required": ["kind"], "properties": {
            "kind": {"type": "string", "enum": ["policy", "established", "default"]},
            "policy": {"type": "string", "format": "uuid"}}},
        "number": {"type": ["integer", "null"], "description": "the deciding policy's number on the policies page"},
        "reachable": {"type": "boolean"}, "summary": {"type": "string"}}})
}

/// `GET /orgs/{org}/explain`'s answer.
fn explain_schema(selector: &Value) -> Value {
    let time = json!({"type": "string", "format": "date-time"});
    let nullable_time = json!({"type": ["string", "null"], "format": "date-time"});
    let end = json!({"type": "object", "required": ["address", "machine_id", "name"], "properties": {
        "address": {"type": "string"}, "machine_id": {"type": ["string", "null"], "format": "uuid"},
        "name": {"type": ["string", "null"]}}});
    let why = json!({"type": "object", "required": ["ok", "rule", "why"], "properties": {
        "ok": {"type": "boolean"}, "rule": {"type": "string", "description": "the row's condition: any, tag web, machine laptop, 10.100.0.0/24, tcp, 22"},
        "why": {"type": "string"}}});
    let decider = json!({"type": "object", "required": ["kind"], "properties": {
        "kind": {"type": "string", "enum": ["policy", "established", "default"]},
        "policy": {"type": "string", "format": "uuid"}}});
    let row = json!({"type": "object", "required": ["number", "decider", "action", "src", "dst", "protocol", "port", "state", "matched", "summary", "name", "rule"], "properties": {
        "number": {"type": ["integer", "null"], "description": "the policy's number on the policies page; null for the implicit rows"},
        "decider": decider, "action": {"type": "string", "enum": ["allow", "deny"]},
        "src": why, "dst": why, "protocol": why, "port": why,
        "state": {"oneOf": [why, {"type": "null"}], "description": "the conntrack condition of the established row"},
        "matched": {"type": "boolean"}, "summary": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "rule": {"type": ["string", "null"], "description": "the rule line as the kernel holds it (iptables-save); null if the kernel has none"}}});
    let trace = json!({"type": "object", "required": ["verdict", "decided_by", "number", "rows"], "properties": {
        "verdict": {"type": "string", "enum": ["allow", "deny"]}, "decided_by": decider,
        "number": {"type": ["integer", "null"]}, "rows": {"type": "array", "items": row}}});
    let peer = json!({"type": ["object", "null"], "required": ["machine_id", "name", "peer_present", "last_handshake_at", "handshake_age_secs", "presence", "endpoint", "allowed_ips", "allowed_ips_ok"], "properties": {
        "machine_id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
        "peer_present": {"type": "boolean"}, "last_handshake_at": nullable_time,
        "handshake_age_secs": {"type": ["integer", "null"]},
        "presence": {"type": "string", "enum": ["online", "idle", "stale", "never"]},
        "endpoint": {"type": ["string", "null"]}, "allowed_ips": {"type": "array", "items": {"type": "string"}},
        "allowed_ips_ok": {"type": "boolean", "description": "AllowedIPs is exactly the machine's /32"}}});
    json!({"type": "object", "required": ["src", "dst", "protocol", "port", "verdict", "reachable", "reply_needed", "forward", "reply", "counter", "data_plane", "fix"], "properties": {
        "src": end, "dst": end,
        "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp"]},
        "port": {"type": ["integer", "null"]},
        "verdict": {"type": "string", "enum": ["allow", "deny"], "description": "the first packet's verdict"},
        "reachable": {"type": "boolean", "description": "the first packet passes, and its reply too where the protocol needs one (tcp, icmp)"},
        "reply_needed": {"type": "boolean"},
        "forward": trace, "reply": trace,
        "counter": {"type": ["object", "null"], "required": ["rule", "packets", "bytes", "window", "read_at", "recent"], "properties": {
            "rule": {"type": "string"}, "packets": {"type": "integer"}, "bytes": {"type": "integer"},
            "window": {"type": "string", "enum": ["total"], "description": "total: packets and bytes since the rule was installed"},
            "read_at": time,
            "recent": {"type": ["object", "null"], "description": "the rule's growth over the last two steps of the short history (GET …/history); null until it has them", "required": ["window", "packets", "bytes", "until"], "properties": {
                "window": {"type": "string", "description": "30s: two 15 s steps"}, "packets": {"type": "integer"}, "bytes": {"type": "integer"}, "until": time}}}},
        "data_plane": {"type": ["object", "null"], "required": ["hub_up", "observed_at", "last_reconcile", "last_error", "src", "dst"], "properties": {
            "hub_up": {"type": "boolean"}, "observed_at": time,
            "last_reconcile": {"type": "string", "enum": ["ok", "failed"]},
            "last_error": {"type": ["string", "null"]}, "src": peer, "dst": peer}},
        "fix": {"type": ["object", "null"], "required": ["direction", "action", "src", "dst", "protocol", "ports", "priority", "note"], "properties": {
            "direction": {"type": "string", "enum": ["forward", "reply"]},
            "action": {"type": "string", "enum": ["allow"]}, "src": selector, "dst": selector,
            "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp"]},
            "ports": {"type": ["string", "null"]}, "priority": {"type": "integer"},
            "note": {"type": ["string", "null"]}}}}})
}

/// OpenAPI links from a creation to what can be done with the object it made, so that a
/// stateful client (Schemathesis) can follow ids instead of guessing them.
fn links(op: Op) -> Option<Value> {
    let org = "$request.path.org";
    let (targets, params): (&[Op], Value) = match op {
        Op::OrgCreate => (
            &[
                Op::OrgGet,
                Op::OrgPatch,
                Op::OrgDelete,
                Op::MachineCreate,
                Op::PolicyCreate,
                Op::UserCreate,
                Op::Status,
                Op::PolicyAnalysis,
                // Not the preview: its body names a policy id, and a new org's 404 for an id it
                // does not have would read as the org itself being missing.
                Op::Matrix,
            ],
            json!({"org": "$response.body#/id"}),
        ),
        Op::MachineCreate => (
            &[Op::MachineGet, Op::MachinePatch, Op::MachineDelete],
            json!({"org": org, "id": "$response.body#/machine/id"}),
        ),
        Op::PolicyCreate => (
            &[Op::PolicyGet, Op::PolicyPatch, Op::PolicyDelete],
            json!({"org": org, "id": "$response.body#/id"}),
        ),
        Op::UserCreate => (
            &[Op::UserDelete],
            json!({"org": org, "id": "$response.body#/id"}),
        ),
        _ => return None,
    };
    let mut out = serde_json::Map::new();
    for t in targets {
        let id = format!("{t:?}");
        let mut p = params.clone();
        // Operations on the org itself take no {id}.
        if ROUTES
            .iter()
            .any(|r| r.op == *t && !r.path.contains("{id}"))
        {
            p.as_object_mut().map(|m| m.remove("id"));
        }
        out.insert(id.clone(), json!({"operationId": id, "parameters": p}));
    }
    Some(Value::Object(out))
}

/// The default page size of a paged list.
fn paged(op: Op) -> Option<usize> {
    match op {
        Op::MachineList | Op::PolicyList | Op::UserList => Some(DEFAULT_LIMIT),
        Op::Audit => Some(AUDIT_DEFAULT_LIMIT),
        _ => None,
    }
}

/// Answers that carry an ETag and honour If-None-Match.
fn tagged(op: Op) -> bool {
    paged(op).is_some() || matches!(op, Op::OrgList | Op::Status)
}

fn error_response(what: &str) -> Value {
    json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The document served at `/api/v1/openapi.json`; `cookie_secure` decides the cookie's name.
pub fn document(cookie_secure: bool) -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let mut op = json!({"summary": r.summary, "operationId": format!("{:?}", r.op)});
        let mut params = Vec::new();
        for p in ["org", "id"] {
            if r.path.contains(&format!("{{{p}}}")) {
                params.push(json!({"name": p, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}));
            }
        }
        if let Some(default) = paged(r.op) {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default}, "description": "items per page"}));
            params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_LEN, "pattern": "^[A-Za-z0-9_-]+$"}, "description": "where the page starts: the next_cursor of the page before (opaque); a cursor of another list is a 400"}));
        }
        if r.op == Op::Timeline {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": crate::service::timeline::MAX_LIMIT, "default": crate::service::timeline::DEFAULT_LIMIT}, "description": "entries per page"}));
            params.push(json!({"name": "before", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "entries older than this (the next_cursor of the page before)"}));
        }
        if r.op == Op::Audit {
            params.push(json!({"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "entries older than this id (instead of cursor)"}));
            for (name, what) in [
                (
                    "action",
                    "only entries whose action starts with this (`machine.` or `machine.create`)",
                ),
                ("actor", "only entries by this email"),
                ("target", "only entries about this target id"),
            ] {
                params.push(json!({"name": name, "in": "query", "schema": {"type": "string", "maxLength": 256}, "description": what}));
            }
        }
        if r.op == Op::Explain {
            for (name, what, schema) in [
                (
                    "src",
                    "a machine's id or name, or an IPv4 address inside the org network",
                    json!({"type": "string", "minLength": 1}),
                ),
                (
                    "dst",
                    "the same kinds as src",
                    json!({"type": "string", "minLength": 1}),
                ),
                (
                    "proto",
                    "the protocol",
                    json!({"type": "string", "enum": ["tcp", "udp", "icmp"]}),
                ),
                (
                    "port",
                    "destination port: required with tcp and udp, refused with icmp",
                    json!({"type": "integer", "minimum": 1, "maximum": 65535}),
                ),
            ] {
                params.push(json!({"name": name, "in": "query", "required": name != "port", "schema": schema, "description": what}));
            }
        }
        if r.op == Op::Matrix {
            params.push(json!({"name": "proto", "in": "query", "schema": {"type": "string", "enum": ["tcp", "udp", "icmp"], "default": "icmp"}}));
            params.push(json!({"name": "port", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 65535}, "description": "required with tcp and udp, refused with icmp"}));
            params.push(json!({"name": "by", "in": "query", "schema": {"type": "string", "enum": ["machine", "tag"], "default": "machine"}}));
        }
        if tagged(r.op) {
            params.push(json!({"name": "If-None-Match", "in": "header", "schema": {"type": "string"}, "description": "an ETag of an earlier answer: 304 if it is still current"}));
        }
        if !params.is_empty() {
            op["parameters"] = json!(params);
        }
        if let Some(body) = r.body {
            // A key rotation may come without a body (the server makes the pair).
            let required = r.op != Op::MachineRotateKey;
            op["requestBody"] = json!({"required": required, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        let mut responses = serde_json::Map::new();
        let ok = match r.returns {
            Some(s) => {
                json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{s}")}}}})
            }
            None => json!({"description": "success"}),
        };
        let mut ok = ok;
        if let Some(links) = links(r.op) {
            ok["links"] = links;
        }
        if tagged(r.op) {
            let etag = json!({"ETag": {"required": true, "schema": {"type": "string"}, "description": "names this answer; send it back in If-None-Match"}});
            ok["headers"] = etag.clone();
            responses.insert(
                "304".into(),
                json!({"description": "not modified: If-None-Match names the current answer", "headers": etag}),
            );
        }
        responses.insert(r.ok.to_string(), ok);
        if r.body.is_some()
            || paged(r.op).is_some()
            || matches!(r.op, Op::Explain | Op::Matrix | Op::Timeline)
        {
            responses.insert(
                "400".into(),
                error_response("malformed or invalid input; nothing changed"),
            );
        }
        if r.body.is_some() {
            responses.insert("413".into(), error_response("body larger than 64 KiB"));
            responses.insert("415".into(), error_response("body is not application/json"));
        }
        if r.op == Op::Login {
            responses.insert("401".into(), error_response("wrong email or password"));
        }
        if r.auth {
            responses.insert("401".into(), error_response("no valid session"));
            if r.method != warp::http::Method::GET {
                responses.insert(
                    "403".into(),
                    error_response("missing or wrong X-CSRF-Token, or role not allowed"),
                );
            }
        }
        if r.path.contains('{') {
            responses.insert(
                "404".into(),
                error_response("no such resource (also another tenant's)"),
            );
        }
        if r.path.ends_with("/login") || r.path.ends_with("/password") {
            responses.insert(
                "429".into(),
                error_response("too many failed attempts; see Retry-After"),
            );
        }
        if matches!(
            r.method,
            warp::http::Method::POST | warp::http::Method::PATCH
        ) && r.auth
        {
            responses.insert(
                "409".into(),
                error_response(
                    "conflicts with existing state, or a per-org limit is reached (MAX_MACHINES_PER_ORG, MAX_POLICIES_PER_ORG, MAX_USERS_PER_ORG, 3 live watches)",
                ),
            );
        }
        responses.insert(
            "503".into(),
            error_response("database or tenant temporarily unavailable"),
        );
        op["responses"] = Value::Object(responses);
        if r.auth {
            op["security"] = json!([{"session": []}]);
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "MeshWG API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Errors are {\"error\":{\"code\",\"message\"}}. State-changing requests (all but login) need the X-CSRF-Token header equal to the session's token. Lists are paged: `limit` (default 500, audit 100, at most 1000) and the opaque `cursor` from the page before's `next_cursor` (null on the last page). Lists and status carry an ETag; If-None-Match with it answers 304 while nothing changed."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": super::session::session_cookie(cookie_secure)}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_schema_exists() {
        let doc = document(true);
        for r in ROUTES {
            assert!(
                doc["paths"][r.path][r.method.as_str().to_lowercase()].is_object(),
                "{} {}",
                r.method,
                r.path
            );
        }
        let n: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(n, ROUTES.len(), "no undocumented extras");
        // Every link names an operation that exists, with the parameters its path has.
        for r in ROUTES {
            let Some(links) = links(r.op) else { continue };
            for (_, link) in links.as_object().unwrap() {
                let target = ROUTES
                    .iter()
                    .find(|t| format!("{:?}", t.op) == link["operationId"])
                    .expect("linked operation exists");
                for name in link["parameters"].as_object().unwrap().keys() {
                    assert!(
                        target.path.contains(&format!("{{{name}}}")),
                        "{name} in {}",
                        target.path
                    );
                }
            }
        }
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "schema {name} referenced but missing"
            );
        }
    }

    /// The schemas name exactly the fields the typed views serialize: a field added to or
    /// removed from a view without its schema fails here, not in a client.
    #[test]
    fn schemas_name_exactly_the_fields_of_the_views() {
        use crate::service::views::*;
        let at = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap();
        let id = uuid::Uuid::nil();
        let machine = MachineView {
            id,
            name: "m".into(),
            address: "10.0.0.2".parse().unwrap(),
            public_key: "k".into(),
            tags: vec![],
            created_at: at,
            stats: Some(PeerStats::default()),
        };
        let policy = PolicyView {
            policy: crate::policy::Policy {
                id,
                name: String::new(),
                priority: 1,
                action: crate::policy::Verdict::Allow,
                src: crate::policy::Selector::Any,
                dst: crate::policy::Selector::Any,
                protocol: crate::policy::Protocol::Any,
                ports: None,
                enabled: true,
                created_at: at,
            },
            packets: 0,
            bytes: 0,
        };
        let org = OrgView {
            id,
            name: "o".into(),
            cidr: "10.0.0.0/24".into(),
            hub_address: "10.0.0.1".into(),
            listen_port: 51820,
            hub_public_key: "k".into(),
            state: "active",
            default_action: crate::policy::Verdict::Allow,
            created_at: at,
        };
        let user = UserView {
            id,
            email: "a@b.c".into(),
            role: "admin",
            org_id: Some(id),
            created_at: Some(at),
        };
        let status = StatusView {
            hub: HubView {
                up: true,
                listen_port: 1,
                public_key: None,
                address: None,
                name: None,
                netns: "n".into(),
                device: "d".into(),
            },
            peers: std::sync::Arc::new(StatusPeers::new(
                vec![PeerView {
                    machine_id: None,
                    name: None,
                    public_key: "k".into(),
                    allowed_ips: Default::default(),
                    endpoint: None,
                    last_handshake_at: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                }],
                "t".into(),
            )),
            rules: vec![RuleView {
                kind: "default",
                policy_id: None,
                packets: 0,
                bytes: 0,
            }],
            observed_at: at,
            last_error: None,
        };
        let doc = document(true);
        let schemas = &doc["components"]["schemas"];
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let check = |name: &str, schema: &Value, view: Value| {
            assert_eq!(keys(&schema["properties"]), keys(&view), "{name}");
        };
        check(
            "Machine",
            &schemas["Machine"],
            serde_json::to_value(&machine).unwrap(),
        );
        check(
            "Policy",
            &schemas["Policy"],
            serde_json::to_value(&policy).unwrap(),
        );
        check("Org", &schemas["Org"], serde_json::to_value(&org).unwrap());
        check(
            "User",
            &schemas["User"],
            serde_json::to_value(&user).unwrap(),
        );
        let status = serde_json::to_value(&status).unwrap();
        check("Status", &schemas["Status"], status.clone());
        let s = &schemas["Status"]["properties"];
        check("Status.hub", &s["hub"], status["hub"].clone());
        check(
            "Status.peers",
            &s["peers"]["items"],
            status["peers"][0].clone(),
        );
        check(
            "Status.rules",
            &s["rules"]["items"],
            status["rules"][0].clone(),
        );
        let history = serde_json::to_value(HistoryView {
            step_seconds: 15,
            newest_at: Some(at),
            machines: vec![MachineHistory {
                machine_id: Some(id),
                name: Some("m".into()),
                public_key: "k".into(),
                since: at,
                rx_bytes: vec![1],
                tx_bytes: vec![2],
            }],
            policies: vec![PolicyHistory {
                kind: "policy",
                policy_id: Some(id.to_string()),
                since: at,
                packets: vec![0],
                bytes: vec![0],
                last_hit_at: None,
                never_hit_since: Some(at),
            }],
        })
        .unwrap();
        check("History", &schemas["History"], history.clone());
        let h = &schemas["History"]["properties"];
        check(
            "History.machines",
            &h["machines"]["items"],
            history["machines"][0].clone(),
        );
        check(
            "History.policies",
            &h["policies"]["items"],
            history["policies"][0].clone(),
        );
        let preview = crate::service::preview::PreviewView::empty();
        let preview = serde_json::to_value(&preview).unwrap();
        check(
            "PolicyPreviewResult",
            &schemas["PolicyPreviewResult"],
            preview.clone(),
        );
        check(
            "PolicyAnalysis",
            &schemas["PolicyAnalysis"],
            preview["analysis"].clone(),
        );
        let matrix = crate::service::matrix::MatrixView {
            proto: "icmp",
            port: None,
            by: "machine",
            grouped: false,
            truncated: false,
            axis: vec![crate::service::matrix::AxisItem {
                kind: "machine",
                label: "m".into(),
                id: Some(id),
                address: None,
                machines: 1,
            }],
            cells: vec![vec![crate::service::matrix::CellView {
                verdict: None,
                src: None,
                dst: None,
            }]],
        };
        let matrix = serde_json::to_value(&matrix).unwrap();
        check("Matrix", &schemas["Matrix"], matrix.clone());
        let m = &schemas["Matrix"]["properties"];
        check(
            "Matrix.axis",
            &m["axis"]["items"],
            matrix["axis"][0].clone(),
        );
        check(
            "Matrix.cells",
            &m["cells"]["items"]["items"],
            matrix["cells"][0][0].clone(),
        );
        let list = Listed {
            key: "machines",
            items: &[machine],
            next_cursor: None,
        };
        check(
            "MachineList",
            &schemas["MachineList"],
            serde_json::to_value(&list).unwrap(),
        );
    }
}
