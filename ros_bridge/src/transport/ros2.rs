//! The default backend: `ros2-client` 0.12 on RustDDS. Speaks the ROS 2 wire protocol
//! (RTPS + CDR, `rt/` topic prefix, `pkg::msg::dds_::Name_` types) with no ROS installation.
//!
//! Discovery: RustDDS announces SPDP both to the multicast group and, since 0.15, to
//! `127.0.0.1` unicast peers, so two participants find each other on one host even inside
//! a network namespace that only has `lo` (no multicast route needed). Each subscription
//! gets a reader thread that hands samples to its callback as they arrive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use ros2_client::dds::rustdds::DomainParticipantBuilder;
use ros2_client::{qos, Context, MessageTypeName, Name, Node, NodeName, NodeOptions, QosProfile};

use super::{Callback, Durability, Publisher, Qos, Reliability, Transport, TransportError};
use crate::msg::RosMessage;

/// One DDS participant with one ROS node.
pub struct Ros2Transport {
    /// Shared with the publishers, which ask it for their matched subscriptions.
    node: Arc<Mutex<Node>>,
    // Kept so the participant lives as long as the transport.
    _context: Context,
    stop: Arc<AtomicBool>,
}

impl Ros2Transport {
    /// A node named `name` in the domain of `ROS_DOMAIN_ID`.
    pub fn new(name: &str) -> Result<Self, TransportError> {
        Self::with_domain(name, super::domain_id_from_env()?)
    }

