//! The interactive viewer: a window on the cell with an orbit camera, the policy's camera
//! images in a side panel and a text overlay.
//!
//! The cell and the policy cameras are mirrored by exactly the same code as the headless
//! [`crate::Renderer`] (`mirror.rs`): same meshes, materials, lighting, tone mapping and image
//! size, so the panel shows what the policy sees.
//!
//! Controls: left drag orbit, right drag pan, wheel zoom; R restart episode, N next episode,
//! Space pause, Esc/Q quit.

use std::path::PathBuf;
use std::sync::Mutex;

use bevy::app::TerminalCtrlCHandlerPlugin;
use bevy::camera::visibility::RenderLayers;
use bevy::camera::ClearColorConfig;
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::render::view::Msaa;
use bevy::window::{ExitCondition, WindowResolution};
use bevy::winit::WinitPlugin;
use vla_core::{Pose, RgbImage};

use crate::headless::validate_config;
use crate::mirror::{self, SceneMirror, Slot};
use crate::types::{Body, CameraView, Lighting, RenderConfig, RenderError};

/// What the viewer asks of the simulation (environment + policy) it displays.
///
/// All methods are called on the viewer's thread between frames; `step` blocks rendering
/// while it runs, so it should take well under the control period.
pub trait ViewerDriver: Send + 'static {
    /// The current episode's scene: bodies (in the order `step` returns poses), sRGB
    /// background colour, lighting. Called at start and after `reset` / `next_episode`.
    fn scene(&mut self) -> (Vec<Body>, [f32; 3], Lighting);
    /// Advances one control step (policy inference + physics) and reports the new state.
    fn step(&mut self) -> ViewerStep;
    /// Restart the current episode (key R).
    fn reset(&mut self);
    /// Start the next episode (key N, and automatically a few seconds after `episode_done`).
    fn next_episode(&mut self);
}

/// One control step's worth of state for the viewer.
#[derive(Clone, Debug, Default)]
pub struct ViewerStep {
    /// One pose per body of [`ViewerDriver::scene`], world frame (Z-up).
    pub poses: Vec<Pose>,
    /// The policy cameras, shown as image panels (same order every step).
    pub cameras: Vec<CameraView>,
    /// Free text drawn over the view: instruction, step, success...
    pub overlay: String,
    /// The episode ended (success or time-out); the viewer then stops stepping.
    pub episode_done: bool,
}

/// Viewer settings.
#[derive(Clone, Debug)]
pub struct ViewerConfig {
    /// Window size in logical pixels.
    pub width: u32,
    pub height: u32,
    /// Control steps per second (calls of [`ViewerDriver::step`]).
    pub control_hz: f32,
    /// Quit after this many frames (for tests); `None` runs until the window is closed.
    pub max_frames: Option<u64>,
    /// Save a PNG of the window before quitting because of `max_frames` (for tests).
    pub screenshot: Option<PathBuf>,
    /// Seconds to wait after `episode_done` before calling `next_episode`.
    pub auto_next_secs: f32,
    /// Policy-camera settings: size, shadows, MSAA. Use the same as the headless renderer
    /// the policy was trained with, so the panels show exactly what it saw.
    pub render: RenderConfig,
    /// Displayed size of each policy panel, in logical pixels (images are scaled up).
    pub panel_size: u32,
    /// Initial pose of the orbit camera.
    pub camera: CameraView,
}

impl Default for ViewerConfig {
    fn default() -> Self {
        ViewerConfig {
            width: 1280,
            height: 720,
            control_hz: 10.0,
            max_frames: None,
            screenshot: None,
            auto_next_secs: 3.0,
            render: RenderConfig::default(),
            panel_size: 256,
            camera: CameraView::look_at([1.0, -0.8, 0.8], [0.0, 0.0, 0.05], 45.0),
        }
    }
}

