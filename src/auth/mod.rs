//! Authentication: passwords (Argon2id), session tokens (HS256 JWT naming a server-side
//! session) and login rate limits.

pub mod jwt;
pub mod password;
pub mod ratelimit;
pub mod window;

/// The one case rule for emails: an account is found by this key, computed here and only here
/// (Unicode lowercase of the trimmed address). PostgreSQL compares keys and never folds case
/// itself: its `lower()` follows the database's locale and under `C` folds ASCII only.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Compares two secrets in time independent of where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random token of `n` bytes, base64url without padding.
pub fn random_token(n: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn email_keys_fold_every_script() {
        for same in ["Åsa@X.se", "åsa@x.se", "ÅSA@x.SE", " åsa@x.se "] {
            assert_eq!(super::email_key(same), "åsa@x.se");
        }
        assert_eq!(super::email_key("ΣΊΣΥΦΟΣ@x.gr"), "σίσυφος@x.gr");
    }
}
