//! Mirroring plain-data scenes into a bevy `World`. Shared by the headless [`crate::Renderer`]
//! and the interactive viewer, so that what a person sees is exactly what the policy sees.
//!
//! Frames: the public API is Z-up (robotics); bevy is Y-up. Every world-frame quantity is
//! converted with the fixed rotation `R = Rx(-90°)`: `(x, y, z) -> (x, z, -y)`. A body pose
//! `(t, q)` becomes `(R t, R q)`; local offsets (body → visual) are frame-independent.

use std::collections::{HashMap, HashSet};

use bevy::camera::visibility::RenderLayers;
use bevy::camera::{Camera3dDepthTextureUsage, ClearColorConfig, RenderTarget};
use bevy::core_pipeline::tonemapping::{DebandDither, Tonemapping};
use bevy::light::cluster::ClusterConfig;
use bevy::light::{CascadeShadowConfigBuilder, DirectionalLight, ShadowFilteringMethod};
use bevy::prelude::*;
use bevy::render::extract_component::ExtractComponent;
use bevy::render::render_resource::{TextureFormat, TextureUsages};
use bevy::render::view::Msaa;
use vla_core::Pose;

use crate::material::CellMaterial;
use crate::types::{Body, CameraView, Lighting, RenderError, Shape, Visual};

/// Near plane of every camera (metres): a wrist camera can be a few cm from the object.
pub(crate) const NEAR: f32 = 0.01;
/// Far plane used for culling only (bevy's projection has an infinite far plane).
const FAR: f32 = 50.0;

/// The Z-up → Y-up rotation, as a quaternion.
fn z_to_y() -> Quat {
    Quat::from_rotation_x(-std::f32::consts::FRAC_PI_2)
}

/// A world-frame (Z-up) point or direction in bevy's frame.
pub(crate) fn vec_to_bevy(v: [f32; 3]) -> Vec3 {
    Vec3::new(v[0], v[2], -v[1])
}

