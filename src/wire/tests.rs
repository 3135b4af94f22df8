//! Unit tests of `wire` (kept apart so the module reads as code).

use super::*;
use proptest::prelude::*;

fn header() -> Header {
    Header {
        issuer: NodeId::new("a").unwrap(),
        audience: NodeId::new("b").unwrap(),
        agent: AgentId::new("counter").unwrap(),
        epoch: Epoch::new(2, 3),
        head_tick: TickNumber(9),
        head_hash: Hash32::of(b"x"),
        nonce: 7,
        issued_unix_ns: 500,
        expiry_unix_ns: 1_000,
    }
}

fn package() -> AgentPackage {
    AgentPackage {
        agent_id: AgentId::new("counter").unwrap(),
        wasm_binary: b"\0asm".to_vec(),
        wasm_hash: vec![1; 32],
        checkpoint: vec![4; 300],
        manifest_data: b"{}".to_vec(),
        budget: 5,
        price_per_second: 1,
        replay_data: None,
        agent_identity: Some(vec![9; 32]),
        receipts: None,
        kv: Some(vec![]),
    }
}

fn transfer() -> Envelope {
    Envelope::new(
        header(),
        Body::AgentTransfer(Box::new(AgentTransfer { package: package(), source_node_id: NodeId::new("a").unwrap() })),
    )
}

#[test]
fn transfer_uses_spec_field_names_and_base64() {
    let json = String::from_utf8(transfer().encode()).unwrap();
    for name in [
        "\"AgentTransfer\"",
        "\"Package\"",
        "\"SourceNodeID\"",
        "\"AgentID\"",
        "\"WASMBinary\":\"AGFzbQ==\"",
        "\"WASMHash\"",
        "\"Checkpoint\"",
        "\"ManifestData\"",
        "\"Budget\"",
        "\"PricePerSecond\"",
        "\"AgentIdentity\"",
        "\"KV\"",
    ] {
        assert!(json.contains(name), "{name} missing from {json}");
    }
    assert!(!json.contains("ReplayData"), "absent optionals are omitted");
    assert_eq!(Envelope::decode(json.as_bytes()).unwrap(), transfer());
    let started = Envelope::new(
        header(),
        Body::AgentStarted(AgentStarted {
            agent_id: AgentId::new("counter").unwrap(),
            node_id: NodeId::new("b").unwrap(),
            success: false,
            error: Some("price".into()),
        }),
    );
    let json = String::from_utf8(started.encode()).unwrap();
    assert!(json.contains("\"NodeID\":\"b\",\"Success\":false,\"Error\":\"price\""), "{json}");
}

#[test]
fn malformed_and_oversized_input_is_an_error() {
    assert!(matches!(Envelope::decode(b""), Err(WireError::Malformed(_))));
    assert!(matches!(Envelope::decode(b"{\"Protocol\":1}"), Err(WireError::Malformed(_))));
    let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(Envelope::decode(&big), Err(WireError::TooLarge { .. })));
    let mut e = transfer();
    e.protocol = "/other/1".into();
    assert!(matches!(Envelope::decode(&e.encode()), Err(WireError::WrongProtocol { .. })));
    let mut e = transfer();
    if let Body::AgentTransfer(t) = &mut e.body {
        t.package.wasm_hash = vec![1; 31];
    }
    assert!(matches!(Envelope::decode(&e.encode()), Err(WireError::BadField { field: "WASMHash", .. })));
    let mut e = transfer();
    if let Body::AgentTransfer(t) = &mut e.body {
        t.source_node_id = NodeId::new("mallory").unwrap();
    }
    assert!(matches!(Envelope::decode(&e.encode()), Err(WireError::BadField { field: "SourceNodeID", .. })));
    let json = String::from_utf8(transfer().encode()).unwrap().replace("AGFzbQ==", "!!!");
    assert!(matches!(Envelope::decode(json.as_bytes()), Err(WireError::Malformed(_))));
    let json = String::from_utf8(transfer().encode()).unwrap().replacen("{", "{\"Extra\":1,", 1);
    assert!(matches!(Envelope::decode(json.as_bytes()), Err(WireError::Malformed(_))));
}

#[test]
fn signature_binds_header_and_body() {
    let key = crate::identity::Keypair::from_seed([3; 32]);
    let other = crate::identity::Keypair::from_seed([4; 32]);
    let mut e = transfer();
    assert!(!e.verify(&key.public()), "unsigned");
    e.sign(&key);
    let e = Envelope::decode(&e.encode()).unwrap();
    assert!(e.verify(&key.public()));
    assert!(!e.verify(&other.public()), "wrong issuer key");
    let mut t = e.clone();
    t.header.epoch = Epoch::new(9, 0);
    assert!(!t.verify(&key.public()), "inflated epoch");
    let mut t = e.clone();
    if let Body::AgentTransfer(x) = &mut t.body {
        x.package.budget += 1;
    }
    assert!(!t.verify(&key.public()), "tampered body");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_json(at in 0usize..2000, byte: u8) {
        let mut b = transfer().encode();
        let i = at % b.len();
        b[i] = byte;
        let _ = Envelope::decode(&b);
    }
}
