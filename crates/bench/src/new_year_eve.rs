//! The `new-year-eve` profile: many chat groups whose activity follows a
//! Zipf law (a few groups are very busy, most are quiet). A burst is one
//! group's moment: its sender sends a lucky packet with a share for every
//! member, then each member grabs (抢) and opens (拆) it, back to back. One
//! packet in twenty expires after two seconds, so refunds run throughout
//! the run, as the few-per-second expiries of a real evening do.

use std::collections::VecDeque;
use std::sync::Arc;

use hongbao_domain::hash::mix64;
use hongbao_domain::{PacketId, UserId};
use hyper::Method;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::client::Connection;
use crate::hongbao::Ack;
use crate::load::Client;
use crate::target::Tokens;

/// The Zipf exponent: the k-th busiest group is 1/k as busy as the busiest.
const ZIPF_EXPONENT: f64 = 1.0;
/// One packet in this many expires quickly, to keep refunds running.
const SHORT_EXPIRY_ONE_IN: u64 = 20;
const SHORT_EXPIRY_S: u32 = 2;

/// The groups: their sizes and the cumulative Zipf weights for picking one.
pub struct Groups {
    cumulative: Vec<f64>,
    sizes: Vec<u32>,
}

impl Groups {
    pub fn new(count: usize) -> Groups {
        let mut total = 0.0;
        let cumulative = (1..=count)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(ZIPF_EXPONENT);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|weight| weight / total).collect();
        // Groups of 3 to 100 people, like family and work chats.
        let sizes = (0..count).map(|group| 3 + (mix64(group as u64) % 98) as u32).collect();
        Groups { cumulative, sizes }
    }

    /// The group a uniform 64-bit draw falls on.
    pub fn pick(&self, draw: u64) -> usize {
        let point = (draw >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative.partition_point(|weight| *weight < point).min(self.sizes.len() - 1)
    }

    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    pub fn sender(group: usize) -> UserId {
        UserId::parse(&format!("g{group}-sender")).expect("valid user")
    }

    /// Every user of the profile: each group's sender and members.
    pub fn users(&self) -> Vec<UserId> {
        (0..self.count())
            .flat_map(|group| {
                let members = (0..self.sizes[group]).map(move |member| Groups::member(group, member));
                std::iter::once(Groups::sender(group)).chain(members)
            })
            .collect()
    }

    fn member(group: usize, member: u32) -> UserId {
        UserId::parse(&format!("g{group}-m{member}")).expect("valid user")
    }
}

enum Step {
    Send,
    Grab(u32),
    Open(u32),
}

/// A virtual client living through bursts, one request per call.
pub struct Burst {
    pub connection: Connection,
    pub tokens: Arc<Tokens>,
    pub groups: Arc<Groups>,
    pub client: u64,
    pub acked: Vec<Ack>,
    steps: VecDeque<Step>,
    group: usize,
    packet: Option<(PacketId, String, String)>,
}

impl Burst {
    pub fn new(connection: Connection, tokens: Arc<Tokens>, groups: Arc<Groups>, client: u64) -> Burst {
        Burst { connection, tokens, groups, client, acked: Vec::new(), steps: VecDeque::new(), group: 0, packet: None }
    }

    fn start(&mut self, n: u64) {
        self.group = self.groups.pick(mix64(self.client.rotate_left(32) ^ n));
        self.steps.push_back(Step::Send);
        for member in 0..self.groups.sizes[self.group] {
            self.steps.push_back(Step::Grab(member));
            self.steps.push_back(Step::Open(member));
        }
    }

    async fn post(&mut self, path: &str, user: &UserId, body: Option<Value>) -> Option<(u16, Value)> {
        let token = self.tokens.of(user);
        let body = body.map(|value| Bytes::from(value.to_string()));
        let (status, answer) = self.connection.request(Method::POST, path, Some(&token), body).await.ok()?;
        Some((status.as_u16(), serde_json::from_slice(&answer).unwrap_or(Value::Null)))
    }

    async fn send(&mut self, n: u64) -> bool {
        let count = self.groups.sizes[self.group];
        let short = mix64(n ^ 0x5eed).is_multiple_of(SHORT_EXPIRY_ONE_IN);
        let expires_in_s = if short { SHORT_EXPIRY_S } else { 86_400 };
        let body = json!({
            "kind": "lucky",
            "total_amount": u64::from(count) * 88,
            "count": count,
            "greeting": "新年快乐",
            "expires_in_s": expires_in_s,
        });
        match self.post("/v1/packets", &Groups::sender(self.group), Some(body)).await {
            Some((201, packet)) => {
                let id: Option<PacketId> = packet["id"].as_str().and_then(|id| id.parse().ok());
                self.packet = id.map(|id| (id, format!("/v1/packets/{id}/grab"), format!("/v1/packets/{id}/open")));
                self.packet.is_some()
            }
            _ => {
                self.steps.clear();
                false
            }
        }
    }

    async fn grab(&mut self, member: u32) -> bool {
        let Some((_, path, _)) = self.packet.clone() else { return false };
        matches!(self.post(&path, &Groups::member(self.group, member), None).await, Some((200, _)))
    }

    /// An open answers a share, or (for a packet past its short expiry)
    /// `packet_expired`: both are correct answers, not errors.
    async fn open(&mut self, member: u32) -> bool {
        let Some((id, _, path)) = self.packet.clone() else { return false };
        let user = Groups::member(self.group, member);
        match self.post(&path, &user, None).await {
            Some((200, answer)) => match answer["amount"].as_u64() {
                Some(amount) => {
                    self.acked.push(Ack { packet: id, user, amount });
                    true
                }
                None => false,
            },
            Some((410, _)) => true,
            _ => false,
        }
    }
}

impl Client for Burst {
    async fn call(&mut self, n: u64) -> bool {
        if self.steps.is_empty() {
            self.start(n);
        }
        match self.steps.pop_front().expect("a burst has steps") {
            Step::Send => self.send(n).await,
            Step::Grab(member) => self.grab(member).await,
            Step::Open(member) => self.open(member).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_groups_follow_the_zipf_law() {
        let groups = Groups::new(1000);
        let mut picks = vec![0u32; 1000];
        for n in 0..200_000u64 {
            picks[groups.pick(mix64(n))] += 1;
        }
        // With exponent 1, rank 1 is picked about twice as often as rank 2
        // and ten times as often as rank 10; every pick is a real group.
        let ratio = |a: usize, b: usize| f64::from(picks[a]) / f64::from(picks[b]);
        assert!((1.8..2.2).contains(&ratio(0, 1)), "{}", ratio(0, 1));
        assert!((8.0..12.0).contains(&ratio(0, 9)), "{}", ratio(0, 9));
        assert!(picks[999] > 0);
        // Senders and members are all distinct users (a repeat would be one
        // account taking two roles and a wrong count of tokens).
        let users = groups.users();
        let distinct: std::collections::HashSet<_> = users.iter().collect();
        assert_eq!(distinct.len(), users.len(), "a user in two roles");
    }
}