/// Opens the viewer window and runs until it is closed (or `max_frames`).
///
/// Needs a display (`DISPLAY`, e.g. `Xvfb :99` + `DISPLAY=:99`) and a Vulkan driver. Call it
/// from the main thread on platforms other than Linux/Windows; winit allows one event loop
/// per process, so call it at most once.
pub fn run_viewer(driver: Box<dyn ViewerDriver>, cfg: ViewerConfig) -> Result<(), RenderError> {
    validate_config(&cfg.render)?;
    if !(cfg.control_hz.is_finite() && cfg.control_hz > 0.0) {
        return Err(RenderError::InvalidConfig("control_hz must be > 0".into()));
    }
    if cfg.width == 0 || cfg.height == 0 {
        return Err(RenderError::InvalidConfig("window size must be > 0".into()));
    }
    if cfg!(target_os = "linux")
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
    {
        return Err(RenderError::Viewer(
            "no DISPLAY set (run under X11, or `Xvfb :99 &` and DISPLAY=:99)".into(),
        ));
    }
    mirror::camera_to_bevy(&cfg.camera)
        .map_err(|reason| RenderError::InvalidCamera { index: 0, reason })?;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut app = App::new();
        app.add_plugins(
            DefaultPlugins
                .build()
                .disable::<TerminalCtrlCHandlerPlugin>()
                .set(WinitPlugin {
                    run_on_any_thread: true,
                })
                .set(WindowPlugin {
                    primary_window: Some(Window {
                        title: "vla viewer".into(),
                        resolution: WindowResolution::new(cfg.width, cfg.height),
                        ..default()
                    }),
                    exit_condition: ExitCondition::OnPrimaryClosed,
                    ..default()
                }),
        );
        app.insert_resource(bevy::light::DirectionalLightShadowMap { size: 1024 });
        crate::material::install(&mut app);
        app.init_resource::<mirror::MirrorAssets>();
        app.insert_resource(Driver(Mutex::new(driver)));
        app.insert_resource(Control {
            period: 1.0 / cfg.control_hz,
            accum: 0.0,
            done_for: None,
            paused: false,
            frames: 0,
            screenshot_requested: false,
            screenshot_done: false,
            last_overlay: String::new(),
        });
        app.insert_resource(Orbit::from_view(&cfg.camera));
        app.insert_resource(Settings(cfg));
        app.add_systems(Startup, setup);
        app.add_systems(Update, (control_system, orbit_system, exit_system).chain());
        app.run()
    }));
    match result {
        Ok(AppExit::Success) => Ok(()),
        Ok(AppExit::Error(code)) => Err(RenderError::Viewer(format!("exited with code {code}"))),
        Err(p) => Err(RenderError::Viewer(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "viewer panicked".into()),
        )),
    }
}

#[derive(Resource)]
struct Driver(Mutex<Box<dyn ViewerDriver>>);

#[derive(Resource)]
struct Settings(ViewerConfig);

#[derive(Resource)]
struct Control {
    period: f32,
    accum: f32,
    done_for: Option<f32>,
    paused: bool,
    frames: u64,
    screenshot_requested: bool,
    screenshot_done: bool,
    last_overlay: String,
}

/// The mirrored scene and the policy panels.
#[derive(Resource)]
struct ViewerScene {
    scene: Option<SceneMirror>,
    slots: Vec<Slot>,
    panels: Entity,
    overlay: Entity,
    main_camera: Entity,
}

/// Orbit camera state, bevy frame.
#[derive(Resource)]
struct Orbit {
    target: Vec3,
    yaw: f32,
    pitch: f32,
    distance: f32,
}

impl Orbit {
    /// Orbit around the configured camera's target, starting at its eye.
    fn from_view(view: &CameraView) -> Self {
        let eye = mirror::vec_to_bevy(view.eye);
        let target = mirror::vec_to_bevy(view.target);
        let back = eye - target;
        let distance = back.length().max(0.05);
        let back = back / distance;
        Orbit {
            target,
            yaw: back.x.atan2(back.z),
            pitch: back.y.clamp(-1.0, 1.0).asin(),
            distance,
        }
    }

