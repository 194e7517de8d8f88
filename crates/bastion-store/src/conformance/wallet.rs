//! Conformance of [`crate::WalletStore`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The tests of this area, listed for [`crate::conformance_tests!`].
#[macro_export]
macro_rules! conformance_wallet {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;);
    };
}
