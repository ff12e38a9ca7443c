//! WireGuard keys (Curve25519) in the form WireGuard tools use: 32 bytes, base64 on the wire.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;

/// A WireGuard public key. Public, so it may be printed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

/// A WireGuard private key. Redacted everywhere; only [`PrivateKey::expose_base64`] and
/// [`PrivateKey::expose_hex`] reveal it, for the device and the one-time config.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Secret<[u8; 32]>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a WireGuard key is 32 bytes encoded as 44 characters of base64")]
    Malformed,
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32_base64(text).map(Self)
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode32_hex(text).map(Self)
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl PrivateKey {
    /// A fresh key from the operating system's CSPRNG, clamped as `wg genkey` does.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random number generator failed");
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(Secret::new(bytes))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode32_base64(text).map(Self::from_bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode32_hex(text).map(Self::from_bytes)
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::x25519(
            *self.0.expose(),
            x25519_dalek::X25519_BASEPOINT_BYTES,
        ))
    }

    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }

    pub fn expose_base64(&self) -> Secret<String> {
        Secret::new(B64.encode(self.0.expose()))
    }

    pub fn expose_hex(&self) -> Secret<String> {
        Secret::new(hex(self.0.expose()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

fn decode32_base64(text: &str) -> Result<[u8; 32], KeyError> {
    if text.len() != 44 {
        return Err(KeyError::Malformed);
    }
    let bytes = B64.decode(text).map_err(|_| KeyError::Malformed)?;
    bytes.try_into().map_err(|_| KeyError::Malformed)
}

fn decode32_hex(text: &str) -> Result<[u8; 32], KeyError> {
    if text.len() != 64 {
        return Err(KeyError::Malformed);
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).map_err(|_| KeyError::Malformed)?;
        out[i] = u8::from_str_radix(pair, 16).map_err(|_| KeyError::Malformed)?;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_public_key_derivation() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private = PrivateKey::from_hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        )
        .unwrap();
        assert_eq!(
            private.public_key().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn base64_round_trip_and_rejects() {
        let k = PrivateKey::generate();
        let pk = k.public_key();
        assert_eq!(PublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
        assert_eq!(PublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        assert_eq!(PublicKey::from_base64("short"), Err(KeyError::Malformed));
        assert_eq!(
            PublicKey::from_base64("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="),
            Err(KeyError::Malformed),
            "44 characters that decode to 31 bytes"
        );
        assert_eq!(
            PublicKey::from_base64("!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(KeyError::Malformed)
        );
    }

    #[test]
    fn private_key_is_redacted() {
        let k = PrivateKey::generate();
        let b64 = k.expose_base64();
        assert!(!format!("{k:?}").contains(b64.expose().as_str()));
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        assert_eq!(a.expose_bytes()[0] & 7, 0);
        assert_eq!(a.expose_bytes()[31] & 0xc0, 0x40);
    }
}
