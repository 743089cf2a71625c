//! Three replicas wired together by hand: elect a leader, order a few updates, print the result.
//!
//! Shows the whole driver contract in a few lines: feed inputs, persist batches, report them
//! durable, deliver messages. Run with `cargo run -p paxos-core --example three_replicas`.

use bytes::Bytes;
use paxos_core::{
    ClientId, ClientUpdate, Config, Destination, DurableState, Message, NodeId, PsbConfig,
    PsbViewChange, Replica, Seq, SnapshotError, StateMachine, Time, Timestamp,
};
use std::collections::VecDeque;
use std::time::Duration;

/// A state machine that appends every update to a list.
#[derive(Default)]
struct Append(Vec<String>);

impl StateMachine for Append {
    fn apply(&mut self, _seq: Seq, update: &ClientUpdate) -> Bytes {
        self.0
            .push(String::from_utf8_lossy(&update.payload).into_owned());
        Bytes::from(format!("{} entries", self.0.len()))
    }
    fn snapshot(&self) -> Bytes {
        Bytes::from(self.0.join("\n"))
    }
    fn restore(&mut self, s: &[u8]) -> Result<(), SnapshotError> {
        self.0 = String::from_utf8_lossy(s)
            .lines()
            .map(str::to_owned)
            .collect();
        Ok(())
    }
}

fn main() {
    let n = 3;
    let mut now = Time::ZERO;
    let mut replicas: Vec<Replica<Append, PsbViewChange>> = (0..n as u32)
        .map(|i| {
            let election = PsbViewChange::new(NodeId(i), n, PsbConfig::default());
            Replica::new(
                Config::new(NodeId(i), n),
                Append::default(),
                election,
                DurableState::default(),
                now,
            )
            .expect("valid configuration")
        })
        .collect();
    let mut disks = vec![DurableState::default(); n];
    let mut wire: VecDeque<(NodeId, NodeId, Message)> = VecDeque::new();

    // Drains one replica: persist its batches (a real driver writes and fsyncs here), then queue its
    // messages and print its client replies.
    fn drain(
        r: &mut Replica<Append, PsbViewChange>,
        disk: &mut DurableState,
        wire: &mut VecDeque<(NodeId, NodeId, Message)>,
        n: usize,
        now: Time,
    ) {
        while let Some(batch) = r.poll_persist() {
            disk.apply(&batch);
            r.handle_persisted(now, batch.id);
        }
        while let Some((to, m)) = r.poll_message() {
            let targets: Vec<u32> = match to {
                Destination::All => (0..n as u32).filter(|&j| j != r.id().0).collect(),
                Destination::Node(j) => vec![j.0],
            };
            for j in targets {
                wire.push_back((r.id(), NodeId(j), m.clone()));
            }
        }
        while let Some(reply) = r.poll_client_reply() {
            println!(
                "server {} replies to client {}: {}",
                r.id().0,
                reply.client_id.0,
                String::from_utf8_lossy(&reply.result)
            );
        }
    }
    let mut step = |replicas: &mut Vec<Replica<Append, PsbViewChange>>,
                    wire: &mut VecDeque<(NodeId, NodeId, Message)>,
                    now: Time| {
        for (i, r) in replicas.iter_mut().enumerate() {
            drain(r, &mut disks[i], wire, n, now);
        }
        while let Some((from, to, m)) = wire.pop_front() {
            let i = to.index();
            replicas[i].handle_message(now, from, m);
            drain(&mut replicas[i], &mut disks[i], wire, n, now);
        }
    };

    for _ in 0..20 {
        now = now + Duration::from_millis(5);
        for r in replicas.iter_mut() {
            r.handle_tick(now);
        }
        step(&mut replicas, &mut wire, now);
    }
    for (k, text) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let server = k % n;
        let update = ClientUpdate {
            client_id: ClientId(100 + k as u64),
            server_id: NodeId(server as u32),
            timestamp: Timestamp(1),
            payload: Bytes::from_static(text.as_bytes()),
        };
        replicas[server]
            .handle_client_update(now, update)
            .expect("update names its local server");
        step(&mut replicas, &mut wire, now);
    }
    for r in &replicas {
        let s = r.status();
        println!(
            "server {}: {:?} in {}, aru {}, log {:?}",
            s.id.0,
            s.state,
            s.last_installed,
            s.local_aru,
            r.state_machine().0
        );
    }
}
