//! Tokens and the keys that sign them, as pure values: keys in, verdicts
//! out. Reading and writing the key file is the data directory's business
//! (`hongbao_node::keys`); this module never touches a file or a clock.
//!
//! A user token is `hb2.<key id>.<expires at, Unix ms>.<user>.<signature>`,
//! the signature an HMAC-SHA256, under the named key, of everything before
//! it. Every token expires; a data directory holds several signing keys (one
//! current, which signs; older ones still verify until they are removed),
//! and remembers the ids of removed keys, so a token whose key was removed
//! is told apart (`unknown_key`) from one that was never ours
//! (`invalid_token`).
//!
//! A peer token is `hbn.<key id>.<expires at>.<node>.<signature>`, signed
//! the same way under another context (so no user token is ever a peer
//! token): what a node presents to another node of its cluster on
//! node-to-node routes. The nodes of a cluster share their keys.
//!
//! An admin credential is `admin.<name>.<secret>`: named, so every admin
//! action is logged with who did it, and revocable one by one. Only a
//! SHA-256 digest of each secret is kept.
//!
//! The HMAC format was kept over PASETO v4.local (`pasetors`) and JWT
//! (`jsonwebtoken`): a token here has three claims and one verifier (the
//! issuer itself), so a symmetric MAC is the whole need; both crates would
//! add a JSON claims layer, base64 of a JSON header, and their own key
//! formats, for nothing a verifier here would use. Every comparison is
//! constant-time.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use hongbao_domain::{Millis, UserId};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const USER_TOKEN_PREFIX: &str = "hb2";
const ADMIN_TOKEN_PREFIX: &str = "admin";
const SIGNATURE_CONTEXT: &[u8] = b"hongbao-user-token-v2\0";
const PEER_TOKEN_PREFIX: &str = "hbn";
const PEER_SIGNATURE_CONTEXT: &[u8] = b"hongbao-peer-token-v1\0";

/// A user token's lifetime when none is asked for: a month, as a phone app
/// that signs in again now and then expects.
pub const USER_TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest lifetime a user token may be given: a year. Longer would be
/// a token that, for practical purposes, lives forever.
pub const USER_TOKEN_TTL_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// The lifetimes `POST /v1/admin/tokens` gives user tokens (configuration;
/// `USER_TOKEN_TTL_DEFAULT` and `USER_TOKEN_TTL_MAX` by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLifetimes {
    /// When the admin names none.
    pub default: Duration,
    /// The longest an admin may ask for.
    pub max: Duration,
}

impl Default for TokenLifetimes {
    fn default() -> TokenLifetimes {
        TokenLifetimes { default: USER_TOKEN_TTL_DEFAULT, max: USER_TOKEN_TTL_MAX }
    }
}

impl TokenLifetimes {
    /// Whether these can be used: the default at least a second and at most the max.
    pub fn is_valid(self) -> bool {
        self.default >= Duration::from_secs(1) && self.default <= self.max
    }
}

