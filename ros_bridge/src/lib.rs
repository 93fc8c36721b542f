//! The ROS 2 bridge: a sentence on a topic and camera images in, safe robot commands out;
//! and the simulator as a ROS 2 robot, so the whole path runs on one machine.
//!
//! Modules by concern, in the style of openrr's `arci`: [`msg`] (standard ROS 2 messages as
//! serde structs), [`transport`] (publish/subscribe behind a trait: ros2-client by default,
//! r2r behind a feature), [`image`] (camera messages to policy images), [`safety`]
//! (command-sink decorators: limits, watchdog, emergency stop), [`output`] (commands to
//! MoveIt Servo / ros2_control messages), [`bridge`] (the node), [`config`] (TOML +
//! overrides), `sim_node` (the simulator as a robot; the `sim` feature, on by default: a
//! robot's build leaves it out and needs no rapier or bevy), [`netns`] (test isolation),
//! [`mcap_import`] (rosbag2 MCAP recordings to dataset frames, for `vla dataset from-mcap`),
//! [`record`] (live demonstrations sampled from a robot's topics, for `vla ros record`).

pub mod bridge;
pub mod config;
pub mod image;
pub mod mcap_import;
pub mod msg;
pub mod netns;
pub mod output;
pub mod record;
pub mod safety;
#[cfg(feature = "sim")]
pub mod sim_node;
pub mod transport;

pub use bridge::{ActionSource, Bridge, BridgeStats, PolicyOutput, TickRecord};
pub use config::BridgeConfig;
pub use transport::{ros2::Ros2Transport, Transport};