    pub fn with_domain(name: &str, domain_id: u16) -> Result<Self, TransportError> {
        let setup = |cause: String| setup_error("ROS 2 node", name, cause);
        let participant = DomainParticipantBuilder::new(domain_id)
            .build()
            .map_err(|e| setup(format!("DDS participant in domain {domain_id}: {e:?}")))?;
        let context =
            Context::from_domain_participant(participant).map_err(|e| setup(format!("{e:?}")))?;
        let node_name = NodeName::new("/", name).map_err(|e| setup(format!("{e:?}")))?;
        let mut node = context
            .new_node(node_name, NodeOptions::new().enable_rosout(false))
            .map_err(|e| setup(format!("{e:?}")))?;
        // The spinner answers graph queries (`ros2 node list`) and tracks matching.
        match node.spinner() {
            Ok(spinner) => {
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-spin"))
                    .spawn(move || {
                        if let Err(e) = futures::executor::block_on(spinner.spin()) {
                            tracing::warn!("ROS 2 spinner stopped: {e:?}");
                        }
                    });
                if let Err(e) = spawned {
                    return Err(setup(format!("cannot start the spinner thread: {e}")));
                }
            }
            Err(e) => tracing::warn!("no ROS 2 spinner: {e:?}"),
        }
        tracing::debug!(
            domain_id,
            node = name,
            "ROS 2 node up (ros2-client/RustDDS)"
        );
        Ok(Ros2Transport {
            node: Arc::new(Mutex::new(node)),
            _context: context,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    fn topic<M: RosMessage>(
        &mut self,
        what: &'static str,
        topic: &str,
        qos: &QosProfile,
    ) -> Result<ros2_client::dds::rustdds::Topic, TransportError> {
        let setup = |cause: String| setup_error(what, topic, cause);
        let name = Name::parse(topic).map_err(|e| setup(format!("bad topic name: {e:?}")))?;
        let type_name = if M::KIND == "msg" {
            MessageTypeName::new(M::PACKAGE, M::NAME)
        } else {
            // ros2-client only builds `pkg::msg::dds_::` names; action parts are
            // not sent on plain topics by this bridge.
            return Err(setup(format!(
                "{} is not a plain message type",
                M::ros_type()
            )));
        };
        self.node
            .lock()
            .map_err(|_| setup("the node's lock is poisoned".into()))?
            .create_topic(&name, type_name, qos)
            .map_err(|e| setup(format!("{e:?}")))
    }
}

impl Drop for Ros2Transport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Our QoS in ros2-client terms.
/// A node, topic, publisher, subscription or thread that could not be set up.
fn setup_error(what: &'static str, topic: &str, cause: String) -> TransportError {
    TransportError::Setup {
        what,
        topic: topic.to_string(),
        cause,
    }
}

pub fn profile(q: Qos) -> QosProfile {
    let mut p = QosProfile::subscription_default();
    p.reliability = match q.reliability {
        Reliability::BestEffort => qos::Reliability::BestEffort,
        Reliability::Reliable => qos::Reliability::Reliable {
            when_full: qos::WhenFull::DEFAULT,
        },
    };
    p.durability = match q.durability {
        Durability::Volatile => qos::Durability::Volatile,
        Durability::TransientLocal => qos::Durability::TransientLocal,
    };
    p.history = qos::History::KeepLast {
        depth: q.depth.max(1) as usize,
    };
    p
}

/// A write error without the message it carries back (which may be megabytes of pixels).
fn write_error<M>(e: &ros2_client::WriteError<M>) -> String {
    use ros2_client::WriteError as W;
    match e {
        W::Serialization { reason, .. } => format!("serialisation: {reason}"),
        W::Poisoned { reason, .. } => format!("poisoned: {reason}"),
        W::Io(e) => format!("I/O: {e}"),
        W::WouldBlock { .. } => "would block (send window full)".into(),
        W::Internal { reason } => format!("internal: {reason}"),
        W::Middleware { reason, .. } => format!("middleware: {reason}"),
        #[allow(unreachable_patterns)]
        _ => "write failed".into(),
    }
}

struct Ros2Publisher<M: RosMessage> {
    inner: ros2_client::Publisher<M>,
    topic: String,
    node: Arc<Mutex<Node>>,
}

impl<M: RosMessage> Publisher<M> for Ros2Publisher<M> {
    fn publish(&self, msg: M) -> Result<(), TransportError> {
        self.inner
            .publish(msg)
            .map_err(|e| TransportError::Publish {
                topic: self.topic.clone(),
                cause: write_error(&e),
            })
    }

    fn subscribers(&self) -> Option<usize> {
        let node = self.node.lock().ok()?;
        Some(self.inner.get_subscription_count(&node))
    }
}

impl Transport for Ros2Transport {
    fn publisher<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publisher<M>>, TransportError> {
        let profile = profile(qos);
        let t = self.topic::<M>("publisher", topic, &profile)?;
        let inner = self
            .node
            .lock()
            .map_err(|_| setup_error("publisher", topic, "the node's lock is poisoned".into()))?
            .create_publisher::<M>(&t, Some(profile))
            .map_err(|e| setup_error("publisher", topic, format!("{e:?}")))?;
        Ok(Box::new(Ros2Publisher {
            inner,
            topic: topic.to_string(),
            node: self.node.clone(),
        }))
    }

    fn subscribe<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
        mut callback: Callback<M>,
    ) -> Result<(), TransportError> {
        let profile = profile(qos);
        let t = self.topic::<M>("subscription", topic, &profile)?;
        let sub = self
            .node
            .lock()
            .map_err(|_| setup_error("subscription", topic, "the node's lock is poisoned".into()))?
            .create_subscription::<M>(&t, Some(profile))
            .map_err(|e| setup_error("subscription", topic, format!("{e:?}")))?;
        let stop = self.stop.clone();
        let name = topic.to_string();
        std::thread::Builder::new()
            .name(format!("sub{}", topic.replace('/', "-")))
            .spawn(move || {
                futures::executor::block_on(async {
                    let stream = sub.async_stream();
                    futures::pin_mut!(stream);
                    while let Some(item) = stream.next().await {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        callback(
                            item.map(|(m, _info)| m)
                                .map_err(|e| TransportError::Receive {
                                    topic: name.clone(),
                                    cause: format!("{e:?}"),
                                }),
                        );
                    }
                })
            })
            .map_err(|e| setup_error("subscription thread", topic, e.to_string()))?;
        Ok(())
    }
}
