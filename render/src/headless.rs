//! The headless renderer: a bevy `App` without a window, owned by a dedicated thread.
//!
//! Why a thread: a bevy `App` is not `Send` (its runner closure, thread-bound resources), but
//! the simulator wants to own the renderer wherever it likes. The thread also turns a panic
//! deep inside bevy/wgpu into a [`RenderError::Disconnected`] instead of taking the caller
//! down. Commands are processed strictly in order, so `set_poses` followed by `render`
//! always renders the new poses.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bevy::app::{PluginsState, TerminalCtrlCHandlerPlugin};
use bevy::camera::visibility::RenderLayers;
use bevy::light::DirectionalLightShadowMap;
use bevy::prelude::*;
use bevy::render::extract_component::ExtractComponentPlugin;
use bevy::render::render_resource::WgpuAdapterInfo;
use bevy::render::renderer::RenderAdapterInfo;
use bevy::render::{Render, RenderApp, RenderSystems};
use bevy::window::ExitCondition;
use vla_core::{Pose, RgbImage};

use crate::mirror::{self, SceneMirror, Slot, SlotIndex};
use crate::readback::{readback_system, ReadbackState, Request, SharedReadback};
use crate::types::{Body, CameraView, Frame, Lighting, RenderConfig, RenderError, SceneId};

/// Updates allowed for one `render` call to produce a complete frame (normally 1; a few
/// more when a new material or shape first appears and its pipeline compiles).
const MAX_UPDATES_PER_RENDER: usize = 64;
/// Limit for the warm-up in `Renderer::new` (all shaders compile there).
const WARMUP_TIMEOUT: Duration = Duration::from_secs(300);

/// Shadow map resolution: the cell is ~2 m across, 1024 texels give ~2 mm texels, far finer
/// than a 128-pixel image needs (bevy's default 2048 costs 4× the fill on a CPU).
const SHADOW_MAP_SIZE: usize = 1024;

enum Cmd {
    AddScene {
        id: u32,
        bodies: Vec<Body>,
        background: [f32; 3],
        lighting: Lighting,
    },
    Rebuild {
        id: u32,
        bodies: Vec<Body>,
        background: [f32; 3],
        lighting: Lighting,
    },
    Remove {
        id: u32,
    },
    SetPoses {
        id: u32,
        poses: Vec<Pose>,
    },
    Render {
        views: Vec<(u32, Transform, f32)>,
        reply: mpsc::Sender<Result<Vec<Frame>, RenderError>>,
    },
}

/// Renders the robot cell(s) offscreen and returns images.
///
/// Each simulated environment is a *scene* ([`Renderer::add_scene`]); scenes live on separate
/// render layers and never see each other. All views requested in one [`Renderer::render`]
/// call are drawn in a single bevy update and read back synchronously, so every image shows
/// exactly the poses set before the call.
///
/// `Renderer` is `Send` and `Sync` (bevy runs on an internal thread); methods take `&mut self`.
pub struct Renderer {
    cfg: RenderConfig,
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    /// Body count per live scene, to validate calls without a round trip.
    scenes: HashMap<SceneId, usize>,
    next_id: u32,
    warmup: Duration,
    dead: Option<String>,
    /// Pipelines that can never compile, shared with the render thread.
    failures: Arc<Mutex<Vec<String>>>,
}

impl Renderer {
    /// Starts bevy on a render thread and compiles every shader the scenes can need, so the
    /// first real [`Renderer::render`] is neither blank nor slow.
    ///
    /// Fails with [`RenderError::NoAdapter`] if no GPU/Vulkan driver exists (on a CPU-only
    /// machine install lavapipe: `apt-get install -y mesa-vulkan-drivers libvulkan1`).
    pub fn new(cfg: RenderConfig) -> Result<Self, RenderError> {
        validate_config(&cfg)?;
        let start = Instant::now();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), RenderError>>();
        let worker_cfg = cfg.clone();
        let failures = Arc::new(Mutex::new(Vec::new()));
        let worker_failures = failures.clone();
        let thread = std::thread::Builder::new()
            .name("vla-render".into())
            .spawn(move || {
                let mut worker = Worker::new(worker_cfg, worker_failures);
                let warm = worker.warm_up();
                let ok = warm.is_ok();
                let _ = ready_tx.send(warm);
                if ok {
                    worker.serve(rx);
                }
            })
            .map_err(|e| RenderError::Init(format!("cannot spawn render thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                // The thread panicked while creating the app: most likely no adapter.
                let msg = panic_message(thread.join());
                return Err(if msg.contains("Unable to find a GPU") {
                    RenderError::NoAdapter(msg)
                } else {
                    RenderError::Init(msg)
                });
            }
        }
        let warmup = start.elapsed();
        tracing::info!(
            ?warmup,
            width = cfg.width,
            height = cfg.height,
            "vla-render ready"
        );
        Ok(Renderer {
            cfg,
            tx: Some(tx),
            thread: Some(thread),
            scenes: HashMap::new(),
            next_id: 0,
            warmup,
            dead: None,
            failures,
        })
    }

