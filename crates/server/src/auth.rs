//! Authentication. A user token is `<user>.<signature>`, the signature an
//! HMAC-SHA256 of the user name under a secret kept in the data directory;
//! the admin token is a random string kept in `<data>/admin.token`. Every
//! comparison is constant-time.

use std::fs;
use std::io::Write;
use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use hongbao_domain::UserId;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;

const SECRET_FILE: &str = "token.secret";
const ADMIN_TOKEN_FILE: &str = "admin.token";
const SIGNATURE_CONTEXT: &[u8] = b"hongbao-user-token-v1\0";

/// The keys of one data directory.
pub struct Auth {
    secret: Vec<u8>,
    admin_token: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

fn random_text(bytes: usize) -> std::io::Result<String> {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

/// Writes a file readable by its owner only (0600), durably.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn read_trimmed(path: &Path) -> std::io::Result<String> {
    let text = fs::read_to_string(path)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(std::io::Error::other(format!("{} is empty", path.display())));
    }
    Ok(text.to_owned())
}

impl Auth {
    /// Loads the keys of a data directory, generating them on first start.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Auth> {
        for (file, bytes) in [(SECRET_FILE, 32), (ADMIN_TOKEN_FILE, 32)] {
            let path = dir.join(file);
            if !path.exists() {
                let text = match file {
                    ADMIN_TOKEN_FILE => format!("admin.{}", random_text(bytes)?),
                    _ => random_text(bytes)?,
                };
                write_private(&path, &format!("{text}\n"))?;
            }
        }
        Auth::load(dir)
    }

    /// Loads the keys of an existing data directory.
    pub fn load(dir: &Path) -> std::io::Result<Auth> {
        let secret = read_trimmed(&dir.join(SECRET_FILE))?.into_bytes();
        let admin_token = read_trimmed(&dir.join(ADMIN_TOKEN_FILE))?;
        Ok(Auth { secret, admin_token })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    fn signature(&self, user: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(SIGNATURE_CONTEXT);
        mac.update(user.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A token that names `user`.
    pub fn token_for(&self, user: &UserId) -> String {
        format!("{user}.{}", URL_SAFE_NO_PAD.encode(self.signature(user.as_str())))
    }

    /// The user a token names, if its signature is ours.
    pub fn verify(&self, token: &str) -> Option<UserId> {
        let (user, signature) = token.rsplit_once('.')?;
        let user = UserId::parse(user).ok()?;
        let presented = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let expected = self.signature(user.as_str());
        bool::from(expected.ct_eq(&presented)).then_some(user)
    }

    pub fn is_admin(&self, token: &str) -> bool {
        bool::from(self.admin_token.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// The bearer token of a request: missing → 401 `missing_token`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>"));
    };
    let malformed = || ApiError::unauthorized("invalid_token", "the Authorization header must be Bearer <token>");
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(token.trim())
}

/// The caller of a user route: always the user its token names.
#[derive(Debug, Clone)]
pub struct Caller(pub UserId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let token = bearer(parts)?;
        state
            .auth
            .verify(token)
            .map(Caller)
            .ok_or_else(|| ApiError::unauthorized("invalid_token", "the token is not a valid user token"))
    }
}

/// The caller of an admin route.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let token = bearer(parts)?;
        if state.auth.is_admin(token) {
            Ok(Admin)
        } else if state.auth.verify(token).is_some() {
            Err(ApiError::forbidden("admin_only", "this route needs the admin token"))
        } else {
            Err(ApiError::unauthorized("invalid_token", "the token is not valid"))
        }
    }
}
