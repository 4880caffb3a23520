//! A send's fields as the server hands them to the packet rules (serde has
//! already read the JSON into them): never a panic, and an accepted spec
//! keeps the rules' promises.
#![no_main]

use arbitrary::Arbitrary;
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{Limits, PacketSpec, UserId};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Send {
    kind: String,
    total_amount: i64,
    count: i64,
    greeting: Option<String>,
    password: Option<String>,
    recipient: Option<String>,
    expires_in_s: Option<i64>,
}

fuzz_target!(|send: Send| {
    let input = SpecInput {
        kind: send.kind,
        total_amount: send.total_amount,
        count: send.count,
        greeting: send.greeting,
        password: send.password,
        recipient: send.recipient,
        expires_in_s: send.expires_in_s,
    };
    let sender = UserId::parse("alice").expect("valid user");
    let limits = Limits::default();
    match PacketSpec::parse(&input, &sender, &limits) {
        Ok(spec) => {
            assert!(spec.count >= 1 && spec.count <= limits.count_max, "count out of bounds: {}", spec.count);
            assert!(spec.total_amount <= limits.total_amount_max, "total out of bounds");
            let floor = u64::from(spec.count) * limits.share_min.fen();
            assert!(spec.total_amount.fen() >= floor, "a share below the minimum");
        }
        Err(error) => assert!(!error.code().is_empty()),
    }
});