/// When a token issued at `now` with lifetime `ttl` expires.
pub fn expiry(now: Millis, ttl: Duration) -> Millis {
    Millis(now.0.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

/// Names of keys and admins: 1 to 32 characters from `[A-Za-z0-9_-]` (no
/// `.`, which separates a token's parts).
fn is_name(text: &str) -> bool {
    (1..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A name that is not a valid key id or admin name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid name: 1 to 32 characters from A-Z a-z 0-9 _ -")]
pub struct InvalidName(pub String);

/// A name type: parsed only through `is_name`, printed as itself.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, InvalidName> {
                if is_name(text) { Ok($name(text.to_owned())) } else { Err(InvalidName(text.to_owned())) }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A signing key's id, carried in every token it signs.
    KeyId
);
name_type!(
    /// An admin's name, logged with every admin action.
    AdminName
);

/// A key that signs (if current) or verifies user tokens.
#[derive(Clone)]
pub struct SigningKey {
    pub id: KeyId,
    pub secret: [u8; 32],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// An admin credential as kept: the name and the digest of its secret.
#[derive(Clone, Debug)]
pub struct AdminCredential {
    pub name: AdminName,
    pub digest: [u8; 32],
}

/// Everything a data directory's key file holds.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The key that signs new tokens; it is among `signing`.
    pub current: KeyId,
    /// Every key that verifies.
    pub signing: Vec<SigningKey>,
    /// Keys removed: their tokens are refused as `unknown_key`.
    pub removed: Vec<KeyId>,
    pub admins: Vec<AdminCredential>,
}

/// Keys that cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("the current key {0} is not among the signing keys")]
    NoCurrentKey(KeyId),
    #[error("the key id {0} is used twice")]
    DuplicateKey(KeyId),
    #[error("the admin name {0} is used twice")]
    DuplicateAdmin(AdminName),
}

/// Why a user token was refused; each is a 401 with its own code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token signed by any key this directory has or had.
    Invalid,
    /// Signed by a key that has since been removed.
    UnknownKey,
    /// Correctly signed, but past its expiry.
    Expired,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Invalid => "invalid_token",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Expired => "token_expired",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            TokenError::Invalid => "the token is not a valid token of this service",
            TokenError::UnknownKey => "the key that signed this token was removed; ask for a new token",
            TokenError::Expired => "the token has expired; ask for a new token",
        }
    }
}

/// The keys of one data directory, checked and ready to verify.
pub struct Auth {
    keys: Keys,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("current", &self.keys.current).finish_non_exhaustive()
    }
}

/// The SHA-256 digest of an admin secret, as kept.
pub fn admin_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The admin token for `name` and its secret.
pub fn admin_token(name: &AdminName, secret: &str) -> String {
    format!("{ADMIN_TOKEN_PREFIX}.{name}.{secret}")
}

