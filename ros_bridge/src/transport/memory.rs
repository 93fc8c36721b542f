//! An in-process bus with the same semantics the bridge relies on (latched topics replay
//! their last sample to late subscribers), so node logic is unit-tested without DDS.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Callback, Durability, Publisher, Qos, Transport, TransportError};
use crate::msg::RosMessage;

type ErasedCallback = Box<dyn FnMut(&dyn Any) + Send>;

#[derive(Default)]
struct TopicState {
    subscribers: Vec<ErasedCallback>,
    latched: Option<Box<dyn Any + Send>>,
}

/// A shared bus; clone it to give several "nodes" the same topics.
#[derive(Clone, Default)]
pub struct MemoryBus {
    topics: Arc<Mutex<HashMap<String, TopicState>>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryPublisher<M> {
    bus: MemoryBus,
    topic: String,
    latched: bool,
    _m: std::marker::PhantomData<fn(M)>,
}

impl<M: RosMessage> Publisher<M> for MemoryPublisher<M> {
    fn publish(&self, msg: M) -> Result<(), TransportError> {
        let mut topics = self
            .bus
            .topics
            .lock()
            .map_err(|_| TransportError::Publish {
                topic: self.topic.clone(),
                cause: "bus lock poisoned".into(),
            })?;
        let state = topics.entry(self.topic.clone()).or_default();
        for cb in state.subscribers.iter_mut() {
            cb(&msg);
        }
        if self.latched {
            state.latched = Some(Box::new(msg));
        }
        Ok(())
    }

    fn subscribers(&self) -> Option<usize> {
        let topics = self.bus.topics.lock().ok()?;
        Some(topics.get(&self.topic).map_or(0, |t| t.subscribers.len()))
    }
}

impl Transport for MemoryBus {
    fn publisher<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
    ) -> Result<Box<dyn Publisher<M>>, TransportError> {
        Ok(Box::new(MemoryPublisher::<M> {
            bus: self.clone(),
            topic: topic.to_string(),
            latched: qos.durability == Durability::TransientLocal,
            _m: std::marker::PhantomData,
        }))
    }

    fn subscribe<M: RosMessage>(
        &mut self,
        topic: &str,
        qos: Qos,
        mut callback: Callback<M>,
    ) -> Result<(), TransportError> {
        let mut topics = self.topics.lock().map_err(|_| TransportError::Setup {
            what: "subscription",
            topic: topic.to_string(),
            cause: "bus lock poisoned".into(),
        })?;
        let state = topics.entry(topic.to_string()).or_default();
        if qos.durability == Durability::TransientLocal {
            if let Some(m) = state.latched.as_ref().and_then(|m| m.downcast_ref::<M>()) {
                callback(Ok(m.clone()));
            }
        }
        state.subscribers.push(Box::new(move |any: &dyn Any| {
            if let Some(m) = any.downcast_ref::<M>() {
                callback(Ok(m.clone()));
            }
        }));
        Ok(())
    }
}
