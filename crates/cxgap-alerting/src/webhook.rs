//! Standard Webhooks signing (<https://www.standardwebhooks.com>): every delivery carries
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, which is
//! `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")). Secrets are `whsec_` +
//! base64 of the key bytes. While a secret is being rotated an endpoint has two, and every
//! delivery is signed with both (space-separated), so receivers can switch at any moment.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Receivers reject timestamps further than this from their clock (replay protection).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret must start with \"whsec_\"")]
    Prefix,
    #[error("webhook secret is not valid base64 after \"whsec_\"")]
    Base64,
    #[error("webhook secret must hold 24 to 64 bytes of key, not {0}")]
    Length(usize),
}

/// The key bytes of a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let b64 = secret.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
    let key = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
    if !(24..=64).contains(&key.len()) {
        return Err(SecretError::Length(key.len()));
    }
    Ok(key)
}

/// A fresh secret with 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random source");
    format!("{PREFIX}{}", STANDARD.encode(key))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `webhook-signature` header value: one `v1,<base64>` per key, space-separated.
pub fn sign(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| format!("v1,{}", STANDARD.encode(mac(k, id, timestamp, body).finalize().into_bytes())))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a number of seconds")]
    Timestamp,
    #[error("webhook-timestamp is more than {TOLERANCE_SECONDS} s from now")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// What a receiver does: accept if any `v1` signature in the header matches (constant
/// time) and the timestamp is within the tolerance of `now`.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Timestamp)?;
    if (now - ts).abs() > TOLERANCE_SECONDS {
        return Err(VerifyError::Stale);
    }
    for sig in signatures.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else { continue };
        let Ok(bytes) = STANDARD.decode(b64) else { continue };
        if mac(key, id, ts, body).verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn reproduces_the_specifications_test_vector() {
        let key = decode_secret(SECRET).unwrap();
        assert_eq!(
            sign(std::slice::from_ref(&key), ID, 1_614_265_330, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(
            verify(&key, ID, "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", BODY, 1_614_265_400),
            Ok(())
        );
    }

    #[test]
    fn rotation_signs_with_both_and_either_verifies() {
        let (old, new) = (decode_secret(&new_secret()).unwrap(), decode_secret(&new_secret()).unwrap());
        let header = sign(&[old.clone(), new.clone()], "n1", 1000, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify(&old, "n1", "1000", &header, b"{}", 1000), Ok(()));
        assert_eq!(verify(&new, "n1", "1000", &header, b"{}", 1000), Ok(()));
        let stranger = decode_secret(&new_secret()).unwrap();
        assert_eq!(verify(&stranger, "n1", "1000", &header, b"{}", 1000), Err(VerifyError::Mismatch));
        assert_eq!(verify(&old, "n1", "1000", &header, b"{} ", 1000), Err(VerifyError::Mismatch), "body is signed");
        assert_eq!(verify(&old, "n2", "1000", &header, b"{}", 1000), Err(VerifyError::Mismatch), "id is signed");
        assert_eq!(verify(&old, "n1", "1000", &header, b"{}", 1000 + 301), Err(VerifyError::Stale));
    }

    #[test]
    fn bad_secrets_are_named() {
        assert_eq!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::Prefix));
        assert_eq!(decode_secret("whsec_***"), Err(SecretError::Base64));
        assert_eq!(decode_secret("whsec_c2hvcnQ="), Err(SecretError::Length(5)));
    }
}