    /// The configuration this renderer was created with.
    pub fn config(&self) -> &RenderConfig {
        &self.cfg
    }

    /// How long `new` took (bevy start-up + shader warm-up), for reporting.
    pub fn warmup_time(&self) -> Duration {
        self.warmup
    }

    /// Render pipelines that failed to compile so far, as "#id label: error" (each is
    /// also logged as an error when it fails). Empty when every image is complete; any entry
    /// means some objects or effects may be missing from the images.
    pub fn pipeline_failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Adds one environment's scene. `background` is the sRGB clear colour.
    pub fn add_scene(
        &mut self,
        bodies: Vec<Body>,
        background: [f32; 3],
        lighting: Lighting,
    ) -> Result<SceneId, RenderError> {
        mirror::validate_scene(&bodies, background, &lighting)?;
        let id = self.next_id;
        let count = bodies.len();
        self.send(Cmd::AddScene {
            id,
            bodies,
            background,
            lighting,
        })?;
        self.next_id += 1;
        self.scenes.insert(SceneId(id), count);
        Ok(SceneId(id))
    }

    /// Replaces a scene's objects, background and lighting (new episode); the id stays valid.
    pub fn rebuild_scene(
        &mut self,
        id: SceneId,
        bodies: Vec<Body>,
        background: [f32; 3],
        lighting: Lighting,
    ) -> Result<(), RenderError> {
        self.check_scene(id)?;
        mirror::validate_scene(&bodies, background, &lighting)?;
        let count = bodies.len();
        self.send(Cmd::Rebuild {
            id: id.0,
            bodies,
            background,
            lighting,
        })?;
        self.scenes.insert(id, count);
        Ok(())
    }

    /// Deletes a scene; its id becomes unknown.
    pub fn remove_scene(&mut self, id: SceneId) -> Result<(), RenderError> {
        self.check_scene(id)?;
        self.send(Cmd::Remove { id: id.0 })?;
        self.scenes.remove(&id);
        Ok(())
    }

    /// Moves the bodies of a scene; `poses[i]` is body `i` of the last `add_scene` /
    /// `rebuild_scene`. Cheap: call it every step before `render`.
    ///
    /// A non-finite pose (or zero quaternion) leaves that body where it was and returns
    /// [`RenderError::InvalidPose`]; all other bodies are still moved.
    pub fn set_poses(&mut self, id: SceneId, poses: &[Pose]) -> Result<(), RenderError> {
        let expected = self.check_scene(id)?;
        if poses.len() != expected {
            return Err(RenderError::PoseCount {
                scene: id,
                expected,
                got: poses.len(),
            });
        }
        let bad = poses.iter().position(|p| mirror::pose_to_bevy(p).is_none());
        self.send(Cmd::SetPoses {
            id: id.0,
            poses: poses.to_vec(),
        })?;
        match bad {
            Some(body) => Err(RenderError::InvalidPose { scene: id, body }),
            None => Ok(()),
        }
    }

    /// Renders every requested view in one bevy update; frames come back in request order.
    /// The same scene may appear several times (e.g. front and wrist camera).
    pub fn render(&mut self, views: &[(SceneId, CameraView)]) -> Result<Vec<Frame>, RenderError> {
        let mut converted = Vec::with_capacity(views.len());
        for (index, (id, view)) in views.iter().enumerate() {
            self.check_scene(*id)?;
            let (tf, fov) = mirror::camera_to_bevy(view)
                .map_err(|reason| RenderError::InvalidCamera { index, reason })?;
            converted.push((id.0, tf, fov));
        }
        if converted.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = mpsc::channel();
        self.send(Cmd::Render {
            views: converted,
            reply,
        })?;
        match rx.recv() {
            Ok(r) => r,
            Err(_) => Err(self.died()),
        }
    }

