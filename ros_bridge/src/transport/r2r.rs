//! The `r2r` backend (cargo feature `r2r`): rcl from a sourced ROS 2 installation, for
//! machines that want ROS 2's own middleware (Fast DDS, Cyclone, Zenoh) and its tooling.
//!
//! Deliberately thin: it moves CDR bytes. Messages are serialised with the same serde
//! structs as the default backend and handed to rcl as pre-serialised data
//! (`publish_raw` / `subscribe_raw`), so no r2r message code generation is involved.
//! It is NOT built in CI: r2r needs ROS 2 headers and libraries at build time, and no
//! ROS 2 packages exist for the Debian release this project is developed on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use super::{Callback, Durability, Publisher, Qos, Reliability, Transport, TransportError};
use crate::msg::{from_cdr, to_cdr, RosMessage};

/// CDR little-endian encapsulation header (representation id 0x0001, options 0).
const CDR_LE_HEADER: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

/// One rcl node, spun by a background thread.
pub struct R2rTransport {
    node: Arc<Mutex<r2r::Node>>,
    stop: Arc<AtomicBool>,
}

impl R2rTransport {
    /// `ROS_DOMAIN_ID` is read by rcl itself.
    pub fn new(name: &str) -> Result<Self, TransportError> {
        let setup = |cause: String| TransportError::Setup {
            what: "r2r node",
            topic: name.to_string(),
            cause,
        };
        let ctx = r2r::Context::create().map_err(|e| setup(e.to_string()))?;
        let node = r2r::Node::create(ctx, name, "").map_err(|e| setup(e.to_string()))?;
        let node = Arc::new(Mutex::new(node));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (node.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("{name}-r2r-spin"))
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match n.lock() {
                        Ok(mut node) => node.spin_once(std::time::Duration::from_millis(5)),
                        Err(_) => break,
                    }
                    std::thread::yield_now();
                }
            })
            .map_err(|e| setup(e.to_string()))?;
        Ok(R2rTransport { node, stop })
    }
}

impl Drop for R2rTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn profile(q: Qos) -> r2r::QosProfile {
    let p = r2r::QosProfile::default().keep_last(q.depth.max(1) as usize);
    let p = match q.reliability {
        Reliability::BestEffort => p.best_effort(),
        Reliability::Reliable => p.reliable(),
    };
    match q.durability {
        Durability::Volatile => p.volatile(),
        Durability::TransientLocal => p.transient_local(),
    }
}

struct R2rPublisher {
    inner: Mutex<r2r::PublisherUntyped>,
    topic: String,
}

impl<M: RosMessage> Publisher<M> for R2rPublisher {
    fn publish(&self, msg: M) -> Result<(), TransportError> {
        let err = |cause: String| TransportError::Publish {
            topic: self.topic.clone(),
            cause,
        };
        let mut bytes = CDR_LE_HEADER.to_vec();
        bytes.extend(to_cdr(&msg).map_err(err)?);
        let publisher = self.inner.lock().map_err(|_| err("lock poisoned".into()))?;
        publisher
            .publish_raw(&bytes)
            .map_err(|e| err(e.to_string()))
    }
}

impl Transport for R2rTransport {
    fn publisher<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publisher<M>>, TransportError> {
        let setup = |cause: String| TransportError::Setup {
            what: "publisher",
            topic: topic.to_string(),
            cause,
        };
        let mut node = self
            .node
            .lock()
            .map_err(|_| setup("lock poisoned".into()))?;
        let inner = node
            .create_publisher_untyped(topic, &M::ros_type(), profile(qos))
            .map_err(|e| setup(e.to_string()))?;
        Ok(Box::new(R2rPublisher {
            inner: Mutex::new(inner),
            topic: topic.to_string(),
        }))
    }

    fn subscribe<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
        mut callback: Callback<M>,
    ) -> Result<(), TransportError> {
        let setup = |cause: String| TransportError::Setup {
            what: "subscription",
            topic: topic.to_string(),
            cause,
        };
        let stream = {
            let mut node = self
                .node
                .lock()
                .map_err(|_| setup("lock poisoned".into()))?;
            node.subscribe_raw(topic, &M::ros_type(), profile(qos))
                .map_err(|e| setup(e.to_string()))?
        };
        let name = topic.to_string();
        let stop = self.stop.clone();
        std::thread::Builder::new()
            .name(format!("r2r-sub{}", topic.replace('/', "-")))
            .spawn(move || {
                futures::executor::block_on(stream.for_each(|bytes| {
                    if !stop.load(Ordering::Relaxed) {
                        let decoded = match bytes.get(..4) {
                            Some(h) if h == CDR_LE_HEADER => from_cdr::<M>(&bytes[4..]),
                            Some(h) => Err(format!("unsupported CDR encapsulation {h:02x?}")),
                            None => Err("sample shorter than its CDR header".into()),
                        };
                        callback(decoded.map_err(|cause| TransportError::Receive {
                            topic: name.clone(),
                            cause,
                        }));
                    }
                    futures::future::ready(())
                }))
            })
            .map_err(|e| setup(e.to_string()))?;
        Ok(())
    }
}