fn finite3(v: [f32; 3]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// A pose as a bevy transform in the pose's own frame (no Z-up conversion), or `None` if it
/// contains NaN/inf or a (near) zero quaternion. The quaternion is normalised.
fn pose_to_local(p: &Pose) -> Option<Transform> {
    if !finite3(p.translation) || !p.rotation.iter().all(|x| x.is_finite()) {
        return None;
    }
    let q = Quat::from_array(p.rotation);
    let n = q.length();
    if n.is_nan() || n <= 1e-6 {
        return None;
    }
    Some(Transform {
        translation: Vec3::from_array(p.translation),
        rotation: q / n,
        scale: Vec3::ONE,
    })
}

/// A world pose (Z-up) as a bevy transform (Y-up), or `None` if invalid.
pub(crate) fn pose_to_bevy(p: &Pose) -> Option<Transform> {
    let t = pose_to_local(p)?;
    let r = z_to_y();
    Some(Transform {
        translation: r * t.translation,
        rotation: (r * t.rotation).normalize(),
        scale: Vec3::ONE,
    })
}

/// Camera transform and vertical fov (radians) for a view, validated.
pub(crate) fn camera_to_bevy(v: &CameraView) -> Result<(Transform, f32), String> {
    if !finite3(v.eye) || !finite3(v.target) || !finite3(v.up) || !v.fov_y_deg.is_finite() {
        return Err("non-finite value".into());
    }
    if !(v.fov_y_deg > 0.0 && v.fov_y_deg < 180.0) {
        return Err(format!("fov_y_deg {} outside (0, 180)", v.fov_y_deg));
    }
    let eye = vec_to_bevy(v.eye);
    let forward = vec_to_bevy(v.target) - eye;
    let up = vec_to_bevy(v.up);
    if forward.length() < 1e-6 {
        return Err("eye and target coincide".into());
    }
    if up.length() < 1e-6 || forward.normalize().cross(up.normalize()).length() < 1e-4 {
        return Err("up is zero or parallel to the viewing direction".into());
    }
    Ok((
        Transform::from_translation(eye).looking_to(forward, up),
        v.fov_y_deg.to_radians(),
    ))
}

/// Checks everything `spawn_scene` will rely on, so that spawning itself cannot fail.
pub(crate) fn validate_scene(
    bodies: &[Body],
    background: [f32; 3],
    lighting: &Lighting,
) -> Result<(), RenderError> {
    let bad = |m: String| Err(RenderError::InvalidScene(m));
    if !finite3(background) {
        return bad("non-finite background colour".into());
    }
    let l = lighting;
    if !finite3(l.sun_direction) || vec_to_bevy(l.sun_direction).length() < 1e-6 {
        return bad("sun_direction must be finite and non-zero".into());
    }
    let non_negative = |v: f32| v.is_finite() && v >= 0.0;
    if !(finite3(l.sun_color)
        && non_negative(l.sun_illuminance)
        && non_negative(l.ambient_brightness))
    {
        return bad("lighting values must be finite and non-negative".into());
    }
    for (i, b) in bodies.iter().enumerate() {
        if pose_to_local(&b.pose).is_none() {
            return bad(format!("body {i}: invalid pose"));
        }
        for (j, v) in b.visuals.iter().enumerate() {
            if !v.shape.is_valid() {
                return bad(format!("body {i} visual {j}: invalid shape {:?}", v.shape));
            }
            if pose_to_local(&v.local).is_none() {
                return bad(format!("body {i} visual {j}: invalid local pose"));
            }
            if !v.color.iter().all(|c| c.is_finite())
                || !v.metallic.is_finite()
                || !v.roughness.is_finite()
            {
                return bad(format!("body {i} visual {j}: non-finite colour/material"));
            }
        }
    }
    Ok(())
}

/// Key of a capsule mesh (capsules cannot be made by scaling a unit mesh).
type CapsuleKey = (u32, u32);
/// Key of a material: colour, metallic, roughness bits after clamping, shadows flag.
type MaterialKey = [u32; 7];

/// Meshes and materials shared by all scenes: boxes, cylinders and spheres are unit meshes
/// scaled per entity (so every object of a kind batches together); materials are shared per
/// colour. Entries no scene uses any more are dropped on rebuild (domain randomisation would
/// otherwise grow them without bound).
#[derive(Resource)]
pub(crate) struct MirrorAssets {
    cube: Handle<Mesh>,
    cylinder: Handle<Mesh>,
    sphere: Handle<Mesh>,
    capsules: HashMap<CapsuleKey, Handle<Mesh>>,
    materials: HashMap<MaterialKey, Handle<CellMaterial>>,
}

impl FromWorld for MirrorAssets {
    fn from_world(world: &mut World) -> Self {
        let mut meshes = world.resource_mut::<Assets<Mesh>>();
        let cube = meshes.add(Cuboid::new(1.0, 1.0, 1.0));
        let cylinder = meshes.add(Cylinder::new(1.0, 2.0).mesh().resolution(48));
        let sphere = meshes.add(Sphere::new(1.0).mesh().uv(48, 24));
        MirrorAssets {
            cube,
            cylinder,
            sphere,
            capsules: HashMap::new(),
            materials: HashMap::new(),
        }
    }
}

/// One scene as bevy entities.
pub(crate) struct SceneMirror {
    /// The render layer only this scene's entities and cameras are on.
    pub layer: RenderLayers,
    /// Per body: its visuals' entities and body → visual transforms (scale included).
    bodies: Vec<Vec<(Entity, Transform)>>,
    sun: Entity,
    /// Clear colour for cameras looking at this scene.
    pub background: Color,
    /// Ambient light for cameras looking at this scene (ambient is per camera in bevy).
    pub ambient: AmbientLight,
    capsule_keys: HashSet<CapsuleKey>,
    material_keys: HashSet<MaterialKey>,
}

impl SceneMirror {
    /// Number of bodies, i.e. the number of poses `apply_poses` expects.
    pub fn body_count(&self) -> usize {
        self.bodies.len()
    }
}

fn material_key(v: &Visual, shadows: bool) -> MaterialKey {
    let c = v.color.map(|x| x.clamp(0.0, 1.0).to_bits());
    [
        c[0],
        c[1],
        c[2],
        c[3],
        v.metallic.clamp(0.0, 1.0).to_bits(),
        v.roughness.clamp(0.02, 1.0).to_bits(),
        shadows as u32,
    ]
}

/// Mesh handle and the scale that turns the cached mesh into `shape`.
fn mesh_for(world: &mut World, shape: &Shape) -> (Handle<Mesh>, Vec3, Option<CapsuleKey>) {
    match *shape {
        Shape::Cuboid { half_extents } => (
            world.resource::<MirrorAssets>().cube.clone(),
            Vec3::from_array(half_extents) * 2.0,
            None,
        ),
        Shape::Cylinder {
            radius,
            half_height,
        } => (
            world.resource::<MirrorAssets>().cylinder.clone(),
            Vec3::new(radius, half_height, radius),
            None,
        ),
        Shape::Sphere { radius } => (
            world.resource::<MirrorAssets>().sphere.clone(),
            Vec3::splat(radius),
            None,
        ),
        Shape::Capsule {
            radius,
            half_height,
        } => {
            let key = (radius.to_bits(), half_height.to_bits());
            if let Some(h) = world.resource::<MirrorAssets>().capsules.get(&key) {
                return (h.clone(), Vec3::ONE, Some(key));
            }
            let mesh = Capsule3d::new(radius, 2.0 * half_height)
                .mesh()
                .longitudes(32)
                .latitudes(16)
                .build();
            let h = world.resource_mut::<Assets<Mesh>>().add(mesh);
            world
                .resource_mut::<MirrorAssets>()
                .capsules
                .insert(key, h.clone());
            (h, Vec3::ONE, Some(key))
        }
    }
}

fn material_for(
    world: &mut World,
    v: &Visual,
    shadows: bool,
) -> (Handle<CellMaterial>, MaterialKey) {
    let key = material_key(v, shadows);
    if let Some(h) = world.resource::<MirrorAssets>().materials.get(&key) {
        return (h.clone(), key);
    }
    let [r, g, b, a] = v.color.map(|x| x.clamp(0.0, 1.0));
    let mat = CellMaterial {
        color: Color::srgba(r, g, b, a).to_linear(),
        surface: Vec4::new(
            v.metallic.clamp(0.0, 1.0),
            v.roughness.clamp(0.02, 1.0),
            0.0,
            0.0,
        ),
        alpha_mode: if a < 1.0 {
            AlphaMode::Blend
        } else {
            AlphaMode::Opaque
        },
        shadows,
    };
    let h = world.resource_mut::<Assets<CellMaterial>>().add(mat);
    world
        .resource_mut::<MirrorAssets>()
        .materials
        .insert(key, h.clone());
    (h, key)
}

fn sun_bundle(lighting: &Lighting, shadows: bool) -> (DirectionalLight, Transform) {
    let dir = vec_to_bevy(lighting.sun_direction).normalize();
    let [r, g, b] = lighting.sun_color.map(|x| x.max(0.0));
    (
        DirectionalLight {
            color: Color::linear_rgb(r, g, b),
            illuminance: lighting.sun_illuminance,
            shadow_maps_enabled: shadows,
            ..default()
        },
        Transform::default().looking_to(dir, Vec3::Y),
    )
}

/// Spawns a validated scene (see [`validate_scene`]) on `layer`.
pub(crate) fn spawn_scene(
    world: &mut World,
    bodies: &[Body],
    background: [f32; 3],
    lighting: &Lighting,
    layer: RenderLayers,
    shadows: bool,
) -> SceneMirror {
    let mut out_bodies = Vec::with_capacity(bodies.len());
    let mut capsule_keys = HashSet::new();
    let mut material_keys = HashSet::new();
    for body in bodies {
        let body_tf = pose_to_bevy(&body.pose).unwrap_or_default();
        let mut visuals = Vec::with_capacity(body.visuals.len());
        for v in &body.visuals {
            let (mesh, scale, capsule) = mesh_for(world, &v.shape);
            let (material, mkey) = material_for(world, v, shadows);
            capsule_keys.extend(capsule);
            material_keys.insert(mkey);
            let mut local = pose_to_local(&v.local).unwrap_or_default();
            local.scale = scale;
            let e = world
                .spawn((
                    Mesh3d(mesh),
                    MeshMaterial3d(material),
                    body_tf * local,
                    layer.clone(),
                ))
                .id();
            visuals.push((e, local));
        }
        out_bodies.push(visuals);
    }
    let (light, light_tf) = sun_bundle(lighting, shadows);
    let cascades = CascadeShadowConfigBuilder {
        num_cascades: 1,
        minimum_distance: NEAR,
        // A table-top cell seen from ~1 m: nothing beyond 2.5 m needs a shadow, and a short
        // cascade keeps shadow texels small.
        maximum_distance: 2.5,
        ..default()
    }
    .build();
    let sun = world.spawn((light, light_tf, cascades, layer.clone())).id();
    let [r, g, b] = background.map(|x| x.clamp(0.0, 1.0));
    SceneMirror {
        layer,
        bodies: out_bodies,
        sun,
        background: Color::srgb(r, g, b),
        ambient: AmbientLight {
            color: Color::WHITE,
            brightness: lighting.ambient_brightness,
            affects_lightmapped_meshes: true,
        },
        capsule_keys,
        material_keys,
    }
}

/// Despawns a scene's entities. Call [`collect_garbage`] afterwards.
pub(crate) fn despawn_scene(world: &mut World, scene: SceneMirror) {
    for (e, _) in scene.bodies.into_iter().flatten() {
        world.despawn(e);
    }
    world.despawn(scene.sun);
}

/// Drops cached meshes/materials that none of `live` uses.
pub(crate) fn collect_garbage<'a>(world: &mut World, live: impl Iterator<Item = &'a SceneMirror>) {
    let mut caps = HashSet::new();
    let mut mats = HashSet::new();
    for s in live {
        caps.extend(s.capsule_keys.iter().copied());
        mats.extend(s.material_keys.iter().copied());
    }
    let mut assets = world.resource_mut::<MirrorAssets>();
    assets.capsules.retain(|k, _| caps.contains(k));
    assets.materials.retain(|k, _| mats.contains(k));
}

