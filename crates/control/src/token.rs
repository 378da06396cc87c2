//! Tokens that prove a proxy's identity to the mesh CA, as Kubernetes service-account
//! tokens do for istiod: `meshwork token create` signs one for a namespace and service
//! account with the key kept in the state directory; the CA issues a certificate only for
//! the identity a valid, unexpired token names.
//!
//! A token is `mw1.PAYLOAD.MAC`: PAYLOAD is base64url JSON (`ns`, `sa`, `exp` in Unix
//! seconds), MAC is base64url HMAC-SHA256 over `mw1.PAYLOAD` with the state key.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::ca::Identity;

/// The file of the signing key in the state directory.
pub const KEY_FILE: &str = "token-key";

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token came with the request.
    #[error("no token")]
    Missing,
    /// The token is not one this control plane signed.
    #[error("the token is not signed by this control plane")]
    BadSignature,
    /// It is not a token at all.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// Its time is over.
    #[error("the token for {0} expired {1} s ago")]
    Expired(String, u64),
}

/// The signing key.
pub struct TokenKey(hmac::Key);

impl TokenKey {
    /// The key in `state_dir`, made on first use. Making it is atomic: two processes that
    /// start at once (the control plane, `meshwork token create`) end with the same key.
    pub fn open(state_dir: &Path) -> std::io::Result<TokenKey> {
        let path = state_dir.join(KEY_FILE);
        if let Ok(bytes) = std::fs::read(&path) {
            return Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)));
        }
        std::fs::create_dir_all(state_dir)?;
        let mut key = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut key)
            .map_err(|_| std::io::Error::other("no system randomness"))?;
        let tmp = state_dir.join(format!(".{KEY_FILE}.{}", std::process::id()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&key)?;
        }
        // A link fails if the key exists already: then the one made first wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, &key))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let bytes = std::fs::read(&path)?;
                Ok(TokenKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
            }
            Err(e) => Err(e),
        }
    }

    /// A token for `identity`, valid for `ttl`.
    pub fn create(&self, identity: &Identity, ttl: Duration) -> String {
        let exp = SystemTime::now()
            .checked_add(ttl)
            .unwrap_or(SystemTime::now())
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let payload = serde_json::json!({
            "ns": identity.namespace,
            "sa": identity.service_account,
            "exp": exp,
        });
        let signed = format!("mw1.{}", B64.encode(payload.to_string()));
        let mac = hmac::sign(&self.0, signed.as_bytes());
        format!("{signed}.{}", B64.encode(mac.as_ref()))
    }

    /// The identity a token proves.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let (signed, mac) = token
            .rsplit_once('.')
            .ok_or_else(|| TokenError::Malformed("no signature".into()))?;
        let payload = signed
            .strip_prefix("mw1.")
            .ok_or_else(|| TokenError::Malformed("not a meshwork token".into()))?;
        let mac = B64
            .decode(mac)
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        hmac::verify(&self.0, signed.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        let json = B64
            .decode(payload)
            .map_err(|e| TokenError::Malformed(e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| TokenError::Malformed(format!("no {k}")))
        };
        let identity = Identity {
            namespace: field("ns")?,
            service_account: field("sa")?,
        };
        let exp = v
            .get("exp")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| TokenError::Malformed("no exp".into()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now >= exp {
            return Err(TokenError::Expired(
                format!("{}/{}", identity.namespace, identity.service_account),
                now - exp,
            ));
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(label: &str) -> (TokenKey, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mw-token-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (TokenKey::open(&dir).unwrap(), dir)
    }

    fn id(ns: &str, sa: &str) -> Identity {
        Identity {
            namespace: ns.into(),
            service_account: sa.into(),
        }
    }

    #[test]
    fn a_token_proves_its_identity_until_it_expires() {
        let (k, dir) = key("ok");
        let t = k.create(&id("default", "reviews"), Duration::from_secs(60));
        assert_eq!(k.verify(&t), Ok(id("default", "reviews")));
        // The key is kept: opened again, it verifies the same token.
        let again = TokenKey::open(&dir).unwrap();
        assert_eq!(again.verify(&t), Ok(id("default", "reviews")));
        let old = k.create(&id("default", "reviews"), Duration::ZERO);
        assert!(matches!(k.verify(&old), Err(TokenError::Expired(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn forged_altered_foreign_and_missing_tokens_are_refused() {
        let (k, dir) = key("bad");
        let (other, other_dir) = key("other");
        let t = k.create(&id("default", "reviews"), Duration::from_secs(60));
        // Another control plane's token.
        assert_eq!(
            k.verify(&other.create(&id("default", "reviews"), Duration::from_secs(60))),
            Err(TokenError::BadSignature)
        );
        // The payload changed to another identity, signature kept.
        let (signed, mac) = t.rsplit_once('.').unwrap();
        let forged_payload = B64.encode(
            serde_json::json!({"ns": "default", "sa": "admin", "exp": u64::MAX}).to_string(),
        );
        let _ = signed;
        assert_eq!(
            k.verify(&format!("mw1.{forged_payload}.{mac}")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(k.verify(""), Err(TokenError::Missing));
        assert!(matches!(k.verify("garbage"), Err(TokenError::Malformed(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&other_dir).unwrap();
    }
}