    fn transform(&self) -> Transform {
        let back = Vec3::new(
            self.pitch.cos() * self.yaw.sin(),
            self.pitch.sin(),
            self.pitch.cos() * self.yaw.cos(),
        );
        Transform::from_translation(self.target + back * self.distance)
            .looking_at(self.target, Vec3::Y)
    }
}

/// Layer of the viewer's single scene.
fn scene_layer() -> RenderLayers {
    RenderLayers::layer(1)
}

fn setup(world: &mut World) {
    let (msaa, fov) = {
        let s = &world.resource::<Settings>().0;
        (s.render.msaa, s.camera.fov_y_deg.to_radians())
    };
    let orbit_tf = world.resource::<Orbit>().transform();
    let main_camera = world
        .spawn((
            Camera3d::default(),
            Camera::default(),
            Projection::Perspective(PerspectiveProjection {
                fov,
                near: mirror::NEAR,
                ..default()
            }),
            mirror::camera_look(),
            if msaa { Msaa::Sample4 } else { Msaa::Off },
            orbit_tf,
            scene_layer(),
            AmbientLight::default(),
            IsDefaultUiCamera,
        ))
        .id();
    let panel_size = world.resource::<Settings>().0.panel_size as f32;
    let panels = world
        .spawn(Node {
            position_type: PositionType::Absolute,
            right: Val::Px(8.0),
            top: Val::Px(8.0),
            flex_direction: FlexDirection::Column,
            row_gap: Val::Px(8.0),
            min_width: Val::Px(panel_size),
            ..default()
        })
        .id();
    let overlay = world
        .spawn((
            Node {
                position_type: PositionType::Absolute,
                left: Val::Px(8.0),
                top: Val::Px(8.0),
                padding: UiRect::all(Val::Px(6.0)),
                max_width: Val::Percent(60.0),
                ..default()
            },
            BackgroundColor(Color::srgba(0.0, 0.0, 0.0, 0.6)),
            Text::new("starting..."),
            TextFont {
                font_size: FontSize::Px(16.0),
                ..default()
            },
            TextColor(Color::WHITE),
        ))
        .id();
    world.insert_resource(ViewerScene {
        scene: None,
        slots: Vec::new(),
        panels,
        overlay,
        main_camera,
    });
    load_scene(world);
}

/// (Re)mirrors the driver's current scene.
fn load_scene(world: &mut World) {
    let (bodies, background, lighting) = match world.resource::<Driver>().0.lock() {
        Ok(mut d) => d.scene(),
        Err(_) => return,
    };
    if let Err(e) = mirror::validate_scene(&bodies, background, &lighting) {
        tracing::error!(%e, "viewer: driver returned an invalid scene; keeping the old one");
        return;
    }
    let shadows = world.resource::<Settings>().0.render.shadows;
    world.resource_scope(|world, mut vs: Mut<ViewerScene>| {
        if let Some(old) = vs.scene.take() {
            mirror::despawn_scene(world, old);
        }
        let scene = mirror::spawn_scene(
            world,
            &bodies,
            background,
            &lighting,
            scene_layer(),
            shadows,
        );
        mirror::collect_garbage(world, std::iter::once(&scene));
        if let Some(mut cam) = world.get_mut::<Camera>(vs.main_camera) {
            cam.clear_color = ClearColorConfig::Custom(scene.background);
        }
        if let Some(mut a) = world.get_mut::<AmbientLight>(vs.main_camera) {
            *a = scene.ambient.clone();
        }
        vs.scene = Some(scene);
    });
    let mut c = world.resource_mut::<Control>();
    c.accum = c.period; // step right away so poses/cameras appear on the first frame
    c.done_for = None;
}

