//! Authentication: passwords now; sessions, JWT and CSRF with the API.

pub mod password;
