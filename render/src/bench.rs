//! A small throughput benchmark, used by `examples/bench.rs` and for sizing simulations.

use std::time::{Duration, Instant};

use vla_core::Pose;

use crate::{Body, CameraView, Lighting, RenderConfig, RenderError, Renderer, Shape, Visual};

/// Timings of [`bench`].
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Number of scenes (environments).
    pub scenes: usize,
    /// Views per scene per step.
    pub views_per_scene: usize,
    /// Steps timed (after one untimed step).
    pub steps: usize,
    /// `Renderer::new` time (bevy start-up and shader warm-up).
    pub warmup: Duration,
    /// Mean time of one step: `set_poses` for every scene plus one `render` of all views.
    pub per_step: Duration,
    /// `per_step / (scenes * views_per_scene)`.
    pub per_view: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scene(s) x {} view(s): {:.2} ms/step, {:.2} ms/view, {:.1} steps/s (warm-up {:.2} s)",
            self.scenes,
            self.views_per_scene,
            self.per_step.as_secs_f64() * 1e3,
            self.per_view.as_secs_f64() * 1e3,
            1.0 / self.per_step.as_secs_f64().max(1e-9),
            self.warmup.as_secs_f64()
        )
    }
}

/// A table-top cell: table, red cube, blue cylinder, yellow sphere, grey capsule "gripper".
pub fn demo_scene() -> Vec<Body> {
    let body = |shape, color, t: [f32; 3]| Body {
        visuals: vec![Visual::new(shape, color)],
        pose: Pose::from_translation(t),
    };
    vec![
        body(
            Shape::Cuboid {
                half_extents: [0.4, 0.3, 0.02],
            },
            [0.55, 0.55, 0.55, 1.0],
            [0.0, 0.0, -0.02],
        ),
        body(
            Shape::Cuboid {
                half_extents: [0.03; 3],
            },
            [0.85, 0.1, 0.1, 1.0],
            [0.0, 0.0, 0.03],
        ),
        body(
            Shape::Cylinder {
                radius: 0.03,
                half_height: 0.05,
            },
            [0.1, 0.2, 0.85, 1.0],
            [0.15, 0.1, 0.05],
        ),
        body(
            Shape::Sphere { radius: 0.035 },
            [0.9, 0.8, 0.1, 1.0],
            [-0.12, 0.12, 0.035],
        ),
        body(
            Shape::Capsule {
                radius: 0.02,
                half_height: 0.04,
            },
            [0.3, 0.3, 0.3, 1.0],
            [0.0, -0.15, 0.25],
        ),
    ]
}

/// Front camera of the demo cell: 45° down, looking at the table centre.
pub fn demo_front_camera() -> CameraView {
    CameraView::look_at([0.6, 0.0, 0.6], [0.0, 0.0, 0.0], 50.0)
}

/// A "wrist" camera of the demo cell: close above the cube, looking down.
pub fn demo_wrist_camera() -> CameraView {
    CameraView {
        eye: [0.0, -0.05, 0.3],
        target: [0.0, 0.0, 0.0],
        up: [1.0, 0.0, 0.0],
        fov_y_deg: 70.0,
    }
}

/// Renders `scenes` copies of [`demo_scene`] with `views_per_scene` cameras each for `steps`
/// steps (moving the cube every step, as a simulator would) and reports the mean timings.
pub fn bench(
    cfg: RenderConfig,
    scenes: usize,
    views_per_scene: usize,
    steps: usize,
) -> Result<BenchReport, RenderError> {
    let mut r = Renderer::new(cfg)?;
    let bodies = demo_scene();
    let mut ids = Vec::new();
    for _ in 0..scenes {
        ids.push(r.add_scene(bodies.clone(), [0.8, 0.85, 0.9], Lighting::default())?);
    }
    let cams = [demo_front_camera(), demo_wrist_camera()];
    let views: Vec<_> = ids
        .iter()
        .flat_map(|id| (0..views_per_scene).map(move |k| (*id, cams[k % 2])))
        .collect();
    let mut poses: Vec<Pose> = bodies.iter().map(|b| b.pose).collect();
    let mut step = |k: usize, r: &mut Renderer| -> Result<(), RenderError> {
        poses[1].translation[0] = 0.1 * ((k as f32) * 0.1).sin();
        for id in &ids {
            r.set_poses(*id, &poses)?;
        }
        r.render(&views).map(|_| ())
    };
    step(0, &mut r)?;
    let start = Instant::now();
    for k in 1..=steps {
        step(k, &mut r)?;
    }
    let per_step = start.elapsed() / steps.max(1) as u32;
    Ok(BenchReport {
        scenes,
        views_per_scene,
        steps,
        warmup: r.warmup_time(),
        per_step,
        per_view: per_step / (scenes * views_per_scene).max(1) as u32,
    })
}
