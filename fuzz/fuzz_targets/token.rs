//! A bearer token: never a panic, and the only tokens that verify are the
//! ones the server signs (so no input is taken for another user's token).
#![no_main]

use std::sync::OnceLock;

use hongbao_server::Auth;
use libfuzzer_sys::fuzz_target;

fn auth() -> &'static Auth {
    static AUTH: OnceLock<(Auth, tempfile::TempDir)> = OnceLock::new();
    let (auth, _) = AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        (Auth::load_or_create(dir.path()).expect("keys"), dir)
    });
    auth
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let auth = auth();
    if let Some(user) = auth.verify(token) {
        assert_eq!(auth.token_for(&user), token, "a token the server did not sign verified");
    }
    let _ = auth.is_admin(token);
});