fn control_system(world: &mut World) {
    let dt = world.resource::<Time>().delta_secs();
    let (reset, next, pause, quit) = {
        let keys = world.resource::<ButtonInput<KeyCode>>();
        (
            keys.just_pressed(KeyCode::KeyR),
            keys.just_pressed(KeyCode::KeyN),
            keys.just_pressed(KeyCode::Space),
            keys.just_pressed(KeyCode::Escape) || keys.just_pressed(KeyCode::KeyQ),
        )
    };
    if quit {
        world.write_message(AppExit::Success);
        return;
    }
    if pause {
        let mut c = world.resource_mut::<Control>();
        c.paused = !c.paused;
    }
    let auto_next = world.resource::<Settings>().0.auto_next_secs;
    let mut auto = false;
    {
        let mut c = world.resource_mut::<Control>();
        if let Some(t) = c.done_for.as_mut() {
            *t += dt;
            auto = *t >= auto_next;
        }
    }
    if reset || next || auto {
        if let Ok(mut d) = world.resource::<Driver>().0.lock() {
            if reset {
                d.reset();
            } else {
                d.next_episode();
            }
        }
        load_scene(world);
    }

    let due = {
        let mut c = world.resource_mut::<Control>();
        if c.paused || c.done_for.is_some() {
            false
        } else {
            c.accum += dt;
            if c.accum >= c.period {
                c.accum = (c.accum - c.period).min(c.period);
                true
            } else {
                false
            }
        }
    };
    if !due {
        return;
    }
    let step = match world.resource::<Driver>().0.lock() {
        Ok(mut d) => d.step(),
        Err(_) => return,
    };
    let render = world.resource::<Settings>().0.render.clone();
    let panel_size = world.resource::<Settings>().0.panel_size as f32;
    world.resource_scope(|world, mut vs: Mut<ViewerScene>| {
        let Some(scene) = vs.scene.take() else {
            return;
        };
        if step.poses.len() == scene.body_count() {
            if let Some(i) = mirror::apply_poses(world, &scene, &step.poses) {
                tracing::warn!(body = i, "viewer: invalid pose skipped");
            }
        } else {
            tracing::warn!(
                got = step.poses.len(),
                expected = scene.body_count(),
                "viewer: pose count mismatch; poses ignored"
            );
        }
        // Policy camera panels, rendered like the headless renderer's slots.
        let aspect = render.height as f32 / render.width as f32;
        while vs.slots.len() < step.cameras.len() {
            let slot = mirror::spawn_slot(
                world,
                vs.slots.len(),
                render.width,
                render.height,
                render.msaa,
                false,
            );
            let panel = vs.panels;
            world.spawn((
                ImageNode::new(slot.image.clone()),
                Node {
                    width: Val::Px(panel_size),
                    height: Val::Px(panel_size * aspect),
                    border: UiRect::all(Val::Px(2.0)),
                    ..default()
                },
                BorderColor::all(Color::srgb(0.1, 0.1, 0.1)),
                ChildOf(panel),
            ));
            vs.slots.push(slot);
        }
        for (i, slot) in vs.slots.iter().enumerate() {
            match step.cameras.get(i).map(mirror::camera_to_bevy) {
                Some(Ok((tf, fov))) => mirror::aim_slot(world, slot, &scene, tf, fov),
                Some(Err(reason)) => {
                    tracing::warn!(camera = i, %reason, "viewer: invalid policy camera");
                    mirror::park_slot(world, slot);
                }
                None => mirror::park_slot(world, slot),
            }
        }
        vs.scene = Some(scene);
        let overlay = vs.overlay;
        let text = format!(
            "{}\n[R] restart  [N] next episode  [Space] pause  [Esc] quit{}",
            step.overlay,
            if step.episode_done {
                "\nepisode done"
            } else {
                ""
            }
        );
        let mut c = world.resource_mut::<Control>();
        if c.last_overlay != text {
            c.last_overlay = text.clone();
            if let Some(mut t) = world.get_mut::<Text>(overlay) {
                t.0 = text;
            }
        }
    });
    if step.episode_done {
        world.resource_mut::<Control>().done_for = Some(0.0);
    }
}