/// Moves the bodies. `poses.len()` must equal `scene.body_count()` (checked by callers).
/// Invalid poses are skipped; the index of the first one is returned.
pub(crate) fn apply_poses(world: &mut World, scene: &SceneMirror, poses: &[Pose]) -> Option<usize> {
    let mut first_bad = None;
    for (i, (visuals, pose)) in scene.bodies.iter().zip(poses).enumerate() {
        let Some(body_tf) = pose_to_bevy(pose) else {
            first_bad.get_or_insert(i);
            continue;
        };
        for (e, local) in visuals {
            if let Some(mut tf) = world.get_mut::<Transform>(*e) {
                let new = body_tf * *local;
                // Assign only on change: unchanged entities then cost nothing downstream.
                if *tf != new {
                    *tf = new;
                }
            }
        }
    }
    first_bad
}

/// Marks a camera rendering into an offscreen image for readback; extracted to the render
/// world so the readback system can find the camera's depth texture.
#[derive(Component, Clone, Copy, Debug, ExtractComponent)]
pub(crate) struct SlotIndex(pub usize);

/// An offscreen policy camera and its colour target. Used for headless frames and for the
/// policy-camera panels of the viewer.
pub(crate) struct Slot {
    pub entity: Entity,
    pub image: Handle<Image>,
}

