//! A bearer token: never a panic, and the only tokens that verify are the
//! ones the server signs (so no input is taken for another user's token,
//! or for a later expiry), and no input is taken for an admin's.
#![no_main]

use std::sync::OnceLock;

use hongbao_domain::Millis;
use hongbao_server::Auth;
use hongbao_server::token::{AdminCredential, AdminName, KeyId, Keys, SigningKey, admin_digest};
use libfuzzer_sys::fuzz_target;

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let key = |id: &str, byte| SigningKey { id: KeyId::parse(id).expect("an id"), secret: [byte; 32] };
        let root = AdminCredential { name: AdminName::parse("root").expect("a name"), digest: admin_digest("s3cret") };
        let keys = Keys {
            current: KeyId::parse("k2").expect("an id"),
            signing: vec![key("k2", 2), key("k1", 1)],
            removed: vec![KeyId::parse("k0").expect("an id")],
            admins: vec![root],
        };
        Auth::new(keys).expect("keys that serve")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let auth = auth();
    if let Ok(user) = auth.verify(token, Millis(0)) {
        let expires_at = token.split('.').nth(2).and_then(|text| text.parse().ok()).expect("a signed expiry");
        let resigned = auth.issue(&user, Millis(expires_at));
        let current = token.split('.').nth(1) == Some("k2");
        assert!(!current || resigned == token, "a token the server did not sign verified");
    }
    if auth.admin(token).is_some() {
        assert_eq!(token, "admin.root.s3cret", "an admin token that is not the admin's verified");
    }
});
