//! Adversary scenarios (A2–A4) with their defence switched off: each one
//! that names a defence must end as its `attack.off` says (the checker
//! names the invariant, or the A3 bound is exceeded), and with defences on
//! it must hold the A3 bound too. Together with `scenarios.rs` (defences
//! on) this shows every defence changes a verdict.

use igor_sim::adversary;
use igor_sim::runner;
use igor_sim::scenario::Scenario;
use std::collections::BTreeSet;

#[test]
#[allow(clippy::disallowed_methods)] // a test: lists the scenario files
fn every_defence_switched_off_changes_its_scenarios_verdict() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut covered = BTreeSet::new();
    for class in ["a2", "a3", "a4"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(class)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() >= 4, "{class}: at least four scenarios");
        for path in files {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let attack = s.attack.clone().unwrap_or_else(|| panic!("{}: no attack field", path.display()));
            let base = Scenario::base_dir(&path);
            let on = runner::run(&s, &base, None).unwrap();
            assert!(adversary::matches(&on, &s.expect, &attack.class), "{}", on.summary(&path.display().to_string()));
            let Some(defence) = attack.defence else { continue };
            let off = adversary::with_defence_off(&s, defence, true);
            let r = runner::run(&off, &base, None).unwrap();
            assert!(
                adversary::matches(&r, &off.expect, &attack.class),
                "{} with {defence} off: verdict {}\n{}",
                path.display(),
                adversary::verdict(&r, &attack.class),
                r.summary(&path.display().to_string())
            );
            // The verdict against the on-expectations: damage without a
            // broken invariant shows as DEGRADED.
            let judged = adversary::with_defence_off(&s, defence, false);
            let judged = runner::run(&judged, &base, None).unwrap();
            if adversary::verdict(&on, &attack.class) != adversary::verdict(&judged, &attack.class) {
                covered.insert(defence.to_string());
            }
        }
    }
    let all: BTreeSet<String> = igor::node::defence::Defence::ALL.iter().map(|d| d.to_string()).collect();
    assert_eq!(covered, all, "every defence has a scenario where switching it off changes the verdict");
}
