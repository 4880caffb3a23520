//! Money: a non-negative count of minor units (fen). Never a float; every
//! operation is checked, so an overflow or an overdraft is an explicit `None`.

use std::fmt;

/// An amount of money in minor units (1 = 0.01 yuan). Always `>= 0` and at
/// most `i64::MAX`, so it maps losslessly onto SQL `INTEGER` columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u64);

impl Amount {
    pub const ZERO: Amount = Amount(0);
    /// The largest amount any balance or packet may hold (fits `i64`).
    pub const MAX: Amount = Amount(i64::MAX as u64);

    /// An amount from minor units; `None` if it would not fit the store's
    /// signed 64-bit columns.
    pub const fn from_fen(fen: u64) -> Option<Amount> {
        if fen <= i64::MAX as u64 { Some(Amount(fen)) } else { None }
    }

    /// An amount from a signed count of minor units, as read from a store or
    /// a request; `None` when negative.
    pub fn from_signed(fen: i64) -> Option<Amount> {
        u64::try_from(fen).ok().map(Amount)
    }

    pub const fn fen(self) -> u64 {
        self.0
    }

    /// The amount as the store's signed integer (always fits, see `MAX`).
    pub const fn signed(self) -> i64 {
        self.0 as i64
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).and_then(Amount::from_fen)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn checked_mul(self, factor: u64) -> Option<Amount> {
        self.0.checked_mul(factor).and_then(Amount::from_fen)
    }

    pub fn checked_div(self, divisor: u64) -> Option<Amount> {
        self.0.checked_div(divisor).map(Amount)
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    /// Formats as yuan with two decimals, for humans (logs, the audit).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_refuses_overflow_and_overdraft() {
        let one = Amount::from_fen(1).unwrap();
        assert_eq!(Amount::MAX.checked_add(one), None);
        assert_eq!(Amount::ZERO.checked_sub(one), None);
        assert_eq!(Amount::from_fen(u64::MAX), None);
        assert_eq!(Amount::from_signed(-1), None);
        assert_eq!(one.checked_add(one).unwrap().fen(), 2);
        assert_eq!(Amount::from_fen(12345).unwrap().to_string(), "123.45");
    }
}
