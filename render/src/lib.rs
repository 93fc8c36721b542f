//! bevy rendering of the robot cell.
//!
//! * [`Renderer`]: headless, batched, synchronous rendering of the policy cameras of many
//!   simulated environments (scenes), returning RGB (and optionally depth) images.
//! * [`run_viewer`]: an interactive window showing the cell, the policy's own camera images
//!   (rendered by the same mirroring code) and a text overlay.
//!
//! Scenes are plain data ([`Body`], [`Visual`], [`Shape`], [`vla_core::Pose`]) in the
//! robotics world frame: **Z-up, right-handed, metres**. No rapier or bevy types cross the API.
//!
//! Threading: [`Renderer`] is `Send + Sync`; bevy runs on a thread the renderer owns, so it can
//! live on any thread. The viewer runs on the calling thread (winit event loop, once per
//! process).
//!
//! Without a GPU, rendering uses Mesa's lavapipe (`apt-get install -y mesa-vulkan-drivers
//! libvulkan1`; the viewer additionally needs an X server, e.g. `xvfb`). Logging goes through
//! `tracing`; bevy's own log plugin is not compiled in, so the application's subscriber is used.

mod bench;
mod headless;
mod material;
mod mirror;
mod readback;
mod types;
mod viewer;

pub use bench::{bench, demo_front_camera, demo_scene, demo_wrist_camera, BenchReport};
pub use headless::Renderer;
pub use types::{
    Body, CameraView, Frame, Lighting, RenderConfig, RenderError, SceneId, Shape, Visual,
};
pub use viewer::{run_viewer, ViewerConfig, ViewerDriver, ViewerStep};
