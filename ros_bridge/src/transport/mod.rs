//! Typed publish/subscribe over ROS 2, behind one small trait so that all logic (bridge,
//! safety, simulator node) is backend-free: `ros2-client` (RustDDS, no ROS installation) by
//! default, `r2r` (rcl, needs a sourced ROS 2) behind the `r2r` feature, and an in-process
//! bus for unit tests.

pub mod memory;
#[cfg(feature = "r2r")]
pub mod r2r;
pub mod ros2;

use serde::{Deserialize, Serialize};

use crate::msg::RosMessage;

/// Transport failures; the message names the topic and the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot set up {what} {topic:?}: {cause}")]
    Setup {
        what: &'static str,
        topic: String,
        cause: String,
    },
    #[error("cannot publish on {topic:?}: {cause}")]
    Publish { topic: String, cause: String },
    #[error("cannot read a message on {topic:?}: {cause}")]
    Receive { topic: String, cause: String },
    #[error("ROS_DOMAIN_ID={value:?} is not a domain id 0..=232")]
    DomainId { value: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    BestEffort,
    Reliable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    Volatile,
    /// Late joiners get the last `depth` samples (ROS "latched").
    TransientLocal,
}

/// The QoS a topic is opened with; the three profiles the bridge uses have constructors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qos {
    pub reliability: Reliability,
    pub durability: Durability,
    /// Keep-last history depth.
    pub depth: u32,
}

impl Qos {
    /// ROS "sensor data": best effort, volatile, keep last `depth` (never a backlog).
    pub fn sensor_data(depth: u32) -> Self {
        Qos {
            reliability: Reliability::BestEffort,
            durability: Durability::Volatile,
            depth: depth.max(1),
        }
    }

    /// Reliable, volatile (commands, diagnostics).
    pub fn reliable(depth: u32) -> Self {
        Qos {
            reliability: Reliability::Reliable,
            durability: Durability::Volatile,
            depth: depth.max(1),
        }
    }

    /// Reliable and transient local: a late subscriber still gets the latest value
    /// (the instruction, the success flag).
    pub fn latched(depth: u32) -> Self {
        Qos {
            reliability: Reliability::Reliable,
            durability: Durability::TransientLocal,
            depth: depth.max(1),
        }
    }
}

/// What a subscription callback receives: a message, or why one could not be read.
pub type Received<M> = Result<M, TransportError>;

/// Called for every sample, on a transport thread; keep it short (store and return).
pub type Callback<M> = Box<dyn FnMut(Received<M>) + Send>;

/// A typed publisher.
pub trait Publisher<M>: Send + Sync {
    fn publish(&self, msg: M) -> Result<(), TransportError>;

    /// Subscriptions matched to this publisher, where the transport knows it (DDS discovery):
    /// a node that must not talk before it is heard (a teleoperator's first episode marker)
    /// waits for it. `None`: unknown.
    fn subscribers(&self) -> Option<usize> {
        None
    }
}

/// A ROS 2 participant that can open typed topics.
pub trait Transport: Send {
    fn publisher<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publisher<M>>, TransportError>;

    fn subscribe<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
        callback: Callback<M>,
    ) -> Result<(), TransportError>;
}

/// The DDS domain from `ROS_DOMAIN_ID` (0 when unset or empty), as ROS 2 tools read it.
pub fn domain_id_from_env() -> Result<u16, TransportError> {
    match std::env::var("ROS_DOMAIN_ID") {
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|d| *d <= 232)
            .ok_or(TransportError::DomainId { value: v }),
        Err(_) => Ok(0),
    }
}
