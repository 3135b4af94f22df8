//! The effect-intent log's state machine under random operation sequences:
//! final states never change (no intent is both confirmed and compensated),
//! ids are never reused, every refused transition is a named error and
//! changes nothing, and the log round-trips through the state encoding.

use igor_agent::intent::{IntentError, IntentLog, Status};
use igor_agent::state;

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn random_walks_keep_final_states_final() {
    for seed in 0..200u64 {
        let mut rng = seed;
        let mut log = IntentLog::default();
        let mut finals: Vec<(u64, Status)> = Vec::new();
        let mut last_id = 0;
        for _ in 0..200 {
            let id = if last_id == 0 { 1 } else { splitmix(&mut rng) % (last_id + 2) };
            let before = log.clone();
            let r: Result<(), IntentError> = match splitmix(&mut rng) % 7 {
                0 => {
                    let new = log.record("k", vec![1]);
                    assert_eq!(new, last_id + 1, "seed {seed}: ids are sequential and never reused");
                    last_id = new;
                    Ok(())
                }
                1 => log.begin(id).map(|_| ()),
                2 => log.confirm(id, vec![2]),
                3 => log.fail(id),
                4 => log.unknown(id),
                5 => log.compensate(id, vec![3]),
                _ => {
                    log.open_in_flight();
                    Ok(())
                }
            };
            if r.is_err() {
                assert_eq!(log, before, "seed {seed}: a refused transition changes nothing");
            }
            for (fid, status) in &finals {
                assert_eq!(log.get(*fid).map(|i| i.status), Some(*status), "seed {seed}: intent {fid} left {status:?}");
            }
            for i in log.with_status(Status::Confirmed).chain(log.with_status(Status::Compensated)) {
                if !finals.iter().any(|(f, _)| *f == i.id) {
                    finals.push((i.id, i.status));
                }
            }
        }
        let bytes = state::encode(&log, 1).unwrap();
        assert_eq!(state::decode::<IntentLog>(&bytes, 1).unwrap(), log);
    }
}

#[test]
fn confirmed_is_never_compensated_and_back() {
    let mut log = IntentLog::default();
    let a = log.record("pay", vec![]);
    log.begin(a).unwrap();
    log.confirm(a, b"r".to_vec()).unwrap();
    assert_eq!(
        log.compensate(a, vec![]),
        Err(IntentError::BadTransition { id: a, from: Status::Confirmed, op: "compensate" })
    );
    let b = log.record("pay", vec![]);
    log.begin(b).unwrap();
    log.unknown(b).unwrap();
    log.compensate(b, b"refunded".to_vec()).unwrap();
    assert!(log.confirm(b, vec![]).is_err());
    assert_eq!(log.confirm(99, vec![]), Err(IntentError::Unknown(99)));
    assert_eq!(log.confirm(99, vec![]).unwrap_err().to_string(), "intent 99: unknown");
}
