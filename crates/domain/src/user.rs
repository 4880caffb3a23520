//! Users: opaque names chosen by the wallet that fronts hongbao.

use std::fmt;

/// The longest user name, in bytes (all allowed characters are ASCII).
pub const USER_LEN_MAX: usize = 64;

/// A user name: 1 to 64 characters from `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUser;

impl UserId {
    pub fn parse(name: &str) -> Result<UserId, InvalidUser> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if name.is_empty() || name.len() > USER_LEN_MAX || !name.chars().all(allowed) {
            return Err(InvalidUser);
        }
        Ok(UserId(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_allowed_alphabet() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b-c_D9").is_ok());
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
        assert_eq!(UserId::parse(""), Err(InvalidUser));
        assert_eq!(UserId::parse(&"x".repeat(65)), Err(InvalidUser));
        assert_eq!(UserId::parse("al ice"), Err(InvalidUser));
        assert_eq!(UserId::parse("ali/ce"), Err(InvalidUser));
        assert_eq!(UserId::parse("阿丽"), Err(InvalidUser));
    }
}