/// Creates an inactive offscreen camera rendering into a new `width`×`height` sRGB image.
pub(crate) fn spawn_slot(
    world: &mut World,
    index: usize,
    width: u32,
    height: u32,
    msaa: bool,
    depth: bool,
) -> Slot {
    let mut img = Image::new_target_texture(width, height, TextureFormat::Rgba8UnormSrgb, None);
    img.texture_descriptor.usage |= TextureUsages::COPY_SRC | TextureUsages::TEXTURE_BINDING;
    let image = world.resource_mut::<Assets<Image>>().add(img);
    let mut depth_usage = TextureUsages::RENDER_ATTACHMENT;
    if depth {
        depth_usage |= TextureUsages::COPY_SRC;
    }
    let entity = world
        .spawn((
            Camera3d {
                depth_texture_usages: Camera3dDepthTextureUsage::from(depth_usage),
                ..default()
            },
            Camera {
                is_active: false,
                // Offscreen cameras render before the window camera of the viewer.
                order: -1 - index as isize,
                ..default()
            },
            RenderTarget::Image(image.clone().into()),
            Projection::Perspective(PerspectiveProjection {
                fov: 60f32.to_radians(),
                near: NEAR,
                far: FAR,
                ..default()
            }),
            camera_look(),
            if msaa { Msaa::Sample4 } else { Msaa::Off },
            Transform::default(),
            RenderLayers::none(),
            AmbientLight::default(),
            // The cell is lit by one directional light only: a single light cluster is
            // enough and its per-view cost is lowest (`None` breaks bevy's PBR pipelines).
            ClusterConfig::Single,
            // One hardware-filtered shadow tap: bevy's default Gaussian PCF costs several
            // times more per pixel on a CPU rasteriser; at 128 px the edges look the same.
            ShadowFilteringMethod::Hardware2x2,
            SlotIndex(index),
        ))
        .id();
    Slot { entity, image }
}

