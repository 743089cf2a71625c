//! Three nodes in one process over an in-test channel network: elect, serve clients, survive the
//! leader's shutdown, and agree.

use async_trait::async_trait;
use bytes::Bytes;
use paxos_core::{Config, DurableState, Envelope, NodeId, PersistBatch, PsbConfig, PsbViewChange};
use paxos_node::client::{status, Client};
use paxos_node::kv::{KvResult, KvStore};
use paxos_node::node::{start, DurableLog, Network, NodeConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

struct MemLog(Arc<Mutex<DurableState>>);

impl DurableLog for MemLog {
    fn load(&mut self) -> Result<DurableState, String> {
        let mut s = self.0.lock().unwrap();
        s.incarnation += 1;
        Ok(s.clone())
    }
    fn append(&mut self, batches: &[PersistBatch], _sync: bool) -> Result<(), String> {
        let mut s = self.0.lock().unwrap();
        for b in batches {
            s.apply(b);
        }
        Ok(())
    }
}

struct ChanNet {
    me: NodeId,
    peers: Vec<mpsc::UnboundedSender<(NodeId, Envelope)>>,
    inbox: tokio::sync::Mutex<mpsc::UnboundedReceiver<(NodeId, Envelope)>>,
}

#[async_trait]
impl Network for ChanNet {
    async fn send_to(&self, to: NodeId, env: &Envelope) -> Result<(), String> {
        let _ = self.peers[to.index()].send((self.me, env.clone()));
        Ok(())
    }
    async fn send_to_all(&self, env: &Envelope) -> Result<(), String> {
        for (i, p) in self.peers.iter().enumerate() {
            if i != self.me.index() {
                let _ = p.send((self.me, env.clone()));
            }
        }
        Ok(())
    }
    async fn receive(&self) -> Result<(NodeId, Envelope), String> {
        self.inbox
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| "closed".to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_clients_and_survive_leader_loss() {
    let n = 3;
    let mut senders = vec![];
    let mut inboxes = vec![];
    for _ in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        inboxes.push(rx);
    }
    let disks: Vec<_> = (0..n)
        .map(|_| Arc::new(Mutex::new(DurableState::default())))
        .collect();
    let mut handles = vec![];
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let me = NodeId(i as u32);
        let net = Arc::new(ChanNet {
            me,
            peers: senders.clone(),
            inbox: tokio::sync::Mutex::new(inbox),
        });
        let cfg = NodeConfig::new(Config::new(me, n), "127.0.0.1:0".parse().unwrap());
        let election = PsbViewChange::new(
            me,
            n,
            PsbConfig {
                progress_timeout: Duration::from_millis(300),
                max_progress_timeout: Duration::from_secs(3),
                resend_interval: Duration::from_millis(30),
            },
        );
        let h = start(cfg, KvStore::new(), election, MemLog(disks[i].clone()), net)
            .await
            .unwrap();
        handles.push(Some(h));
    }
    let addrs: Vec<_> = handles
        .iter()
        .map(|h| h.as_ref().unwrap().client_addr())
        .collect();
    let mut client = Client::new(addrs.clone());
    for k in 0..20u32 {
        let r = client
            .put(Bytes::from(format!("k{k}")), Bytes::from(format!("v{k}")))
            .await
            .unwrap();
        assert_eq!(r, KvResult::Done);
    }
    assert_eq!(client.get("k7").await.unwrap(), Some(Bytes::from("v7")));

    // Stop the leader; the others elect a new one and keep serving.
    let mut leader = None;
    for (i, a) in addrs.iter().enumerate() {
        let st = status(*a, Duration::from_secs(2)).await.unwrap();
        if st.role == "leader" {
            leader = Some(i);
        }
    }
    let leader = leader.expect("a leader");
    handles[leader].take().unwrap().shutdown().await.unwrap();
    let others: Vec<_> = (0..n).filter(|&i| i != leader).map(|i| addrs[i]).collect();
    let mut client = Client::new(others.clone());
    for k in 20..30u32 {
        let r = client
            .put(Bytes::from(format!("k{k}")), Bytes::from(format!("v{k}")))
            .await
            .unwrap();
        assert_eq!(r, KvResult::Done);
    }
    assert_eq!(client.get("k25").await.unwrap(), Some(Bytes::from("v25")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = status(others[0], Duration::from_secs(2)).await.unwrap();
    let b = status(others[1], Duration::from_secs(2)).await.unwrap();
    assert_eq!(a.aru, b.aru);
    assert_eq!(a.state_digest, b.state_digest);
    for h in handles.into_iter().flatten() {
        h.shutdown().await.unwrap();
    }
}
