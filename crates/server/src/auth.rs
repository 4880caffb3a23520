//! Who is calling: the extractors that turn a bearer token into a `Caller`
//! (a user) or an `Admin` (a named admin), with the verdicts of `token`.
//!
//! Requests whose token fails are counted per client IP before anything
//! else is checked: an IP past its budget of failures is refused 429 at
//! once, so guessing tokens (or flooding the verifier) costs the guesser,
//! not everyone else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use hongbao_domain::UserId;

use crate::AppState;
use crate::error::ApiError;
use crate::token::{AdminName, Auth, TokenError};

/// The keys in force, swapped whole when the key file changes (a rotation,
/// a removed key, a revoked admin), so a request sees one set of keys.
#[derive(Debug)]
pub struct SharedAuth(RwLock<Arc<Auth>>);

impl SharedAuth {
    pub fn new(auth: Auth) -> SharedAuth {
        SharedAuth(RwLock::new(Arc::new(auth)))
    }

    pub fn current(&self) -> Arc<Auth> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn replace(&self, auth: Auth) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(auth);
    }
}

/// The client's address; a request that came some other way than through
/// `listener::serve` (none does in the server) counts as 0.0.0.0.
fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

/// The bearer token of a request: missing → 401 `missing_token`.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Err(ApiError::missing_token());
    };
    let malformed = ApiError::malformed_authorization;
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(token.trim())
}

/// Runs `check` on the request's token, charging the client IP for a
/// failure, and refusing at once an IP that has no failures left.
fn checked<T>(
    parts: &Parts,
    state: &AppState,
    check: impl FnOnce(&str, &Auth) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let ip = client_ip(parts);
    let now = Instant::now();
    state.rates.auth_failures_allowed(ip, now)?;
    let outcome = bearer(parts).and_then(|token| check(token, &state.auth.current()));
    if let Err(error) = &outcome
        && error.status == StatusCode::UNAUTHORIZED
    {
        state.rates.auth_failed(ip, now);
    }
    outcome
}

fn refused(error: TokenError) -> ApiError {
    ApiError::unauthorized(error.code(), error.message())
}

/// The caller of a user route: always the user its token names, and
/// whether the request came from the client or was forwarded by another
/// node of the cluster (which charged the user's rate limit already).
#[derive(Debug, Clone)]
pub struct Caller(pub UserId, pub Origin);

/// Where a request came from, for the user's rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    /// Forwarded by a node that proved itself with a peer token
    /// (`cluster::forward`): its limits were charged there.
    Peer,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let now = state.engine.now();
        let origin = match parts.extensions.get::<crate::cluster::PeerForwarded>() {
            Some(_) => Origin::Peer,
            None => Origin::Client,
        };
        checked(parts, state, |token, auth| auth.verify(token, now).map(|user| Caller(user, origin)).map_err(refused))
    }
}

/// The caller of an admin route, by name.
#[derive(Debug, Clone)]
pub struct Admin(pub AdminName);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let now = state.engine.now();
        checked(parts, state, |token, auth| {
            if let Some(name) = auth.admin(token) {
                return Ok(Admin(name));
            }
            match auth.verify(token, now) {
                Ok(_) => Err(ApiError::admin_only()),
                Err(error) => Err(refused(error)),
            }
        })
    }
}
