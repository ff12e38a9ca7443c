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
    m.insert("AuditList".into(), json!({"type": "object", "required": ["entries", "next_cursor"], "properties": {"entries": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}, "at": time, "actor_id": {"type": ["string", "null"]}, "actor_email": {"type": ["string", "null"]}, "action": {"type": "string"}, "target_type": {"type": "string"}, "target_id": {"type": ["string", "null"]}, "detail": {"type": "object"}}}}, "next_cursor": next}}));
    Value::Object(m)
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
        if r.body.is_some() || paged(r.op).is_some() || r.op == Op::Timeline {
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
                    "conflicts with existing state, or a per-org limit is reached (MAX_MACHINES_PER_ORG, MAX_POLICIES_PER_ORG, MAX_USERS_PER_ORG)",
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
