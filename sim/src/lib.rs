//! igor-sim: the deterministic simulator. The same `igor` node runs on
//! turmoil twins of the environment (`disk`, `net`, `clock`), driven by a RON
//! scenario; the checker watches the nodes' event streams for invariant
//! violations and the trace records every event canonically.

pub mod adversary;
pub mod byzantine;
pub mod checker;
pub mod clock;
pub mod coverage;
pub mod disk;
pub mod explore;
pub mod html;
pub mod matrix;
pub mod minimize;
pub mod net;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shards;
pub mod trace;
pub mod watchdog;
