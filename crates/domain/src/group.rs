//! A packet's audience: the chat group it was sent to, with its members as
//! the chat app knew them at send time. Only members may grab, open and
//! read such a packet (its sender may read it too); anyone else is refused
//! `not_in_group`.
//!
//! **Stored once, compactly.** The members are one string, the sorted
//! names joined by commas (a name never holds a comma): what the tables
//! store in one column and the journal in one field, and what memory keeps.
//! Membership is answered in O(1) by an open-addressed index beside it: a
//! slot per power of two at least twice the member count, each the offset
//! of a name in the string (4 bytes), found from the name's FNV-1a hash and
//! confirmed by comparing the name itself, so a hash collision costs a
//! probe, never a wrong answer. A 500-member group of 10-character names
//! keeps 5.5 KB of names and 4 KB of index; a list of `UserId`s would
//! take 40 KB.

use std::fmt;
use std::sync::Arc;

use crate::hash::fnv1a64;
use crate::user::UserId;

/// The longest group id, in bytes.
pub const GROUP_ID_LEN_MAX: usize = 64;
/// The most members any configuration may allow a group: the list is in
/// memory with its live packet and in the send's journal record.
pub const GROUP_MEMBERS_CEILING: usize = 10_000;

/// A chat group's id: 1 to 64 characters from `[A-Za-z0-9_.:@-]` (a chat
/// app's own ids, `12345@chatroom` among them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(Box<str>);

impl GroupId {
    pub fn parse(text: &str) -> Option<GroupId> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-');
        let valid = !text.is_empty() && text.len() <= GROUP_ID_LEN_MAX && text.chars().all(allowed);
        valid.then(|| GroupId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group's members (see the module doc).
#[derive(Clone)]
pub struct Members {
    /// The sorted, distinct names, joined by commas.
    joined: Box<str>,
    /// Offsets into `joined`, plus one (0: an empty slot).
    slots: Box<[u32]>,
    count: u32,
}

impl PartialEq for Members {
    fn eq(&self, other: &Members) -> bool {
        self.joined == other.joined
    }
}

impl Eq for Members {}

impl fmt::Debug for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Members({} of them)", self.count)
    }
}

impl Members {
    /// The members, in any order and with repeats; `None` when there are
    /// none.
    pub fn new(mut names: Vec<UserId>) -> Option<Members> {
        names.sort_unstable();
        names.dedup();
        let joined: Vec<&str> = names.iter().map(UserId::as_str).collect();
        Members::indexed(joined.join(","))
    }

    /// Members as the tables and the journal store them: sorted, distinct
    /// names joined by commas. Anything else is refused.
    pub fn parse_joined(joined: &str) -> Option<Members> {
        let mut previous: Option<&str> = None;
        for name in joined.split(',') {
            UserId::parse(name).ok()?;
            if previous.is_some_and(|previous| previous >= name) {
                return None;
            }
            previous = Some(name);
        }
        Members::indexed(joined.to_owned())
    }

    fn indexed(joined: String) -> Option<Members> {
        if joined.is_empty() {
            return None;
        }
        let count = joined.split(',').count();
        let mut slots = vec![0u32; (count * 2).next_power_of_two()].into_boxed_slice();
        let mask = slots.len() - 1;
        let mut offset = 0usize;
        for name in joined.split(',') {
            let mut slot = Members::home(name, mask);
            while slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            slots[slot] = u32::try_from(offset + 1).expect("a member list is under 4 GiB");
            offset += name.len() + 1;
        }
        let count = u32::try_from(count).expect("members fit u32");
        Some(Members { joined: joined.into_boxed_str(), slots, count })
    }

    fn home(name: &str, mask: usize) -> usize {
        (fnv1a64(name.as_bytes()) as usize) & mask
    }

    fn name_at(&self, slot: u32) -> &str {
        let rest = &self.joined[slot as usize - 1..];
        rest.split_once(',').map_or(rest, |(name, _)| name)
    }

    /// Whether `user` is a member: O(1), confirmed by name.
    pub fn contains(&self, user: &UserId) -> bool {
        let name = user.as_str();
        let mask = self.slots.len() - 1;
        let mut slot = Members::home(name, mask);
        loop {
            match self.slots[slot] {
                0 => return false,
                offset if self.name_at(offset) == name => return true,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.joined.split(',')
    }

    /// The stored form: sorted names joined by commas.
    pub fn joined(&self) -> &str {
        &self.joined
    }
}

/// The group a packet was sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub members: Members,
}

impl Group {
    /// A packet's group from the two columns a store keeps it in (both
    /// set, or neither), or why they cannot be one.
    pub fn from_stored(id: Option<&str>, members: Option<&str>) -> Result<Option<Arc<Group>>, String> {
        match (id, members) {
            (None, None) => Ok(None),
            (Some(id), Some(members)) => {
                let id = GroupId::parse(id).ok_or_else(|| format!("group id {id:?} is invalid"))?;
                let members =
                    Members::parse_joined(members).ok_or("a group's members are not sorted, distinct, valid names")?;
                Ok(Some(Arc::new(Group { id, members })))
            }
            (id, _) => Err(format!("group {id:?} without its members, or members without a group")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn group_ids_take_a_chat_apps_ids_and_nothing_else() {
        for good in ["family", "12345@chatroom", "team:ops-1", "a.b_c", &"g".repeat(64)] {
            assert!(GroupId::parse(good).is_some(), "{good:?}");
        }
        for bad in ["", "a b", "a,b", "群", &"g".repeat(65), "a/b"] {
            assert!(GroupId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn members_are_sorted_distinct_and_stored_as_one_string() {
        let members = Members::new(vec![user("carol"), user("alice"), user("bob"), user("alice")]).unwrap();
        assert_eq!(members.joined(), "alice,bob,carol");
        assert_eq!(members.len(), 3);
        assert!(members.contains(&user("bob")));
        assert!(!members.contains(&user("bo")));
        assert_eq!(Members::parse_joined("alice,bob,carol"), Some(members));
        assert!(Members::new(Vec::new()).is_none());
        for bad in ["", "bob,alice", "alice,alice", "alice,,bob", "alice,b b", ",alice"] {
            assert!(Members::parse_joined(bad).is_none(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn membership_is_exactly_the_list(
            names in proptest::collection::btree_set("[a-z0-9]{1,12}", 1..300),
            others in proptest::collection::vec("[a-z0-9]{1,12}", 0..100),
        ) {
            let members = Members::new(names.iter().map(|name| user(name)).collect()).unwrap();
            prop_assert_eq!(members.len(), names.len());
            prop_assert!(members.iter().eq(names.iter().map(String::as_str)));
            for name in &names {
                prop_assert!(members.contains(&user(name)));
            }
            for other in &others {
                prop_assert_eq!(members.contains(&user(other)), names.contains(other));
            }
        }
    }
}
