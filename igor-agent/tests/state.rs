//! The versioned state encoding: a checkpoint written by one state struct
//! is refused by a changed one with an error naming the version mismatch
//! (issue 14 acceptance), and corrupt bytes are named errors, never a
//! misread.

use igor_agent::mock::{Harness, MockHost};
use igor_agent::state::{self, StateError};
use igor_agent::{Agent, Ctx, Tick};
use serde::{Deserialize, Serialize};

mod v1 {
    use super::*;
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Wallet {
        pub owner: String,
        pub balance: u64,
    }
    impl Agent for Wallet {
        fn init() -> Self {
            Wallet { owner: "ann".into(), balance: 0 }
        }
        fn tick(&mut self, _: &mut Ctx<'_>) -> Tick {
            self.balance += 5;
            Tick::Idle
        }
    }
}

mod v2_added_field {
    use super::*;
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Wallet {
        pub owner: String,
        pub balance: u64,
        pub frozen: bool,
    }
    impl Agent for Wallet {
        fn init() -> Self {
            Wallet { owner: "ann".into(), balance: 0, frozen: false }
        }
        fn tick(&mut self, _: &mut Ctx<'_>) -> Tick {
            Tick::Idle
        }
    }
}

mod v2_retyped {
    use super::*;
    /// Same field names, `balance` now i64: postcard would happily read the
    /// old varint as a zigzag i64 (5 -> -3); the fingerprint refuses it.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Wallet {
        pub owner: String,
        pub balance: i64,
    }
}

mod v2_renamed {
    use super::*;
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Wallet {
        pub holder: String,
        pub balance: u64,
    }
}

mod v2_reordered {
    use super::*;
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Wallet {
        pub balance: u64,
        pub owner: String,
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Mode {
    Idle,
    Busy { since: u64 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Rich {
    mode: Mode,
    tags: Vec<String>,
    limits: std::collections::BTreeMap<String, (u32, i8)>,
    last: Option<[u8; 4]>,
}

fn saved_v1() -> Vec<u8> {
    let mut h = Harness::<v1::Wallet>::new(MockHost::new());
    h.tick();
    h.checkpoint().unwrap()
}

fn assert_mismatch(err: StateError) {
    assert!(matches!(err, StateError::VersionMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("state version mismatch for `"), "{text}");
    assert!(text.contains("Wallet"), "{text}");
}

#[test]
fn added_field_is_a_version_mismatch_on_resume() {
    let mut h = Harness::<v2_added_field::Wallet>::new(MockHost::new());
    let err = h.resume(&saved_v1()).unwrap_err();
    assert_mismatch(err);
    // Nothing was misread: the agent kept its own fresh state.
    assert_eq!(h.agent().balance, 0);
}

#[test]
fn retyped_renamed_and_reordered_fields_are_version_mismatches() {
    let bytes = saved_v1();
    assert_mismatch(state::decode::<v2_retyped::Wallet>(&bytes, 1).unwrap_err());
    assert_mismatch(state::decode::<v2_renamed::Wallet>(&bytes, 1).unwrap_err());
    assert_mismatch(state::decode::<v2_reordered::Wallet>(&bytes, 1).unwrap_err());
    // Without the header the retyped read would "succeed" with a wrong value:
    // the failure mode the fingerprint exists for.
    let body = &bytes[state::HEADER_LEN..];
    let misread: v2_retyped::Wallet = postcard::from_bytes(body).unwrap();
    assert_eq!(misread.balance, -3);
}

#[test]
fn bumped_version_is_a_mismatch_naming_both_versions() {
    let err = state::decode::<v1::Wallet>(&saved_v1(), 2).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("schema v1") && text.contains("reads v2"), "{text}");
}

#[test]
fn same_schema_round_trips() {
    let mut h = Harness::<v1::Wallet>::new(MockHost::new());
    h.resume(&saved_v1()).unwrap();
    assert_eq!(h.agent(), &v1::Wallet { owner: "ann".into(), balance: 5 });
    let rich = Rich {
        mode: Mode::Busy { since: 9 },
        tags: vec!["a".into(), "bc".into()],
        limits: [("x".to_string(), (7, -1))].into_iter().collect(),
        last: Some([1, 2, 3, 4]),
    };
    let bytes = state::encode(&rich, 1).unwrap();
    assert_eq!(state::decode::<Rich>(&bytes, 1).unwrap(), rich);
}

#[test]
fn shape_names_structs_fields_enums_and_leaves() {
    assert_eq!(
        state::shape::<Rich>(),
        "Rich{mode;tags;limits;last;|Mode<Idle;Busy;|unit>,[str,],{str,=>(2:u32,i8,),},?(4:u8,u8,u8,u8,),},"
    );
}

#[test]
fn corrupt_bytes_are_named_errors() {
    let bytes = saved_v1();
    assert_eq!(state::decode::<v1::Wallet>(&bytes[..5], 1), Err(StateError::TooShort { len: 5 }));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(state::decode::<v1::Wallet>(&bad, 1), Err(StateError::BadMagic));
    let mut bad = bytes.clone();
    bad[4] = 9;
    assert_eq!(state::decode::<v1::Wallet>(&bad, 1), Err(StateError::UnknownFormat(9)));
    assert!(matches!(state::decode::<v1::Wallet>(&bytes[..bytes.len() - 1], 1), Err(StateError::Body(_))));
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(state::decode::<v1::Wallet>(&long, 1), Err(StateError::TrailingBytes { extra: 1 }));
}