impl Auth {
    pub fn new(keys: Keys) -> Result<Auth, KeysError> {
        if !keys.signing.iter().any(|key| key.id == keys.current) {
            return Err(KeysError::NoCurrentKey(keys.current));
        }
        for (i, key) in keys.signing.iter().enumerate() {
            if keys.signing[..i].iter().any(|other| other.id == key.id) {
                return Err(KeysError::DuplicateKey(key.id.clone()));
            }
        }
        for (i, admin) in keys.admins.iter().enumerate() {
            if keys.admins[..i].iter().any(|other| other.name == admin.name) {
                return Err(KeysError::DuplicateAdmin(admin.name.clone()));
            }
        }
        Ok(Auth { keys })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn signature(key: &SigningKey, signed: &str) -> [u8; 32] {
        Auth::signature_in(SIGNATURE_CONTEXT, key, signed)
    }

    fn signature_in(context: &[u8], key: &SigningKey, signed: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).expect("HMAC takes any key length");
        mac.update(context);
        mac.update(signed.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A token for `user` that expires at `expires_at`, signed with the
    /// current key.
    pub fn issue(&self, user: &UserId, expires_at: Millis) -> String {
        assert!(expires_at.0 >= 0, "an expiry before 1970: {expires_at:?}");
        let key = self.keys.signing.iter().find(|key| key.id == self.keys.current).expect("checked in Auth::new");
        let signed = format!("{USER_TOKEN_PREFIX}.{}.{}.{user}", key.id, expires_at.0);
        let signature = URL_SAFE_NO_PAD.encode(Auth::signature(key, &signed));
        format!("{signed}.{signature}")
    }

    /// The user a token names, if one of our keys signed it and it has not
    /// expired at `now`.
    pub fn verify(&self, token: &str, now: Millis) -> Result<UserId, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let mut parts = signed.splitn(4, '.');
        let (Some(USER_TOKEN_PREFIX), Some(key_id), Some(expires_at), Some(user)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        let Some(key) = self.keys.signing.iter().find(|key| key.id.as_str() == key_id) else {
            let removed = self.keys.removed.iter().any(|id| id.as_str() == key_id);
            return Err(if removed { TokenError::UnknownKey } else { TokenError::Invalid });
        };
        let presented = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Invalid)?;
        if !bool::from(Auth::signature(key, signed).ct_eq(&presented)) {
            return Err(TokenError::Invalid);
        }
        // Signed by us, so the fields are ours; parsed all the same.
        let user = UserId::parse(user).map_err(|_| TokenError::Invalid)?;
        let expires_at: i64 = expires_at.parse().map_err(|_| TokenError::Invalid)?;
        if now.0 >= expires_at {
            return Err(TokenError::Expired);
        }
        Ok(user)
    }

    /// A peer token for the node `node` (a node id: it is checked by the
    /// caller), expiring at `expires_at`, signed with the current key.
    pub fn issue_peer(&self, node: &str, expires_at: Millis) -> String {
        let key = self.keys.signing.iter().find(|key| key.id == self.keys.current).expect("checked in Auth::new");
        let signed = format!("{PEER_TOKEN_PREFIX}.{}.{}.{node}", key.id, expires_at.0);
        let signature = URL_SAFE_NO_PAD.encode(Auth::signature_in(PEER_SIGNATURE_CONTEXT, key, &signed));
        format!("{signed}.{signature}")
    }

    /// The node a peer token names, if one of our keys signed it as a peer
    /// token and it has not expired at `now`.
    pub fn verify_peer(&self, token: &str, now: Millis) -> Option<String> {
        let (signed, signature) = token.rsplit_once('.')?;
        let mut parts = signed.splitn(4, '.');
        let (Some(PEER_TOKEN_PREFIX), Some(key_id), Some(expires_at), Some(node)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let key = self.keys.signing.iter().find(|key| key.id.as_str() == key_id)?;
        let presented = URL_SAFE_NO_PAD.decode(signature).ok()?;
        if !bool::from(Auth::signature_in(PEER_SIGNATURE_CONTEXT, key, signed).ct_eq(&presented)) {
            return None;
        }
        let expires_at: i64 = expires_at.parse().ok()?;
        (now.0 < expires_at).then(|| node.to_owned())
    }

    /// The admin an admin token names, if its secret is that admin's.
    pub fn admin(&self, token: &str) -> Option<AdminName> {
        let rest = token.strip_prefix(ADMIN_TOKEN_PREFIX)?.strip_prefix('.')?;
        let (name, secret) = rest.split_once('.')?;
        let admin = self.keys.admins.iter().find(|admin| admin.name.as_str() == name)?;
        bool::from(admin.digest.ct_eq(&admin_digest(secret))).then(|| admin.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_token_verifies_as_a_peer_only_and_until_it_expires() {
        let auth = auth("k1", vec![key("k1", 1)], &[]);
        let token = auth.issue_peer("node-a", Millis(1_000));
        assert_eq!(auth.verify_peer(&token, Millis(999)).as_deref(), Some("node-a"));
        assert_eq!(auth.verify_peer(&token, Millis(1_000)), None, "expired");
        assert!(auth.verify(&token, Millis(0)).is_err(), "a peer token is no user token");
        let user = auth.issue(&UserId::parse("node-a").unwrap(), Millis(1_000));
        assert_eq!(auth.verify_peer(&user, Millis(0)), None, "a user token is no peer token");
        let other =
            Auth::new(Keys { current: KeyId::parse("k1").unwrap(), signing: vec![key("k1", 2)], ..auth.keys.clone() })
                .unwrap();
        assert_eq!(other.verify_peer(&token, Millis(0)), None, "another cluster's key");
    }

    fn key(id: &str, byte: u8) -> SigningKey {
        SigningKey { id: KeyId::parse(id).unwrap(), secret: [byte; 32] }
    }

    fn auth(current: &str, signing: Vec<SigningKey>, removed: &[&str]) -> Auth {
        let root = AdminName::parse("root").unwrap();
        Auth::new(Keys {
            current: KeyId::parse(current).unwrap(),
            signing,
            removed: removed.iter().map(|id| KeyId::parse(id).unwrap()).collect(),
            admins: vec![AdminCredential { name: root, digest: admin_digest("s3cret") }],
        })
        .unwrap()
    }

    #[test]
    fn a_token_verifies_until_it_expires_and_only_as_signed() {
        let auth = auth("k1", vec![key("k1", 1)], &[]);
        let alice = UserId::parse("al.ice").unwrap();
        let token = auth.issue(&alice, Millis(1_000));
        assert_eq!(auth.verify(&token, Millis(999)), Ok(alice));
        assert_eq!(auth.verify(&token, Millis(1_000)), Err(TokenError::Expired));
        let forged = token.replacen(".1000.", ".9000.", 1);
        assert_eq!(auth.verify(&forged, Millis(999)), Err(TokenError::Invalid), "the expiry is signed");
        let other_user = token.replacen("al.ice", "bob", 1);
        assert_eq!(auth.verify(&other_user, Millis(999)), Err(TokenError::Invalid), "the user is signed");
        for bad in ["", "hb2", "hb2.k1.5.alice", "hb1.k1.5.alice.x", "alice.c2ln", "hb2.k1.x.alice.AAAA"] {
            assert_eq!(auth.verify(bad, Millis(0)), Err(TokenError::Invalid), "{bad}");
        }
    }

    #[test]
    fn rotated_keys_verify_until_removed_and_other_directories_never() {
        let alice = UserId::parse("alice").unwrap();
        let old = auth("k1", vec![key("k1", 1)], &[]).issue(&alice, Millis(10));
        let rotated = auth("k2", vec![key("k2", 2), key("k1", 1)], &[]);
        assert_eq!(rotated.verify(&old, Millis(0)), Ok(alice.clone()), "old tokens work after a rotation");
        let removed = auth("k2", vec![key("k2", 2)], &["k1"]);
        assert_eq!(removed.verify(&old, Millis(0)), Err(TokenError::UnknownKey));
        assert_eq!(removed.verify(&rotated.issue(&alice, Millis(10)), Millis(0)), Ok(alice.clone()));
        let elsewhere = auth("k1", vec![key("k1", 9)], &[]);
        assert_eq!(elsewhere.verify(&old, Millis(0)), Err(TokenError::Invalid), "same key id, another secret");
        let unrelated = auth("k7", vec![key("k7", 1)], &[]);
        assert_eq!(unrelated.verify(&old, Millis(0)), Err(TokenError::Invalid));
    }

    #[test]
    fn admins_are_named_and_checked_by_their_secret() {
        let auth = auth("k1", vec![key("k1", 1)], &[]);
        let root = AdminName::parse("root").unwrap();
        assert_eq!(auth.admin(&admin_token(&root, "s3cret")), Some(root.clone()));
        assert_eq!(auth.admin(&admin_token(&root, "s3cre")), None);
        assert_eq!(auth.admin("admin.eve.s3cret"), None);
        assert_eq!(auth.admin("admin.root"), None);
        let user_token = auth.issue(&UserId::parse("root").unwrap(), Millis(10));
        assert_eq!(auth.admin(&user_token), None);
    }

    #[test]
    fn keys_that_cannot_serve_are_refused() {
        let keys = |current: &str, signing| Keys {
            current: KeyId::parse(current).unwrap(),
            signing,
            removed: vec![],
            admins: vec![],
        };
        assert!(matches!(Auth::new(keys("k2", vec![key("k1", 1)])), Err(KeysError::NoCurrentKey(_))));
        assert!(matches!(Auth::new(keys("k1", vec![key("k1", 1), key("k1", 2)])), Err(KeysError::DuplicateKey(_))));
    }
}
