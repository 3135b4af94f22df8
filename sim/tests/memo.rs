//! The signature memo ([`igor::identity::memo`]) is a pure cache: a run
//! that uses it (`Stepping::Skip`) answers most signature checks from it
//! and still gives the reference run's trace (`Stepping::Fixed`, every
//! signature verified in full), byte for byte. `tests/stepping.rs` holds
//! every library scenario to the same trace both ways; this test shows the
//! memo is really used there, so that comparison covers it.

use igor::identity::memo;
use igor_sim::runner::{self, Stepping};
use igor_sim::scenario::Scenario;
use std::path::Path;

#[test]
fn a_migration_run_answers_signature_checks_from_the_memo_and_keeps_its_trace() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/a1/hostcalls-migrate-chain.ron");
    let scenario = Scenario::load(&path).unwrap();
    let base = Scenario::base_dir(&path);

    let before = memo::hits();
    let fixed = runner::run_stepping(&scenario, &base, None, Stepping::Fixed).unwrap();
    assert_eq!(memo::hits(), before, "the reference run verifies every signature in full");

    let skip = runner::run_stepping(&scenario, &base, None, Stepping::Skip).unwrap();
    let hits = memo::hits() - before;
    // Peer envelopes, agent claims, the migrated checkpoint and the
    // end-of-run history check are all signed on this thread.
    assert!(hits > 20, "only {hits} signature checks answered from the memo");
    assert_eq!(fixed.trace.first_difference(&skip.trace), None);
    assert_eq!(fixed.trace.text(), skip.trace.text());
    assert_eq!((fixed.violation.is_none(), &fixed.failures), (skip.violation.is_none(), &skip.failures));
}