    fn check_scene(&self, id: SceneId) -> Result<usize, RenderError> {
        if let Some(msg) = &self.dead {
            return Err(RenderError::Disconnected(msg.clone()));
        }
        self.scenes
            .get(&id)
            .copied()
            .ok_or(RenderError::UnknownScene(id))
    }

    fn send(&mut self, cmd: Cmd) -> Result<(), RenderError> {
        if let Some(msg) = &self.dead {
            return Err(RenderError::Disconnected(msg.clone()));
        }
        let sent = self.tx.as_ref().map(|tx| tx.send(cmd).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(self.died())
        }
    }

    /// The render thread is gone: collect its panic message once.
    fn died(&mut self) -> RenderError {
        if self.dead.is_none() {
            self.tx = None;
            let msg = match self.thread.take() {
                Some(t) => panic_message(t.join()),
                None => "render thread not running".into(),
            };
            tracing::error!(%msg, "vla-render thread died");
            self.dead = Some(msg);
        }
        RenderError::Disconnected(self.dead.clone().unwrap_or_default())
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.tx = None; // closes the channel: the worker loop ends
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn panic_message(r: std::thread::Result<()>) -> String {
    match r {
        Ok(()) => "render thread exited".into(),
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "render thread panicked".into()),
    }
}

pub(crate) fn validate_config(cfg: &RenderConfig) -> Result<(), RenderError> {
    if cfg.width == 0 || cfg.height == 0 || cfg.width > 8192 || cfg.height > 8192 {
        return Err(RenderError::InvalidConfig(format!(
            "image size {}x{} must be within 1..=8192",
            cfg.width, cfg.height
        )));
    }
    if cfg.depth && cfg.msaa {
        return Err(RenderError::InvalidConfig(
            "depth output needs msaa = false (a multisampled depth buffer cannot be read back)"
                .into(),
        ));
    }
    Ok(())
}

/// A windowless bevy app with the readback system installed.
fn build_app(shared: SharedReadback) -> App {
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .build()
            .disable::<bevy::winit::WinitPlugin>()
            // A library must not install a Ctrl-C handler (the CLI has its own).
            .disable::<TerminalCtrlCHandlerPlugin>()
            // No UI in offscreen frames: skip its per-frame systems.
            .disable::<bevy::ui_render::UiRenderPlugin>()
            .disable::<bevy::ui::UiPlugin>()
            .disable::<bevy::sprite_render::SpriteRenderPlugin>()
            .disable::<bevy::text::TextPlugin>()
            .disable::<bevy::sprite::SpritePlugin>()
            .set(WindowPlugin {
                primary_window: None,
                exit_condition: ExitCondition::DontExit,
                close_when_requested: false,
                ..default()
            }),
    );
    app.add_plugins(ExtractComponentPlugin::<SlotIndex>::default());
    crate::material::install(&mut app);
    app.insert_resource(DirectionalLightShadowMap {
        size: SHADOW_MAP_SIZE,
    });
    if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
        render_app
            .insert_resource(shared)
            .add_systems(Render, readback_system.in_set(RenderSystems::Cleanup));
    }
    // Finish plugin set-up the way `App::run` would (the renderer initialises here).
    while app.plugins_state() == PluginsState::Adding {
        bevy::tasks::tick_global_task_pools_on_main_thread();
    }
    app.finish();
    app.cleanup();
    app.world_mut().init_resource::<mirror::MirrorAssets>();
    app
}

