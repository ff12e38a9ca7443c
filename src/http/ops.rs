//! What a route does and how a JSON body is read: shared by the route table (`router`) and the
//! operations (`api`) so neither needs the other.

use super::Request;
use super::error::ApiError;

/// One operation of the JSON API (a row of the route table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Healthz,
    Readyz,
    OpenApi,
    Login,
    Logout,
    Me,
    Password,
    OrgCreate,
    OrgList,
    OrgGet,
    OrgPatch,
    OrgDelete,
    UserCreate,
    UserList,
    UserDelete,
    MachineCreate,
    MachineList,
    MachineGet,
    MachinePatch,
    MachineDelete,
    MachineRotateKey,
    MachineBatch,
    PolicyCreate,
    PolicyList,
    PolicyGet,
    PolicyPatch,
    PolicyDelete,
    PolicyMove,
    PolicyAnalysis,
    PolicyPreview,
    Matrix,
    Status,
    History,
    Audit,
    Explain,
    WatchCreate,
    WatchList,
    Timeline,
    Invariants,
}

/// Parses the JSON body into `T` (unknown fields are refused by `T`'s own serde attributes).
pub fn body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::bad_request("a JSON body is required"));
    }
    // Every body is an object: serde would also read a struct from an array of its fields
    // (`[null, null]` is a valid, empty, OrgPatch), which the document does not allow.
    if req.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            warp::http::StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        let mut msg = e.to_string();
        msg.truncate(300);
        ApiError::new(warp::http::StatusCode::BAD_REQUEST, "invalid_body", msg)
    })
}
