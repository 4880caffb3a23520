//! A packet id from a path: never a panic, and an id that parses prints
//! back to text that parses to the same id.
#![no_main]

use hongbao_domain::PacketId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<PacketId>() {
        let again: PacketId = id.to_string().parse().expect("a printed id parses");
        assert_eq!(again, id);
    }
});