struct Worker {
    app: App,
    cfg: RenderConfig,
    shared: Arc<Mutex<ReadbackState>>,
    scenes: HashMap<u32, SceneMirror>,
    slots: Vec<Slot>,
    last_pipelines: usize,
    /// Pipelines that can never compile, reported once each; shared with `Renderer`.
    failures: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn new(cfg: RenderConfig, failures: Arc<Mutex<Vec<String>>>) -> Self {
        let shared = Arc::new(Mutex::new(ReadbackState {
            depth: cfg.depth,
            ..Default::default()
        }));
        let app = build_app(SharedReadback(shared.clone()));
        if let Some(info) = app.world().get_resource::<RenderAdapterInfo>() {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| log_adapter(&info.0));
        }
        Worker {
            app,
            cfg,
            shared,
            scenes: HashMap::new(),
            slots: Vec::new(),
            last_pipelines: 0,
            failures,
        }
    }

    /// Renders a scene with every shape kind and both opaque and translucent materials until
    /// the frame is complete, so all pipelines exist before the first real request.
    fn warm_up(&mut self) -> Result<(), RenderError> {
        use crate::types::{Shape, Visual};
        let shapes = [
            Shape::Cuboid {
                half_extents: [0.5, 0.05, 0.5],
            },
            Shape::Cylinder {
                radius: 0.05,
                half_height: 0.1,
            },
            Shape::Sphere { radius: 0.05 },
            Shape::Capsule {
                radius: 0.03,
                half_height: 0.05,
            },
        ];
        let bodies = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Body {
                visuals: vec![
                    Visual::new(*s, [0.8, 0.3, 0.2, 1.0]),
                    Visual::new(*s, [0.2, 0.3, 0.8, 0.5]),
                ],
                pose: Pose::from_translation([0.1 * i as f32 - 0.15, 0.0, 0.05]),
            })
            .collect::<Vec<_>>();
        let id = u32::MAX;
        self.add_scene(id, &bodies, [0.5, 0.5, 0.5], &Lighting::default());
        let view = CameraView::look_at([0.6, 0.0, 0.6], [0.0, 0.0, 0.0], 60.0);
        let (tf, fov) = mirror::camera_to_bevy(&view).map_err(RenderError::Init)?;
        let deadline = Instant::now() + WARMUP_TIMEOUT;
        let r = self.render(&[(id, tf, fov)], 2000, deadline);
        self.remove_scene(id);
        r.map(|_| ())
    }

    fn serve(&mut self, rx: mpsc::Receiver<Cmd>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::AddScene {
                    id,
                    bodies,
                    background,
                    lighting,
                } => self.add_scene(id, &bodies, background, &lighting),
                Cmd::Rebuild {
                    id,
                    bodies,
                    background,
                    lighting,
                } => {
                    self.remove_scene(id);
                    self.add_scene(id, &bodies, background, &lighting);
                }
                Cmd::Remove { id } => self.remove_scene(id),
                Cmd::SetPoses { id, poses } => {
                    if let Some(scene) = self.scenes.get(&id) {
                        mirror::apply_poses(self.app.world_mut(), scene, &poses);
                    }
                }
                Cmd::Render { views, reply } => {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let r = self.render(&views, MAX_UPDATES_PER_RENDER, deadline);
                    let _ = reply.send(r);
                }
            }
        }
    }

    fn add_scene(&mut self, id: u32, bodies: &[Body], background: [f32; 3], lighting: &Lighting) {
        // Layer 0 is bevy's default layer; scene `id` lives alone on layer `id + 1`.
        let layer = RenderLayers::layer(id.wrapping_add(1) as usize);
        let scene = mirror::spawn_scene(
            self.app.world_mut(),
            bodies,
            background,
            lighting,
            layer,
            self.cfg.shadows,
        );
        self.scenes.insert(id, scene);
    }

    fn remove_scene(&mut self, id: u32) {
        if let Some(scene) = self.scenes.remove(&id) {
            let world = self.app.world_mut();
            mirror::despawn_scene(world, scene);
            mirror::collect_garbage(world, self.scenes.values());
        }
    }

    /// Logs each pipeline that newly failed to compile, once, and publishes the list.
    fn report_failures(&self, failed: &[String]) {
        let Ok(mut known) = self.failures.lock() else {
            return;
        };
        for f in failed {
            if known.contains(f) {
                continue;
            }
            tracing::error!(
                pipeline = %f,
                "a render pipeline failed to compile: objects or effects it draws are missing \
                 from the images. This is a bug in a vla-render or bevy shader, or in the graphics \
                 driver; report it with the shader error logged above (VERBOSE_SHADER_ERROR=1 \
                 adds the shader defs)"
            );
            known.push(f.clone());
        }
    }

    fn render(
        &mut self,
        views: &[(u32, Transform, f32)],
        max_updates: usize,
        deadline: Instant,
    ) -> Result<Vec<Frame>, RenderError> {
        let (w, h) = (self.cfg.width, self.cfg.height);
        while self.slots.len() < views.len() {
            let slot = mirror::spawn_slot(
                self.app.world_mut(),
                self.slots.len(),
                w,
                h,
                self.cfg.msaa,
                self.cfg.depth,
            );
            self.slots.push(slot);
        }
        let world = self.app.world_mut();
        for (i, slot) in self.slots.iter().enumerate() {
            match views.get(i) {
                Some((id, tf, fov)) => {
                    let scene = self
                        .scenes
                        .get(id)
                        .ok_or(RenderError::UnknownScene(SceneId(*id)))?;
                    mirror::aim_slot(world, slot, scene, *tf, *fov);
                }
                None => mirror::park_slot(world, slot),
            }
        }
        let requests: Vec<Request> = (0..views.len())
            .map(|i| Request {
                slot: i,
                image: self.slots[i].image.id(),
            })
            .collect();

        let mut updates = 0;
        loop {
            if let Ok(mut st) = self.shared.lock() {
                st.requests = requests.clone();
                st.error = None;
            }
            self.app.update();
            updates += 1;
            let mut st = self
                .shared
                .lock()
                .map_err(|_| RenderError::Disconnected("readback state poisoned".into()))?;
            if let Some(e) = st.error.take() {
                return Err(RenderError::NotReady(e));
            }
            self.report_failures(&st.failed);
            // New pipelines this frame => objects needing them may have been skipped.
            let stable = st.pipelines == self.last_pipelines && st.waiting == 0;
            self.last_pipelines = st.pipelines;
            let complete =
                st.results.len() == views.len() && st.results.iter().all(Option::is_some);
            if stable && complete {
                st.requests.clear();
                let results = std::mem::take(&mut st.results);
                drop(st);
                if updates > 1 {
                    tracing::debug!(updates, "frame needed extra updates (pipelines compiling)");
                }
                return Ok(results
                    .into_iter()
                    .flatten()
                    .map(|r| to_frame(r, w, h))
                    .collect());
            }
            if updates >= max_updates || Instant::now() > deadline {
                st.requests.clear();
                return Err(RenderError::NotReady(format!(
                    "no complete frame after {updates} updates ({} pipelines, {} waiting, {}/{} views read)",
                    st.pipelines,
                    st.waiting,
                    st.results.iter().filter(|r| r.is_some()).count(),
                    views.len()
                )));
            }
        }
    }
}

