//! Plain-data description of what to draw. No bevy or rapier types appear here, so the
//! simulator can build scenes without depending on either engine's math library.

use serde::{Deserialize, Serialize};
use vla_core::{Pose, RgbImage};

/// Settings fixed for the lifetime of a [`crate::Renderer`].
///
/// Defaults: 128×128, **no shadows, no MSAA**. Measured on lavapipe with 2 CPU cores (one env,
/// front + wrist camera per step): plain 7.7 ms/step (≈130 steps/s), MSAA 10 ms, shadows
/// 15 ms, both 29 ms (≈34 steps/s). The simulator needs ≥ 60 env steps/s on 2 cores shared
/// with physics, so both are off by default. Switch them on freely with a real GPU, but use
/// the same setting for data collection and evaluation: the policy learns the look.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenderConfig {
    /// Image width in pixels (every view has the same size).
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Directional-light shadow maps (one cascade fitted to a table-top cell).
    pub shadows: bool,
    /// 4× multisample anti-aliasing. Must be off when `depth` is on (a multisampled depth
    /// buffer cannot be copied out).
    pub msaa: bool,
    /// Also return a metric depth image with every [`Frame`].
    pub depth: bool,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            width: 128,
            height: 128,
            shadows: false,
            msaa: false,
            depth: false,
        }
    }
}

/// Collision-free visual geometry. Cylinder and capsule axes run along the visual's LOCAL +Y
/// (the convention of rapier and bevy), so a shape converted from a rapier collider needs no
/// extra rotation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Box centred on the visual frame; `half_extents` in metres along local x, y, z.
    Cuboid { half_extents: [f32; 3] },
    /// Cylinder along local Y, total length `2 * half_height`.
    Cylinder { radius: f32, half_height: f32 },
    /// Sphere centred on the visual frame.
    Sphere { radius: f32 },
    /// Capsule along local Y: a cylinder of length `2 * half_height` with hemispherical caps.
    Capsule { radius: f32, half_height: f32 },
}

impl Shape {
    /// Every size must be finite and positive (zero-sized meshes break normals and bevy's
    /// bounding boxes).
    pub(crate) fn is_valid(&self) -> bool {
        let ok = |v: f32| v.is_finite() && v > 0.0;
        match *self {
            Shape::Cuboid { half_extents } => half_extents.iter().all(|&v| ok(v)),
            Shape::Cylinder {
                radius,
                half_height,
            }
            | Shape::Capsule {
                radius,
                half_height,
            } => ok(radius) && ok(half_height),
            Shape::Sphere { radius } => ok(radius),
        }
    }
}

fn default_roughness() -> f32 {
    0.7
}

/// One coloured shape rigidly attached to a body.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Visual {
    /// Geometry.
    pub shape: Shape,
    /// Offset of the shape from the body frame (a link's visual origin in URDF terms).
    #[serde(default)]
    pub local: Pose,
    /// sRGB colour 0..1; alpha < 1 renders the shape alpha-blended.
    pub color: [f32; 4],
    /// PBR metalness 0..1 (default 0: plastic/wood, which is most of a table-top cell).
    #[serde(default)]
    pub metallic: f32,
    /// PBR perceptual roughness 0..1 (default 0.7: matte, few highlights that would make the
    /// policy sensitive to the light direction).
    #[serde(default = "default_roughness")]
    pub roughness: f32,
}

impl Visual {
    /// A matte, non-metallic shape at the body origin: the common case.
    pub fn new(shape: Shape, color: [f32; 4]) -> Self {
        Visual {
            shape,
            local: Pose::IDENTITY,
            color,
            metallic: 0.0,
            roughness: default_roughness(),
        }
    }

    /// Same visual, offset from the body frame.
    pub fn with_local(mut self, local: Pose) -> Self {
        self.local = local;
        self
    }
}

