//! Session tokens: HS256 JWTs signed with `JWT_SECRET`. Issuer, audience, expiry and type are
//! required and checked; the token names a server-side session, which is what really decides.

use crate::secret::Secret;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ISSUER: &str = "meshwg";
pub const AUDIENCE: &str = "meshwg-api";
pub const TYPE: &str = "session";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The session id (row in `sessions`).
    pub sid: Uuid,
    pub role: String,
    pub org: Option<Uuid>,
    pub typ: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid session token")]
pub struct InvalidToken;

pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// The same checks without expiry: "this client was once given a session".
    any_age: Validation,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jwt(<redacted>)")
    }
}

impl Jwt {
    pub fn new(secret: &Secret<Vec<u8>>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        // Listing them here is what makes a token without them fail.
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let mut any_age = validation.clone();
        any_age.validate_exp = false;
        Self {
            encoding: EncodingKey::from_secret(secret.expose()),
            decoding: DecodingKey::from_secret(secret.expose()),
            validation,
            any_age,
        }
    }

    pub fn issue(&self, claims: &Claims) -> Secret<String> {
        Secret::new(
            encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
                .expect("HS256 encoding of plain claims cannot fail"),
        )
    }

    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        Self::check(decode::<Claims>(token, &self.decoding, &self.validation))
    }

    /// A token we issued, expired or not (its session may be over): proof that the client once
    /// logged in as `sub`. Never enough to act as that user.
    pub fn verify_any_age(&self, token: &str) -> Result<Claims, InvalidToken> {
        Self::check(decode::<Claims>(token, &self.decoding, &self.any_age))
    }

    fn check(
        data: jsonwebtoken::errors::Result<jsonwebtoken::TokenData<Claims>>,
    ) -> Result<Claims, InvalidToken> {
        let data = data.map_err(|_| InvalidToken)?;
        if data.claims.typ != TYPE {
            return Err(InvalidToken);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    fn jwt(secret: &str) -> Jwt {
        Jwt::new(&Secret::new(secret.as_bytes().to_vec()))
    }

    fn claims() -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            role: "admin".into(),
            org: Some(Uuid::new_v4()),
            typ: TYPE.into(),
            iat: now,
            exp: now + 3600,
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef!!";

    /// Re-signs an arbitrary JSON payload with HS256.
    fn forge(payload: &serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            payload,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let j = jwt(SECRET);
        let c = claims();
        assert_eq!(j.verify(j.issue(&c).expose()), Ok(c));
    }

    #[test]
    fn forgeries_fail() {
        let j = jwt(SECRET);
        let c = claims();
        let good = j.issue(&c).expose().clone();
        let (head, rest) = good.split_once('.').unwrap();
        let (body, _sig) = rest.split_once('.').unwrap();

        // alg none, with and without a signature.
        let none = B64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(j.verify(&format!("{none}.{body}.")).is_err());
        assert!(j.verify(&format!("{none}.{body}")).is_err());
        // Signature stripped.
        assert!(j.verify(&format!("{head}.{body}.")).is_err());
        // Other key.
        assert!(
            j.verify(jwt("another-secret-another-secret-xyz!").issue(&c).expose())
                .is_err()
        );
        // Edited role / org claim, keeping the old signature.
        for (k, v) in [
            ("role", serde_json::json!("operator")),
            ("org", serde_json::json!(Uuid::new_v4())),
        ] {
            let mut payload: serde_json::Value =
                serde_json::from_slice(&B64.decode(body).unwrap()).unwrap();
            payload[k] = v;
            let edited = B64.encode(serde_json::to_vec(&payload).unwrap());
            assert!(j.verify(&format!("{head}.{edited}.{_sig}")).is_err(), "{k}");
        }
        // Expired, wrong audience, wrong issuer, wrong type, missing claims (all properly signed).
        let base = serde_json::to_value(&c).unwrap();
        let mut cases = Vec::new();
        let mut e = base.clone();
        e["exp"] = serde_json::json!(chrono::Utc::now().timestamp() - 60);
        cases.push(("expired", e));
        let mut e = base.clone();
        e["aud"] = serde_json::json!("someone-else");
        cases.push(("aud", e));
        let mut e = base.clone();
        e["iss"] = serde_json::json!("evil");
        cases.push(("iss", e));
        let mut e = base.clone();
        e["typ"] = serde_json::json!("refresh");
        cases.push(("typ", e));
        for missing in ["exp", "iss", "aud", "sub", "typ"] {
            let mut e = base.clone();
            e.as_object_mut().unwrap().remove(missing);
            cases.push((missing, e));
        }
        for (what, payload) in cases {
            assert!(
                j.verify(&forge(&payload, SECRET)).is_err(),
                "{what} accepted"
            );
        }
        // HS512 with the right key is still not HS256.
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &c,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(j.verify(&hs512).is_err());
        assert!(j.verify("garbage").is_err());
        assert!(j.verify("").is_err());
    }
}