fn to_frame(r: crate::readback::Readout, w: u32, h: u32) -> Frame {
    let rgb: Vec<u8> = r
        .rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let rgb = RgbImage::from_raw(w, h, rgb).unwrap_or_else(|| RgbImage::new(w, h));
    // Reverse-Z infinite projection: stored value = near / z_view.
    let depth = r.depth.map(|d| {
        d.into_iter()
            .map(|v| {
                if v > 0.0 {
                    mirror::NEAR / v
                } else {
                    f32::INFINITY
                }
            })
            .collect()
    });
    Frame { rgb, depth }
}

/// Says (once per process) which adapter renders and, on a CPU rasteriser, what that means.
/// (bevy itself warns that software rendering "is likely to be very slow".)
fn log_adapter(info: &WgpuAdapterInfo) {
    let (name, backend, driver) = (&info.name, info.backend, &info.driver_info);
    // `wgpu::DeviceType` is not re-exported by bevy; its Debug name is stable.
    let kind = format!("{:?}", info.device_type);
    if kind != "Cpu" {
        tracing::info!(adapter = %name, ?backend, %kind, "vla-render renders on the GPU");
        return;
    }
    // A GPU device node without a hardware adapter means its Vulkan driver is not visible.
    let gpu_present = ["/dev/nvidia0", "/dev/dri/renderD128", "/dev/kfd"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if gpu_present {
        tracing::warn!(
            adapter = %name,
            driver = %driver,
            "vla-render renders on the CPU although this machine seems to have a GPU: its \
             Vulkan driver is not visible (`vulkaninfo --summary` lists the drivers). Install \
             it (NVIDIA in a container: NVIDIA_DRIVER_CAPABILITIES must include `graphics`) or \
             point VK_DRIVER_FILES at its ICD json; WGPU_ADAPTER_NAME picks an adapter by name. \
             Until then rendering works, only several times slower"
        );
    } else {
        tracing::info!(
            adapter = %name,
            driver = %driver,
            "vla-render renders on the CPU (no GPU found): expected on a CPU-only machine and \
             complete, only slower"
        );
    }
}
