//! Hub private keys at rest: AES-256-GCM with a random 96-bit nonce per seal, the tenant id as
//! associated data (so a ciphertext copied to another tenant's row does not open) and a key
//! version (so `ENCRYPTION_KEY` can be rotated later without guessing which key sealed a row).

use crate::keys::PrivateKey;
use crate::secret::Secret;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use uuid::Uuid;

/// The version written with every sealed key. Bump it when a second key is introduced.
pub const KEY_VERSION: i16 = 1;

/// The sealed form of a hub private key, exactly as stored in `orgs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub version: i16,
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("hub key was sealed with key version {0}, which this controller does not have")]
    UnknownVersion(i16),
    #[error("hub key does not decrypt: wrong ENCRYPTION_KEY, wrong tenant, or tampered row")]
    Tampered,
}

/// Seals and opens hub keys with the controller's `ENCRYPTION_KEY`.
pub struct HubKeyCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for HubKeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HubKeyCipher(<redacted>)")
    }
}

impl HubKeyCipher {
    pub fn new(key: &Secret<[u8; 32]>) -> Self {
        let key: &Key<Aes256Gcm> = key.expose().into();
        Self {
            cipher: Aes256Gcm::new(key),
        }
    }

    pub fn seal(&self, tenant: Uuid, key: &PrivateKey) -> SealedKey {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: key.expose_bytes(),
                    aad: tenant.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of 32 bytes cannot fail");
        SealedKey {
            version: KEY_VERSION,
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    pub fn open(&self, tenant: Uuid, sealed: &SealedKey) -> Result<PrivateKey, CryptoError> {
        if sealed.version != KEY_VERSION {
            return Err(CryptoError::UnknownVersion(sealed.version));
        }
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Tampered)?;
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: tenant.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        let plain = Secret::new(plain);
        let bytes: [u8; 32] = plain
            .expose()
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Tampered)?;
        Ok(PrivateKey::from_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(byte: u8) -> HubKeyCipher {
        HubKeyCipher::new(&Secret::new([byte; 32]))
    }

    #[test]
    fn round_trip() {
        let c = cipher(7);
        let tenant = Uuid::new_v4();
        let key = PrivateKey::generate();
        let sealed = c.seal(tenant, &key);
        assert_eq!(sealed.nonce.len(), 12);
        assert_eq!(sealed.ciphertext.len(), 48);
        assert_eq!(c.open(tenant, &sealed).unwrap(), key);
    }

    #[test]
    fn every_flipped_byte_fails() {
        let c = cipher(7);
        let tenant = Uuid::new_v4();
        let sealed = c.seal(tenant, &PrivateKey::generate());
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 0x01;
            assert_eq!(c.open(tenant, &bad), Err(CryptoError::Tampered), "byte {i}");
        }
        for i in 0..sealed.nonce.len() {
            let mut bad = sealed.clone();
            bad.nonce[i] ^= 0x80;
            assert_eq!(
                c.open(tenant, &bad),
                Err(CryptoError::Tampered),
                "nonce {i}"
            );
        }
    }

    #[test]
    fn other_tenant_or_key_fails() {
        let c = cipher(7);
        let sealed = c.seal(Uuid::new_v4(), &PrivateKey::generate());
        assert_eq!(c.open(Uuid::new_v4(), &sealed), Err(CryptoError::Tampered));
        let other_tenant_same_id = Uuid::new_v4();
        assert_eq!(
            cipher(8).open(other_tenant_same_id, &sealed),
            Err(CryptoError::Tampered)
        );
    }

    #[test]
    fn nonces_are_fresh_and_version_checked() {
        let c = cipher(1);
        let t = Uuid::new_v4();
        let k = PrivateKey::generate();
        let a = c.seal(t, &k);
        let b = c.seal(t, &k);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let mut v = a.clone();
        v.version = 9;
        assert_eq!(c.open(t, &v), Err(CryptoError::UnknownVersion(9)));
    }
}
