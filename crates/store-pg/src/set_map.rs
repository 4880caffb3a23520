//! Which database holds which set: one connection string for every set, or
//! several, so one data set's sets live on several database machines.

use hongbao_domain::SetId;

use crate::pg::redacted;

/// A set map: a default database and ranges of sets placed elsewhere.
#[derive(Clone, PartialEq, Eq)]
pub struct SetMap {
    default: String,
    /// `(first, last, url)`, inclusive; a later range wins.
    ranges: Vec<(u16, u16, String)>,
}

impl std::fmt::Debug for SetMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<String> =
            self.ranges.iter().map(|(first, last, url)| format!("{first}-{last}={}", redacted(url))).collect();
        f.debug_struct("SetMap").field("default", &redacted(&self.default)).field("ranges", &ranges).finish()
    }
}

impl SetMap {
    /// Every set on one database.
    pub fn single(url: impl Into<String>) -> SetMap {
        SetMap { default: url.into(), ranges: Vec::new() }
    }

    /// Places sets `first..=last` on `url`.
    pub fn place(mut self, first: u16, last: u16, url: impl Into<String>) -> SetMap {
        self.ranges.push((first, last, url.into()));
        self
    }

    /// Adds a placement spelled `N=URL` or `FIRST-LAST=URL`.
    pub fn place_spelled(self, spelled: &str) -> Result<SetMap, String> {
        let (sets, url) = spelled.split_once('=').ok_or_else(|| format!("{spelled:?} is not SETS=URL"))?;
        let number = |text: &str| text.trim().parse::<u16>().map_err(|_| format!("{text:?} is not a set number"));
        let (first, last) = match sets.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(sets)?, number(sets)?),
        };
        if first > last {
            return Err(format!("the set range {first}-{last} is empty"));
        }
        if !is_postgres_url(url) {
            return Err(format!("{} is not a postgres:// URL", redacted(url)));
        }
        Ok(self.place(first, last, url))
    }

    /// The database of `set`.
    pub fn url(&self, set: SetId) -> &str {
        let placed = self.ranges.iter().rev().find(|(first, last, _)| (*first..=*last).contains(&set.0));
        placed.map_or(self.default.as_str(), |(_, _, url)| url.as_str())
    }

    /// Every distinct database, each once, in the order of the sets.
    pub fn databases(&self, sets: u16) -> Vec<&str> {
        let mut urls: Vec<&str> = Vec::new();
        for set in (0..sets).map(SetId) {
            let url = self.url(set);
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }
}

/// Whether `text` names a PostgreSQL database as `--store` expects.
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_ranges_win_over_the_default_and_passwords_stay_hidden() {
        let map = SetMap::single("postgres://a/x").place_spelled("4-7=postgres://u:secret@b/y").unwrap();
        assert_eq!(map.url(SetId(3)), "postgres://a/x");
        assert_eq!(map.url(SetId(4)), "postgres://u:secret@b/y");
        assert_eq!(map.databases(8), vec!["postgres://a/x", "postgres://u:secret@b/y"]);
        assert!(!format!("{map:?}").contains("secret"));
        assert!(SetMap::single("x").place_spelled("7-4=postgres://b").is_err());
        assert!(SetMap::single("x").place_spelled("4=mysql://b").is_err());
    }
}
