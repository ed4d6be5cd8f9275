//! Names of wire and storage enums: one derivation for every place a name is written.
//!
//! Each such enum derives serde's names (`rename_all = "snake_case"`, what the wire
//! carries) and strum's (`serialize_all = "snake_case"`: `IntoStaticStr` for metrics
//! labels, log fields and database columns, `EnumString` to read them back, `EnumIter`
//! to list them). [`wire_names!`] adds `as_str` and `Display` on top of strum, and the
//! test below checks, variant by variant, that strum's name is serde's, so no name is
//! ever spelt by hand twice.

/// `as_str` (the wire name, from strum's `IntoStaticStr`) and a `Display` that writes it
/// (padding honoured, so tables line up).
macro_rules! wire_names {
    ($($ty:ty),* $(,)?) => {$(
        impl $ty {
            /// The wire name (the same string serde writes and the database stores).
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::str::FromStr;

    use serde::{de::DeserializeOwned, Serialize};
    use strum::IntoEnumIterator;

    use crate::*;

    /// Every variant's strum name is its serde name, and both read back to the variant.
    fn names_agree<T>()
    where
        T: IntoEnumIterator + Serialize + DeserializeOwned + FromStr + Into<&'static str>,
        T: Copy + PartialEq + Debug,
    {
        let mut seen = 0;
        for variant in T::iter() {
            let name: &'static str = variant.into();
            assert_eq!(
                serde_json::to_value(variant).unwrap(),
                serde_json::Value::from(name),
                "{variant:?}"
            );
            assert_eq!(
                serde_json::from_value::<T>(serde_json::Value::from(name)).unwrap(),
                variant
            );
            assert!(
                T::from_str(name).is_ok_and(|parsed| parsed == variant),
                "{name}"
            );
            seen += 1;
        }
        assert!(seen > 1, "{}", std::any::type_name::<T>());
    }

    #[test]
    fn strum_names_are_serde_names() {
        names_agree::<ErrorCode>();
        names_agree::<CloseCode>();
        names_agree::<Status>();
        names_agree::<JoinPolicy>();
        names_agree::<MemberState>();
        names_agree::<RegistrationMode>();
        names_agree::<SanctionKind>();
        names_agree::<AuditAction>();
        names_agree::<Transport>();
    }

    #[test]
    fn names_are_the_stable_ones() {
        // Spot checks of names stored in databases and matched by clients.
        assert_eq!(ErrorCode::NotMember.as_str(), "not_member");
        assert_eq!(CloseCode::SlowConsumer.to_string(), "slow_consumer");
        assert_eq!(MemberState::CanRequest.as_str(), "can_request");
        assert_eq!(Transport::Websocket.as_str(), "websocket");
        assert_eq!(AuditAction::ResetPassword.as_str(), "reset_password");
        assert_eq!("ban".parse(), Ok(SanctionKind::Ban));
        assert!("Ban".parse::<SanctionKind>().is_err());
        assert_eq!(format!("{:<7}|", Status::Away), "away   |");
    }
}
