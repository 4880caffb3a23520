//! How a remembered request's result is spelled in the `idempotency` table:
//! a deposit's balance in fen, a send's packet id. Parsed back into the
//! typed result here, the one place that knows the spelling.

use hongbao_domain::{Amount, PacketId};
use hongbao_engine::{IdempotencyOp, IdempotencyResult, StoreError};

pub(crate) fn result_text(result: &IdempotencyResult) -> String {
    match result {
        IdempotencyResult::Deposited(balance) => balance.fen().to_string(),
        IdempotencyResult::Sent(id) => id.to_string(),
    }
}

pub(crate) fn result_from_text(op: IdempotencyOp, text: &str) -> Result<IdempotencyResult, StoreError> {
    let result = match op {
        IdempotencyOp::Deposit => text.parse().ok().and_then(Amount::from_fen).map(IdempotencyResult::Deposited),
        IdempotencyOp::Send => text.parse::<PacketId>().ok().map(IdempotencyResult::Sent),
    };
    result.ok_or_else(|| StoreError::new(format!("a stored {} result {text:?} is unreadable", op.as_str())))
}
