//! The turmoil twins behave like the real pieces they replace: the disk
//! keeps synced data across a crash and never shows a torn file; the network
//! delivers one request and one reply, and a partition makes a peer
//! unreachable (a retry-safe failure, not an ambiguous one).

use igor::env::{Disk, NetError, Network};
use igor::units::NodeId;
use igor_sim::disk::SimDisk;
use igor_sim::net::{FaultState, SimNet};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

fn sim<'a>() -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(1)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_735_689_600))
        .tick_duration(Duration::from_millis(10))
        .simulation_duration(Duration::from_secs(60))
        .build()
}

#[test]
fn synced_writes_survive_a_crash() {
    let mut sim = sim();
    let boots = Rc::new(RefCell::new(Vec::new()));
    let seen = boots.clone();
    sim.host("a", move || {
        let seen = seen.clone();
        async move {
            let disk = SimDisk::default();
            let before = disk.read("x/file").ok();
            seen.borrow_mut().push(before);
            disk.write_atomic("x/file", b"v1").expect("write");
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    for _ in 0..5 {
        sim.step().unwrap();
    }
    sim.crash("a");
    sim.bounce("a");
    for _ in 0..5 {
        sim.step().unwrap();
    }
    assert_eq!(*boots.borrow(), vec![None, Some(b"v1".to_vec())]);
}

#[test]
fn request_reply_and_partition() {
    let mut sim = sim();
    sim.host("b", || async {
        let net = SimNet::bind(Rc::new(RefCell::new(FaultState::new(1, "b")))).await?;
        while let Some(inc) = net.accept().await {
            let _ = inc.reply.send([inc.from.as_str().as_bytes(), &inc.body].concat());
        }
        Ok(())
    });
    let results = Rc::new(RefCell::new(Vec::new()));
    let out = results.clone();
    sim.client("a", async move {
        let net = SimNet::bind(Rc::new(RefCell::new(FaultState::new(1, "a")))).await?;
        let b = NodeId::new("b").unwrap();
        let first = net.request(&b, b"!".to_vec()).await;
        out.borrow_mut().push(first);
        turmoil::partition("a", "b");
        let second = net.request(&b, b"?".to_vec()).await;
        out.borrow_mut().push(second);
        Ok(())
    });
    sim.run().unwrap();
    let r = results.borrow();
    assert_eq!(r[0], Ok(b"a!".to_vec()));
    assert!(matches!(r[1], Err(NetError::Unreachable { .. })), "{:?}", r[1]);
}

/// The env conformance suite (`igor::env::conformance`) on `SimDisk`: every
/// rule inside a host, then RE-1 across a turmoil crash and restart.
#[test]
fn sim_disk_meets_the_disk_contract() {
    use igor::env::conformance::{check_after_crash, disk_contract, write_before_crash};
    let mut sim = sim();
    let boot = Rc::new(RefCell::new(0u32));
    let (b, checked) = (boot.clone(), Rc::new(RefCell::new(false)));
    let done = checked.clone();
    sim.host("a", move || {
        let (b, done) = (b.clone(), done.clone());
        async move {
            let n = *b.borrow();
            *b.borrow_mut() += 1;
            if n == 0 {
                disk_contract(&SimDisk::default());
                // The crash comes from outside; the check runs on the next boot.
                write_before_crash(&SimDisk::default());
            } else {
                check_after_crash(&SimDisk::default());
                *done.borrow_mut() = true;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    for _ in 0..5 {
        sim.step().unwrap();
    }
    sim.crash("a");
    sim.bounce("a");
    for _ in 0..5 {
        sim.step().unwrap();
    }
    assert!(*checked.borrow(), "the host booted twice and checked after the crash");
}

/// The env conformance suite on `SimNet`, client and server on two hosts.
#[test]
fn sim_net_meets_the_network_contract() {
    use igor::env::conformance::{network_contract, serve};
    let mut sim = sim();
    sim.host("b", || async {
        let net = SimNet::bind(Rc::new(RefCell::new(FaultState::new(1, "b")))).await?;
        serve(&net).await;
        Ok(())
    });
    sim.client("a", async move {
        let net = SimNet::bind(Rc::new(RefCell::new(FaultState::new(1, "a")))).await?;
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        network_contract(&net, &a, &b, None).await;
        Ok(())
    });
    sim.run().unwrap();
}