/// One rigid body (or articulated link) made of several visuals; `pose` is where the body
/// frame is in the world (Z-up) at scene creation, later moved by
/// [`crate::Renderer::set_poses`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub visuals: Vec<Visual>,
    #[serde(default)]
    pub pose: Pose,
}

pub use vla_core::CameraView;

/// Per-scene lighting, so that domain randomisation can vary it per environment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lighting {
    /// Direction the sunlight travels, world frame (Z-up); need not be normalised.
    /// `[0, 0, -1]` is light straight from above.
    pub sun_direction: [f32; 3],
    /// Sun illuminance in lux (bevy's physical units, with bevy's default camera exposure).
    pub sun_illuminance: f32,
    /// Ambient light in cd/m² (bevy's `AmbientLight::brightness`): lifts shadowed faces.
    pub ambient_brightness: f32,
    /// Linear RGB colour of the sun, 0..1.
    pub sun_color: [f32; 3],
}

impl Default for Lighting {
    /// A bright, slightly oblique overhead light: every face of a box on a table is
    /// distinguishable, and colours are not washed out.
    fn default() -> Self {
        Lighting {
            sun_direction: [0.3, 0.4, -1.0],
            sun_illuminance: 2500.0,
            ambient_brightness: 600.0,
            sun_color: [1.0, 1.0, 1.0],
        }
    }
}

/// One rendered view.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The colour image (sRGB, 8 bits per channel).
    pub rgb: RgbImage,
    /// Distance along the optical axis in metres, row-major, `width * height` values,
    /// `f32::INFINITY` where nothing was hit. Only when [`RenderConfig::depth`] is set.
    pub depth: Option<Vec<f32>>,
}

/// Handle to one simulated environment's scene inside a [`crate::Renderer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SceneId(pub(crate) u32);

impl SceneId {
    /// The raw index, for logging.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// Everything that can go wrong; rendering never panics on caller data.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No GPU / Vulkan driver: headless rendering on a CPU needs lavapipe.
    #[error(
        "no graphics adapter found ({0}); on Debian/Ubuntu install a Vulkan driver, e.g. \
         `apt-get install -y mesa-vulkan-drivers libvulkan1` (lavapipe, CPU rendering)"
    )]
    NoAdapter(String),
    /// The renderer failed to start for another reason.
    #[error("renderer initialisation failed: {0}")]
    Init(String),
    /// A [`RenderConfig`] / [`crate::ViewerConfig`] value is out of range.
    #[error("invalid render config: {0}")]
    InvalidConfig(String),
    /// The scene id was never returned by `add_scene` of this renderer (or was removed).
    #[error("unknown scene {0:?}")]
    UnknownScene(SceneId),
    /// Scene data is unusable (non-finite or non-positive sizes, non-finite poses...).
    #[error("invalid scene data: {0}")]
    InvalidScene(String),
    /// `set_poses` was given a different number of poses than the scene has bodies.
    #[error("scene {scene:?} has {expected} bodies but {got} poses were given")]
    PoseCount {
        scene: SceneId,
        expected: usize,
        got: usize,
    },
    /// A pose contained NaN/inf or a zero quaternion; that body kept its previous pose,
    /// the other bodies were updated.
    #[error("scene {scene:?}: invalid pose for body {body} (non-finite or zero quaternion); body left where it was")]
    InvalidPose { scene: SceneId, body: usize },
    /// A camera view is unusable (non-finite, eye == target, up parallel to the view, fov
    /// outside (0, 180)).
    #[error("invalid camera view #{index}: {reason}")]
    InvalidCamera { index: usize, reason: String },
    /// The GPU did not produce a complete frame in time (shaders still compiling...).
    #[error("rendering did not complete: {0}")]
    NotReady(String),
    /// The render thread died (a bug in bevy/wgpu or in this crate); the renderer is unusable.
    #[error("render thread stopped: {0}")]
    Disconnected(String),
    /// Window system failure in the viewer.
    #[error("viewer: {0}")]
    Viewer(String),
}