fn orbit_system(
    mut orbit: ResMut<Orbit>,
    buttons: Res<ButtonInput<MouseButton>>,
    motion: Res<AccumulatedMouseMotion>,
    scroll: Res<AccumulatedMouseScroll>,
    vs: Option<Res<ViewerScene>>,
    mut transforms: Query<&mut Transform>,
) {
    let d = motion.delta;
    if buttons.pressed(MouseButton::Left) && d != Vec2::ZERO {
        orbit.yaw -= d.x * 0.005;
        orbit.pitch = (orbit.pitch + d.y * 0.005).clamp(-1.5, 1.5);
    }
    if buttons.pressed(MouseButton::Right) && d != Vec2::ZERO {
        let tf = orbit.transform();
        let k = orbit.distance * 0.0015;
        let shift = (tf.left().as_vec3() * d.x + tf.up().as_vec3() * d.y) * k;
        orbit.target += shift;
    }
    let s = match scroll.unit {
        MouseScrollUnit::Line => scroll.delta.y * 0.1,
        MouseScrollUnit::Pixel => scroll.delta.y * 0.002,
    };
    if s != 0.0 {
        orbit.distance = (orbit.distance * (1.0 - s)).clamp(0.05, 20.0);
    }
    if let Some(vs) = vs {
        if let Ok(mut tf) = transforms.get_mut(vs.main_camera) {
            let new = orbit.transform();
            if *tf != new {
                *tf = new;
            }
        }
    }
}

fn exit_system(world: &mut World) {
    let (max_frames, shot) = {
        let s = &world.resource::<Settings>().0;
        (s.max_frames, s.screenshot.clone())
    };
    let frames = {
        let mut c = world.resource_mut::<Control>();
        c.frames += 1;
        c.frames
    };
    let Some(max) = max_frames else {
        return;
    };
    if frames < max {
        return;
    }
    let Some(path) = shot else {
        world.write_message(AppExit::Success);
        return;
    };
    let (requested, done) = {
        let c = world.resource::<Control>();
        (c.screenshot_requested, c.screenshot_done)
    };
    if done || frames > max + 300 {
        if !done {
            tracing::error!("viewer: screenshot was never captured");
        }
        world.write_message(AppExit::Success);
        return;
    }
    if !requested {
        world.resource_mut::<Control>().screenshot_requested = true;
        world.spawn(Screenshot::primary_window()).observe(
            move |ev: On<ScreenshotCaptured>, mut c: ResMut<Control>| {
                match save_screenshot(&ev.image, &path) {
                    Ok(()) => tracing::info!(path = %path.display(), "viewer screenshot saved"),
                    Err(e) => tracing::error!(%e, "viewer: cannot save screenshot"),
                }
                c.screenshot_done = true;
            },
        );
    }
}

/// Converts a captured window image (RGBA or BGRA, 8 bit) to PNG.
fn save_screenshot(img: &Image, path: &std::path::Path) -> Result<(), String> {
    use bevy::render::render_resource::TextureFormat;
    let size = img.texture_descriptor.size;
    let data = img.data.as_ref().ok_or("screenshot has no data")?;
    let bgra = match img.texture_descriptor.format {
        TextureFormat::Bgra8Unorm | TextureFormat::Bgra8UnormSrgb => true,
        TextureFormat::Rgba8Unorm | TextureFormat::Rgba8UnormSrgb => false,
        f => return Err(format!("unsupported screenshot format {f:?}")),
    };
    let rgb: Vec<u8> = data
        .chunks_exact(4)
        .flat_map(|p| {
            if bgra {
                [p[2], p[1], p[0]]
            } else {
                [p[0], p[1], p[2]]
            }
        })
        .collect();
    let img = RgbImage::from_raw(size.width, size.height, rgb).ok_or("bad screenshot size")?;
    img.save(path).map_err(|e| e.to_string())
}