/// The colour pipeline shared by policy and viewer cameras: ACES-fitted tone mapping needs no
/// lookup-table assets (bevy's default, TonyMcMapface, needs the `tonemapping_luts` feature)
/// and keeps saturated object colours recognisable; dithering is off so images are exactly
/// reproducible.
pub(crate) fn camera_look() -> (Tonemapping, DebandDither) {
    (Tonemapping::AcesFitted, DebandDither::Disabled)
}

/// Points slot camera `slot` at `scene` with `view` and activates it. Components are only
/// written when they change, so a static camera costs no re-specialisation.
pub(crate) fn aim_slot(
    world: &mut World,
    slot: &Slot,
    scene: &SceneMirror,
    tf: Transform,
    fov: f32,
) {
    let Ok(mut e) = world.get_entity_mut(slot.entity) else {
        return;
    };
    if let Some(mut cam) = e.get_mut::<Camera>() {
        let clear = ClearColorConfig::Custom(scene.background);
        if !cam.is_active {
            cam.is_active = true;
        }
        if !matches!((&cam.clear_color, &clear), (ClearColorConfig::Custom(a), ClearColorConfig::Custom(b)) if a == b)
        {
            cam.clear_color = clear;
        }
    }
    if let Some(mut t) = e.get_mut::<Transform>() {
        if *t != tf {
            *t = tf;
        }
    }
    if let Some(mut p) = e.get_mut::<Projection>() {
        if let Projection::Perspective(pp) = &mut *p {
            if pp.fov != fov {
                pp.fov = fov;
            }
        }
    }
    if let Some(mut l) = e.get_mut::<RenderLayers>() {
        if *l != scene.layer {
            *l = scene.layer.clone();
        }
    }
    if let Some(mut a) = e.get_mut::<AmbientLight>() {
        if a.brightness != scene.ambient.brightness {
            *a = scene.ambient.clone();
        }
    }
}

/// Deactivates a slot camera (inactive cameras cost nothing to render).
pub(crate) fn park_slot(world: &mut World, slot: &Slot) {
    if let Some(mut cam) = world.get_mut::<Camera>(slot.entity) {
        if cam.is_active {
            cam.is_active = false;
        }
    }
}
