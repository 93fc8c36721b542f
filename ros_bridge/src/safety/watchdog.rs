//! Stops: the watchdog (stale inputs) and the latched emergency stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Command, CommandSink, Interventions, SinkError};

#[derive(Debug, Default, Clone, Copy)]
struct Stamps {
    images: Option<Instant>,
    instruction: Option<Instant>,
    model: Option<Instant>,
}

/// When each input was last refreshed; written by the node, read by the [`Watchdog`].
#[derive(Clone, Debug, Default)]
pub struct Freshness {
    stamps: Arc<Mutex<Stamps>>,
}

impl Freshness {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&self, f: impl FnOnce(&mut Stamps)) {
        if let Ok(mut s) = self.stamps.lock() {
            f(&mut s);
        }
    }

    /// A complete set of camera images arrived at `at`.
    pub fn images(&self, at: Instant) {
        self.set(|s| s.images = Some(at));
    }

    /// A non-empty instruction is in force since `at`; `None` when it became empty.
    pub fn instruction(&self, at: Option<Instant>) {
        self.set(|s| s.instruction = at);
    }

    /// The model produced an output at `at`.
    pub fn model(&self, at: Instant) {
        self.set(|s| s.model = Some(at));
    }

    /// The first stale input at `now`, if any.
    pub fn stale(
        &self,
        now: Instant,
        timeout: Duration,
        instruction_timeout: Option<Duration>,
    ) -> Option<&'static str> {
        let s = self.stamps.lock().map(|s| *s).unwrap_or_default();
        let old = |t: Option<Instant>, limit: Duration| {
            t.is_none_or(|t| now.saturating_duration_since(t) > limit)
        };
        if old(s.images, timeout) {
            Some("images")
        } else if s.instruction.is_none()
            || instruction_timeout.is_some_and(|limit| old(s.instruction, limit))
        {
            Some("instruction")
        } else if old(s.model, timeout) {
            Some("model")
        } else {
            None
        }
    }
}

/// Zero twist and hold while images or model output are older than `timeout`
/// (default: one control period + 100 ms, like MoveIt Servo's `incoming_command_timeout`)
/// or there is no instruction (optionally: an instruction older than its own timeout).
pub struct Watchdog<S> {
    inner: S,
    freshness: Freshness,
    timeout: Duration,
    instruction_timeout: Option<Duration>,
    counts: Arc<Interventions>,
    tripped: Option<&'static str>,
}

impl<S: CommandSink> Watchdog<S> {
    pub fn new(
        inner: S,
        freshness: Freshness,
        timeout: Duration,
        instruction_timeout: Option<Duration>,
        counts: Arc<Interventions>,
    ) -> Self {
        Watchdog {
            inner,
            freshness,
            timeout,
            instruction_timeout,
            counts,
            tripped: None,
        }
    }
}

impl<S: CommandSink> CommandSink for Watchdog<S> {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        let stale = self
            .freshness
            .stale(Instant::now(), self.timeout, self.instruction_timeout);
        if stale != self.tripped {
            match stale {
                Some(what) => tracing::warn!("watchdog: {what} stale, holding"),
                None => tracing::info!("watchdog: inputs fresh again"),
            }
            self.tripped = stale;
        }
        if stale.is_some() {
            Interventions::bump(&self.counts.watchdog);
            return self.inner.send(Command::stop());
        }
        self.inner.send(cmd)
    }
}

/// Shared latch: triggered by `/vla/estop`, cleared only by an explicit reset.
#[derive(Clone, Debug, Default)]
pub struct EstopHandle {
    latched: Arc<AtomicBool>,
}

impl EstopHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        if !self.latched.swap(true, Ordering::SeqCst) {
            tracing::warn!("emergency stop latched");
        }
    }

    pub fn clear(&self) {
        if self.latched.swap(false, Ordering::SeqCst) {
            tracing::warn!("emergency stop cleared");
        }
    }

    pub fn is_latched(&self) -> bool {
        self.latched.load(Ordering::SeqCst)
    }
}

/// While latched, every command becomes a stop (gripper kept).
pub struct EmergencyStop<S> {
    inner: S,
    handle: EstopHandle,
    counts: Arc<Interventions>,
}

impl<S: CommandSink> EmergencyStop<S> {
    pub fn new(inner: S, handle: EstopHandle, counts: Arc<Interventions>) -> Self {
        EmergencyStop {
            inner,
            handle,
            counts,
        }
    }
}

impl<S: CommandSink> CommandSink for EmergencyStop<S> {
    fn send(&mut self, cmd: Command) -> Result<Command, SinkError> {
        if self.handle.is_latched() {
            Interventions::bump(&self.counts.estop);
            return self.inner.send(Command::stop());
        }
        self.inner.send(cmd)
    }
}
